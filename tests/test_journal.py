"""The journal: hash chain, durability, group commit, fail-closed writes, and tamper detection."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.journal import (
    GENESIS_HASH,
    Journal,
    JournalError,
    canonical_payload,
    last_row,
    read_rows,
    row_hash,
    verify_journal,
)
from engine.types import Side

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.db"


async def _fill(path: Path, n: int, start_ts: int = 0) -> None:
    j = await Journal.open(path)
    for i in range(n):
        j.append("tick" if i % 3 else "intent", start_ts + i, {"i": i, "px": 100.0 + i / 8})
    await j.close()


def _sql(path: Path, sql: str, params: tuple = ()) -> None:
    """Tamper with the file behind the journal's back, as an editor with sqlite3 would."""
    conn = sqlite3.connect(path)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def _visible(path: Path, seq: int) -> bool:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT 1 FROM journal WHERE seq = ?", (seq,)).fetchone() is not None
    finally:
        conn.close()


# --- the chain ----------------------------------------------------------------------------------


async def test_chain_links_and_verify_ok(db: Path) -> None:
    j = await Journal.open(db)
    for i in range(3000):
        j.append(
            "fill" if i % 2 else "quote",
            1_700_000_000_000_000_000 + i,
            {
                "i": i,
                "side": Side.BUY if i % 2 else Side.SELL,
                "px": 0.1 + i,
                "tags": ["a", None, True],
            },
        )
    await j.close()

    rows = list(read_rows(db))
    assert [r.seq for r in rows] == list(range(1, 3001))
    assert rows[0].prev_hash == GENESIS_HASH
    for prev, row in itertools.pairwise(rows):
        assert row.prev_hash == prev.hash
    for row in rows:
        assert row.hash == row_hash(
            row.seq, row.ts, row.kind, canonical_payload(row.payload), row.prev_hash
        )
    assert rows[1].payload == {"i": 1, "side": "buy", "px": 1.1, "tags": ["a", None, True]}

    report = verify_journal(db)
    assert report.ok, report.problem
    assert report.rows == 3000
    assert report.first_bad_seq is None


async def test_canonical_content_is_sorted_compact_json(db: Path) -> None:
    j = await Journal.open(db)
    await j.append_durable("k", 5, {"b": 1, "a": [1.5, "x"]})
    await j.close()
    conn = sqlite3.connect(db)
    payload_json, stored = conn.execute("SELECT payload, hash FROM journal").fetchone()
    conn.close()
    assert payload_json == '{"a":[1.5,"x"],"b":1}'
    expected = hashlib.sha256(f'1|5|k|{{"a":[1.5,"x"],"b":1}}|{GENESIS_HASH}'.encode()).hexdigest()
    assert stored == expected


async def test_same_appends_give_identical_hashes(tmp_path: Path) -> None:
    hashes = []
    for name in ("a.db", "b.db"):
        j = await Journal.open(tmp_path / name)
        for i in range(200):
            # Key order differs on purpose: canonical JSON sorts keys.
            payload = {"z": i, "a": i * 0.5} if i % 2 else {"a": i * 0.5, "z": i}
            j.append("k", i, payload)
        await j.close()
        hashes.append([r.hash for r in read_rows(tmp_path / name)])
    assert hashes[0] == hashes[1]
    assert len(set(hashes[0])) == 200


async def test_reopen_continues_chain_across_sessions(db: Path) -> None:
    await _fill(db, 100)
    last = list(read_rows(db))[-1]
    j = await Journal.open(db)
    assert j.last_seq == 100
    seq = await j.append_durable("resume", 1000, {"session": 2})
    await j.close()
    assert seq == 101
    new = list(read_rows(db, after_seq=100))
    assert [r.seq for r in new] == [101]
    assert new[0].prev_hash == last.hash
    await _fill(db, 50, start_ts=2000)
    report = verify_journal(db)
    assert report.ok, report.problem
    assert report.rows == 151


async def test_read_rows_filters_and_last_row(db: Path) -> None:
    j = await Journal.open(db)
    for i in range(30):
        j.append(("a", "b", "c")[i % 3], i, {"i": i})
    await j.close()
    assert [r.payload["i"] for r in read_rows(db, kinds={"b"})] == list(range(1, 30, 3))
    assert [r.seq for r in read_rows(db, kinds=["a", "c"], after_seq=20)] == [
        21,
        22,
        24,
        25,
        27,
        28,
        30,
    ]
    assert list(read_rows(db, kinds=[])) == []
    latest = last_row(db, "a")
    assert latest is not None and latest.seq == 28 and latest.payload == {"i": 27}
    assert last_row(db, "nope") is None
    with pytest.raises(FileNotFoundError):
        list(read_rows(db.parent / "missing.db"))
    with pytest.raises(FileNotFoundError):
        last_row(db.parent / "missing.db", "a")


async def test_readers_work_while_the_engine_writes(db: Path) -> None:
    j = await Journal.open(db)
    await j.append_durable("a", 1, {})
    j.append("b", 2, {})
    assert [r.seq for r in read_rows(db)][:1] == [1]  # no lock error while the writer is live
    assert verify_journal(db).ok
    await j.close()


# --- durability ---------------------------------------------------------------------------------


async def test_append_durable_returns_only_after_commit(db: Path) -> None:
    j = await Journal.open(db)
    entered, gate = asyncio.Event(), asyncio.Event()
    real_commit = j._conn.commit

    async def gated_commit() -> None:
        entered.set()
        await gate.wait()
        await real_commit()

    j._conn.commit = gated_commit  # type: ignore[method-assign]
    task = asyncio.create_task(j.append_durable("intent", 1, {"id": "x"}))
    await entered.wait()  # the row is inserted but its transaction is not committed
    assert not task.done()
    assert not _visible(db, 1)
    gate.set()
    seq = await task
    assert seq == 1
    assert _visible(db, 1)  # a separate connection sees it the moment append_durable returns
    for i in range(2, 20):
        assert await j.append_durable("intent", i, {"i": i}) == i
        assert _visible(db, i)
    await j.close()


async def test_cancelled_durable_append_is_still_written(db: Path) -> None:
    j = await Journal.open(db)
    task = asyncio.create_task(j.append_durable("intent", 1, {}))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await j.flush()
    assert _visible(db, 1)
    await j.close()


async def test_durable_rows_survive_a_crash_and_the_chain_continues(db: Path) -> None:
    await _fill(db, 10)
    child = textwrap.dedent(
        """
        import asyncio, os, sys
        from engine.journal import Journal

        async def main():
            j = await Journal.open(sys.argv[1])
            for i in range(50):
                await j.append_durable("intent", 100 + i, {"i": i})
            for i in range(1000):
                j.append("tick", 1000 + i, {"i": i})
            os._exit(0)  # no close, no flush: the process just dies

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", child, str(db)], env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()

    rows = list(read_rows(db))
    assert len(rows) >= 60  # 10 from before + the 50 durable ones; queued ticks may or may not be
    assert [r.payload["i"] for r in rows[10:60]] == list(range(50))
    assert verify_journal(db).ok

    j = await Journal.open(db)
    seq = await j.append_durable("restart", 5000, {})
    await j.close()
    assert seq == len(rows) + 1
    after = list(read_rows(db, after_seq=len(rows)))
    assert after[0].prev_hash == rows[-1].hash
    report = verify_journal(db)
    assert report.ok, report.problem
    assert report.rows == len(rows) + 1


# --- group commit and throughput ----------------------------------------------------------------


async def test_group_commit_many_appends_few_commits(db: Path) -> None:
    j = await Journal.open(db)
    for i in range(10_000):
        j.append("tick", i, {"i": i})
    await j.flush()
    assert j.rows_written == 10_000
    assert j.commits < j.rows_written / 10
    await j.close()
    assert verify_journal(db).rows == 10_000


async def test_concurrent_durable_appends_share_commits(db: Path) -> None:
    j = await Journal.open(db)
    seqs = await asyncio.gather(*(j.append_durable("intent", i, {"i": i}) for i in range(500)))
    assert sorted(seqs) == list(range(1, 501))
    assert j.commits < 50
    await j.close()
    assert verify_journal(db).ok


@pytest.mark.parametrize("n", [1, 7, 8, 9, 63, 64, 65, 511, 512, 513, 4095, 4096, 4097, 20_001])
async def test_a_batch_of_any_size_is_written_whole_and_in_order(db: Path, n: int) -> None:
    """A batch is cut into multi-row statements of several sizes; every cut (one row either
    side of each size) writes every row once, in seq order, and the chain verifies."""
    j = await Journal.open(db)
    for i in range(n):
        j.append("tick", i, {"i": i})
    await j.flush()
    assert j.commits == (1 if n <= 20_000 else 2)
    await j.close()
    rows = list(read_rows(db))
    assert [r.seq for r in rows] == list(range(1, n + 1))
    assert [r.payload["i"] for r in rows] == list(range(n))
    assert verify_journal(db).rows == n


async def test_a_statement_failing_mid_batch_commits_none_of_it(db: Path) -> None:
    """A batch of many statements whose third fails: the whole batch is rolled back (none of
    its rows is on disk, not even those of the statements that ran), and the journal is failed."""
    j = await Journal.open(db)
    await j.append_durable("ok", 1, {})
    real = j._conn.executemany
    calls = 0

    async def third_fails(sql: str, params: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise sqlite3.OperationalError("disk I/O error")
        return await real(sql, params)

    j._conn.executemany = third_fails  # type: ignore[method-assign]
    for i in range(4096 + 512 + 64 + 1):  # four statement sizes in one batch
        j.append("tick", i, {"i": i})
    with pytest.raises(JournalError, match="disk I/O error"):
        await j.flush()
    assert calls == 4
    with pytest.raises(JournalError):
        await j.close()
    assert [r.seq for r in read_rows(db)] == [1]
    assert verify_journal(db).ok


async def test_throughput_100k_appends_then_flush(db: Path) -> None:
    """Prints the figure (run with -s); asserts only correctness, never time."""
    j = await Journal.open(db)
    payload = {"symbol": "BTC/USDT", "bid": 65000.5, "ask": 65001.0, "side": Side.BUY, "n": 0}
    t0 = time.perf_counter()
    for i in range(100_000):
        payload["n"] = i
        j.append("quote", 1_700_000_000_000_000_000 + i, payload)
    t_append = time.perf_counter() - t0
    await j.flush()
    elapsed = time.perf_counter() - t0
    commits = j.commits
    await j.close()
    print(
        f"\njournal: 100000 appends + flush in {elapsed:.3f}s = {100_000 / elapsed:,.0f} rows/s "
        f"(append calls alone {t_append:.3f}s, {commits} commits)"
    )
    assert verify_journal(db).rows == 100_000


# --- rejected input -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
async def test_nan_payload_is_rejected_without_enqueuing(db: Path, bad: float) -> None:
    j = await Journal.open(db)
    j.append("ok", 1, {"x": 1.0})
    with pytest.raises(ValueError, match="not valid JSON"):
        j.append("bad", 2, {"nested": {"px": bad}})
    assert j.last_seq == 1
    assert j.append("ok", 3, {"x": 2.0}) == 2
    await j.close()
    assert [r.kind for r in read_rows(db)] == ["ok", "ok"]
    assert verify_journal(db).ok


@pytest.mark.parametrize(
    "bad",
    [
        {"px": np.float64("nan")},
        {"levels": [[1.0, 2.0], (3.0, np.float64("-inf"))]},
        {"a": None, "b": [None, {"c": None, "d": math.inf}]},
    ],
)
async def test_a_non_finite_number_beside_nulls_or_in_a_numpy_float_is_refused(
    db: Path, bad: dict[str, object]
) -> None:
    """JSON has no NaN: the encoder writes one as null, so the journal looks for it wherever a null
    appears (tuples and numpy floats included) rather than record a missing number."""
    j = await Journal.open(db)
    with pytest.raises(ValueError, match="not valid JSON"):
        j.append("bad", 1, bad)
    assert j.append("ok", 2, {"px": np.float64(1.25), "none": None, "t": (1, 2.5)}) == 1
    await j.close()
    assert [r.payload for r in read_rows(db)] == [{"px": 1.25, "none": None, "t": [1, 2.5]}]


def _has_non_finite(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v) for v in value)
    return False


_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True).map(np.float64),
    st.text(max_size=5),
)
_payloads = st.dictionaries(
    st.text(max_size=4),
    st.recursive(
        _leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.lists(inner, max_size=4).map(tuple),
            st.dictionaries(st.text(max_size=4), inner, max_size=4),
        ),
        max_leaves=12,
    ),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(_payloads)
def test_a_payload_is_refused_exactly_when_it_holds_a_non_finite_number(
    payload: dict[str, object],
) -> None:
    """Nulls, tuples, numpy floats and NaN anywhere: the row is refused if and only if some number
    in it is NaN or infinite (the fast check's shortcut never lets one through as a null)."""
    if _has_non_finite(payload):
        with pytest.raises(ValueError, match="not JSON compliant"):
            canonical_payload(payload)
    else:
        assert json.loads(canonical_payload(payload)) == json.loads(json.dumps(payload))


async def test_other_bad_input_is_rejected_without_enqueuing(db: Path) -> None:
    j = await Journal.open(db)
    with pytest.raises(TypeError):
        j.append("k", 1, {"x": object()})
    with pytest.raises(TypeError):
        j.append("k", 1.0, {})  # type: ignore[arg-type]  # a float ts would not verify
    with pytest.raises(TypeError):
        j.append("k", 1, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        j.append("a|b", 1, {})
    with pytest.raises(ValueError):
        j.append("", 1, {})
    with pytest.raises(ValueError):
        j.append("k", 2**63, {})
    assert j.last_seq == 0
    assert j.append("k", 1, {}) == 1
    await j.close()
    assert verify_journal(db).rows == 1


async def test_a_payload_fixed_after_a_rejection_is_taken(db: Path) -> None:
    """The same dicts, corrected and appended again, are taken (a refusal leaves nothing behind
    in the encoder), and a real circular reference is still a clear error."""
    j = await Journal.open(db)
    inner: dict[str, object] = {"px": math.nan}
    payload = {"nested": inner, "more": [inner]}
    with pytest.raises(ValueError, match="not valid JSON"):
        j.append("bad", 1, payload)
    inner["px"] = 1.5
    inner["zz"] = object()
    with pytest.raises(TypeError):
        j.append("bad", 1, payload)
    del inner["zz"]
    assert j.append("fixed", 1, payload) == 1
    loop: dict[str, object] = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="Circular reference"):
        j.append("bad", 2, {"loop": loop})
    del loop["self"]
    assert j.append("fixed", 2, {"loop": loop}) == 2
    await j.close()
    assert [r.payload for r in read_rows(db)] == [
        {"nested": {"px": 1.5}, "more": [{"px": 1.5}]},
        {"loop": {}},
    ]
    assert verify_journal(db).ok


# --- failing closed -----------------------------------------------------------------------------


async def test_commit_failure_fails_closed(db: Path) -> None:
    j = await Journal.open(db)
    await j.append_durable("ok", 1, {})

    async def broken_commit() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    j._conn.commit = broken_commit  # type: ignore[method-assign]
    with pytest.raises(JournalError, match="disk I/O error"):
        await j.append_durable("intent", 2, {"id": "a"})
    assert isinstance(j.failed, sqlite3.OperationalError)
    with pytest.raises(JournalError):
        j.append("intent", 3, {})
    with pytest.raises(JournalError):
        await j.append_durable("intent", 3, {})
    with pytest.raises(JournalError):
        await j.flush()
    with pytest.raises(JournalError):
        await j.close()
    await j.close()  # the second close is a no-op
    assert [r.seq for r in read_rows(db)] == [1]
    assert verify_journal(db).ok


async def test_every_waiter_fails_when_the_write_fails(db: Path) -> None:
    j = await Journal.open(db)

    async def broken_executemany(*_args: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    j._conn.executemany = broken_executemany  # type: ignore[method-assign]
    results = await asyncio.gather(
        *(j.append_durable("intent", i, {}) for i in range(20)), j.flush(), return_exceptions=True
    )
    assert all(isinstance(r, JournalError) for r in results)
    assert j.failed is not None
    with pytest.raises(JournalError):
        await j.close()


async def test_a_lock_held_elsewhere_fails_closed(db: Path) -> None:
    """A real SQLite failure: another process holds the write lock past the busy timeout."""
    j = await Journal.open(db, busy_timeout=0.05)
    await j.append_durable("ok", 1, {})
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(JournalError, match="locked"):
            await j.append_durable("intent", 2, {})
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert j.failed is not None
    with pytest.raises(JournalError):
        j.append("intent", 3, {})  # latched: releasing the lock does not revive it
    with pytest.raises(JournalError):
        await j.close()
    assert verify_journal(db).rows == 1


async def test_append_after_close_raises(db: Path) -> None:
    j = await Journal.open(db)
    j.append("a", 1, {})
    await j.close()
    with pytest.raises(JournalError, match="closed"):
        j.append("a", 2, {})
    assert j.failed is None
    assert verify_journal(db).rows == 1


# --- files --------------------------------------------------------------------------------------


async def test_open_creates_private_dir_and_file_in_wal_mode(db: Path) -> None:
    j = await Journal.open(db)
    await j.close()
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert {"journal", "journal_kind"} <= names


async def test_open_refuses_a_tampered_last_row(db: Path) -> None:
    await _fill(db, 5)
    _sql(db, "UPDATE journal SET payload = '{\"i\":99}' WHERE seq = 5")
    with pytest.raises(JournalError, match="last row 5"):
        await Journal.open(db)


# --- verify -------------------------------------------------------------------------------------


async def test_verify_empty_journal_is_ok(db: Path) -> None:
    j = await Journal.open(db)
    await j.close()
    assert verify_journal(db).ok
    assert verify_journal(db).rows == 0


def test_verify_missing_or_foreign_file(tmp_path: Path) -> None:
    report = verify_journal(tmp_path / "nope.db")
    assert not report.ok
    assert "no such journal file" in report.problem
    assert not (tmp_path / "nope.db").exists()  # verify never creates a database
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    report = verify_journal(junk)
    assert not report.ok and report.problem


async def test_verify_names_an_edited_row(db: Path) -> None:
    await _fill(db, 2000)
    _sql(db, 'UPDATE journal SET payload = \'{"i":1233,"px":1.0}\' WHERE seq = 1234')
    report = verify_journal(db)
    assert not report.ok
    assert report.first_bad_seq == 1234
    assert report.rows == 1233
    assert report.problem == "row 1234: hash does not match its content (edited?)"


async def test_verify_names_the_row_after_a_deleted_one(db: Path) -> None:
    await _fill(db, 100)
    _sql(db, "DELETE FROM journal WHERE seq = 56")
    report = verify_journal(db)
    assert (report.ok, report.first_bad_seq) == (False, 57)
    assert report.problem == "row 57: seq jumps from 55 (row deleted?)"


async def test_verify_catches_a_deleted_first_row(db: Path) -> None:
    await _fill(db, 10)
    _sql(db, "DELETE FROM journal WHERE seq = 1")
    report = verify_journal(db)
    assert (report.ok, report.first_bad_seq) == (False, 2)


async def test_verify_catches_a_replaced_hash(db: Path) -> None:
    await _fill(db, 100)
    _sql(db, "UPDATE journal SET hash = ? WHERE seq = 40", ("f" * 64,))
    report = verify_journal(db)
    assert (report.ok, report.first_bad_seq) == (False, 40)
    assert "hash does not match its content" in report.problem


async def test_verify_catches_an_edit_that_rehashed_its_own_row(db: Path) -> None:
    await _fill(db, 100)
    row = next(read_rows(db, after_seq=69))
    forged_json = canonical_payload({"i": 69, "px": 1e9})
    forged = row_hash(row.seq, row.ts, row.kind, forged_json, row.prev_hash)
    _sql(db, "UPDATE journal SET payload = ?, hash = ? WHERE seq = 70", (forged_json, forged))
    report = verify_journal(db)
    assert (report.ok, report.first_bad_seq) == (False, 71)
    assert report.problem == "row 71: prev_hash does not match row 70 (row deleted or reordered?)"


async def test_verify_catches_swapped_rows(db: Path) -> None:
    await _fill(db, 20)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE journal SET seq = -1 WHERE seq = 10")
    conn.execute("UPDATE journal SET seq = 10 WHERE seq = 11")
    conn.execute("UPDATE journal SET seq = 11 WHERE seq = -1")
    conn.commit()
    conn.close()
    report = verify_journal(db)
    assert (report.ok, report.first_bad_seq) == (False, 10)


async def test_a_cancelled_writer_fails_closed(db: Path) -> None:
    j = await Journal.open(db)
    await j.append_durable("ok", 1, {})
    j.append("queued", 2, {})
    waiter = asyncio.create_task(j.flush())
    j._writer.cancel()
    with pytest.raises(JournalError):
        await waiter
    assert isinstance(j.failed, asyncio.CancelledError)
    with pytest.raises(JournalError):
        j.append("late", 3, {})
    with pytest.raises(JournalError):
        await j.close()
    assert verify_journal(db).ok
