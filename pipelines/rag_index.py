"""Flow: RAG indexing. Chunk on CPU -> embed on a GPU of the inference pool -> vector index on CPU.

    xpuflow run rag_index                       # locally, on the corpus shipped in the package
    xpuflow plan rag_index --cluster gke        # embed lands on the inference pool, not the training one
    xpuflow compile rag_index --backend kfp --cluster eks -o out/rag_index.yaml

The index is a FAISS file by default; with ``engine=pgvector`` it is a table in PostgreSQL
(pgvector). The connection string never enters a pipeline spec or DAG: with
``XPUFLOW_PGVECTOR_SECRET=<secret name>`` set when the flow is loaded, the index task gets
the Secret's key ``dsn`` as XPUFLOW_PGVECTOR_DSN (KFP, Airflow and Kubernetes alike);
locally, set XPUFLOW_PGVECTOR_DSN in the environment:

    XPUFLOW_PGVECTOR_DSN=postgresql://... xpuflow run rag_index --param engine=pgvector
"""

import os

from xpuflow import flow
from xpuflow.steps.rag.chunk import chunk
from xpuflow.steps.rag.embed import embed
from xpuflow.steps.rag.index import index

SECRET = os.environ.get("XPUFLOW_PGVECTOR_SECRET")


@flow(name="rag_index")
def rag_index(input_uri: str = "builtin:docs", size: int = 100, overlap: int = 20, min_recall: float = 0.9,
              engine: str = "faiss", table: str = "xpuflow_chunks", shards: int = 1):
    """chunk (CPU) -> embed (GPU, inference pool; in ``shards`` processes) -> index (CPU; FAISS or pgvector)"""
    chunks = chunk(input=input_uri, size=size, overlap=overlap).output
    vectors = embed(data=chunks).with_shards(shards).output
    idx = index(data=vectors, min_recall=min_recall, engine=engine, table=table)
    if SECRET:
        idx.with_secret_env(XPUFLOW_PGVECTOR_DSN=(SECRET, "dsn"))
