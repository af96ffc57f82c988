"""The shared vocabulary (engine.vocabulary) is the one definition of each word.

Denial codes, kill levels, exit codes and event kinds are what scripts, filters, the journal and
the README rely on: a code the checks produce that is not in the vocabulary, a kill level that
ranks wrong, an exit code the README does not explain, or a snapshot key the typed shape does
not describe is a silent break for a user. These tests drive the real code and compare.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args, get_type_hints

import pytest

import engine.events as events_module
from engine.checks import RiskContext, run_checks
from engine.commands import KillArgs
from engine.config import KillSwitchConfig, RiskLimits
from engine.core import CoreOutput
from engine.runtime import Engine
from engine.safety import SafetyController, SafetyState, TradingState
from engine.throttle import OrderThrottle
from engine.types import Instrument, OrderIntent, OrderType, Quote, Side
from engine.vocabulary import (
    EVENT_SHAPES,
    KILL_LEVELS,
    PASSED,
    SAFETY_KINDS,
    TRACE_KINDS,
    DenialCode,
    EventKind,
    ExitCode,
    IntentOrigin,
    KillLevel,
    KillLevelName,
    Snapshot,
    kill_at_least,
    kill_rank,
    milder_kill,
)
from tests.conftest import fast_config

ROOT = Path(__file__).resolve().parent.parent
CASES = 2_000  # random check contexts; the denial codes they must reach are listed below

# The codes are a public interface (filters, scripts, the trace): renaming or dropping one is
# a breaking change, so the list is written out here on purpose.
EXPECTED_CODES = {
    "INSTRUMENT_MISMATCH",
    "INVALID_QTY",
    "INVALID_PRICE",
    "BELOW_MIN_QTY",
    "BELOW_MIN_NOTIONAL",
    "REDUCE_ONLY_EXCEEDS_POSITION",
    "NO_QUOTE",
    "STALE_QUOTE",
    "PRICE_COLLAR",
    "MAX_ORDER_NOTIONAL",
    "MAX_POSITION",
    "MAX_OPEN_POSITIONS",
    "NO_MARK",
    "MAX_GROSS_EXPOSURE",
    "INSUFFICIENT_CASH",
    "THROTTLE_STRATEGY",
    "THROTTLE_GLOBAL",
    "CHECK_ERROR",
    "ENGINE_BLOCKED",
    "SIZE_ZERO",
    "ENGINE_HALTED",
    "REDUCING_ONLY",
    "STRATEGY_PAUSED",
    "VENUE_HALTED",
    "MARKET_UNSYNCED",
    "SPOT_SELL_EXCEEDS_HOLDING",
    "BREAKER_TRIPPED",
}


def test_the_vocabulary_imports_nothing_of_the_project() -> None:
    """Both packages import it, and the TUI may (it is the client interface's words): it must
    not pull the engine in."""
    code = "import sys, engine.vocabulary\nprint(','.join(sorted(sys.modules)))\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    ours = [m for m in result.stdout.strip().split(",") if m.split(".")[0] in ("engine", "cockpit")]
    assert ours == ["engine", "engine.vocabulary"]


# ------------------------------------------------------------------------------ denial codes


def test_the_27_denial_codes_are_the_vocabulary() -> None:
    assert {c.value for c in DenialCode} == EXPECTED_CODES
    assert PASSED not in EXPECTED_CODES
    for code in DenialCode:  # byte-identical in JSON and text: the member IS the string
        assert json.dumps(code) == json.dumps(code.value)
        assert f"{code}" == str(code) == code.value


def _random_context(
    rng: random.Random, symbol: str, limits: RiskLimits
) -> tuple[OrderIntent, RiskContext]:
    now = 1_700_000_000_000_000_000
    mid = rng.choice([100.0, 0.0, float("nan"), 30_000.0])
    quote = Quote(
        symbol if rng.random() < 0.9 else "OTHER/USDT",
        mid - 0.5,
        mid + 0.5,
        1.0,
        1.0,
        now - rng.choice([0, 10**9, 10**11]),  # a quote's age is from its venue stamp
        now,
    )
    qty = rng.choice([0.001, 0.0, -1.0, 0.5, 5.0, 1e-9, float("inf")])
    limit = rng.choice([None, None, mid, mid * 1.5, 0.0, 1e-12])
    intent = OrderIntent(
        "i1",
        "d1",
        "s1",
        symbol,
        "sim",
        rng.choice([Side.BUY, Side.SELL]),
        qty,
        OrderType.LIMIT if limit is not None else OrderType.MARKET,
        rng.choice([mid, 100.0, float("nan")]),
        now,
        limit,
        rng.random() < 0.3,
    )
    other = rng.choice(["ETH/USDT", "SOL/USDT"])
    positions = {symbol: rng.choice([0.0, 1.0, -1.0, 50.0]), other: rng.choice([0.0, 2.0])}
    marks = {symbol: mid} if rng.random() < 0.7 else {}
    if rng.random() < 0.5:
        marks[other] = rng.choice([10.0, float("nan")])
    throttle = OrderThrottle(limits.strategy_throttle, limits.global_throttle)
    busy = rng.choice(["s1", "s2", ""])  # s2's orders fill the global limit, not s1's
    for _ in range(100 if busy else 0):
        throttle.record(busy, now)
    ctx = RiskContext(
        now=now,
        equity=rng.choice([10_000.0, 100.0, 0.0]),
        cash=rng.choice([10_000.0, 1.0]),
        positions=positions,
        marks=marks,
        open_order_qty={other: rng.choice([0.0, 1.0])},
        quote=quote if rng.random() < 0.9 else None,
        instrument=Instrument(
            symbol if rng.random() < 0.95 else "ETH/USDT", "sim", 0.01, 0.001, 0.001, 5.0
        ),
        throttle=throttle,
    )
    return intent, ctx


def test_every_code_the_checks_produce_is_a_member() -> None:
    """Drive the pre-trade checks over hostile random contexts: every verdict they give carries
    PASSED or a DenialCode, and the 17 codes of the checks themselves are all reached."""
    rng = random.Random(12)
    seen: set[str] = set()
    for _ in range(CASES):
        limits = RiskLimits(max_open_positions=rng.choice([1, 5]))
        intent, ctx = _random_context(rng, "BTC/USDT", limits)
        _, verdicts = run_checks(intent, ctx, limits)
        for v in verdicts:
            assert v.code == PASSED or v.code in DenialCode.__members__, v
            assert v.ok == (v.code == PASSED), v
            seen.add(v.code)
    from_checks = EXPECTED_CODES - {
        "CHECK_ERROR",  # only when a check raises
        "ENGINE_BLOCKED",
        "SIZE_ZERO",
        "ENGINE_HALTED",
        "REDUCING_ONLY",
        "STRATEGY_PAUSED",
        "VENUE_HALTED",
        "MARKET_UNSYNCED",
        "SPOT_SELL_EXCEEDS_HOLDING",
        "BREAKER_TRIPPED",
    }
    assert from_checks - seen == set()


def _verdict_codes(path: Path) -> list[tuple[int, ast.expr]]:
    """The code argument (third) of every ``Verdict(...)`` call in a module."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        is_verdict = isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Verdict"
        if is_verdict and len(node.args) >= 3:
            out.append((node.lineno, node.args[2]))
    return out


@pytest.mark.parametrize("module", sorted((ROOT / "engine").rglob("*.py")), ids=str)
def test_no_verdict_is_built_with_a_bare_code(module: Path) -> None:
    """A code written as a bare string would escape the vocabulary (and this pin)."""
    for line, arg in _verdict_codes(module):
        assert not isinstance(arg, ast.Constant), f"{module.name}:{line} bare code {arg.value!r}"


def test_the_core_denials_are_members() -> None:
    """The core's own gates (blocked, sizing, safety state, venue, breakers): drive the engine
    through each and read the codes it denies with."""
    from engine.config import parse_config
    from engine.core import EngineCore
    from engine.portfolio import Portfolio
    from engine.types import Action, Decision

    symbol = "X/USDT"
    cfg = parse_config(
        {
            "market": {"simulated": {"symbols": {symbol: {"initial_price": 100.0}}}},
            "strategies": [{"id": "s", "kind": "ema_cross", "symbols": [symbol]}],
        }
    )
    inst = Instrument(symbol, "sim", 0.01, 0.001, 0.0, 5.0)
    core = EngineCore(cfg, [], {symbol: inst}, Portfolio(100_000.0))
    core.on_quote(Quote(symbol, 99.0, 101.0, 5.0, 5.0, 1, 1))

    def intent(qty: float = 0.01) -> tuple[OrderIntent, Decision]:
        i = OrderIntent("x", "d", "s", symbol, "sim", Side.BUY, qty, OrderType.MARKET, 100.0, 1)
        d = Decision("d", 1, "s", symbol, "sim", Action.BUY, "r", "why", 1.0, {})
        return i, d

    def codes(out: list[Any]) -> set[str]:
        return {code for ev in out for code in getattr(ev, "denied_codes", [])}

    assert DenialCode.SIZE_ZERO in codes(core.evaluate(*intent(0.0)))
    core.blocked_reason = "disk full"
    assert DenialCode.ENGINE_BLOCKED in codes(core.evaluate(*intent()))
    core.blocked_reason = ""
    core.kill(KillLevel.ENTRIES, by="t", reason="t", source="command")
    assert DenialCode.REDUCING_ONLY in codes(core.evaluate(*intent()))
    core.kill(KillLevel.HALT, by="t", reason="t", source="command")
    assert DenialCode.ENGINE_HALTED in codes(core.evaluate(*intent()))
    core.venue_halts[inst.venue] = "reconciliation"
    assert DenialCode.VENUE_HALTED in codes(core.evaluate(*intent()))
    core.venue_halts.clear()
    core.spot_venues = frozenset({inst.venue})
    i, d = intent()
    sell = dataclasses.replace(i, side=Side.SELL, reduce_only=False)
    assert DenialCode.SPOT_SELL_EXCEEDS_HOLDING in codes(core.evaluate(sell, d))


# ------------------------------------------------------------------------------ kill levels


def test_kill_levels_are_ordered_mildest_first() -> None:
    assert KILL_LEVELS == ("entries", "halt", "flatten") == tuple(KillLevel)
    assert [kill_rank(level) for level in KILL_LEVELS] == [0, 1, 2]
    for a in KILL_LEVELS:
        assert not kill_at_least(None, a)
        for b in KILL_LEVELS:
            assert kill_at_least(a, b) == (KILL_LEVELS.index(a) >= KILL_LEVELS.index(b))
            assert milder_kill(a, b) == min(a, b, key=KILL_LEVELS.index)
    with pytest.raises(ValueError, match="entries, halt, flatten"):
        kill_rank("HALT")  # the file reader lowercases; everyone else gets the exact word


def test_every_place_that_accepts_a_kill_level_accepts_exactly_these() -> None:
    assert get_args(KillLevelName) == KILL_LEVELS
    for level in KILL_LEVELS:
        assert KillSwitchConfig(auto_level=level).auto_level == level
        assert KillArgs(level=level, reason="r").level == level
    for wrong in ("", "HALT", "stop", "flatten "):
        with pytest.raises(ValueError):
            KillSwitchConfig(auto_level=wrong)
    # A kill command is never refused for its form (tests/test_kill_form.py): a level in any
    # case is that level, a word that is no level engages halt and says so.
    assert KillArgs(level="HALT", reason="r").level == "halt"
    assert KillArgs(level="flatten ", reason="r").level == "flatten"
    for wrong in ("", "stop"):
        kill = KillArgs(level=wrong, reason="r")
        assert kill.level == "halt" and "halt engaged" in kill.note


def test_the_kill_switch_only_escalates_in_that_order() -> None:
    """Engaging a milder level than the one in force changes nothing (latched), a more severe
    one escalates; the trading state follows the level."""
    safety = SafetyController(KillSwitchConfig(), [])
    expected = {"entries": TradingState.REDUCING, "halt": TradingState.HALTED}
    expected["flatten"] = TradingState.HALTED
    for i, level in enumerate(KILL_LEVELS):
        assert safety.engage(level, by="t", reason="r", source="command", ts=i)
        assert safety.trading_state is expected[level]
        for milder in KILL_LEVELS[: i + 1]:
            assert safety.engage(milder, by="t", reason="r", source="command", ts=i) == []
        assert safety.kill.level == level
    # A level restored from the journal is a plain string: it ranks the same.
    again = SafetyController(KillSwitchConfig(), [])
    again.state = SafetyState.from_dict(json.loads(json.dumps(safety.state.to_dict())))
    assert type(again.kill.level) is str
    assert again.trading_state is TradingState.HALTED
    assert again.engage("halt", by="t", reason="r", source="command", ts=9) == []


# ------------------------------------------------------------------------------ exit codes


def _readme_exit_sentence() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"Exit codes: (.+?)\.\s", text, re.S)
    assert match, "README has no 'Exit codes: ...' sentence"
    return " ".join(match.group(1).split())


def test_every_exit_code_is_in_the_readme_table() -> None:
    sentence = _readme_exit_sentence()
    documented = {int(n) for n in re.findall(r"(?:^|, )(\d) ", sentence)}
    assert documented == {int(code) for code in ExitCode}, sentence
    for code in ExitCode:
        assert code.__doc__, f"ExitCode.{code.name} says when it is used"


def _bare_exit_codes(path: Path) -> list[str]:
    """Integer literals handed to the CLI's exit paths (errors with a code, parser.exit)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        if name in ("UserError", "OneShotError") and len(node.args) >= 2:
            args = [node.args[1]]
        elif name == "exit" and isinstance(node.func, ast.Attribute):
            args = node.args[:1] if getattr(node.func.value, "id", "") != "self" else []
        else:
            args = []
        args += [k.value for k in node.keywords if k.arg in ("code", "return_code")]
        for arg in args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, int):
                found.append(f"{path.name}:{node.lineno} exit code {arg.value}")
    return found


def test_the_cli_exits_only_with_documented_codes() -> None:
    bare = [hit for p in sorted((ROOT / "cockpit").glob("*.py")) for hit in _bare_exit_codes(p)]
    assert bare == []


# ------------------------------------------------------------------------------ events


def _event_classes() -> list[type]:
    return [
        cls
        for cls in vars(events_module).values()
        if isinstance(cls, type)
        and issubclass(cls, events_module.EngineEvent)
        and cls is not events_module.EngineEvent
    ]


def test_every_engine_event_kind_is_a_member_with_its_shape() -> None:
    classes = _event_classes()
    kinds = {cls.kind for cls in classes}
    assert len(classes) == len(kinds) >= 15  # each event class its own kind; none went missing
    assert kinds == set(EVENT_SHAPES)
    assert kinds >= SAFETY_KINDS and kinds >= TRACE_KINDS
    for cls in classes:
        assert isinstance(cls.kind, EventKind), cls
        shape = set(get_type_hints(EVENT_SHAPES[cls.kind]))
        fields = {f.name for f in dataclasses.fields(cls)}
        assert shape == {"seq", "event", "ts"} | fields, cls.kind


async def test_the_snapshot_and_the_core_output_have_the_typed_shapes(data_dir: Path) -> None:
    """Run the default engine: what the core returns is a CoreOutput, the events clients get
    have the typed shapes, and the snapshot has exactly the typed keys."""
    engine = Engine(fast_config(data_dir), data_dir)
    received = engine.subscribe_dicts()
    await engine.start()
    outputs: list[Any] = []
    core = engine.core
    assert core is not None
    for name in ("on_quote", "on_bar", "on_broker", "tick"):
        method = getattr(core, name)

        def spy(*args: Any, _method: Any = method) -> Any:
            out = _method(*args)
            outputs.extend(out or ())
            return out

        setattr(core, name, spy)
    try:
        await engine.run(max_events=20_000)
        snap = engine.snapshot()
    finally:
        await engine.stop()
    assert outputs and all(isinstance(item, CoreOutput) for item in outputs)
    origins = {item.intent.origin for item in outputs if hasattr(item, "intent")}
    assert origins and origins <= set(IntentOrigin)
    seen_kinds = set()
    while not received.empty():
        ev = received.get_nowait()
        seen_kinds.add(ev["event"])
        assert set(ev) == set(get_type_hints(EVENT_SHAPES[ev["event"]])), ev["event"]
    assert {"decision", "intent", "order", "fill"} <= seen_kinds

    hints = get_type_hints(Snapshot)
    assert set(snap) == set(hints) - {"connection"}
    for key in ("trading_state", "kill_switch", "limits", "portfolio"):
        assert set(snap[key]) == set(get_type_hints(hints[key])), key
    for key in ("strategies", "breakers", "positions", "orders"):
        row = get_args(hints[key])[0]
        assert snap[key], key
        for item in snap[key]:
            assert set(item) == set(get_type_hints(row)), key
    for key in ("venues", "quotes"):
        row = get_args(hints[key])[1]
        for item in snap[key].values():
            required = {k for k in get_type_hints(row) if k in row.__required_keys__}
            assert required <= set(item) <= set(get_type_hints(row)), key
