"""The paper fill model: latency, far-side fills, impact, trade-through limits, determinism."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import PaperBrokerConfig
from engine.paper_broker import DEPTH_EXHAUSTED, DUPLICATE_ID, PaperBroker
from engine.types import (
    NS_PER_MS,
    Fill,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Quote,
    Side,
)

T0 = 1_700_000_000 * 1_000_000_000
SYM = "BTC/USDT"
# sigma 0: every order arrives exactly 40 ms after submission.
FIXED = PaperBrokerConfig(
    latency_median_ms=40.0,
    latency_sigma=0.0,
    taker_fee_bps=10.0,
    maker_fee_bps=2.0,
    impact_bps_per_size=5.0,
    impact_level_notional=0.0,  # the old chunking: every impact level is one displayed size
)


def ms(n: float) -> int:
    return T0 + round(n * NS_PER_MS)


def order(
    coid: str = "o1",
    side: Side = Side.BUY,
    qty: float = 1.0,
    limit: float | None = None,
    symbol: str = SYM,
) -> Order:
    return Order(
        client_order_id=coid,
        intent_id=coid,
        strategy_id="s1",
        symbol=symbol,
        venue="sim",
        side=side,
        order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
        qty=qty,
        limit_price=limit,
        status=OrderStatus.PENDING_NEW,
        ts_created=T0,
        ts_updated=T0,
    )


def quote(
    ts: int,
    bid: float = 99.0,
    ask: float = 100.0,
    bid_size: float = 1.0,
    ask_size: float = 1.0,
    symbol: str = SYM,
) -> Quote:
    return Quote(symbol, bid, ask, bid_size, ask_size, ts, ts)


def fills(events: list[OrderUpdate | Fill]) -> list[Fill]:
    return [e for e in events if isinstance(e, Fill)]


def updates(events: list[OrderUpdate | Fill]) -> list[Order]:
    return [e.order for e in events if isinstance(e, OrderUpdate)]


# ---------------------------------------------------------------- market orders


def test_market_buy_fills_at_ask_of_first_quote_after_latency() -> None:
    b = PaperBroker(FIXED)
    ack = b.submit(order(qty=0.5), T0)
    assert [u.order.status for u in ack] == [OrderStatus.NEW]
    assert b.arrival_time("o1") == ms(40)
    # Still in flight: a quote before arrival does not fill, however good its price.
    assert b.on_quote(quote(ms(39.999), bid=89.0, ask=90.0)) == []
    # The market moved during latency: the quote at arrival decides.
    events = b.on_quote(quote(ms(40), bid=100.0, ask=101.0, ask_size=2.0))
    (f,) = fills(events)
    assert (f.price, f.qty, f.liquidity, f.ts) == (101.0, 0.5, Liquidity.TAKER, ms(40))
    assert f.fee == pytest.approx(0.5 * 101.0 * 0.001)
    assert f.fill_id == "o1-1"
    (u,) = updates(events)
    assert u.status is OrderStatus.FILLED
    assert (u.filled_qty, u.avg_fill_price, u.ts_updated) == (0.5, 101.0, ms(40))
    assert u.fees == pytest.approx(f.fee)
    assert events == [f, OrderUpdate(u, ms(40))]  # fill first, then the order's new state
    assert b.open_orders() == []
    assert b.on_quote(quote(ms(50))) == []


def test_market_buy_uses_first_quote_after_arrival_not_exactly_at() -> None:
    b = PaperBroker(FIXED)
    b.submit(order(), T0)
    (f,) = fills(b.on_quote(quote(ms(75), ask=102.5)))
    assert f.price == 102.5


def test_market_buy_beyond_displayed_size_walks_worse_levels() -> None:
    b = PaperBroker(FIXED)
    b.submit(order(qty=2.5), T0)
    events = b.on_quote(quote(ms(40), ask=100.0, ask_size=1.0))
    fs = fills(events)
    assert [f.qty for f in fs] == [1.0, 1.0, 0.5]
    assert [f.price for f in fs] == pytest.approx([100.0, 100.05, 100.10])
    assert [f.fill_id for f in fs] == ["o1-1", "o1-2", "o1-3"]
    assert all(f.liquidity is Liquidity.TAKER for f in fs)
    assert [u.status for u in updates(events)] == [
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.FILLED,
    ]
    last = updates(events)[-1]
    assert last.avg_fill_price == pytest.approx((100.0 + 100.05 + 0.5 * 100.10) / 2.5)
    assert last.fees == pytest.approx(sum(f.qty * f.price for f in fs) * 0.001)
    assert [type(e) for e in events] == [Fill, OrderUpdate] * 3


def test_market_sell_takes_bid_and_walks_down() -> None:
    b = PaperBroker(FIXED)
    b.submit(order(side=Side.SELL, qty=1.5), T0)
    fs = fills(b.on_quote(quote(ms(40), bid=200.0, ask=200.1, bid_size=1.0)))
    assert [(f.qty, f.price) for f in fs] == [(1.0, 200.0), (0.5, pytest.approx(199.9))]
    assert all(f.side is Side.SELL for f in fs)


def test_expected_slippage_matches_what_a_market_order_pays() -> None:
    b = PaperBroker(FIXED)
    q = quote(ms(40), bid=99.0, ask=101.0, ask_size=1.0)
    expected = b.expected_slippage_bps(Side.BUY, 2.5, q)
    b.submit(order(qty=2.5), T0)
    fs = fills(b.on_quote(q))
    vwap = sum(f.qty * f.price for f in fs) / 2.5
    assert expected == pytest.approx((vwap - q.mid) / q.mid * 1e4)
    assert expected > b.expected_slippage_bps(Side.BUY, 0.5, q) > 0
    # Half the spread is the floor for any size.
    assert b.expected_slippage_bps(Side.SELL, 0.0, q) == pytest.approx(1.0 / 100.0 * 1e4)


def test_market_order_beyond_simulated_depth_cancels_the_rest() -> None:
    b = PaperBroker(FIXED)
    b.max_levels = 3
    b.submit(order(qty=5.0), T0)
    events = b.on_quote(quote(ms(40), ask_size=1.0))
    assert sum(f.qty for f in fills(events)) == pytest.approx(3.0)
    final = updates(events)[-1]
    assert final.status is OrderStatus.CANCELED
    assert final.reason == DEPTH_EXHAUSTED
    assert final.filled_qty == pytest.approx(3.0)
    assert b.expected_slippage_bps(Side.BUY, 5.0, quote(0)) == float("inf")


def test_orders_on_one_quote_share_displayed_liquidity() -> None:
    b = PaperBroker(FIXED)
    b.submit(order("a", qty=0.6), T0)
    b.submit(order("b", qty=0.6), T0 + 1)
    fs = fills(b.on_quote(quote(ms(41), ask=100.0, ask_size=1.0)))
    # "a" arrived first and takes 0.6 at the touch; "b" gets the 0.4 left, then the next level.
    assert [(f.client_order_id, f.qty, f.price) for f in fs] == [
        ("a", 0.6, 100.0),
        ("b", pytest.approx(0.4), 100.0),
        ("b", pytest.approx(0.2), pytest.approx(100.05)),
    ]


def test_quotes_for_other_symbols_do_not_fill() -> None:
    b = PaperBroker(FIXED)
    b.submit(order(), T0)
    assert b.on_quote(quote(ms(50), symbol="ETH/USDT")) == []
    assert len(fills(b.on_quote(quote(ms(60))))) == 1


def test_zero_impact_does_not_split_rows() -> None:
    b = PaperBroker(FIXED.model_copy(update={"impact_bps_per_size": 0.0}))
    b.submit(order(qty=3.0), T0)
    (f,) = fills(b.on_quote(quote(ms(40), ask_size=1.0)))
    assert (f.qty, f.price) == (3.0, 100.0)


# ---------------------------------------------------------------- limit orders


def test_resting_buy_limit_needs_the_ask_strictly_below_it() -> None:
    b = PaperBroker(FIXED)
    b.submit(order(qty=0.5, limit=100.0), T0)
    assert b.on_quote(quote(ms(40), ask=100.5)) == []  # arrives, not marketable: rests
    assert b.on_quote(quote(ms(50), bid=99.0, ask=100.0)) == []  # at the limit: not through
    events = b.on_quote(quote(ms(60), bid=99.0, ask=99.99))  # one tick through
    (f,) = fills(events)
    assert (f.price, f.qty, f.liquidity) == (100.0, 0.5, Liquidity.MAKER)  # at the limit, not 99.99
    assert f.fee == pytest.approx(0.5 * 100.0 * 0.0002)
    assert updates(events)[0].status is OrderStatus.FILLED


def test_resting_sell_limit_needs_the_bid_strictly_above_it() -> None:
    b = PaperBroker(FIXED)
    b.submit(order(side=Side.SELL, qty=0.5, limit=100.0), T0)
    # It comes to rest inside the spread (nobody ahead of it), as the buy above does.
    assert b.on_quote(quote(ms(40), bid=99.5, ask=100.5)) == []
    assert b.on_quote(quote(ms(50), bid=100.0, ask=100.1)) == []
    (f,) = fills(b.on_quote(quote(ms(60), bid=100.01, ask=100.1)))
    assert (f.price, f.liquidity) == (100.0, Liquidity.MAKER)


def test_resting_limit_fills_partially_by_displayed_size() -> None:
    b = PaperBroker(FIXED)
    b.submit(order(qty=2.5, limit=100.0), T0)
    b.on_quote(quote(ms(40), ask=101.0))
    seen = []
    for i, size in enumerate([1.0, 1.0, 1.0]):
        events = b.on_quote(quote(ms(50 + i), ask=99.0, ask_size=size))
        seen += [(f.qty, u.status) for f, u in zip(fills(events), updates(events), strict=True)]
    assert seen == [
        (1.0, OrderStatus.PARTIALLY_FILLED),
        (1.0, OrderStatus.PARTIALLY_FILLED),
        (0.5, OrderStatus.FILLED),
    ]
    assert b.open_orders() == []


def test_a_limit_placed_before_arrival_does_not_fill_on_an_earlier_quote() -> None:
    b = PaperBroker(FIXED)
    b.submit(order(limit=100.0), T0)
    assert b.on_quote(quote(ms(10), ask=95.0)) == []
    (f,) = fills(b.on_quote(quote(ms(40), ask=99.0)))  # marketable at arrival: taker at the ask
    assert (f.price, f.liquidity) == (99.0, Liquidity.TAKER)


def test_marketable_limit_takes_within_its_limit_and_rests_the_rest() -> None:
    b = PaperBroker(FIXED)
    b.submit(order(qty=3.0, limit=100.06), T0)
    events = b.on_quote(quote(ms(40), ask=100.0, ask_size=1.0))
    fs = fills(events)
    # Level 0 at 100, level 1 at 100.05; level 2 (100.10) is beyond the limit.
    assert [(f.qty, f.price, f.liquidity) for f in fs] == [
        (1.0, 100.0, Liquidity.TAKER),
        (1.0, pytest.approx(100.05), Liquidity.TAKER),
    ]
    assert updates(events)[-1].status is OrderStatus.PARTIALLY_FILLED
    (rest,) = b.open_orders()
    assert rest.remaining == pytest.approx(1.0)
    # The remainder rests: the ask at the limit is not enough, one through fills it as maker.
    assert b.on_quote(quote(ms(50), ask=100.06)) == []
    (f,) = fills(b.on_quote(quote(ms(60), ask=100.05)))
    assert (f.qty, f.price, f.liquidity) == (pytest.approx(1.0), 100.06, Liquidity.MAKER)
    assert f.fill_id == "o1-3"


def test_buy_limit_at_the_ask_on_arrival_is_marketable() -> None:
    b = PaperBroker(FIXED)
    b.submit(order(limit=100.0), T0)
    (f,) = fills(b.on_quote(quote(ms(40), ask=100.0)))
    assert (f.price, f.liquidity) == (100.0, Liquidity.TAKER)


def test_fee_rate_maker_vs_taker() -> None:
    b = PaperBroker(FIXED)
    assert b.fee_rate(Liquidity.TAKER) == pytest.approx(0.001)
    assert b.fee_rate(Liquidity.MAKER) == pytest.approx(0.0002)


# ---------------------------------------------------------------- commands


def test_cancel_in_flight_and_resting_orders() -> None:
    b = PaperBroker(FIXED)
    b.submit(order("a"), T0)
    b.submit(order("b", limit=90.0), T0)
    (u,) = b.cancel("a", ms(10))
    assert (u.order.status, u.ts, u.order.ts_updated) == (OrderStatus.CANCELED, ms(10), ms(10))
    assert b.on_quote(quote(ms(40))) == []  # "a" never arrives; "b" rests
    assert [o.client_order_id for o in b.open_orders()] == ["b"]
    (u,) = b.cancel("b", ms(45))
    assert u.order.status is OrderStatus.CANCELED
    assert b.on_quote(quote(ms(50), ask=80.0)) == []
    assert b.open_orders() == []
    assert b.cancel("b", ms(60)) == []  # already canceled
    assert b.cancel("nope", ms(60)) == []


def test_cancel_after_fill_changes_nothing() -> None:
    b = PaperBroker(FIXED)
    b.submit(order(), T0)
    b.on_quote(quote(ms(40)))
    assert b.cancel("o1", ms(50)) == []


def test_duplicate_client_order_id_is_rejected_and_never_trades_twice() -> None:
    b = PaperBroker(FIXED)
    b.submit(order("x", qty=1.0), T0)
    (dup,) = b.submit(order("x", qty=5.0), T0 + 1)
    assert dup.order.status is OrderStatus.REJECTED
    assert dup.order.reason == DUPLICATE_ID == "duplicate client order id"
    assert len(b.open_orders()) == 1
    fs = fills(b.on_quote(quote(ms(50), ask_size=10.0)))
    assert sum(f.qty for f in fs) == 1.0
    # Even once the first is finished, the id stays taken.
    (again,) = b.submit(order("x"), ms(60))
    assert again.order.status is OrderStatus.REJECTED
    assert b.open_orders() == []


def test_submit_does_not_mutate_the_callers_order() -> None:
    b = PaperBroker(FIXED)
    mine = order()
    b.submit(mine, T0)
    b.on_quote(quote(ms(40)))
    assert (mine.status, mine.filled_qty) == (OrderStatus.PENDING_NEW, 0.0)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (order(qty=0.0), "quantity must be positive"),
        (order(qty=float("nan")), "quantity must be positive"),
        (order(limit=-1.0), "limit order needs a positive limit price"),
    ],
)
def test_invalid_orders_are_rejected(bad: Order, reason: str) -> None:
    (u,) = PaperBroker(FIXED).submit(bad, T0)
    assert (u.order.status, u.order.reason) == (OrderStatus.REJECTED, reason)


# ---------------------------------------------------------------- determinism and latency


def _script(broker: PaperBroker) -> list[OrderUpdate | Fill]:
    out: list[OrderUpdate | Fill] = []
    for i in range(30):
        side = Side.BUY if i % 3 else Side.SELL
        limit = None if i % 2 else 100.0 + (i % 5 - 2) * 0.1
        out += broker.submit(order(f"o{i}", side=side, qty=0.3 + i * 0.1, limit=limit), ms(i * 5))
    for k in range(200):
        px = 100.0 + ((k * 37) % 11 - 5) * 0.05
        out += broker.on_quote(quote(ms(k * 2), bid=px - 0.05, ask=px, bid_size=0.7, ask_size=0.9))
    return out


def test_same_seed_gives_identical_fills() -> None:
    cfg = PaperBrokerConfig(seed=11)
    a, b = _script(PaperBroker(cfg)), _script(PaperBroker(cfg))
    assert fills(a), "the script should produce fills"
    assert a == b


def test_different_seed_gives_different_latencies() -> None:
    a, b = PaperBroker(PaperBrokerConfig(seed=1)), PaperBroker(PaperBrokerConfig(seed=2))
    for i in range(5):
        a.submit(order(f"o{i}"), T0)
        b.submit(order(f"o{i}"), T0)
    lat_a = [a.arrival_time(f"o{i}") for i in range(5)]
    lat_b = [b.arrival_time(f"o{i}") for i in range(5)]
    assert lat_a != lat_b


def test_latency_is_lognormal_around_the_median() -> None:
    b = PaperBroker(PaperBrokerConfig(latency_median_ms=40.0, latency_sigma=0.5, seed=3))
    for i in range(2001):
        b.submit(order(f"o{i}"), T0)
    lat = [(b.arrival_time(f"o{i}") - T0) / NS_PER_MS for i in range(2001)]
    assert all(x > 0 for x in lat)
    assert statistics.median(lat) == pytest.approx(40.0, rel=0.1)
    assert max(lat) > 2 * 40.0  # a fat right tail, not a constant


# ---------------------------------------------------------------- restart


def test_restore_reregisters_open_orders_and_keeps_ids_unique() -> None:
    a = PaperBroker(FIXED)
    a.submit(order("lim", qty=2.0, limit=100.0), T0)
    a.submit(order("done"), T0)
    a.on_quote(quote(ms(40), ask=100.5))  # "done" fills; "lim" rests
    first = fills(a.on_quote(quote(ms(50), ask=99.0, ask_size=1.0)))  # "lim" half filled
    assert [f.fill_id for f in first] == ["lim-1"]
    snapshot = a.open_orders()
    assert [(o.client_order_id, o.filled_qty) for o in snapshot] == [("lim", 1.0)]

    done = order("done")
    done.status = OrderStatus.FILLED
    b = PaperBroker(FIXED)
    b.restore([*snapshot, done], ms(100))
    assert b.open_orders() == snapshot
    assert b.arrival_time("lim") == ms(100)
    assert b.on_quote(quote(ms(99), ask=90.0)) == []  # not yet re-arrived
    events = b.on_quote(quote(ms(100), ask=100.5))  # arrival: not marketable, rests
    assert events == []
    events = b.on_quote(quote(ms(110), ask=99.0, ask_size=5.0))
    (f,) = fills(events)
    assert (f.qty, f.price, f.liquidity) == (1.0, 100.0, Liquidity.MAKER)
    assert f.fill_id != "lim-1" and f.fill_id.startswith("lim-")
    final = updates(events)[-1]
    assert (final.status, final.filled_qty, final.avg_fill_price) == (
        OrderStatus.FILLED,
        2.0,
        100.0,
    )
    # Restored and passed ids are taken: no second order with either id.
    assert b.submit(order("lim"), ms(120))[0].order.status is OrderStatus.REJECTED
    assert b.submit(order("done"), ms(120))[0].order.status is OrderStatus.REJECTED


def test_restore_skips_terminal_orders() -> None:
    b = PaperBroker(FIXED)
    dead = order("dead")
    dead.status = OrderStatus.FILLED
    b.restore([dead], T0)
    assert b.open_orders() == []
    assert b.submit(order("dead"), T0)[0].order.status is OrderStatus.REJECTED


# ---------------------------------------------------------------- never flattering (property)

_order_st = st.tuples(
    st.sampled_from([Side.BUY, Side.SELL]),
    st.floats(min_value=0.01, max_value=5.0),
    st.one_of(st.none(), st.floats(min_value=98.0, max_value=102.0)),
    st.integers(min_value=0, max_value=200),  # submit time, ms
)
_quote_st = st.tuples(
    st.floats(min_value=98.0, max_value=102.0),  # mid
    st.floats(min_value=0.01, max_value=0.5),  # spread
    st.floats(min_value=0.1, max_value=3.0),  # bid size
    st.floats(min_value=0.1, max_value=3.0),  # ask size
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_order_st, min_size=1, max_size=8),
    st.lists(_quote_st, min_size=1, max_size=40),
    st.integers(min_value=0, max_value=2**32),
)
def test_fills_never_beat_the_far_side_or_the_limit(
    orders: list[tuple[Side, float, float | None, int]],
    quotes: list[tuple[float, float, float, float]],
    seed: int,
) -> None:
    b = PaperBroker(FIXED.model_copy(update={"latency_sigma": 0.5, "seed": seed}))
    submitted: dict[str, Order] = {}
    arrival: dict[str, int] = {}
    for i, (side, qty, limit, t) in enumerate(sorted(orders, key=lambda o: o[3])):
        o = order(f"o{i}", side=side, qty=qty, limit=limit)
        b.submit(o, ms(t))
        submitted[o.client_order_id] = o
        arrival[o.client_order_id] = b.arrival_time(o.client_order_id)
    filled = dict.fromkeys(submitted, 0.0)
    for k, (mid, spread, bid_size, ask_size) in enumerate(quotes):
        q = quote(ms(k * 10), mid - spread / 2, mid + spread / 2, bid_size, ask_size)
        maker = {Side.BUY: 0.0, Side.SELL: 0.0}
        for e in b.on_quote(q):
            if isinstance(e, OrderUpdate):
                o = e.order
                assert o.filled_qty <= o.qty
                assert (o.status is OrderStatus.FILLED) == (o.filled_qty == o.qty)
                continue
            src = submitted[e.client_order_id]
            assert q.ts_exchange >= arrival[e.client_order_id]  # no fill while in flight
            buy = e.side is Side.BUY
            if e.liquidity is Liquidity.TAKER:
                assert e.price >= q.ask if buy else e.price <= q.bid  # never better than the touch
            else:
                assert e.price == src.limit_price
                assert q.ask < e.price if buy else q.bid > e.price  # traded through
                maker[e.side] += e.qty
            if src.limit_price is not None:
                assert e.price <= src.limit_price if buy else e.price >= src.limit_price
            filled[e.client_order_id] += e.qty
        assert maker[Side.BUY] <= ask_size * (1 + 1e-9)
        assert maker[Side.SELL] <= bid_size * (1 + 1e-9)
    for coid, qty in filled.items():
        assert qty <= submitted[coid].qty * (1 + 1e-9)


@pytest.mark.parametrize(
    "bad",
    [
        {"ask": float("nan")},
        {"bid": float("nan"), "ask": float("nan")},
        {"ask": float("inf")},
        {"bid": 101.0, "ask": 100.0},  # crossed
        {"bid": 0.0},
        {"ask": -100.0},
        {"ask_size": float("nan")},
        {"ask_size": 0.0},
        {"bid_size": float("inf")},
    ],
)
def test_untradable_quote_fills_nothing_and_the_order_waits(bad: dict[str, float]) -> None:
    """The engine validates quotes first; the broker still never trades against a book that
    is not finite, positive and uncrossed: the order fills at the next good quote."""
    b = PaperBroker(FIXED)
    b.submit(order(side=Side.BUY, qty=0.5), T0)
    assert b.on_quote(quote(ms(40), **bad)) == []
    (f,) = fills(b.on_quote(quote(ms(41), ask=100.5)))
    assert (f.qty, f.price, f.ts) == (0.5, 100.5, ms(41))


def test_no_fill_at_an_impact_price_that_overflows() -> None:
    """Walking the impact levels of an absurd (but finite) touch stops before a price of inf."""
    b = PaperBroker(FIXED)
    b.submit(order(side=Side.BUY, qty=3.0), T0)
    events = b.on_quote(quote(ms(40), bid=1.797e308, ask=1.797e308, ask_size=1.0))
    assert all(0 < f.price < float("inf") for f in fills(events))
    assert sum(f.qty for f in fills(events)) < 3.0


def test_a_restored_partial_fill_finishes_once_when_the_walk_leaves_a_crumb() -> None:
    """A market order half filled before a restart, then filled by a touch that leaves less
    than the walk's dust of what was left but more than the order's own: the last crumb is
    not a second fill of a finished order (on main the broker raised IllegalTransition out of
    on_quote, which stops the engine)."""
    b = PaperBroker(FIXED)
    half = order(qty=1.0)
    half.status = OrderStatus.PARTIALLY_FILLED
    half.filled_qty = 0.5
    half.avg_fill_price = 100.0
    b.restore([half], T0)
    events = b.on_quote(quote(T0, ask_size=0.5 - 7e-13))
    finished = updates(events)
    assert [o.status for o in finished][-1] is OrderStatus.FILLED
    assert sum(o.status is OrderStatus.FILLED for o in finished) == 1
    assert finished[-1].filled_qty == 1.0
    assert b.open_orders() == []
