"""Airflow DAG: RAG indexing. Chunk (CPU) -> embed (GPU, inference pool) -> FAISS index (CPU).

    XPUFLOW_AIRFLOW_MODE=local airflow dags test rag_index      # in-process, on the corpus shipped in the package
    airflow dags trigger rag_index                              # pods (default); embed waits in the GPU pool

Cluster profile: XPUFLOW_CLUSTER (default gke). See dags/README.md.
"""

import os

from xpuflow.airflow import build_dag

dag = build_dag("rag_index", cluster=os.environ.get("XPUFLOW_CLUSTER", "gke"))
