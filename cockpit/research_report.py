"""Research reports for a terminal: whole-config backtests, sweeps, walk-forward, heatmaps.

The engine returns data (``engine.research``); this module only formats it. The heatmap uses
plotext (global figure state: call from one thread at a time); without colour it is a text grid,
a heatmap's colours being its content.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Iterable
from typing import Any

from cockpit.backtest_report import Style, _money, _ratio, render_chart
from engine.research.portfolio import PortfolioResult
from engine.research.sweep import SORT_METRICS, SweepResult, SweepRow
from engine.research.walkforward import WalkForwardResult
from engine.vocabulary import printable

# Column titles of the sweep table's figures, in order.
_FIGURES = (
    ("sharpe", "Sharpe"),
    ("sortino", "Sortino"),
    ("pnl", "PnL"),
    ("return", "Return%"),
    ("trades", "Trades"),
    ("win_rate", "Win%"),
    ("drawdown", "MaxDD%"),
    ("fees", "Fees"),
)


def _fig(metric: str, v: float | None) -> str:
    if v is None:
        return "n/a"
    if metric in ("pnl", "fees"):
        return _money(v)
    if metric == "trades":
        return f"{int(v):,}"
    if metric == "win_rate":
        return f"{v * 100:.1f}"
    if metric in ("return", "drawdown", "exposure"):
        return f"{v:.2f}"
    return f"{v:.2f}"


def _table(header: list[str], rows: list[list[str]], right_from: int = 0) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]

    def line(cells: list[str]) -> str:
        out = []
        for i, (c, w) in enumerate(zip(cells, widths, strict=True)):
            out.append(c.rjust(w) if i >= right_from else c.ljust(w))
        return "  ".join(out).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _param_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


# ------------------------------------------------------------------ whole config


def render_portfolio(result: PortfolioResult, *, color: bool = False, width: int = 100) -> str:
    """The report of a whole-config backtest: what ran, each strategy, the combined book."""
    st = Style(color)
    h = result.header
    m = result.metrics
    ccy = h["quote_currency"]
    lines = [st.bold("Whole-config backtest") + f"  {h['config']}"]
    lines.append(f"approvals   {h['approvals_text']}")
    for sym, d in h["data"].items():
        gaps = d.get("gaps") or {}
        lines.append(
            f"data        {sym}: {d['path']} ({d['rows']:,} bars of {d['timeframe_s']} s, "
            f"{_short_time_iso(d['first_time'])} to {_short_time_iso(d['last_time'])})"
            + (
                "  "
                + st.alert(
                    f"{gaps['count']:,} gap{'s' if gaps['count'] != 1 else ''}, "
                    f"{gaps['missing_bars']:,} bars missing"
                )
                if gaps.get("count")
                else ""
            )
        )
    if h["skipped"]:
        lines.append(st.alert(f"not run (no data): {', '.join(h['skipped'])}"))
    lines.append(
        f"run         fill {h['fill']}, slippage {h['slippage']}, fee {h['fee_bps']:g} bps, "
        f"warm-up {h['warmup_bars']} bars, breakers {'on' if h['breakers'] else 'OFF'}, "
        f"limits {'on' if h['limits'] else 'LIFTED'}, start cash {h['starting_cash']:,.2f} {ccy}"
    )
    rows = []
    for ln in result.lines:
        rows.append(
            [
                ln.strategy_id,
                ln.symbol,
                ln.approval,
                f"{ln.trades:,}",
                "n/a" if ln.win_rate is None else f"{ln.win_rate * 100:.1f}",
                _money(ln.net_pnl, True),
                _money(ln.open_pnl, True),
                _money(ln.fees),
                f"{ln.rejected_approvals:,}" if ln.rejected_approvals else "",
            ]
        )
    lines.append("")
    lines.append(st.bold("Per strategy and symbol"))
    lines += _table(
        [
            "strategy",
            "symbol",
            "runs as",
            "trades",
            "win%",
            "net PnL",
            "open PnL",
            "fees",
            "rejected",
        ],
        rows,
        right_from=3,
    )
    totals = []
    for sid, row in result.by_strategy().items():
        totals.append(
            [
                sid,
                f"{row['trades']:,}",
                "n/a" if row["win_rate"] is None else f"{row['win_rate'] * 100:.1f}",
                _money(row["total_pnl"], True),
                _money(row["fees"]),
                f"{row.get('max_drawdown_pct', 0.0):.2f}",
                _ratio(row.get("sharpe")),
            ]
        )
    lines.append("")
    lines.append(
        st.bold("Per strategy")
        + st.dim("  (drawdown and Sharpe of its own PnL on the starting cash)")
    )
    lines += _table(
        ["strategy", "trades", "win%", "PnL", "fees", "maxDD%", "Sharpe"], totals, right_from=1
    )
    lines.append("")
    lines.append(st.bold("Combined"))
    pnl = _money(m.pnl, True)
    lines.append(
        f"PnL {st.alert(pnl) if m.pnl < 0 and color else pnl} {ccy} ({m.return_pct:+.2f}%)  "
        f"trades {sum(ln.trades for ln in result.lines):,} by the strategies "
        f"({m.trades:,} round trips of the net position per symbol, win rate "
        f"{'n/a' if m.win_rate is None else f'{m.win_rate * 100:.1f}%'})  "
        f"fees {_money(m.fees_paid)}  max drawdown {m.max_drawdown_pct:.2f}% "
        f"({_money(m.max_drawdown)})  Sharpe {_ratio(m.sharpe)}  Sortino {_ratio(m.sortino)}  "
        f"exposure {m.exposure_pct:.1f}%"
    )
    orders = result.counters
    denied = ", ".join(f"{k} {v:,}" for k, v in sorted(result.denied.items())) or "none"
    lines.append(
        f"orders submitted {orders.get('submitted', 0):,}, denied {orders.get('denied', 0):,} "
        f"({denied}), approval requests {orders.get('awaiting_approval', 0):,}"
    )
    if result.rejected:
        lines.append(
            "rows rejected at the boundary: "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(result.rejected.items()))
        )
    if result.safety_notes:
        lines.append("")
        lines.append(st.bold(f"Safety events ({len(result.safety_notes):,})"))
        shown = result.safety_notes[:10]
        lines += [f"  {n}" for n in shown]
        if len(result.safety_notes) > len(shown):
            lines.append(f"  ... {len(result.safety_notes) - len(shown):,} more in --json")
    return "\n".join(lines)


def _short_time_iso(text: str) -> str:
    return text.replace("T", " ").split(".")[0].removesuffix("Z")


def render_portfolio_chart(result: PortfolioResult, *, width: int, color: bool) -> str:
    return render_chart(
        result.ts,
        result.equity,
        width=min(width, 160),
        height=24,
        color=color,
        ccy=result.header["quote_currency"],
    )


# ------------------------------------------------------------------ sweeps


# The failed runs whose message the sweep's report shows under its table.
ERRORS_SHOWN = 10


def sweep_table(result: SweepResult, top: int | None = None) -> tuple[list[str], list[list[str]]]:
    """The sweep's table: header and rows (best first), the parameters then the figures."""
    names = result.param_names
    header = ["#", *names, *(title for _k, title in _FIGURES)]
    rows = []
    shown = result.rows if top is None else result.rows[:top]
    for rank, row in enumerate(shown, 1):
        cells = [str(rank), *(_value_text(row.params.get(n)) for n in names)]
        if row.metrics is None:  # (its message is below the table: it would widen a column)
            cells += ["error"] + [""] * (len(_FIGURES) - 1)
        else:
            cells += [_fig(k, row.value(k)) for k, _t in _FIGURES]
        rows.append(cells)
    return header, rows


def _value_text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def render_sweep(result: SweepResult, *, color: bool = False, top: int = 20) -> str:
    st = Style(color)
    d = result.data
    lines = [
        st.bold(f"Sweep of {result.strategy}")
        + f"  {len(result.param_names)} parameter(s): {', '.join(result.param_names)}",
        f"data        {d['path']} ({d['rows']:,} {d['kind']}, {d['symbol'] or '?'}, "
        f"{_short_time_iso(d['first_time'] or '-')} to {_short_time_iso(d['last_time'] or '-')})"
        + _window(d),
        f"combinations {result.combinations:,}: ran {result.ran:,}, skipped {len(result.skipped):,}"
        + (f" (invalid: {_skip_reasons(result)})" if result.skipped else "")
        + (f", errors {n:,}" if (n := sum(1 for r in result.rows if r.error)) else ""),
        f"ran on      {result.cluster}: {result.elapsed_s:.1f} s, {result.rate:.2f} combinations/s",
    ]
    if result.random:
        lines.append(f"sampled     {result.random['n']:,} at random (seed {result.random['seed']})")
    lines.append(
        f"sorted by   {result.sort} ({'higher' if SORT_METRICS[result.sort][1] else 'lower'}"
        " is better)"
    )
    lines.append("")
    header, rows = sweep_table(result, top)
    lines += _table(header, rows, right_from=1)
    if len(result.rows) > top:
        lines.append(f"... {len(result.rows) - top:,} more (--top N, or --json for all)")
    idle = idle_winner(result)
    if idle:
        lines.append(st.bold(idle))
    failed = [(rank, r) for rank, r in enumerate(result.rows[:top], 1) if r.metrics is None]
    if failed:
        lines.append("")
        lines += [f"error in #{rank}: {r.error}" for rank, r in failed[:ERRORS_SHOWN]]
        if len(failed) > ERRORS_SHOWN:
            lines.append(f"... {len(failed) - ERRORS_SHOWN:,} more errors (--json for all)")
    return "\n".join(lines)


def idle_winner(result: SweepResult) -> str:
    """A warning when the best row never traded while others did: by drawdown or fees (lower is
    better) a combination that does nothing ranks first, and a trader who takes the top row
    goes live on a setting that never trades ("" when there is nothing to say)."""
    ranked = [r for r in result.rows if r.metrics is not None]
    if not ranked or ranked[0].metrics is None or ranked[0].metrics.fills:
        return ""
    if not any(r.metrics is not None and r.metrics.fills for r in ranked):
        return ""
    return (
        f"note: #1 never traded (by {result.sort} a combination that does nothing can rank "
        "first): look at the rows that trade before you take it"
    )


def _window(d: dict[str, Any]) -> str:
    """``; runs use START to END`` when --start/--end narrowed the data."""
    if not d.get("start") and not d.get("end"):
        return ""
    start = _short_time_iso(d["start"]) if d.get("start") else "the start"
    end = _short_time_iso(d["end"]) if d.get("end") else "the end"
    return f"; runs use {start} to {end}"


def _skip_reasons(result: SweepResult) -> str:
    reasons: dict[str, int] = {}
    for s in result.skipped:
        reasons[s.reason] = reasons.get(s.reason, 0) + 1
    first = sorted(reasons.items(), key=lambda kv: -kv[1])[:2]
    return "; ".join(f"{r}" + (f" x{n}" if n > 1 else "") for r, n in first)


def heatmap_grid(
    result: SweepResult,
) -> tuple[str, str, list[Any], list[Any], list[list[float | None]]] | None:
    """For a sweep of exactly two parameters with several values each: (row name, column
    name, row values, column values, the sort metric per cell; None where skipped or n/a)."""
    if len(result.param_names) != 2:
        return None
    a, b = result.param_names
    points = [r.params for r in sorted(result.rows, key=lambda r: r.index)]
    points += [s.params for s in result.skipped]
    rows_v = _axis(p[a] for p in points)
    cols_v = _axis(p[b] for p in points)
    if len(rows_v) < 2 or len(cols_v) < 2:
        return None
    cell: dict[tuple[str, str], SweepRow] = {
        (_identity(r.params[a]), _identity(r.params[b])): r for r in result.rows
    }
    grid = []
    for x in rows_v:
        line = []
        for y in cols_v:
            row = cell.get((_identity(x), _identity(y)))
            line.append(row.value(result.sort) if row is not None else None)
        grid.append(line)
    return a, b, rows_v, cols_v, grid


def _identity(value: Any) -> str:
    """A parameter value as a key: JSON (a list or null is a value too, and 5 is not "5")."""
    return json.dumps(value, sort_keys=True, default=str)


def _axis(values: Iterable[Any]) -> list[Any]:
    """A heatmap axis: each value once, the numbers ascending, then anything else in the grid's
    order (5, 10 and "abc" do not sort together: the sweep ran, then the report died on them)."""
    seen: dict[str, Any] = {}
    for v in values:
        seen.setdefault(_identity(v), v)
    numbers = [v for v in seen.values() if isinstance(v, int | float) and not isinstance(v, bool)]
    others = [v for v in seen.values() if not isinstance(v, int | float) or isinstance(v, bool)]
    return sorted(numbers) + others


def render_heatmap(result: SweepResult, *, color: bool = False, width: int = 100) -> str | None:
    """The sort metric over a two-parameter grid: a plotext heatmap in colour, a text grid
    (the best cell marked *) without; None when the sweep is not a two-parameter grid."""
    got = heatmap_grid(result)
    if got is None:
        return None
    a, b, rows_v, cols_v, grid = got
    title = f"{result.sort} by {a} (rows) and {b} (columns)"
    values = [v for row in grid for v in row if v is not None]
    best = None
    if values:
        best = max(values) if SORT_METRICS[result.sort][1] else min(values)
    header = [f"{a} \\ {b}", *(_value_text(y) for y in cols_v)]
    body = []
    for x, row in zip(rows_v, grid, strict=True):
        cells = [_value_text(x)]
        for v in row:
            text = "-" if v is None else _fig(result.sort, v)
            cells.append(text + ("*" if v is not None and v == best else ""))
        body.append(cells)
    text_grid = "\n".join([title + " (- skipped or n/a, * best)", *_table(header, body, 1)])
    if not color or len(cols_v) > 40 or len(rows_v) > 40:
        return text_grid
    import pandas as pd
    import plotext as plt

    frame = pd.DataFrame(
        [[math.nan if v is None else v for v in row] for row in grid],
        index=[_value_text(x) for x in rows_v],
        columns=[_value_text(y) for y in cols_v],
    )
    plt.clear_figure()
    with contextlib.redirect_stdout(io.StringIO()):  # plotext prints the frame itself
        plt.heatmap(frame)
    plt.title(f"{title} (lighter is higher)")
    plt.plotsize(min(width, 120), min(3 * len(rows_v) + 6, 40))
    chart = plt.build()
    plt.clear_figure()
    return "\n".join(line.rstrip() for line in chart.splitlines()) + "\n\n" + text_grid


# ------------------------------------------------------------------ walk-forward


def render_walkforward(result: WalkForwardResult, *, color: bool = False) -> str:
    st = Style(color)
    metric = result.sort
    d = result.data
    lines = [
        st.bold(f"Walk-forward of {result.strategy}")
        + f"  train {_days(result.train_s)}, test {_days(result.test_s)}, "
        f"{len(result.windows)} windows, chosen by {metric}",
        f"data        {d['path']} ({d['rows']:,} {d['kind']}, "
        f"{_short_time_iso(d['first_time'] or '-')} to {_short_time_iso(d['last_time'] or '-')})",
        f"combinations {result.combinations:,} per window"
        + (f" ({len(result.skipped):,} invalid, skipped)" if result.skipped else "")
        + (
            f", sampled at random (--random {result.random['n']:,} --seed {result.random['seed']})"
            if result.random
            else ""
        ),
        f"ran on      {result.cluster}: {result.elapsed_s:.1f} s",
        "",
    ]
    rows = []
    for w in result.windows:
        win = w.window
        ins, oos = w.best, w.oos
        rows.append(
            [
                str(win.index + 1),
                _short_time_iso(_iso(win.test_start))[:16],
                # Every combination ran in every window; none chosen: none had the figure.
                _param_text(ins.params) if ins is not None else f"(none: {metric} n/a)",
                _fig(metric, ins.value(metric)) if ins is not None else "n/a",
                _fig(metric, oos.value(metric)) if oos is not None else "n/a",
                _money(ins.metrics.pnl, True) if ins is not None and ins.metrics else "n/a",
                _money(oos.metrics.pnl, True) if oos is not None and oos.metrics else "n/a",
                f"{oos.metrics.trades:,}" if oos is not None and oos.metrics else "n/a",
            ]
        )
    lines += _table(
        [
            "win",
            "test from",
            "chosen",
            f"IS {metric}",
            f"OOS {metric}",
            "IS PnL",
            "OOS PnL",
            "OOS trades",
        ],
        rows,
        right_from=3,
    )
    # A window that could not run says why (as --json does), not just n/a.
    for w in result.windows:
        for side, row in (("in sample", w.best), ("out of sample", w.oos)):
            if row is not None and row.metrics is None and row.error:
                lines.append(f"window {w.window.index + 1} {side}: {printable(row.error)}")
    o = result.overall()
    ins, oos = o["in_sample"], o["out_of_sample"]
    key = f"mean_{metric}"
    lines.append("")
    lines.append(
        st.bold("Overall")
        + f"  in sample: PnL {_money(ins['pnl'], True)}, {ins['trades']:,} trades, mean "
        f"{metric} {_fig(metric, ins[key])}  |  out of sample: PnL {_money(oos['pnl'], True)}, "
        f"{oos['trades']:,} trades, mean {metric} {_fig(metric, oos[key])}"
    )
    eff = o["efficiency"]
    lines.append(
        "walk-forward efficiency (OOS PnL per day / IS PnL per day): "
        + ("n/a (no in-sample profit)" if eff is None else f"{eff:.2f}")
    )
    return "\n".join(lines)


def _days(seconds: int) -> str:
    """A window's length as typed: 10d, 1.5d, 12h, 90m (not 0.166667h for 10m)."""
    if seconds % 3_600 == 0:
        return f"{seconds / 86_400:g}d" if seconds >= 86_400 else f"{seconds // 3_600}h"
    return f"{seconds / 60:g}m"


def _iso(ts: int) -> str:
    from engine.metrics import iso

    return iso(ts)
