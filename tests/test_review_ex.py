"""Review of the protective exits (stop-loss, take-profit, Chandelier trail, time stop) and
binance native stops (review-ex): each test is a hole found by attacking what a trader relies
on when the stop is the only thing between them and a large loss, failing before its fix
(a test named as a boundary pins the edge of the fix beside it).

Attacks that held (one line each):
- an entry filled in parts: exits attach on the first part, later parts move the average entry
  (stop, target) but neither re-anchor the time stop nor reset the watermark or the trail;
- a stop reached while the entry's remainder is in flight sells what filled (reduce-only
  sizing against the net position), the remainder's fill attaches fresh exits;
- a flip or a re-entry signal while an exit is in flight is sized on the position as it will be
  (the exit counted), so the two never double-sell; a flip's part that crosses zero resets;
- the watermark and trail journaled before a restart come back as they were (no ratchet back;
  the restored trail is kept when the recomputed ATR would loosen it);
- the time stop counts from the entry fill's time across a restart; a time stop due while the
  engine was down fires on the first quote; on a quiet feed it waits for the next event (and
  a stale feed would deny any order anyway);
- ATR with fewer than N bars, a zero range or a width that would put a long's trail at or below
  zero leaves the trail unset (the other exits still work); NaN/inf bars never reach it;
- exits config: NaN, inf, zero, negative and absurd values are one line each at start;
- crossed, NaN or stale quotes never reach the exits (validated first): fail closed, there is
  no price to close at; a fresh quote through the level fires;
- two strategies' exits on one symbol are sized against the net position and the other's
  orders; a netted-flat symbol's exit is recorded once (tests/test_review_orders.py);
- kill at entries, halt, flatten, a pause and a breaker pause: the exit goes (flatten: the
  kill's order closes instead); a journal that failed denies it (write-ahead comes first);
- an approval of the same strategy on the exit's side is superseded; one on the other side is
  counted in the sizing; native stops never wait for approval;
- an exit sized to dust or below the venue minimum is recorded once (DUST), not retried per
  quote;
- native stops: the stop's trigger rounds toward the market, a trail that creeps under 5 bps
  leaves it, a stop-limit gapped past its allowance is cancelled and closed at market, a
  flatten, a take-profit, a time stop and the strategy's own exit cancel it first;
- the same exits on the same quotes or bars in a backtest and in paper trading give the same
  fills (tests/test_backtest_equivalence.py, tests/test_backtest_fastpath.py).
"""

from __future__ import annotations

from typing import Any

from engine.events import IntentChecked
from engine.types import Action, Order, OrderStatus, OrderType, OrderUpdate, Signal
from engine.vocabulary import DenialCode, IntentOutcome, KillLevel
from tests.test_native_stops import Harness as NativeHarness
from tests.test_native_stops import lose_the_first_cancel

NSYM = "X/USDT"


# ------------------------------------------------------------------ native stops


def _native_entry_while_the_feed_drops(h: NativeHarness) -> None:
    """The entry goes out in sync; the feed drops while it is on its way, so the venue stop
    the fill asks for is denied (MARKET_UNSYNCED)."""
    real = h.venue.submit

    def submit(order: Order, now: int) -> list[Any]:
        if order.order_type is not OrderType.STOP_MARKET:
            h.core.market_gate = lambda _sym: "feed reconnecting"
        return real(order, now)

    h.venue.submit = submit  # type: ignore[method-assign]
    h.bar(100.0, 100.5, 99.5, 100.0)
    h.venue.submit = real  # type: ignore[method-assign]


def test_a_venue_stop_denied_when_the_entry_filled_is_placed_once_the_feed_is_back() -> None:
    """A native stop whose placement after the entry fill was denied (the feed was
    reconnecting) was never placed again: a stop-loss without a trail is placed only on a fill,
    so the position went its whole life with no stop at the venue, unprotected whenever the
    engine was down, while the README promises the venue keeps it (review). The engine now
    places a missing venue stop again on a quote on the safe side of it (every 5 s at most)."""
    h = NativeHarness({"stop_loss_pct": 1.0})
    _native_entry_while_the_feed_drops(h)
    core = h.core
    assert core.portfolio.positions[NSYM].qty == 1.0
    denied = [e for e in h.events if type(e) is IntentChecked and e.outcome == IntentOutcome.DENIED]
    assert denied and DenialCode.MARKET_UNSYNCED in denied[-1].denied_codes
    assert h.stops() == []
    h.quote(100.2)  # still unsynced: denied again, nothing at the venue
    assert h.stops() == []
    core.market_gate = None  # the feed is back
    h.quote(100.3)  # within 5 s of the last try: not yet
    h.quote(100.2)
    h.quote(100.1)
    h.quote(100.3)
    h.quote(100.4)
    (stop,) = h.stops()
    assert stop.stop_price == 99.0 and stop.qty == 1.0 and stop.reduce_only
    (view,) = core.exits_view(NSYM)
    assert view["native_stop"] is True
    for _ in range(10):  # one stop, never a second beside it
        h.quote(100.2)
    assert len(h.stops()) == 1


def test_a_venue_stop_cancelled_by_a_halt_is_put_back_when_the_kill_is_released() -> None:
    """A kill at ``halt`` cancels every order at the venue, native stops included, and the
    engine watches the levels itself while it runs. Released, the position had no venue stop
    again for the rest of its life (review): it is placed again on the next quote, not while
    halted."""
    h = NativeHarness({"stop_loss_pct": 1.0})
    h.bar(100.0, 100.5, 99.5, 100.0)
    assert len(h.stops()) == 1
    core = h.core
    h.handle(core.kill(KillLevel.HALT, by="op", reason="look", source="operator"))
    assert h.stops() == []
    for _ in range(8):
        h.quote(100.2)
    assert h.stops() == []  # halted: the engine's own watch, as documented
    h.handle(core.safety.release(by="op", reason="fine", ts=core.now))
    h.quote(100.2)
    (stop,) = h.stops()
    assert stop.stop_price == 99.0 and stop.qty == 1.0


def test_a_venue_stop_whose_resize_cancel_was_lost_is_resized_all_the_same() -> None:
    """The strategy adds to its position: the venue stop is resized (cancel, then the new one
    once the venue confirms). The cancel was lost at the venue: the old stop rested for the
    old size and, the venue holding a stop, the engine did not watch the level itself, so
    half the position had no stop anywhere until the trail moved, for a stop-loss never
    (review). The cancel is asked again after 5 s and the stop follows the position."""
    from engine.types import Action, Signal

    h = NativeHarness({"stop_loss_pct": 1.0})
    h.bar(100.0, 100.5, 99.5, 100.0)
    (first,) = h.stops()
    core = h.core
    lost = lose_the_first_cancel(h.venue)
    slot = core.slots[("s1", NSYM)]
    h.handle(core.decide(slot, Signal(Action.BUY, "add", "test add", 1.0), 100.0))
    assert core.portfolio.positions[NSYM].qty == 2.0
    assert lost == [first.client_order_id] and h.stops() == [first]  # 1 of 2 at the venue
    h.quote(100.2)
    h.quote(100.1)
    assert h.stops() == [first]  # within 5 s: the cancel may still be on its way
    for _ in range(6):
        h.quote(100.2)
    (stop,) = h.stops()
    assert stop.qty == 2.0 and stop.stop_price == 99.0
    assert len(h.stops()) == 1


def test_a_restart_between_the_trail_and_its_venue_move_moves_the_venue_stop() -> None:
    """The trail rose (journaled) and the engine died before the venue's stop was moved: the
    restarted engine took the venue's stop back at its old, looser level and, the venue holding
    a stop, did not watch the restored trail itself; until the trail moved again the position
    was protected only at the old level, though "the trailing stop never loosens" (review).
    The restarted engine moves the venue stop to the restored trail on a quote."""
    from engine.events import ExitsChanged, FillReceived

    h = NativeHarness({"trailing_atr": 2.0, "atr_period": 3})
    for _ in range(4):
        h.bar(100.0, 100.5, 99.5, 100.0)
    (old,) = h.stops()
    assert old.stop_price == 98.5
    h.venue.cancel = lambda coid, now, reason: []  # type: ignore[method-assign]  # dies first
    h.bar(100.0, 103.0, 100.0, 103.0)
    trail = h.core.slots[("s1", NSYM)].exits.trail  # type: ignore[union-attr]
    assert trail is not None and trail > 99.5 and h.stops() == [old]
    fills = [e.fill for e in h.events if type(e) is FillReceived]
    rows = {(e.strategy_id, e.symbol): e.exits for e in h.events if type(e) is ExitsChanged}
    orders = [o.copy() for o in h.core.open_orders.values()]
    again = NativeHarness({"trailing_atr": 2.0, "atr_period": 3})
    again.venue, again.ts = h.venue, h.ts
    h.venue.cancel = type(h.venue).cancel.__get__(h.venue)  # type: ignore[method-assign]
    core = again.core
    for fill in fills:
        core.portfolio.apply_fill(fill)
    core.restore(fills, orders)
    core.restore_exits(rows)
    st = core.slots[("s1", NSYM)].exits
    assert st is not None and st.native == old.client_order_id and st.trail == trail
    again.quote(102.0)
    (moved,) = again.stops()
    assert moved.stop_price is not None and moved.stop_price >= trail
    assert moved.qty == 1.0


def test_a_venue_stop_with_nothing_to_sell_is_asked_once_not_every_few_seconds() -> None:
    """The boundary of the re-placement above: a venue stop that cannot be placed for a reason
    only a fill or an order changes (another strategy's opposite position nets the symbol flat)
    is denied once, not again every 5 s for as long as the positions stand; a fill on the symbol
    asks again."""
    from engine.types import Fill, Liquidity, Side

    h = NativeHarness({"stop_loss_pct": 1.0})
    h.bar(100.0, 100.5, 99.5, 100.0)
    core = h.core
    h.handle(core.kill(KillLevel.HALT, by="op", reason="look", source="operator"))
    other = Fill(
        "o1", "o-1", "s2", NSYM, "sim", Side.SELL, 1.0, 100.0, 0.0, Liquidity.TAKER, core.now
    )
    core.portfolio.apply_fill(other)  # another strategy's short nets the symbol flat
    h.handle(core.safety.release(by="op", reason="fine", ts=core.now))
    for _ in range(60):
        h.quote(100.2)
    tries = [
        e
        for e in h.events
        if type(e) is IntentChecked and e.intent.order_type is OrderType.STOP_MARKET
    ]
    assert h.stops() == []
    assert [t.outcome for t in tries] == [IntentOutcome.SUBMITTED, IntentOutcome.DENIED]
    assert DenialCode.REDUCE_ONLY_EXCEEDS_POSITION in tries[-1].denied_codes
    back = Fill(
        "o2", "o-2", "s2", NSYM, "sim", Side.BUY, 1.0, 100.0, 0.0, Liquidity.TAKER, core.now
    )
    core.portfolio.apply_fill(back)
    core._rearm_waiting_exits(NSYM)  # what a fill on the symbol does
    h.quote(100.2)
    (stop,) = h.stops()
    assert stop.qty == 1.0


def _restarted(h: NativeHarness, exits: dict[str, Any], native: bool) -> NativeHarness:
    """A new core on ``h``'s journal (fills, open orders, exits rows) and venue, as the
    runtime restores it; ``native``: the new config keeps ``native_stops`` on."""
    from engine.events import ExitsChanged, FillReceived

    fills = [e.fill for e in h.events if type(e) is FillReceived]
    rows = {(e.strategy_id, e.symbol): e.exits for e in h.events if type(e) is ExitsChanged}
    again = NativeHarness(exits)
    again.venue, again.ts = h.venue, h.ts
    core = again.core
    core.session = h.core.session + 1  # a new session: new client order ids
    core.slots[("s1", NSYM)].strategy.entered = True  # type: ignore[attr-defined]  # no re-entry
    for fill in fills:
        core.portfolio.apply_fill(fill)
    core.restore(fills, [o.copy() for o in h.core.open_orders.values()])
    core.restore_exits(rows)
    if not native:
        core.native_stop_venues = {}  # as the execution sets it after restore_exits
    return again


def test_a_venue_stop_taken_back_after_native_stops_was_turned_off_is_not_trusted() -> None:
    """Restarted with ``native_stops`` turned off while a position's stop rested at the venue:
    the engine took the stop back as the position's and so did not watch the levels itself,
    while nothing moved that stop with the trail any more; the trail rose, the price fell below
    it and nothing closed the position (review). The venue stop is cancelled on the first quote
    and the engine watches the levels, as ``native_stops = false`` says."""
    exits = {"trailing_atr": 2.0, "atr_period": 3}
    h = NativeHarness(exits)
    for _ in range(4):
        h.bar(100.0, 100.5, 99.5, 100.0)
    (old,) = h.stops()
    assert old.stop_price == 98.5
    again = _restarted(h, exits, native=False)
    core = again.core
    for _ in range(4):
        again.bar(100.0, 100.5, 99.5, 100.0)
    again.bar(100.0, 104.0, 100.0, 104.0)  # the trail rises past the old venue stop
    st = core.slots[("s1", NSYM)].exits
    assert st is not None and st.trail is not None and st.trail > 99.5
    again.quote(102.0)  # on the safe side: the stop nobody moves any more is cancelled
    assert again.stops() == []
    assert any("native_stops is off" in c.reason for c in again.cancels)
    (view,) = core.exits_view(NSYM)
    assert view["native_stop"] is False
    again.quote(99.6)  # below the trail, above the old venue stop
    assert core.portfolio.positions[NSYM].qty == 0.0
    assert core.exit_stats["trailing_stop"].count == 1


def test_a_venue_stop_taken_back_with_native_stops_on_is_still_the_venues() -> None:
    """The boundary: restarted with ``native_stops`` still on, the venue's stop is taken back
    and kept (the engine neither cancels it nor fires the level itself)."""
    exits = {"stop_loss_pct": 1.0}
    h = NativeHarness(exits)
    h.bar(100.0, 100.5, 99.5, 100.0)
    (old,) = h.stops()
    again = _restarted(h, exits, native=True)
    for p in (100.2, 100.1, 100.3):
        again.quote(p)
    assert again.stops() == [old] and again.cancels == []
    again.quote(98.8)  # past the stop, within the allowance: the venue's to fill
    assert again.stops() == [old] and again.core.portfolio.positions[NSYM].qty == 1.0


def test_a_venue_stop_whose_exits_the_config_dropped_is_cancelled_after_the_restart() -> None:
    """Restarted with the strategy's exits removed while its stop rested at the venue: nothing
    took the stop back, so nothing moved or cancelled it: it stayed at the venue, holding the
    balance the strategy's sells need on spot, and (reduce-only) could later sell its next
    position at the old level (review). It is cancelled on the symbol's next quote."""
    h = NativeHarness({"stop_loss_pct": 1.0})
    h.bar(100.0, 100.5, 99.5, 100.0)
    (old,) = h.stops()
    again = _restarted(h, {}, native=True)
    core = again.core
    assert core.slots[("s1", NSYM)].exit_rules is None
    assert old.client_order_id in core.open_orders
    again.quote(100.2)
    assert again.stops() == [] and not core.open_orders
    (cancel,) = again.cancels
    assert cancel.client_order_id == old.client_order_id and "no exit here" in cancel.reason
    assert core.portfolio.positions[NSYM].qty == 1.0  # the position itself is not touched


def test_an_approved_close_cancels_the_venue_stop_before_it_sells() -> None:
    """A strategy in ``approve`` mode whose venue holds its stop signals its close: the stop
    was cancelled and put back when the request waited for a person, at every new request (a
    venue without the stop each time), and the person's approve then sent the sell with the
    stop resting, which a spot venue refuses for want of the balance the stop holds: an
    approved close never closed (review). The stop now stays while the request waits, and its
    cancel goes out before the approved sell; a denied approval leaves the stop alone."""
    from engine.core import CancelOrder, SubmitOrder
    from engine.types import Action, Signal

    h = NativeHarness({"stop_loss_pct": 1.0})
    h.bar(100.0, 100.5, 99.5, 100.0)
    (first,) = h.stops()
    core = h.core
    assert core.approvals.set_mode("s1", "approve", by="op")[0]
    slot = core.slots[("s1", NSYM)]
    for _ in range(5):  # the strategy asks again each bar; each request replaces the last
        h.quote(100.1)
        sell = Signal(Action.SELL, "cross_down", "test", 1.0, {}, True)
        h.handle(core.decide(slot, sell, 100.1))
    (stop,) = h.stops()  # left alone while the request waits: never cancelled, never moved
    assert h.cancels == [] and stop.client_order_id == first.client_order_id
    (pending,) = core.approvals.pending()
    out = core.approve(pending.approval_id, by="op")
    orders = [i for i in out if type(i) in (CancelOrder, SubmitOrder)]
    assert [type(i).__name__ for i in orders] == ["CancelOrder", "SubmitOrder"], orders
    assert orders[0].client_order_id == stop.client_order_id
    h.handle(out)
    assert core.portfolio.positions[NSYM].qty == 0.0 and h.stops() == []
    for _ in range(8):
        h.quote(100.1)
    assert h.stops() == [] and not core.open_orders  # flat: no stop comes back


def test_an_approval_denied_on_its_checks_leaves_the_venue_stop_resting() -> None:
    """The boundary: an approved close that its checks deny (the venue halted meanwhile) is
    not sent, and the venue's stop stays where it is."""
    from engine.core import CancelOrder
    from engine.types import Action, Signal

    h = NativeHarness({"stop_loss_pct": 1.0})
    h.bar(100.0, 100.5, 99.5, 100.0)
    core = h.core
    assert core.approvals.set_mode("s1", "approve", by="op")[0]
    slot = core.slots[("s1", NSYM)]
    h.quote(100.1)
    h.handle(core.decide(slot, Signal(Action.SELL, "cross_down", "test", 1.0, {}, True), 100.1))
    (stop,) = h.stops()
    (pending,) = core.approvals.pending()
    core.set_venue_halt("sim", "reconciliation found 1 difference")
    out = core.approve(pending.approval_id, by="op")
    assert not [i for i in out if type(i) is CancelOrder]
    h.handle(out)
    assert h.stops() == [stop] and core.portfolio.positions[NSYM].qty == 1.0


def test_a_venue_stop_the_venue_refuses_is_tried_again_a_minute_on_not_every_few_seconds() -> None:
    """A venue stop the venue refused (a filter, a transient error) was never placed again
    (review, the first hole above). Placed again, a venue that keeps refusing it must not get
    one every 5 s: it is tried again after 60 s (the engine watches the level meanwhile)."""
    h = NativeHarness({"stop_loss_pct": 1.0})
    real, tried = h.venue.submit, []

    def refuse_stops(order: Order, now: int) -> list[Any]:
        if order.order_type is not OrderType.STOP_MARKET:
            return real(order, now)
        tried.append(now)
        own = order.copy()
        own.move_to(OrderStatus.REJECTED, now, "venue: filter failure")
        return [OrderUpdate(own, now)]

    h.venue.submit = refuse_stops  # type: ignore[method-assign]
    h.bar(100.0, 100.5, 99.5, 100.0)
    assert len(tried) == 1 and h.core.portfolio.positions[NSYM].qty == 1.0
    for _ in range(58):
        h.quote(100.2)
    assert len(tried) == 1
    for _ in range(4):
        h.quote(100.2)
    assert len(tried) == 2
    h.venue.submit = real  # type: ignore[method-assign]
    for _ in range(61):
        h.quote(100.2)
    (stop,) = h.stops()
    assert stop.qty == 1.0


# ------------------------------------------------------------------ engine-side exits


def test_a_restart_trails_on_the_history_bars_the_engine_was_down_for() -> None:
    """The trail is K x ATR below the highest price since entry. The market ran from 100 to
    120 and back to 110 while the engine was down: the restarted engine took the journaled
    watermark (100) and trail (about 94) and held the position at 110, where a running engine
    (and a backtest on the same bars) had closed it at the trail near 114 (review). The
    history bars closing after the journal's last moment now move the watermark and the trail
    in warm_up (journaled), and the first quote below the trail closes at the market; the
    bars the engine had seen leave the trail exactly as journaled."""
    from engine.events import ExitsChanged, FillReceived
    from engine.types import NS_PER_SECOND, Bar
    from tests.test_exits import SYM, Harness, make_core

    exits = {"trailing_atr": 3.0, "atr_period": 3}
    h = Harness(make_core(exits))
    for _ in range(6):
        h.quote(100.0)
        h.quote(101.0, step_s=0.5)
    assert h.position == 1.0
    st = h.core.slots[("s1", SYM)].exits
    assert st is not None and st.trail is not None
    seen_until, journaled = h.core.now, (st.best, st.trail)

    def restarted(history: list[Bar]) -> Any:
        again = Harness(make_core(exits))
        core = again.core
        core.session = 2
        core.slots[("s1", SYM)].strategy.entered = True  # type: ignore[attr-defined]
        fills = [e.fill for e in h.events if type(e) is FillReceived]
        for fill in fills:
            core.portfolio.apply_fill(fill)
        core.restore(fills, [])
        rows = {(e.strategy_id, e.symbol): e.exits for e in h.events if type(e) is ExitsChanged}
        core.restore_exits(rows, seen_until)
        again.handle(core.warm_up(history))
        again.ts = h.ts + 60 * NS_PER_SECOND
        return again

    def bar(t: int, o: float, hi: float, lo: float, c: float) -> Bar:
        return Bar(SYM, t, 1, o, hi, lo, c, 1e6, "sim")

    # Bars the engine saw (closing before the journal's last moment): the trail as journaled.
    early = [
        bar(seen_until - (5 - i) * NS_PER_SECOND, 100.0, 101.0, 100.0, 100.5) for i in range(3)
    ]
    same = restarted(early)
    st2 = same.core.slots[("s1", SYM)].exits
    assert st2 is not None and (st2.best, st2.trail) == journaled
    # The downtime: up to 120 and back to 110, one point of range a bar.
    t = seen_until + NS_PER_SECOND
    path = [*range(101, 121), *range(119, 109, -1)]
    down = [bar(t + i * NS_PER_SECOND, p - 0.5, p + 0.5, p - 0.5, p) for i, p in enumerate(path)]
    again = restarted(early + down)
    st3 = again.core.slots[("s1", SYM)].exits
    assert st3 is not None and st3.best == 120.5
    assert st3.trail is not None and 110.0 < st3.trail < 120.5
    trailed = [e for e in again.events if type(e) is ExitsChanged and e.change == "trailed"]
    assert trailed and trailed[-1].exits is not None and trailed[-1].exits["trail"] == st3.trail
    again.quote(110.0)
    fired = again.exit_decisions()
    assert [d.rule for d in fired] == ["trailing_stop"]
    for _ in range(3):
        again.quote(110.0)
    assert again.position == 0.0


def test_a_trail_ratcheted_through_the_market_is_closed_by_the_engine_not_sent_as_a_stop() -> None:
    """A bar spikes up and falls back: the trail ratchets above the close. The engine moved the
    venue stop there, a sell stop above the market, which a venue refuses as one that would
    trigger at once (a rejected order, counted against the rejects breaker) (review). The venue
    stop is cancelled and the engine closes at the market on the next quote; a trail still
    below the market moves the venue stop as before (the boundary)."""
    h = NativeHarness({"trailing_atr": 1.0, "atr_period": 3})
    for _ in range(4):
        h.bar(100.0, 100.5, 99.5, 100.0)
    (stop,) = h.stops()
    h.bar(100.0, 101.0, 99.8, 100.8)  # a trail still under the market: moved
    (moved,) = h.stops()
    assert moved.client_order_id != stop.client_order_id
    assert moved.stop_price is not None and stop.stop_price is not None
    assert stop.stop_price < moved.stop_price < 100.8
    placed = [e for e in h.events if type(e) is IntentChecked]
    h.bar(100.8, 106.0, 99.8, 100.0)  # spikes and falls back: the trail ratchets above 100
    st = h.core.slots[("s1", NSYM)].exits
    assert st is not None and st.trail is not None and st.trail > 100.0
    assert h.stops() == []  # cancelled, no stop above the market sent
    new = [e for e in h.events if type(e) is IntentChecked][len(placed) :]
    assert not [e for e in new if e.intent.order_type is OrderType.STOP_MARKET]
    assert any("through the market" in c.reason for c in h.cancels)
    h.quote(100.0)
    assert h.core.portfolio.positions[NSYM].qty == 0.0
    assert h.core.exit_stats["trailing_stop"].count == 1


def test_a_venue_stop_reached_within_its_allowance_stays_the_venues_past_the_next_checks() -> None:
    """The boundary of the two fixes above: a market past the venue's stop by less than its
    allowance (100 bps) leaves the stop to the venue, also when it stays there longer than the
    5 s after which the engine checks its venue stop again."""
    h = NativeHarness({"stop_loss_pct": 1.0})
    h.bar(100.0, 100.5, 99.5, 100.0)
    (stop,) = h.stops()
    for _ in range(12):
        h.quote(98.5)  # 50 bps past the stop at 99
    assert h.stops() == [stop] and h.cancels == []
    assert h.core.portfolio.positions[NSYM].qty == 1.0


def test_an_entry_on_top_of_the_dust_an_exit_left_gets_exits_of_its_own() -> None:
    """The trailing stop's order fills in part (the venue cancels the rest) and leaves dust
    (0.03 at 100: under the 5 minimum notional), which the strategy reads as flat. Its next
    entry was followed as an add to the dust: the new position kept the old one's trail (104,
    above the market after it fired) and time stop, and the trail closed it on the next bar,
    "gapped" (review). An entry on dust is a new position: its exits are attached afresh, and a
    real add still follows the average (the boundary)."""
    from engine.events import DecisionMade, ExitsChanged
    from engine.types import Fill, Liquidity

    h = NativeHarness({"trailing_atr": 2.0, "atr_period": 3, "time_stop_bars": 20})
    core = h.core
    core.native_stop_venues = {}  # engine-side exits
    real = h.venue.submit

    def exit_fills_in_part(order: Order, now: int) -> list[Any]:
        if not (order.reduce_only and order.order_type is OrderType.MARKET):
            return real(order, now)
        own = order.copy()
        own.move_to(OrderStatus.NEW, now)
        fill = Fill("part", own.client_order_id, own.strategy_id, own.symbol, "sim", own.side,
                    0.97, 100.0, 0.0, Liquidity.TAKER, now)  # fmt: skip
        own.filled_qty, own.avg_fill_price = 0.97, 100.0
        own.move_to(OrderStatus.CANCELED, now, "the rest expired")
        return [OrderUpdate(own.copy(), now), fill, OrderUpdate(own.copy(), now)]

    h.venue.submit = exit_fills_in_part  # type: ignore[method-assign]
    for _ in range(4):
        h.bar(100.0, 100.5, 99.5, 100.0)
    for p in (102.0, 104.0, 106.0, 108.0):
        h.bar(p - 1.0, p + 0.5, p - 1.5, p)
    old = core.slots[("s1", NSYM)].exits
    assert old is not None and old.trail is not None and old.trail > 103.0
    h.bar(108.0, 108.0, 100.0, 100.5)  # through the trail: 0.97 sold, 0.03 of dust left
    slot = core.slots[("s1", NSYM)]
    assert abs(slot.position.qty - 0.03) < 1e-9
    assert core.strategy_view(slot, 100.0).qty == 0.0  # the strategy reads flat
    h.venue.submit = real  # type: ignore[method-assign]
    fired = len([e for e in h.events if type(e) is DecisionMade and e.decision.rule != "enter"])
    slot.strategy.entered = False  # type: ignore[attr-defined]  # so it enters again
    for _ in range(3):
        h.bar(100.0, 100.5, 99.8, 100.2)
    assert abs(slot.position.qty - 1.03) < 1e-9  # the new entry is held, not closed at once
    st = slot.exits
    assert st is not None and st.trail is not None and st.trail < 100.0
    assert st.entry_ts > old.entry_ts  # the time stop counts from the new entry
    later = [e for e in h.events if type(e) is DecisionMade and e.decision.rule != "enter"]
    assert len(later) == fired  # no exit fired on the new position
    assert [e.change for e in h.events if type(e) is ExitsChanged][-1] in ("attached", "trailed")
    # The boundary: an add to a real position follows the average, the exits are not reset.
    entry_ts = st.entry_ts
    h.handle(core.decide(slot, Signal(Action.BUY, "add", "test add", 1.0), 100.2))
    assert abs(slot.position.qty - 2.03) < 1e-9
    assert slot.exits is st and st.entry_ts == entry_ts


def test_a_shorts_stop_loss_is_not_refused_for_cash_spent_elsewhere() -> None:
    """A short's stop-loss is a buy. The cash check asked it for the full price, so in an
    account whose cash was in other positions (a leveraged config's longs, buy limits reserving
    it) the stop of a short was denied INSUFFICIENT_CASH on every try while the price ran up,
    and so was the kill switch's flatten (review). A reduce-only buy within the short covers it
    and needs no cash; an order that would add (a plain buy) is still refused for cash."""
    from engine.types import Fill, Liquidity, Side
    from engine.vocabulary import IntentOrigin
    from tests.test_exits import SYM, entered

    h = entered({"stop_loss_pct": 2.0}, short=True)
    core = h.core
    cash = core.portfolio.cash
    other = Fill("y1", "y-1", "other", "Y/USDT", "sim", Side.BUY, 1.0, cash - 50.0, 0.0,
                 Liquidity.TAKER, core.now)  # fmt: skip
    core.portfolio.apply_fill(other)  # the account's cash is in another position now
    core.portfolio.mark("Y/USDT", other.price, core.now)
    assert core.portfolio.cash == 50.0
    h.quote(102.5)  # through the short's stop at 102: the cover costs about 102.6
    (exit_,) = h.intents(IntentOrigin.EXIT)
    assert exit_.outcome == IntentOutcome.SUBMITTED, exit_.verdicts
    for _ in range(3):
        h.quote(102.5)
    assert h.position == 0.0
    # The boundary: a buy that is no reduce-only cover is still refused for the cash.
    slot = core.slots[("s1", SYM)]
    slot.strategy.entered = False  # type: ignore[attr-defined]
    slot.strategy.short = False  # type: ignore[attr-defined]
    for _ in range(3):
        h.quote(102.5)
    (entry,) = [i for i in h.intents(IntentOrigin.STRATEGY) if i.intent.side is Side.BUY]
    assert entry.outcome == IntentOutcome.DENIED
    assert DenialCode.INSUFFICIENT_CASH in entry.denied_codes


# ------------------------------------------------------------------ end to end (loopback binance)


async def test_a_venue_stop_cancelled_at_the_venue_while_the_engine_was_down_is_placed_again(
    monkeypatch: Any, tmp_path: Any
) -> None:
    """ccxt's binance class against the loopback venue: the stop rests at the venue, the
    engine stops, someone cancels the stop at the venue, the engine starts again. The restart
    reconciled the stop as cancelled and then left the position with no stop at the venue for
    good (review). It places one again once the market data is in."""
    from tests.test_native_stops import StopVenue, native_config
    from tests.test_venue_runtime import run_until, venue_engine
    from tests.test_venues_support import venue_env

    venue_env(monkeypatch)
    srv = StopVenue()
    await srv.start()
    try:
        data_dir = tmp_path / "data"
        engine = venue_engine(native_config(data_dir), data_dir, srv)
        await engine.start()
        try:
            await run_until(engine, lambda: bool(srv.stops()))
        finally:
            await engine.stop()
        (first,) = srv.stops("open")
        first.status = "canceled"  # by a person at the venue, while the engine is down
        again = venue_engine(native_config(data_dir), data_dir, srv)
        await again.start()
        try:
            core = again.core
            assert core is not None
            await run_until(again, lambda: bool(srv.stops("open")), timeout_s=20.0)
            (stop,) = srv.stops("open")
            assert stop.vcid != first.vcid and stop.side == "SELL"
            assert core.portfolio.positions["BTC/USDT"].qty > 0
            (view,) = core.exits_view("BTC/USDT")
            assert view["native_stop"] is True
        finally:
            await again.stop()
    finally:
        await srv.stop()
