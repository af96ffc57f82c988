"""A venue's life beside trading: reconciliation the operator answers, re-reconciliation after a
feed reconnects, the clock-drift breaker fed from the venue's clock, the dead-man heartbeat and
the journaled result of a venue-wide cancel on kill.

Everything runs the real engine (venue execution and source) with ccxt's real binance class
against the loopback fake venue of ``tests/test_venue_runtime.py`` (no internet).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

import engine.venues.execution as venue_execution
from engine.journal import verify_journal
from engine.runtime import JOURNAL_FILE, Engine
from engine.strategies.base import Strategy, StrategyParams
from engine.types import Action, Bar, OrderStatus, PositionView, Signal
from tests.conftest import fast_config
from tests.test_venue_runtime import (
    PRICE,
    SYM,
    TradingVenue,
    make_testnet_config,
    rows,
    run_until,
    venue_engine,
)
from tests.test_venues_fakevenue import FakeVenue, VOrder
from tests.test_venues_support import ENV, fixture, venue_env

T0 = 1_700_000_000_000_000_000

MARKET_ID = "BTCUSDT"


class BuyWhenFlat(Strategy):
    """Buys on every bar while it holds nothing (so an order goes out as soon as one may)."""

    kind = "buy_when_flat"
    Params = StrategyParams

    @property
    def warmup_bars(self) -> int:
        return 0

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        if position.qty:
            return None
        return Signal(action=Action.BUY, rule="buy_when_flat", reason="flat", confidence=1.0)


def config(data_dir: Path, strategy: str = "tests.test_venue_operations:BuyWhenFlat") -> Any:
    cfg = make_testnet_config(data_dir)
    strat = cfg.strategies[0].model_copy(update={"kind": strategy})
    return cfg.model_copy(update={"strategies": [strat]})


def foreign_order(server: TradingVenue, oid: str = "99001", qty: str = "0.002") -> VOrder:
    """An order placed at the venue by hand (another program, the web UI): not ours."""
    order = VOrder("web_" + oid, oid, MARKET_ID, "BUY", "LIMIT", qty, "50000.00")
    server.orders[order.vcid] = order
    return order


def foreign_trade(server: TradingVenue, oid: str, qty: str = "0.001", tid: int = 777) -> None:
    server.trades.append(
        {
            "symbol": MARKET_ID,
            "id": tid,
            "orderId": int(oid),
            "orderListId": -1,
            "price": f"{PRICE:.8f}",
            "qty": qty,
            "quoteQty": f"{PRICE * float(qty):.8f}",
            "commission": "0.05",
            "commissionAsset": "USDT",
            "time": server.now_ms(),
            "isBuyer": True,
            "isMaker": True,
            "isBestMatch": True,
        }
    )


def venue_rows(data_dir: Path) -> list[dict[str, Any]]:
    return [r.payload for r in rows(data_dir) if r.kind == "venue"]


@pytest.fixture
async def server() -> Any:
    srv = TradingVenue()
    await srv.start()
    yield srv
    await srv.stop()


async def test_an_unknown_order_halts_the_venue_until_a_person_cancels_it(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    venue_env(monkeypatch)
    foreign = foreign_order(server)
    data_dir = tmp_path / "data"
    engine = venue_engine(config(data_dir), data_dir, server)
    await engine.start()
    try:
        core = engine.core
        assert core is not None
        rec = engine.execution.reconciliations["binance"]
        assert [d.kind for d in rec.unresolved()] == ["unknown_order"]
        assert "binance" in core.venue_halts
        # The strategy wants to buy; the venue is HALTED: denied with the reason, nothing sent.
        await engine.run(duration_s=1.5)
        assert server.creates() == 0
        denied = [
            e for e in core.trace if getattr(e, "outcome", "") == "denied"
        ]  # IntentChecked events
        assert denied
        codes = {v.code for e in denied for v in e.verdicts if not v.ok}
        assert "VENUE_HALTED" in codes
        snap = engine.snapshot()["venues"]["binance"]
        assert snap["halted"] and snap["reconciliation"]["trading_state"] == "HALTED"

        # A wrong answer for the kind, an unknown key, an unknown venue: refused, still halted.
        bad = await engine.command(
            "resolve",
            {"venue": "binance", "key": foreign.oid, "action": "acknowledge", "reason": "x"},
        )
        assert not bad["ok"] and "adopt or cancel" in bad["message"]
        bad = await engine.command(
            "resolve", {"venue": "binance", "key": "nope", "action": "cancel", "reason": "x"}
        )
        assert not bad["ok"] and foreign.oid in bad["message"]
        bad = await engine.command(
            "resolve", {"venue": "kraken", "key": foreign.oid, "action": "cancel", "reason": "x"}
        )
        assert not bad["ok"] and "unknown venue" in bad["message"]
        assert "binance" in core.venue_halts

        reply = await engine.command(
            "resolve",
            {"venue": "binance", "key": foreign.oid, "action": "cancel", "reason": "not mine"},
        )
        assert reply["ok"], reply
        assert "reconciled" in reply["message"]
        assert server.orders[foreign.vcid].status == "canceled"
        assert not core.venue_halts and engine.execution.brokers["binance"].halted_reason == ""
        await run_until(engine, lambda: server.creates() >= 1)
    finally:
        await engine.stop()
    answered = [v for v in venue_rows(data_dir) if v["what"] == "resolved"]
    assert len(answered) == 1
    assert answered[0]["detail"]["resolution"]["action"] == "cancel"
    assert answered[0]["detail"]["resolution"]["note"] == "not mine"
    # Answers alone do not lift the halt: a fresh look at the venue does.
    assert answered[0]["halted"] == "binance: every difference answered; looking again"
    rows_after = venue_rows(data_dir)
    after = rows_after[rows_after.index(answered[0]) + 1]
    assert after["what"] == "reconciled" and after["detail"]["trigger"] == "answered"
    assert after["halted"] == ""
    audits = [
        r.payload for r in rows(data_dir) if r.kind == "audit" and r.payload["action"] == "resolve"
    ]
    assert [a["accepted"] for a in audits] == [False, False, False, True]
    assert verify_journal(data_dir / JOURNAL_FILE).ok


async def test_an_adopted_order_is_managed_and_stays_known_after_a_restart(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    venue_env(monkeypatch)
    foreign = foreign_order(server, qty="0.002")
    data_dir = tmp_path / "data"
    cfg = config(data_dir, "tests.test_venue_runtime:BuyOnce")
    engine = venue_engine(cfg, data_dir, server)
    await engine.start()
    try:
        core = engine.core
        assert core is not None
        reply = await engine.command(
            "resolve",
            {"venue": "binance", "key": foreign.oid, "action": "adopt", "reason": "my order"},
        )
        assert reply["ok"], reply
        coid = f"adopt-binance-{foreign.oid}"
        assert core.open_orders[coid].status is OrderStatus.NEW
        assert not core.venue_halts
        # It fills at the venue: the fill is the engine's now (an operator position).
        server.orders[foreign.vcid].status = "filled"
        foreign_trade(server, foreign.oid, qty="0.002")
        await engine.execution.poll_once()
        assert core.portfolio.positions[SYM].qty == pytest.approx(0.002)
        assert coid not in core.open_orders
    finally:
        await engine.stop()

    restarted = venue_engine(cfg, data_dir, server)
    await restarted.start()
    try:
        assert restarted.core is not None
        assert restarted.core.portfolio.positions[SYM].qty == pytest.approx(0.002)
        rec = restarted.execution.reconciliations["binance"]
        assert rec.unresolved() == []  # the trade belongs to the adopted order: known
        assert not restarted.core.venue_halts
        # The fake account's balances never move: the journal's fill shows as a balance
        # difference from the baseline taken at the first start (shown, not blocking).
        [btc] = [d for d in rec.differences if d.kind == "balance_mismatch" and d.key == "BTC"]
        assert not btc.blocking
        assert btc.detail["expected"] - btc.detail["venue"] == pytest.approx(0.002)
    finally:
        await restarted.stop()
    baselines = [v for v in venue_rows(data_dir) if v["what"] == "baseline"]
    assert len(baselines) == 1 and "BTC" in baselines[0]["detail"]["balances"]
    assert server.creates() <= 1  # BuyOnce may have bought once; nothing twice
    assert verify_journal(data_dir / JOURNAL_FILE).ok


async def test_an_acknowledged_unknown_fill_stays_answered_after_a_restart(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    venue_env(monkeypatch)
    foreign_trade(server, "88001", tid=4242)  # a trade of an order long gone, placed by hand
    data_dir = tmp_path / "data"
    cfg = config(data_dir, "tests.test_venue_runtime:BuyOnce")
    engine = venue_engine(cfg, data_dir, server)
    await engine.start()
    try:
        rec = engine.execution.reconciliations["binance"]
        [diff] = rec.unresolved()
        assert diff.kind == "unjournaled_fill" and diff.key == "binance-4242"
        reply = await engine.command(
            "resolve",
            {
                "venue": "binance",
                "key": diff.key,
                "action": "acknowledge",
                "reason": "manual trade, hedged elsewhere",
            },
        )
        assert reply["ok"], reply
        assert engine.core is not None and not engine.core.venue_halts
        assert SYM not in engine.core.portfolio.positions or not (
            engine.core.portfolio.positions[SYM].qty
        )
    finally:
        await engine.stop()
    restarted = venue_engine(cfg, data_dir, server)
    await restarted.start()
    try:
        rec = restarted.execution.reconciliations["binance"]
        assert [d.key for d in rec.differences] == ["binance-4242"]
        assert rec.unresolved() == [] and not restarted.core.venue_halts  # type: ignore[union-attr]
    finally:
        await restarted.stop()


async def test_adopting_an_unknown_fill_takes_it_into_the_position_once(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    venue_env(monkeypatch)
    foreign_trade(server, "88002", qty="0.003", tid=5151)
    data_dir = tmp_path / "data"
    cfg = config(data_dir, "tests.test_venue_runtime:BuyOnce")
    engine = venue_engine(cfg, data_dir, server)
    await engine.start()
    try:
        reply = await engine.command(
            "resolve",
            {"venue": "binance", "key": "binance-5151", "action": "adopt", "reason": "mine"},
        )
        assert reply["ok"], reply
        core = engine.core
        assert core is not None
        assert core.portfolio.positions[SYM].qty == pytest.approx(0.003)
        await engine.execution.poll_once()
        assert core.portfolio.positions[SYM].qty == pytest.approx(0.003)
    finally:
        await engine.stop()
    restarted = venue_engine(cfg, data_dir, server)
    await restarted.start()
    try:
        assert restarted.execution.reconciliations["binance"].differences == ()  # journaled now
        assert restarted.core is not None
        assert restarted.core.portfolio.positions[SYM].qty == pytest.approx(0.003)
    finally:
        await restarted.stop()


async def test_a_feed_reconnect_reconciles_again_and_finds_a_new_unknown_order(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    venue_env(monkeypatch)
    monkeypatch.setattr(venue_execution, "VENUE_WATCH_S", 0.05)
    monkeypatch.setattr(venue_execution, "RECONCILE_MIN_GAP_S", 0.5)
    data_dir = tmp_path / "data"
    engine = venue_engine(config(data_dir, "tests.test_venue_runtime:BuyOnce"), data_dir, server)
    await engine.start()
    try:
        assert engine.core is not None and not engine.core.venue_halts
        feed = engine.source.feeds["binance"]
        await engine.run(duration_s=0.3)
        foreign_order(server, "99100")  # appears while the feed was away
        feed.resyncs += 1  # the feed came back
        await engine.run(duration_s=0.4)
        assert "binance" in engine.core.venue_halts
        # A flapping feed: three more reconnects in a burst give one more reconciliation,
        # not three.
        feed.resyncs += 3
        await engine.run(duration_s=0.8)
        rec = engine.execution.reconciliations["binance"]
        assert [d.key for d in rec.unresolved()] == ["99100"]
    finally:
        await engine.stop()
    triggers = [
        v["detail"].get("trigger") for v in venue_rows(data_dir) if v["what"] == "reconciled"
    ]
    assert triggers == ["start", "reconnect", "reconnect"]


async def test_the_venue_clock_feeds_the_clock_drift_breaker(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    """Our clock 600 ms ahead of the venue's (halt limit 500 ms): the engine halts; back in
    step, the breaker re-arms by itself."""
    venue_env(monkeypatch)
    import time

    skew = {"ns": 600_000_000}
    data_dir = tmp_path / "data"
    cfg = config(data_dir, "tests.test_venue_runtime:BuyOnce")

    def skewed(broker: Any) -> None:
        broker._clock = lambda: time.time_ns() + skew["ns"]

    engine = venue_engine(cfg, data_dir, server, also=skewed)
    await engine.start()
    try:
        core = engine.core
        assert core is not None
        assert engine.execution.clock_offsets["binance"] == pytest.approx(600, abs=80)
        assert core.safety.trading_state.name == "HALTED"
        assert "clock_drift" in str(core.safety.snapshot())
        snap = engine.snapshot()["venues"]["binance"]
        assert snap["clock_offset_ms"] == pytest.approx(600, abs=80)
        skew["ns"] = 0
        await engine.execution.check_clock("binance")
        assert core.safety.trading_state.name == "ACTIVE"
    finally:
        await engine.stop()
    breakers = [r.payload["change"] for r in rows(data_dir) if r.kind == "breaker"]
    assert [(b["breaker"], b["tripped"]) for b in breakers] == [
        ("clock_drift", True),
        ("clock_drift", False),
    ]


async def test_the_dead_man_switch_is_kept_armed_while_running_and_disarmed_on_stop(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    venue_env(monkeypatch)
    calls: list[int] = []
    data_dir = tmp_path / "data"
    base = config(data_dir, "tests.test_venue_runtime:BuyOnce")
    vcfg = base.venues["binance"].model_copy(update={"deadman_s": 0.3})
    cfg = base.model_copy(update={"venues": {"binance": vcfg}})

    def with_deadman(broker: Any) -> None:
        broker.exchange.has["cancelAllOrdersAfter"] = True  # as on bybit, okx, kraken

        async def cancel_all_orders_after(timeout_ms: int, params: Any = None) -> dict:
            calls.append(timeout_ms)
            return {}

        broker.exchange.cancel_all_orders_after = cancel_all_orders_after

    engine = venue_engine(cfg, data_dir, server, also=with_deadman)
    await engine.start()
    try:
        import asyncio

        running = asyncio.create_task(engine.run(duration_s=0.5))
        await asyncio.sleep(0.3)
        during = engine.snapshot()["venues"]["binance"]["deadman"]
        await running
        after = engine.snapshot()["venues"]["binance"]["deadman"]
    finally:
        await engine.stop()
    heartbeats = [c for c in calls if c > 0]
    assert len(heartbeats) >= 3 and set(heartbeats) == {300}  # every 0.1 s, 300 ms timeout
    assert calls[-1] == 0  # disarmed when trading stopped
    assert during["armed"] is True and during["timeout_s"] == 0.3 and not during["error"]
    assert after["armed"] is False


async def test_a_kill_journals_the_venue_wide_cancel_result(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    venue_env(monkeypatch)
    server.auto_fill = False
    data_dir = tmp_path / "data"
    engine = venue_engine(config(data_dir, "tests.test_venue_runtime:BuyOnce"), data_dir, server)
    await engine.start()
    try:
        await run_until(engine, lambda: server.creates() == 1)
        reply = await engine.command("kill", {"level": "halt", "reason": "test"})
        assert reply["ok"]
        snap = engine.snapshot()["venues"]["binance"]
    finally:
        await engine.stop()
    kills = [v for v in venue_rows(data_dir) if v["what"] == "kill"]
    assert len(kills) == 1 and kills[0]["detail"]["confirmed"] is True
    assert snap["kill"]["confirmed"] is True


async def test_the_paper_engine_has_nothing_to_resolve(tmp_path: Path) -> None:
    engine = Engine(fast_config(tmp_path / "d"), tmp_path / "d")
    await engine.start()
    try:
        reply = await engine.command(
            "resolve", {"venue": "sim", "key": "1", "action": "cancel", "reason": "x"}
        )
        bad = await engine.command(
            "resolve", {"venue": "sim", "key": "1", "action": "delete", "reason": "x"}
        )
    finally:
        await engine.stop()
    assert not reply["ok"] and "paper" in reply["message"]
    assert not bad["ok"] and "action" in bad["message"] and "\n" not in bad["message"]


async def test_a_symbol_whose_feed_lost_sync_gets_no_orders(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    """The core asks the feed before every order: an unsynced symbol is denied up front
    (MARKET_UNSYNCED), so the broker never has to refuse it (which would count as a reject)."""
    venue_env(monkeypatch)
    data_dir = tmp_path / "data"
    engine = venue_engine(config(data_dir), data_dir, server)
    await engine.start()
    try:
        core = engine.core
        assert core is not None
        assert "unsynced (waiting for first data)" in (engine.source.market_gate(SYM) or "")
        feed = engine.source.feeds["binance"]
        state = feed.state[SYM]
        real_accept = feed.accept

        def lose_sync(symbol: str, payload: Any, recv_ns: int | None = None) -> Any:
            quote = real_accept(symbol, payload, recv_ns)
            state.synced, state.reason = False, "reconnecting after NetworkError"
            return quote  # quotes keep coming, but the feed says it is not in sync

        feed.accept = lose_sync  # type: ignore[method-assign]
        await engine.run(duration_s=1.5)
        assert server.creates() == 0
        verdicts = [
            v for e in core.trace if getattr(e, "outcome", "") == "denied" for v in e.verdicts
        ]
        unsynced = [v for v in verdicts if v.code == "MARKET_UNSYNCED"]
        assert unsynced and "reconnecting after NetworkError" in unsynced[0].message
        assert core.counters["submitted"] == 0  # denied before the journal, never refused later
        feed.accept = real_accept  # type: ignore[method-assign]
        await run_until(engine, lambda: server.creates() >= 1)
    finally:
        await engine.stop()


async def test_a_trader_cancels_an_unknown_order_from_the_cockpit(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    """The whole chain by key: the real cockpit over the real engine on a venue shows the venue
    HALTED with the unknown order; v, choose cancel, type a reason, Enter: the order is
    canceled at the venue, the venue trades again and the pane says who answered."""
    from cockpit.app import CockpitApp
    from cockpit.tui.resolve_screen import ResolveScreen
    from engine.client import InProcessClient
    from engine.runtime import os_user
    from tests.test_tui import fixed_clock, ready
    from tests.test_tui_venues import header_is_red, plain, refresh

    venue_env(monkeypatch)
    foreign = foreign_order(server)
    data_dir = tmp_path / "data"
    engine = venue_engine(config(data_dir, "tests.test_venue_runtime:BuyOnce"), data_dir, server)
    await engine.start()
    try:
        app = CockpitApp(InProcessClient(engine), clock=fixed_clock)
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            await refresh(pilot)
            assert header_is_red(app)
            table = app.main.venues.table
            assert plain(table.get_cell(f"binance|{foreign.oid}", "status")) == "BLOCKING"
            await pilot.press("v")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, ResolveScreen) and screen.diff.key == foreign.oid
            await pilot.press("down", *"not placed by us", "enter")
            for _ in range(100):
                if not isinstance(app.screen, ResolveScreen):
                    break
                await pilot.pause(0.02)
            assert not isinstance(app.screen, ResolveScreen)
            await refresh(pilot)
            # The answer was followed by a fresh look at the venue: nothing left to show.
            assert f"binance|{foreign.oid}" not in {str(k.value) for k in table.rows}
            assert not header_is_red(app)
        audits = [r.payload for r in rows(data_dir) if r.kind == "audit"]
        assert [(a["action"], a["user"], a["accepted"]) for a in audits] == [
            ("resolve", os_user(), True)
        ]
        assert server.orders[foreign.vcid].status == "canceled"
        assert engine.core is not None and not engine.core.venue_halts
    finally:
        await engine.stop()


def position(engine: Engine) -> float:
    assert engine.core is not None
    pos = engine.core.portfolio.positions.get(SYM)
    return pos.qty if pos is not None else 0.0


async def test_an_order_that_filled_while_the_engine_was_down_is_booked_once_no_false_halt(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    """Acknowledged, then filled at the venue before any poll, then the engine stops. The
    journal has the venue's order id, so at restart the venue's trade (which carries only that
    id) is recognised as ours: no HALT, booked once, and again once after another restart."""
    venue_env(monkeypatch)
    data_dir = tmp_path / "data"
    cfg = config(data_dir, "tests.test_venue_runtime:BuyOnce")
    first = venue_engine(cfg, data_dir, server)
    first.execution.poll_s = 1000.0  # type: ignore[attr-defined]  # the fill is never polled in this session
    await first.start()
    try:
        await run_until(first, lambda: server.creates() == 1)
        assert server.trades and position(first) == 0.0
    finally:
        await first.stop()
    for _ in range(2):
        again = venue_engine(cfg, data_dir, server)
        await again.start()
        try:
            assert again.core is not None and not again.core.venue_halts
            assert again.execution.reconciliations["binance"].unresolved() == []
            await again.execution.poll_once()
            assert position(again) == pytest.approx(0.001)
        finally:
            await again.stop()
    fills = [r.payload["fill"]["fill_id"] for r in rows(data_dir) if r.kind == "fill"]
    assert len(fills) == 1 and server.creates() == 1


async def test_an_adopted_part_filled_order_keeps_its_acknowledged_trade_out_after_restart(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    """A hand-placed order has filled 0.001 of 0.002; the trader adopts the order and
    acknowledges the earlier trade (hedged elsewhere). A restart must not book that trade, nor
    call the still-open order filled."""
    venue_env(monkeypatch)
    foreign = foreign_order(server, "99001", qty="0.002")
    foreign_trade(server, "99001", qty="0.001", tid=777)
    real_order = server._binance_order

    def part_filled(o: VOrder, transact: bool = False) -> dict[str, Any]:
        out = real_order(o, transact)
        if o.vcid == foreign.vcid and o.status == "open":
            out.update(executedQty="0.001", status="PARTIALLY_FILLED")
        return out

    server._binance_order = part_filled  # type: ignore[method-assign]
    data_dir = tmp_path / "data"
    cfg = config(data_dir, "tests.test_venue_runtime:BuyOnce")
    coid = "adopt-binance-99001"
    for session in range(2):
        engine = venue_engine(cfg, data_dir, server)
        await engine.start()
        try:
            if session == 0:
                for key, action in (("99001", "adopt"), ("binance-777", "acknowledge")):
                    reply = await engine.command(
                        "resolve",
                        {"venue": "binance", "key": key, "action": action, "reason": "desk"},
                    )
                    assert reply["ok"], reply
            await engine.execution.poll_once()
            await engine.execution.poll_once()
            assert engine.core is not None and not engine.core.venue_halts
            assert position(engine) == 0.0
            order = engine.core.open_orders[coid]
            assert order.filled_qty == pytest.approx(0.001) and not order.status.is_terminal
        finally:
            await engine.stop()


async def test_cancelling_an_unknown_order_that_filled_meanwhile_is_refused(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    """The hand-placed order fills between the reconciliation and the trader's cancel: the
    cancel is not recorded as done, the venue stays HALTED, and its fill is shown instead."""
    venue_env(monkeypatch)
    foreign = foreign_order(server, "99001", qty="0.002")
    data_dir = tmp_path / "data"
    engine = venue_engine(config(data_dir, "tests.test_venue_runtime:BuyOnce"), data_dir, server)
    await engine.start()
    try:
        server.orders[foreign.vcid].status = "filled"
        foreign_trade(server, "99001", qty="0.002", tid=888)
        reply = await engine.command(
            "resolve",
            {"venue": "binance", "key": "99001", "action": "cancel", "reason": "not mine"},
        )
        assert not reply["ok"] and "did not cancel" in reply["message"]
        assert engine.core is not None and "binance" in engine.core.venue_halts
        rec = engine.execution.reconciliations["binance"]
        assert [(d.kind, d.key) for d in rec.unresolved()] == [("unjournaled_fill", "binance-888")]
    finally:
        await engine.stop()


def test_the_core_books_one_venue_trade_once_whatever_path_brings_it_twice() -> None:
    from engine.types import Fill, Liquidity, Side
    from tests.test_venue_properties import make_core

    core = make_core()
    fill = Fill(
        "binance-1",
        "adopt-x",
        "operator",
        "A/USDT",
        "venue_a",
        Side.BUY,
        1.0,
        100.0,
        0.1,
        Liquidity.TAKER,
        T0,
    )
    core.on_broker([fill])
    again = Fill(
        "binance-1",
        "ck-1-1",
        "flip_a",
        "A/USDT",
        "venue_a",
        Side.BUY,
        1.0,
        100.0,
        0.1,
        Liquidity.TAKER,
        T0 + 1,
    )
    assert core.on_broker([again]) == []
    assert core.portfolio.positions["A/USDT"].qty == 1.0
    assert core.counters["duplicate_fills"] == 1
    # binance numbers trades per symbol: the same id on another symbol is another trade.
    other = Fill(
        "binance-1",
        "ck-1-2",
        "flip_b",
        "B/USDT",
        "venue_b",
        Side.BUY,
        2.0,
        100.0,
        0.1,
        Liquidity.TAKER,
        T0 + 2,
    )
    assert core.on_broker([other])
    assert core.portfolio.positions["B/USDT"].qty == 2.0


async def test_a_kill_switch_flatten_goes_out_on_an_unsynced_feed(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    """A crisis is when feeds fail: the kill switch's reduce-only flatten is not held back by
    an unsynced feed (strategies' orders are)."""
    venue_env(monkeypatch)
    data_dir = tmp_path / "data"
    engine = venue_engine(config(data_dir, "tests.test_venue_runtime:BuyOnce"), data_dir, server)
    await engine.start()
    try:
        await run_until(engine, lambda: position(engine) > 0)
        state = engine.source.feeds["binance"].state[SYM]
        state.synced, state.reason = False, "reconnecting after NetworkError"
        reply = await engine.command("kill", {"level": "flatten", "reason": "feed trouble"})
        assert reply["ok"] and "denied" not in reply["message"], reply
        assert server.creates() == 2
        await engine.execution.poll_once()
        assert position(engine) == pytest.approx(0.0, abs=1e-12)
    finally:
        await engine.stop()


async def test_live_mode_trades_on_the_venue_engine_and_every_order_waits_for_a_person(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    """Live (armed at the CLI) runs the same venue execution without the sandbox: the strategy is
    forced into approve, so nothing reaches the venue until a person approves, then exactly
    one order goes out (under the canary cap)."""
    venue_env(monkeypatch)
    data_dir = tmp_path / "data"
    base = config(data_dir, "tests.test_venue_runtime:BuyOnce")
    venue = base.venues["binance"].model_copy(update={"testnet": False})
    cfg = base.model_copy(
        update={
            "engine": base.engine.model_copy(update={"mode": "live"}),
            "venues": {"binance": venue},
            # At most what the account holds (9,814.88 USDT): live refuses more (reviewconfig).
            "portfolio": base.portfolio.model_copy(update={"starting_cash": 5_000.0}),
        }
    )
    assert cfg.strategies[0].approval == "auto"
    engine = venue_engine(cfg, data_dir, server)
    await engine.start()
    try:
        broker = engine.execution.brokers["binance"]
        assert broker.mode == "live" and not getattr(broker.exchange, "_engine_sandbox_guard", 0)
        core = engine.core
        assert core is not None
        await run_until(engine, lambda: bool(core.approvals.pending()))
        assert server.creates() == 0
        [pending] = core.approvals.pending()
        reply = await engine.command("approve", {"id": pending.approval_id})
        assert reply["ok"], reply
        assert server.creates() == 1
        await engine.execution.poll_once()
        assert position(engine) == pytest.approx(0.001)
    finally:
        await engine.stop()
    intents = [r.payload for r in rows(data_dir) if r.kind == "intent"]
    assert [i["outcome"] for i in intents] == ["awaiting_approval", "submitted"]


async def test_a_kill_latches_at_once_while_a_venue_request_holds_the_lock(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    """A venue request stuck under the command lock (a reconciliation against a venue that
    hangs) must not keep the kill switch from taking effect: the state flips at once, and the
    reply follows when the lock is free, with the state durable."""
    import asyncio

    venue_env(monkeypatch)
    data_dir = tmp_path / "data"
    engine = venue_engine(config(data_dir, "tests.test_venue_runtime:BuyOnce"), data_dir, server)
    await engine.start()
    try:
        core = engine.core
        assert core is not None
        release = asyncio.Event()

        async def stuck_request() -> None:
            async with engine.command_lock:
                await release.wait()

        holder = asyncio.create_task(stuck_request())
        await asyncio.sleep(0)
        kill = asyncio.create_task(engine.command("kill", {"level": "halt", "reason": "now"}))
        await asyncio.sleep(0.05)
        assert core.safety.trading_state.name == "HALTED"  # latched, lock still held
        assert not kill.done()  # the reply waits for the journal, behind the lock
        release.set()
        reply = await kill
        await holder
        assert reply["ok"], reply
    finally:
        await engine.stop()
    kills = [
        r.payload
        for r in rows(data_dir)
        if r.kind == "safety" and r.payload["what"] == "kill_switch"
    ]
    assert kills and kills[-1]["after"]["kill_level"] == "halt"


class OkxVenue(FakeVenue):
    """The okx fake venue plus fresh tickers and balances (orders rest, nothing fills)."""

    def __init__(self) -> None:
        super().__init__("okx", sandbox=True)

    async def _okx(self, request: Any, body: str) -> tuple[int, Any]:
        path = request.path
        if path.endswith("/market/ticker"):
            inst = dict(parse_qsl(request.query_string)).get("instId", "ETH-USDT")
            tick = fixture("okx", "ticker")
            bid = 3001.0
            tick["data"][0].update(
                instId=inst,
                bidPx=f"{bid}",
                askPx=f"{bid + 0.1}",
                last=f"{bid}",
                ts=str(self.now_ms()),
            )
            return 200, tick
        if path.endswith("/account/balance"):
            return 200, fixture("okx", "balance")
        return await super()._okx(request, body)


async def test_two_venues_at_once_each_symbol_trades_on_its_own_venue(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    """binance for BTC/USDT, okx for ETH/USDT in one engine: each strategy's order reaches its
    own venue, both are reconciled, and a kill cancels on both and confirms on both."""
    venue_env(monkeypatch)
    okx = OkxVenue()
    await okx.start()
    server.auto_fill = False
    data_dir = tmp_path / "data"
    base = config(data_dir, "tests.test_venue_runtime:BuyOnce")
    btc = base.strategies[0]
    eth = btc.model_copy(update={"id": "eth_buyer", "symbols": ["ETH/USDT"]})
    venues = {
        "binance": base.venues["binance"].model_copy(update={"symbols": ["BTC/USDT"]}),
        "okx": base.venues["binance"].model_copy(
            update={"exchange": "okx", "symbols": ["ETH/USDT"], "password_env": ENV["password"]}
        ),
    }
    cfg = base.model_copy(update={"strategies": [btc, eth], "venues": venues})

    engine = venue_engine(cfg, data_dir, server, servers={"okx": okx})
    await engine.start()
    try:
        assert sorted(engine.execution.reconciliations) == ["binance", "okx"]
        assert engine.core is not None and not engine.core.venue_halts
        await run_until(engine, lambda: server.creates() == 1 and len(okx.orders) == 1)
        [okx_order] = okx.orders.values()
        assert okx_order.symbol == "ETH-USDT" and okx_order.status == "open"
        assert [o.symbol for o in server.orders.values()] == ["BTCUSDT"]
        snap = engine.snapshot()
        assert {o["venue"] for o in snap["orders"]} == {"binance", "okx"}
        reply = await engine.command("kill", {"level": "halt", "reason": "both"})
        assert reply["ok"], reply
        assert engine.execution.venue_kill == {"binance": True, "okx": True}
        assert okx_order.status == "canceled"
        assert [o.status for o in server.orders.values()] == ["canceled"]
    finally:
        await engine.stop()
        await okx.stop()


async def test_a_flatten_kill_cancels_at_the_venue_and_confirms_before_the_flatten_order(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    """The composed engine keeps the venue engine's order: at a kill, every venue's open orders
    are canceled and the venue confirms none is left, and only then does a flatten order go."""
    venue_env(monkeypatch)
    data_dir = tmp_path / "data"
    engine = venue_engine(config(data_dir, "tests.test_venue_runtime:BuyOnce"), data_dir, server)
    await engine.start()
    try:
        await run_until(engine, lambda: position(engine) > 0)
        foreign_order(server)  # an open order at the venue the kill must cancel first
        start = len(server.hits)
        reply = await engine.command("kill", {"level": "flatten", "reason": "order of things"})
        assert reply["ok"], reply
    finally:
        await engine.stop()
    hits = [(h.method, h.path) for h in server.hits[start:]]
    sent = [i for i, (m, p) in enumerate(hits) if m == "POST" and p.endswith("/api/v3/order")]
    canceled = [i for i, (m, p) in enumerate(hits) if m == "DELETE"]
    confirmed = [i for i, (m, p) in enumerate(hits) if m == "GET" and p.endswith("/openOrders")]
    assert len(sent) == 1 and canceled and confirmed, hits
    assert max(canceled) < sent[0] and max(confirmed) < sent[0], hits
    kills = [v for v in venue_rows(data_dir) if v["what"] == "kill"]
    assert kills[-1]["detail"]["confirmed"] is True


async def test_the_dead_man_switch_stays_armed_when_trading_dies_of_an_error(
    monkeypatch: Any, tmp_path: Path, server: TradingVenue
) -> None:
    """A run that ends in an error does not disarm the venue's dead-man switch: nobody is
    watching the orders any more, so the venue is left to cancel them on its timer."""
    venue_env(monkeypatch)
    calls: list[int] = []
    data_dir = tmp_path / "data"
    base = config(data_dir, "tests.test_venue_runtime:BuyOnce")
    vcfg = base.venues["binance"].model_copy(update={"deadman_s": 0.3})
    cfg = base.model_copy(update={"venues": {"binance": vcfg}})

    def with_deadman(broker: Any) -> None:
        broker.exchange.has["cancelAllOrdersAfter"] = True

        async def cancel_all_orders_after(timeout_ms: int, params: Any = None) -> dict:
            calls.append(timeout_ms)
            return {}

        broker.exchange.cancel_all_orders_after = cancel_all_orders_after

    class Broken(Exception):
        pass

    engine = venue_engine(cfg, data_dir, server, also=with_deadman)
    await engine.start()
    try:
        import asyncio

        async def process(batch: Any) -> None:
            if len(calls) >= 2:  # armed and beaten at least once: now trading dies
                raise Broken

        engine.process = process  # type: ignore[method-assign]
        with pytest.raises(Broken):
            await engine.run(duration_s=10.0)
        await asyncio.sleep(0.2)  # well past a heartbeat period: none comes any more
    finally:
        await engine.stop()
    assert calls and all(c == 300 for c in calls)  # heartbeats, never the disarm (0)
