"""Review reviewexits2: the protective exits and limit orders attacked again, as a trader whose
money depends on the stop. Each test below failed before its fix.

1. A price exactly at a level did not fire it. The level is computed in floating point (a
   short's 10% stop from 50,000 is 55,000.000000000007, a long's 1% stop from 107 is
   105.92999999999999), so a mid of exactly 55,000.00, the price the exit's own reason and
   the Positions pane show ("stop-loss at 55,000.00"), or a bar whose low is exactly 105.93,
   left the position open; about one level in five on a cent grid rounds the wrong way. A
   price equal to a level up to float rounding now counts as at it (engine/exits.py
   LEVEL_EPS), on quotes and bars alike (the backtest's fast path uses the same check).
2. On bars, a time stop that fell due in a gap in the data (a venue's maintenance, a weekend,
   the engine down across a restart on a bar feed) fired at the close of the first bar after
   the gap, not at its open: the trader held the whole bar past the stop (on a bar that
   opened at 118 and closed at 80, sold at 80). It now fires at that bar's open, its first
   market event, as on quotes (the first quote after the gap); in a backtest, on the fast
   path and the slow one, and in the paper engine replaying the same file alike.

Attacks that held (one line each):
- a price one tick inside a level never fires it (the tolerance is 1e-12 of the level, far
  below any tick); a bar through the stop still fills at the stop, a gap at the open;
- a restart (paper, the real Engine on its journal) between a stop's trigger and its fill:
  the restored exit order fills once, no second exit is fired, the position ends flat;
- the first fresh quote after the stale_feed breaker tripped (a 30 s quiet feed) that is
  through the stop fires it and fills on the next quote;
- HALTED by the clock_drift breaker, or by the automatic kill (halt, flatten, entries) the
  same quote through the stop trips: the stop goes out, the kill does not cancel it, it fills;
- the strategy raising in on_bar after its entry: the stop still fires and fills;
- a partial fill of the exit (a thin paper book, the rest cancelled as "exceeds simulated
  depth"): the exit fires again for what is left on the next quote, never more than it;
- pre-trade limits lowered under a held position (max_order_notional 1, max_position and
  gross exposure 1e-5 of equity, max_open_positions 1, a 0.001% collar, stale_quote_s 0.1
  with fresh quotes): the stop is submitted and fills every time;
- a time stop on quotes (alone, and with a stop and a trail) in the backtest and in the paper
  engine replaying the same Binance quotes: the same fills;
- a time stop due while the engine is down on quotes fires on the first quote (pinned by
  tests/test_review_ex.py); history bars loaded at a restart never fire an exit (warm_up
  does not call bar_exits), so the new time stop at a bar's open cannot fire on old prices;
- `cockpit backtest --stop-loss/--take-profit/--trailing-atr/--time-stop/--atr-period` with
  0, negative, nan, inf, 1e400, 100, 1.5 bars, or a period without a trail: one line each;
- limits: the grid rounds a buy down and a sell up (never a worse price), expiry runs before
  the broker sees the event (the exit's execution quote on a bar is the exit's alone), and a
  limit's time to live ran out in a gap is cancelled before the next open (earlier reviews'
  tests pin these; re-read, not changed).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine import backtest as bt
from engine.backtest import BacktestOptions, load_market_data, run_backtest_core
from engine.exits import ExitKind, ExitRules, ExitState, check_bar, check_price
from engine.types import NS_PER_SECOND, Side
from tests.test_backtest_equivalence import EMA, assert_same_fills, paper_trade, replay_config
from tests.test_backtest_fastpath import RELAXED, run_both
from tests.test_exits import SYM, Harness, make_core

EXAMPLES = int(os.environ.get("COCKPIT_REVIEWEXITS2_EXAMPLES", "200"))
T0 = 1_700_000_000 * NS_PER_SECOND


# ------------------------------------------------------------------ 1. a price at the level


def test_a_quote_exactly_at_a_shorts_stop_fires_it() -> None:
    h = Harness(make_core({"stop_loss_pct": 10.0}, short=True))
    for _ in range(3):
        h.quote(50_000.0, half_spread=0.0)
    assert h.position < 0 and h.fills()[-1].price == 50_000.0
    h.quote(54_999.99, half_spread=0.0)  # a cent inside: nothing
    assert h.exit_decisions() == []
    h.quote(55_000.0, half_spread=0.0)  # at the stop the reason names
    (exit_,) = h.exit_decisions()
    assert exit_.rule == "stop_loss" and exit_.reason.startswith("stop-loss at 55,000.00:")


def test_a_quote_exactly_at_a_longs_target_takes_it() -> None:
    h = Harness(make_core({"take_profit_pct": 10.0}))
    for _ in range(3):
        h.quote(50_000.0, half_spread=0.0)
    assert h.position > 0
    h.quote(54_999.99, half_spread=0.0)
    assert h.exit_decisions() == []
    h.quote(55_000.0, half_spread=0.0)
    (exit_,) = h.exit_decisions()
    assert exit_.rule == "take_profit"


def test_a_bar_whose_low_is_exactly_the_stop_fills_it_at_the_stop() -> None:
    h = Harness(make_core({"stop_loss_pct": 1.0}))
    h.bar(107.0, 107.0, 107.0, 107.0)  # the entry decision
    h.bar(107.0, 107.0, 107.0, 107.0)  # ... fills at 107
    assert h.position == 1.0 and h.fills()[-1].price == 107.0
    h.bar(107.0, 107.0, 105.94, 106.5)  # a cent short of the stop: nothing
    assert h.exit_decisions() == []
    h.bar(107.0, 107.0, 105.93, 106.5)  # touches 105.93, the stop
    (exit_,) = h.exit_decisions()
    assert exit_.rule == "stop_loss" and "105.93" in exit_.reason
    assert h.position == 0.0 and abs(h.fills()[-1].price - 105.93) < 1e-9


def _rules(stop: float | None, target: float | None) -> ExitRules:
    return ExitRules(stop, target, None, 14, None, 60)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    cents=st.integers(min_value=1_00, max_value=10_000_000_00),
    tenths=st.integers(min_value=1, max_value=500),
    side=st.sampled_from([1, -1]),
)
@example(cents=50_000_00, tenths=100, side=-1)
@example(cents=107_00, tenths=10, side=1)
def test_a_price_at_the_decimal_level_fires_and_one_tick_inside_does_not(
    cents: int, tenths: int, side: int
) -> None:
    """Entry on the cent grid, the percentage on a tenth: the decimal level a person computes
    (and the reason prints), taken to the nearest double, fires on a quote and on a bar; a
    price one tick (0.01) inside the level does not."""
    entry = cents / 100
    pct = tenths / 10
    if side > 0 and pct >= 100:
        return
    for kind, sign in ((ExitKind.STOP_LOSS, -side), (ExitKind.TAKE_PROFIT, side)):
        exact = Decimal(cents) / 100 * (1 + Decimal(sign) * Decimal(tenths) / 1000)
        if exact <= Decimal("0.02"):
            continue
        level = float(exact)
        rules = _rules(pct, None) if kind is ExitKind.STOP_LOSS else _rules(None, pct)
        st_ = ExitState("s1", SYM, side, entry, T0, "", entry)
        trig = check_price(rules, st_, level)
        assert trig is not None and trig.kind is kind, (entry, pct, side, kind, level)
        inside = level + 0.01 * sign * -1  # one tick back towards the entry
        assert check_price(rules, st_, inside) is None, (entry, pct, side, kind, inside)
        # A bar that only touches the level, from the entry's side: fires at the level.
        lo, hi = (level, entry) if sign < 0 else (entry, level)
        bar = check_bar(rules, st_, entry, hi, lo)
        assert bar is not None and bar.kind is kind and not bar.gapped
        assert abs(bar.price - level) <= abs(level) * 1e-12


# ------------------------------------------------------------------ 2. a time stop across a gap


def test_a_time_stop_due_in_a_gap_fires_at_the_open_of_the_bar_after_it() -> None:
    h = Harness(make_core({"time_stop_bars": 3}))
    h.bar(100.0, 100.0, 100.0, 100.0)  # the entry decision
    h.bar(100.0, 100.0, 100.0, 100.0)  # ... fills at 100
    h.bar(100.0, 100.0, 100.0, 100.0)  # one bar held
    assert h.position == 1.0 and h.exit_decisions() == []
    h.ts += 3600 * NS_PER_SECOND  # an hour without bars: the time stop falls due in it
    h.bar(90.0, 90.0, 70.0, 70.0)  # opens at 90, closes at 70
    (exit_,) = h.exit_decisions()
    assert exit_.rule == "time_stop" and "now 90.00" in exit_.reason
    assert h.position == 0.0 and h.fills()[-1].price == 90.0


def test_a_time_stop_due_on_time_still_fires_at_the_bar_close() -> None:
    """The boundary: without a gap the time stop fires at the close of the Nth bar, as it did."""
    h = Harness(make_core({"time_stop_bars": 3}))
    h.bar(100.0, 100.0, 100.0, 100.0)
    h.bar(100.0, 100.0, 100.0, 100.0)  # the entry fills at this close
    h.bar(100.0, 100.0, 100.0, 100.0)
    h.bar(101.0, 101.0, 101.0, 101.0)
    assert h.exit_decisions() == []
    h.bar(102.0, 102.0, 102.0, 102.0)  # the third bar held closes: due
    (exit_,) = h.exit_decisions()
    assert exit_.rule == "time_stop" and "now 102.00" in exit_.reason


MIN = 60 * NS_PER_SECOND
T1 = 1_704_067_200 * NS_PER_SECOND  # 2024-01-01 00:00 UTC


def _gapped_csv(path: Path) -> Path:
    """1-minute bars: a fall, a rise that gets ema_cross(3, 8) in, then two hours without a
    bar; the bar after the gap opens at 118 and closes at 80."""
    closes = [130.0 - i for i in range(30)] + [101.0 + 2 * i for i in range(1, 7)]
    ts = [T1 + i * MIN for i in range(len(closes))]
    opens = [closes[0], *closes[:-1]]
    ts += [ts[-1] + 120 * MIN, ts[-1] + 121 * MIN]
    opens += [118.0, 80.0]
    closes += [80.0, 80.0]
    lines = ["timestamp,open,high,low,close,volume"]
    for t, o, c in zip(ts, opens, closes, strict=True):
        when = datetime.fromtimestamp(t / NS_PER_SECOND, UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{when},{o},{max(o, c)},{min(o, c)},{c},1000000")
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_a_time_stop_across_a_gap_agrees_in_the_backtest_and_the_paper_engine(
    tmp_path: Path,
) -> None:
    csv = _gapped_csv(tmp_path / "gapped.csv")
    strat = dict(
        EMA,
        timeframe_s=60,
        params={"fast": 3, "slow": 8},
        sizing={"model": "fixed_qty", "qty": 1.0},
        allow_short=False,
        exits={"time_stop_bars": 3},
    )
    cfg = replay_config(tmp_path / "data", "bars", csv, [strat])
    live = await paper_trade(cfg, tmp_path / "data")
    result = run_backtest_core(cfg, load_market_data(csv), BacktestOptions(fill="live"))
    assert_same_fills(live, result.fills)
    assert [(f.side, f.price) for f in live] == [(Side.BUY, 109.0), (Side.SELL, 118.0)]
    assert set(result.exits) == {"time_stop"}


def test_a_time_stop_across_a_gap_is_the_same_on_the_backtests_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = load_market_data(_gapped_csv(tmp_path / "gapped.csv"))
    opts = BacktestOptions(
        strategy="ema_cross",
        params={"fast": 3, "slow": 8},
        qty=1.0,
        fill="live",
        warmup=0,
        time_stop_bars=3,
    )
    result = bt.run_backtest(RELAXED, data, opts)
    assert [(f.side, f.price) for f in result.fills] == [(Side.BUY, 109.0), (Side.SELL, 118.0)]
    run_both(monkeypatch, RELAXED, data, opts)


@settings(max_examples=max(EXAMPLES // 4, 20), deadline=None)
@given(
    bars=st.integers(min_value=1, max_value=6),
    gaps=st.lists(st.sampled_from([0, 0, 0, 1, 3, 7, 600]), min_size=1, max_size=12),
)
def test_a_time_stop_fires_at_the_first_bar_event_at_or_after_it_is_due(
    bars: int, gaps: list[int]
) -> None:
    """Whatever the gaps in the bars: the time stop fires at the first bar open or close at or
    after the entry fill + N bars, never before it, never later."""
    h = Harness(make_core({"time_stop_bars": bars}))
    h.bar(100.0, 100.0, 100.0, 100.0)
    h.bar(100.0, 100.0, 100.0, 100.0)
    assert h.position == 1.0
    due = h.fills()[-1].ts + bars * NS_PER_SECOND
    moments: list[int] = []
    for gap in gaps:
        h.ts += gap * NS_PER_SECOND
        moments += [h.ts, h.ts + NS_PER_SECOND]  # the bar's open and its close
        h.bar(100.0, 100.0, 100.0, 100.0)
        if h.exit_decisions():
            break
    expected = next((t for t in moments if t >= due), None)
    fired = h.exit_decisions()
    if expected is None:
        assert fired == []
    else:
        assert len(fired) == 1 and fired[0].ts == expected, (fired, expected, due)
