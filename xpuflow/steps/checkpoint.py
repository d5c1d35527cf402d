"""Preemption-safe checkpoints: atomic, verified on load, with fallback to the previous one.

Local directory: ``ckpt-<step>.pt`` written under a temporary name and renamed.
Object storage (any fsspec URL): written locally, uploaded, then marked complete
with ``ckpt-<step>.pt.complete``; a checkpoint without its marker is ignored, so a
half-uploaded file is never taken as the newest. Loading uses
``torch.load(weights_only=True)``; a truncated or corrupt newest checkpoint is
skipped with a warning and the previous one is used.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .io import atomic_file, is_url

__all__ = ["Checkpointer", "rng_state", "restore_rng"]

log = logging.getLogger("xpuflow.checkpoint")
_NAME = re.compile(r"^ckpt-(\d{8,})\.pt$")


class Checkpointer:
    def __init__(self, directory: str | os.PathLike[str], keep: int = 3) -> None:
        self.directory = os.fspath(directory)
        self.keep = max(2, keep)  # at least one fallback
        self.remote = is_url(self.directory) and not self.directory.startswith("file://")
        if self.remote:
            import fsspec

            self.fs, self.root = fsspec.core.url_to_fs(self.directory)
            self.fs.makedirs(self.root, exist_ok=True)
        else:
            self.root = self.directory.removeprefix("file://")
            Path(self.root).mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------------- write
    def save(self, step: int, state: dict[str, Any]) -> float:
        """Write checkpoint ``step``; returns the seconds it took."""
        import torch

        start = time.perf_counter()
        name = f"ckpt-{step:08d}.pt"
        if self.remote:
            with tempfile.TemporaryDirectory() as tmp:
                local = os.path.join(tmp, name)
                with open(local, "wb") as handle:
                    torch.save(state, handle)
                self.fs.put_file(local, f"{self.root}/{name}")
            self.fs.pipe_file(f"{self.root}/{name}.complete", b"")  # last: marks the upload complete
        else:
            with atomic_file(os.path.join(self.root, name)) as handle:
                torch.save(state, handle)
        self._prune()
        return time.perf_counter() - start

    def _prune(self) -> None:
        for step in self.steps()[self.keep:]:
            name = f"ckpt-{step:08d}.pt"
            if self.remote:
                self.fs.rm_file(f"{self.root}/{name}.complete")
                self.fs.rm_file(f"{self.root}/{name}")
            else:
                Path(self.root, name).unlink(missing_ok=True)

    # ------------------------------------------------------------------ read
    def steps(self) -> list[int]:
        """Complete checkpoints, newest first."""
        if self.remote:
            names = {p.rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)}
            found = [n for n in names if _NAME.match(n) and f"{n}.complete" in names]
        else:
            found = [n for n in os.listdir(self.root) if _NAME.match(n)]
        return sorted((int(_NAME.match(n).group(1)) for n in found), reverse=True)  # type: ignore[union-attr]

    def latest(self, map_location: Any = "cpu") -> tuple[int, dict[str, Any]] | None:
        """The newest checkpoint that loads; older ones are tried when the newest is damaged."""
        import torch

        for step in self.steps():
            name = f"ckpt-{step:08d}.pt"
            try:
                if self.remote:
                    with tempfile.TemporaryDirectory() as tmp:
                        local = os.path.join(tmp, name)
                        self.fs.get_file(f"{self.root}/{name}", local)
                        state = torch.load(local, map_location=map_location, weights_only=True)
                else:
                    state = torch.load(os.path.join(self.root, name), map_location=map_location, weights_only=True)
            except Exception as e:  # truncated zip, bad pickle, short read
                log.warning("checkpoint %s is damaged (%s: %s); falling back to the previous one",
                            name, type(e).__name__, str(e)[:200])
                continue
            if not isinstance(state, dict) or state.get("step") != step:
                log.warning("checkpoint %s does not hold step %d; falling back", name, step)
                continue
            return step, state
        return None


def rng_state() -> dict[str, Any]:
    """Every RNG the loop touches, in a form ``torch.load(weights_only=True)`` accepts."""
    import random

    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if "torch_xla" in sys.modules:  # the TPU step: XLA keeps its own RNG (an integer seed)
        import torch_xla.core.xla_model as xm

        state["xla"] = int(xm.get_rng_state())
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "xla" in state and "torch_xla" in sys.modules:
        import torch_xla.core.xla_model as xm

        xm.set_rng_state(state["xla"])
