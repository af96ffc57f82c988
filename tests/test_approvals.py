"""The approval gate: TTL, price re-check, replay protection, counters, modes, restart."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.approvals import (
    ApprovalGate,
    ApprovalOutcome,
    expired_at_restart,
    intent_hash,
)
from engine.config import ApprovalConfig
from engine.types import (
    NS_PER_SECOND,
    Action,
    Decision,
    OrderIntent,
    OrderType,
    Side,
    Verdict,
)

T0 = 1_700_000_000 * NS_PER_SECOND
TTL = 30 * NS_PER_SECOND
REF = 100.0
MODES = {"ema_cross": "approve", "rsi": "auto"}


def make_intent(
    n: int = 1,
    strategy: str = "ema_cross",
    ref: float = REF,
    qty: float = 0.5,
    side: Side = Side.BUY,
) -> OrderIntent:
    return OrderIntent(
        intent_id=f"ck-1-{n}",
        decision_id=f"d1-{n}",
        strategy_id=strategy,
        symbol="BTC/USDT",
        venue="sim",
        side=side,
        qty=qty,
        order_type=OrderType.MARKET,
        ref_price=ref,
        ts=T0,
    )


def make_decision(intent: OrderIntent) -> Decision:
    return Decision(
        decision_id=intent.decision_id,
        ts=intent.ts,
        strategy_id=intent.strategy_id,
        symbol=intent.symbol,
        venue=intent.venue,
        action=Action.BUY if intent.side is Side.BUY else Action.SELL,
        rule="ema_fast_above_slow",
        reason="fast EMA crossed above slow",
        confidence=0.7,
        inputs={"ema_fast": 101.0, "ema_slow": 100.0},
    )


VERDICTS = (Verdict.passed("notional"), Verdict("collar", True, "OK", "within 1%"))


def make_gate(modes: dict[str, str] | None = None, **cfg: float) -> ApprovalGate:
    return ApprovalGate(ApprovalConfig(**cfg), dict(MODES if modes is None else modes))


def queue(gate: ApprovalGate, n: int = 1, now: int = T0, **kw):
    intent = make_intent(n, **kw)
    return gate.submit(intent, make_decision(intent), VERDICTS, now, 0.05, 1.5)


# ------------------------------------------------------------------ TTL


def test_approve_one_ns_before_expiry_approves() -> None:
    gate = make_gate()
    p = queue(gate)
    assert p.expires_ts == T0 + TTL
    out = gate.approve(p.approval_id, p.expires_ts - 1, REF, by="alice")
    assert out.status == "approved"
    assert out.intent == p.intent
    assert gate.counters()["ema_cross"] == {
        "approved": 1,
        "rejected": 0,
        "expired": 0,
        "superseded": 0,
    }


def test_approve_at_expiry_expires() -> None:
    gate = make_gate()
    p = queue(gate)
    out = gate.approve(p.approval_id, p.expires_ts, REF, by="alice")
    assert out.status == "expired"
    assert out.intent is None
    assert out.reason == "expired after 30 s"
    assert gate.counters()["ema_cross"] == {
        "approved": 0,
        "rejected": 0,
        "expired": 1,
        "superseded": 0,
    }
    assert gate.pending() == []


def test_expire_sweeps_only_due_ones() -> None:
    gate = make_gate()
    a = queue(gate, 1, T0)
    b = queue(gate, 2, T0 + 5 * NS_PER_SECOND, side=Side.SELL)  # a buy would replace a
    assert gate.expire(T0) == []
    assert gate.expire(a.expires_ts - 1) == []
    swept = gate.expire(a.expires_ts)
    assert [o.approval_id for o in swept] == [a.approval_id]
    assert swept[0].status == "expired" and swept[0].by == "system"
    assert [p.approval_id for p in gate.pending()] == [b.approval_id]
    assert [o.approval_id for o in gate.expire(b.expires_ts + 1)] == [b.approval_id]
    assert gate.expire(b.expires_ts + 2) == []
    assert gate.counters()["ema_cross"]["expired"] == 2


def test_expire_after_early_decision_still_finds_later_ones() -> None:
    gate = make_gate()
    a = queue(gate, 1, T0)
    b = queue(gate, 2, T0 + NS_PER_SECOND, side=Side.SELL)
    gate.reject(a.approval_id, T0 + 2, by="alice")
    assert gate.expire(a.expires_ts) == []
    assert [o.approval_id for o in gate.expire(b.expires_ts)] == [b.approval_id]


def test_expire_is_empty_with_nothing_pending() -> None:
    assert make_gate().expire(T0) == []


def test_ttl_from_config() -> None:
    gate = make_gate(ttl_s=2.5)
    p = queue(gate)
    assert p.expires_ts == T0 + 2_500_000_000
    assert gate.approve(p.approval_id, p.expires_ts, REF, by="a").reason == "expired after 2.5 s"


# ------------------------------------------------------------------ price drift


@pytest.mark.parametrize("mid", [100.5, 99.5])
def test_move_exactly_at_tolerance_approves(mid: float) -> None:
    gate = make_gate()
    p = queue(gate)
    assert gate.approve(p.approval_id, T0 + 1, mid, by="a").status == "approved"


@pytest.mark.parametrize(("mid", "shown"), [(100.501, "0.501%"), (99.499, "0.501%")])
def test_move_beyond_tolerance_rejects_with_the_move(mid: float, shown: str) -> None:
    gate = make_gate()
    p = queue(gate)
    out = gate.approve(p.approval_id, T0 + 1, mid, by="a")
    assert out.status == "rejected"
    assert out.intent is None
    assert f"price moved {shown} since the intent (limit 0.50%)" in out.reason
    assert gate.counters()["ema_cross"] == {
        "approved": 0,
        "rejected": 1,
        "expired": 0,
        "superseded": 0,
    }


def test_move_reason_two_decimals() -> None:
    gate = make_gate()
    p = queue(gate)
    out = gate.approve(p.approval_id, T0 + 1, 100.62, by="a")
    assert out.reason.startswith("price moved 0.62% since the intent (limit 0.50%)")
    assert "up from 100 to 100.62" in out.reason


@settings(max_examples=300, deadline=None)
@given(
    ref=st.floats(min_value=1e-4, max_value=1e7, allow_nan=False, allow_infinity=False),
    tol=st.sampled_from([0.1, 0.25, 0.5, 1.0, 2.0]),
    up=st.booleans(),
)
def test_tolerance_boundary_any_price(ref: float, tol: float, up: bool) -> None:
    """At the tolerance approves; a hair (1e-6 relative) beyond rejects, either direction."""
    sign = 1.0 if up else -1.0
    at = ref * (1.0 + sign * tol / 100.0)
    beyond = ref * (1.0 + sign * tol / 100.0 * (1.0 + 1e-6))
    gate = make_gate(price_tolerance_pct=tol)
    a = queue(gate, 1, ref=ref)
    b = queue(gate, 2, ref=ref, side=Side.SELL)
    assert gate.approve(a.approval_id, T0 + 1, at, by="x").status == "approved"
    assert gate.approve(b.approval_id, T0 + 1, beyond, by="x").status == "rejected"


@pytest.mark.parametrize("mid", [None, math.nan, math.inf, 0.0, -1.0])
def test_no_usable_price_rejects(mid: float | None) -> None:
    gate = make_gate()
    p = queue(gate)
    out = gate.approve(p.approval_id, T0 + 1, mid, by="a")
    assert out.status == "rejected"
    assert "no current price" in out.reason


# ------------------------------------------------------------------ replay and binding


def test_approving_twice_second_refused_counters_unchanged() -> None:
    gate = make_gate()
    p = queue(gate)
    assert gate.approve(p.approval_id, T0 + 1, REF, by="alice").status == "approved"
    before = gate.counters()
    again = gate.approve(p.approval_id, T0 + 2, REF, by="alice")
    assert again.status == "refused"
    assert again.intent is None
    assert again.reason.startswith("already approved at 2023-11-14T22:13:20.000Z by alice")
    assert gate.counters() == before


def test_wrong_hash_refused_and_leaves_it_pending() -> None:
    gate = make_gate()
    p = queue(gate)
    other = intent_hash(make_intent(1, qty=0.6))
    out = gate.approve(p.approval_id, T0 + 1, REF, by="a", expected_hash=other)
    assert out.status == "refused"
    assert out.reason == "intent hash does not match (stale or replayed approval)"
    assert gate.get(p.approval_id) is p
    assert gate.counters()["ema_cross"] == {
        "approved": 0,
        "rejected": 0,
        "expired": 0,
        "superseded": 0,
    }
    ok = gate.approve(p.approval_id, T0 + 1, REF, by="a", expected_hash=p.intent_hash)
    assert ok.status == "approved"


def test_duplicated_approval_with_different_hash_refused() -> None:
    gate = make_gate()
    p = queue(gate)
    assert gate.approve(p.approval_id, T0 + 1, REF, by="a", expected_hash=p.intent_hash)
    dup = gate.approve(p.approval_id, T0 + 2, REF, by="a", expected_hash="0" * 64)
    assert dup.status == "refused"
    assert gate.counters()["ema_cross"]["approved"] == 1


def test_reject_then_approve_refused() -> None:
    gate = make_gate()
    p = queue(gate)
    rej = gate.reject(p.approval_id, T0 + 1, by="bob", reason="too big")
    assert (rej.status, rej.reason, rej.by) == ("rejected", "too big", "bob")
    out = gate.approve(p.approval_id, T0 + 2, REF, by="alice")
    assert out.status == "refused"
    assert "already rejected" in out.reason and "by bob" in out.reason
    assert gate.reject(p.approval_id, T0 + 3, by="bob").status == "refused"
    assert gate.counters()["ema_cross"] == {
        "approved": 0,
        "rejected": 1,
        "expired": 0,
        "superseded": 0,
    }


def test_unknown_id_refused() -> None:
    gate = make_gate()
    assert gate.approve("ap-nope", T0, REF, by="a").status == "refused"
    assert gate.reject("ap-nope", T0, by="a").status == "refused"
    assert gate.counters() == {
        s: {"approved": 0, "rejected": 0, "expired": 0, "superseded": 0} for s in MODES
    }


def test_reject_after_expiry_counts_as_expired() -> None:
    gate = make_gate()
    p = queue(gate)
    assert gate.reject(p.approval_id, p.expires_ts, by="bob").status == "expired"


def test_approval_replayed_after_restore_refused() -> None:
    gate = make_gate()
    p = queue(gate)
    log = [gate.approve(p.approval_id, T0 + 1, REF, by="alice").to_dict()]
    fresh = make_gate()
    fresh.restore(json.loads(json.dumps(log)))
    assert fresh.counters()["ema_cross"]["approved"] == 1
    out = fresh.approve(p.approval_id, T0 + 2, REF, by="alice", expected_hash=p.intent_hash)
    assert out.status == "refused"
    assert "already approved" in out.reason
    with pytest.raises(ValueError, match="must not be reused"):
        queue(fresh)


def test_intent_hash_covers_what_is_sent() -> None:
    base = make_intent()
    assert intent_hash(base) == intent_hash(make_intent())
    assert len(intent_hash(base)) == 64
    # Context that is not sent does not change it.
    assert intent_hash(base) == intent_hash(make_intent(ref=101.0))
    for changed in (
        make_intent(2),
        make_intent(qty=0.5000000000000001),
        make_intent(side=Side.SELL),
        make_intent(strategy="rsi"),
    ):
        assert intent_hash(changed) != intent_hash(base)


def test_submit_refuses_a_reused_id() -> None:
    gate = make_gate()
    queue(gate)
    with pytest.raises(ValueError):
        queue(gate)


def test_decided_ids_are_bounded() -> None:
    gate = ApprovalGate(ApprovalConfig(), dict(MODES), max_decided=3)
    ids = []
    for n in range(5):
        p = queue(gate, n)
        ids.append(p.approval_id)
        gate.reject(p.approval_id, T0 + 1, by="a")
    assert len(gate._decided) == 3
    # Forgotten or remembered, a decided id is refused either way.
    assert gate.approve(ids[0], T0 + 2, REF, by="a").status == "refused"
    assert "unknown approval id" in gate.approve(ids[0], T0 + 2, REF, by="a").reason
    assert "already rejected" in gate.approve(ids[4], T0 + 2, REF, by="a").reason


# ------------------------------------------------------------------ counters and modes


def test_counters_per_strategy() -> None:
    gate = make_gate()
    a = queue(gate, 1)
    b = queue(gate, 2, strategy="rsi")
    c = queue(gate, 3, strategy="rsi", side=Side.SELL)
    d = queue(gate, 4, strategy="manual")
    gate.approve(a.approval_id, T0 + 1, REF, by="x")
    gate.reject(b.approval_id, T0 + 1, by="x")
    gate.approve(c.approval_id, T0 + 1, 101.0, by="x")
    gate.expire(d.expires_ts)
    assert gate.counters() == {
        "ema_cross": {"approved": 1, "rejected": 0, "expired": 0, "superseded": 0},
        "rsi": {"approved": 0, "rejected": 2, "expired": 0, "superseded": 0},
        "manual": {"approved": 0, "rejected": 0, "expired": 1, "superseded": 0},
    }


def test_reject_after_checks_moves_the_count() -> None:
    gate = make_gate()
    p = queue(gate)
    gate.approve(p.approval_id, T0 + 1, REF, by="alice")
    out = gate.reject_after_checks(p.approval_id, T0 + 2, "collar: price outside 1%")
    assert out is not None and out.status == "rejected" and out.after_checks
    assert out.to_dict()["strategy_id"] == "ema_cross"
    assert "collar" in out.reason
    assert gate.counters()["ema_cross"] == {
        "approved": 0,
        "rejected": 1,
        "expired": 0,
        "superseded": 0,
    }
    # Only once, and only for an approved id.
    assert gate.reject_after_checks(p.approval_id, T0 + 3, "again") is None
    q = queue(gate, 2)
    assert gate.reject_after_checks(q.approval_id, T0 + 3, "pending") is None
    assert gate.reject_after_checks("ap-nope", T0 + 3, "unknown") is None
    assert gate.counters()["ema_cross"] == {
        "approved": 0,
        "rejected": 1,
        "expired": 0,
        "superseded": 0,
    }
    assert "already rejected" in gate.approve(p.approval_id, T0 + 4, REF, by="a").reason


def test_modes_from_config_and_unknown_strategy_fails_closed() -> None:
    gate = make_gate()
    assert gate.mode("ema_cross") == "approve" and gate.needs_approval("ema_cross")
    assert gate.mode("rsi") == "auto" and not gate.needs_approval("rsi")
    assert gate.mode("manual") == "approve" and gate.needs_approval("manual")


def test_live_starts_every_strategy_in_approve() -> None:
    gate = ApprovalGate(ApprovalConfig(), {"ema_cross": "auto", "rsi": "auto"}, live=True)
    assert gate.mode("ema_cross") == "approve"
    assert gate.mode("rsi") == "approve"
    assert gate.needs_approval("rsi")


def test_invalid_configured_mode_raises() -> None:
    with pytest.raises(ValueError):
        ApprovalGate(ApprovalConfig(), {"x": "yolo"})


def _approve_n(gate: ApprovalGate, n: int, strategy: str = "ema_cross", start: int = 1000) -> None:
    for i in range(n):
        p = queue(gate, start + i, strategy=strategy)
        assert gate.approve(p.approval_id, T0 + 1, REF, by="a").status == "approved"


def test_set_mode_auto_refused_below_n_allowed_at_n() -> None:
    gate = make_gate(auto_after_approved=10)
    _approve_n(gate, 9)
    ok, msg = gate.set_mode("ema_cross", "auto", "alice")
    assert not ok
    assert msg == "ema_cross has 9 approved trades; auto needs 10 (1 more approval to go)"
    assert gate.mode("ema_cross") == "approve"
    _approve_n(gate, 1, start=5000)
    ok, msg = gate.set_mode("ema_cross", "auto", "alice")
    assert ok, msg
    assert gate.mode("ema_cross") == "auto"
    ok, _ = gate.set_mode("ema_cross", "approve", "alice")
    assert ok and gate.mode("ema_cross") == "approve"


def test_set_mode_refusals() -> None:
    gate = make_gate()
    assert gate.set_mode("ghost", "approve", "a") == (False, "unknown strategy 'ghost'")
    assert not gate.set_mode("ema_cross", "yolo", "a")[0]
    assert gate.set_mode("rsi", "approve", "a")[0]  # approve is always allowed
    assert gate.set_mode("ema_cross", "approve", "a")[0]  # already there: fine


def test_gate_never_switches_to_auto_by_itself() -> None:
    gate = make_gate(auto_after_approved=1)
    _approve_n(gate, 5)
    assert gate.mode("ema_cross") == "approve"


def test_live_can_switch_to_auto_after_n() -> None:
    gate = ApprovalGate(ApprovalConfig(auto_after_approved=2), {"s": "auto"}, live=True)
    _approve_n(gate, 2, "s")
    assert gate.set_mode("s", "auto", "alice")[0]


# ------------------------------------------------------------------ kill switch


def test_cancel_all_rejects_every_pending() -> None:
    gate = make_gate()
    a = queue(gate, 1)
    b = queue(gate, 2, strategy="rsi")
    out = gate.cancel_all(T0 + 5, "kill switch engaged", "alice")
    assert [(o.approval_id, o.status, o.reason, o.by) for o in out] == [
        (a.approval_id, "rejected", "kill switch engaged", "alice"),
        (b.approval_id, "rejected", "kill switch engaged", "alice"),
    ]
    assert gate.pending() == []
    assert gate.cancel_all(T0 + 6, "again", "alice") == []
    assert gate.approve(a.approval_id, T0 + 7, REF, by="alice").status == "refused"
    assert gate.expire(T0 + 10 * TTL) == []
    assert gate.counters()["ema_cross"]["rejected"] == 1
    assert gate.counters()["rsi"]["rejected"] == 1


# ------------------------------------------------------------------ serialisation and restart


def test_pending_to_dict_is_json_and_complete() -> None:
    gate = make_gate()
    p = queue(gate)
    d = p.to_dict()
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    assert back["id"] == "ap-ck-1-1" and back["hash"] == p.intent_hash
    assert back["strategy"] == "ema_cross" and back["side"] == "buy" and back["qty"] == 0.5
    assert back["ref_price"] == REF and back["notional"] == 50.0 == p.notional
    assert back["reason"] == "fast EMA crossed above slow" and back["confidence"] == 0.7
    assert back["verdicts"][1] == {
        "check": "collar",
        "ok": True,
        "code": "OK",
        "message": "within 1%",
    }
    assert back["est_fee"] == 0.05 and back["est_slippage_bps"] == 1.5
    assert back["created_ts"] == T0 and back["expires_ts"] == T0 + TTL
    assert back["decision_id"] == "d1-1" and back["intent_id"] == "ck-1-1"


def test_to_dict_never_emits_nan() -> None:
    gate = make_gate()
    intent = make_intent()
    p = gate.submit(intent, make_decision(intent), VERDICTS, T0, math.nan, math.inf)
    d = p.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["est_fee"] is None and d["est_slippage_bps"] is None


def test_outcome_to_dict_is_json() -> None:
    gate = make_gate()
    p = queue(gate)
    for out in (
        gate.approve(p.approval_id, T0 + 1, REF, by="a"),
        gate.approve(p.approval_id, T0 + 2, REF, by="a"),
        gate.approve("ap-x", T0, None, by="a"),
    ):
        d = out.to_dict()
        json.dumps(d, allow_nan=False)
        assert d["approval_id"] == out.approval_id and d["status"] == out.status
    assert gate.approve(p.approval_id, T0, REF, by="a").to_dict()["pending"] is None


def test_restore_rebuilds_counters_and_modes() -> None:
    gate = make_gate(auto_after_approved=2)
    log: list[dict] = []
    for n in range(3):
        p = queue(gate, n)
        log.append(gate.approve(p.approval_id, T0 + 1, REF, by="a").to_dict())
    p = queue(gate, 10)
    log.append(gate.reject(p.approval_id, T0 + 1, by="a").to_dict())
    p = queue(gate, 11)
    log.append(gate.approve(p.approval_id, T0 + 1, REF, by="a").to_dict())
    rac = gate.reject_after_checks(p.approval_id, T0 + 2, "exposure")
    assert rac is not None
    log.append(rac.to_dict())
    p = queue(gate, 12, strategy="rsi")
    log.extend(o.to_dict() for o in gate.expire(p.expires_ts))
    log.append(gate.approve("ap-ghost", T0, REF, by="a").to_dict())  # refused: ignored
    expected = gate.counters()

    fresh = make_gate(auto_after_approved=2)
    fresh.restore(log, modes={"ema_cross": "auto", "rsi": "approve"})
    assert fresh.counters() == expected
    assert fresh.mode("ema_cross") == "auto"
    assert fresh.mode("rsi") == "approve"
    # Restoring the same log twice changes nothing.
    fresh.restore(log)
    assert fresh.counters() == expected


def test_restore_modes_respect_live_and_threshold() -> None:
    live = ApprovalGate(ApprovalConfig(auto_after_approved=0), {"s": "auto"}, live=True)
    live.restore([], modes={"s": "auto"})
    assert live.mode("s") == "approve"
    paper = ApprovalGate(ApprovalConfig(auto_after_approved=5), {"s": "approve"})
    paper.restore([], modes={"s": "auto", "ghost": "auto"})
    assert paper.mode("s") == "approve"


def test_pending_at_restart_become_expired_outcomes() -> None:
    gate = make_gate()
    a = queue(gate, 1)
    b = queue(gate, 2, strategy="rsi")
    requested = [a.to_dict(), b.to_dict()]
    outcomes = [gate.approve(a.approval_id, T0 + 1, REF, by="x").to_dict()]
    extra = expired_at_restart(requested, outcomes, T0 + 10)
    assert [(d["approval_id"], d["status"], d["strategy_id"]) for d in extra] == [
        (b.approval_id, "expired", "rsi")
    ]
    json.dumps(extra, allow_nan=False)
    fresh = make_gate()
    fresh.restore(outcomes + extra)
    assert fresh.counters()["rsi"]["expired"] == 1
    assert fresh.approve(b.approval_id, T0 + 11, REF, by="x").status == "refused"


def test_pending_oldest_first() -> None:
    gate = make_gate()
    queue(gate, 1, T0 + 5)
    queue(gate, 2, T0 + 1, side=Side.SELL)
    queue(gate, 3, T0 + 3, strategy="rsi")
    assert [p.intent.intent_id for p in gate.pending()] == ["ck-1-2", "ck-1-3", "ck-1-1"]


# ------------------------------------------------------------------ property

_op = st.one_of(
    st.tuples(st.just("submit"), st.sampled_from(["ema_cross", "rsi", "manual"])),
    st.tuples(
        st.just("approve"),
        st.integers(0, 30),
        st.sampled_from([REF, 100.4, 99.6, 100.6, 99.0, None]),
        st.sampled_from(["none", "right", "wrong"]),
    ),
    st.tuples(st.just("reject"), st.integers(0, 30)),
    st.tuples(st.just("replay"), st.integers(0, 30)),
    st.tuples(st.just("after_checks"), st.integers(0, 30)),
    st.tuples(st.just("expire"), st.integers(0, 40 * NS_PER_SECOND)),
    st.tuples(
        st.just("restart"),
    ),
    st.tuples(
        st.just("kill"),
    ),
)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(_op, max_size=60))
def test_each_id_approved_at_most_once_and_counters_match(ops: list[tuple]) -> None:
    """``journal`` holds what the engine would journal: every outcome's to_dict()."""
    gate = make_gate()
    now = T0
    n = 0
    ids: list[str] = []
    hashes: dict[str, str] = {}
    journal: list[dict] = []
    requested: list[dict] = []

    def pick(i: int) -> str:
        return ids[i % len(ids)] if ids and i < 25 else f"ap-unknown-{i}"

    def record(*outs: ApprovalOutcome | None) -> None:
        journal.extend(o.to_dict() for o in outs if o is not None)

    for op in ops:
        kind = op[0]
        now += 1
        if kind == "submit":
            n += 1
            p = queue(gate, n, now, strategy=op[1])
            record(*gate.take_superseded())  # the request it replaced, if any
            ids.append(p.approval_id)
            hashes[p.approval_id] = p.intent_hash
            requested.append(p.to_dict())
        elif kind in ("approve", "replay"):
            aid = pick(op[1])
            mid, hmode = (REF, "right") if kind == "replay" else (op[2], op[3])
            expected = {"none": None, "right": hashes.get(aid, "x"), "wrong": "0" * 64}[hmode]
            record(gate.approve(aid, now, mid, by="op", expected_hash=expected))
        elif kind == "reject":
            record(gate.reject(pick(op[1]), now, by="op"))
        elif kind == "after_checks":
            record(gate.reject_after_checks(pick(op[1]), now, "checks failed"))
        elif kind == "expire":
            now += op[1]
            record(*gate.expire(now))
        elif kind == "kill":
            record(*gate.cancel_all(now, "kill", "op"))
        else:  # restart: pending ones are journaled as expired, then a fresh gate restores
            journal.extend(expired_at_restart(requested, journal, now))
            gate = make_gate()
            gate.restore(json.loads(json.dumps(journal)))

    approved_per_id: dict[str, int] = {}
    terminal_per_id: dict[str, int] = {}
    for d in journal:
        aid = d["approval_id"]
        if d["status"] == "approved":
            approved_per_id[aid] = approved_per_id.get(aid, 0) + 1
        if d["status"] != "refused" and not d["after_checks"]:
            terminal_per_id[aid] = terminal_per_id.get(aid, 0) + 1
    assert all(c == 1 for c in approved_per_id.values())
    assert all(c == 1 for c in terminal_per_id.values())

    # Counters equal the terminal outcomes (an after-checks rejection moves one approved).
    strategy_of = {d["id"]: d["strategy"] for d in requested}
    want: dict[str, dict[str, int]] = {}
    for d in journal:
        if d["status"] == "refused":
            continue
        zero = {"approved": 0, "rejected": 0, "expired": 0, "superseded": 0}
        c = want.setdefault(strategy_of[d["approval_id"]], zero)
        c[d["status"]] += 1
        if d["after_checks"]:
            c["approved"] -= 1
    got = {s: c for s, c in gate.counters().items() if any(c.values())}
    assert got == {s: c for s, c in want.items() if any(c.values())}
    assert all(v >= 0 for c in got.values() for v in c.values())
