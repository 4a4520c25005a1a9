"""The parameter tree of a checkpoint: dotted names grouped, numbered stacks folded, sizes per node."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.widgets._tree import TreeNode

from ckpt_tui.core.tree import ParamNode, format_shape
from ckpt_tui.tui.format import human_bytes, human_count, plural, short_dtype
from ckpt_tui.tui.widgets.column_tree import Column, ColumnTree

AUTO_EXPAND_TENSORS = 40  # groups this small open on their own; bigger ones wait for the user


class ParamTree(ColumnTree[ParamNode]):
    """Checkpoint parameters by dotted name. Children are added when a node is first expanded, so a
    model with tens of thousands of tensors opens as fast as a small one."""

    COLUMNS: ClassVar[Sequence[Column]] = (
        Column("shape", 14),
        Column("dtype", 5),
        Column("numel", 8, min_tree_width=78),
        Column("bytes", 9),
        Column("share", 6, min_tree_width=60),
    )

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("parameters", id=id)
        self.auto_expand = False  # Enter on a leaf asks for statistics; groups toggle themselves
        self._populated: set[int] = set()

    def show(self, root: ParamNode, *, expand_all: bool = False) -> None:
        """Replace the tree's content with root's children."""
        self.clear()
        self._populated = {self.root.id}
        self.root.data = root
        self._add_children(self.root, root, expand_all=expand_all)
        self.root.expand()
        if self.root.children:
            self.move_cursor(self.root.children[0])

    def _add_children(self, parent: TreeNode[ParamNode], node: ParamNode, *, expand_all: bool) -> None:
        for child in node.children:
            opens = bool(child.children) and (expand_all or self._opens_by_itself(child))
            # added open (expand=), not opened after: .expand() posts a NodeExpanded per group, which
            # made each filter key cost ~0.5 s on a 100k-tensor model (benchmarks/bench_tui_tree.py)
            item = parent.add(self._label(child), data=child, allow_expand=bool(child.children), expand=opens)
            if opens:
                self._populate(item, expand_all=expand_all)

    def _populate(self, item: TreeNode[ParamNode], *, expand_all: bool = False) -> None:
        if item.id in self._populated or item.data is None:
            return
        self._populated.add(item.id)
        self._add_children(item, item.data, expand_all=expand_all)

    @staticmethod
    def _opens_by_itself(node: ParamNode) -> bool:
        """Open small groups and single-child chains; numbered stacks (layers.0..N) stay folded."""
        if node.numbered:
            return False
        if node.depth <= 1 or len(node.children) == 1:
            return True
        return node.tensors <= AUTO_EXPAND_TENSORS and node.depth <= 2

    def on_tree_node_expanded(self, event: ColumnTree.NodeExpanded[ParamNode]) -> None:
        self._populate(event.node)

    def expand_everything(self) -> None:
        """Open every group (fills in the lazily added children first).

        Children are filled in here, so the per-node NodeExpanded messages (one per group: minutes of
        message handling on a 100k-tensor tree) are suppressed.
        """

        def walk(item: TreeNode[ParamNode]) -> None:
            self._populate(item)
            for child in item.children:
                if child.allow_expand:
                    child.expand()
                    walk(child)

        with self.prevent(ColumnTree.NodeExpanded):
            walk(self.root)

    def collapse_everything(self) -> None:
        with self.prevent(ColumnTree.NodeCollapsed):  # nothing listens; one message per group is all cost
            for child in self.root.children:
                child.collapse_all()
        if self.root.children:
            self.move_cursor(self.root.children[0])

    # ----------------------------------------------------------------------------------- drawing

    @staticmethod
    def _label(node: ParamNode) -> Text:
        label = Text(node.name)
        if node.numbered:
            first, last = node.number_range or (0, 0)
            label.append(f" [{first}..{last}]", style="dim")
            label.append(f" ×{len(node.children)}" + (" same" if node.repeats else ""), style="dim italic")
        t = node.tensor
        if t is not None:
            if t.tied_to:
                label.append(f" = {t.tied_to}", style="italic dim")
            if t.frozen:
                label.append(" frozen", style="italic cyan")
            if t.buffer:
                label.append(" buffer", style="italic dim")
        return label

    def name_style(self, node: TreeNode[ParamNode]) -> Style | str:
        data = node.data
        if data is None or data.children:
            return "bold"
        return ""

    def cells(self, node: TreeNode[ParamNode]) -> Sequence[Text | str]:
        data = node.data
        if data is None:
            return ()
        t = data.tensor
        if t is not None and not data.children:
            shape = format_shape(t.shape)
            dtype = short_dtype(t.dtype)
        else:
            shape = plural(data.tensors, "tensor")
            dtype = short_dtype(next(iter(data.dtypes))) if len(data.dtypes) == 1 else ("mixed" if data.dtypes else "")
        if t is not None and t.tied_to and not data.children:
            return (shape, dtype, Text("tied", style="dim"), Text("-", style="dim"), Text("-", style="dim"))
        share = Text(f"{data.share * 100:.1f}%", style="dim" if data.share < 0.001 else "")
        return (shape, dtype, human_count(data.numel), human_bytes(data.nbytes), share)
