"""The one publishing helper every step writes its output through: complete or untouched, never mixed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from xpuflow.steps.io import StepError
from xpuflow.steps.publish import leftovers, publish, recover

M = ("done.json",)  # the marker file of the outputs written here

ROOT = Path(__file__).resolve().parent.parent


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_version(folder: Path, version: int, files: int = 3) -> None:
    for i in range(files):
        (folder / f"part-{i}.txt").write_text(f"version {version}\n" * 100)
    (folder / "done.json").write_text(f'{{"version": {version}}}\n')


def test_a_published_output_replaces_the_old_one_whole(tmp_path):
    out = tmp_path / "out"
    with publish(out, markers=M) as staging:
        assert staging.parent == tmp_path and staging != out and not out.exists()
        write_version(staging, 1, files=5)
    assert snapshot(out) == {**{f"part-{i}.txt": b"version 1\n" * 100 for i in range(5)},
                             "done.json": b'{"version": 1}\n'}
    with publish(out, markers=M) as staging:
        write_version(staging, 2, files=2)  # fewer files: the old extra ones must not survive
    assert sorted(snapshot(out)) == ["done.json", "part-0.txt", "part-1.txt"]
    assert (out / "done.json").read_text() == '{"version": 2}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging, lock or old directory left
    assert oct(out.stat().st_mode & 0o777) == "0o755"


def test_a_failed_or_refused_rerun_leaves_the_old_output_byte_identical(tmp_path):
    out = tmp_path / "out"
    with publish(out, markers=M) as staging:
        write_version(staging, 1)
    before = snapshot(out)
    for error in (StepError("refused"), RuntimeError("crashed"), KeyboardInterrupt()):
        with pytest.raises(type(error)), publish(out, markers=M) as staging:
            write_version(staging, 2)
            raise error
        assert snapshot(out) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_existing_directory_is_replaced_only_when_empty_or_an_earlier_output(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with publish(empty, markers=M) as staging:  # KFP and pytest create the output directory before the step runs
        write_version(staging, 1)
    assert (empty / "done.json").exists()
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(StepError, match=r"^chunk: output='.*home' is a directory that is not an earlier chunk output "
                                        r"\(it holds 1 entries but no chunks\.json\); a step replaces its output "
                                        r"whole, so it is refused\. Fix: pass a new or empty directory\.$"):
        with publish(home, markers=("chunks.json",), who="chunk"):
            pytest.fail("never staged")
    assert snapshot(home) == {"thesis.tex": b"years of work"}
    older = tmp_path / "older"  # an earlier output of this step, written by any version of it
    older.mkdir()
    (older / "chunks.json").write_text("{}")
    with publish(older, markers=("chunks.json",)) as staging:
        write_version(staging, 2)
    assert not (older / "chunks.json").exists() and (older / "done.json").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StepError, match=r"output='.*file' is a file, not a directory"):
        with publish(tmp_path / "file", markers=M):
            pass


def test_a_second_run_into_the_same_output_is_refused_while_the_first_writes(tmp_path):
    out = tmp_path / "out"
    with publish(out, markers=M, who="index") as staging:
        write_version(staging, 1)
        with pytest.raises(StepError, match=r"^index: output='.*out' is being written by another run right now\. "
                                            r"Fix: wait for it to finish, or write to another output\.$"):
            with publish(out, markers=M, who="index"):
                pass
    assert (out / "done.json").read_text() == '{"version": 1}\n'


def test_leftovers_of_a_killed_run_are_cleaned_by_the_next_run(tmp_path):
    out = tmp_path / "out"
    with publish(out, markers=M) as staging:
        write_version(staging, 1)
    before = snapshot(out)
    for name in (".out.xpuflow-staging-abc", ".out.xpuflow-old-def", ".out.xpuflow-partial"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "half.parquet").write_bytes(b"PAR1")
    (tmp_path / ".out.xpuflow-lock").write_bytes(b"")  # a lock file whose holder was killed
    assert len(leftovers(out)) == 3
    with pytest.raises(StepError), publish(out, markers=M):  # even a refused rerun cleans up first
        raise StepError("refused")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and snapshot(out) == before


@pytest.mark.parametrize("left", [("ready", "old"), ("old",), ("ready",)])
def test_a_run_killed_between_the_renames_is_recovered_by_a_reader_or_the_next_run(tmp_path, left):
    out = tmp_path / "out"
    for kind, version in (("old", 1), ("ready", 2)):
        if kind in left:
            folder = tmp_path / f".out.xpuflow-{kind}-0123"
            folder.mkdir()
            write_version(folder, version)
    expected = 2 if "ready" in left else 1  # the new output is complete once renamed to ready: it wins
    recover(out)
    assert (out / "done.json").read_text() == f'{{"version": {expected}}}\n'
    with publish(out, markers=M) as staging:
        write_version(staging, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_resume_keeps_one_staging_directory_across_failed_runs(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), publish(out, markers=M, resume=True) as staging:
        (staging / "shard-0").write_text("kept")
        raise RuntimeError("preempted")
    assert not out.exists() and [p.name for p in leftovers(out)] == [".out.xpuflow-partial"]
    with publish(out, markers=M, resume=True) as staging:
        assert (staging / "shard-0").read_text() == "kept"
    assert snapshot(out) == {"shard-0": b"kept"} and leftovers(out) == []


_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from xpuflow.steps.publish import publish

    out, version = Path(sys.argv[1]), 1
    while True:
        version += 1
        with publish(out, markers=("done.json",)) as staging:
            for i in range(40):
                (staging / f"part-{i}.txt").write_text(f"version {version}\\n" * 2000)
            (staging / "done.json").write_text(f'{{"version": {version}}}\\n')
""")


def test_kill_9_at_random_moments_leaves_the_old_output_or_a_new_whole_one(tmp_path):
    out = tmp_path / "out"
    with publish(out, markers=M) as staging:
        write_version(staging, 1, files=40)
    rng = random.Random(11)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    versions = set()
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(out)], env=env)
        time.sleep(0.4 + rng.random() * 1.2)  # import takes ~0.3 s; then it publishes over and over
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        recover(out)  # what a reader does
        files = snapshot(out)
        version = int(files["done.json"].decode().split(":")[1].strip(" }\n"))
        versions.add(version)
        assert {name: data for name, data in files.items() if name.startswith("part-")} == {
            f"part-{i}.txt": f"version {version}\n".encode() * (2000 if version > 1 else 100) for i in range(40)}
        with publish(out, markers=M) as staging:  # the next run cleans what the killed one left
            (staging / "done.json").write_bytes(files["done.json"])
            for name, data in files.items():
                (staging / name).write_bytes(data)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert len(versions) > 1  # the kills did land while it was publishing


def test_a_reader_of_a_finished_output_recovers_a_switch_cut_short(tmp_path):
    from xpuflow.steps.io import read_finished

    ready = tmp_path / ".chunks.xpuflow-ready-0123"
    ready.mkdir()
    (ready / "chunks.json").write_text('{"chunks": 7}')
    assert read_finished(tmp_path / "chunks", "chunks.json", who="embed", option="data", producer="chunk") == {
        "chunks": 7}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunks"]
