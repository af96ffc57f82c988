"""review-tamper: the engine's memory (the journal) and its exclusivity (one engine per data
directory, the KILL file), attacked by someone who edits the data directory's files behind its
back, with real engines. Each test pins a hole found there, failing before its fix.

Attacks that held (no test added):
- journal.sqlite-wal or -shm replaced by a FIFO, a directory, or a symlink to another file
  while the engine is stopped: the start refuses in one line (exit 1), the link's target is
  never written;
- the data directory renamed away (`mv data data.old; mkdir data`) under a running engine:
  the next commit blocks it ("was removed while the engine wrote it");
- rows edited, deleted, inserted, reordered, a tail cut, an older copy put back without
  rewriting the anchor: refused at start and by `cockpit verify` (tests/test_journal_tamper.py);
- a trigger planted while the engine is stopped: refused at start (test_journal_tamper.py);
- engine.lock deleted under a running engine, a second engine through a symlinked journal,
  a symlinked or relative path to the same directory: refused, exit 2 (test_datadir_lock.py,
  test_same_dir.py);
- the KILL file as a dangling symlink, a directory, a FIFO, empty, garbage, unreadable:
  halt (test_kill_file.py); a kill_file naming the journal or the lock: refused by the config;
- kill -9 of an engine at `entries`, restarted at once with its socket, .pid, .lock and info
  files left: it starts on the same --socket, the kill switch still at entries;
- engine.lock a directory: one line, exit 1;
- reading the journal with sqlite3, `.backup`, `VACUUM INTO` and `PRAGMA wal_checkpoint`
  while the engine runs: the engine goes on (they write nothing into the journal).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from engine.datadir import LOCK_FILE
from engine.journal import JournalBroken, read_rows, verify_journal
from engine.runtime import JOURNAL_FILE, Engine
from tests.test_cli import run
from tests.test_control_support import WAIT, short_dir
from tests.test_datadir_lock import engine_config, engine_process, status, wait_for
from tests.test_journal_failure import blocked_and_killed_by_file, feed, started
from tests.test_journal_tamper import killed  # noqa: F401 (a fixture)
from tests.test_safety_engine import scripted_config

_COLUMNS = """
    seq INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL"""
_COPY = "seq, ts, kind, payload, prev_hash, hash"


def _redefine(journal: Path, table: str, after: str = "") -> None:
    """Define the journal table again with `table` as its body and copy every row into it, as
    anyone with sqlite3 could: the rows, their hashes and the anchor stay exactly as they were."""
    conn = sqlite3.connect(journal)
    try:
        last = conn.execute("SELECT max(seq) FROM journal").fetchone()[0]
        conn.executescript(
            "ALTER TABLE journal RENAME TO old;"
            f"CREATE TABLE journal ({table.format(last=last)});"
            f"INSERT INTO journal ({_COPY}) SELECT {_COPY} FROM old;"
            f"DROP TABLE old;{after.format(last=last)}"
        )
        conn.commit()
    finally:
        conn.close()


# Each drops, replaces or refuses a row the engine writes later, with the rows already there
# untouched (so the chain and the anchor still check out).
_HOSTILE = {
    # Every later safety_state row (a kill, a trip) is skipped without an error.
    "ignore": _COLUMNS + ", gone INTEGER NOT NULL ON CONFLICT IGNORE AS"
    " (CASE WHEN kind = 'safety_state' AND seq > {last} THEN NULL ELSE 1 END)",
    # A later row of a kind deletes the older one of that kind.
    "replace": _COLUMNS + ", k TEXT AS (CASE WHEN seq > {last} THEN kind END),"
    " UNIQUE (k) ON CONFLICT REPLACE",
    # The engine's index, made unique for the rows to come: the second of a kind (a fill, a
    # kill) fails its commit in the middle of trading.
    "unique-index": _COLUMNS,
}
_AFTER = {"unique-index": "CREATE UNIQUE INDEX journal_kind ON journal (kind) WHERE seq > {last};"}


async def kill_at_restart(data_dir: Path) -> dict[str, Any]:
    """The kill switch as an engine started again on ``data_dir`` shows it."""
    again = Engine(scripted_config(data_dir), data_dir)
    await again.start()
    try:
        return dict(again.snapshot(trace=0)["kill_switch"])
    finally:
        await again.stop()


@pytest.mark.parametrize("how", sorted(_HOSTILE))
async def test_a_journal_table_defined_to_change_the_rows_it_gets_is_refused(
    killed: Path,  # noqa: F811
    how: str,
) -> None:
    """Found: only a trigger was refused. A journal table defined again with a constraint
    that drops rows without an error (`NOT NULL ON CONFLICT IGNORE` on a generated column,
    `UNIQUE ... ON CONFLICT REPLACE`) started, verified, and took the engine's next kill as
    durable while SQLite skipped it: the kill reply said engaged, the engine exited 0, and the
    next start refused the journal for a row missing, the kill lost with it. Now the start
    and `cockpit verify` refuse a journal whose table or index is not the engine's, before
    anything is restored."""
    journal = killed / JOURNAL_FILE
    _redefine(journal, _HOSTILE[how], _AFTER.get(how, ""))
    report = verify_journal(journal)
    assert not report.ok and "not defined as an engine makes it" in report.problem, report
    engine = Engine(scripted_config(killed), killed)
    with pytest.raises(JournalBroken, match="not defined as an engine makes it"):
        await engine.start()
    assert engine.core is None and engine.journal is None


async def test_a_journal_as_a_view_is_refused(killed: Path) -> None:  # noqa: F811
    journal = killed / JOURNAL_FILE
    conn = sqlite3.connect(journal)
    conn.executescript(
        "ALTER TABLE journal RENAME TO rows; CREATE VIEW journal AS SELECT * FROM rows;"
    )
    conn.close()
    report = verify_journal(journal)
    assert not report.ok and "view 'journal'" in report.problem, report


async def test_the_engines_index_missing_or_a_table_beside_it_still_starts(
    killed: Path,  # noqa: F811
) -> None:
    """The boundary: what cannot act on the rows the engine writes is no reason to refuse
    (a dropped index is made again; a table of a person's own notes is left alone)."""
    journal = killed / JOURNAL_FILE
    _redefine(journal, _COLUMNS, "CREATE TABLE notes (line TEXT);")
    assert verify_journal(journal).ok
    engine = Engine(scripted_config(killed), killed)
    await engine.start()
    try:
        assert engine.snapshot(trace=0)["kill_switch"]["engaged"]  # restored as it was
    finally:
        await engine.stop()
    assert verify_journal(journal).ok
    conn = sqlite3.connect(journal)
    names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert names == {"journal", "journal_kind", "notes"}


async def test_a_trigger_planted_while_the_engine_runs_blocks_it_before_any_row_it_touches(
    data_dir: Path,
) -> None:
    """Found: the trigger check ran only at start. A trigger planted with sqlite3 while the
    engine ran (`BEFORE INSERT ... SELECT RAISE(IGNORE)` on safety rows) made SQLite skip
    every later kill row, while the engine acknowledged each as durable and exited 0; the next
    start refused the journal (a trigger, then a row missing) with the kill gone from it. Now
    every commit checks SQLite's schema cookie inside its write transaction: a schema changed
    by another process fails the journal before those rows are committed (BLOCKED, no order
    sent), a kill meanwhile is kept in the KILL file, and what was committed before verifies."""
    journal = data_dir / JOURNAL_FILE
    engine = await started(data_dir)
    try:
        await feed(engine, 100)
        await engine.committed()
        before = engine.journal.committed_seq if engine.journal else 0
        other = sqlite3.connect(journal, timeout=30)
        other.execute(
            "CREATE TRIGGER hide BEFORE INSERT ON journal WHEN NEW.kind = 'safety_state' "
            "BEGIN SELECT RAISE(IGNORE); END"
        )
        other.commit()
        other.close()
        await blocked_and_killed_by_file(engine, "schema was changed by another process")
    finally:
        await engine.stop()
    rows = list(read_rows(journal))
    assert rows and rows[-1].seq >= before
    conn = sqlite3.connect(journal)
    conn.execute("DROP TRIGGER hide")
    conn.commit()
    conn.close()
    assert verify_journal(journal).ok  # nothing the trigger touched was committed
    kill = await kill_at_restart(data_dir)
    assert kill["engaged"] and kill["source"] == "file"


@pytest.mark.parametrize(
    "edit",
    [
        "DELETE FROM journal WHERE kind = 'safety_state'",  # the kill wiped from the record
        "UPDATE journal SET payload = '{}' WHERE seq = 1",
        "DELETE FROM journal WHERE seq = (SELECT max(seq) FROM journal)",  # the tail cut
    ],
)
async def test_rows_changed_by_another_process_under_a_running_engine_block_it(
    data_dir: Path, edit: str
) -> None:
    """Found: rows edited or deleted with sqlite3 while the engine ran (the kill's own row
    included) went unseen: the engine traded on, chaining new rows onto a record the next
    start refuses, and exited 0. Now the next commit sees that another connection wrote the
    file (SQLite's data_version, inside its write transaction) and fails the journal:
    BLOCKED with the reason, nothing of that commit taken as durable, a kill kept in the KILL
    file."""
    journal = data_dir / JOURNAL_FILE
    engine = await started(data_dir)
    try:
        await feed(engine, 100)
        reply = await engine.command("kill", {"level": "entries", "reason": "before"})
        assert reply["ok"], reply
        await engine.committed()
        other = sqlite3.connect(journal, timeout=30)
        other.execute(edit)
        other.commit()
        other.close()
        await blocked_and_killed_by_file(engine, "another process wrote to it")
    finally:
        await engine.stop()
    assert not verify_journal(journal).ok  # the next start refuses it, the KILL file holds
    assert (data_dir / "KILL").read_text() == "halt\n"


def test_a_fifo_as_engine_lock_never_holds_a_kill_or_a_second_engine(tmp_path: Path) -> None:
    """Found: engine.lock (and a socket's .pid and info files) were read with a blocking
    read_text. Replaced by a FIFO under a running engine (`rm engine.lock; mkfifo
    engine.lock`), `cockpit kill --data-dir` hung for ever before it wrote the KILL file or
    signalled anyone (the kill never reached the engine), and a second engine hung before
    it said the data directory was in use. Now they are read without blocking and only when
    they are regular files: the second engine exits 2 at once, the kill gets through (the
    KILL file the engine reads, its lock holder signalled), and a start on such a file
    refuses in one line (exit 1)."""
    cfg = engine_config(tmp_path)
    data = tmp_path / "data"
    lock = data / LOCK_FILE
    with short_dir() as sd:
        sock = sd / "elsewhere.sock"
        with engine_process(cfg, data, sock):
            lock.unlink()
            os.mkfifo(lock)
            second = run(
                "engine", "--config", str(cfg), "--data-dir", str(data),
                "--socket", str(sd / "second.sock"), "--for", "1", timeout=WAIT,
            )  # fmt: skip
            assert second.returncode == 2, (second.stdout, second.stderr)
            assert "in use by another engine" in second.stderr
            killed = run("kill", "--reason", "fifo", "--data-dir", str(data), timeout=WAIT)
            assert (data / "KILL").exists(), (killed.stdout, killed.stderr)
            halted = wait_for(
                lambda: (s := status(sock))["trading_state"]["state"] == "HALTED" and s, "halt"
            )
            assert halted["kill_switch"]["engaged"]
    (data / "KILL").unlink()
    start = run(
        "engine", "--config", str(cfg), "--data-dir", str(data),
        "--socket", str(tmp_path / "s.sock"), "--for", "1", timeout=WAIT,
    )  # fmt: skip
    assert start.returncode == 1
    lines = start.stderr.strip().splitlines()
    assert len(lines) == 1 and "engine.lock is not a regular file" in lines[0], start.stderr


async def test_a_stale_wal_put_back_is_named_not_the_anchor(data_dir: Path) -> None:
    """Found: a journal.sqlite-wal copied while the engine ran and put back after its clean
    stop (a backup script's `cp data/*`) hides every row after it, a kill's included; the
    refusal asked "a -wal file deleted? if this is an older copy on purpose, move
    journal.sqlite.anchor away": the advice that starts on the old pages, checkpoints them
    into the journal and loses the kill for good. Now, with a -wal there, it names that file
    to move away; doing so gives back every row, the kill still engaged."""
    journal = data_dir / JOURNAL_FILE
    wal = journal.with_name(journal.name + "-wal")
    engine = await started(data_dir)
    try:
        await feed(engine, 50)
        await engine.committed()
        stale = wal.read_bytes()
        reply = await engine.command("kill", {"level": "halt", "reason": "kept"})
        assert reply["ok"], reply
        await feed(engine, 50)
    finally:
        await engine.stop()
    conn = sqlite3.connect(journal)  # as `cockpit engine` leaves it: the -wal checkpointed
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert verify_journal(journal).ok and (not wal.exists() or wal.stat().st_size == 0)
    wal.write_bytes(stale)
    report = verify_journal(journal)
    assert not report.ok and f"a {wal.name} from another moment? move that file" in report.problem
    with pytest.raises(JournalBroken):
        await Engine(scripted_config(data_dir), data_dir).start()
    wal.rename(data_dir / "stale-wal")  # the advice
    assert verify_journal(journal).ok
    kill = await kill_at_restart(data_dir)
    assert kill["engaged"] and kill["level"] == "halt"
