"""Order throttle: sliding windows with injected time, boundary exactly at per_seconds."""

from __future__ import annotations

from engine.config import ThrottleConfig
from engine.throttle import OrderThrottle
from engine.types import NS_PER_SECOND

T0 = 1_700_000_000 * NS_PER_SECOND
WINDOW = 10 * NS_PER_SECOND


def make(strategy_max: int = 3, global_max: int = 5, seconds: float = 10) -> OrderThrottle:
    return OrderThrottle(
        ThrottleConfig(max_orders=strategy_max, per_seconds=seconds),
        ThrottleConfig(max_orders=global_max, per_seconds=seconds),
    )


def test_empty_counts_zero() -> None:
    th = make()
    assert th.strategy_count("a", T0) == 0
    assert th.global_count(T0) == 0


def test_counts_within_window_and_boundary_leaves() -> None:
    th = make()
    th.record("a", T0)
    th.record("a", T0 + 1)
    assert th.strategy_count("a", T0 + 1) == 2
    # 1 ns before the first entry is per_seconds old: both still count.
    assert th.strategy_count("a", T0 + WINDOW - 1) == 2
    # Exactly per_seconds old has left the window.
    assert th.strategy_count("a", T0 + WINDOW) == 1
    assert th.global_count(T0 + WINDOW) == 1
    assert th.strategy_count("a", T0 + WINDOW + 1) == 0
    assert th.global_count(T0 + WINDOW + 1) == 0


def test_strategies_are_counted_separately_and_globally() -> None:
    th = make()
    th.record("a", T0)
    th.record("b", T0)
    th.record("b", T0)
    assert th.strategy_count("a", T0) == 1
    assert th.strategy_count("b", T0) == 2
    assert th.strategy_count("c", T0) == 0
    assert th.global_count(T0) == 3


def test_out_of_order_record_is_pruned_correctly() -> None:
    th = make()
    th.record("a", T0 + 5)
    th.record("a", T0)  # late arrival
    assert th.strategy_count("a", T0 + 5) == 2
    assert th.strategy_count("a", T0 + WINDOW) == 1  # T0 left, T0 + 5 remains
    assert th.global_count(T0 + WINDOW) == 1


def test_set_limits_changes_window() -> None:
    th = make(seconds=10)
    th.record("a", T0)
    assert th.strategy_count("a", T0 + 5 * NS_PER_SECOND) == 1
    th.set_limits(
        ThrottleConfig(max_orders=3, per_seconds=5), ThrottleConfig(max_orders=5, per_seconds=5)
    )
    assert th.strategy_count("a", T0 + 5 * NS_PER_SECOND) == 0
    assert th.global_count(T0 + 5 * NS_PER_SECOND) == 0


def test_fractional_seconds_window() -> None:
    th = make(seconds=1.5)  # (a window is at least a second: engine.config.WindowSeconds)
    th.record("a", T0)
    assert th.strategy_count("a", T0 + NS_PER_SECOND * 3 // 2 - 1) == 1
    assert th.strategy_count("a", T0 + NS_PER_SECOND * 3 // 2) == 0
