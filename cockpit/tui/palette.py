"""The command palette (ctrl+p) offers every cockpit action by name: the ones that act where
the person is. The fleet's overview offers its own (kill all, approve, reject) instead of one
engine's, which need that engine on screen: "Kill (k)" picked there did nothing, silently."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

from cockpit.tui.keys import ACTIONS

PaletteCommand = tuple[str, str, Callable[[], Awaitable[Any]]]  # name, help, what it runs


class CockpitCommands(Provider):
    """Each entry of the key list the app would run now, searchable by its label and help
    text, and whatever else the app offers where it is (``palette_commands``)."""

    def _commands(self) -> list[tuple[str, str, str]]:
        """Every action of the key list by name: (name, help, action)."""
        return [(f"{a.label} ({a.shown_key})", a.help, a.action) for a in ACTIONS]

    def available(self) -> list[PaletteCommand]:
        """What the palette offers now: the actions the app would run where the person is,
        then the app's own (``palette_commands``)."""
        app = self.app
        out: list[PaletteCommand] = [
            (name, help_text, partial(self._run, action))
            for name, help_text, action in self._commands()
            if app.check_action(action.split("(")[0], ()) is not False
        ]
        more = getattr(app, "palette_commands", None)
        if callable(more):
            out.extend(more())
        return out

    async def discover(self) -> Hits:
        for name, help_text, run in self.available():
            yield DiscoveryHit(name, run, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, run in self.available():
            score = max(matcher.match(name), matcher.match(help_text))
            if score > 0:
                yield Hit(score, matcher.highlight(name), run, help=help_text)

    async def _run(self, action: str) -> None:
        await self.app.run_action(action)
