"""The ckpt-tui Textual app: a browser home screen, checkpoint and loss screens pushed on top of it.

Importing this module must stay cheap (no torch, no deepspeed): the first paint should not wait for
them. Readers import torch lazily, inside workers, when a file actually needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen

from ckpt_tui.core.scan import ScanEntry
from ckpt_tui.tui.commands import ActionCommands
from ckpt_tui.tui.screens.browser import BrowserScreen
from ckpt_tui.tui.screens.checkpoint import CheckpointScreen
from ckpt_tui.tui.screens.help import HelpScreen
from ckpt_tui.tui.screens.losses import LossScreen


class CkptApp(App[int]):
    """Browse checkpoints and runs under one folder; open them; compare loss curves."""

    TITLE = "ckpt-tui"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {ActionCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1,question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("B", "browser", "Browser", show=False),
        Binding("ctrl+t", "toggle_theme", "Light/dark theme", show=False),
    ]
    SCREENS_FOR_HELP: ClassVar[list[tuple[str, type[Screen]]]] = [
        ("Browser", BrowserScreen),
        ("Checkpoint", CheckpointScreen),
        ("Losses", LossScreen),
    ]

    def __init__(self, root: str | Path = ".") -> None:
        super().__init__()
        self.root = Path(root)
        self.runs: list[ScanEntry] = []  # TensorBoard runs found by the browser's scan
        self.baseline_run: Path | None = None
        self.resumed_run: Path | None = None

    def on_mount(self) -> None:
        if self.root.is_file():  # `ckpt-tui model.safetensors`: browse its folder, open the file
            self.push_screen(BrowserScreen(self.root.parent))
            from ckpt_tui.core.inspect import detect
            from ckpt_tui.core.model import Kind

            if detect(self.root) is Kind.TENSORBOARD:
                self.open_losses(baseline=self.root)
            else:
                self.open_checkpoint(self.root)
            return
        self.push_screen(BrowserScreen(self.root))

    @property
    def browse_root(self) -> Path:
        """The folder paths are shown relative to (the file's folder when a file was given)."""
        return self.root.parent if self.root.is_file() else self.root

    # ------------------------------------------------------------------------------------ navigation

    def open_checkpoint(self, path: Path) -> None:
        self.push_screen(CheckpointScreen(path, self.browse_root))

    def open_losses(self, baseline: Path | None = None, resumed: Path | None = None) -> None:
        """The loss comparison; runs default to the ones marked in the browser."""
        runs = [e.path for e in self.runs]
        baseline = baseline or self.baseline_run
        resumed = resumed or self.resumed_run
        for path in (baseline, resumed):
            if path is not None and path not in runs:
                runs.append(path)
        if not runs:
            self.notify("No TensorBoard run found under this folder.", severity="warning")
            return
        self.push_screen(LossScreen(self.browse_root, runs, baseline=baseline, resumed=resumed))

    def action_browser(self) -> None:
        while len(self.screen_stack) > 2:
            self.pop_screen()

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
            return
        self.push_screen(HelpScreen(type(self.screen), self.SCREENS_FOR_HELP))

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"
