"""How each strategy is doing: PnL, round trips, win rate, fees, slippage against the model,
exposure; profit per UTC day; and how long each step from a quote to a fill takes.

A projection of fills (and, for latency, of the moments the order path reaches each step), kept
apart from the portfolio: the portfolio books the account as the venue sees it, this books each
strategy's own trades so a trader can tell which strategy earns and which only pays fees. Pure and
deterministic: the engine feeds it live, and a restart rebuilds it from the journal's fills.
"""

from __future__ import annotations

import datetime
import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from engine.types import NS_PER_SECOND, Fill
from engine.vocabulary import LatencyStepView, StrategyPerformanceView

DAY_NS = 86_400 * NS_PER_SECOND
_EPOCH = datetime.date(1970, 1, 1)
# Quantities closer to zero than this (relative to the position) count as flat: float dust from
# partial fills must not keep a round trip open forever.
_FLAT_REL = 1e-9
LATENCY_WINDOW = 1_000
"""Orders each latency percentile is taken over (the newest ones)."""

STAGES: tuple[str, ...] = ("quote", "decision", "durable", "acknowledged", "fill")
"""The order path's steps, in order: the quote that led to the decision, the decision, the
intent's journal row committed, the venue's (or paper broker's) acknowledgement, the first fill."""


def _mark(marks: dict[str, float], symbol: str) -> float | None:
    """The symbol's mark, or None when there is none or it is not a price (NaN, inf, <= 0):
    one bad mark must not turn a strategy's whole row into NaN."""
    mark = marks.get(symbol)
    return mark if mark is not None and math.isfinite(mark) and mark > 0 else None


@dataclass
class _Leg:
    """A strategy's position in one symbol and the round trip it is part of."""

    qty: float = 0.0
    avg_price: float = 0.0
    trip_pnl: float = 0.0  # net of fees, since the position last left flat


@dataclass
class StrategyPerformance:
    """One strategy's figures; money in the quote currency, slippage in basis points."""

    strategy_id: str
    realized_pnl: float = 0.0
    fees: float = 0.0
    round_trips: int = 0
    wins: int = 0
    fills: int = 0
    slippage_cost: float = 0.0
    slippage_bps_sum: float = 0.0
    model_bps_sum: float = 0.0
    slippage_fills: int = 0
    legs: dict[str, _Leg] = field(default_factory=dict)

    def unrealized(self, marks: dict[str, float]) -> float:
        total = 0.0
        for symbol, leg in self.legs.items():
            mark = _mark(marks, symbol)
            if leg.qty and mark is not None:
                total += leg.qty * (mark - leg.avg_price)
        return total

    def exposure(self, marks: dict[str, float]) -> float:
        total = 0.0
        for symbol, leg in self.legs.items():
            mark = _mark(marks, symbol)
            total += abs(leg.qty) * (leg.avg_price if mark is None else mark)
        return total

    def row(self, marks: dict[str, float]) -> StrategyPerformanceView:
        """The strategy's line of the performance table (JSON-able)."""
        n = self.slippage_fills
        return {
            "strategy": self.strategy_id,
            "realized_pnl": self.realized_pnl - self.fees,
            "unrealized_pnl": self.unrealized(marks),
            "fees": self.fees,
            "round_trips": self.round_trips,
            "wins": self.wins,
            "win_rate": self.wins / self.round_trips if self.round_trips else None,
            "fills": self.fills,
            "slippage_cost": self.slippage_cost,
            "slippage_bps": self.slippage_bps_sum / n if n else None,
            "model_bps": self.model_bps_sum / n if n else None,
            "exposure": self.exposure(marks),
            "positions": {s: leg.qty for s, leg in self.legs.items() if leg.qty},
        }


class PerformanceBook:
    """Every strategy's :class:`StrategyPerformance` and the profit of each UTC day."""

    def __init__(self) -> None:
        self.strategies: dict[str, StrategyPerformance] = {}
        self.daily: dict[int, float] = {}  # UTC day number -> realized PnL net of fees

    def on_fill(
        self, fill: Fill, mid: float | None = None, model_bps: float | None = None
    ) -> float | None:
        """Book ``fill`` for its strategy; returns the net PnL of the round trip it completes
        (the position back to flat or flipped), else None.

        ``mid`` is the quote mid the fill happened on and ``model_bps`` the slippage the model
        expected at intent time: given both, the fill counts toward slippage against the model
        (a fill rebuilt from the journal has neither and counts only toward PnL and fees).
        """
        sid = fill.strategy_id
        perf = self.strategies.get(sid)
        if perf is None:
            perf = self.strategies[sid] = StrategyPerformance(sid)
        leg = perf.legs.get(fill.symbol)
        if leg is None:
            leg = perf.legs[fill.symbol] = _Leg()
        qty, price, fee = fill.qty, fill.price, fill.fee
        perf.fills += 1
        perf.fees += fee
        sign = fill.side.sign
        signed = qty * sign
        realized = 0.0
        old = leg.qty
        leg.trip_pnl -= fee
        if old == 0.0 or (old > 0) == (signed > 0):
            new = old + signed
            leg.avg_price = (leg.avg_price * abs(old) + price * qty) / abs(new)
            leg.qty = new
        else:
            closing = min(qty, abs(old))
            realized = closing * (price - leg.avg_price) * (1.0 if old > 0 else -1.0)
            new = old + signed
            if abs(new) <= _FLAT_REL * max(abs(old), qty):
                new = 0.0
            leg.qty = new
            if new != 0.0 and (new > 0) != (old > 0):
                leg.avg_price = price  # flipped: the remainder opens at the fill price
            elif new == 0.0:
                leg.avg_price = 0.0
        perf.realized_pnl += realized
        leg.trip_pnl += realized
        day = fill.ts // DAY_NS
        daily = self.daily
        daily[day] = daily.get(day, 0.0) + realized - fee
        if mid is not None and model_bps is not None and mid > 0:
            perf.slippage_fills += 1
            bps = (price - mid) / mid * 1e4 * sign
            perf.slippage_bps_sum += bps
            perf.model_bps_sum += model_bps
            perf.slippage_cost += (price - mid) * qty * sign
        # leg.qty is ``new`` from here on
        closed_trip = old != 0.0 and (new == 0.0 or (new > 0) != (old > 0))
        if not closed_trip:
            return None
        trip = leg.trip_pnl
        if new != 0.0:
            # A flip: the share of this fill's fee that opened the new position starts its trip.
            opened = abs(new) / qty
            trip += fee * opened
            leg.trip_pnl = -fee * opened
        else:
            leg.trip_pnl = 0.0
        perf.round_trips += 1
        if trip > 0:
            perf.wins += 1
        return trip

    def table(self, marks: dict[str, float]) -> list[StrategyPerformanceView]:
        """One row per strategy that has filled, by strategy id."""
        return [self.strategies[s].row(marks) for s in sorted(self.strategies)]

    def daily_pnl(self, days: int = 30) -> list[dict[str, Any]]:
        """The newest ``days`` UTC days with fills, oldest first: ``{"day": "2026-12-06",
        "pnl": ...}``. Empty when nothing has filled (the pane says so rather than draw zeros)."""
        out = []
        for day in sorted(self.daily)[-days:]:
            date = _EPOCH + datetime.timedelta(days=day)
            out.append({"day": date.isoformat(), "pnl": self.daily[day]})
        return out


class LatencyTracker:
    """Wall-clock moments each order reaches along :data:`STAGES`, and percentiles of each step
    over the newest :data:`LATENCY_WINDOW` orders.

    Times are ``time.time_ns()`` values from the engine's order path; an order missing a stage
    (denied, never filled) contributes only the steps it has.
    """

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self._open: dict[str, dict[str, int]] = {}
        self._steps: dict[str, deque[int]] = {
            f"{a}>{b}": deque(maxlen=window) for a, b in itertools.pairwise(STAGES)
        }
        self._steps["quote>fill"] = deque(maxlen=window)
        self._max_open = window * 4
        # The percentiles, kept until a sample arrives: a cockpit asks about ten times a second.
        self._cached: dict[str, LatencyStepView] | None = None

    def mark(self, order_id: str, stage: str, t_ns: int) -> None:
        """Note that ``order_id`` reached ``stage`` at ``t_ns`` (the first time only)."""
        if stage not in STAGES:
            raise ValueError(f"unknown latency stage {stage!r}; one of {', '.join(STAGES)}")
        times = self._open.get(order_id)
        if times is None:
            if len(self._open) >= self._max_open:
                # Orders that never fill must not grow this without bound: drop the oldest.
                self._open.pop(next(iter(self._open)))
            times = self._open[order_id] = {}
        if stage in times:
            return
        times[stage] = t_ns
        i = STAGES.index(stage)
        if i > 0:
            before = times.get(STAGES[i - 1])
            if before is not None and t_ns >= before:
                self._steps[f"{STAGES[i - 1]}>{stage}"].append(t_ns - before)
                self._cached = None
        if stage == "fill":
            start = times.get("quote")
            if start is not None and t_ns >= start:
                self._steps["quote>fill"].append(t_ns - start)
                self._cached = None
            del self._open[order_id]

    def finish(self, order_id: str) -> None:
        """Forget an order that will not go further (denied, rejected, cancelled)."""
        self._open.pop(order_id, None)

    def percentiles(self) -> dict[str, LatencyStepView]:
        """Per step: ``{"n": count, "p50_ms": ..., "p99_ms": ...}`` (None with no sample)."""
        if self._cached is not None:
            return self._cached
        out: dict[str, LatencyStepView] = {}
        for step, samples in self._steps.items():
            values = sorted(samples)
            n = len(values)
            out[step] = {
                "n": n,
                "p50_ms": _rank(values, 0.50) / 1e6 if n else None,
                "p99_ms": _rank(values, 0.99) / 1e6 if n else None,
            }
        self._cached = out
        return out


def _rank(values: list[int], q: float) -> int:
    """The nearest-rank percentile of sorted ``values`` (the smallest value with at least a
    fraction ``q`` of the samples at or below it)."""
    return values[max(0, math.ceil(q * len(values)) - 1)]
