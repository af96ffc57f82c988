"""An adversarial review of the changes made today (review-today): each test is a hole found by
attacking one of them as a hostile checker would, failing before its fix.

Tried and held (no test added):
"""

from __future__ import annotations

from engine.control import ControlServer
from engine.runtime import Engine
from tests.test_control_support import Raw, served  # noqa: F401


async def _operator(path, name: str) -> Raw:  # type: ignore[no-untyped-def]
    raw = await Raw.open(path)
    assert (await raw.hello(name=name, subscribe=False))["type"] == "welcome"
    return raw


# ------------------------------------------------------------------ a kill's idempotency key


async def test_a_kill_sent_again_with_its_key_after_a_release_engages(
    served: tuple[Engine, ControlServer],  # noqa: F811
) -> None:
    """A script that numbers its commands from 1 on every connection sent its kill (id "1"),
    the switch was released, and the same script's same kill an hour later returned the
    remembered reply, "kill switch engaged: halt", as a duplicate: nothing engaged and the
    engine traded on. An emergency stop is never answered from the cache once it is done."""
    engine, server = served
    kill = {"type": "command", "id": "1", "name": "kill", "args": {"reason": "cron stop"}}
    script = await _operator(server.path, "script")
    try:
        await script.send(kill)
        assert (await script.recv_type("reply"))["ok"]
    finally:
        await script.close()
    assert engine.core is not None and engine.core.safety.kill.level == "halt"
    desk = await _operator(server.path, "desk")
    try:
        release = {"reason": "checked", "confirm": "RELEASE"}
        await desk.send({"type": "command", "id": "r", "name": "release", "args": release})
        assert (await desk.recv_type("reply"))["ok"]
    finally:
        await desk.close()
    assert not engine.core.safety.kill.engaged
    script = await _operator(server.path, "script")
    try:
        await script.send(kill)
        reply = await script.recv_type("reply")
        assert reply["ok"] and not reply.get("duplicate"), reply
    finally:
        await script.close()
    assert engine.core.safety.kill.level == "halt"


# ------------------------------------------------------------------ a decision the other way


def test_a_reversal_waiting_is_withdrawn_by_a_decision_the_other_way() -> None:
    """A decision the other way withdraws the strategy's entry still waiting, but keeps a
    request that closes its own position, judged by side alone: long 0.5, "sell 1" waiting
    (it closes the 0.5 and opens a short of 0.5), then "buy". The sell stayed approvable, and
    approved it left the strategy short against its newest decision. It goes now; a sell
    within the position stays (tests/test_review_lim.py's boundary)."""
    from engine.types import Action, Fill, Liquidity, Side
    from tests.test_review_lim import SlowVenue

    h = SlowVenue()
    h.quote()
    h.strat.say(Action.BUY, None)
    h.quote()
    h.quote()
    cut = Fill("f-cut", "o-cut", "s1", "X/USDT", "sim", Side.SELL, 0.5, 100.0, 0.0,
               Liquidity.TAKER, h.ts)  # fmt: skip
    h.handle(h.core.apply_fill(cut))
    assert h.core.slots[("s1", "X/USDT")].position.qty == 0.5
    h.core.approvals._modes["s1"] = "approve"
    h.strat.say(Action.SELL, None)  # fixed_qty 1: a reversal to short 0.5
    h.quote()
    (sell,) = h.core.approvals.pending()
    assert (sell.intent.side, sell.intent.qty) == (Side.SELL, 1.0)
    h.strat.say(Action.BUY, None)
    h.quote()
    assert [p.intent.side for p in h.core.approvals.pending()] == [Side.BUY]
