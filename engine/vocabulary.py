"""The words the engine, its journal, its clients and its command line share, defined once.

Kill levels, pre-trade denial codes, CLI exit codes, event kinds, intent outcomes, and the typed
shapes of the engine snapshot and of the event dicts a client receives. Before this module each
was a bare string or number written out in several places, and the snapshot existed only as
prose; a word misspelled in one of them failed silently (a filter that never matches, a kill
level that ranks wrong).

Rules that keep it safe to import from anywhere:

* Standard library only; it imports nothing from ``engine`` or ``cockpit`` (both import it).
* String words are ``StrEnum`` members and numbers ``IntEnum`` members, so they ARE the plain
  values: ``KillLevel.HALT == "halt"``, ``json.dumps(DenialCode.NO_QUOTE) == '"NO_QUOTE"'``,
  ``f"{ExitCode.USAGE}" == "2"``. Journal rows, JSON lines and snapshots are byte-identical to
  the bare strings they replace, and a value read back from JSON compares equal to its member.
* Hot paths compare against members (``x == DenialCode.NO_QUOTE`` costs what a literal does when
  the member is bound to a module global); they never build one per call (``DenialCode(x)``).
"""

import re
from enum import IntEnum, StrEnum
from typing import Any, Literal, NotRequired, TypedDict

# --------------------------------------------------------------------------------------------
# Kill switch


class KillLevel(StrEnum):
    """How far the kill switch goes, mildest first (the order is the members' order).

    Engaging a level at or below the one in force changes nothing (the switch is latched and
    only ever escalates until a person releases it).
    """

    ENTRIES = "entries"  # no new exposure: only exposure-reducing orders (REDUCING)
    HALT = "halt"  # no new orders but protective exits that only reduce; cancels allowed
    FLATTEN = "flatten"  # halt, cancel open orders and close every position (HALTED)


KILL_LEVELS: tuple[str, ...] = tuple(level.value for level in KillLevel)
"""Every kill level as its plain string, mildest first (argparse choices, messages)."""

KillLevelName = Literal["entries", "halt", "flatten"]
"""The kill levels as a ``Literal`` for pydantic models (config and command arguments);
``tests/test_vocabulary.py`` pins it to ``KillLevel``."""

_KILL_RANK: dict[str, int] = {level.value: rank for rank, level in enumerate(KillLevel)}


def kill_rank(level: str) -> int:
    """Severity of a kill level, 0 for ``entries``; raises ``ValueError`` for anything else."""
    try:
        return _KILL_RANK[level]
    except (KeyError, TypeError):
        raise ValueError(
            f"kill level must be one of {', '.join(KILL_LEVELS)}, got {level!r}"
        ) from None


def kill_at_least(level: str | None, floor: str) -> bool:
    """True if ``level`` (None: not engaged) is as severe as ``floor`` or more."""
    return level is not None and kill_rank(level) >= kill_rank(floor)


RELEASE_PHRASE = "RELEASE"
"""What a person types to release the kill switch (the cockpit's dialog, ``cockpit release``)."""


def milder_kill(a: str, b: str) -> KillLevel:
    """The milder of two kill levels (a KILL file capped before the market is seen)."""
    return KillLevel(a) if kill_rank(a) <= kill_rank(b) else KillLevel(b)


class TradingState(StrEnum):
    """The engine's trading state, derived from the kill switch and the breakers (the
    industry's words): what may be sent right now."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"  # only exposure-reducing orders
    HALTED = "HALTED"  # no submits; cancels allowed


TRADING_BLOCKED = "BLOCKED"
"""The trading state a snapshot shows when the journal failed: nothing is sent whatever the kill
switch says. Not a ``TradingState``: the safety state never is in it, the engine is."""


# --------------------------------------------------------------------------------------------
# The data directory's own files

LOCK_FILE = "engine.lock"
JOURNAL_FILE = "journal.sqlite"
# Names the engine itself keeps in the data directory: a kill_file may never be one of them
# (the engine writes the KILL file atomically, which would replace the journal).
ENGINE_FILE_PREFIXES = (LOCK_FILE, JOURNAL_FILE, "cockpit.sock")
# Folders the engine and its commands fill in the data directory: the recordings
# (engine.marketdata.recording.RECORD_DIR) and `cockpit data download`'s bars
# (engine.marketdata.store.MARKET_DIR). A kill_file by one of these names existed as soon as
# they did: a halt no release could lift short of deleting the data.
ENGINE_DIRS = ("record", "market")


def is_engine_file(name: str) -> bool:
    """Is ``name`` one of the files the engine keeps in its data directory (or a sibling of one:
    the journal's -wal/-shm/.anchor, the socket's .pid/.json), or one of its folders? In any
    case: on a file system that ignores case (macOS's, Windows's) ``Journal.sqlite`` IS the
    journal, and a kill written there replaced it."""
    name = name.casefold()
    return name in ENGINE_DIRS or any(
        name == p or name.startswith((p + "-", p + ".")) for p in ENGINE_FILE_PREFIXES
    )


def kill_file_problem(name: str) -> str:
    """Why ``name`` cannot be a data directory's kill file ("" when it can): the rules of
    ``safety.kill_switch.kill_file``, also for `cockpit kill` reading them from a config that
    may not validate (it wrote ``kill_file = "journal.sqlite"``'s level over the journal)."""
    if not name.strip() or "\x00" in name:
        return "must name a file, not an empty string or one with a NUL character, like KILL"
    if name in (".", "..") or "/" in name or len(name.encode()) > 255:
        return "must be a plain file name in the data directory, like KILL"
    if name != name.strip() or not name.isprintable():
        # " KILL" was a name no `touch DATA/KILL` in an emergency ever made.
        return (
            "must be a plain file name without spaces at its ends or control characters "
            "(a person types it in an emergency), like KILL"
        )
    if is_engine_file(name):
        return (
            "names one of the engine's own files or folders (its journal, lock, socket, "
            "record or market), which a kill would overwrite or which would hold the kill "
            "switch engaged; use another name, like KILL"
        )
    return ""


# --------------------------------------------------------------------------------------------
# Pre-trade verdicts

PASSED = "OK"
"""``Verdict.code`` of every check that passed."""


class DenialCode(StrEnum):
    """``Verdict.code`` of a denied pre-trade check: stable, for filters and scripts.

    The message beside it carries the numbers; the code never changes with them.
    """

    # engine.checks.round_to_grid: the venue's grid
    INSTRUMENT_MISMATCH = "INSTRUMENT_MISMATCH"  # instrument is for another symbol
    INVALID_QTY = "INVALID_QTY"  # quantity not a positive finite number
    INVALID_PRICE = "INVALID_PRICE"  # reference or limit price unusable
    BELOW_MIN_QTY = "BELOW_MIN_QTY"  # rounds down to below the venue's minimum quantity
    BELOW_MIN_NOTIONAL = "BELOW_MIN_NOTIONAL"  # qty x price below the venue's minimum
    # engine.checks: the risk limits
    REDUCE_ONLY_EXCEEDS_POSITION = "REDUCE_ONLY_EXCEEDS_POSITION"
    NO_QUOTE = "NO_QUOTE"  # no valid quote to judge the order against
    STALE_QUOTE = "STALE_QUOTE"
    PRICE_COLLAR = "PRICE_COLLAR"
    MAX_ORDER_NOTIONAL = "MAX_ORDER_NOTIONAL"
    MAX_POSITION = "MAX_POSITION"
    MAX_OPEN_POSITIONS = "MAX_OPEN_POSITIONS"
    NO_MARK = "NO_MARK"  # exposure that cannot be valued cannot be bounded
    MAX_GROSS_EXPOSURE = "MAX_GROSS_EXPOSURE"
    INSUFFICIENT_CASH = "INSUFFICIENT_CASH"
    THROTTLE_STRATEGY = "THROTTLE_STRATEGY"  # this strategy sent too many orders
    THROTTLE_GLOBAL = "THROTTLE_GLOBAL"  # all strategies together did
    CHECK_ERROR = "CHECK_ERROR"  # a check raised: denied, never passed
    # engine.core: the engine, sizing, the safety gate, the venue and the breakers
    ENGINE_BLOCKED = "ENGINE_BLOCKED"  # the journal failed: nothing is sent
    SIZE_ZERO = "SIZE_ZERO"
    ENGINE_HALTED = "ENGINE_HALTED"  # trading state HALTED
    # trading state REDUCING and the order adds exposure (or a limit's move decided before a
    # kill switch or a breaker's halt since lifted adds exposure)
    REDUCING_ONLY = "REDUCING_ONLY"
    STRATEGY_PAUSED = "STRATEGY_PAUSED"  # (or a move decided before a pause since resumed)
    # reconciliation halted the venue (or a move decided before its halt was lifted adds)
    VENUE_HALTED = "VENUE_HALTED"
    MARKET_UNSYNCED = "MARKET_UNSYNCED"  # the venue's market data is not in sync
    # a spot venue: a sell of more than the engine holds there (it would sell others' coins)
    SPOT_SELL_EXCEEDS_HOLDING = "SPOT_SELL_EXCEEDS_HOLDING"
    BREAKER_TRIPPED = "BREAKER_TRIPPED"


# --------------------------------------------------------------------------------------------
# Command line


class ExitCode(IntEnum):
    """What every ``cockpit`` command exits with (the README's exit-code table)."""

    OK = 0
    """Success. Also a status that shows a halted venue: the command worked."""
    FAILURE = 1
    """Refused or failed: a broken journal, the engine refused a command, no rows to backtest."""
    USAGE = 2
    """Bad arguments or a bad config, an unsafe socket directory, or another engine holds the
    data directory. Nothing was written."""
    UNREACHABLE = 3
    """No engine answered (one-shot commands that talk to a running engine)."""


# --------------------------------------------------------------------------------------------
# Events


RISK_LIMIT_NAMES = (
    "max_order_notional",
    "max_position_fraction",
    "max_open_positions",
    "max_gross_exposure_fraction",
    "price_collar_pct",
    "stale_quote_s",
)
"""The risk limits an operator may change at run time (``set_limit``)."""
KILL_LIMIT_NAMES = ("daily_loss_limit_pct", "drawdown_limit_pct")
"""The kill-switch limits an operator may change at run time (``set_limit``)."""
LIMIT_NAMES = (*RISK_LIMIT_NAMES, *KILL_LIMIT_NAMES)


class EventKind(StrEnum):
    """An engine event's kind: its journal row kind and the ``event`` field a client sees."""

    DECISION = "decision"
    INTENT = "intent"
    ORDER = "order"
    FILL = "fill"
    MARKS = "marks"  # periodic marks and equity (journaled; not in the trace)
    SESSION = "session"
    QUOTES_REJECTED = "quotes_rejected"  # not journaled
    BLOCKED = "blocked"  # the journal failed (not journaled: the journal is what failed)
    SAFETY = "safety"
    BREAKER = "breaker"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL = "approval"
    AUDIT = "audit"
    VENUE = "venue"
    SAFETY_STATE = "safety_state"
    """Journal only: the whole safety state, written after every safety change."""
    CONNECTION = "connection"
    """Client only: the socket client's marker when it loses or regains its engine."""
    EXITS = "exits"
    """A position's protective exits attached, trailed or removed (journaled: restart restores
    them; not in the trace, whose exit decisions say what fired)."""
    RECORDING = "recording"
    """The market recorder dropped payloads (its queue was full, or its disk failed)."""


SAFETY_KINDS = frozenset({EventKind.SAFETY, EventKind.BREAKER, EventKind.AUDIT})
"""Kinds the runtime commits durably (with a safety_state row) before acknowledging them."""

TRACE_KINDS = frozenset(
    {
        EventKind.DECISION,
        EventKind.INTENT,
        EventKind.ORDER,
        EventKind.FILL,
        EventKind.APPROVAL,
        EventKind.APPROVAL_REQUESTED,
        EventKind.SAFETY,
        EventKind.BREAKER,
        EventKind.QUOTES_REJECTED,
        EventKind.AUDIT,
    }
)
"""Kinds the snapshot's ``trace`` carries (the decision trace pane)."""

RESTORED_FROM = "restored_from"
"""Key of the history events a snapshot's ``trace`` starts with after a restart (loaded from
the journal at start, with the sessions' starts and stops among them): the session each came
from. Such an event is history, shown before the restart: nothing notifies or counts it again."""


class HeadlessLine(StrEnum):
    """``event`` values of the headless engine's JSON lines that are not an ``EventKind``."""

    ORDER_INTENT = "order_intent"  # an intent that was submitted
    REJECTION = "rejection"  # an intent that was denied or waits for approval
    DUST = "dust"  # a flatten left a position too small for the venue
    SUMMARY = "summary"  # the periodic summary
    LINES_DROPPED = "lines_dropped"  # stdout's reader fell behind: lines not written (journaled)


class IntentOutcome(StrEnum):
    """``IntentChecked.outcome``: what became of an order intent."""

    SUBMITTED = "submitted"
    DENIED = "denied"
    AWAITING_APPROVAL = "awaiting_approval"
    DUST = "dust"  # a reduce-only order below the venue minimum: nothing left to send


class IntentOrigin(StrEnum):
    """``OrderIntent.origin``: who asked for the order (one order path for all three)."""

    STRATEGY = "strategy"  # the only origin that can need a person's approval
    FLATTEN = "flatten"  # the kill switch: the one kind HALTED lets through (it only reduces)
    OPERATOR = "operator"  # a person at the cockpit (not stopped by a strategy's pause)
    # A position's protective exit (stop-loss, take-profit, trailing or time stop): reduce-only,
    # never waits for approval, and HALTED, REDUCING and a strategy's pause let it through.
    EXIT = "exit"


# --------------------------------------------------------------------------------------------
# Alerts (engine.alerts): what is sent to a phone, a chat or a program


class AlertKind(StrEnum):
    """What an alert is about: the words ``[alerts] events`` routes by, and ``last.kind``."""

    APPROVAL_WAITING = "approval_waiting"  # an order waits for a person
    BREAKER_TRIPPED = "breaker_tripped"
    KILL_ENGAGED = "kill_engaged"
    KILL_RELEASED = "kill_released"
    VENUE_PROBLEM = "venue_problem"  # a venue HALTED, a new reconciliation difference, ...
    JOURNAL_BLOCKED = "journal_blocked"  # the journal failed: nothing is sent
    RECORDING_DROPPED = "recording_dropped"  # the market recorder lost payloads ([record])
    STRATEGY_FAILED = "strategy_failed"  # a strategy raised or returned garbage: paused
    FILL = "fill"
    DAILY_SUMMARY = "daily_summary"  # once a day at [alerts] daily_summary_utc
    TEST = "test"  # `cockpit alerts test` (never routed by config)


ALERT_KINDS: tuple[str, ...] = tuple(k.value for k in AlertKind if k is not AlertKind.TEST)
"""The kinds a route may name in ``events``, in the order the docs list them."""

AlertKindName = Literal[
    "approval_waiting",
    "breaker_tripped",
    "kill_engaged",
    "kill_released",
    "venue_problem",
    "journal_blocked",
    "recording_dropped",
    "strategy_failed",
    "fill",
    "daily_summary",
]
"""``ALERT_KINDS`` as a ``Literal`` for the config models; ``tests/test_alerts.py`` pins it."""


# --------------------------------------------------------------------------------------------
# Typed shapes: the event dicts a client receives


class OrderDict(TypedDict):
    """``engine.types.Order.to_dict()``."""

    client_order_id: str
    intent_id: str
    strategy_id: str
    symbol: str
    venue: str
    side: str
    order_type: str
    qty: float
    limit_price: float | None
    status: str
    ts_created: int
    ts_updated: int
    filled_qty: float
    avg_fill_price: float
    fees: float
    reduce_only: bool
    reason: str
    venue_order_id: str
    post_only: bool  # a limit that must not take liquidity
    tif: str  # gtc | ioc | fok
    expire_ts: int  # when the engine cancels it (its time to live; 0: never)
    stop_price: float | None  # a stop_market's trigger (a protective stop at the venue)


class VerdictDict(TypedDict):
    check: str
    ok: bool
    code: str  # PASSED or a DenialCode
    message: str


class EventDict(TypedDict):
    """Every event a client receives: ``{"seq", "event", "ts", **payload}``; the payload is the
    event dataclass's fields (``EngineEvent.payload()``), one of the shapes below."""

    seq: int
    event: str  # an EventKind
    ts: int


class DecisionEvent(EventDict):
    decision: dict[str, Any]  # engine.types.Decision as a dict
    # An acting decision's L2 book when it was made (see decode_book); None on a hold.
    book: NotRequired[dict[str, Any] | None]


class RecordingEvent(EventDict):
    ts_event: int
    dropped: int  # payloads dropped since the last report
    total: int  # payloads dropped this run
    detail: str


class IntentEvent(EventDict):
    intent: dict[str, Any]  # engine.types.OrderIntent as a dict
    verdicts: list[VerdictDict]
    outcome: str  # an IntentOutcome
    detail: str


class OrderEvent(EventDict):
    order: OrderDict
    ts_event: int


class FillEvent(EventDict):
    fill: dict[str, Any]  # engine.types.Fill as a dict
    realized_pnl: float
    position_qty: float
    mid: float | None  # the mid of the quote it happened on (None: not known)
    model_bps: float | None  # the slippage the model expected, bps (None: not known)
    equity: float | None  # total equity right after the fill (None: not known, older journals)
    unreviewed: bool  # counted by the unreviewed_fills breaker (an automated fill)


class MarksEvent(EventDict):
    ts_event: int
    marks: dict[str, float]
    equity: float
    cash: float
    peak_equity: float
    day_start_equity: float


class SessionEvent(EventDict):
    ts_event: int
    session: int
    state: Literal["started", "stopped"]
    info: dict[str, Any]


class QuotesRejectedEvent(EventDict):
    ts_event: int
    symbol: str
    code: str
    total: dict[str, int]


class BlockedEvent(EventDict):
    ts_event: int
    reason: str


class SafetyEvent(EventDict):
    ts_event: int
    what: str  # trading_state | kill_switch | strategy | approval_mode | limit
    subject: str
    before: dict[str, Any]
    after: dict[str, Any]
    by: str
    reason: str
    client: str


class BreakerEvent(EventDict):
    ts_event: int
    change: dict[str, Any]  # engine.breakers.BreakerChange.to_dict()


class ExitsEvent(EventDict):
    ts_event: int
    strategy_id: str
    symbol: str
    change: str  # attached | trailed | removed
    exits: dict[str, Any] | None  # engine.exits.ExitState.to_dict(); None when removed


class ApprovalRequestedEvent(EventDict):
    ts_event: int
    approval: dict[str, Any]  # engine.approvals.PendingApproval.to_dict()


class ApprovalEvent(EventDict):
    ts_event: int
    outcome: dict[str, Any]  # engine.approvals.ApprovalOutcome.to_dict()


class AuditEvent(EventDict):
    ts_event: int
    action: str
    user: str
    client: str
    args: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]
    reason: str
    accepted: bool
    message: str


class VenueEvent(EventDict):
    ts_event: int
    venue: str
    what: str  # reconciled | resolved | kill | baseline
    halted: str
    detail: dict[str, Any]


EVENT_SHAPES: dict[str, type] = {
    EventKind.DECISION: DecisionEvent,
    EventKind.INTENT: IntentEvent,
    EventKind.ORDER: OrderEvent,
    EventKind.FILL: FillEvent,
    EventKind.MARKS: MarksEvent,
    EventKind.SESSION: SessionEvent,
    EventKind.QUOTES_REJECTED: QuotesRejectedEvent,
    EventKind.BLOCKED: BlockedEvent,
    EventKind.SAFETY: SafetyEvent,
    EventKind.BREAKER: BreakerEvent,
    EventKind.APPROVAL_REQUESTED: ApprovalRequestedEvent,
    EventKind.APPROVAL: ApprovalEvent,
    EventKind.AUDIT: AuditEvent,
    EventKind.VENUE: VenueEvent,
    EventKind.EXITS: ExitsEvent,
    EventKind.RECORDING: RecordingEvent,
}
"""The typed shape of each engine event a client receives, by kind."""


class ConnectionEvent(TypedDict):
    """The socket client's own marker (no ``seq``: it is not an engine event)."""

    event: Literal["connection"]
    connected: bool
    seq: int  # the last engine event seen
    message: NotRequired[str]
    path: NotRequired[str]
    resumed: NotRequired[bool]
    resync: NotRequired[bool]


# --------------------------------------------------------------------------------------------
# Typed shapes: the snapshot (engine.client.EngineClient.snapshot)


class TradingStateView(TypedDict):
    state: str  # a TradingState, or TRADING_BLOCKED when the journal failed
    by: str
    reason: str
    ts: int


class KillSwitchView(TypedDict):
    engaged: bool
    level: str | None  # a KillLevel, None when not engaged
    by: str
    reason: str
    source: str  # command | cli | signal | file | daily_loss | drawdown
    ts: int


class VenueView(TypedDict):
    """One venue. The simulated and replay markets give only ``connected`` and ``detail``."""

    connected: bool
    detail: str
    halted: NotRequired[str]
    feed: NotRequired[dict[str, Any]]  # the venue feed's status()
    reconciliation: NotRequired[dict[str, Any] | None]
    problems: NotRequired[list[Any]]
    clock_offset_ms: NotRequired[float | None]
    deadman: NotRequired[dict[str, Any] | None]
    kill: NotRequired[Any]


class StrategyView(TypedDict):
    id: str
    kind: str
    symbols: list[str]
    approval: str  # approve | auto
    paused: bool
    paused_by: str
    pause_reason: str
    approved: int
    rejected: int
    expired: int
    superseded: int  # withdrawn for a newer request on the same strategy, symbol and side
    auto_after: int  # approved trades needed before the strategy may be switched to auto
    position: dict[str, float]  # symbol -> qty


class BreakerView(TypedDict):
    name: str
    scope: str
    tripped: bool
    action: str
    reason: str
    value: float
    limit: float
    ts: int


class LimitGauge(TypedDict):
    value: float
    limit: float  # in the same unit as value
    unit: str


class LimitsView(TypedDict):
    daily_loss: LimitGauge
    drawdown: LimitGauge
    exposure: LimitGauge
    order_rate: LimitGauge


class PortfolioView(TypedDict):
    """``Portfolio.snapshot()`` without ``positions`` and ``equity_curve``."""

    quote_currency: str
    starting_cash: float
    cash: float
    equity: float
    unrealized_pnl: float
    realized_pnl: float
    fees_paid: float
    gross_exposure: float
    peak_equity: float
    drawdown: float
    day: int | None
    day_start_equity: float
    daily_pnl: float
    open_position_count: int
    last_mark_ts: int
    marks: dict[str, float]


class PositionExitsView(TypedDict):
    """One strategy's protective exits on a symbol (engine/exits.py); a level is None when
    that exit is not set (trail: also until ATR is ready)."""

    strategy: str
    side: int  # +1 long, -1 short
    entry: float
    stop: float | None
    target: float | None
    trail: float | None
    time_stop_ts: int | None  # ns: when the time stop fires
    bars_held: int
    entry_decision_id: str
    exit_in_flight: bool
    native_stop: bool  # the protective stop works as a stop order at the venue (native_stops)


class PositionView(TypedDict):
    symbol: str
    venue: str
    qty: float
    avg_price: float
    mark: float
    unrealized_pnl: float
    realized_pnl: float  # gross of fees, as the portfolio books it
    fees: float  # paid on the symbol's fills (the pane's rPnL is realized_pnl - fees)
    share_of_equity: float
    dust: bool  # below the venue minimum: no order can close it
    exits: list[PositionExitsView]  # each strategy's protective exits on the symbol


class QuoteView(TypedDict):
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    ts: int
    venue: str


class StrategyPerformanceView(TypedDict):
    """One strategy's line of the performance table (engine.performance); money in the quote
    currency, slippage in bps, None where there is nothing to average yet."""

    strategy: str
    realized_pnl: float  # net of fees
    unrealized_pnl: float
    fees: float
    round_trips: int
    wins: int
    win_rate: float | None
    fills: int
    slippage_cost: float
    slippage_bps: float | None  # paid, against the mid of the quote the fill happened on
    model_bps: float | None  # what the model expected for the same fills
    exposure: float
    positions: dict[str, float]


class LatencyStepView(TypedDict):
    n: int
    p50_ms: float | None
    p99_ms: float | None


class PerformanceView(TypedDict):
    strategies: list[StrategyPerformanceView]
    daily: list[dict[str, Any]]  # [{"day": "2026-12-06", "pnl": ...}], oldest first
    latency: dict[str, LatencyStepView]  # "quote>decision", ..., "acknowledged>fill", "quote>fill"


class AlertLastView(TypedDict):
    ts: int  # wall clock, ns, when its delivery ended
    kind: str  # an AlertKind
    title: str
    ok: bool  # delivered (False: failed or timed out)


class AlertsView(TypedDict):
    """``engine.alerts.AlertDispatcher.view()``: the snapshot's ``alerts`` (None: no
    ``[alerts]`` section). Counts are deliveries, one per alert per destination."""

    routes: int  # destinations: each URL and the command hook
    sent: int
    failed: int
    dropped: int  # never sent: a destination's queue was full
    queued: int  # waiting or being delivered now
    last: AlertLastView | None


class Snapshot(TypedDict):
    """The whole engine state a cockpit pulls (see ``engine.client`` for what each key means)."""

    seq: int
    now: int
    mode: str  # paper | testnet | live
    profile: str
    venues: dict[str, VenueView]
    trading_state: TradingStateView
    kill_switch: KillSwitchView
    blocked: str
    strategies: list[StrategyView]
    breakers: list[BreakerView]
    limits: LimitsView
    settable_limits: dict[str, float]  # what `set-limit` can change -> the value in force
    portfolio: PortfolioView
    positions: list[PositionView]
    orders: list[OrderDict]
    quotes: dict[str, QuoteView]
    approvals: list[dict[str, Any]]  # engine.approvals.PendingApproval.to_dict()
    trace: list[EventDict]
    equity_curve: list[list[float]]  # [[ts, equity], ...]
    performance: PerformanceView
    # engine.history.AuditRecord.to_dict() plus "key" (unique, for merging light pulls)
    audit: list[dict[str, Any]]
    counters: dict[str, Any]
    alerts: AlertsView | None  # None: the config has no [alerts] section
    # Added by the socket client, only while it has lost its engine.
    connection: NotRequired[dict[str, Any]]


BOOK_ENCODING = "zlib+base64/json"
"""How an acting decision's ``book`` levels are packed (engine.bookshot)."""


def decode_book(book: Any) -> dict[str, list[list[float]]] | None:
    """An acting decision's book as ``{"bids": [[price, size], ...], "asks": [...]}`` (best
    first), or None when the row has none or it cannot be read (the reader says so)."""
    import base64
    import json
    import zlib

    if not isinstance(book, dict) or book.get("enc") != BOOK_ENCODING:
        return None
    try:
        doc = json.loads(zlib.decompress(base64.b64decode(str(book.get("z", "")))))
    except (ValueError, zlib.error):
        return None
    if not isinstance(doc, dict):
        return None
    return {"bids": list(doc.get("bids") or []), "asks": list(doc.get("asks") or [])}


def book_summary(book: Any) -> str:
    """An acting decision's book in a line: the touch, the levels kept and their age, or why
    there was none ("" for a row with no book field: a hold, or an older engine)."""
    if not isinstance(book, dict):
        return ""
    if "missing" in book:
        if book.get("no_l2_feed"):
            return f"book none: {book['missing']}"
        return f"book MISSING: {book['missing']}"
    levels = decode_book(book)
    if levels is None:
        return "book unreadable"
    bids, asks = levels["bids"], levels["asks"]
    if not bids or not asks:
        return "book empty"
    (bp, bq), (ap, aq) = bids[0][:2], asks[0][:2]
    return (
        f"book {bq:g} @ {bp:g} / {aq:g} @ {ap:g}, {len(bids)}x{len(asks)} levels, "
        f"{book.get('age_ms', 0):g} ms old"
    )


# Free text a person typed (a reason) is one line: C0/C1 controls, line separators and bidi
# controls would start a forged line in `cockpit audit` or restyle the terminal. The engine
# refuses them in a command; readers show what older journals hold escaped. The bidi controls
# are all twelve of Unicode's (Bidi_Control): the marks (ALM, LRM, RLM) change the order in
# which the signs and digits beside them are shown, as the embeddings and isolates do.
UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


# A lone surrogate (U+D800..U+DFFF) is what a JSON "\ud800" escape or an argument in a
# terminal's other encoding (Python's surrogateescape: a Latin-1 "é" reads as "\udce9")
# becomes: no UTF-8 journal row can hold it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings (dict keys included, in lists and
    dicts at any depth) replaced by U+FFFD, so the journal can record it as it is shown."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {valid_text(k): valid_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [valid_text(v) for v in value]
    if type(value) is tuple:
        return tuple(valid_text(v) for v in value)
    return value


def printable(text: str) -> str:
    """``text`` on one line as typed: control characters shown escaped (``\\n``, ``\\x1b``)."""
    return UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def paused_by_failure(strategy_id: str, reason: str) -> bool:
    """A strategy's pause reason says the engine paused it because it raised, returned a
    malformed signal or hung until the watchdog interrupted it (``EngineCore.strategy_failed``
    words it so): the cockpit's error toast and the ``strategy_failed`` alert go by this, not
    an operator's or a breaker's pause."""
    return reason.startswith(
        tuple(f"strategy {strategy_id} {how}" for how in ("raised", "returned", "did not return"))
    )


def limit_terms(pending: dict[str, Any]) -> str:
    """How a waiting limit order works, as a person reads it before approving: " post-only",
    " IOC" or " FOK", " ttl 60s" ("" for a market order or a plain limit working until done)."""
    if pending.get("order_type") != "limit":
        return ""
    text = " post-only" if pending.get("post_only") else ""
    tif = pending.get("tif")
    if tif in ("ioc", "fok"):
        text += f" {str(tif).upper()}"
    ttl = pending.get("ttl_s")
    if isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl > 0:
        text += f" ttl {ttl:g}s"
    return text
