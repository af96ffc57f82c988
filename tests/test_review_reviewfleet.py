"""An adversarial review of the fleet (``cockpit attach --fleet``, ``cockpit kill --all
--fleet``): each test pins a hole found by attacking it with real engines, fixed.

Attacks that held (each tried by hand against headless engines, or by the existing tests):
- an engine down at start: its row DISCONNECTED with the reason, it joins when it starts;
- an engine stuck (SIGSTOP: the socket accepts, nothing answers): DISCONNECTED after 6 s, the
  other rows keep moving, `K` answers it "unreachable, may or may not" within the bound;
- an engine killed and restarted under its open cockpit (Enter): DISCONNECTED banner, then
  "reconnected to a new engine run"; the queue reloads from the new run;
- one socket listed twice, also through a symlink or a hard link to the socket file; a data
  dir listed twice, or beside its own socket path: refused at load (exit 2, one line);
- broken fleet files (not TOML, empty, a BOM, 4 MB+, a FIFO, both or neither path, unknown
  keys, 65 engines, TOML's own duplicate tables, a name with an escape or a space): one line;
- paths that cannot work (a directory or /dev/null as socket, a file as data dir, sun_path
  overflow, /proc): `kill --all` says each engine's problem in its line, no traceback, exit 3;
- `kill --all` with one engine refusing and one unreachable: exit 3 (not reached wins);
- the same approval id waiting on two engines: a/r in the queue answer the labelled engine
  only (and an approval carries its intent hash, so a restarted run's lookalike is refused);
- a viewer fleet: a, r and K refused without a dialog, Enter opens a read-only cockpit;
- an approval that expired on its engine while queued: the engine expires it before it
  applies an answer (it ticks to now first), the row leaves with the next pull; while its
  engine is stuck the TTL reads "?", `a` answers "not sent", and when the row under the
  cursor went away the key says so and sends nothing;
- `K` while an engine's link drops or its engine restarts mid-command: "unreachable, may or
  may not have been applied" (never re-sent to a new run), the dialog stays open;
- a kill reason with escapes: the engine stores it with control characters blanked, so the
  "already engaged (by ...: reason)" answers shown by the fleet are clean.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from textual.pilot import Pilot

from cockpit.fleet import (
    ACCEPTED,
    FELL_BACK,
    REFUSED,
    UNREACHABLE,
    FleetError,
    fleet_exit_code,
    fleet_from_args,
    kill_fleet,
    load_fleet,
)
from cockpit.socket_client import EngineUnreachable, SocketClient
from cockpit.tui.fleet import CONNECTED, DISCONNECTED, FleetKillScreen, FleetMember
from cockpit.tui.fleet_app import FleetApp
from cockpit.tui.session import DialSession
from engine.control import PROTOCOL_VERSION, ControlServer, default_socket_path
from engine.runtime import Engine
from engine.vocabulary import ExitCode
from tests.test_control_support import WAIT, approve_config, short_dir
from tests.test_tui import WIDE, fixed_clock, plain

# --------------------------------------------------------------------------- helpers


@contextlib.asynccontextmanager
async def engine_at(data_dir: Path, sock: Path, quotes: int = 0) -> AsyncIterator[ControlServer]:
    """A real engine of ``data_dir`` serving its control socket at ``sock``, fed ``quotes``
    market events first (approvals wait), then idle."""
    engine = Engine(approve_config(data_dir), data_dir)
    await engine.start()
    if quotes:
        await engine.run(max_events=quotes)
    server = ControlServer(engine, sock)
    try:
        await server.start()
        yield server
    finally:
        await server.close()
        await engine.stop()


@contextlib.asynccontextmanager
async def tunnel(local: Path, remote: Path) -> AsyncIterator[None]:
    """What ``ssh -N -L local:remote`` is to the cockpit: another socket file, the same engine."""

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        r2, w2 = await asyncio.open_unix_connection(str(remote))
        await asyncio.gather(pipe(r, w2), pipe(r2, w))

    server = await asyncio.start_unix_server(handle, str(local))
    try:
        yield
    finally:
        server.close()


def kill_args(fleet: Path, **kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = {
        "fleet": str(fleet),
        "all": True,
        "level": "halt",
        "reason": "review",
        "timeout": 5.0,
        "json": False,
        "socket": None,
        "data_dir": None,
        "config": None,
    }
    return argparse.Namespace(**(base | kw))


async def until(pilot: Pilot[Any], check: Callable[[], Any], what: str) -> None:
    """Bounded wait (never a timing assertion): keys and timers go on meanwhile."""
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await pilot.pause(0.05)


def member(name: str, sock: Path, **kw: Any) -> FleetMember:
    client = SocketClient(sock, role="operator", name="review", ping_interval=1.0, **kw)
    return FleetMember(name, str(sock), DialSession(client))


# --------------------------------------------------------------------------- the fleet file


def test_a_name_ending_in_a_newline_is_refused(tmp_path: Path) -> None:
    """``$`` matches before a trailing newline: ``[engines."ok\\n"]`` passed the name rule,
    and `kill --all` printed that engine's line in two (a script reading one line per
    engine read a line "ok" and a line with no name)."""
    path = tmp_path / "fleet.toml"
    path.write_text('[engines."ok\\n"]\nsocket = "a.sock"\n')
    with pytest.raises(FleetError, match="engine name") as err:
        load_fleet(path)
    assert "\n" not in str(err.value)
    # The boundary: 32 characters pass, 33 do not; a tab or a trailing space neither.
    for name, ok in (("a" * 32, True), ("a" * 33, False), ("ok\t", False), ("ok ", False)):
        path.write_text(f'[engines."{name}"]\nsocket = "a.sock"\n')
        if ok:
            assert [e.name for e in load_fleet(path)] == [name]
        else:
            with pytest.raises(FleetError, match="engine name"):
                load_fleet(path)


@pytest.mark.parametrize("key", ["socket", "data_dir"])
def test_a_path_with_control_characters_is_refused(tmp_path: Path, key: str) -> None:
    """Names are kept printable, paths were not: a socket path holding escapes was shown as
    it is on the overview's detail line and in its DISCONNECTED reason, and the terminal
    obeyed it (tmux: the screen cleared and "HACKED" drawn, the window title set). A path
    with control characters is refused at load, one line, the path shown escaped; the same
    for --socket and --data-dir given on the command line."""
    path = tmp_path / "fleet.toml"
    path.write_text(f'[engines.evil]\n{key} = "\\u001b[2J\\u001b]0;pwned\\u0007.sock"\n')
    with pytest.raises(FleetError, match="control characters") as err:
        load_fleet(path)
    assert "\x1b" not in str(err.value) and "\n" not in str(err.value)
    option = "socket" if key == "socket" else "data_dir"
    args = argparse.Namespace(
        fleet=None, **{option: ["a.sock" if key == "socket" else "d", "x\x1b[2J"]}
    )
    with pytest.raises(FleetError, match="control characters"):
        fleet_from_args(args)
    # A plain path, spaces and non-ASCII letters included, is fine.
    path.write_text(f'[engines.ok]\n{key} = "my engines/éte.sock"\n')
    assert [e.name for e in load_fleet(path)] == ["ok"]


# --------------------------------------------------------------------------- kill --all


async def test_kill_all_answer_is_never_taken_from_the_engines_reply(tmp_path: Path) -> None:
    """The row was ``{"engine": ..., "answer": ..., **reply}``: a reply carrying its own
    ``answer`` (a server with a bug, or posing as an engine) replaced the verdict, and the
    exit code was computed from it: a refusal read "accepted", exit 0."""
    with short_dir() as d:
        sock = d / "fake.sock"

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.readline()  # hello
            welcome = {"type": "welcome", "version": PROTOCOL_VERSION, "instance": "fake-1"}
            w.write(json.dumps(welcome).encode() + b"\n")
            cmd = json.loads(await r.readline())
            reply = {
                "type": "reply",
                "id": cmd["id"],
                "ok": False,
                "message": "no",
                "answer": ACCEPTED,
                "engine": "someone-else",
            }
            w.write(json.dumps(reply).encode() + b"\n")
            await w.drain()

        server = await asyncio.start_unix_server(handle, str(sock))
        try:
            fleet = d / "fleet.toml"
            fleet.write_text(f'[engines.fake]\nsocket = "{sock}"\n')
            code = await kill_fleet(kill_args(fleet, json=True))
        finally:
            server.close()
    assert code == ExitCode.FAILURE


async def test_kill_all_through_two_tunnels_to_one_engine_is_not_confirmed_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two entries whose sockets reach the same engine (`ssh -L` to vps1 twice, vps2's
    tunnel pointed at the wrong host): "kill switch confirmed by 2 of 2 engines", exit 0,
    while vps2 was never asked. The second entry that reaches an engine run already
    answered is not a confirmation: unreachable, exit 3, and it says which entry it
    duplicates."""
    with short_dir() as d:
        (d / "run").mkdir(mode=0o700)
        async with (
            engine_at(tmp_path / "data", d / "run" / "e.sock") as server,
            tunnel(d / "vps2.sock", server.path),
        ):
            fleet = d / "fleet.toml"
            fleet.write_text(
                f'[engines.vps1]\nsocket = "{server.path}"\n'
                f'[engines.vps2]\nsocket = "{d / "vps2.sock"}"\n'
            )
            capsys.readouterr()
            code = await kill_fleet(kill_args(fleet))
    out, err = capsys.readouterr()
    assert code == ExitCode.UNREACHABLE, out + err
    lines = out.splitlines()
    assert [line.split()[:2] for line in lines] == [["vps1", "accepted"], ["vps2", "unreachable"]]
    assert "same engine as vps1" in lines[1]
    assert "confirmed by 1 of 2" in err


RESULTS = st.lists(
    st.tuples(
        st.sampled_from([ExitCode.OK, ExitCode.FAILURE, ExitCode.UNREACHABLE]),
        st.fixed_dictionaries(
            {"ok": st.booleans()},
            optional={
                "path": st.sampled_from(["socket", "fallback"]),
                "sent": st.booleans(),
                "instance": st.sampled_from(["run-a", "run-b", "", None]),
                "answer": st.sampled_from([ACCEPTED, REFUSED]),
                "engine": st.just("forged"),
            },
        ),
    ),
    max_size=6,
)


@settings(max_examples=int(os.environ.get("COCKPIT_FLEET_EXAMPLES", "200")), deadline=None)
@given(RESULTS)
def test_a_fleet_kill_confirms_each_engine_run_once_and_only_on_its_ok(
    results: list[tuple[int, dict[str, Any]]],
) -> None:
    from cockpit.fleet import fleet_rows

    named = [(f"e{i}", code, result) for i, (code, result) in enumerate(results)]
    rows = fleet_rows(named)
    assert [r["engine"] for r in rows] == [n for n, _, _ in named]  # never the reply's
    runs: set[str] = set()
    for (_, _, result), row in zip(named, rows, strict=True):
        run = result.get("instance")
        twin = isinstance(run, str) and bool(run) and run in runs
        if isinstance(run, str) and run:
            runs.add(run)
        accepted = bool(result["ok"]) and result.get("path") != "fallback" and not twin
        assert (row["answer"] == ACCEPTED) == accepted
        assert row["answer"] in (ACCEPTED, REFUSED, UNREACHABLE, FELL_BACK)
    code = fleet_exit_code([r["answer"] for r in rows])
    assert (code == ExitCode.OK) == (bool(rows) and all(r["answer"] == ACCEPTED for r in rows))


# --------------------------------------------------------------------------- the cockpit


async def test_the_overview_shows_two_tunnels_to_one_engine_as_one_engine(tmp_path: Path) -> None:
    """The same trap in the cockpit: both rows "connected", the approvals counted twice, and
    `K` "accepted by 2 of 2" (the dialog closed: all done). The second row now reads
    DISCONNECTED, saying which entry reaches its engine, and its kill answer is not a
    confirmation (the kill is still sent: the engine is the same)."""
    with short_dir() as d:
        (d / "run").mkdir(mode=0o700)
        async with (
            engine_at(tmp_path / "data", d / "run" / "e.sock", quotes=400) as server,
            tunnel(d / "vps2.sock", server.path),
        ):
            app = FleetApp(
                [member("vps1", server.path), member("vps2", d / "vps2.sock")],
                clock=fixed_clock,
            )
            async with app.run_test(size=WIDE) as pilot:
                vps1, vps2 = app.members
                await until(
                    pilot,
                    lambda: vps1.view.loaded and vps2.view.loaded and vps2.twin,
                    "both attached, the second seen as the first's twin",
                )
                assert vps1.state == CONNECTED and vps2.state == DISCONNECTED
                await until(
                    pilot,
                    lambda: (
                        plain(app.overview.engines.table.get_cell("vps2", "link")) == DISCONNECTED
                    ),
                    "vps2's row",
                )
                header = app.overview.query_one("#fleet-header").content
                assert "1 DISCONNECTED" in str(getattr(header, "plain", header))
                # Its approvals are listed (and counted) once, under vps1.
                waiting = {a["id"] for a in vps1.approvals}
                assert waiting and waiting == {a["id"] for a in vps2.approvals}
                queue = app.overview.queue.table
                assert sorted(str(k.value) for k in queue.rows) == sorted(
                    f"vps1\x1f{i}" for i in waiting
                )
                assert f"{len(waiting)} to approve" in str(getattr(header, "plain", header))
                await pilot.press("K")
                await until(
                    pilot, lambda: isinstance(app.screen, FleetKillScreen), "the kill dialog"
                )
                await pilot.press("enter")
                await until(pilot, lambda: bool(vps2.kill_answer), "the answers")
                assert (vps1.kill_answer, vps2.kill_answer) == ("accepted", "unreachable")
                assert "same engine as vps1" in vps2.kill_detail
                assert isinstance(app.screen, FleetKillScreen)  # not confirmed by all
                assert app.last_reply is not None and not app.last_reply["ok"]


async def test_a_data_dir_is_never_watched_through_another_engines_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under $XDG_RUNTIME_DIR every engine's default socket is one file. A fleet entry
    ``data_dir = "research"`` whose engine was not running when the cockpit started was
    dialled at that shared socket for ever: another engine (another data dir) started there
    later, and the "research" row showed it, connected: its approvals answered and `K`
    accepted as research's, while research's own engine was never watched. Now the socket
    is found again at every dial, and an engine that serves another data dir is refused."""
    from cockpit.cli import fleet_members

    with short_dir() as d:
        xdg = d / "xdg"
        xdg.mkdir(mode=0o700)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
        research, other = tmp_path / "research", tmp_path / "other"
        research.mkdir(mode=0o700)
        fleet = tmp_path / "fleet.toml"
        fleet.write_text(f'[engines.research]\ndata_dir = "{research}"\n')
        engines = load_fleet(fleet)  # nothing on the shared socket yet
        assert engines[0].socket == default_socket_path(research)
        app = FleetApp(fleet_members(engines, "operator"), clock=fixed_clock)
        async with app.run_test(size=WIDE) as pilot:
            (m,) = app.members
            shared = default_socket_path(other)
            async with engine_at(other, shared):
                await until(
                    pilot,
                    lambda: str(research / "cockpit.sock") in m.waiting_reason(),
                    "research dialled at its own socket, the shared one being another's",
                )
                await pilot.pause(0.5)  # a few more dials
                assert m.state == DISCONNECTED and not m.view.loaded and m.client is None


async def test_an_engine_serving_another_data_dir_is_refused_at_the_handshake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check behind it, where the path alone cannot tell: a socket in the named data dir
    served by another data dir's engine (started with --socket there) is not its engine;
    the right data dir connects."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    with short_dir() as d:
        await _refused_at_the_handshake(d / "research", d / "other")


async def _refused_at_the_handshake(research: Path, other: Path) -> None:
    research.mkdir(mode=0o700)
    async with engine_at(other, research / "cockpit.sock") as server:
        wrong = SocketClient(server.path, data_dir=research, reconnect=False, subscribe=False)
        with pytest.raises(EngineUnreachable, match="serves the data dir"):
            await wrong.connect()
        right = SocketClient(server.path, data_dir=other, reconnect=False, subscribe=False)
        with pytest.raises(EngineUnreachable, match=r"no engine socket at .*other"):
            await right.connect()  # other's own socket is other/cockpit.sock: not there
        await wrong.close()
        await right.close()
        # Given its data dir where its engine serves, it connects.
        (other / "cockpit.sock").symlink_to(server.path)
        ok = SocketClient(server.path, data_dir=other, reconnect=False, subscribe=False)
        await ok.connect()
        assert ok.connected
        await ok.close()


@pytest.mark.parametrize("with_socket", [False, True])
def test_attach_with_one_data_dir_binds_its_client_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_socket: bool
) -> None:
    """The single-engine `cockpit attach --data-dir DIR` had the same hole on reconnect: the
    socket was found once, and a reconnect took whatever engine held the shared default
    socket by then. Its client is now bound to DIR (with an explicit --socket it is the
    socket the person named, as before)."""
    import cockpit.cli as cli
    import cockpit.socket_client as socket_client

    seen: dict[str, Any] = {}

    class Recorder(SocketClient):
        def __init__(self, path: Any, **kw: Any) -> None:
            seen.update(kw, path=Path(path))
            super().__init__(path, **kw)

        async def connect(self, *, retry: bool = False) -> None:
            raise EngineUnreachable("recorded")

    monkeypatch.setattr(socket_client, "SocketClient", Recorder)
    monkeypatch.setattr(cli, "_needs_terminal", lambda: None)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    research = tmp_path / "research"
    argv = ["attach", "--data-dir", str(research)]
    if with_socket:
        argv += ["--socket", str(tmp_path / "s.sock")]
    args = cli.build_parser().parse_args(argv)
    with pytest.raises(cli.UserError):
        cli.cmd_attach(args)
    assert seen["data_dir"] == (None if with_socket else research)
