"""Mutation review of the safety-critical code: tests that kill the mutants the suite let live.

157 hand-made mutants, one at a time, each run against the test files that cover its
module (``-x``), then reverted: engine/checks.py 50, safety.py 14, approvals.py 21 (+2 in
core.approve), breakers.py 19, runtime.py (write ahead, send gate, KILL file) 13, datadir.py 9,
journal.py 15, core.py (kill switch, send gate) 11, commands.py (release) 4.

- Killed by the existing tests: 108 (boundaries of every check, throttle, TTL, tolerance,
  hash chain, anchor, KILL-file parsing, restart of the safety state, loss-limit kill...).
- Survived but equivalent, left alone (10): checks 336 ``new_qty > 0`` and its ``>=`` (qty > 0
  and the REL_EPS slack decide first), 381 ``net * pos >= 0``, 383 the dust test, 479
  ``<= 0``; safety ``auto_kill_due`` ``<=`` (engage at the same rank is a no-op); approvals
  ``_next_expiry`` (fixed TTL, monotonic clock); datadir's lstat S_ISREG (the fstat after the
  non-blocking open checks the same); core ``reduces_exposure``'s first size test (subsumed);
  commands' override sources (the next quote's ``_end_override`` drops any not standing).
- Survived, not equivalent, killed now by a test below (37): the float-noise tolerance of
  ``_over``; a reduce-only flip judged as reducing; zero marks (own symbol, gross, cash);
  unvalidated limit price; stop rounding direction; HALTED by a breaker under an entries
  kill; flatten outside the flatten level; non-reducing protective/flatten at HALTED; a paused
  strategy's exits; loss limits exactly at the limit; limit price and terms in the approval
  hash; keep at entries (and not at halt); the approval re-check and its count; unknown clock
  drift; re-arm while the condition holds; the write-ahead flush; the send-time gate; early
  kills; fsync of the KILL file and its directory; synchronous=FULL; a journal moved away; a
  planted trigger; rows after a clean close; breakers on a kill's flatten; an entries kill
  letting entries out; flatten after release; a PENDING_NEW order set aside; a release typed
  for an earlier engagement.
- Survived, no test (2): ``reduces_exposure`` without ``qty <= |with_open|`` (no reachable
  order larger than the position net of its side's open orders found); the command audit row
  published without ``durable=True`` (every command path tried waits on another commit).

No mutant showed a hole in the code itself: each survivor was a missing test.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import stat
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import datadir
from engine.approvals import intent_hash
from engine.breakers import HALT_ENGINE
from engine.checks import (
    check_cash,
    check_gross_exposure,
    check_max_position,
    check_reduce_only,
    round_to_grid,
    run_checks,
)
from engine.commands import CommandResult, KillSeen, ReleaseArgs, execute
from engine.config import KillSwitchConfig
from engine.core import SubmitOrder
from engine.events import ApprovalDecided, IntentChecked
from engine.journal import Journal, JournalError, read_rows, row_hash, verify_journal
from engine.runtime import Engine
from engine.safety import SafetyController
from engine.types import (
    NS_PER_SECOND,
    Action,
    Order,
    OrderStatus,
    OrderType,
    Quote,
    Side,
    TimeInForce,
)
from engine.vocabulary import JOURNAL_FILE, KillLevel, TradingState
from tests import test_approvals as ap
from tests import test_breakers as brk
from tests import test_review_limits as lim
from tests.test_adversarial_shown_durable import trading_config
from tests.test_checks import LIMITS, SYM, assert_denied, assert_ok, make_ctx, make_intent

# ------------------------------------------------------------------------------ pre-trade checks


def test_reduce_only_whole_position_left_by_float_noise_passes() -> None:
    """Bought 0.7, sold 0.4: the position is 0.29999999999999993 in floats. Closing the 0.3 the
    trader sees with a reduce-only order passes (the "at the limit passes" tolerance); 0.30001
    (one lot over) is denied. Mutant: the tolerance dropped from ``_over``."""
    ctx = make_ctx(positions={SYM: 0.7 - 0.4})
    close = make_intent(qty=0.3, side=Side.SELL, reduce_only=True)
    assert_ok(check_reduce_only(close, ctx, LIMITS))
    adjusted, verdicts = run_checks(close, ctx, LIMITS)
    assert adjusted.qty == 0.3 and all(v.ok for v in verdicts), verdicts
    over = make_intent(qty=0.30001, side=Side.SELL, reduce_only=True)
    assert_denied(check_reduce_only(over, ctx, LIMITS), "REDUCE_ONLY_EXCEEDS_POSITION")


def test_reduce_only_flip_is_judged_as_a_new_position() -> None:
    """A reduce-only order that would flip the position is no "reduction" to the position check:
    long 0.3 (15,000, over a 10,000 cap lowered under it), selling 0.55 would leave short 0.25
    (12,500): denied MAX_POSITION. Selling the 0.3 passes. Mutant: ``_reduces`` without its
    sign condition (any smaller |after| counted as reducing)."""
    ctx = make_ctx(positions={SYM: 0.3})
    flip = make_intent(qty=0.55, side=Side.SELL, reduce_only=True)
    assert_denied(check_max_position(flip, ctx, LIMITS), "MAX_POSITION")
    close = make_intent(qty=0.3, side=Side.SELL, reduce_only=True)
    assert_ok(check_max_position(close, ctx, LIMITS))


def test_gross_exposure_denies_a_held_symbol_whose_mark_is_zero() -> None:
    """ETH held with a mark of 0 (a broken price): its exposure cannot be valued, so an order
    that adds gross exposure is denied NO_MARK instead of counting ETH as worth nothing.
    With a usable ETH mark the same order passes. Mutant: the mark's ``_good`` test dropped."""
    buy = make_intent(qty=0.1)
    bad = make_ctx(positions={"ETH/USDT": 10.0}, marks={SYM: 50_000.0, "ETH/USDT": 0.0})
    assert_denied(check_gross_exposure(buy, bad, LIMITS), "NO_MARK")
    good = make_ctx(positions={"ETH/USDT": 10.0}, marks={SYM: 50_000.0, "ETH/USDT": 3_000.0})
    assert_ok(check_gross_exposure(buy, good, LIMITS))


def test_position_check_never_values_the_symbol_at_a_zero_mark() -> None:
    """A mark of 0 for the symbol itself falls back to the quote's mid: buying 0.2 BTC
    (10,000 at 50,000) is at the 10,000 cap and passes, 0.21 is denied, as with a good mark.
    Mutant: ``_mark`` takes any mark that is not None (0.21 BTC valued at 0 passed)."""
    ctx = make_ctx(marks={SYM: 0.0})
    assert_ok(check_max_position(make_intent(qty=0.2), ctx, LIMITS))
    assert_denied(check_max_position(make_intent(qty=0.21), ctx, LIMITS), "MAX_POSITION")


def test_cash_denies_open_buys_in_a_symbol_whose_mark_is_zero() -> None:
    """Open buys in ETH whose mark is 0 (a broken price) cannot be reserved at their cost: a
    buy that needs cash is denied NO_MARK instead of spending the cash they hold. With a usable
    mark the same buy passes. Mutant: the open buys' mark taken without its ``_good`` test."""
    buy = make_intent(qty=0.1)
    books: dict[str, Any] = {
        "open_order_qty": {"ETH/USDT": 10.0},
        "open_buy_qty": {"ETH/USDT": 10.0},
    }
    books["open_sell_qty"] = {}
    bad = make_ctx(marks={SYM: 50_000.0, "ETH/USDT": 0.0}, **books)
    assert_denied(check_cash(buy, bad, LIMITS), "NO_MARK")
    good = make_ctx(marks={SYM: 50_000.0, "ETH/USDT": 3_000.0}, **books)
    assert_ok(check_cash(buy, good, LIMITS))


@pytest.mark.parametrize(("side", "trigger"), [(Side.SELL, 49_000.01), (Side.BUY, 50_999.99)])
def test_a_stop_trigger_is_rounded_toward_the_market(side: Side, trigger: float) -> None:
    """A venue-held stop's trigger off the tick is moved toward the market, so it fires no
    later than asked: a sell stop at 49,000.005 goes up to 49,000.01, a buy stop at 50,999.995
    down to 50,999.99. Mutant: the two directions swapped (a stop-loss that fires late)."""
    asked = trigger - 0.005 if side is Side.SELL else trigger + 0.005
    stop = replace(make_intent(qty=0.1, side=side), stop_price=asked)
    adjusted, verdict = round_to_grid(stop, make_ctx().instrument)
    assert verdict.ok and adjusted.stop_price == trigger, (adjusted, verdict)


# ------------------------------------------------------------------------ the safety controller


def _safety() -> SafetyController:
    return SafetyController(KillSwitchConfig(), ["s1"])


def test_a_breaker_halt_under_an_entries_kill_is_halted() -> None:
    """Kill switch at ``entries`` (REDUCING) and then a breaker halts the engine: HALTED, so a
    strategy's reducing order is refused too; once the breaker re-arms, REDUCING lets it out.
    Mutant: the trading state ignores breaker halts while the kill switch is engaged."""
    safety = _safety()
    safety.engage(KillLevel.ENTRIES, by="t", reason="r", source="command", ts=1)
    states = [safety.trading_state]
    assert safety.gate("s1", reducing=True, flatten=False) is None
    safety.set_breaker_halt("global", "5 consecutive losing trades", 2)
    states.append(safety.trading_state)
    assert states == [TradingState.REDUCING, TradingState.HALTED]
    why = safety.gate("s1", reducing=True, flatten=False)
    assert why is not None and "HALTED" in why
    safety.set_breaker_halt("global", None, 3)
    assert safety.trading_state is TradingState.REDUCING
    assert safety.gate("s1", reducing=True, flatten=False) is None


def test_halted_lets_out_only_reducing_flattens_at_flatten_and_reducing_exits() -> None:
    """HALTED by a kill at ``halt``: nothing goes out, a flatten-origin order included (only
    the ``flatten`` level flattens). At ``flatten``: the kill's flatten goes out if it reduces,
    never if it does not; a protective exit likewise. Mutants: the flatten exception without
    its level test; the HALTED exception without its "reducing" test."""
    safety = _safety()
    safety.engage(KillLevel.HALT, by="t", reason="r", source="command", ts=1)
    assert safety.gate("s1", reducing=True, flatten=True) is not None
    assert safety.gate("s1", reducing=True, flatten=False, protective=True) is None
    assert safety.gate("s1", reducing=False, flatten=False, protective=True) is not None
    safety.engage(KillLevel.FLATTEN, by="t", reason="r", source="command", ts=2)
    assert safety.gate("s1", reducing=True, flatten=True) is None
    assert safety.gate("s1", reducing=False, flatten=True) is not None
    assert safety.gate("s1", reducing=False, flatten=False, protective=True) is not None


def test_a_paused_strategy_sends_not_even_its_own_exits() -> None:
    """A paused strategy's own reducing order is refused (its pause is what a person asked);
    the person's order and the engine's protective exit still go out. Mutant: a pause that
    lets the strategy's reducing orders through."""
    safety = _safety()
    safety.pause("s1", by="t", reason="looking at it", ts=1)
    why = safety.gate("s1", reducing=True, flatten=False)
    assert why is not None and "paused" in why
    assert safety.gate("s1", reducing=True, flatten=False, operator=True) is None
    assert safety.gate("s1", reducing=True, flatten=False, protective=True) is None
    safety.resume("s1", by="t", reason="ok", ts=2)
    assert safety.gate("s1", reducing=True, flatten=False) is None


@pytest.mark.parametrize(
    ("equity", "day_start", "peak", "sources"),
    [
        (95_000.0, 100_000.0, 100_000.0, {"daily_loss"}),  # exactly 5 %: engages
        (95_000.01, 100_000.0, 100_000.0, set()),  # a cent inside
        (85_000.0, 89_000.0, 100_000.0, {"drawdown"}),  # exactly 15 % from the peak
        (85_000.01, 89_000.0, 100_000.0, set()),
        (85_000.0, 100_000.0, 100_000.0, {"daily_loss", "drawdown"}),
        (0.1 * 3 * 95_000.0 / 0.3, 100_000.0, 100_000.0, {"daily_loss"}),  # float noise
    ],
)
def test_loss_limits_reached_exactly_at_the_limit_alike_in_both_questions(
    equity: float, day_start: float, peak: float, sources: set[str]
) -> None:
    """The per-quote question (``loss_sources``, asked while an override stands) and the breach
    report (``loss_breaches``) agree, and a loss exactly at its limit has reached it: a daily
    loss of 5 % of 100,000 engages, 94,999.99 lost less does not. Mutants: either question
    made strict (an override a person gave ended, and the switch engaged again, at the limit)."""
    safety = _safety()
    assert set(safety.loss_sources(equity, day_start, peak)) == sources
    assert {s for s, _ in safety.loss_breaches(equity, day_start, peak)} == sources


@given(
    equity=st.floats(0.0, 2e6),
    day_start=st.floats(0.0, 2e6),
    peak=st.floats(0.0, 2e6),
)
def test_loss_sources_and_breaches_never_disagree(
    equity: float, day_start: float, peak: float
) -> None:
    safety = _safety()
    assert set(safety.loss_sources(equity, day_start, peak)) == {
        s for s, _ in safety.loss_breaches(equity, day_start, peak)
    }


# ------------------------------------------------------------------------------ the approval gate


def test_the_approved_hash_covers_a_limit_order_s_price_and_terms() -> None:
    """What a person approves is the order as it will be sent: a limit order's price, its
    post-only flag, time in force, time to live and a stop's trigger each change the hash
    (an approval bound to one cannot pass for another). The reference price does not.
    Mutants: the limit price, or a limit's terms, left out of ``intent_hash``."""
    base = ap.make_intent()
    limit = replace(base, order_type=OrderType.LIMIT, limit_price=99.5)
    assert intent_hash(limit) != intent_hash(base)
    assert intent_hash(replace(limit, limit_price=99.51)) != intent_hash(limit)
    for changed in (
        replace(limit, post_only=True),
        replace(limit, tif=TimeInForce.IOC),
        replace(limit, ttl_ns=60 * NS_PER_SECOND),
        replace(limit, stop_price=95.0),
    ):
        assert intent_hash(changed) != intent_hash(limit), changed
    assert intent_hash(replace(limit, ref_price=101.0)) == intent_hash(limit)


def test_an_entries_kill_keeps_the_pending_exits_a_person_may_still_approve() -> None:
    """``cancel_all`` with ``keep`` (the kill switch at ``entries``) rejects the entries and
    leaves the exits pending, approvable. Mutant: ``keep`` ignored (every request rejected,
    the trader's exit with them)."""
    gate = ap.make_gate()
    entry = ap.queue(gate, 1)
    exit_ = ap.queue(gate, 2, strategy="rsi", side=Side.SELL)
    out = gate.cancel_all(
        ap.T0 + 1, "kill switch (entries)", "alice", keep=lambda i: i.side is Side.SELL
    )
    assert [(o.approval_id, o.status) for o in out] == [(entry.approval_id, "rejected")]
    assert [p.approval_id for p in gate.pending()] == [exit_.approval_id]
    assert gate.approve(exit_.approval_id, ap.T0 + 2, ap.REF, by="alice").status == "approved"


def test_an_approval_the_checks_deny_at_approval_is_a_rejection_and_sends_nothing() -> None:
    """A request queued within the limits, approved after the max order notional was lowered
    under it: the checks are run again at approval, deny it, nothing reaches the venue, and the
    strategy's approved count (which unlocks ``auto``) does not grow. At the limit exactly, the
    approval sends the order. Mutants: the approved intent submitted without the checks; the
    count not moved to "rejected" when the checks deny it."""
    fleet: list[Any] = [("c", lim.X, "approve", {"model": "fixed_qty", "qty": 40.0}, None)]
    d = lim.Driver(*lim.make_core(fleet, {"max_order_notional": 10_000.0}, 100_000.0), 100_000.0)
    core = d.core
    d.quote(lim.X, 100.0)
    for below, sent in ((0.0, True), (0.01, False)):
        d.say("c", Action.BUY)
        d.quote(lim.X, 100.0)
        (pending,) = core.approvals.pending()
        # At approval the mid is 100: the order's notional is its quantity x 100 (sizing keeps
        # the second request within the limit the first set, so it is smaller than 40).
        notional = pending.intent.qty * 100.0
        lim.set_limit(d, "max_order_notional", notional - below)
        held = core.portfolio.positions[lim.X].qty if lim.X in core.portfolio.positions else 0.0
        d.handle(core.approve(pending.approval_id, by="alice"))
        d.quote(lim.X, 100.0)  # the paper venue fills a market order on the next quote
        now = core.portfolio.positions[lim.X].qty if lim.X in core.portfolio.positions else 0.0
        assert now - held == (pending.intent.qty if sent else 0.0), notional
    counts = core.approvals.counters()["c"]
    assert (counts["approved"], counts["rejected"]) == (1, 1), counts
    decided = [e.outcome for e in d.events if type(e) is ApprovalDecided]
    assert decided[-1]["status"] == "rejected" and decided[-1]["after_checks"] is True


# ------------------------------------------------------------------------ the circuit breakers


def test_an_unknown_clock_drift_halts_the_engine() -> None:
    """A drift that is not a number (a broken measurement) counts as beyond the halt limit:
    unknown state, no new orders. A finite drift just under the warn level trips nothing.
    Mutant: a non-finite drift read as 0 ms."""
    bb = brk.board()
    assert bb.on_clock_drift(99.0, brk.T0) == []
    for bad in (math.nan, math.inf, -math.inf):
        bb = brk.board()
        trip = brk.one(bb.on_clock_drift(bad, brk.T0))
        assert (trip.breaker, trip.action) == ("clock_drift", HALT_ENGINE), bad
        assert "clock_drift" in (bb.blocked("a", "BTC/USDT") or "")


def test_a_person_cannot_rearm_a_breaker_whose_condition_still_holds() -> None:
    """A stale feed with still no fresh quote, a clock drift still at the warn level: a
    person's re-arm is refused (it re-arms by itself once the condition clears) and the
    symbol or engine stays blocked. Once the condition clears, it re-arms. Mutant: ``rearm``
    without the ``still_holds`` test (a re-arm let orders out on a feed known stale)."""
    bb = brk.board()
    bb.on_quote("BTC/USDT", brk.T0)
    brk.one(bb.on_clock(brk.T0 + 10 * brk.S))
    assert bb.rearm("stale_feed", "symbol:BTC/USDT", "alice", brk.T0 + 11 * brk.S) == []
    assert bb.blocked("a", "BTC/USDT") is not None
    bb = brk.board()
    brk.one(bb.on_clock_drift(600.0, brk.T0))
    assert bb.rearm("clock_drift", "global", "alice", brk.T0 + 1) == []
    assert bb.blocked("a", "BTC/USDT") is not None
    assert bb.on_clock_drift(100.0, brk.T0 + 2) == []  # at the warn level: still held
    assert bb.rearm("clock_drift", "global", "alice", brk.T0 + 3) == []
    assert brk.one(bb.on_clock_drift(99.0, brk.T0 + 4)).tripped is False
    assert bb.blocked("a", "BTC/USDT") is None


# --------------------------------------------------------------------- write ahead, kill switch


async def test_every_order_is_in_the_journal_on_disk_before_the_broker_sees_it(
    data_dir: Path,
) -> None:
    """Write ahead: when the broker is handed an order, its intent row (with its client order
    id) is already committed, as a second reader of the file sees it (what a restart after a
    kill -9 at that moment reads, to never send it twice). Mutant: ``_submit`` without its
    journal flush (the order went out with its row still queued in memory)."""
    engine = Engine(trading_config(data_dir), data_dir)
    await engine.start()
    sent: list[str] = []
    unrecorded: list[str] = []
    submit = engine.execution.submit

    async def looking(order: Order, now: int) -> list[Any]:
        sent.append(order.client_order_id)
        rows = read_rows(data_dir / JOURNAL_FILE, {"intent"})
        if not any(r.payload["intent"]["intent_id"] == order.client_order_id for r in rows):
            unrecorded.append(order.client_order_id)
        return await submit(order, now)

    engine.execution.submit = looking  # type: ignore[method-assign]
    try:
        await engine.run(max_events=3_000)
    finally:
        await engine.stop()
    assert len(sent) >= 5, "the run should trade (the test needs orders to look at)"
    assert unrecorded == [], f"{len(unrecorded)} of {len(sent)} orders sent before their row"


async def test_a_kill_latched_while_the_order_row_commits_stops_the_order(
    data_dir: Path,
) -> None:
    """The kill switch latches while an order's intent row is being committed (a person's kill
    arriving during the write-ahead flush): the order was checked before, but the send-time
    gate asks again, so it is never handed to the broker. Mutant: ``_submit`` without the
    send-time ``refused_at_send``."""
    engine = Engine(trading_config(data_dir), data_dir)
    await engine.start()
    journal, core = engine.journal, engine.core
    assert journal is not None and core is not None
    flush = journal.flush
    latched: list[int] = []
    after_kill: list[str] = []

    async def flush_with_a_kill() -> None:
        if not latched and sys._getframe(1).f_code.co_name == "_submit":
            core.kill(KillLevel.HALT, by="alice", reason="test", source="command")
            latched.append(core.now)
        await flush()

    submit = engine.execution.submit

    async def looking(order: Order, now: int) -> list[Any]:
        if latched:
            after_kill.append(order.client_order_id)
        return await submit(order, now)

    journal.flush = flush_with_a_kill  # type: ignore[method-assign]
    engine.execution.submit = looking  # type: ignore[method-assign]
    try:
        await engine.run(max_events=3_000)
    finally:
        await engine.stop()
    assert latched, "the run should have sent an order (the test needs one to stop)"
    assert after_kill == [], f"sent after the kill latched: {after_kill}"


@pytest.mark.parametrize(
    "levels", [(KillLevel.HALT, KillLevel.FLATTEN), (KillLevel.FLATTEN, KillLevel.HALT)]
)
async def test_kills_before_the_start_keep_the_highest_level(
    data_dir: Path, levels: tuple[str, str]
) -> None:
    """Two kills arrive while the engine is starting (SIGUSR1s asking ``halt`` and ``flatten``,
    in either order): the highest is engaged once the state is restored; a lower one never
    replaces it, a higher one always does. Mutant: only the first early kill kept."""
    engine = Engine(trading_config(data_dir), data_dir)
    for n, level in enumerate(levels):
        await engine.engage_kill(level, by="signal", reason=f"signal {n}", source="signal")
    await engine.start()
    try:
        assert engine.core is not None
        kill = engine.core.safety.kill
        first = levels.index(KillLevel.FLATTEN)
        assert (kill.level, kill.reason) == (KillLevel.FLATTEN, f"signal {first}")
    finally:
        await engine.stop()


def test_the_kill_file_is_fsynced_with_its_directory(tmp_path: Path, monkeypatch: Any) -> None:
    """The KILL file that keeps a kill across a restart is written durably: the file and then
    its directory are fsynced (a power cut after the reply must not lose it). Mutants: either
    fsync of ``write_durably`` skipped."""
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(datadir.os, "fsync", fsync)
    held, _ = datadir.raise_kill_file(tmp_path / "KILL", KillLevel.FLATTEN)
    assert held and datadir.read_kill_level(tmp_path / "KILL") == KillLevel.FLATTEN
    assert synced == ["file", "dir"]


async def test_the_journal_commits_with_synchronous_full(tmp_path: Path) -> None:
    """Every commit is on disk when it returns (``synchronous=FULL``, 2): with NORMAL a power
    cut could lose a committed intent row after its order was sent. Mutant: NORMAL."""
    journal = await Journal.open(tmp_path / JOURNAL_FILE)
    try:
        async with journal._conn.execute("PRAGMA synchronous") as cur:
            row = await cur.fetchone()
        assert row is not None and row[0] == 2
    finally:
        await journal.close()


# ---------------------------------------------------------------------------------- the journal


async def test_a_journal_moved_away_while_writing_fails_before_any_commit_reads_durable(
    tmp_path: Path,
) -> None:
    """The journal file is removed (or replaced) under a running engine: the rows it commits
    from then on would be lost at the next start, so the next flush fails (no order waits on
    it as durable) and the journal latches failed. Before the move, a flush succeeds.
    Mutant: the writer's ``_file_gone`` answer ignored."""
    path = tmp_path / JOURNAL_FILE
    journal = await Journal.open(path)
    try:
        journal.append("note", 1, {"n": 1})
        await journal.flush()
        path.rename(tmp_path / "moved.sqlite")
        journal.append("note", 2, {"n": 2})
        with pytest.raises(JournalError, match="removed"):
            await journal.flush()
        assert journal.failed is not None
    finally:
        with contextlib.suppress(JournalError):
            await journal.close()


async def test_verify_refuses_a_journal_with_a_planted_trigger(tmp_path: Path) -> None:
    """A trigger in the journal's file would rewrite every row the engine writes while each
    commit reads as durable: ``verify`` reports it, though every row's hash checks out.
    Mutant: the ``_planted`` look skipped."""
    path = tmp_path / JOURNAL_FILE
    journal = await Journal.open(path)
    journal.append("note", 1, {"n": 1})
    await journal.close()
    assert verify_journal(path).ok
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TRIGGER quiet AFTER INSERT ON journal BEGIN SELECT 1; END")
        conn.commit()
    report = verify_journal(path)
    assert not report.ok and "trigger" in report.problem, report


# ------------------------------------------------------------------- the kill switch in the core


def _long_x(qty: float = 10.0) -> Any:
    """A core with strategy ``a`` (auto) long ``qty`` X at 100, through the paper broker."""
    fleet: list[Any] = [("a", lim.X, "auto", {"model": "fixed_qty", "qty": qty}, None)]
    risk = {"max_position_fraction": 1.0, "max_gross_exposure_fraction": 1.0}
    d = lim.Driver(*lim.make_core(fleet, risk, 100_000.0), 100_000.0)
    d.quote(lim.X, 100.0)
    d.say("a", Action.BUY)
    d.quote(lim.X, 100.0)
    d.quote(lim.X, 100.0)
    assert d.core.portfolio.positions[lim.X].qty == qty
    return d


def _checked(d: Any, since: int) -> list[IntentChecked]:
    return [e for e in d.events[since:] if type(e) is IntentChecked]


def test_an_entries_kill_denies_a_strategy_entry_and_lets_its_exit_out() -> None:
    """Kill switch at ``entries`` (REDUCING): the strategy's buy that adds to its long is
    denied REDUCING_ONLY, its sell of the position goes out. Mutant: in REDUCING every order
    taken for reducing (the entry went out under the kill)."""
    d = _long_x()
    d.handle(d.core.kill(KillLevel.ENTRIES, by="alice", reason="t", source="command"))
    n = len(d.events)
    d.say("a", Action.BUY)
    d.quote(lim.X, 100.0)
    (entry,) = _checked(d, n)
    assert entry.outcome == "denied" and "REDUCING_ONLY" in entry.denied_codes, entry
    n = len(d.events)
    d.say("a", Action.SELL)
    d.quote(lim.X, 100.0)
    (exit_,) = _checked(d, n)
    assert exit_.outcome == "submitted", exit_


def test_a_kill_flatten_goes_out_while_a_breaker_halts_the_engine() -> None:
    """A breaker halted the engine (a clock drift at the halt limit) and a person then kills
    at ``flatten``: the flatten closes the position anyway (breakers judge strategies' orders,
    never the kill switch's). Mutant: the breakers' verdict applied to every origin."""
    d = _long_x()
    core = d.core
    d.handle(core.apply_breakers(core.breakers.on_clock_drift(10_000.0, core.now)))
    assert core.safety.trading_state is TradingState.HALTED
    n = len(d.events)
    d.handle(core.kill(KillLevel.FLATTEN, by="alice", reason="t", source="command"))
    (flatten,) = _checked(d, n)
    assert flatten.outcome == "submitted", flatten
    d.quote(lim.X, 100.0)
    assert core.portfolio.positions[lim.X].qty == 0.0


def test_a_released_kill_does_not_flatten_on_the_next_quote() -> None:
    """A kill at ``flatten`` on a stale quote cannot price its close (denied, due again on the
    next quote); the person releases the switch before that quote: the quote then flattens
    nothing, the position stays. Mutant: ``_flatten_again`` without its level test."""
    d = _long_x()
    core = d.core
    d.ts += 60 * NS_PER_SECOND
    d.handle(core.tick(d.ts))  # the quote is a minute old
    n = len(d.events)
    d.handle(core.kill(KillLevel.FLATTEN, by="alice", reason="t", source="command"))
    (flatten,) = _checked(d, n)
    assert flatten.outcome == "denied", flatten
    core.safety.release(by="alice", reason="ok", ts=core.now)
    n = len(d.events)
    d.quote(lim.X, 100.0)
    d.quote(lim.X, 100.0)
    assert [c for c in _checked(d, n) if c.intent.origin == "flatten"] == []
    assert core.portfolio.positions[lim.X].qty == 10.0


def test_a_release_for_an_earlier_engagement_of_the_same_kill_is_refused() -> None:
    """A person read the kill switch (halt, by alice, "t") and released it; alice engaged it
    again, same level and reason, a second later. The release the person typed for the first
    engagement is refused for the second (it names a moment that is gone); for the one
    engaged now it goes through. Mutant: the engagement's time left out of the comparison."""
    d = _long_x()
    core = d.core
    d.handle(core.kill(KillLevel.HALT, by="alice", reason="t", source="command"))
    first = core.safety.kill
    seen = KillSeen(level=first.level, by=first.by, reason=first.reason, ts=first.ts)
    core.safety.release(by="alice", reason="ok", ts=core.now)
    d.quote(lim.X, 100.0)
    d.handle(core.kill(KillLevel.HALT, by="alice", reason="t", source="command"))
    assert core.safety.kill.ts > seen.ts

    def release(seen: KillSeen) -> CommandResult:
        args = ReleaseArgs(reason="ok", confirm="RELEASE", seen=seen)
        return execute(core, "release", args, by="bob", client="")

    refused = release(seen)
    assert not refused.ok and "changed since you looked" in refused.message
    assert core.safety.kill.engaged
    now = core.safety.kill
    assert release(KillSeen(level=now.level, by=now.by, reason=now.reason, ts=now.ts)).ok
    assert not core.safety.kill.engaged


@pytest.mark.parametrize(("level", "kept"), [(KillLevel.ENTRIES, True), (KillLevel.HALT, False)])
def test_a_halt_rejects_the_pending_exit_an_entries_kill_keeps(level: str, kept: bool) -> None:
    """A strategy in approve mode holds a long and asks to sell it (pending). A kill at
    ``entries`` keeps that exit pending (a person may still approve it); at ``halt`` nothing
    may go out, so it is rejected on the record. Mutant: the entries-level ``keep`` applied
    at every level."""
    fleet: list[Any] = [("c", lim.X, "approve", {"model": "fixed_qty", "qty": 10.0}, None)]
    risk = {"max_position_fraction": 1.0, "max_gross_exposure_fraction": 1.0}
    d = lim.Driver(*lim.make_core(fleet, risk, 100_000.0), 100_000.0)
    core = d.core
    d.quote(lim.X, 100.0)
    d.say("c", Action.BUY)
    d.quote(lim.X, 100.0)
    (entry,) = core.approvals.pending()
    d.handle(core.approve(entry.approval_id, by="alice"))
    d.quote(lim.X, 100.0)
    assert core.portfolio.positions[lim.X].qty == 10.0
    d.say("c", Action.SELL)
    d.quote(lim.X, 100.0)
    (exit_,) = core.approvals.pending()
    d.handle(core.kill(level, by="alice", reason="t", source="command"))
    assert [p.approval_id for p in core.approvals.pending()] == (
        [exit_.approval_id] if kept else []
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, 0.0, -1.0])
def test_a_limit_price_that_is_not_a_positive_number_is_denied_not_raised(bad: float) -> None:
    """A strategy's limit price of NaN, infinity, 0 or below: the grid denies it INVALID_PRICE
    (one verdict in the trace), never raises out of the checks. Mutant: only the reference
    price validated (a NaN limit raised ValueError from the rounding)."""
    intent = make_intent(qty=0.1, limit=bad)
    _, verdicts = run_checks(intent, make_ctx(), LIMITS)
    assert_denied(verdicts[0], "INVALID_PRICE")


async def test_rows_added_after_a_clean_close_are_found(tmp_path: Path) -> None:
    """A journal closed cleanly notes its last row as the last: a row added at the end by hand,
    with its hash chained right, is reported by ``verify``. Mutant: the clean close's note not
    looked at."""
    path = tmp_path / JOURNAL_FILE
    journal = await Journal.open(path)
    journal.append("note", 1, {"n": 1})
    await journal.close()
    assert verify_journal(path).ok
    with contextlib.closing(sqlite3.connect(path)) as conn:
        seq, prev = conn.execute("SELECT seq, hash FROM journal ORDER BY seq DESC").fetchone()
        payload = '{"n":2}'
        digest = row_hash(seq + 1, 2, "note", payload, prev)
        conn.execute(
            "INSERT INTO journal (seq, ts, kind, payload, prev_hash, hash) VALUES (?,?,?,?,?,?)",
            (seq + 1, 2, "note", payload, prev, digest),
        )
        conn.commit()
    report = verify_journal(path)
    assert not report.ok and report.first_bad_seq == seq + 1, report


def test_a_kill_flatten_does_not_sell_again_behind_an_exit_whose_send_is_unknown() -> None:
    """The strategy's exit (sell 10, the whole long) was handed to the venue and no answer
    came yet (PENDING_NEW: it may have filled). A kill at ``flatten`` then cancels it, but
    cannot take back a fill: the flatten sends nothing on top of it (it is due again once the
    exit settles), so the position is never sold twice. Mutant: ``_set_aside`` setting aside
    a PENDING_NEW order like the others (a second sell of 10 went out)."""
    d = _long_x()
    core = d.core
    d.say("a", Action.SELL)
    d.ts += 500 * 1_000_000
    out = core.on_quote(Quote(lim.X, 99.95, 100.05, 5.0, 5.0, d.ts, d.ts)) or []
    (exit_,) = [it for it in out if type(it) is SubmitOrder]  # not handed on: no answer yet
    assert exit_.intent.side is Side.SELL and exit_.intent.qty == 10.0
    assert core.open_orders[exit_.order.client_order_id].status is OrderStatus.PENDING_NEW
    kill = core.kill(KillLevel.FLATTEN, by="alice", reason="t", source="command")
    assert [it for it in kill if type(it) is SubmitOrder] == []
