"""Restart fidelity, an adversarial review: the engine that starts again on a data directory is
the one that stopped. What a person did (a release with override) or the engine counted (orders
against the throttle) is neither lost nor repeated, and what the cockpit shows (the equity chart,
the performance pane) is what it showed before the stop.

Driven in process through tests/test_safety_engine.py's Harness (exact quotes, event time), the
stop/start pair being the same `Engine.stop` / `Engine.start` a daemon's SIGTERM and restart run.
The hypothesis test restarts anywhere in a scripted session; more examples with
COCKPIT_RESTART_EXAMPLES.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_safety_engine import (
    BTC,
    CASH_AFTER_BUY,
    ETH,
    Harness,
    buy,
    harnesses,  # noqa: F401 (a fixture)
    hold_one_btc,
    last_state,
    scripted_config,
    sell,
    start,
    strategy,
    walk_until_kill,
)
from tests.test_safety_restart import crash

EXAMPLES = int(os.environ.get("COCKPIT_RESTART_EXAMPLES", "10"))


async def restart(started: list[Harness], h: Harness, data_dir: Path) -> Harness:
    """Stop ``h`` (as SIGTERM does) and start a new engine on its data directory."""
    await h.stop()
    started.remove(h)
    again = await Harness.start(h.engine.cfg, data_dir)
    started.append(again)
    return again


# --------------------------------------------------------------------------- the throttle


def throttled(max_orders: int) -> dict[str, Any]:
    return {
        "risk": {"strategy_throttle": {"max_orders": max_orders, "per_seconds": 60}},
    }


async def test_orders_before_a_restart_still_count_against_the_throttle(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    h = await start(harnesses, data_dir, **throttled(3))
    await h.feed(BTC, 60_000.0)
    for _ in range(3):
        await h.signal("alpha", BTC, buy(), 60_000.0)
        await h.feed(BTC, 60_000.0)  # fills
    assert len(h.intents("submitted")) == 3
    before = h.engine.snapshot(trace=0, curve=0)["limits"]["order_rate"]["value"]
    assert before == 3.0

    h = await restart(harnesses, h, data_dir)
    # The status a person reads counts the same orders in the window...
    assert h.engine.snapshot(trace=0, curve=0)["limits"]["order_rate"]["value"] == before
    # ...and the 4th order within the minute is still the one over the limit.
    await h.signal("alpha", BTC, buy(), 60_000.0)
    denied = h.intents("denied")
    assert len(denied) == 1, "a restart handed the strategy a fresh allowance of orders"
    assert [v["code"] for v in denied[0]["verdicts"] if not v["ok"]] == ["THROTTLE_STRATEGY"]
    assert len(h.intents("submitted")) == 3
    # The window still ends where it did: a minute after the first order, one more goes out.
    await h.feed(BTC, 60_000.0, dt=60)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    assert len(h.intents("submitted")) == 4


async def test_a_replay_that_starts_its_file_again_starts_its_throttle_afresh(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """Only the window back from the restart's clock counts: orders stamped after it (a
    replay's clock starts at its file's beginning again) do not block the new run forever."""
    h = await start(harnesses, data_dir, **throttled(3))
    core = h.core
    core.throttle = type(core.throttle)(core.limits.strategy_throttle, core.limits.global_throttle)
    later = core.now + 10 * 10**9
    core.restore_throttle([("alpha", later)] * 3 + [("alpha", core.now - 61 * 10**9)])
    assert core.throttle.strategy_count("alpha", core.now) == 0
    core.restore_throttle([("alpha", core.now - 59 * 10**9), ("alpha", core.now)])
    assert core.throttle.strategy_count("alpha", core.now) == 2


# --------------------------------------------------------------------------- what is shown


async def test_the_equity_chart_goes_on_from_the_one_before_the_restart(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    h = await start(harnesses, data_dir)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    for i in range(12):
        await h.feed(BTC, 60_000.0 + 50 * i, dt=30)  # a marks sample each minute
    await h.stop()
    harnesses.remove(h)
    shown = h.core.portfolio.equity_curve  # the stop's own sample included
    assert len(shown) >= 6

    again = await Harness.start(h.engine.cfg, data_dir)
    harnesses.append(again)
    curve = again.engine.snapshot()["equity_curve"]
    assert [tuple(p) for p in curve] == shown, "the equity chart restarts empty"


# --------------------------------------------------------------------------- a person's override


async def released_with_override(started: list[Harness], data_dir: Path) -> Harness:
    h = await hold_one_btc(started, data_dir, {})
    await walk_until_kill(h, [57_000.5, 55_000.5])  # a 5% daily loss: the automatic kill
    reply = await h.engine.command(
        "release", {"reason": "hedged elsewhere", "confirm": "RELEASE", "override": True}
    )
    assert reply["ok"], reply
    await h.feed(BTC, 55_000.5)
    assert not h.core.safety.kill.engaged
    return h


async def test_a_release_with_override_outlives_a_restart_on_the_same_day(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    h = await released_with_override(harnesses, data_dir)
    h = await restart(harnesses, h, data_dir)
    await h.feed(BTC, 55_000.5)  # the same standing loss the person accepted
    kill = h.core.safety.kill
    assert not kill.engaged, f"the restart engaged the switch the operator released: {kill}"
    assert h.core.safety.trading_state == "ACTIVE"
    # Only that loss: a deeper one (the drawdown limit, 15%) engages it as before the restart.
    await h.feed(BTC, 45_000.5)
    assert h.core.safety.kill.engaged and h.core.safety.kill.source == "drawdown"


async def test_an_override_that_ended_is_not_brought_back_by_a_restart(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """Equity back inside the limit ends the override, on the record (a safety row and the
    journaled state), so a restart after a crash cannot revive it: the next breach engages."""
    h = await released_with_override(harnesses, data_dir)
    await h.feed(BTC, 58_000.5)  # back inside: the override ends
    assert h.core.loss_override == frozenset()
    assert last_state(h)["loss_override"] == []
    ended = [r.payload for r in h.rows("safety") if r.payload["what"] == "loss_override"]
    assert ended and ended[-1]["after"] == {"accepted": []}
    assert "back inside" in ended[-1]["reason"]

    h = await restart(harnesses, h, data_dir)
    ts = await h.feed(BTC, 55_000.5)  # the same loss again: the switch engages
    kill = h.core.safety.kill
    assert kill.engaged and kill.source == "daily_loss" and kill.ts == ts
    assert h.core.portfolio.equity == CASH_AFTER_BUY + 55_000.5


async def test_an_override_ends_with_its_utc_day_across_a_restart(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """The override is journaled with its UTC day: once the journal's day moved on (a quote
    after midnight, then a stop), a restart does not bring it back."""
    h = await released_with_override(harnesses, data_dir)
    midnight = (h.t // (86_400 * 10**9) + 1) * 86_400 * 10**9
    # A new day: its start equity is the equity now, so yesterday's loss is no breach...
    await h.feed(BTC, 55_000.5, dt=(midnight - h.t) / 1e9)
    assert not h.core.safety.kill.engaged
    assert h.core.loss_override == frozenset()
    assert last_state(h)["loss_override"] == ["daily_loss"]  # (journaled with its day)
    h = await restart(harnesses, h, data_dir)
    assert h.core.loss_override == frozenset()
    # ...and 5% more of it engages the switch.
    await h.feed(BTC, 55_000.5 - 0.05 * (CASH_AFTER_BUY + 55_000.5))
    assert h.core.safety.kill.engaged and h.core.safety.kill.source == "daily_loss"


async def test_the_audit_trail_reads_the_same_after_a_restart(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """A kill's record lists what it changed (the switch, then the trading state): after a
    restart, read back from the journal, the same list in the same order."""
    h = await start(harnesses, data_dir)
    await h.feed(BTC, 60_000.0)
    assert (await h.engine.command("kill", {"level": "entries", "reason": "look"}))["ok"]
    assert (await h.engine.command("pause", {"strategy": "beta", "reason": "look"}))["ok"]
    shown = [(a["action"], a["changes"]) for a in h.engine.snapshot()["audit"]]
    assert [what for what, _ in shown] == ["kill", "pause"]
    h = await restart(harnesses, h, data_dir)
    again = [(a["action"], a["changes"]) for a in h.engine.snapshot()["audit"]]
    assert again == shown


async def test_an_approval_mode_the_config_gave_follows_the_config_at_the_next_start(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """Only an operator's switch is the operator's: a strategy the config put in auto, put back
    in approve by an edited config, asks again after the restart (it has the approvals auto
    needs, so a journaled "auto" would have been obeyed)."""

    def config(beta: str) -> Any:
        return scripted_config(
            data_dir,
            strategies=[strategy("alpha", "auto"), strategy("beta", beta)],
            safety={"approval": {"auto_after_approved": 1}},
        )

    h = await Harness.start(config("approve"), data_dir)
    harnesses.append(h)
    await h.feed(ETH, 3_000.0)
    await h.signal("beta", ETH, buy(), 3_000.0)
    (pending,) = h.core.approvals.pending()
    assert (await h.engine.command("approve", {"id": pending.approval_id}))["ok"]
    await h.stop()
    harnesses.remove(h)
    for beta in ("auto", "approve"):  # the config edited, then edited back
        h = await Harness.start(config(beta), data_dir)
        harnesses.append(h)
        assert h.strategy_view("beta")["approval"] == beta, f"the config says {beta}"
        await h.stop()
        harnesses.remove(h)
    # An operator's switch still outlives a restart (README), whatever the config gave.
    h = await Harness.start(config("approve"), data_dir)
    harnesses.append(h)
    args = {"strategy": "beta", "mode": "auto", "reason": "earned it"}
    assert (await h.engine.command("set_approval_mode", args))["ok"]
    h = await restart(harnesses, h, data_dir)
    assert h.strategy_view("beta")["approval"] == "auto"


# --------------------------------------------------------------------------- anywhere


STEPS = (
    "quote",
    "buy_alpha",
    "sell_alpha",
    "buy_beta",
    "approve",
    "pause",
    "resume",
    "limit",
    "mode",
    "kill",
    "release",
    "slump",
    "rise",
    "flatten",
    "halt",
)


def fidelity_view(h: Harness, *, crashed: bool = False) -> dict[str, Any]:
    """What a person reads in `cockpit status --json` and the panes, less what moves with the
    clock or with this process (latency, quotes, counters of this session). After a crash the
    marks are those of the last marks row until the first quote: what is valued at them is
    left out (positions' quantities, cash and realized PnL stay)."""
    snap = h.engine.snapshot()
    core = h.core
    # (and the peak, journaled when it rises 0.01% above the last one recorded: README)
    valued = (
        "equity",
        "unrealized_pnl",
        "gross_exposure",
        "drawdown",
        "daily_pnl",
        "marks",
        "peak_equity",
    )
    view = {
        "portfolio": {
            k: v
            for k, v in snap["portfolio"].items()
            if k != "last_mark_ts" and not (crashed and k in valued)
        },
        # (bars_held counts with the clock, which a restart moves on to the next second)
        "positions": [
            {
                **{k: v for k, v in p.items() if not (crashed and k in ("mark", "unrealized_pnl"))},
                "share_of_equity": None if crashed else p["share_of_equity"],
                "exits": [{k: v for k, v in x.items() if k != "bars_held"} for x in p["exits"]],
            }
            for p in snap["positions"]
        ],
        "kill": snap["kill_switch"],
        "state": snap["trading_state"],
        "strategies": snap["strategies"],
        "breakers": sorted(
            (b["name"], b["scope"], b["tripped"], b["reason"])
            for b in snap["breakers"]
            if b["tripped"]
        ),
        "settable": snap["settable_limits"],
        # (after a crash the simulated clock resumes after the last journaled row, which may be
        # before the last quote: the window, not the orders in it, moves)
        "order_rate": None if crashed else snap["limits"]["order_rate"],
        "performance": [
            {k: v for k, v in r.items() if not (crashed and k in ("unrealized_pnl", "exposure"))}
            for r in snap["performance"]["strategies"]
        ],
        "daily": snap["performance"]["daily"],
        # (a live record carries this run's event number, a restored one its journal row's)
        "audit": [{k: v for k, v in a.items() if k not in ("key", "seq")} for a in snap["audit"]],
        "curve": snap["equity_curve"],
        "override": sorted(core.loss_override),
        "open_orders": sorted(core.open_orders),
    }
    return view


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    script=st.lists(st.sampled_from(STEPS), min_size=1, max_size=16),
    cut=st.integers(min_value=0, max_value=16),
    crash_it=st.booleans(),
)
def test_a_restart_anywhere_in_a_session_starts_the_engine_that_stopped(
    tmp_path_factory: pytest.TempPathFactory, script: list[str], cut: int, crash_it: bool
) -> None:
    """A clean stop or a kill -9 after any prefix of a session of trades, approvals, pauses,
    limits, kills, releases with override and losses: the engine that starts is the one that
    stopped (what it shows, what it counts, what a person decided)."""
    data_dir = tmp_path_factory.mktemp("restart")
    asyncio.run(_restart_anywhere(data_dir, script, min(cut, len(script)), crash_it))


async def _restart_anywhere(data_dir: Path, script: list[str], cut: int, crash_it: bool) -> None:
    cfg = scripted_config(
        data_dir,
        strategies=[
            strategy(
                "alpha",
                "auto",
                0.5,
                exits={
                    "stop_loss_pct": 5.0,
                    "trailing_atr": 2.0,
                    "atr_period": 3,
                    "time_stop_bars": 600,
                },
            ),
            strategy("beta", "approve", 0.01),
        ],
        risk={
            "strategy_throttle": {"max_orders": 4, "per_seconds": 60},
            "max_order_notional": 100_000.0,
            "max_position_fraction": 1.0,
            "max_gross_exposure_fraction": 1.0,
        },
        safety={"kill_switch": {"daily_loss_limit_pct": 0.5}},
    )
    h = await Harness.start(cfg, data_dir)
    try:
        mid = 60_000.0
        await h.feed(BTC, mid)
        await h.feed(ETH, 3_000.0)
        for step in script[:cut]:
            mid += 10.0
            e = h.engine
            if step == "quote":
                await h.feed(BTC, mid, dt=20)
            elif step in ("buy_alpha", "sell_alpha"):
                sig = buy() if step == "buy_alpha" else sell()
                await h.signal("alpha", BTC, sig, mid)
                await h.feed(BTC, mid)  # the fill: nothing in flight at the cut
            elif step == "buy_beta":
                await h.signal("beta", ETH, buy(), 3_000.0)
            elif step == "approve":
                for ap in e.core.approvals.pending():
                    await e.command("approve", {"id": ap.approval_id})
                await h.feed(ETH, 3_000.0)
            elif step == "pause":
                await e.command("pause", {"strategy": "beta", "reason": "look"})
            elif step == "resume":
                await e.command("resume", {"strategy": "beta", "reason": "ok"})
            elif step == "limit":
                await e.command(
                    "set_limit", {"name": "max_order_notional", "value": 50_000.0, "reason": "t"}
                )
            elif step == "mode":
                await e.command(
                    "set_approval_mode", {"strategy": "alpha", "mode": "approve", "reason": "m"}
                )
            elif step == "kill":
                await e.command("kill", {"level": "entries", "reason": "look closer"})
            elif step == "release":
                args = {"reason": "seen", "confirm": "RELEASE", "override": True}
                await e.command("release", args)
            elif step == "rise":  # bars closing higher: the trail's watermark and ratchet
                for _ in range(4):
                    mid += 40.0
                    await h.feed(BTC, mid)
            elif step == "flatten":
                await e.command("flatten", {"reason": "out"})
                await h.feed(BTC, mid)
            elif step == "halt":
                await e.command("kill", {"level": "halt", "reason": "stop it"})
            elif step == "slump":  # 1% down: beyond the 0.5% daily loss limit when long
                mid = float(round(mid * 0.99))
                await h.feed(BTC, mid, dt=5)
        for ap in h.core.approvals.pending():  # a pending approval expires at restart, counted
            await h.engine.command("reject", {"id": ap.approval_id, "reason": "before the stop"})
        await h.feed(BTC, mid)
        for _ in range(3):  # an exit this quote fired fills on the next (paper voids in flight)
            if not h.core.open_orders:
                break
            await h.feed(BTC, mid)
        before = fidelity_view(h, crashed=crash_it)
        portfolio = h.core.portfolio
        peak = portfolio.peak_equity
        if crash_it:
            await crash(h)
        else:
            await h.stop()
        before["curve"] = [[ts, eq] for ts, eq in portfolio.equity_curve]  # the stop's sample too
        h = await Harness.start(cfg, data_dir)
        after = fidelity_view(h, crashed=crash_it)
        assert h.core.portfolio.peak_equity >= peak * (1 - 1e-4)
        for key in before:
            assert after[key] == before[key], f"{key} differs after a restart at step {cut}"
    finally:
        await h.stop()


def test_the_restore_keeps_only_the_submits_the_throttle_may_count(tmp_path: Path) -> None:
    """A long journal does not hold every intent it ever submitted in memory at a restart:
    only those within the throttle's longest window of a newer one."""
    from engine.journal import Journal
    from engine.restore import restore_state

    async def write() -> None:
        journal = await Journal.open(tmp_path / "journal.sqlite")
        for i in range(50):
            intent = {
                "intent_id": f"i{i}",
                "strategy_id": "alpha",
                "symbol": BTC,
                "venue": "sim",
                "side": "buy",
                "order_type": "market",
                "qty": 0.01,
                "ts": i * 10**9,
            }
            journal.append("intent", i * 10**9, {"outcome": "submitted", "intent": intent})
        await journal.close()

    asyncio.run(write())
    every = restore_state(tmp_path / "journal.sqlite")
    assert len(every.submits) == 50
    kept = restore_state(tmp_path / "journal.sqlite", throttle_ns=10 * 10**9)
    assert [ts for _, ts in kept.submits] == [i * 10**9 for i in range(40, 50)]
