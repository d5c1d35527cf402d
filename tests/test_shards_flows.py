"""A task declared to run in N shards: an Indexed Job on Kubernetes (kubernetes-validate strict), a
``dsl.ParallelFor`` in compiled KFP, N pods priced by ``plan``; rag_index with ``shards`` run by kfp.local equals
the unsharded run; declarations that cannot shard are refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

import pss
from fanout import parallel_for

from xpuflow import Compute, flow
from xpuflow.dsl.step import FlowError
from xpuflow.steps.rag.chunk import chunk
from xpuflow.steps.rag.embed import embed, read_embeddings

ROOT = Path(__file__).resolve().parents[1]

FLOW = '''
from xpuflow import flow
from xpuflow.steps.rag.chunk import chunk
from xpuflow.steps.rag.embed import embed


@flow(name="big_corpus")
def big_corpus(input_uri: str = "builtin:docs"):
    """chunk -> embed in 3 shards"""
    embed(data=chunk(input=input_uri).output).with_shards(3)
'''


@pytest.fixture()
def flow_file(tmp_path) -> Path:
    path = tmp_path / "big_corpus.py"
    path.write_text(textwrap.dedent(FLOW))
    return path


def xpuflow(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xpuflow", *args], capture_output=True, text=True, timeout=600)


def test_shards_are_refused_where_a_step_cannot_take_them():
    with pytest.raises(FlowError, match=r"^task 'chunk': step 'chunk' cannot run in shards: it has no `shard: str`"):
        @flow(default_compute=Compute.cpu())
        def a():
            chunk().with_shards(2)
    for bad in (0, 10_001, "3", True):
        with pytest.raises(FlowError, match=r"task 'embed': with_shards=.* is not valid: a whole number from 1 to "
                                            r"10000") as e:
            @flow()
            def b():
                embed(data=chunk().output).with_shards(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(FlowError, match=r"with_shards\(\) and shard= both given"):
        @flow()
        def c():
            embed(data=chunk().output, shard="0/2").with_shards(2)


def test_k8s_renders_an_indexed_job_that_validates(flow_file, tmp_path):
    out = tmp_path / "jobs.yaml"
    proc = xpuflow("compile", str(flow_file), "--backend", "k8s", "--cluster", "gke", "-o", str(out),
                   "--artifact-root", "s3://bucket/run-1")
    assert proc.returncode == 0, proc.stderr
    jobs = [d for d in yaml.safe_load_all(out.read_text()) if d["kind"] == "Job"]
    chunk_job, embed_job = jobs
    for job in jobs:
        kubernetes_validate.validate(job, "1.33", strict=True)
        assert pss.violations(job["spec"]["template"]["spec"]) == []
    spec = embed_job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    assert spec["backoffLimitPerIndex"] >= 1 and "backoffLimit" not in spec  # a failed pod reruns alone
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--shard") + 1] == "3"  # each pod reads its index from JOB_COMPLETION_INDEX
    assert "completionMode" not in chunk_job["spec"] and "--shard" not in chunk_job["spec"]["template"]["spec"][
        "containers"][0]["args"]


def test_plan_shows_n_pods_and_the_price_of_all_of_them(flow_file):
    proc = xpuflow("plan", str(flow_file), "--cluster", "gke")
    assert proc.returncode == 0, proc.stderr
    assert "x 3 pods (shards, an Indexed Job)" in proc.stdout
    one = xpuflow("plan", str(flow_file), "--cluster", "gke", "-o", "json")
    rows = {r["step"]: r for r in json.loads(one.stdout)}
    assert rows["embed"]["pods"] == 3 and rows["chunk"]["pods"] == 1
    line = next(x for x in proc.stdout.splitlines() if x.strip().startswith("embed") and "min x" in x)
    price = rows["embed"]["placement"]["price_per_hour"]
    assert f"${3 * price:,.2f}/h (3 pods)" in line, line


def test_compiled_kfp_fans_out_with_parallel_for(flow_file, tmp_path):
    out = tmp_path / "p.yaml"
    proc = xpuflow("compile", str(flow_file), "--backend", "kfp", "--cluster", "gke", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    _, tasks = parallel_for(out, "embed")
    assert tasks["shard-list"]["inputs"]["parameters"]["count"]["runtimeValue"]["constant"] == 3


def test_rag_index_with_shards_runs_on_kfp_local_equal_to_one_process(tmp_path):
    runs = {}
    for shards in (1, 2):
        root = tmp_path / f"s{shards}"
        proc = subprocess.run([sys.executable, "-m", "xpuflow", "run", "rag_index", "--root", str(root), "--param",
                               f"shards={shards}"], capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        (run,) = [p for p in root.iterdir() if p.is_dir()]
        runs[shards] = run
    joined = runs[2] / "join-shards" / "output"
    ids, vectors, summary = read_embeddings(str(joined), "t")
    one = next(p for p in (runs[1] / "join-shards" / "output", runs[1] / "embed" / "output") if p.is_dir())
    ref_ids, ref, _ = read_embeddings(str(one), "t")
    assert summary["processes"] == 2 and ids == ref_ids and abs(vectors - ref).max() <= 1e-5
    record = json.loads((runs[2] / "index" / "output" / "index.json").read_text())
    assert record["recall_at_5"] >= 0.9


def test_flow_run_runs_the_shards_in_process_and_equals_one(tmp_path):
    @flow(name="sharded_here")
    def sharded_here(shards: int = 2):
        embed(data=chunk().output, shard_size=4).with_shards(shards)

    out = sharded_here.run(str(tmp_path / "two"))
    ids, vectors, summary = read_embeddings(out["embed"]["output"], "t")
    one = sharded_here.run(str(tmp_path / "one"), shards=1)
    ref_ids, ref, ref_summary = read_embeddings(one["embed"]["output"], "t")
    assert summary["processes"] == 2 and "processes" not in ref_summary
    assert ids == ref_ids and abs(vectors - ref).max() <= 1e-5 and summary["shards"] == ref_summary["shards"]
    with pytest.raises(FlowError, match=r"task 'embed': parameter shards=0 is not valid: a whole number of shards"):
        sharded_here.run(str(tmp_path / "zero"), shards=0)
