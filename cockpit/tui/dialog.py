"""Base of the modal dialogs: centred box, Escape closes, the engine's reply shown inline.

A dialog that runs a command stays open when the engine refuses, showing why (for example
"the condition still holds"), so the person can correct and retry without starting over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static

Submit = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
T = TypeVar("T")


class Dialog(ModalScreen[T]):
    DEFAULT_CSS = """
    Dialog { align: center middle; background: $background 60%; }
    Dialog > #dialog {
        width: 72; max-width: 100%; height: auto; max-height: 100%;
        border: round $accent; background: $surface; padding: 0 1;
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
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def action_cancel(self) -> None:
        self.dismiss(None)

    def show_message(self, text: str, *, error: bool) -> None:
        msg = self.query_one("#dialog-message", Static)
        msg.update(Text(text))
        msg.set_class(error, "-error")
        msg.set_class(not error, "-ok")

    async def run(self, submit: Submit, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Send the command; on success close with the reply, otherwise show the refusal."""
        reply = await submit(name, args)
        if reply.get("ok"):
            self.dismiss(reply)  # type: ignore[arg-type]
        else:
            self.show_message(f"refused: {reply.get('message', '')}", error=True)
        return reply


def move_highlight(options: OptionList, delta: int) -> None:
    """Up/down change a dialog's choice even while its text input has the focus."""
    if options.option_count == 0:
        return
    current = options.highlighted if options.highlighted is not None else 0
    options.highlighted = max(0, min(options.option_count - 1, current + delta))
