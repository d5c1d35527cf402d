"""Ctrl-C at the checkpoint writer's worst moments: nothing hangs, nothing is lost, nothing is left installed.

A Ctrl-C in the middle of a request (a state too large for the socket) neither hangs the step nor loses the
checkpoint; one while a failed run's cleanup waits for its last write still gives the process its own SIGTERM
handler back. Each runs in a process of its own: a KeyboardInterrupt must not reach the test runner.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from runs import read_checkpoint


def test_ctrl_c_in_the_middle_of_a_request_neither_hangs_the_step_nor_loses_the_checkpoint(tmp_path):
    """A state too large for the socket (a long history, a user's notes) is sent over several calls; a Ctrl-C
    between them left the writer waiting for the rest of the request and the step waiting for its answer: the
    training process hung in its cleanup, forever."""
    script = textwrap.dedent(f"""
        import contextlib, os, signal, sys, threading, torch
        from xpuflow.steps.checkpoint import Checkpointer
        from xpuflow.steps.checkpoint_async import BackgroundSaver, writer_process
        signal.alarm(30)  # a hang ends the script with SIGALRM
        with writer_process({str(tmp_path)!r}, "train") as writer:
            saver = BackgroundSaver(Checkpointer({str(tmp_path)!r}, {{"seed": 0}}), writer)
            saver.submit(1, {{"w": torch.ones(3)}})
            saver.wait()
            child = writer._proc.pid
            os.kill(child, signal.SIGSTOP)  # it reads nothing: the request fills the socket, the step polls
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()  # a terminal's Ctrl-C
            try:
                saver.submit(2, {{"notes": "x" * (32 << 20)}})
            except KeyboardInterrupt:
                print("interrupted", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGCONT)
            saver.close()  # what the training loop's cleanup does
        print(saver.writer, file=sys.stderr)
    """)
    done = subprocess.run([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.splitlines()
    assert "interrupted" in lines and lines[-1] == "thread", done.stderr[-2000:]
    warnings = [line for line in lines if "checkpoint writer process" in line]
    assert len(warnings) == 1 and "interrupted in the middle of a request" in warnings[0], done.stderr[-2000:]
    assert read_checkpoint(tmp_path, 2)["notes"] == "x" * (32 << 20)


def test_a_second_ctrl_c_while_the_cleanup_waits_for_a_write_still_restores_the_sigterm_handler(data, tmp_path):
    """An embedder (a notebook) presses Ctrl-C again while a failed run waits for its last write: the step's
    SIGTERM handler stayed installed after train() raised, and SIGTERM no longer ended the process."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "stalls.py").write_text(textwrap.dedent("""
        import os, signal, threading, time
        from pathlib import Path
        from torch import nn

        class Stalls(nn.Module):
            def __init__(self, features, classes):
                super().__init__()
                self.layer, self.calls = nn.Linear(features, classes), 0

            def forward(self, x):
                self.calls += 1
                if self.calls == 9:  # the writer, done with checkpoint 5, stops before checkpoint 10 is sent to it
                    while not Path(os.environ["CHECKPOINTS"], "ckpt-00000005.pt").exists():
                        time.sleep(0.01)
                    time.sleep(1.0)  # and has answered it
                    me = os.getpid()
                    for child in Path(f"/proc/{me}/task/{me}/children").read_text().split():
                        os.kill(int(child), signal.SIGSTOP)
                if self.calls == 11:  # the run fails; its cleanup waits for write 10, and Ctrl-C comes
                    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
                    raise RuntimeError("the user's model failed")
                return self.layer(x)

        def make(features, classes):
            return Stalls(features, classes)
    """))
    script = textwrap.dedent(f"""
        import signal, sys
        sys.path.insert(0, {str(package)!r})
        from xpuflow.steps.train import train
        signal.alarm(60)
        try:
            train(data={str(data)!r}, output={str(tmp_path / "model")!r}, epochs=1, checkpoint_every=5, device="cpu",
                  model="stalls:make", checkpoint_dir={str(tmp_path / "ckpt")!r})
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
        print("SIGTERM handler restored:", signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, file=sys.stderr)
    """)
    done = subprocess.run([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
                               "CHECKPOINTS": str(tmp_path / "ckpt")})
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.splitlines()
    assert "interrupted" in lines and lines[-1] == "SIGTERM handler restored: True", done.stderr[-2000:]
