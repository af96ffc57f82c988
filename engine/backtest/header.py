"""What a run was, as data for the report: strategy, data, fill model, sizing, every
breaker and limit as it acted, rows read and rejected, and the final portfolio.
"""

from __future__ import annotations

from typing import Any

from engine.backtest.data import BARS, MarketData
from engine.backtest.options import BacktestOptions
from engine.backtest.simulation import BacktestRun
from engine.config import Config
from engine.events import BreakerChanged, EngineEvent, SafetyChanged
from engine.metrics import iso
from engine.paper_broker import PaperBroker
from engine.portfolio import Portfolio

# ------------------------------------------------------------------ what was on


def safety_settings(cfg: Config, opts: BacktestOptions) -> dict[str, Any]:
    """Every breaker, limit and gate of the run as it acted: on or off, its limit and why.

    The report prints this so that "breakers on" never hides one that a backtest turns off
    (unreviewed fills, approvals forced to auto) or one that cannot act here (clock drift)."""
    strat = cfg.strategies[0]
    b = cfg.breakers_for(strat.id)
    on = opts.breakers
    off = "off (--no-breakers)"
    ccy = cfg.portfolio.quote_currency

    def breaker(
        name: str, scope: str, limit: str, action: str, why_off: str = ""
    ) -> dict[str, Any]:
        state = "off" if why_off else ("on" if on else "off")
        return {
            "breaker": name,
            "scope": scope,
            "state": state,
            "limit": limit,
            "action": action,
            "note": why_off or ("" if on else f"{limit}: {off}"),
        }

    rl = b.rolling_loss
    g = cfg.safety.breakers
    breakers = [
        breaker(
            "consecutive_losses",
            "strategy",
            f"{b.consecutive_losses} losing trades in a row",
            "pause_strategy",
        ),
        breaker(
            "consecutive_losses",
            "global",
            f"{g.global_consecutive_losses} losing trades in a row",
            "halt_engine",
        ),
        breaker(
            "rolling_loss",
            "strategy",
            f"{rl.max_loss_pct:g}% of equity within {rl.window_s:g} s",
            "pause_strategy",
        ),
        breaker(
            "rolling_loss",
            "global",
            f"{g.rolling_loss.max_loss_pct:g}% of equity within {g.rolling_loss.window_s:g} s",
            "halt_engine",
        ),
        breaker("orders_per_minute", "strategy", f"{b.orders_per_minute} orders", "pause_strategy"),
        breaker(
            "signal_rate",
            "strategy",
            f"{b.signal_rate_multiple:g} x {b.baseline_signals_per_hour:g} signals per hour",
            "pause_strategy",
        ),
        breaker(
            "consecutive_rejects",
            "strategy",
            f"{b.consecutive_rejects} rejected orders in a row",
            "pause_strategy",
        ),
        breaker(
            "slippage",
            "strategy",
            f"{b.slippage_excess_pct:g}% above the model over {b.slippage_window_fills} fills",
            "pause_strategy",
        ),
        breaker(
            "stale_feed",
            "symbol",
            f"no data for {cfg.market.validation.stale_after_s:g} s (on the data's clock)",
            "block_symbol",
        ),
        breaker(
            "clock_drift",
            "global",
            f"{g.clock_drift_halt_ms:g} ms",
            "halt_engine",
            "off (a backtest runs on the data's clock: there is no wall clock to drift)",
        ),
        breaker(
            "unreviewed_fills",
            "strategy",
            "none",
            "pause_strategy",
            "off (nobody reviews fills in a backtest)",
        ),
    ]
    r = cfg.risk
    ks = cfg.safety.kill_switch
    return {
        "breakers": breakers,
        "rearm": f"{b.rearm}, cool-down {b.cooldown_s:g} s",
        "limits": {
            "state": "on" if opts.limits else "lifted to their most permissive (--no-limits)",
            "max_order_notional": f"{r.max_order_notional:,.2f} {ccy}",
            "max_position_fraction": f"{r.max_position_fraction:g} of equity",
            "max_open_positions": f"{r.max_open_positions}",
            "max_gross_exposure_fraction": f"{r.max_gross_exposure_fraction:g} of equity",
            "price_collar_pct": f"{r.price_collar_pct:g}%",
            "strategy_throttle": (
                f"{r.strategy_throttle.max_orders} orders per {r.strategy_throttle.per_seconds:g} s"
            ),
            "global_throttle": (
                f"{r.global_throttle.max_orders} orders per {r.global_throttle.per_seconds:g} s"
            ),
            "always_on": "tick/lot grid, cash, quote freshness and price checks",
        },
        "kill_switch": {
            "daily_loss_limit_pct": ks.daily_loss_limit_pct,
            "drawdown_limit_pct": ks.drawdown_limit_pct,
            "auto_level": ks.auto_level,
            "note": "" if opts.limits else "lifted to 100% by --no-limits",
        },
        "approvals": "auto for every order (forced: nobody approves in a backtest)",
    }


def _sizing_text(cfg: Config) -> str:
    s = cfg.strategies[0].sizing
    if s.model == "fixed_qty":
        return f"fixed_qty {s.qty:g}"
    if s.model == "fixed_fraction":
        return f"fixed_fraction {s.fraction:g} of equity"
    if s.model == "volatility":
        return f"volatility (risk {s.risk_fraction:g} of equity per {s.atr_multiple:g} ATR)"
    return f"kelly (win rate {s.win_rate:g}, payoff {s.payoff_ratio:g}, x{s.kelly_fraction:g})"


def _fill_text(cfg: Config, opts: BacktestOptions, kind: str) -> str:
    if opts.fill == "close":
        return "signal bar's close (immediate, stamped 1 ns after the close)"
    if opts.fill == "next-open":
        return "next bar's open"
    paper = cfg.paper
    where = "the next bar's close" if kind == BARS else "the first quote after arrival"
    return (
        f"live paper broker ({paper.latency_median_ms:g} ms median latency, "
        f"sigma {paper.latency_sigma:g}; fills on {where})"
    )


def _volume_header(
    cfg: Config, opts: BacktestOptions, data: MarketData, run: BacktestRun
) -> dict[str, Any]:
    """What the fill model took as the market's size, and how often it capped an order."""
    if data.kind == BARS:
        unit = data.volume_unit or "quote"
        given = "--volume-unit" if data.volume_unit_given else f"default for {data.fmt}"
        displayed = "the bar's volume" if unit == "base" else "the bar's volume / close"
    else:
        unit, given, displayed = "base", "bookTicker sizes", "the quote's bid / ask size"
    if opts.slippage == "none":
        behaviour = "slippage none: the displayed size is unlimited, no order is capped"
    else:
        behaviour = (
            "an order beyond the displayed size walks impact levels, each holding the displayed "
            f"size or {cfg.paper.impact_level_notional:,.0f} worth (whichever is more), "
            f"{cfg.paper.impact_bps_per_size:g} bps further per level, at most "
            f"{PaperBroker.max_levels} levels; the rest is canceled (exceeds simulated depth)"
        )
    return {
        "unit": unit,
        "unit_from": given,
        "displayed_size": displayed,
        "fill_model": behaviour,
        "capped_orders": run.capped_orders,
        "capped_fills": run.capped_fills,
        "depth_exhausted_orders": run.depth_exhausted,
    }


def event_note(ev: EngineEvent) -> str:
    when = iso(ev.ts).replace("T", " ").removesuffix("Z")
    if isinstance(ev, BreakerChanged):
        c = ev.change
        if c["tripped"]:
            return (
                f"{when} breaker {c['breaker']} ({c['scope']}) tripped -> {c['action']}: "
                f"{c['reason']}"
            )
        return f"{when} breaker {c['breaker']} ({c['scope']}) re-armed: {c['reason']}"
    if isinstance(ev, SafetyChanged):
        return f"{when} {ev.what} {ev.subject} by {ev.by}: {ev.reason}"
    return f"{when} {ev.kind}"


def build_header(
    cfg: Config,
    opts: BacktestOptions,
    data: MarketData,
    run: BacktestRun,
    *,
    interval: int,
    warmup_bars: int,
) -> dict[str, Any]:
    """What the run was: strategy, data, fill model, sizing, safety, rows read and rejected
    (the report's header and the JSON's ``header``)."""
    strat = cfg.strategies[0]
    core = run.core
    rejected = dict(core.validator.rejected)
    return {
        "strategy_id": strat.id,
        "strategy_kind": strat.kind,
        "params": dict(strat.params),
        "symbol": run.symbol,
        "data_path": data.path,
        "data_format": data.fmt,
        "data_kind": data.kind,
        "events": len(data),
        "warmup_bars": warmup_bars,
        "first_ts": data.first_ts,
        "last_ts": data.last_ts,
        "first_time": iso(data.first_ts),
        "last_time": iso(data.last_ts),
        "timeframe_s": interval,
        "fill": opts.fill,
        "fill_description": _fill_text(cfg, opts, data.kind),
        "slippage": opts.slippage,
        "spread_bps": opts.spread_bps,
        "fee_bps": cfg.paper.taker_fee_bps,
        "sizing": _sizing_text(cfg),
        "allow_short": strat.allow_short,
        # Protective exits on every position (None: none), as the config and options set them.
        "exits": (
            strat.exits.model_dump(exclude_none=True)
            if strat.exits is not None and strat.exits.any
            else None
        ),
        "breakers": opts.breakers,
        "limits": opts.limits,
        "safety": safety_settings(cfg, opts),
        "rows": {
            "read": len(data),
            "accepted": core.validator.accepted,
            "rejected": sum(rejected.values()),
            "rejected_by_code": rejected,
        },
        "volume": _volume_header(cfg, opts, data, run),
        "starting_cash": cfg.portfolio.starting_cash,
        "quote_currency": cfg.portfolio.quote_currency,
        "start": iso(opts.start_ns) if opts.start_ns is not None else None,
        "end": iso(opts.end_ns) if opts.end_ns is not None else None,
    }


def final_portfolio(p: Portfolio) -> dict[str, Any]:
    """The portfolio when the data ended: cash, equity, PnL, fees and the open positions."""
    snap = p.snapshot()
    return {
        "cash": snap["cash"],
        "equity": snap["equity"],
        "realized_pnl": snap["realized_pnl"],
        "unrealized_pnl": snap["unrealized_pnl"],
        "fees_paid": snap["fees_paid"],
        "positions": {
            s: {"qty": v["qty"], "avg_price": v["avg_price"], "mark": v["mark"]}
            for s, v in snap["positions"].items()
            if v["qty"]
        },
    }
