"""Base of the modal dialogs: centred box, Escape closes, the engine's reply shown inline.

Messages up, data down: a dialog never holds the app's methods. It posts
``Dialog.CommandSubmitted`` (the command and its arguments); the app sends it through the
client and hands the engine's reply back with ``answered``. A dialog that runs a command stays
open when the engine refuses, showing why (for example "the condition still holds"), so the
person can correct and retry without starting over.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static

T = TypeVar("T")


# Priority: the app moves the focus before it hands out the next key. Without it Tab went to
# the field, bubbled back up through the message queues, and the keys typed behind it (fast,
# pasted, or batched by an SSH link) landed in the field it left: "RELEASE<Tab>all clear"
# became the confirmation "RELEASEall clear". Every screen with fields to type in uses these.
FIELD_TABS: tuple[Binding, ...] = (
    Binding("tab", "app.focus_next", show=False, priority=True),
    Binding("shift+tab", "app.focus_previous", show=False, priority=True),
)


class Dialog(ModalScreen[T]):
    DEFAULT_CSS = """
    Dialog { align: center middle; background: $background 60%; }
    Dialog > #dialog {
        width: 72; max-width: 100%; height: auto; max-height: 100%;
        border: round $accent; background: $surface; padding: 0 1;
        overflow-y: auto; scrollbar-size-vertical: 1;
    }
    Dialog #dialog-title { text-style: bold; width: 1fr; margin-bottom: 1; }
    Dialog #dialog-message { height: auto; margin-top: 1; }
    Dialog #dialog-message.-error { color: $error; text-style: bold; }
    Dialog #dialog-message.-ok { color: $success; }
    Dialog .hint { color: $text-muted; height: auto; margin-top: 1; }
    Dialog Input { margin: 0; }
    Dialog OptionList { height: auto; max-height: 8; margin-bottom: 1; }
    Dialog Label { margin-top: 1; }
    Dialog #choice { text-style: bold; height: auto; margin-bottom: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        *FIELD_TABS,
    ]

    class CommandSubmitted(Message):
        """The person asked for an engine command; the app sends it and calls ``answered``."""

        def __init__(self, dialog: Dialog[Any], command: str, args: dict[str, Any]) -> None:
            super().__init__()
            self.dialog = dialog
            self.command = command
            self.args = args

    _pending: CommandSubmitted | None = None

    def action_cancel(self) -> None:
        self._pending = None
        self.dismiss(None)

    def show_message(self, text: str, *, error: bool) -> None:
        msg = self.query_one("#dialog-message", Static)
        msg.update(Text(text))
        msg.set_class(error, "-error")
        msg.set_class(not error, "-ok")
        # At 80x24 a tall dialog (the kill switch's, once engaged) reaches the bottom row and
        # the answer under it was cut off mid-sentence: scroll it into view once laid out.
        self.call_after_refresh(msg.scroll_visible, animate=False)

    def submit(self, command: str, args: dict[str, Any]) -> None:
        """Ask for ``command``: one at a time (a second Enter while the first is on its way is
        not a second order)."""
        if self._pending is not None:
            self.show_message(f"{command}: waiting for the engine's answer", error=False)
            return
        self._pending = self.CommandSubmitted(self, command, args)
        self.post_message(self._pending)

    def answered(self, submitted: CommandSubmitted, reply: dict[str, Any]) -> None:
        """The engine's reply to ``submitted`` (the app calls this): on success close with the
        reply, otherwise show the refusal. A reply for a dialog already closed, or to an
        earlier opening of a reused one, changes nothing here (the app's toast shows it)."""
        if submitted is not self._pending:
            return
        self._pending = None
        if not self.is_current:
            return
        if reply.get("ok"):
            self.dismiss(reply)  # type: ignore[arg-type]
        else:
            self.refused(reply)

    def required_reason(self) -> str | None:
        """The ``#reason`` field's text, or None after saying that one is required (the field
        gets the focus): for the commands the audit must never record without a why."""
        field = self.query_one("#reason", Input)
        reason = field.value.strip()
        if not reason:
            self.show_message("a reason is required: type why, then Enter", error=True)
            field.focus()
            return None
        return reason

    def refused(self, reply: dict[str, Any]) -> None:
        """Show why the engine refused (a dialog may offer more, as release's override)."""
        self.show_message(refusal(reply), error=True)


def refusal_reason(message: str) -> str:
    """A refusal's reason without the "refused:" some of the engine's answers start with
    (release while the condition holds, a viewer's command): the caller says it once."""
    text = message.strip()
    if text.lower().startswith("refused:"):
        return text[len("refused:") :].strip()
    return text


def refusal(reply: dict[str, Any]) -> str:
    """A refusal as a dialog says it: "refused: <why>", never "refused: refused: <why>";
    the client's "not sent: disconnected ..." says what happened itself."""
    reason = refusal_reason(str(reply.get("message", "")))
    return reason if reason.startswith("not sent") else f"refused: {reason}"


def move_highlight(options: OptionList, delta: int) -> None:
    """Up/down change a dialog's choice even while its text input has the focus."""
    if options.option_count == 0:
        return
    current = options.highlighted if options.highlighted is not None else 0
    options.highlighted = max(0, min(options.option_count - 1, current + delta))
