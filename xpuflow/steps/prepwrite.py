"""Pass 2 of ``preprocess``: standardise, impute, cast to float32 and write the three splits as zstd Parquet.

The rows come from pass 1's spill (:mod:`xpuflow.steps.prepscan`), split by split, in file order, gathered into
row groups of about ``batch_rows`` rows. One thread per split encodes its file, row group after row group, while
the next groups are standardised on a pool of one thread per CPU, so the training split (70 % of the rows by
default) does not keep one thread busy after the other two finished; each file's written pages go to disk in
the background meanwhile (publishing fsyncs them, and then has little left to wait for).
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

__all__ = ["write_splits"]

_WRITE_AHEAD = 1  # row groups of one split standardised ahead of the one being encoded


def _groups(batches: Any, rows: int) -> Any:
    """Consecutive record batches gathered into lists of at least ``rows`` rows (the last one may hold fewer)."""
    group, held = [], 0
    for batch in batches:
        group.append(batch)
        held += batch.num_rows
        if held >= rows:
            yield group
            group, held = [], 0
    if group:
        yield group


def write_splits(found: Any, staging: Path, mean: Any, std: Any, final: Any, non_finite: str,
                 batch_rows: int, compression: str = "zstd") -> tuple[Any, Any, tuple[int, int, float] | None]:
    """Pass 2 (see the module doc) into ``staging``: ``found.batches(split)`` gives each split's rows in file order.
    ``compression``: the Parquet codec (a shard's part, merged into the output later, is written uncompressed).

    Returns the imputed (missing) and non-finite counts per column, and under non_finite="refuse" the
    first value in file order that is infinite once standardised and cast to float32, if any.
    """
    import numpy as np

    from .csvchunks import worker_count
    from .preprocess import SPLITS

    scratch = threading.local()  # per standardising thread: fresh numpy buffers cost page faults every time
    with ThreadPoolExecutor(worker_count(), thread_name_prefix="xpuflow-standardise") as work, \
            ThreadPoolExecutor(1, thread_name_prefix="xpuflow-flush") as flusher, \
            ThreadPoolExecutor(len(SPLITS), thread_name_prefix="xpuflow-write") as pool:
        def standardise(group: list[Any]) -> Any:
            return work.submit(_standardise, group, found.features, mean, std, final, non_finite == "refuse", scratch)

        jobs = [pool.submit(_write_split, found.batches(s), staging / f"{name}.parquet", found.features, standardise,
                            _Flush(flusher), batch_rows, compression) for s, name in enumerate(SPLITS)]
        done = [job.result() for job in jobs]
    firsts = [first for _, first in done if first is not None]
    counts = np.sum([c for c, _ in done], axis=0)
    return counts[0], counts[1], min(firsts) if firsts else None


def _write_split(spilled: Any, path: Path, features: tuple[str, ...], standardise: Any, flush: _Flush,
                 batch_rows: int, compression: str) -> tuple[Any, tuple[int, int, float] | None]:
    """Encode one split's row groups in order, each standardised (on the pool) while the one before is encoded."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .inorder import in_order

    counts = np.zeros((2, len(features)), dtype=np.int64)
    schema = pa.schema([*(pa.field(f, pa.float32()) for f in features), pa.field("label", pa.int64())])
    # one contiguous row group of ~batch_rows rows each
    jobs = contextlib.closing(in_order(standardise, _groups(spilled, batch_rows), _WRITE_AHEAD))
    with pa.OSFile(str(path), "wb") as sink:
        try:
            # dictionary encoding only for the label: float features are nearly unique (dictionaries cost time, space)
            with pq.ParquetWriter(sink, schema, compression=compression, use_dictionary=["label"]) as writer, \
                    jobs as groups:
                for job in groups:
                    arrays, found, first = job.result()
                    counts += found
                    if first is not None:
                        return counts, first
                    writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
                    flush.start(sink.fileno())
        finally:
            flush.settle()  # before the descriptor is closed
        flush.finish(sink.fileno())
    return counts, None


class _Flush:
    """A file's written pages sent to disk in the background while the next row groups are encoded.

    Publishing fsyncs every file before switching the output in; the Parquet files are hundreds of MB on a large
    input, so flushing them only then left the disk idle while encoding and the cores idle while flushing. One
    flush per file at a time (one thread for all files); the last one's error, if any, is raised by ``finish``.
    """

    def __init__(self, pool: Any) -> None:
        self.pool, self.last = pool, None

    def start(self, fd: int) -> None:
        if self.last is None or self.last.done():
            if self.last is not None:
                self.last.result()  # a failed flush: raised here rather than lost
            self.last = self.pool.submit(os.fdatasync, fd)

    def settle(self) -> None:
        """Wait for the flush in flight, if any (it must not outlive the file's descriptor)."""
        if self.last is not None:
            wait([self.last])

    def finish(self, fd: int) -> None:
        """Raise the background flush's error, if any, and flush the rest (the last row group, the footer)."""
        if self.last is not None:
            self.last.result()
        os.fsync(fd)


def _standardise(group: list[Any], features: tuple[str, ...], mean: Any, std: Any, final: Any, refuse: bool,
                 scratch: Any) -> tuple[list[Any], Any, tuple[int, int, float] | None]:
    """One row group's columns standardised, imputed and cast to float32, the label as its class index.

    Returns the arrays, the imputed and non-finite counts per column, and under ``refuse`` the first value (row,
    column, value) beyond float32 once standardised (the arrays are then incomplete).
    """
    import numpy as np
    import pyarrow as pa

    from .arrownp import array, valid, values
    from .prepscan import CODE, ROW

    table = pa.Table.from_batches(group).combine_chunks()
    n = table.num_rows
    if getattr(scratch, "z", None) is None or len(scratch.z) < n:
        scratch.z, scratch.nan = np.empty(n), np.empty(n, dtype=bool)
    zn, bad = scratch.z[:n], scratch.nan[:n]
    counts = np.zeros((2, len(features)), dtype=np.int64)
    out = np.empty((len(features), n), dtype=np.float32)
    arrays, first = [], None
    for j, name in enumerate(features):
        col = table.column(name).chunk(0)
        x, ok = values(col), valid(col)  # the slots of nulls hold anything: marked missing below
        with np.errstate(over="ignore", invalid="ignore"):
            np.subtract(x, mean[j], out=zn)
            np.divide(zn, std[j], out=zn)
            np.isnan(zn, out=bad)
            if ok is not None:
                np.logical_or(bad, ~ok, out=bad)
            missing = np.count_nonzero(bad)
            if missing:
                counts[0, j] += missing
                zn[bad] = 0.0
            out[j] = zn
        np.isinf(out[j], out=bad)  # inf in the input (imputed), or beyond float32 once standardised
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            if refuse:  # only values beyond float32 reach here (infinities were refused in pass 1)
                first = min(first or (1 << 63, j, 0.0), (int(table.column(ROW)[i].as_py()), j, float(x[i])))
            counts[1, j] += np.count_nonzero(bad)
            out[j][bad] = 0.0
        arrays.append(array(out[j]))
    arrays.append(array(final[values(table.column(CODE).chunk(0))]))
    return arrays, counts, first
