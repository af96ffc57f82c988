"""Orders: open ones first, then the most recent closed ones, with status."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult

from cockpit.tui.fmt import fmt_price, fmt_qty, left, right, ts_time
from cockpit.tui.pane import Pane
from cockpit.tui.table import KeyedTable, Row
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


def status_label(order: dict) -> str:
    """ "partial 40%" says more than "partially_filled" in the same width."""
    status = order.get("status", "")
    if status == "partially_filled":
        qty = order.get("qty") or 0.0
        done = (order.get("filled_qty") or 0.0) / qty * 100 if qty else 0.0
        return f"partial {done:.0f}%"
    return status.replace("_", " ")


def open_orders(snap: dict) -> int:
    """How many orders are still working (quit asks first when any are)."""
    return sum(1 for o in snap.get("orders", []) if o.get("status") in OPEN)


def _r(label: str) -> Text:
    return Text(label, justify="right")


class OrdersPane(Pane):
    TITLE = "Orders"

    def compose(self) -> ComposeResult:
        yield KeyedTable(
            [
                ("time", "time"),
                (" symbol", "symbol"),
                (" side", "side"),
                (_r(" qty"), "qty"),
                (_r(" price"), "price"),
                (" status", "status"),
            ],
            sticky_top=True,
            id="orders-table",
        )

    def update_view(self, view: LocalView) -> None:
        orders = view.snapshot.get("orders", [])
        rows: list[Row] = []
        n_open = 0
        for o in orders:
            status = o.get("status", "")
            is_open = status in OPEN
            n_open += is_open
            price = o.get("avg_fill_price") or o.get("limit_price")
            side = o.get("side", "")
            rows.append(
                (
                    o["client_order_id"],
                    (
                        ts_time(o.get("ts_updated")),
                        left(o.get("symbol", "")),
                        left(side, "green" if side == "buy" else "red"),
                        right(fmt_qty(o.get("qty"))),
                        right(fmt_price(price) if price else "mkt"),
                        left(status_label(o), STATUS_STYLES.get(status, "")),
                    ),
                )
            )
        self.query_one(KeyedTable).sync(rows)
        title = f"Orders · {n_open} open" if n_open else "Orders"
        if title != self.border_title:
            self.border_title = title
