"""Parameter sweeps: one backtest per combination, through the same core, on a cluster.

The driver builds every combination's config here (``build_backtest_config``: the checks a
single ``cockpit backtest`` makes, so a combination the strategy refuses, such as ``fast >=
slow``, is skipped and counted with its reason rather than run), then ``run_tasks`` runs them
where ``ClusterOptions`` says. Each task is ``run_backtest_core`` on the packed data, which every
worker holds once (``PackedData``: numpy columns, converted to the core's lists once per worker
process, keyed by a hash of their content). A backtest is deterministic (seeded latency, the
data's own clock), so every combination's figures are the same wherever it ran.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np

from engine.backtest.data import BARS, MarketData
from engine.backtest.errors import BacktestError
from engine.backtest.options import BacktestOptions, build_backtest_config
from engine.backtest.runner import run_backtest_core
from engine.config import Config
from engine.metrics import Metrics, iso
from engine.research.cluster import Cancelled, ClusterOptions, ProgressFn, run_tasks

# --sort: the metric and whether larger is better. Ties keep the combinations' own order.
SORT_METRICS: dict[str, tuple[str, bool]] = {
    "sharpe": ("sharpe", True),
    "sortino": ("sortino", True),
    "pnl": ("pnl", True),
    "return": ("return_pct", True),
    "trades": ("trades", True),
    "win_rate": ("win_rate", True),
    "drawdown": ("max_drawdown_pct", False),
    "exposure": ("exposure_pct", True),
    "fees": ("fees_paid", False),
}


# ------------------------------------------------------------------ the data, shipped once


@dataclass(frozen=True)
class PackedData:
    """``MarketData`` as numpy columns (compact to ship) with a content hash (``token``)."""

    token: str
    kind: str
    fmt: str
    path: str
    symbol: str | None
    timeframe_s: int | None
    volume_unit: str | None
    volume_unit_given: bool
    ts: np.ndarray[Any, Any]
    cols: tuple[np.ndarray[Any, Any], ...]

    @classmethod
    def pack(cls, data: MarketData) -> PackedData:
        ts = data.ts_array
        cols = data.col_arrays
        h = hashlib.sha256()
        h.update(f"{data.kind}|{data.fmt}|{data.symbol}|{data.timeframe_s}".encode())
        h.update(ts.tobytes())
        for c in cols:
            h.update(c.tobytes())
        return cls(
            h.hexdigest(),
            data.kind,
            data.fmt,
            data.path,
            data.symbol,
            data.timeframe_s,
            data.volume_unit,
            data.volume_unit_given,
            ts,
            cols,
        )

    def unpack(self) -> MarketData:
        """The data over the packed arrays, kept per process (the two latest): whatever column
        lists a run builds from it are built once."""
        got = _UNPACKED.get(self.token)
        if got is not None:
            _UNPACKED.move_to_end(self.token)
            return got
        data = MarketData(
            self.kind,
            self.fmt,
            self.path,
            self.ts,
            self.cols,
            self.symbol,
            self.timeframe_s,
            self.volume_unit,
            self.volume_unit_given,
        )
        _UNPACKED[self.token] = data
        while len(_UNPACKED) > 2:
            _UNPACKED.popitem(last=False)
        return data


_UNPACKED: OrderedDict[str, MarketData] = OrderedDict()


# ------------------------------------------------------------------ one task


@dataclass(frozen=True)
class SweepTask:
    """One backtest to run: its place in the sweep, its parameters, config and options."""

    index: int
    params: dict[str, Any]
    cfg: Config
    opts: BacktestOptions


@dataclass
class SweepRow:
    """What one combination produced (``error``: why it could not run, e.g. no data)."""

    index: int
    params: dict[str, Any]
    metrics: Metrics | None
    error: str | None = None
    events: int = 0
    seconds: float = 0.0

    def value(self, metric: str) -> float | None:
        if self.metrics is None:
            return None
        v = getattr(self.metrics, SORT_METRICS[metric][0])
        return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": dict(self.params),
            "metrics": self.metrics.to_dict() if self.metrics is not None else None,
            "error": self.error,
            "events": self.events,
            "seconds": self.seconds,
        }


def run_task(packed: PackedData, task: SweepTask, cancel: Any = None) -> SweepRow:
    """Run one combination (on a worker or here). A refused run is a row with its error.

    ``cancel`` (serial runs: a worker cannot see the driver's event) stops the backtest
    within 65,536 bars and raises ``Cancelled``."""
    data = packed.unpack()
    try:
        result = run_backtest_core(task.cfg, data, task.opts, cancel=cancel)
    except BacktestError as exc:
        if cancel is not None and cancel.is_set():
            raise Cancelled from None
        return SweepRow(task.index, task.params, None, str(exc))
    return SweepRow(
        task.index,
        task.params,
        result.metrics,
        None,
        result.events_processed,
        result.elapsed_s,
    )


def task_function(cluster: ClusterOptions, cancel: Any) -> Any:
    """``run_task``, given ``cancel`` when the tasks run in this process."""
    if cluster.serial and cancel is not None:
        return partial(run_task, cancel=cancel)
    return run_task


# ------------------------------------------------------------------ planning


@dataclass
class Skipped:
    params: dict[str, Any]
    reason: str


def plan(
    base: Config,
    data: MarketData,
    opts: BacktestOptions,
    combos: Sequence[dict[str, Any]],
    *,
    first_index: int = 0,
) -> tuple[list[SweepTask], list[Skipped]]:
    """Every combination's config, or the reason it is skipped (the strategy refuses it)."""
    tasks: list[SweepTask] = []
    skipped: list[Skipped] = []
    for combo in combos:
        run_opts = replace(opts, params={**opts.params, **combo})
        try:
            cfg = build_backtest_config(base, data, run_opts)
        except BacktestError as exc:
            skipped.append(Skipped(dict(combo), "; ".join(exc.problems)))
            continue
        tasks.append(SweepTask(first_index + len(tasks), dict(combo), cfg, run_opts))
    return tasks, skipped


def none_valid(
    base: Config,
    data: MarketData,
    opts: BacktestOptions,
    combos: Sequence[dict[str, Any]],
    skipped: Sequence[Skipped],
) -> BacktestError:
    """Why nothing can run. A problem of the run itself (a config of several strategies and no
    ``--strategy``, a ``--symbol`` the data does not hold) fails every combination alike: it was
    reported as 'every one of the N combinations is invalid: ...', sending the trader to the
    grid. When the run fails without any swept value, its own error is the answer."""
    try:
        build_backtest_config(base, data, opts)
    except BacktestError as exc:
        return exc
    reasons = sorted({s.reason for s in skipped})
    return BacktestError(
        f"every one of the {len(combos)} combinations is invalid: " + "; ".join(reasons[:3])
    )


def sort_rows(rows: Sequence[SweepRow], metric: str) -> list[SweepRow]:
    """Best first by ``metric``; rows without a value (n/a, errors) last; ties in sweep order."""
    if metric not in SORT_METRICS:
        raise BacktestError(f"--sort must be one of {', '.join(SORT_METRICS)}, got {metric!r}")
    larger = SORT_METRICS[metric][1]

    def key(row: SweepRow) -> tuple[int, float, int]:
        v = row.value(metric)
        if v is None:
            return (1, 0.0, row.index)
        return (0, -v if larger else v, row.index)

    return sorted(rows, key=key)


def data_summary(data: MarketData, opts: BacktestOptions) -> dict[str, Any]:
    tf = opts.timeframe_s or data.timeframe_s
    if tf is None and data.kind == BARS and len(data) > 1:
        tf = data.infer_timeframe()
    return {
        "path": data.path,
        "kind": data.kind,
        "symbol": opts.symbol or data.symbol,
        "rows": len(data),
        "first_time": iso(data.first_ts) if data.first_ts is not None else None,
        "last_time": iso(data.last_ts) if data.last_ts is not None else None,
        "timeframe_s": tf,
        # --start / --end: the part of the data every run uses (None: all of it)
        "start": iso(opts.start_ns) if opts.start_ns is not None else None,
        "end": iso(opts.end_ns) if opts.end_ns is not None else None,
    }


# ------------------------------------------------------------------ a sweep


@dataclass
class SweepResult:
    """A sweep's rows, best first by ``sort``, and what was skipped."""

    strategy: str
    param_names: list[str]
    sort: str
    rows: list[SweepRow]
    skipped: list[Skipped]
    combinations: int
    cluster: str
    elapsed_s: float
    data: dict[str, Any]
    options: dict[str, Any]
    random: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ran(self) -> int:
        return len(self.rows)

    @property
    def rate(self) -> float:
        """Combinations run per second, wall clock."""
        return self.ran / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def best(self) -> SweepRow | None:
        for row in self.rows:
            if row.metrics is not None:
                return row
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "params": list(self.param_names),
            "sort": self.sort,
            "combinations": self.combinations,
            "ran": self.ran,
            "skipped": len(self.skipped),
            "skipped_detail": [{"params": s.params, "reason": s.reason} for s in self.skipped],
            "errors": sum(1 for r in self.rows if r.error),
            "cluster": self.cluster,
            "seconds": self.elapsed_s,
            "combinations_per_s": self.rate,
            "data": self.data,
            "options": self.options,
            "random": self.random,
            "results": [r.to_dict() for r in self.rows],
        }


def run_sweep(
    base: Config,
    data: MarketData,
    opts: BacktestOptions,
    combos: Sequence[dict[str, Any]],
    *,
    sort: str = "sharpe",
    cluster: ClusterOptions | None = None,
    progress: ProgressFn | None = None,
    cancel: Any = None,
    packed: PackedData | None = None,
) -> SweepResult:
    """Backtest every combination of ``combos`` (over ``opts``) and sort the rows."""
    if sort not in SORT_METRICS:
        raise BacktestError(f"--sort must be one of {', '.join(SORT_METRICS)}, got {sort!r}")
    if not combos:
        raise BacktestError("nothing to sweep: give at least one --param NAME=VALUES")
    cluster = cluster or ClusterOptions()
    tasks, skipped = plan(base, data, opts, combos)
    if not tasks:
        raise none_valid(base, data, opts, combos, skipped)
    strategy = tasks[0].cfg.strategies[0].kind
    t0 = time.perf_counter()
    rows = run_tasks(
        task_function(cluster, cancel),
        packed or PackedData.pack(data),
        tasks,
        cluster=cluster,
        progress=progress,
        cancel=cancel,
    )
    elapsed = time.perf_counter() - t0
    return SweepResult(
        strategy=strategy,
        param_names=list(combos[0]),
        sort=sort,
        rows=sort_rows(rows, sort),
        skipped=skipped,
        combinations=len(combos),
        cluster=cluster.describe(),
        elapsed_s=elapsed,
        data={**data_summary(data, opts), "symbol": tasks[0].cfg.strategies[0].symbols[0]},
        options=opts.to_dict(),
    )
