"""Adversarial review of paper trading on live prices (review-pl): the README's "Paper trading on
live prices", docs/marketdata.md, and the paper broker's fills from the live L2 book.

Each test pins a hole found by attacking a promise literally, and failed before its fix. The
venues are ccxt.pro's real exchange classes speaking their real protocol to a loopback websocket
(``tests.test_venues_ws``), REST answered from recorded bodies; nothing touches the network.

Attacks that held (no test here, or covered by earlier tests):
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from engine.types import Quote
from engine.venues.ccxt_market import CcxtMarketFeed, binance_bridge_problem, build_feed
from engine.venues.ratelimit import Backoff
from tests.test_venues_support import RecordedHttp
from tests.test_venues_ws import LoopbackVenue, rest_exchange, until, vconf

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


async def binance_book_feed(
    scripts: list[list[Any]], snapshots: list[dict[str, Any]]
) -> tuple[CcxtMarketFeed, LoopbackVenue, Any]:
    """binance's book stream as the README's paper-live.toml builds it (`quote_source = "book"`
    streams ccxt.pro's watch_order_book: the depth diffs, and a REST snapshot on each
    subscription). The n-th snapshot is answered only once the n-th connection's script has
    been buffered by ccxt (its diffs arrived before the snapshot)."""
    rest, _ = await rest_exchange("binance")
    server = LoopbackVenue("binance", scripts)
    base = await server.start()
    feed = build_feed(
        "binance",
        vconf("binance", quote_source="book", market_data="websocket"),
        "live",
        rest,
        [SYM],
        stale_after_s=60.0,
        max_spread_bps=500.0,
        backoff=lambda: Backoff(0.01, 0.02),
    )
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
