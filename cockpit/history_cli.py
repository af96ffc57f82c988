"""``cockpit journal`` and ``cockpit audit``: history read from a data directory's journal.

They read the journal file, not the engine: they work while an engine runs (a read-only
connection beside its WAL writer) and after it stopped, and need no socket. The data directory
is ``--data-dir DIR``, else the config's ``engine.data_dir`` (``--config``), as for ``verify``.

Output is oldest first, the newest ``-n N`` (default 50; ``-n 0``: every match). Text for
people; ``--json`` writes JSON lines (one object per row, trade or record; an error is one
``{"ok": false, "message": ...}`` line) so a large history streams (``jq -s`` for an array);
``--csv`` writes a header and one line per fill (``journal --csv``), round trip (``journal
--trades --csv``) or audit record.

Exit codes: 0 printed (also when nothing matched: a note says so on stderr); 1 no journal
there, or the journal is not what the engine wrote; 2 bad arguments (an unknown kind, a bad
time). Every row read is checked against its hash: a row that does not match is never shown,
the command stops there with one line naming it (``cockpit verify`` checks the whole chain);
so does a row deleted from what the query spans (an operator's action taken out of the audit).
The newest N are gathered before any is printed, so then nothing is printed; ``-n 0`` streams
oldest first, so the rows before the bad one (each checked) are already out.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cockpit.argtypes import add_config_options, path_text, whole_number
from cockpit.errortext import shown
from cockpit.oneshot import OneShotError, format_event_body, resolve_data_dir
from engine.history import (
    DEFAULT_KINDS,
    JOURNAL_KINDS,
    AuditRecord,
    ChainBroken,
    HistoryError,
    JournalMissing,
    RoundTrip,
    RowFilter,
    as_event,
    audit_records,
    iso_time,
    journal_extent,
    newest,
    parse_kinds,
    parse_time,
    round_trips,
    scan,
)
from engine.vocabulary import JOURNAL_FILE, EventKind, ExitCode, printable

DEFAULT_ROWS = 50
HISTORY_COMMANDS = ("journal", "audit")

_TIME_HELP = (
    "UTC ISO date/time (2024-03-01, 2024-03-01T14:30) or a span back from now (30m, 2h, 1d)"
)


class HistoryFailed(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- parsers


def _time(text: str) -> int:
    try:
        return parse_time(text, time.time_ns())
    except HistoryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _kinds(text: str) -> tuple[str, ...]:
    try:
        return parse_kinds([text])
    except HistoryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _name(text: str) -> str:
    """A strategy, symbol, venue or user to match exactly: an empty one would match nothing."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty name; give one, or leave the option out")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes the terminal could not decode: the journal is UTF-8
        raise argparse.ArgumentTypeError(
            f"{text!r} is not UTF-8 text, so it matches nothing in the journal; type the name "
            "in a UTF-8 terminal (LANG=C.UTF-8)"
        ) from None
    return text


def _common(p: argparse.ArgumentParser, what: str, csv_help: str) -> None:
    p.set_defaults(history=p.prog.split()[-1])
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        type=path_text,
        default=argparse.SUPPRESS,
        help="the engine's data directory (default: the config's engine.data_dir)",
    )
    add_config_options(p, config_help="TOML config naming the data dir", profile_help=None)
    p.add_argument("--since", type=_time, metavar="WHEN", help=f"from this time on: {_TIME_HELP}")
    p.add_argument("--until", type=_time, metavar="WHEN", help="before this time (same forms)")
    p.add_argument(
        "-n",
        type=whole_number(0, 100_000_000),
        default=DEFAULT_ROWS,
        metavar="N",
        help=f"the newest N {what} (default {DEFAULT_ROWS}; 0: all)",
    )
    p.add_argument("--operator", type=_name, metavar="USER", help="only what this person did")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON lines, one object per line")
    out.add_argument("--csv", action="store_true", help=csv_help)


def add_history_parsers(subparsers: Any) -> None:
    """Add ``journal`` and ``audit`` to the CLI's subparsers."""
    j = subparsers.add_parser(
        "journal",
        help="query the journal: decisions, orders, fills, approvals, safety, audit",
        description="Rows from the journal of a running or stopped engine, oldest first. "
        f"Kinds shown unless --kind says otherwise: {', '.join(DEFAULT_KINDS)}.",
    )
    _common(j, "rows (or round trips)", "CSV of fills (of round trips with --trades)")
    j.add_argument(
        "--kind",
        type=_kinds,
        action="append",
        metavar="KIND",
        help=f"only these kinds (repeat or comma-separate; all: every kind): "
        f"{', '.join(JOURNAL_KINDS)}",
    )
    j.add_argument("--strategy", type=_name, metavar="ID", help="only rows about this strategy")
    j.add_argument("--symbol", type=_name, metavar="SYMBOL", help="only rows about this symbol")
    j.add_argument("--venue", type=_name, metavar="VENUE", help="only rows about this venue")
    j.add_argument(
        "--trades",
        action="store_true",
        help="round-trip trades instead of rows: fills paired FIFO per strategy and symbol "
        "into entry and exit (qty, prices, fees, PnL, holding time); --since/--until select "
        "by exit time",
    )
    a = subparsers.add_parser(
        "audit",
        help="who did what: every operator action and limit or mode change, with its reason",
        description="Every operator command (accepted or refused) and every limit, approval "
        "mode, pause and kill-switch change a person made: time, who, from which client, "
        "what, before -> after, why.",
    )
    _common(a, "records", "CSV, one line per record")


# --------------------------------------------------------------------------- running


def run_history(args: argparse.Namespace) -> int:
    """Run ``cockpit journal`` or ``cockpit audit``; returns the exit code."""
    try:
        path = _journal_path(args)
        if args.history == "audit":
            return _audit(args, path)
        return _journal(args, path)
    except HistoryFailed as exc:
        return _fail(args, str(exc), exc.code)
    except OneShotError as exc:
        return _fail(args, str(exc), exc.code)
    except HistoryError as exc:
        return _fail(args, str(exc), ExitCode.USAGE)
    except JournalMissing as exc:
        return _fail(args, f"{exc}; pass --data-dir DIR where the engine ran", ExitCode.FAILURE)
    except ChainBroken as exc:
        return _fail(
            args,
            f"the journal does not verify: {exc}; nothing shown from it: see `cockpit verify "
            f"--data-dir {path.parent}`",
            ExitCode.FAILURE,
        )
    except sqlite3.Error as exc:
        text = " ".join(str(exc).split())[:200]
        return _fail(args, f"cannot read the journal {path}: {text}", ExitCode.FAILURE)


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "message": message}))
    else:
        print(shown(f"cockpit {args.history}: {message}"), file=sys.stderr)
    return code


def _journal_path(args: argparse.Namespace) -> Path:
    data_dir = resolve_data_dir(args)
    try:
        is_dir = data_dir.is_dir()
    except OSError as exc:  # a name past the file system's limit, a folder it cannot enter
        raise HistoryFailed(
            f"cannot read {data_dir}: {exc.strerror or exc}", ExitCode.FAILURE
        ) from None
    if not is_dir:
        named = str(data_dir) if data_dir.is_absolute() else f"{data_dir} ({data_dir.absolute()})"
        raise HistoryFailed(
            f"no data directory {named}; pass --data-dir DIR where the engine ran "
            "(or --config naming it)",
            ExitCode.FAILURE,
        )
    path = data_dir / JOURNAL_FILE
    if not path.exists():
        raise HistoryFailed(
            f"no journal in {data_dir} (no engine has run with it); pass --data-dir DIR "
            "where the engine ran",
            ExitCode.FAILURE,
        )
    return path


def _filter(args: argparse.Namespace, kinds: tuple[str, ...] | None) -> RowFilter:
    return RowFilter(
        kinds=kinds,
        strategy=getattr(args, "strategy", None),
        symbol=getattr(args, "symbol", None),
        venue=getattr(args, "venue", None),
        operator=args.operator,
        since_ns=args.since,
        until_ns=args.until,
    )


def _journal(args: argparse.Namespace, path: Path) -> int:
    given = tuple(dict.fromkeys(k for ks in args.kind or () for k in ks)) or None
    if args.trades:
        if given or args.operator:
            raise HistoryError("--trades pairs fills: --kind and --operator do not apply")
        return _trades(args, path)
    if args.csv:
        if given and given != (EventKind.FILL,):
            raise HistoryError("--csv writes fills (or round trips with --trades); drop --kind")
        given = (EventKind.FILL.value,)
    flt = _filter(args, given or DEFAULT_KINDS)
    rows = newest(path, flt, args.n) if args.n else scan(path, flt)
    if args.csv:
        shown = _write_csv(FILL_COLUMNS, (fill_record(r.seq, r.ts, r.payload) for r in rows))
    elif args.json:
        shown = _write_lines(json_line(as_event(r), r.ts) for r in rows)
    else:
        shown = _write_lines(journal_line(as_event(r)) for r in rows)
    if not shown:
        _nothing(path, "rows")
    return ExitCode.OK


def _trades(args: argparse.Namespace, path: Path) -> int:
    trips, open_lots = round_trips(path, _filter(args, None), args.n)
    if args.csv:
        _write_csv(TRADE_COLUMNS, (t.to_dict() for t in trips))
    elif args.json:
        _write_lines(json.dumps(t.to_dict()) for t in trips)
    else:
        for line in format_trades(trips, open_lots):
            print(line)
    if not trips:
        _nothing(path, "round trips")
    return ExitCode.OK


def _audit(args: argparse.Namespace, path: Path) -> int:
    records = audit_records(path, _filter(args, None), args.n)
    if args.csv:
        shown = _write_csv(AUDIT_COLUMNS, (audit_csv(r) for r in records))
    elif args.json:
        shown = _write_lines(json.dumps(r.to_dict(), default=str) for r in records)
    else:
        shown = _write_lines(audit_line(r) for r in records)
    if not shown:
        _nothing(path, "audit records")
    return ExitCode.OK


def _nothing(path: Path, what: str) -> None:
    first, last = journal_extent(path)
    held = f"rows {first}..{last}" if last else "no rows yet"
    print(shown(f"no {what} match (the journal holds {held}: {path})"), file=sys.stderr)


def _write_lines(lines: Iterable[str]) -> int:
    n = 0
    for line in lines:
        print(line)
        n += 1
    return n


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """``value`` as a spreadsheet shows it and never runs it: text starting like a formula
    gets a leading ``'`` (OWASP's CSV-injection rule). An audit record's reason, client name
    and message come from whoever reached the control socket, a read-only viewer's refused
    command included: ``=HYPERLINK(...)`` ran in the operator's spreadsheet. Numbers ("-1.5")
    stay numbers."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value


def _write_csv(columns: tuple[str, ...], records: Iterable[dict[str, Any]]) -> int:
    """The header and one line per record. Into a file or a pipe, text is written as it is
    (but a formula's start, see ``spreadsheet_safe``); on a terminal each line's control
    characters are escaped, as every other output does (an escape sequence in a reason
    cleared the screen or forged lines)."""
    terminal = sys.stdout.isatty()
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer if terminal else sys.stdout, fieldnames=columns, extrasaction="ignore"
    )

    def on_terminal() -> None:
        # One record, one line: a line break inside a quoted field is escaped too.
        sys.stdout.write(printable(buffer.getvalue().removesuffix("\r\n")) + "\n")
        buffer.seek(0)
        buffer.truncate()

    writer.writeheader()
    if terminal:
        on_terminal()
    n = 0
    for rec in records:
        writer.writerow({key: spreadsheet_safe(value) for key, value in rec.items()})
        n += 1
        if terminal:
            on_terminal()
    return n


# --------------------------------------------------------------------------- formatting


def when(ts: Any) -> str:
    """Journal ns as ``2024-03-01 14:30:00.123Z`` (UTC)."""
    return iso_time(ts).replace("T", " ") if isinstance(ts, int) else "-"


def journal_line(e: dict[str, Any]) -> str:
    return f"{when(e.get('ts'))} {e.get('seq', '')!s:>7} {e.get('event')!s:<18} " + (
        format_event_body(e)
    )


def json_line(e: dict[str, Any], ts: int) -> str:
    return json.dumps({"seq": e["seq"], "event": e["event"], "ts": ts, "time": iso_time(ts), **e})


FILL_COLUMNS = (
    "time",
    "seq",
    "strategy",
    "symbol",
    "venue",
    "side",
    "qty",
    "price",
    "fee",
    "liquidity",
    "realized_pnl",
    "position_qty",
    "client_order_id",
    "fill_id",
    "ts",
)


def fill_record(seq: int, ts: int, payload: dict[str, Any]) -> dict[str, Any]:
    f = payload.get("fill")
    f = f if isinstance(f, dict) else {}
    return {
        "time": iso_time(ts),
        "seq": seq,
        "strategy": f.get("strategy_id"),
        "symbol": f.get("symbol"),
        "venue": f.get("venue"),
        "side": f.get("side"),
        "qty": f.get("qty"),
        "price": f.get("price"),
        "fee": f.get("fee"),
        "liquidity": f.get("liquidity"),
        "realized_pnl": payload.get("realized_pnl"),
        "position_qty": payload.get("position_qty"),
        "client_order_id": f.get("client_order_id"),
        "fill_id": f.get("fill_id"),
        "ts": ts,
    }


TRADE_COLUMNS = (
    "strategy",
    "symbol",
    "venue",
    "side",
    "qty",
    "entry_time",
    "exit_time",
    "entry_price",
    "exit_price",
    "fees",
    "gross_pnl",
    "pnl",
    "holding_s",
    "entry_fill",
    "exit_fill",
)


def _held(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86_400:.1f}d"


def _table(rows: list[tuple[str, ...]], right: frozenset[int]) -> Iterator[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = (
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        yield "  ".join(cells).rstrip()


TRADE_HEADER = (
    "EXIT TIME",
    "STRATEGY",
    "SYMBOL",
    "SIDE",
    "QTY",
    "ENTRY PX",
    "EXIT PX",
    "FEES",
    "PNL",
    "HELD",
)


def format_trades(trips: list[RoundTrip], open_lots: int) -> list[str]:
    """A table of round trips and a total line."""
    if not trips:
        return []
    rows: list[tuple[str, ...]] = [TRADE_HEADER]
    for t in trips:
        rows.append(
            (
                when(t.exit_ts),
                t.strategy,
                t.symbol,
                t.side,
                f"{t.qty:.10g}",  # a venue's eight decimals, not six digits
                f"{t.entry_price:,.10g}",
                f"{t.exit_price:,.10g}",
                f"{t.fees:,.2f}",
                f"{t.pnl:,.2f}",
                _held(t.holding_s),
            )
        )
    lines = [printable(line) for line in _table(rows, frozenset({4, 5, 6, 7, 8, 9}))]
    wins = sum(1 for t in trips if t.pnl > 0)
    total = sum(t.pnl for t in trips)
    fees = sum(t.fees for t in trips)
    lines.append(
        f"{len(trips)} round trips, {wins} won ({wins / len(trips):.0%}), PnL {total:,.2f} "
        f"after {fees:,.2f} fees; {open_lots} entries still open"
    )
    return lines


AUDIT_COLUMNS = (
    "time",
    "seq",
    "user",
    "client",
    "action",
    "subject",
    "accepted",
    "reason",
    "changes",
    "message",
    "before",
    "after",
)


def changes_text(rec: AuditRecord) -> str:
    return "; ".join(f"{c.what}: {_value(c.before)} -> {_value(c.after)}" for c in rec.changes)


def _value(x: Any) -> str:
    if x is None or x == "":
        return "-"
    return x if isinstance(x, str) else json.dumps(x, default=str)


def audit_line(rec: AuditRecord) -> str:
    """One line: when, who from where, what on what, done or refused, before -> after, why."""
    result = changes_text(rec) or rec.message if rec.accepted else f"REFUSED: {rec.message}"
    subject = f" {rec.subject}" if rec.subject else ""
    why = f'  reason "{rec.reason}"' if rec.reason else ""
    line = f"{when(rec.ts)}  {rec.user} via {rec.client}  {rec.action}{subject}: {result}{why}"
    return printable(line)


def audit_csv(rec: AuditRecord) -> dict[str, Any]:
    return {
        "time": iso_time(rec.ts),
        "seq": rec.seq,
        "user": rec.user,
        "client": rec.client,
        "action": rec.action,
        "subject": rec.subject,
        "accepted": rec.accepted,
        "reason": rec.reason,
        "changes": changes_text(rec),
        "message": rec.message,
        "before": json.dumps(rec.before, sort_keys=True, default=str),
        "after": json.dumps(rec.after, sort_keys=True, default=str),
    }
