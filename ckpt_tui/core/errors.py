"""One error type for every problem a user's input can have.

The CLI turns a :class:`CkptError` into a single line ``ckpt-tui: error: <path>: <problem>`` and exit
code 2; the TUI shows the same text. Anything else escaping the core is a bug in ckpt-tui.
"""

from __future__ import annotations

from pathlib import Path


class CkptError(Exception):
    """A problem with the user's files or arguments, explained in one line."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class UnsafePickleError(CkptError):
    """A pickle asked for a class or function outside the allowlist: it was not loaded."""


class OptionError(CkptError):
    """A conversion option the user gave is not acceptable; `option` names it (dtype, stage, ...).

    The CLI prints it like any CkptError; the app puts the mark on the field the option belongs to.
    """

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(None, problem)
        self.option = option
