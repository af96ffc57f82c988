"""Third review of the numbers a trader sees: positions, PnL, fees, day PnL, ratios, reports.

Each test names the hole it closes; the hypothesis tests hold the accounting identities over
random fills (bounded; ``REVIEW_NUMBERS_EXAMPLES`` runs more).
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cockpit.oneshot import format_status
from cockpit.tui.fmt import fmt_qty, pnl_text
from engine.alert_text import AlertText
from engine.history import RoundTrips
from engine.metrics import sharpe_ratio, sortino_ratio
from engine.performance import PerformanceBook
from engine.portfolio import NS_PER_DAY, Portfolio, Position
from engine.types import Fill, Liquidity, Side
from tests import test_safety_engine
from tests.test_safety_engine import BTC, buy, start
from tests.test_tui_venues import WIDE, FakeClient, make_app, plain, ready, venues_scenario

EXAMPLES = int(os.environ.get("REVIEW_NUMBERS_EXAMPLES", "150"))
PPY = 525_600.0  # 1-minute bars


def fill(
    n: int,
    side: Side,
    qty: float,
    price: float,
    fee: float = 0.0,
    *,
    strategy: str = "s1",
    symbol: str = "BTC/USDT",
    ts: int | None = None,
) -> Fill:
    return Fill(
        f"f{n}",
        f"c{n}",
        strategy,
        symbol,
        "sim",
        side,
        qty,
        price,
        fee,
        Liquidity.TAKER,
        n * 1_000_000_000 if ts is None else ts,
    )


# --------------------------------------------------------------------------- what is shown


def test_a_position_below_the_eighth_decimal_is_not_shown_as_zero() -> None:
    """fmt_qty rounded to eight decimals and stripped the zeros: 3e-9 held read "0" (and a
    short "-0") in the Positions pane and in `cockpit status`, beside a mark and an eq%."""
    assert fmt_qty(3e-9) not in ("0", "-0")
    assert float(fmt_qty(3e-9)) == pytest.approx(3e-9, rel=0.01)
    assert float(fmt_qty(-4.2e-10)) == pytest.approx(-4.2e-10, rel=0.01)
    # Just above the eighth decimal keeps the plain form; zero is still "0".
    assert fmt_qty(1e-8) == "0.00000001"
    assert fmt_qty(0.0) == "0"
    assert fmt_qty(0.12345) == "0.12345"


def test_a_short_marked_at_its_own_price_shows_no_loss() -> None:
    """(mark - avg) * qty of a short at its own price is -0.0, drawn "-0.00" as if it lost."""
    pos = Position("BTC/USDT", qty=-0.5, avg_price=60_000.0, mark=60_000.0)
    assert math.copysign(1.0, pos.unrealized_pnl) == 1.0
    assert str(pnl_text(-0.0)) == "+0.00"
    assert "-" not in str(pnl_text(-0.0, compact=True))
    assert "-" not in str(pnl_text(pos.unrealized_pnl, compact=True))
    # A real loss, however small, keeps its sign.
    assert str(pnl_text(-0.004, compact=True)).startswith("-")


def test_status_shows_a_sub_cent_price_and_pnl_that_adds_up() -> None:
    """`cockpit status` showed a SHIB position "@ 0.00" (two decimals for every price) and
    realized and unrealized gross of fees with no fees: the figures did not add up to equity
    less the starting cash, nor say how the day went."""
    snap = {
        "portfolio": {
            "quote_currency": "USDT",
            "starting_cash": 10_000.0,
            "equity": 9_998.5,
            "cash": 9_000.0,
            "realized_pnl": 1.0,
            "unrealized_pnl": -0.5,
            "fees_paid": 3.0,
            "daily_pnl": -1.25,
            "drawdown": 0.0002,
        },
        "positions": [
            {"symbol": "SHIB/USDT", "qty": 123_456_789.0, "avg_price": 0.00001234},
            {"symbol": "BTC/USDT", "qty": 3e-9, "avg_price": 60_000.0},
        ],
    }
    text = format_status(snap)
    assert "SHIB/USDT 123456789 @ 0.00001234" in text, text
    assert "@ 0.00," not in text
    assert "BTC/USDT 3.00e-09 @" in text, text
    (pnl,) = [line for line in text.splitlines() if line.startswith("pnl ")]
    assert "net -2.50" in pnl  # 1.00 - 0.50 - 3.00 == 9,998.50 - 10,000.00 - ...
    assert "fees 3.00" in pnl
    assert "today -1.25" in pnl


async def test_the_positions_columns_add_up_to_the_net_pnl_footer() -> None:
    """rPnL was gross of fees while the performance screen's rPnL is net: one strategy on one
    symbol showed two different realized figures, and the columns did not add up to the
    footer's net PnL. A symbol traded back to flat at its entry price (only fees paid) is a
    loss, shown as one."""
    client = FakeClient({"kraken": venues_scenario()["kraken"]})
    client.snap["positions"] = [
        {
            "symbol": "BTC/USDT",
            "venue": "kraken",
            "qty": 0.1,
            "avg_price": 60_000.0,
            "mark": 60_100.0,
            "unrealized_pnl": 10.0,
            "realized_pnl": 25.0,
            "fees": 7.0,
            "share_of_equity": 0.06,
        },
        {
            "symbol": "ETH/USDT",
            "venue": "kraken",
            "qty": 0.0,
            "avg_price": 0.0,
            "mark": 3_000.0,
            "unrealized_pnl": 0.0,
            "realized_pnl": 0.0,
            "fees": 1.5,
            "share_of_equity": 0.0,
        },
    ]
    client.snap["portfolio"] = {
        "cash": 93_991.5,
        "equity": 100_001.5,
        "realized_pnl": 25.0,
        "unrealized_pnl": 10.0,
        "fees_paid": 8.5,
    }
    app = make_app(client)
    async with app.run_test(size=WIDE) as pilot:
        await ready(pilot)
        table: Any = app.main.positions.query_one("#positions-table")
        assert plain(table.get_cell("BTC/USDT", "rpnl")).strip() == "+18.00"
        assert plain(table.get_cell("ETH/USDT", "rpnl")).strip() == "-1.50"
        assert "net PnL +26.50" in str(app.main.positions.border_subtitle)


def test_the_snapshot_keeps_a_symbol_that_only_paid_fees() -> None:
    """build_snapshot listed a symbol only while it held or had realized PnL: a round trip
    closed at its entry price vanished with the fees it paid."""
    from engine.views import listed

    pf = Portfolio(10_000.0)
    pf.apply_fill(fill(1, Side.BUY, 1.0, 100.0, 0.1))
    pf.apply_fill(fill(2, Side.SELL, 1.0, 100.0, 0.1))
    row = pf.snapshot()["positions"]["BTC/USDT"]
    assert row["qty"] == 0.0 and row["realized_pnl"] == 0.0
    assert listed(row)
    assert not listed({"qty": 0.0, "realized_pnl": 0.0, "fees": 0.0})


# --------------------------------------------------------------------------- ratios


def test_sharpe_of_float_rounding_is_not_a_number() -> None:
    """A flat account whose equity wobbled by one ulp (the running sums resynced) had Sharpe
    71 and Sortino 162; a constant return had Sharpe 5e15. Both are a zero deviation."""
    flat = [100.0] * 10 + [100.00000000000001] + [100.0] * 10
    assert sharpe_ratio(flat, PPY) is None
    assert sortino_ratio(flat, PPY) is None
    steady = [100.0 * 1.001**k for k in range(50)]
    assert sharpe_ratio(steady, PPY) is None
    # A real wobble (a hundredth of a cent on 10,000) is a deviation and gets a number.
    real = [10_000.0, 10_000.0001, 10_000.0, 10_000.0002, 10_000.0001]
    assert sharpe_ratio(real, PPY) is not None
    assert sortino_ratio(real, PPY) is not None


def test_sharpe_needs_two_returns_and_is_none_for_no_trades() -> None:
    assert sharpe_ratio([100.0, 101.0], PPY) is None  # one return
    assert sharpe_ratio([100.0] * 30, PPY) is None  # no trade: flat
    assert sortino_ratio([100.0, 101.0, 102.5, 103.0], PPY) is None  # never lost


# --------------------------------------------------------------------------- summary, alert


class _Engine:
    """What build_summary reads of an engine."""

    def __init__(self, portfolio: Portfolio) -> None:
        from types import SimpleNamespace

        self.started_wall = 0.0
        self.quotes_processed = 0
        self.blocked_reason = ""
        self.heartbeat = None
        self.core = SimpleNamespace(
            session=1,
            portfolio=portfolio,
            open_orders={},
            validator=SimpleNamespace(rejected={}),
            counters={},
            safety=SimpleNamespace(trading_state="ACTIVE", kill=SimpleNamespace(level=None)),
            approvals=SimpleNamespace(pending=list),
        )


def test_the_summary_and_the_daily_alert_say_how_the_day_went() -> None:
    """The headless summary (and the daily_summary alert built on it) had equity, realized,
    unrealized and fees, but neither the PnL net of fees nor the PnL since 00:00 UTC; a
    position of 3e-9 read 0.0 (rounded to eight decimals)."""
    from engine.views import build_summary

    day0 = 20_000 * NS_PER_DAY
    pf = Portfolio(10_000.0)
    pf.on_time(day0)
    pf.apply_fill(fill(1, Side.BUY, 1.0, 100.0, 0.5, ts=day0 + 1))
    pf.mark("BTC/USDT", 110.0, day0 + 2)
    pf.on_time(day0 + NS_PER_DAY)  # midnight: the day starts at equity 10,009.50
    pf.mark("BTC/USDT", 104.0, day0 + NS_PER_DAY + 1)
    pf.apply_fill(fill(2, Side.BUY, 3e-9, 104.0, 0.0, symbol="ETH/USDT", ts=day0 + NS_PER_DAY))
    summary = build_summary(_Engine(pf))  # type: ignore[arg-type]
    assert summary["daily_pnl"] == pytest.approx(-6.0)
    assert summary["net_pnl"] == pytest.approx(3.5)
    assert summary["positions"]["ETH/USDT"] == pytest.approx(3e-9)
    alert = AlertText("[paper]").daily(summary, day0 + NS_PER_DAY + 5, "alerts 0 sent")
    assert "PnL since 00:00 UTC -6.00" in alert.body, alert.body


# --------------------------------------------------------------------------- after a restart


async def test_after_a_restart_the_strategies_unrealized_matches_the_positions(
    tmp_path,
) -> None:
    """The performance table was valued at the quote mids alone: after a restart, until the
    feed spoke again (or for as long as it stayed silent), every strategy's unrealized PnL read
    0 and its exposure was at cost, while the Positions pane valued the same positions at the
    journaled marks."""
    from engine.runtime import Engine
    from tests.conftest import fast_config
    from tests.test_performance import trade_until_fills

    first = Engine(fast_config(tmp_path), tmp_path)
    await first.start()
    try:
        await trade_until_fills(first, 6)
        before = first.snapshot()
    finally:
        await first.stop()
    held = sum(p["unrealized_pnl"] for p in before["positions"])
    again = Engine(fast_config(tmp_path), tmp_path)
    await again.start()
    try:
        snap = again.snapshot()
    finally:
        await again.stop()
    assert not snap["quotes"]  # no quote since the restart
    positions_u = sum(p["unrealized_pnl"] for p in snap["positions"])
    strategies_u = sum(r["unrealized_pnl"] for r in snap["performance"]["strategies"])
    assert positions_u == pytest.approx(held, abs=1e-9)
    assert any(p["qty"] for p in snap["positions"]), "the run must leave a position open"
    assert strategies_u == pytest.approx(positions_u, abs=1e-6)
    # The whole profit of the strategies is the account's (equity less the starting cash).
    pf = snap["portfolio"]
    total = sum(r["realized_pnl"] + r["unrealized_pnl"] for r in snap["performance"]["strategies"])
    assert total == pytest.approx(pf["equity"] - pf["starting_cash"], abs=1e-6)


# --------------------------------------------------------------------------- identities

SYMBOLS = ("BTC/USDT", "ETH/USDT")
STRATEGIES = ("s1", "s2", "operator")
trades = st.lists(
    st.tuples(
        st.sampled_from(STRATEGIES),
        st.sampled_from(SYMBOLS),
        st.sampled_from([Side.BUY, Side.SELL]),
        st.sampled_from([0.001, 0.1, 0.3, 0.7, 1.0, 2.5]),
        st.floats(50.0, 150.0),
        st.sampled_from([0.0, 0.01, 0.25]),
        st.floats(0.9, 1.1),  # the mark after the fill, relative to its price
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(trades)
def test_the_account_and_its_strategies_agree_at_every_fill(
    steps: list[tuple[str, str, Side, float, float, float, float]],
) -> None:
    """After every fill and mark: equity == cash + sum(qty * mark); realized + unrealized -
    fees == equity - starting cash; the strategies' whole profit (performance book, at the
    portfolio's marks) is the account's; their fees are the account's."""
    pf = Portfolio(10_000.0)
    book = PerformanceBook()
    for n, (sid, sym, side, qty, price, fee, move) in enumerate(steps):
        f = fill(n, side, qty, price, fee, strategy=sid, symbol=sym)
        pf.apply_fill(f)
        book.on_fill(f)
        pf.mark(sym, price * move, f.ts + 1)
        snap = pf.snapshot()
        held = math.fsum(p["qty"] * p["mark"] for p in snap["positions"].values())
        assert pf.equity == pytest.approx(pf.cash + held, abs=1e-7)
        account = pf.realized_pnl + pf.unrealized_pnl - pf.fees_paid
        assert account == pytest.approx(pf.equity - pf.starting_cash, abs=1e-7)
        rows = book.table(snap["marks"])
        whole = math.fsum(r["realized_pnl"] + r["unrealized_pnl"] for r in rows)
        assert whole == pytest.approx(account, abs=1e-6)
        assert math.fsum(r["fees"] for r in rows) == pytest.approx(pf.fees_paid, abs=1e-9)
        shown = sum(p.unrealized_pnl for p in pf.positions.values())
        assert shown == pytest.approx(pf.unrealized_pnl, abs=1e-7)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([Side.BUY, Side.SELL]),
            st.sampled_from([0.1, 0.2, 0.3, 0.5, 1.0, 1.7]),
            st.sampled_from([99.7, 100.0, 101.3, 120.0]),
            st.sampled_from([0.0, 0.013, 0.5]),
            st.sampled_from(["o1", "o2", "o3"]),  # fills of one order come in parts
        ),
        min_size=1,
        max_size=15,
    )
)
def test_fifo_round_trips_add_up_to_the_account_once_flat(
    steps: list[tuple[Side, float, float, float, str]],
) -> None:
    """`journal --trades` (FIFO lots) and the performance screen (average cost) split the
    profit differently, but once the strategy is flat both sum to the account's realized PnL
    less every fee, and no entry is left open."""
    pf = Portfolio(1e9)
    book = PerformanceBook()
    pairing = RoundTrips()
    fills = [
        replace(fill(n, side, qty, px, fee), client_order_id=order)
        for n, (side, qty, px, fee, order) in enumerate(steps)
    ]
    for f in fills:
        pf.apply_fill(f)
    left = pf.positions["BTC/USDT"].qty
    if left:
        side = Side.SELL if left > 0 else Side.BUY
        close = fill(len(fills), side, abs(left), 100.0, 0.2)
        fills.append(close)
        pf.apply_fill(close)
    trips = []
    for f in fills:
        book.on_fill(f)
        trips.extend(pairing.add({**f.to_dict(), "side": f.side.value}))
    trips.extend(pairing.finish())
    net = pf.realized_pnl - pf.fees_paid
    assert pairing.open_lots() == 0
    assert math.fsum(t.pnl for t in trips) == pytest.approx(net, abs=1e-6)
    (row,) = book.table({})
    assert row["realized_pnl"] == pytest.approx(net, abs=1e-6)
    assert not row["positions"]


def test_fifo_round_trips_by_hand() -> None:
    """Two entries, a partial exit and a flip, fees split by quantity (FIFO)."""
    pairing = RoundTrips()
    fills = [
        fill(1, Side.BUY, 1.0, 100.0, 1.0),
        fill(2, Side.BUY, 1.0, 110.0, 1.0),
        fill(3, Side.SELL, 1.5, 120.0, 3.0),  # closes lot 1 and half of lot 2
        fill(4, Side.SELL, 1.5, 90.0, 1.5),  # closes the rest of lot 2, opens 1.0 short
        fill(5, Side.BUY, 1.0, 80.0, 0.5),
    ]
    trips = [t for f in fills for t in pairing.add({**f.to_dict(), "side": f.side.value})]
    got = [(t.side, t.qty, t.entry_price, t.exit_price, t.fees, t.gross_pnl) for t in trips]
    assert got == pytest.approx(
        [
            ("long", 1.0, 100.0, 120.0, 1.0 + 2.0, 20.0),
            ("long", 0.5, 110.0, 120.0, 0.5 + 1.0, 5.0),
            ("long", 0.5, 110.0, 90.0, 0.5 + 0.5, -10.0),
            ("short", 1.0, 90.0, 80.0, 1.0 + 0.5, 10.0),
        ]
    )
    assert pairing.open_lots() == 0
    assert trips[0].holding_s == 2.0


def test_day_pnl_starts_at_the_equity_marked_at_midnight() -> None:
    """A position held across 00:00 UTC: the new day starts at the equity of the last mark
    before midnight, and a restart the same day keeps that start."""
    day0 = 20_000 * NS_PER_DAY
    pf = Portfolio(10_000.0)
    pf.on_time(day0 + 5)
    pf.apply_fill(fill(1, Side.BUY, 2.0, 100.0, 0.4, ts=day0 + 10))
    pf.mark("BTC/USDT", 105.0, day0 + NS_PER_DAY - 1)
    assert pf.daily_pnl == pytest.approx(10.0 - 0.4)
    assert pf.on_time(day0 + NS_PER_DAY)
    assert pf.day_start_equity == pytest.approx(10_009.6)
    pf.mark("BTC/USDT", 101.0, day0 + NS_PER_DAY + 1)
    assert pf.daily_pnl == pytest.approx(-8.0)
    again = Portfolio.restore(
        10_000.0,
        [fill(1, Side.BUY, 2.0, 100.0, 0.4, ts=day0 + 10)],
        {"BTC/USDT": 101.0},
        peak_equity=pf.peak_equity,
        day_start_equity=pf.day_start_equity,
        day_ts=day0 + NS_PER_DAY + 1,
        marks_ts=day0 + NS_PER_DAY + 1,
    )
    assert not again.on_time(day0 + NS_PER_DAY + 2)  # the same day: no new start
    assert again.daily_pnl == pytest.approx(pf.daily_pnl)
    assert again.drawdown == pytest.approx(pf.drawdown)


def test_exposure_counts_shorts() -> None:
    pf = Portfolio(10_000.0)
    pf.apply_fill(fill(1, Side.SELL, 2.0, 100.0))
    pf.apply_fill(fill(2, Side.BUY, 1.0, 50.0, symbol="ETH/USDT"))
    assert pf.gross_exposure == pytest.approx(250.0)
    book = PerformanceBook()
    book.on_fill(fill(1, Side.SELL, 2.0, 100.0))
    (row,) = book.table({"BTC/USDT": 110.0})
    assert row["exposure"] == pytest.approx(220.0)
    assert row["unrealized_pnl"] == pytest.approx(-20.0)


async def test_a_flattens_remainder_is_not_called_a_strategy_gone_from_the_config() -> None:
    """What no strategy held is flattened under ``operator`` (or ``flatten`` for the kill
    switch): the performance screen listed it as "gone: not in the config now", sending a
    person to look for a strategy that never existed."""
    from cockpit.tui.table import KeyedTable
    from tests.test_tui_performance import Host, cells, snapshot

    snap = snapshot()
    first = snap["performance"]["strategies"][0]
    for sid in ("operator", "flatten", "retired"):
        snap["performance"]["strategies"].append({**first, "strategy": sid})
    async with Host(snap).run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        table = pilot.app.screen.query_one("#perf-strategy-table", KeyedTable)
        assert cells(table, "operator")[1].startswith("flatten an operator's flatten")
        assert cells(table, "flatten")[1] == "flatten kill switch's flatten"
        assert cells(table, "retired")[1].startswith("gone")


def test_journal_trades_show_the_quantity_to_the_venues_precision() -> None:
    """`journal --trades` printed the quantity with six significant digits: 0.12345678 BTC
    read 0.123457, a figure that matches nothing at the venue."""
    from cockpit.history_cli import format_trades

    pairing = RoundTrips()
    trips = pairing.add({**fill(1, Side.BUY, 0.12345678, 60_000.0).to_dict(), "side": "buy"})
    trips += pairing.add({**fill(2, Side.SELL, 0.12345678, 60_100.0).to_dict(), "side": "sell"})
    (row,) = [line for line in format_trades(trips, 0) if "BTC/USDT" in line]
    assert " 0.12345678 " in row, row
    assert "0.123457 " not in row


# --------------------------------------------------------------------------- the UTC day

harnesses = test_safety_engine.harnesses  # the fixture that stops every engine a test starts


async def test_the_day_starts_at_midnight_even_when_no_quote_comes(harnesses, tmp_path) -> None:
    """The day rolled only on a quote: past 00:00 UTC with a quiet market (or the feed down),
    day PnL (status "today", the fleet's day PnL, the daily-loss gauge, cockpit_daily_pnl)
    still counted from yesterday's start. The clock tick now starts the day."""
    h = await start(harnesses, tmp_path)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    await h.feed(BTC, 60_000.0)
    pf = h.core.portfolio
    assert pf.positions[BTC].qty > 0
    await h.feed(BTC, 61_000.0)
    assert pf.daily_pnl > 0  # the position gained today
    midnight = (h.t // NS_PER_DAY + 1) * NS_PER_DAY
    await h.publish(h.core.tick(midnight - 1))  # just before: still today
    assert pf.day == (midnight - 1) // NS_PER_DAY
    assert pf.daily_pnl > 0
    await h.publish(h.core.tick(midnight + 2 * 1_000_000_000))  # no quote since midnight
    assert pf.day == midnight // NS_PER_DAY
    assert pf.daily_pnl == 0.0
    snap = h.engine.snapshot(trace=0, curve=0)
    assert snap["portfolio"]["daily_pnl"] == 0.0
    assert "today +0.00" in format_status(snap)
    h.t = midnight + 3 * 1_000_000_000
    await h.feed(BTC, 60_000.0)  # the first quote of the day: a loss of today's
    assert pf.daily_pnl == pytest.approx(pf.positions[BTC].qty * -1_000.0)


def test_an_open_backtest_trip_has_no_exit_price_in_json() -> None:
    """`backtest --json` listed a trip still open at the end with "exit_price": 0.0: an open
    long that reads as sold at zero. It is null until the trip has an exit."""
    from engine.metrics import round_trips

    fills = [
        fill(1, Side.BUY, 1.0, 100.0, 0.1),
        fill(2, Side.SELL, 1.0, 110.0, 0.1),
        fill(3, Side.BUY, 2.0, 105.0, 0.2),
        fill(4, Side.SELL, 0.5, 108.0, 0.05),
        fill(5, Side.SELL, 1.0, 120.0, 0.1, symbol="ETH/USDT"),
    ]
    closed, partial, untouched = (t.to_dict() for t in round_trips(fills))
    assert closed["exit_price"] == 110.0 and not closed["open"]
    assert partial["exit_price"] == 108.0 and partial["open"]
    assert untouched["exit_price"] is None and untouched["open"]


def test_a_tiny_fee_or_loss_is_not_shown_as_nothing() -> None:
    """The panes' money cells rounded to cents: a strategy that paid 0.004 in fees showed
    fees "0.00" and rPnL "-0.00" (the backtest report already kept two significant digits)."""
    from cockpit.tui.fmt import fmt_compact

    assert fmt_compact(0.004) == "0.004"
    assert str(pnl_text(-0.004, compact=True)) == "-0.004"
    assert str(pnl_text(0.0004, compact=True)) == "+0.0004"
    # At and above half a cent, cents as before; zero is plain.
    assert fmt_compact(0.005) == "0.01"
    assert fmt_compact(1_999.44) == "1,999.44"
    assert fmt_compact(0.0) == fmt_compact(-0.0) == "0.00"


def _pair(fills: list[Fill]) -> tuple[list[Any], RoundTrips]:
    pairing = RoundTrips()
    trips = [t for f in fills for t in pairing.add({**f.to_dict(), "side": f.side.value})]
    return trips + pairing.finish(), pairing


def test_an_order_filled_in_parts_is_one_round_trip() -> None:
    """`journal --trades` paired fills, not orders: a buy the venue filled in three parts and a
    sell filled in two made six "round trips" (and a win rate over them). One entry order and
    one exit order are one trade, at the parts' average prices, fees all counted."""

    def part(n: int, order: str, side: Side, qty: float, price: float, fee: float) -> Fill:
        return Fill(
            f"f{n}", order, "s1", "BTC/USDT", "sim", side, qty, price, fee, Liquidity.TAKER, n
        )

    fills = [
        part(1, "buy-1", Side.BUY, 0.2, 100.0, 0.02),
        part(2, "buy-1", Side.BUY, 0.3, 101.0, 0.03),
        part(3, "buy-1", Side.BUY, 0.5, 102.0, 0.05),
        part(4, "sell-1", Side.SELL, 0.4, 110.0, 0.04),
        part(5, "sell-1", Side.SELL, 0.6, 111.0, 0.06),
    ]
    trips, pairing = _pair(fills)
    assert len(trips) == 1 and pairing.open_lots() == 0
    (t,) = trips
    assert t.qty == pytest.approx(1.0)
    assert t.entry_price == pytest.approx((0.2 * 100 + 0.3 * 101 + 0.5 * 102) / 1.0)
    assert t.exit_price == pytest.approx((0.4 * 110 + 0.6 * 111) / 1.0)
    assert t.fees == pytest.approx(0.2)
    gross = (0.4 * 110 + 0.6 * 111) - (0.2 * 100 + 0.3 * 101 + 0.5 * 102)
    assert t.pnl == pytest.approx(gross - 0.2)
    assert (t.entry_ts, t.exit_ts, t.entry_fill, t.exit_fill) == (1, 5, "f1", "f4")
    # Two entry orders are two trades, closed FIFO by one exit order filled in parts.
    fills = [
        part(1, "a", Side.BUY, 1.0, 100.0, 0.0),
        part(2, "b", Side.BUY, 1.0, 110.0, 0.0),
        part(3, "x", Side.SELL, 0.5, 120.0, 0.0),
        part(4, "x", Side.SELL, 1.0, 120.0, 0.0),  # the rest of a, half of b
        part(5, "y", Side.SELL, 0.5, 130.0, 0.0),  # another order: another trade
    ]
    trips, pairing = _pair(fills)
    assert [(t.entry_price, t.exit_price, t.qty) for t in trips] == [
        (100.0, 120.0, 1.0),
        (110.0, 120.0, 0.5),
        (110.0, 130.0, 0.5),
    ]
    assert pairing.open_lots() == 0


def test_an_open_backtest_trip_that_added_after_a_partial_exit_is_marked_at_its_cost() -> None:
    """The open trip was marked against the average of all its entries (103.33 below), not
    the cost of what it still held (105, the portfolio's): the report's "1 open (+21.67
    marked)" beside an account up 20.00, and closed trips + open trips != PnL."""
    from engine.metrics import compute_metrics

    fills = [
        fill(1, Side.BUY, 1.0, 100.0, 0.1),
        fill(2, Side.SELL, 0.5, 120.0, 0.1),
        fill(3, Side.BUY, 0.5, 110.0, 0.1),
    ]
    pf = Portfolio(1_000.0)
    for f in fills:
        pf.apply_fill(f)
    pf.mark("BTC/USDT", 115.0, 4)
    ts = [0, 1, 2, 3, 4]
    equity = [1_000.0, 1_000.0, 1_000.0, 1_000.0, pf.equity]
    metrics, _trips = compute_metrics(
        ts, equity, [0, 1, 1, 1, 1], fills, [f.price for f in fills], 60, {"BTC/USDT": 115.0}
    )
    assert metrics.open_trades == 1 and metrics.trades == 0
    assert metrics.open_trade_pnl == pytest.approx(pf.equity - 1_000.0)
    assert metrics.open_trade_pnl == pytest.approx(metrics.pnl)
