"""``batch_infer`` (GPU, inference pool): score a Parquet data set with a model from the ``train`` step.

Input (``data``): a ``preprocess`` output directory (``split`` picks the file; its features are
already standardised), or a Parquet file (local path or fsspec URL) with the model's feature
columns (``standardise=True`` applies the training mean/std recorded in the model first, for raw
values). A missing feature value becomes 0 after standardisation (the training mean), as in
``preprocess``, and is counted. The rows are read in record batches, so memory stays bounded.

Batch size (``batch_size=0``, the default, picks it):

- bytes per row = 4 x (the input features + every activation one row makes through the model),
  measured once with forward hooks on a one-row probe;
- GPU memory = ``XPUFLOW_GPU_MEMORY_GIB`` when set (the placement sets it from the GPU model's
  memory), else the free memory ``torch.cuda.mem_get_info`` reports;
- fit = (half of that memory - the weights) / (2 x bytes per row), rounded down to a multiple of
  256, between 256 and 1,048,576 rows;
- batch = the smaller of the fit and the host cap: 4 MiB of float32 input per batch (16,384 rows
  of 64 features). Reading, converting and writing the rows is host work whose speed falls when
  a batch leaves the CPU caches (measured: 1M-row batches scored 0.4x as fast as 16k-row ones on an
  H200, 0.55x on the CPU), while a GPU is already saturated by far fewer rows for a model that
  small; a model with large activations is held down by the fit instead;
- on the CPU: 8,192 rows (a fixed default; it keeps the working set in the caches).

Reading the next batch and writing the last one's predictions run in two threads beside the
scoring (Parquet reads, writes and compression release the GIL), in order.

Device: the GPU rule of training (CUDA when visible; CPU with a WARNING locally; a hard error in
a cluster on a GPU placement). fp32, so the predictions equal ``evaluate``'s.
Outputs in ``output/``, published whole (:mod:`xpuflow.steps.publish`): ``predictions.parquet`` (``row``: index in the input, ``predicted``: class
index, ``predicted_label``, ``prob_<class>`` per class) and ``predictions.json`` (last).
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ...errors import invalid
from ..io import StepError, open_binary, read_finished, write_json
from ..models import load_model
from ..shards import parse as parse_shard
from ..publish import publish
from ...compute import Compute
from ...dsl.step import step

__all__ = ["batch_infer", "auto_batch_size", "fit_batch_size", "bytes_per_row", "MEMORY_ENV"]

log = logging.getLogger("xpuflow.batch_infer")
MEMORY_ENV = "XPUFLOW_GPU_MEMORY_GIB"
CPU_BATCH = 8192
MIN_BATCH, MAX_BATCH = 256, 1 << 20
HOST_BATCH_BYTES = 4 << 20  # float32 input per batch: beyond this, host work slows down (see above)
MARKER = "predictions.json"


def bytes_per_row(net: Any, features: int) -> int:
    """4 bytes x (inputs + every module output) for one row, from a probe forward pass on the CPU."""
    import torch

    sizes = [features]
    hooks = [m.register_forward_hook(lambda _m, _i, o: sizes.append(o.numel() if isinstance(o, torch.Tensor) else 0))
             for m in net.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            net(torch.zeros(1, features))
    finally:
        for h in hooks:
            h.remove()
    return 4 * sum(sizes)


def fit_batch_size(row_bytes: int, weight_bytes: int, memory_gib: float) -> int:
    """The most rows per batch that fit ``memory_gib`` of accelerator memory (with 2x headroom)."""
    budget = memory_gib * 2**30 / 2 - weight_bytes
    rows = int(budget // (2 * row_bytes)) // 256 * 256
    return max(MIN_BATCH, min(MAX_BATCH, rows))


def auto_batch_size(row_bytes: int, weight_bytes: int, memory_gib: float | None, features: int) -> tuple[int, str]:
    """(rows per batch, why) for ``memory_gib`` of accelerator memory (None: the CPU default)."""
    if memory_gib is None:
        return CPU_BATCH, "cpu default"
    fit = fit_batch_size(row_bytes, weight_bytes, memory_gib)
    host = max(MIN_BATCH, HOST_BATCH_BYTES // (4 * max(1, features)) // 256 * 256)
    return (fit, "fits the GPU memory") if fit <= host else (host, f"host cap (fits the GPU memory: {fit})")


def _background(items: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """``items``, produced by a thread ``depth`` ahead; its exception is raised here, in order."""
    box: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                box.put((item, None))
            box.put((done, None))
        except BaseException as e:  # handed to the consumer
            box.put((done, e))

    thread = threading.Thread(target=produce, name="batch_infer-read", daemon=True)
    thread.start()
    try:
        while True:
            item, error = box.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                box.get(timeout=0.05)
            except queue.Empty:
                pass


class _Writer:
    """Calls ``write`` on each submitted item in a thread, in order; ``close`` re-raises its error."""

    def __init__(self, write: Callable[[Any], None], depth: int = 2) -> None:
        self._box: queue.Queue = queue.Queue(depth)
        self._write, self.error = write, None
        self._thread = threading.Thread(target=self._run, name="batch_infer-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._box.get()) is not None:
            if self.error is None:
                try:
                    self._write(item)
                except BaseException as e:  # raised by submit/close in the scoring thread
                    self.error = e

    def submit(self, item: Any) -> None:
        if self.error is not None:
            raise self.error
        self._box.put(item)

    def close(self) -> None:
        self._box.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error


def _memory_gib(device: Any) -> tuple[float | None, str]:
    hint = os.environ.get(MEMORY_ENV)
    if device.type != "cuda":
        return None, "cpu default"
    if hint:
        try:
            value = float(hint)
            if value <= 0:
                raise ValueError
        except ValueError:
            raise StepError(invalid(MEMORY_ENV, hint, "GPU memory in GiB, a positive number", where="batch_infer",
                                    fix="the placement sets it from the GPU model; unset it to measure")) from None
        return value, f"{MEMORY_ENV}={hint}"
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    return free / 2**30, "torch.cuda.mem_get_info (free)"


def _matrix(batch: Any, standardise: bool, mean: Any, std: Any) -> Any:
    """The batch's feature columns as a C-ordered float32 matrix (NaN where a value is missing)."""
    import numpy as np

    x = np.empty((batch.num_rows, batch.num_columns), dtype=np.float64 if standardise else np.float32)
    for i in range(batch.num_columns):
        x[:, i] = batch.column(i).to_numpy(zero_copy_only=False)
    if standardise:
        x = ((x - mean) / std).astype(np.float32)
    return x


def _source(data: str, split: str, standardise: bool) -> tuple[Any, str, bool]:
    """(pyarrow ParquetFile, name, whether the features are already standardised)."""
    import pyarrow.parquet as pq

    text = data.removeprefix("file://")
    if "://" not in text and Path(text).is_dir():
        stats = read_finished(text, "stats.json", who="batch_infer", option="data", producer="preprocess")
        if split not in stats["files"]:
            raise StepError(invalid("split", split, f"one of {', '.join(stats['files'])}", where="batch_infer",
                                    choices=stats["files"]))
        if standardise:
            raise StepError("batch_infer: standardise=True with a preprocess output, whose features are already "
                            "standardised. Fix: leave standardise off.")
        path = Path(text) / stats["files"][split]
        return pq.ParquetFile(path), str(path), True
    try:
        return pq.ParquetFile(open_binary(data)), data, False
    except StepError:
        raise
    except Exception as e:
        raise StepError(f"batch_infer: data={data!r} is not a Parquet file ({e}). Fix: pass a preprocess output "
                        "directory or a .parquet file with the model's feature columns.") from e


# batch scoring on a GPU of the inference pool
@step(compute=Compute.gpu(count=1, purpose="inference", cpu="3", memory="12Gi"), inputs=("model", "data"),
      outputs=("output",))
def batch_infer(
    model: str = "out/model",
    data: str = "out/data",
    output: str = "out/predictions",
    split: str = "test",
    batch_size: int = 0,
    standardise: bool = False,
    device: str = "auto",
    allow_architecture: str = "",
    shard: str = "",
) -> dict[str, Any]:
    """Score ``data`` with ``model`` (a train output); returns the summary written to ``output/predictions.json``.

    ``allow_architecture``: comma-separated ``package.module:factory`` a model file may name besides the built-in
    ones (also ``XPUFLOW_ALLOWED_ARCHITECTURES``); any other architecture is refused before it is imported.
    ``shard``: ``I/N`` to score only batches k with k % N == I (``N`` alone reads I from JOB_COMPLETION_INDEX);
    the output is published when all N shards are done (:mod:`xpuflow.steps.shards`).
    """
    import numpy as np
    import pyarrow as pa

    from ..runtime import pick_device

    if not isinstance(batch_size, int) or batch_size < 0:
        raise StepError(invalid("batch_size", batch_size, "rows per batch, or 0 to size it from the GPU memory",
                                where="batch_infer"))
    sh = parse_shard(shard, "batch_infer")
    dev = pick_device(device, int(os.environ.get("LOCAL_RANK", "0")), who="batch_infer")  # the GPU rule first
    path = Path(model)
    net, meta = load_model(path / "model.pt" if path.is_dir() else path, allow=allow_architecture)
    features = meta.get("features") or []
    parquet, name, scaled = _source(data, split, standardise)
    given = parquet.schema_arrow
    missing = [f for f in features if f not in given.names]
    if not features or missing:
        raise StepError(f"batch_infer: {name} lacks {len(missing)} of the model's {len(features)} feature columns "
                        f"({', '.join(missing[:5]) or 'the model records none'}). Fix: score data with the columns "
                        "the model was trained on.")
    wrong = [f"{f} ({given.field(f).type})" for f in features
             if not (pa.types.is_floating(given.field(f).type) or pa.types.is_integer(given.field(f).type))]
    if wrong:
        raise StepError(f"batch_infer: {name}: {len(wrong)} feature columns are not numeric: {', '.join(wrong[:5])}. "
                        "Fix: write the features as float or integer columns (missing values as nulls).")
    row_bytes = bytes_per_row(net, len(features))  # on the CPU, where load_model put it
    net.to(dev)
    weight_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    memory, rule = _memory_gib(dev)
    if batch_size:
        chosen, why = batch_size, "given"
    else:
        chosen, why = auto_batch_size(row_bytes, weight_bytes, memory, len(features))
        why = f"{why}; memory from {rule}" if memory is not None else why
    mean = np.array([meta["normalisation"]["mean"][f] for f in features], dtype=np.float64)
    std = np.array([meta["normalisation"]["std"][f] for f in features], dtype=np.float64)
    classes = [str(c) for c in meta["classes"]]
    labels = pa.array(classes, pa.string())
    schema = pa.schema([("row", pa.int64()), ("predicted", pa.int64()), ("predicted_label", pa.string()),
                        *((f"prob_{c}", pa.float32()) for c in classes)])
    started = time.perf_counter()

    def summary(rows: int, imputed: int) -> dict[str, Any]:
        seconds = time.perf_counter() - started
        return {"model": str(model), "data": name, "split": split if scaled else None,
                "standardised_here": standardise, "rows": rows, "classes": classes, "device": dev.type,
                "batch_size": chosen, "batch_size_rule": why, "bytes_per_row": row_bytes, "gpu_memory_gib": memory,
                "imputed": imputed, "rows_per_second": round(rows / seconds, 1) if seconds else None,
                "files": {"predictions": "predictions.parquet"}}

    score = functools.partial(_score, parquet=parquet, features=features, schema=schema, labels=labels, net=net,
                              dev=dev, chosen=chosen, standardise=standardise, mean=mean, std=std)
    if sh is not None:
        return _sharded(output, sh, score, summary, model=str(model), data=name, rows=parquet.metadata.num_rows,
                        split=split if scaled else None, batch_size=chosen, standardise=standardise)
    with publish(output, who="batch_infer", markers=(MARKER,)) as staging:
        result = summary(*score(staging / "predictions.parquet"))
        write_json(staging / MARKER, result)
    log.info("batch_infer: %d rows on %s, batch %d (%s) -> %s", result["rows"], dev.type, chosen,
             result["batch_size_rule"], output)
    return result


def _score(path: Path, *, parquet: Any, features: list[str], schema: Any, labels: Any, net: Any, dev: Any,
           chosen: int, standardise: bool, mean: Any, std: Any,
           owns: Callable[[int], bool] = lambda k: True) -> tuple[int, int]:
    """Write the predictions of the batches ``owns`` picks (by batch number) to ``path``, one row group per
    batch: (rows, imputed values). ``row`` is the row's index in the whole input."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    offset = rows = imputed = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as pw:
        writer = _Writer(pw.write_batch)
        try:
            for k, batch in enumerate(_background(parquet.iter_batches(batch_size=chosen, columns=features))):
                offset, first = offset + batch.num_rows, offset
                if not owns(k):
                    continue
                x = _matrix(batch, standardise, mean, std)
                nan = np.isnan(x)
                if nan.any():
                    imputed += int(nan.sum())
                    x[nan] = 0.0
                with torch.inference_mode():
                    logits = net(torch.from_numpy(x).to(dev, non_blocking=dev.type == "cuda"))
                    probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
                    predicted = logits.argmax(1).cpu().numpy().astype(np.int64)
                n = len(predicted)
                cols = [pa.array(np.arange(first, first + n, dtype=np.int64)), pa.array(predicted),
                        labels.take(pa.array(predicted)), *(pa.array(probs[:, j]) for j in range(len(labels)))]
                writer.submit(pa.RecordBatch.from_arrays(cols, schema=schema))
                rows += n
        finally:
            writer.close()
    return rows, imputed


def _sharded(output: str, sh: Any, score: Callable[..., tuple[int, int]],
             summary: Callable[[int, int], dict[str, Any]], **what: Any) -> dict[str, Any]:
    """Shard ``sh``: score batches k with k % N == I into its part; the last shard in publishes the output,
    its predictions the parts' row groups interleaved back into input order (:mod:`xpuflow.steps.shards`)."""
    from ..shards import assemble, finish_part, part, run_key

    key = run_key(**what)
    with part(output, sh, who="batch_infer", key=key) as folder:
        mine = summary(*score(folder / "predictions.parquet", owns=sh.owns))
        finish_part(folder, sh, key, mine, who="batch_infer", markers=(MARKER,), merge=_merge)
    log.info("batch_infer: shard %s: %d rows scored", sh, mine["rows"])
    return assemble(output, sh, who="batch_infer", key=key, markers=(MARKER,), merge=_merge) or \
        {**mine, "shard": str(sh), "published": False}


def _merge(parts: list[tuple[Path, dict[str, Any]]], staging: Path) -> dict[str, Any]:
    """Shard i holds batches i, i + N, ... as its row groups 0, 1, ...: read them back in batch order."""
    import pyarrow.parquet as pq

    files = [pq.ParquetFile(folder / "predictions.parquet") for folder, _ in parts]
    count = len(files)
    with pq.ParquetWriter(staging / "predictions.parquet", files[0].schema_arrow, compression="zstd") as pw:
        k = 0
        while k // count < files[k % count].num_row_groups:
            pw.write_table(files[k % count].read_row_group(k // count))
            k += 1
    summaries = [s for _, s in parts]
    rows = sum(s["rows"] for s in summaries)
    if k != sum(f.num_row_groups for f in files) or rows != sum(f.metadata.num_rows for f in files):
        raise StepError("batch_infer: the shards' predictions do not interleave into one input (a part was "
                        "written with another batch size). Fix: rerun every shard with the same --batch-size.")
    result = {**summaries[0], "rows": rows, "imputed": sum(s["imputed"] for s in summaries),
              "rows_per_second": None, "shards": count,
              "shard_rows_per_second": [s["rows_per_second"] for s in summaries]}
    write_json(staging / MARKER, result)
    return result
