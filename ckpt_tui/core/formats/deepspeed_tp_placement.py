"""Where each TP rank's values land in the full tensor, so a merge copies them straight into the output.

``TpSplit.merge`` needs every rank's slice in memory, then builds the full tensor from them (a cat, a
rebuild): two full copies at once, three when vocabulary padding is cut off and the result is made
contiguous. A :class:`Placement` instead says where a run of a rank's FLAT slice goes in the full
tensor, so the ZeRO runs of each rank are copied into one preallocated output as they are read: the
largest tensor is in memory once. Rules whose result needs all slices together (averages, scaled or
overlapping affine blocks, sub-params split on an inner dim) have no placements and keep ``merge``.

Everything here is computed from shapes the checkpoint states: each placement is checked against the
sizes of the rank's slice and of the full tensor before anything is copied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ckpt_tui.core.formats.deepspeed_tp_rules import TpSplit, _check_view, _row_major

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Placement:
    """Values [start, start + rows * width) of a rank's flat slice fill `rows` rows of `width` values of
    the flat full tensor, from `offset`, `row_stride` apart. A replica's values are compared, not copied
    (another rank placed them)."""

    start: int
    rows: int
    width: int
    offset: int
    row_stride: int
    replica: bool = False

    @property
    def count(self) -> int:
        return self.rows * self.width

    def put(self, full: torch.Tensor, at: int, values: torch.Tensor) -> None:
        """Copy `values` (this run's values from position `at` of it on) into the flat `full` tensor."""
        import torch

        end = at + values.numel()
        done = 0
        while at < end:
            row, col = divmod(at, self.width)
            if col == 0 and end - at >= self.width:  # whole rows at once
                rows = (end - at) // self.width
                dest = torch.as_strided(full, (rows, self.width), (self.row_stride, 1), self.offset + row * self.row_stride)
                src = values.narrow(0, done, rows * self.width).view(rows, self.width)
            else:  # the part of one row
                take = min(self.width - col, end - at)
                dest = full.narrow(0, self.offset + row * self.row_stride + col, take)
                src = values.narrow(0, done, take)
            if self.replica:
                if not torch.equal(dest, src.view_as(dest)):
                    raise ValueError("its TP slices should hold the same values for a replicated block but differ")
            else:
                dest.copy_(src)
            done += src.numel()
            at += src.numel()


def placements(split: TpSplit, local: list[tuple[int, ...]]) -> tuple[tuple[Placement, ...], ...] | None:
    """Per TP rank, where its flat slice goes in the full tensor (``split.full_shape(local)``); None where
    the rule needs all slices together (then use ``split.merge``). Raises ValueError on impossible shapes."""
    full = split.full_shape(local)
    if split.how == "affine":
        if split.vocab_rows is not None and split.vocab_rows < split.affine_shape[0]:
            return None  # the map places rows that the vocabulary cut drops
        out = _affine(split)
    elif split.how == "average" or (split.how == "sub_params" and math.prod(local[0][: split.sub_dim]) != 1):
        return None
    elif split.how == "replicated" or len(local) == 1:
        n = math.prod(local[0])
        out = tuple((Placement(0, 1, n, 0, n, replica=rank > 0),) for rank in range(len(local)))
    elif split.how == "cat":
        out = _cat(split.cat_dim, local, full, split.vocab_rows)
    elif split.vocab_rows is not None:
        return None  # sub-params of a vocabulary-padded tensor: the padding sits inside each slice
    elif split.how == "sub2":
        out = _sub2(local)
    else:
        out = _sub_params(split, local)
    if out is None:
        return None
    out = tuple(tuple(_clip(p, math.prod(full)) for p in ranks) for ranks in out)
    for rank, ranks in enumerate(out):
        for p in ranks:
            if p.start < 0 or p.start + p.count > math.prod(local[rank]):
                raise ValueError(f"TP rank {rank}'s slice {local[rank]} holds fewer values than its place needs")
            _check_view((p.rows, p.width), p.offset, (p.row_stride, 1), math.prod(full), "the full tensor")
    return tuple(tuple(p for p in ranks if p.count) for ranks in out)


def _clip(p: Placement, numel: int) -> Placement:
    """Vocabulary padding: rows past the full tensor's end are dropped (they end the last rank's slice)."""
    if p.rows == 1 and p.offset + p.width > numel:
        return Placement(p.start, 1, max(numel - p.offset, 0), p.offset, p.row_stride, p.replica)
    return p


def _cat(dim: int, local: list[tuple[int, ...]], full: tuple[int, ...], vocab: int | None):  # noqa: ANN202
    """Concatenation on `dim`: rank r's slice is `prod(local[:dim])` rows of its width at its offset."""
    if vocab is not None and dim != 0:
        return None
    outer = math.prod(local[0][:dim])
    inner = math.prod(local[0][dim + 1:])
    if any(math.prod(s[:dim]) != outer or math.prod(s[dim + 1:]) != inner for s in local):
        raise ValueError(f"slices {local} differ outside dim {dim}")
    out, at = [], 0
    for shape in local:
        width = shape[dim] * inner
        if outer == 1:
            out.append((Placement(0, 1, width, at * inner, width),))
        else:
            out.append((Placement(0, outer, width, at * inner, full[dim] * inner),))
        at += shape[dim]
    return tuple(out)


def _sub2(local: list[tuple[int, ...]]):  # noqa: ANN202
    """Two fused halves on dim 0 (``chunk(2)``): the first halves of all ranks, then the second halves."""
    inner = math.prod(local[0][1:])
    if any(math.prod(s[1:]) != inner for s in local):
        raise ValueError(f"slices {local} differ outside dim 0")
    halves = [(-(-s[0] // 2), s[0] - -(-s[0] // 2)) for s in local]
    first_total = sum(h[0] for h in halves)
    out, at = [], [0, first_total]
    for h in halves:
        mine = []
        for half in (0, 1):
            n = h[half] * inner
            mine.append(Placement(h[0] * inner if half else 0, 1, n, at[half] * inner, n))
            at[half] += h[half]
        out.append(tuple(mine))
    return tuple(out)


def _sub_params(split: TpSplit, local: list[tuple[int, ...]]):  # noqa: ANN202
    """Sub-params on dim `sub_dim` (outer dims of size 1): per sub-param, each rank's rows in rank order."""
    inner = math.prod(local[0][split.sub_dim + 1:])
    if any(math.prod(s[split.sub_dim + 1:]) != inner for s in local):
        raise ValueError(f"slices {local} differ outside dim {split.sub_dim}")
    out: list[list[Placement]] = [[] for _ in local]
    at_local, at_full = [0] * len(local), 0
    for widths in split.sub_widths:
        for rank, width in enumerate(widths):
            n = width * inner
            out[rank].append(Placement(at_local[rank] * inner, 1, n, at_full * inner, n))
            at_local[rank] += width
            at_full += width
    return tuple(tuple(ranks) for ranks in out)


def _affine(split: TpSplit):  # noqa: ANN202
    """An affine map whose blocks tile the full tensor (AutoTP's): each block a run of its rank's slice
    placed as rows of the full tensor; a block another rank placed already is a replica."""
    if not split._tiles:
        return None
    numel = math.prod(split.affine_shape)
    seen: set[tuple[int, tuple[int, ...], tuple[int, ...]]] = set()
    out = []
    for blocks in split.affine:
        mine = []
        for b in blocks:
            if not b.numel:
                continue
            if b.scale != 1.0 or not _dense(b.shape, b.dest[1]):
                return None
            rows = _as_rows(b.shape, b.source[1])
            if rows is None:
                return None
            _check_view(b.shape, *b.source, numel, "the full tensor")
            key = (b.source[0], b.shape, b.source[1])
            mine.append(Placement(b.dest[0], rows[0], rows[1], b.source[0], rows[2], replica=key in seen))
            seen.add(key)
        out.append(tuple(mine))
    return tuple(out)


def _dense(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """True when a view of `shape` with `strides` is one contiguous run (size-1 dims have any stride)."""
    return all(n == 1 or s == w for n, s, w in zip(shape, strides, _row_major(shape)))


def _as_rows(shape: tuple[int, ...], strides: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(rows, width, row stride) of a strided view whose leading dims merge into one; None otherwise."""
    dims = [(n, s) for n, s in zip(shape, strides) if n != 1]
    if not dims:
        return 1, 1, 1
    width, last = dims[-1]
    if last != 1:
        return None
    lead = dims[:-1]
    if not lead:
        return 1, width, width
    for (n1, s1), (n2, s2) in zip(lead, lead[1:]):
        if s1 != s2 * n2:
            return None
    return math.prod(n for n, _ in lead), width, lead[-1][1]
