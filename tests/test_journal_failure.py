"""When the journal cannot write (disk full, an I/O error; injected here) the engine sends
nothing and says so everywhere: the snapshot's trading state reads BLOCKED with the reason, and
so do `cockpit status` (text and --json), the headless JSON lines and the cockpit's log. A kill
engaged while the journal is down is kept in the KILL file, so it still holds after a restart."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cockpit.oneshot import format_status
from cockpit.tui.header import header_text
from cockpit.tui.view import LocalView
from engine.events import EngineEvent
from engine.headless import describe_event
from engine.journal import Journal
from engine.runtime import Engine
from tests.conftest import REPO, fast_config
from tests.test_control_support import WAIT, short_dir

IO_ERROR = "disk I/O error"
RELEASE = {"reason": "disk replaced", "confirm": "RELEASE"}


def break_journal(journal: Journal | None) -> None:
    """From now on every commit fails as a full or failing disk makes it fail."""
    assert journal is not None

    async def broken_commit() -> None:
        raise sqlite3.OperationalError(IO_ERROR)

    journal._conn.commit = broken_commit  # type: ignore[method-assign]


async def started(data_dir: Path, emit: Any = None) -> Engine:
    engine = Engine(fast_config(data_dir), data_dir, emit=emit)
    await engine.start()
    engine._test_feed = engine.source.events()  # type: ignore[attr-defined]
    return engine


async def feed(engine: Engine, n: int) -> None:
    await engine.process(list(itertools.islice(engine._test_feed, n)))  # type: ignore[attr-defined]


async def until_blocked(engine: Engine) -> None:
    for _ in range(int(WAIT / 0.01)):
        if engine.blocked_reason:
            return
        await feed(engine, 20)
        await asyncio.sleep(0.01)
    raise AssertionError("the engine never noticed the journal failure")


async def blocked_and_killed_by_file(engine: Engine, why: str) -> None:
    """The engine saw its journal fail for ``why`` (a part of the reason): BLOCKED, and a kill
    then is kept in the KILL file (the journal cannot hold it)."""
    await until_blocked(engine)
    assert why in engine.blocked_reason, engine.blocked_reason
    assert engine.snapshot(trace=0)["trading_state"]["state"] == "BLOCKED"
    reply = await engine.command("kill", {"level": "halt", "reason": f"after: {why}"})
    assert reply["ok"] and "KILL file" in reply["message"], reply


async def test_a_failed_journal_shows_blocked_with_the_reason_everywhere(data_dir: Path) -> None:
    lines: list[dict[str, Any]] = []

    def emit(ev: EngineEvent) -> None:
        line = describe_event(ev)
        if line is not None:
            lines.append(line)

    engine = await started(data_dir, emit)
    try:
        await feed(engine, 200)
        assert engine.snapshot(trace=0)["trading_state"]["state"] == "ACTIVE"
        events = engine.subscribe_dicts()
        break_journal(engine.journal)
        await until_blocked(engine)
        await asyncio.sleep(0)  # the blocked event is published on its own task
        snap = engine.snapshot(trace=0)
        state = snap["trading_state"]
        assert state["state"] == "BLOCKED" and IO_ERROR in state["reason"]
        assert IO_ERROR in snap["blocked"] and not snap["kill_switch"]["engaged"]
        # The snapshot is what `cockpit status --json` prints; this is its text form.
        text = format_status(json.loads(json.dumps(snap, default=str)))
        trading = next(x for x in text.splitlines() if x.startswith("trading"))
        assert "BLOCKED" in trading and IO_ERROR in trading
        # The cockpit's header says it where the trading state is, not ACTIVE.
        header = header_text(snap, compact=True).plain
        assert "BLOCKED" in header and "ACTIVE" not in header
        summary = engine.summary()
        assert summary["trading_state"] == "BLOCKED" and IO_ERROR in summary["blocked"]
        # Headless: one JSON line says it at once, not only the next periodic summary.
        blocked = [x for x in lines if x["event"] == "blocked"]
        assert len(blocked) == 1 and IO_ERROR in blocked[0]["reason"]
        # The cockpit's projection: the event reaches clients, the log and a notice.
        got = []
        while not events.empty():
            got.append(events.get_nowait())
        view = LocalView()
        notices = [view._describe(e) for e in got if e["event"] == "blocked"]
        assert len(notices) == 1 and notices[0] is not None and IO_ERROR in notices[0].message
        # And nothing is sent from here on.
        submitted = engine.core.counters["submitted"]  # type: ignore[union-attr]
        await feed(engine, 3_000)
        assert engine.core.counters["submitted"] == submitted  # type: ignore[union-attr]
    finally:
        await engine.stop()


async def test_a_kill_during_the_failure_holds_after_a_restart(data_dir: Path) -> None:
    engine = await started(data_dir)
    try:
        await feed(engine, 200)
        break_journal(engine.journal)
        reply = await engine.command("kill", {"level": "flatten", "reason": "disk trouble"})
        kill_file = engine.kill_file
        # The journal could not record it; the KILL file does, and the reply says so.
        assert reply["ok"], reply
        assert "journal could not record it" in reply["message"]
        assert str(kill_file) in reply["message"] and "after a restart" in reply["message"]
        assert kill_file.read_text().strip() == "flatten"
        assert engine.snapshot(trace=0)["trading_state"]["state"] == "BLOCKED"
    finally:
        await engine.stop()
    # No stray temporary files beside it.
    assert sorted(p.name for p in data_dir.iterdir() if p.name.startswith(".KILL")) == []
    restarted = await started(data_dir)
    try:
        # Halted from the start; flatten again once there are quotes (see test_kill_file).
        k = restarted.snapshot(trace=0)["kill_switch"]
        assert k["engaged"] and k["level"] == "halt" and k["source"] == "file"
        assert restarted.snapshot(trace=0)["trading_state"]["state"] == "HALTED"
        await feed(restarted, 50)
        await restarted.enforce_kill_file()  # the watcher's first look
        assert restarted.snapshot(trace=0)["kill_switch"]["level"] == "flatten"
        refused = await restarted.command("release", {**RELEASE, "override": True})
        assert not refused["ok"] and str(kill_file) in refused["message"]
        kill_file.unlink()
        assert (await restarted.command("release", RELEASE))["ok"]
    finally:
        await restarted.stop()


async def test_a_loss_limit_kill_during_the_failure_is_kept_in_the_file(data_dir: Path) -> None:
    """Any kill the journal could not record (here the engine's own) lands in the file."""
    engine = await started(data_dir)
    try:
        await feed(engine, 200)
        break_journal(engine.journal)
        await until_blocked(engine)
        assert not engine.kill_file.exists()  # no kill yet, no file
        await engine.engage_kill("halt", by="system", reason="drawdown", source="drawdown")
        assert engine.kill_file.read_text().strip() == "halt"
    finally:
        await engine.stop()


async def test_a_kill_the_journal_recorded_writes_no_file(data_dir: Path) -> None:
    engine = await started(data_dir)
    try:
        assert (await engine.command("kill", {"level": "halt", "reason": "ok"}))["ok"]
        break_journal(engine.journal)
        await until_blocked(engine)
        paused = await engine.command("pause", {"strategy": "ema_cross", "reason": "x"})
        assert not paused["ok"] and "journal could not record it" in paused["message"]
        assert not engine.kill_file.exists()  # the journal already holds this kill
    finally:
        await engine.stop()


@pytest.fixture
def sock_dir() -> Any:
    with short_dir() as d:
        yield d


async def test_headless_output_and_cockpit_status_say_blocked(
    data_dir: Path, sock_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """`cockpit engine` (in this process, so the disk can fail on cue) and `cockpit status`."""
    import engine.runtime
    from cockpit.cli import _run_headless

    engines: list[Engine] = []
    real_make = engine.runtime.Engine

    def make_and_keep(*args: Any, **kw: Any) -> Engine:
        engines.append(real_make(*args, **kw))
        return engines[-1]

    monkeypatch.setattr(engine.runtime, "Engine", make_and_keep)
    cfg = fast_config(data_dir, market={"simulated": {"speed": 50.0}})
    sock = sock_dir / "e.sock"
    run = asyncio.create_task(_run_headless(cfg, data_dir, 60.0, str(sock)))

    def cockpit(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cockpit", *argv, "--socket", str(sock)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )

    deadline = time.monotonic() + WAIT  # a bound against hanging, not a speed assertion
    try:
        while not (sock.exists() and engines and engines[0].journal is not None):
            assert time.monotonic() < deadline and not run.done(), "the engine never started"
            await asyncio.sleep(0.05)
        break_journal(engines[0].journal)
        while True:
            as_json = await asyncio.to_thread(cockpit, "status", "--json")
            assert as_json.returncode == 0, as_json.stderr
            snap = json.loads(as_json.stdout)
            if snap["trading_state"]["state"] == "BLOCKED" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert snap["trading_state"]["state"] == "BLOCKED", snap["trading_state"]
        assert IO_ERROR in snap["trading_state"]["reason"]
        text = await asyncio.to_thread(cockpit, "status")
        assert text.returncode == 0, text.stderr
        assert any(
            x.startswith("trading") and "BLOCKED" in x and IO_ERROR in x
            for x in text.stdout.splitlines()
        ), text.stdout
    finally:
        if engines:
            engines[0].request_stop()
        else:
            run.cancel()
        code = await asyncio.wait_for(run, WAIT)
    assert code == 1  # it stopped trading, and says why
    captured = capsys.readouterr()
    assert "engine stopped trading" in captured.err and IO_ERROR in captured.err
    out = [json.loads(x) for x in captured.out.splitlines() if x.startswith("{")]
    blocked = [x for x in out if x["event"] == "blocked"]
    assert len(blocked) == 1 and IO_ERROR in blocked[0]["reason"]
    summaries = [x for x in out if x["event"] == "summary"]
    assert summaries[-1]["trading_state"] == "BLOCKED" and IO_ERROR in summaries[-1]["blocked"]
