"""Review reviewsession3: the changes merged on 8 Dec 2026, taken together.

Attacks that held:
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.types import Action, LimitSpec, Signal
from tests.test_safety_engine import (
    BTC,
    WHOLE_BTC,
    Harness,
    buy,
    denied_codes,
    harnesses,  # noqa: F401  (the fixture)
    sell,
    start,
)


def limit_exit(price: float) -> Signal:
    return Signal(
        Action.SELL, "scripted", "take profit", 1.0, reduce_only=True, limit=LimitSpec(price)
    )


@pytest.mark.parametrize("pause", ["operator", "breaker"])
async def test_a_paused_strategys_sell_beside_its_resting_exit_is_not_its_exit(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    pause: str,
) -> None:
    """Long 1 with its take-profit limit (sell 1) resting, the paused strategy's market sell of
    1 was judged on the position alone ("closes its own position") and went out: filled, then
    the resting limit filled too, and the paused strategy was short 1, an entry its pause
    should have stopped. Its own orders on the closing side count now: the sell is denied
    (STRATEGY_PAUSED, BREAKER_TRIPPED), the exit limit keeps working, the position closes to
    flat and no further."""
    breakers = {"orders_per_minute": 1} if pause == "breaker" else {}
    h = await start(harnesses, data_dir, qty=1.0, safety={"breakers": breakers}, **WHOLE_BTC)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    await h.feed(BTC, 60_000.0)  # fills at the ask
    assert h.core.portfolio.positions[BTC].qty == 1.0
    await h.signal("alpha", BTC, limit_exit(60_500.0), 60_000.0)  # rests (a 2nd order: trips)
    assert [o.qty for o in h.core.open_orders.values()] == [1.0]
    if pause == "operator":
        reply = await h.engine.command("pause", {"strategy": "alpha", "reason": "watching"})
        assert reply["ok"], reply
        code = "STRATEGY_PAUSED"
    else:
        assert h.strategy_view("alpha")["paused"]
        code = "BREAKER_TRIPPED"
    assert [o.qty for o in h.core.open_orders.values()] == [1.0]  # its exit limit stays
    sent = len(h.sent)
    await h.signal("alpha", BTC, sell(), 60_000.0)
    assert code in denied_codes(h.intents()[-1]), h.intents()[-1]
    assert len(h.sent) == sent
    await h.feed(BTC, 60_000.0)
    await h.feed(BTC, 60_600.0)  # the limit fills
    await h.feed(BTC, 60_600.0)
    assert h.core.portfolio.positions[BTC].qty == 0.0
    assert not h.core.open_orders
