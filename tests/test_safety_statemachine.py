"""A hypothesis state machine over the whole engine: quotes (some moving prices a lot, some
invalid: crossed, NaN, infinite, zero, backwards in time), strategy signals, breaker trips (loss
streaks, stale feeds, clock drift), the engine clock, operator commands (kill at every level,
release, pause, resume, approve, reject, flatten, re-arm, approval mode) and restarts (clean
and kill -9 style), on one data directory. At least 10,000 steps in all (counted).

After every step it checks what reached the broker, recorded by a spy at the moment of each
`broker.submit`:

- nothing while the engine is HALTED, except the kill switch's own flatten orders (level
  `flatten`), and those only reduce;
- nothing from a paused strategy;
- nothing in REDUCING that adds exposure, counting the orders already on their way;
- no client order id twice, across restarts too;

and that a restart brings back exactly the kill switch and the pauses it had.

The engine is async and rule methods are sync: each machine drives its own event loop.
COCKPIT_SAFETY_SM_EXAMPLES=N runs more examples, COCKPIT_SAFETY_SM_STEPS=N longer ones;
COCKPIT_SAFETY_SM_SHRINK=1 shrinks a failure to its minimum (slow: minutes). The examples run
as two tests of half each (the suite's two workers share them), each held to half the steps.
The journal lives on /dev/shm where there is one: fsync there costs nothing, so the 10,000
steps fit the suite's budget.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from engine.core import SubmitOrder
from engine.runtime import Engine
from engine.types import Order, OrderUpdate, Quote
from tests.test_safety_engine import BTC, ETH, buy, quote, scripted_config, sell, strategy

SOL = "SOL/USDT"
SYMBOLS = (BTC, ETH, SOL)
START_MIDS = {BTC: 60_000.0, ETH: 3_000.0, SOL: 150.0}
TICKS = {BTC: 0.01, ETH: 0.01, SOL: 0.001}
SCRIPTED_IDS = ("alpha", "beta")
ALL_IDS = (*SCRIPTED_IDS, "ema")
EPS = 1e-9


def own_position(core: Any, strategy_id: str, symbol: str) -> float:
    slot = core.slots.get((strategy_id, symbol))
    return slot.position.qty if slot is not None else 0.0


@dataclass(frozen=True)
class Sent:
    """One order at the moment the broker saw it."""

    client_order_id: str
    strategy_id: str
    symbol: str
    signed_qty: float
    origin: str
    state: str
    kill_level: str | None
    paused: bool
    position: float  # the symbol's net position then
    other_open: float  # the net of the symbol's other open orders then
    own: float = 0.0  # the strategy's own position then


def machine_config(data_dir: Path) -> Any:
    """Scripted alpha (auto) and beta (approve), a real ema_cross on SOL; loss limits near
    enough that the big moves reach them; breakers at their defaults."""
    return scripted_config(
        data_dir,
        strategies=[
            strategy("alpha", "auto", 0.15),
            strategy("beta", "approve", 0.15),
            {
                "id": "ema",
                "kind": "ema_cross",
                "symbols": [SOL],
                "timeframe_s": 1,
                "params": {"fast": 2, "slow": 5},
                "approval": "auto",
            },
        ],
        safety={
            "kill_switch": {"daily_loss_limit_pct": 1.0, "drawdown_limit_pct": 2.0},
            "approval": {"ttl_s": 20},
        },
    )


moves_bps = st.one_of(st.integers(-15, 15), st.integers(-900, 900))
gaps_ms = st.one_of(st.integers(1, 1_500), st.integers(1_500, 8_000))


# Where the machines keep their journals: memory-backed if the system has it (see above).
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None

# Invalid quotes, each as (bid, ask, bid_size, ask_size) relative to a valid one around mid m.
BAD_QUOTES = {
    "crossed": lambda m: (m * 1.01, m * 0.99, 5.0, 5.0),
    "nan_ask": lambda m: (m, float("nan"), 5.0, 5.0),
    "nan_bid": lambda m: (float("nan"), m, 5.0, 5.0),
    "inf_ask": lambda m: (m, float("inf"), 5.0, 5.0),
    "zero_bid": lambda m: (0.0, m, 5.0, 5.0),
    "negative": lambda m: (-m, -m * 0.99, 5.0, 5.0),
    "no_size": lambda m: (m * 0.999, m * 1.001, 0.0, 5.0),
    "wide": lambda m: (m * 0.5, m * 1.5, 5.0, 5.0),
}


class SafetyMachine(RuleBasedStateMachine):
    steps = 0  # rules run, over every machine of a test run
    machines = 0

    def __init__(self) -> None:
        super().__init__()
        SafetyMachine.machines += 1
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp(prefix="safety-sm-", dir=SCRATCH))
        self.data_dir = self.tmp / "data"
        self.cfg = machine_config(self.data_dir)
        self.sent: list[Sent] = []
        self.mids = dict(START_MIDS)
        self.decided: list[str] = []  # approval ids that were pending once
        self.t = 0
        self.engine: Engine = self.run(self._start())

    # ------------------------------------------------------------------ plumbing

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _start(self) -> Engine:
        engine = Engine(self.cfg, self.data_dir)
        await engine.start()
        self.t = max(self.t, engine.core.now)
        origins: dict[str, str] = {}
        real_submit = engine._submit
        real_broker = engine.execution.paper.submit
        core = engine.core

        async def note_origin(sub: SubmitOrder) -> None:
            origins[sub.intent.intent_id] = sub.intent.origin
            await real_submit(sub)

        def spy(order: Order, now: int) -> list[OrderUpdate]:
            sign = order.side.sign
            pos = core.portfolio.positions.get(order.symbol)
            self.sent.append(
                Sent(
                    order.client_order_id,
                    order.strategy_id,
                    order.symbol,
                    order.qty * sign,
                    origins.get(order.intent_id, "?"),
                    str(core.safety.trading_state),
                    core.safety.kill.level,
                    core.safety.is_paused(order.strategy_id),
                    pos.qty if pos is not None else 0.0,
                    core.open_order_qty.get(order.symbol, 0.0) - order.remaining * sign,
                    own_position(core, order.strategy_id, order.symbol),
                )
            )
            return real_broker(order, now)

        engine._submit = note_origin  # type: ignore[method-assign]
        engine.execution.paper.submit = spy  # type: ignore[method-assign]
        return engine

    @property
    def core(self) -> Any:
        return self.engine.core

    def feed(self, symbol: str, gap_ms: int, move_bps: int) -> None:
        tick = TICKS[symbol]
        mid = round(self.mids[symbol] * (1.0 + move_bps / 10_000.0) / tick) * tick
        mid = max(mid, 100 * tick)
        self.mids[symbol] = mid
        self.t = max(self.t, self.core.now) + gap_ms * 1_000_000
        half = max(tick, round(mid * 0.5e-4 / tick) * tick)
        self.run(self.engine.process([quote(symbol, mid, self.t, half=half)]))

    def command(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        reply = self.run(self.engine.command(name, args, user="hyp", client="statemachine"))
        assert isinstance(reply.get("ok"), bool) and isinstance(reply.get("message"), str)
        return reply

    def teardown(self) -> None:
        try:
            if self.engine.journal is not None:
                self.run(self.engine.stop())
            self.loop.run_until_complete(asyncio.sleep(0))
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ market and strategies

    @initialize(holdings=st.sets(st.sampled_from([BTC, ETH])))
    def open_positions(self, holdings: set[str]) -> None:
        """Often start with something to reduce, so REDUCING and flatten have work to do."""
        for symbol in SYMBOLS:
            self.feed(symbol, 1_000, 0)
        for symbol in sorted(holdings):
            self.core.slots[("alpha", symbol)].strategy.script.append(buy())
            self.feed(symbol, 1_000, 0)
            self.feed(symbol, 1_000, 0)

    @rule(
        symbol=st.sampled_from(SYMBOLS),
        steps=st.lists(st.tuples(gaps_ms, moves_bps), min_size=1, max_size=8),
    )
    def quotes(self, symbol: str, steps: list[tuple[int, int]]) -> None:
        for gap, move in steps:
            self.feed(symbol, gap, move)

    @rule(symbol=st.sampled_from(SYMBOLS), move_pct=st.sampled_from([-20, -12, -6, 6, 12]))
    def shock(self, symbol: str, move_pct: int) -> None:
        """One quote that moves the price a lot: the loss limits get their chance."""
        self.feed(symbol, 500, move_pct * 100)

    @rule(
        sid=st.sampled_from(SCRIPTED_IDS),
        symbol=st.sampled_from((BTC, ETH)),
        actions=st.lists(st.sampled_from(["buy", "sell", "exit"]), min_size=1, max_size=3),
        gap=gaps_ms,
    )
    def signals(self, sid: str, symbol: str, actions: list[str], gap: int) -> None:
        """One to three signals in a row from one strategy, each with its own quote (so an
        order may still be on its way when the next one is decided)."""
        script = self.core.slots[(sid, symbol)].strategy.script
        for action in actions:
            script.append(buy() if action == "buy" else sell(exit_=action == "exit"))
            self.feed(symbol, gap, 0)

    @rule(
        symbol=st.sampled_from((BTC, ETH)),
        actions=st.lists(st.sampled_from(["buy", "sell", "exit"]), min_size=1, max_size=3),
        gap=gaps_ms,
    )
    def alpha_signals(self, symbol: str, actions: list[str], gap: int) -> None:
        """The strategy that trades on its own gets a rule of its own: more orders."""
        self.signals("alpha", symbol, actions, gap)

    @rule(
        symbol=st.sampled_from(SYMBOLS),
        kind=st.sampled_from(sorted(BAD_QUOTES)),
        backwards=st.booleans(),
    )
    def bad_quote(self, symbol: str, kind: str, backwards: bool) -> None:
        """A quote the validator must refuse (or a valid one from the past): it must not
        crash the engine or move anything the safety state depends on."""
        bid, ask, bid_size, ask_size = BAD_QUOTES[kind](self.mids[symbol])
        ts = max(self.t, self.core.now) + 1_000_000
        if backwards:
            ts = self.core.now - 5 * 1_000_000_000
        else:
            self.t = ts
        q = Quote(symbol, bid, ask, bid_size, ask_size, ts, ts, "sim")
        rejected = dict(self.core.validator.rejected)
        self.run(self.engine.process([q]))
        assert self.core.validator.rejected != rejected, f"{kind} quote accepted: {q}"

    @rule(drift_ms=st.sampled_from([0.0, 50.0, 900.0, 5_000.0, -5_000.0, float("nan")]))
    def clock_drift(self, drift_ms: float) -> None:
        """A measured clock offset (NaN: unmeasurable): the clock-drift breaker's input."""
        self.run(self.engine.handle(self.core.on_clock_drift(drift_ms)))

    @rule(seconds=st.integers(1, 40))
    def clock(self, seconds: int) -> None:
        """Engine time passes without quotes: stale feeds, cool-downs, approval expiry."""
        self.t = max(self.t, self.core.now) + seconds * 1_000_000_000
        self.run(self.engine.handle(self.core.tick(self.t)))

    # ------------------------------------------------------------------ operator

    @rule(level=st.sampled_from(["entries", "halt", "flatten"]))
    def kill(self, level: str) -> None:
        reply = self.command("kill", {"level": level, "reason": "hypothesis"})
        assert reply["ok"], reply
        assert self.core.safety.kill.engaged

    @rule()
    def kill_entries(self) -> None:
        """Entries only (REDUCING) has the most to get wrong: a rule of its own."""
        self.kill("entries")

    @rule(
        confirm=st.sampled_from(["RELEASE", "RELEASE", "release", ""]),
        reason=st.sampled_from(["all clear", "all clear", ""]),
        override=st.booleans(),
    )
    def release(self, confirm: str, reason: str, override: bool) -> None:
        was = self.core.safety.kill.level
        reply = self.command(
            "release", {"confirm": confirm, "reason": reason, "override": override}
        )
        if confirm != "RELEASE" or not reason:
            assert not reply["ok"], reply
            assert self.core.safety.kill.level == was
        if reply["ok"]:
            assert not self.core.safety.kill.engaged

    @rule(sid=st.sampled_from(ALL_IDS))
    def pause(self, sid: str) -> None:
        assert self.command("pause", {"strategy": sid, "reason": "hypothesis"})["ok"]
        assert self.core.safety.is_paused(sid)

    @rule(sid=st.sampled_from(ALL_IDS))
    def resume(self, sid: str) -> None:
        self.command("resume", {"strategy": sid})

    @rule(pick=st.integers(0, 7), good_hash=st.booleans())
    def approve(self, pick: int, good_hash: bool) -> None:
        pending = self.core.approvals.pending()
        if not pending:
            return
        p = pending[pick % len(pending)]
        self.decided.append(p.approval_id)
        args = {"id": p.approval_id, "hash": p.intent_hash if good_hash else "f" * 64}
        self.command("approve", args)

    @rule(pick=st.integers(0, 7))
    def reject(self, pick: int) -> None:
        pending = self.core.approvals.pending()
        if not pending:
            return
        p = pending[pick % len(pending)]
        self.decided.append(p.approval_id)
        assert self.command("reject", {"id": p.approval_id, "reason": "hypothesis"})["ok"]

    @precondition(lambda self: bool(self.decided))
    @rule(pick=st.integers(0, 50))
    def replay_approval(self, pick: int) -> None:
        aid = self.decided[pick % len(self.decided)]
        if self.core.approvals.get(aid) is not None:
            return  # still pending (a refused hash): not a replay
        before = len(self.sent)
        counters = self.core.approvals.counters()
        reply = self.command("approve", {"id": aid})
        assert not reply["ok"], reply
        assert len(self.sent) == before
        assert self.core.approvals.counters() == counters

    @rule(symbol=st.sampled_from((None, *SYMBOLS)))
    def flatten(self, symbol: str | None) -> None:
        args: dict[str, Any] = {"reason": "hypothesis"}
        if symbol is not None:
            args["symbol"] = symbol
        self.command("flatten", args)

    @rule(pick=st.integers(0, 20))
    def rearm(self, pick: int) -> None:
        tripped = [b for b in self.core.breakers.status() if b["tripped"]]
        if not tripped:
            return
        b = tripped[pick % len(tripped)]
        self.command("rearm", {"breaker": b["name"], "scope": b["scope"], "reason": "hypothesis"})

    @rule(mode=st.sampled_from(["approve", "auto"]))
    def approval_mode(self, mode: str) -> None:
        self.command("set_approval_mode", {"strategy": "beta", "mode": mode, "reason": "hyp"})

    # ------------------------------------------------------------------ restarts

    def _latched(self) -> tuple[Any, ...]:
        s = self.core.safety.state
        k = s.kill
        return (
            (k.level, k.by, k.reason, k.source),
            {sid: (st_.paused, st_.by, st_.reason) for sid, st_ in s.strategies.items()},
            dict(s.breaker_halts),
            self.core.approvals.counters(),
        )

    @rule(crash=st.booleans())
    def restart(self, crash: bool) -> None:
        before = self._latched()
        session = self.core.session
        if crash:
            journal = self.engine.journal
            assert journal is not None
            journal._writer.cancel()
            self.run(asyncio.wait([journal._writer]))
            self.engine.data_dir_lock.release()  # the OS drops a dead process's lock
        else:
            self.run(self.engine.stop())
        self.engine = self.run(self._start())
        assert self.core.session == session + 1
        after = self._latched()
        # Pending approvals expire at a restart (counted), everything else comes back as it was.
        assert after[:3] == before[:3]
        for sid, counts in before[3].items():
            now = after[3][sid]
            assert now["approved"] == counts["approved"]
            assert now["rejected"] == counts["rejected"]
            assert now["expired"] >= counts["expired"]
        assert self.core.approvals.pending() == []

    # ------------------------------------------------------------------ invariants

    @invariant()
    def no_forbidden_submit(self) -> None:
        SafetyMachine.steps += 1
        for s in self.sent:
            after = s.position + s.signed_qty
            reduces = s.position * s.signed_qty < 0 and abs(after) <= abs(s.position) + EPS
            if s.state == "HALTED":
                assert s.origin == "flatten" and s.kill_level == "flatten", f"HALTED sent {s}"
                assert reduces, f"a flatten order that does not reduce: {s}"
            if s.origin == "strategy" and s.paused:
                # Only its exit: it closes its own position and, with the orders already on
                # their way, shrinks the symbol's net position (a pause stops its entries).
                assert s.own * s.signed_qty < 0 and abs(s.signed_qty) <= abs(s.own) + EPS, (
                    f"a paused strategy sent more than its own exit: {s}"
                )
                base = s.position + s.other_open
                assert reduces and abs(base + s.signed_qty) <= abs(base) + EPS, (
                    f"a paused strategy's exit adds to the net position: {s}"
                )
            if s.state == "REDUCING":
                assert reduces, f"REDUCING sent an order that adds exposure: {s}"
                # With what is already on its way to the venue, it still only reduces.
                base = s.position + s.other_open
                assert abs(base + s.signed_qty) <= abs(base) + EPS, (
                    f"REDUCING sent an order that, with the open orders, adds exposure: {s}"
                )

    @invariant()
    def no_order_sent_twice(self) -> None:
        ids = [s.client_order_id for s in self.sent]
        assert len(ids) == len(set(ids)), f"a client order id sent twice: {ids}"


# Shrinking a failure replays the engine hundreds of times (minutes): off by default so a
# failing run stays inside the suite's time budget; COCKPIT_SAFETY_SM_SHRINK=1 gives the
# minimal case.
PHASES = (
    tuple(Phase)
    if os.environ.get("COCKPIT_SAFETY_SM_SHRINK") == "1"
    else (
        Phase.explicit,
        Phase.reuse,
        Phase.generate,
    )
)
EXAMPLES = int(os.environ.get("COCKPIT_SAFETY_SM_EXAMPLES", "100"))
STEPS = int(os.environ.get("COCKPIT_SAFETY_SM_STEPS", "170"))
# 10,000 at the defaults. Hypothesis ends runs early at random, so the count spreads: at most
# 130 steps a run gave 9,616-12,235 (the floor was inside the spread); 170 keeps it well above.
MIN_STEPS = 10_000 * EXAMPLES * STEPS // (100 * 170)
# The examples run as this many tests, so that the suite's two workers share them; each part
# runs its share of EXAMPLES and must reach its share of MIN_STEPS (10,000 in all).
PARTS = 2


def share(total: int, part: int) -> int:
    return total * (part + 1) // PARTS - total * part // PARTS


def test_the_parts_add_up() -> None:
    assert sum(share(EXAMPLES, p) for p in range(PARTS)) == EXAMPLES
    assert sum(share(MIN_STEPS, p) for p in range(PARTS)) == MIN_STEPS


@pytest.mark.parametrize("part", range(PARTS))
def test_safety_machine(part: int) -> None:
    SafetyMachine.steps = SafetyMachine.machines = 0
    run_state_machine_as_test(
        SafetyMachine,
        settings=settings(
            max_examples=share(EXAMPLES, part),
            stateful_step_count=STEPS,
            deadline=None,
            phases=PHASES,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    # The invariants run once after the initial step and once after every rule.
    rules = SafetyMachine.steps - SafetyMachine.machines
    print(f"safety state machine, part {part}: {rules:,} steps in {SafetyMachine.machines} runs")
    assert rules >= share(MIN_STEPS, part), f"only {rules} steps ran"


def test_a_request_the_engine_withdrew_just_before_a_crash_is_counted_after_it() -> None:
    """CI's state machine found it (the steps below): beta's sell waits for approval, beta then
    decides to buy, which withdraws the sell (rejected by the engine), and the engine is
    killed before the journal committed that row; the restart counted one rejection fewer
    (the counters auto_after_approved and the canary read). The engine's own approval
    decisions are now committed before the loop goes on, as a person's are."""
    m = SafetyMachine()
    try:
        m.open_positions(holdings={"ETH/USDT", "BTC/USDT"})
        m.resume(sid="alpha")
        m.reject(pick=5)
        m.signals(actions=["sell", "buy"], gap=158, sid="beta", symbol="ETH/USDT")
        m.restart(crash=True)  # asserts the counters came back as they were
    finally:
        m.teardown()
