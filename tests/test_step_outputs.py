"""Reruns never lose or corrupt a step's output: refused or failed reruns keep the previous output byte-identical,
a rerun killed with SIGKILL at a random moment leaves the previous output or the new one (never a mix), and the
next run cleans what a killed one left. Real steps on real files; the kills hit real subprocesses."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runs import env, python

from xpuflow.steps.evaluate import evaluate
from xpuflow.steps.io import StepError
from xpuflow.steps.preprocess import preprocess
from xpuflow.steps.rag.batch_infer import batch_infer
from xpuflow.steps.rag.chunk import chunk, read_chunks
from xpuflow.steps.rag.embed import embed
from xpuflow.steps.rag.index import index
from xpuflow.steps.train import train


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def alone(out: Path) -> None:
    """Nothing beside ``out``: no staging, ready, old or partial directory, no lock file."""
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")) == []


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    train(data=str(data), output=str(out), epochs=1, batch_size=64)
    return out


@pytest.fixture(scope="module")
def other_classes(data, tmp_path_factory) -> dict[str, Path]:
    """The digits test rows, preprocessed again with other classes: 0-4 only, and the ten renamed."""
    table = pq.read_table(data / "test.parquet")
    features = [n for n in table.column_names if n != "label"]
    stats = json.loads((data / "stats.json").read_text())
    labels = [stats["classes"][i] for i in table.column("label").to_pylist()]
    folder = tmp_path_factory.mktemp("classes")
    made = {}
    for name, keep, rename in (("fewer", lambda c: int(c) < 5, str), ("renamed", lambda c: True, lambda c: f"d{c}")):
        rows = [i for i, c in enumerate(labels) if keep(c)]
        part = table.select(features).take(pa.array(rows))
        part = part.append_column("label", pa.array([rename(labels[i]) for i in rows]))
        pq.write_table(part, folder / f"{name}.parquet")
        made[name] = folder / name
        preprocess(input=str(folder / f"{name}.parquet"), output=str(made[name]), val_fraction=0.1, test_fraction=0.5)
    return made


# ---------------------------------------------------------------- refused or failed reruns change nothing


def test_chunk_refused_for_a_bad_input_keeps_the_previous_chunks(docs, tmp_path):
    out = tmp_path / "chunks"
    shutil.copytree(docs, out)
    before = snapshot(out)
    (tmp_path / "dup.jsonl").write_text('{"id": 1, "text": "one"}\n{"id": 1, "text": "again"}\n')
    (tmp_path / "bad.bin").write_bytes(b"\0")
    for bad, message in ((tmp_path / "missing", r"cannot read it"), (tmp_path / "bad.bin", r"input=.* is not valid"),
                         (tmp_path / "dup.jsonl", r"line 2: duplicate document id '1'")):  # the last: mid-write
        with pytest.raises(StepError, match=message):
            chunk(input=str(bad), output=str(out))
        assert snapshot(out) == before
        alone(out)


def test_index_refused_for_a_typo_in_data_keeps_the_published_index(vectors, tmp_path):
    out = tmp_path / "index"
    index(data=str(vectors), output=str(out))
    before = snapshot(out)
    with pytest.raises(StepError, match=r"index: data='.*embedings' has no embeddings\.json"):
        index(data=str(vectors.parent / "embedings"), output=str(out))
    with pytest.raises(StepError, match=r"index: kind='hnws' is not valid"):
        index(data=str(vectors), output=str(out), kind="hnws")
    assert snapshot(out) == before
    alone(out)


def test_embed_failing_midway_keeps_the_previous_embeddings(docs, vectors, tmp_path):
    out = tmp_path / "embeddings"
    shutil.copytree(vectors, out)
    before = snapshot(out)
    empty = tmp_path / "empty-chunks"
    shutil.copytree(docs, empty)
    table = pq.read_table(empty / "chunks.parquet")
    pq.write_table(table.slice(0, 0), empty / "chunks.parquet")  # a finished chunk output with no rows
    with pytest.raises(StepError, match=r"embed: data=.* holds no chunks"):
        embed(data=str(empty), output=str(out), shard_size=8)
    assert snapshot(out) == before


def test_evaluate_refuses_data_with_other_classes_and_keeps_the_previous_result(trained, data, other_classes,
                                                                                tmp_path):
    out = tmp_path / "eval"
    evaluate(model=str(trained), data=str(data), output=str(out))
    before = snapshot(out)
    with pytest.raises(StepError, match=r"^evaluate: the data's classes \(5: 0, 1, 2, 3, 4\) differ from the model's "
                                        r"\(10: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9\): its labels would be scored against the "
                                        r"wrong classes\. Fix: use data preprocessed with the model's classes\.$"):
        evaluate(model=str(trained), data=str(other_classes["fewer"]), output=str(out))
    with pytest.raises(StepError, match=r"the data's classes \(10: d0, d1, .*\) differ from the model's"):
        evaluate(model=str(trained), data=str(other_classes["renamed"]), output=str(out))
    assert snapshot(out) == before
    alone(out)


def test_batch_infer_refused_keeps_the_previous_predictions(trained, data, tmp_path):
    out = tmp_path / "predictions"
    batch_infer(model=str(trained), data=str(data), output=str(out))
    before = snapshot(out)
    with pytest.raises(StepError, match=r"split='tset' is not valid"):
        batch_infer(model=str(trained), data=str(data), output=str(out), split="tset")
    with pytest.raises(StepError, match=r"cannot be loaded safely|is not an xpuflow model"):
        batch_infer(model=str(data / "stats.json"), data=str(data), output=str(out))
    assert snapshot(out) == before
    alone(out)


def test_an_output_that_no_step_wrote_is_refused_not_replaced(trained, data, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    with pytest.raises(StepError, match=r"^evaluate: output='.*home' is a directory that is not an earlier evaluate "
                                        r"output \(it holds 1 entries but no evaluation\.json\)"):
        evaluate(model=str(trained), data=str(data), output=str(home))
    assert snapshot(home) == {"notes.txt": b"mine"}


# ---------------------------------------------------------------- kill -9 at random moments


def test_chunk_rerun_killed_at_random_moments_leaves_the_old_or_the_new_output(docs, tmp_path):
    out = tmp_path / "chunks"
    shutil.copytree(docs, out)
    old = snapshot(out)
    big = tmp_path / "big.jsonl"
    words = " ".join(f"w{i}" for i in range(400))
    big.write_text("".join(json.dumps({"id": i, "text": words}) + "\n" for i in range(6000)))
    cmd = [python("main"), "-m", "xpuflow", "step", "chunk", "--input", str(big), "--output", str(out),
           "--size", "20", "--overlap", "5"]
    # The kill moments are drawn over one whole run's duration, measured here on a scratch output, so that they
    # land before, during and after the switch on a fast machine as on a loaded one (fixed seconds did not).
    start = time.perf_counter()
    subprocess.run([*cmd[:-6], "--output", str(tmp_path / "scratch"), *cmd[-4:]], check=True, env=env(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    whole = time.perf_counter() - start
    rng = random.Random(7)
    seen = {"old": 0, "new": 0}
    for _ in range(6):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
        time.sleep(rng.uniform(0.05, 1.3) * whole)  # imports, chunking, the switch (near the end), the exit
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        table, summary = read_chunks(out, who="test")  # a reader recovers a switch cut short
        if snapshot(out) == old:
            seen["old"] += 1
        else:
            assert summary["input"] == str(big) and table.num_rows == summary["chunks"] == 6000 * 27
            seen["new"] += 1
            shutil.rmtree(out)
            shutil.copytree(docs, out)  # the old output again, for the next kill
    chunk(input=str(big), output=str(out), size=200, overlap=0)  # the next run cleans what the killed ones left
    alone(out)
    print(f"kill -9 during a chunk rerun: {seen['old']} x the old output kept, {seen['new']} x the new one whole")
    assert seen["old"] >= 1
