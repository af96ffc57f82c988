"""Positions: quantity, average price, mark, unrealized PnL, realized PnL net of the symbol's
fees (as the performance screen counts it), share of equity.

A position below the venue minimum (dust: no order can close it) reads ``SYMBOL dust``, dimmed.

When a position has protective exits (a strategy's ``exits``), three columns show its stop,
target and trailing stop with their distance from the mark in %; with several strategies on the
symbol, the level nearest the mark (the one that fires first). No exits anywhere: no columns.

With more than one venue a venue column appears (one venue needs no column: the header names
it), and the venue part of the trace filter (``/``) shows only that venue's positions.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult

from cockpit.tui.fmt import fmt_compact, fmt_pct, fmt_price, fmt_qty, left, pnl_text, right
from cockpit.tui.pane import Pane
from cockpit.tui.table import KeyedTable, Row
from cockpit.tui.view import LocalView

VENUE_WIDTH = 8  # the venue column's name is cut to this (with its leading space)
ROOMY = 62  # narrower than this, a venue column pushes out the mark (market watch has it)


def _r(label: str) -> Text:
    return Text(label, justify="right")


def venue_names(snap: dict[str, Any], rows: list[dict[str, Any]]) -> set[str]:
    """The venues the engine reports, and any a row names (an older engine reports none)."""
    names = {str(v) for v in (snap.get("venues") or {})}
    names.update(str(r["venue"]) for r in rows if r.get("venue"))
    return names


def venue_cell(row: dict[str, Any]) -> Text:
    name = str(row.get("venue", ""))
    if len(name) > VENUE_WIDTH - 1:
        name = name[: VENUE_WIDTH - 2] + "…"
    return left(name, "bold")


def filtered_title(title: str, venue: str | None) -> str:
    return f"{title} · venue={venue}" if venue else title


def exit_cell(exits: list[dict[str, Any]], key: str, mark: float | None) -> Text:
    """The level of ``key`` (stop, target, trail) nearest the mark, with its distance in %:
    ``59,420.00 -1.2%`` ("-" when none is set)."""
    levels = [e[key] for e in exits if isinstance(e.get(key), int | float)]
    if not levels:
        return right("-", "dim")
    if not mark:
        return right(fmt_price(levels[0]))
    level = min(levels, key=lambda x: abs(x - mark))
    dist = (level - mark) / mark * 100.0
    style = "yellow" if abs(dist) < 0.5 and key != "target" else ""
    return right(f"{fmt_price(level)} {dist:+.1f}%", style)


def _net_realized(p: dict[str, Any]) -> float | None:
    """The symbol's realized PnL net of the fees paid on it, as the performance screen's rPnL
    and the footer count it (a trade back to flat that only paid fees is a loss, not 0.00)."""
    realized = p.get("realized_pnl")
    if not isinstance(realized, int | float):
        return None
    fees = p.get("fees")
    return realized - (fees if isinstance(fees, int | float) else 0.0)


def _columns(
    with_venue: bool, with_mark: bool = True, with_exits: bool = False
) -> list[tuple[str | Text, str]]:
    venue: list[tuple[str | Text, str]] = [(" venue", "venue")] if with_venue else []
    mark: list[tuple[str | Text, str]] = [(_r(" mark"), "mark")] if with_mark else []
    exits: list[tuple[str | Text, str]] = (
        [(_r(" stop"), "stop"), (_r(" target"), "target"), (_r(" trail"), "trail")]
        if with_exits
        else []
    )
    return [
        ("symbol", "symbol"),
        *venue,
        (_r(" qty"), "qty"),
        (_r(" avg"), "avg"),
        *mark,
        (_r(" uPnL"), "upnl"),
        (_r(" rPnL"), "rpnl"),
        (_r(" eq%"), "share"),
        *exits,
    ]


class PositionsPane(Pane):
    TITLE = "Positions"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.venue: str | None = None  # the filter's venue, or every venue

    def compose(self) -> ComposeResult:
        yield KeyedTable(_columns(False), id="positions-table")

    @property
    def selected_symbol(self) -> str | None:
        return self.query_one(KeyedTable).selected_key

    def set_venue(self, venue: str | None) -> None:
        self.venue = venue

    def update_view(self, view: LocalView) -> None:
        snap = view.snapshot
        positions = snap.get("positions", [])
        with_venue = len(venue_names(snap, positions)) > 1
        with_mark = not with_venue or (self.size.width or ROOMY) >= ROOMY
        with_exits = any(p.get("exits") for p in positions)
        table = self.query_one(KeyedTable)
        table.set_columns(_columns(with_venue, with_mark, with_exits))
        rows: list[Row] = []
        for p in positions:
            if self.venue is not None and str(p.get("venue", "")) != self.venue:
                continue
            qty = p.get("qty", 0.0)
            # Dust (below the venue minimum, no order can close it) is marked and dimmed.
            dust = p.get("dust") is True
            cells = [
                f"{p['symbol']} dust" if dust else p["symbol"],
                right(
                    fmt_qty(qty),
                    "dim" if dust else "green" if qty > 0 else "red" if qty < 0 else "",
                ),
                right(fmt_price(p.get("avg_price")) if qty else "-"),
                right(fmt_price(p.get("mark"))),
                right(pnl_text(p.get("unrealized_pnl"), compact=True)),
                right(pnl_text(_net_realized(p), compact=True)),
                right(fmt_pct((p.get("share_of_equity") or 0.0) * 100, decimals=1)),
            ]
            if with_exits:
                exits, mark = p.get("exits") or [], p.get("mark")
                cells.extend(exit_cell(exits, k, mark) for k in ("stop", "target", "trail"))
            if not with_mark:
                del cells[3]
            if with_venue:
                cells.insert(1, venue_cell(p))
            rows.append((p["symbol"], tuple(cells)))
        table.sync(rows)
        title = filtered_title(self.TITLE, self.venue)
        if title != self.border_title:
            self.border_title = title
        pf = snap.get("portfolio", {})
        if pf:
            # Net of fees, as equity moves (the portfolio books realized and unrealized gross,
            # fees apart): "PnL +0.56" beside an equity 1.44 down would mislead. The columns
            # add up to it: uPnL, and rPnL net of each symbol's fees.
            net = (
                pf.get("unrealized_pnl", 0.0)
                + pf.get("realized_pnl", 0.0)
                - pf.get("fees_paid", 0.0)
            )
            subtitle = (
                f"equity {fmt_compact(pf.get('equity'))} · cash {fmt_compact(pf.get('cash'))}"
                f" · net PnL {net:+,.2f}"
            )
            if subtitle != self.border_subtitle:
                self.border_subtitle = subtitle
