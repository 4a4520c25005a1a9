"""The browser's tree: folders of the browsed root down to each checkpoint and TensorBoard run found."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.widgets._tree import TreeNode

from ckpt_tui.core.scan import ScanEntry
from ckpt_tui.tui.format import human_bytes, kind_badge, kind_short
from ckpt_tui.tui.widgets.column_tree import Column, ColumnTree


@dataclass(frozen=True)
class Folder:
    """A folder on the way from the root to something found (not itself a checkpoint)."""

    path: Path


BrowseItem = ScanEntry | Folder


class ScanTree(ColumnTree[BrowseItem]):
    """Grows while the scan runs: each entry is hung under its folders as soon as it is found."""

    COLUMNS: ClassVar[Sequence[Column]] = (
        Column("kind", 11),
        Column("step", 7),
        Column("size", 9),
    )

    def __init__(self, root: Path, *, id: str | None = None) -> None:
        super().__init__(str(root), id=id)
        self.auto_expand = False  # Enter is the browser's "open"; it toggles folders itself
        self.root_path = Path(root)
        self._by_path: dict[Path, TreeNode[BrowseItem]] = {}
        self.marks: dict[Path, str] = {}  # run path -> "baseline" | "resumed"

    def reset(self) -> None:
        self.clear()
        self._by_path = {}
        self.root.expand()

    def add_entries(self, entries: Iterable[ScanEntry]) -> None:
        had_cursor = self.cursor_node is not None and self.cursor_line >= 0
        for entry in entries:
            self._add(entry)
        if not had_cursor and self.root.children:
            self.move_cursor(self._first_entry_node() or self.root.children[0])

    def _add(self, entry: ScanEntry) -> None:
        parent = self._folder_node(entry.path.parent) if entry.path != self.root_path else self.root
        name = entry.path.name if entry.path != self.root_path else str(self.root_path)
        node = parent.add(Text(name), data=entry, expand=True, allow_expand=False)
        self._by_path[entry.path] = node

    def _folder_node(self, folder: Path) -> TreeNode[BrowseItem]:
        if folder in self._by_path:
            node = self._by_path[folder]
            node.allow_expand = True
            return node
        try:
            folder.relative_to(self.root_path)
        except ValueError:
            return self.root
        if folder == self.root_path:
            return self.root
        parent = self._folder_node(folder.parent)
        node = parent.add(Text(folder.name + "/"), data=Folder(folder), expand=True)
        self._by_path[folder] = node
        return node

    def _first_entry_node(self) -> TreeNode[BrowseItem] | None:
        for node in self._by_path.values():
            if isinstance(node.data, ScanEntry):
                return node
        return None

    def select_path(self, path: Path) -> None:
        node = self._by_path.get(path)
        if node is not None:
            self.move_cursor(node)

    def refresh_marks(self) -> None:
        for path in list(self._by_path):
            node = self._by_path[path]
            if isinstance(node.data, ScanEntry):
                node.refresh()

    # ----------------------------------------------------------------------------------- drawing

    def name_style(self, node: TreeNode[BrowseItem]) -> Style | str:
        if isinstance(node.data, Folder):
            return "dim"
        return "bold"

    def decorate(self, node: TreeNode[BrowseItem], label: Text) -> Text:
        mark = self.marks.get(node.data.path) if isinstance(node.data, ScanEntry) else None
        if mark is not None:
            label.append(f" [{mark}]", style="bold reverse")
        return label

    def cells(self, node: TreeNode[BrowseItem]) -> Sequence[Text | str]:
        item = node.data
        if not isinstance(item, ScanEntry):
            return ()
        step = "" if item.step is None else f"{item.step:,}"
        return (kind_badge(item.kind, item.stage), step, human_bytes(item.size))


def entry_matches(entry: ScanEntry, root: Path, needle: str) -> bool:
    """Filter rule: the needle is in the path under the root, the kind, or the tag."""
    needle = needle.casefold()
    try:
        rel = str(entry.path.relative_to(root))
    except ValueError:
        rel = str(entry.path)
    words = [rel, kind_short(entry.kind), entry.kind.label, entry.tag or "", entry.detail]
    return any(needle in w.casefold() for w in words)


def is_run(item: BrowseItem | None) -> bool:
    return isinstance(item, ScanEntry) and item.is_run
