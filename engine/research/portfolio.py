"""Whole-config backtests: every enabled strategy on every one of its symbols, at once.

The config the engine trades runs as one engine over recorded bars, one series per symbol,
merged on time: one core (every strategy, every pre-trade check and limit across the whole
book, the breakers, the kill switch's loss limits on the combined equity, protective exits), one
paper broker, one portfolio. The drive per bar is ``BacktestRun.step`` (what the live engine's
bar path does), bar by bar in time order; bars of the same instant go in symbol order.

Approvals: nobody approves in a backtest, so strategies in approval mode ``approve`` follow a
policy the report states: ``auto`` (the default) runs them as if every order were approved at
once (approval mode ``auto``, as the single-strategy backtest), ``reject`` leaves them in
``approve`` and rejects every request through the approval gate as it is made (their decisions
are traced, nothing of theirs trades; the report counts the rejected requests).

What a run of the config needs: bar data for every symbol a strategy trades (``--data
SYMBOL=FILE``, or a file whose symbol column or ccxt JSON names it), each strategy's timeframe
equal to its symbol's bar length (``--timeframe S`` sets every strategy's, and says so).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.backtest.data import BARS, MarketData
from engine.backtest.errors import BacktestError, NoUsableDataError, StrategyRaised
from engine.backtest.header import event_note, final_portfolio, safety_settings
from engine.backtest.options import BacktestOptions, apply_run_options, symbol_grid
from engine.backtest.simulation import (
    VENUE,
    BacktestRun,
)
from engine.config import Config, ConfigError, ReplayConfig, parse_config
from engine.core import StrategyFailed
from engine.events import ApprovalRequested
from engine.metrics import (
    Metrics,
    bar_gaps,
    compute_metrics,
    iso,
    max_drawdown,
    open_trip_pnl,
    periods_per_year,
    round_trips,
    sharpe_ratio,
)
from engine.strategies.registry import build_strategies
from engine.types import NS_PER_SECOND, Bar, Instrument

APPROVAL_POLICIES = ("auto", "reject")
REJECTED_BY = "backtest"


def portfolio_pairs(cfg: Config) -> list[tuple[str, str]]:
    """Every (strategy id, symbol) the config's enabled strategies trade, in config order."""
    return [(s.id, sym) for s in cfg.strategies if s.enabled for sym in s.symbols]


def build_portfolio_config(
    base: Config, data: dict[str, MarketData], opts: BacktestOptions, approvals: str
) -> Config:
    """``base`` as the backtest runs it: its enabled strategies (``--timeframe``, shorts and
    exits options over each), the approvals policy, every traded symbol an instrument (the
    simulated market's spec where it has one; else the replay defaults), the run options."""
    if approvals not in APPROVAL_POLICIES:
        raise BacktestError(
            f"--approvals must be one of {', '.join(APPROVAL_POLICIES)}, got {approvals!r}"
        )
    given = [
        ("--strategy", opts.strategy),
        ("--param", opts.params or None),
        ("--symbol", opts.symbol),
        ("--qty", opts.qty),
        ("--fraction", opts.fraction),
    ]
    for flag, value in given:
        if value is not None:
            raise BacktestError(
                f"{flag} is for a backtest of one strategy; a whole-config backtest trades "
                "every strategy as the config sets it (edit the config, or pass --strategy ID "
                "to backtest one)"
            )
    doc = base.model_dump()
    strategies = []
    for s in doc["strategies"]:
        if not s.get("enabled", True):
            continue
        s = dict(s)
        if opts.timeframe_s is not None:
            s["timeframe_s"] = opts.timeframe_s
        if opts.allow_short is not None:
            s["allow_short"] = opts.allow_short
        exits = {k: v for k, v in opts.exits_overrides().items() if v is not None}
        if exits:
            s["exits"] = {**(s.get("exits") or {}), **exits}
        if approvals == "auto":
            s["approval"] = "auto"
        strategies.append(s)
    if not strategies:
        raise BacktestError("nothing to backtest: the config has no enabled strategy")
    doc["strategies"] = strategies
    doc["venues"] = {}  # no venue is reached: the paper broker fills every order
    market = doc["market"]
    market["source"] = "simulated"
    sim = market["simulated"]["symbols"]
    defaults = ReplayConfig.model_fields
    for s in strategies:
        for sym in s["symbols"]:
            if sym not in sim:
                d = data.get(sym)
                price = float(d.chunk_arrays(0, 1)[1][3][0]) if d is not None and len(d) else 1.0
                sim[sym] = {
                    "initial_price": price if price > 0 else 1.0,
                    "tick_size": defaults["tick_size"].default,
                    "lot_size": defaults["lot_size"].default,
                    "min_notional": defaults["min_notional"].default,
                }
            # The symbol's grid where the single backtest (and paper trading on the config's
            # replay) takes it: the replay spec naming the symbol before the simulated one.
            sim[sym].update(symbol_grid(base, sym))
    # A bar feed updates a symbol once a bar: the stale-feed breaker (and the reference-price
    # age) would otherwise trip on every symbol whose bar of the instant comes after another's.
    # A symbol is stale here when it missed its bar by more than the configured allowance.
    longest = max(
        [s.get("timeframe_s", 1) for s in strategies] + [d.timeframe_s or 0 for d in data.values()]
    )
    market["validation"]["stale_after_s"] = market["validation"]["stale_after_s"] + longest
    doc["risk"]["stale_quote_s"] = doc["risk"]["stale_quote_s"] + longest
    apply_run_options(doc, opts)
    try:
        cfg = parse_config(doc)
        build_strategies(cfg.strategies)
    except ConfigError as exc:
        raise BacktestError([f"config error: {p}" for p in exc.problems]) from None
    return cfg


_MERGE_CHUNK = 1 << 16  # bars of the merged order read (and reported as progress) at a time


class PortfolioRun(BacktestRun):
    """``BacktestRun`` over several symbols: the same step per bar, with the run's current
    symbol (``self.symbol``, which the execution quotes name) set to the bar's."""

    def __init__(self, cfg: Config, opts: BacktestOptions, approvals: str) -> None:
        instruments = {
            sym: Instrument(
                sym, VENUE, spec.tick_size, spec.lot_size, spec.min_qty, spec.min_notional
            )
            for sym, spec in cfg.market.simulated.symbols.items()
        }
        self.approvals_policy = approvals
        self.rejected_approvals: Counter[str] = Counter()
        # Each strategy's PnL at every equity sample (its own curve: drawdown, Sharpe).
        self.strategy_pnl: dict[str, list[float]] = {}
        super().__init__(cfg, opts, instruments)

    def handle(self, items: list[Any]) -> None:
        super().handle(items)
        if self.approvals_policy != "reject":
            return
        for item in items:
            if type(item) is ApprovalRequested:
                approval = item.approval
                self.rejected_approvals[str(approval.get("strategy", "?"))] += 1
                self.handle(
                    self.core.reject(
                        str(approval["id"]),
                        by=REJECTED_BY,
                        reason="--approvals reject: nobody approves in this backtest",
                    )
                )

    def _sample_strategies(self) -> None:
        """Each strategy's PnL now: realised net of fees plus its open legs at the marks."""
        book = self.core.performance.strategies
        marks = {sym: pos.mark for sym, pos in self.portfolio.positions.items()}
        for sid, series in self.strategy_pnl.items():
            perf = book.get(sid)
            series.append(
                0.0 if perf is None else perf.realized_pnl - perf.fees + perf.unrealized(marks)
            )

    def run_portfolio(
        self, data: dict[str, MarketData], progress: Any = None, cancel: Any = None
    ) -> tuple[list[int], list[float], list[float], int, int]:
        """Every symbol's bars merged on their close time (a bar is known when it closes: merged
        on its open, a 5-minute bar's close marked the book, fed the limits and filled orders
        while the 1-minute bars of the four minutes before it traded); equity sampled after each
        instant. The merge order is kept as arrays (24 bytes a bar); the bars are read a chunk
        of that order at a time, so a run holds one chunk of Python numbers, not every symbol's
        whole file."""
        warm = self.opts.warmup
        symbols = sorted(data)
        history: list[Bar] = []
        ts_parts, sym_parts, idx_parts = [], [], []
        opens: list[int] = []  # each symbol's first traded bar's open
        check = self.core.validator.check_bar
        for k, sym in enumerate(symbols):
            d = data[sym]
            tf = d.timeframe_s or 60
            n = len(d)
            wu = min(warm, n)
            w_ts, (o, h, lo, c, v) = d.chunk(0, wu)
            for i in range(wu):
                b = Bar(sym, w_ts[i], tf, o[i], h[i], lo[i], c[i], v[i], VENUE)
                if check(b) is None:
                    history.append(b)
            ts_parts.append(d.ts_array[wu:] + tf * NS_PER_SECOND)  # the bars' closes
            if n > wu:
                opens.append(int(d.ts_array[wu]))
            sym_parts.append(np.full(n - wu, k, dtype=np.int64))
            idx_parts.append(np.arange(wu, n, dtype=np.int64))
        history.sort(key=lambda b: (b.ts_close, b.symbol))
        self.core.warm_up(history)
        del history
        ts_all = np.concatenate(ts_parts) if ts_parts else np.empty(0, np.int64)
        sym_all = np.concatenate(sym_parts) if sym_parts else np.empty(0, np.int64)
        idx_all = np.concatenate(idx_parts) if idx_parts else np.empty(0, np.int64)
        del ts_parts, sym_parts, idx_parts
        order = np.lexsort((sym_all, ts_all))
        ts_all, sym_all, idx_all = ts_all[order], sym_all[order], idx_all[order]
        del order
        total = int(ts_all.size)
        p = self.portfolio
        first = min(opens) if opens else 0
        ts_out: list[int] = [first]
        eq: list[float] = [p.equity]
        pos: list[float] = [0.0]
        self.strategy_pnl = {s.id: [] for s in self.cfg.strategies}
        self._sample_strategies()
        scratch_eq: list[float] = []
        scratch_pos: list[float] = []
        series = [data[s] for s in symbols]
        tfs = [d.timeframe_s or 60 for d in series]
        for start in range(0, total, _MERGE_CHUNK):
            stop = min(total, start + _MERGE_CHUNK)
            ts_l = ts_all[start:stop].tolist()
            sym_c = sym_all[start:stop]
            idx_c = idx_all[start:stop]
            gathered = [np.empty(stop - start, dtype=np.float64) for _ in range(5)]
            for k in np.unique(sym_c).tolist():
                picked = sym_c == k
                rows = idx_c[picked]
                first_row = int(rows.min())
                _ts, cols = series[k].chunk_arrays(first_row, int(rows.max()) + 1)
                for out, col in zip(gathered, cols, strict=True):
                    out[picked] = col[rows - first_row]
            sym_l = sym_c.tolist()
            o_l, h_l, l_l, c_l, v_l = (g.tolist() for g in gathered)
            del gathered, sym_c, idx_c
            after = int(ts_all[stop]) if stop < total else None  # the next chunk's first
            m = stop - start
            for j in range(m):
                k = sym_l[j]
                sym = symbols[k]
                self.symbol = sym
                t_close = ts_l[j]
                t_open = t_close - tfs[k] * NS_PER_SECOND
                self.step(
                    Bar(sym, t_open, tfs[k], o_l[j], h_l[j], l_l[j], c_l[j], v_l[j], VENUE),
                    scratch_eq,
                    scratch_pos,
                )
                scratch_eq.clear()
                scratch_pos.clear()
                nxt = ts_l[j + 1] if j + 1 < m else after
                if nxt is None or nxt != t_close:
                    ts_out.append(t_close)
                    eq.append(p.equity)
                    pos.append(p.open_position_count)
                    self._sample_strategies()
            if stop % _MERGE_CHUNK == 0:
                if progress is not None:
                    progress(stop, total)
                if cancel is not None and cancel.is_set():
                    raise BacktestError("cancelled")
        if progress is not None:
            progress(total, total)
        return ts_out, eq, pos, total, min(tfs) if tfs else 60


@dataclass
class StrategyLine:
    """One strategy on one symbol: its trades and what they made."""

    strategy_id: str
    kind: str
    symbol: str
    approval: str
    trades: int = 0
    wins: int = 0
    net_pnl: float = 0.0  # closed trips, net of fees
    open_pnl: float = 0.0  # the trip still open at the end, at the last mark
    fees: float = 0.0
    fills: int = 0
    rejected_approvals: int = 0

    @property
    def win_rate(self) -> float | None:
        return self.wins / self.trades if self.trades else None

    @property
    def total_pnl(self) -> float:
        return self.net_pnl + self.open_pnl

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy_id,
            "kind": self.kind,
            "symbol": self.symbol,
            "approval": self.approval,
            "trades": self.trades,
            "wins": self.wins,
            "win_rate": self.win_rate,
            "net_pnl": self.net_pnl,
            "open_pnl": self.open_pnl,
            "total_pnl": self.total_pnl,
            "fees": self.fees,
            "fills": self.fills,
            "rejected_approvals": self.rejected_approvals,
        }


@dataclass
class PortfolioResult:
    """A whole-config backtest: the header, the combined figures and each strategy's."""

    header: dict[str, Any]
    metrics: Metrics
    lines: list[StrategyLine]
    ts: np.ndarray[Any, Any]
    equity: np.ndarray[Any, Any]
    counters: dict[str, int]
    denied: dict[str, int]
    rejected: dict[str, int]
    safety_notes: list[str]
    final_portfolio: dict[str, Any]
    events_processed: int
    elapsed_s: float
    exits: dict[str, dict[str, float | int]] = field(default_factory=dict)
    # Per strategy: its PnL curve's figures (see ``strategy_curve_figures``).
    curves: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def by_strategy(self) -> dict[str, dict[str, Any]]:
        """Each strategy's lines summed over its symbols."""
        out: dict[str, dict[str, Any]] = {}
        for ln in self.lines:
            row = out.setdefault(
                ln.strategy_id,
                {
                    "trades": 0,
                    "wins": 0,
                    "net_pnl": 0.0,
                    "open_pnl": 0.0,
                    "fees": 0.0,
                    "fills": 0,
                    "rejected_approvals": 0,
                    "symbols": [],
                },
            )
            row["trades"] += ln.trades
            row["wins"] += ln.wins
            row["net_pnl"] += ln.net_pnl
            row["open_pnl"] += ln.open_pnl
            row["fees"] += ln.fees
            row["fills"] += ln.fills
            row["rejected_approvals"] += ln.rejected_approvals
            row["symbols"].append(ln.symbol)
        for sid, row in out.items():
            row["win_rate"] = row["wins"] / row["trades"] if row["trades"] else None
            row["total_pnl"] = row["net_pnl"] + row["open_pnl"]
            row.update(self.curves.get(sid, {}))
        return out

    def curve(self, points: int = 500) -> list[list[float]]:
        n = self.equity.size
        if n == 0:
            return []
        idx = np.unique(np.linspace(0, n - 1, min(points, n)).astype(np.int64))
        return [[int(self.ts[i]), float(self.equity[i])] for i in idx]

    def to_dict(self) -> dict[str, Any]:
        return {
            "header": self.header,
            "combined": self.metrics.to_dict(),
            "strategies": self.by_strategy(),
            "lines": [ln.to_dict() for ln in self.lines],
            "orders": {
                "submitted": self.counters.get("submitted", 0),
                "denied": self.counters.get("denied", 0),
                "denied_by_code": dict(self.denied),
                "awaiting_approval": self.counters.get("awaiting_approval", 0),
            },
            "rejected_at_boundary": dict(self.rejected),
            "exits": {k: dict(v) for k, v in self.exits.items()},
            "safety_events": list(self.safety_notes),
            "counters": dict(self.counters),
            "final_portfolio": self.final_portfolio,
            "equity_curve": self.curve(),
            "run": {"events": self.events_processed, "seconds": self.elapsed_s},
        }


def run_portfolio(
    base: Config,
    data: dict[str, MarketData],
    opts: BacktestOptions,
    *,
    approvals: str = "auto",
    skip_missing: bool = False,
    config_path: str | None = None,
    progress: Any = None,
    cancel: Any = None,
) -> PortfolioResult:
    """Backtest the whole config ``base`` over ``data`` (symbol -> bars)."""
    for sym, d in data.items():
        if d.kind != BARS:
            raise BacktestError(
                f"{d.path}: a whole-config backtest reads bar data ({sym} has {d.kind}); "
                "backtest quotes one strategy at a time with --strategy"
            )
    cfg = build_portfolio_config(base, data, opts, approvals)
    pairs = portfolio_pairs(cfg)
    traded = {sym for _sid, sym in pairs}
    unused = sorted(set(data) - traded)
    if unused:
        # `btc/usdt=FILE` for the config's BTC/USDT: say so, not only that nobody trades it.
        cased = {s.upper(): s for s in traded}
        hints = [f"{cased[u.upper()]}, not {u}" for u in unused if u.upper() in cased]
        raise BacktestError(
            f"data given for {', '.join(unused)}, which no enabled strategy of the config trades"
            + (f" (symbols are case-sensitive: {'; '.join(hints)})" if hints else "")
        )
    data = {s: d.between(opts.start_ns, opts.end_ns) for s, d in data.items()}
    # A symbol whose file holds no bar between --start and --end has no data for this run: with
    # --skip-missing it is skipped and listed like a symbol without a file (it stopped the run,
    # so a window before a symbol's listing could not be backtested on the others at all).
    empty = sorted(s for s, d in data.items() if not len(d))
    if empty and not skip_missing:
        raise BacktestError(
            f"no data for {', '.join(empty)} between the --start and --end given; "
            "--skip-missing backtests the symbols that have some"
        )
    data = {s: d for s, d in data.items() if len(d)}
    missing = sorted({sym for _sid, sym in pairs if sym not in data})
    skipped: list[str] = []
    if missing:
        if not skip_missing:
            raise BacktestError(
                f"no data for {', '.join(missing)} (traded by "
                + ", ".join(sorted({sid for sid, sym in pairs if sym in missing}))
                + "); pass --data SYMBOL=FILE for each, or --skip-missing to backtest only "
                "the symbols with data (or --strategy NAME to backtest one strategy)"
            )
        skipped = [f"{sid} on {sym}" for sid, sym in pairs if sym in missing]
        doc = cfg.model_dump()
        kept = []
        for s in doc["strategies"]:
            s["symbols"] = [x for x in s["symbols"] if x in data]
            if s["symbols"]:
                kept.append(s)
        if not kept:
            within = " between the --start and --end given" if empty else ""
            raise BacktestError(f"no strategy trades a symbol that has data{within}")
        doc["strategies"] = kept
        cfg = parse_config(doc)
        pairs = portfolio_pairs(cfg)
    used = {sym for _sid, sym in pairs}
    data = {s: d for s, d in data.items() if s in used}
    for sym, d in data.items():
        if opts.warmup >= len(d):
            # Its strategies would warm up on every bar and trade none: a line of 0 trades
            # that reads as "never signalled", beside symbols that traded.
            raise BacktestError(
                f"--warmup {opts.warmup:,} takes all {len(d):,} bars of {sym}: its strategies "
                "would trade none of them; lower --warmup or give more data"
            )
        tf = d.timeframe_s
        for s in cfg.strategies:
            if sym in s.symbols and s.timeframe_s != tf:
                raise BacktestError(
                    f"strategy {s.id} trades {s.timeframe_s} s bars but the {sym} data has "
                    f"{tf} s bars; pass --timeframe {tf} to run every strategy on {tf} s bars"
                )
    run = PortfolioRun(cfg, opts, approvals)
    t0 = time.perf_counter()
    try:
        ts, eq, pos, processed, interval = run.run_portfolio(data, progress, cancel)
    except StrategyFailed as exc:
        raise StrategyRaised(str(exc)) from None
    elapsed = time.perf_counter() - t0
    core = run.core
    rejected = dict(core.validator.rejected)
    if core.validator.accepted == 0 and rejected:
        raise NoUsableDataError("every bar of every symbol was rejected at the boundary")
    run.finish()
    marks = {s: p.mark for s, p in run.portfolio.positions.items()}
    metrics, _trips = compute_metrics(
        np.asarray(ts, dtype=np.int64),
        np.asarray(eq, dtype=np.float64),
        np.asarray(pos, dtype=np.float64),
        run.fills,
        run.refs,
        interval,
        marks,
    )
    by_id = {s.id: s for s in cfg.strategies}
    lines = {
        (sid, sym): StrategyLine(sid, by_id[sid].kind, sym, by_id[sid].approval)
        for sid, sym in pairs
    }
    for sid, count in run.rejected_approvals.items():
        first = next((ln for (s, _y), ln in lines.items() if s == sid), None)
        if first is not None:
            first.rejected_approvals += count
    per: dict[tuple[str, str], list[Any]] = {}
    for f in run.fills:
        per.setdefault((f.strategy_id, f.symbol), []).append(f)
    for key, fills in per.items():
        ln = lines.get(key)
        if ln is None:  # a flatten's remainder under another id: shown on its own line
            ln = lines[key] = StrategyLine(key[0], "-", key[1], "-")
        ln.fills = len(fills)
        ln.fees = sum(f.fee for f in fills)
        for trip in round_trips(fills):
            if trip.is_open:
                ln.open_pnl += open_trip_pnl(trip, marks.get(trip.symbol, trip.avg_cost))
            else:
                ln.trades += 1
                ln.net_pnl += trip.net_pnl
                ln.wins += trip.net_pnl > 0.0
    header = {
        "mode": "portfolio",
        "config": config_path or "config/default.toml",
        "strategies": [
            {
                "id": s.id,
                "kind": s.kind,
                "symbols": list(s.symbols),
                "timeframe_s": s.timeframe_s,
                "params": dict(s.params),
                "approval": base_approval(base, s.id),
                "runs_as": s.approval,
            }
            for s in cfg.strategies
        ],
        "skipped": skipped,
        "approvals": approvals,
        "approvals_text": (
            "auto: orders of approve-mode strategies are taken as approved at once"
            if approvals == "auto"
            else "reject: every approval request is rejected as it is made; approve-mode "
            "strategies never trade"
        ),
        "data": {
            sym: {
                "path": d.path,
                "rows": len(d),
                "first_time": iso(d.first_ts),
                "last_time": iso(d.last_ts),
                "timeframe_s": d.timeframe_s,
                # Bars missing inside the series (as the one-strategy report counts them).
                "gaps": bar_gaps(d.ts_array, d.timeframe_s or interval),
            }
            for sym, d in sorted(data.items())
        },
        "fill": opts.fill,
        "slippage": opts.slippage,
        "spread_bps": opts.spread_bps,
        "fee_bps": cfg.paper.taker_fee_bps,
        "warmup_bars": opts.warmup,
        "breakers": opts.breakers,
        "limits": opts.limits,
        "safety": {
            s.id: _safety(cfg, opts, s.id, base_approval(base, s.id), approvals)
            for s in cfg.strategies
        },
        "starting_cash": cfg.portfolio.starting_cash,
        "quote_currency": cfg.portfolio.quote_currency,
        "timeframe_s": interval,
        "start": iso(opts.start_ns) if opts.start_ns is not None else None,
        "end": iso(opts.end_ns) if opts.end_ns is not None else None,
    }
    ppy = periods_per_year(interval)
    cash = cfg.portfolio.starting_cash
    curves = {
        sid: strategy_curve_figures(np.asarray(series, dtype=np.float64), cash, ppy)
        for sid, series in run.strategy_pnl.items()
    }
    return PortfolioResult(
        curves=curves,
        header=header,
        metrics=metrics,
        lines=sorted(lines.values(), key=lambda ln: (ln.strategy_id, ln.symbol)),
        ts=np.asarray(ts, dtype=np.int64),
        equity=np.asarray(eq, dtype=np.float64),
        counters=dict(core.counters),
        denied=dict(run.denied),
        rejected=rejected,
        safety_notes=[event_note(e) for e in run.notable],
        final_portfolio=final_portfolio(run.portfolio),
        events_processed=processed,
        elapsed_s=elapsed,
        exits={k: v.to_dict() for k, v in sorted(core.exit_stats.items())},
    )


def strategy_curve_figures(
    pnl: np.ndarray[Any, Any], cash: float, ppy: float
) -> dict[str, float | None]:
    """One strategy's figures from its PnL at every equity sample, as if it alone traded the
    book's starting cash: the largest fall of its PnL from a running peak (money, and as a
    fraction of that peak's equity), and the Sharpe ratio of that equity."""
    if pnl.size == 0:
        return {"max_drawdown": 0.0, "max_drawdown_pct": 0.0, "sharpe": None}
    dd = max_drawdown(cash + pnl)
    return {
        "max_drawdown": dd.amount,
        "max_drawdown_pct": dd.fraction * 100.0,
        "sharpe": sharpe_ratio(cash + pnl, ppy),
    }


def base_approval(base: Config, sid: str) -> str:
    return next((s.approval for s in base.strategies if s.id == sid), "auto")


def _safety(
    cfg: Config, opts: BacktestOptions, sid: str, configured: str, approvals: str
) -> dict[str, Any]:
    """``safety_settings`` for one strategy (its own breaker overrides), this run's approvals."""
    strat = next(s for s in cfg.strategies if s.id == sid)
    rest = [s for s in cfg.strategies if s.id != sid]
    out = safety_settings(cfg.model_copy(update={"strategies": [strat, *rest]}), opts)
    out["approvals"] = (
        "auto (as configured)"
        if configured == "auto"
        else f"{configured} in the config; this run: --approvals {approvals}"
    )
    return out
