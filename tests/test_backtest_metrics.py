"""The report's metrics against an independent pandas computation, and the round-trip ledger.

The conventions checked here are the ones documented in engine/metrics.py: per-bar simple
returns, sample standard deviation, sqrt(bars per year) with 365-day years, risk-free 0, and a
downside deviation over all returns.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.backtest import BacktestOptions, run_backtest
from engine.config import load_config
from engine.metrics import (
    compute_metrics,
    drawdown_series,
    exposure_fraction,
    max_drawdown,
    periods_per_year,
    round_trips,
    sharpe_ratio,
    sortino_ratio,
)
from engine.types import Fill, Liquidity, Side
from tests.conftest import BARS_CSV

PPY_1M = 365 * 24 * 60  # 1-minute bars in a 365-day year


def pandas_metrics(equity: np.ndarray, position: np.ndarray, ppy: float) -> dict[str, float]:
    """The same figures, computed the textbook pandas way, independently of engine.metrics."""
    s = pd.Series(equity)
    r = s.pct_change().dropna()
    downside = np.sqrt((r.clip(upper=0.0) ** 2).mean())
    dd = s / s.cummax() - 1.0
    return {
        "sharpe": r.mean() / r.std() * math.sqrt(ppy),
        "sortino": r.mean() / downside * math.sqrt(ppy),
        "max_dd": -dd.min(),
        "max_dd_amount": (s.cummax() - s)[dd.idxmin()],
        "exposure": (pd.Series(position) != 0).mean(),
        "total_return": s.iloc[-1] / s.iloc[0] - 1.0,
    }


def test_hand_made_series_matches_pandas() -> None:
    equity = np.array(
        [100.0, 101.0, 100.5, 102.0, 99.0, 98.0, 99.5, 103.0, 104.0, 101.0, 105.0, 104.5]
    )
    position = np.array([0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1, 0], dtype=float)
    ppy = periods_per_year(3600)  # hourly samples
    assert ppy == 8760
    want = pandas_metrics(equity, position, ppy)
    assert sharpe_ratio(equity, ppy) == pytest.approx(want["sharpe"], rel=1e-12)
    assert sortino_ratio(equity, ppy) == pytest.approx(want["sortino"], rel=1e-12)
    dd = max_drawdown(equity)
    assert dd.fraction == pytest.approx(want["max_dd"], rel=1e-12)
    assert dd.amount == pytest.approx(want["max_dd_amount"], rel=1e-12)
    # Peak 102 at index 3, trough 98 at index 5: 3.92%.
    assert (dd.peak_index, dd.trough_index) == (3, 5)
    assert dd.fraction == pytest.approx(4 / 102)
    assert exposure_fraction(position) == pytest.approx(want["exposure"])
    assert drawdown_series(equity).min() == pytest.approx(-want["max_dd"])


def test_undefined_ratios_are_none() -> None:
    flat = np.full(10, 100.0)
    assert sharpe_ratio(flat, 100) is None
    assert sortino_ratio(flat, 100) is None
    rising = np.array([100.0, 101.0, 102.5, 103.0])
    assert sortino_ratio(rising, 100) is None  # no losing period: no downside deviation
    assert sharpe_ratio(rising[:2], 100) is None  # one return: no sample std
    assert max_drawdown(rising).fraction == 0.0
    assert exposure_fraction([]) == 0.0


def fill(n: int, side: str, qty: float, price: float, fee: float = 0.0, ts: int = 0) -> Fill:
    return Fill(
        f"f{n}",
        f"o{n}",
        "s",
        "BTC/USDT",
        "replay",
        Side(side),
        qty,
        price,
        fee,
        Liquidity.TAKER,
        ts or n,
    )


def test_round_trips_open_add_reduce_close_and_flip() -> None:
    fills = [
        fill(1, "buy", 1.0, 100.0, 0.1),
        fill(2, "buy", 1.0, 110.0, 0.1),  # add: average 105
        fill(3, "sell", 0.5, 120.0, 0.05),  # reduce
        fill(4, "sell", 1.5, 90.0, 0.15),  # close: trip 1 done
        fill(5, "sell", 1.0, 100.0, 0.1),  # short
        fill(6, "buy", 3.0, 95.0, 0.3),  # cover 1 (+5) and flip long 2 (fee split 1/3 : 2/3)
    ]
    t1, t2, t3 = round_trips(fills)
    assert (t1.direction, t1.qty, t1.fills, t1.is_open) == (1, 2.0, 4, False)
    assert t1.entry_price == pytest.approx(105.0)
    assert t1.exit_price == pytest.approx((0.5 * 120 + 1.5 * 90) / 2)
    assert t1.gross_pnl == pytest.approx(0.5 * 15 + 1.5 * -15)
    assert t1.fees == pytest.approx(0.4)
    assert (t2.direction, t2.gross_pnl, t2.exit_ts) == (-1, pytest.approx(5.0), 6)
    assert t2.fees == pytest.approx(0.1 + 0.1)
    assert (t3.direction, t3.is_open, t3.entry_price, t3.qty) == (1, True, 95.0, 2.0)
    assert t3.fees == pytest.approx(0.2)


def test_compute_metrics_counts_wins_and_the_open_trip() -> None:
    fills = [
        fill(1, "buy", 1.0, 100.0, 1.0),
        fill(2, "sell", 1.0, 103.0, 1.0),  # +3 - 2 = +1: a win
        fill(3, "buy", 1.0, 103.0, 1.0),
        fill(4, "sell", 1.0, 104.0, 1.0),  # +1 - 2 = -1: a loss
        fill(5, "buy", 1.0, 104.0, 1.0),  # open
    ]
    eq = np.array([1000.0, 1001.0, 999.0, 1000.0])
    m, trips = compute_metrics(
        [0, 1, 2, 3], eq, [0, 1, 0, 1], fills, [f.price for f in fills], 60, {"BTC/USDT": 110.0}
    )
    assert (m.trades, m.wins, m.losses, m.win_rate, m.open_trades) == (2, 1, 1, 0.5, 1)
    assert m.open_trade_pnl == pytest.approx(6.0 - 1.0)
    assert m.fees_paid == 5.0 and m.slippage_paid == 0.0
    assert m.exposure_pct == pytest.approx(200 / 3)  # the starting point does not count
    assert m.pnl == 0.0 and len(trips) == 3


@pytest.fixture(scope="module")
def real_run():
    opts = BacktestOptions(
        strategy="ema_cross",
        params={"fast": 10, "slow": 30},
        qty=0.1,
        fee_bps=10,
        fill="close",
        slippage="model",
        spread_bps=2.0,
        warmup=100,
        breakers=False,
    )
    return run_backtest(load_config(), BARS_CSV, opts)


def test_real_one_minute_run_matches_pandas(real_run) -> None:
    r = real_run
    m = r.metrics
    assert m.periods_per_year == PPY_1M
    assert m.bars == 45_031 - 100 and r.equity.size == m.bars + 1
    want = pandas_metrics(r.equity, r.position[1:], PPY_1M)
    assert m.sharpe == pytest.approx(want["sharpe"], rel=1e-9)
    assert m.sortino == pytest.approx(want["sortino"], rel=1e-9)
    assert m.max_drawdown_pct == pytest.approx(want["max_dd"] * 100, rel=1e-9)
    assert m.max_drawdown == pytest.approx(want["max_dd_amount"], rel=1e-9)
    assert m.exposure_pct == pytest.approx(want["exposure"] * 100, rel=1e-12)
    assert m.return_pct == pytest.approx(want["total_return"] * 100, rel=1e-9)


def test_real_run_ledger_is_consistent(real_run) -> None:
    r = real_run
    m = r.metrics
    p = r.final_portfolio
    assert m.fills == len(r.fills) > 100
    assert m.final_equity == pytest.approx(p["equity"], abs=1e-6)
    assert m.fees_paid == pytest.approx(p["fees_paid"], rel=1e-12)
    fills = pd.DataFrame(r.fill_rows())
    assert m.fees_paid == pytest.approx(fills["fee"].sum(), rel=1e-12)
    # 2 bps of spread: each fill pays at least 1 bp of its notional against the close, more
    # where an order walked past a thin bar's displayed size (the broker's impact levels).
    sign = np.where(fills["side"] == "buy", 1.0, -1.0)
    paid = sign * (fills["price"] - fills["ref_price"]) * fills["qty"]
    assert m.slippage_paid == pytest.approx(paid.sum(), rel=1e-12)
    half_spread = fills["qty"] * fills["ref_price"] * 1e-4
    assert (paid >= half_spread * (1 - 1e-9)).all()
    assert m.slippage_paid > half_spread.sum()
    # Every trip's gross PnL adds up to the portfolio's realised PnL; net of every fee it is
    # the PnL, give or take the still-open trip's unrealised part.
    assert sum(t.gross_pnl for t in r.trips) == pytest.approx(p["realized_pnl"], abs=1e-6)
    closed = sum(t.net_pnl for t in r.trips if not t.is_open)
    assert closed + m.open_trade_pnl == pytest.approx(m.pnl, abs=1e-6)
    assert m.trades == sum(1 for t in r.trips if not t.is_open)
    assert m.wins == sum(1 for t in r.trips if not t.is_open and t.net_pnl > 0)
    # The sampled equity is the portfolio's: the starting cash first, the final equity last.
    assert r.equity[0] == 100_000.0 and r.equity[-1] == pytest.approx(p["equity"])


@settings(max_examples=120, deadline=None)
@given(
    st.lists(st.floats(min_value=1.0, max_value=1e7), min_size=0, max_size=60),
    st.lists(st.sampled_from([0.0, 1.0, -2.0, 1e-13]), min_size=0, max_size=60),
    st.integers(min_value=1, max_value=9),
)
def test_curve_stats_in_slices_are_the_whole_array_figures(
    equity: list[float], position: list[float], span: int
) -> None:
    """The report's figures read the curves a slice at a time (bounded memory on a long
    run): the drawdown and exposure exactly as whole-array numpy gives them, the ratios to
    within rounding, at every slice size (slice boundaries anywhere)."""
    import engine.metrics as metrics_mod

    eq = np.asarray(equity, dtype=np.float64)
    pos = np.asarray((position + [0.0] * len(equity))[: len(equity)], dtype=np.float64)
    old = metrics_mod._SPAN
    metrics_mod._SPAN = span
    try:
        stats = metrics_mod.curve_stats(eq, pos, 525_600.0)
    finally:
        metrics_mod._SPAN = old
    # The whole-array figures, with numpy.
    if eq.size and (dd := eq / np.maximum.accumulate(eq) - 1.0).min() < 0.0:
        trough = int(np.argmin(dd))
        top = int(np.argmax(eq[: trough + 1]))
        want_dd = (-float(dd[trough]), float(eq[top] - eq[trough]), top, trough)
    else:
        want_dd = (0.0, 0.0, 0, 0)
    got_dd = stats.drawdown
    assert (got_dd.fraction, got_dd.amount, got_dd.peak_index, got_dd.trough_index) == want_dd
    held = pos[1:]
    want_exposure = float(np.count_nonzero(np.abs(held) > 1e-12)) / held.size if held.size else 0.0
    assert stats.exposure == want_exposure
    r = eq[1:] / eq[:-1] - 1.0 if eq.size > 1 else np.empty(0)
    want_sharpe = want_sortino = None
    if r.size >= 2:
        sd = float(r.std(ddof=1))
        down = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
        want_sharpe = float(r.mean()) / sd * math.sqrt(525_600.0) if sd > 0.0 else None
        want_sortino = float(r.mean()) / down * math.sqrt(525_600.0) if down > 0.0 else None
    for got, want in ((stats.sharpe, want_sharpe), (stats.sortino, want_sortino)):
        if want is None or got is None:
            # A zero deviation may be a rounding speck in one sum and exactly 0 in the other.
            assert got is None or want is None
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-9)
