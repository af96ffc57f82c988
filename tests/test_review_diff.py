"""An adversarial review of the changes merged on 7 December (9fd44f1..review-diff): the raced
cancels of the kill switch, a pause and a lowered limit judged again on a fill, the strategy
watchdog (SIGUSR2), and the native stops re-placed every 5 s. Each test is a hole found there,
failing before its fix.

Tried and found holding:
"""

from __future__ import annotations

from typing import Any

from engine.core import CancelOrder
from engine.types import Action, LimitSpec
from tests.test_review_limits import Driver, X, make_core

RISK = {
    "max_order_notional": 1e6,
    "max_position_fraction": 1.0,
    "max_gross_exposure_fraction": 10.0,
    "max_open_positions": 5,
    "price_collar_pct": 5.0,
}


class LostCancels(Driver):
    """A venue that never answers a cancel (lost on the way, or refused by a transient error:
    the order keeps working, and the broker does not ask again by itself)."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.lost: list[str] = []
        self.losing = False

    def _cancel(self, cancel: CancelOrder) -> list[Any]:
        if self.losing:
            self.lost.append(cancel.client_order_id)
            return []
        return super()._cancel(cancel)


def a_resting_buy_on_a_flat_symbol() -> LostCancels:
    fleet = [("b", X, "auto", {"model": "fixed_qty", "qty": 8.0}, None)]
    d = LostCancels(*make_core(fleet, RISK, 100_000.0), 100_000.0)
    d.quote(X, 100.0)
    d.say("b", Action.BUY, LimitSpec(offset_ticks=0.0))
    d.quote(X, 100.0, bid_size=1_000.0)
    d.quote(X, 100.0, bid_size=1_000.0)
    (order,) = d.core.open_orders.values()
    assert order.side.sign > 0 and d.core.portfolio.positions.get(X) is None
    return d


def cancels(out: list[Any]) -> list[str]:
    return [c.client_order_id for c in out if type(c) is CancelOrder]


def test_a_kill_switch_engaged_again_asks_again_a_cancel_the_venue_lost() -> None:
    """Found: a cancel of the kill switch at entries is remembered until the order is done
    (to judge the kept ones again on a fill), and every later call skipped the order as
    "being cancelled". A cancel the venue lost (or refused with a network error) left the
    buy resting for good: the switch released and engaged again, the buy was not cancelled,
    and it could fill into a new position under the switch."""
    d = a_resting_buy_on_a_flat_symbol()
    (coid,) = d.core.open_orders
    d.losing = True
    d.handle(d.core.kill("entries", by="op", reason="t", source="operator"))
    assert d.lost == [coid] and coid in d.core.open_orders
    d.core.safety.release(by="op", reason="t", ts=d.core.now)
    d.losing = False
    d.handle(d.core.kill("entries", by="op", reason="again", source="operator"))
    assert coid not in d.core.open_orders


def test_a_pause_again_asks_again_a_cancel_the_venue_lost() -> None:
    """The same through a pause: paused, the cancel lost, resumed, paused again: the entry
    resting at the venue is cancelled this time."""
    d = a_resting_buy_on_a_flat_symbol()
    (coid,) = d.core.open_orders
    d.losing = True
    d.handle(d.core.pause_strategy("b", by="op", reason="t", ts=d.core.now))
    assert d.lost == [coid]
    d.core.safety.resume("b", by="op", reason="t", ts=d.core.now)
    d.losing = False
    d.handle(d.core.pause_strategy("b", by="op", reason="again", ts=d.core.now))
    assert coid not in d.core.open_orders


def test_a_limit_lowered_again_asks_again_a_cancel_the_venue_lost() -> None:
    """The same through a lowered limit: the cancel lost, the limit lowered again (or the
    kill switch engaged): the order beyond it is cancelled this time."""
    d = a_resting_buy_on_a_flat_symbol()
    (coid,) = d.core.open_orders
    d.losing = True
    d.core.limits = d.core.limits.model_copy(update={"max_order_notional": 100.0})
    d.handle(d.core.cancel_beyond_limits("lowered"))
    assert d.lost == [coid]
    d.losing = False
    d.handle(d.core.cancel_beyond_limits("lowered again"))
    assert coid not in d.core.open_orders
