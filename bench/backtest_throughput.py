"""Throughput of a backtest through the full engine core.

EMA(10)/EMA(30) crossover, long-only, fixed quantity, fee 10 bps, fill at the signal bar's close,
no slippage, 1,000 warm-up bars, over one million deterministic synthetic 1-minute bars (a seeded
geometric random walk made here with numpy). Every bar goes through the engine core: the boundary
validator, marks, loss limits, breakers, the clock tick, the strategy, and for signals sizing,
every pre-trade check, the safety and approval gates, the paper broker and the portfolio. Runs of
bars where none of these can act go through ``EngineCore.on_bars`` (each check asked once per run,
the strategy's ``scan`` over the columns), the rest through ``on_bar``, as ``cockpit backtest``.
The config is the embedded default (pre-trade limits, breakers, kill switch all on) with the
loss-streak breakers and the kill switch's loss limits relaxed, so the strategy keeps trading for
the whole million bars (fees alone would otherwise trip them within weeks): the breakers and the
loss-limit checks still run on every bar. Bar generation is outside the timed region. The
same bars then go through a plain loop of the same rules (``plain_loop``): its fill count and
final equity must be the core's, printed as "the same" (or DIFFERENT).

Run: .venv/bin/python bench/backtest_throughput.py [--bars N] [--no-breakers] [--profile [N]]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import describe
from engine.backtest import (
    BacktestOptions,
    MarketData,
    build_backtest_config,
    run_backtest_core,
)
from engine.config import parse_config
from tests.conftest import default_dict, merge

SEED = 20240808
START_NS = 1_704_067_200 * 1_000_000_000  # 2024-01-01T00:00:00Z
QTY = 0.1  # BTC: about 3,000 USDT a trade, inside the default pre-trade limits all the way
CASH = 1_000_000.0  # so ~25,000 fills of fees do not starve the account


def synthetic_bars(n: int, seed: int = SEED) -> MarketData:
    """A seeded geometric random walk of 1-minute OHLCV bars (80% annual volatility)."""
    rng = np.random.default_rng(seed)
    sigma = 0.8 / np.sqrt(525_600)
    log_ret = rng.normal(0.0, sigma, n)
    close = 30_000.0 * np.exp(np.cumsum(log_ret))
    open_ = np.empty(n)
    open_[0] = 30_000.0
    open_[1:] = close[:-1]
    wick = np.abs(rng.normal(0.0, sigma / 2, (2, n)))
    high = np.maximum(open_, close) * (1.0 + wick[0])
    low = np.minimum(open_, close) * (1.0 - wick[1])
    volume = rng.lognormal(np.log(2e6), 0.5, n)
    ts = START_NS + np.arange(n, dtype=np.int64) * 60_000_000_000
    return MarketData.from_bars(
        ts, open_, high, low, close, volume, symbol="BTC/USDT", timeframe_s=60, path="synthetic"
    )


def options(breakers: bool) -> BacktestOptions:
    return BacktestOptions(
        strategy="ema_cross",
        params={"fast": 10, "slow": 30},
        qty=QTY,
        cash=CASH,
        fee_bps=10.0,
        fill="close",
        slippage="none",
        warmup=1000,
        allow_short=False,
        breakers=breakers,
    )


def base_config():
    relaxed = merge(
        default_dict(),
        {
            "safety": {
                "breakers": {
                    "consecutive_losses": 1_000_000,
                    "global_consecutive_losses": 1_000_000,
                    "max_unreviewed_fills": 1_000_000_000,
                },
                "kill_switch": {"daily_loss_limit_pct": 100.0, "drawdown_limit_pct": 100.0},
            }
        },
    )
    return parse_config(relaxed)


def plain_loop(data: MarketData, warmup: int = 1000) -> tuple[int, float]:
    """The peer workload as a plain loop, the yardstick for the core's answer: EMA(10) and
    EMA(30) of closes (alpha 2/(n+1), seeded with the SMA of the first n, as the strategy's),
    a cross is a change of sign of fast - slow after the first sign is known, long-only: buy
    QTY on a cross up when flat, sell it on a cross down; fill at the signal bar's close, fee
    10 bps of the notional; no orders in the warm-up bars. Returns (fills, final equity)."""
    from engine.indicators import EMA

    fast, slow = EMA(10), EMA(30)
    fee_rate = 10.0 / 10_000.0
    closes = data.col_arrays[3].tolist()
    cash, held, fills, last = CASH, 0.0, 0, 0
    for i, close in enumerate(closes):
        f, s = fast.update(close), slow.update(close)
        if f is None or s is None or f == s:
            continue
        sign = 1 if f > s else -1
        if sign == last:
            continue
        prev, last = last, sign
        if prev == 0 or i < warmup:
            continue
        if sign > 0 and not held:
            cash -= QTY * close * (1.0 + fee_rate)
            held, fills = QTY, fills + 1
        elif sign < 0 and held:
            cash += held * close * (1.0 - fee_rate)
            held, fills = 0.0, fills + 1
    return fills, cash + held * closes[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--no-breakers", action="store_true", help="--no-breakers (board disabled)")
    ap.add_argument(
        "--profile",
        nargs="?",
        const=25,
        type=int,
        metavar="N",
        help="also run under cProfile and print the top N functions by own time",
    )
    args = ap.parse_args()
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    data = synthetic_bars(args.bars)
    gen_s = time.perf_counter() - t0
    opts = options(not args.no_breakers)
    cfg = build_backtest_config(base_config(), data, opts)
    result = run_backtest_core(cfg, data, opts)
    m = result.metrics
    bars = result.events_processed
    print(f"bars generated      {len(data):,} in {gen_s:.2f} s (not timed)")
    print(f"bars through core   {bars:,} (+{opts.warmup:,} warm-up bars)")
    print(f"seconds             {result.elapsed_s:.2f}")
    print(f"bars/s              {result.events_per_s:,.0f}")
    print(f"us/bar              {result.elapsed_s / max(bars, 1) * 1e6:.2f}")
    print(f"fills               {m.fills:,}")
    print(f"round trips         {m.trades:,}")
    print(f"final equity        {m.final_equity:,.2f} {result.header['quote_currency']}")
    print(f"breakers            {'off' if args.no_breakers else 'on (loss streaks relaxed)'}")
    print(f"machine             {describe(load)}")
    t0 = time.perf_counter()
    ref_fills, ref_equity = plain_loop(data, opts.warmup)
    ref_s = time.perf_counter() - t0
    same = ref_fills == m.fills and abs(ref_equity - m.final_equity) <= 1e-6 * abs(ref_equity)
    print(
        f"plain loop          {ref_fills:,} fills, final equity {ref_equity:,.2f} "
        f"({ref_s:.2f} s): {'the same' if same else 'DIFFERENT'}"
    )
    if args.profile:
        profile(data, cfg, opts, args.profile)
    return 0


def profile(data: MarketData, cfg, opts: BacktestOptions, top: int) -> None:
    prof = cProfile.Profile()
    prof.enable()
    result = run_backtest_core(cfg, data, opts)
    prof.disable()
    bars = result.events_processed
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (file, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():
        where = f"{Path(file).name}:{line}" if line else file
        rows.append((tottime, cumtime, calls, f"{name} ({where})"))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    print()
    print("constructors of frozen dataclasses, timed alone (cProfile cannot attribute them: they")
    print("all share the label '__init__ (<string>:2)'):")
    for name, us in constructor_costs():
        print(f"  {name:44} {us:6.2f} us each")
    print()
    print(f"cProfile (profiler overhead inflates every figure; shares are what matters): {bars:,}")
    print(f"bars, {total:.2f} s of own time; per bar in microseconds")
    print(f"{'own us/bar':>10} {'share':>6} {'cum us/bar':>10} {'calls/bar':>9}  function")
    for tottime, cumtime, calls, name in rows[:top]:
        print(
            f"{tottime / bars * 1e6:10.3f} {tottime / total:6.1%} {cumtime / bars * 1e6:10.3f} "
            f"{calls / bars:9.2f}  {name}"
        )


def constructor_costs(n: int = 200_000) -> list[tuple[str, float]]:
    from engine.events import MarksRecorded
    from engine.types import Bar, Quote

    out = []
    for name, make in (
        (
            "Bar (on_bar only; on_bars builds none)",
            lambda: Bar("B", 1, 60, 1.0, 2.0, 0.5, 1.5, 9.0),
        ),
        (
            "Quote (bar quote: once per run of bars)",
            lambda: Quote("B", 1.0, 1.0, 2.0, 2.0, 1, 1),
        ),
        (
            "MarksRecorded (core, once a day of data)",
            lambda: MarksRecorded(1, {"B": 1.0}, 1.0, 1.0, 1.0, 1.0),
        ),
    ):
        t0 = time.perf_counter()
        for _ in range(n):
            make()
        t1 = time.perf_counter()
        for _ in range(n):
            pass
        empty = time.perf_counter() - t1
        out.append((name, (t1 - t0 - empty) / n * 1e6))
    return out


if __name__ == "__main__":
    sys.exit(main())
