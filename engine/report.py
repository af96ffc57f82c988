"""Backtest metrics and the text report: pure functions on an equity series and a list of fills.

Conventions (they are what the numbers mean, so they are part of the interface):

* **Equity series.** One sample per bar of the strategy timeframe, taken after the bar (and any
  fill it caused) was processed, preceded by the starting equity. Marked at the bar's close (bar
  data) or at the mid of the latest quote (quote data).
* **Returns** are simple per-sample returns ``e[t] / e[t-1] - 1``.
* **Sharpe** = mean(returns) / std(returns, ddof=1) * sqrt(periods per year), risk-free rate 0.
* **Sortino** = mean(returns) / downside deviation * sqrt(periods per year), where the downside
  deviation is sqrt(mean(min(r, 0)^2)) over *all* returns (target 0, risk-free 0).
* **Periods per year** = 365 * 86,400 / sampling interval in seconds (crypto trades every day:
  525,600 for 1-minute bars). Gaps in the data are not corrected for.
* Sharpe and Sortino are None ("n/a") when undefined: fewer than two returns, or a zero
  denominator (a flat equity curve; no losing period for Sortino).
* **Max drawdown** is the largest fall from a running peak of the equity series, as a fraction of
  that peak (0.05 = 5%), with its amount in quote currency.
* **Exposure** is the fraction of bars after which a position was open (any non-zero position).
* **Round trips** (trades): a trip opens when a symbol's position leaves zero and closes when it
  returns to zero; a fill that flips the position closes one trip and opens the next, its fee
  split pro rata. Average-cost accounting, as the portfolio. A trip's net PnL is gross realised
  PnL minus every fee paid on its fills; it is a win when the net PnL is > 0. A trip still open at
  the end is reported separately and counted in neither the win rate nor the trade count.
* **Slippage paid** is, per fill, ``side * (fill price - reference mid) * qty`` summed: the
  reference is the mid (or bar price) of the market at the moment the order executed, so it is
  the spread and impact the fill model charged, not the market's drift while the order was in
  flight. Positive is a cost.

Rendering (``render_text``, ``render_chart``) is plain text; the chart uses plotext, whose figure
state is global, so call the renderers from one thread at a time.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from engine.types import NS_PER_SECOND, Fill, Side

SECONDS_PER_YEAR = 365 * 86_400
_DUST = 1e-12  # as the portfolio: a position this small relative to the trade is flat


# ------------------------------------------------------------------ series metrics


def periods_per_year(interval_s: float) -> float:
    """Samples per year for an equity series sampled every ``interval_s`` seconds (24/7)."""
    if not interval_s > 0:
        raise ValueError(f"sampling interval must be > 0 s, got {interval_s!r}")
    return SECONDS_PER_YEAR / interval_s


def simple_returns(equity: Sequence[float] | np.ndarray) -> np.ndarray:
    """Per-sample simple returns ``e[t] / e[t-1] - 1`` (length n - 1)."""
    eq = np.asarray(equity, dtype=np.float64)
    if eq.size < 2:
        return np.empty(0)
    return eq[1:] / eq[:-1] - 1.0


def sharpe_ratio(equity: Sequence[float] | np.ndarray, ppy: float) -> float | None:
    """Annualised Sharpe ratio of the per-sample returns (risk-free 0, sample std, ddof=1)."""
    r = simple_returns(equity)
    if r.size < 2:
        return None
    sd = float(r.std(ddof=1))
    if not (sd > 0.0 and math.isfinite(sd)):
        return None
    return float(r.mean()) / sd * math.sqrt(ppy)


def sortino_ratio(equity: Sequence[float] | np.ndarray, ppy: float) -> float | None:
    """Annualised Sortino ratio: mean return over the downside deviation (target 0)."""
    r = simple_returns(equity)
    if r.size < 2:
        return None
    downside = np.minimum(r, 0.0)
    dd = math.sqrt(float(np.mean(downside * downside)))
    if not (dd > 0.0 and math.isfinite(dd)):
        return None
    return float(r.mean()) / dd * math.sqrt(ppy)


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


def max_drawdown(equity: Sequence[float] | np.ndarray) -> Drawdown:
    eq = np.asarray(equity, dtype=np.float64)
    if eq.size == 0:
        return Drawdown(0.0, 0.0, 0, 0)
    peak = np.maximum.accumulate(eq)
    dd = eq / peak - 1.0
    trough = int(np.argmin(dd))
    frac = -float(dd[trough])
    if frac <= 0.0:
        return Drawdown(0.0, 0.0, 0, 0)
    peak_i = int(np.argmax(eq[: trough + 1]))
    return Drawdown(frac, float(peak[trough] - eq[trough]), peak_i, trough)


def exposure_fraction(position: Sequence[float] | np.ndarray) -> float:
    """Fraction of samples with a non-zero position (0.0 for an empty series)."""
    pos = np.asarray(position, dtype=np.float64)
    if pos.size == 0:
        return 0.0
    return float(np.count_nonzero(np.abs(pos) > _DUST)) / pos.size


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
            "exit_price": self.exit_price,
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
            out.append(nxt)
            state[f.symbol] = (new, f.price, nxt)
        else:
            state[f.symbol] = (new, avg, trip)
    return out


def open_trip_pnl(trip: RoundTrip, mark: float) -> float:
    """Net PnL of a still-open trip marked at ``mark`` (realised part + unrealised - fees)."""
    held = trip.entry_qty - trip.exit_qty
    unrealised = held * (mark - trip.entry_price) * trip.direction
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


def compute_metrics(
    ts: Sequence[int] | np.ndarray,
    equity: Sequence[float] | np.ndarray,
    position: Sequence[float] | np.ndarray,
    fills: Sequence[Fill],
    refs: Sequence[float],
    interval_s: float,
    marks: dict[str, float] | None = None,
) -> tuple[Metrics, list[RoundTrip]]:
    """Every report figure from the equity series (starting point first), the per-sample
    position (same length; the starting point's entry is ignored for exposure) and the fills."""
    eq = np.asarray(equity, dtype=np.float64)
    tsa = np.asarray(ts, dtype=np.int64)
    ppy = periods_per_year(interval_s)
    trips = round_trips(fills)
    closed = [t for t in trips if not t.is_open]
    opened = [t for t in trips if t.is_open]
    wins = sum(1 for t in closed if t.net_pnl > 0.0)
    marks = marks or {}
    open_pnl = sum(open_trip_pnl(t, marks.get(t.symbol, t.entry_price)) for t in opened)
    dd = max_drawdown(eq)
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
        sharpe=sharpe_ratio(eq, ppy),
        sortino=sortino_ratio(eq, ppy),
        exposure_pct=exposure_fraction(np.asarray(position)[1:]) * 100.0,
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


def _money(x: float, signed: bool = False) -> str:
    if 0.0 < abs(x) < 0.005:  # do not round a small but real cost to "0.00"
        return f"{x:+.2g}" if signed else f"{x:.2g}"
    return f"{x:+,.2f}" if signed else f"{x:,.2f}"


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _short_time(ts_ns: int | None) -> str:
    if ts_ns is None:
        return "-"
    return iso(ts_ns, "seconds").replace("T", " ").removesuffix("Z")


class Style:
    """ANSI bold/red when colour is on; plain markers otherwise."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def bold(self, text: str) -> str:
        return f"\x1b[1m{text}\x1b[0m" if self.color else text

    def alert(self, text: str) -> str:
        return f"\x1b[1;31m{text}\x1b[0m" if self.color else f"!! {text} !!"

    def dim(self, text: str) -> str:
        return f"\x1b[2m{text}\x1b[0m" if self.color else text


# ------------------------------------------------------------------ text report


def render_text(result: Any, *, color: bool = False, width: int = 100) -> str:
    """The terminal report of one backtest (``result`` is an engine.backtest.BacktestResult)."""
    st = Style(color)
    m: Metrics = result.metrics
    h = result.header
    ccy = h["quote_currency"]
    lines: list[str] = []
    title = (
        f"Backtest {h['strategy_id']} ({h['strategy_kind']} {_params(h['params'])}) "
        f"on {h['symbol']}"
    )
    lines.append(st.bold(title))
    bad = h.get("rows", {}).get("rejected", 0)
    lines.append(
        f"  data       {h['data_path']} ({h['data_format']}, {h['events']:,} "
        f"{'bars' if h['data_kind'] == 'bars' else 'quotes'}"
        f"{', ' + format(h['warmup_bars'], ',') + ' warm-up bars' if h['warmup_bars'] else ''}"
        f"{', ' + format(bad, ',') + ' rejected' if bad else ''})"
    )
    lines.append(
        f"  period     {_short_time(h['first_ts'])} -> {_short_time(h['last_ts'])} UTC, "
        f"{_tf(h['timeframe_s'])} bars"
    )
    lines.append(
        f"  fills      {h['fill_description']}; slippage {h['slippage']}; fee {h['fee_bps']:g} bps"
    )
    lines.append(
        f"  sizing     {h['sizing']}; {'shorts allowed' if h['allow_short'] else 'long-only'}; "
        f"starting cash {_money(h['starting_cash'])} {ccy}"
    )
    vol = h.get("volume")
    if vol:
        lines.append(
            f"  volume     in the {vol['unit']} currency ({vol['unit_from']}); displayed size: "
            f"{vol['displayed_size']}"
        )
    lines.extend(_safety_lines(h, st, width))
    lines.append("")
    lines.append(st.bold("Result"))
    pnl_text = f"{_money(m.pnl, True)} {ccy} ({m.return_pct:+.2f}%)"
    lines.append(f"  PnL            {pnl_text}   final equity {_money(m.final_equity)}")
    if m.trades:
        wr = f"win rate {m.win_rate * 100:.1f}% ({m.wins} won, {m.losses} lost)"
    else:
        wr = "win rate n/a (no closed trade)"
    open_text = (
        f"; {m.open_trades} open ({_money(m.open_trade_pnl, True)} marked)" if m.open_trades else ""
    )
    lines.append(f"  trades         {m.trades} round trips, {wr}{open_text}")
    lines.append(f"  fees paid      {_money(m.fees_paid)} {ccy}")
    lines.append(
        f"  slippage paid  {_money(m.slippage_paid)} {ccy} (vs the mid / bar price at execution)"
    )
    if m.max_drawdown_pct > 0:
        dd = (
            f"-{m.max_drawdown_pct:.2f}% (-{_money(m.max_drawdown)} {ccy}), "
            f"{_short_time(m.max_drawdown_start_ts)} -> {_short_time(m.max_drawdown_end_ts)}"
        )
    else:
        dd = "0.00%"
    lines.append(f"  max drawdown   {dd}")
    lines.append(
        f"  Sharpe         {_ratio(m.sharpe)}   Sortino {_ratio(m.sortino)}   "
        + st.dim(f"(per-bar returns x sqrt({m.periods_per_year:,.0f} bars/yr), risk-free 0)")
    )
    lines.append(f"  exposure       {m.exposure_pct:.1f}% of bars in a position")
    c = result.counters
    denied = ", ".join(f"{k} {v}" for k, v in sorted(result.denied.items())) or "none"
    lines.append(
        f"  orders         {c.get('submitted', 0)} submitted, {m.fills} fills, "
        f"{c.get('denied', 0)} denied ({denied})"
    )
    if result.unfilled:
        lines.append(f"  unfilled       {result.unfilled} order(s) still open when the data ended")
    if vol and vol["capped_orders"]:
        cut = vol["depth_exhausted_orders"]
        lines.append(
            "  volume cap     "
            + st.alert(
                f"{vol['capped_fills']} of {m.fills} fills from {vol['capped_orders']} "
                "order(s) larger than the displayed size"
                + (f", {cut} cut short (exceeds simulated depth)" if cut else "")
            )
        )
        lines.extend(
            textwrap.wrap(
                vol["fill_model"],
                max(width, 60) - 2,
                initial_indent=" " * 17,
                subsequent_indent=" " * 17,
            )
        )
    rejected = sum(result.rejected.values())
    if rejected:
        codes = ", ".join(f"{k} {v:,}" for k, v in sorted(result.rejected.items()))
        read = h.get("rows", {}).get("read")
        of = f" of {read:,} rows" if read else ""
        lines.append(
            "  bad data       "
            + st.alert(f"{rejected:,}{of} rejected at the boundary, not traded")
            + f" ({codes})"
        )
    for ev in result.safety_notes[:8]:
        lines.append("  " + st.alert("safety") + f"  {ev}")
    if len(result.safety_notes) > 8:
        lines.append(f"  ... and {len(result.safety_notes) - 8} more safety events")
    lines.append(
        st.dim(
            f"  run            {result.events_processed:,} events in {result.elapsed_s:.2f} s "
            f"({result.events_per_s:,.0f}/s)"
        )
    )
    return "\n".join(lines)


def _safety_lines(h: dict[str, Any], st: Style, width: int) -> list[str]:
    """Every breaker, limit and gate as the run had it: nothing on or off goes unsaid."""
    s = h.get("safety")
    if not s:  # a header from before the listing
        return [f"  safety     breakers {'on' if h['breakers'] else 'off'}"]
    indent = " " * 15
    out = []
    on = [b for b in s["breakers"] if b["state"] == "on"]
    off = [b for b in s["breakers"] if b["state"] != "on"]
    if on:
        out.append(f"  breakers   on ({len(on)}; re-arm {s['rearm']}):")
        out.extend(
            f"{indent}{b['breaker']} ({b['scope']}): {b['limit']} -> {b['action']}" for b in on
        )
    if off:
        out.append("  breakers   " + st.alert(f"off ({len(off)})") + ":")
        out.extend(f"{indent}{b['breaker']} ({b['scope']}): {b['note']}" for b in off)
    lim = s["limits"]
    if lim["state"] == "on":
        detail = ", ".join(f"{k} {v}" for k, v in lim.items() if k not in ("state", "always_on"))
        text = f"limits     on: {detail}; always on: {lim['always_on']}"
    else:
        text = f"limits     {st.alert(lim['state'])}; always on: {lim['always_on']}"
    out.extend(
        textwrap.wrap(text, max(width, 60) - 2, initial_indent="  ", subsequent_indent=indent)
    )
    ks = s["kill_switch"]
    note = f" ({ks['note']})" if ks["note"] else ""
    out.append(
        f"  kill       daily loss {ks['daily_loss_limit_pct']:g}%, drawdown "
        f"{ks['drawdown_limit_pct']:g}% -> {ks['auto_level']}{note}"
    )
    out.append(f"  approvals  {s['approvals']}")
    return out


def render_comparison(with_model: Any, without: Any, *, color: bool = False) -> str:
    """What slippage costs: the same run with the fill model's slippage and without it."""
    st = Style(color)
    a: Metrics = with_model.metrics
    b: Metrics = without.metrics
    ccy = with_model.header["quote_currency"]
    rows = [
        ("PnL", _money(a.pnl, True), _money(b.pnl, True)),
        ("return", f"{a.return_pct:+.2f}%", f"{b.return_pct:+.2f}%"),
        ("trades", str(a.trades), str(b.trades)),
        (
            "win rate",
            "n/a" if a.win_rate is None else f"{a.win_rate * 100:.1f}%",
            "n/a" if b.win_rate is None else f"{b.win_rate * 100:.1f}%",
        ),
        ("fees paid", _money(a.fees_paid), _money(b.fees_paid)),
        ("slippage paid", _money(a.slippage_paid), _money(b.slippage_paid)),
        ("max drawdown", f"-{a.max_drawdown_pct:.2f}%", f"-{b.max_drawdown_pct:.2f}%"),
        ("Sharpe", _ratio(a.sharpe), _ratio(b.sharpe)),
        ("Sortino", _ratio(a.sortino), _ratio(b.sortino)),
    ]
    lines = [st.bold("Slippage comparison"), f"  {'':15}{'with model':>18}{'without':>18}"]
    lines += [f"  {name:15}{x:>18}{y:>18}" for name, x, y in rows]
    cost = b.pnl - a.pnl
    lines.append(f"  slippage costs {_money(cost)} {ccy} of PnL")
    if wins_only_without_slippage(with_model, without):
        lines.append(
            "  "
            + st.alert(
                "wins only without slippage: profitable with ideal fills, "
                "not with the fill model's slippage"
            )
        )
    return "\n".join(lines)


def wins_only_without_slippage(with_model: Any, without: Any) -> bool:
    return without.metrics.pnl > 0.0 and with_model.metrics.pnl <= 0.0


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items()) or "defaults"


def _tf(seconds: int) -> str:
    if seconds % 86_400 == 0:
        return f"{seconds // 86_400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


# ------------------------------------------------------------------ chart


def _downsample(x: np.ndarray, y: np.ndarray, buckets: int, how: str) -> tuple[Any, Any]:
    """At most ``buckets`` + 1 points: the first, then each bucket's last (or minimum) value."""
    n = x.size
    if n <= buckets + 1:
        return x.tolist(), y.tolist()
    edges = np.linspace(1, n, buckets + 1).astype(np.int64)
    starts = edges[:-1]
    ends = edges[1:] - 1
    ys = np.minimum.reduceat(y, starts) if how == "min" else y[ends]
    return [float(x[0]), *x[ends].tolist()], [float(y[0]), *ys.tolist()]


def render_chart(
    ts: Sequence[int] | np.ndarray,
    equity: Sequence[float] | np.ndarray,
    *,
    width: int = 100,
    height: int = 24,
    color: bool = False,
    ccy: str = "USDT",
) -> str:
    """An equity chart over a drawdown chart (plotext), ``width`` columns wide."""
    import plotext as plt

    tsa = np.asarray(ts, dtype=np.int64)
    eq = np.asarray(equity, dtype=np.float64)
    if eq.size < 2:
        return "(no chart: fewer than two equity samples)"
    span_s = (int(tsa[-1]) - int(tsa[0])) / NS_PER_SECOND
    for unit, secs in (("days", 86_400.0), ("hours", 3600.0), ("minutes", 60.0), ("seconds", 1.0)):
        if span_s >= 2 * secs or unit == "seconds":
            break
    x = (tsa - tsa[0]) / (secs * NS_PER_SECOND)
    dd = drawdown_series(eq) * 100.0
    width = max(40, int(width))
    height = max(10, int(height))
    buckets = max(10, width - 12)
    xe, ye = _downsample(x, eq, buckets, "last")
    xd, yd = _downsample(x, dd, buckets, "min")
    plt.clear_figure()
    plt.subplots(2, 1)
    plt.plotsize(width, height)
    for row in (1, 2):
        plt.subplot(row, 1)
        plt.theme("clear")
    top_rows = height * 3 // 5
    top = plt.subplot(1, 1)
    top.plotsize(width, top_rows)
    plt.plot(xe, ye, color="green" if color else "default", marker="braille")
    plt.title(f"Equity ({ccy})")
    bottom = plt.subplot(2, 1)
    bottom.plotsize(width, height - top_rows)
    plt.plot(xd, yd, color="red" if color else "default", marker="braille")
    plt.title("Drawdown (%)")
    plt.xlabel(f"{unit} since {_short_time(int(tsa[0]))} UTC")
    text = plt.build()
    plt.clear_figure()
    if not color:
        text = plt.uncolorize(text)
    return "\n".join(line.rstrip() for line in text.splitlines())
