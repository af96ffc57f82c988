"""review-late: the changes merged in the last hour (fleets bound to a data dir, the docs
review's kill fallback, venue clocks' second round) attacked as a hostile checker would. Each
test pins a hole found there, failing before its fix.

Attacks that held (no test added):
- a kill through a forwarded socket (a relay for `ssh -L`) with the tunnel down still never
  signals the forwarder: it neither holds nor has open the socket's lock file;
- `cockpit kill --data-dir` for a stuck engine on $XDG_RUNTIME_DIR's socket: the data dir's
  lock names it, signalled; `--socket` with `--data-dir` of another engine: skipped;
- a data dir given with a trailing slash or through a symlink: one engine for the fleet's
  twins, its socket found again (samefile / resolve), its KILL file the same file;
- an engine restarted under a fleet or `attach --data-dir` (new run, same data dir): its
  info file is written before its first welcome and a crash's is removed before it binds,
  so the bound client takes the new run ("reconnected to a new engine run");
- simulated markets, replays and backtests: no venue clocks, venue_lag 0, every time shown
  as journaled (tests/test_tui_snapshots.py unchanged);
- a restart: venue clocks start empty, venue_lag 0 until quotes come; restored limits are
  judged on the engine's clock until their venue quotes;
- two venues: `cockpit approvals --json` expires_ts - now is the time left on the request's
  venue; approving is by id and intent hash, neither of which the shift touches;
- SIGUSR2 from the package's first line: `cockpit engine` keeps the do-nothing handler for
  its whole run (only in-process test runs restore the default);
- breakers: only the order the engine voids at the send (``_voiding``) is exempt; a venue's
  own rejects still count toward consecutive_rejects;
- a walk-forward training window inside a gap of the data: "(none: sharpe n/a)", the rows
  ran without data (no trades), not an error hidden by the report;
- `kill --config` with one candidate folder running an engine: that one; none: the working
  folder's, as before.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cockpit.cli import main as cli_main
from tests.test_review_venueclock import MS, two_venues
from tests.test_safety_engine import (
    BTC,
    Harness,
    buy,
    harnesses,  # noqa: F401  (the fixture the tests below take)
)

WAIT = 30.0


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A private directory with a short path (a socket's path is at most 107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="reviewlate-", dir="/tmp"))
    os.chmod(d, 0o700)
    try:
        yield d
    finally:
        import shutil

        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------ `cockpit kill`'s fallback signal

# An engine whose event loop is stuck (it accepts, never says welcome) that catches SIGUSR1 and
# notes it, with the files the engine keeps beside its socket: ``<socket>.pid`` and
# ``<socket>.json`` (argv[4]: the pid and data dir they name) and the flock on
# ``<socket>.lock`` it holds for as long as it runs.
_STUCK_ENGINE = r"""
import fcntl, json, os, pathlib, signal, socket, sys
mark, path, ready = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
pid, data_dir = sys.argv[4].split(",")
signal.signal(signal.SIGUSR1, lambda *_: mark.write_text("signalled"))
fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(8)
pathlib.Path(path + ".pid").write_text(f"{pid or os.getpid()}\n")
info = {"pid": int(pid or os.getpid()), "socket": path, "data_dir": data_dir, "sigusr1": True}
pathlib.Path(path + ".json").write_text(json.dumps(info))
ready.write_text("ready")
held = []
while True:
    conn, _ = srv.accept()
    held.append(conn)
"""


@contextlib.contextmanager
def stuck_engine(d: Path, names: str = ",") -> Iterator[tuple[Path, Path]]:
    sock, mark, ready = d / "e.sock", d / "signalled", d / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", _STUCK_ENGINE, str(mark), str(sock), str(ready), names]
    )
    try:
        deadline = time.monotonic() + WAIT
        while not ready.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        yield sock, mark
    finally:
        proc.kill()
        proc.wait(timeout=WAIT)


def _kill(sock: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = cli_main(["kill", "--socket", str(sock), "--timeout", "1", "--reason", "stuck"])
    out = capsys.readouterr()
    return rc, out.out + out.err


def _signalled(mark: Path) -> bool:
    deadline = time.monotonic() + WAIT
    while not mark.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_stuck_engine_whose_pid_files_a_tmp_cleaner_removed_is_still_signalled(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: `cockpit kill` "gets through ... SIGUSR1"; operations.md: a socket under /tmp
    loses files to a tmp cleaner (tmpwatch, tmpreaper remove regular files untouched for days,
    and leave the socket). With ``<socket>.pid`` and ``<socket>.json`` gone, the fallback no
    longer signalled the process listening at the socket (SO_PEERCRED): "not the engine that
    wrote e.sock.pid (a forwarded socket?): not signalled", exit 3, the stuck engine trading on.
    The engine still holds its flock on the socket's lock file (open, even once unlinked): that
    is the engine, never a forwarder. Now that is proof enough: signalled, exit 0."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    with scratch() as d:
        monkeypatch.chdir(d)
        with stuck_engine(d) as (sock, mark):
            for name in ("e.sock.pid", "e.sock.json", "e.sock.lock"):
                (d / name).unlink()
            rc, out = _kill(sock, capsys)
            assert rc == 0, out
            assert _signalled(mark), out
            assert "sent SIGUSR1" in out


def test_an_engine_in_another_pid_namespace_is_signalled_by_its_lock(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An engine in a container, its socket mounted on the host: the ``.pid`` and ``.json`` it
    wrote name its pid in the container (1, 7) and the data dir as the container sees it, while
    SO_PEERCRED gives the host's pid. The fallback found no match and signalled nobody (exit 3,
    "a forwarded socket?"); before the docs review it signalled the listener. The flock on
    ``<socket>.lock`` is shown in /proc/locks with the pid as the host sees it: now the
    listener holding it is the engine, and it is signalled (never the file's pid 7)."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    with scratch() as d:
        monkeypatch.chdir(d)
        with stuck_engine(d, "7,/srv/in-the-container/data") as (sock, mark):
            rc, out = _kill(sock, capsys)
            assert rc == 0, out
            assert _signalled(mark), out
            assert "sent SIGUSR1" in out and not any(f"pid 7{c}" in out for c in " .;,:")


# --------------------------------------------------------------------------- venue clocks


async def test_one_venue_shows_its_requests_times_as_the_journal_has_them(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One venue (paper on a live venue's data): its clock is the engine's, so the snapshot's
    times must be the journal's, unchanged. Found: the engine's clock, moved on by the watch's
    tick (the last stamp plus the time since), ran 0.2 s ahead of the venue's next quote, whose
    stamp came 0.2 s later than the estimate (latency grew); every snapshot then moved the
    pending request's created_ts and expires_ts by that gap, different at each pull: `cockpit
    approvals --json` disagreed with the journal's request (and with itself a second later),
    and the countdown showed more than the engine's clock said was left. Now a venue alone is
    not shifted: exactly the journal's times."""
    v = await two_venues(harnesses, data_dir, monkeypatch, 0.0)
    h = v.h
    assert await v.quote(BTC, 60_000.0) is not None  # b never quotes: one venue's clock
    v.run(1.0)
    await v.tick()  # the engine's clock: the stamp plus the second since
    v.ahead = -200 * MS  # the next quote is stamped 0.2 s before the estimate
    h.core.slots[("beta", BTC)].strategy.script.append(buy())
    assert await v.quote(BTC, 60_000.0) is not None
    (pending,) = h.core.approvals.pending()
    assert h.core.venue_lag(BTC) == 0
    snap = h.engine.snapshot(trace=0, curve=0)
    (shown,) = snap["approvals"]
    assert (shown["created_ts"], shown["expires_ts"]) == (pending.created_ts, pending.expires_ts)
    await h.engine.journal.flush()
    (row,) = h.rows("approval_requested")
    assert row.payload["approval"]["expires_ts"] == shown["expires_ts"], row.payload


# An engine holding its data directory's lock (engine.lock names it), its loop stuck, with no
# socket of its own at DATA_DIR/cockpit.sock (it listens elsewhere: the user unit's runtime
# directory); it catches SIGUSR1 and notes it.
_LOCKED_ENGINE = r"""
import pathlib, signal, sys, time
from engine.datadir import DataDirLock
mark, data, ready = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
signal.signal(signal.SIGUSR1, lambda *_: mark.write_text("signalled"))
lock = DataDirLock(data)
lock.acquire()
ready.write_text("ready")
while True:
    time.sleep(1)
"""


def test_a_crashed_engines_pid_file_never_hides_the_engine_holding_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: `cockpit kill` tries "SIGUSR1 to the pid file" and signals a pid from a file
    "only while it holds the data directory's lock". An engine that crashed once left
    DATA_DIR/cockpit.sock and its .pid; the engine now running on that data dir listens
    elsewhere (the user unit's $XDG_RUNTIME_DIR socket; cron has no such variable) and its loop
    is stuck. `cockpit kill --data-dir DATA_DIR` found the old pid, saw it hold nothing and
    stopped there: engine.lock, which names the running engine, was never read ("no running
    engine found", exit 3, the engine signalled by nobody). Now the lock's own pid is tried
    after a stale one: signalled, exit 0."""
    import socket as socketlib

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    with scratch() as d:
        monkeypatch.chdir(d)
        data = d / "data"
        data.mkdir(mode=0o700)
        old = subprocess.Popen([sys.executable, "-c", "pass"])
        old.wait(timeout=WAIT)  # a pid that was the crashed engine's
        stale = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        stale.bind(str(data / "cockpit.sock"))
        stale.close()  # the socket file a crash leaves: nothing listens
        (data / "cockpit.sock.pid").write_text(f"{old.pid}\n")
        mark, ready = d / "signalled", d / "ready"
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        proc = subprocess.Popen(
            [sys.executable, "-c", _LOCKED_ENGINE, str(mark), str(data), str(ready)], env=env
        )
        try:
            deadline = time.monotonic() + WAIT
            while not ready.exists():
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.02)
            rc = cli_main(["kill", "--data-dir", str(data), "--timeout", "1", "--reason", "r"])
            out = capsys.readouterr()
            assert rc == 0, out
            assert _signalled(mark), out
            assert f"sent SIGUSR1 to pid {proc.pid}" in out.out
        finally:
            proc.kill()
            proc.wait(timeout=WAIT)


def test_a_crash_left_socket_in_the_data_dir_never_hides_the_user_units_engine(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """operations.md: a client without $XDG_RUNTIME_DIR (cron) finds the user unit's engine at
    /run/user/UID/cockpit/default.sock when that engine names the data dir. It looked there
    only when DATA_DIR/cockpit.sock did not exist: the socket file an engine that once ran
    there on its own left at a crash (nothing listens) hid the running engine, `cockpit status
    --data-dir` said "not reachable" (exit 3) and `cockpit kill --data-dir` could only fall
    back. Now a socket file nothing listens on is no engine: the runtime directory's is taken."""
    import socket as socketlib

    from engine import control

    with scratch() as d:
        data = d / "data"
        runtime = d / "run" / str(os.getuid())
        for path in (data, runtime):
            path.mkdir(parents=True, mode=0o700)
        stale = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        stale.bind(str(data / "cockpit.sock"))
        stale.close()  # what a crashed engine started without the variable left
        env = dict(
            os.environ,
            PYTHONPATH=str(Path(__file__).resolve().parents[1]),
            XDG_RUNTIME_DIR=str(runtime),
        )
        engine = subprocess.Popen(
            [sys.executable, "-m", "cockpit", "engine", "--data-dir", str(data), "--for", "120"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            sock = runtime / "cockpit" / "default.sock"
            deadline = time.monotonic() + WAIT
            while not (sock.exists() and (runtime / "cockpit" / "default.sock.json").exists()):
                assert engine.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)  # cron
            monkeypatch.setattr(control, "LOGIND_RUNTIME_ROOT", str(d / "run"))
            capsys.readouterr()
            assert cli_main(["status", "--data-dir", str(data), "--json"]) == 0, capsys.readouterr()
            assert '"kill_switch"' in capsys.readouterr().out
            assert cli_main(["kill", "--data-dir", str(data), "--reason", "from cron"]) == 0
            assert f"through the control socket {sock}" in capsys.readouterr().out
        finally:
            engine.terminate()
            engine.wait(timeout=WAIT)


# --------------------------------------------------------------------------- fleets


def test_a_fleet_of_data_dirs_loads_and_kills_while_the_default_socket_is_free(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """operations.md: an engine listed by its data_dir "is found again at every dial", one not
    there yet "joins when it appears", and `kill --all --fleet` tries each engine as `cockpit
    kill` would. Engine A (the first started) held $XDG_RUNTIME_DIR's default socket, B listens
    in its own data dir. A stopped: the default socket is free, so A's and B's entries were
    both taken to use it at load, and the fleet was refused as "both use the socket ...; list
    each engine once" (exit 2): `cockpit kill --all` killed nothing, B traded on, and `attach
    --fleet` would not open (nor with no engine up yet). A data_dir entry is one engine by its
    data dir (its socket is found at each dial), not by the socket it maps to at load: now B
    confirms, A's KILL file is written, exit 3."""
    from cockpit.fleet import FleetError, load_fleet
    from tests.test_control_support import ThreadEngine

    with scratch() as d:
        runtime = d / "xdg"
        (runtime / "cockpit").mkdir(parents=True, mode=0o700)
        runtime.chmod(0o700)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        a_dir, b_dir = d / "a", d / "b"
        a_dir.mkdir(mode=0o700)
        fleet = d / "fleet.toml"
        fleet.write_text(f'[engines.a]\ndata_dir = "{a_dir}"\n[engines.b]\ndata_dir = "{b_dir}/"\n')
        assert len(load_fleet(fleet)) == 2  # no engine up yet: both join when they appear
        with ThreadEngine(b_dir, b_dir / "cockpit.sock") as b:
            capsys.readouterr()
            rc = cli_main(["kill", "--all", "--fleet", str(fleet), "--reason", "desk stop"])
            out = capsys.readouterr()
            assert b.engine is not None and b.engine.core is not None
            b_kill = b.engine.core.safety.kill.level
        assert b_kill == "halt", out
        assert rc == 3, out
        assert (a_dir / "KILL").read_text().strip() == "halt"
        # One data dir listed twice (however spelled) is still one engine twice: refused.
        fleet.write_text(
            f'[engines.a]\ndata_dir = "{a_dir}"\n[engines.b]\ndata_dir = "{a_dir}/../a/"\n'
        )
        with pytest.raises(FleetError, match="both use the data dir"):
            load_fleet(fleet)


# --------------------------------------------------------------------------- data dir beside


def test_a_kill_by_config_says_so_when_engines_run_on_two_of_its_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: with --config, "the one an engine runs on now wins". From home, where an
    engine runs on ./data, `cockpit kill --config /srv/bot/prod.toml` (data_dir = "data")
    while prod's engine runs beside the config too: both folders run an engine, the kill went
    to home's, said done, and nothing hinted that prod's engine, the one named by the file
    typed, traded on. Now the kill (unchanged: the working folder's, as an engine started from
    here would use) warns, naming the other folder and the command that stops it."""
    from cockpit.oneshot import kill_plan
    from engine.datadir import JOURNAL_FILE, DataDirLock

    bot, home = tmp_path / "bot", tmp_path / "home"
    for d in (bot / "data", home / "data"):
        d.mkdir(parents=True, mode=0o700)
        (d / JOURNAL_FILE).write_bytes(b"")
    config = bot / "prod.toml"
    config.write_text('[engine]\ndata_dir = "data"\n')
    monkeypatch.chdir(home)
    args = argparse.Namespace(config=str(config), data_dir=None, socket=None)
    locks = [DataDirLock(bot / "data")]
    locks[0].acquire()
    try:
        assert not [w for w in kill_plan(args).warnings if "engines run on" in w]  # one: no doubt
        locks.append(DataDirLock(home / "data"))
        locks[1].acquire()
        plan = kill_plan(args)
    finally:
        for lock in locks:
            lock.release()
    assert plan.data_dir == Path("data")
    (warning,) = [w for w in plan.warnings if "engines run on" in w]
    assert str(bot / "data") in warning
    assert f"cockpit kill --data-dir {bot / 'data'}" in warning
