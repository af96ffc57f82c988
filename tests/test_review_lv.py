"""Adversarial checks of the testnet/live venue path (ccxt) with today's additions (review-lv).

Each test drives ccxt's real exchange classes against recorded bodies
(``tests.test_venues_support``), never the network, and fails on the code before its fix.

Attacks that held (no test here, or covered by the earlier reviews' tests):

- a cancel answered "order not found" because the order had filled: the broker looks it up by
  client id, the order waits one consistency window for its trades, and the poll books them (the
  fill then has the kill's or the lowered limit's judgement made again in the core);
- the same order cancelled twice (a kill's cancel, then a lowered limit's): the second finds
  the order untracked and sends nothing; one answered "not found" is looked up, not retried;
- 429/418 with Retry-After: every request waits it out; cancels (the kill's cancel-all, the
  re-asked cancels, a native stop's move) share the cancel reserve and are serialized under the
  command lock with the 5 s native check, which only runs on a quote: the kill latches at once
  without the lock, and the venue kill's cancel-all goes before any flatten order;
- the reduce-only buy's cash exemption on a spot venue: it needs a short, which a spot venue's
  engine cannot hold (a sell beyond the holding is denied, allow_short on spot is a config
  error), so a spot buy is always checked for cash; where a short exists the exemption is
  bounded by check_reduce_only (open covering orders count), never more than the short;
- a trade the venue reports after answering the cancel "canceled, 0 filled": not booked on
  the finished order; the periodic reconciliation finds the unjournaled fill and halts the
  venue for a person (fail closed), as for any trade of an unknown order;
- a venue stop whose placement a rate limit refused: the engine watches its levels itself
  until it is placed again a minute on (the exit fires engine-side meanwhile);
- a raced fill of a cancelled limit on a real venue: booked by the poll, then the judgement
  made again (cancel_adding/cancel_beyond_limits, raced) asks nothing twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import ccxt

import engine.core as engine_core
import engine.venues.execution as venue_execution
from engine.events import OrderUpdated
from engine.types import OrderStatus, OrderUpdate
from tests.test_venue_runtime import SYM, TradingVenue, make_testnet_config, run_until, venue_engine
from tests.test_venues_support import (
    Call,
    FakeClock,
    R,
    error_answer,
    make_broker,
    new_order,
    venue_env,
)


@contextlib.asynccontextmanager
async def loopback_engine(tmp_path: Path, *, auto_fill: bool = True) -> AsyncIterator[Any]:
    """A testnet engine on binance's real ccxt class against the loopback venue, started; both
    stopped after (the venue's environment and watch intervals are the test's to set first)."""
    server = TradingVenue(auto_fill=auto_fill)
    await server.start()
    data_dir = tmp_path / "data"
    engine = venue_engine(make_testnet_config(data_dir), data_dir, server)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()
        await server.stop()


def _raise(exc: BaseException) -> Any:
    def answer(call: Call) -> Any:
        raise exc

    return answer


def _deletes(http: Any) -> int:
    return len([c for c in http.calls if c.method == "DELETE"])


async def _cancel_unanswered(monkeypatch: Any, failure: list[R]) -> tuple[Any, Any, FakeClock]:
    clock = FakeClock()
    broker, http = make_broker(monkeypatch, "binance", clock=clock)
    await broker.start()
    await broker.submit(new_order("binance"))
    http.add(*failure)
    assert await broker.cancel("ck-1-1", "kill switch (entries)") == []
    for route in failure:
        http.routes.remove(route)
    return broker, http, clock


async def test_a_cancel_that_timed_out_is_asked_again_while_the_order_rests(
    monkeypatch: Any,
) -> None:
    """A cancel whose request timed out through its retries (and the look-up too) left the
    order resting at the venue for good: the polls saw it open and asked nothing, so an entry
    a kill switch at ``entries`` cancelled could still fill and grow the position."""
    timeout = ccxt.RequestTimeout("binance DELETE timed out")
    broker, http, clock = await _cancel_unanswered(
        monkeypatch,
        [
            R("DELETE", r"/api/v3/order\?", _raise(timeout)),
            R("GET", r"/api/v3/order\?", _raise(timeout)),
        ],
    )
    assert any("asked again" in p for p in broker.problems)
    before = _deletes(http)
    clock.advance(5)
    out = await broker.poll(retries=0)
    assert _deletes(http) == before + 1
    ends = [u.order for u in out if type(u) is OrderUpdate]
    assert [o.status for o in ends] == [OrderStatus.CANCELED]
    assert ends[0].reason == "kill switch (entries)"
    clock.advance(5)
    assert await broker.poll(retries=0) == []
    assert _deletes(http) == before + 1  # done: never asked a third time
    await broker.close()


async def test_a_cancel_rate_limited_past_its_retries_is_asked_again_at_the_next_poll(
    monkeypatch: Any,
) -> None:
    limited = R(
        "DELETE",
        r"/api/v3/order\?",
        error_answer("binance", "error_rate_limit", 429),
        headers={"Retry-After": "2"},
    )
    broker, _, clock = await _cancel_unanswered(monkeypatch, [limited])
    clock.advance(5)
    out = await broker.poll(retries=0)
    assert [u.order.status for u in out if type(u) is OrderUpdate] == [OrderStatus.CANCELED]
    await broker.close()


async def test_a_cancel_the_venue_answered_is_not_asked_again(monkeypatch: Any) -> None:
    clock = FakeClock()
    broker, http = make_broker(monkeypatch, "binance", clock=clock)
    await broker.start()
    await broker.submit(new_order("binance"))
    out = await broker.cancel("ck-1-1", "kill")
    assert [u.order.status for u in out] == [OrderStatus.CANCELED]
    before = _deletes(http)
    await broker.poll(retries=0)
    assert _deletes(http) == before
    await broker.close()


async def test_a_venue_poll_that_failed_blocks_the_engine_instead_of_dying_unseen(
    monkeypatch: Any, tmp_path: Path
) -> None:
    """The venue poll (fills, order states, the cancels asked again) ran as a background task:
    an error while its answer was handled ended the task, unseen, and the engine kept trading
    with no poll at all (fills never booked, positions and cash wrong, lost cancels never asked
    again). Now the engine is BLOCKED, said with the reason, as when its main loop stops."""
    venue_env(monkeypatch)
    async with loopback_engine(tmp_path, auto_fill=False) as engine:
        await run_until(engine, lambda: bool(engine.core and engine.core.open_orders))
        broker = engine.execution.brokers["binance"]  # type: ignore[attr-defined]
        real_poll = broker.poll
        polls = 0

        async def garbled(retries: int | None = None) -> list[Any]:
            nonlocal polls
            polls += 1
            if polls == 1:
                return [object()]  # an answer the engine cannot apply
            return list(await real_poll(retries=retries))

        monkeypatch.setattr(broker, "poll", garbled)
        await run_until(engine, lambda: polls >= 3)  # the poll goes on
        assert "venue poll" in engine.blocked_reason, engine.blocked_reason
        assert engine.core is not None and engine.core.blocked_reason


async def test_a_venue_watch_that_failed_blocks_the_engine(
    monkeypatch: Any, tmp_path: Path
) -> None:
    """The venue watch (a kill's cancels tried again, reconciliations, clock checks) ended,
    unseen, on its first error: a kill whose cancels a venue had not confirmed was never
    tried there again. Now the engine is BLOCKED with the reason, and the watch goes on."""
    venue_env(monkeypatch)
    monkeypatch.setattr(venue_execution, "VENUE_WATCH_S", 0.05)
    monkeypatch.setattr(venue_execution, "RECONCILE_EVERY_S", 0.0)
    async with loopback_engine(tmp_path, auto_fill=False) as engine:
        execution = engine.execution
        looks = 0

        async def broken(*args: Any, **kw: Any) -> None:
            nonlocal looks
            looks += 1
            raise RuntimeError("a snapshot the engine cannot read")

        monkeypatch.setattr(execution, "reconcile", broken)
        await engine.run(duration_s=0.5)
        assert looks >= 2  # the watch goes on
        assert "venue watch" in engine.blocked_reason, engine.blocked_reason


async def test_a_kill_flatten_the_venue_rate_limited_goes_out_once_the_wait_is_over(
    monkeypatch: Any, tmp_path: Path
) -> None:
    """A kill at ``flatten`` while the venue's Retry-After still runs (the native-stop checks
    and the re-asked cancels spent the budget): the broker refuses the flatten at once, as it
    refuses every new order under a penalty. Nothing made it due again (only a denial for a
    missing quote, a venue halt or an order of unknown fate did): the position stayed open
    under a kill that reads "flatten". It goes out on a quote once the wait is over."""
    venue_env(monkeypatch)
    monkeypatch.setattr(engine_core, "FLATTEN_REJECTED_RETRY_NS", 300_000_000)  # (short runs)
    server = TradingVenue()
    await server.start()
    data_dir = tmp_path / "data"
    engine = venue_engine(make_testnet_config(data_dir), data_dir, server)

    def sells() -> int:
        return sum(1 for o in server.orders.values() if o.side.upper() == "SELL")

    await engine.start()
    try:
        await run_until(engine, lambda: _held(engine) > 0)
        broker = engine.execution.brokers["binance"]  # type: ignore[attr-defined]
        real_submit = broker.submit
        penalised: list[str] = []

        async def submit(order: Any, gate: Any = None) -> Any:
            if order.reduce_only and not penalised:  # the venue's 429 came just before it
                penalised.append(order.client_order_id)
                broker.gate.blocked_until = broker.gate._clock() + 0.2
            return await real_submit(order, gate)

        monkeypatch.setattr(broker, "submit", submit)
        reply = await engine.command("kill", {"level": "flatten", "reason": "get out"})
        assert reply["ok"], reply
        assert engine.core is not None and penalised
        assert sells() == 0  # refused unsent: the venue's wait still ran
        refused = [
            e.order
            for e in engine.core.trace
            if type(e) is OrderUpdated and e.order.client_order_id == penalised[0]
        ]
        assert refused and "rate limit" in refused[-1].reason, refused
        await run_until(engine, lambda: sells() == 1)
        await run_until(engine, lambda: _held(engine) == 0)
    finally:
        await engine.stop()
        await server.stop()


def _held(engine: Any) -> float:
    core = engine.core
    pos = core.portfolio.positions.get(SYM) if core is not None else None
    return pos.qty if pos is not None else 0.0


async def test_a_cancel_answered_unknown_order_while_the_order_still_works_is_asked_again(
    monkeypatch: Any,
) -> None:
    """binance answers a cancel "Unknown order sent" while its look-up still lists the order
    working (its matching engine and its order book disagree for a moment): the cancel was
    taken as done with, and the order kept working for good."""
    broker, http, clock = await _cancel_unanswered(
        monkeypatch,
        [R("DELETE", r"/api/v3/order\?", error_answer("binance", "error_order_not_found"))],
    )
    before = _deletes(http)
    clock.advance(5)
    out = await broker.poll(retries=0)
    assert _deletes(http) == before + 1
    assert [u.order.status for u in out if type(u) is OrderUpdate] == [OrderStatus.CANCELED]
    await broker.close()


async def test_a_background_poll_does_not_wait_out_a_rate_limit_ban(monkeypatch: Any) -> None:
    """The background poll (``retries=0``: "never hold the engine through a venue's slow
    retries") waited out the venue's Retry-After in the request gate, under the command lock:
    after a 418 ban of ten minutes the kill switch's cancels, its reply and every approval
    waited ten minutes behind a poll. It now asks nothing while the wait runs, and polls
    again once it is over."""
    clock = FakeClock()
    broker, http = make_broker(monkeypatch, "binance", clock=clock)
    await broker.start()
    await broker.submit(new_order("binance"))
    broker.gate.penalize(600.0)
    calls, slept = len(http.calls), list(clock.slept)
    assert await broker.poll(retries=0) == []
    assert await broker.answers() is False
    assert clock.slept == slept and len(http.calls) == calls  # no wait, no request
    clock.advance(600.0)
    await broker.poll(retries=0)
    assert len(http.calls) > calls
    await broker.close()


async def test_a_cancel_asked_while_the_send_was_unknown_keeps_its_reason(
    monkeypatch: Any,
) -> None:
    """A kill's cancel of an order whose send had timed out waits for the look-up that finds
    it; the cancel then sent read only "canceled" on the order (the orders pane and the
    journal lost "kill switch (entries)")."""
    clock = FakeClock()
    broker, http = make_broker(monkeypatch, "binance", clock=clock)
    await broker.start()
    sent = R("POST", r"/api/v3/order\b", _raise(ccxt.RequestTimeout("timed out")))
    missing = R("GET", r"/api/v3/order\?", error_answer("binance", "error_order_not_found"))
    http.add(sent, missing)
    await broker.submit(new_order("binance"))
    http.add(R("DELETE", r"/api/v3/order\?", error_answer("binance", "error_order_not_found")))
    assert await broker.cancel("ck-1-1", "kill switch (entries)") == []
    http.routes = [r for r in http.routes if r not in (sent, missing)][1:]  # (the DELETE too)
    clock.advance(2)
    out = await broker.poll(retries=0)
    ends = [u.order for u in out if type(u) is OrderUpdate and u.order.status.is_terminal]
    assert [(o.status, o.reason) for o in ends] == [(OrderStatus.CANCELED, "kill switch (entries)")]
    await broker.close()
