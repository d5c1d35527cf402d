"""train: a checkpoint is resumed only by its own run, and only when intact; asynchronous writes.

Each case reruns the step into a checkpoint directory written by another run (other data,
seed, lr, epochs, architecture, feature count), or one with a flipped bit, or one it cannot
write, and checks what the user sees and what is kept.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from runs import env, interrupt, progress_of, run, step_cmd, weights

from xpuflow.steps.checkpoint import Checkpointer, decode_header
from xpuflow.steps.io import StepError
from xpuflow.steps.train import train

FAST = dict(epochs=1, batch_size=32, checkpoint_every=5, device="cpu", deterministic=True)  # 37 steps, 3 kept


def ckpt_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name.startswith("ckpt-")}


@pytest.fixture(scope="module")
def other_data(tmp_path_factory) -> Path:
    """The digits again, split with another seed: other training rows."""
    from xpuflow.steps.preprocess import preprocess

    out = tmp_path_factory.mktemp("digits-seed1")
    preprocess(output=str(out), seed=1)
    return out


@pytest.fixture(scope="module")
def narrow_data(tmp_path_factory) -> Path:
    """A user's CSV with 8 features and 3 classes."""
    from xpuflow.steps.preprocess import preprocess

    folder = tmp_path_factory.mktemp("narrow")
    rng = random.Random(3)
    rows = ["label," + ",".join(f"f{i}" for i in range(8))]
    rows += [f"{i % 3}," + ",".join(f"{rng.gauss(i % 3, 1):.4f}" for _ in range(8)) for i in range(600)]
    (folder / "rows.csv").write_text("\n".join(rows) + "\n")
    preprocess(input=str(folder / "rows.csv"), output=str(folder / "data"))
    return folder / "data"


def fit(folder: Path, data: Path, **options) -> dict:
    """``train`` into ``folder/model``, its checkpoints in ``folder/ckpt`` (kept after the run)."""
    return train(data=str(data), output=str(folder / "model"), checkpoint_dir=str(folder / "ckpt"),
                 **{**FAST, **options})


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory) -> Path:
    """A finished run's folder: model/ and the checkpoints ckpt/ (steps 35, 30, 25)."""
    folder = tmp_path_factory.mktemp("finished")
    fit(folder, data)
    assert Checkpointer(folder / "ckpt").steps() == [35, 30, 25]
    return folder


def rerun_on(finished: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "rerun"
    shutil.copytree(finished, folder)
    return folder


def one_line(caplog, text: str) -> str:
    lines = [r.getMessage() for r in caplog.records if text in r.getMessage()]
    assert len(lines) == 1, lines
    assert "\n" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("change, field", [
    ({"seed": 1}, "seed: 1 here, 0 there"),
    ({"lr": 0.01}, "lr: 0.01 here, 0.001 there"),
    ({"batch_size": 16}, "batch_size: 16 here, 32 there"),
    ({"model_kwargs": '{"hidden": 32}'}, "model_kwargs:"),
])
def test_other_options_start_fresh_in_one_line(data, finished, tmp_path, caplog, change, field):
    out = rerun_on(finished, tmp_path)
    with caplog.at_level("WARNING"):
        metrics = fit(out, data, **change)
    line = one_line(caplog, "is of another run")
    assert field in line and "starting fresh at step 0" in line and "--on-mismatch refuse" in line
    assert metrics["interruptions"] == []  # not resumed
    assert metrics["steps"] == 1215 // metrics["batch_size"]


def test_other_data_is_not_resumed(other_data, finished, tmp_path, caplog):
    out = rerun_on(finished, tmp_path)
    with caplog.at_level("WARNING"):
        metrics = fit(out, other_data)
    assert "data: " in one_line(caplog, "is of another run")
    assert metrics["interruptions"] == []
    fresh = fit(tmp_path / "fresh", other_data)
    assert metrics["final"] == fresh["final"]  # the same as a run that never saw those checkpoints


def test_other_feature_count_is_refused_in_one_line_not_a_size_mismatch(narrow_data, finished, tmp_path):
    out = rerun_on(finished, tmp_path)
    before = ckpt_files(out / "ckpt")
    proc = subprocess.run([*step_cmd("main", "train", narrow_data, out / "model"), "--epochs", "1",
                           "--checkpoint-dir", str(out / "ckpt"), "--on-mismatch", "refuse"],
                          capture_output=True, text=True, env=env(), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "features: 8 here, 64 there" in last and "--on-mismatch fresh" in last
    assert "Traceback" not in proc.stderr and "size mismatch" not in proc.stderr
    assert ckpt_files(out / "ckpt") == before  # refused: nothing touched
    assert (out / "model" / "model.pt").read_bytes() == (finished / "model" / "model.pt").read_bytes()


def test_a_user_architecture_changed_under_the_same_name_is_not_resumed(data, tmp_path, caplog, monkeypatch):
    """A user's factory (a package outside xpuflow) changes its layer widths between two runs."""
    package = tmp_path / "pkg"
    package.mkdir()
    source = ("import torch.nn as nn\n"
              "def net(input_dim, num_classes):\n"
              "    return nn.Sequential(nn.Linear(input_dim, {w}), nn.ReLU(), nn.Linear({w}, num_classes))\n")
    (package / "usermodels.py").write_text(source.format(w=16))
    monkeypatch.syspath_prepend(str(package))
    out = tmp_path / "run"
    fit(out, data, model="usermodels:net")
    (package / "usermodels.py").write_text(source.format(w=24))
    sys.modules.pop("usermodels", None)
    with caplog.at_level("WARNING"):
        metrics = fit(out, data, model="usermodels:net")
    assert "architecture: " in one_line(caplog, "is of another run")
    assert metrics["interruptions"] == []


def test_refuse_leaves_the_checkpoints_and_says_how_to_go_on(data, finished, tmp_path):
    out = rerun_on(finished, tmp_path)
    before = ckpt_files(out / "ckpt")
    with pytest.raises(StepError, match=r"lr: 0.5 here, 0.001 there.*Fix: pass another --checkpoint-dir"):
        fit(out, data, lr=0.5, on_mismatch="refuse")
    assert ckpt_files(out / "ckpt") == before
    assert (out / "model" / "model.pt").read_bytes() == (finished / "model" / "model.pt").read_bytes()
    with pytest.raises(StepError, match=r"on_mismatch='later' is not valid: fresh .* or refuse"):
        fit(out, data, on_mismatch="later")


def test_epochs_of_the_rerun_are_honoured(data, tmp_path):
    fit(tmp_path, data, epochs=3)  # checkpoints up to step 110
    metrics = fit(tmp_path, data, epochs=1)
    assert len(metrics["epochs"]) == 1 and metrics["steps"] == 37 and metrics["interruptions"] == []


def test_same_run_still_resumes(data, finished, tmp_path, caplog):
    out = rerun_on(finished, tmp_path)
    with caplog.at_level("INFO"):
        metrics = fit(out, data)
    assert metrics["interruptions"][0]["resumed_from_step"] == 35
    assert not [r for r in caplog.records if "another run" in r.getMessage()]
    assert torch.equal(weights(out / "model")["0.weight"], weights(finished / "model")["0.weight"])


def _flip_a_bit_in_tensor_data(path: Path) -> None:
    """Flip one bit in the middle of the largest tensor's bytes (not the header, not the state line)."""
    blob = bytearray(path.read_bytes())
    header, payload = decode_header(bytes(blob))
    state_line = bytes(payload).split(b"\n", 1)[0]
    data_at = len(blob) - len(payload) + len(state_line) + 1
    dtype, shape, offset = max(json.loads(state_line)["tensors"], key=lambda t: math.prod(t[1]))
    blob[data_at + offset + math.prod(shape) * getattr(torch, dtype).itemsize // 2] ^= 0x10
    path.write_bytes(bytes(blob))


def test_a_flipped_bit_in_tensor_data_falls_back_to_the_previous_checkpoint(data, finished, tmp_path, caplog):
    out = rerun_on(finished, tmp_path)
    _flip_a_bit_in_tensor_data(out / "ckpt" / "ckpt-00000035.pt")
    with caplog.at_level("WARNING"):
        metrics = fit(out, data)
    line = one_line(caplog, "is damaged")
    assert "ckpt-00000035.pt" in line and "checksum" in line and "falling back to the previous one" in line
    assert metrics["interruptions"][0]["resumed_from_step"] == 30
    for key, value in weights(finished / "model").items():  # resumed from a good checkpoint: the same result
        assert torch.equal(weights(out / "model")[key], value), key


def test_a_read_only_checkpoint_dir_is_one_line(data, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    cmd = step_cmd("main", "train", data, tmp_path / "out", "--epochs", "1", "--checkpoint-dir", str(locked))
    proc = subprocess.run(unprivileged(cmd), capture_output=True, text=True, env=env(), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "OSError" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert f"checkpoint_dir='{locked}' is not writable: Permission denied. Fix: pass a writable" in last
    assert not (tmp_path / "out" / "model.pt").exists()


def _kill_during_a_write(cmd: list[str], folder: Path, at_step: int) -> bool:
    """Start ``cmd``; past ``at_step``, kill -9 as soon as a checkpoint is being written. Was one in flight?"""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env())
    deadline = time.time() + 300
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "no checkpoint write was seen in time"
        if progress_of(folder) >= at_step and any(n.endswith(".tmp") for n in os.listdir(folder)):
            proc.kill()
            break
        time.sleep(0.0002)  # a write spans milliseconds; leave the CPU to the run
    proc.wait(timeout=60)
    proc.stderr.close()
    return any(n.endswith(".tmp") for n in os.listdir(folder))


def test_kill_9_while_a_background_write_is_in_flight_resumes_bit_identical(data, tmp_path):
    """Killed repeatedly mid-write (a checkpoint every step: a write is nearly always in flight)."""
    common = ["--epochs", "1", "--batch-size", "32", "--deterministic", "true", "--model-kwargs", '{"hidden": 256}']
    reference, out, folder = tmp_path / "reference", tmp_path / "killed", tmp_path / "ckpt"
    run(step_cmd("main", "train", data, reference, *common, "--checkpoint-every", "1000"))
    cmd = step_cmd("main", "train", data, out, *common, "--checkpoint-every", "1", "--checkpoint-dir", str(folder))
    mid_write, kills = 0, sorted(random.Random().sample(range(3, 34), 3))  # random steps of the 37
    for at in kills:
        mid_write += _kill_during_a_write(cmd, folder, at)
        for name in os.listdir(folder):
            if name.startswith("ckpt-"):
                decode_header((folder / name).read_bytes())  # every complete checkpoint is intact
    assert mid_write >= 1, "no kill landed while a write was in flight"
    proc = run(cmd)
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]  # a killed writer's leftovers removed
    metrics = json.loads((out / "metrics.json").read_text())
    # a resume is recorded in the checkpoints that follow it: a run killed before its first completed write
    # leaves no record (nor any loss: the next run resumes where that one did)
    assert 1 <= len(metrics["interruptions"]) <= len(kills) and "damaged" not in proc.stderr
    for key, value in weights(reference).items():
        assert torch.equal(weights(out)[key], value), key
    print(f"kills at steps >= {kills}, {mid_write} mid-write; RPO (steps):",
          [i["rpo_steps"] for i in metrics["interruptions"]])


def unprivileged(cmd: list[str]) -> list[str]:
    """``cmd`` as it runs for a user whom file modes bind (root ignores them unless it drops the capability)."""
    if os.geteuid() == 0:
        return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--", *cmd]
    return cmd


def test_a_failed_background_write_is_one_line(data, tmp_path):
    """The checkpoint directory turns read-only under the run: a background write fails, the step says so."""
    out, ckpt_dir = tmp_path / "run", tmp_path / "ckpt"
    cmd = [*step_cmd("main", "train", data, out), "--epochs", "3", "--checkpoint-every", "1",
           "--checkpoint-dir", str(ckpt_dir)]
    proc = subprocess.Popen(unprivileged(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env(), text=True)
    deadline = time.time() + 300
    while progress_of(ckpt_dir) < 3:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.002)
    ckpt_dir.chmod(0o555)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert "failed: Permission denied. Fix: check the space and permissions" in last, last
    assert not (out / "model.pt").exists()


def test_a_stopped_rerun_leaves_the_previous_model_as_it_was(data, finished, tmp_path):
    """SIGTERM (exit 143, checkpoint saved) during a rerun with other options: the published files stay."""


    out = rerun_on(finished, tmp_path)
    before = {p.name: p.read_bytes() for p in (out / "model").iterdir()}
    cmd = [*step_cmd("main", "train", data, out / "model"), "--epochs", "2", "--lr", "0.002"]
    assert interrupt(cmd, out / "model", 20, signal.SIGTERM) == 143
    assert {p.name: p.read_bytes() for p in (out / "model").iterdir() if p.is_file()} == before
    run(cmd)  # the rerun then finishes and replaces the output whole
    assert json.loads((out / "model" / "metrics.json").read_text())["interruptions"][0]["rpo_steps"] == 0
    assert not (out / "model" / "checkpoints").exists() and sorted(p.name for p in out.iterdir()) == ["ckpt", "model"]


def test_object_store_checkpoints_are_checked_the_same_way():
    url = "memory://xpuflow-test/identity"
    ckpt = Checkpointer(url, {"seed": 0})
    ckpt.save(10, {"step": 10, "w": torch.ones(2)})
    ckpt.save(20, {"step": 20, "w": torch.ones(2) * 2})
    newest = f"{ckpt.root}/ckpt-00000020.pt"
    blob = bytearray(ckpt.fs.cat_file(newest))
    blob[len(blob) // 2] ^= 1
    ckpt.fs.pipe_file(newest, bytes(blob))
    step, state = ckpt.latest()
    assert step == 10 and torch.equal(state["w"], torch.ones(2))
    ckpt.fs.pipe_file(f"{ckpt.root}/ckpt-00000030.pt", b"partial")  # an upload killed before its marker
    other = Checkpointer(url, {"seed": 1})  # a writer removes it
    assert not ckpt.fs.exists(f"{ckpt.root}/ckpt-00000030.pt")
    with pytest.raises(StepError, match=r"checkpoint step 10 .* is of another run \(seed: 1 here, 0 there\)"):
        other.latest(on_mismatch="refuse")  # the damaged step 20 is skipped first, as for this run
    assert other.steps() == [20, 10]
    assert other.latest(on_mismatch="fresh") is None and other.steps() == []


@pytest.mark.parametrize("damage", [b"\x00\xffnot a step\n", b"1\n2\n3\n4\n", b"\xff" * 8],
                         ids=["garbage", "an older version's lines of digits (8 bytes)", "a negative number"])
def test_a_damaged_progress_log_does_not_stop_a_resume(data, tmp_path, damage):
    """progress.log only feeds the RPO a resume reports: unreadable, it counts from the checkpoint."""
    out = tmp_path / "model"
    cmd = [*step_cmd("main", "train", data, out), "--epochs", "2", "--checkpoint-every", "5"]
    assert interrupt(cmd, out, 12, signal.SIGTERM) == 143
    log = out / "checkpoints" / "progress.log"
    assert progress_of(log.parent) >= 12 and len(log.read_bytes()) == 8  # one integer, kept by mapping
    log.write_bytes(damage)
    proc = run(cmd)
    assert "Traceback" not in proc.stderr
    event = json.loads((out / "metrics.json").read_text())["interruptions"][0]
    assert event["rpo_steps"] == 0 and event["resumed_from_step"] >= 12


def test_a_run_moves_between_fp32_and_bf16_and_the_bf16_steps_autocast(data, tmp_path):
    """Precision is not part of a run's identity: checkpoints of an fp32 run resume in bf16 and back; the steps after
    the resume run in the new precision (bf16 autocasts; fp32 enters no autocast) and an fp32 resume stays
    bit-identical to the run that never stopped."""
    common = dict(data=str(data), **FAST)
    runs = {}
    for first, then in (("fp32", "bf16"), ("bf16", "fp32"), ("fp32", "fp32")):
        name = f"{first}-{then}"
        folder = tmp_path / f"{name}-ckpt"
        whole = train(output=str(tmp_path / f"{name}-whole"), precision=first, checkpoint_dir=str(folder), **common)
        resumed = train(output=str(tmp_path / name), precision=then, checkpoint_dir=str(folder), **common)
        assert resumed["precision"] == then and resumed["interruptions"][0]["resumed_from_step"] == 35, resumed
        runs[name] = (weights(tmp_path / f"{name}-whole"), weights(tmp_path / name), whole)
    fp32_whole, fp32_resumed, _ = runs["fp32-fp32"]
    assert all(torch.equal(fp32_resumed[k], v) for k, v in fp32_whole.items())
    assert any(not torch.equal(runs["fp32-bf16"][1][k], v) for k, v in fp32_resumed.items())  # 2 steps in bf16
    bf16_whole, bf16_then_fp32, bf16_metrics = runs["bf16-fp32"]
    assert bf16_metrics["precision"] == "bf16" and any(not torch.equal(bf16_whole[k], v) for k, v in fp32_whole.items())
    assert any(not torch.equal(bf16_then_fp32[k], v) for k, v in bf16_whole.items())  # 2 steps in fp32


def test_an_fp32_or_bf16_runs_checkpoints_resume_in_fp16_with_a_fresh_grad_scaler(data, tmp_path):
    """A GPU of any model may be a T4 at the retry, where precision auto picks fp16: its grad scaler refused the
    empty scaler state an fp32 or bf16 run saves (a RuntimeError traceback at every retry). fp16 needs a GPU
    through train(); the CPU runtime set to fp16 (CPU autocast and GradScaler run it) stands in for one here."""
    import dataclasses

    from xpuflow.steps.loop import check_options, fit
    from xpuflow.steps.models import DEFAULT_ARCH
    from xpuflow.steps.runtime import setup

    for first in ("fp32", "bf16"):
        folder = tmp_path / f"{first}-ckpt"
        train(data=str(data), output=str(tmp_path / first), precision=first, checkpoint_dir=str(folder), **FAST)
        options = check_options("train", data=str(data), output=str(tmp_path / f"{first}-fp16"), epochs=1,
                                batch_size=32, lr=1e-3, weight_decay=0.0, seed=0, model=DEFAULT_ARCH, model_kwargs="{}",
                                checkpoint_dir=str(folder), checkpoint_every=5, compile=False, num_workers=0)
        metrics = fit(dataclasses.replace(setup("cpu", "fp32", True, 0), precision="fp16"), options)
        assert metrics["precision"] == "fp16" and metrics["interruptions"][0]["resumed_from_step"] == 35, metrics
