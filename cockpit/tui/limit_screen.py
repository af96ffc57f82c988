"""Change a risk or kill-switch limit: pick it, type the new value and why (both required).

The engine validates the value (the same bounds as the config file) and records the change with
its before and after value, who and why; a refusal is shown here and nothing changes.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from cockpit.tui.dialog import Dialog, move_highlight


def _value(v: float) -> str:
    return f"{v:,.10g}"


_GROUPED = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")


def parse_value(text: str) -> float | None:
    """A finite number as typed, or None. Commas may group thousands (5,000 as the dialog shows
    values); any other comma is refused, not dropped: "1,5" meant 1.5 and must not become 15."""
    text = text.strip()
    if "_" in text:  # Python's digit grouping: "1_5" read as 15, as "1,5" once did
        return None
    if "," in text:
        if not _GROUPED.fullmatch(text):
            return None
        text = text.replace(",", "")
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class LimitScreen(Dialog[dict[str, Any] | None]):
    """Enter in the value or reason field sends ``set_limit`` for the highlighted limit."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", show=False),
        Binding("down", "move(1)", show=False),
    ]

    def __init__(self, limits: dict[str, float]) -> None:
        super().__init__()
        self._names = sorted(limits)
        self._limits = limits

    def compose(self) -> ComposeResult:
        options = [
            Option(
                Text.assemble((f"{name:<30}", "bold"), (_value(self._limits[name]), "cyan")),
                id=name,
            )
            for name in self._names
        ]
        with Vertical(id="dialog"):
            yield Static("Change a limit", id="dialog-title")
            yield OptionList(*options, id="limits")
            yield Input(placeholder="new value", id="value")
            yield Input(placeholder="reason (required, for the audit)", id="reason")
            yield Static(
                "up/down: limit · Tab: next field · Enter: set · Escape: cancel", classes="hint"
            )
            yield Static("", id="dialog-message")

    def on_mount(self) -> None:
        if self._names:
            self.query_one("#limits", OptionList).highlighted = 0
        self.query_one("#value", Input).focus()

    def action_move(self, delta: int) -> None:
        move_highlight(self.query_one("#limits", OptionList), delta)

    @on(OptionList.OptionHighlighted, "#limits")
    def _show_current(self) -> None:
        index = self.query_one("#limits", OptionList).highlighted
        if index is not None:
            name = self._names[index]
            self.query_one(
                "#value", Input
            ).placeholder = f"new {name} (now {_value(self._limits[name])})"

    @on(Input.Submitted)
    @on(OptionList.OptionSelected, "#limits")
    def _go(self) -> None:
        index = self.query_one("#limits", OptionList).highlighted
        if index is None:
            return
        name = self._names[index]
        value = parse_value(self.query_one("#value", Input).value)
        if value is None:
            self.show_message(
                f"{name}: type a number for the new value (now {_value(self._limits[name])}); "
                "a comma only groups thousands (5,000), decimals take a point (1.5)",
                error=True,
            )
            self.query_one("#value", Input).focus()
            return
        reason = self.required_reason()
        if reason is None:
            return
        self.submit("set_limit", {"name": name, "value": value, "reason": reason})
