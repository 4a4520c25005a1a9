"""Open any supported path: find out what it is, then let that format's reader list it."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.formats import deepspeed_universal, deepspeed_zero, hf_bin, hf_safetensors
from ckpt_tui.core.model import Checkpoint, Kind

# Order matters: a universal folder also holds a model_states file, a ZeRO save dir may hold .pt files.
READERS: list[tuple[Kind, ModuleType]] = [
    (Kind.DS_UNIVERSAL, deepspeed_universal),
    (Kind.DS_ZERO, deepspeed_zero),
    (Kind.HF_SAFETENSORS, hf_safetensors),
    (Kind.HF_BIN, hf_bin),
]


def detect(path: str | Path) -> Kind | None:
    """The checkpoint kind at path (cheap: names and stats only), or None."""
    path = Path(path)
    try:
        for kind, reader in READERS:
            if reader.detect(path):
                return kind
        from ckpt_tui.core.formats import tensorboard  # only when nothing else matched

        if path.is_dir() and tensorboard.find_event_files(path):
            return Kind.TENSORBOARD
        if path.is_file() and tensorboard.is_event_file(path):
            return Kind.TENSORBOARD
    except PermissionError:
        raise CkptError(path, "cannot read: permission denied") from None
    return None


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Metadata of the checkpoint at path. Raises CkptError with a one-line reason when it is not one."""
    path = Path(path)
    if not path.exists():
        raise CkptError(path, "no such file or folder")
    kind = detect(path)
    if kind is None or kind is Kind.TENSORBOARD:
        what = "a TensorBoard run, not a checkpoint" if kind else "not a checkpoint"
        raise CkptError(path, f"{what}: no safetensors, .bin, DeepSpeed ZeRO or universal files found")
    reader = dict(READERS)[kind]
    return reader.read(path)
