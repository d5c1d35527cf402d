"""Work submitted to a thread pool ahead of its use, handed on in submission order, a bounded number in flight."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

__all__ = ["in_order"]


def in_order(submit: Callable[[Any], Future], items: Iterable[Any], ahead: int) -> Iterator[Future]:
    """The futures of ``submit(item)``, in the order of ``items``, each handed on once ``ahead`` later ones are
    submitted (or the items ran out). Closing the iterator early cancels the futures not yet handed on."""
    pending: collections.deque[Future] = collections.deque()
    try:
        for item in items:
            pending.append(submit(item))
            while len(pending) > ahead:
                yield pending.popleft()
        while pending:
            yield pending.popleft()
    finally:
        for future in pending:
            future.cancel()
