"""Help (F1 or ?): the keys of every screen, generated from the bindings so it cannot drift."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from ckpt_tui.tui.keys import key_actions

TREE_KEYS = [
    ("↑ ↓  j k", "move"),
    ("→ / ←", "expand, or go to the first child / collapse, or go to the parent"),
    ("space", "expand or collapse"),
    ("shift+space", "expand or collapse everything below"),
    ("home end  pgup pgdn", "jump"),
]


class HelpScreen(ModalScreen[None]):
    """Keys per screen, the current screen first."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,f1,question_mark,q", "dismiss", "Close")]

    def __init__(self, current: type[Screen] | None, screens: list[tuple[str, type[Screen]]]) -> None:
        super().__init__()
        self._current = current
        self._screens = screens

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog"):
            yield Static(Text("ckpt-tui keys", style="bold"), id="help-title")
            with VerticalScroll(id="help-body"):
                yield Static(self._table())
            yield Static(Text("Esc, F1 or ? closes · ctrl+p finds any action by name", style="dim"), id="help-hint")

    def _table(self) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        ordered = sorted(self._screens, key=lambda s: s[1] is not self._current)
        for title, screen_class in ordered:
            here = " (this screen)" if screen_class is self._current else ""
            self._section(
                table, f"{title}{here}", [(k.keys, k.description) for k in key_actions(self.app, screen_class)]
            )
        self._section(table, "Trees", TREE_KEYS)
        app_keys = [(k.keys, k.description) for k in key_actions(self.app, type(self.app))]
        app_keys += [("^p", "command palette: every action by name"), ("^q", "quit")]
        self._section(table, "Everywhere", app_keys)
        return table

    @staticmethod
    def _section(table: Table, title: str, rows: list[tuple[str, str]]) -> None:
        if table.row_count:
            table.add_row("", "")
        table.add_row(Text(title, style="bold underline"), "")
        for keys, what in rows:
            table.add_row(keys, what)
