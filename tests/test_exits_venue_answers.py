"""Protective exits against what the venue answers, late or not at all.

A venue that keeps refusing a protective exit (a rate-limit ban, a balance it does not see)
got the close again every second: about 3,600 refused orders an hour, each journaled, alerted
and counted against the API key, which can earn a longer ban that then refuses the kill's
flatten too. The exit is now fired again 1, 2, 4 ... s after each refusal in a row, at most a
minute apart, and a close the venue takes starts the count again. A take-profit that waits for
the venue stop's cancel is looked at again when the cancel is confirmed."""

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


def test_a_take_profit_no_longer_due_when_the_venue_stop_is_off_does_not_sell() -> None:
    """A take-profit while the venue holds the stop cancels the stop first, then sells once the
    venue confirms the cancel. The confirmation came late and the price was back below the
    target by then: the engine sold at the market all the same, below the target the trader
    set. Now the target is looked at again when the cancel is confirmed: no longer reached,
    nothing is sold and the stop is put back at once; still reached, the position closes."""
    from tests.test_native_stops import Harness as NativeHarness

    def late_cancels(h: NativeHarness) -> list[str]:
        """The venue answers cancels only when the test delivers them."""
        real, asked = h.venue.cancel, []

        def cancel(coid: str, now: int, reason: str) -> list[Any]:
            asked.append(coid)
            return []

        h.venue.cancel = cancel  # type: ignore[method-assign]
        h.deliver = lambda: h.handle(  # type: ignore[attr-defined]
            h.core.on_broker(real(asked.pop(0), h.core.now, "cancelled"))
        )
        return asked

    h = NativeHarness({"stop_loss_pct": 1.0, "take_profit_pct": 2.0})
    h.bar(100.0, 100.5, 99.5, 100.0)
    (stop,) = h.stops()
    asked = late_cancels(h)
    h.quote(102.5)  # the target: the stop's cancel is asked first
    assert asked == [stop.client_order_id]
    h.quote(101.0)  # back below the target ...
    h.deliver()  # type: ignore[attr-defined]  # ... when the venue confirms the cancel
    assert h.core.portfolio.positions["X/USDT"].qty == 1.0
    assert "take_profit" not in h.core.exit_stats
    (again,) = h.stops()  # put back at once, not 5 s on
    assert again.stop_price == 99.0 and again.qty == 1.0
    # The boundary: the target still reached when the cancel is confirmed closes at once.
    h.quote(102.0)
    h.quote(102.1)
    h.deliver()  # type: ignore[attr-defined]
    assert h.core.portfolio.positions["X/USDT"].qty == 0.0
    assert h.core.exit_stats["take_profit"].count == 1
    assert h.stops() == []
