"""Orders: open ones first, then the most recent closed ones, with status.

With more than one venue a venue column appears, and the venue part of the trace filter
(``/``) shows only that venue's orders.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult

from cockpit.tui.approvals import LINK_DOWN_TTL, engine_clock
from cockpit.tui.fmt import fmt_duration, fmt_price, fmt_qty, left, right, ts_time
from cockpit.tui.pane import Pane
from cockpit.tui.positions import filtered_title, venue_cell, venue_names
from cockpit.tui.table import Cell, KeyedTable, Row
from cockpit.tui.view import LocalView

STATUS_STYLES = {
    "pending_new": "cyan",
    "new": "bold cyan",
    "partially_filled": "bold yellow",
    "filled": "green",
    "canceled": "bright_black",
    "rejected": "bold red",
}
OPEN = ("pending_new", "new", "partially_filled")


def status_label(order: dict[str, Any]) -> str:
    """ "partial 40%" says more than "partially_filled" in the same width."""
    status = order.get("status", "")
    filled = order.get("filled_qty") or 0.0
    qty = order.get("qty") or 0.0
    done = _share(filled, qty)
    if status == "partially_filled":
        return f"partial {done}"
    if status == "canceled" and filled > 0:
        # Part of it filled before the cancel: "canceled" alone reads as nothing traded.
        return f"canceled {done} filled"
    return status.replace("_", " ")


def _share(filled: float, qty: float) -> str:
    """The filled share in whole percent, never rounded to 0% or 100% when it is neither."""
    pct = filled / qty * 100 if qty else 0.0
    if 0 < pct < 1:
        return "<1%"
    if 99 < pct < 100:
        return ">99%"
    return f"{pct:.0f}%"


def open_orders(snap: dict[str, Any]) -> int:
    """How many orders are still working (quit asks first when any are)."""
    return sum(1 for o in snap.get("orders", []) if o.get("status") in OPEN)


def resting_limit(order: dict[str, Any]) -> bool:
    """A limit order still working (its price and age matter more than its last change)."""
    return order.get("order_type") == "limit" and order.get("status") in OPEN


def limit_terms(order: dict[str, Any]) -> str:
    """What a limit order is besides its price: post-only and a time in force other than GTC."""
    terms = []
    if order.get("post_only"):
        terms.append("po")
    tif = str(order.get("tif") or "gtc")
    if tif != "gtc":
        terms.append(tif)
    return " ".join(terms)


def age_ttl(order: dict[str, Any], now: int | None) -> str:
    """How long a resting limit has worked, and what is left of its time to live:
    ``12s`` (no time to live), ``12s/48s left``. ``now`` None: the link to the engine is down,
    its clock is not seen, so both are unknown (``?``), not frozen at the moment it went."""
    created = int(order.get("ts_created") or 0)
    if now is None:
        return LINK_DOWN_TTL if created else ""
    if not created or not now:
        return ""
    age = fmt_duration(max(0, now - created) / 1e9)
    expire = int(order.get("expire_ts") or 0)
    if not expire:
        return age
    return f"{age}/{fmt_duration(max(0, expire - now) / 1e9)} left"


def _r(label: str) -> Text:
    return Text(label, justify="right")


def _columns(with_venue: bool, with_limits: bool = False) -> list[tuple[str | Text, str]]:
    """The table's columns; ``with_limits``: a limit is working, so its age and time to live
    get a column (shown only then, so the pane keeps its width at 80 columns otherwise)."""
    venue: list[tuple[str | Text, str]] = [(" venue", "venue")] if with_venue else []
    limits: list[tuple[str | Text, str]] = [(" age/ttl", "age")] if with_limits else []
    return [
        ("time", "time"),
        *venue,
        (" symbol", "symbol"),
        (" side", "side"),
        (_r(" qty"), "qty"),
        (_r(" price"), "price"),
        (" status", "status"),
        *limits,
    ]


class OrdersPane(Pane):
    TITLE = "Orders"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.venue: str | None = None  # the filter's venue, or every venue

    def compose(self) -> ComposeResult:
        yield KeyedTable(_columns(False), sticky_top=True, id="orders-table")

    def set_venue(self, venue: str | None) -> None:
        self.venue = venue

    def update_view(self, view: LocalView) -> None:
        snap = view.snapshot
        orders = snap.get("orders", [])
        with_venue = len(venue_names(snap, orders)) > 1
        with_limits = any(resting_limit(o) for o in orders)
        now = engine_clock(snap)
        table = self.query_one(KeyedTable)
        table.set_columns(_columns(with_venue, with_limits))
        rows: list[Row] = []
        n_open = 0
        for o in orders:
            if self.venue is not None and str(o.get("venue", "")) != self.venue:
                continue
            status = o.get("status", "")
            is_open = status in OPEN
            n_open += is_open
            resting = resting_limit(o)
            # A working limit shows its limit (what it waits for), a done order what it got.
            price = o.get("limit_price") if resting else None
            price = price or o.get("avg_fill_price") or o.get("limit_price")
            side = o.get("side", "")
            label = status_label(o)
            style = STATUS_STYLES.get(status, "")
            if status == "canceled" and (o.get("filled_qty") or 0.0) > 0:
                style = STATUS_STYLES["partially_filled"]  # a position moved: not dimmed
            terms = limit_terms(o) if o.get("order_type") == "limit" else ""
            cells: list[Cell] = [
                ts_time(o.get("ts_updated")),
                left(o.get("symbol", "")),
                left(side, "green" if side == "buy" else "red"),
                right(fmt_qty(o.get("qty"))),
                right(fmt_price(price) if price else "mkt"),
                left(f"{label} {terms}" if terms else label, style),
            ]
            if with_limits:
                cells.append(left(age_ttl(o, now) if resting else ""))
            if with_venue:
                cells.insert(1, venue_cell(o))
            rows.append((o["client_order_id"], tuple(cells)))
        table.sync(rows)
        title = f"Orders · {n_open} open" if n_open else "Orders"
        title = filtered_title(title, self.venue)
        if title != self.border_title:
            self.border_title = title
