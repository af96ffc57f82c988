"""Circuit breakers: each trips exactly at its threshold, not below it, and says why in numbers."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.breakers import (
    BLOCK_SYMBOL,
    GLOBAL_BREAKERS,
    HALT_ENGINE,
    NONE,
    PAUSE_STRATEGY,
    STRATEGY_BREAKERS,
    WARN,
    BreakerBoard,
    BreakerChange,
)
from engine.config import Config, parse_config
from engine.types import NS_PER_SECOND

S = NS_PER_SECOND
T0 = 1_700_000_000 * S
EQUITY = 1e9  # large enough that rolling loss stays quiet unless a test wants it


def make_cfg(
    breakers: dict[str, Any] | None = None,
    a: dict[str, Any] | None = None,
    b: dict[str, Any] | None = None,
    market: dict[str, Any] | None = None,
) -> Config:
    data: dict[str, Any] = {
        "strategies": [
            {"id": "a", "kind": "ema_cross", "symbols": ["BTC/USDT"], "breakers": a or {}},
            {"id": "b", "kind": "ema_cross", "symbols": ["ETH/USDT"], "breakers": b or {}},
        ],
        "safety": {"breakers": breakers or {}},
    }
    if market:
        data["market"] = market
    return parse_config(data)


def board(**kwargs: Any) -> BreakerBoard:
    return BreakerBoard(make_cfg(**kwargs))


def one(changes: list[BreakerChange]) -> BreakerChange:
    assert len(changes) == 1, changes
    return changes[0]


def by_key(changes: list[BreakerChange]) -> dict[tuple[str, str], BreakerChange]:
    return {(c.breaker, c.scope): c for c in changes}


# ---------------------------------------------------------------- consecutive losses


def test_consecutive_losses_two_do_not_trip_three_do() -> None:
    bb = board(breakers={"consecutive_losses": 10}, a={"consecutive_losses": 3})
    assert bb.on_round_trip("a", -12.30, EQUITY, T0) == []
    assert bb.on_round_trip("a", -4.10, EQUITY, T0 + 1) == []
    assert bb.blocked("a", "BTC/USDT") is None
    ch = one(bb.on_round_trip("a", -8.00, EQUITY, T0 + 2))
    assert (ch.breaker, ch.scope, ch.tripped, ch.action) == (
        "consecutive_losses",
        "a",
        True,
        PAUSE_STRATEGY,
    )
    assert ch.reason == "3 consecutive losing trades (-12.30, -4.10, -8.00 USDT)"
    assert (ch.value, ch.limit, ch.ts, ch.by) == (3.0, 3.0, T0 + 2, "system")
    assert "consecutive_losses" in (bb.blocked("a", "BTC/USDT") or "")
    assert bb.blocked("b", "ETH/USDT") is None
    # Already tripped: a fourth loss says nothing new.
    assert bb.on_round_trip("a", -1.0, EQUITY, T0 + 3) == []


def test_win_and_break_even_reset_the_streak() -> None:
    bb = board(breakers={"consecutive_losses": 10}, a={"consecutive_losses": 3})
    for pnl in (-1.0, -1.0, 0.5, -1.0, -1.0, 0.0, -1.0, -1.0):
        assert bb.on_round_trip("a", pnl, EQUITY, T0) == []


def test_global_consecutive_losses_across_strategies_halt_engine() -> None:
    bb = board(
        breakers={"consecutive_losses": 3, "global_consecutive_losses": 3},
        a={"consecutive_losses": 5},
        b={"consecutive_losses": 5},
    )
    assert bb.on_round_trip("a", -1.0, EQUITY, T0) == []
    assert bb.on_round_trip("b", -2.0, EQUITY, T0 + 1) == []
    ch = one(bb.on_round_trip("a", -3.0, EQUITY, T0 + 2))
    assert (ch.scope, ch.action) == ("global", HALT_ENGINE)
    assert ch.reason == (
        "3 consecutive losing trades across all strategies (-1.00, -2.00, -3.00 USDT)"
    )
    # A halt blocks every strategy on every symbol.
    assert "engine halted" in (bb.blocked("b", "ETH/USDT") or "")


def test_a_win_from_another_strategy_breaks_the_global_streak() -> None:
    bb = board(
        breakers={"consecutive_losses": 3, "global_consecutive_losses": 3},
        a={"consecutive_losses": 5},
    )
    bb.on_round_trip("a", -1.0, EQUITY, T0)
    bb.on_round_trip("a", -1.0, EQUITY, T0)
    bb.on_round_trip("b", 1.0, EQUITY, T0)
    assert bb.on_round_trip("a", -1.0, EQUITY, T0) == []


# ---------------------------------------------------------------- rolling loss


def test_rolling_loss_just_under_does_not_trip_at_pct_does() -> None:
    bb = board(
        breakers={"consecutive_losses": 10, "rolling_loss": {"max_loss_pct": 50}},
        a={"rolling_loss": {"max_loss_pct": 2.0, "window_s": 3600}},
    )
    # Equity is reported after each round trip; the base is equity before the first: 100,000.
    assert bb.on_round_trip("a", -1000.0, 99_000.0, T0) == []
    assert bb.on_round_trip("a", -999.75, 98_000.25, T0 + S) == []
    status = {(r["name"], r["scope"]): r for r in bb.status()}
    assert status[("rolling_loss", "a")]["value"] == 1.99975
    ch = one(bb.on_round_trip("a", -0.25, 98_000.0, T0 + 2 * S))
    assert (ch.breaker, ch.scope, ch.action) == ("rolling_loss", "a", PAUSE_STRATEGY)
    assert ch.reason == (
        "loss of 2,000.00 USDT within 3600 s is 2.00% of equity 100,000.00 (limit 2%)"
    )
    assert (ch.value, ch.limit) == (2.0, 2.0)


def test_rolling_loss_gains_offset_losses() -> None:
    bb = board(
        breakers={"consecutive_losses": 10, "rolling_loss": {"max_loss_pct": 50}},
        a={"rolling_loss": {"max_loss_pct": 2.0}},
    )
    bb.on_round_trip("a", -1500.0, 98_500.0, T0)
    bb.on_round_trip("a", 500.0, 99_000.0, T0 + 1)
    assert bb.on_round_trip("a", -900.0, 98_100.0, T0 + 2) == []  # net -1,900


def test_rolling_loss_window_slides_out() -> None:
    def fresh() -> BreakerBoard:
        return board(
            breakers={"consecutive_losses": 10, "rolling_loss": {"max_loss_pct": 50}},
            a={"rolling_loss": {"max_loss_pct": 2.0, "window_s": 3600}},
        )

    window = 3600 * S
    bb = fresh()
    bb.on_round_trip("a", -1500.0, 98_500.0, T0)
    # Exactly one window later the first loss has left: 1,000 of 98,500 is about 1%.
    assert bb.on_round_trip("a", -1000.0, 97_500.0, T0 + window) == []
    bb = fresh()
    bb.on_round_trip("a", -1500.0, 98_500.0, T0)
    # 1 ns earlier it still counts: 2,500 of 100,000.
    ch = one(bb.on_round_trip("a", -1000.0, 97_500.0, T0 + window - 1))
    assert "2,500.00 USDT" in ch.reason and "2.50% of equity 100,000.00" in ch.reason


def test_global_rolling_loss_sums_strategies_and_halts() -> None:
    bb = board(
        breakers={"consecutive_losses": 10, "rolling_loss": {"max_loss_pct": 3.0}},
        a={"rolling_loss": {"max_loss_pct": 50}},
        b={"rolling_loss": {"max_loss_pct": 50}},
    )
    assert bb.on_round_trip("a", -2000.0, 98_000.0, T0) == []
    ch = one(bb.on_round_trip("b", -1000.0, 97_000.0, T0 + 1))
    assert (ch.breaker, ch.scope, ch.action) == ("rolling_loss", "global", HALT_ENGINE)
    assert "3,000.00 USDT across all strategies" in ch.reason
    assert "3.00% of equity 100,000.00 (limit 3%)" in ch.reason


def test_default_global_streak_is_looser_than_a_strategys() -> None:
    """By default 3 losses pause the strategy; only 8 in a row across all halt the engine."""
    bb = board()
    bb.on_round_trip("a", -1.0, EQUITY, T0)
    bb.on_round_trip("a", -1.0, EQUITY, T0)
    got = by_key(bb.on_round_trip("a", -1.0, EQUITY, T0))
    assert got[("consecutive_losses", "a")].action == PAUSE_STRATEGY
    assert ("consecutive_losses", "global") not in got
    for i in range(4):
        assert ("consecutive_losses", "global") not in by_key(
            bb.on_round_trip("b", -1.0, EQUITY, T0 + i)
        )
    got = by_key(bb.on_round_trip("b", -1.0, EQUITY, T0 + 9))
    assert got[("consecutive_losses", "global")].action == HALT_ENGINE


# ---------------------------------------------------------------- orders per minute


def test_orders_per_minute_limit_ok_limit_plus_one_trips() -> None:
    bb = board(a={"orders_per_minute": 5})
    for i in range(5):
        assert bb.on_order_submitted("a", T0 + i * S) == []
    ch = one(bb.on_order_submitted("a", T0 + 5 * S))
    assert (ch.breaker, ch.scope, ch.action) == ("orders_per_minute", "a", PAUSE_STRATEGY)
    assert ch.reason == "6 orders within 60 s (limit 5 per minute)"
    assert (ch.value, ch.limit) == (6.0, 5.0)


def test_orders_per_minute_window_slides() -> None:
    bb = board(a={"orders_per_minute": 5})
    for _ in range(5):
        bb.on_order_submitted("a", T0)
    # Exactly 60 s later the first five have left the window.
    assert bb.on_order_submitted("a", T0 + 60 * S) == []
    bb = board(a={"orders_per_minute": 5})
    for _ in range(5):
        bb.on_order_submitted("a", T0)
    assert one(bb.on_order_submitted("a", T0 + 60 * S - 1)).breaker == "orders_per_minute"


# ---------------------------------------------------------------- signal rate


def test_signal_rate_exactly_multiple_ok_above_trips() -> None:
    bb = board(a={"baseline_signals_per_hour": 10, "signal_rate_multiple": 3.0})
    for i in range(30):  # exactly 3x the baseline
        assert bb.on_signal("a", T0 + i * S) == []
    ch = one(bb.on_signal("a", T0 + 30 * S))
    assert (ch.breaker, ch.scope, ch.action) == ("signal_rate", "a", PAUSE_STRATEGY)
    assert ch.reason == (
        "31 acting signals in the last hour, above 3x the baseline of 10/h (limit 30)"
    )
    assert (ch.value, ch.limit) == (31.0, 30.0)


def test_signal_rate_hour_slides() -> None:
    bb = board(a={"baseline_signals_per_hour": 10})
    for _ in range(30):
        bb.on_signal("a", T0)
    assert bb.on_signal("a", T0 + 3600 * S) == []


# ---------------------------------------------------------------- rejects


def test_consecutive_rejects_reset_by_accept_and_trip_at_n() -> None:
    bb = board(a={"consecutive_rejects": 3})
    assert bb.on_order_rejected("a", "insufficient balance", T0) == []
    assert bb.on_order_rejected("a", "insufficient balance", T0 + 1) == []
    assert bb.on_order_accepted("a", T0 + 2) == []
    assert bb.on_order_rejected("a", "price filter", T0 + 3) == []
    assert bb.on_order_rejected("a", "price filter", T0 + 4) == []
    ch = one(bb.on_order_rejected("a", "insufficient balance", T0 + 5))
    assert (ch.breaker, ch.scope, ch.action) == ("consecutive_rejects", "a", PAUSE_STRATEGY)
    assert ch.reason == "3 consecutive order rejects (last: insufficient balance)"
    assert (ch.value, ch.limit) == (3.0, 3.0)


# ---------------------------------------------------------------- slippage


def test_slippage_exactly_at_excess_ok_above_trips() -> None:
    bb = board(a={"slippage_window_fills": 4, "slippage_excess_pct": 50})
    for i in range(4):
        assert bb.on_fill_slippage("a", 15.0, 10.0, T0 + i) == []  # exactly +50%
    ch = one(bb.on_fill_slippage("a", 15.5, 10.0, T0 + 4))  # mean 15.125
    assert (ch.breaker, ch.scope, ch.action) == ("slippage", "a", PAUSE_STRATEGY)
    assert ch.reason == (
        "mean realised slippage 15.12 bps over the last 4 fills is 51% above the model's "
        "10.00 bps (limit +50%, 15.00 bps)"
    )
    assert (ch.value, ch.limit) == (15.125, 15.0)


def test_slippage_is_judged_only_on_a_full_window() -> None:
    bb = board(a={"slippage_window_fills": 4})
    for i in range(3):
        assert bb.on_fill_slippage("a", 100.0, 1.0, T0 + i) == []
    assert one(bb.on_fill_slippage("a", 100.0, 1.0, T0 + 3)).breaker == "slippage"


def test_slippage_zero_model_uses_floor() -> None:
    bb = board(a={"slippage_window_fills": 2})
    # A 0 bps model counts as 2 bps: 3.0 bps realised is exactly +50%, not a trip.
    assert bb.on_fill_slippage("a", 3.0, 0.0, T0) == []
    assert bb.on_fill_slippage("a", 3.0, 0.0, T0 + 1) == []
    ch = one(bb.on_fill_slippage("a", 3.4, 0.0, T0 + 2))
    assert "model's 2.00 bps" in ch.reason


# ---------------------------------------------------------------- stale feed


def test_stale_exactly_at_limit_ok_one_ns_more_trips_fresh_quote_rearms() -> None:
    bb = board()
    assert bb.on_quote("BTC/USDT", T0) == []
    assert bb.on_clock(T0 + 5 * S) == []
    ch = one(bb.on_clock(T0 + 5 * S + 1))
    assert (ch.breaker, ch.scope, ch.tripped, ch.action) == (
        "stale_feed",
        "symbol:BTC/USDT",
        True,
        BLOCK_SYMBOL,
    )
    assert ch.reason == "no quote for BTC/USDT in 5.000 s (stale after 5 s)"
    assert ch.limit == 5.0
    assert "BTC/USDT" in (bb.blocked("a", "BTC/USDT") or "")
    assert bb.blocked("b", "BTC/USDT") is not None  # every strategy on that symbol
    assert bb.blocked("b", "ETH/USDT") is None
    assert bb.on_clock(T0 + 6 * S) == []  # latched, not repeated
    re = one(bb.on_quote("BTC/USDT", T0 + 6 * S))
    assert (re.tripped, re.action, re.by) == (False, NONE, "system")
    assert bb.blocked("a", "BTC/USDT") is None
    assert bb.on_quote("BTC/USDT", T0 + 7 * S) == []


def test_stale_after_comes_from_market_validation() -> None:
    bb = board(market={"validation": {"stale_after_s": 2.0}})
    bb.on_quote("ETH/USDT", T0)
    assert bb.on_clock(T0 + 2 * S) == []
    assert "stale after 2 s" in one(bb.on_clock(T0 + 2 * S + 1)).reason


def test_a_late_stale_quote_does_not_rearm() -> None:
    bb = board()
    bb.on_quote("BTC/USDT", T0)
    one(bb.on_clock(T0 + 10 * S))
    assert bb.on_quote("BTC/USDT", T0 + 4 * S) == []  # 6 s old on arrival
    assert bb.blocked("a", "BTC/USDT") is not None


# ---------------------------------------------------------------- clock drift


def test_clock_drift_warn_then_halt_then_rearm() -> None:
    bb = board()
    assert bb.on_clock_drift(99.0, T0) == []
    warn = one(bb.on_clock_drift(100.0, T0 + 1))
    assert (warn.breaker, warn.scope, warn.tripped, warn.action) == (
        "clock_drift",
        "global",
        True,
        WARN,
    )
    assert warn.reason == "clock drift 100.0 ms (warn at 100 ms, halt at 500 ms)"
    assert bb.blocked("a", "BTC/USDT") is None  # a warning does not block
    assert bb.on_clock_drift(499.0, T0 + 2) == []  # once per episode
    halt = one(bb.on_clock_drift(500.0, T0 + 3))
    assert (halt.action, halt.value, halt.limit) == (HALT_ENGINE, 500.0, 500.0)
    assert halt.reason == "clock drift 500.0 ms reached the halt limit of 500 ms"
    assert "clock_drift" in (bb.blocked("a", "BTC/USDT") or "")
    assert bb.on_clock_drift(700.0, T0 + 4) == []
    assert bb.on_clock_drift(300.0, T0 + 5) == []  # a halt waits for < warn
    assert bb.blocked("b", "ETH/USDT") is not None
    re = one(bb.on_clock_drift(20.0, T0 + 6))
    assert (re.tripped, re.action, re.by) == (False, NONE, "system")
    assert bb.blocked("a", "BTC/USDT") is None


def test_clock_drift_negative_and_straight_to_halt() -> None:
    bb = board()
    ch = one(bb.on_clock_drift(-600.0, T0))
    assert ch.action == HALT_ENGINE and "-600.0 ms" in ch.reason


def test_clock_drift_warn_only_rearms_under_warn() -> None:
    bb = board()
    one(bb.on_clock_drift(150.0, T0))
    assert one(bb.on_clock_drift(99.0, T0 + 1)).tripped is False
    assert one(bb.on_clock_drift(150.0, T0 + 2)).action == WARN  # a new episode


# ---------------------------------------------------------------- unreviewed fills


def test_unreviewed_fills_trip_at_n_and_review_resets() -> None:
    bb = board(a={"max_unreviewed_fills": 5})
    for i in range(4):
        assert bb.on_fill("a", T0 + i) == []
    ch = one(bb.on_fill("a", T0 + 4))
    assert (ch.breaker, ch.scope, ch.action) == ("unreviewed_fills", "a", PAUSE_STRATEGY)
    assert ch.reason == "5 automated fills without a person reviewing them (limit 5)"
    re = one(bb.reviewed("a", "alice", T0 + 5))
    assert (re.breaker, re.tripped, re.by, re.value) == ("unreviewed_fills", False, "alice", 0.0)
    assert bb.blocked("a", "BTC/USDT") is None
    for i in range(4):
        assert bb.on_fill("a", T0 + 10 + i) == []


def test_review_without_trip_resets_count() -> None:
    bb = board(a={"max_unreviewed_fills": 3})
    bb.on_fill("a", T0)
    bb.on_fill("a", T0)
    assert bb.reviewed("a", "alice", T0) == []
    assert bb.on_fill("a", T0) == []
    assert bb.on_fill("a", T0) == []
    assert one(bb.on_fill("a", T0)).breaker == "unreviewed_fills"


# ---------------------------------------------------------------- re-arming


def trip_losses(bb: BreakerBoard, ts: int) -> None:
    for _ in range(3):
        bb.on_round_trip("a", -1.0, EQUITY, ts)


def test_auto_rearm_exactly_at_cooldown() -> None:
    bb = board(
        breakers={"consecutive_losses": 10, "rearm": "auto", "cooldown_s": 60},
        a={"consecutive_losses": 3},
    )
    trip_losses(bb, T0)
    assert bb.blocked("a", "BTC/USDT") is not None
    assert bb.on_clock(T0 + 60 * S - 1) == []
    re = one(bb.on_clock(T0 + 60 * S))
    assert (re.breaker, re.scope, re.tripped, re.action, re.by) == (
        "consecutive_losses",
        "a",
        False,
        NONE,
        "system",
    )
    assert "60 s cooldown" in re.reason
    assert bb.blocked("a", "BTC/USDT") is None
    # Counters were reset: one more loss is not a streak of four.
    assert bb.on_round_trip("a", -1.0, EQUITY, T0 + 61 * S) == []


def test_manual_rearm_needs_a_person() -> None:
    bb = board(breakers={"consecutive_losses": 10, "cooldown_s": 60}, a={"consecutive_losses": 3})
    trip_losses(bb, T0)
    assert bb.on_clock(T0 + 3600 * S) == []
    assert bb.blocked("a", "BTC/USDT") is not None
    assert bb.rearm("consecutive_losses", "b", "bob", T0) == []  # not tripped: refused
    re = one(bb.rearm("consecutive_losses", "a", "bob", T0 + 3600 * S))
    assert (re.tripped, re.by, re.action, re.value) == (False, "bob", NONE, 0.0)
    assert "bob" in re.reason
    assert bb.blocked("a", "BTC/USDT") is None
    assert bb.rearm("consecutive_losses", "a", "bob", T0 + 3600 * S) == []


def test_unreviewed_fills_never_rearm_on_cooldown() -> None:
    bb = board(breakers={"rearm": "auto", "cooldown_s": 1}, a={"max_unreviewed_fills": 1})
    one(bb.on_fill("a", T0))
    assert bb.on_clock(T0 + 3600 * S) == []
    assert bb.blocked("a", "BTC/USDT") is not None


def test_per_strategy_override_from_config() -> None:
    bb = board(breakers={"consecutive_losses": 3}, a={"consecutive_losses": 5})
    limits = {(r["name"], r["scope"]): r["limit"] for r in bb.status()}
    assert limits[("consecutive_losses", "a")] == 5.0
    assert limits[("consecutive_losses", "b")] == 3.0
    assert limits[("consecutive_losses", "global")] == 8.0
    for _ in range(3):
        bb.on_round_trip("b", -1.0, EQUITY, T0)
    bb.rearm("consecutive_losses", "global", "op", T0)
    for _ in range(4):
        changes = bb.on_round_trip("a", -1.0, EQUITY, T0)
        assert ("consecutive_losses", "a") not in by_key(changes)
    assert by_key(bb.on_round_trip("a", -1.0, EQUITY, T0))[("consecutive_losses", "a")]


# ---------------------------------------------------------------- blocked, status, restore


def test_blocked_answers_per_scope() -> None:
    bb = board(a={"consecutive_rejects": 1})
    assert bb.blocked("a", "BTC/USDT") is None
    one(bb.on_order_rejected("a", "bad lot", T0))
    reason = bb.blocked("a", "ETH/USDT")
    assert reason is not None and "a paused" in reason and "bad lot" in reason
    assert bb.blocked("b", "BTC/USDT") is None
    assert bb.blocked("manual", "BTC/USDT") is None


def test_status_lists_every_breaker_and_scope_with_gauges() -> None:
    bb = board(a={"orders_per_minute": 5})
    bb.on_quote("BTC/USDT", T0)
    bb.on_order_submitted("a", T0)
    bb.on_order_submitted("a", T0 + S)
    bb.on_clock(T0 + 2 * S)
    rows = bb.status()
    keys = {(r["name"], r["scope"]) for r in rows}
    expected = {(n, "global") for n in GLOBAL_BREAKERS}
    expected |= {(n, s) for n in STRATEGY_BREAKERS for s in ("a", "b")}
    expected |= {("stale_feed", "symbol:BTC/USDT")}
    assert keys == expected
    row = {(r["name"], r["scope"]): r for r in rows}
    assert row[("orders_per_minute", "a")]["value"] == 2.0
    assert row[("orders_per_minute", "a")]["limit"] == 5.0
    assert row[("stale_feed", "symbol:BTC/USDT")]["value"] == 2.0
    for r in rows:
        assert set(r) >= {"name", "scope", "tripped", "reason", "value", "limit", "ts"}
        assert r["tripped"] is False and r["reason"] == ""


def test_change_to_dict_round_trips() -> None:
    ch = BreakerChange("slippage", "a", True, PAUSE_STRATEGY, "why", 1.5, 1.0, T0, "system")
    data = json.loads(json.dumps(ch.to_dict()))
    assert set(data) == {
        "breaker",
        "scope",
        "tripped",
        "action",
        "reason",
        "value",
        "limit",
        "ts",
        "by",
    }
    assert BreakerChange.from_dict(data) == ch


def test_restore_keeps_trips_latched_and_counters_fresh() -> None:
    cfg = make_cfg(breakers={"consecutive_losses": 10}, a={"consecutive_losses": 3})
    bb = BreakerBoard(cfg)
    journal: list[dict[str, Any]] = []
    for _ in range(3):
        journal += [c.to_dict() for c in bb.on_round_trip("a", -2.0, EQUITY, T0)]
    bb.on_quote("ETH/USDT", T0)
    journal += [c.to_dict() for c in bb.on_clock(T0 + 6 * S)]
    journal += [c.to_dict() for c in bb.on_clock_drift(150.0, T0 + 6 * S)]
    journal += [c.to_dict() for c in bb.on_clock_drift(10.0, T0 + 7 * S)]  # re-armed

    again = BreakerBoard(cfg)
    again.restore(json.loads(json.dumps(journal)))
    assert "consecutive_losses" in (again.blocked("a", "BTC/USDT") or "")
    assert "ETH/USDT" in (again.blocked("b", "ETH/USDT") or "")
    rows = {(r["name"], r["scope"]): r for r in again.status()}
    losses = rows[("consecutive_losses", "a")]
    assert losses["tripped"] is True and losses["value"] == 0.0  # counters start fresh
    assert losses["reason"].startswith("3 consecutive losing trades")
    assert rows[("clock_drift", "global")]["tripped"] is False
    assert rows[("stale_feed", "symbol:ETH/USDT")]["tripped"] is True
    # Latched: time passing in manual mode does not release it; a person does.
    assert again.on_clock(T0 + 3600 * S) == []
    assert one(again.rearm("consecutive_losses", "a", "carol", T0 + 3600 * S)).by == "carol"
    # The restored stale symbol re-arms on its first fresh quote.
    assert one(again.on_quote("ETH/USDT", T0 + 3600 * S)).tripped is False
    assert again.blocked("a", "BTC/USDT") is None


def test_restored_auto_trip_cools_down_from_its_original_time() -> None:
    cfg = make_cfg(breakers={"rearm": "auto", "cooldown_s": 60}, a={"consecutive_rejects": 1})
    bb = BreakerBoard(cfg)
    journal = [c.to_dict() for c in bb.on_order_rejected("a", "x", T0)]
    again = BreakerBoard(cfg)
    again.restore(journal)
    assert again.on_clock(T0 + 60 * S - 1) == []
    assert one(again.on_clock(T0 + 60 * S)).tripped is False


# ---------------------------------------------------------------- property

STRATS = ("a", "b", "manual")
SYMBOLS = ("BTC/USDT", "ETH/USDT")
ALL_BREAKERS = (*STRATEGY_BREAKERS, "stale_feed", "clock_drift")
SCOPES = ("a", "b", "global", "symbol:BTC/USDT", "symbol:ETH/USDT")

round_trip = st.tuples(
    st.just("round_trip"), st.sampled_from(STRATS), st.sampled_from((-50.0, -50.0, 0.0, 5.0))
)
op = st.one_of(
    round_trip,
    round_trip,  # twice: streaks need several round trips in a row
    st.tuples(st.just("order"), st.sampled_from(STRATS)),
    st.tuples(st.just("signal"), st.sampled_from(STRATS)),
    st.tuples(st.just("reject"), st.sampled_from(STRATS)),
    st.tuples(st.just("accept"), st.sampled_from(STRATS)),
    st.tuples(st.just("slip"), st.sampled_from(STRATS), st.sampled_from((0.0, 1.0, 5.0))),
    st.tuples(st.just("fill"), st.sampled_from(STRATS)),
    st.tuples(st.just("review"), st.sampled_from(STRATS)),
    st.tuples(st.just("quote"), st.sampled_from(SYMBOLS)),
    st.tuples(st.just("clock")),
    st.tuples(
        st.just("drift"), st.sampled_from((0.0, 99.0, 100.0, 300.0, 500.0, -800.0, float("nan")))
    ),
    st.tuples(st.just("rearm"), st.sampled_from(ALL_BREAKERS), st.sampled_from(SCOPES)),
)


@settings(max_examples=200, deadline=None)
@given(
    rearm=st.sampled_from(("auto", "manual")),
    steps=st.lists(
        st.tuples(op, st.sampled_from((0, 1, S, 3 * S, 10 * S, 30 * S))), min_size=10, max_size=100
    ),
)
def test_blocked_whenever_a_blocking_breaker_is_tripped(
    rearm: str, steps: list[tuple[tuple[Any, ...], int]]
) -> None:
    # Losses are 50 on 100,000 (0.05% each), wins 5. Limits are staggered so that each
    # breaker can trip on its own: a pauses on a streak, b on a rolling loss (L W L), and the
    # global rolling loss can halt before the global streak does.
    small = {
        "consecutive_losses": 3,
        "rolling_loss": {"max_loss_pct": 0.14, "window_s": 30},
        "orders_per_minute": 2,
        "baseline_signals_per_hour": 0.5,
        "signal_rate_multiple": 2.0,
        "consecutive_rejects": 2,
        "slippage_window_fills": 2,
        "max_unreviewed_fills": 3,
        "rearm": rearm,
        "cooldown_s": 10,
    }
    bb = board(
        breakers=small,
        a={"consecutive_losses": 2, "rolling_loss": {"max_loss_pct": 50}},
        b={"consecutive_losses": 5, "rolling_loss": {"max_loss_pct": 0.09, "window_s": 30}},
    )
    model: dict[tuple[str, str], str] = {}  # what the emitted changes say is tripped
    ts = T0
    for (name, *args), dt in steps:
        ts += dt
        if name == "round_trip":
            changes = bb.on_round_trip(args[0], args[1], 100_000.0, ts)
        elif name == "order":
            changes = bb.on_order_submitted(args[0], ts)
        elif name == "signal":
            changes = bb.on_signal(args[0], ts)
        elif name == "reject":
            changes = bb.on_order_rejected(args[0], "nope", ts)
        elif name == "accept":
            changes = bb.on_order_accepted(args[0], ts)
        elif name == "slip":
            changes = bb.on_fill_slippage(args[0], args[1], 1.0, ts)
        elif name == "fill":
            changes = bb.on_fill(args[0], ts)
        elif name == "review":
            changes = bb.reviewed(args[0], "op", ts)
        elif name == "quote":
            changes = bb.on_quote(args[0], ts)
        elif name == "clock":
            changes = bb.on_clock(ts)
        elif name == "drift":
            changes = bb.on_clock_drift(args[0], ts)
        else:
            changes = bb.rearm(args[0], args[1], "op", ts)
        for c in changes:
            key = (c.breaker, c.scope)
            if c.tripped:
                model[key] = c.action
            else:
                assert key in model, f"re-arm of a breaker never tripped: {c}"
                del model[key]
        tripped = {(r["name"], r["scope"]) for r in bb.status() if r["tripped"]}
        assert tripped == set(model)
        halted = HALT_ENGINE in model.values()
        for strat in STRATS:
            for sym in SYMBOLS:
                must_block = (
                    halted
                    or model.get(("stale_feed", f"symbol:{sym}")) == BLOCK_SYMBOL
                    or any(a == PAUSE_STRATEGY and s == strat for (_, s), a in model.items())
                )
                reason = bb.blocked(strat, sym)
                assert (reason is not None) == must_block, (strat, sym, model, reason)
