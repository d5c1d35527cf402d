"""A step run as N shards (``--shard I/N``) that write one output, published only when all N parts are in.

    xpuflow step embed --data out/chunks --output out/emb --shard 0/3    # three processes, pods or tasks,
    xpuflow step embed --data out/chunks --output out/emb --shard 1/3    # in any order, at once or not
    xpuflow step embed --data out/chunks --output out/emb --shard 2/3

``--shard N`` (the count alone) takes the index from ``JOB_COMPLETION_INDEX``, which Kubernetes sets in
each pod of an Indexed Job; with ``--shard I/N`` the variable, when set, must agree.

Each shard writes its part beside the output, in ``.<output>.xpuflow-shards/part-<I>-of-<N>``: first
into ``.part-<I>-of-<N>.partial`` (kept across a kill, so a resumable step reuses what it checked), then
renamed whole, with ``part.json`` (index, count, the run's ``key``, the step's own summary of the part).
The shard that completes the set (under one lock, so exactly one) merges the N parts into the output
through :func:`xpuflow.steps.publish.publish` and removes the parts: the output is the previous one, or
the new one whole, never a partial set. Parts whose key differs (another input or other parameters) or
whose count differs are not counted. A reader of an output that has parts but no finished output is
refused in one line naming the missing shards (:func:`incomplete`, called by ``read_finished``).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import invalid
from .io import StepError, local_path, write_json

__all__ = ["Shard", "parse", "run_key", "part", "finish_part", "assemble", "join", "link_or_copy", "incomplete", "lacking", "is_part",
           "parts_dir", "ENV"]

log = logging.getLogger("xpuflow.shards")
ENV = "JOB_COMPLETION_INDEX"
MAX_SHARDS = 10_000
PART_META = "part.json"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    index: int
    count: int

    def owns(self, unit: int) -> bool:
        """Whether work unit ``unit`` (a piece of rows, in input order) is this shard's: round robin."""
        return unit % self.count == self.index

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}-of-{self.count:05d}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse(spec: str, who: str) -> Shard | None:
    """``"I/N"`` or ``"N"`` (index from ``JOB_COMPLETION_INDEX``) -> Shard; ``""`` -> None (one process)."""
    if spec in ("", None):
        return None
    allowed = (f"I/N with 0 <= I < N <= {MAX_SHARDS} (e.g. 0/3), or N alone in an Indexed Job pod, which "
               f"reads I from {ENV}")
    text = str(spec).strip()
    index_text, slash, count_text = text.rpartition("/")
    if not slash:
        index_text, count_text = "", text
    if not (count_text.isascii() and count_text.isdigit() and (not index_text or
                                                               (index_text.isascii() and index_text.isdigit()))):
        raise StepError(invalid("shard", spec, allowed, where=who))
    count, env = int(count_text), os.environ.get(ENV)
    if env is not None and not (env.isascii() and env.isdigit()):
        raise StepError(invalid(ENV, env, "a whole number (set by Kubernetes in an Indexed Job)", where=who))
    if not index_text and env is None:
        raise StepError(f"{who}: shard={spec!r} gives the count but no index, and {ENV} is not set. Fix: pass "
                        f"--shard I/{count} (I from 0 to {count - 1}), or run it as an Indexed Job.")
    index = int(index_text) if index_text else int(env)  # type: ignore[arg-type]
    if index_text and env is not None and int(env) != index:
        raise StepError(f"{who}: shard={spec!r} but {ENV}={env}: two different indexes. Fix: pass --shard "
                        f"{count} (the count alone) in an Indexed Job, or unset {ENV}.")
    if not 1 <= count <= MAX_SHARDS or not 0 <= index < count:
        raise StepError(invalid("shard", f"{index}/{count}", allowed, where=who))
    return Shard(index, count)


# local copy -> "URL#version" of the inputs :func:`xpuflow.steps.run` downloaded: each shard's copy is in its own
# temporary directory, so the key names the URL, which all shards share, and the version read (a new upstream output
# under the same URL is another run, never "already published")
DOWNLOADED: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("xpuflow_downloaded", default={})


def run_key(**what: Any) -> str:
    """What makes N parts one result: a hash of the step's inputs and parameters (JSON-able values)."""
    sources = DOWNLOADED.get()
    what = {k: sources.get(v, v) if isinstance(v, str) else v for k, v in what.items()}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


def parts_dir(output: str | os.PathLike[str]) -> Path:
    out = Path(os.path.abspath(local_path(output)))
    return out.parent / f".{out.name}.xpuflow-shards"


@contextlib.contextmanager
def _flock(path: Path, *, wait: bool, who: str, busy: str) -> Iterator[None]:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StepError(f"{who}: {busy}") from None
            raise
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def part(output: str | os.PathLike[str], shard: Shard, *, who: str, key: str) -> Iterator[Path]:
    """The directory this shard writes its part into (kept across a kill; the step checks what it reuses).

    On success the step's ``part.json`` summary (``meta`` written by :func:`finish_part`) is added and the
    part is renamed to ``part-I-of-N``, replacing an earlier one; on an exception nothing is committed."""
    parts = parts_dir(output)
    try:
        parts.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StepError(f"{who}: output={os.fspath(output)!r}: cannot create {parts.name} beside it "
                        f"({e.strerror}). Fix: pass a writable path.") from None
    staging = parts / f".{shard.name}.partial"
    busy = (f"shard {shard} of output={os.fspath(output)!r} is being written by another process right now. Fix: "
            "wait for it, or give each process its own index.")
    with _flock(parts / f".{shard.name}.lock", wait=False, who=who, busy=busy):
        old = _meta(staging)
        if old is not None and old.get("key") != key:  # a killed run of another input: start clean
            shutil.rmtree(staging)
        staging.mkdir(exist_ok=True)
        (staging / PART_META).unlink(missing_ok=True)
        yield staging
        if not (staging / PART_META).exists():
            raise StepError(f"{who}: shard {shard} wrote no {PART_META} (internal error).")
        final = parts / shard.name
        if final.exists():
            trash = parts / f".{shard.name}.old"
            shutil.rmtree(trash, ignore_errors=True)
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(staging, final)


def finish_part(folder: Path, shard: Shard, key: str, summary: dict[str, Any], *, who: str,
                markers: Iterable[str], merge: Callable[..., dict[str, Any]]) -> None:
    """Write a part's ``part.json`` (last, inside :func:`part`): its summary, and how the parts become the
    output (``merge``, a module-level function, by import path), so :func:`join` can publish them anywhere."""
    write_json(folder / PART_META, {"index": shard.index, "count": shard.count, "key": key, "summary": summary,
                                    "who": who, "markers": list(markers),
                                    "merge": f"{merge.__module__}:{merge.__qualname__}"})


def _meta(folder: Path) -> dict[str, Any] | None:
    """The ``part.json`` of a part folder (committed, or its ``.partial``), None when absent or not a part's."""
    try:
        meta = json.loads((folder / PART_META).read_text())
    except (OSError, ValueError):
        return None
    return meta if is_part(meta, folder.name.lstrip(".").removesuffix(".partial")) else None


def is_part(meta: Any, name: str) -> bool:
    """Whether ``meta`` is the part.json of the part folder ``name`` (anything else found there is not a part)."""
    if not isinstance(meta, dict) or not isinstance(meta.get("key"), str):
        return False
    index, count = meta.get("index"), meta.get("count")
    return (type(index) is int and type(count) is int and 0 <= index < count <= MAX_SHARDS
            and Shard(index, count).name == name)


def assemble(output: str | os.PathLike[str], shard: Shard, *, who: str, key: str, markers: Iterable[str],
             merge: Callable[[list[tuple[Path, dict[str, Any]]], Path], dict[str, Any]]) -> dict[str, Any] | None:
    """Publish ``output`` if all ``shard.count`` parts of ``key`` are in: ``merge(parts, staging)`` (parts in
    index order, each ``(folder, its summary)``) writes the output; returns its summary, or None while a part
    is missing (another shard will publish)."""
    from .publish import publish

    parts = parts_dir(output)
    lock = parts.parent / f"{parts.name}.lock"
    with _flock(lock, wait=True, who=who, busy=""):
        metas = [(folder, _meta(folder)) for folder in (parts / Shard(i, shard.count).name
                                                        for i in range(shard.count))]
        found = [(folder, m["summary"]) for folder, m in metas
                 if m is not None and m.get("key") == key and m.get("count") == shard.count]
        if len(found) < shard.count:
            log.info("%s: shard %s done; %d of %d parts in (the last shard publishes the output)", who, shard,
                     len(found), shard.count)
            return None
        with publish(output, who=who, markers=markers) as staging:
            summary = merge(found, staging)
        shutil.rmtree(parts, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock)
    log.info("%s: all %d shards in: %s published", who, shard.count, os.fspath(output))
    return summary


def join(outputs: Iterable[str | os.PathLike[str]], output: str | os.PathLike[str]) -> dict[str, Any]:
    """Publish ``output`` from the parts the shards wrote beside their own ``outputs`` (KFP: each iteration
    of a ``ParallelFor`` has its own output artifact); refused in one line unless all N parts of one run are
    there."""
    from .io import StepError

    found: dict[int, tuple[Path, dict[str, Any]]] = {}
    for each in outputs:
        for folder in sorted(parts_dir(each).glob("part-*-of-*")):
            meta = _meta(folder)
            if meta is not None:
                found[meta["index"]] = (folder, meta)
    outputs = list(outputs)
    if not found and len(outputs) == 1 and Path(outputs[0]).is_dir() and any(Path(outputs[0]).iterdir()):
        return _copy_published(Path(outputs[0]), output)  # one shard (0/1): it published its own output
    if not found:
        raise StepError(f"join: no shard wrote a part ({len(outputs)} outputs given). Fix: run the shards "
                        "first (--shard I/N).")
    first = next(iter(found.values()))[1]
    count, key = first["count"], first["key"]
    have = sorted(i for i, (_, m) in found.items() if m["key"] == key and m["count"] == count)
    if have != list(range(count)):
        missing = [f"{i}/{count}" for i in range(count) if i not in have]
        raise StepError(f"join: only {len(have)} of {count} shards wrote their part (missing {', '.join(missing)}), "
                        "so the output is not published. Fix: rerun the missing shard(s).")
    dest = parts_dir(output)
    dest.mkdir(parents=True, exist_ok=True)
    for i in have:
        folder = found[i][0]
        target = dest / folder.name
        if folder != target:
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(folder, target, copy_function=link_or_copy)
    module, _, name = first["merge"].partition(":")
    import importlib

    merge = getattr(importlib.import_module(module), name)
    summary = assemble(output, Shard(0, count), who=first["who"], key=key, markers=first["markers"], merge=merge)
    assert summary is not None  # every part is in
    return summary


def _copy_published(source: Path, output: str | os.PathLike[str]) -> dict[str, Any]:
    from .publish import publish

    names = [p.name for p in source.iterdir() if p.suffix == ".json"]
    with publish(output, who="join", markers=names) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True, copy_function=link_or_copy)
    return {"published": True, "shards": 1}


def link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """A hard link (parts and outputs are never written in place), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def incomplete(folder: str | os.PathLike[str]) -> str | None:
    """For a reader of ``folder`` (no finished output): what its shard parts lack, in one phrase, or None."""
    try:
        parts = parts_dir(folder)
    except StepError:
        return None
    if not parts.is_dir():
        return None
    metas = [m for p in parts.glob("part-*-of-*") if (m := _meta(p)) is not None]
    if not metas:
        return None
    newest = max(parts.glob("part-*-of-*"), key=lambda p: p.stat().st_mtime)
    latest = _meta(newest) or metas[0]
    count, key = latest["count"], latest["key"]
    return lacking({m["index"] for m in metas if m["key"] == key and m["count"] == count}, count)


def lacking(have: Iterable[int], count: int) -> str:
    """What a reader of an unpublished output is told, given the indexes of one run's parts that are in."""
    missing = [i for i in range(count) if i not in set(have)]
    if not missing:  # the last shard is merging them, or was killed before it published
        return (f"all {count} shards are written but the output is not published yet (the last shard is merging "
                "them, or was stopped before it published). Fix: wait for it; if no shard is running, rerun any one "
                "shard: it publishes the output.")
    shown = ", ".join(f"{i}/{count}" for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
    return (f"only {count - len(missing)} of {count} shards are written (missing {shown}), so it is not published. "
            f"Fix: run the missing shard(s) (--shard {missing[0]}/{count}, or rerun that index of the Indexed Job); "
            f"the output is published when all {count} are in.")
