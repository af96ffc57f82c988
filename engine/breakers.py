"""Circuit breakers: observations in, trips and re-arms out.

A breaker watches one measure (a losing streak, a rolling loss, an order rate, ...) for one scope
and trips when the measure crosses its limit. A trip pauses a strategy, halts the engine, blocks a
symbol, or only warns; the board returns a `BreakerChange` for every trip and re-arm, and the
engine journals it and acts on it. The board itself never journals, reads a clock or does I/O:
time is the integer-ns ``ts`` of each observation, so a backtest and a live run trip identically.

Scopes:
    - a strategy id: every per-strategy breaker, with ``cfg.breakers_for(id)`` (action
      ``pause_strategy``). An id not in the config (e.g. manual orders) gets the global settings.
    - ``"global"``: ``consecutive_losses`` and ``rolling_loss`` across all strategies, with
      ``cfg.safety.breakers`` (action ``halt_engine``), and ``clock_drift``.
      Global ``consecutive_losses`` counts losing round trips from any strategy in the order they
      are reported; a win (or break-even) from any strategy ends the streak. Global
      ``rolling_loss`` sums every strategy's realised PnL in the window against total equity.
    - ``"symbol:<SYMBOL>"``: ``stale_feed`` (action ``block_symbol``).

Windows are half-open, ``(ts - window, ts]``, as in `engine.throttle`: an entry exactly one window
old has left. Re-arming: ``stale_feed`` re-arms on a fresh quote and ``clock_drift`` when the drift
is back under the warn level (both condition-based, never on a cooldown); ``unreviewed_fills``
re-arms only when a person reviews (`reviewed` or `rearm`), since its whole point is a person;
every other breaker re-arms by `rearm` or, when its config says ``rearm = "auto"``, on the first
`on_clock` at or after ``cooldown_s`` since the trip. A re-arm resets that breaker's counters.
"""

from __future__ import annotations

import itertools
import math
from bisect import insort
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from engine.config import BreakersConfig, Config
from engine.types import CLOCK_BACK_NS, NS_PER_SECOND, fast_init

# Breaker names.
CONSECUTIVE_LOSSES = "consecutive_losses"
ROLLING_LOSS = "rolling_loss"
ORDERS_PER_MINUTE = "orders_per_minute"
SIGNAL_RATE = "signal_rate"
CONSECUTIVE_REJECTS = "consecutive_rejects"
SLIPPAGE = "slippage"
STALE_FEED = "stale_feed"
CLOCK_DRIFT = "clock_drift"
UNREVIEWED_FILLS = "unreviewed_fills"

STRATEGY_BREAKERS = (
    CONSECUTIVE_LOSSES,
    ROLLING_LOSS,
    ORDERS_PER_MINUTE,
    SIGNAL_RATE,
    CONSECUTIVE_REJECTS,
    SLIPPAGE,
    UNREVIEWED_FILLS,
)
GLOBAL_BREAKERS = (CONSECUTIVE_LOSSES, ROLLING_LOSS, CLOCK_DRIFT)
# Re-armed by their condition clearing or by a person, never by the cooldown.
NO_COOLDOWN = frozenset({STALE_FEED, CLOCK_DRIFT, UNREVIEWED_FILLS})

# Actions.
PAUSE_STRATEGY = "pause_strategy"
HALT_ENGINE = "halt_engine"
BLOCK_SYMBOL = "block_symbol"
WARN = "warn"
NONE = "none"

GLOBAL = "global"
SYMBOL_PREFIX = "symbol:"
SYSTEM = "system"

# A model estimate of 0 bps (e.g. a maker fill) would make any slippage "infinitely" worse than
# the model; below this floor the model is taken as this many bps.
SLIPPAGE_MODEL_FLOOR_BPS = 2.0

_FOREVER = (1 << 63) - 1
_BIG = 1e308  # below it a float sum is an ordinary one (fsum's own rules beyond)
_MINUTE_NS = 60 * NS_PER_SECOND
_HOUR_NS = 3600 * NS_PER_SECOND
_UNNAMED = itertools.count()


@fast_init
@dataclass(slots=True, frozen=True)
class BreakerChange:
    """A trip (``tripped=True``) or a re-arm; the engine journals it and acts on ``action``."""

    breaker: str
    scope: str
    tripped: bool
    action: str
    reason: str
    value: float
    limit: float
    ts: int
    by: str = SYSTEM

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> BreakerChange:
        return BreakerChange(
            breaker=str(data["breaker"]),
            scope=str(data["scope"]),
            tripped=bool(data["tripped"]),
            action=str(data["action"]),
            reason=str(data.get("reason", "")),
            value=float(data.get("value") or 0.0),
            limit=float(data.get("limit") or 0.0),
            ts=int(data["ts"]),
            by=str(data.get("by", SYSTEM)),
        )


def _push(window: deque[Any], item: Any) -> None:
    """Append in time order; a late arrival is inserted in place so left-pruning stays right."""
    if not window or window[-1] <= item:
        window.append(item)
    else:
        insort(window, item)


def _prune_ts(window: deque[int], cutoff: int) -> None:
    while window and window[0] <= cutoff:
        window.popleft()


def _count_within(window: deque[int], ts: int, span_ns: int) -> int:
    """Add ``ts`` to a window of times, drop those ``span_ns`` or more before it: the count."""
    _push(window, ts)
    _prune_ts(window, ts - span_ns)
    return len(window)


class _Trip:
    __slots__ = ("action", "limit", "reason", "since", "ts", "value")

    def __init__(
        self, action: str, reason: str, value: float, limit: float, ts: int, since: int = 0
    ) -> None:
        self.action = action
        self.reason = reason
        self.value = value
        self.limit = limit
        self.ts = ts
        # The board's time its cooldown counts from: never before the board's clock at the
        # trip (a trip stamped behind it, by an observation on a clock that went back, counted
        # the step as cooldown served and re-armed at the next tick).
        self.since = max(ts, since)


class _LossTracker:
    """Losing streak and rolling realised loss for one scope (a strategy, or all of them).

    The streak counts trades, not fills: every fill of one closing order (a close that walks
    the book, a venue's partial fills, also when another close's fills come in between) is
    one trade, judged on its sum so far. The rolling loss takes every fill as it comes."""

    __slots__ = (
        "evicted",
        "max_loss_pct",
        "max_streak",
        "recent",
        "rolling",
        "streak",
        "trades",
        "window_ns",
    )

    # How many recent closing orders a further fill is matched to (older ones are settled).
    TRADES_KEPT = 64

    def __init__(self, cfg: BreakersConfig, max_streak: int | None = None) -> None:
        self.max_streak = cfg.consecutive_losses if max_streak is None else max_streak
        self.max_loss_pct = cfg.rolling_loss.max_loss_pct
        self.window_ns = round(cfg.rolling_loss.window_s * NS_PER_SECOND)
        self.streak = 0
        self.recent: deque[float] = deque(maxlen=self.max_streak)
        # (ts, pnl, equity before this round trip)
        self.rolling: deque[tuple[int, float, float]] = deque()
        # The recent trades in the order they began: closing order id -> its PnL so far, and
        # the losing trades in a row dropped from its front (the streak counts them too).
        self.trades: dict[str, float] = {}
        self.evicted = 0

    def add(self, pnl: float, equity: float, ts: int, order: str = "") -> None:
        trades = self.trades
        if order and order in trades:  # another fill of a closing trade already counted
            before = trades[order]
            after = trades[order] = before + pnl
            if (before < 0.0) != (after < 0.0) or order != next(reversed(trades)):
                self._recount()
            elif after < 0.0:  # the last trade, still losing: its PnL in the reason
                self.recent[-1] = after
        else:
            trades[order or f"\x00{next(_UNNAMED)}"] = pnl  # (no id: a trade of its own)
            if len(trades) > self.TRADES_KEPT:
                oldest = next(iter(trades))
                self.evicted = self.evicted + 1 if trades.pop(oldest) < 0.0 else 0
            if pnl < 0.0:
                self.streak += 1
                self.recent.append(pnl)
            else:  # reset_streak, inlined (once a round trip)
                self.streak = 0
                self.recent.clear()
        item = (ts, pnl, equity - pnl)
        rolling = self.rolling
        if not rolling or rolling[-1] <= item:  # _push, inlined
            rolling.append(item)
        else:
            insort(rolling, item)

    def _recount(self) -> None:
        """The streak from the trades kept: the losing ones at their end (with those dropped
        before them, when every one kept is losing)."""
        run: list[float] = []
        for trade in reversed(self.trades.values()):
            if not trade < 0.0:
                break
            run.append(trade)
        self.streak = len(run) + (self.evicted if len(run) == len(self.trades) else 0)
        self.recent.clear()
        self.recent.extend(reversed(run))

    def reset_streak(self) -> None:
        self.streak = 0
        self.recent.clear()
        self.trades.clear()
        self.evicted = 0

    def loss(self, now: int) -> tuple[float, float]:
        """(loss, equity at the window's start) over ``(now - window, now]``; loss >= 0."""
        cutoff = now - self.window_ns
        rolling = self.rolling
        while rolling and rolling[0][0] <= cutoff:
            rolling.popleft()
        if not rolling:
            return 0.0, 0.0
        first = rolling[0]
        if len(rolling) == 1:
            # fsum of one finite value is that value (a -0.0 sums to 0.0, hence the + 0.0).
            total = first[1] + 0.0
            if not -_BIG < total < _BIG:
                total = math.fsum([first[1]])
        else:
            total = math.fsum([r[1] for r in rolling])
        return max(-total, 0.0), first[2]

    def loss_pct(self, now: int) -> tuple[float, float, float]:
        loss, base = self.loss(now)
        if loss <= 0.0:
            return 0.0, 0.0, base
        pct = loss * 100.0 / base if base > 0.0 else math.inf
        return pct, loss, base

    def trips_rolling(self, loss: float, base: float) -> bool:
        # Compared multiplied out so "exactly at the percentage" is exact in floats.
        return loss > 0.0 and loss * 100.0 >= self.max_loss_pct * base


class _StrategyState:
    """Every counter the per-strategy breakers keep for one strategy."""

    __slots__ = (
        "cfg",
        "losses",
        "orders",
        "reject_reasons",
        "rejects",
        "signals",
        "slippage",
        "unreviewed",
    )

    def __init__(self, cfg: BreakersConfig) -> None:
        self.cfg = cfg
        self.losses = _LossTracker(cfg)
        self.orders: deque[int] = deque()
        self.signals: deque[int] = deque()
        self.rejects = 0
        self.reject_reasons: deque[str] = deque(maxlen=cfg.consecutive_rejects)
        self.slippage: deque[tuple[float, float]] = deque(maxlen=cfg.slippage_window_fills)
        self.unreviewed = 0

    @property
    def signal_limit(self) -> float:
        return self.cfg.signal_rate_multiple * self.cfg.baseline_signals_per_hour

    def slippage_means(self) -> tuple[float, float]:
        """(mean realised bps, the bps above which it trips) over the current window."""
        if not self.slippage:
            return 0.0, SLIPPAGE_MODEL_FLOOR_BPS * (1.0 + self.cfg.slippage_excess_pct / 100.0)
        n = len(self.slippage)
        realised = math.fsum([r for r, _ in self.slippage]) / n
        model = max(math.fsum([m for _, m in self.slippage]) / n, SLIPPAGE_MODEL_FLOOR_BPS)
        return realised, model * (100.0 + self.cfg.slippage_excess_pct) / 100.0


class BreakerBoard:
    """Every breaker for every scope; observations return the trips and re-arms they cause."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.global_cfg = cfg.safety.breakers
        self.ccy = cfg.portfolio.quote_currency
        self.stale_after_s = cfg.market.validation.stale_after_s
        self._stale_ns = round(self.stale_after_s * NS_PER_SECOND)
        self._strategies: dict[str, _StrategyState] = {
            s.id: _StrategyState(cfg.breakers_for(s.id)) for s in cfg.strategies
        }
        # The engine-wide streak halts everything, so it has its own, looser limit.
        self._global = _LossTracker(self.global_cfg, self.global_cfg.global_consecutive_losses)
        self._tripped: dict[tuple[str, str], _Trip] = {}
        self._changed_ts: dict[tuple[str, str], int] = {}
        self._last_quote: dict[str, int] = {}
        # Index of stale-tripped symbols so on_quote is one dict store and one set lookup.
        self._stale_symbols: set[str] = set()
        self._drift_level = 0  # 0 fine, 1 warned, 2 halted
        self._drift_ms = 0.0
        self.now = 0
        # Each venue's own clock, where venues' clocks may disagree (venue feeds; None for one
        # stream of events on one clock: the simulated market, a replay, a backtest): its last
        # quote's stamp, moved on between quotes to the stamp plus the time since its receipt
        # (the shell passes it in: EngineCore.set_venue_clocks). A symbol's age is measured on
        # its own venue's clock, never on ``now``, which runs with whichever venue is ahead: a
        # venue whose clock led this machine's by seconds made every other venue's fresh
        # quotes that much older (their stale_feed tripped, their orders were denied stale).
        self.venue_now: dict[str, int] | None = None
        self.venue_of: dict[str, str] = {}  # symbol -> its venue (with venue_now)

    # ------------------------------------------------------------------ plumbing

    def _state(self, strategy_id: str) -> _StrategyState:
        state = self._strategies.get(strategy_id)
        if state is None:
            state = self._strategies[strategy_id] = _StrategyState(
                self.cfg.breakers_for(strategy_id)
            )
        return state

    def _cfg_for(self, scope: str) -> BreakersConfig:
        if scope == GLOBAL or scope.startswith(SYMBOL_PREFIX):
            return self.global_cfg
        return self._state(scope).cfg

    def _tick(self, ts: int) -> None:
        if ts > self.now:
            self.now = ts

    def clock_of(self, symbol: str) -> int:
        """The time now on ``symbol``'s venue's own clock (``now`` where there is one clock)."""
        clocks = self.venue_now
        if clocks is not None:
            now = clocks.get(self.venue_of.get(symbol, ""))
            if now is not None:
                return now
        return self.now

    def _trip(
        self,
        breaker: str,
        scope: str,
        action: str,
        reason: str,
        value: float,
        limit: float,
        ts: int,
    ) -> list[BreakerChange]:
        """Latch a trip; a breaker already tripped with the same action says nothing new."""
        key = (breaker, scope)
        current = self._tripped.get(key)
        if current is not None:
            current.value = value
            if current.action == action:
                return []
        self._tripped[key] = _Trip(action, reason, value, limit, ts, self.now)
        self._changed_ts[key] = ts
        if breaker == STALE_FEED:
            self._stale_symbols.add(scope[len(SYMBOL_PREFIX) :])
        return [BreakerChange(breaker, scope, True, action, reason, value, limit, ts)]

    def _release(self, breaker: str, scope: str, reason: str, by: str, ts: int) -> BreakerChange:
        """Re-arm a tripped breaker: drop the trip and reset its counters."""
        key = (breaker, scope)
        trip = self._tripped.pop(key)
        self._changed_ts[key] = ts
        self._reset(breaker, scope)
        value, limit = self._measure(breaker, scope)
        return BreakerChange(
            breaker, scope, False, NONE, reason, value, limit if limit else trip.limit, ts, by
        )

    def _reset(self, breaker: str, scope: str) -> None:
        if breaker == STALE_FEED:
            self._stale_symbols.discard(scope[len(SYMBOL_PREFIX) :])
            return
        if breaker == CLOCK_DRIFT:
            self._drift_level = 0
            return
        if scope == GLOBAL:
            tracker = self._global
        elif scope.startswith(SYMBOL_PREFIX):
            return
        else:
            state = self._state(scope)
            tracker = state.losses
            if breaker == ORDERS_PER_MINUTE:
                state.orders.clear()
            elif breaker == SIGNAL_RATE:
                state.signals.clear()
            elif breaker == CONSECUTIVE_REJECTS:
                state.rejects = 0
                state.reject_reasons.clear()
            elif breaker == SLIPPAGE:
                state.slippage.clear()
            elif breaker == UNREVIEWED_FILLS:
                state.unreviewed = 0
        if breaker == CONSECUTIVE_LOSSES:
            tracker.reset_streak()
        elif breaker == ROLLING_LOSS:
            tracker.rolling.clear()

    def _measure(self, breaker: str, scope: str) -> tuple[float, float]:
        """The breaker's current gauge and its limit, in the same unit."""
        now = self.now
        if breaker == STALE_FEED:
            symbol = scope[len(SYMBOL_PREFIX) :]
            last = self._last_quote.get(symbol)
            age = (self.clock_of(symbol) - last) / NS_PER_SECOND if last is not None else 0.0
            return max(age, 0.0), self.stale_after_s
        if breaker == CLOCK_DRIFT:
            return abs(self._drift_ms), self.global_cfg.clock_drift_halt_ms
        if scope.startswith(SYMBOL_PREFIX):
            return 0.0, 0.0
        state: _StrategyState | None = None
        if scope == GLOBAL:
            tracker = self._global
        else:
            state = self._state(scope)
            tracker = state.losses
        if breaker == CONSECUTIVE_LOSSES:
            return float(tracker.streak), float(tracker.max_streak)
        if breaker == ROLLING_LOSS:
            pct, _, _ = tracker.loss_pct(now)
            return pct, tracker.max_loss_pct
        if state is None:
            return 0.0, 0.0
        if breaker == ORDERS_PER_MINUTE:
            _prune_ts(state.orders, now - _MINUTE_NS)
            return float(len(state.orders)), float(state.cfg.orders_per_minute)
        if breaker == SIGNAL_RATE:
            _prune_ts(state.signals, now - _HOUR_NS)
            return float(len(state.signals)), state.signal_limit
        if breaker == CONSECUTIVE_REJECTS:
            return float(state.rejects), float(state.cfg.consecutive_rejects)
        if breaker == SLIPPAGE:
            return state.slippage_means()
        if breaker == UNREVIEWED_FILLS:
            return float(state.unreviewed), float(state.cfg.max_unreviewed_fills)
        return 0.0, 0.0

    # ------------------------------------------------------------------ observations

    def on_round_trip(
        self, strategy_id: str, pnl: float, equity: float, ts: int, order: str = ""
    ) -> list[BreakerChange]:
        """A reducing fill's realised PnL net of fees, and total equity after it; ``order``
        is the closing order's id (its fills in a row are one trade for the streaks).

        Feeds the strategy's and the global losing streak (``pnl == 0`` is not a loss) and
        rolling loss. The rolling loss is measured against the equity just before the oldest
        round trip still in the window (equity at the window's start). Non-finite input is
        ignored: it cannot be summed and the portfolio's own limits watch equity.
        """
        if ts > self.now:  # _tick, inlined: these run for every order
            self.now = ts
        if not (math.isfinite(pnl) and math.isfinite(equity)):
            return []
        state = self._strategies.get(strategy_id) or self._state(strategy_id)
        out: list[BreakerChange] = []
        for tracker, scope, action, cfg, across in (
            (state.losses, strategy_id, PAUSE_STRATEGY, state.cfg, ""),
            (self._global, GLOBAL, HALT_ENGINE, self.global_cfg, " across all strategies"),
        ):
            tracker.add(pnl, equity, ts, order)
            out += self._judge_losses(tracker, scope, action, cfg, across, ts)
        return out

    def _judge_losses(
        self,
        tracker: _LossTracker,
        scope: str,
        action: str,
        cfg: BreakersConfig,
        across: str,
        ts: int,
    ) -> list[BreakerChange]:
        """The losing streak and the rolling loss of one scope against its limits."""
        out: list[BreakerChange] = []
        if tracker.streak >= tracker.max_streak:
            pnls = ", ".join(f"{p:.2f}" for p in tracker.recent)
            out += self._trip(
                CONSECUTIVE_LOSSES,
                scope,
                action,
                f"{tracker.streak} consecutive losing trades{across} ({pnls} {self.ccy})",
                float(tracker.streak),
                float(tracker.max_streak),
                ts,
            )
        loss, base = tracker.loss(ts)
        if loss > 0.0 and loss * 100.0 >= tracker.max_loss_pct * base:  # trips_rolling
            pct = loss * 100.0 / base if base > 0.0 else math.inf
            out += self._trip(
                ROLLING_LOSS,
                scope,
                action,
                f"loss of {loss:,.2f} {self.ccy}{across} within "
                f"{cfg.rolling_loss.window_s:g} s is {pct:.2f}% of equity {base:,.2f} "
                f"(limit {cfg.rolling_loss.max_loss_pct:g}%)",
                pct,
                cfg.rolling_loss.max_loss_pct,
                ts,
            )
        return out

    def on_order_submitted(self, strategy_id: str, ts: int) -> list[BreakerChange]:
        """An order went out: more than ``orders_per_minute`` in 60 s looks like a runaway."""
        if ts > self.now:  # _tick, inlined: these run for every order
            self.now = ts
        state = self._strategies.get(strategy_id) or self._state(strategy_id)
        count = _count_within(state.orders, ts, _MINUTE_NS)
        limit = state.cfg.orders_per_minute
        if count <= limit:
            return []
        return self._trip(
            ORDERS_PER_MINUTE,
            strategy_id,
            PAUSE_STRATEGY,
            f"{count} orders within 60 s (limit {limit} per minute)",
            float(count),
            float(limit),
            ts,
        )

    def on_signal(self, strategy_id: str, ts: int) -> list[BreakerChange]:
        """An acting (buy/sell) signal; above multiple x baseline per rolling hour trips."""
        if ts > self.now:  # _tick, inlined: these run for every order
            self.now = ts
        state = self._strategies.get(strategy_id) or self._state(strategy_id)
        count = _count_within(state.signals, ts, _HOUR_NS)
        limit = state.signal_limit
        if count <= limit:
            return []
        return self._trip(
            SIGNAL_RATE,
            strategy_id,
            PAUSE_STRATEGY,
            f"{count} acting signals in the last hour, above "
            f"{state.cfg.signal_rate_multiple:g}x the baseline of "
            f"{state.cfg.baseline_signals_per_hour:g}/h (limit {limit:g})",
            float(count),
            limit,
            ts,
        )

    def on_order_rejected(self, strategy_id: str, reason: str, ts: int) -> list[BreakerChange]:
        """A venue or broker reject; the Nth in a row trips (a broken order path). The
        engine's own refusal at the send (``EngineCore.refused_at_send``) is not one."""
        self._tick(ts)
        state = self._state(strategy_id)
        state.rejects += 1
        state.reject_reasons.append(reason)
        limit = state.cfg.consecutive_rejects
        if state.rejects < limit:
            return []
        return self._trip(
            CONSECUTIVE_REJECTS,
            strategy_id,
            PAUSE_STRATEGY,
            f"{state.rejects} consecutive order rejects (last: {reason})",
            float(state.rejects),
            float(limit),
            ts,
        )

    def on_order_accepted(self, strategy_id: str, ts: int) -> list[BreakerChange]:
        """The venue accepted an order: the reject streak is over (a trip stays latched)."""
        if ts > self.now:  # _tick, inlined: these run for every order
            self.now = ts
        state = self._strategies.get(strategy_id) or self._state(strategy_id)
        state.rejects = 0
        state.reject_reasons.clear()
        return []

    def on_fill_slippage(
        self, strategy_id: str, realized_bps: float, model_bps: float, ts: int
    ) -> list[BreakerChange]:
        """One fill's realised vs modelled slippage, in bps (positive = cost).

        Judged only once ``slippage_window_fills`` fills are in: it trips when the window's mean
        realised slippage exceeds the mean model by more than ``slippage_excess_pct`` percent.
        A mean model under `SLIPPAGE_MODEL_FLOOR_BPS` counts as the floor, so a 0 bps model
        does not make every cost a trip.
        """
        if ts > self.now:  # _tick, inlined: these run for every order
            self.now = ts
        if not (math.isfinite(realized_bps) and math.isfinite(model_bps)):
            return []
        state = self._strategies.get(strategy_id) or self._state(strategy_id)
        window = state.slippage
        window.append((realized_bps, model_bps))
        if len(window) < state.cfg.slippage_window_fills:
            return []
        # The limit is never below the floor model's; while every realised value in the window
        # is below that (the usual case) so is their mean, and the exact sums are not needed.
        floor_limit = SLIPPAGE_MODEL_FLOOR_BPS * (100.0 + state.cfg.slippage_excess_pct) / 100.0
        # max(window) is the pair with the largest realised value (pairs order by their first
        # item, all finite), without a list per fill.
        if max(window)[0] * (1.0 + 1e-9) < floor_limit:
            return []
        realised, limit = state.slippage_means()
        if realised <= limit:
            return []
        model = limit * 100.0 / (100.0 + state.cfg.slippage_excess_pct)
        excess = (realised / model - 1.0) * 100.0
        return self._trip(
            SLIPPAGE,
            strategy_id,
            PAUSE_STRATEGY,
            f"mean realised slippage {realised:.2f} bps over the last {len(state.slippage)} "
            f"fills is {excess:.0f}% above the model's {model:.2f} bps "
            f"(limit +{state.cfg.slippage_excess_pct:g}%, {limit:.2f} bps)",
            realised,
            limit,
            ts,
        )

    def on_fill(self, strategy_id: str, ts: int) -> list[BreakerChange]:
        """An automated fill no person has looked at; ``max_unreviewed_fills`` of them pause."""
        if ts > self.now:  # _tick, inlined: these run for every order
            self.now = ts
        state = self._strategies.get(strategy_id) or self._state(strategy_id)
        state.unreviewed += 1
        limit = state.cfg.max_unreviewed_fills
        if state.unreviewed < limit:
            return []
        return self._trip(
            UNREVIEWED_FILLS,
            strategy_id,
            PAUSE_STRATEGY,
            f"{state.unreviewed} automated fills without a person reviewing them (limit {limit})",
            float(state.unreviewed),
            float(limit),
            ts,
        )

    def reviewed(self, strategy_id: str, by: str, ts: int) -> list[BreakerChange]:
        """A person reviewed the strategy: the unreviewed count restarts, a trip re-arms."""
        self._tick(ts)
        state = self._state(strategy_id)
        if (UNREVIEWED_FILLS, strategy_id) in self._tripped:
            return [
                self._release(
                    UNREVIEWED_FILLS, strategy_id, f"reviewed by {by}; fill count reset", by, ts
                )
            ]
        state.unreviewed = 0
        return []

    def on_quote(self, symbol: str, ts: int) -> list[BreakerChange]:
        """Fresh data for a symbol; O(1) because it runs on every quote.

        A quote re-arms the symbol's stale trip at once, unless the quote itself is already
        older than ``stale_after`` by its venue's clock (a late, stale delivery).
        """
        last = self._last_quote.get(symbol)
        if last is None or ts > last:
            self._last_quote[symbol] = ts
        if ts > self.now:
            self.now = ts
        if symbol not in self._stale_symbols or self.clock_of(symbol) - ts > self._stale_ns:
            return []
        return [
            self._release(
                STALE_FEED, SYMBOL_PREFIX + symbol, f"fresh quote for {symbol}", SYSTEM, ts
            )
        ]

    def on_clock(self, now: int) -> list[BreakerChange]:
        """Periodic: stale feeds trip (each symbol's age on its venue's clock, see
        ``venue_now``); cooldown-based breakers re-arm when configured to."""
        if now < self.now - CLOCK_BACK_NS - self._stale_ns:
            self._clock_went_back(now)
        self._tick(now)
        now = self.now
        out: list[BreakerChange] = []
        clock_of = self.clock_of if self.venue_now is not None else None
        for symbol, last in self._last_quote.items():
            age = (now if clock_of is None else clock_of(symbol)) - last
            if age > self._stale_ns and symbol not in self._stale_symbols:
                out += self._trip(
                    STALE_FEED,
                    SYMBOL_PREFIX + symbol,
                    BLOCK_SYMBOL,
                    f"no quote for {symbol} in {age / NS_PER_SECOND:.3f} s "
                    f"(stale after {self.stale_after_s:g} s)",
                    age / NS_PER_SECOND,
                    self.stale_after_s,
                    now,
                )
        for (breaker, scope), trip in list(self._tripped.items()):
            if breaker in NO_COOLDOWN or scope.startswith(SYMBOL_PREFIX):
                continue
            cfg = self._cfg_for(scope)
            if cfg.rearm != "auto":
                continue
            if now - trip.since >= round(cfg.cooldown_s * NS_PER_SECOND):
                out.append(
                    self._release(
                        breaker,
                        scope,
                        f"re-armed automatically after the {cfg.cooldown_s:g} s cooldown",
                        SYSTEM,
                        now,
                    )
                )
        return out

    def _clock_went_back(self, now: int) -> None:
        """The clock the board is told went back to ``now``, past any disagreement between
        venues (CLOCK_BACK_NS, plus the ``stale_after`` a venue may stamp behind receipt): a
        restart on a machine whose wall clock was stepped back (a venue's untimed quotes are
        stamped on it), a replay begun again on a journal that ran later. Judged on the board's
        own clock, left in the future, every symbol was stale at once ("no quote in 3598 s"
        while quotes arrived) and no cooldown ran until the events caught up with the journal
        (a replay's: never). What happened "after now" is taken to have happened now: each
        trip's cooldown counts from now (the whole cooldown again, never less), each window
        keeps its entries for a whole window from now (never less), and each symbol's last
        quote is now."""
        self.now = now
        for trip in self._tripped.values():
            if trip.since > now:
                trip.since = now
        for symbol, last in self._last_quote.items():
            if last > now:
                self._last_quote[symbol] = now
        trackers = [self._global]
        for state in self._strategies.values():
            trackers.append(state.losses)
            for window in (state.orders, state.signals):
                if window and window[-1] > now:  # (sorted: min keeps them sorted)
                    times = [min(t, now) for t in window]
                    window.clear()
                    window.extend(times)
        for tracker in trackers:
            rolling = tracker.rolling
            if rolling and rolling[-1][0] > now:
                rolling_now = [(min(ts, now), pnl, base) for ts, pnl, base in rolling]
                rolling.clear()
                rolling.extend(rolling_now)

    def quiet_until(self, symbol: str, ts: int) -> int:
        """The latest time up to which fresh quotes for ``symbol`` from ``ts`` on (in time
        order) and ``on_clock`` report nothing, if nothing else is observed; ``ts - 1`` when the
        first quote may already report something (the symbol is stale-tripped, or ``ts`` is
        behind the board's clock, or venues keep clocks of their own: a backtest has one).
        A backtest's run of quiet bars ends there."""
        if ts < self.now or symbol in self._stale_symbols or self.venue_now is not None:
            return ts - 1
        until = _FOREVER
        stale_ns = self._stale_ns
        for other, last in self._last_quote.items():
            if other != symbol and other not in self._stale_symbols:
                until = min(until, last + stale_ns)  # on_clock trips it after that
        for (breaker, scope), trip in self._tripped.items():
            if breaker in NO_COOLDOWN or scope.startswith(SYMBOL_PREFIX):
                continue
            cfg = self._cfg_for(scope)
            if cfg.rearm == "auto":  # on_clock re-arms it at trip + cooldown
                until = min(until, trip.since + round(cfg.cooldown_s * NS_PER_SECOND) - 1)
        return until

    def advance(self, symbol: str, ts: int) -> None:
        """What quiet ``on_quote(symbol, t)`` and ``on_clock(t)`` calls up to ``ts`` leave
        behind (see `quiet_until`): the symbol's last quote time and the board's clock."""
        last = self._last_quote.get(symbol)
        if last is None or ts > last:
            self._last_quote[symbol] = ts
        if ts > self.now:
            self.now = ts

    def on_clock_drift(self, drift_ms: float, ts: int) -> list[BreakerChange]:
        """Measured offset of our clock from the venue's/NTP's, in ms (either sign).

        ``|drift| >= warn`` warns once per episode; ``>= halt`` halts the engine; a halt holds
        until the drift is back under the warn level, which re-arms (automatically). An unknown
        (non-finite) drift counts as a halt: unknown state means no new orders.
        """
        self._tick(ts)
        cfg = self.global_cfg
        size = abs(drift_ms) if math.isfinite(drift_ms) else math.inf
        self._drift_ms = drift_ms if math.isfinite(drift_ms) else math.inf
        if size >= cfg.clock_drift_halt_ms:
            self._drift_level = 2
            return self._trip(
                CLOCK_DRIFT,
                GLOBAL,
                HALT_ENGINE,
                f"clock drift {drift_ms:.1f} ms reached the halt limit of "
                f"{cfg.clock_drift_halt_ms:g} ms",
                size,
                cfg.clock_drift_halt_ms,
                ts,
            )
        if size >= cfg.clock_drift_warn_ms:
            if self._drift_level > 0:
                return []  # one warning per episode; a halt waits for < warn
            self._drift_level = 1
            return self._trip(
                CLOCK_DRIFT,
                GLOBAL,
                WARN,
                f"clock drift {drift_ms:.1f} ms (warn at {cfg.clock_drift_warn_ms:g} ms, "
                f"halt at {cfg.clock_drift_halt_ms:g} ms)",
                size,
                cfg.clock_drift_warn_ms,
                ts,
            )
        if (CLOCK_DRIFT, GLOBAL) not in self._tripped:
            self._drift_level = 0
            return []
        return [
            self._release(
                CLOCK_DRIFT,
                GLOBAL,
                f"clock drift back to {drift_ms:.1f} ms (under {cfg.clock_drift_warn_ms:g} ms)",
                SYSTEM,
                ts,
            )
        ]

    # ------------------------------------------------------------------ commands

    def still_holds(self, breaker: str, scope: str) -> str | None:
        """Why a condition-based breaker cannot be re-armed yet (its condition still holds),
        or None. A clock drift is measured about once a minute: re-armed over a drift still at
        the limit, the engine traded on that clock until the next measurement."""
        if breaker == CLOCK_DRIFT and scope == GLOBAL:
            warn = self.global_cfg.clock_drift_warn_ms
            if not abs(self._drift_ms) < warn:
                return (
                    f"the last measured clock drift is {self._drift_ms:.1f} ms, not under the "
                    f"warn level of {warn:g} ms; it re-arms by itself once it is"
                )
        elif breaker == STALE_FEED and scope.startswith(SYMBOL_PREFIX):
            symbol = scope[len(SYMBOL_PREFIX) :]
            last = self._last_quote.get(symbol)
            if last is None or self.clock_of(symbol) - last > self._stale_ns:
                return f"no fresh quote for {symbol} yet; it re-arms by itself on the next one"
        return None

    def rearm(self, breaker: str, scope: str, by: str, ts: int) -> list[BreakerChange]:
        """A person re-arms a breaker; refused ([]) when it is not tripped, or when it is one
        whose condition still holds (`still_holds`: a stale feed, a clock drift), which re-arms
        by itself when the condition clears. Counters reset.
        """
        self._tick(ts)
        if (breaker, scope) not in self._tripped or self.still_holds(breaker, scope):
            return []
        return [self._release(breaker, scope, f"re-armed by {by}", by, ts)]

    def replay(self, observations: Iterable[tuple[Any, ...]]) -> None:
        """Rebuild the counters after a restart from what was observed before it, oldest first,
        with the journaled changes in between (see `restore`): a restart (a clean stop or a
        kill -9) must not reset a losing streak, a rolling loss, the orders of the last minute,
        a run of rejects, the slippage window, the signals of the last hour or the unreviewed
        fills, or a loss limit could be dodged by restarting.

        Each observation is ``("round_trip", strategy, pnl, equity, order id, ts)``,
        ``("slippage", strategy, realised bps, model bps, ts)``, ``("submitted", strategy,
        ts)``, ``("rejected", strategy, reason, ts)``, ``("accepted", strategy, ts)``,
        ``("signal", strategy, ts)`` (an acting signal), ``("unreviewed", strategy, ts)`` (an
        automated fill), ``("reviewed", strategy, ts)`` (a person approved or resumed) or
        ``("breaker", change dict)``; a journaled re-arm resets its counters here as it did
        live. Only the journaled changes trip: a count at its limit trips on the next
        observation after start.
        """
        for item in observations:
            kind = item[0]
            if kind == "breaker":
                self.restore([item[1]])
                change = item[1]
                if not change["tripped"]:
                    self._reset(str(change["breaker"]), str(change["scope"]))
                continue
            sid = item[1]
            state = self._state(sid)
            ts = item[-1]
            self._tick(ts)
            if kind == "round_trip":
                pnl, equity, order = item[2], item[3], item[4]
                if math.isfinite(pnl) and math.isfinite(equity):
                    state.losses.add(pnl, equity, ts, order)
                    self._global.add(pnl, equity, ts, order)
            elif kind == "slippage":
                if math.isfinite(item[2]) and math.isfinite(item[3]):
                    state.slippage.append((item[2], item[3]))
            elif kind == "submitted":
                _count_within(state.orders, ts, _MINUTE_NS)
            elif kind == "signal":
                _count_within(state.signals, ts, _HOUR_NS)
            elif kind == "rejected":
                state.rejects += 1
                state.reject_reasons.append(str(item[2]))
            elif kind == "accepted":
                state.rejects = 0
                state.reject_reasons.clear()
            elif kind == "unreviewed":
                state.unreviewed += 1
            elif kind == "reviewed":
                state.unreviewed = 0

    def judge(self, ts: int) -> list[BreakerChange]:
        """After `replay` at a start: trip every breaker whose rebuilt counter is already at
        its limit (the limits this start configures may be tighter than those it was counted
        under), as the next observation would have; the configured strategies and the engine."""
        # (the board's own clock is left where the journal left it: a start on a clock that
        # went back measures its step from there, as without this call)
        now = max(self.now, ts)
        out: list[BreakerChange] = []
        configured = {s.id for s in self.cfg.strategies}
        for sid, state in list(self._strategies.items()):
            if sid not in configured:
                continue
            out += self._judge_losses(state.losses, sid, PAUSE_STRATEGY, state.cfg, "", now)
            cfg = state.cfg
            _prune_ts(state.orders, now - _MINUTE_NS)
            count = len(state.orders)
            if count > cfg.orders_per_minute:
                out += self._trip(
                    ORDERS_PER_MINUTE,
                    sid,
                    PAUSE_STRATEGY,
                    f"{count} orders within 60 s (limit {cfg.orders_per_minute} per minute)",
                    float(count),
                    float(cfg.orders_per_minute),
                    now,
                )
            _prune_ts(state.signals, now - _HOUR_NS)
            count, limit = len(state.signals), state.signal_limit
            if count > limit:
                out += self._trip(
                    SIGNAL_RATE,
                    sid,
                    PAUSE_STRATEGY,
                    f"{count} acting signals in the last hour, above "
                    f"{cfg.signal_rate_multiple:g}x the baseline of "
                    f"{cfg.baseline_signals_per_hour:g}/h (limit {limit:g})",
                    float(count),
                    limit,
                    now,
                )
            if state.rejects and state.rejects >= cfg.consecutive_rejects:
                last = state.reject_reasons[-1] if state.reject_reasons else ""
                out += self._trip(
                    CONSECUTIVE_REJECTS,
                    sid,
                    PAUSE_STRATEGY,
                    f"{state.rejects} consecutive order rejects (last: {last})",
                    float(state.rejects),
                    float(cfg.consecutive_rejects),
                    now,
                )
            if len(state.slippage) >= cfg.slippage_window_fills:
                realised, limit = state.slippage_means()
                if realised > limit:
                    model = limit * 100.0 / (100.0 + cfg.slippage_excess_pct)
                    out += self._trip(
                        SLIPPAGE,
                        sid,
                        PAUSE_STRATEGY,
                        f"mean realised slippage {realised:.2f} bps over the last "
                        f"{len(state.slippage)} fills is "
                        f"{(realised / model - 1.0) * 100.0:.0f}% above the model's "
                        f"{model:.2f} bps (limit +{cfg.slippage_excess_pct:g}%, {limit:.2f} bps)",
                        realised,
                        limit,
                        now,
                    )
            if state.unreviewed and state.unreviewed >= cfg.max_unreviewed_fills:
                out += self._trip(
                    UNREVIEWED_FILLS,
                    sid,
                    PAUSE_STRATEGY,
                    f"{state.unreviewed} automated fills without a person reviewing them "
                    f"(limit {cfg.max_unreviewed_fills})",
                    float(state.unreviewed),
                    float(cfg.max_unreviewed_fills),
                    now,
                )
        across = " across all strategies"
        out += self._judge_losses(self._global, GLOBAL, HALT_ENGINE, self.global_cfg, across, now)
        return out

    def restore(self, changes: Iterable[dict[str, Any]]) -> None:
        """Re-apply journaled `BreakerChange` dicts, oldest first, after a restart.

        Tripped breakers stay tripped (latched), with their original reason and trip time (so an
        auto cooldown counts from the trip); the counters are rebuilt by `replay`. A restored
        stale symbol stays blocked until its first fresh quote.
        """
        for data in changes:
            change = BreakerChange.from_dict(data)
            key = (change.breaker, change.scope)
            scope = change.scope
            if scope != GLOBAL and not scope.startswith(SYMBOL_PREFIX):
                self._state(scope)
            self._changed_ts[key] = change.ts
            symbol = scope[len(SYMBOL_PREFIX) :] if scope.startswith(SYMBOL_PREFIX) else ""
            if change.tripped:
                self._tripped[key] = _Trip(
                    change.action, change.reason, change.value, change.limit, change.ts
                )
                if change.breaker == STALE_FEED:
                    self._stale_symbols.add(symbol)
                elif change.breaker == CLOCK_DRIFT:
                    self._drift_level = 2 if change.action == HALT_ENGINE else 1
                    self._drift_ms = change.value  # the last drift measured (its size)
            else:
                self._tripped.pop(key, None)
                if change.breaker == STALE_FEED:
                    self._stale_symbols.discard(symbol)
                elif change.breaker == CLOCK_DRIFT:
                    self._drift_level = 0
                    self._drift_ms = 0.0

    # ------------------------------------------------------------------ questions

    def blocked(
        self, strategy_id: str, symbol: str, closes_own: Callable[[], bool] | None = None
    ) -> str | None:
        """Why an order from this strategy on this symbol must not go out; None if free.
        ``closes_own``: does the order only close the strategy's own position (asked only when
        a breaker paused it): a pause stops the strategy's new entries, not its exits."""
        tripped = self._tripped
        if not tripped:
            return None
        for (breaker, _scope), trip in tripped.items():
            if trip.action == HALT_ENGINE:
                return f"engine halted by breaker {breaker}: {trip.reason}"
        if symbol in self._stale_symbols:
            trip = tripped[(STALE_FEED, SYMBOL_PREFIX + symbol)]
            return f"{symbol} blocked by breaker {STALE_FEED}: {trip.reason}"
        for (breaker, scope), trip in tripped.items():
            if trip.action == PAUSE_STRATEGY and scope == strategy_id:
                if closes_own is not None and closes_own():
                    return None
                return f"{strategy_id} paused by breaker {breaker}: {trip.reason}"
        return None

    def tripped(self) -> list[BreakerChange]:
        """The breakers tripped right now, as the changes that tripped them."""
        return [
            BreakerChange(b, s, True, t.action, t.reason, t.value, t.limit, t.ts)
            for (b, s), t in self._tripped.items()
        ]

    def status(self) -> list[dict[str, Any]]:
        """Every breaker x scope, with its gauge: global, then strategies, then symbols."""
        keys: list[tuple[str, str]] = [(b, GLOBAL) for b in GLOBAL_BREAKERS]
        for strategy_id in self._strategies:
            keys += [(b, strategy_id) for b in STRATEGY_BREAKERS]
        symbols = sorted(set(self._last_quote) | self._stale_symbols)
        keys += [(STALE_FEED, SYMBOL_PREFIX + s) for s in symbols]
        seen = set(keys)
        keys += [k for k in self._tripped if k not in seen]  # restored names we do not know
        out = []
        for key in keys:
            breaker, scope = key
            value, limit = self._measure(breaker, scope)
            trip = self._tripped.get(key)
            out.append(
                {
                    "name": breaker,
                    "scope": scope,
                    "tripped": trip is not None,
                    "action": trip.action if trip is not None else NONE,
                    "reason": trip.reason if trip is not None else "",
                    "value": value,
                    "limit": limit if limit or trip is None else trip.limit,
                    "ts": trip.ts if trip is not None else self._changed_ts.get(key, 0),
                }
            )
        return out
