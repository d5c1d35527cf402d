"""Pass 1 of ``preprocess``: read the input once, check it, gather the training statistics, spill the rows.

Each record batch is scanned on a thread pool (numpy and pyarrow release the GIL): its rows are
assigned to train / validation / test by the split hash of their global row number, the label is
encoded, the feature values are checked (missing, infinite), and the training rows' count, mean and
sum of squared deviations are computed per column. The results are merged in file order (Chan's
parallel update, so the statistics do not depend on the thread timing), and the rows are appended,
grouped by split: the first ones kept in memory up to a budget, the rest written to three Arrow IPC
files; pass 2 reads those instead of parsing the input again.
Columns whose float64 sums overflow (values near 1e308) are summed again from the spilled training
rows in extended precision.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .arrownp import array, finite, valid, values
from .inorder import in_order
from .io import StepError

__all__ = ["Scan", "scan", "value_error", "SPILL", "ROW", "CODE"]

MEMORY_ENV, DEFAULT_MEMORY_MIB = "XPUFLOW_PREPROCESS_MEMORY_MIB", 256
AHEAD = 2  # batches in flight per worker
SPILL = ".spill-{}.arrow"  # in the staging directory; removed before the output is published
ROW, CODE = "__row", "__label"  # spilled beside the features: global row number (for messages), label code


@dataclass
class Scan:
    """What pass 1 learnt: counts, statistics, classes, and where the rows were spilled."""

    features: tuple[str, ...]
    rows: int = 0
    n: Any = None  # training values present per column
    mean: Any = None
    m2: Any = None  # sum of squared deviations from the mean
    std: Any = None  # population std of the training values (set at the end)
    present: Any = None  # finite values per column, all rows
    codes: dict[str, int] = field(default_factory=dict)  # label value -> provisional code (first seen)
    label_counts: Any = None  # [3, classes] rows per split and provisional code
    spill: dict[int, Path] = field(default_factory=dict)
    held: dict[int, list] = field(default_factory=lambda: {0: [], 1: [], 2: []})  # the first rows, kept in memory
    held_bytes: int = 0
    spilled: bool = False  # once rows went to disk, all later rows do (file order per split)
    budget: int = 0  # bytes of rows kept in memory before spilling to disk

    def batches(self, split: int) -> Any:
        """The spilled rows of one split in file order: those held in memory (released as read), then the file."""
        held = self.held[split]
        while held:
            yield held.pop(0)
        yield from _file_batches(self.spill[split])


def _file_batches(path: Path) -> Any:
    import pyarrow as pa

    with pa.OSFile(str(path)) as f:  # read, not mapped: mapped pages would count as resident memory
        reader = pa.ipc.open_file(f)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)


class _Labels:
    """Provisional label codes, shared by the scanning threads (final codes are the sorted classes)."""

    def __init__(self, codes: dict[str, int]) -> None:
        self.codes, self.lock = codes, threading.Lock()

    def lookup(self, dictionary: list[str]) -> Any:
        import numpy as np

        with self.lock:
            for value in dictionary:
                self.codes.setdefault(value, len(self.codes))
            return np.array([self.codes[v] for v in dictionary], dtype=np.int32)


def memory_budget() -> int:
    """Bytes of parsed rows pass 1 keeps in memory before it spills to disk (``XPUFLOW_PREPROCESS_MEMORY_MIB``)."""
    text = os.environ.get(MEMORY_ENV, "").strip()
    try:
        mib = int(text) if text else DEFAULT_MEMORY_MIB
    except ValueError:
        mib = -1
    if mib < 0:
        raise StepError(f"preprocess: {MEMORY_ENV}={text!r} is not valid: a whole number of MiB >= 0. Fix: unset it "
                        f"(default {DEFAULT_MEMORY_MIB}) or set e.g. 64.")
    return mib << 20


def scan(source: Any, spill_dir: Path, *, seed: int, val_fraction: float, test_fraction: float,
         non_finite: str, threads: int = 0) -> Scan:
    """Read ``source`` once (see the module doc); raises StepError at the first bad value in file order."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import pyarrow as pa

    from .csvchunks import worker_count

    nf = len(source.features)
    result = Scan(source.features, n=np.zeros(nf), mean=np.zeros(nf), m2=np.zeros(nf),
                  present=np.zeros(nf, dtype=np.int64), label_counts=np.zeros((3, 0), np.int64))
    result.budget = memory_budget()
    labels = _Labels(result.codes)
    schema = pa.schema([*(pa.field(f, pa.float64()) for f in source.features), pa.field(CODE, pa.int32()),
                        pa.field(ROW, pa.int64())])
    workers = threads or worker_count()
    writers: dict[int, Any] = {}
    sinks: list[Any] = []
    try:
        for s in range(3):
            result.spill[s] = spill_dir / SPILL.format(s)
            sinks.append(pa.BufferedOutputStream(pa.OSFile(str(result.spill[s]), "wb"), buffer_size=4 << 20))
            writers[s] = pa.ipc.new_file(sinks[-1], schema)
        with ThreadPoolExecutor(workers, thread_name_prefix="xpuflow-scan") as pool:
            def submit(batch: Any) -> Any:  # in file order: each batch's first global row number is known here
                job = pool.submit(_scan_batch, batch, result.rows, source, labels, schema,
                                  (seed, val_fraction, test_fraction), non_finite)
                result.rows += batch.num_rows
                return job

            with contextlib.closing(in_order(submit, source.batches(), AHEAD * workers)) as jobs:
                for job in jobs:
                    _merge(result, job.result(), writers)
    finally:
        for w in writers.values():
            w.close()
        for sink in sinks:
            sink.close()
    with np.errstate(over="ignore", invalid="ignore"):
        result.std = np.sqrt(np.maximum(result.m2 / np.maximum(result.n, 1), 0.0))
    overflow = ~(np.isfinite(result.mean) & np.isfinite(result.std))
    if overflow.any():  # values near the float64 limit (e.g. 1e308): sums again in extended precision
        cols = np.flatnonzero(overflow)
        result.mean[cols], result.std[cols] = _wide_moments(result, [source.features[j] for j in cols])
    return result


def _scan_batch(batch: Any, offset: int, source: Any, labels: _Labels, schema: Any, split_args: tuple,
                non_finite: str) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from .preprocess import split_of

    n = batch.num_rows
    split = split_of(np.arange(offset, offset + n), *split_args)
    y = batch.column(source.label)
    if y.null_count:
        first = int(np.flatnonzero(np.asarray(pc.is_null(y)))[0])
        raise StepError(f"{source.name}: label {source.label!r} is missing in row {offset + first + 1}. "
                        "Fix: drop unlabelled rows before preprocessing.")
    if pa.types.is_dictionary(y.type):  # a CSV label, encoded by the reader
        encoded = y if pa.types.is_string(y.type.value_type) else pc.dictionary_encode(pc.cast(y, pa.string()))
    else:
        encoded = pc.dictionary_encode(y if pa.types.is_string(y.type) else pc.cast(y, pa.string()))
    codes = labels.lookup(encoded.dictionary.to_pylist())[values(encoded.indices)]
    columns = [col if col.type == pa.float64() else pc.cast(col, pa.float64())  # e.g. float32 Parquet columns
               for col in (batch.column(name) for name in source.features)]
    present = np.array([len(col) - col.null_count for col in columns], dtype=np.int64)
    # one sum over every column: finite unless a value is NaN or infinite (or the sum overflowed), then column by column
    everything = pc.sum(pa.chunked_array(columns, type=pa.float64())).as_py()
    first = None
    for j, col in enumerate(columns):
        if everything is None or math.isfinite(everything) or not present[j] or math.isfinite(pc.sum(col).as_py()):
            continue
        # NaN cells count as missing; infinities are refused here or imputed (and counted) in pass 2;
        # a sum that merely overflowed (values near 1e308) finds neither
        x, ok = values(col), valid(col)
        inf = np.isinf(x) if ok is None else np.isinf(x) & ok
        nan = np.isnan(x) if ok is None else np.isnan(x) & ok
        present[j] -= np.count_nonzero(nan) + np.count_nonzero(inf)
        if inf.any() and non_finite == "refuse":  # the first in file order: lowest row, then leftmost column
            first = min(first or (len(x), j), (int(np.flatnonzero(inf)[0]), j))
    if first is not None:
        row, j = first
        name = source.features[j]
        raise value_error(source, name, batch.column(name)[row].as_py(), offset + row, "features must be finite numbers")
    order = np.argsort(split, kind="stable")
    bounds = np.searchsorted(split[order], [0, 1, 2, 3])
    grouped = pa.RecordBatch.from_arrays([*columns, array(codes), array(np.arange(offset, offset + n))],
                                         schema=schema).take(array(order))
    parts = {s: grouped.slice(bounds[s], bounds[s + 1] - bounds[s]) for s in range(3)}
    counts = np.zeros((3, len(codes) and int(codes.max()) + 1), dtype=np.int64)
    for s in range(3):
        part_codes = codes[order[bounds[s]:bounds[s + 1]]]
        counts[s, :] = np.bincount(part_codes, minlength=counts.shape[1])
    count, mean, m2 = _moments(parts[0], source.features)
    # the size of the three parts' buffers, counted here (RecordBatch.nbytes of a slice takes ~0.1 ms, in the merge)
    return {"parts": parts, "nbytes": grouped.get_total_buffer_size(), "present": present, "counts": counts,
            "n": count, "mean": mean, "m2": m2}


def _moments(train: Any, features: tuple[str, ...]) -> tuple[Any, Any, Any]:
    """Count, mean and sum of squared deviations of each column's present training values (NaN = missing)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    nf = len(features)
    count, mean, m2 = np.zeros(nf), np.zeros(nf), np.zeros(nf)
    for j, name in enumerate(features):
        col = train.column(name)
        present = len(col) - col.null_count
        if not present:
            continue
        mu = pc.mean(col).as_py()
        if math.isfinite(mu):
            count[j], mean[j], m2[j] = present, mu, pc.variance(col, ddof=0).as_py() * present
            continue
        x = finite(col)  # without NaN (missing), inf (imputed); or a sum that overflowed
        if len(x):
            with np.errstate(over="ignore", invalid="ignore"):
                count[j], mean[j] = len(x), x.mean()
                m2[j] = ((x - mean[j]) ** 2).sum()  # inf when it overflows: summed again in extended precision
    return count, mean, m2


def _merge(result: Scan, part: dict[str, Any], writers: dict[int, Any]) -> None:
    """Fold one batch into the running totals, in file order (Chan et al.'s pairwise update)."""
    import numpy as np

    size = part["nbytes"]
    in_memory = result.held_bytes + size <= result.budget and not result.spilled
    result.spilled = not in_memory
    for s, rows in part["parts"].items():
        if not rows.num_rows:
            continue
        if in_memory:
            result.held[s].append(rows)
        else:
            writers[s].write_batch(rows)
    if in_memory:
        result.held_bytes += size
    result.present += part["present"]
    counts = part["counts"]
    if counts.shape[1] > result.label_counts.shape[1]:
        result.label_counts = np.pad(result.label_counts, ((0, 0), (0, counts.shape[1] - result.label_counts.shape[1])))
    result.label_counts[:, : counts.shape[1]] += counts
    nb = part["n"]
    total = result.n + nb
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        delta = part["mean"] - result.mean
        share = np.where(total > 0, nb / np.maximum(total, 1), 0.0)
        result.mean = result.mean + delta * share
        result.m2 = result.m2 + part["m2"] + delta * delta * result.n * share
    result.n = total


def value_error(source: Any, name: str, value: float, row: int, why: str, comma: bool = False) -> StepError:
    """A refused feature value, named by column, 1-based data row and value."""
    where = f"column {name!r} (#{source.columns.index(name) + 1}) holds {float(value)!r} in row {row + 1}"
    return StepError(f"{source.name}: {where}{',' if comma else ':'} {why}. Fix: correct or drop that value, or pass "
                     "--non-finite impute to treat such values as missing (imputed with the training mean).")


def _wide_moments(result: Scan, names: list[str]) -> tuple[Any, Any]:
    """Mean and std in extended precision, from the spilled training rows (their squares overflow float64)."""
    import numpy as np
    import pyarrow as pa

    wide = np.longdouble
    total, total_sq, count = (np.zeros(len(names), wide) for _ in range(3))
    for batch in itertools.chain(result.held[0], _file_batches(result.spill[0])):  # held ones stay for pass 2
        for k, name in enumerate(names):
            x = finite(batch.column(name)).astype(wide)
            total[k] += x.sum()
            total_sq[k] += (x * x).sum()
            count[k] += len(x)
    count = np.maximum(count, 1)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0))
    return mean.astype(np.float64), std.astype(np.float64)
