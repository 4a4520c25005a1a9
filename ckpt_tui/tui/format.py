"""Small display helpers shared by the screens: paths relative to the browsed root, kind badges, numbers."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text

from ckpt_tui.core import dtypes as dt
from ckpt_tui.core.formats.registry import adapter_for
from ckpt_tui.core.model import Kind
from ckpt_tui.core.tree import human_bytes, human_count

__all__ = [
    "display_path",
    "human_bytes",
    "human_count",
    "kind_badge",
    "kind_label",
    "kind_short",
    "number",
    "plural",
    "relative_path",
    "short_dtype",
]

def display_path(path: Path | str, root: Path) -> str:
    """path as the user would type it from where they launched: relative to root, under root's name.

    Showing paths under the root's name as given (not resolved) keeps the screen short, and the same
    whichever machine or temporary folder the workspace lives in.
    """
    path = Path(path)
    try:
        rel = path.relative_to(root)
    except ValueError:
        return str(path)
    return str(root / rel) if str(rel) != "." else str(root)


def relative_path(path: Path | str, root: Path) -> str:
    """path under root without the root's own name ('runs/baseline'); '.' for the root itself."""
    path = Path(path)
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def kind_short(kind: Kind) -> str:
    """The badge text without a stage: 'ZeRO', 'safetensors' (for filtering)."""
    return adapter_for(kind).short


def kind_badge(kind: Kind, stage: int | None = None) -> Text:
    """The short name in the kind's colour (named ANSI colours: readable on dark and light themes,
    dropped entirely under NO_COLOR): 'ZeRO-3', 'safetensors'."""
    adapter = adapter_for(kind)
    return Text(adapter.badge(stage), style=f"bold {adapter.color}")


def kind_label(kind: Kind, stage: int | None = None) -> Text:
    """The long name, coloured like the badge: 'DeepSpeed ZeRO-2', 'HF safetensors'."""
    adapter = adapter_for(kind)
    return Text.assemble((adapter.long_label(stage), f"bold {adapter.color}"))


def short_dtype(dtype: str | None) -> str:
    return dt.short(dtype) if dtype else "?"


def number(value: float | None, digits: int = 4) -> str:
    """Compact float for statistics: 4 significant digits, scientific when tiny or huge."""
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude < 1e-3 or magnitude >= 1e5:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def plural(n: int, word: str) -> str:
    """'1 tensor', '29 tensors', '1,024 tensors'."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")
