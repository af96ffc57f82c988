"""Kill switch dialog: choose the level, give a reason, Enter engages."""

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
from engine.vocabulary import KillLevel

LEVELS: tuple[tuple[str, str], ...] = (
    (KillLevel.ENTRIES, "entries — no new entries; exits and reductions still allowed"),
    (KillLevel.HALT, "halt — no new orders (protective exits still close); cancels allowed"),
    (KillLevel.FLATTEN, "flatten — halt and close every position"),
)


class KillScreen(Dialog[dict[str, Any] | None]):
    """Engages the latched kill switch through the ``kill`` command."""

    DEFAULT_CSS = "KillScreen > #dialog { border: round $error; }"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", "Level up", show=False),
        Binding("down", "move(1)", "Level down", show=False),
    ]

    def __init__(
        self, current: dict[str, Any], default: str = KillLevel.HALT, *, title: str = "KILL SWITCH"
    ) -> None:
        super().__init__()
        self._current = current
        self._default = default
        self.heading = title
        self.default_reason = "kill switch from the cockpit"

    def scope_note(self) -> str:
        """A line under the title saying where the kill goes (a fleet names its engines)."""
        return ""

    def prepare(self, current: dict[str, Any]) -> None:
        """Reuse (the dialog is built once): start again from the default level, now, before
        it is shown again. Resetting when the screen resumed left the level of the last
        opening on its first frame: a person who saw "entries" and pressed Down to reach
        "halt" moved from the reset "halt" to "flatten" and engaged that."""
        self._current = current
        if self.is_mounted:
            self._reset()

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.heading, id="dialog-title")
            if self.scope_note():
                yield Static(self.scope_note(), id="scope", classes="hint")
            yield Static("", id="engaged", classes="hint")
            yield OptionList(*(Option(text, id=level) for level, text in LEVELS), id="levels")
            yield Static("", id="choice")
            yield Input(value=self.default_reason, id="reason", placeholder="reason")
            yield Static(
                "up/down: level · Enter: engage · Escape: cancel. It latches: release needs "
                "the typed confirmation RELEASE.",
                classes="hint",
            )
            yield Static("", id="dialog-message")

    def on_mount(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._pending = None  # a reply to an earlier opening no longer closes this one
        k = self._current
        engaged = self.query_one("#engaged", Static)
        engaged.display = bool(k.get("engaged"))
        if k.get("engaged"):
            engaged.update(
                f"Engaged now: {k.get('level')} by {k.get('by')} ({k.get('reason')}). "
                "A higher level can still be chosen."
            )
        self.query_one("#dialog-message", Static).update("")
        levels = self.query_one("#levels", OptionList)
        levels.highlighted = [lv for lv, _ in LEVELS].index(self._default)
        self._show_choice()  # now, not when the highlight message arrives
        reason = self.query_one("#reason", Input)
        reason.value = self.default_reason
        reason.focus()
        reason.action_select_all()

    def action_move(self, delta: int) -> None:
        move_highlight(self.query_one("#levels", OptionList), delta)

    @on(OptionList.OptionHighlighted, "#levels")
    def _show_choice(self) -> None:
        """Say the chosen level in words: a highlight alone is easy to miss."""
        text = dict(LEVELS)[self.level]
        self.query_one("#choice", Static).update(Text(f"▶ Engage: {text}", style="bold red"))

    @property
    def level(self) -> str:
        levels = self.query_one("#levels", OptionList)
        return LEVELS[levels.highlighted or 0][0]

    @on(Input.Submitted, "#reason")
    @on(OptionList.OptionSelected, "#levels")
    def _engage(self) -> None:
        reason = self.query_one("#reason", Input).value.strip()
        if not reason:
            self.show_message("a reason is required", error=True)
            return
        self.submit("kill", {"level": self.level, "reason": reason})
