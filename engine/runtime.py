"""The async shell around the core: feed, journal, broker, restore, and event fan-out.

The core decides; this module does the I/O in the order the design requires: an order intent is
committed to the journal before the broker sees it, and when the journal cannot write, no order
is sent at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from engine.alerts import build_dispatcher
from engine.approvals import expired_at_restart
from engine.audit_log import AuditLog
from engine.bookshot import encode_book, missing_book
from engine.commands import (
    RUNTIME_COMMANDS,
    CommandError,
    CommandResult,
    execute,
    mended_text,
    parse_command,
)
from engine.config import Config
from engine.core import CancelOrder, EngineCore, SubmitOrder
from engine.datadir import (
    JOURNAL_FILE,
    DataDirInUse,
    DataDirLock,
    raise_kill_file,
    read_kill_level,
)
from engine.events import (
    ApprovalDecided,
    DecisionMade,
    EngineBlocked,
    EngineEvent,
    FillReceived,
    IntentChecked,
    OperatorActed,
    SafetyChanged,
    SessionChanged,
)
from engine.execution import Execution, build_execution
from engine.fanout import AfterCommit, EventFanout
from engine.journal import Journal, JournalError, anchor_path
from engine.marketdata.recording import attach_recorder
from engine.modes import JournalOfAnotherSetup, journal_binding_problem
from engine.performance import LatencyTracker
from engine.portfolio import Portfolio
from engine.restore import RestoredState, restore_state
from engine.sources import MarketSource, build_source
from engine.strategies.registry import build_strategies
from engine.types import (
    NS_PER_SECOND,
    Bar,
    DepthUpdate,
    Instrument,
    Order,
    OrderIntent,
    OrderStatus,
    OrderUpdate,
    Quote,
)
from engine.views import blocked_state, build_snapshot, build_summary
from engine.vocabulary import (
    SAFETY_KINDS,
    EventKind,
    IntentOrigin,
    IntentOutcome,
    KillLevel,
    Snapshot,
    TradingState,
    kill_at_least,
    milder_kill,
    valid_text,
)
from engine.watchdog import StrategyWatchdog, unwatch, watch

if TYPE_CHECKING:
    from engine.heartbeat import HeartbeatStatus


def os_user() -> str:
    """Who is at the keyboard, for the audit log (never a secret)."""
    try:
        return getpass.getuser()
    except Exception:
        return f"uid{os.getuid()}"


REFUSED_ARGS_KEPT = 16  # arguments of a refused command the audit row keeps
REFUSED_TEXT_KEPT = 500  # characters of each (a reason's own limit)


def _clip(text: str, limit: int) -> str:
    text = mended_text(text)  # the journal holds UTF-8 only: a lone surrogate as its escape
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _refused_args(args: Any) -> dict[str, Any]:
    """What the audit row keeps of a refused command's arguments: whatever a client sent, in a
    bounded form the journal can hold (strings clipped, other values by their type name)."""
    if not isinstance(args, dict):
        return {"(arguments)": type(args).__name__}
    kept: dict[str, Any] = {}
    for key, value in list(args.items())[:REFUSED_ARGS_KEPT]:
        name = _clip(str(key), 64)
        if isinstance(value, str):
            kept[name] = _clip(value, REFUSED_TEXT_KEPT)
        elif isinstance(value, float) and not math.isfinite(value):
            kept[name] = str(value)  # no journal row holds a number that is not a number
        elif isinstance(value, int) and not -(2**63) <= value < 2**63:
            kept[name] = _clip(str(value), REFUSED_TEXT_KEPT)  # nor one SQLite cannot hold
        elif value is None or isinstance(value, bool | int | float):
            kept[name] = value
        else:
            kept[name] = f"({type(value).__name__})"
    return kept


# Uncommitted journal rows at which the feed waits for the disk (a small group commit).
MAX_JOURNAL_BACKLOG = 2_000
# A new peak equity more than this fraction above the one the last marks row holds is recorded
# at once (a marks row at the end of the batch), not at the next periodic row up to a minute
# later: a kill -9 in between lowered the peak the drawdown limit is measured from by up to a
# minute's rise. At 1e-4 a restart can lose at most 0.01% of the peak, for at most one row per
# 0.01% of new high (about 7,000 rows for an equity that doubles).
PEAK_RECORD_STEP = 1e-4


class StartStopped(Exception):
    """A stop was asked (SIGTERM, Ctrl-C, the cockpit closing) before the engine had started."""


class Companion(Protocol):
    """A duty that runs beside the engine for as long as :meth:`Engine.run` runs (alert
    delivery, the outbound heartbeat, the metrics endpoint). It watches; it never trades. It is
    cancelled when the run ends and must finish promptly (a bounded final flush at most)."""

    async def run(self, engine: Engine) -> None: ...


class Engine:
    """One engine: a market-data source, the core, an execution (where orders go) and the
    journal, run as asyncio tasks. The source and the execution are chosen by config (see
    :mod:`engine.sources`, :mod:`engine.execution`); the order path is this class's alone.

    The keyword options go to the venue parts (tests point them at loopback servers):
    ``broker_kwargs``, ``prepare`` and ``poll_s`` to the venue execution, ``feed_kwargs`` and
    ``prepare_exchange`` to the venue source. A misspelled one is a TypeError, not ignored.
    """

    def __init__(
        self,
        cfg: Config,
        data_dir: str | Path | None = None,
        *,
        emit: Callable[[EngineEvent], None] | None = None,
        broker_kwargs: dict[str, Any] | None = None,
        prepare: Callable[[Any], None] | None = None,
        poll_s: float | None = None,
        feed_kwargs: dict[str, Any] | None = None,
        prepare_exchange: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.data_dir = Path(data_dir if data_dir is not None else cfg.engine.data_dir)
        self.fanout = EventFanout(emit)
        self.journal: Journal | None = None
        self.core: EngineCore | None = None
        self.source: MarketSource = build_source(
            cfg, feed_kwargs=feed_kwargs, prepare_exchange=prepare_exchange
        )
        self.execution: Execution = build_execution(
            cfg, broker_kwargs=broker_kwargs, prepare=prepare, poll_s=poll_s
        )
        self.execution.attach(self)
        self.restored = RestoredState()
        self._stop = asyncio.Event()
        # Why the engine stopped, for the session-stopped row (an operator reading the journal
        # or the JSON lines after the fact): who asked, the run's time up, the data ended.
        self._stop_why = ""
        self._stopped_why = ""
        self.blocked_reason = ""
        self.quotes_processed = 0
        # Wall-clock moments of each order's steps (quote batch in, decision, intent durable,
        # acknowledged, filled): the cockpit's latency view.
        self.latency = LatencyTracker()
        # The newest operator actions (the cockpit's Audit view), kept from the shown events.
        self.audit = AuditLog()
        self.fanout.watchers.append(self.audit.observe)
        self._batch_ns = 0  # when the market batch being processed reached the engine; 0: none
        self.started_wall = 0.0
        self._history: list[Bar] = []
        self.command_lock = asyncio.Lock()
        self.sending: dict[str, OrderIntent] = {}  # see EngineHost.sending
        # While a command's orders go out: the ones a broker refused unsent (a kill latched
        # while one waited for its request token, the venue's refusal), by client order id.
        self._refused_sends: dict[str, str] | None = None
        # One engine per data directory: held from before the journal is read until stop().
        self.data_dir_lock = DataDirLock(self.data_dir)
        self.blocked_ts = 0
        # The kill level the journal last recorded durably; a higher one that the journal
        # could not record is kept in the KILL file instead (see _hold_kill_in_file).
        self._durable_kill: str | None = None
        # Kill-switch events the failed journal could not record: shown (and so announced by
        # the alerts) once the KILL file holds the kill durably instead.
        self._unrecorded_kills: list[SafetyChanged] = []
        # A kill from outside (SIGUSR1) that came while the engine was starting, before its
        # state was restored and its journal open: engaged as soon as they are (None: none).
        self._early_kill: tuple[str, str, str, str] | None = None
        self._watchdog: StrategyWatchdog | None = None  # interrupts a strategy that hangs
        self._ready = False  # the state is restored and the journal open: a kill can hold
        self._closing = False  # stop() began: a kill from outside goes to the KILL file
        # Duties that run beside the engine while it runs (see Companion); added before run().
        self.companions: list[Companion] = []
        # The outbound heartbeat's state when one runs (engine.heartbeat.attach_watch).
        self.heartbeat: HeartbeatStatus | None = None
        # Alerts to a phone, a chat or a program ([alerts]; None without): a watcher of the
        # shown events and a companion that delivers them (ConfigError if it cannot be built).
        self.alerts = build_dispatcher(cfg, str(self.data_dir)) if cfg.alerts else None
        if self.alerts is not None:
            self.fanout.watchers.append(self.alerts.observe)
            self.companions.append(self.alerts)
        # Raw market data recording ([record] enabled): fed by the venue feeds, run beside.
        self.recorder = attach_recorder(self)
        # The latest L2 book of each symbol (from the source's DepthUpdates), kept with each
        # acting decision (engine.bookshot); how many acting decisions had one and had none.
        self.books: dict[str, DepthUpdate] = {}
        # A book waits here for the quote it came with: it reaches the broker and the decision
        # record only once that quote passed the validator (a rejected quote's book is dropped).
        self._depth_held: dict[str, DepthUpdate] = {}
        self.book_levels = cfg.record.decision_book_levels
        self.book_snapshots = {"taken": 0, "missing": 0}

    # What is shown (seq, the recent buffer, the emit sink) is the fan-out's; see engine.fanout.
    @property
    def seq(self) -> int:
        return self.fanout.seq

    @seq.setter
    def seq(self, value: int) -> None:
        self.fanout.seq = value

    @property
    def recent(self) -> deque[dict[str, Any]]:
        return self.fanout.recent

    @recent.setter
    def recent(self, value: deque[dict[str, Any]]) -> None:
        self.fanout.recent = value

    @property
    def emit(self) -> Callable[[EngineEvent], None] | None:
        return self.fanout.emit

    @emit.setter
    def emit(self, value: Callable[[EngineEvent], None] | None) -> None:
        self.fanout.emit = value

    @property
    def events_dropped(self) -> int:
        return self.fanout.events_dropped

    @property
    def journal_path(self) -> Path:
        return self.data_dir / JOURNAL_FILE

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Take the data directory, then restore from the journal, build the pipeline and
        record the session start. A start that fails before the journal is open lets the
        directory go again (DataDirInUse and a broken journal leave nothing held)."""
        self.data_dir_lock.acquire()  # before the journal is read: DataDirInUse if taken
        try:
            await self._start()
        except BaseException:
            if self.journal is None:
                self.data_dir_lock.release()
            raise

    async def _start(self) -> None:
        cfg = self.cfg
        # The submits the order throttle may still count (its longest window back from the
        # journal's last row; the restart's clock is at or after it).
        windows = (cfg.risk.strategy_throttle.per_seconds, cfg.risk.global_throttle.per_seconds)
        self.restored = restored = restore_state(
            self.journal_path, throttle_ns=round(max(windows) * NS_PER_SECOND)
        )
        self.audit.seed(self.journal_path)  # the chain was verified by restore_state
        # Before any venue is opened: a journal of another mode or venue is not this one's.
        bound = journal_binding_problem(cfg, restored)
        if bound:
            raise JournalOfAnotherSetup(f"{bound} ({self.data_dir})")
        session = restored.session + 1
        starting_cash = (
            restored.starting_cash
            if restored.starting_cash is not None
            else cfg.portfolio.starting_cash
        )
        execution, source = self.execution, self.source
        # A stop asked while the venues are opening ends the start at once: a venue that does
        # not answer held a SIGTERM or Ctrl-C for its whole request timeout (10 s a venue),
        # then ended in "venue error". Nothing is recorded yet: the journal opens after this.
        opening = asyncio.ensure_future(self._open_market(restored))
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            try:
                await asyncio.wait((opening, stopped), return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
                if not opening.done():
                    opening.cancel()
                    # wait() rather than await: the opening's own end is not ours to raise,
                    # and a cancellation of this start meanwhile still propagates.
                    await asyncio.wait([opening])
            if opening.cancelled():
                raise StartStopped(
                    "stopped while the venues were opening: nothing was traded or recorded"
                )
            instruments, start_ns, self._history = opening.result()
        except BaseException:
            await self._close_parts()
            raise
        portfolio = Portfolio.restore(
            starting_cash,
            restored.fills,
            restored.marks,
            cfg.portfolio.quote_currency,
            peak_equity=restored.peak_equity,
            day_start_equity=restored.day_start_equity,
            day_ts=restored.marks_ts,
            marks_ts=restored.marks_ts,
            # (not ahead of this start's clock: a replay that starts its file again)
            curve=[point for point in restored.equity_curve if point[0] <= start_ns],
        )
        self.core = core = EngineCore(
            cfg,
            build_strategies(cfg.strategies),
            instruments,
            portfolio,
            session=session,
            fee_rate=execution.fee_rate(),
            slippage_model=execution.slippage_model(),
        )
        core.now = start_ns
        core.live_trades = restored.live_trades
        core.live_traded = set(restored.live_traded)
        core.market_gate = source.market_gate
        self._venue_time()  # venues' quotes age on their own clocks from the first one
        self.seq = restored.last_seq
        self.fanout.restore_history(restored.history)  # shown before this session's events
        # Looked at before the journal opens (which notes a new one): without it, rows cut off
        # the end before this start could not be seen. Said on the record, not refused: moving
        # the anchor away is how an older copy is started on purpose.
        unanchored = restored.last_seq > 0 and not anchor_path(self.journal_path).exists()
        self.journal = await self._open_journal()
        core.restore(restored.fills, execution.live_at_restore(restored), restored.fill_slippage)
        core.restore_exits(restored.exits, restored.seen_ts, restored.exits_ts)
        core.restore_throttle(restored.submits)
        execution.restore(restored, start_ns)
        dropped_limits = self._restore_safety(restored, start_ns)
        info = {
            "starting_cash": starting_cash,
            "mode": cfg.engine.mode,
            # Every limit, loss limit, breaker and sizing this session ran under follows from
            # the config and this: the journal says which, as the cockpit shows it.
            "profile": cfg.profile,
            "source": source.name,
            **execution.session_info(),
            "restored_fills": len(restored.fills),
            "restored_open_orders": len(restored.open_orders),
            "unacknowledged": len(restored.unacknowledged),
        }
        if unanchored:
            info["anchor"] = (
                f"{anchor_path(self.journal_path).name} was missing: rows cut off the end of "
                "this journal before this start could not be seen (expected only for an older "
                "copy started on purpose)"
            )
        if restored.order_anomalies:  # journal rows that would have reopened a finished order
            info["order_anomalies"] = list(restored.order_anomalies)
        started = SessionChanged(start_ns, session, "started", info)
        await self.publish([started, *dropped_limits], durable=True)
        stale = expired_at_restart(restored.approval_requests, restored.approval_outcomes, start_ns)
        if stale:
            await self.publish([ApprovalDecided(start_ns, o) for o in stale])
        # The latched state as restored (or fresh), journaled whole so the chain records it.
        await self._commit_safety_state()
        self._ready = True
        early, self._early_kill = self._early_kill, None
        if early is not None:  # a signal during the start: it holds from here on
            await self.engage_kill(early[0], by=early[1], reason=early[2], source=early[3])
        await self.enforce_kill_file(at_most=KillLevel.HALT)  # holds before any quote or order
        await execution.resume(restored, start_ns)
        # A counter the journal rebuilt at its limit trips now, not on its next observation
        # (a limit lowered across the restart: a strategy at its losing streak traded again).
        await self.handle(core.apply_breakers(core.breakers.judge(start_ns)))
        state = core.safety.trading_state
        if state != TradingState.ACTIVE and core.open_orders:
            # HALTED leaves no order working, REDUCING none that could add, across a restart
            # too (whether a kill switch or a breaker halted it): a cancel asked for may not
            # have been recorded (a crash right after the kill or trip) or taken before the stop.
            cause = core.safety.snapshot()["trading_state"]["reason"]
            why = f"engine {state} at restart: {cause}"
            cancels = (
                core.cancel_all(why) if state == TradingState.HALTED else core.cancel_adding(why)
            )
            await self.handle(cancels)
        if state != TradingState.HALTED:
            # A paused strategy's resting limits that could add exposure, likewise: its pause
            # may have been recorded just before a crash that kept the cancels from going out.
            for sid, st in sorted(core.safety.state.strategies.items()):
                if st.paused and core.open_orders:
                    why = f"strategy {sid} paused at restart ({st.reason})"
                    await self.handle(core.cancel_adding(why, sid))
            if core.open_orders:
                # The limits in force now (the config may have lowered one since the orders
                # were sent) hold for what rests too, as a lower set_limit's do at run time.
                await self.handle(core.cancel_beyond_limits("limits in force at start"))
        self._watchdog = watch(core)  # from the first call of a trader's strategy on
        await self.handle(core.warm_up(self._history))  # (a strategy that raised: paused)

    async def _open_market(
        self, restored: RestoredState
    ) -> tuple[dict[str, Instrument], int, list[Bar]]:
        """Open the venues (their brokers load their markets first), then the market source."""
        execution, source = self.execution, self.source
        await execution.open()
        instruments, start_ns, history = await source.open(restored, execution)
        execution.bind(source, instruments)
        return instruments, start_ns, history

    async def _close_parts(self) -> None:
        with contextlib.suppress(Exception):
            await self.source.close()
        with contextlib.suppress(Exception):
            await self.execution.close()

    async def _open_journal(self) -> Journal:
        """Open the journal and show each event once the rows up to it are committed."""
        journal = await Journal.open(self.journal_path)
        try:
            self.data_dir_lock.lock_journal()  # created just now on a first start
        except DataDirInUse:
            await journal.close()
            raise
        journal.on_progress = self._show_committed
        journal.on_fail = self._on_journal_failure
        return journal

    def _restore_safety(self, restored: RestoredState, now: int) -> list[SafetyChanged]:
        """Latched state survives restart (see ``EngineCore.restore_safety``); approvals that
        expired while the engine was down count as expired. Returns the run-time limits the
        start dropped (looser than configured), to be journaled."""
        core = self.core
        assert core is not None
        stale = expired_at_restart(restored.approval_requests, restored.approval_outcomes, now)
        return core.restore_safety(
            restored.safety_state,
            restored.breaker_changes,
            [*restored.approval_outcomes, *stale],
            restored.breaker_timeline,
            restored.fills,
        )

    async def _commit_safety_state(self) -> None:
        """Journal the whole safety state and wait for the fsync."""
        core, journal = self.core, self.journal
        if core is None or journal is None:
            return
        # (approval_modes holds the operator's switches only, as set_approval_mode records
        # them: a mode the config gave is the config's, so an edited config is obeyed)
        core.safety.state.loss_override = sorted(core.loss_override)
        core.safety.state.loss_override_day = (
            core.portfolio.trading_day if core.loss_override else None
        )
        try:
            journal.append(EventKind.SAFETY_STATE, core.now, {"state": core.safety.state.to_dict()})
            await journal.flush()
        except JournalError as exc:
            # The state holds in memory (no orders go out), but it could not be made durable:
            # a kill switch the journal could not record is kept by the KILL file instead.
            self.block(f"journal write failed ({exc}); no orders are sent")
            self._hold_kill_in_file()
            raise
        self._durable_kill = core.safety.kill.level

    def request_stop(self, why: str = "asked to stop") -> None:
        if not self._stop.is_set():
            self._stop_why = why
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self, duration_s: float | None = None, max_events: int | None = None) -> None:
        """Drive the source until stopped, the duration passes, the events run out or
        ``max_events`` were taken; the execution's duties (polls, heartbeats) run alongside."""
        self.started_wall = time.monotonic()
        deadline = None if duration_s is None else self.started_wall + duration_s
        stop = self._stop
        lock = self.command_lock if self.execution.serialized else None
        # The watcher is this run's, the execution's duties are the execution's: each party
        # ends what it started, so nothing of a run outlives it (a watcher left running would
        # act on the engine after stop(), with no journal to record it).
        watcher = asyncio.create_task(self.watch())
        companions = [asyncio.create_task(c.run(self)) for c in self.companions]
        if companions:
            await asyncio.sleep(0)  # each starts, however short the run
        self.execution.start_tasks()
        stream = self.source.batches(max_events)
        clean = False
        try:
            async for batch in stream:
                if stop.is_set():
                    # Asked to stop before this batch (a SIGTERM while the engine started, or
                    # while the source waited): nothing more is traded. It processed a whole
                    # batch first (256 simulated quotes), and a strategy could send an order
                    # after `systemctl stop` had been asked.
                    break
                if batch:
                    if lock is None:
                        await self.process(batch)
                    else:
                        async with lock:
                            await self.process(batch)
                if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                    break
            clean = True
            if stop.is_set():
                self._stopped_why = self._stop_why
            elif deadline is not None and time.monotonic() >= deadline:
                self._stopped_why = f"ran for the {duration_s:g} s asked"
            elif max_events is None:
                self._stopped_why = "the market data ended"
            else:
                self._stopped_why = f"took the {max_events:,} market events asked"
        except Exception as exc:
            # Nothing watches the orders from here on (no quotes, fills, exits or KILL file):
            # an approve or a flatten answered after this must not send an order.
            self.block(
                f"the engine's loop stopped on {type(exc).__name__}: {exc}; no orders are sent"
            )
            raise
        finally:
            for task in (watcher, *companions):
                task.cancel()
            for task in (watcher, *companions):
                with contextlib.suppress(BaseException):
                    await task
            await self.execution.stop_tasks(clean)
            with contextlib.suppress(Exception):
                await stream.aclose()

    async def process(self, batch: Iterable[Quote | Bar | DepthUpdate]) -> None:
        """Run a batch of market events through the core (and the paper venue's fill model,
        when orders fill on these quotes): the engine's hot path."""
        assert self.core is not None
        core = self.core
        on_quote, on_bar, broker_quote = core.on_quote, core.on_bar, self.execution.on_quote
        processed = 0
        self._batch_ns = time.time_ns()
        held = self._depth_held
        for ev in batch:
            if type(ev) is Quote:
                quote: Quote | None = ev
                depth = held.pop(ev.symbol, None) if held else None
                if depth is None:
                    out = on_quote(ev)
                elif core.admit_quote(ev):
                    # Its quote passed: the book is the market's, for the checks and fills of
                    # the orders this quote brings (as before the quote, not after).
                    self.books[ev.symbol] = depth
                    self.execution.on_depth(depth)
                    out = on_quote(ev, True)
                else:
                    out = None  # the rejected quote's book goes with it
            elif type(ev) is Bar:
                quote = None
                if core.exits_armed(ev.symbol):
                    out = await self._bar_with_exits(ev)
                else:
                    out = on_bar(ev)
            elif ev.bids:  # a venue's L2 book, just before its quote: for the paper venue
                held[ev.symbol] = ev  # once the quote passes (a rejected one's book is not)
                continue
            else:  # the feed lost the book: forget it at once (fills use the L1 model)
                held.pop(ev.symbol, None)
                self.books[ev.symbol] = ev
                self.execution.on_depth(ev)
                continue
            if out is None:
                # Rejected by the validator: it reaches nothing after this, the broker's fill
                # model included; only the reject's report goes on, when one is due.
                reports = core.take_reject_reports()
                if reports:
                    await self.handle(reports)
                continue
            processed += 1
            if out:
                await self.handle(out)
            if broker_quote is not None:
                items = broker_quote(quote if quote is not None else core.quotes[ev.symbol])
                if items:
                    await self.handle(core.on_broker(items))
        self.quotes_processed += processed
        self._batch_ns = 0
        peak, recorded = core.portfolio.peak_equity, core.marks_peak
        if peak > recorded + abs(recorded) * PEAK_RECORD_STEP and self.journal is not None:
            await self.publish([core.marks_event(core.now)])
        journal = self.journal
        if journal is not None and journal.backlog > MAX_JOURNAL_BACKLOG:
            # Back-pressure: the market waits for the disk, so a durable command (a kill's
            # reply) never queues behind more than about a group commit of rows.
            await journal.keep_up(MAX_JOURNAL_BACKLOG)

    async def _bar_with_exits(self, bar: Bar) -> list[Any] | None:
        """``core.on_bar`` for a bar that may fire protective exits: each exit the bar's range
        triggers goes out and meets its execution quote (the trigger price) at the broker
        before the bar's close is processed. None if the validator rejected the bar."""
        core = self.core
        assert core is not None
        if not core.admit_bar(bar):
            return None
        broker_quote = self.execution.on_quote
        while True:
            fired = core.bar_exits(bar)
            if not fired:
                break
            await self.handle(fired)
            if broker_quote is not None:
                # The trigger price is the exit's moment alone (see PaperBroker.on_quote).
                exits = {it.order.client_order_id for it in fired if type(it) is SubmitOrder}
                items = broker_quote(core.quotes[bar.symbol], exits)
                if items:
                    await self.handle(core.on_broker(items))
        return core.process_bar(bar)

    async def stop(self) -> None:
        """Record the session end, flush the journal and let go of the data directory; safe
        to call more than once, and after a failed start."""
        self._closing = True
        unwatch(self._watchdog)
        self._watchdog = None
        try:
            await self._stop_journal()
        finally:
            try:
                await self._close_parts()
            finally:
                self.data_dir_lock.release()

    async def _stop_journal(self) -> None:
        if self.journal is None:
            return
        core = self.core
        if core is not None and not self.journal.failed:
            with contextlib.suppress(JournalError):
                marks = core.marks_event(core.now)
                await self.publish([marks])
                info: dict[str, Any] = dict(core.counters)
                info["why"] = (
                    self.blocked_reason
                    or self._stopped_why
                    or self._stop_why
                    or "stopped before it ran"
                )
                await self.publish(
                    [SessionChanged(core.now, core.session, "stopped", info)], durable=True
                )
        with contextlib.suppress(Exception):
            await self.journal.close()
        self.journal = None

    # ------------------------------------------------------------------ event handling

    async def handle(self, items: list[Any]) -> None:
        """Publish the core's events and carry out its orders and cancels, in order. A kill
        switch's events go first; the execution's kill duty (cancel at every venue, confirmed)
        runs before any flatten order that follows them."""
        execution = self.execution
        if execution.observe is not None:
            execution.observe(items)
        after_kill = execution.after_kill
        if after_kill is not None:
            kill_at = next(
                (
                    i
                    for i, it in enumerate(items)
                    if type(it) is SafetyChanged and it.what == "kill_switch"
                ),
                None,
            )
            if kill_at is not None:
                split = next(
                    (i for i in range(kill_at + 1, len(items)) if type(items[i]) is SubmitOrder),
                    len(items),
                )
                # The kill's own cancels of the engine's orders go after every venue's cancel-all
                # (all venues at once): one by one, a venue that does not answer held the
                # cancels at every other venue behind its timeouts and retries.
                head = items[:split]
                cancels = [it for it in head[kill_at:] if type(it) is CancelOrder]
                moved = {id(it) for it in cancels}
                await self._carry_out([it for it in head if id(it) not in moved])
                await after_kill()
                await self._carry_out(cancels)
                if split < len(items):
                    await self._carry_out(items[split:])
                return
        await self._carry_out(items)

    async def _carry_out(self, items: list[Any]) -> None:
        events: list[EngineEvent] = []
        for item in items:
            kind = type(item)
            if kind is SubmitOrder or kind is CancelOrder:
                if events:
                    # What was decided with a cancel (a trail that moves a venue stop: its
                    # "trailed" row) is committed before the venue acts on it, as an intent is
                    # before its send (a kill -9 after the venue took the cancel lost the trail).
                    # A journal that cannot commit blocks orders, never a cancel.
                    await self.publish(events, durable=kind is CancelOrder)
                    events = []
                if kind is SubmitOrder:
                    await self._submit(item)
                else:
                    await self._cancel(item)
            else:
                if kind is FillReceived:
                    self.latency.mark(item.fill.client_order_id, "fill", time.time_ns())
                events.append(item)
        if events:
            await self.publish(events)

    async def _submit(self, sub: SubmitOrder) -> None:
        """Write ahead: the intent row is committed before the broker sees the order."""
        assert self.journal is not None and self.core is not None
        latency, oid = self.latency, sub.order.client_order_id
        if self._batch_ns:  # decided on market data (not an approval or a command)
            latency.mark(oid, "quote", self._batch_ns)
        latency.mark(oid, "decision", time.time_ns())
        try:
            await self.journal.flush()
            latency.mark(oid, "durable", time.time_ns())
        except JournalError as exc:
            self.block(f"journal write failed ({exc}); no orders are sent")
            update = self._void(sub.order, "journal write failed; order not sent")
            self.core.on_broker([update])
            return
        core = self.core
        refused = core.refused_at_send(sub)  # the safety state may have changed meanwhile
        if refused is not None:
            latency.finish(oid)
            await self.handle(refused)
            return
        self.sending[oid] = sub.intent
        try:
            updates = await self.execution.submit(sub.order, core.now)
        finally:
            self.sending.pop(oid, None)
        if self._refused_sends is not None:
            for u in updates:
                if (
                    type(u) is OrderUpdate
                    and u.order.client_order_id == oid
                    and u.order.status is OrderStatus.REJECTED
                ):
                    self._refused_sends[oid] = u.order.reason
        if sub.order.status is OrderStatus.REJECTED:
            latency.finish(oid)
        else:
            latency.mark(oid, "acknowledged", time.time_ns())
        await self.handle(core.on_broker(updates))

    async def _cancel(self, cancel: CancelOrder) -> None:
        assert self.core is not None
        updates = await self.execution.cancel(cancel, self.core.now)
        for update in updates:
            if type(update) is OrderUpdate and not update.order.reason:
                update.order.reason = cancel.reason
        if updates:
            await self.handle(self.core.on_broker(updates))

    def _void(self, order: Order, reason: str) -> OrderUpdate:
        order.move_to(OrderStatus.REJECTED, order.ts_updated, reason)
        return OrderUpdate(order, order.ts_updated)

    def block(self, reason: str) -> None:
        """Stop sending orders for good (this session) and say so: the snapshot's trading
        state reads BLOCKED with the reason, and a ``blocked`` event goes to every output."""
        if self.core is not None:
            self.core.blocked_reason = self.core.blocked_reason or reason
        if self.blocked_reason:
            return  # the first cause is the one to show
        self.blocked_reason = reason
        self.blocked_ts = self.core.now if self.core is not None else 0
        # Shown at once, not behind the journal: it says the journal can no longer record
        # (nothing that waited for a commit will be shown), and it is true from this moment.
        self.fanout.show(EngineBlocked(self.blocked_ts, reason))

    def _on_journal_failure(self, exc: BaseException) -> None:
        """The journal's writer failed (disk full, I/O error): block at once, not at the
        next write, so every view shows it while nothing is being written."""
        if isinstance(exc, asyncio.CancelledError):
            return  # the writer was cancelled with the loop: nothing left to show it to
        self.block(f"journal write failed ({exc}); no orders are sent")

    def _hold_kill_in_file(self) -> tuple[bool, str]:
        """Keep a kill switch the journal could not record in the KILL file (at its level,
        atomic, fsynced), so it still holds after a restart. Returns (it holds after a
        restart, a sentence for the reply)."""
        core = self.core
        level = core.safety.kill.level if core is not None else None
        if level is None:
            return False, ""
        durable = self._durable_kill
        if kill_at_least(durable, level):
            return True, f"the kill switch ({durable}) was already in the journal"
        path = self.kill_file
        try:
            held, detail = raise_kill_file(path, level)
        except OSError as exc:
            held, detail = False, str(exc)
        if not held:
            return False, (
                f"the KILL file {path} could not be written either ({detail}): this kill "
                "switch will not survive a restart"
            )
        # Durable now (the file), so true to show: the clients, the headless output and the
        # kill_engaged alert hear of it, as they would of a kill the journal recorded.
        lost, self._unrecorded_kills = self._unrecorded_kills, []
        for ev in lost:
            if kill_at_least(level, ev.after["kill_level"]):
                self.fanout.show(ev)
        return True, (
            f"the kill switch ({level}) is kept in the KILL file {path}, so it holds after a "
            "restart; delete that file to release it"
        )

    def _note_unrecorded_kill(self, ev: Any) -> None:
        if type(ev) is SafetyChanged and ev.what == "kill_switch" and ev.after.get("kill_level"):
            self._unrecorded_kills.append(ev)

    async def publish(self, events: list[EngineEvent], durable: bool = False) -> None:
        """Journal and number events, and show them once their rows are committed.

        Showing (``emit``, subscribers, the recent buffer, ``seq``) waits for the commit that
        covers the event's row and every row before it, so nothing a person or a client sees
        can be missing from the journal after a crash. The hot path does not wait: the journal's
        writer group-commits and then shows the whole batch. Safety events, and ``durable``
        calls, return only after the commit (and so after their events are shown).
        """
        journal = self.journal
        fanout = self.fanout
        unshown = fanout.unshown
        safety = False
        for ev in events:
            if type(ev) is DecisionMade and ev.acts and self.book_levels:
                ev = self._with_book(ev)
            kind = ev.kind
            row = 0
            if journal is not None:
                if ev.journaled and journal.failed is None:
                    if type(ev) is DecisionMade and not ev.acts:
                        pass
                    else:
                        try:
                            row = journal.append(kind, ev.ts, ev.payload())
                        except JournalError as exc:
                            self.block(f"journal write failed ({exc}); no orders are sent")
                if journal.failed is not None:
                    # Nothing can be recorded any more, so nothing more is shown as happened;
                    # the blocked state itself is in snapshot, status and summary.
                    fanout.events_dropped += 1
                    self._note_unrecorded_kill(ev)
                elif row or unshown or journal.last_seq > journal.committed_seq:
                    # In order behind every row appended before it, journaled or not.
                    unshown.append((row or journal.last_seq, ev))
                else:
                    fanout.show(ev)
            else:
                fanout.show(ev)
            if kind in SAFETY_KINDS:
                safety = True
            elif type(ev) is ApprovalDecided and ev.outcome.get("status") != "expired":
                # A person's answer is durable by its command; the engine's own (a withdrawal,
                # a breaker's halt) is made so here, as rarely as approvals happen: a crash
                # right after one lost it, and the counters a restart rebuilds (which
                # auto_after_approved and the canary read) came back short. (An expiry lost so
                # is counted as expired again by the restart.)
                durable = True
        if safety:
            with contextlib.suppress(JournalError):
                await self._commit_safety_state()
        elif durable and journal is not None:
            try:
                await journal.flush()
            except JournalError as exc:
                self.block(f"journal write failed ({exc}); no orders are sent")

    def _with_book(self, made: DecisionMade) -> DecisionMade:
        """The acting decision with its symbol's L2 book now (or why there is none), counted."""
        d = made.decision
        depth: Any = self.books.get(d.symbol)
        depth_of = getattr(self.source, "depth_of", None)
        if depth is None and depth_of is not None:
            depth = depth_of(d.symbol)
        if depth is None or not depth.bids or not depth.asks:
            self.book_snapshots["missing"] += 1
            if depth is None and depth_of is None and not self.books:
                # (the simulated market, a replayed file: top of book only, by design)
                why = f"the {self.source.name} feed streams no L2 book (top of book only)"
                return DecisionMade(d, missing_book(why, feed_has_none=True))
            streams_l2 = getattr(self.source, "streams_l2", None)
            if depth is None and streams_l2 is not None and streams_l2(d.symbol) is False:
                # A venue's ticker or bid/ask feed (market_data source not "book"): by design,
                # not a book lost; shown in red on every decision it was no alarm to act on.
                why = "this symbol's venue feed streams no L2 book (top of book only)"
                return DecisionMade(d, missing_book(why, feed_has_none=True))
            why = "no L2 book for this symbol now (its feed has none, or it is not synced)"
            return DecisionMade(d, missing_book(why))
        self.book_snapshots["taken"] += 1
        book = encode_book(depth.bids, depth.asks, depth.ts_ns, d.ts, self.book_levels)
        return DecisionMade(d, book)

    def when_committed(self, deliver: Callable[[], None]) -> None:
        """Call ``deliver`` once every row appended so far is committed, after the events
        before it are shown: for a snapshot taken now, so what it shows is durable when it is
        seen. At once when that is already so, or when the journal has failed (a snapshot then
        says the engine is blocked)."""
        journal = self.journal
        if (
            journal is None
            or journal.failed is not None
            or (not self.fanout.unshown and journal.last_seq <= journal.committed_seq)
        ):
            deliver()
        else:
            self.fanout.hold(journal.last_seq, AfterCommit(deliver))

    def snapshot_when_committed(
        self, deliver: Callable[[Snapshot], None], trace: int = 500, curve: int = 600
    ) -> None:
        """Take a snapshot now and hand it to ``deliver`` once what it shows is committed
        (or, if the journal fails first, at once, saying the engine is blocked)."""
        snap = self.snapshot(trace=trace, curve=curve)

        def done() -> None:
            snap["blocked"] = self.blocked_reason
            if self.blocked_reason:  # its rows failed instead: the state is BLOCKED, not ACTIVE
                snap["trading_state"] = blocked_state(self)
            deliver(snap)

        self.when_committed(done)

    async def durable_snapshot(self, trace: int = 500, curve: int = 600) -> Snapshot:
        """:meth:`snapshot`, returned once what it shows is committed (never a fill that a
        crash could still take back)."""
        done: asyncio.Future[Snapshot] = asyncio.get_running_loop().create_future()

        def deliver(snap: Snapshot) -> None:
            if not done.done():
                done.set_result(snap)

        self.snapshot_when_committed(deliver, trace=trace, curve=curve)
        return await done

    async def committed(self) -> None:
        """Wait until every row appended so far is committed and the events before are shown."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def deliver() -> None:
            if not done.done():
                done.set_result(None)

        self.when_committed(deliver)
        await done

    def _show_committed(self) -> None:
        """The journal committed (or failed): show every event whose rows are now on disk."""
        journal = self.journal
        if journal is None or journal.failed is not None:
            for _, item in self.fanout.unshown:
                self._note_unrecorded_kill(item)
            waiting = self.fanout.drop_unshown()
            if journal is not None:
                self.block(f"journal write failed ({journal.failed!r}); no orders are sent")
            for item in waiting:
                item.deliver()
            return
        self.fanout.release(journal.committed_seq)

    def subscribe(self, maxsize: int = 10_000) -> asyncio.Queue[EngineEvent]:
        return self.fanout.subscribe(maxsize)

    def subscribe_dicts(self) -> asyncio.Queue[dict[str, Any]]:
        """Events as JSON-able dicts with sequence numbers (the client interface's stream)."""
        return self.fanout.subscribe_dicts()

    def unsubscribe(self, q: asyncio.Queue[Any]) -> None:
        self.fanout.unsubscribe(q)

    def events_since(self, seq: int) -> list[dict[str, Any]] | None:
        """Events after ``seq`` from the recent buffer; None if they are no longer all there."""
        return self.fanout.events_since(seq)

    # ------------------------------------------------------------------ commands

    async def command(
        self,
        name: str,
        args: dict[str, Any],
        *,
        client: str = "embedded",
        role: str = "operator",
        user: str | None = None,
    ) -> dict[str, Any]:
        """Run an operator command; the reply comes only after its effects are durable.

        Always answers ``{"ok": bool, "message": str, ...}``; never raises for bad input.
        """
        core = self.core
        if core is None or self.journal is None:
            return {"ok": False, "message": "engine is not running"}
        # Text the journal can hold: a lone surrogate (a "\ud800" escape, a Latin-1 reason read
        # from argv) failed the audit row after a kill had latched, so the switch read ENGAGED
        # but was never recorded and a restart dropped it. The arguments are left to the
        # command's own rules (refused by name; a kill's reason keeps the byte as its escape).
        name, client = valid_text(name), valid_text(client)
        by = valid_text(user or os_user())
        if role != "operator":
            why = f"refused: {name} needs an operator; this connection is a read-only viewer"
            return await self._refused(name, args, by=by, client=client, message=why)
        try:
            parsed = parse_command(name, args)
        except CommandError as exc:
            return await self._refused(name, args, by=by, client=client, message=str(exc))
        latched = None
        if name == "kill":
            # Latch at once, even while a venue request holds the lock: from this moment the
            # send-time safety re-check stops every order. Journal, cancels and reply follow
            # under the lock (the reply still waits until the state is durable).
            latched = execute(core, name, parsed, by=by, client=client)
        async with self.command_lock:
            if latched is None:
                # The clock first, as the watcher would move it: an approval whose time to
                # live ran out since its last look expires rather than being approved. (A kill
                # is latched already and waits on nothing.)
                await self._tick_to_now()
            if latched is not None:
                result = latched
            elif name in RUNTIME_COMMANDS:
                result = await self._runtime_command(name, parsed, by=by, client=client)
            elif name == "release" and read_kill_level(self.kill_file) is not None:
                # No override lifts a KILL file: deleting the file is how a person lifts it.
                before = core.safety.snapshot()
                result = CommandResult(
                    False,
                    f"the KILL file {self.kill_file} still exists: delete it, then release "
                    "(no override lifts a KILL file)",
                    before=before,
                    after=before,
                )
            else:
                condition = self._release_condition() if name == "release" else None
                result = execute(core, name, parsed, by=by, client=client, condition=condition)
            refused_sends: dict[str, str] = {}
            self._refused_sends = refused_sends
            try:
                await self.handle(result.events)
            finally:
                self._refused_sends = None
            denied = [
                e
                for e in result.events
                if type(e) is IntentChecked
                and e.outcome == IntentOutcome.DENIED
                and e.intent.origin == IntentOrigin.FLATTEN
            ]
            if denied:  # a kill-switch flatten that could not go out must not read as done
                why = next((v.message for v in denied[0].verdicts if not v.ok), "")
                result.message += f"; {len(denied)} flatten order(s) denied ({why})"
            dust = [
                e
                for e in result.events
                if type(e) is IntentChecked
                and e.outcome == IntentOutcome.DUST
                and e.intent.origin == IntentOrigin.FLATTEN
            ]
            if dust:  # what no venue would take stays, said plainly (not a denial to retry)
                result.message += "; " + "; ".join(e.detail for e in dust)
            shortfall = self.execution.kill_shortfall() if name == "kill" else ""
            if shortfall:  # engaged, but orders may still work at a venue: never read as done
                result.message += f"; {shortfall}"
            # Stopped at the engine's send, or refused unsent by the broker (which answers with
            # a copy of the order: the one in the event stays PENDING_NEW).
            unsent = [
                e.order.reason
                if e.order.status is OrderStatus.REJECTED
                else refused_sends[e.order.client_order_id]
                for e in result.events
                if type(e) is SubmitOrder
                and (
                    e.order.status is OrderStatus.REJECTED
                    or e.order.client_order_id in refused_sends
                )
            ]
            if name == "approve" and unsent and result.ok:
                # Approved, but stopped at the send (a kill latched meanwhile) or refused by
                # the venue: the person must not read "approved" as "it traded".
                result.ok = False
                result.message += f"; its order was rejected ({unsent[0]})"
            elif name == "flatten" and unsent:
                # A close stopped at the send (the position changed under it): not "submitted".
                result.ok = False
                result.message += f"; {len(unsent)} rejected ({unsent[0]})"
            audit = OperatorActed(
                core.clock_now,  # when the person acted: a quiet feed's clock runs on
                name,
                by,
                client,
                parsed.model_dump(),
                result.before,
                result.after,
                str(getattr(parsed, "reason", "")),
                result.ok,
                result.message,
            )
            await self.publish([audit], durable=True)
            if self.journal is None or self.journal.failed is not None:
                message = (
                    f"{result.message}, but the journal could not record it "
                    f"({self.blocked_reason}); trading is blocked"
                )
                held, note = self._hold_kill_in_file() if name == "kill" else (False, "")
                return {
                    # A kill the KILL file keeps is engaged and durable: it did its job.
                    "ok": result.ok and held,
                    "message": f"{message}; {note}" if note else message,
                }
        return {"ok": result.ok, "message": result.message, "seq": self.seq, **result.data}

    async def _refused(
        self, name: str, args: Any, *, by: str, client: str, message: str
    ) -> dict[str, Any]:
        """A command refused before it could run (a viewer's, an unknown name, an argument
        that does not validate) is an audit row like any other answer: who tried what, from
        where, and why it was refused. Durable before the reply, as an accepted one is."""
        core = self.core
        assert core is not None
        state = core.safety.snapshot()
        shown = _refused_args(args)
        reason = shown.get("reason", "")
        message = mended_text(message)
        audit = OperatorActed(
            core.clock_now,
            _clip(str(name), 64),
            by,
            client,
            shown,
            state,
            state,
            reason if isinstance(reason, str) else "",
            False,
            message,
        )
        await self.publish([audit], durable=True)
        return {"ok": False, "message": message, "refused": True}

    async def record_refused(
        self, name: str, args: Any, *, by: str, client: str, message: str
    ) -> None:
        """An audit row for commands the control socket refused without one each (viewers
        over their rate); nothing while the engine is not running."""
        if self.core is not None and self.journal is not None:
            await self._refused(
                valid_text(name),
                valid_text(args),
                by=valid_text(by),
                client=valid_text(client),
                message=valid_text(message),
            )

    async def _runtime_command(
        self, name: str, args: Any, *, by: str, client: str
    ) -> CommandResult:
        """Commands for the venues (resolve): the execution's to answer."""
        return await self.execution.command(name, args, by=by)

    def _release_condition(self) -> str | None:
        """A loss beyond its limit now (a release must wait or override), whoever engaged the
        switch: a switch killed by hand before the loss came, or an automatic kill a person
        raised to flatten, is held by the loss as much as one the loss engaged (released
        without an override, the next quote would engage it again)."""
        core = self.core
        assert core is not None
        return "; ".join(reason for _, reason in core.loss_breaches()) or None

    @property
    def kill_file(self) -> Path:
        return self.data_dir / self.cfg.safety.kill_switch.kill_file

    async def engage_kill(self, level: str, *, by: str, reason: str, source: str) -> None:
        """Kill from outside the command path (signal, KILL file): same state, same journal.

        Before the state is restored there is nothing to engage that would last (the restore
        would overwrite it, and no journal could record it): the kill is kept, the highest
        asked, and engaged once the start has restored the state."""
        core = self.core
        if self._closing:
            self.keep_kill_in_file(level)
            return
        if core is None or not self._ready:
            early = self._early_kill
            if early is None or not kill_at_least(early[0], level):
                self._early_kill = (level, by, reason, source)
            return
        before = core.safety.snapshot()
        events = core.kill(level, by=by, reason=reason, source=source)  # latched at once
        if not events:
            # Already engaged at this level or higher: nothing changes, but a person signalled
            # the engine, and the audit log lists every kill by SIGUSR1 (as `cockpit kill` in
            # the same case is listed).
            kill = core.safety.kill
            events = [
                OperatorActed(
                    core.clock_now,
                    "kill_switch",
                    by,
                    "",
                    {"level": level},
                    before,
                    before,
                    reason,
                    True,
                    f"kill switch already engaged at {kill.level} (by {kill.by}: {kill.reason})",
                )
            ]
        async with self.command_lock:
            if self._closing:  # the engine began to stop while this waited
                self.keep_kill_in_file(level)
                return
            await self.handle(events)

    @property
    def closing(self) -> bool:
        return self._closing

    def keep_kill_in_file(self, level: str) -> tuple[bool, str]:
        """A kill from outside (SIGUSR1) that arrives once the engine began to stop: its journal
        is closing or closed, and its loop may end before a task could run, so the kill is
        kept in the KILL file at once (never lowering it, atomic, fsynced) and holds at the
        next start. Returns (it holds, a sentence saying what was done)."""
        try:
            return raise_kill_file(self.kill_file, level)
        except (OSError, ValueError) as exc:
            return False, f"the KILL file {self.kill_file} could not be written ({exc})"

    def kill_file_level(self, at_most: str = KillLevel.FLATTEN) -> str | None:
        """The level the KILL file demands above the switch's current one (None: nothing),
        capped at ``at_most``."""
        core = self.core
        level = read_kill_level(self.kill_file) if core is not None else None
        if core is None or level is None:
            return None
        level = milder_kill(level, at_most)
        if kill_at_least(core.safety.kill.level, level):
            return None
        return level

    async def enforce_kill_file(self, at_most: str = KillLevel.FLATTEN) -> None:
        """While a KILL file exists the switch is engaged at least at the file's level, however
        and whenever the file appeared (a state, not an edge: rewriting it higher escalates).

        At start the engine has no quote yet, so a flatten there would be denied (nothing to
        price it against) and never retried: start engages at most ``halt`` (no order goes
        out), and the watcher's first look raises it to ``flatten`` once the market is seen.
        """
        level = self.kill_file_level(at_most)
        if level is not None:
            asked = read_kill_level(self.kill_file) or level
            held = "" if asked == level else f", held at {level} until the market is seen"
            await self.engage_kill(
                level,
                by="file",
                reason=f"{self.kill_file.name} file present (level {asked}{held})",
                source="file",
            )

    def event_now(self) -> int | None:
        """The market's time now, between events (the source's: a paced feed's own clock, a
        venue's wall clock; None when it moves only with its events)."""
        return self.source.event_now()

    def venue_now(self, venue: str) -> int | None:
        """``venue``'s own clock now, where the source keeps venues' clocks (venue feeds: its
        last stamp plus the time since its receipt); None elsewhere (one clock)."""
        venue_now = getattr(self.source, "venue_now", None)
        return venue_now(venue) if venue_now is not None else None

    async def watch(self) -> None:
        """Background duties: the KILL file (at least once a second) and the clock tick that
        notices stale feeds and expired approvals even when no quote arrives."""
        poll = self.cfg.safety.kill_switch.poll_s
        while not self._stop.is_set():
            await asyncio.sleep(poll)
            core = self.core
            if core is None:
                continue
            try:
                await self.enforce_kill_file()
            except Exception as exc:  # the switch latched first; what followed it failed
                self.block(f"acting on the KILL file failed ({exc!r:.200}); no orders are sent")
            now = self.event_now()
            if now is not None and now > core.now:  # the lock only when there is a tick to do
                try:
                    async with self.command_lock:
                        await self._tick_to_now()
                except Exception as exc:
                    # The watch must outlive a failing duty: it is what reads the KILL file.
                    # What failed is unknown, so nothing more is sent (fail closed), visibly.
                    self.block(f"the clock tick failed ({exc!r:.200}); no orders are sent")

    def _venue_time(self) -> None:
        """Each venue's own clock to the core, where the source keeps venues' clocks (venue
        feeds: VenueSource.venue_clocks); a quote's age is measured on its venue's."""
        clocks = getattr(self.source, "venue_clocks", None)
        if clocks is not None and self.core is not None:
            self.core.set_venue_clocks(*clocks())

    async def _tick_to_now(self) -> None:
        """Move the core's clock to the source's time (a quiet feed's too): stale feeds,
        expired approvals and limits. Called under the command lock."""
        core = self.core
        self._venue_time()
        now = self.event_now()
        if core is not None and now is not None and now > core.now:
            await self.handle(core.tick(now))

    # ------------------------------------------------------------------ views

    def snapshot(self, trace: int = 500, curve: int = 600) -> Snapshot:
        """The whole state for a cockpit (:func:`engine.views.build_snapshot`)."""
        return build_snapshot(self, trace, curve)

    def summary(self) -> dict[str, Any]:
        """The periodic headless summary (:func:`engine.views.build_summary`)."""
        return build_summary(self)
