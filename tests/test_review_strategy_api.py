"""Review: a trader's own strategy (``kind = "mypkg.mod:Class"``) as the adversary, careless
rather than malicious. What tests/test_strategy_failure.py pins (an exception or a malformed
signal pauses that strategy alone) is not repeated here.

Holes found and fixed (each test below fails without its fix):

- ``self.strategy_id = ...`` in a strategy's own code (a name reused) made its orders another
  strategy's: an approve-mode strategy's order went out under an auto one's id, unapproved;
  ``self.symbol = ...`` stopped the engine (KeyError). The engine keeps both as built.
- ``sys.exit()``, ``KeyboardInterrupt``, ``GeneratorExit``, ``CancelledError`` or a class
  derived from BaseException raised in ``on_bar``/``on_quote`` stopped the whole engine (the
  protective exits and the kill switch with it). Now the strategy alone is paused; a backtest
  stops in one line (a person's Ctrl-C still interrupts it).
- An input of ``10**400`` (an int past float's range) or such a limit price raised
  OverflowError out of the engine; an exception whose ``__str__`` raises did too. A message
  with a newline or an escape sequence made the pause reason several lines (and restyled a
  terminal).
- A reason of megabytes (``reason=f"{self.closes}"``, growing each bar) was journaled, kept in
  the trace and sent to each cockpit whole. Rule and reason are cut (64 / 500 characters, on
  one line); more than 100 inputs, or an input name over 64 characters, pauses the strategy.
- ``allow_short = false`` (the default) was left to the strategy's own code: a trader's
  strategy returning a sell while flat went short (on a spot account, it sold coins another
  strategy held). The engine caps such a sell at what the strategy holds.
- ``print()`` in a strategy wrote into the headless engine's JSON lines on stdout.
- A module that calls ``sys.exit()`` (argparse at import) or a constructor that does ended
  ``cockpit`` with no config error (argparse's usage, or a silent exit code).
- A strategy blocking in ``on_bar``/``on_quote`` (time.sleep, a blocking request, a model
  loaded on the first bar) held the whole engine at every call, the kill switch (promised within
  a second) and the protective exits included. A call over a second pauses it, saying so.
- A trader's ``scan`` override (the backtest's fast path) returning another bar index than it
  should (``len(bars)``) skipped bars past the exits, loss limits and timers the run was cut
  at: a backtest that differs from the engine. The run now stops saying so.

Attacks that held (the engine already did the right thing):

- Mutating the Bar, the PositionView or a LimitSpec: frozen dataclasses, the assignment raises
  FrozenInstanceError and the strategy is paused (test_strategy_failure's path).
- Mutating ``signal.inputs`` after returning it: the decision journals its own copy.
- A Signal for another symbol: a Signal has no symbol; the slot's symbol is used.
- A reduce_only sell while flat (or larger than the position): sized to what it holds (0).
- A signal returned during warm-up on history: journaled nowhere, never traded.
- A module with a syntax error: a config error naming it (SyntaxError is an Exception).
- Deeply nested inputs: refused by the flat ``dict[str, number]`` check (paused).
- Two symbols of one strategy sharing class-level mutable state: the trader's own design; the
  engine makes one instance per (strategy, symbol) and never reads the class.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.backtest import (
    BacktestOptions,
    StrategyRaised,
    build_backtest_config,
    load_market_data,
    run_backtest_core,
)
from engine.config import ConfigError, parse_config
from engine.strategies.base import (
    MAX_INPUTS,
    MAX_REASON_CHARS,
    Strategy,
    StrategyParams,
    signal_problem,
    tidy_signal,
)
from engine.strategies.registry import build_strategies
from engine.types import Action, Bar, BarSeries, LimitSpec, PositionView, Quote, Signal
from engine.vocabulary import UNPRINTABLE
from tests.test_safety_engine import (
    BTC,
    Harness,
    Scripted,
    buy,
    harnesses,  # noqa: F401  (the fixture the tests below take)
    scripted_config,
    start,
    strategy,
)
from tests.test_strategy_failure import Faulty, bars_csv, paused_reason

HERE = "tests.test_review_strategy_api"


Raiser = Faulty  # any BaseException in its script is raised (not only an Exception)


class Renamer(Scripted):
    """Reuses the engine's names for its own bookkeeping (a careless ``self.x = ...``)."""

    def on_quote(self, quote: Quote, position: PositionView) -> Signal | None:
        self.strategy_id = "alpha"  # meant as a label for its own log lines
        self.symbol = "XRP/USDT"  # meant as "the coin I really watch"
        return super().on_quote(quote, position)


def two(data_dir: Path, kind: str, approval: str = "auto", **extra: Any) -> Any:
    return scripted_config(
        data_dir,
        strategies=[
            strategy("alpha", "auto"),
            strategy("buggy", approval, kind=f"{HERE}:{kind}", **extra),
        ],
    )


async def test_a_strategy_rebinding_its_id_and_symbol_still_trades_as_configured(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """Found: the engine read ``strategy.strategy_id`` back at each decision: ``buggy`` (in
    approve mode) setting it to ``alpha`` (auto) sent its order at once, as alpha's; setting
    ``self.symbol`` stopped the engine with KeyError."""
    h = await start(harnesses, data_dir, two(data_dir, "Renamer", approval="approve"))
    await h.feed(BTC, 60_000.0)
    sent = len(h.sent)
    await h.signal("buggy", BTC, buy(), 60_000.0)
    assert len(h.sent) == sent  # it waits for a person, as buggy's orders do
    [pending] = h.engine.snapshot()["approvals"]
    assert pending["strategy"] == "buggy" and pending["symbol"] == BTC, pending
    assert not h.core.safety.is_paused("buggy")


@pytest.mark.parametrize(
    "raised",
    [
        SystemExit(3),
        KeyboardInterrupt(),
        GeneratorExit(),
        asyncio.CancelledError(),
        type("MyStop", (BaseException,), {})("done"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_a_strategy_raising_a_base_exception_is_paused_and_the_engine_goes_on(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    raised: BaseException,
) -> None:
    """Found: only Exception was caught; ``sys.exit()`` in a strategy ended the engine with
    its exit code, a stray CancelledError or KeyboardInterrupt stopped it too."""
    h = await start(harnesses, data_dir, two(data_dir, "Raiser"))
    await h.feed(BTC, 60_000.0)
    await h.signal("buggy", BTC, raised, 60_000.0)  # type: ignore[arg-type]
    reason = paused_reason(h, "buggy")
    assert reason.startswith(f"strategy buggy raised {type(raised).__name__}"), reason
    sent = len(h.sent)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    assert len(h.sent) == sent + 1
    reply = await h.engine.command("kill", {"level": "halt", "reason": "checking"})
    assert reply["ok"], reply


class ExitsOnBar(Strategy):
    """Calls sys.exit() on its third bar (a research script's habit)."""

    kind: ClassVar[str] = "exits_on_bar"
    Params: ClassVar[type[StrategyParams]] = StrategyParams
    raised: ClassVar[type[BaseException]] = SystemExit

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen = 0

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        self.seen += 1
        if self.seen == 3:
            raise self.raised("bye")
        return None


class InterruptedOnBar(ExitsOnBar):
    raised = KeyboardInterrupt


def backtest(tmp_path: Path, kind: str) -> Any:
    cfg = parse_config(
        {
            "strategies": [
                {
                    "id": "s",
                    "kind": f"{HERE}:{kind}",
                    "symbols": [BTC],
                    "timeframe_s": 60,
                    "approval": "auto",
                    "sizing": {"model": "fixed_qty", "qty": 0.01},
                }
            ]
        }
    )
    data = load_market_data(bars_csv(tmp_path))
    opts = BacktestOptions(warmup=0)
    return run_backtest_core(build_backtest_config(cfg, data, opts), data, opts)


def test_a_backtest_whose_strategy_calls_sys_exit_stops_saying_which_ctrl_c_interrupts(
    tmp_path: Path,
) -> None:
    with pytest.raises(StrategyRaised, match="strategy s raised SystemExit: bye"):
        backtest(tmp_path, "ExitsOnBar")
    with pytest.raises(KeyboardInterrupt):  # a person's Ctrl-C, not the strategy's bug
        backtest(tmp_path, "InterruptedOnBar")


class OffByOne(ExitsOnBar):
    """Overrides the fast path and returns the last bar it looked at, not ``stop``."""

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        self.seen += 1
        return None

    def scan(
        self, bars: BarSeries, start: int, stop: int, position: PositionView
    ) -> tuple[int, Signal | None]:
        i = start
        for i in range(start, stop):
            self.on_bar(bars.bar(i), position)
        return i, None


def test_a_scan_override_returning_another_bar_stops_the_backtest(tmp_path: Path) -> None:
    """Found: the index was trusted: one short fed bars to the strategy again (its state went
    on from the wrong bar), one long skipped bars past the run's end (where an exit, a loss
    limit or a timer was due), without a word: a result the engine would never give."""
    with pytest.raises(StrategyRaised, match=r"scan returned bar 49 for bars 1 to 49 \(no sig"):
        backtest(tmp_path, "OffByOne")


def big(value: Any) -> Signal:
    return Signal(Action.BUY, "r", "x", 1.0, {"n": value})


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


@pytest.mark.parametrize(
    ("returned", "said"),
    [
        (big(10**400), "returned the input 'n' = 1000"),
        (
            Signal(Action.BUY, "r", "x", 1.0, limit=LimitSpec(price=10**400)),  # type: ignore[arg-type]
            "returned a limit price of 1000",
        ),
        (BadStr(), "raised BadStr: (its message could not be read)"),
        (ValueError("one\ntwo\x1b[31m"), "raised ValueError: one\\ntwo\\x1b[31m at "),
        (
            Signal(Action.BUY, "r", "x", 1.0, {f"i{n}": 1.0 for n in range(MAX_INPUTS + 1)}),
            f"returned {MAX_INPUTS + 1} inputs (at most {MAX_INPUTS})",
        ),
        (Signal(Action.BUY, "r", "x", 1.0, {"k" * 65: 1.0}), "(at most 64 letters)"),
    ],
    ids=["int-input", "int-limit", "bad-str", "newline", "many-inputs", "long-name"],
)
async def test_what_a_strategy_hands_back_cannot_stop_the_engine_or_break_a_line(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    returned: Any,
    said: str,
) -> None:
    """Found: OverflowError (an int past float's range) and a raising ``__str__`` escaped the
    engine (it stopped); a message with a newline made the pause reason two lines."""
    h = await start(harnesses, data_dir, two(data_dir, "Raiser"))
    await h.feed(BTC, 60_000.0)
    sent = len(h.sent)
    await h.signal("buggy", BTC, returned, 60_000.0)
    reason = paused_reason(h, "buggy")
    assert said in reason and not UNPRINTABLE.search(reason), reason
    assert len(h.sent) == sent


async def test_the_limits_on_inputs_pass_just_under(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    h = await start(harnesses, data_dir, two(data_dir, "Raiser"))
    await h.feed(BTC, 60_000.0)
    inputs = {f"{n:064d}": 1.0 for n in range(MAX_INPUTS)}  # 100 names of 64 characters
    sent = len(h.sent)
    await h.signal("buggy", BTC, Signal(Action.BUY, "r", "x", 1.0, inputs), 60_000.0)
    assert not h.core.safety.is_paused("buggy")
    assert len(h.sent) == sent + 1


async def test_a_megabyte_reason_is_cut_on_the_record_and_the_strategy_trades(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """Found: a reason that grows with the strategy's history went whole into the journal,
    the trace, every snapshot and every attached cockpit (a megabyte per decision)."""
    h = await start(harnesses, data_dir, two(data_dir, "Raiser"))
    await h.feed(BTC, 60_000.0)
    sent = len(h.sent)
    huge = Signal(Action.BUY, "rule\n" * 100, "closes [" + "60000.0, " * 200_000, 1.0)
    await h.signal("buggy", BTC, huge, 60_000.0)
    assert len(h.sent) == sent + 1 and not h.core.safety.is_paused("buggy")
    decisions = [r.payload["decision"] for r in h.rows("decision")]
    [row] = [d for d in decisions if d["strategy_id"] == "buggy"]
    assert len(row["reason"]) == MAX_REASON_CHARS and row["reason"].endswith("…"), row
    assert len(row["rule"]) == 64 and "\n" not in row["rule"], row


def test_a_reason_at_the_limit_is_kept_whole_one_over_is_cut() -> None:
    at = Signal(Action.BUY, "r", "x" * MAX_REASON_CHARS, 1.0)
    assert tidy_signal(at) is at
    over = tidy_signal(Signal(Action.BUY, "r", "x" * (MAX_REASON_CHARS + 1), 1.0))
    assert over.reason == "x" * (MAX_REASON_CHARS - 1) + "…"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=2000), st.text(max_size=200))
def test_a_well_formed_signal_is_recorded_on_one_bounded_line(reason: str, rule: str) -> None:
    """Whatever the text: what the engine records is one line, within bounds, and a signal
    that needed nothing is the same object (no cost on the usual path)."""
    signal = Signal(Action.SELL, rule, reason, 0.5, {"x": 1.0})
    assert signal_problem(signal) is None
    out = tidy_signal(signal)
    assert len(out.reason) <= MAX_REASON_CHARS and len(out.rule) <= 64
    assert not UNPRINTABLE.search(out.reason) and not UNPRINTABLE.search(out.rule)
    assert (out.action, out.confidence, out.inputs) == (signal.action, 0.5, {"x": 1.0})
    if (
        len(reason) <= MAX_REASON_CHARS
        and len(rule) <= 64
        and not UNPRINTABLE.search(reason + rule)
    ):
        assert out is signal


def sell_entry() -> Signal:
    return Signal(Action.SELL, "scripted", "sell", 1.0)  # not reduce_only


@pytest.mark.parametrize("allow_short", [False, True])
async def test_a_long_only_strategy_never_goes_short_whatever_its_code_returns(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    allow_short: bool,
) -> None:
    """Found: ``allow_short = false`` (the default) was the strategy's own to honour. A
    trader's strategy selling while flat went short (on a spot account it sold the coins
    ``alpha`` held). Now it sells what it holds, and nothing when flat (SIZE_ZERO)."""
    h = await start(harnesses, data_dir, two(data_dir, "Raiser", allow_short=allow_short))
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, buy(), 60_000.0)  # alpha holds 0.01 BTC
    await h.signal("buggy", BTC, buy(), 60_000.0)  # buggy too
    await h.feed(BTC, 60_000.0)
    slot = h.core.slots[("buggy", BTC)]
    assert slot.position.qty == pytest.approx(0.01)
    await h.signal("buggy", BTC, sell_entry(), 60_000.0)  # its exit, as an entry-style sell
    await h.feed(BTC, 60_000.0)
    assert slot.position.qty == pytest.approx(0.0, abs=1e-12)
    sent = len(h.sent)
    await h.signal("buggy", BTC, sell_entry(), 60_000.0)  # flat: a sell would open a short
    await h.feed(BTC, 60_000.0)
    if allow_short:
        assert len(h.sent) == sent + 1 and slot.position.qty == pytest.approx(-0.01)
    else:
        assert len(h.sent) == sent and slot.position.qty == pytest.approx(0.0, abs=1e-12)
        denied = h.intents("denied")[-1]
        assert [v["code"] for v in denied["verdicts"] if not v["ok"]] == ["SIZE_ZERO"]
    assert h.core.slots[("alpha", BTC)].position.qty == pytest.approx(0.01)


class Noisy(Strategy):
    """Debugs with print() on every bar."""

    kind: ClassVar[str] = "noisy"
    Params: ClassVar[type[StrategyParams]] = StrategyParams

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        print(f"debug: close {bar.close}")
        return None


def test_a_strategy_that_prints_does_not_corrupt_the_headless_json_lines(
    tmp_path: Path,
) -> None:
    """Found: stdout is the headless engine's JSON lines, and a strategy's ``print`` went into
    them (a consumer's parser stopped at the first). What others print goes to stderr."""
    data = tmp_path / "d"
    data.mkdir(mode=0o700)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[engine]\nsummary_interval_s = 1\n[market.simulated]\nspeed = 20\n"
        f'[[strategies]]\nid = "noisy"\nkind = "{HERE}:Noisy"\nsymbols = ["BTC/USDT"]\n'
        "timeframe_s = 1\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), *sys.path])}
    cmd = [
        sys.executable, "-m", "cockpit", "engine", "--config", str(cfg), "--data-dir",
        str(data), "--socket", str(data / "e.sock"), "--for", "2",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines and all(json.loads(line) for line in lines), lines[:5]
    assert "debug: close" in done.stderr


def test_a_module_or_constructor_calling_sys_exit_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found: a strategy module parsing arguments at import (argparse exits) or a constructor
    calling sys.exit() ended the start with argparse's usage or a bare exit code, no config
    error naming the strategy."""
    (tmp_path / "exits_at_import.py").write_text("import sys\nsys.exit(2)\n")
    (tmp_path / "exits_in_init.py").write_text(
        "import sys\nfrom engine.strategies.base import Strategy\n"
        "class S(Strategy):\n"
        "    def __init__(self, *a, **k):\n        sys.exit('no data file')\n"
        "    def on_bar(self, bar, position):\n        return None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = parse_config(
        {
            "strategies": [
                {"id": "a", "kind": "exits_at_import:S", "symbols": [BTC]},
                {"id": "b", "kind": "exits_in_init:S", "symbols": [BTC]},
            ]
        },
    )
    with pytest.raises(ConfigError) as info:
        build_strategies(cfg.strategies)
    a, b = info.value.problems
    assert a.startswith("strategies[0].kind: cannot import 'exits_at_import:S' (SystemExit: 2)")
    assert b == "strategies[1]: S could not start for 'BTC/USDT' (SystemExit: no data file)"


class Clock:
    """The core's call timer, stepped by the strategy below (no wall clock in a test)."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


CLOCK = Clock()


class Slow(Scripted):
    """Each quote takes the seconds its script says (a model loaded lazily, a blocking call)."""

    def on_quote(self, quote: Quote, position: PositionView) -> Signal | None:
        item = self.script.popleft() if self.script else None
        if isinstance(item, float):
            CLOCK.now += item
            return buy()
        return item


@pytest.mark.parametrize(("took", "paused"), [(1.0, False), (1.5, True)])
async def test_a_strategy_that_blocks_the_engine_is_paused_after_one_slow_call(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    took: float,
    paused: bool,
) -> None:
    """Found: a strategy sleeping in ``on_bar`` (time.sleep, a blocking request, a model
    loaded on the first bar) held the whole engine each time: the kill switch (promised within
    a second), the protective exits and every other strategy waited, and nothing said why but
    the heartbeat's lag. A call over a second now pauses it, saying how long it took; what it
    returned that late is not traded."""
    import engine.core

    monkeypatch.setattr(engine.core, "_clock", CLOCK)
    h = await start(harnesses, data_dir, two(data_dir, "Slow"))
    await h.feed(BTC, 60_000.0)
    sent = len(h.sent)
    await h.signal("buggy", BTC, took, 60_000.0)  # type: ignore[arg-type]
    if not paused:
        assert not h.core.safety.is_paused("buggy") and len(h.sent) == sent + 1
        return
    reason = paused_reason(h, "buggy")
    assert reason.startswith("strategy buggy returned after 1.5 s (at most 1 s"), reason
    assert len(h.sent) == sent
    await h.signal("alpha", BTC, buy(), 60_000.0)
    assert len(h.sent) == sent + 1


class SlowBar(Scripted):
    """Its first bar takes two seconds."""

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        CLOCK.now += 2.0
        return buy()


async def test_a_strategy_slow_on_a_bar_is_paused_naming_the_bar(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import engine.core

    monkeypatch.setattr(engine.core, "_clock", CLOCK)
    h = await start(harnesses, data_dir, two(data_dir, "SlowBar"))
    for _ in range(3):
        await h.feed(BTC, 60_000.0)
    reason = paused_reason(h, "buggy")
    assert reason.startswith("strategy buggy returned after 2.0 s"), reason
    assert "on the BTC/USDT bar closing" in reason and not h.intents(), reason
