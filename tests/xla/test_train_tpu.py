"""train_tpu on torch_xla, for real, on XLA:CPU (PJRT_DEVICE=CPU), in the XLA venv."""

from __future__ import annotations

import json
import random
import re
import signal
from pathlib import Path

import pytest
import torch
from runs import interrupt, progress_of, python, run, step_cmd, weights

from xpuflow.steps.io import StepError
from xpuflow.steps.train_tpu import train_tpu

OPTS = ["--epochs", "3", "--checkpoint-every", "5", "--batch-size", "64"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Prepared by the main venv, as in a pipeline (the CPU image runs preprocess)."""
    out = tmp_path_factory.mktemp("data")
    run([python("main"), "-m", "xpuflow", "step", "preprocess", "--output", str(out)])
    return out


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    run(step_cmd("xla", "train_tpu", data, out, *OPTS))
    return out


def test_torch_xla_is_really_used_and_loss_decreases(reference):
    import torch_xla  # noqa: F401 - the venv must have it

    metrics = json.loads((reference / "metrics.json").read_text())
    assert metrics["device"] == "xla:cpu" and metrics["precision"] == "bf16" and metrics["step"] == "train_tpu"
    losses = [e["train_loss"] for e in metrics["epochs"]]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.8 * losses[0]
    assert metrics["final"]["val_accuracy"] > 0.6


def test_kill_9_resumes_to_the_same_weights(data, reference, tmp_path):
    out = tmp_path / "killed"
    at = random.Random().randint(6, 3 * (1215 // 64) - 6)
    assert interrupt(step_cmd("xla", "train_tpu", data, out, *OPTS), out, at, signal.SIGKILL) == -signal.SIGKILL
    before = progress_of(out / "checkpoints")
    run(step_cmd("xla", "train_tpu", data, out, *OPTS))
    (event,) = json.loads((out / "metrics.json").read_text())["interruptions"]
    assert event["last_step_before"] == before and 0 <= event["rpo_steps"] <= 5 and event["rto_seconds"] > 0
    for key, value in weights(reference).items():
        assert torch.equal(weights(out)[key], value), key


def test_sigterm_loses_no_steps(data, tmp_path):
    out = tmp_path / "sigterm"
    assert interrupt(step_cmd("xla", "train_tpu", data, out, *OPTS), out, 12, signal.SIGTERM) == 143
    run(step_cmd("xla", "train_tpu", data, out, *OPTS))
    (event,) = json.loads((out / "metrics.json").read_text())["interruptions"]
    assert event["rpo_steps"] == 0


def test_spmd_on_two_devices_matches_one_device(data, tmp_path):
    common = ["--epochs", "2", "--model-kwargs", '{"dropout": 0.0}', "--precision", "fp32"]
    run(step_cmd("xla", "train_tpu", data, tmp_path / "one", *common))
    run(step_cmd("xla", "train_tpu", data, tmp_path / "two", *common, "--cores", "2"))
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["devices"] == 2
    worst = max((weights(tmp_path / "one")[k] - weights(tmp_path / "two")[k]).abs().max().item()
                for k in weights(tmp_path / "one"))
    assert worst < 1e-5


def test_a_gpu_step_checkpoint_resumes_on_xla(data, tmp_path):
    """The main venv's `train` (torch 2.13) writes the checkpoint; `train_tpu` (torch 2.9 + XLA) finishes the run."""
    out = tmp_path / "handover"
    opts = ["--epochs", "2", "--checkpoint-every", "5"]
    assert interrupt(step_cmd("main", "train", data, out, *opts), out, 12, signal.SIGTERM) == 143
    run(step_cmd("xla", "train_tpu", data, out, *opts))
    metrics = json.loads((out / "metrics.json").read_text())
    (event,) = metrics["interruptions"]
    assert event["written_by"] == "train" and event["rpo_steps"] == 0
    assert metrics["step"] == "train_tpu" and metrics["steps"] == 2 * (1215 // 64)


def test_bad_options(data, tmp_path):
    with pytest.raises(StepError, match=r"precision='fp16' is not valid: auto, bf16 or fp32"):
        train_tpu(data=str(data), output=str(tmp_path), precision="fp16")
    with pytest.raises(StepError, match=r"cores=-1 is not valid"):
        train_tpu(data=str(data), output=str(tmp_path), cores=-1)


def test_another_runs_checkpoint_is_refused_or_started_over(data, tmp_path):
    """The shared loop's identity check on XLA: a checkpoint of another lr is never resumed."""
    import subprocess

    from runs import env

    out = tmp_path / "other"
    # the other run's checkpoints in a folder outside its output stay once it finished (a SIGTERM at step 12 of its
    # 18 raced with its end: a run that had left its loop was killed by the signal, -15)
    opts = ["--epochs", "1", "--checkpoint-every", "5", "--checkpoint-dir", str(tmp_path / "ckpt")]
    run(step_cmd("main", "train", data, tmp_path / "finished", *opts))
    refused = subprocess.run([*step_cmd("xla", "train_tpu", data, out, *opts), "--lr", "0.01", "--on-mismatch",
                              "refuse"], capture_output=True, text=True, env=env(), timeout=600)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    last = refused.stderr.strip().splitlines()[-1]
    assert re.search(r"train_tpu: checkpoint step \d+ in checkpoint_dir=.* is of another run \(lr: 0.01 here, "
                     r"0.001 there\)", last), last
    fresh = run([*step_cmd("xla", "train_tpu", data, out, *opts), "--lr", "0.01"])
    assert "starting fresh at step 0" in fresh.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interruptions"] == [] and metrics["steps"] == 1215 // 64
