"""What the trader is shown, and a limit's time to live, on the venue's own clock (venueclock2).

venueclock made each quote age, and each approval request's time to live run, on its own venue's
clock where several venues run at once. Two holes were left:

1. The countdown a person reads (the cockpit's Approvals pane, the fleet's queue, `cockpit
   approvals`, an attached cockpit) was still worked out from the snapshot's ``now``: the
   engine's one clock, which runs with whichever venue is ahead. With venue a 20 s ahead, a
   request on b showed 20 s less than it had (59 s ahead: "0s" its whole life), so the trader
   rushed or gave up on a request that could still be approved.
2. A limit's time to live (LimitSpec.ttl_s) ran on the engine's one clock: a limit on the venue
   behind was cancelled that much early (at once where the skew passed its time to live).

Each test drives the real engine with two venues' real feeds and source (tests/
test_review_venueclock.py's TwoVenues: a fake wall clock and a fake elapsed clock).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cockpit.oneshot import format_approvals
from cockpit.tui.approvals import approval_cells, approval_detail, engine_clock
from tests.test_review_venueclock import TwoVenues, two_venues
from tests.test_safety_engine import (
    ETH,
    Harness,
    buy,
    harnesses,  # noqa: F401  (the fixture the tests below take)
)

TTL_S = 30  # the approval gate's default time to live


def shown_ttls(h: Harness) -> tuple[str, str, str]:
    """The one pending request's countdown as the cockpit's Approvals pane (and the fleet's
    queue, which draws the same cells), its detail line and `cockpit approvals` show it."""
    snap = h.engine.snapshot(trace=0, curve=0)
    (a,) = snap["approvals"]
    now = engine_clock(snap)
    cell = approval_cells(a, now)[0].plain
    detail = approval_detail(a, now).plain
    expires = detail.split(" · expires in ")[1].split(" · ")[0]
    cli = format_approvals(snap["approvals"], snap["now"]).splitlines()[1].split()[8]
    return cell, expires, cli


async def ask_on_b(v: TwoVenues) -> str:
    """Both venues quote; one second later beta asks to buy ETH on b (its request's time to
    live runs on b's clock). Returns its approval id."""
    h = v.h
    await v.both()
    h.core.slots[("beta", ETH)].strategy.script.append(buy())
    v.run(1)
    await v.both()
    (pending,) = h.core.approvals.pending()
    return str(pending.approval_id)


# --------------------------------------------------------------------------- 1: what is shown


@pytest.mark.parametrize("ahead_s", [20.0, 59.0, -4.0])
async def test_the_countdown_shown_is_the_time_the_request_really_has(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    ahead_s: float,
) -> None:
    """a runs 20 s (59 s) ahead, or 4 s behind; beta's request on b has 30 s on b's clock.
    Found: 10 s after it was asked the pane, its detail and `cockpit approvals` showed "0s"
    ("0s" from the start with 59 s ahead); with a behind, b's clock leads and the countdown
    was right. Now each shows 20s, and the request is still approvable."""
    v = await two_venues(harnesses, data_dir, monkeypatch, ahead_s)
    h = v.h
    approval_id = await ask_on_b(v)
    for _ in range(10):
        v.run(1)
        await v.both()
        await v.tick()
    assert shown_ttls(h) == ("20s", "20s", "20s")
    reply = await h.engine.command("approve", {"id": approval_id})
    assert reply["ok"] and [o.symbol for o in h.sent] == [ETH], reply


@pytest.mark.parametrize("late_ns", [-1, 0], ids=["just-under", "at-ttl"])
async def test_the_countdown_reaches_0s_when_the_request_expires(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    late_ns: int,
) -> None:
    """a 20 s ahead. 1 ns before b's clock reaches the request's 30 s it is shown with 1s left
    (ceil of 1 ns) and is approvable; at them it is gone from the queue (expired)."""
    v = await two_venues(harnesses, data_dir, monkeypatch, 20.0)
    h = v.h
    approval_id = await ask_on_b(v)
    for _ in range(TTL_S - 1):
        v.run(1)
        await v.both()
        await v.tick()
    v.run(1, late_ns)
    await v.tick()
    snap = h.engine.snapshot(trace=0, curve=0)
    if late_ns < 0:
        assert shown_ttls(h) == ("1s", "1s", "0s"), "shown expired while it could be approved"
        reply = await h.engine.command("approve", {"id": approval_id})
        assert reply["ok"], reply
    else:
        assert snap["approvals"] == []
        reply = await h.engine.command("approve", {"id": approval_id})
        assert not reply["ok"] and "expired" in reply["message"], reply
