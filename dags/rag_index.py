"""Airflow DAG: RAG indexing. Chunk (CPU) -> embed (GPU, inference pool) -> vector index (CPU).

    XPUFLOW_AIRFLOW_MODE=local airflow dags test rag_index      # in-process, on the corpus shipped in the package
    airflow dags trigger rag_index                              # pods (default); embed waits in the GPU pool
    airflow dags trigger rag_index -c '{"engine": "pgvector", "table": "rag_chunks"}'   # PostgreSQL + pgvector

Built from the flow in pipelines/rag_index.py. Cluster profile: XPUFLOW_CLUSTER (default gke). For
engine=pgvector the index pod reads the connection string from the Kubernetes Secret named by
XPUFLOW_PGVECTOR_SECRET (key ``dsn``) as XPUFLOW_PGVECTOR_DSN (the flow declares it); in local mode, from the
worker's XPUFLOW_PGVECTOR_DSN. See dags/README.md.
"""

import os
from pathlib import Path

from xpuflow.airflow import build_dag

dag = build_dag(Path(__file__).parents[1] / "pipelines" / "rag_index.py", cluster=os.environ.get("XPUFLOW_CLUSTER", "gke"))
