"""Key/value fact panels: the header of a checkpoint, the summary of a scan entry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from ckpt_tui.core.model import Checkpoint
from ckpt_tui.core.scan import ScanEntry
from ckpt_tui.tui.format import display_path, human_bytes, human_count, kind_label, plural, short_dtype

Fact = tuple[str, "Text | str"]
SHORT_SCREEN = 36  # rows: below this, panels that allow it show their first facts only


class FactsPanel(Static):
    """Facts laid out in as many key/value column pairs as the width allows (1 to 3)."""

    DEFAULT_CSS = """
    FactsPanel {
        height: auto;
        padding: 0 1;
    }
    """

    def __init__(
        self,
        facts: Sequence[Fact] = (),
        *,
        short_rows: int | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self._facts: list[Fact] = list(facts)
        self._short_rows = short_rows  # on a short screen, at most this many rows: first facts first

    def set_facts(self, facts: Sequence[Fact]) -> None:
        self._facts = list(facts)
        self.refresh(layout=True)

    def render(self) -> RenderableType:
        width = self.content_region.width or self.size.width or 80
        pairs = 3 if width >= 150 else 2 if width >= 76 else 1
        wide = [f for f in self._facts if f[0] == "warning"]
        short = [f for f in self._facts if f[0] != "warning"]
        if self._short_rows is not None and self.app.size.height < SHORT_SCREEN:
            short = short[: self._short_rows * pairs]
            if len(wide) > 1:
                wide = [("warning", f"{wide[0][1]} (and {len(wide) - 1} more)")]
        rows = (len(short) + pairs - 1) // pairs
        columns = [short[i * rows : (i + 1) * rows] for i in range(pairs)]  # read down, then across
        key_widths = [max((len(k) for k, _ in col), default=0) for col in columns]
        needs = [
            max((Text(v).cell_len if isinstance(v, str) else v.cell_len for _, v in col), default=0) for col in columns
        ]
        gaps = 3 * pairs - 2  # one cell between the columns of the grid (key, value, spacer, ...)
        value_widths = share_out(width - sum(key_widths) - (pairs - 1) - gaps, needs)
        table = Table.grid(padding=(0, 1))
        for i in range(pairs):
            table.add_column(style="dim", no_wrap=True, width=key_widths[i])  # keys never shrink
            table.add_column(no_wrap=True, overflow="ellipsis", width=value_widths[i])
            if i < pairs - 1:
                table.add_column(width=1)
        for r in range(rows):
            cells: list[Text | str] = []
            for i, col in enumerate(columns):
                key, value = col[r] if r < len(col) else ("", "")
                cells += [key, value] + ([""] if i < pairs - 1 else [])
            table.add_row(*cells)
        if not wide:
            return table
        grid = Table.grid(expand=True)
        grid.add_column(ratio=1)
        grid.add_row(table)
        for _, text in wide:
            grid.add_row(Text.assemble(("warning ", "bold yellow"), text if isinstance(text, Text) else Text(text)))
        return grid


def share_out(budget: int, needs: list[int]) -> list[int]:
    """Widths for columns wanting `needs` cells within budget: short columns get all they need, long
    ones split what is left evenly (so one long path does not squeeze every other fact)."""
    widths = [0] * len(needs)
    left = max(budget, len(needs))
    order = sorted(range(len(needs)), key=lambda i: needs[i])
    for n, i in enumerate(order):
        fair = left // (len(needs) - n)
        widths[i] = max(1, min(needs[i], fair))
        left -= widths[i]
    return widths


def checkpoint_facts(ckpt: Checkpoint, root: Path, tags: Sequence[str] = ()) -> list[Fact]:
    """What a user wants to know about a checkpoint before looking at any tensor."""
    facts: list[Fact] = []
    kind = kind_label(ckpt.kind, ckpt.zero_stage)
    if ckpt.compute_dtype:
        kind.append(f" · {short_dtype(ckpt.compute_dtype)}")
    facts.append(("kind", kind))
    facts.append(("path", display_path(ckpt.path, root)))
    if ckpt.tag is not None or ckpt.step is not None:
        parts = [ckpt.tag] if ckpt.tag else []
        if ckpt.step is not None:
            parts.append(f"step {ckpt.step:,}")
        if len(tags) > 1 and ckpt.tag in tags:
            parts[0] = f"{ckpt.tag} ({tags.index(ckpt.tag) + 1}/{len(tags)})"
        facts.append(("tag", " · ".join(parts)))
    if ckpt.layout.dp is not None or ckpt.ds_version:
        world = ckpt.layout.describe() or "layout not recorded"
        if ckpt.ds_version:
            world += f" · DeepSpeed {ckpt.ds_version}"
        facts.append(("world", world))
    sizes = [human_count(ckpt.total_numel), plural(len(ckpt.tensors), "tensor"), human_bytes(ckpt.total_bytes)]
    facts.append(("parameters", " · ".join(sizes)))
    if ckpt.files:
        facts.append(("on disk", f"{plural(len(ckpt.files), 'file')} · {human_bytes(ckpt.files_bytes)}"))
    dtypes = " · ".join(f"{short_dtype(d)} {n} ({human_bytes(b)})" for d, (n, b) in ckpt.dtypes.items())
    if dtypes:
        facts.append(("dtypes", dtypes))
    if ckpt.optimizer_states:
        facts.append(("optimizer", ", ".join(ckpt.optimizer_states)))
    elif ckpt.config.get("optimizer"):
        facts.append(("optimizer", str(ckpt.config["optimizer"])))
    if ckpt.shared_params:
        ties = ", ".join(f"{a} = {o}" for a, o in sorted(ckpt.shared_params.items()))
        facts.append(("tied", ties))
    frozen = [t.name for t in ckpt.tensors if t.frozen]
    if frozen:
        facts.append(("frozen", f"{len(frozen)}: " + ", ".join(frozen)))
    model = ckpt.config.get("model_type") or ckpt.config.get("architectures")
    if model:
        facts.append(("model", model if isinstance(model, str) else ", ".join(map(str, model))))
    for warning in ckpt.warnings:
        facts.append(("warning", warning))
    return facts


def scan_entry_facts(entry: ScanEntry, root: Path) -> list[Fact]:
    facts: list[Fact] = [
        ("kind", kind_label(entry.kind, entry.stage)),
        ("path", display_path(entry.path, root)),
    ]
    if entry.tag:
        facts.append(("tag", entry.tag))
    if entry.step is not None:
        facts.append(("step", f"{entry.step:,}"))
    facts.append(("size", human_bytes(entry.size)))
    if entry.detail:
        facts.append(("holds", entry.detail))
    for note in entry.notes:
        facts.append(("warning", note))
    return facts

