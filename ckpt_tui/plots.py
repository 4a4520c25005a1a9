"""Terminal plots of loss curves with plotext: baseline and resumed curves, resume step, difference panel.

No Textual here. The draw functions take any plotext figure: the CLI passes a fresh
``plotext._figure._figure_class`` and the TUI passes ``PlotextPlot.plt`` (the same class, vendored by
textual-plotext). The two faces therefore draw the same picture.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ckpt_tui.core.losses import decimate

if TYPE_CHECKING:
    from ckpt_tui.core.losses import Comparison

BASELINE_COLOR = "blue+"
RESUMED_COLOR = "orange+"
RESUMED_COLORS = (RESUMED_COLOR, "magenta+", "cyan+", "green+")  # one per resumed run, in order
DIFF_COLOR = "red+"
MARK_COLOR = "gray"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def draw_curves(plt: Any, cmp: Comparison, *, max_points: int = 1000) -> None:
    """Both runs on one panel, resume step (and first divergence) as vertical lines."""
    plt.plot(*decimate(cmp.baseline.steps, cmp.baseline.values, max_points), label="baseline",
             color=BASELINE_COLOR, marker="braille")
    plt.plot(*decimate(cmp.resumed.steps, cmp.resumed.values, max_points), label="resumed",
             color=RESUMED_COLOR, marker="braille")
    _marks(plt, cmp)
    _step_ticks(plt, cmp.baseline.steps, cmp.resumed.steps)
    resume = "" if cmp.resume_step is None else f", resumed at step {cmp.resume_step}"
    plt.title(f"{cmp.tag}: baseline vs resumed{resume}")


def resumed_color(index: int) -> str:
    """The colour of the index-th resumed run (the first one is RESUMED_COLOR)."""
    return RESUMED_COLORS[index % len(RESUMED_COLORS)]


def draw_runs(
    plt: Any, cmps: Sequence[Comparison], labels: Sequence[str], *, focus: int = 0, max_points: int = 1000
) -> None:
    """One baseline and several resumed runs on one panel (each resumed run compared with the baseline).

    labels: the baseline's, then one per comparison. The resume step (and first divergence) marked are
    those of the focused comparison. With one comparison this is draw_curves with other labels.
    """
    base = cmps[0].baseline
    plt.plot(*decimate(base.steps, base.values, max_points), label=labels[0], color=BASELINE_COLOR,
             marker="braille")
    for i, cmp in enumerate(cmps):
        plt.plot(*decimate(cmp.resumed.steps, cmp.resumed.values, max_points), label=labels[i + 1],
                 color=resumed_color(i), marker="braille")
    _marks(plt, cmps[focus])
    _step_ticks(plt, base.steps, *(c.resumed.steps for c in cmps))
    plt.title(f"{cmps[0].tag}: baseline vs {len(cmps)} resumed runs")


def draw_diff(
    plt: Any, cmp: Comparison, *, max_points: int = 1000, shared_x: bool = False, name: str | None = None,
    color: str = DIFF_COLOR,
) -> None:
    """resumed - baseline on the common steps, with the ±atol band when the tolerance is absolute.

    name: the resumed run's label, for the legend (for a plot of several resumed runs); color: the line's.

    shared_x: for a panel drawn under draw_curves' panel. The x-axis spans both runs, with the same ticks
    as the curves, so a step sits at the same column in both; and the "step" label is left out (the panel
    above has the same axis), which gives a short terminal one more row of plot.
    """
    runs = (cmp.baseline.steps, cmp.resumed.steps)
    if cmp.compared:
        x, y = decimate(cmp.steps, cmp.diff, max_points)
        if x:
            plt.plot(x, y, color=color, marker="braille", label=f"{name or 'resumed'} - baseline")
            lo, hi = min(min(y), -cmp.atol), max(max(y), cmp.atol)
            if hi > lo:
                plt.ylim(lo, hi)
        if cmp.rtol == 0 and cmp.atol > 0:
            plt.horizontal_line(cmp.atol, color="green")
            plt.horizontal_line(-cmp.atol, color="green")
        _marks(plt, cmp)
        if not shared_x:
            _step_ticks(plt, cmp.steps)
    if shared_x:
        span = _step_span(*runs)
        if span is not None and span[1] > span[0]:
            plt.xlim(*span)
        _step_ticks(plt, *runs)
    max_diff = "n/a" if cmp.max_abs_diff is None else f"{cmp.max_abs_diff:.3g}"
    plt.title(f"difference: {cmp.verdict}, max |diff| {max_diff}, atol {cmp.atol:g}")
    if not shared_x:
        plt.xlabel("step")


def draw_comparison(fig: Any, cmp: Comparison, *, max_points: int = 1000) -> None:
    """Curves on top, difference below, on a fresh two-row layout of ``fig``."""
    fig.subplots(2, 1)
    draw_curves(fig.subplot(1, 1), cmp, max_points=max_points)
    draw_diff(fig.subplot(2, 1), cmp, max_points=max_points)


def render_comparison(cmp: Comparison, width: int = 100, height: int = 30, *, color: bool = True) -> str:
    """The comparison as a string for a terminal (ANSI colours unless ``color`` is False)."""
    from plotext._figure import _figure_class  # the figure class textual-plotext also builds on

    fig = _figure_class()
    fig._limit_size(False, False)  # plotext would clip to its idea of the terminal (24 rows when piped)
    fig.plot_size(width, height)
    fig.theme("pro" if color else "clear")
    draw_comparison(fig, cmp, max_points=max(4 * width, 200))
    for row in (1, 2):
        fig.subplot(row, 1).theme("pro" if color else "clear")
    text = fig.build()
    return text if color else _ANSI.sub("", text)


def step_ticks(lo: int, hi: int, count: int = 5) -> list[int]:
    """Round step numbers (1, 2, 2.5 or 5 times a power of ten apart) for an axis from ``lo`` to ``hi``."""
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    multiples = (1, 2, 2.5, 5, 10) if magnitude >= 10 else (1, 2, 5, 10)  # 2.5 only where it stays whole
    step = max(int(next(m * magnitude for m in multiples if m * magnitude >= raw)), 1)
    first = -(-lo // step) * step
    return list(range(first, hi + 1, step))


def step_label(step: int) -> str:
    """250000 -> 250k, 1500000 -> 1.5M: a terminal axis has no room for seven digits."""
    for limit, suffix in ((1_000_000, "M"), (10_000, "k")):
        if abs(step) >= limit:
            return f"{step / (limit if suffix == 'M' else 1000):g}{suffix}"
    return str(step)


def _step_span(*steps: Any) -> tuple[int, int] | None:
    """(first, last) step over the given step arrays (each sorted), None when all are empty."""
    present = [s for s in steps if len(s)]
    if not present:
        return None
    return min(int(s[0]) for s in present), max(int(s[-1]) for s in present)


def _step_ticks(plt: Any, *steps: Any) -> None:
    span = _step_span(*steps)
    if span is None:
        return
    ticks = step_ticks(*span)
    plt.xticks(ticks, [step_label(t) for t in ticks])


def _marks(plt: Any, cmp: Comparison) -> None:
    if cmp.resume_step is not None:
        plt.vertical_line(cmp.resume_step, color=MARK_COLOR)
    if cmp.first_divergence_step is not None:
        plt.vertical_line(cmp.first_divergence_step, color=DIFF_COLOR)
