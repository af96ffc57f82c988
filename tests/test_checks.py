"""Pre-trade checks: each limit just inside (passes) and just outside (denied, right code).

Defaults used throughout: equity 100,000; BTC/USDT mid 50,000 (bid 49,999 / ask 50,001);
lot 0.00001; tick 0.01; RiskLimits() defaults: max order notional 10,000, max position 10% of
equity (10,000), gross 50% (50,000), collar 1%, stale after 5 s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.checks import (
    CHECKS,
    RiskContext,
    all_passed,
    ceil_to_step,
    check_cash,
    check_gross_exposure,
    check_max_open_positions,
    check_max_order_notional,
    check_max_position,
    check_price_collar,
    check_reduce_only,
    check_stale_quote,
    check_throttle,
    floor_to_step,
    round_to_grid,
    run_checks,
)
from engine.config import RiskLimits, ThrottleConfig
from engine.throttle import OrderThrottle
from engine.types import (
    NS_PER_SECOND,
    Instrument,
    OrderIntent,
    OrderType,
    Quote,
    Side,
    Verdict,
)

NOW = 1_700_000_000 * NS_PER_SECOND
SYM = "BTC/USDT"
LIMITS = RiskLimits()
LOT = 0.00001


def make_instrument(**kw: Any) -> Instrument:
    args: dict[str, Any] = {
        "symbol": SYM,
        "venue": "sim",
        "tick_size": 0.01,
        "lot_size": LOT,
        "min_qty": 0.0,
        "min_notional": 5.0,
    }
    args.update(kw)
    return Instrument(**args)


def make_quote(bid: float = 49_999.0, ask: float = 50_001.0, ts: int = NOW) -> Quote:
    return Quote(SYM, bid, ask, 1.0, 1.0, ts, ts)


def make_ctx(limits: RiskLimits = LIMITS, **kw: Any) -> RiskContext:
    args: dict[str, Any] = {
        "now": NOW,
        "equity": 100_000.0,
        "cash": 100_000.0,
        "positions": {},
        "marks": {SYM: 50_000.0},
        "open_order_qty": {},
        "quote": make_quote(),
        "instrument": make_instrument(),
        "throttle": OrderThrottle(limits.strategy_throttle, limits.global_throttle),
    }
    args.update(kw)
    return RiskContext(**args)


def make_intent(
    qty: float = 0.1,
    side: Side = Side.BUY,
    limit: float | None = None,
    ref: float = 50_000.0,
    reduce_only: bool = False,
    strategy: str = "s1",
    symbol: str = SYM,
) -> OrderIntent:
    return OrderIntent(
        intent_id="i1",
        decision_id="d1",
        strategy_id=strategy,
        symbol=symbol,
        venue="sim",
        side=side,
        qty=qty,
        order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
        ref_price=ref,
        ts=NOW,
        limit_price=limit,
        reduce_only=reduce_only,
    )


def assert_ok(v: Verdict) -> None:
    assert v.ok, v
    assert v.code == "OK"


def assert_denied(v: Verdict, code: str) -> None:
    assert not v.ok, v
    assert v.code == code, v


# ---------------------------------------------------------------------------------- grid


@pytest.mark.parametrize(
    ("x", "step", "down", "up"),
    [
        (0.3, 0.1, 0.3, 0.3),  # 0.3 / 0.1 = 2.9999999999999996 in floats
        (0.7, 0.1, 0.7, 0.7),
        (0.7 - 0.4, 0.1, 0.3, 0.3),  # 0.29999999999999993
        (0.1 + 0.2, 0.1, 0.3, 0.3),  # 0.30000000000000004
        (1.9999999998835847, 1.0, 1.0, 2.0),  # genuinely below 2: not float noise
        (123_456.78901, 0.00001, 123_456.78901, 123_456.78901),  # 1.2e10 steps
        (0.123456, 0.001, 0.123, 0.124),
        (1.0, 0.00001, 1.0, 1.0),
        (0.29, 0.1, 0.2, 0.3),
        (1.015, 0.01, 1.01, 1.02),  # 1.015 is 1.01499999... in binary
        (100.25, 0.25, 100.25, 100.25),
        (12_345.678, 0.5, 12_345.5, 12_346.0),
    ],
)
def test_step_rounding_is_robust_to_float_error(
    x: float, step: float, down: float, up: float
) -> None:
    assert floor_to_step(x, step) == down
    assert ceil_to_step(x, step) == up


def test_grid_rounds_qty_down_to_lot() -> None:
    intent, v = round_to_grid(make_intent(qty=0.123456789), make_instrument())
    assert_ok(v)
    assert intent.qty == 0.12345


def test_grid_qty_03_over_01_is_three_lots() -> None:
    intent, v = round_to_grid(make_intent(qty=0.3, ref=100.0), make_instrument(lot_size=0.1))
    assert_ok(v)
    assert intent.qty == 0.3


def test_grid_limit_never_more_aggressive() -> None:
    buy, v1 = round_to_grid(make_intent(limit=50_000.019), make_instrument())
    sell, v2 = round_to_grid(make_intent(side=Side.SELL, limit=50_000.011), make_instrument())
    assert_ok(v1)
    assert_ok(v2)
    assert buy.limit_price == 50_000.01  # buy rounds down
    assert sell.limit_price == 50_000.02  # sell rounds up


def test_grid_unchanged_intent_is_returned_as_is() -> None:
    original = make_intent(qty=0.1, limit=50_000.01)
    intent, v = round_to_grid(original, make_instrument())
    assert_ok(v)
    assert intent is original


def test_grid_qty_below_one_lot_denied() -> None:
    intent, v = round_to_grid(make_intent(qty=LOT * 0.99), make_instrument())
    assert_denied(v, "BELOW_MIN_QTY")
    assert intent.qty == 0.0
    _, v = round_to_grid(make_intent(qty=LOT, ref=1e6), make_instrument())
    assert_ok(v)


def test_grid_min_qty_edge() -> None:
    inst = make_instrument(min_qty=0.001)
    _, v = round_to_grid(make_intent(qty=0.001), inst)
    assert_ok(v)
    _, v = round_to_grid(make_intent(qty=0.001 - LOT), inst)
    assert_denied(v, "BELOW_MIN_QTY")


def test_grid_min_notional_edge() -> None:
    inst = make_instrument(min_notional=5.0)
    # 0.0001 * 50,000 = 5.00 exactly: passes; one lot less is 4.50: denied.
    _, v = round_to_grid(make_intent(qty=0.0001), inst)
    assert_ok(v)
    _, v = round_to_grid(make_intent(qty=0.0001 - LOT), inst)
    assert_denied(v, "BELOW_MIN_NOTIONAL")
    assert "4.50" in v.message and "5.00" in v.message


def test_grid_min_notional_uses_rounded_values() -> None:
    # 0.000109 rounds to 0.0001 -> 5.00: passes only because rounding is applied first.
    intent, v = round_to_grid(make_intent(qty=0.000109), make_instrument(min_notional=5.0))
    assert_ok(v)
    assert intent.qty == 0.0001


@pytest.mark.parametrize("qty", [0.0, -1.0, math.nan, math.inf])
def test_grid_invalid_qty(qty: float) -> None:
    _, v = round_to_grid(make_intent(qty=qty), make_instrument())
    assert_denied(v, "INVALID_QTY")


@pytest.mark.parametrize(("ref", "limit"), [(0.0, None), (math.nan, None), (50_000.0, -1.0)])
def test_grid_invalid_price(ref: float, limit: float | None) -> None:
    _, v = round_to_grid(make_intent(ref=ref, limit=limit), make_instrument())
    assert_denied(v, "INVALID_PRICE")


def test_grid_buy_limit_rounding_to_zero_is_invalid() -> None:
    _, v = round_to_grid(make_intent(limit=0.004, ref=0.004, qty=1e6), make_instrument())
    assert_denied(v, "INVALID_PRICE")


def test_grid_instrument_mismatch() -> None:
    _, v = round_to_grid(make_intent(symbol="ETH/USDT"), make_instrument())
    assert_denied(v, "INSTRUMENT_MISMATCH")


# ---------------------------------------------------------------------------------- stale


def test_stale_exactly_at_limit_passes_one_ns_more_denied() -> None:
    age = round(LIMITS.stale_quote_s * NS_PER_SECOND)
    assert_ok(check_stale_quote(make_intent(), make_ctx(quote=make_quote(ts=NOW - age)), LIMITS))
    v = check_stale_quote(make_intent(), make_ctx(quote=make_quote(ts=NOW - age - 1)), LIMITS)
    assert_denied(v, "STALE_QUOTE")
    assert "5.000000001s" in v.message


def test_no_quote() -> None:
    assert_denied(check_stale_quote(make_intent(), make_ctx(quote=None), LIMITS), "NO_QUOTE")
    eth = Quote("ETH/USDT", 1.0, 1.0, 1.0, 1.0, NOW, NOW)
    assert_denied(check_stale_quote(make_intent(), make_ctx(quote=eth), LIMITS), "NO_QUOTE")


# ---------------------------------------------------------------------------------- collar


@pytest.mark.parametrize("side", [Side.BUY, Side.SELL])
def test_collar_exactly_at_pct_passes_beyond_denied(side: Side) -> None:
    ctx = make_ctx()  # mid 50,000, 1% = 500
    for price in (50_500.0, 49_500.0):
        assert_ok(check_price_collar(make_intent(side=side, limit=price), ctx, LIMITS))
    for price in (50_500.01, 49_499.99):
        v = check_price_collar(make_intent(side=side, limit=price), ctx, LIMITS)
        assert_denied(v, "PRICE_COLLAR")


def test_collar_market_order_uses_ref_price() -> None:
    ctx = make_ctx()
    assert_ok(check_price_collar(make_intent(ref=50_500.0), ctx, LIMITS))
    v = check_price_collar(make_intent(ref=50_600.0), ctx, LIMITS)
    assert_denied(v, "PRICE_COLLAR")
    assert "1.200%" in v.message and "reference price" in v.message


def test_collar_without_quote_fails_closed() -> None:
    assert_denied(check_price_collar(make_intent(), make_ctx(quote=None), LIMITS), "NO_QUOTE")


# ---------------------------------------------------------------------------------- notional


def test_notional_at_limit_passes_one_lot_over_denied() -> None:
    ctx = make_ctx()
    assert_ok(check_max_order_notional(make_intent(qty=0.2), ctx, LIMITS))  # 10,000.00
    v = check_max_order_notional(make_intent(qty=0.2 + LOT), ctx, LIMITS)  # 10,000.50
    assert_denied(v, "MAX_ORDER_NOTIONAL")
    assert v.message == "notional 10,000.50 USDT exceeds max order notional 10,000.00"


def test_notional_uses_limit_price() -> None:
    ctx = make_ctx()
    v = check_max_order_notional(make_intent(qty=0.2, limit=50_000.01), ctx, LIMITS)
    assert_denied(v, "MAX_ORDER_NOTIONAL")


# ---------------------------------------------------------------------------------- position


@pytest.mark.parametrize("side", [Side.BUY, Side.SELL])
def test_position_at_limit_passes_one_lot_over_denied(side: Side) -> None:
    ctx = make_ctx()  # 10% of 100,000 = 10,000 = 0.2 BTC at mark 50,000
    assert_ok(check_max_position(make_intent(qty=0.2, side=side), ctx, LIMITS))
    v = check_max_position(make_intent(qty=0.2 + LOT, side=side), ctx, LIMITS)
    assert_denied(v, "MAX_POSITION")


def test_position_counts_open_orders() -> None:
    ctx = make_ctx(positions={SYM: 0.1}, open_order_qty={SYM: 0.05})
    assert_ok(check_max_position(make_intent(qty=0.05), ctx, LIMITS))
    assert_denied(check_max_position(make_intent(qty=0.05 + LOT), ctx, LIMITS), "MAX_POSITION")


def test_position_uses_mark_not_order_price() -> None:
    ctx = make_ctx(marks={SYM: 40_000.0})  # 10,000 / 40,000 = 0.25
    assert_ok(check_max_position(make_intent(qty=0.25), ctx, LIMITS))
    assert_denied(check_max_position(make_intent(qty=0.25 + LOT), ctx, LIMITS), "MAX_POSITION")


def test_position_reduce_only_shrinking_passes_even_when_oversized() -> None:
    ctx = make_ctx(positions={SYM: 1.0})  # 50,000: five times the limit
    assert_ok(
        check_max_position(make_intent(qty=0.1, side=Side.SELL, reduce_only=True), ctx, LIMITS)
    )
    assert_ok(
        check_max_position(make_intent(qty=1.0, side=Side.SELL, reduce_only=True), ctx, LIMITS)
    )


def test_position_plain_reducing_order_passes_flip_is_judged() -> None:
    ctx = make_ctx(positions={SYM: 1.0})
    assert_ok(check_max_position(make_intent(qty=0.5, side=Side.SELL), ctx, LIMITS))
    # Selling 1.2 flips to -0.2 = 10,000: at the limit, passes; one lot more is denied.
    assert_ok(check_max_position(make_intent(qty=1.2, side=Side.SELL), ctx, LIMITS))
    v = check_max_position(make_intent(qty=1.2 + LOT, side=Side.SELL), ctx, LIMITS)
    assert_denied(v, "MAX_POSITION")


def test_position_adding_to_oversized_denied() -> None:
    ctx = make_ctx(positions={SYM: 1.0})
    assert_denied(check_max_position(make_intent(qty=LOT), ctx, LIMITS), "MAX_POSITION")


def test_position_non_positive_equity_denies_any_increase() -> None:
    ctx = make_ctx(equity=0.0)
    assert_denied(check_max_position(make_intent(qty=LOT), ctx, LIMITS), "MAX_POSITION")
    ctx = make_ctx(equity=math.nan)
    assert_denied(check_max_position(make_intent(qty=LOT), ctx, LIMITS), "MAX_POSITION")


# ---------------------------------------------------------------------------------- open positions


def _held(n: int) -> dict[str, float]:
    return {f"C{i}/USDT": 1.0 for i in range(n)}


def test_open_positions_below_limit_passes_at_limit_denied() -> None:
    limit = LIMITS.max_open_positions  # 5
    ctx = make_ctx(positions=_held(limit - 1) | {"Z/USDT": 0.0})  # flat symbol does not count
    assert_ok(check_max_open_positions(make_intent(), ctx, LIMITS))
    ctx = make_ctx(positions=_held(limit))
    v = check_max_open_positions(make_intent(), ctx, LIMITS)
    assert_denied(v, "MAX_OPEN_POSITIONS")
    assert "6 open positions; max is 5" in v.message


def test_open_positions_existing_symbol_passes() -> None:
    ctx = make_ctx(positions=_held(5) | {SYM: 0.1})
    assert_ok(check_max_open_positions(make_intent(), ctx, LIMITS))


def test_open_positions_count_open_orders() -> None:
    ctx = make_ctx(positions=_held(4), open_order_qty={"X/USDT": 2.0})
    assert_denied(check_max_open_positions(make_intent(), ctx, LIMITS), "MAX_OPEN_POSITIONS")
    ctx = make_ctx(positions=_held(5), open_order_qty={SYM: 0.1})  # own pending entry
    assert_ok(check_max_open_positions(make_intent(), ctx, LIMITS))


def test_open_positions_reduce_only_passes() -> None:
    ctx = make_ctx(positions=_held(5))
    v = check_max_open_positions(make_intent(side=Side.SELL, reduce_only=True), ctx, LIMITS)
    assert_ok(v)


# ---------------------------------------------------------------------------------- gross


def test_gross_at_limit_passes_one_lot_over_denied() -> None:
    # ETH 10 * 3,000 = 30,000; limit 50% of 100,000 = 50,000; room = 20,000 = 0.4 BTC.
    ctx = make_ctx(positions={"ETH/USDT": 10.0}, marks={SYM: 50_000.0, "ETH/USDT": 3_000.0})
    assert_ok(check_gross_exposure(make_intent(qty=0.4), ctx, LIMITS))
    v = check_gross_exposure(make_intent(qty=0.4 + LOT), ctx, LIMITS)
    assert_denied(v, "MAX_GROSS_EXPOSURE")


def test_gross_counts_shorts_and_open_orders() -> None:
    # |-5| * 3,000 + 10 open SOL * 150 = 15,000 + 1,500; room = 33,500 = 0.67 BTC.
    ctx = make_ctx(
        positions={"ETH/USDT": -5.0},
        open_order_qty={"SOL/USDT": 10.0},
        marks={SYM: 50_000.0, "ETH/USDT": 3_000.0, "SOL/USDT": 150.0},
    )
    assert_ok(check_gross_exposure(make_intent(qty=0.67), ctx, LIMITS))
    v = check_gross_exposure(make_intent(qty=0.67 + LOT), ctx, LIMITS)
    assert_denied(v, "MAX_GROSS_EXPOSURE")


def test_gross_reducing_order_passes_when_over() -> None:
    ctx = make_ctx(positions={"ETH/USDT": 100.0, SYM: 1.0}, marks={SYM: 5e4, "ETH/USDT": 3e3})
    assert_ok(check_gross_exposure(make_intent(qty=0.5, side=Side.SELL), ctx, LIMITS))
    assert_denied(check_gross_exposure(make_intent(qty=LOT), ctx, LIMITS), "MAX_GROSS_EXPOSURE")


def test_gross_unvalued_exposure_fails_closed() -> None:
    ctx = make_ctx(positions={"ETH/USDT": 1.0})  # no ETH mark
    assert_denied(check_gross_exposure(make_intent(qty=LOT), ctx, LIMITS), "NO_MARK")


# ---------------------------------------------------------------------------------- throttle


THROTTLE_LIMITS = RiskLimits(
    strategy_throttle=ThrottleConfig(max_orders=3, per_seconds=10),
    global_throttle=ThrottleConfig(max_orders=5, per_seconds=10),
)


def test_throttle_nth_passes_next_denied_then_window_slides() -> None:
    ctx = make_ctx(THROTTLE_LIMITS)
    intent = make_intent()
    for i in range(3):  # orders 1..3 pass
        ctx.now = NOW + i
        assert_ok(check_throttle(intent, ctx, THROTTLE_LIMITS))
        ctx.throttle.record("s1", ctx.now)
    ctx.now = NOW + 3
    v = check_throttle(intent, ctx, THROTTLE_LIMITS)  # the 4th within 10 s
    assert_denied(v, "THROTTLE_STRATEGY")
    assert "sent 3 orders in 10s (limit 3)" in v.message
    ctx.now = NOW + 10 * NS_PER_SECOND - 1  # first order still 1 ns inside the window
    assert_denied(check_throttle(intent, ctx, THROTTLE_LIMITS), "THROTTLE_STRATEGY")
    ctx.now = NOW + 10 * NS_PER_SECOND  # first order has left
    assert_ok(check_throttle(intent, ctx, THROTTLE_LIMITS))


def test_throttle_global() -> None:
    ctx = make_ctx(THROTTLE_LIMITS)
    for i in range(4):
        ctx.throttle.record(f"other{i}", NOW)
    assert_ok(check_throttle(make_intent(), ctx, THROTTLE_LIMITS))  # 5th globally
    ctx.throttle.record("other9", NOW)
    assert_denied(check_throttle(make_intent(), ctx, THROTTLE_LIMITS), "THROTTLE_GLOBAL")


def test_throttle_reduce_only_not_exempt() -> None:
    ctx = make_ctx(THROTTLE_LIMITS, positions={SYM: 1.0})
    for _ in range(3):
        ctx.throttle.record("s1", NOW)
    exit_ = make_intent(side=Side.SELL, reduce_only=True)
    assert_denied(check_throttle(exit_, ctx, THROTTLE_LIMITS), "THROTTLE_STRATEGY")


def test_throttle_check_does_not_record() -> None:
    ctx = make_ctx(THROTTLE_LIMITS)
    for _ in range(10):
        assert_ok(check_throttle(make_intent(), ctx, THROTTLE_LIMITS))
    assert ctx.throttle.global_count(NOW) == 0


def test_throttle_adopts_limits() -> None:
    ctx = make_ctx()  # throttle built from default limits (10 per 60 s)
    for _ in range(3):
        ctx.throttle.record("s1", NOW)
    assert_denied(check_throttle(make_intent(), ctx, THROTTLE_LIMITS), "THROTTLE_STRATEGY")
    assert ctx.throttle.strategy_limit is THROTTLE_LIMITS.strategy_throttle


# ---------------------------------------------------------------------------------- cash


def test_cash_exactly_enough_passes_one_cent_short_denied() -> None:
    intent = make_intent(qty=0.1, limit=50_000.0)  # 5,000 * 1.001 = 5,005.00
    assert_ok(check_cash(intent, make_ctx(cash=5_005.0), LIMITS))
    v = check_cash(intent, make_ctx(cash=5_004.99), LIMITS)
    assert_denied(v, "INSUFFICIENT_CASH")
    assert "5,005.00" in v.message and "5,004.99" in v.message


def test_cash_uses_context_fee_rate() -> None:
    intent = make_intent(qty=0.1, limit=50_000.0)
    assert_ok(check_cash(intent, make_ctx(cash=5_000.0, fee_rate=0.0), LIMITS))
    assert_denied(check_cash(intent, make_ctx(cash=5_000.0), LIMITS), "INSUFFICIENT_CASH")


def test_cash_sell_passes_without_cash() -> None:
    assert_ok(check_cash(make_intent(side=Side.SELL), make_ctx(cash=0.0), LIMITS))


def test_cash_reserves_open_buys() -> None:
    # Open buy of 1 ETH at mark 3,000 reserves 3,003; the BTC buy needs 5,005.
    ctx = make_ctx(
        cash=8_008.0, open_order_qty={"ETH/USDT": 1.0}, marks={SYM: 5e4, "ETH/USDT": 3e3}
    )
    assert_ok(check_cash(make_intent(qty=0.1, limit=50_000.0), ctx, LIMITS))
    ctx.cash = 8_007.99
    v = check_cash(make_intent(qty=0.1, limit=50_000.0), ctx, LIMITS)
    assert_denied(v, "INSUFFICIENT_CASH")
    assert "reserved" in v.message


def test_cash_open_sells_reserve_nothing() -> None:
    ctx = make_ctx(cash=5_005.0, open_order_qty={SYM: -0.5})
    assert_ok(check_cash(make_intent(qty=0.1, limit=50_000.0), ctx, LIMITS))


# ---------------------------------------------------------------------------------- reduce-only


def test_reduce_only_up_to_position_passes_beyond_denied() -> None:
    ctx = make_ctx(positions={SYM: 0.5})
    assert_ok(
        check_reduce_only(make_intent(qty=0.5, side=Side.SELL, reduce_only=True), ctx, LIMITS)
    )
    v = check_reduce_only(make_intent(qty=0.5 + LOT, side=Side.SELL, reduce_only=True), ctx, LIMITS)
    assert_denied(v, "REDUCE_ONLY_EXCEEDS_POSITION")


def test_reduce_only_short_cover() -> None:
    ctx = make_ctx(positions={SYM: -0.5})
    assert_ok(check_reduce_only(make_intent(qty=0.5, reduce_only=True), ctx, LIMITS))
    v = check_reduce_only(make_intent(qty=0.5 + LOT, reduce_only=True), ctx, LIMITS)
    assert_denied(v, "REDUCE_ONLY_EXCEEDS_POSITION")


def test_reduce_only_wrong_direction_or_flat_denied() -> None:
    long_ctx = make_ctx(positions={SYM: 0.5})
    v = check_reduce_only(make_intent(qty=0.1, reduce_only=True), long_ctx, LIMITS)
    assert_denied(v, "REDUCE_ONLY_EXCEEDS_POSITION")
    flat = make_ctx()
    v = check_reduce_only(make_intent(qty=0.1, side=Side.SELL, reduce_only=True), flat, LIMITS)
    assert_denied(v, "REDUCE_ONLY_EXCEEDS_POSITION")


def test_reduce_only_open_exits_consume_the_position() -> None:
    ctx = make_ctx(positions={SYM: 0.5}, open_order_qty={SYM: -0.3})
    assert_ok(
        check_reduce_only(make_intent(qty=0.2, side=Side.SELL, reduce_only=True), ctx, LIMITS)
    )
    v = check_reduce_only(make_intent(qty=0.2 + LOT, side=Side.SELL, reduce_only=True), ctx, LIMITS)
    assert_denied(v, "REDUCE_ONLY_EXCEEDS_POSITION")


def test_plain_order_skips_reduce_only_check() -> None:
    assert_ok(check_reduce_only(make_intent(side=Side.SELL), make_ctx(), LIMITS))


# ---------------------------------------------------------------------------------- run_checks

EXPECTED_NAMES = [
    "round_to_grid",
    "reduce_only",
    "stale_quote",
    "price_collar",
    "max_order_notional",
    "max_position",
    "max_open_positions",
    "gross_exposure",
    "cash",
    "throttle",
]


def test_run_checks_all_pass_and_rounds() -> None:
    intent, verdicts = run_checks(make_intent(qty=0.1234567, limit=50_000.019), make_ctx(), LIMITS)
    assert [v.check for v in verdicts] == EXPECTED_NAMES
    assert all_passed(verdicts)
    assert intent.qty == 0.12345
    assert intent.limit_price == 50_000.01


def test_run_checks_does_not_short_circuit() -> None:
    ctx = make_ctx(quote=None, cash=0.0)
    intent, verdicts = run_checks(make_intent(qty=1.1), ctx, LIMITS)
    assert intent.qty == 1.1
    assert len(verdicts) == len(CHECKS) + 1
    codes = {v.code for v in verdicts if not v.ok}
    assert codes == {
        "NO_QUOTE",
        "MAX_ORDER_NOTIONAL",
        "MAX_POSITION",
        "MAX_GROSS_EXPOSURE",
        "INSUFFICIENT_CASH",
    }
    assert not all_passed(verdicts)


def test_run_checks_turns_a_raising_check_into_a_denial() -> None:
    class Broken(Mapping[str, float]):
        def __getitem__(self, key: str) -> float:
            raise RuntimeError("boom")

        def __iter__(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

        def __len__(self) -> int:
            return 1

    _, verdicts = run_checks(make_intent(), make_ctx(positions=Broken()), LIMITS)
    assert len(verdicts) == len(CHECKS) + 1
    assert "CHECK_ERROR" in {v.code for v in verdicts}
    assert not all_passed(verdicts)


def test_all_passed_empty_is_false() -> None:
    assert not all_passed([])
    assert all_passed([Verdict.passed("x")])


# ---------------------------------------------------------------------------------- properties

pos_float = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
lots = st.sampled_from([1.0, 0.1, 0.01, 0.001, 0.0001, 0.00001, 0.25, 0.5, 5.0])
ticks = st.sampled_from([0.01, 0.1, 0.5, 1.0, 0.0001])
signed_qty = st.one_of(
    st.just(0.0),
    st.floats(min_value=-100.0, max_value=100.0, allow_nan=False, allow_infinity=False),
)


@st.composite
def scenarios(
    draw: st.DrawFn, friendly: bool = False
) -> tuple[OrderIntent, RiskContext, RiskLimits]:
    """Random intent, context and limits. ``friendly`` biases toward orders that can pass all
    checks (fresh quote, price inside the collar, size near the limits, ample cash)."""
    limits = RiskLimits(
        max_order_notional=draw(st.floats(10.0, 1e6)),
        max_position_fraction=draw(st.floats(0.01, 1.0)),
        max_open_positions=draw(st.integers(1, 4)),
        max_gross_exposure_fraction=draw(st.floats(0.05, 5.0)),
        price_collar_pct=draw(st.floats(0.1, 10.0)),
        stale_quote_s=draw(st.floats(0.5, 30.0)),
        strategy_throttle=ThrottleConfig(max_orders=draw(st.integers(1, 5)), per_seconds=10),
        global_throttle=ThrottleConfig(max_orders=draw(st.integers(1, 8)), per_seconds=10),
    )
    mid = draw(pos_float)
    spread = mid * draw(st.floats(0.0, 0.01))
    quote = Quote(SYM, mid - spread / 2, mid + spread / 2, 1.0, 1.0, NOW, NOW)
    equity = draw(pos_float)
    if friendly:
        age = draw(st.integers(0, NS_PER_SECOND // 2))
        others: dict[str, float] = {}
        pos = draw(st.floats(-1.0, 1.0)) * limits.max_position_fraction * equity / mid
        positions = {SYM: pos}
        open_qty: dict[str, float] = {}
        cash = draw(st.floats(0.0, 1e12))
        pct = limits.price_collar_pct / 100
        offset = draw(st.floats(-pct, pct))
        room = min(limits.max_order_notional, limits.max_position_fraction * equity) / mid
        qty = draw(st.floats(0.0, 1.5)) * room
        assume(qty > 1e-9)
    else:
        age = draw(st.integers(0, 60 * NS_PER_SECOND))
        others = draw(st.dictionaries(st.sampled_from(["A/USDT", "B/USDT", "C/USDT"]), signed_qty))
        positions = {SYM: draw(signed_qty), **others}
        open_qty = {SYM: draw(signed_qty)} if draw(st.booleans()) else {}
        cash = draw(st.floats(0.0, 1e7))
        offset = draw(st.floats(-0.05, 0.05))
        qty = draw(pos_float)
    marks = {s: draw(pos_float) for s in others} | {SYM: mid}
    throttle = OrderThrottle(limits.strategy_throttle, limits.global_throttle)
    for _ in range(0 if friendly else draw(st.integers(0, 6))):
        throttle.record(draw(st.sampled_from(["s1", "s2"])), NOW - draw(st.integers(0, 20)) * 10**9)
    if friendly:  # a grid fine enough that the order is rarely below one lot
        lot = 10.0 ** math.floor(math.log10(qty * 1e-3))
        instrument = make_instrument(tick_size=draw(ticks), lot_size=lot, min_notional=0.0)
    else:
        instrument = make_instrument(
            tick_size=draw(ticks),
            lot_size=draw(lots),
            min_qty=draw(st.sampled_from([0.0, 0.5, 2.0])),
            min_notional=draw(st.sampled_from([0.0, 5.0, 100.0])),
        )
    ctx = RiskContext(
        now=NOW + age,
        equity=equity,
        cash=cash,
        positions=positions,
        marks=marks,
        open_order_qty=open_qty,
        quote=quote,
        instrument=instrument,
        throttle=throttle,
        fee_rate=draw(st.sampled_from([0.0, 0.001, 0.01])),
    )
    use_limit = draw(st.booleans())
    side = draw(st.sampled_from([Side.BUY, Side.SELL]))
    reduce_only = draw(st.booleans())
    if friendly and reduce_only:  # a valid exit: opposite the position, at most its size
        pos = positions[SYM]
        side = Side.SELL if pos > 0 else Side.BUY
        qty = min(qty, abs(pos))
    intent = make_intent(
        qty=qty,
        side=side,
        limit=mid * (1 + offset) if use_limit else None,
        ref=mid * (1 + offset) if not use_limit else mid,
        reduce_only=reduce_only,
        strategy=draw(st.sampled_from(["s1", "s2"])),
    )
    return intent, ctx, limits


@settings(deadline=None, max_examples=400)
@given(scenarios())
def test_property_run_checks_never_raises_and_reports_every_check(
    scenario: tuple[OrderIntent, RiskContext, RiskLimits],
) -> None:
    intent, ctx, limits = scenario
    adjusted, verdicts = run_checks(intent, ctx, limits)
    assert [v.check for v in verdicts] == EXPECTED_NAMES
    assert adjusted.qty <= intent.qty * (1 + 1e-9)
    assert "CHECK_ERROR" not in {v.code for v in verdicts}
    assert all(v.message for v in verdicts)


def _assert_within_limits(
    adjusted: OrderIntent, ctx: RiskContext, limits: RiskLimits, passed: set[str]
) -> None:
    """For each check that passed, the quantity it guards is within its limit."""
    tol = 1 + 1e-9
    pos = ctx.positions.get(SYM, 0.0)
    shrinks = (
        adjusted.reduce_only
        and pos * adjusted.side.sign < 0
        and adjusted.qty <= abs(pos) * (1 + 1e-9)
    )
    if "max_order_notional" in passed and not shrinks:
        assert adjusted.notional <= limits.max_order_notional * tol
    if "max_position" in passed and not adjusted.reduce_only:
        before = ctx.positions.get(SYM, 0.0) + ctx.open_order_qty.get(SYM, 0.0)
        after = before + adjusted.qty * adjusted.side.sign
        reducing = after * before >= 0 and abs(after) <= abs(before)
        # A plain order that moves exposure toward zero may leave an oversized position
        # smaller but still over; every other passing order ends within the limit.
        if not reducing:
            value = abs(after) * ctx.marks[SYM]
            assert value <= limits.max_position_fraction * ctx.equity * tol
    if "cash" in passed and adjusted.side is Side.BUY and not shrinks:  # (covering a short)
        assert adjusted.notional * (1 + ctx.fee_rate) <= ctx.cash * tol


@settings(deadline=None, max_examples=400)
@given(scenarios())
def test_property_each_passing_check_respects_its_limit(
    scenario: tuple[OrderIntent, RiskContext, RiskLimits],
) -> None:
    intent, ctx, limits = scenario
    adjusted, verdicts = run_checks(intent, ctx, limits)
    _assert_within_limits(adjusted, ctx, limits, {v.check for v in verdicts if v.ok})


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.filter_too_much])
@given(scenarios(friendly=True))
def test_property_fully_passing_orders_respect_limits(
    scenario: tuple[OrderIntent, RiskContext, RiskLimits],
) -> None:
    intent, ctx, limits = scenario
    adjusted, verdicts = run_checks(intent, ctx, limits)
    assume(all_passed(verdicts))
    _assert_within_limits(adjusted, ctx, limits, set(EXPECTED_NAMES))


@settings(deadline=None, max_examples=500)
@given(qty=pos_float, lot=lots, side=st.sampled_from([Side.BUY, Side.SELL]))
def test_property_rounded_qty_is_lot_multiple_not_larger(
    qty: float, lot: float, side: Side
) -> None:
    intent, _ = round_to_grid(make_intent(qty=qty, side=side), make_instrument(lot_size=lot))
    rounded = intent.qty
    assert rounded <= qty * (1 + 1e-9)
    assert qty - rounded < lot * (1 + 1e-9)  # never drops a whole lot
    steps = rounded / lot
    assert abs(steps - round(steps)) <= 1e-9 * max(1.0, steps)


@settings(deadline=None, max_examples=300)
@given(price=pos_float, tick=ticks, side=st.sampled_from([Side.BUY, Side.SELL]))
def test_property_limit_rounding_never_more_aggressive(
    price: float, tick: float, side: Side
) -> None:
    assume(price >= tick)
    intent, _ = round_to_grid(
        make_intent(qty=1.0, side=side, limit=price, ref=price), make_instrument(tick_size=tick)
    )
    assert intent.limit_price is not None
    if side is Side.BUY:
        assert intent.limit_price <= price * (1 + 1e-9)
    else:
        assert intent.limit_price >= price * (1 - 1e-9)
    steps = intent.limit_price / tick
    assert abs(steps - round(steps)) <= 1e-9 * max(1.0, steps)


def test_reduce_only_exit_above_max_order_notional_passes() -> None:
    """An exit of a position that grew past the order limit must not be trapped."""
    limits = RiskLimits(max_order_notional=10_000.0)
    ctx = make_ctx(positions={SYM: 0.2}, marks={SYM: 60_000.0})
    exit_all = make_intent(side=Side.SELL, qty=0.2, ref=60_000.0, reduce_only=True)
    assert check_max_order_notional(exit_all, ctx, limits).ok
    # The same size as an entry (not reduce-only) is still denied...
    entry = make_intent(side=Side.SELL, qty=0.2, ref=60_000.0)
    assert check_max_order_notional(entry, ctx, limits).code == "MAX_ORDER_NOTIONAL"
    # ...and a reduce-only order bigger than the position is not exempt.
    over = make_intent(side=Side.SELL, qty=0.21, ref=60_000.0, reduce_only=True)
    assert check_max_order_notional(over, ctx, limits).code == "MAX_ORDER_NOTIONAL"
