"""Read-ahead keeps its promise on memory: reads in flight stay within the worker count and the byte budget."""

from __future__ import annotations

import threading

import pytest

from ckpt_tui.core.convert.job import JobControl
from ckpt_tui.core.convert.prefetch import read_ahead


def _reads(sizes: list[int], log: list[tuple[str, int]], lock: threading.Lock):  # noqa: ANN202
    def read(i: int) -> int:
        with lock:
            log.append(("start", i))
        return i

    return [(f"t{i}", lambda i=i: read(i), size) for i, size in enumerate(sizes)]


def _max_ahead(log: list[tuple[str, int]]) -> int:
    """The most reads started beyond the one being handed to the consumer (the one after the last it took)."""
    taken, started, most = -1, -1, 0
    for what, i in log:
        if what == "start":
            started = max(started, i)
        else:
            taken = i
        most = max(most, started - taken - 1)
    return most


@pytest.mark.parametrize(("sizes", "workers", "budget", "ahead"), [
    ([10] * 8, 4, 1000, 4),  # small tensors: as many as the workers
    ([100] * 8, 4, 150, 1),  # big tensors: one at a time ahead, whatever the workers
    ([100, 10, 10, 10, 100, 10], 3, 40, 3),  # small ones fill the budget (the 100s go one at a time)
    ([10] * 5, 1, 10, 0),  # one worker: read when asked
])
def test_reads_in_flight_stay_within_workers_and_budget(sizes: list[int], workers: int, budget: int, ahead: int) -> None:
    log: list[tuple[str, int]] = []
    lock = threading.Lock()
    out = []
    for name, value in read_ahead(_reads(sizes, log, lock), workers, JobControl(), budget=budget):
        with lock:
            log.append(("take", value))
        out.append((name, value))
    assert out == [(f"t{i}", i) for i in range(len(sizes))]
    assert _max_ahead(log) <= ahead
