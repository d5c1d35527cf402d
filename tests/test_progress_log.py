"""progress.log as an outsider leaves it: a link to another file, a FIFO, a huge file.

The training run marks its step in progress.log beside the checkpoints; a resume reads it for the RPO
it reports. Whatever sits at that name, marking never writes into another file, and reading never
blocks or fills the memory: what is not an 8-byte file of its own counts as no progress past the
checkpoint, and is replaced by a file of the run's own.
"""

from __future__ import annotations

import os
import threading

import pytest

from runs import progress_of
from xpuflow.steps.progress import Progress, last_progress
from xpuflow.steps.train import train

PRECIOUS = b"a user's file that happens to be linked from the checkpoint folder\n" * 100


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_marking_a_progress_log_linked_to_another_file_leaves_that_file_alone(data, tmp_path, link):
    """A link (``ln -s ~/notes progress.log``, or a hard link a copy tool made) is replaced by a file of the run's
    own: marking wrote the step into the linked file and cut it to 8 bytes."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    victim = tmp_path / "notes.txt"
    victim.write_bytes(PRECIOUS)
    (folder / "progress.log").symlink_to(victim) if link == "symbolic" else os.link(victim, folder / "progress.log")
    metrics = train(data=str(data), output=str(tmp_path / "model"), epochs=1, checkpoint_every=5, device="cpu",
                    checkpoint_dir=str(folder))
    assert victim.read_bytes() == PRECIOUS
    log = folder / "progress.log"
    assert not log.is_symlink() and log.stat().st_nlink == 1 and progress_of(folder) == metrics["steps"]


def test_a_progress_log_that_is_a_fifo_is_read_as_no_progress_at_once_and_replaced(tmp_path):
    """Reading a FIFO waited for a writer that never comes: the resume hung before its first step."""
    log = tmp_path / "progress.log"
    os.mkfifo(log)
    read: list[int] = []
    reader = threading.Thread(target=lambda: read.append(last_progress(log)), daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # unblock it before failing
        os.close(os.open(log, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(10)
        pytest.fail("reading a FIFO progress.log blocked")
    assert read == [0]
    progress = Progress.open(log, 40, "train")
    assert progress is not None
    progress.mark(41)
    progress.close()
    assert log.is_file() and last_progress(log) == 41


def test_a_huge_progress_log_is_read_as_no_progress_without_reading_it(tmp_path):
    """A sparse 1 TiB file (or an older version's appended lines): the whole file was read (MemoryError)."""
    log = tmp_path / "progress.log"
    with open(log, "wb") as handle:
        handle.truncate(1 << 40)
    assert last_progress(log) == 0
    progress = Progress.open(log, 7, "train")
    assert progress is not None
    progress.close()
    assert log.stat().st_size == 8 and last_progress(log) == 7
