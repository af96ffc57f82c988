"""The backtest report for a terminal: text, the slippage comparison and the equity chart.

The engine returns a ``BacktestResult`` (data: header, ``engine.metrics.Metrics``, series); this
module only formats it. ``render_text`` and ``render_comparison`` are plain text with optional
ANSI bold/red; the chart uses plotext, whose figure state is global, so call the renderers from
one thread at a time.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.backtest import BacktestResult, wins_only_without_slippage
from engine.metrics import Metrics, drawdown_series, iso
from engine.types import NS_PER_SECOND


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


def render_text(result: BacktestResult, *, color: bool = False, width: int = 100) -> str:
    """The terminal report of one backtest."""
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
    if h.get("exits"):
        lines.append(f"  exits      {_exits_text(h['exits'], h['timeframe_s'])}")
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
    if m.win_rate is not None:  # (None exactly when no trade closed)
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
    expired, replaced = c.get("expired", 0), c.get("replaced", 0)
    makers = sum(1 for f in result.fills if f.liquidity == "maker")
    if expired or replaced or makers:
        lines.append(
            f"  limit orders   {makers} of {m.fills} fills as maker, {expired} expired unfilled "
            f"(time to live), {replaced} moved or superseded (cancel, then new)"
        )
    if result.exits:
        lines.append(f"  closed by      {_closed_by(result.exits, ccy)}")
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
    gaps = h.get("gaps") or {}
    if gaps.get("count"):
        lines.append(
            "  data gaps      "
            + st.alert(
                f"{gaps['count']:,} gap{'s' if gaps['count'] != 1 else ''} in the bars, "
                f"{gaps['missing_bars']:,} bars missing (the longest {_tf(gaps['longest_s'])})"
            )
            + "; the ratios and exposure count the bars present"
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


def render_comparison(
    with_model: BacktestResult, without: BacktestResult, *, color: bool = False
) -> str:
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


# What closed the trades, in the report's order: the protective exits, then the rest.
_CLOSE_NAMES = {
    "stop_loss": "stop-loss",
    "take_profit": "take-profit",
    "trailing_stop": "trailing stop",
    "time_stop": "time stop",
    "signal": "strategy signal",
    "flatten": "kill-switch flatten",
    "operator": "operator flatten",
}


def _closed_by(exits: dict[str, dict[str, Any]], ccy: str) -> str:
    """Trades closed by each kind of exit, and the net PnL each produced."""
    order = [k for k in _CLOSE_NAMES if k in exits] + sorted(set(exits) - set(_CLOSE_NAMES))
    return "; ".join(
        f"{_CLOSE_NAMES.get(k, k)} {exits[k]['count']} ({_money(exits[k]['pnl'], True)} {ccy})"
        for k in order
    )


def _exits_text(exits: dict[str, Any], timeframe_s: int) -> str:
    """The run's protective exits as set: one phrase each."""
    parts = []
    if exits.get("stop_loss_pct") is not None:
        parts.append(f"stop-loss {exits['stop_loss_pct']:g}%")
    if exits.get("take_profit_pct") is not None:
        parts.append(f"take-profit {exits['take_profit_pct']:g}%")
    if exits.get("trailing_atr") is not None:
        parts.append(
            f"trailing stop {exits['trailing_atr']:g} x ATR({exits.get('atr_period') or 14})"
        )
    if exits.get("time_stop_bars") is not None:
        parts.append(f"time stop {exits['time_stop_bars']} bars of {_tf(timeframe_s)}")
    return "; ".join(parts) + " (on bars: at the level, at the open on a gap; stop before target)"


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
