"""One backtest end to end: run the loop, compute the figures, assemble the result."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.backtest.data import BARS, MarketData, load_market_data
from engine.backtest.errors import BacktestError, NoUsableDataError, StrategyRaised
from engine.backtest.header import build_header, event_note, final_portfolio
from engine.backtest.options import BacktestOptions, build_backtest_config
from engine.backtest.result import BacktestResult
from engine.backtest.simulation import BacktestRun, RunCancelled
from engine.config import Config
from engine.core import StrategyFailed
from engine.metrics import bar_gaps, compute_metrics, idle_intervals, iso


def run_backtest_core(
    cfg: Config,
    data: MarketData,
    opts: BacktestOptions | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: Any = None,
) -> BacktestResult:
    """Run the engine core over ``data`` with ``cfg`` (see ``build_backtest_config``).

    Safe to call from a worker thread (nothing global is touched); ``progress(done, total)`` is
    called every 65,536 events and a set ``cancel`` (anything with ``is_set()``, e.g. a
    ``threading.Event``) stops the run with ``BacktestError("cancelled")``.
    """
    opts = opts or BacktestOptions()
    data = data.between(opts.start_ns, opts.end_ns)
    if not len(data):
        raise BacktestError(
            "no data between "
            f"{iso(opts.start_ns) if opts.start_ns is not None else 'the start'} and "
            f"{iso(opts.end_ns) if opts.end_ns is not None else 'the end'}"
        )
    if data.kind == BARS and opts.warmup >= len(data):
        # Every bar would go to the warm-up and none be traded: a report of 0 trades (a sweep's
        # row of figures) that reads as a strategy that never signalled.
        raise BacktestError(
            f"--warmup {opts.warmup:,} takes all {len(data):,} bars of the run: nothing would "
            "be traded; lower --warmup or give more data"
        )
    run = BacktestRun(cfg, opts)
    t0 = time.perf_counter()
    try:
        if data.kind == BARS:
            tf = opts.timeframe_s or data.timeframe_s or data.infer_timeframe()
            ts, eq, pos, processed = run.run_bars(data, tf, progress, cancel)
            interval = tf
            warm = min(opts.warmup, len(data))
            idle = (0, 0)  # bar gaps are counted in the header, not filled (engine/metrics.py)
        else:
            ts, eq, pos, processed = run.run_quotes(data, progress, cancel)
            interval = min(s.timeframe_s for s in cfg.strategies)
            warm = opts.warmup
            # Intervals no quote fell in: zero returns in the ratios, which are annualised per
            # interval (3,000 quotes 10 s apart scored the Sharpe of 3,000 one-second periods).
            idle = idle_intervals(np.asarray(ts, dtype=np.int64), interval, np.asarray(pos))
    except RunCancelled:
        raise BacktestError("cancelled") from None
    except StrategyFailed as exc:
        raise StrategyRaised(str(exc)) from None
    elapsed = time.perf_counter() - t0
    core = run.core
    rejected = dict(core.validator.rejected)
    if core.validator.accepted == 0 and rejected:  # (not a run whose warm-up took it all)
        codes = ", ".join(f"{k} {v:,}" for k, v in sorted(rejected.items()))
        raise NoUsableDataError(
            f"all {len(data):,} {data.kind} in {data.path} were rejected at the boundary "
            f"({codes}); nothing to backtest"
        )
    unfilled = run.finish()
    marks = {s: pos_.mark for s, pos_ in run.portfolio.positions.items()}
    metrics, trips = compute_metrics(
        np.asarray(ts, dtype=np.int64),
        np.asarray(eq, dtype=np.float64),
        np.asarray(pos, dtype=np.float64),
        run.fills,
        run.refs,
        interval,
        marks,
        idle,
    )
    header = build_header(cfg, opts, data, run, interval=interval, warmup_bars=warm)
    # Bars missing inside the traded span (the samples after the first are the bars' closes).
    header["gaps"] = bar_gaps(np.asarray(ts[1:]), interval) if data.kind == BARS else None
    return BacktestResult(
        header=header,
        metrics=metrics,
        trips=trips,
        fills=run.fills,
        fill_refs=run.refs,
        fill_realized=run.realized,
        fill_positions=run.positions,
        ts=np.asarray(ts, dtype=np.int64),
        equity=np.asarray(eq, dtype=np.float64),
        position=np.asarray(pos, dtype=np.float64),
        counters=dict(core.counters),
        denied=dict(run.denied),
        rejected=rejected,
        safety_notes=[event_note(e) for e in run.notable],
        events=run.notable,
        unfilled=unfilled,
        events_processed=processed,
        elapsed_s=elapsed,
        final_portfolio=final_portfolio(run.portfolio),
        exits={k: v.to_dict() for k, v in sorted(core.exit_stats.items())},
    )


def run_backtest(
    base: Config,
    data: MarketData | str | Path,
    opts: BacktestOptions | None = None,
    **kwargs: Any,
) -> BacktestResult:
    """Load (if a path), build the run's config from ``base`` and run it."""
    opts = opts or BacktestOptions()
    if not isinstance(data, MarketData):
        data = load_market_data(data, timeframe_s=opts.timeframe_s)
    cfg = build_backtest_config(base, data, opts)
    return run_backtest_core(cfg, data, opts, **kwargs)


def compare_slippage(
    base: Config, data: MarketData, opts: BacktestOptions, **kwargs: Any
) -> tuple[BacktestResult, BacktestResult]:
    """The same backtest with the slippage model and without it: (with, without)."""
    with_model = run_backtest(base, data, replace(opts, slippage="model"), **kwargs)
    without = run_backtest(base, data, replace(opts, slippage="none"), **kwargs)
    return with_model, without


def wins_only_without_slippage(with_model: BacktestResult, without: BacktestResult) -> bool:
    """The comparison's warning: profitable with ideal fills, not with the model's slippage."""
    return without.metrics.pnl > 0.0 and with_model.metrics.pnl <= 0.0
