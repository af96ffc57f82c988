"""Pacing: turn a plain iterator of events into timed batches on the event loop.

Sources (simulated, replay) are synchronous iterators so the core stays sans-I/O and a
backtest can drain them at full speed; this is the one place that maps event time to wall
time. Events are handed out in batches so a fast stream costs one await per batch, not per
event, and the loop always gets a turn between batches.

The clock and sleep are parameters so tests run on a fake clock and never wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Literal, TypeVar

from engine.types import Bar, Quote

E = TypeVar("E", bound=Quote | Bar)

Speed = Literal["realtime", "recorded", "max"] | float


def default_event_time(event: Quote | Bar) -> int:
    """A quote happens at ``ts_exchange``; a bar becomes known at its ``ts_close``."""
    if isinstance(event, Quote):
        return event.ts_exchange
    return event.ts_close


def speed_factor(speed: Speed) -> float | None:
    """The speed-up over real time, or None for "max" (no pacing). Rejects nonsense early."""
    if speed == "max":
        return None
    if speed in ("realtime", "recorded"):
        return 1.0
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not speed > 0:
        raise ValueError(f"speed must be 'realtime', 'recorded', 'max' or a number > 0: {speed!r}")
    if speed == float("inf"):
        return None
    return float(speed)


class EventClock:
    """The paced stream's clock: what time it is in the events' time, between events.

    A simulated market with a fixed ``start`` or a replay runs in its own time (2024, say)
    while the wall clock says today; anything that asks "how old is the last quote" between
    events (stale feeds, approval expiry) must ask this clock, not the wall clock. It reads
    None until the stream has started, and is always None for an unpaced ("max") stream,
    whose time is only ever the last event's.
    """

    __slots__ = ("_anchor", "_factor", "_now_ns")

    def __init__(self, speed: Speed, now_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self._factor = speed_factor(speed)
        self._now_ns = now_ns
        self._anchor: tuple[int, int] | None = None  # (event time t0, wall time w0)

    def start(self, event_ns: int) -> None:
        """Event time ``event_ns`` is now (called by ``paced`` as its first event is pulled)."""
        self._anchor = (event_ns, self._now_ns())

    def due(self, event_ns: int) -> int:
        """The wall time (``now_ns`` units) at which ``event_ns`` is due; needs ``start``."""
        assert self._anchor is not None and self._factor is not None
        t0, w0 = self._anchor
        return w0 + int((event_ns - t0) / self._factor)

    def now(self) -> int | None:
        """The event time now, or None (not started, or an unpaced stream)."""
        if self._anchor is None or self._factor is None:
            return None
        t0, w0 = self._anchor
        return t0 + int((self._now_ns() - w0) * self._factor)


async def paced(
    events: Iterable[E],
    speed: Speed,
    *,
    event_time: Callable[[E], int] | None = None,
    batch: int = 256,
    start_event_ns: int | None = None,
    now_ns: Callable[[], int] = time.monotonic_ns,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: EventClock | None = None,
) -> AsyncGenerator[list[E], None]:
    """Yield ``events`` in batches of at most ``batch``, paced by event time.

    ``"max"``: batches as fast as the consumer takes them, with ``sleep(0)`` between them.
    ``"realtime"``/``"recorded"`` (1x) or a float speed-up: event time ``t`` is due at wall time
    ``w0 + (t - t0) / speed``, where ``w0`` is ``now_ns()`` when the first event is pulled and
    ``t0`` is ``start_event_ns`` (default: the first event's time). Everything already due
    goes out together; if the consumer falls behind, the schedule is kept and the backlog
    arrives in full batches rather than being spread out. Pass the simulated market's
    ``start_ns`` as ``start_event_ns`` so its first quote is not released early. ``clock``
    (built with the same ``speed`` and ``now_ns``) is the schedule's clock, for readers of
    event time between events; by default the stream keeps a private one.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    factor = speed_factor(speed)
    get_time: Callable[[E], int] = event_time or default_event_time
    buf: list[E] = []
    if factor is None:
        for ev in events:
            buf.append(ev)
            if len(buf) >= batch:
                yield buf
                buf = []
                await sleep(0)
        if buf:
            yield buf
        return

    if clock is None:
        clock = EventClock(speed, now_ns)
    started = False
    for ev in events:
        t = get_time(ev)
        if not started:
            clock.start(t if start_event_ns is None else start_event_ns)
            started = True
        due = clock.due(t)
        if due > now_ns():
            if buf:
                yield buf
                buf = []
            wait = due - now_ns()  # the consumer may have used up some of the wait
            if wait > 0:
                await sleep(wait / 1e9)
        buf.append(ev)
        if len(buf) >= batch:
            yield buf
            buf = []
            await sleep(0)
    if buf:
        yield buf
