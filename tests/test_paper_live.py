"""Paper trading on live prices, end to end, offline: two venues' public websockets on 127.0.0.1.

The engine runs ``engine.mode = "paper"`` with ``[market] source = "venue"``: binance quotes
BTC/USDT and okx quotes ETH/USDT, each through ccxt.pro's real exchange classes speaking the
venue's real protocol to a loopback server (the servers of ``tests/test_venues_ws.py``); their
markets come from recorded REST answers. Orders go to the paper broker: a strategy buys on both
venues and fills at their prices, a kill at flatten sells both back, a dropped connection
reconnects, and no private endpoint or credential is ever touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cockpit.venue_state import venue_segments
from engine.config import Config, ConfigError, parse_config
from engine.datadir import JOURNAL_FILE
from engine.execution import PaperExecution
from engine.journal import read_rows
from engine.runtime import Engine
from engine.strategies.base import Strategy, StrategyParams
from engine.types import Action, Bar, DepthUpdate, PositionView, Quote, Signal
from engine.venues.source import VenueSource
from tests.conftest import default_dict, merge
from tests.test_venues_support import RecordedHttp, default_routes
from tests.test_venues_ws import LoopbackVenue, point_ws_at

BTC, ETH = "BTC/USDT", "ETH/USDT"
# (bid, ask, size) each venue streams for its symbol.
BOOK = {"binance": ("61000.00", "61001.00", "3.0"), "okx": ("3000.0", "3000.5", "40.0")}
# Environment variables a careless config might name: paper mode must never read them.
KEY_ENV = {"PAPER_LIVE_KEY": "paper-live-key-must-not-leak", "PAPER_LIVE_SECRET": "s3cr3t-xyz"}


class BuyEachOnce(Strategy):
    """Buys each of its symbols once: on every bar until a position shows (a buy the engine
    refused, e.g. on a symbol unsynced by a reconnect at that moment, is asked again on the next
    bar), then never again (a flatten is not bought back)."""

    kind = "buy_each_once"
    Params = StrategyParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held: set[str] = set()

    @property
    def warmup_bars(self) -> int:
        return 0

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        if position.qty:
            self.held.add(bar.symbol)
            return None
        if bar.symbol in self.held:
            return None
        return Signal(
            action=Action.BUY, rule="buy_each_once", reason="first bar", confidence=1.0, inputs={}
        )


# bybit's L2 book (price, size), best first: what its orderbook.50 stream sends as snapshots.
BYBIT_ASKS = [(61000.0, 0.5), (61001.0, 0.7), (61002.5, 1.0), (61004.0, 3.0)]
BYBIT_BIDS = [(60999.0, 0.6), (60998.0, 0.8), (60996.5, 1.2), (60995.0, 3.0)]


def quote(venue: str, seq: int) -> dict[str, Any]:
    """A market-data update as the venue sends it (binance bookTicker, okx bbo-tbt, a bybit
    orderbook.50 snapshot)."""
    if venue == "bybit":
        ts = time.time_ns() // 1_000_000
        return {
            "topic": "orderbook.50.BTCUSDT",
            "type": "snapshot",
            "ts": ts,
            "data": {
                "s": "BTCUSDT",
                "b": [[f"{p:.2f}", f"{q:.4f}"] for p, q in BYBIT_BIDS],
                "a": [[f"{p:.2f}", f"{q:.4f}"] for p, q in BYBIT_ASKS],
                "u": seq + 1,
                "seq": 7961638724 + seq,
            },
            "cts": ts - 1,
        }
    bid, ask, size = BOOK[venue]
    if venue == "binance":
        return {"u": 50093239218 + seq, "s": "BTCUSDT", "b": bid, "B": size, "a": ask, "A": size}
    return {
        "arg": {"channel": "bbo-tbt", "instId": "ETH-USDT"},
        "data": [
            {
                "asks": [[ask, size, "0", "3"]],
                "bids": [[bid, size, "0", "2"]],
                "ts": str(time.time_ns() // 1_000_000),
                "seqId": seq,
            }
        ],
    }


class StreamingVenue(LoopbackVenue):
    """A venue's public websocket on 127.0.0.1 (start and stop are the loopback venue's) that
    streams a fresh quote every ``every_s`` after each subscription, until closed;
    ``drop_after`` quotes into the first connection it closes the socket (the venue dropping
    us)."""

    def __init__(self, venue: str, every_s: float = 0.02, drop_after: int | None = None) -> None:
        super().__init__(venue, [])
        self.every_s = every_s
        self.drop_after = drop_after
        self._streams: dict[int, asyncio.Task[None]] = {}  # connection -> its quote stream

    async def subscribed(self, ws: web.WebSocketResponse, n: int) -> bool:
        async def stream() -> None:
            sent_here = 0
            while not ws.closed:
                await ws.send_str(json.dumps(quote(self.venue, self.sent)))
                self.sent += 1
                sent_here += 1
                if n == 0 and self.drop_after is not None and sent_here >= self.drop_after:
                    await ws.close()
                    return
                await asyncio.sleep(self.every_s)

        self._streams[n] = asyncio.create_task(stream())
        return False

    async def ended(self, n: int) -> None:
        task = self._streams.pop(n, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def paper_live_config(data_dir: Path, **venue_extra: Any) -> Config:
    data = merge(
        default_dict(),
        {
            "engine": {"data_dir": str(data_dir)},
            "market": {"source": "venue"},
            "venues": {
                "binance": {
                    "exchange": "binance",
                    "market_data": "websocket",
                    "quote_source": "bidask",
                    "symbols": [BTC],
                    **venue_extra,
                },
                "okx": {
                    "exchange": "okx",
                    "market_data": "websocket",
                    "quote_source": "bidask",
                    "symbols": [ETH],
                },
            },
            "safety": {"breakers": {"max_unreviewed_fills": 100_000}},
        },
    )
    data["strategies"] = [
        {
            "id": "buyer",
            "kind": "tests.test_paper_live:BuyEachOnce",
            "symbols": [BTC, ETH],
            "timeframe_s": 1,
            "sizing": {"model": "fixed_qty", "qty": 0.01},
            "approval": "auto",
        }
    ]
    return parse_config(data)


class Loopback:
    """Both venues' servers, and the hook that points the engine's exchange objects at them
    (REST objects answer from recordings; ccxt.pro objects dial the loopback websockets)."""

    def __init__(self, drop_binance_after: int | None = None) -> None:
        self.servers = {
            "binance": StreamingVenue("binance", drop_after=drop_binance_after),
            "okx": StreamingVenue("okx"),
            "bybit": StreamingVenue("bybit"),
        }
        self.http: dict[str, RecordedHttp] = {}
        self.exchanges: list[Any] = []

    def prepare_exchange(self, venue: str, ex: Any) -> None:
        self.exchanges.append(ex)
        if type(ex).__module__.startswith("ccxt.pro"):
            point_ws_at(ex, venue, self.servers[venue].base)
            self.http[f"{venue}-pro"] = RecordedHttp(ex, venue, [])  # no REST on the stream
        else:
            self.http[venue] = RecordedHttp(ex, venue, default_routes(venue))

    async def __aenter__(self) -> Loopback:
        for server in self.servers.values():
            await server.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for server in self.servers.values():
            await server.stop()


async def run_until(engine: Engine, cond: Any, timeout_s: float = 45.0) -> None:
    # A bound against a hang, not a timing assert: a loaded machine reconnects slowly.
    end = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        await engine.run(duration_s=0.2)


def position(engine: Engine, symbol: str) -> float:
    assert engine.core is not None
    pos = engine.core.portfolio.positions.get(symbol)
    return pos.qty if pos is not None else 0.0


async def test_paper_trades_two_venues_live_prices_and_flattens_on_a_kill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in KEY_ENV.items():
        monkeypatch.setenv(name, value)
    data_dir = tmp_path / "data"
    cfg = paper_live_config(data_dir, api_key_env="PAPER_LIVE_KEY", secret_env="PAPER_LIVE_SECRET")
    async with Loopback() as loop:
        engine = Engine(cfg, data_dir, prepare_exchange=loop.prepare_exchange)
        assert isinstance(engine.source, VenueSource)
        assert isinstance(engine.execution, PaperExecution)
        await engine.start()
        try:
            core = engine.core
            assert core is not None
            assert {s: i.venue for s, i in core.instruments.items()} == {
                BTC: "binance",
                ETH: "okx",
            }
            # Quotes in, a decision per symbol, paper fills at each venue's ask.
            await run_until(engine, lambda: position(engine, BTC) > 0 and position(engine, ETH) > 0)
            assert engine.source.market_gate(BTC) is None  # synced on fresh quotes
            snap = engine.snapshot()
            for venue in ("binance", "okx"):
                view = snap["venues"][venue]
                assert view["connected"] and view["paper"] and "reconciliation" not in view
                assert view["feed"]["transport"] == "watch"
                # What the Venues pane shows of it: the stream, synced, and no reconciliation.
                shown = " ".join(text for text, _ in venue_segments(venue, view, "paper"))
                assert "1/1 synced" in shown and "no reconciliation (paper)" in shown
            reply = await engine.command(
                "kill", {"level": "flatten", "reason": "paper live test"}, user="tester"
            )
            assert reply["ok"], reply
            await run_until(
                engine, lambda: position(engine, BTC) == 0 and position(engine, ETH) == 0
            )
        finally:
            await engine.stop()
    fills = [r.payload["fill"] for r in read_rows(data_dir / JOURNAL_FILE) if r.kind == "fill"]
    by_side = {(f["symbol"], f["side"]): f for f in fills}
    assert set(by_side) == {(BTC, "buy"), (ETH, "buy"), (BTC, "sell"), (ETH, "sell")}
    assert by_side[(BTC, "buy")]["venue"] == "binance" and by_side[(ETH, "buy")]["venue"] == "okx"
    # At the venue's own prices: buys at the ask, the flatten's sells at the bid.
    assert by_side[(BTC, "buy")]["price"] == pytest.approx(61001.0)
    assert by_side[(ETH, "buy")]["price"] == pytest.approx(3000.5)
    assert by_side[(BTC, "sell")]["price"] == pytest.approx(61000.0)
    assert by_side[(ETH, "sell")]["price"] == pytest.approx(3000.0)
    # Subscribed to each venue's public best-bid/offer stream, and nothing else was asked:
    assert loop.servers["binance"].subscriptions[0] == ["btcusdt@bookTicker"]
    assert loop.servers["okx"].subscriptions[0] == ["bbo-tbt:ETH-USDT"]
    for name, http in loop.http.items():
        for call in http.calls:
            assert call.method == "GET" and "order" not in call.path, (name, call)
            assert "account" not in call.path and "balance" not in call.path, (name, call)
    # Paper never reads keys: no exchange object holds one, the journal names none.
    for ex in loop.exchanges:
        assert not ex.apiKey and not ex.secret
    text = (data_dir / JOURNAL_FILE).read_bytes()
    for value in KEY_ENV.values():
        assert value.encode() not in text


async def test_a_dropped_venue_connection_reconnects_and_paper_trading_goes_on(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    async with Loopback(drop_binance_after=20) as loop:
        engine = Engine(
            paper_live_config(data_dir),
            data_dir,
            prepare_exchange=loop.prepare_exchange,
            feed_kwargs={"backoff": lambda: _fast_backoff()},
        )
        await engine.start()
        try:
            await run_until(engine, lambda: loop.servers["binance"].connections >= 2)
            await run_until(engine, lambda: position(engine, BTC) > 0)
            status = engine.snapshot()["venues"]["binance"]["feed"]
            assert status["symbols"][BTC]["reconnects"] >= 1
            assert status["symbols"][BTC]["synced"]
            assert engine.source.market_gate(BTC) is None
        finally:
            await engine.stop()
    assert len(loop.servers["binance"].subscriptions) >= 2  # subscribed again after the drop


def _fast_backoff() -> Any:
    from engine.venues.ratelimit import Backoff

    return Backoff(0.05, 0.2)


async def test_an_unsynced_symbol_refuses_orders_until_fresh_quotes_arrive(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    async with Loopback() as loop:
        engine = Engine(
            paper_live_config(data_dir), data_dir, prepare_exchange=loop.prepare_exchange
        )
        await engine.start()
        try:
            # Started, no quote yet: the gate names the symbol, the venue and why.
            why = engine.source.market_gate(BTC)
            assert why is not None and "BTC/USDT on binance is unsynced" in why
            await run_until(engine, lambda: engine.source.market_gate(BTC) is None)
        finally:
            await engine.stop()


def test_config_check_accepts_paper_on_venue_prices_and_names_what_is_missing(
    tmp_path: Path,
) -> None:
    cfg = paper_live_config(tmp_path / "d")
    assert cfg.engine.mode == "paper" and cfg.market.source == "venue"
    assert sorted(cfg.symbols()) == [BTC, ETH]
    no_venue = merge(default_dict(), {"market": {"source": "venue"}})
    with pytest.raises(ConfigError) as err:
        parse_config(no_venue)
    assert "needs at least one [venues.NAME]" in err.value.problems[0]
    both = merge(
        default_dict(),
        {
            "market": {"source": "venue"},
            "venues": {"a": {"exchange": "binance"}, "b": {"exchange": "okx"}},
        },
    )
    with pytest.raises(ConfigError) as err:
        parse_config(both)
    assert "would trade on venues a and b" in err.value.problems[0]
    # Every symbol's problem, one line each: one on two venues, one on none.
    split = merge(
        default_dict(),
        {
            "market": {"source": "venue"},
            "venues": {
                "a": {"exchange": "binance", "symbols": ["BTC/USDT"]},
                "b": {"exchange": "okx", "symbols": ["BTC/USDT"]},
            },
        },
    )
    split["strategies"] = [
        {"id": "s", "kind": "ema_cross", "symbols": [BTC, ETH], "timeframe_s": 1}
    ]
    with pytest.raises(ConfigError) as err:
        parse_config(split)
    assert err.value.problems == [
        "symbol BTC/USDT would trade on venues a and b: list each venue's symbols "
        "(venues.NAME.symbols = [...]) so every symbol has one",
        "symbol ETH/USDT is on no venue: add it to a venue's symbols (venues.NAME.symbols = [...])",
    ]
    testnet_sim = merge(
        default_dict(),
        {
            "engine": {"mode": "testnet"},
            "market": {"source": "simulated"},
            "venues": {"b": {"exchange": "binance", "api_key_env": "K", "secret_env": "S"}},
        },
    )
    with pytest.raises(ConfigError) as err:
        parse_config(testnet_sim)
    assert "testnet mode trades on the venues' own market data" in err.value.problems[0]


def big_buyer_config(data_dir: Path, venues: dict[str, Any], qty: float) -> Config:
    """Paper on ``venues``' prices, one strategy buying ``qty`` BTC once, limits that let a
    multi-level order through (the book walk is what is under test)."""
    data = merge(
        default_dict(),
        {
            "engine": {"data_dir": str(data_dir)},
            "market": {"source": "venue"},
            "portfolio": {"starting_cash": 1_000_000.0},
            "risk": {
                "max_order_notional": 500_000.0,
                "max_position_fraction": 1.0,
                "max_gross_exposure_fraction": 2.0,
            },
            "venues": venues,
        },
    )
    data["strategies"] = [
        {
            "id": "buyer",
            "kind": "tests.test_paper_live:BuyEachOnce",
            "symbols": [BTC],
            "timeframe_s": 1,
            "sizing": {"model": "fixed_qty", "qty": qty},
            "approval": "auto",
        }
    ]
    return parse_config(data)


async def test_paper_market_orders_walk_the_venues_live_l2_book(tmp_path: Path) -> None:
    """binance's real REST depth snapshot (tests/data) as the live book: a 2 BTC paper buy
    fills level by level at the book's prices, not at the top of book plus a model."""
    from tests.conftest import DEPTH_SNAPSHOT_JSON
    from tests.test_venues_support import R

    snapshot = json.loads(Path(DEPTH_SNAPSHOT_JSON).read_text())
    qty = 2.0
    data_dir = tmp_path / "data"
    cfg = big_buyer_config(
        data_dir, {"binance": {"exchange": "binance", "quote_source": "book"}}, qty
    )
    http: list[RecordedHttp] = []

    def prepare_exchange(venue: str, ex: Any) -> None:
        recorded = RecordedHttp(ex, venue, default_routes(venue))
        recorded.add(R("GET", r"/api/v3/depth", json.dumps(snapshot)))
        http.append(recorded)

    engine = Engine(
        cfg,
        data_dir,
        prepare_exchange=prepare_exchange,
        feed_kwargs={"transport": "poll", "poll_interval_s": 0.05},
    )
    await engine.start()
    try:
        await run_until(engine, lambda: position(engine, BTC) >= qty - 1e-9)
    finally:
        await engine.stop()
    fills = [r.payload["fill"] for r in read_rows(data_dir / JOURNAL_FILE) if r.kind == "fill"]
    assert sum(f["qty"] for f in fills) == pytest.approx(qty)
    paid = sum(f["qty"] * f["price"] for f in fills) / qty
    # The same walk by hand over the 20 levels the feed keeps.
    left, cost = qty, 0.0
    for price, size in snapshot["asks"][:20]:
        take = min(left, float(size))
        cost += take * float(price)
        left -= take
        if left <= 0:
            break
    assert left <= 0
    assert paid == pytest.approx(cost / qty, rel=1e-9)
    assert len(fills) > 1 and fills[0]["price"] == pytest.approx(61837.64)
    assert any("/api/v3/depth" in c.path for h in http for c in h.calls)


async def test_paper_market_orders_walk_a_book_streamed_over_websocket(tmp_path: Path) -> None:
    """bybit's orderbook.50 stream through ccxt.pro: a 2 BTC paper buy fills level by level at
    the streamed book's prices (0.5 at 61,000, 0.7 at 61,001, 0.8 at 61,002.5)."""
    qty = 2.0
    data_dir = tmp_path / "data"
    cfg = big_buyer_config(
        data_dir,
        {"bybit": {"exchange": "bybit", "market_data": "websocket", "quote_source": "book"}},
        qty,
    )
    async with Loopback() as loop:
        engine = Engine(cfg, data_dir, prepare_exchange=loop.prepare_exchange)
        await engine.start()
        try:
            await run_until(engine, lambda: position(engine, BTC) >= qty - 1e-9)
        finally:
            await engine.stop()
    assert loop.servers["bybit"].subscriptions[0] == ["orderbook.50.BTCUSDT"]
    fills = [r.payload["fill"] for r in read_rows(data_dir / JOURNAL_FILE) if r.kind == "fill"]
    assert [(f["qty"], f["price"]) for f in fills] == [
        pytest.approx((0.5, 61000.0)),
        pytest.approx((0.7, 61001.0)),
        pytest.approx((0.8, 61002.5)),
    ]
    assert {f["venue"] for f in fills} == {"bybit"}


def test_paper_on_a_venue_without_a_sandbox_names_the_testnet_line_to_remove(
    tmp_path: Path,
) -> None:
    """Paper mode asking for the sandbox's prices of a venue that has none: the fix is the
    `testnet` line (not "use paper mode", which it already is); without it the config runs."""
    data = merge(
        default_dict(),
        {
            "engine": {"data_dir": str(tmp_path / "d")},
            "market": {"source": "venue"},
            "venues": {"k": {"exchange": "kraken", "testnet": True}},
        },
    )
    data["strategies"] = [{"id": "s", "kind": "ema_cross", "symbols": [BTC], "timeframe_s": 1}]
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert err.value.problems == [
        "venues.k.testnet: kraken has no testnet (sandbox) in ccxt to read prices from; remove "
        "testnet = true (paper mode then reads its production prices, without keys)"
    ]
    del data["venues"]["k"]["testnet"]
    assert parse_config(data).venues["k"].exchange == "kraken"


@pytest.mark.parametrize("mode", ["paper", "testnet"])
def test_venue_market_data_without_a_strategy_symbol_is_refused_by_config_check(
    tmp_path: Path, mode: str
) -> None:
    """The venues are asked only for the strategies' symbols: with no strategy there is no
    market to read and the engine could not start, so `config check` says so (it accepted it,
    and the start then failed on "no venue offers any of the strategies' symbols")."""
    venue: dict[str, Any] = {"exchange": "binance"}
    if mode == "testnet":
        venue.update(api_key_env="K", secret_env="S")
    data = merge(
        default_dict(),
        {"engine": {"mode": mode, "data_dir": str(tmp_path / "d")}, "venues": {"b": venue}},
    )
    if mode == "paper":
        data["market"] = {**data.get("market", {}), "source": "venue"}
    data["strategies"] = []
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert err.value.problems == [
        "strategies: the venues' market data is read for the strategies' symbols and no "
        "strategy names one; add a [[strategies]] section with symbols = [...]"
    ]
    data["strategies"] = [{"id": "s", "kind": "ema_cross", "symbols": [BTC], "timeframe_s": 1}]
    assert parse_config(data).symbols() == [BTC]


class _FastFeed:
    """A feed that has quotes faster than anyone reads them (and, as a book stream, a new book
    with every quote)."""

    def __init__(self, source: str, n: int) -> None:
        self.source = source
        self.n = n
        self.state: dict[str, Any] = {}

    async def quotes(self) -> Any:
        for i in range(self.n):
            yield Quote(BTC, 60_000.0, 60_001.0, 1.0, 1.0, i + 1, i + 1, "x")
            if i % 1000 == 0:
                await asyncio.sleep(0)

    def depth(self, symbol: str) -> Any:
        from engine.venues.ccxt_market import BookDepth

        return BookDepth([(60_000.0, 1.0)], [(60_001.0, 1.0)], 1)  # a new object each time


async def test_quotes_waiting_for_the_engine_are_bounded(tmp_path: Path) -> None:
    """An engine that falls behind makes the feeds wait (their own bounded queues then drop the
    oldest, counted): the source never holds more than PENDING_MAX items."""
    from engine.venues import source as venue_source

    src = VenueSource(paper_live_config(tmp_path / "d"))
    src.feeds = {"x": _FastFeed("bidask", 3 * venue_source.PENDING_MAX)}
    batches = src.batches()
    try:
        first = await batches.__anext__()
        await asyncio.sleep(0.3)  # the engine is busy; the feed keeps producing
        second = await batches.__anext__()
    finally:
        await batches.aclose()
    assert first
    # What waited: at most the bound, plus the one quote the wait for the batch let in.
    assert venue_source.PENDING_MAX <= len(second) <= venue_source.PENDING_MAX + 1


async def test_max_events_counts_quotes_not_the_books_that_come_with_them(tmp_path: Path) -> None:
    src = VenueSource(paper_live_config(tmp_path / "d"))
    src.feeds = {"x": _FastFeed("book", 100)}
    got: list[Any] = []
    async for batch in src.batches(max_events=7):
        got.extend(batch)
    quotes = [e for e in got if type(e) is Quote]
    books = [e for e in got if type(e) is DepthUpdate]
    assert len(quotes) == 7 and len(books) >= 7
    assert all(
        type(a) is DepthUpdate and b is q
        for a, b, q in zip(got[::2], got[1::2], quotes, strict=True)
    )


async def test_a_venue_execution_gets_no_books_it_does_not_fill_on(tmp_path: Path) -> None:
    """Testnet and live: the venue fills our orders from its own book, so a book stream's
    depth is not copied along with the quotes (no per-quote work for nothing)."""
    from tests.test_venue_runtime import make_testnet_config

    src = VenueSource(make_testnet_config(tmp_path / "d"))
    src.feeds = {"x": _FastFeed("book", 100)}
    got: list[Any] = []
    async for batch in src.batches(max_events=5):
        got.extend(batch)
    assert [type(e) for e in got] == [Quote] * 5


async def test_a_stop_asked_while_a_venue_does_not_answer_ends_the_start(tmp_path: Path) -> None:
    """A venue that does not answer at start (a black-holed route): SIGTERM or Ctrl-C waited
    for its whole request timeout (10 s a venue, ccxt's), then the start ended in "venue
    error" (exit 1). The stop now ends the start at once, nothing recorded, the data
    directory free for the next engine. (Here the venue never answers: before, the start
    waited for ever.)"""
    from engine.runtime import StartStopped

    data_dir = tmp_path / "data"
    asked = asyncio.Event()

    async def never_answers(*_args: Any, **_kwargs: Any) -> Any:
        asked.set()
        await asyncio.Event().wait()

    def prepare_exchange(_venue: str, ex: Any) -> None:
        ex.fetch = never_answers  # ccxt's real exchange class, its HTTP never answered

    engine = Engine(paper_live_config(data_dir), data_dir, prepare_exchange=prepare_exchange)
    starting = asyncio.ensure_future(engine.start())
    await asyncio.wait_for(asked.wait(), 60)  # (bounds against a hang, not timings)
    assert not starting.done()
    engine.request_stop()
    with pytest.raises(StartStopped, match="nothing was traded or recorded"):
        await asyncio.wait_for(starting, 60)
    await engine.stop()
    assert engine.core is None and not (data_dir / JOURNAL_FILE).exists()
    again = Engine(paper_live_config(data_dir), data_dir)
    again.data_dir_lock.acquire()  # not held by the stopped start
    again.data_dir_lock.release()
