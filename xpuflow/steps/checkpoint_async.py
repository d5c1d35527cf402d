"""Asynchronous checkpoints: packed on the training thread, written in the background.

:meth:`BackgroundSaver.submit` packs the state on the calling thread: every tensor's
bytes copied into one host buffer, reused from one checkpoint to the next, the rest
encoded as JSON (:class:`~xpuflow.steps.checkpoint_flat.Packer`), so the training can
change its weights at once; a background thread then checksums, writes, fsyncs and
renames it (:meth:`Checkpointer.save`): system calls and hashing that release the GIL,
so the writer barely holds up a Python-bound training loop. Never two writes in flight:
a new submit first waits for the previous write, which also frees the buffer for
the new state (one writer thread, started at the first checkpoint and stopped by
:meth:`close`). :meth:`wait`
(SIGTERM, the end of training) blocks until the write is durable. A failed write
is raised on the training thread at the next submit or wait, as one line.

A ``kill -9`` while a write is in flight leaves only a temporary file (removed by
the next run); the previous checkpoint is complete, since its write finished
before this one started. So at most ``2 x checkpoint_every - 1`` steps are lost.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from .checkpoint import Checkpointer
from .checkpoint_flat import Packed, Packer
from .io import StepError

__all__ = ["BackgroundSaver"]

log = logging.getLogger("xpuflow.checkpoint")


class BackgroundSaver:
    """One checkpoint write at a time, on one background thread (started once: no thread start per save)."""

    def __init__(self, ckpt: Checkpointer) -> None:
        self.ckpt = ckpt
        self.write_seconds: list[float] = []  # each write, start to durable (the background thread's time)
        self.stall_seconds: list[float] = []  # the training thread's time per checkpoint (waiting + packing)
        self._packer = Packer()
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
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="checkpoint-writer", daemon=True)
            self._thread.start()
        self._queue.put((step, packed))
        self.stall_seconds.append(time.perf_counter() - start)

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
        self._queue.join()
        if self._failure is not None:
            step, e = self._failure
            self._failure = None
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise StepError(f"{self.ckpt.who}: writing checkpoint step {step} to checkpoint_dir="
                            f"{self.ckpt.directory!r} failed: {reason}. Fix: check the space and permissions "
                            "there, or pass another --checkpoint-dir.") from e

    def close(self) -> None:
        """Wait for the write in flight and stop the thread; a failure is logged, not raised (training failed)."""
        try:
            self.wait()
        except StepError as e:
            log.error("%s", e)
        finally:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join()
                self._thread = None
