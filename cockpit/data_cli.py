"""``cockpit data``: download history from a venue, list what is on disk, clear the load cache.

Wired into the CLI by ``add_data_parser(subparsers)`` and ``run_data(args)``. Errors are one
line: bad arguments (unknown exchange, a symbol the venue lacks, a bad date, since after until)
exit 2 before anything is written; a venue failing mid-run exits 1 with what was saved kept.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from cockpit.argtypes import add_config_options, path_text, positive_seconds, whole_number
from cockpit.errortext import shown
from engine.vocabulary import ExitCode

DOWNLOAD_DESCRIPTION = """\
Download OHLCV bars from a venue's public API through ccxt (no keys needed) into
DATA/market/EXCHANGE/SYMBOL/TIMEFRAME/YYYY-MM.csv.gz (one gzip CSV per UTC month, with a
manifest.json beside them). Requests stay within the venue's rate limit (and wait out a 429's
Retry-After). Run the same command again to continue an interrupted download or to bring it up
to date: only what is missing is asked for. Only closed bars are stored. At the end, each range
in which the venue returned no bars is reported as a gap. `cockpit backtest --data` reads a month
file or the whole TIMEFRAME folder.
"""


def _time_ms(text: str) -> int:
    from engine.marketdata.replay import parse_timestamp_ns

    try:
        return parse_timestamp_ns(text) // 1_000_000
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date or time (e.g. 2024-01-01 or 2024-01-01T12:00Z)"
        ) from None


def _symbol(text: str) -> str:
    text = text.strip()
    if not text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a market symbol (e.g. BTC/USDT)")
    return text


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        type=path_text,
        default=argparse.SUPPRESS,
        help="the data folder (default: the config's engine.data_dir)",
    )
    add_config_options(p, config_help="TOML config naming the data dir", profile_help=None)


def add_data_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``data`` (download, list, cache clear) to the CLI's subparsers."""
    data = subparsers.add_parser("data", help="market data: download history, list, cache")
    data.set_defaults(data_command=None)
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    dl = dsub.add_parser(
        "download",
        help="download OHLCV history from a venue (resumable)",
        description=DOWNLOAD_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dl.add_argument("--exchange", required=True, help="ccxt exchange id (e.g. binance)")
    dl.add_argument(
        "--symbol",
        action="append",
        required=True,
        type=_symbol,
        help="ccxt symbol, repeatable (e.g. --symbol BTC/USDT --symbol ETH/USDT)",
    )
    dl.add_argument("--timeframe", help="bar length as ccxt names it, 1m to 1d (default 1m)")
    dl.add_argument(
        "--trades",
        action="store_true",
        help="download public trades instead of bars (binance), one gzip CSV per UTC day in "
        "DATA/market/EXCHANGE/SYMBOL/trades/",
    )
    dl.add_argument(
        "--since", required=True, type=_time_ms, metavar="TIME", help="first bar (UTC date/time)"
    )
    dl.add_argument(
        "--until",
        type=_time_ms,
        metavar="TIME",
        help="bars before this time (default: up to the last closed bar)",
    )
    dl.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="per-request timeout (default 10)",
    )
    dl.add_argument(
        "--retries",
        type=whole_number(0, 100),
        default=5,
        metavar="N",
        help="retries of a request that times out, fails or is rate limited, before the run "
        "stops with what it saved (default 5)",
    )
    _add_data_dir(dl)

    ls = dsub.add_parser("list", help="the downloaded series: first, last, bars, gaps")
    ls.add_argument("--gaps", action="store_true", help="also list every gap")
    _add_data_dir(ls)

    cache = dsub.add_parser("cache", help="the parsed-data cache that makes reloading fast")
    cache.set_defaults(cache_command=None)
    csub = cache.add_subparsers(dest="cache_command", metavar="ACTION")
    csub.add_parser("clear", help="delete every cached file")
    csub.add_parser("info", help="where the cache is and how big")

    verify = dsub.add_parser(
        "verify",
        help="check recordings' SHA-256 chains (DATA/record, a folder or a day file)",
        description=VERIFY_DESCRIPTION,
    )
    verify.add_argument(
        "path",
        nargs="?",
        type=path_text,
        default=None,
        metavar="PATH",
        help="a recording day file or a folder above some (default: DATA/record)",
    )
    _add_data_dir(verify)
    return data


VERIFY_DESCRIPTION = """\
Check every recording file (DATA/record/VENUE/SYMBOL/YYYY-MM-DD.rec.jsonl) at PATH: each
record's SHA-256 must chain from the one before it. A changed, dropped, inserted or reordered
record is named with its file and record number, and the command exits 1; exit 0 when every
file verifies. Today's files are open (their tail is checked once their day closes).
"""


def _data_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "data_dir", None):
        return Path(args.data_dir)
    from engine.config import ConfigError, load_config

    try:
        cfg = load_config(getattr(args, "config", None), None)
    except ConfigError as exc:
        raise _Usage("; ".join(f"config error: {p}" for p in exc.problems)) from None
    from engine.datadir import config_data_dir

    return config_data_dir(cfg.engine.data_dir, getattr(args, "config", None))


class _Usage(Exception):
    pass


def run_data(args: argparse.Namespace, *, exchange: Any = None) -> int:
    """Run ``cockpit data <subcommand>``; returns the exit code. ``exchange`` (tests): a ccxt
    exchange object to use instead of a new one."""
    command = getattr(args, "data_command", None)
    try:
        if command == "download":
            return _download(args, exchange)
        if command == "list":
            return _list(args)
        if command == "cache":
            return _cache(args)
        if command == "verify":
            return _verify(args)
    except _Usage as exc:
        print(shown(f"data: {exc}"), file=sys.stderr)
        return ExitCode.USAGE
    print("cockpit data: say which tool: download, list, cache or verify", file=sys.stderr)
    return ExitCode.USAGE


# ------------------------------------------------------------------ download


class _ProgressLine:
    """One line rewritten in place on a terminal (stderr): bars done / expected, rate, ETA."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.last = 0.0
        self.width = 0

    def __call__(self, dl: Any, force: bool = False) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.2:
            return
        self.last = now
        expected, done = dl.expected, dl.done
        pct = 100.0 * done / expected if expected else 100.0
        eta = dl.eta_s()
        eta_text = "--" if eta is None else _duration(eta)
        unit = "min" if getattr(dl, "trades", False) else "bars"
        line = (
            f"{dl.exchange_id} {dl.timeframe} x{len(dl.symbols)}: {done:,}/{expected:,} {unit} "
            f"({pct:.1f}%)  {dl.rate():,.0f} {unit}/s  ETA {eta_text}"
        )
        if dl.stats.rate_limited:
            line += f"  rate-limited {dl.stats.rate_limited}x"
        pad = max(self.width - len(line), 0)
        self.width = len(line)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    s = int(max(seconds, 0))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _download(args: argparse.Namespace, exchange: Any) -> int:
    from engine.config import data_dir_problem
    from engine.marketdata.download import Downloader, DownloadFailed, DownloadUsageError
    from engine.marketdata.store import SeriesBusy, StoreError, iso_ms

    data_dir = _data_dir(args)
    if args.trades and args.timeframe is not None:
        raise _Usage("--timeframe is for bars; --trades downloads every trade")
    problem = data_dir_problem(data_dir)
    if problem is not None:  # before the network: a file given as the folder failed at the end
        raise _Usage(f"--data-dir: {problem}")
    progress = _ProgressLine(sys.stderr)
    try:
        dl = Downloader(
            args.exchange.strip().lower(),
            args.symbol,
            "trades" if args.trades else (args.timeframe or "1m"),
            args.since,
            args.until,
            data_dir,
            exchange=exchange,
            timeout_ms=int(min(args.timeout, 3600.0) * 1000),
            max_attempts=args.retries + 1,
            on_progress=progress,
            trades=args.trades,
        )
    except DownloadUsageError as exc:
        raise _Usage(str(exc)) from None

    async def go() -> list[Any]:
        try:
            return await dl.run()
        finally:
            await dl.close()

    code = ExitCode.OK
    results: list[Any] = []
    try:
        results = asyncio.run(go())
    except DownloadUsageError as exc:
        progress.end()
        raise _Usage(str(exc)) from None
    except SeriesBusy as exc:
        progress.end()
        raise _Usage(str(exc)) from None
    except (DownloadFailed, StoreError) as exc:
        progress.end()
        print(shown(f"data download: {exc}"), file=sys.stderr)
        code = ExitCode.FAILURE
    except KeyboardInterrupt:
        progress.end()
        print("data download: interrupted", file=sys.stderr)
        code = ExitCode.FAILURE
    else:
        progress(dl, force=True)
        progress.end()
    if code != ExitCode.OK:
        for store in dl.stores.values():
            s = store.summary()
            span = "none"
            if s.first is not None and s.last is not None:
                span = f"{iso_ms(s.first)} .. {iso_ms(s.last)}"
            print(
                f"  kept {s.symbol}: {s.bars:,} bars ({span}) in {store.dir}; run the same "
                "command again to continue",
                file=sys.stderr,
            )
        return code
    for r in results:
        span = f"{iso_ms(r.first)} .. {iso_ms(r.last)}" if r.first is not None else "no bars"
        what = "trades" if dl.trades else "bars"
        print(
            f"{dl.exchange_id} {r.symbol} {dl.timeframe}: {r.bars_new:,} new {what}, "
            f"{r.bars_total:,} on disk ({span}) in {r.path}"
        )
        if r.up_to_date:
            print("  already up to date")
        for a, b in r.gaps:
            n = (b - a) // r.tf_ms
            print(f"  gap: the venue returned no bars {iso_ms(a)} .. {iso_ms(b)} ({n:,} bars)")
    return ExitCode.OK


# ------------------------------------------------------------------ list


def _list(args: argparse.Namespace) -> int:
    from engine.marketdata.store import StoreError, iso_ms, list_series

    data_dir = _data_dir(args)
    try:
        rows = list(list_series(data_dir))
    except StoreError as exc:
        print(shown(f"data list: {exc}"), file=sys.stderr)
        return ExitCode.FAILURE
    if not rows:
        print(
            shown(
                f"no downloaded market data under {data_dir / 'market'}; get some with "
                "`cockpit data download --exchange binance --symbol BTC/USDT --since 2024-01-01`"
            ),
            file=sys.stderr,
        )
        return ExitCode.OK
    table = [("exchange", "symbol", "timeframe", "first", "last", "bars", "gaps", "folder")]
    for s in rows:
        table.append(
            (
                s.exchange,
                s.symbol,
                s.timeframe,
                iso_ms(s.first) if s.first is not None else "-",
                iso_ms(s.last) if s.last is not None else "-",
                f"{s.bars:,}",
                f"{len(s.gaps)} ({s.missing_bars:,} bars)" if s.gaps else "0",
                str(s.path),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    for s in rows:
        if s.damaged:
            print(
                f"warning: {s.exchange} {s.symbol} {s.timeframe}: {', '.join(s.damaged)} since "
                "the last download; the same download command fetches those months again",
                file=sys.stderr,
            )
    if getattr(args, "gaps", False):
        for s in rows:
            for a, b in s.gaps:
                print(f"gap {s.exchange} {s.symbol} {s.timeframe}: {iso_ms(a)} .. {iso_ms(b)}")
    return ExitCode.OK


# ------------------------------------------------------------------ cache


def _cache(args: argparse.Namespace) -> int:
    from engine.marketdata.cache import MarketDataCache

    cache = MarketDataCache.default()
    action = getattr(args, "cache_command", None)
    if action == "clear":
        removed, freed = cache.clear()
        print(f"cleared {removed} cached file(s), {freed / 1e6:,.1f} MB, in {cache.root}")
        return ExitCode.OK
    if action == "info":
        files, size = cache.usage()
        print(f"{cache.root}: {files} cached file(s), {size / 1e6:,.1f} MB")
        return ExitCode.OK
    print("cockpit data cache: say which: clear or info", file=sys.stderr)
    return ExitCode.USAGE


# ------------------------------------------------------------------ verify


# Problems printed per file: a file edited from top to bottom is named, not listed line by line.
MAX_PROBLEMS_SHOWN = 20


def _verify(args: argparse.Namespace) -> int:
    from engine.marketdata.recording import record_root, verify_path

    path = Path(args.path) if args.path else record_root(_data_dir(args))
    if not path.exists():
        print(shown(f"data verify: {path}: no such file or folder"), file=sys.stderr)
        return ExitCode.USAGE
    reports = verify_path(path)
    if not reports:
        print(shown(f"data verify: no recording files (*.rec.jsonl) under {path}"), file=sys.stderr)
        return ExitCode.USAGE
    bad = 0
    records = 0
    for rep in reports:
        records += rep.records
        if rep.problems:
            bad += 1
            for problem in rep.problems[:MAX_PROBLEMS_SHOWN]:
                print(f"FAIL {problem}")
            if len(rep.problems) > MAX_PROBLEMS_SHOWN:
                more = len(rep.problems) - MAX_PROBLEMS_SHOWN
                print(f"FAIL {rep.path}: {more:,} more problems after these")
            continue
        state = "closed" if rep.closed else "open"
        notes = f" ({'; '.join(rep.notes)})" if rep.notes else ""
        print(f"ok   {rep.path}: {rep.records:,} records, {state}{notes}")
    total = len(reports)
    if bad:
        print(f"{bad} of {total} files do NOT verify", file=sys.stderr)
        return ExitCode.FAILURE
    print(f"{total} files, {records:,} records: every chain verifies")
    return ExitCode.OK
