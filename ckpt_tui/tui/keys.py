"""One source for what keys do: the help screen and the command palette both read the BINDINGS."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from textual.app import App
from textual.binding import Binding
from textual.dom import DOMNode


@dataclass(frozen=True)
class KeyAction:
    keys: str  # as displayed: "f5 / ^r"
    description: str
    action: str


def own_bindings(node_class: type[DOMNode]) -> list[Binding]:
    """Bindings a class declares itself (not those of Textual's base classes)."""
    out = []
    for item in node_class.__dict__.get("BINDINGS", []):
        if isinstance(item, Binding):
            out.append(item)
        else:
            key, action, *rest = item
            out.append(Binding(key, action, rest[0] if rest else ""))
    return out


def key_actions(app: App, node_class: type[DOMNode]) -> Iterator[KeyAction]:
    for binding in own_bindings(node_class):
        if not binding.description:
            continue
        keys = " / ".join(app.get_key_display(Binding(k.strip(), binding.action)) for k in binding.key.split(","))
        yield KeyAction(keys, binding.description, binding.action)
