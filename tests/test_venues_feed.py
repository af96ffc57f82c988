"""The ccxt market-data feed: websockets and REST polling, validation, sync state, reconnects.

The websocket test replays the real Binance bookTicker capture through a loopback websocket
server into ccxt.pro's real binance class, and checks every quote the feed emits against the
CSV row it came from.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
from itertools import islice
from typing import Any

import ccxt
import pytest
from aiohttp import WSMsgType, web

from engine.marketdata.validate import CROSSED_BOOK, NOT_FINITE, TIME_BACKWARDS
from engine.venues.ccxt_market import (
    BAD_PAYLOAD,
    MISSING_FIELD,
    STALE_PAYLOAD,
    WRONG_SYMBOL,
    CcxtMarketFeed,
)
from engine.venues.exchanges import make_exchange
from engine.venues.ratelimit import Backoff
from tests.conftest import BOOKTICKER_CSV
from tests.test_venues_support import FakeClock, R, RecordedHttp, default_routes, fixture

T0_MS = 1_723_161_600_000


def _public(venue: str, pro: bool = False) -> Any:
    ex = make_exchange(venue, sandbox=False, pro=pro)
    ex.enableRateLimit = False
    return ex


async def _take(feed: CcxtMarketFeed, n: int, timeout: float = 10.0) -> list[Any]:
    out: list[Any] = []

    async def run() -> None:
        async for q in feed.quotes():
            out.append(q)
            if len(out) >= n:
                return

    await asyncio.wait_for(run(), timeout)
    return out


async def test_rest_polling_within_the_rate_limit() -> None:
    clock = FakeClock(T0_MS * 1_000_000)
    ex = _public("binance")
    RecordedHttp(ex, "binance", default_routes("binance"))
    feed = CcxtMarketFeed("binance", ex, ["BTC/USDT"], clock_ns=clock.time_ns, sleep=clock.sleep)
    try:
        instruments = await feed.load_instruments()
        assert instruments["BTC/USDT"].tick_size == 0.01
        assert not feed.use_watch  # the plain async class has no websockets: poll
        assert not feed.is_synced("BTC/USDT")  # nothing yet
        quotes = await _take(feed, 3)
    finally:
        await feed.close()
        await ex.close()
    q = quotes[0]
    assert (q.bid, q.ask, q.bid_size, q.ask_size) == (61685.99, 61686.0, 1.25869, 2.44807)
    assert q.venue == "binance" and q.ts_exchange == 1723161599999 * 1_000_000
    # Polls are spaced: never faster than twice binance's 50 ms rateLimit, and >= 1 s.
    assert feed.poll_interval_s == 1.0
    assert clock.slept.count(1.0) >= 2


async def test_kucoin_book_source_where_the_ticker_has_no_sizes() -> None:
    clock = FakeClock(T0_MS * 1_000_000)
    ex = _public("kucoin")
    RecordedHttp(ex, "kucoin", default_routes("kucoin"))
    ticker_feed = CcxtMarketFeed(
        "kucoin", ex, ["BTC/USDT"], clock_ns=clock.time_ns, sleep=clock.sleep
    )
    book_feed = CcxtMarketFeed(
        "kucoin", ex, ["BTC/USDT"], source="book", clock_ns=clock.time_ns, sleep=clock.sleep
    )
    try:
        await ticker_feed.load_instruments()
        ticker_feed.start()
        for _ in range(20):
            await asyncio.sleep(0)
        assert ticker_feed.rejects[MISSING_FIELD] >= 1  # stats carry no bid/ask sizes
        assert not ticker_feed.is_synced("BTC/USDT")
        await ticker_feed.close()
        clock.ns = T0_MS * 1_000_000
        quotes = await _take(book_feed, 1)
        assert book_feed.is_synced("BTC/USDT", quotes[0].ts_recv)
    finally:
        await ticker_feed.close()
        await book_feed.close()
        await ex.close()
    assert (quotes[0].bid, quotes[0].ask) == (61688.9, 61689.0)


class _Script:
    """A scripted ``watch_ticker``: payloads to return or exceptions to raise, in order."""

    def __init__(self, items: list[Any]) -> None:
        self.items = list(items)
        self.calls = 0

    async def __call__(self, symbol: str, params: Any = None) -> Any:
        self.calls += 1
        if not self.items:
            await asyncio.sleep(3600)
        item = self.items.pop(0)
        if isinstance(item, asyncio.Event):  # hold here until the test lets the script go on
            await item.wait()
            return await self(symbol, params)
        if isinstance(item, BaseException):
            raise item
        return item


def _tick(bid: float, ask: float, ts_ms: int | None = T0_MS, **extra: Any) -> dict[str, Any]:
    return {
        "symbol": "BTC/USDT",
        "bid": bid,
        "ask": ask,
        "bidVolume": 1.0,
        "askVolume": 2.0,
        "timestamp": ts_ms,
        **extra,
    }


async def test_bad_payloads_are_counted_never_crash_the_feed() -> None:
    clock = FakeClock(T0_MS * 1_000_000)
    ex = _public("binance", pro=True)
    script = _Script(
        [
            _tick(100.0, 100.1),
            _tick(100.2, 100.1),  # crossed
            _tick(math.nan, 100.1),  # not finite
            {"symbol": "BTC/USDT", "bid": 100.0},  # missing fields
            ["not", "a", "dict"],
            _tick(100.0, 100.1, symbol="ETH/USDT"),  # another symbol's data
            _tick(100.0, 100.1, ts_ms=T0_MS - 60_000),  # a minute old
            _tick(100.0, 100.1, ts_ms=T0_MS - 1_000),  # older than the accepted one
            _tick(100.0, 100.1, bidVolume="x"),
            _tick(100.05, 100.15, ts_ms=T0_MS + 1),
        ]
    )
    ex.watch_ticker = script
    feed = CcxtMarketFeed(
        "binance", ex, ["BTC/USDT"], source="ticker", clock_ns=clock.time_ns, sleep=clock.sleep
    )
    assert feed.use_watch
    try:
        quotes = await _take(feed, 2)
    finally:
        await feed.close()
        await ex.close()
    assert [(q.bid, q.ask) for q in quotes] == [(100.0, 100.1), (100.05, 100.15)]
    assert dict(feed.rejects) == {
        CROSSED_BOOK: 1,
        NOT_FINITE: 1,
        MISSING_FIELD: 2,
        BAD_PAYLOAD: 1,
        WRONG_SYMBOL: 1,
        STALE_PAYLOAD: 1,
        TIME_BACKWARDS: 1,
    }


async def test_reconnect_with_backoff_and_jitter_and_unsynced_meanwhile() -> None:
    import random

    clock = FakeClock(T0_MS * 1_000_000)
    ex = _public("binance", pro=True)
    errors = [
        ccxt.NetworkError("closed"),
        ccxt.RequestTimeout("ping-pong"),
        ccxt.ExchangeNotAvailable("503"),
        ccxt.NetworkError("closed"),
    ]
    go = asyncio.Event()
    ex.watch_ticker = _Script([_tick(100.0, 100.1), go, *errors, _tick(100.0, 100.1, ts_ms=None)])
    feed = CcxtMarketFeed(
        "binance",
        ex,
        ["BTC/USDT"],
        source="ticker",
        clock_ns=clock.time_ns,
        sleep=clock.sleep,
        backoff=lambda: Backoff(0.5, 30.0, rng=random.Random(1)),
    )
    seen_unsynced = []
    try:
        first = await _take(feed, 1)
        assert feed.is_synced("BTC/USDT")
        go.set()
        it = feed.quotes()
        task = asyncio.ensure_future(it.__anext__())
        for _ in range(10_000):
            if task.done():
                break
            st = feed.state["BTC/USDT"]
            if st.errors and st.quotes == 1:  # between the error and the next good quote
                seen_unsynced.append(feed.is_synced("BTC/USDT"))
            await asyncio.sleep(0)
        second = task.result()
        await it.aclose()
    finally:
        await feed.close()
        await ex.close()
    assert first and second
    assert seen_unsynced and not any(seen_unsynced)  # unsynced while reconnecting
    st = feed.state["BTC/USDT"]
    assert st.errors == 4 and st.reconnects == 4
    # Exponential ceilings 0.5, 1, 2, 4 s; full jitter keeps each in [ceiling/2, ceiling].
    for delay, ceiling in zip(st.delays, (0.5, 1.0, 2.0, 4.0), strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(st.delays)) == 4


async def test_stale_symbol_becomes_unsynced_and_bad_symbol_fails() -> None:
    clock = FakeClock(T0_MS * 1_000_000)
    ex = _public("binance", pro=True)
    ex.watch_ticker = _Script([_tick(100.0, 100.1)])
    feed = CcxtMarketFeed(
        "binance",
        ex,
        ["BTC/USDT"],
        source="ticker",
        clock_ns=clock.time_ns,
        sleep=clock.sleep,
        stale_after_s=5.0,
    )
    try:
        await _take(feed, 1)
        assert feed.is_synced("BTC/USDT")
        clock.advance(6)
        assert not feed.is_synced("BTC/USDT")
        assert feed.status()["symbols"]["BTC/USDT"]["reason"].startswith("stale")
    finally:
        await feed.close()
    ex.watch_ticker = _Script([ccxt.BadSymbol("binance does not have market symbol")])
    bad = CcxtMarketFeed(
        "binance", ex, ["BTC/USDT"], source="ticker", clock_ns=clock.time_ns, sleep=clock.sleep
    )
    bad.start()
    for _ in range(10):
        await asyncio.sleep(0)
    assert bad.state["BTC/USDT"].failed and not bad.is_synced("BTC/USDT")
    await bad.close()
    await ex.close()


async def test_resyncs_count_recoveries_from_errors_and_staleness_not_the_first_sync() -> None:
    clock = FakeClock(T0_MS * 1_000_000)
    ex = _public("binance", pro=True)
    gate, stale_gap = asyncio.Event(), asyncio.Event()
    ex.watch_ticker = _Script(
        [
            _tick(100.0, 100.1, ts_ms=None),  # first sync: not a resync
            _tick(100.0, 100.1, ts_ms=None),  # still synced: not a resync
            gate,
            ccxt.NetworkError("closed"),  # lost (reconnect)...
            _tick(100.2, 100.3, ts_ms=None),  # ...and back: resync 1
            stale_gap,  # silence past stale_after_s (the test advances the clock)
            _tick(100.4, 100.5, ts_ms=None),  # back after staleness: resync 2
            _tick(100.2, 100.1, ts_ms=None),  # crossed: rejected, syncs nothing
        ]
    )
    feed = CcxtMarketFeed(
        "binance",
        ex,
        ["BTC/USDT"],
        source="ticker",
        clock_ns=clock.time_ns,
        sleep=clock.sleep,
        stale_after_s=5.0,
    )
    try:
        await _take(feed, 2)
        assert feed.resyncs == 0 and feed.is_synced("BTC/USDT")
        gate.set()
        await _take(feed, 1)
        assert feed.resyncs == 1 and feed.state["BTC/USDT"].reconnects == 1
        clock.advance(6)
        assert feed.status()["symbols"]["BTC/USDT"]["reason"].startswith("stale")
        stale_gap.set()
        await _take(feed, 1)
        for _ in range(20):
            await asyncio.sleep(0)
        assert feed.rejects[CROSSED_BOOK] == 1
        status = feed.status()
    finally:
        await feed.close()
        await ex.close()
    assert feed.resyncs == 2 and status["resyncs"] == 2
    entry = status["symbols"]["BTC/USDT"]
    assert entry["resyncs"] == 2 and entry["quotes"] == 4 and entry["synced"]
    assert entry["last_error"] == "NetworkError: closed"
    assert 0.25 <= entry["backoff_s"] <= 0.5  # the one backoff delay taken


async def test_fatal_errors_fail_the_symbol_without_retrying() -> None:
    from engine.venues.exchanges import ProductionEndpointRefused

    clock = FakeClock(T0_MS * 1_000_000)
    ex = _public("binance", pro=True)
    for exc in (ProductionEndpointRefused("binance: refused"), ccxt.NotSupported("no")):
        script = _Script([exc, _tick(100.0, 100.1)])
        ex.watch_ticker = script
        feed = CcxtMarketFeed(
            "binance", ex, ["BTC/USDT"], source="ticker", clock_ns=clock.time_ns, sleep=clock.sleep
        )
        feed.start()
        for _ in range(10):
            await asyncio.sleep(0)
        st = feed.state["BTC/USDT"]
        assert st.failed and not feed.is_synced("BTC/USDT") and script.calls == 1
        assert st.reason.startswith("feed failed: " + type(exc).__name__)
        await feed.close()
    assert clock.slept == []  # no backoff: nothing to wait for
    await ex.close()


async def test_broker_refuses_orders_while_the_feed_is_unsynced(monkeypatch: Any) -> None:
    from engine.types import OrderStatus
    from tests.test_venues_support import make_broker, new_order

    clock = FakeClock(T0_MS * 1_000_000)
    ex = _public("binance", pro=True)
    ex.watch_ticker = _Script([_tick(100.0, 100.1)])
    feed = CcxtMarketFeed(
        "binance", ex, ["BTC/USDT"], source="ticker", clock_ns=clock.time_ns, sleep=clock.sleep
    )
    broker, http = make_broker(monkeypatch, "binance", clock=clock, is_synced=feed.is_synced)
    # The venue's answer names the client id sent (an answer about another order is not ours).
    ack = {**fixture("binance", "order_new_limit"), "clientOrderId": "ck-1-2"}
    http.add(R("POST", r"/api/v3/order\b", ack))
    try:
        await broker.start()
        out = await broker.submit(new_order("binance", "ck-1-1"))
        assert "unsynced" in out[0].order.reason
        await _take(feed, 1)
        out = await broker.submit(new_order("binance", "ck-1-2"))
        assert out[0].order.status is OrderStatus.NEW
    finally:
        await feed.close()
        await ex.close()
        await broker.close()


# ---------------------------------------------------------------------- real websocket


def _book_ticker_rows(n: int) -> list[dict[str, str]]:
    with open(BOOKTICKER_CSV, newline="") as fh:
        return list(islice(csv.DictReader(fh), n))


class _WsServer:
    """Binance's bookTicker stream on 127.0.0.1, replaying CSV rows; can drop the connection."""

    def __init__(self, rows: list[dict[str, str]], drop_after: int | None = None) -> None:
        self.rows = rows
        self.drop_after = drop_after
        self.connections = 0
        self.subscriptions: list[Any] = []
        self.sent = 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            self.subscriptions.append(data["params"])
            await ws.send_str(json.dumps({"result": None, "id": data["id"]}))
            while self.sent < len(self.rows):
                r = self.rows[self.sent]
                await ws.send_str(
                    json.dumps(
                        {
                            "u": int(r["update_id"]),
                            "s": "BTCUSDT",
                            "b": r["bid_price"],
                            "B": r["bid_qty"],
                            "a": r["ask_price"],
                            "A": r["ask_qty"],
                        }
                    )
                )
                self.sent += 1
                await asyncio.sleep(0.005)
                if self.drop_after is not None and self.sent == self.drop_after:
                    self.drop_after = None
                    await ws.close()
                    return ws
        return ws

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handler)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"ws://127.0.0.1:{self.port}/ws"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.mark.parametrize("drop_after", [None, 8])
async def test_real_book_ticker_over_a_loopback_websocket(drop_after: int | None) -> None:
    rows = _book_ticker_rows(80)
    server = _WsServer(rows, drop_after)
    url = await server.start()
    ex = make_exchange("binance", sandbox=False, pro=True)
    RecordedHttp(
        ex, "binance", [R("GET", r"/api/v3/exchangeInfo", fixture("binance", "exchange_info"))]
    )
    ex.urls["api"]["ws"]["spot"] = url
    sleeps: list[float] = []

    async def short_sleep(s: float) -> None:
        sleeps.append(s)
        await asyncio.sleep(0.01)

    feed = CcxtMarketFeed(
        "binance", ex, ["BTC/USDT"], source="bidask", sleep=short_sleep, stale_after_s=60
    )
    assert feed.use_watch
    try:
        await feed.load_instruments()
        quotes = await _take(feed, 20, timeout=20)
    finally:
        await feed.close()
        await ex.close()
        await server.stop()
    assert server.subscriptions[0] == ["btcusdt@bookTicker"]
    expected = [
        (float(r["bid_price"]), float(r["ask_price"]), float(r["bid_qty"]), float(r["ask_qty"]))
        for r in rows
    ]
    got = [(q.bid, q.ask, q.bid_size, q.ask_size) for q in quotes]
    # The quotes are the CSV rows, in stream order: a subsequence (the latest value wins when
    # several arrive between two reads, so a row may be skipped, never reordered or altered).
    j = 0
    for g in got:
        while j < len(expected) and expected[j] != g:
            j += 1
        assert j < len(expected), f"{g} is not the next row of the stream"
        j += 1
    assert all(q.venue == "binance" and q.ts_exchange == q.ts_recv for q in quotes)
    if drop_after is not None:
        assert server.connections == 2 and len(server.subscriptions) == 2  # reconnected
        assert feed.state["BTC/USDT"].reconnects >= 1 and sleeps  # after a backoff
    assert not feed.rejects or set(feed.rejects) <= {TIME_BACKWARDS}
