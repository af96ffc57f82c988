"""The whole engine on the embedded default: decisions, orders, fills, journal, restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from engine.journal import read_rows, verify_journal
from engine.runtime import JOURNAL_FILE, Engine
from engine.types import OrderStatus
from tests.conftest import fast_config

EVENTS = 40_000  # about an hour of simulated quotes across three symbols


async def run_engine(data_dir: Path, events: int = EVENTS, **sections: object) -> Engine:
    engine = Engine(fast_config(data_dir, **sections), data_dir)
    await engine.start()
    try:
        await engine.run(max_events=events)
    finally:
        await engine.stop()
    return engine


def journal_rows(data_dir: Path) -> list[tuple]:
    with sqlite3.connect(data_dir / JOURNAL_FILE) as db:
        return db.execute("SELECT seq, ts, kind, payload, prev_hash, hash FROM journal").fetchall()


async def test_default_engine_decides_orders_and_fills(data_dir: Path) -> None:
    engine = await run_engine(data_dir)
    counters = engine.core.counters
    assert counters["decisions"] > 0
    assert counters["submitted"] > 0
    assert counters["fills"] > 0
    kinds = {row.kind for row in read_rows(data_dir / JOURNAL_FILE)}
    assert {"session", "decision", "intent", "order", "fill", "marks"} <= kinds
    report = verify_journal(data_dir / JOURNAL_FILE)
    assert report.ok, report.problem


async def test_same_seed_gives_the_same_journal(tmp_path: Path) -> None:
    await run_engine(tmp_path / "a", 20_000)
    await run_engine(tmp_path / "b", 20_000)
    a, b = journal_rows(tmp_path / "a"), journal_rows(tmp_path / "b")
    assert len(a) > 10
    assert a == b


async def test_different_seed_gives_a_different_journal(tmp_path: Path) -> None:
    await run_engine(tmp_path / "a", 20_000)
    await run_engine(tmp_path / "b", 20_000, market={"simulated": {"seed": 43}})
    assert journal_rows(tmp_path / "a")[-1][5] != journal_rows(tmp_path / "b")[-1][5]


async def test_second_run_continues_from_the_same_positions(data_dir: Path) -> None:
    first = await run_engine(data_dir)
    p1 = first.core.portfolio
    positions = {s: pos.qty for s, pos in p1.positions.items() if pos.qty}
    cash, realized, fees = p1.cash, p1.realized_pnl, p1.fees_paid
    assert positions, "the first run should end holding something"

    second = Engine(fast_config(data_dir), data_dir)
    await second.start()
    try:
        p2 = second.core.portfolio
        assert {s: pos.qty for s, pos in p2.positions.items() if pos.qty} == pytest.approx(
            positions
        )
        assert p2.cash == pytest.approx(cash)
        assert p2.realized_pnl == pytest.approx(realized)
        assert p2.fees_paid == pytest.approx(fees)
        assert second.core.session == first.core.session + 1
        # Open orders come back too, and ids never repeat across sessions.
        assert set(second.core.open_orders) == set(first.core.open_orders)
        await second.run(max_events=5_000)
    finally:
        await second.stop()
    assert verify_journal(data_dir / JOURNAL_FILE).ok
    ids = [r.payload["intent"]["intent_id"] for r in read_rows(data_dir / JOURNAL_FILE, {"intent"})]
    assert len(ids) == len(set(ids))


async def test_intent_is_durable_before_the_broker_sees_it(data_dir: Path) -> None:
    engine = Engine(fast_config(data_dir), data_dir)
    await engine.start()
    seen: list[bool] = []
    real_submit = engine.execution.paper.submit

    def spy(order, now):
        # A separate connection sees only committed rows: the intent must already be there.
        intents = {
            r.payload["intent"]["intent_id"] for r in read_rows(data_dir / JOURNAL_FILE, {"intent"})
        }
        seen.append(order.client_order_id in intents)
        return real_submit(order, now)

    engine.execution.paper.submit = spy
    try:
        await engine.run(max_events=EVENTS)
    finally:
        await engine.stop()
    assert seen and all(seen)


async def test_crash_between_intent_and_ack_is_not_resent(data_dir: Path) -> None:
    """kill -9 after the intent is durable and before the broker acknowledges it."""
    engine = Engine(fast_config(data_dir), data_dir)
    await engine.start()
    lost: list[str] = []

    class Crash(Exception):
        pass

    def crash(order, now):
        lost.append(order.client_order_id)
        raise Crash

    engine.execution.paper.submit = crash
    with pytest.raises(Crash):
        await engine.run(max_events=EVENTS)
    # No stop(): the process "died". The journal connection is simply abandoned, and the OS
    # drops a dead process's lock on the data directory.
    engine.data_dir_lock.release()
    assert lost
    restarted = Engine(fast_config(data_dir), data_dir)
    await restarted.start()
    submitted: list[str] = []
    real = restarted.execution.paper.submit

    def record(order, now):
        submitted.append(order.client_order_id)
        return real(order, now)

    restarted.execution.paper.submit = record
    try:
        await restarted.run(max_events=5_000)
    finally:
        await restarted.stop()
    assert lost[0] not in submitted
    last = {}
    for row in read_rows(data_dir / JOURNAL_FILE, {"order"}):
        last[row.payload["order"]["client_order_id"]] = row.payload["order"]
    assert last[lost[0]]["status"] == OrderStatus.CANCELED
    assert "not resent" in last[lost[0]]["reason"]


async def test_journal_failure_stops_all_orders(data_dir: Path) -> None:
    engine = Engine(fast_config(data_dir), data_dir)
    await engine.start()
    sent: list[str] = []
    real = engine.execution.paper.submit

    def record(order, now):
        sent.append(order.client_order_id)
        return real(order, now)

    engine.execution.paper.submit = record
    # Break the journal: close its connection under it.
    await engine.journal._conn.close()
    try:
        await engine.run(max_events=EVENTS)
    finally:
        await engine.stop()
    assert sent == []
    assert engine.blocked_reason
    assert engine.core.counters["submitted"] <= 1


async def test_bar_replay_on_real_data(data_dir: Path) -> None:
    from tests.conftest import BARS_CSV

    engine = await run_engine(
        data_dir,
        5_000,
        market={"source": "replay", "replay": {"path": str(BARS_CSV), "kind": "bars"}},
        strategies=[
            {
                "id": "ema",
                "kind": "ema_cross",
                "symbols": ["BTC/USDT"],
                "timeframe_s": 60,
                "params": {"fast": 10, "slow": 30},
                "approval": "auto",
            },
        ],
    )
    assert engine.quotes_processed == 5_000
    assert engine.core.counters["fills"] > 0
    assert verify_journal(data_dir / JOURNAL_FILE).ok


async def test_quote_replay_on_real_data(data_dir: Path) -> None:
    from tests.conftest import BOOKTICKER_CSV

    engine = await run_engine(
        data_dir,
        28_040,
        market={"source": "replay", "replay": {"path": str(BOOKTICKER_CSV), "kind": "quotes"}},
        strategies=[
            {
                "id": "ema",
                "kind": "ema_cross",
                "symbols": ["BTC/USDT"],
                "timeframe_s": 1,
                "params": {"fast": 5, "slow": 20},
                "approval": "auto",
            },
        ],
    )
    assert engine.quotes_processed + sum(engine.core.validator.rejected.values()) == 28_040
    assert engine.core.counters["decisions"] > 0


async def test_a_failing_output_sink_does_not_break_the_journal(data_dir: Path) -> None:
    """stdout going away (a closed pipe) must not stop the engine or lose the session end."""

    def broken(_ev: object) -> None:
        raise BrokenPipeError("the reader went away")

    engine = Engine(fast_config(data_dir), data_dir, emit=broken)
    await engine.start()
    await engine.run(max_events=5_000)
    await engine.stop()
    states = [r.payload["state"] for r in read_rows(data_dir / JOURNAL_FILE, {"session"})]
    assert states == ["started", "stopped"]
    assert verify_journal(data_dir / JOURNAL_FILE).ok
