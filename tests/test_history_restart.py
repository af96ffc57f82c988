"""History across restarts (issue 13, item 4): what a cockpit showed before a restart it shows
after it.

A new engine on the same data directory loads a window of the journal (the last
``HISTORY_EVENTS`` orders, fills, decisions, approvals, safety and audit rows and session
starts and stops, of those only the ones at most ``HISTORY_NS`` older than the journal's last
row) into its snapshot: the embedded cockpit, ``cockpit attach`` and ``cockpit trace`` all show
them. Restored events are history: each carries the session it came from, nothing is applied
twice (positions and cash come from the journal's fills as before) and nothing notifies again
(a pending approval still expires at restart, as it always did).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cockpit.app import CockpitApp
from cockpit.tui.orders import OPEN
from cockpit.tui.session import EmbeddedSession
from engine.fanout import EventFanout
from engine.journal import Journal, JournalBroken
from engine.restore import HISTORY_EVENTS, HISTORY_KINDS, HISTORY_NS, restore_state
from engine.runtime import JOURNAL_FILE, Engine
from engine.views import CLOSED_ORDERS, TRACE_AFTER_RESTART
from engine.vocabulary import RESTORED_FROM, EventKind
from tests.conftest import REPO, fast_config
from tests.test_control_support import ThreadEngine, short_dir
from tests.test_tui import CALM, feed_until, fixed_clock, ready, small_orders, start_engine

T0 = 1_709_251_200 * 10**9  # 2024-03-01T00:00:00Z in ns
HOUR = 3600 * 10**9
EXAMPLES = int(os.environ.get("HISTORY_EXAMPLES", "30"))  # property examples (more: set it)


# --------------------------------------------------------------------------- the window


def session_row(ts: int, session: int, state: str = "started") -> tuple[str, int, dict[str, Any]]:
    return "session", ts, {"ts_event": ts, "session": session, "state": state, "info": {}}


def audit_row(ts: int, reason: str) -> tuple[str, int, dict[str, Any]]:
    payload = {
        "ts_event": ts,
        "action": "pause",
        "user": "me",
        "client": "cli",
        "args": {"strategy": "ema_cross"},
        "before": {},
        "after": {},
        "reason": reason,
        "accepted": True,
        "message": "ema_cross paused",
    }
    return "audit", ts, payload


def marks_row(ts: int) -> tuple[str, int, dict[str, Any]]:
    return "marks", ts, {"ts_event": ts, "marks": {"BTC/USDT": 60_000.0}}


def write_journal(path: Path, rows: list[tuple[str, int, dict[str, Any]]]) -> None:
    async def write() -> None:
        journal = await Journal.open(path)
        for kind, ts, payload in rows:
            journal.append(kind, ts, payload)
        await journal.close()

    asyncio.run(write())


@pytest.mark.parametrize("extra", [0, 1], ids=["exactly N", "N + 1"])
def test_the_window_holds_the_last_n_history_events(tmp_path: Path, extra: int) -> None:
    """Just inside the bound every history row is kept; one more and the oldest goes. Rows
    that are not history (marks) do not count."""
    rows = [session_row(T0, 1)]
    for i in range(HISTORY_EVENTS - 1 + extra):
        rows.append(audit_row(T0 + i, f"r{i}"))
        if i % 100 == 0:
            rows.append(marks_row(T0 + i))
    path = tmp_path / JOURNAL_FILE
    write_journal(path, rows)
    history = restore_state(path).history
    assert len(history) == HISTORY_EVENTS
    reasons = [e.get("reason") for e in history]
    assert reasons[-1] == f"r{HISTORY_EVENTS - 2 + extra}"
    if extra:
        assert history[0]["event"] == "audit" and reasons[0] == "r0"
    else:
        assert history[0]["event"] == "session" and reasons[1] == "r0"
    assert {e[RESTORED_FROM] for e in history} == {1}
    assert all(e["event"] != "marks" for e in history)


def test_the_window_holds_the_last_24_hours_of_journal_time(tmp_path: Path) -> None:
    """24 h back from the journal's last row, whatever kind it is: a row exactly 24 h older is
    kept, one a nanosecond older is not. The session it came from is known even when that
    session's start is outside the window."""
    last = T0 + 48 * HOUR
    rows = [
        session_row(T0, 1),
        audit_row(last - HISTORY_NS - 1, "just outside"),
        audit_row(last - HISTORY_NS, "just inside"),
        audit_row(last - 1, "newest"),
        marks_row(last),
    ]
    path = tmp_path / JOURNAL_FILE
    write_journal(path, rows)
    history = restore_state(path).history
    assert [e["reason"] for e in history] == ["just inside", "newest"]
    assert [e[RESTORED_FROM] for e in history] == [1, 1]
    assert history[0]["ts"] == last - HISTORY_NS


def test_history_events_are_the_event_dicts_a_client_gets(tmp_path: Path) -> None:
    rows = [
        session_row(T0, 1),
        audit_row(T0 + 1, "a"),
        session_row(T0 + 2, 1, "stopped"),
        session_row(T0 + 3, 2),
        audit_row(T0 + 4, "b"),
    ]
    path = tmp_path / JOURNAL_FILE
    write_journal(path, rows)
    history = restore_state(path).history
    assert [e[RESTORED_FROM] for e in history] == [1, 1, 1, 2, 2]
    assert [e["seq"] for e in history] == [1, 2, 3, 4, 5]
    kind, ts, payload = rows[1]
    assert history[1] == {"seq": 2, "event": kind, "ts": ts, **payload, RESTORED_FROM: 1}


def test_the_trace_after_a_restart_carries_what_restore_keeps() -> None:
    assert TRACE_AFTER_RESTART == HISTORY_KINDS


KINDS = ("audit", "marks", "session")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(KINDS), st.integers(0, 30 * HOUR)), min_size=1, max_size=30
    ),
    n=st.integers(1, 8),
    window_h=st.integers(1, 48),
)
def test_the_window_is_the_last_n_within_the_time_bound(
    steps: list[tuple[str, int]], n: int, window_h: int
) -> None:
    """Whatever the journal holds: the history is the last ``n`` history rows, of those the
    ones no older than the bound before the last row, each marked with its session."""
    rows: list[tuple[str, int, dict[str, Any]]] = []
    ts, session = T0, 0
    for i, (kind, gap) in enumerate(steps):
        ts += gap
        if kind == "session":
            session += 1
            rows.append(session_row(ts, session))
        elif kind == "marks":
            rows.append(marks_row(ts))
        else:
            rows.append(audit_row(ts, f"r{i}"))
    expected = []
    current = 0
    for seq, (kind, row_ts, payload) in enumerate(rows, start=1):
        current = payload["session"] if kind == "session" else current
        if kind != "marks":
            expected.append((seq, current, row_ts))
    expected = [(s, c) for s, c, t in expected[-n:] if t >= ts - window_h * HOUR]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / JOURNAL_FILE
        write_journal(path, rows)
        history = restore_state(path, history_events=n, history_ns=window_h * HOUR).history
    assert [(e["seq"], e[RESTORED_FROM]) for e in history] == expected


# --------------------------------------------------------------------------- a real restart


@dataclass
class FirstSession:
    """An engine that traded, was operated and stopped with an approval pending."""

    data_dir: Path
    snap: dict[str, Any]  # its last snapshot, the trace in full


async def _first_session(data_dir: Path) -> FirstSession:
    engine = await start_engine(data_dir)
    try:
        await feed_until(engine, lambda s: s["approvals"] and s["counters"].get("fills", 0) >= 3)
        ap = engine.snapshot(trace=0, curve=0)["approvals"][0]
        reply = await engine.command("approve", {"id": ap["id"], "hash": ap["hash"]})
        assert reply["ok"], reply
        for name in ("pause", "resume"):
            reply = await engine.command(name, {"strategy": "ema_cross", "reason": f"{name} it"})
            assert reply["ok"], reply
        # The approved order fills, and another approval waits when the engine stops.
        await feed_until(
            engine,
            lambda s: (
                s["approvals"]
                and any(
                    o["intent_id"] == ap["intent_id"] and o["status"] == "filled"
                    for o in s["orders"]
                )
            ),
        )
        snap = await engine.durable_snapshot(trace=HISTORY_EVENTS)
    finally:
        await engine.stop()
    return FirstSession(data_dir, dict(snap))


@pytest.fixture(scope="module")
def first_session(tmp_path_factory: pytest.TempPathFactory) -> FirstSession:
    return asyncio.run(_first_session(tmp_path_factory.mktemp("first") / "data"))


@pytest.fixture
def restarted_dir(first_session: FirstSession, tmp_path: Path) -> Path:
    """A copy of the first session's data directory, for a new engine to start on."""
    target = tmp_path / "data"
    shutil.copytree(first_session.data_dir, target)
    return target


def _plain(event: dict[str, Any]) -> str:
    """An event as JSON without its seq (live and journal numbering differ) or history mark."""
    body = {k: v for k, v in event.items() if k not in ("seq", RESTORED_FROM)}
    return json.dumps(body, sort_keys=True, default=str)


def _journaled(trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trace events the journal records (a HOLD decision and a quote reject are not)."""
    return [
        e
        for e in trace
        if e["event"] != EventKind.QUOTES_REJECTED
        and not (e["event"] == EventKind.DECISION and e["decision"]["action"] == "hold")
    ]


def _closed(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The snapshot's finished orders by id, newest first."""
    return {o["client_order_id"]: o for o in snap["orders"] if o["status"] not in OPEN}


def _still_listed(before: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The finished orders a restarted engine lists of ``before``'s: all of them but as many
    of the oldest as orders were open at the stop (a paper restart finishes those, and they
    come first, as the newest)."""
    open_then = sum(o["status"] in OPEN for o in before["orders"])
    return dict(list(_closed(before).items())[: CLOSED_ORDERS - open_then])


async def test_a_restarted_engine_shows_what_the_last_one_showed(
    first_session: FirstSession, restarted_dir: Path
) -> None:
    before = first_session.snap
    engine = await start_engine(restarted_dir)
    try:
        after = await engine.durable_snapshot(trace=HISTORY_EVENTS)
    finally:
        await engine.stop()
    trace = after["trace"]
    restored = [e for e in trace if RESTORED_FROM in e]
    live = [e for e in trace if RESTORED_FROM not in e]
    # Every order, fill, decision, approval and audit row the first session showed, once.
    shown_before = [_plain(e) for e in _journaled(before["trace"])]
    shown_after = [_plain(e) for e in restored]
    assert len(shown_before) > 30
    missing = [e for e in shown_before if e not in set(shown_after)]
    assert missing == []
    assert len(shown_after) == len(set(shown_after))
    kinds = {e["event"] for e in restored}
    assert {"decision", "intent", "order", "fill", "approval_requested", "audit"} <= kinds
    audits = [(e["action"], e["reason"]) for e in restored if e["event"] == "audit"]
    assert audits[-3:] == [("approve", ""), ("pause", "pause it"), ("resume", "resume it")]
    assert {e[RESTORED_FROM] for e in restored} == {1}
    # History first, then the line between the sessions, then what is new.
    assert trace[: len(restored)] == restored
    assert [(e["session"], e["state"]) for e in trace if e["event"] == "session"] == [
        (1, "started"),
        (1, "stopped"),
        (2, "started"),
    ]
    # The Orders pane's finished orders, in their final state.
    closed = _still_listed(before)
    assert closed and all(_closed(after).get(coid) == o for coid, o in closed.items())
    # Nothing applied twice: cash, PnL, fees and positions are the journal's, as before.
    for key in ("cash", "realized_pnl", "fees_paid"):
        assert after["portfolio"][key] == pytest.approx(before["portfolio"][key], abs=1e-9), key
    assert {p["symbol"]: p["qty"] for p in after["positions"]} == {
        p["symbol"]: p["qty"] for p in before["positions"]
    }
    # An approval pending at the stop expires at the restart, as before: the request is
    # history, the expiry is this session's news, and nothing waits.
    waiting = before["approvals"]
    assert waiting and after["approvals"] == []
    requested = {e["approval"]["id"] for e in restored if e["event"] == "approval_requested"}
    expired = {
        e["outcome"]["approval_id"]
        for e in live
        if e["event"] == "approval" and e["outcome"]["status"] == "expired"
    }
    assert {a["id"] for a in waiting} <= requested & expired


async def test_the_history_is_never_streamed_as_news(
    first_session: FirstSession, restarted_dir: Path
) -> None:
    """Subscribers and resuming clients get only this session's events."""
    engine = Engine(fast_config(restarted_dir, auto=False, safety=CALM), restarted_dir)
    stream = engine.subscribe_dicts()
    await engine.start()
    try:
        await engine.committed()
        assert engine.fanout.history
        first = engine.fanout.history[0]["seq"]
        streamed = []
        while not stream.empty():
            streamed.append(stream.get_nowait())
        assert streamed and all(RESTORED_FROM not in e for e in streamed)
        replay = engine.events_since(first - 1)
        assert replay is None or all(RESTORED_FROM not in e for e in replay)
    finally:
        await engine.stop()


def test_cockpit_trace_over_the_socket_shows_the_history(
    first_session: FirstSession, restarted_dir: Path
) -> None:
    before = first_session.snap
    fills = {e["fill"]["fill_id"] for e in before["trace"] if e["event"] == "fill"}
    last_order = next(e["order"] for e in reversed(before["trace"]) if e["event"] == "order")
    with short_dir() as sd, ThreadEngine(restarted_dir, sd / "e.sock") as te:
        argv = [sys.executable, "-m", "cockpit", "trace", "--socket", str(te.socket)]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        got = subprocess.run(
            [*argv, "-n", str(HISTORY_EVENTS), "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert got.returncode == 0, got.stderr
        items = json.loads(got.stdout)
        restored_fills = {e["fill"]["fill_id"] for e in items if e["event"] == "fill"}
        assert fills and fills <= restored_fills
        assert all(e[RESTORED_FROM] == 1 for e in items if e["event"] == "fill")
        text = subprocess.run(
            [*argv, "-n", "200"], capture_output=True, text=True, env=env, timeout=60
        )
        assert text.returncode == 0, text.stderr
        assert last_order["client_order_id"] in text.stdout
        # The sessions' stops and starts: the line between before and after the restart.
        assert sum(" session " in line for line in text.stdout.splitlines()) == 3
        # Every line from before the restart says so (it must not read as just happened).
        fill_lines = [line for line in text.stdout.splitlines() if " fill " in line]
        assert fill_lines and all(
            line.endswith("[session 1, before the restart]") for line in fill_lines
        )
        # What a client attaching gets: the orders finished before the restart, as they ended.
        status = subprocess.run(
            [sys.executable, "-m", "cockpit", "status", "--json", "--socket", str(te.socket)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        closed = _still_listed(before)
        assert closed and all(
            _closed(json.loads(status.stdout)).get(c) == o for c, o in closed.items()
        )


async def test_the_embedded_cockpit_shows_the_orders_and_trace_from_before(
    first_session: FirstSession, restarted_dir: Path
) -> None:
    before = first_session.snap
    decisions = {
        e["decision"]["decision_id"]
        for e in before["trace"]
        if e["event"] == "decision" and e["decision"]["action"] != "hold"
    }
    cfg = fast_config(restarted_dir, auto=False, safety=CALM, strategies=small_orders())
    session = EmbeddedSession(cfg, restarted_dir, free_run=False)
    app = CockpitApp(session=session, clock=fixed_clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await app.refresh_tables()
        await pilot.pause()
        orders = set(app.main.query_one("#orders-table")._order)  # type: ignore[attr-defined]
        assert set(_still_listed(before)) <= orders
        await pilot.press("3")  # the trace, full size
        await pilot.pause()
        shown = set(app.main.trace.table._order)
        newest = sorted(decisions, key=lambda d: int(d.rsplit("-", 1)[1]))[-20:]
        assert set(newest) <= shown
        # History is no news: no toast, no bell for the approval that waited before.
        assert app.notices == [] and app.bells == 0
        log = [line.text for line in app.view.log]
        assert "session 1 stopped" in log and "session 2 started" in log


async def test_an_edited_journal_still_refuses_to_start(
    first_session: FirstSession, restarted_dir: Path
) -> None:
    """A forged row in the history window: the chain check refuses before anything is read."""
    journal = restarted_dir / JOURNAL_FILE
    conn = sqlite3.connect(journal)
    try:
        seq, payload = conn.execute(
            "SELECT seq, payload FROM journal WHERE kind = 'audit' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        forged = json.loads(payload) | {"reason": "nobody paused anything"}
        conn.execute("UPDATE journal SET payload = ? WHERE seq = ?", (json.dumps(forged), seq))
        conn.commit()
    finally:
        conn.close()
    engine = Engine(fast_config(restarted_dir, auto=False, safety=CALM), restarted_dir)
    with pytest.raises(JournalBroken) as err:
        await engine.start()
    assert f"row {seq}" in str(err.value)
    assert engine.core is None and not engine.fanout.history


async def test_after_a_crash_the_new_session_start_marks_the_line(
    data_dir: Path, tmp_path: Path
) -> None:
    """No clean stop (the data directory copied while the engine runs, as a kill -9 leaves
    it): the history is there all the same, and this session's start is the line after it."""
    engine = await start_engine(data_dir)
    crashed = tmp_path / "crashed"
    try:
        await feed_until(engine, lambda s: s["counters"].get("fills", 0) >= 2)
        before = await engine.durable_snapshot(trace=HISTORY_EVENTS)
        shutil.copytree(data_dir, crashed)
    finally:
        await engine.stop()
    restarted = await start_engine(crashed)
    try:
        trace = (await restarted.durable_snapshot(trace=HISTORY_EVENTS))["trace"]
    finally:
        await restarted.stop()
    fills = {e["fill"]["fill_id"] for e in before["trace"] if e["event"] == "fill"}
    assert fills and fills <= {
        e["fill"]["fill_id"] for e in trace if e["event"] == "fill" and e[RESTORED_FROM] == 1
    }
    sessions = [
        (e["session"], e["state"], RESTORED_FROM in e) for e in trace if e["event"] == "session"
    ]
    assert sessions == [(1, "started", True), (2, "started", False)]


def test_the_history_gives_way_as_this_sessions_events_come() -> None:
    """The snapshot's events are at most the live buffer's size in all, as if the engine had
    kept running: each new event pushes the oldest history event out first."""
    fanout = EventFanout()
    fanout.recent = deque(maxlen=4)
    fanout.restore_history({"seq": s, "event": "audit", RESTORED_FROM: 1} for s in (1, 2, 3))
    assert [e["seq"] for e in fanout.shown()] == [1, 2, 3]
    fanout.recent.extend({"seq": s, "event": "audit"} for s in (4, 5))
    assert [e["seq"] for e in fanout.shown()] == [2, 3, 4, 5]
    assert [e["seq"] for e in fanout.shown(newest_first=True)] == [5, 4, 3, 2]
    fanout.recent.extend({"seq": s, "event": "audit"} for s in (6, 7, 8))
    assert [e["seq"] for e in fanout.shown()] == [5, 6, 7, 8] and not fanout.history
