"""A strategy that raises (a bug in a trader's own ``mypkg.mymod:MyStrategy``, or a built-in
meeting data it never expected) used to stop the whole engine ("cockpit: unexpected error:
ZeroDivisionError", exit 1): every other strategy stopped, and with them the protective exits
and the kill switch's answers. Now that strategy alone is paused by the system, its exception
and where it was raised as the reason (journaled, shown, alerted), and not called again until
a person resumes it. A research run stops instead, naming the strategy and the bar."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from engine.backtest import (
    BacktestOptions,
    StrategyRaised,
    build_backtest_config,
    load_market_data,
    run_backtest_core,
)
from engine.config import parse_config
from engine.strategies.base import Strategy, StrategyParams
from engine.types import Action, Bar, PositionView, Quote, Signal
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

FAULTY = "tests.test_strategy_failure:Faulty"


class Faulty(Scripted):
    """Scripted, and an exception in its script (any BaseException: sys.exit() too) is raised
    instead of returned."""

    def on_quote(self, quote: Quote, position: PositionView) -> Signal | None:
        item = self.script.popleft() if self.script else None
        if isinstance(item, BaseException):
            raise item
        return item


class BrokenOnBar(Strategy):
    """Raises on every bar (a research run's strategy with a bug)."""

    kind: ClassVar[str] = "broken_on_bar"
    Params: ClassVar[type[StrategyParams]] = StrategyParams

    @property
    def warmup_bars(self) -> int:
        return 0

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        return {}["no such indicator"]  # a KeyError, as a typo would give


def bars_csv(folder: Path) -> Path:
    csv = folder / "bars.csv"
    lines = ["timestamp,open,high,low,close,volume"]
    lines += [f"{1_700_000_000_000 + i * 60_000},100,101,99,100,5" for i in range(50)]
    csv.write_text("\n".join(lines) + "\n")
    return csv


def faulty_config(data_dir: Path) -> Any:
    return scripted_config(
        data_dir, strategies=[strategy("alpha", "auto"), strategy("buggy", "auto", kind=FAULTY)]
    )


def paused_reason(h: Harness, sid: str) -> str:
    st = h.core.safety.state.strategies[sid]
    assert st.paused and st.by == "system", st
    return st.reason


async def test_a_strategy_that_raises_is_paused_and_the_engine_trades_on(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    h = await start(harnesses, data_dir, faulty_config(data_dir))
    await h.feed(BTC, 60_000.0)
    await h.signal("buggy", BTC, ZeroDivisionError("float division by zero"), 60_000.0)
    reason = paused_reason(h, "buggy")
    assert "strategy buggy raised ZeroDivisionError: float division by zero" in reason
    assert "test_strategy_failure.py:" in reason and "a BTC/USDT quote" in reason
    assert reason.endswith("fix it, then resume it")
    # Journaled as a pause by the system (the cockpit's safety pane and alerts show it).
    rows = [r.payload for r in h.rows("safety") if r.payload.get("subject") == "buggy"]
    assert rows and rows[-1]["after"]["paused"] and rows[-1]["by"] == "system"
    # The engine goes on: the other strategy trades, the failed one is not called again.
    sent = len(h.sent)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    assert len(h.sent) == sent + 1
    h.core.slots[("buggy", BTC)].strategy.script.append(buy())
    await h.feed(BTC, 60_000.0)
    assert list(h.core.slots[("buggy", BTC)].strategy.script) == [buy()]  # never popped
    # The kill switch still answers.
    reply = await h.engine.command("kill", {"level": "halt", "reason": "checking"})
    assert reply["ok"], reply


async def test_a_resumed_strategy_is_called_again_and_paused_again_if_it_still_raises(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    h = await start(harnesses, data_dir, faulty_config(data_dir))
    await h.feed(BTC, 60_000.0)
    await h.signal("buggy", BTC, ValueError("first"), 60_000.0)
    paused_reason(h, "buggy")
    reply = await h.engine.command("resume", {"strategy": "buggy", "reason": "fixed"})
    assert reply["ok"], reply
    assert not h.core.safety.is_paused("buggy")
    sent = len(h.sent)
    await h.signal("buggy", BTC, buy(), 60_000.0)
    assert len(h.sent) == sent + 1  # it trades again
    await h.signal("buggy", BTC, ValueError("second"), 60_000.0)
    assert "ValueError: second" in paused_reason(h, "buggy")


async def test_a_strategy_that_raises_on_history_is_paused_before_the_first_quote(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The warm-up on the market's history bars at start calls every strategy: one raising
    there stopped the start itself."""

    def broken(self: Scripted, bar: Bar, position: PositionView) -> Signal | None:
        raise RuntimeError("indicator not ready")

    monkeypatch.setattr(Faulty, "on_bar", broken)
    buggy = strategy("buggy", "auto", kind=FAULTY, timeframe_s=10)  # the history's bars
    cfg = scripted_config(data_dir, strategies=[strategy("alpha", "auto"), buggy])
    h = await start(harnesses, data_dir, cfg)
    reason = paused_reason(h, "buggy")
    assert "RuntimeError: indicator not ready" in reason and "history bar closing" in reason
    assert not h.core.safety.is_paused("alpha")
    sent = len(h.sent)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    assert len(h.sent) == sent + 1


def test_a_backtest_whose_strategy_raises_stops_saying_which_and_where(tmp_path: Path) -> None:
    """A research run has no result to report for a strategy with a bug: it stops with one
    line naming the strategy, the exception, its file and line, and the bar (exit 1)."""
    csv = bars_csv(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), *sys.path])}
    cmd = [
        sys.executable, "-m", "cockpit", "backtest", "--strategy",
        "tests.test_strategy_failure:BrokenOnBar", "--data", str(csv), "--no-cache",
        "--warmup", "0",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1, done
    err = done.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "raised KeyError: 'no such indicator'" in err
    assert "test_strategy_failure.py:" in err and "2023-11-14 22:14:20" in err, err


def test_the_research_core_raises_strategy_raised_not_an_unexpected_error(
    tmp_path: Path,
) -> None:
    """What the cockpit's backtest screen and sweeps get: a BacktestError with that line."""
    cfg = parse_config(
        {
            "strategies": [
                {
                    "id": "broken",
                    "kind": "tests.test_strategy_failure:BrokenOnBar",
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
    with pytest.raises(StrategyRaised, match="strategy broken raised KeyError"):
        run_backtest_core(build_backtest_config(cfg, data, opts), data, opts)


async def test_the_cockpit_shows_a_strategy_that_raised_as_loudly_as_a_breaker() -> None:
    """The pause is an error toast (and the bell) naming the strategy and its exception, and
    an alert line in the log; an operator's plain pause stays a quiet log line."""
    from engine.vocabulary import EventKind
    from tests.test_tui_notices import EventClient, applied, make_app, ready, toasts_on_screen

    client = EventClient()
    app = make_app(client)
    reason = "strategy buggy raised ZeroDivisionError: x at mine.py:3 on a BTC/USDT quote"
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await ready(pilot)
        for sid, by, why in (("alpha", "root", "lunch"), ("buggy", "system", reason)):
            client.push(
                {
                    "event": EventKind.SAFETY,
                    "what": "strategy",
                    "subject": sid,
                    "before": {"paused": False},
                    "after": {"paused": True},
                    "by": by,
                    "reason": why,
                }
            )
        await applied(pilot, client)
        shown = toasts_on_screen(app)
        assert shown == [f"Strategy failed: buggy paused: {reason}"], shown
        assert app.bells == 1


@pytest.mark.parametrize(
    ("returned", "said"),
    [
        (Signal(Action.BUY, "r", "x", float("nan")), "returned the confidence nan"),
        (Signal(Action.BUY, "r", "x", 1.5), "returned the confidence 1.5"),
        (Signal(Action.BUY, "r", "x", 0.5, {"z": float("inf")}), "returned the input 'z' = inf"),
        (Signal(Action.BUY, "r", "x", 0.5, {"z": "high"}), "returned the input 'z' = 'high'"),
        ({"action": "buy"}, "returned dict, not a Signal or None"),
        (
            Signal(Action.BUY, "r", "x", 0.5, {"n": np.int64(3)}),
            "returned the input 'n' = np.int64(3)",
        ),
        (Signal(Action.BUY, "r", "x", True), "returned the confidence True"),
        (Signal("buy!", "r", "x", 0.5), "returned the action 'buy!'"),  # type: ignore[arg-type]
    ],
)
async def test_a_trader_strategy_returning_a_malformed_signal_is_paused_not_traded(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    returned: Any,
    said: str,
) -> None:
    """Found: a NaN confidence was traded on and printed as ``"confidence":NaN`` in the
    headless JSON lines (not JSON: a consumer's parser stops there); a dict instead of a Signal
    stopped the engine with AttributeError. A trader's own strategy's signals are checked
    (the engine's own are well formed by construction): a malformed one pauses it, unsent."""
    h = await start(harnesses, data_dir, faulty_config(data_dir))
    await h.feed(BTC, 60_000.0)
    sent = len(h.sent)
    await h.signal("buggy", BTC, returned, 60_000.0)
    reason = paused_reason(h, "buggy")
    assert reason.startswith("strategy buggy returned") and said in reason, reason
    assert len(h.sent) == sent and not h.intents()
    assert h.core.slots[("buggy", BTC)].checked


async def test_a_trader_strategy_computing_with_numpy_floats_trades(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """numpy's float64 is a float (the journal writes it): a strategy computing its
    confidence and inputs with numpy is not paused for it."""
    h = await start(harnesses, data_dir, faulty_config(data_dir))
    await h.feed(BTC, 60_000.0)
    sent = len(h.sent)
    signal = Signal(Action.BUY, "r", "x", np.float64(0.7), {"ema": np.float64(59_990.5)})
    await h.signal("buggy", BTC, signal, 60_000.0)
    assert not h.core.safety.is_paused("buggy")
    assert len(h.sent) == sent + 1


def test_the_engines_own_strategies_are_not_checked_at_each_signal() -> None:
    """Their signals are well formed by construction (tests/test_strategies.py holds it with
    hypothesis): the backtest's hot path does not pay for the check."""
    from engine.core import _StrategySlot
    from engine.strategies.builtin import EMACross

    cfg = parse_config({"strategies": [strategy("e", "auto")]}).strategies[0]
    assert not _StrategySlot(EMACross("e", BTC, {}), cfg).checked
    assert _StrategySlot(Faulty("f", BTC, {}), cfg).checked


class SometimesBrokenParams(StrategyParams):
    k: int = 1


class SometimesBroken(Strategy):
    """Raises on its fifth bar when ``k`` is 2 (a sweep where one combination has the bug)."""

    kind: ClassVar[str] = "sometimes_broken"
    Params: ClassVar[type[StrategyParams]] = SometimesBrokenParams
    params: SometimesBrokenParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen = 0

    @property
    def warmup_bars(self) -> int:
        return 0

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        self.seen += 1
        if self.params.k == 2 and self.seen >= 5:
            raise ZeroDivisionError("k=2 divides by zero")
        return None


def test_a_sweep_lists_a_combination_whose_strategy_raised_under_its_table(
    tmp_path: Path,
) -> None:
    """The run's error went into the table's figure column, widening it to 150 characters
    for every row; it is one word there now, the message under the table."""
    cmd = [
        sys.executable, "-m", "cockpit", "sweep", "--strategy",
        "tests.test_strategy_failure:SometimesBroken", "--data", str(bars_csv(tmp_path)),
        "--param", "k=1,2,3", "--serial", "--no-cache", "--warmup", "0",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), *sys.path])}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done  # the other two ran
    lines = done.stdout.splitlines()
    table = [ln for ln in lines if ln[:1].isdigit()]
    assert len(table) == 3 and max(len(ln) for ln in table) < 90, table
    assert any(ln.split()[1:3] == ["2", "error"] for ln in table), table
    [said] = [ln for ln in lines if ln.startswith("error in #")]
    assert "strategy sometimes_broken raised ZeroDivisionError: k=2 divides by zero" in said, said


async def test_a_strategy_paused_for_raising_is_an_alert_an_operators_pause_is_not() -> None:
    """A trader away from the screen hears of it (the default routes get it, in the safety
    lane): which strategy, what it raised and how to resume it; an operator's pause or a
    breaker's (which has its own alert) sends nothing."""
    from engine.events import SafetyChanged
    from engine.fanout import EventFanout
    from engine.vocabulary import ALERT_KINDS
    from tests.alert_hook import Hook
    from tests.test_alerts import WAIT_S, dispatcher, running, show, stop

    assert "strategy_failed" in ALERT_KINDS
    ts = 1_700_000_000_000_000_000
    active, paused = {"paused": False}, {"paused": True}
    why = "strategy buggy raised ZeroDivisionError: x at mine.py:3 on a BTC/USDT quote"
    with Hook() as hook:
        d = dispatcher(urls=[hook.url()])  # the default events
        fanout = EventFanout()
        fanout.watchers.append(d.observe)
        task = await running(d)
        show(
            fanout,
            SafetyChanged(ts, "strategy", "alpha", active, paused, "root", "lunch", "attach"),
            SafetyChanged(ts, "strategy", "beta", active, paused, "system", "rolling_loss: 2%"),
            SafetyChanged(ts, "strategy", "buggy", active, paused, "system", why + "; fix it"),
        )
        assert await hook.wait_for(lambda p: len(p) >= 1, WAIT_S), hook.titles()
        await asyncio.sleep(0.3)  # nothing more comes
        await stop(task)
    assert hook.titles() == ["[paper] Strategy failed: buggy paused"]
    body = hook.posts[0].message
    assert why in body and "cockpit resume buggy" in body
    assert hook.posts[0].body.get("type") == "failure"


async def test_a_strategy_that_raises_while_a_breaker_holds_it_waits_for_a_person(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """Found on reading the change again: paused by a breaker, the strategy raised (it is
    still fed while paused); the pause was already there, so nothing was recorded, and the
    breaker's re-arm resumed it: shown active while the engine no longer called it. The
    failure now replaces the breaker's reason on the record, and only a person's resume lets
    it trade again."""
    from engine.breakers import BreakerChange

    h = await start(harnesses, data_dir, faulty_config(data_dir))
    await h.feed(BTC, 60_000.0)
    now = h.core.now
    trip = BreakerChange("consecutive_losses", "buggy", True, "pause_strategy", "12", 12, 12, now)
    await h.publish(h.core.apply_breakers([trip]))
    assert paused_reason(h, "buggy").startswith("consecutive_losses:")
    await h.signal("buggy", BTC, ValueError("while paused"), 60_000.0)
    reason = paused_reason(h, "buggy")
    assert reason.startswith("strategy buggy raised ValueError: while paused"), reason
    rows = [r.payload for r in h.rows("safety") if r.payload.get("subject") == "buggy"]
    assert rows[-1]["reason"] == reason  # on the record
    rearm = BreakerChange("consecutive_losses", "buggy", False, "pause_strategy", "ok", 0, 12, now)
    await h.publish(h.core.apply_breakers([rearm]))
    assert "while paused" in paused_reason(h, "buggy")  # still paused, by its failure
    reply = await h.engine.command("resume", {"strategy": "buggy", "reason": "fixed"})
    assert reply["ok"], reply
    sent = len(h.sent)
    await h.signal("buggy", BTC, buy(), 60_000.0)
    assert len(h.sent) == sent + 1
