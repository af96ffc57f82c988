"""Adversarial review (review-wa) of "Watching from anywhere": alerts, the heartbeat, metrics.

Each test is a hole found by taking the README's and docs/operations.md's promises literally; it
failed before its fix. Everything runs on loopback servers started here, ports chosen by the OS.

Attacks that held (no test added beyond the suites that already cover them):
- a token echoed back by a failing apprise server, decoded or Basic-encoded: scrubbed.
- a command hook that floods stdout/stderr, never reads stdin, or outlives its timeout with
  children: output discarded, the process group killed, counted as failed.
- a hook that closes stdin at once and exits 0: delivered, no BrokenPipe raised.
- an alert endpoint that hangs: at most two threads per lane, then fail fast; the kill lane of
  another destination is not delayed.
- 10,000 fills over a route's rate limit: one summary, the count exact, none lost.
- --metrics-host "" (every interface): refused; 0.0.0.0, ::, a host name: the exposure warning.
- a taken metrics port, 65536, -1: one line, exit 2, before the engine starts.
- label values with quotes, backslashes, newlines and unicode: prometheus-client escapes them.
- a heartbeat URL with a login or a token in the file: refused without echoing it.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.alert_text import Alert, AlertText
from engine.alerts import Lane
from engine.fanout import EventFanout
from tests.alert_hook import Hook
from tests.test_alerts import dispatcher, running, show, stop
from tests.test_review_alerts import breaker_trip, kill_engaged

WAIT_S = 10.0
TEXT = AlertText("[paper]")


def as_alert(ev: Any) -> Alert:
    alert = TEXT.describe({"seq": 1, "ts": 1, **ev.payload(), "event": ev.kind})
    assert alert is not None
    return alert


# ------------------------------------------------------------------------------ alerts


async def test_a_kill_alert_is_not_dropped_by_a_safety_lane_full_of_breaker_alerts() -> None:
    """A crash trips a breaker per strategy and symbol, more than the safety lane holds, at a
    destination that takes 3 s a message; then the kill switch engages. Before: the full lane
    dropped the kill alert (counted, never sent) while breaker alerts kept going out. Now the
    newest breaker alert waiting makes room for it (counted as dropped) and the kill goes
    first."""
    with Hook(delay_for=lambda title: 3.0 if "Breaker" in title else 0.0) as hook:
        d = dispatcher(
            urls=[hook.url()], events=["breaker_tripped", "kill_engaged"], queue_size=5, timeout_s=4
        )
        fanout = EventFanout()
        fanout.watchers.append(d.observe)
        task = await running(d)
        try:
            show(fanout, *(breaker_trip("consecutive_losses", f"s{i}") for i in range(20)))
            assert await hook.wait_for(lambda p: len(p) == 1, WAIT_S)  # the first is under way
            show(fanout, breaker_trip("consecutive_losses", "late"))  # the lane is full again
            show(fanout, kill_engaged())
            arrived = await hook.wait_for(lambda p: any("KILL" in x.title for x in p), WAIT_S)
            view = d.view()
        finally:
            await stop(task)
        assert arrived, hook.titles()
        assert "KILL SWITCH ENGAGED" in hook.titles()[1], hook.titles()
        # 22 alerts: every one delivered, waiting or counted as dropped; none silently lost.
        assert view["sent"] + view["failed"] + view["queued"] + view["dropped"] == 22, view


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["kill", "breaker", "pop"]), max_size=80), st.integers(1, 6))
def test_a_bounded_lane_takes_a_kill_unless_full_of_kills_and_counts_every_loss(
    ops: list[str], size: int
) -> None:
    """Whatever the order: a kill alert is refused only by a lane full of kill alerts; what
    goes in comes out or is counted (refused or evicted); never more than ``size`` wait."""
    lane = Lane(maxsize=size)
    made = refused = out = 0
    kill, breaker = as_alert(kill_engaged()), as_alert(breaker_trip("b", "s"))
    for op in ops:
        if op == "pop":
            if lane.items:
                lane.pop()
                out += 1
            continue
        alert = kill if op == "kill" else breaker
        full_of_kills = len(lane.items) >= size and all(a.first for a in lane.items)
        made += 1
        taken = lane.put(alert)
        refused += not taken
        if op == "kill":
            assert taken or full_of_kills
        assert len(lane.items) <= size
        assert lane.leading == sum(a.first for a in lane.items)
    assert made == out + len(lane.items) + refused + lane.evicted
