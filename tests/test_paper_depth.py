"""Paper market orders walk the live L2 book (PaperBroker.on_depth), and the feed keeps it.

Level boundaries, the extrapolation past the depth a feed gives, stale or bad depth falling
back to the L1 model, the walk's VWAP as a property, and on the real Binance BTCUSDT capture:
the walk of a ccxt-sized book (top 20 levels) against the walk of the whole 1000-level book.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import PaperBrokerConfig
from engine.marketdata.validate import (
    CROSSED_BOOK,
    EMPTY_SIDE,
    NON_POSITIVE_SIZE,
    NOT_FINITE,
    UNSORTED_LEVELS,
)
from engine.paper_broker import DEPTH_EXHAUSTED, PaperBroker
from engine.types import NS_PER_MS, Fill, OrderStatus, Quote, Side
from engine.venues.ccxt_market import CcxtMarketFeed
from engine.venues.orderbook import APPLIED, BookSync
from tests.conftest import DEPTH_SNAPSHOT_JSON, DEPTH_UPDATES_JSON
from tests.test_paper_broker import SYM, fills, ms, order, updates
from tests.test_venues_support import FakeClock

# Latency fixed at 40 ms; the L1 model is the calibrated default (0.8 bps per level of at
# least 200,000 USDT), so an L1 fill is easy to tell from a book fill at these small sizes.
CFG = PaperBrokerConfig(latency_sigma=0.0)
# The property test's example count; raise it for a longer hunt.
EXAMPLES = int(os.environ.get("PAPER_DEPTH_EXAMPLES", "200"))
ASKS = [(100.0, 1.0), (101.0, 2.0), (102.0, 3.0)]
BIDS = [(99.0, 1.0), (98.0, 2.0), (97.0, 3.0)]


def book_quote(ts: int, bids: list[Any] = BIDS, asks: list[Any] = ASKS) -> Quote:
    """The quote a "book" feed makes: the top of the same book."""
    return Quote(SYM, bids[0][0], asks[0][0], bids[0][1], asks[0][1], ts, ts)


_IDS = itertools.count()


def take(broker: PaperBroker, side: Side, qty: float, quote: Quote) -> list[Fill]:
    """Submit a market order 40 ms before ``quote`` and fill it there."""
    broker.submit(order(f"o{next(_IDS)}", side, qty), quote.ts_exchange - 40 * NS_PER_MS)
    return fills(broker.on_quote(quote))


def rows(fs: list[Fill]) -> list[tuple[float, float]]:
    return [(pytest.approx(f.qty), pytest.approx(f.price)) for f in fs]


def vwap(fs: list[Fill]) -> float:
    return sum(f.qty * f.price for f in fs) / sum(f.qty for f in fs)


# ---------------------------------------------------------------------- level boundaries


def test_the_size_of_level_one_fills_at_level_one_and_a_hair_more_reaches_level_two() -> None:
    b = PaperBroker(CFG)
    assert b.on_depth(SYM, BIDS, ASKS, ms(40))
    assert rows(take(b, Side.BUY, 1.0, book_quote(ms(40)))) == [(1.0, 100.0)]
    b = PaperBroker(CFG)
    b.on_depth(SYM, BIDS, ASKS, ms(40))
    assert rows(take(b, Side.BUY, 1.000001, book_quote(ms(40)))) == [(1.0, 100.0), (1e-6, 101.0)]
    # Sells mirror it: exactly levels 1 and 2 (3.0) stop at 98; a hair more reaches 97.
    b = PaperBroker(CFG)
    b.on_depth(SYM, BIDS, ASKS, ms(40))
    assert rows(take(b, Side.SELL, 3.0, book_quote(ms(40)))) == [(1.0, 99.0), (2.0, 98.0)]
    b = PaperBroker(CFG)
    b.on_depth(SYM, BIDS, ASKS, ms(40))
    assert rows(take(b, Side.SELL, 3.000001, book_quote(ms(40)))) == [
        (1.0, 99.0),
        (2.0, 98.0),
        (1e-6, 97.0),
    ]


def test_the_quote_is_the_touch_and_the_depth_supplies_the_levels_beyond_it() -> None:
    """A quote newer than the depth: its ask (100.5, 0.5) is level 0, and the depth's levels at
    or below it (100) are gone; only the depth strictly beyond the touch is walked."""
    b = PaperBroker(CFG)
    b.on_depth(SYM, BIDS, ASKS, ms(30))
    q = Quote(SYM, 99.0, 100.5, 1.0, 0.5, ms(40), ms(40))
    assert rows(take(b, Side.BUY, 1.5, q)) == [(0.5, 100.5), (1.0, 101.0)]


def test_the_expected_slippage_walks_what_the_fill_walks() -> None:
    q = book_quote(ms(40))
    for qty in (0.5, 1.0, 2.5, 6.0, 20.0):
        # A broker each: a quote one take walked is not a fresh book to the next (the paper
        # venue continues a quote it already showed: its size is taken once).
        b = PaperBroker(CFG)
        b.on_depth(SYM, BIDS, ASKS, ms(40))
        bps = b.expected_slippage_bps(Side.BUY, qty, q)
        expected = q.mid * (1 + bps * 1e-4)
        assert vwap(take(b, Side.BUY, qty, q)) == pytest.approx(expected, rel=1e-12)


def test_a_marketable_limit_walks_the_book_up_to_its_price_and_rests_the_rest() -> None:
    b = PaperBroker(CFG)
    b.on_depth(SYM, BIDS, ASKS, ms(40))
    b.submit(order("lim", Side.BUY, 5.0, limit=101.0), ms(0))
    events = b.on_quote(book_quote(ms(40)))
    assert rows(fills(events)) == [(1.0, 100.0), (2.0, 101.0)]
    assert updates(events)[-1].status is OrderStatus.PARTIALLY_FILLED


def test_two_orders_on_one_quote_share_the_book() -> None:
    b = PaperBroker(CFG)
    b.on_depth(SYM, BIDS, ASKS, ms(40))
    b.submit(order("a", Side.BUY, 2.0), ms(0))
    b.submit(order("b", Side.BUY, 2.0), ms(0))
    fs = fills(b.on_quote(book_quote(ms(40))))
    assert [(f.client_order_id, f.qty, f.price) for f in fs] == [
        ("a", 1.0, 100.0),
        ("a", 1.0, 101.0),
        ("b", 1.0, 101.0),
        ("b", 1.0, 102.0),
    ]


# ---------------------------------------------------------------------- extrapolation


def test_past_the_given_depth_the_book_continues_at_its_visible_density() -> None:
    """Three visible levels of 1.0, 1.0 apart: further levels of 1.0 at 103, 104, ... so 2.0
    past the last level costs (103 + 104) / 2 = 103.5, in one row."""
    asks = [(100.0, 1.0), (101.0, 1.0), (102.0, 1.0)]
    bids = [(99.0, 1.0), (98.0, 1.0), (97.0, 1.0)]
    b = PaperBroker(CFG)
    b.on_depth(SYM, bids, asks, ms(40))
    q = book_quote(ms(40), bids, asks)
    assert rows(take(b, Side.BUY, 5.0, q)) == [(1, 100), (1, 101), (1, 102), (2.0, 103.5)]
    b.on_depth(SYM, bids, asks, ms(40))
    assert rows(take(b, Side.SELL, 4.0, q)) == [(1, 99), (1, 98), (1, 97), (1.0, 96.0)]


def test_the_extrapolation_stops_at_max_levels_times_the_visible_size() -> None:
    asks = [(100.0, 1.0), (101.0, 1.0), (102.0, 1.0)]
    b = PaperBroker(CFG)
    b.max_levels = 2  # at most 2 x 3.0 extrapolated
    b.on_depth(SYM, BIDS, asks, ms(40))
    q = book_quote(ms(40), BIDS, asks)
    assert b.expected_slippage_bps(Side.BUY, 9.0, q) < math.inf
    assert b.expected_slippage_bps(Side.BUY, 9.001, q) == math.inf
    b.submit(order("big", Side.BUY, 10.0), ms(0))
    events = b.on_quote(q)
    assert sum(f.qty for f in fills(events)) == pytest.approx(9.0)
    last = updates(events)[-1]
    assert last.status is OrderStatus.CANCELED and last.reason == DEPTH_EXHAUSTED


# ---------------------------------------------------------------------- fall back to L1


def l1_rows(qty: float, q: Quote) -> list[tuple[float, float]]:
    return rows(take(PaperBroker(CFG), Side.BUY, qty, q))


def test_depth_older_than_depth_max_age_falls_back_to_the_l1_model() -> None:
    q = book_quote(ms(1040))
    b = PaperBroker(CFG)
    b.on_depth(SYM, BIDS, ASKS, ms(40))  # exactly 1000 ms before the quote: still fresh
    assert rows(take(b, Side.BUY, 2.0, q)) == [(1.0, 100.0), (1.0, 101.0)]
    b = PaperBroker(CFG)
    b.on_depth(SYM, BIDS, ASKS, ms(40) - 1)  # 1 ns more: stale
    got = rows(take(b, Side.BUY, 2.0, q))
    assert got == l1_rows(2.0, q) and got[1][1] == pytest.approx(100.0 * 1.00008)


BAD_BOOKS = [
    ([(99.0, 1.0)], [(99.0, 1.0), (101.0, 1.0)], CROSSED_BOOK),  # locked
    ([(99.5, 1.0)], [(99.0, 1.0), (101.0, 1.0)], CROSSED_BOOK),
    ([(99.0, 1.0)], [(100.0, 1.0), (math.nan, 1.0)], NOT_FINITE),
    ([(99.0, 1.0)], [(100.0, 1.0), (101.0, math.inf)], NOT_FINITE),
    ([(99.0, 1.0)], [(100.0, 1.0), (101.0, 0.0)], NON_POSITIVE_SIZE),
    ([(99.0, 1.0)], [(100.0, 1.0), (100.0, 1.0)], UNSORTED_LEVELS),
    ([(99.0, 1.0), (99.5, 1.0)], [(100.0, 1.0)], UNSORTED_LEVELS),
    ([], [(100.0, 1.0)], EMPTY_SIDE),
]


@pytest.mark.parametrize(("bids", "asks", "code"), BAD_BOOKS)
def test_a_bad_book_is_refused_counted_and_forgets_the_last_good_one(
    bids: list[Any], asks: list[Any], code: str
) -> None:
    q = book_quote(ms(40))
    b = PaperBroker(CFG)
    assert b.on_depth(SYM, BIDS, ASKS, ms(30))
    assert not b.on_depth(SYM, bids, asks, ms(35))
    assert b.depth_rejects == {code: 1}
    assert rows(take(b, Side.BUY, 2.0, q)) == l1_rows(2.0, q)


def test_depth_from_the_past_is_refused_and_the_newer_book_kept() -> None:
    b = PaperBroker(CFG)
    assert b.on_depth(SYM, BIDS, ASKS, ms(40))
    assert not b.on_depth(SYM, BIDS, [(100.0, 1.0), (150.0, 9.0)], ms(39))
    assert b.depth_rejects == {"time_backwards": 1}
    assert rows(take(b, Side.BUY, 2.0, book_quote(ms(40)))) == [(1.0, 100.0), (1.0, 101.0)]


def test_dropped_depth_and_depth_with_nothing_past_the_touch_use_the_l1_model() -> None:
    q = book_quote(ms(40))
    b = PaperBroker(CFG)
    b.on_depth(SYM, BIDS, ASKS, ms(40))
    b.drop_depth(SYM)
    assert rows(take(b, Side.BUY, 2.0, q)) == l1_rows(2.0, q)
    b = PaperBroker(CFG)  # (a fresh venue: the quote above was taken from already)
    b.on_depth(SYM, BIDS, [(100.0, 1.0)], ms(40))  # nothing beyond the touch to walk
    assert rows(take(b, Side.BUY, 2.0, q)) == l1_rows(2.0, q)


def test_the_l1_model_levels_hold_at_least_the_level_notional() -> None:
    """0.8 bps per level, each at least 200,000 USDT deep: at 100, one level is 2,000 units."""
    q = book_quote(ms(40))
    assert l1_rows(2001.0, q) == [(1.0, 100.0), (2000.0, 100.008)]
    assert l1_rows(2001.5, q)[-1] == (pytest.approx(0.5), pytest.approx(100.016))


# ---------------------------------------------------------------------- property


@st.composite
def books(draw: Any) -> tuple[list[tuple[float, float]], list[tuple[float, float]], int]:
    n = draw(st.integers(1, 12))
    gaps = draw(st.lists(st.floats(0.01, 5.0), min_size=n, max_size=n))
    sizes = draw(st.lists(st.floats(0.001, 50.0), min_size=n, max_size=n))
    best_ask = draw(st.floats(1.0, 1e5))
    asks, bids, price = [], [], best_ask
    for gap, size in zip(gaps, sizes, strict=True):
        asks.append((price, size))
        price += gap
    price = best_ask - draw(st.floats(0.01, 0.5))
    for gap, size in zip(gaps, sizes, strict=True):
        if price <= 0:
            break
        bids.append((price, size))
        price -= gap
    return bids, asks, draw(st.integers(1, n))


@settings(max_examples=EXAMPLES, deadline=None)
@given(books(), st.lists(st.floats(1e-4, 500.0), min_size=2, max_size=6))
def test_a_walked_buy_costs_at_least_the_ask_and_more_the_more_it_buys(
    book: tuple[list[Any], list[Any], int], sizes: list[float]
) -> None:
    bids, asks, shown = book
    b = PaperBroker(CFG)
    assert b.on_depth(SYM, bids[:shown], asks[:shown], ms(40))
    q = book_quote(ms(40), bids, asks)
    for side, sign in ((Side.BUY, 1), (Side.SELL, -1)):
        prices = []
        for qty in sorted(sizes):
            bps = b.expected_slippage_bps(side, qty, q)
            if bps == math.inf:  # beyond the extrapolation: so is every larger size
                break
            prices.append(q.mid * (1 + sign * bps * 1e-4))
        touch = q.ask if side is Side.BUY else q.bid
        tol = 1e-9 * touch
        assert all(sign * (p - touch) >= -tol for p in prices)  # never better than the touch
        # monotone in size
        assert all(sign * (b2 - b1) >= -tol for b1, b2 in itertools.pairwise(prices))


# ---------------------------------------------------------------------- the real book


@cache
def real_books(every: int = 7) -> list[tuple[Quote, list[Any], list[Any]]]:
    """The Binance capture's book, rebuilt from its snapshot and diffs, every ``every`` diffs."""
    snapshot = json.loads(Path(DEPTH_SNAPSHOT_JSON).read_text())
    sync = BookSync(SYM)
    out = []
    for i, msg in enumerate(json.loads(Path(DEPTH_UPDATES_JSON).read_text())):
        if sync.needs_snapshot:
            sync.on_diff(msg)
            if msg["data"]["u"] > snapshot["lastUpdateId"]:
                sync.on_snapshot(snapshot)
            continue
        assert sync.on_diff(msg) == APPLIED
        if i % every == 0:
            bids, asks = sync.book.bids(), sync.book.asks()
            ts = msg["local_ts_ns"]
            quote = Quote(SYM, bids[0][0], asks[0][0], bids[0][1], asks[0][1], ts, ts)
            out.append((quote, bids, asks))
    return out


def walk(levels: list[tuple[float, float]], qty: float) -> float:
    left, cost = qty, 0.0
    for price, size in levels:
        cost += min(left, size) * price
        left -= min(left, size)
        if left <= 0:
            return cost / qty
    raise AssertionError("the real book is thinner than the order")


@pytest.mark.parametrize("qty", [0.5, 5.0, 20.0])
def test_on_the_real_book_the_walk_matches_the_full_book_walk(qty: float) -> None:
    """The whole book walked by the broker is the book walk; the top 20 levels (what a ccxt
    book stream gives by default), extrapolated, stay within 2 bps median and 10 bps p90."""
    full, top20 = PaperBroker(CFG), PaperBroker(CFG)
    errors: dict[Side, list[float]] = {Side.BUY: [], Side.SELL: []}
    for quote, bids, asks in real_books():
        ts = quote.ts_exchange
        full.on_depth(SYM, bids, asks, ts)
        top20.on_depth(SYM, bids[:20], asks[:20], ts)
        for side in (Side.BUY, Side.SELL):
            truth = walk(asks if side is Side.BUY else bids, qty)
            exact = full.expected_slippage_bps(side, qty, quote)
            assert quote.mid * (1 + side.sign * exact * 1e-4) == pytest.approx(truth, rel=1e-12)
            bps = top20.expected_slippage_bps(side, qty, quote)
            got = quote.mid * (1 + side.sign * bps * 1e-4)
            errors[side].append(abs(got - truth) / truth * 1e4)
    for errs in errors.values():
        assert len(errs) > 400
        assert statistics.median(errs) <= 2.0
        assert sorted(errs)[math.ceil(0.9 * len(errs)) - 1] <= 10.0


# ---------------------------------------------------------------------- the feed keeps depth


def _book(bids: list[Any], asks: list[Any], ts_ms: int) -> dict[str, Any]:
    return {"symbol": SYM, "bids": bids, "asks": asks, "timestamp": ts_ms, "nonce": 1}


def test_a_book_feed_keeps_the_latest_valid_depth_for_the_paper_broker() -> None:
    t0_ms = 1_723_161_600_000
    clock = FakeClock(t0_ms * 1_000_000)
    ex = type("Ex", (), {"id": "fake", "has": {}, "rateLimit": 50})()
    feed = CcxtMarketFeed(
        "fake", ex, [SYM], source="book", transport="poll", book_depth=2, clock_ns=clock.time_ns
    )
    assert feed.depth(SYM) is None  # nothing yet
    deep = [[100.0, 1.0], [101.0, 2.0], [102.0, 3.0]]
    quote = feed.accept(SYM, _book([[99.0, 1.0], [98.0, 2.0]], deep, t0_ms))
    assert quote is not None
    depth = feed.depth(SYM)
    assert depth is not None
    assert depth.asks == [(100.0, 1.0), (101.0, 2.0)]  # book_depth levels, as floats
    assert depth.bids == [(99.0, 1.0), (98.0, 2.0)] and depth.ts_ns == quote.ts_exchange
    # What the engine does with it: hand it to the broker before the quote.
    broker = PaperBroker(CFG)
    assert broker.on_depth(SYM, depth.bids, depth.asks, depth.ts_ns)
    assert broker.expected_slippage_bps(Side.BUY, 2.0, quote) == pytest.approx(
        (100.5 - 99.5) / 99.5 * 1e4
    )
    # A book whose deeper levels are bad: the quote (its top) still counts, the depth is gone.
    clock.ns += 1_000_000
    bad = _book([[99.0, 1.0], [99.0, 2.0]], deep, t0_ms + 1)
    assert feed.accept(SYM, bad) is not None
    assert feed.depth(SYM) is None and feed.depth_rejects == {UNSORTED_LEVELS: 1}
    assert feed.accept(SYM, _book([[99.0, 1.0]], deep, t0_ms + 2)) is not None
    assert feed.depth(SYM) is not None
    # Silence past stale_after_s: the symbol is unsynced and its depth is not handed out.
    clock.ns += 6 * 1_000_000_000
    assert feed.depth(SYM) is None


def test_a_ticker_feed_has_no_depth() -> None:
    clock = FakeClock()
    ex = type("Ex", (), {"id": "fake", "has": {}, "rateLimit": 50})()
    feed = CcxtMarketFeed("fake", ex, [SYM], transport="poll", clock_ns=clock.time_ns)
    tick = {"symbol": SYM, "bid": 99.0, "ask": 100.0, "bidVolume": 1.0, "askVolume": 1.0}
    assert feed.accept(SYM, tick) is not None
    assert feed.depth(SYM) is None
