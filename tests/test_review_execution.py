"""Second-round adversarial checks of the venue execution path (review-h).

Each test is a hole found by attacking the order and fill path where a mistake costs real money:
ccxt's real exchange classes answered from recorded bodies (``tests.test_venues_support``), a
virtual clock, no network. Each fails on the code before its fix.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine.types import Fill, OrderStatus, OrderUpdate, Side
from engine.venues.reconcile import expected_balances
from tests.test_venues_support import FakeClock, R, fixture, make_broker, new_order


def _fills(out: list[Any]) -> list[Fill]:
    return [x for x in out if isinstance(x, Fill)]


def _assets(symbol: str) -> tuple[str, str]:
    base, _, quote = symbol.partition("/")
    return base, quote


@pytest.mark.parametrize("side", ["buy", "sell"])
async def test_a_fee_taken_in_the_base_asset_comes_off_the_position(
    monkeypatch: Any, side: str
) -> None:
    """Binance takes a buy's commission in the asset bought (the recorded answer: 0.000003 BTC
    on 0.003 BTC): the account holds 0.002997 BTC. Booking 0.003 made the engine's position
    larger than the account's, so the exit and the kill's flatten sold 0.003 and were refused
    ("insufficient balance"), leaving the position open. The booked position must move by what
    the account's base balance moved, and cash by exactly the trade's notional."""
    clock = FakeClock()
    broker, http = make_broker(monkeypatch, "binance", clock=clock)
    await broker.start()
    answer = fixture("binance", "order_new_market_filled")  # client id ck-1-2, BTC commission
    http.add(R("POST", r"/api/v3/order\b", {**answer, "side": side.upper()}))
    out = await broker.submit(new_order("binance", "ck-1-2", qty=0.003, price=None, side=side))
    await broker.close()
    fills = _fills(out)
    assert len(fills) == 2
    sign = Side(side).sign
    commission = 0.000002 + 0.000001
    moved = sum(f.qty for f in fills) * sign
    assert moved == pytest.approx(sign * 0.003 - commission, abs=1e-12)
    notional = 0.002 * 61686.0 + 0.001 * 61686.01
    cash = sum(-sign * f.qty * f.price - f.fee for f in fills)
    assert cash == pytest.approx(-sign * notional, abs=1e-9)  # the fee was paid in BTC
    final = [x for x in out if isinstance(x, OrderUpdate)][-1].order
    assert final.status is OrderStatus.FILLED and final.filled_qty == pytest.approx(0.003)
    # The balances the journal expects are the account's: no false balance difference.
    baseline = {"BTC": 1.0, "USDT": 10_000.0}
    expected = expected_balances(baseline, fills, _assets)
    assert expected["BTC"] == pytest.approx(1.0 + sign * 0.003 - commission, abs=1e-12)
    assert expected["USDT"] == pytest.approx(10_000.0 - sign * notional, abs=1e-9)

