"""Limit orders from strategies (issue 15 item 3): the paper venue's fill model (traded
through, behind the queue shown at the price, post-only, IOC, FOK), the order path (grid,
collar, journal fields), the engine's time-to-live cancel, moving a limit (cancel, then the new
one), a signal the other way superseding a working entry, and the invariants as properties."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from engine.config import ConfigError, PaperBrokerConfig, parse_config
from engine.core import EngineCore
from engine.events import IntentChecked, OrderUpdated
from engine.paper_broker import POST_ONLY_WOULD_TAKE, PaperBroker
from engine.portfolio import Portfolio
from engine.strategies.base import Strategy
from engine.strategies.registry import build_strategies
from engine.types import (
    NS_PER_MS,
    NS_PER_SECOND,
    Action,
    Bar,
    Fill,
    Instrument,
    LimitSpec,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
    OrderUpdate,
    PositionView,
    Quote,
    Side,
    Signal,
    TimeInForce,
)
from engine.vocabulary import DenialCode, IntentOutcome
from tests.core_driver import CoreDriver

SYM = "X/USDT"
T0 = 1_700_000_000 * NS_PER_SECOND
EXAMPLES = int(os.environ.get("LIMIT_EXAMPLES", "80"))
# Fixed latency (40 ms), no impact-level notional: each L1 level holds the displayed size.
FIXED = PaperBrokerConfig(
    latency_median_ms=40.0,
    latency_sigma=0.0,
    taker_fee_bps=10.0,
    maker_fee_bps=2.0,
    impact_bps_per_size=5.0,
    impact_level_notional=0.0,
)


def ms(n: float) -> int:
    return T0 + round(n * NS_PER_MS)


def order(
    coid: str = "o1",
    side: Side = Side.BUY,
    qty: float = 1.0,
    limit: float | None = 100.0,
    *,
    post_only: bool = False,
    tif: str = "gtc",
) -> Order:
    return Order(
        coid,
        coid,
        "s1",
        SYM,
        "sim",
        side,
        OrderType.LIMIT if limit is not None else OrderType.MARKET,
        qty,
        limit,
        OrderStatus.PENDING_NEW,
        T0,
        T0,
        post_only=post_only,
        tif=tif,
    )


def quote(
    ts: int, bid: float = 99.0, ask: float = 100.0, bid_size: float = 1.0, ask_size: float = 1.0
) -> Quote:
    return Quote(SYM, bid, ask, bid_size, ask_size, ts, ts)


def fills(events: Iterable[Any]) -> list[Fill]:
    return [e for e in events if isinstance(e, Fill)]


def last_status(events: Iterable[Any]) -> Order:
    return [e for e in events if isinstance(e, OrderUpdate)][-1].order


# ---------------------------------------------------------------- the paper venue


def test_post_only_that_would_cross_is_rejected_never_filled() -> None:
    b = PaperBroker(FIXED)
    b.submit(order(limit=100.0, post_only=True), T0)
    events = b.on_quote(quote(ms(40), bid=99.0, ask=100.0))  # ask at the limit: it would take
    assert fills(events) == []
    o = last_status(events)
    assert (o.status, o.reason) == (OrderStatus.REJECTED, POST_ONLY_WOULD_TAKE)
    assert b.open_orders() == []


def test_post_only_just_behind_the_ask_rests_and_fills_as_maker() -> None:
    b = PaperBroker(FIXED)
    b.submit(order(limit=99.99, post_only=True), T0)
    assert b.on_quote(quote(ms(40), bid=99.0, ask=100.0)) == []  # one tick inside: rests
    assert b.queue_ahead("o1") == 0.0  # it improved the bid: nobody ahead
    (f,) = fills(b.on_quote(quote(ms(50), bid=99.0, ask=99.98, ask_size=5.0)))
    assert (f.qty, f.price, f.liquidity) == (1.0, 99.99, Liquidity.MAKER)


def test_ioc_takes_what_is_there_within_its_limit_and_cancels_the_rest() -> None:
    b = PaperBroker(FIXED)
    b.submit(order(qty=3.0, limit=100.0, tif="ioc"), T0)
    # Level 0 at 100.00 holds 1; level 1 is 5 bps beyond, past the limit.
    events = b.on_quote(quote(ms(40), ask=100.0, ask_size=1.0))
    (f,) = fills(events)
    assert (f.qty, f.price, f.liquidity) == (1.0, 100.0, Liquidity.TAKER)
    o = last_status(events)
    assert o.status is OrderStatus.CANCELED and o.filled_qty == 1.0 and "IOC" in o.reason
    assert b.open_orders() == []


def test_ioc_and_fok_not_marketable_on_arrival_are_cancelled_not_rested() -> None:
    for tif in ("ioc", "fok"):
        b = PaperBroker(FIXED)
        b.submit(order(limit=99.5, tif=tif), T0)
        events = b.on_quote(quote(ms(40), bid=99.0, ask=100.0))
        o = last_status(events)
        assert o.status is OrderStatus.CANCELED and "not marketable" in o.reason
        assert fills(events) == [] and b.open_orders() == []


def test_fok_all_or_nothing_and_a_killed_fok_leaves_the_book_to_others() -> None:
    b = PaperBroker(FIXED)
    b.submit(order("big", qty=2.0, limit=100.0, tif="fok"), T0)
    b.submit(order("mkt", qty=1.0, limit=None), T0)  # arrives with it, behind it
    events = b.on_quote(quote(ms(40), ask=100.0, ask_size=1.0))
    big = [e.order for e in events if isinstance(e, OrderUpdate) and e.order.intent_id == "big"]
    assert big[-1].status is OrderStatus.CANCELED and big[-1].filled_qty == 0.0
    # The FOK took nothing: the market order behind it gets the whole touch.
    (f,) = fills(events)
    assert (f.client_order_id, f.qty, f.price) == ("mkt", 1.0, 100.0)
    b.submit(order("ok", qty=1.0, limit=100.0, tif="fok"), ms(50))
    (f,) = fills(b.on_quote(quote(ms(90), ask=100.0, ask_size=1.0)))
    assert (f.client_order_id, f.qty) == ("ok", 1.0)


def test_post_only_with_ioc_and_tif_on_a_market_order_are_refused() -> None:
    b = PaperBroker(FIXED)
    (u,) = b.submit(order(post_only=True, tif="ioc"), T0)
    assert u.order.status is OrderStatus.REJECTED and "post-only" in u.order.reason
    (u,) = b.submit(order("m", limit=None, tif="fok"), T0)
    assert u.order.status is OrderStatus.REJECTED


def test_joining_the_bid_waits_for_the_size_shown_there_to_trade_first() -> None:
    b = PaperBroker(FIXED)
    b.submit(order(qty=1.0, limit=99.0), T0)
    b.on_quote(quote(ms(40), bid=99.0, ask=100.0, bid_size=2.0))  # 2 ahead at 99.00
    assert b.queue_ahead("o1") == 2.0
    assert fills(b.on_quote(quote(ms(50), bid=98.0, ask=98.9, ask_size=1.5))) == []
    assert b.queue_ahead("o1") == pytest.approx(0.5)
    (f,) = fills(b.on_quote(quote(ms(60), bid=98.0, ask=98.9, ask_size=1.0)))
    assert (f.qty, f.price) == (pytest.approx(0.5), 99.0)  # what was left after the queue
    (f,) = fills(b.on_quote(quote(ms(70), bid=98.0, ask=98.9, ask_size=1.0)))
    assert f.qty == pytest.approx(0.5)
    assert b.open_orders() == []


def test_the_queue_behind_the_touch_comes_from_the_fresh_depth_at_that_price() -> None:
    b = PaperBroker(FIXED)
    b.submit(order(qty=1.0, limit=98.0), T0)
    b.on_depth(SYM, [(99.0, 1.0), (98.5, 2.0), (98.0, 7.0)], [(100.0, 1.0), (101.0, 1.0)], ms(40))
    b.on_quote(quote(ms(40), bid=99.0, ask=100.0))
    assert b.queue_ahead("o1") == 7.0
    b2 = PaperBroker(FIXED)
    b2.submit(order(qty=1.0, limit=98.2), T0)  # between two levels: nobody shown there
    b2.on_depth(SYM, [(99.0, 1.0), (98.5, 2.0), (98.0, 7.0)], [(100.0, 1.0)], ms(40))
    b2.on_quote(quote(ms(40), bid=99.0, ask=100.0))
    assert b2.queue_ahead("o1") == 0.0


def test_cancel_carries_its_reason() -> None:
    b = PaperBroker(FIXED)
    b.submit(order(), T0)
    (u,) = b.cancel("o1", ms(5), "time to live 3s ran out")
    assert (u.order.status, u.order.reason) == (OrderStatus.CANCELED, "time to live 3s ran out")


# ---------------------------------------------------------------- properties of the venue

_quotes = st.lists(
    st.tuples(
        st.integers(-30, 30),  # bid, in ticks of 0.1 from 100
        st.integers(1, 5),  # spread in ticks
        st.floats(0.1, 5.0),  # bid size
        st.floats(0.1, 5.0),  # ask size
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    side=st.sampled_from([Side.BUY, Side.SELL]),
    limit_ticks=st.integers(-20, 20),
    qty=st.floats(0.1, 8.0),
    post_only=st.booleans(),
    tif=st.sampled_from(["gtc", "ioc", "fok"]),
    quotes=_quotes,
)
def test_limit_fill_invariants(
    side: Side,
    limit_ticks: int,
    qty: float,
    post_only: bool,
    tif: str,
    quotes: list[tuple[int, int, float, float]],
) -> None:
    """Whatever the quotes: a buy never fills above its limit (a sell never below); post-only
    never takes; IOC and FOK never fill after their arrival quote, FOK all or nothing; and a
    resting limit never fills more than what traded through its price beyond the queue it had
    when it came to rest."""
    post_only = post_only and tif == "gtc"
    limit = round(100.0 + limit_ticks * 0.1, 10)
    b = PaperBroker(FIXED)
    b.submit(order(side=side, qty=qty, limit=limit, post_only=post_only, tif=tif), T0)
    buy = side is Side.BUY
    got: list[Fill] = []
    arrival_fills = 0.0
    queue: float | None = None
    through = 0.0
    for i, (bid_t, spread, bid_size, ask_size) in enumerate(quotes):
        bid = round(100.0 + bid_t * 0.1, 10)
        ask = round(bid + spread * 0.1, 10)
        q = quote(ms(40 + 10 * i), bid, ask, bid_size, ask_size)
        resting_before = b.queue_ahead("o1") is not None
        events = b.on_quote(q)
        new = fills(events)
        got += new
        if i == 0:
            arrival_fills = sum(f.qty for f in new)
            queue = b.queue_ahead("o1")
            if queue is not None:  # it came to rest: what the rule says was shown there
                touch, size = (bid, bid_size) if buy else (ask, ask_size)
                better = limit > touch if buy else limit < touch
                assert queue == (0.0 if better else size)
        elif resting_before and (ask < limit if buy else bid > limit):
            through += ask_size if buy else bid_size
    for f in got:
        assert f.price <= limit if buy else f.price >= limit
        assert f.price > 0
    if post_only:
        assert all(f.liquidity is Liquidity.MAKER for f in got)
    total = sum(f.qty for f in got)
    assert total <= qty * (1 + 1e-9)
    if tif != "gtc":
        assert total == pytest.approx(arrival_fills)  # nothing after the arrival quote
        assert b.open_orders() == []
    if tif == "fok":
        assert total == 0.0 or total == pytest.approx(qty)
    makers = sum(f.qty for f in got if f.liquidity is Liquidity.MAKER)
    if queue is not None:
        assert makers <= max(0.0, through - queue) + 1e-9


# ---------------------------------------------------------------- through the core


class _NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Scripted(Strategy):
    """Says on the next quote what the test told it to (``say``), then nothing."""

    kind: ClassVar[str] = "scripted"
    Params: ClassVar[type[BaseModel]] = _NoParams

    def __init__(self, strategy_id: str, symbol: str, params: Any = None, allow_short: bool = True):
        super().__init__(strategy_id, symbol, _NoParams(), allow_short)
        self.next: Signal | None = None
        self.views: list[PositionView] = []

    def say(self, action: Action, limit: LimitSpec | None, reduce_only: bool = False) -> None:
        self.next = Signal(action, "scripted", "test", 1.0, {}, reduce_only, limit)

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        return None

    def on_quote(self, quote: Quote, position: PositionView) -> Signal | None:
        self.views.append(position)
        signal, self.next = self.next, None
        return signal


def make_core(qty: float = 1.0, collar_pct: float = 1.0) -> tuple[EngineCore, Scripted]:
    cfg = parse_config(
        {
            "market": {"simulated": {"symbols": {SYM: {"initial_price": 100.0}}}},
            "risk": {"price_collar_pct": collar_pct},
            "broker": {"paper": FIXED.model_dump()},
            "strategies": [
                {
                    "id": "s1",
                    "kind": "ema_cross",
                    "symbols": [SYM],
                    "timeframe_s": 1,
                    "approval": "auto",
                    "allow_short": True,
                    "sizing": {"model": "fixed_qty", "qty": qty},
                }
            ],
        }
    )
    strat = Scripted("s1", SYM)
    inst = {SYM: Instrument(SYM, "sim", 0.01, 0.001, 0.0, 5.0)}
    return EngineCore(cfg, [strat], inst, Portfolio(100_000.0)), strat


class Harness(CoreDriver):
    """The core and the paper broker driven as ``Engine.process`` drives them (a cancel
    carries its reason to the broker, as ``PaperExecution.cancel`` does)."""

    def __init__(self, qty: float = 1.0, collar_pct: float = 1.0) -> None:
        core, self.strat = make_core(qty, collar_pct)
        super().__init__(core)
        self.ts = T0

    def quote(
        self, bid: float = 99.99, ask: float = 100.01, step_ns: int = NS_PER_SECOND, size=5.0
    ) -> None:
        self.ts += step_ns
        q = Quote(SYM, bid, ask, size, size, self.ts, self.ts, "sim")
        out = self.core.on_quote(q)
        assert out is not None
        self.handle(out)
        items = self.broker.on_quote(q)
        if items:
            self.handle(self.core.on_broker(items))

    def intents(self) -> list[IntentChecked]:
        return [e for e in self.events if type(e) is IntentChecked]

    def orders(self, status: OrderStatus | None = None) -> list[Order]:
        last: dict[str, Order] = {}
        for e in self.events:
            if type(e) is OrderUpdated:
                last[e.order.client_order_id] = e.order
        return [o for o in last.values() if status is None or o.status is status]


def test_a_limit_signal_goes_out_offset_from_the_touch_on_the_grid_with_its_terms() -> None:
    h = Harness()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(None, 2.0, True, TimeInForce.GTC, 30.0))
    h.quote(bid=99.993, ask=100.01)  # 99.993 - 2 ticks = 99.973, rounded down to 99.97
    (ic,) = h.intents()
    assert ic.outcome == IntentOutcome.SUBMITTED
    i = ic.intent
    assert (i.order_type, i.limit_price, i.post_only, i.tif, i.ttl_ns) == (
        OrderType.LIMIT,
        99.97,
        True,
        "gtc",
        30 * NS_PER_SECOND,
    )
    (o,) = h.core.open_orders.values()
    assert (o.limit_price, o.post_only, o.expire_ts) == (99.97, True, h.ts + 30 * NS_PER_SECOND)
    # The journal's order row carries the terms the Orders pane shows.
    assert {"post_only", "tif", "expire_ts"} <= set(o.to_dict())
    # A sell prices off the ask: 100.01 + 2 ticks.
    h2 = Harness()
    h2.quote()
    h2.strat.say(Action.SELL, LimitSpec(None, 2.0))
    h2.quote()
    assert h2.intents()[0].intent.limit_price == 100.03


def test_the_price_collar_judges_the_limit_price_at_its_boundary() -> None:
    """Collar 1% of mid 100: a buy limit 1.00 away passes, 1.01 away is denied."""
    for price, ok in ((99.0, True), (98.99, False)):
        h = Harness()
        h.quote(bid=99.99, ask=100.01)
        h.strat.say(Action.BUY, LimitSpec(price))
        h.quote(bid=99.99, ask=100.01)
        (ic,) = h.intents()
        assert (ic.outcome == IntentOutcome.SUBMITTED) is ok, ic.verdicts
        if not ok:
            assert DenialCode.PRICE_COLLAR in ic.denied_codes


def test_time_to_live_cancels_at_the_first_event_at_its_expiry_with_its_reason() -> None:
    h = Harness()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0, ttl_s=3.0))
    h.quote()
    (o,) = h.core.open_orders.values()
    due = o.expire_ts
    h.quote(step_ns=due - h.ts - 1)  # 1 ns before: still working
    assert h.core.open_orders and not h.cancels
    h.quote(step_ns=1)  # at the expiry
    assert not h.core.open_orders
    (c,) = h.cancels
    assert "time to live 3s ran out" in c.reason
    (done,) = h.orders(OrderStatus.CANCELED)
    assert done.reason == c.reason  # the journaled order update says why
    h.quote()  # the strategy sees itself flat again
    assert h.strat.views[-1].qty == 0.0


def test_moving_a_limit_cancels_it_then_sends_the_new_one() -> None:
    h = Harness()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0))
    h.quote()
    (old,) = h.core.open_orders.values()
    h.strat.say(Action.BUY, LimitSpec(99.0))  # the same price: nothing to move
    h.quote()
    assert not h.cancels and len(h.intents()) == 1
    h.strat.say(Action.BUY, LimitSpec(99.5))
    h.quote()
    (c,) = h.cancels
    assert c.client_order_id == old.client_order_id and "limit 99 -> 99.5" in c.reason
    (new,) = h.core.open_orders.values()
    assert new.limit_price == 99.5 and new.qty == old.qty  # sized as if the old one were gone
    assert [ic.outcome for ic in h.intents()] == [IntentOutcome.SUBMITTED] * 2


def test_a_replacement_after_a_partial_fill_buys_only_the_rest() -> None:
    h = Harness(qty=2.0)
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.98))  # inside the spread: first in line
    h.quote()
    h.quote(bid=99.9, ask=99.95, size=0.5)  # 0.5 traded through it
    (o,) = h.core.open_orders.values()
    assert o.filled_qty == pytest.approx(0.5)
    h.strat.say(Action.BUY, LimitSpec(99.97))
    h.quote(bid=99.96, ask=99.99)
    (new,) = h.core.open_orders.values()
    # The strategy wanted 2 in all: 0.5 is held, the replacement works for 1.5.
    assert new.qty == pytest.approx(1.5) and new.limit_price == 99.97


def test_a_signal_the_other_way_supersedes_an_unfilled_entry() -> None:
    h = Harness()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0))
    h.quote()
    (entry,) = h.core.open_orders.values()
    h.strat.say(Action.SELL, None, reduce_only=True)  # the strategy exits what it thinks
    h.quote()
    (c,) = h.cancels
    assert c.client_order_id == entry.client_order_id and "superseded" in c.reason
    assert not h.core.open_orders  # nothing filled: the exit has nothing to sell
    assert h.intents()[-1].outcome == IntentOutcome.DENIED
    assert h.core.portfolio.positions.get(SYM) is None or h.core.portfolio.positions[SYM].qty == 0


def test_post_only_that_would_take_is_rejected_through_the_core() -> None:
    h = Harness()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(None, -2.0, True))  # 2 ticks into the spread... and more
    h.quote(bid=99.99, ask=100.0)  # 99.99 + 0.02 = 100.01: at or above the ask
    h.quote()
    (o,) = h.orders(OrderStatus.REJECTED)
    assert o.reason == POST_ONLY_WOULD_TAKE
    assert not any(type(e).__name__ == "FillReceived" for e in h.events)


def test_a_restored_limit_keeps_its_time_to_live() -> None:
    h = Harness()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0, ttl_s=5.0))
    h.quote()
    (o,) = h.core.open_orders.values()
    restarted = Harness()
    restarted.core.restore([], [o.copy()])
    restarted.broker.restore([o.copy()], h.ts)
    restarted.ts = o.expire_ts - NS_PER_SECOND
    restarted.quote(step_ns=NS_PER_SECOND - 1)
    assert restarted.core.open_orders
    restarted.quote(step_ns=1)
    assert not restarted.core.open_orders
    assert "time to live 5s" in restarted.cancels[0].reason


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ttl_ms=st.integers(1, 10_000),
    steps=st.lists(st.integers(1, 3_000), min_size=1, max_size=30),
)
def test_time_to_live_always_cancels(ttl_ms: int, steps: list[int]) -> None:
    """An unfilled limit is cancelled by the engine at the first market event at or after
    its expiry, whatever the spacing of events, and never before."""
    h = Harness()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0, ttl_s=ttl_ms / 1000))
    h.quote()
    (o,) = h.core.open_orders.values()
    for step in steps:
        h.quote(step_ns=step * NS_PER_MS)
        if h.ts < o.expire_ts:
            assert h.core.open_orders and not h.cancels
        else:
            assert not h.core.open_orders
            assert len(h.cancels) == 1 and "time to live" in h.cancels[0].reason
            break


# ---------------------------------------------------------------- the strategy option


def test_ema_cross_limit_options_are_validated() -> None:
    def build(params: dict[str, Any]) -> Any:
        cfg = {
            "id": "e",
            "kind": "ema_cross",
            "symbols": ["BTC/USDT"],
            "params": {"fast": 3, "slow": 8, **params},
        }
        return build_strategies(parse_config({"strategies": [cfg]}).strategies)

    (s,) = build({"order_type": "limit", "limit_offset_ticks": 1, "limit_ttl_s": 30})
    assert s._entry_limit == LimitSpec(None, 1.0, False, TimeInForce.GTC, 30.0)
    (s,) = build({})
    assert s._entry_limit is None
    for bad, words in (
        ({"limit_ttl_s": 30}, 'add order_type = "limit"'),
        ({"order_type": "limit", "post_only": True, "time_in_force": "ioc"}, "post_only"),
        ({"order_type": "limit", "limit_ttl_s": 0}, "limit_ttl_s"),
        ({"order_type": "stop"}, "order_type"),
    ):
        with pytest.raises(ConfigError) as err:
            build(bad)
        assert words in str(err.value), (bad, str(err.value))


# ---------------------------------------------------------------- the Orders pane


def test_orders_pane_shows_a_resting_limit_with_its_age_and_what_is_left_of_its_ttl() -> None:
    from cockpit.tui.orders import age_ttl, limit_terms, resting_limit

    o = {
        "order_type": "limit",
        "status": "new",
        "ts_created": T0,
        "expire_ts": T0 + 60 * NS_PER_SECOND,
        "post_only": True,
        "tif": "gtc",
    }
    assert resting_limit(o) and not resting_limit({**o, "status": "filled"})
    assert not resting_limit({**o, "order_type": "market"})
    assert age_ttl(o, T0 + 12 * NS_PER_SECOND) == "12s/48s left"
    assert age_ttl({**o, "expire_ts": 0}, T0 + 125 * NS_PER_SECOND) == "2m05s"
    assert age_ttl(o, T0 + 90 * NS_PER_SECOND) == "1m30s/0s left"  # due: the cancel is coming
    assert limit_terms(o) == "po"
    assert limit_terms({**o, "post_only": False, "tif": "ioc"}) == "ioc"


def test_a_halt_cancels_resting_limits_and_a_paused_strategy_does_not_move_its_own() -> None:
    h = Harness()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0))
    h.quote()
    (o,) = h.core.open_orders.values()
    h.handle(h.core.safety.pause("s1", by="op", reason="look", ts=h.core.now))
    h.strat.say(Action.BUY, LimitSpec(99.5))
    h.quote()
    # Paused: the move is denied, and the working order is left where it was (not cancelled
    # for a replacement the gate refuses).
    assert list(h.core.open_orders) == [o.client_order_id] and not h.cancels
    assert h.intents()[-1].outcome == IntentOutcome.DENIED
    h.handle(h.core.kill("halt", by="op", reason="test", source="operator"))
    assert not h.core.open_orders
    assert h.orders(OrderStatus.CANCELED)[0].reason.startswith("kill switch")


def test_time_to_live_runs_from_the_send_not_the_decision_when_approval_waits() -> None:
    h = Harness()
    assert h.core.approvals.set_mode("s1", "approve", by="op")[0]
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0, ttl_s=5.0))
    h.quote()
    (ic,) = h.intents()
    assert ic.outcome == IntentOutcome.AWAITING_APPROVAL and not h.core.open_orders
    for _ in range(3):
        h.quote()  # 3 s pass while it waits
    pending = h.core.approvals.pending()[0]
    h.handle(h.core.approve(pending.approval_id, by="op"))
    (o,) = h.core.open_orders.values()
    assert o.expire_ts == h.core.now + 5 * NS_PER_SECOND


def test_cli_backtest_with_limit_entries_on_the_shipped_minute_bars(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`cockpit backtest --param order_type=limit ...` (the README's example): the report and
    the JSON count the maker fills and the entries whose time to live ran out."""
    import json

    from tests.conftest import PACKED
    from tests.test_backtest import cli

    shipped = PACKED / "nautilus_trader/btc-perp-20211231-20220201_1m.csv.xz"
    args = ["--data", str(shipped), "--strategy", "ema_cross", "--param", "order_type=limit"]
    args += ["--param", "limit_offset_ticks=1", "--param", "limit_ttl_s=300", "--no-breakers"]
    args += ["--no-chart", "--no-color"]
    assert cli(*args) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "limit orders" in x)
    assert "as maker" in line and "expired unfilled (time to live)" in line
    assert cli(*args, "--json") == 0
    orders = json.loads(capsys.readouterr().out)["orders"]
    assert orders["maker_fills"] > 0 and orders["expired"] > 0
    assert orders["maker_fills"] < orders["fills"]  # some entries took: marketable on arrival


def test_time_to_live_fires_on_the_clock_tick_when_no_quote_arrives() -> None:
    """A quiet market sends no quote: the runtime's watch drives ``tick`` with the source's
    clock, and that alone must cancel a limit whose time to live ran out (review)."""
    h = Harness()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0, ttl_s=3.0))
    h.quote()
    (o,) = h.core.open_orders.values()
    h.handle(h.core.tick(o.expire_ts - 1))  # 1 ns before: still working
    assert h.core.open_orders and not h.cancels
    h.handle(h.core.tick(o.expire_ts + 2 * NS_PER_SECOND))  # no quote since: the clock alone
    (c,) = h.cancels
    assert c.client_order_id == o.client_order_id and "time to live 3s ran out" in c.reason
    assert not h.core.open_orders


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, 0.0])
def test_moving_a_limit_to_a_price_that_is_not_a_positive_number_keeps_the_order(
    bad: float,
) -> None:
    """A user strategy moving its working limit to NaN or infinity raised out of the core
    (the grid rounding cannot take them: the engine stopped with the order left working);
    zero or a negative price cancelled the order, then the checks denied its replacement,
    leaving the strategy with neither (review). Now: denied on the record, the order stays."""
    h = Harness()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0))
    h.quote()
    (working,) = h.core.open_orders
    h.strat.say(Action.BUY, LimitSpec(bad))
    h.quote()
    assert list(h.core.open_orders) == [working] and not h.cancels
    ic = h.intents()[-1]
    assert ic.outcome == IntentOutcome.DENIED and DenialCode.INVALID_PRICE in ic.denied_codes


@pytest.mark.parametrize(
    ("ttl_s", "sent"),
    [
        (None, True),
        (0.0, True),  # none asked: works until filled or cancelled
        (366 * 86_400.0, True),  # the longest allowed
        (366 * 86_400.0 * (1 + 1e-12), False),  # just over
        (float("inf"), False),  # raised out of the core before (OverflowError)
        (1e300, False),  # so did this
        (float("nan"), False),  # sent with no expiry at all before
        (-5.0, False),  # so was this
    ],
)
def test_a_time_to_live_that_is_not_a_usable_number_of_seconds_is_denied(
    ttl_s: float | None, sent: bool
) -> None:
    """A user strategy's limit with an unusable time to live: inf raised out of the core,
    NaN or a negative one went out with no expiry, working for ever against the strategy's
    wish (review). Now denied on the record; the boundary (a year) still goes out."""
    h = Harness()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0, ttl_s=ttl_s))
    h.quote()
    (ic,) = h.intents()
    assert (ic.outcome == IntentOutcome.SUBMITTED) is sent, ic.verdicts
    if not sent:
        assert not h.core.open_orders and "time to live" in ic.verdicts[0].message
    elif ttl_s:
        (o,) = h.core.open_orders.values()
        assert o.expire_ts == h.core.now + round(ttl_s * NS_PER_SECOND)


def test_an_expiry_cancel_the_venue_never_got_is_asked_again_until_the_limit_is_done() -> None:
    """The engine asked once: a cancel lost at the venue (a network error, a rate limit:
    the broker answers nothing) left the limit working for ever past its time to live
    (review). It is asked again every few seconds while the order still works."""
    h = Harness()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0, ttl_s=3.0))
    h.quote()
    (o,) = h.core.open_orders.values()
    real_cancel, lost = h.broker.cancel, []

    def cancel_lost_once(coid: str, now: int, reason: str = "canceled") -> list[OrderUpdate]:
        if not lost:
            lost.append(coid)
            return []  # never reached the venue: no update at all
        return real_cancel(coid, now, reason)

    h.broker.cancel = cancel_lost_once  # type: ignore[method-assign]
    h.quote(step_ns=o.expire_ts - h.ts)  # due: the first cancel is lost
    assert lost == [o.client_order_id] and list(h.core.open_orders) == [o.client_order_id]
    h.quote(step_ns=NS_PER_SECOND)  # not yet asked again (no cancel storm)
    assert len(h.cancels) == 1
    h.handle(h.core.tick(h.ts + 10 * NS_PER_SECOND))  # a quiet market: the clock asks again
    assert len(h.cancels) == 2 and "asked again" in h.cancels[1].reason
    assert not h.core.open_orders
    (done,) = h.orders(OrderStatus.CANCELED)
    assert done.client_order_id == o.client_order_id
    assert h.core.counters["expired"] == 1


def test_a_move_whose_cancel_was_lost_asks_again_on_the_next_move() -> None:
    """A move's cancel lost at the venue left the move waiting for a confirmation that would
    never come, and every later move was swallowed (no cancel sent): the limit stayed at its
    old price for good (review). The next move asks for the cancel again."""
    h = Harness()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0))
    h.quote()
    (o,) = h.core.open_orders.values()
    real_cancel, lost = h.broker.cancel, []

    def cancel_lost_once(coid: str, now: int, reason: str = "canceled") -> list[OrderUpdate]:
        if not lost:
            lost.append(coid)
            return []
        return real_cancel(coid, now, reason)

    h.broker.cancel = cancel_lost_once  # type: ignore[method-assign]
    h.strat.say(Action.BUY, LimitSpec(99.5))
    h.quote()
    assert lost and list(h.core.open_orders) == [o.client_order_id]
    h.strat.say(Action.BUY, LimitSpec(99.6))
    h.quote()
    (new,) = h.core.open_orders.values()
    assert new.client_order_id != o.client_order_id and new.limit_price == 99.6
    assert new.qty == o.qty  # one order, the old one's size: never two working
