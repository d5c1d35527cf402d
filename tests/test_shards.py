"""Steps in N shards (``--shard I/N``): separate processes write one output, published only when all N parts
are in; the result equals one process's; a killed shard reruns alone; a partial set is refused downstream."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from runs import env, kill_when, python

from xpuflow.steps.io import StepError
from xpuflow.steps.rag.batch_infer import batch_infer
from xpuflow.steps.rag.embed import embed, read_embeddings
from xpuflow.steps.rag.index import index
from xpuflow.steps.shards import Shard, parse, parts_dir


def step(name: str, *options: str, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([python("main"), "-m", "xpuflow", "step", name, *options], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env(**extra))


def finish(*procs: subprocess.Popen) -> None:
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-3000:]


def test_shard_spec_and_job_completion_index(monkeypatch):
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    assert parse("", "embed") is None and parse("1/3", "embed") == Shard(1, 3)
    for bad in ("3/3", "-1/3", "1/0", "a/3", "1/3/3", "１/3", "0/10001"):
        with pytest.raises(StepError, match=r"^embed: shard=.* is not valid: I/N with 0 <= I < N") as e:
            parse(bad, "embed")
        assert "\n" not in str(e.value)
    with pytest.raises(StepError, match=r"gives the count but no index, and JOB_COMPLETION_INDEX is not set"):
        parse("3", "embed")
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    assert parse("3", "embed") == Shard(2, 3) == parse("2/3", "embed")
    with pytest.raises(StepError, match=r"shard='1/3' but JOB_COMPLETION_INDEX=2: two different indexes"):
        parse("1/3", "embed")
    with pytest.raises(StepError, match=r"shard='3/3' is not valid"):
        monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
        parse("3", "embed")
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "x")
    with pytest.raises(StepError, match=r"JOB_COMPLETION_INDEX='x' is not valid"):
        parse("3", "embed")


@pytest.fixture(scope="module")
def reference(docs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "emb"
    embed(data=str(docs), output=str(out), shard_size=4)
    return out


def test_embed_in_three_processes_equals_one_and_two_of_three_are_refused(docs, reference, tmp_path):
    out = tmp_path / "emb"
    common = ("--data", str(docs), "--output", str(out), "--shard-size", "4")
    finish(step("embed", *common, "--shard", "0/3"), step("embed", *common, "--shard", "3", JOB_COMPLETION_INDEX="2"))
    assert not out.exists()  # 2 of 3: nothing published
    with pytest.raises(StepError) as e:
        index(data=str(out), output=str(tmp_path / "idx"))
    assert str(e.value) == (f"index: data={str(out)!r}: only 2 of 3 shards are written (missing 1/3), so it is not "
                            "published. Fix: run the missing shard(s) (--shard 1/3, or rerun that index of the "
                            "Indexed Job); the output is published when all 3 are in.")
    assert not (tmp_path / "idx").exists()
    finish(step("embed", *common, "--shard", "1/3"))
    ids, vectors, summary = read_embeddings(str(out), "t")
    ref_ids, ref, ref_summary = read_embeddings(str(reference), "t")
    assert ids == ref_ids and summary["shards"] == ref_summary["shards"] and summary["processes"] == 3
    assert np.abs(vectors - ref).max() <= 1e-5
    assert (out / "chunks.parquet").read_bytes() == (reference / "chunks.parquet").read_bytes()
    assert not parts_dir(out).exists()  # the parts were moved into the output
    index(data=str(out), output=str(tmp_path / "idx"))  # readable downstream


def test_a_shard_killed_mid_way_reruns_alone_and_the_result_is_unchanged(docs, reference, tmp_path):
    out = tmp_path / "emb"
    common = ("--data", str(docs), "--output", str(out), "--shard-size", "1", "--batch-size", "1")
    finish(step("embed", *common, "--shard", "0/3"), step("embed", *common, "--shard", "2/3"))
    proc = step("embed", *common, "--shard", "1/3")
    partial = parts_dir(out) / ".part-00001-of-00003.partial" / "embeddings"
    kill_when(proc, lambda: len(list(partial.glob("shard-*.parquet"))) >= 3, "shard 1/3 writing 3 files")
    assert not out.exists()
    kept = {p.name: p.stat().st_mtime_ns for p in partial.glob("shard-*.parquet")}
    rerun = subprocess.run(proc.args, capture_output=True, text=True, env=env(), timeout=300)  # shard 1 alone
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads((out / "embeddings.json").read_text())
    assert summary["shards_reused"] == len(kept)  # the killed shard's finished files were kept
    ids, vectors, _ = read_embeddings(str(out), "t")
    ref_ids, ref, _ = read_embeddings(str(reference), "t")
    assert ids == ref_ids and np.abs(vectors - ref).max() <= 1e-5


def test_batch_infer_in_three_processes_equals_one(data, tmp_path):
    from xpuflow.steps.train import train

    model = tmp_path / "model"
    train(data=str(data), output=str(model), epochs=1, batch_size=64)
    one = batch_infer(model=str(model), data=str(data), output=str(tmp_path / "one"), batch_size=50)
    out = tmp_path / "three"
    common = ("--model", str(model), "--data", str(data), "--output", str(out), "--batch-size", "50")
    first = [step("batch_infer", *common, "--shard", f"{i}/3") for i in (2, 0)]
    finish(*first)
    assert not out.exists()
    finish(step("batch_infer", *common, "--shard", "1/3"))
    assert pq.read_table(out / "predictions.parquet").equals(pq.read_table(tmp_path / "one" / "predictions.parquet"))
    summary = json.loads((out / "predictions.json").read_text())
    assert (summary["rows"], summary["shards"], summary["imputed"]) == (one["rows"], 3, one["imputed"])


def test_a_batch_infer_shard_killed_mid_way_reruns_alone_and_the_predictions_are_unchanged(data, tmp_path):
    from xpuflow.steps.train import train

    model = tmp_path / "model"
    train(data=str(data), output=str(model), epochs=1, batch_size=64)
    one = tmp_path / "one"
    batch_infer(model=str(model), data=str(data), output=str(one), batch_size=1)
    out = tmp_path / "three"
    common = ("--model", str(model), "--data", str(data), "--output", str(out), "--batch-size", "1")
    finish(step("batch_infer", *common, "--shard", "0/3"), step("batch_infer", *common, "--shard", "2/3"))
    victim = step("batch_infer", *common, "--shard", "1/3")
    partial = parts_dir(out) / ".part-00001-of-00003.partial"
    kill_when(victim, lambda: any(partial.glob("*")), "shard 1/3 writing its part")  # one row per batch: ~600
    assert not out.exists()  # never published from 2 parts and a piece
    finish(step("batch_infer", *common, "--shard", "1/3"))  # shard 1 alone
    assert pq.read_table(out / "predictions.parquet").equals(pq.read_table(one / "predictions.parquet"))
