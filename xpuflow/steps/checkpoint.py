"""Preemption-safe checkpoints that know their run: atomic, checksummed, verified on load.

File ``ckpt-<step>.pt``: a magic line, a one-line JSON header (step, the run's
identity, SHA-256, payload size), then the payload: the state as one JSON line and
its tensors' bytes after it (:mod:`~xpuflow.steps.checkpoint_flat`).
The checksum covers the step, the identity and the payload, so a flipped bit
anywhere is found; such a checkpoint is skipped with one WARNING line and the
previous one is used. A checkpoint is resumed only when its identity equals this
run's (data fingerprint, the options that change the result, the architecture,
the format version); otherwise ``on_mismatch`` decides: ``fresh`` (remove that
run's checkpoints and start at step 0, said in one line) or ``refuse`` (one-line
error, nothing touched).

Local directory: written under a temporary name, fsynced and renamed (the
directory fsynced too). Object storage (any fsspec URL): written locally,
uploaded, then marked complete with ``ckpt-<step>.pt.complete``; a checkpoint
without its marker is never taken. Leftovers of a killed writer (local ``.tmp``
files, remote files without a marker) are removed when the next run starts.
Payloads are parsed (JSON and raw tensor bytes), never unpickled. A checkpoint of
an earlier format (``xpuflow.checkpoint/2``: a ``torch.save`` payload) counts as
another run's: its identity names the other format.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .checkpoint_flat import Packed, pack, unpack
from .io import StepError, atomic_file, is_url

__all__ = ["Checkpointer", "local_root", "FORMAT", "ON_MISMATCH", "rng_state", "restore_rng"]

log = logging.getLogger("xpuflow.checkpoint")
FORMAT = "xpuflow.checkpoint/3"
MAGIC = b"XPUFLOW-CHECKPOINT\n"
ON_MISMATCH = ("fresh", "refuse")
_NAME = re.compile(r"^ckpt-(\d{8,})\.pt$")
_LEFTOVER = re.compile(r"^\.ckpt-\d{8,}\.pt\..*\.tmp$")


class Damaged(Exception):
    """A checkpoint that cannot be trusted (truncated, flipped bits, not a checkpoint)."""


class Unidentified(Exception):
    """A checkpoint of the first format: intact perhaps, but of no known run."""


def _digest(step: int, identity: dict[str, Any], *payload: Any) -> str:
    h = hashlib.sha256(json.dumps([step, identity], sort_keys=True).encode())
    for part in payload:
        h.update(part)  # hashlib releases the GIL on large buffers
    return h.hexdigest()


def encode(step: int, identity: dict[str, Any], state: dict[str, Any] | Packed) -> tuple[bytes, Packed]:
    """The header line and the payload (a :class:`Packed` state) of checkpoint ``step``."""
    packed = state if isinstance(state, Packed) else pack(state)
    header = {"format": FORMAT, "step": step, "identity": identity, "bytes": packed.nbytes,
              "sha256": _digest(step, identity, packed.line, packed.data)}
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n", packed


def decode_header(blob: bytes) -> tuple[dict[str, Any], memoryview]:
    """The header and the payload; :class:`Damaged` unless the checksum holds."""
    if blob[:4] == b"PK\x03\x04":
        raise Unidentified("written by an older xpuflow, without a run identity")
    if not blob.startswith(MAGIC):
        raise Damaged("not an xpuflow checkpoint")
    end = blob.find(b"\n", len(MAGIC))
    try:
        header = json.loads(blob[len(MAGIC):end])
        step, identity, size, digest = header["step"], header["identity"], header["bytes"], header["sha256"]
    except (ValueError, KeyError, TypeError) as e:
        raise Damaged("its header does not parse") from e
    payload = memoryview(blob)[end + 1:]
    if len(payload) != size:
        raise Damaged(f"{len(payload)} bytes of payload, {size} expected (truncated)")
    if _digest(step, identity, payload) != digest:
        raise Damaged("its checksum does not match its content")
    return header, payload


def differences(mine: dict[str, Any], theirs: Any) -> list[str]:
    """``field: <here> here, <there> there`` for every identity field that differs."""
    if not isinstance(theirs, dict):
        return ["no run identity"]
    differ = [f"{k}: {_short(mine.get(k))} here, {_short(theirs.get(k))} there"
              for k in [*mine, *(k for k in theirs if k not in mine)] if mine.get(k) != theirs.get(k)]
    return differ if len(differ) <= 4 else [*differ[:4], f"{len(differ) - 4} more"]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value: Any) -> Any:
    """A numpy scalar's plain value (``json`` knows float subclasses, not numpy.int64)."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    raise TypeError(f"a {type(value).__name__} is not a number or a string")


def local_root(directory: str) -> str | None:
    """The folder of a local checkpoint directory (a path or a ``file://`` URL); None for object storage."""
    if is_url(directory) and not directory.startswith("file://"):
        return None
    return directory.removeprefix("file://")


class Checkpointer:
    """The checkpoints of one run in ``directory`` (a local path or an fsspec URL)."""

    def __init__(self, directory: str | os.PathLike[str], identity: dict[str, Any] | None = None, keep: int = 3,
                 who: str = "train", writer: bool = True) -> None:
        self.directory = os.fspath(directory)
        try:  # plain JSON values, as a checkpoint's header holds them (a sweep's numpy lr is a float subclass)
            self.identity = json.loads(json.dumps({"format": FORMAT, **(identity or {})}, default=_number))
        except (TypeError, ValueError) as e:
            raise StepError(f"{who}: the run's options cannot be recorded in a checkpoint: {e}. Fix: pass "
                            "numbers and strings.") from None
        self.keep = max(2, keep)  # at least one fallback
        self.who = who
        local = local_root(self.directory)
        self.remote = local is None
        try:
            if local is None:
                import fsspec

                self.fs, self.root = fsspec.core.url_to_fs(self.directory)
                self.fs.makedirs(self.root, exist_ok=True)
            else:
                self.root = local
                Path(self.root).mkdir(parents=True, exist_ok=True)
                if writer:
                    fd, probe = tempfile.mkstemp(prefix=".probe-", dir=self.root)
                    os.close(fd)
                    os.unlink(probe)
        except OSError as e:
            raise StepError(f"{who}: checkpoint_dir={self.directory!r} is not writable: "
                            f"{e.strerror or type(e).__name__}. Fix: pass a writable --checkpoint-dir "
                            "(a local directory or an object-store URL).") from None
        if writer:
            self._clean_leftovers()

    def _path(self, step: int) -> str:
        return f"{self.root}/ckpt-{step:08d}.pt"

    # ----------------------------------------------------------------- write
    def save(self, step: int, state: dict[str, Any] | Packed) -> float:
        """Write checkpoint ``step`` durably (checksummed); returns the seconds it took.

        ``state``: a state dict, or one packed already (:class:`~xpuflow.steps.checkpoint_flat.Packer`).
        """
        start = time.perf_counter()
        header, packed = encode(step, self.identity, state)
        if self.remote:
            with tempfile.TemporaryDirectory() as tmp:
                local = os.path.join(tmp, "ckpt")
                with open(local, "wb") as handle:
                    handle.writelines((header, packed.line, packed.data))
                self.fs.put_file(local, self._path(step))
            self.fs.pipe_file(f"{self._path(step)}.complete", b"")  # last: marks the upload complete
        else:
            with atomic_file(self._path(step)) as handle:
                handle.writelines((header, packed.line, packed.data))
            _fsync_dir(self.root)
        self._prune()
        return time.perf_counter() - start

    def _remove(self, step: int) -> None:
        if self.remote:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(f"{self._path(step)}.complete")
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self._path(step))
        else:
            Path(self._path(step)).unlink(missing_ok=True)

    def _prune(self) -> None:
        for step in self.steps()[self.keep:]:
            self._remove(step)

    def _clean_leftovers(self) -> None:
        """What a killed writer left: local temporary files, remote uploads without their marker."""
        if self.remote:
            names = {p.rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)}
            for name in names:
                if _NAME.match(name) and f"{name}.complete" not in names:
                    self.fs.rm_file(f"{self.root}/{name}")
            return
        for name in os.listdir(self.root):
            if _LEFTOVER.match(name):
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

    def _read(self, step: int) -> bytes:
        if self.remote:
            return self.fs.cat_file(self._path(step))
        return Path(self._path(step)).read_bytes()

    def latest(self, map_location: Any = "cpu", on_mismatch: str = "refuse",
               remove: bool = True) -> tuple[int, dict[str, Any]] | None:
        """The newest intact checkpoint of this run, or None to start fresh.

        Damaged checkpoints are skipped for the previous one. When the newest intact one
        belongs to another run: ``refuse`` raises a one-line :class:`StepError`; ``fresh``
        says so in one WARNING line and (when ``remove``) removes the checkpoints found.
        """
        for step in self.steps():
            name = f"ckpt-{step:08d}.pt"
            try:
                header, payload = decode_header(self._read(step))
                if header["step"] != step:
                    raise Damaged(f"it holds step {header['step']}")
                differ = differences(self.identity, header["identity"])
                if not differ:
                    state = unpack(payload, map_location)
                    if not isinstance(state, dict) or state.get("step") != step:
                        raise Damaged(f"its state does not hold step {step}")
                    return step, state
            except Unidentified as e:
                differ = [str(e)]
            except Damaged as e:
                log.warning("%s: checkpoint %s is damaged (%s); falling back to the previous one", self.who, name, e)
                continue
            except Exception as e:  # a payload that does not parse despite its checksum (written by a bug)
                log.warning("%s: checkpoint %s is damaged (%s: %s); falling back to the previous one",
                            self.who, name, type(e).__name__, str(e)[:200])
                continue
            return self._mismatch(step, differ, on_mismatch, remove)
        return None

    def _mismatch(self, step: int, differ: list[str], on_mismatch: str, remove: bool) -> None:
        what = f"checkpoint step {step} in checkpoint_dir={self.directory!r} is of another run ({'; '.join(differ)})"
        if on_mismatch != "fresh":
            raise StepError(f"{self.who}: {what}. Fix: pass another --checkpoint-dir, remove those checkpoints, "
                            "or --on-mismatch fresh to start over (it removes them).")
        found = self.steps()
        log.warning("%s: %s; starting fresh at step 0 and removing its %d checkpoint(s) "
                    "(--on-mismatch refuse stops instead)", self.who, what, len(found))
        if remove:
            for old in found:
                self._remove(old)
        return None


def _fsync_dir(path: str) -> None:
    """Make a rename in ``path`` durable (a power cut after the rename keeps the new name)."""
    with contextlib.suppress(OSError):  # some filesystems refuse to open directories
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def rng_state() -> dict[str, Any]:
    """Every RNG the loop touches, in a form a checkpoint holds (tensors, numbers, tuples)."""
    import array
    import random

    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, words, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        # Mersenne Twister words as one tensor: 625 numbers would be most of a checkpoint's JSON line
        "python": {"version": version, "words": torch.frombuffer(array.array("Q", words), dtype=torch.int64),
                   "gauss": gauss},
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
    py = state["python"]
    random.setstate((py["version"], tuple(py["words"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "xla" in state and "torch_xla" in sys.modules:
        import torch_xla.core.xla_model as xm

        xm.set_rng_state(state["xla"])
