"""The export directory is complete or has no ``export.json``.

Everything is written into a temporary directory beside the output (same file
system, so moves are renames). Only when every gate has passed are the files
moved in, each by an atomic rename, and ``export.json`` is written last (itself
atomically): its presence marks a finished export. On any failure the temporary
directory is removed. A previous export in the output directory is invalidated
(its ``export.json`` removed first, then the files it lists) before the new one
starts, so a failed re-export never leaves the old marker next to new intent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from ..io import write_json

__all__ = ["Staging", "MARKER"]

log = logging.getLogger("xpuflow.export")
MARKER = "export.json"


class Staging:
    def __init__(self, output: Path) -> None:
        self.output = output
        self.dir: Path | None = None

    def __enter__(self) -> Staging:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self._invalidate_previous()
        self.dir = Path(tempfile.mkdtemp(prefix=f".{self.output.name}.partial-", dir=self.output.parent))
        return self

    def path(self, name: str) -> Path:
        assert self.dir is not None
        return self.dir / name

    def commit(self, files: list[str], report: dict[str, Any]) -> None:
        """Move ``files`` from the staging directory into the output, then write the marker."""
        assert self.dir is not None
        self.output.mkdir(parents=True, exist_ok=True)
        for name in files:
            os.chmod(self.dir / name, 0o644)
            os.replace(self.dir / name, self.output / name)
        _fsync_dir(self.output)
        write_json(self.output / MARKER, report)  # last: a finished export from here on
        _fsync_dir(self.output)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def _invalidate_previous(self) -> None:
        marker = self.output / MARKER
        if not marker.exists():
            return
        try:
            listed = list(json.loads(marker.read_text()).get("files", {}))
        except (OSError, ValueError, AttributeError):
            listed = []
        marker.unlink()
        for name in listed:
            if Path(name).name == name:  # only plain names inside the output directory
                with contextlib.suppress(FileNotFoundError):
                    (self.output / name).unlink()
        log.info("export: removed the previous export in %s before re-exporting", self.output)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
