"""Publish a step's output directory only when it is complete: stage beside it, switch last.

Every step writes its output through :func:`publish`::

    with publish(output) as staging:        # a fresh directory beside ``output``
        ...write every file into staging, check it...
    # here ``output`` is the new directory, whole; on an exception it is the old one, untouched

Rules (docs/steps/outputs.md):

- The staging directory ``.<name>.xpuflow-staging-<random>`` lives in the output's parent, so the
  switch is a rename on one file system. Nothing is written into ``output`` itself.
- On success: staging is renamed to ``.<name>.xpuflow-ready-<id>`` (the commit point: the new
  output is complete), the old output to ``.<name>.xpuflow-old-<id>``, the ready one to ``output``,
  and the old one is removed. A run killed between those renames leaves ``output`` missing with a
  ready or an old directory beside it: the next run, and any reader (:func:`recover`), moves the
  ready one in (else the old one back), so a reader sees the previous output or the new one, never
  a mix and never nothing.
- On an exception (a refusal, a failed gate, Ctrl-C) the staging directory is removed and the old
  output is byte-identical. A run killed with SIGKILL leaves its staging directory; the next run
  into the same output removes it (``resume=True`` keeps one fixed staging directory instead, for a
  step that resumes from what a killed run wrote and checks it, like ``embed``).
- A lock file ``.<name>.xpuflow-lock`` (flock, released by the kernel when a process dies) stops
  two runs from writing the same output at once; the second is refused in one line.
- An existing output is replaced only when it is empty or an earlier output of the step (it holds
  one of the step's marker files, ``markers``): ``--output $HOME`` is refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from .io import StepError, local_path

__all__ = ["publish", "recover", "leftovers"]

_STAGING, _READY, _OLD, _LOCK, _PARTIAL = "xpuflow-staging-", "xpuflow-ready-", "xpuflow-old-", "xpuflow-lock", \
    "xpuflow-partial"


def _name(output: Path, kind: str) -> str:
    return f".{output.name}.{kind}"


def leftovers(output: str | os.PathLike[str]) -> list[Path]:
    """Staging, ready, old and partial directories a killed run left beside ``output`` (sorted)."""
    out = Path(output)
    if not out.parent.is_dir():
        return []
    prefixes = tuple(_name(out, k) for k in (_STAGING, _READY, _OLD, _PARTIAL))
    return sorted(p for p in out.parent.iterdir() if p.name.startswith(prefixes))


def _resolve(output: str | os.PathLike[str]) -> Path:
    out = local_path(output)
    return Path(os.path.realpath(out)) if out.is_symlink() else Path(os.path.abspath(out))


@contextlib.contextmanager
def publish(output: str | os.PathLike[str], *, markers: Iterable[str], who: str = "step",
            resume: bool = False) -> Iterator[Path]:
    """Yield a fresh staging directory; on success it replaces ``output`` whole (see the module doc).

    ``markers``: the file names a finished output of this step holds (``chunks.json``); an existing non-empty
    ``output`` is replaced only if it holds one. ``resume``: keep one staging directory across killed runs
    (``.<name>.xpuflow-partial``) for a writer that checks and reuses its content.
    """
    out = _resolve(output)
    _check_replaceable(out, who, tuple(markers))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StepError(f"{who}: output={os.fspath(output)!r}: cannot create its parent directory "
                        f"({e.strerror}). Fix: pass a writable path.") from None
    with _locked(out, who, os.fspath(output)):
        _recover_locked(out)
        partial = out.parent / _name(out, _PARTIAL)
        for path in leftovers(out):
            if not (resume and path == partial):
                shutil.rmtree(path, ignore_errors=True)
        if resume:
            partial.mkdir(exist_ok=True)
            staging = partial
        else:
            staging = Path(tempfile.mkdtemp(prefix=_name(out, _STAGING), dir=out.parent))
        os.chmod(staging, 0o755)  # mkdtemp makes 0700; steps running under another UID read outputs
        try:
            yield staging
            _switch(staging, out)
        except BaseException:
            if not resume:
                shutil.rmtree(staging, ignore_errors=True)
            raise


def recover(output: str | os.PathLike[str]) -> None:
    """For readers: if a run was killed between the switch's renames, move the new (else the old) output in."""
    out = _resolve(output)
    if out.exists() or not any(p.name.startswith((_name(out, _READY), _name(out, _OLD))) for p in leftovers(out)):
        return
    try:
        with _locked(out, "reader", os.fspath(output)):
            _recover_locked(out)
    except StepError:  # a writer holds the lock: it is switching right now; give it a moment
        for _ in range(50):
            if out.exists():
                return
            time.sleep(0.02)


def _recover_locked(out: Path) -> None:
    if out.exists():
        return
    found = leftovers(out)
    for kind in (_READY, _OLD):  # a complete new output first, else the previous one
        candidates = [p for p in found if p.name.startswith(_name(out, kind))]
        if candidates:
            os.rename(max(candidates, key=lambda p: p.stat().st_mtime), out)
            _fsync(out.parent)
            return


def _switch(staging: Path, out: Path) -> None:
    tag = uuid.uuid4().hex[:12]
    ready, old = out.parent / (_name(out, _READY) + tag), out.parent / (_name(out, _OLD) + tag)
    _fsync_tree(staging)
    os.rename(staging, ready)  # the commit point: from here on the new output is the one to keep
    _fsync(out.parent)
    had_old = out.exists()
    if had_old:
        os.rename(out, old)
    os.rename(ready, out)
    _fsync(out.parent)
    if had_old:
        shutil.rmtree(old, ignore_errors=True)


def _check_replaceable(out: Path, who: str, markers: tuple[str, ...]) -> None:
    shown = os.fspath(out)
    if out.exists() and not out.is_dir():
        raise StepError(f"{who}: output={shown!r} is a file, not a directory. Fix: pass a directory path.")
    if not out.is_dir():
        return
    if os.path.ismount(out):
        raise StepError(f"{who}: output={shown!r} is a mount point, which cannot be replaced whole. Fix: write to a "
                        "sub-directory of the volume.")
    names = {p.name for p in out.iterdir()}
    if names and not names & set(markers):
        raise StepError(f"{who}: output={shown!r} is a directory that is not an earlier {who} output (it holds "
                        f"{len(names)} entries but no {' or '.join(sorted(markers)) or 'marker'}); a step replaces its "
                        "output whole, so it is refused. Fix: pass a new or empty directory.")


@contextlib.contextmanager
def _locked(out: Path, who: str, shown: str) -> Iterator[None]:
    import fcntl

    path = out.parent / _name(out, _LOCK)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StepError(f"{who}: output={shown!r}: cannot write beside it ({e.strerror}). Fix: pass a path in a "
                            "writable directory.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StepError(f"{who}: output={shown!r} is being written by another run right now. Fix: wait for "
                                "it to finish, or write to another output.") from None
            raise
        held, now = os.fstat(fd), _stat(path)
        if now is not None and (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
            break
        os.close(fd)  # the file was removed by the run that held it before us: lock the new one
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root``, so the switch never publishes unwritten data."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync(Path(folder))
