"""The control socket against a real in-process engine: snapshot and events as the engine has
them, roles, idempotent commands, malformed input, permissions, stale sockets, resume, slow
readers, and the kill switch through the socket, SIGUSR1 and the KILL file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import stat
import threading
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cockpit.socket_client import EngineUnreachable, SocketClient
from engine.control import (
    MAX_DEPTH,
    MAX_NUMBER_CHARS,
    SUN_PATH_MAX,
    ControlError,
    ControlServer,
    ProtocolError,
    check_peer,
    check_private_dir,
    check_socket_path,
    default_socket_path,
    info_path,
    parse_client_line,
    pid_path,
)
from engine.journal import verify_journal
from engine.runtime import Engine
from tests.test_control_support import WAIT, Raw, ThreadEngine, approve_config, short_dir


@pytest.fixture
def sock_dir() -> Any:
    with short_dir() as d:
        yield d


@pytest.fixture
async def engine(data_dir: Path) -> AsyncIterator[Engine]:
    e = Engine(approve_config(data_dir), data_dir)
    await e.start()
    try:
        yield e
    finally:
        await e.stop()


@pytest.fixture
async def server(engine: Engine, sock_dir: Path) -> AsyncIterator[ControlServer]:
    srv = ControlServer(engine, sock_dir / "run" / "engine.sock")
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


def roundtrip(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


async def until(predicate: Any, what: str) -> None:
    """Wait (bounded, never asserted as a time) until ``predicate()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class Collector:
    """Drains a client's events() in the background."""

    def __init__(self, client: SocketClient) -> None:
        self.items: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._run(client))

    async def _run(self, client: SocketClient) -> None:
        async for ev in client.events():
            self.items.append(ev)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for e in self.items if e.get("event") != "connection"]

    @property
    def connection(self) -> list[dict[str, Any]]:
        return [e for e in self.items if e.get("event") == "connection"]

    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.events]

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task


# --------------------------------------------------------------------------- same view


async def test_attached_client_sees_the_engines_snapshot_and_events(
    engine: Engine, server: ControlServer
) -> None:
    await engine.run(max_events=500)
    await engine.committed()  # idle: the last events are shown once their rows are committed
    client = await SocketClient.open(server.path, name="t")
    try:
        # The engine is idle: the snapshot over the socket is the engine's, value for value.
        assert await client.snapshot() == roundtrip(engine.snapshot())
        assert client.initial_snapshot == roundtrip(engine.snapshot())
        light = await client.snapshot(trace=0, curve=5)
        assert light["trace"] == [] and len(light["equity_curve"]) <= 5
        start = engine.seq
        got = Collector(client)
        await engine.run(max_events=3000)
        await engine.committed()
        await until(lambda: got.events and got.events[-1]["seq"] == engine.seq, "the events")
        expected = [roundtrip(e) for e in engine.recent if e["seq"] > start]
        assert len(expected) > 50
        assert got.events == expected
        assert await client.snapshot() == roundtrip(engine.snapshot())
        await got.stop()
    finally:
        await client.close()


async def test_viewer_and_operator_at_once(engine: Engine, server: ControlServer) -> None:
    viewer = await SocketClient.open(server.path, role="viewer", name="laptop")
    operator = await SocketClient.open(server.path, role="operator", name="desk")
    seen_v, seen_o = Collector(viewer), Collector(operator)
    try:
        assert {c["role"] for c in server.clients} == {"viewer", "operator"}
        refused = await viewer.command("pause", {"strategy": "ema_cross", "reason": "x"})
        assert refused["ok"] is False and "viewer" in refused["message"]
        assert not engine.core.safety.state.strategies["ema_cross"].paused
        done = await operator.command("pause", {"strategy": "ema_cross", "reason": "lunch"})
        assert done["ok"] is True, done
        assert engine.core.safety.state.strategies["ema_cross"].paused
        for seen in (seen_v, seen_o):
            await until(
                lambda s=seen: len([e for e in s.events if e["event"] == "audit"]) > 1, "audit"
            )
            tried, audit = [e for e in seen.events if e["event"] == "audit"]
            assert tried["client"] == "socket:laptop" and tried["accepted"] is False
            assert audit["client"] == "socket:desk" and audit["accepted"] is True
        snap = await viewer.snapshot(trace=0, curve=0)
        ema = next(s for s in snap["strategies"] if s["id"] == "ema_cross")
        assert ema["paused"] and ema["pause_reason"] == "lunch"
    finally:
        await seen_v.stop()
        await seen_o.stop()
        await viewer.close()
        await operator.close()


async def test_approve_changes_every_attached_clients_approvals(
    engine: Engine, server: ControlServer
) -> None:
    await engine.run(max_events=3000)
    watcher = await SocketClient.open(server.path, role="viewer", name="pane")
    actor = await SocketClient.open(server.path, name="keys")
    seen = Collector(watcher)
    try:
        before = (await watcher.snapshot(trace=0, curve=0))["approvals"]
        assert before, "the approve-mode strategies should have asked"
        target = before[-1]["id"]
        reply = await actor.command("approve", {"id": target})
        assert reply["ok"] is True, reply
        after = (await watcher.snapshot(trace=0, curve=0))["approvals"]
        assert target not in [a["id"] for a in after]
        await until(
            lambda: any(
                e["event"] == "approval" and e["outcome"]["approval_id"] == target
                for e in seen.events
            ),
            "the approval event",
        )
    finally:
        await seen.stop()
        await watcher.close()
        await actor.close()


async def test_an_idempotency_key_runs_once_and_returns_the_same_reply(
    engine: Engine, server: ControlServer
) -> None:
    raw = await Raw.open(server.path)
    try:
        await raw.hello(subscribe=False)
        cmd = {
            "type": "command",
            "id": "k-1",
            "name": "pause",
            "args": {"strategy": "rsi_reversion", "reason": "once"},
        }
        await raw.send(cmd)
        first = await raw.recv_type("reply")
        audits = sum(1 for e in engine.recent if e["event"] == "audit")
        await raw.send(cmd)
        second = await raw.recv_type("reply")
        assert second.pop("duplicate") is True
        assert first == second and first["ok"] is True
        assert sum(1 for e in engine.recent if e["event"] == "audit") == audits
        # The same key for a different command is refused, not run.
        await raw.send({**cmd, "name": "resume"})
        other = await raw.recv_type("reply")
        assert other["ok"] is False and "already used" in other["message"]
        assert engine.core.safety.state.strategies["rsi_reversion"].paused
    finally:
        await raw.close()


# --------------------------------------------------------------------------- bad input


async def test_malformed_input_gets_errors_and_the_connection_stays(
    engine: Engine, server: ControlServer
) -> None:
    raw = await Raw.open(server.path)
    try:
        cases = [
            (b"not json\n", "not JSON"),
            (b"\xff\xfe\n", "not UTF-8"),
            (b"[1, 2]\n", "JSON object"),
            (b'{"type": "ping", "x": NaN}\n', "NaN is not allowed"),
            (b'{"type": "launch"}\n', "unknown message type 'launch'"),
            (b'{"no": "type"}\n', "unknown message type nothing"),
            (b'{"type": "ping"}\n', "say hello first"),
            (b'{"type": "hello", "version": 1, "role": "god", "name": "x"}\n', "role"),
            (b'{"type": "hello", "version": 1, "role": "viewer"}\n', "name: required"),
            (b'{"type": "hello", "version": "1", "role": "viewer", "name": "x"}\n', "version"),
            (b'{"type":"hello","version":1,"role":"viewer","name":"x","x":1}\n', "unknown field"),
        ]
        for line, expected in cases:
            await raw.send(line)
            msg = await raw.recv()
            assert msg["type"] == "error" and not msg["fatal"], (line, msg)
            assert expected in msg["message"], (line, msg)
            assert "\n" not in msg["message"]
        welcome = await raw.hello(subscribe=False)
        assert welcome["type"] == "welcome"
        await raw.send(b'{"type": "snapshot", "trace": -1}\n')
        assert "trace" in (await raw.recv())["message"]
        await raw.send({"type": "command", "id": "a", "name": "explode", "args": {}})
        reply = await raw.recv()
        assert (
            reply["type"] == "reply" and not reply["ok"] and "unknown command" in reply["message"]
        )
        await raw.send({"type": "hello", "version": 1, "role": "viewer", "name": "again"})
        assert "already" in (await raw.recv())["message"]
        await raw.send({"type": "ping"})
        assert (await raw.recv())["type"] == "pong"
        assert not engine.core.safety.kill.engaged
        # A kill is never refused for its form (as the KILL file): a word that is no level
        # engages halt, and the reply says so.
        await raw.send({"type": "command", "id": "b", "name": "kill", "args": {"level": "x"}})
        reply = await raw.recv()
        assert reply["ok"] and "'x' is not entries, halt or flatten: halt" in reply["message"]
        assert engine.core.safety.kill.level == "halt"
    finally:
        await raw.close()


async def test_an_overlong_line_closes_with_a_reason(engine: Engine, server: ControlServer) -> None:
    raw = await Raw.open(server.path)
    try:
        await raw.send(b"x" * (server.max_line + 10) + b"\n")
        msg = await raw.recv()
        assert msg["type"] == "error" and msg["fatal"] and "longer than" in msg["message"]
        assert await raw.at_eof()
    finally:
        await raw.close()
    # The server itself is fine.
    client = await SocketClient.open(server.path, role="viewer")
    await client.close()


async def test_unsupported_version_is_refused(engine: Engine, server: ControlServer) -> None:
    raw = await Raw.open(server.path)
    try:
        await raw.send({"type": "hello", "version": 2, "role": "viewer", "name": "future"})
        msg = await raw.recv()
        assert msg["fatal"] and "version 2" in msg["message"]
        assert await raw.at_eof()
    finally:
        await raw.close()


def test_parse_client_line_messages_are_one_line() -> None:
    assert parse_client_line(b"   \n") is None
    with pytest.raises(ProtocolError, match="not JSON"):
        parse_client_line(b"{")
    with pytest.raises(ProtocolError, match="resume_from"):
        parse_client_line(
            b'{"type":"hello","version":1,"role":"viewer","name":"x","resume_from":true}'
        )
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ProtocolError):
        parse_client_line(deep)


# --------------------------------------------------------------------------- the socket file


async def test_socket_is_0600_in_a_0700_directory(server: ControlServer) -> None:
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(server.path.parent).st_mode) == 0o700
    assert stat.S_ISSOCK(os.stat(server.path).st_mode)
    assert int(pid_path(server.path).read_text()) == os.getpid()
    info = json.loads(info_path(server.path).read_text())
    assert info["pid"] == os.getpid() and info["kill_file"].endswith("KILL")
    assert stat.S_IMODE(os.stat(info_path(server.path)).st_mode) == 0o600


async def test_close_removes_the_socket_and_its_files(engine: Engine, sock_dir: Path) -> None:
    srv = ControlServer(engine, sock_dir / "e.sock")
    await srv.start()
    await srv.close()
    assert list(sock_dir.iterdir()) == []


async def test_a_loose_or_foreign_directory_is_refused(engine: Engine, sock_dir: Path) -> None:
    loose = sock_dir / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    with pytest.raises(ControlError, match=r"mode 0755.*chmod 700"):
        await ControlServer(engine, loose / "e.sock").start()
    assert not (loose / "e.sock").exists()
    private = sock_dir / "private"
    private.mkdir(mode=0o700)
    check_private_dir(private)  # ours and 0700: fine
    with pytest.raises(ControlError, match="belongs to uid"):
        check_private_dir(private, own_uid=os.geteuid() + 1)


def test_only_the_engines_uid_may_connect() -> None:
    assert check_peer(1000, own_uid=1000) is None
    reason = check_peer(1001, own_uid=1000)
    assert reason is not None and "uid 1001" in reason


async def test_a_peer_with_another_uid_is_refused(engine: Engine, sock_dir: Path) -> None:
    # The server believes it runs as another uid, so this (real) peer is a stranger.
    srv = ControlServer(engine, sock_dir / "e.sock", uid=os.geteuid() + 1)
    await srv.start()
    try:
        with pytest.raises(EngineUnreachable, match="refused: peer uid"):
            await SocketClient.open(srv.path)
        assert srv.refused_peers == 1
    finally:
        await srv.close()


async def test_a_stale_socket_is_removed_and_a_live_one_refused(
    engine: Engine, sock_dir: Path
) -> None:
    path = sock_dir / "e.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # a crash leaves the file behind
    assert path.exists()
    first = ControlServer(engine, path)
    await first.start()
    try:
        client = await SocketClient.open(path, role="viewer")
        await client.close()
        with pytest.raises(ControlError, match=f"already listening on {path}"):
            await ControlServer(engine, path).start()
        assert path.exists()  # the live one's socket is left alone
    finally:
        await first.close()


async def test_a_file_in_the_way_is_refused(engine: Engine, sock_dir: Path) -> None:
    (sock_dir / "e.sock").write_text("not a socket")
    with pytest.raises(ControlError, match="is not a socket"):
        await ControlServer(engine, sock_dir / "e.sock").start()


@pytest.mark.parametrize("name", ["journal.sqlite", "journal.sqlite-wal", "engine.lock", "KILL"])
async def test_a_socket_path_naming_an_engine_file_never_says_remove_it(
    engine: Engine, name: str
) -> None:
    """`--socket data/journal.sqlite` (a slip of the tab key) was answered "exists and is not
    a socket; remove it": advice to delete the journal, its WAL (committed rows), the lock or
    a KILL file (releasing a kill). The engine's own files are named as such, kept, intact."""
    path = engine.data_dir / name
    if not path.exists():
        path.write_text("halt\n")
    before = path.read_bytes()
    with pytest.raises(ControlError) as info:
        await ControlServer(engine, path).start()
    message = str(info.value)
    assert "remove" not in message and "one of the engine's own files" in message, message
    assert path.read_bytes() == before


async def test_a_file_beside_the_journal_that_is_no_engine_file_may_be_removed(
    engine: Engine,
) -> None:
    """The boundary: a stray file in the data directory is still answered as before."""
    path = engine.data_dir / "notes.txt"
    path.write_text("mine")
    with pytest.raises(ControlError, match="is not a socket; remove it"):
        await ControlServer(engine, path).start()


async def test_a_path_too_long_for_sun_path_says_so(engine: Engine, sock_dir: Path) -> None:
    long = sock_dir / ("d" * 120) / "engine.sock"
    with pytest.raises(ControlError) as info:
        await ControlServer(engine, long).start()
    message = str(info.value)
    assert "\n" not in message and "--socket" in message and str(SUN_PATH_MAX) in message
    check_socket_path(Path("/tmp/" + "x" * (SUN_PATH_MAX - 5)))  # exactly at the limit
    with pytest.raises(ControlError):
        check_socket_path(Path("/tmp/" + "x" * (SUN_PATH_MAX - 4)))


def test_default_socket_path() -> None:
    env = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    assert default_socket_path("data", env=env) == Path("/run/user/1000/cockpit/default.sock")
    assert default_socket_path("/srv/ck", env={}) == Path("/srv/ck/cockpit.sock")


async def test_unreachable_engine_messages(sock_dir: Path) -> None:
    with pytest.raises(EngineUnreachable, match="no engine socket"):
        await SocketClient.open(sock_dir / "none.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock_dir / "dead.sock"))
    dead.close()
    with pytest.raises(EngineUnreachable, match="stale socket"):
        await SocketClient.open(sock_dir / "dead.sock")


# --------------------------------------------------------------------------- resume


async def test_disconnect_and_resume_without_missing_an_event(
    engine: Engine, server: ControlServer
) -> None:
    client = await SocketClient.open(server.path, name="flaky", backoff=(0.01, 0.05))
    got = Collector(client)
    start = engine.seq
    try:
        run = asyncio.create_task(engine.run(max_events=6000))
        for n in range(1, 4):
            await until(lambda: len(got.events) > 20, "some events")
            for conn in list(server._conns):
                conn._hard_close(None)  # the link drops under the client's feet
            await until(lambda n=n: client.reconnects == n and client.connected, "reconnect")
        await run
        await engine.committed()
        await until(lambda: got.seqs() and got.seqs()[-1] == engine.seq, "the last event")
        expected = [roundtrip(e) for e in engine.recent if e["seq"] > start]
        assert got.events == expected  # none missing, none twice, in order
        states = [(c["connected"], c.get("resumed")) for c in got.connection]
        assert states == [(False, None), (True, True)] * 3
        assert client.reconnects == 3
    finally:
        await got.stop()
        await client.close()


async def test_resume_beyond_the_buffer_gets_a_fresh_snapshot(
    engine: Engine, server: ControlServer
) -> None:
    await engine.run(max_events=2000)
    await engine.committed()  # idle: the last events are shown once their rows are committed
    engine.recent = deque(list(engine.recent)[-10:], maxlen=10)
    raw = await Raw.open(server.path)
    try:
        welcome = await raw.hello(role="viewer", resume_from=1)
        assert welcome["resumed"] is False and "no longer buffered" in welcome["message"]
        snap = await raw.recv()
        assert snap["type"] == "snapshot" and snap["data"]["seq"] == engine.seq
    finally:
        await raw.close()
    raw = await Raw.open(server.path)
    try:
        back = engine.recent[3]["seq"]
        welcome = await raw.hello(role="viewer", resume_from=back)
        assert welcome["resumed"] is True
        replayed = [await raw.recv() for _ in range(engine.seq - back)]
        assert [m["seq"] for m in replayed] == [e["seq"] for e in engine.recent if e["seq"] > back]
        other = await Raw.open(server.path)
        welcome = await other.hello(role="viewer", resume_from=back, instance="another-run")
        assert welcome["resumed"] is False and "restarted" in welcome["message"]
        await other.close()
    finally:
        await raw.close()


async def test_client_reconnects_after_the_server_restarts(engine: Engine, sock_dir: Path) -> None:
    path = sock_dir / "e.sock"
    srv = ControlServer(engine, path)
    await srv.start()
    client = await SocketClient.open(path, backoff=(0.01, 0.05), command_timeout=0.2)
    got = Collector(client)
    try:
        await srv.close()
        await until(lambda: not client.connected, "the disconnect")
        down = await client.command("pause", {"strategy": "ema_cross"})
        assert down["ok"] is False and down["sent"] is False
        stale = await client.snapshot(trace=0, curve=0)
        assert stale["connection"]["connected"] is False
        srv = ControlServer(engine, path)
        await srv.start()
        await until(lambda: client.connected, "the reconnect")
        client.command_timeout = WAIT
        assert (await client.command("pause", {"strategy": "ema_cross"}))["ok"] is True
        assert [c["connected"] for c in got.connection] == [False, True]
    finally:
        await got.stop()
        await client.close()
        await srv.close()


async def test_a_command_while_disconnected_is_answered_at_once_and_never_sent_later(
    engine: Engine, sock_dir: Path
) -> None:
    """Not after the reply timeout (5 s in the cockpit): at once, "not sent: disconnected",
    and nothing runs when the engine comes back (a kill is never sent minutes late)."""
    path = sock_dir / "e.sock"
    srv = ControlServer(engine, path)
    await srv.start()
    client = await SocketClient.open(path, backoff=(0.01, 0.05), command_timeout=3600.0)
    try:
        await srv.close()
        await until(lambda: not client.connected, "the disconnect")
        reply = await asyncio.wait_for(client.command("pause", {"strategy": "ema_cross"}), WAIT)
        assert reply["ok"] is False and reply["sent"] is False
        assert reply["message"].startswith("not sent: disconnected from the engine at ")
        assert "nothing was applied" in reply["message"]
        srv = ControlServer(engine, path)
        await srv.start()
        await until(lambda: client.connected, "the reconnect")
        await asyncio.sleep(0.05)
        assert not engine.core.safety.state.strategies["ema_cross"].paused
    finally:
        await client.close()
        await srv.close()


# --------------------------------------------------------------------------- slow readers


async def test_a_slow_reader_is_dropped_with_a_reason_and_never_slows_the_engine(
    engine: Engine, sock_dir: Path
) -> None:
    # Events are shown a commit at a time (a few hundred at once at full speed under load):
    # the keen client's buffer must hold one such burst; the sluggard's never empties.
    # The sluggard reads its last bytes only at the end, long after the drop on a loaded
    # machine: the cut-off of a peer that never reads (CLOSE_GRACE_S) is not what this tests.
    srv = ControlServer(engine, sock_dir / "e.sock", max_queue=2000, close_grace_s=3600)
    await srv.start()
    sluggard = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sluggard.connect(str(srv.path))
    sluggard.sendall(
        b'{"type":"hello","version":1,"role":"viewer","name":"sluggard","resume_from":null}\n'
    )
    keen = await SocketClient.open(srv.path, role="viewer", name="keen")
    got = Collector(keen)
    start = engine.seq
    try:
        # Never reads a byte from the sluggard. The keen client shares this event loop with an
        # engine at full speed, so it gets a moment to catch up between stretches.
        for _ in range(5):
            await engine.run(max_events=30_000)
            await engine.committed()
            await until(lambda: got.seqs() and got.seqs()[-1] == engine.seq, "keen catching up")
        assert engine.quotes_processed == 150_000
        assert engine.seq - start > 3 * 2000  # far more than the sluggard's buffer holds
        assert srv.slow_disconnects == 1
        assert [c["name"] for c in srv.clients] == ["keen"]
        # The other client missed nothing.
        await until(lambda: got.seqs() and got.seqs()[-1] == engine.seq, "keen's events")
        assert got.seqs() == list(range(start + 1, engine.seq + 1))  # every one, in order
        # The sluggard finds out why, on the last line before the end.
        data = await asyncio.to_thread(_read_all, sluggard)
        last = json.loads(data.splitlines()[-1])
        assert last["type"] == "error" and last["fatal"]
        assert "too slowly" in last["message"] and "2000 messages" in last["message"]
    finally:
        sluggard.close()
        await got.stop()
        await keen.close()
        await srv.close()


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(WAIT)
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------- kill switch


async def test_kill_through_the_socket(engine: Engine, server: ControlServer) -> None:
    client = await SocketClient.open(server.path, name="panic")
    try:
        reply = await client.command("kill", {"level": "flatten", "reason": "test"})
        assert reply["ok"] is True, reply
        snap = await client.snapshot(trace=0, curve=0)
        assert snap["kill_switch"]["engaged"] and snap["kill_switch"]["level"] == "flatten"
        assert snap["kill_switch"]["source"] == "command"
    finally:
        await client.close()
    assert verify_journal(engine.journal_path).ok


async def test_kill_through_sigusr1_in_process(engine: Engine, sock_dir: Path) -> None:
    srv = ControlServer(engine, sock_dir / "e.sock", handle_sigusr1=True)
    await srv.start()
    try:
        assert json.loads(info_path(srv.path).read_text())["sigusr1"] is True
        os.kill(os.getpid(), signal.SIGUSR1)
        await until(lambda: engine.core.safety.kill.engaged, "the kill switch")
        assert engine.core.safety.kill.source == "signal"
    finally:
        await srv.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # the handler left with it


async def test_kill_through_the_kill_file(engine: Engine, server: ControlServer) -> None:
    client = await SocketClient.open(server.path, role="viewer")
    got = Collector(client)
    try:
        run = asyncio.create_task(engine.run(max_events=2_000_000))
        engine.kill_file.write_text("entries\n")
        await until(
            lambda: any(e["event"] == "safety" and e["what"] == "kill_switch" for e in got.events),
            "the kill switch event",
        )
        engine.request_stop()
        await run
        snap = await client.snapshot(trace=0, curve=0)
        assert snap["kill_switch"]["engaged"] and snap["kill_switch"]["level"] == "entries"
        assert snap["kill_switch"]["source"] == "file"
    finally:
        await got.stop()
        await client.close()


# --------------------------------------------------------------------------- resources

HELLO_LINE = b'{"type":"hello","version":1,"role":"viewer","name":"x","resume_from":null}\n'


def _errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_an_oversized_number_gets_an_error_and_the_connection_stays(
    server: ControlServer, caplog: pytest.LogCaptureFixture
) -> None:
    raw = await Raw.open(server.path)
    try:
        assert (await raw.hello("viewer"))["type"] == "welcome"
        await raw.recv_type("snapshot")
        # Just under the limit: an ordinary number, refused only for what it says.
        await raw.send(b'{"type":"snapshot","trace":' + b"9" * MAX_NUMBER_CHARS + b"}\n")
        err = await raw.recv_type("error")
        assert "trace:" in err["message"] and "too long" not in err["message"], err
        # Just over, over Python's 4,300-digit int limit, a float: an error line, no crash.
        for digits in (b"9" * (MAX_NUMBER_CHARS + 1), b"9" * 4301, b"1." + b"5" * 10_000):
            await raw.send(b'{"type":"snapshot","trace":' + digits + b"}\n")
            err = await raw.recv_type("error")
            assert err["fatal"] is False
            assert f"number too long: {len(digits)} characters" in err["message"], err
        await raw.send({"type": "ping"})
        assert (await raw.recv_type("pong"))["server_seq"] == server.engine.seq
        assert len(server.clients) == 1
    finally:
        await raw.close()
    await until(lambda: not server.clients, "the connection to be cleaned up")
    assert not _errors_logged(caplog)


async def test_clients_that_vanish_before_their_snapshot_share_one_and_leave_nothing(
    server: ControlServer,
) -> None:
    tasks_before = len(asyncio.all_tasks())

    async def hello_and_vanish() -> None:
        _, writer = await asyncio.open_unix_connection(str(server.path))
        writer.write(HELLO_LINE)
        await writer.drain()
        writer.transport.abort()

    await asyncio.gather(*(hello_and_vanish() for _ in range(300)))
    await until(lambda: server.snapshot_requests == 300, "every hello to be read")
    await until(lambda: not server.clients and not server._handlers, "every connection to go")
    await until(lambda: len(asyncio.all_tasks()) <= tasks_before, "their tasks to end")
    # The engine did not move: one snapshot was built and shared by all 300.
    assert server.snapshots_built == 1
    assert not server._snap_wanted


async def test_a_client_flooding_snapshot_requests_holds_one_and_starves_nobody(
    engine: Engine, server: ControlServer
) -> None:
    flood = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    flood.connect(str(server.path))
    flood.setblocking(False)
    request = b'{"type":"snapshot","trace":100000,"curve":1000000}\n'
    try:
        pending = HELLO_LINE + request * 2000  # and never a byte read
        while pending:  # whole lines, without blocking the loop the server runs on
            with contextlib.suppress(BlockingIOError):
                pending = pending[flood.send(pending[: 1 << 16]) :]
            await asyncio.sleep(0)
        await until(lambda: server.snapshot_requests > 500, "the requests to be read")
        (conn,) = server._conns
        assert conn.out_bytes == 0 and len(conn.out) <= 1  # one snapshot at most, shared bytes
        # The engine did not move: the snapshot after hello and one full one, nothing more.
        assert server.snapshots_built <= 2
        keen = await SocketClient.open(server.path, role="operator", name="keen")
        try:
            assert (await keen.snapshot(trace=3, curve=4))["seq"] == engine.seq
            reply = await keen.command("kill", {"level": "halt", "reason": "under a flood"})
            assert reply["ok"], reply
        finally:
            await keen.close()
    finally:
        flood.close()
    assert engine.core.safety.kill.engaged


async def test_merged_snapshot_pulls_each_get_an_answer_at_least_as_long(
    engine: Engine, server: ControlServer
) -> None:
    client = await SocketClient.open(server.path, role="viewer")
    try:
        await engine.run(max_events=3_000)
        small, big, small_again = await asyncio.gather(
            client.snapshot(trace=1, curve=1),
            client.snapshot(trace=50, curve=3),
            client.snapshot(trace=1, curve=1),
        )
        assert len(big["trace"]) == 50 and len(big["equity_curve"]) == 3
        assert len(small["trace"]) >= 1 and len(small_again["trace"]) >= 1
        assert server.snapshots_built <= 3
    finally:
        await client.close()


async def test_a_dropped_slow_client_is_cut_off_later_without_a_traceback(
    engine: Engine, sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    problems: list[dict[str, Any]] = []
    old_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: problems.append(context))
    srv = ControlServer(engine, sock_dir / "e.sock", max_queue=50, close_grace_s=3.0)
    await srv.start()
    reader_later = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    never_reads = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        for s in (reader_later, never_reads):
            s.connect(str(srv.path))
            s.sendall(HELLO_LINE)
        await until(lambda: len(srv.clients) == 2, "both clients")
        # A small kernel buffer on the server's side, so that what a client does not read
        # stays queued in the transport (as it would once a real client's buffer fills).
        for conn in srv._conns:
            conn.writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
            )
        run = asyncio.create_task(engine.run(max_events=30_000))
        await until(lambda: srv.slow_disconnects == 2, "both clients to be dropped")
        assert not srv.clients
        # One reads everything after its drop (its transport then closes on its own) ...
        data = await asyncio.to_thread(_read_all, reader_later)
        assert json.loads(data.splitlines()[-1])["fatal"] is True
        await run
        # ... the other never does, and is cut off once the grace period is over: what was
        # still queued for it (its last lines, the error among them) is thrown away.
        await asyncio.sleep(4.0)
        data = await asyncio.to_thread(_read_all, never_reads)
        assert b'"fatal":true' not in data.splitlines()[-1]
    finally:
        reader_later.close()
        never_reads.close()
        await srv.close()
        loop.set_exception_handler(old_handler)
    assert not problems, problems
    assert not _errors_logged(caplog)


def test_parse_client_line_bounds_numbers() -> None:
    ok = b'{"type":"ping","x":' + b"1" * MAX_NUMBER_CHARS + b"}"
    with pytest.raises(ProtocolError, match="x: unknown field"):
        parse_client_line(ok)
    too_long = (b"1" * (MAX_NUMBER_CHARS + 1), b"-" + b"1" * MAX_NUMBER_CHARS, b"1e" + b"9" * 99)
    for number in too_long:
        with pytest.raises(ProtocolError, match="number too long"):
            parse_client_line(b'{"type":"ping","x":' + number + b"}")
    # Short but past a float's range: as much not a number as NaN or Infinity.
    for number in (b"1e999", b"-1e400"):
        with pytest.raises(ProtocolError, match="out of range"):
            parse_client_line(b'{"type":"ping","x":' + number + b"}")


def test_parse_client_line_bounds_nesting() -> None:
    def nested(levels: int) -> bytes:
        # The message object is level 1; "x" holds levels - 1 more lists.
        return b'{"type":"ping","x":' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"

    with pytest.raises(ProtocolError, match="x: unknown field"):
        parse_client_line(nested(MAX_DEPTH))
    for levels in (MAX_DEPTH + 1, 5000):
        with pytest.raises(ProtocolError, match="nested too deeply"):
            parse_client_line(nested(levels))


def test_500_simultaneous_connects_are_all_accepted(tmp_path: Path) -> None:
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    if somaxconn < 500:
        pytest.skip(f"net.core.somaxconn is {somaxconn}: the kernel caps the listen backlog")
    with short_dir() as sd, ThreadEngine(tmp_path / "data", sd / "e.sock") as te:
        assert te.server is not None
        path = str(te.server.path)
        # Hold the engine's event loop so that nothing is accepted while all 500 connect:
        # every one of them must fit in the listen backlog.
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            holding.set()
            release.wait(WAIT)

        holder = threading.Thread(target=te.call, args=(hold,))
        holder.start()
        assert holding.wait(WAIT)
        socks: list[socket.socket] = []
        refused = 0
        try:
            for _ in range(500):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                socks.append(s)
                s.setblocking(False)
                try:
                    s.connect(path)
                except BlockingIOError:  # EAGAIN: the backlog is full, the connect is lost
                    refused += 1
            release.set()
            holder.join(WAIT)
            assert refused == 0
            hello = b'{"type":"hello","version":1,"role":"viewer","name":"n","subscribe":false}\n'
            for s in socks:
                s.setblocking(True)
                s.settimeout(WAIT)
                s.sendall(hello)
            welcomed = sum(
                json.loads(s.makefile("rb").readline())["type"] == "welcome" for s in socks
            )
            assert welcomed == 500
        finally:
            release.set()
            for s in socks:
                s.close()


async def test_event_lines_are_encoded_once_and_pruned_with_the_engines_buffer(
    engine: Engine, server: ControlServer
) -> None:
    kept = 100  # a smaller buffer than the engine's RECENT_EVENTS, to turn it over quickly
    engine.recent = deque(engine.recent, maxlen=kept)
    client = await SocketClient.open(server.path, role="viewer")
    got = Collector(client)
    try:
        await engine.run(max_events=60_000)
        await engine.committed()  # every event shown: engine.seq no longer moves
        await until(lambda: got.seqs() and got.seqs()[-1] == engine.seq, "every event")
        assert engine.seq > 3 * kept  # the engine's buffer turned over
        assert len(server._lines) <= 2 * kept + 1
        # A resuming client gets the very bytes the live one was sent.
        item = engine.recent[-1]
        assert server._event_line(item) is server._lines[item["seq"]]
        resumed = await Raw.open(server.path)
        try:
            welcome = await resumed.hello("viewer", resume_from=engine.seq - 10)
            assert welcome["resumed"] is True
            seqs = [(await resumed.recv_type("event"))["seq"] for _ in range(10)]
            assert seqs == list(range(engine.seq - 9, engine.seq + 1))
        finally:
            await resumed.close()
    finally:
        await got.stop()
        await client.close()
