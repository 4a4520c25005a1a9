"""The ckpt-tui Textual app: a browser home screen, checkpoint and loss screens pushed on top of it.

Importing this module must stay cheap (no torch, no deepspeed): the first paint should not wait for
them. Readers import torch lazily, inside workers, when a file actually needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen

from ckpt_tui.core.model import Checkpoint
from ckpt_tui.core.scan import ScanEntry
from ckpt_tui.tui.commands import ActionCommands
from ckpt_tui.tui.format import display_path
from ckpt_tui.tui.jobs import ConvertJob, ConvertRequest
from ckpt_tui.tui.screens.browser import BrowserScreen
from ckpt_tui.tui.screens.checkpoint import CheckpointScreen
from ckpt_tui.tui.screens.convert import ConvertDialog
from ckpt_tui.tui.screens.help import HelpScreen
from ckpt_tui.tui.screens.losses import LossScreen
from ckpt_tui.tui.widgets.job_panel import JobPanel


class JobChanged(Message):
    """The job made progress or changed state (sent from its worker thread, at a bounded rate)."""

    def __init__(self, job: ConvertJob) -> None:
        super().__init__()
        self.job = job


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
        ("Convert dialog", ConvertDialog),
        ("Losses", LossScreen),
    ]

    def __init__(
        self, root: str | Path = ".", *, baseline: str | Path | None = None, resumed: Sequence[str | Path] = ()
    ) -> None:
        """baseline and resumed: open on the loss comparison of those runs (Esc goes to the browser)."""
        super().__init__()
        self.root = Path(root)
        self.start_baseline = Path(baseline) if baseline is not None else None
        self.start_resumed = [Path(r) for r in resumed]
        self.runs: list[ScanEntry] = []  # TensorBoard runs found by the browser's scan
        self.baseline_run: Path | None = None
        self.resumed_run: Path | None = None
        self.job: ConvertJob | None = None  # the conversion shown in the job panels (one at a time)
        self._job_origin: Screen | None = None  # the screen it was started from
        self._job_reported: ConvertJob | None = None

    def on_mount(self) -> None:
        if self.root.is_file():  # `ckpt-tui model.safetensors`: browse its folder, open the file
            self.push_screen(BrowserScreen(self.root.parent))
            from ckpt_tui.core.formats.registry import detect

            adapter = detect(self.root)
            if adapter is not None and adapter.is_run:
                self.open_losses(baseline=self.root)
            else:
                self.open_checkpoint(self.root)
            return
        self.push_screen(BrowserScreen(self.root))
        if self.start_baseline is not None and self.start_resumed:
            self.open_losses(baseline=self.start_baseline, resumed=self.start_resumed)

    @property
    def browse_root(self) -> Path:
        """The folder paths are shown relative to (the file's folder when a file was given)."""
        return self.root.parent if self.root.is_file() else self.root

    # ------------------------------------------------------------------------------------ navigation

    def open_checkpoint(self, path: Path) -> None:
        self.push_screen(CheckpointScreen(path, self.browse_root))

    def open_losses(self, baseline: Path | None = None, resumed: Path | Sequence[Path] | None = None) -> None:
        """The loss comparison; runs default to the ones marked in the browser.

        resumed: one run, or several (each compared with the baseline, all plotted together).
        """
        runs = [e.path for e in self.runs]
        if baseline is None and resumed is None and self.baseline_run is None and self.resumed_run is None:
            from ckpt_tui.demo.workspace import comparison_runs  # nothing marked: a demo shows its proof

            baseline, resumed = comparison_runs(self.browse_root) or (None, None)
        baseline = baseline or self.baseline_run
        if resumed is None or isinstance(resumed, Path):
            resumed = resumed or self.resumed_run
        else:
            resumed = list(resumed) or self.resumed_run
        wanted = resumed if isinstance(resumed, list) else [resumed]
        for path in (baseline, *wanted):
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

    # ------------------------------------------------------------------------------- conversion job

    def open_convert_dialog(self, source: Checkpoint | Path) -> None:
        if self.job is not None and self.job.running:
            self.notify("A conversion is running: ctrl+c cancels it.", severity="warning")
            return
        self.push_screen(ConvertDialog(source, self.browse_root), callback=self._convert_chosen)

    def _convert_chosen(self, request: ConvertRequest | None) -> None:
        if request is not None:
            self.start_conversion(request)

    def start_conversion(self, request: ConvertRequest) -> ConvertJob:
        """Run request in a worker thread; the job panels follow it."""
        job = ConvertJob(request, changed=lambda j: self.post_message(JobChanged(j)))
        job.start_convert()
        self.job, self._job_origin = job, self.screen
        self.run_worker(job.run_convert, name="convert", group="job", thread=True, exit_on_error=False)
        self.show_job()
        return job

    def verify_job(self) -> None:
        """Compare the output with its source, tensor by tensor, in a worker (the panel shows the verdict)."""
        job = self.job
        if job is None or not job.succeeded or job.running:
            return
        job.start_verify()
        self.run_worker(job.run_verify, name="verify", group="job", thread=True, exit_on_error=False)
        self.show_job()

    def cancel_job(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.show_job()

    def close_job(self) -> None:
        if self.job is not None and not self.job.running:
            self.job = None
            self.show_job()

    def open_job_output(self) -> None:
        if self.job is not None and self.job.succeeded:
            self.open_checkpoint(self.job.output)

    def showing_output(self, job: ConvertJob) -> bool:
        screen = self.screen
        return isinstance(screen, CheckpointScreen) and screen.path == job.output

    def on_job_changed(self, message: JobChanged) -> None:
        job = message.job
        if job is not self.job:
            return  # a job closed meanwhile
        self.show_job()
        if job.convert.finished and self._job_reported is not job:
            self._job_reported = job
            self._conversion_finished(job)

    def _conversion_finished(self, job: ConvertJob) -> None:
        out = display_path(job.output, self.browse_root)
        if job.succeeded:
            for screen in self.screen_stack:
                if isinstance(screen, BrowserScreen):
                    screen.rescan(select=job.output)  # the new folder shows in the tree
            if self.screen is self._job_origin:
                self.open_checkpoint(job.output)  # success opens the result
            else:
                self.notify(f"Converted: {out} (o opens it)", timeout=6)
        elif not self.screen.query(JobPanel):
            severity = "warning" if job.convert.state == "cancelled" else "error"
            self.notify(job.convert.error or "cancelled, nothing written", title="Conversion", severity=severity)

    def show_job(self) -> None:
        """Every job panel (on every screen of the stack) shows the current job; the footers follow."""
        for screen in self.screen_stack:
            for panel in screen.query(JobPanel):
                panel.show(self.job)
        self.screen.refresh_bindings()

    def on_unmount(self) -> None:
        if self.job is not None:
            self.job.cancel()  # a job thread would keep the process alive until it ends
