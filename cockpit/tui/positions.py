"""Positions: quantity, average price, mark, unrealized and realized PnL, share of equity."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult

from cockpit.tui.fmt import fmt_compact, fmt_pct, fmt_price, fmt_qty, pnl_text, right
from cockpit.tui.pane import Pane
from cockpit.tui.table import KeyedTable, Row
from cockpit.tui.view import LocalView


def _r(label: str) -> Text:
    return Text(label, justify="right")


class PositionsPane(Pane):
    TITLE = "Positions"

    def compose(self) -> ComposeResult:
        yield KeyedTable(
            [
                ("symbol", "symbol"),
                (_r(" qty"), "qty"),
                (_r(" avg"), "avg"),
                (_r(" mark"), "mark"),
                (_r(" uPnL"), "upnl"),
                (_r(" rPnL"), "rpnl"),
                (_r(" eq%"), "share"),
            ],
            id="positions-table",
        )

    @property
    def selected_symbol(self) -> str | None:
        return self.query_one(KeyedTable).selected_key

    def update_view(self, view: LocalView) -> None:
        snap = view.snapshot
        rows: list[Row] = []
        for p in snap.get("positions", []):
            qty = p.get("qty", 0.0)
            rows.append(
                (
                    p["symbol"],
                    (
                        p["symbol"],
                        right(fmt_qty(qty), "green" if qty > 0 else "red" if qty < 0 else ""),
                        right(fmt_price(p.get("avg_price")) if qty else "-"),
                        right(fmt_price(p.get("mark"))),
                        right(pnl_text(p.get("unrealized_pnl"), compact=True)),
                        right(pnl_text(p.get("realized_pnl"), compact=True)),
                        right(fmt_pct((p.get("share_of_equity") or 0.0) * 100, decimals=1)),
                    ),
                )
            )
        self.query_one(KeyedTable).sync(rows)
        pf = snap.get("portfolio", {})
        if pf:
            upnl = pf.get("unrealized_pnl", 0.0)
            rpnl = pf.get("realized_pnl", 0.0)
            subtitle = (
                f"equity {fmt_compact(pf.get('equity'))} · cash {fmt_compact(pf.get('cash'))}"
                f" · PnL {upnl + rpnl:+,.2f}"
            )
            if subtitle != self.border_subtitle:
                self.border_subtitle = subtitle
