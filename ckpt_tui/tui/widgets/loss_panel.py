"""Loss comparison widgets: the two plotext panels and the statistics/verdict panel beside them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static
from textual_plotext import PlotextPlot

from ckpt_tui.plots import DIFF_COLOR, draw_curves, draw_diff, draw_runs, resumed_color
from ckpt_tui.tui.format import number

if TYPE_CHECKING:
    from ckpt_tui.core.losses import Comparison

VERDICT_STYLE = {"match": "bold green", "diverged": "bold red", "no-overlap": "bold yellow"}
VERDICT_TEXT = {"match": "MATCH", "diverged": "DIVERGED", "no-overlap": "NO OVERLAP"}


def rich_color(plotext_color: str) -> str:
    """The Rich colour closest to a plotext one ("orange+" -> "dark_orange", "cyan+" -> "bright_cyan")."""
    name = plotext_color.rstrip("+")
    if name == "orange":
        return "dark_orange"
    return f"bright_{name}" if plotext_color.endswith("+") else name


class CurvesPlot(PlotextPlot):
    """Baseline and resumed curves with the resume step marked (drawn by ckpt_tui.plots).

    With several comparisons (one baseline, several resumed runs): every curve, labelled, the focused
    comparison's resume step marked.
    """

    def show(
        self, cmp: Comparison | None, *, runs: Sequence[Comparison] = (), labels: Sequence[str] = (),
        focus: int = 0,
    ) -> None:
        plt = self.plt
        plt.clear_figure()
        max_points = max(4 * (self.size.width or 80), 200)
        if len(runs) > 1:
            draw_runs(plt, runs, labels, focus=focus, max_points=max_points)
        elif cmp is not None:
            draw_curves(plt, cmp, max_points=max_points)
        self.refresh()


class DiffPlot(PlotextPlot):
    """resumed - baseline on the common steps, with the tolerance band."""

    def show(self, cmp: Comparison | None, *, name: str | None = None, color: str = DIFF_COLOR) -> None:
        plt = self.plt
        plt.clear_figure()
        if cmp is not None:
            draw_diff(plt, cmp, max_points=max(4 * (self.size.width or 80), 200), shared_x=True, name=name,
                      color=color)
        self.refresh()


class VerdictPanel(Static):
    """The numbers behind the plot and the verdict they lead to."""

    DEFAULT_CSS = """
    VerdictPanel {
        padding: 0 1;
    }
    """

    _cmp: Comparison | None = None
    _notes: list[str] = []
    _message: str | None = None
    _runs: list[tuple[str, Comparison]] = []
    _focus: int = 0

    def show(
        self, cmp: Comparison | None, notes: list[str] | None = None, message: str | None = None, *,
        runs: Sequence[tuple[str, Comparison]] = (), focus: int = 0,
    ) -> None:
        """cmp: the comparison detailed; runs: (label, comparison) of every resumed run when more than
        one, each summarised on a line of its own above the details (the focused one marked)."""
        self._cmp, self._notes, self._message = cmp, notes or [], message
        self._runs, self._focus = list(runs), focus
        self.refresh(layout=True)

    def _run_lines(self) -> Table:
        """One line per resumed run: marker, label, verdict, max |diff|."""
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True, width=1)
        grid.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True, style="dim")
        for i, (label, cmp) in enumerate(self._runs):
            badge = Text(VERDICT_TEXT.get(cmp.verdict, cmp.verdict), style=VERDICT_STYLE.get(cmp.verdict, "bold"))
            if i == self._focus:
                badge.stylize("reverse")
            grid.add_row(
                Text("▶" if i == self._focus else " ", style="bold"),
                Text(label, style=rich_color(resumed_color(i)) + (" bold" if i == self._focus else "")),
                badge,
                f"max |diff| {number(cmp.max_abs_diff)}",
            )
        return grid

    def render(self) -> RenderableType:
        if self._message:
            return Text(self._message)
        cmp = self._cmp
        if cmp is None:
            return Text("")
        verdict = Text(
            f" {VERDICT_TEXT.get(cmp.verdict, cmp.verdict)} ", style=f"reverse {VERDICT_STYLE.get(cmp.verdict, 'bold')}"
        )
        tol = f"atol {cmp.atol:g}" + (f", rtol {cmp.rtol:g}" if cmp.rtol else "")
        multi = len(self._runs) > 1
        head: RenderableType = self._run_lines() if multi else Text.assemble(verdict, "  ", (tol, "dim"))
        head_rows = len(self._runs) if multi else 1
        # Most telling first: a short panel shows only the first rows.
        rows: list[tuple[str, Text | str]] = []
        rows.append(("resumed at", "n/a" if cmp.resume_step is None else f"step {cmp.resume_step:,}"))
        where = "" if cmp.max_abs_diff_step is None else f" at step {cmp.max_abs_diff_step:,}"
        rows.append(("max |diff|", number(cmp.max_abs_diff) + where))
        overlap = cmp.overlap
        rows.append(("compared", f"{cmp.compared:,} steps" + (f" ({overlap[0]:,}..{overlap[1]:,})" if overlap else "")))
        if multi:
            rows.append(("tolerance", tol))
        if cmp.compared:
            style = "red" if cmp.mismatches else ""
            rows.append(("beyond tol.", Text(f"{cmp.mismatches:,} of {cmp.compared:,} steps", style=style)))
        if cmp.first_divergence_step is not None:
            rows.append(("first beyond", Text(f"step {cmp.first_divergence_step:,}", style="red")))
        rows.append(("mean |diff|", number(cmp.mean_abs_diff)))
        rows.append(("max rel diff", number(cmp.max_rel_diff)))
        rows.append(("points", f"baseline {len(cmp.baseline):,}, resumed {len(cmp.resumed):,}"))
        if cmp.only_baseline or cmp.only_resumed:
            rows.append(("unmatched", f"baseline {cmp.only_baseline}, resumed {cmp.only_resumed}"))
        rows.append(("tag", cmp.tag))
        height = self.content_region.height or 20
        width = self.content_region.width or self.size.width or 40
        pairs = 3 if width >= 120 else 2 if width >= 70 else 1
        per_column = (len(rows) + pairs - 1) // pairs
        if pairs > 1 and per_column > height - head_rows:  # a short strip: keep the first rows of each pair
            rows = rows[: max(1, height - head_rows) * pairs]
            per_column = (len(rows) + pairs - 1) // pairs
        table = Table.grid(padding=(0, 1), expand=pairs > 1)
        for _ in range(pairs):
            table.add_column(style="dim", no_wrap=True)
            table.add_column(no_wrap=True, overflow="ellipsis", ratio=1 if pairs > 1 else None)
        columns = [rows[i * per_column : (i + 1) * per_column] for i in range(pairs)]
        for r in range(per_column):
            cells: list[Text | str] = []
            for col in columns:
                cells += list(col[r]) if r < len(col) else ["", ""]
            table.add_row(*cells)
        parts: list[RenderableType] = [head]
        roomy = height >= len(rows) + 3 + head_rows
        if roomy:
            parts.append(Text(_verdict_sentence(cmp), style="italic"))
        parts.append(table)
        for note in self._notes:
            parts.append(Text(note, style="yellow"))
        if roomy:
            keys = "+/- tolerance · v train/validation · t next tag · s swap" + (" · f next resumed" if multi else "")
            parts.append(Text("\n" + keys, style="dim"))
        return Group(*parts)


def _verdict_sentence(cmp: Comparison) -> str:
    """The verdict in words, for someone who does not read the table."""
    if cmp.verdict == "match":
        return "The resumed run reproduces the baseline on every common step."
    if cmp.verdict == "no-overlap":
        return "The runs share no step: nothing to compare."
    return f"{cmp.mismatches} of {cmp.compared} steps differ beyond tolerance, from step {cmp.first_divergence_step}."
