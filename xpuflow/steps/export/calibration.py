"""The preprocessed splits as a stream of static-shape batches, and the calibration reader on top.

Rows are read from the split's Parquet file in record batches, so memory does
not grow with the split. NPUs want static shapes: every batch has exactly the
exported batch size. For evaluation the last partial batch is padded with zero
rows whose outputs are dropped; for calibration only full batches are used, so
padding never widens a calibrated range.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..io import StepError, read_finished
from ..models import check_fits

__all__ = ["SplitStream", "StreamReader", "check_data", "collect"]


def check_data(data: str | os.PathLike[str], meta: dict[str, Any], splits: tuple[str, ...]) -> list[str]:
    """The feature columns to read, after checking the data matches the model's input."""
    folder = Path(data)
    stats = read_finished(folder, "stats.json", who="export", option="data", producer="preprocess")
    features = check_fits(stats, meta, who="export", data=os.fspath(data))
    for split in splits:
        if split not in stats.get("files", {}):
            raise StepError(f"export: data={os.fspath(data)!r} has no {split!r} split (it has "
                            f"{', '.join(stats.get('files', {}))}).")
    return features


class SplitStream:
    """One split of a preprocess output, read as batches of exactly ``batch`` rows."""

    def __init__(self, data: str | os.PathLike[str], split: str, features: list[str], batch: int,
                 max_batches: int | None = None, read_rows: int = 8192) -> None:
        import pyarrow.parquet as pq

        self.split, self.features, self.batch, self.max_batches = split, features, batch, max_batches
        stats = json.loads((Path(data) / "stats.json").read_text())
        self.path = Path(data) / stats["files"][split]
        self.rows = pq.ParquetFile(self.path).metadata.num_rows
        self.read_rows = read_rows

    @property
    def full_batches(self) -> int:
        n = self.rows // self.batch
        return n if self.max_batches is None else min(n, self.max_batches)

    def _chunks(self) -> Iterator[tuple[Any, Any]]:
        import numpy as np
        import pyarrow.parquet as pq

        for rb in pq.ParquetFile(self.path).iter_batches(batch_size=self.read_rows, columns=[*self.features, "label"]):
            x = np.column_stack([rb.column(f).to_numpy(zero_copy_only=False) for f in self.features])
            yield x.astype(np.float32, copy=False), rb.column("label").to_numpy(zero_copy_only=False).astype(np.int64)

    def batches(self, pad: bool) -> Iterator[tuple[Any, Any, int]]:
        """(x [batch, d], y [batch], real rows); with ``pad`` the last partial batch is zero-padded, else dropped."""
        import numpy as np

        xs, ys, held, emitted = [], [], 0, 0
        for x, y in self._chunks():
            xs.append(x)
            ys.append(y)
            held += len(x)
            if held < self.batch:
                continue
            x_all, y_all = np.concatenate(xs), np.concatenate(ys)
            whole = (held // self.batch) * self.batch
            for start in range(0, whole, self.batch):
                if self.max_batches is not None and emitted >= self.max_batches:
                    return
                yield x_all[start:start + self.batch], y_all[start:start + self.batch], self.batch
                emitted += 1
            xs, ys, held = [x_all[whole:]], [y_all[whole:]], held - whole
        if pad and held and (self.max_batches is None or emitted < self.max_batches):
            x_rest, y_rest = np.concatenate(xs), np.concatenate(ys)
            x_pad = np.zeros((self.batch, len(self.features)), dtype=np.float32)
            x_pad[:held] = x_rest
            y_pad = np.full(self.batch, -1, dtype=np.int64)
            y_pad[:held] = y_rest
            yield x_pad, y_pad, held


def collect(stream: SplitStream, run: Callable[[Any], Any]) -> tuple[Any, Any]:
    """Feed every row of ``stream`` through ``run(x) -> logits``; returns (logits [n, classes], labels [n])."""
    import numpy as np

    outs, labels = [], []
    for x, y, real in stream.batches(pad=True):
        outs.append(np.asarray(run(x), dtype=np.float32)[:real])
        labels.append(y[:real])
    if not outs:
        raise StepError(f"export: the {stream.split} split has no rows to evaluate on.")
    return np.concatenate(outs), np.concatenate(labels)


def _reader_base() -> type:
    from onnxruntime.quantization import CalibrationDataReader

    return CalibrationDataReader


def StreamReader(stream: SplitStream, input_name: str) -> Any:  # noqa: N802 - builds a CalibrationDataReader
    """A ``CalibrationDataReader`` that streams full batches of ``stream`` (``max_batches`` of them at most)."""

    class _Reader(_reader_base()):  # type: ignore[misc]
        def __init__(self) -> None:
            self.fed = 0
            self._it: Iterator[tuple[Any, Any, int]] | None = None

        def get_next(self) -> dict[str, Any] | None:
            if self._it is None:
                self._it = stream.batches(pad=False)
            item = next(self._it, None)
            if item is None:
                return None
            self.fed += 1
            return {input_name: item[0]}

        def rewind(self) -> None:  # used by some calibrators that make two passes
            self._it = None

    return _Reader()
