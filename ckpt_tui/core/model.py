"""The one data model that every reader fills and every view (CLI text, JSON, TUI) renders."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Kind(str, enum.Enum):
    """What a folder or file on disk is."""

    HF_SAFETENSORS = "hf-safetensors"
    HF_BIN = "hf-bin"
    DS_ZERO = "deepspeed-zero"
    DS_UNIVERSAL = "deepspeed-universal"
    TENSORBOARD = "tensorboard"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Kind.HF_SAFETENSORS: "HF safetensors",
    Kind.HF_BIN: "HF pytorch .bin",
    Kind.DS_ZERO: "DeepSpeed ZeRO",
    Kind.DS_UNIVERSAL: "DeepSpeed universal",
    Kind.TENSORBOARD: "TensorBoard run",
}


@dataclass(frozen=True)
class TensorEntry:
    """One named tensor (model parameter or buffer) as stored, without its data."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # canonical torch-style name: float32, bfloat16, float16, int64, ...
    file: str  # path relative to the checkpoint root of the file that holds it
    nbytes: int | None = None  # None: dtype with a size we cannot derive
    states: tuple[str, ...] = ()  # optimizer state files present (universal: fp32, exp_avg, ...)
    tied_to: str | None = None  # alias of another stored tensor (shared_params)
    frozen: bool = False  # requires_grad=False in the DeepSpeed run
    buffer: bool = False  # a module buffer (not trained), e.g. a registered mask

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class FileEntry:
    """A file that belongs to a checkpoint, with what it holds."""

    path: str  # relative to the checkpoint root
    size: int
    role: str  # shard, index, config, model_states, optim_states, zero_state, pointer, ...
    rank: int | None = None  # data-parallel rank for per-rank files


@dataclass
class Checkpoint:
    """A checkpoint on disk: where it is, how it was saved, and its tensors' metadata."""

    kind: Kind
    path: Path
    tensors: list[TensorEntry] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)
    tag: str | None = None
    step: int | None = None
    zero_stage: int | None = None
    dp_world_size: int | None = None
    mp_world_size: int | None = None
    ds_version: str | None = None
    compute_dtype: str | None = None  # dtype the run trained in (fp32/bf16/fp16 for DeepSpeed)
    optimizer_states: tuple[str, ...] = ()  # e.g. exp_avg, exp_avg_sq, step
    shared_params: dict[str, str] = field(default_factory=dict)  # alias -> owner
    config: dict[str, Any] = field(default_factory=dict)  # summary of config.json / ds_config
    metadata: dict[str, Any] = field(default_factory=dict)  # format-specific extras, JSON-safe
    warnings: list[str] = field(default_factory=list)

    @property
    def total_numel(self) -> int:
        return sum(t.numel for t in self.tensors if t.tied_to is None)

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes or 0 for t in self.tensors if t.tied_to is None)

    @property
    def files_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def dtypes(self) -> dict[str, tuple[int, int]]:
        """dtype -> (tensor count, bytes), tied aliases not counted twice."""
        out: dict[str, tuple[int, int]] = {}
        for t in self.tensors:
            if t.tied_to is not None:
                continue
            count, nbytes = out.get(t.dtype, (0, 0))
            out[t.dtype] = (count + 1, nbytes + (t.nbytes or 0))
        return dict(sorted(out.items()))


@dataclass(frozen=True)
class ScalarTag:
    """One scalar series in a TensorBoard run, summarised."""

    tag: str
    points: int
    first_step: int | None
    last_step: int | None


@dataclass
class RunLog:
    """A TensorBoard run folder: its event files and scalar tags (summaries, not values)."""

    path: Path
    event_files: list[FileEntry] = field(default_factory=list)
    tags: list[ScalarTag] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. a truncated tail of a live event file

    @property
    def kind(self) -> Kind:
        return Kind.TENSORBOARD

    @property
    def last_step(self) -> int | None:
        steps = [t.last_step for t in self.tags if t.last_step is not None]
        return max(steps) if steps else None

    @property
    def files_bytes(self) -> int:
        return sum(f.size for f in self.event_files)
