"""The checkpoint writer process under hostile conditions: nothing hangs, nothing is lost silently.

A writer stopped (SIGSTOP, a debugger attached to it) is killed once seen stopped (at a write
or at the end) and its write is done by the training process (one WARNING), instead of a
training run waiting forever; a forked process that inherited the request socket (a DataLoader
worker) does not keep the writer alive past close; a dead writer does not SIGPIPE a process
that takes that signal. The writer starts where stdin/stdout are closed, where the working
directory holds a types.py, and falls back to a thread where no interpreter can be found. A
state that holds itself, or a sparse/quantized/meta tensor, is refused in one line; a
progress.log that cannot be opened costs no run; a sweep's numpy lr crosses to the writer as a
number; runs from a runner's thread, one after another, leave no writer or descriptor behind.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from runs import progress_of, read_checkpoint
from xpuflow.steps.checkpoint import Checkpointer, decode_header
from xpuflow.steps.checkpoint_async import BackgroundSaver, writer_process
from xpuflow.steps.io import StepError
from xpuflow.steps.train import train


def within(seconds: float, action, rescue) -> float:
    """Run ``action`` on a thread; fail (after ``rescue()`` unblocks it) if it takes longer than ``seconds``."""
    failure: list[BaseException] = []
    thread = threading.Thread(target=lambda: _catch(action, failure))
    start = time.perf_counter()
    thread.start()
    thread.join(seconds)
    took = time.perf_counter() - start
    if thread.is_alive():
        rescue()
        thread.join()
        raise AssertionError(f"still blocked after {seconds} s")
    if failure:
        raise failure[0]
    return took


def _catch(action, failure: list[BaseException]) -> None:
    try:
        action()
    except BaseException as e:
        failure.append(e)


def test_a_stopped_writer_is_killed_and_its_write_done_here_not_waited_for_forever(tmp_path, caplog):
    with writer_process(str(tmp_path), "train") as writer:
        saver = BackgroundSaver(Checkpointer(tmp_path, {"seed": 0}), writer)
        saver.submit(1, {"w": torch.ones(10)})
        saver.wait()
        child = writer._proc.pid
        os.kill(child, signal.SIGSTOP)  # kill -STOP by an operator, a debugger attached to it
        with caplog.at_level(logging.WARNING, logger="xpuflow.checkpoint"):
            saver.submit(2, {"w": torch.full((10,), 2.0)})
            within(20, saver.wait, lambda: os.kill(child, signal.SIGCONT))
            saver.submit(3, {"w": torch.full((10,), 3.0)})
            saver.close()
    assert saver.writer == "thread"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "was stopped (SIGSTOP)" in warnings[0] and "\n" not in warnings[0], warnings
    for step in (1, 2, 3):
        assert torch.equal(read_checkpoint(tmp_path, step)["w"], torch.full((10,), float(step)))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_stopped_writer_does_not_block_a_large_request(tmp_path, caplog):
    """The non-tensor part of a state beyond a pipe's 64 KiB: sending it to a stopped writer must not block."""
    history = [float(i) for i in range(50_000)]  # a loss curve kept in the state
    with writer_process(str(tmp_path), "train") as writer:
        saver = BackgroundSaver(Checkpointer(tmp_path, {"seed": 0}), writer)
        saver.submit(1, {"history": history[:10]})
        saver.wait()
        child = writer._proc.pid
        os.kill(child, signal.SIGSTOP)
        with caplog.at_level(logging.WARNING, logger="xpuflow.checkpoint"):
            within(20, lambda: (saver.submit(2, {"history": history}), saver.wait()),
                   lambda: os.kill(child, signal.SIGCONT))
        saver.close()
    assert read_checkpoint(tmp_path, 2)["history"] == history


def test_a_dataloader_worker_holding_the_pipe_does_not_hold_the_writer_past_close(tmp_path):
    """Forked workers inherit every descriptor: the writer must not wait for them to see the end of its requests."""
    from torch.utils.data import DataLoader

    manager = writer_process(str(tmp_path), "train")
    writer = manager.__enter__()
    proc = writer._proc
    saver = BackgroundSaver(Checkpointer(tmp_path, {"seed": 0}), writer)
    loader = iter(DataLoader(list(range(64)), batch_size=1, num_workers=1,
                             multiprocessing_context="fork"))  # a user's loader, still alive
    try:
        next(loader)
        saver.submit(1, {"w": torch.ones(3)})
        saver.close()
        took = within(30, lambda: manager.__exit__(None, None, None), lambda: None)
    finally:
        del loader
    assert took < 10, f"close took {took:.1f} s"
    assert proc.returncode == 0  # it exited when asked, not killed after a timeout
    assert torch.equal(read_checkpoint(tmp_path, 1)["w"], torch.ones(3))


def nested(depth: int) -> list:
    tree: list = []
    for _ in range(depth):
        tree = [tree]
    return tree


def looped() -> dict:
    state: dict = {"lr": 0.1}
    state["self"] = state  # a user's extra state that refers to itself
    return state


@pytest.mark.parametrize("kind", ["process", "thread"])
@pytest.mark.parametrize("state", [{"tree": nested(5000)}, {"model": looped()}], ids=["deep", "cycle"])
def test_a_state_nested_too_deep_or_holding_itself_is_refused_in_one_line(tmp_path, monkeypatch, kind, state):
    monkeypatch.setenv("XPUFLOW_CHECKPOINT_WRITER", kind)
    with writer_process(str(tmp_path), "train") as writer:
        saver = BackgroundSaver(Checkpointer(tmp_path, {"seed": 0}), writer)
        saver.submit(1, {"w": torch.ones(2)})
        with pytest.raises(StepError) as caught:
            saver.submit(2, state)
        saver.submit(3, {"w": torch.ones(2)})  # the writer is still usable
        saver.close()
    message = str(caught.value)
    assert "\n" not in message and message.startswith("train: checkpoint step 2 cannot be written: "), message
    assert "nested too deeply" in message and message.count("Fix:") == 1, message
    assert Checkpointer(tmp_path).steps() == [3, 1]


def test_a_training_process_started_with_stdin_and_stdout_closed_still_writes_through_the_writer(tmp_path):
    """A daemon started with ``<&- >&-``: the shared memory's descriptor must not take a number (0-2) that the
    child's standard streams reuse."""
    script = textwrap.dedent(f"""
        import os, sys, torch
        os.close(0)
        os.close(1)
        from xpuflow.steps.checkpoint import Checkpointer
        from xpuflow.steps.checkpoint_async import BackgroundSaver, writer_process
        with writer_process({str(tmp_path)!r}, "train") as writer:
            saver = BackgroundSaver(Checkpointer({str(tmp_path)!r}, {{"seed": 0}}), writer)
            saver.submit(1, {{"w": torch.full((5,), 4.0)}})
            saver.close()
        print(saver.writer, file=sys.stderr)
    """)
    done = subprocess.run([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.split()[-1] == "process", done.stderr[-2000:]
    assert torch.equal(read_checkpoint(tmp_path, 1)["w"], torch.full((5,), 4.0))


def test_a_writer_stopped_at_the_end_does_not_hold_the_step_a_minute(tmp_path):
    manager = writer_process(str(tmp_path), "train")
    writer = manager.__enter__()
    proc = writer._proc
    saver = BackgroundSaver(Checkpointer(tmp_path, {"seed": 0}), writer)
    saver.submit(1, {"w": torch.ones(3)})
    saver.close()
    os.kill(proc.pid, signal.SIGSTOP)
    took = within(90, lambda: manager.__exit__(None, None, None), lambda: None)
    assert took < 10, f"close took {took:.1f} s"
    assert proc.returncode == -signal.SIGKILL
    assert torch.equal(read_checkpoint(tmp_path, 1)["w"], torch.ones(3))


def test_a_users_module_named_like_the_standard_library_in_the_working_directory_is_not_imported(
        tmp_path, monkeypatch, caplog):
    """``python -c`` puts the working directory first on sys.path: a project's own types.py must not reach
    the writer."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("json", "types", "struct", "tempfile", "hashlib"):
        (project / f"{name}.py").write_text("raise SystemExit('the user module was imported by the writer')\n")
    monkeypatch.chdir(project)
    folder = tmp_path / "ckpt"
    with caplog.at_level(logging.WARNING, logger="xpuflow.checkpoint"):
        with writer_process(str(folder), "train") as writer:
            saver = BackgroundSaver(Checkpointer(folder, {"seed": 0}), writer)
            saver.submit(1, {"w": torch.ones(3)})
            saver.close()
    assert saver.writer == "process" and not caplog.records, [r.getMessage() for r in caplog.records]
    assert torch.equal(read_checkpoint(folder, 1)["w"], torch.ones(3))


@pytest.mark.parametrize("damage", ["a directory", "a dangling link"])
def test_a_progress_log_that_cannot_be_opened_does_not_stop_the_training(data, tmp_path, caplog, damage):
    """progress.log only feeds the RPO a resume reports: one it cannot open is replaced, or skipped with a WARNING."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    log = folder / "progress.log"
    if damage == "a directory":
        (log / "inside").mkdir(parents=True)
    else:
        log.symlink_to(tmp_path / "gone" / "progress.log")
    with caplog.at_level(logging.WARNING):
        metrics = train(data=str(data), output=str(tmp_path / "model"), epochs=1, checkpoint_every=5, device="cpu",
                        checkpoint_dir=str(folder))
    assert (tmp_path / "model" / "model.pt").exists() and metrics["checkpoint_writer"] == "process"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if damage == "a directory":
        assert len(warnings) == 1 and "progress.log" in warnings[0] and "\n" not in warnings[0], warnings
    else:
        assert not warnings and progress_of(folder) == metrics["steps"], warnings


@pytest.mark.parametrize("executable", [None, "", "/nonexistent/python3", "frozen"])
def test_an_embedding_process_without_a_usable_interpreter_writes_on_a_thread(tmp_path, monkeypatch, caplog,
                                                                               executable):
    """sys.executable is None or empty where Python cannot find its own executable (an embedding application);
    in a frozen application (PyInstaller) it is the application itself, which must not be started again."""
    if executable == "frozen":
        monkeypatch.setattr(sys, "frozen", True, raising=False)
    else:
        monkeypatch.setattr(sys, "executable", executable)
    with caplog.at_level(logging.WARNING, logger="xpuflow.checkpoint"):
        with writer_process(str(tmp_path), "train") as writer:
            saver = BackgroundSaver(Checkpointer(tmp_path, {"seed": 0}), writer)
            saver.submit(1, {"w": torch.ones(3)})
            saver.close()
    assert writer is None and saver.writer == "thread"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "could not start" in warnings[0] and "\n" not in warnings[0], warnings
    assert torch.equal(read_checkpoint(tmp_path, 1)["w"], torch.ones(3))


def test_a_dead_writer_does_not_kill_a_process_that_takes_sigpipe(tmp_path):
    """CLIs restore SIGPIPE (to end quietly under ``| head``) and embedders never ignore it: writing to a dead
    writer must fail with an error the saver handles, not end the training process without a word."""
    script = textwrap.dedent(f"""
        import logging, os, signal, sys, time, torch
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        from xpuflow.steps.checkpoint import Checkpointer
        from xpuflow.steps.checkpoint_async import BackgroundSaver, writer_process
        with writer_process({str(tmp_path)!r}, "train") as writer:
            saver = BackgroundSaver(Checkpointer({str(tmp_path)!r}, {{"seed": 0}}), writer)
            saver.submit(1, {{"w": torch.ones(3)}})
            saver.wait()
            os.kill(writer._proc.pid, signal.SIGKILL)
            writer._proc.wait()
            saver.submit(2, {{"w": torch.full((3,), 2.0)}})
            saver.close()
        print(saver.writer, file=sys.stderr)
    """)
    done = subprocess.run([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stderr.split()[-1] == "thread" and "killed by signal 9" in done.stderr, done.stderr[-2000:]
    for step in (1, 2):
        assert torch.equal(read_checkpoint(tmp_path, step)["w"], torch.full((3,), float(step)))


def test_numpy_hyperparameters_of_a_sweep_are_recorded_as_numbers_by_either_writer(data, tmp_path, monkeypatch):
    """``for lr in np.logspace(...)``: the run's identity crosses to the writer process as plain numbers (marshal
    wrote a numpy float as its raw bytes, and the writer then failed every checkpoint)."""
    runs = {}
    for kind in ("process", "thread"):
        monkeypatch.setenv("XPUFLOW_CHECKPOINT_WRITER", kind)
        runs[kind] = train(data=str(data), output=str(tmp_path / kind), epochs=1, checkpoint_every=5, device="cpu",
                           lr=np.logspace(-3, -2, 2)[0], checkpoint_dir=str(tmp_path / f"{kind}-ckpt"))
        assert runs[kind]["checkpoint_writer"] == kind
        header, _ = decode_header(next((tmp_path / f"{kind}-ckpt").glob("ckpt-*.pt")).read_bytes())
        assert header["identity"]["lr"] == 0.001
    plain = train(data=str(data), output=str(tmp_path / "plain"), epochs=1, checkpoint_every=5, device="cpu",
                  lr=0.001)
    assert runs["process"]["final"] == runs["thread"]["final"] == plain["final"]


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
@pytest.mark.parametrize("make, kind", [
    (lambda: torch.eye(3).to_sparse(), "sparse_coo"),  # a graph model's adjacency buffer
    (lambda: torch.empty(3, device="meta"), "meta"),
    (lambda: torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.qint8), "quantized"),
], ids=["sparse", "meta", "quantized"])
def test_a_tensor_without_dense_data_is_refused_in_one_line_naming_where(tmp_path, make, kind):
    tensor = make()
    with writer_process(str(tmp_path), "train") as writer:
        saver = BackgroundSaver(Checkpointer(tmp_path, {"seed": 0}), writer)
        saver.submit(1, {"model": {"w": torch.ones(2)}})
        with pytest.raises(StepError) as caught:
            saver.submit(2, {"model": {"w": torch.ones(2), "adjacency": tensor}})
        saver.submit(3, {"model": {"w": torch.full((2,), 3.0)}})  # the saver goes on
        saver.close()
    message = str(caught.value)
    assert "\n" not in message and message.startswith(
        f"train: checkpoint step 2 cannot be written: a checkpoint cannot hold a {kind} tensor, at "
        "state['model']['adjacency']; "), message
    assert torch.equal(read_checkpoint(tmp_path, 3)["model"]["w"], torch.full((2,), 3.0))


def children() -> list[str]:
    return Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()


def descriptors() -> list[str]:
    """This process's pipes, sockets and shared memory (what a writer opens; fonts a plot caches are not)."""
    kinds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor
            continue
        kinds += [target.partition(":")[0]] if target.startswith(("pipe:", "socket:", "/memfd:")) else []
    return sorted(kinds)


def test_runs_from_a_runner_thread_one_after_another_leave_no_writer_and_no_descriptor(data, tmp_path):
    """Airflow and KFP runners call the step from a thread, over and over in one process (one fails after its
    writer started)."""
    results: list = []

    def step(name: str, **options) -> None:
        try:
            results.append(train(data=str(data), output=str(tmp_path / name), epochs=1, checkpoint_every=5,
                                 device="cpu", **options))
        except StepError as e:
            results.append(e)

    def on_thread(name: str, **options) -> None:
        thread = threading.Thread(target=step, args=(name,), kwargs=options)
        thread.start()
        thread.join(300)
        assert not thread.is_alive()

    on_thread("warm")  # the first run loads what a process loads once (fonts, libraries)
    before = descriptors()
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a checkpoint directory should be")
    on_thread("fails", checkpoint_dir=str(blocked))
    on_thread("again")
    on_thread("again2")
    assert isinstance(results[1], StepError) and [r["checkpoint_writer"] for r in results[2:]] == ["process"] * 2
    assert children() == [] and descriptors() == before
