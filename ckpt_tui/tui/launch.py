"""Start the app from the command line: `ckpt-tui [DIR] [--no-mouse]`."""

from __future__ import annotations

import sys
from pathlib import Path

from ckpt_tui.core.errors import CkptError


def launch(dir: str | None, *, mouse: bool = True) -> int:
    """Run the app on dir until the user quits; the exit code.

    Without dir: the `ckpt-tui demo` workspace when one has been built, else the current folder.
    """
    root = Path(dir) if dir else default_root()
    if not root.exists():
        raise CkptError(root, "no such file or folder")
    if not sys.stdout.isatty():
        raise CkptError(None, "the app needs a terminal; for scripts use a subcommand (ckpt-tui scan DIR --json)")
    from ckpt_tui.tui.app import CkptApp

    app = CkptApp(root)
    app.run(mouse=mouse)
    return app.return_code or 0


def default_root() -> Path:
    try:
        from ckpt_tui.demo.workspace import SETTINGS_FILE, default_workspace
    except ImportError:  # a build without the demo package
        return Path(".")
    demo = default_workspace()
    return demo if (demo / SETTINGS_FILE).is_file() else Path(".")
