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
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine import journal as journal_module
from engine.journal import (
    Journal,
    JournalBroken,
    read_rows,
    verify_journal,
)
from engine.runtime import JOURNAL_FILE, Engine
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
