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
  error), so a spot buy is always checked for cash.
"""

from __future__ import annotations

from typing import Any

import ccxt

from engine.types import OrderStatus, OrderUpdate
from tests.test_venues_support import Call, FakeClock, R, error_answer, make_broker, new_order


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
