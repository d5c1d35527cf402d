"""``preprocess`` (CPU): validate, split, standardise and write Parquet splits, streamed.

Two passes over record batches, so peak memory does not grow with the input:

1. read and check every batch; assign each row to train / validation / test by a
   hash of (seed, row number), so the split is deterministic and independent of
   batch size; accumulate per-feature sums on the training rows only, label
   counts, and non-missing counts;
2. standardise with the training mean/std and write the three Parquet files
   batch by batch.

NaN policy: a missing feature value (empty cell, NaN, null) is imputed with the
training-split mean, i.e. 0.0 after standardisation, and counted in
``stats.json`` (``imputed``); a feature that is missing in every row is refused;
a missing label is refused with its row (rows count data rows from 1, the
header excluded). Outputs (``train.parquet``,
``validation.parquet``, ``test.parquet``, ``stats.json``) appear only when all of
them are complete: each is written under a temporary name and renamed, with
``stats.json`` last.
"""

from __future__ import annotations

import contextlib
import logging

import os
from pathlib import Path
from typing import Any

from ..errors import invalid
from .data import BUILTIN, non_finite_class, open_source
from .io import StepError, atomic_path, local_path, read_finished, write_json

__all__ = ["preprocess", "SPLITS", "read_split", "split_of"]

log = logging.getLogger("xpuflow.preprocess")
SPLITS = ("train", "validation", "test")
NON_FINITE = {  # --non-finite: what happens to inf, -inf and values beyond float32 after standardising
    "refuse": "non-finite feature values (inf, -inf, beyond float32 after standardising) are refused",
    "impute": "non-finite feature values (inf, -inf, beyond float32 after standardising) are imputed like missing "
    "ones and counted in non_finite",
}
_MASK = (1 << 64) - 1


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


def preprocess(
    input: str = BUILTIN,
    output: str = "out/data",
    label: str = "label",
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    batch_rows: int = 65536,
    non_finite: str = "refuse",
) -> dict[str, Any]:
    """Prepare ``input`` for training; returns the stats written to ``output/stats.json``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    _check_fractions(val_fraction, test_fraction)
    if non_finite not in NON_FINITE:
        raise StepError(invalid("non_finite", non_finite, " or ".join(NON_FINITE), where="preprocess", choices=NON_FINITE,
                                fix="refuse (the default) stops at the first inf, -inf or out-of-range value; impute "
                                "treats them as missing"))
    out_dir = local_path(output)
    source = open_source(input, label=label, batch_rows=batch_rows)
    features = source.features
    nf = len(features)

    # ---- pass 1: validate, split, statistics on the training rows only
    rows = 0
    shift = None
    sums = np.zeros(nf)
    sumsq = np.zeros(nf)
    count = np.zeros(nf)  # non-missing training values
    present = np.zeros(nf)  # non-missing values anywhere
    missing = np.zeros(nf, dtype=np.int64)
    unbounded = np.zeros(nf, dtype=np.int64)  # non-finite values imputed (non_finite="impute")
    labels: dict[str, list[int]] = {}
    for batch in source.batches():
        n = batch.num_rows
        split = split_of(np.arange(rows, rows + n), seed, val_fraction, test_fraction)
        y = batch.column(source.label)
        if y.null_count:
            first = int(np.flatnonzero(np.asarray(pc.is_null(y)))[0])
            raise StepError(f"{source.name}: label {label!r} is missing in row {rows + first + 1}. "
                            "Fix: drop unlabelled rows before preprocessing.")
        y = pc.cast(y, pa.string())
        for s in range(3):
            for item in pc.value_counts(y.filter(pa.array(split == s))).to_pylist():
                labels.setdefault(item["values"], [0, 0, 0])[s] += item["counts"]
        x = _matrix(batch, features)
        ok = ~np.isnan(x)
        present += ok.sum(axis=0)
        missing += (~ok).sum(axis=0)
        inf = np.isinf(x)
        if inf.any():
            if non_finite == "refuse":
                raise _refuse_value(source, inf, x, rows, "features must be finite numbers")
            unbounded += inf.sum(axis=0)
            present -= inf.sum(axis=0)
            x[inf] = np.nan
        train = x[split == 0]
        if shift is None and len(train):
            shift = np.nanmean(np.where(np.isnan(train), np.nan, train), axis=0)
            shift = np.where(np.isnan(shift), 0.0, shift)
        if len(train):
            with np.errstate(over="ignore", invalid="ignore"):
                t = train - shift
                sums += np.nansum(t, axis=0)
                sumsq += np.nansum(t * t, axis=0)
            count += (~np.isnan(t)).sum(axis=0)
        rows += n
    if rows == 0:
        raise StepError(f"{source.name}: empty input: no data rows. Fix: check the file (a header alone is not data).")
    for j, name in enumerate(features):
        if present[j] == 0:
            raise StepError(f"{source.name}: column {name!r} is missing (NaN or empty) in all {rows} rows. "
                            "Fix: drop the column or fill it.")
    split_rows = [sum(c[s] for c in labels.values()) for s in range(3)]
    if split_rows[0] == 0:
        raise StepError(f"{source.name}: no training rows among {rows} (fractions too large for so few rows).")
    classes = _ordered_classes(labels)
    _check_classes(source.name, label, classes, rows)
    safe = np.maximum(count, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        mean_shifted = sums / safe
        mean = (shift if shift is not None else 0.0) + mean_shifted
        var = np.maximum(sumsq / safe - mean_shifted**2, 0.0)
        std = np.sqrt(var)
    overflow = ~(np.isfinite(mean) & np.isfinite(var))
    if overflow.any():  # values near the float64 limit (e.g. 1e308): exact sums in extended precision
        cols = np.flatnonzero(overflow)
        mean[cols], std[cols] = _wide_moments(source, features, cols, seed, val_fraction, test_fraction)
    std = np.where(std > 0, std, 1.0)  # a constant column stays 0 after centring
    class_set = pa.array(classes, type=pa.string())

    # ---- pass 2: standardise and write, every file under a temporary name
    out_dir.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([*(pa.field(f, pa.float32()) for f in features), pa.field("label", pa.int64())])
    with contextlib.ExitStack() as stack:
        paths = {s: stack.enter_context(atomic_path(out_dir / f"{s}.parquet")) for s in SPLITS}
        # dictionary encoding only for the label: float features are nearly unique, so dictionaries cost time and space
        writers = {s: stack.enter_context(pq.ParquetWriter(paths[s], schema, compression="zstd",
                                                           use_dictionary=["label"])) for s in SPLITS}
        done = 0
        for batch in source.batches():
            n = batch.num_rows
            split = split_of(np.arange(done, done + n), seed, val_fraction, test_fraction)
            raw = _matrix(batch, features)
            if non_finite == "impute":
                raw[np.isinf(raw)] = np.nan  # counted in pass 1
            with np.errstate(over="ignore", invalid="ignore"):
                z = (raw - mean) / std
                x = np.where(np.isnan(z), 0.0, z).astype(np.float32)
            beyond = np.isinf(x)
            if beyond.any():
                if non_finite == "refuse":
                    raise _refuse_value(source, beyond, raw, done, "beyond float32 after standardising with the "
                                        "training statistics", comma=True)
                unbounded += beyond.sum(axis=0)
                x[beyond] = 0.0
            y = pc.index_in(pc.cast(batch.column(source.label), pa.string()), value_set=class_set)
            y = y.to_numpy(zero_copy_only=False).astype(np.int64)
            for s, name in enumerate(SPLITS):
                sel = split == s
                if sel.any():
                    cols = [pa.array(x[sel, j]) for j in range(nf)] + [pa.array(y[sel])]
                    writers[name].write_batch(pa.RecordBatch.from_arrays(cols, schema=schema))
            done += n
        for w in writers.values():
            w.close()
    stats = {
        "input": source.name,
        "label": label,
        "features": list(features),
        "classes": classes,
        "rows": {"total": rows, **{s: split_rows[i] for i, s in enumerate(SPLITS)}},
        "label_counts": {s: {c: labels[c][i] for c in classes} for i, s in enumerate(SPLITS)},
        "mean": {f: float(mean[j]) for j, f in enumerate(features)},
        "std": {f: float(std[j]) for j, f in enumerate(features)},
        "imputed": {f: int(missing[j]) for j, f in enumerate(features) if missing[j]},
        "non_finite": {f: int(unbounded[j]) for j, f in enumerate(features) if unbounded[j]},
        "non_finite_policy": non_finite,
        "nan_policy": "missing feature values are imputed with the training mean (0 after standardisation); "
        "missing labels and all-missing columns are refused; " + NON_FINITE[non_finite],
        "seed": seed,
        "fractions": {"validation": val_fraction, "test": test_fraction},
        "files": {s: f"{s}.parquet" for s in SPLITS},
    }
    write_json(out_dir / "stats.json", stats)  # last: its presence means the split is complete
    log.info("preprocess: %d rows -> train %d / validation %d / test %d in %s", rows, *split_rows, out_dir)
    return stats


def _refuse_value(source: Any, bad: Any, x: Any, offset: int, why: str, comma: bool = False) -> StepError:
    """The first bad value in file order, named by column, row and value."""
    import numpy as np

    i, j = (int(v) for v in np.argwhere(bad)[0])
    name = source.features[j]
    where = f"column {name!r} (#{source.columns.index(name) + 1}) holds {float(x[i, j])!r} in row {offset + i + 1}"
    return StepError(f"{source.name}: {where}{',' if comma else ':'} {why}. Fix: correct or drop that value, or pass "
                     "--non-finite impute to treat such values as missing (imputed with the training mean).")


def _check_classes(name: str, label: str, classes: list[str], rows: int) -> None:
    bad = non_finite_class(classes)
    if bad is not None:
        raise StepError(f"{name}: label {label!r} holds the class {bad!r}: labels must be finite class values. "
                        "Fix: drop or relabel those rows.")
    if len(classes) < 2:
        raise StepError(f"{name}: label {label!r} has one class ({classes[0]!r}) in all {rows} rows: a classifier "
                        "needs at least two classes. Fix: check that --label names the class column.")


def _wide_moments(source: Any, features: tuple[str, ...], cols: Any, seed: int, val: float, test: float) -> Any:
    """Mean and std of the training rows of ``cols`` in extended precision (a rare path: float64 overflowed)."""
    import numpy as np

    wide = np.longdouble
    total, total_sq, count, done = np.zeros(len(cols), wide), np.zeros(len(cols), wide), np.zeros(len(cols)), 0
    for batch in source.batches():
        x = _matrix(batch, features)[:, cols]
        train = x[split_of(np.arange(done, done + batch.num_rows), seed, val, test) == 0].astype(wide)
        train[~np.isfinite(train)] = np.nan  # infinities reach here only when imputed
        total += np.nansum(train, axis=0)
        total_sq += np.nansum(train * train, axis=0)
        count += (~np.isnan(train)).sum(axis=0)
        done += batch.num_rows
    count = np.maximum(count, 1)
    mean = total / count
    return mean.astype(np.float64), np.sqrt(np.maximum(total_sq / count - mean * mean, 0)).astype(np.float64)


def _matrix(batch: Any, features: tuple[str, ...]) -> Any:
    import numpy as np

    cols = [batch.column(f).to_numpy(zero_copy_only=False) for f in features]
    return np.column_stack(cols).astype(np.float64, copy=False)


def _ordered_classes(labels: dict[str, list[int]]) -> list[str]:
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


