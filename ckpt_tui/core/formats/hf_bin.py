"""Hugging Face ``pytorch_model*.bin``: single or sharded with ``pytorch_model.bin.index.json``.

Loaded through the allowlisted unpickler with ``mmap=True``, so tensor data stays on disk: only the
pickle (names, shapes, dtypes, storage sharing) is read. Tensors sharing one storage (tied weights, as
``torch.save`` keeps them) are reported as aliases of the first name.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckpt_tui.core import dtypes as dt
from ckpt_tui.core import safe_pickle
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.formats import hf_common
from ckpt_tui.core.formats.registry import Adapter, ConversionDefaults
from ckpt_tui.core.memory import release_mapped
from ckpt_tui.core.model import Checkpoint, FileEntry, Kind, TensorEntry
from ckpt_tui.core.sources import TensorSource, hf_listing

if TYPE_CHECKING:
    import torch

SUFFIX = ".bin"


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(f"*{SUFFIX}") if p.is_file() and p.name != "training_args.bin")


def detect(path: Path) -> bool:
    if path.is_file():
        return path.name.endswith(SUFFIX)
    return path.is_dir() and bool(_weight_files(path))


def load_state_dict(path: Path) -> dict[str, Any]:
    obj = safe_pickle.load(path, mmap=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CkptError(path, f"expected a state dict (name -> tensor), found {type(obj).__name__}")
    return obj


def entries(path: Path, root: Path) -> list[TensorEntry]:
    import torch

    rel = str(path.relative_to(root)) if path != root else path.name
    owners: dict[tuple[int, int, tuple[int, ...], str], str] = {}
    out: list[TensorEntry] = []
    for name, value in load_state_dict(path).items():
        if not isinstance(value, torch.Tensor):
            continue  # HF .bin files hold tensors only; ignore stray non-tensor entries
        dtype = dt.canonical(value.dtype)
        shape = tuple(value.shape)
        key = (value.untyped_storage().data_ptr(), value.storage_offset(), shape, dtype)
        owner = owners.setdefault(key, name) if value.numel() else name
        tied = owner if owner != name else None
        out.append(TensorEntry(name, shape, dtype, rel, dt.nbytes(dtype, value.numel()), tied_to=tied))
    return out


def read(path: Path) -> Checkpoint:
    ckpt = Checkpoint(kind=Kind.HF_BIN, path=path)
    if path.is_file():
        ckpt.tensors = entries(path, path)
        ckpt.files = [FileEntry(path.name, path.stat().st_size, "weights")]
    else:
        hf_common.read_weight_files(ckpt, _weight_files(path), SUFFIX, entries, cheap=False)
    ckpt.shared_params.update({t.name: t.tied_to for t in ckpt.tensors if t.tied_to})
    return hf_common.finish(ckpt)


# ----------------------------------------------------------------------------------------- values
class BinSource(TensorSource):
    """Maps one shard at a time (mmap) and copies each tensor out, releasing the pages it read."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__(checkpoint)
        hf_listing(self, checkpoint)
        self._file = {t.name: t.file for t in checkpoint.tensors}
        self._open: tuple[str, dict, bool] | None = None  # one shard mapped at a time
        self._lock = threading.Lock()

    def _read(self, name: str) -> torch.Tensor:
        with self._lock:  # readers on several threads share the one mapped shard
            return self._read_locked(name)

    def _read_locked(self, name: str) -> torch.Tensor:
        name = self.aliases.get(name, name)
        rel = self._file.get(name)
        if rel is None:
            raise CkptError(self.checkpoint.path, f"no tensor named '{name}'")
        if self._open is None or self._open[0] != rel:
            p = self.checkpoint.path
            path = p if p.is_file() else p / rel
            obj, mapped = safe_pickle.load_mapped(path)
            if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
                obj = obj["state_dict"]
            self._open = (rel, obj, mapped)
        _, state, mapped = self._open
        value = state[name]
        out = value.clone()
        if mapped:
            release_mapped(value)
        return out

    def close(self) -> None:
        self._open = None


ADAPTER = Adapter(
    kind=Kind.HF_BIN,
    label="HF pytorch .bin",
    short="torch .bin",
    color="yellow",
    detect=detect,
    priority=40,
    read=read,
    open_source=BinSource,
    scan_entry=hf_common.scan_entry_of(Kind.HF_BIN),
    defaults=ConversionDefaults(target="universal", config_dirs=hf_common.config_dirs),
)
