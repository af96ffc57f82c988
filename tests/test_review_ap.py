"""An adversarial review of the approval gate, trading modes and risk profiles, operator commands
and the audit log (review-ap): each test is a hole found by attacking a promise at its boundary
as a hostile checker would, failing before its fix. Driven in process through
tests/test_safety_engine.py's Harness (exact quotes, event time); every wait is bounded.

Tried and held (no test added):
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.types import NS_PER_SECOND
from tests.test_safety_engine import (
    BTC,
    Harness,
    buy,
    harnesses,  # noqa: F401 (a fixture)
    start,
)

S = NS_PER_SECOND


async def request(h: Harness, symbol: str = BTC, mid: float = 60_000.0) -> dict[str, Any]:
    """A buy from ``beta`` (approve mode) that waits; its pending dict."""
    before = {p.approval_id for p in h.core.approvals.pending()}
    await h.signal("beta", symbol, buy(), mid)
    (new,) = [p for p in h.core.approvals.pending() if p.approval_id not in before]
    return new.to_dict()


# --------------------------------------------------------------------------- audit: when


async def test_an_operator_action_on_a_quiet_feed_is_recorded_when_it_was_made(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """The feed went quiet (an outage, a weekend); the engine's clock runs on (the source's
    time). A person's approve, reject, pause, resume, set_limit, mode switch, flatten, kill,
    release and a viewer's refused command were each recorded at the last quote's time, up to
    the whole outage before they were made: the audit log said a kill came before the outage
    it answered, and its rows ran backwards against the approval rows beside them."""
    h = await start(harnesses, data_dir)
    await h.feed(BTC, 60_000.0)
    first = await request(h)
    second = await request(h, "ETH/USDT", 3_000.0)
    quiet = h.core.now
    later = quiet + 4 * S  # inside the stale limit: the approval still goes through
    h.engine.source.event_now = lambda: later  # type: ignore[method-assign]
    commands: list[tuple[str, dict[str, Any], str]] = [
        ("approve", {"id": first["id"], "hash": first["hash"]}, "operator"),
        ("reject", {"id": second["id"], "reason": "no"}, "operator"),
        ("pause", {"strategy": "alpha", "reason": "look"}, "operator"),
        ("resume", {"strategy": "alpha", "reason": "looked"}, "operator"),
        ("set_limit", {"name": "max_order_notional", "value": 5_000, "reason": "calm"}, "operator"),
        ("set_approval_mode", {"strategy": "beta", "mode": "approve", "reason": "x"}, "operator"),
        ("pause", {"strategy": "beta", "reason": "a viewer's"}, "viewer"),
        ("kill", {"level": "entries", "reason": "outage"}, "operator"),
        ("release", {"reason": "back", "confirm": "RELEASE"}, "operator"),
    ]
    for name, args, role in commands:
        before = len(h.rows("audit"))
        await h.engine.command(name, args, user="alice", client="pytest", role=role)
        await h.engine.journal.flush()
        (row,) = h.rows("audit")[before:]
        assert row.payload["action"] == name
        assert row.ts == later, (name, (row.ts - quiet) / S)
    for row in h.rows("safety"):
        if row.payload.get("by") == "alice":
            assert row.ts == later, (row.payload["what"], (row.ts - quiet) / S)
    assert h.core.safety.snapshot()["kill_switch"]["ts"] in (0, later)
