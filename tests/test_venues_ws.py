"""Websocket market data through ccxt.pro's real exchange classes, against a loopback server.

Each test builds the feed the way the engine does (:func:`build_feed` from a ``VenueConfig``),
points the feed's own ccxt.pro object at an aiohttp websocket server on 127.0.0.1, and has the
server speak the venue's real protocol: its subscribe acknowledgement and its real message
shapes (binance ``bookTicker`` rows from the recorded capture in tests/data and
``24hrTicker``, bybit v5 ``orderbook.1``, okx ``bbo-tbt`` and ``tickers``), as parsed by ccxt's
own ``handle_*`` code. Nothing touches the network; backoff sleeps are recorded and skipped.
"""

from __future__ import annotations

import asyncio
import csv
import gc
import json
import random
import time
import warnings
from collections.abc import Callable
from itertools import islice
from typing import Any

import ccxt.pro as ccxt_pro
import pytest
from aiohttp import WSMsgType, web

from engine.config import VenueConfig
from engine.marketdata.validate import CROSSED_BOOK, NON_POSITIVE_PRICE, NOT_FINITE
from engine.types import Quote
from engine.venues.ccxt_market import CcxtMarketFeed, build_feed
from engine.venues.exchanges import ProductionEndpointRefused, VenueUnavailable, make_exchange
from engine.venues.profiles import profile_for
from engine.venues.ratelimit import Backoff
from tests.conftest import BOOKTICKER_CSV
from tests.test_venues_support import FakeClock, RecordedHttp, default_routes

SYM = "BTC/USDT"
WS_VENUES = ("binance", "bybit", "okx")
# Where each venue's public spot stream lives in ccxt's urls (the path ccxt appends is kept).
WS_PATH = {"binance": "/ws", "bybit": "/v5/public/spot", "okx": "/ws/v5"}
# A production websocket URL of each venue, as ccxt.pro would dial it.
PROD_WS = {
    "binance": "wss://stream.binance.com:9443/ws/0",
    "bybit": "wss://stream.bybit.com/v5/public/spot",
    "okx": "wss://ws.okx.com:8443/ws/v5/public",
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------------- venue messages


def book_ticker_rows(n: int) -> list[dict[str, str]]:
    with open(BOOKTICKER_CSV, newline="") as fh:
        return list(islice(csv.DictReader(fh), n))


def quote_msg(
    venue: str, source: str, bid: str, ask: str, bid_qty: str, ask_qty: str, seq: int = 1
) -> dict[str, Any]:
    """One real-shaped update of ``source`` on ``venue`` (prices as the venues send them:
    decimal strings), stamped now."""
    ts = now_ms()
    if venue == "binance" and source == "bidask":  # spot bookTicker: no event type, no time
        return {
            "u": 50093239218 + seq,
            "s": "BTCUSDT",
            "b": bid,
            "B": bid_qty,
            "a": ask,
            "A": ask_qty,
        }
    if venue == "binance" and source == "ticker":
        return {
            "e": "24hrTicker", "E": ts, "s": "BTCUSDT", "p": "-12.10", "P": "-0.020",
            "w": "61000.0", "x": "61698.1", "c": bid, "Q": "0.001", "b": bid, "B": bid_qty,
            "a": ask, "A": ask_qty, "o": "61698.1", "h": "62000.0", "l": "60000.0",
            "v": "1000.0", "q": "61000000.0", "O": ts - 86_400_000, "C": ts, "F": 1,
            "L": 1000, "n": 1000,
        }  # fmt: skip
    if venue == "bybit" and source == "bidask":  # v5 orderbook.1: always a snapshot
        return {
            "topic": "orderbook.1.BTCUSDT", "type": "snapshot", "ts": ts,
            "data": {"s": "BTCUSDT", "b": [[bid, bid_qty]], "a": [[ask, ask_qty]], "u": seq,
                     "seq": 7961638724 + seq},
            "cts": ts - 1,
        }  # fmt: skip
    if venue == "okx" and source == "bidask":
        return {
            "arg": {"channel": "bbo-tbt", "instId": "BTC-USDT"},
            "data": [{"asks": [[ask, ask_qty, "0", "3"]], "bids": [[bid, bid_qty, "0", "2"]],
                      "ts": str(ts), "seqId": seq}],
        }  # fmt: skip
    if venue == "okx" and source == "ticker":
        return {
            "arg": {"channel": "tickers", "instId": "BTC-USDT"},
            "data": [{
                "instType": "SPOT", "instId": "BTC-USDT", "last": bid, "lastSz": "0.001",
                "askPx": ask, "askSz": ask_qty, "bidPx": bid, "bidSz": bid_qty,
                "open24h": "61000", "high24h": "62000", "low24h": "60000", "sodUtc0": "61500",
                "sodUtc8": "61400", "volCcy24h": "503403597.38", "vol24h": "15937.1",
                "ts": str(ts),
            }],
        }  # fmt: skip
    raise KeyError((venue, source))


def ack(venue: str, request: Any) -> Any:
    """The venue's answer to a subscribe request."""
    if venue == "binance":
        return {"result": None, "id": request["id"]}
    if venue == "bybit":
        return {
            "success": True,
            "ret_msg": "subscribe",
            "conn_id": "cflbmn5gb4i0h0ti7j3g-4xk1",
            "req_id": request.get("req_id", ""),
            "op": "subscribe",
        }
    return {"event": "subscribe", "arg": request["args"][0], "connId": "a4d3ae55"}


def topics(venue: str, request: Any) -> list[Any]:
    if venue == "binance":
        return list(request["params"])
    if venue == "bybit":
        return list(request["args"])
    return [f"{a['channel']}:{a['instId']}" for a in request["args"]]


# ---------------------------------------------------------------------- loopback server

Step = dict[str, Any] | str | asyncio.Event  # a message to send, "close", or wait for an event


class LoopbackVenue:
    """A venue's public websocket on 127.0.0.1: acks subscriptions, answers pings, and plays
    one script (a list of steps) per connection, in order; then stays quiet."""

    def __init__(self, venue: str, scripts: list[list[Step]]) -> None:
        self.venue = venue
        self.scripts = scripts
        self.connections = 0
        self.subscriptions: list[list[Any]] = []
        self.sent = 0
        self.runner: web.AppRunner | None = None
        self.base = ""

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        n = self.connections
        self.connections += 1
        first = True
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                if msg.data == "ping":  # okx text keepalive
                    await ws.send_str("pong")
                    continue
                data = json.loads(msg.data)
                if data.get("op") == "ping":  # bybit keepalive
                    pong = {"op": "pong", "ret_msg": "pong", "success": True}
                    await ws.send_str(json.dumps(pong))
                    continue
                self.subscriptions.append(topics(self.venue, data))
                await ws.send_str(json.dumps(ack(self.venue, data)))
                if first:
                    first = False
                    if await self.subscribed(ws, n):
                        return ws
        finally:
            await self.ended(n)
        return ws

    async def subscribed(self, ws: web.WebSocketResponse, n: int) -> bool:
        """Connection ``n`` made its first subscription: play its script. True: it closed."""
        for step in self.scripts[n] if n < len(self.scripts) else []:
            if isinstance(step, asyncio.Event):
                await step.wait()
            elif step == "close":
                await ws.close()
                return True
            else:
                await ws.send_str(json.dumps(step))
                self.sent += 1
                await asyncio.sleep(0.002)
        return False

    async def ended(self, n: int) -> None:
        """Connection ``n`` is over (a subclass stops what it started for it)."""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handler)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"ws://127.0.0.1:{port}"
        return self.base

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def point_ws_at(ex: Any, venue: str, base: str, *, also_test: bool = False) -> None:
    """Point the spot public websocket of a ccxt.pro object at ``base`` (and, for a testnet
    object, declare it a sandbox URL too, so the guard lets it through)."""
    url = base + WS_PATH[venue]
    keys = ["api", "test"] if also_test else ["api"]
    for key in keys:
        ws = ex.urls[key]
        if venue == "binance":
            ws["ws"]["spot"] = url
        elif venue == "bybit":
            ws["ws"]["public"]["spot"] = url
        else:
            ws["ws"] = url


# ---------------------------------------------------------------------- helpers


async def rest_exchange(venue: str, sandbox: bool = False) -> tuple[Any, RecordedHttp]:
    """The broker's REST object with its markets loaded from recorded answers."""
    ex = make_exchange(venue, sandbox=sandbox)
    http = RecordedHttp(ex, venue, default_routes(venue))
    await ex.load_markets(False, profile_for(venue).load_params)
    return ex, http


def vconf(venue: str, testnet: bool = False, **kw: Any) -> VenueConfig:
    return VenueConfig(exchange=venue, testnet=testnet, **kw)


class Recorder:
    """An injected ``sleep``: records each backoff delay with the feed's state at that moment
    (right after the error), then yields without waiting."""

    def __init__(self) -> None:
        self.feed: CcxtMarketFeed | None = None
        self.calls: list[tuple[float, bool, str, int]] = []

    async def __call__(self, seconds: float) -> None:
        feed = self.feed
        assert feed is not None
        self.calls.append((seconds, feed.is_synced(SYM), feed.state[SYM].reason, feed.resyncs))
        await asyncio.sleep(0)


async def next_quote(feed: CcxtMarketFeed, timeout: float = 2.0) -> Quote:
    it = feed.quotes()
    try:
        return await asyncio.wait_for(it.__anext__(), timeout)
    finally:
        await it.aclose()


async def until(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


def no_rest(ex: Any, venue: str) -> RecordedHttp:
    """Any REST call on ``ex`` fails the test (a recorder with no routes)."""
    return RecordedHttp(ex, venue, [])


async def streaming_feed(
    venue: str, source: str, scripts: list[list[Step]], **kw: Any
) -> tuple[CcxtMarketFeed, LoopbackVenue, Any, RecordedHttp]:
    rest, _ = await rest_exchange(venue)
    server = LoopbackVenue(venue, scripts)
    base = await server.start()
    feed = build_feed(
        venue,
        vconf(venue, quote_source=source),
        "live",
        rest,
        [SYM],
        stale_after_s=60.0,
        max_spread_bps=500.0,
        **kw,
    )
    assert feed.use_watch and feed.exchange is not rest
    point_ws_at(feed.exchange, venue, base)
    pro_http = no_rest(feed.exchange, venue)
    return feed, server, rest, pro_http


async def shutdown(feed: CcxtMarketFeed, server: LoopbackVenue, rest: Any) -> None:
    await feed.close()
    await rest.close()
    await server.stop()


STREAMS = [("binance", "bidask"), ("binance", "ticker"), ("bybit", "bidask"), ("okx", "bidask"),
           ("okx", "ticker")]  # fmt: skip
EXPECTED_TOPIC = {
    ("binance", "bidask"): "btcusdt@bookTicker",
    ("binance", "ticker"): "btcusdt@ticker",
    ("bybit", "bidask"): "orderbook.1.BTCUSDT",
    ("okx", "bidask"): "bbo-tbt:BTC-USDT",
    ("okx", "ticker"): "tickers:BTC-USDT",
}


# ---------------------------------------------------------------------- streaming


@pytest.mark.parametrize(("venue", "source"), STREAMS)
async def test_quotes_arrive_over_the_websocket_and_the_symbol_syncs(
    venue: str, source: str
) -> None:
    rows = book_ticker_rows(5)
    msgs = [
        quote_msg(venue, source, r["bid_price"], r["ask_price"], r["bid_qty"], r["ask_qty"], i)
        for i, r in enumerate(rows)
    ]
    expected = [
        (float(r["bid_price"]), float(r["ask_price"]), float(r["bid_qty"]), float(r["ask_qty"]))
        for r in rows
    ]
    feed, server, rest, pro_http = await streaming_feed(venue, source, [msgs])
    try:
        assert not feed.is_synced(SYM)  # nothing yet
        got: list[Quote] = []

        async def take() -> None:
            async for q in feed.quotes():
                got.append(q)
                if (q.bid, q.ask, q.bid_size, q.ask_size) == expected[-1]:
                    return

        await asyncio.wait_for(take(), 2.0)
        assert feed.is_synced(SYM)
        status = feed.status()
    finally:
        await shutdown(feed, server, rest)
    assert server.subscriptions == [[EXPECTED_TOPIC[(venue, source)]]]
    # Every quote is the next sent row, in order (ccxt keeps the latest when several arrive
    # between two reads, so a row may be skipped, never altered or reordered).
    j = 0
    for q in got:
        while j < len(expected) and expected[j] != (q.bid, q.ask, q.bid_size, q.ask_size):
            j += 1
        assert j < len(expected), f"{q} is not the next row sent"
        j += 1
    assert all(isinstance(q, Quote) and q.venue == venue and q.symbol == SYM for q in got)
    assert status["transport"] == "watch" and status["source"] == source
    assert status["symbols"][SYM]["synced"] and status["resyncs"] == 0
    assert not feed.rejects
    assert pro_http.calls == []  # markets came from the REST object: no REST call on the pro


@pytest.mark.parametrize("venue", WS_VENUES)
async def test_a_dropped_connection_unsyncs_backs_off_reconnects_and_resyncs_on_fresh_data(
    venue: str,
) -> None:
    def q(bid: str, ask: str, seq: int) -> dict[str, Any]:
        return quote_msg(venue, "bidask", bid, ask, "1.5", "2.5", seq)

    release = asyncio.Event()
    scripts: list[list[Step]] = [
        [q("61685.99", "61686.00", 1), "close"],  # data, then the server drops the socket
        ["close"],  # the first reconnect is dropped at once (after the subscribe)...
        ["close"],  # ...and the second
        [release, q("61690.01", "61690.02", 2)],  # the third holds its data until released
    ]
    recorder = Recorder()
    feed, server, rest, _ = await streaming_feed(
        venue,
        "bidask",
        scripts,
        sleep=recorder,
        backoff=lambda: Backoff(0.5, 30.0, rng=random.Random(7)),
    )
    recorder.feed = feed
    try:
        first = await next_quote(feed)
        assert (first.bid, first.ask) == (61685.99, 61686.0) and feed.is_synced(SYM)
        # Reconnected and re-subscribed, but no fresh quote yet: still unsynced.
        await until(lambda: len(server.subscriptions) == 4)
        await asyncio.sleep(0.02)
        assert not feed.is_synced(SYM)
        assert feed.state[SYM].reason.startswith("reconnecting after NetworkError")
        assert feed.resyncs == 0 and feed.state[SYM].quotes == 1
        release.set()
        second = await next_quote(feed)
        assert (second.bid, second.ask) == (61690.01, 61690.02) and feed.is_synced(SYM)
        status = feed.status()
    finally:
        await shutdown(feed, server, rest)
    assert server.connections == 4
    assert all(t == server.subscriptions[0] for t in server.subscriptions)  # same topic again
    # Each error: unsynced at once (before the wait), with the reason, then one delay.
    delays = [c[0] for c in recorder.calls]
    assert len(delays) == 3 and feed.state[SYM].reconnects == 3
    assert all(
        not synced and reason.startswith("reconnecting") for _, synced, reason, _ in recorder.calls
    )
    # Delays grow (ceilings 0.5, 1, 2 s) and are jittered: each in [ceiling/2, ceiling], at a
    # different fraction of its ceiling.
    ceilings = (0.5, 1.0, 2.0)
    assert delays == sorted(delays)
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len({round(d / c, 9) for d, c in zip(delays, ceilings, strict=True)}) == 3
    # One resync for the whole outage: the symbol was never synced in between.
    assert feed.resyncs == 1 and status["resyncs"] == 1
    entry = status["symbols"][SYM]
    assert entry["resyncs"] == 1 and entry["backoff_s"] == delays[-1]
    assert entry["last_error"].startswith("NetworkError")


async def test_a_venue_that_refuses_connections_is_retried_with_backoff_not_in_a_spin() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on: every dial is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rest, _ = await rest_exchange("binance")
    recorder = Recorder()
    feed = build_feed(
        "binance", vconf("binance", quote_source="bidask"), "live", rest, [SYM],
        stale_after_s=60.0, max_spread_bps=500.0, sleep=recorder,
        backoff=lambda: Backoff(0.5, 30.0, rng=random.Random(3)),
    )  # fmt: skip
    recorder.feed = feed
    pro = feed.exchange
    point_ws_at(pro, "binance", f"ws://127.0.0.1:{port}")
    dials: list[str] = []
    client = pro.client

    def counting_client(url: str) -> Any:
        dials.append(url)
        return client(url)

    pro.client = counting_client
    try:
        feed.start()
        await until(lambda: len(recorder.calls) >= 3, 5.0)  # ccxt dial backoff: ~0.6 s
        st = feed.state[SYM]
        errors, n_dials = st.errors, len(dials)
    finally:
        await feed.close()
        await rest.close()
    # One watch (one dial) per backoff delay: the feed never retries without waiting.
    assert errors >= 3 and n_dials <= errors + 1
    delays = [c[0] for c in recorder.calls[:3]]
    assert delays == sorted(delays) and 0.25 <= delays[0] <= 0.5 and 1.0 <= delays[2] <= 2.0
    assert all(not synced and r.startswith("reconnecting") for _, synced, r, _ in recorder.calls)
    assert st.last_error.startswith("NetworkError") and st.quotes == 0 and feed.resyncs == 0


BAD_QUOTES = [
    ("NaN", "61686.00", NOT_FINITE),
    ("61687.00", "61686.00", CROSSED_BOOK),
    ("-61685.99", "61686.00", NON_POSITIVE_PRICE),
]


@pytest.mark.parametrize("venue", WS_VENUES)
async def test_bad_websocket_quotes_are_rejected_counted_and_never_sync(venue: str) -> None:
    release = asyncio.Event()
    bad = [
        quote_msg(venue, "bidask", b, a, "1.5", "2.5", i) for i, (b, a, _) in enumerate(BAD_QUOTES)
    ]
    good = quote_msg(venue, "bidask", "61685.99", "61686.00", "1.5", "2.5", 9)
    feed, server, rest, _ = await streaming_feed(venue, "bidask", [[*bad, release, good]])
    try:
        feed.start()
        await until(lambda: sum(feed.rejects.values()) == len(BAD_QUOTES))
        assert not feed.is_synced(SYM) and feed.state[SYM].quotes == 0
        assert dict(feed.rejects) == {code: 1 for _, _, code in BAD_QUOTES}
        release.set()
        q = await next_quote(feed)
        assert (q.bid, q.ask) == (61685.99, 61686.0) and feed.is_synced(SYM)
    finally:
        await shutdown(feed, server, rest)
    assert feed.resyncs == 0  # the first sync is not a resync


async def test_testnet_streams_through_the_sandbox_guard() -> None:
    """A testnet feed streams from a URL the sandbox declares, through the guarded client()."""
    rest, _ = await rest_exchange("binance", sandbox=True)
    rows = book_ticker_rows(2)
    msgs = [
        quote_msg("binance", "bidask", r["bid_price"], r["ask_price"], r["bid_qty"], r["ask_qty"])
        for r in rows
    ]
    server = LoopbackVenue("binance", [msgs])
    base = await server.start()
    feed = build_feed(
        "binance", vconf("binance", testnet=True, quote_source="bidask"), "testnet", rest, [SYM],
        stale_after_s=60.0, max_spread_bps=500.0,
    )  # fmt: skip
    pro = feed.exchange
    assert pro._engine_sandbox_guard and pro.urls["api"]["ws"]["spot"].startswith(
        "wss://stream.testnet.binance.vision"
    )
    point_ws_at(pro, "binance", base, also_test=True)
    try:
        q = await next_quote(feed)
    finally:
        await shutdown(feed, server, rest)
    assert q.bid == float(rows[0]["bid_price"]) and server.connections == 1


# ---------------------------------------------------------------------- sandbox guard


@pytest.mark.parametrize("venue", WS_VENUES)
async def test_a_testnet_pro_exchange_refuses_production_websockets_before_connecting(
    venue: str,
) -> None:
    rest, _ = await rest_exchange(venue, sandbox=True)
    feed = build_feed(
        venue, vconf(venue, testnet=True, quote_source="bidask"), "testnet", rest, [SYM],
        stale_after_s=60.0, max_spread_bps=500.0,
    )  # fmt: skip
    pro = feed.exchange
    server = LoopbackVenue(venue, [])
    base = await server.start()
    try:
        # The guard wraps client(url): a production URL is refused before a client exists.
        with pytest.raises(ProductionEndpointRefused, match="not a sandbox endpoint"):
            pro.client(PROD_WS[venue])
        assert not pro.clients
        # A testnet object whose URLs were edited to point elsewhere (here: a live loopback
        # server that would answer) fails the symbol at once and never dials.
        point_ws_at(pro, venue, base)
        feed.start()
        await until(lambda: feed.state[SYM].failed)
        await asyncio.sleep(0.05)
        assert not feed.is_synced(SYM)
        assert "ProductionEndpointRefused" in feed.state[SYM].reason
        assert server.connections == 0 and not pro.clients
    finally:
        await shutdown(feed, server, rest)


@pytest.mark.parametrize("venue", ["kraken", "kucoin"])
def test_venues_without_a_sandbox_get_no_testnet_websocket(venue: str) -> None:
    with pytest.raises(VenueUnavailable, match="no testnet"):
        make_exchange(venue, sandbox=True, pro=True)


# ---------------------------------------------------------------------- build_feed


async def test_build_feed_streams_in_auto_mode_with_a_public_pro_object(monkeypatch: Any) -> None:
    monkeypatch.setenv("CK_WS_KEY", "TESTKEYa8f3c91e5d7b4c2a9e0f1d3b5c7a9e1f")
    monkeypatch.setenv(
        "CK_WS_SECRET", "U0VDUkVUZGQ5YjJmNGE3YzFlOGQ2YjNmNWEyYzRlNmQ4YjBmMmE0YzZlOGQ="
    )
    rest, _ = await rest_exchange("binance", sandbox=True)
    vcfg = vconf("binance", testnet=True, api_key_env="CK_WS_KEY", secret_env="CK_WS_SECRET")
    assert vcfg.market_data == "auto" and vcfg.quote_source == "ticker"
    feed = build_feed("binance", vcfg, "testnet", rest, [SYM], stale_after_s=5, max_spread_bps=50)
    try:
        pro = feed.exchange
        assert isinstance(pro, ccxt_pro.binance) and feed.use_watch and feed.source == "ticker"
        assert not pro.apiKey and not pro.secret  # market data is public: never any keys
        assert pro.markets is rest.markets  # shared, not loaded again
        assert feed.note == "" and feed.status()["transport"] == "watch"
    finally:
        await feed.close()
    assert pro.closed_by_user and pro.session is None  # the feed closed the object it owns
    assert not rest.closed_by_user  # ...and not the broker's
    await rest.close()


@pytest.mark.parametrize(
    ("venue", "source", "chosen"),
    [("bybit", "ticker", "bidask"), ("kucoin", "ticker", "bidask"), ("okx", "book", "book")],
)
async def test_auto_mode_picks_a_streaming_source_that_can_quote(
    venue: str, source: str, chosen: str
) -> None:
    rest = make_exchange(venue, sandbox=False)
    feed = build_feed(
        venue, vconf(venue, quote_source=source), "live", rest, [SYM],
        stale_after_s=5, max_spread_bps=50,
    )  # fmt: skip
    try:
        assert feed.use_watch and feed.source == chosen
        assert (feed.note != "") == (chosen != source)
        if chosen != source:
            assert "carries no" in feed.note
    finally:
        await feed.close()
        await rest.close()


async def test_rest_mode_polls_on_the_broker_object() -> None:
    rest, _ = await rest_exchange("binance")
    feed = build_feed(
        "binance", vconf("binance", market_data="rest"), "live", rest, [SYM],
        stale_after_s=5, max_spread_bps=50,
    )  # fmt: skip
    assert feed.exchange is rest and not feed.use_watch and feed.status()["transport"] == "poll"
    await feed.close()
    assert not rest.closed_by_user  # not the feed's to close
    # A transport override (as the engine's feed_kwargs pass) means the same.
    polled = build_feed(
        "binance", vconf("binance"), "live", rest, [SYM], stale_after_s=5, max_spread_bps=50,
        transport="poll",
    )  # fmt: skip
    assert polled.exchange is rest and not polled.use_watch
    await polled.close()
    await rest.close()


@pytest.mark.parametrize(
    ("venue", "source", "market_data", "words"),
    [
        (
            "bybit",
            "ticker",
            "websocket",
            ["bybit", "watchTicker", 'market_data = "rest"', '"bidask"'],
        ),
        ("gemini", "ticker", "websocket", ["gemini", "has no watchTicker", 'market_data = "rest"']),
        ("bitso", "ticker", "websocket", ["bitso", "ccxt.pro has no", 'market_data = "rest"']),
        ("kucoin", "ticker", "rest", ["kucoin", "REST", 'quote_source = "book"']),
    ],
)
async def test_an_impossible_transport_request_is_a_one_line_error(
    venue: str, source: str, market_data: str, words: list[str]
) -> None:
    rest = make_exchange(venue, sandbox=False)
    try:
        with pytest.raises(ValueError) as err:
            build_feed(
                venue, vconf(venue, market_data=market_data, quote_source=source), "live", rest,
                [SYM], stale_after_s=5, max_spread_bps=50,
            )  # fmt: skip
    finally:
        await rest.close()
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"venues.{venue}: ")
    for word in words:
        assert word in text, (word, text)


async def test_modes_that_do_not_fit_are_refused() -> None:
    rest, _ = await rest_exchange("binance")
    args = {"stale_after_s": 5, "max_spread_bps": 50}
    try:
        with pytest.raises(ValueError, match="testnet or live"):
            build_feed("binance", vconf("binance"), "paper", rest, [SYM], **args)
        with pytest.raises(ValueError, match="does not fit testnet"):
            build_feed("binance", vconf("binance", testnet=False), "testnet", rest, [SYM], **args)
        with pytest.raises(ValueError, match="sandbox-guarded"):  # a production REST object
            build_feed("binance", vconf("binance", testnet=True), "testnet", rest, [SYM], **args)
    finally:
        await rest.close()


async def test_auto_falls_back_to_rest_polling_where_ccxt_pro_cannot_stream(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(ccxt_pro, "exchanges", [e for e in ccxt_pro.exchanges if e != "binance"])
    rest, http = await rest_exchange("binance")
    clock = FakeClock(1_723_161_600_000_000_000)  # the recorded ticker's time
    feed = build_feed(
        "binance", vconf("binance"), "live", rest, [SYM], stale_after_s=60, max_spread_bps=500,
        clock_ns=clock.time_ns, sleep=clock.sleep,
    )  # fmt: skip
    try:
        assert feed.exchange is rest and not feed.use_watch
        assert "ccxt.pro has no 'binance'" in feed.note
        q = await next_quote(feed)
        assert (q.bid, q.ask) == (61685.99, 61686.0) and feed.is_synced(SYM, q.ts_recv)
    finally:
        await feed.close()
        await rest.close()
    assert any("/api/v3/ticker" in c.url for c in http.calls)


# ---------------------------------------------------------------------- close


async def test_close_leaves_no_tasks_no_sockets_and_no_warnings() -> None:
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    msgs = [quote_msg("okx", "bidask", "61685.99", "61686.00", "1.5", "2.5")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        feed, server, rest, _ = await streaming_feed("okx", "bidask", [msgs])
        pro = feed.exchange
        waiting = asyncio.ensure_future(feed.quotes().__anext__())
        first = await asyncio.wait_for(waiting, 2.0)
        consumer = asyncio.ensure_future(feed.quotes().__anext__())  # blocked: no more data
        await asyncio.sleep(0.01)
        tasks = list(feed._tasks)
        await feed.close()
        await feed.close()  # idempotent
        with pytest.raises(StopAsyncIteration):  # close() wakes a waiting consumer
            await asyncio.wait_for(consumer, 1.0)
        assert all(t.done() for t in tasks) and not feed._tasks
        assert pro.closed_by_user and pro.session is None and not pro.clients
        await rest.close()
        await server.stop()
        me = asyncio.current_task()
        await until(lambda: not [t for t in asyncio.all_tasks() if t is not me], 1.0)
        del feed, pro, rest
        gc.collect()
    assert first.bid == 61685.99
    unclosed = [w for w in caught if "nclosed" in str(w.message)]
    assert not unclosed and not loop_errors, (unclosed, loop_errors)
