"""Step outputs on object stores: a failed or killed re-upload never leaves the marker over mixed files.

Real fsspec stores: ``memory://`` (in-process) and a local ``file://`` store (shared with the subprocesses
that are killed). The failure mid-upload is a real fsspec filesystem (memory) whose writes start failing
after a number of files, as a store does when its credentials expire or its quota is reached.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from xpuflow.steps import _upload
from xpuflow.steps.store import download as _download
from xpuflow.steps.io import StepError

ROOT = Path(__file__).resolve().parent.parent


class QuotaFileSystem(MemoryFileSystem):
    """The memory store, but writes fail once ``budget`` files were written (a quota, expired credentials)."""

    protocol = "quota"
    budget = 10**9

    @classmethod
    def _strip_protocol(cls, path):  # quota://bucket/x is memory://bucket/x
        return MemoryFileSystem._strip_protocol("memory://" + path.removeprefix("quota://"))

    def put_file(self, lpath, rpath, *args, **kwargs):
        if QuotaFileSystem.budget <= 0:
            raise PermissionError(f"quota exceeded writing {rpath}")
        QuotaFileSystem.budget -= 1
        return super().put_file(lpath, rpath, *args, **kwargs)

    def pipe_file(self, path, value, *args, **kwargs):
        if QuotaFileSystem.budget <= 0:
            raise PermissionError(f"quota exceeded writing {path}")
        QuotaFileSystem.budget -= 1
        return super().pipe_file(path, value, *args, **kwargs)


fsspec.register_implementation("quota", QuotaFileSystem, clobber=True)


def output(folder: Path, version: int, files: int = 6) -> Path:
    """A step output: ``files`` parts and a marker, all of ``version``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (folder / "parts" / f"{i}.bin").parent.mkdir(exist_ok=True)
        (folder / "parts" / f"{i}.bin").write_bytes(f"version {version}\n".encode() * 5000)
    (folder / "done.json").write_text(json.dumps({"version": version}))
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def bucket():
    fs = fsspec.filesystem("memory")
    fs.rm("/bucket", recursive=True) if fs.exists("/bucket") else None
    yield fs
    QuotaFileSystem.budget = 10**9


def test_a_reupload_replaces_the_output_whole(bucket, tmp_path):
    _upload(str(output(tmp_path / "v1", 1)), "memory://bucket/out")
    assert snapshot(Path(_download("memory://bucket/out", str(tmp_path / "got1")))) == snapshot(tmp_path / "v1")
    _upload(str(output(tmp_path / "v2", 2, files=2)), "memory://bucket/out")  # fewer files than v1
    assert snapshot(Path(_download("memory://bucket/out", str(tmp_path / "got2")))) == snapshot(tmp_path / "v2")
    pointer = json.loads(bucket.cat_file("/bucket/out/_COMPLETE"))
    assert pointer["format"] == "xpuflow.output/1" and pointer["files"]["parts/1.bin"] == 50000
    versions = bucket.ls("/bucket/out/_versions", detail=False)
    assert [v.rpartition("/")[2] for v in versions] == [pointer["version"]]  # the previous version was removed


def test_a_failed_reupload_keeps_the_previous_output_and_its_marker(bucket, tmp_path):
    _upload(str(output(tmp_path / "v1", 1)), "memory://bucket/out")
    before = {p: bucket.cat_file(p) for p in bucket.find("/bucket/out")}
    QuotaFileSystem.budget = 3  # the store refuses writes after 3 of the 7 files
    with pytest.raises(StepError, match=r"^quota://bucket/out: the upload failed \(quota exceeded writing .*\); the "
                                        r"previous output there is kept as it was\. Fix: check the store's "
                                        r"credentials and space, then rerun the step\.$"):
        _upload(str(output(tmp_path / "v2", 2)), "quota://bucket/out")
    got = snapshot(Path(_download("memory://bucket/out", str(tmp_path / "got"))))
    assert got == snapshot(tmp_path / "v1")  # whole, not mixed with the 3 files of version 2
    assert {p: bucket.cat_file(p) for p in bucket.find("/bucket/out")} == before  # the partial version is removed
    QuotaFileSystem.budget = 10**9
    _upload(str(output(tmp_path / "v3", 3)), "quota://bucket/out")
    assert snapshot(Path(_download("memory://bucket/out", str(tmp_path / "got3")))) == snapshot(tmp_path / "v3")


def test_a_failed_first_upload_leaves_no_finished_output(bucket, tmp_path):
    QuotaFileSystem.budget = 2
    with pytest.raises(StepError, match=r"the upload failed"):
        _upload(str(output(tmp_path / "v1", 1)), "quota://bucket/new")
    with pytest.raises(StepError, match=r"^memory://bucket/new: no _COMPLETE marker, so not a finished step output"):
        _download("memory://bucket/new", str(tmp_path / "got"))


def test_an_output_written_by_an_older_xpuflow_is_read_and_replaced(bucket, tmp_path):
    v1 = output(tmp_path / "v1", 1)
    for path in sorted(p for p in v1.rglob("*") if p.is_file()):  # the old layout: files at the top, empty marker
        bucket.pipe_file(f"/bucket/old/{path.relative_to(v1).as_posix()}", path.read_bytes())
    bucket.pipe_file("/bucket/old/_COMPLETE", b"")
    assert snapshot(Path(_download("memory://bucket/old", str(tmp_path / "got")))) == snapshot(v1)
    _upload(str(output(tmp_path / "v2", 2)), "memory://bucket/old")
    assert snapshot(Path(_download("memory://bucket/old", str(tmp_path / "got2")))) == snapshot(tmp_path / "v2")
    assert sorted(p.rpartition("/")[2] for p in bucket.ls("/bucket/old", detail=False)) == ["_COMPLETE", "_versions"]


@pytest.mark.parametrize("pointer", [b"not json", b'{"format": "xpuflow.output/1", "version": "../../etc", '
                                                   b'"files": {}}',
                                     b'{"format": "xpuflow.output/1", "version": "20261130T000000Z-0123456789ab", '
                                     b'"files": {"../../escape": 1}}'])
def test_a_pointer_that_is_not_ours_is_refused(bucket, tmp_path, pointer):
    bucket.pipe_file("/bucket/odd/_COMPLETE", pointer)
    with pytest.raises(StepError, match=r"^/bucket/odd/_COMPLETE is not an xpuflow output pointer\. Fix: rerun"):
        _download("memory://bucket/odd", str(tmp_path / "got"))
    assert not (tmp_path.parent / "escape").exists()


_UPLOADER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from xpuflow.steps import _upload

    src, url, version = Path(sys.argv[1]), sys.argv[2], 1
    while True:
        version += 1
        for i in range(30):
            (src / "parts" / f"{i}.bin").write_bytes(f"version {version}\\n".encode() * 20000)
        (src / "done.json").write_text(json.dumps({"version": version}))
        _upload(str(src), url)
""")


def test_kill_9_at_random_moments_during_reuploads_to_a_file_store(tmp_path):
    store = tmp_path / "store"
    url = f"file://{store}/out"
    _upload(str(output(tmp_path / "v1", 1, files=30)), url)
    src = output(tmp_path / "src", 1, files=30)
    rng = random.Random(5)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    seen = set()
    for attempt in range(6):
        proc = subprocess.Popen([sys.executable, "-c", _UPLOADER, str(src), url], env=env)
        time.sleep(0.5 + rng.random() * 1.5)  # imports ~0.3 s, then it uploads over and over
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        got = snapshot(Path(_download(url, str(tmp_path / f"got{attempt}"))))
        version = json.loads(got["done.json"])["version"]
        seen.add(version)
        repeat = 5000 if version == 1 else 20000
        assert got == {"done.json": json.dumps({"version": version}).encode(),
                       **{f"parts/{i}.bin": f"version {version}\n".encode() * repeat for i in range(30)}}
    _upload(str(output(tmp_path / "last", 99, files=1)), url)  # the next upload removes what the killed ones left
    assert len(os.listdir(store / "out" / "_versions")) == 1
    assert sorted(os.listdir(store / "out")) == ["_COMPLETE", "_versions"]
    assert len(seen) > 1
