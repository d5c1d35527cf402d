"""KFP pipeline: RAG indexing. Chunk on CPU -> embed on a GPU of the inference pool -> FAISS index on CPU.

    xpuflow run rag_index                       # locally, on the corpus shipped in the package
    xpuflow plan rag_index --cluster gke        # embed lands on the inference pool, not the training one
    xpuflow compile rag_index --backend kfp --cluster eks -o out/rag_index.yaml
"""

import os

from kfp import dsl

from xpuflow import Cluster
from xpuflow.kfp import components as xc
from xpuflow.kfp import placed

NAME = "rag-index"


def build(cluster="gke"):
    cluster = cluster if isinstance(cluster, Cluster) else Cluster.load(cluster)

    @dsl.pipeline(name=NAME, description="chunk (CPU) -> embed (GPU, inference pool) -> index (CPU)")
    def rag_index(input_uri: str = "builtin:docs", size: int = 100, overlap: int = 20, min_recall: float = 0.9):
        chunks = placed(xc.chunk(input_uri=input_uri, size=size, overlap=overlap), cluster)
        vectors = placed(xc.embed(chunks=chunks.outputs["chunks"]), cluster)
        placed(xc.index(embeddings=vectors.outputs["embeddings"], min_recall=min_recall), cluster)

    return rag_index


pipeline = build(os.environ.get("XPUFLOW_CLUSTER", "gke"))
