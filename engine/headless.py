"""The headless engine's output: one JSON line per notable event (``cockpit engine``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engine.events import DecisionMade, EngineEvent, FillReceived, IntentChecked, OrderUpdated
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


def describe_event(ev: EngineEvent) -> dict[str, Any] | None:
    """The headless one-line JSON form of a notable event; None for events not worth a line."""
    ts = datetime.fromtimestamp(ev.ts / NS_PER_SECOND, tz=UTC).isoformat(timespec="milliseconds")
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
    if ev.kind in _AS_PAYLOAD:
        return {"ts": ts, "event": ev.kind, **ev.payload()}
    return None
