"""Flatten a symbol (or everything): shows what will be closed; Enter confirms."""

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
from cockpit.tui.fmt import fmt_money, fmt_qty

ALL = "*all*"


class FlattenScreen(Dialog[dict[str, Any] | None]):
    DEFAULT_CSS = "FlattenScreen > #dialog { border: round $warning; }"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", show=False),
        Binding("down", "move(1)", show=False),
    ]

    def __init__(
        self,
        positions: list[dict[str, Any]],
        symbols: list[str],
        selected: str | None = None,
    ) -> None:
        super().__init__()
        held = {p["symbol"]: p for p in positions if p.get("qty")}
        # Held symbols first (what one usually flattens), then the rest, then everything.
        self._choices = [*held, *(s for s in symbols if s not in held), ALL]
        self._held = held
        self._selected = selected

    def compose(self) -> ComposeResult:
        options = []
        for sym in self._choices:
            if sym == ALL:
                options.append(Option(Text("ALL positions", style="bold red"), id="all"))
                continue
            p = self._held.get(sym)
            label = Text(f"{sym:<10}")
            if p:
                qty = p["qty"]
                side = "sell" if qty > 0 else "buy"
                label.append(
                    f" {side} {fmt_qty(abs(qty))} at market (~{fmt_money(abs(qty) * p['mark'])})",
                    style="yellow",
                )
            else:
                label.append(" flat", style="bright_black")
            options.append(Option(label, id=sym.replace("/", "_")))
        with Vertical(id="dialog"):
            yield Static("FLATTEN", id="dialog-title")
            yield OptionList(*options, id="symbols")
            yield Static("", id="choice")
            yield Input(value="flatten from the cockpit", id="reason")
            yield Static(
                "up/down: symbol · Enter: send the closing order(s) · Escape: cancel",
                classes="hint",
            )
            yield Static("", id="dialog-message")

    def on_mount(self) -> None:
        options = self.query_one("#symbols", OptionList)
        if self._selected in self._choices:
            options.highlighted = self._choices.index(self._selected)
        else:
            options.highlighted = 0
        reason = self.query_one("#reason", Input)
        reason.focus()
        reason.action_select_all()

    def action_move(self, delta: int) -> None:
        move_highlight(self.query_one("#symbols", OptionList), delta)

    @on(OptionList.OptionHighlighted, "#symbols")
    def _show_choice(self) -> None:
        symbol = self.symbol
        if symbol is None:
            text = "▶ Flatten EVERY position at market"
        else:
            p = self._held.get(symbol)
            if p:
                side = "sell" if p["qty"] > 0 else "buy"
                text = f"▶ Flatten {symbol}: {side} {fmt_qty(abs(p['qty']))} at market"
            else:
                text = f"▶ Flatten {symbol}: no position (nothing will be sent)"
        self.query_one("#choice", Static).update(Text(text, style="bold yellow"))

    @property
    def symbol(self) -> str | None:
        """None means every position."""
        index = self.query_one("#symbols", OptionList).highlighted or 0
        choice = self._choices[index]
        return None if choice == ALL else choice

    @on(Input.Submitted, "#reason")
    @on(OptionList.OptionSelected, "#symbols")
    def _go(self) -> None:
        reason = self.query_one("#reason", Input).value.strip() or "flatten from the cockpit"
        self.submit("flatten", {"symbol": self.symbol, "reason": reason})
