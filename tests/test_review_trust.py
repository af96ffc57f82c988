"""A third adversarial review of what the engine promises a trader (review-p)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine.control import ControlServer
from engine.core import SubmitOrder
from engine.datadir import JOURNAL_FILE
from engine.events import ApprovalRequested
from engine.journal import (
    Journal,
    JournalBroken,
    anchor_path,
    canonical_payload,
    read_rows,
    row_hash,
    verify_journal,
)
from engine.restore import RestoreError, restore_problem
from engine.runtime import Engine
from engine.types import NS_PER_MS, NS_PER_SECOND, Action, DepthUpdate, Quote, Signal
from tests.conftest import fast_config
from tests.test_cli import run
from tests.test_control_support import short_dir
from tests.test_journal_tamper import killed as killed
from tests.test_rejected_quotes import _rehash_with
from tests.test_safety_engine import scripted_config


def buy(reason: str = "test entry") -> Signal:
    return Signal(Action.BUY, "test", reason, 0.5, {}, False)


async def started(data_dir: Path) -> Engine:
    """The default config with rsi_reversion and donchian_breakout in approve, with quotes."""
    engine = Engine(fast_config(data_dir, auto=False), data_dir)
    await engine.start()
    await engine.process(list(itertools.islice(engine.source.events(), 60)))
    return engine


async def request(engine: Engine, strategy: str = "donchian_breakout") -> str:
    """A strategy's entry through the real decision path; the pending approval's id."""
    core = engine.core
    assert core is not None
    symbol = "BTC/USDT"
    q = core.quotes[symbol]
    out = core.decide(core.slots[(strategy, symbol)], buy(), (q.bid + q.ask) / 2)
    await engine.handle(out)
    await engine.committed()
    [req] = [e for e in out if isinstance(e, ApprovalRequested)]
    return str(req.approval["id"])


async def test_an_approval_past_its_time_to_live_expires_though_no_quote_came(
    data_dir: Path,
) -> None:
    """The feed went quiet after the request: the engine's clock still runs (the source's
    time), and an approve that comes after the time to live is an expiry, not a trade."""
    engine = await started(data_dir)
    try:
        core = engine.core
        assert core is not None
        aid = await request(engine)
        pend = core.approvals.get(aid)
        assert pend is not None
        later: Any = pend.expires_ts + NS_PER_SECOND // 10
        engine.source.event_now = lambda: later  # type: ignore[method-assign]
        reply = await engine.command("approve", {"id": aid})
        assert not reply["ok"] or "expired" in reply["message"], reply
        assert not core.open_orders
        assert core.approvals.counters()["donchian_breakout"]["approved"] == 0
    finally:
        await engine.stop()


# --------------------------------------------------------------------------- a second engine


def test_a_second_engine_on_the_socket_of_one_still_starting_journals_nothing(
    tmp_path: Path,
) -> None:
    """Two engines on other data directories given one --socket at the same instant.

    Found: the socket was checked before each engine started (nothing listened yet: the other
    was still restoring its journal), so both started, journaled a session (and, on a venue,
    would have reconciled it), and the later one was refused only at its bind, or, finding the
    other's socket not yet listening, replaced it: that engine ran on with no socket a kill
    could reach. Now the socket path is locked (`<socket>.lock`) from the check to the close.
    """
    data_dir = tmp_path / "second"
    with short_dir() as private:
        path = private / "engine.sock"
        starting = ControlServer(cast(Any, None), path)  # the first engine, still starting
        starting.check_path()
        starting.check_free()
        try:
            done = run("engine", "--data-dir", str(data_dir), "--socket", str(path), "--for", "1")
            assert done.returncode == 2, done.stderr
            assert f"another engine is already listening on {path}" in done.stderr
            assert "Traceback" not in done.stderr
            assert done.stdout == ""  # no "session started" for an engine that never ran
            assert not (data_dir / JOURNAL_FILE).exists()
        finally:
            getattr(starting, "release", lambda: None)()  # main has no lock to release


# --------------------------------------------------------------------------- the KILL file


async def test_a_kill_file_linked_to_one_that_says_flatten_flattens(data_dir: Path) -> None:
    """`ln -s ~/kill-levels/flatten DATA_DIR/KILL`: the level is what the link's target says.

    Found: a symlink was never read, only taken as "something by that name" (halt), so a
    person's flatten by link left every position open."""
    from tests.test_kill_file import config, kill, until

    engine = Engine(config(data_dir), data_dir)
    await engine.start()
    await engine.process(list(itertools.islice(engine.source.events(), 200)))
    watcher = asyncio.create_task(engine.watch())
    try:
        target = data_dir.parent / "flatten-now"
        target.write_text("flatten\n")
        engine.kill_file.symlink_to(target)
        await until(lambda: kill(engine).level == "flatten", "the flatten kill")
        refused = await engine.command("release", {"reason": "checked", "confirm": "RELEASE"})
        assert not refused["ok"] and str(engine.kill_file) in refused["message"]
    finally:
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await watcher
        await engine.stop()


# --------------------------------------------------------------------------- rejected quotes


REJECTED_WITH_A_BOOK = {
    # what makes the quote that came with the book one the validator refuses
    "spread_too_wide": lambda q, t: Quote(q.symbol, q.bid * 0.5, q.ask, 50.0, 1e-5, t, t, q.venue),
    "time_backwards": lambda q, t: Quote(
        q.symbol, q.bid, q.ask, 1e-5, 1e-5, q.ts_exchange - NS_PER_SECOND, t, q.venue
    ),
    "non_positive_size": lambda q, t: Quote(q.symbol, q.bid, q.ask, 0.0, 0.0, t, t, q.venue),
    "not_finite": lambda q, t: Quote(q.symbol, q.bid, math.nan, 1e-5, 1e-5, t, t, q.venue),
}


@pytest.mark.parametrize("why", sorted(REJECTED_WITH_A_BOOK))
async def test_the_book_that_came_with_a_rejected_quote_prices_no_fill(
    data_dir: Path, why: str
) -> None:
    """A venue hands its L2 book to the paper venue just before the quote it came with.

    Found: the book went to the paper broker before its quote was validated, so a quote the
    validator refused still set the book the next orders walked: a market buy filled at 1.5x
    the ask of every valid quote (the rejected moment's far level)."""
    engine = Engine(fast_config(data_dir), data_dir)
    await engine.start()
    try:
        core = engine.core
        assert core is not None
        await engine.process(list(itertools.islice(engine.source.events(), 200)))
        sym = "BTC/USDT"
        q = core.quotes[sym]
        t = core.now + NS_PER_MS
        wild = DepthUpdate(sym, ((q.bid * 0.5, 50.0),), ((q.ask, 1e-5), (q.ask * 1.5, 50.0)), t)

        def valid(i: int) -> Quote:  # the market as it is: only a sliver shown at the touch
            ts = t + i * 10 * NS_PER_MS
            return Quote(sym, q.bid, q.ask, 1e-5, 1e-5, ts, ts, q.venue)

        rejected = core.validator.rejected.total()
        await engine.process([wild, REJECTED_WITH_A_BOOK[why](q, t), valid(1)])
        assert core.validator.rejected.total() == rejected + 1
        slot = core.slots[("ema_cross", sym)]
        out = core.decide(slot, buy(), q.mid)
        assert any(isinstance(e, SubmitOrder) for e in out), out
        await engine.handle(out)
        await engine.process([valid(i) for i in range(2, 60)])
        await engine.committed()
        fills = [r.payload["fill"] for r in read_rows(data_dir / JOURNAL_FILE, {"fill"})]
        mine = [f for f in fills if f["ts"] >= t]
        assert mine, "the buy filled"
        assert all(f["price"] <= q.ask * 1.01 for f in mine), (q.ask, mine)
    finally:
        await engine.stop()


# --------------------------------------------------------------------------- the journal


def _append_by_hand(journal: Path, kind: str, payload: dict[str, Any]) -> int:
    """A row added at the end with its hash made right, the anchor left as it was: what anyone
    with sqlite3 and this repository's row_hash can do."""
    conn = sqlite3.connect(journal)
    try:
        seq, ts, last_hash = conn.execute(
            "SELECT seq, ts, hash FROM journal ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        body = canonical_payload(payload)
        digest = row_hash(seq + 1, ts, kind, body, last_hash)
        conn.execute(
            "INSERT INTO journal (seq, ts, kind, payload, prev_hash, hash) VALUES (?,?,?,?,?,?)",
            (seq + 1, ts, kind, body, last_hash, digest),
        )
        conn.commit()
    finally:
        conn.close()
    return seq + 1


async def test_a_row_added_by_hand_after_a_clean_stop_is_refused(killed: Path) -> None:
    """The switch was latched, the engine stopped cleanly; then a safety_state row saying it
    is released was appended at the end, chained and hashed right.

    Found: nothing noted that a clean stop ends the journal: the anchor only pins a row that
    must still be there, so the engine started ACTIVE. Now a clean close's anchor says no row
    follows it, and the start (and `cockpit verify`, with the same line) refuses the row."""
    journal = killed / JOURNAL_FILE
    state = [r for r in read_rows(journal, {"safety_state"})][-1].payload
    assert state["state"]["kill"]["level"] == "halt"
    released = dict(state, state=dict(state["state"], kill={"level": None, "by": "", "reason": ""}))
    bad = _append_by_hand(journal, "safety_state", released)
    engine = Engine(scripted_config(killed), killed)
    with pytest.raises(JournalBroken) as err:
        await engine.start()
    assert err.value.report.first_bad_seq == bad
    assert f"row {bad}:" in str(err.value) and "clean stop" in str(err.value)
    assert engine.core is None
    check = run("verify", "--data-dir", str(killed))
    assert check.returncode == 1 and f"row {bad}:" in check.stderr, check.stderr


async def test_a_trigger_planted_in_the_journal_is_refused_before_it_can_act(
    killed: Path,
) -> None:
    """A trigger added with sqlite3 while the engine was stopped: every row verifies, and the
    trigger silently drops the rows the engine writes next (here its kill switch and audit).

    Found: the engine started, answered "kill switch engaged" as durable while the rows were
    dropped, and only the start after that refused the journal (a seq gap)."""
    journal = killed / JOURNAL_FILE
    conn = sqlite3.connect(journal)
    conn.execute(
        "CREATE TRIGGER hush BEFORE INSERT ON journal WHEN NEW.kind IN "
        "('safety_state', 'safety', 'audit') BEGIN SELECT RAISE(IGNORE); END"
    )
    conn.commit()
    conn.close()
    engine = Engine(scripted_config(killed), killed)
    with pytest.raises(JournalBroken, match="trigger"):
        await engine.start()
    assert engine.core is None
    check = run("verify", "--data-dir", str(killed))
    assert check.returncode == 1 and "'hush'" in check.stderr, check.stderr


async def test_a_journal_reopened_after_a_clean_stop_takes_new_rows_and_still_verifies(
    killed: Path,
) -> None:
    """The other side of the closed anchor: a writer opens the journal again, commits a row
    and dies (no clean close): the rows after the old stop are its own, and the next start
    takes them."""
    journal = killed / JOURNAL_FILE
    rows = len(list(read_rows(journal)))
    writer = await Journal.open(journal)
    await writer.append_durable("tick", 1, {"after": "the old stop"})
    writer._writer.cancel()  # as kill -9 would end it: no close, no closing anchor
    with contextlib.suppress(BaseException):
        await writer._writer
    assert len(list(read_rows(journal))) == rows + 1
    assert verify_journal(journal).ok
    again = Engine(scripted_config(killed), killed)
    await again.start()
    await again.stop()
    assert verify_journal(journal).ok


TRUST_EXAMPLES = int(os.environ.get("COCKPIT_TRUST_EXAMPLES", "25"))
# The kinds a start reads to rebuild its state (engine.restore): an edit of any of them, hashes
# made right, must get one answer from `cockpit verify` and from a start.
RESTORED_KINDS = (
    "safety_state",
    "fill",
    "order",
    "intent",
    "session",
    "marks",
    "approval_requested",
)


def trust_config(data_dir: Path) -> Any:
    """The scripted pair, ``alpha`` with a protective stop (its exits are journaled too)."""
    from tests.test_safety_engine import strategy

    return scripted_config(
        data_dir,
        strategies=[
            strategy("alpha", "auto", 0.01, exits={"stop_loss_pct": 2.0}),
            strategy("beta", "approve", 0.01),
        ],
    )


async def _traded_and_latched(data_dir: Path) -> None:
    """A fill with its stop, an approval rejected and one pending, a run-time limit, a pause
    and a latched halt, stopped."""
    from tests.test_safety_engine import BTC, ETH, Harness
    from tests.test_safety_engine import buy as scripted_buy

    h = await Harness.start(trust_config(data_dir), data_dir)
    try:
        await h.feed(BTC, 60_000.0)
        await h.feed(ETH, 3_000.0)
        await h.signal("alpha", BTC, scripted_buy(), 60_000.0)
        await h.feed(BTC, 60_000.0)
        await h.signal("beta", ETH, scripted_buy(), 3_000.0)
        [asked] = [a["id"] for a in h.engine.snapshot()["approvals"]]
        await h.feed(ETH, 3_000.0)
        await h.signal("beta", BTC, scripted_buy(), 60_000.0)
        for name, args in (
            ("reject", {"id": asked, "reason": "not now"}),
            ("set_limit", {"name": "max_order_notional", "value": 5000.0, "reason": "calm"}),
            ("pause", {"strategy": "beta", "reason": "lunch"}),
            ("kill", {"level": "halt", "reason": "desk closed"}),
        ):
            reply = await h.engine.command(name, args)
            assert reply["ok"], reply
    finally:
        await h.stop()


@pytest.fixture(scope="module")
def latched_journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("latched") / "data"
    asyncio.run(_traded_and_latched(data_dir))
    assert verify_journal(data_dir / JOURNAL_FILE).ok
    return data_dir


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["entries", "halt", "flatten", "auto", "approve", "BTC/USDT", "buy"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


async def _starts(data_dir: Path) -> bool:
    """Does an engine start on ``data_dir``? False when it refuses in one line (a journal it
    cannot trust); anything else it raises is a failure of the test."""
    engine = Engine(trust_config(data_dir), data_dir)
    try:
        await engine.start()
    except (JournalBroken, RestoreError) as exc:
        assert "\n" not in str(exc)
        return False
    finally:
        await engine.stop()
    return True


@settings(
    max_examples=TRUST_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_verify_and_a_start_give_one_answer_on_any_edit_of_a_restored_row(
    latched_journal: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Rows edited and re-hashed (the anchor rewritten too: the documented forgery) hold what
    no engine writes. Found: a safety_state whose kill level is unknown started ACTIVE, a
    limit or strategy table of the wrong type stopped the start with a traceback, and
    `cockpit verify` called each of those journals intact."""
    data_dir = tmp_path_factory.mktemp("edited") / "data"
    shutil.copytree(latched_journal, data_dir)
    journal = data_dir / JOURNAL_FILE
    rows = [r for r in read_rows(journal) if r.kind in RESTORED_KINDS]
    row = data.draw(st.sampled_from(rows), label="row")
    payload = json.loads(json.dumps(row.payload))
    target = payload
    for _ in range(data.draw(st.integers(0, 2), label="depth")):
        tables = [k for k, v in target.items() if isinstance(v, dict) and v]
        if not tables:
            break
        target = target[data.draw(st.sampled_from(sorted(tables)), label="into")]
    key = data.draw(st.sampled_from(sorted(target)) | st.text(max_size=6), label="key")
    target[key] = data.draw(JSON_VALUES, label="value")
    _rehash_with(journal, row.seq, canonical_payload(payload))
    verified = verify_journal(journal).ok and not restore_problem(journal)
    started = asyncio.run(_starts(data_dir))
    event(f"{row.kind}: {'started' if started else 'refused'}")
    assert verified == started, (row.kind, key, target.get(key))


def _edit_last(kind: str, edit: Any) -> Any:
    def apply(journal: Path) -> int:
        row = [r for r in read_rows(journal, {kind})][-1]
        payload = json.loads(json.dumps(row.payload))
        edit(payload)
        _rehash_with(journal, row.seq, canonical_payload(payload))
        return row.seq

    return apply


FORGED = {
    # An unknown kill level read as no kill switch: the latched halt came back ACTIVE.
    "kill-level": _edit_last("safety_state", lambda p: p["state"]["kill"].update(level="off")),
    "kill-null": _edit_last("safety_state", lambda p: p["state"].update(kill=None)),
    "strategies-list": _edit_last("safety_state", lambda p: p["state"].update(strategies=[])),
    "limit-text": _edit_last(
        "safety_state", lambda p: p["state"]["limit_overrides"].update(max_order_notional="x")
    ),
    "approval-null": _edit_last("approval_requested", lambda p: p.update(approval=None)),
    "fill-strategy-list": _edit_last("fill", lambda p: p["fill"].update(strategy_id=["alpha"])),
}


@pytest.mark.parametrize("forge", sorted(FORGED))
async def test_a_forged_row_no_engine_writes_is_refused_alike_by_verify_and_start(
    latched_journal: Path, tmp_path: Path, forge: str
) -> None:
    """Found: `cockpit verify` called these journals intact while a start either came up
    ACTIVE on a latched halt (an unknown kill level) or stopped with a traceback."""
    data_dir = tmp_path / "data"
    shutil.copytree(latched_journal, data_dir)
    bad = FORGED[forge](data_dir / JOURNAL_FILE)
    check = run("verify", "--data-dir", str(data_dir))
    assert check.returncode == 1 and f"row {bad} " in check.stderr, check.stderr
    assert "Traceback" not in check.stderr
    engine = Engine(trust_config(data_dir), data_dir)
    with pytest.raises(RestoreError, match=f"journal row {bad} "):
        await engine.start()
    await engine.stop()
    assert engine.core is None


# --------------------------------------------------------------------------- the approval gate


async def test_an_approval_that_races_a_kill_is_not_reported_as_a_trade(data_dir: Path) -> None:
    """`cockpit approve ID` and `cockpit kill` at the same moment (a person at the cockpit, a
    script at the shell). The kill latches at once, so the approved order is stopped at the
    send, as it must be.

    Found: the approve still answered "approved" and exit 0, for an order that never went out;
    now the reply says the order was not sent, and why (exit 1)."""
    engine = await started(data_dir)
    try:
        core = engine.core
        assert core is not None
        aid = await request(engine)
        approved, killed = await asyncio.gather(
            engine.command("approve", {"id": aid}),
            engine.command("kill", {"level": "halt", "reason": "race"}),
        )
        assert killed["ok"], killed
        sent = [
            r.payload["order"]
            for r in read_rows(data_dir / JOURNAL_FILE, {"order"})
            if r.payload["order"]["intent_id"] == aid.removeprefix("ap-")
        ]
        if sent and sent[-1]["status"] == "rejected":  # the race as found: stopped at the send
            assert not approved["ok"], approved
            assert "not sent" in approved["message"], approved
        else:  # the kill came first and the approval was refused before any order
            assert not sent or sent[-1]["status"] != "filled", sent
        assert not any(o.intent_id == aid.removeprefix("ap-") for o in core.open_orders.values())
    finally:
        await engine.stop()


def _starts_info(journal: Path) -> dict[str, Any]:
    """The info of the last session start the journal records."""
    rows = [r.payload for r in read_rows(journal, {"session"})]
    return [p for p in rows if p.get("state") == "started"][-1]["info"]


async def test_a_start_without_the_anchor_says_so_on_the_record(killed: Path) -> None:
    """An older copy put back with its anchor moved away starts (that is how it is done on
    purpose), but the rows cut off its end can no longer be seen: the session's start says so
    in the journal and the headless line, so a copy restored by someone else is not silent.

    Found: nothing told a start without the anchor from any other."""
    journal = killed / JOURNAL_FILE
    anchor_path(journal).unlink()
    engine = Engine(scripted_config(killed), killed)
    await engine.start()
    await engine.stop()
    assert "was missing" in _starts_info(journal).get("anchor", ""), _starts_info(journal)
    again = Engine(scripted_config(killed), killed)  # the anchor is back: nothing to say
    await again.start()
    await again.stop()
    assert "anchor" not in _starts_info(journal), _starts_info(journal)


async def test_a_failing_clock_tick_never_stops_the_kill_file_watch(data_dir: Path) -> None:
    """The watch reads the KILL file and ticks the clock; a tick that raised (any bug in a
    duty it drives: limits' expiry, breakers, approvals) ended the whole watch silently.

    Found: after one failing tick no KILL file was ever read again while the engine traded
    on. Now the watch goes on, and the engine, not knowing what failed, sends nothing more."""
    from tests.test_kill_file import config, kill, until

    engine = Engine(config(data_dir), data_dir)
    await engine.start()
    await engine.process(list(itertools.islice(engine.source.events(), 200)))
    core = engine.core
    assert core is not None
    ahead: Any = core.now + NS_PER_SECOND
    engine.source.event_now = lambda: ahead  # type: ignore[method-assign]

    def broken(now: int) -> Any:
        raise RuntimeError("a duty of the tick failed")

    core.tick = broken  # type: ignore[method-assign]
    watcher = asyncio.create_task(engine.watch())
    try:
        await until(lambda: engine.blocked_reason, "the engine blocked")
        assert "clock tick failed" in engine.blocked_reason
        engine.kill_file.write_text("halt\n")
        await until(lambda: kill(engine).level == "halt", "the KILL file read after the failure")
    finally:
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await watcher
        await engine.stop()


@pytest.mark.parametrize(
    "price",
    [1e300, 9e14],  # beyond any amount; within it, but 10x the book on a held position
    ids=["absurd", "jump"],
)
async def test_a_quote_no_restart_would_take_never_reaches_the_marks(
    data_dir: Path, price: float
) -> None:
    """One corrupt tick in the live engine (a replayed file, a venue's bad print).

    Found: the live validator took any finite price: the position was marked at it, equity
    went to 1e301 (or 2e16), the marks were journaled, and the next start refused that
    journal as holding a number no engine writes. Now a quote above 1e15, or 10x off the last
    accepted quote of the symbol within a minute, is rejected as a backtest's bar is."""
    engine = Engine(fast_config(data_dir), data_dir)
    await engine.start()
    try:
        await engine.run(max_events=20_000)
        core = engine.core
        assert core is not None
        held = [s for s, p in core.portfolio.positions.items() if p.qty]
        assert held, "the demo holds a position by now"
        equity = core.portfolio.equity
        sym = held[0]
        q = core.quotes[sym]
        t = core.now + NS_PER_MS
        await engine.process([Quote(sym, price, price * 1.00001, 1.0, 1.0, t, t, q.venue)])
        assert core.quotes[sym] is q and core.portfolio.equity == equity
        assert sum(core.validator.rejected.values()) == 1
    finally:
        await engine.stop()
    again = Engine(fast_config(data_dir), data_dir)
    await again.start()
    await again.stop()
