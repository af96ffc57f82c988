"""Pause or resume a strategy: pick it (starts on the selected one), give a reason, Enter."""

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


class StrategyScreen(Dialog[dict[str, Any] | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", show=False),
        Binding("down", "move(1)", show=False),
    ]

    def __init__(
        self,
        command: str,
        strategies: list[dict[str, Any]],
        selected: str | None = None,
    ) -> None:
        super().__init__()
        self._command = command
        self._strategies = strategies
        self._selected = selected

    def compose(self) -> ComposeResult:
        verb = "Pause" if self._command == "pause" else "Resume"
        options = []
        for s in self._strategies:
            label = Text(f"{s['id']:<20}")
            if s.get("paused"):
                label.append(f" PAUSED by {s.get('paused_by')}: {s.get('pause_reason')}", "yellow")
            else:
                label.append(" active", "green")
            options.append(Option(label, id=s["id"]))
        with Vertical(id="dialog"):
            yield Static(f"{verb} a strategy", id="dialog-title")
            yield OptionList(*options, id="strategies")
            yield Static("", id="choice")
            yield Input(value=f"{verb.lower()}d from the cockpit", id="reason")
            yield Static(
                "up/down: strategy · Enter: " + verb.lower() + " · Escape: cancel", classes="hint"
            )
            yield Static("", id="dialog-message")

    def on_mount(self) -> None:
        options = self.query_one("#strategies", OptionList)
        ids = [s["id"] for s in self._strategies]
        want = self._selected
        by_id = {s["id"]: s for s in self._strategies}
        applies = want in by_id and bool(by_id[want].get("paused")) == (self._command == "resume")
        if not applies:
            # Default to the first one the action applies to.
            paused = [s["id"] for s in self._strategies if s.get("paused")]
            active = [s["id"] for s in self._strategies if not s.get("paused")]
            pool = paused if self._command == "resume" else active
            want = pool[0] if pool else (ids[0] if ids else None)
        if want is not None:
            options.highlighted = ids.index(want)
        reason = self.query_one("#reason", Input)
        reason.focus()
        reason.action_select_all()

    def action_move(self, delta: int) -> None:
        move_highlight(self.query_one("#strategies", OptionList), delta)

    @on(OptionList.OptionHighlighted, "#strategies")
    def _show_choice(self) -> None:
        index = self.query_one("#strategies", OptionList).highlighted
        if index is None:
            return
        sid = self._strategies[index]["id"]
        self.query_one("#choice", Static).update(f"▶ {self._command.capitalize()} {sid}")

    @on(Input.Submitted, "#reason")
    @on(OptionList.OptionSelected, "#strategies")
    def _go(self) -> None:
        options = self.query_one("#strategies", OptionList)
        if options.highlighted is None:
            return
        sid = self._strategies[options.highlighted]["id"]
        reason = self.query_one("#reason", Input).value.strip() or "manual"
        self.submit(self._command, {"strategy": sid, "reason": reason})
