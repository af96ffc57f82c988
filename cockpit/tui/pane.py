"""The base of every pane: a bordered, titled container that renders from the local view."""

from __future__ import annotations

from textual.containers import Vertical

from cockpit.tui.view import LocalView


class Pane(Vertical):
    """A titled box. ``update_view`` is called at the table refresh rate (about 10 Hz)."""

    TITLE = ""
    DEFAULT_CSS = """
    Pane {
        border: round $panel-lighten-2;
        border-title-color: $text;
        border-title-style: bold;
        border-subtitle-color: $text-muted;
        padding: 0;
        height: 1fr;
    }
    Pane:focus-within { border: round $accent; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.border_title = self.TITLE

    def update_view(self, view: LocalView) -> None:
        """Show the view's current state; touch only what changed."""
