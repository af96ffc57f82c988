"""Backtest metrics: pure functions on an equity series and a list of fills.

Conventions (they are what the numbers mean, so they are part of the interface):

* **Equity series.** One sample per bar of the strategy timeframe, taken after the bar (and any
  fill it caused) was processed, preceded by the starting equity. Marked at the bar's close (bar
  data) or at the mid of the latest quote (quote data).
* **Returns** are simple per-sample returns ``e[t] / e[t-1] - 1``.
* **Sharpe** = mean(returns) / std(returns, ddof=1) * sqrt(periods per year), risk-free rate 0.
* **Sortino** = mean(returns) / downside deviation * sqrt(periods per year), where the downside
  deviation is sqrt(mean(min(r, 0)^2)) over *all* returns (target 0, risk-free 0).
* **Periods per year** = 365 * 86,400 / sampling interval in seconds (crypto trades every day:
  525,600 for 1-minute bars). Gaps in bar data are not corrected for. Quote data is sampled at
  the first quote of each interval: an interval no quote fell in (quotes sparser than the
  strategy's timeframe) counts as a period of zero return (the equity did not move), so the
  ratios are per interval, as annualised, not per quote.
* Sharpe and Sortino are None ("n/a") when undefined: fewer than two returns, a zero
  denominator (a flat equity curve or a constant return; no losing period for Sortino; a
  deviation of 1e-12 or less is float rounding and counts as zero), or equity that reached zero
  or below (a ruined account: -100 to -200 would read as a +100% return).
* **Max drawdown** is the largest fall from a running peak of the equity series, as a fraction of
  that peak (0.05 = 5%), with its amount in quote currency.
* **Exposure** is the fraction of bars after which a position was open (any non-zero position);
  on quote data of intervals, one without a quote holding the position of the one before.
* **Round trips** (trades): a trip opens when a symbol's position leaves zero and closes when it
  returns to zero; a fill that flips the position closes one trip and opens the next, its fee
  split pro rata. Average-cost accounting, as the portfolio. A trip's net PnL is gross realised
  PnL minus every fee paid on its fills; it is a win when the net PnL is > 0. A trip still open at
  the end is reported separately and counted in neither the win rate nor the trade count.
* **Slippage paid** is, per fill, ``side * (fill price - reference mid) * qty`` summed: the
  reference is the mid (or bar price) of the market at the moment the order executed, so it is
  the spread and impact the fill model charged, not the market's drift while the order was in
  flight. Positive is a cost.

The figures are data; ``cockpit.backtest_report`` draws them for a terminal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from engine.types import NS_PER_SECOND, Fill, Side

SECONDS_PER_YEAR = 365 * 86_400
_DUST = 1e-12  # as the portfolio: a position this small relative to the trade is flat
# A per-bar return deviation at or below this is float rounding (equity carries ~16 digits, so
# its noise is ~1e-16 relative), not risk: Sharpe and Sortino are then n/a, as for a flat curve.
_NOISE = 1e-12


# ------------------------------------------------------------------ series metrics


def periods_per_year(interval_s: float) -> float:
    """Samples per year for an equity series sampled every ``interval_s`` seconds (24/7)."""
    if not interval_s > 0:
        raise ValueError(f"sampling interval must be > 0 s, got {interval_s!r}")
    return SECONDS_PER_YEAR / interval_s


def drawdown_series(equity: Sequence[float] | np.ndarray) -> np.ndarray:
    """Fraction below the running peak at each sample, <= 0 (-0.05 = 5% below the peak)."""
    eq = np.asarray(equity, dtype=np.float64)
    if eq.size == 0:
        return np.empty(0)
    peak = np.maximum.accumulate(eq)
    return eq / peak - 1.0


@dataclass(slots=True, frozen=True)
class Drawdown:
    """The largest peak-to-trough fall: as a fraction of the peak, in money, and where."""

    fraction: float  # >= 0
    amount: float  # >= 0, quote currency
    peak_index: int
    trough_index: int


# ------------------------------------------------------------------ fills and round trips


@dataclass(slots=True)
class RoundTrip:
    """One trade: from a flat position to a position and back to flat (or still open)."""

    symbol: str
    direction: int  # +1 long, -1 short
    entry_ts: int
    exit_ts: int | None = None
    qty: float = 0.0  # largest absolute position during the trip
    entry_qty: float = 0.0
    entry_notional: float = 0.0
    exit_qty: float = 0.0
    exit_notional: float = 0.0
    gross_pnl: float = 0.0
    fees: float = 0.0
    fills: int = 0
    # The average cost of what is still held (the portfolio's): a trip that added after a
    # partial exit holds at a cost other than its entries' average price.
    avg_cost: float = 0.0

    @property
    def is_open(self) -> bool:
        return self.exit_ts is None

    @property
    def entry_price(self) -> float:
        return self.entry_notional / self.entry_qty if self.entry_qty else 0.0

    @property
    def exit_price(self) -> float:
        return self.exit_notional / self.exit_qty if self.exit_qty else 0.0

    @property
    def net_pnl(self) -> float:
        return self.gross_pnl - self.fees

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "side": "long" if self.direction > 0 else "short",
            "entry_ts": self.entry_ts,
            "exit_ts": self.exit_ts,
            "entry_time": iso(self.entry_ts),
            "exit_time": iso(self.exit_ts) if self.exit_ts is not None else None,
            "qty": self.qty,
            "entry_price": self.entry_price,
            # None before any exit: an open long "exited at 0.00" reads as a total loss.
            "exit_price": self.exit_price if self.exit_qty else None,
            "gross_pnl": self.gross_pnl,
            "fees": self.fees,
            "net_pnl": self.net_pnl,
            "fills": self.fills,
            "open": self.is_open,
        }


def round_trips(fills: Sequence[Fill]) -> list[RoundTrip]:
    """Group fills (in time order) into round trips per symbol; see the module docstring."""
    out: list[RoundTrip] = []
    state: dict[str, tuple[float, float, RoundTrip | None]] = {}  # symbol -> (pos, avg, trip)
    for f in fills:
        pos, avg, trip = state.get(f.symbol, (0.0, 0.0, None))
        signed = f.qty if f.side is Side.BUY else -f.qty
        size = abs(signed)
        if size <= 0.0:
            continue
        if pos == 0.0 or (pos > 0.0) == (signed > 0.0):
            if trip is None:
                trip = RoundTrip(f.symbol, 1 if signed > 0 else -1, f.ts)
                out.append(trip)
            new = pos + signed
            avg = (avg * abs(pos) + f.price * size) / abs(new)
            pos = new
            trip.entry_qty += size
            trip.entry_notional += size * f.price
            trip.fees += f.fee
            trip.fills += 1
            trip.qty = max(trip.qty, abs(pos))
            trip.avg_cost = avg
            state[f.symbol] = (pos, avg, trip)
            continue
        assert trip is not None
        closing = min(size, abs(pos))
        share = closing / size
        trip.gross_pnl += closing * (f.price - avg) * (1.0 if pos > 0 else -1.0)
        trip.exit_qty += closing
        trip.exit_notional += closing * f.price
        trip.fees += f.fee * share
        trip.fills += 1
        new = pos + signed
        if abs(new) <= _DUST * max(abs(pos), size):
            trip.exit_ts = f.ts
            state[f.symbol] = (0.0, 0.0, None)
        elif size > abs(pos):  # flipped: the remainder opens the next trip at the fill price
            trip.exit_ts = f.ts
            nxt = RoundTrip(f.symbol, 1 if signed > 0 else -1, f.ts)
            rest = size - closing
            nxt.entry_qty = rest
            nxt.entry_notional = rest * f.price
            nxt.fees = f.fee * (1.0 - share)
            nxt.fills = 1
            nxt.qty = abs(new)
            nxt.avg_cost = f.price
            out.append(nxt)
            state[f.symbol] = (new, f.price, nxt)
        else:
            state[f.symbol] = (new, avg, trip)
    return out


def open_trip_pnl(trip: RoundTrip, mark: float) -> float:
    """Net PnL of a still-open trip marked at ``mark`` (realised part + unrealised - fees)."""
    held = trip.entry_qty - trip.exit_qty
    unrealised = held * (mark - trip.avg_cost) * trip.direction
    return trip.gross_pnl + unrealised - trip.fees


def slippage_paid(fills: Sequence[Fill], refs: Sequence[float]) -> float:
    """Sum of ``side * (price - reference) * qty``: what fills paid beyond the reference mid."""
    total = 0.0
    for f, ref in zip(fills, refs, strict=True):
        total += (f.price - ref) * f.qty * (1.0 if f.side is Side.BUY else -1.0)
    return total


# ------------------------------------------------------------------ all metrics together


@dataclass(slots=True, frozen=True)
class Metrics:
    starting_equity: float
    final_equity: float
    pnl: float
    return_pct: float
    trades: int  # closed round trips
    wins: int
    losses: int
    win_rate: float | None  # wins / trades, None when no trade closed
    open_trades: int
    open_trade_pnl: float
    fees_paid: float
    slippage_paid: float
    max_drawdown_pct: float
    max_drawdown: float
    max_drawdown_start_ts: int | None
    max_drawdown_end_ts: int | None
    sharpe: float | None
    sortino: float | None
    exposure_pct: float
    periods_per_year: float
    bars: int
    fills: int

    def to_dict(self) -> dict[str, Any]:
        return {k: _finite(v) for k, v in asdict(self).items()}


_SPAN = 1 << 18  # samples per slice in curve_stats: bounded temporaries whatever the length


@dataclass(slots=True, frozen=True)
class CurveStats:
    """What the report reads from the equity and position curves."""

    drawdown: Drawdown
    sharpe: float | None
    sortino: float | None
    exposure: float


def curve_stats(
    equity: np.ndarray, position: np.ndarray, ppy: float, idle: int = 0, idle_held: int = 0
) -> CurveStats:
    """What the report reads from the curves: the drawdown, the ratios and the exposure (of
    ``position[1:]``; the first sample is the start). ``idle``: periods with no sample (no
    quote), each a zero return in the ratios and a period of exposure when a position was held
    through it (``idle_held`` of them)."""
    eq = np.asarray(equity, dtype=np.float64)
    sharpe, sortino = _ratios(eq, ppy, idle)
    held = np.asarray(position)[1:]
    exposure = exposure_fraction(held)
    if idle:
        exposure = (exposure * held.size + idle_held) / (held.size + idle)
    return CurveStats(max_drawdown(eq), sharpe, sortino, exposure)


# The curve figures read their series in slices of _SPAN samples, so a long backtest's report
# needs a few MB beside its curves rather than five more curves' worth.


def max_drawdown(equity: Sequence[float] | np.ndarray) -> Drawdown:
    """The deepest fall below the running peak (the first such, as argmin), then its peak:
    exactly the whole-array figure, read a slice at a time."""
    eq = np.asarray(equity, dtype=np.float64)
    n = int(eq.size)
    peak = -math.inf
    worst = 0.0
    trough = -1
    for a in range(0, n, _SPAN):
        part = eq[a : a + _SPAN]
        run_peak = np.maximum(np.maximum.accumulate(part), peak)
        dd = part / run_peak - 1.0
        k = int(np.argmin(dd))
        if trough < 0 or dd[k] < worst:
            worst, trough = float(dd[k]), a + k
        peak = float(run_peak[-1])
    if n == 0 or -worst <= 0.0:
        return Drawdown(0.0, 0.0, 0, 0)
    top = -math.inf
    top_i = 0
    for a in range(0, trough + 1, _SPAN):
        part = eq[a : min(a + _SPAN, trough + 1)]
        k = int(np.argmax(part))
        if part[k] > top:
            top, top_i = float(part[k]), a + k
    return Drawdown(-worst, top - float(eq[trough]), top_i, trough)


def _ratios(eq: np.ndarray, ppy: float, idle: int = 0) -> tuple[float | None, float | None]:
    """(Sharpe, Sortino) of the per-sample returns ``e[t] / e[t-1] - 1``, annualised, risk-free
    0: Sharpe over the sample std (ddof=1), Sortino over the downside deviation (target 0).
    Sums exactly rounded (``math.fsum`` of the slices' sums), so the slicing changes nothing.
    ``idle`` more periods of zero return join the samples' (periods nothing was sampled in)."""
    n = max(int(eq.size) - 1, 0)
    m = n + max(int(idle), 0)
    if n < 1 or m < 2 or not float(eq.min()) > 0.0:
        # Equity at or below zero: the account is ruined and a return has no meaning (from
        # -100 to -200 reads as +100%), so a run losing more every bar scored a positive Sharpe.
        return None, None

    def returns() -> Any:  # a slice at a time, each overlapping the last by one sample
        for a in range(0, n, _SPAN):
            b = min(a + _SPAN, n)
            yield eq[a + 1 : b + 1] / eq[a:b] - 1.0

    mean = math.fsum(float(r.sum()) for r in returns()) / m
    var = math.fsum(
        [*(float(np.square(r - mean).sum()) for r in returns()), (m - n) * mean * mean]
    ) / (m - 1)
    down = math.fsum(float(np.square(np.minimum(r, 0.0)).sum()) for r in returns()) / m
    sd, dd_dev = math.sqrt(var), math.sqrt(down)
    # A deviation of float rounding is no deviation: one ulp of wobble on a flat account read
    # as Sharpe 71, and a constant return as Sharpe 5e15.
    sharpe = mean / sd * math.sqrt(ppy) if _NOISE < sd < math.inf else None
    sortino = mean / dd_dev * math.sqrt(ppy) if _NOISE < dd_dev < math.inf else None
    return sharpe, sortino


def sharpe_ratio(equity: Sequence[float] | np.ndarray, ppy: float) -> float | None:
    """Annualised Sharpe ratio of the per-sample returns (risk-free 0, sample std, ddof=1)."""
    return _ratios(np.asarray(equity, dtype=np.float64), ppy)[0]


def sortino_ratio(equity: Sequence[float] | np.ndarray, ppy: float) -> float | None:
    """Annualised Sortino ratio: mean return over the downside deviation (target 0)."""
    return _ratios(np.asarray(equity, dtype=np.float64), ppy)[1]


def exposure_fraction(position: Sequence[float] | np.ndarray) -> float:
    """Fraction of samples with a non-zero position (0.0 for an empty series)."""
    pos = np.asarray(position, dtype=np.float64)
    if pos.size == 0:
        return 0.0
    held = sum(
        int(np.count_nonzero(np.abs(pos[a : a + _SPAN]) > _DUST)) for a in range(0, pos.size, _SPAN)
    )
    return held / pos.size


def bar_gaps(closes: np.ndarray, interval_s: int) -> dict[str, int]:
    """Where bars are missing between consecutive bar closes ``closes`` (ns): how many gaps
    (closes more than one bar apart), the bars missing in them and the longest gap in
    seconds. The ratios and the exposure count the bars present (see the module docstring), so
    the report says what is absent rather than leaving it silent."""
    step = int(interval_s) * NS_PER_SECOND
    count = missing = longest = 0
    ts = np.asarray(closes, dtype=np.int64)
    for a in range(0, max(int(ts.size) - 1, 0), _SPAN):
        d = np.diff(ts[a : a + _SPAN + 1])
        big = d[d > step]
        if big.size:
            count += int(big.size)
            missing += int((big // step - 1).sum())
            longest = max(longest, int(big.max()))
    return {"count": count, "missing_bars": missing, "longest_s": longest // NS_PER_SECOND}


def idle_intervals(
    samples: np.ndarray, interval_s: int, position: np.ndarray | None = None
) -> tuple[int, int]:
    """Intervals of ``interval_s`` between the first and the last sample (ns) in which no
    sample fell, and how many of them a position was held through (``position``: open
    positions at each sample): quote data is sampled at the first quote of each interval, so
    quotes sparser than the interval leave intervals without one (nothing moved in them)."""
    ts = np.asarray(samples, dtype=np.int64)
    if ts.size < 2:
        return 0, 0
    pos = np.zeros(ts.size) if position is None else np.asarray(position, dtype=np.float64)
    step = int(interval_s) * NS_PER_SECOND
    idle = held = 0
    for a in range(0, int(ts.size) - 1, _SPAN):
        d = np.diff(ts[a : a + _SPAN + 1] // step)
        gap = d > 1
        idle += int((d[gap] - 1).sum())
        before = pos[a : a + d.size]  # the position through each gap: the sample before it
        held += int((d[gap & (np.abs(before) > _DUST)] - 1).sum())
    return idle, held


def compute_metrics(
    ts: Sequence[int] | np.ndarray,
    equity: Sequence[float] | np.ndarray,
    position: Sequence[float] | np.ndarray,
    fills: Sequence[Fill],
    refs: Sequence[float],
    interval_s: float,
    marks: dict[str, float] | None = None,
    idle: tuple[int, int] = (0, 0),
) -> tuple[Metrics, list[RoundTrip]]:
    """Every report figure from the equity series (starting point first), the per-sample
    position (same length; the starting point's entry is ignored for exposure) and the fills.
    ``idle``: intervals without a sample, and those a position was held through (quote data;
    see ``idle_intervals``)."""
    eq = np.asarray(equity, dtype=np.float64)
    tsa = np.asarray(ts, dtype=np.int64)
    ppy = periods_per_year(interval_s)
    trips = round_trips(fills)
    closed = [t for t in trips if not t.is_open]
    opened = [t for t in trips if t.is_open]
    wins = sum(1 for t in closed if t.net_pnl > 0.0)
    marks = marks or {}
    open_pnl = sum(open_trip_pnl(t, marks.get(t.symbol, t.avg_cost)) for t in opened)
    stats = curve_stats(eq, np.asarray(position, dtype=np.float64), ppy, *idle)
    dd = stats.drawdown
    start = float(eq[0]) if eq.size else 0.0
    final = float(eq[-1]) if eq.size else 0.0
    has_dd = dd.fraction > 0.0
    metrics = Metrics(
        starting_equity=start,
        final_equity=final,
        pnl=final - start,
        return_pct=(final / start - 1.0) * 100.0 if start > 0 else 0.0,
        trades=len(closed),
        wins=wins,
        losses=len(closed) - wins,
        win_rate=wins / len(closed) if closed else None,
        open_trades=len(opened),
        open_trade_pnl=open_pnl,
        fees_paid=math.fsum(f.fee for f in fills),
        slippage_paid=slippage_paid(fills, refs),
        max_drawdown_pct=dd.fraction * 100.0,
        max_drawdown=dd.amount,
        max_drawdown_start_ts=int(tsa[dd.peak_index]) if has_dd else None,
        max_drawdown_end_ts=int(tsa[dd.trough_index]) if has_dd else None,
        sharpe=stats.sharpe,
        sortino=stats.sortino,
        exposure_pct=stats.exposure * 100.0,
        periods_per_year=ppy,
        bars=max(int(eq.size) - 1, 0),
        fills=len(fills),
    )
    return metrics, trips


# ------------------------------------------------------------------ formatting helpers


def iso(ts_ns: int | None, unit: str = "seconds") -> str:
    if ts_ns is None:
        return "-"
    sec, ns = divmod(int(ts_ns), NS_PER_SECOND)
    dt = datetime.fromtimestamp(sec, tz=UTC).replace(microsecond=ns // 1000)
    return dt.isoformat(timespec=unit).replace("+00:00", "Z")


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
