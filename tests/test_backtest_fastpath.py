"""The backtest's fast path changes nothing: ``EngineCore.on_bars`` against ``on_bar`` per bar.

``on_bars`` settles for a whole run of bars what ``on_bar`` asks per bar (validation, day roll,
timers, loss limits) and lets the strategy ``scan`` the columns. Each backtest here runs twice,
once as is and once with ``on_bars`` refusing every bar (so every bar goes through ``on_bar``,
the live engine's path), and everything must match to the last bit: fills, equity curve,
counters, events, and the core's own state (trace, validator, breakers, portfolio, indicators).
The data is a seeded random walk with every kind of bad row, day boundaries and gaps; the
configs trip the kill switch and the breakers (with automatic re-arm) on the way.
"""

from __future__ import annotations

import math
import random
from dataclasses import fields, replace
from typing import Any

import numpy as np
import pytest

from engine import backtest as bt
from engine.backtest import BacktestOptions, MarketData, build_backtest_config
from engine.breakers import BreakerBoard
from engine.config import Config, parse_config
from engine.core import EngineCore
from engine.indicators import ATR
from engine.marketdata.validate import QuoteValidator
from engine.portfolio import Portfolio
from engine.strategies.builtin import EMACross
from engine.types import (
    NS_PER_SECOND,
    Bar,
    BarSeries,
    Fill,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
    PositionView,
    Side,
)
from tests.conftest import default_dict, merge

T0 = 1_704_067_200 * NS_PER_SECOND - 3 * 3600 * NS_PER_SECOND  # 21:00 UTC: days roll early
MIN = 60 * NS_PER_SECOND


def walk(n: int, seed: int, *, bad: bool = True, vol: float = 0.004) -> MarketData:
    """A 1-minute random walk; with ``bad``, every kind of row the validator rejects, a
    repeated and a backwards timestamp, one-bar price spikes, absurd prices, and gaps of
    minutes to hours."""
    rng = random.Random(seed)
    ts, o_, h_, l_, c_, v_ = [], [], [], [], [], []
    t, price = T0, 30_000.0
    for i in range(n):
        op = price
        price *= math.exp(rng.gauss(0.0, vol))
        hi = max(op, price) * (1 + abs(rng.gauss(0, vol / 3)))
        lo = min(op, price) * (1 - abs(rng.gauss(0, vol / 3)))
        row = [t, op, hi, lo, price, rng.lognormvariate(10, 0.5)]
        if bad and i > 40 and rng.random() < 0.02:
            kind = rng.randrange(10)
            if kind == 0:
                row[4] = math.nan
            elif kind == 1:
                row[2] = math.inf
            elif kind == 2:
                row[3] = 0.0
            elif kind == 3:
                row[5] = -1.0
            elif kind == 4:
                row[2] = row[4] * 0.99  # high below close
            elif kind == 5:
                row[0] = t - 5 * MIN  # backwards in time
            elif kind == 6:
                row[0] = t - MIN  # the previous bar's time again (a duplicate row)
            elif kind == 7:
                row[1:5] = [x * 20 for x in row[1:5]]  # a price jump (a spike of one bar)
            elif kind == 8:
                row[1:5] = [1e308] * 4  # an absurd price
            else:
                t += rng.choice([5, 90, 600]) * MIN  # a gap
                row[0] = t
        for col, x in zip((ts, o_, h_, l_, c_, v_), row, strict=True):
            col.append(x)
        t += MIN
    return MarketData.from_bars(ts, o_, h_, l_, c_, v_, symbol="BTC/USDT", timeframe_s=60)


def config(**over: Any) -> Config:
    return parse_config(merge(default_dict(), over))


RELAXED = config(
    safety={
        "breakers": {"consecutive_losses": 10_000, "global_consecutive_losses": 10_000},
        "kill_switch": {"daily_loss_limit_pct": 100.0, "drawdown_limit_pct": 100.0},
    }
)
# Losing streaks pause the strategy and re-arm by themselves after ten minutes; the kill
# switch engages at a 1% daily loss: both happen within a few hundred bars here.
TRIPPY = config(
    safety={
        "breakers": {"consecutive_losses": 2, "rearm": "auto", "cooldown_s": 600.0},
        "kill_switch": {"daily_loss_limit_pct": 1.0, "drawdown_limit_pct": 2.0},
    }
)


def run_both(
    monkeypatch: pytest.MonkeyPatch, base: Config, data: MarketData, opts: BacktestOptions
) -> None:
    """Run the backtest with and without on_bars; assert identical results and state."""
    runs: list[Any] = []
    real_init = bt.BacktestRun.__init__

    def keep(self: Any, *a: Any, **k: Any) -> None:
        real_init(self, *a, **k)
        runs.append(self)

    monkeypatch.setattr(bt.BacktestRun, "__init__", keep)
    monkeypatch.setattr(bt.BacktestRun, "trace_size", 100_000)  # the trace compared too
    fast = bt.run_backtest(base, data, opts)
    calls = {"n": 0}
    real_on_bars = EngineCore.on_bars

    def counted(self: EngineCore, *a: Any) -> Any:
        k, out = real_on_bars(self, *a)
        calls["n"] += k - a[1] + (out is not None)
        return k, out

    monkeypatch.setattr(EngineCore, "on_bars", lambda self, bars, start, stop, eq: (start, None))
    slow = bt.run_backtest(base, data, opts)
    monkeypatch.setattr(EngineCore, "on_bars", counted)
    again = bt.run_backtest(base, data, opts)
    assert calls["n"] > len(data) // 2, "the fast path should carry most bars"
    assert result_view(fast) == result_view(slow) == result_view(again)
    assert state_view(runs[0]) == state_view(runs[1]) == state_view(runs[2])


def result_view(r: Any) -> Any:
    return (
        [repr(f) for f in r.fills],
        r.fill_refs,
        r.fill_realized,
        r.fill_positions,
        r.ts.tolist(),
        r.equity.tolist(),
        r.position.tolist(),
        r.counters,
        dict(r.denied),
        dict(r.rejected),
        r.safety_notes,
        [repr(e) for e in r.events],
        r.unfilled,
        r.final_portfolio,
        repr(r.metrics.to_dict()),
    )


def state_view(run: Any) -> Any:
    core: EngineCore = run.core
    v = core.validator
    slots = []
    for slot in core.slots.values():
        strat = slot.strategy
        indicators = {
            k: {s: getattr(x, s) for s in type(x).__slots__}
            for k, x in vars(strat).items()
            if hasattr(type(x), "__slots__") and hasattr(x, "update")
        }
        plain = {k: x for k, x in vars(strat).items() if isinstance(x, int | float | type(None))}
        atr = {s: getattr(slot.atr, s) for s in ATR.__slots__}
        exit_atr = (
            None
            if slot.exit_atr is None
            else repr({s: getattr(slot.exit_atr, s) for s in ATR.__slots__})
        )
        slots.append(
            (repr(indicators), repr(plain), repr(atr), slot.position, exit_atr, repr(slot.exits))
        )
    b = core.breakers
    return (
        [repr(e) for e in core.trace],
        (v.accepted, dict(v.rejected), dict(v._bar_ts), dict(v._bar_close), v.last_reject),
        (core.now, core._next_clock_ts, core._next_day_ts, core._next_marks_ts),
        repr(core.quotes),
        repr(b.status()),
        (b.now, dict(b._last_quote), sorted(b._stale_symbols)),
        repr(core.portfolio.snapshot()),
        core.portfolio.last_mark_ts,
        repr(core.safety.state),
        core.loss_override,
        slots,
        core.counters,
    )


@pytest.mark.parametrize("fill", ["close", "live", "next-open"])
@pytest.mark.parametrize("seed", [1, 2])
def test_ema_cross_same_with_and_without_on_bars(
    monkeypatch: pytest.MonkeyPatch, fill: str, seed: int
) -> None:
    data = walk(3000, seed)
    opts = BacktestOptions(
        strategy="ema_cross",
        params={"fast": 5, "slow": 20},
        qty=0.05,
        fill=fill,
        slippage="model" if seed == 1 else "none",
        warmup=50,
        allow_short=seed == 2,
    )
    run_both(monkeypatch, RELAXED, data, opts)


@pytest.mark.parametrize("kind", ["ema_cross", "rsi_reversion", "donchian_breakout", "scripted"])
def test_breakers_and_kill_switch_trip_the_same_way(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Pauses, automatic re-arms after the cooldown and the automatic kill, on every strategy
    (rsi_reversion sizes by the core's ATR; scripted has no scan of its own)."""
    data = walk(4000, 7, vol=0.006)
    params: dict[str, Any] = {}
    strategy = kind
    if kind == "scripted":
        strategy = "tests.test_backtest:Scripted"
        params = {"buy": list(range(10, 4000, 37)), "sell": list(range(25, 4000, 37))}
    opts = BacktestOptions(strategy=strategy, params=params, warmup=30, allow_short=True)
    if kind != "rsi_reversion":
        opts = replace(opts, fraction=0.3)
    run_both(monkeypatch, TRIPPY, data, opts)
    result = bt.run_backtest(TRIPPY, data, opts)
    if kind == "ema_cross":  # the scenario really trips things
        notes = " ".join(result.safety_notes)
        assert "re-armed" in notes and "kill_switch" in notes


@pytest.mark.parametrize("fill", ["close", "live", "next-open"])
def test_exits_same_with_and_without_on_bars(monkeypatch: pytest.MonkeyPatch, fill: str) -> None:
    """Protective exits go bar by bar while armed; the runs between keep the trailing stop's
    ATR as on_bar does, so every exit fires at the same bar and level either way."""
    data = walk(3000, 5, vol=0.006)
    opts = BacktestOptions(
        strategy="ema_cross",
        params={"fast": 5, "slow": 20},
        qty=0.05,
        fill=fill,
        warmup=50,
        stop_loss_pct=1.5,
        take_profit_pct=2.0,
        trailing_atr=1.5,
        atr_period=7,
        time_stop_bars=12,
    )
    run_both(monkeypatch, RELAXED, data, opts)
    result = bt.run_backtest(RELAXED, data, opts)
    assert len({k for k in result.exits if k != "signal"}) >= 2, result.exits
    assert "trailing_stop" in result.exits, result.exits


def test_no_breakers_and_no_limits_same(monkeypatch: pytest.MonkeyPatch) -> None:
    data = walk(2500, 3)
    opts = BacktestOptions(
        strategy="ema_cross", fraction=0.5, breakers=False, limits=False, fill="live"
    )
    run_both(monkeypatch, TRIPPY, data, opts)


def test_clean_data_goes_through_on_bars_almost_entirely(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = walk(5000, 4, bad=False)
    opts = BacktestOptions(strategy="ema_cross", qty=0.05, fill="close", warmup=100)
    slow_bars = []
    real_step = bt.BacktestRun.step

    def step(self: Any, bar: Bar, *a: Any) -> None:
        slow_bars.append(bar)
        real_step(self, bar, *a)

    monkeypatch.setattr(bt.BacktestRun, "step", step)
    result = bt.run_backtest(RELAXED, data, opts)
    assert result.metrics.fills > 50
    # Only the first bar and the first bar of each UTC day need on_bar.
    assert len(slow_bars) <= 2 + (5000 * MIN) // (86_400 * NS_PER_SECOND)


# ------------------------------------------------------------------ the pieces


def test_ema_cross_scan_equals_on_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    data = walk(2000, 5, bad=False, vol=0.002)
    series = BarSeries("BTC/USDT", 60, "replay", data.ts, *data.cols)
    for position in (PositionView(), PositionView(0.1, 30_000.0), PositionView(-0.1, 30_000.0)):
        a = EMACross("e", "BTC/USDT", {"fast": 3, "slow": 9}, allow_short=True)
        b = EMACross("e", "BTC/USDT", {"fast": 3, "slow": 9}, allow_short=True)
        expected = [(i, s) for i in range(len(series)) if (s := a.on_bar(series.bar(i), position))]
        got = []
        i, rng = 0, random.Random(9)
        while i < len(series):
            k, signal = b.scan(series, i, min(len(series), i + rng.randrange(1, 60)), position)
            if signal is not None:
                got.append((k, signal))
                i = k + 1
            else:
                i = k
        assert got == expected and len(got) > 20
        for x, y in ((a._fast, b._fast), (a._slow, b._slow), (a._atr, b._atr)):
            assert [getattr(x, s) for s in type(x).__slots__] == [
                getattr(y, s) for s in type(y).__slots__
            ]
        assert a._last_sign == b._last_sign


def test_atr_update_many_equals_update() -> None:
    rng = np.random.default_rng(3)
    c = (100 + rng.normal(0, 1, 500).cumsum()).tolist()
    h = [x + abs(d) for x, d in zip(c, rng.normal(0, 1, 500), strict=True)]
    lo = [x - abs(d) for x, d in zip(c, rng.normal(0, 1, 500), strict=True)]
    a, b = ATR(14), ATR(14)
    for i in range(500):
        a.update(h[i], lo[i], c[i])
    for start, stop in ((0, 3), (3, 20), (20, 20), (20, 377), (377, 500)):
        b.update_many(h, lo, c, start, stop)
    assert [getattr(a, s) for s in ATR.__slots__] == [getattr(b, s) for s in ATR.__slots__]


def fill(qty: float, side: Side, price: float) -> Fill:
    return Fill("f", "o", "s", "BTC/USDT", "v", side, qty, price, 0.1, Liquidity.TAKER, 1)


@pytest.mark.parametrize("qty,side", [(0.5, Side.BUY), (0.5, Side.SELL), (0.0, Side.BUY)])
def test_portfolio_mark_run_equals_mark(qty: float, side: Side) -> None:
    prices = (30_000 + np.random.default_rng(1).normal(0, 50, 300).cumsum()).tolist()
    a, b = Portfolio(100_000.0), Portfolio(100_000.0)
    for p in (a, b):
        p.mark("ETH/USDT", 2000.0, 1)
        if qty:
            p.apply_fill(fill(qty, side, 30_000.0))
    eq_a: list[float] = []
    for i, price in enumerate(prices):
        a.mark("BTC/USDT", price, i)
        eq_a.append(a.equity)
    eq_b: list[float] = []
    b.mark_run("BTC/USDT", prices, 0, 100, 99, eq_b)
    b.mark_run("BTC/USDT", prices, 100, 300, 299, eq_b)
    assert eq_a == eq_b
    assert repr(a.snapshot()) == repr(b.snapshot())
    assert (a._mtm, a._gross, a._peak) == (b._mtm, b._gross, b._peak)


@pytest.mark.parametrize("side", [Side.BUY, Side.SELL])
def test_portfolio_first_breach_is_the_first_breach(side: Side) -> None:
    prices = (30_000 + np.random.default_rng(2).normal(0, 300, 400).cumsum()).tolist()
    base = Portfolio(100_000.0)
    base.apply_fill(fill(2.0, side, 30_000.0))
    base.mark("BTC/USDT", 30_000.0, 0)
    for floor, keep in ((0.0, 0.0), (95_000.0, 0.0), (0.0, 0.97), (98_000.0, 0.99), (1e9, 0.0)):
        probe = Portfolio(100_000.0)
        probe.apply_fill(fill(2.0, side, 30_000.0))
        probe.mark("BTC/USDT", 30_000.0, 0)
        expected = len(prices)
        for k, price in enumerate(prices):
            probe.mark("BTC/USDT", price, k)
            eq = probe.equity
            if eq <= floor or eq <= probe.peak_equity * keep:
                expected = k
                break
        before = repr(base.snapshot())
        assert base.first_breach("BTC/USDT", prices, 0, len(prices), floor, keep) == expected
        assert repr(base.snapshot()) == before  # it changed nothing


def test_breaker_quiet_until_bounds_what_on_clock_reports() -> None:
    cfg = TRIPPY
    board = BreakerBoard(cfg)
    stale_ns = board._stale_ns
    t = T0
    board.on_quote("ETH/USDT", t)
    board.on_quote("BTC/USDT", t)
    board.on_round_trip("ema_cross", -5.0, 99_000.0, t)
    assert board.on_round_trip("ema_cross", -5.0, 98_990.0, t)  # tripped: re-arms in 600 s
    until = board.quiet_until("BTC/USDT", t)
    assert until == min(t + stale_ns, t + 600 * NS_PER_SECOND - 1)
    probe = BreakerBoard(cfg)
    probe.restore([c.to_dict() for c in board.tripped()])
    probe.on_quote("ETH/USDT", t)
    for now in range(t, until + 1, NS_PER_SECOND // 4):
        assert probe.on_quote("BTC/USDT", now) == [] and probe.on_clock(now) == []
    assert probe.on_clock(until + 1) != []
    assert board.quiet_until("BTC/USDT", t - 1) == t - 2  # behind the board's clock


def test_irregular_rows_are_what_check_bar_rejects() -> None:
    data = walk(3000, 11)
    series = BarSeries("BTC/USDT", 60, "replay", data.ts, *data.cols)
    opts = BacktestOptions(strategy="ema_cross")
    core = bt.BacktestRun(build_backtest_config(RELAXED, data, opts), opts).core
    irregular = set(core._irregular_rows(series))
    validator = QuoteValidator()
    rejected = {i for i in range(len(series)) if validator.check_bar(series.bar(i)) is not None}
    assert rejected and rejected <= irregular
    codes = set(validator.rejected)
    assert {"duplicate_timestamp", "price_jump", "absurd_price", "time_backwards"} <= codes
    # Rows flagged but accepted are only rows right after a reject that moved time back, or
    # the row after a price spike (flagged against the spike's close).
    c = series.close
    for i in irregular - rejected:
        behind = series.ts_open[i] <= max(series.ts_open[:i])
        after_spike = i - 1 in rejected and (
            series.high[i] > c[i - 1] * 10 or series.low[i] * 10 < c[i - 1]
        )
        assert behind or after_spike, i


def test_order_copy_is_a_full_copy() -> None:
    order = Order(
        "c", "i", "s", "BTC/USDT", "v", Side.SELL, OrderType.LIMIT, 2.0, 3.0,
        OrderStatus.PARTIALLY_FILLED, 5, 6, 1.0, 3.5, 0.25, True, "why",
    )  # fmt: skip
    copy = order.copy()
    assert copy == replace(order) and copy is not order
    assert [f.name for f in fields(Order)] == list(Order.__slots__)
    assert all(getattr(copy, f.name) == getattr(order, f.name) for f in fields(Order))


def test_enum_member_attributes() -> None:
    assert (Side.BUY.sign, Side.SELL.sign, Side("sell").sign) == (1, -1, -1)
    terminal = {s for s in OrderStatus if s.is_terminal}
    assert terminal == {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED}


def test_slippage_breaker_shortcut_decides_as_the_means() -> None:
    """on_fill_slippage skips the exact means when no realised value reaches the floor's limit;
    the verdict must be the one the means give (a full window, on a fresh board each time)."""
    rng = random.Random(5)
    n = TRIPPY.safety.breakers.slippage_window_fills
    trips = 0
    for _ in range(600):
        board = BreakerBoard(TRIPPY)
        centre, spread = rng.choice([1.0, 2.5, 3.0, 3.5, 5.0]), rng.choice([0.0, 0.2, 1.0, 4.0])
        for i in range(n):
            realised = centre + rng.uniform(-spread, spread)
            model = rng.choice([0.0, 1.0, 2.5])
            tripped = bool(board.on_fill_slippage("ema_cross", realised, model, T0 + i))
        realised_mean, limit = board._strategies["ema_cross"].slippage_means()
        assert tripped == (realised_mean > limit)
        trips += tripped
    assert 50 < trips < 550
