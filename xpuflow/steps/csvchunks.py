"""Parse a local CSV file on several threads and hand its record batches on in file order.

The file is read in pieces of about ``chunk_bytes``, each cut after its last line end, so every
piece holds whole rows; the pieces are parsed by pyarrow's CSV reader on a small thread pool
(pyarrow releases the GIL while it parses) and yielded in order, with a bounded number in flight,
so memory stays flat however large the file is. This is what ``pyarrow.csv.read_csv`` does inside,
without holding the whole table. Like pyarrow's reader with its default options, it assumes that no
quoted value holds a line break.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from .inorder import in_order

__all__ = ["parallel_csv_batches", "worker_count"]

CHUNK_BYTES = 2 << 20  # small pieces parse faster (they stay in the CPU caches)
AHEAD = 4  # pieces in flight per worker
_NULL_LETTERS = (b"n", b"N")  # one of them is in each of pyarrow's default null words


def worker_count() -> int:
    """Threads worth running: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def _pieces(path: str, chunk_bytes: int) -> Iterator[memoryview]:
    """Whole-line pieces of the file, in order (the first one starts with the header).

    Each piece is read from where the previous one ended (its last line end), so nothing is copied
    twice: the few bytes after a piece's last line end are simply read again with the next one.
    """
    pos = 0
    with open(path, "rb", buffering=0) as f:
        size = chunk_bytes
        while True:
            f.seek(pos)
            data = f.read(size)
            if not data:
                return
            cut = data.rfind(b"\n") + 1
            if len(data) < size:  # the end of the file: the rest, line end or not
                cut = len(data)
            elif cut == 0:  # no line end yet: one very long line; read more at once
                size *= 2
                continue
            pos += cut
            size = chunk_bytes
            yield memoryview(data)[:cut]


def parallel_csv_batches(path: str, columns: list[str], convert: Any, *, batch_rows: int,
                         refuse: Callable[[Exception], Exception], threads: int = 0,
                         chunk_bytes: int = CHUNK_BYTES) -> Iterator[Any]:
    """Record batches of ``path`` (at most ``batch_rows`` rows each), in file order."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.csv as pcsv

    plain = _plain_options(convert)

    def parse(piece: memoryview, first: bool) -> Any:
        options = pcsv.ReadOptions(use_threads=False, block_size=len(piece) + 1,
                                   column_names=None if first else columns)
        body = piece.obj.find(b"\n", 0, len(piece)) + 1 if first else 0  # the header's names are not values
        words = plain is None or any(piece.obj.find(c, body, len(piece)) >= 0 for c in _NULL_LETTERS)
        return pcsv.read_csv(pa.BufferReader(pa.py_buffer(piece)), read_options=options,
                             convert_options=convert if words else plain)

    workers = threads or worker_count()
    with ThreadPoolExecutor(workers, thread_name_prefix="xpuflow-csv") as pool:
        def submit(numbered: tuple[int, memoryview]) -> Any:
            return pool.submit(parse, numbered[1], numbered[0] == 0)

        with contextlib.closing(in_order(submit, enumerate(_pieces(path, chunk_bytes)), AHEAD * workers)) as jobs:
            for job in jobs:
                yield from _slices(job, batch_rows, refuse, pa)


def _plain_options(convert: Any) -> Any:
    """``convert`` with the empty cell as its only null value, for pieces where no other one can occur.

    Matching every cell against the null words ("NA", "NaN", "null", ...) is ~15 % of the parse; each of
    pyarrow's default words holds an n or an N, so in a piece with neither letter (numbers, say) only the
    empty cell can be null and the result is the same. None when a null word holds neither letter.
    """
    import copy

    words = [w.encode() for w in convert.null_values if w]
    if not all(any(c in w for c in _NULL_LETTERS) for w in words):
        return None
    plain = copy.copy(convert)
    plain.null_values = [""] if "" in convert.null_values else []
    return plain


def _slices(future: Any, batch_rows: int, refuse: Callable[[Exception], Exception], pa: Any) -> Iterator[Any]:
    try:
        table = future.result()
    except pa.ArrowInvalid as e:
        raise refuse(e) from e
    for batch in table.to_batches():
        for start in range(0, batch.num_rows, batch_rows):
            yield batch.slice(start, batch_rows)
