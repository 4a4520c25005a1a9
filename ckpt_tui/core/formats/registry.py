"""The registry of format adapters: one per checkpoint kind, found by looking, asked by everyone else.

Each module under ``ckpt_tui/core/formats/`` with a line ``ADAPTER = Adapter(...)`` is a kind. ``scan``,
``inspect``, the converters, ``verify`` and the app ask this registry (``detect``, ``adapter_for``) and the
adapter's own functions; none of them branches on which kind it holds. Adding a kind is adding a module
with its ``ADAPTER`` (and its tests): nothing else in the package changes.

Discovery imports only the adapter modules, which must stay light (no torch or numpy at import).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.model import Checkpoint, Kind

if TYPE_CHECKING:
    from ckpt_tui.core.scan import ScanEntry, ScanReport
    from ckpt_tui.core.sources import TensorSource


@dataclass(frozen=True)
class ConversionDefaults:
    """What a conversion assumes about a source of this kind unless the user says otherwise."""

    target: str = "hf"  # the usual direction out of this kind (the app's dialog starts there)
    # ZeRO stage whose universal layout a conversion writes by default ("as source")
    native_stage: Callable[[Checkpoint], int] = lambda _ckpt: 1
    # dtype each stored tensor has when read for export (ZeRO: fp32 master weights)
    read_dtype: Callable[[Checkpoint, str], str] = lambda _ckpt, dtype: dtype
    weights_note: str = ""  # what the app says about "keep" dtype (ZeRO: the fp32 master weights)
    # folders where an HF config.json for the exported weights may be found, nearest first
    config_dirs: Callable[[Checkpoint], tuple[Path, ...]] = lambda ckpt: (ckpt.path,)


@dataclass(frozen=True)
class Adapter:
    """Everything one checkpoint kind knows: how to find it, list it, read its values, show it."""

    kind: Kind
    label: str  # long name: "DeepSpeed ZeRO"
    short: str  # badge: "ZeRO"
    color: str  # ANSI colour name of its badge (readable on dark and light themes)
    detect: Callable[[Path], bool]  # cheap: names and stats, maybe a header; never a pickle
    priority: int  # detection order, lowest first (a universal folder also holds a model_states file)
    scan_entry: Callable[[Path, ScanReport], ScanEntry | None]  # what scan and the browser show
    read: Callable[[Path], Checkpoint] | None = None  # metadata listing; None: not a checkpoint (a run)
    open_source: Callable[[Checkpoint], TensorSource] | None = None  # the values, piece by piece
    # sub-folders of a found folder that a scan should still walk (a ZeRO save dir may hold universal
    # folders beside its tags); None: the folder is one checkpoint, nothing below it is walked
    scan_inside: Callable[[Path], set[str] | None] = lambda _folder: None
    defaults: ConversionDefaults = field(default_factory=ConversionDefaults)
    staged: bool = False  # its badge names the ZeRO stage when known ("ZeRO-3")
    # non-tensor classes its pickles hold, read as inert records / ints (core/safe_pickle.py)
    pickle_records: tuple[str, ...] = ()
    pickle_int_enums: tuple[str, ...] = ()

    @property
    def is_run(self) -> bool:
        """A training run (losses), not a checkpoint (tensors)."""
        return self.read is None

    def badge(self, stage: int | None = None) -> str:
        return f"{self.short}-{stage}" if self.staged and stage is not None else self.short

    def long_label(self, stage: int | None = None) -> str:
        return f"{self.label}-{stage}" if self.staged and stage is not None else self.label


_ADAPTERS: list[Adapter] | None = None
_DEFINES_ADAPTER = re.compile(r"^ADAPTER = ", re.M)


def adapters() -> list[Adapter]:
    """Every registered adapter in detection order (discovered once per process)."""
    global _ADAPTERS
    if _ADAPTERS is None:
        import ckpt_tui.core.formats as package

        found = []
        for name in _adapter_modules(Path(package.__file__).parent):
            adapter = getattr(importlib.import_module(f"{package.__name__}.{name}"), "ADAPTER", None)
            if isinstance(adapter, Adapter):
                found.append(adapter)
        _ADAPTERS = sorted(found, key=lambda a: (a.priority, a.kind))
    return _ADAPTERS


def _adapter_modules(folder: Path) -> list[str]:
    """Modules of the formats package that define ``ADAPTER = ...`` at top level.

    Found by their text, so the readers beside them (TensorBoard's needs numpy) are not imported just to
    list the kinds: discovery stays as cheap as detection.
    """
    names = []
    for path in sorted(folder.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        if _DEFINES_ADAPTER.search(text):
            names.append(path.stem)
    return names


def adapter_for(kind: Kind | str) -> Adapter:
    for adapter in adapters():
        if adapter.kind == kind:
            return adapter
    raise CkptError(None, f"unknown checkpoint kind '{kind}'")


def detect(path: str | Path) -> Adapter | None:
    """The adapter of the kind at path (cheap: names and stats only), or None."""
    path = Path(path)
    try:
        for adapter in adapters():
            if adapter.detect(path):
                return adapter
    except PermissionError:
        raise CkptError(path, "cannot read: permission denied") from None
    return None


def checkpoint_kinds() -> str:
    """'HF safetensors, HF pytorch .bin, ...': what `open_checkpoint` can read, for error messages."""
    return ", ".join(a.label for a in adapters() if not a.is_run)
