"""The list of keys (the same list the bindings and the command palette use)."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from cockpit.tui.dialog import Dialog
from cockpit.tui.keys import ACTIONS, WIDGET_KEYS


def help_table() -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for a in ACTIONS:
        table.add_row(a.shown_key, a.help)
    for key, text in WIDGET_KEYS:
        table.add_row(key, text)
    return table


# Rows of the dialog that are not the list: border 2, title 2, the "more" line 1, hint 2.
CHROME = 7


class HelpScreen(Dialog[None]):
    """The keys, scrolled with up/down/PgUp/PgDn; the line under the list says how much
    more there is (at 80x24 the list is longer than the screen, and a scrollbar alone is
    easy to miss)."""

    DEFAULT_CSS = """
    HelpScreen > #dialog { width: 80; height: auto; max-height: 100%; }
    HelpScreen #help-scroll { height: auto; max-height: 20; }
    HelpScreen #more { height: 1; color: $warning; text-style: bold; }
    HelpScreen #more.-all { color: $text-muted; text-style: none; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("question_mark,q,enter", "cancel", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static("Keys", id="dialog-title")
            with VerticalScroll(id="help-scroll"):
                yield Static(help_table(), id="help")
            yield Static("", id="more")
            yield Static(
                "Every action is also in the command palette (ctrl+p). Escape closes.",
                classes="hint",
            )

    def on_mount(self) -> None:
        scroll = self.query_one("#help-scroll", VerticalScroll)
        self._fit(self.app.size.height)
        scroll.focus()  # up/down/PgUp/PgDn scroll the list
        self.watch(scroll, "scroll_y", self._show_more, init=False)
        self.call_after_refresh(self._show_more)

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size.height)
        self.call_after_refresh(self._show_more)

    def _fit(self, height: int) -> None:
        self.query_one("#help-scroll").styles.max_height = max(3, height - CHROME)

    def _show_more(self) -> None:
        """ "N more lines below" while the list goes on, "end of the list" at its end."""
        scroll = self.query_one("#help-scroll", VerticalScroll)
        shown = scroll.scrollable_content_region.height
        below = max(0, scroll.virtual_size.height - shown - round(scroll.scroll_y))
        if below:
            text = f"▼ {below} more line{'s' if below != 1 else ''} below: ↓ or PgDn to scroll"
        elif scroll.scroll_y > 0:
            text = "▲ end of the list: ↑ or PgUp to go back"
        else:
            text = ""
        more = self.query_one("#more", Static)
        more.update(text)
        more.set_class(not below, "-all")
        more.display = bool(text)
