"""Review reviewexits2: the protective exits and limit orders attacked again, as a trader whose
money depends on the stop. Each test below failed before its fix.

1. A price exactly at a level did not fire it. The level is computed in floating point (a
   short's 10% stop from 50,000 is 55,000.000000000007, a long's 1% stop from 107 is
   105.92999999999999), so a mid of exactly 55,000.00, the price the exit's own reason and
   the Positions pane show ("stop-loss at 55,000.00"), or a bar whose low is exactly 105.93,
   left the position open; about one level in five on a cent grid rounds the wrong way. A
   price equal to a level up to float rounding now counts as at it (engine/exits.py
   LEVEL_EPS), on quotes and bars alike (the backtest's fast path uses the same check).

Attacks that held (one line each):
"""

from __future__ import annotations

import os
from decimal import Decimal

from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.exits import ExitKind, ExitRules, ExitState, check_bar, check_price
from engine.types import NS_PER_SECOND
from tests.test_exits import SYM, Harness, make_core

EXAMPLES = int(os.environ.get("COCKPIT_REVIEWEXITS2_EXAMPLES", "200"))
T0 = 1_700_000_000 * NS_PER_SECOND


# ------------------------------------------------------------------ 1. a price at the level


def test_a_quote_exactly_at_a_shorts_stop_fires_it() -> None:
    h = Harness(make_core({"stop_loss_pct": 10.0}, short=True))
    for _ in range(3):
        h.quote(50_000.0, half_spread=0.0)
    assert h.position < 0 and h.fills()[-1].price == 50_000.0
    h.quote(54_999.99, half_spread=0.0)  # a cent inside: nothing
    assert h.exit_decisions() == []
    h.quote(55_000.0, half_spread=0.0)  # at the stop the reason names
    (exit_,) = h.exit_decisions()
    assert exit_.rule == "stop_loss" and exit_.reason.startswith("stop-loss at 55,000.00:")


def test_a_quote_exactly_at_a_longs_target_takes_it() -> None:
    h = Harness(make_core({"take_profit_pct": 10.0}))
    for _ in range(3):
        h.quote(50_000.0, half_spread=0.0)
    assert h.position > 0
    h.quote(54_999.99, half_spread=0.0)
    assert h.exit_decisions() == []
    h.quote(55_000.0, half_spread=0.0)
    (exit_,) = h.exit_decisions()
    assert exit_.rule == "take_profit"


def test_a_bar_whose_low_is_exactly_the_stop_fills_it_at_the_stop() -> None:
    h = Harness(make_core({"stop_loss_pct": 1.0}))
    h.bar(107.0, 107.0, 107.0, 107.0)  # the entry decision
    h.bar(107.0, 107.0, 107.0, 107.0)  # ... fills at 107
    assert h.position == 1.0 and h.fills()[-1].price == 107.0
    h.bar(107.0, 107.0, 105.94, 106.5)  # a cent short of the stop: nothing
    assert h.exit_decisions() == []
    h.bar(107.0, 107.0, 105.93, 106.5)  # touches 105.93, the stop
    (exit_,) = h.exit_decisions()
    assert exit_.rule == "stop_loss" and "105.93" in exit_.reason
    assert h.position == 0.0 and abs(h.fills()[-1].price - 105.93) < 1e-9


def _rules(stop: float | None, target: float | None) -> ExitRules:
    return ExitRules(stop, target, None, 14, None, 60)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    cents=st.integers(min_value=1_00, max_value=10_000_000_00),
    tenths=st.integers(min_value=1, max_value=500),
    side=st.sampled_from([1, -1]),
)
@example(cents=50_000_00, tenths=100, side=-1)
@example(cents=107_00, tenths=10, side=1)
def test_a_price_at_the_decimal_level_fires_and_one_tick_inside_does_not(
    cents: int, tenths: int, side: int
) -> None:
    """Entry on the cent grid, the percentage on a tenth: the decimal level a person computes
    (and the reason prints), taken to the nearest double, fires on a quote and on a bar; a
    price one tick (0.01) inside the level does not."""
    entry = cents / 100
    pct = tenths / 10
    if side > 0 and pct >= 100:
        return
    for kind, sign in ((ExitKind.STOP_LOSS, -side), (ExitKind.TAKE_PROFIT, side)):
        exact = Decimal(cents) / 100 * (1 + Decimal(sign) * Decimal(tenths) / 1000)
        if exact <= Decimal("0.02"):
            continue
        level = float(exact)
        rules = _rules(pct, None) if kind is ExitKind.STOP_LOSS else _rules(None, pct)
        st_ = ExitState("s1", SYM, side, entry, T0, "", entry)
        trig = check_price(rules, st_, level)
        assert trig is not None and trig.kind is kind, (entry, pct, side, kind, level)
        inside = level + 0.01 * sign * -1  # one tick back towards the entry
        assert check_price(rules, st_, inside) is None, (entry, pct, side, kind, inside)
        # A bar that only touches the level, from the entry's side: fires at the level.
        lo, hi = (level, entry) if sign < 0 else (entry, level)
        bar = check_bar(rules, st_, entry, hi, lo)
        assert bar is not None and bar.kind is kind and not bar.gapped
        assert abs(bar.price - level) <= abs(level) * 1e-12
