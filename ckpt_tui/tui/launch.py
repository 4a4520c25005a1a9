"""Start the app from the command line: `ckpt-tui [DIR] [--no-mouse]` (and from `ckpt-tui demo`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from ckpt_tui.core.errors import CkptError


def launch(
    dir: str | None, *, mouse: bool = True, baseline: Path | None = None, resumed: Sequence[Path] = ()
) -> int:
    """Run the app on dir until the user quits; the exit code.

    Without dir: the `ckpt-tui demo` workspace when one has been built, else the current folder.
    With baseline and resumed (TensorBoard runs): the app opens on the Losses screen comparing the
    baseline with every resumed run; Esc goes back to the browser on dir.
    """
    root = Path(dir) if dir else default_root()
    if not root.exists():
        raise CkptError(root, "no such file or folder")
    resumed = [Path(r) for r in resumed]
    if baseline is not None and resumed:
        for run in (Path(baseline), *resumed):
            if not run.exists():
                raise CkptError(run, "no such TensorBoard run")
    if not sys.stdout.isatty():
        raise CkptError(None, "the app needs a terminal; for scripts use a subcommand (ckpt-tui scan DIR --json)")
    from ckpt_tui.tui.app import CkptApp

    app = CkptApp(root, baseline=baseline if resumed else None, resumed=resumed if baseline is not None else ())
    app.run(mouse=mouse)
    return app.return_code or 0


def default_root() -> Path:
    try:
        from ckpt_tui.demo.workspace import SETTINGS_FILE, default_workspace
    except ImportError:  # a build without the demo package
        return Path(".")
    demo = default_workspace()
    return demo if (demo / SETTINGS_FILE).is_file() else Path(".")
