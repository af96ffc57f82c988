"""Testnet mode end to end: the engine (venue execution and source) on a loopback fake venue.

ccxt's real binance class, in sandbox mode, its URLs pointed at the aiohttp server of
``tests/test_venues_fakevenue.py`` (extended here with tickers and fills). A tiny strategy buys on
its first bar; the order goes through the journal (write-ahead) to the venue, the fill comes back
through the broker's poll, a kill switch cancels at the venue and confirms, and a crash between
"intent durable" and "order acknowledged" is recovered on restart without a second order.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from engine.config import Config, parse_config
from engine.journal import read_rows, verify_journal
from engine.runtime import JOURNAL_FILE, Engine
from engine.strategies.base import Strategy, StrategyParams
from engine.types import Action, Bar, OrderStatus, PositionView, Signal
from engine.venues.execution import VenueExecution
from tests.conftest import default_dict, merge
from tests.test_venues_fakevenue import FakeVenue, VOrder
from tests.test_venues_support import ENV, fixture, venue_env

SYM = "BTC/USDT"
PRICE = 61686.0


class BuyOnce(Strategy):
    """Buys once, on its first bar (a strategy forced to act)."""

    kind = "buy_once"
    Params = StrategyParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.done = False

    @property
    def warmup_bars(self) -> int:
        return 0

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        if self.done or position.qty:
            return None
        self.done = True
        return Signal(
            action=Action.BUY, rule="buy_once", reason="first bar", confidence=1.0, inputs={}
        )


class TradingVenue(FakeVenue):
    """The binance fake venue plus fresh tickers and (optionally) fills of created orders."""

    def __init__(self, *, auto_fill: bool = True) -> None:
        super().__init__("binance", sandbox=True)
        self.auto_fill = auto_fill
        self.trades: list[dict[str, Any]] = []

    def creates(self) -> int:
        return sum(1 for h in self.hits if h.method == "POST" and h.path.endswith("/api/v3/order"))

    def fill(self, o: VOrder) -> None:
        o.status = "filled"
        qty = float(o.qty)
        self.trades.append(
            {
                "symbol": o.symbol,
                "id": 3735693016 + len(self.trades),
                "orderId": int(o.oid),
                "orderListId": -1,
                "price": f"{PRICE:.8f}",
                "qty": o.qty,
                "quoteQty": f"{PRICE * qty:.8f}",
                "commission": f"{PRICE * qty * 0.001:.8f}",
                "commissionAsset": "USDT",
                "time": self.now_ms(),
                "isBuyer": o.side.upper() == "BUY",
                "isMaker": False,
                "isBestMatch": True,
            }
        )

    async def _binance(self, request: web.Request, body: str) -> tuple[int, Any]:
        path, method = request.path, request.method
        if "/ticker/" in path:
            ticker = fixture("binance", "ticker_24hr")
            ticker["closeTime"] = self.now_ms()
            return 200, ticker
        status, payload = await super()._binance(request, body)
        created = status == 200 and path.endswith("/api/v3/order") and method == "POST"
        if created and self.auto_fill:  # filled right after the answer: learned by polling
            self.fill(self.orders[payload["clientOrderId"]])
        if status == 200 and path.endswith("/myTrades"):
            return 200, list(self.trades)
        return status, payload

    def _binance_order(self, o: VOrder, transact: bool = False) -> dict[str, Any]:
        out = super()._binance_order(o, transact)
        if o.status == "filled":
            out.update(
                status="FILLED",
                executedQty=o.qty,
                cummulativeQuoteQty=f"{PRICE * float(o.qty):.8f}",
                isWorking=False,
            )
        return out


def make_testnet_config(data_dir: Path) -> Config:
    data = merge(
        default_dict(),
        {
            "engine": {"mode": "testnet", "data_dir": str(data_dir)},
            "market": {"simulated": {"symbols": {SYM: {"initial_price": PRICE}}}},
            "venues": {
                "binance": {
                    "exchange": "binance",
                    "testnet": True,
                    "api_key_env": ENV["apiKey"],
                    "secret_env": ENV["secret"],
                }
            },
            "safety": {
                "breakers": {
                    "consecutive_losses": 1000,
                    "global_consecutive_losses": 1000,
                    "max_unreviewed_fills": 100_000,
                }
            },
        },
    )
    data["strategies"] = [
        {
            "id": "buyer",
            "kind": "tests.test_venue_runtime:BuyOnce",
            "symbols": [SYM],
            "timeframe_s": 1,
            "sizing": {"model": "fixed_qty", "qty": 0.001},
            "approval": "auto",
        }
    ]
    return parse_config(data)


def venue_engine(
    cfg: Config,
    data_dir: Path,
    server: TradingVenue,
    *,
    also: Any = None,
    servers: dict[str, Any] | None = None,
    **kw: Any,
) -> Engine:
    """An engine in testnet mode on the loopback venue (``servers`` by venue name for several), fast
    timeouts and polls; ``also(broker)`` runs after the default preparation."""

    def prepare(broker: Any) -> None:
        (servers or {}).get(broker.venue, server).point(broker.exchange)
        broker.exchange.enableRateLimit = False
        if also is not None:
            also(broker)

    engine = Engine(
        cfg,
        data_dir,
        broker_kwargs={"timeout_ms": 2_000, "rate_per_s": 200.0},
        prepare=prepare,
        feed_kwargs={"transport": "poll", "poll_interval_s": 0.1},
        poll_s=0.2,
        **kw,
    )
    assert isinstance(engine.execution, VenueExecution)
    return engine


async def run_until(engine: Engine, cond: Any, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        await engine.run(duration_s=0.3)


def rows(data_dir: Path) -> list[Any]:
    return list(read_rows(data_dir / JOURNAL_FILE))


@pytest.fixture
async def server() -> Any:
    srv = TradingVenue()
    await srv.start()
    yield srv
    await srv.stop()


def test_the_mode_and_source_choose_the_engine_parts(tmp_path: Path) -> None:
    from engine.execution import PaperExecution
    from engine.sources import PacedSource
    from engine.venues.execution import VenueExecution
    from engine.venues.source import VenueSource
    from tests.conftest import fast_config

    paper = Engine(fast_config(tmp_path / "d"), tmp_path / "d")
    assert isinstance(paper.execution, PaperExecution) and isinstance(paper.source, PacedSource)
    testnet = Engine(make_testnet_config(tmp_path / "t"), tmp_path / "t")
    assert isinstance(testnet.execution, VenueExecution)
    assert isinstance(testnet.source, VenueSource)


async def test_testnet_order_reaches_the_venue_once_and_fills_by_poll(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    venue_env(monkeypatch)
    data_dir = tmp_path / "data"
    engine = venue_engine(make_testnet_config(data_dir), data_dir, server)
    await engine.start()
    try:
        assert engine.execution.brokers["binance"].halted_reason == ""
        await run_until(engine, lambda: bool(engine.core and engine.core.counters["fills"]))
        core = engine.core
        assert core is not None
        assert core.portfolio.positions[SYM].qty == pytest.approx(0.001)
        assert not core.open_orders
    finally:
        await engine.stop()
    assert server.creates() == 1
    assert server.bad_signatures == 0
    journal = rows(data_dir)
    intents = [r.payload["intent"] for r in journal if r.kind == "intent"]
    assert [i["outcome"] for i in [r.payload for r in journal if r.kind == "intent"]] == [
        "submitted"
    ]
    coid = intents[0]["intent_id"]
    vcid = engine.execution.brokers["binance"].venue_client_id(coid)  # type: ignore[attr-defined]
    assert list(server.orders) == [vcid]
    seq_intent = next(r.seq for r in journal if r.kind == "intent")
    orders = [r for r in journal if r.kind == "order"]
    fills = [r for r in journal if r.kind == "fill"]
    assert orders and all(r.payload["order"]["client_order_id"] == coid for r in orders)
    assert [f.payload["fill"]["client_order_id"] for f in fills] == [coid]
    assert seq_intent < orders[0].seq < fills[0].seq
    assert orders[-1].payload["order"]["status"] == str(OrderStatus.FILLED)
    assert verify_journal(data_dir / JOURNAL_FILE).ok


async def test_kill_at_halt_cancels_at_the_venue_and_confirms(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    venue_env(monkeypatch)
    server.auto_fill = False  # the order rests at the venue
    data_dir = tmp_path / "data"
    engine = venue_engine(make_testnet_config(data_dir), data_dir, server)
    await engine.start()
    try:
        await run_until(
            engine,
            lambda: any(
                o.status is OrderStatus.NEW
                for o in (engine.core.open_orders.values())  # type: ignore[union-attr]
            ),
        )
        assert [o.status for o in server.orders.values()] == ["open"]
        reply = await engine.command("kill", {"level": "halt", "reason": "test"})
        assert reply["ok"], reply
        assert engine.execution.venue_kill == {"binance": True}
        assert [o.status for o in server.orders.values()] == ["canceled"]
        assert engine.core is not None and not engine.core.open_orders
        # Halted: nothing more goes out, however long it runs.
        await engine.run(duration_s=0.5)
    finally:
        await engine.stop()
    assert server.creates() == 1
    assert any(h.method == "DELETE" and h.path.endswith("/openOrders") for h in server.hits)
    last = [r for r in rows(data_dir) if r.kind == "order"][-1].payload["order"]
    assert last["status"] == str(OrderStatus.CANCELED)
    assert verify_journal(data_dir / JOURNAL_FILE).ok


class Crash(BaseException):
    """The process dies (kill -9) right after the order went out, before its answer."""


async def test_crash_between_durable_intent_and_ack_recovers_without_duplicate(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    venue_env(monkeypatch)
    server.auto_fill = False
    data_dir = tmp_path / "data"
    cfg = make_testnet_config(data_dir)

    class CrashingEngine(Engine):
        async def _submit(self, sub: Any) -> None:
            assert self.journal is not None
            await self.journal.flush()  # the intent is durable
            broker = self.execution.brokers["binance"]  # type: ignore[attr-defined]
            o = sub.order
            await broker.exchange.create_order(
                o.symbol,
                "market",
                str(o.side),
                o.qty,
                None,
                {"clientOrderId": broker.venue_client_id(o.client_order_id)},
            )
            raise Crash

    first = venue_engine(cfg, data_dir, server)
    crashing = CrashingEngine(
        cfg,
        data_dir,
        broker_kwargs=first.execution._broker_kwargs,  # type: ignore[attr-defined]
        prepare=first.execution._prepare,  # type: ignore[attr-defined]
        feed_kwargs=first.source._feed_kwargs,  # type: ignore[attr-defined]
        poll_s=0.2,
    )
    await crashing.start()
    with pytest.raises(Crash):
        await crashing.run(duration_s=10)
    # kill -9: nothing else is written; the connections just go away.
    assert crashing.journal is not None
    await crashing.journal.close()
    await crashing._close_parts()
    crashing.data_dir_lock.release()  # the OS drops a dead process's lock
    assert server.creates() == 1
    journal = rows(data_dir)
    coid = next(r.payload["intent"]["intent_id"] for r in journal if r.kind == "intent")
    assert not [r for r in journal if r.kind == "order"]

    restarted = venue_engine(cfg, data_dir, server)
    await restarted.start()
    try:
        assert restarted.restored.unacknowledged[0].client_order_id == coid
        core = restarted.core
        assert core is not None
        assert core.open_orders[coid].status is OrderStatus.NEW  # found by client id, adopted
        assert restarted.execution.brokers["binance"].halted_reason == ""
        vcid = restarted.execution.brokers["binance"].venue_client_id(coid)  # type: ignore[attr-defined]
        server.fill(server.orders[vcid])
        await restarted.execution.poll_once()
        assert core.portfolio.positions[SYM].qty == pytest.approx(0.001)
        assert not core.open_orders
    finally:
        await restarted.stop()
    assert server.creates() == 1  # never resent
    assert list(server.orders) == [vcid]
    journal = rows(data_dir)
    assert [r.payload["fill"]["client_order_id"] for r in journal if r.kind == "fill"] == [coid]
    assert verify_journal(data_dir / JOURNAL_FILE).ok


async def test_an_unreachable_venue_at_start_fails_closed_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing answers (a closed loopback port): start refuses, names the venue problem and
    the next step, sends nothing, and never shows a key."""
    from engine.venues.exchanges import VenueStartError
    from tests.test_venues_support import KEYS

    venue_env(monkeypatch)
    import re

    def prepare(broker: Any) -> None:
        # Every URL to the discard port on loopback: the connection is refused at once.
        ex = broker.exchange

        def repoint(value: Any) -> Any:
            if isinstance(value, str):
                return re.sub(r"^https?://[^/]+", "http://127.0.0.1:9", value)
            if isinstance(value, dict):
                return {k: repoint(v) for k, v in value.items()}
            return value

        ex.urls = {k: repoint(v) if k in ("api", "test") else v for k, v in ex.urls.items()}
        ex.enableRateLimit = False

    data_dir = tmp_path / "data"
    engine = Engine(
        make_testnet_config(data_dir),
        data_dir,
        broker_kwargs={"timeout_ms": 1_000},
        prepare=prepare,
    )
    with pytest.raises(VenueStartError) as info:
        await engine.start()
    message = str(info.value)
    assert message.startswith("binance did not answer at start (")
    assert "cockpit venues check" in message
    assert "\n" not in message
    assert all(secret not in message for secret in KEYS.values())
