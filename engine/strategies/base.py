"""The strategy interface: market events and its own position in, a Signal (or nothing) out.

A strategy is plain synchronous code with no I/O: it never sees a broker, the portfolio, other
strategies or any secret, so it runs the same live, in paper trading and in a backtest. The engine
makes one instance per (strategy id, symbol) and calls ``on_bar`` / ``on_quote`` for that symbol
only; sizing, checks and approval happen downstream of the returned Signal.

The ``PositionView`` it is given is the position it will hold once its orders on their way (sent,
or waiting for approval) complete, so a signal repeated while an order is in flight does not
trade twice; a position too small for the venue to close (dust) reads as flat.
"""

from __future__ import annotations

import math
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from engine.config import Strict
from engine.types import (
    Action,
    Bar,
    BarSeries,
    LimitSpec,
    PositionView,
    Quote,
    Signal,
    TimeInForce,
)
from engine.vocabulary import UNPRINTABLE, printable

# |qty| at or below this counts as flat: float residue from partial fills is not a position.
FLAT_EPSILON = 1e-12
# What a trader's own strategy's signal may carry: every signal is journaled, kept in the
# trace, shown and sent to each attached cockpit, so a reason that grows with the strategy's
# history (``reason=f"{self.closes}"``) must not grow the journal and every snapshot with it.
# Longer text is cut (the rest of the decision is intact); more inputs pause the strategy.
MAX_RULE_CHARS = 64
MAX_REASON_CHARS = 500
MAX_INPUTS = 100
MAX_INPUT_NAME_CHARS = 64
_ACTIONS = frozenset(Action)
_FLOAT_MAX = sys.float_info.max
_TIFS = frozenset(TimeInForce)


def _number(value: object) -> bool:
    """An int or a float, numpy's float64 included (a float; the journal writes it), never
    true/false; numpy's int64 and float32 are not numbers the journal can write."""
    return isinstance(value, int | float) and type(value) is not bool


def _float_sized(value: object) -> bool:
    """Not an int past float's range (NaN and inf are floats: the order path denies them)."""
    return type(value) is not int or -_FLOAT_MAX <= value <= _FLOAT_MAX


def _finite(value: float) -> bool:
    """A number (see ``_number``) that is a finite float: an int past float's range
    (``10**400``) raised OverflowError out of the engine."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def signal_problem(signal: object) -> str | None:
    """What is wrong with what a strategy returned (None: a well-formed Signal).

    The engine's own strategies are well formed by construction (their tests hold it); a
    trader's own is checked at each signal, because what it returns is journaled, shown and
    traded on: a NaN confidence was printed as ``NaN`` in the headless JSON lines (not JSON)."""
    if type(signal) is not Signal:
        return f"returned {type(signal).__name__}, not a Signal or None"
    if signal.action not in _ACTIONS:
        return f"returned the action {signal.action!r} (buy, sell or hold)"
    if type(signal.rule) is not str or type(signal.reason) is not str:
        return "returned a rule or reason that is not text"
    c = signal.confidence
    if not _number(c) or not 0.0 <= c <= 1.0:  # (NaN fails the comparison)
        return f"returned the confidence {c!r} (a number from 0 to 1)"
    inputs = signal.inputs
    if type(inputs) is not dict:
        return f"returned inputs of type {type(inputs).__name__} (a dict of names to numbers)"
    if len(inputs) > MAX_INPUTS:
        return f"returned {len(inputs)} inputs (at most {MAX_INPUTS})"
    for key, value in inputs.items():
        if type(key) is not str or not _number(value) or not _finite(value):
            shown = f"{key!r:.80} = {value!r:.80}"
            return f"returned the input {shown} (inputs are finite numbers)"
        if len(key) > MAX_INPUT_NAME_CHARS:
            return f"returned the input name {key!r:.80} (at most {MAX_INPUT_NAME_CHARS} letters)"
    if type(signal.reduce_only) is not bool:
        return f"returned reduce_only = {signal.reduce_only!r} (true or false)"
    limit = signal.limit
    if limit is None:
        return None
    if type(limit) is not LimitSpec:
        return f"returned a limit of type {type(limit).__name__} (a LimitSpec or None)"
    # (finite, positive prices and times are the order path's to judge: it denies them, saying
    # why; only what it cannot even compare is the strategy's bug)
    numbers: tuple[tuple[str, object, bool], ...] = (
        ("price", limit.price, True),
        ("offset_ticks", limit.offset_ticks, False),
        ("ttl_s", limit.ttl_s, True),
    )
    for name, given, optional in numbers:
        if not (given is None and optional) and not (_number(given) and _float_sized(given)):
            allowed = "a number or None" if optional else "a number"
            return f"returned a limit {name} of {given!r:.80} ({allowed})"
    if type(limit.post_only) is not bool or limit.tif not in _TIFS:
        return f"returned a limit with post_only {limit.post_only!r}, tif {limit.tif!r}"
    return None


def _one_line(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters (cut first: it may be megabytes)."""
    cut = len(text) > limit
    text = printable(text[:limit])
    return text if len(text) <= limit and not cut else text[: limit - 1] + "…"


def tidy_signal(signal: Signal) -> Signal:
    """A well-formed signal (``signal_problem`` said None) as the engine records it: its rule
    and reason on one line (control characters shown escaped) and cut to ``MAX_RULE_CHARS``
    and ``MAX_REASON_CHARS``. The same signal when nothing needs it (the usual case)."""
    rule, reason = signal.rule, signal.reason
    if (
        len(rule) <= MAX_RULE_CHARS
        and len(reason) <= MAX_REASON_CHARS
        and not UNPRINTABLE.search(rule)
        and not UNPRINTABLE.search(reason)
    ):
        return signal
    return Signal(
        signal.action,
        _one_line(rule, MAX_RULE_CHARS),
        _one_line(reason, MAX_REASON_CHARS),
        signal.confidence,
        signal.inputs,
        signal.reduce_only,
        signal.limit,
    )


class StrategyParams(Strict):
    """Base for a strategy's parameters: unknown keys, NaN/inf and true/false-as-number are errors.

    Subclass it for your own strategy's ``Params`` so a typo in the config fails loudly at start.
    """

    # Strict (the config's own base) refuses unknown keys and true/false or quoted numbers.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class OrderParams(StrategyParams):
    """How a strategy's entries go out, for strategies whose ``Params`` extend this.

    ``order_type = "limit"`` sends each entry as a limit ``limit_offset_ticks`` ticks behind
    the touch on its own side (a buy at the bid less n ticks, a sell at the ask plus n; 0 joins
    the touch, negative reaches into the spread), optionally post-only, with a time in force and
    a time to live after which the engine cancels what has not filled. Exits stay market orders:
    getting out must not wait for the market to come back.
    """

    order_type: Literal["market", "limit"] = "market"
    limit_offset_ticks: Annotated[float, Field(ge=-1000, le=1000)] = 0.0
    limit_ttl_s: Annotated[float, Field(gt=0, le=7 * 86_400)] | None = None
    post_only: bool = False
    time_in_force: Literal["gtc", "ioc", "fok"] = "gtc"

    @model_validator(mode="after")
    def _limit_options_need_a_limit(self) -> OrderParams:
        given = [
            name
            for name, default in (
                ("limit_offset_ticks", 0.0),
                ("limit_ttl_s", None),
                ("post_only", False),
                ("time_in_force", "gtc"),
            )
            if getattr(self, name) != default
        ]
        if self.order_type == "market" and given:
            raise ValueError(
                f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only to limit "
                'orders: add order_type = "limit"'
            )
        if self.post_only and self.time_in_force != "gtc":
            raise ValueError(
                f"post_only cannot be combined with time_in_force = {self.time_in_force!r}: a "
                'post-only order rests or nothing (use time_in_force = "gtc")'
            )
        if self.post_only and self.limit_offset_ticks < 0:
            raise ValueError(
                "post_only with a negative limit_offset_ticks reaches into the spread and is "
                "refused whenever it would cross: use an offset >= 0"
            )
        return self

    def entry_limit(self) -> LimitSpec | None:
        """The LimitSpec of an entry, or None for market orders."""
        if self.order_type != "limit":
            return None
        return LimitSpec(
            None,
            self.limit_offset_ticks,
            self.post_only,
            TimeInForce(self.time_in_force),
            self.limit_ttl_s,
        )


class Strategy(ABC):
    """One strategy instance for one symbol. Subclasses set ``kind``, ``Params`` and ``on_bar``."""

    kind: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = StrategyParams

    def __init__(
        self,
        strategy_id: str,
        symbol: str,
        params: BaseModel | Mapping[str, Any] | None = None,
        allow_short: bool = False,
    ) -> None:
        """``params`` may be a validated ``Params`` instance, a mapping to validate, or None for
        the defaults (the mapping forms are for tests and scripts; the registry passes a model)."""
        if params is None:
            params = self.Params()
        elif isinstance(params, Mapping):
            params = self.Params.model_validate(dict(params))
        elif not isinstance(params, self.Params):
            raise TypeError(
                f"{type(self).__name__} needs {self.Params.__name__} params, "
                f"got {type(params).__name__}"
            )
        self.strategy_id = strategy_id
        self.symbol = symbol
        self.params = params
        self.allow_short = allow_short

    @property
    def warmup_bars(self) -> int:
        """Bars the strategy must see before the next bar can produce a signal."""
        return 0

    @abstractmethod
    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        """React to a closed bar. Return None when there is nothing to say (most bars)."""

    def scan(
        self, bars: BarSeries, start: int, stop: int, position: PositionView
    ) -> tuple[int, Signal | None]:
        """``on_bar`` on bars ``start``, ``start + 1``, ... until one returns a signal.

        Returns that bar's index and its signal, or ``(stop, None)``. The engine calls it for
        runs of bars with nothing in between (no fill can change ``position``), so a strategy
        may override it with a tight loop over the columns; an override must leave the strategy
        exactly as these ``on_bar`` calls would and return the same signal.
        """
        on_bar = self.on_bar
        bar = bars.bar
        for i in range(start, stop):
            signal = on_bar(bar(i), position)
            if signal is not None:
                return i, signal
        return stop, None

    def on_quote(self, quote: Quote, position: PositionView) -> Signal | None:
        """Optional hook for quote-driven strategies; bar strategies ignore quotes."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.strategy_id!r}, symbol={self.symbol!r})"


def position_sign(position: PositionView) -> int:
    """+1 long, -1 short, 0 flat (within FLAT_EPSILON)."""
    qty = position.qty
    if qty > FLAT_EPSILON:
        return 1
    if qty < -FLAT_EPSILON:
        return -1
    return 0


def clip01(x: float) -> float:
    """Clamp a confidence into [0, 1]; NaN becomes 0 (no confidence), never an exception."""
    if x != x:
        return 0.0
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x
