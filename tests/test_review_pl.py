"""Adversarial review of paper trading on live prices (review-pl): the README's "Paper trading on
live prices", docs/marketdata.md, and the paper broker's fills from the live L2 book.

Each test pins a hole found by attacking a promise literally, and failed before its fix. The
venues are ccxt.pro's real exchange classes speaking their real protocol to a loopback websocket
(``tests.test_venues_ws``), REST answered from recorded bodies; nothing touches the network.

Attacks that held (no test here, or covered by earlier tests):

- two venues (binance, okx), okx silent past stale_after_s: its symbol's gate names okx and
  "stale", binance keeps trading; a kill at flatten then sells binance at once, and okx's
  flatten order waits NEW (not denied) and fills at okx's bid on its first fresh quote;
- NaN, inf, negative and zero prices or sizes, a crossed book, a wrong symbol, a stamp more
  than a minute ahead or older than stale_after_s, a replayed update id: refused and counted,
  the symbol never synced on them (tests/test_venues_ws.py, test_venues_feed.py);
- a deep L2 level that is NaN, zero, negative, out of order or twice: the whole depth is
  refused and paper orders use the L1 model (now also shown, see above);
- binance live diffs that go backwards (dropped) or skip (ccxt's ChecksumError: unsynced,
  resubscribed, a new snapshot); okx books (prevSeqId) and kucoin level2 (engine) likewise;
- a paper market order larger than the visible book: the levels fill at their prices, the
  extrapolation is one fill at its average price, the rest is cancelled "exceeds simulated
  depth" with the filled quantity on the order; a sell's extrapolation stops above 0;
- a resting limit: no fill when the market only touches its price, fills at its limit (never
  better) as maker once traded through, behind the size shown at its price;
- a market order in flight while its feed is down: no fill until the first fresh quote, with
  the book that came with it (the held one is never walked past depth_max_age_ms);
- a feed that drops every connection after one quote: redialled ever more slowly
  (tests/test_review_marketdata.py); the gap checks above redial through the same backoff.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from engine.marketdata.validate import CROSSED_BOOK
from engine.types import Quote
from engine.venues.ccxt_market import CcxtMarketFeed, binance_bridge_problem, build_feed
from engine.venues.ratelimit import Backoff
from tests.test_venues_support import FakeClock, RecordedHttp
from tests.test_venues_ws import LoopbackVenue, point_ws_at, rest_exchange, until, vconf

SYM = "BTC/USDT"


# ---------------------------------------------------------------------- binance's L2 book


def depth_diff(first: int, last: int, bids: Any = (), asks: Any = ()) -> dict[str, Any]:
    """A binance spot ``depthUpdate`` as the diff stream sends it."""
    return {
        "e": "depthUpdate",
        "E": time.time_ns() // 1_000_000,
        "s": "BTCUSDT",
        "U": first,
        "u": last,
        "b": [[f"{p}", f"{q}"] for p, q in bids],
        "a": [[f"{p}", f"{q}"] for p, q in asks],
    }


def depth_snapshot(last_update_id: int, bid_size: str) -> dict[str, Any]:
    """binance's REST ``/api/v3/depth`` answer."""
    return {
        "lastUpdateId": last_update_id,
        "bids": [["99.00", bid_size], ["98.00", "2.0"]],
        "asks": [["100.00", "1.0"], ["101.00", "2.0"]],
    }


async def _book_stream(
    venue: str, scripts: list[list[Any]]
) -> tuple[CcxtMarketFeed, LoopbackVenue, Any, Any]:
    """A venue's L2 book feed as paper-live.toml builds it, its loopback server (started), the
    server's address and the REST exchange."""
    rest, _ = await rest_exchange(venue)
    server = LoopbackVenue(venue, scripts)
    base = await server.start()
    feed = build_feed(
        venue,
        vconf(venue, quote_source="book", market_data="websocket"),
        "live",
        rest,
        [SYM],
        stale_after_s=60.0,
        max_spread_bps=500.0,
        backoff=lambda: Backoff(0.01, 0.02),
    )
    return feed, server, base, rest


async def binance_book_feed(
    scripts: list[list[Any]], snapshots: list[dict[str, Any]]
) -> tuple[CcxtMarketFeed, LoopbackVenue, Any]:
    """binance's book stream as the README's paper-live.toml builds it (`quote_source = "book"`
    streams ccxt.pro's watch_order_book: the depth diffs, and a REST snapshot on each
    subscription). The n-th snapshot is answered only once the n-th connection's script has
    been buffered by ccxt (its diffs arrived before the snapshot)."""
    feed, server, base, rest = await _book_stream("binance", scripts)
    pro = feed.exchange
    # ccxt tells binance's spot stream from its futures one by "/stream" in the URL.
    pro.urls["api"]["ws"]["spot"] = base + "/stream/ws"
    RecordedHttp(pro, "binance", [])  # any other REST call fails the test
    served = 0

    async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        nonlocal served
        assert "/api/v3/depth" in url, url
        n, served = served, served + 1
        want = sum(1 for step in scripts[n] if isinstance(step, dict)) if n < len(scripts) else 0
        await until(lambda: len(getattr(pro.orderbooks.get(SYM), "cache", [])) >= want)
        return snapshots[min(n, len(snapshots) - 1)]

    pro.fetch = fetch
    return feed, server, rest


async def first_quote(feed: CcxtMarketFeed) -> Quote:
    it = feed.quotes()
    try:
        return await asyncio.wait_for(it.__anext__(), 10.0)
    finally:
        await it.aclose()


L = 1000  # the first snapshot's lastUpdateId


@pytest.mark.parametrize(
    "buffered",
    [
        # The snapshot is older than every buffered diff (1001..1009 never came).
        [depth_diff(L + 10, L + 12, bids=[(99.0, 5.0)])],
        # The first diff bridges the snapshot, the next skips 1003..1006.
        [
            depth_diff(L - 2, L + 2, bids=[(99.0, 5.0)]),
            depth_diff(L + 7, L + 9, asks=[(100.0, 0.0)]),
        ],
    ],
    ids=["snapshot-older-than-the-diffs", "gap-inside-the-buffered-diffs"],
)
async def test_a_binance_snapshot_the_buffered_diffs_do_not_carry_on_is_never_quoted(
    buffered: list[dict[str, Any]],
) -> None:
    """ccxt.pro's binance skipped the buffered diffs that did not fit the snapshot and handed out
    the book anyway: synced, quoted (bid 99 x 1.0, though a diff had made it 5.0, or the ask
    at 100 the lost diff deleted still shown) and walked by paper market orders until the next
    live diff failed ccxt's check. Now the watch fails (InvalidNonce), the symbol stays
    unsynced, and the first quote is the book of a new subscription's snapshot."""
    feed, server, rest = await binance_book_feed(
        [buffered, []], [depth_snapshot(L, "1.0"), depth_snapshot(L + 500, "7.0")]
    )
    try:
        q = await first_quote(feed)
        assert len(server.subscriptions) >= 2  # subscribed again: a new snapshot
        assert q.bid_size == 7.0  # the new snapshot's, never the gapped one
        st = feed.state[SYM]
        assert st.errors >= 1 and "InvalidNonce" in st.last_error
        assert "sequence gap" in st.last_error
    finally:
        await feed.close()
        await rest.close()
        await server.stop()


async def test_buffered_diffs_that_carry_the_snapshot_on_give_its_book_at_once() -> None:
    """The boundary: the first buffered diff covers L + 1 exactly, the next follows on."""
    feed, server, rest = await binance_book_feed(
        [[depth_diff(L + 1, L + 2, bids=[(99.0, 5.0)]), depth_diff(L + 3, L + 3)]],
        [depth_snapshot(L, "1.0")],
    )
    try:
        q = await first_quote(feed)
        assert len(server.subscriptions) == 1 and feed.state[SYM].errors == 0
        assert (q.bid, q.bid_size) == (99.0, 5.0)  # the diff applied on the snapshot
    finally:
        await feed.close()
        await rest.close()
        await server.stop()


@pytest.mark.parametrize(
    ("cache", "gap"),
    [
        ([], False),
        ([(L - 5, L)], False),  # wholly in the snapshot: dropped
        ([(L + 1, L + 1)], False),
        ([(L + 2, L + 2)], True),  # 1001 is missing
        ([(L - 5, L), (L + 1, L + 4), (L + 5, L + 5)], False),
        ([(L + 1, L + 4), (L + 6, L + 6)], True),
        ([(L + 1, L + 4), (L + 4, L + 6)], True),  # overlaps: not the next update
    ],
)
def test_the_bridge_check_is_binances_procedure_to_the_update(
    cache: list[tuple[int, int]], gap: bool
) -> None:
    msgs = [{"U": a, "u": b} for a, b in cache]
    assert bool(binance_bridge_problem(L, msgs)) is gap


@pytest.mark.parametrize(
    ("cache", "gap"),
    [
        ([(L - 3, L + 2, L - 4)], False),  # U <= L <= u
        ([(L + 1, L + 2, L)], False),  # follows the snapshot's own update (pu == L)
        ([(L + 2, L + 3, L + 1)], True),
        ([(L - 3, L + 2, L - 4), (L + 5, L + 9, L + 2)], False),  # pu links them
        ([(L - 3, L + 2, L - 4), (L + 5, L + 9, L + 3)], True),
    ],
)
def test_the_bridge_check_follows_pu_on_binance_futures(
    cache: list[tuple[int, int, int]], gap: bool
) -> None:
    msgs = [{"U": a, "u": b, "pu": p} for a, b, p in cache]
    assert bool(binance_bridge_problem(L, msgs)) is gap


# ---------------------------------------------------------------------- bybit's L2 book


def bybit_book(kind: str, u: int, bids: Any = (), asks: Any = ()) -> dict[str, Any]:
    """A bybit v5 ``orderbook.50`` message (a snapshot or a delta), stamped now."""
    ts = time.time_ns() // 1_000_000
    return {
        "topic": "orderbook.50.BTCUSDT",
        "type": kind,
        "ts": ts,
        "data": {
            "s": "BTCUSDT",
            "b": [[f"{p}", f"{q}"] for p, q in bids],
            "a": [[f"{p}", f"{q}"] for p, q in asks],
            "u": u,
            "seq": 7961638724 + u,
        },
        "cts": ts - 1,
    }


async def bybit_book_feed(scripts: list[list[Any]]) -> tuple[CcxtMarketFeed, LoopbackVenue, Any]:
    feed, server, base, rest = await _book_stream("bybit", scripts)
    point_ws_at(feed.exchange, "bybit", base)
    RecordedHttp(feed.exchange, "bybit", [])  # a book stream asks no REST
    return feed, server, rest


async def quotes_until(feed: CcxtMarketFeed, stop: Any, limit: int = 200) -> list[Quote]:
    seen: list[Quote] = []

    async def collect() -> None:
        async for q in feed.quotes():
            seen.append(q)
            if stop(q) or len(seen) >= limit:
                return

    # A bound against a hang, not a timing assert: a loaded machine reconnects slowly.
    await asyncio.wait_for(collect(), 30.0)
    return seen


def bybit_gap_script(lost: bool) -> list[Any]:
    """A snapshot at update 10 (bid 99 x 1, ask 100 x 1), a delta 11, then (unless ``lost``)
    delta 12 deleting the 99 bid for one at 98.5, then delta 13 and more that add at the ask."""
    steps: list[Any] = [
        bybit_book("snapshot", 10, bids=[(99.0, 1.0), (98.0, 2.0)], asks=[(100.0, 1.0)]),
        bybit_book("delta", 11, bids=[(99.0, 2.0)]),
    ]
    if not lost:
        steps.append(bybit_book("delta", 12, bids=[(99.0, 0.0), (98.5, 4.0)]))
    steps += [bybit_book("delta", u, asks=[(100.0, 3.0), (101.0, u)]) for u in range(13, 20)]
    return steps


async def test_a_lost_bybit_delta_drops_the_book_and_subscribes_again_for_a_snapshot() -> None:
    """ccxt.pro's bybit applied delta 13 on a book that never got delta 12: the bid at 99 the
    venue had deleted was quoted and walked (99 x 2 against an ask of 100 x 3) for as long as
    the connection lived, since bybit sends no snapshot by itself. Now the gap fails the watch,
    the connection is dialled again, and the next quote is the new subscription's snapshot."""
    fresh = bybit_book("snapshot", 1, bids=[(98.5, 4.0)], asks=[(100.0, 3.0)])
    feed, server, rest = await bybit_book_feed([bybit_gap_script(lost=True), [fresh]])
    try:
        made_up = lambda q: q.bid == 99.0 and q.ask_size == 3.0  # noqa: E731
        seen = await quotes_until(feed, lambda q: q.bid == 98.5 or made_up(q))
        assert not [q for q in seen if made_up(q)], "a book the venue never had was quoted"
        assert seen[-1].bid == 98.5  # the new snapshot's
        assert server.connections >= 2 and len(server.subscriptions) >= 2
        assert "sequence gap" in feed.state[SYM].last_error
    finally:
        await feed.close()
        await rest.close()
        await server.stop()


async def test_bybit_deltas_that_follow_on_are_applied_on_one_connection() -> None:
    """The boundary: every delta is the next update: one connection, the book as it is."""
    feed, server, rest = await bybit_book_feed([bybit_gap_script(lost=False)])
    try:
        seen = await quotes_until(feed, lambda q: q.ask_size == 3.0)
        assert (seen[-1].bid, seen[-1].bid_size, seen[-1].ask_size) == (98.5, 4.0, 3.0)
        assert server.connections == 1 and feed.state[SYM].errors == 0
    finally:
        await feed.close()
        await rest.close()
        await server.stop()


# ---------------------------------------------------------------------- a locked book


@pytest.mark.parametrize("source", ["book", "ticker"])
def test_a_locked_venue_quote_is_refused_like_the_crossed_book_it_is(source: str) -> None:
    """bid == ask: the depth check refused the book as crossed, but its quote was taken (the
    validator lets bid <= ask through): the symbol synced and a paper buy paid the bid, no
    spread at all. Now the venue feed refuses it as crossed_book; a tick wider is a quote."""
    t0_ms = 1_723_161_600_000
    clock = FakeClock(t0_ms * 1_000_000)
    ex = type("Ex", (), {"id": "fake", "has": {}, "rateLimit": 50})()
    feed = CcxtMarketFeed(
        "fake", ex, [SYM], source=source, transport="poll", clock_ns=clock.time_ns
    )

    def payload(ask: float, ts_ms: int) -> dict[str, Any]:
        if source == "book":
            return {"symbol": SYM, "bids": [[100.0, 1.0]], "asks": [[ask, 1.0], [102.0, 2.0]],
                    "timestamp": ts_ms, "nonce": ts_ms}  # fmt: skip
        return {"symbol": SYM, "bid": 100.0, "ask": ask, "bidVolume": 1.0, "askVolume": 1.0,
                "timestamp": ts_ms}  # fmt: skip

    assert feed.accept(SYM, payload(100.0, t0_ms)) is None
    assert feed.rejects == {CROSSED_BOOK: 1} and not feed.is_synced(SYM)
    assert feed.depth(SYM) is None
    q = feed.accept(SYM, payload(100.01, t0_ms + 1))
    assert q is not None and (q.bid, q.ask) == (100.0, 100.01) and feed.is_synced(SYM)


# ---------------------------------------------------------------------- refused books, shown


def test_refused_l2_books_are_in_the_feed_status_and_the_venues_pane() -> None:
    """A book stream whose every book is refused (a price level twice, deep in the book) stays
    synced on its valid top, and paper market orders quietly fill on the L1 model instead of
    the live book the README promises: the count was kept (``depth_rejects``) and shown
    nowhere. Now `cockpit status` / the snapshot carry it and the Venues pane says so."""
    from cockpit.venue_state import venue_segments

    t0_ms = 1_723_161_600_000
    clock = FakeClock(t0_ms * 1_000_000)
    ex = type("Ex", (), {"id": "fake", "has": {}, "rateLimit": 50})()
    feed = CcxtMarketFeed(
        "fake", ex, [SYM], source="book", transport="poll", clock_ns=clock.time_ns
    )
    good = {"symbol": SYM, "bids": [[99.0, 1.0], [98.0, 1.0]], "asks": [[100.0, 1.0]],
            "timestamp": t0_ms, "nonce": 1}  # fmt: skip
    assert feed.accept(SYM, good) is not None and feed.depth(SYM) is not None
    view = {"connected": True, "paper": True, "feed": feed.status()}
    shown = " ".join(text for text, _ in venue_segments("fake", view, "paper"))
    assert "refused" not in shown  # nothing refused: nothing said
    twice = {**good, "bids": [[99.0, 1.0], [98.0, 1.0], [98.0, 2.0]], "timestamp": t0_ms + 1}
    assert feed.accept(SYM, twice) is not None  # its top is a valid quote
    assert feed.depth(SYM) is None and feed.is_synced(SYM)
    status = feed.status()
    assert status["depth_rejects"] == {"unsorted_levels": 1}
    shown = " ".join(text for text, _ in venue_segments("fake", {**view, "feed": status}, "paper"))
    assert "1 L2 book refused (unsorted_levels)" in shown
