"""Adversarial checks of the latest merged changes (review-d2): review-rs's restart fidelity,
review-lv's venue path, the lead's blocking of a stopped loop, review-tui's cockpit changes.

Each test fails on the code before its fix; none touches the network (the loopback venue of
``tests.test_venue_runtime``).

Attacks that held (no test here, or covered by the earlier reviews' tests):

- a transient network error in the venue poll or watch blocking the engine for the session:
  every broker request there is caught (the poll, the reconciliation's snapshot, the kill's
  look and cancel-all, the clock check); only an error applying an answer, or the journal's,
  reaches the block;
- a second kill flatten while the first is unknown or in flight: a refused close is due again
  only once it is REJECTED, and the retry waits while any non-stop order of the symbol is open
  (a PENDING_NEW of unknown fate included); a send that never reached the venue is CANCELED,
  not REJECTED, so it is not retried blind;
- the commit before a cancel on the kill switch's path: the kill's cancels are carried out
  with no rows before them (the kill's own rows commit as safety state, as before), so no fsync
  is added; a journal that cannot commit blocks and the cancel still goes;
- a restored failure pause and a person's resume: resume clears the engine's "failed" mark;
  a breaker's re-arm resumes only a pause whose reason is its own (a failure restates over a
  breaker's pause), so it never wakes a failed strategy;
- a blocked engine's release: the kill switch still releases (its own), the reply says BLOCKED.

"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import engine.venues.execution as venue_execution
from engine.types import Order, OrderStatus, OrderUpdate
from tests.test_review_lv import loopback_engine
from tests.test_safety_engine import (
    BTC,
    Harness,
    S,
    buy,
    harnesses,  # noqa: F401  (the fixture the tests take)
    scripted_config,
    start,
)
from tests.test_venues_support import KEYS, venue_env


async def test_the_venue_watch_does_not_wait_out_a_rate_limit_under_the_command_lock(
    monkeypatch: Any, tmp_path: Path
) -> None:
    """review-lv made the background poll ask nothing while a venue's Retry-After runs (it
    waited the wait out under the command lock, holding the kill switch's cancels and reply),
    but the venue watch's periodic (or retried) reconciliation still did: its snapshot waited
    in the request gate, under the lock, for the whole wait (up to an hour for a 418 ban). It
    now waits for the next round after the Retry-After instead."""
    venue_env(monkeypatch)
    monkeypatch.setattr(venue_execution, "VENUE_WATCH_S", 0.02)
    monkeypatch.setattr(venue_execution, "RECONCILE_EVERY_S", 0.0)
    async with loopback_engine(tmp_path, auto_fill=False) as engine:
        broker = engine.execution.brokers["binance"]  # type: ignore[attr-defined]
        waits_under_lock: list[float] = []

        async def sleep(seconds: float) -> None:
            if engine.command_lock.locked():
                waits_under_lock.append(seconds)
                broker.gate.blocked_until = 0.0  # (the wait "over": the test goes on)
            await asyncio.sleep(0.01)

        monkeypatch.setattr(broker.gate, "_sleep", sleep)
        broker.gate.blocked_until = broker.gate._clock() + 3600.0  # a 418 ban
        await engine.run(duration_s=0.3)
        assert waits_under_lock == []
        assert engine.execution.reconciliations.get("binance") is not None  # not failed


async def test_a_release_while_the_engine_is_blocked_says_no_orders_are_sent(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """The lead made `release` say when a breaker still holds the engine HALTED ("released"
    read as trading again), but not when the engine is BLOCKED (a failed venue poll or watch,
    a loop that stopped, a journal that cannot write: no order is sent for the rest of the
    session): the answer was a bare "kill switch released" while nothing could trade."""
    h = await start(harnesses, data_dir, scripted_config(data_dir))
    await h.feed(BTC, 60_000.0)
    await h.engine.command("kill", {"level": "halt", "reason": "stop"})
    h.engine.block("the venue poll failed (RuntimeError('x')); no orders are sent")
    args = {"reason": "checked", "confirm": "RELEASE"}
    reply = await h.engine.command("release", args)
    assert reply["ok"] and not h.core.safety.kill.engaged, reply
    assert reply["message"].startswith("kill switch released; the engine stays BLOCKED: "), reply
    assert "the venue poll failed" in reply["message"]


async def test_a_reconciliation_that_fails_does_not_starve_the_kill_switchs_cancels(
    monkeypatch: Any, tmp_path: Path
) -> None:
    """review-lv made the venue watch block the engine and go on when it fails, but its duties
    shared one try: a reconciliation failing at every round (an answer the engine cannot read)
    ended each round before the kill switch's unconfirmed cancels were tried again there (or
    at any venue after it), though the kill's reply promises them every 5 s. Each duty now
    fails on its own."""
    venue_env(monkeypatch)
    monkeypatch.setattr(venue_execution, "VENUE_WATCH_S", 0.02)
    monkeypatch.setattr(venue_execution, "RECONCILE_EVERY_S", 0.0)
    monkeypatch.setattr(venue_execution, "KILL_RETRY_S", 0.0)
    async with loopback_engine(tmp_path, auto_fill=False) as engine:
        execution: Any = engine.execution
        reply = await engine.command("kill", {"level": "halt", "reason": "stop"})
        assert reply["ok"], reply
        execution.venue_kill["binance"] = False  # the venue did not confirm the cancels

        async def broken(*args: Any, **kw: Any) -> None:
            raise RuntimeError("a snapshot the engine cannot read")

        tries = 0

        async def kill_venues(*args: Any, **kw: Any) -> None:
            nonlocal tries
            tries += 1

        monkeypatch.setattr(execution, "reconcile", broken)
        monkeypatch.setattr(execution, "_kill_venues", kill_venues)
        await engine.run(duration_s=0.3)
        assert "venue watch" in engine.blocked_reason, engine.blocked_reason
        assert tries >= 1


async def test_the_reason_a_failed_venue_watch_blocks_shows_no_secret(
    monkeypatch: Any, tmp_path: Path
) -> None:
    """The blocked reason of a failed venue poll or watch was the error's repr, unmasked: an
    error that echoes a signed request (the key in its URL) put the API key in the snapshot,
    the journal, every view and the alerts. It now goes through the venues' redactors, on
    one line."""
    venue_env(monkeypatch)
    monkeypatch.setattr(venue_execution, "VENUE_WATCH_S", 0.02)
    monkeypatch.setattr(venue_execution, "RECONCILE_EVERY_S", 0.0)
    async with loopback_engine(tmp_path, auto_fill=False) as engine:
        execution: Any = engine.execution

        async def broken(*args: Any, **kw: Any) -> None:
            raise RuntimeError(
                f"GET https://testnet.example/api/v3/order?apiKey={KEYS['apiKey']}\nunreadable"
            )

        monkeypatch.setattr(execution, "reconcile", broken)
        await engine.run(duration_s=0.2)
        reason = engine.blocked_reason
        assert "venue watch failed (RuntimeError: GET https://" in reason, reason
        assert KEYS["apiKey"] not in reason and "\n" not in reason and "\\n" not in reason


async def test_a_kill_flatten_the_venue_keeps_refusing_is_sent_again_less_and_less_often(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """review-lv sends a kill's flatten the venue refused again 5 s on, and again 5 s after
    each refusal: through a rate-limit ban (up to an hour for a 418, every new order refused at
    once) or a venue that refuses the close for good, a refused order every 5 s (720 an hour,
    each journaled, alerted and counted by the reject breaker, each a request that prolongs a
    ban). The waits now double from 5 s up to a minute."""
    h = await start(harnesses, data_dir, scripted_config(data_dir))
    await h.signal("alpha", BTC, buy(), 60_000.0)
    await h.feed(BTC, 60_000.0)
    assert h.core.portfolio.positions[BTC].qty > 0
    paper = h.engine.execution.paper
    refused_at: list[int] = []

    def refuse(order: Order, now: int) -> list[OrderUpdate]:
        refused_at.append(h.t)
        order.move_to(OrderStatus.REJECTED, now, "venue refused: rate limit")
        return [OrderUpdate(order, now)]

    paper.submit = refuse
    reply = await h.engine.command("kill", {"level": "flatten", "reason": "get out"})
    assert reply["ok"], reply
    for _ in range(200):
        await h.feed(BTC, 60_000.0)
    gaps = [(b - a) // S for a, b in itertools.pairwise(refused_at)]
    assert gaps[:5] == [5, 10, 20, 40, 60], gaps
    assert set(gaps[4:]) == {60}, gaps
    assert h.core.portfolio.positions[BTC].qty > 0  # (never sent: still due)
