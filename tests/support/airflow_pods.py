"""Build the matrix's pods with Airflow's own KubernetesPodOperator (Airflow venv only).

Imported by tests/airflow, and run as a script by the main-venv parity test:

    .venv-airflow/bin/python tests/support/airflow_pods.py pods.json
    .venv-airflow/bin/python tests/support/airflow_pods.py pods.json --flow path/to/flow.py eks generic
"""

from __future__ import annotations

import json
import sys
from typing import Any

import matrix

from xpuflow.render import airflow as render_airflow


def build_pod(placement, *, task_id: str, image: str = matrix.IMAGE) -> dict[str, Any]:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import ApiClient

    op = KubernetesPodOperator(
        task_id=task_id,
        name=task_id,
        namespace="ml",
        image=image,
        cmds=["xpuflow"],
        arguments=["step", task_id],
        **render_airflow.operator_kwargs(placement, step=task_id),
    )
    pod = op.build_pod_request_obj(dry_run=True)
    return ApiClient().sanitize_for_serialization(pod)


def all_pods() -> dict[str, dict[str, Any]]:
    return {f"{c}/{case}": build_pod(p, task_id=case) for c, case, p in matrix.renderable()}


def flow_pods(flow: str, clusters: list[str]) -> dict[str, dict[str, Any]]:
    """``cluster/task`` -> the pod of each task of ``flow``'s DAG (cluster mode) on each cluster."""
    from kubernetes.client import ApiClient

    from xpuflow.airflow import build_dag

    pods = {}
    for cluster in clusters:
        dag = build_dag(flow, cluster=cluster, mode="cluster")
        for task in dag.tasks:
            pods[f"{cluster}/{task.task_id}"] = ApiClient().sanitize_for_serialization(
                task.build_pod_request_obj(dry_run=True))
    return pods


if __name__ == "__main__":
    # a file, not stdout: Airflow's logging writes to stdout
    pods = flow_pods(sys.argv[3], sys.argv[4:]) if sys.argv[2:3] == ["--flow"] else all_pods()
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        json.dump(pods, out, sort_keys=True)
