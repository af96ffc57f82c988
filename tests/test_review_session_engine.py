"""Review of the day's engine changes taken together (review-diff-a): the fixes of seven
reviews against each other and the promises around them.

Attacks that held (one line each):
- kill switch at flatten with a venue stop resting, spot venue or not: the stop is cancelled and
  the flatten goes out (the stop is no open exposure, _set_aside keeps it counted for nothing).
- PaperExecution.submit on the market's clock: a ``max`` speed run (unpaced) has no event_now,
  so a seeded run's fills do not depend on the wall clock; paced runs never promised it.
- runtime.start: cancel_beyond_limits runs after execution.resume (unacknowledged sends looked
  up, every venue reconciled) and never while HALTED; a missing mark cancels nothing.
- STRATEGY_CALL_MAX_S: warm-up's history calls are not timed (imports made there are free);
  research runs are never timed.
- the long-only cap in make_intent reads the strategy's own position (other strategies' shares
  on the symbol are not its to sell) and leaves reduce-only exits to the reduce-only sizing.
- the kill's flatten held by a send of unknown outcome (REDUCE_ONLY_EXCEEDS_POSITION now waits):
  due again on the symbol's quotes once nothing but a venue stop is open there.
- refused_at_send judging reduce-only orders in ACTIVE: a native stop is reduce-only, but
  check_reduce_only at evaluate counts the same open orders, so nothing newly refused at send.
- a protective exit (take-profit, time stop) while the venue holds the stop: cancels the stop
  first in every state (only the strategy's own exit depended on ACTIVE: fixed here).
"""

from __future__ import annotations

from typing import Any

from engine.core import CancelOrder, SubmitOrder
from engine.types import Action, LimitSpec, Order, OrderStatus, OrderType, OrderUpdate, Signal
from engine.vocabulary import KillLevel
from tests.test_native_stops import Harness


def _spot_refuses_sells_held_by_the_stop(h: Harness) -> list[str]:
    """Make the stub venue a spot account: a sell is rejected while a resting stop holds the
    balance it would sell (as binance spot does). Returns the list of refusals."""
    refused: list[str] = []
    real_submit = h.venue.submit

    def submit(order: Order, now: int) -> list[Any]:
        if order.order_type is not OrderType.STOP_MARKET and order.side.name == "SELL":
            held = sum(o.remaining for o in h.venue.orders.values() if o.side is order.side)
            pos = h.core.portfolio.positions["X/USDT"].qty
            if order.qty > pos - held + 1e-12:
                refused.append(order.client_order_id)
                own = order.copy()
                own.move_to(OrderStatus.REJECTED, now, "insufficient balance")
                return [OrderUpdate(own, now)]
        return real_submit(order, now)

    h.venue.submit = submit  # type: ignore[method-assign]
    h.core.spot_venues = frozenset({"sim"})
    return refused


def test_at_kill_entries_the_strategys_own_exit_cancels_the_venue_stop_before_it_sells() -> None:
    """Kill switch at ``entries``: exits are still allowed. The strategy's own exit while the
    venue holds its stop went out with the stop still resting (the stop goes first only while
    the engine is ACTIVE), and a spot venue refuses that sell for want of the balance the stop
    holds: the exit the kill switch promises never happened. The stop's cancel goes first here
    too, then the sell."""
    h = Harness({"stop_loss_pct": 1.0})
    refused = _spot_refuses_sells_held_by_the_stop(h)
    h.bar(100.0, 100.5, 99.5, 100.0)
    (stop,) = h.stops()
    h.handle(h.core.kill(KillLevel.ENTRIES, by="op", reason="calm down", source="cli"))
    assert h.stops() == [stop]  # a stop only reduces: the kill at entries leaves it
    slot = h.core.slots[("s1", "X/USDT")]
    out = h.core.decide(slot, Signal(Action.SELL, "cross_down", "test", 1.0, {}, True), 100.0)
    orders = [i for i in out if type(i) in (CancelOrder, SubmitOrder)]
    assert [type(i).__name__ for i in orders] == ["CancelOrder"], orders
    assert orders[0].client_order_id == stop.client_order_id
    h.handle(out)
    assert not refused
    assert not h.stops() and h.core.portfolio.positions["X/USDT"].qty == 0.0


def test_at_kill_entries_an_entry_signal_leaves_the_venue_stop_alone() -> None:
    """The other side of the same path: a signal that would add (a buy on a long) is no exit;
    the stop is not cancelled for it (it would be denied, and the stop is the protection)."""
    h = Harness({"stop_loss_pct": 1.0})
    _spot_refuses_sells_held_by_the_stop(h)
    h.bar(100.0, 100.5, 99.5, 100.0)
    (stop,) = h.stops()
    h.handle(h.core.kill(KillLevel.ENTRIES, by="op", reason="calm down", source="cli"))
    slot = h.core.slots[("s1", "X/USDT")]
    out = h.core.decide(slot, Signal(Action.BUY, "cross_up", "test", 1.0, {}, False), 100.0)
    assert not [i for i in out if type(i) in (CancelOrder, SubmitOrder)]
    h.handle(out)
    assert h.stops() == [stop] and h.core.portfolio.positions["X/USDT"].qty == 1.0


def test_an_exit_that_supersedes_a_resting_entry_cancels_the_venue_stop_before_it_sells() -> None:
    """The strategy's own exit while it has a buy limit resting and the venue holds its stop:
    the buy limit is cancelled first (superseded), and the sell then went straight out beside
    the stop (the stop-first path was only taken when no limit of the strategy rested), which
    a spot venue refuses for want of the balance the stop holds. The stop goes first there
    too."""
    h = Harness({"stop_loss_pct": 1.0})
    refused = _spot_refuses_sells_held_by_the_stop(h)
    h.bar(100.0, 100.5, 99.5, 100.0)
    assert len(h.stops()) == 1
    real_submit = h.venue.submit

    def rest_buy_limits(order: Order, now: int) -> list[Any]:
        if order.order_type is OrderType.LIMIT and order.side.name == "BUY":
            own = order.copy()
            own.move_to(OrderStatus.NEW, now)
            h.venue.orders[own.client_order_id] = own
            return [OrderUpdate(own.copy(), now)]
        return real_submit(order, now)

    h.venue.submit = rest_buy_limits  # type: ignore[method-assign]
    slot = h.core.slots[("s1", "X/USDT")]
    spec = LimitSpec(offset_ticks=50.0)  # 0.50 under the touch: it rests
    h.handle(h.core.decide(slot, Signal(Action.BUY, "add", "test", 1.0, {}, False, spec), 100.0))
    assert any(o.order_type is OrderType.LIMIT for o in h.core.open_orders.values())
    out = h.core.decide(slot, Signal(Action.SELL, "cross_down", "test", 1.0, {}, True), 100.0)
    h.handle(out)
    assert not refused, "the exit's sell went out beside the venue stop"
    assert h.core.portfolio.positions["X/USDT"].qty == 0.0
    assert not h.stops() and not h.core.open_orders
