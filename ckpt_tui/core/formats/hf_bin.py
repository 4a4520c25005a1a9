"""Hugging Face ``pytorch_model*.bin``: single or sharded with ``pytorch_model.bin.index.json``.

Loaded through the allowlisted unpickler with ``mmap=True``, so tensor data stays on disk: only the
pickle (names, shapes, dtypes, storage sharing) is read. Tensors sharing one storage (tied weights, as
``torch.save`` keeps them) are reported as aliases of the first name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ckpt_tui.core import dtypes as dt
from ckpt_tui.core import safe_pickle
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.formats import hf_common
from ckpt_tui.core.model import Checkpoint, FileEntry, Kind, TensorEntry

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
