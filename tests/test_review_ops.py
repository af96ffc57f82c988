"""Running the engine as a service (docs/operations.md), an adversarial review: each test is a
hole an operator on a real server meets, found by running `cockpit engine` the way the docs
and Unix habits do, failing before its fix. Every engine is a real process; every wait is
bounded (tests.test_control_support.WAIT), none is a timing assertion.

Tried and held (no test added):
- SIGTERM twice, and SIGTERM during start-up (after the handlers: a clean stop, exit 0; before
  them, in the interpreter's first second, a death by SIGTERM with nothing written yet).
- SIGUSR1 while the journal is restored (after the loop took it): kept and engaged once the
  state is restored (Engine._early_kill).
- `cockpit engine | head -1`: stdout's reader gone, the engine trades on, exit 0 at the end.
- The socket directory (XDG_RUNTIME_DIR/cockpit, as logind removes /run/user/UID at logout)
  deleted under a running engine: `cockpit status` says not reachable (exit 3) and `cockpit kill
  --data-dir` still reaches it through engine.lock's pid (SIGUSR1) and the KILL file.
- A socket replaced under a running engine: its clean stop removes only its own (inode check).
- A socket served by another uid: the client refuses it before sending its hello (SO_PEERCRED),
  so no other user can pose as the engine to `cockpit kill` or the cockpit.
- umask 022 and 000: data dir files (engine.lock, journal, -wal, -shm, anchor, KILL) and the
  socket's files are 0600, the socket directory 0700 (the directories' parents: see below).
- Two users on one machine: each engine admits its own uid only, a client refuses a socket
  served by another non-root uid, and a KILL file, journal or socket of one is 0600 to the other.
- The view-only key's `restrict` also refuses streamlocal (`ssh -L` of a unix socket)
  forwarding, and its forced command replaces subsystem requests (sftp) too (OpenSSH).
- A full disk at start (a 256 KB tmpfs): one line, exit 1; the next start with space verifies.
- The forced command of the view-only key: cockpit never reads SSH_ORIGINAL_COMMAND; textual's
  TEXTUAL_* variables are not passed by sshd (AcceptEnv LANG LC_*) nor sudo (env_reset); the
  console script puts its own bin directory, not the cwd, first on sys.path (a viewer's cwd
  under sudo cannot plant a module); the engine refuses every viewer command whatever is typed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.journal import verify_journal
from tests.conftest import REPO
from tests.test_control_support import WAIT, short_dir

ENV = dict(os.environ, PYTHONPATH=str(REPO))
ENV.pop("XDG_RUNTIME_DIR", None)


@pytest.fixture
def where(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(data dir, socket path) for one engine; the socket in a short private directory."""
    with short_dir() as sd:
        data = tmp_path / "data"
        data.mkdir(mode=0o700)
        yield data, sd / "e.sock"


def _engine(data: Path, sock: Path, *extra: str, **popen: Any) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "cockpit", "engine", "--data-dir", str(data)]
    return subprocess.Popen(
        [*argv, "--socket", str(sock), *extra], cwd=REPO, env=ENV, text=True, **popen
    )


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        assert proc.poll() is None, f"the engine ended before its socket: {proc.returncode}"
        assert time.monotonic() < deadline, "the engine never opened its socket"
        time.sleep(0.05)


def _status(sock: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cockpit", "status", "--json", "--socket", str(sock)],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


def _stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    return proc.returncode


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


# --------------------------------------------------------------------------- SIGHUP and nohup


def _ignore_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


@pytest.mark.parametrize("nohup", [True, False], ids=["nohup", "terminal"])
def test_nohup_keeps_the_engine_running_when_the_session_hangs_up(
    where: tuple[Path, Path], tmp_path: Path, nohup: bool
) -> None:
    """`nohup cockpit engine &` then logging out: nohup leaves SIGHUP ignored so the engine
    outlives the session, but the engine installed its own SIGHUP handler over it and stopped
    (cleanly) at the hang-up, leaving engine-side exits unwatched until someone noticed. An
    ignored SIGHUP now stays ignored; a terminal's SIGHUP still stops it cleanly."""
    data, sock = where
    out = (tmp_path / "out.log").open("w")
    proc = _engine(
        data,
        sock,
        stdout=out,
        stderr=subprocess.STDOUT,
        preexec_fn=_ignore_sighup if nohup else None,
    )
    try:
        _wait_for(sock, proc)
        proc.send_signal(signal.SIGHUP)
        if nohup:
            for _ in range(2):  # a round trip through the engine's loop after the signal
                assert _status(sock).returncode == 0
            assert proc.poll() is None, "the hang-up stopped a nohup'd engine"
            mask = next(
                row
                for row in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                if row.startswith("SigIgn:")
            )
            assert int(mask.split()[1], 16) >> (signal.SIGHUP - 1) & 1
        else:
            proc.wait(timeout=WAIT)  # the terminal's hang-up: a clean stop
    finally:
        code = _stop(proc)
        out.close()
    assert code == 0
    assert verify_journal(data / "journal.sqlite").ok
    assert _lines(tmp_path / "out.log")[-1]["state"] == "stopped"


# --------------------------------------------------------------------------- SIGUSR1 at start


def signalled_while_loading(name: str) -> str:
    """A `cockpit` (``python -c`` it) that sends itself signal ``name`` while it still loads its
    config: as a person's `kill -USR1` would find it, before the engine installed anything."""
    return f"""
import os, signal, sys
from cockpit import cli

armed = cli._armed


def signalled_first(*args, **kwargs):
    os.kill(os.getpid(), signal.{name})
    return armed(*args, **kwargs)


cli._armed = signalled_first
sys.exit(cli.main(sys.argv[1:]))
"""


def run_signalled_while_loading(name: str, where: tuple[Path, Path], out: Path) -> list[Any]:
    """`cockpit engine --for 1` sent signal ``name`` while it loads: it must exit 0; returns
    its final status lines."""
    data, sock = where
    script = signalled_while_loading(name)
    rest = ["--data-dir", str(data), "--socket", str(sock), "--for", "1"]
    with out.open("w") as f:
        proc = subprocess.run(
            [sys.executable, "-c", script, "engine", *rest],
            cwd=REPO,
            env=ENV,
            stdout=f,
            stderr=subprocess.PIPE,
            text=True,
            timeout=WAIT,
        )
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    return [line for line in _lines(out) if line.get("final")]


def test_sigusr1_while_the_engine_still_loads_engages_the_kill(
    where: tuple[Path, Path], tmp_path: Path
) -> None:
    """docs: SIGUSR1 engages the kill switch. Until the event loop installed its handler (the
    config and the engine's modules load first: seconds on a busy host) SIGUSR1 kept its
    default action and terminated the engine: no kill engaged, and a service with
    Restart=on-failure started it again trading. `kill -USR1` and `systemctl kill -s USR1` are
    what a person reaches for at exactly that moment (an engine just restarted misbehaving)."""
    final = run_signalled_while_loading("SIGUSR1", where, tmp_path / "out.log")
    assert final and final[-1]["kill_switch"] == "halt"
    assert final[-1]["trading_state"] == "HALTED"


# --------------------------------------------------------------------------- stderr's reader


def test_a_gone_stderr_reader_does_not_stop_the_engine(
    where: tuple[Path, Path], tmp_path: Path
) -> None:
    """`cockpit engine 2>&1 | head -1`, or a log collector restarted under it: the engine's
    stdout lines survived their reader going away (it stops printing, the journal has all), but
    its stderr line `control socket: PATH` raised BrokenPipeError right after the start, and
    the engine stopped with exit 0 (so systemd's Restart=on-failure did not start it again)."""
    data, sock = where
    out = (tmp_path / "out.log").open("w")
    proc = _engine(data, sock, "--for", "2", stdout=out, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    proc.stderr.close()  # the reader is gone before the engine says anything
    try:
        code = proc.wait(timeout=WAIT)
    finally:
        _stop(proc)
        out.close()
    assert code == 0
    final = [line for line in _lines(tmp_path / "out.log") if line.get("final")]
    assert final, "the engine stopped before its run's end"
    assert verify_journal(data / "journal.sqlite").ok


# --------------------------------------------------------------------------- the socket removed


def test_a_removed_socket_directory_is_served_again(where: tuple[Path, Path]) -> None:
    """logind removes /run/user/UID (the default socket's home) when its user's last session
    ends without linger; a tmp cleaner or a person removes files too. The engine (in tmux, under
    nohup) went on trading with no socket: `cockpit attach`, `approve` and `release` said "no
    engine socket ... is `cockpit engine` running?" until a restart. It now looks every second
    and serves its path again, in a directory made again 0700."""
    data, sock = where
    sock = sock.parent / "run" / "e.sock"  # a directory that goes with it, as /run/user/UID
    proc = _engine(data, sock, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(sock, proc)
        assert _status(sock).returncode == 0
        for p in sorted(sock.parent.iterdir()):
            p.unlink()
        sock.parent.rmdir()
        _wait_for(sock, proc)
        assert (sock.parent.stat().st_mode & 0o777, sock.stat().st_mode & 0o777) == (0o700, 0o600)
        again = _status(sock)
        assert again.returncode == 0, again.stderr
        assert json.loads(sock.with_name("e.sock.json").read_text())["pid"] == proc.pid
        killed = subprocess.run(
            [sys.executable, "-m", "cockpit", "kill", "--socket", str(sock), "--reason", "t"],
            cwd=REPO,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert killed.returncode == 0 and "through the control socket" in killed.stdout
    finally:
        code = _stop(proc)
    assert code == 0
    assert sorted(p.name for p in sock.parent.iterdir()) == []  # a clean stop removed them all


async def test_a_path_another_engine_holds_is_left_to_it(data_dir: Path) -> None:
    """The boundary of the above: when the path's lock is held by someone else by the time the
    engine looks (another engine started there meanwhile), the path is theirs: not bound,
    nothing of theirs removed at this engine's stop."""
    import fcntl

    from engine.control import ControlServer, lock_path
    from engine.runtime import Engine
    from tests.test_control_support import approve_config

    engine = Engine(approve_config(data_dir), data_dir)
    await engine.start()
    with short_dir() as d:
        server = ControlServer(engine, d / "run" / "e.sock")
        await server.start()
        try:
            for p in sorted(server.path.parent.iterdir()):
                p.unlink()
            other = os.open(lock_path(server.path), os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            await server._serve_again()
            assert not server.path.exists()
        finally:
            await server.close()
            await engine.stop()
        assert lock_path(server.path).exists()  # the other holder's file is still there
        os.close(other)


# --------------------------------------------------------------------------- root's kill


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


@pytest.mark.skipif(os.geteuid() != 0, reason="root writing into another user's data dir")
@pytest.mark.parametrize("level", ["entries", "flatten"])
def test_root_kill_file_is_readable_by_the_engine(tmp_path: Path, level: str) -> None:
    """`sudo cockpit kill --level flatten --data-dir ~trader/cockpit/data`: the engine admits
    only its own user on the socket, so root's kill falls back to SIGUSR1 and the KILL file,
    which root wrote 0600 and its own. The engine (as trader) could not read it, an unreadable
    KILL file counts as `halt`, and the flatten the command reported written never came
    (and `entries` became a halt). The file now belongs to the data directory's owner."""
    argv = [sys.executable, "-m", "cockpit", "kill", "--level", level, "--reason", "root"]
    with short_dir() as home:
        home.chmod(0o755)  # (nobody must reach the data dir to read the file)
        data = home / "data"
        data.mkdir(mode=0o700)
        os.chown(data, 65534, 65534)
        done = subprocess.run(
            [*argv, "--data-dir", str(data)],
            cwd=REPO,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert done.returncode == 3, done.stderr  # no engine runs: written, not confirmed
        kill = data / "KILL"
        assert (kill.stat().st_uid, kill.stat().st_mode & 0o777) == (65534, 0o600)
        seen = subprocess.run(
            ["cat", str(kill)], preexec_fn=_as_nobody, capture_output=True, text=True, timeout=WAIT
        )
        assert seen.stdout.split() == [level], seen.stderr


# --------------------------------------------------------------------------- attach, no terminal


def test_attach_without_a_terminal_says_so(where: tuple[Path, Path]) -> None:
    """`ssh trader@host cockpit attach` without -t, or the view-only key (its forced command
    runs attach whatever is asked) used for `ssh trader@host cockpit status`: no pty, and the
    cockpit wrote its escape codes into the pipe and held a connection to the engine until
    killed. Now one line, exit 2, naming `ssh -t` and `cockpit status`."""
    data, sock = where
    proc = _engine(data, sock, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(sock, proc)
        for extra in (["--read-only"], []):
            done = subprocess.run(
                [sys.executable, "-m", "cockpit", "attach", *extra, "--socket", str(sock)],
                cwd=REPO,
                env=ENV,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=WAIT,
            )
            assert done.returncode == 2
            assert done.stdout == ""
            assert len(done.stderr.splitlines()) == 1 and "ssh -t" in done.stderr
    finally:
        assert _stop(proc) == 0


# --------------------------------------------------------------------------- umask and parents


def _start_once(data: Path, sock: Path, umask: int | None = None) -> Any:
    argv = [sys.executable, "-m", "cockpit", "engine", "--for", "0.2"]
    return subprocess.run(
        [*argv, "--data-dir", str(data), "--socket", str(sock)],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=WAIT,
        preexec_fn=None if umask is None else (lambda: os.umask(umask)),
    )


def test_under_umask_000_every_directory_the_engine_makes_is_private() -> None:
    """`--data-dir ~/cockpit/data` with ~/cockpit missing, under a umask of 000 (a container's,
    a service's UMask=0000): the data directory itself was made 0700 but its new parent 0777,
    and anyone may rename an entry of a directory they can write: the whole data directory
    could be moved away and an older copy put in its place. Every directory made is 0700."""
    with short_dir() as home:
        data, sock = home / "a" / "b" / "data", home / "r" / "s" / "e.sock"
        done = _start_once(data, sock, umask=0)
        assert done.returncode == 0, done.stderr
        for made in (home / "a", home / "a" / "b", data, home / "r", sock.parent):
            assert made.stat().st_mode & 0o777 == 0o700, made


@pytest.mark.parametrize(("mode", "refused"), [(0o1777, False), (0o777, True), (0o775, False)])
def test_a_data_dir_in_a_directory_anyone_may_write_is_refused(mode: int, refused: bool) -> None:
    """docs: a data directory every user may write into is refused: anyone could put back an
    older journal. One in a directory every user may write into was not, though anyone may move
    it away whole and put another there. Refused unless that directory is sticky (as /tmp is,
    where only the owner may move an entry); group-writable is the owner's choice as before."""
    with short_dir() as home:
        (home / "shared").mkdir()
        (home / "shared").chmod(mode)
        data = home / "shared" / "data"
        data.mkdir(mode=0o700)
        done = _start_once(data, home / "r" / "e.sock")
        if refused:
            assert done.returncode == 2
            assert done.stderr.splitlines() == [
                f"the data directory's parent {home / 'shared'} is mode 0777: any user could "
                f"move {data} away and put another in its place. Run `chmod o-w "
                f"{home / 'shared'}`, or choose a --data-dir elsewhere"
            ]
            assert sorted(p.name for p in data.iterdir()) == []  # nothing written
        else:
            assert done.returncode == 0, done.stderr
