"""The latched safety state across restarts, including kill -9 of a real engine process.

The kill switch, strategy pauses, breaker trips, approval counters and modes and run-time limits
are journaled before they are acknowledged; a new engine on the same data directory must come
back with exactly them. A pending approval does not survive: it is journaled as expired.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.journal import read_rows, verify_journal
from engine.runtime import JOURNAL_FILE, Engine
from engine.types import Order, OrderUpdate
from tests.conftest import REPO, fast_config
from tests.test_safety_engine import (
    BTC,
    Harness,
    approval_rows,
    buy,
    last,
    request_approval,
    round_trip,
    scripted_config,
    start,
)

WAIT_S = 30.0  # a bound against hanging, never a performance assertion


# --------------------------------------------------------------------------- a real process


def engine_toml(tmp_path: Path) -> Path:
    """The default config at 20x real time from a fixed start (repeatable, and not too fast)."""
    text = (REPO / "config" / "default.toml").read_text()
    for old, new in (
        ('speed = "realtime"', "speed = 20"),
        ('start = "now"', 'start = "2024-03-01T00:00:00Z"'),
    ):
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "engine.toml"
    path.write_text(text)
    return path


def spawn(tmp_path: Path, data_dir: Path) -> subprocess.Popen[bytes]:
    log = (tmp_path / "engine.log").open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cockpit",
            "engine",
            "--config",
            str(engine_toml(tmp_path)),
            "--data-dir",
            str(data_dir),
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_for(proc: subprocess.Popen[bytes], what: str, found: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not found():
        assert proc.poll() is None, f"the engine exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def journal_has(data_dir: Path, kind: str, test: Callable[[dict[str, Any]], bool]) -> bool:
    try:
        return any(test(r.payload) for r in read_rows(data_dir / JOURNAL_FILE, {kind}))
    except FileNotFoundError:
        return False
    except Exception:  # the schema may not exist for a moment while the engine creates it
        return False


def session_started(data_dir: Path) -> bool:
    return journal_has(data_dir, "session", lambda p: p["state"] == "started")


def kill_latched(data_dir: Path, level: str, source: str) -> bool:
    return journal_has(
        data_dir,
        "safety_state",
        lambda p: p["state"]["kill"]["level"] == level and p["state"]["kill"]["source"] == source,
    )


@pytest.fixture
def proc_guard() -> Any:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=WAIT_S)


async def test_kill_switch_survives_sigkill_and_restart(
    tmp_path: Path, data_dir: Path, proc_guard: list[Any]
) -> None:
    proc = spawn(tmp_path, data_dir)
    proc_guard.append(proc)
    wait_for(proc, "the session to start", lambda: session_started(data_dir))
    (data_dir / "KILL").write_text("halt")
    wait_for(proc, "the KILL file to latch", lambda: kill_latched(data_dir, "halt", "file"))
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=WAIT_S) == -signal.SIGKILL
    assert verify_journal(data_dir / JOURNAL_FILE).ok
    # The file is gone too: what holds the switch now is the journal alone.
    (data_dir / "KILL").unlink()

    engine = Engine(fast_config(data_dir), data_dir)  # every strategy in auto
    await engine.start()
    sent: list[str] = []
    real = engine.execution.paper.submit

    def spy(order: Order, now: int) -> list[OrderUpdate]:
        sent.append(order.client_order_id)
        return real(order, now)

    engine.execution.paper.submit = spy  # type: ignore[method-assign]
    try:
        core = engine.core
        assert core.session == 2
        kill = core.safety.kill
        assert (kill.level, kill.source, kill.by) == ("halt", "file", "file")
        assert core.safety.trading_state == "HALTED"
        await engine.run(max_events=20_000)
        assert core.counters["decisions"] > 0  # the strategies wanted to trade...
        assert core.counters["submitted"] == 0  # ...and nothing went out
        assert sent == []

        refused = await engine.command("release", {"reason": "checked", "confirm": "yes"})
        assert not refused["ok"] and "'RELEASE'" in refused["message"]
        assert core.safety.kill.engaged
        released = await engine.command("release", {"reason": "checked", "confirm": "RELEASE"})
        assert released["ok"], released
        assert core.safety.trading_state == "ACTIVE"
        await engine.run(max_events=40_000)
        assert sent, "after the release the strategies trade again"
    finally:
        await engine.stop()


async def test_sigusr1_to_the_cli_engine_engages_the_kill_switch(
    tmp_path: Path, data_dir: Path, proc_guard: list[Any]
) -> None:
    proc = spawn(tmp_path, data_dir)
    proc_guard.append(proc)
    wait_for(proc, "the session to start", lambda: session_started(data_dir))
    os.kill(proc.pid, signal.SIGUSR1)
    wait_for(proc, "SIGUSR1 to latch", lambda: kill_latched(data_dir, "halt", "signal"))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=WAIT_S) == 0
    stopped = last(read_rows(data_dir / JOURNAL_FILE, {"session"})).payload
    assert stopped["state"] == "stopped"
    kill_row = last(
        r.payload
        for r in read_rows(data_dir / JOURNAL_FILE, {"safety"})
        if r.payload["what"] == "kill_switch"
    )
    assert kill_row["by"] == "signal" and kill_row["reason"] == "SIGUSR1 received"
    engine = Engine(fast_config(data_dir), data_dir)
    await engine.start()
    try:
        assert engine.core.safety.kill.level == "halt"
        assert engine.core.safety.trading_state == "HALTED"
    finally:
        await engine.stop()


# --------------------------------------------------------------------------- in process


@pytest.fixture
async def harnesses() -> Any:
    started: list[Harness] = []
    yield started
    for h in started:
        await h.stop()


async def crash(h: Harness) -> None:
    """Die like kill -9: whatever the journal had not committed is lost, nothing is closed."""
    journal = h.engine.journal
    assert journal is not None
    writer = journal._writer
    writer.cancel()
    await asyncio.wait([writer])
    h.engine.journal = None  # the fixture must not "stop" a dead engine
    h.engine.data_dir_lock.release()  # the OS drops a dead process's lock


async def restart(harnesses: list[Harness], h: Harness, how: str) -> Harness:
    if how == "crash":
        await crash(h)
    else:
        await h.stop()
    data_dir = h.engine.data_dir
    return await start(harnesses, data_dir, h.engine.cfg)


@pytest.mark.parametrize("how", ["stop", "crash"])
async def test_pauses_and_breaker_trips_survive_a_restart(
    harnesses: list[Harness], data_dir: Path, how: str
) -> None:
    h = await start(harnesses, data_dir, safety={"breakers": {"consecutive_losses": 3}})
    await h.feed(BTC, 60_000.0)
    for _ in range(3):
        await round_trip(h)
    assert h.strategy_view("alpha")["paused_by"] == "system"
    reply = await h.engine.command("pause", {"strategy": "beta", "reason": "manual check"})
    assert reply["ok"]
    before = {s["id"]: s for s in h.engine.snapshot(trace=0, curve=0)["strategies"]}

    h2 = await restart(harnesses, h, how)
    assert h2.core.session == h.core.session + 1
    after = {s["id"]: s for s in h2.engine.snapshot(trace=0, curve=0)["strategies"]}
    for sid in ("alpha", "beta"):
        for key in ("paused", "paused_by", "pause_reason"):
            assert after[sid][key] == before[sid][key], (sid, key)
    assert after["alpha"]["pause_reason"].startswith("consecutive_losses: 3 consecutive losing")
    assert after["beta"]["paused_by"] == h.strategy_view("beta")["paused_by"] != "system"
    tripped = [(b["name"], b["scope"]) for b in h2.core.breakers.status() if b["tripped"]]
    assert tripped == [("consecutive_losses", "alpha")]

    await h2.feed(BTC, 60_000.0)
    for sid in ("alpha", "beta"):
        await h2.signal(sid, BTC, buy(), 60_000.0)
        assert "STRATEGY_PAUSED" in [v["code"] for v in h2.intents()[-1]["verdicts"] if not v["ok"]]
    assert h2.sent == []
    # A tripped breaker must be re-armed, not just resumed over.
    refused = await h2.engine.command("resume", {"strategy": "alpha"})
    assert not refused["ok"] and "consecutive_losses" in refused["message"]
    rearm = {"breaker": "consecutive_losses", "scope": "alpha", "reason": "reviewed"}
    assert (await h2.engine.command("rearm", rearm))["ok"]
    assert h2.strategy_view("alpha")["paused"] is False
    await h2.signal("alpha", BTC, buy(), 60_000.0)
    assert len(h2.sent) == 1


@pytest.mark.parametrize("how", ["stop", "crash"])
async def test_kill_switch_levels_survive_an_in_process_restart(
    harnesses: list[Harness], data_dir: Path, how: str
) -> None:
    h = await start(harnesses, data_dir)
    await h.feed(BTC, 60_000.0)
    assert (await h.engine.command("kill", {"level": "entries", "reason": "lunch"}))["ok"]
    h2 = await restart(harnesses, h, how)
    assert h2.core.safety.kill.level == "entries"
    assert h2.core.safety.trading_state == "REDUCING"
    assert (await h2.engine.command("kill", {"level": "halt", "reason": "worse"}))["ok"]
    h3 = await restart(harnesses, h2, how)
    kill = h3.core.safety.kill
    assert (kill.level, kill.reason, kill.source) == ("halt", "worse", "command")
    await h3.feed(BTC, 60_000.0)
    await h3.signal("alpha", BTC, buy(), 60_000.0)
    assert h3.sent == []
    no = await h3.engine.command("release", {"reason": "fine", "confirm": "REALEASE"})
    assert not no["ok"] and h3.core.safety.kill.engaged
    no_reason = await h3.engine.command("release", {"reason": "", "confirm": "RELEASE"})
    assert not no_reason["ok"] and h3.core.safety.kill.engaged
    yes = await h3.engine.command("release", {"reason": "all clear", "confirm": "RELEASE"})
    assert yes["ok"], yes
    h4 = await restart(harnesses, h3, how)
    assert not h4.core.safety.kill.engaged
    await h4.feed(BTC, 60_000.0)
    await h4.signal("alpha", BTC, buy(), 60_000.0)
    assert len(h4.sent) == 1


async def test_approval_counters_modes_and_limits_survive_a_restart(
    harnesses: list[Harness], data_dir: Path
) -> None:
    cfg = scripted_config(data_dir, safety={"approval": {"ttl_s": 5, "auto_after_approved": 2}})
    h = await start(harnesses, data_dir, cfg)
    await h.feed(BTC, 60_000.0)
    for _ in range(2):
        pend = await request_approval(h)
        assert (await h.engine.command("approve", {"id": pend["id"]}))["ok"]
    pend = await request_approval(h)
    assert (await h.engine.command("reject", {"id": pend["id"], "reason": "no"}))["ok"]
    await request_approval(h)
    for _ in range(6):
        await h.feed(BTC, 60_000.0)  # past the 5 s TTL
    counts = {k: h.strategy_view("beta")[k] for k in ("approved", "rejected", "expired")}
    assert counts == {"approved": 2, "rejected": 1, "expired": 1}
    args = {"strategy": "beta", "mode": "auto", "reason": "earned it"}
    assert (await h.engine.command("set_approval_mode", args))["ok"]
    limit = {"name": "max_order_notional", "value": 5_000, "reason": "calmer"}
    assert (await h.engine.command("set_limit", limit))["ok"]

    h2 = await restart(harnesses, h, "stop")
    view = h2.strategy_view("beta")
    assert {k: view[k] for k in counts} == counts
    assert view["approval"] == "auto"
    assert h2.strategy_view("alpha")["approval"] == "auto"
    assert h2.core.limits.max_order_notional == 5_000.0


@pytest.mark.parametrize("how", ["stop", "crash"])
async def test_a_pending_approval_expires_at_restart(
    harnesses: list[Harness], data_dir: Path, how: str
) -> None:
    h = await start(harnesses, data_dir)
    await h.feed(BTC, 60_000.0)
    pend = await request_approval(h)
    h2 = await restart(harnesses, h, how)
    assert h2.core.approvals.pending() == []
    assert h2.engine.snapshot(trace=0, curve=0)["approvals"] == []
    outcome = last(approval_rows(h2))
    assert outcome["approval_id"] == pend["id"]
    assert outcome["status"] == "expired" and outcome["by"] == "system"
    assert outcome["reason"] == "expired: the engine restarted while it was pending"
    assert h2.strategy_view("beta")["expired"] == 1
    await h2.feed(BTC, 60_000.0)
    late = await h2.engine.command("approve", {"id": pend["id"], "hash": pend["hash"]})
    assert not late["ok"] and "already expired" in late["message"]
    assert h2.sent == []
    # And once more: an expiry journaled at one restart is not journaled again at the next.
    h3 = await restart(harnesses, h2, how)
    assert [o["approval_id"] for o in approval_rows(h3, "expired")] == [pend["id"]]
    assert h3.strategy_view("beta")["expired"] == 1


async def test_client_order_ids_never_repeat_across_restarts(
    harnesses: list[Harness], data_dir: Path
) -> None:
    sent: list[str] = []
    h = await start(harnesses, data_dir)
    for how in ("stop", "crash", "stop"):
        await h.feed(BTC, 60_000.0)
        await h.signal("alpha", BTC, buy(), 60_000.0)
        await h.feed(BTC, 60_000.0)
        sent += [o.client_order_id for o in h.sent]
        h = await restart(harnesses, h, how)
    assert len(sent) == 3 and len(set(sent)) == 3
