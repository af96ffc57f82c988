"""Release dialog: type RELEASE and a reason; the engine may refuse while the cause holds."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Checkbox, Input, Static

from cockpit.tui.dialog import Dialog, refusal
from engine.vocabulary import RELEASE_PHRASE as PHRASE


class ReleaseScreen(Dialog[dict[str, Any] | None]):
    """Releases the kill switch through the ``release`` command; shows a refusal inline and
    offers the override when the engine says the condition that engaged it still holds."""

    DEFAULT_CSS = """
    ReleaseScreen > #dialog { border: round $warning; }
    ReleaseScreen #override { display: none; margin-top: 1; }
    ReleaseScreen #override.-offered { display: block; }
    """

    def __init__(self, kill: dict[str, Any]) -> None:
        super().__init__()
        self._kill = kill

    def compose(self) -> ComposeResult:
        k = self._kill
        with Vertical(id="dialog"):
            yield Static("RELEASE THE KILL SWITCH", id="dialog-title")
            if k.get("engaged"):
                yield Static(
                    f"Engaged: {k.get('level')} by {k.get('by')} ({k.get('source') or 'command'})"
                    f": {k.get('reason')}"
                )
            else:
                yield Static("The kill switch is not engaged.")
            yield Input(placeholder=f"type {PHRASE} to confirm", id="confirm")
            yield Input(placeholder="reason (required)", id="reason")
            yield Checkbox("override: release although the condition still holds", id="override")
            yield Static("Tab: next field · Enter: release · Escape: cancel", classes="hint")
            yield Static("", id="dialog-message")

    def on_mount(self) -> None:
        self.query_one("#confirm", Input).focus()

    @on(Input.Submitted)
    def _release(self, event: Input.Submitted) -> None:
        confirm = self.query_one("#confirm", Input).value.strip()
        reason = self.query_one("#reason", Input).value.strip()
        if confirm != PHRASE:
            self.show_message(f"type {PHRASE} (in capitals) to confirm", error=True)
            self.query_one("#confirm", Input).focus()
            return
        if not reason:
            self.show_message("a reason is required", error=True)
            self.query_one("#reason", Input).focus()
            return
        override = self.query_one("#override", Checkbox)
        args: dict[str, Any] = {"reason": reason, "confirm": confirm}
        if self._kill.get("engaged"):
            # The engagement shown above: the engine refuses the release if it changed since.
            args["seen"] = {key: self._kill.get(key) for key in ("level", "by", "reason", "ts")}
        if override.value:
            args["override"] = True
        self.submit("release", args)

    def refused(self, reply: dict[str, Any]) -> None:
        """Refused while the condition that engaged it still holds: offer the override."""
        if "condition" not in str(reply.get("message", "")):
            super().refused(reply)
            return
        self.query_one("#override", Checkbox).add_class("-offered")
        self.show_message(
            f"{refusal(reply)}\nTick override (Tab to it, space) to "
            "release anyway, then Enter in a field.",
            error=True,
        )
