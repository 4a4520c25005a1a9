"""Read tensors ahead of the writer on worker threads: reading (page faults, gathers) overlaps writing.

A read is one tensor (a parameter for HF export, one optimizer state of a parameter for universal
output). At most `workers` reads are in flight beside the one being written, so memory stays at about
(workers + 1) x the largest tensor, not a parameter's weights and moments together.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from ckpt_tui.core.convert.job import JobControl

T = TypeVar("T")
Read = tuple[str, Callable[[], T]]  # (the name progress shows, the read)


def read_ahead(reads: list[Read], workers: int, control: JobControl) -> Iterator[tuple[str, T]]:
    """Yield (name, value) in order; with workers > 1, up to `workers` reads run ahead."""
    if workers <= 1:
        for name, read in reads:
            control.working_on(name)
            yield name, read()
        return
    pending: deque[tuple[str, Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ckpt-read") as pool:
        todo = iter(reads)
        try:
            for name, read in todo:
                pending.append((name, pool.submit(read)))
                if len(pending) >= workers:
                    break
            while pending:
                name, future = pending.popleft()
                control.working_on(name)
                value = future.result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append((nxt[0], pool.submit(nxt[1])))
                yield name, value
        finally:
            for _, future in pending:
                future.cancel()
