"""Browser: every checkpoint and TensorBoard run under the root, found by a scan that never blocks."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Header, Input, Static
from textual.worker import get_current_worker

from ckpt_tui.core.scan import ScanEntry, ScanReport, scan
from ckpt_tui.tui.screens.worker_failures import ShowsWorkerFailures
from ckpt_tui.tui.format import display_path
from ckpt_tui.tui.job_actions import JOB_BINDINGS, JobActions
from ckpt_tui.tui.widgets.column_tree import ColumnHeader
from ckpt_tui.tui.widgets.facts import FactsPanel, scan_entry_facts
from ckpt_tui.tui.widgets.job_panel import JobPanel
from ckpt_tui.tui.widgets.scan_tree import Folder, ScanTree, entry_matches, is_run

if TYPE_CHECKING:
    from ckpt_tui.tui.app import CkptApp

DRAIN_SECONDS = 0.1  # how often the UI picks up what the scan found meanwhile
MAX_DEPTH = 6


class BrowserScreen(ShowsWorkerFailures, JobActions, Screen[None]):
    """The home screen. Enter opens a checkpoint, or compares a TensorBoard run with another."""

    TITLE = "Browser"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("b", "mark_baseline", "Baseline run"),
        Binding("r", "mark_resumed", "Resumed run"),
        Binding("l", "losses", "Losses"),
        *JOB_BINDINGS,
        Binding("c", "copy_path", "Copy path", show=False),
        Binding("f5,ctrl+r", "rescan", "Rescan"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("escape", "close_job", "Close job panel", show=False),
    ]

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = Path(root)
        self.entries: list[ScanEntry] = []
        self.skipped: list[str] = []
        self.scanning = False
        self._found: list[ScanEntry] = []  # filled by the scan thread, drained by the UI
        self._skipped_so_far: list[str] = []
        self._found_lock = threading.Lock()
        self._drain_timer: Timer | None = None
        self._scan_generation = 0
        self._report: ScanReport | None = None  # the running walk's report (its folder count grows)
        self._folders_shown = 0
        self._select_after_scan: Path | None = None

    @property
    def ckpt_app(self) -> CkptApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        tree = ScanTree(self.root, id="found")
        yield Header()
        yield Input(placeholder="filter by path, kind or tag (Esc clears)", id="filter")
        with Container(id="body"):
            with Vertical(id="tree-pane"):
                yield ColumnHeader(tree, id="found-header")
                yield tree
            yield FactsPanel(id="entry", classes="side-panel")
        yield JobPanel(self.root, id="job")
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = str(self.root)
        self.query_one("#filter").display = False
        self.query_one(ScanTree).focus()
        self.action_rescan()

    # ---------------------------------------------------------------------------------------- scan

    def rescan(self, select: Path | None = None) -> None:
        """Walk again (a conversion wrote a folder); then put the cursor on select when it was found."""
        try:
            Path(select or self.root).resolve().relative_to(self.root.resolve())
        except ValueError:
            return  # written outside the browsed folder: nothing here changes
        self._select_after_scan = select
        self.action_rescan()

    def action_rescan(self) -> None:
        self.entries = []
        self.skipped = []
        self.query_one(ScanTree).reset()
        self.scanning = True
        with self._found_lock:
            self._found = []
        self._show_status()
        self._show_entry(None)
        if self._drain_timer is None:
            self._drain_timer = self.set_interval(DRAIN_SECONDS, self._drain)
        self._scan_generation += 1
        self._scan(self._scan_generation)

    @work(thread=True, exclusive=True, group="scan", exit_on_error=False)
    def _scan(self, generation: int) -> None:
        """Walk in a thread. Entries go to a list the UI drains on a timer, so what is found shows
        within DRAIN_SECONDS even when the walk then hangs (a stuck NFS mount), and a 100k-folder
        tree never floods the UI with messages."""
        worker = get_current_worker()
        report = ScanReport(self.root)
        self._report = report
        for entry in scan(self.root, MAX_DEPTH, report):
            with self._found_lock:
                if worker.is_cancelled or generation != self._scan_generation:
                    return  # a rescan started: this walk's results are stale
                self._found.append(entry)
                self._skipped_so_far = report.skipped[:]
        if not worker.is_cancelled and generation == self._scan_generation:
            with self._found_lock:
                self._skipped_so_far = report.skipped[:]
            self.app.call_from_thread(self._scan_finished, generation)

    def _drain(self) -> None:
        with self._found_lock:
            batch, self._found = self._found, []
            skipped = self._skipped_so_far
        if batch or skipped != self.skipped:
            self._add_found(batch, skipped)
        elif self.scanning and self._report is not None and self._report.folders != self._folders_shown:
            self._show_status()  # nothing found for a while: the folder count shows the walk goes on

    def show_failure(self, message: str) -> None:
        """The walk itself failed (scan() reports problems, so this is a bug): end it, say so."""
        self.notify(message, title="Scan failed", severity="error")
        self._scan_finished(self._scan_generation)

    def _scan_finished(self, generation: int) -> None:
        if generation != self._scan_generation:
            return
        self._drain()
        self.scanning = False
        self.ckpt_app.runs = [e for e in self.entries if e.is_run]
        if self._drain_timer is not None:
            self._drain_timer.stop()
            self._drain_timer = None
        self._show_status()
        if self._select_after_scan is not None:
            self.query_one(ScanTree).select_path(self._select_after_scan)
            self._select_after_scan = None
        self._show_current()

    def _add_found(self, batch: list[ScanEntry], skipped: list[str]) -> None:
        self.entries.extend(batch)
        self.skipped = skipped
        if any(e.is_run for e in batch):  # `l` works before the scan ends
            self.ckpt_app.runs = [e for e in self.entries if e.is_run]
        query = self.query_one("#filter", Input).value.strip()
        shown = [e for e in batch if not query or entry_matches(e, self.root, query)]
        self.query_one(ScanTree).add_entries(shown)
        self._show_status()
        self._show_current()

    def _show_current(self) -> None:
        tree = self.query_one(ScanTree)
        self._show_entry(tree.cursor_node.data if tree.cursor_node is not None else None)

    def _show_status(self) -> None:
        found = len(self.entries)
        runs = sum(1 for e in self.entries if e.is_run)
        checkpoints = found - runs
        text = f"{checkpoints} checkpoint(s) · {runs} TensorBoard run(s) under {self.root}"
        if self.scanning:
            folders = self._report.folders if self._report is not None else 0
            self._folders_shown = folders
            text = f"scanning {self.root} … {found} found so far · {folders:,} folder(s) visited"
        if self.skipped:
            text += f" · {len(self.skipped)} folder(s) skipped: {self.skipped[0]}"
        self.query_one("#status", Static).update(text)

    # ------------------------------------------------------------------------------------- cursor

    @on(ScanTree.NodeHighlighted)
    def _highlighted(self, event: ScanTree.NodeHighlighted) -> None:
        self._show_entry(event.node.data)
        self.refresh_bindings()  # b / r only show on a TensorBoard run

    @on(ScanTree.NodeSelected)
    def _selected(self, event: ScanTree.NodeSelected) -> None:
        self.action_open()

    def _current(self) -> ScanEntry | Folder | None:
        node = self.query_one(ScanTree).cursor_node
        return node.data if node is not None else None

    def _show_entry(self, item: ScanEntry | Folder | None) -> None:
        panel = self.query_one("#entry", FactsPanel)
        if isinstance(item, ScanEntry):
            facts = scan_entry_facts(item, self.root)
            mark = self.query_one(ScanTree).marks.get(item.path)
            if mark:
                facts.append(("marked", f"{mark} run for the loss comparison"))
            hint = (
                "Enter: compare losses · b/r: mark as baseline/resumed" if is_run(item) else "Enter: open · x: convert"
            )
            facts.append(("keys", hint))
            panel.set_facts(facts)
        elif isinstance(item, Folder):
            panel.set_facts([("folder", display_path(item.path, self.root))])
        elif self.scanning:
            panel.set_facts([("", "scanning…")])
        elif not self.entries:
            panel.set_facts([("", f"No checkpoint or TensorBoard run under {self.root} (depth {MAX_DEPTH}).")])
        else:
            panel.set_facts([])

    # -------------------------------------------------------------------------------------- actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        job = self.job_check(action)
        if job is not None:
            return job
        if action in ("mark_baseline", "mark_resumed"):
            return is_run(self._current())
        if action == "clear_filter":
            return bool(self.query_one("#filter", Input).display)
        return True

    def action_open(self) -> None:
        item = self._current()
        if not isinstance(item, ScanEntry):
            node = self.query_one(ScanTree).cursor_node
            if node is not None and node.allow_expand:
                node.toggle()
            return
        if item.is_run:
            self.ckpt_app.open_losses(baseline=item.path)
        else:
            self.ckpt_app.open_checkpoint(item.path)

    def action_mark_baseline(self) -> None:
        self._mark("baseline")

    def action_mark_resumed(self) -> None:
        self._mark("resumed")

    def _mark(self, role: str) -> None:
        item = self._current()
        if not is_run(item):
            return
        assert isinstance(item, ScanEntry)
        tree = self.query_one(ScanTree)
        for path, other in list(tree.marks.items()):
            if other == role or path == item.path:
                del tree.marks[path]
        tree.marks[item.path] = role
        setattr(self.ckpt_app, f"{role}_run", item.path)
        other = "resumed" if role == "baseline" else "baseline"
        if getattr(self.ckpt_app, f"{other}_run") == item.path:
            setattr(self.ckpt_app, f"{other}_run", None)
        tree.refresh_marks()  # the row shows the mark; no toast to cover the screen
        self._show_entry(item)

    def action_losses(self) -> None:
        self.ckpt_app.open_losses()

    def convert_source(self) -> Path | None:
        item = self._current()
        if isinstance(item, ScanEntry) and not item.is_run:
            return item.path
        return None

    def action_copy_path(self) -> None:
        item = self._current()
        if item is not None:
            text = str(item.path)
            self.app.copy_to_clipboard(text)
            self.notify(f"Copied {text}", timeout=3)

    # --------------------------------------------------------------------------------------- filter

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.display = True
        field.focus()
        self.refresh_bindings()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        query = event.value.strip()
        tree = self.query_one(ScanTree)
        tree.reset()
        tree.add_entries(e for e in self.entries if not query or entry_matches(e, self.root, query))
        if tree.cursor_node is None:
            self._show_entry(None)

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.query_one(ScanTree).focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.value = ""
        field.display = False
        self.query_one(ScanTree).focus()
        self.refresh_bindings()
