"""Arming live trading in the cockpit: the typed phrase, asked before the engine starts.

Live mode needs the config saying live, the ``--live`` flag, the venues' credentials and a
typed confirmation. Headless, the phrase is ``--confirm-live PHRASE``; in the cockpit it is
typed here, so it never has to sit in the shell's history. Nothing is started until it is typed
exactly; Escape quits without starting the engine.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Static

from cockpit.tui.dialog import Dialog


class ArmLiveScreen(Dialog[bool]):
    """Dismissed with True once the phrase is typed exactly, with False on Escape."""

    DEFAULT_CSS = """
    ArmLiveScreen > #dialog { border: round $error; }
    ArmLiveScreen #dialog-title { color: $error; }
    """

    def __init__(self, phrase: str) -> None:
        super().__init__()
        self.phrase = phrase

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static("ARM LIVE TRADING: REAL MONEY", id="dialog-title")
            yield Static(
                "engine.mode is live and --live was given: once armed, the strategies send "
                "real orders to the configured venues with their credentials. The engine has "
                "not started yet."
            )
            yield Input(placeholder=f"type {self.phrase!r} to arm", id="phrase")
            yield Static(
                f"Enter: arm and start (the exact phrase {self.phrase!r}) · Escape: quit "
                "without starting",
                classes="hint",
            )
            yield Static("", id="dialog-message")

    def on_mount(self) -> None:
        self.query_one("#phrase", Input).focus()

    @on(Input.Submitted, "#phrase")
    def _arm(self, event: Input.Submitted) -> None:
        if event.value.strip() != self.phrase:
            self.show_message(
                f"not armed: type exactly {self.phrase!r} (lower case), or Escape to quit",
                error=True,
            )
            event.input.value = ""
            return
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)
