"""How the tensor-parallel slices of one DeepSpeed parameter make the full tensor.

A TP checkpoint stores, per TP rank, a slice of each parameter; how the slices combine is written in the
checkpoint's ``universal_checkpoint_info`` (AutoTP and Megatron-DeepSpeed put it there), as regex pattern
lists that ``ds_to_universal`` applies in a fixed order, first match wins (``re.match``):

1. ``affine_map`` (AutoTP, UCP 0.4): per rank, blocks of the full tensor given as ``as_strided`` views;
2. ``tp_replicated_parameter_patterns``: every slice is the whole tensor (they must agree);
3. ``parameter_to_average_patterns``: the mean of the slices;
4. ``parameter_with_2_sub_params_cat_dim_0`` (fused gate/up): halves of each slice, firsts then seconds;
5. ``parameter_with_sub_params`` (fused QKV): per sub-parameter, its piece from every rank, in turn;
6. otherwise concatenated on dim 1 (``parameter_with_row_parallelism_patterns``) or dim 0.

Then vocabulary parameters lose their padding rows (``original_vocab_size``). The same rule applies to
the fp32 weights and to both Adam moments. This module decides the rule of each name and the full shape
without torch (listing), and merges slices with torch when values are read.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ckpt_tui.core.errors import CkptError

if TYPE_CHECKING:
    import torch

AFFINE_FORMAT_VERSION = 1  # the affine map encoding this reader understands (DeepSpeed 0.19.x)
# A scaled affine piece holds full * scale**power: +1 for weights, the inverse for Adam's moments
SCALE_POWER = {"fp32": 1, "exp_avg": -1, "exp_avg_sq": -2}
# Names of parameters that are usually several fused matrices: split across TP by sub-parameter, or
# resuming at another TP degree mixes their rows silently.
FUSED_NAME = re.compile(r"(qkv|query_key_value|gate_up|w13|fused|c_attn|in_proj)", re.I)


@dataclass(frozen=True)
class AffineBlock:
    """One block of an affine map: elements of the full tensor (source) held in a rank's shard (dest)."""

    shape: tuple[int, ...]
    source: tuple[int, tuple[int, ...]]  # (storage offset, strides) into the full tensor
    dest: tuple[int, tuple[int, ...]]  # (storage offset, strides) into the rank's flat shard
    scale: float = 1.0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class TpSplit:
    """How one parameter is split across TP ranks, and the pattern of universal_checkpoint_info that says so."""

    how: str  # affine | replicated | average | sub2 | sub_params | cat
    pattern: str | None = None
    cat_dim: int = 0
    vocab_rows: int | None = None  # original_vocab_size: padded rows beyond it are dropped
    affine_shape: tuple[int, ...] = ()
    affine: tuple[tuple[AffineBlock, ...], ...] = ()  # per TP rank
    sub_dim: int = 0  # sub_params: the partition dim
    sub_widths: tuple[tuple[int, ...], ...] = ()  # sub_params: per sub-parameter, its width on each rank
    sub_patterns: tuple[str, ...] = ()  # sub_params: the record's patterns and shape (sizes at sub_dim)
    sub_shape: Any = ()

    def describe(self) -> str:
        text = {
            "affine": "affine map",
            "replicated": "replicated",
            "average": "averaged",
            "sub2": "2 sub-params, dim 0",
            "sub_params": f"{len(self.sub_widths)} sub-params, dim {self.sub_dim}",
            "cat": f"dim {self.cat_dim}",
        }[self.how]
        return text + (f", vocab rows ≤ {self.vocab_rows}" if self.vocab_rows is not None else "")

    # -- shapes (no torch) ---------------------------------------------------------------------
    def full_shape(self, local: list[tuple[int, ...]]) -> tuple[int, ...]:
        """The full (logical) shape from the TP ranks' slice shapes."""
        if self.how == "affine":
            shape = self.affine_shape
        elif self.how in ("replicated", "average"):
            shape = local[0]
        elif self.how == "sub_params":
            shape = list(local[0])
            shape[self.sub_dim] = sum(sum(w) for w in self.sub_widths)
            shape = tuple(shape)
        else:
            dim = 0 if self.how == "sub2" else self.cat_dim
            if any(len(s) <= dim for s in local):
                raise ValueError(f"slices {local} have no dim {dim} to concatenate on")
            shape = list(local[0])
            shape[dim] = sum(s[dim] for s in local)
            shape = tuple(shape)
        if self.vocab_rows is not None and shape:
            shape = (min(self.vocab_rows, shape[0]), *shape[1:])
        return tuple(shape)

    def boxes(self, local: list[tuple[int, ...]]) -> list[tuple[int, tuple[int, ...], tuple[int, ...]]]:
        """(tp rank, offsets, sizes) of the blocks of the full tensor each rank holds, for listings.

        Blocks that are not boxes of the full tensor (strided affine views) are left out.
        """
        full = self.full_shape(local)
        out: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = []
        if self.how == "affine":
            strides = _row_major(self.affine_shape)
            for rank, blocks in enumerate(self.affine):
                for b in blocks:
                    if b.numel and all(n == 1 or s == w for n, s, w in zip(b.shape, b.source[1], strides)):
                        out.append((rank, _unravel(b.source[0], self.affine_shape), b.shape))
        elif self.how in ("replicated", "average"):
            out = [(rank, (0,) * len(full), full) for rank in range(len(local))]
        elif self.how == "sub_params":
            at = 0
            for widths in self.sub_widths:
                for rank, width in enumerate(widths):
                    offsets = [0] * len(full)
                    offsets[self.sub_dim] = at
                    sizes = list(local[rank])
                    sizes[self.sub_dim] = width
                    out.append((rank, tuple(offsets), tuple(sizes)))
                    at += width
        else:
            dim = 0 if self.how == "sub2" else self.cat_dim
            halves = 2 if self.how == "sub2" else 1
            at = 0
            for half in range(halves):
                for rank, shape in enumerate(local):
                    offsets = [0] * len(shape)
                    offsets[dim] = at
                    sizes = list(shape)
                    sizes[dim] = shape[dim] // halves
                    out.append((rank, tuple(offsets), tuple(sizes)))
                    at += sizes[dim]
        if self.vocab_rows is not None:
            out = [(r, o, (min(s[0], self.vocab_rows - o[0]), *s[1:])) for r, o, s in out if o[0] < self.vocab_rows]
        return sorted(out, key=lambda b: (b[0], b[1]))

    # -- values (torch) ------------------------------------------------------------------------
    def merge(self, slices: list[torch.Tensor], state: str) -> torch.Tensor:
        """The full tensor of one state (fp32, exp_avg, exp_avg_sq) from the TP ranks' slices."""
        import torch

        if len(slices) == 1 and self.how != "affine":
            param = slices[0]  # one TP rank: every rule keeps the slice as it is
        elif self.how == "affine":
            param = self._rebuild(slices, state)
        elif self.how == "replicated":
            for other in slices[1:]:
                if not torch.equal(slices[0], other):
                    raise ValueError("its TP slices should be replicas but differ")
            param = slices[0]
        elif self.how == "average":
            param = sum(slices[1:], slices[0]) / len(slices)
        elif self.how == "sub2":
            halves = [s.chunk(2, dim=0) for s in slices]  # one cat: no intermediate copy of each half
            param = torch.cat([h[0] for h in halves] + [h[1] for h in halves])
        elif self.how == "sub_params":
            at = [0] * len(slices)
            parts = []
            for widths in self.sub_widths:
                for rank, width in enumerate(widths):
                    parts.append(slices[rank].narrow(self.sub_dim, at[rank], width))
                    at[rank] += width
            param = torch.cat(parts, dim=self.sub_dim)
        else:
            param = torch.cat(slices, dim=self.cat_dim)
        if self.vocab_rows is not None:
            param = param[: self.vocab_rows]
        return param

    @cached_property
    def _tiles(self) -> bool:
        """True when the map's distinct blocks are boxes of the full tensor that tile it exactly (what
        AutoTP writes): then a merge needs no per-value coverage bookkeeping, only copies."""
        strides = _row_major(self.affine_shape)
        boxes: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
        for blocks in self.affine:
            for b in blocks:
                if not b.numel:
                    continue
                if len(b.shape) != len(self.affine_shape) or any(
                    n > 1 and s != w for n, s, w in zip(b.shape, b.source[1], strides)
                ):
                    return False
                offsets = _unravel(b.source[0], self.affine_shape)
                if any(o + n > d for o, n, d in zip(offsets, b.shape, self.affine_shape)):
                    return False
                boxes.add((offsets, b.shape))
        distinct = sorted(boxes)
        for i, (o1, s1) in enumerate(distinct):
            for o2, s2 in distinct[i + 1:]:
                if all(a < c + m and c < a + n for a, n, c, m in zip(o1, s1, o2, s2)):
                    return False  # two different blocks share values
        return sum(math.prod(size) for _, size in distinct) == math.prod(self.affine_shape)

    def _rebuild(self, slices: list[torch.Tensor], state: str) -> torch.Tensor:
        import torch

        power = SCALE_POWER.get(state, 1)
        numel = math.prod(self.affine_shape)
        held = sum(b.numel for blocks in self.affine for b in blocks)
        if numel > held:  # the shape comes from the file: check it before allocating it
            raise ValueError(f"its affine map describes {numel:,} values but its blocks hold {held:,}")
        full = torch.empty(numel, dtype=slices[0].dtype)
        tiles = self._tiles
        covered = None if tiles else torch.zeros(numel, dtype=torch.bool)
        written: set[tuple[int, tuple[int, ...], tuple[int, ...]]] = set()
        for rank, blocks in enumerate(self.affine):
            flat = slices[rank].reshape(-1).contiguous()
            for b in blocks:
                if not b.numel:
                    continue
                _check_view(b.shape, *b.source, numel, "the full tensor")
                _check_view(b.shape, *b.dest, flat.numel(), f"TP rank {rank}'s slice")
                if b.scale != 1.0 and power != 1:
                    raise ValueError("optimizer moments through a scaled affine block cannot be restored")
                values = torch.as_strided(flat, b.shape, b.dest[1], b.dest[0])
                if b.scale != 1.0:
                    values = values / b.scale**power
                target = torch.as_strided(full, b.shape, b.source[1], b.source[0])
                if covered is None:
                    key = (b.source[0], b.shape, b.source[1])
                    replica = key in written
                    written.add(key)
                else:
                    seen = torch.as_strided(covered, b.shape, b.source[1], b.source[0])
                    replica = bool(seen.all())
                    seen.fill_(True)
                if replica:
                    if not torch.equal(target, values):
                        raise ValueError(f"TP rank {rank} holds different values for a replicated block")
                    continue
                target.copy_(values)
        if covered is not None and not bool(covered.all()):
            raise ValueError(f"its affine map leaves {int((~covered).sum()):,} values uncovered")
        return full.view(self.affine_shape)

    def hints(self) -> dict[str, Any]:
        """What ds_to_universal stores beside the merged tensor (the loader re-slices by it)."""
        out: dict[str, Any] = {}
        if self.how == "sub2":
            out = {"cat_dim": 0, "param_n_sub_params": 2}
        elif self.how == "sub_params":
            out = {"sub_param_shape": _subparam_shape(self.sub_patterns, self.sub_shape, self.sub_dim)}
        elif self.how == "cat":
            out = {"cat_dim": self.cat_dim}
        if self.vocab_rows is not None:
            out["vocab_tensor"] = True
        return out


# --------------------------------------------------------------------------------------- the rules
class TpRules:
    """The rules of one checkpoint's universal_checkpoint_info, asked per parameter name."""

    def __init__(self, info: Any, tp: int, where: Any = None) -> None:
        self.info = info if isinstance(info, dict) else {}
        self.tp = tp
        self.where = where  # the file named in errors
        self.version = _number(self.info.get("universal_checkpoint_version"), 0.0)
        affine = self.info.get("affine_map") or {}
        if not isinstance(affine, dict):
            raise CkptError(where, "universal_checkpoint_info 'affine_map' is not a mapping")
        version = _number(affine.get("version"), AFFINE_FORMAT_VERSION)
        if version > AFFINE_FORMAT_VERSION:
            raise CkptError(where, f"affine map format version {version} is newer than this reader ({AFFINE_FORMAT_VERSION})")
        self.affine = affine.get("params") or {}
        self.vocab_size = self.info.get("original_vocab_size")

    def shard_shape(self, name: str, rank: int) -> tuple[int, ...] | None:
        """The shape of rank's slice of name as its affine map records it (None without a map)."""
        pattern = _first(list(self.affine), name)
        if pattern is None:
            return None
        try:
            return tuple(int(d) for d in self.affine[pattern]["ranks"][rank]["shard_shape"])
        except (KeyError, TypeError, ValueError, IndexError):
            try:
                return tuple(int(d) for d in self.affine[pattern]["ranks"][str(rank)]["shard_shape"])
            except (KeyError, TypeError, ValueError, IndexError):
                return None

    def _patterns(self, key: str) -> list[str]:
        value = self.info.get(key) or []
        return [str(p) for p in value] if isinstance(value, (list, tuple)) else []

    def split(self, name: str, local: list[tuple[int, ...]]) -> TpSplit:
        """The rule for name, whose TP slices have the shapes `local` (one per TP rank)."""
        try:
            return self._split(name, local)
        except (re.error, TypeError, ValueError, KeyError, IndexError) as exc:
            raise CkptError(self.where, f"cannot tell how TP slices of '{name}' merge: {exc}") from None

    def _split(self, name: str, local: list[tuple[int, ...]]) -> TpSplit:
        vocab = None
        vocab_pattern = _first(self._patterns("vocabulary_parameter_patterns"), name)
        if vocab_pattern is not None:
            vocab = int(self.vocab_size) if self.vocab_size is not None else None
        pattern = _first(list(self.affine), name)
        if pattern is not None:
            shape, blocks = _affine(self.affine[pattern], self.tp)
            return TpSplit("affine", pattern, vocab_rows=vocab, affine_shape=shape, affine=blocks)
        for how, key in (
            ("replicated", "tp_replicated_parameter_patterns"),
            ("average", "parameter_to_average_patterns"),
            ("sub2", "parameter_with_2_sub_params_cat_dim_0"),
        ):
            pattern = _first(self._patterns(key), name)
            if pattern is not None:
                return TpSplit(how, pattern, vocab_rows=vocab)
        for record in self.info.get("parameter_with_sub_params") or []:
            patterns = _field(record, "patterns") or []
            pattern = _first([str(p) for p in patterns], name)
            if pattern is not None:
                return self._sub_params(name, pattern, record, local, vocab)
        row = _first(self._patterns("parameter_with_row_parallelism_patterns"), name)
        return TpSplit("cat", row or vocab_pattern, cat_dim=1 if row is not None else 0, vocab_rows=vocab)

    def _sub_params(self, name: str, pattern: str, record: Any, local: list[tuple[int, ...]], vocab: int | None) -> TpSplit:
        dim = int(_field(record, "partition_dim"))
        shape = list(_field(record, "shape"))
        spec = shape[dim]
        if isinstance(spec, (tuple, list)):
            sizes = tuple(int(s) for s in spec)
        else:
            total = sum(s[dim] for s in local)
            count = int(spec)
            if count <= 0 or total % count:
                raise ValueError(f"{count} sub-params do not divide dim {dim} of size {total}")
            sizes = (total // count,) * count
        widths_info = (self.info.get("sub_param_shard_widths") or {}).get(pattern)
        if self.version >= 0.4 and widths_info is not None:
            widths = tuple(tuple(int(w) for w in ws) for ws in widths_info)
        else:
            if any(size % self.tp for size in sizes):
                raise ValueError(f"sub-param sizes {sizes} do not split evenly over TP {self.tp}")
            widths = tuple((size // self.tp,) * self.tp for size in sizes)
        if len(widths) != len(sizes) or any(len(w) != self.tp or sum(w) != s for w, s in zip(widths, sizes)):
            raise ValueError(f"shard widths {widths} do not match sub-param sizes {sizes} over TP {self.tp}")
        # the hint keeps the record as written when it gives sizes; a count is replaced by the sizes
        hint_shape = _field(record, "shape") if isinstance(spec, (tuple, list)) else tuple([*shape[:dim], sizes, *shape[dim + 1:]])
        return TpSplit("sub_params", pattern, vocab_rows=vocab, sub_dim=dim, sub_widths=widths,
                       sub_patterns=tuple(str(p) for p in _field(record, "patterns")), sub_shape=hint_shape)

    def fused_warning(self, name: str, split: TpSplit) -> str | None:
        """A TP-split parameter that looks fused but has no sub-param rule: another TP would be wrong."""
        if split.how in ("cat",) and self.tp > 1 and FUSED_NAME.search(name.rsplit(".", 2)[-2] if "." in name else name):
            return (f"'{name}' looks fused (several matrices in one) but is split on dim {split.cat_dim} with no "
                    "sub-param rule: resuming at another TP degree would mix its parts")
        return None


SUBPARAM_SHAPE = "deepspeed.checkpoint.universal_checkpoint.SubparamShape"


def _subparam_shape(patterns: tuple[str, ...], shape: Any, dim: int) -> Any:
    """DeepSpeed's SubparamShape(patterns, shape, partition_dim) hint, as our inert stand-in record:
    saved under DeepSpeed's class name, it loads as the real dataclass in DeepSpeed's universal loader."""
    from ckpt_tui.core.safe_pickle import stand_ins

    cls = stand_ins()[SUBPARAM_SHAPE]
    record = cls.__new__(cls)
    record.__dict__.update(patterns=list(patterns), shape=shape, partition_dim=dim)
    return record


def _first(patterns: list[str], name: str) -> str | None:
    for pattern in patterns:
        if re.match(pattern, name):
            return pattern
    return None


def _field(record: Any, key: str) -> Any:
    return record.get(key) if isinstance(record, dict) else getattr(record, key, None)


def _number(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _affine(entry: Any, tp: int) -> tuple[tuple[int, ...], tuple[tuple[AffineBlock, ...], ...]]:
    shape = tuple(int(d) for d in entry["logical_shape"])
    if any(d < 0 for d in shape):
        raise ValueError(f"negative logical shape {shape}")
    ranks = {int(r): v for r, v in entry["ranks"].items()}
    if sorted(ranks) != list(range(tp)):
        raise ValueError(f"its affine map names ranks {sorted(ranks)}, not 0..{tp - 1}")
    blocks = []
    for rank in range(tp):
        out = []
        for piece in ranks[rank]["pieces"]:
            src_off, src_strides = piece["source"]
            dst_off, dst_strides = piece["dest"]
            out.append(AffineBlock(
                tuple(int(d) for d in piece["shape"]),
                (int(src_off), tuple(int(s) for s in src_strides)),
                (int(dst_off), tuple(int(s) for s in dst_strides)),
                float(piece.get("scale", 1.0)),
            ))
        blocks.append(tuple(out))
    return shape, tuple(blocks)


def _check_view(shape: tuple[int, ...], offset: int, strides: tuple[int, ...], numel: int, what: str) -> None:
    """as_strided on a file's numbers: refuse any view that would reach outside its tensor."""
    if len(strides) != len(shape) or offset < 0 or any(s < 0 for s in strides) or any(d < 0 for d in shape):
        raise ValueError(f"an affine block {shape} at {offset} strides {strides} is malformed")
    last = offset + sum((d - 1) * s for d, s in zip(shape, strides))
    if last >= numel:
        raise ValueError(f"an affine block reaches value {last:,} of {what}, which holds {numel:,}")


def _row_major(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides = [1] * len(shape)
    for axis in range(len(shape) - 2, -1, -1):
        strides[axis] = strides[axis + 1] * shape[axis + 1]
    return tuple(strides)


def _unravel(offset: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for stride in _row_major(shape):
        index, offset = divmod(offset, stride) if stride else (0, offset)
        out.append(index)
    return tuple(out)
