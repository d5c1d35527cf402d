"""Asynchronous checkpoints: packed on the training thread, written in the background.

:meth:`BackgroundSaver.submit` packs the state on the calling thread: every tensor's
bytes copied into one host buffer, reused from one checkpoint to the next, the rest
encoded as plain data (:class:`~xpuflow.steps.checkpoint_flat.Packer`), so the training
can change its weights at once. A writer then builds the JSON line, checksums, writes,
fsyncs and renames it (:meth:`Checkpointer.save`):

- ``process`` (the default for a local checkpoint directory and CPU or XLA tensors): a
  child process that maps the same buffer (:mod:`~xpuflow.steps.checkpoint_writer`); the
  training thread never waits for a writer's turn at the GIL;
- ``thread`` (object-store checkpoints, CUDA tensors into a pinned buffer, or when the
  process cannot start): one background thread, started at the first checkpoint.

``XPUFLOW_CHECKPOINT_WRITER=thread|process`` chooses (process falls back to a thread
for object storage). If the writer process ends (killed, out of memory), the write in
flight is done on the training thread, one WARNING line says so, and a thread writes
from then on: a checkpoint is never lost silently.

Never two writes in flight: a new submit first waits for the previous write, which also
frees the buffer for the new state. :meth:`wait` (SIGTERM, the end of training) blocks
until the write is durable. A failed write is raised on the training thread at the next
submit or wait, as one line.

A ``kill -9`` while a write is in flight leaves only a temporary file (removed by
the next run); the previous checkpoint is complete, since its write finished
before this one started. So at most ``2 x checkpoint_every - 1`` steps are lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from .checkpoint import Checkpointer, local_root
from .checkpoint_flat import Packed, Packer
from .checkpoint_writer import WriterGone, WriterProcess
from .io import StepError

__all__ = ["BackgroundSaver", "WRITERS", "writer_process"]

WRITERS = ("process", "thread")

log = logging.getLogger("xpuflow.checkpoint")


class BackgroundSaver:
    """One checkpoint write at a time, by a writer process or one background thread (each started once)."""

    def __init__(self, ckpt: Checkpointer, process: WriterProcess | None = None) -> None:
        """``process``: the writer process (:func:`writer_process`); None: a thread writes."""
        self.ckpt = ckpt
        self.write_seconds: list[float] = []  # each write, start to durable (the writer's time)
        self.stall_seconds: list[float] = []  # the training thread's time per checkpoint (waiting + packing)
        self.writer = "process" if process is not None else "thread"
        self._process = process
        self._in_flight: tuple[int, Packed] | None = None  # sent to the process, not yet answered
        self._packer = Packer(process.allocate) if process is not None else Packer()
        self._queue: queue.Queue[tuple[int, Packed] | None] = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None
        self._failure: tuple[int, BaseException] | None = None

    def submit(self, step: int, state: dict[str, Any], started: float | None = None) -> None:
        """Write ``state`` as checkpoint ``step`` in the background; ``state`` may change once this returns."""
        start = time.perf_counter() if started is None else started
        self.wait()  # never two writes in flight: the buffer is free again
        try:
            packed = self._packer.pack(state)
        except TypeError as e:  # a user's module whose state_dict holds another kind of object
            raise StepError(f"{self.ckpt.who}: checkpoint step {step} cannot be written: {e}. Fix: make the "
                            "model's state_dict (get_extra_state) return only those.") from None
        if self._process is not None:
            self._in_flight = (step, packed)
            try:
                self._process.send(self.ckpt, step, packed)
            except WriterGone as e:
                self._fall_back(e)  # written by _fall_back, here
        else:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="checkpoint-writer", daemon=True)
                self._thread.start()
            self._queue.put((step, packed))
        self.stall_seconds.append(time.perf_counter() - start)

    def _fall_back(self, why: WriterGone) -> None:
        """The writer process is gone: the write it had is done here, later ones on a thread."""
        log.warning("%s: the checkpoint writer process %s; checkpoints are written by a thread from now on",
                    self.ckpt.who, why)
        process, self._process, self.writer = self._process, None, "thread"
        process.close()  # type: ignore[union-attr]  # reaps it; the owner's close later does nothing
        self._packer = Packer()  # process memory from the next checkpoint on (the shared file is closed)
        step, packed = self._in_flight  # type: ignore[misc]  # both callers had one in flight
        self._in_flight = None
        try:
            self.write_seconds.append(self.ckpt.save(step, packed))
        except Exception as e:
            self._failure = (step, e)

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            step, packed = job
            try:
                self.write_seconds.append(self.ckpt.save(step, packed))
            except BaseException as e:  # raised on the training thread by wait()
                self._failure = (step, e)
            finally:
                del job, packed  # no reference to the buffer outlives the write
                self._queue.task_done()
        self._queue.task_done()

    def wait(self) -> None:
        """Block until the write in flight is durable; a failed write raises a one-line StepError."""
        if self._in_flight is not None and self._process is not None:
            step = self._in_flight[0]
            try:
                self.write_seconds.append(self._process.result())
                self._in_flight = None
            except WriterGone as e:
                self._fall_back(e)
            except Exception as e:
                self._in_flight, self._failure = None, (step, e)
        if self._thread is not None:
            self._queue.join()
        if self._failure is not None:
            step, e = self._failure
            self._failure = None
            if isinstance(e, StepError):  # says what and how to fix already (the writer could not open the folder)
                raise StepError(str(e)) from e
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise StepError(f"{self.ckpt.who}: writing checkpoint step {step} to checkpoint_dir="
                            f"{self.ckpt.directory!r} failed: {reason}. Fix: check the space and permissions "
                            "there, or pass another --checkpoint-dir.") from e

    def close(self) -> None:
        """Wait for the write in flight and stop the thread; a failure is logged, not raised (training failed).

        A writer process stays: whoever started it (:func:`writer_process`) stops it.
        """
        try:
            self.wait()
        except StepError as e:
            log.error("%s", e)
        finally:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join()
                self._thread = None


@contextlib.contextmanager
def writer_process(directory: str, who: str, cuda: bool = False) -> Iterator[WriterProcess | None]:
    """The writer process for checkpoints in ``directory``, started now: it imports while the run loads its data.

    None where a thread writes: object storage, CUDA (a pinned buffer), ``XPUFLOW_CHECKPOINT_WRITER=thread``,
    or a process that cannot start (one WARNING line).
    """
    chosen = os.environ.get("XPUFLOW_CHECKPOINT_WRITER") or ("thread" if cuda else "process")
    if chosen not in WRITERS:
        raise StepError(f"{who}: XPUFLOW_CHECKPOINT_WRITER={chosen!r} is not valid: process or thread. "
                        "Fix: set one of those, or unset it.")
    process, local = None, local_root(directory)
    if chosen == "process" and local is not None:
        try:
            process = WriterProcess(local, who)
        except WriterGone as e:
            log.warning("%s: the checkpoint writer process %s; checkpoints are written by a thread", who, e)
    try:
        yield process
    finally:
        if process is not None:
            process.close()
