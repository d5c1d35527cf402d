"""The TPU step seen from the main venv: its model and checkpoints work here, and without torch_xla it says so."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from runs import interrupt, python, run, step_cmd

from xpuflow.steps.models import load_model
from xpuflow.steps.preprocess import read_split


@pytest.fixture(scope="module")
def tpu_model(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tpu-model")
    run(step_cmd("xla", "train_tpu", data, out, "--epochs", "4"))
    return out


def test_a_model_trained_on_xla_loads_and_predicts_here(tpu_model, data):
    model, meta = load_model(tpu_model / "model.pt")
    assert meta["trained_on"] == {"device": "xla:cpu", "precision": "bf16", "world_size": 1, "step": "train_tpu"}
    x, y, _ = read_split(data, "test")
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
    reported = json.loads((tpu_model / "metrics.json").read_text())["final"]["val_accuracy"]
    assert accuracy > 0.7 and abs(accuracy - reported) < 0.1
    assert np.isfinite([p.abs().sum().item() for p in model.parameters()]).all()


def test_a_tpu_step_checkpoint_resumes_in_the_gpu_step(data, tmp_path):
    out = tmp_path / "handover"
    opts = ["--epochs", "2", "--checkpoint-every", "5"]
    assert interrupt(step_cmd("xla", "train_tpu", data, out, *opts), out, 12, signal.SIGTERM) == 143
    run(step_cmd("main", "train", data, out, *opts))
    metrics = json.loads((out / "metrics.json").read_text())
    (event,) = metrics["interruptions"]
    assert event["written_by"] == "train_tpu" and event["rpo_steps"] == 0 and metrics["step"] == "train"


def test_without_torch_xla_the_step_says_so_and_records_the_device(data, tmp_path, caplog):
    from xpuflow.steps.train_tpu import train_tpu, xla_available

    assert not xla_available()  # the main venv has torch 2.13, which torch_xla 2.9 does not load against
    with caplog.at_level(logging.WARNING, logger="xpuflow.train_tpu"):
        metrics = train_tpu(data=str(data), output=str(tmp_path / "m"), epochs=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "xpuflow.train_tpu"]
    assert lines == ["train_tpu: torch_xla is not installed; training with plain PyTorch on cpu"]
    assert metrics["device"] == "cpu" and metrics["step"] == "train_tpu"
    assert python("xla")  # and the XLA venv exists for the real runs above
