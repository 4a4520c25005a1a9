"""Command palette: every action of the current screen and of the app, found by name."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from ckpt_tui.tui.keys import KeyAction, key_actions


class ActionCommands(Provider):
    """Lists what the keys of this screen do, so every action can also be found by typing its name."""

    def _actions(self) -> list[tuple[KeyAction, object]]:
        screen = self.screen
        found: list[tuple[KeyAction, object]] = []
        seen: set[str] = set()
        for target in (screen, self.app):
            for item in key_actions(self.app, type(target)):
                if item.action in seen or item.action in ("command_palette",):
                    continue
                if target.check_action(item.action, ()) is False:
                    continue  # not available here and now (e.g. "Next tag" with one tag)
                seen.add(item.action)
                found.append((item, target))
        return found

    async def discover(self) -> Hits:
        for item, target in self._actions():
            yield DiscoveryHit(
                f"{item.description}",
                partial(self.app.run_action, item.action, target),
                help=f"key: {item.keys}",
            )

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for item, target in self._actions():
            score = matcher.match(item.description)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(item.description),
                    partial(self.app.run_action, item.action, target),
                    help=f"key: {item.keys}",
                )
