"""Read tensor values from any checkpoint kind, one tensor at a time, in bounded memory.

This is the one way the converters, `verify` and the app's value panel get at tensor data:
``open_source(checkpoint)`` asks the checkpoint's format adapter (``core/formats/registry.py``) for a
:class:`TensorSource`, whose ``read(name)`` assembles a fresh tensor from its pieces (``pieces(name)``:
the ranks' partitions, slices or chunks, or the one whole tensor). Each kind's source lives in its own
format module; this module holds what they share.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckpt_tui.core import dtypes as dt
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.model import Checkpoint, Piece, TensorEntry

if TYPE_CHECKING:
    import torch

ADAM_STATES = ("exp_avg", "exp_avg_sq")


@dataclass(frozen=True)
class SourceTensor:
    """A tensor as read() returns it (ZeRO: fp32 master weights, not the 16-bit copy)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    role: str = "param"  # param | frozen | buffer

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return dt.nbytes(self.dtype, self.numel) or 0


@dataclass(frozen=True)
class DeepSpeedState:
    """What a source written by DeepSpeed carries besides tensors, for converters that keep it.

    Converters ask for this instead of looking into a concrete source: a source without it (HF, DCP)
    is weights only as far as DeepSpeed's loaders are concerned.
    """

    stage: int  # the ZeRO layout it was saved in (universal: 1 for the ZeRO-1/2 layout, 3 for ZeRO-3's)
    folder: Path  # the folder of its model_states file(s)
    universal: bool  # a universal folder (zero/<name>/...) rather than per-rank partitions
    optimizer: Callable[[], dict[str, Any]]  # rank 0's optimizer file dict, or zero/optimizer_state.pt
    # what a universal zero/<name>/fp32.pt stores beside the tensor ({"cat_dim": 0}; TP rules add
    # vocab_tensor, sub-param shapes, ...): how the universal loader re-slices it for another layout
    hints: Callable[[str], dict[str, Any]] = lambda _name: {"cat_dim": 0}


class TensorSource:
    """Stored tensors of a checkpoint, readable one at a time. Tied aliases are in `aliases`, not `tensors`.

    A source never changes the Checkpoint it reads: what it learns while opening (a caveat about the
    values it gives) goes to its own `warnings`.
    """

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.tensors: list[SourceTensor] = []
        self.aliases: dict[str, str] = {}  # alias -> owner
        self.warnings: list[str] = []
        self._index: dict[str, SourceTensor] | None = None
        self._indexed = 0
        self._listing: dict[str, TensorEntry] | None = None

    def read(self, name: str) -> torch.Tensor:
        """A fresh tensor with name's values (aliases resolve to their owner); no autograd history."""
        import torch

        with torch.no_grad():
            return self._read(name).detach()

    def states(self, name: str) -> tuple[str, ...]:
        """Optimizer states read_state() can give for name (exp_avg, exp_avg_sq, step)."""
        return ()

    def read_state(self, name: str, state: str) -> torch.Tensor:
        import torch

        if state not in self.states(name):
            kind = self.checkpoint.kind.label
            raise CkptError(self.checkpoint.path, f"no optimizer state '{state}' for '{name}' in this {kind} checkpoint")
        with torch.no_grad():
            return self._read_state(name, state).detach()

    def pieces(self, name: str) -> tuple[Piece, ...]:
        """Where name's values live (rank, file, slice), as read() assembles them."""
        if self._listing is None:  # the listing's pieces; sources that know more override this
            self._listing = {t.name: t for t in self.checkpoint.tensors}
        listed = self._listing.get(self.aliases.get(name, name))
        if listed is None:
            raise CkptError(self.checkpoint.path, f"no tensor named '{name}'")
        return listed.layout_pieces

    def deepspeed_state(self) -> DeepSpeedState | None:
        """DeepSpeed's own state beside the tensors (ZeRO and universal sources), else None."""
        return None

    def _read(self, name: str) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def _read_state(self, name: str, state: str) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def entry(self, name: str) -> SourceTensor:
        """The tensor named name (or the owner of an alias), by index: constant time per call."""
        index = self._index
        if index is None or self._indexed != len(self.tensors):
            index = self._index = {t.name: t for t in self.tensors}
            self._indexed = len(self.tensors)
        found = index.get(name)
        if found is None:
            owner = self.aliases.get(name)
            found = index.get(owner) if owner else None
        if found is None:
            raise CkptError(self.checkpoint.path, f"no tensor named '{name}'")
        return found

    def close(self) -> None:
        """Drop mapped files (the GC would too; this makes it prompt)."""

    def __enter__(self) -> TensorSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(checkpoint: Checkpoint | str | Path) -> TensorSource:
    """The value source of a checkpoint (or of the path of one), from its kind's adapter."""
    from ckpt_tui.core.formats.registry import adapter_for

    if not isinstance(checkpoint, Checkpoint):
        from ckpt_tui.core.inspect import open_checkpoint

        checkpoint = open_checkpoint(checkpoint)
    factory = adapter_for(checkpoint.kind).open_source
    if factory is None:
        raise CkptError(checkpoint.path, f"{checkpoint.kind.label} holds no tensors")
    return factory(checkpoint)


def hf_listing(source: TensorSource, ckpt: Checkpoint) -> None:
    """Fill source.tensors / aliases from an HF-style listing (every tensor as stored, aliases apart)."""
    for t in ckpt.tensors:
        if t.tied_to:
            source.aliases[t.name] = t.tied_to
        else:
            source.tensors.append(SourceTensor(t.name, t.shape, t.dtype))
