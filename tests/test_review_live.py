"""Adversarial checks of testnet and live trading through ccxt (review-w).

Each test is a hole found by attacking the layer where a mistake costs real money: ccxt's real
exchange classes against the loopback venue (``tests.test_venues_fakevenue``) or recorded bodies
(``tests.test_venues_support``), no network. Each fails on the code before its fix (the lost
send's test is the other side of the timed-out flatten's fix: the held flatten does go out).

Attacks that held (no test here, or covered by the earlier reviews' tests):

- live without any one arming piece (config live, ``--live``, ``testnet = false``, the env keys,
  the typed phrase): each refused in one line, exit 2, no data directory created;
- ``--live`` on a testnet config, ``testnet = true`` in live: refused (config check and arming);
- an environment variable choosing the mode, config or data directory: there is none;
- a config edit while running: the config is read once at start, nothing reloads it;
- a restart: arming is asked again (headless needs ``--confirm-live`` each start);
- live mode restoring an operator's ``auto`` approval mode: live always starts in approve;
- the canary cap on the kill's flatten: a reduce-only order that shrinks passes the notional cap;
- a venue rejecting an order with the API key, the secret and the signed query echoed in its
  message: the order's reason, the journal and the snapshot hold ``***`` only;
- a restart under a kill whose cancels the venue never confirmed: the start cancels there;
- a send that timed out, then the same symbol: refused while unknown (review-d's test);
- a fill twice (the create's answer and myTrades), ids of another run (review-h's tests);
- a partial fill, then a cancel the venue answers "canceled": the order waits one consistency
  window for its trades, then books the rest from its totals (read in the code, not re-tested).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine.venues.execution as venue_execution
from engine.config import Config, ConfigError, parse_config
from engine.core import EngineCore
from engine.events import IntentChecked
from engine.modes import JournalOfAnotherSetup, journal_binding_problem
from engine.portfolio import Portfolio
from engine.restore import RestoredState
from engine.runtime import Engine
from engine.strategies.base import Strategy, StrategyParams
from engine.types import (
    Action,
    Bar,
    Decision,
    Fill,
    Instrument,
    Liquidity,
    OrderIntent,
    OrderStatus,
    OrderType,
    PositionView,
    Quote,
    Side,
    Signal,
)
from engine.vocabulary import DenialCode, IntentOutcome
from tests.conftest import default_dict, merge
from tests.test_venue_runtime import (
    PRICE,
    SYM,
    TradingVenue,
    make_testnet_config,
    run_until,
    venue_engine,
)
from tests.test_venues_support import fixture, venue_env


def _with(cfg: Config, **changes: Any) -> Config:
    """``cfg`` with nested changes merged in (validated again, as a config file would be)."""
    return parse_config(merge(cfg.model_dump(), changes))


def _live(cfg: Config) -> Config:
    return _with(cfg, engine={"mode": "live"}, venues={"binance": {"testnet": False}})


def _held(engine: Engine) -> float:
    assert engine.core is not None
    pos = engine.core.portfolio.positions.get(SYM)
    return pos.qty if pos is not None else 0.0


def _paper_config(data_dir: Path) -> Config:
    """Paper on the built-in market; its one strategy buys BTC/USDT once."""
    data = merge(
        default_dict(),
        {
            "engine": {"data_dir": str(data_dir)},
            "market": {
                "simulated": {
                    "speed": "max",
                    "start": "2024-03-01T00:00:00Z",
                    "symbols": {SYM: {"initial_price": PRICE}},
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
            "sizing": {"model": "fixed_qty", "qty": 0.01},
            "approval": "auto",
        }
    ]
    return parse_config(data)


async def _paper_position(data_dir: Path) -> float:
    """A paper run that buys BTC/USDT once; its position."""
    paper = Engine(_paper_config(data_dir), data_dir)
    await paper.start()
    try:
        await run_until(paper, lambda: bool(paper.core and paper.core.counters["fills"]))
        return _held(paper)
    finally:
        await paper.stop()


async def _testnet_position(data_dir: Path, server: TradingVenue) -> float:
    """A testnet run on the loopback venue that buys 0.001 BTC/USDT; its position."""
    engine = venue_engine(make_testnet_config(data_dir), data_dir, server)
    await engine.start()
    try:
        await run_until(engine, lambda: bool(engine.core and engine.core.counters["fills"]))
        return _held(engine)
    finally:
        await engine.stop()


@pytest.fixture
async def server() -> Any:
    srv = TradingVenue()
    await srv.start()
    yield srv
    await srv.stop()


async def test_a_paper_journal_is_not_taken_into_a_testnet_engine(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    """The README's quick start (paper) and its testnet example both keep their journal in
    ``data``. Started on the paper run's journal, the testnet engine restored the paper position
    as its own on binance: the kill switch's flatten sold 0.01 BTC at the venue that the engine
    never bought there (live: the trader's own coins). A journal is bound to its mode: the start
    is refused in one line (exit 2) before any venue is opened, and the directory is let go."""
    venue_env(monkeypatch)
    data_dir = tmp_path / "data"
    assert await _paper_position(data_dir) > 0
    server.auto_fill = False
    testnet = venue_engine(make_testnet_config(data_dir), data_dir, server)
    with pytest.raises(JournalOfAnotherSetup) as refused:
        await testnet.start()
    assert refused.value.exit_code == 2
    assert "paper journal" in str(refused.value) and "\n" not in str(refused.value)
    assert server.hits == [], "a venue was asked before the journal was found to be paper's"
    # Nothing held: the same directory still runs the mode it belongs to, position and all.
    paper = Engine(_paper_config(data_dir), data_dir)
    await paper.start()
    try:
        assert _held(paper) > 0
    finally:
        await paper.stop()


async def test_a_testnet_journal_is_not_taken_into_a_live_engine(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    """Fully armed live on the data directory a testnet run used (same venue name, same
    symbol): the testnet position would be the engine's on the production account, and the
    first exit or flatten would sell real coins. Refused before any venue is opened."""
    venue_env(monkeypatch)
    data_dir = tmp_path / "data"
    assert await _testnet_position(data_dir, server) > 0
    seen = len(server.hits)
    live = venue_engine(_live(make_testnet_config(data_dir)), data_dir, server)
    with pytest.raises(JournalOfAnotherSetup, match="testnet journal"):
        await live.start()
    assert len(server.hits) == seen
    # The testnet engine itself starts again on it (a restart is not a change of setup).
    again = venue_engine(make_testnet_config(data_dir), data_dir, server)
    await again.start()
    try:
        assert _held(again) == pytest.approx(0.001)
    finally:
        await again.stop()


async def test_a_venue_name_that_now_names_another_exchange_is_refused(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    """``[venues.binance]`` edited to ``exchange = "bybit"``: the journal's binance position
    and orders would be taken as bybit's."""
    venue_env(monkeypatch)
    data_dir = tmp_path / "data"
    await _testnet_position(data_dir, server)
    cfg = _with(make_testnet_config(data_dir), venues={"binance": {"exchange": "bybit"}})
    other = Engine(cfg, data_dir)
    with pytest.raises(JournalOfAnotherSetup, match=r"'binance'.*'bybit'"):
        await other.start()


def _fill(venue: str, side: Side, qty: float, n: int) -> Fill:
    return Fill(
        f"f{n}", f"ck-1-{n}", "buyer", SYM, venue, side, qty, PRICE, 0.0, Liquidity.TAKER, n
    )


def _two_venues(tmp_path: Path) -> Config:
    """BTC/USDT now trades on okx; binance keeps ETH/USDT."""
    cfg = make_testnet_config(tmp_path)
    okx = {
        "exchange": "okx",
        "testnet": True,
        "api_key_env": cfg.venues["binance"].api_key_env,
        "secret_env": cfg.venues["binance"].secret_env,
        "password_env": "CK_TEST_PASS",
        "symbols": [SYM],
    }
    # BTC/USDT (okx) and ETH/USDT (binance)
    strategies = [s.model_dump() for s in cfg.strategies]
    strategies.append({**strategies[0], "id": "eth", "symbols": ["ETH/USDT"]})
    data = merge(
        cfg.model_dump(),
        {"venues": {"binance": {"symbols": ["ETH/USDT"]}, "okx": okx}},
    )
    data["strategies"] = strategies
    return parse_config(data)


@pytest.mark.parametrize(
    ("sold", "refused"),
    [(0.001, False), (0.000999, True), (0.0, True)],
)
def test_a_position_on_a_venue_whose_symbol_moved_to_another_venue_is_refused(
    tmp_path: Path, sold: float, refused: bool
) -> None:
    """BTC/USDT moved from binance to okx in the config while the journal holds a binance
    position: the engine's position is by symbol, so it would sell binance's coins on okx.
    Flat (bought and sold to the last lot) passes; a lot short of flat is refused."""
    cfg = _two_venues(tmp_path)
    fills = [_fill("binance", Side.BUY, 0.001, 1)]
    if sold:
        fills.append(_fill("binance", Side.SELL, sold, 2))
    restored = RestoredState(mode="testnet", exchanges={"binance": "binance"}, fills=fills)
    problem = journal_binding_problem(cfg, restored)
    assert bool(problem) is refused, problem
    if refused:
        assert "on binance" in problem and "on okx" in problem


class DownVenue(TradingVenue):
    """The loopback venue that, while ``down``, answers every signed request 503 (binance
    under maintenance or overloaded); its public market data keeps coming."""

    def __init__(self) -> None:
        super().__init__(auto_fill=False)
        self.down = False

    async def _binance(self, request: Any, body: str) -> tuple[int, Any]:
        public = ("/exchangeInfo", "/time", "/ticker/", "/klines", "/depth")
        if self.down and not any(p in request.path for p in public):
            return 503, {"code": -1008, "msg": "Server is currently overloaded."}
        return await super()._binance(request, body)


def _resting(engine: Engine) -> bool:
    assert engine.core is not None
    return any(o.status is OrderStatus.NEW for o in engine.core.open_orders.values())


def _no_retries(broker: Any) -> None:
    broker.max_retries = 0  # a down venue answers each request once (fast, bounded tests)


@pytest.fixture
async def down_venue() -> Any:
    srv = DownVenue()
    await srv.start()
    yield srv
    await srv.stop()


async def test_a_kill_whose_cancels_the_venue_did_not_confirm_says_so_and_cancels_once_it_is_back(
    monkeypatch: Any, tmp_path: Path, down_venue: DownVenue
) -> None:
    """A kill while the venue answers 503: the switch latched, but the engine's resting order
    was not canceled. The reply said only "kill switch engaged: halt" (the trader reads: my
    orders are gone), and the cancel was never tried again: once the venue was back the order
    kept working there and could fill into a killed engine. The reply must say which venue's
    cancels are not confirmed, and the cancel is retried until the venue confirms it."""
    venue_env(monkeypatch)
    monkeypatch.setattr(venue_execution, "KILL_RETRY_S", 0.5)
    monkeypatch.setattr(venue_execution, "VENUE_WATCH_S", 0.1)  # each short run gets a look
    data_dir = tmp_path / "data"
    engine = venue_engine(make_testnet_config(data_dir), data_dir, down_venue, also=_no_retries)
    await engine.start()
    try:
        await run_until(engine, lambda: _resting(engine))
        down_venue.down = True
        reply = await engine.command("kill", {"level": "halt", "reason": "venue trouble"})
        assert reply["ok"], reply  # latched and durable: no new order goes out
        assert "binance" in reply["message"] and "NOT confirmed" in reply["message"], reply
        assert [o.status for o in down_venue.orders.values()] == ["open"]
        again = await engine.command("kill", {"level": "halt", "reason": "again"})
        assert "NOT confirmed" in again["message"], again  # still true, still said
        down_venue.down = False
        await run_until(
            engine, lambda: [o.status for o in down_venue.orders.values()] == ["canceled"]
        )
        # (the poll may ask the order's lost cancel again before the kill's retry confirms)
        await run_until(engine, lambda: engine.execution.venue_kill == {"binance": True})
        await run_until(engine, lambda: not engine.core.open_orders)  # type: ignore[union-attr]
        done = await engine.command("kill", {"level": "halt", "reason": "check"})
        assert "NOT confirmed" not in done["message"], done
    finally:
        await engine.stop()
    assert down_venue.creates() == 1


class LaggingVenue(TradingVenue):
    """Fills a market order the moment it is placed; a ``timeout`` create is placed and filled
    but answered too late; while ``lagging``, a look-up by client id does not see it yet
    (binance's order query lags its matching engine)."""

    def __init__(self) -> None:
        super().__init__()
        self.lagging = False

    async def _create_outcome(self, order: Any) -> str:
        if self.script and self.script[0] == "timeout":
            self.script.popleft()
            self.orders[order.vcid] = order
            self.fill(order)
            await self._hang()
            return "ok"
        return await super()._create_outcome(order)

    async def _binance(self, request: Any, body: str) -> tuple[int, Any]:
        if self.lagging and request.method == "GET" and request.path.endswith("/api/v3/order"):
            return 400, fixture("binance", "error_order_not_found")
        return await super()._binance(request, body)


@pytest.fixture
async def lagging() -> Any:
    srv = LaggingVenue()
    await srv.start()
    yield srv
    await srv.stop()


def _sold(server: TradingVenue) -> float:
    return sum(float(o.qty) for o in server.orders.values() if o.side == "SELL")


async def _long_then_flatten_times_out(engine: Engine, server: LaggingVenue) -> None:
    """Long 0.001; an operator's flatten reaches the venue and fills, its answer is lost and
    the look-up does not see it yet: the sell's fate is unknown to the engine."""
    await run_until(engine, lambda: bool(engine.core and engine.core.counters["fills"]))
    assert _held(engine) == pytest.approx(0.001)
    server.script.append("timeout")
    server.lagging = True
    first = await engine.command("flatten", {"symbol": SYM, "reason": "close it"})
    assert first["ok"], first
    assert _sold(server) == pytest.approx(0.001)
    assert [o.status for o in engine.core.open_orders.values()] == [  # type: ignore[union-attr]
        OrderStatus.PENDING_NEW
    ]


@pytest.mark.parametrize("then", ["flatten", "kill"])
async def test_a_flatten_whose_send_timed_out_is_not_sent_again_on_top_of_itself(
    monkeypatch: Any, tmp_path: Path, lagging: LaggingVenue, then: str
) -> None:
    """The flatten's sell reached the venue and filled, but its answer timed out: the engine
    still shows the position. The trader flattens again (or kills at flatten): the engine
    cancelled the sell of unknown fate (the venue: "unknown order", it had filled) and sent
    a second sell of the whole position, selling 0.002 BTC for a 0.001 position (live: the
    trader's own coins). An order whose send outcome is unknown keeps counting as closing."""
    venue_env(monkeypatch)
    data_dir = tmp_path / "data"
    engine = venue_engine(make_testnet_config(data_dir), data_dir, lagging)
    await engine.start()
    try:
        await _long_then_flatten_times_out(engine, lagging)
        if then == "flatten":
            again = await engine.command("flatten", {"symbol": SYM, "reason": "again"})
            assert not again["ok"] and "REDUCE_ONLY" in again["message"], again
        else:
            again = await engine.command("kill", {"level": "flatten", "reason": "get out"})
            assert again["ok"] and "denied" in again["message"], again
        await engine.run(duration_s=1.0)
        assert _sold(lagging) == pytest.approx(0.001), "the position was sold twice"
        lagging.lagging = False  # the look-up sees it: filled, the position is closed
        await run_until(engine, lambda: abs(_held(engine)) < 1e-12)
        await engine.run(duration_s=1.0)
    finally:
        await engine.stop()
    assert _sold(lagging) == pytest.approx(0.001)


async def test_a_kill_flatten_held_by_a_lost_send_goes_out_once_that_send_is_settled(
    monkeypatch: Any, tmp_path: Path, lagging: LaggingVenue
) -> None:
    """The other side of the same rule: the first sell never reached the venue (the request
    was lost). Once the look-up settles that (not found for a consistency window), the kill
    switch's flatten is due again and goes out on the next quote: the position is closed."""
    venue_env(monkeypatch)

    def short_window(broker: Any) -> None:
        broker.window_ns = 1_000_000_000  # binance's 15 s, shortened for the test

    data_dir = tmp_path / "data"
    engine = venue_engine(make_testnet_config(data_dir), data_dir, lagging, also=short_window)
    await engine.start()
    try:
        await run_until(engine, lambda: bool(engine.core and engine.core.counters["fills"]))
        lagging.script.append("lost")
        await engine.command("flatten", {"symbol": SYM, "reason": "close it"})
        assert _sold(lagging) == 0.0
        kill = await engine.command("kill", {"level": "flatten", "reason": "get out"})
        assert "denied" in kill["message"], kill
        await run_until(engine, lambda: _sold(lagging) > 0 and abs(_held(engine)) < 1e-12)
    finally:
        await engine.stop()
    assert _sold(lagging) == pytest.approx(0.001)


class SellFirst(Strategy):
    """A strategy of the trader's own that sells on its first bar, flat (its config allows
    shorts: a spot venue must refuse the sale all the same)."""

    kind = "sell_first"
    Params = StrategyParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.done = False

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        if self.done:
            return None
        self.done = True
        return Signal(action=Action.SELL, rule="sell_first", reason="first bar", confidence=1.0)


async def test_a_sell_of_coins_the_engine_does_not_hold_on_a_spot_venue_is_denied(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    """Every ccxt venue the engine trades is spot: a sell from flat is not a short there, it
    sells the account's own coins (live: the trader's BTC). The engine sent it (0.001 BTC
    sold, position -0.001). It is denied before it is journaled as sent, on the record."""
    venue_env(monkeypatch)
    data_dir = tmp_path / "data"
    cfg = make_testnet_config(data_dir).model_dump()
    cfg["strategies"][0]["kind"] = "tests.test_review_live:SellFirst"
    parsed = parse_config(cfg)
    # A testnet config refuses allow_short (test_allow_short_on_a_spot_venue_mode_is_a_config_
    # error) and the long-only cap would stop the sale at sizing: the layer below, the spot
    # check, must stop it all the same (defence in depth), so the strategy is let short here.
    strat = parsed.strategies[0].model_copy(update={"allow_short": True})
    engine = venue_engine(parsed.model_copy(update={"strategies": [strat]}), data_dir, server)
    await engine.start()
    try:
        core = engine.core
        assert core is not None
        await run_until(engine, lambda: core.counters["decisions"] > 0)
        await engine.run(duration_s=0.5)
        denied = [e for e in core.trace if type(e) is IntentChecked]
        assert [e.outcome for e in denied] == [IntentOutcome.DENIED]
        assert DenialCode.SPOT_SELL_EXCEEDS_HOLDING in denied[0].denied_codes
    finally:
        await engine.stop()
    assert server.creates() == 0
    assert _held(engine) == 0.0


def _spot_core(held: float) -> EngineCore:
    symbol = SYM
    cfg = parse_config(
        {
            "market": {"simulated": {"symbols": {symbol: {"initial_price": PRICE}}}},
            "strategies": [{"id": "s", "kind": "ema_cross", "symbols": [symbol]}],
        }
    )
    inst = Instrument(symbol, "binance", 0.01, 0.00001, 0.0, 5.0)
    fills = [_fill("binance", Side.BUY, held, 1)] if held else []
    core = EngineCore(cfg, [], {symbol: inst}, Portfolio.restore(100_000.0, fills, {}))
    core.spot_venues = frozenset({"binance"})
    core.on_quote(Quote(symbol, PRICE - 0.5, PRICE + 0.5, 5.0, 5.0, 1, 1))
    return core


def _sell(core: EngineCore, qty: float) -> set[str]:
    intent = OrderIntent("x", "d", "s", SYM, "binance", Side.SELL, qty, OrderType.MARKET, PRICE, 1)
    decision = Decision("d", 1, "s", SYM, "binance", Action.SELL, "r", "why", 1.0, {})
    return {c for ev in core.evaluate(intent, decision) for c in getattr(ev, "denied_codes", [])}


@settings(max_examples=60, deadline=None)
@given(
    held=st.sampled_from([0.0, 0.001, 0.5]),
    lots=st.integers(min_value=1, max_value=200_000),
)
def test_on_a_spot_venue_a_sell_passes_exactly_up_to_what_the_engine_holds(
    held: float, lots: int
) -> None:
    """Just under (or at) the holding passes; a lot more is denied; anything from flat is."""
    core = _spot_core(held)
    qty = lots * 0.00001
    denied = DenialCode.SPOT_SELL_EXCEEDS_HOLDING in _sell(core, qty)
    assert denied == (qty > held * (1 + 1e-9)), (held, qty)


class HungVenue(TradingVenue):
    """binance that, while ``hung`` is set, never answers a signed request (a venue whose
    matching engine is stuck: the connection stays open, no answer comes) until released."""

    def __init__(self) -> None:
        super().__init__(auto_fill=False)
        self.hung = False
        self.release = asyncio.Event()

    async def _binance(self, request: Any, body: str) -> tuple[int, Any]:
        public = ("/exchangeInfo", "/time", "/ticker/")
        if self.hung and not any(p in request.path for p in public):
            await self.release.wait()
        return await super()._binance(request, body)


async def test_a_kill_cancels_at_a_healthy_venue_while_another_venue_does_not_answer(
    monkeypatch: Any, tmp_path: Path
) -> None:
    """binance (BTC/USDT) stops answering, okx (ETH/USDT) is fine. The kill cancelled venue
    after venue: okx's resting order waited behind binance's requests, their timeouts and
    retries (minutes with the default 10 s timeout), working and fillable all that time.
    Each venue's cancels go out at once, whatever another venue does."""
    from tests.test_venue_operations import OkxVenue, config

    venue_env(monkeypatch)
    binance, okx = HungVenue(), OkxVenue()
    await binance.start()
    await okx.start()
    data_dir = tmp_path / "data"
    base = config(data_dir, "tests.test_venue_runtime:BuyOnce")
    btc = base.strategies[0]
    eth = btc.model_copy(update={"id": "eth_buyer", "symbols": ["ETH/USDT"]})
    venues = {
        "binance": base.venues["binance"].model_copy(update={"symbols": ["BTC/USDT"]}),
        "okx": base.venues["binance"].model_copy(
            update={"exchange": "okx", "symbols": ["ETH/USDT"], "password_env": "CK_TEST_PASS"}
        ),
    }
    cfg = base.model_copy(update={"strategies": [btc, eth], "venues": venues})

    engine = venue_engine(cfg, data_dir, binance, servers={"okx": okx})
    await engine.start()
    kill: asyncio.Task[Any] | None = None
    try:
        await run_until(engine, lambda: len(binance.orders) == 1 and len(okx.orders) == 1)
        [okx_order] = okx.orders.values()
        await engine.run(duration_s=0.5)  # both acknowledged and resting
        binance.hung = True
        kill = asyncio.ensure_future(engine.command("kill", {"level": "halt", "reason": "out"}))
        # Bounded: a poll of binance under way when the kill came (one 2 s timeout) ends first;
        # then okx is not kept waiting behind binance's cancels (each 2 s timeouts, retried).
        for _ in range(200):
            if okx_order.status == "canceled":
                break
            await asyncio.sleep(0.05)
        assert okx_order.status == "canceled", "okx's cancel waited for binance"
        assert not kill.done()  # binance still has not answered
    finally:
        binance.release.set()
        if kill is not None:
            await kill
        await engine.stop()
        await okx.stop()
        await binance.stop()
    assert engine.execution.venue_kill == {"binance": True, "okx": True}


@pytest.mark.parametrize("mode", ["testnet", "live"])
def test_allow_short_on_a_spot_venue_mode_is_a_config_error(mode: str) -> None:
    """A short entry on a spot venue would be denied at every bearish signal at run time; the
    config says so up front, naming the strategy's field and the fix. Paper keeps it."""
    keys = {"api_key_env": "K", "secret_env": "S", "testnet": mode == "testnet"}
    data = {
        "engine": {"mode": mode},
        "venues": {"binance": {"exchange": "binance", **keys}},
        "strategies": [
            {"id": "a", "kind": "ema_cross", "symbols": ["BTC/USDT"], "allow_short": True}
        ],
    }
    with pytest.raises(ConfigError, match=r"strategies\[0\]\.allow_short: .* allow_short = false"):
        parse_config(data)
    data["strategies"][0]["allow_short"] = False
    assert parse_config(data).strategies[0].allow_short is False
    data["engine"] = {"mode": "paper"}
    data["strategies"][0]["allow_short"] = True
    assert parse_config(data).strategies[0].allow_short is True


async def test_a_client_id_prefix_changed_while_an_order_is_open_is_refused(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    """An order left open at the venue is found again by its client id, made with the venue's
    ``client_id_prefix``: with the prefix edited before a restart, the look-up missed it and
    the journal could record a working order cancelled (its exposure forgotten). The start is
    refused in one line naming the field, the old prefix and the fix; the old prefix starts,
    and once nothing is open the prefix may change."""
    venue_env(monkeypatch)
    server.auto_fill = False  # the order rests at the venue
    data_dir = tmp_path / "data"
    cfg = make_testnet_config(data_dir)
    first = venue_engine(cfg, data_dir, server)
    await first.start()
    try:
        core = first.core
        assert core is not None
        await run_until(first, lambda: bool(core.open_orders))
    finally:
        await first.stop()
    seen = len(server.hits)
    renamed = _with(cfg, venues={"binance": {"client_id_prefix": "bot2"}})
    with pytest.raises(JournalOfAnotherSetup) as refused:
        await venue_engine(renamed, data_dir, server).start()
    message = str(refused.value)
    assert "venues.binance.client_id_prefix was ''" in message and "'bot2' now" in message
    assert "\n" not in message and refused.value.exit_code == 2
    assert len(server.hits) == seen, "a venue was asked before the journal was refused"
    # The old prefix starts and cancels the order; then the prefix may change.
    again = venue_engine(cfg, data_dir, server)
    await again.start()
    try:
        reply = await again.command("kill", {"level": "halt", "reason": "prefix change"})
        assert reply["ok"], reply
        assert again.core is not None and not again.core.open_orders
    finally:
        await again.stop()
    last = venue_engine(renamed, data_dir, server)
    await last.start()
    await last.stop()
