"""Backtests: the live engine's core over recorded bars or quotes, on a simulated clock.

A backtest here is not a second implementation of the strategy pipeline. It builds the very
objects the live engine builds (``EngineCore`` with the configured strategies, pre-trade checks,
safety controller, breakers and approval gate; a ``PaperBroker``; a ``Portfolio``) and drives them
exactly as ``engine.runtime.Engine.process`` does, minus the journal: the core is sans-I/O, so a
``SubmitOrder`` goes straight to ``broker.submit`` and a ``CancelOrder`` to ``broker.cancel``, and
the events are collected for the report. Time is the data's own event time. Bar data goes
through ``EngineCore.on_bars`` while no order is open: the same per-bar checks, answered once per
run of quiet bars, with no Bar, Quote or event built for a bar nobody acts on (see its docstring;
``tests/test_backtest_fastpath.py`` pins it to ``on_bar`` bit for bit).

One module per job:

* ``data``: reading and checking the recorded file (``MarketData``, ``load_market_data``);
* ``options``: what a researcher chooses and the run's config (``BacktestOptions``,
  ``build_backtest_config``);
* ``simulation``: the loop driving core, broker and portfolio over the data (``BacktestRun``);
* ``header``: what the run was, for the report (``safety_settings``, ``build_header``);
* ``result``: what the run produced (``BacktestResult``, ``write_trades_csv``);
* ``runner``: one run end to end (``run_backtest_core``, ``run_backtest``,
  ``compare_slippage``).

The figures come from ``engine.metrics``; the terminal report is drawn by
``cockpit.backtest_report`` (the engine returns data, the cockpit renders it).
"""

from engine.backtest.data import (
    BARS,
    DEFAULT_SYMBOL,
    DEFAULT_VOLUME_UNIT,
    QUOTES,
    VOLUME_UNITS,
    MarketData,
    infer_timeframe_s,
    load_market_data,
)
from engine.backtest.errors import BacktestError, NoUsableDataError, StrategyRaised
from engine.backtest.header import safety_settings
from engine.backtest.options import (
    FILL_MODES,
    NO_LIMITS,
    NO_LOSS_LIMITS,
    SLIPPAGE_MODES,
    BacktestOptions,
    build_backtest_config,
)
from engine.backtest.result import BacktestResult, write_trades_csv
from engine.backtest.runner import (
    compare_slippage,
    run_backtest,
    run_backtest_core,
    wins_only_without_slippage,
)
from engine.backtest.simulation import BacktestRun, DisabledBreakers

__all__ = [
    "BARS",
    "DEFAULT_SYMBOL",
    "DEFAULT_VOLUME_UNIT",
    "FILL_MODES",
    "NO_LIMITS",
    "NO_LOSS_LIMITS",
    "QUOTES",
    "SLIPPAGE_MODES",
    "VOLUME_UNITS",
    "BacktestError",
    "BacktestOptions",
    "BacktestResult",
    "BacktestRun",
    "DisabledBreakers",
    "MarketData",
    "NoUsableDataError",
    "StrategyRaised",
    "build_backtest_config",
    "compare_slippage",
    "infer_timeframe_s",
    "load_market_data",
    "run_backtest",
    "run_backtest_core",
    "safety_settings",
    "wins_only_without_slippage",
    "write_trades_csv",
]
