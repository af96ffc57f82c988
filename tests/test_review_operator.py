"""A second adversarial review of the operator surface over the control socket and the
watch-from-anywhere duties: each test is a hole found by attacking a promise as a hostile
tester would, failing before its fix. Every wait is bounded.

Tried and held (no test added): every one-shot command of the README's table with empty, unknown,
over-long, control-character, NaN/inf/1e400 and negative arguments, with and without --json,
against a running engine and with no engine (one line, exit 1/2/3, --json one JSON document);
a socket answering garbage snapshots or non-text messages (no traceback); approve and reject of
one id at once (one wins, the other is refused and both are audited); set-limit twice at once
(serialised, before -> after chained); a client that sends a command and disconnects (run once,
audited); commands while the journal is blocked (answered at once, a kill kept in the KILL
file); the apprise logger (kept off every handler) and the command hook (own process group,
killed with its children)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from cockpit.socket_client import SocketClient
from engine.control import MAX_LINE, ControlServer, encode
from engine.datadir import JOURNAL_FILE
from engine.history import RowFilter, audit_records
from engine.runtime import Engine
from tests.test_control_support import (
    served,  # noqa: F401  (an engine and its socket)
    short_dir,
)

# COCKPIT_REVIEW_FLOOD=100000 for a longer flood.
FLOOD = int(os.environ.get("COCKPIT_REVIEW_FLOOD", "400"))


async def _viewer(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(
        b'{"type":"hello","version":1,"role":"viewer","name":"intruder","subscribe":false}\n'
    )
    await writer.drain()
    assert b'"welcome"' in await asyncio.wait_for(reader.readline(), 10)
    return reader, writer


async def _replies(reader: asyncio.StreamReader, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < count:
        msg = json.loads(await asyncio.wait_for(reader.readline(), 30))
        if msg.get("type") == "reply":
            got.append(msg)
    return got


def _refused_counted(data_dir: Path) -> tuple[int, int]:
    """(audit rows, refused commands they account for): a summary row counts many."""
    rows = [r.to_dict() for r in audit_records(data_dir / JOURNAL_FILE, RowFilter(None), 0)]
    counts = [re.match(r"refused: (\d+) commands? \(", r["message"]) for r in rows]
    return len(rows), sum(int(m.group(1)) if m else 1 for m in counts)


# --------------------------------------------------------------------------- viewers


async def test_a_viewer_flooding_commands_writes_a_bounded_number_of_audit_rows(
    served: tuple[Engine, ControlServer],  # noqa: F811
    data_dir: Path,
) -> None:
    """A read-only viewer looping on ``kill`` wrote an audit row per try, ~2,000 journal rows a
    second (1.3 MB in a quarter second with a long reason): a client that may change nothing
    could fill the disk, and a full disk blocks the journal and halts trading. Past a burst,
    a viewer's refused commands are counted and recorded in one summary row, so the audit log
    still accounts for every one."""
    engine, server = served
    server.viewer_audit_burst = 5
    server._viewer_tokens = 5.0
    reader, writer = await _viewer(server.path)
    try:
        for i in range(FLOOD):
            line = {"type": "command", "id": f"k{i}", "name": "kill", "args": {"reason": "x" * 400}}
            writer.write(json.dumps(line).encode() + b"\n")
        await writer.drain()
        replies = await _replies(reader, FLOOD)
    finally:
        writer.close()
    assert all(r["ok"] is False and r.get("refused") for r in replies)
    assert all("viewer" in r["message"] for r in replies)
    assert engine.core is not None and engine.core.safety.kill.level is None
    await server.close()  # what the rate held back is recorded at close
    rows, accounted = _refused_counted(data_dir)
    assert rows <= 5 + 2  # the burst, a summary while running, one at close
    assert accounted == FLOOD


async def test_the_viewer_audit_burst_is_exact_and_the_next_one_is_summarised(
    served: tuple[Engine, ControlServer],  # noqa: F811
    data_dir: Path,
) -> None:
    """The boundary: the burst's commands each get a row of their own; the one after it is
    refused all the same and counted in a summary row naming what it was."""
    _, server = served
    server.viewer_audit_burst = 3
    server._viewer_tokens = 3.0
    server.viewer_audit_every_s = 3600.0
    reader, writer = await _viewer(server.path)
    try:
        for i, name in enumerate(["kill", "pause", "release"]):
            writer.write(json.dumps({"type": "command", "id": f"a{i}", "name": name}).encode())
            writer.write(b"\n")
            await writer.drain()
            await _replies(reader, 1)
        assert _refused_counted(data_dir) == (3, 3)
        writer.write(b'{"type":"command","id":"b","name":"flatten","args":{"all":true}}\n')
        await writer.drain()
        (over,) = await _replies(reader, 1)
    finally:
        writer.close()
    assert over["ok"] is False and over.get("refused")
    assert _refused_counted(data_dir) == (3, 3)  # not yet: no token
    await server.close()
    rows = [r.to_dict() for r in audit_records(data_dir / JOURNAL_FILE, RowFilter(None), 0)]
    assert [r["action"] for r in rows] == ["kill", "pause", "release", "flatten"]
    summary = rows[-1]
    assert summary["message"].startswith("refused: 1 command (flatten x1)")
    assert "flatten x1" in summary["message"] and summary["client"] == "socket:intruder"


# --------------------------------------------------------------------------- an engine that lies


async def _liar(path: Path, reply: bytes) -> asyncio.Server:
    """A socket that speaks the handshake, then answers every command with ``reply`` (its
    ``ID`` replaced by the command's id): an engine with a bug, or something posing as one."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b'{"type":"welcome","version":1,"server_seq":1,"instance":"x","pid":1}\n')
        while line := await reader.readline():
            command = json.loads(line)
            writer.write(reply.replace(b"ID", command["id"].encode()) + b"\n")
            await writer.drain()

    return await asyncio.start_unix_server(serve, path=str(path))


async def _cli(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cockpit",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    "reply",
    [
        b'{"type":"reply","id":"ID","ok":"false","message":"refused: not today"}',
        b'{"type":"reply","id":"ID","ok":1,"message":"refused"}',
        b'{"type":"reply","id":"ID","ok":[0],"message":["not","text"]}',
    ],
    ids=["ok-says-false", "ok-is-1", "ok-is-a-list"],
)
async def test_a_reply_whose_ok_is_not_true_is_no_confirmation(reply: bytes) -> None:
    """``kill --all`` exits 0 only when every engine confirmed. A reply whose ``ok`` was the
    string "false" (or 1, or a list) counted as a confirmation: truthy, so the fleet's kill read
    as delivered everywhere. Only ``true`` confirms; anything else is a refusal (exit 1)."""
    with short_dir() as d:
        (d / "run").mkdir(mode=0o700)
        sock = d / "run" / "liar.sock"
        server = await _liar(sock, reply)
        fleet = d / "fleet.toml"
        fleet.write_text(f'[engines.liar]\nsocket = "{sock}"\n')
        try:
            code, out, err = await _cli("kill", "--all", "--fleet", str(fleet), "--reason", "x")
            one, one_out, one_err = await _cli("kill", "--socket", str(sock), "--reason", "x")
            js, js_out, _ = await _cli(
                "kill", "--all", "--fleet", str(fleet), "--reason", "x", "--json"
            )
        finally:
            server.close()
    assert code == 1, (out, err)
    assert "refused" in out and "Traceback" not in err
    assert one == 1, (one_out, one_err)
    assert js == 1 and json.loads(js_out)["engines"][0]["ok"] is False


# --------------------------------------------------------------------------- a kill's wording


# 100,000 characters; 8,000 characters JSON writes as 12 bytes each (96 KB): both past 64 KB.
@pytest.mark.parametrize("reason", ["x" * 100_000, "\U0001f525" * 8_000], ids=["ascii", "emoji"])
async def test_a_kill_with_a_reason_past_the_line_limit_is_still_engaged(
    served: tuple[Engine, ControlServer],  # noqa: F811
    data_dir: Path,
    reason: str,
) -> None:
    """ "An emergency stop never waits on its wording": a pasted reason past the socket's
    64 KB line made the engine close the connection, and ``cockpit kill`` exited 1 with
    "not applied: engine went away", no kill, no fallback, no audit row. The client cuts a
    kill's reason (the engine cuts it to 500 characters anyway) so the kill goes through."""
    engine, server = served
    code, out, err = await _cli("kill", "--socket", str(server.path), "--reason", reason)
    assert code == 0, (out, err[:300])
    assert "kill switch engaged" in out
    assert engine.core is not None and engine.core.safety.kill.level == "halt"
    rows = [r.to_dict() for r in audit_records(data_dir / JOURNAL_FILE, RowFilter(None), 0)]
    assert [(r["action"], r["accepted"]) for r in rows] == [("kill", True)]
    assert rows[0]["reason"].startswith(reason[:100]) and len(rows[0]["reason"]) <= 500


async def test_a_command_past_the_line_limit_is_not_sent_and_the_link_stays(
    served: tuple[Engine, ControlServer],  # noqa: F811
) -> None:
    """Any other command whose line the engine cannot frame closed the connection (failing
    every command in flight on it) with "engine went away". The boundary: a line of exactly
    the limit reaches the engine and is answered; one byte more is refused before it is sent,
    naming the limit, and the connection keeps serving."""
    _, server = served
    client = await SocketClient.open(server.path, role="operator", name="desk", subscribe=False)
    try:
        base = len(encode({"type": "command", "id": "0" * 32, "name": "pause", "args": {}}))
        fill = {"strategy": "ema_cross", "reason": ""}
        overhead = len(encode({"type": "command", "id": "0" * 32, "name": "pause", "args": fill}))
        assert overhead > base
        at_limit = "r" * (MAX_LINE - (overhead - 1))
        answered = await client.command("pause", {"strategy": "ema_cross", "reason": at_limit})
        over = await client.command("pause", {"strategy": "ema_cross", "reason": at_limit + "r"})
        after = await client.command("pause", {"strategy": "ema_cross", "reason": "short"})
    finally:
        await client.close()
    assert answered["ok"] is False and "reason" in answered["message"]
    assert "sent" not in answered  # the engine's own refusal: too long for a reason
    assert over["ok"] is False and over["sent"] is False
    assert f"{MAX_LINE:,}" in over["message"] and "Nothing was applied" in over["message"]
    assert after["ok"] is True


# --------------------------------------------------------------------------- a link that drops

# An engine that reads a command and goes away before it answers (it stopped, or crashed, after
# it may have run it), in a process of its own: ``cockpit kill``'s fallback signals the process
# behind the socket, and it must not be the test's. It notes a SIGUSR1 in the file NOTE.
_DROPPER = r"""
import asyncio, fcntl, os, signal, sys
from pathlib import Path

path, note = sys.argv[1], Path(sys.argv[2])
lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(lock, fcntl.LOCK_EX)  # the socket's lock, held as the engine holds it
Path(path + ".pid").write_text(f"{os.getpid()}\n")  # as the engine does beside its socket

async def serve(reader, writer):
    await reader.readline()
    writer.write(b'{"type":"welcome","version":1,"server_seq":1,"instance":"a","pid":1}\n')
    await writer.drain()
    await reader.readline()
    writer.transport.abort()

async def main():
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, lambda: note.write_text("SIGUSR1"))
    server = await asyncio.start_unix_server(serve, path=path)
    print("ready", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_kill_whose_link_drops_before_the_answer_falls_back() -> None:
    """The engine read the kill and the link dropped before its answer (it was stopping, or
    died): ``cockpit kill`` said "not applied: engine went away" and exited 1, though the
    engine may well have engaged it, and tried neither SIGUSR1 nor the KILL file. The answer
    is unknown, as after a timeout: the kill falls back, and says which path it took."""
    with short_dir() as d:
        (d / "run").mkdir(mode=0o700)
        sock, note = d / "run" / "e.sock", d / "note"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _DROPPER, str(sock), str(note), stdout=asyncio.subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
            code, out, err = await _cli("kill", "--socket", str(sock), "--reason", "drop")
            for _ in range(100):
                if note.exists():
                    break
                await asyncio.sleep(0.05)
            signalled = note.exists()  # the fallback reached the process behind the socket
        finally:
            proc.kill()
            await proc.wait()
    assert "not applied" not in out + err
    assert signalled, (code, out, err)
    assert code == 0 and "SIGUSR1" in out + err, (out, err)


async def test_a_command_unanswered_when_the_engine_restarts_is_not_run_again(
    data_dir: Path,
) -> None:
    """A command sent, then the link dropped before its answer, was sent again with the same
    key on reconnect: right for the same engine run (which remembers the key), wrong after a
    restart: the new run does not know the key, so a command the old run had already applied
    and journaled ran twice (a second flatten, a second set-limit from a stale screen). Now
    the client tells the person it may or may not have been applied, and sends nothing."""
    seen: list[dict[str, Any]] = []
    runs = iter(["run-1", "run-2"])

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        run = next(runs)
        await reader.readline()
        welcome = {"type": "welcome", "version": 1, "server_seq": 1, "instance": run, "pid": 1}
        writer.write(json.dumps(welcome).encode() + b"\n")
        await writer.drain()
        while line := await reader.readline():
            command = json.loads(line)
            seen.append({"run": run, **command})
            if run == "run-1":
                writer.transport.abort()  # applied, then stopped before answering
                return
            writer.write(json.dumps({"type": "reply", "id": command["id"], "ok": True}).encode())
            writer.write(b"\n")
            await writer.drain()

    with short_dir() as d:
        sock = d / "e.sock"
        server = await asyncio.start_unix_server(serve, path=str(sock))
        client = SocketClient(
            sock, subscribe=False, backoff=(0.01, 0.05), command_timeout=20.0, ping_interval=3600
        )
        try:
            await client.connect()
            reply = await asyncio.wait_for(
                client.command("set_limit", {"name": "max_order_notional", "value": 5}), 30
            )
            for _ in range(100):  # the reconnect to run 2 happens meanwhile or just after
                if client.connected and client.instance == "run-2":
                    break
                await asyncio.sleep(0.05)
            after = await asyncio.wait_for(client.command("pause", {"strategy": "s"}), 30)
        finally:
            await client.close()
            server.close()
    assert [(c["run"], c["name"]) for c in seen] == [("run-1", "set_limit"), ("run-2", "pause")]
    assert reply["ok"] is False and "may or may not have been applied" in reply["message"]
    assert after["ok"] is True


# --------------------------------------------------------------------------- release


def test_a_typed_release_never_lifts_a_kill_engaged_while_the_person_typed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cockpit release` on a terminal shows the engaged kill and waits for RELEASE to be
    typed. Meanwhile another operator escalated it to flatten; the release then lifted the
    flatten kill the person never saw (the cockpit's dialog names what it showed; this path
    did not). Now the engine refuses it: the switch changed since they looked."""
    import builtins

    from cockpit import oneshot
    from cockpit.oneshot import build_parser, run_oneshot
    from tests.test_control_support import ThreadEngine

    with short_dir() as sd, ThreadEngine(sd / "data", sd / "e.sock") as te:
        sock = ["--socket", str(te.socket)]
        assert run_oneshot(build_parser().parse_args(["kill", "--reason", "lunch", *sock])) == 0

        def type_release(prompt: str = "") -> str:
            async def escalate() -> None:
                other = await SocketClient.open(te.socket, name="desk-2", subscribe=False)
                try:
                    reply = await other.command("kill", {"level": "flatten", "reason": "crash"})
                    assert reply["ok"], reply
                finally:
                    await other.close()

            asyncio.run(escalate())  # while the person types
            return "RELEASE"

        monkeypatch.setattr(oneshot, "_stdin_is_tty", lambda: True)
        monkeypatch.setattr(builtins, "input", type_release)
        capsys.readouterr()
        code = run_oneshot(build_parser().parse_args(["release", "--reason", "back", *sock]))
        _, err = capsys.readouterr()
        assert te.engine is not None and te.engine.core is not None
        level = te.engine.core.safety.kill.level
    assert code == 1, err
    assert "changed since you looked" in err and "flatten" in err
    assert level == "flatten"


async def test_commands_the_socket_refuses_itself_are_in_the_audit_log(
    served: tuple[Engine, ControlServer],  # noqa: F811
    data_dir: Path,
) -> None:
    """`cockpit audit` lists every command refused before it runs. Past the commands one
    connection may have in flight (the engine busy: here its command lock held), and for a
    reused idempotency key, the socket answered "refused" and the audit log had nothing."""
    from engine.control import MAX_INFLIGHT

    engine, server = served
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    writer.write(
        b'{"type":"hello","version":1,"role":"operator","name":"desk","subscribe":false}\n'
    )
    await writer.drain()
    assert b'"welcome"' in await asyncio.wait_for(reader.readline(), 10)
    sent = MAX_INFLIGHT + 3
    async with engine.command_lock:  # the engine busy: every command waits its turn
        for i in range(sent):
            line = {"type": "command", "id": f"p{i}", "name": "pause", "args": {"strategy": "x"}}
            writer.write(json.dumps(line).encode() + b"\n")
        writer.write(b'{"type":"command","id":"p0","name":"resume","args":{}}\n')
        await writer.drain()
        early = await _replies(reader, 4)  # answered at once: refused by the socket
    replies = early + await _replies(reader, MAX_INFLIGHT)
    writer.close()
    assert sum("already running" in r["message"] for r in early) == 3
    assert sum("idempotency key" in r["message"] for r in early) == 1
    assert len(replies) == sent + 1 and not any(r["ok"] for r in replies)
    await server.close()
    rows, accounted = _refused_counted(data_dir)
    assert MAX_INFLIGHT < rows <= MAX_INFLIGHT + 2  # the commands run, and the summaries
    assert accounted == sent + 1


# --------------------------------------------------------------------------- shutdown


async def test_a_command_arriving_during_shutdown_is_answered_for_sure(
    served: tuple[Engine, ControlServer],  # noqa: F811
    data_dir: Path,
) -> None:
    """While the server closed it waited for the commands running, but went on reading new
    ones meanwhile: those ran, were journaled, and the connection was cut before their reply
    (the client could only guess). Now every command that runs is answered, and one arriving
    once the close began is refused as "not applied" (a kill still runs)."""
    engine, server = served
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    writer.write(
        b'{"type":"hello","version":1,"role":"operator","name":"desk","subscribe":false}\n'
    )
    await writer.drain()
    assert b'"welcome"' in await asyncio.wait_for(reader.readline(), 10)
    replies: list[dict[str, Any]] = []

    async def send() -> None:
        for i in range(FLOOD * 10):
            args = {"name": "max_order_notional", "value": 1000 + i, "reason": "r"}
            line = {"type": "command", "id": f"s{i}", "name": "set_limit", "args": args}
            try:
                writer.write(json.dumps(line).encode() + b"\n")
                await writer.drain()
            except OSError:
                return
            await asyncio.sleep(0)

    async def read() -> None:
        with contextlib.suppress(OSError):
            while line := await reader.readline():
                replies.append(json.loads(line))

    sender, receiver = asyncio.create_task(send()), asyncio.create_task(read())
    while not any(r.get("ok") for r in replies):
        await asyncio.sleep(0.01)
    await server.close()
    await asyncio.wait_for(asyncio.gather(sender, receiver), 30)
    writer.close()
    applied = [r for r in replies if r.get("type") == "reply" and r["ok"]]
    shutting = [r for r in replies if "shutting down" in r.get("message", "")]
    rows = [r.to_dict() for r in audit_records(data_dir / JOURNAL_FILE, RowFilter(None), 0)]
    accepted = [r for r in rows if r["accepted"]]
    assert applied and shutting
    assert all("not applied" in r["message"] for r in shutting if r.get("type") == "reply")
    assert len(accepted) == len(applied)  # every command that ran was answered
    assert engine.core is not None
    assert engine.core.limits.max_order_notional == applied[-1]["after"]


async def test_a_kill_arriving_during_shutdown_still_runs(
    served: tuple[Engine, ControlServer],  # noqa: F811
) -> None:
    """The refusal during shutdown spares the kill switch: an emergency stop sent while the
    engine stops is engaged and journaled (it holds at the next start); a pause is not run."""
    engine, server = served
    client = await SocketClient.open(server.path, role="operator", name="desk", subscribe=False)
    try:
        server._closing = True  # as close() sets it first
        paused = await client.command("pause", {"strategy": "ema_cross", "reason": "late"})
        killed = await client.command("kill", {"level": "halt", "reason": "late"})
    finally:
        await client.close()
    assert paused["ok"] is False and "not applied" in paused["message"]
    assert killed["ok"] is True
    assert engine.core is not None and engine.core.safety.kill.level == "halt"


# --------------------------------------------------------------------------- which engine


def test_a_data_dir_never_reaches_another_engine_through_the_shared_default_socket(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under $XDG_RUNTIME_DIR (every login session has it) the default socket is one file for
    every data dir: engine A holds it, engine B was started with a socket of its own. Then
    `cockpit kill --data-dir B` killed A and said "kill switch engaged" (B kept trading),
    `status --data-dir B` showed A, and a fleet file naming both data dirs was refused as
    "both use the socket". A socket whose engine names another data dir is not B's."""
    from cockpit.fleet import load_fleet
    from cockpit.oneshot import build_parser, run_oneshot
    from tests.test_control_support import ThreadEngine

    with short_dir() as sd:
        runtime = sd / "xdg"
        (runtime / "cockpit").mkdir(parents=True, mode=0o700)
        runtime.chmod(0o700)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        a_dir, b_dir = sd / "a", sd / "b"
        b_dir.mkdir(mode=0o700)
        with ThreadEngine(a_dir, runtime / "cockpit" / "default.sock") as a:
            capsys.readouterr()
            status = run_oneshot(build_parser().parse_args(["status", "--data-dir", str(b_dir)]))
            kill = run_oneshot(
                build_parser().parse_args(["kill", "--data-dir", str(b_dir), "--reason", "b"])
            )
            out, err = capsys.readouterr()
            assert a.engine is not None and a.engine.core is not None
            a_kill = a.engine.core.safety.kill.level
            fleet = sd / "fleet.toml"
            fleet.write_text(
                f'[engines.a]\ndata_dir = "{a_dir}"\n[engines.b]\ndata_dir = "{b_dir}"\n'
            )
            sockets = [e.socket for e in load_fleet(fleet)]
            b_kill_file = (b_dir / "KILL").read_text().strip()
    assert a_kill is None, (out, err)  # engine A was not the one asked for
    assert status == 3 and kill == 3  # no engine of B answered; its KILL file holds the kill
    assert b_kill_file == "halt"
    assert "serves another data dir" in err
    assert sockets == [runtime / "cockpit" / "default.sock", b_dir / "cockpit.sock"]
