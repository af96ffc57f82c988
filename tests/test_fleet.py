"""A fleet in one cockpit, over three real `cockpit engine` daemons.

One trio of daemons serves the whole module (each `cockpit engine` with its own data dir and its
socket in a private 0700 directory, every strategy waiting for approval): the overview shows a
row per engine, Enter opens an engine's full cockpit and Escape returns, an approval of engine 2
answered in the shared queue reaches engine 2 only (the three run the same seed, so the same
approval id waits on all three), the fleet-wide kill reaches all three and shows each answer,
and a daemon killed with SIGKILL turns its row DISCONNECTED while the others keep updating.
The tests run in file order: the kill tests come after the approval, SIGKILL comes last.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from cockpit.socket_client import SocketClient
from cockpit.tui.fleet import CONNECTED, DISCONNECTED, FleetKillScreen, FleetMember
from cockpit.tui.fleet_app import FleetApp
from cockpit.tui.session import DialSession
from tests.conftest import REPO
from tests.test_control_support import WAIT, short_dir
from tests.test_tui import WIDE, fixed_clock, plain

NAMES = ("alpha", "beta", "gamma")


def approve_toml(path: Path) -> Path:
    """The shipped default with every strategy waiting for a person, on 1-second bars (the
    first approvals come within seconds), approvals that wait an hour of engine time, and a
    market ten times faster than real time."""
    text = (REPO / "config" / "default.toml").read_text()
    for old, new in (
        ('approval = "auto"', 'approval = "approve"'),
        ("history_timeframe_s = 10", "history_timeframe_s = 1"),
        ("\ntimeframe_s = 10", "\ntimeframe_s = 1"),
        ("ttl_s = 30", "ttl_s = 3600"),
        ('speed = "realtime"', "speed = 10"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


@dataclass
class Engine:
    name: str
    data_dir: Path
    socket: Path
    proc: subprocess.Popen[str]


@dataclass
class Trio:
    engines: list[Engine]
    fleet_file: Path

    def __getitem__(self, i: int) -> Engine:
        return self.engines[i]


def start_daemon(name: str, root: Path, config: Path) -> Engine:
    run = root / f"run-{name}"
    run.mkdir(mode=0o700)
    sock = run / "e.sock"
    data = root / f"data-{name}"
    argv = ["engine", "--config", str(config), "--data-dir", str(data), "--socket", str(sock)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cockpit", *argv],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return Engine(name, data, sock, proc)


@pytest.fixture(scope="module")
def trio() -> Iterator[Trio]:
    with short_dir() as root:
        config = approve_toml(root / "approve.toml")
        engines = [start_daemon(name, root, config) for name in NAMES]
        try:
            deadline = time.monotonic() + WAIT
            while not all(e.socket.exists() for e in engines):
                for e in engines:
                    if e.proc.poll() is not None:
                        raise AssertionError(f"{e.name} did not start: {e.proc.stderr.read()}")  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the daemons never opened their sockets"
                time.sleep(0.05)
            fleet = root / "fleet.toml"
            fleet.write_text(
                "".join(
                    f'[engines.{e.name}]\nsocket = "{e.socket.relative_to(root)}"\n\n'
                    for e in engines
                )
            )
            yield Trio(engines, fleet)
        finally:
            for e in engines:
                if e.proc.poll() is None:
                    e.proc.send_signal(signal.SIGTERM)
            for e in engines:
                try:
                    e.proc.communicate(timeout=WAIT)
                except subprocess.TimeoutExpired:
                    e.proc.kill()
                    e.proc.communicate()


def members(trio: Trio, role: str = "operator") -> list[FleetMember]:
    return [
        FleetMember(
            e.name,
            str(e.socket),
            DialSession(SocketClient(e.socket, role=role, name="test-fleet", ping_interval=1.0)),
        )
        for e in trio.engines
    ]


async def snapshot_of(e: Engine) -> dict[str, Any]:
    async with SocketClient(e.socket, role="viewer", subscribe=False, reconnect=False) as c:
        return await c.snapshot(trace=0, curve=0)


async def until(pilot: Pilot[Any], check: Callable[[], Any], what: str) -> None:
    """Bounded wait (never a timing assertion): keys and timers go on meanwhile."""
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await pilot.pause(0.05)


def cell(app: FleetApp, name: str, column: str) -> str:
    return plain(app.overview.engines.table.get_cell(name, column))


def connected(app: FleetApp) -> bool:
    return all(m.link == CONNECTED and m.view.loaded for m in app.members)


# --------------------------------------------------------------------------- the overview


async def test_rows_appear_and_enter_opens_an_engine_escape_returns(trio: Trio) -> None:
    app = FleetApp(members(trio), clock=fixed_clock)
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: connected(app), "three engines connected")
        await until(
            pilot,
            lambda: [cell(app, n, "link") for n in NAMES] == [CONNECTED] * 3,
            "three connected rows",
        )
        assert [k.value for k in app.overview.engines.table.rows] == list(NAMES)
        for name in NAMES:
            assert cell(app, name, "mode") == "PAPER"
            assert cell(app, name, "trading") == "ACTIVE"
            assert cell(app, name, "equity") == "100,000.00"

        # One engine's actions from the command palette do nothing in the overview (their
        # keys live on an engine's screen): no dialog, no crash, nothing sent.
        for action in ("approve", "kill", "filter", "pane(3)"):
            assert not await app.run_action(action)
        assert app.screen is app.overview and app.last_reply is None

        # The second row, Enter: beta's own cockpit, on beta's client and view.
        app.overview.engines.table.focus()
        await pilot.press("down", "enter")
        beta = app.by_name["beta"]
        await until(pilot, lambda: app.screen is beta.main, "beta's cockpit on screen")
        assert app.client is beta.client and app.view is beta.view
        await until(pilot, lambda: app.refreshes > 0, "beta's panes rendered")
        header = app.screen.query_one("#status").content
        assert str(getattr(header, "plain", header)).lstrip().startswith("beta")
        # Its approvals pane lists beta's approvals.
        assert beta.main is not None
        table = beta.main.approvals.table
        await until(
            pilot,
            lambda: (
                table.row_count
                and {str(k.value) for k in table.rows} == {a["id"] for a in beta.approvals}
            ),
            "beta's approvals in its pane",
        )

        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.overview, "back on the overview")
        assert app.client is None and app.shown is None
        # And back in again: the same screen, kept.
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is beta.main, "beta again")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.overview, "overview again")


def _left_unanswered(snap: dict[str, Any]) -> int:
    """Requests that left a snapshot's queue unanswered: expired or superseded."""
    return sum(s["expired"] + s["superseded"] for s in snap["strategies"])


def _rejected(snap: dict[str, Any]) -> int:
    return sum(s["rejected"] for s in snap["strategies"])


async def test_an_approval_of_engine_two_answered_in_the_queue_reaches_engine_two_only(
    trio: Trio,
) -> None:
    app = FleetApp(members(trio), clock=fixed_clock)
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: connected(app), "three engines connected")
        beta = app.by_name["beta"]
        queue = app.overview.queue
        # A strategy that decides the other way withdraws its request ("already rejected ...
        # by engine"): a request the engine withdrew while the key was on its way is tried
        # again with the next one, a few times.
        for _attempt in range(5):
            # The same seed: the id waiting on beta waits on the other two as well.
            await until(
                pilot,
                lambda: any(
                    all(a["id"] in {x["id"] for x in m.approvals} for m in app.members)
                    for a in beta.approvals
                ),
                "an approval waiting on all three engines",
            )
            common = next(
                a["id"]
                for a in beta.approvals
                if all(a["id"] in {x["id"] for x in m.approvals} for m in app.members)
            )
            before = [await snapshot_of(e) for e in trio.engines]
            approved_before = [sum(s["approved"] for s in snap["strategies"]) for snap in before]

            queue.table.focus()
            key = f"beta\x1f{common}"
            await until(pilot, lambda key=key: queue.table.select_key(key), "the row")
            await pilot.pause()
            chosen = queue.selected
            assert chosen is not None and chosen[0].name == "beta" and chosen[1]["id"] == common
            app.last_reply = None
            await pilot.press("a")

            await until(pilot, lambda: app.last_reply is not None, "beta's reply")
            assert app.last_reply is not None
            if app.last_reply.get("ok") or "by engine" not in app.last_reply.get("message", ""):
                break
        assert app.last_reply is not None and app.last_reply.get("ok"), app.last_reply
        after = [await snapshot_of(e) for e in trio.engines]
        approved_after = [sum(s["approved"] for s in snap["strategies"]) for snap in after]
        assert approved_after[1] == approved_before[1] + 1
        assert common not in {a["id"] for a in after[1]["approvals"]}
        for i in (0, 2):  # alpha and gamma: nothing answered, the same id still waits
            assert approved_after[i] == approved_before[i]
            # (or, on a slow machine, its time ran out meanwhile: expired or superseded on that
            # engine's own clock, never approved or rejected by beta's answer)
            if common not in {a["id"] for a in after[i]["approvals"]}:
                assert _left_unanswered(after[i]) > _left_unanswered(before[i])
                assert _rejected(after[i]) == _rejected(before[i])
        await until(
            pilot,
            lambda: f"beta\x1f{common}" not in {str(k.value) for k in queue.table.rows},
            "the row leaves the queue",
        )


async def test_a_viewer_fleet_looks_but_does_not_act(trio: Trio) -> None:
    app = FleetApp(members(trio, role="viewer"), read_only=True, clock=fixed_clock)
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: connected(app), "three engines connected")
        await until(pilot, lambda: app.overview.queue.table.row_count > 0, "approvals shown")
        app.overview.queue.table.focus()
        await pilot.press("a", "K")
        await pilot.pause()
        assert not isinstance(app.screen, FleetKillScreen)
        assert app.last_reply is None  # nothing was sent
        snaps = [await snapshot_of(e) for e in trio.engines]
        assert not any(snap["kill_switch"]["engaged"] for snap in snaps)


async def test_fleet_kill_reaches_all_three_and_shows_each_answer(trio: Trio) -> None:
    app = FleetApp(members(trio), clock=fixed_clock)
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: connected(app), "three engines connected")
        await pilot.press("K")
        await until(pilot, lambda: isinstance(app.screen, FleetKillScreen), "the kill dialog")
        # A reason is required, as in the one-engine dialog.
        await pilot.press("backspace", "enter")  # the prefilled reason is selected: gone
        await pilot.pause()
        assert isinstance(app.screen, FleetKillScreen)
        assert all(not m.kill_answer for m in app.members)
        await pilot.press(*"fleet test", "enter")
        await until(pilot, lambda: app.screen is app.overview, "the dialog closed: all accepted")
        await until(
            pilot,
            lambda: [cell(app, n, "answer") for n in NAMES] == ["accepted"] * 3,
            "each row's answer",
        )
        for e in trio.engines:
            kill = (await snapshot_of(e))["kill_switch"]
            assert kill["engaged"] and kill["level"] == "halt" and kill["reason"] == "fleet test"
        await until(
            pilot, lambda: [cell(app, n, "kill") for n in NAMES] == ["HALT"] * 3, "HALT rows"
        )


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cockpit", *argv],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_kill_all_answers_one_line_per_engine(trio: Trio) -> None:
    done = cli("kill", "--all", "--fleet", str(trio.fleet_file), "--reason", "cli fleet")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:3]] == [[n, "accepted"] for n in NAMES]
    assert "confirmed by 3 of 3" in lines[-1]
    js = cli("kill", "--all", "--fleet", str(trio.fleet_file), "--reason", "again", "--json")
    assert js.returncode == 0
    doc = json.loads(js.stdout)
    assert doc["ok"] is True and [r["answer"] for r in doc["engines"]] == ["accepted"] * 3


async def test_a_stuck_daemon_is_disconnected_without_stalling_the_others(trio: Trio) -> None:
    """SIGSTOP: the engine's socket stays open but nothing answers (a stuck event loop). Its
    row turns DISCONNECTED once it is silent for three pings; the other rows keep moving
    meanwhile; SIGCONT brings it back."""
    app = FleetApp(members(trio), clock=fixed_clock)
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: connected(app), "three engines connected")
        beta = trio[1]
        os.kill(beta.proc.pid, signal.SIGSTOP)
        try:
            nows = {n: app.by_name[n].snapshot.get("now", 0) for n in ("alpha", "gamma")}
            await until(
                pilot,
                lambda: all(app.by_name[n].snapshot.get("now", 0) > nows[n] for n in nows),
                "alpha and gamma keep updating while beta is stuck",
            )
            await until(pilot, lambda: cell(app, "beta", "link") == DISCONNECTED, "beta DOWN")
            nows = {n: app.by_name[n].snapshot.get("now", 0) for n in ("alpha", "gamma")}
            await until(
                pilot,
                lambda: all(app.by_name[n].snapshot.get("now", 0) > nows[n] for n in nows),
                "alpha and gamma still updating",
            )
        finally:
            os.kill(beta.proc.pid, signal.SIGCONT)
        await until(pilot, lambda: cell(app, "beta", "link") == CONNECTED, "beta back")


async def test_a_daemon_killed_marks_its_row_disconnected_the_others_keep_updating(
    trio: Trio,
) -> None:
    app = FleetApp(members(trio), clock=fixed_clock)
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: connected(app), "three engines connected")
        gamma = trio[2]
        gamma.proc.send_signal(signal.SIGKILL)
        gamma.proc.wait(WAIT)
        await until(pilot, lambda: cell(app, "gamma", "link") == DISCONNECTED, "gamma DOWN")
        header = app.overview.query_one("#fleet-header").content
        assert "1 DISCONNECTED" in str(getattr(header, "plain", header))
        # The others go on: their engine clocks move on in the overview.
        nows = {n: app.by_name[n].snapshot.get("now", 0) for n in ("alpha", "beta")}
        renders = app.overview_renders
        await until(
            pilot,
            lambda: (
                all(app.by_name[n].snapshot.get("now", 0) > nows[n] for n in nows)
                and app.overview_renders > renders
            ),
            "alpha and beta keep updating, and the overview shows it",
        )
        assert [cell(app, n, "link") for n in ("alpha", "beta")] == [CONNECTED] * 2
        assert cell(app, "gamma", "mode") == "PAPER"  # the last known values stay

        # A fleet kill now: two answers, and gamma unreachable at once (never queued).
        await pilot.press("K")
        await until(pilot, lambda: isinstance(app.screen, FleetKillScreen), "the kill dialog")
        await pilot.press("enter")
        await until(
            pilot,
            lambda: (
                [cell(app, n, "answer") for n in NAMES] == ["accepted", "accepted", "unreachable"]
            ),
            "the answers",
        )
        assert isinstance(app.screen, FleetKillScreen)  # stays open: not every engine confirmed
        message = app.screen.query_one("#dialog-message").content
        assert "gamma: unreachable" in str(getattr(message, "plain", message))

    # The CLI says the same, exit 3: gamma did not confirm (its stale socket answers nothing).
    done = cli("kill", "--all", "--fleet", str(trio.fleet_file), "--reason", "one is down")
    assert done.returncode == 3, done.stdout + done.stderr
    answers = [line.split()[:2] for line in done.stdout.splitlines()]
    assert answers[:2] == [["alpha", "accepted"], ["beta", "accepted"]], done.stdout
    assert answers == [["alpha", "accepted"], ["beta", "accepted"], ["gamma", "unreachable"]], (
        done.stdout
    )
    assert "confirmed by 2 of 3" in done.stderr
    # A dead engine is not "seen" (its pid has no /proc entry): the KILL file is written for
    # its next start, and the kill says no running engine was found (it once exited 0).
    one = cli("kill", "--socket", str(gamma.socket), "--reason", "gamma is gone")
    assert one.returncode == 3, one.stdout + one.stderr
    assert "no running engine found" in one.stderr
    assert (gamma.data_dir / "KILL").exists()
