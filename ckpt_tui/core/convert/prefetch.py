"""Read tensors ahead of the writer on worker threads: reading (page faults, gathers) overlaps writing.

A read is one tensor (a parameter for HF export, one optimizer state of a parameter for universal
output) and the bytes it will hold. Reads run ahead of the one being written while fewer than `workers`
are in flight and, past the first, their bytes stay within ``READ_AHEAD_BYTES``: memory stays at about
the tensor being written plus max(READ_AHEAD_BYTES, the next tensor), whatever the worker count, instead
of (workers + 1) x the largest tensor.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from ckpt_tui.core.convert.job import JobControl

T = TypeVar("T")
Read = tuple[str, Callable[[], T], int]  # (the name progress shows, the read, the bytes it returns)
READ_AHEAD_BYTES = 128 << 20


def read_ahead(reads: list[Read], workers: int, control: JobControl, budget: int = READ_AHEAD_BYTES) -> Iterator[tuple[str, T]]:
    """Yield (name, value) in order; with workers > 1, reads run ahead within `workers` and `budget`."""
    if workers <= 1:
        for name, read, _ in reads:
            control.working_on(name)
            yield name, read()
        return
    pending: deque[tuple[str, Future, int]] = deque()
    todo = deque(reads)

    def fill(pool: ThreadPoolExecutor) -> None:
        held = sum(size for _, _, size in pending)
        while todo and len(pending) < workers and (not pending or held + todo[0][2] <= budget):
            name, read, size = todo.popleft()
            pending.append((name, pool.submit(read), size))
            held += size

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ckpt-read") as pool:
        try:
            fill(pool)
            while pending:
                name, future, _ = pending.popleft()
                control.working_on(name)
                value = future.result()
                del future  # a finished future holds its result: drop it with the value, not a read later
                fill(pool)
                yield name, value
                del value
        finally:
            for _, future, _ in pending:
                future.cancel()
