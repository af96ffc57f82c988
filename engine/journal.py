"""The append-only, hash-chained journal: the engine's memory and its write-ahead log.

Everything the engine must remember across a crash (order intents before they are sent, safety
states before they are acknowledged, fills, decisions) is a row here. Rows are never updated or
deleted. Each row carries the hash of the previous row and a hash of its own canonical content,
so an edited, deleted or reordered row is found by :func:`verify_journal`. (A chain only detects
tampering by someone who does not re-hash every later row; anchoring the last hash elsewhere
would be needed to catch that.)

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
import json
import logging
import operator
import os
import sqlite3
from collections import deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64

# The most rows one transaction takes; a backlog larger than this is written in several commits
# so one huge transaction cannot hold the write lock (and the waiters) for long.
MAX_BATCH_ROWS = 5_000

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
_COLUMNS = "seq, ts, kind, payload, prev_hash, hash"

# Exactly what json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False) does,
# built once because the encoder is on the hot path.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


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


def canonical_payload(payload: dict[str, Any]) -> str:
    """The exact JSON text that is stored and hashed; one spelling per payload, so hashes repeat."""
    return _ENCODER.encode(payload)


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
        self, path: Path, conn: aiosqlite.Connection, last_seq: int, last_hash: str
    ) -> None:
        self.path = path
        self._conn = conn
        self._last_seq = last_seq
        self._last_hash = last_hash
        self._committed_seq = last_seq
        self._pending: list[_Row] = []
        # (seq, future) in non-decreasing seq order: resolved once seq is committed.
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._closed = False
        self._failed: BaseException | None = None
        self.rows_written = 0
        self.commits = 0
        # Called (no arguments) after every commit and once when the writer fails: the engine
        # shows an event only once the row recording it is committed. It must not raise.
        self.on_progress: Callable[[], None] | None = None
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
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        conn = await aiosqlite.connect(path, timeout=busy_timeout)
        try:
            async with conn.execute("PRAGMA journal_mode=WAL") as cur:
                mode = await cur.fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise JournalError(f"{path}: cannot switch to WAL mode (got {mode!r})")
            await conn.execute("PRAGMA synchronous=FULL")
            await conn.executescript(_SCHEMA)
            await conn.commit()
            async with conn.execute(
                f"SELECT {_COLUMNS} FROM journal ORDER BY seq DESC LIMIT 1"
            ) as cur:
                last = await cur.fetchone()
        except BaseException:
            await conn.close()
            raise
        if last is None:
            return cls(path, conn, 0, GENESIS_HASH)
        seq, ts, kind, payload_json, prev_hash, stored_hash = last
        if row_hash(seq, ts, kind, payload_json, prev_hash) != stored_hash:
            # Chaining onto a row that is not what it claims would bless the damage.
            await conn.close()
            raise JournalError(
                f"{path}: last row {seq} does not match its hash; run verify before trading"
            )
        return cls(path, conn, seq, stored_hash)

    @property
    def failed(self) -> BaseException | None:
        """The error that stopped the writer, or None. Once set, every append raises."""
        return self._failed

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
        if self._failed is not None:
            raise JournalError(f"journal failed earlier ({self._failed!r}); no further writes")
        if self._closing:
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
            payload_json = _ENCODER.encode(payload)
        except ValueError as exc:
            raise ValueError(f"journal payload for {kind!r} is not valid JSON: {exc}") from None
        seq = self._last_seq + 1
        prev_hash = self._last_hash
        digest = row_hash(seq, ts, kind, payload_json, prev_hash)
        self._pending.append((seq, ts, kind, payload_json, prev_hash, digest))
        self._last_seq = seq
        self._last_hash = digest
        self._wakeup.set()
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
                try:
                    await self._conn.executemany(_INSERT, batch)
                    await self._conn.commit()
                except BaseException:
                    with contextlib.suppress(BaseException):
                        await self._conn.rollback()
                    raise
                self.rows_written += len(batch)
                self.commits += 1
                self._committed_seq = batch[-1][0]
                waiters = self._waiters
                while waiters and waiters[0][0] <= self._committed_seq:
                    _, fut = waiters.popleft()
                    if not fut.done():
                        fut.set_result(None)
                self._progress()
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
        if self._failed is None:
            self._failed = exc
        self._closing = True
        self._pending.clear()
        while self._waiters:
            seq, fut = self._waiters.popleft()
            if not fut.done():
                err = JournalError(f"journal write failed before row {seq} was committed: {exc!r}")
                err.__cause__ = exc
                fut.set_exception(err)


# --- sync read side: CLI, verify and restore -------------------------------------------------


def _connect_ro(path: str | Path) -> sqlite3.Connection:
    """A read-only connection that never creates a database; FileNotFoundError if there is none."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such journal file")
    return sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)


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


@dataclass(frozen=True)
class VerifyReport:
    """``rows`` counts the rows that checked out before the first bad one (all rows if ok)."""

    ok: bool
    rows: int
    first_bad_seq: int | None
    problem: str  # one human line; empty when ok


def verify_journal(path: str | Path) -> VerifyReport:
    """Check seq continuity from 1, every prev_hash link and every row's own hash.

    Stops at the first bad row and names it, with the likeliest cause.
    """
    try:
        conn = _connect_ro(path)
    except FileNotFoundError:
        return VerifyReport(False, 0, None, f"{path}: no such journal file")
    except sqlite3.Error as exc:
        return VerifyReport(False, 0, None, f"{path}: cannot open ({exc})")
    count = 0
    try:
        expected_seq = 1
        prev = GENESIS_HASH
        for seq, ts, kind, payload_json, prev_hash, stored_hash in conn.execute(
            f"SELECT {_COLUMNS} FROM journal ORDER BY seq"
        ):
            if seq != expected_seq:
                return VerifyReport(
                    False,
                    count,
                    seq,
                    f"row {seq}: seq jumps from {expected_seq - 1} (row deleted?)",
                )
            if row_hash(seq, ts, kind, payload_json, prev_hash) != stored_hash:
                return VerifyReport(
                    False, count, seq, f"row {seq}: hash does not match its content (edited?)"
                )
            if prev_hash != prev:
                what = "the genesis hash" if seq == 1 else f"row {seq - 1}"
                return VerifyReport(
                    False,
                    count,
                    seq,
                    f"row {seq}: prev_hash does not match {what} (row deleted or reordered?)",
                )
            prev = stored_hash
            expected_seq += 1
            count += 1
    except sqlite3.Error as exc:
        return VerifyReport(False, count, None, f"{path}: cannot read the journal ({exc})")
    finally:
        conn.close()
    return VerifyReport(True, count, None, "")
