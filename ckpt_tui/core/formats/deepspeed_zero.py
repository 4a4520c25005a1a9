"""DeepSpeed ZeRO checkpoints (stage 0-3, fp32/fp16/bf16): a save dir with `latest`, or one tag folder.

Listing reads the rank-0 model_states file only (mmap: its 'module' tensors are not read) and takes the
parameter list from `param_shapes`; optimizer files, which hold most of the bytes, are only stat'ed.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

from ckpt_tui.core import dtypes as dt
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.formats import deepspeed_common as dc
from ckpt_tui.core.formats import deepspeed_mp as mp
from ckpt_tui.core.formats.registry import Adapter
from ckpt_tui.core.model import Checkpoint, Kind, Piece, TensorEntry
from ckpt_tui.core.scan import ScanEntry, ScanReport, tree_size


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
    ckpt.layout = replace(ckpt.layout, zero_stage=_stage(ckpt, tag_dir))
    tp, pp = mp.degrees(state, len(dc.mp_model_states(tag_dir)))
    ckpt.layout = replace(ckpt.layout, tp=tp, pp=pp)
    if tp * pp > 1:
        ckpt.tensors = _grid_tensors(ckpt, main, state, root, tag_dir)
    else:
        ckpt.tensors = _tensors(ckpt, main, state, root, tag_dir)
        note = mp.pipeline_names_note([t.name for t in ckpt.tensors])  # a PipelineModule on one stage
        if note:
            ckpt.warnings.append(note)
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
    zero3 = _zero3_files(ckpt) if ckpt.zero_stage == 3 else None
    out: list[TensorEntry] = []

    def add(name: str, shape: tuple[int, ...], file: str, pieces: tuple[Piece, ...] = (), **flags) -> None:
        dtype = dtypes.get(name, default_dtype)
        out.append(TensorEntry(name, shape, dtype, file, dt.nbytes(dtype, math.prod(shape)), pieces=pieces, **flags))

    at = 0  # ZeRO-3: where the next parameter starts in every rank's flat partition
    for name, shape in dc.param_shapes(main, state):
        if zero3 is None:
            add(name, shape, main_rel)  # ZeRO-1/2: the full 16/32-bit copy is in model_states
            continue
        numel, files = math.prod(shape), zero3[0]
        pieces = zero3_pieces(numel, at, files)
        at += -(-numel // len(files)) if files else 0  # every rank holds ceil(numel / dp) of it
        add(name, shape, pieces[0].file if pieces else main_rel, pieces)
    for name, shape in dc.frozen_shapes(state).items():
        if zero3 is None:
            add(name, shape, main_rel, frozen=True)
            continue
        pieces = zero3_pieces(math.prod(shape), 0, zero3[1])
        add(name, shape, pieces[0].file if pieces else main_rel, pieces, frozen=True)
    shapes = dc.module_shapes(state)
    for name in state.get("buffer_names") or []:
        if name in shapes:
            add(str(name), shapes[str(name)], main_rel, buffer=True)
    by_name = {t.name: t for t in out}
    for alias, owner in ckpt.shared_params.items():
        if alias not in by_name and owner in by_name:
            o = by_name[owner]
            add(alias, o.shape, o.file, o.pieces, tied_to=owner)
    if not out:
        raise CkptError(main, "model_states has no 'param_shapes': cannot list the parameters")
    return out


def _grid_tensors(ckpt: Checkpoint, main: Path, state0: dict, root: Path, tag_dir: Path) -> list[TensorEntry]:
    """A TP x PP checkpoint: every parameter with its FULL shape, its pieces the TP ranks' blocks."""
    states, files = mp.load_states(tag_dir, {main: state0})
    grid = mp.build(states, files, ckpt.layout.tp, ckpt.layout.pp)
    rel = {m: str(path.relative_to(root)) for m, path in files.items()}
    dtypes: dict[str, str] = {}
    for m in sorted(states, reverse=True):
        dtypes.update(dc.module_dtypes(states[m]))
    default_dtype = ckpt.compute_dtype or "float32"
    out = []
    for param in grid.params.values():
        dtype = dtypes.get(param.name, default_dtype)
        pieces = grid.pieces(param.name, rel)
        out.append(TensorEntry(
            param.name, param.shape, dtype, pieces[0].file if pieces else rel[0],
            dt.nbytes(dtype, param.numel), frozen=param.frozen, pieces=pieces,
            split=param.split.describe(), split_rule=param.split.pattern,
        ))
    shapes = dc.module_shapes(state0)
    for name in state0.get("buffer_names") or []:
        if name in shapes and name not in grid.params:
            dtype = dtypes.get(str(name), default_dtype)
            out.append(TensorEntry(str(name), shapes[str(name)], dtype, rel[0], dt.nbytes(dtype, math.prod(shapes[str(name)])), buffer=True))
    ckpt.warnings.extend(grid.warnings)
    if not out:
        raise CkptError(files[0], "model_states has no 'param_shapes': cannot list the parameters")
    return out


def _zero3_files(ckpt: Checkpoint) -> tuple[list[str], list[str]]:
    """ZeRO-3 (mp rank 0): the optimizer file and the model_states file of each DP rank, rank order.

    The fp32 partitions of trainable parameters are in the optimizer files; frozen parameters are
    partitioned the same way into each rank's model_states (`frozen_param_fragments`).
    """
    def by_rank(role: str) -> list[str]:
        files = {f.rank: f.path for f in ckpt.files if f.role == role and f.rank is not None and _mp_rank(f.path) == 0}
        if sorted(files) != list(range(ckpt.dp_world_size or len(files))):
            return []  # a rank's file is missing: where the pieces are is unknown (and warned about)
        return [files[r] for r in range(len(files))]

    return by_rank("optim_states"), by_rank("model_states")


def _mp_rank(rel: str) -> int:
    return dc.mp_rank_of(rel.rsplit("/", 1)[-1]) or 0


def zero3_pieces(numel: int, at: int, files: list[str]) -> tuple[Piece, ...]:
    """ZeRO-3 partitions one parameter on its own: ceil(numel / dp) values per rank, the last ones padded.

    Rank r holds values [r * part, (r + 1) * part) of the flattened parameter at offset `at` of its flat
    partition (`at` is the same on every rank: each holds one part of every parameter before it).
    Frozen fragments are tensors of their own in each rank's model_states: `at` 0.
    """
    dp = len(files)
    if dp == 0:
        return ()
    part = -(-numel // dp)
    out = []
    for rank, file in enumerate(files):
        start = rank * part
        count = min(part, numel - start)
        if count <= 0:
            break
        out.append(Piece(file, rank=rank, flat=(start, count), at=at))
    return tuple(out)


def _check_rank_files(ckpt: Checkpoint) -> None:
    dp = ckpt.dp_world_size
    optim = [f for f in ckpt.files if f.role == "optim_states"]
    ckpt.metadata["optim_states_files"] = len(optim)
    if not dp or ckpt.zero_stage in (None, 0):
        return
    ranks = {(f.rank, _mp_rank(f.path)) for f in optim}
    mp_ranks = ckpt.layout.tp * ckpt.layout.pp
    if mp_ranks * dp > len(optim) + 64:  # degrees read from the file: never enumerate a hostile count
        ckpt.warnings.append(f"the run had {mp_ranks * dp:,} ranks but there are {len(optim)} optimizer files: "
                             "conversion of this checkpoint will fail")
        return
    missing = sorted((m, d) for m in range(mp_ranks) for d in range(dp) if (d, m) not in ranks)
    if missing:
        where = ", ".join(f"DP {d}" + (f" of mp rank {m}" if mp_ranks > 1 else "") for m, d in missing)
        ckpt.warnings.append(f"optimizer files missing for {where} (DP {dp}): conversion of this checkpoint will fail")


def tag_dir_of(ckpt: Checkpoint) -> Path:
    """The tag folder of a ZeRO Checkpoint read by this module (its path may be the save dir)."""
    if ckpt.tag and (ckpt.path / ckpt.tag).is_dir() and ckpt.path.name != ckpt.tag:
        return ckpt.path / ckpt.tag
    return ckpt.path


# ------------------------------------------------------------------------------------ the adapter
def scan_entry(folder: Path, _report: ScanReport) -> ScanEntry:
    tags = tag_dirs(folder)
    if not tags:  # the folder is itself a tag folder
        name = folder.name
        return ScanEntry(Kind.DS_ZERO, folder, tree_size(folder), dc.step_from_tag(name), name, stage=_named_stage(folder))
    try:
        newest = dc.read_pointer(folder, dc.LATEST) or tags[-1].name
    except Exception:  # noqa: BLE001 - a broken pointer is reported by inspect, not by scan
        newest = tags[-1].name
    newest_dir = folder / newest if (folder / newest).is_dir() else tags[-1]
    return ScanEntry(
        Kind.DS_ZERO,
        folder,
        sum(tree_size(t) for t in tags),
        dc.step_from_tag(newest),
        newest,
        detail=f"{len(tags)} tag(s): {', '.join(t.name for t in tags)}",
        stage=_named_stage(newest_dir),
    )


def scan_inside(folder: Path) -> set[str] | None:
    """A save dir may hold more than its tags (universal conversions beside them): walk the rest."""
    tags = {t.name for t in tag_dirs(folder)}
    return tags or None


def _named_stage(tag_dir: Path) -> int | None:
    """3 when the tag folder has per-rank model_states (zero_pp_rank_*_model_states.pt), a ZeRO-3 layout.

    Stages 0-2 share their file names; telling them apart needs a pickle, which a scan never reads.
    """
    try:
        names = os.listdir(tag_dir)
    except OSError:
        return None
    return 3 if any(dc.ZERO3_MODEL_STATES.match(n) for n in names) else None


def open_source(ckpt: Checkpoint):  # noqa: ANN201 - the source module imports torch-free, but is large
    from ckpt_tui.core.formats.deepspeed_zero_source import ZeroSource

    return ZeroSource(ckpt)


def native_stage(ckpt: Checkpoint) -> int:
    return ckpt.zero_stage if ckpt.zero_stage in (1, 2, 3) else 1


def config_dirs(ckpt: Checkpoint) -> tuple[Path, ...]:
    """The save dir (HF Trainer + DeepSpeed keep config.json beside the tags), then the tag folder."""
    return (ckpt.path, tag_dir_of(ckpt))


ADAPTER = Adapter(
    kind=Kind.DS_ZERO,
    label="DeepSpeed ZeRO",
    short="ZeRO",
    color="magenta",
    detect=detect,
    priority=20,
    read=read,
    open_source=open_source,
    scan_entry=scan_entry,
    scan_inside=scan_inside,
    staged=True,
    defaults=dc.conversion_defaults(native_stage, config_dirs),
    pickle_records=dc.PICKLE_RECORDS,
    pickle_int_enums=dc.PICKLE_INT_ENUMS,
)
