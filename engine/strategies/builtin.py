"""The built-in strategies: EMA crossover, RSI mean reversion, Donchian breakout.

All three follow the same position rules so the trace reads the same way:

- a bullish event when flat enters long (BUY); when short it covers (BUY, reduce_only); when
  already long there is nothing to say (None);
- a bearish event when long exits (SELL, reduce_only); when flat it enters short (SELL) only if
  ``allow_short``, otherwise it returns a HOLD that says "short entries disabled", so "why didn't
  it trade?" is answered in the trace; when already short, None.

Signals are event-driven (a cross, a zone entry, a breakout), so most bars return None and a
rejected order is not re-requested on every following bar. Each signal carries the numbers behind
it in ``inputs`` and a confidence in [0, 1] from the strength of the event, scaled by volatility
(ATR) or by the depth into the RSI zone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from engine.indicators import ATR, EMA, RSI, Donchian
from engine.strategies.base import (
    OrderParams,
    Strategy,
    StrategyParams,
    clip01,
    position_sign,
)
from engine.types import Action, Bar, BarSeries, PositionView, Signal

# Longest lookback accepted for any period: far beyond any sensible use, and it bounds memory.
MAX_PERIOD = 100_000

Period = Annotated[int, Field(ge=2, le=MAX_PERIOD, strict=True)]


# _decide's answers, made once: reading ``Action.BUY`` costs ~10x a module global on 3.11.
_COVER_SHORT = (Action.BUY, True, "covering short")
_ENTER_LONG = (Action.BUY, False, "entering long")
_EXIT_LONG = (Action.SELL, True, "exiting long")
_ENTER_SHORT = (Action.SELL, False, "entering short")
_NO_SHORT = (Action.HOLD, False, "short entries disabled (allow_short = false)")
_HOLD = Action.HOLD


def _decide(direction: int, pos: int, allow_short: bool) -> tuple[Action, bool, str] | None:
    """Map a bullish (+1) / bearish (-1) event and the position to (action, reduce_only, why)."""
    if direction > 0:
        if pos > 0:
            return None
        if pos < 0:
            return _COVER_SHORT
        return _ENTER_LONG
    if pos < 0:
        return None
    if pos > 0:
        return _EXIT_LONG
    if allow_short:
        return _ENTER_SHORT
    return _NO_SHORT


def _decimals(x: float) -> int:
    """Two decimals for prices >= 1; enough significant digits for small prices."""
    ax = abs(x)
    if ax >= 1.0 or ax == 0.0 or not math.isfinite(ax):
        return 2
    return min(10, 3 - math.floor(math.log10(ax)))


def _fmt_apart(a: float, b: float, decimals: int) -> tuple[str, str]:
    """Format two numbers so the printed values keep the order of the real ones.

    A cross or a breakout is by nature a near-tie; "30412.50 crossed above 30412.50" would read
    as a bug, so add decimals until the rounded values compare the way the true values do.
    """
    if not (a < b or a > b):  # equal (or NaN): any spelling keeps that
        spec = f".{decimals}f"
        return format(a, spec), format(b, spec)
    d = decimals
    while True:
        spec = f".{d}f"  # built once for both numbers
        sa, sb = format(a, spec), format(b, spec)
        # Rounding is monotonic, so the printed values keep the order unless they are equal:
        # different strings are different numbers, but for "-0.00" against "0.00".
        if d >= 10 or (sa != sb and (("-" not in sa and "-" not in sb) or float(sa) != float(sb))):
            return sa, sb
        d += 1


def _strength(distance: float, scale: float) -> float:
    """Confidence from a distance measured in units of ``scale`` (an ATR), clipped to [0, 1]."""
    if scale > 0.0:
        return clip01(distance / scale)
    return 1.0 if distance > 0.0 else 0.0


class EMACrossParams(OrderParams):
    # ``slow`` is declared first so the fast < slow check can sit on ``fast`` and the error names
    # ``params.fast``; validate_default catches ``slow = 5`` with the default fast of 10.
    slow: Period = 30
    fast: Annotated[int, Field(ge=1, le=MAX_PERIOD, strict=True, validate_default=True)] = 10

    @field_validator("fast")
    @classmethod
    def _fast_below_slow(cls, fast: int, info: ValidationInfo) -> int:
        slow = info.data.get("slow")
        if slow is not None and fast >= slow:
            raise ValueError(f"fast must be less than slow ({slow})")
        return fast


class EMACross(Strategy):
    """Trend following on the crossing of a fast and a slow EMA of closes.

    A cross is a change of sign of EMA(fast) - EMA(slow) relative to the last non-zero sign (a touch
    that returns to the same side is not a cross). The first bar with both EMAs warm only records
    the side. Confidence: how far the close already sits beyond EMA(slow) in the signal's
    direction, in units of 3 ATR(slow) (3 ATR or more = 1.0; on the BTC 1-minute data the median
    cross scores about 0.36).
    """

    kind = "ema_cross"
    Params = EMACrossParams
    params: EMACrossParams

    def __init__(
        self,
        strategy_id: str,
        symbol: str,
        params: BaseModel | Mapping[str, Any] | None = None,
        allow_short: bool = False,
    ) -> None:
        super().__init__(strategy_id, symbol, params, allow_short)
        p = self.params
        self._fast = EMA(p.fast)
        self._slow = EMA(p.slow)
        self._atr = ATR(p.slow)
        self._last_sign = 0
        self._entry_limit = p.entry_limit()  # None: entries are market orders

    @property
    def warmup_bars(self) -> int:
        return self.params.slow

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        close = bar.close
        fast = self._fast.update(close)
        slow = self._slow.update(close)
        atr = self._atr.update(bar.high, bar.low, close)
        if slow is None or fast is None or atr is None:
            return None
        diff = fast - slow
        if diff > 0.0:
            sign = 1
        elif diff < 0.0:
            sign = -1
        else:
            return None
        last = self._last_sign
        if sign == last:
            return None
        self._last_sign = sign
        if last == 0:
            return None
        return self._cross(sign, close, fast, slow, atr, position)

    def scan(
        self, bars: BarSeries, start: int, stop: int, position: PositionView
    ) -> tuple[int, Signal | None]:
        """``on_bar`` over the columns with the EMA and ATR arithmetic inlined (no Bar, no
        calls): the same float operations in the same order, so the same values and signals."""
        fast, slow, atr = self._fast, self._slow, self._atr
        i = start
        while fast.value is None or slow.value is None or atr.value is None:  # warming up
            if i >= stop:
                return stop, None
            signal = self.on_bar(bars.bar(i), position)
            if signal is not None:
                return i, signal
            i += 1
        af, as_ = fast.alpha, slow.alpha
        vf, vs = fast.value, slow.value
        # ATR's (v * (n - 1) + tr) / n with n as floats: int operands convert to exactly these
        # floats anyway, but float-float arithmetic takes the interpreter's fast path.
        n = float(atr.period)
        n1 = n - 1.0
        va, pc, tr = atr.value, atr.prev_close, atr.tr
        assert pc is not None  # a warm ATR has seen a close
        last = self._last_sign
        highs, lows, closes = bars.high, bars.low, bars.close
        found: tuple[int, Signal | None] = (stop, None)
        for k in range(i, stop):
            close = closes[k]
            vf += af * (close - vf)
            vs += as_ * (close - vs)
            high = highs[k]
            low = lows[k]
            tr = (high if high > pc else pc) - (low if low < pc else pc)
            va = (va * n1 + tr) / n
            pc = close
            diff = vf - vs
            if diff > 0.0:
                sign = 1
            elif diff < 0.0:
                sign = -1
            else:
                continue
            if sign == last:
                continue
            prev, last = last, sign
            if prev == 0:
                continue
            signal = self._cross(sign, close, vf, vs, va, position)
            if signal is not None:
                found = (k, signal)
                break
        fast.value, slow.value = vf, vs
        atr.value, atr.prev_close, atr.tr = va, pc, tr
        self._last_sign = last
        return found

    def _cross(
        self, sign: int, close: float, fast: float, slow: float, atr: float, position: PositionView
    ) -> Signal | None:
        """The signal for a cross in direction ``sign`` (None when the position says nothing)."""
        decision = _decide(sign, position_sign(position), self.allow_short)
        if decision is None:
            return None
        action, reduce_only, why = decision
        p = self.params
        sf, ss = _fmt_apart(fast, slow, _decimals(slow))
        word = "above" if sign > 0 else "below"
        return Signal(  # positional (action, rule, reason, confidence, inputs, reduce_only)
            action,
            "ema_cross_up" if sign > 0 else "ema_cross_down",
            f"EMA({p.fast}) {sf} crossed {word} EMA({p.slow}) {ss}; {why}",
            _strength(sign * (close - slow), 3.0 * atr),
            {
                "close": close,
                "ema_fast": fast,
                "ema_slow": slow,
                "atr": atr,
                "fast": float(p.fast),
                "slow": float(p.slow),
                "position_qty": float(position.qty),
            },
            reduce_only,
            None if reduce_only else self._entry_limit,
        )


class RSIReversionParams(StrategyParams):
    # ``upper`` first so the lower < upper check can sit on ``lower`` (see EMACrossParams).
    period: Period = 14
    upper: Annotated[float, Field(gt=0, lt=100)] = 70.0
    lower: Annotated[float, Field(gt=0, lt=100, validate_default=True)] = 30.0

    @field_validator("lower")
    @classmethod
    def _lower_below_upper(cls, lower: float, info: ValidationInfo) -> float:
        upper = info.data.get("upper")
        if upper is not None and lower >= upper:
            raise ValueError(f"lower must be less than upper ({upper:g})")
        return lower


class RSIReversion(Strategy):
    """Mean reversion on Wilder's RSI of closes.

    Signals on the bar where RSI *crosses into* a zone: oversold when it goes from >= lower to
    < lower, overbought from <= upper to > upper (strict, so RSI exactly at a threshold is not in
    the zone). It does not re-signal while RSI stays in the zone, so a rejected order is not
    retried on every bar; RSI has to leave and re-enter the zone. Confidence: 0.5 for entering the
    zone, rising linearly to 1.0 halfway into it (RSI 15 for lower = 30, 85 for upper = 70).
    """

    kind = "rsi_reversion"
    Params = RSIReversionParams
    params: RSIReversionParams

    def __init__(
        self,
        strategy_id: str,
        symbol: str,
        params: BaseModel | Mapping[str, Any] | None = None,
        allow_short: bool = False,
    ) -> None:
        super().__init__(strategy_id, symbol, params, allow_short)
        self._rsi = RSI(self.params.period)
        self._prev: float | None = None

    @property
    def warmup_bars(self) -> int:
        # RSI(n) is warm after n+1 closes; a crossing also needs the RSI of the bar before.
        return self.params.period + 1

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        rsi = self._rsi.update(bar.close)
        prev = self._prev
        self._prev = rsi
        if rsi is None or prev is None:
            return None
        p = self.params
        lower = p.lower
        upper = p.upper
        if rsi < lower <= prev:
            direction = 1
            depth = (lower - rsi) / lower  # fraction of the zone's width
            threshold = lower
        elif rsi > upper >= prev:
            direction = -1
            depth = (rsi - upper) / (100.0 - upper)
            threshold = upper
        else:
            return None
        decision = _decide(direction, position_sign(position), self.allow_short)
        if decision is None:
            return None
        action, reduce_only, why = decision
        close = bar.close
        s_rsi, _ = _fmt_apart(rsi, threshold, 1)
        word = "below" if direction > 0 else "above"
        return Signal(  # positional (action, rule, reason, confidence, inputs, reduce_only)
            action,
            "rsi_oversold" if direction > 0 else "rsi_overbought",
            f"RSI({p.period}) {s_rsi} {word} {threshold:g}; {why}",
            clip01(0.5 + depth),
            {
                "close": close,
                "rsi": rsi,
                "prev_rsi": prev,
                "lower": lower,
                "upper": upper,
                "period": float(p.period),
                "avg_gain": self._rsi.avg_gain or 0.0,
                "avg_loss": self._rsi.avg_loss or 0.0,
                "position_qty": float(position.qty),
            },
            reduce_only,
        )


class DonchianBreakoutParams(StrategyParams):
    period: Period = 20


class DonchianBreakout(Strategy):
    """Breakout of the Donchian channel of the previous ``period`` bars.

    A close strictly above the previous bar's upper channel (the highest high of the ``period`` bars
    before this one) is bullish; strictly below the previous lower channel is bearish. The bar
    itself is not part of the channel it is tested against. A HOLD for a disabled short entry is
    said once per run of consecutive downside breakouts, not on every bar of a falling market.
    Confidence: breakout distance beyond the channel in ATR(period) units (as of the previous bar).
    """

    kind = "donchian_breakout"
    Params = DonchianBreakoutParams
    params: DonchianBreakoutParams

    def __init__(
        self,
        strategy_id: str,
        symbol: str,
        params: BaseModel | Mapping[str, Any] | None = None,
        allow_short: bool = False,
    ) -> None:
        super().__init__(strategy_id, symbol, params, allow_short)
        n = self.params.period
        self._channel = Donchian(n)
        self._atr = ATR(n)
        self._prev_break = 0

    @property
    def warmup_bars(self) -> int:
        return self.params.period

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        channel = self._channel
        upper = channel.upper  # as of the previous bar: read before this bar updates it
        lower = channel.lower
        atr = self._atr.value
        close = bar.close
        channel.update(bar.high, bar.low)
        self._atr.update(bar.high, bar.low, close)
        if upper is None or lower is None or atr is None:
            return None
        prev_break = self._prev_break
        if close > upper:
            direction = 1
            level = upper
        elif close < lower:
            direction = -1
            level = lower
        else:
            self._prev_break = 0
            return None
        self._prev_break = direction
        decision = _decide(direction, position_sign(position), self.allow_short)
        if decision is None:
            return None
        action, reduce_only, why = decision
        if action is _HOLD and prev_break == direction:
            return None
        n = self.params.period
        d = _decimals(level)
        s_close, s_level = _fmt_apart(close, level, d)
        if direction > 0:
            reason = f"close {s_close} broke above the {n}-bar high {s_level}; {why}"
        else:
            reason = f"close {s_close} broke below the {n}-bar low {s_level}; {why}"
        return Signal(  # positional (action, rule, reason, confidence, inputs, reduce_only)
            action,
            "donchian_breakout_up" if direction > 0 else "donchian_breakout_down",
            reason,
            _strength(direction * (close - level), atr),
            {
                "close": close,
                "upper": upper,
                "lower": lower,
                "atr": atr,
                "period": float(n),
                "position_qty": float(position.qty),
            },
            reduce_only,
        )
