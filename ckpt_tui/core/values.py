"""Load one tensor's values on demand, and summarise them.

Listing a checkpoint never reads tensor data; this module is what runs when a user asks for the values
of one parameter (the TUI's statistics panel). Each format is read the cheapest way it allows:
safetensors by offset, ``.bin`` and DeepSpeed files memory-mapped through :mod:`safe_pickle`, so only
the bytes of the requested tensor are paged in.

:func:`tensor_stats` works in bounded memory (chunks of :data:`CHUNK` elements, two passes) so a
billion-element embedding does not need a float64 copy of itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckpt_tui.core import safe_pickle
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.model import Checkpoint, Kind, TensorEntry

if TYPE_CHECKING:
    import torch

CHUNK = 1 << 22  # elements per pass step: 4M fp64 values = 32 MiB of scratch at most


def find_entry(ckpt: Checkpoint, name: str) -> TensorEntry:
    for entry in ckpt.tensors:
        if entry.name == name:
            return entry
    raise CkptError(ckpt.path, f"no tensor named '{name}'")


def load_tensor(ckpt: Checkpoint, tensor: TensorEntry | str) -> torch.Tensor:
    """The values of one tensor of ckpt, with the entry's shape and stored dtype.

    Tied aliases that are not stored on their own are read from their owner. Raises CkptError for
    anything that cannot be read (a missing file, a tensor the file lacks, ZeRO-3 partitions).
    """
    entry = find_entry(ckpt, tensor) if isinstance(tensor, str) else tensor
    reader = _READERS.get(ckpt.kind)
    if reader is None:
        raise CkptError(ckpt.path, f"cannot load tensor values from a {ckpt.kind.label}")
    try:
        return reader(ckpt, entry)
    except _NotStored:
        if entry.tied_to is None:
            raise CkptError(_file_path(ckpt, entry), f"tensor '{entry.name}' is not in this file") from None
        owner = find_entry(ckpt, entry.tied_to)
        return reader(ckpt, owner)


class _NotStored(Exception):
    """The file does not hold this name (a tied alias may still be read from its owner)."""


def _file_path(ckpt: Checkpoint, entry: TensorEntry) -> Path:
    """Absolute location of the file that holds entry (a single-file checkpoint is its own root)."""
    root = Path(ckpt.path)
    if root.is_file():
        return root
    return root / entry.file


def _safetensors(ckpt: Checkpoint, entry: TensorEntry) -> torch.Tensor:
    from safetensors import SafetensorError, safe_open

    path = _file_path(ckpt, entry)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            if entry.name not in fh.keys():
                raise _NotStored
            return fh.get_tensor(entry.name)
    except (SafetensorError, OSError) as exc:
        raise CkptError(path, f"cannot read tensor '{entry.name}': {exc}") from None


def _hf_bin(ckpt: Checkpoint, entry: TensorEntry) -> torch.Tensor:
    path = _file_path(ckpt, entry)
    obj = safe_pickle.load(path, mmap=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CkptError(path, f"expected a state dict (name -> tensor), found {type(obj).__name__}")
    return _tensor_from(obj, entry, path)


def _universal(ckpt: Checkpoint, entry: TensorEntry) -> torch.Tensor:
    import torch

    path = _file_path(ckpt, entry)
    if not path.is_file():
        raise _NotStored
    obj: Any = safe_pickle.load(path, mmap=True)
    if isinstance(obj, dict) and "param" in obj:
        obj = obj["param"]
    if not isinstance(obj, torch.Tensor):
        raise CkptError(path, f"expected a tensor or a dict with 'param', found {type(obj).__name__}")
    if tuple(obj.shape) == entry.shape:
        return obj
    if obj.numel() == entry.numel:  # ZeRO-3 layout: a bare flat tensor
        return obj.reshape(entry.shape)
    raise CkptError(path, f"holds {obj.numel():,} values but '{entry.name}' has shape {list(entry.shape)}")


def _zero(ckpt: Checkpoint, entry: TensorEntry) -> torch.Tensor:
    if ckpt.zero_stage == 3:
        raise CkptError(
            ckpt.path,
            f"ZeRO-3 keeps '{entry.name}' partitioned across the fp32 optimizer files of every rank: "
            "reading its values needs those partitions gathered (not supported yet; convert the "
            "checkpoint to Hugging Face or universal format first)",
        )
    path = _file_path(ckpt, entry)
    state = safe_pickle.load(path, mmap=True)
    module = state.get("module") if isinstance(state, dict) else None
    if not isinstance(module, dict):
        raise CkptError(path, "model_states file has no 'module' weights")
    tensor = _tensor_from(module, entry, path)
    if tensor.numel() != entry.numel:
        raise CkptError(path, f"'module' holds '{entry.name}' with {tensor.numel():,} values, expected {entry.numel:,}")
    return tensor


def _tensor_from(state: dict, entry: TensorEntry, path: Path) -> torch.Tensor:
    import torch

    if entry.name not in state:
        raise _NotStored
    value = state[entry.name]
    if not isinstance(value, torch.Tensor):
        raise CkptError(path, f"'{entry.name}' is a {type(value).__name__}, not a tensor")
    return value


_READERS = {
    Kind.HF_SAFETENSORS: _safetensors,
    Kind.HF_BIN: _hf_bin,
    Kind.DS_UNIVERSAL: _universal,
    Kind.DS_ZERO: _zero,
}


# --------------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class TensorStats:
    """Summary of one tensor's values. min..std cover the finite values only (None when there are none)."""

    numel: int
    dtype: str
    finite: int  # finite values (what min/max/mean/std and the histogram describe)
    nan: int
    posinf: int
    neginf: int
    zeros: int
    min: float | None
    max: float | None
    mean: float | None
    std: float | None  # sample standard deviation (n - 1), like torch.std
    abs_mean: float | None
    histogram: tuple[int, ...] = ()  # counts of finite values in `bins` equal-width bins over [min, max]
    edges: tuple[float, ...] = field(default=())  # bins + 1 edges

    @property
    def inf(self) -> int:
        return self.posinf + self.neginf

    @property
    def nonfinite(self) -> int:
        return self.nan + self.inf


def tensor_stats(tensor: torch.Tensor, bins: int = 20) -> TensorStats:
    """min/max/mean/std, NaN/inf/zero counts and a histogram, in float64, over bounded-size chunks."""
    import torch

    from ckpt_tui.core import dtypes as dt

    if tensor.is_complex():
        raise CkptError(None, f"statistics of complex tensors ({tensor.dtype}) are not supported")
    flat = tensor.detach().reshape(-1)
    numel = flat.numel()
    dtype = dt.canonical(tensor.dtype)
    is_float = flat.is_floating_point()
    finite = nan = posinf = neginf = zeros = 0
    total = abs_total = 0.0
    lo, hi = math.inf, -math.inf
    for chunk in _chunks(flat):
        values = chunk.to(torch.float64)
        zeros += int((values == 0).sum())
        if is_float:
            nan += int(torch.isnan(values).sum())
            posinf += int(torch.isposinf(values).sum())
            neginf += int(torch.isneginf(values).sum())
            values = values[torch.isfinite(values)]
        if values.numel() == 0:
            continue
        finite += values.numel()
        total += float(values.sum())
        abs_total += float(values.abs().sum())
        lo = min(lo, float(values.min()))
        hi = max(hi, float(values.max()))
    if finite == 0:
        return TensorStats(numel, dtype, 0, nan, posinf, neginf, zeros, None, None, None, None, None)
    mean = total / finite
    squares = 0.0
    counts = torch.zeros(bins, dtype=torch.float64)
    for chunk in _chunks(flat):
        values = chunk.to(torch.float64)
        if is_float:
            values = values[torch.isfinite(values)]
        squares += float(((values - mean) ** 2).sum())
        counts += _histogram(values, bins, lo, hi)
    std = math.sqrt(squares / (finite - 1)) if finite > 1 else 0.0
    step = (hi - lo) / bins
    edges = tuple(lo + i * step for i in range(bins)) + (hi,)
    return TensorStats(
        numel=numel,
        dtype=dtype,
        finite=finite,
        nan=nan,
        posinf=posinf,
        neginf=neginf,
        zeros=zeros,
        min=lo,
        max=hi,
        mean=mean,
        std=std,
        abs_mean=abs_total / finite,
        histogram=tuple(int(c) for c in counts.tolist()),
        edges=edges,
    )


def _chunks(flat: torch.Tensor) -> Iterator[torch.Tensor]:
    for start in range(0, flat.numel(), CHUNK):
        yield flat[start : start + CHUNK]


def _histogram(values: torch.Tensor, bins: int, lo: float, hi: float) -> torch.Tensor:
    """Counts per bin; the last bin includes hi, a constant tensor puts everything in the middle bin."""
    import torch

    if hi == lo:
        counts = torch.zeros(bins, dtype=torch.float64)
        counts[bins // 2] = values.numel()
        return counts
    index = ((values - lo) * (bins / (hi - lo))).floor().clamp_(0, bins - 1).to(torch.int64)
    return torch.bincount(index, minlength=bins).to(torch.float64)
