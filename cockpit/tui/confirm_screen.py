"""A yes/no question: y or Enter confirms, n or Escape cancels."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Static

from cockpit.tui.dialog import Dialog


class ConfirmScreen(Dialog[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,enter", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(
        self,
        title: str,
        body: str,
        *,
        yes: str = "y/Enter: yes",
        danger: bool = False,
        quitting: bool = False,
    ) -> None:
        super().__init__()
        # The quit question: a second quit while it is shown quits at once.
        self.quitting = quitting
        self._title = title
        self._body = body
        self._yes = yes
        self._danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="-danger" if self._danger else ""):
            yield Static(self._title, id="dialog-title")
            yield Static(self._body, id="confirm-body")
            yield Static(f"{self._yes} · n/Escape: no", classes="hint")
            yield Static("", id="dialog-message")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
