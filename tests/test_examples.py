"""The examples run as a user would run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from xpuflow import Cluster, Compute

ROOT = Path(__file__).resolve().parent.parent


def test_compute_per_hardware_example_runs_on_every_cluster():
    for cluster in ("gke", "eks", "aks", "generic", str(ROOT / "examples" / "my-cluster.yaml")):
        proc = subprocess.run([sys.executable, str(ROOT / "examples" / "compute_per_hardware.py"), cluster],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "== train (GPU, spot)" in proc.stdout


def test_custom_cluster_example_places_by_purpose():
    lab = Cluster.load(ROOT / "examples" / "my-cluster.yaml")
    assert lab.place(Compute.gpu(model="l4", purpose="inference")).pool == "l4-inference"
    train = lab.place(Compute.gpu(count=8, model="a100-80gb"))
    assert train.pool == "a100-training" and train.tolerations == ()
    cpu = lab.place(Compute.cpu())
    expr = cpu.affinity.to_dict()["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert expr["matchExpressions"][0]["values"] == ["a100-training"]  # the untainted GPU pool


def test_my_project_example_runs_its_own_step_beside_xpuflows(tmp_path):
    """examples/my_project: xpuflow's steps and the user's own model_card in one flow, run with kfp.local (the
    flow file's folder reaches the tasks' path, as a package installed in an image would)."""
    proc = subprocess.run([sys.executable, "-m", "xpuflow", "run", str(ROOT / "examples" / "my_project" / "my_flow.py"),
                           "--param", "epochs=3", "--param", "owner=vision", "--cluster", "eks", "--root", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (card,) = tmp_path.glob("*/model-card/card/MODEL_CARD.md")
    assert "owner: vision" in card.read_text() and "after 3 epochs" in card.read_text()
    assert "gpu-a100-training" in proc.stdout  # train's with_compute(A100) placed on EKS
