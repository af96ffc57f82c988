"""Engine events: what happened, named in the past tense.

The core emits them; the runtime journals them, prints them (headless) and fans them out to
clients (the cockpit). Each event knows its journal kind and its JSON payload, so the journal,
the JSON-lines output and the control socket all speak the same shape.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar

from engine.types import Decision, Fill, Order, OrderIntent, Verdict, fast_init
from engine.vocabulary import EventKind

# Field names per dataclass, in order, for _plain.
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _plain(value: Any) -> Any:
    """A payload made JSON-safe: what ``dataclasses.asdict`` gives, with lists and tuples as
    lists and non-finite floats (never expected) as None, not NaN.

    Written out rather than ``asdict`` because the payload of each journaled event is built on
    the engine's hot path, and asdict deep-copies every leaf (an intent's payload took ~80 us,
    most of it ``copy.deepcopy`` handing back the same str or float). Dataclasses become dicts
    of their fields in order, dicts plain dicts; str, int, bool, None and enum members are
    themselves; anything else is deep-copied as asdict does."""
    cls = type(value)
    if cls is str or cls is int or cls is bool or value is None:
        return value
    if cls is float:
        return value if value - value == 0.0 else None
    names = _FIELD_NAMES.get(cls)
    if names is None and hasattr(cls, "__dataclass_fields__") and not isinstance(value, type):
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(value))
    if names is not None:
        return {name: _plain(getattr(value, name)) for name in names}
    if isinstance(value, dict):
        return {k if type(k) is str else deepcopy(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return None if value - value != 0.0 else deepcopy(value)
    if isinstance(value, Enum):
        return value
    return deepcopy(value)


@fast_init
@dataclass(slots=True, frozen=True)
class EngineEvent:
    """Base class. ``kind`` is the journal row kind and the ``event`` field of JSON lines."""

    kind: ClassVar[str] = "event"
    # Journal the event? Market noise is not journaled; anything that acts is.
    journaled: ClassVar[bool] = True

    @property
    def ts(self) -> int:
        raise NotImplementedError

    def payload(self) -> dict[str, Any]:
        return _plain(self)


@fast_init
@dataclass(slots=True, frozen=True)
class DecisionMade(EngineEvent):
    """A strategy said something. HOLD decisions go to the trace only, not the journal."""

    kind: ClassVar[str] = EventKind.DECISION
    decision: Decision
    # An acting decision's L2 book at that moment, compressed (engine.bookshot), or why there
    # is none; added by the runtime before the row is journaled, so the chain covers it.
    book: dict[str, Any] | None = None

    @property
    def ts(self) -> int:
        return self.decision.ts

    @property
    def acts(self) -> bool:
        return self.decision.action != "hold"


@fast_init
@dataclass(slots=True, frozen=True)
class IntentChecked(EngineEvent):
    """An order intent and every pre-trade verdict, with the outcome (submitted or denied)."""

    kind: ClassVar[str] = EventKind.INTENT
    intent: OrderIntent
    verdicts: tuple[Verdict, ...]
    outcome: str  # an engine.vocabulary.IntentOutcome
    detail: str = ""

    @property
    def ts(self) -> int:
        return self.intent.ts

    @property
    def denied_codes(self) -> list[str]:
        return [v.code for v in self.verdicts if not v.ok]


@fast_init
@dataclass(slots=True, frozen=True)
class OrderUpdated(EngineEvent):
    kind: ClassVar[str] = EventKind.ORDER
    order: Order
    ts_event: int

    @property
    def ts(self) -> int:
        return self.ts_event


@fast_init
@dataclass(slots=True, frozen=True)
class FillReceived(EngineEvent):
    kind: ClassVar[str] = EventKind.FILL
    fill: Fill
    realized_pnl: float
    position_qty: float
    # The mid of the quote it happened on and the slippage the model expected (bps): journaled
    # so a restart rebuilds each strategy's slippage against the model too. None: not known.
    mid: float | None = None
    model_bps: float | None = None
    # Total equity right after the fill: journaled so a restart rebuilds the rolling-loss
    # breaker's window against the equity it was measured on live. None: not known.
    equity: float | None = None
    # Counted by the unreviewed_fills breaker (an automated fill no person has looked at):
    # journaled so a restart does not reset the count.
    unreviewed: bool = False

    @property
    def ts(self) -> int:
        return self.fill.ts


@fast_init
@dataclass(slots=True, frozen=True)
class MarksRecorded(EngineEvent):
    """Periodic marks and equity, journaled so a restart resumes from the last known prices."""

    kind: ClassVar[str] = EventKind.MARKS
    ts_event: int
    marks: dict[str, float]
    equity: float
    cash: float
    peak_equity: float
    day_start_equity: float

    @property
    def ts(self) -> int:
        return self.ts_event


@fast_init
@dataclass(slots=True, frozen=True)
class SessionChanged(EngineEvent):
    """The engine started or stopped; carries what a restart needs to know."""

    kind: ClassVar[str] = EventKind.SESSION
    ts_event: int
    session: int
    state: str  # "started" | "stopped"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ts(self) -> int:
        return self.ts_event


@fast_init
@dataclass(slots=True, frozen=True)
class QuotesRejected(EngineEvent):
    """Invalid market data stopped at the boundary, counted by reason (reported, not per quote)."""

    kind: ClassVar[str] = EventKind.QUOTES_REJECTED
    journaled: ClassVar[bool] = False
    ts_event: int
    symbol: str
    code: str
    total: dict[str, int]

    @property
    def ts(self) -> int:
        return self.ts_event


@fast_init
@dataclass(slots=True, frozen=True)
class EngineBlocked(EngineEvent):
    """The engine stopped sending orders because it cannot keep its record (the journal
    failed: disk full, an I/O error). Not journaled: the journal is what failed."""

    kind: ClassVar[str] = EventKind.BLOCKED
    journaled: ClassVar[bool] = False
    ts_event: int
    reason: str

    @property
    def ts(self) -> int:
        return self.ts_event


@fast_init
@dataclass(slots=True, frozen=True)
class SafetyChanged(EngineEvent):
    """A trading-state, kill-switch, strategy-pause, approval-mode or limit change, with its cause.

    ``by`` is "system" for automatic changes, otherwise the operator's OS user; ``before`` and
    ``after`` are the relevant state so the trace reads "Paused by system: 3 consecutive losses".
    """

    kind: ClassVar[str] = EventKind.SAFETY
    ts_event: int
    what: str  # "trading_state" | "kill_switch" | "strategy" | "approval_mode" | "limit"
    subject: str  # "engine", a strategy id, a limit name
    before: dict[str, Any]
    after: dict[str, Any]
    by: str
    reason: str
    client: str = ""

    @property
    def ts(self) -> int:
        return self.ts_event


@fast_init
@dataclass(slots=True, frozen=True)
class BreakerChanged(EngineEvent):
    """A circuit breaker tripped or re-armed (``change`` is BreakerChange.to_dict())."""

    kind: ClassVar[str] = EventKind.BREAKER
    ts_event: int
    change: dict[str, Any]

    @property
    def ts(self) -> int:
        return self.ts_event


@fast_init
@dataclass(slots=True, frozen=True)
class ApprovalRequested(EngineEvent):
    """An intent waits for a person (``approval`` is PendingApproval.to_dict())."""

    kind: ClassVar[str] = EventKind.APPROVAL_REQUESTED
    ts_event: int
    approval: dict[str, Any]

    @property
    def ts(self) -> int:
        return self.ts_event


@fast_init
@dataclass(slots=True, frozen=True)
class ApprovalDecided(EngineEvent):
    """Approved, rejected, expired or refused (``outcome`` is ApprovalOutcome.to_dict())."""

    kind: ClassVar[str] = EventKind.APPROVAL
    ts_event: int
    outcome: dict[str, Any]

    @property
    def ts(self) -> int:
        return self.ts_event


@fast_init
@dataclass(slots=True, frozen=True)
class OperatorActed(EngineEvent):
    """The audit log: who did what, from which client, the state before and after, and why."""

    kind: ClassVar[str] = EventKind.AUDIT
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

    @property
    def ts(self) -> int:
        return self.ts_event


@fast_init
@dataclass(slots=True, frozen=True)
class VenueChanged(EngineEvent):
    """A venue's standing changed: reconciled, a difference answered by a person, a venue-wide
    cancel on kill, or the balance baseline taken. ``halted`` is the venue's halt reason after
    the event ("" when trading there is allowed); ``detail`` is what the cockpit shows."""

    kind: ClassVar[str] = EventKind.VENUE
    ts_event: int
    venue: str
    what: str  # reconciled | resolved | kill | baseline
    halted: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ts(self) -> int:
        return self.ts_event


@fast_init
@dataclass(slots=True, frozen=True)
class ExitsChanged(EngineEvent):
    """A position's protective exits were attached (a fill opened or flipped it), trailed (a bar
    close moved the trailing stop or the best price since entry) or removed (flat). Journaled,
    so a restart restores the watermark and the trail exactly (``exits`` is
    ``ExitState.to_dict()``, None when removed); not in the trace."""

    kind: ClassVar[str] = EventKind.EXITS
    ts_event: int
    strategy_id: str
    symbol: str
    change: str  # "attached" | "trailed" | "removed"
    exits: dict[str, Any] | None

    @property
    def ts(self) -> int:
        return self.ts_event


@fast_init
@dataclass(slots=True, frozen=True)
class RecordingDropped(EngineEvent):
    """The market recorder could not keep up (its queue was full) or its disk failed: payloads
    the engine processed are missing from the recording. Journaled and alerted."""

    kind: ClassVar[str] = EventKind.RECORDING
    ts_event: int
    dropped: int  # since the last report
    total: int  # this run
    detail: str

    @property
    def ts(self) -> int:
        return self.ts_event
