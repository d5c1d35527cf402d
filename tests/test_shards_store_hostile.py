"""Shards meeting in an object store, used the way a hostile outsider would: reruns over a published output,
two runs of other widths on one URL, garbage under ``<url>/_shards``, credentials in the URL.

In-process through :func:`xpuflow.steps.run` (what ``xpuflow step`` calls) on fsspec's ``memory://`` store, so each
test takes seconds; tests/test_shards_store.py covers real subprocesses sharing a ``local://`` store."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from usershards import write_package

from xpuflow.steps import run as run_step
from xpuflow.steps.io import StepError
from xpuflow.steps.shards_store import PARTS
from xpuflow.steps.store import download


def docs(folder: Path, texts: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "docs.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n"
                                               for i, t in enumerate(texts)))
    return folder


def texts(url: str, where: Path) -> list[str]:
    return pq.read_table(Path(download(url, str(where))) / "chunks.parquet").column("text").to_pylist()


def embed(data: str, out: str, shard: str, size: int = 1) -> None:
    run_step("embed", ["--data", data, "--output", out, "--shard-size", str(size), "--shard", shard])


def test_a_rerun_over_changed_input_publishes_the_new_result_not_the_old_one(tmp_path):
    """The input URL holds a new version with the same number of chunks: the shards must not take the old
    output for theirs ("already published") and keep it."""
    bucket = "memory://h16-rerun"
    run_step("chunk", ["--input", str(docs(tmp_path / "a", ["alpha beta", "gamma delta"])), "--output",
                       f"{bucket}/chunks"])
    for i in (0, 1):
        embed(f"{bucket}/chunks", f"{bucket}/emb", f"{i}/2")
    assert texts(f"{bucket}/emb", tmp_path / "got1") == ["alpha beta", "gamma delta"]
    run_step("chunk", ["--input", str(docs(tmp_path / "b", ["new words", "other text"])), "--output",
                       f"{bucket}/chunks"])
    for i in (0, 1):
        embed(f"{bucket}/chunks", f"{bucket}/emb", f"{i}/2")
    assert texts(f"{bucket}/emb", tmp_path / "got2") == ["new words", "other text"]
    # the same input and parameters again: already published, and the rerun leaves no part behind
    embed(f"{bucket}/chunks", f"{bucket}/emb", "1/2")
    assert texts(f"{bucket}/emb", tmp_path / "got3") == ["new words", "other text"]
    assert not fsspec.filesystem("memory").find(f"/h16-rerun/emb/{PARTS}")


def test_a_run_publishing_does_not_remove_the_parts_of_another_run_in_progress(tmp_path):
    """Run A (2 shards) publishes while run B (3 shards, other parameters) is under way on the same URL: B's parts
    must survive A's publish, and B, once all its shards are done, is published."""
    bucket = "memory://h16-two-runs"
    run_step("chunk", ["--input", str(docs(tmp_path / "a", ["one", "two", "three"])), "--output", f"{bucket}/chunks"])
    chunks, out = f"{bucket}/chunks", f"{bucket}/emb"
    embed(chunks, out, "0/2", size=1)
    embed(chunks, out, "0/3", size=2)  # run B starts
    embed(chunks, out, "1/2", size=1)  # run A completes and publishes
    first = json.loads(fsspec.filesystem("memory").cat_file("/h16-two-runs/emb/_COMPLETE"))
    embed(chunks, out, "1/3", size=2)
    embed(chunks, out, "2/3", size=2)  # run B's last shard: all three parts of B are in
    now = json.loads(fsspec.filesystem("memory").cat_file("/h16-two-runs/emb/_COMPLETE"))
    assert now["version"] != first["version"]
    summary = json.loads(Path(download(out, str(tmp_path / "got")), "embeddings.json").read_text())
    assert summary["shard_size"] == 2 and summary["processes"] == 3


def _part(fs, bucket: str, name: str, meta: object) -> None:
    version = "shards-" + "0" * 32
    body = json.dumps(meta).encode()
    fs.pipe_file(f"/{bucket}/{PARTS}/{name}/_versions/{version}/part.json", body)
    fs.pipe_file(f"/{bucket}/{PARTS}/{name}/_COMPLETE", json.dumps(
        {"format": "xpuflow.output/1", "version": version, "files": {"part.json": len(body)}}).encode())


@pytest.mark.parametrize("meta", [
    {"index": "0", "count": "2", "key": "k"},     # strings
    {"index": 0, "count": 0, "key": "k"},         # no shards
    {"index": 5, "count": 2, "key": "k"},         # past the count
    {"index": True, "count": 2, "key": "k"},      # a bool is no index
    {"index": 0, "count": 2, "key": ["k"]},       # a key that is no string
    [0, 2, "k"],                                   # not an object
])
def test_a_part_json_that_is_not_a_part_is_ignored_never_a_traceback_or_a_nonsense_count(meta, tmp_path):
    fs = fsspec.filesystem("memory")
    bucket = f"h16-garbage-{abs(hash(json.dumps(meta)))}"
    _part(fs, bucket, "part-00000-of-00002", meta)
    with pytest.raises(StepError) as e:
        download(f"memory://{bucket}", str(tmp_path / "got"))
    assert "no _COMPLETE marker" in str(e.value)  # no part there: what a reader of a missing output is told


def test_the_credentials_of_the_output_url_are_not_logged(tmp_path, caplog):
    bucket = "memory://KEY:SECRET@h16-creds"
    run_step("chunk", ["--input", str(docs(tmp_path / "a", ["one", "two"])), "--output", f"{bucket}/chunks"])
    with caplog.at_level(logging.INFO, logger="xpuflow"):
        for i in (0, 1):
            embed(f"{bucket}/chunks", f"{bucket}/emb", f"{i}/2")
    assert "published" in caplog.text and "SECRET" not in caplog.text


def test_a_shards_file_instead_of_a_folder_is_one_line(tmp_path):
    """``<url>/_shards`` is a file (a stray upload): the shard fails in one line naming it, and leaves it."""
    root = tmp_path / "bucket"
    run_step("chunk", ["--input", str(docs(tmp_path / "a", ["x y"])), "--output", f"local://{root}/chunks"])
    (root / "emb").mkdir()
    (root / "emb" / PARTS).write_text("junk")
    with pytest.raises(StepError) as e:
        embed(f"local://{root}/chunks", f"local://{root}/emb", "0/2")
    assert "\n" not in str(e.value) and f"emb/{PARTS}" in str(e.value) and "previous output" in str(e.value)
    assert (root / "emb" / PARTS).read_text() == "junk"  # not ours to remove


@pytest.fixture
def squares(tmp_path, monkeypatch) -> str:
    """A user's package (outside xpuflow/) with a step that has a ``shard: str`` parameter."""
    monkeypatch.syspath_prepend(str(write_package(tmp_path / "userpkg", "h16_user")))
    return "h16_user.steps:squares"


def test_a_users_own_step_sharded_to_a_url_publishes_when_all_are_in(squares, tmp_path):
    url = "memory://h16-user/sq"
    run_step(squares, ["--output", url, "--n", "7", "--shard", "1/2"])
    with pytest.raises(StepError, match=r"only 1 of 2 shards are written \(missing 0/2\)"):
        download(url, str(tmp_path / "early"))
    run_step(squares, ["--output", url, "--n", "7", "--shard", "0/2"])
    got = Path(download(url, str(tmp_path / "got")))
    assert json.loads((got / "values.json").read_text()) == [i * i for i in range(7)]


def test_all_parts_in_but_not_yet_published_is_said_so_not_missing_nothing(squares, tmp_path):
    """The window while the last shard merges (or after it was killed before publishing): a reader is told that,
    not `only 2 of 2 shards are written (missing )`."""
    from xpuflow.steps.shards import parts_dir
    from xpuflow.steps.store import upload

    for i in (0, 1):  # each shard's part, as a KFP iteration leaves it beside its own output
        run_step(squares, ["--output", str(tmp_path / f"it{i}" / "sq"), "--shard", f"{i}/2"])
    url = "memory://h16-window/sq"
    for i in (0, 1):
        folder = parts_dir(tmp_path / f"it{i}" / "sq") / f"part-0000{i}-of-00002"
        upload(str(folder), f"{url}/{PARTS}/{folder.name}")
    with pytest.raises(StepError) as e:
        download(url, str(tmp_path / "got"))
    assert "all 2 shards are written but the output is not published yet" in str(e.value), str(e.value)
    assert "missing" not in str(e.value)
    run_step(squares, ["--output", url, "--shard", "1/2"])  # "rerun any one shard": it publishes
    assert json.loads((Path(download(url, str(tmp_path / "got2"))) / "values.json").read_text()) == \
        [i * i for i in range(10)]


def test_a_local_part_json_that_is_not_a_part_is_no_traceback_for_a_reader(squares, tmp_path):
    from xpuflow.steps.io import read_finished
    from xpuflow.steps.shards import parts_dir

    out = tmp_path / "sq"
    folder = parts_dir(out) / "part-00000-of-00002"
    folder.mkdir(parents=True)
    (folder / "part.json").write_text(json.dumps({"index": "0", "key": 3}))
    with pytest.raises(StepError, match=r"has no done.json, so it is not a finished squares output"):
        read_finished(out, "done.json", who="reader", option="data", producer="squares")


def test_the_credentials_of_a_url_are_not_in_the_error_a_task_logs(squares, tmp_path):
    """Airflow and KFP tasks log the exception a step raises (not the CLI's masked line): its message is masked."""
    url = "memory://KEY:SECRET@h16-creds-read/sq"
    run_step(squares, ["--output", url, "--shard", "0/2"])
    with pytest.raises(StepError) as e:
        download(url, str(tmp_path / "got"))
    assert "only 1 of 2 shards are written" in str(e.value) and "SECRET" not in str(e.value)
    assert "memory://***@h16-creds-read/sq" in str(e.value)


def test_shards_finishing_together_never_publish_a_mixed_output_nor_fail(squares, tmp_path):
    """All shards of a run started at once (real processes sharing a ``local://`` store), run after run with other
    parameters over the published output, a reader polling all along: every shard exits 0, each run publishes its
    own whole result, and a reader sees a whole output (the previous or the new one) or a one-line refusal."""
    import os
    import subprocess

    from runs import env, python

    url = f"local://{tmp_path}/bucket/sq"
    child = env(PYTHONPATH=os.pathsep.join([str(Path(__import__("h16_user").__file__).parents[1]),
                                            os.environ.get("PYTHONPATH", "")]))
    whole = [[i * i for i in range(n)] for n in (10, 11, 12)]
    for round_, (n, count) in enumerate([(10, 2), (11, 3), (12, 2), (10, 3)]):
        procs = [subprocess.Popen([python("main"), "-m", "xpuflow", "step", squares, "--output", url, "--n", str(n),
                                   "--shard", f"{i}/{count}"], env=child, stderr=subprocess.PIPE, text=True)
                 for i in range(count)]
        while any(p.poll() is None for p in procs):
            try:
                seen = json.loads((Path(download(url, str(tmp_path / "r" / str(round_)))) / "values.json").read_text())
            except StepError as e:
                assert "\n" not in str(e)
            else:
                assert seen in whole
        for p in procs:
            assert p.wait(timeout=120) == 0, p.stderr.read()[-2000:]
        got = json.loads((Path(download(url, str(tmp_path / "got" / str(round_)))) / "values.json").read_text())
        assert got == [i * i for i in range(n)], round_


def test_a_foreign_pointer_at_the_output_url_says_to_remove_it_not_to_rerun(squares, tmp_path):
    """``<url>/_COMPLETE`` holds something that is not xpuflow's pointer: a shard (or any upload) refuses to write
    over it, and says what works: remove it (before: "rerun the step that writes this output", which fails again)."""
    fs = fsspec.filesystem("memory")
    fs.pipe_file("/h16-foreign/sq/_COMPLETE", b"written by someone else")
    url = "memory://h16-foreign/sq"
    for argv in (["--shard", "0/1"], ["--shard", "1/2"], ["--shard", "0/2"]):
        with pytest.raises(StepError) as e:
            run_step(squares, ["--output", url, *argv])
        assert "Fix: remove /h16-foreign/sq/_COMPLETE" in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert fs.cat_file("/h16-foreign/sq/_COMPLETE") == b"written by someone else"
    fs.rm("/h16-foreign/sq/_COMPLETE")
    run_step(squares, ["--output", url, "--shard", "1/2"])  # the parts uploaded before are reused
    got = Path(download(url, str(tmp_path / "got")))
    assert json.loads((got / "values.json").read_text()) == [i * i for i in range(10)]


def test_shards_of_two_counts_on_one_url_never_join(squares, tmp_path):
    """0/2 and 1/3 of the same parameters: two parts, no set; a reader is refused; 1/2 completes the 2-shard set,
    and the 3-shard part (the same result) goes with the published run's parts."""
    url = "memory://h16-counts/sq"
    run_step(squares, ["--output", url, "--shard", "0/2"])
    run_step(squares, ["--output", url, "--shard", "1/3"])
    with pytest.raises(StepError, match=r"only 1 of [23] shards are written \(missing"):
        download(url, str(tmp_path / "early"))
    run_step(squares, ["--output", url, "--shard", "1/2"])
    got = Path(download(url, str(tmp_path / "got")))
    assert json.loads((got / "done.json").read_text()) == {"count": 10, "processes": 2}
    assert not fsspec.filesystem("memory").find(f"/h16-counts/sq/{PARTS}")
