"""Engine events: what happened, named in the past tense.

The core emits them; the runtime journals them, prints them (headless) and fans them out to
clients (the cockpit). Each event knows its journal kind and its JSON payload, so the journal,
the JSON-lines output and the control socket all speak the same shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from engine.types import Decision, Fill, Order, OrderIntent, Verdict, fast_init
from engine.vocabulary import EventKind


def _clean(value: Any) -> Any:
    """Make a payload JSON-safe: non-finite floats (never expected) become None, not NaN."""
    if isinstance(value, float) and value - value != 0.0:
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


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
        return _clean(asdict(self))


@fast_init
@dataclass(slots=True, frozen=True)
class DecisionMade(EngineEvent):
    """A strategy said something. HOLD decisions go to the trace only, not the journal."""

    kind: ClassVar[str] = EventKind.DECISION
    decision: Decision

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
