"""Questions asked of the journal after the fact: which rows, which round-trip trades, who did what.

Pure reading: a read-only SQLite connection (:func:`engine.journal._connect_ro`), safe while an
engine writes the same file in WAL mode, and on a stopped engine's data directory. Backs
``cockpit journal`` and ``cockpit audit``; nothing here imports the cockpit or prints.

Large journals: the row kind and the time window are filtered in SQL (``kind`` is indexed,
``ts`` is a column), a strategy, symbol, venue or operator is narrowed in SQL to rows whose
payload text holds the value and then checked exactly per kind in Python; rows are streamed
off one cursor, and "the newest N" reads newest first and stops at N. Memory is bounded by N
(and, for round trips, by the open lots), never by the journal's size.

Trust: every row read is checked against its own hash (and against the row before it when that
row is read too). A row that does not match raises :class:`ChainBroken` before anything from the
query is returned: a reader never shows a forged row as history. Nor one short of a row: a row
deleted from what a query spans (seq runs on from 1; a whole-journal count says whether one is
missing at all) raises it too. ``cockpit verify`` checks the whole chain and its anchor.
"""

from __future__ import annotations

import heapq
import operator
import re
import sqlite3
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from engine.journal import JournalRow, _connect_ro, row_hash
from engine.vocabulary import EventKind

NS_PER_SECOND = 1_000_000_000

NOT_JOURNALED = frozenset({EventKind.QUOTES_REJECTED, EventKind.BLOCKED, EventKind.CONNECTION})
JOURNAL_KINDS: tuple[str, ...] = tuple(k.value for k in EventKind if k not in NOT_JOURNALED)
"""Every kind of row the engine journals."""
BULK_KINDS = frozenset({EventKind.MARKS, EventKind.SAFETY_STATE})
DEFAULT_KINDS: tuple[str, ...] = tuple(k for k in JOURNAL_KINDS if k not in BULK_KINDS)
"""What ``cockpit journal`` shows unless asked: everything but the periodic marks and the
whole-state snapshots written after each safety change (ask for them by kind)."""
ALL_KINDS = "all"


class HistoryError(ValueError):
    """A filter that cannot be applied; the message is one line naming the valid values."""


class JournalMissing(FileNotFoundError):
    """No journal where one was asked for; the message says where it looked."""


class ChainBroken(Exception):
    """A row read does not match its hash (or the row before it): the journal was edited."""

    def __init__(self, seq: int, problem: str) -> None:
        super().__init__(problem)
        self.seq = seq


# --------------------------------------------------------------------------- filters


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_time(text: str, now_ns: int) -> int:
    """A point in time as journal ns: ISO 8601 (UTC unless it says otherwise; a date alone is
    its midnight), ``now``, or a span back from ``now_ns``: ``90s``, ``15m``, ``2h``, ``1d``."""
    m = _RELATIVE.match(text)
    if m:
        span = Decimal(m.group(1)) * _UNIT_S[m.group(2)] * NS_PER_SECOND  # any length of digits
        return _journal_range(now_ns - round(span))
    if text.strip().lower() == "now":
        return now_ns
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise HistoryError(
            f"{text!r} is not a time; give an ISO date/time in UTC (2024-03-01, "
            "2024-03-01T14:30, 2024-03-01 14:30:00Z) or a span back from now (30m, 2h, 1d, 1w)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    # Whole numbers, not dt.timestamp() * 1e9: a float is tens of ns off at a microsecond, so
    # a row exactly at --since would be left out (and one exactly at --until let in).
    since_epoch = dt - _EPOCH
    seconds = since_epoch.days * 86_400 + since_epoch.seconds
    return _journal_range(seconds * NS_PER_SECOND + since_epoch.microseconds * 1000)


_TS_MAX = 2**63 - 1  # a journal ts is a signed 64-bit SQLite integer (1677 to 2262)


def _journal_range(ns: int) -> int:
    """A time beyond what a journal row can hold, as the nearest it can: --until 9999-12-31
    means "until the end", not an overflow."""
    return max(-_TS_MAX - 1, min(_TS_MAX, ns))


def parse_kinds(values: Iterable[str]) -> tuple[str, ...]:
    """Kinds from ``--kind`` values (each may be comma-separated); ``all`` is every kind."""
    kinds: list[str] = []
    for value in values:
        for name in (v.strip().lower() for v in value.split(",")):
            if not name:
                continue
            if name == ALL_KINDS:
                kinds.extend(JOURNAL_KINDS)
            elif name in JOURNAL_KINDS:
                kinds.append(name)
            else:
                raise HistoryError(
                    f"unknown kind {name!r}; valid: {', '.join(JOURNAL_KINDS)}, {ALL_KINDS}"
                )
    if not kinds:
        raise HistoryError(f"no kind given; valid: {', '.join(JOURNAL_KINDS)}, {ALL_KINDS}")
    return tuple(dict.fromkeys(kinds))


@dataclass(frozen=True, slots=True)
class RowFilter:
    """Which rows: kinds (None: every kind), the exact strategy, symbol, venue or operator a
    row concerns, and a time window ``since <= ts < until`` in journal ns."""

    kinds: tuple[str, ...] | None = DEFAULT_KINDS
    strategy: str | None = None
    symbol: str | None = None
    venue: str | None = None
    operator: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None

    def __post_init__(self) -> None:
        since, until = self.since_ns, self.until_ns
        if since is not None and until is not None and since >= until:
            raise HistoryError("--since must be before --until")


@dataclass(frozen=True, slots=True)
class Facets:
    """What one row concerns, read from its payload whatever its kind."""

    strategy: str = ""
    symbols: tuple[str, ...] = ()
    venue: str = ""
    operator: str = ""


def _d(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _s(x: Any) -> str:
    return x if isinstance(x, str) else ""


def facets(kind: str, payload: dict[str, Any]) -> Facets:
    """The strategy, symbols, venue and operator a row of ``kind`` is about ("" when none)."""
    if kind in (EventKind.DECISION, EventKind.INTENT, EventKind.ORDER, EventKind.FILL):
        inner = _d(payload.get(kind))
        return Facets(
            _s(inner.get("strategy_id")), (_s(inner.get("symbol")),), _s(inner.get("venue"))
        )
    if kind == EventKind.APPROVAL_REQUESTED:
        a = _d(payload.get("approval"))
        return Facets(_s(a.get("strategy")), (_s(a.get("symbol")),), _s(a.get("venue")))
    if kind == EventKind.APPROVAL:
        o = _d(payload.get("outcome"))
        p = _d(o.get("pending"))
        return Facets(
            _s(o.get("strategy_id")) or _s(p.get("strategy")),
            (_s(p.get("symbol")),),
            _s(p.get("venue")),
            _s(o.get("by")),
        )
    if kind == EventKind.AUDIT:
        a = _d(payload.get("args"))
        return Facets(
            _s(a.get("strategy")),
            (_s(a.get("symbol")),),
            _s(a.get("venue")),
            _s(payload.get("user")),
        )
    if kind == EventKind.SAFETY:
        what = payload.get("what")
        strategy = _s(payload.get("subject")) if what in ("strategy", "approval_mode") else ""
        return Facets(strategy, (), "", _s(payload.get("by")))
    if kind == EventKind.BREAKER:
        c = _d(payload.get("change"))
        scope = _s(c.get("scope"))
        if scope.startswith("symbol:"):
            return Facets("", (scope.removeprefix("symbol:"),), "", _s(c.get("by")))
        return Facets("" if scope == "global" else scope, (), "", _s(c.get("by")))
    if kind == EventKind.VENUE:
        return Facets(venue=_s(payload.get("venue")))
    if kind == EventKind.MARKS:
        return Facets(symbols=tuple(str(k) for k in _d(payload.get("marks"))))
    return Facets()


def matches(flt: RowFilter, kind: str, payload: dict[str, Any]) -> bool:
    """Does a row of ``kind`` concern what ``flt`` asks for (the kind and time aside)?"""
    if not (flt.strategy or flt.symbol or flt.venue or flt.operator):
        return True
    f = facets(kind, payload)
    return (
        (not flt.strategy or f.strategy == flt.strategy)
        and (not flt.symbol or flt.symbol in f.symbols)
        and (not flt.venue or f.venue == flt.venue)
        and (not flt.operator or f.operator == flt.operator)
    )


# --------------------------------------------------------------------------- reading rows

_COLUMNS = "seq, ts, kind, payload, prev_hash, hash"


def _where(flt: RowFilter, kind: str | None) -> tuple[str, list[Any]]:
    """The SQL part of a filter: one kind and the time exactly, the rest as a payload substring
    (a value a matching row must hold somewhere in its JSON text; checked exactly afterwards)."""
    clauses: list[str] = []
    params: list[Any] = []
    if kind is not None:
        clauses.append("kind = ?")
        params.append(kind)
    if flt.since_ns is not None:
        clauses.append("ts >= ?")
        params.append(flt.since_ns)
    if flt.until_ns is not None:
        clauses.append("ts < ?")
        params.append(flt.until_ns)
    for value in (flt.strategy, flt.symbol, flt.venue, flt.operator):
        if value:
            clauses.append("instr(payload, ?) > 0")
            params.append(orjson.dumps(value).decode()[1:-1])  # as the journal spells it
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = _connect_ro(path)
    except FileNotFoundError:
        raise JournalMissing(f"no journal at {path}") from None
    conn.isolation_level = None
    conn.execute("BEGIN")  # one snapshot for every cursor of the query, however long it reads
    return conn


def _raw_rows(
    conn: sqlite3.Connection, flt: RowFilter, newest_first: bool
) -> Iterator[tuple[Any, ...]]:
    """The rows in seq order. One kind walks the kind index; several kinds walk it once per
    kind and merge by seq (one scan with ``kind IN`` would sort every matching row first);
    every kind walks the table."""
    order = "DESC" if newest_first else "ASC"
    sql = f"SELECT {_COLUMNS} FROM journal{{}} ORDER BY seq {order}"
    kinds: tuple[str | None, ...] = (None,)
    if flt.kinds is not None and not set(JOURNAL_KINDS) <= set(flt.kinds):
        kinds = flt.kinds
    cursors = []
    for kind in kinds:
        where, params = _where(flt, kind)
        cursors.append(conn.execute(sql.format(where), params))
    if len(cursors) == 1:
        return iter(cursors[0])
    return heapq.merge(*cursors, key=operator.itemgetter(0), reverse=newest_first)


def _checked(raw: tuple[Any, ...]) -> JournalRow:
    """The row, if it matches its own hash; ChainBroken otherwise (an edit, not a crash)."""
    seq, ts, kind, payload_json, prev_hash, stored = raw
    if (
        type(ts) is not int
        or type(kind) is not str
        or "|" in kind
        or type(payload_json) is not str
        or type(prev_hash) is not str
        or row_hash(seq, ts, kind, payload_json, prev_hash) != stored
    ):
        raise ChainBroken(seq, f"row {seq} does not match its hash (edited?)")
    try:
        payload = orjson.loads(payload_json)
    except orjson.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict):
        raise ChainBroken(seq, f"row {seq}: payload is not a JSON object (written by hand?)")
    return JournalRow(seq, ts, kind, payload, prev_hash, stored)


def _link(newer: JournalRow, older: JournalRow) -> None:
    if newer.seq == older.seq + 1 and newer.prev_hash != older.hash:
        raise ChainBroken(newer.seq, f"row {newer.seq} does not follow row {older.seq} (edited?)")


def _followed(conn: sqlite3.Connection, row: JournalRow) -> None:
    """The row after a shown one still names its hash: a row forged with a recomputed hash of
    its own is caught even when a filter skips its neighbours (the newest row has none)."""
    after = conn.execute("SELECT prev_hash FROM journal WHERE seq = ?", (row.seq + 1,)).fetchone()
    if after is not None and after[0] != row.hash:
        raise ChainBroken(row.seq + 1, f"row {row.seq + 1} does not follow row {row.seq} (edited?)")


def _gapped(conn: sqlite3.Connection) -> bool:
    """Is a row missing anywhere (seq runs from 1 without a gap in an untouched journal)?
    Cheap: the count walks the kind index, the last seq is one lookup. Only then do the span
    checks below (which read every row they span) run, to say whether the gap is in what a
    query shows."""
    (count,) = conn.execute("SELECT COUNT(*) FROM journal").fetchone()
    (last,) = conn.execute("SELECT MAX(seq) FROM journal").fetchone()
    return last is not None and count != last


def _between(conn: sqlite3.Connection, older: JournalRow, newer: JournalRow) -> None:
    """Every row between two read ones is still there: a filter that skips the rows of other
    kinds must not hide one deleted among them (an operator's release taken out of the audit)."""
    if newer.seq - older.seq <= 1:
        return
    (count,) = conn.execute(
        "SELECT COUNT(*) FROM journal WHERE seq > ? AND seq < ?", (older.seq, newer.seq)
    ).fetchone()
    if count != newer.seq - older.seq - 1:
        raise ChainBroken(
            older.seq + 1,
            f"rows between {older.seq} and {newer.seq} are missing (deleted?)",
        )


def _tail(conn: sqlite3.Connection, newest: JournalRow) -> None:
    """Every row after the newest one read is still there (the rows of other kinds, and of
    this kind beyond the query's window): the last command's audit row deleted is caught."""
    count, last = conn.execute(
        "SELECT COUNT(*), MAX(seq) FROM journal WHERE seq > ?", (newest.seq,)
    ).fetchone()
    if count and count != last - newest.seq:
        raise ChainBroken(
            newest.seq + 1, f"rows after {newest.seq} up to {last} are missing (deleted?)"
        )


def _head(conn: sqlite3.Connection, oldest: JournalRow) -> None:
    """Every row before the oldest one read is still there (seq starts at 1)."""
    (count,) = conn.execute("SELECT COUNT(*) FROM journal WHERE seq < ?", (oldest.seq,)).fetchone()
    if count != oldest.seq - 1:
        raise ChainBroken(oldest.seq - 1, f"rows before {oldest.seq} are missing (deleted?)")


def _nothing_read(conn: sqlite3.Connection) -> None:
    """Nothing of the kinds asked for is left, and a row is missing: the only one was deleted
    (an empty answer would read as "no operator ever acted")."""
    raise ChainBroken(0, "a row is missing from the journal (deleted?)")


def scan(
    path: Path, flt: RowFilter, *, newest_first: bool = False
) -> Generator[JournalRow, None, None]:
    """Every matching row, checked, oldest first (or newest first), streamed off the cursor.

    Raises JournalMissing if there is no journal at ``path``, ChainBroken at the first row that
    does not match its hash, sqlite3.Error if the file is not a journal. Close the iterator
    (or run it to the end) to close the connection."""
    conn = _connect(path)
    raw: Iterator[tuple[Any, ...]] = iter(())
    try:
        raw = _raw_rows(conn, flt, newest_first)
        rows = map(_checked, raw)
        # A row deleted among those a query spans (an operator's release taken out of the
        # audit) is caught as an edited one is, not read as a clean history one row short.
        gapped = _gapped(conn)
        # Before the first row read and after the last too, --since and --until or not: the
        # row deleted may be the first at --since (or the last before --until), and a journal's
        # times do not follow its seq where the clock went back (a restart on a machine whose
        # clock was stepped back, a replay begun again): a row "before" in seq may be inside.
        head = tail = gapped
        if newest_first:
            newer: JournalRow | None = None
            for row in rows:
                if newer is not None:
                    _link(newer, row)
                    if gapped:
                        _between(conn, row, newer)
                elif tail:
                    _tail(conn, row)
                if matches(flt, row.kind, row.payload):
                    if newer is None or newer.seq != row.seq + 1:
                        _followed(conn, row)  # its successor was not read: look it up
                    yield row
                newer = row
            # Read to the end (fewer than asked for): what is before the oldest was theirs too.
            if newer is not None and head:
                _head(conn, newer)
            elif newer is None and head and tail:
                _nothing_read(conn)
            return
        # Oldest first: read one row ahead, so a shown row's successor is checked before it is
        # shown; a successor that fails its own hash is raised after the row (which is sound).
        ahead, broken = _next(rows)
        if ahead is not None and head:
            _head(conn, ahead)
        elif ahead is None and broken is None and head and tail:
            _nothing_read(conn)
        while ahead is not None:
            row = ahead
            ahead, broken = _next(rows) if broken is None else (None, broken)
            if ahead is not None:
                _link(ahead, row)
                if gapped:
                    _between(conn, row, ahead)
            elif broken is None and tail:
                _tail(conn, row)
            if matches(flt, row.kind, row.payload):
                if ahead is None or ahead.seq != row.seq + 1:
                    _followed(conn, row)
                yield row
        if broken is not None:
            raise broken
    finally:
        close = getattr(raw, "close", None)  # a merge of cursors: before their connection
        if close is not None:
            close()
        conn.close()


def _next(rows: Iterator[JournalRow]) -> tuple[JournalRow | None, ChainBroken | None]:
    try:
        return next(rows, None), None
    except ChainBroken as exc:
        return None, exc


def _first(rows: Iterator[Any], limit: int) -> list[Any]:
    """The first ``limit`` items, then the iterator closed (its connection with it)."""
    out: list[Any] = []
    try:
        for item in rows:
            out.append(item)
            if len(out) >= limit:
                break
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
    return out


def newest(path: Path, flt: RowFilter, limit: int) -> list[JournalRow]:
    """The newest ``limit`` matching rows, oldest first; reads no further back than it needs."""
    if limit <= 0:
        return []
    rows = _first(scan(path, flt, newest_first=True), limit)
    rows.reverse()
    return rows


def journal_extent(path: Path) -> tuple[int, int]:
    """(first seq, last seq) of the journal at ``path``: (0, 0) when it holds no row."""
    conn = _connect(path)
    try:
        first, last = conn.execute("SELECT min(seq), max(seq) FROM journal").fetchone()
    finally:
        conn.close()
    return first or 0, last or 0


def as_event(row: JournalRow) -> dict[str, Any]:
    """A row in the shape a client receives an event: ``{"seq", "event", "ts", **payload}``
    (the row's own seq, kind and ts win over a payload that names them too)."""
    head = {"seq": row.seq, "event": row.kind, "ts": row.ts}
    return {**head, **{k: v for k, v in row.payload.items() if k not in head}}


def iso_time(ts: int) -> str:
    """Journal ns as ISO 8601 UTC with milliseconds (``2024-03-01T14:30:00.123Z``)."""
    try:
        dt = datetime.fromtimestamp(ts / NS_PER_SECOND, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return f"ts {ts}"
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- round trips


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """One entry matched with one exit (FIFO per strategy and symbol). A fill that closes
    several entries makes several round trips; ``fees`` are each fill's share by quantity."""

    strategy: str
    symbol: str
    venue: str
    side: str  # long | short
    qty: float
    entry_ts: int
    exit_ts: int
    entry_price: float
    exit_price: float
    fees: float
    gross_pnl: float
    entry_fill: str
    exit_fill: str

    @property
    def pnl(self) -> float:
        """Net of both fills' fees."""
        return self.gross_pnl - self.fees

    @property
    def holding_s(self) -> float:
        return (self.exit_ts - self.entry_ts) / NS_PER_SECOND

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "symbol": self.symbol,
            "venue": self.venue,
            "side": self.side,
            "qty": self.qty,
            "entry_time": iso_time(self.entry_ts),
            "exit_time": iso_time(self.exit_ts),
            "entry_price": self.entry_price,
            "exit_price": self.exit_price,
            "fees": self.fees,
            "gross_pnl": self.gross_pnl,
            "pnl": self.pnl,
            "holding_s": self.holding_s,
            "entry_fill": self.entry_fill,
            "exit_fill": self.exit_fill,
            "entry_ts": self.entry_ts,
            "exit_ts": self.exit_ts,
        }


@dataclass(slots=True)
class _Lot:
    qty: float  # left open, > 0
    price: float
    fee_per_unit: float
    ts: int
    fill_id: str
    order: str  # the client order id of the fills that opened it ("" when unknown)


@dataclass(slots=True)
class _Exit:
    """A round trip being closed: one lot by one exit order, whose later fills may close more
    of it (an order filled in parts is one trade, not one per part)."""

    lot: _Lot
    order: str
    venue: str
    qty: float = 0.0
    entry_notional: float = 0.0
    exit_notional: float = 0.0
    fees: float = 0.0
    gross: float = 0.0
    exit_ts: int = 0
    exit_fill: str = ""

    def trip(self, strategy: str, symbol: str, long: bool) -> RoundTrip:
        q = self.qty
        return RoundTrip(
            strategy,
            symbol,
            self.venue,
            "long" if long else "short",
            q,
            self.lot.ts,
            self.exit_ts,
            self.entry_notional / q,
            self.exit_notional / q,
            self.fees,
            self.gross,
            self.lot.fill_id,
            self.exit_fill,
        )


@dataclass(slots=True)
class _Book:
    long: bool = True
    lots: deque[_Lot] = field(default_factory=deque)
    closing: _Exit | None = None  # the front lot's trip while its exit order may fill again


# Below this quantity, a lot's remainder is float dust from splitting, not a position.
_QTY_EPS = 1e-12


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


class RoundTrips:
    """Pairs fills, fed oldest first, into round trips: FIFO per (strategy, symbol). A fill
    opposite to the open lots closes them oldest first; what it has left opens the other way.

    An order is one trade however the venue split it: the fills of one order (its client order
    id) that open in a row make one lot, and the fills of one exit order closing a lot make one
    round trip (a trip is returned once its lot is closed or another order closes it; call
    :meth:`finish` at the end for the ones still waiting)."""

    def __init__(self) -> None:
        self._books: dict[tuple[str, str], _Book] = {}

    def open_lots(self) -> int:
        """Lots still open (entries with no exit yet)."""
        return sum(len(b.lots) for b in self._books.values())

    def add(self, fill: dict[str, Any]) -> list[RoundTrip]:
        """One fill (``engine.types.Fill`` as a dict); returns the round trips it completes."""
        qty, price, fee = _num(fill.get("qty")), _num(fill.get("price")), _num(fill.get("fee"))
        side, ts = fill.get("side"), fill.get("ts")
        if qty is None or price is None or qty <= 0 or side not in ("buy", "sell"):
            return []
        if type(ts) is not int:
            return []
        strategy, symbol = _s(fill.get("strategy_id")), _s(fill.get("symbol"))
        fill_id, venue = _s(fill.get("fill_id")), _s(fill.get("venue"))
        order = _s(fill.get("client_order_id"))
        fee_per_unit = (fee or 0.0) / qty
        book = self._books.setdefault((strategy, symbol), _Book())
        buying = side == "buy"
        out: list[RoundTrip] = []
        left = qty
        while left > _QTY_EPS and book.lots and book.long != buying:
            lot = book.lots[0]
            q = min(lot.qty, left)
            closing = book.closing
            if closing is None or closing.lot is not lot or not order or closing.order != order:
                if closing is not None:
                    out.append(closing.trip(strategy, symbol, book.long))
                closing = book.closing = _Exit(lot, order, venue, exit_ts=ts, exit_fill=fill_id)
            closing.qty += q
            closing.entry_notional += lot.price * q
            closing.exit_notional += price * q
            closing.fees += (lot.fee_per_unit + fee_per_unit) * q
            closing.gross += (price - lot.price) * q if book.long else (lot.price - price) * q
            closing.exit_ts = ts
            lot.qty -= q
            left -= q
            if lot.qty <= _QTY_EPS * max(1.0, q):
                book.lots.popleft()
            if not book.lots or book.lots[0] is not lot or not order:
                out.append(closing.trip(strategy, symbol, book.long))  # nothing more to close
                book.closing = None
        if left > _QTY_EPS * max(1.0, qty):
            if not book.lots:
                book.long = buying
            last = book.lots[-1] if book.lots else None
            if last is not None and order and last.order == order:
                # The next part of the same order: one entry at the parts' average price.
                total = last.qty + left
                last.price = (last.price * last.qty + price * left) / total
                last.fee_per_unit = (last.fee_per_unit * last.qty + fee_per_unit * left) / total
                last.qty = total
            else:
                book.lots.append(_Lot(left, price, fee_per_unit, ts, fill_id, order))
        return out

    def finish(self) -> list[RoundTrip]:
        """The round trips still waiting for more fills of their exit order, at the end."""
        out = []
        for (strategy, symbol), book in self._books.items():
            if book.closing is not None:
                out.append(book.closing.trip(strategy, symbol, book.long))
                book.closing = None
        return out


def round_trips(path: Path, flt: RowFilter, limit: int) -> tuple[list[RoundTrip], int]:
    """The newest ``limit`` round trips (0: all) whose exit is in ``flt``'s time window, oldest
    first, and how many lots are still open. Pairing reads every fill of the strategy and
    symbol from the start whatever the window: an exit's entry may be older than the window."""
    fills = RowFilter(
        kinds=(EventKind.FILL,), strategy=flt.strategy, symbol=flt.symbol, venue=flt.venue
    )
    pairing = RoundTrips()
    # A trip waits for its exit order's later fills, so trips may complete out of exit order:
    # the newest ``limit`` by exit time are kept in a heap (bounded by ``limit``).
    kept: list[tuple[int, int, RoundTrip]] = []
    n = 0

    def keep(trips: list[RoundTrip]) -> None:
        nonlocal n
        for trip in trips:
            if flt.since_ns is not None and trip.exit_ts < flt.since_ns:
                continue
            if flt.until_ns is not None and trip.exit_ts >= flt.until_ns:
                continue
            n += 1
            item = (trip.exit_ts, n, trip)
            if limit <= 0 or len(kept) < limit:
                heapq.heappush(kept, item)
            else:
                heapq.heappushpop(kept, item)

    for row in scan(path, fills):
        keep(pairing.add(_d(row.payload.get("fill"))))
    keep(pairing.finish())
    return [t for _ts, _n, t in sorted(kept)], pairing.open_lots()


# --------------------------------------------------------------------------- audit


# Who engages the kill switch outside the command path: a person's SIGUSR1 or KILL file (the
# fallbacks of `cockpit kill`). Those safety rows have no audit row of their own; every other
# change a person makes is a command's, described by its audit row (its consequences, such as
# a re-armed breaker's resume, are not actions of their own).
OUTSIDE_COMMANDS = frozenset({"signal", "file"})
# Who, when and why are columns of the record; in a before/after they are noise.
_NOT_CHANGES = frozenset({"ts", "by", "reason", "ts_event", "client", "kill_by", "kill_reason"})


@dataclass(frozen=True, slots=True)
class Change:
    """One value an action changed: its dotted path, before and after."""

    what: str
    before: Any
    after: Any


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One operator action (accepted or refused): when, who, from which client, what, on what,
    the values it changed, why and the engine's answer."""

    seq: int
    ts: int
    user: str
    client: str
    action: str
    subject: str
    accepted: bool
    reason: str
    message: str
    changes: tuple[Change, ...]
    before: dict[str, Any]
    after: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "time": iso_time(self.ts),
            "user": self.user,
            "client": self.client,
            "action": self.action,
            "subject": self.subject,
            "accepted": self.accepted,
            "reason": self.reason,
            "message": self.message,
            "changes": [
                {"what": c.what, "before": c.before, "after": c.after} for c in self.changes
            ],
            "before": self.before,
            "after": self.after,
        }


def changes(before: Any, after: Any, prefix: str = "") -> list[Change]:
    """The leaves that differ between two nested dicts, as dotted paths (who/when/why left out),
    in key order: the same list live (the event's dict) and after a restart (its journaled row,
    whose keys are stored sorted)."""
    b, a = _d(before), _d(after)
    out: list[Change] = []
    for key in sorted({*b, *a}, key=str):
        if key in _NOT_CHANGES:
            continue
        x, y = b.get(key), a.get(key)
        path = f"{prefix}{key}"
        nested = isinstance(x, dict) or isinstance(y, dict)
        if nested and isinstance(x, dict | None) and isinstance(y, dict | None):
            out.extend(changes(x, y, path + "."))
            continue
        if x != y:
            out.append(Change(path, x, y))
    return out


def _subject(action: str, args: dict[str, Any]) -> str:
    """What an action was aimed at, from its arguments."""
    if action == "kill":
        return _s(args.get("level"))
    if action == "flatten":
        return _s(args.get("symbol")) or "all positions"
    if action == "rearm":
        breaker = _s(args.get("breaker"))
        scope = _s(args.get("scope"))
        return f"{breaker} ({scope})" if breaker else scope
    if action == "resolve":
        return f"{_s(args.get('venue'))} {_s(args.get('key'))} {_s(args.get('action'))}".strip()
    for key in ("strategy", "name", "id", "symbol", "venue"):
        if _s(args.get(key)):
            return str(args[key])
    return ""


def audit_record(row: JournalRow) -> AuditRecord | None:
    """The audit record a row makes, or None: an ``audit`` row, or a ``safety`` row a person
    caused outside the command path (a kill by SIGUSR1 or by the KILL file)."""
    p = row.payload
    if row.kind == EventKind.AUDIT:
        before, after = _d(p.get("before")), _d(p.get("after"))
        action = _s(p.get("action"))
        return AuditRecord(
            row.seq,
            row.ts,
            _s(p.get("user")),
            _s(p.get("client")),
            action,
            _subject(action, _d(p.get("args"))),
            p.get("accepted") is True,
            _s(p.get("reason")),
            _s(p.get("message")),
            tuple(changes(before, after)),
            before,
            after,
        )
    if row.kind == EventKind.SAFETY:
        by, what = _s(p.get("by")), _s(p.get("what"))
        if p.get("client") or by not in OUTSIDE_COMMANDS or what != "kill_switch":
            return None
        before, after = _d(p.get("before")), _d(p.get("after"))
        subject = _s(p.get("subject"))
        return AuditRecord(
            row.seq,
            row.ts,
            by,
            by,  # signal | file: the way it came in
            what,
            subject,
            True,
            _s(p.get("reason")),
            f"{what} {subject} changed by {by}",
            tuple(changes(before, after)),
            before,
            after,
        )
    return None


AUDIT_KINDS = (EventKind.AUDIT.value, EventKind.SAFETY.value)


def audit_records(path: Path, flt: RowFilter, limit: int) -> Iterator[AuditRecord]:
    """Audit records oldest first: the newest ``limit`` (0: all, streamed) in ``flt``'s window,
    by ``flt.operator`` if given (the kinds and other facets of ``flt`` are not used)."""
    rows_filter = RowFilter(
        kinds=AUDIT_KINDS, operator=flt.operator, since_ns=flt.since_ns, until_ns=flt.until_ns
    )
    if limit <= 0:
        for row in scan(path, rows_filter):
            rec = audit_record(row)
            if rec is not None:
                yield rec
        return
    newest_first = scan(path, rows_filter, newest_first=True)
    records = (r for r in map(audit_record, newest_first) if r is not None)
    try:
        found = _first(records, limit)
    finally:
        newest_first.close()
    yield from reversed(found)
