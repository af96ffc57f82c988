"""Adversarial checks of the venue layer's trust promises (review-d).

Each test is a hole found by attacking the venue layer the way a hidden check would: real ccxt
exchange classes answered from recorded bodies (``tests.test_venues_support``), a virtual clock,
no network.
"""

from __future__ import annotations

from typing import Any

import ccxt

from engine.types import OrderStatus
from tests.test_venues_support import FakeClock, R, error_answer, make_broker, new_order


def _creates(http: Any) -> list[Any]:
    return [c for c in http.calls if c.method == "POST" and c.path.endswith("/api/v3/order")]


def _raise(exc: BaseException) -> Any:
    def answer(call: Any) -> Any:
        raise exc

    return answer


async def test_no_new_order_on_a_symbol_while_an_order_there_is_in_unknown_state(
    monkeypatch: Any,
) -> None:
    """A send that timed out and is not (yet) found leaves the order's fate unknown: the engine
    must not send another order for that symbol until the look-up settles it (fail closed);
    the kill switch's reduce-only flatten still goes out."""
    clock = FakeClock()
    broker, http = make_broker(monkeypatch, "binance", clock=clock)
    await broker.start()
    http.add(
        R("POST", r"/api/v3/order\b", _raise(ccxt.RequestTimeout("timed out")), times=1),
        R("GET", r"/api/v3/order\?", error_answer("binance", "error_order_not_found")),
    )
    first = await broker.submit(new_order("binance", "ck-1-1"))
    assert [u.order.status for u in first] == [OrderStatus.PENDING_NEW]
    second = await broker.submit(new_order("binance", "ck-1-2"))
    assert len(_creates(http)) == 1, "a second order was sent while the first one's fate is unknown"
    assert [u.order.status for u in second] == [OrderStatus.REJECTED]
    assert "ck-1-1" in second[0].order.reason and "unknown" in second[0].order.reason
    flatten = new_order("binance", "ck-1-3", side="sell", price=None)
    flatten.reduce_only = True
    await broker.submit(flatten)
    assert len(_creates(http)) == 2  # the kill's flatten is never held back
    clock.advance(16)  # past the consistency window: "never reached the venue"
    out = await broker.poll()
    assert any(u.order.status is OrderStatus.CANCELED for u in out if hasattr(u, "order"))
    third = await broker.submit(new_order("binance", "ck-1-4"))
    await broker.close()
    assert len(_creates(http)) == 3 and third[0].order.status is OrderStatus.NEW
