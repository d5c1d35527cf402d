"""Build the matrix's pods with Airflow's own KubernetesPodOperator (Airflow venv only).

Imported by tests/airflow, and run as a script by the main-venv parity test:

    .venv-airflow/bin/python tests/support/airflow_pods.py pods.json
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


if __name__ == "__main__":
    # a file, not stdout: Airflow's logging writes to stdout
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        json.dump(all_pods(), out, sort_keys=True)
