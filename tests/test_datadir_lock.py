"""One data directory, one engine: a second engine on a data directory in use stops before it
writes a row (exit 2, naming the pid that holds it), whatever socket it was given, and the
first keeps trading and can still make a kill durable."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cockpit.app import CockpitApp
from cockpit.tui.session import EmbeddedSession
from engine.datadir import LOCK_FILE, DataDirInUse
from engine.journal import Journal, JournalError, read_rows, verify_journal
from engine.runtime import JOURNAL_FILE, Engine
from engine.venues.execution import VenueExecution
from tests.conftest import DEFAULT_CONFIG_PATH, REPO, fast_config
from tests.test_cli import run
from tests.test_control_support import WAIT, short_dir
from tests.test_kill_broken_config import oneshot
from tests.test_venue_runtime import make_testnet_config


def engine_config(tmp_path: Path) -> Path:
    """The shipped config, thirty times faster than real time (trades within seconds)."""
    text = DEFAULT_CONFIG_PATH.read_text()
    text, n = re.subn(r'(?m)^speed = "realtime".*$', "speed = 30.0", text)
    assert n == 1
    path = tmp_path / "engine.toml"
    path.write_text(text)
    return path


def cockpit(*argv: str, timeout: float = WAIT) -> subprocess.CompletedProcess[str]:
    return run(*argv, timeout=timeout)


def status(sock: Path) -> dict[str, Any]:
    """`cockpit status --json`, run in this process: it is polled, and a CLI process a poll
    took the CPU the engines under test needed (the commands under test stay processes)."""
    out = oneshot("status", "--socket", str(sock))
    assert out is not None, f"status failed on {sock}"
    return json.loads(out)


def wait_for(check: Any, what: str) -> Any:
    deadline = time.monotonic() + WAIT  # a bound against hanging, not a speed assertion
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class EngineRun:
    proc: subprocess.Popen[str]
    stderr: str = ""


@contextlib.contextmanager
def engine_process(cfg: Path, data: Path, sock: Path) -> Iterator[EngineRun]:
    """A real `cockpit engine` on ``data`` listening on ``sock``, stopped with SIGTERM on the
    way out (its stderr is then in ``.stderr``)."""
    argv = ["engine", "--config", str(cfg), "--data-dir", str(data), "--socket", str(sock)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cockpit", *argv],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_ = EngineRun(proc)
    try:
        wait_for(sock.exists, "the engine's socket")
        yield run_
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, run_.stderr = proc.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise


@pytest.mark.parametrize("own_socket", [True, False], ids=["own-socket", "same-socket"])
def test_a_second_engine_exits_2_naming_the_pid_and_the_first_keeps_trading(
    tmp_path: Path, own_socket: bool
) -> None:
    cfg = engine_config(tmp_path)
    data = tmp_path / "data"
    with short_dir() as sd:
        sock = sd / "a.sock"
        second_sock = sd / "b.sock" if own_socket else sock
        with engine_process(cfg, data, sock) as run_:
            first = run_.proc
            before = status(sock)
            assert (data / LOCK_FILE).read_text().strip() == str(first.pid)
            # `--for` bounds the second engine on a build without the lock (it would trade).
            second = cockpit(
                "engine",
                "--config",
                str(cfg),
                "--data-dir",
                str(data),
                "--socket",
                str(second_sock),
                "--for",
                "3",
            )
            assert second.returncode == 2, second.stderr
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1, second.stderr
            assert f"pid {first.pid}" in lines[0] and str(data) in lines[0]
            assert "Traceback" not in second.stderr
            # The first keeps trading: its clock and its journal move on, nothing blocks it.
            later = wait_for(
                lambda: (s := status(sock))["seq"] > before["seq"] + 5 and s, "more events"
            )
            assert later["trading_state"]["state"] == "ACTIVE" and not later["blocked"]
            # ... and it can still make a kill durable.
            killed = cockpit("kill", "--reason", "after the second engine", "--socket", str(sock))
            assert killed.returncode == 0 and "through the control socket" in killed.stdout, (
                killed.stdout,
                killed.stderr,
            )
            halted = status(sock)
            assert halted["trading_state"]["state"] == "HALTED" and not halted["blocked"]
    assert first.returncode == 0, run_.stderr
    journal = data / JOURNAL_FILE
    assert verify_journal(journal).ok
    rows = list(read_rows(journal))
    started = [r for r in rows if r.kind == "session" and r.payload["state"] == "started"]
    assert len(started) == 1  # the second engine wrote nothing
    kill = [r.payload["state"]["kill"] for r in rows if r.kind == "safety_state"][-1]
    assert kill["level"] == "halt" and kill["reason"] == "after the second engine"
    assert not (data / "KILL").exists()


async def test_in_one_process_the_second_engine_is_refused_until_the_first_stops(
    data_dir: Path,
) -> None:
    first = Engine(fast_config(data_dir), data_dir)
    await first.start()
    try:
        second = Engine(fast_config(data_dir), data_dir)
        with pytest.raises(DataDirInUse, match=rf"pid {os.getpid()}\b"):
            await second.start()
        assert second.journal is None  # refused before the journal was opened
        await second.stop()  # a refused engine's stop must not drop the holder's lock
        third = Engine(fast_config(data_dir), data_dir)
        with pytest.raises(DataDirInUse):
            await third.start()
    finally:
        await first.stop()
    after = Engine(fast_config(data_dir), data_dir)
    await after.start()  # stop() let go of the directory
    await after.stop()
    sessions = [r for r in read_rows(data_dir / JOURNAL_FILE) if r.kind == "session"]
    assert [r.payload["state"] for r in sessions] == ["started", "stopped"] * 2


async def test_a_venue_engine_takes_the_lock_before_it_reads_the_journal_or_a_venue(
    data_dir: Path,
) -> None:
    holder = Engine(fast_config(data_dir), data_dir)
    await holder.start()
    try:
        venue = Engine(make_testnet_config(data_dir), data_dir)
        assert isinstance(venue.execution, VenueExecution)
        # No keys in the environment and no server: the lock is what refuses it.
        with pytest.raises(DataDirInUse, match=str(data_dir)):
            await venue.start()
        assert venue.journal is None and not venue.execution.brokers
        await venue.stop()
    finally:
        await holder.stop()


async def test_the_embedded_cockpit_refuses_a_data_dir_in_use_with_exit_2(
    data_dir: Path,
) -> None:
    holder = Engine(fast_config(data_dir), data_dir)
    await holder.start()
    try:
        session = EmbeddedSession(fast_config(data_dir), data_dir, free_run=False)
        app = CockpitApp(session=session)
        async with app.run_test(size=(80, 24)) as pilot:
            for _ in range(200):
                if app.return_code is not None:
                    break
                await pilot.pause()
        assert app.return_code == 2
        await session.close()
    finally:
        await holder.stop()


async def test_a_journal_whose_next_seq_another_writer_took_fails_naming_it(
    tmp_path: Path,
) -> None:
    """Below the lock: two writers on one file end in a clear journal error, not a crash."""
    db = tmp_path / "j.sqlite"
    mine = await Journal.open(db)
    await mine.append_durable("a", 1, {})
    other = await Journal.open(db)
    await other.append_durable("b", 2, {})
    with pytest.raises(JournalError, match="already written by another process"):
        await mine.append_durable("c", 3, {})
    assert mine.failed is not None
    with pytest.raises(JournalError):
        mine.append("d", 4, {})
    with pytest.raises(JournalError):
        await mine.close()
    await other.close()
    assert verify_journal(db).ok


async def test_removing_the_lock_file_or_linking_the_journal_unlocks_nothing(
    tmp_path: Path,
) -> None:
    """The lock is on the directory and the journal's inode: `rm engine.lock` (a habit with
    stale lock files) or another data dir whose journal is a symlink to this one's does not
    let a second engine write the journal in use."""
    data_dir = tmp_path / "a"
    first = Engine(fast_config(data_dir), data_dir)
    await first.start()
    try:
        (data_dir / LOCK_FILE).unlink()
        with pytest.raises(DataDirInUse):
            await Engine(fast_config(data_dir), data_dir).start()
        other = tmp_path / "b"
        other.mkdir(mode=0o700)
        (other / JOURNAL_FILE).symlink_to(data_dir / JOURNAL_FILE)
        with pytest.raises(DataDirInUse):
            await Engine(fast_config(other), other).start()
    finally:
        await first.stop()
    assert verify_journal(data_dir / JOURNAL_FILE).ok
    sessions = [r for r in read_rows(data_dir / JOURNAL_FILE) if r.kind == "session"]
    assert [r.payload["state"] for r in sessions] == ["started", "stopped"]


def test_kill_by_data_dir_reaches_an_engine_whose_socket_is_elsewhere(tmp_path: Path) -> None:
    """`cockpit kill --data-dir D` exited 3 ('no running engine found') although the KILL file
    it wrote halted the engine: the engine's pid is in D/engine.lock, wherever its socket is."""
    cfg = engine_config(tmp_path)
    data = tmp_path / "data"
    with short_dir() as sd:
        sock = sd / "elsewhere.sock"
        with engine_process(cfg, data, sock) as run_:
            killed = cockpit("kill", "--reason", "by data dir", "--data-dir", str(data))
            assert killed.returncode == 0, (killed.stdout, killed.stderr)
            assert f"SIGUSR1 to pid {run_.proc.pid}" in killed.stdout
            halted = wait_for(
                lambda: (s := status(sock))["trading_state"]["state"] == "HALTED" and s, "halt"
            )
            assert halted["kill_switch"]["engaged"]
