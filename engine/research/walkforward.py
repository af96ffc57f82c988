"""Walk-forward optimisation: choose on a training window, trade the next, unseen window.

Windows roll forward by the test length: training ``[t, t + train)``, test ``[t + train, t +
train + test)``, then ``t += test``, for every whole test window inside the data. In each
training window every combination is backtested and the best by the sort metric wins (ties: the
earlier combination); the winner alone then trades the test window. The report puts each
window's in-sample figure beside its out-of-sample one, so a strategy that only fits its past
shows it. With ``--warmup N`` each window's run starts N bars before the window (where the data
has them) so its indicators are warm when the window opens and the window itself is all
trading; the first window may have fewer bars before it than that.

Both phases run on the cluster: first every (window, combination), then every window's winner.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from engine.backtest.data import BARS, MarketData
from engine.backtest.errors import BacktestError
from engine.backtest.options import BacktestOptions
from engine.config import Config
from engine.metrics import iso
from engine.research.cluster import ClusterOptions, Progress, ProgressFn, task_runner
from engine.research.params import MAX_COMBINATIONS
from engine.research.sweep import (
    SORT_METRICS,
    PackedData,
    Skipped,
    SweepRow,
    SweepTask,
    data_summary,
    none_valid,
    plan,
    sort_rows,
    task_function,
)
from engine.types import NS_PER_SECOND

_UNITS = {"m": 60, "h": 3_600, "d": 86_400, "w": 7 * 86_400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")


def parse_duration_s(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``2w`` as seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration (e.g. 30d, 12h, 90m, 2w)")
    seconds = int(float(m.group(1)) * _UNITS[m.group(2)])
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return seconds


@dataclass(frozen=True)
class Window:
    index: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.index + 1,
            "train": [iso(self.train_start), iso(self.train_end)],
            "test": [iso(self.test_start), iso(self.test_end)],
        }


def windows(first_ts: int, end_ts: int, train_s: int, test_s: int) -> list[Window]:
    """Every whole (train, test) pair in ``[first_ts, end_ts)``, rolling by the test length."""
    train, test = train_s * NS_PER_SECOND, test_s * NS_PER_SECOND
    out: list[Window] = []
    t = first_ts
    while t + train + test <= end_ts:
        out.append(Window(len(out), t, t + train, t + train, t + train + test))
        t += test
    return out


@dataclass
class WindowResult:
    window: Window
    best: SweepRow | None  # the winner in sample (None: no combination ran there)
    oos: SweepRow | None  # the winner out of sample
    ran: int

    def to_dict(self, metric: str) -> dict[str, Any]:
        def figs(row: SweepRow | None) -> dict[str, Any] | None:
            if row is None or row.metrics is None:
                return None if row is None else {"error": row.error}
            m = row.metrics
            return {
                metric: row.value(metric),
                "pnl": m.pnl,
                "return_pct": m.return_pct,
                "trades": m.trades,
                "sharpe": m.sharpe,
                "max_drawdown_pct": m.max_drawdown_pct,
            }

        return {
            **self.window.to_dict(),
            "params": dict(self.best.params) if self.best is not None else None,
            "combinations_run": self.ran,
            "in_sample": figs(self.best),
            "out_of_sample": figs(self.oos),
        }


@dataclass
class WalkForwardResult:
    strategy: str
    param_names: list[str]
    sort: str
    train_s: int
    test_s: int
    windows: list[WindowResult]
    skipped: list[Skipped]
    combinations: int
    cluster: str
    elapsed_s: float
    data: dict[str, Any]
    options: dict[str, Any]
    random: dict[str, Any] | None = None  # --random N --seed S: how the combinations were drawn

    def overall(self) -> dict[str, Any]:
        """In sample against out of sample over every window: total PnL, trades, the mean of
        the sort metric, and the efficiency (out-of-sample PnL per day over in-sample's)."""
        metric = self.sort

        def side(get: str) -> dict[str, Any]:
            rows = [getattr(w, get) for w in self.windows]
            rows = [r for r in rows if r is not None and r.metrics is not None]
            values = [v for r in rows if (v := r.value(metric)) is not None]
            return {
                "windows": len(rows),
                "pnl": sum(r.metrics.pnl for r in rows),
                "trades": sum(r.metrics.trades for r in rows),
                f"mean_{metric}": sum(values) / len(values) if values else None,
            }

        ins, oos = side("best"), side("oos")
        n = len(self.windows)
        is_per_day = ins["pnl"] / (n * self.train_s / 86_400) if n else 0.0
        oos_per_day = oos["pnl"] / (n * self.test_s / 86_400) if n else 0.0
        efficiency = oos_per_day / is_per_day if is_per_day > 0 else None
        return {"in_sample": ins, "out_of_sample": oos, "efficiency": efficiency}

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "params": self.param_names,
            "sort": self.sort,
            "train_s": self.train_s,
            "test_s": self.test_s,
            "combinations": self.combinations,
            "skipped": len(self.skipped),
            "cluster": self.cluster,
            "seconds": self.elapsed_s,
            "data": self.data,
            "options": self.options,
            "random": self.random,
            "windows": [w.to_dict(self.sort) for w in self.windows],
            "overall": self.overall(),
        }


def walk_forward(
    base: Config,
    data: MarketData,
    opts: BacktestOptions,
    combos: Sequence[dict[str, Any]],
    *,
    train_s: int,
    test_s: int,
    sort: str = "sharpe",
    cluster: ClusterOptions | None = None,
    progress: ProgressFn | None = None,
    cancel: Any = None,
) -> WalkForwardResult:
    if sort not in SORT_METRICS:
        raise BacktestError(f"--sort must be one of {', '.join(SORT_METRICS)}, got {sort!r}")
    if not combos:
        raise BacktestError("nothing to optimise: give at least one --param NAME=VALUES")
    cluster = cluster or ClusterOptions()
    first_ts, last_ts = data.first_ts, data.last_ts
    if first_ts is None or last_ts is None:
        raise BacktestError("no data")
    tf = opts.timeframe_s or data.timeframe_s
    if tf is None:
        tf = data.infer_timeframe() if data.kind == BARS else 1
    if data.kind == BARS:
        for flag, seconds in (("--train", train_s), ("--test", test_s)):
            if seconds % tf:
                # A window of 30 s over 1-minute bars holds no bar, or cuts one in two (its
                # close past the window's end): windows are whole bars.
                raise BacktestError(
                    f"{flag}: {seconds:,} s is not a whole number of the data's {tf:,} s bars; "
                    f"give a multiple of {tf:,} s"
                )
    first = first_ts if opts.start_ns is None else max(first_ts, opts.start_ns)
    if data.kind == BARS and first > first_ts:
        # The windows start at the first bar at or after --start: from a --start inside a bar,
        # every window's end cut a bar in two, and the training run took the bar whose close
        # lies inside the test window (the windows are whole bars from the first one).
        inside = data.between(first, None).first_ts
        first = inside if inside is not None else first
    end = last_ts + (tf * NS_PER_SECOND if data.kind == BARS else 1)
    if opts.end_ns is not None:
        end = min(end, opts.end_ns)
    if first >= end:  # --start at or after the data's end, or --end before its start
        raise BacktestError(
            f"--start/--end select none of the data (it runs from {iso(first_ts)} to "
            f"{iso(last_ts)})"
        )
    wins = windows(first, end, train_s, test_s)
    if not wins:
        span_d = (end - first) / NS_PER_SECOND / 86_400
        raise BacktestError(
            f"the data spans {span_d:.1f} days, less than one --train plus --test "
            f"({(train_s + test_s) / 86_400:g} days); shorten them or give more data"
        )
    lead = opts.warmup * tf * NS_PER_SECOND
    # A bar run's warm-up is its first N rows (``run_backtest_core``), so a window's run starts
    # N rows before the window's first row: counted in time (N bar lengths), a gap before the
    # window left fewer rows there and the warm-up ate the window's own first bars (its test
    # figures then covered less than the window, and not the bars the report says).
    stamps = data.ts_array if opts.warmup and data.kind == BARS else None
    if stamps is not None and stamps.size > 1 and not bool(np.all(stamps[1:] >= stamps[:-1])):
        stamps = None  # rows out of order: searchsorted needs them sorted; count in time

    def window_opts(start: int, stop: int) -> BacktestOptions:
        if stamps is None:
            return replace(opts, start_ns=max(first_ts, start - lead), end_ns=stop)
        row = int(np.searchsorted(stamps, start, side="left"))
        return replace(opts, start_ns=int(stamps[max(0, row - opts.warmup)]), end_ns=stop)

    runs = len(wins) * len(combos)
    if runs > MAX_COMBINATIONS:
        raise BacktestError(
            f"the walk-forward has {len(wins):,} windows x {len(combos):,} combinations = "
            f"{runs:,} runs, more than {MAX_COMBINATIONS:,}; lengthen --test (fewer windows), "
            "narrow the grid or sample it with --random N"
        )
    t0 = time.perf_counter()
    # A combination's config does not depend on the window (only its options' start and end
    # do): each is built and checked once, then given every window's training span.
    planned, skipped = plan(base, data, opts, combos)
    if data.kind != BARS and planned:
        # Quotes warm up on N bars of the strategy's timeframe (built from the quotes), not N
        # seconds: with 10 s bars, a lead of N seconds left the warm-up eating 9N s of every
        # window (270 s of a 30-minute test window at --warmup 30).
        bar_s = min(s.timeframe_s for s in planned[0].cfg.strategies)
        lead = opts.warmup * bar_s * NS_PER_SECOND
    tasks: list[SweepTask] = [
        replace(
            task,
            index=w.index * len(planned) + k,
            opts=replace(window_opts(w.train_start, w.train_end), params=task.opts.params),
        )
        for w in wins
        for k, task in enumerate(planned)
    ]
    if not tasks:
        raise none_valid(base, data, opts, combos, skipped)
    per_window = len(tasks) // len(wins)
    total = len(tasks) + len(wins)
    packed = PackedData.pack(data)

    def phase(offset: int) -> ProgressFn | None:
        if progress is None:
            return None
        callback = progress

        def report(p: Progress) -> None:
            callback(Progress(offset + p.done, total, time.perf_counter() - t0))

        return report

    func = task_function(cluster, cancel)
    # One cluster for both rounds (a LocalCluster each cost its start-up twice).
    with task_runner(cluster) as run:
        rows = run(func, packed, tasks, progress=phase(0), cancel=cancel)
        best: list[SweepRow | None] = []
        for w in wins:
            mine = rows[w.index * per_window : (w.index + 1) * per_window]
            ranked = sort_rows(mine, sort)
            top = ranked[0] if ranked and ranked[0].value(sort) is not None else None
            best.append(top)
        test_tasks: list[SweepTask] = []
        for w, top in zip(wins, best, strict=True):
            if top is None:
                continue
            got, _skip = plan(
                base,
                data,
                window_opts(w.test_start, w.test_end),
                [top.params],
                first_index=w.index,
            )
            test_tasks.extend(got)
        oos_rows = run(func, packed, test_tasks, progress=phase(len(tasks)), cancel=cancel)
    oos = {r.index: r for r in oos_rows}
    results = [WindowResult(w, best[w.index], oos.get(w.index), per_window) for w in wins]
    return WalkForwardResult(
        strategy=tasks[0].cfg.strategies[0].kind,
        param_names=list(combos[0]),
        sort=sort,
        train_s=train_s,
        test_s=test_s,
        windows=results,
        skipped=skipped,
        combinations=len(combos),
        cluster=cluster.describe(),
        elapsed_s=time.perf_counter() - t0,
        data={**data_summary(data, opts), "symbol": tasks[0].cfg.strategies[0].symbols[0]},
        options=opts.to_dict(),
    )
