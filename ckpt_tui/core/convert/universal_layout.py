"""What a DeepSpeed universal checkpoint folder holds, as deepspeed 0.19.8 writes it and its loader reads it.

Learned from ``deepspeed/checkpoint/ds_to_universal.py`` (writer) and the engine's ``load_universal`` path
(``engine._load_checkpoint``, ``base_optimizer.load_hp_checkpoint_state_from_checkpoint_dir``,
``stage3.load_hp_checkpoint_state_from_checkpoint_dir_stage3``)::

    <tag>/mp_rank_00_model_states.pt                   ZeRO-1/2: the engine globs mp_rank_*_model_states.pt
    <tag>/zero_pp_rank_{r}_mp_rank_00_model_states.pt  ZeRO-3: it globs zero_pp_rank_0_mp_rank_*_...
    <tag>/zero/optimizer_state.pt                      optimizer globals: loss scaler, param_groups, ...
    <tag>/zero/<param>/{fp32,exp_avg,exp_avg_sq}.pt    ZeRO-1/2: {'cat_dim': 0, 'param': full-shape tensor}
                                                       ZeRO-3: bare flat 1-D tensors
    <tag>/zero/<param>/step.pt                         ZeRO-1/2 only: the Adam step (ZeRO-3 keeps it in
                                                       optimizer_state.pt)
    <tag>/zero/<other>/fp32.pt                         ZeRO-1/2: {'param': ...} for module entries without
                                                       optimizer state (tied aliases, frozen, buffers)
    <parent>/latest_universal                          the tag; engine.load_checkpoint(parent) reads it

The loader never reads 'module' from model_states (weights come from zero/), only global_steps,
global_samples (optional), skipped_steps, dp/mp_world_size and lr_scheduler (when the run has one).
"""

from __future__ import annotations

import math
import pickle
import types
from collections import OrderedDict
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.safe_pickle import stand_ins

if TYPE_CHECKING:
    import torch

ZERO = "zero"
OPTIMIZER_STATE = "optimizer_state.pt"
FP32 = "fp32"  # a parameter folder's master weights (fp32.pt)
MOMENTS = ("exp_avg", "exp_avg_sq")
LATEST_UNIVERSAL = "latest_universal"
# ZeRO-1/2 optimizer-file keys that hold per-rank partitions: ds_to_universal leaves them out.
SHARDED_KEYS = ("base_optimizer_state", "param_slice_mappings", "single_partition_of_fp32_groups")
# The loader zips the optimizer's param groups with the file's: extra entries are ignored, missing
# ones leave groups unloaded. A weights-only source cannot know the resuming run's group count.
EMPTY_PARAM_GROUPS = 16
FALLBACK_DS_VERSION = "0.16.0"  # the project's deepspeed floor; ZeRO-1/2 loading asserts a version


def layout_of(stage: int) -> str:
    """'zero3' (bare flat tensors) or 'zero12' (dicts with 'param'), as the universal reader names them."""
    return "zero3" if stage == 3 else "zero12"


def model_states_name(stage: int, mp_rank: int = 0) -> str:
    """DP rank 0's model_states file of one model-parallel rank, as a ZeRO-1/2 or a ZeRO-3 engine names it."""
    return f"zero_pp_rank_0_mp_rank_{mp_rank:02d}_model_states.pt" if stage == 3 else f"mp_rank_{mp_rank:02d}_model_states.pt"


def check_folder_name(name: str) -> None:
    """Param names become folder names: refuse any that would escape zero/ (names come from user files)."""
    if not name or name in (".", "..", OPTIMIZER_STATE) or "/" in name or "\\" in name or "\0" in name:
        raise CkptError(None, f"parameter name {name!r} cannot be a folder name in a universal checkpoint")


def deepspeed_version() -> str:
    try:
        return metadata.version("deepspeed")
    except metadata.PackageNotFoundError:
        return FALLBACK_DS_VERSION


# ------------------------------------------------------------------------------------------ saving
class _StandInPickler(pickle._Pickler):  # type: ignore[name-defined]
    """Pickles safe_pickle's inert stand-ins under the DeepSpeed class names they replaced.

    A re-saved loss scaler or ZeroStageEnum then loads as the real class in DeepSpeed and as the stand-in
    in our safe loader. The stock pickler refuses (the named global is not the stand-in object).
    """

    def save_global(self, obj: Any, name: str | None = None) -> None:
        full = getattr(obj, "_full_name", None)
        if isinstance(obj, type) and full is not None and stand_ins().get(full) is obj:
            module, _, qualname = full.rpartition(".")
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


_PICKLE_MODULE = types.ModuleType("ckpt_tui_stand_in_pickle")
_PICKLE_MODULE.Pickler = _StandInPickler  # type: ignore[attr-defined]


def owned(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor with a storage of its own: torch.save writes a view's whole storage.

    (ds_to_universal saves module entries as views of the flat ZeRO buffer, so its tied-alias fp32.pt
    holds the whole model; ours holds the one tensor.)
    """
    nbytes = tensor.numel() * tensor.element_size()
    if not tensor.is_contiguous() or tensor.storage_offset() or tensor.untyped_storage().nbytes() != nbytes:
        return tensor.contiguous().clone()
    return tensor


def save(obj: Any, path: Path) -> int:
    """torch.save with stand-ins pickled under their real names; returns the bytes written."""
    import torch

    torch.save(obj, path, pickle_module=_PICKLE_MODULE)
    return path.stat().st_size


def write_param_state(
    folder: Path, state: str, value: Any, layout: str, *, trainable: bool, hints: dict[str, Any] | None = None
) -> int:
    """One file of a parameter's folder (fp32, exp_avg, exp_avg_sq or step); returns the tensor bytes written.

    ZeRO-1/2 layout: a trainable parameter's files hold its restore hints beside the tensor (``cat_dim``,
    and for TP checkpoints ``vocab_tensor``, sub-param shapes ...), as ds_to_universal writes them. ZeRO-3
    layout: bare flat tensors, or, given hints (a TP source), the same dicts: DeepSpeed's ZeRO-3 loader
    re-slices those for its own TP degree, as ds_to_universal writes them for AutoTP + ZeRO-3.
    """
    import torch

    if state == "step":
        if layout == "zero12":
            save(value, folder / "step.pt")
        return 0
    value = owned(value.to(torch.float32))
    if layout == "zero3" and hints is None:
        obj: Any = value.view(-1)
    elif trainable:
        obj = {**(hints if hints is not None else {"cat_dim": 0}), "param": value}
    else:
        obj = {"param": value}
    save(obj, folder / f"{state}.pt")
    return value.numel() * 4


# ----------------------------------------------------------------------------- global state files
def optimizer_state(stage: int, *, scalars: dict[str, Any], param_groups: list[dict], step: Any) -> dict[str, Any]:
    """zero/optimizer_state.pt for a target stage, from the optimizer's scalars and param groups.

    ZeRO-1/2 load `param_groups` (zipped with the optimizer's) and need 'ds_version'; ZeRO-3 loads
    optimizer_state_dict.state[0].step and optimizer_state_dict.param_groups[0].
    """
    out = dict(scalars)
    out.setdefault("ds_version", deepspeed_version())
    if stage == 3:
        out["optimizer_state_dict"] = {"state": {0: {"step": step}}, "param_groups": param_groups}
    out["param_groups"] = param_groups
    return out


def fresh_optimizer_state(stage: int, step: torch.Tensor) -> dict[str, Any]:
    """For a weights-only source: empty groups keep the resuming run's hyperparameters."""
    groups = [{"params": []} for _ in range(1 if stage == 3 else EMPTY_PARAM_GROUPS)]
    return optimizer_state(stage, scalars={}, param_groups=groups, step=step)


def model_states(
    *,
    stage: int,
    step: int,
    param_shapes: list[tuple[str, tuple[int, ...]]],
    shared_params: dict[str, str],
    buffer_names: list[str],
) -> dict[str, Any]:
    """A model_states dict for a source that has none (HF weights): what the engine reads, no 'module'.

    global_samples is left out on purpose: DeepSpeed then uses global_steps x the resuming run's
    train_batch_size, the right value for a constant batch; we cannot know the batch size.
    """
    import torch

    shapes = OrderedDict((name, torch.Size(shape)) for name, shape in param_shapes)
    return {
        "module": {},
        "buffer_names": list(buffer_names),
        "optimizer": None,
        "param_shapes": [shapes],
        "frozen_param_shapes": None,
        "shared_params": dict(shared_params),
        "frozen_param_fragments": None,
        "lr_scheduler": None,
        "data_sampler": None,
        "random_ltd": None,
        "skipped_steps": 0,
        "global_steps": int(step),
        "dp_world_size": 1,
        "mp_world_size": 1,
        "checkpoint_parallel_dimensions": {"pp_degree": 1, "tp_degree": 1},
        "ds_config": {"zero_optimization": {"stage": stage}},
        "ds_version": deepspeed_version(),
    }


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
