"""Value types shared by every engine module.

Timestamps are integer nanoseconds since the Unix epoch, UTC, everywhere: they are exact,
cheap to compare, and match what exchanges and the recorded data carry. Prices and
quantities are floats for speed; rounding to tick and lot happens in the pre-trade checks.
Classes use ``slots`` because millions of quotes pass through the hot path.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from types import MappingProxyType, NoneType, UnionType
from typing import Annotated, Any, TypeVar, Union, final, get_args, get_origin

from engine.vocabulary import PASSED, IntentOrigin

NS_PER_SECOND = 1_000_000_000
NS_PER_MS = 1_000_000
# How far behind the latest time seen the engine's clock may be before it is taken to have gone
# back (a restart on a machine whose wall clock was stepped back, a replay begun again on a
# journal that ran later): more than any two venues' clocks disagree while both are taken (a
# stamp up to a minute ahead of its receipt, and a minute behind it). What was stamped later is
# then taken to have happened at the clock's time: a window keeps it a whole window from then,
# a cooldown runs whole from then (never less, and not for the length of the step on top).
CLOCK_BACK_NS = 120 * NS_PER_SECOND

_T = TypeVar("_T")


def fast_init(cls: type[_T]) -> type[_T]:
    """Give a frozen, slotted dataclass an ``__init__`` that stores each field through its slot
    descriptor: the same parameters, defaults and instance, built about twice as fast.

    The ``__init__`` that ``dataclass(frozen=True)`` writes calls ``object.__setattr__(self,
    "name", value)`` per field, which looks the attribute up by name every time; an order makes
    a dozen such objects (decision, intent, events, fill), a few microseconds each. Put it above
    ``@dataclass(slots=True, frozen=True)``, so type checkers still see the dataclass.
    """
    params: list[str] = []
    body: list[str] = []
    env: dict[str, Any] = {"_FACTORY": object()}
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"fast_init: {cls.__name__} has __post_init__")
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = f.name
        if not f.init or f.kw_only:
            raise TypeError(f"fast_init: {cls.__name__}.{name} is not a plain positional field")
        env[f"_set_{name}"] = getattr(cls, name).__set__  # the slot's member descriptor
        if f.default is not dataclasses.MISSING:
            env[f"_default_{name}"] = f.default
            params.append(f"{name}=_default_{name}")
        elif f.default_factory is not dataclasses.MISSING:
            env[f"_factory_{name}"] = f.default_factory
            params.append(f"{name}=_FACTORY")
            body.append(f"    if {name} is _FACTORY:\n        {name} = _factory_{name}()")
        else:
            params.append(name)
        body.append(f"    _set_{name}(self, {name})")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body or ["    pass"])
    exec(source, env)
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[method-assign]  # the generated __init__, by design
    return cls


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    sign: int  # +1 buy, -1 sell: a plain member attribute (set below), read on every order


class Action(StrEnum):
    """What a strategy wants: buy, sell, or nothing (a HOLD can still explain itself)."""

    BUY = "buy"
    SELL = "sell"
    HOLD = "hold"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    # A protective stop working at a venue (native_stops): a market order the venue sends when
    # its price reaches ``stop_price``. Contingent: it never counts as exposure in flight.
    STOP_MARKET = "stop_market"


class TimeInForce(StrEnum):
    """How long a limit order may work, as venues mean it."""

    GTC = "gtc"  # good till cancelled (or the engine's time to live)
    IOC = "ioc"  # immediate or cancel: take what is there on arrival, cancel the rest
    FOK = "fok"  # fill or kill: all of it on arrival, or nothing


class OrderStatus(StrEnum):
    PENDING_NEW = "pending_new"  # durable in the journal, not yet acknowledged by the venue
    NEW = "new"  # acknowledged, resting or in flight
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"

    is_terminal: bool  # FILLED, CANCELED or REJECTED: a plain member attribute (set below)
    successors: frozenset[OrderStatus]  # what may follow it (ORDER_TRANSITIONS), set below


# Plain attributes, not properties: an enum property that names members costs ~0.3 us a read
# on Python 3.11, and the order path reads these a few dozen times per order.
Side.BUY.sign = 1
Side.SELL.sign = -1
for _status in OrderStatus:
    _status.is_terminal = _status in (
        OrderStatus.FILLED,
        OrderStatus.CANCELED,
        OrderStatus.REJECTED,
    )
del _status

# The one order status transition table: which status may follow which. Every status change
# goes through ``Order.move_to``, which refuses anything not listed here. A venue may skip
# states (PENDING_NEW straight to a fill or a reject: the acknowledgement came with it), a
# partial fill may be followed by more, and the three terminal states lead nowhere: a finished
# order never becomes live again. A venue that reports otherwise is not believed (the ccxt
# broker keeps the terminal state and records the anomaly; a fill that happened still counts).
ORDER_TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = MappingProxyType(
    {
        OrderStatus.PENDING_NEW: frozenset(
            {
                OrderStatus.NEW,
                OrderStatus.PARTIALLY_FILLED,
                OrderStatus.FILLED,
                OrderStatus.CANCELED,
                OrderStatus.REJECTED,
            }
        ),
        OrderStatus.NEW: frozenset(
            {
                OrderStatus.PARTIALLY_FILLED,
                OrderStatus.FILLED,
                OrderStatus.CANCELED,
                OrderStatus.REJECTED,  # acknowledged, then refused (post-only that would cross)
            }
        ),
        OrderStatus.PARTIALLY_FILLED: frozenset(
            {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELED}
        ),
        OrderStatus.FILLED: frozenset(),
        OrderStatus.CANCELED: frozenset(),
        OrderStatus.REJECTED: frozenset(),
    }
)
for _status, _next in ORDER_TRANSITIONS.items():
    _status.successors = _next
del _status, _next


class IllegalTransition(ValueError):
    """An order status change the transition table forbids: a bug in the engine's own code
    (a venue's report is checked against the table before it is believed, never raised)."""


class Liquidity(StrEnum):
    MAKER = "maker"
    TAKER = "taker"


@final  # the engine dispatches on type(event) is ...: no subclass may hide
@fast_init
@dataclass(slots=True, frozen=True)
class Quote:
    """Top of book (L1) for one symbol at one instant."""

    symbol: str
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    ts_exchange: int
    ts_recv: int
    venue: str = "sim"

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) * 0.5

    @property
    def spread(self) -> float:
        return self.ask - self.bid


@final  # the engine dispatches on type(event) is ...: no subclass may hide
@fast_init
@dataclass(slots=True, frozen=True)
class Bar:
    """OHLCV over [ts_open, ts_open + timeframe_s). ``ts_close`` is when the bar became final."""

    symbol: str
    ts_open: int
    timeframe_s: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    venue: str = "sim"

    @property
    def ts_close(self) -> int:
        return self.ts_open + self.timeframe_s * NS_PER_SECOND


@final  # the engine dispatches on type(event) is ...: no subclass may hide
@dataclass(slots=True, frozen=True, eq=False)
class DepthUpdate:
    """A venue's L2 depth for one symbol, handed to the paper venue just before the quote it
    came with (levels best first, ``(price, size)``; as of ``ts_ns``, that quote's exchange
    time). No levels: the feed has no trusted depth for the symbol any more (forget it). The
    levels are the feed's own validated book, shared, never changed after it was made."""

    symbol: str
    bids: Sequence[tuple[float, float]]
    asks: Sequence[tuple[float, float]]
    ts_ns: int


@dataclass(slots=True, eq=False)
class BarSeries:
    """Consecutive bars of one symbol and timeframe as plain columns: bar ``i`` is ``bar(i)``.

    What a backtest feeds ``EngineCore.on_bars`` and a strategy's ``scan``: reading columns
    builds no object per bar, which is most of the cost of a bar nobody acts on. The columns
    must not change while the series is in use.
    """

    symbol: str
    timeframe_s: int
    venue: str
    ts_open: list[int]
    open: list[float]
    high: list[float]
    low: list[float]
    close: list[float]
    volume: list[float]
    # The same columns as numpy arrays (ts, open, high, low, close, volume) when the caller
    # has them (a backtest reads its data as arrays): the core's whole-series checks use them
    # instead of converting the lists again.
    arrays: tuple[Any, ...] | None = None

    def __len__(self) -> int:
        return len(self.ts_open)

    def bar(self, i: int) -> Bar:
        return Bar(
            self.symbol,
            self.ts_open[i],
            self.timeframe_s,
            self.open[i],
            self.high[i],
            self.low[i],
            self.close[i],
            self.volume[i],
            self.venue,
        )


@fast_init
@dataclass(slots=True, frozen=True)
class LimitSpec:
    """What a signal asks for when it wants a limit order rather than a market order.

    ``price`` is the limit itself; without one the engine prices it ``offset_ticks`` ticks
    behind the touch on the order's own side (a buy at the bid less n ticks, a sell at the ask
    plus n; 0 joins the touch, a negative offset reaches into the spread or across it), so a
    strategy needs neither the instrument nor the quote. ``ttl_s``: the engine cancels what is
    still working that long after it was sent (None: until filled or cancelled).
    """

    price: float | None = None
    offset_ticks: float = 0.0
    post_only: bool = False
    tif: TimeInForce = TimeInForce.GTC
    ttl_s: float | None = None


@fast_init
@dataclass(slots=True, frozen=True)
class Signal:
    """What a strategy returns: an action and why. The engine wraps it into a Decision.

    ``reduce_only`` marks an exit: it may only shrink an existing position (sizing then uses the
    position's size, and the checks treat it as exposure-reducing).
    """

    action: Action
    rule: str
    reason: str
    confidence: float
    inputs: dict[str, float] = field(default_factory=dict)
    reduce_only: bool = False
    limit: LimitSpec | None = None  # a limit order (see LimitSpec); None: a market order


@fast_init
@dataclass(slots=True, frozen=True)
class Decision:
    decision_id: str
    ts: int
    strategy_id: str
    symbol: str
    venue: str
    action: Action
    rule: str
    reason: str
    confidence: float
    inputs: dict[str, float]
    reduce_only: bool = False
    # A protective exit's link to the decision that opened the position it closes ("" else).
    entry_decision_id: str = ""


@fast_init
@dataclass(slots=True, frozen=True)
class OrderIntent:
    """An order the engine would like to send. ``intent_id`` doubles as the client order id."""

    intent_id: str
    decision_id: str
    strategy_id: str
    symbol: str
    venue: str
    side: Side
    qty: float
    order_type: OrderType
    ref_price: float
    ts: int
    limit_price: float | None = None
    reduce_only: bool = False
    # Who asked (an IntentOrigin): a strategy, the kill switch (flatten) or a person (operator).
    # Only strategy orders can need approval; flatten orders are the one kind HALTED lets through.
    origin: str = IntentOrigin.STRATEGY
    # Limit orders only: never take liquidity (refused if it would), how long it may work at
    # the venue, and how long after it is sent the engine cancels it (ns; 0: never).
    post_only: bool = False
    tif: str = TimeInForce.GTC
    ttl_ns: int = 0
    stop_price: float | None = None  # a STOP_MARKET's trigger

    @property
    def notional(self) -> float:
        return self.qty * (self.limit_price if self.limit_price is not None else self.ref_price)


@fast_init
@dataclass(slots=True, frozen=True)
class Verdict:
    """One pre-trade check's answer. ``code`` is stable (for filters and scripts)."""

    check: str
    ok: bool
    code: str
    message: str

    @staticmethod
    def passed(check: str, message: str = "ok") -> Verdict:
        return Verdict(check, True, PASSED, message)


@dataclass(slots=True)
class Order:
    client_order_id: str
    intent_id: str
    strategy_id: str
    symbol: str
    venue: str
    side: Side
    order_type: OrderType
    qty: float
    limit_price: float | None
    status: OrderStatus
    ts_created: int
    ts_updated: int
    filled_qty: float = 0.0
    avg_fill_price: float = 0.0
    fees: float = 0.0
    reduce_only: bool = False
    reason: str = ""
    # The venue's id for the order, once it is known (journaled with the order, so a restart
    # can tie the venue's trades, which often carry only this id, to the engine's order).
    venue_order_id: str = ""
    post_only: bool = False
    tif: str = TimeInForce.GTC
    expire_ts: int = 0  # the engine cancels it at this engine time (ns; 0: never)
    stop_price: float | None = None  # a STOP_MARKET's trigger at the venue

    def move_to(self, status: OrderStatus, ts: int, reason: str | None = None) -> None:
        """Change the status, through the transition table (the only place a status changes);
        stamp ``ts_updated`` and, when given, the reason. An illegal change raises
        :class:`IllegalTransition` and changes nothing."""
        if status not in self.status.successors:
            allowed = ", ".join(sorted(self.status.successors))
            raise IllegalTransition(
                f"order {self.client_order_id}: {self.status} -> {status} is not a legal status "
                "change ("
                + (f"{self.status} may become {allowed}" if allowed else f"{self.status} is final")
                + ")"
            )
        self.status = status
        self.ts_updated = ts
        if reason is not None:
            self.reason = reason

    @property
    def remaining(self) -> float:
        left = self.qty - self.filled_qty
        return 0.0 if left < 0.0 else left  # max(left, 0.0) without the call

    def copy(self) -> Order:
        """A shallow copy (what ``dataclasses.replace(order)`` gives, ten times faster)."""
        return Order(
            self.client_order_id,
            self.intent_id,
            self.strategy_id,
            self.symbol,
            self.venue,
            self.side,
            self.order_type,
            self.qty,
            self.limit_price,
            self.status,
            self.ts_created,
            self.ts_updated,
            self.filled_qty,
            self.avg_fill_price,
            self.fees,
            self.reduce_only,
            self.reason,
            self.venue_order_id,
            self.post_only,
            self.tif,
            self.expire_ts,
            self.stop_price,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Order:
        data = dict(data)
        data["side"] = Side(data["side"])
        data["order_type"] = OrderType(data["order_type"])
        data["status"] = OrderStatus(data["status"])
        return Order(**data)


@fast_init
@dataclass(slots=True, frozen=True)
class Fill:
    fill_id: str
    client_order_id: str
    strategy_id: str
    symbol: str
    venue: str
    side: Side
    qty: float
    price: float
    fee: float
    liquidity: Liquidity
    ts: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Fill:
        data = dict(data)
        data["side"] = Side(data["side"])
        data["liquidity"] = Liquidity(data["liquidity"])
        return Fill(**data)


@fast_init
@dataclass(slots=True, frozen=True)
class OrderUpdate:
    """The broker's word on an order: a copy of it after a state change."""

    order: Order
    ts: int


@fast_init
@dataclass(slots=True, frozen=True)
class Instrument:
    """What the venue allows for a symbol: the grid prices and sizes must sit on."""

    symbol: str
    venue: str
    tick_size: float
    lot_size: float
    min_qty: float = 0.0
    min_notional: float = 0.0


@fast_init
@dataclass(slots=True, frozen=True)
class PositionView:
    """The read-only view of its own position a strategy gets; it never sees a broker."""

    qty: float = 0.0
    avg_price: float = 0.0


def _kinds(annotation: Any) -> list[Any]:
    """The plain types a field takes: ``Annotated`` unwrapped, unions spread, None left out."""
    if get_origin(annotation) is Annotated:
        return _kinds(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        return [k for a in get_args(annotation) if a is not NoneType for k in _kinds(a)]
    return [annotation]


def number_misread(annotation: Any, value: Any) -> str | None:
    """Why ``value`` must not fill a number field of type ``annotation``, or None.

    pydantic's lax mode reads ``true`` as 1 and ``"1e5"`` as 100000.0: in a config file or a
    command that is a typo (``max_open_positions = true`` meant no limit of one), not a number.
    A field that also takes words (``speed = "max"`` or a factor) still refuses true/false.
    Likewise a true/false field (``enabled = "yes"`` or ``1``) takes only true or false.
    """
    kinds = _kinds(annotation)
    numbers = [k for k in kinds if k in (int, float)]
    if (
        kinds
        and all(k is bool for k in kinds)
        and not isinstance(value, bool)
        and value is not None
    ):
        # pydantic reads 1, "yes", "off" as a boolean: in a file that is a typo or a guess.
        return "must be true or false (without quotes)"
    if not numbers or bool in kinds:
        return None
    if isinstance(value, bool):
        return "must be a number, not true/false"
    if isinstance(value, str) and len(numbers) == len(kinds):
        try:
            number = float(value)
        except ValueError:  # a word (`--param fast=abc`): no quotes to take away
            return "must be a number"
        if not math.isfinite(number):
            return "must be a finite number"
        return "must be a number, not a quoted string (write it without the quotes)"
    return None
