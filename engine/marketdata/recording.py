"""Raw market data recording: every payload a venue feed received, append-only, SHA-256 chained.

Layout (``DATA/record``, see docs/marketdata.md)::

    DATA/record/VENUE/SYMBOL_SAFE/YYYY-MM-DD.rec.jsonl      one UTC day of one symbol's stream

A file is lines ``<sha256 hex> <json body>\\n``. The hash of record ``i`` is
``sha256(hash(i-1) + body(i))`` over the 32 raw bytes of the previous hash and the body's bytes
exactly as written (record 0's previous hash is 32 zero bytes), so a changed, dropped, inserted
or reordered record breaks the chain where it happened. Bodies carry ``n``, the record's number,
which lets :func:`verify_file` say *what* happened (changed, dropped, inserted, swapped).

* Record 0 is the header: ``{"n":0,"kind":"header","format":..,"venue","symbol","day"}``.
* ``{"kind":"session",..}`` starts each engine run's records: the feed's source ("book",
  "ticker", "bidask") and the instrument the venue described (tick, lot, minimums), so a replay
  sizes orders as the live run did.
* Data records: ``{"n","kind","recv_ns","exch_ns","payload"}``: ``payload`` is what the venue's
  stream delivered to the feed (ccxt's structure, whose ``info`` is the exchange's own message
  where ccxt keeps one), serialized once, when it arrived; ``recv_ns`` the wall clock then;
  ``exch_ns`` the venue's timestamp (null when it gave none).
* ``{"kind":"close","records":N}`` ends a day: written when the UTC day is over (or when a
  stopping engine finds a past day's file still open), after which the file is made read-only
  (0444). A closed file's records are all accounted for: dropping the last one is caught too.
  Today's file stays writable: until its day closes, a cut at its tail cannot be told from a
  stop. A file whose tail is damaged (a crash mid-line) is never written to again: the next run
  starts ``YYYY-MM-DD.2.rec.jsonl``.

Recording never blocks the engine: :class:`MarketRecorder` takes each payload into a bounded
queue (a full queue drops it, counted per symbol, reported and alerted), and a thread of its own
hashes and writes, flushing at most every ``flush_interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import json
import math
import os
import queue
import re
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from engine.marketdata.replay import ReplayError
from engine.marketdata.store import StoreError, symbol_safe
from engine.types import NS_PER_MS, NS_PER_SECOND, Instrument

if TYPE_CHECKING:
    from engine.runtime import Engine

FORMAT = "cockpit-record/1"
RECORD_DIR = "record"
SUFFIX = ".rec.jsonl"
ZERO_HASH = bytes(32)
HASH_HEX = 64
# How often the recorder looks at its drops and at days that have ended (seconds).
TICK_S = 1.0
# A run of drops is announced (an event, hence an alert) at most this often.
DROP_REPORT_S = 60.0
# How long a stopping engine waits for the writer to empty its queue.
FINAL_FLUSH_S = 5.0
# What the queue may hold in payload bytes besides its count: a full venue book is tens of
# KB, so 100,000 of them behind a stalled disk would be gigabytes of the engine's memory.
MAX_QUEUED_BYTES = 256 * 1024 * 1024
_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\.(\d+))?" + re.escape(SUFFIX) + "$")


def writable(path: Path) -> bool:
    """A day file still open for appending: any write bit set (root ignores 0444, so the mode
    is what counts, not os.access)."""
    return bool(path.stat().st_mode & 0o222)


def record_root(data_dir: str | Path) -> Path:
    return Path(data_dir) / RECORD_DIR


def day_of_ns(ts_ns: int) -> str:
    """The UTC day (YYYY-MM-DD) of an epoch-ns time."""
    return datetime.fromtimestamp(ts_ns / NS_PER_SECOND, UTC).strftime("%Y-%m-%d")


def chain(prev: bytes, body: bytes) -> bytes:
    """The record's hash: SHA-256 of the previous record's hash and this record's body."""
    return hashlib.sha256(prev + body).digest()


def encode_payload(payload: Any) -> bytes:
    """A payload as compact JSON, exactly once, when it arrived (ccxt reuses and updates its
    order-book objects in place: serializing later would record a later book). orjson: about
    a tenth of the stdlib's time on the feed's task. JSON has no NaN or infinity: orjson
    writes them as null, which the feed refuses on replay as it refused them live (no quote,
    no depth; only the reject's code can differ). Objects JSON cannot hold are written as
    their ``str``."""
    return orjson.dumps(payload, default=str, option=orjson.OPT_NON_STR_KEYS)


def exchange_ns(payload: Any) -> int | None:
    """The venue's timestamp of a ccxt structure (ms) in ns, if it gave one (a batch of
    trades: its last trade's)."""
    if isinstance(payload, list) and payload:
        payload = payload[-1]
    ts = payload.get("timestamp") if isinstance(payload, dict) else None
    if isinstance(ts, int) and not isinstance(ts, bool):
        return ts * NS_PER_MS
    if isinstance(ts, float) and math.isfinite(ts):  # int(inf) raises out of offer()
        return int(ts) * NS_PER_MS
    return None


def instrument_doc(inst: Instrument) -> dict[str, Any]:
    return {
        "tick_size": inst.tick_size,
        "lot_size": inst.lot_size,
        "min_qty": inst.min_qty,
        "min_notional": inst.min_notional,
    }


# ---------------------------------------------------------------------- writing


@dataclass
class _Open:
    """One day file being appended to."""

    path: Path
    fh: Any
    day: str
    n: int  # the next record's number
    prev: bytes  # the last record's hash
    session_written: bool = False


@dataclass
class Item:
    """One payload waiting for the writer."""

    venue: str
    symbol: str
    kind: str
    recv_ns: int
    exch_ns: int | None
    payload: bytes  # JSON


def _tail(path: Path) -> tuple[int, bytes, bool] | None:
    """(next n, last hash, closed) of an existing day file, or None if its tail is damaged
    (a partial last line, a last line that is not a record): such a file is never appended to."""
    size = path.stat().st_size
    if size == 0:
        return None
    with path.open("rb") as fh:
        back = min(size, 1 << 20)
        fh.seek(size - back)
        chunk = fh.read()
    if not chunk.endswith(b"\n"):
        return None
    lines = chunk[:-1].split(b"\n")
    last = lines[-1]
    try:
        digest_hex, body = last.split(b" ", 1)
        doc = json.loads(body)
        digest = bytes.fromhex(digest_hex.decode("ascii"))
        n = int(doc["n"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    if len(digest) != 32:
        return None
    return n + 1, digest, doc.get("kind") == "close"


class RecordWriter:
    """Appends records to the day files under ``root`` (synchronous: the recorder's thread
    owns it; tests and the bench use it directly)."""

    def __init__(self, root: Path, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.root = root
        self._clock = clock_ns
        self.files: dict[tuple[str, str], _Open] = {}
        self.meta: dict[tuple[str, str], dict[str, Any]] = {}  # the session record's fields
        self.records = 0
        self.bytes = 0
        self.closed_files = 0
        self.records_by: Counter[str] = Counter()  # venue -> data records written

    def describe(self, venue: str, symbol: str, **meta: Any) -> None:
        """What a session record says about this symbol's stream (source, instrument)."""
        self.meta[(venue, symbol)] = meta

    def _dir(self, venue: str, symbol: str) -> Path:
        return self.root / symbol_safe(venue) / symbol_safe(symbol)

    def _open(self, venue: str, symbol: str, day: str) -> _Open:
        folder = self._dir(venue, symbol)
        folder.mkdir(parents=True, exist_ok=True)
        part = 1
        while True:
            name = f"{day}{SUFFIX}" if part == 1 else f"{day}.{part}{SUFFIX}"
            path = folder / name
            if not path.exists():
                fh = path.open("ab")
                rec = _Open(path, fh, day, 0, ZERO_HASH)
                header = {
                    "n": 0,
                    "kind": "header",
                    "format": FORMAT,
                    "venue": venue,
                    "symbol": symbol,
                    "day": day,
                    "part": part,
                }
                self._append(rec, json.dumps(header, separators=(",", ":")).encode())
                return rec
            tail = _tail(path) if writable(path) else None
            if tail is not None and not tail[2]:
                n, prev, _closed = tail
                return _Open(path, path.open("ab"), day, n, prev)
            part += 1  # closed, read-only or damaged at its tail: never written again

    def _append(self, rec: _Open, body: bytes) -> None:
        digest = chain(rec.prev, body)
        line = digest.hex().encode() + b" " + body + b"\n"
        rec.fh.write(line)
        rec.prev = digest
        rec.n += 1
        self.bytes += len(line)

    def write(self, item: Item) -> None:
        key = (item.venue, item.symbol)
        day = day_of_ns(item.recv_ns)
        rec = self.files.get(key)
        if rec is not None and rec.day != day:
            self._close(key)
            rec = None
        if rec is None:
            rec = self.files[key] = self._open(item.venue, item.symbol, day)
        if not rec.session_written:
            meta = self.meta.get(key, {})
            doc = {"n": rec.n, "kind": "session", "opened_ns": item.recv_ns, **meta}
            self._append(rec, json.dumps(doc, separators=(",", ":")).encode())
            rec.session_written = True
        exch = "null" if item.exch_ns is None else str(int(item.exch_ns))
        head = (
            f'{{"n":{rec.n},"kind":{json.dumps(item.kind)},"recv_ns":{int(item.recv_ns)},'
            f'"exch_ns":{exch},"payload":'
        )
        body = head.encode() + item.payload + b"}"
        self._append(rec, body)
        self.records += 1
        self.records_by[item.venue] += 1

    def flush(self) -> None:
        for rec in self.files.values():
            rec.fh.flush()

    def _close(self, key: tuple[str, str]) -> None:
        self._finish(self.files.pop(key))

    def _finish(self, rec: _Open) -> None:
        """End a day: the closing record, then the file is made read-only."""
        doc = {"n": rec.n, "kind": "close", "records": rec.n, "closed_ns": self._clock()}
        self._append(rec, json.dumps(doc, separators=(",", ":")).encode())
        rec.fh.flush()
        os.fsync(rec.fh.fileno())
        rec.fh.close()
        os.chmod(rec.path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)  # 0444
        self.closed_files += 1

    def close_past_days(self, today: str | None = None, *, on_disk: bool = False) -> None:
        """Close every open file of a day before ``today`` (default: the clock's UTC day);
        ``on_disk``: also those an earlier run left open (a walk of the whole folder: done at
        stop, not every tick)."""
        today = today or day_of_ns(self._clock())
        for key in [k for k, rec in self.files.items() if rec.day < today]:
            self._close(key)
        if on_disk:
            self.close_stale_files(today)

    def close_stale_files(self, today: str) -> None:
        """Files of past days left open by an engine that stopped before the day ended (found on
        disk, not held here): closed now, as their day is over."""
        if not self.root.is_dir():
            return
        held = {rec.path for rec in self.files.values()}
        for path in sorted(self.root.glob(f"*/*/*{SUFFIX}")):
            m = _NAME.match(path.name)
            if m is None or m.group(1) >= today or path in held:
                continue
            if not writable(path):
                continue
            tail = _tail(path)
            if tail is None or tail[2]:
                continue
            n, prev, _ = tail
            self._finish(_Open(path, path.open("ab"), m.group(1), n, prev))

    def stop(self) -> None:
        """Flush everything and close past days; today's files stay open for the next run."""
        self.close_past_days(on_disk=True)
        for rec in self.files.values():
            rec.fh.flush()
            with contextlib.suppress(OSError):
                os.fsync(rec.fh.fileno())
            rec.fh.close()
        self.files.clear()


_STOP: Any = object()


class MarketRecorder:
    """The engine's recorder (``[record] enabled``): a bounded queue in front of a writer
    thread, run as a :class:`~engine.runtime.Companion`. See the module doc."""

    def __init__(
        self,
        root: Path,
        *,
        queue_size: int = 100_000,
        flush_interval_s: float = 0.2,
        trades: bool = True,
        clock_ns: Callable[[], int] = time.time_ns,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        self.root = root
        self.writer = RecordWriter(root, clock_ns)
        self.max_queued_bytes = max_queued_bytes
        self.queued_bytes = 0  # payload bytes waiting for the writer (under _drop_lock)
        self.trades = trades
        self.flush_interval_s = flush_interval_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._clock = clock_ns
        self._thread: threading.Thread | None = None
        self.accepting = False
        self.offered = 0
        self.dropped = 0
        self.dropped_by: Counter[str] = Counter()  # "venue symbol" -> payloads dropped
        self.error = ""  # the writer's failure (disk full, ...): everything after is dropped
        self._reported_drops = 0
        self._last_report = 0.0
        self._drop_lock = threading.Lock()

    # -------------------------------------------------------------- the feed's side

    def describe(self, venue: str, symbol: str, feed: Any, instrument: Instrument) -> None:
        """What the session record says: the feed's settings (a replay judges payloads as the
        feed did) and the instrument (a replay sizes orders as the live run did). The feed is
        told whether to watch trades for the recording too."""
        feed.record_trades = self.trades
        self.writer.describe(
            venue,
            symbol,
            source=feed.source,
            stale_after_ns=int(feed.stale_after_ns),
            book_depth=int(feed.book_depth),
            max_spread_bps=float(feed.validator.max_spread_bps),
            instrument=instrument_doc(instrument),
        )

    def offer(self, venue: str, symbol: str, kind: str, recv_ns: int, payload: Any) -> None:
        """Take one payload as received (called on the feed's task: never waits)."""
        if not self.accepting:
            return
        self.offered += 1
        if self.error:
            self._drop(venue, symbol)
            return
        try:
            item = Item(venue, symbol, kind, recv_ns, exchange_ns(payload), encode_payload(payload))
        except (TypeError, ValueError):  # a payload JSON cannot hold: counted, never raised
            self._drop(venue, symbol)
            return
        size = len(item.payload)
        with self._drop_lock:
            if self.queued_bytes + size > self.max_queued_bytes:
                self.dropped += 1
                self.dropped_by[f"{venue} {symbol}"] += 1
                return
            self.queued_bytes += size
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._unqueue(item)
            self._drop(venue, symbol)

    def _unqueue(self, item: Item) -> None:
        with self._drop_lock:
            self.queued_bytes -= len(item.payload)

    def _drop(self, venue: str, symbol: str) -> None:
        with self._drop_lock:  # the feed's task and, when the disk fails, the writer thread
            self.dropped += 1
            self.dropped_by[f"{venue} {symbol}"] += 1

    # -------------------------------------------------------------- the writer thread

    def start(self) -> None:
        """Start taking payloads and the writer thread (idempotent)."""
        if self._thread is not None:
            return
        self.accepting = True
        self._thread = threading.Thread(target=self._work, name="market-recorder", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        writer, q = self.writer, self._queue
        last_flush = last_days = time.monotonic()
        item: Any = None
        try:
            while True:
                try:
                    item = q.get(timeout=self.flush_interval_s)
                except queue.Empty:
                    item = None
                if item is _STOP:
                    break
                if item is not None:
                    self._unqueue(item)
                    writer.write(item)
                    item = None
                now = time.monotonic()
                if now - last_flush >= self.flush_interval_s:
                    writer.flush()
                    last_flush = now
                if now - last_days >= TICK_S:
                    writer.close_past_days()
                    last_days = now
            writer.stop()
        except Exception as exc:  # disk full, permissions: the engine goes on, unrecorded
            self.error = f"{type(exc).__name__}: {exc}"
            if isinstance(item, Item):  # the one being written: lost with the disk
                self._drop(item.venue, item.symbol)
            with contextlib.suppress(Exception):
                writer.stop()
            while True:  # what was queued is lost: counted
                try:
                    left = q.get_nowait()
                except queue.Empty:
                    break
                if isinstance(left, Item):
                    self._unqueue(left)
                    self._drop(left.venue, left.symbol)

    def stop(self, timeout_s: float = FINAL_FLUSH_S) -> None:
        """Stop taking payloads, write what is queued, close past days (blocking)."""
        self.accepting = False
        thread = self._thread
        if thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout_s)
        thread.join(timeout_s)
        self._thread = None

    # -------------------------------------------------------------- the companion

    async def run(self, engine: Engine) -> None:
        """Beside the engine: report drops (an event, hence an alert) at most every
        ``DROP_REPORT_S``, and what is left when the run ends. The writer itself lives as long
        as the feeds (the source starts and stops it), not one run: the feeds go on receiving
        between two runs, and what the engine processes must all be recorded."""
        self.start()
        try:
            while True:
                await asyncio.sleep(TICK_S)
                await self._report(engine)
        finally:
            with contextlib.suppress(Exception):
                await self._report(engine, force=True)

    async def _report(self, engine: Engine, force: bool = False) -> None:
        new = self.dropped - self._reported_drops
        now = time.monotonic()
        if new <= 0 or (not force and now - self._last_report < DROP_REPORT_S):
            return
        if engine.journal is None or engine.core is None:
            return
        from engine.events import RecordingDropped

        self._reported_drops = self.dropped
        self._last_report = now
        worst = ", ".join(f"{k} {v}" for k, v in self.dropped_by.most_common(3))
        detail = self.error or "the recorder's queue was full (the disk is slower than the feed)"
        await engine.publish(
            [RecordingDropped(engine.core.now, new, self.dropped, f"{detail}; most: {worst}")]
        )

    def venue_status(self, venue: str) -> dict[str, Any]:
        """One venue's counts (the Venues pane's recording line)."""
        prefix = f"{venue} "
        return {
            "records": self.writer.records_by[venue],
            "dropped": sum(v for k, v in self.dropped_by.items() if k.startswith(prefix)),
            "error": self.error,
        }

    def status(self) -> dict[str, Any]:
        """Counts for the snapshot and `cockpit status`."""
        return {
            "records": self.writer.records,
            "bytes": self.writer.bytes,
            "dropped": self.dropped,
            "queued": self._queue.qsize(),
            "files": len(self.writer.files),
            "error": self.error,
            "path": str(self.root),
        }


def attach_recorder(engine: Engine) -> MarketRecorder | None:
    """The recorder ``[record]`` asks for, given to the venue feeds and run beside the engine
    (None when recording is off or the market is not a venue's: a replay is not re-recorded)."""
    rc = engine.cfg.record
    if not rc.enabled:
        return None
    source: Any = engine.source
    if not hasattr(source, "recorder"):
        return None
    recorder = MarketRecorder(
        record_root(engine.data_dir),
        queue_size=rc.queue_size,
        flush_interval_s=rc.flush_interval_s,
        trades=rc.trades,
    )
    source.recorder = recorder
    engine.companions.append(recorder)
    return recorder


# ---------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class Problem:
    """Something wrong in a recording: the file and the record (0 = the header)."""

    path: Path
    record: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}: record {self.record} (line {self.record + 1}): {self.what}"


@dataclass
class FileReport:
    path: Path
    records: int = 0  # lines read
    closed: bool = False
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Line:
    raw: bytes
    stored: bytes | None  # the stored hash (None: unreadable)
    body: bytes
    doc: dict[str, Any] | None
    n: int | None


_DATA_HEAD = re.compile(rb'\{"n":(0|[1-9][0-9]{0,18}),"kind":"(book|ticker|bidask|trade)","')


def _parse_line(raw: bytes, full: bool = True) -> _Line:
    """One line split into its stored hash and body. A data record's number and kind are read
    from the start of its body, which the writer always lays out the same way; its payload is
    parsed only when ``full`` (replay), as the hash covers the bytes whatever they say."""
    digest_hex, sep, body = raw.partition(b" ")
    stored: bytes | None = None
    doc: dict[str, Any] | None = None
    n: int | None = None
    if sep and len(digest_hex) == HASH_HEX:
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            stored = bytes.fromhex(digest_hex.decode("ascii"))
    if not full and sep and body.endswith(b"}"):
        m = _DATA_HEAD.match(body)
        if m is not None:
            n = int(m.group(1))
            return _Line(raw, stored, body, {"n": n, "kind": m.group(2).decode()}, n)
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        parsed = json.loads(body) if sep else None
        if isinstance(parsed, dict):
            doc = parsed
            value = parsed.get("n")
            if isinstance(value, int) and not isinstance(value, bool):
                n = value
    return _Line(raw, stored, body, doc, n)


def verify_file(path: Path) -> FileReport:
    """Check one day file's chain; each problem names the record where it is."""
    report = FileReport(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        report.problems.append(Problem(path, 0, f"cannot read ({exc.strerror or exc})"))
        return report
    complete = data.endswith(b"\n")
    raws = data.split(b"\n")
    if complete or not data:
        raws = raws[:-1]
    lines = [_parse_line(r, full=False) for r in raws]
    report.records = len(lines)
    problems = report.problems
    if lines and all(ln.doc is None or ln.n is None or ln.stored is None for ln in lines):
        # A CSV or any other file given by mistake: one line says so, not one per line.
        problems.append(
            Problem(
                path,
                0,
                f"not a market recording: none of its {len(lines):,} lines is a record "
                f"(cockpit data verify checks the *{SUFFIX} files a [record] engine writes)",
            )
        )
        return report

    def flag(pos: int, what: str) -> None:
        problems.append(Problem(path, pos, what))

    prevs = {ZERO_HASH}  # what the next record may chain from (more than one after a problem)
    expected = 0  # the next record number
    pos = 0
    while pos < len(lines):
        line = lines[pos]
        if not complete and pos == len(lines) - 1:
            flag(pos, "cut short: the last line is incomplete (a crash while writing?)")
            break
        if line.doc is None or line.n is None or line.stored is None:
            flag(pos, "not a record (its hash or its JSON is damaged): changed or inserted")
            prevs = {p for p in prevs} | ({line.stored} if line.stored else set())
            pos += 1
            continue
        ok = any(chain(p, line.body) == line.stored for p in prevs)
        n = line.n
        if ok and n == expected:
            prevs = {line.stored}
            expected += 1
            pos += 1
            continue
        computed = {chain(p, line.body) for p in prevs}
        nxt = lines[pos + 1] if pos + 1 < len(lines) else None
        if n == expected:
            flag(pos, "changed: its hash does not match its content and the record before it")
            expected += 1
        elif n == expected + 1 and nxt is not None and nxt.n == expected:
            flag(pos, f"reordered: record {n} comes before record {expected}")
            # Check the pair in the right order, then carry on after it.
            if nxt.stored is not None and line.stored is not None:
                prevs = {line.stored}
            expected += 2
            pos += 2
            continue
        elif n > expected:
            missing = f"record {expected}" if n == expected + 1 else f"records {expected}-{n - 1}"
            flag(pos, f"dropped: {missing} missing (record {n} follows record {expected - 1})")
            expected = n + 1
        else:
            flag(pos, f"inserted or out of order: record number {n} where {expected} was due")
            prevs = prevs | {line.stored} | computed
            pos += 1
            continue
        prevs = {line.stored} | computed
        pos += 1
    _check_ends(report, lines, complete)
    return report


def misplaced(path: Path, header: dict[str, Any]) -> str:
    """Why a file's header says it is another day, part, symbol or venue than where it lies
    ('' when it is where it says): each file's chain starts afresh, so a whole day file copied
    or renamed into another day's, symbol's or venue's place verifies on its own, and replay
    would play it as that day (twice, or out of order). The folders are compared when the
    file sits in a venue/symbol layout (a lone file checked elsewhere keeps its name only)."""
    m = _NAME.match(path.name)
    if m is not None:
        day, part = m.group(1), int(m.group(2) or 1)
        if header.get("day") != day or header.get("part", 1) != part:
            return (
                f"misplaced: its header says day {header.get('day')} part "
                f"{header.get('part', 1)}, its name day {day} part {part} (renamed or copied)"
            )
    venue, symbol = str(header.get("venue", "")), str(header.get("symbol", ""))
    try:
        venue_dir, symbol_dir = symbol_safe(venue), symbol_safe(symbol)
    except StoreError:
        return f"misplaced: its header names venue {venue!r} and symbol {symbol!r}"
    parent = path.parent
    if parent.parent.name == venue_dir and parent.name != symbol_dir:
        return f"misplaced: a {symbol} recording in the folder {parent.name} (moved or copied)"
    if (
        parent.name == symbol_dir
        and parent.parent.parent.name == RECORD_DIR
        and (parent.parent.name != venue_dir)
    ):
        return f"misplaced: a {venue} recording in the venue folder {parent.parent.name}"
    return ""


def _check_ends(report: FileReport, lines: list[_Line], complete: bool) -> None:
    path = report.path
    first = lines[0].doc if lines else None
    if not lines:
        report.problems.append(Problem(path, 0, "empty: no header"))
        return
    bad_header = first is None or first.get("kind") != "header" or first.get("format") != FORMAT
    if bad_header and not any(p.record == 0 for p in report.problems):
        report.problems.append(Problem(path, 0, f"not a {FORMAT} header"))
    elif first is not None and not bad_header:
        where = misplaced(path, first)
        if where:
            report.problems.append(Problem(path, 0, where))
    last = lines[-1].doc if complete else None
    report.closed = bool(last and last.get("kind") == "close")
    if report.closed:
        assert last is not None
        if last.get("records") != len(lines) - 1 and not report.problems:
            report.problems.append(
                Problem(path, len(lines) - 1, "the closing record's count does not match")
            )
        if writable(path):
            report.notes.append("closed but still writable (chmod 0444 expected)")
    elif not writable(path):
        report.problems.append(
            Problem(path, len(lines), "dropped: the closing record of this read-only day is gone")
        )
    else:
        m = _NAME.match(path.name)
        today = day_of_ns(time.time_ns())
        if m is not None and m.group(1) < today:
            report.notes.append("not closed yet: its day is over (closed at the next engine stop)")
        else:
            report.notes.append("open: today's file (its tail is checked when its day closes)")


def recording_files(path: Path) -> list[Path]:
    """The day files at ``path`` (a file, or any folder above them), in name order."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob(f"*{SUFFIX}") if p.is_file())


def verify_path(path: Path) -> list[FileReport]:
    """:func:`verify_file` for every recording file at ``path``."""
    return [verify_file(p) for p in recording_files(path)]


# ---------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class Recorded:
    """One data record, as the feed received it."""

    venue: str
    symbol: str
    kind: str
    recv_ns: int
    exch_ns: int | None
    payload: Any
    source: str  # the feed's quote source then ("book", "ticker", "bidask")
    session: dict[str, Any]  # the session record before it (instrument, feed settings)


def read_file(path: Path) -> Iterator[Recorded]:
    """The data records of one day file, the chain checked as it is read: a recording that
    does not verify is refused (ReplayError naming the record), not replayed in part."""
    prev = ZERO_HASH
    venue = symbol = source = ""
    session: dict[str, Any] = {}
    expected = 0
    last_kind: Any = None
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ReplayError(f"{path}: cannot open ({exc.strerror or exc})") from None
    with fh:
        for pos, raw in enumerate(fh):
            if not raw.endswith(b"\n"):
                raise ReplayError(f"{path}: record {pos} is cut short; run cockpit data verify")
            line = _parse_line(raw[:-1])
            doc = line.doc
            if (
                doc is None
                or line.stored is None
                or line.n != expected
                or chain(prev, line.body) != line.stored
            ):
                raise ReplayError(
                    f"{path}: record {pos} does not verify (changed, dropped, inserted or "
                    "reordered); run cockpit data verify for details"
                )
            prev, expected = line.stored, expected + 1
            kind = last_kind = doc.get("kind")
            if kind == "header":
                venue, symbol = str(doc.get("venue", "")), str(doc.get("symbol", ""))
                where = misplaced(path, doc)
                if where:
                    raise ReplayError(f"{path}: {where}; run cockpit data verify for details")
            elif kind == "session":
                source = str(doc.get("source", ""))
                session = doc
            elif kind != "close":
                yield Recorded(
                    venue,
                    symbol,
                    str(kind),
                    int(doc["recv_ns"]),
                    doc.get("exch_ns"),
                    doc.get("payload"),
                    source,
                    session,
                )
    if last_kind != "close" and not writable(path):
        raise ReplayError(
            f"{path}: record {expected} (the closing record of this read-only day) is missing; "
            "run cockpit data verify for details"
        )


def read_recording(path: Path) -> Iterator[Recorded]:
    """Every data record under ``path`` (a file, a symbol's or a venue's folder, or
    DATA/record), each symbol's days in order, the symbols merged by receive time."""
    files = recording_files(path)
    if not files:
        raise ReplayError(f"{path}: no recording files (*{SUFFIX}) there")
    streams: dict[Path, list[Path]] = {}
    for f in files:
        streams.setdefault(f.parent, []).append(f)

    def stream(parts: list[Path]) -> Iterator[Recorded]:
        for p in sorted(parts, key=_day_part):
            yield from read_file(p)

    return heapq.merge(*(stream(v) for v in streams.values()), key=lambda r: r.recv_ns)


def _day_part(path: Path) -> tuple[str, int]:
    m = _NAME.match(path.name)
    return (m.group(1), int(m.group(2) or 1)) if m else (path.name, 0)


def is_recording(path: Path) -> bool:
    """True if ``path`` is a recording file or a folder holding some."""
    if path.is_file():
        return path.name.endswith(SUFFIX)
    return path.is_dir() and next(path.rglob(f"*{SUFFIX}"), None) is not None


# ---------------------------------------------------------------------- replaying


class _Offline:
    """What a feed needs of an exchange object to judge payloads: no network at all."""

    def __init__(self, venue: str) -> None:
        self.id = venue
        self.has: dict[str, bool] = {}
        self.rateLimit = 1000


def recording_instruments(
    path: Path, venues: dict[str, set[str]] | None = None
) -> dict[str, Instrument]:
    """Each recorded symbol's instrument as the venue described it (the last session's);
    ``venues``, if given, gets every venue each symbol is recorded on."""
    out: dict[str, Instrument] = {}
    for f in recording_files(path):
        venue = symbol = ""
        with f.open("rb") as fh:
            for raw in fh:
                doc = _parse_line(raw.rstrip(b"\n")).doc or {}
                kind = doc.get("kind")
                if kind == "header":
                    venue, symbol = str(doc.get("venue", "")), str(doc.get("symbol", ""))
                    if venues is not None:
                        venues.setdefault(symbol, set()).add(venue)
                elif kind == "session" and isinstance(doc.get("instrument"), dict):
                    i = doc["instrument"]
                    try:
                        out[symbol] = Instrument(
                            symbol=symbol,
                            venue=venue,
                            tick_size=float(i["tick_size"]),
                            lot_size=float(i["lot_size"]),
                            min_qty=float(i.get("min_qty", 0.0)),
                            min_notional=float(i.get("min_notional", 0.0)),
                        )
                    except (KeyError, TypeError, ValueError):
                        raise ReplayError(f"{f}: a session record's instrument is bad") from None
                elif kind not in ("header", "session"):
                    break  # sessions come before the records they describe
    return out


class RecordingReplay:
    """A recording played back as the live engine saw it: each payload goes through a
    :class:`~engine.venues.ccxt_market.CcxtMarketFeed`'s own validation, with the clock set to
    its receive time, so the quotes (rejects, sync, the depth the paper venue walks) are the
    live run's. ``symbols``: the ones to replay (None: all recorded)."""

    def __init__(self, path: str | Path, symbols: Iterable[str] | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ReplayError(f"{self.path}: no such recording")
        # The whole recording is verified before anything is played: reading checks the chain
        # too, but as it streams, so a record changed near the end was found only after the
        # records before it had driven decisions and paper orders (a replay in part).
        for report in verify_path(self.path):
            if report.problems:
                raise ReplayError(
                    f"{report.problems[0]} ({len(report.problems)} problem(s) in the file); "
                    "nothing replayed: run cockpit data verify for details"
                )
        self.symbols = None if symbols is None else set(symbols)
        venues: dict[str, set[str]] = {}
        found = recording_instruments(self.path, venues)
        missing = sorted((self.symbols or set()) - set(found))
        if missing:
            raise ReplayError(
                f"{self.path}: no recording of {', '.join(missing)} "
                f"(recorded: {', '.join(sorted(found)) or 'nothing'})"
            )
        # One symbol, two venues' markets (a folder holding bybit's and kraken's BTC/USDT):
        # merged by receive time, the engine traded on two books interleaved as one, its
        # fills booked on whichever venue's session was read last. Live, a symbol is on
        # exactly one venue; a replay is refused likewise.
        for sym in sorted(venues):
            if (self.symbols is None or sym in self.symbols) and len(venues[sym]) > 1:
                raise ReplayError(
                    f"{self.path}: {sym} is recorded on {len(venues[sym])} venues "
                    f"({', '.join(sorted(venues[sym]))}); a symbol is replayed from one venue: "
                    "give that venue's folder (DATA/record/VENUE)"
                )
        self._instruments = {
            s: i for s, i in found.items() if self.symbols is None or s in self.symbols
        }

    def instruments(self) -> dict[str, Instrument]:
        return dict(self._instruments)

    def history(self) -> list[Any]:
        return []

    def events(self) -> Iterator[Any]:
        from engine.types import DepthUpdate
        from engine.venues.ccxt_market import CcxtMarketFeed

        now = [0]
        feeds: dict[tuple[str, str, str], CcxtMarketFeed] = {}
        # The settings each feed was built with (its session record's): a later run recorded
        # with others (a spread bound, a staleness, a depth changed in the config) gets a feed
        # of its own, judging its payloads as that run did, not as the first run's settings.
        built: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        last_book: dict[str, Any] = {}
        for rec in read_recording(self.path):
            if rec.symbol not in self._instruments or rec.kind == "trade":
                continue  # trades are recorded for research; the engine trades on quotes
            key = (rec.venue, rec.source, rec.symbol)
            feed = feeds.get(key)
            settings = (
                tuple(sorted(_feed_settings(rec.session).items())),
                rec.session.get("stale_after_ns"),
            )
            if feed is not None and built[key] != settings:
                feed = None
            if feed is None:
                built[key] = settings
                meta = rec.session  # the feed's settings when it was recorded
                feed = feeds[key] = CcxtMarketFeed(
                    rec.venue,
                    _Offline(rec.venue),
                    [rec.symbol],
                    source=rec.source or "ticker",
                    transport="poll",
                    poll_interval_s=1.0,
                    clock_ns=lambda: now[0],
                    elapsed=lambda: now[0],  # the recording's time, not this process's
                    **_feed_settings(meta),
                )
                stale = meta.get("stale_after_ns")
                if isinstance(stale, int):
                    feed.stale_after_ns = stale
            now[0] = rec.recv_ns
            quote = feed.accept(rec.symbol, rec.payload, rec.recv_ns)
            if quote is None:
                continue
            if feed.source == "book":
                book = feed.depth(rec.symbol)
                if book is not last_book.get(rec.symbol):
                    last_book[rec.symbol] = book
                    yield (
                        DepthUpdate(rec.symbol, (), (), 0)
                        if book is None
                        else DepthUpdate(rec.symbol, book.bids, book.asks, book.ts_ns)
                    )
            yield quote


def _feed_settings(meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(meta.get("book_depth"), int):
        out["book_depth"] = meta["book_depth"]
    if isinstance(meta.get("max_spread_bps"), int | float):
        out["max_spread_bps"] = float(meta["max_spread_bps"])
    return out
