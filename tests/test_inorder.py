"""in_order: pool work handed on in submission order, a bounded number in flight, the rest cancelled on close."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from xpuflow.steps.inorder import in_order


def test_results_come_in_order_with_at_most_ahead_submitted_beyond_the_one_handed_on():
    submitted, seen = [], []
    with ThreadPoolExecutor(3) as pool:
        def submit(i):
            submitted.append(i)
            return pool.submit(lambda: (time.sleep(0.002 * (4 - i % 4)), i)[1])  # later items finish first

        for future in in_order(submit, range(20), 3):
            assert len(submitted) - len(seen) <= 3 + 1
            seen.append(future.result())
    assert seen == list(range(20))


def test_closing_early_cancels_the_futures_not_handed_on():
    gate, futures = threading.Event(), []
    with ThreadPoolExecutor(1) as pool:
        def submit(i):
            futures.append(pool.submit(gate.wait))
            return futures[-1]

        jobs = in_order(submit, range(10), 4)
        next(jobs)
        jobs.close()
        gate.set()
    assert len(futures) == 5 and all(f.cancelled() for f in futures[1:]) and not futures[0].cancelled()
