"""The append-only, hash-chained journal: the engine's memory and its write-ahead log.

Everything the engine must remember across a crash (order intents before they are sent, safety
states before they are acknowledged, fills, decisions) is a row here. Rows are never updated or
deleted. Each row carries the hash of the previous row and a hash of its own canonical content,
so an edited, deleted or reordered row is found by :func:`verify_journal`. A clean close also
notes the last row's seq and hash in an anchor file beside the journal (``journal.sqlite.anchor``),
and so does the writer while the engine runs (after the first commit, then at most every
ANCHOR_EVERY_S): rows cut off the end (a -wal file deleted after a crash, an older copy put back),
or a chain re-hashed from an edited row on, no longer match it. The chain holds no secret, so a
forger who rewrites the anchor too, or deletes it, is not detected. A clean close notes that no
row follows (``"closed"``): rows added at the end after it, with their hashes made right, are
found too, until a writer opens the journal again (:meth:`Journal.open` reopens the anchor).
A new journal is built whole under a temporary name and renamed into place (a crash during a
first start leaves none), and carries its format in SQLite's ``user_version``: a journal of a
newer format is refused.

One writer task owns the aiosqlite connection and group-commits: it takes every row queued
since its last commit and writes them in one transaction, so many appends cost one fsync.
:meth:`Journal.append` is non-blocking and assigns ``seq`` and the hash chain at call time, so the
journal's order is exactly the call order. :meth:`Journal.append_durable` additionally waits until
the row is committed with ``synchronous=FULL``: use it for anything that must be on disk before the
engine acts on it. If a commit fails the journal latches failed and refuses further appends: the
engine must stop sending orders (fail closed). :attr:`Journal.on_progress` is told after each
commit (and at a failure), so the engine can show events only once their rows are committed.

The sync helpers at the bottom (:func:`read_rows`, :func:`last_row`, :func:`verify_journal`) use
plain read-only ``sqlite3`` so the CLI and restore can read while the engine is writing (WAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import math
import operator
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Generator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from engine.datadir import make_private_dirs, open_new
from engine.health import Buckets
from engine.vocabulary import valid_text

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64

# The most rows one transaction takes; a backlog larger than this is written in several commits
# so one huge transaction cannot hold the write lock (and the waiters) for long.
MAX_BATCH_ROWS = 20_000
PAGE_SIZE = 16_384
# The longest the writer's thread waits for the GIL after SQLite hands it back. CPython's default
# (5 ms) lets a busy event loop keep the GIL that long after every statement the writer steps,
# so a burst of appends and its commit ran one after the other instead of side by side (measured:
# 100,000 rows written in 1.05 s beside a busy thread at 5 ms, 0.47 s at 0.1 ms, 0.36 s alone).
# Only lowered, never raised: it is the interpreter's, and the caller may want it lower still.
WRITER_SWITCH_INTERVAL_S = 0.000_1
# The format this engine writes, kept in SQLite's user_version (0: a journal from before it was
# kept, the same format). A journal of a higher one was written by a newer cockpit, whose rows
# this one might misread (a safety state it does not know would restore as no kill switch).
JOURNAL_FORMAT = 1
# While the engine runs the anchor follows the committed rows at most this often (and after the
# first commit of a session): a crash leaves it at most this far behind the journal's end, so
# rows lost after it (a -wal file deleted, a tail cut, an older copy) are seen at the next start.
ANCHOR_EVERY_S = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_kind ON journal (kind);
"""
_INSERT = "INSERT INTO journal (seq, ts, kind, payload, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)"
# Rows go in as multi-row INSERTs, never one statement per row. The sqlite3 module lets go of the
# GIL for every statement it steps and must win it back afterwards from the event loop's thread,
# which is appending meanwhile and whose own short releases (each turn of the loop) keep putting
# the writer back in the queue: a batch of 2,000 rows sent one statement each took the whole
# append run to write, where a few statements of many rows bind them in one go and then insert
# them all while the loop runs. A batch is cut into a ladder of statement sizes, each statement
# prepared once per connection (SQLite caches them) and at most 7 of each smaller size per batch;
# the top rung keeps within SQLite's parameter limit (999 before 3.32, 32,766 since).
_LADDER = (4096, 512, 64, 8, 1) if sqlite3.sqlite_version_info >= (3, 32, 0) else (128, 16, 1)
_INSERT_ROWS = {n: _INSERT + ", (?, ?, ?, ?, ?, ?)" * (n - 1) for n in _LADDER}
_COLUMNS = "seq, ts, kind, payload, prev_hash, hash"

_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS


def _plain_float(value: Any) -> float:
    """orjson's ``default``: a float subclass (numpy.float64 from a strategy's arithmetic) is
    written as the float it is; anything else is not JSON and raises TypeError."""
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _finite(value: Any) -> bool:
    """False if a NaN or an infinity is anywhere in ``value``. orjson writes those as null, which
    would record a wrong number as a missing one; the journal refuses them instead. Loops, not
    map/all: this runs on every row that has a null (intents, orders)."""
    kind = type(value)
    if kind is float:
        return value - value == 0.0
    if kind is dict:
        for item in value.values():  # noqa: SIM110 (a loop, not all(): half the time)
            if not _finite(item):
                return False
        return True
    if kind is list or kind is tuple:
        for item in value:  # noqa: SIM110
            if not _finite(item):
                return False
        return True
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return _finite(dict(value))
    if isinstance(value, (list, tuple)):
        return _finite(list(value))
    return True


def canonical_payload(payload: dict[str, Any]) -> str:
    """The exact JSON text that is stored and hashed: keys sorted, no spaces, UTF-8, floats in
    their shortest round-trip form; one spelling per payload, so hashes repeat.

    orjson, not the standard library: it is the journal's hot path and orjson encodes a row ten
    times faster. NaN or infinity raises ValueError, a value that is not JSON raises TypeError.
    """
    try:
        text = orjson.dumps(payload, default=_plain_float, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError as exc:
        if "surrogates" in str(exc):
            # Text from outside (a venue's message with half an emoji's escape pair) the row
            # holds with U+FFFD in place of each lone surrogate, rather than failing the write.
            scrubbed = valid_text(payload)
            if scrubbed != payload:
                return canonical_payload(scrubbed)
        if "Recursion" in str(exc):
            raise ValueError("Circular reference detected (or nested deeper than 254)") from None
        raise TypeError(str(exc)) from None
    # Only a null can hide a non-finite float; most rows have none and skip the walk. Where
    # there is one, reading the text back and comparing is a walk in C, a third of the Python
    # one: equal means every null was a None (a NaN reads back as None, and None != NaN); only a
    # payload unequal for another reason (a tuple reads back as a list) takes the Python walk.
    if b"null" in text and orjson.loads(text) != payload and not _finite(payload):
        raise ValueError("Out of range float values are not JSON compliant (NaN or infinity)")
    return text.decode()


_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_sha256 = hashlib.sha256


def _create_journal(path: Path) -> None:
    """Make a new, empty journal whole or not at all: built under a temporary name beside it,
    synced, then renamed into place.

    Created in place, a kill -9 between the file's creation and its schema's commit (a first
    start) left an empty or schema-less file that every later start refused as a journal that
    does not verify. The temporary file a crash may leave is replaced by the next start.
    """
    tmp = path.with_name(path.name + ".new")
    for leftover in (tmp, *(tmp.with_name(tmp.name + s) for s in ("-wal", "-shm", "-journal"))):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    conn = sqlite3.connect(tmp)
    try:
        # Takes effect only on a new, empty file: 16 KiB pages write the journal's rows (a few
        # hundred bytes of JSON and two hashes each) half again as fast as 4 KiB.
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")  # kept in the file's header
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version={JOURNAL_FORMAT}")
        conn.commit()
    finally:
        conn.close()  # the last connection: its WAL is checkpointed into the file and removed
    fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _orphaned_wal(path: Path) -> str:
    """Why no journal may be created at ``path`` although there is none ("" if one may be): a
    -wal file left beside it holds rows of a journal whose file is gone. SQLite does not check
    which database a -wal file belongs to: a journal created there took those rows in as its
    own, after the engine had restored nothing, and went on numbering sessions (and so client
    order ids) from them."""
    wal = path.with_name(path.name + "-wal")
    try:
        size = wal.stat().st_size
    except FileNotFoundError:
        return ""
    except OSError as exc:
        size, why = 1, exc.strerror
    else:
        why = f"{size} bytes"
    if not size:
        return ""
    return (
        f"{wal} is there without {path.name} ({why}): rows of a journal whose file is gone; "
        f"put {path.name} back, or move {wal.name} away too to start afresh"
    )


def _newer_format(version: int) -> str:
    return (
        f"written by a newer cockpit (journal format {version}; this one reads format "
        f"{JOURNAL_FORMAT} and older): run that version, or start this one on another --data-dir"
    )


class JournalError(Exception):
    """A journal write failed or the journal is closed: the engine must stop sending orders."""


@dataclass(frozen=True, slots=True)
class JournalRow:
    seq: int
    ts: int
    kind: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


def row_hash(seq: int, ts: int, kind: str, payload_json: str, prev_hash: str) -> str:
    """The row's own hash: sha256 over its canonical content and the previous row's hash."""
    return hashlib.sha256(f"{seq}|{ts}|{kind}|{payload_json}|{prev_hash}".encode()).hexdigest()


_Row = tuple[int, int, str, str, str, str]  # (seq, ts, kind, payload_json, prev_hash, hash)


class Journal:
    """The write side: one per database file, used from the event loop's thread only.

    Create it with ``await Journal.open(path)``; ``await close()`` when done. ``rows_written`` and
    ``commits`` count what the writer has committed (their ratio is the group-commit factor).
    """

    rows_written: int
    commits: int

    def __init__(
        self,
        path: Path,
        conn: aiosqlite.Connection,
        last_seq: int,
        last_hash: str,
        versions: tuple[int, int] | None = None,
    ) -> None:
        self.path = path
        # SQLite's schema cookie and this connection's data_version when the journal was opened
        # (None: not checked). Another process that plants a trigger, defines the table again,
        # or edits, deletes or adds rows while the engine runs changes one of them (the
        # engine's own commits change neither), and the next commit is then refused before
        # any row of it is taken as durable.
        self._versions = versions
        self._conn = conn
        self._last_seq = last_seq
        self._last_hash = last_hash
        self._committed_seq = last_seq
        self._committed_hash = last_hash
        self._pending: list[_Row] = []
        # (seq, future) in non-decreasing seq order: resolved once seq is committed.
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._closed = False
        self._failed: BaseException | None = None
        # Told once, at the moment the writer fails, so the owner can show it is blocked
        # before its next write (which might be minutes away) finds out.
        self.on_fail: Callable[[BaseException], None] | None = None
        self.rows_written = 0
        self.commits = 0
        # How long each group commit took (insert + fsync'd commit): the metrics endpoint's
        # journal latency. One bisect per commit, not per row.
        self.commit_seconds = Buckets()
        # perf_counter when the group commit under way began (None: none is): a disk that stops
        # answering leaves it set, and the heartbeat stops vouching (engine.health).
        self._commit_began: float | None = None
        # Called (no arguments) after every commit and once when the writer fails: the engine
        # shows an event only once the row recording it is committed. It must not raise.
        self.on_progress: Callable[[], None] | None = None
        # The file this connection writes (device, inode): checked after every commit, so rows
        # are never taken as durable in a journal removed or replaced under the engine.
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)
        # The anchor follows the committed rows (see ANCHOR_EVERY_S): due at the first commit.
        self.anchor_every_s = ANCHOR_EVERY_S
        self._anchor_due = 0.0
        self._writer = asyncio.get_running_loop().create_task(
            self._run_writer(), name=f"journal-writer:{path.name}"
        )

    @classmethod
    async def open(cls, path: str | Path, *, busy_timeout: float = 5.0) -> Journal:
        """Open or create the journal at ``path`` and start its writer task.

        A new parent directory is made 0700 and a new file 0600: the journal is the desk's trading
        record. ``busy_timeout`` is how long a write waits for a lock held by another connection
        before the journal fails (closed).
        """
        path = Path(path)
        if sys.getswitchinterval() > WRITER_SWITCH_INTERVAL_S:
            sys.setswitchinterval(WRITER_SWITCH_INTERVAL_S)
        if not path.parent.exists():
            make_private_dirs(path.parent)
        if not os.path.lexists(path):
            orphan = _orphaned_wal(path)
            if orphan:
                raise JournalError(orphan)
            await asyncio.to_thread(_create_journal, path)
        conn = await aiosqlite.connect(path, timeout=busy_timeout)
        try:
            async with conn.execute("PRAGMA journal_mode=WAL") as cur:
                mode = await cur.fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise JournalError(f"{path}: cannot switch to WAL mode (got {mode!r})")
            await conn.execute("PRAGMA synchronous=FULL")
            async with conn.execute("PRAGMA user_version") as cur:
                version = (await cur.fetchone() or (0,))[0]
            if version > JOURNAL_FORMAT:
                raise JournalError(f"{path}: {_newer_format(version)}")
            await conn.executescript(_SCHEMA)  # (a journal made before _create_journal was)
            if version < JOURNAL_FORMAT:
                await conn.execute(f"PRAGMA user_version={JOURNAL_FORMAT}")
            await conn.commit()
            async with conn.execute(_SCHEMA_QUERY) as cur:
                planted = _schema_problem([tuple(r) for r in await cur.fetchall()])
            if planted:
                raise JournalError(f"{path}: {planted}")
            versions = await _versions(conn)
            async with conn.execute(
                f"SELECT {_COLUMNS} FROM journal ORDER BY seq DESC LIMIT 1"
            ) as cur:
                last = await cur.fetchone()
        except BaseException:
            await conn.close()
            raise
        if last is None:
            return cls(path, conn, 0, GENESIS_HASH, versions)
        seq, ts, kind, payload_json, prev_hash, stored_hash = last
        if row_hash(seq, ts, kind, payload_json, prev_hash) != stored_hash:
            # Chaining onto a row that is not what it claims would bless the damage.
            await conn.close()
            raise JournalError(
                f"{path}: last row {seq} does not match its hash; run verify before trading"
            )
        try:
            # Open again before the first new row: a clean close's anchor says no row follows
            # it, which is true only until a writer (this one) goes on.
            await asyncio.to_thread(write_anchor, path, seq, stored_hash)
        except OSError as exc:
            await conn.close()
            raise JournalError(f"{anchor_path(path)}: cannot be written ({exc})") from None
        return cls(path, conn, seq, stored_hash, versions)

    @property
    def failed(self) -> BaseException | None:
        """The error that stopped the writer, or None. Once set, every append raises."""
        return self._failed

    def commit_age_s(self) -> float:
        """How long the group commit under way has been waiting for the disk (0: none is)."""
        began = self._commit_began
        return 0.0 if began is None else time.perf_counter() - began

    @property
    def last_seq(self) -> int:
        """The seq of the latest appended row (committed or not); 0 for an empty journal."""
        return self._last_seq

    @property
    def committed_seq(self) -> int:
        """Every row up to this seq is committed to disk."""
        return self._committed_seq

    def append(self, kind: str, ts: int, payload: dict[str, Any]) -> int:
        """Queue a row and return its seq without waiting for the disk.

        ``payload`` must be a JSON-able dict (str, int, float, bool, None, lists, dicts; StrEnum
        values serialise as their string). NaN or infinity is a programming error and raises
        ValueError; a non-JSON-able value raises TypeError. Either way nothing is queued and the
        chain is untouched. Raises JournalError if the journal has failed or is closing.
        """
        if self._closing:
            if self._failed is not None:
                raise JournalError(f"journal failed earlier ({self._failed!r}); no further writes")
            raise JournalError("journal is closed")
        if not isinstance(kind, str) or not kind or "|" in kind:
            # "|" separates the hashed fields; banning it keeps the hash input unambiguous.
            raise ValueError(f"journal kind must be a non-empty str without '|', got {kind!r}")
        # ts must stay an int: SQLite would store 1.0 as 1 and the hash of "1.0" would not verify.
        ts = operator.index(ts)
        if not _INT64_MIN <= ts <= _INT64_MAX:
            raise ValueError(f"journal ts {ts} does not fit in a signed 64-bit integer")
        if not isinstance(payload, dict):
            raise TypeError(f"journal payload must be a dict, got {type(payload).__name__}")
        try:
            payload_json = canonical_payload(payload)
        except ValueError as exc:
            raise ValueError(f"journal payload for {kind!r} is not valid JSON: {exc}") from None
        seq = self._last_seq + 1
        prev_hash = self._last_hash
        # row_hash, inline: this is the hot path of every journaled event.
        digest = _sha256(f"{seq}|{ts}|{kind}|{payload_json}|{prev_hash}".encode()).hexdigest()
        pending = self._pending
        if not pending:
            self._wakeup.set()  # the writer waits only while nothing is queued
        pending.append((seq, ts, kind, payload_json, prev_hash, digest))
        self._last_seq = seq
        self._last_hash = digest
        return seq

    async def append_durable(self, kind: str, ts: int, payload: dict[str, Any]) -> int:
        """Append, then return only once the row is committed; raise JournalError if it cannot be.

        For order intents and safety states: the row is on disk before the caller acts on it.
        Cancelling the caller does not withdraw the row; it is still written.
        """
        seq = self.append(kind, ts, payload)
        await self._wait_committed(seq)
        return seq

    async def flush(self) -> None:
        """Wait until every row appended so far is committed; JournalError if that cannot happen."""
        if self._failed is not None:
            raise JournalError(f"journal failed earlier ({self._failed!r})") from self._failed
        await self._wait_committed(self._last_seq)

    async def close(self) -> None:
        """Commit what is queued, stop the writer and close the connection.

        Returns normally only if every appended row is on disk; otherwise it still releases
        everything and then raises JournalError. Calling it again is a no-op.
        """
        if self._closed:
            return
        self._closed = True
        self._closing = True
        self._wakeup.set()
        try:
            if not self._writer.done():
                # wait() rather than await: a cancelled writer must not look like our cancellation.
                await asyncio.wait([self._writer])
        finally:
            try:
                await self._conn.close()
            except Exception as exc:
                if self._failed is None:
                    self._failed = exc
        if self._failed is not None:
            raise JournalError(f"journal failed: {self._failed!r}") from self._failed
        if self._last_seq:
            # Every row is on disk: note where the journal ends, so that rows cut off the end
            # or a re-hashed chain show at the next start. Best effort: the rows are safe.
            with contextlib.suppress(OSError):
                await asyncio.to_thread(
                    write_closed_anchor, self.path, self._last_seq, self._last_hash
                )

    @property
    def backlog(self) -> int:
        """Rows appended but not yet committed."""
        return self._last_seq - self._committed_seq

    async def keep_up(self, max_backlog: int) -> None:
        """Wait while more than ``max_backlog`` rows are uncommitted: a producer faster than the
        disk must not grow the queue without bound (a durable reply, a kill's included, waits
        behind every row before it)."""
        if self._failed is None and self._last_seq - self._committed_seq > max_backlog:
            await self._wait_committed(self._last_seq - max_backlog // 2)

    async def _wait_committed(self, seq: int) -> None:
        if seq <= self._committed_seq:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, fut))
        await fut

    async def _run_writer(self) -> None:
        """Group commit: each pass writes everything queued (up to MAX_BATCH_ROWS) in one commit."""
        try:
            while True:
                if not self._pending:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                if len(self._pending) <= MAX_BATCH_ROWS:
                    batch, self._pending = self._pending, []
                else:
                    batch = self._pending[:MAX_BATCH_ROWS]
                    del self._pending[:MAX_BATCH_ROWS]
                began = self._commit_began = time.perf_counter()
                try:
                    versions = await self._insert(batch)
                    # Inside the write transaction, so nobody else can write before the
                    # commit: rows a planted trigger or constraint acted on, or that chain onto
                    # rows another process changed, are never committed.
                    changed = self._written_by_another(versions)
                    if changed and await self._rows_unchanged(batch, versions):
                        changed = ""  # a checkpoint by another process: no row changed
                    if changed:
                        # Note where this engine's rows end, so that the next start sees rows
                        # the other process cut off (a kill's included), even within the
                        # second since the anchor last moved. Best effort, as every anchor.
                        if self._committed_seq:
                            with contextlib.suppress(OSError):
                                await asyncio.to_thread(
                                    write_anchor,
                                    self.path,
                                    self._committed_seq,
                                    self._committed_hash,
                                )
                        raise JournalError(changed)
                    await self._conn.commit()
                except BaseException as exc:
                    self._commit_began = None
                    with contextlib.suppress(BaseException):
                        await self._conn.rollback()
                    if isinstance(exc, sqlite3.IntegrityError):
                        # Our seq is already there: another writer is appending to this file.
                        raise JournalError(
                            f"{self.path}: row {batch[0][0]} was already written by another "
                            "process; only one engine may write a journal (stop the other one)"
                        ) from exc
                    raise
                self._commit_began = None
                gone = self._file_gone()
                if gone:
                    raise JournalError(gone)  # before any waiter hears "durable"
                self.commit_seconds.observe(time.perf_counter() - began)
                self.rows_written += len(batch)
                self.commits += 1
                self._committed_seq, self._committed_hash = batch[-1][0], batch[-1][5]
                waiters = self._waiters
                while waiters and waiters[0][0] <= self._committed_seq:
                    _, fut = waiters.popleft()
                    if not fut.done():
                        fut.set_result(None)
                self._progress()
                if time.monotonic() >= self._anchor_due:
                    self._anchor_due = time.monotonic() + self.anchor_every_s
                    # Off the loop, after the waiters: a durable reply never waits for it. Best
                    # effort: the rows are committed; a stale anchor only sees less.
                    # A disk that stops answering here holds the next commit back as surely
                    # as in a commit: it counts in commit_age_s (the heartbeat stops vouching).
                    last_seq, last_hash = batch[-1][0], batch[-1][5]
                    self._commit_began = time.perf_counter()
                    try:
                        with contextlib.suppress(OSError):
                            await asyncio.to_thread(write_anchor, self.path, last_seq, last_hash)
                    finally:
                        self._commit_began = None
        except asyncio.CancelledError as exc:
            self._fail(exc)
            self._progress()
            # Nobody else uses the connection: close it (rolling back anything uncommitted) so an
            # unclosed journal cannot leave its thread behind when the loop shuts down.
            with contextlib.suppress(BaseException):
                await self._conn.close()
            raise
        except BaseException as exc:
            # Reported through `failed` and every waiter; the task itself ends quietly.
            self._fail(exc)
            self._progress()

    def _written_by_another(self, versions: tuple[int, int] | None) -> str:
        """Why the rows just inserted must not be committed ("" if they may): another process
        changed the journal's schema (a trigger, a table defined again) or its rows (edited,
        deleted, added) since it was opened (``versions``: read after the inserts, in their
        transaction). Only this engine may write its journal."""
        if self._versions is None or versions is None:
            return ""
        schema, data = versions
        if schema != self._versions[0]:
            what = (
                "its schema was changed by another process while the engine wrote it (a "
                "trigger or a table defined again could change or drop the rows it writes)"
            )
        elif data != self._versions[1]:
            what = (
                "another process wrote to it while the engine did (rows edited, deleted or "
                "added: only the engine may write its journal)"
            )
        else:
            return ""
        return (
            f"{self.path}: {what}; nothing more is sent (check it with `cockpit verify`, "
            "then restart)"
        )

    async def _rows_unchanged(self, batch: list[_Row], versions: tuple[int, int] | None) -> bool:
        """Whether the journal, its data_version moved by another connection, still holds
        exactly the engine's rows (then ``versions`` become the ones to compare with). SQLite
        moves data_version for a checkpoint that empties the -wal (``TRUNCATE``, as a backup or
        replication tool, or a person shrinking the -wal, runs it), though no row changed: the
        engine must not stop trading for it. A schema changed (the cookie: a trigger, a table
        defined again, an ``ANALYZE``) still blocks. Checked inside the write transaction
        (nobody else can write until it ends): the rows before this batch are the chain verify
        accepts, every one of them, ending at the engine's last commit, and the rows after it
        are this batch alone. (A whole verify, in the writer: only when another connection
        moved data_version, which an engine's own commits and a reader never do.)"""
        if versions is None or self._versions is None or versions[0] != self._versions[0]:
            return False
        conn = self._conn
        try:
            async with conn.execute(
                "SELECT count(*), max(seq), (SELECT hash FROM journal WHERE seq = ?) FROM journal",
                (self._committed_seq,),
            ) as cur:
                row = await cur.fetchone()
            last = batch[-1][0]
            committed = self._committed_hash if self._committed_seq else None
            if row is None or tuple(row) != (last, last, committed):
                return False
            # The committed rows, as another connection sees them (this batch is not yet).
            report = await asyncio.to_thread(verify_journal, self.path, workers=1)
        except (sqlite3.Error, OSError):
            return False
        if not report.ok or report.rows != self._committed_seq:
            return False
        self._versions = versions
        return True

    def _file_gone(self) -> str:
        """Why the rows just committed are not where the next start will read them ("" if
        they are): the journal file was deleted (the data directory with it) or replaced
        (moved away, another copy put in its place) while this connection wrote the old one,
        which the OS keeps until the engine exits, and then they are lost."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            how = "removed"
        except OSError:
            return ""  # cannot look (a permission): the commit itself succeeded
        else:
            if (st.st_dev, st.st_ino) == self._identity:
                return ""
            how = "replaced by another file"
        return (
            f"{self.path} was {how} while the engine wrote it: what it records now would be "
            "lost; nothing more is sent (put the journal back, then restart)"
        )

    async def _insert(self, batch: list[_Row]) -> tuple[int, int] | None:
        """Insert ``batch`` (not committed) as the ladder's multi-row statements, all queued to
        the connection's thread at once (one wake-up of the loop for the batch, not one per
        statement), then read the versions :meth:`_written_by_another` compares, in the same
        transaction and the same wake-up (a round trip of its own added ~0.4 ms to every
        durable append). Raises the first statement's error once every one has finished."""
        conn = self._conn
        flat = itertools.chain.from_iterable
        calls: list[Awaitable[Any]] = []
        done = 0
        left = len(batch)
        for size in _LADDER:
            count = left // size
            if count:
                params = [
                    tuple(flat(batch[i : i + size])) for i in range(done, done + count * size, size)
                ]
                calls.append(conn.executemany(_INSERT_ROWS[size], params))
                done += count * size
                left -= count * size
        if self._versions is not None:
            calls.append(conn.execute_fetchall(_VERSIONS_SQL))
        # gather starts them in order, so the thread runs them in order; every one has finished
        # (and none is left unawaited) before an error is raised and the batch rolled back.
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return _versions_of(results[-1]) if self._versions is not None else None

    def _progress(self) -> None:
        hook = self.on_progress
        if hook is not None:
            try:
                hook()
            except Exception:
                # A display problem must never stop the journal from committing.
                log.exception("journal: the on_progress hook failed")

    def _fail(self, exc: BaseException) -> None:
        """Latch the failure, drop the queue and fail every waiter (fail closed)."""
        first = self._failed is None
        if first:
            self._failed = exc
        self._closing = True
        self._pending.clear()
        while self._waiters:
            seq, fut = self._waiters.popleft()
            if not fut.done():
                err = JournalError(f"journal write failed before row {seq} was committed: {exc!r}")
                err.__cause__ = exc
                fut.set_exception(err)
        if first and self.on_fail is not None:
            with contextlib.suppress(Exception):
                self.on_fail(exc)


# --- sync read side: CLI, verify and restore -------------------------------------------------


# SQLite primary result codes (the low byte of an extended code).
_SQLITE_READONLY = 8
_SQLITE_CANTOPEN = 14


def _connect_ro(path: str | Path) -> sqlite3.Connection:
    """A read-only connection that never creates a database; FileNotFoundError if there is none.

    On read-only storage SQLite cannot create the WAL index (``-shm``) a WAL database needs, so
    the plain read-only open fails. Then, if no ``-wal`` file holds rows, the file alone is the
    whole journal and is opened ``immutable``; if a ``-wal`` file does hold rows, an immutable
    open would silently miss them, so the error stands, saying so.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such journal file")
    uri = p.resolve().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True)
    try:
        # The WAL index is opened lazily: read the schema so a failure shows up here.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code not in (_SQLITE_READONLY, _SQLITE_CANTOPEN):
            raise
        wal = p.with_name(p.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise sqlite3.OperationalError(
                f"{exc}: {wal.name} holds rows that cannot be read on read-only storage "
                "without its -shm file; copy the data directory somewhere writable first"
            ) from exc
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True)


def _to_row(r: tuple[Any, ...]) -> JournalRow:
    return JournalRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5])


def read_rows(
    path: str | Path, kinds: Collection[str] | None = None, after_seq: int = 0
) -> Iterator[JournalRow]:
    """Rows with seq > ``after_seq`` in seq order, optionally only the given kinds.

    Safe while the engine writes: the iteration reads one consistent WAL snapshot.
    Raises FileNotFoundError if the file does not exist.
    """
    conn = _connect_ro(path)
    try:
        sql = f"SELECT {_COLUMNS} FROM journal WHERE seq > ?"
        params: list[Any] = [after_seq]
        if kinds is not None:
            kinds = list(kinds)
            if not kinds:
                return
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            params.extend(kinds)
        sql += " ORDER BY seq"
        for r in conn.execute(sql, params):
            yield _to_row(r)
    finally:
        conn.close()


def last_row(path: str | Path, kind: str) -> JournalRow | None:
    """The latest row of ``kind`` (e.g. the current safety state), or None if there is none."""
    conn = _connect_ro(path)
    try:
        r = conn.execute(
            f"SELECT {_COLUMNS} FROM journal WHERE kind = ? ORDER BY seq DESC LIMIT 1", (kind,)
        ).fetchone()
    finally:
        conn.close()
    return None if r is None else _to_row(r)


ANCHOR_SUFFIX = ".anchor"
ANCHOR_MAX_BYTES = 4096  # an anchor is one short line; more is not one


def anchor_path(path: str | Path) -> Path:
    """Where the journal's last committed row is noted: beside it, ``<name>.anchor``."""
    path = Path(path)
    return path.with_name(path.name + ANCHOR_SUFFIX)


def write_anchor(path: str | Path, seq: int, digest: str) -> None:
    """Note, atomically and durably, that the journal at ``path`` reached ``seq``, ``digest``
    (committed rows only: written by the writer as the engine runs)."""
    _write_anchor_note(path, seq, digest, closed=False)


def write_closed_anchor(path: str | Path, seq: int, digest: str) -> None:
    """:func:`write_anchor` at a clean close: no row may follow ``seq`` until a writer opens
    the journal again (:meth:`Journal.open` rewrites it open before its first row)."""
    _write_anchor_note(path, seq, digest, closed=True)


def _write_anchor_note(path: str | Path, seq: int, digest: str, *, closed: bool) -> None:
    target = anchor_path(path)
    tmp = target.with_name(target.name + ".tmp")
    note: dict[str, Any] = {"seq": seq, "hash": digest}
    if closed:
        note["closed"] = True
    try:
        fd = open_new(tmp)  # never through a symlink planted under the tmp name
        try:
            os.write(fd, (json.dumps(note) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()  # a full disk keeps no half-written file
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_anchor(path: Path) -> tuple[int, str, bool] | None:
    """The (seq, hash, written by a clean close) the anchor notes, or None if there is no
    anchor; ValueError if the anchor cannot be read as one (an unreadable anchor is a
    problem, not an absence)."""
    target = anchor_path(path)
    try:
        # Non-blocking and bounded: a FIFO by its name hung every start and verify for ever.
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ValueError(f"{target.name} is not an anchor (not a regular file)")
            raw = os.read(fd, ANCHOR_MAX_BYTES)
        finally:
            os.close(fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"{target.name} cannot be read ({exc.strerror})") from None
    try:
        data = json.loads(raw.decode())
        seq, digest, closed = data["seq"], data["hash"], data.get("closed", False)
    except (ValueError, TypeError, KeyError, AttributeError):
        seq = digest = closed = None
    if (
        type(seq) is not int
        or seq < 1
        or type(digest) is not str
        or len(digest) != 64
        or type(closed) is not bool
    ):
        raise ValueError(f"{target.name} is not an anchor (edited?)")
    return seq, digest, closed


def _behind_hint(path: Path, name: str) -> str:
    """What may have put the journal behind its anchor, and what to do. A -wal file beside it
    may be one from another moment (copied while an engine ran, put back after its clean
    stop): SQLite reads its old pages over the journal's, and moving the anchor away (the
    advice for an older copy) would start on them, the rows after them (a kill's) lost for
    good once a start checkpoints that file into the journal."""
    wal = path.with_name(path.name + "-wal")
    if os.path.lexists(wal):
        return (
            f"a {wal.name} from another moment? move that file away (keep it) and verify "
            f"again; if this is an older copy on purpose, move {name} away"
        )
    return (
        "rows cut off the end, a -wal file deleted? if this is an older copy on purpose, "
        f"move {name} away"
    )


def _anchor_problem(
    conn: sqlite3.Connection, path: Path, anchor: tuple[int, str, bool]
) -> VerifyReport:
    """A verified chain against its anchor: is the row it noted still there, same hash, and,
    when a clean close noted it, still the last?"""
    seq, digest, closed = anchor
    row = conn.execute("SELECT hash FROM journal WHERE seq = ?", (seq,)).fetchone()
    name = anchor_path(path).name
    if row is None:
        last = conn.execute("SELECT max(seq) FROM journal").fetchone()[0] or 0
        return VerifyReport(
            False,
            last,
            last + 1,
            f"row {last + 1}: missing; the journal ends at row {last} but reached row {seq} "
            f"({name}) ({_behind_hint(path, name)})",
        )
    if row[0] != digest:
        return VerifyReport(
            False,
            seq - 1,
            seq,
            f"row {seq}: hash differs from the one noted when the engine wrote it ({name}) "
            "(rows edited and re-hashed, or a journal from elsewhere?)",
        )
    if closed:
        last = conn.execute("SELECT max(seq) FROM journal").fetchone()[0] or 0
        if last > seq:
            # An engine opens the journal (and the anchor) again before it writes a row.
            return VerifyReport(
                False,
                seq,
                seq + 1,
                f"row {seq + 1}: after the clean stop that {name} noted at row {seq}; no "
                "engine wrote it (rows added by hand, or a journal from elsewhere?)",
            )
    return VerifyReport(True, 0, None, "")


@dataclass(frozen=True)
class VerifyReport:
    """``rows`` counts the rows that checked out before the first bad one (all rows if ok).
    ``unreadable``: the storage would not let the journal be read (a full disk, an I/O error,
    no permission), which says nothing about its rows: not ok, yet not proven broken."""

    ok: bool
    rows: int
    first_bad_seq: int | None
    problem: str  # one human line; empty when ok
    unreadable: bool = False


# SQLite primary result codes that say the storage failed (no permission, busy, locked, out of
# memory, read-only, an I/O error, disk full, cannot open), not that the file is no journal or
# is damaged (those are SQLITE_CORRUPT, SQLITE_NOTADB or a missing table).
_STORAGE_CODES = frozenset({3, 5, 6, 7, 8, 10, 13, 14})


def _storage_failed(exc: sqlite3.Error) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _STORAGE_CODES


def _unreadable(path: Path, exc: sqlite3.Error) -> VerifyReport:
    return VerifyReport(
        False,
        0,
        None,
        f"{path}: cannot be read ({_short(exc)}): the storage failed (disk full? an I/O error? "
        "no permission?), so its rows could not be checked",
        unreadable=True,
    )


class JournalBroken(JournalError):
    """The journal does not verify: nothing may be restored from it and no order sent on it."""

    def __init__(self, path: str | Path, report: VerifyReport) -> None:
        self.report = report
        super().__init__(
            f"the journal does not verify ({report.problem}); nothing was restored or sent: "
            f"see `cockpit verify --data-dir {Path(path).parent}`"
        )


def missing_journal_problem(path: str | Path) -> str:
    """Why a journal that does not exist is not simply a new, empty one ("" if it is): its
    anchor noted rows in it, or a -wal file left beside it holds some."""
    path = Path(path)
    if anchor_path(path).exists():
        return (
            f"row 1: missing; the journal is gone but {anchor_path(path).name} says it had rows "
            "(restore it, or move the anchor away too to start afresh)"
        )
    orphan = _orphaned_wal(path)
    return f"row 1: missing; {orphan}" if orphan else ""


def require_intact(path: str | Path) -> VerifyReport:
    """Verify the whole journal before anything is restored from it; JournalBroken if it fails.

    Checking only the last row would trust an edited kill switch or fill in the middle. A
    journal that does not exist yet is empty, so intact, unless something says it had rows
    (:func:`missing_journal_problem`).
    """
    if not Path(path).exists():
        problem = missing_journal_problem(path)
        if problem:
            raise JournalBroken(path, VerifyReport(False, 0, 1, problem))
        return VerifyReport(True, 0, None, "")
    report = verify_journal(path)
    if report.unreadable:
        # Not "does not verify": that sends a person to replace a journal that may be fine.
        raise JournalError(
            f"{report.problem}; nothing was restored or sent: free space or fix the storage, "
            f"then start again (`cockpit verify --data-dir {Path(path).parent}` checks it)"
        )
    if not report.ok:
        raise JournalBroken(path, report)
    return report


# A journal with at least this many rows is checked in seq ranges side by side, one worker
# process per CPU beside this one; below it, starting a worker costs more than it saves.
PARALLEL_MIN_ROWS = 200_000
_MAX_WORKERS = 8


@dataclass(frozen=True)
class _Stretch:
    """What one seq range of the journal says about itself; :func:`_stitch` joins them in order.

    Inside the range each row's seq follows the one before, its prev_hash is that row's hash
    and its own hash matches its content. The first row's seq and prev_hash are left to the
    stitch, which knows the row before it. ``bad_seq`` is the first row that failed.
    """

    first_seq: int | None = None  # None: the range holds no rows
    first_prev_hash: str = ""
    good: int = 0  # rows that checked out, from the first one on
    last_hash: str = ""  # of the last good row
    bad_seq: int | None = None
    problem: str = ""


def _seq_problem(seq: int, expected: int) -> str:
    if seq > expected:
        return f"row {seq}: seq jumps from {expected - 1} (row deleted?)"
    return f"row {seq}: seq {seq} where {expected} was expected (row inserted or renumbered?)"


def _prev_problem(seq: int) -> str:
    what = "the genesis hash" if seq == 1 else f"row {seq - 1}"
    return f"row {seq}: prev_hash does not match {what} (row deleted or reordered?)"


def _content_problem(row: tuple[Any, ...]) -> str:
    """Why a row's own content does not hold up, or "" if it does.

    Besides the hash, the columns must have the types the writer gives them: with an integer
    ts and a kind without "|", the hashed text splits back into its fields one way only, so no
    edit can move content from one column to another under the same hash.
    """
    seq, ts, kind, payload_json, prev_hash, stored_hash = row
    if type(ts) is not int:
        return f"row {seq}: ts is not an integer (edited?)"
    if type(kind) is not str or not kind or "|" in kind:
        return f"row {seq}: kind is not a name (edited?)"
    if type(payload_json) is not str or type(prev_hash) is not str:
        return f"row {seq}: payload or prev_hash is not text (edited?)"
    if row_hash(seq, ts, kind, payload_json, prev_hash) != stored_hash:
        return f"row {seq}: hash does not match its content (edited?)"
    return ""


def _check_range(conn: sqlite3.Connection, after: int | None, upto: int | None) -> _Stretch:
    """Check the rows with ``after < seq <= upto`` (None: unbounded) in one pass.

    The loop is the hot path of every engine start: raw columns straight off one cursor (no
    JSON parsed, the stored text is what was hashed), the hash input built and hashed inline,
    and the diagnosis only for the row that fails.
    """
    where = [c for c, b in (("seq > ?", after), ("seq <= ?", upto)) if b is not None]
    sql = f"SELECT {_COLUMNS} FROM journal"
    if where:
        sql += " WHERE " + " AND ".join(where)
    cur = conn.execute(sql + " ORDER BY seq", [b for b in (after, upto) if b is not None])
    first = cur.fetchone()
    if first is None:
        return _Stretch()
    first_seq, first_prev = first[0], first[4]
    problem = _content_problem(first)
    if problem:
        return _Stretch(first_seq, first_prev, 0, "", first_seq, problem)
    expected, prev = first_seq + 1, first[5]
    sha256 = hashlib.sha256
    for seq, ts, kind, payload_json, prev_hash, stored_hash in cur:
        if (
            seq != expected
            or prev_hash != prev
            or type(ts) is not int
            or type(kind) is not str
            or "|" in kind
            or type(payload_json) is not str
            or sha256(f"{seq}|{ts}|{kind}|{payload_json}|{prev_hash}".encode()).hexdigest()
            != stored_hash
        ):
            row = (seq, ts, kind, payload_json, prev_hash, stored_hash)
            if seq != expected:
                problem = _seq_problem(seq, expected)
            else:
                problem = _content_problem(row) or _prev_problem(seq)
            return _Stretch(first_seq, first_prev, expected - first_seq, prev, seq, problem)
        prev = stored_hash
        expected += 1
    return _Stretch(first_seq, first_prev, expected - first_seq, prev)


def _stitch(stretches: Iterator[_Stretch]) -> VerifyReport:
    """Join the ranges' findings in seq order; the first problem in seq order is the answer."""
    expected, prev, rows = 1, GENESIS_HASH, 0
    for st in stretches:
        if st.first_seq is None:
            continue
        seq = st.first_seq
        if seq != expected:
            return VerifyReport(False, rows, seq, _seq_problem(seq, expected))
        if st.bad_seq == seq:
            return VerifyReport(False, rows, seq, st.problem)
        if st.first_prev_hash != prev:
            return VerifyReport(False, rows, seq, _prev_problem(seq))
        if st.bad_seq is not None:
            return VerifyReport(False, rows + st.good, st.bad_seq, st.problem)
        rows += st.good
        expected, prev = seq + st.good, st.last_hash
    return VerifyReport(True, rows, None, "")


def _range_count(conn: sqlite3.Connection, workers: int | None) -> tuple[int, list[int]]:
    """How many ranges to check side by side and the seqs that cut them apart."""
    lo = conn.execute("SELECT min(seq) FROM journal").fetchone()[0]
    hi = conn.execute("SELECT max(seq) FROM journal").fetchone()[0]
    if lo is None:
        return 1, []
    span = hi - lo + 1
    if workers is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        workers = min(cpus or 1, _MAX_WORKERS) if span >= PARALLEL_MIN_ROWS else 1
    n = max(1, min(workers, span))
    return n, [lo - 1 + span * i // n for i in range(1, n)]


_WORKER = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from engine.journal import _range_worker; _range_worker(*sys.argv[2:])"
)


def _range_worker(path: str, after: str, upto: str) -> None:
    """A verify worker process: check one range and print its findings as one JSON line."""
    conn = _connect_ro(path)
    try:
        st = _check_range(conn, int(after) if after else None, int(upto) if upto else None)
    finally:
        conn.close()
    print(json.dumps(asdict(st)))


def _stretches(
    conn: sqlite3.Connection, path: Path, cuts: list[int]
) -> Generator[_Stretch, None, None]:
    """Each range's findings in seq order: the first range here, the others in worker processes.

    A worker that cannot start or fails has its range checked here instead: slower, never
    less thorough. Workers still running when the caller stops early are killed.
    """
    bounds = list(itertools.pairwise([None, *cuts, None]))
    root = str(Path(__file__).resolve().parent.parent)
    procs: list[subprocess.Popen[bytes] | None] = []
    try:
        for after, upto in bounds[1:]:
            argv = [sys.executable, "-c", _WORKER, root, str(path)]
            argv += ["" if after is None else str(after), "" if upto is None else str(upto)]
            try:
                procs.append(
                    subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                    )
                )
            except (OSError, ValueError):
                procs.append(None)
        yield _check_range(conn, *bounds[0])
        for proc, (after, upto) in zip(procs, bounds[1:], strict=True):
            found = None
            if proc is not None:
                out, _ = proc.communicate()
                if proc.returncode == 0:
                    with contextlib.suppress(ValueError, TypeError):
                        found = _Stretch(**json.loads(out))
            yield found if found is not None else _check_range(conn, after, upto)
    finally:
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def verify_journal(path: str | Path, *, workers: int | None = None) -> VerifyReport:
    """Check seq continuity from 1, every prev_hash link, every row's own hash and column types,
    and that the row the anchor noted (the last committed when it was written) is still there,
    unchanged; and that the journal's format is not newer than this engine's.

    Stops at the first bad row and names it, with the likeliest cause. ``workers`` is how many
    seq ranges are checked side by side (this process takes one, a worker process each other);
    None picks one per CPU for a journal of at least PARALLEL_MIN_ROWS rows. The answer does
    not depend on it.

    What it sees: any edited column of any row; a deleted, inserted or reordered row; rows cut
    off the end, or the chain re-hashed from an edited row on, up to the anchor (a clean close,
    or at most ANCHOR_EVERY_S before a crash). What it cannot see (there is no secret): rows
    committed after the anchor was last written, cut off after a crash; a forger who re-hashes
    every later row and also rewrites or deletes the anchor.
    """
    path = Path(path)
    try:
        # Read before the rows: everything the anchor names was committed before it was written.
        anchor = _read_anchor(path)
    except ValueError as exc:
        return VerifyReport(False, 0, None, f"{exc}; it notes where the journal ended")
    try:
        conn = _connect_ro(path)
    except FileNotFoundError:
        what = "not a regular file" if os.path.lexists(path) else "no such journal file"
        return VerifyReport(False, 0, None, f"{path}: {what}")
    except sqlite3.Error as exc:
        if _storage_failed(exc):
            return _unreadable(path, exc)
        return VerifyReport(False, 0, None, f"{path}: cannot open ({_short(exc)})")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > JOURNAL_FORMAT:
            return VerifyReport(False, 0, None, f"{path}: {_newer_format(version)}")
        planted = _planted(conn)
        if planted:
            return VerifyReport(False, 0, None, f"{path}: {planted}")
        _, cuts = _range_count(conn, workers)
        with contextlib.closing(_stretches(conn, path, cuts)) as stretches:
            report = _stitch(stretches)  # may stop early: closing kills the workers left
        if report.ok and anchor is not None:
            problem = _anchor_problem(conn, path, anchor)
            if not problem.ok:
                return problem
        return report
    except sqlite3.Error as exc:
        if _storage_failed(exc):
            return _unreadable(path, exc)
        return VerifyReport(False, 0, None, f"{path}: cannot read the journal ({_short(exc)})")
    finally:
        conn.close()


def _planted(conn: sqlite3.Connection) -> str:
    """Why the journal's schema is not one an engine makes ("" if it is)."""
    return _schema_problem(conn.execute(_SCHEMA_QUERY).fetchall())


# What of a journal's schema acts on the rows the engine writes: its table's definition, the
# indexes on it and every trigger.
_SCHEMA_QUERY = (
    "SELECT type, name, tbl_name, sql FROM sqlite_master "
    "WHERE type = 'trigger' OR lower(tbl_name) = 'journal' OR lower(name) = 'journal' "
    "ORDER BY type, name"
)


def _normal_sql(sql: str) -> str:
    for mark in "(),":
        sql = sql.replace(mark, f" {mark} ")
    return " ".join(sql.replace("IF NOT EXISTS ", "").split())


# The journal table and its index exactly as every engine has made them (the schema has never
# changed): SQLite keeps each CREATE statement's text.
_ENGINE_SCHEMA = {_normal_sql(statement) for statement in _SCHEMA.split(";") if statement.strip()}


def _schema_problem(objects: list[tuple[Any, ...]]) -> str:
    """Why a journal holding ``objects`` (rows of :data:`_SCHEMA_QUERY`) is not one an engine
    makes ("" if it is). A trigger acts on every row the engine writes (drops its kill switch,
    rewrites a fill) while each commit still reads as durable, and the damage shows only at the
    next start; so does a table defined otherwise (a column's ``ON CONFLICT IGNORE`` drops a
    row without an error, ``REPLACE`` deletes an older one) or an index the engine does not
    make (a unique one fails a commit in the middle of trading). The engine's index missing is
    fine: a start makes it again."""
    triggers = [str(name) for kind, name, _, _ in objects if kind == "trigger"]
    if triggers:
        shown = ", ".join(repr(n) for n in triggers[:3]) + (" ..." if len(triggers) > 3 else "")
        return (
            f"holds a trigger no engine makes ({shown}): it would act on the rows the engine "
            "writes (journal edited?)"
        )
    for kind, name, _, sql in objects:
        if not isinstance(sql, str) or _normal_sql(sql) not in _ENGINE_SCHEMA:
            return (
                f"its {kind} {str(name)!r} is not defined as an engine makes it: it could change "
                "or drop the rows the engine writes without an error (journal edited?)"
            )
    if not any(kind == "table" and name == "journal" for kind, name, _, _ in objects):
        return "holds no journal table (journal edited?)"
    return ""


_VERSIONS_SQL = "SELECT * FROM pragma_schema_version, pragma_data_version"


def _versions_of(rows: Any) -> tuple[int, int]:
    row = next(iter(rows), None)
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def _versions(conn: aiosqlite.Connection) -> tuple[int, int]:
    """The journal's schema cookie and the connection's data_version (see Journal)."""
    return _versions_of(await conn.execute_fetchall(_VERSIONS_SQL))


def _short(exc: BaseException, limit: int = 200) -> str:
    """An error in one line of bounded length (SQLite quotes whole undecodable values)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
