"""Protective exits: a stop-loss, a take-profit, a Chandelier trailing stop and a time stop that
live with a strategy's position, whatever the strategy itself does.

Sans-I/O like the core that drives it (engine/core.py): this module holds the rules, the state
of each position's exits and the arithmetic of a trigger; the core attaches the state on the
fill that opens a position (a flip or a new entry resets it; flat removes it), feeds it prices
and bars, and turns a trigger into a reduce-only intent through the normal order path.

What a trigger means:

* **Levels.** Stop-loss and take-profit are percentages of the entry price (the average entry
  of the strategy's position, so adding to it moves them). The trailing stop is K x ATR(N) of
  the strategy's bars below the highest price since entry (a long; above the lowest, a short),
  recomputed at each bar close and only ever moved in the position's favour. The time stop
  fires on the first market event at least N bars of the strategy's timeframe (N x timeframe)
  after the entry fill.
* **Quotes.** The mid is compared with the levels on every quote; a trigger sends a market
  order that the broker fills like any other (latency, far side, impact): at the market, never
  at the level.
* **Bars** (a bar feed or a backtest on bars). A bar whose range reaches a level triggers it at
  the level; a bar that opens beyond it (a gap) triggers it at the open, the worse price for a
  stop, never at the stop. The open is the bar's first price, so a gap decides first; after
  it, when a protective level (stop or trail) and the target both lie in the bar's range, the
  protective one is taken to have been hit first: the order of prices inside a bar is unknown,
  and this is the reading that does not flatter. The core hands the
  broker an execution quote at the trigger price, stamped inside the bar, for the exit's order
  alone (another order in flight waits for the bar's close); the broker's own fill model (far
  side, impact beyond the bar's volume, fees) prices the fill.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from engine.config import ExitsConfig
from engine.types import NS_PER_SECOND


class ExitKind(StrEnum):
    """Which exit fired: the exit decision's ``rule``."""

    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    TRAILING_STOP = "trailing_stop"
    TIME_STOP = "time_stop"


EXIT_KINDS = frozenset(k.value for k in ExitKind)
# After an exit that did not go out (denied, refused at send), when it may fire again: a
# denial repeated on every quote would bury the trace; once a second of engine time is enough.
RETRY_NS = NS_PER_SECOND
# ... and after an exit the venue (or the broker at the send) refused, doubled at each refusal in
# a row up to this: a venue that keeps refusing the close (a rate-limit ban, a balance it does not
# see) gets one order a minute, not one a second, each journaled and counted against the key.
# An exit the engine's own send-time gate refused never reached the venue: it is looked at again
# on the next event (RETRY_NS only when refused again at once), and leaves the count as it was.
REFUSED_RETRY_MAX_NS = 60 * NS_PER_SECOND
NEVER = (1 << 63) - 1
# A price equal to a level up to the rounding of float arithmetic is at the level. A level is
# computed (entry x (1 - 10/100) for a short's 10% stop from 50,000 is 55,000.000000000007) and
# a mid is computed ((bid + ask) / 2): a quote at exactly the 55,000.00 the reason and the
# Positions pane show must fire the stop. Relative, and far below any venue's tick.
LEVEL_EPS = 1e-12


def _through(price: float, level: float, side: int) -> bool:
    """``price`` at or beyond ``level`` on the position's adverse side (a stop's, a trail's)."""
    return (price - level) * side <= abs(level) * LEVEL_EPS


def _beyond(price: float, level: float, side: int) -> bool:
    """``price`` strictly beyond ``level`` on the adverse side, more than rounding (a gap)."""
    return (price - level) * side < -abs(level) * LEVEL_EPS


@dataclass(frozen=True, slots=True)
class ExitRules:
    """One strategy's exits (``[[strategies]] exits``), with its timeframe for the time stop."""

    stop_loss_pct: float | None
    take_profit_pct: float | None
    trailing_atr: float | None
    atr_period: int
    time_stop_bars: int | None
    timeframe_s: int

    DEFAULT_ATR_PERIOD = 14

    @classmethod
    def from_config(cls, cfg: ExitsConfig | None, timeframe_s: int) -> ExitRules | None:
        """The rules of a strategy, or None when it has no exit set."""
        if cfg is None or not cfg.any:
            return None
        return cls(
            cfg.stop_loss_pct,
            cfg.take_profit_pct,
            cfg.trailing_atr,
            cfg.atr_period or cls.DEFAULT_ATR_PERIOD,
            cfg.time_stop_bars,
            timeframe_s,
        )

    def stop(self, st: ExitState) -> float | None:
        pct = self.stop_loss_pct
        return None if pct is None else st.entry * (1.0 - st.side * pct / 100.0)

    def target(self, st: ExitState) -> float | None:
        pct = self.take_profit_pct
        return None if pct is None else st.entry * (1.0 + st.side * pct / 100.0)

    def time_stop_ts(self, st: ExitState) -> int | None:
        n = self.time_stop_bars
        return None if n is None else st.held_ts + n * self.timeframe_s * NS_PER_SECOND

    def protective(self, st: ExitState) -> tuple[ExitKind, float] | None:
        """The protective level nearer the market (it is reached first): the higher of stop and
        trail for a long, the lower for a short; the stop-loss on a tie."""
        stop = self.stop(st)
        trail = st.trail
        if trail is None:
            return None if stop is None else (ExitKind.STOP_LOSS, stop)
        if stop is None or (trail - stop) * st.side > 0:
            return ExitKind.TRAILING_STOP, trail
        return ExitKind.STOP_LOSS, stop

    def ratchet(self, st: ExitState, atr: float | None) -> bool:
        """Recompute the trail from the best price since entry and ATR (a bar closed): it moves
        only in the position's favour. True when it moved."""
        k = self.trailing_atr
        if k is None or atr is None or not atr > 0.0:
            return False
        level = st.best - st.side * k * atr
        if not level > 0.0:
            return False  # a trail at or below zero protects nothing (a long's ATR too wide)
        if st.trail is None or (level - st.trail) * st.side > 0.0:
            st.trail = level
            return True
        return False


@dataclass(slots=True)
class ExitState:
    """The live exits of one strategy's position on one symbol."""

    strategy_id: str
    symbol: str
    side: int  # +1 long, -1 short
    entry: float  # the average entry price of the strategy's position
    entry_ts: int  # when the fill that opened the position happened (the time stop's start)
    entry_decision_id: str  # the decision that opened it ("" when not known, e.g. restored)
    best: float  # the best price since entry: the highest for a long, the lowest for a short
    trail: float | None = None  # the Chandelier level; None until ATR is ready
    pending: str = ""  # the client order id of the exit in flight ("" when none)
    retry_ts: int = 0  # no new trigger before this (an exit that did not go out)
    refused: int = 0  # exits refused in a row by the venue or its broker (the backoff)
    voided_ts: int | None = None  # when the engine's own gate last refused one at the send
    noted: tuple[float, float | None] = (0.0, None)  # (best, trail) as last journaled
    # The protective stop working at the venue (native_stops): its client order id ("" when
    # none: the engine watches the level itself), its trigger on the grid and its quantity.
    native: str = ""
    native_level: float = 0.0
    native_qty: float = 0.0
    native_retry: int = 0  # no new venue stop placed before this (one that did not go out)
    # How far the engine's clock went back since the entry (a restart on a machine whose clock
    # was stepped back, a replay begun again: EngineCore.tick): the time held is counted from
    # ``held_ts``, so an entry stamped "in the future" neither holds the time stop back by the
    # step nor keeps the bars after it from counting (``entry_ts`` stays the journal's, the
    # position's identity across restarts).
    shift: int = 0

    @property
    def held_ts(self) -> int:
        """When the position has been held since, on the engine's clock now."""
        return self.entry_ts - self.shift

    def see(self, price: float) -> None:
        """A price since entry: the watermark follows the position's favourable side."""
        if (price - self.best) * self.side > 0.0:
            self.best = price

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy_id": self.strategy_id,
            "symbol": self.symbol,
            "side": self.side,
            "entry": self.entry,
            "entry_ts": self.entry_ts,
            "entry_decision_id": self.entry_decision_id,
            "best": self.best,
            "trail": self.trail,
        }


@dataclass(frozen=True, slots=True)
class Trigger:
    """An exit that fired: which, at what level, and the price its order is referenced to."""

    kind: ExitKind
    level: float  # the stop, target or trail (a time stop: the price when it expired)
    price: float  # execution reference: the level, the open when it gapped, or the quote mid
    gapped: bool = False


def check_price(
    rules: ExitRules, st: ExitState, price: float, protective: bool = True
) -> Trigger | None:
    """A quote's mid against the levels: the protective level first, then the target
    (``protective=False``: a venue holds the stop, only the target is the engine's)."""
    side = st.side
    prot = rules.protective(st) if protective else None
    if prot is not None and _through(price, prot[1], side):
        return Trigger(prot[0], prot[1], price)
    target = rules.target(st)
    if target is not None and _through(price, target, -side):
        return Trigger(ExitKind.TAKE_PROFIT, target, price)
    return None


def check_bar(
    rules: ExitRules,
    st: ExitState,
    open_: float,
    high: float,
    low: float,
    protective: bool = True,
    t_open: int | None = None,
) -> Trigger | None:
    """A bar's range against the levels (see the module docstring): a gap through a level
    triggers at the open; otherwise the protective level before the target when both lie in
    the range (conservative). ``protective=False``: a venue holds the stop. ``t_open``: the
    bar's open time; a time stop already due then (the bar after a gap in the data, the
    first bar after a restart) fires at the open, its first market event, not at its close."""
    side = st.side
    prot = rules.protective(st) if protective else None
    target = rules.target(st)
    if prot is not None and _through(open_, prot[1], side):
        gapped = _beyond(open_, prot[1], side)
        return Trigger(prot[0], prot[1], open_ if gapped else prot[1], gapped=gapped)
    if target is not None and _through(open_, target, -side):
        gapped = _beyond(open_, target, -side)
        return Trigger(ExitKind.TAKE_PROFIT, target, open_ if gapped else target, gapped=gapped)
    if t_open is not None:
        due = rules.time_stop_ts(st)
        if due is not None and t_open >= due:
            return Trigger(ExitKind.TIME_STOP, open_, open_)
    adverse, favourable = (low, high) if side > 0 else (high, low)
    if prot is not None and _through(adverse, prot[1], side):
        return Trigger(prot[0], prot[1], prot[1])
    if target is not None and _through(favourable, target, -side):
        return Trigger(ExitKind.TAKE_PROFIT, target, target)
    return None


def check_time(rules: ExitRules, st: ExitState, ts: int, price: float) -> Trigger | None:
    """The time stop: due at the first event at or after entry + N bars."""
    due = rules.time_stop_ts(st)
    if due is None or ts < due:
        return None
    return Trigger(ExitKind.TIME_STOP, price, price)


def fmt_price(x: float) -> str:
    """A price for a reason a person reads: thousands separated, cents, or six significant
    digits below 1."""
    return f"{x:,.2f}" if abs(x) >= 1.0 else f"{x:.6g}"


def fmt_pct(x: float) -> str:
    """A signed percentage with a true minus sign (−2.0%)."""
    return f"{x:+.1f}%".replace("-", "\u2212")


def describe(
    trig: Trigger, rules: ExitRules, st: ExitState, atr: float | None, now: int
) -> tuple[str, dict[str, float]]:
    """The exit decision's reason (one sentence) and inputs (its numbers)."""
    entry = st.entry
    where = "" if st.side > 0 else "short "
    move = (trig.level / entry - 1.0) * 100.0 if entry > 0 else 0.0
    inputs: dict[str, float] = {
        "entry": entry,
        "level": trig.level,
        "price": trig.price,
        "best": st.best,
        "side": float(st.side),
    }
    gap = f" (gapped: opened at {fmt_price(trig.price)})" if trig.gapped else ""
    if trig.kind is ExitKind.STOP_LOSS:
        text = f"stop-loss at {fmt_price(trig.level)}{gap}: {where}entry {fmt_price(entry)}, "
        text += fmt_pct(move)
    elif trig.kind is ExitKind.TAKE_PROFIT:
        text = f"take-profit at {fmt_price(trig.level)}{gap}: {where}entry {fmt_price(entry)}, "
        text += fmt_pct(move)
    elif trig.kind is ExitKind.TRAILING_STOP:
        k = rules.trailing_atr or 0.0
        word = "highest" if st.side > 0 else "lowest"
        text = (
            f"trailing stop at {fmt_price(trig.level)}{gap}: {k:g} x ATR({rules.atr_period})"
            + (f" {fmt_price(atr)}" if atr is not None else "")
            + f" from the {word} {fmt_price(st.best)} since {where}entry {fmt_price(entry)}, "
            + fmt_pct(move)
        )
        if atr is not None:
            inputs["atr"] = atr
    else:
        bars = (now - st.held_ts) // (rules.timeframe_s * NS_PER_SECOND)
        inputs["bars_held"] = float(bars)
        text = (
            f"time stop: held {bars} bars of {rules.timeframe_s}s (limit "
            f"{rules.time_stop_bars}) since {where}entry {fmt_price(entry)}; now "
            f"{fmt_price(trig.price)}, {fmt_pct(move)}"
        )
    return text, inputs


@dataclass(slots=True)
class ExitStat:
    """What one kind of exit did: trades it closed and the net PnL of what it closed."""

    count: int = 0
    pnl: float = 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {"count": self.count, "pnl": self.pnl}
