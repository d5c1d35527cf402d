"""Checkpoint writes in a child process: the training process never shares its GIL with a writer.

A writer thread in the training process competes for the GIL on every system call it
makes (open, write, fsync, rename, the directory's fsync, pruning): the training thread
waits for it a few microseconds at a time, over a millisecond per checkpoint on a
Python-bound loop. Here the pack buffer is memory both processes map (a memfd, else an
unlinked temporary file), so handing a checkpoint over is one small message on a socket:
the step, the state's non-tensor part (``marshal``: plain data) and the buffer's size.
The child builds the JSON line, checksums, writes, fsyncs and renames with the same
:meth:`~xpuflow.steps.checkpoint.Checkpointer.save` a thread would call, and answers
``ok <seconds>`` or ``error <json>``.

The child dies with its parent on Linux (``PR_SET_PDEATHSIG``): a ``kill -9`` of the
training process ends the write in flight as it did on a thread (a temporary file, removed
by the next run). It ignores SIGINT and SIGTERM (a terminal's Ctrl-C or Airflow's
SIGTERM reach the whole process group) so the final checkpoint a SIGTERM asks for is
written; it exits when its parent asks (or closes the socket). Its own output goes to
stderr: stdout carries only answers.

Nothing makes the training process wait for it forever or die with it: a writer seen stopped
(SIGSTOP, a debugger) while the parent waits is killed and its write done by the parent;
requests are sent with ``MSG_NOSIGNAL`` (a dead writer is an error, not a SIGPIPE); the exit is
a message, since a forked DataLoader worker holding the socket delays its end-of-file.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import mmap
import os
import select
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from .checkpoint import Checkpointer
from .checkpoint_flat import Packed
from .io import StepError

__all__ = ["WriterProcess", "WriterGone", "main"]

_FRAME = struct.Struct("<qQ")  # step, length of the marshalled (state, table, size)
_STOP = _FRAME.pack(-1, 0)  # "exit now": a forked process (a DataLoader worker) may hold the socket open
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
_POLL = 1.0  # seconds between looks at a writer that has not answered yet


class WriterGone(Exception):
    """The writer process has ended (killed, crashed, or could not start)."""


class WriterProcess:
    """The parent's end: :meth:`allocate` the shared buffer, :meth:`send` a packed state, :meth:`result`."""

    def __init__(self, directory: str, who: str) -> None:
        if not sys.executable:  # None or empty: an embedding application whose Python cannot find itself
            raise WriterGone("could not start (sys.executable is empty: no Python to run it with)")
        if getattr(sys, "frozen", False):  # PyInstaller and the like: sys.executable would start the application again
            raise WriterGone("could not start (a frozen application: sys.executable is the application, not Python)")
        self._fd = _shared_fd()
        # requests go over a socket, not a pipe: sent with MSG_NOSIGNAL, a dead writer is an error, never a SIGPIPE
        # ending a training process that does not ignore it (an embedder, a CLI restoring it for `| head`)
        self._requests, child_end = socket.socketpair()
        config = {"directory": directory, "who": who, "fd": self._fd, "parent": os.getpid(),
                  "package": str(Path(__file__).resolve().parents[1])}  # the xpuflow this process runs
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-S", "-c", _BOOT, json.dumps(config)],  # no site: the standard library is enough
                stdin=child_end, stdout=subprocess.PIPE, pass_fds=(self._fd,))
        except (OSError, ValueError) as e:
            os.close(self._fd)
            self._requests.close()
            raise WriterGone(f"could not start ({e})") from None
        finally:
            child_end.close()
        self._answers = self._proc.stdout.fileno()  # type: ignore[union-attr]
        self._gone = ""  # why the parent killed it, once it did
        self._requests.setblocking(False)  # a full socket returns at once: a stopped writer is seen (_ready)
        os.set_blocking(self._answers, False)  # an answer not there yet returns at once: waited for in _ready

    def allocate(self, nbytes: int, pin: bool) -> Any:
        """A uint8 tensor over ``nbytes`` of the shared memory (the Packer's buffer)."""
        import torch

        os.ftruncate(self._fd, nbytes)
        populate = getattr(mmap, "MAP_POPULATE", 0)  # Linux: the pages at once, not a fault each on the first copy
        return torch.frombuffer(mmap.mmap(self._fd, nbytes, flags=mmap.MAP_SHARED | populate), dtype=torch.uint8)

    def send(self, ckpt: Checkpointer, step: int, packed: Packed) -> None:
        try:
            blob = marshal.dumps((packed.state, packed.table, len(packed.data), ckpt.identity, ckpt.keep))
            message = memoryview(_FRAME.pack(step, len(blob)) + blob)
            while message:  # one system call, unless a signal interrupts it or the socket is full
                try:
                    message = message[self._requests.send(message, _NOSIGNAL):]
                except BlockingIOError:  # full: wait for room (a stopped writer is seen there)
                    self._ready(self._requests.fileno(), write=True)
        except OSError:
            raise WriterGone(self._ended()) from None
        except WriterGone:  # seen stopped, and killed
            raise
        except BaseException:  # Ctrl-C, maybe mid-request: the writer would wait for the rest, the answer never come
            self._kill("was interrupted in the middle of a request; it was killed")
            raise

    def result(self) -> float:
        """The seconds the write took; its error re-raised (an ``OSError`` with its errno when it was one)."""
        line = b""
        while not line.endswith(b"\n"):
            try:  # the answer is there already, most often: one system call
                chunk = os.read(self._answers, 1 << 16)
            except BlockingIOError:
                self._ready(self._answers, write=False)
                continue
            if not chunk:
                raise WriterGone(self._ended())
            line += chunk
        kind, _, rest = line.rstrip(b"\n").partition(b" ")
        if kind == b"ok":
            return float(rest)
        failure = json.loads(rest)
        if failure.get("errno") is not None:
            raise OSError(failure["errno"], failure["strerror"])
        raise (StepError if failure.get("whole") else RuntimeError)(failure["message"])

    def _ready(self, fd: int, write: bool, looks: float = float("inf")) -> None:
        """Block until ``fd`` is ready (or ``looks`` seconds passed); a writer stopped (SIGSTOP, a debugger) for a
        whole look is killed: it would never answer, and a training run waiting for it forever is a silent failure."""
        poller = select.poll()  # not select.select: a training process may hold over 1024 files open
        poller.register(fd, select.POLLOUT if write else select.POLLIN)
        stopped = False
        while not poller.poll(_POLL * 1000) and (looks := looks - _POLL) > 0:  # an answer, EOF, errors end it
            now = _stopped(self._proc.pid)  # type: ignore[union-attr]
            if now and stopped:
                raise WriterGone(self._kill("was stopped (SIGSTOP) and did not answer; it was killed"))
            stopped = now

    def _kill(self, why: str) -> str:
        """Kill and reap the writer; ``why`` is what :meth:`_ended` says from now on."""
        self._gone = why
        self._proc.kill()  # type: ignore[union-attr]
        self._proc.wait()  # type: ignore[union-attr]
        return why

    def _ended(self) -> str:
        if self._gone:
            return self._gone
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "stopped answering"
        return f"killed by signal {-code}" if code < 0 else f"exited with code {code}"

    def close(self) -> None:
        """Let the child finish and exit (it has nothing in flight once the saver waited); again: no-op."""
        if self._proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._requests.send(_STOP, _NOSIGNAL)  # EOF alone never comes while a forked process holds the socket
        self._requests.close()
        with contextlib.suppress(WriterGone):
            self._ready(self._answers, write=False, looks=60)  # its exit (EOF), or a stopped writer killed at once
        try:
            self._proc.wait(timeout=5)  # it had nothing in flight (the caller waited): it exits at once
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()  # type: ignore[union-attr]
        self._proc = None
        os.close(self._fd)


# The child imports only the checkpoint modules (~40 ms), not the xpuflow package (~0.1 s of CPU the training
# would share its cores with): its packages are bare namespaces over the same folders.
_BOOT = """
import sys
sys.path[:] = [p for p in sys.path if p]  # not the working directory -c puts first: a project's own types.py
import signal
signal.signal(signal.SIGINT, signal.SIG_IGN)  # first: a group's Ctrl-C or SIGTERM must not stop the final write
signal.signal(signal.SIGTERM, signal.SIG_IGN)
import json, types
package = json.loads(sys.argv[1])["package"]
for name, path in (("xpuflow", package), ("xpuflow.steps", package + "/steps")):
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
from xpuflow.steps.checkpoint_writer import main
main()
"""


def _shared_fd() -> int:
    """The shared memory's descriptor, numbered 3 or above: 0-2 are the child's pipes (a process started ``<&-``)."""
    import fcntl

    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("xpuflow-checkpoint", os.MFD_CLOEXEC)
    else:
        import tempfile

        with tempfile.TemporaryFile() as handle:  # unlinked at once; the duplicate keeps it open
            fd = os.dup(handle.fileno())
    if fd < 3:
        fd, low = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3), fd
        os.close(low)
    return fd


def _stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped (Linux: its /proc state; elsewhere never known, so never)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rpartition(b") ")[2][:1] in (b"T", b"t")
    except OSError:
        return False


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(0)


def _read_exactly(stream: Any, n: int) -> bytes | None:
    data = stream.read(n)
    return data if len(data) == n else None


def main() -> None:
    """The child (started by ``_BOOT``, which ignores SIGINT and SIGTERM first): one write at a time, as the parent
    asks; exits when the parent says so or closes the socket."""
    config = json.loads(sys.argv[1])
    _die_with_parent(config["parent"])
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # whatever else writes to stdout lands in stderr, never in the answers
    ckpt: Checkpointer | None = None
    fd, view = config["fd"], memoryview(b"")
    requests = sys.stdin.buffer
    while (frame := _read_exactly(requests, _FRAME.size)) is not None:
        if frame == _STOP:
            break
        step, length = _FRAME.unpack(frame)
        blob = _read_exactly(requests, length)
        if blob is None:
            break
        state, table, size, identity, keep = marshal.loads(blob)
        try:
            if ckpt is None or ckpt.identity != identity or ckpt.keep != keep:
                ckpt = Checkpointer(config["directory"], identity, keep=keep, who=config["who"], writer=False)
            if size > len(view):  # the buffer grew since the last write: map it again
                mapped = mmap.mmap(fd, os.fstat(fd).st_size, prot=mmap.PROT_READ)
                view = memoryview(mapped)
            seconds = ckpt.save(step, Packed(state, table, view[:size]))
        except Exception as e:  # the parent raises it on the training thread
            answers.write(b"error " + json.dumps({
                "errno": getattr(e, "errno", None), "strerror": getattr(e, "strerror", None),
                "message": str(e) or type(e).__name__, "whole": isinstance(e, StepError),  # a one-line error already
            }).encode() + b"\n")
        else:
            answers.write(b"ok %r\n" % seconds)
