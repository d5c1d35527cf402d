"""Airflow DAG: preprocess (CPU) -> train (GPU) -> evaluate (CPU) -> export for a Qualcomm NPU (CPU).

    XPUFLOW_AIRFLOW_MODE=local airflow dags test train_gpu_export_npu -c '{"epochs": 2}'  # in-process
    airflow dags trigger train_gpu_export_npu                                            # pods (default)

Cluster profile: XPUFLOW_CLUSTER (default gke). Built from xpuflow/flows.py; see dags/README.md.
"""

import os

from xpuflow.airflow import build_dag

dag = build_dag("train_gpu_export_npu", cluster=os.environ.get("XPUFLOW_CLUSTER", "gke"))
