"""The request gate: a token bucket whose last tokens only cancels may take, and the penalty box
that honours Retry-After. Runs on a virtual clock."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.venues.ratelimit import Backoff, RequestGate, parse_retry_after
from tests.test_venues_support import FakeClock


def _gate(clock: FakeClock, rate: float = 2.0, burst: int = 5, reserve: int = 2) -> RequestGate:
    return RequestGate(rate, burst, reserve, clock=clock.monotonic, sleep=clock.sleep)


async def test_ordinary_requests_leave_the_reserve_to_cancels() -> None:
    clock = FakeClock()
    gate = _gate(clock)
    for _ in range(3):  # burst 5 - reserve 2
        await gate.acquire()
    assert clock.slept == []
    assert not gate.try_acquire()  # an ordinary request would have to wait now
    assert gate.try_acquire(cancel=True) and gate.try_acquire(cancel=True)  # cancels go
    assert not gate.try_acquire(cancel=True)
    await gate.acquire()  # waits for refill past the reserve
    assert sum(clock.slept) == pytest.approx(1.5)  # 3 tokens at 2/s


async def test_penalty_blocks_everything_for_retry_after() -> None:
    clock = FakeClock()
    gate = _gate(clock)
    assert gate.penalize(7.0) == 7.0
    assert gate.blocked_for() == pytest.approx(7.0)
    assert not gate.try_acquire(cancel=True)
    t0 = clock.monotonic()
    await gate.acquire(cancel=True)
    assert clock.monotonic() - t0 >= 7.0
    # Without Retry-After: exponential backoff steps, reset by a success.
    gate.succeeded()
    a, b = gate.penalize(None), gate.penalize(None)
    assert 0.5 <= a <= 1.0 and 1.0 <= b <= 2.0  # Backoff(1 s, 120 s): ceilings 1, 2, 4...
    gate.succeeded()
    assert gate.backoff.attempt == 0


def test_retry_after_parsing() -> None:
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now_epoch_s=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("999999") == 3600.0


def test_backoff_has_bounded_full_jitter() -> None:
    b = Backoff(0.5, 4.0, rng=random.Random(3))
    delays = [b.next_delay() for _ in range(8)]
    for d, ceiling in zip(delays, [0.5, 1, 2, 4, 4, 4, 4, 4], strict=True):
        assert ceiling / 2 <= d <= ceiling
    b.reset()
    assert b.next_delay() <= 0.5
    with pytest.raises(ValueError):
        Backoff(0, 1)


@settings(max_examples=100, deadline=None)
@given(
    rate=st.floats(0.5, 20),
    burst=st.integers(3, 10),
    plan=st.lists(st.tuples(st.booleans(), st.floats(0, 2)), min_size=1, max_size=60),
)
def test_never_more_than_the_bucket_allows(
    rate: float, burst: int, plan: list[tuple[bool, float]]
) -> None:
    """In any run, requests handed out by time t never exceed burst + rate * t."""
    clock = FakeClock()
    gate = RequestGate(rate, burst, min(2, burst - 1), clock=clock.monotonic, sleep=clock.sleep)
    start = clock.monotonic()
    times: list[float] = []

    async def run() -> None:
        for cancel, pause in plan:
            await gate.acquire(cancel=cancel)
            times.append(clock.monotonic())
            clock.advance(pause)

    asyncio.run(run())
    for i, t in enumerate(times):
        assert i + 1 <= burst + rate * (t - start) + 1e-6
