"""The decision trace: newest first, filterable; Enter opens a decision's whole chain."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.message import Message
from textual.widgets import DataTable

from cockpit.tui.fmt import left, right, truncate, ts_time
from cockpit.tui.pane import Pane
from cockpit.tui.table import KeyedTable, Row
from cockpit.tui.view import ChainEntry, LocalView, TraceFilter

OUTCOME_STYLES = {
    "filled": "green",
    "partial": "yellow",
    "submitted": "cyan",
    "denied": "red",
    "awaiting": "bold black on yellow",
    "approved": "green",
    "rejected": "red",
    "expired": "magenta",
    "superseded": "bright_black",
    "canceled": "bright_black",
    "order_rejected": "bold red",
    "no_order": "bright_black",
    "hold": "bright_black",
}
ACTION_STYLES = {"buy": "green", "sell": "red", "hold": "bright_black"}
SHOWN = 500  # rows in the table; the store keeps more for filtering

# Column widths (with their leading space); the reason takes what is left.
W_TIME, W_SYMBOL, W_ACTION, W_CONF = 8, 10, 5, 5
ROOMY = 100  # at least this wide, the venue column shows even with one venue
# (strategy, reason, outcome, with_venue): the layout a row's cached cells were made for.
_Widths = tuple[int, int, int, bool]


def _columns(with_venue: bool) -> list[tuple[str | Text, str]]:
    venue: list[tuple[str | Text, str]] = [(" venue", "venue")] if with_venue else []
    return [
        ("time", "time"),
        *venue,
        (" strategy", "strategy"),
        (" symbol", "symbol"),
        (" act", "action"),
        (" reason", "reason"),
        (Text(" conf", justify="right"), "conf"),
        (" outcome", "outcome"),
    ]


class TracePane(Pane):
    TITLE = "Decision trace"

    class OpenChain(Message):
        """Enter on a row: show that decision's chain."""

        def __init__(self, decision_id: str) -> None:
            super().__init__()
            self.decision_id = decision_id

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.filter = TraceFilter(outcome="acting")
        self._cache: dict[str, tuple[int, _Widths, tuple[Any, ...]]] = {}
        self._shown: tuple[Any, ...] | None = None
        self._reselect: str | None = None
        self._widths: _Widths = (14, 40, 22, True)
        self.row_count = 0

    def compose(self) -> ComposeResult:
        yield KeyedTable(_columns(True), sticky_top=True, id="trace-table")

    @property
    def table(self) -> KeyedTable:
        return self.query_one(KeyedTable)

    @property
    def selected_decision(self) -> str | None:
        return self.table.selected_key

    def set_filter(self, flt: TraceFilter) -> None:
        self.filter = flt
        self._shown = None

    def _layout_widths(self, venues: dict[str, Any]) -> _Widths:
        """(strategy, reason, outcome, with_venue) that fill the pane's width. One venue
        needs no column in a narrow pane (the header names it): the reason gets the room.
        One column is kept for the scrollbar so nothing is clipped when the trace is longer
        than the pane."""
        width = max(40, self.table.size.width or self.size.width - 2)
        with_venue = len(venues) > 1 or width >= ROOMY
        venue_width = max(len(" venue"), 1 + max((len(v) for v in venues), default=3))
        strategy, outcome = (14, 22) if width >= ROOMY else (10, 18)
        fixed = W_TIME + strategy + W_SYMBOL + W_ACTION + W_CONF + outcome
        fixed += venue_width if with_venue else 0
        return strategy, max(12, width - fixed - 1), outcome, with_venue

    def update_view(self, view: LocalView) -> None:
        widths = self._layout_widths(view.snapshot.get("venues", {}))
        holds = self.filter.outcome in (None, "hold")
        version = (view.trace.version, view.trace.hold_version if holds else 0)
        key = (version, widths, repr(self.filter))
        if key == self._shown:
            return
        if widths != self._widths:
            self._widths = widths
            self._cache.clear()
            selected = self.table.selected_key
            if not self.table.set_columns(_columns(widths[3])):
                self.table.reset()  # columns only grow by themselves; re-measure them
            if selected is not None:
                self._reselect = selected
        self._shown = key
        entries = view.trace.rows(self.filter, SHOWN)
        rows: list[Row] = [(e.decision_id, self._cells(e, k, label)) for e, k, label in entries]
        self.table.sync(rows)
        if self._reselect is not None:
            self.table.select_key(self._reselect)
            self._reselect = None
        self.row_count = len(rows)
        desc = self.filter.describe()
        total = len(view.trace)
        title = f"Decision trace · {len(rows)}/{total}" + (f" · {desc}" if desc else "")
        if title != self.border_title:
            self.border_title = title

    def _cells(self, entry: ChainEntry, okey: str, label: str) -> tuple[Any, ...]:
        cached = self._cache.get(entry.decision_id)
        if cached is not None and cached[0] == entry.version and cached[1] == self._widths:
            return cached[2]
        d = entry.decision
        strategy_w, reason_w, outcome_w, with_venue = self._widths
        conf = d.get("confidence")
        action = entry.action
        venue = (left(str(d.get("venue", ""))),) if with_venue else ()
        cells = (
            ts_time(d.get("ts")),
            *venue,
            left(truncate(entry.strategy, strategy_w - 1)),
            left(entry.symbol),
            left(action, ACTION_STYLES.get(action, "")),
            left(truncate(str(d.get("reason", "")), reason_w - 1)),
            right("-" if conf is None else f"{conf:.2f}"),
            left(truncate(label, outcome_w - 1), OUTCOME_STYLES.get(okey, "")),
        )
        self._cache[entry.decision_id] = (entry.version, self._widths, cells)
        if len(self._cache) > 4 * SHOWN:
            self._cache.clear()
        return cells

    @on(DataTable.RowSelected, "#trace-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value:
            self.post_message(self.OpenChain(event.row_key.value))
