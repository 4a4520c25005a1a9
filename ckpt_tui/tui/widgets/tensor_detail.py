"""The detail panel of the checkpoint view: facts of the node under the cursor, and its statistics."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from ckpt_tui.core.tree import ParamNode, format_shape
from ckpt_tui.core.values import TensorStats
from ckpt_tui.tui.format import human_bytes, human_count, number, plural, short_dtype

BLOCKS = " ▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class StatsState:
    """Where the statistics of one tensor are: not asked for, being computed, done, or failed."""

    stats: TensorStats | None = None
    running: bool = False
    error: str | None = None


def histogram_rows(counts: tuple[int, ...], height: int, bar_width: int = 1) -> list[str]:
    """A vertical bar chart of counts, height rows of block characters (eighths per cell)."""
    peak = max(counts) if counts else 0
    if peak == 0 or height <= 0:
        return []
    eighths = [round(c / peak * height * 8) if c else 0 for c in counts]
    eighths = [max(e, 1) if c else 0 for e, c in zip(eighths, counts, strict=True)]  # a non-empty bin never vanishes
    rows = []
    for row in range(height - 1, -1, -1):
        line = ""
        for e in eighths:
            level = min(max(e - row * 8, 0), 8)
            line += BLOCKS[level] * bar_width
        rows.append(line)
    return rows


class TensorDetail(Static):
    """Facts of one parameter-tree node; for a tensor, also its statistics when they are asked for."""

    DEFAULT_CSS = """
    TensorDetail {
        padding: 0 1;
        height: 1fr;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown_node: ParamNode | None = None
        self._stats_state = StatsState()

    def show(self, node: ParamNode | None, state: StatsState | None = None) -> None:
        self._shown_node = node
        self._stats_state = state or StatsState()
        self.refresh(layout=True)

    @property
    def node(self) -> ParamNode | None:
        return self._shown_node

    def render(self) -> RenderableType:
        node = self._shown_node
        if node is None:
            return Text("Move the cursor to a parameter.", style="dim")
        title = Text(node.path or "(all parameters)", style="bold")
        t = node.tensor
        if t is not None and not node.children:
            size = Text.assemble(
                (format_shape(t.shape), "bold"),
                f" {short_dtype(t.dtype)} · {t.numel:,} values · {human_bytes(t.nbytes)}",
            )
            if not t.tied_to:
                size.append(f" · {node.share * 100:.2f}% of total")
            where = Text.assemble(("file ", "dim"), t.file)
            flags = []
            lines = [title, size, where]
            if t.split:  # a TP-split tensor: how, and over which ranks, on a line of its own
                tps = sorted({p.tp for p in t.pieces if p.tp is not None})
                spread = f" · TP ranks {tps[0]}..{tps[-1]}" if len(tps) > 1 else ""
                lines.append(Text.assemble(("split ", "dim"), t.split + spread))
            elif len(t.pieces) > 1:
                ranks = sorted({p.rank for p in t.pieces if p.rank is not None})
                spread = f", ranks {ranks[0]}..{ranks[-1]}" if len(ranks) > 1 else ""
                flags.append(f"{len(t.pieces)} pieces{spread}")
            if t.tied_to:
                flags.append(f"tied to {t.tied_to}")
            if t.frozen:
                flags.append("frozen")
            if t.buffer:
                flags.append("buffer")
            if t.states:
                flags.append("states " + ",".join(t.states))
            if flags:
                where.append(" · " + " · ".join(flags), style="italic")
            for line in lines:
                line.no_wrap, line.overflow = True, "ellipsis"
            return Group(*lines, *self._stats_view(used=len(lines)))
        facts = Table.grid(padding=(0, 1))
        facts.add_column(style="dim", no_wrap=True)
        facts.add_column(no_wrap=True, overflow="ellipsis")
        facts.add_row("holds", f"{plural(node.tensors, 'tensor')} · {human_count(node.numel)} values ({node.numel:,})")
        facts.add_row("size", f"{human_bytes(node.nbytes)} · {node.share * 100:.2f}% of total")
        if node.dtypes:
            facts.add_row("dtypes", " · ".join(f"{short_dtype(d)} {n}" for d, (n, _b) in node.dtypes.items()))
        if node.numbered:
            first, last = node.number_range or (0, 0)
            same = "identical blocks" if node.repeats else "blocks differ"
            facts.add_row("blocks", f"{len(node.children)} ({first}..{last}), {same}")
        return Group(title, facts)

    def _stats_view(self, used: int) -> list[RenderableType]:
        state = self._stats_state
        if state.error:
            return [Text.assemble(("statistics: ", "dim"), (state.error, "red"))]
        if state.running:
            return [Text("computing statistics…", style="italic")]
        stats = state.stats
        if stats is None:
            return [
                Text.assemble(("press ", "dim"), ("s", "bold"), (" or Enter for statistics (reads the values)", "dim"))
            ]
        grid = Table.grid(padding=(0, 1))
        for _ in range(4):
            grid.add_column(style="dim", no_wrap=True)
            grid.add_column(no_wrap=True)
        bad = "bold red"
        grid.add_row(
            "min",
            number(stats.min),
            "max",
            number(stats.max),
            "mean",
            number(stats.mean),
            "std",
            number(stats.std),
        )
        grid.add_row(
            "|mean|",
            number(stats.abs_mean),
            "zeros",
            f"{stats.zeros:,}",
            "NaN",
            Text(f"{stats.nan:,}", style=bad if stats.nan else ""),
            "inf",
            Text(f"{stats.inf:,}", style=bad if stats.inf else ""),
        )
        out: list[RenderableType] = [grid]
        height = min(8, (self.content_region.height or 12) - used - 3)
        bins = max(len(stats.histogram), 1)
        bar_width = max(1, min(3, (self.content_region.width or 40) // bins))
        rows = histogram_rows(stats.histogram, max(height, 1), bar_width=bar_width)
        if rows:
            out.append(Text("\n".join(rows), style="bright_blue", no_wrap=True))
            span = len(rows[0])
            left, right = number(stats.min), number(stats.max)
            out.append(Text(left + right.rjust(max(span - len(left), len(right) + 1)), style="dim", no_wrap=True))
        return out
