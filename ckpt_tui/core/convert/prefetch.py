"""Read tensors ahead of the writer on worker threads: reading (page faults, gathers) overlaps writing.

At most `workers` tensors are in flight, so memory stays at about workers x the largest tensor.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from ckpt_tui.core.convert.job import JobControl

if TYPE_CHECKING:
    import torch

    from ckpt_tui.core.sources import TensorSource


def read_ahead(
    source: TensorSource, names: list[str], workers: int, control: JobControl
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) in order; with workers > 1, up to `workers` reads run ahead."""
    if workers <= 1:
        for name in names:
            control.working_on(name)
            yield name, source.read(name)
        return
    pending: deque[tuple[str, Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ckpt-read") as pool:
        todo = iter(names)
        try:
            for name in todo:
                pending.append((name, pool.submit(source.read, name)))
                if len(pending) >= workers:
                    break
            while pending:
                name, future = pending.popleft()
                control.working_on(name)
                tensor = future.result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(source.read, nxt)))
                yield name, tensor
        finally:
            for _, future in pending:
                future.cancel()
