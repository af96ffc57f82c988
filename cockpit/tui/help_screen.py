"""The list of keys (the same list the bindings and the command palette use)."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
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


class HelpScreen(Dialog[None]):
    DEFAULT_CSS = """
    HelpScreen > #dialog { width: 80; height: auto; max-height: 100%; }
    HelpScreen #help-scroll { height: auto; max-height: 20; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("question_mark,q,enter", "cancel", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static("Keys", id="dialog-title")
            with VerticalScroll(id="help-scroll"):
                yield Static(help_table(), id="help")
            yield Static("Every action is also in the command palette (ctrl+p).", classes="hint")
