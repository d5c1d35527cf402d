"""Airflow DAG: preprocess (CPU) -> train on a single-host TPU slice -> export (CPU INT8) on CPU.

    XPUFLOW_AIRFLOW_MODE=local airflow dags test train_tpu -c '{"epochs": 2}'  # in-process (CPU without torch_xla)
    airflow dags trigger train_tpu                                            # pods (default)

Built from the flow in pipelines/train_tpu.py. Cluster profile: XPUFLOW_CLUSTER (default gke; the profile needs
a TPU pool). See dags/README.md.
"""

import os
from pathlib import Path

from xpuflow.airflow import build_dag

dag = build_dag(Path(__file__).parents[1] / "pipelines" / "train_tpu.py", cluster=os.environ.get("XPUFLOW_CLUSTER", "gke"))
