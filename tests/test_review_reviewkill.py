"""review-kill: `cockpit kill` gets through (README "What the engine promises", the kill rows
of Commands, docs/operations.md "Signals and files"), attacked end to end with real engines
(SIGSTOP, kill -9, a relay standing in for `ssh -L`, two engines, XDG_RUNTIME_DIR set and
unset). Each test pins a hole found there, failing before its fix.

Attacks that held (no test added):
- a real engine SIGSTOPped: `kill --socket`, `--data-dir`, both, and `--level flatten` each
  signal it and write its KILL file (flatten carried, engaged at flatten on SIGCONT), exit 0,
  in about 1.5 s (0.5 s by --data-dir alone); two stuck candidate sockets take about 2.5 s;
- a real engine killed with -9, its pid files and engine.lock naming another live process
  that catches SIGUSR1 (a recycled pid): `--socket`, `--data-dir`, both, `--config`: not
  signalled (the data dir's lock), exit 3 with the KILL file written where it is read;
- two real engines, one on $XDG_RUNTIME_DIR's default socket, one on its own --socket, both
  stopped: `--data-dir A --socket B`'s and `--data-dir B --socket A`'s kill (XDG set and
  unset) signals only the one named by the data dir (checked in /proc's pending signals);
- a Python relay as `ssh -L` with the engine stuck: never signalled, `--socket relay` alone
  exits 3 naming `--data-dir`; with `--data-dir` the engine behind is signalled by its lock;
- `kill --all --fleet` of a data_dir entry, a socket entry and a relay, two engines stuck:
  parallel (1.5 s), both signalled with flatten written, the relay unreachable, exit 3;
- `kill --config` with a relative data_dir from another folder, and through a symlinked
  config from a folder whose ./d holds an old journal: the running engine's data dir, its
  kill_file name from the config;
- `--level FLATTEN`: flatten; `--level flaten`, unknown options: refused, exit 2 (left so:
  tests/test_oneshot.py pins a word that is no level as refused).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cockpit.cli import main as cli_main

WAIT = 30.0

# An unrelated process of the same user that catches SIGUSR1 (and notes it): the pid a crashed
# engine left in its files may belong to such a process now.
_DECOY = r"""
import pathlib, signal, sys, time
mark, ready = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
signal.signal(signal.SIGUSR1, lambda *_: mark.write_text("signalled"))
ready.write_text("ready")
while True:
    time.sleep(1)
"""

# The same, listening at a socket path and never answering: a forwarder (`ssh -L` with its
# remote end stuck) that took the path a crashed engine left, and that engine's pid.
_LISTENING_DECOY = r"""
import os, pathlib, signal, socket, sys, time
mark, ready, path = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
signal.signal(signal.SIGUSR1, lambda *_: mark.write_text("signalled"))
with __import__("contextlib").suppress(FileNotFoundError):
    os.unlink(path)
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(8)
ready.write_text("ready")
held = []
while True:
    conn, _ = srv.accept()
    held.append(conn)
"""


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A private directory with a short path (a socket's path is at most 107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="reviewkill-", dir="/tmp"))
    os.chmod(d, 0o700)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def decoy(d: Path, script: str = _DECOY, *extra: str) -> Iterator[tuple[int, Path]]:
    mark, ready = d / "decoy-signalled", d / "decoy-ready"
    proc = subprocess.Popen([sys.executable, "-c", script, str(mark), str(ready), *extra])
    try:
        deadline = time.monotonic() + WAIT
        while not ready.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        yield proc.pid, mark
    finally:
        proc.kill()
        proc.wait(timeout=WAIT)


def crash_leftovers(sock: Path, pid: int) -> None:
    """What `kill -9` of an engine leaves at its socket path: the socket file (nothing listens),
    ``<socket>.pid`` naming its pid, and ``<socket>.lock`` that nobody holds any more."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(sock))
    srv.close()  # the file stays; connecting is refused
    sock.with_name(sock.name + ".pid").write_text(f"{pid}\n")
    sock.with_name(sock.name + ".lock").write_text("")


def _signalled(mark: Path, settle: float = 0.5) -> bool:
    # A signal is delivered at once; the decoy's handler runs within its next second.
    deadline = time.monotonic() + settle + 1.0
    while time.monotonic() < deadline:
        if mark.exists():
            return True
        time.sleep(0.05)
    return False


def _kill(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = cli_main(["kill", *argv, "--timeout", "1", "--reason", "review"])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_a_crashed_engines_pid_file_without_its_info_file_is_not_a_kill_delivered(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An engine killed with -9 leaves its socket, ``<socket>.pid`` and an unheld
    ``<socket>.lock``; with ``<socket>.json`` gone (a tmp cleaner, a hand), `cockpit kill
    --socket` read the pid from the file and, knowing no data dir to check it against, sent
    SIGUSR1 to whatever process has that pid now: "sent SIGUSR1 to pid N", exit 0, a kill
    reported delivered that reached no engine. The socket's lock, which the engine holds for
    as long as it runs, tells: nobody holds it, so the pid is stale. Not signalled, exit 3."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    with scratch() as d, decoy(d) as (pid, mark):
        sock = d / "e.sock"
        crash_leftovers(sock, pid)
        rc, text = _kill(capsys, "--socket", str(sock))
        assert not _signalled(mark), text
        assert rc == 3, text
        assert "sent SIGUSR1" not in text


def test_a_forwarder_given_a_crashed_engines_pid_is_not_taken_for_the_engine(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An engine killed with -9 leaves ``<socket>.pid`` and ``<socket>.json`` naming its pid;
    a forwarder (`ssh -L` with StreamLocalBindUnlink) then listens at that path and, the
    pid recycled, has that pid. Its remote end stuck, the kill fell back, saw the listener's
    pid (SO_PEERCRED) in the stale pid file, took it for the engine and signalled it: exit 0,
    no engine reached. Neither the socket's lock (left unheld by the crash) nor the data
    dir's lock is held by it: not the engine, not signalled."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    with scratch() as d:
        sock, data = d / "e.sock", d / "data"
        data.mkdir(mode=0o700)
        with decoy(d, _LISTENING_DECOY, str(sock)) as (pid, mark):
            sock.with_name(sock.name + ".pid").write_text(f"{pid}\n")
            sock.with_name(sock.name + ".lock").write_text("")
            info = (
                f'{{"pid": {pid}, "socket": "{sock}", "data_dir": "{data}", '
                f'"kill_file": "{data / "KILL"}", "sigusr1": true}}'
            )
            sock.with_name(sock.name + ".json").write_text(info)
            rc, text = _kill(capsys, "--socket", str(sock))
            assert not _signalled(mark), text
            assert rc == 3, text
            assert (data / "KILL").read_text().strip() == "halt"  # still written where read


@pytest.mark.parametrize("typed", [" flatten", "flatten\n", "Flatten ", "\tENTRIES"])
def test_a_level_with_a_scripts_spaces_is_that_level_not_a_refused_kill(typed: str) -> None:
    """README: "Nor is a kill refused for its form: a level in any case is that level", and the
    engine reads " Entries\\n" as entries. `cockpit kill --level "$LEVEL"` with the variable
    read from a file or a config (a trailing space or line end) was refused by the parser,
    "invalid choice: 'flatten '", exit 2: nothing engaged while the script's author believed the
    engine stopped. It is that level now; a word that is no level engages halt and says so
    (tests/test_kill_form.py)."""
    from cockpit.oneshot import build_parser

    args = build_parser().parse_args(["kill", "--level", typed])
    assert args.level == typed.strip().lower()
    assert build_parser().parse_args(["kill", "--level", "flaten "]).level == "flaten"


# An engine started with `--data-dir DIR --socket PATH` and a config's kill_file = "STOP": it
# locks DIR and names itself in DIR/engine.lock, holds PATH's lock file, says in PATH.json which
# file it reads the level from, and catches SIGUSR1 (noting it). Its loop is stuck.
_STOP_ENGINE = r"""
import fcntl, json, os, pathlib, signal, sys, time
mark, ready, data, sock = (pathlib.Path(a) for a in sys.argv[1:5])
signal.signal(signal.SIGUSR1, lambda *_: mark.write_text("signalled"))
held = os.open(data, os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(held, fcntl.LOCK_EX)
(data / "engine.lock").write_text(f"{os.getpid()}\n")
lock = os.open(str(sock) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(lock, fcntl.LOCK_EX)
info = {"pid": os.getpid(), "socket": str(sock), "data_dir": str(data),
        "kill_file": str(data / "STOP"), "sigusr1": True}
pathlib.Path(str(sock) + ".json").write_text(json.dumps(info))
ready.write_text("ready")
while True:
    time.sleep(1)
"""


def test_a_kill_by_data_dir_writes_the_kill_file_the_engine_reads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: `cockpit kill --data-dir` reaches an engine started with `--socket` elsewhere
    "through its lock file", and the fallback "carries the level" in the KILL file. With the
    config's kill_file = "STOP", `cockpit kill --data-dir d --level flatten` (no --config: the
    engine's socket unknown) wrote d/KILL, signalled the engine and said "wrote d/KILL (level
    flatten)", exit 0: the engine read d/STOP, found none, and engaged halt, every position
    left open (and an engine started later reads STOP, not KILL). The engine's info file,
    found by the socket lock it holds, names the file: d/STOP is written."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    with scratch() as d:
        data, sock = d / "data", d / "run" / "e.sock"
        data.mkdir(mode=0o700)
        sock.parent.mkdir(mode=0o700)
        with decoy(d, _STOP_ENGINE, str(data), str(sock)) as (_pid, mark):
            rc, text = _kill(capsys, "--data-dir", str(data), "--level", "flatten")
            assert _signalled(mark), text
            assert rc == 0, text
            assert (data / "STOP").read_text().strip() == "flatten", text
            assert not (data / "KILL").exists(), text


# ------------------------------------------------ a forwarded socket to another data dir's engine


@contextlib.asynccontextmanager
async def relay(listen: Path, target: Path) -> AsyncIterator[None]:
    """A forwarder, as the local end of `ssh -L`: no info file beside it."""
    import asyncio

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            w.close()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_unix_connection(str(target))
        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    srv = await asyncio.start_unix_server(handle, path=str(listen))
    try:
        yield
    finally:
        srv.close()


async def test_a_kill_through_a_forwarder_to_another_data_dirs_engine_is_not_sent(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: "With `--socket` and `--data-dir` ... a socket whose engine serves another data
    directory is skipped". Through a forwarder (`ssh -L`, no info file beside it) the kill
    could not tell: `cockpit kill --data-dir A --socket tunnel.sock`, the tunnel reaching
    engine B, engaged B's kill switch and said "kill switch engaged: halt", exit 0, while A
    traded on. The engine now names its data dir in its welcome: the kill is not sent there
    (A's own ways are tried: here none, exit 3); sent when the data dirs match."""
    from cockpit.oneshot import build_parser, run_oneshot_async
    from engine.control import ControlServer
    from engine.runtime import Engine
    from tests.test_control_support import approve_config

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    engine = Engine(approve_config(data_dir), data_dir)
    await engine.start()
    try:
        with scratch() as d:
            (d / "run").mkdir(mode=0o700)
            other = d / "other"
            other.mkdir(mode=0o700)
            server = ControlServer(engine, d / "run" / "b.sock")
            await server.start()
            try:
                async with relay(d / "tunnel.sock", server.path):
                    argv = ["kill", "--socket", str(d / "tunnel.sock"), "--timeout", "5"]
                    args = build_parser().parse_args([*argv, "--data-dir", str(other)])
                    rc = await run_oneshot_async(args)
                    text = "".join(capsys.readouterr())
                    assert not engine.snapshot()["kill_switch"]["engaged"], text
                    assert rc == 3, text
                    assert "not sent there" in text
                    args = build_parser().parse_args([*argv, "--data-dir", str(data_dir)])
                    rc = await run_oneshot_async(args)
                    text = "".join(capsys.readouterr())
                    assert rc == 0, text
                    assert engine.snapshot()["kill_switch"]["engaged"], text
            finally:
                await server.close()
    finally:
        await engine.stop()


async def test_a_release_through_a_forwarder_to_another_data_dirs_engine_is_refused(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: with `--socket` and `--data-dir` "the other one-shot commands refuse that pair
    (exit 2)" when the socket's engine serves another data dir. Through a forwarder (no info
    file) `cockpit release --socket tunnel.sock --data-dir A` released engine B's kill switch,
    exit 0: B traded again, and A's switch, the one meant, stayed as it was. Refused now by the
    welcome's data dir, exit 2, nothing applied; the matching pair still releases."""
    from cockpit.oneshot import build_parser, run_oneshot_async
    from engine.control import ControlServer
    from engine.runtime import Engine
    from engine.vocabulary import RELEASE_PHRASE
    from tests.test_control_support import approve_config

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    engine = Engine(approve_config(data_dir), data_dir)
    await engine.start()
    try:
        with scratch() as d:
            (d / "run").mkdir(mode=0o700)
            other = d / "other"
            other.mkdir(mode=0o700)
            server = ControlServer(engine, d / "run" / "b.sock")
            await server.start()
            try:
                async with relay(d / "tunnel.sock", server.path):
                    tunnel = ["--socket", str(d / "tunnel.sock"), "--timeout", "5"]
                    args = build_parser().parse_args(["kill", *tunnel, "--reason", "r"])
                    assert await run_oneshot_async(args) == 0
                    release = ["release", *tunnel, "--reason", "r", "--confirm", RELEASE_PHRASE]
                    args = build_parser().parse_args([*release, "--data-dir", str(other)])
                    rc = await run_oneshot_async(args)
                    text = "".join(capsys.readouterr())
                    assert rc == 2, text
                    assert engine.snapshot()["kill_switch"]["engaged"], text
                    args = build_parser().parse_args([*release, "--data-dir", str(data_dir)])
                    rc = await run_oneshot_async(args)
                    text = "".join(capsys.readouterr())
                    assert rc == 0, text
                    assert not engine.snapshot()["kill_switch"]["engaged"], text
            finally:
                await server.close()
    finally:
        await engine.stop()


@settings(max_examples=200, deadline=None)
@given(
    level=st.sampled_from(["entries", "halt", "flatten"]),
    cases=st.lists(st.booleans(), min_size=7, max_size=7),
    before=st.text(alphabet=" \t\r\n", max_size=3),
    after=st.text(alphabet=" \t\r\n", max_size=3),
)
def test_any_case_and_padding_of_a_level_is_that_level(
    level: str, cases: list[bool], before: str, after: str
) -> None:
    """The invariant behind the test above: case and surrounding whitespace never change
    which level `cockpit kill --level` engages, and never refuse it."""
    from cockpit.oneshot import build_parser

    typed = "".join(c.upper() if up else c for c, up in zip(level, cases, strict=False))
    args = build_parser().parse_args(["kill", "--level", before + typed + after])
    assert args.level == level


def test_a_kill_past_a_crashed_runs_files_writes_the_kill_file_the_running_engine_reads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that crashed left old.sock and its info file naming d/KILL; the engine now on
    the data dir (another --socket, kill_file = "STOP") is found by its lock and signalled,
    but the level went into the crashed run's d/KILL: "wrote d/KILL (level flatten)", exit 0,
    and the engine engaged halt. The running engine's own info file names the file."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    with scratch() as d:
        data, sock = d / "data", d / "run" / "e.sock"
        data.mkdir(mode=0o700)
        sock.parent.mkdir(mode=0o700)
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait(timeout=WAIT)
        old = d / "old.sock"
        crash_leftovers(old, gone.pid)
        info = f'{{"pid": {gone.pid}, "data_dir": "{data}", "kill_file": "{data / "KILL"}"}}'
        old.with_name(old.name + ".json").write_text(info)
        with decoy(d, _STOP_ENGINE, str(data), str(sock)) as (_pid, mark):
            argv = ["--socket", str(old), "--data-dir", str(data), "--level", "flatten"]
            rc, text = _kill(capsys, *argv)
            assert _signalled(mark), text
            assert rc == 0, text
            assert (data / "STOP").read_text().strip() == "flatten", text
            assert not (data / "KILL").exists(), text
