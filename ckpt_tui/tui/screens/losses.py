"""Losses: a baseline and a resumed run on one plot, their difference below, the verdict beside.

Several resumed runs (the demo's resumed-from-zero and resumed-from-hf) can be compared with one
baseline: every curve is plotted, each run's verdict gets a line, and one of them, the focused run
(f cycles), is detailed: its difference plot, statistics, and the "resumed" picker.
"""

from __future__ import annotations

from collections.abc import Sequence
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
from ckpt_tui.tui.screens.worker_failures import ShowsWorkerFailures
from ckpt_tui.tui.format import display_path, relative_path

if TYPE_CHECKING:
    from ckpt_tui.core.losses import Comparison, Run

ATOL_STEPS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


GENERIC_RUN_NAMES = {"tb", "tensorboard", "runs", "logs", "events"}


@dataclass
class LoadedPair:
    """The runs read (a baseline per resumed run: the same one unless a folder holds both), and the
    tags worth offering (loss tags first) that all of them have."""

    baselines: list[Run]
    resumed: list[Run]
    tags: list[str]
    default_tag: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def baseline(self) -> Run:
        return self.baselines[0]


def run_labels(paths: Sequence[Path], root: Path) -> list[str]:
    """Short names for runs in a legend: the folder name (its parent's for a generic `tb/`), or the
    path shown when two would read the same."""
    def short(p: Path) -> str:
        if p.name.lower() in GENERIC_RUN_NAMES and p.parent.name:
            return p.parent.name
        return p.name or str(p)

    labels = [short(p) for p in paths]
    if len(set(labels)) < len(labels):
        labels = [display_path(p, root) for p in paths]
    return labels


class LossScreen(ShowsWorkerFailures, Screen[None]):
    """Pick two runs and a tag; reading and aligning run in workers, drawing happens on resize."""

    TITLE = "Losses"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("f", "next_resumed", "Next resumed"),
        Binding("t", "next_tag", "Next tag"),
        Binding("v", "toggle_validation", "Train/val"),
        Binding("s", "swap", "Swap"),
        Binding("plus,equals_sign", "looser", "Looser tol.", show=False),
        Binding("minus", "tighter", "Tighter tol.", show=False),
        Binding("f5,ctrl+r", "reload", "Reload", show=False),
    ]

    def __init__(
        self,
        root: Path,
        runs: list[Path],
        *,
        baseline: Path | None = None,
        resumed: Path | Sequence[Path] | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        wanted = [Path(resumed)] if isinstance(resumed, (str, Path)) else [Path(r) for r in resumed or ()]
        extra = ([Path(baseline)] if baseline else []) + wanted
        self.runs = list(dict.fromkeys([*(Path(r) for r in runs), *extra]))
        self.baseline = Path(baseline) if baseline else (self.runs[0] if self.runs else None)
        others = [r for r in self.runs if r != self.baseline]
        default = others[0] if others else self.baseline
        self.resumed_runs: list[Path] = list(dict.fromkeys(wanted)) or ([default] if default else [])
        self.focus = 0  # index in resumed_runs of the run detailed
        self.pair: LoadedPair | None = None
        self.tag: str | None = None
        self.atol: float | None = None
        self.comparisons: list[Comparison] = []  # one per resumed run, in order

    @property
    def resumed(self) -> Path | None:
        """The focused resumed run (the one the "resumed" picker shows)."""
        return self.resumed_runs[self.focus] if self.resumed_runs else None

    @resumed.setter
    def resumed(self, path: Path) -> None:
        if self.resumed_runs:
            self.resumed_runs[self.focus] = path
        else:
            self.resumed_runs, self.focus = [path], 0

    @property
    def comparison(self) -> Comparison | None:
        """The focused resumed run compared with the baseline."""
        return self.comparisons[self.focus] if self.focus < len(self.comparisons) else None

    @property
    def multi(self) -> bool:
        return len(self.resumed_runs) > 1

    def labels(self) -> list[str]:
        """Legend names: the baseline's, then one per resumed run."""
        paths = [self.baseline, *self.resumed_runs] if self.baseline else list(self.resumed_runs)
        return run_labels(paths, self.root)

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
        self.set_class(self.multi, "-multi")
        self._load()

    def _title(self) -> str:
        if self.baseline is None or self.resumed is None:
            return ""
        if self.multi:
            names = ", ".join(display_path(r, self.root) for r in self.resumed_runs)
            return f"{display_path(self.baseline, self.root)} vs {names}"
        return f"{display_path(self.baseline, self.root)} vs {display_path(self.resumed, self.root)}"

    # ------------------------------------------------------------------------------------- loading

    def _load(self) -> None:
        from ckpt_tui.tui.widgets.loss_panel import VerdictPanel

        if self.baseline is None or self.resumed is None:
            self.query_one(VerdictPanel).show(None, message="Pick a baseline and a resumed run.")
            return
        self.query_one("#loss-body").loading = True
        self._read(self.baseline, list(self.resumed_runs))

    @work(thread=True, exclusive=True, group="losses", exit_on_error=False)
    def _read(self, baseline: Path, resumed: list[Path]) -> None:
        from ckpt_tui.core import losses

        worker = get_current_worker()
        try:
            bases, runs, notes = [], [], []
            shared_base: Run | None = None  # the baseline folder read once for every resumed run
            for path in resumed:
                if shared_base is not None and Path(path).resolve() != Path(baseline).resolve():
                    base, res = shared_base, losses.load_run(path)
                else:
                    base, res = losses.open_pair(baseline, path)
                    base.require_data()
                    notes += base.all_notes()
                    if Path(path).resolve() != Path(baseline).resolve():
                        shared_base = base
                res.require_data()
                bases.append(base)
                runs.append(res)
                notes += res.all_notes()
            shared = set(bases[0].tags)
            for run in [*bases, *runs]:
                shared &= set(run.tags)
            common = sorted(shared)
            kinds = {t: losses.loss_kind(t) for t in common}
            tags = [t for t in common if kinds[t] == "train"] + [t for t in common if kinds[t] == "validation"]
            tags += [t for t in common if kinds[t] is None]
            pair = LoadedPair(bases, runs, tags, losses.default_loss_tag(common), list(dict.fromkeys(notes)))
        except CkptError as exc:
            if not worker.is_cancelled:
                self.app.call_from_thread(self.show_failure, str(exc))
            return
        if not worker.is_cancelled:
            self.app.call_from_thread(self._loaded, pair)

    def _loaded(self, pair: LoadedPair) -> None:
        self.pair = pair
        tag_select = self.query_one("#tag", Select)
        if not pair.tags:
            self.show_failure("the runs have no scalar tag in common")
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
            cmps = [
                losses.compare(base.series(self.tag), res.series(self.tag), atol=atol)
                for base, res in zip(pair.baselines, pair.resumed)
            ]
        except CkptError as exc:
            self.show_failure(str(exc))
            return
        self.atol = cmps[0].atol
        self.comparisons = cmps
        self._draw()

    def _draw(self) -> None:
        from ckpt_tui.plots import resumed_color
        from ckpt_tui.tui.widgets.loss_panel import CurvesPlot, DiffPlot, VerdictPanel

        self.query_one("#loss-body").loading = False
        cmp = self.comparison
        notes = self.pair.notes if self.pair else []
        if self.multi and len(self.comparisons) == len(self.resumed_runs):
            labels = self.labels()
            self.query_one(CurvesPlot).show(cmp, runs=self.comparisons, labels=labels, focus=self.focus)
            self.query_one(DiffPlot).show(cmp, name=labels[self.focus + 1], color=resumed_color(self.focus))
            runs = list(zip(labels[1:], self.comparisons))
            self.query_one(VerdictPanel).show(cmp, notes, runs=runs, focus=self.focus)
        else:
            self.query_one(CurvesPlot).show(cmp)
            self.query_one(DiffPlot).show(cmp)
            self.query_one(VerdictPanel).show(cmp, notes)
        self.refresh_bindings()

    def show_failure(self, message: str) -> None:
        from ckpt_tui.tui.widgets.loss_panel import CurvesPlot, DiffPlot, VerdictPanel

        self.query_one("#loss-body").loading = False
        self.comparisons = []
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
            if event.value in self.resumed_runs:  # one of the runs compared already: focus it
                self._set_focus(self.resumed_runs.index(event.value))
                return
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
        self.set_class(self.multi, "-multi")
        self._load()

    # ------------------------------------------------------------------------------------- actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("next_tag", "toggle_validation"):
            return self.pair is not None and len(self.pair.tags) > 1
        if action in ("looser", "tighter"):
            return self.comparison is not None
        if action == "next_resumed":
            return self.multi
        return True

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_next_resumed(self) -> None:
        """Detail the next resumed run (its difference plot, statistics and picker)."""
        if self.multi:
            self._set_focus((self.focus + 1) % len(self.resumed_runs))

    def _set_focus(self, index: int) -> None:
        self.focus = index
        with self.prevent(Select.Changed):
            self.query_one("#resumed", Select).value = self.resumed
        if len(self.comparisons) == len(self.resumed_runs):
            self._draw()

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
