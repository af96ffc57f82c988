"""Fingerprints of backtests through the core: change the code, the fingerprints must not move.

A speed-up of the order path (core, checks, paper broker, portfolio, breakers) must give the same
fills, prices, fees, equity curve (bit for bit), denials, events and report header. This runs a
set of deterministic backtests that between them take every fill model, both slippage models,
breakers on (some tripping) and off, limits on and off, protective exits (stop, take-profit,
trailing ATR, time stop), limit orders, volatility sizing, capped orders (the bar's or quote's
displayed size) and quote data, and prints one line per run: counts and a hash of each part of
the result, plus a hash of every item the core hands the backtest loop (``BacktestRun.handle``:
events, submissions, cancels, in order, as ``repr``).

Run it on the code before and after a change and diff the output (the seconds in brackets aside):

    .venv/bin/python bench/backtest_fingerprint.py > before.txt   # on main
    .venv/bin/python bench/backtest_fingerprint.py > after.txt    # on the branch
    diff <(sed 's/ ([0-9.]*s)$//' before.txt) <(sed 's/ ([0-9.]*s)$//' after.txt)

Run: .venv/bin/python bench/backtest_fingerprint.py [--bars N]  (default 300,000; ~20 s)
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backtest_throughput import START_NS, base_config, options, synthetic_bars
from engine.backtest import (
    QUOTES,
    BacktestOptions,
    MarketData,
    build_backtest_config,
    run_backtest_core,
    simulation,
)
from engine.config import Config, parse_config
from tests.conftest import default_dict

_items = hashlib.sha256()
_count = 0
_real_handle = simulation.BacktestRun.handle


def _hashing_handle(self: simulation.BacktestRun, items: list[Any]) -> None:
    """``BacktestRun.handle``, hashing every item first (the order the loop sees them)."""
    global _count
    for item in items:
        _items.update(repr(item).encode())
        _count += 1
    _real_handle(self, items)


def _h(x: Any) -> str:
    return hashlib.sha256(repr(x).encode()).hexdigest()[:12]


def _h_array(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:12]


def synthetic_quotes(n: int, seed: int = 7) -> MarketData:
    """A seeded random walk of quotes ~50-400 ms apart, spread 0.01-2 USDT, sizes ~1 BTC."""
    rng = np.random.default_rng(seed)
    mid = 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.0003, n)))
    spread = np.abs(rng.normal(0.0, 0.5, n)) + 0.01
    ts = START_NS + np.cumsum(rng.integers(50_000_000, 400_000_000, n))
    bid_size = rng.lognormal(0.0, 0.5, n)
    ask_size = rng.lognormal(0.0, 0.5, n)
    cols = tuple(
        [float(v) for v in c] for c in (mid - spread / 2, mid + spread / 2, bid_size, ask_size)
    )
    return MarketData(QUOTES, "arrays", "synthetic", [int(t) for t in ts], cols, "BTC/USDT")


def fingerprint(name: str, data: MarketData, opts: BacktestOptions, base: Config) -> str:
    global _items, _count
    _items = hashlib.sha256()
    _count = 0
    cfg = build_backtest_config(base, data, opts)
    t0 = time.perf_counter()
    r = run_backtest_core(cfg, data, opts)
    took = time.perf_counter() - t0
    rest = (
        r.fill_refs,
        r.fill_realized,
        r.fill_positions,
        r.counters,
        r.denied,
        r.rejected,
        r.safety_notes,
        r.unfilled,
        r.final_portfolio,
        r.exits,
    )
    return (
        f"{name:14} fills={len(r.fills):6} equity={r.metrics.final_equity!r} "
        f"items={_count} items#{_items.hexdigest()[:12]} fills#{_h(r.fills)} "
        f"equity#{_h_array(r.equity)} position#{_h_array(r.position)} ts#{_h_array(r.ts)} "
        f"rest#{_h(rest)} header#{_h(r.header)} ({took:.1f}s)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=300_000)
    n = ap.parse_args().bars
    simulation.BacktestRun.handle = _hashing_handle  # type: ignore[method-assign]
    bars = synthetic_bars(n)
    half = synthetic_bars(n // 2, seed=99)
    quotes = synthetic_quotes(n // 3)
    relaxed = base_config()  # the throughput bench's: loss streaks relaxed
    default = parse_config(default_dict())  # breakers as shipped: some trip
    bench = options(True)
    limit = {"fast": 10, "slow": 30, "order_type": "limit", "limit_offset_ticks": 1}
    limit["limit_ttl_s"] = 300
    vol = replace(bench, strategy="rsi_reversion", params={}, qty=None)  # volatility sizing
    on_quotes = BacktestOptions(
        strategy="ema_cross",
        params={"fast": 5, "slow": 20},
        qty=0.1,
        cash=1e6,
        fee_bps=10.0,
        fill="live",
        slippage="model",
        timeframe_s=1,
        warmup=50,
    )
    runs: list[tuple[str, MarketData, BacktestOptions, Config]] = [
        ("bench", bars, bench, relaxed),
        ("no-breakers", half, options(False), relaxed),
        (
            "live-model",
            half,
            replace(bench, fill="live", slippage="model", allow_short=True),
            default,
        ),
        (
            "next-open-exit",
            half,
            replace(bench, fill="next-open", slippage="model", stop_loss_pct=1.0, trailing_atr=2.0),
            relaxed,
        ),
        (
            "close-exits",
            half,
            replace(bench, stop_loss_pct=0.5, take_profit_pct=1.0, time_stop_bars=50),
            relaxed,
        ),
        ("limit-live", half, replace(bench, fill="live", slippage="model", params=limit), relaxed),
        (
            "limit-no-brk",
            half,
            replace(options(False), fill="live", slippage="model", params=limit),
            relaxed,
        ),
        (
            "no-limits-frac",
            half,
            replace(bench, fill="live", qty=None, fraction=0.05, limits=False, spread_bps=2.0),
            relaxed,
        ),
        ("rsi-vol-close", half, vol, relaxed),
        ("rsi-vol-live", half, replace(vol, fill="live", slippage="model"), relaxed),
        (
            "donchian-next",
            half,
            replace(
                bench, strategy="donchian_breakout", params={}, fill="next-open", trailing_atr=3.0
            ),
            relaxed,
        ),
        (
            "bars-capped",
            half,
            replace(
                options(False), qty=80.0, limits=False, fill="live", slippage="model", cash=1e8
            ),
            relaxed,
        ),
        ("quotes-live", quotes, on_quotes, relaxed),
        ("quotes-close", quotes, replace(on_quotes, fill="close", stop_loss_pct=0.2), relaxed),
        (
            "quotes-capped",
            quotes,
            replace(on_quotes, qty=3.0, limits=False, breakers=False),
            relaxed,
        ),
    ]
    for name, data, opts, base in runs:
        print(fingerprint(name, data, opts, base), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
