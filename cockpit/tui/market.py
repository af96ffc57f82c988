"""Market watch: bid, ask, last (mid), spread, change since first seen, direction, sparkline."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult

from cockpit.tui.fmt import DOWN, FLAT, UP, fmt_price, price_decimals, right, sparkline
from cockpit.tui.pane import Pane
from cockpit.tui.table import KeyedTable, Row
from cockpit.tui.view import LocalView

SPARK_WIDTH = 8
SYMBOL_SCOPE = "symbol:"  # a per-symbol breaker's scope (engine.breakers.SYMBOL_PREFIX)


def _r(label: str) -> Text:
    return Text(label, justify="right")


def stale_symbols(snap: dict[str, Any]) -> set[str]:
    """Symbols whose ``stale_feed`` breaker is tripped: no fresh quote, no new orders on them."""
    return {
        str(b.get("scope", "")).removeprefix(SYMBOL_SCOPE)
        for b in snap.get("breakers") or []
        if b.get("name") == "stale_feed"
        and b.get("tripped")
        and str(b.get("scope", "")).startswith(SYMBOL_SCOPE)
    }


class MarketPane(Pane):
    TITLE = "Market watch"

    def compose(self) -> ComposeResult:
        yield KeyedTable(
            [
                ("symbol", "symbol"),
                (_r(" bid"), "bid"),
                (_r(" ask"), "ask"),
                (_r("  last"), "last"),
                (_r(" bps"), "spread"),
                (_r("  chg"), "change"),
                (_r(" trend"), "spark"),
            ],
            id="market-table",
        )

    def update_view(self, view: LocalView) -> None:
        quotes = view.snapshot.get("quotes", {})
        market = view.market
        stale = stale_symbols(view.snapshot)
        rows: list[Row] = []
        for sym in sorted(quotes):
            q = quotes[sym]
            bid, ask = q.get("bid"), q.get("ask")
            mid = market.last.get(sym)
            if bid is None or ask is None or mid is None:
                continue
            d = price_decimals(mid)
            spread = (ask - bid) / mid * 1e4 if mid else 0.0
            # A symbol whose feed went stale: its last quote is old, no trend to read into it.
            direction = 0 if sym in stale else market.direction.get(sym, 0)
            arrow = UP if direction > 0 else DOWN if direction < 0 else FLAT
            arrow_style = "green" if direction > 0 else "red" if direction < 0 else "bright_black"
            last = Text(" ", justify="right")
            last.append(arrow, style=arrow_style)
            last.append(fmt_price(mid, d))
            chg = market.change_pct(sym)
            chg_style = "" if not chg else "green" if chg > 0 else "red"
            rows.append(
                (
                    sym,
                    (
                        sym,
                        right(fmt_price(bid, d)),
                        right(fmt_price(ask, d)),
                        last,
                        right(f"{spread:.1f}"),
                        right("-" if chg is None else f"{chg:+.2f}%", chg_style),
                        right("STALE", "bold white on red")
                        if sym in stale
                        else right(sparkline(market.history.get(sym, ()), SPARK_WIDTH), "cyan"),
                    ),
                )
            )
        self.query_one(KeyedTable).sync(rows)
