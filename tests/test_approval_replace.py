"""A new approval for the same strategy, symbol and side replaces the pending one.

Before: donchian_breakout stacked 11 pending buys (7 for BTC) in the default demo, each a toast
and a row a person had to clear. Now the old request is withdrawn as "superseded by <new id>"
(an outcome of its own: journaled, in the trace, counted), approving it is refused naming the
new id, and the headless engine prints a line for every request and decision.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from engine.approvals import SUPERSEDED, expired_at_restart
from engine.config import Config
from engine.core import EngineCore
from engine.datadir import JOURNAL_FILE
from engine.events import ApprovalDecided, ApprovalRequested, EngineEvent
from engine.headless import describe_event
from engine.journal import read_rows
from engine.marketdata.simulated import SimulatedMarket
from engine.portfolio import Portfolio
from engine.runtime import Engine
from engine.strategies.registry import build_strategies
from engine.types import NS_PER_SECOND, Action, Quote, Signal
from engine.vocabulary import EventKind
from tests.conftest import fast_config

EXAMPLES = int(os.environ.get("COCKPIT_APPROVAL_EXAMPLES", "60"))
APPROVE_STRATEGIES = ("rsi_reversion", "donchian_breakout")
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
PRICES = {"BTC/USDT": 60_000.0, "ETH/USDT": 3_000.0, "SOL/USDT": 150.0}
T0 = 1_709_251_200 * NS_PER_SECOND  # 2024-03-01


def buy(reason: str = "test entry") -> Signal:
    return Signal(Action.BUY, "test", reason, 0.5, {}, False)


def pending_per_key(core: EngineCore) -> Counter[tuple[str, str, str]]:
    return Counter(
        (p.intent.strategy_id, p.intent.symbol, str(p.intent.side))
        for p in core.approvals.pending()
    )


def outcome_rows(data_dir: Path) -> list[dict[str, Any]]:
    return [
        r.payload["outcome"] for r in read_rows(data_dir / JOURNAL_FILE) if r.kind == "approval"
    ]


async def started(data_dir: Path, emit: Any = None) -> Engine:
    """The default config (rsi_reversion and donchian_breakout in approve), with quotes."""
    engine = Engine(fast_config(data_dir, auto=False), data_dir, emit=emit)
    await engine.start()
    await engine.process(list(itertools.islice(engine.source.events(), 60)))
    return engine


async def ask(engine: Engine, strategy: str, symbol: str, signal: Signal) -> list[Any]:
    """A strategy's signal through the real decision path, published as the engine does."""
    core = engine.core
    assert core is not None
    slot = core.slots[(strategy, symbol)]
    out = core.decide(slot, signal, (core.quotes[symbol].bid + core.quotes[symbol].ask) / 2)
    await engine.handle(out)
    await engine.committed()
    return out


def requested_id(out: list[Any]) -> str:
    [req] = [e for e in out if isinstance(e, ApprovalRequested)]
    return str(req.approval["id"])


async def test_a_new_request_replaces_the_pending_one_on_the_record(data_dir: Path) -> None:
    engine = await started(data_dir)
    core = engine.core
    assert core is not None
    try:
        first = requested_id(await ask(engine, "donchian_breakout", "BTC/USDT", buy()))
        out = await ask(engine, "donchian_breakout", "BTC/USDT", buy("a newer breakout"))
        second = requested_id(out)
        [gone] = [e for e in out if isinstance(e, ApprovalDecided)]
        assert gone.outcome["approval_id"] == first
        assert gone.outcome["status"] == SUPERSEDED and gone.outcome["by"] == "system"
        assert gone.outcome["reason"] == f"superseded by {second}"
        assert gone.outcome["superseded_by"] == second
        # Shown once: the snapshot (the TUI's and `cockpit approvals`' list) has the new one.
        snap = engine.snapshot()
        assert [a["id"] for a in snap["approvals"]] == [second]
        assert gone in core.trace
        assert core.approvals.counters()["donchian_breakout"][SUPERSEDED] == 1
        assert core.counters["superseded"] == 1
        # Another side, symbol or strategy is another request: nothing replaced.
        await ask(engine, "donchian_breakout", "ETH/USDT", buy())
        await ask(engine, "rsi_reversion", "BTC/USDT", buy())
        assert len(core.approvals.pending()) == 3
        assert max(pending_per_key(core).values()) == 1
        # Approving the old one is refused, naming the one to decide instead.
        reply = await engine.command("approve", {"id": first}, user="alice")
        assert reply["ok"] is False
        assert f"superseded by {second}" in reply["message"]
        assert f"decide {second} instead" in reply["message"]
        reply = await engine.command("approve", {"id": second}, user="alice")
        assert reply["ok"] is True, reply["message"]
    finally:
        await engine.stop()
    rows = [o for o in outcome_rows(data_dir) if o["approval_id"] == first]
    assert [o["status"] for o in rows if o["status"] != "refused"] == [SUPERSEDED]


async def test_restart_keeps_one_outcome_per_request_and_the_refusal(data_dir: Path) -> None:
    engine = await started(data_dir)
    try:
        first = requested_id(await ask(engine, "rsi_reversion", "SOL/USDT", buy()))
        second = requested_id(await ask(engine, "rsi_reversion", "SOL/USDT", buy()))
    finally:
        await engine.stop()
    engine = await started(data_dir)
    core = engine.core
    assert core is not None
    try:
        assert all(p.approval_id not in (first, second) for p in core.approvals.pending())
        assert max(pending_per_key(core).values(), default=0) <= 1
        reply = await engine.command("approve", {"id": first}, user="alice")
        assert reply["ok"] is False and f"superseded by {second}" in reply["message"]
        assert core.approvals.counters()["rsi_reversion"][SUPERSEDED] == 1
    finally:
        await engine.stop()
    terminal = Counter(
        o["approval_id"]
        for o in outcome_rows(data_dir)
        if o["status"] != "refused" and not o["after_checks"]
    )
    assert terminal[first] == 1 and terminal[second] == 1
    statuses = {o["approval_id"]: o["status"] for o in outcome_rows(data_dir)}
    assert statuses[second] == "expired"


async def test_headless_lines_for_requested_decided_and_expired(data_dir: Path) -> None:
    """`cockpit engine` prints describe_event(ev) for every event it is shown."""
    seen: list[EngineEvent] = []
    engine = await started(data_dir, emit=seen.append)
    core = engine.core
    assert core is not None
    try:
        first = requested_id(await ask(engine, "donchian_breakout", "BTC/USDT", buy()))
        second = requested_id(await ask(engine, "donchian_breakout", "BTC/USDT", buy()))
        third = requested_id(await ask(engine, "rsi_reversion", "ETH/USDT", buy()))
        fourth = requested_id(await ask(engine, "rsi_reversion", "BTC/USDT", buy()))
        await engine.command("approve", {"id": second}, user="alice")
        await engine.command("reject", {"id": third, "reason": "not now"}, user="bob")
        await engine.handle(core.tick(core.now + 31 * NS_PER_SECOND))  # the TTL is 30 s
        await engine.committed()
    finally:
        await engine.stop()
    lines = [json.loads(json.dumps(line)) for ev in seen if (line := describe_event(ev))]
    asked = [x for x in lines if x["event"] == EventKind.APPROVAL_REQUESTED]
    assert [x["id"] for x in asked] == [first, second, third, fourth]
    assert asked[0]["strategy"] == "donchian_breakout" and asked[0]["symbol"] == "BTC/USDT"
    assert asked[0]["side"] == "buy" and asked[0]["qty"] > 0 and asked[0]["expires"]
    decided = {x["id"]: x for x in lines if x["event"] == EventKind.APPROVAL}
    assert decided[first]["status"] == SUPERSEDED and decided[first]["by"] == "system"
    assert decided[first]["superseded_by"] == second
    assert decided[second]["status"] == "approved" and decided[second]["by"] == "alice"
    assert decided[third]["status"] == "rejected" and decided[third]["by"] == "bob"
    assert decided[third]["reason"] == "not now"
    assert decided[fourth]["status"] == "expired" and decided[fourth]["by"] == "system"
    refused = [x for x in lines if x["event"] == EventKind.APPROVAL and x["status"] == "refused"]
    assert refused == []


# ------------------------------------------------------------------ property


def _core(cfg: Config, session: int = 1) -> EngineCore:
    """A core on the default config; each restart is a new session (its ids never repeat)."""
    market = SimulatedMarket(cfg.market.simulated, T0)
    strategies = build_strategies(cfg.strategies)
    core = EngineCore(cfg, strategies, market.instruments(), Portfolio(100_000.0), session=session)
    core.warm_up(market.history())  # the ATR that volatility sizing (rsi_reversion) needs
    _quotes(core, T0)
    return core


def _quotes(core: EngineCore, ts: int) -> list[Any]:
    out: list[Any] = []
    for sym, px in PRICES.items():
        out += core.on_quote(Quote(sym, px * 0.9999, px * 1.0001, 10.0, 10.0, ts, ts, "sim")) or []
    return out


_signal = st.tuples(
    st.just("signal"),
    st.sampled_from(APPROVE_STRATEGIES),
    st.sampled_from(SYMBOLS[:2]),  # two symbols: repeats of one key are common
    st.sampled_from([Action.BUY, Action.BUY, Action.SELL]),
    st.sampled_from([False, False, True]),  # entries mostly (an exit needs a position)
)
_ops = st.lists(
    st.one_of(
        _signal,
        _signal,
        _signal,
        st.tuples(st.just("approve"), st.integers(0, 40)),
        st.tuples(st.just("reject"), st.integers(0, 40)),
        st.tuples(st.just("wait"), st.integers(1, 20)),
        st.tuples(st.just("restart")),
    ),
    min_size=8,
    max_size=50,
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=_ops)
@example(  # the demo's pile-up: one key asked again and again, decided, restarted
    ops=[
        ("signal", "donchian_breakout", "BTC/USDT", Action.BUY, False),
        ("signal", "donchian_breakout", "BTC/USDT", Action.BUY, False),
        ("signal", "rsi_reversion", "BTC/USDT", Action.BUY, False),
        ("signal", "donchian_breakout", "BTC/USDT", Action.BUY, False),
        ("approve", 0),
        ("approve", 2),
        ("signal", "donchian_breakout", "BTC/USDT", Action.BUY, False),
        ("restart",),
        ("approve", 3),
        ("signal", "donchian_breakout", "BTC/USDT", Action.BUY, False),
        ("signal", "donchian_breakout", "BTC/USDT", Action.BUY, False),
        ("wait", 20),
        ("signal", "donchian_breakout", "BTC/USDT", Action.SELL, False),
        ("signal", "donchian_breakout", "BTC/USDT", Action.SELL, False),
        ("wait", 20),
        ("reject", 7),
    ]
)
def test_at_most_one_pending_per_key_and_one_outcome_each(tmp_path: Path, ops: list[tuple]) -> None:
    """Whatever the signals, decisions, expiries and restarts: never two requests waiting for
    one strategy, symbol and side, and every superseded request has exactly one outcome."""
    cfg = fast_config(tmp_path / "data", auto=False)
    session = 1
    core = _core(cfg, session)
    now = T0
    ids: list[str] = []
    requested: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []

    def record(out: list[Any]) -> None:
        for ev in out:
            if isinstance(ev, ApprovalRequested):
                requested.append(ev.approval)
                ids.append(ev.approval["id"])
            elif isinstance(ev, ApprovalDecided):
                outcomes.append(ev.outcome)

    for op in ops:
        kind = op[0]
        if kind == "signal":
            _, sid, sym, action, reduce_only = op
            slot = core.slots[(sid, sym)]
            record(core.decide(slot, Signal(action, "t", "t", 0.5, {}, reduce_only), PRICES[sym]))
        elif kind in ("approve", "reject") and ids:
            aid = ids[op[1] % len(ids)]
            if kind == "approve":
                record(core.approve(aid, by="alice"))
            else:
                record(core.reject(aid, by="alice", reason="no"))
        elif kind == "wait":
            now += op[1] * NS_PER_SECOND
            record(_quotes(core, now))
            record(core.tick(now))
        elif kind == "restart":  # as Engine.start: what waited is expired, the rest restored
            outcomes.extend(expired_at_restart(requested, outcomes, now))
            session += 1
            core = _core(cfg, session)
            core.approvals.restore(json.loads(json.dumps(outcomes)))
            record(_quotes(core, now))
        assert max(pending_per_key(core).values(), default=0) <= 1

    terminal = Counter(
        o["approval_id"] for o in outcomes if o["status"] != "refused" and not o["after_checks"]
    )
    assert all(n == 1 for n in terminal.values())
    superseded = [o for o in outcomes if o["status"] == SUPERSEDED]
    event(f"superseded: {min(len(superseded), 3)}+")  # --hypothesis-show-statistics
    event(f"requests: {min(len(requested), 5)}+")
    for o in superseded:
        assert terminal[o["approval_id"]] == 1
        assert o["superseded_by"] in ids and o["reason"] == f"superseded by {o['superseded_by']}"
    counted = sum(c[SUPERSEDED] for c in core.approvals.counters().values())
    assert counted == len(superseded)
