"""Approvals: pending intents with what a person needs to decide, and a live TTL countdown.

The snapshot is the source of truth for what is pending; the countdown runs on the engine's
clock (the snapshot's ``now``), so a paused or replayed engine counts down with its own time.
While the link to the engine is down that clock is not seen: the last snapshot's approvals stay
listed, but their TTL is unknown (shown as ``?``), not a countdown frozen at the moment the link
went (a trader read "19s" for minutes on an approval the engine had long expired).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from cockpit.tui.fmt import (
    NS_PER_SECOND,
    fmt_duration,
    fmt_exact,
    fmt_money,
    fmt_notional,
    fmt_price,
    fmt_qty,
    left,
    right,
    truncate,
)
from cockpit.tui.pane import Pane
from cockpit.tui.table import KeyedTable, Row
from cockpit.tui.view import LocalView
from engine.vocabulary import limit_terms


def _r(label: str) -> Text:
    return Text(label, justify="right")


LINK_DOWN_TTL = "?"


def ttl_seconds(approval: dict[str, Any], now: int) -> float:
    return (int(approval.get("expires_ts", 0)) - now) / NS_PER_SECOND


def engine_clock(snap: dict[str, Any], *, connected: bool = True) -> int | None:
    """The engine's clock to count TTLs down with, or None while the link is down (the
    snapshot's ``connection`` says so, or the caller knows it, as a fleet does)."""
    conn = snap.get("connection")
    if not connected or (isinstance(conn, dict) and not conn.get("connected", True)):
        return None
    return int(snap.get("now", 0))


def _expiry(a: dict[str, Any], now: int | None) -> str:
    if now is None:
        return "expiry unknown while the link is down (it may have expired)"
    return f"expires in {fmt_duration(ttl_seconds(a, now))}"


def approval_detail(a: dict[str, Any], now: int | None) -> Text:
    """What the table has no room for: why, the checks, costs, and the exact order."""
    verdicts = a.get("verdicts", [])
    failed = [v for v in verdicts if not v.get("ok")]
    t = Text(no_wrap=False)
    t.append(f"{a.get('reason', '')}", style="italic")
    t.append(" · ")
    if failed:
        t.append("checks failing: " + ", ".join(v["code"] for v in failed), style="bold red")
    else:
        t.append(f"checks {len(verdicts)}/{len(verdicts)} ok", style="green")
    t.append(
        f" · est fee {fmt_money(a.get('est_fee'))}, slippage "
        f"{a.get('est_slippage_bps') or 0:.2f} bps · "
    )
    t.append(f"{a.get('strategy')} ", style="bold")
    t.append(f"{a.get('side')} ", style="green" if a.get("side") == "buy" else "red")
    t.append(
        # Exactly what is sent (the hash binds it): the table rounds, the detail never does.
        f"{fmt_exact(a.get('qty'))} {a.get('symbol')} {a.get('order_type')}"
        + (f" limit {fmt_exact(a['limit_price'])}" if a.get("limit_price") else "")
        + limit_terms(a)
        + f" ~{fmt_money(a.get('notional'))}"
        + (" reduce-only" if a.get("reduce_only") else "")
        + f" · {_expiry(a, now)} · {a.get('id')}"
    )
    return t


def approval_cells(a: dict[str, Any], now: int | None) -> tuple[Text, ...]:
    """One pending approval as the table shows it: ttl, strategy, symbol, side, qty, ref,
    value, confidence (the fleet's queue shows the same, after the engine's name); ``now``
    None: the link is down and the TTL unknown."""
    side = a.get("side", "")
    if now is None:
        ttl_cell = Text(LINK_DOWN_TTL, style="bright_black", justify="right")
    else:
        ttl = ttl_seconds(a, now)
        ttl_cell = Text(
            fmt_duration(ttl), style="bold red" if ttl <= 5 else "bold yellow", justify="right"
        )
    return (
        ttl_cell,
        left(truncate(a.get("strategy", ""), 13)),
        left(a.get("symbol", "")),
        left(side, "green" if side == "buy" else "red"),
        right(fmt_qty(a.get("qty"))),
        right(fmt_price(a.get("ref_price"))),
        right(fmt_notional(a.get("notional"))),
        right(f"{a.get('confidence') or 0:.2f}"),
    )


class ApprovalsPane(Pane):
    TITLE = "Approvals"
    DEFAULT_CSS = """
    ApprovalsPane #approvals-detail { height: 2; color: $text; padding: 0 1; }
    ApprovalsPane.-urgent { border: round $warning; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._pending: dict[str, dict[str, Any]] = {}
        self._now: int | None = 0
        self._detail_key: tuple[Any, ...] = ()

    def compose(self) -> ComposeResult:
        yield KeyedTable(
            [
                (_r("ttl"), "ttl"),
                (" strategy", "strategy"),
                (" symbol", "symbol"),
                (" side", "side"),
                (_r(" qty"), "qty"),
                (_r(" ref"), "ref"),
                (_r(" value"), "notional"),
                (_r(" conf"), "conf"),
            ],
            id="approvals-table",
        )
        yield Static("", id="approvals-detail")

    @property
    def table(self) -> KeyedTable:
        return self.query_one(KeyedTable)

    @property
    def selected(self) -> dict[str, Any] | None:
        """The approval under the cursor: the one a key press acts on."""
        key = self.table.selected_key
        return self._pending.get(key) if key else None

    def update_view(self, view: LocalView) -> None:
        snap = view.snapshot
        now = engine_clock(snap)
        self._now = now
        pending = sorted(snap.get("approvals", []), key=lambda a: a.get("created_ts", 0))
        self._pending = {a["id"]: a for a in pending}
        rows: list[Row] = [(a["id"], approval_cells(a, now)) for a in pending]
        self.table.sync(rows)
        self.set_class(bool(rows), "-urgent")
        title = f"Approvals · {len(rows)} pending" if rows else "Approvals"
        if title != self.border_title:
            self.border_title = title
        subtitle = "a approve · r reject" if rows else ""
        if subtitle != self.border_subtitle:
            self.border_subtitle = subtitle
        self._show_detail()

    def _show_detail(self) -> None:
        a = self.selected
        if a is None:
            key: tuple[Any, ...] = ("none",)
            text = Text("No intent is waiting for approval.", style="bright_black")
        else:
            ttl = None if self._now is None else int(ttl_seconds(a, self._now))
            key = (a["id"], ttl)
            text = approval_detail(a, self._now)
        if key != self._detail_key:
            self._detail_key = key
            # Fixed height: no layout pass (a layout re-renders the whole screen).
            self.query_one("#approvals-detail", Static).update(text, layout=False)

    def take_slid(self) -> dict[str, Any] | None:
        """The approval under the cursor if it slid there when the one the trader was reading
        went away (expired, answered elsewhere, superseded); once: the next key acts on it."""
        key = self.table.take_slid()
        return self._pending.get(key) if key else None

    @on(DataTable.RowHighlighted, "#approvals-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()
