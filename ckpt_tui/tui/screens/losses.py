"""Losses: a baseline and a resumed run on one plot, their difference below, the verdict beside."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, Select
from textual.worker import get_current_worker

from ckpt_tui.core.errors import CkptError
from ckpt_tui.tui.format import display_path, relative_path

if TYPE_CHECKING:
    from ckpt_tui.core.losses import Comparison, Run

ATOL_STEPS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class LoadedPair:
    """Both runs read, and the tags worth offering (loss tags first)."""

    baseline: Run
    resumed: Run
    tags: list[str]
    default_tag: str | None
    notes: list[str] = field(default_factory=list)


class LossScreen(Screen[None]):
    """Pick two runs and a tag; reading and aligning run in workers, drawing happens on resize."""

    TITLE = "Losses"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("t", "next_tag", "Next tag"),
        Binding("v", "toggle_validation", "Train/val"),
        Binding("s", "swap", "Swap"),
        Binding("plus,equals_sign", "looser", "Looser tol.", show=False),
        Binding("minus", "tighter", "Tighter tol.", show=False),
        Binding("f5,ctrl+r", "reload", "Reload", show=False),
    ]

    def __init__(
        self, root: Path, runs: list[Path], *, baseline: Path | None = None, resumed: Path | None = None
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.runs = list(dict.fromkeys(Path(r) for r in runs))
        self.baseline = baseline or (self.runs[0] if self.runs else None)
        others = [r for r in self.runs if r != self.baseline]
        self.resumed = resumed or (others[0] if others else self.baseline)
        self.pair: LoadedPair | None = None
        self.tag: str | None = None
        self.atol: float | None = None
        self.comparison: Comparison | None = None

    def compose(self) -> ComposeResult:
        from ckpt_tui.tui.widgets.loss_panel import CurvesPlot, DiffPlot, VerdictPanel

        options = [(relative_path(r, self.root), r) for r in self.runs]
        yield Header()
        with Horizontal(id="pickers"):
            with Horizontal(classes="picker"):
                yield Label("baseline", classes="picker-label")
                yield Select(
                    options, value=self.baseline or Select.NULL, allow_blank=False, id="baseline", compact=True
                )
            with Horizontal(classes="picker"):
                yield Label("resumed", classes="picker-label")
                yield Select(options, value=self.resumed or Select.NULL, allow_blank=False, id="resumed", compact=True)
            with Horizontal(classes="picker"):
                yield Label("tag", classes="picker-label")
                yield Select([], prompt="(reading runs…)", id="tag", compact=True)
        with Container(id="loss-body"):
            with Vertical(id="plots"):
                yield CurvesPlot(id="curves")
                yield DiffPlot(id="diff")
            yield VerdictPanel(id="verdict")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self._title()
        self._load()

    def _title(self) -> str:
        if self.baseline is None or self.resumed is None:
            return ""
        return f"{display_path(self.baseline, self.root)} vs {display_path(self.resumed, self.root)}"

    # ------------------------------------------------------------------------------------- loading

    def _load(self) -> None:
        from ckpt_tui.tui.widgets.loss_panel import VerdictPanel

        if self.baseline is None or self.resumed is None:
            self.query_one(VerdictPanel).show(None, message="Pick a baseline and a resumed run.")
            return
        self.query_one("#loss-body").loading = True
        self._read(self.baseline, self.resumed)

    @work(thread=True, exclusive=True, group="losses", exit_on_error=False)
    def _read(self, baseline: Path, resumed: Path) -> None:
        from ckpt_tui.core import losses

        worker = get_current_worker()
        try:
            base, res = losses.open_pair(baseline, resumed)
            base.require_data()
            res.require_data()
            common = sorted(set(base.tags) & set(res.tags))
            kinds = {t: losses.loss_kind(t) for t in common}
            tags = [t for t in common if kinds[t] == "train"] + [t for t in common if kinds[t] == "validation"]
            tags += [t for t in common if kinds[t] is None]
            pair = LoadedPair(base, res, tags, losses.default_loss_tag(common), base.all_notes() + res.all_notes())
        except CkptError as exc:
            if not worker.is_cancelled:
                self.app.call_from_thread(self._failed, str(exc))
            return
        if not worker.is_cancelled:
            self.app.call_from_thread(self._loaded, pair)

    def _loaded(self, pair: LoadedPair) -> None:
        self.pair = pair
        tag_select = self.query_one("#tag", Select)
        if not pair.tags:
            self._failed("the two runs have no scalar tag in common")
            return
        keep = self.tag if self.tag in pair.tags else None
        self.tag = keep or pair.default_tag or pair.tags[0]
        with self.prevent(Select.Changed):
            tag_select.set_options([(t, t) for t in pair.tags])
            tag_select.value = self.tag
        self._compare()

    def _compare(self) -> None:
        from ckpt_tui.core import losses

        pair = self.pair
        if pair is None or self.tag is None:
            return
        try:
            atol = self.atol if self.atol is not None else losses.DEFAULT_ATOL
            cmp = losses.compare(pair.baseline.series(self.tag), pair.resumed.series(self.tag), atol=atol)
        except CkptError as exc:
            self._failed(str(exc))
            return
        self.atol = cmp.atol
        self.comparison = cmp
        self._draw()

    def _draw(self) -> None:
        from ckpt_tui.tui.widgets.loss_panel import CurvesPlot, DiffPlot, VerdictPanel

        self.query_one("#loss-body").loading = False
        cmp = self.comparison
        self.query_one(CurvesPlot).show(cmp)
        self.query_one(DiffPlot).show(cmp)
        self.query_one(VerdictPanel).show(cmp, self.pair.notes if self.pair else [])
        self.refresh_bindings()

    def _failed(self, message: str) -> None:
        from ckpt_tui.tui.widgets.loss_panel import CurvesPlot, DiffPlot, VerdictPanel

        self.query_one("#loss-body").loading = False
        self.comparison = None
        self.query_one(CurvesPlot).show(None)
        self.query_one(DiffPlot).show(None)
        self.query_one(VerdictPanel).show(None, message=f"Cannot compare: {message}")
        self.notify(message, title="Cannot compare", severity="error")

    # ------------------------------------------------------------------------------------- pickers

    @on(Select.Changed, "#baseline")
    def _baseline_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, Path) and event.value != self.baseline:
            self.baseline = event.value
            self._runs_changed()

    @on(Select.Changed, "#resumed")
    def _resumed_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, Path) and event.value != self.resumed:
            self.resumed = event.value
            self._runs_changed()

    @on(Select.Changed, "#tag")
    def _tag_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and event.value != self.tag:
            self.tag = event.value
            self._compare()

    def _runs_changed(self) -> None:
        self.pair = None
        self.sub_title = self._title()
        self._load()

    # ------------------------------------------------------------------------------------- actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("next_tag", "toggle_validation"):
            return self.pair is not None and len(self.pair.tags) > 1
        if action in ("looser", "tighter"):
            return self.comparison is not None
        return True

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_next_tag(self) -> None:
        if self.pair is None or not self.pair.tags:
            return
        index = self.pair.tags.index(self.tag) if self.tag in self.pair.tags else -1
        self._set_tag(self.pair.tags[(index + 1) % len(self.pair.tags)])

    def action_toggle_validation(self) -> None:
        """Jump between the training loss and the validation loss."""
        from ckpt_tui.core.losses import loss_kind

        if self.pair is None or self.tag is None:
            return
        want = "train" if loss_kind(self.tag) == "validation" else "validation"
        for tag in self.pair.tags:
            if loss_kind(tag) == want:
                self._set_tag(tag)
                return
        self.notify(f"No {want} loss tag in both runs.", severity="warning")

    def _set_tag(self, tag: str) -> None:
        self.tag = tag
        with self.prevent(Select.Changed):
            self.query_one("#tag", Select).value = tag
        self._compare()

    def action_swap(self) -> None:
        if self.baseline is None or self.resumed is None:
            return
        self.baseline, self.resumed = self.resumed, self.baseline
        with self.prevent(Select.Changed):
            self.query_one("#baseline", Select).value = self.baseline
            self.query_one("#resumed", Select).value = self.resumed
        self._runs_changed()

    def action_looser(self) -> None:
        self._step_tolerance(+1)

    def action_tighter(self) -> None:
        self._step_tolerance(-1)

    def _step_tolerance(self, direction: int) -> None:
        if self.atol is None:
            return
        closest = min(range(len(ATOL_STEPS)), key=lambda i: abs(ATOL_STEPS[i] - self.atol))  # type: ignore[operator]
        index = max(0, min(len(ATOL_STEPS) - 1, closest + direction))
        self.atol = ATOL_STEPS[index]
        self._compare()

    def action_reload(self) -> None:
        self._runs_changed()

    def on_resize(self, _event: Any) -> None:
        if self.comparison is not None:
            self.call_after_refresh(self._draw)
