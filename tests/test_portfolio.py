"""Portfolio accounting: average cost, fees, marks, equity identity, day rollover, drawdown."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.portfolio import EQUITY_CURVE_LEN, NS_PER_DAY, Portfolio, Position
from engine.types import Fill, Liquidity, Side

T0 = 1_700_000_000 * 1_000_000_000
SYM = "BTC/USDT"
_ids = itertools.count(1)


def fill(side: Side, qty: float, price: float, fee: float = 0.0, symbol: str = SYM) -> Fill:
    n = next(_ids)
    return Fill(f"f{n}", "c1", "s1", symbol, "sim", side, qty, price, fee, Liquidity.TAKER, T0 + n)


def buy(qty: float, price: float, fee: float = 0.0, symbol: str = SYM) -> Fill:
    return fill(Side.BUY, qty, price, fee, symbol)


def sell(qty: float, price: float, fee: float = 0.0, symbol: str = SYM) -> Fill:
    return fill(Side.SELL, qty, price, fee, symbol)


def identity_gap(pf: Portfolio) -> float:
    return pf.equity - (pf.starting_cash + pf.realized_pnl + pf.unrealized_pnl - pf.fees_paid)


# ---------------------------------------------------------------- position life cycle


def test_open_add_reduce_close_long() -> None:
    pf = Portfolio(10_000.0)
    assert pf.apply_fill(buy(2, 100.0, fee=0.2)) == 0.0
    p = pf.positions[SYM]
    assert (p.qty, p.avg_price, p.mark) == (2.0, 100.0, 100.0)
    assert pf.cash == pytest.approx(10_000 - 200 - 0.2)
    assert pf.open_position_count == 1

    assert pf.apply_fill(buy(2, 110.0)) == 0.0  # add: weighted average
    assert (p.qty, p.avg_price) == (4.0, 105.0)

    assert pf.apply_fill(sell(1, 120.0, fee=0.12)) == pytest.approx(15.0)  # reduce
    assert (p.qty, p.avg_price) == (3.0, 105.0)
    assert p.realized_pnl == pytest.approx(15.0)

    assert pf.apply_fill(sell(3, 100.0)) == pytest.approx(-15.0)  # close
    assert (p.qty, p.avg_price, p.unrealized_pnl) == (0.0, 0.0, 0.0)
    assert pf.realized_pnl == pytest.approx(0.0)
    assert pf.fees_paid == pytest.approx(0.32)
    assert p.fees == pytest.approx(0.32)
    assert pf.open_position_count == 0
    assert pf.gross_exposure == 0.0
    # Round trip at zero gross PnL: only the fees are lost.
    assert pf.cash == pytest.approx(10_000 - 0.32)
    assert pf.equity == pytest.approx(10_000 - 0.32)


def test_short_open_add_and_cover() -> None:
    pf = Portfolio(10_000.0)
    pf.apply_fill(sell(1, 100.0))
    pf.apply_fill(sell(3, 104.0))
    p = pf.positions[SYM]
    assert (p.qty, p.avg_price) == (-4.0, 103.0)
    assert pf.cash == pytest.approx(10_000 + 100 + 312)
    assert pf.apply_fill(buy(4, 101.0)) == pytest.approx(8.0)  # short gains when price falls
    assert p.qty == 0.0


def test_flip_long_to_short_opens_the_remainder_at_the_fill_price() -> None:
    pf = Portfolio(10_000.0)
    pf.apply_fill(buy(2, 100.0))
    assert pf.apply_fill(sell(5, 110.0)) == pytest.approx(20.0)
    p = pf.positions[SYM]
    assert (p.qty, p.avg_price) == (-3.0, 110.0)
    assert pf.apply_fill(buy(4, 100.0)) == pytest.approx(30.0)  # flip back: 3 covered at +10
    assert (p.qty, p.avg_price) == (1.0, 100.0)
    assert pf.realized_pnl == pytest.approx(50.0)


def test_float_dust_closes_flat() -> None:
    pf = Portfolio(10_000.0)
    pf.apply_fill(buy(0.1, 100.0))
    pf.apply_fill(buy(0.2, 100.0))
    pf.apply_fill(sell(0.3, 100.0))  # 0.1 + 0.2 - 0.3 != 0 in floats
    assert pf.positions[SYM].qty == 0.0
    assert pf.open_position_count == 0


def test_zero_qty_fill_is_refused() -> None:
    with pytest.raises(ValueError, match="qty must be positive"):
        Portfolio(1.0).apply_fill(buy(0.0, 100.0))


# ---------------------------------------------------------------- marks, PnL, exposure


def test_realized_vs_unrealized_and_fees_reduce_cash() -> None:
    pf = Portfolio(10_000.0)
    pf.apply_fill(buy(2, 100.0, fee=0.2))
    pf.mark(SYM, 105.0, T0)
    assert pf.unrealized_pnl == pytest.approx(10.0)
    assert pf.realized_pnl == 0.0
    assert pf.positions[SYM].unrealized_pnl == pytest.approx(10.0)
    assert pf.equity == pytest.approx(10_000 - 0.2 + 10.0)
    pf.apply_fill(sell(1, 105.0, fee=0.1))
    assert pf.realized_pnl == pytest.approx(5.0)
    assert pf.unrealized_pnl == pytest.approx(5.0)
    assert pf.fees_paid == pytest.approx(0.3)
    assert pf.equity == pytest.approx(10_000 + 5 + 5 - 0.3)


def test_gross_exposure_counts_longs_and_shorts() -> None:
    pf = Portfolio(10_000.0)
    pf.apply_fill(buy(1, 100.0))
    pf.apply_fill(sell(2, 50.0, symbol="ETH/USDT"))
    pf.mark(SYM, 110.0, T0)
    pf.mark("ETH/USDT", 40.0, T0)
    assert pf.gross_exposure == pytest.approx(110.0 + 80.0)
    assert pf.equity == pytest.approx(10_000 + 10.0 + 20.0)
    assert pf.open_position_count == 2


def test_mark_before_any_position_is_used_when_one_opens() -> None:
    pf = Portfolio(10_000.0)
    pf.mark(SYM, 99.0, T0)
    assert pf.equity == 10_000.0 and SYM not in pf.positions
    pf.apply_fill(buy(1, 100.0))  # paid the ask above the mark: an honest immediate loss
    assert pf.positions[SYM].mark == 99.0
    assert pf.unrealized_pnl == pytest.approx(-1.0)


def test_running_sums_match_a_full_recompute_after_many_marks() -> None:
    pf = Portfolio(100_000.0)
    pf.apply_fill(buy(0.37, 60_000.0))
    pf.apply_fill(sell(3.3, 3_000.0, symbol="ETH/USDT"))
    for i in range(20_000):
        pf.mark(SYM, 60_000.0 + (i % 97) * 1.37, T0 + i)
        pf.mark("ETH/USDT", 3_000.0 - (i % 89) * 0.11, T0 + i)
    fast = (pf.equity, pf.gross_exposure, pf.unrealized_pnl)
    snap = pf.snapshot()  # resyncs exactly
    assert fast == pytest.approx(
        (snap["equity"], snap["gross_exposure"], snap["unrealized_pnl"]), rel=1e-12
    )
    assert sum(p.qty * p.mark for p in pf.positions.values()) + pf.cash == pytest.approx(
        pf.equity, rel=1e-12
    )


# ---------------------------------------------------------------- equity identity (property)

fills_strategy = st.lists(
    st.tuples(
        st.sampled_from(["BTC/USDT", "ETH/USDT", "SOL/USDT"]),
        st.sampled_from([Side.BUY, Side.SELL]),
        st.floats(min_value=0.001, max_value=50.0),
        st.floats(min_value=1.0, max_value=10_000.0),
        st.floats(min_value=0.0, max_value=5.0),
        st.one_of(st.none(), st.floats(min_value=1.0, max_value=10_000.0)),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(fills_strategy)
def test_equity_identity_holds_over_random_fill_sequences(steps: list) -> None:
    pf = Portfolio(100_000.0)
    for sym, side, qty, price, fee, mark in steps:
        pf.apply_fill(fill(side, qty, price, fee, sym))
        assert abs(identity_gap(pf)) <= 1e-6
        if mark is not None:
            pf.mark(sym, mark, T0)
        assert abs(identity_gap(pf)) <= 1e-6
        assert pf.gross_exposure >= -1e-9
        assert pf.drawdown >= 0.0
        assert pf.peak_equity >= pf.equity - 1e-9
    # The per-position view agrees with the totals.
    assert sum(p.realized_pnl for p in pf.positions.values()) == pytest.approx(
        pf.realized_pnl, abs=1e-6
    )
    assert sum(p.fees for p in pf.positions.values()) == pytest.approx(pf.fees_paid, abs=1e-9)
    assert sum(p.unrealized_pnl for p in pf.positions.values()) == pytest.approx(
        pf.unrealized_pnl, abs=1e-6
    )


# ---------------------------------------------------------------- day rollover


def test_day_rolls_over_at_exactly_midnight_utc() -> None:
    midnight = int(datetime(2024, 3, 2, tzinfo=UTC).timestamp()) * 1_000_000_000
    assert midnight % NS_PER_DAY == 0
    pf = Portfolio(10_000.0)
    assert pf.on_time(midnight - 3_600 * 1_000_000_000) is False  # first call sets the day
    assert pf.day_start_equity == 10_000.0
    pf.apply_fill(buy(1, 100.0))
    pf.mark(SYM, 90.0, midnight - 1)
    assert pf.daily_pnl == pytest.approx(-10.0)
    assert pf.on_time(midnight - 1) is False  # one ns before: same day
    assert pf.on_time(midnight) is True
    assert pf.day_start_equity == pytest.approx(9_990.0)
    assert pf.daily_pnl == 0.0
    assert pf.on_time(midnight + 1) is False  # once per day
    assert pf.on_time(midnight - 5) is False  # time going backwards does not roll
    assert pf.on_time(midnight + NS_PER_DAY) is True


# ---------------------------------------------------------------- peak and drawdown


def test_peak_and_drawdown_update_on_the_mark_that_moves_them() -> None:
    pf = Portfolio(1_000.0)
    pf.apply_fill(buy(10, 100.0))
    pf.mark(SYM, 110.0, T0 + 1)
    assert pf.peak_equity == pytest.approx(1_100.0)
    assert pf.drawdown == 0.0
    pf.mark(SYM, 88.0, T0 + 2)  # equity 880: 20% below the 1100 peak, on this very mark
    assert pf.equity == pytest.approx(880.0)
    assert pf.drawdown == pytest.approx(0.2)
    pf.mark(SYM, 99.0, T0 + 3)
    assert pf.peak_equity == pytest.approx(1_100.0)
    assert pf.drawdown == pytest.approx(0.1)
    pf.mark(SYM, 120.0, T0 + 4)
    assert (pf.peak_equity, pf.drawdown) == (pytest.approx(1_200.0), 0.0)


def test_fees_alone_create_drawdown() -> None:
    pf = Portfolio(1_000.0)
    pf.apply_fill(buy(1, 100.0, fee=10.0))
    assert pf.drawdown == pytest.approx(0.01)


def test_equity_curve_is_bounded_and_sampled() -> None:
    pf = Portfolio(1_000.0)
    pf.apply_fill(buy(1, 100.0))
    for i in range(EQUITY_CURVE_LEN + 5):
        pf.sample_equity(T0 + i)
    curve = pf.equity_curve
    assert len(curve) == EQUITY_CURVE_LEN
    assert curve[0] == (T0 + 5, pytest.approx(1_000.0))
    assert curve[-1][0] == T0 + EQUITY_CURVE_LEN + 4


# ---------------------------------------------------------------- snapshot and restore


def _live() -> tuple[Portfolio, list[Fill]]:
    pf = Portfolio(50_000.0)
    journal = [
        buy(0.5, 60_000.0, fee=3.0),
        sell(4.0, 3_000.0, fee=1.2, symbol="ETH/USDT"),
        buy(0.25, 61_000.0, fee=1.5),
        sell(1.0, 61_500.0, fee=6.1),  # flips BTC short
        buy(4.0, 2_900.0, fee=1.1, symbol="ETH/USDT"),  # closes ETH
    ]
    pf.on_time(T0)
    for i, f in enumerate(journal):
        pf.apply_fill(f)
        pf.mark(f.symbol, f.price * (1 + 0.001 * i), f.ts)
        pf.sample_equity(f.ts)
    pf.mark(SYM, 61_200.0, T0 + 100)
    pf.mark("SOL/USDT", 150.0, T0 + 100)
    return pf, journal


def test_snapshot_is_json_and_complete() -> None:
    pf, _ = _live()
    snap = json.loads(json.dumps(pf.snapshot()))
    for key in (
        "cash",
        "equity",
        "unrealized_pnl",
        "realized_pnl",
        "fees_paid",
        "gross_exposure",
        "peak_equity",
        "drawdown",
        "day_start_equity",
        "daily_pnl",
        "open_position_count",
        "positions",
        "equity_curve",
    ):
        assert key in snap
    assert snap["positions"][SYM]["qty"] == pytest.approx(-0.25)
    assert snap["marks"]["SOL/USDT"] == 150.0
    assert snap["equity"] == pytest.approx(pf.equity)


def test_restore_equals_the_live_built_portfolio() -> None:
    live, journal = _live()
    marks = {"BTC/USDT": 61_200.0, "ETH/USDT": live.positions["ETH/USDT"].mark, "SOL/USDT": 150.0}
    snap = live.snapshot()
    restored = Portfolio.restore(
        50_000.0,
        journal,
        marks,
        peak_equity=snap["peak_equity"],
        day_start_equity=snap["day_start_equity"],
        day_ts=T0,
    )
    got = restored.snapshot()
    for key in ("equity_curve", "last_mark_ts"):
        snap.pop(key)
        got.pop(key)
    assert _approx_equal(got, snap), (got, snap)
    assert restored.positions == live.positions


def test_restore_without_history_keeps_limits_conservative() -> None:
    live, journal = _live()
    restored = Portfolio.restore(50_000.0, journal, {SYM: 61_200.0})
    assert restored.peak_equity == max(50_000.0, restored.equity)
    assert restored.day_start_equity == pytest.approx(restored.equity)
    assert restored.cash == pytest.approx(live.cash)
    assert restored.realized_pnl == pytest.approx(live.realized_pnl)


def _approx_equal(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_approx_equal(a[k], b[k]) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=1e-12, abs=1e-9)
    return a == b


def test_position_unrealized_is_zero_when_flat() -> None:
    assert Position(SYM, qty=0.0, avg_price=0.0, mark=123.0).unrealized_pnl == 0.0
