"""DeepSpeed ZeRO checkpoints (stage 0-3, fp32/fp16/bf16): a save dir with `latest`, or one tag folder.

Listing reads the rank-0 model_states file only (mmap: its 'module' tensors are not read) and takes the
parameter list from `param_shapes`; optimizer files, which hold most of the bytes, are only stat'ed.
"""

from __future__ import annotations

from pathlib import Path

from ckpt_tui.core import dtypes as dt
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.formats import deepspeed_common as dc
from ckpt_tui.core.model import Checkpoint, Kind, TensorEntry


def _is_tag_dir(path: Path) -> bool:
    return path.is_dir() and not (path / "zero").is_dir() and any(
        dc.classify(p.name) for p in path.iterdir() if p.name.endswith("_states.pt")
    )


def detect(path: Path) -> bool:
    if not path.is_dir():
        return False
    if (path / dc.LATEST).is_file():
        return True
    return _is_tag_dir(path)


def tag_dirs(save_dir: Path) -> list[Path]:
    """Tag folders of a save dir, oldest step first."""
    found = [p for p in save_dir.iterdir() if _is_tag_dir(p)]
    return sorted(found, key=lambda p: (dc.step_from_tag(p.name) or -1, p.name))


def resolve(path: Path) -> tuple[Path, Path, str, list[str]]:
    """(root, tag folder, tag, warnings) for a save dir or a tag folder."""
    if path.is_file():
        if dc.classify(path.name):
            path = path.parent
        else:
            raise CkptError(path, "expected a DeepSpeed checkpoint folder (save dir or tag folder)")
    tag = dc.read_pointer(path, dc.LATEST)
    if tag is not None:
        tag_dir = path / tag
        if not tag_dir.is_dir():
            raise CkptError(path / dc.LATEST, f"names tag '{tag}' but there is no folder {tag_dir}")
        return path, tag_dir, tag, []
    if _is_tag_dir(path):
        return path, path, path.name, []
    tags = tag_dirs(path) if path.is_dir() else []
    if not tags:
        raise CkptError(path, "not a DeepSpeed ZeRO checkpoint (no 'latest' file and no *_model_states.pt)")
    newest = tags[-1]
    return path, newest, newest.name, [f"no 'latest' file: showing the newest tag '{newest.name}'"]


def read(path: Path) -> Checkpoint:
    root, tag_dir, tag, warnings = resolve(path)
    ckpt = Checkpoint(kind=Kind.DS_ZERO, path=root, tag=tag, warnings=warnings)
    ckpt.step = dc.step_from_tag(tag)
    ckpt.files = dc.folder_files(tag_dir, root)
    states_files = dc.model_states_files(tag_dir)
    if not states_files:
        if any(f.role == "layer_states" for f in ckpt.files):
            raise CkptError(tag_dir, "pipeline-parallel layer files only: no mp_rank_*_model_states.pt to list")
        raise CkptError(tag_dir, "no model_states file (mp_rank_00_model_states.pt or zero_pp_rank_0_...)")
    main = states_files[0]
    state = dc.load_model_states(main)
    dc.fill_run_facts(ckpt, state)
    ckpt.metadata["model_states_file"] = str(main.relative_to(root))
    ckpt.zero_stage = _stage(ckpt, tag_dir)
    ckpt.tensors = _tensors(ckpt, main, state, root, tag_dir)
    if root != tag_dir:
        ckpt.metadata["tags"] = [p.name for p in tag_dirs(root)]
    ckpt.metadata["has_zero_to_fp32_script"] = (root / "zero_to_fp32.py").is_file()
    _check_rank_files(ckpt)
    return ckpt


def _stage(ckpt: Checkpoint, tag_dir: Path) -> int | None:
    if ckpt.zero_stage is not None:
        return ckpt.zero_stage
    if any(dc.ZERO3_MODEL_STATES.match(f.path.rsplit("/", 1)[-1]) for f in ckpt.files):
        return 3
    return None


def _tensors(ckpt: Checkpoint, main: Path, state: dict, root: Path, tag_dir: Path) -> list[TensorEntry]:
    dtypes = dc.module_dtypes(state)
    default_dtype = ckpt.compute_dtype or "float32"
    main_rel = str(main.relative_to(root))
    if ckpt.zero_stage == 3:
        optim = sorted(f.path for f in ckpt.files if f.role == "optim_states")
        # ZeRO-3 keeps every parameter partitioned across the optimizer files of all ranks.
        data_file = optim[0].replace("zero_pp_rank_0_", "zero_pp_rank_*_") if optim else main_rel
    else:
        data_file = main_rel
    out: list[TensorEntry] = []

    def add(name: str, shape: tuple[int, ...], file: str, **flags) -> None:
        dtype = dtypes.get(name, default_dtype)
        numel = 1
        for d in shape:
            numel *= d
        out.append(TensorEntry(name, shape, dtype, file, dt.nbytes(dtype, numel), **flags))

    for name, shape in dc.param_shapes(main, state):
        add(name, shape, data_file)
    frozen_file = main_rel if ckpt.zero_stage != 3 else data_file
    for name, shape in dc.frozen_shapes(state).items():
        add(name, shape, frozen_file, frozen=True)
    shapes = dc.module_shapes(state)
    for name in state.get("buffer_names") or []:
        if name in shapes:
            add(str(name), shapes[str(name)], main_rel, buffer=True)
    by_name = {t.name: t for t in out}
    for alias, owner in ckpt.shared_params.items():
        if alias not in by_name and owner in by_name:
            add(alias, by_name[owner].shape, by_name[owner].file, tied_to=owner)
    if not out:
        raise CkptError(main, "model_states has no 'param_shapes': cannot list the parameters")
    return out


def _check_rank_files(ckpt: Checkpoint) -> None:
    dp = ckpt.dp_world_size
    optim = [f for f in ckpt.files if f.role == "optim_states"]
    ckpt.metadata["optim_states_files"] = len(optim)
    if ckpt.mp_world_size and ckpt.mp_world_size > 1:
        ckpt.warnings.append(
            f"tensor-parallel checkpoint (mp_world_size {ckpt.mp_world_size}): shapes are those of mp rank 0's slices"
        )
    if not dp or ckpt.zero_stage in (None, 0):
        return
    ranks = {f.rank for f in optim}
    missing = sorted(set(range(dp)) - ranks)
    if missing:
        ckpt.warnings.append(
            f"optimizer files missing for DP rank(s) {', '.join(map(str, missing))} of {dp}: "
            "conversion of this checkpoint will fail"
        )


def tag_dir_of(ckpt: Checkpoint) -> Path:
    """The tag folder of a ZeRO Checkpoint read by this module (its path may be the save dir)."""
    if ckpt.tag and (ckpt.path / ckpt.tag).is_dir() and ckpt.path.name != ckpt.tag:
        return ckpt.path / ckpt.tag
    return ckpt.path
