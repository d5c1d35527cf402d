"""``preprocess`` (CPU): validate, split, standardise and write Parquet splits; one read of the input.

1. **Scan** (:mod:`xpuflow.steps.prepscan`): the input is read once, in record batches (a local CSV
   is parsed in pieces on several threads); each row goes to train / validation / test by a hash of
   (seed, row number), so the split is deterministic and independent of batch size and threads; the
   training rows' mean and std, the label counts and the value checks are gathered, and the rows are
   spilled, grouped by split, to Arrow IPC files in the staging directory.
2. **Write** (:mod:`xpuflow.steps.prepwrite`): the three splits are standardised with the training mean/std,
   imputed, cast to float32 and written as zstd Parquet, from the spill (not from the input): one thread per
   split encodes while a pool standardises the next row groups.

Peak memory does not grow with the input: a bounded number of batches is in flight; the first rows
of the spill stay in memory up to a budget (``XPUFLOW_PREPROCESS_MEMORY_MIB``, default 256), the rest
goes to disk in the staging directory (about the size of the parsed values), removed before publishing.

NaN policy: a missing feature value (empty cell, NaN, null) is imputed with the training-split
mean, i.e. 0.0 after standardisation, and counted in ``stats.json`` (``imputed``); a feature that
is missing in every row is refused; a missing label is refused with its row (rows count data rows
from 1, the header excluded). Non-finite values (inf, -inf, or a value beyond float32 once
standardised) are refused by default, naming column, row and value; ``non_finite="impute"`` treats
them as missing and counts them (``non_finite``). Labels must be finite with at least two classes.

The output directory is published whole (:mod:`xpuflow.steps.publish`): everything is written
into a staging directory beside it and switched in last, so a refused, failed or killed rerun
leaves the previous output as it was.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import invalid
from .data import BUILTIN, non_finite_class, open_source
from .io import StepError, read_finished, write_json
from .shards import parse as parse_shard
from ..compute import Compute
from ..dsl.step import step

__all__ = ["preprocess", "SPLITS", "NON_FINITE", "read_split", "split_of"]

log = logging.getLogger("xpuflow.preprocess")
SPLITS = ("train", "validation", "test")
NON_FINITE = {  # --non-finite: what happens to inf, -inf and values beyond float32 after standardising
    "refuse": "non-finite feature values (inf, -inf, beyond float32 after standardising) are refused",
    "impute": "non-finite feature values (inf, -inf, beyond float32 after standardising) are imputed like missing "
    "ones and counted in non_finite",
}
_MASK = (1 << 64) - 1
_FLOAT32_BEYOND = "beyond float32 after standardising with the training statistics"


def split_of(row_numbers: Any, seed: int, val_fraction: float, test_fraction: float) -> Any:
    """0 = train, 1 = validation, 2 = test for each global row number (splitmix64 hash)."""
    import numpy as np

    with np.errstate(over="ignore"):
        z = row_numbers.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) & _MASK)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    out = np.zeros(len(u), dtype=np.int8)
    out[u < test_fraction + val_fraction] = 1
    out[u < test_fraction] = 2
    return out


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(value, (int, float)) and 0 <= value < 1):
            raise StepError(f"preprocess: {name}={value!r} is not valid: a fraction in [0, 1).")
    if val_fraction + test_fraction >= 1:
        raise StepError(f"preprocess: val_fraction + test_fraction = {val_fraction + test_fraction} leaves no "
                        "training rows. Fix: keep their sum below 1.")


@step(compute=Compute.cpu(cpu="2", memory="4Gi"), outputs=("output",))
def preprocess(
    input: str = BUILTIN,
    output: str = "out/data",
    label: str = "label",
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    batch_rows: int = 65536,
    non_finite: str = "refuse",
    shard: str = "",
) -> dict[str, Any]:
    """Prepare ``input`` for training; returns the stats written to ``output/stats.json``.

    ``shard``: ``I/N`` to standardise and write only the units k (of ``batch_rows`` rows) with k % N == I, after
    the statistics pass, which the N processes share (``N`` alone reads I from JOB_COMPLETION_INDEX); the output
    is published when all N are done (:mod:`xpuflow.steps.prepshard`).
    """
    from .prepscan import value_error
    from .prepwrite import write_splits
    from .publish import publish

    _check_fractions(val_fraction, test_fraction)
    if non_finite not in NON_FINITE:
        raise StepError(invalid("non_finite", non_finite, " or ".join(NON_FINITE), where="preprocess", choices=NON_FINITE,
                                fix="refuse (the default) stops at the first inf, -inf or out-of-range value; impute "
                                "treats them as missing"))
    if not (isinstance(batch_rows, int) and batch_rows > 0):
        raise StepError(invalid("batch_rows", batch_rows, "a positive number of rows", where="preprocess"))
    sh = parse_shard(shard, "preprocess")  # refused before anything is read
    source = open_source(input, label=label, batch_rows=batch_rows)
    options = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction, "non_finite": non_finite}
    if sh is not None:
        from .prepshard import sharded

        return sharded(source, output, sh, batch_rows=batch_rows, **options)
    with publish(output, who="preprocess", markers=("stats.json",)) as staging, _lean_runtime():
        first = first_pass(source, staging, **options)
        missing, unbounded, beyond = write_splits(first.found, staging, first.mean, first.std, first.final,
                                                  non_finite, batch_rows)
        if beyond is not None:  # non_finite="refuse": the first value (in file order) beyond float32
            row, j, value = beyond
            raise value_error(source, source.features[j], value, row, _FLOAT32_BEYOND, comma=True)
        for path in first.found.spill.values():
            path.unlink()
        stats = with_counts(first.stats, missing, unbounded)
        write_json(staging / "stats.json", stats)  # last: its presence means the split is complete
    rows = stats["rows"]
    log.info("preprocess: %d rows -> train %d / validation %d / test %d in %s", rows["total"],
             *(rows[s] for s in SPLITS), output)
    return stats


@dataclass
class FirstPass:
    """Pass 1 checked: the scan, the standardisation (``mean``, ``std``), provisional -> final class codes, and
    ``stats.json`` but for pass 2's counts (``imputed`` and ``non_finite`` are empty, see :func:`with_counts`)."""

    found: Any
    mean: Any
    std: Any
    final: Any
    stats: dict[str, Any]


def first_pass(source: Any, staging: Path, *, seed: int, val_fraction: float, test_fraction: float,
               non_finite: str) -> FirstPass:
    """Pass 1 (:func:`xpuflow.steps.prepscan.scan`, spilling into ``staging``) and the checks of its results."""
    import numpy as np

    from .prepscan import scan

    features = source.features
    found = scan(source, staging, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                 non_finite=non_finite)
    rows = found.rows
    if rows == 0:
        raise StepError(f"{source.name}: empty input: no data rows. Fix: check the file (a header alone is not "
                        "data).")
    for j, name in enumerate(features):
        if found.present[j] == 0:
            raise StepError(f"{source.name}: column {name!r} is missing (NaN or empty) in all {rows} rows. "
                            "Fix: drop the column or fill it.")
    split_rows = [int(n) for n in found.label_counts.sum(axis=1)]
    if split_rows[0] == 0:
        raise StepError(f"{source.name}: no training rows among {rows} (fractions too large for so few rows).")
    names = sorted(found.codes, key=found.codes.get)  # provisional code -> label value
    classes = _ordered_classes(names)
    _check_classes(source.name, source.label, classes, rows)
    mean = found.mean
    std = np.where(found.std > 0, found.std, 1.0)  # a constant column stays 0 after centring
    index = {c: i for i, c in enumerate(classes)}
    final = np.array([index[v] for v in names], dtype=np.int64)  # provisional code -> class index
    stats = {
        "input": source.name,
        "label": source.label,
        "features": list(features),
        "classes": classes,
        "rows": {"total": rows, **{s: split_rows[i] for i, s in enumerate(SPLITS)}},
        "label_counts": {s: {names[c]: int(found.label_counts[i, c]) for c in np.argsort(final)}
                         for i, s in enumerate(SPLITS)},
        "mean": {f: float(mean[j]) for j, f in enumerate(features)},
        "std": {f: float(std[j]) for j, f in enumerate(features)},
        "imputed": {},
        "non_finite": {},
        "non_finite_policy": non_finite,
        "nan_policy": "missing feature values are imputed with the training mean (0 after standardisation); "
        "missing labels and all-missing columns are refused; " + NON_FINITE[non_finite],
        "seed": seed,
        "fractions": {"validation": val_fraction, "test": test_fraction},
        "files": {s: f"{s}.parquet" for s in SPLITS},
    }
    return FirstPass(found, mean, std, final, stats)


def with_counts(stats: dict[str, Any], missing: Any, unbounded: Any) -> dict[str, Any]:
    """``stats`` with pass 2's imputed (missing) and non-finite counts per column (the columns that have any)."""
    features = stats["features"]
    return {**stats, "imputed": {f: int(missing[j]) for j, f in enumerate(features) if missing[j]},
            "non_finite": {f: int(unbounded[j]) for j, f in enumerate(features) if unbounded[j]}}


@contextlib.contextmanager
def _lean_runtime() -> Any:
    """While the step runs: Python's cyclic garbage collector paused, and arrow's buffers from the system allocator.

    The step makes thousands of short-lived arrow and numpy objects (no reference cycles), and each collection they
    trigger walks all of the process's objects. Arrow's default pool (mimalloc) hands freed pages back to the kernel
    and faults them in again on the next batch: ~0.7 s of kernel time on a 200 MB CSV, against ~0.2 s with the system
    allocator (same user time). ``ARROW_DEFAULT_MEMORY_POOL``, when set, is left to decide.
    """
    import pyarrow as pa

    enabled = gc.isenabled()
    pool = pa.default_memory_pool()
    gc.disable()
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(pool)
        if enabled:
            gc.enable()


def _check_classes(name: str, label: str, classes: list[str], rows: int) -> None:
    bad = non_finite_class(classes)
    if bad is not None:
        raise StepError(f"{name}: label {label!r} holds the class {bad!r}: labels must be finite class values. "
                        "Fix: drop or relabel those rows.")
    if len(classes) < 2:
        raise StepError(f"{name}: label {label!r} has one class ({classes[0]!r}) in all {rows} rows: a classifier "
                        "needs at least two classes. Fix: check that --label names the class column.")


def _ordered_classes(labels: list[str]) -> list[str]:
    keys = [str(k) for k in labels]
    try:
        return sorted(keys, key=lambda k: (float(k), k))
    except ValueError:
        return sorted(keys)


def read_split(directory: str | os.PathLike[str], split: str) -> tuple[Any, Any, dict[str, Any]]:
    """Load one split as (features float32 [n, d], labels int64 [n], stats)."""
    import numpy as np
    import pyarrow.parquet as pq

    folder = Path(directory)
    stats = read_finished(folder, "stats.json", who=f"reading the {split} split", option="data", producer="preprocess")
    table = pq.read_table(folder / stats["files"][split])
    x = np.column_stack([table.column(f).to_numpy() for f in stats["features"]]).astype(np.float32, copy=False)
    y = np.array(table.column("label").to_numpy(), dtype=np.int64)  # a writable copy (torch wants one)
    return x, y, stats


