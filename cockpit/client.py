"""The cockpit's one way to the engine: the client interface, the embedded engine, backtests.

The TUI (``cockpit.tui`` and ``cockpit.app``) imports no ``engine`` module itself: what it needs
from the engine comes through here, as plain data. That is the client interface
(``EngineClient``: snapshot, events, command; see ``engine.client``), the engine embedded in this
process behind it, and a local backtest (a ``BacktestRequest`` in, the report's text out). An
import-linter contract in pyproject.toml holds it (``lint-imports``).

Engine modules are imported inside the functions that use them: loading the cockpit (attached
to a daemon over the socket) does not load the trading core or the backtest.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.client import EngineClient

__all__ = [
    "FILL_MODES",
    "SLIPPAGE_MODES",
    "SWEEP_SORTS",
    "BacktestFailed",
    "BacktestRequest",
    "EngineClient",
    "SweepProgress",
    "SweepRequest",
    "backtest_strategies",
    "embedded_engine",
    "in_process_client",
    "run_backtest_report",
    "run_sweep_report",
]

# engine.backtest's FILL_MODES and SLIPPAGE_MODES, here so that a form or an argument parser can
# offer them without loading the engine (tests/test_tui_backtest.py pins them equal).
FILL_MODES = ("live", "close", "next-open")
SLIPPAGE_MODES = ("model", "none")
# engine.research.sweep's SORT_METRICS, for the same reason (tests/test_research_sweep.py).
SWEEP_SORTS = (
    "sharpe",
    "sortino",
    "pnl",
    "return",
    "trades",
    "win_rate",
    "drawdown",
    "exposure",
    "fees",
)


# ---------------------------------------------------------------------- the running engine


def embedded_engine(cfg: Any, data_dir: str | Path | None = None) -> Any:
    """A new engine for ``cfg`` in this process, not started (``start``, ``run``,
    ``request_stop`` and ``stop`` drive it; ``blocked_reason`` says why it stopped trading)."""
    from engine.heartbeat import attach_watch
    from engine.runtime import Engine

    engine = Engine(cfg, data_dir)
    attach_watch(engine)  # the [heartbeat] pings and systemd's notifications, as headless
    return engine


def in_process_client(engine: Any) -> EngineClient:
    """The client interface to an engine embedded in this process."""
    from engine.client import InProcessClient

    return InProcessClient(engine)


# ---------------------------------------------------------------------- backtests


@dataclass(frozen=True)
class BacktestRequest:
    """A backtest as the cockpit asks for it: the default config with these overrides (None:
    as the config says)."""

    data: str
    strategy: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    qty: float | None = None
    fraction: float | None = None
    fee_bps: float | None = None
    fill: str = "live"
    breakers: bool = True


class BacktestFailed(Exception):
    """A backtest that could not run: one line the person can act on (file, strategy, params,
    options), or ``cancelled``."""


def backtest_strategies() -> tuple[list[str], list[str]]:
    """The default config's strategy ids and the built-in kinds (loads the engine modules)."""
    from engine.config import load_config
    from engine.strategies import BUILTINS

    return [s.id for s in load_config(None).strategies], list(BUILTINS)


def run_backtest_report(
    request: BacktestRequest,
    *,
    width: int = 100,
    chart: bool = True,
    chart_height: int = 20,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """Run the backtest on the default config and return the report, as ``cockpit backtest``
    prints it without colours (the chart drawn ``width`` columns wide, at most 160).

    Safe in a worker thread: ``progress(done, total)`` reports the run and a set ``cancel``
    stops it. Raises ``BacktestFailed`` with one line for anything the person can fix."""
    from cockpit.backtest_report import render_chart, render_text
    from engine.backtest import (
        BacktestError,
        BacktestOptions,
        build_backtest_config,
        load_market_data,
        run_backtest_core,
    )
    from engine.config import load_config
    from engine.marketdata.cache import MarketDataCache

    path = request.data.strip()
    with research_errors(path):
        opts = BacktestOptions(
            strategy=request.strategy,
            params=dict(request.params),
            qty=request.qty,
            fraction=request.fraction,
            fee_bps=request.fee_bps,
            fill=request.fill,
            breakers=request.breakers,
        )
        base = load_config(None)
        data = load_market_data(path, timeframe_s=opts.timeframe_s, cache=MarketDataCache.default())
        if cancel is not None and cancel.is_set():
            raise BacktestError("cancelled")
        cfg = build_backtest_config(base, data, opts)
        result = run_backtest_core(cfg, data, opts, progress=progress, cancel=cancel)
    parts = [render_text(result, color=False, width=width)]
    if chart:
        parts.append(
            render_chart(
                result.ts,
                result.equity,
                width=min(width, 160),
                height=chart_height,
                color=False,
                ccy=result.header["quote_currency"],
            )
        )
    return "\n\n".join(parts)


@dataclass(frozen=True)
class SweepRequest:
    """A sweep as the cockpit asks for it: the default config, one strategy, a parameter grid
    (``grid``: name -> values as typed, ``5,10,20`` or ``5:50:5``; ranges ``5:50`` with
    ``random``), options as ``BacktestRequest``, where it runs (``workers``: None = one
    LocalCluster worker per core, 0 = this process; ``scheduler``: an existing cluster)."""

    data: str
    strategy: str
    grid: dict[str, str]
    qty: float | None = None
    fee_bps: float | None = None
    fill: str = "live"
    breakers: bool = True
    warmup: int = 0
    sort: str = "sharpe"
    random: int | None = None
    seed: int = 0
    workers: int | None = None
    scheduler: str | None = None


@dataclass(frozen=True)
class SweepProgress:
    """Where a sweep is (the engine's progress, as plain numbers for the screen)."""

    done: int
    total: int
    rate: float  # combinations per second so far
    eta_s: float | None


def run_sweep_report(
    request: SweepRequest,
    *,
    width: int = 100,
    top: int = 50,
    progress: Callable[[SweepProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """Run the sweep and return its table and heatmap as ``cockpit sweep`` prints them
    without colours. Safe in a worker thread; a set ``cancel`` stops it (the cluster it
    started is closed). Raises ``BacktestFailed`` with one line the person can act on."""
    from cockpit.research_report import render_heatmap, render_sweep
    from engine.backtest import BacktestOptions, load_market_data
    from engine.config import load_config
    from engine.marketdata.cache import MarketDataCache
    from engine.research.cluster import Cancelled, ClusterOptions, Progress
    from engine.research.params import grid_combinations, parse_params, random_combinations
    from engine.research.sweep import run_sweep

    def report(p: Progress) -> None:
        if progress is not None:
            progress(SweepProgress(p.done, p.total, p.rate, p.eta_s))

    path = request.data.strip()
    with research_errors(path):
        specs = parse_params(list(request.grid.items()))
        if request.random:
            combos = random_combinations(specs, request.random, request.seed)
        else:
            combos = grid_combinations(specs)
        opts = BacktestOptions(
            strategy=request.strategy,
            qty=request.qty,
            fee_bps=request.fee_bps,
            fill=request.fill,
            breakers=request.breakers,
            warmup=request.warmup,
        )
        base = load_config(None)
        data = load_market_data(path, cache=MarketDataCache.default())
        if cancel is not None and cancel.is_set():
            raise Cancelled
        result = run_sweep(
            base,
            data,
            opts,
            combos,
            sort=request.sort,
            cluster=ClusterOptions(scheduler=request.scheduler, workers=request.workers),
            progress=report,
            cancel=cancel,
        )
    parts = [render_sweep(result, color=False, top=top)]
    if not request.random:
        heat = render_heatmap(result, color=False, width=width)
        if heat:
            parts.append(heat)
    return "\n\n".join(parts)


@contextlib.contextmanager
def research_errors(path: str) -> Iterator[None]:
    """What a backtest or a sweep of ``path`` raises that the person can fix, as one
    ``BacktestFailed`` line (the backtest and sweep screens show it)."""
    from engine.backtest import BacktestError
    from engine.config import ConfigError
    from engine.marketdata.replay import ReplayError
    from engine.research.cluster import Cancelled

    try:
        yield
    except Cancelled:
        raise BacktestFailed("cancelled") from None
    except ReplayError as exc:
        raise BacktestFailed(f"market data: {one_line(exc)}") from None
    except ConfigError as exc:
        raise BacktestFailed(f"config: {'; '.join(exc.problems)}") from None
    except BacktestError as exc:
        raise BacktestFailed(one_line(exc)) from None
    except OSError as exc:
        raise BacktestFailed(f"data file: {exc.strerror or exc}: {path}") from None


def one_line(exc: BaseException) -> str:
    """An error's message on one line (its lines joined with '; ')."""
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
