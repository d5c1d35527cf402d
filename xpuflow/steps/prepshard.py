"""``preprocess --shard I/N``: N processes share one statistics pass, each standardises and writes its units.

    xpuflow step preprocess --input big.csv --output out/data --shard 0/3    # three processes, pods or tasks,
    xpuflow step preprocess --input big.csv --output out/data --shard 1/3    # in any order, at once or not
    xpuflow step preprocess --input big.csv --output out/data --shard 2/3

1. **Pass 1, once per run key**: the first shard in takes a lock in the shards directory beside the output
   (``.<output>.xpuflow-shards/``) and runs pass 1 over the whole input exactly as one process does
   (:func:`xpuflow.steps.preprocess.first_pass`: the checks, the training mean and std, the classes, the rows
   parsed and spilled by split); under ``non_finite="refuse"`` it also refuses a value beyond float32 once
   standardised (found from each column's extremes, then named by its first row in file order, as one process
   names it). It leaves ``stats-<key>/`` (the statistics and pass 1's rows, renamed in whole); the other shards
   wait on the lock and use it, and so does a rerun. The key hashes the input (a local file's path, size and
   modification time; a URL with its store's key for the object) and the options, so a changed input gets a new
   pass 1.
2. **Each shard's units**: unit k is the input rows [k * batch_rows, (k + 1) * batch_rows); shard I reads pass 1's
   rows (not the input), keeps the units with k % N == I, and standardises and writes them with the shared
   statistics through one process's code (:func:`xpuflow.steps.prepwrite.write_splits`) into its part
   (``train/validation/test.parquet``, uncompressed: the merge encodes them once), recording how many rows of
   each split every unit gave.
3. **Publishing**: the last shard in merges the parts (:mod:`xpuflow.steps.shards`): each split's rows taken unit
   by unit from the part that owns the unit, so every split holds the same rows in the same order as one process's,
   with bit-identical values; ``stats.json`` is the shared statistics with the parts' imputed and non-finite counts
   summed, byte for byte one process's. The Parquet files are equal as tables, not byte for byte (row groups may
   be cut elsewhere). The shards directory, pass 1's rows included, is removed once the output is published.

Every source works (builtin, CSV, gzip CSV, Parquet, fsspec URLs): only pass 1 reads it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from .io import StepError, is_url, local_path, write_json

__all__ = ["sharded"]

log = logging.getLogger("xpuflow.preprocess")
MARKER = "stats.json"
SHARED = "shared.json"  # in stats-<key>/: the statistics, and the label codes of the rows beside it
_ROWS = "rows-{}-{}.arrow"  # in stats-<key>/: split, then 0 (the rows pass 1 held in memory) and 1 (its spill)


def sharded(source: Any, output: str, sh: Any, *, batch_rows: int, seed: int, val_fraction: float,
            test_fraction: float, non_finite: str) -> dict[str, Any]:
    """Shard ``sh`` of ``preprocess`` (see the module doc); the last one in returns the published stats."""
    import numpy as np

    from .preprocess import _FLOAT32_BEYOND, _lean_runtime
    from .prepscan import value_error
    from .prepwrite import write_splits
    from .shards import assemble, finish_part, part, run_key

    options = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction, "non_finite": non_finite}
    base = run_key(input=_identity(source.name), label=source.label, unit_rows=batch_rows, **options)
    with _lean_runtime():
        shared = _shared_stats(source, output, base, options)
        stats = shared["stats"]
        key = run_key(base=base, stats=_digest(stats))
        with part(output, sh, who="preprocess", key=key) as folder:
            mine = _Mine(shared["rows"], source.features, sh, batch_rows)
            mean, std = (_vector(stats, name) for name in ("mean", "std"))
            missing, unbounded, beyond = write_splits(mine, folder, mean, std, np.array(shared["codes"]), non_finite,
                                                      batch_rows, compression="none")  # encoded once, by the merge
            if beyond is not None:  # not reached: the statistics pass refused the first one (_Extremes)
                row, j, value = beyond
                raise value_error(source, source.features[j], value, row, _FLOAT32_BEYOND, comma=True)
            summary = {"shard": str(sh), "stats": stats, "units": mine.units(), "unit_rows": batch_rows,
                       "imputed": missing.tolist(), "non_finite": unbounded.tolist()}
            finish_part(folder, sh, key, summary, who="preprocess", markers=(MARKER,), merge=merge)
    rows = sum(sum(u[1:]) for u in summary["units"])
    log.info("preprocess: shard %s: %d rows in %d units written", sh, rows, len(summary["units"]))
    return assemble(output, sh, who="preprocess", key=key, markers=(MARKER,), merge=merge) or \
        {"shard": str(sh), "rows": rows, "units": len(summary["units"]), "published": False}


def _identity(uri: str) -> Any:
    """What names the input's content for the run key: a local file's path, size and modification time; a URL
    with its store's key for the object (e.g. an ETag), else its size."""
    if uri.startswith("builtin:"):
        return uri
    if is_url(uri) and not uri.startswith("file://"):
        from .store import _fs

        fs, root = _fs(uri)
        for version in (fs.ukey, fs.size):
            with contextlib.suppress(OSError, NotImplementedError, ValueError, TypeError):
                return [uri, version(root)]
        return uri
    path = os.path.abspath(local_path(uri))
    st = os.stat(path)
    return [path, st.st_size, st.st_mtime_ns]


def _digest(stats: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(stats, sort_keys=True).encode()).hexdigest()[:32]


def _vector(stats: dict[str, Any], name: str) -> Any:
    import numpy as np

    return np.array([stats[name][f] for f in stats["features"]], dtype=np.float64)


def _shared_stats(source: Any, output: str, base: str, options: dict[str, Any]) -> dict[str, Any]:
    """Pass 1 over the whole input, once for all shards: read from the shards directory, or run there under its
    lock. Returns ``stats`` (``stats.json`` but for pass 2's counts), ``codes`` (provisional label code -> class)
    and ``rows`` (the folder of pass 1's rows, by split, which the shards read instead of the input).

    A refused input leaves no shards directory behind (unless parts are in it)."""
    from .preprocess import first_pass
    from .shards import parts_dir

    parts = parts_dir(output)
    done = parts / f"stats-{base}"
    with _stats_lock(parts, output) as lock:
        with contextlib.suppress(OSError, ValueError):
            return {**json.loads((done / SHARED).read_text()), "rows": done}
        scratch = parts / f".stats-{base}.tmp"
        shutil.rmtree(scratch, ignore_errors=True)  # left by a killed shard
        scratch.mkdir()
        try:
            extremes = _Extremes(source) if options["non_finite"] == "refuse" else None
            first = first_pass(extremes.source if extremes else source, scratch, **options)
            if extremes is not None:
                extremes.check(first.mean, first.std)
            for split, held in first.found.held.items():  # the first rows, kept in memory: to disk for the others
                os.rename(first.found.spill[split], scratch / _ROWS.format(split, 1))
                _write_batches(scratch / _ROWS.format(split, 0), held, scratch / _ROWS.format(split, 1))
            write_json(scratch / SHARED, {"stats": first.stats, "codes": first.final.tolist()})
            os.rename(scratch, done)  # whole or absent
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            if [p.name for p in parts.iterdir()] == [lock.name]:  # nothing else there: leave no litter
                with contextlib.suppress(OSError):
                    lock.unlink()
                    parts.rmdir()
            raise
        log.info("preprocess: statistics of %d rows written for the shards", first.stats["rows"]["total"])
    return {"stats": first.stats, "codes": first.final.tolist(), "rows": done}


def _write_batches(path: Path, batches: list[Any], like: Path) -> None:
    import pyarrow as pa

    with pa.OSFile(str(like)) as f:
        schema = pa.ipc.open_file(f).schema
    with pa.ipc.new_file(str(path), schema) as writer:
        for batch in batches:
            writer.write_batch(batch)


@contextlib.contextmanager
def _stats_lock(parts: Path, output: str) -> Any:
    """An exclusive lock on ``parts/.stats.lock``, waiting for it; taken again when a refused shard removed the
    file (and its directory) while this one waited."""
    import fcntl

    lock = parts / ".stats.lock"
    while True:
        try:
            parts.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # removed between the two calls
            continue
        except OSError as e:
            raise StepError(f"preprocess: output={os.fspath(output)!r}: cannot create {parts.name} beside it "
                            f"({e.strerror}). Fix: pass a writable path.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with contextlib.suppress(FileNotFoundError):
                if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                    yield lock
                    return
        finally:
            os.close(fd)


class _Extremes:
    """Each feature column's smallest and largest value, gathered while pass 1 reads the input: no value is
    beyond float32 once standardised unless one of them is (standardising is monotone)."""

    def __init__(self, source: Any) -> None:
        import dataclasses

        import numpy as np

        self.original = source
        self.lo = np.full(len(source.features), np.inf)
        self.hi = np.full(len(source.features), -np.inf)
        self.source = dataclasses.replace(source, batches=self._watch)

    def _watch(self) -> Any:
        import numpy as np
        import pyarrow.compute as pc

        for batch in self.original.batches():
            for j, name in enumerate(self.original.features):
                found = pc.min_max(batch.column(name))
                lo, hi = found["min"].as_py(), found["max"].as_py()
                if lo is not None:
                    self.lo[j], self.hi[j] = np.fmin(self.lo[j], lo), np.fmax(self.hi[j], hi)
            yield batch

    def check(self, mean: Any, std: Any) -> None:
        """Refuse the first value in file order beyond float32 once standardised, as one process names it."""
        import numpy as np

        with np.errstate(over="ignore", invalid="ignore"):
            ends = ((np.stack([self.lo, self.hi]) - mean) / std).astype(np.float32)
        if not np.isinf(ends).any():
            return
        from .preprocess import _FLOAT32_BEYOND
        from .prepscan import value_error

        offset, features = 0, self.original.features
        for batch in self.original.batches():  # an error path: read again to find the first one
            first = None
            for j, name in enumerate(features):
                x = _floats(batch.column(name))
                with np.errstate(over="ignore", invalid="ignore"):
                    bad = np.isinf(((x - mean[j]) / std[j]).astype(np.float32))
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    first = min(first or (i, j), (i, j))
            if first is not None:
                i, j = first
                raise value_error(self.original, features[j], float(_floats(batch.column(features[j]))[i]), offset + i,
                                  _FLOAT32_BEYOND, comma=True)
            offset += batch.num_rows


def _floats(col: Any) -> Any:
    """A feature column as float64 numpy values, NaN where missing."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from .arrownp import valid, values

    x = values(col if col.type == pa.float64() else pc.cast(col, pa.float64())).copy()
    ok = valid(col)
    if ok is not None:
        x[~ok] = np.nan
    return x


class _Mine:
    """This shard's rows of pass 1's (shared) rows, by split and in input order, as
    :func:`xpuflow.steps.prepwrite.write_splits` reads them: the rows of units k with k % N == I; counts each
    unit's rows per split as they are read."""

    def __init__(self, folder: Path, features: tuple[str, ...], sh: Any, unit_rows: int) -> None:
        self.folder, self.features, self.sh, self.unit_rows = folder, features, sh, unit_rows
        self.counts: list[dict[int, int]] = [{}, {}, {}]  # per split: unit -> rows (one thread per split)

    def batches(self, split: int) -> Any:
        import numpy as np

        from .arrownp import array, values
        from .prepscan import ROW, _file_batches

        counts = self.counts[split]
        for name in (_ROWS.format(split, 0), _ROWS.format(split, 1)):
            for batch in _file_batches(self.folder / name):
                unit = values(batch.column(ROW)) // self.unit_rows
                owned = unit % self.sh.count == self.sh.index
                if not owned.any():
                    continue
                if not owned.all():
                    batch = batch.take(array(np.flatnonzero(owned)))
                for k, n in zip(*np.unique(unit[owned], return_counts=True)):
                    counts[int(k)] = counts.get(int(k), 0) + int(n)
                yield batch

    def units(self) -> list[list[int]]:
        """``[unit, train rows, validation rows, test rows]`` of each unit this shard wrote, in input order."""
        return [[k, *(c.get(k, 0) for c in self.counts)] for k in sorted(set().union(*self.counts))]


def merge(parts: list[tuple[Path, dict[str, Any]]], staging: Path) -> dict[str, Any]:
    """The output of N shards' parts (in index order): each split's rows unit by unit, in input order."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from .preprocess import SPLITS, with_counts

    summaries = [s for _, s in parts]
    stats, count, unit_rows = summaries[0]["stats"], len(parts), summaries[0]["unit_rows"]
    units = sorted((u for s in summaries for u in s["units"]), key=lambda u: u[0])
    totals = np.sum([u[1:] for u in units], axis=0) if units else np.zeros(3, dtype=np.int64)
    if ([u[0] for u in units] != list(range(len(units))) or [int(t) for t in totals] != [stats["rows"][s] for s in SPLITS]
            or any(u[0] % count != i for i, s in enumerate(summaries) for u in s["units"])):
        raise StepError("preprocess: the shards' parts do not add up to the input's rows (a part was written with "
                        "other options). Fix: rerun every shard with the same options.")
    with ThreadPoolExecutor(len(SPLITS), thread_name_prefix="xpuflow-merge") as pool:
        jobs = [pool.submit(_merge_split, [folder / f"{name}.parquet" for folder, _ in parts],
                            [(u[0] % count, u[1 + s]) for u in units], staging / f"{name}.parquet", unit_rows)
                for s, name in enumerate(SPLITS)]
        for job in jobs:
            job.result()
    missing, unbounded = (np.sum([s[k] for s in summaries], axis=0) for k in ("imputed", "non_finite"))
    result = with_counts(stats, missing, unbounded)
    write_json(staging / MARKER, result)
    return result


def _merge_split(files: list[Path], order: list[tuple[int, int]], path: Path, group_rows: int) -> None:
    """Write ``path`` from the parts' ``files``: ``order`` is (part, rows) per unit, in input order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    readers = [_Rows(pq.ParquetFile(f)) for f in files]
    schema = readers[0].file.schema_arrow
    with pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=["label"]) as writer:
        pending, held = [], 0
        for owner, rows in order:
            pending += readers[owner].take(rows)
            held += rows
            if held >= group_rows:
                writer.write_table(pa.Table.from_batches(pending, schema=schema))
                pending, held = [], 0
        if pending:
            writer.write_table(pa.Table.from_batches(pending, schema=schema))


class _Rows:
    """A part's split file read in order, ``take(n)`` rows at a time."""

    def __init__(self, file: Any) -> None:
        self.file, self.batches, self.head = file, file.iter_batches(batch_size=65536), None

    def take(self, n: int) -> list[Any]:
        out = []
        while n:
            if self.head is None or not self.head.num_rows:
                self.head = next(self.batches)
            piece = self.head.slice(0, n)
            self.head = self.head.slice(piece.num_rows)
            out.append(piece)
            n -= piece.num_rows
        return out
