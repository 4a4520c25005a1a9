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

from ckpt_tui.core import bulk
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
    """The tree of dotted names for a checkpoint's tensors, totals and shares filled in.

    Linear in the number of tensors (100k tensors build in a fraction of a second): each name finds its
    group by one dict lookup of its parent's path, each distinct segment's sort key is computed once,
    and the cyclic GC is paused while the (acyclic) nodes are made (see :mod:`ckpt_tui.core.bulk`).
    """
    with bulk.paused_gc():
        root = ParamNode(name="", path="")
        index: dict[str, ParamNode] = {"": root}
        for entry in tensors:
            node = index.get(entry.name)
            if node is None:
                name = entry.name
                cut = name.rfind(".")
                parent = index.get(name[:cut]) if cut >= 0 else root
                if parent is None:
                    node = _add_path(name, index)
                else:  # the parent group exists already (a sibling came first): the common case
                    node = index[name] = ParamNode(name=name[cut + 1 :], path=name)
                    parent.children.append(node)
            if node.tensor is None:  # the same name twice (readers reject this): keep the first
                node.tensor = entry
        _finish(root, {})
        total = root.nbytes or root.numel
        if total:
            by_bytes = bool(root.nbytes)
            stack = [root]
            while stack:
                node = stack.pop()
                node.share = (node.nbytes if by_bytes else node.numel) / total
                stack.extend(node.children)
    return root


def _add_path(path: str, index: dict[str, ParamNode]) -> ParamNode:
    """Make the node for a dotted path and the groups above it that are missing, parents first, each
    appended to its parent's children (the order a walk from the root creates them in)."""
    missing = [path]
    while True:
        cut = missing[-1].rfind(".")
        parent = index.get(missing[-1][:cut] if cut >= 0 else "")
        if parent is not None:
            break
        missing.append(missing[-1][:cut])
    for p in reversed(missing):
        child = ParamNode(name=p[p.rfind(".") + 1 :], path=p)
        index[p] = child
        parent.children.append(child)
        parent = child
    return parent


def _finish(node: ParamNode, keys: dict[str, tuple]) -> None:
    """Sort children, then sum totals bottom-up and mark numbered stacks. `keys` memoizes natural_key."""
    children = node.children
    t = node.tensor
    if not children:  # a leaf, the common case: kept short
        if t is not None:
            node.tensors = 1
            if t.tied_to is None:
                node.numel = t.numel
                node.nbytes = t.nbytes or 0
                node.dtypes = {t.dtype: (1, node.nbytes)}
        return
    if len(children) == 1 and t is None:  # a group around one child (q_proj around weight): its totals
        child = children[0]
        _finish(child, keys)
        node.numel, node.nbytes, node.tensors = child.numel, child.nbytes, child.tensors
        node.dtypes = dict(child.dtypes)
        node.numbered = child.name.isdigit()
        return
    if len(children) > 1:
        if all(c.name.isdecimal() for c in children):
            children.sort(key=_int_name)
        else:
            children.sort(key=lambda c: keys.get(c.name) or keys.setdefault(c.name, natural_key(c.name)))
    numel = nbytes = count = 0
    dtypes: dict[str, tuple[int, int]] = {}
    if t is not None:
        count = 1
        if t.tied_to is None:
            numel = t.numel
            nbytes = t.nbytes or 0
            dtypes[t.dtype] = (1, nbytes)
    for child in children:
        _finish(child, keys)
        numel += child.numel
        nbytes += child.nbytes
        count += child.tensors
        for dtype, (n, b) in child.dtypes.items():
            n0, b0 = dtypes.get(dtype, (0, 0))
            dtypes[dtype] = (n0 + n, b0 + b)
    node.numel, node.nbytes, node.tensors = numel, nbytes, count
    node.dtypes = dict(sorted(dtypes.items())) if len(dtypes) > 1 else dtypes
    node.numbered = t is None and all(c.name.isdigit() for c in children)
    if node.numbered and len(children) > 1:
        first = _signature(children[0])
        node.repeats = all(_signature(c) == first for c in children[1:])


def _int_name(node: ParamNode) -> int:
    return int(node.name)


def _signature(node: ParamNode) -> tuple:
    """What a block holds, relative to the block: (relative name, shape, dtype, tied) per tensor."""
    prefix = len(node.path) + 1
    out = []
    stack = [node]
    while stack:  # depth first, children in display order: the order of walk()
        n = stack.pop()
        t = n.tensor
        if t is not None:
            out.append((n.path[prefix:], t.shape, t.dtype, t.tied_to is not None))
        if n.children:
            stack.extend(reversed(n.children))
    return tuple(out)


def filter_tree(root: ParamNode, query: str) -> ParamNode:
    """A copy of the tree keeping the tensors whose full name contains query (case-insensitive).

    Totals and shares of the kept nodes stay those of the full tree, so a filtered view still tells
    how much of the checkpoint each match is. A group all of whose tensors match is kept as it is (the
    node itself, not a copy), so a query that matches most of a big tree costs little.
    """
    needle = query.casefold().strip()
    if not needle:
        return root
    with bulk.paused_gc():
        kept = _filter(root, needle)
    return kept if kept is not None else ParamNode(name=root.name, path=root.path)


def _filter(node: ParamNode, needle: str) -> ParamNode | None:
    children = []
    same = True
    for child in node.children:
        if child.children:
            kept = _filter(child, needle)
        else:  # a leaf is kept as it is, or not at all
            kept = child if child.tensor is not None and needle in child.path.casefold() else None
        if kept is not child:
            same = False
        if kept is not None:
            children.append(kept)
    own = node.tensor is not None and needle in node.path.casefold()
    if not children and not own:
        return None
    if same and (own or node.tensor is None):
        return node  # nothing below or here was dropped
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
