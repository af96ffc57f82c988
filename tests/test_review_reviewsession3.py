"""Review reviewsession3: the changes merged on 8 Dec 2026 (2db3fcf..main), taken together,
with real engines. Each test pins a hole found here, failing before its fix.

Attacks that held (no test added, or only the property above them):
- a paused strategy's flip (long 1, sell 2) and its sell from flat: denied, person's or breaker's;
- its exit on a symbol another strategy also holds (net flat): judged on its own slot, goes;
- an exit sized twice while the first is in flight: sizing counts the order in flight (size 0);
- its venue stop: cancelled before its own close goes (_stop_first), not counted as a close;
- a move of its resting exit limit: the old one is gone before the new is judged;
- the send-time gate: the same _gate as the check, the order's own id left out at the send;
- a request kept at the pause, the position closed meanwhile by a protective exit: the
  approve judges again and denies it (nothing left to close);
- orders always carry client_order_id == intent_id (the send-time exclusion holds);
- journal: `cockpit journal`, `verify`, read_rows (mode=ro), PRAGMA optimize, PASSIVE, FULL
  and RESTART checkpoints by another connection move neither version;
- names in commands: config ids are at most 40, symbols at most 65 characters, so a 200 cap
  never refuses a real one (a rearm scope "symbol:<SYMBOL>" included);
- [record] enabled: the research portfolio backtest sets the simulated market then switches
  recording off (apply_run_options), so a trading config with [record] still backtests;
- exits at their level: LEVEL_EPS is relative 1e-12, far below a tick; a price a tick short
  of a stop does not fire it;
- session-stopped info.why: `cockpit journal` prints it as one more "key value";
- breakers' judge at start: each trip condition is the live one's (> for orders and signals,
  >= for rejects and unreviewed, > for slippage); a re-arm journaled resets what it judges.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.runtime import JOURNAL_FILE
from engine.types import (
    Action,
    LimitSpec,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    PositionView,
    Side,
    Signal,
)
from tests.test_journal_failure import blocked_and_killed_by_file, feed, started
from tests.test_safety_engine import (
    BTC,
    WHOLE_BTC,
    Harness,
    buy,
    denied_codes,
    harnesses,  # noqa: F401  (the fixture)
    long_one_btc,
    sell,
    start,
)


def limit_exit(price: float) -> Signal:
    return Signal(
        Action.SELL, "scripted", "take profit", 1.0, reduce_only=True, limit=LimitSpec(price)
    )


@pytest.mark.parametrize("pause", ["operator", "breaker"])
async def test_a_paused_strategys_sell_beside_its_resting_exit_is_not_its_exit(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    pause: str,
) -> None:
    """Long 1 with its take-profit limit (sell 1) resting, the paused strategy's market sell of
    1 was judged on the position alone ("closes its own position") and went out: filled, then
    the resting limit filled too, and the paused strategy was short 1, an entry its pause
    should have stopped. Its own orders on the closing side count now: the sell is denied
    (STRATEGY_PAUSED, BREAKER_TRIPPED), the exit limit keeps working, the position closes to
    flat and no further."""
    h = await long_one_btc(harnesses, data_dir, pause)
    await h.signal("alpha", BTC, limit_exit(60_500.0), 60_000.0)  # rests (a 2nd order: trips)
    assert [o.qty for o in h.core.open_orders.values()] == [1.0]
    if pause == "operator":
        reply = await h.engine.command("pause", {"strategy": "alpha", "reason": "watching"})
        assert reply["ok"], reply
        code = "STRATEGY_PAUSED"
    else:
        assert h.strategy_view("alpha")["paused"]
        code = "BREAKER_TRIPPED"
    assert [o.qty for o in h.core.open_orders.values()] == [1.0]  # its exit limit stays
    sent = len(h.sent)
    await h.signal("alpha", BTC, sell(), 60_000.0)
    assert code in denied_codes(h.intents()[-1]), h.intents()[-1]
    assert len(h.sent) == sent
    await h.feed(BTC, 60_000.0)
    await h.feed(BTC, 60_600.0)  # the limit fills
    await h.feed(BTC, 60_600.0)
    assert h.core.portfolio.positions[BTC].qty == 0.0
    assert not h.core.open_orders


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        ("UPDATE journal SET payload = '{}' WHERE seq = 2", "another process wrote to it"),
        ("DELETE FROM journal WHERE seq = (SELECT max(seq) FROM journal)", "another process"),
        ("ANALYZE", "its schema was changed by another process"),
    ],
)
async def test_a_checkpoint_by_another_process_does_not_block_the_engine(
    data_dir: Path, edit: str, why: str
) -> None:
    """Found: `sqlite3 journal.sqlite 'PRAGMA wal_checkpoint(TRUNCATE)'` (a backup or
    replication tool, a person shrinking the -wal) run beside a running engine changes no row,
    yet it changes SQLite's data_version: the engine's next commit said "another process wrote
    to it" and the engine went BLOCKED, nothing more sent. A changed data_version now has the
    journal checked (the whole chain, and its last row the engine's own) before it is taken
    for another writer: a checkpoint trades on; an edit after it (then checkpointed away, so
    no -wal frame shows it) still blocks, and so does a schema changed (`ANALYZE`, as the
    README says)."""
    journal = data_dir / JOURNAL_FILE
    engine = await started(data_dir)
    try:
        await feed(engine, 50)
        await engine.committed()
        for mode in ("PASSIVE", "FULL", "RESTART", "TRUNCATE", "TRUNCATE"):
            other = sqlite3.connect(journal, timeout=30)
            assert other.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()[0] == 0
            other.close()
            assert engine.journal is not None
            before = engine.journal._last_seq
            for what in ("pause", "resume"):  # each reply waits for its audit row's commit
                reply = await engine.command(what, {"strategy": "ema_cross", "reason": mode})
                assert reply["ok"], reply
            await feed(engine, 50)
            await engine.committed()
            assert engine.journal._last_seq > before
            assert not engine.blocked_reason, (mode, engine.blocked_reason)
        other = sqlite3.connect(journal, timeout=30)
        other.execute(edit)
        other.commit()
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        other.close()
        await blocked_and_killed_by_file(engine, why)
    finally:
        await engine.stop()


_QTY = st.integers(min_value=1, max_value=8).map(lambda n: n / 4)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    held=st.integers(min_value=-8, max_value=8).map(lambda n: n / 4),
    resting=st.lists(
        st.tuples(
            st.sampled_from([Side.BUY, Side.SELL]),
            _QTY,
            st.sampled_from([OrderType.LIMIT, OrderType.MARKET, OrderType.STOP_MARKET]),
            st.sampled_from(["alpha", "beta"]),
        ),
        max_size=4,
    ),
    side=st.sampled_from([Side.BUY, Side.SELL]),
    qty=_QTY,
)
async def test_what_a_pause_lets_out_never_takes_the_strategy_past_flat(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    held: float,
    resting: list[tuple[Side, float, OrderType, str]],
    side: Side,
    qty: float,
) -> None:
    """Invariant of the paused strategy's own exit (``EngineCore._closes_own``): whatever it
    lets out, with every one of the strategy's open orders on that side filling too (a venue
    stop aside: it is cancelled before the exit goes), leaves the strategy's own position
    between where it is and flat. With nothing resting, a close of at most what it holds
    goes (the boundary: exactly the position passes)."""
    if not harnesses:
        await start(harnesses, data_dir, qty=1.0, **WHOLE_BTC)
    core = harnesses[0].core
    slot = core.slots[("alpha", BTC)]
    saved = (slot.position, dict(core.open_orders))
    try:
        slot.position = PositionView(held, 60_000.0)
        core.open_orders.clear()
        for i, (o_side, o_qty, kind, sid) in enumerate(resting):
            coid = f"r-{i}"
            core.open_orders[coid] = Order(
                coid, coid, sid, BTC, "sim", o_side, kind, o_qty,
                60_000.0 if kind is OrderType.LIMIT else None, OrderStatus.NEW, 0, 0,
            )  # fmt: skip
        intent = OrderIntent(
            "ck-new", "d-new", "alpha", BTC, "sim", side, qty, OrderType.MARKET, 60_000.0, 0
        )
        closes = core._closes_own(intent)
        same = sum(
            o.remaining
            for o in core.open_orders.values()
            if o.strategy_id == "alpha"
            and o.side is side
            and o.order_type is not OrderType.STOP_MARKET
        )
        after = held + side.sign * (same + qty)
        if closes:
            assert held * side.sign < 0 and after * held >= 0.0, (held, resting, side, qty)
        if not core.open_orders:
            assert closes == (held * side.sign < 0 and qty <= abs(held))
    finally:
        slot.position, orders = saved
        core.open_orders.clear()
        core.open_orders.update(orders)


async def test_a_request_beside_a_resting_exit_is_rejected_at_the_pause(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """The same hole through the approval queue: `beta` (approve) long 1, its take-profit of 1
    resting, then a sell of 1 waiting for a person (sized as a short: the exit already covers
    the position). The pause kept it ("it closes its own position"), and approved after the
    pause it went out: the paused strategy ended short 1. Now the pause rejects it (it could
    add exposure), and the exit alone closes the position to flat."""
    h = await start(harnesses, data_dir, qty=1.0, **WHOLE_BTC)

    async def approve_all() -> list[str]:
        answers = []
        for p in h.engine.snapshot(trace=0, curve=0)["approvals"]:
            reply = await h.engine.command("approve", {"id": p["id"], "hash": p["hash"]})
            answers.append(reply["message"])
        return answers

    await h.feed(BTC, 60_000.0)
    await h.signal("beta", BTC, buy(), 60_000.0)
    await approve_all()
    await h.feed(BTC, 60_000.0)
    assert h.core.portfolio.positions[BTC].qty == 1.0
    await h.signal("beta", BTC, limit_exit(60_500.0), 60_000.0)
    await approve_all()
    assert [(o.side, o.qty) for o in h.core.open_orders.values()] == [(Side.SELL, 1.0)]
    await h.signal("beta", BTC, sell(), 60_000.0)
    waiting = h.engine.snapshot(trace=0, curve=0)["approvals"]
    assert [(p["side"], p["qty"]) for p in waiting] == [("sell", 1.0)]
    reply = await h.engine.command("pause", {"strategy": "beta", "reason": "watching"})
    assert reply["ok"] and "1 request(s) waiting" in reply["message"], reply
    assert h.engine.snapshot(trace=0, curve=0)["approvals"] == []
    assert await approve_all() == []
    await h.feed(BTC, 60_600.0)  # the exit fills
    await h.feed(BTC, 60_600.0)
    assert h.core.portfolio.positions[BTC].qty == 0.0
    assert not h.core.open_orders
