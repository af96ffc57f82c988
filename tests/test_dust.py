"""Dust (issue 11, item 10): positions below the venue minimum never freeze a strategy.

A position no order can close (below the lot, the minimum quantity or the minimum notional) is
dust. The engine must not make it (strategies decide on the position their in-flight orders will
give; sizing never leaves a remainder below the minimum), must not be stopped by it when it
exists anyway (a partial fill, a price fall): the strategy reads it as flat, a close of it is
recorded once as dust rather than denied on every signal, flatten reports it, and the snapshot,
the positions pane and ``cockpit status`` mark it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st

from cockpit.oneshot import format_status
from engine.backtest import BacktestOptions, load_market_data, run_backtest
from engine.checks import round_to_grid
from engine.config import load_config, parse_config
from engine.core import EngineCore, SubmitOrder, closable
from engine.events import IntentChecked
from engine.paper_broker import PaperBroker
from engine.portfolio import Portfolio
from engine.runtime import Engine
from engine.strategies.base import Strategy, StrategyParams
from engine.types import (
    NS_PER_SECOND,
    Action,
    Bar,
    Instrument,
    OrderIntent,
    OrderType,
    PositionView,
    Quote,
    Side,
    Signal,
)
from tests import test_safety_engine
from tests.conftest import BARS_CSV, default_dict, fast_config
from tests.test_safety_engine import BTC, Harness, buy, sell, start, strategy
from tests.test_tui_venues import (
    NARROW,
    FakeClient,
    make_app,
    plain,
    position,
    ready,
    venues_scenario,
)

harnesses = test_safety_engine.harnesses  # the fixture that stops every engine a test starts

BELOW_MIN = {"BELOW_MIN_QTY", "BELOW_MIN_NOTIONAL"}
S = NS_PER_SECOND


def below_min_denials(intents: Iterable[IntentChecked]) -> Counter[tuple[str, str]]:
    return Counter(
        (ev.intent.strategy_id, code)
        for ev in intents
        if ev.outcome == "denied"
        for code in ev.denied_codes
        if code in BELOW_MIN
    )


# --------------------------------------------------------------------------- the default config


async def test_default_strategies_in_auto_never_trade_below_the_venue_minimum(
    data_dir: Path,
) -> None:
    """The shipped strategies, all in auto on the same symbols, on the simulated market.

    Before: entries capped by the position room went out below the minimum notional, a strategy
    whose exit was in flight exited again (a second, zero-sized exit), and a residual of float
    dust was denied BELOW_MIN_QTY. Now no strategy intent is below the minimum and no exit is
    sized against a position already on its way out.
    """
    events = int(os.environ.get("COCKPIT_DUST_EVENTS", "40000"))
    # As the default shipped them when this was found: 1-2 s bars, and volatility sizing that
    # asks for the whole position room (config/default.toml now trades calmer 20 s bars).
    ema, rsi, donchian = default_dict()["strategies"]
    strategies = [
        dict(ema, timeframe_s=1, params={"fast": 5, "slow": 20}),
        dict(rsi, timeframe_s=1, sizing=dict(rsi["sizing"], risk_fraction=0.002)),
        dict(donchian, timeframe_s=2),
    ]
    strategies = [dict(s, approval="auto") for s in strategies]
    cfg = fast_config(
        data_dir, strategies=strategies, market={"simulated": {"history_timeframe_s": 1}}
    )
    engine = Engine(cfg, data_dir)
    await engine.start()
    seen: list[IntentChecked] = []
    real = engine.core.evaluate

    def spy(intent: Any, decision: Any, **kw: Any) -> list[Any]:
        out = real(intent, decision, **kw)
        seen.extend(e for e in out if isinstance(e, IntentChecked))
        return out

    engine.core.evaluate = spy  # type: ignore[method-assign]
    try:
        await engine.run(max_events=events)
    finally:
        await engine.stop()
    core = engine.core
    assert core.counters["submitted"] > 50
    assert not below_min_denials(seen)
    double_exits = [
        e
        for e in seen
        if e.outcome == "denied" and e.intent.reduce_only and "SIZE_ZERO" in e.denied_codes
    ]
    assert not double_exits
    # Nothing a strategy holds is dust it believes in: it reads dust as flat.
    for slot in core.slots.values():
        mark = core.portfolio.last_mark(slot.strategy.symbol) or 0.0
        view = core.strategy_view(slot, mark)
        assert view.qty == 0.0 or closable(slot.inst, view.qty, mark)


def test_one_minute_replay_has_no_double_exit_and_no_residual_denial() -> None:
    """The real BTC 1-minute bars through the backtest (Donchian breakout, breakers off).

    Before: 188 exits sized to zero because the strategy exited again while its exit was in
    flight, and 10 exits denied BELOW_MIN_QTY for a float residual (0.08485000000000001 held,
    0.08485 on its way out) that no order can close.
    """
    base = load_config(None)
    data = load_market_data(BARS_CSV)
    result = run_backtest(base, data, BacktestOptions(strategy="donchian_breakout", breakers=False))
    assert result.counters["submitted"] > 500
    assert result.denied == {}, result.denied
    assert not result.final_portfolio["positions"]  # every round trip closed completely


# --------------------------------------------------------------------------- through the engine

TINY = 0.0001  # BTC: 6 USDT at 60,000 (above the 5 USDT minimum), 4.5 USDT at 45,000 (dust)
DUST = 0.00001  # BTC: 0.60 USDT at 60,000


class Watching(Strategy):
    """Scripted (one queued signal per quote) and records the position it is shown."""

    kind: ClassVar[str] = "watching"
    Params: ClassVar[type[StrategyParams]] = StrategyParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.script: list[Signal] = []
        self.seen: list[float] = []

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        return None

    def on_quote(self, quote: Quote, position: PositionView) -> Signal | None:
        self.seen.append(position.qty)
        return self.script.pop(0) if self.script else None


def watching(sid: str, qty: float) -> dict[str, Any]:
    return {**strategy(sid, "auto", qty), "kind": "tests.test_dust:Watching"}


async def dust_harness(harnesses: list[Harness], data_dir: Path) -> Harness:
    """alpha bought 0.01 BTC and sold it where the book was too thin: 100 levels of 0.0000999
    filled and the venue canceled the rest, leaving about 0.00001 BTC (0.60 USDT), dust."""
    # (The thin book's slippage is the point here, not a breaker's business.)
    quiet = {"breakers": {"slippage_excess_pct": 1e6}}
    # Impact levels of one displayed size each (no notional floor), so the thin book runs out.
    thin = {"paper": {"impact_level_notional": 0.0}}
    cfg = fast_config(
        data_dir, auto=False, strategies=[watching("alpha", 0.01)], safety=quiet, broker=thin
    )
    h = await start(harnesses, data_dir, cfg)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, sell("exit", exit_=True), 60_000.0)
    await h.feed(BTC, 60_000.0, size=0.0000999)  # a partial fill
    await h.feed(BTC, 60_000.0)
    assert abs(h.core.portfolio.positions[BTC].qty - DUST) < 1e-9
    return h


async def test_a_strategy_sees_its_order_in_flight(
    harnesses: list[Harness], data_dir: Path
) -> None:
    """Before: the strategy was shown flat until its entry filled, and entered again."""
    cfg = fast_config(data_dir, auto=False, strategies=[watching("alpha", 0.01)])
    h = await start(harnesses, data_dir, cfg)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    await h.feed(BTC, 60_000.0, dt=0.001)  # before the order reaches the venue
    assert h.core.portfolio.positions.get(BTC) is None or h.core.portfolio.positions[BTC].qty == 0
    assert h.core.slots[("alpha", BTC)].strategy.seen[-1] == 0.01


async def test_a_dust_residual_is_read_as_flat_and_its_close_is_recorded_as_dust(
    harnesses: list[Harness], data_dir: Path
) -> None:
    """Before: the strategy kept seeing a long it could never sell (every exit denied
    BELOW_MIN_NOTIONAL), so a strategy that enters only when flat never traded again."""
    h = await dust_harness(harnesses, data_dir)
    strat = h.core.slots[("alpha", BTC)].strategy
    assert strat.seen[-1] == 0.0  # the dust reads as flat
    await h.signal("alpha", BTC, sell("exit", exit_=True), 60_000.0)
    last = h.intents()[-1]
    assert last["outcome"] == "dust", last
    assert "below the venue minimum" in last["detail"]
    assert not h.intents("denied")
    # It can still act: the next entry goes out, and its exit closes the dust with it.
    await h.signal("alpha", BTC, buy(), 60_000.0)
    assert h.intents()[-1]["outcome"] == "submitted", [
        v for v in h.intents()[-1]["verdicts"] if not v["ok"]
    ]
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, sell("exit", exit_=True), 60_000.0)
    assert h.sent[-1].qty == 0.01001 and h.sent[-1].reduce_only
    await h.feed(BTC, 60_000.0)
    assert abs(h.core.portfolio.positions[BTC].qty) < 1e-12


async def test_operator_flatten_of_dust_reports_it_and_the_views_mark_it(
    harnesses: list[Harness], data_dir: Path
) -> None:
    """Before: the flatten was denied BELOW_MIN_NOTIONAL (reply not ok) on every try."""
    h = await dust_harness(harnesses, data_dir)
    sent = len(h.sent)
    reply = await h.engine.command("flatten", {"symbol": BTC, "reason": "square"})
    assert reply["ok"], reply
    assert "dust" in reply["message"] and "below the venue minimum" in reply["message"], reply
    assert len(h.sent) == sent  # no venue accepts it: nothing is sent
    assert h.intents()[-1]["outcome"] == "dust"
    snap = h.engine.snapshot(trace=0, curve=0)
    (row,) = [p for p in snap["positions"] if p["symbol"] == BTC]
    assert row["dust"] is True
    assert "(dust: below the venue minimum)" in format_status(snap)
    # The kill switch's flatten says so too, and does not deny forever.
    reply = await h.engine.command("kill", {"level": "flatten", "reason": "out"})
    assert reply["ok"] and "dust" in reply["message"], reply
    assert len(h.sent) == sent
    assert not h.intents("denied")


async def test_flatten_closes_a_dust_share_with_the_rest_of_the_position(
    harnesses: list[Harness], data_dir: Path
) -> None:
    """A strategy's dust share goes out with another strategy's close: no dust is left."""
    cfg = fast_config(
        data_dir, auto=False, strategies=[watching("alpha", TINY), watching("beta", 0.01)]
    )
    h = await start(harnesses, data_dir, cfg)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    await h.feed(BTC, 60_000.0)
    await h.signal("beta", BTC, buy(), 60_000.0)
    await h.feed(BTC, 60_000.0)
    for mid in (57_000.0, 54_000.0, 51_000.0, 48_000.0, 45_000.0):
        await h.feed(BTC, mid, dt=20.0)
    reply = await h.engine.command("flatten", {"symbol": BTC, "reason": "square"})
    assert reply["ok"] and reply["message"] == "flatten: 1 order(s) submitted", reply
    assert h.sent[-1].qty == 0.0101
    await h.feed(BTC, 45_000.0)
    assert h.core.portfolio.positions[BTC].qty == 0.0


def test_rounding_to_the_grid_keeps_who_asked() -> None:
    """Found here: a flatten whose quantity was off the lot grid (a partial fill) came back
    from rounding as a strategy order, which HALTED then refused."""
    inst = Instrument(BTC, "sim", 0.01, 0.00001, 0.0, 5.0)
    intent = OrderIntent(
        "i", "d", "flatten", BTC, "sim", Side.SELL, 0.0100001, OrderType.MARKET, 60_000.0, 0
    )
    for origin in ("flatten", "operator", "strategy"):
        rounded, verdict = round_to_grid(replace(intent, reduce_only=True, origin=origin), inst)
        assert verdict.ok and rounded.qty == 0.01
        assert (rounded.origin, rounded.reduce_only) == (origin, True)


# --------------------------------------------------------------------------- entries kill


async def test_an_entries_kill_keeps_pending_exit_approvals(
    harnesses: list[Harness], data_dir: Path
) -> None:
    """Before: the kill rejected every pending approval, exits included, although REDUCING
    allows exits. Now an exit stays pending and can be approved; an entry is rejected."""
    h = await start(harnesses, data_dir)
    await h.feed(BTC, 60_000.0)
    await h.signal("beta", BTC, buy(), 60_000.0)
    (entry,) = h.core.approvals.pending()
    assert (await h.engine.command("approve", {"id": entry.approval_id}))["ok"]
    await h.feed(BTC, 60_000.0)
    assert h.core.portfolio.positions[BTC].qty == 0.01
    await h.signal("beta", BTC, sell("exit", exit_=True), 60_000.0)
    await h.signal("beta", BTC, buy("more"), 60_000.0)
    exit_, more = h.core.approvals.pending()
    assert exit_.intent.reduce_only and not more.intent.reduce_only
    assert (await h.engine.command("kill", {"level": "entries", "reason": "wind down"}))["ok"]
    assert [p.approval_id for p in h.core.approvals.pending()] == [exit_.approval_id]
    reply = await h.engine.command("approve", {"id": exit_.approval_id})
    assert reply["ok"], reply
    assert h.intents()[-1]["outcome"] == "submitted"
    await h.feed(BTC, 60_000.0)
    assert h.core.portfolio.positions[BTC].qty == 0.0


# --------------------------------------------------------------------------- the property

X = "X/USDT"
LOT, MIN_NOTIONAL = 0.00001, 5.0


class Queue(Strategy):
    """Emits the signals the test queues, one per quote, whatever its position."""

    kind: ClassVar[str] = "queue"
    Params: ClassVar[type[StrategyParams]] = StrategyParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.script: list[Signal] = []

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        return None

    def on_quote(self, quote: Quote, position: PositionView) -> Signal | None:
        return self.script.pop(0) if self.script else None


SIGNALS = {
    "buy": Signal(Action.BUY, "q", "buy", 1.0),
    "sell": Signal(Action.SELL, "q", "sell", 1.0),
    "exit_long": Signal(Action.SELL, "q", "exit", 1.0, reduce_only=True),
    "cover": Signal(Action.BUY, "q", "cover", 1.0, reduce_only=True),
}

steps = st.lists(
    st.tuples(
        st.sampled_from([None, *SIGNALS]),  # the signal delivered with this quote
        st.floats(min_value=40_000.0, max_value=70_000.0),  # mid
        st.sampled_from([0.00002, 0.0003, 0.004, 5.0]),  # displayed size: partial fills
        st.integers(min_value=1, max_value=90),  # seconds since the last quote
    ),
    min_size=1,
    max_size=60,
)


def _property_core(qty: float) -> tuple[EngineCore, Queue, PaperBroker]:
    cfg = parse_config(
        {
            "market": {"simulated": {"symbols": {X: {"initial_price": 60_000.0}}}},
            "risk": {
                "max_order_notional": 1e9,
                "max_position_fraction": 1.0,
                "max_gross_exposure_fraction": 1.0,
                "price_collar_pct": 50.0,
                "stale_quote_s": 1e6,
                "strategy_throttle": {"max_orders": 10_000, "per_seconds": 1},
                "global_throttle": {"max_orders": 10_000, "per_seconds": 1},
            },
            "safety": {
                "breakers": {
                    "consecutive_losses": 10_000,
                    "global_consecutive_losses": 10_000,
                    "baseline_signals_per_hour": 1e9,
                    "max_unreviewed_fills": 10**9,
                },
                "kill_switch": {"daily_loss_limit_pct": 100.0, "drawdown_limit_pct": 100.0},
            },
            "strategies": [
                {
                    "id": "q",
                    "kind": "ema_cross",
                    "symbols": [X],
                    "timeframe_s": 1,
                    "approval": "auto",
                    "allow_short": True,
                    "sizing": {"model": "fixed_qty", "qty": qty},
                }
            ],
        }
    )
    strat = Queue("q", X, StrategyParams())
    inst = {X: Instrument(X, "sim", 0.01, LOT, 0.0, MIN_NOTIONAL)}
    broker = PaperBroker(cfg.paper)
    core = EngineCore(cfg, [strat], inst, Portfolio(1e9), fee_rate=0.0)
    return core, strat, broker


@settings(max_examples=int(os.environ.get("COCKPIT_DUST_EXAMPLES", "150")), deadline=None)
@given(st.sampled_from([0.0001, 0.00013, 0.0011, 0.0123]), steps)
def test_sizing_never_leaves_dust_and_dust_never_blocks(qty: float, plan: list[Any]) -> None:
    """For any signals, prices and partial fills: no order the engine makes leaves the
    strategy holding 0 < |position| < the lot; no strategy order is ever denied for being
    below the venue minimum (a close of dust is recorded as dust); a strategy holding dust
    is shown flat, so it can always still act."""
    core, strat, broker = _property_core(qty)
    slot = core.slots[("q", X)]
    inst = slot.inst
    ts = 1_700_000_000 * S

    def handle(items: list[Any]) -> None:
        for item in items:
            if isinstance(item, IntentChecked) and item.intent.origin == "strategy":
                assert item.outcome != "denied" or not BELOW_MIN & set(item.denied_codes), item
            if isinstance(item, SubmitOrder):
                left = slot.position.qty + slot.in_flight  # the order is already counted
                assert abs(left) < 1e-12 or abs(left) >= LOT * (1 - 1e-9), (left, item)
                core.on_broker(broker.submit(item.order, core.now))

    for signal, mid, size, dt in plan:
        ts += dt * S
        if signal is not None:
            strat.script.append(SIGNALS[signal])
        q = Quote(X, mid - 0.5, mid + 0.5, size, size, ts, ts, "sim")
        handle(core.on_quote(q) or [])
        handle(core.on_broker(broker.on_quote(q)))
        if not core.open_orders and slot.position.qty:
            view = core.strategy_view(slot, mid)
            if not closable(inst, slot.position.qty, mid):
                assert view.qty == 0.0  # dust reads as flat: the strategy can act again


# --------------------------------------------------------------------------- the positions pane


async def test_the_positions_pane_marks_dust() -> None:
    client = FakeClient({"kraken": venues_scenario()["kraken"]})
    client.snap["positions"] = [
        {**position("BTC/USDT", "kraken", DUST, 60_000.0), "dust": True},
        {**position("SOL/USDT", "kraken", 10.0, 150.0), "dust": False},
    ]
    app = make_app(client)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        table = app.main.positions.query_one("#positions-table")
        assert plain(table.get_cell("BTC/USDT", "symbol")) == "BTC/USDT dust"  # type: ignore[attr-defined]
        assert plain(table.get_cell("SOL/USDT", "symbol")) == "SOL/USDT"  # type: ignore[attr-defined]
