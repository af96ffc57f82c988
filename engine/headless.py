"""The headless engine's output: one JSON line per notable event (``cockpit engine``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engine.events import (
    ApprovalDecided,
    ApprovalRequested,
    DecisionMade,
    EngineEvent,
    FillReceived,
    IntentChecked,
    OrderUpdated,
)
from engine.types import NS_PER_SECOND
from engine.vocabulary import EventKind, HeadlessLine, IntentOutcome

# Other events worth a line, as their payload.
_AS_PAYLOAD = frozenset(
    {EventKind.SESSION, EventKind.QUOTES_REJECTED, EventKind.SAFETY, EventKind.BLOCKED}
)
_INTENT_LINE: dict[str, HeadlessLine] = {
    IntentOutcome.SUBMITTED: HeadlessLine.ORDER_INTENT,
    IntentOutcome.DUST: HeadlessLine.DUST,
}


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts / NS_PER_SECOND, tz=UTC).isoformat(timespec="milliseconds")


def describe_event(ev: EngineEvent) -> dict[str, Any] | None:
    """The headless one-line JSON form of a notable event; None for events not worth a line."""
    ts = _iso(ev.ts)
    if isinstance(ev, DecisionMade):
        d = ev.decision
        if not ev.acts:
            return None
        return {
            "ts": ts,
            "event": EventKind.DECISION,
            "id": d.decision_id,
            "strategy": d.strategy_id,
            "symbol": d.symbol,
            "action": str(d.action),
            "reason": d.reason,
            "confidence": round(d.confidence, 3),
        }
    if isinstance(ev, IntentChecked):
        i = ev.intent
        line = {
            "ts": ts,
            "event": _INTENT_LINE.get(ev.outcome, HeadlessLine.REJECTION),
            "id": i.intent_id,
            "decision": i.decision_id,
            "strategy": i.strategy_id,
            "symbol": i.symbol,
            "side": str(i.side),
            "qty": i.qty,
            "ref_price": round(i.ref_price, 8),
            "outcome": ev.outcome,
        }
        if ev.outcome == IntentOutcome.DUST:
            line["detail"] = ev.detail
        elif ev.outcome != IntentOutcome.SUBMITTED:
            line["denied"] = [
                {"check": v.check, "code": v.code, "message": v.message}
                for v in ev.verdicts
                if not v.ok
            ]
        return line
    if isinstance(ev, OrderUpdated):
        o = ev.order
        line = {
            "ts": ts,
            "event": EventKind.ORDER,
            "id": o.client_order_id,
            "symbol": o.symbol,
            "side": str(o.side),
            "status": str(o.status),
            "qty": o.qty,
            "filled": o.filled_qty,
            "avg_price": round(o.avg_fill_price, 8),
        }
        if o.reason:
            line["reason"] = o.reason
        return line
    if isinstance(ev, FillReceived):
        f = ev.fill
        return {
            "ts": ts,
            "event": EventKind.FILL,
            "order": f.client_order_id,
            "strategy": f.strategy_id,
            "symbol": f.symbol,
            "side": str(f.side),
            "qty": f.qty,
            "price": f.price,
            "fee": round(f.fee, 8),
            "liquidity": str(f.liquidity),
            "realized_pnl": round(ev.realized_pnl, 8),
        }
    if isinstance(ev, ApprovalRequested):
        a = ev.approval
        return {
            "ts": ts,
            "event": EventKind.APPROVAL_REQUESTED,
            "id": a.get("id"),
            "strategy": a.get("strategy"),
            "symbol": a.get("symbol"),
            "side": a.get("side"),
            "qty": a.get("qty"),
            # The whole order the approval covers (its hash binds every one of these), so an
            # approve from this line approves what it says: `cockpit approve ID --hash HASH`.
            "venue": a.get("venue"),
            "order_type": a.get("order_type"),
            "limit_price": a.get("limit_price"),
            "reduce_only": a.get("reduce_only"),
            "post_only": a.get("post_only"),
            "tif": a.get("tif"),
            "ttl_s": a.get("ttl_s"),
            "ref_price": a.get("ref_price"),
            "notional": a.get("notional"),
            "reason": a.get("reason"),
            "expires": _iso(int(a.get("expires_ts") or 0)),
            "hash": a.get("hash"),
        }
    if isinstance(ev, ApprovalDecided):
        return _approval_line(ts, ev.outcome)
    if ev.kind in _AS_PAYLOAD:
        return {"ts": ts, "event": ev.kind, **ev.payload()}
    return None


def _approval_line(ts: str, o: dict[str, Any]) -> dict[str, Any] | None:
    """Approved, rejected, expired or superseded, and by whom; a refused request changed
    nothing (the operator's audit row records it), so it gets no line."""
    if o.get("status") == "refused":
        return None
    pending = o.get("pending") or {}
    line = {
        "ts": ts,
        "event": EventKind.APPROVAL,
        "id": o.get("approval_id"),
        "status": o.get("status"),
        "by": o.get("by"),
        "strategy": o.get("strategy_id") or pending.get("strategy"),
        "symbol": pending.get("symbol"),
        "side": pending.get("side"),
        "reason": o.get("reason"),
    }
    if o.get("superseded_by"):
        line["superseded_by"] = o["superseded_by"]
    return line
