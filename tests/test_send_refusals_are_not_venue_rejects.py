"""The ``consecutive_rejects`` breaker counts the broker's rejects ("the broker rejects that many
orders in a row"), not the engine's own refusals at the send: orders a kill switch overtook
between their check and their send (the journal commit in between) paused the strategy, and it
stayed paused after the person released the kill."""

from __future__ import annotations

from engine.breakers import CONSECUTIVE_REJECTS
from engine.core import SubmitOrder
from engine.types import Action, OrderStatus, OrderUpdate
from tests.test_limit_orders import Harness


def _three_orders_checked(h: Harness) -> list[SubmitOrder]:
    """Three buys decided and checked, none sent yet (each waits on its intent's commit)."""
    held: list[SubmitOrder] = []
    real = h.handle

    def hold(items):  # the runtime awaiting the journal: the submits wait here
        rest = []
        for item in items:
            (held if type(item) is SubmitOrder else rest).append(item)
        real(rest)

    h.handle = hold  # type: ignore[method-assign]
    for _ in range(3):
        h.strat.say(Action.BUY, None)
        h.quote()
    h.handle = real  # type: ignore[method-assign]
    assert len(held) == 3
    return held


def test_orders_a_kill_overtook_at_the_send_do_not_trip_consecutive_rejects() -> None:
    h = Harness(qty=0.1)
    h.quote()
    held = _three_orders_checked(h)
    h.handle(h.core.kill("halt", by="root", reason="t", source="command"))
    for sub in held:
        refused = h.core.refused_at_send(sub)
        assert refused is not None  # not sent: the kill switch
        h.handle(refused)
        assert sub.order.status is OrderStatus.REJECTED
    assert (CONSECUTIVE_REJECTS, "s1") not in h.core.breakers._tripped
    h.core.safety.release(by="root", reason="ok", ts=h.core.now)
    assert not h.core.safety.is_paused("s1")


def test_the_brokers_rejects_still_trip_it_at_the_third() -> None:
    """The boundary: the venue refusing three in a row trips it (two do not)."""
    h = Harness(qty=0.1)
    h.quote()
    real = h.broker.submit

    def refuse(order, now):
        own = order.copy()
        own.move_to(OrderStatus.REJECTED, now, "venue: -2010 insufficient balance")
        return [OrderUpdate(own, now)]

    h.broker.submit = refuse  # type: ignore[method-assign]
    for n in (1, 2, 3):
        h.strat.say(Action.BUY, None)
        h.quote()
        tripped = (CONSECUTIVE_REJECTS, "s1") in h.core.breakers._tripped
        assert tripped == (n == 3), n
    h.broker.submit = real  # type: ignore[method-assign]
