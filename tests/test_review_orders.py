"""An adversarial review of the order promises (protective exits, limit orders, the approval
gate, trading modes and risk profiles, paper on live prices): each test is a hole found by
attacking the promise as a hostile tester would, failing before its fix (the two properties
hold the invariants behind them). Every wait is bounded; COCKPIT_ORDERS_EXAMPLES raises the
property examples.

Tried and found holding (the existing tests pin them): approving twice, with a replayed hash,
an expired or superseded id, from a viewer, while the journal is down, after a kill, a pause,
a breaker trip or a move beyond the tolerance; ``auto`` at N-1 and N approvals; pending
approvals expired (and counted) at restart; a gap through a stop on quotes and bars; a stop and
a target in one bar; a stop under a kill at halt and at flatten; a trailing stop on a short;
exits after a partial entry and after an operator's flatten; post-only crossing, IOC/FOK,
NaN/inf/negative limit prices and times to live; a halt cancelling resting limits; live reached
only by config + --live + keys + the typed phrase (no socket command or environment variable
changes the mode); keys in a paper config never read; a paper config on venue prices offline
(one line naming the venue); a symbol on two venues or none.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.breakers import BreakerChange
from engine.config import parse_config
from engine.core import CancelOrder, EngineCore
from engine.datadir import JOURNAL_FILE
from engine.events import IntentChecked
from engine.journal import read_rows
from engine.paper_broker import PaperBroker
from engine.portfolio import Portfolio
from engine.types import (
    NS_PER_SECOND,
    Action,
    Fill,
    Instrument,
    LimitSpec,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
    Side,
)
from tests.test_cli import run
from tests.test_exits import entered
from tests.test_limit_orders import FIXED, Scripted
from tests.test_limit_orders import SYM as LIMIT_SYM
from tests.test_limit_orders import Harness as LimitHarness
from tests.test_limit_orders import make_core as limit_core
from tests.test_review_safety import resting_bid_whose_cancels_are_lost
from tests.test_safety_engine import (
    BTC,
    Harness,
    harnesses,  # noqa: F401  (the fixture the tests below take)
    scripted_config,
    start,
)

# Hypothesis examples per property (more with COCKPIT_ORDERS_EXAMPLES).
EXAMPLES = int(os.environ.get("COCKPIT_ORDERS_EXAMPLES", "150"))

# --------------------------------------------------------------------------- risk profiles


def test_a_config_file_cannot_claim_a_profile_whose_limits_it_does_not_run(
    tmp_path: Path,
) -> None:
    """Found: ``profile = "conservative"`` written in a config file was accepted and shown
    with the mode (header, status, metrics, alerts) while the file's own, default limits ran
    (max order notional 10,000, not the profile's 5,000). Only ``--profile`` lays a profile
    over the file; the file's claim is refused in one line, exit 2, by the check and the
    engine alike."""
    cfg = tmp_path / "claims.toml"
    cfg.write_text('profile = "conservative"\n')
    for argv in (["config", "check", "--config", str(cfg)], ["engine", "--config", str(cfg)]):
        r = run(*argv, "--data-dir", str(tmp_path / "data")) if argv[0] == "engine" else run(*argv)
        assert r.returncode == 2, (argv, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "--profile NAME" in lines[0] and "Traceback" not in r.stderr
    ok = tmp_path / "plain.toml"
    ok.write_text("")
    r = run("config", "check", "--config", str(ok), "--profile", "conservative")
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- protective exits


def test_a_stop_loss_is_not_held_back_by_the_order_rate_of_other_orders() -> None:
    """Found: a protective exit went through the order-rate throttle like a strategy's order.
    With the minute's budget spent by other strategies (or by the strategy's own limit moves),
    the triggered stop-loss was denied (THROTTLE_GLOBAL) and tried again each second while the
    price fell from the stop at 98 to 90. An exit, one per position, is exempt like the kill
    switch's flatten (and still counted)."""
    h = entered({"stop_loss_pct": 2.0})
    core = h.core
    budget = core.limits.global_throttle.max_orders
    for _ in range(budget):
        core.throttle.record("another", core.now)  # the minute's budget, spent elsewhere
    before = core.throttle.global_count(core.now)
    h.quote(97.5)  # through the stop
    h.quote(97.5)
    (ic,) = h.intents("exit")
    assert ic.outcome == "submitted", [v.message for v in ic.verdicts if not v.ok]
    assert h.position == 0.0
    assert core.throttle.global_count(core.now) == before + 1  # counted all the same


def two_strategies_one_symbol() -> tuple[LimitHarness, Scripted, Scripted]:
    """``a`` (a 2% stop-loss) and ``b`` scripted on one symbol, both may short, 1 unit each."""

    def strat(sid: str, exits: dict[str, float] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": sid,
            "kind": "ema_cross",
            "symbols": [LIMIT_SYM],
            "timeframe_s": 1,
            "approval": "auto",
            "allow_short": True,
            "sizing": {"model": "fixed_qty", "qty": 1.0},
        }
        if exits:
            out["exits"] = exits
        return out

    cfg = parse_config(
        {
            "market": {"simulated": {"symbols": {LIMIT_SYM: {"initial_price": 100.0}}}},
            "risk": {"price_collar_pct": 5.0},
            "broker": {"paper": FIXED.model_dump()},
            "strategies": [strat("a", {"stop_loss_pct": 2.0}), strat("b")],
        }
    )
    a, b = Scripted("a", LIMIT_SYM), Scripted("b", LIMIT_SYM)
    h = LimitHarness()
    inst = {LIMIT_SYM: Instrument(LIMIT_SYM, "sim", 0.01, 0.001, 0.0, 5.0)}
    h.core = EngineCore(cfg, [a, b], inst, Portfolio(100_000.0))
    h.broker = PaperBroker(cfg.paper)
    return h, a, b


def test_another_strategys_opposite_entry_does_not_hold_back_the_stop_loss() -> None:
    """Found: ``a`` long 1 with a stop-loss; ``b`` rests a sell limit at 101 (a short entry).
    Counted as already reducing the net position, ``b``'s order had ``a``'s triggered stop
    sized to nothing ("sizing gave no quantity"), again every second, while the market fell 5%
    under a sell that never fills. As for its own take-profit (test_review14), the exit first
    cancels such an order, then goes out; one that leaves room for the stop stays."""
    h, a, b = two_strategies_one_symbol()
    h.quote()
    a.say(Action.BUY, None)
    h.quote()
    h.quote()
    b.say(Action.SELL, LimitSpec(101.0))
    h.quote()
    assert h.core.portfolio.positions[LIMIT_SYM].qty == 1.0
    [(entry_b)] = [o for o in h.core.open_orders.values() if o.strategy_id == "b"]
    for _ in range(3):
        h.quote(bid=95.0, ask=95.02)  # 5% under the entry: through the 2% stop
    exits = [e for e in h.intents() if e.intent.origin == "exit"]
    assert exits and exits[0].outcome == "submitted", [
        v.message for e in exits for v in e.verdicts if not v.ok
    ]
    assert h.core.portfolio.positions[LIMIT_SYM].qty == 0.0
    assert any(c.client_order_id == entry_b.client_order_id for c in h.cancels)


def test_another_strategys_order_that_leaves_room_for_the_stop_stays() -> None:
    """The boundary: with ``b`` long too (net 2), ``b``'s sell limit for 1 leaves ``a``'s
    unit to sell: the stop goes out and ``b``'s order keeps working."""
    h, a, b = two_strategies_one_symbol()
    h.quote()
    a.say(Action.BUY, None)
    b.say(Action.BUY, None)
    h.quote()
    h.quote()
    b.say(Action.SELL, LimitSpec(101.0))
    h.quote()
    assert h.core.portfolio.positions[LIMIT_SYM].qty == 2.0
    [(exit_b)] = [o for o in h.core.open_orders.values() if o.strategy_id == "b"]
    for _ in range(3):
        h.quote(bid=95.0, ask=95.02)
    assert h.core.slots[("a", LIMIT_SYM)].position.qty == 0.0
    assert exit_b.client_order_id in h.core.open_orders and not h.cancels


def test_a_stop_with_nothing_to_sell_is_recorded_once_and_fires_when_there_is() -> None:
    """Found: ``a`` long 1 and ``b`` short 1 net the symbol flat. ``a``'s triggered stop had
    nothing to sell (the account holds nothing) and was decided and denied again every second
    (a decision and a denial journaled a second, 170,000 rows a day). It is recorded once and
    asked again when a fill or a finished order on the symbol changes that: ``b`` covering
    leaves ``a``'s long real, and the stop then goes out."""
    h, a, b = two_strategies_one_symbol()
    h.quote()
    a.say(Action.BUY, None)
    b.say(Action.SELL, None)
    h.quote()
    h.quote()
    assert h.core.portfolio.positions[LIMIT_SYM].qty == 0.0
    for _ in range(10):
        h.quote(bid=97.0, ask=97.02)  # through a's stop at 98
    stops = [e for e in h.intents() if e.intent.origin == "exit"]
    assert len(stops) == 1 and stops[0].outcome == "denied"
    b.say(Action.BUY, None)  # b covers: a's long is the account's now
    for _ in range(4):
        h.quote(bid=97.0, ask=97.02)
    stops = [e for e in h.intents() if e.intent.origin == "exit"]
    assert [e.outcome for e in stops] == ["denied", "submitted"]
    assert h.core.portfolio.positions[LIMIT_SYM].qty == 0.0
    assert h.core.slots[("a", LIMIT_SYM)].position.qty == 0.0


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    short=st.booleans(),
    b_with=st.booleans(),
    b_limit=st.one_of(
        st.none(),
        st.tuples(st.sampled_from([Action.BUY, Action.SELL]), st.integers(1, 400)),
    ),
    budget_spent=st.booleans(),
)
def test_a_triggered_stop_closes_its_position_whatever_else_rests_on_the_symbol(
    short: bool, b_with: bool, b_limit: tuple[Action, int] | None, budget_spent: bool
) -> None:
    """The property behind the exit tests above: ``a`` long or short, its position the
    account's (``b`` flat or on the same side), ``b`` resting any limit away from the market on
    either side, the minute's order budget spent or not: once the price is through ``a``'s
    stop, ``a`` is flat within a few quotes and the account holds exactly ``b``'s position."""
    h, a, b = two_strategies_one_symbol()
    entry = Action.SELL if short else Action.BUY
    h.quote()
    a.say(entry, None)
    if b_with:
        b.say(entry, None)
    h.quote()
    h.quote()
    if b_limit is not None:
        side, away = b_limit  # a buy rests below the market, a sell above it
        price = 100.0 - away / 100 if side is Action.BUY else 100.0 + away / 100
        b.say(side, LimitSpec(price))
        h.quote()
    if budget_spent:
        core = h.core
        for _ in range(core.limits.global_throttle.max_orders):
            core.throttle.record("another", core.now)
    through = 105.0 if short else 95.0  # 5% against a: past its 2% stop
    for _ in range(5):
        h.quote(bid=through - 0.01, ask=through + 0.01)
    assert h.core.slots[("a", LIMIT_SYM)].position.qty == 0.0
    net = h.core.portfolio.positions[LIMIT_SYM].qty
    assert net == h.core.slots[("b", LIMIT_SYM)].position.qty


# --------------------------------------------------------------------------- limit orders


def test_a_time_to_live_under_half_a_nanosecond_expires_at_once_not_never() -> None:
    """Found: a positive time to live that rounded to 0 ns (1e-10 s; ema_cross's
    ``limit_ttl_s`` accepts any number above 0) read as "no time to live": the limit worked
    until filled, the opposite of what was asked. It now expires on the next event."""
    h = LimitHarness()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0, ttl_s=1e-10))
    h.quote()
    (order,) = h.core.open_orders.values()
    assert order.expire_ts > 0
    h.quote()
    assert not h.core.open_orders
    assert any("time to live" in c.reason for c in h.cancels)


# --------------------------------------------------------------------------- kill at entries


def test_a_kill_at_entries_cancels_a_resting_entry_it_would_otherwise_fill() -> None:
    """Found: the kill switch at ``entries`` (REDUCING: only orders that shrink a position)
    left a resting buy limit working; the market traded through it and the engine opened a
    position under the switch. The limits that could add exposure are cancelled when the
    switch engages (its reason says why); one on the closing side within the position stays."""
    h = LimitHarness()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0))
    h.quote()
    assert len(h.core.open_orders) == 1
    h.handle(h.core.kill("entries", by="op", reason="no new risk", source="command"))
    assert str(h.core.safety.trading_state) == "REDUCING"
    assert not h.core.open_orders
    assert any("could add exposure" in c.reason for c in h.cancels)
    for _ in range(5):
        h.quote(bid=98.0, ask=98.02)  # trades through the old bid
    pos = h.core.portfolio.positions.get(LIMIT_SYM)
    assert pos is None or pos.qty == 0.0


def test_a_kill_at_entries_keeps_a_take_profit_resting_within_the_position() -> None:
    """The other side of the rule: a sell limit within a long only shrinks it, so it works on."""
    h = LimitHarness()
    h.quote()
    h.strat.say(Action.BUY, None)
    h.quote()
    h.quote()
    assert h.core.portfolio.positions[LIMIT_SYM].qty == 1.0
    h.strat.say(Action.SELL, LimitSpec(100.5))
    h.quote()
    (tp,) = h.core.open_orders
    h.handle(h.core.kill("entries", by="op", reason="no new risk", source="command"))
    assert list(h.core.open_orders) == [tp] and not h.cancels


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    position=st.integers(-4, 4),
    orders=st.lists(
        st.tuples(st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 4), st.booleans()),
        max_size=6,
    ),
)
def test_after_a_kill_at_entries_no_working_limit_can_grow_the_position(
    position: int, orders: list[tuple[Side, int, bool]]
) -> None:
    """The invariant behind the two tests above, over any position and resting limits: once
    the switch is at ``entries``, the limits still working, all filled, never make the net
    position larger or flip it; reduce-only ones are never cancelled."""
    core, _ = limit_core()
    if position:
        side = Side.BUY if position > 0 else Side.SELL
        fill = Fill(
            "f0", "x0", "s1", LIMIT_SYM, "sim", side, abs(position), 100.0, 0.0, Liquidity.TAKER, 1
        )
        core.portfolio.apply_fill(fill)
    for n, (side, qty, reduce_only) in enumerate(orders):
        order = Order(
            f"o{n}", f"o{n}", "s1", LIMIT_SYM, "sim", side, OrderType.LIMIT, float(qty),
            99.0 if side is Side.BUY else 101.0, OrderStatus.NEW, 1, 1, reduce_only=reduce_only,
        )  # fmt: skip
        core._track(order)
    out = core.kill("entries", by="op", reason="no new risk", source="command")
    cancelled = {c.client_order_id for c in out if isinstance(c, CancelOrder)}
    working = [o for o in core.open_orders.values() if o.client_order_id not in cancelled]
    assert not any(core.open_orders[coid].reduce_only for coid in cancelled)
    for order in working:
        if order.reduce_only:
            continue  # the venue lets it shrink the position only
        assert order.side.sign * position < 0, order  # on the closing side of a position
    closing = sum(o.remaining for o in working if not o.reduce_only)
    assert closing <= abs(position)  # all filled: flat at most, never the other way


async def test_a_kill_at_entries_leaves_no_adding_order_working_after_a_restart(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """As for halt: a cancel the kill asked for but that was lost on its way (a crash, a venue
    that did not take it) left the order open in the journal; the restart worked it again
    and it filled under a switch at entries. The restart cancels what could add exposure."""
    h, resting = await resting_bid_whose_cancels_are_lost(harnesses, data_dir)
    reply = await h.engine.command("kill", {"level": "entries", "reason": "no new risk"})
    assert reply["ok"], reply
    assert resting.client_order_id in h.core.open_orders  # the cancel never arrived
    await h.stop()
    harnesses.remove(h)

    again = await start(harnesses, data_dir, h.engine.cfg)
    assert again.core.safety.kill.level == "entries"
    assert not again.core.open_orders
    for _ in range(5):
        await again.feed(BTC, 59_000.0)  # trades through the old bid
    pos = again.core.portfolio.positions.get(BTC)
    assert pos is None or pos.qty == 0.0


# --------------------------------------------------------------------------- limits at restart


async def test_a_looser_run_time_limit_does_not_outlive_a_stricter_config(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """Found: a limit loosened at run time (``set_limit``) was restored over the config at
    every later start, whatever that start configured: restarted with ``--profile
    conservative`` (or an edited config), the engine showed the profile and ran with the old,
    looser limit. A loosened limit now outlives a restart only while the configuration still
    sets what it set when the limit was changed; otherwise it is dropped, journaled with the
    reason. A limit made stricter always holds."""
    loose = {"name": "max_order_notional", "value": 50_000, "reason": "a big day"}
    tight = {"name": "drawdown_limit_pct", "value": 3.0, "reason": "careful"}
    cfg = scripted_config(data_dir, risk={"max_order_notional": 20_000.0})
    h = await start(harnesses, data_dir, cfg)
    await h.feed(BTC, 60_000.0)
    assert (await h.engine.command("set_limit", loose))["ok"]
    assert (await h.engine.command("set_limit", tight))["ok"]
    await h.stop()
    harnesses.remove(h)

    def dropped_rows() -> list[dict[str, Any]]:
        rows = read_rows(data_dir / JOURNAL_FILE, {"safety"})
        return [
            r.payload
            for r in rows
            if r.payload.get("what") == "limit" and r.payload["by"] == "system"
        ]

    same = await start(harnesses, data_dir, cfg)  # the configuration it loosened: it stands
    assert same.core.limits.max_order_notional == 50_000.0 and not dropped_rows()
    await same.stop()
    harnesses.remove(same)

    stricter = scripted_config(data_dir, risk={"max_order_notional": 5_000.0})
    again = await start(harnesses, data_dir, stricter)
    assert again.core.limits.max_order_notional == 5_000.0  # the start's, not the old 50,000
    assert again.core.safety.kill_cfg.drawdown_limit_pct == 3.0  # made stricter: it holds
    [note] = dropped_rows()
    assert note["subject"] == "max_order_notional" and "does not outlive" in note["reason"]
    await again.stop()
    harnesses.remove(again)
    back = await start(harnesses, data_dir, cfg)  # dropped for good, not restored later
    assert back.core.limits.max_order_notional == 20_000.0 and len(dropped_rows()) == 1


async def test_a_breaker_halt_leaves_no_order_working_after_a_restart(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """The restart cancelled what the journal left open only under a kill switch: an engine
    halted by a breaker (here the clock-drift one) whose cancel was lost restarted HALTED with
    its bid working again, and the bid filled under HALTED. Whatever halted the engine, the
    restart cancels every order (and, REDUCING, those that could add)."""
    h, resting = await resting_bid_whose_cancels_are_lost(harnesses, data_dir)
    async with h.engine.command_lock:
        await h.engine.handle(h.core.on_clock_drift(900.0))  # over the 500 ms halt
    assert str(h.core.safety.trading_state) == "HALTED" and h.core.safety.kill.level is None
    assert resting.client_order_id in h.core.open_orders  # the cancel never arrived
    await h.stop()
    harnesses.remove(h)

    again = await start(harnesses, data_dir, h.engine.cfg)
    assert str(again.core.safety.trading_state) == "HALTED"
    assert not again.core.open_orders
    for _ in range(5):
        await again.feed(BTC, 59_000.0)  # trades through the old bid
    pos = again.core.portfolio.positions.get(BTC)
    assert pos is None or pos.qty == 0.0


def test_a_stop_held_by_a_halted_venue_is_recorded_once_and_fires_once_it_is_reconciled() -> None:
    """Found (review-h's leftover): on a venue halted by reconciliation a triggered stop was
    decided and denied (VENUE_HALTED) again every second, a decision and a denial journaled
    each time, 170,000 rows a day. It is recorded once, held while the venue waits for a
    person, and goes out on the first quote after the venue is reconciled."""
    h = entered({"stop_loss_pct": 2.0})
    core = h.core
    venue = core.instruments[next(iter(core.instruments))].venue
    core.set_venue_halt(venue, "reconciliation: an order the engine does not know")
    for _ in range(10):
        h.quote(97.5)  # through the stop, quote after quote
    stops = h.intents("exit")
    assert [e.outcome for e in stops] == ["denied"]
    assert "VENUE_HALTED" in stops[0].denied_codes
    assert h.position == 1.0
    core.set_venue_halt(venue, None)  # a person answered; the venue is reconciled
    h.quote(97.5)
    h.quote(97.5)
    assert [e.outcome for e in h.intents("exit")] == ["denied", "submitted"]
    assert h.position == 0.0


def test_an_operator_flatten_on_a_feed_gone_quiet_is_denied_as_stale_not_sent_at_an_old_price() -> (
    None
):
    """Found (review-f's leftover): the checks measured a quote's age against ``core.now``, which
    only quotes move; the engine's clock ticks on between them (``tick``) but did not count. A
    feed that went quiet for a minute left its last quote "fresh": an operator's flatten was
    sent at a price a minute old. The age is measured on the engine's clock now: exactly
    ``stale_quote_s`` passes, a nanosecond more is STALE_QUOTE."""
    for past, outcome in ((0, "submitted"), (1, "denied")):
        h = entered({})
        core = h.core
        core.tick(h.ts + int(core.limits.stale_quote_s * NS_PER_SECOND) + past)  # no quote since
        out = core.flatten(None, by="alice", reason="test")
        (checked,) = [e for e in out if type(e) is IntentChecked]
        assert checked.outcome == outcome, [v.message for v in checked.verdicts if not v.ok]
        if past:
            assert "STALE_QUOTE" in checked.denied_codes


# --------------------------------------------------------------------------- a paused strategy


def test_pausing_a_strategy_cancels_its_resting_entry_before_the_market_fills_it() -> None:
    """Found (left alone last session): a paused strategy's resting buy limit kept working,
    and the market trading through it opened a position for a strategy the trader had just
    paused. A pause now cancels the strategy's limits that could add to its position (the
    cancel says why); the market then trades through the old price and nothing fills."""
    h = LimitHarness()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0))
    h.quote()
    assert len(h.core.open_orders) == 1
    h.handle(h.core.pause_strategy("s1", by="op", reason="looks wrong", ts=h.ts))
    assert h.core.safety.is_paused("s1")
    assert not h.core.open_orders
    assert any("paused" in c.reason and "could add exposure" in c.reason for c in h.cancels)
    for _ in range(5):
        h.quote(bid=98.0, ask=98.02)
    pos = h.core.portfolio.positions.get(LIMIT_SYM)
    assert pos is None or pos.qty == 0.0


def test_a_paused_strategys_take_profit_within_its_position_keeps_working() -> None:
    """The other side of the rule: a sell limit within the strategy's own long only shrinks
    it, as an exit does (a paused strategy's exits go through), so the pause leaves it."""
    h = LimitHarness()
    h.quote()
    h.strat.say(Action.BUY, None)
    h.quote()
    h.quote()
    h.strat.say(Action.SELL, LimitSpec(100.5))
    h.quote()
    (tp,) = h.core.open_orders
    h.handle(h.core.pause_strategy("s1", by="op", reason="enough", ts=h.ts))
    assert list(h.core.open_orders) == [tp] and not h.cancels


def test_a_breaker_that_pauses_a_strategy_cancels_its_resting_entry() -> None:
    """The same hole through a breaker: a losing streak paused the strategy, and its resting
    entry opened the next losing trade anyway."""
    h = LimitHarness()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0))
    h.quote()
    trip = BreakerChange(
        "consecutive_losses", "s1", True, "pause_strategy", "12 losses", 12, 12, h.ts
    )
    h.handle(h.core.apply_breakers([trip]))
    assert h.core.safety.is_paused("s1") and not h.core.open_orders
    for _ in range(5):
        h.quote(bid=98.0, ask=98.02)
    pos = h.core.portfolio.positions.get(LIMIT_SYM)
    assert pos is None or pos.qty == 0.0


async def test_a_paused_strategy_has_no_adding_order_working_after_a_restart(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """The pause's cancel lost on its way (a crash right after the pause was recorded, a
    venue that did not take it): the restart cancels the paused strategy's resting entry, and
    the operator's reply said how many it cancelled."""
    h, resting = await resting_bid_whose_cancels_are_lost(harnesses, data_dir)
    reply = await h.engine.command("pause", {"strategy": "alpha", "reason": "looks wrong"})
    assert reply["ok"] and "1 resting order(s) that could add exposure cancelled" in str(reply)
    assert resting.client_order_id in h.core.open_orders  # the cancel never arrived
    await h.stop()
    harnesses.remove(h)

    again = await start(harnesses, data_dir, h.engine.cfg)
    assert again.core.safety.is_paused("alpha")
    assert not again.core.open_orders
    for _ in range(5):
        await again.feed(BTC, 59_000.0)  # trades through the old bid
    pos = again.core.portfolio.positions.get(BTC)
    assert pos is None or pos.qty == 0.0
