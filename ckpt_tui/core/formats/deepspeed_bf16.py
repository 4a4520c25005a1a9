"""The BF16 optimizer's parameter list (ZeRO stage 0 + bf16, the pipeline-parallel default for bf16).

DeepSpeed's ``BF16_Optimizer`` saves ``mp_rank_*_model_states.pt`` with ``param_shapes: None`` (and a
PipelineModule saves ``module: None``), so the model states alone cannot list the parameters, and
``ds_to_universal`` 0.19.8 refuses the folder. What a listing needs is still on disk:

- each DP rank's ``bf16_zero_pp_rank_{D}_mp_rank_{M}_optim_states.pt`` holds ``param_slice_mappings``:
  per param group, ``{name: fragment_address(numel, start)}`` of the parameters with values in that rank's
  flat partition, in flat-buffer order. Across the DP ranks, in rank order, they give every parameter's
  name, its place in the flat buffer and its size (a parameter cut by a partition edge is in both);
- the layer files ``layer_{L:02d}[-model_{T:02d}]-model_states.pt`` hold each layer's state_dict, whose
  tensors give the shapes (``<L>.<key>``; a tied ``tied_modules.<k>.<key>`` is in the file of the first
  layer holding ``<key>`` with that size).

The result is what ``param_shapes`` would have been, so the ZeRO-1/2 readers take it from here (the flat
layout of the BF16 optimizer is theirs: groups padded to 2 x DP, cut into equal partitions).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from ckpt_tui.core import safe_pickle
from ckpt_tui.core.errors import CkptError

LAYER_FILE = re.compile(r"^layer_(\d+)(?:-model_(\d+))?-model_states\.pt$")
TIED = re.compile(r"^tied_modules\.[^.]+\.(.+)$")
MAX_GROUPS = 1024  # param groups a real optimizer has; anything above is a hostile file


def recover_param_shapes(tag_dir: Path, optim: list[Path], tp_rank: int) -> list[dict[str, tuple[int, ...]]]:
    """param_shapes of one model-parallel rank from its BF16 optimizer files (DP order) and layer files."""
    groups: list[dict[str, int]] = []
    for path in optim:
        for g, mapping in enumerate(_slice_mappings(path)):
            while len(groups) <= g:
                groups.append({})
            for name, numel in mapping:
                groups[g][name] = groups[g].get(name, 0) + numel
    shapes = _layer_shapes(tag_dir, tp_rank)
    out = []
    for group in groups:
        named = {}
        for name, numel in group.items():
            shape = _shape_of(name, numel, shapes)
            if shape is None:
                raise CkptError(optim[0], f"'{name}' ({numel:,} values) has no tensor of that size in the "
                                              "layer files: cannot tell its shape")
            named[name] = shape
        out.append(named)
    return out


def _slice_mappings(path: Path) -> list[list[tuple[str, int]]]:
    """[(name, numel)] per group of one optimizer file, in flat order."""
    obj = safe_pickle.load(path, mmap=True)  # mapped: the flat partitions are not read
    osd = obj.get("optimizer_state_dict") if isinstance(obj, dict) else None
    mappings = osd.get("param_slice_mappings") if isinstance(osd, dict) else None
    if not isinstance(mappings, list) or len(mappings) > MAX_GROUPS:
        raise CkptError(path, "a BF16 optimizer file without 'param_slice_mappings': cannot list the parameters")
    out = []
    for group in mappings:
        if not isinstance(group, dict):
            raise CkptError(path, "'param_slice_mappings' is not a list of name -> fragment mappings")
        entries = []
        for name, fragment in group.items():
            numel = getattr(fragment, "numel", None)
            if not isinstance(name, str) or not isinstance(numel, int) or numel < 0:
                raise CkptError(path, f"'param_slice_mappings' has a malformed entry for {name!r}")
            entries.append((name, numel))
        out.append(entries)
    return out


def _layer_shapes(tag_dir: Path, tp_rank: int) -> dict[int, dict[str, tuple[int, ...]]]:
    """Layer index -> {state_dict key: shape} of this TP rank's layer files (metadata only)."""
    out: dict[int, dict[str, tuple[int, ...]]] = {}
    for path in sorted(tag_dir.iterdir()):
        m = LAYER_FILE.match(path.name)
        if not m or int(m.group(2) or 0) != tp_rank:
            continue
        state = safe_pickle.load(path, mmap=True)
        if isinstance(state, dict):
            out[int(m.group(1))] = {str(k): tuple(int(d) for d in v.shape) for k, v in state.items() if hasattr(v, "shape")}
    return out


def _shape_of(name: str, numel: int, layers: dict[int, dict[str, tuple[int, ...]]]) -> tuple[int, ...] | None:
    head, _, key = name.partition(".")
    if head.isdigit():
        shape = layers.get(int(head), {}).get(key)
        return shape if shape is not None and math.prod(shape) == numel else None
    tied = TIED.match(name)
    if tied:
        for index in sorted(layers):
            shape = layers[index].get(tied.group(1))
            if shape is not None and math.prod(shape) == numel:
                return shape
    return None
