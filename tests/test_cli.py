"""The xpuflow CLI: plan and catalog, run as a user would (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def xpuflow(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xpuflow", *args], capture_output=True, text=True)


def test_plan_table_shows_placement_and_price():
    proc = xpuflow("plan", "--cluster", "gke")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for text in ("step", "node selector", "tolerations", "instance type", "gpu-l4-training",
                 "cloud.google.com/gke-accelerator=nvidia-l4", "nvidia.com/gpu=present:NoSchedule",
                 "g2-standard-8", "0.27", "ct5lp-hightpu-8t", "google.com/tpu: 8", "runner-up"):
        assert text in out, text
    assert "! validate_on_device: cluster 'gke'" in out  # no NPU pools on GKE: said, not hidden


def test_plan_with_steps_file_and_json(tmp_path):
    steps = tmp_path / "steps.yaml"
    steps.write_text(textwrap.dedent("""\
        steps:
          prep: {kind: cpu, cpu: "1", memory: 2Gi}
          infer: {kind: npu, device: aws-inferentia2}
          train: {kind: gpu, count: 8, model: h100-80gb}
        """))
    proc = xpuflow("plan", "--cluster", "eks", "--steps", str(steps), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["step"]: r for r in json.loads(proc.stdout)}
    assert rows["infer"]["placement"]["resources"]["limits"]["aws.amazon.com/neuron"] == "1"
    assert rows["train"]["placement"]["instance_type"] == "p5.48xlarge"
    assert rows["train"]["placement"]["price_per_hour"] == 55.04


def test_plan_strict_fails_when_a_step_cannot_be_placed():
    assert xpuflow("plan", "--cluster", "aks", "--strict").returncode == 1


def test_errors_are_one_clear_line(tmp_path):
    bad = tmp_path / "steps.yaml"
    bad.write_text("steps:\n  train: {kind: gpu, model: l40}\n")
    proc = xpuflow("plan", "--cluster", "eks", "--steps", str(bad))
    assert proc.returncode == 2
    assert "steps.train: Compute.gpu: model='l40' is not valid" in proc.stderr and "Did you mean 'l40s'?" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = xpuflow("plan", "--cluster", "gcp")
    assert proc.returncode == 2 and "cluster='gcp'" in proc.stderr


def test_catalog():
    proc = xpuflow("catalog")
    assert proc.returncode == 0
    assert "a100-40gb" in proc.stdout and "1g.5gb" in proc.stdout and "4x4:4x4" in proc.stdout
    assert "npu.intel.com/accel" in proc.stdout
    proc = xpuflow("catalog", "--cluster", "aks")
    # what one node gives to a step: capacity less the AKS reservations and the DaemonSets
    assert "allocatable=3410m cpu, 22498Mi memory" in proc.stdout  # gput4: NC4as_T4_v3
    assert "gpua100" in proc.stdout and "nvidia.com/gpu" in proc.stdout


def test_no_command_prints_help():
    proc = xpuflow()
    assert proc.returncode == 2 and "plan" in proc.stdout and "catalog" in proc.stdout
    assert "xpuflow run my_project/flows.py" in proc.stdout  # a user's own flow file, not only the examples
    assert "xpuflow step my_project.steps:clean" in proc.stdout
