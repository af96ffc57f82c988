"""Review of restart fidelity of what was added today (review-rs): the engine that starts again
on a data directory is the one that stopped.

Attacks that held (one line each):
- cancels a kill at entries, a pause or a lowered limit asked before a stop: the start judges
  each again after the venue's downtime fills are reconciled (``execution.resume`` first), on the
  restored position, so every cancel is asked again and a raced fill is judged again;
- a failure pause survives a restart with its reason and ``by: system``; a breaker's re-arm does
  not resume it (its reason is not the breaker's); a person's resume calls it again;
- kill -9 between a live trail and the new venue stop: the "trailed" row is committed by the
  new stop's write-ahead flush before it is sent (the restart moves the venue stop to it);
- a restart twice in a row after a clean session: the second trails nothing (the first's
  quotes moved "seen until" past the downtime); an unchanged trail writes no row (``noted``);
- history bars closing at or before what the journal saw leave the trail as journaled; a bar
  containing the entry counts from its close, as on a running engine;
- stray venue stops: found again by each start (the journal still holds them open until the
  venue answers), so a cancel lost across two restarts is asked again;
- a live start's clock is never before the journal's last row (``max(wall, last + 1)``), a
  simulated market's fixed start continues after it; operator actions before the first quote
  are stamped at the start's clock;
- an engine blocked because its loop raised: the block is that run's, the next start trades.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.core import StrategyOverran
from tests.test_safety_engine import (
    BTC,
    Harness,
    buy,
    harnesses,  # noqa: F401  (the fixture the tests below take)
    start,
)
from tests.test_strategy_failure import faulty_config, paused_reason


@pytest.mark.parametrize(
    "failure",
    [ZeroDivisionError("float division by zero"), StrategyOverran(1.0)],
    ids=["raised", "hung"],
)
async def test_a_strategy_paused_for_its_own_failure_is_not_called_after_a_restart(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    failure: BaseException,
) -> None:
    """The engine pauses a strategy that raised (or hung until the watchdog interrupted it)
    and does not call it again until a person resumes it. After a restart it was still shown
    paused, but it was called again on every quote and bar (a hang held the engine again, a
    raise restated the pause with a new reason): the restart forgot it had failed."""
    h = await start(harnesses, data_dir, faulty_config(data_dir))
    await h.feed(BTC, 60_000.0)
    await h.signal("buggy", BTC, failure, 60_000.0)  # type: ignore[arg-type]
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


async def test_a_start_that_failed_after_its_session_row_does_not_hide_the_downtime(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """A restart trails the exits on the history bars that closed after the journal's last
    moment (the downtime). A start that failed after its session-start row was durable (the
    venue did not answer at resume, or a kill -9 before warm_up's "trailed" rows reached the
    disk) moved that moment to its own clock: the next start took the downtime as seen and
    never trailed it. A start's own rows (stamped at its clock before any market event) are
    not the market seen."""
    from engine.journal import read_rows
    from engine.runtime import Engine
    from tests.test_safety_engine import scripted_config

    h = await start(harnesses, data_dir)
    for _ in range(3):
        await h.feed(BTC, 60_000.0)
    await h.stop()
    harnesses.remove(h)
    seen = max(r.ts for r in read_rows(h.journal))

    failing = Engine(scripted_config(data_dir), data_dir)

    async def down(*_a: object) -> None:
        raise ConnectionError("venue down")

    failing.execution.resume = down  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await failing.start()
    await failing.stop()
    assert max(r.ts for r in read_rows(h.journal)) > seen  # its rows are at its clock

    h3 = await start(harnesses, data_dir)
    assert h3.core._exits_seen_until == seen


async def test_an_engine_blocked_because_its_loop_stopped_on_an_error_starts_unblocked(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """(Held.) The loop's error blocks that run (no order goes out with nothing to watch it);
    the block is the run's, not the data directory's: the next start trades."""
    h = await start(harnesses, data_dir)

    async def broken(_batch: object) -> None:
        raise RuntimeError("feed parser bug")

    h.engine.process = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await h.engine.run(max_events=5)
    assert h.engine.blocked_reason
    await h.stop()
    harnesses.remove(h)
    h2 = await start(harnesses, data_dir)
    assert not h2.engine.blocked_reason and not h2.core.blocked_reason
    sent = len(h2.sent)
    await h2.signal("alpha", BTC, buy(), 60_000.0)
    assert len(h2.sent) == sent + 1


async def test_what_the_engine_decided_before_a_cancel_is_durable_before_the_venue_acts(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """A trail that moves a binance venue stop is journaled ("trailed"), then the old stop is
    cancelled (the new one placed once the venue confirms). The cancel went to the venue with
    the "trailed" row still uncommitted: a kill -9 there left the venue stop cancelled and
    the trail lost, so the restart put the stop back at the older, looser trail (a venue
    engine loads no history bars to trail the difference again). Every row before a cancel is
    now committed before the venue sees it, as an order's intent is before its send."""
    from engine.core import CancelOrder
    from engine.events import ExitsChanged
    from engine.journal import read_rows

    h = await start(harnesses, data_dir)
    engine = h.engine
    committed_at_cancel: list[bool] = []

    async def spy(cancel: CancelOrder, now: int) -> list[object]:
        trailed = [r for r in read_rows(h.journal, {"exits"}) if r.payload["change"] == "trailed"]
        committed_at_cancel.append(bool(trailed))
        return []

    engine.execution.cancel = spy  # type: ignore[method-assign]
    exits = {"side": 1, "best": 120.0, "trail": 114.0}
    trailed = ExitsChanged(h.core.now, "alpha", BTC, "trailed", exits)
    await engine.handle([trailed, CancelOrder("ck-1-1", "venue stop moves: 94 -> 114")])
    assert committed_at_cancel == [True]


def test_a_second_restart_over_the_same_downtime_trails_nothing_twice() -> None:
    """A restart that saw no market (killed, or failed at resume) leaves the downtime to the
    next one. That one trailed the same bars again from the best price the first had reached
    (120.5 from the first bar on, with the ATR of then): a trail of 116.5 where the bars gave
    116.0, a tighter stop than any running engine would have held. The rows a restart trails
    are now stamped at their bar's close, and the next restart trails a position only on the
    bars after its own last row: the same state, and no second "trailed" row."""
    from engine.events import ExitsChanged, FillReceived
    from engine.types import NS_PER_SECOND, Bar
    from tests.test_exits import SYM, make_core
    from tests.test_exits import Harness as ExitsHarness

    exits = {"trailing_atr": 3.0, "atr_period": 3}
    h = ExitsHarness(make_core(exits))
    for _ in range(6):
        h.quote(100.0)
        h.quote(101.0, step_s=0.5)
    seen_until = h.core.now
    fills = [e.fill for e in h.events if type(e) is FillReceived]

    def restarted(rows: tuple[dict[Any, Any], dict[Any, int]], history: list[Bar]) -> Any:
        again = ExitsHarness(make_core(exits))
        core = again.core
        core.slots[("s1", SYM)].strategy.entered = True
        for fill in fills:
            core.portfolio.apply_fill(fill)
        core.restore(fills, [])
        core.restore_exits(rows[0], seen_until, rows[1])
        again.handle(core.warm_up(history))
        return again

    def rows_of(*runs: Any) -> tuple[dict[Any, Any], dict[Any, int]]:
        """The last exits row of each position, and its time, as the journal restores them."""
        rows = [e for x in runs for e in x.events if type(e) is ExitsChanged]
        return (
            {(e.strategy_id, e.symbol): e.exits for e in rows},
            {(e.strategy_id, e.symbol): e.ts for e in rows},
        )

    t = seen_until + NS_PER_SECOND
    path = [*range(101, 121), *range(119, 109, -1)]
    down = [
        Bar(SYM, t + i * NS_PER_SECOND, 1, p - 0.5, p + 0.5, p - 0.5, p, 1e6, "sim")
        for i, p in enumerate(path)
    ]
    first = restarted(rows_of(h), down)
    st1 = first.core.slots[("s1", SYM)].exits
    assert st1 is not None and st1.best == 120.5
    second = restarted(rows_of(h, first), down)
    st2 = second.core.slots[("s1", SYM)].exits
    assert st2 is not None and (st2.best, st2.trail) == (st1.best, st1.trail)
    assert not [e for e in second.events if type(e) is ExitsChanged and e.change == "trailed"]
