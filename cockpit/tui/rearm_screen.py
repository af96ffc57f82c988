"""Re-arm a tripped breaker (a strategy stopped by one cannot resume until it is re-armed)."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from cockpit.tui.dialog import Dialog, move_highlight


class RearmScreen(Dialog[dict[str, Any] | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", show=False),
        Binding("down", "move(1)", show=False),
    ]

    def __init__(self, tripped: list[dict[str, Any]]) -> None:
        super().__init__()
        self._tripped = tripped

    def compose(self) -> ComposeResult:
        options = []
        for i, b in enumerate(self._tripped):
            label = Text(f"{b['name']} ({b['scope']})", style="bold")
            label.append(f"  {b.get('reason', '')}", style="red")
            options.append(Option(label, id=f"b{i}"))
        with Vertical(id="dialog"):
            yield Static("Re-arm a tripped breaker", id="dialog-title")
            yield OptionList(*options, id="breakers")
            yield Input(value="reviewed from the cockpit", id="reason")
            yield Static(
                "up/down: breaker · Enter: re-arm · Escape: cancel. Then resume the strategy (u).",
                classes="hint",
            )
            yield Static("", id="dialog-message")

    def on_mount(self) -> None:
        self.query_one("#breakers", OptionList).highlighted = 0
        reason = self.query_one("#reason", Input)
        reason.focus()
        reason.action_select_all()

    def action_move(self, delta: int) -> None:
        move_highlight(self.query_one("#breakers", OptionList), delta)

    @on(Input.Submitted, "#reason")
    @on(OptionList.OptionSelected, "#breakers")
    def _go(self) -> None:
        index = self.query_one("#breakers", OptionList).highlighted
        if index is None:
            return
        b = self._tripped[index]
        reason = self.query_one("#reason", Input).value.strip() or "reviewed from the cockpit"
        args = {"breaker": b["name"], "scope": b["scope"], "reason": reason}
        self.submit("rearm", args)
