"""Native venue stops (issue 15 item 2, ``[venues.X] native_stops = true``): the protective
stop of a position rests at the venue as a stop order, placed after the entry fills, moved with
the trail (cancel, then the new one), cancelled with the position, and a restarted engine takes
the venue's stop back by client order id instead of placing a second one.

End to end: ccxt's real binance class against the loopback fake venue of
``tests/test_venue_runtime.py`` (extended here with STOP_LOSS orders that the test triggers).
The trail is exercised on the core with a stub venue (a trail needs bars; the loopback feed
serves one ticker price)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from aiohttp import web

from engine.checks import ceil_to_step
from engine.config import Config, ConfigError, parse_config
from engine.core import CancelOrder, EngineCore, SubmitOrder
from engine.events import DecisionMade, IntentChecked
from engine.execution import UnsupportedMode
from engine.journal import verify_journal
from engine.portfolio import Portfolio
from engine.runtime import JOURNAL_FILE
from engine.types import (
    NS_PER_SECOND,
    Bar,
    Fill,
    Instrument,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
    OrderUpdate,
    PositionView,
    Quote,
)
from engine.venues.ccxt_broker import native_stops_problem, native_stops_supported
from tests.test_exits import EnterOnce
from tests.test_venue_runtime import (
    PRICE,
    SYM,
    TradingVenue,
    make_testnet_config,
    rows,
    run_until,
    venue_engine,
)
from tests.test_venues_fakevenue import VOrder
from tests.test_venues_support import venue_env

STOP_PCT = 2.0


class StopVenue(TradingVenue):
    """The trading fake venue, with stop orders (its recorded BTCUSDT takes STOP_LOSS_LIMIT, not
    STOP_LOSS, as binance spot does): they rest until the test triggers one (``trigger``),
    which fills it at its stop price."""

    def __init__(self) -> None:
        super().__init__(auto_fill=True)
        self.stop_prices: dict[str, str] = {}

    def stops(self, status: str | None = None) -> list[VOrder]:
        return [
            o
            for o in self.orders.values()
            if o.kind.startswith("STOP_LOSS") and (status is None or o.status == status)
        ]

    async def _binance(self, request: web.Request, body: str) -> tuple[int, Any]:
        if request.path.endswith("/api/v3/order") and request.method == "POST":
            q = dict(parse_qsl(body))
            if str(q.get("type", "")).startswith("STOP_LOSS"):
                self.stop_prices[q["newClientOrderId"]] = q["stopPrice"]
                self.auto_fill = False  # a stop rests until triggered
                try:
                    return await super()._binance(request, body)
                finally:
                    self.auto_fill = True
        return await super()._binance(request, body)

    def trigger(self, o: VOrder) -> None:
        """The market reached the stop: it fills (at its stop price)."""
        price = float(self.stop_prices[o.vcid])
        self.fill(o)
        self.trades[-1].update(
            price=f"{price:.8f}",
            quoteQty=f"{price * float(o.qty):.8f}",
            commission=f"{price * float(o.qty) * 0.001:.8f}",
        )

    def _binance_order(self, o: VOrder, transact: bool = False) -> dict[str, Any]:
        out = super()._binance_order(o, transact)
        if o.vcid in self.stop_prices:
            out["stopPrice"] = self.stop_prices[o.vcid]
        return out


def native_config(data_dir: Path, native: bool = True) -> Config:
    cfg = make_testnet_config(data_dir)
    data = cfg.model_dump(mode="json", exclude_unset=False)
    data["venues"]["binance"]["native_stops"] = native
    data["strategies"][0]["exits"] = {"stop_loss_pct": STOP_PCT}
    return parse_config(data)


@pytest.fixture
async def venue() -> Any:
    srv = StopVenue()
    await srv.start()
    yield srv
    await srv.stop()


def expected_stop() -> float:
    return ceil_to_step(PRICE * (1 - STOP_PCT / 100), 0.01)


async def test_the_stop_rests_at_the_venue_after_the_entry_and_fires_there(
    monkeypatch: Any, tmp_path: Path, venue: StopVenue
) -> None:
    venue_env(monkeypatch)
    data_dir = tmp_path / "data"
    engine = venue_engine(native_config(data_dir), data_dir, venue)
    await engine.start()
    try:
        await run_until(engine, lambda: bool(venue.stops()))
        core = engine.core
        assert core is not None
        (stop,) = venue.stops()
        assert stop.side == "SELL" and float(stop.qty) == pytest.approx(0.001)
        assert float(venue.stop_prices[stop.vcid]) == pytest.approx(expected_stop())
        # Binance spot's BTCUSDT takes no STOP_LOSS: a stop-limit, its limit 100 bps beyond.
        assert stop.kind == "STOP_LOSS_LIMIT"
        assert float(stop.price) == pytest.approx(expected_stop() * 0.99, abs=0.01)
        (view,) = core.exits_view(SYM)
        assert view["native_stop"] is True
        # The engine does not fire the stop itself while the venue holds it, whatever the
        # price: its order is the venue's.
        (order,) = [o for o in core.open_orders.values() if o.order_type is OrderType.STOP_MARKET]
        assert order.stop_price == pytest.approx(expected_stop())
        broker = engine.execution.brokers["binance"]  # type: ignore[attr-defined]
        assert broker.venue_client_id(order.client_order_id) == stop.vcid
        venue.trigger(stop)
        await run_until(engine, lambda: not core.portfolio.positions[SYM].qty)
        assert not core.open_orders
        assert core.exit_stats["stop_loss"].count == 1
        assert not core.exits_view(SYM)
    finally:
        await engine.stop()
    journal = rows(data_dir)
    decisions = [r.payload["decision"] for r in journal if r.kind == "decision"]
    placed = [d for d in decisions if d["rule"] == "stop_loss"]
    assert len(placed) == 1 and "held at binance (native stop)" in placed[0]["reason"]
    assert placed[0]["entry_decision_id"]  # linked to the entry it protects
    intents = [r.payload["intent"] for r in journal if r.kind == "intent"]
    assert [i["order_type"] for i in intents] == ["market", "stop_market"]
    assert intents[1]["reduce_only"] and intents[1]["origin"] == "exit"
    fills = [r.payload["fill"] for r in journal if r.kind == "fill"]
    assert fills[-1]["client_order_id"] == intents[1]["intent_id"]
    assert fills[-1]["price"] == pytest.approx(expected_stop())
    assert verify_journal(data_dir / JOURNAL_FILE).ok


async def test_a_restart_takes_the_venue_stop_back_instead_of_placing_another(
    monkeypatch: Any, tmp_path: Path, venue: StopVenue
) -> None:
    venue_env(monkeypatch)
    data_dir = tmp_path / "data"
    engine = venue_engine(native_config(data_dir), data_dir, venue)
    await engine.start()
    try:
        await run_until(engine, lambda: bool(venue.stops()))
    finally:
        await engine.stop()
    creates = venue.creates()
    again = venue_engine(native_config(data_dir), data_dir, venue)
    await again.start()
    try:
        await again.run(duration_s=1.0)
        core = again.core
        assert core is not None
        assert again.execution.brokers["binance"].halted_reason == ""  # reconciled
        assert venue.creates() == creates  # no second stop, no second entry
        (view,) = core.exits_view(SYM)
        assert view["native_stop"] is True
        (stop,) = venue.stops("open")
        venue.trigger(stop)
        await run_until(again, lambda: not core.portfolio.positions[SYM].qty)
        assert core.exit_stats["stop_loss"].count == 1
    finally:
        await again.stop()


async def test_without_native_stops_the_stop_stays_engine_side(
    monkeypatch: Any, tmp_path: Path, venue: StopVenue
) -> None:
    venue_env(monkeypatch)
    data_dir = tmp_path / "data"
    engine = venue_engine(native_config(data_dir, native=False), data_dir, venue)
    await engine.start()
    try:
        await run_until(engine, lambda: bool(engine.core and engine.core.exits_view(SYM)))
        await engine.run(duration_s=0.5)
        assert not venue.stops()
        (view,) = engine.core.exits_view(SYM)  # type: ignore[union-attr]
        assert view["native_stop"] is False and view["stop"] == pytest.approx(PRICE * 0.98)
    finally:
        await engine.stop()


async def test_native_stops_need_a_venue_that_has_stop_orders(
    monkeypatch: Any, tmp_path: Path, venue: StopVenue
) -> None:
    import ccxt

    for name in ("binance", "bybit", "okx", "kraken", "kucoin"):
        assert native_stops_supported(getattr(ccxt, name)()), name  # ccxt can place them...
    assert native_stops_problem(ccxt.binance()) == ""
    for name in ("bybit", "okx", "kraken", "kucoin"):  # ...the engine reconciles binance's
        assert "native stops: binance only" in native_stops_problem(getattr(ccxt, name)())
    with pytest.raises(ConfigError, match="native_stops"):
        parse_config({"venues": {"binance": {"exchange": "binance", "native_stops": "maybe"}}})

    def no_stops(broker: Any) -> None:
        broker.exchange.has = {
            **broker.exchange.has,
            "createStopLossOrder": False,
            "createStopMarketOrder": False,
            "createStopOrder": False,
        }

    venue_env(monkeypatch)
    data_dir = tmp_path / "data"
    engine = venue_engine(native_config(data_dir), data_dir, venue, also=no_stops)
    with pytest.raises(UnsupportedMode) as err:
        await engine.start()
    await engine.stop()  # safe after a failed start: lets go of the data directory
    text = str(err.value)
    assert "venues.binance.native_stops = true" in text and "native_stops = false" in text
    assert "cannot place stop-loss orders" in text
    assert "\n" not in text
    assert venue.creates() == 0


# ---------------------------------------------------------------- the core with a stub venue


class StubVenue:
    """A venue that acknowledges every order, cancels on request and fills a stop when told."""

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.n = 0

    def submit(self, order: Order, now: int) -> list[Any]:
        own = order.copy()
        own.move_to(OrderStatus.NEW, now)
        if own.order_type is OrderType.STOP_MARKET:
            self.orders[own.client_order_id] = own
            return [OrderUpdate(own.copy(), now)]
        return [OrderUpdate(own.copy(), now), *self._fill(own, 100.0, now)]

    def _fill(self, o: Order, price: float, now: int) -> list[Any]:
        self.n += 1
        f = Fill(f"f{self.n}", o.client_order_id, o.strategy_id, o.symbol, "sim", o.side,
                 o.remaining, price, 0.0, Liquidity.TAKER, now)  # fmt: skip
        o.filled_qty, o.avg_fill_price = o.qty, price
        o.move_to(OrderStatus.FILLED, now)
        self.orders.pop(o.client_order_id, None)
        return [f, OrderUpdate(o.copy(), now)]

    def cancel(self, coid: str, now: int, reason: str) -> list[Any]:
        o = self.orders.pop(coid, None)
        if o is None:
            return []
        o.move_to(OrderStatus.CANCELED, now, reason)
        return [OrderUpdate(o.copy(), now)]


class Harness:
    def __init__(self, exits: dict[str, Any]) -> None:
        cfg = parse_config(
            {
                "market": {"simulated": {"symbols": {"X/USDT": {"initial_price": 100.0}}}},
                "strategies": [
                    {
                        "id": "s1",
                        "kind": "ema_cross",
                        "symbols": ["X/USDT"],
                        "timeframe_s": 1,
                        "approval": "auto",
                        "sizing": {"model": "fixed_qty", "qty": 1.0},
                        "exits": exits,
                    }
                ],
            }
        )
        inst = {"X/USDT": Instrument("X/USDT", "sim", 0.01, 0.001, 0.0, 5.0)}
        self.core = EngineCore(cfg, [EnterOnce("s1", "X/USDT")], inst, Portfolio(100_000.0))
        self.core.native_stop_venues = {"sim": 0.01}  # 100 bps of overrun, then the engine
        self.venue = StubVenue()
        self.events: list[Any] = []
        self.cancels: list[CancelOrder] = []
        self.ts = 1_700_000_000 * NS_PER_SECOND

    def handle(self, items: Iterable[Any]) -> None:
        core = self.core
        for item in items:
            if type(item) is SubmitOrder:
                self.handle(core.on_broker(self.venue.submit(item.order, core.now)))
            elif type(item) is CancelOrder:
                self.cancels.append(item)
                done = self.venue.cancel(item.client_order_id, core.now, item.reason)
                self.handle(core.on_broker(done))
            else:
                self.events.append(item)

    def bar(self, o: float, h: float, lo: float, c: float) -> None:
        bar = Bar("X/USDT", self.ts, 1, o, h, lo, c, 1e9, "sim")
        self.ts += NS_PER_SECOND
        core = self.core
        assert core.admit_bar(bar)
        while fired := core.bar_exits(bar):
            self.handle(fired)
        self.handle(core.process_bar(bar))

    def quote(self, mid: float) -> None:
        self.ts += NS_PER_SECOND
        q = Quote("X/USDT", mid - 0.005, mid + 0.005, 50.0, 50.0, self.ts, self.ts, "sim")
        out = self.core.on_quote(q)
        assert out is not None
        self.handle(out)

    def stops(self) -> list[Order]:
        return [o for o in self.venue.orders.values() if o.order_type is OrderType.STOP_MARKET]


def test_the_venue_stop_moves_with_the_trail_and_the_engine_never_fires_it_itself() -> None:
    h = Harness({"trailing_atr": 2.0, "atr_period": 3})
    for _ in range(4):  # ATR warms up on quiet bars; the entry fills on the first
        h.bar(100.0, 100.5, 99.5, 100.0)
    (stop,) = h.stops()
    assert stop.side == "sell" and stop.qty == 1.0
    first = stop.stop_price
    assert first is not None and first < 100.0
    h.bar(100.0, 103.0, 100.0, 103.0)  # a new high: the trail rises
    (moved,) = h.stops()
    assert moved.client_order_id != stop.client_order_id
    assert moved.stop_price is not None and moved.stop_price > first
    assert any("venue stop moves" in c.reason for c in h.cancels)
    # A bar through the trail: the venue holds the stop, the engine sends nothing itself.
    h.bar(103.0, 103.0, 90.0, 95.0)
    exits = [e for e in h.events if type(e) is DecisionMade and e.decision.rule == "trailing_stop"]
    assert all("native stop" in e.decision.reason for e in exits)
    # The venue fills it: the position is flat and no stop is left.
    o = h.stops()[0]
    h.handle(h.core.on_broker(h.venue._fill(o, o.stop_price or 0.0, h.core.now)))
    assert h.core.portfolio.positions["X/USDT"].qty == 0.0 and not h.stops()
    assert h.core.exit_stats["trailing_stop"].count == 1


def test_a_position_closed_otherwise_cancels_its_venue_stop() -> None:
    h = Harness({"stop_loss_pct": 1.0, "take_profit_pct": 1.0})
    h.bar(100.0, 100.5, 99.5, 100.0)
    (stop,) = h.stops()
    assert stop.stop_price == pytest.approx(99.0)
    intents = [e for e in h.events if type(e) is IntentChecked]
    assert intents[-1].intent.order_type is OrderType.STOP_MARKET
    h.bar(100.0, 101.5, 100.0, 101.0)  # the target (engine-side) closes the position
    assert h.core.portfolio.positions["X/USDT"].qty == 0.0
    assert not h.stops() and not h.core.open_orders
    assert any("venue stop" in c.reason for c in h.cancels)


def test_a_stop_order_is_not_exposure_in_flight() -> None:
    h = Harness({"stop_loss_pct": 1.0})
    h.bar(100.0, 100.5, 99.5, 100.0)
    assert h.stops()
    core = h.core
    assert core.open_order_qty.get("X/USDT", 0.0) == 0.0
    slot = core.slots[("s1", "X/USDT")]
    assert slot.in_flight == 0.0 and slot.orders == 0
    assert core.strategy_view(slot, 100.0) == PositionView(1.0, 100.0)


def test_a_stop_trigger_goes_on_the_grid_toward_the_market() -> None:
    """A sell stop (a long's) rounds up, a buy stop (a short's) down: it fires no later."""
    from engine.checks import round_to_grid
    from engine.types import OrderIntent, Side

    inst = Instrument("X/USDT", "sim", 0.01, 0.001, 0.0, 5.0)

    def intent(side: Side, stop: float) -> OrderIntent:
        return OrderIntent("i", "d", "s", "X/USDT", "sim", side, 1.0, OrderType.STOP_MARKET,
                           100.0, 1, None, True, "exit", stop_price=stop)  # fmt: skip

    assert round_to_grid(intent(Side.SELL, 98.994), inst)[0].stop_price == 99.0
    assert round_to_grid(intent(Side.BUY, 101.006), inst)[0].stop_price == 101.0
    _, verdict = round_to_grid(intent(Side.SELL, 0.0), inst)
    assert not verdict.ok and verdict.code == "INVALID_PRICE"


def test_a_trail_that_creeps_less_than_5_bps_leaves_the_venue_stop_alone() -> None:
    h = Harness({"trailing_atr": 2.0, "atr_period": 3})
    for _ in range(4):
        h.bar(100.0, 100.5, 99.5, 100.0)
    (stop,) = h.stops()
    assert stop.stop_price == pytest.approx(98.5)
    h.bar(100.0, 100.53, 99.5, 100.0)  # the trail rises 1 bp: the engine's level moves...
    (view,) = h.core.exits_view("X/USDT")
    assert view["trail"] > 98.5
    assert h.stops() == [stop] and not h.cancels  # ...the venue's does not (yet)
    h.bar(100.0, 101.0, 99.5, 100.0)  # now 14 bps above the venue's: it moves
    (moved,) = h.stops()
    assert moved.stop_price == pytest.approx(98.66, abs=0.01)


def test_a_market_far_past_a_venue_stop_still_open_makes_the_engine_close() -> None:
    """A stop-limit that gapped past its limit rests unfilled at the venue: once the market is
    more than the venue's allowance (100 bps here) past the stop, the engine cancels it and
    closes at the market itself; within the allowance it leaves the venue's stop alone."""
    h = Harness({"stop_loss_pct": 1.0})
    h.bar(100.0, 100.5, 99.5, 100.0)
    (stop,) = h.stops()
    assert stop.stop_price == pytest.approx(99.0)
    h.quote(98.2)  # 80 bps past the stop: the venue's business
    assert h.stops() == [stop] and not h.cancels
    h.quote(97.9)  # 111 bps past, and the stop still open: the engine takes over
    (c,) = h.cancels
    assert c.client_order_id == stop.client_order_id and "engine closes" in c.reason
    assert h.core.portfolio.positions["X/USDT"].qty == 0.0
    fired = [e.decision for e in h.events if type(e) is DecisionMade]
    assert fired[-1].rule == "stop_loss" and "stop-loss at 99.00" in fired[-1].reason
    assert h.core.exit_stats["stop_loss"].count == 1


def lose_the_first_cancel(venue: Any) -> list[str]:
    """The venue loses the first cancel it is asked (no answer, the order works on) and takes
    the rest; returns the client ids it lost."""
    real_cancel, lost = venue.cancel, []

    def cancel_lost_once(coid: str, now: int, reason: str) -> list[Any]:
        if not lost:
            lost.append(coid)
            return []
        return real_cancel(coid, now, reason)

    venue.cancel = cancel_lost_once
    return lost


def test_a_lost_cancel_of_an_overrun_venue_stop_is_asked_again_and_the_engine_closes() -> None:
    """The market far past a venue stop that is still open: the engine cancels it, then
    closes. The cancel was asked once; lost at the venue, the engine waited for it for good
    while the market ran (a move pending on the stop's cancel did the same) (review). It is
    asked again each second, and the close goes out once it takes."""
    h = Harness({"stop_loss_pct": 1.0})
    h.bar(100.0, 100.5, 99.5, 100.0)
    (stop,) = h.stops()
    lost = lose_the_first_cancel(h.venue)
    h.quote(97.9)  # 111 bps past: the engine asks for the cancel... lost
    assert lost == [stop.client_order_id] and h.stops() == [stop]
    h.quote(97.5)
    h.quote(97.0)
    assert len(h.cancels) >= 2 and not h.stops()
    assert h.core.portfolio.positions["X/USDT"].qty == 0.0
    assert h.core.exit_stats["stop_loss"].count == 1
    assert h.core.counters["native_overruns"] == 1


def test_a_flatten_cancels_the_venue_stop_before_it_sells() -> None:
    """A spot venue holds the balance a resting stop would sell: an operator's flatten sent its
    sell with the stop still resting (cancelled only after the sell filled), which the venue
    refuses for want of balance (review). The stop's cancel now goes out before the sell."""
    h = Harness({"stop_loss_pct": 1.0})
    h.bar(100.0, 100.5, 99.5, 100.0)
    (stop,) = h.stops()
    out = h.core.flatten("X/USDT", by="op", reason="done for the day")
    kinds = [
        (type(item).__name__, getattr(item, "client_order_id", ""))
        for item in out
        if type(item) in (CancelOrder, SubmitOrder)
    ]
    assert kinds[0] == ("CancelOrder", stop.client_order_id), kinds
    assert kinds[1][0] == "SubmitOrder"
    h.handle(out)
    assert not h.stops() and h.core.portfolio.positions["X/USDT"].qty == 0.0
    assert not any(
        o.order_type is OrderType.STOP_MARKET for o in h.core.open_orders.values()
    )  # and no new stop is placed for a closed position


def test_an_engine_side_take_profit_cancels_the_venue_stop_before_it_sells() -> None:
    """The take-profit stays engine-side while the venue holds the stop: its sell went out
    with the stop still resting, which a spot venue refuses for want of the balance the stop
    holds, again every second (review). The stop's cancel goes first, then the exit."""
    h = Harness({"stop_loss_pct": 1.0, "take_profit_pct": 1.0})
    h.bar(100.0, 100.5, 99.5, 100.0)
    (stop,) = h.stops()
    seen: list[tuple[str, str]] = []
    real_submit, real_cancel = h.venue.submit, h.venue.cancel

    def submit(order: Order, now: int) -> list[Any]:
        seen.append(("submit", "stop" if order.order_type is OrderType.STOP_MARKET else "exit"))
        return real_submit(order, now)

    def cancel(coid: str, now: int, reason: str) -> list[Any]:
        seen.append(("cancel", "stop" if coid == stop.client_order_id else coid))
        return real_cancel(coid, now, reason)

    h.venue.submit, h.venue.cancel = submit, cancel  # type: ignore[method-assign]
    h.quote(101.5)  # through the take-profit at 101
    assert seen[:2] == [("cancel", "stop"), ("submit", "exit")], seen
    assert h.core.portfolio.positions["X/USDT"].qty == 0.0 and not h.stops()
    assert h.core.exit_stats["take_profit"].count == 1


def test_the_strategys_own_exit_cancels_the_venue_stop_before_it_sells() -> None:
    """The strategy's own signal to close, while the venue holds its stop: the sell went out
    with the stop resting (a spot venue refuses it for want of the balance the stop holds)
    (review). The stop's cancel goes first, then the sell; nothing is left at the venue."""
    from engine.types import Action, Signal

    h = Harness({"stop_loss_pct": 1.0})
    h.bar(100.0, 100.5, 99.5, 100.0)
    (stop,) = h.stops()
    slot = h.core.slots[("s1", "X/USDT")]
    out = h.core.decide(slot, Signal(Action.SELL, "cross_down", "test", 1.0, {}, True), 100.0)
    orders = [i for i in out if type(i) in (CancelOrder, SubmitOrder)]
    assert [type(i).__name__ for i in orders] == ["CancelOrder"], orders
    assert orders[0].client_order_id == stop.client_order_id  # the sell waits for the stop's cancel
    h.handle(out)
    assert not h.stops() and h.core.portfolio.positions["X/USDT"].qty == 0.0
    assert not any(o.order_type is OrderType.STOP_MARKET for o in h.core.open_orders.values())
