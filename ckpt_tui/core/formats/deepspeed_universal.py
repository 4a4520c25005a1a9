"""DeepSpeed universal checkpoints: ``zero/<param>/{fp32,exp_avg,exp_avg_sq,step}.pt`` per parameter.

Two layouts exist. ds_to_universal on ZeRO-1/2 writes ``{'param': shaped tensor, 'cat_dim': ...}`` dicts;
on ZeRO-3 it writes bare flat tensors, whose shapes only the copied model_states file knows. Shapes come
from that file when it has them; otherwise from fp32.pt itself (mmap'ed: only its pickle is read).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckpt_tui.core import dtypes as dt
from ckpt_tui.core import safe_pickle
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.formats import deepspeed_common as dc
from ckpt_tui.core.formats.registry import Adapter
from ckpt_tui.core.memory import release_mapped
from ckpt_tui.core.model import Checkpoint, FileEntry, Kind, TensorEntry
from ckpt_tui.core.scan import ScanEntry, ScanReport, tree_size
from ckpt_tui.core.sources import DeepSpeedState, SourceTensor, TensorSource

if TYPE_CHECKING:
    import torch

ZERO = "zero"
OPTIMIZER_STATE = "optimizer_state.pt"
STATE_FILES = ("fp32", "exp_avg", "exp_avg_sq", "step")


def _is_universal_dir(path: Path) -> bool:
    zero = path / ZERO
    return zero.is_dir() and ((zero / OPTIMIZER_STATE).is_file() or any((p / "fp32.pt").is_file() for p in zero.iterdir()))


def detect(path: Path) -> bool:
    if not path.is_dir():
        return False
    if _is_universal_dir(path):
        return True
    return not (path / dc.LATEST).is_file() and (path / dc.LATEST_UNIVERSAL).is_file()


def resolve(path: Path) -> tuple[Path, str]:
    """(universal folder, tag) for the folder itself, its `zero/` subfolder, or a dir with latest_universal."""
    if path.name == ZERO and _is_universal_dir(path.parent):
        path = path.parent
    if _is_universal_dir(path):
        return path, path.name
    tag = dc.read_pointer(path, dc.LATEST_UNIVERSAL)
    if tag is None:
        raise CkptError(path, "not a DeepSpeed universal checkpoint (no zero/ folder, no latest_universal)")
    if not _is_universal_dir(path / tag):
        raise CkptError(path / dc.LATEST_UNIVERSAL, f"names '{tag}' but {path / tag} has no zero/ parameter folders")
    return path / tag, tag


def read(path: Path) -> Checkpoint:
    folder, tag = resolve(path)
    ckpt = Checkpoint(kind=Kind.DS_UNIVERSAL, path=folder, tag=tag, step=dc.step_from_tag(tag))
    ckpt.files = dc.folder_files(folder, folder)
    shapes: dict[str, tuple[int, ...]] = {}
    states_files = dc.model_states_files(folder)
    if states_files:
        state = dc.load_model_states(states_files[0])
        dc.fill_run_facts(ckpt, state)
        if ckpt.layout.tp == 1:  # a TP run's model_states list TP-local shapes: fp32.pt has the full ones
            shapes = dict(dc.param_shapes(states_files[0], state))
            shapes.update(dc.frozen_shapes(state))
        ckpt.metadata["model_states_file"] = states_files[0].name
    else:
        ckpt.warnings.append("no model_states file: DeepSpeed cannot resume from this folder as it is")
    zero = folder / ZERO
    opt = zero / OPTIMIZER_STATE
    if opt.is_file():
        ckpt.files.append(FileEntry(f"{ZERO}/{OPTIMIZER_STATE}", opt.stat().st_size, "optimizer_state"))
    else:
        ckpt.warnings.append(f"no {ZERO}/{OPTIMIZER_STATE}: DeepSpeed's load_universal needs it")
    layout = None
    all_states: set[str] = set()
    for param_dir in sorted(p for p in zero.iterdir() if p.is_dir()):
        name = param_dir.name
        present = tuple(s for s in STATE_FILES if (param_dir / f"{s}.pt").is_file())
        for s in present:
            f = param_dir / f"{s}.pt"
            ckpt.files.append(FileEntry(f"{ZERO}/{name}/{s}.pt", f.stat().st_size, "zero_state"))
        all_states.update(present)
        if "fp32" not in present:
            raise CkptError(param_dir, "parameter folder has no fp32.pt")
        shape = shapes.get(name)
        if shape is None or layout is None:
            file_shape, layout_here = _fp32_shape(param_dir / "fp32.pt")
            layout = layout or layout_here
            if shape is None:
                shape = _alias_shape(ckpt, name, shapes) or file_shape
        numel = 1
        for d in shape:
            numel *= d
        tied = ckpt.shared_params.get(name)
        ckpt.tensors.append(
            TensorEntry(name, shape, "float32", f"{ZERO}/{name}/fp32.pt", dt.nbytes("float32", numel), present, tied_to=tied)
        )
    if not ckpt.tensors:
        raise CkptError(zero, "no parameter folders")
    by_name = {t.name: t for t in ckpt.tensors}
    for alias, owner in ckpt.shared_params.items():
        if alias not in by_name and owner in by_name:  # ds_to_universal on ZeRO-3 writes no alias folder
            o = by_name[owner]
            ckpt.tensors.append(TensorEntry(alias, o.shape, o.dtype, o.file, o.nbytes, o.states, tied_to=owner))
    ckpt.optimizer_states = tuple(s for s in STATE_FILES if s in all_states and s != "fp32")
    ckpt.metadata["layout"] = layout
    listed = {t.name for t in ckpt.tensors}
    lacking = [n for n in shapes if n not in listed]
    if lacking:
        ckpt.warnings.append(f"{len(lacking)} parameter(s) of model_states have no zero/ folder, e.g. '{lacking[0]}'")
    return ckpt


def _alias_shape(ckpt: Checkpoint, name: str, shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    owner = ckpt.shared_params.get(name)
    return shapes.get(owner) if owner else None


def _fp32_shape(path: Path) -> tuple[tuple[int, ...], str]:
    """Shape stored in an fp32.pt and which layout wrote it ('zero12' dict or 'zero3' flat tensor)."""
    obj: Any = safe_pickle.load(path, mmap=True)
    if isinstance(obj, dict) and "param" in obj and hasattr(obj["param"], "shape"):
        return tuple(obj["param"].shape), "zero12"
    if hasattr(obj, "shape"):
        return tuple(obj.shape), "zero3"
    raise CkptError(path, f"expected a tensor or a dict with 'param', found {type(obj).__name__}")


# ----------------------------------------------------------------------------------------- values
class UniversalSource(TensorSource):
    """``zero/<name>/<state>.pt``: one whole tensor per file (bare flat in the ZeRO-3 layout)."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__(checkpoint)
        self._states = {}
        self._hints: dict[str, dict[str, Any]] = {}
        names = {t.name for t in checkpoint.tensors}
        for t in checkpoint.tensors:
            # ds_to_universal writes tied aliases their own folder: keep them readable, but as aliases
            if t.tied_to and t.tied_to in names:
                self.aliases[t.name] = t.tied_to
            else:
                self.tensors.append(SourceTensor(t.name, t.shape, "float32"))
            self._states[t.name] = t.states

    def states(self, name: str) -> tuple[str, ...]:
        name = self.aliases.get(name, name)
        return tuple(s for s in self._states.get(name, ()) if s != "fp32")

    def _load(self, name: str, state: str) -> torch.Tensor:
        name = self.aliases.get(name, name)  # an alias holds its owner's values (or has no folder at all)
        path = self.checkpoint.path / "zero" / name / f"{state}.pt"
        obj, mapped = safe_pickle.load_mapped(path)
        value = obj.get("param") if isinstance(obj, dict) else obj
        if state == "fp32":
            self._hints[name] = {k: v for k, v in obj.items() if k != "param"} if isinstance(obj, dict) else {"cat_dim": 0}
        import torch

        if not isinstance(value, torch.Tensor):
            if state == "step" and isinstance(value, (int, float)):
                return torch.tensor(value)
            raise CkptError(path, f"expected a tensor or a dict with 'param', found {type(obj).__name__}")
        out = value.clone()
        if mapped:
            release_mapped(value)
        if state == "step":
            return out
        shape = self.entry(name).shape
        if tuple(out.shape) != shape:
            if out.numel() != math.prod(shape):
                raise CkptError(path, f"holds {out.numel():,} values but '{name}' has shape {list(shape)}")
            out = out.view(shape)
        return out

    def _read(self, name: str) -> torch.Tensor:
        return self._load(name, "fp32")

    def _read_state(self, name: str, state: str) -> torch.Tensor:
        return self._load(name, state)

    def deepspeed_state(self) -> DeepSpeedState | None:
        folder = self.checkpoint.path
        opt = folder / ZERO / OPTIMIZER_STATE
        if not dc.model_states_files(folder) or not opt.is_file():
            return None  # weights only: nothing of DeepSpeed's to carry over
        return DeepSpeedState(native_stage(self.checkpoint), folder, True, lambda: safe_pickle.load(opt), self.hints)

    def hints(self, name: str) -> dict[str, Any]:
        """The restore hints fp32.pt keeps beside the tensor (cat_dim, vocab_tensor, ...), as stored."""
        name = self.aliases.get(name, name)
        if name not in self._hints:
            self._load(name, "fp32")
        return self._hints.get(name) or {"cat_dim": 0}


# ------------------------------------------------------------------------------------ the adapter
def native_stage(ckpt: Checkpoint) -> int:
    """The ZeRO stage whose layout the folder has: bare flat tensors are ZeRO-3's, dicts ZeRO-1/2's."""
    return 3 if ckpt.metadata.get("layout") == "zero3" else 1


def scan_entry(folder: Path, _report: ScanReport) -> ScanEntry:
    try:
        target, tag = resolve(folder)
    except Exception:  # noqa: BLE001 - a broken pointer is reported by inspect, not by scan
        target, tag = folder, folder.name
    return ScanEntry(Kind.DS_UNIVERSAL, target, tree_size(target), dc.step_from_tag(tag), tag)


def config_dirs(ckpt: Checkpoint) -> tuple[Path, ...]:
    """The tag folder, then its save dir (HF Trainer + DeepSpeed keep config.json beside the tags)."""
    return (ckpt.path, ckpt.path.parent)


ADAPTER = Adapter(
    kind=Kind.DS_UNIVERSAL,
    label="DeepSpeed universal",
    short="universal",
    color="cyan",
    detect=detect,
    priority=10,  # before ZeRO: a universal folder also holds a model_states file
    read=read,
    open_source=UniversalSource,
    scan_entry=scan_entry,
    defaults=dc.conversion_defaults(native_stage, config_dirs),
    pickle_records=dc.PICKLE_RECORDS,
    pickle_int_enums=dc.PICKLE_INT_ENUMS,
)
