"""KFP pipeline: RAG indexing. Chunk on CPU -> embed on a GPU of the inference pool -> vector index on CPU.

    xpuflow run rag_index                       # locally, on the corpus shipped in the package
    xpuflow plan rag_index --cluster gke        # embed lands on the inference pool, not the training one
    xpuflow compile rag_index --backend kfp --cluster eks -o out/rag_index.yaml

The index is a FAISS file by default; with ``index_engine=pgvector`` it is a table in PostgreSQL
(pgvector). The connection string never enters the pipeline spec: compile with
``XPUFLOW_PGVECTOR_SECRET=<secret name>`` and the index task gets the Secret's key ``dsn`` as
XPUFLOW_PGVECTOR_DSN; locally, set XPUFLOW_PGVECTOR_DSN in the environment:

    XPUFLOW_PGVECTOR_DSN=postgresql://... xpuflow run rag_index --param index_engine=pgvector
"""

import os

from kfp import dsl

from xpuflow import Cluster
from xpuflow.kfp import components as xc
from xpuflow.kfp import placed

NAME = "rag-index"


def build(cluster="gke", pgvector_secret=None):
    """The pipeline for ``cluster``. ``pgvector_secret``: a Kubernetes Secret whose key ``dsn`` holds the
    PostgreSQL connection string, given to the index task as XPUFLOW_PGVECTOR_DSN (for index_engine=pgvector)."""
    cluster = cluster if isinstance(cluster, Cluster) else Cluster.load(cluster)

    @dsl.pipeline(name=NAME, description="chunk (CPU) -> embed (GPU, inference pool) -> index (CPU)")
    def rag_index(input_uri: str = "builtin:docs", size: int = 100, overlap: int = 20, min_recall: float = 0.9,
                  index_engine: str = "faiss", pgvector_table: str = "xpuflow_chunks"):
        chunks = placed(xc.chunk(input_uri=input_uri, size=size, overlap=overlap), cluster)
        vectors = placed(xc.embed(chunks=chunks.outputs["chunks"]), cluster)
        index = placed(xc.index(embeddings=vectors.outputs["embeddings"], min_recall=min_recall, engine=index_engine,
                                table=pgvector_table), cluster)
        if pgvector_secret:
            from kfp import kubernetes

            kubernetes.use_secret_as_env(index, secret_name=pgvector_secret,
                                         secret_key_to_env={"dsn": "XPUFLOW_PGVECTOR_DSN"})

    return rag_index


pipeline = build(os.environ.get("XPUFLOW_CLUSTER", "gke"), os.environ.get("XPUFLOW_PGVECTOR_SECRET") or None)
