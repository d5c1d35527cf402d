"""``embed`` (GPU, inference pool): a sentence-embedding vector for every chunk, in resumable shards.

Input: a finished ``chunk`` output (``data``). The chunks are cut, in their order in
``chunks.parquet``, into shards of ``shard_size`` rows: shard k holds rows
[k * shard_size, (k + 1) * shard_size), a contiguous range of chunk ids. Each shard is encoded
(length-sorted batches, see :mod:`.encoder`) and written atomically as
``embeddings/shard-<k:05d>.parquet`` (``chunk_id``, ``vector``: fixed-size list of float32),
with a fingerprint in its Parquet metadata: the model's identity, the precision, the token limit
and a hash of the shard's chunk ids and texts.

Resume: shards are written into the output's resumable staging directory
(``.<output>.xpuflow-partial``, :func:`xpuflow.steps.publish.publish` with ``resume=True``). A
restarted task (spot preemption, kill -9) keeps every shard file there whose fingerprint matches
what it would compute now, links those of the published output that match, and encodes only the
others; temporary files of an interrupted write are removed, and shards past the end of the input
are deleted. The result is the same as an uninterrupted run's.

Device: the GPU rule of training (:func:`xpuflow.steps.runtime.pick_device`): CUDA when visible
(fp16/bf16 weights, ``precision="auto"`` picks bf16 where supported), else the CPU in fp32 with a
WARNING locally, and a hard error in a cluster on a GPU placement.

Outputs in ``output/``: ``embeddings/shard-*.parquet``, ``chunks.parquet`` (a copy of the input
chunks, so the index has the texts beside the vectors) and ``embeddings.json``, published whole:
until every shard is written the previous output stays as it was.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...errors import invalid
from ..io import StepError, atomic_path, local_path, write_json
from ..publish import publish
from ..shards import parse as parse_shard
from .chunk import MARKER as CHUNKS_MARKER
from .encoder import DEFAULT_MODEL, load_encoder
from ...compute import Compute
from ...dsl.step import step

__all__ = ["embed", "read_embeddings", "MARKER"]

log = logging.getLogger("xpuflow.embed")
MARKER = "embeddings.json"
SHARDS = "embeddings"
_FINGERPRINT = b"xpuflow.fingerprint"


def _shards(path: Path, shard_size: int) -> Iterator[tuple[list[str], list[str]]]:
    """(chunk ids, texts) of each shard, exactly ``shard_size`` rows except the last."""
    import pyarrow.parquet as pq

    ids: list[str] = []
    texts: list[str] = []
    for batch in pq.ParquetFile(path).iter_batches(batch_size=shard_size, columns=["chunk_id", "text"]):
        ids += batch.column(0).to_pylist()
        texts += batch.column(1).to_pylist()
        while len(ids) >= shard_size:
            yield ids[:shard_size], texts[:shard_size]
            ids, texts = ids[shard_size:], texts[shard_size:]
    if ids:
        yield ids, texts


def _fingerprint(identity: str, precision: str, max_length: int, ids: list[str], texts: list[str]) -> str:
    digest = hashlib.sha256(f"{identity}\0{precision}\0{max_length}\0".encode())
    for chunk_id, text in zip(ids, texts):
        digest.update(chunk_id.encode())
        digest.update(b"\0")
        digest.update(text.encode())
        digest.update(b"\1")
    return digest.hexdigest()


def _stored_fingerprint(path: Path) -> str | None:
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:  # unreadable: recompute it
        return None
    value = meta.get(_FINGERPRINT)
    return value.decode() if value else None


def _write_shard(path: Path, ids: list[str], vectors: Any, fingerprint: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = vectors.shape[1]
    table = pa.table({"chunk_id": pa.array(ids, pa.string()),
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)})
    table = table.replace_schema_metadata({_FINGERPRINT: fingerprint.encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


# a GPU of the inference pool (not competing with training); resumes by finished shard
@step(compute=Compute.gpu(count=1, purpose="inference", cpu="3", memory="12Gi", spot="prefer"), resumable=True,
      minutes=10, inputs=("data",), outputs=("output",))
def embed(
    data: str = "out/chunks",
    output: str = "out/embeddings",
    model: str = DEFAULT_MODEL,
    batch_size: int = 64,
    shard_size: int = 4096,
    device: str = "auto",
    precision: str = "auto",
    shard: str = "",
) -> dict[str, Any]:
    """Embed the chunks of ``data`` (a chunk output); returns the summary written to ``output/embeddings.json``.

    ``shard``: ``I/N`` to encode only shards k with k % N == I (``N`` alone reads I from JOB_COMPLETION_INDEX);
    the output is published when all N processes are done (:mod:`xpuflow.steps.shards`)."""
    from ..io import read_finished

    for name, value in (("batch_size", batch_size), ("shard_size", shard_size)):
        if not isinstance(value, int) or value < 1:
            raise StepError(invalid(name, value, "a positive integer", where="embed"))
    sh = parse_shard(shard, "embed")  # refused before anything is read
    chunks = read_finished(data, CHUNKS_MARKER, who="embed", option="data", producer="chunk")
    encoder = load_encoder(model, device, precision, who="embed")  # the GPU rule: refused before any output
    source = Path(data) / chunks["files"]["chunks"]
    previous = local_path(output) / SHARDS  # a published output's shards are reused when their fingerprint matches
    started = time.perf_counter()
    if sh is not None:
        return _sharded(output, sh, source, previous, data=str(data), model=model, encoder=encoder,
                        batch_size=batch_size, shard_size=shard_size)
    with publish(output, who="embed", markers=(MARKER,), resume=True) as staging:
        shard_dir = staging / SHARDS
        shards, reused, computed, encoded, encode_seconds = _encode(staging, source, encoder, batch_size,
                                                                    shard_size, previous)
        if not shards:
            raise StepError(f"embed: data={data!r} holds no chunks. Fix: check the chunk step's input.")
        for extra in sorted(shard_dir.glob("shard-*.parquet")):
            if extra.name not in {Path(s["file"]).name for s in shards}:
                log.warning("embed: removing %s: past the end of this input (a previous, larger run)", extra.name)
                extra.unlink()
        shutil.copyfile(source, staging / "chunks.parquet")
        summary = _summary(data, model, encoder, batch_size, shard_size, shards, reused, computed, encoded,
                           encode_seconds, started)
        write_json(staging / MARKER, summary)
    log.info("embed: %d chunks in %d shards (%d reused, %d computed) on %s/%s -> %s", summary["rows"], len(shards),
             reused, computed, encoder.device.type, encoder.precision, output)
    return summary


def _encode(out: Path, source: Path, encoder: Any, batch_size: int, shard_size: int, previous: Path,
            owns: Any = lambda k: True) -> tuple[list[dict[str, Any]], int, int, int, float]:
    """Encode the shards ``owns`` picks (by number) into ``out/embeddings``, keeping (or linking from the
    published output ``previous``) those whose fingerprint matches: (their entries, reused, computed, chunks
    encoded, encode seconds)."""
    shard_dir = out / SHARDS
    shard_dir.mkdir(parents=True, exist_ok=True)
    for stale in shard_dir.glob(".shard-*.tmp"):  # a write cut short by kill -9
        stale.unlink(missing_ok=True)
    shards, reused, computed, encoded, encode_seconds = [], 0, 0, 0, 0.0
    for k, (ids, texts) in enumerate(_shards(source, shard_size)):
        if not owns(k):
            continue
        path = shard_dir / f"shard-{k:05d}.parquet"
        fingerprint = _fingerprint(encoder.identity, encoder.precision, encoder.max_length, ids, texts)
        if _reuse(path, previous / path.name, fingerprint):
            reused += 1
        else:
            t0 = time.perf_counter()
            vectors = encoder.encode(texts, batch_size)
            encode_seconds += time.perf_counter() - t0
            _write_shard(path, ids, vectors, fingerprint)
            computed += 1
            encoded += len(ids)
            log.info("embed: shard %d (%s .. %s, %d chunks) written", k, ids[0], ids[-1], len(ids))
        shards.append({"file": f"{SHARDS}/{path.name}", "rows": len(ids), "first_id": ids[0], "last_id": ids[-1]})
    return shards, reused, computed, encoded, encode_seconds


def _sharded(output: str, sh: Any, source: Path, previous: Path, *, data: str, model: str, encoder: Any,
             batch_size: int, shard_size: int) -> dict[str, Any]:
    """Process shard ``sh``: shards k with k % N == I into its part; the last one in publishes the output
    (:mod:`xpuflow.steps.shards`). A killed process rerun keeps the shard files it had written."""
    import pyarrow.parquet as pq

    from ..shards import assemble, finish_part, part, run_key

    rows = pq.ParquetFile(source).metadata.num_rows
    if rows == 0:
        raise StepError(f"embed: data={data!r} holds no chunks. Fix: check the chunk step's input.")
    key = run_key(data=data, model=encoder.identity, precision=encoder.precision, max_tokens=encoder.max_length,
                  shard_size=shard_size, rows=rows)
    started = time.perf_counter()
    with part(output, sh, who="embed", key=key) as folder:
        done = _encode(folder, source, encoder, batch_size, shard_size, previous, owns=sh.owns)
        mine = {**_summary(data, model, encoder, batch_size, shard_size, *done, started), "shard": str(sh)}
        if sh.index == 0:  # the texts beside the vectors, carried by the first part
            shutil.copyfile(source, folder / "chunks.parquet")
        finish_part(folder, sh, key, mine, who="embed", markers=(MARKER,), merge=_merge)
    log.info("embed: shard %s: %d shards (%d reused, %d computed)", sh, len(done[0]), done[1], done[2])
    return assemble(output, sh, who="embed", key=key, markers=(MARKER,), merge=_merge) or \
        {**mine, "published": False}


def _merge(parts: list[tuple[Path, dict[str, Any]]], staging: Path) -> dict[str, Any]:
    """The output of N processes' parts (in index order): their shard files, the first one's chunks."""
    from ..shards import link_or_copy

    (staging / SHARDS).mkdir()
    entries = sorted((e for _, s in parts for e in s["shards"]), key=lambda e: e["file"])
    for folder, summary in parts:
        for entry in summary["shards"]:
            link_or_copy(folder / entry["file"], staging / entry["file"])  # parts stay whole until published
    link_or_copy(parts[0][0] / "chunks.parquet", staging / "chunks.parquet")
    summaries = [s for _, s in parts]
    total = {k: sum(s[k] for s in summaries) for k in ("shards_reused", "shards_computed")}
    result = {**summaries[0], **total, "rows": sum(e["rows"] for e in entries), "shards": entries,
              "chunks_per_second": None, "seconds": max(s["seconds"] for s in summaries), "processes": len(parts)}
    del result["shard"]
    write_json(staging / MARKER, result)
    return result


def _reuse(path: Path, published: Path, fingerprint: str) -> bool:
    """Whether shard ``path`` holds ``fingerprint`` already: written by a killed run, or linked from the output."""
    if path.exists() and _stored_fingerprint(path) == fingerprint:
        return True
    if published.exists() and _stored_fingerprint(published) == fingerprint:
        path.unlink(missing_ok=True)
        try:
            os.link(published, path)  # the published file is never written in place, so sharing it is safe
        except OSError:
            shutil.copyfile(published, path)
        return True
    return False


def _summary(data: str, model: str, encoder: Any, batch_size: int, shard_size: int, shards: list[dict[str, Any]],
             reused: int, computed: int, encoded: int, encode_seconds: float, started: float) -> dict[str, Any]:
    return {
        "data": str(data),
        "model": model,
        "model_identity": encoder.identity,
        "dimension": encoder.dim,
        "max_tokens": encoder.max_length,
        "normalised": True,
        "metric": "inner product of L2-normalised vectors = cosine similarity",
        "device": encoder.device.type,
        "precision": encoder.precision,
        "batch_size": batch_size,
        "shard_size": shard_size,
        "rows": sum(s["rows"] for s in shards),
        "shards": shards,
        "shards_reused": reused,
        "shards_computed": computed,
        "chunks_per_second": round(encoded / encode_seconds, 1) if encode_seconds else None,
        "seconds": round(time.perf_counter() - started, 3),
        "files": {"chunks": "chunks.parquet"},
    }


def read_embeddings(folder: str, who: str) -> tuple[list[str], Any, dict[str, Any]]:
    """(chunk ids, vectors [n, dim] float32, summary) of a finished ``embed`` output."""
    import numpy as np
    import pyarrow.parquet as pq

    from ..io import read_finished

    summary = read_finished(folder, MARKER, who=who, option="data", producer="embed")
    ids: list[str] = []
    parts = []
    for shard in summary["shards"]:
        table = pq.read_table(Path(folder) / shard["file"])
        column = table.column("vector").combine_chunks()
        ids += table.column("chunk_id").to_pylist()
        parts.append(column.flatten().to_numpy(zero_copy_only=False).reshape(len(table), column.type.list_size))
    vectors = np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros((0, summary["dimension"]))
    return ids, vectors, summary
