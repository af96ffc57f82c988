"""A real engine daemon in a subprocess: attach, roles, approve from the CLI, the kill switch
through the socket, SIGUSR1, the KILL file and the stuck-loop fallback, and a clean SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cockpit.socket_client import SocketClient
from engine.journal import read_rows, verify_journal
from engine.runtime import JOURNAL_FILE
from tests.conftest import REPO
from tests.test_control import Collector, until
from tests.test_control_support import WAIT, Daemon, Raw, short_dir


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with short_dir() as sd, Daemon(tmp_path / "data", sd / "run" / "e.sock", speed=30.0) as d:
        yield d


def cli(*argv: str) -> tuple[int, str, str]:
    """The one-shot CLI as a script would run it: its own process."""
    proc = subprocess.run(
        [sys.executable, "-m", "cockpit.oneshot", *argv],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    return proc.returncode, proc.stdout, proc.stderr


async def acli(*argv: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(cli, *argv)


JOURNALED = {"intent", "order", "fill", "approval", "approval_requested", "safety", "breaker"}
JOURNALED |= {"audit", "marks", "session"}


def payload_of(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in ("seq", "event", "ts")}


async def test_attached_client_sees_what_the_daemon_journals(daemon: Daemon) -> None:
    client = await SocketClient.open(daemon.socket, role="viewer", name="tail")
    got = Collector(client)
    try:
        snap = client.initial_snapshot
        assert snap is not None and snap["mode"] == "paper"
        keys = {"seq", "now", "mode", "venues", "trading_state", "kill_switch", "strategies"}
        assert keys | {"breakers", "limits", "portfolio", "positions", "orders", "quotes"} <= set(
            snap
        )
        assert {"approvals", "trace", "equity_curve", "counters"} <= set(snap)
        await until(
            lambda: sum(e["event"] in JOURNALED for e in got.events) > 20, "journaled events"
        )
        daemon.stop()
        await until(lambda: not client.connected, "the disconnect")
    finally:
        await got.stop()
        await client.close()
    assert got.connection[-1]["connected"] is False
    # Every journaled event the client saw is the journal's row, in the journal's order.
    seen = [
        [e["event"], e["ts"], payload_of(e)]
        for e in got.events
        if e["event"] in JOURNALED
        or (e["event"] == "decision" and e["decision"]["action"] != "hold")
    ]
    rows = [
        [r.kind, r.ts, r.payload]
        for r in read_rows(daemon.data_dir / JOURNAL_FILE)
        if r.kind != "safety_state"
    ]
    first = rows.index(seen[0])
    assert len(seen) > 20
    assert rows[first : first + len(seen)] == seen
    seqs = [e["seq"] for e in got.events]
    assert seqs == sorted(set(seqs))
    assert verify_journal(daemon.data_dir / JOURNAL_FILE).ok


SUPERSEDE_HOPS = 20  # a bound against hanging: each hop is a newer request for the same trade


def listed_ids(table: str) -> set[str]:
    """The approval ids in `cockpit approvals`' table: its first column, never a substring
    (ap-ck-1-1 is a prefix of ap-ck-1-15)."""
    return {line.split()[0] for line in table.splitlines()[1:] if line.strip()}


async def test_viewer_operator_and_an_approval_from_the_cli(daemon: Daemon) -> None:
    # Generous bounds (never timing asserts): a loaded machine must not turn a slow reply into
    # a refusal the test mistakes for the engine's.
    bounds = {"connect_timeout": WAIT, "command_timeout": WAIT}
    viewer = await SocketClient.open(daemon.socket, role="viewer", name="pane", **bounds)
    operator = await SocketClient.open(daemon.socket, role="operator", name="desk", **bounds)
    seen = Collector(viewer)
    try:
        no = await viewer.command("pause", {"strategy": "ema_cross"})
        assert no["ok"] is False and "viewer" in no["message"], no
        yes = await operator.command("pause", {"strategy": "donchian_breakout", "reason": "t"})
        assert yes["ok"] is True, yes

        async def pending() -> list[dict[str, Any]]:
            return (await viewer.snapshot(trace=0, curve=0))["approvals"]

        # Not one of the paused strategy's, asked before the pause: the checks re-run on
        # approval reject it (STRATEGY_PAUSED), rightly.
        waiting: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not waiting:
            assert loop.time() < deadline, "no approval was requested"
            await asyncio.sleep(0.05)
            waiting = [a for a in await pending() if a["strategy"] != "donchian_breakout"]
        # At 30x on 1 s bars a newer request for the same strategy, symbol and side supersedes
        # the pending one every few quotes, maybe while the CLI starts: the engine then refuses
        # the approval, naming its successor, and the person approves that one instead.
        # A decision the other way withdraws it (rejected by the engine), or on a loaded machine
        # its time to live runs out: the person then approves one still waiting.
        target = waiting[-1]["id"]
        for _ in range(SUPERSEDE_HOPS):
            code, out, err = await acli(
                "approve", target, "--socket", str(daemon.socket), "--json", "--timeout", str(WAIT)
            )
            reply = json.loads(out)
            outcome = reply["outcome"]
            assert outcome["approval_id"] == target, reply
            assert code == (0 if reply["ok"] else 1), (reply, err)
            successor = outcome["superseded_by"]
            if (
                outcome["status"] == "refused"
                and not successor
                and (
                    "by engine" in str(outcome.get("reason"))
                    or str(outcome.get("reason")).startswith("already expired")
                )
            ):
                waiting = []
                deadline = loop.time() + WAIT
                while not waiting:
                    assert loop.time() < deadline, "no approval was requested after a withdrawal"
                    await asyncio.sleep(0.05)
                    waiting = [a for a in await pending() if a["strategy"] != "donchian_breakout"]
                target = waiting[-1]["id"]
                continue
            if outcome["status"] != "refused" or not successor:
                break
            assert reply["ok"] is False and successor in outcome["reason"], reply
            target = successor
        else:
            raise AssertionError(f"still superseded after {SUPERSEDE_HOPS} approvals: {reply}")
        assert reply["ok"] is True and outcome["status"] == "approved", reply
        assert target not in [a["id"] for a in await pending()]
        await until(
            lambda: any(
                e["event"] == "approval"
                and e["outcome"]["approval_id"] == target
                and e["outcome"]["status"] == "approved"
                for e in seen.events
            ),
            "the approval event at the attached viewer",
        )
        code, out, err = await acli("approvals", "--socket", str(daemon.socket))
        assert code == 0, err
        assert target not in listed_ids(out), out
    finally:
        await seen.stop()
        await viewer.close()
        await operator.close()


async def kill_state(sock: Path, *, stuck_ok: bool = False) -> dict[str, Any]:
    code, out, _ = await acli("status", "--socket", str(sock), "--json")
    if stuck_ok and code == 3:
        return {"engaged": False, "unreachable": True}
    assert code == 0, out
    return json.loads(out)["kill_switch"]


async def wait_engaged(sock: Path) -> dict[str, Any]:
    """Poll `cockpit status` (the loop may still be stuck for a while) until engaged."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not (state := await kill_state(sock, stuck_ok=True))["engaged"]:
        assert loop.time() < deadline, "the kill switch did not engage"
        await asyncio.sleep(0.1)
    return state


async def release(sock: Path) -> None:
    code, out, err = await acli(
        "release", "--reason", "t", "--confirm", "RELEASE", "--socket", str(sock)
    )
    assert code == 0, (out, err)
    assert not (await kill_state(sock))["engaged"]


async def test_kill_switch_through_each_path(daemon: Daemon) -> None:
    sock, kill_file = daemon.socket, daemon.data_dir / "KILL"

    # 1. The control socket.
    code, out, err = await acli("kill", "--reason", "by socket", "--socket", str(sock))
    assert code == 0 and "through the control socket" in out, (out, err)
    state = await kill_state(sock)
    assert state["engaged"] and state["source"] == "command" and state["reason"] == "by socket"
    await release(sock)

    # 2. SIGUSR1 to the engine process.
    os.kill(daemon.pid, signal.SIGUSR1)
    state = await wait_engaged(sock)
    assert state["source"] == "signal" and state["level"] == "halt"
    await release(sock)

    # 3. The KILL file (a release must wait until it is gone).
    kill_file.write_text("entries\n")
    state = await wait_engaged(sock)
    assert state["source"] == "file" and state["level"] == "entries"
    code, _, err = await acli(
        "release", "--reason", "t", "--confirm", "RELEASE", "--socket", str(sock)
    )
    assert code == 1 and "still exists" in err
    kill_file.unlink()
    await release(sock)

    # 4. A stuck event loop: the socket does not answer, so `cockpit kill` falls back.
    os.kill(daemon.pid, signal.SIGUSR2)  # the daemon's loop sleeps 4 s
    await wait_until_stuck(sock)
    code, out, err = await acli(
        "kill", "--level", "flatten", "--reason", "stuck", "--socket", str(sock), "--json"
    )
    result = json.loads(out)
    assert code == 0, (out, err)
    assert result["path"] == "fallback" and "did not answer within 1 s" in result["socket_problem"]
    assert result["signal"]["sent"] and result["signal"]["pid"] == daemon.pid
    assert (
        result["kill_file"]["written"] and Path(result["kill_file"]["path"]) == kill_file.resolve()
    )
    assert "SIGUSR1" in result["message"] and str(kill_file.resolve()) in result["message"]
    state = await wait_engaged(sock)
    assert state["level"] == "flatten" and state["source"] in ("signal", "file")
    assert kill_file.read_text().strip() == "flatten"
    out = daemon.stop()
    assert "STOPPED" in out
    assert verify_journal(daemon.data_dir / JOURNAL_FILE).ok


async def wait_until_stuck(sock: Path) -> None:
    """Until a ping goes unanswered: the loop is blocked (bounded wait)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        assert loop.time() < deadline
        raw = await Raw.open(sock)
        try:
            await raw.send({"type": "ping"})
            try:
                await asyncio.wait_for(raw.reader.readline(), 0.2)
            except TimeoutError:
                return
        finally:
            raw.writer.transport.abort()


def test_sigterm_stops_cleanly_and_removes_the_socket(daemon: Daemon) -> None:
    code, out, _ = cli("status", "--socket", str(daemon.socket))
    assert code == 0 and "trading     ACTIVE" in out
    assert "STOPPED" in daemon.stop()
    assert not daemon.socket.exists()
    assert verify_journal(daemon.data_dir / JOURNAL_FILE).ok
    code, _, err = cli("status", "--socket", str(daemon.socket))
    assert code == 3 and "not reachable" in err


async def test_a_stuck_engine_shows_as_disconnected_then_resumes(daemon: Daemon) -> None:
    client = await SocketClient.open(
        daemon.socket, role="viewer", ping_interval=0.2, backoff=(0.05, 0.2)
    )
    got = Collector(client)
    try:
        await until(lambda: len(got.events) > 5, "some events")
        os.kill(daemon.pid, signal.SIGUSR2)  # the daemon's loop sleeps 4 s
        await until(lambda: bool(got.connection), "the disconnect marker")
        down = got.connection[0]
        assert down["connected"] is False and "no answer" in down["message"]
        stale = await client.snapshot(trace=0, curve=0)
        assert stale["connection"]["connected"] is False
        await until(lambda: client.reconnects == 1, "the reconnect")
        up = got.connection[1]
        assert up["connected"] is True and up["resumed"] is True and up["resync"] is False
        fresh = await client.snapshot(trace=0, curve=0)
        assert "connection" not in fresh
        await until(lambda: got.seqs()[-1] >= fresh["seq"], "events after the stall")
        seqs = got.seqs()
        assert seqs == sorted(set(seqs))
    finally:
        await got.stop()
        await client.close()


def test_the_cockpit_engine_command_serves_its_socket(tmp_path: Path) -> None:
    """The daemon exactly as a trader starts it: `cockpit engine --socket`, then one-shot
    commands from another process, then SIGTERM: exit 0 with the journal intact."""
    import time as _time

    data = tmp_path / "data"
    sock = tmp_path / "ck.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cockpit", "engine", "--data-dir", str(data), "--socket", str(sock)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(300):
            if sock.exists():
                break
            _time.sleep(0.05)
        assert sock.exists(), "the daemon never opened its socket"

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "cockpit", *args, "--socket", str(sock)],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
            )

        status = cli("status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["mode"] == "paper"
        killed = cli("kill", "--level", "halt", "--reason", "daemon test")
        assert killed.returncode == 0, killed.stderr
        after = json.loads(cli("status", "--json").stdout)
        assert after["kill_switch"]["level"] == "halt"
        assert after["trading_state"]["state"] == "HALTED"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err
    assert verify_journal(data / "journal.sqlite").ok


# --------------------------------------------------------------------------- under a flood

FLOOD_REQUEST = b'{"type":"snapshot","trace":100000,"curve":1000000}\n'
KILL_WAIT = 10.0  # a bound against hanging; bench/control_socket.py measures the latency


async def _flood(path: Path, stop: asyncio.Event) -> None:
    """Full-size snapshot requests as fast as the socket takes them; never a byte read."""
    _, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(b'{"type":"hello","version":1,"role":"viewer","name":"flood"}\n')
        while not stop.is_set():
            writer.write(FLOOD_REQUEST * 16)
            await writer.drain()
    except (ConnectionError, OSError):
        pass  # dropped by the server: fine too
    finally:
        writer.transport.abort()


def _kill_rows(data_dir: Path) -> list[dict[str, Any]]:
    rows = read_rows(data_dir / JOURNAL_FILE, kinds=["safety"])
    return [r.payload for r in rows if r.payload.get("what") == "kill_switch"]


@pytest.mark.parametrize("how", ["file", "signal"])
async def test_kill_file_and_sigusr1_engage_under_a_snapshot_flood(
    daemon: Daemon, how: str
) -> None:
    stop = asyncio.Event()
    floods = [asyncio.create_task(_flood(daemon.socket, stop)) for _ in range(8)]
    loop = asyncio.get_running_loop()
    try:
        await asyncio.sleep(1.0)  # the flood is on
        if how == "file":
            (daemon.data_dir / "KILL").write_text("halt\n")
        else:
            os.kill(daemon.pid, signal.SIGUSR1)
        deadline = loop.time() + KILL_WAIT
        while not await asyncio.to_thread(_kill_rows, daemon.data_dir):
            assert loop.time() < deadline, "the kill switch did not engage under the flood"
            await asyncio.sleep(0.05)
        # Still under the flood: a person's status answers, and the flood holds little memory
        # (each flooding client holds one snapshot at most, shared; before, 64 MB each).
        state = await kill_state(daemon.socket)
        assert state["engaged"] and state["source"] == how and state["level"] == "halt"
        assert daemon.rss_mb() < 250
    finally:
        stop.set()
        await asyncio.gather(*floods, return_exceptions=True)
    daemon.stop()
    assert "Traceback" not in daemon.stderr, daemon.stderr
