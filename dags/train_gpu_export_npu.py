"""Airflow DAG: preprocess (CPU) -> train (GPU) -> evaluate (CPU) -> export for a Qualcomm NPU (CPU).

    XPUFLOW_AIRFLOW_MODE=local airflow dags test train_gpu_export_npu -c '{"epochs": 2}'  # in-process
    airflow dags trigger train_gpu_export_npu                                            # pods (default)

Built from the flow in pipelines/train_gpu_export_npu.py. Cluster profile: XPUFLOW_CLUSTER (default gke).
See dags/README.md.
"""

import os
from pathlib import Path

from xpuflow.airflow import build_dag

dag = build_dag(Path(__file__).parents[1] / "pipelines" / "train_gpu_export_npu.py",
                cluster=os.environ.get("XPUFLOW_CLUSTER", "gke"))
