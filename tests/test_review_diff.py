"""An adversarial review of the changes merged on 7 December (9fd44f1..review-diff): the raced
cancels of the kill switch, a pause and a lowered limit judged again on a fill, the strategy
watchdog (SIGUSR2), and the native stops re-placed every 5 s. Each test is a hole found there,
failing before its fix.

Tried and found holding:
- a kill at entries with a closing limit and a reduce-only limit on the same side: the closing
  limit goes (neither paper nor the ccxt venues hold reduce-only at the fill, so both could fill);
- a raced fill after a release, a resume or a limit raised back: the judgement finds nothing;
- a partial fill of an order whose cancel is outstanding: it stays counted as closing (what is
  left may fill), and the kept orders are judged against the position with the part filled;
- a venue's cancel reply after the fill: the ccxt broker holds a terminal state until the fills
  are booked, so the fill comes first and the judgement is made; the kept orders judged again
  see the raced order gone;
- a restart with such cancels outstanding: the kill, each pause and the limits in force are
  judged again at start with nothing remembered, so every cancel is asked again;
- a judgement looping: a raced judgement asks no cancel already outstanding, so each fill makes
  a bounded number of cancels;
- the watchdog's signal after the call returned, or during the next call: the handler raises
  only while the flagged call is the one running; between the return and ``calling = 0`` it
  lands inside the try, and the strategy (which ran past its second) is paused;
- the except clause: ``calling = 0`` is its first statement and no bytecode before it checks
  for signals (CPython 3.11), so the interrupt cannot land in engine code there;
- a strategy returning a generator or an object with hanging methods: signal_problem accepts
  only the exact Signal type with exact str/dict/number fields, so no trader code runs after
  the timed call; strategy_view and the view are the engine's own plain data;
- backtests and sweeps: they drive the core without Engine.start, so no watch covers them; a
  research core's calls never match an engine's watch;
- two engines in one process and an engine stopped and started again: one watch per core, the
  handler raises only for its own core's call; the thread ends when nothing is watched and a
  new start starts it again;
- SIGUSR2 from outside while a call runs under its second: nothing is flagged, nothing raised;
- the cash exemption of a reduce-only buy: check_reduce_only still caps it at the short less
  the open buys already covering it (no short-circuit: every check runs), so a buy beyond the
  short, or one another buy already covers, is denied;
- the 5 s venue stop check: not while HALTED (kill at halt or flatten); at entries and while
  paused it places only a reduce-only stop (what the README promises keeps working); it asks
  again a cancel it sees outstanding with the same follow-up, so no second stop is placed; a
  stop re-placed while a closing limit rests is denied as beyond the reducible and waits for a
  fill;
- an approved close while the stop's move is in flight: the stop's cancel is asked (again), the
  stop follows what is left once the sell fills;
- trail from history at restart: the bar containing the entry counts from its close, as on a
  running engine; a trail through the market is closed by the engine, not sent to the venue.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.core import CancelOrder
from engine.types import Action, Fill, LimitSpec, Liquidity, OrderStatus, OrderUpdate
from tests.test_review_limits import Driver, X, make_core
from tests.test_review_ops import (  # noqa: F401  (where: the fixture)
    ENV,
    _lines,
    run_signalled_while_loading,
    where,
)
from tests.test_safety_engine import (
    BTC,
    Harness,
    buy,
    harnesses,  # noqa: F401  (the fixture the tests take)
    scripted_config,
    start,
    strategy,
)

RISK = {
    "max_order_notional": 1e6,
    "max_position_fraction": 1.0,
    "max_gross_exposure_fraction": 10.0,
    "max_open_positions": 5,
    "price_collar_pct": 5.0,
}


class LostCancels(Driver):
    """A venue that never answers a cancel (lost on the way, or refused by a transient error:
    the order keeps working, and the broker does not ask again by itself)."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.lost: list[str] = []
        self.losing = False

    def _cancel(self, cancel: CancelOrder) -> list[Any]:
        if self.losing:
            self.lost.append(cancel.client_order_id)
            return []
        return super()._cancel(cancel)


def a_resting_buy_on_a_flat_symbol() -> LostCancels:
    fleet = [("b", X, "auto", {"model": "fixed_qty", "qty": 8.0}, None)]
    d = LostCancels(*make_core(fleet, RISK, 100_000.0), 100_000.0)
    d.quote(X, 100.0)
    d.say("b", Action.BUY, LimitSpec(offset_ticks=0.0))
    d.quote(X, 100.0, bid_size=1_000.0)
    d.quote(X, 100.0, bid_size=1_000.0)
    (order,) = d.core.open_orders.values()
    assert order.side.sign > 0 and d.core.portfolio.positions.get(X) is None
    return d


def cancels(out: list[Any]) -> list[str]:
    return [c.client_order_id for c in out if type(c) is CancelOrder]


def test_a_kill_switch_engaged_again_asks_again_a_cancel_the_venue_lost() -> None:
    """Found: a cancel of the kill switch at entries is remembered until the order is done
    (to judge the kept ones again on a fill), and every later call skipped the order as
    "being cancelled". A cancel the venue lost (or refused with a network error) left the
    buy resting for good: the switch released and engaged again, the buy was not cancelled,
    and it could fill into a new position under the switch."""
    d = a_resting_buy_on_a_flat_symbol()
    (coid,) = d.core.open_orders
    d.losing = True
    d.handle(d.core.kill("entries", by="op", reason="t", source="operator"))
    assert d.lost == [coid] and coid in d.core.open_orders
    d.core.safety.release(by="op", reason="t", ts=d.core.now)
    d.losing = False
    d.handle(d.core.kill("entries", by="op", reason="again", source="operator"))
    assert coid not in d.core.open_orders


def test_a_pause_again_asks_again_a_cancel_the_venue_lost() -> None:
    """The same through a pause: paused, the cancel lost, resumed, paused again: the entry
    resting at the venue is cancelled this time."""
    d = a_resting_buy_on_a_flat_symbol()
    (coid,) = d.core.open_orders
    d.losing = True
    d.handle(d.core.pause_strategy("b", by="op", reason="t", ts=d.core.now))
    assert d.lost == [coid]
    d.core.safety.resume("b", by="op", reason="t", ts=d.core.now)
    d.losing = False
    d.handle(d.core.pause_strategy("b", by="op", reason="again", ts=d.core.now))
    assert coid not in d.core.open_orders


def test_a_limit_lowered_again_asks_again_a_cancel_the_venue_lost() -> None:
    """The same through a lowered limit: the cancel lost, the limit lowered again (or the
    kill switch engaged): the order beyond it is cancelled this time."""
    d = a_resting_buy_on_a_flat_symbol()
    (coid,) = d.core.open_orders
    d.losing = True
    d.core.limits = d.core.limits.model_copy(update={"max_order_notional": 100.0})
    d.handle(d.core.cancel_beyond_limits("lowered"))
    assert d.lost == [coid]
    d.losing = False
    d.handle(d.core.cancel_beyond_limits("lowered again"))
    assert coid not in d.core.open_orders


# --------------------------------------------------------------------------- SIGUSR2


async def test_sigusr2_from_outside_leaves_an_engine_of_built_in_strategies_running(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """docs/operations.md: SIGUSR2 "sent from outside it does nothing". Found: the watchdog
    installed its handler only for an engine running a trader's own strategy; an engine of
    built-in strategies (the default config) kept SIGUSR2's default action, and `kill -USR2`
    terminated it at once (exit 140: no clean stop, the session's end not recorded)."""
    previous = signal.signal(signal.SIGUSR2, signal.SIG_DFL)  # as in a fresh process
    try:
        cfg = scripted_config(
            data_dir, strategies=[dict(strategy("alpha", "auto"), kind="ema_cross")]
        )
        h = await start(harnesses, data_dir, cfg)
        assert not any(slot.checked for slot in h.core.slots.values())
        assert callable(signal.getsignal(signal.SIGUSR2))  # (else the signal ends pytest)
        os.kill(os.getpid(), signal.SIGUSR2)
        await h.feed(BTC, 60_000.0)
        assert h.core.now > 0
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_sigusr2_while_the_engine_still_loads_does_nothing(
    where: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The same while `cockpit engine` loads (before the engine's start installs the
    watchdog's handler): the engine starts, runs its time and stops cleanly."""
    assert run_signalled_while_loading("SIGUSR2", where, tmp_path / "out.log")


# --------------------------------------------------------------------------- raced under HALTED


def test_a_raced_fill_after_the_switch_went_to_halt_asks_no_cancel_twice() -> None:
    """Found: a cancel of the kill switch at entries answered by a fill after the switch was
    raised to `halt` had the kill's judgement made again under HALTED, which asked once more
    the cancel of every limit the halt had just cancelled (a second request for each at the
    venue, spent from the rate limit the flatten and the halt's own cancels need). The halt
    asked every cancel already: the judgement is made only while REDUCING."""
    fleet = [
        ("a", X, "auto", {"model": "fixed_qty", "qty": 10.0}, None),
        ("b", X, "auto", {"model": "fixed_qty", "qty": 8.0}, None),
        ("c", X, "auto", {"model": "fixed_qty", "qty": 5.0}, None),
    ]
    d = LostCancels(*make_core(fleet, RISK, 100_000.0), 100_000.0)
    d.quote(X, 100.0)
    d.say("a", Action.BUY)
    d.quote(X, 100.0)
    d.quote(X, 100.0)
    for sid in ("b", "c"):
        d.say(sid, Action.SELL, LimitSpec(offset_ticks=0.0))
        d.quote(X, 100.0, ask_size=1_000.0)
        d.quote(X, 100.0, ask_size=1_000.0)
    assert d.core.portfolio.positions[X].qty == 10.0
    by_sid = {o.strategy_id: o for o in d.core.open_orders.values()}
    assert sorted(by_sid) == ["b", "c"]
    d.losing = True  # nothing the venue is asked from here on is answered
    d.handle(d.core.kill("entries", by="op", reason="t", source="operator"))
    assert d.lost == [by_sid["c"].client_order_id]  # the 8 is kept, the 5 goes
    d.handle(d.core.kill("halt", by="op", reason="t", source="operator"))
    assert sorted(d.lost) == sorted(
        [by_sid["c"].client_order_id, *(o.client_order_id for o in by_sid.values())]
    )
    raced = by_sid["c"]
    raced.filled_qty, raced.avg_fill_price = raced.qty, 100.05
    raced.move_to(OrderStatus.FILLED, d.core.now)
    fill = Fill(
        "race-c",
        raced.client_order_id,
        "c",
        X,
        "sim",
        raced.side,
        raced.qty,
        100.05,
        0.0,
        Liquidity.MAKER,
        d.core.now,
    )
    out = d.core.on_broker([fill, OrderUpdate(raced, d.core.now)])
    assert d.core.portfolio.positions[X].qty == 5.0
    assert cancels(out) == []


# --------------------------------------------------------------------------- a loop that died


async def test_an_engine_whose_loop_died_sends_no_order_on_an_approve_or_a_flatten(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """Found (review-tui, left alone there): the embedded cockpit's engine whose loop ended on
    an exception still took commands: an approve or a flatten sent its order to the venue with
    nothing left to watch it (no quotes, fills, exits or KILL file). The engine is now BLOCKED
    from that moment: the approve and the flatten are denied ENGINE_BLOCKED, nothing is sent,
    and the kill switch still engages."""
    h = await start(harnesses, data_dir, scripted_config(data_dir))
    await h.signal("alpha", BTC, buy(), 60_000.0)
    await h.feed(BTC, 60_000.0)
    await h.signal("beta", BTC, buy(), 60_000.0)
    (waiting,) = h.core.approvals.pending()
    sent = len(h.sent)

    async def broken(max_events: int | None = None) -> AsyncIterator[list[Any]]:
        raise RuntimeError("feed broke")
        yield []

    h.engine.source.batches = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="feed broke"):
        await h.engine.run()
    assert "loop stopped on RuntimeError: feed broke" in (h.core.blocked_reason or "")
    approved = await h.engine.command("approve", {"id": waiting.approval_id})
    assert not approved["ok"], approved
    flattened = await h.engine.command("flatten", {"reason": "get out"})
    assert not flattened["ok"], flattened
    assert len(h.sent) == sent
    killed = await h.engine.command("kill", {"level": "halt", "reason": "stop"})
    assert killed["ok"] and h.core.safety.kill.level == "halt"


async def test_a_release_while_a_breaker_still_halts_says_the_engine_stays_halted(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """Found (review-ap, left alone there): `release` answered "kill switch released" while a
    breaker (a clock drift) still held the engine HALTED: a script's `release && echo trading`
    was wrong. The answer still releases (the switch is a person's own), and says what holds."""
    h = await start(harnesses, data_dir, scripted_config(data_dir))
    await h.feed(BTC, 60_000.0)
    await h.engine.command("kill", {"level": "halt", "reason": "stop"})
    await h.publish(h.core.on_clock_drift(1e9))
    args = {"reason": "checked", "confirm": "RELEASE"}
    reply = await h.engine.command("release", args)
    assert reply["ok"] and not h.core.safety.kill.engaged, reply
    assert reply["message"].startswith("kill switch released; the engine stays HALTED: "), reply
    assert "clock_drift" in reply["message"]
    await h.publish(h.core.on_clock_drift(0.0))
    await h.engine.command("kill", {"level": "halt", "reason": "again"})
    reply = await h.engine.command("release", args)
    assert reply["message"] == "kill switch released", reply  # nothing else holds it
