"""``chunk`` (CPU): cut documents into overlapping chunks with stable ids and source offsets.

Input: ``builtin:docs`` (the shipped corpus), a local file or directory, or an fsspec URL
(file or directory): ``.txt`` and ``.md``/``.markdown`` files are one document each (doc id =
the path relative to the input directory, or the file name for a single file); ``.jsonl``/
``.ndjson`` files hold one document per line (doc id and text from ``id_field``/``text_field``).
In a directory, hidden files are ignored and files of other types are listed in ``chunks.json``
(``skipped``) with a WARNING.

Chunking: ``unit="words"`` counts words (runs of non-whitespace); a chunk is ``size`` words and the
next one starts ``size - overlap`` words later. ``unit="chars"`` counts characters (Unicode code
points) the same way, then trims whitespace at the window's edges (whitespace-only windows are
dropped). ``start``/``end`` are character offsets into the document's text (the decoded file after
a UTF-8 BOM, or the JSONL text field): ``text == document[start:end]``. Chunk ids are
``<doc id>#<n>`` (n from 0 in each document), the same on every run with the same settings.

Refused, with the file and line: an empty file (or a blank text field), bytes that are not UTF-8,
a JSONL line that is not a JSON object or lacks the id/text field, a duplicate doc id.
Outputs: ``chunks.parquet`` (chunk_id, doc_id, n, start, end, text, source) and ``chunks.json``, published
whole (:mod:`xpuflow.steps.publish`): a refused or failed rerun leaves the previous output as it was.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...errors import did_you_mean, invalid
from ..io import StepError, is_url, local_path, write_json
from ..publish import publish
from . import BUILTIN_DOCS, corpus_dir
from ...compute import Compute
from ...dsl.step import step

__all__ = ["chunk", "split_text", "TEXT_TYPES", "JSONL_TYPES"]

log = logging.getLogger("xpuflow.chunk")
TEXT_TYPES = (".txt", ".md", ".markdown")
JSONL_TYPES = (".jsonl", ".ndjson")
UNITS = ("words", "chars")
MARKER = "chunks.json"
_WORD = re.compile(r"\S+")
_BATCH = 4096  # chunks per Parquet batch


def split_text(text: str, unit: str, size: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) character offsets of each chunk of ``text``."""
    stride = size - overlap
    spans: list[tuple[int, int]] = []
    if unit == "words":
        words = [m.span() for m in _WORD.finditer(text)]
        for i in range(0, len(words), stride):
            window = words[i:i + size]
            spans.append((window[0][0], window[-1][1]))
            if i + size >= len(words):
                break
        return spans
    for i in range(0, len(text), stride):
        start, end = i, min(i + size, len(text))
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
        if i + size >= len(text):
            break
    return spans


def _check_options(unit: str, size: int, overlap: int, id_field: str, text_field: str) -> None:
    where = "chunk"
    if unit not in UNITS:
        raise StepError(invalid("unit", unit, "words or chars", where=where, choices=UNITS))
    if not isinstance(size, int) or size < 1:
        raise StepError(invalid("size", size, f"a positive number of {unit}", where=where, fix="e.g. 100 words"))
    if not isinstance(overlap, int) or not 0 <= overlap < size:
        raise StepError(invalid("overlap", overlap, f"0 <= overlap < size ({size})", where=where,
                                fix="the overlap must leave each chunk something new"))
    for name, value in (("id_field", id_field), ("text_field", text_field)):
        if not value:
            raise StepError(invalid(name, value, "a JSON field name", where=where))


def _decode(data: bytes, source: str, line_base: int = 0) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = line_base + data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise StepError(f"{source} line {line}, column {column}: byte 0x{data[e.start]:02x} is not UTF-8 "
                        f"({e.reason}). Fix: convert the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8`).") from None
    return text.removeprefix("\ufeff")


def _files(input: str) -> tuple[list[tuple[str, str, Any]], list[str]]:
    """[(source, doc id base, opener)] of the supported files under ``input``, and the skipped files."""
    import fsspec

    if input == BUILTIN_DOCS:
        fs, root, shown = fsspec.filesystem("file"), str(corpus_dir()), BUILTIN_DOCS
    elif is_url(input):
        try:
            fs, root = fsspec.core.url_to_fs(input)
        except (ImportError, ValueError) as e:
            raise StepError(f"chunk: input={input!r}: cannot open it: {e}. Fix: check the URL (s3 needs s3fs, gs "
                            "needs gcsfs installed).") from e
        shown = input.rstrip("/")
    else:
        fs, root, shown = fsspec.filesystem("file"), os.path.abspath(local_path(input)), input.rstrip("/") or input
    try:
        is_dir = fs.isdir(root)
        if not is_dir and not fs.exists(root):
            raise FileNotFoundError(root)
        paths = sorted(fs.find(root)) if is_dir else [root]
    except OSError as e:
        raise StepError(f"chunk: input={input!r}: cannot read it ({e}). Fix: check the path or URL.") from e
    root = root.rstrip("/")
    found, skipped = [], []
    for path in paths:
        rel = path[len(root) + 1:] if is_dir else path.rsplit("/", 1)[-1]
        source = f"{shown}/{rel}" if is_dir else shown
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        if rel.lower().endswith(TEXT_TYPES + JSONL_TYPES):
            found.append((source, rel, lambda p=path: fs.open(p, "rb")))
        elif is_dir:
            skipped.append(source)
        else:
            raise StepError(invalid("input", input, f"a {', '.join(TEXT_TYPES + JSONL_TYPES)} file or a directory "
                                    f"of them, or {BUILTIN_DOCS}", where="chunk", fix="rename or convert the file"))
    if skipped:
        log.warning("chunk: skipped %d file(s) of other types: %s", len(skipped), ", ".join(skipped[:10]))
    if not found:
        raise StepError(f"chunk: input={input!r} holds no {', '.join(TEXT_TYPES + JSONL_TYPES)} file. "
                        "Fix: point it at the documents.")
    return found, skipped


def _documents(source: str, rel: str, opener: Any, id_field: str, text_field: str) -> Iterator[tuple[str, str, int]]:
    """(doc id, text, line) of each document in one file."""
    with opener() as handle:
        if not rel.lower().endswith(JSONL_TYPES):
            text = _decode(handle.read(), source)
            if not text.strip():
                raise StepError(f"{source} line 1: empty file: no text. Fix: remove the file or add its text.")
            yield rel, text, 1
            return
        seen_text = False
        for number, raw in enumerate(handle, start=1):
            line = _decode(raw, source, number - 1)
            if not line.strip():
                continue
            seen_text = True
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise StepError(f"{source} line {number}: not JSON ({e.msg} at column {e.colno}). Fix: one JSON "
                                "object per line.") from None
            if not isinstance(record, dict):
                raise StepError(f"{source} line {number}: a JSON {type(record).__name__}, not an object. Fix: one "
                                f"JSON object per line with {id_field!r} and {text_field!r}.")
            for field in (id_field, text_field):
                if field not in record:
                    raise StepError(f"{source} line {number}: no field {field!r} (fields: {', '.join(record)})."
                                    f"{did_you_mean(field, record)} Fix: pass --{'id' if field == id_field else 'text'}"
                                    "-field with the right name.")
            doc_id, text = record[id_field], record[text_field]
            if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or str(doc_id) == "":
                raise StepError(f"{source} line {number}: {id_field}={doc_id!r} is not a document id (a non-empty "
                                "string or an integer).")
            if not isinstance(text, str) or not text.strip():
                raise StepError(f"{source} line {number}: field {text_field!r} is "
                                f"{'empty' if isinstance(text, str) else 'not a string'}. Fix: drop the record or "
                                "give it text.")
            yield str(doc_id), text, number
        if not seen_text:
            raise StepError(f"{source} line 1: empty file: no JSON lines. Fix: remove the file or add records.")


# reading and cutting text is CPU work
@step(compute=Compute.cpu(cpu="1", memory="2Gi"), outputs=("output",))
def chunk(
    input: str = BUILTIN_DOCS,
    output: str = "out/chunks",
    unit: str = "words",
    size: int = 100,
    overlap: int = 20,
    id_field: str = "id",
    text_field: str = "text",
) -> dict[str, Any]:
    """Cut the documents of ``input`` into chunks; returns the summary written to ``output/chunks.json``."""
    _check_options(unit, size, overlap, id_field, text_field)
    files, skipped = _files(input)  # a bad input is refused before the previous output is touched
    with publish(output, who="chunk", markers=(MARKER,)) as staging:
        documents, total, per_file = _write(staging / "chunks.parquet", files, unit, size, overlap, id_field,
                                            text_field)
        summary = {
            "input": input,
            "unit": unit,
            "size": size,
            "overlap": overlap,
            "id_field": id_field,
            "text_field": text_field,
            "documents": documents,
            "chunks": total,
            "chunks_per_file": per_file,
            "skipped": skipped,
            "offsets": "character offsets (Unicode code points) into the document text: text == document[start:end]",
            "chunk_id": "<doc id>#<n>",
            "files": {"chunks": "chunks.parquet"},
        }
        write_json(staging / MARKER, summary)
    log.info("chunk: %d documents -> %d chunks (%d %s, overlap %d) in %s", documents, total, size, unit, overlap,
             output)
    return summary


def _write(path: Path, files: list[tuple[str, str, Any]], unit: str, size: int, overlap: int, id_field: str,
           text_field: str) -> tuple[int, int, dict[str, int]]:
    """Write the chunk table of ``files`` to ``path``: (documents, chunks, chunks per file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("chunk_id", pa.string()), ("doc_id", pa.string()), ("n", pa.int32()), ("start", pa.int64()),
                        ("end", pa.int64()), ("text", pa.string()), ("source", pa.string())])
    rows: dict[str, list[Any]] = {name: [] for name in schema.names}
    docs: dict[str, str] = {}
    total = 0
    per_file: dict[str, int] = {}
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for source, rel, opener in files:
            for doc_id, text, line in _documents(source, rel, opener, id_field, text_field):
                where = f"{source} line {line}"
                if doc_id in docs:
                    raise StepError(f"{where}: duplicate document id {doc_id!r} (first seen in {docs[doc_id]}). Fix: "
                                    "give every document a unique id.")
                docs[doc_id] = where
                for n, (start, end) in enumerate(split_text(text, unit, size, overlap)):
                    for key, value in zip(schema.names, (f"{doc_id}#{n}", doc_id, n, start, end, text[start:end],
                                                         source)):
                        rows[key].append(value)
                    per_file[source] = per_file.get(source, 0) + 1
                if len(rows["chunk_id"]) >= _BATCH:
                    total += len(rows["chunk_id"])
                    writer.write_table(pa.table(rows, schema=schema))
                    rows = {name: [] for name in schema.names}
        total += len(rows["chunk_id"])
        writer.write_table(pa.table(rows, schema=schema))
    return len(docs), total, per_file


def read_chunks(folder: str | os.PathLike[str], who: str, columns: list[str] | None = None) -> tuple[Any, dict]:
    """The chunk table of a finished ``chunk`` output, and its summary."""
    import pyarrow.parquet as pq

    from ..io import read_finished

    summary = read_finished(folder, MARKER, who=who, option="data", producer="chunk")
    return pq.read_table(os.path.join(folder, summary["files"]["chunks"]), columns=columns), summary
