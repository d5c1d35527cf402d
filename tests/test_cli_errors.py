"""CLI bad input: one line on stderr, exit 2, no traceback, and a previous output left as it was."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

UNWRITABLE = "/sys/xpuflow-cli-test.yaml"  # sysfs refuses new files, even to root


def xpuflow(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xpuflow", *args], capture_output=True, text=True, cwd=cwd)


def one_line_error(proc: subprocess.CompletedProcess, pattern: str) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


COMPILE = ("compile", "train_gpu_export_npu", "--backend", "k8s", "--cluster", "gke", "-o")


def test_compile_into_a_directory_is_refused(tmp_path):
    one_line_error(xpuflow(*COMPILE, str(tmp_path)), rf"^xpuflow compile: error: -o '{tmp_path}' is a directory: give a file path")
    assert list(tmp_path.iterdir()) == []


def test_compile_under_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("keep\n")
    one_line_error(xpuflow(*COMPILE, str(tmp_path / "file" / "out.yaml")), r"'.*/file' is a file, not a folder")
    assert (tmp_path / "file").read_text() == "keep\n"


def test_compile_to_an_unwritable_place_is_one_line():
    one_line_error(xpuflow(*COMPILE, UNWRITABLE), rf"-o '{UNWRITABLE}': cannot write it: Permission denied")


def test_a_refused_compile_keeps_the_previous_output(tmp_path):
    out = tmp_path / "manifests.yaml"
    assert xpuflow(*COMPILE, str(out)).returncode == 0
    before = out.read_bytes()
    one_line_error(xpuflow("compile", "train_gpu_export_npu", "--backend", "k8s", "--cluster", "nope", "-o", str(out)),
                   r"cluster='nope'")
    assert out.read_bytes() == before


def test_graph_into_a_directory_is_refused(tmp_path):
    one_line_error(xpuflow("graph", "train_gpu_export_npu", "-o", str(tmp_path)), r"^xpuflow graph: error: -o .* is a directory")


def test_kueue_into_a_directory_is_refused(tmp_path):
    one_line_error(xpuflow("kueue", "--cluster", "gke", "-o", str(tmp_path) + "/"), r"^xpuflow kueue: error: -o .* is a directory")


@pytest.mark.parametrize(("minutes", "pattern"), [
    ("train=abc", r"--minutes 'train=abc' is not valid: minutes from 0 to 525600"),
    ("train=-5", r"--minutes 'train=-5' is not valid: minutes from 0"),
    ("train=nan", r"--minutes 'train=nan' is not valid"),
    ("train=inf", r"--minutes 'train=inf' is not valid"),
    ("train=1e9", r"--minutes 'train=1e9' is not valid"),
    ("trian=5", r"STEP one of preprocess, train, .*Did you mean 'train'\?"),
    ("train", r"--minutes 'train' is not valid: STEP=MINUTES"),
])
def test_plan_minutes_are_checked(minutes, pattern):
    one_line_error(xpuflow("plan", "train_gpu_export_npu", "--cluster", "gke", "--minutes", minutes), pattern)


def test_plan_minutes_within_bounds_give_a_cost():
    proc = xpuflow("plan", "train_gpu_export_npu", "--cluster", "gke", "--minutes", "train=0", "--minutes", "export=90")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"train +0 min x \$[0-9.]+/h = \$0\.000", proc.stdout), proc.stdout
    assert re.search(r"export +90 min x", proc.stdout) and "-$" not in proc.stdout and "$-" not in proc.stdout


def test_a_steps_file_that_is_a_fifo_is_refused_without_waiting(tmp_path):
    import os

    fifo = tmp_path / "steps.yaml"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "xpuflow", "plan", "--cluster", "gke", "--steps", str(fifo)],
                          capture_output=True, text=True, timeout=60)  # used to wait for a writer forever
    one_line_error(proc, r"steps file '.*steps\.yaml': is not a regular file")


def test_a_step_written_twice_in_a_steps_file_is_refused(tmp_path):
    steps = tmp_path / "steps.yaml"
    steps.write_text("steps:\n  train: {kind: gpu, count: 1}\n  train: {kind: cpu}\n")
    one_line_error(xpuflow("plan", "--cluster", "gke", "--steps", str(steps)),
                   r"steps\.yaml: line 3: key 'train' appears twice in one mapping")


def test_a_steps_file_with_a_yaml_error_is_one_line(tmp_path):
    steps = tmp_path / "steps.yaml"
    steps.write_text("steps:\n  train: {kind: gpu, token: s3cr3t\n")
    line = one_line_error(xpuflow("plan", "--cluster", "gke", "--steps", str(steps)), r"not valid YAML at line \d+")
    assert "s3cr3t" not in line
