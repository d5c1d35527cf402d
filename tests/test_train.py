"""train: real PyTorch on the CPU. Preemption (kill -9, SIGTERM), resume, DDP, guards."""

from __future__ import annotations

import json
import random
import signal
import sys
from pathlib import Path

import pytest
import torch

from runs import interrupt, progress_of, run, step_cmd, weights

from xpuflow.steps.checkpoint import Checkpointer
from xpuflow.steps.io import StepError
from xpuflow.steps.models import load_model
from xpuflow.steps.runtime import pick_device

EPOCHS = 4
COMMON = ["--epochs", str(EPOCHS), "--checkpoint-every", "7", "--deterministic", "true", "--batch-size", "32"]


def train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return step_cmd("main", "train", data, out, *COMMON, *extra)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    run(train_cmd(data, out))
    return out


def test_uninterrupted_run_learns_and_reports(reference):
    metrics = json.loads((reference / "metrics.json").read_text())
    losses = [e["train_loss"] for e in metrics["epochs"]]
    assert len(losses) == EPOCHS and losses[-1] < losses[0] * 0.5
    assert metrics["final"]["val_accuracy"] > 0.85
    assert metrics["device"] == "cpu" and metrics["precision"] == "fp32"
    assert metrics["samples_per_second"] > 0 and metrics["checkpoint_fits_gke_spot_window"] is True
    assert (reference / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model, meta = load_model(reference / "model.pt")
    assert meta["classes"] == [str(i) for i in range(10)] and meta["input_shape"] == [1, 64]
    assert len(meta["normalisation"]["mean"]) == 64 and meta["trained_on"]["device"] == "cpu"


def test_kill_9_at_a_random_step_resumes_bit_identical(data, reference, tmp_path):
    out = tmp_path / "killed"
    total = EPOCHS * (1215 // 32)
    # from step 15 on a checkpoint is complete: the second one (step 14) waited for the first one's write; earlier,
    # the first write may still be in flight and the rerun rightly starts over (no resume to check here)
    at = random.Random().randint(2 * 7 + 1, total - 10)
    assert interrupt(train_cmd(data, out), out, at, signal.SIGKILL) == -signal.SIGKILL
    before = progress_of(out / "checkpoints")
    run(train_cmd(data, out))
    mine, ref = weights(out), weights(reference)
    assert mine.keys() == ref.keys()
    for key in ref:
        assert torch.equal(mine[key], ref[key]), f"{key} differs after kill -9 at step {at}"
    metrics = json.loads((out / "metrics.json").read_text())
    (event,) = metrics["interruptions"]
    assert event["last_step_before"] == before
    assert event["rpo_steps"] == before - event["resumed_from_step"]
    # the write of the newest checkpoint may be in flight (asynchronous saves); the one before it is complete
    assert 0 <= event["rpo_steps"] < 2 * 7  # --checkpoint-every 7
    assert event["rto_seconds"] is not None and event["rto_seconds"] > 0
    print(f"kill -9 at step {before}: RPO {event['rpo_steps']} steps, RTO {event['rto_seconds']} s")


def test_sigterm_loses_no_steps(data, reference, tmp_path):
    out = tmp_path / "sigterm"
    assert interrupt(train_cmd(data, out), out, 40, signal.SIGTERM) == 143
    run(train_cmd(data, out))
    metrics = json.loads((out / "metrics.json").read_text())
    (event,) = metrics["interruptions"]
    assert event["rpo_steps"] == 0
    assert metrics["checkpoint_save_seconds_max"] < 15  # GKE Spot's shutdown window for pods
    for key, value in weights(reference).items():
        assert torch.equal(weights(out)[key], value)


def test_truncated_newest_checkpoint_falls_back_to_the_previous(data, reference, tmp_path):
    out = tmp_path / "corrupt"
    interrupt(train_cmd(data, out), out, 60, signal.SIGKILL)
    ckpt = Checkpointer(out / "checkpoints")
    newest, previous = ckpt.steps()[:2]
    path = out / "checkpoints" / f"ckpt-{newest:08d}.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    proc = run(train_cmd(data, out))
    assert "is damaged" in proc.stderr
    assert json.loads((out / "metrics.json").read_text())["interruptions"][0]["resumed_from_step"] == previous
    for key, value in weights(reference).items():
        assert torch.equal(weights(out)[key], value)


def test_object_storage_checkpoints_need_their_completion_marker():
    ckpt = Checkpointer("memory://xpuflow-test/run1")
    ckpt.save(10, {"step": 10, "w": torch.ones(2)})
    ckpt.save(20, {"step": 20, "w": torch.ones(2) * 2})
    assert ckpt.steps() == [20, 10]
    # a half-finished upload: the file is there, its marker is not
    ckpt.fs.pipe_file(f"{ckpt.root}/ckpt-00000030.pt", b"partial")
    assert ckpt.steps() == [20, 10]
    step, state = ckpt.latest()
    assert step == 20 and torch.equal(state["w"], torch.ones(2) * 2)


def test_ddp_two_processes_match_one_process(data, tmp_path):
    """2 gloo processes on the CPU vs 1 process, same global batch. Tolerance: 1e-5 absolute on weights.

    Dropout is off: each rank draws its own dropout masks, so with dropout the runs agree only statistically.
    """
    extra = ["--model-kwargs", '{"dropout": 0.0}', "--epochs", "2"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run(train_cmd(data, single, *extra))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
                "-m", "xpuflow", *train_cmd(data, ddp, *extra)[3:]]
    run(torchrun)
    assert json.loads((ddp / "metrics.json").read_text())["world_size"] == 2
    worst = max((weights(single)[k] - weights(ddp)[k]).abs().max().item() for k in weights(single))
    print(f"DDP vs single process: max |weight difference| = {worst:.2e}")
    assert worst < 1e-5


def test_gpu_node_without_a_gpu_fails_at_once(monkeypatch):
    if torch.cuda.is_available():
        pytest.fail("this check needs a machine without CUDA")  # never skip: the rule must be exercised
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("XPUFLOW_COMPUTE_KIND", "gpu")
    monkeypatch.setenv("XPUFLOW_NODE_POOL", "gpu-l4-training")
    monkeypatch.setenv("NODE_NAME", "gke-node-7")
    with pytest.raises(StepError, match=r"no GPU is visible on node gke-node-7, pod .*, node pool gpu-l4-training"):
        pick_device("auto", 0)
    monkeypatch.setenv("XPUFLOW_COMPUTE_KIND", "cpu")
    assert pick_device("auto", 0).type == "cpu"  # a CPU placement may run on the CPU


def test_local_cpu_fallback_warns(caplog):
    with caplog.at_level("WARNING"):
        assert pick_device("auto", 0).type == "cpu"
    assert "no GPU visible, training on the CPU" in caplog.text


def test_bad_options_are_refused(data, tmp_path):
    from xpuflow.steps.train import train

    with pytest.raises(StepError, match=r"epochs=0"):
        train(data=str(data), output=str(tmp_path), epochs=0)
    with pytest.raises(StepError, match=r"model='nope' is not valid"):
        train(data=str(data), output=str(tmp_path), model="nope")
    with pytest.raises(StepError, match=r"no stats.json"):
        train(data=str(tmp_path), output=str(tmp_path / "m"))
    with pytest.raises(StepError, match=r"precision='fp16' needs a GPU"):
        train(data=str(data), output=str(tmp_path / "m"), precision="fp16")


def test_bf16_autocast_and_torch_compile_run_on_the_cpu(data, tmp_path):
    from xpuflow.steps.train import train

    bf16 = train(data=str(data), output=str(tmp_path / "bf16"), epochs=1, precision="bf16", batch_size=32)
    assert bf16["precision"] == "bf16" and bf16["final"]["val_accuracy"] > 0.5
    compiled = train(data=str(data), output=str(tmp_path / "compiled"), epochs=1, compile=True, batch_size=32)
    assert compiled["compiled"] is True and compiled["final"]["val_accuracy"] > 0.5
    model, _ = load_model(tmp_path / "compiled" / "model.pt")  # the saved weights are the plain module's
    assert not any(k.startswith("_orig_mod") for k in model.state_dict())


def test_a_sweeps_numpy_integers_train_as_their_ints_and_a_fractional_seed_is_one_line(data, tmp_path):
    """``for seed in np.arange(3)``: numpy integers are whole numbers (were refused, or failed deep in the loop)."""
    import numpy as np

    from xpuflow.steps.train import train

    common = {"data": str(data), "device": "cpu", "lr": np.float64(1e-3)}
    ints = train(output=str(tmp_path / "ints"), seed=1, epochs=1, batch_size=64, checkpoint_every=5, **common)
    numpy = train(output=str(tmp_path / "numpy"), seed=np.int64(1), epochs=np.int32(1), batch_size=np.int64(64),
                  checkpoint_every=np.int64(5), **common)
    assert numpy["final"] == ints["final"] and numpy["steps"] == ints["steps"]
    for key, value in weights(tmp_path / "ints").items():
        assert torch.equal(weights(tmp_path / "numpy")[key], value), key
    with pytest.raises(StepError, match=r"^train: seed=1\.5 is not valid: a whole number\.$"):
        train(output=str(tmp_path / "bad"), seed=1.5, epochs=1, **common)
    assert not (tmp_path / "bad").exists()
