"""Open any supported path: find out what it is, then let that kind's adapter list it."""

from __future__ import annotations

from pathlib import Path

from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.formats import registry
from ckpt_tui.core.model import Checkpoint, Kind


def detect(path: str | Path) -> Kind | None:
    """The checkpoint kind at path (cheap: names and stats only), or None."""
    adapter = registry.detect(path)
    return adapter.kind if adapter is not None else None


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Metadata of the checkpoint at path. Raises CkptError with a one-line reason when it is not one."""
    path = Path(path)
    if not path.exists():
        raise CkptError(path, "no such file or folder")
    adapter = registry.detect(path)
    if adapter is None or adapter.read is None:
        what = f"a {adapter.label}, not a checkpoint" if adapter else "not a checkpoint"
        raise CkptError(path, f"{what}: no {registry.checkpoint_kinds()} files found")
    return adapter.read(path)
