"""Protective exits (engine/exits.py driven by engine/core.py): the levels, the fill model on
quotes and bars, the order path (checks, HALTED, REDUCING, a paused strategy), one exit per
position, the link to the entry's decision, and the invariants as properties."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from engine.config import ConfigError, parse_config
from engine.core import EngineCore
from engine.events import DecisionMade, ExitsChanged, FillReceived, IntentChecked
from engine.exits import (
    ExitKind,
    ExitRules,
    ExitState,
    check_bar,
    check_price,
    describe,
)
from engine.portfolio import Portfolio
from engine.runtime import Engine
from engine.strategies.base import Strategy
from engine.types import (
    NS_PER_SECOND,
    Action,
    Bar,
    Instrument,
    PositionView,
    Quote,
    Signal,
)
from engine.vocabulary import IntentOrigin, IntentOutcome, KillLevel
from tests.conftest import BARS_CSV
from tests.core_driver import CoreDriver
from tests.test_backtest_equivalence import EMA, replay_config

SYM = "X/USDT"
T0 = 1_700_000_000 * NS_PER_SECOND
EXAMPLES = int(os.environ.get("EXITS_EXAMPLES", "60"))


class _NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnterOnce(Strategy):
    """Enters once (long, or short when ``short``), on the first bar it sees flat, then never
    trades again: every exit after that is a protective one."""

    kind: ClassVar[str] = "enter_once"
    Params: ClassVar[type[BaseModel]] = _NoParams
    short = False

    def __init__(self, strategy_id: str, symbol: str, params: Any = None, allow_short: bool = True):
        super().__init__(strategy_id, symbol, _NoParams(), allow_short)
        self.entered = False

    @property
    def warmup_bars(self) -> int:
        return 0

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        if self.entered or position.qty:
            return None
        self.entered = True
        action = Action.SELL if self.short else Action.BUY
        return Signal(action, "enter", "test entry", 1.0)


def make_core(exits: dict[str, Any], *, short: bool = False, qty: float = 1.0) -> EngineCore:
    cfg = parse_config(
        {
            "market": {"simulated": {"symbols": {SYM: {"initial_price": 100.0}}}},
            "strategies": [
                {
                    "id": "s1",
                    "kind": "ema_cross",
                    "symbols": [SYM],
                    "timeframe_s": 1,
                    "approval": "auto",
                    "allow_short": True,
                    "sizing": {"model": "fixed_qty", "qty": qty},
                    "exits": exits,
                }
            ],
        }
    )
    strat = EnterOnce("s1", SYM)
    strat.short = short
    inst = {SYM: Instrument(SYM, "sim", 0.01, 0.001, 0.0, 5.0)}
    return EngineCore(cfg, [strat], inst, Portfolio(100_000.0))


class Harness(CoreDriver):
    """The core and the paper broker driven as ``Engine.process`` drives them."""

    def __init__(self, core: EngineCore) -> None:
        super().__init__(core)
        self.ts = T0

    def quote(self, mid: float, step_s: float = 1.0, half_spread: float = 0.005) -> None:
        self.ts += int(step_s * NS_PER_SECOND)
        q = Quote(SYM, mid - half_spread, mid + half_spread, 50.0, 50.0, self.ts, self.ts, "sim")
        out = self.core.on_quote(q)
        assert out is not None, f"quote at {mid} rejected"
        self.handle(out)
        items = self.broker.on_quote(q)
        if items:
            self.handle(self.core.on_broker(items))

    def bar(self, o: float, h: float, lo: float, c: float, volume: float = 1e9) -> None:
        """One 1 s bar, as ``Engine._bar_with_exits`` handles it."""
        core = self.core
        bar = Bar(SYM, self.ts, 1, o, h, lo, c, volume, "sim")
        self.ts += NS_PER_SECOND
        assert core.admit_bar(bar)
        while True:
            fired = core.bar_exits(bar)
            if not fired:
                break
            self.handle(fired)
            items = self.broker.on_quote(core.quotes[SYM])
            if items:
                self.handle(core.on_broker(items))
        self.handle(core.process_bar(bar))
        items = self.broker.on_quote(core.quotes[SYM])
        if items:
            self.handle(core.on_broker(items))

    # ------------------------------------------------------------ reading what happened

    def decisions(self, rule: str | None = None) -> list[Any]:
        return [
            e.decision
            for e in self.events
            if type(e) is DecisionMade and (rule is None or e.decision.rule == rule)
        ]

    def exit_decisions(self) -> list[Any]:
        kinds = {k.value for k in ExitKind}
        return [d for d in self.decisions() if d.rule in kinds]

    def intents(self, origin: str | None = None) -> list[IntentChecked]:
        return [
            e
            for e in self.events
            if type(e) is IntentChecked and (origin is None or e.intent.origin == origin)
        ]

    def fills(self) -> list[Any]:
        return [e.fill for e in self.events if type(e) is FillReceived]

    @property
    def position(self) -> float:
        return self.core.slots[("s1", SYM)].position.qty


def entered(exits: dict[str, Any], *, short: bool = False, price: float = 100.0) -> Harness:
    """A harness whose strategy holds its position, entered at about ``price``."""
    h = Harness(make_core(exits, short=short))
    h.quote(price)
    h.quote(price)  # the first bar closes: the entry goes out
    h.quote(price)  # ... and fills
    assert h.position == (-1.0 if short else 1.0)
    return h


# ------------------------------------------------------------------ config


def test_exits_config_is_validated_with_one_line_each() -> None:
    base = {"id": "s", "kind": "ema_cross", "symbols": ["BTC/USDT"]}
    ok = parse_config(
        {
            "strategies": [
                dict(base, exits={"stop_loss_pct": 2.0, "atr_period": 7, "trailing_atr": 3.0})
            ]
        }
    )
    exits = ok.strategies[0].exits
    assert exits is not None and exits.stop_loss_pct == 2.0 and exits.atr_period == 7
    for bad, words in (
        ({"stop_loss_pct": 0}, "stop_loss_pct"),
        ({"stop_loss_pct": 100}, "stop_loss_pct"),
        ({"take_profit_pct": -1}, "take_profit_pct"),
        ({"trailing_atr": 0}, "trailing_atr"),
        ({"time_stop_bars": 0}, "time_stop_bars"),
        ({"atr_period": 14}, "trailing_atr"),
        ({"stop_loss": 2.0}, "unknown key"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config({"strategies": [dict(base, exits=bad)]})
        assert len(info.value.problems) == 1, info.value.problems
        line = info.value.problems[0]
        assert "exits" in line and words in line and "\n" not in line, line
    # Just inside the limits passes.
    parse_config({"strategies": [dict(base, exits={"stop_loss_pct": 99.99, "time_stop_bars": 1})]})


# ------------------------------------------------------------------ the levels


def _state(side: int = 1, entry: float = 100.0) -> ExitState:
    return ExitState("s1", SYM, side, entry, T0, "d1-1", entry)


def _rules(**kw: Any) -> ExitRules:
    args = {
        "stop_loss_pct": None,
        "take_profit_pct": None,
        "trailing_atr": None,
        "atr_period": 14,
        "time_stop_bars": None,
        "timeframe_s": 60,
    }
    args.update(kw)
    return ExitRules(**args)


def test_the_reason_reads_like_the_issue() -> None:
    rules = _rules(stop_loss_pct=2.0)
    st_ = _state(entry=61_350.0)
    trig = check_price(rules, st_, 60_100.0)
    assert trig is not None and trig.kind is ExitKind.STOP_LOSS
    assert trig.level == pytest.approx(60_123.0)
    reason, inputs = describe(trig, rules, st_, None, T0)
    assert reason == "stop-loss at 60,123.00: entry 61,350.00, \u22122.0%"
    assert inputs["entry"] == 61_350.0 and inputs["level"] == pytest.approx(60_123.0)


def test_levels_of_a_long_and_a_short() -> None:
    rules = _rules(stop_loss_pct=2.0, take_profit_pct=4.0)
    long_, short = _state(1), _state(-1)
    assert rules.stop(long_) == pytest.approx(98.0) and rules.target(long_) == pytest.approx(104.0)
    assert rules.stop(short) == pytest.approx(102.0) and rules.target(short) == pytest.approx(96.0)
    # At the level triggers; a hair inside does not.
    assert check_price(rules, long_, 98.0) is not None
    assert check_price(rules, long_, 98.0001) is None
    assert check_price(rules, short, 102.0) is not None
    assert check_price(rules, short, 101.9999) is None
    tp = check_price(rules, short, 96.0)
    assert tp is not None and tp.kind is ExitKind.TAKE_PROFIT


def test_a_bar_through_the_stop_fills_at_the_stop_and_a_gap_at_the_open() -> None:
    rules = _rules(stop_loss_pct=2.0, take_profit_pct=4.0)
    st_ = _state(1)
    inside = check_bar(rules, st_, 99.5, 100.2, 97.0)
    assert inside is not None and (inside.kind, inside.price, inside.gapped) == (
        ExitKind.STOP_LOSS,
        pytest.approx(98.0),
        False,
    )
    gap = check_bar(rules, st_, 96.5, 97.5, 95.0)
    assert gap is not None and gap.kind is ExitKind.STOP_LOSS
    assert gap.price == 96.5 and gap.gapped  # the open: worse than the stop, never the stop
    # Stop and target both inside one bar: the stop is taken to come first (conservative).
    both = check_bar(rules, st_, 100.0, 105.0, 97.0)
    assert both is not None and both.kind is ExitKind.STOP_LOSS
    # A gap up through the target: at the open.
    up = check_bar(rules, st_, 105.0, 106.0, 104.5)
    assert up is not None and up.kind is ExitKind.TAKE_PROFIT and up.price == 105.0
    assert check_bar(rules, st_, 100.0, 103.9, 98.1) is None


def test_the_trail_only_ratchets_in_the_positions_favour() -> None:
    rules = _rules(trailing_atr=3.0)
    long_ = _state(1)
    assert rules.ratchet(long_, 1.0) and long_.trail == pytest.approx(97.0)
    assert not rules.ratchet(long_, 2.0)  # a wider ATR would loosen it: kept
    assert long_.trail == pytest.approx(97.0)
    long_.see(105.0)
    long_.see(101.0)  # the watermark keeps the high
    assert long_.best == 105.0
    assert rules.ratchet(long_, 1.0) and long_.trail == pytest.approx(102.0)
    short = _state(-1)
    assert rules.ratchet(short, 1.0) and short.trail == pytest.approx(103.0)
    short.see(99.0)
    assert rules.ratchet(short, 1.0) and short.trail == pytest.approx(102.0)
    assert not rules.ratchet(short, 5.0) and short.trail == pytest.approx(102.0)


# ------------------------------------------------------------------ through the core


def test_a_stop_loss_goes_out_once_through_the_order_path_and_is_removed_when_flat() -> None:
    h = entered({"stop_loss_pct": 2.0})
    entry = h.decisions("enter")[0]
    attached = [e for e in h.events if type(e) is ExitsChanged]
    assert [e.change for e in attached] == ["attached"]
    assert attached[0].exits is not None
    assert attached[0].exits["entry_decision_id"] == entry.decision_id
    avg = h.core.slots[("s1", SYM)].position.avg_price
    h.quote(99.0)
    assert h.exit_decisions() == []
    # Through the stop: one exit; the quotes while it is in flight fire nothing more.
    h.quote(97.5, step_s=0.001)
    h.quote(97.4, step_s=0.001)
    h.quote(97.3, step_s=0.001)
    (exit_,) = h.exit_decisions()
    assert exit_.rule == "stop_loss" and exit_.reduce_only and exit_.action == Action.SELL
    assert exit_.entry_decision_id == entry.decision_id
    assert exit_.reason.startswith(f"stop-loss at {avg * 0.98:,.2f}: entry {avg:,.2f}, \u2212")
    (intent,) = h.intents(IntentOrigin.EXIT)
    assert intent.outcome == IntentOutcome.SUBMITTED
    assert intent.intent.reduce_only and intent.intent.qty == 1.0
    for _ in range(20):
        h.quote(97.0)
    assert h.position == 0.0
    assert len(h.exit_decisions()) == 1
    assert h.fills()[-1].price < 98.0  # at the market after the trigger, not at the stop
    changes = [e.change for e in h.events if type(e) is ExitsChanged]
    assert changes == ["attached", "removed"]
    assert not h.core.exits_armed(SYM)
    assert h.core.exit_stats["stop_loss"].count == 1
    assert h.core.exit_stats["stop_loss"].pnl < 0


@pytest.mark.parametrize(
    "state",
    ["halt", "entries", "paused"],
)
def test_halted_reducing_and_paused_still_let_the_stop_through(state: str) -> None:
    h = entered({"stop_loss_pct": 2.0})
    core = h.core
    if state == "paused":
        h.handle(core.safety.pause("s1", by="me", reason="lunch", ts=core.now))
    else:
        level = KillLevel.HALT if state == "halt" else KillLevel.ENTRIES
        h.handle(core.kill(level, by="me", reason="test", source="operator"))
    h.quote(97.0)
    (intent,) = h.intents(IntentOrigin.EXIT)
    assert intent.outcome == IntentOutcome.SUBMITTED, intent.verdicts
    for _ in range(3):
        h.quote(97.0)
    assert h.position == 0.0
    # The same state still refuses what would add exposure (an operator-free strategy entry).
    core.slots[("s1", SYM)].strategy.entered = False  # type: ignore[attr-defined]
    for _ in range(3):
        h.quote(97.0)
    entries = [i for i in h.intents(IntentOrigin.STRATEGY) if not i.intent.reduce_only]
    assert entries[-1].outcome == IntentOutcome.DENIED


def test_a_take_profit_closes_a_short() -> None:
    h = entered({"take_profit_pct": 3.0}, short=True)
    h.quote(98.0)
    assert h.exit_decisions() == []
    h.quote(96.9)
    (exit_,) = h.exit_decisions()
    assert exit_.rule == "take_profit" and exit_.action == Action.BUY
    for _ in range(3):
        h.quote(96.9)
    assert h.position == 0.0


def test_the_time_stop_fires_after_n_bars() -> None:
    h = entered({"time_stop_bars": 5})
    fill_ts = h.fills()[0].ts
    while not h.exit_decisions():
        h.quote(100.0)
        assert h.ts < fill_ts + 10 * NS_PER_SECOND
    (exit_,) = h.exit_decisions()
    assert exit_.rule == "time_stop"
    assert exit_.ts >= fill_ts + 5 * NS_PER_SECOND > exit_.ts - NS_PER_SECOND


def test_the_trailing_stop_follows_the_high_and_fires_at_the_trail() -> None:
    h = Harness(make_core({"trailing_atr": 2.0, "atr_period": 3}))
    for _ in range(6):  # the ATR warms on the first bars, the entry fills
        h.quote(100.0)
        h.quote(100.5, step_s=0.5)
    st_ = h.core.slots[("s1", SYM)].exits
    assert st_ is not None and st_.trail is not None
    trails = [st_.trail]
    for price in (101.0, 102.0, 103.0, 104.0, 103.5, 103.8):
        h.quote(price)
        h.quote(price + 0.2, step_s=0.5)
        assert st_.trail is not None
        trails.append(st_.trail)
    assert trails == sorted(trails) and trails[-1] > trails[0]
    trail = trails[-1]
    h.quote(trail - 0.05)
    (exit_,) = h.exit_decisions()
    assert exit_.rule == "trailing_stop" and "x ATR(3)" in exit_.reason
    assert exit_.inputs["level"] == pytest.approx(trail)


def test_on_bars_the_stop_fills_at_the_level_or_at_the_open_of_a_gap() -> None:
    # Inside the bar: the broker fills at the stop (no spread on a bar, volume plenty).
    h = Harness(make_core({"stop_loss_pct": 2.0}))
    h.bar(100.0, 100.0, 100.0, 100.0)  # the entry decision
    h.bar(100.0, 100.0, 100.0, 100.0)  # the entry fills at this close
    assert h.position == 1.0
    h.bar(100.0, 100.5, 97.0, 99.5)
    (exit_,) = h.exit_decisions()
    assert exit_.rule == "stop_loss"
    assert h.fills()[-1].price == pytest.approx(98.0)
    assert h.position == 0.0
    # A gap through the stop: the open, worse than the stop.
    g = Harness(make_core({"stop_loss_pct": 2.0, "take_profit_pct": 1.0}))
    g.bar(100.0, 100.0, 100.0, 100.0)
    g.bar(100.0, 100.0, 100.0, 100.0)
    g.bar(96.0, 101.5, 95.0, 101.0)  # gapped down, then up through the target too
    (gap,) = g.exit_decisions()
    assert gap.rule == "stop_loss" and "gapped" in gap.reason
    assert g.fills()[-1].price == pytest.approx(96.0)


# ------------------------------------------------------------------ invariants


@st.composite
def paths(draw: st.DrawFn) -> tuple[bool, list[float]]:
    short = draw(st.booleans())
    steps = draw(st.lists(st.floats(min_value=-0.8, max_value=0.8), min_size=5, max_size=80))
    price, out = 100.0, []
    for s in steps:
        price = max(50.0, price * (1 + s / 100))
        out.append(price)
    return short, out


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    paths(),
    st.sampled_from(
        [
            {"stop_loss_pct": 1.0},
            {"take_profit_pct": 1.0},
            {"trailing_atr": 1.5, "atr_period": 2},
            {"stop_loss_pct": 1.5, "take_profit_pct": 2.0, "trailing_atr": 2.0, "atr_period": 3},
            {"time_stop_bars": 3},
        ]
    ),
)
def test_exits_never_add_exposure_never_flip_fire_once_and_trail_one_way(
    path: tuple[bool, list[float]], exits: dict[str, Any]
) -> None:
    short, prices = path
    h = Harness(make_core(exits, short=short))
    side = -1 if short else 1
    trails: list[float] = []
    for i, price in enumerate(prices):
        before = h.position
        n_exits = len(h.intents(IntentOrigin.EXIT))
        h.quote(price, step_s=0.5 + (i % 3) * 0.25)
        after = h.position
        new = h.intents(IntentOrigin.EXIT)[n_exits:]
        for ev in new:
            it = ev.intent
            # Reduce-only, opposite the position, never more than it holds: never a flip.
            assert it.reduce_only and it.side.sign == -side
            assert it.qty <= abs(before) + 1e-9
        assert after * side >= -1e-12  # the position never crossed to the other side
        st_ = h.core.slots[("s1", SYM)].exits
        if st_ is not None and st_.trail is not None:
            trails.append(st_.trail)
    # One position, so at most one exit decision went out for it.
    submitted = [i for i in h.intents(IntentOrigin.EXIT) if i.outcome == IntentOutcome.SUBMITTED]
    assert len(submitted) <= 1
    # The trail moved only in the position's favour.
    assert all((b - a) * side >= 0 for a, b in itertools.pairwise(trails))


def test_a_canceled_exit_may_fire_again_but_never_two_at_once() -> None:
    h = entered({"stop_loss_pct": 2.0})
    h.quote(97.0)
    (first,) = h.intents(IntentOrigin.EXIT)
    core = h.core
    # The exit is cancelled before it fills (a halt's cancel-all, say): it may go again.
    h.handle(core.on_broker(h.broker.cancel(first.intent.intent_id, core.now)))
    assert core.slots[("s1", SYM)].exits is not None
    assert not core.slots[("s1", SYM)].exits.pending  # type: ignore[union-attr]
    h.quote(97.0, step_s=0.2)  # within the retry pause: nothing
    assert len(h.intents(IntentOrigin.EXIT)) == 1
    h.quote(97.0, step_s=1.0)
    assert len(h.intents(IntentOrigin.EXIT)) == 2
    for _ in range(3):
        h.quote(97.0)
    assert h.position == 0.0


# ------------------------------------------------------------------ restart


async def test_a_restarted_engine_restores_each_live_exit_and_fires_the_same_stop(
    data_dir: Path,
) -> None:
    """Replay 600 real 1-minute bars (a short is held, its trail has moved), stop, start again
    on the journal: the exits (entry, watermark, trail, the entry's decision) are back exactly,
    and a bar through the trail fires the trailing stop at the level it had before the stop."""
    exits = {"stop_loss_pct": 1.0, "take_profit_pct": 2.0, "trailing_atr": 3.0, "atr_period": 10}
    strat = dict(EMA, timeframe_s=60, params={"fast": 5, "slow": 20}, exits=exits)
    cfg = replay_config(data_dir, "bars", BARS_CSV, [strat])
    key = ("ema", "BTC/USDT")
    first = Engine(cfg, data_dir)
    await first.start()
    try:
        await first.run(max_events=600)
        assert first.core is not None
        before = first.core.slots[key].exits
        assert before is not None and before.side == -1  # the data holds a short here
        assert before.trail is not None and before.trail < before.entry  # it has trailed
        view = first.core.exits_view("BTC/USDT")
        stopped_at = first.core.now
    finally:
        await first.stop()
    second = Engine(cfg, data_dir)
    await second.start()
    try:
        core = second.core
        assert core is not None
        after = core.slots[key].exits
        assert after is not None
        assert after.to_dict() == before.to_dict()
        # The levels shown are the same (bars held is counted on the clock, which a replay
        # restarts).
        shown = [{k: v for k, v in x.items() if k != "bars_held"} for x in view]
        again = [
            {k: v for k, v in x.items() if k != "bars_held"} for x in core.exits_view("BTC/USDT")
        ]
        assert again == shown
        # A bar through the trail (and not the stop): the trailing stop at the same level.
        trail = before.trail
        t = stopped_at + 60 * NS_PER_SECOND  # the next minute of the data
        bar = Bar(
            "BTC/USDT", t, 60, trail - 20.0, trail + 15.0, trail - 30.0, trail + 5.0, 10.0, "replay"
        )
        await second.process([bar])
        fired = [
            e.decision
            for e in core.trace
            if type(e) is DecisionMade and e.decision.rule == "trailing_stop"
        ]
        assert len(fired) == 1
        assert fired[0].inputs["level"] == trail
        assert fired[0].entry_decision_id == before.entry_decision_id != ""
        assert core.slots[key].position.qty == 0.0
    finally:
        await second.stop()


@settings(max_examples=EXAMPLES * 5, deadline=None)
@given(
    st.sampled_from([1, -1]),
    st.floats(min_value=90, max_value=110),
    st.floats(min_value=0, max_value=8),
    st.floats(min_value=0, max_value=8),
    st.floats(min_value=0.5, max_value=5),
    st.floats(min_value=0.5, max_value=5),
    st.one_of(st.none(), st.floats(min_value=90, max_value=110)),
)
def test_a_bar_never_fills_a_stop_better_than_its_level(
    side: int,
    open_: float,
    up: float,
    down: float,
    stop_pct: float,
    target_pct: float,
    trail: float | None,
) -> None:
    """On any bar: a protective exit is priced at its level or worse (the open of a gap),
    never better; a gap at the open decides first (the open is the bar's first price), then
    inside the range the protective level comes before the target."""
    rules = _rules(stop_loss_pct=stop_pct, take_profit_pct=target_pct, trailing_atr=1.0)
    state = _state(side)
    state.trail = trail
    high, low = open_ + up, open_ - down
    trig = check_bar(rules, state, open_, high, low)
    prot = rules.protective(state)
    target = rules.target(state)
    assert target is not None
    adverse, favourable = (low, high) if side > 0 else (high, low)
    if prot is not None and (open_ - prot[1]) * side <= 0:
        assert trig is not None and trig.kind is prot[0] and trig.price == open_
    elif (open_ - target) * side >= 0:
        assert trig is not None and trig.kind is ExitKind.TAKE_PROFIT and trig.price == open_
    elif prot is not None and (adverse - prot[1]) * side <= 0:
        assert trig is not None and trig.kind is prot[0] and trig.price == prot[1]
    elif (favourable - target) * side >= 0:
        assert trig is not None and trig.kind is ExitKind.TAKE_PROFIT and trig.price == target
    else:
        assert trig is None


def test_a_kill_switch_flatten_in_flight_leaves_the_stop_nothing_to_do() -> None:
    """The flatten order already closes the position: the stop, reached while it is in
    flight, sends nothing (never two closing orders for one position)."""
    h = entered({"stop_loss_pct": 2.0})
    core = h.core
    h.handle(core.kill(KillLevel.FLATTEN, by="me", reason="test", source="operator"))
    (flatten,) = h.intents(IntentOrigin.FLATTEN)
    assert flatten.outcome == IntentOutcome.SUBMITTED
    h.quote(97.0, step_s=0.001)  # through the stop before the flatten arrives
    assert h.exit_decisions() == []
    for _ in range(3):
        h.quote(97.0)
    assert h.position == 0.0 and not core.exits_armed(SYM)
    assert h.exit_decisions() == [] and len(h.fills()) == 2
    assert core.exit_stats["flatten"].count == 1


def test_a_lost_cancel_of_a_resting_limit_does_not_hold_the_stop_loss_back_for_good() -> None:
    """A triggered stop first cancels the strategy's resting take-profit; the cancel was asked
    once, so when it was lost at the venue (network error, rate limit: no answer) the stop
    waited for it for as long as the limit rested, sending nothing while the market fell
    (review). It is asked again a second later, and the stop goes out once it takes."""
    from engine.types import OrderType, OrderUpdate
    from engine.vocabulary import IntentOrigin, IntentOutcome
    from tests.test_review14 import EnterThenRestTakeProfit

    core = make_core({"stop_loss_pct": 2.0})
    strategy = EnterThenRestTakeProfit("s1", SYM)
    core.slots[("s1", SYM)].strategy = strategy
    h = Harness(core)
    for _ in range(4):
        h.quote(100.0)
    strategy.want_take_profit = False
    (limit,) = core.open_orders.values()
    assert limit.order_type is OrderType.LIMIT
    real_cancel, lost = h.broker.cancel, []

    def cancel_lost_once(coid: str, now: int, reason: str = "canceled") -> list[OrderUpdate]:
        if not lost:
            lost.append(coid)
            return []
        return real_cancel(coid, now, reason)

    h.broker.cancel = cancel_lost_once  # type: ignore[method-assign]
    h.quote(97.5, step_s=0.5)  # through the stop (98): the cancel is lost
    assert lost == [limit.client_order_id] and limit.client_order_id in core.open_orders
    for _ in range(4):
        h.quote(97.0, step_s=0.5)
    exits = h.intents(IntentOrigin.EXIT)
    assert [e.outcome for e in exits] == [IntentOutcome.SUBMITTED], exits
    assert limit.client_order_id not in core.open_orders
    for _ in range(3):
        h.quote(97.0)
    assert h.position == 0.0
