"""Resolve a venue reconciliation difference: the whole sentence, only the answers that fit its
kind, a reason (required), Enter sends ``resolve``.

Trading on a venue stays HALTED while any blocking difference is unanswered; each answer is
journaled with who gave it and why. A refusal stays in the dialog with the engine's reason; an
accepted answer closes it (the reply is also a toast).
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
from cockpit.venue_state import ACTION_HELP, Difference, clock, kind_label


def _facts(d: Difference) -> str:
    """The order's or trade's fields, one line (what the sentence may abbreviate)."""
    detail = d.detail or {}
    thing = detail.get("order") if isinstance(detail.get("order"), dict) else detail.get("trade")
    if not isinstance(thing, dict):
        thing = {k: v for k, v in detail.items() if not isinstance(v, dict | list)}
    shown = []
    for k, v in thing.items():
        if v is None or v == "":
            continue
        if k == "ts":
            v = clock(v) + " UTC"
        elif isinstance(v, float):
            v = f"{v:g}"
        shown.append(f"{k}={v}")
    return " ".join(shown)


class ResolveScreen(Dialog[dict[str, Any] | None]):
    DEFAULT_CSS = """
    ResolveScreen > #dialog { width: 90; border: round $error; }
    ResolveScreen #resolve-line { height: auto; }
    ResolveScreen #resolve-facts { height: auto; color: $text-muted; margin-top: 1; }
    ResolveScreen #actions { margin-top: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", show=False),
        Binding("down", "move(1)", show=False),
    ]

    def __init__(self, diff: Difference, waiting: int = 1) -> None:
        super().__init__()
        self.diff = diff
        self.waiting = waiting
        self.actions: tuple[str, ...] = diff.actions

    def compose(self) -> ComposeResult:
        d = self.diff
        state = "BLOCKING: trading on it stays HALTED until answered" if d.blocking else "info"
        with Vertical(id="dialog"):
            yield Static(f"RESOLVE · {d.venue} · {kind_label(d.kind)} · {d.key}", id="dialog-title")
            line = Text(d.line, style="bold")
            line.append(f"\n{state}", style="bold red" if d.blocking else "bright_black")
            yield Static(line, id="resolve-line")
            facts = _facts(d)
            if facts:
                yield Static(Text(facts), id="resolve-facts")
            options = []
            for action in self.actions:
                label = Text(f"{action:<12}", style="bold")
                label.append(ACTION_HELP.get((d.kind, action), ""))
                options.append(Option(label, id=action))
            yield OptionList(*options, id="actions")
            yield Static("", id="choice")
            yield Input(placeholder="reason (required, journaled with your name)", id="reason")
            more = f" · {self.waiting - 1} more waiting after this one" if self.waiting > 1 else ""
            yield Static(
                f"up/down: answer · Enter: send · Escape: cancel{more}",
                classes="hint",
            )
            yield Static("", id="dialog-message")

    def on_mount(self) -> None:
        self.query_one("#actions", OptionList).highlighted = 0
        self.query_one("#reason", Input).focus()

    def action_move(self, delta: int) -> None:
        move_highlight(self.query_one("#actions", OptionList), delta)

    @property
    def action(self) -> str:
        index = self.query_one("#actions", OptionList).highlighted or 0
        return self.actions[min(index, len(self.actions) - 1)]

    @on(OptionList.OptionHighlighted, "#actions")
    def _show_choice(self) -> None:
        d = self.diff
        text = f"▶ {self.action} {kind_label(d.kind)} {d.key} on {d.venue}"
        self.query_one("#choice", Static).update(Text(text, style="bold yellow"))

    @on(Input.Submitted, "#reason")
    @on(OptionList.OptionSelected, "#actions")
    def _go(self) -> None:
        reason = self.query_one("#reason", Input).value.strip()
        if not reason:
            self.show_message("a reason is required (it is journaled with the answer)", error=True)
            self.query_one("#reason", Input).focus()
            return
        d = self.diff
        args = {"venue": d.venue, "key": d.key, "action": self.action, "reason": reason}
        self.submit("resolve", args)
