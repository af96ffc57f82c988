"""`cockpit sweep` and the whole-config `cockpit backtest`: research runs from the terminal.

Wiring (cockpit/cli.py): ``add_sweep_parser(sub)`` in ``build_parser`` and, in ``main``,
``if args.command == "sweep": return run_sweep_command(args)``. ``cockpit backtest`` calls
``is_portfolio`` / ``run_portfolio_backtest`` itself. Errors are one line, exit 2 for what the
person can fix (arguments, config, data), 1 for a run that failed; Ctrl-C cancels the run, stops
what it started (a LocalCluster's worker processes) and exits 130.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from cockpit.argtypes import whole_number
from cockpit.backtest_cli import (
    INTERRUPTED,
    PROGRESS_AFTER_S,
    _fail,
    add_backtest_options,
    backtest_options,
    color_wanted,
    load_data,
)
from cockpit.client import SWEEP_SORTS
from cockpit.errortext import is_output_failure, output_failed
from cockpit.progress import TerminalProgress
from engine.vocabulary import ExitCode

_SYMBOL_FORM = re.compile(r"^([A-Za-z0-9._-]+/[A-Za-z0-9._:-]+)=(.+)$")

SWEEP_DESCRIPTION = """\
Backtest one strategy once per parameter combination, through the same engine core as
`cockpit backtest` (every option of it applies to every run), and rank the results. The runs
go to a Dask cluster: a LocalCluster of one worker process per core unless told otherwise.
With --train and --test, walk forward: optimise on each training window, trade the next
window with the winner, and report in-sample against out-of-sample.
"""

SWEEP_EPILOG = """\
parameters:
  --param fast=5,10,20     a list: each value is in the grid
  --param fast=5:50:5      a range with a step (both ends included)
  --param fast=5:50        a range, drawn from with --random N (whole numbers when both ends are)
  combinations the strategy refuses (e.g. fast >= slow) are skipped and counted.
clusters:
  (default)                a Dask LocalCluster: one single-threaded worker process per core
  --workers N              a LocalCluster of N worker processes; --workers 0 (or --serial):
                           this process alone
  --scheduler ADDRESS      an existing Dask cluster (tcp://host:8786); its workers must run
                           this project's code (docs/research.md)
  the results are the same on each.
examples:
  cockpit sweep --strategy ema_cross --data bars.csv --param fast=5,10,20 --param slow=30,60 \\
      --qty 0.1 --fee-bps 10 --warmup 1000 --no-breakers --sort sharpe
  cockpit sweep --strategy ema_cross --data bars.csv --param fast=5:50 --param slow=30:200 \\
      --random 64 --seed 7 --sort pnl --json
  cockpit sweep --strategy ema_cross --data bars.csv --param fast=5,10,20 --param slow=30,60 \\
      --train 10d --test 5d --sort sharpe
"""


def _duration(text: str) -> int:
    from engine.research.walkforward import parse_duration_s

    try:
        return parse_duration_s(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _scheduler(text: str) -> str:
    from engine.research.cluster import check_scheduler_address

    try:
        return check_scheduler_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_sweep_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``sweep`` to the CLI's subparsers (``dest="command"``)."""
    p = subparsers.add_parser(
        "sweep",
        help="backtest a strategy over a grid or a sample of parameters (and walk forward)",
        description=SWEEP_DESCRIPTION,
        epilog=SWEEP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        metavar="FILE",
        required=True,
        help="bars or quotes to replay (a file or a folder), as cockpit backtest --data",
    )
    add_backtest_options(p)
    sweep = p.add_argument_group("sweep")
    sweep.add_argument(
        "--random",
        metavar="N",
        type=whole_number(1, 100_000),
        help="draw N distinct combinations at random (ranges LO:HI allowed) instead of the grid",
    )
    sweep.add_argument(
        "--seed",
        metavar="S",
        type=whole_number(0, 2**32 - 1),
        default=0,
        help="seed of --random (default 0): the same seed draws the same combinations",
    )
    sweep.add_argument(
        "--sort",
        choices=SWEEP_SORTS,
        default="sharpe",
        help="rank by this figure (default sharpe; drawdown and fees rank lowest first)",
    )
    sweep.add_argument(
        "--top",
        metavar="N",
        type=whole_number(1, 1_000_000),
        default=20,
        help="rows shown (default 20; --json has them all)",
    )
    sweep.add_argument(
        "--train",
        metavar="DURATION",
        type=_duration,
        help="walk forward: training window (e.g. 30d, 12h); needs --test",
    )
    sweep.add_argument(
        "--test",
        metavar="DURATION",
        type=_duration,
        help="walk forward: test window traded by each training window's winner (e.g. 7d)",
    )
    where = p.add_argument_group("where it runs")
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        type=_scheduler,
        help="an existing Dask scheduler (tcp://host:8786) instead of a LocalCluster",
    )
    where.add_argument(
        "--workers",
        metavar="N",
        type=whole_number(0, 4096),
        help="LocalCluster worker processes (default: one per core; 0: serial, in this process)",
    )
    where.add_argument("--serial", action="store_true", help="run in this process (as --workers 0)")
    return p


# ------------------------------------------------------------------ progress


# ------------------------------------------------------------------ whole-config backtest


def _split_source(text: str) -> tuple[str | None, str]:
    """``SYMBOL=FILE`` or ``FILE`` (a path that exists is a path even with an ``=``)."""
    m = _SYMBOL_FORM.match(text)
    if m and not Path(text).exists():
        return m.group(1), m.group(2)
    return None, text


def is_portfolio(args: argparse.Namespace, base: Any, sources: list[str]) -> bool:
    """A whole-config backtest: several ``--data``, a ``SYMBOL=FILE``, or (without
    ``--strategy``) a config whose enabled strategies trade more than one pair, or that is
    asked for ``--approvals reject`` (the one-strategy backtest runs every order approved: a
    config of one approve-mode strategy traded in full with the policy ignored)."""
    from engine.research.portfolio import portfolio_pairs

    if len(sources) > 1 or any(_split_source(s)[0] for s in sources):
        return True
    if args.strategy is None and getattr(args, "approvals", "auto") == "reject":
        return True
    return args.strategy is None and len(portfolio_pairs(base)) > 1


def run_portfolio_backtest(args: argparse.Namespace, base: Any, sources: list[str]) -> int:
    """``cockpit backtest`` of the whole config; prints the report (or JSON)."""
    from cockpit.research_report import render_portfolio, render_portfolio_chart
    from engine.backtest import BacktestError, NoUsableDataError, StrategyRaised
    from engine.marketdata.replay import ReplayError
    from engine.research.portfolio import portfolio_pairs, run_portfolio

    if args.strategy is not None:
        return _fail(
            "--strategy backtests one strategy on one --data; leave it out to backtest the "
            "whole config over one --data per symbol",
            ExitCode.USAGE,
        )
    if args.trades or args.compare_slippage:
        flag = "--trades" if args.trades else "--compare-slippage"
        return _fail(f"{flag} is for a backtest of one strategy (--strategy)", ExitCode.USAGE)
    try:  # the bar is erased when the block ends, before an error below is printed
        with TerminalProgress("backtest", delay_s=PROGRESS_AFTER_S, unit="bars") as meter:
            opts = backtest_options(args)
            traded = sorted({sym for _sid, sym in portfolio_pairs(base)})
            data: dict[str, Any] = {}
            for text in sources:
                symbol, path = _split_source(text)
                with meter.waiting(f"reading {path}"):
                    d = load_data(args, path)
                if symbol is not None and d.symbol is not None and symbol != d.symbol:
                    # The prefix would trade the config's strategy for one symbol (its limits,
                    # its instrument) on another's prices, reported under the wrong name.
                    return _fail(
                        f"--data {symbol}={path}: the file's rows name {d.symbol}, not "
                        f"{symbol}; give {symbol}'s data, or the file without a prefix",
                        ExitCode.USAGE,
                    )
                symbol = symbol or d.symbol or (traded[0] if len(traded) == 1 else None)
                if symbol is None:
                    return _fail(
                        f"{path}: the file does not name its symbol; for a whole-config backtest "
                        f"pass --data SYMBOL={path} (the config trades {', '.join(traded)}), or "
                        "--strategy NAME to backtest one strategy",
                        ExitCode.USAGE,
                    )
                if symbol in data:
                    return _fail(f"--data: two files for {symbol}", ExitCode.USAGE)
                d.symbol = symbol
                data[symbol] = d
            result = run_portfolio(
                base,
                data,
                opts,
                approvals=args.approvals,
                skip_missing=args.skip_missing,
                config_path=getattr(args, "config", None),
                progress=meter.counted(),
            )
    except ReplayError as exc:
        return _fail(f"market data: {exc}", ExitCode.USAGE)
    except (NoUsableDataError, StrategyRaised) as exc:
        return _fail(str(exc), ExitCode.FAILURE)
    except BacktestError as exc:
        return _fail(str(exc), ExitCode.USAGE)
    except KeyboardInterrupt:
        print("backtest cancelled", file=sys.stderr)
        return INTERRUPTED
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str, allow_nan=False))
        return ExitCode.OK
    color = color_wanted(args)
    width = shutil.get_terminal_size((100, 24)).columns
    parts = [render_portfolio(result, color=color, width=width)]
    if not args.no_chart:
        parts.append(render_portfolio_chart(result, width=width, color=color))
    print("\n\n".join(parts))
    return ExitCode.OK


# ------------------------------------------------------------------ sweeps


def cluster_options(args: argparse.Namespace) -> Any:
    from engine.research.cluster import ClusterOptions

    if args.serial and args.workers not in (None, 0):
        # Both given: the run went serial in silence, an hour's sweep on one core for a trader
        # who asked for N workers (or N workers for one who asked for this process only).
        raise _Usage(f"--serial runs in this process; leave out --workers {args.workers}")
    workers = 0 if args.serial else args.workers
    if args.scheduler and workers is not None:
        raise _Usage("--scheduler runs on that cluster's workers; leave out --workers/--serial")
    return ClusterOptions(scheduler=args.scheduler, workers=workers)


class _Usage(Exception):
    pass


def _sweep_fail(message: str, code: int) -> int:
    """One line per problem on stderr, named as the sweep's (not the backtest's)."""
    return _fail(message, code, command="sweep")


def run_sweep_command(args: argparse.Namespace) -> int:
    """Run ``cockpit sweep``; prints the table (or JSON) and returns the exit code."""
    from cockpit.research_report import render_heatmap, render_sweep, render_walkforward
    from engine.backtest import BacktestError, NoUsableDataError, StrategyRaised
    from engine.config import ConfigError, load_config
    from engine.marketdata.replay import ReplayError
    from engine.research.cluster import Cancelled
    from engine.research.params import grid_combinations, parse_params, random_combinations
    from engine.research.sweep import run_sweep
    from engine.research.walkforward import walk_forward

    if (args.train is None) != (args.test is None):
        return _sweep_fail(
            "walk-forward needs both --train and --test (e.g. --train 30d --test 7d)",
            ExitCode.USAGE,
        )
    if not args.param:
        return _sweep_fail(
            "nothing to sweep: give --param NAME=VALUES (e.g. --param fast=5,10,20)", ExitCode.USAGE
        )
    meter = TerminalProgress("walk-forward runs" if args.train else "sweep combinations")
    try:
        try:
            cluster = cluster_options(args)
        except _Usage as exc:
            return _sweep_fail(str(exc), ExitCode.USAGE)
        try:
            base = load_config(getattr(args, "config", None), getattr(args, "profile", None))
        except ConfigError as exc:
            return _sweep_fail(
                "\n".join(f"config error: {p}" for p in exc.problems), ExitCode.USAGE
            )
        # The bar is erased when the block ends, before an error below is printed.
        try:
            with meter:
                specs = parse_params(list(args.param))
                if args.random:
                    combos = random_combinations(specs, args.random, args.seed)
                else:
                    combos = grid_combinations(specs)
                opts = backtest_options(args, params=False)
                with meter.waiting(f"reading {args.data}"):
                    data = load_data(args, args.data)
                if args.train:
                    wf = walk_forward(
                        base,
                        data,
                        opts,
                        combos,
                        train_s=args.train,
                        test_s=args.test,
                        sort=args.sort,
                        cluster=cluster,
                        progress=meter,
                    )
                    if args.random:
                        wf.random = {"n": args.random, "seed": args.seed}
                else:
                    result = run_sweep(
                        base, data, opts, combos, sort=args.sort, cluster=cluster, progress=meter
                    )
                    if args.random:
                        result.random = {"n": args.random, "seed": args.seed}
        except ReplayError as exc:
            return _sweep_fail(f"market data: {exc}", ExitCode.USAGE)
        except (NoUsableDataError, StrategyRaised) as exc:
            return _sweep_fail(str(exc), ExitCode.FAILURE)
        except BacktestError as exc:
            return _sweep_fail(str(exc), ExitCode.USAGE)
    except (KeyboardInterrupt, Cancelled):
        print("sweep cancelled: every task stopped", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:  # the last line of defence: one line, no traceback
        if is_output_failure(exc):
            return output_failed(exc)
        return _sweep_fail(f"unexpected error: {type(exc).__name__}: {exc}", ExitCode.FAILURE)
    color = color_wanted(args)
    width = shutil.get_terminal_size((100, 24)).columns
    if args.train:
        if args.json:
            print(json.dumps(wf.to_dict(), indent=2, default=str, allow_nan=False))
        else:
            print(render_walkforward(wf, color=color))
        return ExitCode.OK
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str, allow_nan=False))
    else:
        parts = [render_sweep(result, color=color, top=args.top)]
        if not args.no_chart and not args.random:
            heat = render_heatmap(result, color=color, width=width)
            if heat:
                parts.append(heat)
        print("\n\n".join(parts))
    if result.best is None:  # every run failed (no data in its window): nothing was measured
        errors = sorted({r.error for r in result.rows if r.error})
        return _sweep_fail(
            f"none of the {result.ran:,} runs produced figures: " + "; ".join(errors[:2]),
            ExitCode.FAILURE,
        )
    return ExitCode.OK
