"""Checkpoint view: header facts, the parameter tree, and a detail panel with statistics on demand."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static
from textual.worker import get_current_worker

from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.inspect import open_checkpoint
from ckpt_tui.core.model import Checkpoint
from ckpt_tui.core.tree import ParamNode, build_tree, filter_tree, format_shape
from ckpt_tui.tui.screens.worker_failures import ShowsWorkerFailures, internal_error_message
from ckpt_tui.tui.format import display_path
from ckpt_tui.tui.job_actions import JOB_BINDINGS, JobActions
from ckpt_tui.tui.widgets.column_tree import ColumnHeader
from ckpt_tui.tui.widgets.facts import FactsPanel, checkpoint_facts
from ckpt_tui.tui.widgets.job_panel import JobPanel
from ckpt_tui.tui.widgets.param_tree import ParamTree
from ckpt_tui.tui.widgets.tensor_detail import StatsState, TensorDetail


BIG_LISTING = 20_000  # tensors: above this, the listing is kept out of the cyclic GC while shown


class CheckpointScreen(ShowsWorkerFailures, JobActions, Screen[None]):
    """One checkpoint: what it is (header), what it holds (tree), and one tensor in detail.

    Opening reads metadata only, in a worker; values are read only for the tensor the user asks about.
    A conversion of it (x) shows its progress under the tree; its output opens on success.
    """

    TITLE = "Checkpoint"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        *JOB_BINDINGS,
        Binding("s", "stats", "Statistics"),
        Binding("slash", "filter", "Filter"),
        Binding("c", "copy_name", "Copy name", show=False),
        Binding("y", "copy_shape", "Copy shape", show=False),
        Binding("e", "expand_all", "Expand all", show=False),
        Binding("E", "collapse_all", "Collapse all", show=False),
        Binding("t", "next_tag", "Next tag"),
        Binding("f5,ctrl+r", "reload", "Reload", show=False),
    ]

    def __init__(self, path: Path, root: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.root = Path(root)
        self.ckpt: Checkpoint | None = None
        self.tree_root: ParamNode | None = None
        self._tags: list[str] = []
        self._save_dir: Path | None = None
        self._stats: dict[str, StatsState] = {}
        self._froze_gc = False

    def compose(self) -> ComposeResult:
        tree = ParamTree(id="params")
        yield Header()
        yield FactsPanel(short_rows=3, id="facts")
        with Container(id="body"):
            with Vertical(id="tree-pane"):
                yield ColumnHeader(tree, id="params-header")
                yield tree
                yield Input(placeholder="filter parameters by name (Esc clears)", id="param-filter")
            yield TensorDetail(id="detail")
        yield JobPanel(self.root, id="job")
        yield Static(id="error", classes="error-panel")
        yield Footer()

    def on_resize(self) -> None:
        self.query_one(FactsPanel).refresh(layout=True)  # fewer facts on a short screen

    def on_mount(self) -> None:
        self.sub_title = display_path(self.path, self.root)
        self.query_one("#error").display = False
        self.query_one("#param-filter").display = False
        self.load(self.path)

    # ------------------------------------------------------------------------------------- loading

    def load(self, path: Path) -> None:
        self.query_one("#body").loading = True
        self._open(path)

    @work(thread=True, exclusive=True, group="open", exit_on_error=False)
    def _open(self, path: Path) -> None:
        worker = get_current_worker()
        try:
            ckpt = open_checkpoint(path)
            tree = build_tree(ckpt.tensors)
        except CkptError as exc:
            if not worker.is_cancelled:
                self.app.call_from_thread(self.show_failure, str(exc))
            return
        if not worker.is_cancelled:
            self.app.call_from_thread(self._loaded, ckpt, tree)

    def _loaded(self, ckpt: Checkpoint, tree: ParamNode) -> None:
        self.ckpt, self.tree_root = ckpt, tree
        if len(ckpt.tensors) >= BIG_LISTING and not self._froze_gc:
            # A 100k-tensor listing is ~600k long-lived objects: every full GC pass would walk them all
            # (0.5-0.8 s UI freezes). They hold no cycles; keep them out of the collector while shown.
            gc.freeze()
            self._froze_gc = True
        self._stats.clear()
        if ckpt.metadata.get("tags"):
            self._tags = list(ckpt.metadata["tags"])
            self._save_dir = ckpt.path
        self.query_one(FactsPanel).set_facts(checkpoint_facts(ckpt, self.root, self._tags))
        self.query_one("#body").loading = False
        self.query_one("#error").display = False
        self.query_one(FactsPanel).display = True
        self.query_one("#body").display = True
        params = self.query_one(ParamTree)
        params.show(tree)
        params.focus()
        self.refresh_bindings()

    def show_failure(self, message: str) -> None:
        self.query_one("#body").loading = False
        self.query_one("#body").display = False
        self.query_one(FactsPanel).display = False
        error = self.query_one("#error", Static)
        error.update(
            Text.assemble(("Cannot open this checkpoint", "bold"), "\n\n", message, "\n\n", ("Esc: back", "dim"))
        )
        error.display = True
        self.notify(message, title="Cannot open", severity="error")

    # --------------------------------------------------------------------------------------- cursor

    def _cursor(self) -> ParamNode | None:
        node = self.query_one(ParamTree).cursor_node
        return node.data if node is not None else None

    @on(ParamTree.NodeHighlighted)
    def _highlighted(self, event: ParamTree.NodeHighlighted[ParamNode]) -> None:
        data = event.node.data
        self.query_one(TensorDetail).show(data, self._stats.get(data.path) if data else None)

    @on(ParamTree.NodeSelected)
    def _selected(self, event: ParamTree.NodeSelected[ParamNode]) -> None:
        data = event.node.data
        if data is None:
            return
        if data.children:
            event.node.toggle()
        else:
            self.action_stats()

    # -------------------------------------------------------------------------------------- actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        job = self.job_check(action)
        if job is not None:
            return job
        loaded = self.ckpt is not None
        if action == "next_tag":
            return loaded and len(self._tags) > 1
        if action in ("stats", "copy_name", "copy_shape", "expand_all", "collapse_all", "filter"):
            return loaded
        return True

    def action_back(self) -> None:
        if self.query_one("#param-filter", Input).display:
            self._clear_filter()  # Esc closes the filter first, then a finished job's panel, then the screen
            return
        if self.job_check("close_job"):
            self.action_close_job()
            return
        self.app.pop_screen()

    def convert_source(self) -> Checkpoint | None:
        return self.ckpt

    def action_stats(self) -> None:
        node = self._cursor()
        if self.ckpt is None or node is None or node.tensor is None or node.children:
            self.notify("Statistics are per tensor: move the cursor to a leaf.", severity="warning")
            return
        state = self._stats.get(node.path)
        if state is not None and (state.running or state.stats is not None):
            return
        self._stats[node.path] = StatsState(running=True)
        self.query_one(TensorDetail).show(node, self._stats[node.path])
        self._compute_stats(self.ckpt, node)

    @work(thread=True, group="stats", exit_on_error=False)
    def _compute_stats(self, ckpt: Checkpoint, node: ParamNode) -> None:
        from ckpt_tui.core.values import load_tensor, tensor_stats  # torch: only now, in the worker

        assert node.tensor is not None
        try:
            state = StatsState(stats=tensor_stats(load_tensor(ckpt, node.tensor)))
        except CkptError as exc:
            state = StatsState(error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug: shown in the panel, the screen stays usable
            state = StatsState(error=internal_error_message(exc))
        self.app.call_from_thread(self._stats_done, ckpt, node, state)

    def _stats_done(self, ckpt: Checkpoint, node: ParamNode, state: StatsState) -> None:
        if ckpt is not self.ckpt:
            return  # another tag was opened meanwhile
        self._stats[node.path] = state
        detail = self.query_one(TensorDetail)
        if detail.node is not None and detail.node.path == node.path:
            detail.show(detail.node, state)

    def action_copy_name(self) -> None:
        node = self._cursor()
        if node is not None:
            self._copy(node.path)

    def action_copy_shape(self) -> None:
        node = self._cursor()
        if node is None or node.tensor is None:
            self.notify("Only tensors have a shape.", severity="warning")
            return
        self._copy(format_shape(node.tensor.shape))

    def _copy(self, text: str) -> None:
        self.app.copy_to_clipboard(text)
        self.notify(f"Copied {text}", timeout=3)

    def on_unmount(self) -> None:
        if self._froze_gc:
            gc.unfreeze()
            self._froze_gc = False

    def action_expand_all(self) -> None:
        self.query_one(ParamTree).expand_everything()

    def action_collapse_all(self) -> None:
        self.query_one(ParamTree).collapse_everything()

    def action_next_tag(self) -> None:
        if len(self._tags) < 2 or self._save_dir is None or self.ckpt is None:
            return
        current = self._tags.index(self.ckpt.tag) if self.ckpt.tag in self._tags else -1
        tag = self._tags[(current + 1) % len(self._tags)]
        self.notify(f"Opening tag {tag}", timeout=2)
        self.load(self._save_dir / tag)

    def action_reload(self) -> None:
        self.load(self.path)

    # --------------------------------------------------------------------------------------- filter

    def action_filter(self) -> None:
        field = self.query_one("#param-filter", Input)
        field.display = True
        field.focus()

    @on(Input.Changed, "#param-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        if self.tree_root is None:
            return
        query = event.value.strip()
        shown = filter_tree(self.tree_root, query)
        self.query_one(ParamTree).show(shown, expand_all=bool(query))
        if query and not shown.children:
            self.query_one(TensorDetail).show(None)

    @on(Input.Submitted, "#param-filter")
    def _filter_submitted(self) -> None:
        self.query_one(ParamTree).focus()

    def _clear_filter(self) -> None:
        field = self.query_one("#param-filter", Input)
        field.value = ""
        field.display = False
        self.query_one(ParamTree).focus()
