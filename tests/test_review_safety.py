"""An adversarial review of the engine's safety promises: each test is a hole found by attacking
the real engine, pinned so it stays closed.

The engine is driven as in test_safety_engine.py (scripted strategies, hand-made quotes in event
time, a spy on the paper broker), through its operator commands and its journal.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from engine.types import Action, LimitSpec, Signal
from tests.test_cli import run
from tests.test_control_support import short_dir
from tests.test_safety_engine import (
    BTC,
    Harness,
    buy,
    harnesses,  # noqa: F401  (the fixture the tests below take)
    hold_one_btc,
    scripted_config,
    start,
    strategy,
    walk_until_kill,
)

RELEASE = {"confirm": "RELEASE", "reason": "looked at it"}


# --------------------------------------------------------------------------- release


@pytest.mark.parametrize("how", ["killed by hand before the loss", "raised after the auto kill"])
async def test_a_release_waits_for_the_loss_whoever_engaged_the_switch(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    how: str,
) -> None:
    """A release is refused while the loss is beyond its limit, unless overridden.

    Found: the engine asked for the loss only when the switch's *source* was the loss limit.
    A person who had killed by hand first (the loss came later, so the auto kill had nothing
    to raise), or who raised an automatic kill to flatten (the source became "command"), got
    "kill switch released" without an override while the loss still held; the next quote
    engaged it again, and the journal read released, then killed.
    """
    h = await hold_one_btc(harnesses, data_dir, {})
    if how == "killed by hand before the loss":
        assert (await h.engine.command("kill", {"reason": "stepping away"}))["ok"]
        await h.feed(BTC, 55_000.5)  # -5% on the day: the limit, under a kill already at halt
    else:
        await walk_until_kill(h, [55_000.5])
        raised = await h.engine.command("kill", {"level": "flatten", "reason": "get out"})
        assert raised["ok"], raised
        await h.feed(BTC, 55_000.5)  # the flatten fills: the loss is realized, still -5%
    assert h.core.safety.kill.source == "command"

    held = await h.engine.command("release", RELEASE)
    assert not held["ok"], held
    assert "the condition still holds (daily loss" in held["message"]
    assert h.core.safety.kill.engaged

    forced = await h.engine.command("release", {**RELEASE, "override": True})
    assert forced["ok"], forced
    await h.feed(BTC, 55_000.5)
    assert not h.core.safety.kill.engaged  # the override holds for the standing loss


# --------------------------------------------------------------------------- kill: flatten


async def test_kill_flatten_closes_a_position_while_an_order_the_other_way_rests(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """The kill switch's flatten closes every position even when another order rests on the
    other side of it.

    Found: ``kill --level flatten`` judged its reduce-only sells before the cancels it had just
    asked for were carried out, so a resting sell (another strategy's limit, a take-profit)
    counted as already reducing the long: the flatten was denied (REDUCE_ONLY_EXCEEDS_POSITION),
    the resting sell was then cancelled, and the long stayed open under a flatten kill.
    """
    cfg = scripted_config(
        data_dir,
        strategies=[strategy("alpha", "auto"), strategy("gamma", "auto")],
    )
    h = await start(harnesses, data_dir, cfg)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    await h.feed(BTC, 60_000.0)  # alpha's buy fills: long 0.01
    rest = Signal(Action.SELL, "scripted", "offer above", 1.0, limit=LimitSpec(price=60_300.0))
    await h.signal("gamma", BTC, rest, 60_000.0)
    await h.feed(BTC, 60_000.0)
    pf = h.core.portfolio
    assert pf.positions[BTC].qty == 0.01
    resting = [o for o in h.core.open_orders.values() if o.strategy_id == "gamma"]
    assert [(o.side, o.qty, o.limit_price) for o in resting] == [("sell", 0.01, 60_300.0)]

    sent = len(h.sent)
    reply = await h.engine.command("kill", {"level": "flatten", "reason": "get out"})
    assert reply["ok"] and "denied" not in reply["message"], reply
    assert not [o for o in h.core.open_orders.values() if o.strategy_id == "gamma"]  # cancelled
    flat: list[Any] = [(o.side, o.qty, o.reduce_only) for o in h.sent[sent:]]
    assert flat == [("sell", 0.01, True)]  # and the long goes out, reduce-only
    await h.feed(BTC, 60_000.0)
    assert pf.positions[BTC].qty == 0.0


# --------------------------------------------------------------------------- the control socket


def test_an_engine_refuses_a_socket_another_engine_listens_on_before_it_starts(
    tmp_path: Path,
) -> None:
    """An engine given the socket path another engine listens on refuses before it starts.

    Found: the socket was looked at only after the engine had started on its own data
    directory: it journaled a session, printed "session started" (and, in testnet or live,
    would have opened its venues and reconciled them), and only then exited 2.
    """
    data_dir = tmp_path / "second"
    with short_dir() as private:
        path = private / "engine.sock"
        first = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # the first engine's socket
        try:
            first.bind(str(path))
            first.listen(8)
            done = run("engine", "--data-dir", str(data_dir), "--socket", str(path), "--for", "1")
            assert done.returncode == 2, done.stderr
            assert f"another engine is already listening on {path}" in done.stderr
            assert "Traceback" not in done.stderr
            assert done.stdout == ""  # no "session started" for an engine that never ran
            assert not (data_dir / "journal.sqlite").exists()
            assert path.exists()  # the first one's socket is left alone
        finally:
            first.close()
