"""A venue that keeps refusing a protective exit (a rate-limit ban, a balance it does not see)
got the close again every second: about 3,600 refused orders an hour, each journaled, alerted
and counted against the API key, which can earn a longer ban that then refuses the kill's
flatten too. The exit is now fired again 1, 2, 4 ... s after each refusal in a row, at most a
minute apart, and a close the venue takes starts the count again."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from engine.exits import REFUSED_RETRY_MAX_NS
from engine.types import NS_PER_SECOND, Order, OrderStatus, OrderUpdate, Side
from tests.test_exits import Harness, entered


def _refusing(h: Harness) -> tuple[list[int], Any]:
    """The broker refuses every sell (the exit of the long) and notes when each was sent."""
    real, tried = h.broker.submit, []

    def submit(order: Order, now: int) -> list[Any]:
        if order.side is not Side.SELL:
            return real(order, now)
        tried.append(now)
        own = order.copy()
        own.move_to(OrderStatus.REJECTED, now, "venue: -2010 account has insufficient balance")
        return [OrderUpdate(own, now)]

    h.broker.submit = submit  # type: ignore[method-assign]
    return tried, real


def test_a_refused_exit_is_fired_again_later_each_time_not_every_second() -> None:
    h = entered({"stop_loss_pct": 2.0})
    tried, real = _refusing(h)
    for _ in range(200):  # 200 s below the stop, one quote a second
        h.quote(97.0)
    gaps = [(b - a) // NS_PER_SECOND for a, b in pairwise(tried)]
    assert gaps[:6] == [1, 2, 4, 8, 16, 32]
    assert set(gaps[6:]) == {REFUSED_RETRY_MAX_NS // NS_PER_SECOND}
    assert len(tried) == 9  # not 200
    assert h.position == 1.0
    # The venue takes the next one: the position closes, at once when it is due.
    h.broker.submit = real  # type: ignore[method-assign]
    for _ in range(60):
        h.quote(97.0)
    assert h.position == 0.0


def test_a_close_the_venue_takes_starts_the_count_again() -> None:
    """After refusals, an exit the venue takes resets the backoff: the next position's first
    refused exit is tried again a second later, not a minute."""
    h = entered({"stop_loss_pct": 2.0})
    tried, real = _refusing(h)
    for _ in range(40):
        h.quote(97.0)
    assert len(tried) == 6
    h.broker.submit = real  # type: ignore[method-assign]
    for _ in range(40):
        h.quote(97.0)
    assert h.position == 0.0
    st = h.core.slots[("s1", "X/USDT")].exits
    assert st is None or st.refused == 0
