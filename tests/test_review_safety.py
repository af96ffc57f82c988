"""An adversarial review of the engine's safety promises: each test is a hole found by attacking
the real engine, pinned so it stays closed.

The engine is driven as in test_safety_engine.py (scripted strategies, hand-made quotes in event
time, a spy on the paper broker), through its operator commands and its journal.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from engine.checks import check_cash, check_max_open_positions, check_max_position
from engine.config import RiskLimits
from engine.datadir import JOURNAL_FILE
from engine.events import IntentChecked
from engine.journal import read_rows
from engine.runtime import Engine
from engine.types import Action, LimitSpec, Signal
from tests.conftest import fast_config
from tests.test_approval_replace import _core as approvals_core
from tests.test_approval_replace import buy as approval_buy
from tests.test_checks import SYM, make_ctx, make_intent
from tests.test_cli import run
from tests.test_control_support import short_dir
from tests.test_safety_engine import (
    BTC,
    ETH,
    Harness,
    buy,
    denied_codes,
    harnesses,  # noqa: F401  (the fixture the tests below take)
    hold_one_btc,
    scripted_config,
    sell,
    start,
    strategy,
    walk_until_kill,
)

RELEASE = {"confirm": "RELEASE", "reason": "looked at it"}


# --------------------------------------------------------------------------- release


@pytest.mark.parametrize("how", ["killed by hand before the loss", "raised after the auto kill"])
async def test_a_release_waits_for_the_loss_whoever_engaged_the_switch(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    how: str,
) -> None:
    """A release is refused while the loss is beyond its limit, unless overridden.

    Found: the engine asked for the loss only when the switch's *source* was the loss limit.
    A person who had killed by hand first (the loss came later, so the auto kill had nothing
    to raise), or who raised an automatic kill to flatten (the source became "command"), got
    "kill switch released" without an override while the loss still held; the next quote
    engaged it again, and the journal read released, then killed.
    """
    h = await hold_one_btc(harnesses, data_dir, {})
    if how == "killed by hand before the loss":
        assert (await h.engine.command("kill", {"reason": "stepping away"}))["ok"]
        await h.feed(BTC, 55_000.5)  # -5% on the day: the limit, under a kill already at halt
    else:
        await walk_until_kill(h, [55_000.5])
        raised = await h.engine.command("kill", {"level": "flatten", "reason": "get out"})
        assert raised["ok"], raised
        await h.feed(BTC, 55_000.5)  # the flatten fills: the loss is realized, still -5%
    assert h.core.safety.kill.source == "command"

    held = await h.engine.command("release", RELEASE)
    assert not held["ok"], held
    assert "the condition still holds (daily loss" in held["message"]
    assert h.core.safety.kill.engaged

    forced = await h.engine.command("release", {**RELEASE, "override": True})
    assert forced["ok"], forced
    await h.feed(BTC, 55_000.5)
    assert not h.core.safety.kill.engaged  # the override holds for the standing loss


# --------------------------------------------------------------------------- kill: flatten


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("kill", {"level": "flatten", "reason": "get out"}),
        ("flatten", {"symbol": BTC, "reason": "get out"}),
    ],
    ids=["kill-flatten", "operator-flatten"],
)
async def test_a_flatten_closes_a_position_while_an_order_rests_on_the_closing_side(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    command: str,
    args: dict[str, Any],
) -> None:
    """The kill switch's flatten and `cockpit flatten SYMBOL` close a long while a sell rests
    above it: the resting sell is cancelled first (it would close on top of the flatten, and
    once flat open a short), and the long goes out reduce-only.

    Found: both judged their reduce-only sell while the resting sell (another strategy's limit,
    a take-profit) counted as already closing the long, so the sell read as larger than the
    position (REDUCE_ONLY_EXCEEDS_POSITION): denied, the long kept (under a flatten kill, too).
    """
    cfg = scripted_config(
        data_dir,
        strategies=[strategy("alpha", "auto"), strategy("gamma", "auto")],
    )
    h = await start(harnesses, data_dir, cfg)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    await h.feed(BTC, 60_000.0)  # alpha's buy fills: long 0.01
    offer = Signal(Action.SELL, "scripted", "offer above", 1.0, limit=LimitSpec(price=60_300.0))
    await h.signal("gamma", BTC, offer, 60_000.0)
    await h.feed(BTC, 60_000.0)
    pf = h.core.portfolio
    assert pf.positions[BTC].qty == 0.01
    resting = list(h.core.open_orders.values())
    assert [(o.strategy_id, o.side, o.qty, o.limit_price) for o in resting] == [
        ("gamma", "sell", 0.01, 60_300.0)
    ]

    sent = len(h.sent)
    reply = await h.engine.command(command, args)
    assert reply["ok"] and "denied" not in reply["message"], reply
    assert not [o for o in h.core.open_orders.values() if o.strategy_id == "gamma"]  # cancelled
    flat: list[Any] = [(o.side, o.qty, o.reduce_only) for o in h.sent[sent:]]
    assert flat == [("sell", 0.01, True)]  # and the long goes out, reduce-only
    await h.feed(BTC, 60_000.0)
    assert pf.positions[BTC].qty == 0.0


@pytest.mark.parametrize(
    ("reason", "recorded"),
    [
        ("why\nforged line", "why forged line"),
        ("esc\x1b[2J now", "esc [2J now"),
        ("rtl\u202eevil", "rtl evil"),
        ("   ", "no reason given"),
        ("", "no reason given"),
        (None, "no reason given"),
        ("x" * 501, "x" * 499 + "\u2026"),
        ("x" * 500, "x" * 500),
    ],
)
async def test_a_kill_is_never_refused_for_its_reason(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    reason: str | None,
    recorded: str,
) -> None:
    """An emergency stop must not wait on the paperwork: a kill whose reason spans lines, holds
    control characters, is blank, missing or too long engages, its reason made one printable
    line (no forged audit lines) of at most 500 characters.

    Found: `cockpit kill --reason "$(printf 'a\nb')"` was refused (exit 1) and the switch was
    not engaged; so was a blank or over-long reason from a script or the socket.
    """
    h = await start(
        harnesses, data_dir, scripted_config(data_dir, strategies=[strategy("a", "auto")])
    )
    await h.feed(BTC, 60_000.0)
    args: dict[str, Any] = {"level": "halt"}
    if reason is not None:
        args["reason"] = reason
    reply = await h.engine.command("kill", args)
    assert reply["ok"], reply
    kill = h.core.safety.kill
    assert kill.engaged and kill.reason == recorded


# --------------------------------------------------------------------------- the control socket


def test_an_engine_refuses_a_socket_another_engine_listens_on_before_it_starts(
    tmp_path: Path,
) -> None:
    """An engine given the socket path another engine listens on refuses before it starts.

    Found: the socket was looked at only after the engine had started on its own data
    directory: it journaled a session, printed "session started" (and, in testnet or live,
    would have opened its venues and reconciled them), and only then exited 2.
    """
    data_dir = tmp_path / "second"
    with short_dir() as private:
        path = private / "engine.sock"
        first = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # the first engine's socket
        try:
            first.bind(str(path))
            first.listen(8)
            done = run("engine", "--data-dir", str(data_dir), "--socket", str(path), "--for", "1")
            assert done.returncode == 2, done.stderr
            assert f"another engine is already listening on {path}" in done.stderr
            assert "Traceback" not in done.stderr
            assert done.stdout == ""  # no "session started" for an engine that never ran
            assert not (data_dir / "journal.sqlite").exists()
            assert path.exists()  # the first one's socket is left alone
        finally:
            first.close()


# --------------------------------------------------------------------------- exposure in flight


def test_an_order_resting_the_other_way_makes_no_room_under_the_position_limit() -> None:
    """Found: the position check netted every open order, so a resting sell (which may never
    fill) made room for a buy as large as the limit itself: long at the limit plus a sell
    resting above the market, a second full-size buy passed. Each side's orders now count on
    their own; exactly at the limit still passes, just over it is denied."""
    limits = RiskLimits(max_position_fraction=0.1)  # 10,000 of 100,000: 0.2 BTC at 50,000
    offered = {"positions": {SYM: 0.1}, "open_order_qty": {SYM: -0.1}}  # long 0.1, 0.1 offered
    at = check_max_position(make_intent(qty=0.1), make_ctx(**offered), limits)
    assert at.ok, at  # 0.2 if the offer is never taken: the limit exactly
    over = check_max_position(make_intent(qty=0.1001), make_ctx(**offered), limits)
    assert not over.ok and over.code == "MAX_POSITION", over
    bought = {"positions": {SYM: 0.1}, "open_order_qty": {SYM: 0.05}}  # a buy on its way counts
    assert check_max_position(make_intent(qty=0.05), make_ctx(**bought), limits).ok
    assert not check_max_position(make_intent(qty=0.0501), make_ctx(**bought), limits).ok


def test_a_buy_and_a_sell_that_net_to_zero_are_still_two_open_orders() -> None:
    """Found: open orders counted only through their net, so a buy and a sell of the same size
    on one symbol read as nothing open: the symbol did not count toward max_open_positions,
    and the buy's cash was not reserved."""
    both = {
        "open_order_qty": {SYM: 0.0},
        "open_buy_qty": {SYM: 1.0},
        "open_sell_qty": {SYM: 1.0},
        "marks": {SYM: 50_000.0, "ETH/USDT": 3_000.0},
        "fee_rate": 0.001,
    }
    eth = make_intent(qty=1.0, symbol="ETH/USDT", ref=3_000.0)
    held = check_max_open_positions(eth, make_ctx(**both), RiskLimits(max_open_positions=1))
    assert not held.ok and held.code == "MAX_OPEN_POSITIONS", held
    # The open buy of 1 BTC holds 50,050 (with fees); 0.1 more costs 5,005.
    second = make_intent(qty=0.1)
    short = check_cash(second, make_ctx(**{**both, "cash": 55_054.0}), RiskLimits())
    assert not short.ok and short.code == "INSUFFICIENT_CASH", short
    assert check_cash(second, make_ctx(**{**both, "cash": 55_055.0}), RiskLimits()).ok


async def test_the_engine_keeps_a_long_within_its_limit_while_a_sell_rests_above(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """End to end: alpha holds what the position limit allows, gamma offers the same amount
    above the market, alpha buys again. The second buy may only fill what the limit has left
    (the offer may never be taken): before, the long doubled to twice the limit."""
    cfg = scripted_config(
        data_dir,
        strategies=[strategy("alpha", "auto"), strategy("gamma", "auto")],
        risk={"max_position_fraction": 0.006},  # 600 of 100,000: 0.01 BTC at 60,000
    )
    h = await start(harnesses, data_dir, cfg)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    await h.feed(BTC, 60_000.0)
    pf = h.core.portfolio
    first = pf.positions[BTC].qty
    assert first > 0.009
    rest = Signal(Action.SELL, "scripted", "offer above", 1.0, limit=LimitSpec(price=60_300.0))
    await h.signal("gamma", BTC, rest, 60_000.0)
    await h.feed(BTC, 60_000.0)
    offers = [o.remaining for o in h.core.open_orders.values() if o.strategy_id == "gamma"]
    assert len(offers) == 1 and offers[0] > 0.009  # the offer rests
    await h.signal("alpha", BTC, buy("again"), 60_000.0)
    await h.feed(BTC, 60_000.0)
    limit = 0.006 * pf.equity
    assert pf.positions[BTC].qty * 60_000.0 <= limit * (1 + 1e-9), pf.positions[BTC].qty


# --------------------------------------------------------------------------- override


async def test_overriding_the_daily_loss_leaves_the_drawdown_limit_armed(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """A release that overrides the daily loss accepts that loss, not every loss after it.

    Found: the override switched the automatic kill off for as long as the equity stayed
    below the daily limit, so a market that went on falling reached the 15% drawdown limit
    (and beyond) without the switch engaging again: one override disarmed both loss limits.
    """
    h = await hold_one_btc(harnesses, data_dir, {})
    await walk_until_kill(h, [55_000.5])  # -5% on the day
    assert h.core.safety.kill.source == "daily_loss"
    forced = await h.engine.command("release", {**RELEASE, "override": True})
    assert forced["ok"], forced
    await h.feed(BTC, 50_000.5)  # deeper, under the daily limit already overridden
    assert not h.core.safety.kill.engaged
    await h.feed(BTC, 45_001.0)  # just short of the 15% drawdown
    assert not h.core.safety.kill.engaged
    await h.feed(BTC, 45_000.5)  # equity 85,000: the drawdown limit exactly
    kill = h.core.safety.kill
    assert kill.engaged and kill.source == "drawdown", kill


# --------------------------------------------------------------------------- flatten: no quote


async def hold_btc_and_eth_with_eth_silent(started: list[Harness], data_dir: Path) -> Harness:
    """alpha long 0.01 BTC and 0.01 ETH, then 8 s of BTC quotes and none for ETH (stale)."""
    h = await start(started, data_dir)
    await h.feed(BTC, 60_000.0)
    await h.feed(ETH, 3_000.0)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    await h.signal("alpha", ETH, buy(), 3_000.0)
    await h.feed(BTC, 60_000.0)
    await h.feed(ETH, 3_000.0)
    for _ in range(8):
        await h.feed(BTC, 60_000.0)
    pf = h.core.portfolio
    assert pf.positions[BTC].qty == 0.01 and pf.positions[ETH].qty == 0.01
    return h


async def test_kill_flatten_closes_a_symbol_once_its_stale_feed_is_fresh_again(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """Found: a kill-switch flatten denied because a symbol's quote was stale at that moment
    (STALE_QUOTE, or no quote yet) was never tried again: the switch read flatten, the feed came
    back, and the position stayed open for good. It now goes out on the symbol's first fresh
    quote (never on a stale price), once."""
    h = await hold_btc_and_eth_with_eth_silent(harnesses, data_dir)
    reply = await h.engine.command("kill", {"level": "flatten", "reason": "get out"})
    assert "1 flatten order(s) denied (quote age 8s exceeds stale limit 5s)" in reply["message"]
    await h.feed(BTC, 60_000.0)
    pf = h.core.portfolio
    assert pf.positions[BTC].qty == 0.0 and pf.positions[ETH].qty == 0.01
    sent = len(h.sent)
    await h.feed(ETH, 3_000.0)  # fresh: the flatten goes out now
    assert [(o.symbol, o.side, o.qty, o.reduce_only) for o in h.sent[sent:]] == [
        (ETH, "sell", 0.01, True)
    ]
    await h.feed(ETH, 3_000.0)
    await h.feed(ETH, 3_000.0)
    assert pf.positions[ETH].qty == 0.0
    assert len(h.sent) == sent + 1  # once: nothing more once flat


async def test_a_latched_flatten_closes_what_is_left_after_a_restart(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """The kill switch survives a restart at flatten, and so does what flatten means: a
    position it had not closed yet (here the stale ETH) is closed on its first fresh quote
    after the restart, not left open under a switch that says flatten."""
    h = await hold_btc_and_eth_with_eth_silent(harnesses, data_dir)
    await h.engine.command("kill", {"level": "flatten", "reason": "get out"})
    await h.feed(BTC, 60_000.0)
    await h.stop()
    harnesses.remove(h)
    again = await start(harnesses, data_dir)
    assert again.core.safety.kill.level == "flatten"
    assert again.core.portfolio.positions[ETH].qty == 0.01
    await again.feed(ETH, 3_000.0)
    await again.feed(ETH, 3_000.0)
    assert again.core.portfolio.positions[ETH].qty == 0.0
    assert [(o.symbol, o.side, o.reduce_only) for o in again.sent] == [(ETH, "sell", True)]


# --------------------------------------------------------------------------- live canary


@pytest.mark.parametrize("made", [0, 4, 5])
def test_live_orders_under_the_canary_are_sized_to_its_cap_not_denied(made: int) -> None:
    """The first ``canary_trades`` live orders are capped at ``canary_max_order_notional``.

    Found: sizing used the ordinary limits, so with the default sizing (2% of equity) every
    order of the canary was denied MAX_ORDER_NOTIONAL: the canary never completed and a live
    engine never traded. Now they are sized to the cap; the sixth is not capped.
    """
    cfg = fast_config(Path("unused"))
    cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"mode": "live"})})
    core = approvals_core(cfg)
    core.live_trades = made
    out = core.decide(core.slots[("ema_cross", "BTC/USDT")], approval_buy(), 60_000.0)
    [checked] = [e for e in out if isinstance(e, IntentChecked)]
    assert checked.outcome == "awaiting_approval", checked.denied_codes  # live: a person decides
    notional = checked.intent.qty * checked.intent.ref_price
    if made < cfg.safety.live.canary_trades:
        assert 50.0 < notional <= cfg.safety.live.canary_max_order_notional, notional
    else:
        assert notional > 1_000.0, notional  # past the canary: the ordinary 2% of equity


# --------------------------------------------------------------------------- SIGUSR1 at start


@pytest.mark.parametrize("moment", ["before start", "source opening", "journal opening"])
async def test_a_kill_signal_while_the_engine_starts_is_not_lost(
    data_dir: Path, moment: str
) -> None:
    """SIGUSR1 engages the kill switch, also when it arrives while the engine starts (a long
    journal restore, a venue's markets loading): it is engaged and journaled once the state is
    restored. Found: before the core existed the signal was dropped, and between the core's
    creation and the restore it was engaged, not journaled, then overwritten by the restored
    state: the engine started ACTIVE.
    """
    earlier = Engine(fast_config(data_dir), data_dir)  # a journal with a safety state to restore
    await earlier.start()
    await earlier.stop()
    engine = Engine(fast_config(data_dir), data_dir)

    async def signal() -> None:
        await engine.engage_kill("halt", by="signal", reason="SIGUSR1 received", source="signal")

    if moment == "before start":
        await signal()
    elif moment == "source opening":
        opening = engine.source.open

        async def source_open(*args: Any) -> Any:
            await signal()
            return await opening(*args)

        engine.source.open = source_open  # type: ignore[method-assign]
    else:
        opening_journal = engine._open_journal

        async def open_journal() -> Any:
            await signal()
            return await opening_journal()

        engine._open_journal = open_journal  # type: ignore[method-assign]
    await engine.start()
    try:
        kill = engine.core.safety.kill if engine.core is not None else None
        assert kill is not None and kill.level == "halt" and kill.source == "signal", kill
    finally:
        await engine.stop()
    states = [r.payload["state"] for r in read_rows(data_dir / JOURNAL_FILE, {"safety_state"})]
    assert states[-1]["kill"]["level"] == "halt"  # durable: it holds after a restart


# --------------------------------------------------------------------------- halt at restart


async def resting_bid_whose_cancels_are_lost(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> tuple[Harness, Any]:
    """An engine with a bid resting below the market whose cancels never arrive (a crash, a
    venue that did not take them): the journal keeps it open, as such a crash leaves it."""
    cfg = scripted_config(data_dir, strategies=[strategy("alpha", "auto")])
    h = await start(harnesses, data_dir, cfg)
    await h.feed(BTC, 60_000.0)
    bid = Signal(Action.BUY, "scripted", "bid below", 1.0, limit=LimitSpec(price=59_700.0))
    await h.signal("alpha", BTC, bid, 60_000.0)
    await h.feed(BTC, 60_000.0)
    [resting] = list(h.core.open_orders.values())

    async def lost(*_args: Any) -> list[Any]:
        return []

    h.engine.execution.cancel = lost  # type: ignore[method-assign]
    return h, resting


async def test_a_halt_leaves_no_order_working_after_a_restart(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """HALTED means every open order cancelled, and a restart does not bring one back to work.

    Found: the kill's cancels were asked once. When one was not recorded before the stop (a
    kill by signal or KILL file, then kill -9 before the next commit; a venue that did not
    take the cancel), the restart restored the order as open and the paper venue worked it
    again: a resting buy filled, adding exposure under a switch at halt. Here the cancel is
    lost on its way, which leaves the journal as such a crash does.
    """
    h, resting = await resting_bid_whose_cancels_are_lost(harnesses, data_dir)
    assert (await h.engine.command("kill", {"reason": "stop everything"}))["ok"]
    assert resting.client_order_id in h.core.open_orders  # the journal still says it works
    await h.stop()
    harnesses.remove(h)

    again = await start(harnesses, data_dir, h.engine.cfg)
    assert again.core.safety.kill.level == "halt"
    assert not again.core.open_orders
    for _ in range(5):
        await again.feed(BTC, 59_000.0)  # trades through the old bid
    assert again.core.portfolio.positions.get(BTC) is None or (
        again.core.portfolio.positions[BTC].qty == 0.0
    )


# --------------------------------------------------------------------------- flatten: throttle


async def test_kill_flatten_is_not_held_back_by_a_runaways_order_rate(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """Found: the kill switch's flatten went through the order-rate throttle like any order,
    so a strategy that had used up its 10 orders a minute (the runaway a person stops with the
    switch) kept its position: the flatten was denied THROTTLE_STRATEGY and never sent. The
    strategy's own eleventh order is still denied."""
    h = await start(harnesses, data_dir, relaxed=True)
    await h.feed(BTC, 60_000.0)
    for i in range(10):  # buy, sell, ... buy, buy: 10 orders in 5 s, long 0.02
        await h.signal("alpha", BTC, sell() if i % 2 and i < 9 else buy(), 60_000.0, dt=0.5)
    await h.feed(BTC, 60_000.0, dt=0.5)
    pf = h.core.portfolio
    assert pf.positions[BTC].qty == pytest.approx(0.02)
    await h.signal("alpha", BTC, buy(), 60_000.0, dt=0.5)
    assert denied_codes(h.intents()[-1]) == ["THROTTLE_STRATEGY"]  # the eleventh: held back
    reply = await h.engine.command("kill", {"level": "flatten", "reason": "runaway"})
    assert reply["ok"] and "denied" not in reply["message"], reply
    await h.feed(BTC, 60_000.0)
    assert pf.positions[BTC].qty == pytest.approx(0.0, abs=1e-12)
