"""Third adversarial review of alerts, the heartbeat, systemd's watchdog, metrics and secrets.

Each test is a hole found by attacking what the README and docs/operations.md promise, fixed at
its root: it failed before the fix. Everything runs on loopback, ports chosen by the OS.
"""

from __future__ import annotations

from typing import Any

from engine.events import BreakerChanged, SafetyChanged
from engine.fanout import EventFanout
from tests.alert_hook import Hook
from tests.test_alerts import dispatcher, running, show, stop

WAIT_S = 10.0


def breaker_trip(name: str, scope: str) -> BreakerChanged:
    change: dict[str, Any] = {
        "breaker": name, "scope": scope, "tripped": True, "action": "pause_strategy",
        "reason": "losing streak", "value": 12.0, "limit": 12.0, "ts": 1, "by": "system",
    }  # fmt: skip
    return BreakerChanged(1, change)


def kill_engaged(level: str = "halt", was: str | None = None) -> SafetyChanged:
    before = {"trading_state": "ACTIVE" if was is None else "HALTED", "kill_level": was}
    after = {"trading_state": "HALTED", "kill_level": level}
    return SafetyChanged(1, "kill_switch", "engine", before, after, "ops", "crash")


# ------------------------------------------------------------------------------ alerts


async def test_a_kill_alert_goes_before_the_breaker_alerts_queued_ahead_of_it() -> None:
    """A crash trips a breaker per strategy, then the kill switch engages. The destination
    (an e-mail relay, a busy chat API) takes 3 s per message, within its 4 s timeout. The kill
    alert must leave within 5 s of its event: it waits for the one delivery under way at most
    (which is why timeout_s must stay at 4 or less), not for every breaker alert queued before
    it. Before: the safety lane was first come first served, and the kill left after ~9 s."""
    with Hook(delay_for=lambda title: 3.0 if "Breaker" in title else 0.0) as hook:
        d = dispatcher(urls=[hook.url()], events=["breaker_tripped", "kill_engaged"], timeout_s=4)
        fanout = EventFanout()
        fanout.watchers.append(d.observe)
        task = await running(d)
        try:
            show(fanout, *(breaker_trip("consecutive_losses", s) for s in ("a", "b", "c", "d")))
            assert await hook.wait_for(lambda p: len(p) == 1, WAIT_S)  # the first is under way
            show(fanout, kill_engaged())
            arrived = await hook.wait_for(lambda p: any("KILL" in x.title for x in p), 5.0)
            assert arrived, hook.titles()
            titles = hook.titles()
            view = d.view()
        finally:
            await stop(task)
        assert "Breaker" in titles[0] and "KILL SWITCH ENGAGED" in titles[1], titles
        # The breaker alerts behind it are still to go: none dropped, none lost.
        assert view["dropped"] == 0 and view["sent"] + view["failed"] + view["queued"] == 5, view
