"""Switch a strategy between approving each order and auto, with a reason for the audit.

Each strategy shows its mode and how far it is from graduating (approved trades against the
number auto needs); the engine enforces graduation, and its refusal is shown in the dialog.
"""

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

APPROVE, AUTO = "approve", "auto"


def graduation(strategy: dict[str, Any]) -> str:
    """Where a strategy stands on the way to auto, in words."""
    if strategy.get("approval") == AUTO:
        return "auto"
    have = int(strategy.get("approved", 0))
    need = int(strategy.get("auto_after", 0))
    if have >= need:
        return f"approve · {have} approved, may go auto"
    return f"approve · {have}/{need} approved, {need - have} to go"


class ApprovalModeScreen(Dialog[dict[str, Any] | None]):
    """Enter switches the highlighted strategy to the other mode (a reason is required)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", show=False),
        Binding("down", "move(1)", show=False),
    ]

    def __init__(self, strategies: list[dict[str, Any]], selected: str | None = None) -> None:
        super().__init__()
        self._strategies = strategies
        self._selected = selected

    def compose(self) -> ComposeResult:
        options = []
        for s in self._strategies:
            label = Text(f"{s['id']:<20}", style="bold")
            mode_style = "green" if s.get("approval") == AUTO else "yellow"
            label.append(f" {graduation(s)}", style=mode_style)
            options.append(Option(label, id=s["id"]))
        with Vertical(id="dialog"):
            yield Static("Approval mode", id="dialog-title")
            yield OptionList(*options, id="strategies")
            yield Static("", id="choice")
            yield Input(placeholder="reason (required, for the audit)", id="reason")
            yield Static(
                "up/down: strategy · Enter: switch to the mode shown · Escape: cancel",
                classes="hint",
            )
            yield Static("", id="dialog-message")

    def on_mount(self) -> None:
        ids = [s["id"] for s in self._strategies]
        options = self.query_one("#strategies", OptionList)
        if ids:
            options.highlighted = ids.index(self._selected) if self._selected in ids else 0
        self.query_one("#reason", Input).focus()
        self._show_choice()

    def action_move(self, delta: int) -> None:
        move_highlight(self.query_one("#strategies", OptionList), delta)

    def _current(self) -> dict[str, Any] | None:
        index = self.query_one("#strategies", OptionList).highlighted
        return self._strategies[index] if index is not None else None

    @staticmethod
    def target(strategy: dict[str, Any]) -> str:
        return APPROVE if strategy.get("approval") == AUTO else AUTO

    @on(OptionList.OptionHighlighted, "#strategies")
    def _show_choice(self) -> None:
        s = self._current()
        if s is None:
            return
        target = self.target(s)
        text = Text(f"{s['id']}: {s.get('approval')} -> {target}")
        if target == AUTO and int(s.get("approved", 0)) < int(s.get("auto_after", 0)):
            text.append("  (the engine will refuse: not graduated yet)", style="yellow")
        self.query_one("#choice", Static).update(text)

    @on(Input.Submitted, "#reason")
    @on(OptionList.OptionSelected, "#strategies")
    def _go(self) -> None:
        s = self._current()
        if s is None:
            return
        reason = self.required_reason()
        if reason is None:
            return
        args = {"strategy": s["id"], "mode": self.target(s), "reason": reason}
        self.submit("set_approval_mode", args)
