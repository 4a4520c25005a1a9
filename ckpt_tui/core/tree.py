"""Group a flat list of tensors into a tree by dotted name, with per-node totals.

Pure Python over :class:`TensorEntry`, shared by the TUI's parameter tree and the CLI's text tree.
Siblings are in natural order (``layers.2`` before ``layers.10``). A group whose children are all
numbered (``layers.0 .. layers.N``) is marked :attr:`ParamNode.numbered`: views fold it by default, and
:attr:`ParamNode.repeats` says whether every block has the same structure, so a view can print one
block for all of them. Tied aliases are listed but count zero, as in :attr:`Checkpoint.total_bytes`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ckpt_tui.core.model import TensorEntry
from ckpt_tui.core.units import format_shape, human_bytes, human_count  # noqa: F401 - re-exported for views

_NUMBER = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders digit runs by value: 'h.2' < 'h.10', 'layer9' < 'layer10'."""
    parts = _NUMBER.split(text)
    key: list[tuple[int, int | str]] = []
    for i, part in enumerate(parts):
        if not part:
            continue
        key.append((0, int(part)) if i % 2 else (1, part.casefold()))
    return tuple(key)


@dataclass
class ParamNode:
    """One level of a dotted name: a group of tensors, or one tensor (a leaf)."""

    name: str  # this level's segment: "transformer", "h", "0", "weight"; "" for the root
    path: str  # full dotted name: "transformer.h.0"; "" for the root
    children: list[ParamNode] = field(default_factory=list)
    tensor: TensorEntry | None = None  # set on leaves (and on a group that is also a tensor's name)
    numel: int = 0  # elements below, tied aliases not counted
    nbytes: int = 0  # bytes below, tied aliases and unknown sizes not counted
    share: float = 0.0  # fraction of the whole tree's bytes (of its elements when no size is known)
    tensors: int = 0  # tensors below, aliases included
    dtypes: dict[str, tuple[int, int]] = field(default_factory=dict)  # dtype -> (tensors, bytes)
    numbered: bool = False  # every child is a number: a stack of repeated blocks such as layers.0..N
    repeats: bool = False  # numbered, and every block has the same names, shapes and dtypes

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def depth(self) -> int:
        return self.path.count(".") + 1 if self.path else 0

    def walk(self) -> Iterator[ParamNode]:
        """This node and every node below it, depth first, in display order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def find(self, path: str) -> ParamNode | None:
        """The node with this full dotted name, or None."""
        if path == self.path:
            return self
        for child in self.children:
            if path == child.path or path.startswith(child.path + "."):
                return child.find(path)
        return None

    @property
    def number_range(self) -> tuple[int, int] | None:
        """(first, last) block number of a numbered group."""
        if not self.numbered:
            return None
        numbers = [int(c.name) for c in self.children]
        return min(numbers), max(numbers)


def build_tree(tensors: Iterable[TensorEntry]) -> ParamNode:
    """The tree of dotted names for a checkpoint's tensors, totals and shares filled in."""
    root = ParamNode(name="", path="")
    index: dict[str, ParamNode] = {"": root}
    for entry in tensors:
        node = root
        parts = entry.name.split(".")
        for i, part in enumerate(parts):
            path = ".".join(parts[: i + 1])
            child = index.get(path)
            if child is None:
                child = ParamNode(name=part, path=path)
                index[path] = child
                node.children.append(child)
            node = child
        if node.tensor is not None:
            continue  # the same name twice (readers reject this); keep the first
        node.tensor = entry
    _finish(root)
    total_bytes = root.nbytes
    total_numel = root.numel
    for node in root.walk():
        if total_bytes:
            node.share = node.nbytes / total_bytes
        elif total_numel:
            node.share = node.numel / total_numel
    return root


def _finish(node: ParamNode) -> None:
    """Sort children, then sum totals bottom-up and mark numbered stacks."""
    node.children.sort(key=lambda c: natural_key(c.name))
    numel = nbytes = count = 0
    dtypes: dict[str, tuple[int, int]] = {}
    if node.tensor is not None:
        t = node.tensor
        count = 1
        own_bytes = 0 if t.tied_to else (t.nbytes or 0)
        if t.tied_to is None:
            numel = t.numel
            nbytes = own_bytes
            dtypes[t.dtype] = (1, own_bytes)
    for child in node.children:
        _finish(child)
        numel += child.numel
        nbytes += child.nbytes
        count += child.tensors
        for dtype, (n, b) in child.dtypes.items():
            n0, b0 = dtypes.get(dtype, (0, 0))
            dtypes[dtype] = (n0 + n, b0 + b)
    node.numel, node.nbytes, node.tensors = numel, nbytes, count
    node.dtypes = dict(sorted(dtypes.items()))
    node.numbered = bool(node.children) and node.tensor is None and all(c.name.isdigit() for c in node.children)
    if node.numbered and len(node.children) > 1:
        first = _signature(node.children[0])
        node.repeats = all(_signature(c) == first for c in node.children[1:])


def _signature(node: ParamNode) -> tuple:
    """What a block holds, relative to the block: (relative name, shape, dtype, tied) per tensor."""
    prefix = len(node.path) + 1
    return tuple(
        (n.path[prefix:], n.tensor.shape, n.tensor.dtype, n.tensor.tied_to is not None)
        for n in node.walk()
        if n.tensor is not None
    )


def filter_tree(root: ParamNode, query: str) -> ParamNode:
    """A copy of the tree keeping the tensors whose full name contains query (case-insensitive).

    Totals and shares of the kept nodes stay those of the full tree, so a filtered view still tells
    how much of the checkpoint each match is.
    """
    needle = query.casefold().strip()
    if not needle:
        return root
    kept = _filter(root, needle)
    return kept if kept is not None else ParamNode(name=root.name, path=root.path)


def _filter(node: ParamNode, needle: str) -> ParamNode | None:
    children = [c for c in (_filter(child, needle) for child in node.children) if c is not None]
    own = node.tensor is not None and needle in node.path.casefold()
    if not children and not own:
        return None
    return ParamNode(
        name=node.name,
        path=node.path,
        children=children,
        tensor=node.tensor,
        numel=node.numel,
        nbytes=node.nbytes,
        share=node.share,
        tensors=node.tensors,
        dtypes=node.dtypes,
        numbered=node.numbered,
        repeats=node.repeats,
    )
