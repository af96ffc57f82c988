"""Nothing is shown as done before the journal row recording it is committed.

A fill printed on stdout (headless `cockpit engine`), sent to a control-socket client or drawn in
the TUI must survive a kill -9 at that very moment: the engine shows an event only once the
journal's commit covers its row and every row before it. These tests look at the journal on disk
(a second, read-only connection sees only committed rows) at the instant each event is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from cockpit.socket_client import SocketClient
from engine.client import InProcessClient
from engine.control import ControlServer
from engine.events import EngineEvent
from engine.journal import read_rows
from engine.runtime import JOURNAL_FILE, Engine
from tests.conftest import default_dict, fast_config
from tests.test_control_support import short_dir


def trading_config(data_dir: Path) -> Any:
    """The default strategies, all in auto, on 1 s bars, with throttles and breakers out of the
    way: fills every few hundred quotes."""
    strategies = [dict(s, approval="auto", timeframe_s=1) for s in default_dict()["strategies"]]
    return fast_config(
        data_dir,
        strategies=strategies,
        market={"simulated": {"history_timeframe_s": 1}},
        risk={
            "strategy_throttle": {"max_orders": 1000, "per_seconds": 1},
            "global_throttle": {"max_orders": 1000, "per_seconds": 1},
        },
        safety={"breakers": {"baseline_signals_per_hour": 1_000_000}},
    )


def committed_fill_ids(data_dir: Path) -> set[str]:
    return {r.payload["fill"]["fill_id"] for r in read_rows(data_dir / JOURNAL_FILE, {"fill"})}


def committed_seqs(data_dir: Path) -> int:
    rows = list(read_rows(data_dir / JOURNAL_FILE))
    return rows[-1].seq if rows else 0


class CheckingQueue(asyncio.Queue[dict[str, Any]]):
    """A subscriber (what the control socket and the TUI read) that looks at the disk whenever
    an event reaches it."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.fills = 0
        self.unrecorded: list[str] = []

    def put_nowait(self, item: dict[str, Any]) -> None:
        if item["event"] == "fill":
            self.fills += 1
            if item["fill"]["fill_id"] not in committed_fill_ids(self.data_dir):
                self.unrecorded.append(item["fill"]["fill_id"])
        super().put_nowait(item)


async def test_fills_reach_stdout_and_subscribers_only_once_committed(data_dir: Path) -> None:
    printed: list[str] = []
    unrecorded: list[str] = []

    def emit(ev: EngineEvent) -> None:  # what `cockpit engine` prints
        if ev.kind == "fill":
            fill_id = ev.fill.fill_id  # type: ignore[attr-defined]
            printed.append(fill_id)
            if fill_id not in committed_fill_ids(data_dir):
                unrecorded.append(fill_id)

    engine = Engine(trading_config(data_dir), data_dir, emit=emit)
    await engine.start()
    queue = CheckingQueue(data_dir)
    engine.fanout._dict_subscribers.append(queue)
    try:
        await engine.run(max_events=30_000)
    finally:
        await engine.stop()
    assert len(printed) >= 20, "the run should trade (the test needs fills to look at)"
    assert queue.fills == len(printed)
    assert unrecorded == [], f"{len(unrecorded)} of {len(printed)} fills printed before commit"
    assert queue.unrecorded == [], f"{len(queue.unrecorded)} fills sent to a client uncommitted"
    # Every event that was shown is in the stream, numbered, in the order the core made them.
    assert committed_fill_ids(data_dir) == set(printed)


async def test_an_event_behind_an_uncommitted_row_waits_for_it(data_dir: Path) -> None:
    """Even an event that is not journaled (rejected quotes) is shown only after every row
    before it is committed: the stream's order is the journal's order."""
    shown: list[tuple[str, int]] = []

    def emit(ev: EngineEvent) -> None:
        shown.append((ev.kind, committed_seqs(data_dir)))

    engine = Engine(trading_config(data_dir), data_dir, emit=emit)
    await engine.start()
    try:
        journal = engine.journal
        assert journal is not None
        await journal.flush()
        before = len(shown)
        core = engine.core
        assert core is not None
        marks = core.marks_event(core.now)
        await engine.publish([marks])  # journaled, not yet committed
        row = journal.last_seq
        assert len(shown) == before, "an event was shown before its row was committed"
        await journal.flush()
        assert shown[before:] == [("marks", row)]
    finally:
        await engine.stop()


async def test_after_a_journal_failure_nothing_more_is_shown(data_dir: Path) -> None:
    """Rows lost with a failed commit were never recorded: their events are never shown, and
    the engine says it is blocked."""
    shown: list[str] = []
    engine = Engine(trading_config(data_dir), data_dir, emit=lambda ev: shown.append(ev.kind))
    await engine.start()
    try:
        journal = engine.journal
        assert journal is not None
        await journal.flush()
        before = len(shown)
        core = engine.core
        assert core is not None

        async def broken(*_: Any) -> None:
            raise OSError(28, "No space left on device")

        journal._conn.executemany = broken  # type: ignore[method-assign]
        await engine.publish([core.marks_event(core.now)])
        await asyncio.wait([journal._writer], timeout=10)
        assert journal.failed is not None
        await engine.publish([core.marks_event(core.now)])
        # Only the notice that the engine is blocked, at once: nothing the journal lost.
        assert shown[before:] == ["blocked"]
        assert engine.events_dropped == 2
        assert "journal write failed" in engine.blocked_reason
        assert engine.summary()["blocked"]
    finally:
        await engine.stop()


# --------------------------------------------------------------------------- snapshots


class Gate(asyncio.Event):
    fault: BaseException | None = None  # raised by the commit once the gate opens


@contextlib.asynccontextmanager
async def slow_disk(engine: Engine) -> AsyncIterator[Gate]:
    """Commits wait until the returned gate is set: rows stay appended but uncommitted."""
    journal = engine.journal
    assert journal is not None
    await journal.flush()
    gate = Gate()
    real = journal._conn.commit

    async def commit() -> None:
        await gate.wait()
        if gate.fault is not None:
            raise gate.fault
        await real()

    journal._conn.commit = commit  # type: ignore[method-assign]
    try:
        yield gate
    finally:
        gate.set()
        journal._conn.commit = real  # type: ignore[method-assign]


async def pending_row(engine: Engine) -> int:
    core = engine.core
    assert core is not None and engine.journal is not None
    await engine.publish([core.marks_event(core.now)])
    return engine.journal.last_seq


async def test_a_snapshot_is_handed_over_only_once_what_it_shows_is_committed(
    data_dir: Path,
) -> None:
    """Snapshots carry positions and orders: taken now, delivered (in process, over the
    socket, as the headless summary) only after the rows behind them are committed."""
    engine = Engine(trading_config(data_dir), data_dir)
    await engine.start()
    client = InProcessClient(engine)
    with short_dir() as sock_dir:
        server = ControlServer(engine, sock_dir / "e.sock")
        await server.start()
        remote = await SocketClient.open(server.path, name="t")
        try:
            async with slow_disk(engine) as gate:
                row = await pending_row(engine)
                seq = engine.seq
                local = asyncio.create_task(client.snapshot(trace=10, curve=0))
                over = asyncio.create_task(remote.snapshot(trace=10, curve=0))
                await asyncio.sleep(0.3)
                assert not local.done() and not over.done(), "a snapshot went out uncommitted"
                gate.set()
                snaps = await asyncio.wait_for(asyncio.gather(local, over), 10)
            assert committed_seqs(data_dir) >= row
            # In process the snapshot is taken at once and held; the socket server first lets
            # the pending commit land (its snapshot then includes the marks event) and holds
            # what it builds until that too is committed.
            assert snaps[0]["seq"] == seq
            assert snaps[1]["seq"] == seq + 1
        finally:
            await remote.close()
            await server.close()
            await engine.stop()


async def test_a_journal_failure_releases_waiting_snapshots(data_dir: Path) -> None:
    """A snapshot waiting for a commit that will never come is delivered anyway: it is
    how a person learns the engine is blocked."""
    engine = Engine(trading_config(data_dir), data_dir)
    await engine.start()
    client = InProcessClient(engine)
    try:
        async with slow_disk(engine) as gate:
            journal = engine.journal
            assert journal is not None
            await pending_row(engine)
            waiting = asyncio.create_task(client.snapshot(trace=0, curve=0))
            await asyncio.sleep(0.1)
            assert not waiting.done()

            gate.fault = sqlite3.OperationalError("disk I/O error")
            gate.set()
            snap = await asyncio.wait_for(waiting, 10)
        assert "journal write failed" in snap["blocked"]
    finally:
        await engine.stop()


async def test_the_journal_backlog_stays_bounded_so_a_kill_reply_never_waits_long(
    tmp_path: Path,
) -> None:
    """At full speed with a kill engaged every signal is denied and journaled: the engine
    appended faster than the disk committed, the backlog grew without bound and a durable
    reply (the kill's) waited behind it (30 s and more in CI). The feed now waits for the disk
    once MAX_JOURNAL_BACKLOG rows are uncommitted."""
    from engine.config import load_config
    from engine.runtime import MAX_JOURNAL_BACKLOG
    from tests.test_adversarial_kill9 import fast_toml

    data_dir = tmp_path / "data"
    engine = Engine(load_config(fast_toml(tmp_path)), data_dir)
    await engine.start()
    journal = engine.journal
    assert journal is not None
    seen: list[int] = []
    real_process = engine.process

    async def process(batch: Any) -> None:
        await real_process(batch)
        seen.append(journal.backlog)

    engine.process = process  # type: ignore[method-assign]
    run = asyncio.create_task(engine.run(max_events=400_000))
    try:
        await asyncio.sleep(0.5)
        reply = await asyncio.wait_for(
            engine.command("kill", {"level": "halt", "reason": "backlog"}), 60
        )
        assert reply["ok"], reply
        await asyncio.wait_for(run, 120)
    finally:
        engine.request_stop()
        with contextlib.suppress(BaseException):
            await run
        await engine.stop()
    assert len(seen) > 10
    assert max(seen) <= MAX_JOURNAL_BACKLOG, max(seen)
