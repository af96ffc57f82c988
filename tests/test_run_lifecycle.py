"""What ``Engine.run`` starts, it ends: when ``run()`` returns, nothing of it is left running.

The KILL-file watcher and the clock tick belong to a run. A watcher left behind after ``run()``
returned kept acting on the engine afterwards (in paper mode: every run leaked one), even after
``stop()`` closed the journal: a KILL file created then engaged the switch and showed it,
though no journal recorded it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.events import EngineEvent
from engine.runtime import Engine
from tests.conftest import fast_config


def _run_tasks() -> list[asyncio.Task[object]]:
    """Tasks running one of the engine's own coroutines (its watcher)."""
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and getattr(t.get_coro(), "__qualname__", "").startswith("Engine.")
    ]


async def test_run_returns_with_its_watcher_ended(data_dir: Path) -> None:
    cfg = fast_config(data_dir, safety={"kill_switch": {"poll_s": 0.01}})
    engine = Engine(cfg, data_dir)
    await engine.start()
    try:
        for _ in range(3):
            await engine.run(max_events=50)
            assert _run_tasks() == []
    finally:
        await engine.stop()


async def test_a_stopped_engine_shows_nothing_a_journal_did_not_record(data_dir: Path) -> None:
    cfg = fast_config(data_dir, safety={"kill_switch": {"poll_s": 0.01}})
    shown: list[EngineEvent] = []
    engine = Engine(cfg, data_dir, emit=shown.append)
    await engine.start()
    await engine.run(max_events=50)
    await engine.stop()
    after_stop = len(shown)
    engine.kill_file.write_text("halt\n")
    await asyncio.sleep(0.3)  # many watcher periods
    assert shown[after_stop:] == []
    assert engine.core is not None and engine.core.safety.kill.level is None
    assert _run_tasks() == []


class _Beside:
    """A companion that records that it ran and that it was ended."""

    def __init__(self) -> None:
        self.started = 0
        self.ended = 0

    async def run(self, engine: Engine) -> None:
        self.started += 1
        try:
            await asyncio.Event().wait()
        finally:
            self.ended += 1


async def test_companions_run_beside_each_run_and_end_with_it(data_dir: Path) -> None:
    engine = Engine(fast_config(data_dir), data_dir)
    beside = _Beside()
    engine.companions.append(beside)
    await engine.start()
    try:
        for n in (1, 2):
            await engine.run(max_events=50)
            assert (beside.started, beside.ended) == (n, n)
    finally:
        await engine.stop()
