"""``index`` (CPU): a FAISS index over the chunk embeddings, published only when its recall passes a gate.

FAISS runs in-process (an embedded engine: no server), on L2-normalised vectors with inner
product, i.e. cosine similarity. ``kind``:

- ``flat`` (default): ``IndexFlatIP``, exact search by brute force; right up to a few hundred
  thousand chunks (search cost grows linearly with the corpus);
- ``hnsw``: ``IndexHNSWFlat`` (M=32, ``ef_search``), a graph index for millions of vectors when
  memory allows (the graph adds about 20 % to the vectors) and queries must stay in the milliseconds;
- ``ivf``: ``IndexIVFFlat`` (``nlist`` = 4 sqrt(n) clusters trained with k-means, ``nprobe``
  searched), for millions of vectors with a cheaper build than HNSW.

``engine``: ``faiss`` (default) runs in-process, embedded: no server to run, the index is a file
that travels with the pipeline's artifacts, and exact search over a few hundred thousand vectors
takes milliseconds. ``pgvector`` is the scale-out option: PostgreSQL with the pgvector extension,
one server that many readers (gateways, retrievers) query over the network, with transactional
updates, SQL filters beside the vector search and the database's own backup and replication; see
:mod:`.pgvector`. The same ``kind`` names map onto it (``flat``: exact scan, ``hnsw``, ``ivf``:
ivfflat).

Quality gate: for each chunk (or a seeded sample of ``queries`` chunks), its longest sentence is
a query, embedded with the same model; recall@k is the share of queries whose own chunk is among
the k nearest. Below ``min_recall`` the step fails and publishes nothing (the previous index stays).

Outputs in ``output/``, published whole (:mod:`xpuflow.steps.publish`: a refused or failed rerun leaves
the previous index as it was):
``index.faiss``, ``ids.parquet`` (FAISS row -> chunk_id, doc_id, n, start, end, text, source),
``index.json`` (engine, kind, size, dimension, model, recall@k, timings). With ``pgvector`` the
vectors and texts go to the server's table and ``index.json`` names it (connection string without
its password).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

from ...errors import invalid
from ..io import StepError, read_finished, write_json
from ..publish import publish
from .embed import read_embeddings
from .encoder import load_encoder
from ...compute import Compute
from ...dsl.step import step

__all__ = ["index", "query_sentence", "search", "KINDS", "ENGINES"]

log = logging.getLogger("xpuflow.index")
KINDS = ("flat", "hnsw", "ivf")
ENGINES = ("faiss", "pgvector")
MARKER = "index.json"
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n\s*\n|\n#+\s")


def query_sentence(text: str) -> str:
    """The longest sentence of ``text`` (sentences end at . ! ? or a blank line)."""
    parts = [p.strip(" \t\n#*-") for p in _SENTENCE.split(text)]
    return max((p for p in parts if p), key=len, default=text.strip())


class _Faiss:
    """The embedded engine: an in-memory FAISS index, written to the staging directory on publish."""

    def __init__(self, kind: str, ef_search: int, nprobe: int) -> None:
        self.kind, self.ef_search, self.nprobe = kind, ef_search, nprobe

    def build(self, chunks: Any, vectors: Any) -> None:
        import faiss

        kind, ef_search, nprobe = self.kind, self.ef_search, self.nprobe
        n, dim = vectors.shape
        if kind == "flat":
            idx = faiss.IndexFlatIP(dim)
            params: dict[str, Any] = {"faiss": "IndexFlatIP"}
        elif kind == "hnsw":
            idx = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            idx.hnsw.efConstruction = 80
            idx.hnsw.efSearch = ef_search
            params = {"faiss": "IndexHNSWFlat", "M": 32, "ef_construction": 80, "ef_search": ef_search}
        else:
            nlist = max(1, min(int(4 * n**0.5), n // 39))  # FAISS wants >= 39 training points per cluster
            idx = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            idx.train(vectors)
            idx.nprobe = min(nprobe, nlist)
            params = {"faiss": "IndexIVFFlat", "nlist": nlist, "nprobe": idx.nprobe}
        idx.add(vectors)
        self.index, self.params = idx, {"engine": "faiss", **params, "faiss_version": faiss.__version__}

    def search(self, queries: Any, k: int) -> Any:
        return self.index.search(queries, k)[1]

    def publish(self, out: Path, chunks: Any) -> dict[str, str]:
        import faiss
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        faiss.write_index(self.index, str(out / "index.faiss"))
        table = chunks.add_column(0, "row", pa.array(np.arange(len(chunks), dtype=np.int64)))
        pq.write_table(table, out / "ids.parquet", compression="zstd")
        return {"index": "index.faiss", "ids": "ids.parquet"}

    def discard(self) -> None:
        pass  # nothing outside this process

    def close(self) -> None:
        pass


# FAISS builds on CPUs
@step(compute=Compute.cpu(cpu="2", memory="8Gi"), inputs=("data",), outputs=("output",))
def index(
    data: str = "out/embeddings",
    output: str = "out/index",
    kind: str = "flat",
    k: int = 5,
    min_recall: float = 0.9,
    queries: int = 1000,
    seed: int = 0,
    model: str = "",
    device: str = "cpu",
    batch_size: int = 64,
    ef_search: int = 64,
    nprobe: int = 16,
    engine: str = "faiss",
    dsn: str = "",
    table: str = "xpuflow_chunks",
) -> dict[str, Any]:
    """Index the vectors of ``data`` (an embed output); returns the summary written to ``output/index.json``.

    ``engine='pgvector'`` loads them into ``table`` of the PostgreSQL server at ``dsn`` (default: the
    ``XPUFLOW_PGVECTOR_DSN`` environment variable) instead of a FAISS file.
    """
    import numpy as np
    import pyarrow.parquet as pq

    if engine not in ENGINES:
        raise StepError(invalid("engine", engine, "faiss (embedded) or pgvector (a PostgreSQL server)", where="index",
                                choices=ENGINES))
    if kind not in KINDS:
        raise StepError(invalid("kind", kind, "flat, hnsw or ivf", where="index", choices=KINDS))
    if engine == "pgvector":
        from .pgvector import check_table

        check_table(table)
    for name, value in (("k", k), ("queries", queries), ("batch_size", batch_size), ("ef_search", ef_search),
                        ("nprobe", nprobe)):
        if not isinstance(value, int) or value < 1:
            raise StepError(invalid(name, value, "a positive integer", where="index"))
    if not isinstance(min_recall, (int, float)) or min_recall < 0:
        raise StepError(invalid("min_recall", min_recall, "a fraction in [0, 1]", where="index",
                                fix="0.9 is a sensible floor; 0 turns the gate off"))
    ids, vectors, summary = read_embeddings(data, who="index")
    chunks = pq.read_table(Path(data) / summary["files"]["chunks"])
    if chunks.column("chunk_id").to_pylist() != ids:
        raise StepError(f"index: data={data!r}: the shards' chunk ids do not match chunks.parquet (a mixed or "
                        "damaged output). Fix: rerun the embed step into an empty directory.")
    norms = np.linalg.norm(vectors, axis=1) if len(vectors) else np.zeros(0)
    bad = np.flatnonzero(~np.isfinite(norms) | (np.abs(norms - 1.0) > 1e-3))
    if len(bad):
        raise StepError(f"index: data={data!r}: {len(bad)} of {len(ids)} vectors are not unit length (first: chunk "
                        f"{ids[bad[0]]!r}, norm {norms[bad[0]]:.4g}): the shards are damaged or not from the embed "
                        "step. Fix: rerun embed.")
    if not len(ids):
        raise StepError(f"index: data={data!r} holds no vectors.")

    with publish(output, who="index", markers=(MARKER,)) as staging:
        if engine == "pgvector":
            from .pgvector import PgvectorIndex

            backend: Any = PgvectorIndex(dsn, table, kind, ef_search, nprobe)  # connects: a bad dsn is refused here
        else:
            backend = _Faiss(kind, ef_search, nprobe)
        try:
            started = time.perf_counter()
            backend.build(chunks, vectors)
            build_seconds = time.perf_counter() - started
            gate = _gate(backend, chunks.column("text").to_pylist(), ids, summary, model=model, device=device,
                         batch_size=batch_size, k=k, min_recall=min_recall, queries=queries, seed=seed)
            files = backend.publish(staging, chunks)
        except BaseException:
            backend.discard()  # a failed build or gate: nothing is published, the previous index stays as it was
            raise
        finally:
            backend.close()
        result = {
            "engine": engine,
            "kind": kind,
            "params": backend.params,
            "metric": "inner product on L2-normalised vectors (cosine similarity)",
            "vectors": len(ids),
            "dimension": int(vectors.shape[1]),
            "model": summary["model"],
            "model_identity": summary["model_identity"],
            **gate,
            "build_seconds": round(build_seconds, 4),
            "files": files,
        }
        if engine == "pgvector":
            result.update({"table": table, "dsn": backend.dsn})
        write_json(staging / MARKER, result)
    log.info("index: %s %s over %d vectors, recall@%d %.3f (recall@1 %.3f) on %d queries -> %s", engine, kind,
             len(ids), k, gate[f"recall_at_{k}"], gate["recall_at_1"], gate["queries"],
             f"table {table} in {backend.dsn}" if engine == "pgvector" else output)
    return result


def _gate(backend: Any, texts: list[str], ids: list[str], summary: dict[str, Any], *, model: str, device: str,
          batch_size: int, k: int, min_recall: float, queries: int, seed: int) -> dict[str, Any]:
    """recall@k of ``backend`` on the query set; raises below ``min_recall``."""
    import numpy as np

    encoder = load_encoder(model or summary["model"], device, "fp32", who="index")
    if encoder.identity != summary["model_identity"]:
        raise StepError(f"index: model={model!r} is {encoder.identity}, but the vectors come from "
                        f"{summary['model_identity']}: queries must be embedded with the same model. Fix: pass the "
                        "embed step's model, or leave --model empty.")
    rows = np.arange(len(ids))
    if len(rows) > queries:
        rows = np.sort(np.random.default_rng(seed).choice(len(ids), queries, replace=False))
    query_vectors = encoder.encode([query_sentence(texts[i]) for i in rows], batch_size)
    t0 = time.perf_counter()
    found = backend.search(query_vectors, min(k, len(ids)))
    search_seconds = time.perf_counter() - t0
    hits = (found == rows[:, None]).any(axis=1)
    recall = float(hits.mean())
    top1 = float((found[:, 0] == rows).mean())
    misses = [ids[i] for i in rows[~hits][:5]]
    if recall < min_recall:
        missed = f" (missed e.g. {', '.join(misses)})" if misses else ""
        raise StepError(f"index: recall@{k} = {recall:.3f} on {len(rows)} queries is below min_recall={min_recall}"
                        f"{missed}; no index was written (a previous one is kept). Fix: check the embeddings (same "
                        "model, not damaged), use kind='flat' or a larger ef_search/nprobe, or lower --min-recall.")
    return {
        "k": k,
        f"recall_at_{k}": round(recall, 4),
        "recall_at_1": round(top1, 4),
        "min_recall": min_recall,
        "queries": len(rows),
        "query_set": "the longest sentence of each chunk (a seeded sample when there are more chunks than queries)",
        "missed": misses,
        "search_ms_per_query": round(1000 * search_seconds / len(rows), 4),
    }


def search(index_dir: str, texts: list[str], k: int = 5, model: str = "", device: str = "cpu",
           dsn: str = "") -> list[list[dict]]:
    """The ``k`` nearest chunks of each text: [{chunk_id, doc_id, score, text}, ...] per text.

    For a pgvector index, ``dsn`` (default: ``XPUFLOW_PGVECTOR_DSN``) connects to its server: the
    index output records the table, not the password.
    """
    summary = read_finished(index_dir, MARKER, who="search", option="index_dir", producer="index")
    encoder = load_encoder(model or summary["model"], device, "fp32", who="search")
    vectors = encoder.encode(list(texts))
    if summary.get("engine", "faiss") == "pgvector":
        from .pgvector import nearest

        return nearest(dsn, summary["table"], summary["params"], vectors, k)
    import faiss
    import pyarrow.parquet as pq

    built = faiss.read_index(str(Path(index_dir) / summary["files"]["index"]))
    table = pq.read_table(Path(index_dir) / summary["files"]["ids"], columns=["chunk_id", "doc_id", "text"]).to_pylist()
    scores, found = built.search(vectors, k)
    return [[{**table[j], "score": float(s)} for s, j in zip(row_scores, row) if j >= 0]
            for row_scores, row in zip(scores, found)]
