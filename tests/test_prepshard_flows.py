"""A flow with ``preprocess(...).with_shards(N)``, written as a user's flow file: an Indexed Job on Kubernetes
(kubernetes-validate strict), ``dsl.ParallelFor`` + join in compiled KFP, run by kfp.local and by ``Flow.run``
with the same splits as one process, and the training step downstream reading the joined output."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import kubernetes_validate
import pyarrow.parquet as pq
import pytest
import yaml

import pss
from fanout import parallel_for

from xpuflow.dsl.load import load_flow
from xpuflow.steps.preprocess import SPLITS

FLOW = '''
from xpuflow import flow
from xpuflow.steps.preprocess import preprocess
from xpuflow.steps.train import train


@flow(name="big_table")
def big_table(input_uri: str = "builtin:digits", shards: int = 3):
    """preprocess in shards -> train"""
    data = preprocess(input=input_uri, batch_rows=300).with_shards(shards)
    train(data=data.output, epochs=1, batch_size=256)
'''


@pytest.fixture()
def flow_file(tmp_path) -> Path:
    path = tmp_path / "big_table.py"
    path.write_text(textwrap.dedent(FLOW))
    return path


def xpuflow(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xpuflow", *args], capture_output=True, text=True, timeout=900)


def same_splits(out: Path, reference: Path) -> None:
    assert (out / "stats.json").read_bytes() == (reference / "stats.json").read_bytes()
    for split in SPLITS:
        assert pq.read_table(out / f"{split}.parquet").equals(pq.read_table(reference / f"{split}.parquet")), split


def test_k8s_renders_preprocess_as_an_indexed_job_that_validates(flow_file, tmp_path):
    out = tmp_path / "jobs.yaml"
    proc = xpuflow("compile", str(flow_file), "--backend", "k8s", "--cluster", "gke", "-o", str(out),
                   "--artifact-root", "s3://bucket/run-1")
    assert proc.returncode == 0, proc.stderr
    jobs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(out.read_text()) if d["kind"] == "Job"}
    for job in jobs.values():
        kubernetes_validate.validate(job, "1.33", strict=True)
        assert pss.violations(job["spec"]["template"]["spec"]) == []
    (prep,) = [j for name, j in jobs.items() if "preprocess" in name]
    (fit,) = [j for name, j in jobs.items() if "train" in name]
    spec = prep["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    assert spec["backoffLimitPerIndex"] >= 1 and "backoffLimit" not in spec  # a failed pod reruns alone
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--batch-rows") + 1] == "300"
    assert args[args.index("--shard") + 1] == "3"  # each pod reads its index from JOB_COMPLETION_INDEX
    assert "completionMode" not in fit["spec"]


def test_plan_prices_three_preprocess_pods(flow_file):
    proc = xpuflow("plan", str(flow_file), "--cluster", "gke", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["step"]: r for r in json.loads(proc.stdout)}
    assert rows["preprocess"]["pods"] == 3 and rows["train"]["pods"] == 1


def test_compiled_kfp_fans_preprocess_out_and_train_reads_the_join(flow_file, tmp_path):
    out = tmp_path / "p.yaml"
    proc = xpuflow("compile", str(flow_file), "--backend", "kfp", "--cluster", "gke", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    _, tasks = parallel_for(out, "preprocess")
    assert tasks["train"]["inputs"]["artifacts"]["data"]["taskOutputArtifact"]["producerTask"] == "join-shards"
    assert tasks["shard-list"]["inputs"]["parameters"]["count"]["componentInputParameter"] == "shards"


def test_kfp_local_runs_preprocess_in_two_shards_equal_to_one_process(flow_file, tmp_path):
    from xpuflow.steps.preprocess import preprocess

    root = tmp_path / "runs"
    proc = xpuflow("run", str(flow_file), "--root", str(root), "--param", "shards=2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    preprocess(output=str(tmp_path / "one"), batch_rows=300)
    same_splits(run / "join-shards" / "output", tmp_path / "one")
    assert (run / "train" / "output" / "model.pt").exists()  # train read the joined output


def test_flow_run_runs_preprocess_shards_in_process_equal_to_one(flow_file, tmp_path):
    flow = load_flow(f"{flow_file}:big_table")
    two = flow.run(str(tmp_path / "two"), shards=2)
    one = flow.run(str(tmp_path / "one"), shards=1)
    same_splits(Path(two["preprocess"]["output"]), Path(one["preprocess"]["output"]))
    assert Path(two["train"]["output"], "model.pt").exists()
