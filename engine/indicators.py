"""Incremental technical indicators: O(1) per update, bounded memory, plain floats.

Strategies run on every bar of every symbol, so an indicator must never rescan history or keep a
growing list. Each class keeps only running sums or a fixed-size window, uses ``__slots__``, and
returns ``None`` from ``update`` until it has seen enough data (``.warmup`` updates), after which
``.value`` is a float and ``.ready`` is true. Formulas (checked against pandas in the tests):

- ``SMA(n)``: mean of the last n values (compensated running sum, so 45k+ updates do not drift).
- ``EMA(n)``: alpha = 2/(n+1); seeded with the SMA of the first n values, so the first value comes
  at the n-th update; after that ``ema += alpha * (x - ema)``. Equals pandas
  ``ewm(span=n, adjust=False).mean()`` over ``[sma(x[:n]), x[n], x[n+1], ...]``.
- ``RSI(n)``: Wilder. Changes ``d = close - prev_close``; the first average gain/loss is the plain
  mean of the first n gains/losses, then ``avg = (avg*(n-1) + x)/n``. RSI = 100*G/(G+L) (the same
  as 100 - 100/(1+G/L)); 100 when there were only gains, 50 when prices did not move at all.
  n changes need n+1 closes, so RSI(n) is warm after n+1 updates (the usual definition).
- ``ATR(n)``: Wilder over the true range ``max(high, prev_close) - min(low, prev_close)``; the first
  bar has no previous close, so its TR is ``high - low``. First ATR = mean of the first n TRs (at
  the n-th update), then ``atr = (atr*(n-1) + tr)/n``.
- ``Donchian(n)``: at bar t, ``upper`` = highest high and ``lower`` = lowest low over the last n
  bars INCLUDING bar t; ``value`` is the middle line. A breakout test must therefore compare a bar
  with the channel read *before* updating with that bar. Max/min use monotonic deques (amortised
  O(1), at most n entries).
"""

from __future__ import annotations

from collections import deque


def _check_period(period: int) -> int:
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        raise ValueError(f"period must be an integer >= 1, got {period!r}")
    return period


class SMA:
    """Simple moving average over a fixed window of the last ``period`` values."""

    __slots__ = ("_comp", "_sum", "_window", "period", "value", "warmup")

    def __init__(self, period: int) -> None:
        self.period = _check_period(period)
        self.warmup = period
        self._window: deque[float] = deque(maxlen=period)
        self._sum = 0.0
        self._comp = 0.0  # Neumaier compensation: keeps the running sum exact to ~1 ulp
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        return self.value is not None

    def update(self, x: float) -> float | None:
        window = self._window
        if len(window) == self.period:
            old = -window[0]  # the deque's maxlen drops it on append
            s = self._sum
            t = s + old
            self._comp += (s - t) + old if abs(s) >= abs(old) else (old - t) + s
            self._sum = t
        window.append(x)
        s = self._sum
        t = s + x
        self._comp += (s - t) + x if abs(s) >= abs(x) else (x - t) + s
        self._sum = t
        if len(window) == self.period:
            self.value = (t + self._comp) / self.period
        return self.value


class EMA:
    """Exponential moving average, alpha = 2/(n+1), seeded with the SMA of the first n values."""

    __slots__ = ("_count", "_seed_sum", "alpha", "period", "value", "warmup")

    def __init__(self, period: int) -> None:
        self.period = _check_period(period)
        self.warmup = period
        self.alpha = 2.0 / (period + 1)
        self._count = 0
        self._seed_sum = 0.0
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        return self.value is not None

    def update(self, x: float) -> float | None:
        v = self.value
        if v is not None:
            v += self.alpha * (x - v)
            self.value = v
            return v
        self._count += 1
        self._seed_sum += x
        if self._count == self.period:
            self.value = self._seed_sum / self.period
        return self.value


class RSI:
    """Wilder's relative strength index on closes; warm after ``period + 1`` closes."""

    __slots__ = ("_count", "_gain", "_loss", "_prev", "period", "value", "warmup")

    def __init__(self, period: int) -> None:
        self.period = _check_period(period)
        self.warmup = period + 1
        self._prev: float | None = None
        self._count = 0
        self._gain = 0.0  # sum of gains while seeding, then Wilder's average gain
        self._loss = 0.0
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        return self.value is not None

    @property
    def avg_gain(self) -> float | None:
        return self._gain if self.value is not None else None

    @property
    def avg_loss(self) -> float | None:
        return self._loss if self.value is not None else None

    def update(self, close: float) -> float | None:
        prev = self._prev
        self._prev = close
        if prev is None:
            return None
        change = close - prev
        gain = change if change > 0.0 else 0.0
        loss = -change if change < 0.0 else 0.0
        n = self.period
        if self.value is not None:
            g = (self._gain * (n - 1) + gain) / n
            lo = (self._loss * (n - 1) + loss) / n
        else:
            self._count += 1
            self._gain += gain
            self._loss += loss
            if self._count < n:
                return None
            g = self._gain / n
            lo = self._loss / n
        self._gain = g
        self._loss = lo
        total = g + lo
        value = 100.0 * g / total if total > 0.0 else 50.0
        self.value = value
        return value


class ATR:
    """Wilder's average true range; the first bar's true range is high - low."""

    __slots__ = ("_count", "_sum", "period", "prev_close", "tr", "value", "warmup")

    def __init__(self, period: int) -> None:
        self.period = _check_period(period)
        self.warmup = period
        self.prev_close: float | None = None
        self._count = 0
        self._sum = 0.0
        self.tr: float | None = None  # the latest bar's true range
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        return self.value is not None

    def update(self, high: float, low: float, close: float) -> float | None:
        pc = self.prev_close
        self.prev_close = close
        if pc is None:
            tr = high - low
        else:  # max(high, pc) - min(low, pc) without the cost of builtin calls
            hi = high if high > pc else pc
            tr = hi - (low if low < pc else pc)
        self.tr = tr
        v = self.value
        n = self.period
        if v is not None:
            v = (v * (n - 1) + tr) / n
            self.value = v
            return v
        self._count += 1
        self._sum += tr
        if self._count == n:
            self.value = self._sum / n
        return self.value

    def update_many(
        self, highs: list[float], lows: list[float], closes: list[float], start: int, stop: int
    ) -> float | None:
        """``update`` for bars ``start`` to ``stop - 1`` of the columns, in a tight loop once warm
        (the same float operations in the same order, so the same value)."""
        i = start
        while self.value is None or self.prev_close is None:
            if i >= stop:
                return self.value
            self.update(highs[i], lows[i], closes[i])
            i += 1
        if i >= stop:
            return self.value
        n = float(self.period)  # as update's ints convert: exactly, but on the fast path
        n1 = n - 1.0
        v = self.value
        pc = self.prev_close
        tr = 0.0
        for k in range(i, stop):
            high = highs[k]
            low = lows[k]
            tr = (high if high > pc else pc) - (low if low < pc else pc)
            v = (v * n1 + tr) / n
            pc = closes[k]
        self.value, self.prev_close, self.tr = v, pc, tr
        return v


class Donchian:
    """Donchian channel over the last ``period`` bars including the current one."""

    __slots__ = ("_i", "_maxq", "_minq", "lower", "period", "upper", "value", "warmup")

    def __init__(self, period: int) -> None:
        self.period = _check_period(period)
        self.warmup = period
        self._i = 0
        # (bar index, price), prices decreasing (max) / increasing (min) from left to right.
        self._maxq: deque[tuple[int, float]] = deque(maxlen=period)
        self._minq: deque[tuple[int, float]] = deque(maxlen=period)
        self.upper: float | None = None
        self.lower: float | None = None
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        return self.value is not None

    def update(self, high: float, low: float) -> float | None:
        """Add a bar; returns the middle line (upper + lower) / 2 once warm."""
        i = self._i
        self._i = i + 1
        expired = i - self.period
        q = self._maxq
        while q and q[-1][1] <= high:
            q.pop()
        q.append((i, high))
        if q[0][0] <= expired:
            q.popleft()
        q = self._minq
        while q and q[-1][1] >= low:
            q.pop()
        q.append((i, low))
        if q[0][0] <= expired:
            q.popleft()
        if i + 1 < self.period:
            return None
        upper = self._maxq[0][1]
        lower = q[0][1]
        self.upper = upper
        self.lower = lower
        mid = (upper + lower) * 0.5
        self.value = mid
        return mid
