"""Per-strategy performance, profit per UTC day and order-path latency: the figures a trader
reads every morning must add up to what the account did."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.performance import DAY_NS, LATENCY_WINDOW, LatencyTracker, PerformanceBook
from engine.portfolio import Portfolio
from engine.types import Fill, Liquidity, Side

_ids = itertools.count(1)


def fill(
    side: str,
    qty: float,
    price: float,
    fee: float = 0.0,
    *,
    strategy: str = "ema",
    symbol: str = "BTC/USDT",
    ts: int = 0,
) -> Fill:
    n = next(_ids)
    return Fill(
        f"f{n}", f"o{n}", strategy, symbol, "sim", Side(side), qty, price, fee, Liquidity.TAKER, ts
    )


def test_a_winning_round_trip_counts_net_of_fees() -> None:
    book = PerformanceBook()
    assert book.on_fill(fill("buy", 1.0, 100.0, 0.10)) is None
    trip = book.on_fill(fill("sell", 1.0, 110.0, 0.11))
    assert trip == pytest.approx(9.79)
    row = book.table({})[0]
    assert row["realized_pnl"] == pytest.approx(9.79)
    assert row["fees"] == pytest.approx(0.21)
    assert (row["round_trips"], row["wins"], row["win_rate"]) == (1, 1, 1.0)
    assert row["positions"] == {} and row["exposure"] == 0.0
    assert book.daily_pnl() == [{"day": "1970-01-01", "pnl": pytest.approx(9.79)}]


def test_a_trip_that_only_pays_fees_is_a_loss() -> None:
    book = PerformanceBook()
    book.on_fill(fill("buy", 1.0, 100.0, 0.1))
    assert book.on_fill(fill("sell", 1.0, 100.0, 0.1)) == pytest.approx(-0.2)
    row = book.table({})[0]
    assert (row["round_trips"], row["wins"], row["win_rate"]) == (1, 0, 0.0)


def test_a_partial_close_does_not_end_the_trip() -> None:
    book = PerformanceBook()
    book.on_fill(fill("buy", 2.0, 100.0))
    assert book.on_fill(fill("sell", 1.0, 90.0)) is None
    row = book.table({"BTC/USDT": 95.0})[0]
    assert row["round_trips"] == 0 and row["win_rate"] is None
    assert row["realized_pnl"] == pytest.approx(-10.0)
    assert row["unrealized_pnl"] == pytest.approx(-5.0)
    assert row["exposure"] == pytest.approx(95.0)
    assert book.on_fill(fill("sell", 1.0, 130.0)) == pytest.approx(20.0)
    assert book.table({})[0]["round_trips"] == 1


def test_a_flip_ends_one_trip_and_opens_the_next_at_the_fill_price() -> None:
    book = PerformanceBook()
    book.on_fill(fill("buy", 1.0, 100.0, 0.3))
    # Sell 3: closes 1 (a third of the fee) and opens a 2 short (two thirds of it).
    assert book.on_fill(fill("sell", 3.0, 110.0, 0.9)) == pytest.approx(10.0 - 0.3 - 0.3)
    row = book.table({"BTC/USDT": 100.0})[0]
    assert row["positions"] == {"BTC/USDT": -2.0}
    assert row["unrealized_pnl"] == pytest.approx(20.0)
    # The short's trip already carries its opening fee share.
    assert book.on_fill(fill("buy", 2.0, 100.0, 0.0)) == pytest.approx(20.0 - 0.6)


def test_strategies_on_the_same_symbol_are_kept_apart() -> None:
    book = PerformanceBook()
    book.on_fill(fill("buy", 1.0, 100.0, strategy="a"))
    book.on_fill(fill("sell", 1.0, 100.0, strategy="b"))
    rows = {r["strategy"]: r for r in book.table({"BTC/USDT": 90.0})}
    assert rows["a"]["unrealized_pnl"] == pytest.approx(-10.0)
    assert rows["b"]["unrealized_pnl"] == pytest.approx(10.0)
    assert rows["a"]["round_trips"] == rows["b"]["round_trips"] == 0


def test_slippage_is_against_the_mid_and_compared_with_the_model() -> None:
    book = PerformanceBook()
    book.on_fill(fill("buy", 2.0, 100.05), mid=100.0, model_bps=3.0)  # paid 5 bps
    book.on_fill(fill("sell", 2.0, 99.99), mid=100.0, model_bps=3.0)  # paid 1 bp
    book.on_fill(fill("buy", 1.0, 100.0))  # from the journal: no mid, not counted
    row = book.table({})[0]
    assert row["slippage_bps"] == pytest.approx(3.0)
    assert row["model_bps"] == pytest.approx(3.0)
    assert row["slippage_cost"] == pytest.approx(0.1 + 0.02)
    assert row["fills"] == 3


def test_profit_is_booked_on_the_utc_day_of_the_fill() -> None:
    book = PerformanceBook()
    assert book.daily_pnl() == []
    book.on_fill(fill("buy", 1.0, 100.0, ts=DAY_NS - 2))
    book.on_fill(fill("sell", 1.0, 101.0, ts=DAY_NS - 1))  # the last nanosecond of day 0
    book.on_fill(fill("buy", 1.0, 100.0, ts=DAY_NS))
    book.on_fill(fill("sell", 1.0, 98.0, 0.5, ts=DAY_NS))  # the first of day 1
    assert book.daily_pnl() == [
        {"day": "1970-01-01", "pnl": pytest.approx(1.0)},
        {"day": "1970-01-02", "pnl": pytest.approx(-2.5)},
    ]
    assert book.daily_pnl(days=1) == [{"day": "1970-01-02", "pnl": pytest.approx(-2.5)}]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["buy", "sell"]),
            st.floats(0.001, 5.0),
            st.floats(50.0, 150.0),
            st.floats(0.0, 0.5),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_one_strategys_figures_match_the_account(trades: list[tuple[str, float, float, float]]):
    """With one strategy the per-strategy book is the account: realized PnL, fees and the day's
    profit agree with the portfolio's whatever the fills (opens, adds, partial closes, flips)."""
    book = PerformanceBook()
    account = Portfolio(1_000_000.0)
    for side, qty, price, fee in trades:
        f = fill(side, qty, price, fee)
        book.on_fill(f)
        account.apply_fill(f)
    row = book.table({})[0]
    assert row["fees"] == pytest.approx(account.fees_paid, abs=1e-9)
    assert row["realized_pnl"] == pytest.approx(
        account.realized_pnl - account.fees_paid, rel=1e-9, abs=1e-6
    )
    assert sum(d["pnl"] for d in book.daily_pnl()) == pytest.approx(row["realized_pnl"], abs=1e-6)
    assert 0 <= row["wins"] <= row["round_trips"]


def test_latency_steps_and_their_percentiles() -> None:
    lat = LatencyTracker()
    for i in range(100):
        t = i * 1_000_000_000
        lat.mark(f"o{i}", "quote", t)
        lat.mark(f"o{i}", "decision", t + 1_000)
        lat.mark(f"o{i}", "durable", t + 1_000 + (i + 1) * 1_000_000)  # 1..100 ms
        lat.mark(f"o{i}", "acknowledged", t + 200_000_000)
        lat.mark(f"o{i}", "fill", t + 300_000_000)
    p = lat.percentiles()
    assert p["decision>durable"]["n"] == 100
    assert p["decision>durable"]["p50_ms"] == pytest.approx(50.0)
    assert p["decision>durable"]["p99_ms"] == pytest.approx(99.0)  # not the maximum
    assert p["quote>fill"]["p99_ms"] == pytest.approx(300.0)


def test_latency_ignores_repeats_and_forgets_what_never_fills() -> None:
    lat = LatencyTracker(window=10)
    lat.mark("a", "quote", 0)
    lat.mark("a", "decision", 5_000_000)
    lat.mark("a", "decision", 9_000_000)  # a repeat keeps the first moment
    assert lat.percentiles()["quote>decision"]["p50_ms"] == pytest.approx(5.0)
    assert lat.percentiles()["durable>acknowledged"] == {"n": 0, "p50_ms": None, "p99_ms": None}
    with pytest.raises(ValueError, match="unknown latency stage 'sent'"):
        lat.mark("a", "sent", 1)
    for i in range(1_000):  # denied orders never fill: bounded, not a leak
        lat.mark(f"d{i}", "quote", i)
    assert len(lat._open) <= 40
    lat.finish("a")
    assert "a" not in lat._open
    assert LATENCY_WINDOW >= 100


async def trade_until_fills(engine: Any, fills: int) -> None:
    """Run the simulated market through ``engine`` until it has ``fills`` fills, committed."""
    feed = engine.source.events()
    for _ in range(40):
        await engine.process(itertools.islice(feed, 5_000))
        if engine.core.counters["fills"] >= fills:
            break
    await engine.journal.flush()


async def test_the_snapshot_shows_each_strategy_its_days_and_the_order_paths_latency(
    tmp_path,
) -> None:
    """A trading engine's snapshot carries the performance table, the daily profit and the
    latency steps; the strategies' profit adds up to the account's."""
    from engine.runtime import Engine
    from tests.conftest import fast_config

    engine = Engine(fast_config(tmp_path), tmp_path)
    await engine.start()
    try:
        await trade_until_fills(engine, 6)
        snap = engine.snapshot()
    finally:
        await engine.stop()
    perf = snap["performance"]
    assert engine.core.counters["fills"] >= 6
    assert {r["strategy"] for r in perf["strategies"]} <= {s["id"] for s in snap["strategies"]}
    assert sum(r["fills"] for r in perf["strategies"]) == engine.core.counters["fills"]
    # Strategies on one symbol may hold opposite sides, so their realized profit need not be
    # the account's; at the same marks, their whole profit (realized + open - fees) is.
    marks = {p["symbol"]: p["mark"] for p in snap["positions"]}
    rows = engine.core.performance.table(marks)
    total = sum(r["realized_pnl"] + r["unrealized_pnl"] for r in rows)
    account = snap["portfolio"]
    held = sum(p["unrealized_pnl"] for p in snap["positions"])
    assert total == pytest.approx(account["realized_pnl"] - account["fees_paid"] + held, abs=1e-6)
    net = sum(r["realized_pnl"] for r in rows)
    assert sum(d["pnl"] for d in perf["daily"]) == pytest.approx(net, abs=1e-6)
    assert all(r["slippage_bps"] is not None for r in perf["strategies"])
    steps = perf["latency"]
    for step in ("quote>decision", "decision>durable", "durable>acknowledged", "quote>fill"):
        assert steps[step]["n"] >= 1, step
        assert 0 <= steps[step]["p50_ms"] <= steps[step]["p99_ms"]
