"""Websocket market data for the venues with no sandbox (kraken, kucoin), in live mode, offline.

ccxt has no sandbox for kraken or kucoin spot, so testnet mode refuses them and their feeds only
run in live mode (``testnet = false``). These tests build that feed the way the engine does
(:func:`build_feed`), then point the feed's own public ccxt.pro object at an aiohttp server on
127.0.0.1 that speaks each venue's real protocol, as ccxt 4.5's handlers parse it:

* **kraken**: websocket API v2 (ccxt.pro dials ``urls['api']['ws']['publicV2']``,
  ``wss://ws.kraken.com/v2``, for every public stream): the ``status`` greeting, one
  ``subscribe`` answer per symbol, ``ticker`` snapshot/updates (numbers as JSON numbers, no
  time; ``event_trigger: "bbo"`` for best bid/offer) and ``book`` snapshot/updates.
* **kucoin**: the REST ``POST /api/v1/bullet-public`` handshake first (a token and the instance
  server's websocket endpoint), then the ``welcome`` greeting, ``ack`` answers, the
  ``/spotMarket/level1`` best bid/offer and ``/market/level2`` deltas on top of the REST
  ``level2_20`` snapshot. The REST calls go to the same loopback server.

Markets come from the recorded fixtures (``tests/fixtures/venues/<venue>``), backoff sleeps are
recorded and skipped, and nothing touches the network.

Three engine bugs these tests found are pinned at the end (``test_*_regression``): kucoin's
feed never connected (ccxt.pro's ``negotiate`` spawned a task before the object had an event
loop), kraken's book was asked for a depth it refuses, and kraken book updates right after
the untimed snapshot read as time going backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import json
import random
import time
import warnings
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import ccxt.pro as ccxt_pro
import pytest
from aiohttp import WSMsgType, web

from engine.marketdata.validate import CROSSED_BOOK
from engine.types import Quote
from engine.venues.ccxt_market import CcxtMarketFeed, build_feed
from engine.venues.ratelimit import Backoff
from tests.test_venues_support import SYMBOL, fixture
from tests.test_venues_ws import BAD_QUOTES, book_ticker_rows, rest_exchange, until, vconf

LIVE_VENUES = ("kraken", "kucoin")
# The source build_feed picks in auto mode for the default config (quote_source = "ticker"):
# kraken's ticker carries bid/ask and sizes; kucoin's `/market/snapshot` does not: "bidask".
AUTO_SOURCE = {"kraken": "ticker", "kucoin": "bidask"}
# Every source that streams quotes on each venue (kucoin "ticker" is refused: no sizes).
STREAMS = [("kraken", "ticker"), ("kraken", "bidask"), ("kraken", "book"), ("kucoin", "bidask"),
           ("kucoin", "book")]  # fmt: skip
TOP_OF_BOOK = [s for s in STREAMS if s != ("kucoin", "book")]  # one message = one whole quote
KUCOIN_TOKEN = "2neAiuYvAU61ZDXANAGAsiL4-iAExhsBXZxftpOeh_55i3Ysy2q2LEsEWU64mdzUOPusi34M"
KUCOIN_SNAPSHOT = fixture("kucoin", "orderbook_level2_20")["data"]
KUCOIN_SEQ = int(KUCOIN_SNAPSHOT["sequence"])  # the recorded REST snapshot's sequence
# The kucoin book once synced on that snapshot: ccxt replays the three deltas after it (of the
# six Stream.connect() sends),
# the last setting the top bid's size to 0.6 (the snapshot's own 0.34017585 would show a lost
# replay, 0.1..0.3 a replay of deltas the snapshot already holds).
SYNCED_BOOK = (61688.9, 61689.0, 0.6, 0.68342512)

QuoteRow = tuple[str, str, str, str]  # bid, ask, bid size, ask size: decimal strings
Q1: QuoteRow = ("61685.99", "61686.00", "1.5", "2.5")
Q2: QuoteRow = ("61690.01", "61690.02", "0.75", "1.25")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}000Z"


def iso_now() -> str:
    return iso_ms(now_ms())


def as_tuple(q: Quote) -> tuple[float, float, float, float]:
    return (q.bid, q.ask, q.bid_size, q.ask_size)


def floats(row: QuoteRow) -> tuple[float, ...]:
    return tuple(float(x) for x in row)


# ---------------------------------------------------------------------- venue messages


def _num(s: str) -> Any:
    """kraken v2 sends numbers as JSON numbers; a non-number (the "NaN" of a bad payload) stays
    a string, since JSON has no NaN (and ccxt parses with orjson, which refuses one)."""
    try:
        out = float(s)
    except ValueError:
        return s
    return out if out == out else s


class Stream:
    """The messages of one venue's stream, as the venue sends them; ``connect`` starts a new
    connection (kraken's first ticker/book message after a subscribe is a snapshot; kucoin's
    level2 stream opens with the deltas ccxt syncs on the REST snapshot)."""

    def __init__(self, venue: str, source: str) -> None:
        self.venue, self.source = venue, source
        self.first = True
        self.seq = KUCOIN_SEQ - 2
        self.bids: set[Any] = set()
        self.asks: set[Any] = set()

    def connect(self) -> list[dict[str, Any]]:
        self.first = True
        if (self.venue, self.source) != ("kucoin", "book"):
            return []
        self.seq = KUCOIN_SEQ - 2
        self.bids = {p for p, _ in KUCOIN_SNAPSHOT["bids"]}
        self.asks = {p for p, _ in KUCOIN_SNAPSHOT["asks"]}
        # Six one-row deltas from the snapshot's sequence - 2: ccxt caches five, fetches the
        # REST snapshot on the sixth, and replays the three after it (see SYNCED_BOOK).
        return [self.kucoin_delta([["61688.9", f"0.{i + 1}"]], []) for i in range(6)]

    def quote(self, bid: str, ask: str, bid_qty: str, ask_qty: str) -> dict[str, Any]:
        """One message that moves the top of the book to ``bid``/``ask``."""
        kind = "snapshot" if self.first else "update"
        self.first = False
        if self.venue == "kraken" and self.source in ("ticker", "bidask"):
            return kraken_ticker(_num(bid), _num(ask), _num(bid_qty), _num(ask_qty), kind)
        if self.venue == "kraken":  # book: a snapshot, or an update that clears the old top
            b, a = _num(bid), _num(ask)
            bids = [(p, 0.0) for p in self.bids if kind == "update" and p != b]
            asks = [(p, 0.0) for p in self.asks if kind == "update" and p != a]
            self.bids, self.asks = {b}, {a}
            bids.append((b, _num(bid_qty)))
            asks.append((a, _num(ask_qty)))
            return kraken_book(bids, asks, kind)
        if self.source == "bidask":
            return kucoin_level1(bid, ask, bid_qty, ask_qty)
        bid_rows = [[p, "0"] for p in sorted(self.bids - {bid})] + [[bid, bid_qty]]
        ask_rows = [[p, "0"] for p in sorted(self.asks - {ask})] + [[ask, ask_qty]]
        self.bids, self.asks = {bid}, {ask}
        return self.kucoin_delta(bid_rows, ask_rows)

    def kucoin_delta(self, bids: list[list[str]], asks: list[list[str]]) -> dict[str, Any]:
        """A kucoin ``/market/level2`` delta: each [price, size] row gets the next sequence
        number, the message spans sequenceStart..sequenceEnd; size "0" removes a level."""
        start = self.seq
        changes: dict[str, list[list[str]]] = {"asks": [], "bids": []}
        for side, levels in (("bids", bids), ("asks", asks)):
            for price, size in levels:
                changes[side].append([price, size, str(self.seq)])
                self.seq += 1
        return {
            "topic": "/market/level2:BTC-USDT",
            "type": "message",
            "subject": "trade.l2update",
            "data": {
                "changes": changes,
                "sequenceEnd": self.seq - 1,
                "sequenceStart": start,
                "symbol": "BTC-USDT",
                "time": now_ms(),
            },
        }

    def topic(self) -> Any:
        """What the feed's subscribe asks the venue for."""
        if self.venue == "kucoin":
            return {"bidask": "/spotMarket/level1:BTC-USDT", "book": "/market/level2:BTC-USDT"}[
                self.source
            ]
        out: dict[str, Any] = {"channel": "book" if self.source == "book" else "ticker"}
        out["symbol"] = ["BTC/USD"]
        if self.source == "bidask":
            out["event_trigger"] = "bbo"
        if self.source == "book":
            out["depth"] = 10
        return out


def kraken_ticker(bid: Any, ask: Any, bid_qty: Any, ask_qty: Any, kind: str) -> dict[str, Any]:
    """A kraken v2 ``ticker`` message (no timestamp: kraken sends none, so the feed stamps the
    receive time)."""
    return {
        "channel": "ticker",
        "type": kind,
        "data": [{
            "symbol": "BTC/USD", "bid": bid, "bid_qty": bid_qty, "ask": ask, "ask_qty": ask_qty,
            "last": 61686.0, "volume": 2158.32346723, "vwap": 61500.5, "low": 60824.0,
            "high": 62300.0, "change": -679.9, "change_pct": -1.09,
        }],
    }  # fmt: skip


def kraken_book(
    bids: list[tuple[Any, Any]], asks: list[tuple[Any, Any]], kind: str
) -> dict[str, Any]:
    """A kraken v2 ``book`` snapshot (no time) or update (with its ISO time; qty 0 removes)."""
    row: dict[str, Any] = {
        "symbol": "BTC/USD",
        "bids": [{"price": p, "qty": q} for p, q in bids],
        "asks": [{"price": p, "qty": q} for p, q in asks],
        "checksum": 2439117997,  # ccxt checks none by default ("not reliable", it says)
    }
    if kind == "update":
        row["timestamp"] = iso_now()
    return {"channel": "book", "type": kind, "data": [row]}


def kucoin_level1(bid: str, ask: str, bid_qty: str, ask_qty: str) -> dict[str, Any]:
    """A kucoin ``/spotMarket/level1`` best bid/offer push (prices as decimal strings)."""
    return {
        "topic": "/spotMarket/level1:BTC-USDT",
        "type": "message",
        "subject": "level1",
        "data": {"asks": [ask, ask_qty], "bids": [bid, bid_qty], "timestamp": now_ms()},
    }


def kraken_acks(request: dict[str, Any]) -> list[dict[str, Any]]:
    """kraken v2's answer to a subscribe request: one message per symbol."""
    params = request["params"]
    out = []
    for sym in params["symbol"]:
        result = {k: v for k, v in params.items() if k != "symbol"}
        result.update({"symbol": sym, "snapshot": True})
        if params["channel"] == "book":
            result.setdefault("depth", 10)
        out.append({
            "method": "subscribe", "req_id": request["req_id"], "result": result,
            "success": True, "time_in": iso_now(), "time_out": iso_now(),
        })  # fmt: skip
    return out


# ---------------------------------------------------------------------- loopback venue

Step = dict[str, Any] | str | asyncio.Event  # a message to send, "close", or wait for an event


class LiveVenue:
    """kraken's or kucoin's public endpoints on 127.0.0.1: kucoin's REST token handshake and
    book snapshot, and a websocket that greets, answers pings and subscriptions as the venue
    does, and plays one script (a list of steps) per connection, in order; then stays quiet.
    Any other HTTP request is recorded and answered 404."""

    def __init__(self, venue: str, scripts: list[list[Step]]) -> None:
        self.venue = venue
        self.scripts = scripts
        self.connections = 0
        self.subscriptions: list[Any] = []  # what each subscribe asked for
        self.rest: list[str] = []  # "METHOD /path?query" of every HTTP request
        self.ws_queries: list[dict[str, list[str]]] = []
        self.tokens = 0
        self.expired = 0  # kucoin tokens up to this number are expired
        self.ping_interval_ms = 18000  # kucoin's keepalive, as the bullet answer sets it
        self.lag_ms = 0
        self.handlers: set[asyncio.Task[Any]] = set()
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def bullet_public(self, request: web.Request) -> web.Response:
        """kucoin's public token: which instance server to dial, with which token."""
        self.rest.append(f"{request.method} {request.path_qs}")
        self.tokens += 1
        return web.json_response({
            "code": "200000",
            "data": {
                "token": f"{KUCOIN_TOKEN}{self.tokens}",
                "instanceServers": [{
                    "endpoint": f"{self.ws}/endpoint", "encrypt": True, "protocol": "websocket",
                    "pingInterval": self.ping_interval_ms, "pingTimeout": 10000,
                }],
            },
        })  # fmt: skip

    async def level2_20(self, request: web.Request) -> web.Response:
        """kucoin's REST book snapshot: the recorded one, stamped now."""
        self.rest.append(f"{request.method} {request.path_qs}")
        body = copy.deepcopy(fixture("kucoin", "orderbook_level2_20"))
        body["data"]["time"] = now_ms()
        return web.json_response(body)

    async def handler(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            self.rest.append(f"{request.method} {request.path_qs}")
            return web.json_response({"code": "404000", "msg": "Not Found"}, status=404)
        me = asyncio.current_task()
        assert me is not None
        self.handlers.add(me)
        try:
            return await self.serve(request)
        finally:
            self.handlers.discard(me)

    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        n = self.connections
        self.connections += 1
        self.ws_queries.append(parse_qs(request.query_string))
        script = self.scripts[n] if n < len(self.scripts) else []
        token = request.query.get("token", "")
        if self.venue == "kucoin" and int(token.removeprefix(KUCOIN_TOKEN) or 0) <= self.expired:
            expired = {"id": request.query.get("connectId"), "type": "error", "code": 401,
                       "data": "token is expired"}  # fmt: skip
            await ws.send_str(json.dumps(expired))
            await ws.close()
            return ws
        if self.venue == "kucoin":
            await ws.send_str(json.dumps({"id": request.query.get("connectId"), "type": "welcome"}))
        else:
            await ws.send_str(json.dumps({
                "channel": "status", "type": "update",
                "data": [{"api_version": "v2", "connection_id": 12393906104898154338,
                          "system": "online", "version": "2.0.10"}],
            }))  # fmt: skip
        player: asyncio.Task[None] | None = None
        try:
            async for msg in ws:  # keeps reading (pings, close) while the script plays
                if msg.type != WSMsgType.TEXT:
                    continue
                before = len(self.subscriptions)
                for answer in self.answer(json.loads(msg.data)):
                    await ws.send_str(json.dumps(answer))
                if player is None and len(self.subscriptions) > before:  # the first subscribe
                    player = asyncio.create_task(self.play(ws, script))
        finally:
            if player is not None:
                player.cancel()
                with contextlib.suppress(BaseException):
                    await player
        return ws

    def answer(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """The venue's answer to a ping or a subscribe request."""
        if self.venue == "kraken":
            if data.get("method") == "ping":
                return [{"method": "pong", "req_id": data.get("req_id"), "time_in": iso_now(),
                         "time_out": iso_now()}]  # fmt: skip
            assert data["method"] == "subscribe", data
            self.subscriptions.append(dict(data["params"]))
            return kraken_acks(data)
        if data.get("type") == "ping":
            return [{"id": data["id"], "type": "pong", "timestamp": time.time_ns() // 1000}]
        assert data["type"] == "subscribe" and data["response"] is True, data
        self.subscriptions.append(data["topic"])
        return [{"id": data["id"], "type": "ack"}]

    async def play(self, ws: web.WebSocketResponse, script: list[Step]) -> None:
        for step in script:
            if isinstance(step, asyncio.Event):
                await step.wait()
            elif step == "close":
                await ws.close()
                return
            else:
                await ws.send_str(json.dumps(self.stamp(step)))
                await asyncio.sleep(0.002)

    def stamp(self, msg: dict[str, Any]) -> dict[str, Any]:
        """The venue's time on a message, as it sends it: now, minus ``lag_ms`` (how long ago
        the venue made the update, e.g. the network latency)."""
        msg = copy.deepcopy(msg)
        ms = now_ms() - self.lag_ms
        data = msg.get("data")
        if msg.get("channel") == "book" and "timestamp" in data[0]:  # kraken book update
            data[0]["timestamp"] = iso_ms(ms)
        elif msg.get("subject") == "level1":
            data["timestamp"] = ms
        elif msg.get("subject") == "trade.l2update":
            data["time"] = ms
        return msg

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/v1/bullet-public", self.bullet_public)
        app.router.add_get("/api/v1/market/orderbook/level2_20", self.level2_20)
        app.router.add_route("*", "/{tail:.*}", self.handler)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for task in list(self.handlers):  # a script still waiting for an event
            task.cancel()
        if self.runner is not None:
            await self.runner.cleanup()


def point_at(ex: Any, server: LiveVenue) -> None:
    """Every URL of a ccxt.pro kraken/kucoin object to the loopback server: REST bases to its
    HTTP root, websockets to its ws root (kraken keeps the ``/v2`` path of its v2 API)."""
    api = ex.urls["api"]
    for key, value in list(api.items()):
        if isinstance(value, str):
            api[key] = server.http
    for key, value in list(api["ws"].items()):
        api["ws"][key] = server.ws + ("/v2" if value.endswith("/v2") else "")


# ---------------------------------------------------------------------- helpers


class Recorder:
    """An injected ``sleep``: records each backoff delay with the feed's state at that moment
    (right after the error), then yields without waiting."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.feed: CcxtMarketFeed | None = None
        self.calls: list[tuple[float, bool, str, int]] = []

    async def __call__(self, seconds: float) -> None:
        feed = self.feed
        assert feed is not None
        sym = self.symbol
        self.calls.append((seconds, feed.is_synced(sym), feed.state[sym].reason, feed.resyncs))
        await asyncio.sleep(0)


async def live_feed(
    venue: str,
    source: str | None,
    scripts: list[list[Step]],
    **kw: Any,
) -> tuple[CcxtMarketFeed, LiveVenue, Any]:
    """A live-mode feed from build_feed (``source`` None: the default config) streaming from a
    loopback server; the broker's REST object loaded its markets from the recorded fixtures."""
    rest, _ = await rest_exchange(venue)
    server = LiveVenue(venue, scripts)
    await server.start()
    cfg = vconf(venue) if source is None else vconf(venue, quote_source=source)
    feed = build_feed(
        venue, cfg, "live", rest, [SYMBOL[venue]], stale_after_s=60.0, max_spread_bps=500.0, **kw
    )
    assert feed.use_watch and feed.exchange is not rest
    assert not getattr(feed.exchange, "_engine_sandbox_guard", False)  # live: no sandbox fence
    point_at(feed.exchange, server)
    feed.exchange.timeout_on_exit = 0  # ccxt's close() waits 250 ms for TLS: none on loopback
    rest.timeout_on_exit = 0
    return feed, server, rest


async def shutdown(feed: CcxtMarketFeed, server: LiveVenue, rest: Any) -> None:
    await feed.close()
    await rest.close()
    await server.stop()


async def quote_where(
    feed: CcxtMarketFeed, cond: Callable[[Quote], bool], timeout: float = 1.5
) -> list[Quote]:
    """The feed's quotes up to and including the first for which ``cond`` holds."""
    got: list[Quote] = []
    quotes = feed.quotes()

    async def take() -> None:
        async for q in quotes:
            got.append(q)
            if cond(q):
                return

    try:
        await asyncio.wait_for(take(), timeout)
    finally:
        await quotes.aclose()
    return got


# ---------------------------------------------------------------------- auto mode


@pytest.mark.parametrize("venue", LIVE_VENUES)
async def test_auto_mode_picks_the_venue_stream_on_a_public_live_pro_object(venue: str) -> None:
    rest, _ = await rest_exchange(venue)
    rest.timeout_on_exit = 0
    vcfg = vconf(venue)
    assert not vcfg.testnet and vcfg.market_data == "auto" and vcfg.quote_source == "ticker"
    feed = build_feed(venue, vcfg, "live", rest, [SYMBOL[venue]], stale_after_s=5,
                      max_spread_bps=50)  # fmt: skip
    pro = feed.exchange
    pro.timeout_on_exit = 0
    try:
        assert isinstance(pro, getattr(ccxt_pro, venue)) and feed.use_watch
        assert feed.source == AUTO_SOURCE[venue]
        if venue == "kucoin":
            assert 'streaming "bidask" instead of "ticker"' in feed.note
            assert "carries no bid/ask sizes" in feed.note
        else:
            assert feed.note == ""
        assert not pro.apiKey and not pro.secret and not pro.password  # public: never keys
        assert pro.markets is rest.markets  # shared, never loaded again
        await feed.close()
        assert pro.closed_by_user and not rest.closed_by_user  # the feed closes only its own
    finally:
        await feed.close()
        await rest.close()


# ---------------------------------------------------------------------- streaming


@pytest.mark.parametrize(("venue", "source"), STREAMS)
async def test_quotes_arrive_over_the_live_websocket_and_the_symbol_syncs(
    venue: str, source: str
) -> None:
    sym = SYMBOL[venue]
    rows = [
        (r["bid_price"], r["ask_price"], r["bid_qty"], r["ask_qty"]) for r in book_ticker_rows(5)
    ]
    expected = [floats(r) for r in rows]
    stream = Stream(venue, source)
    book = (venue, source) == ("kucoin", "book")
    synced = asyncio.Event()  # the rest follows once the first quote was seen
    opening = stream.connect()
    msgs = [stream.quote(*r) for r in rows]
    if book:  # the first quote: the book synced on the REST snapshot
        script: list[Step] = [*opening, synced, *msgs]
        first_want = SYNCED_BOOK
    else:
        script, first_want = [msgs[0], synced, *msgs[1:]], expected[0]
    feed, server, rest = await live_feed(venue, source, [script])
    pro = feed.exchange
    try:
        assert not feed.is_synced(sym)
        first = await quote_where(feed, lambda q: True)
        assert [as_tuple(q) for q in first] == [first_want] and feed.is_synced(sym)
        synced.set()
        got = await quote_where(feed, lambda q: as_tuple(q) == expected[-1])
        assert feed.is_synced(sym)
        status = feed.status()
    finally:
        await shutdown(feed, server, rest)
    assert server.subscriptions == [stream.topic()] and server.connections == 1
    j = 0  # every quote is the next sent row, in order (ccxt may skip one, never alter one)
    for q in got:
        while j < len(expected) and expected[j] != as_tuple(q):
            j += 1
        assert j < len(expected), f"{q} is not the next row sent"
        j += 1
    assert got and all(q.venue == venue and q.symbol == sym for q in first + got)
    assert status["transport"] == "watch" and status["source"] == source
    assert status["symbols"][sym]["synced"] and status["resyncs"] == 0 and not feed.rejects
    if venue == "kucoin":  # the token handshake (and the book's snapshot), all on the loopback
        want = ["POST /api/v1/bullet-public"]
        if source == "book":
            want.append("GET /api/v1/market/orderbook/level2_20?symbol=BTC-USDT")
        assert server.rest == want
        query = server.ws_queries[0]
        assert query["token"] == [f"{KUCOIN_TOKEN}1"] and query["connectId"] == ["public"]
    else:
        assert server.rest == []  # kraken's public websocket needs no REST call
    assert pro.session is None and not pro.clients  # closed with the feed


RECONNECT_STREAMS = [("kraken", "ticker"), ("kraken", "bidask"), ("kraken", "book"),
                     ("kucoin", "bidask"), ("kucoin", "book")]  # fmt: skip


@pytest.mark.parametrize(("venue", "source"), RECONNECT_STREAMS)
async def test_a_dropped_connection_unsyncs_backs_off_reconnects_and_resyncs_on_fresh_data(
    venue: str, source: str
) -> None:
    sym = SYMBOL[venue]
    stream = Stream(venue, source)
    book = (venue, source) == ("kucoin", "book")
    seen, release = asyncio.Event(), asyncio.Event()
    opening = stream.connect()
    first_msgs = [] if book else [stream.quote(*Q1)]  # the kucoin book's first quote: its sync
    first_want = SYNCED_BOOK if book else floats(Q1)
    scripts: list[list[Step]] = [
        [*opening, *first_msgs, seen, "close"],  # data, then the server drops the socket
        ["close"],  # the first reconnect is dropped at once (after the subscribe)...
        ["close"],  # ...and the second
        [release],  # the third holds its data until released (filled in below)
    ]
    scripts[3] += [*stream.connect(), stream.quote(*Q2)]
    recorder = Recorder(sym)
    feed, server, rest = await live_feed(
        venue,
        source,
        scripts,
        sleep=recorder,
        backoff=lambda: Backoff(0.5, 30.0, rng=random.Random(7)),
    )
    recorder.feed = feed
    try:
        first = await quote_where(feed, lambda q: True)
        assert [as_tuple(q) for q in first] == [first_want] and feed.is_synced(sym)
        seen.set()
        # Reconnected and re-subscribed, but no fresh quote yet: still unsynced.
        await until(lambda: len(server.subscriptions) == 4, 1.5)
        await asyncio.sleep(0.02)
        assert not feed.is_synced(sym)
        assert feed.state[sym].reason.startswith("reconnecting after NetworkError")
        assert feed.resyncs == 0 and feed.state[sym].quotes == 1
        release.set()
        later = await quote_where(feed, lambda q: as_tuple(q) == floats(Q2))
        assert feed.is_synced(sym)
        status = feed.status()
    finally:
        await shutdown(feed, server, rest)
    if book:  # synced on a new REST snapshot first: the same book as before the outage
        assert [as_tuple(q) for q in later] in ([SYNCED_BOOK, floats(Q2)], [floats(Q2)])
    else:
        assert [as_tuple(q) for q in later] == [floats(Q2)]
    assert server.connections == 4
    assert server.subscriptions == [stream.topic()] * 4  # the same subscription each time
    if venue == "kucoin":
        # ccxt.pro negotiates the token once and dials the same URL again on every reconnect.
        assert server.rest.count("POST /api/v1/bullet-public") == 1 and server.tokens == 1
        assert all(q["token"] == [f"{KUCOIN_TOKEN}1"] for q in server.ws_queries)
        # The level2 book is synced again on a fresh REST snapshot after the reconnect.
        assert server.rest.count("GET /api/v1/market/orderbook/level2_20?symbol=BTC-USDT") == (
            2 if book else 0
        )
    # Each error: unsynced at once (before the wait), with the reason, then one delay.
    delays = [c[0] for c in recorder.calls]
    assert len(delays) == 3 and feed.state[sym].reconnects == 3
    assert all(
        not synced and reason.startswith("reconnecting") for _, synced, reason, _ in recorder.calls
    )
    ceilings = (0.5, 1.0, 2.0)  # growing, jittered: each in [ceiling/2, ceiling]
    assert delays == sorted(delays)
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    # One resync for the whole outage: the symbol was never synced in between.
    assert feed.resyncs == 1 and status["resyncs"] == 1
    entry = status["symbols"][sym]
    assert entry["resyncs"] == 1 and entry["backoff_s"] == delays[-1]
    assert entry["last_error"].startswith("NetworkError")


@pytest.mark.parametrize(("venue", "source"), TOP_OF_BOOK)
async def test_bad_live_quotes_are_rejected_counted_and_never_sync(venue: str, source: str) -> None:
    sym = SYMBOL[venue]
    stream = Stream(venue, source)
    release = asyncio.Event()
    bad: list[Step] = []
    for b, a, _ in BAD_QUOTES:  # NaN, crossed, negative
        stream.first = True  # kraken book: each a whole snapshot (a NaN level must not linger)
        bad.append(stream.quote(b, a, "1.5", "2.5"))
    good = stream.quote(*Q1)
    feed, server, rest = await live_feed(venue, source, [[*stream.connect(), *bad, release, good]])
    try:
        feed.start()
        await until(lambda: sum(feed.rejects.values()) == len(BAD_QUOTES), 1.5)
        assert not feed.is_synced(sym) and feed.state[sym].quotes == 0
        assert dict(feed.rejects) == {code: 1 for _, _, code in BAD_QUOTES}
        assert feed.state[sym].errors == 0  # rejected at the boundary, not a stream error
        release.set()
        q = await quote_where(feed, lambda q: True)
        assert [as_tuple(x) for x in q] == [floats(Q1)] and feed.is_synced(sym)
    finally:
        await shutdown(feed, server, rest)
    assert feed.resyncs == 0 and server.connections == 1  # the first sync is not a resync


async def test_a_crossed_kucoin_book_update_is_rejected_and_the_next_valid_one_counts() -> None:
    """The kucoin level2 book is built from deltas: an update that crosses it is rejected (and
    counted) without unsyncing or reconnecting; the delta that uncrosses it is a valid quote."""
    sym = SYMBOL["kucoin"]
    stream = Stream("kucoin", "book")
    synced, release = asyncio.Event(), asyncio.Event()
    opening = stream.connect()
    crossed = stream.kucoin_delta([["61690", "0.5"]], [])  # a bid above the 61689 ask
    uncross = stream.kucoin_delta([["61690", "0"]], [])
    feed, server, rest = await live_feed(
        "kucoin", "book", [[*opening, synced, crossed, release, uncross]]
    )
    try:
        first = await quote_where(feed, lambda q: True)
        assert [as_tuple(q) for q in first] == [SYNCED_BOOK]
        synced.set()
        await until(lambda: feed.rejects[CROSSED_BOOK] == 1, 1.5)
        assert feed.state[sym].errors == 0 and server.connections == 1
        release.set()
        again = await quote_where(feed, lambda q: True)
        assert [as_tuple(q) for q in again] == [SYNCED_BOOK] and feed.is_synced(sym)
    finally:
        await shutdown(feed, server, rest)
    assert dict(feed.rejects) == {CROSSED_BOOK: 1} and feed.resyncs == 0
    assert feed.state[sym].quotes == 2


async def test_an_expired_kucoin_token_is_negotiated_again_and_the_feed_resyncs() -> None:
    """kucoin's public token expires (after 24 h); ccxt.pro reuses the negotiated URL on every
    reconnect, so a reconnect after that dials with the old token and the server answers
    ``token is expired``. ccxt drops the cached URL then, but raises inside its own receive
    callback (the loop's exception handler gets the AuthenticationError) and stops reading:
    the feed only hears of it when a keepalive ping fails (ccxt's default 5 s on a redialled
    client, which does not get the bullet's ``pingInterval``; 0.1 s here). Then the feed backs
    off, negotiates a new token and resyncs."""
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    sym = SYMBOL["kucoin"]
    stream = Stream("kucoin", "bidask")
    seen = asyncio.Event()
    scripts: list[list[Step]] = [
        [stream.quote(*Q1), seen, "close"],
        [],  # the redial with the expired token: refused before any subscribe
        [stream.quote(*Q2)],
    ]
    recorder = Recorder(sym)
    feed, server, rest = await live_feed("kucoin", None, scripts, sleep=recorder)
    recorder.feed = feed
    server.ping_interval_ms = 100
    feed.exchange.streaming["keepAlive"] = 100  # ccxt's ping period for every new client
    try:
        first = await quote_where(feed, lambda q: True)
        assert [as_tuple(q) for q in first] == [floats(Q1)]
        server.expired = server.tokens  # the token expires; the server drops the connection
        seen.set()
        later = await quote_where(feed, lambda q: True)
        assert [as_tuple(q) for q in later] == [floats(Q2)] and feed.is_synced(sym)
    finally:
        await shutdown(feed, server, rest)
    assert server.tokens == 2 and server.rest == ["POST /api/v1/bullet-public"] * 2
    tokens = [q["token"] for q in server.ws_queries]
    assert tokens == [[f"{KUCOIN_TOKEN}1"], [f"{KUCOIN_TOKEN}1"], [f"{KUCOIN_TOKEN}2"]]
    assert feed.resyncs == 1 and len(recorder.calls) == 2
    assert all(not synced for _, synced, _, _ in recorder.calls)
    reasons = [reason for _, _, reason, _ in recorder.calls]
    assert reasons[0].startswith("reconnecting after NetworkError")  # the server's close
    assert reasons[1].startswith("reconnecting after RequestTimeout")  # the silent redial
    assert all("token is expired" in repr(c.get("exception")) for c in loop_errors)


# ---------------------------------------------------------------------- close


@pytest.mark.parametrize("venue", LIVE_VENUES)
async def test_close_leaves_no_tasks_no_sockets_no_sessions_and_no_warnings(venue: str) -> None:
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    stream = Stream(venue, AUTO_SOURCE[venue])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        feed, server, rest = await live_feed(venue, None, [[*stream.connect(), stream.quote(*Q1)]])
        assert feed.source == AUTO_SOURCE[venue]
        pro = feed.exchange
        first = await quote_where(feed, lambda q: True)
        consumer = asyncio.ensure_future(feed.quotes().__anext__())  # blocked: no more data
        await asyncio.sleep(0.01)
        tasks = list(feed._tasks)
        assert pro.clients and pro.session is not None  # a live socket and session to close
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
    assert [as_tuple(q) for q in first] == [floats(Q1)]
    unclosed = [w for w in caught if "nclosed" in str(w.message)]
    assert not unclosed and not loop_errors, (unclosed, loop_errors)


# ---------------------------------------------------------------------- regressions


async def test_kucoin_live_feed_streams_without_help_regression() -> None:
    stream = Stream("kucoin", "bidask")
    feed, server, rest = await live_feed("kucoin", None, [[*stream.connect(), stream.quote(*Q1)]])
    try:
        feed.start()
        await until(lambda: feed.state[SYMBOL["kucoin"]].errors > 0 or feed.state[
            SYMBOL["kucoin"]].quotes > 0, 1.0)  # fmt: skip
        st = feed.state[SYMBOL["kucoin"]]
        assert st.errors == 0, st.last_error  # was: "AttributeError: 'NoneType' object has
        assert st.quotes == 1 and server.connections == 1  # no attribute 'create_task'"
    finally:
        await shutdown(feed, server, rest)


async def test_kraken_book_feed_streams_at_the_default_depth_regression() -> None:
    stream = Stream("kraken", "book")
    feed, server, rest = await live_feed("kraken", "book", [[*stream.connect(), stream.quote(*Q1)]])
    try:
        feed.start()
        sym = SYMBOL["kraken"]
        await until(lambda: feed.state[sym].failed or feed.state[sym].quotes > 0, 1.0)
        st = feed.state[sym]
        assert not st.failed, st.reason  # was: "feed failed: NotSupported: kraken
        assert st.quotes == 1  # watchOrderBook accepts limit values of 10, 25, 100, 500 ..."
    finally:
        await shutdown(feed, server, rest)


async def test_kraken_book_update_after_an_untimed_snapshot_is_not_backwards_regression() -> None:
    sym = SYMBOL["kraken"]
    stream = Stream("kraken", "book")
    seen = asyncio.Event()
    opening = [*stream.connect(), stream.quote(*Q1)]  # the snapshot on subscribe: no time
    update = stream.quote(*Q2)  # made by kraken 50 ms before it arrives (the latency)
    feed, server, rest = await live_feed("kraken", "book", [[*opening, seen, update]])
    server.lag_ms = 50
    try:
        first = await quote_where(feed, lambda q: True)
        assert [as_tuple(q) for q in first] == [floats(Q1)]
        await asyncio.sleep(0.005)  # the update arrives a few ms after the snapshot
        seen.set()
        await until(lambda: feed.state[sym].quotes == 2 or sum(feed.rejects.values()) > 0, 1.0)
        assert not feed.rejects  # was: {"time_backwards": 1}
        later = await quote_where(feed, lambda q: True)
        assert [as_tuple(q) for q in later] == [floats(Q2)]
    finally:
        await shutdown(feed, server, rest)
