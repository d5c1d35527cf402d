"""xpuflow for Airflow 3: any ``@flow`` as a DAG, any ``@step`` as a task.

    # dags/my_flow.py
    import os
    from xpuflow.airflow import build_dag

    dag = build_dag("/path/to/my_project/flows.py:nightly", cluster=os.environ.get("XPUFLOW_CLUSTER", "gke"))

    # or one step in a DAG of your own
    from xpuflow.airflow import task
    train = task(my_steps.train, dag=dag, cluster="gke", data="s3://bucket/prep", epochs=5)

One switch picks how the tasks run, read when the DAG file is parsed:
``XPUFLOW_AIRFLOW_MODE`` = ``cluster`` (default) or ``local``; ``build_dag(mode=...)``
overrides it.

- ``cluster``: one ``KubernetesPodOperator`` per step, its pod placed by
  ``Cluster.load(cluster).place(task compute)`` through :mod:`xpuflow.render.airflow`,
  running ``xpuflow step <step> ...`` (:mod:`xpuflow.dsl.command`) in the step's image
  (:mod:`xpuflow.images`). Steps hand data over through an artifact root URL, one
  directory per run and task. Accelerator tasks run in an Airflow pool per kind and
  cluster (``xpuflow-gpu-gke``, ``xpuflow-tpu-gke``), one slot per device.
- ``local``: the same steps run in the Airflow worker's process (``PythonOperator``
  calling the step function), outputs under a local directory per run,
  upstream output paths passed through XCom.

:func:`write_dag_file` writes such a DAG file for one cluster (``xpuflow compile
--backend airflow``). Importing this package imports neither airflow nor the
kubernetes client, torch or kfp; :func:`build_dag` imports airflow when called.
See docs/airflow.md.
"""

from __future__ import annotations

from .dag import (
    ARTIFACT_ROOT_ENV,
    ARTIFACT_ROOT_VARIABLE,
    LOCAL_ROOT_ENV,
    MODE_ENV,
    MODES,
    airflow_pool,
    artifact_root_template,
    build_dag,
    pool_for,
    resolve_mode,
    task,
)
from .dagfile import dag_file_source, write_dag_file

__all__ = [
    "ARTIFACT_ROOT_ENV",
    "ARTIFACT_ROOT_VARIABLE",
    "LOCAL_ROOT_ENV",
    "MODES",
    "MODE_ENV",
    "airflow_pool",
    "artifact_root_template",
    "build_dag",
    "dag_file_source",
    "pool_for",
    "resolve_mode",
    "task",
    "write_dag_file",
]
