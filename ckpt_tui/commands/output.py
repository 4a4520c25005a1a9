"""How subcommands print: rich for people, plain JSON on stdout for scripts. Nothing else prints."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console

from ckpt_tui.core import jsonsafe
from ckpt_tui.core.units import format_shape, human_bytes, human_count

__all__ = ["console", "human_bytes", "human_count", "print_json", "format_shape"]


def console() -> Console:
    """stdout console; rich honours NO_COLOR. Piped output is not cut to 80 columns: tables stay whole."""
    width = None if sys.stdout.isatty() else 240
    return Console(highlight=False, soft_wrap=False, width=width)


def print_json(obj: Any) -> None:
    """One JSON document on stdout, strict (non-finite floats as strings: see core/jsonsafe.py)."""
    jsonsafe.dump(obj, sys.stdout)
