"""The CLI on pipelines: plan with cost, lint, compile (kfp, k8s), graph; the examples that use them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pss
import yaml

ROOT = Path(__file__).resolve().parent.parent


def xpuflow(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xpuflow", *args], capture_output=True, text=True, timeout=600, **kw)


def test_plan_pipeline_shows_cost_per_run():
    proc = xpuflow("plan", "train_gpu_export_npu", "--cluster", "gke", "--minutes", "train=60")
    assert proc.returncode == 0, proc.stderr
    assert "approximate cost per run" in proc.stdout
    assert "train                    60 min x $0.27/h = $0.270" in proc.stdout


def test_lint_refuses_with_the_step_named():
    ok = xpuflow("lint", "train_gpu_export_npu", "--cluster", "gke")
    assert ok.returncode == 0 and "0 error(s)" in ok.stdout
    bad = xpuflow("lint", "train_tpu", "--cluster", "eks")
    assert bad.returncode == 1 and "error: step 'train_tpu'" in bad.stdout and "no tpu pools" in bad.stdout


def test_compile_kfp_and_k8s(tmp_path):
    kfp = xpuflow("compile", "train_tpu", "--backend", "kfp", "--cluster", "gke", "-o", str(tmp_path / "p.yaml"))
    assert kfp.returncode == 0, kfp.stderr
    docs = list(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    assert docs[0]["pipelineInfo"]["name"] == "train-tpu"
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-train-tpu"]["nodeSelector"]["labels"]["cloud.google.com/gke-tpu-topology"] == "2x4"
    k8s = xpuflow("compile", "train_gpu_export_npu", "--backend", "k8s", "--cluster", "aks", "-o",
                  str(tmp_path / "jobs.yaml"), "--artifact-root", "s3://bucket/run-7")
    assert k8s.returncode == 0, k8s.stderr
    jobs = list(yaml.safe_load_all((tmp_path / "jobs.yaml").read_text()))
    assert [j["metadata"]["labels"]["xpuflow.io/order"] for j in jobs] == ["0", "1", "2", "3"]
    for job in jobs:
        kubernetes_validate.validate(job, "1.33", strict=True)
    train = jobs[1]["spec"]["template"]["spec"]["containers"][0]
    assert train["command"] == ["xpuflow", "step", "train"]
    args = dict(zip(train["args"][::2], train["args"][1::2]))
    assert args["--data"] == "s3://bucket/run-7/preprocess" and args["--output"] == "s3://bucket/run-7/train"
    # a retried training Job resumes: its checkpoints live under the artifact root (issue 11)
    assert args["--checkpoint-dir"] == "s3://bucket/run-7/_checkpoints/train"
    # applied at once, the Jobs still run in order: each waits for its upstreams' finished outputs
    assert "initContainers" not in jobs[0]["spec"]["template"]["spec"]
    (wait,) = jobs[3]["spec"]["template"]["spec"]["initContainers"]
    assert wait["command"] == ["xpuflow", "wait", "s3://bucket/run-7/train", "s3://bucket/run-7/preprocess"]
    for job in jobs:
        assert pss.violations(job["spec"]["template"]["spec"]) == [], job["metadata"]["name"]


def test_wait_returns_once_the_outputs_are_finished(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "_COMPLETE").write_text("")
    assert xpuflow("wait", str(tmp_path / "a"), "--timeout", "5").returncode == 0
    late = xpuflow("wait", str(tmp_path / "a"), str(tmp_path / "b"), "--timeout", "0.3", "--poll", "0.1")
    assert late.returncode == 2 and "b: no _COMPLETE marker after 0.3 s" in late.stderr
    assert len(late.stderr.strip().splitlines()) == 1
    bad = xpuflow("wait", str(tmp_path / "a"), "--poll", "0")
    assert bad.returncode == 2 and "--poll=0.0 is not valid" in bad.stderr


def test_compile_refuses_a_multi_host_slice_for_kfp(tmp_path):
    pipeline = tmp_path / "big_tpu.py"
    source = (ROOT / "pipelines" / "train_tpu.py").read_text()
    assert "train_on_tpu(data=data, epochs=epochs, seed=seed)" in source
    pipeline.write_text(source.replace(
        "train_on_tpu(data=data, epochs=epochs, seed=seed)",
        "train_on_tpu(data=data, epochs=epochs, seed=seed).with_compute(Compute.tpu(version='v5e', topology='4x4'))"
    ).replace("from xpuflow import flow", "from xpuflow import Compute, flow"))
    proc = xpuflow("compile", str(pipeline), "--backend", "kfp", "--cluster", "gke", "-o", str(tmp_path / "o.yaml"))
    assert proc.returncode == 2 and "multi_host" in proc.stderr and "JobSet" in proc.stderr
    assert not (tmp_path / "o.yaml").exists()


def test_graph(tmp_path):
    proc = xpuflow("graph", "train_gpu_export_npu", "--cluster", "gke", "-o", str(tmp_path / "g.svg"))
    assert proc.returncode == 0, proc.stderr
    svg = (tmp_path / "g.svg").read_text()
    assert "<svg" in svg and "#74c476" in svg.lower()  # the GPU colour is there
    bad = xpuflow("graph", "train_tpu", "-o", str(tmp_path / "g.pdf"))
    assert bad.returncode == 2 and ".svg or .png" in bad.stderr


def test_unknown_pipeline_names_the_known_ones():
    proc = xpuflow("plan", "train_gpu", "--cluster", "gke")
    assert proc.returncode == 2 and "train_gpu_export_npu" in proc.stderr


def test_mlops_example_compiles_for_a_custom_eks_cluster(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(ROOT / "examples" / "compile_for_eks.sh"), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    docs = list(yaml.safe_load_all((tmp_path / "pipeline.yaml").read_text()))
    train = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert train["nodeSelector"]["labels"] == {"karpenter.sh/nodepool": "g5-train",
                                               "karpenter.k8s.aws/instance-gpu-name": "a10g"}
    # train prefers spot and falls back to on-demand: a required term allowing both, a preferred one for spot
    capacity = {"key": "karpenter.sh/capacity-type", "operator": "In"}
    assert train["nodeAffinity"] == [
        {"matchExpressions": [{**capacity, "values": ["spot", "on-demand"]}]},
        {"matchExpressions": [{**capacity, "values": ["spot"]}], "weight": 100},
        {"matchExpressions": [{**capacity, "values": ["on-demand"]}], "weight": 50},
    ]


def test_data_scientist_example_runs_locally_and_compiles(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "my_pipeline.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    compiled = yaml.safe_load_all((tmp_path / "my_pipeline.yaml").read_text())
    pipeline = next(compiled)
    accel = pipeline["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]["accelerator"]
    assert accel["resourceType"] == "nvidia.com/gpu"
    assert list((tmp_path / "runs").glob("*/train/output/model.pt"))


def test_compile_airflow_writes_a_dag_file_for_the_cluster(tmp_path):
    out = tmp_path / "dag_eks.py"
    proc = xpuflow("compile", "train_gpu_export_npu", "--backend", "airflow", "--cluster", "eks", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert f"build_dag('{ROOT / 'pipelines' / 'train_gpu_export_npu.py'}:train_gpu_export_npu', cluster='eks')" in text
    compile(text, str(out), "exec")  # valid Python; tests/airflow parse the real DAGs with DagBag
    refused = xpuflow("compile", "train_tpu", "--backend", "airflow", "--cluster", "eks", "-o", str(tmp_path / "t.py"))
    assert refused.returncode == 2 and "no tpu pools" in refused.stderr and not (tmp_path / "t.py").exists()
