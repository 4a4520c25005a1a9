"""The model-parallel ranks of a DeepSpeed checkpoint: which rank holds which parameter, and its full shape.

A TP x PP run writes one set of files per model-parallel rank M = pp * TP + tp (``mp_rank_{M:02d}``), each
listing its own parameters with their TP-LOCAL shapes (``param_shapes``). A parameter lives on one
pipeline stage (PipelineModule names are ``<layer index>.<path>``, so stages never share a name, except
tied weights, which the first and the last stage both hold: the first stage's copy is taken), and is split
across that stage's TP ranks by the rule ``deepspeed_tp_rules`` finds for it. A DP-only checkpoint is the
1 x 1 grid: one rank, every parameter whole.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.formats import deepspeed_common as dc
from ckpt_tui.core.formats.deepspeed_tp_rules import TpRules, TpSplit
from ckpt_tui.core.model import Piece


@dataclass(frozen=True)
class MpParam:
    """One parameter of the model and where its TP slices are."""

    name: str
    shape: tuple[int, ...]  # full
    pp: int  # the pipeline stage whose ranks hold it
    slices: tuple[tuple[int, tuple[int, ...]], ...]  # (mp rank, TP-local shape), in TP rank order
    split: TpSplit
    frozen: bool = False

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class MpGrid:
    """Every parameter of a TP x PP checkpoint, in the order the ranks list them."""

    tp: int
    pp: int
    params: dict[str, MpParam] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def sharded(self) -> bool:
        return self.tp * self.pp > 1

    def pieces(self, name: str, files: dict[int, str]) -> tuple[Piece, ...]:
        """The blocks of the full tensor each TP rank holds, in the file that rank's values come from."""
        param = self.params[name]
        local = [shape for _, shape in param.slices]
        out = []
        for tp, offsets, sizes in param.split.boxes(local):
            mp = param.slices[tp][0]
            out.append(Piece(files[mp], offsets=offsets, sizes=sizes, tp=tp, pp=param.pp))
        return tuple(out)


PIPELINE_NAME = re.compile(r"^(\d+|tied_modules)\.")


def pipeline_names_note(names: list[str]) -> str | None:
    """A caveat when the names are a PipelineModule's (``<layer index>.<path>``), which no HF model uses."""
    example = next((n for n in names if PIPELINE_NAME.match(n) and not n.startswith("tied_modules.")), None)
    if example is None:
        return None
    return (f"PipelineModule parameter names (e.g. '{example}'): an HF export keeps them as they are; "
            "rename them to your model's names before loading it with transformers")


def degrees(state: dict[str, Any], mp_ranks: int) -> tuple[int, int]:
    """(TP, PP) of the run: `checkpoint_parallel_dimensions`, else every mp rank taken as a TP rank."""
    dims = state.get("checkpoint_parallel_dimensions")
    dims = dims if isinstance(dims, dict) else {}
    tp, pp = _positive(dims.get("tp_degree")), _positive(dims.get("pp_degree"))
    if tp is None and pp is None:
        return max(mp_ranks, 1), 1
    return tp or 1, pp or 1


def build(states: dict[int, dict[str, Any]], files: dict[int, Path], tp: int, pp: int) -> MpGrid:
    """The grid from every mp rank's model_states dict (states[M], M = pp * TP + tp)."""
    grid = MpGrid(tp, pp)
    where = files[min(files)].parent if files else None
    if tp * pp != len(states) or any(m not in states for m in range(tp * pp)):
        # the degrees come from the file: compare counts before enumerating anything they claim
        found = ", ".join(f"mp_rank_{m:02d}" for m in sorted(states)[:8]) + (" ..." if len(states) > 8 else "")
        raise CkptError(where, f"TP {tp} x PP {pp} needs {tp * pp:,} model-parallel ranks' files; found {len(states)}: {found}")
    info = states[0].get("universal_checkpoint_info")
    rules = TpRules(info, tp, files[0])
    shapes = {m: dict(dc.param_shapes(files[m], states[m])) for m in states}
    frozen = {m: dc.frozen_shapes(states[m]) for m in states}
    for stage in range(pp):
        first = stage * tp
        for table, is_frozen in ((shapes, False), (frozen, True)):
            for name in table[first]:
                if name in grid.params:
                    continue  # a tied weight the first stage already holds
                local = []
                for rank in range(tp):
                    mp = first + rank
                    shape = table[mp].get(name)
                    if shape is None:  # an empty shard (TP above the KV heads) has no optimizer entry
                        shape = _empty_shard(rules, name, rank, states[mp])
                    if shape is None:
                        raise CkptError(files[mp], f"lists no '{name}', which TP rank 0 of its stage holds")
                    local.append((mp, shape))
                split = rules.split(name, [shape for _, shape in local])
                try:
                    shape = split.full_shape([s for _, s in local])
                except ValueError as exc:
                    raise CkptError(files[first], f"cannot merge the TP slices of '{name}': {exc}") from None
                grid.params[name] = MpParam(name, shape, stage, tuple(local), split, is_frozen)
                warning = rules.fused_warning(name, split)
                if warning:
                    grid.warnings.append(warning)
    note = pipeline_names_note(list(grid.params))
    if note:
        grid.warnings.append(note)
    return grid


def _empty_shard(rules: TpRules, name: str, rank: int, state: dict[str, Any]) -> tuple[int, ...] | None:
    """The shape of a TP rank's EMPTY slice of name, from its affine map or its module; None if not empty.

    AutoTP with more TP ranks than KV heads leaves some ranks no rows of the attention weights: they list
    no such parameter (ZeRO never saw it), which ds_to_universal 0.19.8 crashes on.
    """
    shape = rules.shard_shape(name, rank)
    if shape is None:
        module = dc.module_shapes(state)
        shape = module.get(name)
    return shape if shape is not None and math.prod(shape) == 0 else None


def load_states(
    tag_dir: Path, loaded: dict[Path, dict[str, Any]] | None = None,
) -> tuple[dict[int, dict[str, Any]], dict[int, Path]]:
    """Every mp rank's model_states dict (memory-mapped: their 'module' tensors are not read).

    `loaded` holds files the caller has parsed already: a BF16-optimizer save rebuilds its param_shapes
    from the optimizer files on every load, so each file is loaded once per listing.
    """
    files = dc.mp_model_states(tag_dir)
    known = loaded or {}
    return {m: known[p] if p in known else dc.load_model_states(p) for m, p in files.items()}, files


def _positive(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
