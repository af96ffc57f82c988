"""The approval gate: intents from a strategy in ``approve`` mode wait here for a person.

Sans-I/O like the rest of the core: time comes in as integer nanoseconds, nothing is read or
written. The engine calls the gate, journals every ``ApprovalOutcome`` it returns (as
``ApprovalDecided`` with ``outcome.to_dict()``) and feeds those dicts back to :meth:`restore` on
start.

Rules (from the issue):

- Each strategy is in ``approve`` or ``auto`` mode. It starts in ``approve`` unless its config
  says ``auto``; in live mode every strategy starts in ``approve``. Only an operator switches a
  strategy to ``auto``, and only after ``auto_after_approved`` approved trades; the gate never
  does it by itself.
- A pending approval expires after ``ttl_s`` (``now >= expires_ts``), which counts as a
  rejection of its own kind ("expired").
- On approval the price is re-checked: a move of the mid beyond ``price_tolerance_pct`` from the
  intent's reference price rejects it (exactly at the tolerance is accepted). The engine then
  re-runs the pre-trade checks and calls :meth:`reject_after_checks` if they fail.
- An approval is bound to the hash of the exact intent and decides at most once: a repeated,
  replayed or stale approval is "refused" and changes nothing.
- At most one approval waits per strategy, symbol and side: a new one replaces the pending one,
  which is withdrawn as "superseded" (its own outcome, by the system, naming the new id), so a
  person never faces a pile of stale requests for one trade. Approving it afterwards is refused
  with the new id.

Memory: decided approval ids are kept in a bounded LRU (``max_decided``, default 100 000) only
to give a precise answer ("already approved at ...") to a repeat. Safety does not depend on it:
an id that is neither pending nor remembered is refused as unknown, and approval ids are
``ap-<intent_id>`` where intent ids carry the engine session, so a new session never reuses an
old id. :meth:`submit` refuses (raises) an id it has seen decided, which would mean the engine
reused a client order id.

Restart: pending approvals do not survive a restart. The engine journals each one it finds
unresolved at start as expired; :meth:`restore` rebuilds the per-strategy counters, the decided
ids and the operator's mode changes from the journaled outcome dicts.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.config import ApprovalConfig
from engine.types import NS_PER_SECOND, Decision, OrderIntent, Verdict

APPROVE = "approve"
AUTO = "auto"
MODES = (APPROVE, AUTO)

APPROVED = "approved"
REJECTED = "rejected"
EXPIRED = "expired"
SUPERSEDED = "superseded"
REFUSED = "refused"
TERMINAL = (APPROVED, REJECTED, EXPIRED, SUPERSEDED)

# Who decided when no person did.
SYSTEM = "system"

DEFAULT_MAX_DECIDED = 100_000

# A move must exceed the tolerance by more than this relative margin to reject: it absorbs the
# float rounding of "ref * 1.005", so a move of exactly the tolerance is accepted as promised.
_TOLERANCE_SLACK = 1e-12

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


def intent_hash(intent: OrderIntent) -> str:
    """sha256 over exactly what would be sent, so any change to the order breaks the approval.

    Floats are hashed by ``repr`` (the shortest exact spelling), so 0.1 and 0.1000000001 differ.
    ``ref_price`` and ``ts`` are context, not part of the order, and are left out.
    """
    fields: dict[str, Any] = {
        "intent_id": intent.intent_id,
        "strategy_id": intent.strategy_id,
        "symbol": intent.symbol,
        "venue": intent.venue,
        "side": str(intent.side),
        "qty": repr(float(intent.qty)),
        "order_type": str(intent.order_type),
        "limit_price": None if intent.limit_price is None else repr(float(intent.limit_price)),
        "reduce_only": bool(intent.reduce_only),
    }
    if intent.stop_price is not None:
        fields["stop_price"] = repr(float(intent.stop_price))
    if intent.order_type == "limit":  # how a limit works is part of the order (market: n/a)
        fields["post_only"] = bool(intent.post_only)
        fields["tif"] = str(intent.tif)
        fields["ttl_ns"] = int(intent.ttl_ns)
    return hashlib.sha256(_ENCODER.encode(fields).encode()).hexdigest()


def approval_id_for(intent: OrderIntent) -> str:
    """Deterministic, so a repeat of the same intent maps to the same approval."""
    return f"ap-{intent.intent_id}"


def _num(value: float) -> float | None:
    """JSON-safe float: a non-finite value (never expected) becomes None, never NaN."""
    value = float(value)
    return value if math.isfinite(value) else None


def _when(ts: int) -> str:
    """A journal timestamp for people: ISO-8601 UTC with milliseconds."""
    try:
        dt = datetime.fromtimestamp(ts / NS_PER_SECOND, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return f"ts {ts}"
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _pct_text(move: float, limit: float) -> str:
    """The move as a percentage with enough decimals that it visibly differs from the limit."""
    for digits in range(2, 9):
        text = f"{move:.{digits}f}"
        if text != f"{limit:.{digits}f}":
            return text
    return f"{move:.12f}"


@dataclass(slots=True)
class PendingApproval:
    """The intent's full picture, as a person needs it to decide."""

    approval_id: str
    intent: OrderIntent
    intent_hash: str
    decision: Decision
    verdicts: tuple[Verdict, ...]
    created_ts: int
    expires_ts: int
    est_fee: float
    est_slippage_bps: float

    @property
    def notional(self) -> float:
        return self.intent.notional

    def to_dict(self) -> dict[str, Any]:
        """Flat and JSON-able for the approval pane and the journal."""
        i = self.intent
        return {
            "id": self.approval_id,
            "hash": self.intent_hash,
            "strategy": i.strategy_id,
            "symbol": i.symbol,
            "venue": i.venue,
            "side": str(i.side),
            "qty": _num(i.qty),
            "order_type": str(i.order_type),
            "limit_price": None if i.limit_price is None else _num(i.limit_price),
            "reduce_only": bool(i.reduce_only),
            # How a limit works is part of what the person approves (the hash covers it), so
            # it is shown: post-only, time in force, time to live (None: until done).
            "post_only": bool(i.post_only),
            "tif": str(i.tif) if i.order_type == "limit" else None,
            "ttl_s": i.ttl_ns / NS_PER_SECOND if i.order_type == "limit" and i.ttl_ns else None,
            "ref_price": _num(i.ref_price),
            "notional": _num(self.notional),
            "rule": self.decision.rule,
            "reason": self.decision.reason,
            "confidence": _num(self.decision.confidence),
            "verdicts": [
                {"check": v.check, "ok": bool(v.ok), "code": v.code, "message": v.message}
                for v in self.verdicts
            ],
            "est_fee": _num(self.est_fee),
            "est_slippage_bps": _num(self.est_slippage_bps),
            "created_ts": self.created_ts,
            "expires_ts": self.expires_ts,
            "decision_id": self.decision.decision_id,
            "intent_id": i.intent_id,
        }


@dataclass(slots=True, frozen=True)
class ApprovalOutcome:
    """What one approve/reject/expire request did. "refused" means it did nothing at all."""

    approval_id: str
    status: str  # "approved" | "rejected" | "expired" | "refused"
    reason: str
    by: str
    ts: int
    intent: OrderIntent | None = None  # set only for "approved": the intent to re-check and send
    pending: PendingApproval | None = None
    # Set on the "rejected" outcome of reject_after_checks (an earlier "approved" turned over).
    after_checks: bool = False
    strategy_id: str = ""  # "" only when the id was never known
    superseded_by: str = ""  # "superseded" (or a refusal of one): the approval that replaced it

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; also the form :meth:`ApprovalGate.restore` reads back."""
        p = self.pending
        return {
            "approval_id": self.approval_id,
            "status": self.status,
            "reason": self.reason,
            "by": self.by,
            "ts": self.ts,
            "strategy_id": self.strategy_id,
            "intent_id": p.intent.intent_id if p is not None else "",
            "intent_hash": p.intent_hash if p is not None else "",
            "after_checks": self.after_checks,
            "superseded_by": self.superseded_by,
            "pending": p.to_dict() if p is not None else None,
        }


@dataclass(slots=True, frozen=True)
class _Decided:
    status: str
    ts: int
    by: str
    strategy_id: str
    superseded_by: str = ""


def _zero() -> dict[str, int]:
    return {APPROVED: 0, REJECTED: 0, EXPIRED: 0, SUPERSEDED: 0}


def _key(intent: OrderIntent) -> tuple[str, str, str]:
    """What one pending approval at most may wait for: strategy, symbol and side."""
    return intent.strategy_id, intent.symbol, str(intent.side)


class ApprovalGate:
    """Holds pending approvals, decides each at most once, and counts outcomes per strategy."""

    def __init__(
        self,
        cfg: ApprovalConfig,
        strategy_modes: dict[str, str],
        *,
        live: bool = False,
        max_decided: int = DEFAULT_MAX_DECIDED,
    ) -> None:
        for sid, mode in strategy_modes.items():
            if mode not in MODES:
                raise ValueError(f"strategy {sid!r}: approval mode must be approve or auto")
        if max_decided < 1:
            raise ValueError("max_decided must be at least 1")
        self.cfg = cfg
        self.live = live
        self.ttl_ns = round(cfg.ttl_s * NS_PER_SECOND)
        self.max_decided = max_decided
        self._modes: dict[str, str] = {
            sid: (APPROVE if live else mode) for sid, mode in strategy_modes.items()
        }
        self._counters: dict[str, dict[str, int]] = {sid: _zero() for sid in strategy_modes}
        self._pending: dict[str, PendingApproval] = {}
        self._decided: OrderedDict[str, _Decided] = OrderedDict()
        self._superseded: list[ApprovalOutcome] = []
        # A lower bound on the earliest expiry among pending approvals: expire() is one compare
        # per tick until something can actually expire.
        self._next_expiry = 0

    # ------------------------------------------------------------------ modes

    def mode(self, strategy_id: str) -> str:
        """Unknown strategies (e.g. a manual order's source) are in approve: fail closed."""
        return self._modes.get(strategy_id, APPROVE)

    def needs_approval(self, strategy_id: str) -> bool:
        return self._modes.get(strategy_id, APPROVE) != AUTO  # mode(), inlined: every intent

    def modes(self) -> dict[str, str]:
        return dict(self._modes)

    def set_mode(self, strategy_id: str, mode: str, by: str) -> tuple[bool, str]:
        """An operator's switch. ``auto`` needs enough approved trades; ``approve`` always goes."""
        if strategy_id not in self._modes:
            return False, f"unknown strategy {strategy_id!r}"
        if mode not in MODES:
            return False, f"unknown approval mode {mode!r}; use approve or auto"
        if self._modes[strategy_id] == mode:
            return True, f"{strategy_id} is already in {mode}"
        if mode == AUTO:
            have = self._counters.get(strategy_id, _zero())[APPROVED]
            need = self.cfg.auto_after_approved
            if have < need:
                noun = "trade" if have == 1 else "trades"
                left = need - have
                more = f"{left} more approval" + ("" if left == 1 else "s")
                return (
                    False,
                    f"{strategy_id} has {have} approved {noun}; auto needs {need} ({more} to go)",
                )
        self._modes[strategy_id] = mode
        return True, f"{strategy_id} switched to {mode} by {by}"

    # ------------------------------------------------------------------ queue

    def submit(
        self,
        intent: OrderIntent,
        decision: Decision,
        verdicts: Iterable[Verdict],
        now: int,
        est_fee: float,
        est_slippage_bps: float,
    ) -> PendingApproval:
        """Queue an intent for a person. Raises if its id was already used (a reused order id).

        A pending approval for the same strategy, symbol and side is withdrawn as "superseded"
        by this one; :meth:`take_superseded` hands those outcomes over for the journal.
        """
        aid = approval_id_for(intent)
        if aid in self._pending or aid in self._decided:
            raise ValueError(f"approval {aid} already exists: intent ids must not be reused")
        key = _key(intent)
        for old in [p for p in self._pending.values() if _key(p.intent) == key]:
            reason = f"superseded by {aid}"
            self._superseded.append(self._decide(old, SUPERSEDED, reason, SYSTEM, now, aid))
        pending = PendingApproval(
            approval_id=aid,
            intent=intent,
            intent_hash=intent_hash(intent),
            decision=decision,
            verdicts=tuple(verdicts),
            created_ts=now,
            expires_ts=now + self.ttl_ns,
            est_fee=est_fee,
            est_slippage_bps=est_slippage_bps,
        )
        self._pending[aid] = pending
        self._counters.setdefault(intent.strategy_id, _zero())
        if len(self._pending) == 1 or pending.expires_ts < self._next_expiry:
            self._next_expiry = pending.expires_ts
        return pending

    def take_superseded(self) -> list[ApprovalOutcome]:
        """The "superseded" outcomes of the last submits, once (the engine journals them)."""
        out, self._superseded = self._superseded, []
        return out

    def get(self, approval_id: str) -> PendingApproval | None:
        return self._pending.get(approval_id)

    def pending(self) -> list[PendingApproval]:
        """Oldest first (submit order breaks ties)."""
        if not self._pending:  # the usual case, asked for every intent
            return []
        return sorted(self._pending.values(), key=lambda p: p.created_ts)

    def has_pending(self) -> bool:
        """Is anything waiting for a person (asked on every bar: one truth test)."""
        return bool(self._pending)

    def pending_qty(self, strategy_id: str, symbol: str) -> float:
        """Signed quantity of the strategy's intents on the symbol waiting for a person."""
        total = 0.0
        for p in self._pending.values():
            it = p.intent
            if it.strategy_id == strategy_id and it.symbol == symbol:
                total += it.qty * it.side.sign
        return total

    def counters(self) -> dict[str, dict[str, int]]:
        return {sid: dict(c) for sid, c in self._counters.items()}

    # ------------------------------------------------------------------ decisions

    def _refused(self, approval_id: str, now: int, by: str) -> ApprovalOutcome | None:
        """The refusal for an id that is not pending, or None when it is pending."""
        if approval_id in self._pending:
            return None
        done = self._decided.get(approval_id)
        if done is None:
            reason = f"unknown approval id {approval_id!r} (never queued, or long decided)"
            return ApprovalOutcome(approval_id, REFUSED, reason, by, now)
        sid = done.strategy_id
        if done.status == SUPERSEDED:
            new = done.superseded_by
            reason = (
                f"{approval_id} was superseded by {new} at {_when(done.ts)} "
                f"(a newer request for the same strategy, symbol and side); decide {new} instead"
            )
            return ApprovalOutcome(
                approval_id, REFUSED, reason, by, now, strategy_id=sid, superseded_by=new
            )
        reason = f"already {done.status} at {_when(done.ts)} by {done.by}"
        return ApprovalOutcome(approval_id, REFUSED, reason, by, now, strategy_id=sid)

    def _decide(
        self,
        pending: PendingApproval,
        status: str,
        reason: str,
        by: str,
        now: int,
        superseded_by: str = "",
    ) -> ApprovalOutcome:
        """Make an outcome final: leave the queue, remember the id, count it."""
        del self._pending[pending.approval_id]
        sid = pending.intent.strategy_id
        self._remember(pending.approval_id, _Decided(status, now, by, sid, superseded_by))
        self._counters.setdefault(sid, _zero())[status] += 1
        intent = pending.intent if status == APPROVED else None
        return ApprovalOutcome(
            pending.approval_id, status, reason, by, now, intent, pending, False, sid, superseded_by
        )

    def _remember(self, approval_id: str, decided: _Decided) -> None:
        self._decided[approval_id] = decided
        self._decided.move_to_end(approval_id)
        while len(self._decided) > self.max_decided:
            self._decided.popitem(last=False)

    def approve(
        self,
        approval_id: str,
        now: int,
        current_mid: float | None,
        *,
        by: str,
        expected_hash: str | None = None,
    ) -> ApprovalOutcome:
        """A person's yes, checked against expiry, the intent hash and the price move."""
        refused = self._refused(approval_id, now, by)
        if refused is not None:
            return refused
        p = self._pending[approval_id]
        if expected_hash is not None and expected_hash != p.intent_hash:
            reason = "intent hash does not match (stale or replayed approval)"
            sid = p.intent.strategy_id
            return ApprovalOutcome(approval_id, REFUSED, reason, by, now, strategy_id=sid)
        if now >= p.expires_ts:
            return self._decide(p, EXPIRED, self._expired_reason(), by, now)
        ref = p.intent.ref_price
        if current_mid is None or not math.isfinite(current_mid) or current_mid <= 0:
            reason = "no current price to re-check against"
            return self._decide(p, REJECTED, reason, by, now)
        if not math.isfinite(ref) or ref <= 0:
            reason = "the intent has no usable reference price"
            return self._decide(p, REJECTED, reason, by, now)
        tol = self.cfg.price_tolerance_pct
        moved = abs(current_mid - ref)
        if moved * 100.0 > tol * ref * (1.0 + _TOLERANCE_SLACK):
            pct = moved / ref * 100.0
            direction = "up" if current_mid > ref else "down"
            reason = (
                f"price moved {_pct_text(pct, tol)}% since the intent (limit {tol:.2f}%): "
                f"{direction} from {ref:g} to {current_mid:g}"
            )
            return self._decide(p, REJECTED, reason, by, now)
        return self._decide(p, APPROVED, f"approved by {by}", by, now)

    def reject(self, approval_id: str, now: int, *, by: str, reason: str = "") -> ApprovalOutcome:
        """A person's no. An expired one still counts as expired, not as a rejection."""
        refused = self._refused(approval_id, now, by)
        if refused is not None:
            return refused
        p = self._pending[approval_id]
        if now >= p.expires_ts:
            return self._decide(p, EXPIRED, self._expired_reason(), by, now)
        return self._decide(p, REJECTED, reason or f"rejected by {by}", by, now)

    def reject_after_checks(
        self, approval_id: str, now: int, reason: str
    ) -> ApprovalOutcome | None:
        """Turn a just-approved intent into a rejection because the re-run checks failed.

        Returns the "rejected" outcome for the engine to journal (``restore`` moves the count
        from approved to rejected when it reads it), or None when the id is not an approved one.
        """
        done = self._decided.get(approval_id)
        if done is None or done.status != APPROVED:
            return None
        self._remember(approval_id, _Decided(REJECTED, now, SYSTEM, done.strategy_id))
        c = self._counters.setdefault(done.strategy_id, _zero())
        c[APPROVED] -= 1
        c[REJECTED] += 1
        return ApprovalOutcome(
            approval_id,
            REJECTED,
            reason or "pre-trade checks failed after approval",
            SYSTEM,
            now,
            after_checks=True,
            strategy_id=done.strategy_id,
        )

    def _expired_reason(self) -> str:
        return f"expired after {self.cfg.ttl_s:g} s"

    def expire(
        self, now: int, clock_of: Callable[[str], int] | None = None
    ) -> list[ApprovalOutcome]:
        """Every pending approval whose time is up, as "expired". One compare when none can be.
        ``clock_of(symbol)``: the time now on the clock its request was made on, where venues
        keep clocks of their own (each request is judged on its symbol's venue's)."""
        if not self._pending or (clock_of is None and now < self._next_expiry):
            return []
        out = []
        for p in list(self._pending.values()):
            at = now if clock_of is None else clock_of(p.intent.symbol)
            if at >= p.expires_ts:
                out.append(self._decide(p, EXPIRED, self._expired_reason(), SYSTEM, at))
        self._next_expiry = min((p.expires_ts for p in self._pending.values()), default=0)
        return out

    def quiet_until(self) -> int:
        """The latest time up to which ``expire`` returns nothing."""
        return self._next_expiry - 1 if self._pending else (1 << 63) - 1

    def cancel_all(
        self,
        now: int,
        reason: str,
        by: str,
        keep: Callable[[OrderIntent], bool] | None = None,
    ) -> list[ApprovalOutcome]:
        """The kill switch: every pending approval is rejected with its reason, except those
        ``keep`` says may stay (at the ``entries`` level, the ones that only reduce exposure:
        exits are still allowed, so a person may still approve them)."""
        out = [
            self._decide(p, REJECTED, reason, by, now)
            for p in self.pending()
            if keep is None or not keep(p.intent)
        ]
        self._next_expiry = min((p.expires_ts for p in self._pending.values()), default=0)
        return out

    # ------------------------------------------------------------------ restart

    def restore(
        self, outcomes: Iterable[dict[str, Any]], modes: dict[str, str] | None = None
    ) -> None:
        """Rebuild counters and decided ids from journaled ``ApprovalOutcome.to_dict()`` dicts.

        Meant for a fresh gate, in journal order. "refused" outcomes and repeats of an id already
        decided are ignored, except a "rejected" after an "approved" (reject_after_checks), which
        moves the count. ``modes`` are the operator's last mode per strategy: "approve" always
        applies; "auto" applies only outside live mode and only if the counters still allow it.
        """
        for d in outcomes:
            status = d.get("status")
            aid = d.get("approval_id")
            if status not in TERMINAL or not isinstance(aid, str) or aid in self._pending:
                continue
            sid = d.get("strategy_id") or (d.get("pending") or {}).get("strategy") or ""
            ts = int(d.get("ts") or 0)
            by = str(d.get("by") or "")
            done = self._decided.get(aid)
            if done is not None:
                if done.status == APPROVED and status == REJECTED:
                    self._remember(aid, _Decided(REJECTED, ts, by, done.strategy_id))
                    c = self._counters.setdefault(done.strategy_id, _zero())
                    c[APPROVED] -= 1
                    c[REJECTED] += 1
                continue
            self._remember(aid, _Decided(status, ts, by, sid, str(d.get("superseded_by") or "")))
            self._counters.setdefault(sid, _zero())[status] += 1
        for sid, mode in (modes or {}).items():
            if sid not in self._modes or mode not in MODES:
                continue
            if mode == APPROVE:
                self._modes[sid] = APPROVE
            elif not self.live:
                self.set_mode(sid, AUTO, SYSTEM)


def expired_at_restart(
    requested: Iterable[dict[str, Any]], outcomes: Iterable[dict[str, Any]], now: int
) -> list[dict[str, Any]]:
    """Outcome dicts for approvals that were pending when the engine stopped.

    ``requested`` are journaled ``PendingApproval.to_dict()`` dicts, ``outcomes`` the journaled
    outcome dicts. Every request with no terminal outcome gets an "expired" one: the engine
    journals these on start and passes them to :meth:`ApprovalGate.restore` with the rest, so a
    pending approval never survives a restart and is still counted.
    """
    decided = {d.get("approval_id") for d in outcomes if d.get("status") in TERMINAL}
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for p in requested:
        aid = p.get("id")
        if not isinstance(aid, str) or aid in decided or aid in seen:
            continue
        seen.add(aid)
        out.append(
            {
                "approval_id": aid,
                "status": EXPIRED,
                "reason": "expired: the engine restarted while it was pending",
                "by": SYSTEM,
                "ts": now,
                "strategy_id": p.get("strategy", ""),
                "intent_id": p.get("intent_id", ""),
                "intent_hash": p.get("hash", ""),
                "after_checks": False,
                "pending": dict(p),
            }
        )
    return out
