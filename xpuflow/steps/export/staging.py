"""The export directory is published whole (:mod:`xpuflow.steps.publish`), with ``export.json`` in it.

Everything is written into a staging directory beside the output (same file system). Only
when every gate has passed are the intermediate files (``model.pre.onnx``) removed and
``export.json`` written into it; then the staging directory replaces the output in one
switch. A failed gate, a refused input or an exception removes the staging directory and
leaves a previous export in the output byte-identical; a killed export's staging directory
is removed by the next run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

from ..io import write_json
from ..publish import publish

__all__ = ["Staging", "MARKER"]

MARKER = "export.json"


class Staging:
    def __init__(self, output: Path) -> None:
        self.output = output
        self.dir: Path | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Staging:
        self.dir = self._stack.enter_context(publish(self.output, who="export", markers=(MARKER,)))
        return self

    def path(self, name: str) -> Path:
        assert self.dir is not None
        return self.dir / name

    def commit(self, files: list[str], report: dict[str, Any]) -> None:
        """Keep only ``files`` in the staging directory and write the marker; published when the block ends."""
        assert self.dir is not None
        for path in self.dir.iterdir():
            if path.name not in files:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        for name in files:
            os.chmod(self.dir / name, 0o644)
        write_json(self.dir / MARKER, report)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.dir = None
        self._stack.__exit__(kind, exc, tb)
