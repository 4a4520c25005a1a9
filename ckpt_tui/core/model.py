"""The one data model that every reader fills and every view (CLI text, JSON, TUI) renders."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


class Kind(str):
    """What a folder or file on disk is: the id of its format adapter (``core/formats/registry.py``).

    An open set, not an enum: a new kind is declared by its adapter module, not here. The constants below
    are the kinds built in; ``Kind(value)`` returns the one instance of each value, so ``is`` compares.
    """

    __slots__ = ()
    _interned: ClassVar[dict[str, Kind]] = {}

    HF_SAFETENSORS: ClassVar[Kind]
    HF_BIN: ClassVar[Kind]
    DS_ZERO: ClassVar[Kind]
    DS_UNIVERSAL: ClassVar[Kind]
    TENSORBOARD: ClassVar[Kind]

    def __new__(cls, value: str) -> Kind:
        known = cls._interned.get(value)
        if known is None:
            known = cls._interned[value] = super().__new__(cls, value)
        return known

    def __repr__(self) -> str:
        return f"Kind({str.__repr__(self)})"

    @property
    def value(self) -> str:
        return str(self)

    @property
    def label(self) -> str:
        from ckpt_tui.core.formats.registry import adapter_for

        return adapter_for(self).label


Kind.HF_SAFETENSORS = Kind("hf-safetensors")
Kind.HF_BIN = Kind("hf-bin")
Kind.DS_ZERO = Kind("deepspeed-zero")
Kind.DS_UNIVERSAL = Kind("deepspeed-universal")
Kind.TENSORBOARD = Kind("tensorboard")


@dataclass(frozen=True)
class ParallelLayout:
    """How the run that saved a checkpoint was split: degrees of each kind of parallelism, ZeRO stage.

    None where the files do not say (an HF folder has no layout: every degree 1, no stage).
    """

    dp: int | None = None  # data-parallel ranks (ZeRO partitions)
    tp: int = 1  # tensor-parallel ranks (slices of one layer's weights)
    pp: int = 1  # pipeline stages (disjoint sets of layers)
    ep: int = 1  # expert-parallel ranks
    zero_stage: int | None = None

    def describe(self) -> str:
        """'DP 2' for data parallelism alone, 'DP 2 × TP 2 × PP 2' (degrees above 1 after DP); '' when unknown."""
        if self.dp is None:
            return ""
        extra = [f"{name} {n}" for name, n in (("TP", self.tp), ("PP", self.pp), ("EP", self.ep)) if n > 1]
        return " × ".join([f"DP {self.dp}", *extra])


@dataclass(frozen=True)
class Piece:
    """Where one part of a tensor's values is stored: the unit a value source assembles tensors from.

    Two shapes of piece exist, as in the formats: an N-d chunk of the global tensor (``offsets`` and
    ``sizes``: TP slices, torch DCP chunks) and a run of the tensor's flattened values (``flat``: ZeRO
    partitions, which split the flattened parameter wherever a rank's share ends). A whole tensor in one
    file is the one-piece case with neither. A TP slice split again over ZeRO ranks has both: ``flat`` is
    then a run of the block's own flattened values.
    """

    file: str  # relative to the checkpoint root
    rank: int | None = None  # the DP rank that wrote it (ZeRO partitions)
    offsets: tuple[int, ...] = ()  # N-d chunk: where it starts in the global tensor
    sizes: tuple[int, ...] = ()  # N-d chunk: its extent along each axis
    flat: tuple[int, int] | None = None  # (start, count) of the tensor's flattened values it holds
    at: int = 0  # where its values start in the container: element offset in a flat buffer, byte offset in a file
    group: int = 0  # ZeRO-1/2: the param group whose flat buffer holds it
    tp: int | None = None  # the tensor-parallel rank whose slice it is
    pp: int | None = None  # the pipeline stage that holds it

    @property
    def numel(self) -> int | None:
        if self.flat is not None:
            return self.flat[1]
        return math.prod(self.sizes) if self.sizes else None

    @property
    def numel_of_block(self) -> int:
        """Values in its N-d block (a piece with both ``sizes`` and ``flat`` holds a run of that block)."""
        return math.prod(self.sizes)


@dataclass(frozen=True)
class TensorEntry:
    """One named tensor (model parameter or buffer) with its global shape and dtype, without its data."""

    name: str
    shape: tuple[int, ...]  # the global (logical) shape, whatever the pieces
    dtype: str  # canonical torch-style name: float32, bfloat16, float16, int64, ...
    file: str  # path relative to the checkpoint root of the file that holds it (its first piece's)
    nbytes: int | None = None  # None: dtype with a size we cannot derive
    states: tuple[str, ...] = ()  # optimizer state files present (universal: fp32, exp_avg, ...)
    tied_to: str | None = None  # alias of another stored tensor (shared_params)
    frozen: bool = False  # requires_grad=False in the DeepSpeed run
    buffer: bool = False  # a module buffer (not trained), e.g. a registered mask
    pieces: tuple[Piece, ...] = ()  # where its values live when split; () is one piece: all of it in `file`
    split: str | None = None  # how TP ranks split it: "dim 0", "replicated", "2 sub-params, dim 0", ...
    split_rule: str | None = None  # the universal_checkpoint_info pattern that says so

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def layout_pieces(self) -> tuple[Piece, ...]:
        """Its pieces, the one-piece case spelled out (what `inspect` shows)."""
        return self.pieces or (Piece(self.file),)


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
    layout: ParallelLayout = field(default_factory=ParallelLayout)
    ds_version: str | None = None
    compute_dtype: str | None = None  # dtype the run trained in (fp32/bf16/fp16 for DeepSpeed)
    optimizer_states: tuple[str, ...] = ()  # e.g. exp_avg, exp_avg_sq, step
    shared_params: dict[str, str] = field(default_factory=dict)  # alias -> owner
    config: dict[str, Any] = field(default_factory=dict)  # summary of config.json / ds_config
    metadata: dict[str, Any] = field(default_factory=dict)  # format-specific extras, JSON-safe
    warnings: list[str] = field(default_factory=list)

    @property
    def zero_stage(self) -> int | None:
        return self.layout.zero_stage

    @property
    def dp_world_size(self) -> int | None:
        return self.layout.dp

    @property
    def mp_world_size(self) -> int | None:
        """Model-parallel ranks (TP x PP), as DeepSpeed's mp_rank_* file names count them."""
        return None if self.layout.dp is None else self.layout.tp * self.layout.pp

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
