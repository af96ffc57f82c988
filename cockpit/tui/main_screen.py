"""The main screen: every pane, laid out by terminal size.

At 120x40 or larger all panes share one grid. Below that, one group of panes at a time fills
the body and the keys 1-7 switch groups (the strip under the header names them and marks
pending approvals and halted venues), so every pane stays one key away at 80x24.

In the grid the Venues pane sits above the chart and the log, as tall as its lines. When a
venue reports reconciliation differences, the chart and the log step aside and the Venues pane
takes the whole block beside the safety pane: while trading on a venue is HALTED the
differences are what the person must read.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Container
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Static

from cockpit.tui.approvals import ApprovalsPane
from cockpit.tui.chart import ChartPane
from cockpit.tui.header import HeaderBar
from cockpit.tui.keys import ACTIONS, OPERATOR_ACTIONS, KeyAction, bindings
from cockpit.tui.log import LogPane
from cockpit.tui.market import MarketPane
from cockpit.tui.orders import OrdersPane
from cockpit.tui.positions import PositionsPane
from cockpit.tui.safety import SafetyPane
from cockpit.tui.trace import TracePane
from cockpit.tui.venues import VenuesPane
from cockpit.tui.view import LocalView, TraceFilter

WIDE = (120, 40)  # at or above this size every pane is visible together
GROUPS = {1: "Market", 2: "Approvals", 3: "Trace", 4: "Safety", 5: "Chart", 6: "Log", 7: "Venues"}
BOTTOM = 12  # rows of the grid's last band (safety beside venues, chart and log)
MIN_CHART = 6  # the chart and log keep at least this many rows beside a quiet Venues pane
MAX_VENUES = 18  # the Venues pane never takes more than this in the grid
# What gets the focus when a group is shown (the table a key acts on).
FOCUS = {
    1: "#positions-table",
    2: "#approvals-table",
    3: "#trace-table",
    4: "#strategies-table",
    5: None,
    6: "#log",
    7: "#venues-table",
}

CSS = """
MainScreen { layout: vertical; }
MainScreen #strip { height: 1; background: $panel; display: none; }
MainScreen #keybar { height: 1; background: $panel; }
MainScreen.-narrow #strip { display: block; }
#body { height: 1fr; }
#body.-wide {
    layout: grid;
    grid-size: 30 5;
    grid-rows: 6 9 1fr 3 9;
    grid-gutter: 0 0;
}
#body.-wide #market { column-span: 16; }
#body.-wide #positions { column-span: 14; }
#body.-wide #approvals { column-span: 16; }
#body.-wide #orders { column-span: 14; }
#body.-wide #trace { column-span: 30; }
#body.-wide #safety { column-span: 15; row-span: 2; }
#body.-wide #venues { column-span: 15; }
#body.-wide #chart { column-span: 7; }
#body.-wide #log-pane { column-span: 8; }
#body.-wide.-venue-alert #venues { row-span: 2; }
#body.-wide.-venue-alert #chart { display: none; }
#body.-wide.-venue-alert #log-pane { display: none; }
#body.-narrow { layout: vertical; }
#body.-narrow > Pane { display: none; height: 1fr; }
#body.-narrow.-show-1 > .g1 { display: block; }
#body.-narrow.-show-2 > .g2 { display: block; }
#body.-narrow.-show-3 > .g3 { display: block; }
#body.-narrow.-show-4 > .g4 { display: block; }
#body.-narrow.-show-5 > .g5 { display: block; }
#body.-narrow.-show-6 > .g6 { display: block; }
#body.-narrow.-show-7 > .g7 { display: block; }
#body.-narrow > #market { height: auto; max-height: 9; }
#body.-narrow > #market KeyedTable { height: auto; max-height: 7; }
#body.-narrow > #positions { height: auto; max-height: 8; }
#body.-narrow > #positions KeyedTable { height: auto; max-height: 6; }
#body.-narrow #approvals-detail { height: 4; }
"""


def key_bar(width: int = 200, *, muted: bool = False, read_only: bool = False) -> Text:
    """The keys on one line that fits ``width``: the highest-ranked keys step out first (the
    last of them first), so help, filter, mute, quit and the palette are always there and
    "?" lists the rest. A plain Static, not a Footer: a Footer recomposes on every focus
    change, which costs a full repaint each time a dialog opens or closes. A viewer
    (``read_only``) is not offered the keys that act: each would only say it needs an
    operator."""
    shown = [
        a
        for a in sorted(ACTIONS, key=lambda a: a.action != "help")
        if a.show and not (read_only and a.action in OPERATOR_ACTIONS)
    ]

    def label(a: KeyAction) -> str:
        return "unmute" if a.action == "mute" and muted else a.label.lower()

    def length(actions: list[KeyAction]) -> int:
        return sum(len(a.shown_key) + len(label(a)) + 3 for a in actions) + len(" ^p palette")

    while length(shown) > width and any(a.rank for a in shown):
        drop = max(reversed(shown), key=lambda a: a.rank)
        shown.remove(drop)
    t = Text(no_wrap=True, overflow="ellipsis")
    for a in shown:
        t.append(f" {a.shown_key} ", style="bold reverse")
        t.append(f"{label(a)} ")
    t.append(" ^p ", style="bold reverse")
    t.append("palette")
    return t


class MainScreen(Screen[None]):
    DEFAULT_CSS = CSS
    BINDINGS: ClassVar[list[BindingType]] = bindings()

    def __init__(self, clock: Callable[[], datetime], label: str = "") -> None:
        """``label``: the engine's name when the cockpit watches a fleet (the header shows
        it first)."""
        super().__init__()
        self._clock = clock
        self.label = label
        self.wide = False
        self._laid_out = False
        self.group = 2
        self._strip_key: tuple[Any, ...] = ()
        self._grid_key: tuple[Any, ...] = ()
        self.muted = False  # the bell (the header and the key bar say so)
        self.read_only = False  # attached as a viewer (the header says so)
        self._keybar_key: tuple[int, bool, bool] = (0, False, False)

    def compose(self) -> ComposeResult:
        yield HeaderBar(self._clock, self.label)
        yield Static("", id="strip")
        with Container(id="body", classes="-narrow -show-2"):
            yield MarketPane(id="market", classes="g1")
            yield PositionsPane(id="positions", classes="g1")
            yield ApprovalsPane(id="approvals", classes="g2")
            yield OrdersPane(id="orders", classes="g1")
            yield TracePane(id="trace", classes="g3")
            yield SafetyPane(id="safety", classes="g4")
            yield VenuesPane(id="venues", classes="g7")
            yield ChartPane(id="chart", classes="g5")
            yield LogPane(id="log-pane", classes="g6")
        yield Static(key_bar(), id="keybar")  # fitted to the width on mount and resize

    # -- panes ------------------------------------------------------------------------------

    @property
    def header(self) -> HeaderBar:
        return self.query_one(HeaderBar)

    @property
    def market(self) -> MarketPane:
        return self.query_one(MarketPane)

    @property
    def positions(self) -> PositionsPane:
        return self.query_one(PositionsPane)

    @property
    def approvals(self) -> ApprovalsPane:
        return self.query_one(ApprovalsPane)

    @property
    def orders(self) -> OrdersPane:
        return self.query_one(OrdersPane)

    @property
    def trace(self) -> TracePane:
        return self.query_one(TracePane)

    @property
    def safety(self) -> SafetyPane:
        return self.query_one(SafetyPane)

    @property
    def venues(self) -> VenuesPane:
        return self.query_one(VenuesPane)

    @property
    def chart(self) -> ChartPane:
        return self.query_one(ChartPane)

    @property
    def log_pane(self) -> LogPane:
        return self.query_one(LogPane)

    # -- layout -----------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.apply_layout(self.app.size.width, self.app.size.height)
        self.query_one("#approvals-table").focus()

    class Resumed(Message):
        """Back on top after a dialog: the app renders what changed while it was covered
        (rendering pauses under dialogs) and shows the toasts it held back."""

    class Covered(Message):
        """Another screen (a dialog, the command palette) went over this one."""

    def on_screen_resume(self) -> None:
        self.post_message(self.Resumed())

    def on_screen_suspend(self) -> None:
        self.post_message(self.Covered())

    def on_resize(self, event: events.Resize) -> None:
        self.apply_layout(event.size.width, event.size.height)

    def set_muted(self, muted: bool) -> None:
        """The bell muted or not: the header and the key bar show it now."""
        self.muted = muted
        self._fit_keybar()
        self.header.set_flags(muted=muted, read_only=self.read_only)

    def set_read_only(self, read_only: bool) -> None:
        self.read_only = read_only
        self.header.set_flags(muted=self.muted, read_only=read_only)
        self._fit_keybar()

    def _fit_keybar(self) -> None:
        key = (self.app.size.width, self.muted, self.read_only)
        if key == self._keybar_key:
            return
        self._keybar_key = key
        bar = key_bar(key[0], muted=self.muted, read_only=self.read_only)
        self.query_one("#keybar", Static).update(bar, layout=False)

    def apply_layout(self, width: int, height: int) -> None:
        """Grid of everything when the terminal is big enough, else one group at a time."""
        self._fit_keybar()
        wide = width >= WIDE[0] and height >= WIDE[1]
        if wide == self.wide and self._laid_out:
            self.trace._shown = None  # the width changed: re-measure the reason column
            return
        self._laid_out = True
        self.wide = wide
        self.set_class(not wide, "-narrow")
        body = self.query_one("#body")
        body.set_class(wide, "-wide")
        body.set_class(not wide, "-narrow")
        self._show_classes()
        self._grid_key = ()
        self.trace._shown = None  # the reason column's width depends on the layout

    def _show_classes(self) -> None:
        body = self.query_one("#body")
        for n in GROUPS:
            body.set_class(n == self.group, f"-show-{n}")

    def is_visible(self, group: int) -> bool:
        return self.wide or self.group == group

    def show_group(self, group: int) -> None:
        """Keys 1-7: show that group (narrow) and focus its main table (both layouts)."""
        self.group = group
        self._show_classes()
        selector = FOCUS.get(group)
        if group == 7 and not self.venues.shows_table:
            selector = None  # nothing to select until a venue reports a difference
        if selector:
            self.query_one(selector).focus()
        self._strip_key = ()

    def update_strip(self, pending: int, halted: int = 0) -> None:
        key = (self.group, pending, halted)
        if key == self._strip_key:
            return
        self._strip_key = key
        t = Text(no_wrap=True, overflow="ellipsis")
        for n, name in GROUPS.items():
            label = f" {n} {name}"
            if n == 2 and pending:
                label += f" ({pending})"
            if n == 7 and halted:
                label += " HALTED"
            label += " "
            if n == self.group:
                style = "bold reverse"
            elif n == 2 and pending:
                style = "bold black on yellow"
            elif n == 7 and halted:
                style = "bold white on red"
            else:
                style = ""
            t.append(label, style=style)
            t.append(" ")
        t.append(" ?:keys", style="bright_black")
        self.query_one("#strip", Static).update(t, layout=False)

    def _fit_venues(self) -> None:
        """Wide: give the Venues pane the rows it wants under the trace, the chart and log
        the rest of the bottom band; with differences to show, the whole block beside safety.
        Touches the grid only when that changes (a relayout repaints the screen)."""
        if not self.wide:
            return
        venues = self.venues
        alert = venues.shows_table
        wanted = max(3, min(venues.wanted_height, MAX_VENUES))
        if alert:
            bottom = max(BOTTOM, wanted)
            rows = (bottom - MIN_CHART, MIN_CHART)
        else:
            top = min(wanted, BOTTOM - MIN_CHART)
            rows = (top, BOTTOM - top)
        key = (alert, rows)
        if key == self._grid_key:
            return
        self._grid_key = key
        body = self.query_one("#body")
        body.set_class(alert, "-venue-alert")
        body.styles.grid_rows = f"6 9 1fr {rows[0]} {rows[1]}"
        self.trace._shown = None  # its height changed; re-measure on the next render

    def set_filter(self, flt: TraceFilter) -> None:
        """The trace filter; its venue part filters the positions and orders panes too."""
        self.trace.set_filter(flt)
        self.positions.set_venue(flt.venue)
        self.orders.set_venue(flt.venue)

    def update_view(self, view: LocalView) -> None:
        """Render every pane from the view (the app wraps this in batch_update)."""
        snap = view.snapshot
        self.header.update_header(snap)
        for pane in (
            self.market,
            self.positions,
            self.approvals,
            self.orders,
            self.trace,
            self.safety,
            self.venues,
            self.log_pane,
        ):
            pane.update_view(view)
        self.update_strip(len(snap.get("approvals", [])), len(self.venues.halted))
        self._fit_venues()

    @property
    def focused_table(self) -> DataTable[Any] | None:
        focused = self.focused
        return focused if isinstance(focused, DataTable) else None
