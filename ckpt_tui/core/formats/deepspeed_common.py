"""Facts shared by DeepSpeed ZeRO and universal folders: file names, tags, model_states contents."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ckpt_tui.core import dtypes as dt
from ckpt_tui.core import safe_pickle
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.formats import deepspeed_bf16
from ckpt_tui.core.formats.registry import ConversionDefaults
from ckpt_tui.core.model import Checkpoint, FileEntry, ParallelLayout

LATEST = "latest"
LATEST_UNIVERSAL = "latest_universal"

# zero_pp_rank_{dp}_mp_rank_{mp}_model_states.pt (ZeRO-3, one per DP rank) | mp_rank_{mp}_model_states.pt
ZERO3_MODEL_STATES = re.compile(r"^zero_pp_rank_(\d+)_mp_rank_(\d+)_model_states\.pt$")
MODEL_STATES = re.compile(r"^mp_rank_(\d+)_model_states\.pt$")
OPTIM_STATES = re.compile(r"^(bf16_)?zero_pp_rank_(\d+)_mp_rank_(\d+)_optim_states\.pt$")
LAYER_STATES = deepspeed_bf16.LAYER_FILE  # layer_{L}[-model_{T}]-model_states.pt (PipelineModule)
STEP_IN_TAG = re.compile(r"(?:global_step|step|iter_?)(\d+)")


# Non-tensor classes found in DeepSpeed / Megatron-DeepSpeed checkpoints (see FIELD_NOTES.md): the
# pickle stand-ins of both DeepSpeed kinds.
PICKLE_RECORDS = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.utils.tensor_fragment.fragment_address",
    "deepspeed.checkpoint.universal_checkpoint.SubparamShape",
    "argparse.Namespace",
)
PICKLE_INT_ENUMS = ("deepspeed.runtime.zero.config.ZeroStageEnum",)


def conversion_defaults(
    native_stage: Callable[[Checkpoint], int], config_dirs: Callable[[Checkpoint], tuple[Path, ...]]
) -> ConversionDefaults:
    """What DeepSpeed-written kinds share: exported as HF by default, values are the fp32 master weights."""
    return ConversionDefaults(
        target="hf",
        native_stage=native_stage,
        read_dtype=lambda _ckpt, _dtype: "float32",
        weights_note="keep: the fp32 master weights",
        config_dirs=config_dirs,
    )


def read_pointer(folder: Path, name: str) -> str | None:
    """The tag named by a `latest`/`latest_universal` file, or None if there is none."""
    pointer = folder / name
    if not pointer.is_file():
        return None
    try:
        tag = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CkptError(pointer, f"cannot read the tag pointer ({exc})") from None
    if not tag or "/" in tag or tag in (".", ".."):
        raise CkptError(pointer, f"does not name a tag folder (content {tag!r})")
    return tag


def step_from_tag(tag: str | None) -> int | None:
    match = STEP_IN_TAG.search(tag or "")
    return int(match.group(1)) if match else None


def classify(name: str) -> tuple[str, int | None] | None:
    """(role, dp rank) of a DeepSpeed file name, None when it is not one."""
    if m := ZERO3_MODEL_STATES.match(name):
        return "model_states", int(m.group(1))
    if MODEL_STATES.match(name):
        return "model_states", None
    if m := OPTIM_STATES.match(name):
        return "optim_states", int(m.group(2))
    if LAYER_STATES.match(name):
        return "layer_states", None
    return None


def model_states_files(tag_dir: Path) -> list[Path]:
    """Rank-0 first: the file whose param_shapes describe the model."""
    zero3 = sorted((p for p in tag_dir.iterdir() if ZERO3_MODEL_STATES.match(p.name)), key=_rank_key)
    plain = sorted(p for p in tag_dir.iterdir() if MODEL_STATES.match(p.name))
    return plain + zero3


def mp_rank_of(name: str) -> int | None:
    """The model-parallel rank M in a DeepSpeed file name (mp_rank_{M:02d}), None when it has none."""
    for pattern in (MODEL_STATES, ZERO3_MODEL_STATES, OPTIM_STATES):
        if m := pattern.match(name):
            return int(m.group(pattern.groups))
    return None


def mp_model_states(tag_dir: Path) -> dict[int, Path]:
    """mp rank -> the model_states file whose param_shapes list that rank's (TP-local) parameters.

    ZeRO-1/2 write one ``mp_rank_{M}`` file per model-parallel rank (M = pp * TP + tp); ZeRO-3 writes
    one per (DP, TP) rank: DP rank 0's stands for its TP rank.
    """
    out: dict[int, Path] = {}
    for path in model_states_files(tag_dir):
        m = MODEL_STATES.match(path.name)
        z = ZERO3_MODEL_STATES.match(path.name)
        if m:
            out.setdefault(int(m.group(1)), path)
        elif z and int(z.group(1)) == 0:
            out.setdefault(int(z.group(2)), path)
    return dict(sorted(out.items()))


def optim_files(tag_dir: Path, mp: int) -> list[tuple[int, Path]]:
    """(DP rank, file) of one model-parallel rank's optimizer partitions, DP order."""
    found = []
    for path in tag_dir.iterdir():
        m = OPTIM_STATES.match(path.name)
        if m and int(m.group(3)) == mp:
            found.append((int(m.group(2)), path))
    return sorted(found)


def bf16_optim_files(tag_dir: Path, mp: int) -> list[Path]:
    """The BF16 optimizer's files (bf16_zero_pp_rank_*) of one model-parallel rank, DP order."""
    return [path for _, path in optim_files(tag_dir, mp) if path.name.startswith("bf16_")]


def _rank_key(path: Path) -> tuple[int, int]:
    m = ZERO3_MODEL_STATES.match(path.name)
    return (int(m.group(2)), int(m.group(1))) if m else (0, 0)


def load_model_states(path: Path) -> dict[str, Any]:
    """A model_states dict (mapped); param_shapes rebuilt where the BF16 optimizer saved none."""
    state = safe_pickle.load(path, mmap=True)
    if not isinstance(state, dict) or "param_shapes" not in state and "module" not in state:
        raise CkptError(path, "not a DeepSpeed model_states file (no 'module' or 'param_shapes')")
    mp_rank = mp_rank_of(path.name)
    if state.get("param_shapes") is None and MODEL_STATES.match(path.name) and mp_rank is not None:
        bf16 = bf16_optim_files(path.parent, mp_rank)
        if bf16:
            dims = state.get("checkpoint_parallel_dimensions")
            tp = _positive(dims.get("tp_degree")) if isinstance(dims, dict) else None
            shapes = deepspeed_bf16.recover_param_shapes(path.parent, bf16, mp_rank % (tp or 1))
            state = {**state, "param_shapes": shapes}
    return state


def param_shapes(path: Path, state: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """Trainable parameters in flat-buffer order from `param_shapes` (a list of dicts, one per group)."""
    groups = state.get("param_shapes")
    if groups is None:
        return []
    if isinstance(groups, dict):
        groups = [groups]
    out = []
    try:
        for group in groups:
            for name, shape in group.items():
                out.append((str(name), tuple(int(d) for d in shape)))
    except (AttributeError, TypeError, ValueError):
        raise CkptError(path, "'param_shapes' is not a list of name -> shape mappings") from None
    return out


def frozen_shapes(state: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    frozen = state.get("frozen_param_shapes") or {}
    return {str(k): tuple(int(d) for d in v) for k, v in frozen.items()}


def fill_run_facts(ckpt: Checkpoint, state: dict[str, Any]) -> None:
    """Step, world sizes, version, stage and precision from a model_states dict and its ds_config."""
    config = state.get("ds_config") or {}
    if not isinstance(config, dict):
        config = {}
    ckpt.step = _int(state.get("global_steps"), ckpt.step)
    ckpt.layout = layout_of(state, config, ckpt.layout)
    ckpt.ds_version = str(state["ds_version"]) if state.get("ds_version") is not None else ckpt.ds_version
    if (config.get("bf16") or {}).get("enabled"):
        ckpt.compute_dtype = "bfloat16"
    elif (config.get("fp16") or {}).get("enabled"):
        ckpt.compute_dtype = "float16"
    elif config:
        ckpt.compute_dtype = "float32"
    shared = state.get("shared_params") or {}
    ckpt.shared_params.update({str(k): str(v) for k, v in shared.items()})
    optimizer = config.get("optimizer") or {}
    ckpt.config = {
        k: v
        for k, v in {
            "train_batch_size": config.get("train_batch_size"),
            "train_micro_batch_size_per_gpu": config.get("train_micro_batch_size_per_gpu"),
            "gradient_accumulation_steps": config.get("gradient_accumulation_steps"),
            "optimizer": optimizer.get("type") if isinstance(optimizer, dict) else None,
            "zero_stage": ckpt.zero_stage,
        }.items()
        if v is not None
    }
    for key in ("global_samples", "skipped_steps"):
        if state.get(key) is not None:
            ckpt.metadata[key] = _int(state[key], None)


def layout_of(state: dict[str, Any], config: dict[str, Any], known: ParallelLayout) -> ParallelLayout:
    """DP, TP, PP degrees and ZeRO stage as a model_states file records them (what it lacks stays known's).

    `checkpoint_parallel_dimensions` ({pp_degree, tp_degree}) is what DeepSpeed writes for 3D runs;
    `mp_world_size` counts model-parallel ranks (TP) in older and plain saves.
    """
    dims = state.get("checkpoint_parallel_dimensions")
    dims = dims if isinstance(dims, dict) else {}
    tp = _positive(dims.get("tp_degree")) or _positive(state.get("mp_world_size")) or known.tp
    pp = _positive(dims.get("pp_degree")) or known.pp
    zero = config.get("zero_optimization") or {}
    stage = _int(zero.get("stage"), known.zero_stage) if isinstance(zero, dict) else known.zero_stage
    dp = _positive(state.get("dp_world_size")) or known.dp
    return ParallelLayout(dp=dp, tp=tp, pp=pp, ep=known.ep, zero_stage=stage)


def _positive(value: Any) -> int | None:
    number = _int(value, None)
    return number if number is not None and number > 0 else None


def module_dtypes(state: dict[str, Any]) -> dict[str, str]:
    """Name -> canonical dtype of the tensors in 'module' (ZeRO-3 keeps shape-(0,) placeholders)."""
    module = state.get("module") or {}
    out = {}
    for name, value in module.items() if isinstance(module, dict) else ():
        dtype = getattr(value, "dtype", None)
        if dtype is not None:
            out[str(name)] = dt.canonical(dtype)
    return out


def module_shapes(state: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    module = state.get("module") or {}
    return {str(k): tuple(v.shape) for k, v in module.items() if hasattr(v, "shape")} if isinstance(module, dict) else {}


def folder_files(tag_dir: Path, root: Path) -> list[FileEntry]:
    """Every DeepSpeed file of a tag folder with its role, rank and size (stat only)."""
    out = []
    for p in sorted(tag_dir.iterdir()):
        if not p.is_file():
            continue
        role_rank = classify(p.name)
        if role_rank:
            out.append(FileEntry(str(p.relative_to(root)), p.stat().st_size, role_rank[0], role_rank[1]))
    return out


def _int(value: Any, default: int | None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
