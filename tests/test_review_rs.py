"""Review of restart fidelity of what was added today (review-rs): the engine that starts again
on a data directory is the one that stopped.

Attacks that held:
"""

from __future__ import annotations

from pathlib import Path

from tests.test_safety_engine import (
    BTC,
    Harness,
    buy,
    harnesses,  # noqa: F401  (the fixture the tests below take)
    start,
)
from tests.test_strategy_failure import faulty_config, paused_reason


async def test_a_strategy_paused_for_its_own_failure_is_not_called_after_a_restart(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """The engine pauses a strategy that raised (or hung until the watchdog interrupted it)
    and does not call it again until a person resumes it. After a restart it was still shown
    paused, but it was called again on every quote and bar (a hang held the engine again, a
    raise restated the pause with a new reason): the restart forgot it had failed."""
    h = await start(harnesses, data_dir, faulty_config(data_dir))
    await h.feed(BTC, 60_000.0)
    await h.signal("buggy", BTC, ZeroDivisionError("float division by zero"), 60_000.0)
    reason = paused_reason(h, "buggy")
    await h.stop()
    harnesses.remove(h)
    h2 = await start(harnesses, data_dir, faulty_config(data_dir))
    assert paused_reason(h2, "buggy") == reason
    script = h2.core.slots[("buggy", BTC)].strategy.script
    script.append(buy())
    await h2.feed(BTC, 60_000.0)
    await h2.feed(BTC, 60_000.0)
    assert list(script) == [buy()]  # never called
    assert paused_reason(h2, "buggy") == reason
    # A person's resume calls it again.
    reply = await h2.engine.command("resume", {"strategy": "buggy", "reason": "fixed"})
    assert reply["ok"], reply
    await h2.feed(BTC, 60_000.0)
    assert list(script) == []
