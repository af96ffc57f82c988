"""Order-rate throttle: sliding windows of submit timestamps, per strategy and global.

A runaway loop (a strategy re-entering every tick, a bad reconnect replaying orders) is the
fastest way to lose money, so order rate is limited before anything reaches a venue.

Time is injected as integer nanoseconds; nothing here reads a clock, so a backtest and a live
run behave identically. The window is half-open, ``(now - per_seconds, now]``: a timestamp
exactly ``per_seconds`` old has LEFT the window and no longer counts. With ``max_orders=N`` and
``per_seconds=T`` that allows N orders in any span shorter than T, and an order at ``t0 + T``
is allowed again after N orders at ``t0``.

The throttle only counts; it never decides. ``engine.checks.check_throttle`` asks whether one
more order fits, and the caller calls ``record`` when the order is actually submitted (denied
orders do not consume rate).
"""

from __future__ import annotations

from bisect import insort
from collections import deque

from engine.config import ThrottleConfig
from engine.types import CLOCK_BACK_NS, NS_PER_SECOND


def _window_ns(limit: ThrottleConfig) -> int:
    return round(limit.per_seconds * NS_PER_SECOND)


def _settle(window: deque[int], now: int, back_ns: int) -> None:
    """A clock gone back (``back_ns``, see OrderThrottle) behind the window's newest entry: what
    was recorded after ``now`` counts as recorded at ``now``, a whole window from it, not for the
    length of the step on top (an hour stepped back at a restart denied every order for the
    hour)."""
    if window and window[-1] > now + back_ns:
        times = [t if t <= now else now for t in window]  # (sorted: stays sorted)
        window.clear()
        window.extend(times)


class OrderThrottle:
    """Sliding-window order counter for each strategy and for all strategies together."""

    __slots__ = (
        "_global",
        "_global_ns",
        "_per_strategy",
        "_strategy_ns",
        "back_ns",
        "global_limit",
        "strategy_limit",
    )

    def __init__(
        self, strategy_limit: ThrottleConfig, global_limit: ThrottleConfig, stale_after_ns: int = 0
    ) -> None:
        # How far behind the newest order a count's time must be for the clock to have gone
        # back, not merely to run on a venue behind another (whose quotes may be stamped up to
        # ``stale_after`` before their receipt, the other's up to a minute after it).
        self.back_ns = CLOCK_BACK_NS + stale_after_ns
        self.strategy_limit = strategy_limit
        self.global_limit = global_limit
        self._strategy_ns = _window_ns(strategy_limit)
        self._global_ns = _window_ns(global_limit)
        self._per_strategy: dict[str, deque[int]] = {}
        self._global: deque[int] = deque()

    def set_limits(self, strategy_limit: ThrottleConfig, global_limit: ThrottleConfig) -> None:
        """Apply limits changed at run time; recorded history is kept and re-windowed."""
        self.strategy_limit = strategy_limit
        self.global_limit = global_limit
        self._strategy_ns = _window_ns(strategy_limit)
        self._global_ns = _window_ns(global_limit)

    def strategy_count(self, strategy_id: str, now: int) -> int:
        """Orders recorded for ``strategy_id`` within ``(now - per_seconds, now]``."""
        window = self._per_strategy.get(strategy_id)
        if window is None:
            return 0
        _settle(window, now, self.back_ns)
        # Timestamps <= cutoff (exactly per_seconds old or older) have left the window.
        cutoff = now - self._strategy_ns
        while window and window[0] <= cutoff:
            window.popleft()
        if not window:
            # Drop idle strategies so the map does not grow with every id ever seen.
            del self._per_strategy[strategy_id]
            return 0
        return len(window)

    def global_count(self, now: int) -> int:
        """Orders recorded for all strategies within ``(now - per_seconds, now]``."""
        window = self._global
        _settle(window, now, self.back_ns)
        cutoff = now - self._global_ns
        while window and window[0] <= cutoff:
            window.popleft()
        return len(window)

    def record(self, strategy_id: str, now: int) -> None:
        """Count one submitted order at ``now``.

        Timestamps normally arrive in order; an out-of-order one is inserted in place so that
        pruning from the left stays correct. Timestamps later than a query's ``now`` still count
        (fail closed when clocks disagree).
        """
        window = self._per_strategy.get(strategy_id)
        if window is None:
            window = self._per_strategy[strategy_id] = deque()
        for dq in (window, self._global):
            if not dq or dq[-1] <= now:
                dq.append(now)
            else:
                insort(dq, now)
