"""`cockpit backtest`: the engine core over a recorded file, with a report in the terminal.

Wiring (cockpit/cli.py): ``add_backtest_parser(sub)`` in ``build_parser`` and, in ``main``,
``if args.command == "backtest": return run_backtest(args)``. ``run_backtest`` prints its own
one-line errors and returns the exit code (0 ok, 1 failure, 2 bad arguments, config or data).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any

from cockpit.argtypes import (
    add_config_options,
    fraction,
    key_value,
    non_negative_number,
    output_file,
    positive_number,
    symbol_text,
    whole_number,
)
from cockpit.client import FILL_MODES, SLIPPAGE_MODES
from cockpit.errortext import is_output_failure, output_failed, shown
from cockpit.progress import TerminalProgress
from engine.vocabulary import ExitCode

INTERRUPTED = 130  # the shell's code for a run ended by Ctrl-C (128 + SIGINT)
PROGRESS_AFTER_S = 2.0  # a run this long shows a progress bar (on a terminal)

DESCRIPTION = """\
Run one strategy over recorded bars or quotes through the same engine core as live trading
(strategy code, pre-trade checks, breakers, paper fill model, portfolio), on the data's own
clock, and print a report. Data: an OHLCV CSV (timestamp,open,high,low,close,volume; ISO-8601
or epoch-ms timestamps), a ccxt fetch_ohlcv JSON file, or a Binance bookTicker CSV
(local_ts_ns,update_id,bid_price,bid_qty,ask_price,ask_qty).
"""

EPILOG = """\
fill models:
  live       the paper broker exactly as the live engine uses it (latency, far side, impact):
             on bars, orders fill on the next bar's close; on quotes, on the first quote after
             the latency. Backtest and paper trading give the same fills. (default)
  close      the signal bar's close: immediate, against a quote at the close price
  next-open  the next bar's open
slippage:
  model      the paper broker's model: far side of the spread, impact beyond the displayed size
             (bars have no spread: add one with --spread-bps)
  none       fills at exactly the reference price (mid or bar price), no impact
data checks: every bar passes the live engine's boundary validator; a bar that is not finite,
  not positive, has open/close outside [low, high], a price above 1e15, opens at or before
  the bar before it (a duplicate or backwards timestamp) or moves 10x from the last accepted
  close within 60 bars is rejected, not traded, and counted in the report; when every row is
  rejected the backtest fails (exit 1). Files over --max-rows are refused before being read.
volume: the fill model's displayed size per bar is the bar's volume in the base currency
  (BTC of BTC/USDT). --volume-unit says what the file holds: ccxt JSON is base (ccxt's
  definition), a CSV is taken as quote unless told. The report says which was used and how
  many fills an order larger than the bar's volume took beyond it.
metrics: Sharpe and Sortino use per-bar simple returns, annualised by sqrt(bars per year) with
365-day years, risk-free 0; Sortino's downside deviation is sqrt(mean(min(r, 0)^2)).
examples:
  cockpit backtest --data bars.csv --strategy ema_cross --param fast=10 --param slow=30 \\
      --qty 0.1 --fill close --warmup 100 --no-breakers
  cockpit backtest --data bookticker.csv --strategy ema_cross --timeframe 1 --compare-slippage
  cockpit backtest --data bars.csv --strategy ema_cross --stop-loss 0.5 --trailing-atr 3
"""


def _time(text: str) -> int:
    from engine.marketdata.replay import parse_timestamp_ns

    try:
        return parse_timestamp_ns(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date or time (e.g. 2022-01-05 or 2022-01-05T12:00:00Z)"
        ) from None


def add_backtest_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``backtest`` to the CLI's subparsers (``dest="command"``)."""
    p = subparsers.add_parser(
        "backtest",
        help="run a strategy, or a whole config, over recorded bars or quotes and report",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        metavar="FILE|SYMBOL=FILE",
        action="append",
        required=True,
        help="bars or quotes to replay: a file, or a folder of them read in name order (e.g. "
        "DATA/market/binance/BTC-USDT/1m from cockpit data download); for a whole config, "
        "one --data per symbol, SYMBOL=FILE where the file does not name its symbol",
    )
    add_backtest_options(p)
    portfolio = p.add_argument_group(
        "whole config",
        "Without --strategy, a config whose enabled strategies trade more than one (strategy,\n"
        "symbol) pair, or several --data, is backtested whole: every strategy on every symbol\n"
        "in one engine (shared limits, breakers, loss limits), with a report per strategy and\n"
        "combined.",
    )
    portfolio.add_argument(
        "--approvals",
        choices=("auto", "reject"),
        default="auto",
        help="orders of approve-mode strategies: auto = approved at once (default), reject = "
        "every approval request rejected (they never trade); the report states which",
    )
    portfolio.add_argument(
        "--skip-missing",
        action="store_true",
        help="backtest only the symbols given data (the others are listed as skipped) rather "
        "than refuse a config whose symbols lack data",
    )
    p.add_argument(
        "--trades", metavar="FILE", type=output_file, help="write every fill to this CSV file"
    )
    p.add_argument(
        "--compare-slippage",
        action="store_true",
        help="run with and without the slippage model and show what slippage costs",
    )
    return p


def add_backtest_options(p: argparse.ArgumentParser) -> None:
    """Every option of one backtest but ``--data`` and the outputs only it has (``--trades``,
    ``--compare-slippage``): ``cockpit sweep`` takes the same, read by ``backtest_options``."""
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="parse the data file again rather than use (or fill) the parsed-data cache in "
        "$XDG_CACHE_HOME/cockpit/marketdata (cockpit data cache clear empties it)",
    )
    # SUPPRESS: a value given before the subcommand (cockpit --config X backtest) stays.
    add_config_options(
        p,
        config_help="TOML config for strategies, limits, breakers, fees "
        "(default: config/default.toml)",
        profile_help="risk profile from config/profiles laid over the config",
    )
    p.add_argument(
        "--strategy",
        metavar="NAME",
        help="a configured strategy id, or a built-in kind (ema_cross, rsi_reversion, "
        "donchian_breakout) or module:Class (default: the config's only strategy)",
    )
    p.add_argument(
        "--param",
        metavar="KEY=VALUE",
        type=key_value,
        action="append",
        default=[],
        help="strategy parameter, repeatable (e.g. --param fast=10 --param slow=30)",
    )
    p.add_argument(
        "--symbol",
        type=symbol_text,
        help="the data's symbol (default: from the data, else BTC/USDT)",
    )
    p.add_argument(
        "--timeframe",
        metavar="SECONDS",
        type=whole_number(1, 86_400, "seconds"),
        help="bar length (bars: inferred from the data; quotes: the strategy's, else 1)",
    )
    p.add_argument("--cash", metavar="AMOUNT", type=positive_number("--cash"), help="starting cash")
    p.add_argument(
        "--fee-bps",
        metavar="N",
        type=non_negative_number("--fee-bps"),
        help="taker and maker fee in basis points (default: the config's paper broker)",
    )
    p.add_argument(
        "--fill",
        choices=FILL_MODES,
        default="live",
        help="fill model (default: live; see below)",
    )
    p.add_argument(
        "--slippage",
        choices=SLIPPAGE_MODES,
        default="model",
        help="the paper broker's slippage model, or none (default: model)",
    )
    p.add_argument(
        "--spread-bps",
        metavar="N",
        type=non_negative_number("--spread-bps"),
        default=0.0,
        help="bar data: the spread of the execution quote around the bar price (default 0)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--qty", metavar="Q", type=positive_number("--qty"), help="fixed order quantity"
    )
    size.add_argument(
        "--fraction",
        metavar="F",
        type=fraction,
        help="order notional as a fraction of equity (0 < F <= 1)",
    )
    p.add_argument(
        "--warmup",
        metavar="N",
        type=whole_number(0, 100_000_000),
        default=0,
        help="the first N bars only warm the strategy up: no orders",
    )
    shorts = p.add_mutually_exclusive_group()
    shorts.add_argument(
        "--long-only",
        dest="allow_short",
        action="store_const",
        const=False,
        help="no short entries (the default unless the strategy's config allows shorts)",
    )
    shorts.add_argument(
        "--allow-short", dest="allow_short", action="store_const", const=True, help="allow shorts"
    )
    p.add_argument(
        "--no-breakers", action="store_true", help="circuit breakers never trip (shown in report)"
    )
    p.add_argument(
        "--no-limits",
        action="store_true",
        help="lift pre-trade limits and the loss limits (shown in the report)",
    )
    p.add_argument(
        "--volume-unit",
        choices=("base", "quote"),
        help="bar data: the currency the volume column is in (default: quote for a CSV, base "
        "for ccxt JSON, as ccxt defines it); the fill model's displayed size comes from it",
    )
    p.add_argument(
        "--max-rows",
        metavar="N",
        type=whole_number(1, 10**12),
        default=None,
        help="refuse a data file with more rows than this, before reading it all "
        "(default 5,000,000: about 1.5 GB in memory)",
    )
    p.add_argument("--start", type=_time, metavar="TIME", help="first time to use (ISO date/time)")
    p.add_argument(
        "--end", type=_time, metavar="TIME", help="use data before this time (ISO date/time)"
    )
    exits = p.add_argument_group(
        "protective exits",
        "On every position the strategy opens (over the config's [[strategies]] exits), fired\n"
        "as reduce-only market orders through the same checks. On bars, a bar whose range\n"
        "reaches a level fills at the level, at the open when it gapped through; a stop and a\n"
        "target inside one bar count as the stop (the conservative reading).",
    )
    exits.add_argument(
        "--stop-loss",
        metavar="PCT",
        type=_percent("--stop-loss", 100.0),
        help="stop-loss PCT %% below the entry price (above, for a short)",
    )
    exits.add_argument(
        "--take-profit",
        metavar="PCT",
        type=_percent("--take-profit", 10_000.0),
        help="take-profit PCT %% above the entry price (below, for a short)",
    )
    exits.add_argument(
        "--trailing-atr",
        metavar="K",
        type=positive_number("--trailing-atr"),
        help="Chandelier trailing stop K x ATR below the highest price since entry "
        "(above the lowest, for a short); it only moves in the position's favour",
    )
    exits.add_argument(
        "--atr-period",
        metavar="N",
        type=whole_number(1, 10_000, "bars"),
        help="the trailing stop's ATR period in bars (default 14)",
    )
    exits.add_argument(
        "--time-stop",
        metavar="BARS",
        type=whole_number(1, 100_000_000, "bars"),
        help="close a position held this many bars of the strategy's timeframe",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--no-chart", action="store_true", help="no chart")
    p.add_argument("--no-color", action="store_true", help="no colours or bold text")


def _percent(what: str, below: float) -> Any:
    """A type for a percentage > 0 and < ``below`` (a stop at 100 % would be at zero)."""
    positive = positive_number(what)

    def parse(text: str) -> float:
        value = positive(text)
        if value >= below:
            raise argparse.ArgumentTypeError(f"{what} must be below {below:g} %, got {text!r}")
        return value

    return parse


def backtest_options(args: argparse.Namespace, *, params: bool = True) -> Any:
    """The ``BacktestOptions`` the parsed options of ``add_backtest_options`` ask for
    (``params=False``: without the ``--param`` values, which a sweep reads as its grid)."""
    from engine.backtest import BacktestOptions

    return BacktestOptions(
        strategy=args.strategy,
        params=dict(args.param) if params else {},
        symbol=args.symbol,
        timeframe_s=args.timeframe,
        cash=args.cash,
        fee_bps=args.fee_bps,
        fill=args.fill,
        slippage=args.slippage,
        spread_bps=args.spread_bps,
        qty=args.qty,
        fraction=args.fraction,
        warmup=args.warmup,
        allow_short=args.allow_short,
        breakers=not args.no_breakers,
        limits=not args.no_limits,
        start_ns=args.start,
        end_ns=args.end,
        stop_loss_pct=args.stop_loss,
        take_profit_pct=args.take_profit,
        trailing_atr=args.trailing_atr,
        atr_period=args.atr_period,
        time_stop_bars=args.time_stop,
    )


def load_data(args: argparse.Namespace, path: str) -> Any:
    """One ``--data`` file or folder, read as the options say (the parsed-data cache unless
    ``--no-cache``)."""
    from engine.backtest import load_market_data
    from engine.marketdata.cache import MarketDataCache
    from engine.marketdata.replay import MAX_ROWS

    return load_market_data(
        path,
        timeframe_s=args.timeframe,
        volume_unit=args.volume_unit,
        max_rows=args.max_rows or MAX_ROWS,
        cache=None if args.no_cache else MarketDataCache.default(),
    )


def color_wanted(args: argparse.Namespace) -> bool:
    """Colour on a terminal unless ``--no-color`` or ``$NO_COLOR``."""
    return _color(args)


def _color(args: argparse.Namespace) -> bool:
    if args.no_color or os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty()


def _fail(message: str, code: int, command: str = "backtest") -> int:
    for line in message.splitlines() or [message]:
        print(shown(f"{command} error: {line}"), file=sys.stderr)
    return code


def run_backtest(args: argparse.Namespace) -> int:
    """Run ``cockpit backtest``; prints the report (or JSON) and returns the exit code."""
    from cockpit.backtest_report import render_chart, render_comparison, render_text
    from engine.backtest import (
        BacktestError,
        NoUsableDataError,
        StrategyRaised,
        build_backtest_config,
        run_backtest_core,
        write_trades_csv,
    )
    from engine.config import ConfigError, load_config
    from engine.marketdata.replay import ReplayError

    try:
        try:
            base = load_config(getattr(args, "config", None), getattr(args, "profile", None))
        except ConfigError as exc:
            return _fail("\n".join(f"config error: {p}" for p in exc.problems), ExitCode.USAGE)
        sources = [args.data] if isinstance(args.data, str) else list(args.data)
        from cockpit.research_cli import is_portfolio, run_portfolio_backtest

        if is_portfolio(args, base, sources):
            return run_portfolio_backtest(args, base, sources)
        if getattr(args, "approvals", "auto") == "reject":
            return _fail(
                "--approvals reject is for a backtest of the whole config; --strategy runs one "
                "strategy with every order approved (leave out --strategy to backtest the "
                "config with its approve-mode strategies' requests rejected)",
                ExitCode.USAGE,
            )
        # A bar on stderr for a run past 2 s (a terminal only: nothing in a pipe or with a
        # quick run); reading a large file says so too. It is erased when the block ends,
        # before an error below is printed.
        try:
            with TerminalProgress("backtest", delay_s=PROGRESS_AFTER_S, unit="bars") as meter:
                opts = backtest_options(args)
                with meter.waiting(f"reading {sources[0]}"):
                    data = load_data(args, sources[0])
                meter.unit = f" {data.kind}"  # bars or quotes: what done/total count
                cfg = build_backtest_config(base, data, opts)
                result = run_backtest_core(cfg, data, opts, progress=meter.counted())
                other = None
                if args.compare_slippage:
                    from dataclasses import replace

                    alt = replace(opts, slippage="none" if opts.slippage == "model" else "model")
                    alt_cfg = build_backtest_config(base, data, alt)
                    meter.what = f"backtest ({alt.slippage} slippage)"
                    other = run_backtest_core(alt_cfg, data, alt, progress=meter.counted())
        except ReplayError as exc:
            return _fail(f"market data: {exc}", ExitCode.USAGE)
        except (NoUsableDataError, StrategyRaised) as exc:  # (the data, or the strategy)
            return _fail(str(exc), ExitCode.FAILURE)
        except BacktestError as exc:
            return _fail(str(exc), ExitCode.USAGE)
        with_model, without = result, other
        if other is not None and opts.slippage == "none":
            with_model, without = other, result
        if args.trades:
            try:
                rows = write_trades_csv(result, args.trades)
            except OSError as exc:
                return _fail(f"cannot write {args.trades}: {exc.strerror or exc}", ExitCode.FAILURE)
        color = _color(args)
        if args.json:
            doc = result.to_dict()
            if other is not None:
                from engine.backtest import wins_only_without_slippage

                assert with_model is not None and without is not None
                doc["compare_slippage"] = {
                    "with_model": with_model.metrics.to_dict(),
                    "without": without.metrics.to_dict(),
                    "slippage_cost": without.metrics.pnl - with_model.metrics.pnl,
                    "wins_only_without_slippage": wins_only_without_slippage(with_model, without),
                }
            if args.trades:
                doc["trades_file"] = {"path": args.trades, "rows": rows}
            print(json.dumps(doc, indent=2, default=str, allow_nan=False))
            return ExitCode.OK
        width = shutil.get_terminal_size((100, 24)).columns
        parts = [render_text(result, color=color, width=width)]
        if other is not None:
            assert with_model is not None and without is not None
            parts.append(render_comparison(with_model, without, color=color))
        if not args.no_chart:
            parts.append(
                render_chart(
                    result.ts,
                    result.equity,
                    width=min(width, 160),
                    height=24,
                    color=color,
                    ccy=result.header["quote_currency"],
                )
            )
        if args.trades:
            parts.append(f"wrote {rows} fills to {args.trades}")
        print("\n\n".join(parts))
        return ExitCode.OK
    except KeyboardInterrupt:  # Ctrl-C: the bar is gone (its block ended); no partial report
        print("backtest cancelled", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:  # the last line of defence: one line, no traceback
        if is_output_failure(exc):
            return output_failed(exc)
        return _fail(f"unexpected error: {type(exc).__name__}: {exc}", ExitCode.FAILURE)
