"""`xpuflow plan` and `xpuflow lint` show a step's Kueue queue and DRA claims; lint warns on a claim the profile
cannot serve and refuses claims on KFP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from xpuflow import Cluster, Compute
from xpuflow.commands.pipelines import resolve_flow
from xpuflow.lint import lint

ROOT = Path(__file__).resolve().parent.parent


def _plan(tmp_path: Path, cluster: str, steps: dict, *extra: str) -> subprocess.CompletedProcess:
    path = tmp_path / "steps.yaml"
    path.write_text(yaml.safe_dump({"steps": steps}))
    return subprocess.run([sys.executable, "-m", "xpuflow.cli", "plan", "--cluster", cluster, "--steps", str(path), *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_plan_shows_the_queue(tmp_path):
    steps = {"train": {"kind": "tpu", "version": "v5e", "topology": "4x4", "queue": "team-a", "priority": "high"}}
    table = _plan(tmp_path, "gke", steps)
    assert table.returncode == 0, table.stderr
    assert "queue team-a, priority high, required topology cloud.google.com/gke-nodepool (multi-pod)" in table.stdout
    (row,) = json.loads(_plan(tmp_path, "gke", steps, "-o", "json").stdout)
    assert row["placement"]["kueue"]["queue"] == "team-a"
    assert row["placement"]["kueue"]["topology"] == ["required", "cloud.google.com/gke-nodepool"]


def test_plan_shows_the_claims_instead_of_the_extended_resource(tmp_path):
    table = _plan(tmp_path, "generic", {"train": {"kind": "gpu", "model": "l4", "count": 2, "claim": True}})
    assert table.returncode == 0, table.stderr
    assert "claim gpu: 2x gpu.nvidia.com [l4]" in table.stdout
    assert "nvidia.com/gpu: 2" not in table.stdout
    plain = _plan(tmp_path, "generic", {"train": {"kind": "gpu", "model": "l4", "count": 2}})
    assert "nvidia.com/gpu: 2" in plain.stdout and "claim" not in plain.stdout


def test_plan_names_a_claim_the_cluster_cannot_serve(tmp_path):
    table = _plan(tmp_path, "gke", {"train": {"kind": "gpu", "model": "l4", "spot": True, "claim": True}}, "--strict")
    assert table.returncode == 1
    assert "! train: cluster 'gke'" in table.stdout and "no DeviceClass for GPUs of vendor 'nvidia'" in table.stdout


def _flow(**computes: Compute):
    return resolve_flow("train_gpu_export_npu").with_compute(**computes)


def test_lint_warns_when_a_claimed_class_is_missing_and_checks_the_rest():
    findings = lint(_flow(train=Compute.gpu(model="l4", spot=True, claim=True)), Cluster.load("gke"), "k8s")
    train = [f for f in findings if f.step == "train"]
    (warning,) = [f for f in train if "claimed device class is missing" in f.message]
    assert warning.level == "warning" and "cluster 'gke'" in warning.message
    assert not [f for f in findings if f.level == "error"]


def test_lint_shows_queue_and_claims_and_refuses_claims_on_kfp():
    generic = Cluster.load("generic")
    k8s = lint(_flow(train=Compute.gpu(model="l4", claim=True, memory="24Gi")), generic, "k8s")
    assert [(f.level, f.message) for f in k8s if f.step == "train"] == [("info", "claim gpu: 1x gpu.nvidia.com [l4]")]
    kfp = lint(_flow(train=Compute.gpu(model="l4", claim=True, memory="24Gi")), generic, "kfp")
    (error,) = [f for f in kfp if f.level == "error"]
    assert error.step == "train" and "kfp-kubernetes (2.17) has no DRA support" in error.message


def test_lint_counts_the_tolerations_a_flavor_injects():
    findings = lint(_flow(train=Compute.gpu(model="l4", spot=True, queue="team-a", memory="24Gi")), Cluster.load("gke"))
    assert [(f.level, f.message) for f in findings if f.step == "train"] == [
        ("info", "queue team-a, preferred topology cloud.google.com/gke-nodepool (multi-pod)")]


def test_catalog_shows_what_the_profile_offers_for_kueue_and_dra():
    def catalog(cluster: str) -> str:
        done = subprocess.run([sys.executable, "-m", "xpuflow.cli", "catalog", "--cluster", cluster],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    gke, generic, aks = catalog("gke"), catalog("generic"), catalog("aks")
    assert "kueue: queues team-a, team-b (namespace ml, ClusterQueue ml-batch); priorities high (10000)" in gke
    assert "dra: gpu nvidia -> DeviceClass gpu.nvidia.com (MIG: mig.nvidia.com)" in generic and "dra:" not in gke
    assert "kueue:" not in aks and "dra:" not in aks
