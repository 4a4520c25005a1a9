"""Load one tensor's values on demand, and summarise them.

Listing a checkpoint never reads tensor data; this module is what runs when a user asks for the values
of one parameter (the TUI's statistics panel). Values come from :mod:`ckpt_tui.core.sources`, the one
reader of tensor data: HF files as stored, universal fp32.pt, and for ZeRO (every stage) the fp32 master
weights gathered from the ranks' partitions, the values training would resume from.

:func:`tensor_stats` works in bounded memory (chunks of :data:`CHUNK` elements, two passes) so a
billion-element embedding does not need a float64 copy of itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.model import Checkpoint, TensorEntry
from ckpt_tui.core.sources import open_source

if TYPE_CHECKING:
    import torch

CHUNK = 1 << 22  # elements per pass step: 4M fp64 values = 32 MiB of scratch at most


def load_tensor(ckpt: Checkpoint, tensor: TensorEntry | str) -> torch.Tensor:
    """The values of one tensor of ckpt (tied aliases read their owner). Raises CkptError if unreadable."""
    name = tensor if isinstance(tensor, str) else tensor.name
    with open_source(ckpt) as source:
        return source.read(name)


@dataclass(frozen=True)
class TensorStats:
    """Summary of one tensor's values. min..std cover the finite values only (None when there are none)."""

    numel: int
    dtype: str
    finite: int  # finite values (what min/max/mean/std and the histogram describe)
    nan: int
    posinf: int
    neginf: int
    zeros: int
    min: float | None
    max: float | None
    mean: float | None
    std: float | None  # sample standard deviation (n - 1), like torch.std
    abs_mean: float | None
    histogram: tuple[int, ...] = ()  # counts of finite values in `bins` equal-width bins over [min, max]
    edges: tuple[float, ...] = field(default=())  # bins + 1 edges

    @property
    def inf(self) -> int:
        return self.posinf + self.neginf

    @property
    def nonfinite(self) -> int:
        return self.nan + self.inf


def tensor_stats(tensor: torch.Tensor, bins: int = 20) -> TensorStats:
    """min/max/mean/std, NaN/inf/zero counts and a histogram, in float64, over bounded-size chunks."""
    import torch

    from ckpt_tui.core import dtypes as dt

    if tensor.is_complex():
        raise CkptError(None, f"statistics of complex tensors ({tensor.dtype}) are not supported")
    flat = tensor.detach().reshape(-1)
    numel = flat.numel()
    dtype = dt.canonical(tensor.dtype)
    is_float = flat.is_floating_point()
    finite = nan = posinf = neginf = zeros = 0
    total = abs_total = 0.0
    lo, hi = math.inf, -math.inf
    for chunk in _chunks(flat):
        values = chunk.to(torch.float64)
        zeros += int((values == 0).sum())
        if is_float:
            nan += int(torch.isnan(values).sum())
            posinf += int(torch.isposinf(values).sum())
            neginf += int(torch.isneginf(values).sum())
            values = values[torch.isfinite(values)]
        if values.numel() == 0:
            continue
        finite += values.numel()
        total += float(values.sum())
        abs_total += float(values.abs().sum())
        lo = min(lo, float(values.min()))
        hi = max(hi, float(values.max()))
    if finite == 0:
        return TensorStats(numel, dtype, 0, nan, posinf, neginf, zeros, None, None, None, None, None)
    mean = total / finite
    squares = 0.0
    counts = torch.zeros(bins, dtype=torch.float64)
    for chunk in _chunks(flat):
        values = chunk.to(torch.float64)
        if is_float:
            values = values[torch.isfinite(values)]
        squares += float(((values - mean) ** 2).sum())
        counts += _histogram(values, bins, lo, hi)
    std = math.sqrt(squares / (finite - 1)) if finite > 1 else 0.0
    step = (hi - lo) / bins
    edges = tuple(lo + i * step for i in range(bins)) + (hi,)
    return TensorStats(
        numel=numel,
        dtype=dtype,
        finite=finite,
        nan=nan,
        posinf=posinf,
        neginf=neginf,
        zeros=zeros,
        min=lo,
        max=hi,
        mean=mean,
        std=std,
        abs_mean=abs_total / finite,
        histogram=tuple(int(c) for c in counts.tolist()),
        edges=edges,
    )


def _chunks(flat: torch.Tensor) -> Iterator[torch.Tensor]:
    for start in range(0, flat.numel(), CHUNK):
        yield flat[start : start + CHUNK]


def _histogram(values: torch.Tensor, bins: int, lo: float, hi: float) -> torch.Tensor:
    """Counts per bin; the last bin includes hi, a constant tensor puts everything in the middle bin."""
    import torch

    if hi == lo:
        counts = torch.zeros(bins, dtype=torch.float64)
        counts[bins // 2] = values.numel()
        return counts
    index = ((values - lo) * (bins / (hi - lo))).floor().clamp_(0, bins - 1).to(torch.int64)
    return torch.bincount(index, minlength=bins).to(torch.float64)
