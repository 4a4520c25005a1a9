"""Compare two checkpoints of any kinds, tensor by tensor: names, shapes, max |diff|, bitwise equality.

Values come from sources.py, so ZeRO is compared through its fp32 master weights, universal through
fp32.pt, HF as stored. Tied aliases resolve to their owner on either side. Large tensors are compared in
chunks so memory stays at a few chunks whatever the model size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ckpt_tui.core import dtypes as dt
from ckpt_tui.core.convert.job import JobControl
from ckpt_tui.core.model import Checkpoint
from ckpt_tui.core.sources import TensorSource, open_source

if TYPE_CHECKING:
    import torch

CHUNK = 1 << 22  # elements compared at a time


@dataclass
class TensorDiff:
    name: str  # "name" or "name:exp_avg" for optimizer states
    shape_a: tuple[int, ...] | None
    shape_b: tuple[int, ...] | None
    dtype_a: str | None = None
    dtype_b: str | None = None
    max_abs_diff: float | None = None  # None: not compared (missing or shapes differ)
    bitwise_equal: bool = False

    @property
    def status(self) -> str:
        if self.shape_a is None:
            return "only in B"
        if self.shape_b is None:
            return "only in A"
        if self.shape_a != self.shape_b:
            return "shape differs"
        return "equal" if self.bitwise_equal else "differs"


@dataclass
class VerifyReport:
    a: Checkpoint
    b: Checkpoint
    atol: float
    compare_dtype: str | None = None
    diffs: list[TensorDiff] = field(default_factory=list)

    @property
    def compared(self) -> list[TensorDiff]:
        return [d for d in self.diffs if d.max_abs_diff is not None]

    @property
    def bitwise_equal_count(self) -> int:
        return sum(1 for d in self.diffs if d.bitwise_equal)

    @property
    def max_abs_diff(self) -> float:
        return max((d.max_abs_diff for d in self.compared), default=0.0)

    @property
    def worst(self) -> TensorDiff | None:
        return max(self.compared, key=lambda d: d.max_abs_diff, default=None)

    @property
    def problems(self) -> list[TensorDiff]:
        return [d for d in self.diffs if d.max_abs_diff is None or not d.max_abs_diff <= self.atol]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(
    a: Checkpoint | str | Path,
    b: Checkpoint | str | Path,
    *,
    atol: float = 0.0,
    states: bool = False,
    compare_dtype: str | None = None,
    control: JobControl | None = None,
) -> VerifyReport:
    """Compare every tensor both sides can read. With states=True, Adam moments too where both have them.

    compare_dtype casts both sides first (e.g. checking a bf16 export against its fp32 source).
    """
    control = control or JobControl()
    with open_source(a) as sa, open_source(b) as sb:
        report = VerifyReport(sa.checkpoint, sb.checkpoint, atol, dt.canonical(compare_dtype) if compare_dtype else None)
        names_a, names_b = _names(sa), _names(sb)
        in_a, in_b = set(names_a), set(names_b)  # membership by hash: verify stays linear in tensors
        common = [n for n in names_a if n in in_b]
        sizes = {n: sa.entry(n).nbytes for n in common}
        control.begin(len(common), sum(sizes.values()), phase="verify")
        for name in names_a:
            if name not in in_b:
                report.diffs.append(TensorDiff(name, sa.entry(name).shape, None, sa.entry(name).dtype))
        for name in names_b:
            if name not in in_a:
                report.diffs.append(TensorDiff(name, None, sb.entry(name).shape, None, sb.entry(name).dtype))
        for name in common:
            control.working_on(name)
            report.diffs.append(_compare(name, sa.read(name), sb.read(name), report.compare_dtype))
            if states:
                for state in (s for s in sa.states(name) if s in sb.states(name)):
                    report.diffs.append(
                        _compare(f"{name}:{state}", sa.read_state(name, state), sb.read_state(name, state), None)
                    )
            control.advance(name, sizes[name])
    return report


def _names(source: TensorSource) -> list[str]:
    stored = [t.name for t in source.tensors]
    known = set(stored)
    return stored + [a for a in source.aliases if a not in known]


def _compare(name: str, x: torch.Tensor, y: torch.Tensor, compare_dtype: str | None) -> TensorDiff:
    import torch

    diff = TensorDiff(name, tuple(x.shape), tuple(y.shape), dt.canonical(x.dtype), dt.canonical(y.dtype))
    if diff.shape_a != diff.shape_b:
        return diff
    if compare_dtype:
        x, y = x.to(getattr(torch, compare_dtype)), y.to(getattr(torch, compare_dtype))
    x, y = x.reshape(-1), y.reshape(-1)
    same_dtype = x.dtype == y.dtype
    bitwise, worst = same_dtype, 0.0
    for start in range(0, x.numel(), CHUNK):
        cx, cy = x[start : start + CHUNK], y[start : start + CHUNK]
        if bitwise and not torch.equal(cx.view(torch.uint8), cy.view(torch.uint8)):
            bitwise = False
        if not bitwise:
            worst = max(worst, _max_abs(cx, cy))
    diff.bitwise_equal = bitwise
    diff.max_abs_diff = 0.0 if bitwise else worst
    return diff


def _max_abs(x: torch.Tensor, y: torch.Tensor) -> float:
    """max |x - y| in float64; NaN against NaN counts as equal, NaN against a number as inf."""
    import torch

    if x.is_floating_point() or y.is_floating_point():
        xd, yd = x.double(), y.double()
        both_nan = torch.isnan(xd) & torch.isnan(yd)
        delta = (xd - yd).abs()
        delta = torch.where(both_nan, torch.zeros_like(delta), delta)
        delta = torch.where(torch.isnan(delta), torch.full_like(delta, math.inf), delta)
        same_inf = torch.isinf(xd) & (xd == yd)
        delta = torch.where(same_inf, torch.zeros_like(delta), delta)
    else:
        delta = (x.long() - y.long()).abs().double()
    return float(delta.max()) if delta.numel() else 0.0
