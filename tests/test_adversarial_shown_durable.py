"""Nothing is shown as done before the journal row recording it is committed.

A fill printed on stdout (headless `cockpit engine`), sent to a control-socket client or drawn in
the TUI must survive a kill -9 at that very moment: the engine shows an event only once the
journal's commit covers its row and every row before it. These tests look at the journal on disk
(a second, read-only connection sees only committed rows) at the instant each event is shown.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from engine.events import EngineEvent
from engine.journal import read_rows
from engine.runtime import JOURNAL_FILE, Engine
from tests.conftest import fast_config


def trading_config(data_dir: Path) -> Any:
    """The default strategies, all in auto, with throttles and breakers out of the way: fills
    every few hundred quotes."""
    return fast_config(
        data_dir,
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
    engine._dict_subscribers.append(queue)
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
        marks = core._marks_event(core.now)
        await engine._publish([marks])  # journaled, not yet committed
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
        await engine._publish([core._marks_event(core.now)])
        await asyncio.wait([journal._writer], timeout=10)
        assert journal.failed is not None
        await engine._publish([core._marks_event(core.now)])
        assert shown[before:] == []
        assert engine.events_dropped == 2
        assert "journal write failed" in engine.blocked_reason
        assert engine.summary()["blocked"]
    finally:
        await engine.stop()
