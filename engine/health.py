"""Is the engine fit to be vouched for? The event loop's lag, and the rule the outbound heartbeat
and systemd's watchdog share.

A heartbeat sent from a thread would go on while the event loop is stuck, so every beat here is
sent from the loop, and only when the loop answered within a bound since the last beat: a stall
of the loop stops the beats, and the outside monitor raises the alarm the engine cannot.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from engine.vocabulary import KillLevel

if TYPE_CHECKING:
    from engine.runtime import Engine

# The bound on the event loop's lag and a commit's wait for the disk when there is no
# [heartbeat] section (its max_lag_s): systemd's watchdog and cockpit_journal_ok go by it.
DEFAULT_MAX_LAG_S = 5.0

# Seconds; the upper bounds of the loop-lag and journal-commit histograms (Prometheus buckets).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Buckets:
    """A fixed-bucket histogram of durations: one bisect and two additions per observation,
    cheap enough for every journal commit. Read by the metrics sampler on the event loop."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.sum += seconds

    def cumulative(self) -> tuple[tuple[float, int], ...]:
        """(upper bound, observations at or below it) per bucket, +Inf last: Prometheus's form."""
        out = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return tuple(out)


async def loop_ticks(tick_s: float) -> AsyncIterator[float]:
    """Sleep ``tick_s`` again and again and yield how late each wake-up came: the event loop's
    lag. Any stall of the loop longer than a tick delays a wake-up, so it is seen, and it is seen
    by the caller itself before it acts on the tick (never by a task that might run later)."""
    clock = time.monotonic
    while True:
        start = clock()
        await asyncio.sleep(tick_s)
        yield max(0.0, clock() - start - tick_s)


def health_problem(engine: Engine, worst_lag_s: float, max_lag_s: float, stop_on_kill: bool) -> str:
    """Why the engine must not be vouched for now ("" when it may): its journal failed (trading
    is blocked: nothing can be recorded, no order is sent) or a commit has waited for the disk
    longer than ``max_lag_s``, the event loop stalled beyond ``max_lag_s`` since the last beat,
    or (with ``stop_on_kill``) the kill switch is engaged.

    A halt or a kill switch is the engine doing its job, so by default it does not stop the
    heartbeat: a monitor that pages on a missing heartbeat should mean "nobody is watching the
    market", and the alerts speak for the safety states."""
    if engine.blocked_reason:
        return f"trading blocked: {engine.blocked_reason}"
    journal = getattr(engine, "journal", None)
    stuck = journal.commit_age_s() if journal is not None else 0.0
    if stuck > max_lag_s:
        # A disk that stopped answering: no error (so not blocked), yet nothing is recorded and
        # no order goes out (each waits for its row to be committed first).
        return f"journal commit waiting {stuck:.1f} s for the disk (bound {max_lag_s:g} s)"
    if worst_lag_s > max_lag_s:
        return f"event loop stalled {worst_lag_s:.1f} s (bound {max_lag_s:g} s)"
    core = engine.core
    if core is None:
        return "engine not started"
    if stop_on_kill and core.safety.kill.level is not None:
        level = KillLevel(core.safety.kill.level)
        return f"kill switch engaged ({level})"
    return ""
