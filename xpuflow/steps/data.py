"""Input data: the embedded default data set, and streaming readers for CSV/Parquet.

The default data set is scikit-learn's bundled *digits* (1,797 labelled 8x8
images, 64 features, 10 classes); it ships inside the scikit-learn package, so
nothing is downloaded. User data is CSV or Parquet at a local path or an fsspec
URL (file://, s3://, gs://), read in record batches so memory stays bounded.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .io import StepError, is_url, local_path, open_binary

__all__ = ["BUILTIN", "Source", "open_source"]

BUILTIN = "builtin:digits"


@dataclass(frozen=True)
class Source:
    """A readable table: column names, label column, and a function yielding record batches."""

    name: str
    columns: tuple[str, ...]
    label: str
    features: tuple[str, ...]
    batches: Any  # () -> Iterator[pyarrow.RecordBatch]


def open_source(uri: str, *, label: str, batch_rows: int = 65536) -> Source:
    """Open ``uri`` (builtin:digits, .csv, .parquet) and check its header."""
    if uri == BUILTIN:
        return _digits(label, batch_rows)
    lower = uri.lower().split("?")[0]
    if lower.endswith((".parquet", ".pq")):
        return _parquet(uri, label, batch_rows)
    if lower.endswith((".csv", ".csv.gz", ".txt")):
        return _csv(uri, label, batch_rows)
    raise StepError(f"input={uri!r} is not valid: expected {BUILTIN}, a .csv or a .parquet file (local path or "
                    "fsspec URL). Fix: rename the file or convert it.")


def _check_header(uri: str, columns: list[str], label: str) -> tuple[str, ...]:
    if not columns:
        raise StepError(f"{uri}: empty input: no header row. Fix: the first row must name the columns.")
    seen: dict[str, int] = {}
    for i, name in enumerate(columns):
        if name in seen:
            raise StepError(f"{uri}: duplicate column {name!r} (columns #{seen[name] + 1} and #{i + 1}). "
                            "Fix: give every column a unique name.")
        seen[name] = i
    if label not in seen:
        from ..errors import did_you_mean

        raise StepError(f"{uri}: label column {label!r} is missing; columns are: {', '.join(columns[:20])}"
                        f"{' ...' if len(columns) > 20 else ''}.{did_you_mean(label, columns)} "
                        "Fix: pass --label with the name of the label column.")
    features = tuple(c for c in columns if c != label)
    if not features:
        raise StepError(f"{uri}: no feature columns besides the label {label!r}.")
    return features


def _digits(label: str, batch_rows: int) -> Source:
    import numpy as np
    import pyarrow as pa
    from sklearn.datasets import load_digits

    bunch = load_digits()
    names = [n.replace("pixel_", "px") for n in bunch.feature_names]
    columns = [*names, label]

    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, len(bunch.target), batch_rows):
            stop = start + batch_rows
            arrays = [pa.array(bunch.data[start:stop, j].astype(np.float64)) for j in range(len(names))]
            arrays.append(pa.array(bunch.target[start:stop].astype(np.int64)))
            yield pa.RecordBatch.from_arrays(arrays, names=columns)

    return Source(BUILTIN, tuple(columns), label, tuple(names), batches)


def _gzipped(uri: str) -> bool:
    return uri.lower().split("?")[0].endswith(".gz")


@contextlib.contextmanager
def open_csv_bytes(uri: str) -> Iterator[Any]:
    """The CSV's bytes as a pyarrow input stream: local or fsspec, gunzipped when the name ends in ``.gz``."""
    import pyarrow as pa

    with open_binary(uri) as raw:
        stream = pa.PythonFile(raw, mode="r")
        yield pa.CompressedInputStream(stream, "gzip") if _gzipped(uri) else stream


def _read_csv_header(uri: str) -> list[str]:
    with open_binary(uri) as raw:
        stream = raw
        if _gzipped(uri):
            import gzip

            stream = gzip.open(raw)
        first = stream.readline()
    if b"\x00" in first:  # UTF-16 without a BOM (or a binary file) decodes as "UTF-8" full of NULs
        raise UnicodeDecodeError("utf-8", first, first.index(b"\x00"), first.index(b"\x00") + 1, "NUL byte")
    return next(csv.reader(io.StringIO(first.decode("utf-8-sig", errors="strict"))), [])


def arrow_reason(e: Exception) -> str:
    """Arrow's reason for refusing a CSV, without the row's text it quotes (never file content in a message)."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    match = re.search(r"Expected \d+ columns, got \d+", text)
    if match:
        return match.group(0)
    return text.split(": ")[0][:120]


_ARROW_CSV_ERROR = re.compile(r"In CSV column #(\d+): (?:Row #(\d+): )?CSV conversion error to double: invalid value '(.*)'")


def _csv(uri: str, label: str, batch_rows: int) -> Source:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    try:
        columns = _read_csv_header(uri)
    except UnicodeDecodeError as e:
        raise StepError(f"{uri}: the header is not UTF-8 text (byte {e.start + 1}: {e.reason}; UTF-16 and binary "
                        "files are not CSV text). Fix: save the file as UTF-8 CSV.") from e
    except (OSError, EOFError) as e:  # e.g. a .gz name on a file that is not gzip
        raise StepError(f"{uri}: cannot read it ({type(e).__name__}: {str(e)[:120]}). "
                        "Fix: check the file (a .csv.gz must be gzip-compressed CSV).") from e
    features = _check_header(uri, columns, label)
    types = {name: pa.float64() for name in features}
    types[label] = pa.dictionary(pa.int32(), pa.string())  # encoded while parsing: few distinct classes

    def refuse(e: Exception) -> StepError:
        match = _ARROW_CSV_ERROR.search(str(e))
        if not match:
            return StepError(f"{uri}: cannot parse the CSV ({arrow_reason(e)}). Fix: check the file "
                             "(one header row, the same number of fields on every row, UTF-8).")
        col, value = int(match.group(1)), match.group(3)
        row = _first_non_numeric_row(uri, columns[col])
        return StepError(
            f"{uri}: column {columns[col]!r} (#{col + 1}) is not numeric: row {row} holds {_not_shown(value)}. "
            "Fix: features must be numbers (empty cells count as missing); encode or drop that column."
        )

    convert = pcsv.ConvertOptions(column_types=types, strings_can_be_null=True)
    local = None if _gzipped(uri) or (is_url(uri) and not uri.startswith("file://")) else str(local_path(uri))

    def batches() -> Iterator[pa.RecordBatch]:
        if local is not None:  # a plain local file: parsed in pieces on several threads
            from .csvchunks import parallel_csv_batches

            yield from parallel_csv_batches(local, columns, convert, batch_rows=batch_rows, refuse=refuse)
            return
        with open_csv_bytes(uri) as raw:
            try:
                reader = pcsv.open_csv(raw, read_options=pcsv.ReadOptions(block_size=1 << 22), convert_options=convert)
            except pa.ArrowInvalid as e:
                raise refuse(e) from e
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except pa.ArrowInvalid as e:
                    raise refuse(e) from e
                for start in range(0, batch.num_rows, batch_rows):
                    yield batch.slice(start, batch_rows)

    return Source(uri, tuple(columns), label, features, batches)


def _first_non_numeric_row(uri: str, column: str) -> int | str:
    """The 1-based data row of the first value in ``column`` that is not a number (an error path: reads as text)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    offset = 0
    with open_csv_bytes(uri) as raw:
        reader = pcsv.open_csv(raw, convert_options=pcsv.ConvertOptions(
            include_columns=[column], column_types={column: pa.string()}, strings_can_be_null=True))
        for batch in reader:
            for i, value in enumerate(batch.column(0).to_pylist()):
                if value is None:
                    continue
                try:
                    float(value)
                except ValueError:
                    return offset + i + 1
            offset += batch.num_rows
    return "?"


def _parquet(uri: str, label: str, batch_rows: int) -> Source:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    with open_binary(uri) as raw:
        try:
            schema = pq.ParquetFile(raw).schema_arrow
        except pa.ArrowInvalid as e:
            raise StepError(f"{uri}: not a Parquet file ({e}). Fix: check the file.") from e
    columns = list(schema.names)
    features = _check_header(uri, columns, label)
    label_type = schema.field(label).type
    if pa.types.is_nested(label_type) or pa.types.is_binary(label_type) or pa.types.is_large_binary(label_type):
        raise StepError(f"{uri}: label column {label!r} has type {label_type}: a label must be one value per row "
                        "(string, integer, float or boolean). Fix: pass --label with a plain column, or flatten it.")

    def batches() -> Iterator[pa.RecordBatch]:
        offset = 0
        with open_binary(uri) as raw:
            for batch in pq.ParquetFile(raw).iter_batches(batch_size=batch_rows):
                arrays = []
                for name in columns:
                    col = batch.column(name)
                    if name != label and not pa.types.is_floating(col.type):
                        col = _to_double(uri, name, columns.index(name), col, offset, pc, pa)
                    if name == label:
                        col = _label_to_string(uri, label, col, offset)
                    arrays.append(col)
                offset += batch.num_rows
                yield pa.RecordBatch.from_arrays(arrays, names=columns)

    return Source(uri, tuple(columns), label, features, batches)


def _label_to_string(uri: str, label: str, col: Any, offset: int) -> Any:
    """The label as strings; a float label must be finite (NaN is not a class)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_floating(col.type):
        values = col.to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(values) & ~np.asarray(col.is_null().to_numpy(zero_copy_only=False))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise StepError(f"{uri}: label {label!r} is {values[first]} in row {offset + first + 1}: labels must be "
                            "finite class values. Fix: drop or relabel that row.")
    return pc.cast(col, pa.string())


def non_finite_class(classes: list[str]) -> str | None:
    """A class name that reads as a non-finite number when every class reads as a number, else None."""
    try:
        values = [float(c) for c in classes]
    except ValueError:
        return None
    return next((c for c, v in zip(classes, values) if not math.isfinite(v)), None)


def _to_double(uri: str, name: str, index: int, col: Any, offset: int, pc: Any, pa: Any) -> Any:
    if pa.types.is_integer(col.type) or pa.types.is_boolean(col.type) or pa.types.is_decimal(col.type):
        return pc.cast(col, pa.float64())
    for i, value in enumerate(col.to_pylist()):
        if value is None:
            continue
        try:
            float(value)
        except (TypeError, ValueError):
            raise StepError(
                f"{uri}: column {name!r} (#{index + 1}) is not numeric: row {offset + i + 1} holds {_not_shown(value)}. "
                "Fix: features must be numbers; encode or drop that column."
            ) from None
    return pc.cast(col, pa.float64())


def _not_shown(value: object) -> str:
    """A cell described, not quoted: a data file's content stays out of messages and logs."""
    return f"text that is not a number ({len(str(value))} characters, not shown)"
