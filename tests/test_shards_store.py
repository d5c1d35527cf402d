"""Shards whose output (and input) is an object-store URL: the parts meet in the store, the output is published
whole when all N are in, equal to one process's; a partial set is refused to readers; a killed shard reruns alone.

The store is fsspec's ``local://`` file system: the object-store code path (versioned uploads, pointers, listing),
shared by real subprocesses, as pods share a bucket."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from runs import env, python

from xpuflow.steps import run as run_step
from xpuflow.steps.io import StepError
from xpuflow.steps.rag.embed import embed, read_embeddings
from xpuflow.steps.shards_store import PARTS
from xpuflow.steps.store import download, upload


def shard(*options: str, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([python("main"), "-m", "xpuflow", "step", "embed", *options], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env(**extra))


def finish(*procs: subprocess.Popen) -> str:
    logs = []
    for proc in procs:
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=300) == 0, err[-3000:]
        logs.append(err)
    return "\n".join(logs)


@pytest.fixture(scope="module")
def store(docs, tmp_path_factory) -> tuple[Path, str, Path]:
    """A store holding the chunks (uploaded as a step output), and one process's embeddings for reference."""
    root = tmp_path_factory.mktemp("bucket")
    upload(str(docs), f"local://{root}/chunks")
    ref = tmp_path_factory.mktemp("one") / "emb"
    embed(data=str(docs), output=str(ref), shard_size=4)
    return root, f"local://{root}/chunks", ref


def read(url: str, where: Path) -> tuple[list, np.ndarray, dict]:
    return read_embeddings(download(url, str(where)), "t")


def test_three_shards_meet_in_the_store_and_publish_what_one_process_writes(store, tmp_path):
    root, chunks, ref = store
    out = f"local://{root}/emb-three"
    common = ("--data", chunks, "--output", out, "--shard-size", "4")
    finish(shard(*common, "--shard", "0/3"), shard(*common, "--shard", "2/3"))
    with pytest.raises(StepError) as e:  # 2 of 3: refused to a reader, in one line naming the missing shard
        download(out, str(tmp_path / "early"))
    assert str(e.value) == (f"{out}: only 2 of 3 shards are written (missing 1/3), so it is not published. Fix: run "
                            "the missing shard(s) (--shard 1/3, or rerun that index of the Indexed Job); the output "
                            "is published when all 3 are in.")
    with pytest.raises(StepError, match=r"only 2 of 3 shards are written \(missing 1/3\)"):  # a downstream step too
        run_step("index", ["--data", out, "--output", str(tmp_path / "idx")])
    finish(shard(*common, "--shard", "1/3"))
    ids, vectors, summary = read(out, tmp_path / "got")
    ref_ids, ref_vectors, ref_summary = read_embeddings(str(ref), "t")
    assert ids == ref_ids and summary["processes"] == 3 and summary["shards"] == ref_summary["shards"]
    assert np.abs(vectors - ref_vectors).max() <= 1e-5
    assert (tmp_path / "got" / "chunks.parquet").read_bytes() == (ref / "chunks.parquet").read_bytes()
    pointer = json.loads((root / "emb-three" / "_COMPLETE").read_text())
    assert pointer["version"].startswith("shards-") and not (root / "emb-three" / PARTS).exists()
    # a shard rerun after the output is published changes nothing
    before = (root / "emb-three" / "_COMPLETE").read_bytes()
    log = finish(shard(*common, "--shard", "1/3"))
    assert "already published" in log and (root / "emb-three" / "_COMPLETE").read_bytes() == before
    # a new run (other parameters) that is not complete leaves the published output as it was
    finish(shard("--data", chunks, "--output", out, "--shard-size", "2", "--shard", "0/2"))
    assert (root / "emb-three" / "_COMPLETE").read_bytes() == before
    assert read(out, tmp_path / "still")[0] == ref_ids


def test_a_shard_killed_mid_way_reruns_alone_and_the_store_output_is_unchanged(store, tmp_path):
    root, chunks, ref = store
    out = f"local://{root}/emb-killed"
    common = ("--data", chunks, "--output", out, "--shard-size", "1", "--batch-size", "1")
    finish(shard(*common, "--shard", "0/2"))
    scratch = tmp_path / "scratch"  # the shard's local working directory, watched to kill it while it encodes
    scratch.mkdir()
    victim = shard(*common, "--shard", "1/2", TMPDIR=str(scratch))
    deadline = time.time() + 120
    while len(list(scratch.glob("xpuflow-embed-*/out/.*.xpuflow-shards/.part-*.partial/embeddings/*.parquet"))) < 2:
        assert victim.poll() is None, victim.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "shard 1/2 did not start encoding in time"
        time.sleep(0.002)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    assert not (root / "emb-killed" / "_COMPLETE").exists()  # never a partial set published
    assert not (root / "emb-killed" / PARTS / "part-00001-of-00002").exists()
    finish(shard(*common, "--shard", "1/2"))  # shard 1 alone
    ids, vectors, summary = read(out, tmp_path / "got")
    ref_ids, ref_vectors, _ = read_embeddings(str(ref), "t")
    assert ids == ref_ids and np.abs(vectors - ref_vectors).max() <= 1e-5 and summary["processes"] == 2


def test_preprocess_in_two_shards_to_the_store_equals_one_process(data, tmp_path):
    from xpuflow.steps.preprocess import read_split

    url = f"local://{tmp_path}/bucket/prep"
    procs = [subprocess.Popen([python("main"), "-m", "xpuflow", "step", "preprocess", "--output", url, "--shard",
                               f"{i}/2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env()) for i in (1, 0)]
    finish(*procs)
    got = download(url, str(tmp_path / "got"))
    for split in ("train", "validation", "test"):
        (x, y, stats), (rx, ry, rstats) = read_split(got, split), read_split(str(data), split)
        assert np.array_equal(x, rx) and np.array_equal(y, ry) and stats == rstats
