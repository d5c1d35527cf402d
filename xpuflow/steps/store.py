"""Step outputs on object stores: each upload is a new version under the URL, switched by one pointer written last.

Object stores have no rename, but a single object is replaced atomically; so the pointer object
``<url>/_COMPLETE`` is the switch (docs/steps/outputs.md)::

    <url>/_COMPLETE                   {"format": "xpuflow.output/1", "version": "<id>", "files": {"model.pt": 1234}}
    <url>/_versions/<id>/model.pt     the files of that version

:func:`upload` writes every file under ``_versions/<new id>/``, then replaces the pointer, then removes
every other version (the previous one, and any that a failed or killed upload left). A failed or killed
re-upload leaves the pointer on the previous version, whose files were not touched. :func:`download`
reads the pointer and fetches the files it lists from the version it names, checking their sizes. An
output written by an older xpuflow (files at the top, an empty ``_COMPLETE``) is still read.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from . import COMPLETE_MARKER as POINTER
from .io import StepError

__all__ = ["upload", "download", "fetch", "POINTER", "VERSIONS", "FORMAT"]

VERSIONS = "_versions"
FORMAT = "xpuflow.output/1"
_VERSION = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}|shards-[0-9a-f]{32}")  # an upload's, or a sharded run's


def _fs(url: str) -> tuple[Any, str]:
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise StepError(f"{url}: cannot open this URL ({e}). Fix: check it (s3 needs s3fs, gs needs gcsfs "
                        "installed).") from None
    return fs, root.rstrip("/")


def upload(local: str | os.PathLike[str], url: str, version: str | None = None) -> None:
    """Publish the local output directory ``local`` at ``url`` as a new version; the pointer is written last.
    ``version``: its name, when every shard of a run publishes the same one (:mod:`xpuflow.steps.shards_store`)."""
    fs, root = _fs(url)
    source = Path(local)
    if not source.is_dir():  # the step returned without writing it: publishing nothing would replace the output
        raise StepError(f"{url}: the step wrote no output directory to upload; the previous output there is kept as "
                        "it was. Fix: make the step write its Output directory (os.makedirs(output, exist_ok=True)).")
    files = {p.relative_to(source).as_posix(): p.stat().st_size for p in sorted(source.rglob("*")) if p.is_file()}
    version = version or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:12]
    prefix = f"{root}/{VERSIONS}/{version}"
    try:
        for name in files:
            fs.makedirs(f"{prefix}/{name}".rpartition("/")[0], exist_ok=True)
            fs.put_file(str(source / name), f"{prefix}/{name}")
    except OSError as e:  # the pointer still names the previous version
        _remove(fs, [prefix])  # best effort: else the next upload removes it
        raise StepError(f"{url}: the upload failed ({' '.join(str(e).split())[:300]}); the previous output there "
                        "is kept as it was. Fix: check the store's credentials and space, then rerun the step.") \
            from None
    previous = _read_pointer(fs, root, writing=True)
    _write_pointer(fs, root, {"format": FORMAT, "version": version, "files": files})  # the switch
    _remove_others(fs, root, keep=version, legacy=previous == {})


def download(url: str, local: str) -> str:
    """A local copy of the finished output at ``url`` (the version its pointer names); a single file stays a URL."""
    return fetch(url, local)[0]


def fetch(url: str, local: str) -> tuple[str, str]:
    """:func:`download`, and what names the content read: the URL with the version its pointer named (a single
    file: with its store's key for the object, e.g. an ETag), so a sharded run's key changes with its input."""
    fs, root = _fs(url)
    if fs.isfile(root):  # a single file (a Parquet data set): the step reads it through fsspec itself
        try:
            return url, f"{url}#{fs.ukey(root)}"
        except (OSError, NotImplementedError, ValueError, TypeError):
            return url, f"{url}#{fs.size(root)}"
    pointer = _read_pointer(fs, root)
    if pointer is None:
        from .shards_store import incomplete

        missing = incomplete(fs, root, url)
        if missing:
            raise StepError(f"{url}: {missing}")
        raise StepError(f"{url}: no {POINTER} marker, so not a finished step output (a failed or running upstream "
                        "step). Fix: rerun the upstream step.")
    if pointer == {}:  # written by an older xpuflow: the files at the top
        files = {p[len(root) + 1:]: None for p in fs.find(root) if not p[len(root) + 1:].startswith((POINTER,
                                                                                                       VERSIONS))}
        prefix = root
    else:
        files, prefix = pointer["files"], f"{root}/{VERSIONS}/{pointer['version']}"
    for name, size in files.items():
        target = Path(local) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fs.get_file(f"{prefix}/{name}", str(target))
        except FileNotFoundError:
            raise StepError(f"{url}: {name} of the output's current version is gone (a newer upload replaced it while "
                            "it was read). Fix: rerun this step.") from None
        if size is not None and target.stat().st_size != size:
            raise StepError(f"{url}: {name} holds {target.stat().st_size} bytes, its {POINTER} records {size}: the "
                            "output is damaged. Fix: rerun the upstream step.")
    Path(local).mkdir(parents=True, exist_ok=True)
    return local, f"{url}#{pointer.get('version', 'top')}"


def _read_pointer(fs: Any, root: str, writing: bool = False) -> dict[str, Any] | None:
    """The pointer's content: None when absent, {} for an older xpuflow's empty marker. ``writing``: for a step
    about to write there, which is refused too (what is there is not xpuflow's), but told to remove it."""
    try:
        raw = fs.cat_file(f"{root}/{POINTER}")
    except FileNotFoundError:
        return None
    if not raw.strip():
        return {}
    try:
        pointer = json.loads(raw)
        ok = (pointer["format"] == FORMAT and _VERSION.fullmatch(pointer["version"])
              and all(isinstance(n, str) and isinstance(s, int) and ".." not in n.split("/")
                      for n, s in pointer["files"].items()))
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok and writing:  # rerunning the step would fail the same way: what is there must go first
        raise StepError(f"{root}/{POINTER} is not an xpuflow output pointer, so the step does not write over what is "
                        f"there. Fix: remove {root}/{POINTER} (or pass another output URL), then rerun the step.")
    if not ok:
        raise StepError(f"{root}/{POINTER} is not an xpuflow output pointer. Fix: rerun the step that writes this "
                        "output.")
    return pointer


def _write_pointer(fs: Any, root: str, pointer: dict[str, Any]) -> None:
    from fsspec.implementations.local import LocalFileSystem

    data = json.dumps(pointer, indent=2, sort_keys=True).encode() + b"\n"
    path = f"{root}/{POINTER}"
    if isinstance(fs, LocalFileSystem):  # a file:// store: write beside, then rename (a PUT is atomic elsewhere)
        from .io import atomic_file

        with atomic_file(path) as handle:
            handle.write(data)
    else:
        fs.pipe_file(path, data)


def _remove_others(fs: Any, root: str, keep: str, legacy: bool) -> None:
    """Remove every version but ``keep``, a pointer write cut short, an older xpuflow's top-level files; best effort."""
    try:
        versions = fs.ls(f"{root}/{VERSIONS}", detail=False)
    except FileNotFoundError:  # an empty output's version has no objects
        versions = []
    stale = [p for p in versions if p.rstrip("/").rpartition("/")[2] != keep]
    for path in fs.ls(root, detail=False):
        name = path.rstrip("/").rpartition("/")[2]
        if (name.startswith(f".{POINTER}.") and name.endswith(".tmp")) or (legacy and name not in (POINTER, VERSIONS)):
            stale.append(path)
    _remove(fs, stale)


def _remove(fs: Any, paths: list[str]) -> None:
    for path in paths:
        try:
            fs.rm(path, recursive=True)
        except OSError:
            pass  # left for the next upload
