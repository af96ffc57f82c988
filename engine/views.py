"""What a cockpit and the headless summary see of a running engine: pure reads of its state.

The snapshot is the whole state (typed as :class:`engine.vocabulary.Snapshot`); a cockpit asks
for it in full once and then keeps it current from events, pulling a light one at ~10 Hz.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

from engine.audit_log import AUDIT_RECENT, AUDIT_SHOWN
from engine.vocabulary import (
    KILL_LIMIT_NAMES,
    RISK_LIMIT_NAMES,
    TRACE_KINDS,
    TRADING_BLOCKED,
    EventKind,
    Snapshot,
    TradingStateView,
)

CLOSED_ORDERS = 50  # finished orders a snapshot lists after the open ones
# After a restart the trace carries the sessions' starts and stops too, this one's included:
# the line between history and what is new (the kinds restore keeps: engine.restore's
# HISTORY_KINDS, which tests/test_history_restart.py holds equal to this).
TRACE_AFTER_RESTART = TRACE_KINDS | {EventKind.SESSION}

if TYPE_CHECKING:
    from engine.runtime import Engine


def listed(pos: dict[str, Any]) -> bool:
    """Does the Positions pane list this portfolio position? While it is held, and after it is
    back to flat while it made or cost something (its fees too): the pane's columns then add up
    to its net PnL footer."""
    return bool(pos["qty"] or pos["realized_pnl"] or pos["fees"])


def _on_engine_clock(core: Any, item: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``item``'s times (``keys``) moved from its symbol's venue's clock onto the snapshot's
    ``now``, where venues keep clocks of their own: a pending request's and a resting limit's
    time to live run on their venue's clock, and the cockpit counts them down against ``now``
    (the engine's). With the engine's clock behind a venue's (the venue ahead quotes rarely,
    the one behind often) the countdown stood still while the time ran out: "30s" shown, the
    request expired. Now what is shown is what is left, on the clock that judges it."""
    lag = core.venue_lag(item.get("symbol", ""))
    if lag:
        for key in keys:
            value = item.get(key)
            if isinstance(value, int) and value:
                item[key] = value + lag
    return item


def build_snapshot(engine: Engine, trace: int = 500, curve: int = 600) -> Snapshot:
    """The whole state for a cockpit (see engine.client for the keys).

    ``trace`` and ``curve`` bound the two long lists: a cockpit asks for them in full once
    and then keeps them up to date from events, pulling a light snapshot at ~10 Hz. After a
    restart the trace and the closed orders begin with the history restored from the journal
    (events marked ``RESTORED_FROM``, see engine.vocabulary).
    """
    core = engine.core
    assert core is not None
    p = core.portfolio
    ps = p.snapshot()
    equity = ps["equity"] or 1.0
    positions = [
        {
            "symbol": sym,
            "venue": core.instruments[sym].venue if sym in core.instruments else "",
            "qty": pos["qty"],
            "avg_price": pos["avg_price"],
            "mark": pos["mark"],
            "unrealized_pnl": pos.get("unrealized_pnl", 0.0),
            "realized_pnl": pos["realized_pnl"],
            "fees": pos["fees"],
            "share_of_equity": abs(pos["qty"] * pos["mark"]) / equity,
            # Below the venue minimum: no order can close it (shown, never retried).
            "dust": core.is_dust(sym, pos["qty"], pos["mark"]),
            # Each strategy's protective exits on it: stop, target, trail, time stop.
            "exits": core.exits_view(sym),
        }
        for sym, pos in sorted(ps["positions"].items())
        if listed(pos)
    ]
    strategies = []
    counters = core.approvals.counters()
    for scfg in engine.cfg.strategies:
        st = core.safety.state.strategies.get(scfg.id)
        c = counters.get(scfg.id, {})
        strategies.append(
            {
                "id": scfg.id,
                "kind": scfg.kind,
                "symbols": list(scfg.symbols),
                "approval": core.approvals.mode(scfg.id),
                "paused": bool(st and st.paused),
                "paused_by": st.by if st and st.paused else "",
                "pause_reason": st.reason if st and st.paused else "",
                "approved": c.get("approved", 0),
                "rejected": c.get("rejected", 0),
                "expired": c.get("expired", 0),
                "superseded": c.get("superseded", 0),
                # Approved trades a strategy needs before an operator may switch it to auto.
                "auto_after": core.approvals.cfg.auto_after_approved,
                "position": {
                    sym: slot.position.qty
                    for (sid, sym), slot in core.slots.items()
                    if sid == scfg.id and slot.position.qty
                },
            }
        )
    kcfg = core.safety.kill_cfg
    daily_loss = max(0.0, -p.daily_pnl / p.day_start_equity * 100) if p.day_start_equity else 0.0
    limits = {
        "daily_loss": {"value": daily_loss, "limit": kcfg.daily_loss_limit_pct, "unit": "%"},
        "drawdown": {"value": p.drawdown * 100, "limit": kcfg.drawdown_limit_pct, "unit": "%"},
        "exposure": {
            "value": p.gross_exposure / equity * 100,
            "limit": core.limits.max_gross_exposure_fraction * 100,
            "unit": "%",
        },
        "order_rate": {
            "value": float(core.throttle.global_count(core.now)),
            "limit": float(core.limits.global_throttle.max_orders),
            "unit": f"/{core.limits.global_throttle.per_seconds:g}s",
        },
    }
    # The limits an operator may change (set-limit), with the value in force now.
    settable = {name: float(getattr(core.limits, name)) for name in RISK_LIMIT_NAMES}
    settable.update({name: float(getattr(kcfg, name)) for name in KILL_LIMIT_NAMES})
    orders = [
        _on_engine_clock(core, o.to_dict(), ("ts_created", "expire_ts"))
        for o in core.open_orders.values()
    ]
    # Then the newest closed orders in their last state, this session's or (after a restart)
    # the history's: what the Orders pane showed before the restart, it shows after it.
    seen = set(core.open_orders)
    recent_closed: list[dict[str, Any]] = []
    fanout = engine.fanout
    for item in fanout.shown(newest_first=True):
        if item["event"] == EventKind.ORDER:
            coid = item["order"]["client_order_id"]
            if coid not in seen:
                seen.add(coid)
                recent_closed.append(item["order"])
                if len(recent_closed) >= CLOSED_ORDERS:
                    break
    trace_items: list[dict[str, Any]] = []
    if trace > 0:
        kinds = TRACE_AFTER_RESTART if fanout.history else TRACE_KINDS
        trace_items = [e for e in fanout.shown() if e["event"] in kinds][-trace:]
    quotes = {
        sym: {
            "bid": q.bid,
            "ask": q.ask,
            "bid_size": q.bid_size,
            "ask_size": q.ask_size,
            "ts": q.ts_exchange,
            "venue": q.venue,
        }
        for sym, q in core.quotes.items()
    }
    safety = core.safety.snapshot()
    if engine.blocked_reason:
        safety["trading_state"] = blocked_state(engine)
    snapshot = {
        "seq": engine.seq,
        # The engine's clock, which runs on between quotes (what a time to live is judged
        # by): the last quote's time froze a TTL shown while the feed was quiet.
        "now": core.clock_now,
        "mode": engine.cfg.engine.mode,
        "profile": engine.cfg.profile,
        "venues": engine.execution.venues_view(engine.source),
        **safety,
        "blocked": engine.blocked_reason,
        "strategies": strategies,
        "breakers": core.breakers.status(),
        "limits": limits,
        "settable_limits": settable,
        "portfolio": {k: v for k, v in ps.items() if k not in ("positions", "equity_curve")},
        "positions": positions,
        "orders": orders + recent_closed,
        "quotes": quotes,
        "approvals": [
            _on_engine_clock(core, a.to_dict(), ("created_ts", "expires_ts"))
            for a in core.approvals.pending()
        ],
        "trace": trace_items,
        "equity_curve": ps["equity_curve"][-curve:] if curve > 0 else [],
        # The newest operator actions: all kept on a full pull, the last few on a light one.
        "audit": engine.audit.newest(AUDIT_SHOWN if trace > 0 else AUDIT_RECENT),
        "performance": {
            # At the portfolio's marks, so the strategies' unrealized PnL adds up to the
            # Positions pane's: after a restart there is no quote until the feed speaks again,
            # but the journaled marks value the positions (a quote mid marks both alike).
            "strategies": core.performance.table(ps["marks"]),
            "daily": core.performance.daily_pnl(),
            "latency": engine.latency.percentiles(),
        },
        "counters": {
            **core.counters,
            "quotes": engine.quotes_processed,
            "quotes_rejected": dict(core.validator.rejected),
            # The outbound heartbeat and systemd's watchdog, when on (engine.heartbeat).
            **({"heartbeat": dict(engine.heartbeat.view)} if engine.heartbeat is not None else {}),
            # Acting decisions stored with their L2 book, and without one (engine.bookshot).
            "book_snapshots": dict(engine.book_snapshots),
            # The raw market recorder, when [record] is on (engine.marketdata.recording).
            **({"recording": engine.recorder.status()} if engine.recorder is not None else {}),
        },
        "alerts": engine.alerts.view() if engine.alerts is not None else None,
    }
    return cast(Snapshot, snapshot)


def blocked_state(engine: Engine) -> TradingStateView:
    """The snapshot's ``trading_state`` of an engine whose journal failed: nothing is sent
    whatever the kill switch says, the state a person must see."""
    return {
        "state": TRADING_BLOCKED,
        "by": "system",
        "reason": engine.blocked_reason,
        "ts": engine.blocked_ts,
    }


def build_summary(engine: Engine) -> dict[str, Any]:
    """The periodic headless summary: equity, positions, counts and rates."""
    assert engine.core is not None
    core = engine.core
    p = core.portfolio
    elapsed = max(time.monotonic() - engine.started_wall, 1e-9) if engine.started_wall else 0.0
    return {
        "session": core.session,
        "equity": round(p.equity, 2),
        "cash": round(p.cash, 2),
        "realized_pnl": round(p.realized_pnl, 2),
        "unrealized_pnl": round(p.unrealized_pnl, 2),
        "fees": round(p.fees_paid, 2),
        # Net of fees, as equity moves (realized and unrealized above are gross), and since
        # 00:00 UTC: what the Positions footer and the fleet's day PnL show.
        "net_pnl": round(p.realized_pnl + p.unrealized_pnl - p.fees_paid, 2) + 0.0,
        "daily_pnl": round(p.daily_pnl, 2) + 0.0,
        "drawdown_pct": round(p.drawdown * 100, 3),
        # Ten significant digits, not eight decimals: 3e-09 held is not "0.0".
        "positions": {
            s: float(f"{pos.qty:.10g}") for s, pos in sorted(p.positions.items()) if pos.qty
        },
        "open_orders": len(core.open_orders),
        "quotes": engine.quotes_processed,
        "quotes_per_s": round(engine.quotes_processed / elapsed, 1) if elapsed else 0.0,
        "quotes_rejected": dict(core.validator.rejected),
        **core.counters,
        "trading_state": (
            TRADING_BLOCKED if engine.blocked_reason else str(core.safety.trading_state)
        ),
        "kill_switch": core.safety.kill.level,
        "pending_approvals": len(core.approvals.pending()),
        "blocked": engine.blocked_reason or None,
        **({"heartbeat": engine.heartbeat.summary()} if engine.heartbeat is not None else {}),
    }
