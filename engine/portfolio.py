"""Portfolio: positions, cash, PnL, equity, peak and drawdown, marked on every quote.

``mark`` runs on every quote, so it is O(1): the portfolio keeps running sums of
``qty * mark`` (equity), ``|qty * mark|`` (gross exposure) and ``qty * avg_price`` (cost basis),
and adjusts them by the one position that moved. Peak equity is updated inside ``mark`` too, so
the drawdown the kill switch reads is exact on the very quote that causes it. Incremental float
sums drift by rounding, so they are recomputed exactly (O(positions)) on every fill, every
``sample_equity`` and every ``snapshot``; those are rare next to quotes.

Accounting: average-cost. Realized PnL is gross of fees; fees are tracked separately, so
``equity == starting_cash + realized_pnl + unrealized_pnl - fees_paid`` always holds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from engine.types import NS_PER_SECOND, Fill

NS_PER_DAY = 86_400 * NS_PER_SECOND
EQUITY_CURVE_LEN = 10_000
# A position smaller than this fraction of the trade that shrank it is float dust: it is flat.
_DUST = 1e-12


@dataclass(slots=True)
class Position:
    """One symbol's holding. Negative ``qty`` is short; ``avg_price`` is 0 when flat."""

    symbol: str
    qty: float = 0.0
    avg_price: float = 0.0
    realized_pnl: float = 0.0
    fees: float = 0.0
    mark: float = 0.0

    @property
    def unrealized_pnl(self) -> float:
        # + 0.0: a short at its own price is 0.0, not -0.0 (which reads "-0.00", a loss).
        return (self.mark - self.avg_price) * self.qty + 0.0 if self.qty else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "qty": self.qty,
            "avg_price": self.avg_price,
            "realized_pnl": self.realized_pnl,
            "fees": self.fees,
            "mark": self.mark,
            "unrealized_pnl": self.unrealized_pnl,
        }


class Portfolio:
    """Cash and positions in one quote currency, built only from fills and marks."""

    __slots__ = (
        "_cash",
        "_cost",
        "_curve",
        "_day",
        "_day_start",
        "_fees",
        "_gross",
        "_marks",
        "_mtm",
        "_open",
        "_peak",
        "_realized",
        "last_mark_ts",
        "positions",
        "quote_currency",
        "starting_cash",
    )

    def __init__(self, starting_cash: float, quote_currency: str = "USDT") -> None:
        self.starting_cash = float(starting_cash)
        self.quote_currency = quote_currency
        self.positions: dict[str, Position] = {}
        self.last_mark_ts = 0
        self._cash = self.starting_cash
        self._marks: dict[str, float] = {}  # last mark of symbols with no position yet
        self._mtm = 0.0  # sum of qty * mark
        self._gross = 0.0  # sum of |qty * mark|
        self._cost = 0.0  # sum of qty * avg_price
        self._open = 0
        self._realized = 0.0
        self._fees = 0.0
        self._peak = self.starting_cash
        self._day: int | None = None  # UTC day number (ts // NS_PER_DAY) of the current day
        self._day_start = self.starting_cash
        self._curve: deque[tuple[int, float]] = deque(maxlen=EQUITY_CURVE_LEN)

    # ------------------------------------------------------------------ events

    def apply_fill(self, fill: Fill) -> float:
        """Book a fill (open, add, reduce, close or flip); return its realized PnL, gross of fee."""
        qty = fill.qty
        if not qty > 0:
            raise ValueError(f"fill {fill.fill_id}: qty must be positive, got {qty}")
        sym = fill.symbol
        px = fill.price
        p = self.positions.get(sym)
        if p is None:
            p = Position(sym, mark=self._marks.pop(sym, px))
            self.positions[sym] = p
        q = qty * fill.side.sign
        old = p.qty
        realized = 0.0
        if old == 0 or (old > 0) == (q > 0):
            new = old + q
            p.avg_price = (p.avg_price * old + px * q) / new
            p.qty = new
        else:
            closing = min(abs(q), abs(old))
            realized = closing * (px - p.avg_price) * (1.0 if old > 0 else -1.0)
            new = old + q
            if abs(new) <= _DUST * max(abs(old), abs(q)):
                p.qty, p.avg_price = 0.0, 0.0
            elif abs(q) > abs(old):
                p.qty, p.avg_price = new, px  # flipped: the remainder opens at the fill price
            else:
                p.qty = new  # reduced: average cost unchanged
        fee = fill.fee
        p.realized_pnl += realized
        p.fees += fee
        self._cash -= q * px + fee
        self._realized += realized
        self._fees += fee
        self._resync()
        equity = self._cash + self._mtm
        if equity > self._peak:  # _raise_peak, inlined
            self._peak = equity
        return realized

    def mark(self, symbol: str, price: float, ts: int) -> None:
        """Mark a symbol to market and update peak equity. O(1): called on every quote."""
        self.last_mark_ts = ts
        p = self.positions.get(symbol)
        if p is None:
            self._marks[symbol] = price
            return
        q = p.qty
        if q:
            before = q * p.mark
            after = q * price
            self._mtm += after - before
            self._gross += abs(after) - abs(before)
            equity = self._cash + self._mtm
            if equity > self._peak:
                self._peak = equity
        p.mark = price

    def mark_run(
        self,
        symbol: str,
        prices: list[float],
        start: int,
        stop: int,
        ts: int,
        equity_out: list[float],
    ) -> None:
        """``mark(symbol, prices[k], ...)`` for k in [start, stop), ``ts`` the last one's time,
        appending equity after each mark to ``equity_out``: the same sums in the same order.
        A backtest's run of quiet bars; nothing may read the portfolio in between."""
        if stop <= start:
            return
        self.last_mark_ts = ts
        p = self.positions.get(symbol)
        q = p.qty if p is not None else 0.0
        if not q:  # nothing held: equity does not move, only the last mark matters
            if p is None:
                self._marks[symbol] = prices[stop - 1]
            else:
                p.mark = prices[stop - 1]
            equity_out.extend(repeat(self._cash + self._mtm, stop - start))
            return
        assert p is not None
        cash, mtm, gross, peak = self._cash, self._mtm, self._gross, self._peak
        append = equity_out.append
        # q * mark of one step is q * price of the step before: carry it (and its abs).
        before = q * p.mark
        abs_before = abs(before)
        for k in range(start, stop):
            after = q * prices[k]
            mtm += after - before
            abs_after = abs(after)
            gross += abs_after - abs_before
            equity = cash + mtm
            if equity > peak:
                peak = equity
            append(equity)
            before, abs_before = after, abs_after
        self._mtm, self._gross, self._peak, p.mark = mtm, gross, peak, prices[stop - 1]

    def first_breach(
        self, symbol: str, prices: list[float], start: int, stop: int, floor: float, keep: float
    ) -> int:
        """The first k in [start, stop) where marking ``prices[start..k]`` one by one would
        leave equity at or below ``floor`` or ``keep`` x peak equity (the kill switch's loss
        limits, as the engine tests them after each mark); ``stop`` if none. Changes nothing.

        A bound from the window's lowest and highest price settles most windows without the
        loop: the running sums differ from the exact telescoped equity by a few ulps per mark,
        far inside the 1e-9 relative slack.
        """
        if stop <= start:
            return stop
        p = self.positions.get(symbol)
        q = p.qty if p is not None else 0.0
        cash, mtm, peak = self._cash, self._mtm, self._peak
        if not q:  # equity and peak do not move: the answer is the same for every mark
            equity = cash + mtm
            return start if equity <= floor or equity <= peak * keep else stop
        assert p is not None
        mark = p.mark
        window = prices[start:stop]
        lo, hi = min(window), max(window)
        worst = cash + mtm + (q * (lo if q > 0 else hi) - q * mark)
        best = cash + mtm + (q * (hi if q > 0 else lo) - q * mark)
        slack = 1e-9 * (abs(cash) + abs(mtm) + abs(q) * max(abs(lo), abs(hi), abs(mark)))
        top = max(peak, best) + slack
        if worst - slack > floor and worst - slack > max(peak * keep, top * keep):
            return stop
        before = q * mark
        for k in range(start, stop):
            after = q * prices[k]
            mtm += after - before
            equity = cash + mtm
            if equity > peak:
                peak = equity
            if equity <= floor or equity <= peak * keep:
                return k
            before = after
        return stop

    def on_time(self, ts: int) -> bool:
        """Start a new trading day when ``ts`` reaches 00:00:00 UTC; True on that rollover.

        The first call only sets the current day (its start equity stays the starting cash).
        """
        day = ts // NS_PER_DAY
        if self._day is None:
            self._day = day
            return False
        if day > self._day:
            self._day = day
            self._day_start = self._cash + self._mtm
            return True
        return False

    def sample_equity(self, ts: int) -> None:
        """Append (ts, equity) to the bounded equity curve; also an exact resync of the sums."""
        self._resync()
        equity = self._cash + self._mtm
        self._raise_peak(equity)
        self._curve.append((ts, equity))

    # ------------------------------------------------------------------ figures

    @property
    def trading_day(self) -> int | None:
        """The UTC day number (ts // NS_PER_DAY) the day's start equity belongs to."""
        return self._day

    @property
    def cash(self) -> float:
        return self._cash

    @property
    def equity(self) -> float:
        return self._cash + self._mtm

    @property
    def unrealized_pnl(self) -> float:
        return self._mtm - self._cost

    @property
    def realized_pnl(self) -> float:
        return self._realized

    @property
    def fees_paid(self) -> float:
        return self._fees

    @property
    def gross_exposure(self) -> float:
        return self._gross

    @property
    def peak_equity(self) -> float:
        return self._peak

    @property
    def drawdown(self) -> float:
        """Fraction below peak equity, >= 0 (0.1 = 10% down from the peak)."""
        peak = self._peak
        if peak <= 0:
            return 0.0
        return max(0.0, (peak - (self._cash + self._mtm)) / peak)

    @property
    def day_start_equity(self) -> float:
        return self._day_start

    @property
    def daily_pnl(self) -> float:
        return self._cash + self._mtm - self._day_start

    @property
    def day(self) -> int | None:
        """The current UTC day number (ts // NS_PER_DAY), None before the first ``on_time``."""
        return self._day

    @property
    def open_position_count(self) -> int:
        return self._open

    @property
    def equity_curve(self) -> list[tuple[int, float]]:
        return list(self._curve)

    def last_mark(self, symbol: str) -> float | None:
        """The latest mark for a symbol, held or not."""
        p = self.positions.get(symbol)
        return p.mark if p is not None else self._marks.get(symbol)

    def snapshot(self) -> dict[str, Any]:
        """Everything above as plain JSON-able data (the cockpit's and the journal's view)."""
        self._resync()
        marks = dict(self._marks)
        marks.update((s, p.mark) for s, p in self.positions.items())
        return {
            "quote_currency": self.quote_currency,
            "starting_cash": self.starting_cash,
            "cash": self._cash,
            "equity": self.equity,
            "unrealized_pnl": self.unrealized_pnl,
            "realized_pnl": self._realized,
            "fees_paid": self._fees,
            "gross_exposure": self._gross,
            "peak_equity": self._peak,
            "drawdown": self.drawdown,
            "day": self._day,
            "day_start_equity": self._day_start,
            "daily_pnl": self.daily_pnl,
            "open_position_count": self._open,
            "last_mark_ts": self.last_mark_ts,
            "positions": {s: p.to_dict() for s, p in self.positions.items()},
            "marks": marks,
            "equity_curve": [[ts, eq] for ts, eq in self._curve],
        }

    # ------------------------------------------------------------------ restart

    @classmethod
    def restore(
        cls,
        starting_cash: float,
        fills: Iterable[Fill],
        marks: dict[str, float],
        quote_currency: str = "USDT",
        *,
        peak_equity: float | None = None,
        day_start_equity: float | None = None,
        day_ts: int | None = None,
        marks_ts: int | None = None,
        curve: Iterable[tuple[int, float]] = (),
    ) -> Portfolio:
        """Rebuild from journaled fills (in order) and the latest marks.

        Fills alone cannot tell the peak or the day's start equity; without them a restart would
        quietly reset the drawdown and daily-loss limits. Pass the journaled ``peak_equity``,
        ``day_start_equity`` and ``day_ts`` to carry them over. Absent, the peak is
        max(starting cash, equity) and the day starts at ``day_ts`` (if given) with equity now.
        ``marks_ts``, when given, is when ``marks`` were taken: a symbol filled after it keeps
        its last fill's price (the newer one). ``curve``: the equity samples the journaled marks
        carry, so the equity chart after a restart goes on from the one before it.
        """
        pf = cls(starting_cash, quote_currency)
        pf._curve.extend(curve)
        filled_at: dict[str, int] = {}
        for fill in fills:
            pf.apply_fill(fill)
            pf.mark(fill.symbol, fill.price, fill.ts)  # best knowledge until real marks come
            filled_at[fill.symbol] = fill.ts
        for sym, price in marks.items():
            # A fill after the marks row is the newer price: the row's older mark would value
            # the position at a price it never had with it (a false peak after a kill -9).
            if marks_ts is None or filled_at.get(sym, marks_ts) <= marks_ts:
                pf.mark(sym, price, pf.last_mark_ts)
        pf._resync()
        equity = pf.equity
        pf._peak = max(starting_cash if peak_equity is None else peak_equity, equity)
        if day_ts is not None:
            pf._day = day_ts // NS_PER_DAY
        pf._day_start = equity if day_start_equity is None else day_start_equity
        return pf

    # ------------------------------------------------------------------ internals

    def _resync(self) -> None:
        """Recompute the running sums exactly, clearing accumulated rounding."""
        mtm = gross = cost = 0.0
        n = 0
        for p in self.positions.values():
            q = p.qty
            if q:
                v = q * p.mark
                mtm += v
                gross += abs(v)
                cost += q * p.avg_price
                n += 1
        self._mtm, self._gross, self._cost, self._open = mtm, gross, cost, n

    def _raise_peak(self, equity: float) -> None:
        if equity > self._peak:
            self._peak = equity
