"""An adversarial review of the README's "What the engine promises, and how the tests attack
it", read with the kill switch, the journal and the circuit breakers: each test is a hole found
by attacking a promise literally, failing before its fix. Every wait is bounded.

Tried and held (no test added):
- a KILL file written while a max-speed simulated market floods the loop: engaged within 0.5 s;
- a second `cockpit engine`, a second embedded cockpit (tmux) on a held data dir: exit 2, pid named;
- a journal removed with its anchor kept, cut to 0 bytes, a directory, a link to /dev/zero: refused;
- an anchor that is a directory or an empty file: refused; none at all: info.anchor says so;
- `config check`, `cockpit engine` and the embedded cockpit refuse a kill_file naming the WAL alike;
- a reduce-only approval kept at `entries`, approved after a flatten closed the position: denied;
- `kill --level flatten` on an engine whose loop died: the reply says its flatten orders are denied;
- a backtest on a header-only CSV, an empty file, one row: one line each, nothing traded;
- a hello whose name holds a lone surrogate: one protocol error line, the connection stays;
- a kill with an unknown key, a null or upper-case level: engaged since (tests/test_kill_form.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.control import ControlServer
from engine.datadir import JOURNAL_FILE, KILL_READ_BYTES, read_kill_level
from engine.history import RowFilter, audit_records
from engine.journal import canonical_payload, verify_journal
from engine.runtime import Engine
from engine.strategies.base import Signal
from engine.types import Action
from engine.vocabulary import KILL_LEVELS
from tests.conftest import fast_config
from tests.test_control_support import Raw, served  # noqa: F401
from tests.test_safety_engine import BTC, Harness, harnesses, start  # noqa: F401

WAIT = 60.0  # a bound against hanging, never a performance assertion


async def _cli(*argv: str | bytes) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cockpit",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), WAIT)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def _audit(data_dir: Path) -> list[dict[str, object]]:
    return [r.to_dict() for r in audit_records(data_dir / JOURNAL_FILE, RowFilter(None), 0)]


# ----------------------------------------------------------------- text no journal row can hold


async def test_a_kill_whose_reason_is_in_another_encoding_is_engaged_and_recorded(
    served: tuple[Engine, ControlServer],  # noqa: F811
    data_dir: Path,
) -> None:
    """ "A kill is never refused for its reason": a reason typed in a Latin-1 terminal
    (``cockpit kill --reason $'fat finger \\xe9'``) reaches Python as a lone surrogate, which no
    UTF-8 journal row can hold. The kill latched in memory (status: ENGAGED) while its journal
    row failed: the CLI printed "engine error: TypeError ..." and exited 1, and a kill -9 then
    restarted the engine ACTIVE. Now the byte is recorded as its escape and the kill holds."""
    engine, server = served
    code, out, err = await _cli(
        "kill", "--socket", str(server.path), "--reason", b"fat finger \xe9"
    )
    assert code == 0, (out, err[:300])
    assert "kill switch engaged" in out and "TypeError" not in out + err
    assert engine.core is not None and engine.core.safety.kill.level == "halt"
    assert engine.core.safety.kill.reason == "fat finger \\udce9"
    assert engine.journal is not None and engine.journal.failed is None
    rows = _audit(data_dir)
    assert [(r["action"], r["accepted"]) for r in rows] == [("kill", True)]
    assert rows[0]["reason"] == "fat finger \\udce9"


async def test_no_command_text_can_fail_the_journal_or_lose_its_audit_row(
    served: tuple[Engine, ControlServer],  # noqa: F811
    data_dir: Path,
) -> None:
    """A JSON "\\ud800" escape is valid JSON, so the socket took it; in a command's argument
    it failed the audit row ("engine error: TypeError", a traceback on stderr) and left no
    record of who tried what. Each is answered and audited, and the engine trades on
    with a journal that verifies. (A client's or a command's name is refused by the protocol.)"""
    engine, server = served
    raw = await Raw.open(server.path)
    try:
        welcome = await raw.hello(name="op\ud800")  # refused by the protocol: one line
        assert welcome["type"] == "error" and not welcome["fatal"], welcome
        assert (await raw.hello(name="op"))["type"] == "welcome"
        sent = [
            ("c1", "pause", {"strategy": "ema_cross", "reason": "x\ud800"}),
            ("c2", "no\udce9such", {}),
            ("c3", "pause", {"strategy": "\ud83d", "reason": "ok"}),
            ("c4", "reject", {"id": "ap-\udfff", "reason": "r\ud800"}),
            ("c5", "kill", {"reason": "half an emoji \ud83d", "level": "entries"}),
        ]
        for cid, name, args in sent:
            await raw.send({"type": "command", "id": cid, "name": name, "args": args})
            reply = await raw.recv()
            while reply["type"] not in ("reply", "error"):
                reply = await raw.recv()
            assert reply.get("id", cid) == cid, reply
            assert "TypeError" not in reply["message"] and "engine error" not in reply["message"]
    finally:
        await raw.close()
    assert engine.core is not None and engine.core.safety.kill.level == "entries"
    assert engine.journal is not None and engine.journal.failed is None
    rows = _audit(data_dir)
    assert [r["action"] for r in rows] == ["pause", "pause", "reject", "kill"], rows
    await engine.journal.flush()
    assert verify_journal(data_dir / JOURNAL_FILE).ok


def test_a_row_with_a_lone_surrogate_is_written_with_a_replacement_character() -> None:
    """The journal's backstop for text from outside (a venue's error message cut inside an
    emoji's escape pair): the row is written, each lone surrogate as U+FFFD, not refused."""
    text = canonical_payload({"reason": "rejected \ud83d", "k\udce9": ["\udfff", 1.5]})
    assert text == '{"k\ufffd":["\ufffd",1.5],"reason":"rejected \ufffd"}'


# ------------------------------------------------------------ `cockpit kill`'s fallback level

# An engine whose loop does not answer (it accepts, never says welcome) and that catches
# SIGUSR1, noting it: what `cockpit kill` falls back to signalling.
_SILENT_ENGINE = """
import fcntl, os, pathlib, signal, socket, sys, time
mark = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGUSR1, lambda *_: mark.write_text("signalled"))
lock = os.open(sys.argv[2] + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(lock, fcntl.LOCK_EX)  # the socket's lock, held as the engine holds it
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(sys.argv[2])
pathlib.Path(sys.argv[2] + ".pid").write_text(str(os.getpid()))  # as the engine does
srv.listen(8)
pathlib.Path(sys.argv[3]).write_text("ready")
held = []
while True:
    conn, _ = srv.accept()
    held.append(conn)
"""


def test_a_flatten_the_fallback_can_only_deliver_as_halt_is_not_reported_done(
    tmp_path: Path,
) -> None:
    """ "Exits 0 only when the kill was delivered": with the socket silent, `cockpit kill
    --level flatten` falls back to SIGUSR1, and the engine reads the level from the KILL file
    (halt when there is none it can read). When that file could not be written (here a
    directory is in its place), SIGUSR1 engages halt only, yet the command exited 0 with
    "fell back: sent SIGUSR1 ...": the trader read flatten as done while every position stayed
    open. Now it says the engine engages halt, not flatten, and exits 1; so too a halt where a
    link named KILL says entries (the level SIGUSR1 then engages)."""
    import subprocess
    import time

    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    (data_dir / "KILL").mkdir()  # not a file the level can be written into
    sock, mark, ready = run_dir / "e.sock", tmp_path / "signalled", tmp_path / "ready"
    engine = subprocess.Popen(
        [sys.executable, "-c", _SILENT_ENGINE, str(mark), str(sock), str(ready)]
    )
    try:
        deadline = time.monotonic() + WAIT
        while not ready.exists():
            assert time.monotonic() < deadline and engine.poll() is None
            time.sleep(0.02)
        argv = ["kill", "--socket", str(sock), "--data-dir", str(data_dir), "--timeout", "1"]
        code, out, err = asyncio.run(_cli(*argv, "--level", "flatten", "--reason", "r"))
        while not mark.exists():  # SIGUSR1 is still sent: halt is better than nothing
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert code == 1, (out, err)
        assert "halt, not flatten" in out + err, (out, err)
        # A halt asked for is what SIGUSR1 delivers: done, exit 0.
        mark.unlink()
        code, out, err = asyncio.run(_cli(*argv, "--level", "halt", "--reason", "r"))
        assert code == 0, (out, err)
        assert "sent SIGUSR1" in out
        # A link by that name whose target says entries: SIGUSR1 engages entries, not halt.
        (data_dir / "KILL").rmdir()
        (tmp_path / "KILL.entries").write_text("entries\n")
        (data_dir / "KILL").symlink_to(tmp_path / "KILL.entries")
        code, out, err = asyncio.run(_cli(*argv, "--level", "halt", "--reason", "r"))
        assert code == 1, (out, err)
        assert "engages entries, not halt" in err, (out, err)
        assert (tmp_path / "KILL.entries").read_text() == "entries\n"  # never written through
    finally:
        engine.kill()
        engine.wait(timeout=WAIT)


# ------------------------------------------------------------------------- the KILL file's word

_LONG_HEADER = "# KILL file: write flatten below to close every position; entries only stops"


@pytest.mark.parametrize(
    ("content", "level"),
    [
        ("# entries\nflatten\n", "flatten"),  # was entries: the comment's word, a milder level
        ("# entries\n", "halt"),  # was entries: nothing named outside the comment
        ("#entries", "halt"),
        ("flatten#entries", "flatten"),
        ("  # was entries until Monday\n  Flatten  # closing all\n", "flatten"),
        (_LONG_HEADER + " new entries\nflatten\n", "flatten"),  # was halt: cut at 64 bytes
        (" " * (KILL_READ_BYTES - 7) + "entriesX", "halt"),  # a word cut by the read is none
        (" " * (KILL_READ_BYTES - 8) + "entries\n", "entries"),
    ],
    ids=["above", "only", "hash-word", "trailing", "indented", "long", "cut", "fit"],
)
def test_a_kill_file_reads_the_first_word_outside_a_comment(
    tmp_path: Path, content: str, level: str
) -> None:
    """ "A comment is fine": the reader turned every # into a space, so a commented word was
    read as the level. A KILL file saying "# entries" above "flatten" engaged entries (orders
    reducing the position kept working, nothing was closed), "# entries" alone engaged entries
    rather than the default halt, and a comment line past the first 64 bytes hid the level
    below it (halt for flatten). A comment now runs to the end of its line, and 4 KB are read."""
    path = tmp_path / "KILL"
    path.write_text(content)
    assert read_kill_level(path) == level


# ------------------------------------------------------------- SIGUSR1 while the engine stops


def test_a_sigusr1_while_the_engine_stops_is_held_not_a_death_by_signal(tmp_path: Path) -> None:
    """The README's "SIGUSR1 to the headless engine engages halt". Once the control socket
    closed at a stop, its handler was removed and SIGUSR1 was back to its default action: a
    `kill -USR1` sent while the engine stopped (a SIGTERM, a service restart) killed it by the
    signal (exit 138) before its session's end was journaled, and the kill was recorded
    nowhere: a service restarting it had it trading. Now a SIGUSR1 while the engine stops is
    kept in the KILL file at once (as a kill the journal cannot record is), and the stop stays
    clean."""
    import os
    import signal
    import subprocess
    import time

    from tests.test_control_support import short_dir

    data_dir = tmp_path / "data"
    with short_dir() as run_dir:
        sock = run_dir / "e.sock"
        argv = ["engine", "--data-dir", str(data_dir), "--socket", str(sock)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "cockpit", *argv],
            stdout=subprocess.PIPE,
            stderr=open(tmp_path / "err", "w"),  # noqa: SIM115
        )
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + WAIT
            while not (sock.exists() and (sock.parent / "e.sock.pid").exists()):
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.02)
            os.set_blocking(proc.stdout.fileno(), False)
            proc.send_signal(signal.SIGTERM)
            seen = ""
            while proc.poll() is None and '"state":"stopped"' not in seen:
                assert time.monotonic() < deadline
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGUSR1)  # until the session's end is journaled
                time.sleep(0.002)
                with contextlib.suppress(BlockingIOError):
                    seen += os.read(proc.stdout.fileno(), 1 << 20).decode()
            code = proc.wait(timeout=WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    err = (tmp_path / "err").read_text()[-2000:]
    assert code == 0, f"the engine died by signal {-code}" if code < 0 else (code, err)
    assert verify_journal(data_dir / JOURNAL_FILE).ok
    db = sqlite3.connect(f"file:{data_dir / JOURNAL_FILE}?mode=ro", uri=True)
    try:
        recorded = db.execute(
            "SELECT count(*) FROM journal WHERE kind = 'safety' AND payload LIKE '%kill_switch%'"
        ).fetchone()[0]
    finally:
        db.close()
    # Every kill shown is in the journal; one that came once it closed is in the KILL file.
    assert recorded >= seen.count('"what":"kill_switch"')
    assert recorded or (data_dir / "KILL").read_text() == "halt\n"


async def test_a_kill_from_outside_once_the_engine_stopped_is_kept_in_the_kill_file(
    data_dir: Path,
) -> None:
    """The same hole in process, without its timing: a SIGUSR1 kill that reached the engine
    once its journal was closed was shown (the headless output printed the kill_switch event)
    but recorded nowhere, so the next start traded. It is kept in the KILL file instead, at
    the level asked, never lowering what the file says."""
    engine = Engine(fast_config(data_dir), data_dir)
    await engine.start()
    await engine.run(max_events=50)
    await engine.stop()
    await engine.engage_kill("flatten", by="signal", reason="SIGUSR1", source="signal")
    assert read_kill_level(engine.kill_file) == "flatten"
    await engine.engage_kill("entries", by="signal", reason="SIGUSR1", source="signal")
    assert read_kill_level(engine.kill_file) == "flatten"
    again = Engine(fast_config(data_dir), data_dir)
    await again.start()
    try:
        assert again.core is not None and again.core.safety.kill.level == "halt"  # at start
        assert again.kill_file_level() is None or again.kill_file_level() == "flatten"
    finally:
        await again.stop()


# ----------------------------------------------------------- `cockpit kill` reaches the one asked


async def test_a_kill_for_one_data_dir_is_never_spent_on_another_engines_socket(
    served: tuple[Engine, ControlServer],  # noqa: F811
    tmp_path: Path,
) -> None:
    """`cockpit kill --socket S --data-dir D` with S an engine on another data directory (a
    stale variable in a script, two engines on one host): the kill halted the engine at S,
    and the command exited 0, "kill switch engaged", while the engine on D traded on. S's
    info file names its data directory: a socket serving another one is skipped, and D's own
    ways are taken (its socket, else the KILL file and SIGUSR1 to the holder of D's lock)."""
    engine_a, server = served
    data_b = tmp_path / "b"
    engine_b = Engine(fast_config(data_b), data_b)
    await engine_b.start()
    try:
        code, out, err = await _cli(
            "kill", "--socket", str(server.path), "--data-dir", str(data_b), "--reason", "b only"
        )
        assert engine_a.core is not None and not engine_a.core.safety.kill.engaged, out
        assert f"serves {engine_a.data_dir}, not {data_b}" in out + err
        assert read_kill_level(engine_b.kill_file) == "halt"
        assert code == 0, (out, err)  # the engine on D holds the lock: it is there to engage
    finally:
        await engine_b.stop()


async def test_a_release_naming_two_engines_is_refused_not_sent_to_the_socket(
    served: tuple[Engine, ControlServer],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The same contradiction on the other commands: `cockpit release --socket S --data-dir D`
    released the kill switch of the engine at S, which serves another data directory, while
    the person meant D's. Refused now (exit 2), nothing sent; each alone still works."""
    engine_a, server = served
    assert (await engine_a.command("kill", {"reason": "a"}))["ok"]
    release = ("release", "--confirm", "RELEASE", "--reason", "done")
    code, out, err = await _cli(
        *release, "--socket", str(server.path), "--data-dir", str(tmp_path / "b")
    )
    assert code == 2, (out, err)
    assert "give the one you mean" in err
    assert engine_a.core is not None and engine_a.core.safety.kill.engaged
    both = ("--socket", str(server.path), "--data-dir", str(engine_a.data_dir))
    code, out, err = await _cli(*release, *both)
    assert code == 0, (out, err)
    assert not engine_a.core.safety.kill.engaged


async def test_a_strategy_signal_with_a_lone_surrogate_does_not_stop_the_engine(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """ "A strategy that returns something that is not a well-formed signal does not stop the
    engine": one whose rule, reason or input name held a lone surrogate (text cut inside an
    emoji's escape pair, bytes decoded with surrogateescape) raised TypeError out of the
    journal's append, and the engine's loop stopped. It is recorded with U+FFFD and trades."""
    h = await start(harnesses, data_dir)
    await h.feed(BTC, 60_000.0)
    odd = Signal(Action.BUY, "rule\ud800", "why \udce9", 1.0, inputs={"k\ud83d": 1.0})
    await h.signal("alpha", BTC, odd, 60_000.0)
    await h.feed(BTC, 60_000.0)
    assert h.engine.journal is not None and h.engine.journal.failed is None
    assert not h.engine.blocked_reason
    decision = h.rows("decision")[-1].payload["decision"]
    assert (decision["rule"], decision["reason"]) == ("rule\ufffd", "why \ufffd")
    assert decision["inputs"] == {"k\ufffd": 1.0}
    assert h.core.portfolio.positions[BTC].qty == 0.01


_KILL_TOKENS = ["entries", "Entries", "halt", "flatten", "FLATTEN", "#", " ", "\n", "\r\n", "x"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_KILL_TOKENS), max_size=12))
def test_a_kill_file_never_reads_milder_than_halt_from_a_comment(tokens: list[str]) -> None:
    """The invariant behind the KILL file's word: whatever it holds, the level read is the
    first word outside a comment when that names a level, and halt otherwise; a word inside a
    comment never lowers it to entries (nor names flatten)."""
    import tempfile

    content = "".join(tokens)
    outside = [w for line in content.splitlines() for w in line.partition("#")[0].split()]
    expected = outside[0].lower() if outside and outside[0].lower() in KILL_LEVELS else "halt"
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "KILL"
        path.write_text(content)
        assert read_kill_level(path) == expected, content


# ------------------------------------------------------------------- a second engine writes nothing


async def test_a_second_engine_on_a_held_data_dir_makes_no_socket_dir_and_binds_nothing(
    served: tuple[Engine, ControlServer],  # noqa: F811
    tmp_path: Path,
) -> None:
    """ "A second one, whatever --socket it is given, writes nothing and exits 2": given a
    --socket in a directory that did not exist, it made that directory (and every missing one
    above it), and with --metrics it bound the port and printed its address, before it was
    told the data directory was taken. The data directory is now locked first."""
    engine, _server = served
    sock_dir = tmp_path / "new" / "run"
    code, out, err = await _cli(
        "engine", "--data-dir", str(engine.data_dir), "--socket", str(sock_dir / "x.sock"),
        "--metrics", "0", "--for", "1",
    )  # fmt: skip
    assert code == 2, (out, err)
    assert err.splitlines() == [next(line for line in err.splitlines() if "in use" in line)]
    assert out == ""
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------ a kill over a busy socket


async def _operator(path: Path, name: str) -> Raw:
    raw = await Raw.open(path)
    assert (await raw.hello(name=name, subscribe=False))["type"] == "welcome"
    return raw


async def test_a_kill_is_not_refused_behind_a_connections_commands_in_flight(
    served: tuple[Engine, ControlServer],  # noqa: F811
) -> None:
    """The engine latches a kill at once, even while a venue request holds its command lock;
    but the socket refused it first when the connection already had its 16 commands in
    flight (an attached cockpit's approvals waiting on a slow venue): "refused: 16 commands
    already running on this connection", no kill. A kill has one place beyond the limit."""
    from engine.control import MAX_INFLIGHT

    engine, server = served
    raw = await _operator(server.path, "desk")
    try:
        async with engine.command_lock:  # the engine busy: every command waits its turn
            for i in range(MAX_INFLIGHT):
                args = {"strategy": "ema_cross", "reason": f"r{i}"}
                await raw.send({"type": "command", "id": f"p{i}", "name": "pause", "args": args})
            await raw.send({"type": "command", "id": "k", "name": "kill", "args": {}})
            for _ in range(200):  # latched before any reply can come
                if engine.core is not None and engine.core.safety.kill.engaged:
                    break
                await asyncio.sleep(0.01)
            assert engine.core is not None and engine.core.safety.kill.level == "halt"
            await raw.send({"type": "command", "id": "k2", "name": "kill", "args": {}})
            refused = await raw.recv_type("reply")  # one place only: a second is refused
            assert refused["id"] == "k2" and "already running" in refused["message"]
        replies = [await raw.recv_type("reply") for _ in range(MAX_INFLIGHT + 1)]
        (kill,) = [r for r in replies if r["id"] == "k"]
        assert kill["ok"], kill
    finally:
        await raw.close()


async def test_a_kill_whose_key_another_client_used_still_engages(
    served: tuple[Engine, ControlServer],  # noqa: F811
) -> None:
    """Idempotency keys are the server's, across connections: a script that numbers its
    commands from 1 had its kill (id "1") refused, "idempotency key '1' was already used for
    a different command", because another client's pause had used "1". The kill runs."""
    engine, server = served
    other = await _operator(server.path, "desk")
    script = await _operator(server.path, "script")
    try:
        pause = {"strategy": "ema_cross", "reason": "look"}
        await other.send({"type": "command", "id": "1", "name": "pause", "args": pause})
        assert (await other.recv_type("reply"))["ok"]
        await script.send({"type": "command", "id": "1", "name": "kill", "args": {}})
        reply = await script.recv_type("reply")
        assert reply["ok"], reply
        assert engine.core is not None and engine.core.safety.kill.level == "halt"
        # The pause's reply is still the one its key returns.
        await other.send({"type": "command", "id": "1", "name": "pause", "args": pause})
        again = await other.recv_type("reply")
        assert again.get("duplicate") is True and again["ok"]
    finally:
        await other.close()
        await script.close()


_SIGNALLED_BEFORE_THE_CLI_LOADS = """
import os, signal, sys
import cockpit  # the package, as `python -m cockpit engine` and the `cockpit` script load it
os.kill(os.getpid(), signal.SIGUSR1)  # before cockpit.cli and asyncio load
from cockpit import cli
sys.exit(cli.main())
"""


def test_a_sigusr1_before_the_cli_module_loaded_engages_the_kill(tmp_path: Path) -> None:
    """ "SIGUSR1 engages halt, also when it arrives while the engine is starting": its handler
    was installed by cockpit.cli's main(), after that module and its imports (asyncio among
    them) had loaded, a tenth of a second in which `kill -USR1` still terminated the engine
    (exit 138, no kill, a service restarting it trading). The package installs it first."""
    import json
    import subprocess

    from tests.test_control_support import short_dir

    data = tmp_path / "data"
    with short_dir() as d:
        rest = ["--data-dir", str(data), "--socket", str(d / "e.sock"), "--for", "1"]
        proc = subprocess.run(
            [sys.executable, "-c", _SIGNALLED_BEFORE_THE_CLI_LOADS, "engine", *rest],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-500:])
    final = [json.loads(line) for line in proc.stdout.splitlines() if '"final"' in line]
    assert final and final[-1]["kill_switch"] == "halt"
