"""Run a training step as a subprocess, stop it at a step, read its outputs (shared by several test files)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
VENVS = {"main": ROOT / ".venv" / "bin" / "python", "xla": ROOT / ".venv-xla" / "bin" / "python"}


def python(venv: str) -> str:
    path = VENVS[venv]
    if not path.exists():
        import pytest

        pytest.fail(f"{path} is missing: run `make test` (it builds the {venv} venv)")
    return str(path)


def env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "XPUFLOW_", "WORLD_SIZE", "RANK"))}
    return {**clean, "PYTHONUNBUFFERED": "1", "PJRT_DEVICE": "CPU", **extra}


def step_cmd(venv: str, step: str, data: Path, out: Path, *options: str) -> list[str]:
    return [python(venv), "-m", "xpuflow", "step", step, "--data", str(data), "--output", str(out), *options]


def run(cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def progress_of(folder: Path) -> int:
    """The last step a run in progress marked in ``folder``'s progress.log: one 64-bit integer, native byte order
    (0 before the first)."""
    path = folder / "progress.log"
    data = path.read_bytes() if path.exists() else b""
    return int.from_bytes(data, sys.byteorder) if len(data) == 8 else 0


def interrupt(cmd: list[str], out: Path, at_step: int, sig: int) -> int:
    """Start ``cmd``, wait until it has done ``at_step`` steps, send ``sig``; return its exit code."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env())
    deadline = time.time() + 300
    while progress_of(out / "checkpoints") < at_step:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "training did not reach the step in time"
        time.sleep(0.001)  # the signal must land before the run leaves its loop: look often
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc.returncode


def read_checkpoint(folder: Path, step: int) -> dict:
    """Checkpoint ``step`` in ``folder``, checked (checksum, its step) and unpacked."""
    from xpuflow.steps.checkpoint import decode_header
    from xpuflow.steps.checkpoint_flat import unpack

    header, payload = decode_header((folder / f"ckpt-{step:08d}.pt").read_bytes())
    assert header["step"] == step
    return unpack(payload)


def weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "model.pt", weights_only=True)["state_dict"]


def kill_when(proc: subprocess.Popen, ready: Any, what: str, timeout: float = 120) -> None:
    """``kill -9`` ``proc`` as soon as ``ready()`` holds (polled every 2 ms); fails if it ends first or times out."""
    import signal

    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else proc.returncode
        assert time.time() < deadline, f"{what} did not happen in time"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
