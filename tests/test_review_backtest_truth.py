"""Adversarial review: can a trader trust a backtest's numbers enough to go live on them?

Each test pins a hole in the truth of the results (not the commands: see
tests/test_review_research.py), found on a few thousand synthetic bars or quotes and failing
before its fix. Compared against hand-computed figures where the figure is simple enough.

Attacks that held (no test of their own unless noted):

- The fast bar path (``core.on_bars``) against the full step on every bar: the same fills (side,
  qty, price, fee, time) and equity curve for ema_cross, rsi_reversion and donchian_breakout,
  every fill model, with stop-loss/take-profit, trailing ATR and time stops, and limit entries;
  breakers off (hypothesis test below) and on, with fraction sizing and the kill switch's loss
  limits tripping on a volatile walk.
- Fills at prices the bar never traded: with no slippage, every ``close`` fill is its signal
  bar's close, every ``next-open`` fill lies in its bar's range, every stop/target fill lies in
  the bar's range (or at a gapped open); a bar's stop and target both in range take the stop.
- A resting limit fills only when the close quote trades strictly through it (the low merely
  touching it is no fill); a marketable limit takes at the quote, not at its limit.
- Exits never see the bar their entry filled on before the fill (entry at the close: exits from
  the next bar; at the open: the bar's own range, the trail from earlier bars only).
- The warm-up feeds only bars before the first traded bar; ``between`` is [start, end).
- A sweep's rows equal single ``cockpit backtest`` runs with those parameters (CLI, --json);
  rows come back in task order from Dask; n/a, NaN and inf go last in every sort.
- A walk-forward's winner is chosen from its training rows only (rows sliced per window, in
  order); in-sample and out-of-sample are the right rows.
- Random draws: seeded, within the range, ints inclusive of both ends.
- Metrics: PnL = closed trips' net + the open trip at the last mark, in every fill model;
  fees charged are exactly qty x price x fee rate; win rate n/a without a closed trade;
  Sharpe/Sortino n/a on a flat curve, one return, or a ruined account.
- Whole-config backtests: the lines add up to the book in every fill model and approvals
  policy; ``--approvals reject`` fills nothing of approve-mode strategies; a symbol whose data
  starts later changes nothing of another symbol's strategy; a bar-close quote of one symbol
  fills no order of another.
- A sweep's packed data (shared by every worker, keyed by a hash of its columns) cannot mix up
  two volume units of one file: the unit is applied to the columns on load.
- A walk-forward's plan reads the whole file only for its symbol and bar length, never its
  prices.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.backtest import BacktestOptions, MarketData
from engine.backtest import run_backtest as run_bt
from engine.backtest.data import QUOTES
from engine.config import load_config
from engine.core import EngineCore
from engine.metrics import sharpe_ratio, sortino_ratio
from engine.research.cluster import ClusterOptions
from engine.research.walkforward import walk_forward

NS = 1_000_000_000
MINUTE = 60 * NS
T0 = 28_333_333 * MINUTE  # a whole minute (2023-11-14)
SERIAL = ClusterOptions(workers=0)


def bars(n: int, seed: int = 1, gap: tuple[int, int] | None = None) -> MarketData:
    """``n`` one-minute bars of a random walk whose opens gap from the last close (bars
    ``gap[0]`` to ``gap[1] - 1`` left out)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.004, n)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0.0, 0.002, n))
    high = np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0.0, 0.002, n)))
    low = np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0.0, 0.002, n)))
    ts = T0 + np.arange(n, dtype=np.int64) * MINUTE
    keep = np.ones(n, dtype=bool)
    if gap is not None:
        keep[gap[0] : gap[1]] = False
    cols = [c[keep] for c in (open_, high, low, close, np.full(n, 1e6))]
    return MarketData.from_bars(ts[keep], *cols, symbol="BTC/USDT", timeframe_s=60)


def quotes(n: int, every_s: int, seed: int = 1, size: float = 5.0) -> MarketData:
    """``n`` quotes ``every_s`` seconds apart: a random-walk mid, a 2-cent spread."""
    rng = np.random.default_rng(seed)
    mid = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.001, n)))
    ts = np.int64(1_700_000_000) * NS + np.arange(n, dtype=np.int64) * every_s * NS
    sizes = np.full(n, size)
    cols = (mid - 0.01, mid + 0.01, sizes, sizes)
    return MarketData(QUOTES, "arrays", "<quotes>", ts, cols, "BTC/USDT")


# ------------------------------------------------------------------ quotes: annualisation


def _per_second_curve(ts: np.ndarray, eq: np.ndarray) -> np.ndarray:
    """The equity once a second, by hand: a second without a quote keeps the last equity."""
    out = [eq[0]]
    for i in range(1, ts.size):
        skipped = int(ts[i] // NS - ts[i - 1] // NS) - 1
        out.extend([eq[i - 1]] * skipped)
        out.append(eq[i])
    return np.asarray(out)


@pytest.mark.parametrize("every_s", [1, 10])
def test_sparse_quotes_do_not_inflate_the_sharpe(every_s: int) -> None:
    """On quotes a strategy's timeframe (1 s for a built-in kind) sets the annualisation, but
    the equity was sampled once per *quote*: 3,000 quotes 10 s apart scored exactly the Sharpe
    and Sortino of 3,000 quotes 1 s apart (the same returns, annualised as 3,000 seconds, not
    30,000): sqrt(10) = 3.2 times too strong. A second without a quote is a second the equity
    did not move: the ratios (and the exposure) equal those of the per-second curves built by
    hand."""
    base = load_config()
    o = BacktestOptions(
        strategy="ema_cross",
        params={"fast": 5, "slow": 20},
        qty=0.1,
        breakers=False,
        timeframe_s=1,
    )
    r = run_bt(base, quotes(3_000, every_s), o)
    assert r.metrics.trades > 20 and r.metrics.periods_per_year == 365 * 86_400
    by_hand = _per_second_curve(r.ts, r.equity)
    assert by_hand.size == (r.ts[-1] // NS - r.ts[0] // NS) + 1
    ppy = r.metrics.periods_per_year
    assert r.metrics.sharpe == pytest.approx(sharpe_ratio(by_hand, ppy), rel=1e-9)
    assert r.metrics.sortino == pytest.approx(sortino_ratio(by_hand, ppy), rel=1e-9)
    held = _per_second_curve(r.ts, r.position)[1:]  # the position through each second
    assert r.metrics.exposure_pct == pytest.approx(100.0 * np.mean(held > 0), rel=1e-12)
    if every_s == 1:  # a quote every second: nothing to fill in, bit for bit as before
        assert r.metrics.sharpe == sharpe_ratio(r.equity, ppy)
    else:
        dense = run_bt(base, quotes(3_000, 1), o)
        assert abs(r.metrics.sharpe) < abs(dense.metrics.sharpe) / 3.0


# ------------------------------------------------------------------ walk-forward: warm-up


def test_a_gap_before_a_walk_forward_window_does_not_eat_its_bars() -> None:
    """``--warmup N`` starts each window's run N bar *lengths* early; the run's warm-up is its
    first N *rows*. Ten bars missing before a test window left ten rows there, and the warm-up
    took the window's own first ten bars: its out-of-sample figures covered 50 of its 60 bars
    (and the next training window's 170 of 180). The run starts N rows before the window: every
    window trades all its bars."""
    data = bars(600, gap=(230, 240))  # 10 bars missing before minute 240
    o = BacktestOptions(strategy="ema_cross", qty=0.1, warmup=20, breakers=False)
    combos = [{"fast": 3, "slow": 10}, {"fast": 5, "slow": 15}]
    wf = walk_forward(
        load_config(), data, o, combos, train_s=3 * 3600, test_s=3600, sort="pnl", cluster=SERIAL
    )
    stamps = np.asarray(data.ts)
    for w in wf.windows:
        assert w.best is not None and w.best.metrics is not None
        assert w.oos is not None and w.oos.metrics is not None
        win = w.window
        in_test = int(((stamps >= win.test_start) & (stamps < win.test_end)).sum())
        in_train = int(((stamps >= win.train_start) & (stamps < win.train_end)).sum())
        assert w.oos.metrics.bars == in_test
        if win.index > 0:  # the first window has no bars before it (documented)
            assert w.best.metrics.bars == in_train
        # The out-of-sample row is the single backtest of the window with N rows before it.
        row = int(np.searchsorted(stamps, win.test_start))
        direct = run_bt(
            load_config(),
            data,
            replace(o, params=w.best.params, start_ns=int(stamps[row - 20]), end_ns=win.test_end),
        )
        assert w.oos.metrics == direct.metrics
    assert [w.oos.metrics.bars for w in wf.windows if w.oos and w.oos.metrics] == [50] + [60] * 6


# ------------------------------------------------------------------ the fast path


def _fingerprint(r: Any) -> tuple[list[Any], list[float]]:
    return [(f.side, f.qty, f.price, f.fee, f.ts) for f in r.fills], r.equity.tolist()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(["ema_cross", "rsi_reversion", "donchian_breakout"]),
    fill=st.sampled_from(["live", "close", "next-open"]),
    exits=st.sampled_from(
        [{}, {"stop_loss_pct": 0.3, "take_profit_pct": 0.5}, {"trailing_atr": 2.0}]
    ),
)
def test_the_fast_bar_path_is_the_full_step_on_every_bar(
    seed: int, kind: str, fill: str, exits: dict[str, float]
) -> None:
    """Held: runs of quiet bars go through ``core.on_bars`` (no objects per bar), the rest
    through ``step``; forcing ``step`` on every bar gives the same fills and equity."""
    data = bars(1_500, seed=seed)
    o = BacktestOptions(
        strategy=kind,
        fill=fill,
        qty=0.1,
        fee_bps=10,
        warmup=50,
        breakers=False,
        allow_short=True,
        **exits,  # type: ignore[arg-type]
    )
    base = load_config()
    fast = run_bt(base, data, o)
    real = EngineCore.on_bars
    try:
        EngineCore.on_bars = lambda self, series, i, m, eq: (i, None)  # type: ignore[method-assign,assignment]
        full = run_bt(base, data, o)
    finally:
        EngineCore.on_bars = real  # type: ignore[method-assign]
    assert _fingerprint(fast) == _fingerprint(full)


def test_walk_forward_windows_from_a_start_inside_a_bar_do_not_overlap_the_test() -> None:
    """``--start`` 30 s into a bar began the windows there: every training window ended 30 s
    into a bar, so its run took that bar, whose close (30 s into the test window) the test
    window's first decision also opened on, and the report's window times matched no bar. The
    windows begin at the first bar at or after ``--start``: every window is whole bars, and
    its in-sample row is the backtest of exactly its training bars."""
    data = bars(600)
    start = T0 + 30 * NS
    o = BacktestOptions(strategy="ema_cross", qty=0.1, breakers=False, start_ns=start)
    combos = [{"fast": 3, "slow": 10}, {"fast": 5, "slow": 15}]
    wf = walk_forward(
        load_config(), data, o, combos, train_s=3 * 3600, test_s=3600, sort="pnl", cluster=SERIAL
    )
    assert wf.windows[0].window.train_start == T0 + MINUTE  # the first bar after --start
    for w in wf.windows:
        win = w.window
        for edge in (win.train_start, win.train_end, win.test_start, win.test_end):
            assert (edge - T0) % MINUTE == 0
        assert w.best is not None and w.best.metrics is not None
        direct = run_bt(
            load_config(),
            data,
            replace(o, params=w.best.params, start_ns=win.train_start, end_ns=win.train_end),
        )
        assert w.best.metrics == direct.metrics and direct.metrics.bars == 180


# ------------------------------------------------------------------ whole configs: the merge


def _book_by_hand(
    t: int, fills: list[Any], closes: dict[str, tuple[np.ndarray, np.ndarray]], cash: float
) -> float:
    """The book's equity at ``t`` from what was known at ``t``: the fills stamped by then and
    each symbol's last close at or before ``t``."""
    equity = cash
    held: dict[str, float] = {}
    for f in fills:
        if f.ts <= t:
            sign = 1.0 if f.side == "buy" else -1.0
            equity -= sign * f.qty * f.price + f.fee
            held[f.symbol] = held.get(f.symbol, 0.0) + sign * f.qty
    for sym, qty in held.items():
        when, price = closes[sym]
        k = int(np.searchsorted(when, t, side="right")) - 1
        equity += qty * price[k]
    return equity


def test_a_whole_config_of_1m_and_5m_bars_never_marks_a_bar_before_it_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bars of all symbols were merged on their *open*: a 5-minute bar opening at 10:00 went
    through the core right after the 1-minute bar of 10:00, so its 10:05 close marked the book,
    filled orders (stamped 10:05) and fed the limits and the kill switch while the 1-minute
    bars of 10:01 to 10:04 were still to trade; the equity curve went back in time and read
    prices four minutes early. Merged on the close, every equity sample is the book as it stood
    then (recomputed by hand from the fills and the closes known at that time)."""
    from engine.research.portfolio import PortfolioRun, run_portfolio
    from tests.test_research_sweep import _config, _strategy

    def series(n: int, minutes: int, seed: int, symbol: str) -> MarketData:
        rng = np.random.default_rng(seed)
        close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.004, n)))
        open_ = np.concatenate([[100.0], close[:-1]])
        ts = T0 + np.arange(n, dtype=np.int64) * minutes * MINUTE
        high, low = np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999
        vol = np.full(n, 1e6)
        return MarketData.from_bars(
            ts, open_, high, low, close, vol, symbol=symbol, timeframe_s=60 * minutes
        )

    data = {"BTC/USDT": series(1_500, 1, 1, "BTC/USDT"), "ETH/USDT": series(300, 5, 2, "ETH/USDT")}
    one = {"model": "fixed_qty", "qty": 1.0}
    cfg = _config(
        [
            _strategy("a", "ema_cross", ["BTC/USDT"], sizing=one),
            _strategy("b", "ema_cross", ["ETH/USDT"], sizing=one, timeframe_s=300),
        ],
        safety={"breakers": {"consecutive_losses": 1000, "global_consecutive_losses": 1000}},
    )
    runs: list[PortfolioRun] = []
    finish = PortfolioRun.finish

    def kept(self: PortfolioRun) -> int:
        runs.append(self)
        return finish(self)

    monkeypatch.setattr(PortfolioRun, "finish", kept)
    r = run_portfolio(cfg, data, BacktestOptions(warmup=30, limits=False))
    assert all(ln.trades > 5 for ln in r.lines)
    assert np.all(np.diff(r.ts) > 0)  # the curve moves forward in time
    closes = {
        sym: (np.asarray(d.ts) + d.timeframe_s * NS, np.asarray(d.cols[3]))
        for sym, d in data.items()
    }
    cash = cfg.portfolio.starting_cash
    by_hand = [_book_by_hand(int(t), runs[0].fills, closes, cash) for t in r.ts]
    assert r.equity.tolist() == pytest.approx(by_hand, abs=1e-6)


def test_walk_forward_on_quotes_warms_up_before_the_window_not_inside_it() -> None:
    """On quotes the warm-up is N bars of the strategy's timeframe (10 s for the configured
    ema_cross), but each window's run started N *seconds* early: at ``--warmup 30`` the warm-up
    ate 270 s of every window, so each out-of-sample figure covered 153 of its 180 bars and
    each in-sample one 333 of 360. The lead is N bars of the strategy's timeframe."""
    data = quotes(3 * 3600, 1)
    o = BacktestOptions(strategy="ema_cross", qty=0.1, warmup=30, breakers=False)
    combos = [{"fast": 3, "slow": 10}, {"fast": 5, "slow": 15}]
    wf = walk_forward(
        load_config(), data, o, combos, train_s=3600, test_s=1800, sort="pnl", cluster=SERIAL
    )
    assert len(wf.windows) == 3
    for w in wf.windows:
        assert w.oos is not None and w.oos.metrics is not None
        assert w.oos.metrics.bars == 180  # 30 minutes of 10 s bars
        assert w.best is not None and w.best.metrics is not None
        if w.window.index > 0:  # the first window has nothing before it (documented)
            assert w.best.metrics.bars == 360


# ------------------------------------------------------------------ resting limits


LIMITS = {"fast": 5, "slow": 20, "order_type": "limit", "limit_offset_ticks": 1, "limit_ttl_s": 300}


def test_a_resting_limit_meets_every_later_bar_close_in_close_mode() -> None:
    """``--fill close`` offered the broker a quote only on the bar a decision came on: a limit
    entry one tick inside the close rested and met no later bar, so 93 limit orders expired
    and the run traded nothing (live: 49 trades). Each later bar's close is offered, as
    ``next-open`` offers each later bar's open: a limit fills at its price when a close trades
    strictly through it, never on a close that merely touches it."""
    data = bars(3_000, seed=2)
    base = load_config()
    o = BacktestOptions(
        strategy="ema_cross", params=LIMITS, fill="close", qty=0.1, warmup=50, breakers=False
    )
    r = run_bt(base, data, o)
    assert r.metrics.trades > 20
    stamps, close = np.asarray(data.ts), np.asarray(data.cols[3])
    makers = [f for f in r.fills if f.liquidity == "maker"]
    assert len(makers) > 20
    for f in makers:
        k = int(np.searchsorted(stamps, f.ts - 1 - MINUTE))  # the bar whose close it met
        assert stamps[k] + MINUTE == f.ts - 1
        assert close[k] < f.price if f.side == "buy" else close[k] > f.price
    live = run_bt(base, data, replace(o, fill="live"))
    assert abs(r.metrics.trades - live.metrics.trades) <= live.metrics.trades // 4


@pytest.mark.parametrize("fill", ["close", "next-open"])
def test_a_resting_limit_meets_every_later_quote(fill: str) -> None:
    """On quotes, ``close`` and ``next-open`` gave a resting limit only the quotes a decision
    came on; it fills on the first later quote that trades through it, as in ``live``."""
    data = quotes(6_000, 1, seed=3, size=1_000.0)  # deep: a limit's queue clears fast
    base = load_config()
    o = BacktestOptions(
        strategy="ema_cross", params=LIMITS, fill=fill, qty=0.1, breakers=False, timeframe_s=10
    )
    r = run_bt(base, data, o)
    stamps = np.asarray(data.ts)
    bid, ask = (np.asarray(c) for c in data.cols[:2])
    makers = [f for f in r.fills if f.liquidity == "maker"]
    assert len(makers) >= 8
    for f in makers:  # at its limit, on a quote through it
        k = int(np.searchsorted(stamps, f.ts))
        assert stamps[k] == f.ts
        assert ask[k] < f.price if f.side == "buy" else bid[k] > f.price
    live = run_bt(base, data, replace(o, fill="live"))
    assert abs(r.metrics.trades - live.metrics.trades) <= live.metrics.trades // 4


# ------------------------------------------------------------------ invariants that held


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(["ema_cross", "donchian_breakout"]),
    fill=st.sampled_from(["live", "close", "next-open"]),
    stop=st.sampled_from([None, 0.3]),
)
def test_fills_trade_inside_their_bar_and_the_figures_add_up(
    seed: int, kind: str, fill: str, stop: float | None
) -> None:
    """Held: with no slippage every market fill is at a price its bar traded (``close``: the
    signal bar's close; ``next-open``: the next bar's open; a stop: inside the bar's range or
    at a gapped open), the fees are the fee rate on each fill's notional, and the PnL is the
    closed trades' net plus the open trade at the last close."""
    data = bars(1_200, seed=seed)
    o = BacktestOptions(
        strategy=kind,
        fill=fill,
        qty=0.1,
        fee_bps=10,
        warmup=50,
        breakers=False,
        allow_short=True,
        slippage="none",
        stop_loss_pct=stop,
    )
    r = run_bt(load_config(), data, o)
    stamps = np.asarray(data.ts)
    open_, high, low, close = (np.asarray(c) for c in data.cols[:4])
    for f in r.fills:
        assert f.fee == pytest.approx(f.qty * f.price * 0.001, rel=1e-12)
        k = int(np.searchsorted(stamps, f.ts, side="right")) - 1  # the bar it is stamped in
        if fill == "close" and f.ts - 1 == stamps[k] and f.price == close[k - 1]:
            continue  # the signal bar's close, stamped 1 ns after it
        if fill == "live" and f.ts == stamps[k] and f.price == close[k - 1]:
            continue  # the close quote of the bar that closed at this instant
        if fill == "next-open" and f.price == open_[k]:
            continue
        assert low[k] <= f.price <= high[k], (fill, f)  # a stop inside the bar
    m = r.metrics
    closed = sum(t.net_pnl for t in r.trips if not t.is_open)
    assert m.pnl == pytest.approx(closed + m.open_trade_pnl, abs=1e-9)
    assert m.fees_paid == pytest.approx(sum(f.fee for f in r.fills), abs=1e-12)
