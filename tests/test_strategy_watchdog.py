"""A trader's strategy that never returns cannot hold the engine (engine/watchdog.py).

Found: a call over a second paused the strategy only once it returned; one that never did (an
endless loop, a sleep of an hour, a request with no timeout) held the engine for good: the kill
switch (promised within a second), the KILL file, SIGUSR1 and the protective exits waited
behind it. A watchdog thread now interrupts the call about a second after it began; the strategy
is paused saying so and where it was stuck, and the engine trades on.

Each hanging strategy below gives up by itself after HANG_S, so that without the watchdog the
test fails on the reason ("returned after 20.0 s"), never by hanging the suite.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from engine import watchdog
from engine.types import PositionView, Quote, Signal
from tests.test_safety_engine import (
    BTC,
    Harness,
    Scripted,
    buy,
    harnesses,  # noqa: F401  (the fixture the tests take)
    scripted_config,
    start,
    strategy,
)
from tests.test_strategy_failure import paused_reason

HERE = "tests.test_strategy_watchdog"
HANG_S = 20.0


class Hangs(Scripted):
    """Scripted, until ``hang`` names how to hold the engine on the next quote."""

    hang = ""

    def on_quote(self, quote: Quote, position: PositionView) -> Signal | None:
        how, self.hang = self.hang, ""
        deadline = time.monotonic() + HANG_S
        if how == "loop":
            while time.monotonic() < deadline:
                pass
        elif how == "sleep":
            time.sleep(HANG_S)
        elif how == "swallow":  # its own `except Exception` around the work
            while time.monotonic() < deadline:
                try:
                    while time.monotonic() < deadline:
                        pass
                except Exception:
                    continue
        return super().on_quote(quote, position)


def config(data_dir: Path) -> Any:
    return scripted_config(
        data_dir,
        strategies=[strategy("alpha", "auto"), strategy("buggy", "auto", kind=f"{HERE}:Hangs")],
    )


@pytest.mark.parametrize("how", ["loop", "sleep", "swallow"])
async def test_a_strategy_that_never_returns_is_interrupted_and_the_engine_trades_on(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    how: str,
) -> None:
    h = await start(harnesses, data_dir, config(data_dir))
    await h.feed(BTC, 60_000.0)
    h.core.slots[("buggy", BTC)].strategy.hang = how
    await h.feed(BTC, 60_000.0)
    reason = paused_reason(h, "buggy")
    assert reason.startswith("strategy buggy did not return within 1 s and was interrupted"), reason
    assert "test_strategy_watchdog.py:" in reason  # where it was stuck
    sent = len(h.sent)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    assert len(h.sent) == sent + 1


async def test_a_quick_strategy_and_a_stray_sigusr2_are_left_alone(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """SIGUSR2 from outside (no call past its second) does nothing; strategies that return in
    time are never interrupted."""
    h = await start(harnesses, data_dir, config(data_dir))
    for _ in range(3):
        os.kill(os.getpid(), signal.SIGUSR2)
        await h.feed(BTC, 60_000.0)
    assert not h.core.safety.is_paused("buggy") and not h.core.safety.is_paused("alpha")
    await h.signal("buggy", BTC, buy(), 60_000.0)
    assert h.sent and h.sent[-1].strategy_id == "buggy"


class FakeCore:
    calling = 0


def test_the_watch_flags_only_the_same_call_still_running_past_the_limit() -> None:
    """The thread's side, on a clock of its own: a call is flagged once it has been seen in
    progress for more than the limit (just under: not), again a limit later if it still runs,
    never when another call (or none) is in progress."""
    core = FakeCore()
    dog = watchdog.StrategyWatchdog(core, limit_s=1.0)  # type: ignore[arg-type]
    core.calling = 7
    assert not dog.due(100.0)  # first seen
    assert not dog.due(101.0)  # exactly the limit: not past it
    assert dog.due(101.01) and dog.flagged == 7
    assert not dog.due(101.5)  # asked already
    assert dog.due(102.02)  # still stuck a limit later (it caught the first)
    core.calling = 8
    assert not dog.due(103.5)  # another call: its own clock starts
    core.calling = 0
    assert not dog.due(110.0)


def test_an_engine_without_a_traders_own_strategy_starts_no_watch() -> None:
    class NoTraderStrategy:
        def __init__(self) -> None:
            self.slots: dict[str, Any] = {}

    assert watchdog.watch(NoTraderStrategy()) is None  # type: ignore[arg-type]
