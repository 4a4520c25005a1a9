"""A Tree whose rows end in right-aligned columns that line up at every depth, under a header row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import Static, Tree
from textual.widgets._tree import TreeNode

T = TypeVar("T")


@dataclass(frozen=True)
class Column:
    """A right-aligned column: its header and width, and the tree width below which it is dropped."""

    title: str
    width: int
    min_tree_width: int = 0


class ColumnTree(Tree[T], Generic[T]):
    """Tree with aligned data columns; columns that do not fit at the current width are dropped.

    Subclasses set :attr:`COLUMNS` and implement :meth:`cells`. Names are cut with an ellipsis so a row
    never needs horizontal scrolling (the only kind of scrolling a keyboard user should not need).
    """

    DEFAULT_CSS = """
    ColumnTree {
        overflow-x: hidden;
        scrollbar-gutter: stable;
        scrollbar-size-vertical: 1;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("right", "expand_or_child", "Expand", show=False),
        Binding("left", "collapse_or_parent", "Collapse", show=False),
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("home,g", "scroll_home", "Top", show=False),
        Binding("end,G", "scroll_end", "Bottom", show=False),
    ]
    COLUMNS: ClassVar[Sequence[Column]] = ()
    GAP = 2

    def __init__(self, label: str = "", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(label, id=id, classes=classes)
        self.show_root = False
        self.guide_depth = 2

    # -------------------------------------------------------------------------------- subclass API

    def cells(self, node: TreeNode[T]) -> Sequence[Text | str]:
        """One cell per column of COLUMNS for this row."""
        return ()

    def name_style(self, node: TreeNode[T]) -> Style | str:
        """Style of the name part of a row."""
        return ""

    def decorate(self, node: TreeNode[T], label: Text) -> Text:
        """The name part as drawn: the node's label plus any state (marks) the subclass shows."""
        return label

    # ------------------------------------------------------------------------------------- layout

    def row_width(self) -> int:
        """Cells available to a row: the widget's width less the (always reserved) scrollbar gutter."""
        return self.scrollable_content_region.width or self.size.width

    def visible_columns_for(self, width: int) -> list[tuple[int, Column]]:
        return [(i, c) for i, c in enumerate(self.COLUMNS) if width >= c.min_tree_width]

    def visible_columns(self) -> list[tuple[int, Column]]:
        return self.visible_columns_for(self.row_width())

    def columns_width(self, width: int | None = None) -> int:
        cols = self.visible_columns() if width is None else self.visible_columns_for(width)
        return sum(c.width + self.GAP for _, c in cols)

    def header_text(self, width: int) -> Text:
        """The header row for a tree whose rows are width cells wide (scrollbar excluded)."""
        cols = self.visible_columns_for(width)
        text = Text("name".ljust(max(0, width - self.columns_width(width))))
        for _, col in cols:
            text.append(" " * self.GAP + col.title.rjust(col.width)[: col.width])
        return text

    def render_label(self, node: TreeNode[T], base_style: Style, style: Style) -> Text:
        depth = 0
        parent = node.parent
        while parent is not None and parent is not self.root:
            depth += 1
            parent = parent.parent
        indent = depth * self.guide_depth
        width = self.row_width()
        name_width = max(4, width - indent - self.columns_width())
        icon = (self.ICON_NODE_EXPANDED if node.is_expanded else self.ICON_NODE) if node.allow_expand else "  "
        name = Text(icon, style=base_style)
        label = node.label.copy()
        label.stylize(self.name_style(node))
        name.append_text(self.decorate(node, label))
        name.truncate(name_width, overflow="ellipsis", pad=True)
        row = Text()
        row.append_text(name)
        cells = self.cells(node)
        for index, col in self.visible_columns():
            cell = cells[index] if index < len(cells) else ""
            cell = cell if isinstance(cell, Text) else Text(str(cell))
            cell.truncate(col.width, overflow="ellipsis")
            row.append(" " * (self.GAP + col.width - cell.cell_len))
            row.append_text(cell)
        row.stylize(style)
        return row

    def get_label_width(self, node: TreeNode[T]) -> int:
        # Rows are padded to the widget's width when drawn; the natural width keeps the virtual size
        # no wider than the widget, so there is never a horizontal scrollbar.
        return 1

    # ------------------------------------------------------------------------------------ actions

    def action_expand_or_child(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.allow_expand and not node.is_expanded:
            node.expand()
        elif node.children:
            self.move_cursor(node.children[0])

    def action_collapse_or_parent(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.allow_expand and node.is_expanded:
            node.collapse()
        elif node.parent is not None and node.parent is not self.root:
            self.move_cursor(node.parent)


class ColumnHeader(Static):
    """The header row of a ColumnTree, kept in step with the tree's width and visible columns."""

    DEFAULT_CSS = """
    ColumnHeader {
        height: 1;
        text-style: bold;
        color: $text-muted;
        background: $surface;
        padding-right: 1;
    }
    """

    def __init__(self, tree: ColumnTree, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._column_tree = tree

    def render(self) -> Text:
        # Same width as the tree (both fill their pane); padding-right stands for its scrollbar gutter.
        return self._column_tree.header_text(self.content_region.width or self.size.width)
