"""Sharded steps whose output is an object-store URL: the parts meet in the store, not on a shared file system.

Each shard runs into a local temporary output as usual (:func:`xpuflow.steps.run`), so its part is written
beside that output (:func:`xpuflow.steps.shards.part`). Then, in the store::

    <url>/_shards/part-I-of-N/_COMPLETE           the part, uploaded like any output (a pointer written last,
    <url>/_shards/part-I-of-N/_versions/<id>/...  so a killed upload is never taken for a part)

and the shard lists the parts there. When all N parts of its run key are in, it downloads the others, merges
them as the shards of a file system do (:func:`xpuflow.steps.shards.join`), and uploads the output as the
version ``shards-<key>``. Object stores have no lock, so two shards finishing together may both do it: they
write the same files under the same version and the same pointer, so neither can leave a mixed or missing
version, and a shard that finds the pointer already naming that version stops there. The parts of the run are
removed once its output is published (best effort); another run's parts stay (a rerun with other parameters may be
under way, and publishes when its last part is in). The run key names each input by URL and version read, so a new
upstream output under the same URL is a new run, never "already published".

A reader of the URL before then is refused in one line naming the missing shards (:func:`incomplete`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import redacted
from .io import StepError
from .shards import PART_META, Shard, is_part, lacking, parts_dir

__all__ = ["PARTS", "publish_part", "incomplete", "version_of"]

log = logging.getLogger("xpuflow.shards")
PARTS = "_shards"


def version_of(key: str) -> str:
    """The output version every shard of run ``key`` publishes (the same name, so the same objects)."""
    return f"shards-{key}"


def publish_part(local_output: str, url: str, who: str) -> None:
    """Upload the part this process wrote beside ``local_output`` to ``url``'s parts; publish ``url`` when all
    parts of its run are there. A process of one shard (``--shard 0/1``) published locally: uploaded as is."""
    from .store import _fs, upload

    mine = sorted(p for p in parts_dir(local_output).glob("part-*-of-*") if (p / PART_META).is_file())
    if not mine:  # the step published its output itself (the only shard)
        upload(local_output, url)
        return
    (folder,) = mine
    meta = json.loads((folder / PART_META).read_text())
    key, count = meta["key"], meta["count"]
    fs, root = _fs(url)
    upload(str(folder), f"{url.rstrip('/')}/{PARTS}/{folder.name}")
    if _published(fs, root, key):
        log.info("%s: shard %d/%d: the output of this run is already published", who, meta["index"], count)
        _remove_parts(fs, root, url, key)
        return
    found = _parts(fs, root, url, key, count)
    if len(found) < count:
        log.info("%s: shard %d/%d done; %d of %d parts in the store (the shard that sees all publishes)", who,
                 meta["index"], count, len(found), count)
        return
    try:
        _merge_and_upload(found, folder, local_output, url, key)
    except StepError:  # another shard published and removed the parts while this one read them
        if not _published(fs, root, key):
            raise
    if _published(fs, root, key):
        _remove_parts(fs, root, url, key)
    log.info("%s: all %d shards in: %s published", who, count, redacted(url))


def _merge_and_upload(found: dict[int, str], mine: Path, local_output: str, url: str, key: str) -> None:
    from .shards import join
    from .store import download, upload

    here = parts_dir(local_output)
    count = len(found)
    for index, part_url in found.items():
        target = here / Shard(index, count).name
        if target != mine:
            download(part_url, str(target))
    join([local_output], local_output)  # the parts are all beside it: merged and published locally
    upload(local_output, url, version=version_of(key))


def _published(fs: Any, root: str, key: str) -> bool:
    from .store import _read_pointer

    fs.invalidate_cache()
    pointer = _read_pointer(fs, root, writing=True)  # a shard about to publish there
    return bool(pointer) and pointer.get("version") == version_of(key)


def _part_metas(fs: Any, root: str, url: str) -> list[tuple[str, dict[str, Any]]]:
    """``(URL, part.json)`` of each complete part under ``<url>/_shards`` (any run)."""
    from .store import VERSIONS, _read_pointer

    fs.invalidate_cache()
    try:
        folders = fs.ls(f"{root}/{PARTS}", detail=False)
    except FileNotFoundError:
        return []
    out = []
    for folder in sorted(folders):
        folder = folder.rstrip("/")
        try:
            pointer = _read_pointer(fs, folder)
            if not pointer:
                continue
            meta = json.loads(fs.cat_file(f"{folder}/{VERSIONS}/{pointer['version']}/{PART_META}"))
        except (OSError, StepError, ValueError, KeyError, TypeError):
            continue  # an upload cut short, removed meanwhile, or not ours: not a part
        if is_part(meta, folder.rpartition('/')[2]):
            out.append((f"{url.rstrip('/')}/{PARTS}/{folder.rpartition('/')[2]}", meta))
    return out


def _parts(fs: Any, root: str, url: str, key: str, count: int) -> dict[int, str]:
    return {m["index"]: part for part, m in _part_metas(fs, root, url) if m["key"] == key and m["count"] == count}


def _remove_parts(fs: Any, root: str, url: str, key: str) -> None:
    """Remove the parts of run ``key`` (published); best effort. Another run's parts stay: it may be under way (a
    rerun with other parameters), and publishes over this output when its last shard is in."""
    from .store import _remove

    _remove(fs, [f"{root}/{PARTS}/{part.rpartition('/')[2]}" for part, m in _part_metas(fs, root, url)
                 if m["key"] == key])
    fs.invalidate_cache()
    try:
        if not fs.ls(f"{root}/{PARTS}", detail=False):  # a file system's empty folder (a store has none)
            fs.rmdir(f"{root}/{PARTS}")
    except (OSError, NotImplementedError):
        pass


def incomplete(fs: Any, root: str, url: str) -> str | None:
    """For a reader of an unpublished URL: what its shard parts lack, in one phrase, or None (no parts)."""
    metas = [m for _, m in _part_metas(fs, root, url)]
    if not metas:
        return None
    (key, count), _ = Counter((m["key"], m["count"]) for m in metas).most_common(1)[0]  # the run most parts are of
    return lacking({m["index"] for m in metas if m["key"] == key and m["count"] == count}, count)
