"""The command palette (ctrl+p) offers every cockpit action by name."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from cockpit.tui.keys import ACTIONS


class CockpitCommands(Provider):
    """Each entry of the key list, searchable by its label and help text."""

    def _commands(self) -> list[tuple[str, str, str]]:
        return [(f"{a.label} ({a.shown_key})", a.help, a.action) for a in ACTIONS]

    async def discover(self) -> Hits:
        for name, help_text, action in self._commands():
            yield DiscoveryHit(name, partial(self._run, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, action in self._commands():
            score = max(matcher.match(name), matcher.match(help_text))
            if score > 0:
                yield Hit(
                    score, matcher.highlight(name), partial(self._run, action), help=help_text
                )

    async def _run(self, action: str) -> None:
        await self.app.run_action(action)
