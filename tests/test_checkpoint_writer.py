"""The checkpoint writer process: what lands equals what was submitted, and it fails loudly, never silently.

Its failures, one by one: the process killed between writes (the write is done by the training
process and a thread takes over, in one WARNING line); its parent killed with kill -9 (it dies
too, as a writer thread would); SIGTERM/SIGINT sent to the whole process group (it keeps
writing: the final checkpoint a SIGTERM asks for must land); a write it cannot do (one line
naming the directory); a bad XPUFLOW_CHECKPOINT_WRITER (one line). A state holding numpy
scalars or IntEnums crosses to it as their plain values.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from runs import read_checkpoint
from xpuflow.steps.checkpoint import Checkpointer
from xpuflow.steps.checkpoint_async import BackgroundSaver, writer_process
from xpuflow.steps.io import StepError
from xpuflow.steps.train import train


def child_of(writer) -> int:
    return writer._proc.pid


def ignoring(pid: int, *signals: int) -> bool:
    """Whether ``pid`` ignores those signals yet (its SigIgn mask)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            mask = int(line.split()[1], 16)
            return all(mask >> (s - 1) & 1 for s in signals)
    return False


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1][0] not in "ZX"  # a zombie is gone, only not yet reaped
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_each_writer_writes_the_state_as_it_was_at_submit(tmp_path, monkeypatch, kind):
    monkeypatch.setenv("XPUFLOW_CHECKPOINT_WRITER", kind)
    weights, history = torch.zeros(1000), []
    with writer_process(str(tmp_path), "train") as writer:
        assert (writer is not None) == (kind == "process")
        saver = BackgroundSaver(Checkpointer(tmp_path, {"seed": 0}), writer)
        try:
            for step in range(1, 6):
                weights.fill_(step)
                history.append(step)
                big = torch.arange(step * 4000)  # the layout changes: the shared buffer grows, the writer maps it again
                saver.submit(step, {"step": step, "w": weights, "history": history, "big": big})
                weights.fill_(-1)  # training goes on at once
                history.append(-1)
                history.pop()
            saver.wait()
        finally:
            saver.close()
        assert saver.writer == kind and len(saver.write_seconds) == 5
    assert Checkpointer(tmp_path).steps() == [5, 4, 3]
    for step in (5, 4, 3):
        state = read_checkpoint(tmp_path, step)
        assert torch.equal(state["w"], torch.full((1000,), float(step)))
        assert state["history"] == list(range(1, step + 1)) and torch.equal(state["big"], torch.arange(step * 4000))


def test_numpy_scalars_and_enums_cross_to_the_writer_as_their_plain_values(tmp_path):
    class Phase(enum.IntEnum):
        WARMUP = 2

    state = {"loss": np.float64(0.25), "phase": Phase.WARMUP, "w": torch.ones(3)}
    with writer_process(str(tmp_path), "train") as writer:
        saver = BackgroundSaver(Checkpointer(tmp_path, {"seed": 0}), writer)
        saver.submit(1, state)
        saver.close()
    back = read_checkpoint(tmp_path, 1)
    assert back["loss"] == 0.25 and type(back["loss"]) is float and back["phase"] == 2 and type(back["phase"]) is int
    assert torch.equal(back["w"], torch.ones(3))


def test_a_killed_writer_process_loses_no_checkpoint_and_says_so(tmp_path, caplog):
    with writer_process(str(tmp_path), "train") as writer:
        saver = BackgroundSaver(Checkpointer(tmp_path, {"seed": 0}), writer)
        saver.submit(1, {"w": torch.ones(10)})
        saver.wait()
        os.kill(child_of(writer), signal.SIGKILL)  # the OOM killer, an operator's kill
        time.sleep(0.2)
        with caplog.at_level(logging.WARNING, logger="xpuflow.checkpoint"):
            saver.submit(2, {"w": torch.full((10,), 2.0)})
            saver.submit(3, {"w": torch.full((10,), 3.0)})  # and the next: a thread writes it
            saver.close()
    assert saver.writer == "thread"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "killed by signal 9" in warnings[0], warnings
    assert "checkpoints are written by a thread from now on" in warnings[0]
    for step in (1, 2, 3):
        assert torch.equal(read_checkpoint(tmp_path, step)["w"], torch.full((10,), float(step)))


def test_a_writer_killed_while_writing_is_answered_by_a_write_here(tmp_path, caplog):
    """Killed between the request and its answer: the training process writes that checkpoint itself."""
    with writer_process(str(tmp_path), "train") as writer:
        saver = BackgroundSaver(Checkpointer(tmp_path, {"seed": 0}), writer)
        os.kill(child_of(writer), signal.SIGSTOP)  # it cannot answer
        saver.submit(1, {"w": torch.full((10,), 7.0)})
        os.kill(child_of(writer), signal.SIGKILL)
        with caplog.at_level(logging.WARNING, logger="xpuflow.checkpoint"):
            saver.wait()
        saver.close()
    assert torch.equal(read_checkpoint(tmp_path, 1)["w"], torch.full((10,), 7.0))
    assert any("killed by signal 9" in r.getMessage() for r in caplog.records)


def test_sigterm_and_sigint_to_the_group_leave_the_writer_writing(tmp_path):
    """Airflow and a terminal signal the whole process group; the final checkpoint must still land."""
    with writer_process(str(tmp_path), "train") as writer:
        saver = BackgroundSaver(Checkpointer(tmp_path, {"seed": 0}), writer)
        deadline = time.time() + 10  # as soon as its interpreter runs (a signal before that kills it: said loudly)
        while not ignoring(child_of(writer), signal.SIGTERM, signal.SIGINT) and time.time() < deadline:
            time.sleep(0.005)
        for sig in (signal.SIGTERM, signal.SIGINT):
            os.kill(child_of(writer), sig)
        time.sleep(0.2)
        saver.submit(1, {"w": torch.ones(4)})
        saver.close()
        assert saver.writer == "process"
    assert torch.equal(read_checkpoint(tmp_path, 1)["w"], torch.ones(4))


def test_the_writer_dies_with_a_killed_training_process(tmp_path):
    """kill -9 of the training process ends the write in flight, as it did on a thread: no orphan writes on."""
    script = textwrap.dedent(f"""
        import sys, time, torch
        from xpuflow.steps.checkpoint import Checkpointer
        from xpuflow.steps.checkpoint_async import BackgroundSaver, writer_process
        with writer_process({str(tmp_path)!r}, "train") as writer:
            saver = BackgroundSaver(Checkpointer({str(tmp_path)!r}, {{"seed": 0}}), writer)
            saver.submit(1, {{"w": torch.ones(3)}})
            saver.wait()
            print(writer._proc.pid, flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    assert alive(child)
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.time() + 10
    while alive(child) and time.time() < deadline:
        time.sleep(0.05)
    assert not alive(child), "the writer process outlived the training process"
    proc.stdout.close()


@pytest.mark.parametrize("written_before", [0, 1])
def test_a_write_the_writer_cannot_do_is_one_line(tmp_path, written_before):
    """The folder replaced by a file before the writer's first write (it opens the folder then), or after one."""
    folder = tmp_path / "ckpt"
    with writer_process(str(folder), "train") as writer:
        saver = BackgroundSaver(Checkpointer(folder, {"seed": 0}), writer)
        for step in range(1, written_before + 1):
            saver.submit(step, {"w": torch.ones(3)})
            saver.wait()
        shutil.rmtree(folder)
        folder.write_text("a file where the directory was")
        saver.submit(written_before + 1, {"w": torch.ones(3)})
        with pytest.raises(StepError) as caught:
            saver.wait()
        saver.close()
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message and message.count("Fix:") == 1, message
    expected = (f"train: checkpoint_dir='{folder}' is not writable: File exists. Fix: pass a writable --checkpoint-dir"
                if not written_before else f"train: writing checkpoint step 2 to checkpoint_dir='{folder}' failed: "
                "File exists. Fix: check the space and permissions there, or pass another --checkpoint-dir.")
    assert message.startswith(expected), message
    assert saver.writer == "process"  # a failed write is not a dead writer


def test_a_bad_writer_setting_is_one_line(data, tmp_path, monkeypatch):
    monkeypatch.setenv("XPUFLOW_CHECKPOINT_WRITER", "fork")
    with pytest.raises(StepError, match=r"^train: XPUFLOW_CHECKPOINT_WRITER='fork' is not valid: process or thread\. "
                                        r"Fix: set one of those, or unset it\.$"):
        train(data=str(data), output=str(tmp_path / "model"), epochs=1, device="cpu")
    assert not (tmp_path / "model").exists()


def test_train_writes_through_the_process_and_records_which_writer(data, tmp_path, monkeypatch):
    metrics = train(data=str(data), output=str(tmp_path / "a"), epochs=2, checkpoint_every=5, device="cpu")
    assert metrics["checkpoint_writer"] == "process" and metrics["checkpoint_save_seconds_max"] is not None
    monkeypatch.setenv("XPUFLOW_CHECKPOINT_WRITER", "thread")
    threaded = train(data=str(data), output=str(tmp_path / "b"), epochs=2, checkpoint_every=5, device="cpu")
    assert threaded["checkpoint_writer"] == "thread"
    monkeypatch.delenv("XPUFLOW_CHECKPOINT_WRITER")
    remote = train(data=str(data), output=str(tmp_path / "c"), epochs=2, checkpoint_every=5, device="cpu",
                   checkpoint_dir="memory://xpuflow-test/writer")
    assert remote["checkpoint_writer"] == "thread"  # object storage: uploads from this process
    for name in ("a", "b", "c"):  # the same training, whoever wrote the checkpoints
        assert json.loads((tmp_path / name / "metrics.json").read_text())["final"] == metrics["final"]
