"""``progress.log``: the last step a training run reached, for the RPO a resume reports.

The training loop marks every step in it; a ``kill -9`` keeps the mark. A resume reads it to say how
many steps the stop lost (the steps past the checkpoint it resumes from).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import stat
import sys
from pathlib import Path

__all__ = ["Progress", "last_progress", "WIDTH"]

log = logging.getLogger("xpuflow.train")


class Progress:
    """The last step reached, in ``progress.log``, for the RPO a resume reports.

    The file is one 64-bit integer in native byte order (8 bytes), stored through a shared mapping:
    no system call per step, and a ``kill -9`` keeps it (the mapped page is the file's page). A
    number, not a line of digits: formatting one cost ~3 us a step in the loop, 0.7 % of a small
    model's (an ``os.write`` append cost ~10 us before the mapping).
    """

    def __init__(self, path: Path, step: int) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _OWN, 0o644)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:  # a FIFO, a device, another file's hard link
                raise OSError(errno.EEXIST, "not a file of its own")  # replaced, never written into (open)
            os.pwrite(fd, step.to_bytes(WIDTH, sys.byteorder), 0)  # never read without a number
            os.ftruncate(fd, WIDTH)  # the end of an older, longer log
            self._map = mmap.mmap(fd, WIDTH)
        finally:
            os.close(fd)
        self._slot = memoryview(self._map).cast("q")

    @classmethod
    def open(cls, path: Path, step: int, who: str) -> Progress | None:
        """One kept in ``path``; one there that cannot be opened or is not a file of its own (read-only, a link,
        a FIFO) is replaced, and where even that fails (a directory) training goes on without it, said in one
        WARNING line."""
        try:
            return cls(path, step)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(path)
        try:
            return cls(path, step)
        except OSError as e:
            log.warning("%s: %s cannot be written (%s); a resume will not report the steps a stop lost",
                        who, path, e.strerror or type(e).__name__)
            return None

    def mark(self, step: int) -> None:
        self._slot[0] = step

    def close(self) -> None:
        self._slot.release()  # the mapping cannot close while a view of it is held
        self._map.close()


WIDTH = 8
_MOST_STEPS = 1 << 48  # above: not a step count (damage, or an older version's line of digits)
# a link is not followed: marking a link to another file wrote into that file and cut it to 8 bytes;
# O_NONBLOCK: opening a FIFO never waits for a writer
_OWN = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def last_progress(path: Path) -> int:
    """The step ``progress.log`` holds (0 when absent or unreadable: the RPO then counts from the checkpoint)."""
    try:  # only a regular file of 8 bytes is read: a FIFO would block, a huge file fill the memory
        fd = os.open(path, os.O_RDONLY | _OWN)
    except OSError:
        return 0
    try:
        info = os.fstat(fd)
        data = os.pread(fd, WIDTH, 0) if stat.S_ISREG(info.st_mode) and info.st_size == WIDTH else b""
    except OSError:
        data = b""
    finally:
        os.close(fd)
    step = int.from_bytes(data, sys.byteorder) if len(data) == WIDTH else -1
    return step if 0 <= step < _MOST_STEPS else 0
