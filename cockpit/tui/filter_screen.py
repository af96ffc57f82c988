"""Trace filter: four lists (strategy, symbol, outcome, venue); every change applies at once.

The venue also filters the positions and orders panes (a trader looking at one venue sees only
its rows everywhere; each filtered pane says so in its title). Built once and reused
(``prepare`` then push): composing the lists costs more than a key press should wait for.
Each change is posted as ``FilterScreen.Changed``; the app applies it to the panes.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from cockpit.tui.dialog import Dialog
from cockpit.tui.view import OUTCOME_LABELS, OUTCOMES, TraceFilter

ANY = "any"
OUTCOME_CHOICES = ["acting", "everything", *OUTCOMES]
LABELS = {"acting": "any but hold", "everything": "everything", **OUTCOME_LABELS}


class FilterScreen(Dialog[TraceFilter | None]):
    DEFAULT_CSS = """
    FilterScreen > #dialog { width: 96; }
    FilterScreen #lists { height: auto; }
    FilterScreen OptionList { width: 1fr; max-height: 12; margin: 0 1 0 0; }
    FilterScreen .col-title { text-style: bold; height: 1; }
    FilterScreen Vertical.col { width: 1fr; height: auto; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "done", "Done", priority=True),
        Binding("x", "clear", "Clear"),
    ]

    class Changed(Message):
        """The person chose another filter (it applies at once, the dialog stays open)."""

        def __init__(self, trace_filter: TraceFilter) -> None:
            super().__init__()
            self.trace_filter = trace_filter

    def __init__(
        self,
        current: TraceFilter,
        strategies: list[str],
        symbols: list[str],
        venues: list[str] | None = None,
    ) -> None:
        super().__init__()
        self._strategies = [ANY, *strategies]
        self._symbols = [ANY, *symbols]
        self._venues = [ANY, *(venues or [])]
        self._outcomes = list(OUTCOME_CHOICES)
        self._filter = current
        self._ready = False

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(
                "Filter the decision trace (the venue filters positions and orders too)",
                id="dialog-title",
            )
            with Horizontal(id="lists"):
                with Vertical(classes="col"):
                    yield Static("strategy", classes="col-title")
                    yield OptionList(*(Option(s) for s in self._strategies), id="f-strategy")
                with Vertical(classes="col"):
                    yield Static("symbol", classes="col-title")
                    yield OptionList(*(Option(s) for s in self._symbols), id="f-symbol")
                with Vertical(classes="col"):
                    yield Static("outcome", classes="col-title")
                    yield OptionList(
                        *(Option(LABELS.get(o, o)) for o in self._outcomes), id="f-outcome"
                    )
                with Vertical(classes="col"):
                    yield Static("venue", classes="col-title")
                    yield OptionList(*(Option(v) for v in self._venues), id="f-venue")
            yield Static(
                "Tab: next list · up/down: choose (applies at once) · x: clear · "
                "Enter/Escape: close",
                classes="hint",
            )
            yield Static("", id="dialog-message")

    def prepare(
        self,
        current: TraceFilter,
        strategies: list[str],
        symbols: list[str],
        venues: list[str] | None = None,
    ) -> None:
        """Reuse: take the current filter and the strategies, symbols and venues known now."""
        self._filter = current
        for widget_id, attr, values in (
            ("#f-strategy", "_strategies", [ANY, *strategies]),
            ("#f-symbol", "_symbols", [ANY, *symbols]),
            ("#f-venue", "_venues", [ANY, *(venues or [])]),
        ):
            if values != getattr(self, attr):
                setattr(self, attr, values)
                if self.is_mounted:
                    options = self.query_one(widget_id, OptionList)
                    options.clear_options()
                    options.add_options([Option(v) for v in values])

    def on_mount(self) -> None:
        self._show_filter()

    def on_screen_resume(self) -> None:
        self._show_filter()

    def _show_filter(self) -> None:
        self._ready = False
        f = self._filter
        self.query_one("#f-strategy", OptionList).highlighted = self._index(
            self._strategies, f.strategy
        )
        self.query_one("#f-symbol", OptionList).highlighted = self._index(self._symbols, f.symbol)
        outcome = "everything" if f.outcome is None else f.outcome
        self.query_one("#f-outcome", OptionList).highlighted = self._index(self._outcomes, outcome)
        self.query_one("#f-venue", OptionList).highlighted = self._index(self._venues, f.venue)
        self.query_one("#f-strategy", OptionList).focus()
        # Highlight messages from the lines above are still queued: arm after they pass.
        self.call_after_refresh(self._arm)

    def _arm(self) -> None:
        self._ready = True

    @staticmethod
    def _index(values: list[str], value: str | None) -> int:
        return values.index(value) if value in values else 0

    def current(self) -> TraceFilter:
        def pick(widget_id: str, values: list[str]) -> str:
            index = self.query_one(widget_id, OptionList).highlighted or 0
            return values[min(index, len(values) - 1)]

        strategy = pick("#f-strategy", self._strategies)
        symbol = pick("#f-symbol", self._symbols)
        outcome = pick("#f-outcome", self._outcomes)
        venue = pick("#f-venue", self._venues)
        return TraceFilter(
            strategy=None if strategy == ANY else strategy,
            symbol=None if symbol == ANY else symbol,
            outcome=None if outcome == "everything" else outcome,
            venue=None if venue == ANY else venue,
        )

    @on(OptionList.OptionHighlighted)
    def _changed(self) -> None:
        if self._ready:
            self._filter = self.current()
            self.post_message(self.Changed(self._filter))

    def action_clear(self) -> None:
        for widget_id in ("#f-strategy", "#f-symbol", "#f-outcome", "#f-venue"):
            self.query_one(widget_id, OptionList).highlighted = 0
        self._filter = TraceFilter(outcome="acting")
        self.post_message(self.Changed(self._filter))

    def action_done(self) -> None:
        self.dismiss(self._filter)

    def action_cancel(self) -> None:
        self.dismiss(self._filter)
