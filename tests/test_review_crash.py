"""An adversarial review of the promises about crashes, restarts and the journal: each test is a
hole found by killing a real engine at an awkward moment or editing its files the way a person
could, pinned so it stays closed.

Tried and found holding (no test here; see tests/test_adversarial_kill9.py, test_journal_tamper.py,
test_datadir_lock.py, test_kill_file.py, test_safety_restart.py, test_journal_failure.py): a
journal that is not SQLite, a directory, another database; rows edited, deleted, inserted,
reordered; a second engine on one data directory; a KILL file left or removed while the engine
is down; a data directory on a read-only file system (one line, exit 1).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from engine import journal as journal_module
from engine.datadir import raise_kill_file
from engine.journal import (
    Journal,
    JournalBroken,
    anchor_path,
    read_rows,
    verify_journal,
)
from engine.restore import RestoreError
from engine.runtime import JOURNAL_FILE, Engine
from engine.types import Fill, Liquidity, Side
from tests.conftest import REPO
from tests.test_cli import run
from tests.test_safety_engine import scripted_config

WAIT_S = 60.0  # a bound against hanging, never a performance assertion

# A child that runs `cockpit engine ...` and SIGKILLs itself the moment it connects to the journal
# file it is creating (sys.addaudithook sees every sqlite3.connect, in any thread): a kill -9
# landing inside a first start, between the file's creation and its schema.
_DIE_WHILE_CREATING = """
import os, signal, sys

def hook(event, args):
    if event == "sqlite3.connect" and "journal.sqlite" in str(args[0]):
        if not str(args[0]).startswith("file:"):  # a reader's read-only URI
            os.kill(os.getpid(), signal.SIGKILL)

sys.addaudithook(hook)
sys.argv = ["cockpit", *sys.argv[1:]]
from cockpit.cli import main
sys.exit(main())
"""


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def _engine_for_a_second(data_dir: Path, sock: Path) -> subprocess.CompletedProcess[str]:
    return run(
        "engine", "--data-dir", str(data_dir), "--socket", str(sock), "--for", "1", timeout=WAIT_S
    )


def test_a_kill9_while_a_first_start_creates_the_journal_leaves_a_data_dir_that_starts(
    tmp_path: Path,
) -> None:
    """Found: the journal file was created empty, then given its schema. A kill -9 in between
    (systemd stopping a first start, a power cut) left an empty file, and every later start
    refused the data directory for ever ("the journal does not verify (... no such table:
    journal)"), though nothing had been recorded. Now a new journal is built whole beside it and
    renamed into place: a crash leaves no journal, and the next start makes one."""
    data_dir = tmp_path / "data"
    sock = tmp_path / "s.sock"
    args = ["engine", "--data-dir", str(data_dir), "--socket", str(sock), "--for", "1"]
    child = subprocess.run(
        [sys.executable, "-c", _DIE_WHILE_CREATING, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=WAIT_S,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr  # it died creating the journal

    again = _engine_for_a_second(data_dir, sock)
    assert again.returncode == 0, again.stderr
    journal = data_dir / JOURNAL_FILE
    assert verify_journal(journal).ok
    sessions = [r.payload["state"] for r in read_rows(journal, {"session"})]
    assert sessions == ["started", "stopped"]
    assert not (data_dir / (JOURNAL_FILE + ".new")).exists()  # the crash's leftover is gone


def test_rows_lost_with_the_wal_after_a_kill9_are_seen_not_trusted(tmp_path: Path) -> None:
    """Found: after a kill -9 the rows committed since the last checkpoint live in
    journal.sqlite-wal. Deleting it (tidying up "temporary files", copying only journal.sqlite
    to a new machine) lost them, the session's fills included, and the next start and `cockpit
    verify` took the shorter journal as intact: only a clean stop noted where the journal
    ended (here: the first session's). Now the writer notes it as the engine runs (at the
    first commit, then at most every second), so the loss is refused: one line, exit 1,
    nothing written."""
    data_dir = tmp_path / "data"
    sock = tmp_path / "s.sock"
    journal = data_dir / JOURNAL_FILE
    first = _engine_for_a_second(data_dir, sock)  # a clean stop: its rows are in the file
    assert first.returncode == 0, first.stderr
    argv = ["engine", "--data-dir", str(data_dir), "--socket", str(sock)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cockpit", *argv],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        # The anchor is written off the event loop, just after the commit: wait until it
        # notes the second session's start (a fixed half second before).
        while not _anchor_notes_session_started(journal, 2):
            assert proc.poll() is None, "the engine exited before its session started"
            assert time.monotonic() < deadline, "timed out waiting for the session to start"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(timeout=WAIT_S)
    # Read-only, so the WAL stays as the crash left it: the second session is in it alone.
    assert _session_started(journal, 2)
    assert (data_dir / (JOURNAL_FILE + "-wal")).stat().st_size > 0
    for name in (JOURNAL_FILE + "-wal", JOURNAL_FILE + "-shm"):
        (data_dir / name).unlink()
    before = journal.read_bytes()

    verify = run("verify", "--data-dir", str(data_dir), timeout=WAIT_S)
    assert verify.returncode == 1
    assert "missing" in _one_line(verify.stderr) and "-wal" in verify.stderr

    start = _engine_for_a_second(data_dir, sock)
    assert start.returncode == 1
    line = _one_line(start.stderr)
    assert "does not verify" in line and "missing" in line and "cockpit verify" in line
    assert journal.read_bytes() == before  # nothing was written on the damaged journal


def _anchor_notes_session_started(journal: Path, session: int) -> bool:
    """The session's start row is committed and the running engine's anchor notes it."""
    started = [
        r.seq
        for r in read_rows(journal, {"session"})
        if r.payload.get("state") == "started" and r.payload.get("session") == session
    ]
    try:
        note = json.loads(anchor_path(journal).read_text())
    except (OSError, ValueError):
        return False
    return bool(started) and not note.get("closed") and note["seq"] >= started[0]


def _session_started(journal: Path, session: int) -> bool:
    return any(
        r.payload.get("state") == "started" and r.payload.get("session") == session
        for r in read_rows(journal, {"session"})
    )


async def test_the_anchor_follows_the_committed_rows_while_the_engine_runs(tmp_path: Path) -> None:
    """A crash image (the files as they are on disk while the writer runs) whose tail is cut is
    refused: the anchor names committed rows before any clean close."""
    path = tmp_path / "a" / JOURNAL_FILE
    journal = await Journal.open(path)
    journal.anchor_every_s = 0.0  # every commit, for the test
    try:
        for i in range(20):
            await journal.append_durable("note", i, {"i": i})
        await asyncio.sleep(0.2)
        image = tmp_path / "image"
        image.mkdir()
        for src in path.parent.iterdir():
            (image / src.name).write_bytes(src.read_bytes())  # the WAL and the anchor too
    finally:
        await journal.close()
    copy = image / JOURNAL_FILE
    assert verify_journal(copy).ok
    conn = sqlite3.connect(copy)
    conn.execute("DELETE FROM journal WHERE seq > 15")
    conn.commit()
    conn.close()
    report = verify_journal(copy)
    assert not report.ok and report.first_bad_seq == 16 and "reached row 20" in report.problem


async def test_a_row_the_start_refuses_is_refused_by_verify_too(tmp_path: Path) -> None:
    """Found: a fill at a negative price under an intact chain (an edit that re-hashed the
    chain, or a writer's bug) stopped every start with "cannot restore: journal row N ...",
    which pointed at `cockpit verify`; verify said "ok: hash chain intact". Both now refuse it,
    naming the same row."""
    data_dir = tmp_path / "data"
    journal = await Journal.open(data_dir / JOURNAL_FILE)
    try:
        fill = Fill("f1", "c1", "alpha", "BTC/USDT", "sim", Side.BUY, 0.01, -5.0, 0.0,
                    Liquidity.TAKER, 1)  # fmt: skip
        seq = await journal.append_durable("fill", 1, {"fill": fill.to_dict()})
    finally:
        await journal.close()
    assert verify_journal(data_dir / JOURNAL_FILE).ok  # the chain itself is intact

    with pytest.raises(RestoreError, match=f"journal row {seq} \\(fill\\): fill price") as start:
        await Engine(scripted_config(data_dir), data_dir).start()
    verify = await asyncio.to_thread(run, "verify", "--data-dir", str(data_dir), timeout=WAIT_S)
    assert verify.returncode == 1
    line = _one_line(verify.stderr)
    assert f"journal row {seq} (fill): fill price" in line
    assert str(start.value).split(";")[0] in line  # the same words as the start's refusal


async def test_a_journal_of_a_newer_format_is_refused_not_misread(tmp_path: Path) -> None:
    """Found: the journal carried no format, so a journal written by a newer cockpit (rows or
    states this one does not know: a kill switch it cannot read restores as none) was restored
    as if it were its own. A journal now carries its format (SQLite's user_version); a newer
    one is refused by the start and by verify, in one line, before anything is written."""
    data_dir = tmp_path / "data"
    path = data_dir / JOURNAL_FILE
    journal = await Journal.open(path)
    try:
        await journal.append_durable("note", 1, {"hello": "world"})
    finally:
        await journal.close()
    conn = sqlite3.connect(path)
    newest = journal_module.JOURNAL_FORMAT
    assert conn.execute("PRAGMA user_version").fetchone()[0] == newest
    conn.execute(f"PRAGMA user_version={newest + 1}")
    conn.commit()
    conn.close()
    before = path.read_bytes()

    with pytest.raises(JournalBroken, match="written by a newer cockpit"):
        await Engine(scripted_config(data_dir), data_dir).start()
    verify = await asyncio.to_thread(run, "verify", "--data-dir", str(data_dir), timeout=WAIT_S)
    assert verify.returncode == 1 and "newer cockpit" in _one_line(verify.stderr)
    assert path.read_bytes() == before


def _io_error() -> sqlite3.OperationalError:
    """What SQLite raises when it cannot make the journal's -shm file on a full disk (seen on a
    1 MB tmpfs: SQLITE_IOERR, "disk I/O error"); injected, as a full disk needs root to mount."""
    exc = sqlite3.OperationalError("disk I/O error")
    exc.sqlite_errorcode = 10  # type: ignore[attr-defined]
    exc.sqlite_errorname = "SQLITE_IOERR"  # type: ignore[attr-defined]
    return exc


async def test_a_disk_that_cannot_be_read_at_start_is_not_called_a_broken_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found: a start on a full disk (an intact journal, stopped cleanly; the read needs a -shm
    file there is no room for) said "the journal does not verify (... cannot open (disk I/O
    error))", and so did `cockpit verify`: the words for an edited journal, whose fix in the
    troubleshooting table is to put back a good copy, over a journal that was fine. Both still
    refuse (nothing is restored or sent), and now say the storage failed."""
    data_dir = tmp_path / "data"
    journal = await Journal.open(data_dir / JOURNAL_FILE)
    try:
        await journal.append_durable("note", 1, {"hello": "world"})
    finally:
        await journal.close()

    def cannot_open(path: object) -> sqlite3.Connection:
        raise _io_error()

    monkeypatch.setattr(journal_module, "_connect_ro", cannot_open)
    with pytest.raises(journal_module.JournalError) as start:
        await Engine(scripted_config(data_dir), data_dir).start()
    assert not isinstance(start.value, JournalBroken)
    message = str(start.value)
    assert "does not verify" not in message and "storage failed" in message
    assert "nothing was restored or sent" in message and "disk I/O error" in message

    from cockpit.cli import main

    assert main(["verify", "--data-dir", str(data_dir)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("journal unreadable:") and "storage failed" in line
    assert "broken" not in line


def test_a_wal_left_without_its_journal_is_not_taken_in_by_a_new_one(tmp_path: Path) -> None:
    """Found: journal.sqlite deleted after a kill -9 (its anchor too), its -wal file left
    behind. The start restored nothing (no journal), then created a new journal there, and
    SQLite, which does not check which database a -wal file belongs to, took the old rows in
    as the new journal's: the engine ran on an empty state over a journal holding the old
    session, and numbered its session (and so its client order ids) 1 again. Now the start and
    `cockpit verify` refuse, naming the -wal file; nothing is written."""
    data_dir = tmp_path / "data"
    journal = data_dir / JOURNAL_FILE
    wal = data_dir / (JOURNAL_FILE + "-wal")
    argv = ["engine", "--data-dir", str(data_dir), "--socket", str(tmp_path / "s.sock")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cockpit", *argv],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while not (journal.exists() and _session_started(journal, 1)):
            assert proc.poll() is None, "the engine exited before its session started"
            assert time.monotonic() < deadline, "timed out waiting for the session to start"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(timeout=WAIT_S)
    assert wal.stat().st_size > 0
    journal.unlink()
    anchor_path(journal).unlink(missing_ok=True)
    before = wal.read_bytes()

    start = _engine_for_a_second(data_dir, tmp_path / "s.sock")
    assert start.returncode == 1
    line = _one_line(start.stderr)
    assert "journal.sqlite-wal is there without journal.sqlite" in line
    assert not journal.exists() and wal.read_bytes() == before  # nothing created or merged

    verify = run("verify", "--data-dir", str(data_dir), timeout=WAIT_S)
    assert verify.returncode == 1
    assert "journal.sqlite-wal is there without journal.sqlite" in _one_line(verify.stderr)


async def test_no_file_the_engine_writes_in_its_data_dir_is_written_through_a_symlink(
    tmp_path: Path,
) -> None:
    """Found: engine.lock was opened through a symlink and truncated for the pid, so a link
    planted as engine.lock (the data directory is not checked for who else may write it)
    emptied the file it pointed at, the engine starting as if nothing happened; the anchor's
    and the KILL file's temporary files were opened the same way. Now a symlinked engine.lock
    stops the start (one line naming it) and the temporary files replace a link, never follow
    it."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")

    (data_dir / "engine.lock").symlink_to(victim)
    with pytest.raises(OSError, match=r"engine\.lock is a symbolic link"):
        await Engine(scripted_config(data_dir), data_dir).start()
    assert victim.read_text() == "precious\n"
    (data_dir / "engine.lock").unlink()

    anchor = anchor_path(data_dir / JOURNAL_FILE)
    anchor.with_name(anchor.name + ".tmp").symlink_to(victim)
    kill_tmp = data_dir / f".KILL.{os.getpid()}.tmp"
    kill_tmp.symlink_to(victim)
    engine = Engine(scripted_config(data_dir), data_dir)
    await engine.start()
    try:
        assert raise_kill_file(engine.kill_file, "halt")[0]
    finally:
        await engine.stop()
    assert victim.read_text() == "precious\n"
    assert verify_journal(data_dir / JOURNAL_FILE).ok  # the anchor was written, as a file
    assert (data_dir / "KILL").read_text() == "halt\n" and not kill_tmp.exists()


async def test_a_journal_moved_away_under_a_running_engine_blocks_it(tmp_path: Path) -> None:
    """Found: with journal.sqlite moved or deleted while the engine ran (an `rm -rf data`, a
    restore from backup over a live engine), SQLite went on writing the old file, which the
    OS keeps only until the process exits: every intent, fill and kill after it was "durable"
    in a file the next start never reads, and the engine traded on. Now the first commit after
    it fails the journal: BLOCKED with the reason, no order sent, a kill kept in the KILL file,
    and what was recorded before it is there after a restart."""
    from tests.test_journal_failure import blocked_and_killed_by_file, feed, started

    data_dir = tmp_path / "data"
    journal = data_dir / JOURNAL_FILE
    engine = await started(data_dir)
    try:
        await feed(engine, 200)
        await engine.committed()
        moved = data_dir / "moved.sqlite"
        journal.rename(moved)
        await blocked_and_killed_by_file(engine, "was removed while the engine wrote it")
    finally:
        await engine.stop()
    moved.rename(journal)  # put back: what was recorded before the move is all there
    assert verify_journal(journal).ok
    again = await started(data_dir)
    try:
        kill = again.snapshot(trace=0)["kill_switch"]
        assert kill["engaged"] and kill["source"] == "file"
    finally:
        await again.stop()


# A process of the same user that catches SIGUSR1 (as many daemons do: log reopening, progress
# reports) and says so in a file: what a crashed engine's pid may belong to some time later.
_DECOY = """
import pathlib, signal, sys, time
mark = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGUSR1, lambda *_: mark.write_text("signalled"))
pathlib.Path(sys.argv[2]).write_text("ready")
time.sleep(60)
"""


def test_a_kill_after_a_crash_never_signals_whoever_has_the_dead_engines_pid(
    tmp_path: Path,
) -> None:
    """Found: a kill -9 leaves the socket file, its .pid and engine.lock naming the dead
    engine's pid. Once the OS gave that pid to another process of the user that catches
    SIGUSR1, `cockpit kill` fell back to it, signalled that stranger and exited 0 ("fell back:
    sent SIGUSR1 ..."), telling the trader a dead engine had its kill. Now a pid from a file is
    signalled only while it holds the data directory's lock: here the KILL file is written
    (the kill holds at the next start) and the exit is 3, no engine reached."""
    import socket

    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    sock = run_dir / "e.sock"
    mark, ready = tmp_path / "signalled", tmp_path / "ready"
    decoy = subprocess.Popen([sys.executable, "-c", _DECOY, str(mark), str(ready)])
    try:
        deadline = time.monotonic() + WAIT_S
        while not ready.exists():
            assert time.monotonic() < deadline and decoy.poll() is None
            time.sleep(0.02)
        # What the crashed engine left, its pid now the decoy's.
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(sock))
        stale.close()  # a socket file nothing listens on
        (run_dir / "e.sock.pid").write_text(f"{decoy.pid}\n")
        (data_dir / "engine.lock").write_text(f"{decoy.pid}\n")

        kill = run(
            "kill", "--socket", str(sock), "--data-dir", str(data_dir), "--reason", "crash",
            timeout=WAIT_S,
        )  # fmt: skip
        time.sleep(0.3)  # a signal, had one been sent, is handled by now
        assert not mark.exists(), "cockpit kill signalled a process that is not the engine"
        assert kill.returncode == 3, kill.stdout + kill.stderr
        assert (data_dir / "KILL").read_text() == "halt\n"
        assert "no running engine found" in kill.stderr
    finally:
        decoy.kill()
        decoy.wait(timeout=WAIT_S)


@pytest.mark.parametrize("name", [JOURNAL_FILE, JOURNAL_FILE + ".anchor"])
def test_a_fifo_named_like_the_journal_or_its_anchor_is_refused_not_waited_on(
    tmp_path: Path, name: str
) -> None:
    """Found: the data directory's lock opens the journal to lock its inode too, and every
    start and verify read the anchor whole; a FIFO by either name (a `mkfifo` meant for a log
    pipe, a restore script's mistake) blocked that open for ever, before the engine said
    anything, and SIGTERM could not stop it (the open resumes after the signal). Now the start
    and verify refuse it in one line, exit 1."""
    data_dir = tmp_path / "data"
    if name == JOURNAL_FILE:
        data_dir.mkdir(mode=0o700)
    else:  # an engine's journal, its anchor then replaced
        assert _engine_for_a_second(data_dir, tmp_path / "s.sock").returncode == 0
        (data_dir / name).unlink()
    os.mkfifo(data_dir / name)
    start = run(
        "engine", "--data-dir", str(data_dir), "--socket", str(tmp_path / "s.sock"),
        "--for", "1", timeout=20,
    )  # fmt: skip
    assert start.returncode == 1
    assert "not a regular file" in _one_line(start.stderr)
    verify = run("verify", "--data-dir", str(data_dir), timeout=20)
    assert verify.returncode == 1 and "not a regular file" in _one_line(verify.stderr)


async def test_an_anchor_write_the_disk_never_finishes_counts_as_a_stuck_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The anchor is written by the journal's writer between commits: a disk that stops
    answering there holds every later commit back, so it must show in commit_age_s (which
    stops the heartbeat and systemd's watchdog) as a stuck commit does."""
    import threading

    release = threading.Event()

    def stuck_anchor(path: object, seq: int, digest: str) -> None:
        release.wait(WAIT_S)

    journal = await Journal.open(tmp_path / JOURNAL_FILE)
    monkeypatch.setattr(journal_module, "write_anchor", stuck_anchor)
    try:
        await journal.append_durable("note", 1, {"i": 1})  # durable before the anchor
        for _ in range(int(WAIT_S / 0.05)):
            if journal.commit_age_s() >= 0.3:
                break
            await asyncio.sleep(0.05)
        assert journal.commit_age_s() >= 0.3
    finally:
        release.set()
        await journal.close()
    assert journal.commit_age_s() == 0.0


@pytest.mark.parametrize("mode, refused", [(0o777, True), (0o703, True), (0o775, False)])
def test_a_data_dir_any_user_may_write_is_refused_before_anything_is_written(
    tmp_path: Path, mode: int, refused: bool
) -> None:
    """Found (review-e's leftover): a data directory every user may write into was taken: any
    user could put back an older journal with its anchor, delete the KILL file or plant a link
    where the engine writes. Such a directory is refused in one line, exit 2, before the lock
    file or the journal is written; a group-writable one (a umask of 002 with user-private
    groups) still starts."""
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, mode)
    with tempfile.TemporaryDirectory(prefix="ck", dir="/tmp") as private:  # the socket away
        sock = Path(private) / "e.sock"  # (as with $XDG_RUNTIME_DIR): its own check not asked
        done = run(
            "engine", "--data-dir", str(data), "--socket", str(sock), "--for", "0.5", timeout=60
        )
    if refused:
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "chmod o-w" in lines[0] and "Traceback" not in done.stderr
        assert not list(data.iterdir())  # nothing written
    else:
        assert done.returncode == 0, done.stderr
        assert (data / "journal.sqlite").exists()
