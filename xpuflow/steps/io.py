"""File and URL helpers shared by the steps: fsspec for URLs, atomic writes everywhere.

Single files are written under a temporary name in the destination directory and
renamed into place (POSIX rename is atomic). A step's whole output directory is
published by :mod:`.publish` (staged beside it, switched last), and uploaded to an
object store by :mod:`.store` (a new version, switched by a pointer written last).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "is_url",
    "local_path",
    "atomic_file",
    "atomic_path",
    "write_json",
    "read_finished",
    "open_binary",
    "StepError",
]

from ..errors import XpuflowError


class StepError(XpuflowError, ValueError):
    """A step refused its input, or cannot run where it is."""


def is_url(target: str | os.PathLike[str]) -> bool:
    return "://" in os.fspath(target)


def local_path(target: str | os.PathLike[str]) -> Path:
    """A local path for ``target``; ``file://`` URLs count as local."""
    text = os.fspath(target)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    if is_url(text):
        raise StepError(f"{text!r} is a URL; this output must be a local path (KFP and Airflow mount artifacts locally).")
    return Path(text)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[Any]:
    """Write ``path`` via a temporary file in the same directory, then rename; removed on error."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; other steps (same pod UID or not) read outputs
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that wants a file name; renamed on success."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_finished(folder: str | os.PathLike[str], marker: str, *, who: str, option: str, producer: str) -> Any:
    """The JSON ``marker`` a step writes last in its output folder; refused when absent (an unfinished output)."""
    from .publish import recover

    recover(folder)  # a writer killed between the renames of its switch: move the new (else old) output in
    path = Path(folder) / marker
    if not path.exists():
        from .shards import incomplete

        lacking = incomplete(folder)  # a sharded output with parts missing: say which
        if lacking:
            raise StepError(f"{who}: {option}={os.fspath(folder)!r}: {lacking}")
        raise StepError(f"{who}: {option}={os.fspath(folder)!r} has no {marker}, so it is not a finished {producer} "
                        f"output. Fix: run the {producer} step first (it writes {marker} last).")
    return json.loads(path.read_text())


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    with atomic_file(path, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")


def open_binary(target: str | os.PathLike[str]) -> Any:
    """Open a local path or an fsspec URL (s3://, gs://, file://, memory://) for reading bytes."""
    text = os.fspath(target)
    if not is_url(text):
        try:
            return open(text, "rb")
        except OSError as e:
            raise StepError(f"input={text!r}: cannot open it: {e.strerror}. Fix: check the path.") from e
    import fsspec

    try:
        return fsspec.open(text, "rb").open()
    except (OSError, ValueError, ImportError) as e:
        raise StepError(f"input={text!r}: cannot open it: {e}. Fix: check the URL and the credentials "
                        "(s3 needs s3fs, gs needs gcsfs installed).") from e
