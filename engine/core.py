"""The sans-I/O decision pipeline: market event in, events and order submissions out.

Nothing here awaits, reads a clock or touches a file: time is the event's own timestamp, so a
backtest, a replay and the live engine drive exactly the same code. The async runtime around it
journals what it returns and hands submissions to a broker only after the intent is durable.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from copy import copy
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np

from engine.approvals import ApprovalGate
from engine.breakers import BreakerBoard, BreakerChange
from engine.checks import (
    REL_EPS,
    RiskContext,
    all_passed,
    ceil_to_step,
    check_cash,
    check_gross_exposure,
    check_max_open_positions,
    check_max_order_notional,
    check_max_position,
    floor_to_step,
    round_to_grid,
    run_checks,
)
from engine.config import Config, KillSwitchConfig, RiskLimits, StrategyConfig
from engine.events import (
    ApprovalDecided,
    ApprovalRequested,
    BreakerChanged,
    DecisionMade,
    EngineEvent,
    ExitsChanged,
    FillReceived,
    IntentChecked,
    MarksRecorded,
    OrderUpdated,
    QuotesRejected,
    SafetyChanged,
)
from engine.exits import (
    NEVER,
    REFUSED_RETRY_MAX_NS,
    RETRY_NS,
    ExitKind,
    ExitRules,
    ExitStat,
    ExitState,
    Trigger,
    check_bar,
    check_price,
    check_time,
    describe,
    fmt_pct,
    fmt_price,
)
from engine.indicators import ATR
from engine.marketdata.validate import MAX_BAR_PRICE, PRICE_JUMP_FACTOR, QuoteValidator
from engine.performance import PerformanceBook
from engine.portfolio import Portfolio
from engine.safety import SafetyController, SafetyState
from engine.sizing import size_for
from engine.strategies.base import Strategy, signal_problem, tidy_signal
from engine.throttle import OrderThrottle
from engine.types import (
    NS_PER_SECOND,
    Action,
    Bar,
    BarSeries,
    Decision,
    Fill,
    Instrument,
    LimitSpec,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    OrderUpdate,
    PositionView,
    Quote,
    Side,
    Signal,
    Verdict,
    fast_init,
)
from engine.vocabulary import (
    PASSED,
    DenialCode,
    IntentOrigin,
    IntentOutcome,
    KillLevel,
    TradingState,
    paused_by_failure,
    printable,
)

_EMPTY: list[CoreOutput] = []
# Enum members read on every order: a module global is ~10x cheaper than ``Enum.MEMBER``.
_BUY, _SELL = Side.BUY, Side.SELL
_ACTION_BUY, _HOLD = Action.BUY, Action.HOLD
_ACTIVE, _HALTED, _REDUCING = TradingState.ACTIVE, TradingState.HALTED, TradingState.REDUCING
_MARKET, _LIMIT, _STOP = OrderType.MARKET, OrderType.LIMIT, OrderType.STOP_MARKET
_CANCELED = OrderStatus.CANCELED
_SUBMITTED, _DENIED = IntentOutcome.SUBMITTED, IntentOutcome.DENIED
_FROM_STRATEGY, _FROM_FLATTEN = IntentOrigin.STRATEGY, IntentOrigin.FLATTEN
_FROM_OPERATOR = IntentOrigin.OPERATOR
# The strategy id of what a person adopted from a venue (engine.config.RESERVED_STRATEGY_IDS):
# its fills are no trade of the engine's canary.
_ADOPTED = "operator"
_FROM_EXIT = IntentOrigin.EXIT
_TAKE_PROFIT = ExitKind.TAKE_PROFIT
_AWAITING_APPROVAL, _DUST = IntentOutcome.AWAITING_APPROVAL, IntentOutcome.DUST
_ENGINE_BLOCKED, _SIZE_ZERO = DenialCode.ENGINE_BLOCKED, DenialCode.SIZE_ZERO
# The longest time to live a strategy's limit may ask for (a year): beyond it, or NaN, or
# negative, the limit is denied rather than sent to work for ever.
MAX_LIMIT_TTL_S = 366 * 86_400.0
# A limit still working this long after the engine asked to cancel it at its time to live
# is cancelled again (the first cancel failed at the venue).
EXPIRY_RETRY_NS = 5 * NS_PER_SECOND
_ENGINE_HALTED, _REDUCING_ONLY = DenialCode.ENGINE_HALTED, DenialCode.REDUCING_ONLY
_STRATEGY_PAUSED, _BREAKER_TRIPPED = DenialCode.STRATEGY_PAUSED, DenialCode.BREAKER_TRIPPED
_VENUE_HALTED, _MARKET_UNSYNCED = DenialCode.VENUE_HALTED, DenialCode.MARKET_UNSYNCED
# A venue stop denied for one of these waits for a fill or a finished order on the symbol.
_NATIVE_WAITS_FOR = frozenset(
    {
        DenialCode.SIZE_ZERO,
        DenialCode.VENUE_HALTED,
        DenialCode.SPOT_SELL_EXCEEDS_HOLDING,
        DenialCode.REDUCE_ONLY_EXCEEDS_POSITION,
    }
)
# The grid verdicts of an order below the venue minimum (a close of dust, when reduce-only).
_BELOW_MIN = (DenialCode.BELOW_MIN_QTY, DenialCode.BELOW_MIN_NOTIONAL)
# The checks a resting order is judged by again when the limits change (see
# EngineCore.cancel_beyond_limits), and the denials that cancel it: a limit it is beyond, not a
# mark that is missing for the moment.
_EXPOSURE_CHECKS = (
    check_max_order_notional,
    check_max_position,
    check_max_open_positions,
    check_gross_exposure,
    check_cash,
)
_BEYOND_LIMIT = frozenset(
    {
        DenialCode.MAX_ORDER_NOTIONAL,
        DenialCode.MAX_POSITION,
        DenialCode.MAX_OPEN_POSITIONS,
        DenialCode.MAX_GROSS_EXPOSURE,
        DenialCode.INSUFFICIENT_CASH,
    }
)
# A kill-switch flatten denied for one of these is sent again on the symbol's next fresh quote.
_NEEDS_A_QUOTE = frozenset({DenialCode.STALE_QUOTE, DenialCode.NO_QUOTE, _MARKET_UNSYNCED})
# A kill switch's flatten denied for one of these is due again (on the symbol's next quote
# once nothing holds it): a missing price, a venue halted until a person answers, or an order
# of unknown fate already closing the position.
# (A reduce-only denial: an order whose send outcome is unknown still counts as closing; the
# flatten follows once it has settled, see _set_aside.)
_FLATTEN_WAITS_FOR = _NEEDS_A_QUOTE | {_VENUE_HALTED, DenialCode.REDUCE_ONLY_EXCEEDS_POSITION}
_KILL_FLATTEN = KillLevel.FLATTEN
_PENDING_NEW, _NEW, _REJECTED = OrderStatus.PENDING_NEW, OrderStatus.NEW, OrderStatus.REJECTED
# The passing safety and breaker verdicts, shared (a Verdict is a frozen value).
_SAFETY_OK = {s: Verdict("safety", True, PASSED, f"trading state {s}") for s in TradingState}
_BREAKERS_OK = Verdict("breakers", True, PASSED, "no breaker blocks it")
ATR_PERIOD = 14
# Sizing stays this far inside the notional and position caps, so that the small price move
# between the intent and its approval or fill does not push the order over the limit.
SIZING_HEADROOM = 0.98
NS_PER_DAY = 86_400 * NS_PER_SECOND
# A venue stop moves when its level moved at least this fraction (5 bps) or its size changed:
# each move is a cancel and a new order at the venue, and a trail creeps on every bar.
NATIVE_MIN_MOVE = 5e-4
# How often a venue stop is checked against the position's level and size (see _native_check).
NATIVE_RETRY_NS = 5 * NS_PER_SECOND
NATIVE_REJECTED_RETRY_NS = 60 * NS_PER_SECOND  # ... after the venue refused it
# A kill switch's flatten the venue refused (a rate limit's wait, a venue error) is sent again
# on the symbol's first quote this long after the refusal.
FLATTEN_REJECTED_RETRY_NS = 5 * NS_PER_SECOND
# ... doubled at each refusal in a row up to this (a rate-limit ban, a venue that refuses the
# close for good: not a refused order every 5 s, each journaled, alerted and counted).
FLATTEN_REJECTED_MAX_NS = 60 * NS_PER_SECOND
# The longest run of quiet bars on_bars takes at once (bounds its searches; runs just continue).
_RUN_MAX = 4096


@fast_init
@dataclass(slots=True, frozen=True)
class SubmitOrder:
    """An order the runtime must make durable (the intent row) and then hand to the broker."""

    order: Order
    intent: OrderIntent


@fast_init
@dataclass(slots=True, frozen=True)
class CancelOrder:
    """Ask the broker to cancel an open order (the kill switch, a halt, an operator)."""

    client_order_id: str
    reason: str


CoreOutput = EngineEvent | SubmitOrder | CancelOrder
"""One item of what the core returns, in order: an event (the runtime journals and publishes it)
or a broker command (SubmitOrder after its intent row is durable, CancelOrder)."""


SlippageModel = Callable[[Side, float, Quote], float]


class BarBuilder:
    """Builds time bars from quote mids; a bar closes on the first quote past its end."""

    __slots__ = ("close", "high", "low", "open", "start", "symbol", "tf_ns", "timeframe_s", "venue")

    def __init__(self, symbol: str, timeframe_s: int, venue: str) -> None:
        self.symbol = symbol
        self.timeframe_s = timeframe_s
        self.tf_ns = timeframe_s * NS_PER_SECOND
        self.venue = venue
        self.start = -1
        self.open = self.high = self.low = self.close = 0.0

    def update(self, ts: int, price: float) -> Bar | None:
        start = ts - ts % self.tf_ns
        if start == self.start:
            if price > self.high:
                self.high = price
            elif price < self.low:
                self.low = price
            self.close = price
            return None
        done = None
        if self.start >= 0:
            done = Bar(
                self.symbol,
                self.start,
                self.timeframe_s,
                self.open,
                self.high,
                self.low,
                self.close,
                0.0,
                self.venue,
            )
        self.start = start
        self.open = self.high = self.low = self.close = price
        return done


class _StrategySlot:
    """One strategy instance on one symbol, with what the core tracks for it.

    ``position`` is what has filled; ``in_flight`` the signed remaining quantity of the
    strategy's open orders on the symbol (``orders`` of them), so the strategy can be shown the
    position it will have once they complete rather than act twice on the same signal.
    ``atr`` (for volatility sizing) is shared by the slots fed the same bars (one symbol and
    timeframe), which update it once per bar: it is the same figure for each of them.
    ``atr_used``: some slot sharing it sizes by volatility (no other sizing model reads it, so
    when none does it is not kept up to date: a quiet bar then costs one indicator less).
    """

    __slots__ = (
        "atr",
        "atr_used",
        "cfg",
        "checked",
        "exit_atr",
        "exit_rules",
        "exits",
        "failed",
        "in_flight",
        "inst",
        "orders",
        "position",
        "sid",
        "strategy",
        "symbol",
    )

    def __init__(
        self,
        strategy: Strategy,
        cfg: StrategyConfig,
        inst: Instrument | None = None,
        atr: ATR | None = None,
    ) -> None:
        self.strategy = strategy
        # Its id and symbol as built: a strategy's own code may rebind ``self.strategy_id`` or
        # ``self.symbol`` (a name reused for something else); the engine never reads them back.
        self.sid = strategy.strategy_id
        self.symbol = strategy.symbol
        self.cfg = cfg
        self.inst = inst
        self.atr = atr if atr is not None else ATR(ATR_PERIOD)
        self.atr_used = True  # (EngineCore settles it for the slots sharing the ATR)
        self.position = PositionView()
        self.in_flight = 0.0
        self.orders = 0
        # The strategy raised (it is paused, see EngineCore.strategy_failed): not called again
        # until a person resumes it; its state may be half updated.
        self.failed = False
        # A trader's own strategy: each signal it returns is checked (signal_problem).
        self.checked = not type(strategy).__module__.startswith("engine.strategies.")
        # Protective exits (engine/exits.py): the rules, the trailing stop's ATR (its own
        # period, fed the same bars) and the live state of the position's exits (None: flat).
        self.exit_rules = ExitRules.from_config(cfg.exits, cfg.timeframe_s)
        rules = self.exit_rules
        self.exit_atr = (
            ATR(rules.atr_period) if rules is not None and rules.trailing_atr is not None else None
        )
        self.exits: ExitState | None = None


_FLAT = PositionView()
# The longest a trader's own strategy may take in one call in the engine: while it runs the
# engine does nothing else (the KILL file, SIGUSR1, the socket's kill, protective exits and
# the other strategies wait), and the kill switch is promised within a second. A call that took
# longer pauses it (once: it is not called again until a person resumes it).
STRATEGY_CALL_MAX_S = 1.0
_clock = time.perf_counter  # (a module global: tests step it)
# How much of a strategy's exception message the pause reason keeps.
STRATEGY_ERROR_CHARS = 200


def _utc(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _bar_where(bar: Bar, what: str = "") -> str:
    """Which bar, in words: the symbol and the UTC second it closed."""
    return f"the {bar.symbol} {what}bar closing {_utc(bar.ts_close)} UTC"


class InvalidSignal(Exception):
    """What a strategy returned is not a well-formed Signal (see ``signal_problem``)."""


class TooSlow(InvalidSignal):
    """A trader's strategy took longer than ``STRATEGY_CALL_MAX_S`` to return."""

    def __init__(self, took: float) -> None:
        super().__init__(
            f"returned after {took:.1f} s (at most {STRATEGY_CALL_MAX_S:g} s: while a strategy "
            "runs the engine does nothing else, the kill switch and protective exits included)"
        )


class StrategyOverran(BaseException):
    """Raised inside a trader's strategy call that has run past ``STRATEGY_CALL_MAX_S`` (see
    engine/watchdog.py). A BaseException, so the strategy's own ``except Exception`` does not
    swallow it."""

    def __init__(self, limit_s: float) -> None:
        super().__init__(
            f"did not return within {limit_s:g} s and was interrupted (while a strategy runs "
            "the engine does nothing else, the kill switch and protective exits included)"
        )


class StrategyFailed(Exception):
    """A strategy raised while a research run drove it: the run stops and says which and
    where (a backtest whose strategy has a bug has no result to report)."""


def _no_follow_up(_order: Order) -> list[CoreOutput]:
    return _EMPTY


def closable(inst: Instrument, qty: float, price: float) -> bool:
    """Can an order for ``|qty|`` go to the venue at ``price``: on the lot grid it is at least
    the minimum quantity and the minimum notional. A position that is not closable is dust: no
    venue accepts an order that would close it alone."""
    size = qty if qty > 0.0 else -qty
    # Well above every minimum (twice each) no rounding can take it below one: the grid
    # floor loses less than a lot, which leaves at least half the size. Cheap test first.
    if (
        0.0 < size < math.inf
        and price > 0.0
        and size >= 2.0 * inst.lot_size
        and size >= 2.0 * inst.min_qty
        and size * price >= 2.0 * inst.min_notional
    ):
        return True
    size = floor_to_step(size, inst.lot_size)
    min_qty = inst.min_qty if inst.min_qty > inst.lot_size else inst.lot_size
    # The same float tolerance as the grid check (checks.REL_EPS), so both agree at the limit.
    return (
        size > 0.0
        and size >= min_qty * (1.0 - 1e-9)
        and size * price >= inst.min_notional * (1.0 - 1e-9)
    )


def _ttl_ns(limit: LimitSpec) -> int:
    """A limit's time to live in ns: 0 until filled or cancelled, -1 one it cannot have."""
    ttl = limit.ttl_s
    if ttl is None or ttl == 0:
        return 0  # works until filled or cancelled, as asked
    if 0.0 < ttl <= MAX_LIMIT_TTL_S:
        # At least 1 ns: a positive time to live under half a nanosecond rounded to 0, which
        # means "none", and the limit worked for ever instead of at once.
        return max(round(ttl * NS_PER_SECOND), 1)
    return -1  # NaN, negative, infinite or absurd: evaluate() denies it


class EngineCore:
    """Validation, marks, bars, strategies, sizing and pre-trade checks for every market event."""

    def __init__(
        self,
        cfg: Config,
        strategies: list[Strategy],
        instruments: dict[str, Instrument],
        portfolio: Portfolio,
        *,
        session: int = 1,
        fee_rate: float = 0.001,
        slippage_model: SlippageModel | None = None,
        marks_every_s: float = 60.0,
    ) -> None:
        self.cfg = cfg
        self._live = cfg.engine.mode == "live"  # (the config is frozen)
        self.limits = cfg.risk
        self.instruments = instruments
        self.portfolio = portfolio
        self.session = session
        self.fee_rate = fee_rate
        self.validator = QuoteValidator(cfg.market.validation.max_spread_bps)
        self.throttle = OrderThrottle(
            cfg.risk.strategy_throttle,
            cfg.risk.global_throttle,
            round(cfg.market.validation.stale_after_s * NS_PER_SECOND),
        )
        self.quotes: dict[str, Quote] = {}  # the last accepted quote per symbol, never a reject
        self._reject_reports: list[EngineEvent] = []
        self.open_orders: dict[str, Order] = {}
        self.open_order_qty: dict[str, float] = {}
        # The same by side (positive): an order on the other side may never fill, so exposure
        # is judged with each side's orders alone (RiskContext.open_buy_qty, open_sell_qty).
        self.open_buy_qty: dict[str, float] = {}
        self.open_sell_qty: dict[str, float] = {}
        # The open buy LIMIT orders alone, symbol -> [quantity left, that quantity at their
        # limit prices]: the cash check reserves them at what they may cost (RiskContext).
        self.open_buy_limits: dict[str, list[float]] = {}
        self.now = 0
        # The engine's clock at its last tick: a feed that has gone quiet leaves ``now`` at its
        # last quote, but the time goes on, and the checks must see a quote's real age (an
        # operator's flatten on a silent feed was judged "quote fresh" and filled at a price
        # minutes old).
        self._clock_now = 0
        # Each venue's own clock where venues' clocks may disagree (venue feeds, see
        # set_venue_clocks; None otherwise): the breakers' venue_now, which a quote moves to
        # its stamp. A quote's age is measured on it (stale_feed, STALE_QUOTE).
        self._venue_clocks: dict[str, int] | None = None
        # Set when the engine must not trade at all (e.g. the journal cannot write): fail closed.
        self.blocked_reason = ""
        # Venues where nothing may be sent, and why (reconciliation differences a person has
        # not resolved yet). Set by the venue execution; checked for every intent.
        self.venue_halts: dict[str, str] = {}
        # How many times each venue was halted or its halt lifted, this session: a decision
        # that waited across either (a limit's move waiting for its cancel) is judged again.
        self._venue_marks: dict[str, int] = {}
        # Every fill applied (restored ones too), by (fill id, symbol): never twice.
        self._fill_ids: set[tuple[str, str]] = set()
        # Why a symbol's market data cannot be trusted right now (None: it can), asked for every
        # intent; the venue source sets it from its feeds (a reconnecting feed is unsynced).
        self.market_gate: Callable[[str], str | None] | None = None
        self._decision_seq = 0
        self._order_seq = 0
        self._next_marks_ts = 0
        # How often marks and equity are recorded (the journal's restart point); a backtest,
        # which samples equity itself, asks for it rarely.
        self._marks_every_ns = int(marks_every_s * NS_PER_SECOND)
        # The peak equity the last marks row recorded: the runtime records marks again as soon
        # as the peak has risen beyond it (PEAK_RECORD_STEP), so a kill -9 between two periodic
        # rows cannot lower the peak the drawdown limit is measured from.
        self.marks_peak = portfolio.peak_equity
        self._next_day_ts = 0
        self.slippage_model = slippage_model
        self.trace: deque[EngineEvent] = deque(maxlen=cfg.engine.trace_size)
        # Each strategy's PnL, trips, fees and slippage, and the profit of each UTC day.
        self.performance = PerformanceBook()
        ids = [s.id for s in cfg.strategies]
        self.safety = SafetyController(cfg.safety.kill_switch, ids)
        self.breakers = BreakerBoard(cfg)
        self.approvals = ApprovalGate(
            cfg.safety.approval,
            {s.id: s.approval for s in cfg.strategies},
            live=cfg.engine.mode == "live",
        )
        # What each breaker did when it tripped, so its re-arm can undo exactly that.
        self._breaker_actions: dict[tuple[str, str], str] = {}
        # Per order: the modelled slippage (bps) at intent time, for the slippage breaker.
        self._order_model: dict[str, float] = {}
        self._decisions: dict[str, Decision] = {}
        # Fees paid to open each strategy's position per symbol, charged to the round trip.
        self._open_fees: dict[tuple[str, str], float] = {}
        # Per restored fill (restore): (trade PnL or None, equity marked at fill prices, mid,
        # model bps), until restore_safety has rebuilt the breakers' counters from it.
        self._restored_trades: list[tuple[float | None, float, float | None, float | None]] = []
        self._next_clock_ts = 0
        # on_bars: rows the validator may reject in the last series seen, and how many bars a
        # run looks ahead while a position is held (its loss-limit test reads that window).
        self._irregular: tuple[BarSeries, list[int]] | None = None
        self._bar_slots: dict[str, list[_StrategySlot]] = {}
        self._held_window = 64
        # The loss limits (their sources) an operator released the kill switch over: the
        # standing loss of each is accepted until equity is back inside that limit (or the day
        # rolls); a limit not overridden still engages the switch on its first quote.
        self.loss_override: frozenset[str] = frozenset()
        # Symbols whose kill-switch flatten could not be priced (a stale quote, none yet, an
        # unsynced feed): it goes out on the symbol's next fresh quote while the switch is at
        # flatten, never on a stale price, and is never forgotten.
        self._flatten_due: set[str] = set()
        self._flatten_not_before: dict[str, int] = {}  # symbol -> a refused flatten's retry
        self._flatten_refused: dict[str, int] = {}  # symbol -> refusals in a row (the backoff)
        # The order refused_at_send is voiding (its REJECTED update on its way through
        # on_broker): a refusal of the engine's own, which a protective exit does not back off.
        self._voiding = ""
        self.set_kill_limits(cfg.safety.kill_switch)
        # Live orders with a fill so far (across restarts): the canary counts these trades. An
        # order the venue rejected, or one voided at its send, made no trade: counted at the
        # submit, five rejections ended the canary and the first trade went out uncapped.
        self.live_trades = 0
        self.live_traded: set[str] = set()  # their client order ids (counted once each)
        self._canary_limits: tuple[Any, Any] | None = None
        self.counters = {
            "decisions": 0,
            "intents": 0,
            "denied": 0,
            "submitted": 0,
            "awaiting_approval": 0,
            "fills": 0,
        }
        # Protective exits: the slots whose position has live exits, by symbol; the decision
        # behind each open order of a strategy with exits (an exit links to its entry's); what
        # closed each position-reducing order ("signal" unless recorded here: an exit kind, or
        # the flatten/operator origin) and what each kind closed (trades, net PnL).
        self._armed: dict[str, list[_StrategySlot]] = {}
        self._order_decisions: dict[str, str] = {}
        self._close_kind: dict[str, str] = {}
        self._closing: set[str] = set()
        self.exit_stats: dict[str, ExitStat] = {}
        # Limit orders: the earliest time to live still to run out (ns; NEVER: none), the
        # orders whose expiry cancel went out, and the replacements waiting for the cancel of
        # the order they replace (old client order id -> the new decision and how to price it).
        self._next_expiry = NEVER
        # Limits whose time to live ran out -> when their cancel is asked again if they are
        # still working then (a cancel the venue never got must not leave them working).
        self._expiring: dict[str, int] = {}
        # The trader's strategy call in progress (a number per call; 0: none), read by the
        # watchdog thread that interrupts one that hangs (engine/watchdog.py).
        self.calling = 0
        self._calls = 0
        self._replacing: dict[str, Callable[[Order], list[CoreOutput]]] = {}
        # Working limits a protective exit cancelled so that it can go (see _clear_for_exit).
        self._exit_cancels: dict[str, int] = {}  # coid -> when its cancel is asked again
        # Resting limits cancelled so that the ones kept stay within a lowered limit, a kill
        # switch or a pause, until done -> how to judge what was kept again. The kept orders
        # were judged as if these were gone: one answered by a fill (it lost the race to the
        # cancel) has them judged again (see cancel_beyond_limits and cancel_adding).
        # A new kill, pause or lowered limit asks such a cancel again (the venue may have lost
        # it, or refused it with a network error: nothing else asks again); each raced fill
        # then has every judgement that cancelled the order made again.
        self._rejudge_on_fill: dict[str, list[Callable[[], list[CancelOrder]]]] = {}
        # Venue stops a restart found that no exit of this config holds (its exits removed, its
        # position gone or the other way, a second one): cancelled on their symbol's next quote.
        self._stray_stops: dict[str, set[str]] = {}
        self._overrun_asked: dict[str, int] = {}  # venue stops past their allowance, the same
        # Venues whose protective stops work as native stop orders at the venue (their
        # ``native_stops``; set by the venue execution), each with how far past its stop the
        # market may go, the venue's stop still open, before the engine closes the position
        # itself (its ``native_stop_limit_bps`` as a fraction). Elsewhere stops are engine-side.
        self.native_stop_venues: dict[str, float] = {}
        # The journal's last moment at a restart: history bars closing after it move the
        # restored trailing stops in warm_up (the engine was down for them).
        self._exits_seen_until = 0
        self._exits_row_ts: dict[tuple[str, str], int] = {}  # (see restore_exits)
        # Spot venues (every ccxt venue the engine trades; set by the venue execution): the
        # account sells only coins it holds, so a sell of more than the engine holds there
        # would sell the account's other coins (the trader's own), whatever the strategy.
        self.spot_venues: frozenset[str] = frozenset()

        by_id = {s.id: s for s in cfg.strategies}
        # symbol -> timeframe -> (bar builder, slots)
        self._routes: dict[str, dict[int, tuple[BarBuilder, list[_StrategySlot]]]] = {}
        self.slots: dict[tuple[str, str], _StrategySlot] = {}
        # What a strategy that raises does: "pause" (the engine: that strategy is paused, the
        # rest trades on and the exits and kill switch keep working) or "raise" (a research
        # run stops with StrategyFailed).
        self.strategy_errors = "pause"
        # Only strategies that override on_quote are called per quote: the hot path stays cheap.
        self._quote_listeners: dict[str, list[_StrategySlot]] = {}
        self._with_exits = any(s.exits is not None and s.exits.any for s in cfg.strategies)
        for strat in strategies:
            scfg = by_id[strat.strategy_id]
            per_symbol = self._routes.setdefault(strat.symbol, {})
            venue = instruments[strat.symbol].venue if strat.symbol in instruments else "sim"
            if scfg.timeframe_s not in per_symbol:
                per_symbol[scfg.timeframe_s] = (
                    BarBuilder(strat.symbol, scfg.timeframe_s, venue),
                    [],
                )
            route = per_symbol[scfg.timeframe_s][1]
            shared_atr = route[0].atr if route else None
            slot = _StrategySlot(strat, scfg, instruments.get(strat.symbol), shared_atr)
            self.slots[(strat.strategy_id, strat.symbol)] = slot
            route.append(slot)
            if type(strat).on_quote is not Strategy.on_quote:
                self._quote_listeners.setdefault(strat.symbol, []).append(slot)
        for per_tf in self._routes.values():
            for _builder, route in per_tf.values():
                used = any(s.cfg.sizing.model == "volatility" for s in route)
                for s in route:
                    s.atr_used = used

    # ------------------------------------------------------------------ market events

    def warm_up(self, bars: list[Bar]) -> list[CoreOutput]:
        """Feed history to the strategies' indicators; signals from history never trade.
        Returns the pauses of strategies that raised on it (see :meth:`strategy_failed`).

        History marks only symbols not held: a held position's equity at old prices is not
        an equity the account ever had (the position may be younger than the bar), and marking
        it raised the peak the drawdown limit is measured from (a false automatic kill after a
        restart) and moved equity off the journal's last mark until the first real quote."""
        positions = self.portfolio.positions
        out: list[CoreOutput] = []
        for bar in bars:
            for builder, slots in self._routes.get(bar.symbol, {}).values():
                if builder.timeframe_s != bar.timeframe_s or not slots:
                    continue
                if slots[0].atr_used:
                    slots[0].atr.update(bar.high, bar.low, bar.close)  # the route's shared ATR
                for slot in slots:
                    if slot.exit_atr is not None:
                        slot.exit_atr.update(bar.high, bar.low, bar.close)
                    st = slot.exits
                    if st is not None and bar.ts_close > max(
                        st.held_ts,
                        self._exits_seen_until,
                        self._exits_row_ts.get((slot.sid, slot.symbol), 0),
                    ):
                        out.extend(self._exits_from_history(slot, st, bar))
                    if slot.failed:
                        continue
                    try:
                        self._calls += 1
                        self.calling = self._calls if slot.checked else 0
                        slot.strategy.on_bar(bar, self.strategy_view(slot, bar.close))
                        self.calling = 0
                    except BaseException as exc:  # (sys.exit() too: see strategy_failed)
                        self.calling = 0
                        out.extend(self.strategy_failed(slot, exc, _bar_where(bar, "history ")))
            held = positions.get(bar.symbol)
            if held is None or not held.qty:
                self.portfolio.mark(bar.symbol, bar.close, bar.ts_close)
        return out

    def _exits_from_history(self, slot: _StrategySlot, st: ExitState, bar: Bar) -> list[CoreOutput]:
        """A history bar the engine did not see (it was down) of a position restored with its
        exits: the watermark takes its range and the trail ratchets on it, as a running engine
        would have done at its close, so the trail is K x ATR from the best price since entry,
        the downtime's included (a market that ran up and fell back while the engine was down
        fires the trail on the first quote, at the market). Journaled as "trailed"."""
        rules = slot.exit_rules
        if rules is None or rules.trailing_atr is None:
            return _EMPTY
        st.see(bar.high if st.side > 0 else bar.low)
        rules.ratchet(st, slot.exit_atr.value if slot.exit_atr is not None else None)
        if (st.best, st.trail) == st.noted:
            return _EMPTY
        st.noted = (st.best, st.trail)
        # Stamped at the bar's close: a restart after this one (killed before it saw the
        # market) trails again only on the bars after it, from the state it reached here (the
        # same bars again from the restored best tightened the trail past what they gave).
        return [ExitsChanged(bar.ts_close, st.strategy_id, st.symbol, "trailed", st.to_dict())]

    def admit_quote(self, q: Quote) -> bool:
        """Validate ``q`` (once: the validator keeps time state); False if it was rejected,
        its report then waits in :meth:`take_reject_reports`. Only an admitted quote may go on
        to ``on_quote(q, admitted=True)``, and only then may the book that came with it reach
        a fill model."""
        code = self.validator.check(q)
        if code is not None:
            self._report_reject(q.ts_recv, q.symbol, code)
            return False
        return True

    def on_quote(self, q: Quote, admitted: bool = False) -> list[CoreOutput] | None:
        """Process one quote. Returns None if and only if the validator rejected it
        (``admitted``: :meth:`admit_quote` already took it).

        A rejected quote reaches nothing: not the marks, the strategies, the bar builder, the
        book the broker fills against or the chart. ``None`` is the callers' one signal to skip
        the quote, so the report of a reject (when one is due) is never returned here but
        waits in :meth:`take_reject_reports`; a caller that forgets to collect it loses a
        trace line, not the safety of its fills.
        """
        if not admitted:
            code = self.validator.check(q)  # admit_quote, inlined: the hot path
            if code is not None:
                self._report_reject(q.ts_recv, q.symbol, code)
                return None
        ts = q.ts_exchange
        self.now = ts
        self.quotes[q.symbol] = q
        clocks = self._venue_clocks
        if clocks is not None:
            clocks[q.venue] = ts  # its venue's clock: the stamp of the quote received last
        mid = (q.bid + q.ask) * 0.5
        out = self._marked(q.symbol, mid, ts)
        armed = self._armed.get(q.symbol)
        if armed:  # protective exits first: they never wait behind a new decision
            produced = self._price_exits(armed, mid, ts)
            if produced:
                out = out + produced if out else produced
        if self._stray_stops:
            produced = self._cancel_stray_stops(q.symbol)
            if produced:
                out = out + produced if out else produced
        listeners = self._quote_listeners.get(q.symbol)
        if listeners is not None:
            for slot in listeners:
                if slot.cfg.enabled and not slot.failed:
                    t0, call = 0.0, 0
                    if slot.checked:  # a trader's own: timed, and watched if it hangs
                        t0 = _clock()
                        self._calls = call = self._calls + 1
                    slow: BaseException | None
                    try:
                        self.calling = call  # (inside the try: an interrupt lands in it)
                        signal = slot.strategy.on_quote(q, self.strategy_view(slot, mid))
                        self.calling = 0
                    except BaseException as exc:
                        self.calling = 0
                        signal, slow = None, exc
                    else:
                        slow = self._too_slow(slot, t0)
                    if slow is not None:
                        produced = self.strategy_failed(slot, slow, f"a {q.symbol} quote")
                        out = out + produced if out else produced
                        continue
                    if signal is not None:
                        produced = self.decide(slot, signal, mid)
                        out = out + produced if out else produced
        routes = self._routes.get(q.symbol)
        if routes is None:
            return out
        for builder, slots in routes.values():
            bar = builder.update(ts, mid)
            if bar is not None:
                produced = self._run_strategies(bar, slots, False)
                if produced:
                    out = out + produced if out else produced
        return out

    def _report_reject(self, ts: int, symbol: str, code: str) -> None:
        """Queue a report of the first reject of each kind and then every 1000th."""
        total = self.validator.rejected[code]
        if total == 1 or total % 1000 == 0:
            ev = QuotesRejected(ts, symbol, code, dict(self.validator.rejected))
            self.trace.append(ev)
            self._reject_reports.append(ev)

    def take_reject_reports(self) -> list[EngineEvent]:
        """The reject reports queued since the last call (events for the journal and trace)."""
        reports = self._reject_reports
        if reports:
            self._reject_reports = []
        return reports

    def on_bar(self, bar: Bar) -> list[CoreOutput] | None:
        """A bar from a bar feed (replay); None if and only if the validator rejected it."""
        if not self.admit_bar(bar):
            return None
        return self.process_bar(bar)

    def admit_bar(self, bar: Bar) -> bool:
        """Validate ``bar`` (once: the validator keeps time state); False if it was rejected,
        its report then waits in :meth:`take_reject_reports`. Only an admitted bar may go on
        to :meth:`process_bar` or to a fill model."""
        code = self.validator.check_bar(bar)
        if code is not None:
            self._report_reject(bar.ts_close, bar.symbol, code)
            return False
        return True

    def process_bar(self, bar: Bar) -> list[CoreOutput]:
        """An admitted bar: mark at the close and run the strategies on it.

        A synthetic quote at the close (zero spread, the bar's volume as displayed size) stands
        in for the book so checks and the paper broker have a reference price.
        """
        ts = bar.ts_close
        self.now = ts
        size = max(bar.volume / bar.close if bar.close > 0 else 0.0, 1e-9) or 1.0
        self.quotes[bar.symbol] = Quote(
            bar.symbol, bar.close, bar.close, size, size, ts, ts, bar.venue
        )
        out = list(self._marked(bar.symbol, bar.close, ts))
        for _builder, slots in self._routes.get(bar.symbol, {}).values():
            out.extend(self._run_strategies(bar, slots, True))
        return out

    # ------------------------------------------------------------------ protective exits

    def exits_armed(self, symbol: str) -> bool:
        """Does some position in ``symbol`` have live protective exits (a bar may fire one)."""
        return bool(self._armed.get(symbol))

    def bar_exits(self, bar: Bar) -> list[CoreOutput]:
        """An admitted bar's range against the live exits, before :meth:`process_bar` (the
        exit happened inside the bar, before its close). Fires at most one exit per call:
        call it until it returns nothing, handing the broker ``quotes[bar.symbol]`` after each
        (the execution quote at the trigger price, stamped at the bar's last instant; the exit
        is decided at the bar's open, the moment inside the bar being unknown)."""
        armed = self._armed.get(bar.symbol)
        if not armed:
            return _EMPTY
        t_open = bar.ts_open
        t_close = t_open + bar.timeframe_s * NS_PER_SECOND
        for slot in list(armed):
            st = slot.exits
            rules = slot.exit_rules
            if (
                st is None
                or rules is None
                or st.pending
                or t_open < st.retry_ts
                or st.held_ts >= t_close
                or not self._exposed(slot, st)
            ):
                continue
            trig = check_bar(
                rules, st, bar.open, bar.high, bar.low, not self._venue_holds(st), t_open
            )
            if trig is None:
                continue
            if t_open > self.now:
                self.now = t_open
            price = trig.price
            size = max(bar.volume / price if price > 0 else 0.0, 1e-9) or 1.0
            t = t_close - 1
            self.quotes[bar.symbol] = Quote(bar.symbol, price, price, size, size, t, t, bar.venue)
            return self._fire_exit(slot, st, trig)
        return _EMPTY

    def _exposed(self, slot: _StrategySlot, st: ExitState) -> bool:
        """Is the position still open on its side once the orders in flight complete (an exit
        on its way, the strategy's own or a flatten, leaves nothing for another)? The
        strategy's working limits do not count: a take-profit resting above a falling market
        never fills, so it must not stand in for the stop (see _clear_for_exit)."""
        flight = slot.in_flight
        if flight:
            for order in self._working_limits(st):
                flight -= order.remaining * order.side.sign
        return (slot.position.qty + flight) * st.side > 0.0

    def _working_limits(self, st: ExitState) -> list[Order]:
        """The strategy's own limit orders working on the position's symbol (an entry's
        remainder, a limit exit of its own); not the exit's order, nor a venue-held stop."""
        sid, symbol, pending = st.strategy_id, st.symbol, st.pending
        return [
            o
            for o in self.open_orders.values()
            if o.order_type is _LIMIT
            and o.stop_price is None
            and o.strategy_id == sid
            and o.symbol == symbol
            and o.client_order_id != pending
        ]

    def _in_the_way(self, st: ExitState) -> list[Order]:
        """The working limits a triggered exit cancels first: its strategy's own (see
        :meth:`_working_limits`) and any other strategy's limit that is no reduce-only order on
        the closing side (another strategy's opposite entry, resting above a falling market:
        counted as already reducing the net position, it had the stop sized to nothing)."""
        own = self._working_limits(st)
        closing = _SELL if st.side > 0 else _BUY
        sid, symbol = st.strategy_id, st.symbol
        others = [
            o
            for o in self.open_orders.values()
            if o.order_type is _LIMIT
            and o.symbol == symbol
            and o.strategy_id != sid
            and o.side is closing
            and not o.reduce_only
        ]
        if not others:
            return own
        # Only when they shrink what the exit may sell (as make_intent sizes it): another
        # strategy's order beside a net position large enough for both stays.
        net = self.portfolio.positions.get(symbol)
        net_qty = net.qty if net is not None else 0.0
        with_open = net_qty + closing.sign * self._open_side(symbol, closing)
        reducible = min(abs(net_qty), abs(with_open)) if with_open * net_qty > 0 else 0.0
        slot = self.slots.get((sid, symbol))
        need = abs(slot.position.qty) if slot is not None else 0.0
        if reducible >= need * (1 - 1e-9):
            return own
        return own + others

    def _clear_for_exit(self, st: ExitState, resting: list[Order], why: str) -> list[CoreOutput]:
        """A triggered exit first cancels its strategy's working limits on the symbol: while
        one rests, the exit is sized and reduce-only-checked as if it would fill (a take-profit
        limit above a falling market never does, and the stop would send nothing), and an
        entry's remainder would add to the position being closed. The exit goes on the first
        check after the cancels are confirmed; a move waiting on one of them is dropped."""
        out: list[CoreOutput] = []
        now = self._symbol_now(st.symbol)  # (its quotes judge these waits: its venue's clock)
        for order in resting:
            coid = order.client_order_id
            again = self._exit_cancels.get(coid)
            if again is not None and now < again:
                continue  # asked less than a second ago
            # Asked again while it still works a second later: a cancel lost at the venue
            # must not hold the stop back for as long as the limit rests.
            self._exit_cancels[coid] = now + RETRY_NS
            self._replacing.pop(coid, None)  # a move waiting on it is dropped
            # (asked even when a move asked before: that cancel did not take, or the order
            # would be done; an expiring one is asked again by expire_orders)
            if coid not in self._expiring:
                out.append(CancelOrder(coid, f"cancelled for the protective exit: {why}"))
        st.retry_ts = now  # looked at again on the next event
        return out

    def _price_exits(self, armed: list[_StrategySlot], price: float, ts: int) -> list[CoreOutput]:
        """A quote's mid against every live exit on its symbol (the watermark follows it)."""
        out: list[CoreOutput] = []
        for slot in list(armed):
            st = slot.exits
            rules = slot.exit_rules
            if st is None or rules is None:
                continue
            st.see(price)
            if st.pending or ts < st.retry_ts or not self._exposed(slot, st):
                continue
            held = bool(st.native) and self._venue_holds(st)
            if held:
                overrun = self._native_overrun(slot, st, price)
                if overrun:
                    out.extend(overrun)
                    continue
            trig = check_price(rules, st, price, not held) or check_time(rules, st, ts, price)
            if trig is not None:
                out.extend(self._fire_exit(slot, st, trig))
            elif st.native and not held:
                out.extend(self._native_unwanted(st))
            elif self.native_stop_venues and ts >= st.native_retry:
                out.extend(self._native_check(slot, st, ts))
        return out

    def _cancel_stray_stops(self, symbol: str) -> list[CoreOutput]:
        """The stray venue stops of ``symbol`` (see _link_native_stops) are cancelled, each
        asked again a second later until it is gone."""
        stray = self._stray_stops.get(symbol)
        if not stray:
            return _EMPTY
        out: list[CoreOutput] = []
        for coid in sorted(stray):
            order = self.open_orders.get(coid)
            if order is None:
                stray.discard(coid)
                continue
            asked = self._overrun_asked.get(coid)
            now = self._symbol_now(symbol)
            if asked is not None and now < asked:
                continue
            self._overrun_asked[coid] = now + RETRY_NS
            out.append(
                CancelOrder(coid, "a venue stop of an earlier session that no exit here holds")
            )
        if not stray:
            del self._stray_stops[symbol]
        return out

    def _venue_holds(self, st: ExitState) -> bool:
        """Does the venue hold the position's stop: a stop order of it works there and the
        venue's ``native_stops`` is on. A stop taken back at a restart on a venue whose
        ``native_stops`` has since been turned off is not one: the engine watches the levels."""
        if not st.native:
            return False
        inst = self.instruments.get(st.symbol)
        return inst is not None and inst.venue in self.native_stop_venues

    def _native_unwanted(self, st: ExitState) -> list[CoreOutput]:
        """A venue stop taken back at a restart on a venue whose ``native_stops`` is now off:
        nothing would move it with the trail or cancel it with the position, so it is cancelled
        (asked again each second until it is gone); the engine watches the levels itself."""
        coid = st.native
        old = self.open_orders.get(coid)
        asked = self._overrun_asked.get(coid)
        now = self._symbol_now(st.symbol)
        if old is None or (asked is not None and now < asked):
            return _EMPTY
        self._overrun_asked[coid] = now + RETRY_NS
        venue = self.instruments[st.symbol].venue
        return self._cancel_then(
            old,
            _no_follow_up,
            f"native_stops is off at {venue}: the venue stop goes, the engine watches the level",
        )

    def _native_check(self, slot: _StrategySlot, st: ExitState, ts: int) -> list[CoreOutput]:
        """On a native-stop venue, every 5 s on a quote on the safe side of the levels (no
        trigger fired): the venue stop is brought in line with the position's level and size
        again. A stop that did not go out (its placement denied or refused, the exit it was
        cancelled for not sent, a halt's cancel-all since released) is placed; one left at an
        old level or size (its move's cancel lost, a crash between the trail and the move) is
        moved, its cancel asked again. Not while HALTED: a kill at ``halt`` leaves the levels
        to the engine until it is released."""
        if self.safety.trading_state is _HALTED:
            return _EMPTY
        st.native_retry = ts + NATIVE_RETRY_NS
        old = self.open_orders.get(st.native) if st.native else None
        then = self._replacing.get(st.native) if old is not None else None
        if old is not None and then is not None:
            # Its cancel is on its way (a move, an exit waiting on it) and not confirmed 5 s
            # on: asked again, the same follow-up kept (a cancel lost at the venue left the old
            # stop resting, and the engine not watching the level, for good).
            return self._cancel_then(old, then, "venue stop: its cancel is asked again")
        out = self._native_sync(slot)
        for item in out:
            if type(item) is IntentChecked and (
                item.outcome == _DUST
                or (item.outcome == _DENIED and not _NATIVE_WAITS_FOR.isdisjoint(item.denied_codes))
            ):
                # Nothing a few seconds later changes that (dust; nothing to sell: another
                # strategy's opposite position nets the symbol flat, or the balance is another
                # order's; the venue halted until a person answers): asked again once a fill
                # or a finished order on the symbol, or the venue's reconciliation, changes it.
                st.native_retry = NEVER
        return out

    def _bar_close_exits(self, slot: _StrategySlot, bar: Bar, ranged: bool) -> list[CoreOutput]:
        """A bar of the strategy's timeframe closed: the watermark takes the bar's range (a bar
        feed; built from quotes, it followed every quote already), the trail ratchets, and the
        time stop is due or not."""
        st = slot.exits
        rules = slot.exit_rules
        if st is None or rules is None:
            return _EMPTY
        ts = bar.ts_close
        out: list[CoreOutput] = []
        if ranged and st.held_ts < ts:
            st.see(bar.high if st.side > 0 else bar.low)
        if rules.trailing_atr is not None:
            atr = slot.exit_atr.value if slot.exit_atr is not None else None
            rules.ratchet(st, atr)
            if (st.best, st.trail) != st.noted:
                st.noted = (st.best, st.trail)
                ev = ExitsChanged(self.now, st.strategy_id, st.symbol, "trailed", st.to_dict())
                out.append(ev)
                if self.native_stop_venues:
                    out.extend(self._native_sync(slot))
        if not st.pending and ts >= st.retry_ts and self._exposed(slot, st):
            trig = check_time(rules, st, ts, bar.close)
            if trig is not None:
                out.extend(self._fire_exit(slot, st, trig))
        return out

    def _fire_exit(self, slot: _StrategySlot, st: ExitState, trig: Trigger) -> list[CoreOutput]:
        """A triggered exit: a decision (its rule the exit's kind, linked to the entry's
        decision) and a reduce-only intent through every check, the journal and the trace."""
        rules = slot.exit_rules
        assert rules is not None
        atr = slot.exit_atr.value if slot.exit_atr is not None else None
        reason, inputs = describe(trig, rules, st, atr, self.now)
        resting = self._in_the_way(st)
        if resting:
            return self._clear_for_exit(st, resting, reason)
        stop = self.open_orders.get(st.native) if st.native else None
        if stop is not None:
            # An exit of the engine's (a take-profit, a time stop) while the venue holds the
            # stop: the stop goes first (a spot venue holds the balance it would sell, so the
            # exit's sell was refused for want of it), then the exit, if still due.
            def fire(_old: Order) -> list[CoreOutput]:
                if slot.exits is not st or st.native or st.pending or not self._exposed(slot, st):
                    return _EMPTY
                if trig.kind is _TAKE_PROFIT and not self._target_still_reached(st, rules):
                    # The price came back while the venue took the cancel: a target is a
                    # price the trader asked for, not a market sell below it; the stop goes
                    # back at once (the position has none at the venue now).
                    return self._native_sync(slot)
                return self._fire_exit(slot, st, trig)

            # (on its venue's clock: the symbol's quotes judge it, see _symbol_now)
            st.retry_ts = self._symbol_now(st.symbol) + RETRY_NS  # cancel asked again in 1 s
            return self._cancel_then(stop, fire, f"venue stop cancelled for the exit: {reason}")
        self._decision_seq += 1
        self.counters["decisions"] += 1
        inst = self.instruments[st.symbol]
        decision = Decision(
            f"d{self.session}-{self._decision_seq}",
            self.now,
            st.strategy_id,
            st.symbol,
            inst.venue,
            Action.SELL if st.side > 0 else _ACTION_BUY,
            trig.kind.value,
            reason,
            1.0,
            inputs,
            True,
            st.entry_decision_id,
        )
        made = DecisionMade(decision)
        self.trace.append(made)
        st.retry_ts = self._symbol_now(st.symbol) + RETRY_NS  # unless it goes out (then: done)
        superseded = self._supersede_approvals(st, reason)
        result = self.evaluate(self.make_intent(decision, slot, trig.price, _FROM_EXIT), decision)
        for item in result:
            if type(item) is SubmitOrder:
                coid = item.order.client_order_id
                st.pending = coid
                self._close_kind[coid] = trig.kind.value
            elif type(item) is IntentChecked and (
                item.outcome == _DUST
                or (
                    item.outcome == _DENIED
                    and (_SIZE_ZERO in item.denied_codes or _VENUE_HALTED in item.denied_codes)
                )
            ):
                # No order can close it now (dust; nothing to sell: another strategy's
                # opposite position nets the symbol flat; its venue halted until a person
                # answers): asked again once a fill or a finished order on the symbol, or the
                # venue's reconciliation, changes that, not every second.
                st.retry_ts = NEVER
        self.counters["exits_fired"] = self.counters.get("exits_fired", 0) + 1
        return [made, *superseded, *result]

    def _target_still_reached(self, st: ExitState, rules: ExitRules) -> bool:
        """Is the take-profit still reached at the symbol's last accepted quote."""
        q = self.quotes.get(st.symbol)
        if q is None:
            return False
        hit = check_price(rules, st, (q.bid + q.ask) * 0.5, protective=False)
        return hit is not None and hit.kind is _TAKE_PROFIT

    def _supersede_approvals(self, st: ExitState, reason: str) -> list[CoreOutput]:
        """The strategy's own requests on the exit's side still waiting for a person are
        rejected ("superseded by" the exit): the exit is sized as if they would go, so while
        one waited (and a strategy re-asking each bar keeps one waiting) the stop sent
        nothing and the position rode on, unprotected, until someone answered."""
        side = _SELL if st.side > 0 else _BUY
        sid, symbol = st.strategy_id, st.symbol

        def keep(intent: OrderIntent) -> bool:
            mine = intent.strategy_id == sid and intent.symbol == symbol
            return not (mine and intent.side is side)

        if not any(not keep(p.intent) for p in self.approvals.pending()):
            return []
        out: list[CoreOutput] = []
        why = f"superseded by the protective exit ({reason})"
        for outcome in self.approvals.cancel_all(self.now, why, "engine", keep):
            ev = ApprovalDecided(self.now, outcome.to_dict())
            self.trace.append(ev)
            out.append(ev)
        return out

    def _exits_after_fill(self, slot: _StrategySlot, before: PositionView, fill: Fill) -> Any:
        """Attach exits to a position a fill opened or flipped (resetting them), follow the
        average entry when it added, remove them when flat. Returns the ExitsChanged or None."""
        rules = slot.exit_rules
        if rules is None:
            return None
        after = slot.position
        st = slot.exits
        sym = fill.symbol
        if after.qty == 0.0:
            if st is None:
                return None
            self._disarm(slot)
            return ExitsChanged(fill.ts, st.strategy_id, sym, "removed", None)
        side = 1 if after.qty > 0 else -1
        inst = slot.inst
        if (
            st is not None
            and st.side == side
            and before.qty * side > 0
            # Dust left by an exit (too small to close) reads as flat to the strategy: an
            # entry on top of it is a new position, not an add. Followed as an add, it took
            # the old position's time stop (due at once) and trail (above the market after
            # the trailing stop fired) and was closed on the next quote or bar.
            and (inst is None or closable(inst, before.qty, fill.price))
        ):
            st.entry = after.avg_price  # added to (or reduced): the stops follow the average
            st.retry_ts = 0  # a changed position may be closable again (e.g. no longer dust)
            return None
        st = ExitState(
            fill.strategy_id,
            sym,
            side,
            after.avg_price,
            fill.ts,
            self._order_decisions.get(fill.client_order_id, ""),
            fill.price,
        )
        rules.ratchet(st, slot.exit_atr.value if slot.exit_atr is not None else None)
        st.noted = (st.best, st.trail)
        if slot.exits is None:
            self._armed.setdefault(sym, []).append(slot)
        slot.exits = st
        return ExitsChanged(fill.ts, st.strategy_id, sym, "attached", st.to_dict())

    def _disarm(self, slot: _StrategySlot) -> None:
        st = slot.exits
        slot.exits = None
        if st is None:
            return
        armed = self._armed.get(st.symbol)
        if armed is not None and slot in armed:
            armed.remove(slot)
            if not armed:
                del self._armed[st.symbol]

    def _link_native_stops(self) -> None:
        """After a restart: a restored position's protective stop that still works at its
        venue (an open stop order of the strategy on the symbol) is the position's again."""
        for order in self.open_orders.values():
            if order.order_type is not _STOP:
                continue
            slot = self.slots.get((order.strategy_id, order.symbol))
            st = slot.exits if slot is not None else None
            if st is None or order.side.sign != -st.side or st.native:
                # Nothing of this config would move it with a trail or cancel it with the
                # position, and a reduce-only stop left resting sells the strategy's next
                # position at an old level (on spot it holds the balance its sells need). A
                # strategy no longer configured keeps it: it is its position's only stop.
                if slot is not None:
                    self._stray_stops.setdefault(order.symbol, set()).add(order.client_order_id)
                continue
            st.native = order.client_order_id
            st.native_level = order.stop_price or 0.0
            st.native_qty = order.remaining
            # What it closes, for the exit counts: the stop-loss when it sits at the
            # stop-loss level (within a tick), else the trail.
            rules = slot.exit_rules if slot is not None else None
            stop = rules.stop(st) if rules is not None else None
            tick = self.instruments[order.symbol].tick_size
            trailing = rules is not None and rules.trailing_atr is not None
            near = stop is not None and abs(stop - st.native_level) <= tick
            self._close_kind[st.native] = "trailing_stop" if trailing and not near else "stop_loss"

    def restore_exits(
        self,
        rows: dict[tuple[str, str], dict[str, Any] | None],
        seen_until: int = 0,
        rows_ts: dict[tuple[str, str], int] | None = None,
    ) -> None:
        """After :meth:`restore`: the exits the restored fills attached take the watermark,
        trail and entry decision journaled for the same position (same side and entry fill),
        so the restarted engine fires at the same levels. ``rows``: the last journaled
        ``exits`` of each (strategy, symbol); ``seen_until``: the journal's last moment (the
        history bars closing after it were not seen: :meth:`warm_up` trails on them);
        ``rows_ts``: the time of each row (a position's own rows may reach further: those a
        restart trailed on history are stamped at their bar's close)."""
        self._exits_seen_until = seen_until
        self._exits_row_ts = {}
        for key, slot in self.slots.items():
            st = slot.exits
            row = rows.get(key)
            if st is None or not row:
                continue
            if row.get("side") != st.side or row.get("entry_ts") != st.entry_ts:
                continue  # a row of an earlier position (the fill after it was not followed)
            st.entry_decision_id = str(row.get("entry_decision_id") or "")
            best, trail = row.get("best"), row.get("trail")
            if isinstance(best, int | float) and (best - st.best) * st.side > 0:
                st.best = float(best)
            if (
                slot.exit_rules is not None
                and slot.exit_rules.trailing_atr is not None  # (the config may have dropped it)
                and isinstance(trail, int | float)
                and trail > 0
                and (st.trail is None or (trail - st.trail) * st.side > 0)
            ):
                st.trail = float(trail)
            st.noted = (st.best, st.trail)
            if rows_ts is not None and key in rows_ts:
                self._exits_row_ts[key] = rows_ts[key]
        self._link_native_stops()

    # ------------------------------------------------------------------ native venue stops

    def _native_after_fill(self, slot: _StrategySlot, native: str, fill: Fill) -> list[CoreOutput]:
        """A fill on a strategy whose venue holds its stops: the stop follows the position
        (placed when one opens, resized or moved when it changes, cancelled when it closes or
        flips; the stop's own fills change nothing but the position)."""
        out: list[CoreOutput] = []
        st = slot.exits
        if (
            native
            and fill.client_order_id != native
            and (st is None or st.native != native)
            and native in self.open_orders  # the position it protected is gone
        ):
            out.append(CancelOrder(native, "position closed or flipped: its venue stop goes"))
        if st is not None and fill.client_order_id != native:
            out.extend(self._native_sync(slot))
        return out

    def _native_target(self, slot: _StrategySlot) -> tuple[Any, float, float] | None:
        """(kind, trigger on the grid, quantity) the venue stop of the slot should have, or
        None when it should have none (not a native venue, no protective level, nothing held,
        an exit of the engine's on its way)."""
        st, rules = slot.exits, slot.exit_rules
        if st is None or rules is None or st.pending:
            return None
        inst = self.instruments.get(st.symbol)
        if inst is None or inst.venue not in self.native_stop_venues:
            return None
        prot = rules.protective(st)
        qty = floor_to_step(abs(slot.position.qty), inst.lot_size)
        if prot is None or qty <= 0.0:
            return None
        kind, level = prot
        tick = inst.tick_size
        on_grid = ceil_to_step(level, tick) if st.side > 0 else floor_to_step(level, tick)
        if self._through_market(st, on_grid):
            return None  # the engine closes at the market (a venue refuses a stop this side)
        return kind, on_grid, qty

    def _through_market(self, st: ExitState, level: float) -> bool:
        """Is a protective level at or past the market (the last mid): a trail that ratcheted
        above a long's market on a bar that spiked and fell back. A stop there would trigger at
        once, which a venue refuses ("would trigger immediately": a rejected order, counted);
        it is the engine's to fire, at the market, on the next quote."""
        q = self.quotes.get(st.symbol)
        return q is not None and ((q.bid + q.ask) * 0.5 - level) * st.side <= 0.0

    def _native_sync(self, slot: _StrategySlot) -> list[CoreOutput]:
        """Bring the venue stop in line with the position's protective level and size: place
        it, or move it (cancel, then the new one once the venue confirms the cancel)."""
        st = slot.exits
        if st is None:
            return _EMPTY
        # checked again 5 s on (_native_check), on the symbol's venue's clock
        st.native_retry = self._symbol_now(slot.symbol) + NATIVE_RETRY_NS
        want = self._native_target(slot)
        old = self.open_orders.get(st.native) if st.native else None
        if old is None:
            st.native = ""
            return self._place_native(slot) if want is not None else _EMPTY
        if want is None:
            if not st.pending and self._through_market(st, st.native_level):
                return _EMPTY  # the venue's stop is reached: the venue's (or the overrun's)
            prot = slot.exit_rules.protective(st) if slot.exit_rules is not None else None
            why = (
                "the engine's own exit is on its way"
                if st.pending
                else f"its level {fmt_price(prot[1])} is through the market: the engine closes"
                if prot is not None and self._through_market(st, prot[1])
                else "no stop to hold"
            )
            return self._cancel_then(old, _no_follow_up, f"venue stop cancelled: {why}")
        _kind, level, qty = want
        if qty == st.native_qty and abs(level - st.native_level) < level * NATIVE_MIN_MOVE:
            return _EMPTY  # (a trail that crept a little: not worth a cancel and a new order)
        return self._cancel_then(
            old,
            lambda _old: self._place_native(slot),
            f"venue stop moves: {fmt_price(st.native_level)} -> {fmt_price(level)}, "
            f"qty {st.native_qty:g} -> {qty:g}",
        )

    def _native_overrun(self, slot: _StrategySlot, st: ExitState, price: float) -> list[CoreOutput]:
        """The market went past the venue's stop by more than the venue's allowance and the
        stop is still open (a stop-limit gapped past its limit, or a venue that did not act):
        while it runs, the engine takes over: cancel the venue stop, then close at the market
        through the order path (unless the venue's stop filled meanwhile)."""
        inst = self.instruments[st.symbol]
        allowance = self.native_stop_venues.get(inst.venue)
        coid = st.native
        old = self.open_orders.get(coid)
        if allowance is None or old is None:
            return _EMPTY
        asked = self._overrun_asked.get(coid)
        now = self._symbol_now(st.symbol)
        if asked is not None and now < asked:
            return _EMPTY  # its cancel was asked less than a second ago
        level = st.native_level
        if (price - level * (1.0 - st.side * allowance)) * st.side >= 0.0:
            return _EMPTY
        # Asked again each second while the venue stop still works past the allowance: a
        # cancel lost at the venue must not leave the engine waiting while the market runs
        # (and a move of the stop waiting on its cancel gives way to the close).
        self._overrun_asked[coid] = now + RETRY_NS
        kind = ExitKind(self._close_kind.get(coid, ExitKind.STOP_LOSS))
        trig = Trigger(kind, level, price)

        def close(_old: Order) -> list[CoreOutput]:
            if slot.exits is not st or st.native or st.pending or not self._exposed(slot, st):
                return _EMPTY
            return self._fire_exit(slot, st, trig)

        if asked is None:
            self.counters["native_overruns"] = self.counters.get("native_overruns", 0) + 1
        return self._cancel_then(
            old,
            close,
            f"the market is past the venue stop at {fmt_price(level)} by more than "
            f"{allowance * 1e4:g} bps and it has not filled: the engine closes at the market",
        )

    def _place_native(self, slot: _StrategySlot) -> list[CoreOutput]:
        """A protective stop order at the venue for the slot's position, through the order
        path (a reduce-only exit intent: every check, the journal, the trace)."""
        st = slot.exits
        want = self._native_target(slot)
        if st is None or want is None or st.native:
            return _EMPTY
        kind, level, qty = want
        inst = self.instruments[st.symbol]
        self._decision_seq += 1
        self.counters["decisions"] += 1
        where = "" if st.side > 0 else "short "
        move = (level / st.entry - 1.0) * 100.0 if st.entry > 0 else 0.0
        label = "stop-loss" if kind == "stop_loss" else "trailing stop"
        decision = Decision(
            f"d{self.session}-{self._decision_seq}",
            self.now,
            st.strategy_id,
            st.symbol,
            inst.venue,
            Action.SELL if st.side > 0 else _ACTION_BUY,
            str(kind),
            f"{label} at {fmt_price(level)} held at {inst.venue} (native stop): "
            f"{where}entry {fmt_price(st.entry)}, {fmt_pct(move)}",
            1.0,
            {"entry": st.entry, "level": level, "side": float(st.side), "qty": qty},
            True,
            st.entry_decision_id,
        )
        made = DecisionMade(decision)
        self.trace.append(made)
        q = self.quotes.get(st.symbol)
        ref = (q.bid + q.ask) * 0.5 if q is not None else level
        side = _SELL if st.side > 0 else _BUY
        intent = replace(
            self._intent(decision, side, qty, ref, True, _FROM_EXIT),
            order_type=_STOP,
            stop_price=level,
        )
        result = self.evaluate(intent, decision)
        for item in result:
            if type(item) is SubmitOrder:
                coid = item.order.client_order_id
                st.native, st.native_level, st.native_qty = coid, level, qty
                self._close_kind[coid] = str(kind)
                self.counters["native_stops"] = self.counters.get("native_stops", 0) + 1
        return [made, *result]

    def exits_view(self, symbol: str) -> list[dict[str, Any]]:
        """Each strategy's live exits on ``symbol``, for the snapshot's Positions pane."""
        out: list[dict[str, Any]] = []
        for slot in self._armed.get(symbol, ()):
            st, rules = slot.exits, slot.exit_rules
            if st is None or rules is None:
                continue
            tf_ns = rules.timeframe_s * NS_PER_SECOND
            out.append(
                {
                    "strategy": st.strategy_id,
                    "side": st.side,
                    "entry": st.entry,
                    "stop": rules.stop(st),
                    "target": rules.target(st),
                    "trail": st.trail,
                    "time_stop_ts": rules.time_stop_ts(st),
                    "bars_held": max(0, (self.now - st.held_ts) // tf_ns),
                    "entry_decision_id": st.entry_decision_id,
                    "exit_in_flight": bool(st.pending),
                    "native_stop": self._venue_holds(st),
                }
            )
        return out

    def on_bars(
        self, bars: BarSeries, start: int, stop: int, equity: list[float]
    ) -> tuple[int, list[CoreOutput] | None]:
        """``on_bar`` for ``bars[start:stop]`` without a Bar, a Quote or a call per quiet bar.

        A backtest's hot path. A run goes on while a bar can do nothing but mark and feed the
        indicators: every check that ``on_bar`` makes per bar is settled for the whole run
        beforehand (validation rows, day roll, marks record, breaker and approval timers, the
        loss limits), so none of them is skipped, only asked once. Returns ``(k, out)``: bars
        ``start`` to ``k - 1`` were processed and reported nothing (equity after each appended
        to ``equity``); ``out`` is ``on_bar``'s result for bar ``k`` when the strategy signalled
        there (the decision sees exactly the state ``on_bar`` would give it; equity not yet
        appended), else None and bar ``k`` is untouched (``k == start``: give it to ``on_bar``).
        One strategy per symbol at most; with more, every bar goes to ``on_bar``.
        """
        if start >= stop:
            return start, None
        sym = bars.symbol
        slots = self._bar_slots.get(sym)
        if slots is None:  # every strategy that on_bar runs for the symbol, in its order
            slots = [s for _b, ss in self._routes.get(sym, {}).values() for s in ss]
            self._bar_slots[sym] = slots
        if len(slots) > 1 or self.loss_override or self._flatten_due:
            return start, None
        slot = slots[0] if slots else None
        ts_open = bars.ts_open
        tf_ns = bars.timeframe_s * NS_PER_SECOND
        # The validator passes every row up to the next irregular one (see _irregular_rows),
        # provided the first follows on from the last bar it accepted (later than it, no jump).
        key = (sym, bars.venue, bars.timeframe_s)
        if self.validator.bar_order_code(key, ts_open[start], bars.high[start], bars.low[start]):
            return start, None
        cached = self._irregular
        irregular = (
            cached[1] if cached is not None and cached[0] is bars else self._irregular_rows(bars)
        )
        at = bisect_left(irregular, start)
        end = start + _RUN_MAX
        if stop < end:
            end = stop
        if at < len(irregular) and irregular[at] < end:
            end = irregular[at]
        # Timers: day roll, marks record, breakers (stale feeds, cool-downs), approval expiry.
        until = min(
            self._next_day_ts - 1,
            self._next_marks_ts - 1,
            self.breakers.quiet_until(sym, ts_open[start] + tf_ns),
            self.approvals.quiet_until(),
        )
        end = bisect_right(ts_open, until - tf_ns, start, end)
        # Loss limits (the automatic kill): only where one could engage.
        p = self.portfolio
        pos = p.positions.get(sym)
        held = pos is not None and pos.qty != 0
        if held and start + self._held_window < end:  # equity moves with every bar: look at
            end = start + self._held_window  # a bounded window at a time
        safety = self.safety
        if end > start and safety.auto_kill_due():
            floor = p.day_start_equity * safety.daily_keep
            end = p.first_breach(sym, bars.close, start, end, floor, safety.dd_keep)
        armed = slot.exits if slot is not None else None
        if armed is not None and end > start:
            # Live exits: the run ends before the first bar that fires one (bar_exits on its
            # range, or the time stop due at its close); that bar goes through on_bar.
            assert slot is not None
            end = self._exits_walk(
                slot, bars, start, end, replace(armed), copy(slot.exit_atr), probe=True
            )
        if end <= start:
            return start, None
        if slot is not None and slot.cfg.enabled:
            # The strategy's view is fixed for the run: its filled position, unless that is
            # dust at some price in the run (or orders wait for approval): then bar by bar.
            view = slot.position
            if (
                slot.orders
                or self.approvals.has_pending()
                or (view.qty and not self._closable_over(slot, bars.close, start, end))
            ):
                return start, None
            try:
                k, signal = slot.strategy.scan(bars, start, end, view)
            except BaseException as exc:
                if self.strategy_errors != "raise" or type(exc) is KeyboardInterrupt:
                    raise  # (only research runs, which stop on a strategy's exception, come here)
                where = (
                    f"one of the {sym} bars closing {_utc(ts_open[start] + tf_ns)} to "
                    f"{_utc(ts_open[end - 1] + tf_ns)} UTC"
                )
                raise StrategyFailed(self._strategy_error(slot, exc, where)) from exc
            if slot.checked and not (
                isinstance(k, int | np.integer)
                and (k == end if signal is None else start <= k < end)
            ):
                # A trader's own scan must say where it stopped as on_bar would: bar ``end``
                # with nothing, or the bar that signalled. Another index skipped bars past
                # the exits, loss limits and timers this run was cut at, or fed bars twice.
                raise StrategyFailed(
                    f"strategy {slot.sid}'s scan returned bar {k!r:.40} for bars {start} to "
                    f"{end - 1} ({'a signal' if signal is not None else 'no signal'}): it must "
                    f"return (index of the bar that signalled, signal) or ({end}, None)"
                )
        else:
            k, signal = end, None
        if held:  # grow the window while the strategy keeps quiet, else start small again
            self._held_window = min(self._held_window * 2, 8192) if signal is None else 64
        # Leave everything as on_bar would after the last bar processed.
        last = k if signal is not None else k - 1
        t_last = ts_open[last] + tf_ns
        closes = bars.close
        close = closes[last]
        self.validator.accept_bar_run(key, ts_open[last], close, last + 1 - start)
        self.now = t_last
        size = max(bars.volume[last] / close if close > 0 else 0.0, 1e-9) or 1.0
        self.quotes[sym] = Quote(sym, close, close, size, size, t_last, t_last, bars.venue)
        if k > start:
            p.mark_run(sym, closes, start, k, ts_open[k - 1] + tf_ns, equity)
        if signal is not None:
            p.mark(sym, close, t_last)
        self.breakers.advance(sym, t_last)
        if t_last >= self._next_clock_ts:  # the clock ticked (quietly) in the run
            self._next_clock_ts = t_last - t_last % NS_PER_SECOND + NS_PER_SECOND
        if slot is not None:
            if slot.atr_used:
                slot.atr.update_many(bars.high, bars.low, closes, start, last + 1)
            if slot.exits is not None:  # the watermark and the trail, bar by bar
                self._exits_walk(slot, bars, start, last + 1, slot.exits, slot.exit_atr)
            elif slot.exit_atr is not None:
                slot.exit_atr.update_many(bars.high, bars.low, closes, start, last + 1)
        if signal is None or slot is None:
            return k, None
        return k, self.decide(slot, signal, close)

    @staticmethod
    def _exits_walk(
        slot: _StrategySlot,
        bars: BarSeries,
        start: int,
        stop: int,
        st: ExitState,
        atr: ATR | None,
        probe: bool = False,
    ) -> int:
        """What bar_exits and the bar close do to ``st`` and ``atr`` over ``bars[start:stop]``
        (the same operations in the same order). ``probe``: stop at the first bar that would
        fire an exit and return its index (``stop`` if none); else the run is known quiet.
        The "trailed" rows on_bar would report are the journal's (restart), and a backtest
        keeps no journal: here the state moves without them."""
        rules = slot.exit_rules
        assert rules is not None
        tf_ns = bars.timeframe_s * NS_PER_SECOND
        ts_open, o_, h_, l_, c_ = bars.ts_open, bars.open, bars.high, bars.low, bars.close
        long_ = st.side > 0
        trailing = rules.trailing_atr is not None
        due = rules.time_stop_ts(st)
        for i in range(start, stop):
            t_open = ts_open[i]
            t_close = t_open + tf_ns
            if (
                probe
                and t_open >= st.retry_ts
                and st.held_ts < t_close
                and check_bar(rules, st, o_[i], h_[i], l_[i], True, t_open) is not None
            ):
                return i
            if atr is not None:
                atr.update(h_[i], l_[i], c_[i])
            if st.held_ts < t_close:
                st.see(h_[i] if long_ else l_[i])
            if trailing:
                rules.ratchet(st, atr.value if atr is not None else None)
                st.noted = (st.best, st.trail)
            if probe and due is not None and t_close >= due and t_close >= st.retry_ts:
                return i
        return stop

    def _irregular_rows(self, bars: BarSeries) -> list[int]:
        """Rows ``QuoteValidator.check_bar`` may reject: rows failing its row checks (finite,
        positive prices, volume >= 0, low <= open, close <= high, high <= MAX_BAR_PRICE), rows
        opening before an earlier good row has closed, and rows whose high or low is a price jump
        from the row before (whatever the gap: a superset is safe, on_bar decides). Every other
        row passes if the validator accepted the row before it. Computed once per series
        (numpy), as the checks would be row by row."""
        cached = self._irregular
        if cached is not None and cached[0] is bars:
            return cached[1]
        try:
            if bars.arrays is not None:
                ts, o, h, lo, c, v = bars.arrays
            else:
                ts = np.asarray(bars.ts_open, dtype=np.int64)
                o, h, lo, c, v = (
                    np.asarray(x, dtype=np.float64)
                    for x in (bars.open, bars.high, bars.low, bars.close, bars.volume)
                )
        except OverflowError:  # not a plausible ns timestamp: leave every row to on_bar
            rows = list(range(len(bars)))
        else:
            with np.errstate(invalid="ignore", over="ignore"):
                good = np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c)
                good &= np.isfinite(v) & (o > 0.0) & (h > 0.0) & (lo > 0.0) & (c > 0.0)
                good &= (v >= 0.0) & (h >= o) & (h >= c) & (lo <= o) & (lo <= c) & (lo <= h)
                good &= h <= MAX_BAR_PRICE
                floor = np.iinfo(np.int64).min
                latest = np.maximum.accumulate(np.where(good, ts, floor))
                odd = ~good
                prev = c[:-1]
                odd[1:] |= ts[1:] < latest[:-1] + bars.timeframe_s * NS_PER_SECOND  # overlap
                odd[1:] |= (h[1:] > prev * PRICE_JUMP_FACTOR) | (lo[1:] * PRICE_JUMP_FACTOR < prev)
            rows = np.flatnonzero(odd).tolist()
        self._irregular = (bars, rows)
        return rows

    def _marked(self, symbol: str, price: float, ts: int) -> list[CoreOutput]:
        """Mark to market, then what must be judged at every price: the loss limits (so the
        automatic kill engages on the first quote at the limit), feed freshness, the clock."""
        if ts >= self._next_day_ts:
            self._roll_day(ts)
        p = self.portfolio
        p.mark(symbol, price, ts)
        out = _EMPTY
        if ts >= self._next_marks_ts:
            out = [self.marks_event(ts)]
        eq = p.equity
        safety = self.safety
        if eq <= p.day_start_equity * safety.daily_keep or eq <= p.peak_equity * safety.dd_keep:
            if safety.auto_kill_due():
                killed = self._auto_kill(ts)
                if killed:
                    out = [*out, *killed]
        elif self.loss_override:
            out = [*out, *self._end_override(frozenset(), ts, "equity is back inside the limit")]
        changes = self.breakers.on_quote(symbol, ts)
        if changes:
            out = [*out, *self.apply_breakers(changes)]
        if ts >= self._next_expiry:
            out = [*out, *self.expire_orders(ts)]
        if ts >= self._next_clock_ts:
            produced = self.tick(ts)
            if produced:
                out = [*out, *produced]
        elif self._venue_clocks is not None and self.approvals.has_pending():
            # A venue behind took this second's tick: a request on this quote's venue whose
            # time ran out on its clock expires now, not a second later.
            produced = self._expire_approvals(ts)
            if produced:
                out = [*out, *produced]
        if self._flatten_due and symbol in self._flatten_due:
            produced = self._flatten_again(symbol)
            if produced:
                out = [*out, *produced]
        return out

    def set_kill_limits(self, kill_cfg: Any) -> None:
        """Loss limits as multipliers of equity, for the one-compare-per-quote check."""
        self.safety.set_kill_cfg(kill_cfg)

    def _roll_day(self, ts: int) -> None:
        """UTC midnight: the portfolio restarts its day (start-of-day equity for loss limits)
        and an operator's loss override ends with the day it was given on (journaled with its
        day, so a restart on a later day does not bring it back: _restore_loss_override)."""
        self.loss_override = frozenset()
        self.portfolio.on_time(ts)
        self._next_day_ts = ts - ts % NS_PER_DAY + NS_PER_DAY

    def _end_override(self, keep: frozenset[str], ts: int, why: str) -> list[CoreOutput]:
        """Narrow the operator's loss override to ``keep``, on the record: a safety event, so
        the journaled safety state follows it (a restart must not bring back an override that
        had ended, and with it no kill where the running engine would have engaged one)."""
        before = sorted(self.loss_override)
        self.loss_override = keep
        if keep == frozenset(before):
            return []
        ev = SafetyChanged(
            ts,
            "loss_override",
            "engine",
            {"accepted": before},
            {"accepted": sorted(keep)},
            "system",
            f"the release override of {', '.join(sorted(set(before) - keep))} ends: {why}",
        )
        self.trace.append(ev)
        return [ev]

    def marks_event(self, ts: int) -> MarksRecorded:
        every = self._marks_every_ns
        self._next_marks_ts = ts - ts % every + every
        p = self.portfolio
        marks = {s: pos.mark for s, pos in p.positions.items() if pos.mark}
        for sym, q in self.quotes.items():
            marks[sym] = (q.bid + q.ask) * 0.5
        p.sample_equity(ts)
        self.marks_peak = p.peak_equity
        return MarksRecorded(ts, marks, p.equity, p.cash, p.peak_equity, p.day_start_equity)

    # ------------------------------------------------------------------ decisions

    def strategy_view(self, slot: _StrategySlot, price: float) -> PositionView:
        """The position a strategy decides on: what has filled plus what its open orders and
        pending approvals will add, so it never acts twice on one signal while an order is on
        its way. A position too small to close at ``price`` (dust) reads as flat: no order
        could close it, and a strategy that believed it held one would never trade again.
        """
        pos = slot.position
        flight = slot.in_flight
        if self.approvals.has_pending():
            flight += self.approvals.pending_qty(slot.sid, slot.symbol)
        qty = pos.qty + flight if flight else pos.qty
        if qty == 0.0:
            return pos if not flight else _FLAT
        inst = slot.inst
        if inst is not None:
            size = qty if qty > 0.0 else -qty
            # Cheap test first: well above both minimums there is no need to round.
            if (
                size < 2.0 * inst.lot_size
                or size < 2.0 * inst.min_qty
                or size * price < 2.0 * inst.min_notional
            ) and not closable(inst, qty, price):
                return _FLAT
        if not flight:
            return pos
        held = pos.qty
        if held and (held > 0.0) == (qty > 0.0):
            if abs(qty) <= abs(held):  # an exit on its way: the entry price still holds
                return PositionView(qty, pos.avg_price)
            avg = (pos.avg_price * abs(held) + price * (abs(qty) - abs(held))) / abs(qty)
            return PositionView(qty, avg)
        return PositionView(qty, price)  # an entry (or a flip) on its way, priced at the mark

    def _closable_over(
        self, slot: _StrategySlot, closes: list[float], start: int, end: int
    ) -> bool:
        """Is the slot's filled position closable at every close in ``closes[start:end]``
        (notional grows with price, so the lowest close decides)."""
        inst = slot.inst
        if inst is None or end <= start:
            return True
        return closable(inst, slot.position.qty, min(closes[start:end]))

    def is_dust(self, symbol: str, qty: float, price: float) -> bool:
        """A non-zero position in ``symbol`` that no order could close at ``price``."""
        inst = self.instruments.get(symbol)
        return bool(qty) and inst is not None and not closable(inst, qty, price)

    def _run_strategies(
        self, bar: Bar, slots: list[_StrategySlot], ranged: bool
    ) -> list[CoreOutput]:
        """A bar closed: indicators, the exits' bar close (``ranged``: the bar came from a bar
        feed, its range is market data), then each enabled strategy."""
        out: list[CoreOutput] = []
        for slot in slots:
            if slot is slots[0] and slot.atr_used:  # the route's shared ATR: once a bar
                slot.atr.update(bar.high, bar.low, bar.close)  # (before any decision)
            if slot.exit_rules is not None:
                if slot.exit_atr is not None:
                    slot.exit_atr.update(bar.high, bar.low, bar.close)
                if slot.exits is not None:
                    produced = self._bar_close_exits(slot, bar, ranged)
                    if produced:
                        out.extend(produced)
            if not slot.cfg.enabled or slot.failed:
                continue
            try:
                if slot.checked:  # a trader's own: timed (see STRATEGY_CALL_MAX_S)
                    t0 = _clock()
                    self._calls += 1
                    self.calling = self._calls  # (engine/watchdog.py interrupts it if it hangs)
                    signal = slot.strategy.on_bar(bar, self.strategy_view(slot, bar.close))
                    self.calling = 0
                    slow = self._too_slow(slot, t0)
                    if slow is not None:
                        out.extend(self.strategy_failed(slot, slow, _bar_where(bar)))
                        continue
                else:
                    signal = slot.strategy.on_bar(bar, self.strategy_view(slot, bar.close))
            except BaseException as exc:
                self.calling = 0
                out.extend(self.strategy_failed(slot, exc, _bar_where(bar)))
                continue
            if signal is not None:
                out.extend(self.decide(slot, signal, bar.close))
        return out

    def _too_slow(self, slot: _StrategySlot, t0: float) -> TooSlow | None:
        """A trader's strategy called at ``t0`` took too long (never in a research run)."""
        took = _clock() - t0
        if slot.checked and took > STRATEGY_CALL_MAX_S and self.strategy_errors != "raise":
            return TooSlow(took)
        return None

    def strategy_failed(
        self, slot: _StrategySlot, exc: BaseException, where: str
    ) -> list[CoreOutput]:
        """A strategy raised. In the engine it is paused by the system with the exception and
        where it was raised as the reason (journaled, shown, alerted), and not called again
        until a person resumes it: one strategy's bug must not stop the engine, whose other
        strategies, protective exits and kill switch keep working. A research run stops.

        Whatever it raised: ``sys.exit()``, a stray ``CancelledError`` or ``GeneratorExit``
        from strategy code (which runs synchronously: the engine's own cancellations arrive at
        an ``await``, never inside it) stopped the whole engine. A research run lets a
        KeyboardInterrupt through (a person's Ctrl-C lands in the strategy's loop); the engine
        takes SIGINT as a request to stop, so there it is the strategy's own."""
        if self.strategy_errors == "raise":
            if type(exc) is KeyboardInterrupt:
                raise exc
            raise StrategyFailed(self._strategy_error(slot, exc, where)) from exc
        sid = slot.sid
        self._set_failed(sid, True)
        self.counters["strategy_errors"] = self.counters.get("strategy_errors", 0) + 1
        reason = f"{self._strategy_error(slot, exc, where)}; fix it, then resume it"
        # Restated over a breaker's pause: its re-arm would otherwise resume a strategy the
        # engine no longer calls; only a person's resume may.
        return self.pause_strategy(sid, by="system", reason=reason, ts=self.now, restate=True)

    @staticmethod
    def _strategy_error(slot: _StrategySlot, exc: BaseException, where: str) -> str:
        """ "strategy ID raised TYPE: MESSAGE at FILE:LINE on WHERE" (the message cut short, on
        one line: control characters escaped; an exception whose ``str`` raises says so)."""
        frames = traceback.extract_tb(exc.__traceback__)
        # (StrategyOverran: the last frame is the watchdog's handler; where it was stuck is above)
        last = -2 if isinstance(exc, StrategyOverran) and len(frames) > 1 else -1
        at = (
            f" at {os.path.basename(frames[last].filename)}:{frames[last].lineno}" if frames else ""
        )
        try:
            message = str(exc)
        except BaseException:  # its __str__ has a bug too: the failure is still reported
            message = "(its message could not be read)"
        invalid = isinstance(exc, InvalidSignal | StrategyOverran)
        detail = message if invalid else f"raised {type(exc).__name__}: {message}"
        if len(detail) > STRATEGY_ERROR_CHARS:
            detail = detail[: STRATEGY_ERROR_CHARS - 1] + "…"
        return printable(f"strategy {slot.sid} {detail}{at} on {where}")

    def strategy_resumed(self, strategy_id: str) -> None:
        """A person resumed the strategy: it is called again (it may raise again)."""
        self._set_failed(strategy_id, False)

    def _set_failed(self, strategy_id: str, failed: bool) -> None:
        """Every symbol's slot of the strategy (one code: a bug on one symbol is on all)."""
        for slot in self.slots.values():
            if slot.sid == strategy_id:
                slot.failed = failed

    def decide(self, slot: _StrategySlot, signal: Signal, price: float) -> list[CoreOutput]:
        """Turn a strategy's signal into a decision, an intent, verdicts and maybe an order."""
        sid = slot.sid
        if slot.checked:
            problem = signal_problem(signal)
            if problem is not None:
                where = f"{slot.symbol} at {_utc(self.now)} UTC"
                return self.strategy_failed(slot, InvalidSignal(problem), where)
            signal = tidy_signal(signal)
        self._decision_seq += 1
        symbol = slot.symbol
        inst = self.instruments[symbol]
        decision = Decision(  # positional: keyword arguments cost ~0.1 us each here
            f"d{self.session}-{self._decision_seq}",  # decision_id
            self.now,  # ts
            sid,
            symbol,
            inst.venue,
            signal.action,
            signal.rule,
            signal.reason,
            signal.confidence,
            dict(signal.inputs),
            signal.reduce_only,
        )
        made = DecisionMade(decision)
        self.trace.append(made)
        self.counters["decisions"] += 1
        if signal.action == _HOLD:
            return [made]
        out: list[CoreOutput] = [made]
        # Count signals only while the strategy may act: a paused strategy's or a halted
        # engine's signals are not a runaway loop, and must not keep the gauge pinned.
        safety = self.safety
        if not safety.is_paused(sid) and safety.trading_state is not _HALTED:
            changes = self.breakers.on_signal(sid, self.now)
            if changes:  # (the per-order observations mostly change nothing: skip the call)
                out.extend(self.apply_breakers(changes))
        if self.approvals.has_pending():
            withdrawn = self._withdraw_the_other_way(decision)
            if withdrawn:
                out.extend(withdrawn)
        limit = signal.limit
        if slot.orders and self._may_replace(sid):
            moved = self._move_resting(decision, slot, price, limit)
            if moved is not None:
                out.extend(moved)
                return out
        stop_first = self._stop_first(decision, slot, price, limit)
        if stop_first is not None:
            out.extend(stop_first)
            return out
        out.extend(self.evaluate(self.make_intent(decision, slot, price, limit=limit), decision))
        return out

    def _withdraw_the_other_way(self, decision: Decision) -> list[CoreOutput]:
        """A decision the other way withdraws the strategy's entry on the symbol still
        waiting for a person (as it cancels its working limit the other way): approved after
        the strategy reversed ("entering short", then "covering short" sized to nothing while
        the short waited), it opened a position against the strategy's own view. A request
        that closes (part of) the strategy's own position stays: the new decision was sized
        as if it would go (an exit waiting, then a re-entry, is long one, not two). One that
        goes beyond the position (long 0.5, "sell 1" waiting: a reversal) is an entry the
        other way for its part beyond, and goes (approved, it left the strategy short against
        its newest decision)."""
        sid, symbol = decision.strategy_id, decision.symbol
        other = _SELL if decision.action == _ACTION_BUY else _BUY

        def keep(intent: OrderIntent) -> bool:
            return not (
                intent.side is other
                and intent.strategy_id == sid
                and intent.symbol == symbol
                and not self._closes_own(intent)  # closes (part of) its own position: stays
            )

        if all(keep(p.intent) for p in self.approvals.pending()):
            return _EMPTY
        why = f"superseded by decision {decision.decision_id} ({decision.action})"
        return self._reject_pending(self.now, why, "engine", keep)

    def _stop_first(
        self, decision: Decision, slot: _StrategySlot, price: float, limit: LimitSpec | None
    ) -> list[CoreOutput] | None:
        """The strategy's own exit while the venue holds its stop: the stop goes first (a spot
        venue holds the balance it would sell: the exit was refused for want of it), then the
        exit; if that is not sent, the stop is put back. None: no venue stop is in its way."""
        st = slot.exits
        if st is None or not st.native or not self._may_close(decision.strategy_id):
            return None
        if self.approvals.needs_approval(decision.strategy_id):
            # It waits for a person: the stop stays meanwhile, and goes before the sell once
            # approved (_stop_before_close). Cancelled here, it was put back while the request
            # waited, at every new request: a venue without the stop each time, and churn.
            return None
        stop = self.open_orders.get(st.native)
        closing = (decision.action == _ACTION_BUY) == (st.side < 0)
        if stop is None or not closing:
            return None

        def then(_old: Order) -> list[CoreOutput]:
            intent = self.make_intent(decision, slot, price, limit=limit)
            result = self.evaluate(intent, decision)
            if not any(type(item) is SubmitOrder for item in result):
                result.extend(self._native_sync(slot))
            return result

        return self._cancel_then(stop, then, f"venue stop cancelled: {decision.rule}")

    # ------------------------------------------------------------------ limit orders

    def _move_resting(
        self, decision: Decision, slot: _StrategySlot, price: float, limit: LimitSpec | None
    ) -> list[CoreOutput] | None:
        """A signal while the strategy has limit orders working on the symbol. A limit on the
        other side is cancelled first (a signal the other way supersedes an entry that has not
        filled: it must not fill later against the strategy's own view), and the new decision
        goes out once the cancel is confirmed, sized on what the old one filled. A limit
        signal on the side of a working limit moves it (cancel, then the new one). None: no
        working limit is concerned; the decision goes out as usual."""
        sid, symbol = decision.strategy_id, decision.symbol
        side = _BUY if decision.action == _ACTION_BUY else _SELL
        same = other = None
        for order in self.open_orders.values():
            # (one whose time to live ran out counts too while its cancel is not confirmed:
            # it still works at the venue, and a new limit sent beside it made two)
            if order.order_type is _LIMIT and order.strategy_id == sid and order.symbol == symbol:
                if order.side is side:
                    same = order
                else:
                    other = order
        if other is None and (same is None or limit is None):
            return None
        # What goes out once the cancel is confirmed, judged then (and against the stops since).
        send = partial(
            self._send_after_cancel, decision, slot, price, limit, self._stop_mark(decision)
        )
        if other is not None:
            why = f"superseded by decision {decision.decision_id} ({decision.action})"
            return self._cancel_then(other, send, why)
        assert same is not None and limit is not None  # (the first test above)
        if same.client_order_id in self._expiring:
            # Expired, its cancel not confirmed yet (a venue slow to answer, or one that lost
            # it): the new limit waits for that cancel as a move does, for what is left.
            why = f"replaced by decision {decision.decision_id}: its time to live ran out"
            return self._cancel_then(same, send, why)
        return self._replace(same, decision, slot, price, limit)

    def _cancel_then(
        self, old: Order, then: Callable[[Order], list[CoreOutput]], reason: str
    ) -> list[CoreOutput]:
        """Cancel ``old``; ``then(old)`` runs once the cancel is confirmed (what goes out then
        goes through the order path). A newer ``then`` waiting on the same cancel wins, and
        the cancel is asked again: the order is still open, so the first one did not take (a
        cancel lost at the venue would otherwise freeze the order where it was for good)."""
        coid = old.client_order_id
        waiting = coid in self._replacing
        self._replacing[coid] = then
        if not waiting:
            self.counters["replaced"] = self.counters.get("replaced", 0) + 1
        return [CancelOrder(coid, reason)]

    def _may_replace(self, strategy_id: str) -> bool:
        """Only a strategy that may trade moves its limit: cancelling it for a replacement the
        safety gate would deny would leave the strategy with neither."""
        return (
            self.safety.trading_state is _ACTIVE
            and not self.safety.is_paused(strategy_id)
            and not self.blocked_reason
        )

    def _may_close(self, strategy_id: str) -> bool:
        """A strategy whose exit may go out: as _may_replace, and at the kill switch's
        ``entries`` (REDUCING) too, where exits are allowed. Its exit while the venue holds its
        stop cancels the stop first there as well: sent beside the stop, a spot venue refuses
        the sell for want of the balance the stop holds (the stop is put back when the exit is
        then not sent)."""
        return (
            self.safety.trading_state is not _HALTED
            and not self.safety.is_paused(strategy_id)
            and not self.blocked_reason
        )

    def limit_price(self, symbol: str, side: Side, limit: LimitSpec, price: float) -> float:
        """The limit a spec asks for: its own price, or ``offset_ticks`` behind the touch on
        the order's side (``price`` stands in for the book when no quote was seen)."""
        if limit.price is not None:
            return limit.price
        q = self.quotes.get(symbol)
        tick = self.instruments[symbol].tick_size
        if side is _BUY:
            return (q.bid if q is not None else price) - limit.offset_ticks * tick
        return (q.ask if q is not None else price) + limit.offset_ticks * tick

    def _replace(
        self, old: Order, decision: Decision, slot: _StrategySlot, price: float, limit: LimitSpec
    ) -> list[CoreOutput]:
        """Move a resting limit: cancel it, and once the venue confirms the cancel send the
        new one through the whole order path (sized then, against what the old one filled).
        Nothing when it already rests at that price."""
        inst = self.instruments[old.symbol]
        new = self.limit_price(old.symbol, old.side, limit, price)
        if not 0.0 < new < math.inf:
            # A strategy's NaN, infinite, zero or negative price: the checks deny it (on the
            # record, INVALID_PRICE) and the working order stays. Cancelling it first would
            # leave the strategy with neither, and the grid rounding below cannot take a NaN.
            intent = self.make_intent(decision, slot, price, limit=limit)
            return self.evaluate(replace(intent, qty=old.remaining), decision)
        on_grid = (
            floor_to_step(new, inst.tick_size)
            if old.side is _BUY
            else ceil_to_step(new, inst.tick_size)
        )
        if (
            on_grid == old.limit_price
            and limit.post_only == old.post_only
            and str(limit.tif) == old.tif
            and _ttl_ns(limit) == (old.expire_ts - old.ts_created if old.expire_ts else 0)
        ):
            # Already there, working as asked: the decision is on the record, nothing to move.
            # (A new time to live, or a new time in force, is a new order: one asked to end in
            # 10 s beside one working until cancelled kept working for good.)
            return _EMPTY
        return self._cancel_then(
            old,
            partial(
                self._send_after_cancel,
                decision,
                slot,
                price,
                limit,
                self._stop_mark(decision),
            ),
            f"replaced by decision {decision.decision_id}: limit {old.limit_price:g} -> "
            f"{on_grid:g}",
        )

    def _replacement(self, order: Order) -> list[CoreOutput]:
        """The order a replacement cancelled is done: send the new one if the cancel took
        (a fill that came first means the old order did its job; the replacement lapses)."""
        then = self._replacing.pop(order.client_order_id, None)
        if then is None or order.status is not _CANCELED:
            return _EMPTY
        return then(order)

    def _stop_mark(self, decision: Decision) -> tuple[int, int, int]:
        """What a decision waiting for a cancel is judged against when it goes out: the
        safety's stop mark of its strategy, and how often its venue was halted or lifted."""
        stops, pauses = self.safety.stop_mark(decision.strategy_id)
        return stops, pauses, self._venue_marks.get(decision.venue, 0)

    def _send_after_cancel(
        self,
        decision: Decision,
        slot: _StrategySlot,
        price: float,
        limit: LimitSpec | None,
        mark: tuple[int, int, int],
        order: Order,
    ) -> list[CoreOutput]:
        """A decision that waited for ``order``'s cancel goes through the order path now.

        ``mark``: :meth:`_stop_mark` when it was decided. A kill switch, a breaker's halt, a
        pause of the strategy or a reconciliation halt of its venue since then (the cancel it
        waited for was slow or lost at the venue) voids what it would add: released, resumed
        or lifted by now, the engine sent an entry decided before the stop, as a kill voids
        the pending approvals. What only reduces exposure still goes, as it would under the
        stop. The denial names each stop it waited across, with that stop's code."""
        if (decision.action == _ACTION_BUY) is not (order.side is _BUY):
            # A limit the other way superseded: an exit goes after the venue's stop too.
            stop_first = self._stop_first(decision, slot, price, limit)
            if stop_first is not None:
                return stop_first
        intent = self.make_intent(decision, slot, price, limit=limit)
        if intent.side is order.side and limit is not None:
            # A moved limit works for what the old one had left (as a venue's amend does),
            # not for a fresh entry on top of what the old one filled.
            lot = self.instruments[order.symbol].lot_size
            intent = replace(intent, qty=floor_to_step(order.remaining, lot))
        sid, venue = decision.strategy_id, decision.venue
        now = self._stop_mark(decision)
        if (
            mark == now
            or not self._may_replace(sid)  # still stopped: the safety verdict says why
            or venue in self.venue_halts  # still halted: the venue's verdict says why
        ):
            return self.evaluate(intent, decision)
        when = f"decided at {_utc(decision.ts)} UTC, before "
        stale: list[Verdict] = []
        adds = not self.reduces_exposure(intent)
        if mark[0] != now[0] and adds:
            stale.append(
                Verdict(
                    "safety",
                    False,
                    _REDUCING_ONLY,
                    when + "a kill switch or a breaker's halt since lifted: only what reduces "
                    "exposure goes out",
                )
            )
        # a pause is its strategy's: judged on its own position (as cancel_adding)
        if mark[1] != now[1] and not self._closes_own(intent):
            stale.append(
                Verdict(
                    "safety",
                    False,
                    _STRATEGY_PAUSED,
                    when + f"a pause of {sid} since resumed: only what closes its own position "
                    "goes out",
                )
            )
        if mark[2] != now[2] and adds:
            stale.append(
                Verdict(
                    "venue",
                    False,
                    _VENUE_HALTED,
                    when + f"a reconciliation halt of {venue} was lifted: only what reduces "
                    "exposure goes out",
                )
            )
        if not stale:
            return self.evaluate(intent, decision)
        self.counters["intents"] += 1
        return [self._denied(intent, tuple(stale))]

    def expire_orders(self, now: int) -> list[CoreOutput]:
        """Cancel every working limit whose time to live ran out (an engine action; the
        cancel's reason says so and lands in the journal with the order's update). One still
        working ``EXPIRY_RETRY_S`` after its cancel was asked (the cancel failed at the
        venue: a network error, a rate limit) is cancelled again, until it is done."""
        out: list[CoreOutput] = []
        nxt = NEVER
        retry_ns = EXPIRY_RETRY_NS
        # Each limit's time to live runs on its own venue's clock where venues keep their own
        # (venue feeds): ``now`` runs with whichever venue quoted last, seconds ahead of (or
        # behind) another's, and a limit on that other venue expired that much early (late).
        clock_of = None if self._venue_clocks is None else self._symbol_clock
        for coid, order in self.open_orders.items():
            due = order.expire_ts
            if not due:
                continue
            if clock_of is not None:
                now = clock_of(order.symbol)
            again = self._expiring.get(coid)
            if again is not None:
                if again <= now:
                    self._expiring[coid] = again = now + retry_ns
                    ttl = (due - order.ts_created) / NS_PER_SECOND
                    out.append(
                        CancelOrder(
                            coid,
                            f"time to live {ttl:g}s ran out: cancelled by the engine "
                            "(asked again: still working)",
                        )
                    )
                if again < nxt:
                    nxt = again
                continue
            if due <= now:
                self._expiring[coid] = now + retry_ns
                ttl = (due - order.ts_created) / NS_PER_SECOND
                out.append(
                    CancelOrder(coid, f"time to live {ttl:g}s ran out: cancelled by the engine")
                )
                self.counters["expired"] = self.counters.get("expired", 0) + 1
                if now + retry_ns < nxt:
                    nxt = now + retry_ns
            elif due < nxt:
                nxt = due
        self._next_expiry = nxt
        return out

    def make_intent(
        self,
        decision: Decision,
        slot: _StrategySlot,
        price: float,
        origin: str = _FROM_STRATEGY,
        limit: LimitSpec | None = None,
    ) -> OrderIntent:
        """Size the decision into an intent that never leaves dust behind.

        Sizing works on the strategy's position as it will be once its in-flight orders and
        pending approvals go (an exit sized from the filled position alone would double up with
        an exit already on its way). An exit closes that whole position, dust included; an
        entry against a position on the other side (dust the strategy reads as flat) first
        takes it back to zero; the result is put on the lot grid, and an order whose remainder
        could not be closed by any later order is not made (an exit takes everything, an entry
        too small to close again sizes to zero).
        """
        side = _BUY if decision.action == _ACTION_BUY else _SELL
        sign = side.sign
        symbol = decision.symbol
        q = self.quotes.get(symbol)
        ref = (q.bid + q.ask) * 0.5 if q is not None else price
        # A request waiting on the same side is replaced by this one if it waits too, so the
        # new one is sized as if that one were gone (a protective exit never waits).
        replacing = (
            side
            if origin == _FROM_STRATEGY and self.approvals.needs_approval(decision.strategy_id)
            else None
        )
        approvals = self.approvals
        flight = (
            self._in_flight(decision.strategy_id, symbol, replacing)
            if self.open_orders or approvals.has_pending()
            else 0.0  # what _in_flight sums over nothing
        )
        own = slot.position.qty + flight
        inst = self.instruments[symbol]
        net = self.portfolio.positions.get(symbol)
        net_qty = net.qty if net is not None else 0.0
        if decision.reduce_only:
            if own * sign >= 0:
                qty = 0.0
            else:
                # What the venue will let it reduce: the net position less the open orders
                # already reducing it (as check_reduce_only counts it).
                with_open = net_qty + sign * self._open_side(symbol, side)
                reducible = min(abs(net_qty), abs(with_open)) if with_open * net_qty > 0 else 0.0
                qty = min(abs(own), reducible)
        else:
            equity = self.portfolio.equity
            qty = size_for(slot.cfg.sizing, equity, ref, slot.atr.value)
            # Size within the limits rather than propose what the checks must deny: volatility
            # sizing on a quiet market would otherwise ask for an absurd quantity (and live
            # mode's first trades under the canary cap were all denied, so none was ever made).
            lim = self.limits if not self._live else self.effective_limits()
            held = net_qty + sign * self._open_side(symbol, side)
            room = lim.max_position_fraction * equity - max(held * sign, 0.0) * ref
            cap = min(lim.max_order_notional, room) * SIZING_HEADROOM
            if ref > 0 and qty * ref > cap:
                qty = max(cap, 0.0) / ref
            qty = floor_to_step(qty, inst.lot_size)
            # The position this entry makes must itself be closable, or the entry is not made.
            if qty > 0.0 and not closable(inst, qty, ref):
                qty = 0.0
            elif qty > 0.0 and own * sign < 0 and not closable(inst, own, ref):
                qty += abs(own)  # an opposite residual (dust) is closed by the same order
            if sign < 0 and not slot.cfg.allow_short and origin == _FROM_STRATEGY:
                # A long-only strategy (allow_short = false, the default) never goes short,
                # whatever its code asks: it sells at most what it holds (filled, less its
                # sells on their way); flat, it sells nothing (SIZE_ZERO).
                long = min(own, slot.position.qty)
                if qty > long:
                    qty = long if long > 0.0 else 0.0
        intent = self._intent(decision, side, qty, ref, decision.reduce_only, origin)
        if limit is None:
            return intent
        return replace(
            intent,
            order_type=_LIMIT,
            limit_price=self.limit_price(symbol, side, limit, price),
            post_only=limit.post_only,
            tif=str(limit.tif),
            ttl_ns=_ttl_ns(limit),
        )

    def _in_flight(self, strategy_id: str, symbol: str, replacing: Side | None = None) -> float:
        """Signed quantity of the strategy's open orders and of its intents waiting for
        approval on the symbol (usually none): what its position will be once they go. The
        waiting ones on the ``replacing`` side are left out (a new request replaces them)."""
        total = 0.0
        for order in self.open_orders.values():
            if (
                order.strategy_id == strategy_id
                and order.symbol == symbol
                and order.order_type is not _STOP
            ):
                total += order.remaining * order.side.sign
        for pending in self.approvals.pending():
            it = pending.intent
            if it.strategy_id == strategy_id and it.symbol == symbol and it.side != replacing:
                total += it.qty * it.side.sign
        return total

    def _intent(
        self, decision: Decision, side: Side, qty: float, ref: float, reduce_only: bool, origin: str
    ) -> OrderIntent:
        self._order_seq += 1
        return OrderIntent(
            f"ck-{self.session}-{self._order_seq}",  # intent_id
            decision.decision_id,
            decision.strategy_id,
            decision.symbol,
            decision.venue,
            side,
            qty,
            _MARKET,
            ref,  # ref_price
            self.now,  # ts
            None,  # limit_price
            reduce_only,
            origin,
        )

    def risk_context(self, symbol: str) -> RiskContext:
        p = self.portfolio
        marks: dict[str, float] = {}
        positions: dict[str, float] = {}
        for s, pos in p.positions.items():
            marks[s] = pos.mark
            if pos.qty:
                positions[s] = pos.qty
        for s, q in self.quotes.items():  # a quote's mid wins over the position's mark
            marks[s] = (q.bid + q.ask) * 0.5
        quote = self.quotes.get(symbol)
        clocks = self._venue_clocks
        return RiskContext(
            self.clock_now,  # a quiet feed's time goes on (stale quotes)
            p.equity,
            p.cash,
            positions,
            marks,
            self.open_order_qty,
            quote,
            self.instruments[symbol],
            self.throttle,
            self.fee_rate,
            self.open_buy_qty,
            self.open_sell_qty,
            self.open_buy_limits,
            # The quote's age on its own venue's clock (venue feeds), not on one that runs
            # with whichever venue is ahead.
            None if clocks is None or quote is None else clocks.get(quote.venue),
        )

    def _open_side(self, symbol: str, side: Side) -> float:
        """The open quantity on one side of the symbol (positive)."""
        return (self.open_buy_qty if side is _BUY else self.open_sell_qty).get(symbol, 0.0)

    def effective_limits(self) -> Any:
        """The limits in force: in live mode the first trades run under the canary limits."""
        live = self.cfg.safety.live
        if self.cfg.engine.mode != "live" or self.live_trades >= live.canary_trades:
            return self.limits
        cap = min(self.limits.max_order_notional, live.canary_max_order_notional)
        if self._canary_limits is None or self._canary_limits[0] is not self.limits:
            self._canary_limits = (
                self.limits,
                self.limits.model_copy(update={"max_order_notional": cap}),
            )
        return self._canary_limits[1]

    def refused_at_send(self, sub: SubmitOrder) -> list[CoreOutput] | None:
        """The one send-time safety gate (engine and backtest alike): the safety state may have
        changed since the intent was checked (a kill switch engaged while its row was being
        committed), so it is asked again at the moment of sending. None: send it; else the
        order is void ("not sent: why") and what that changes is returned."""
        why = self.send_refusal(sub.intent)
        if why is None:
            return None
        order = sub.order
        order.move_to(OrderStatus.REJECTED, order.ts_updated, f"not sent: {why}")
        self._voiding = order.client_order_id  # the engine's refusal, not the venue's
        try:
            return self.on_broker([OrderUpdate(order, order.ts_updated)])
        finally:
            self._voiding = ""

    def _gate(self, intent: OrderIntent, reducing: bool) -> str | None:
        """The safety state's answer for ``intent`` (``SafetyController.gate``), at the check
        and at the send alike."""
        origin = intent.origin
        paused = self.safety.state.strategies.get(intent.strategy_id)
        return self.safety.gate(
            intent.strategy_id,
            reducing,
            origin == _FROM_FLATTEN,
            origin == _FROM_OPERATOR,
            origin == _FROM_EXIT,
            # (worked out for a paused strategy alone: a pause stops its entries, not its exits)
            paused is not None and paused.paused and self._paused_may_send(intent),
        )

    def send_refusal(self, intent: OrderIntent) -> str | None:
        """Why the safety state forbids sending this intent now (None: it may go). Asked at the
        send (refused_at_send) and again by a venue once the order has its request token."""
        safety = self.safety
        # As in _safety_verdict: the gate reads "only reduces" in HALTED and REDUCING alone.
        # A reduce-only order is asked in every state: a flatten sized as if the orders it
        # cancelled were gone must not go out when one of them filled before its cancel.
        active = safety.trading_state is _ACTIVE
        reducing = (not active or intent.reduce_only) and self.reduces_exposure(intent)
        why = self._gate(intent, reducing)
        if why is None and intent.reduce_only and not reducing:
            why = (
                f"reduce-only {intent.side} {intent.qty:g} is more than the position left to "
                "reduce (it changed since the check)"
            )
        return why

    def reduces_exposure(self, intent: OrderIntent) -> bool:
        """True when the order only shrinks the symbol's net position, never flipping it, even
        if every other open order on the symbol fills too (two exits must not make a short)."""
        pos = self.portfolio.positions.get(intent.symbol)
        qty = pos.qty if pos is not None else 0.0
        sign = intent.side.sign
        if qty * sign >= 0 or intent.qty > abs(qty) * (1 + 1e-9):
            return False
        # The open orders on its side count (each may fill); those on the other may not.
        pending = self._open_side(intent.symbol, intent.side)
        own = self.open_orders.get(intent.intent_id)
        if own is not None and own.order_type is not _STOP and own.side is intent.side:
            pending -= own.remaining
        with_open = qty + sign * pending
        return with_open * sign < 0 and intent.qty <= abs(with_open) * (1 + 1e-9)

    def evaluate(
        self, intent: OrderIntent, decision: Decision, *, approved_by: str = ""
    ) -> list[CoreOutput]:
        """Checks, then the safety gate, then the approval gate; submit when all allow it.

        Every verdict is kept (no short-circuit) so the trace answers "why didn't it trade?".
        """
        self.counters["intents"] += 1
        if self.blocked_reason:
            blocked = Verdict("engine", False, _ENGINE_BLOCKED, self.blocked_reason)
            return [self._denied(intent, (blocked,))]
        if intent.ttl_ns < 0:
            # A strategy asked for an expiry it cannot have: sending the limit without one would
            # let it work for ever against the strategy's wish, and inf raised out of the core.
            bad_ttl = Verdict(
                "limit_terms",
                False,
                DenialCode.CHECK_ERROR,
                f"time to live must be a number of seconds in (0, {MAX_LIMIT_TTL_S:g}] "
                "(or none): the strategy's limit is not sent",
            )
            return [self._denied(intent, (bad_ttl,))]
        if intent.qty <= 0:
            verdicts: tuple[Verdict, ...] = (
                Verdict(
                    "sizing",
                    False,
                    _SIZE_ZERO,
                    "sizing gave no quantity (no position to reduce, equity/price unusable, "
                    "or too small to be closed again on the venue)",
                ),
            )
            return [self._denied(intent, verdicts)]
        # effective_limits() only differs from self.limits in live mode (the canary).
        limits = self.limits if not self._live else self.effective_limits()
        adjusted, verdict_list = run_checks(intent, self.risk_context(intent.symbol), limits)
        verdict_list.append(self._safety_verdict(adjusted))
        if self.venue_halts or self.market_gate is not None or self.spot_venues:
            verdict_list.append(self._venue_verdict(adjusted))
        if adjusted.origin == _FROM_STRATEGY:
            why = self.breakers.blocked(
                adjusted.strategy_id, adjusted.symbol, lambda: self._paused_may_send(adjusted)
            )
            verdict_list.append(
                _BREAKERS_OK if why is None else Verdict("breakers", False, _BREAKER_TRIPPED, why)
            )
        verdicts = tuple(verdict_list)
        if not all_passed(verdict_list):
            if adjusted.reduce_only and verdict_list[0].code in _BELOW_MIN:
                return [self._dust(adjusted, verdicts, intent.qty)]
            return [self._denied(adjusted, verdicts)]
        if (
            adjusted.origin == _FROM_STRATEGY
            and not approved_by
            and self.approvals.needs_approval(adjusted.strategy_id)
        ):
            return self._ask_approval(adjusted, decision, verdicts)
        return self.submit(
            adjusted, verdicts, detail=f"approved by {approved_by}" if approved_by else ""
        )

    def _venue_verdict(self, intent: OrderIntent) -> Verdict:
        halted = self.venue_halts.get(intent.venue)
        if halted:
            return Verdict("venue", False, _VENUE_HALTED, f"venue HALTED: {halted}")
        unsynced = self.market_gate(intent.symbol) if self.market_gate is not None else None
        if unsynced and not (intent.origin == _FROM_FLATTEN and intent.reduce_only):
            # A kill switch's flatten still goes out on a feed in trouble (it only reduces,
            # and a crisis is when feeds fail); everything else waits for fresh data.
            return Verdict("venue", False, _MARKET_UNSYNCED, unsynced)
        if intent.side is _SELL and intent.venue in self.spot_venues:
            pos = self.portfolio.positions.get(intent.symbol)
            free = (pos.qty if pos is not None else 0.0) - self._open_side(intent.symbol, _SELL)
            free = max(free, 0.0)
            if not intent.qty <= free + free * REL_EPS:
                return Verdict(
                    "venue",
                    False,
                    DenialCode.SPOT_SELL_EXCEEDS_HOLDING,
                    f"{intent.venue} is a spot market: sell {intent.qty:g} {intent.symbol} is "
                    f"more than the {free:g} the engine holds there not already being sold "
                    "(it would sell the account's other coins; a spot account cannot short)",
                )
        return Verdict("venue", True, PASSED, f"{intent.venue} reconciled, market data in sync")

    def _safety_verdict(self, intent: OrderIntent) -> Verdict:
        safety = self.safety
        state = safety.trading_state
        # The gate reads "only reduces exposure" in HALTED and REDUCING alone; in ACTIVE (the
        # usual state) the answer cannot change the verdict, so it is not worked out.
        reducing = state is not _ACTIVE and self.reduces_exposure(intent)
        why = self._gate(intent, reducing)
        if why is None:
            return _SAFETY_OK[state]
        code = (
            _ENGINE_HALTED
            if state is _HALTED
            else _REDUCING_ONLY
            if state is _REDUCING
            else _STRATEGY_PAUSED
        )
        return Verdict("safety", False, code, why)

    def _ask_approval(
        self, intent: OrderIntent, decision: Decision, verdicts: tuple[Verdict, ...]
    ) -> list[CoreOutput]:
        self.counters["awaiting_approval"] += 1
        q = self.quotes.get(intent.symbol)
        est_slip = 0.0
        if self.slippage_model is not None and q is not None:
            est_slip = self.slippage_model(intent.side, intent.qty, q)
        est_fee = intent.notional * self.fee_rate
        approvals = self.approvals
        # Asked at the time on its symbol's venue's clock, where venues keep their own (its
        # time to live runs there: see tick), else at the event's.
        asked = self._symbol_now(intent.symbol)
        pending = approvals.submit(intent, decision, verdicts, asked, est_fee, est_slip)
        self._decisions[intent.intent_id] = decision
        checked = IntentChecked(intent, verdicts, _AWAITING_APPROVAL, pending.approval_id)
        requested = ApprovalRequested(self.now, pending.to_dict())
        self.trace.append(checked)
        self.trace.append(requested)
        out: list[CoreOutput] = [checked, requested]
        # The request it replaces (same strategy, symbol and side) is withdrawn, on the record.
        for outcome in approvals.take_superseded():
            self._decisions.pop(outcome.approval_id.removeprefix("ap-"), None)
            self.counters["superseded"] = self.counters.get("superseded", 0) + 1
            ev = ApprovalDecided(self.now, outcome.to_dict())
            self.trace.append(ev)
            out.append(ev)
        return out

    def _dust(
        self, intent: OrderIntent, verdicts: tuple[Verdict, ...], qty: float
    ) -> IntentChecked:
        """A close of a position below the venue minimum: no venue takes that order, so it is
        recorded once as dust (not a denial to retry): the position stays, marked as dust, and
        the next entry or close on the symbol sizes against it."""
        self.counters["dust"] = self.counters.get("dust", 0) + 1
        inst = self.instruments[intent.symbol]
        ref = intent.ref_price
        detail = (
            f"dust: {intent.symbol} {qty:.10g} (~{qty * ref:.2f} at {ref:.10g}) is "
            f"below the venue minimum (lot {inst.lot_size:g}, min qty {inst.min_qty:g}, "
            f"min notional {inst.min_notional:g}); no order can close it, nothing sent"
        )
        ev = IntentChecked(intent, verdicts, _DUST, detail)
        self.trace.append(ev)
        return ev

    def _denied(self, intent: OrderIntent, verdicts: tuple[Verdict, ...]) -> IntentChecked:
        self.counters["denied"] += 1
        ev = IntentChecked(intent, verdicts, _DENIED)
        self.trace.append(ev)
        return ev

    def submit(
        self, intent: OrderIntent, verdicts: tuple[Verdict, ...], detail: str = ""
    ) -> list[CoreOutput]:
        """Record the order as pending (it counts toward exposure at once) and ask to send it."""
        self.counters["submitted"] += 1
        self.throttle.record(intent.strategy_id, self.now)
        at = self.now
        if self._venue_clocks is not None:
            # Sent at the time on its venue's clock, where venues keep their own: a limit's
            # time to live runs there (expire_orders), and its age is shown from it. The
            # intent carries the same time: a restart rebuilds an order it never saw
            # acknowledged from the intent's ts (engine.restore); with the intent on the
            # engine's clock (which runs with whichever venue is ahead) the rebuilt limit
            # expired that much later than the one sent (a person's approved while a venue
            # 59 s ahead quoted last: 59 s past its time to live, working at the venue).
            at = self._symbol_clock(intent.symbol)
            if at != intent.ts:
                intent = replace(intent, ts=at)
        order = Order(
            intent.intent_id,  # client_order_id
            intent.intent_id,
            intent.strategy_id,
            intent.symbol,
            intent.venue,
            intent.side,
            intent.order_type,
            intent.qty,
            intent.limit_price,
            _PENDING_NEW,  # status
            at,  # ts_created
            at,  # ts_updated
            0.0,  # filled_qty
            0.0,  # avg_fill_price
            0.0,  # fees
            intent.reduce_only,
        )
        if intent.order_type is _STOP:
            order.stop_price = intent.stop_price
        elif intent.order_type is _LIMIT:
            order.post_only = intent.post_only
            order.tif = intent.tif
            if intent.ttl_ns > 0:
                order.expire_ts = at + intent.ttl_ns
        self._track(order)
        if self._with_exits:
            if intent.origin == _FROM_STRATEGY:  # an exit it opens links to this decision
                self._order_decisions[order.client_order_id] = intent.decision_id
            elif intent.origin != _FROM_EXIT:
                self._close_kind[order.client_order_id] = intent.origin
        q = self.quotes.get(intent.symbol)
        if self.slippage_model is not None and q is not None:
            self._order_model[order.client_order_id] = self.slippage_model(
                intent.side, intent.qty, q
            )
        ev = IntentChecked(intent, verdicts, _SUBMITTED, detail)
        self.trace.append(ev)
        out: list[CoreOutput] = [ev]
        if intent.origin == _FROM_STRATEGY:
            changes = self.breakers.on_order_submitted(intent.strategy_id, self.now)
            if changes:
                out.extend(self.apply_breakers(changes))
        out.append(SubmitOrder(order, intent))
        return out

    # ------------------------------------------------------------------ time, breakers, kill

    @property
    def clock_now(self) -> int:
        """The engine's time now: the last event's, or later where a quiet feed's clock ran on
        (the tick's); what a time to live is judged against."""
        now, clock = self.now, self._clock_now
        return now if now >= clock else clock

    def set_venue_clocks(self, clocks: Mapping[str, int], venue_of: Mapping[str, str]) -> None:
        """Each venue's clock now (its last quote's stamp plus the time since it was received,
        on a clock nobody steps: the shell reads it, this core reads no clock) and the venue
        of each symbol. From the first call on, a symbol's quotes age on their venue's clock
        alone (stale_feed, STALE_QUOTE): venues' clocks disagree by seconds, and the engine's
        one clock runs with whichever is ahead."""
        board = self.breakers
        if self._venue_clocks is None or board.venue_now is not self._venue_clocks:
            self._venue_clocks = board.venue_now = dict(board.venue_now or {})
        self._venue_clocks.update(clocks)
        if board.venue_of != venue_of:
            board.venue_of = dict(venue_of)

    def _symbol_clock(self, symbol: str) -> int:
        """The time now on ``symbol``'s venue's own clock (set_venue_clocks), else the
        engine's (``clock_now``)."""
        clocks = self._venue_clocks
        if clocks is not None:
            now = clocks.get(self.breakers.venue_of.get(symbol, ""))
            if now is not None:
                return now
        return self.clock_now

    def _symbol_now(self, symbol: str) -> int:
        """``now`` on ``symbol``'s venue's clock where venues keep their own, else ``now``:
        a wait set now and judged by the symbol's quotes (their stamps), set on another
        venue's clock ahead, lasted that much longer (a refused kill flatten's 5 s: 35 s)."""
        return self.now if self._venue_clocks is None else self._symbol_clock(symbol)

    def venue_lag(self, symbol: str) -> int:
        """How far the engine's clock (``clock_now``) is ahead of ``symbol``'s venue's own
        (negative: behind it); 0 where there is one clock. What a time on the venue's clock
        is moved by to be shown against the engine's (a time to live's countdown). One venue
        alone is the engine's clock: its times are shown as journaled (the watch's tick runs
        the engine's clock on from the last stamp, and a later quote stamped a little behind
        that estimate moved every time shown by the gap, anew at each snapshot)."""
        clocks = self._venue_clocks
        if clocks is None or len(clocks) < 2:
            return 0
        return self.clock_now - self._symbol_clock(symbol)

    def tick(self, now: int) -> list[CoreOutput]:
        """Once a second of engine time: stale feeds, breaker cool-downs, approval expiry, and
        limits whose time to live ran out (the runtime's watch calls this between quotes, so a
        quiet market that sends no quote still cancels them on time)."""
        self._next_clock_ts = now - now % NS_PER_SECOND + NS_PER_SECOND
        if now > self._clock_now:
            self._clock_now = now
        if now >= self._next_day_ts:
            # Midnight UTC passed with no quote (a quiet market, a feed down): the day starts
            # now, not at the next quote, so day PnL never shows yesterday's as today's.
            self._roll_day(now)
        out: list[CoreOutput] = []
        if now >= self._next_expiry or self._venue_clocks is not None:
            # (with venues' own clocks a venue's may be ahead of ``now``: looked at each tick)
            out.extend(self.expire_orders(now))
        board = self.breakers
        before = board.now
        out.extend(self.apply_breakers(board.on_clock(now)))
        if board.now < before:  # the clock went back (BreakerBoard._clock_went_back)
            self._clock_went_back(before - board.now)
        # A request's time to live runs on its venue's clock where venues keep their own: on
        # the engine's, which runs with whichever venue is ahead, a request on another venue
        # expired that much early (at once with a venue 30 s ahead).
        out.extend(self._expire_approvals(now))
        return out

    def _clock_went_back(self, step: int) -> None:
        """The clock went back by ``step`` (a restart on a machine whose wall clock was stepped
        back, a replay begun again on a journal that ran later): each position's time held
        counts on from what it was, not from ``step`` less (a time stop held back by the step,
        and on bars no exit judged at all until the clock passed the entry again), and each
        working limit's time to live runs on from what was left of it."""
        for slot in self.slots.values():
            st = slot.exits
            if st is not None:
                st.shift += step
        # A working limit's time to live, likewise: its expiry stamped on the clock before the
        # step kept it working that much longer (an hour past a 30 s time to live).
        for coid, order in self.open_orders.items():
            if order.expire_ts:
                order.expire_ts -= step
                order.ts_created -= step  # (its time to live, expire_ts - ts_created, as sent)
                again = self._expiring.get(coid)
                if again is not None:
                    self._expiring[coid] = again - step
        self._next_expiry = 0  # looked at again at the next quote or tick

    def _expire_approvals(self, now: int) -> list[CoreOutput]:
        """The requests whose time to live ran out, each on its venue's clock where venues
        keep their own (see tick), as "expired"."""
        out: list[CoreOutput] = []
        clock_of = None if self._venue_clocks is None else self._symbol_clock
        for outcome in self.approvals.expire(now, clock_of):
            # Its decision was kept for the approval that never came: let it go.
            self._decisions.pop(outcome.approval_id.removeprefix("ap-"), None)
            ev = ApprovalDecided(now, outcome.to_dict())
            self.trace.append(ev)
            out.append(ev)
        return out

    def on_clock_drift(self, drift_ms: float) -> list[CoreOutput]:
        """A measured offset of our clock from a venue's (NaN: it could not be measured)."""
        return self.apply_breakers(self.breakers.on_clock_drift(drift_ms, self.now))

    def apply_breakers(self, changes: list[BreakerChange]) -> list[CoreOutput]:
        """Journal every trip and re-arm, and do what the breaker asks: pause, halt, block (the
        one way a breaker change reaches the safety state, from the core or an operator)."""
        if not changes:
            return _EMPTY
        out: list[CoreOutput] = []
        for ch in changes:
            ev = BreakerChanged(ch.ts, ch.to_dict())
            self.trace.append(ev)
            out.append(ev)
            key = (ch.breaker, ch.scope)
            if ch.tripped:
                self._breaker_actions[key] = ch.action
                reason = f"{ch.breaker}: {ch.reason}"
                if ch.action == "pause_strategy":
                    out.extend(self.pause_strategy(ch.scope, by="system", reason=reason, ts=ch.ts))
                elif ch.action == "halt_engine":
                    halted = self.safety.set_breaker_halt(f"{ch.breaker}:{ch.scope}", reason, ch.ts)
                    out.extend(halted)
                    if halted:
                        # HALTED as by the kill switch at halt: the requests waiting for a
                        # person go too (a re-arm must not bring back a trade from before).
                        why = f"engine halted by breaker {ch.breaker}: {ch.reason}"
                        out.extend(self._reject_pending(ch.ts, why, "system"))
                    out.extend(self.cancel_all(f"engine halted by breaker {ch.breaker}"))
            else:
                action = self._breaker_actions.pop(key, "")
                if action == "pause_strategy":
                    st = self.safety.state.strategies.get(ch.scope)
                    if (
                        st is not None
                        and st.paused
                        and st.by == "system"
                        and st.reason.startswith(f"{ch.breaker}:")
                    ):
                        out.extend(
                            self.safety.resume(
                                ch.scope,
                                by=ch.by,
                                reason=f"breaker {ch.breaker} re-armed",
                                ts=ch.ts,
                            )
                        )
                        # Another breaker still holds it: paused again, by that one (else
                        # it read as active while every order it sent was denied).
                        still = next(
                            (
                                t
                                for t in self.breakers.tripped()
                                if t.scope == ch.scope and t.action == "pause_strategy"
                            ),
                            None,
                        )
                        if still is not None:
                            out.extend(
                                self.safety.pause(
                                    ch.scope,
                                    by="system",
                                    reason=f"{still.breaker}: {still.reason}",
                                    ts=ch.ts,
                                )
                            )
                elif action == "halt_engine":
                    out.extend(
                        self.safety.set_breaker_halt(f"{ch.breaker}:{ch.scope}", None, ch.ts)
                    )
        return out

    def loss_breaches(self) -> list[tuple[str, str]]:
        """Every loss limit the equity is at or beyond now: (source, human reason)."""
        p = self.portfolio
        return self.safety.loss_breaches(p.equity, p.day_start_equity, p.peak_equity)

    def _auto_kill(self, ts: int) -> list[CoreOutput]:
        """The automatic kill for the first limit reached that no operator overrode; an
        overridden limit the equity is back inside is armed again."""
        override = self.loss_override
        ended: list[CoreOutput] = []
        if override:
            p = self.portfolio
            hit = self.safety.loss_sources(p.equity, p.day_start_equity, p.peak_equity)
            ended = self._end_override(override & hit, ts, "equity is back inside the limit")
            override = self.loss_override
            if hit <= override:
                return ended  # only the standing losses a person accepted
        fresh = [b for b in self.loss_breaches() if b[0] not in override]
        if not fresh:
            return ended
        source, reason = fresh[0]
        level = self.cfg.safety.kill_switch.auto_level
        return [*ended, *self.kill(level, by="system", reason=reason, source=source)]

    def kill(
        self, level: str, *, by: str, reason: str, source: str, client: str = ""
    ) -> list[CoreOutput]:
        """Engage the kill switch: state first (no submit from here on), then its consequences."""
        # Stamped when it was engaged: on a quiet feed the engine's clock runs on past the last
        # quote (an operator's kill during an outage is not dated back to the outage's start).
        now = self.clock_now
        changed = self.safety.engage(
            level, by=by, reason=reason, source=source, ts=now, client=client
        )
        if not changed:
            return []
        self.trace.extend(changed)
        out: list[CoreOutput] = list(changed)
        # At ``entries`` (REDUCING) exits are still allowed: a pending exit stays pending and
        # approvable; only what would add exposure is rejected. Higher levels reject them all.
        keep = self.reduces_exposure if level == KillLevel.ENTRIES else None
        why = f"kill switch ({level}): {reason}"
        for outcome in self.approvals.cancel_all(now, why, by, keep):
            ev = ApprovalDecided(now, outcome.to_dict())
            self.trace.append(ev)
            out.append(ev)
        cancels: list[CancelOrder] = []
        if level == KillLevel.HALT or level == KillLevel.FLATTEN:
            cancels = self.cancel_all(f"kill switch ({level})")
            out.extend(cancels)
        else:
            out.extend(self.cancel_adding(f"kill switch ({level})"))
        if level == KillLevel.FLATTEN:
            # Judged as the venue will meet it: after the cancels just asked for (carried out
            # first, and the send-time gate looks again), so a resting order on the other side
            # no longer passes for one already reducing the position and the flatten is sent.
            self._flatten_refused.clear()  # a new engagement: its refusals start again
            with self._set_aside(cancels):
                out.extend(self._kill_flatten(None, by, reason))
        return out

    def _kill_flatten(self, symbol: str | None, by: str, reason: str) -> list[CoreOutput]:
        """The kill switch's flatten; a symbol it could not price, or whose venue is halted
        by reconciliation, is due again (_flatten_due)."""
        out = self.flatten(symbol, by=by, reason=reason, origin=IntentOrigin.FLATTEN)
        for ev in out:
            if (
                type(ev) is IntentChecked
                and ev.outcome == _DENIED
                and not _FLATTEN_WAITS_FOR.isdisjoint(ev.denied_codes)
            ):
                self._flatten_due.add(ev.intent.symbol)
        return out

    def _flatten_again(self, symbol: str) -> list[CoreOutput]:
        """A fresh price for a symbol the kill switch's flatten is still due on: send it now
        (once its other orders are done: they may be the flatten itself, or cancels)."""
        kill = self.safety.kill
        if kill.level != _KILL_FLATTEN:
            self._flatten_due.clear()  # released, or never at flatten: nothing is due
            self._flatten_refused.clear()
            return _EMPTY
        for order in self.open_orders.values():
            if order.symbol == symbol and order.order_type is not _STOP:
                return _EMPTY
        if self.now < self._flatten_not_before.get(symbol, 0):
            return _EMPTY
        inst = self.instruments.get(symbol)
        if inst is not None and inst.venue in self.venue_halts:
            # Its venue waits for a person's answers (the engine does not know the position
            # there): still due, asked once the venue is reconciled, not denied on every quote.
            return _EMPTY
        self._flatten_due.discard(symbol)
        return self._kill_flatten(symbol, kill.by, kill.reason)

    @contextmanager
    def _set_aside(self, cancels: list[CancelOrder]) -> Iterator[None]:
        """While inside, the open orders being cancelled do not count in ``open_order_qty``.

        Except an order still PENDING_NEW: its send's outcome is unknown (a timeout, a lost
        answer, a restart before the venue acknowledged it), so it may have reached the venue
        and filled already, and no cancel sent now takes that back. It keeps counting, so a
        flatten is not sent on top of it (a flatten whose send timed out, flattened again,
        sold the position twice); the kill's flatten is due again once it settles."""
        gone = [
            order
            for cancel in cancels
            if (order := self.open_orders.get(cancel.client_order_id)) is not None
            and order.order_type is not _STOP
            and order.status is not _PENDING_NEW
        ]
        for order in gone:
            self._count_open(order, -1.0)
        try:
            yield
        finally:
            for order in gone:
                self._count_open(order, 1.0)

    def _count_open(self, order: Order, direction: float) -> None:
        """Add (1.0) or take away (-1.0) what is left of an open order in the open quantities."""
        left = order.qty - order.filled_qty  # order.remaining, inlined (three calls an order)
        left = (0.0 if left < 0.0 else left) * direction
        sym = order.symbol
        open_qty = self.open_order_qty
        open_qty[sym] = open_qty.get(sym, 0.0) + left * order.side.sign
        book = self.open_buy_qty if order.side is _BUY else self.open_sell_qty
        book[sym] = book.get(sym, 0.0) + left
        price = order.limit_price
        if price is not None and order.side is _BUY:
            limits = self.open_buy_limits.get(sym)
            if limits is None:
                limits = self.open_buy_limits[sym] = [0.0, 0.0]
            limits[0] += left
            limits[1] += left * price
            if limits[0] <= 1e-12:
                del self.open_buy_limits[sym]  # no float residue once none is open

    def cancel_all(self, reason: str) -> list[CancelOrder]:
        return [CancelOrder(coid, reason) for coid in list(self.open_orders)]

    def cancel_adding(
        self, reason: str, strategy_id: str | None = None, *, raced: bool = False
    ) -> list[CancelOrder]:
        """The resting limits that could still add exposure (REDUCING: only orders that shrink
        a position): every one on the position's side or on a flat symbol, and on the closing
        side whatever is beyond the position (it would flip it). A limit sent before the kill
        kept working and filled into a new position under the switch. Reduce-only orders and
        venue stops stay: they can only shrink it; a market order in flight is done at once.

        With ``strategy_id`` (the strategy was paused): only that strategy's limits, judged
        against its own position, so its resting entry does not open a position the pause
        was meant to stop.

        A closing order kept is judged as if those cancelled were gone; a cancel that loses
        the race to a fill shrinks the position under it (long 10, a sell of 8 kept, the 5
        cancelled fills: the 8 would leave a short of 3), so ``on_broker`` calls this again on
        such a fill (``raced``) while the switch or the pause still holds. What closes the
        position whatever is decided here comes off the room first: market orders in flight,
        reduce-only orders and limits whose cancel is outstanding (not asked twice on the fill;
        a new kill or pause asks again, as the venue may have lost it)."""
        if raced and (
            self.safety.trading_state is _HALTED  # its cancel-all asked every cancel already
            or (
                self.safety.trading_state is _ACTIVE
                if strategy_id is None
                else not self.safety.is_paused(strategy_id)
            )
        ):
            return []  # released in the meantime: nothing to hold the orders to
        why = f"{reason}, then a cancel lost the race to a fill" if raced else reason
        pending = self._rejudge_on_fill
        again = partial(self.cancel_adding, reason, strategy_id, raced=True)
        out: list[CancelOrder] = []
        covered: dict[str, float] = {}
        judged: list[tuple[str, Order, float]] = []
        for coid, order in list(self.open_orders.items()):
            if order.order_type is _STOP:
                continue  # a venue stop is contingent: no exposure in flight
            if strategy_id is None:
                pos = self.portfolio.positions.get(order.symbol)
                qty = pos.qty if pos is not None else 0.0
            elif order.strategy_id != strategy_id:
                continue
            else:
                slot = self.slots.get((strategy_id, order.symbol))
                qty = slot.position.qty if slot is not None else 0.0
            if (
                order.order_type is _LIMIT
                and not order.reduce_only
                and not (raced and coid in pending)
            ):
                judged.append((coid, order, qty))
            elif qty * order.side.sign < 0.0:
                # Closing the position whatever is decided here: a market order in flight, a
                # reduce-only order, a limit whose cancel is outstanding (it may still fill).
                covered[order.symbol] = covered.get(order.symbol, 0.0) + order.remaining
        for coid, order, qty in judged:
            if qty * order.side.sign < 0.0:  # on the closing side
                room = abs(qty) - covered.get(order.symbol, 0.0)
                if order.remaining <= room * (1 + 1e-9):
                    covered[order.symbol] = covered.get(order.symbol, 0.0) + order.remaining
                    continue
            self._rejudge_after(coid, again)
            out.append(CancelOrder(coid, f"{why}: it could add exposure"))
        return out

    def cancel_beyond_limits(self, reason: str, *, raced: bool = False) -> list[CancelOrder]:
        """The resting limits that the limits in force would deny if they were sent now (a
        limit lowered at run time, or in the config before a restart): each is judged as a new
        order would be, by max order notional, max position, max open positions, gross
        exposure and cash, newest first with every other open order still counted (an older
        order keeps its place); those beyond a limit are cancelled, so what rests cannot fill
        the book past the new limit. An order that only shrinks the symbol's worst case (a
        close within the position), reduce-only limits, venue stops and market orders in
        flight stay; a missing mark cancels nothing (the next order is denied for it).

        The orders kept were judged as if those cancelled were gone; a cancel that loses the
        race to a fill breaks that, so ``on_broker`` calls this again on such a fill
        (``raced``): what filled is in the position, and the cancels still outstanding count
        as open (they may fill too; they are not asked twice on the fill, and a new judgement
        asks again, as the venue may have lost it)."""
        limits = self.limits if not self._live else self.effective_limits()
        pending = self._rejudge_on_fill
        again = partial(self.cancel_beyond_limits, reason, raced=True)
        resting = [
            order
            for coid, order in self.open_orders.items()
            if order.order_type is _LIMIT
            and not order.reduce_only
            and order.limit_price is not None
            and coid not in self._expiring  # being cancelled already (expired, moved, exit)
            and coid not in self._replacing
            and coid not in self._exit_cancels
            and not (raced and coid in pending)  # (a new judgement asks again: it may be lost)
        ]
        why = f"{reason}, then a cancel lost the race to a fill" if raced else reason
        out: list[CancelOrder] = []
        gone: list[Order] = []  # set aside while judging: the order itself, then the cancelled
        try:
            for order in reversed(resting):
                self._count_open(order, -1.0)
                gone.append(order)
                beyond = self._beyond_limit(order, limits)
                if beyond is None:
                    gone.pop()
                    self._count_open(order, 1.0)
                else:
                    self._rejudge_after(order.client_order_id, again)
                    out.append(CancelOrder(order.client_order_id, f"{why}: {beyond.message}"))
        finally:
            for order in gone:
                self._count_open(order, 1.0)
        return out

    def _rejudge_after(self, coid: str, again: Callable[[], list[CancelOrder]]) -> None:
        """``coid``'s cancel was asked by the judgement ``again`` makes: a fill of it has that
        judgement made again (each one that cancelled it, once)."""
        held = self._rejudge_on_fill.setdefault(coid, [])
        if again not in held:
            held.append(again)

    def _beyond_limit(self, order: Order, limits: RiskLimits) -> Verdict | None:
        """The first limit a resting ``order`` (set aside from the open quantities) is beyond,
        judged as if it were sent now; None when it only shrinks the symbol's worst case."""
        symbol, side = order.symbol, order.side
        pos = self.portfolio.positions.get(symbol)
        before = (pos.qty if pos is not None else 0.0) + side.sign * self._open_side(symbol, side)
        after = before + side.sign * order.remaining
        limit_price = order.limit_price
        if limit_price is None or (after * before >= 0.0 and abs(after) <= abs(before)):
            return None
        q = self.quotes.get(symbol)
        intent = OrderIntent(
            order.client_order_id,
            order.client_order_id,
            order.strategy_id,
            symbol,
            order.venue,
            side,
            order.remaining,
            _LIMIT,
            (q.bid + q.ask) * 0.5 if q is not None else limit_price,  # ref_price
            self.now,
            limit_price,
        )
        ctx = self.risk_context(symbol)
        for check in _EXPOSURE_CHECKS:
            verdict = check(intent, ctx, limits)
            if not verdict.ok and verdict.code in _BEYOND_LIMIT:
                return verdict
        return None

    def pause_strategy(
        self,
        strategy_id: str,
        *,
        by: str,
        reason: str,
        ts: int,
        client: str = "",
        restate: bool = False,
    ) -> list[CoreOutput]:
        """Pause a strategy (an operator or a breaker) and cancel its resting limits that could
        add exposure: a pause stops new entries, and a limit resting at the venue is one.
        ``restate``: see ``SafetyController.pause``."""
        changed = self.safety.pause(
            strategy_id, by=by, reason=reason, ts=ts, client=client, restate=restate
        )
        if not changed:
            return _EMPTY
        why = f"strategy {strategy_id} paused ({reason})" if reason else f"{strategy_id} paused"
        # Its requests still waiting for a person that would add to its position are
        # rejected, as the kill switch at ``entries`` rejects them: a pause stops its new
        # entries, and an approve after the resume sent an entry asked for before the pause.
        # Its exits stay (judged on its own position, as its resting limits are).

        def keep(intent: OrderIntent) -> bool:
            if intent.strategy_id != strategy_id:
                return True
            return self._paused_may_send(intent)

        rejected = self._reject_pending(ts, why, by, keep)
        return [*changed, *rejected, *self.cancel_adding(why, strategy_id)]

    def _paused_may_send(self, intent: OrderIntent) -> bool:
        """What a paused strategy may still send: its exit, an order that closes (part of) its
        own position (:meth:`_closes_own`) and also shrinks the symbol's net position with
        every open order on its side (:meth:`reduces_exposure`). Its own long, flattened by an
        operator's close or netted by another strategy's short, is no position to sell: that
        sell would open a short while the strategy is paused."""
        return self._closes_own(intent) and self.reduces_exposure(intent)

    def _closes_own(self, intent: OrderIntent) -> bool:
        """Does the intent only close (part of) its strategy's own position on the symbol,
        even if every other open order of the strategy on that side fills too (long 1 with a
        sell limit of 1 resting: a market sell of 1 is a short, not an exit). A venue stop
        does not count: it is cancelled before the strategy's own close goes out."""
        sid, symbol, side = intent.strategy_id, intent.symbol, intent.side
        slot = self.slots.get((sid, symbol))
        own = slot.position.qty if slot is not None else 0.0
        sign = side.sign
        if own * sign >= 0.0:
            return False
        if self.open_orders:
            for coid, order in self.open_orders.items():
                if (
                    order.side is side
                    and order.strategy_id == sid
                    and order.symbol == symbol
                    and order.order_type is not _STOP
                    and coid != intent.intent_id
                ):
                    own += sign * order.remaining
        return own * sign < 0.0 and intent.qty <= abs(own) * (1 + 1e-9)

    def _reject_pending(
        self, ts: int, why: str, by: str, keep: Callable[[OrderIntent], bool] | None = None
    ) -> list[CoreOutput]:
        """Reject the approvals still waiting that ``keep`` does not keep, on the record."""
        if not self.approvals.has_pending():
            return _EMPTY
        out: list[CoreOutput] = []
        for outcome in self.approvals.cancel_all(ts, why, by, keep):
            self._decisions.pop(outcome.approval_id.removeprefix("ap-"), None)
            ev = ApprovalDecided(ts, outcome.to_dict())
            self.trace.append(ev)
            out.append(ev)
        return out

    def flatten(
        self, symbol: str | None, *, by: str, reason: str, origin: str = IntentOrigin.OPERATOR
    ) -> list[CoreOutput]:
        """Close positions with reduce-only market orders through the normal order path.

        Each strategy's own share is closed under its id (so its view stays true); whatever is
        left of the net position (e.g. from another session) goes out under ``origin``. No
        order leaves dust: a share too small for the venue on its own is closed by the order
        that closes what is left. A net position that is itself dust cannot be sent at all; it
        is recorded as dust (outcome ``dust``), never as a denial to retry.
        """
        out: list[CoreOutput] = []
        symbols = [symbol] if symbol else sorted(self.portfolio.positions)
        for sym in symbols:
            pos = self.portfolio.positions.get(sym)
            if pos is None or abs(pos.qty) < 1e-12 or sym not in self.instruments:
                continue
            # Orders that would close on top of the flatten go first (the runtime carries the
            # cancels out before the orders after them), unless the kill switch cancelled every
            # order already: venue stops (a spot venue holds the balance a resting stop would
            # sell, so the flatten's sell was refused for want of it) and the orders resting on
            # the closing side (counted as already closing, they had the flatten denied as
            # larger than the position; left working, one filling after it opens the other way).
            closing = _SELL if pos.qty > 0 else _BUY
            cancels = [
                CancelOrder(
                    coid,
                    f"flatten by {by}: its venue stop goes first"
                    if order.order_type is _STOP
                    else f"flatten by {by}: it would close on top of the flatten",
                )
                for coid, order in self.open_orders.items()
                if order.symbol == sym
                and (order.order_type is _STOP or order.side is closing)
                and origin != _FROM_FLATTEN
            ]
            with self._set_aside(cancels):
                closing_orders = self._flatten_symbol(sym, pos.qty, by, reason, origin)
            # A flatten that sends nothing (every order denied: a stale quote, a limit) leaves
            # the resting closes working: cancelled, the position would keep neither.
            if any(isinstance(o, SubmitOrder) for o in closing_orders) or not any(
                isinstance(o, IntentChecked) and o.outcome == _DENIED for o in closing_orders
            ):
                out.extend(cancels)
            out.extend(closing_orders)
        return out

    def _flatten_symbol(
        self, sym: str, net: float, by: str, reason: str, origin: str
    ) -> list[CoreOutput]:
        """The orders closing ``net`` of ``sym``: each strategy's share under its own id, then
        whatever is left under ``origin``."""
        out: list[CoreOutput] = []
        inst = self.instruments[sym]
        q = self.quotes.get(sym)
        ref = (q.bid + q.ask) * 0.5 if q is not None else self.portfolio.positions[sym].mark
        remaining = net
        for (sid, ssym), slot in sorted(self.slots.items()):
            own = slot.position.qty
            if ssym != sym or own == 0 or (own > 0) != (remaining > 0):
                continue
            qty = min(abs(own), abs(remaining))
            if not closable(inst, qty, ref):
                continue  # a dust share goes out with another order on the symbol
            if not closable(inst, abs(remaining) - qty, ref):
                qty = abs(remaining)  # what it would leave is dust: take that too
            out.extend(self._flatten_one(sid, sym, qty, remaining, by, reason, origin))
            remaining -= qty if remaining > 0 else -qty
        if abs(remaining) > 1e-12:
            left = abs(remaining)
            out.extend(self._flatten_one(origin, sym, left, remaining, by, reason, origin))
        return out

    def _flatten_one(
        self, sid: str, sym: str, qty: float, net: float, by: str, reason: str, origin: str
    ) -> list[CoreOutput]:
        self._decision_seq += 1
        side = Side.SELL if net > 0 else Side.BUY
        q = self.quotes.get(sym)
        ref = (q.bid + q.ask) * 0.5 if q is not None else self.portfolio.positions[sym].mark
        decision = Decision(
            decision_id=f"d{self.session}-{self._decision_seq}",
            ts=self.now,
            strategy_id=sid,
            symbol=sym,
            venue=self.instruments[sym].venue,
            action=Action.SELL if side is Side.SELL else Action.BUY,
            rule=f"{origin}_flatten",
            reason=f"flatten by {by}: {reason}",
            confidence=1.0,
            inputs={"position": net},
            reduce_only=True,
        )
        made = DecisionMade(decision)
        self.trace.append(made)
        return [
            made,
            *self.evaluate(self._intent(decision, side, qty, ref, True, origin), decision),
        ]

    # ------------------------------------------------------------------ approvals

    def approve(
        self, approval_id: str, *, by: str, expected_hash: str | None = None
    ) -> list[CoreOutput]:
        """A person approved: re-run every check at the current price, then submit or reject.

        Its time to live is judged on the engine's clock as a quiet feed moves it on (the
        tick's), not on the last quote's time: a yes after the expiry is an expiry."""
        pend = self.approvals.get(approval_id)
        q = self.quotes.get(pend.intent.symbol) if pend is not None else None
        mid = (q.bid + q.ask) * 0.5 if q is not None else None
        # (on its venue's clock where venues keep their own, as it expires: see tick)
        now = self.clock_now if pend is None else self._symbol_clock(pend.intent.symbol)
        outcome = self.approvals.approve(approval_id, now, mid, by=by, expected_hash=expected_hash)
        decided = ApprovalDecided(now, outcome.to_dict())
        out: list[CoreOutput] = [decided]
        if outcome.status != "approved" or outcome.intent is None or mid is None:
            self.trace.append(decided)
            return out
        self.trace.append(decided)
        out.extend(
            self.apply_breakers(self.breakers.reviewed(outcome.intent.strategy_id, by, self.now))
        )
        intent = replace(outcome.intent, ref_price=mid, ts=self.now)
        decision = self._decisions.pop(intent.intent_id, None) or (
            pend.decision if pend is not None else None
        )
        assert decision is not None
        changed = self._regridded(intent)
        if changed:
            # The checks round to the venue's grid: one that changed since the request (its
            # markets reloaded) would send another quantity or price than the one approved.
            redo = self.approvals.reject_after_checks(approval_id, self.now, changed)
            if redo is not None:
                ev = ApprovalDecided(self.now, redo.to_dict())
                self.trace.append(ev)
                out.append(ev)
            return out
        result = self._stop_before_close(intent, self.evaluate(intent, decision, approved_by=by))
        checked = next((e for e in result if isinstance(e, IntentChecked)), None)
        if checked is not None and checked.outcome == _DENIED:
            codes = ", ".join(checked.denied_codes)
            redo = self.approvals.reject_after_checks(
                approval_id, self.now, f"checks failed on approval: {codes}"
            )
            if redo is not None:
                ev = ApprovalDecided(self.now, redo.to_dict())
                self.trace.append(ev)
                result.append(ev)
        return out + result

    def _regridded(self, intent: OrderIntent) -> str:
        """Why the approved intent would not go out as approved on the venue's grid now ("":
        it would, or the checks will deny it anyway)."""
        inst = self.instruments.get(intent.symbol)
        if inst is None:
            return ""
        on_grid, _ = round_to_grid(intent, inst)
        if on_grid is intent:
            return ""
        was = f"{intent.side} {intent.qty!r}" + (
            f" limit {intent.limit_price!r}" if intent.limit_price is not None else ""
        )
        now = f"{on_grid.qty!r}" + (
            f" limit {on_grid.limit_price!r}" if on_grid.limit_price is not None else ""
        )
        return (
            f"the venue's grid changed since it was shown (lot {inst.lot_size:g}, tick "
            f"{inst.tick_size:g}): the approved {was} would go out as {now}; nothing sent"
        )

    def _stop_before_close(self, intent: OrderIntent, result: list[CoreOutput]) -> list[CoreOutput]:
        """An approved order that closes (part of) a position whose venue holds its stop: the
        stop's cancel goes out before it (the runtime carries a cancel out before the orders
        after it), as for a flatten: a spot venue holds the balance the resting stop would
        sell, so the approved sell was refused for want of it. Only when the order is sent;
        the stop follows what is left of the position once it fills (_native_after_fill), and
        is placed again if the order does not go through (_native_check)."""
        slot = self.slots.get((intent.strategy_id, intent.symbol))
        st = slot.exits if slot is not None else None
        if st is None or not st.native or intent.side.sign != -st.side:
            return result
        if st.native not in self.open_orders or not any(type(i) is SubmitOrder for i in result):
            return result
        why = f"venue stop cancelled before the approved {intent.side} {intent.qty:g}"
        return [CancelOrder(st.native, why), *result]

    def reject(self, approval_id: str, *, by: str, reason: str) -> list[CoreOutput]:
        pend = self.approvals.get(approval_id)
        now = self.clock_now if pend is None else self._symbol_clock(pend.intent.symbol)
        outcome = self.approvals.reject(approval_id, now, by=by, reason=reason)
        self._decisions.pop(approval_id.removeprefix("ap-"), None)
        ev = ApprovalDecided(now, outcome.to_dict())
        self.trace.append(ev)
        return [ev]

    # ------------------------------------------------------------------ broker feedback

    def _track(self, order: Order) -> None:
        coid = order.client_order_id
        if order.order_type is _STOP:
            # A venue stop is contingent: it is an open order (cancels, the kill switch and
            # reconciliation see it) but no exposure in flight until the venue triggers it.
            if order.status.is_terminal:
                self.open_orders.pop(coid, None)
            else:
                self.open_orders[coid] = order
            return
        open_orders = self.open_orders
        old = open_orders.get(coid)
        slot = self.slots.get((order.strategy_id, order.symbol))
        if old is not None:
            left = old.qty - old.filled_qty  # old.remaining, inlined (three calls an order)
            signed = (0.0 if left < 0.0 else left) * old.side.sign
            self._count_open(old, -1.0)
            if slot is not None:
                slot.in_flight -= signed
                slot.orders -= 1
        if order.status.is_terminal:
            if old is not None:
                del open_orders[coid]
            if order.expire_ts:
                self._expiring.pop(coid, None)
        else:
            open_orders[coid] = order
            due = order.expire_ts
            if due and due < self._next_expiry and coid not in self._expiring:
                self._next_expiry = due
            left = order.qty - order.filled_qty
            signed = (0.0 if left < 0.0 else left) * order.side.sign
            self._count_open(order, 1.0)
            if slot is not None:
                slot.in_flight += signed
                slot.orders += 1
        if slot is not None and not slot.orders:
            slot.in_flight = 0.0  # no float residue of the sums once nothing is open

    def on_broker(self, items: Sequence[OrderUpdate | Fill]) -> list[CoreOutput]:
        """Apply the broker's order updates and fills to orders, portfolio and strategy views."""
        out: list[CoreOutput] = []
        trace = self.trace
        rejudge = self._rejudge_on_fill
        raced: list[Callable[[], list[CancelOrder]]] = []  # cancels answered by a fill
        filled = False
        for item in items:
            if isinstance(item, Fill):
                filled = True
                if item.ts >= self._next_day_ts:
                    # A fill past midnight before the new day's first quote or tick: the day
                    # starts before it, so the daily loss limit judges it against today's start.
                    self._roll_day(item.ts)
                out.extend(self.apply_fill(item))
                if rejudge:
                    for again in rejudge.get(item.client_order_id, ()):
                        if again not in raced:
                            raced.append(again)
            else:
                order = item.order
                coid = order.client_order_id
                prev = self.open_orders.get(coid)
                self._track(order)
                ev = OrderUpdated(order, item.ts)
                trace.append(ev)
                out.append(ev)
                sid = order.strategy_id
                if sid in self.safety.state.strategies:
                    status = order.status
                    if status is _REJECTED and coid != self._voiding:
                        # (the engine's own refusal at the send is no broken order path: three
                        # orders a kill overtook between their check and their send paused
                        # the strategy, and it stayed paused after the release)
                        out.extend(
                            self.apply_breakers(
                                self.breakers.on_order_rejected(sid, order.reason, item.ts)
                            )
                        )
                    elif status is _NEW and (prev is None or prev.status is _PENDING_NEW):
                        changes = self.breakers.on_order_accepted(sid, item.ts)
                        if changes:
                            out.extend(self.apply_breakers(changes))
                if order.status.is_terminal:
                    self._order_model.pop(coid, None)
                    self._exit_cancels.pop(coid, None)
                    if (
                        order.status is _REJECTED
                        and order.reduce_only
                        and order.order_type is _MARKET
                        and self.safety.kill.level == _KILL_FLATTEN
                    ):
                        # A close under the kill at flatten that the venue refused (under a
                        # rate limit's wait the broker refuses every new order at once):
                        # nothing sent it again, and the position stayed open under the kill.
                        sym = order.symbol
                        refused = self._flatten_refused.get(sym, 0)
                        self._flatten_refused[sym] = refused + 1
                        wait = FLATTEN_REJECTED_RETRY_NS << min(refused, 16)
                        self._flatten_due.add(sym)
                        # (on its venue's clock: its quotes, which send it again, judge it)
                        self._flatten_not_before[sym] = self._symbol_now(sym) + min(
                            wait, max(FLATTEN_REJECTED_MAX_NS, FLATTEN_REJECTED_RETRY_NS)
                        )
                    elif order.reduce_only and order.order_type is _MARKET:
                        self._flatten_refused.pop(order.symbol, None)  # taken: wait 5 s again
                    if rejudge:
                        rejudge.pop(coid, None)
                    self._overrun_asked.pop(coid, None)
                    if self._with_exits:
                        self._exit_order_done(order)
                    if self._replacing:
                        out.extend(self._replacement(order))
        for again in raced:
            out.extend(again())
        if filled:
            # A fill moves equity (its price against the mark, its fee): a loss limit it
            # reaches engages the kill now, not at the next quote (a quiet feed: never).
            out.extend(self.check_loss_limits())
        return out

    def check_loss_limits(self) -> list[CoreOutput]:
        """The automatic kill, if equity is at a loss limit now and no kill at the automatic
        level is engaged: after a fill, and after an operator changed a limit (a limit lowered
        under the loss already taken engages at once, not at the next quote)."""
        p = self.portfolio
        safety = self.safety
        eq = p.equity
        if (
            eq <= p.day_start_equity * safety.daily_keep or eq <= p.peak_equity * safety.dd_keep
        ) and safety.auto_kill_due():
            return self._auto_kill(self.clock_now)
        return []

    def apply_fill(self, fill: Fill) -> list[CoreOutput]:
        symbol = fill.symbol
        key = (fill.fill_id, symbol)  # some venues number trades per symbol
        fill_ids = self._fill_ids
        if key in fill_ids:
            # The same venue trade reached us twice (a person adopted it, then the broker tied
            # it to its order): book it once.
            self.counters["duplicate_fills"] = self.counters.get("duplicate_fills", 0) + 1
            return _EMPTY
        fill_ids.add(key)
        self.counters["fills"] += 1
        if self._live and self.live_trades < self.cfg.safety.live.canary_trades:
            coid = fill.client_order_id
            if coid not in self.live_traded and fill.strategy_id != _ADOPTED:
                self.live_traded.add(coid)
                self.live_trades += 1
        p = self.portfolio
        sid = fill.strategy_id
        key = (sid, symbol)
        slot = self.slots.get(key)
        own = slot.position if slot is not None else PositionView()
        realized = p.apply_fill(fill)
        trade_pnl = self._round_trip_pnl(key, own, fill)
        exits_ev = None
        native = slot.exits.native if slot is not None and slot.exits is not None else ""
        if slot is not None:
            self._apply_to_strategy(fill, slot)
            if slot.exit_rules is not None:
                exits_ev = self._exits_after_fill(slot, own, fill)
        if self._armed:
            self._rearm_waiting_exits(symbol)
        if trade_pnl is not None and self._with_exits:
            self._count_close(fill.client_order_id, trade_pnl)
        pos = p.positions.get(symbol)
        # Slippage as the model means it: the fill against the mid of the quote it happened on
        # (spread and impact), not the market's drift during latency, which is not fill quality.
        model = self._order_model.get(fill.client_order_id)
        q = self.quotes.get(symbol)
        mid = (q.bid + q.ask) * 0.5 if q is not None else None
        # An automated fill (mode "auto") of a configured strategy: the unreviewed_fills count.
        unreviewed = sid in self.safety.state.strategies and not self.approvals.needs_approval(sid)
        ev = FillReceived(
            fill, realized, pos.qty if pos is not None else 0.0, mid, model, p.equity, unreviewed
        )
        self.trace.append(ev)
        out: list[CoreOutput] = [ev]
        if exits_ev is not None:
            out.append(exits_ev)
        if self.native_stop_venues and slot is not None and slot.exit_rules is not None:
            out.extend(self._native_after_fill(slot, native, fill))
        self.performance.on_fill(fill, mid, model)
        if sid not in self.safety.state.strategies:
            return out
        br = self.breakers
        if trade_pnl is not None:  # a reducing fill closed (part of) a trade
            changes = br.on_round_trip(sid, trade_pnl, p.equity, fill.ts, fill.client_order_id)
            if changes:
                out.extend(self.apply_breakers(changes))
        if model is not None and mid is not None:
            realized_bps = (fill.price - mid) / mid * 1e4 * fill.side.sign
            changes = br.on_fill_slippage(sid, realized_bps, model, fill.ts)
            if changes:
                out.extend(self.apply_breakers(changes))
        if unreviewed:
            changes = br.on_fill(sid, fill.ts)
            if changes:
                out.extend(self.apply_breakers(changes))
        return out

    def _count_close(self, coid: str, trade_pnl: float) -> None:
        """A fill closed (part of) a trade: book it under what closed it (an exit kind, a
        flatten, or the strategy's own signal); each order counts once."""
        kind = self._close_kind.get(coid, "signal")
        stat = self.exit_stats.get(kind)
        if stat is None:
            stat = self.exit_stats[kind] = ExitStat()
        if coid not in self._closing:
            self._closing.add(coid)
            stat.count += 1
        stat.pnl += trade_pnl

    def set_venue_halt(self, venue: str, why: str | None) -> None:
        """Halt a venue (reconciliation found what a person must answer) or lift it (``why``
        None): a lifted venue's exits held by the halt are looked at again on the next event."""
        if why:
            if venue not in self.venue_halts:
                self._venue_marks[venue] = self._venue_marks.get(venue, 0) + 1
            self.venue_halts[venue] = why
            return
        if self.venue_halts.pop(venue, None) is None:
            return
        self._venue_marks[venue] = self._venue_marks.get(venue, 0) + 1
        if self._armed:
            for symbol, inst in self.instruments.items():
                if inst.venue == venue:
                    self._rearm_waiting_exits(symbol)

    def _rearm_waiting_exits(self, symbol: str) -> None:
        """A fill or a finished order on ``symbol`` may make an exit that could send nothing
        (dust, nothing to sell) closable: look at those again on the next event."""
        for slot in self._armed.get(symbol, ()):
            st = slot.exits
            if st is not None and st.retry_ts == NEVER:
                st.retry_ts = 0
            if st is not None and st.native_retry == NEVER:
                st.native_retry = 0

    def _exit_order_done(self, order: Order) -> None:
        """An order finished: an exit of it no longer in flight (a remainder may fire again)."""
        self._rearm_waiting_exits(order.symbol)
        coid = order.client_order_id
        self._order_decisions.pop(coid, None)
        self._close_kind.pop(coid, None)
        self._closing.discard(coid)
        slot = self.slots.get((order.strategy_id, order.symbol))
        if slot is not None and slot.exits is not None:
            st = slot.exits
            if st.pending == coid:
                st.pending = ""
                # Its retry is judged by the symbol's quotes: on its venue's clock (_symbol_now).
                now = self._symbol_now(order.symbol)
                if order.status is _REJECTED and coid == self._voiding:
                    # Not sent: the engine's own gate refused it at the send (the position or
                    # the orders on its side changed since the check). Nothing reached the
                    # venue, so nothing to back off from: looked at again on the next event,
                    # sized anew (the stop fires at the first moment it can). Refused again at
                    # once (a race that repeats), it waits a second as a denied exit does.
                    again = st.voided_ts is not None and now - st.voided_ts < RETRY_NS
                    st.voided_ts = now
                    st.retry_ts = now + RETRY_NS if again else now
                elif order.status is _REJECTED and not order.filled_qty:
                    # Refused by the venue (or the broker at the send): fired again 1, 2, 4
                    # ... s on, at most a minute apart.
                    wait = RETRY_NS << min(st.refused, 16)
                    st.refused += 1
                    st.retry_ts = max(st.retry_ts, now + min(wait, REFUSED_RETRY_MAX_NS))
                else:
                    st.refused = 0  # the venue took it: a later refusal waits a second again
            if slot.exits.native == coid:  # no stop at the venue now: the engine watches it
                slot.exits.native = ""
                if order.status is _REJECTED:
                    # Refused (by the venue, or at the send): placed again a minute on, not
                    # every 5 s against a venue that keeps refusing it.
                    slot.exits.native_retry = self._symbol_now(order.symbol) + (
                        NATIVE_REJECTED_RETRY_NS
                    )

    def _round_trip_pnl(self, key: tuple[str, str], own: PositionView, fill: Fill) -> float | None:
        """The strategy's net PnL on the part of its position this fill closes: price move,
        minus this fill's share of fee, minus the opening fees of the closed share. None when
        the fill only opens or adds. Fees matter: a trade that loses only to fees is a loss."""
        fees = self._open_fees.get(key, 0.0)
        if own.qty * fill.side.sign >= 0 or own.qty == 0:
            self._open_fees[key] = fees + fill.fee
            return None
        closed = min(fill.qty, abs(own.qty))
        share = fees * closed / abs(own.qty)
        close_fee = fill.fee * closed / fill.qty if fill.qty > 0 else fill.fee
        direction = 1.0 if own.qty > 0 else -1.0
        pnl = (fill.price - own.avg_price) * closed * direction - close_fee - share
        # What the fill opens beyond the old position (a flip) carries the rest of its fee.
        self._open_fees[key] = fees - share + (fill.fee - close_fee)
        return pnl

    def _apply_to_strategy(self, fill: Fill, slot: _StrategySlot) -> None:
        pos = slot.position
        signed = fill.qty * fill.side.sign
        new_qty = pos.qty + signed
        inst = self.instruments.get(fill.symbol)
        dust = inst.lot_size * 0.5 if inst is not None else 1e-12
        # A remainder below half a lot cannot be traded (it would be denied BELOW_MIN_QTY
        # forever), so the strategy sees itself flat; the portfolio keeps the exact quantity.
        if abs(new_qty) < max(dust, 1e-12):
            slot.position = PositionView()
        elif pos.qty == 0 or (pos.qty > 0) == (signed > 0):
            avg = (pos.avg_price * abs(pos.qty) + fill.price * abs(signed)) / abs(new_qty)
            slot.position = PositionView(new_qty, avg)
        elif (pos.qty > 0) == (new_qty > 0):
            slot.position = PositionView(new_qty, pos.avg_price)
        else:
            slot.position = PositionView(new_qty, fill.price)

    # ------------------------------------------------------------------ restore and views

    def restore_safety(
        self,
        safety_state: dict[str, Any] | None,
        breaker_changes: list[dict[str, Any]],
        approval_outcomes: list[dict[str, Any]],
        timeline: list[tuple[Any, ...]] | None = None,
        fills: list[Fill] | None = None,
    ) -> list[SafetyChanged]:
        """Latched state survives restart: kill switch, pauses, limit overrides, approval modes
        and counters (``safety_state``, the journal's last whole record), breaker trips and what
        each trip did (``breaker_changes``, in order), approval outcomes, and, given the
        journal's ``timeline`` of breaker observations (RestoredState.breaker_timeline, over
        the ``fills`` passed to `restore` first), the breakers' counters. Returns the run-time
        limits dropped because this start configures a stricter one (for the journal)."""
        modes: dict[str, str] = {}
        dropped: list[SafetyChanged] = []
        if safety_state is not None:
            state = SafetyState.from_dict(safety_state)
            for sid in self.safety.state.strategies:
                state.strategies.setdefault(sid, self.safety.state.strategies[sid])
            self.safety.state = state
            for sid, st in state.strategies.items():
                # Paused for its own failure (raised, malformed signal, hung): still not
                # called until a person resumes it, as before the stop.
                if st.paused and st.by == "system" and paused_by_failure(sid, st.reason):
                    self._set_failed(sid, True)
            modes = dict(state.approval_modes)
            dropped = self._drop_looser_overrides(state)
            self.apply_limit_overrides(state.limit_overrides)
            self._restore_loss_override(state.loss_override, state.loss_override_day)
        if timeline is None:
            self.breakers.restore(breaker_changes)
        else:
            self.breakers.replay(self._breaker_observations(timeline, fills or []))
        for ch in breaker_changes:
            key = (ch["breaker"], ch["scope"])
            if ch["tripped"]:
                self._breaker_actions[key] = ch["action"]
            else:
                self._breaker_actions.pop(key, None)
        self.approvals.restore(approval_outcomes, modes)
        if self.safety.kill.level == _KILL_FLATTEN:
            # Latched at flatten: what it had not closed before the restart is closed on each
            # symbol's first fresh quote (there is no price to send it at before).
            self._flatten_due = {s for s, pos in self.portfolio.positions.items() if pos.qty}
        return dropped

    def _restore_loss_override(self, sources: list[str], given_on: int | None) -> None:
        """An operator's release override outlives a restart within the UTC day it was given
        on (``given_on``, the day number): the day's roll (which ends it) waits for the next
        midnight, not for the first quote. Once the journal's day moved on, it is over."""
        day = self.portfolio.trading_day
        if not sources or day is None or day != given_on:
            return
        self.loss_override = frozenset(sources)
        self._next_day_ts = (day + 1) * NS_PER_DAY

    def _breaker_observations(
        self, timeline: list[tuple[Any, ...]], fills: list[Fill]
    ) -> Iterator[tuple[Any, ...]]:
        """The journal's timeline as BreakerBoard.replay observations: what apply_fill and
        on_broker told the breakers live, for the strategies the safety state knows."""
        trades = self._restored_trades
        strategies = self.safety.state.strategies
        paused: dict[str, bool] = {}
        halted = False
        for item in timeline:
            kind = item[0]
            if kind == "paused":
                paused[item[1]] = item[2]
            elif kind == "halted":
                halted = item[2]
            elif kind == "signal":  # counted as decide counts it: while the strategy may act
                if item[1] in strategies and not paused.get(item[1]) and not halted:
                    yield item
            elif kind == "fill":
                index, equity = item[1], item[2]
                if index >= len(trades) or index >= len(fills):
                    continue
                fill = fills[index]
                if fill.strategy_id not in strategies:
                    continue
                trade_pnl, marked, mid, model = trades[index]
                if trade_pnl is not None:
                    at = marked if equity is None else equity
                    order = fill.client_order_id
                    yield ("round_trip", fill.strategy_id, trade_pnl, at, order, fill.ts)
                if mid is not None and model is not None and mid > 0:
                    bps = (fill.price - mid) / mid * 1e4 * fill.side.sign
                    yield ("slippage", fill.strategy_id, bps, model, fill.ts)
                if item[3]:
                    yield ("unreviewed", fill.strategy_id, fill.ts)
            elif kind == "breaker" or item[1] in strategies:
                yield item
        self._restored_trades = []

    def restore_throttle(self, submits: Iterable[tuple[str, int]]) -> None:
        """After a restart: the orders submitted within the throttle's windows (``submits``,
        (strategy id, ts) in journal order) count again, so a crash and a quick restart do not
        hand a runaway strategy a fresh allowance of orders. Only the window back from the
        restart's clock counts (a replay that starts its file again starts afresh)."""
        throttle, now = self.throttle, self.now
        since = now - round(
            max(self.limits.strategy_throttle.per_seconds, self.limits.global_throttle.per_seconds)
            * NS_PER_SECOND
        )
        for strategy_id, ts in submits:
            if since < ts <= now:
                throttle.record(strategy_id, ts)

    def configured_limit(self, name: str) -> float | None:
        """What the configuration (with its profile) sets for a limit ``set_limit`` changes."""
        cfg = self.cfg
        value = getattr(cfg.risk, name, None)
        if value is None:
            value = getattr(cfg.safety.kill_switch, name, None)
        return float(value) if isinstance(value, int | float) else None

    def _drop_looser_overrides(self, state: SafetyState) -> list[SafetyChanged]:
        """A limit an operator loosened at run time outlives a restart only while the
        configuration still sets what it set when the limit was changed (one made stricter
        always does; every settable limit is stricter lower): a start with ``--profile
        conservative`` or an edited config ran, shown as such, under a looser limit set in an
        earlier session. Those are dropped, on the record."""
        dropped: list[SafetyChanged] = []
        for name, value in list(state.limit_overrides.items()):
            base = self.configured_limit(name)
            if base is None or not isinstance(value, int | float) or value <= base:
                continue
            was = state.limit_bases.get(name)
            if was is not None and was == base:
                continue  # the configuration is what the operator loosened: it stands
            del state.limit_overrides[name]
            state.limit_bases.pop(name, None)
            reason = (
                f"the configuration sets {name} = {base:g} at this start"
                + (f" (it set {was:g} when changed)" if was is not None else "")
                + f"; the run-time {value:g}, looser, does not outlive it (set it again to keep it)"
            )
            before, after = {"value": value}, {"value": base}
            dropped.append(SafetyChanged(self.now, "limit", name, before, after, "system", reason))
        if dropped:
            self.trace.extend(dropped)
        return dropped

    def apply_limit_overrides(self, overrides: dict[str, float]) -> None:
        """Limits an operator changed (journaled in the safety state) over the config's."""
        risk = {k: v for k, v in overrides.items() if k in RiskLimits.model_fields}
        if risk:
            self.limits = RiskLimits.model_validate({**self.limits.model_dump(), **risk})
        kill = {k: v for k, v in overrides.items() if k in KillSwitchConfig.model_fields}
        if kill:
            self.set_kill_limits(
                KillSwitchConfig.model_validate({**self.safety.kill_cfg.model_dump(), **kill})
            )

    def restore(
        self,
        fills: list[Fill],
        orders: list[Order],
        slippage: dict[tuple[str, str], tuple[float, float]] | None = None,
    ) -> None:
        """Rebuild per-strategy positions and open orders after a restart; ``slippage`` is the
        (mid, model bps) journaled with a fill, by (fill id, symbol)."""
        known = slippage or {}
        # What each fill closed (its net PnL, as apply_fill measured it) and the equity after it
        # marked at the fills' prices (for a journal older than FillReceived.equity), so
        # restore_safety can rebuild the breakers' counters; the opening fees of what is still
        # held come back with them (a trade closed after the restart that loses only to fees is
        # a loss).
        scratch = Portfolio(self.portfolio.starting_cash, self.portfolio.quote_currency)
        self._restored_trades = trades = []
        for fill in fills:
            self._fill_ids.add((fill.fill_id, fill.symbol))
            mid, model = known.get((fill.fill_id, fill.symbol), (None, None))
            self.performance.on_fill(fill, mid, model)
            key = (fill.strategy_id, fill.symbol)
            slot = self.slots.get(key)
            trade_pnl = self._round_trip_pnl(
                key, slot.position if slot is not None else PositionView(), fill
            )
            scratch.apply_fill(fill)
            scratch.mark(fill.symbol, fill.price, fill.ts)
            trades.append((trade_pnl, scratch.equity, mid, model))
            if slot is not None:
                before = slot.position
                self._apply_to_strategy(fill, slot)
                if slot.exit_rules is not None:
                    self._exits_after_fill(slot, before, fill)  # journaled: restore_exits
        for order in orders:
            self._track(order)
