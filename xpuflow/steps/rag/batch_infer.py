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
- batch = (half of that memory - the weights) / (2 x bytes per row), rounded down to a multiple of
  256, between 256 and 1,048,576 rows;
- on the CPU: 8,192 rows (a fixed default; it keeps the working set in the caches).

Device: the GPU rule of training (CUDA when visible; CPU with a WARNING locally; a hard error in
a cluster on a GPU placement). fp32, so the predictions equal ``evaluate``'s.
Outputs in ``output/``: ``predictions.parquet`` (``row``: index in the input, ``predicted``: class
index, ``predicted_label``, ``prob_<class>`` per class) and ``predictions.json`` (last).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from ...errors import invalid
from ..io import StepError, atomic_path, local_path, open_binary, read_finished, write_json
from ..models import load_model

__all__ = ["batch_infer", "auto_batch_size", "bytes_per_row", "MEMORY_ENV"]

log = logging.getLogger("xpuflow.batch_infer")
MEMORY_ENV = "XPUFLOW_GPU_MEMORY_GIB"
CPU_BATCH = 8192
MIN_BATCH, MAX_BATCH = 256, 1 << 20
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


def auto_batch_size(row_bytes: int, weight_bytes: int, memory_gib: float | None) -> int:
    """Rows per batch for ``memory_gib`` of accelerator memory (None: the CPU default)."""
    if memory_gib is None:
        return CPU_BATCH
    budget = memory_gib * 2**30 / 2 - weight_bytes
    rows = int(budget // (2 * row_bytes)) // 256 * 256
    return max(MIN_BATCH, min(MAX_BATCH, rows))


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


def batch_infer(
    model: str = "out/model",
    data: str = "out/data",
    output: str = "out/predictions",
    split: str = "test",
    batch_size: int = 0,
    standardise: bool = False,
    device: str = "auto",
) -> dict[str, Any]:
    """Score ``data`` with ``model`` (a train output); returns the summary written to ``output/predictions.json``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from ..runtime import pick_device

    if not isinstance(batch_size, int) or batch_size < 0:
        raise StepError(invalid("batch_size", batch_size, "rows per batch, or 0 to size it from the GPU memory",
                                where="batch_infer"))
    dev = pick_device(device, int(os.environ.get("LOCAL_RANK", "0")), who="batch_infer")  # the GPU rule first
    out = local_path(output)
    (out / MARKER).unlink(missing_ok=True)  # removed first, written last
    path = Path(model)
    net, meta = load_model(path / "model.pt" if path.is_dir() else path)
    features = meta.get("features") or []
    parquet, name, scaled = _source(data, split, standardise)
    columns = parquet.schema_arrow.names
    missing = [f for f in features if f not in columns]
    if not features or missing:
        raise StepError(f"batch_infer: {name} lacks {len(missing)} of the model's {len(features)} feature columns "
                        f"({', '.join(missing[:5]) or 'the model records none'}). Fix: score data with the columns "
                        "the model was trained on.")
    row_bytes = bytes_per_row(net, len(features))  # on the CPU, where load_model put it
    net.to(dev)
    weight_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    memory, rule = _memory_gib(dev)
    chosen = batch_size or auto_batch_size(row_bytes, weight_bytes, memory)
    mean = np.array([meta["normalisation"]["mean"][f] for f in features], dtype=np.float64)
    std = np.array([meta["normalisation"]["std"][f] for f in features], dtype=np.float64)
    classes = [str(c) for c in meta["classes"]]
    schema = pa.schema([("row", pa.int64()), ("predicted", pa.int64()), ("predicted_label", pa.string()),
                        *((f"prob_{c}", pa.float32()) for c in classes)])
    rows = imputed = 0
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "predictions.parquet") as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for batch in parquet.iter_batches(batch_size=chosen, columns=features):
            x = np.column_stack([batch.column(i).to_numpy(zero_copy_only=False) for i in range(len(features))])
            x = x.astype(np.float64, copy=False)
            if standardise:
                x = (x - mean) / std
            nan = np.isnan(x)
            imputed += int(nan.sum())
            x = np.where(nan, 0.0, x).astype(np.float32)
            with torch.inference_mode():
                logits = net(torch.from_numpy(x).to(dev, non_blocking=dev.type == "cuda"))
                probs = torch.softmax(logits.float(), dim=1)
                predicted = logits.argmax(1).cpu().numpy()
                probs = probs.cpu().numpy()
            n = len(predicted)
            cols = [pa.array(np.arange(rows, rows + n, dtype=np.int64)), pa.array(predicted.astype(np.int64)),
                    pa.array([classes[i] for i in predicted], pa.string()),
                    *(pa.array(probs[:, j]) for j in range(len(classes)))]
            writer.write_batch(pa.RecordBatch.from_arrays(cols, schema=schema))
            rows += n
    seconds = time.perf_counter() - started
    result = {
        "model": str(model),
        "data": name,
        "split": split if scaled else None,
        "standardised_here": standardise,
        "rows": rows,
        "classes": classes,
        "device": dev.type,
        "batch_size": chosen,
        "batch_size_rule": "given" if batch_size else rule,
        "bytes_per_row": row_bytes,
        "gpu_memory_gib": memory,
        "imputed": imputed,
        "rows_per_second": round(rows / seconds, 1) if seconds else None,
        "files": {"predictions": "predictions.parquet"},
    }
    write_json(out / MARKER, result)
    log.info("batch_infer: %d rows on %s, batch %d (%s) -> %s", rows, dev.type, chosen, result["batch_size_rule"], out)
    return result
