"""Pre-trade checks: pure functions from (intent, context, limits) to a ``Verdict``.

Every order — strategy, manual or kill-switch flatten — passes through ``run_checks``. It first
puts the intent on the venue's grid (``round_to_grid``), then runs EVERY check without
short-circuiting, so the decision trace shows all the reasons an order was or would have been
denied, not just the first one.

Conventions, so the verdicts are predictable:

* ``Verdict.check`` is the function name without ``check_`` (``"stale_quote"``, ``"cash"``...);
  ``Verdict.code`` is a stable upper-case code (``"OK"`` when passed) for filters and scripts;
  the message carries the numbers.
* "At the limit passes": a value equal to its limit passes, with a relative tolerance of
  ``REL_EPS`` (1e-9) so float noise such as ``0.1 * 3`` cannot flip a verdict. Comparisons are
  written so that a NaN anywhere denies (fail closed).
* The order's price is its limit price, or ``ref_price`` for a market order.
* Exposure in a symbol is ``position + open orders``; open (unfilled) orders count because they
  can fill at any moment, and at their worst: an order adding to the position is judged with
  every open order on its side filled and none on the other (which may never fill).
* An order that moves a symbol's exposure toward zero without flipping it is "reducing"; the
  position and gross-exposure checks never block it, so a trader can always get smaller.

Beyond the codes in the brief, a few fail-closed codes exist for inputs the checks cannot judge:
``INVALID_QTY`` / ``INVALID_PRICE`` / ``INSTRUMENT_MISMATCH`` (grid), ``NO_QUOTE`` (collar) and
``NO_MARK`` (gross exposure, cash), and ``CHECK_ERROR`` if a check itself raises.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from operator import attrgetter

from engine.config import MAX_AMOUNT, RiskLimits
from engine.throttle import OrderThrottle
from engine.types import NS_PER_SECOND, Instrument, OrderIntent, Quote, Side, Verdict
from engine.vocabulary import PASSED, DenialCode, IntentOrigin

REL_EPS = 1e-9
"""Relative tolerance for "equal to the limit passes" comparisons."""

QTY_EPS = 1e-12
"""A position or open quantity with ``abs() <= QTY_EPS`` counts as flat (float dust)."""

_BUY, _SELL = Side.BUY, Side.SELL  # module globals: ~10x cheaper than Side.BUY on 3.11
_OK_OF = attrgetter("ok")
_INF = math.inf


@dataclass(slots=True)
class RiskContext:
    """Everything the checks may look at, captured at one instant (``now``, ns)."""

    now: int
    equity: float
    # Quote-currency balance. check_cash reserves open buy orders from it at their mark, so pass
    # the balance itself, not a balance net of open orders.
    cash: float
    positions: Mapping[str, float]  # symbol -> signed net qty
    marks: Mapping[str, float]  # symbol -> mark price
    open_order_qty: Mapping[str, float]  # symbol -> signed qty of open (unfilled) orders
    quote: Quote | None  # latest VALID quote for the intent's symbol (None = never seen)
    instrument: Instrument
    throttle: OrderThrottle
    fee_rate: float = 0.001  # taker fee as a fraction, for the cash check
    # The open quantity on each side (positive), symbol -> qty. Exposure is judged at its
    # worst: an open order on the other side may never fill, so it never makes room. None:
    # the net above stands in (a context built by hand with no orders both ways).
    open_buy_qty: Mapping[str, float] | None = None
    open_sell_qty: Mapping[str, float] | None = None
    # The open buy LIMIT orders among them, symbol -> (quantity left, that quantity times each
    # order's limit price): a buy limit may cost its limit price, above the mark (it fills
    # there when the market trades through it), so the cash check reserves it at that price,
    # never below the mark. None: every open buy is reserved at the mark.
    open_buy_limits: Mapping[str, Sequence[float]] | None = None
    # The time now on the clock of the quote's venue, where venues keep clocks of their own
    # (venue feeds: EngineCore.set_venue_clocks); None: ``now`` (one clock for every quote).
    quote_now: int | None = None


# --------------------------------------------------------------------------------------------
# Small helpers


def _over(value: float, limit: float) -> bool:
    """True if ``value`` exceeds ``limit`` beyond float noise, or if either is NaN."""
    return not value <= limit + abs(limit) * REL_EPS


def _under(value: float, limit: float) -> bool:
    """True if ``value`` is below ``limit`` beyond float noise, or if either is NaN."""
    return not value >= limit - abs(limit) * REL_EPS


def _reduces(before: float, delta: float) -> bool:
    """Does adding ``delta`` move ``before`` toward zero (or leave it) without flipping sign?"""
    after = before + delta
    return after * before >= 0.0 and abs(after) <= abs(before)


def _ok(check: str, message: str) -> Verdict:
    """A pass verdict, made once at import and shared (each check's ``_WITHIN_...`` and the
    like): passes carry a fixed message so the hot path builds no strings or objects; denials
    carry the numbers."""
    return Verdict(check, True, PASSED, message)


def _good(x: float | None) -> bool:
    """Positive and finite (NaN fails both comparisons)."""
    return x is not None and 0.0 < x < _INF


def _open_side(ctx: RiskContext, symbol: str, side: Side) -> float:
    """The open quantity that can still fill on ``side`` (positive): what may be added to the
    position in that direction whatever the orders on the other side do."""
    book = ctx.open_buy_qty if side is _BUY else ctx.open_sell_qty
    if book is None:
        net = ctx.open_order_qty.get(symbol, 0.0)
        return (net if side is _BUY else -net) if net * side.sign > 0.0 else 0.0
    return book.get(symbol, 0.0)


def _toward(ctx: RiskContext, symbol: str, side: Side) -> float:
    """The symbol's position once every open order on ``side`` fills and none on the other
    does: the worst case an order on ``side`` adds to (or reduces from)."""
    return ctx.positions.get(symbol, 0.0) + side.sign * _open_side(ctx, symbol, side)


def _worst(ctx: RiskContext, symbol: str) -> float:
    """The symbol's largest possible exposure (either side's open orders filling alone)."""
    return max(abs(_toward(ctx, symbol, _BUY)), abs(_toward(ctx, symbol, _SELL)))


@lru_cache(maxsize=512)
def _decimals(step: float) -> int:
    """Decimal places of a grid step as written (0.01 -> 2, 1e-05 -> 5, 0.25 -> 2)."""
    exponent = Decimal(repr(step)).as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


@lru_cache(maxsize=512)
def _step_fraction(step: float) -> tuple[int, int] | None:
    """The step as written, as ``(units, scale)`` with ``step == units / scale`` and ``scale`` a
    power of ten (0.01 -> (1, 100), 0.25 -> (25, 100), 5.0 -> (50, 10)). None unless the step
    is a finite normal float (a subnormal one is far from the decimal it prints as)."""
    if not (math.isfinite(step) and step >= sys.float_info.min):
        return None
    scale = 10 ** _decimals(step)
    return int(Decimal(repr(step)) * scale), scale


# Below this many units of the step's last decimal, k * step is less than half a unit from
# the exact decimal k * units / scale (its float error is at most ~2.2e-16 relative), so
# rounding it to the step's decimals can only give that decimal.
_EXACT_UNITS = 2 * 10**15


def _grid_point(k: int, step: float) -> float:
    """``round(k * step, decimals of step)``: the double nearest the decimal k x step.

    For any usual size that is ``k * units / scale`` in integers, which Python divides with
    correct rounding, exactly as ``round`` parses its decimal string; ``round(x, n)`` itself
    goes through a decimal conversion that costs ~15 us when its code is cold (once per intent
    in the live engine, where it is the dearest step of the pre-trade checks).
    """
    fraction = _step_fraction(step)
    if fraction is not None:
        units = k * fraction[0]
        if -_EXACT_UNITS < units < _EXACT_UNITS:
            return units / fraction[1]
    return round(k * step, _decimals(step))


def _step_tol(n: float) -> float:
    # x / step carries a few ulps of error (~1e-15 relative); 1e-12 relative (at least 1e-12
    # of a step) absorbs it, so 0.3 / 0.1 = 2.9999999999999996 counts as 3 steps, while a
    # quantity genuinely below a grid point (even by a billionth of a lot) still rounds down.
    size = abs(n)
    return (size if size > 1.0 else 1.0) * 1e-12  # max(1.0, |n|) without the builtin call


def floor_to_step(x: float, step: float) -> float:
    """Round ``x`` down to a multiple of ``step``, robust to float error (0.3 / 0.1 -> 3 steps)."""
    if not step > 0.0:
        return x
    n = x / step
    k = math.floor(n)
    if (k + 1) - n <= (n if n > 1.0 else -n if n < -1.0 else 1.0) * 1e-12:  # _step_tol(n)
        k += 1
    return _grid_point(k, step)


def ceil_to_step(x: float, step: float) -> float:
    """Round ``x`` up to a multiple of ``step``, robust to float error."""
    if not step > 0.0:
        return x
    n = x / step
    k = math.ceil(n)
    if n - (k - 1) <= (n if n > 1.0 else -n if n < -1.0 else 1.0) * 1e-12:  # _step_tol(n)
        k -= 1
    return _grid_point(k, step)


def _num(x: float) -> str:
    """A quantity or price without float noise or trailing zeros: 0.00001, 3, 101.25."""
    if not math.isfinite(x):
        return str(x)
    text = f"{x:,.10f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _money(x: float) -> str:
    return f"{x:,.2f}"


@lru_cache(maxsize=512)
def _ccy(symbol: str) -> str:
    """Quote currency of a ccxt symbol, with a leading space: 'BTC/USDT:USDT' -> ' USDT'."""
    if "/" not in symbol:
        return ""
    return " " + symbol.split("/", 1)[1].split(":", 1)[0]


def _mark(ctx: RiskContext, symbol: str, fallback: float) -> float:
    """Mark for ``symbol``: the portfolio's mark, else the quote mid, else ``fallback``."""
    mark = ctx.marks.get(symbol)
    if mark is not None and 0.0 < mark < _INF:  # _good
        return mark
    quote = ctx.quote
    if quote is not None and quote.symbol == symbol:
        mid = (quote.bid + quote.ask) * 0.5  # Quote.mid, without the property call
        if _good(mid):
            return mid
    return fallback


# --------------------------------------------------------------------------------------------
# Grid


_ON_GRID = _ok("round_to_grid", "on grid")
_ROUNDED_TO_GRID = _ok("round_to_grid", "rounded to grid")


def round_to_grid(intent: OrderIntent, instrument: Instrument) -> tuple[OrderIntent, Verdict]:
    """Put the intent on the venue's grid; never make it bigger or more aggressive.

    Quantity rounds DOWN to ``lot_size``; a buy limit rounds DOWN and a sell limit UP to
    ``tick_size``. Denies (``BELOW_MIN_QTY``) when the rounded quantity is 0 or below
    ``max(min_qty, lot_size)``, and (``BELOW_MIN_NOTIONAL``) when qty * price is below
    ``min_notional``. The returned intent is the adjusted one even when denied, so the trace
    shows what rounding did.
    """
    name = "round_to_grid"
    symbol = intent.symbol
    if instrument.symbol != symbol:
        return intent, Verdict(
            name,
            False,
            DenialCode.INSTRUMENT_MISMATCH,
            f"instrument is {instrument.symbol}, intent is for {symbol}",
        )
    qty = intent.qty
    if not 0.0 < qty < _INF:
        return intent, Verdict(
            name, False, DenialCode.INVALID_QTY, f"quantity {qty} is not a positive number"
        )
    if qty > MAX_AMOUNT:
        # A price near zero sizes to such quantities (2% of 1,000,000 at 1e-12: 2e16); sent,
        # its journaled intent was one no start would take (the journal's bound on amounts).
        return intent, Verdict(
            name,
            False,
            DenialCode.INVALID_QTY,
            f"quantity {qty:.17g} is beyond what the engine handles ({MAX_AMOUNT:g})",
        )
    limit_price = intent.limit_price
    ref = intent.ref_price
    if not _good(ref) or (limit_price is not None and not _good(limit_price)):
        return intent, Verdict(
            name,
            False,
            DenialCode.INVALID_PRICE,
            f"price is not a positive number (ref {intent.ref_price}, limit {limit_price})",
        )

    lot = instrument.lot_size
    tick = instrument.tick_size
    new_qty = floor_to_step(qty, lot)
    new_limit = limit_price
    if limit_price is not None:
        if intent.side is _BUY:
            new_limit = floor_to_step(limit_price, tick)
        else:
            new_limit = ceil_to_step(limit_price, tick)
        if not new_limit > 0.0:
            return intent, Verdict(
                name,
                False,
                DenialCode.INVALID_PRICE,
                f"buy limit {_num(limit_price)} rounds down to 0 on tick {_num(tick)}",
            )

    stop = intent.stop_price
    new_stop = stop
    if stop is not None:
        # A venue stop's trigger moves toward the market, never away: it fires no later.
        if not _good(stop):
            return intent, Verdict(
                name, False, DenialCode.INVALID_PRICE, f"stop price {stop} is not positive"
            )
        new_stop = ceil_to_step(stop, tick) if intent.side is _SELL else floor_to_step(stop, tick)
        if not new_stop > 0.0:
            return intent, Verdict(
                name, False, DenialCode.INVALID_PRICE, f"stop {_num(stop)} rounds down to 0"
            )

    if new_qty == qty and new_limit == limit_price and new_stop == stop:
        adjusted = intent
    else:
        adjusted = OrderIntent(
            intent.intent_id,
            intent.decision_id,
            intent.strategy_id,
            symbol,
            intent.venue,
            intent.side,
            new_qty,
            intent.order_type,
            intent.ref_price,
            intent.ts,
            new_limit,
            intent.reduce_only,
            intent.origin,  # who asked stays who asked (a flatten rounded is still a flatten)
            intent.post_only,
            intent.tif,
            intent.ttl_ns,
            new_stop,
        )

    min_qty = instrument.min_qty
    if lot > min_qty:  # max(min_qty, lot) without the call
        min_qty = lot
    if not new_qty > 0.0 or not new_qty >= min_qty - abs(min_qty) * REL_EPS:  # _under
        return adjusted, Verdict(
            name,
            False,
            DenialCode.BELOW_MIN_QTY,
            f"quantity {_num(qty)} rounds down to {_num(new_qty)} on lot {_num(lot)}; "
            f"minimum is {_num(min_qty)}",
        )
    price = new_limit if new_limit is not None else ref
    notional = new_qty * price
    min_notional = instrument.min_notional
    if not notional >= min_notional - abs(min_notional) * REL_EPS:  # _under
        return adjusted, Verdict(
            name,
            False,
            DenialCode.BELOW_MIN_NOTIONAL,
            f"notional {_money(notional)}{_ccy(symbol)} is below min notional "
            f"{_money(instrument.min_notional)}",
        )
    # The adjusted intent carries the rounded numbers; the message stays constant (and cheap).
    return adjusted, _ON_GRID if adjusted is intent else _ROUNDED_TO_GRID


# --------------------------------------------------------------------------------------------
# Checks (all take the already-rounded intent)


_NOT_REDUCE_ONLY = _ok("reduce_only", "not reduce-only")
_WITHIN_POSITION = _ok("reduce_only", "within position")


def check_reduce_only(intent: OrderIntent, ctx: RiskContext, limits: RiskLimits) -> Verdict:
    """A reduce-only order may not be larger than what it can reduce; denied, never clamped.

    Clamping would silently send a different order than the one decided; a denial shows up in
    the trace. "What it can reduce" is the position minus open orders already reducing it
    (from the net open quantity), so a loop stacking exits cannot flip the position.
    """
    name = "reduce_only"
    if not intent.reduce_only:
        return _NOT_REDUCE_ONLY
    symbol = intent.symbol
    pos = ctx.positions.get(symbol, 0.0)
    net = _toward(ctx, symbol, intent.side)
    # Reducible: the part of the position not already covered by open orders on this side.
    reducible = min(abs(pos), abs(net)) if net * pos > 0.0 else 0.0
    delta = intent.qty if intent.side is _BUY else -intent.qty
    if abs(pos) <= QTY_EPS or delta * pos > 0.0 or _over(intent.qty, reducible):
        return Verdict(
            name,
            False,
            DenialCode.REDUCE_ONLY_EXCEEDS_POSITION,
            f"reduce-only {intent.side} {_num(intent.qty)} exceeds reducible "
            f"{_num(reducible)} (position {_num(pos)}, open orders "
            f"{_num(net - pos)})",
        )
    return _WITHIN_POSITION


_QUOTE_FRESH = _ok("stale_quote", "quote fresh")


def check_stale_quote(intent: OrderIntent, ctx: RiskContext, limits: RiskLimits) -> Verdict:
    """Deny when the reference quote is missing or older than ``stale_quote_s``.

    Age is ``now - quote.ts_exchange``: the engine's clock is made of the quotes' stamps (plus,
    between quotes, the time elapsed since the last one arrived), so a quote's age is measured
    against its stamp; against its receipt by this machine's wall clock, a clock a few seconds
    ahead of the venue's kept a quote fresh that much longer. With several venues ``now`` is
    the quote's own venue's clock (``quote_now``): the engine's runs with whichever venue's
    clock is ahead, and another venue's fresh quotes looked that much older. An age exactly
    equal to the limit passes, 1 ns more is stale. A quote stamped after ``now`` counts as fresh.
    """
    name = "stale_quote"
    quote = ctx.quote
    if quote is None:
        return Verdict(name, False, DenialCode.NO_QUOTE, f"no valid quote seen for {intent.symbol}")
    if quote.symbol != intent.symbol:
        return Verdict(
            name, False, DenialCode.NO_QUOTE, f"quote is for {quote.symbol}, not {intent.symbol}"
        )
    now = ctx.quote_now
    age = (ctx.now if now is None else now) - quote.ts_exchange
    limit_ns = round(limits.stale_quote_s * NS_PER_SECOND)
    if age > limit_ns:
        return Verdict(
            name,
            False,
            DenialCode.STALE_QUOTE,
            f"quote age {_num(age / NS_PER_SECOND)}s exceeds stale limit "
            f"{_num(limits.stale_quote_s)}s",
        )
    return _QUOTE_FRESH


_WITHIN_COLLAR = _ok("price_collar", "within collar")


def check_price_collar(intent: OrderIntent, ctx: RiskContext, limits: RiskLimits) -> Verdict:
    """Deny a price more than ``price_collar_pct`` % away from the quote mid (either side).

    Catches fat-fingered prices and strategies acting on a stale or broken reference.
    """
    name = "price_collar"
    quote = ctx.quote
    if quote is None or quote.symbol != intent.symbol:
        return Verdict(
            name, False, DenialCode.NO_QUOTE, f"no quote for {intent.symbol} to collar against"
        )
    mid = (quote.bid + quote.ask) * 0.5  # Quote.mid, without the property call
    if not _good(mid):
        return Verdict(
            name, False, DenialCode.NO_QUOTE, f"quote mid {mid} is not a positive number"
        )
    limit_price = intent.limit_price
    price = intent.ref_price if limit_price is None else limit_price
    deviation = abs(price - mid)
    pct = limits.price_collar_pct
    collar = mid * pct / 100.0
    if not deviation <= collar + abs(collar) * REL_EPS:  # _over (the checks inline it)
        what = "reference price" if limit_price is None else "limit price"
        return Verdict(
            name,
            False,
            DenialCode.PRICE_COLLAR,
            f"{what} {_num(price)} is {deviation / mid * 100.0:.3f}% from mid {_num(mid)}; "
            f"collar is {pct:g}%",
        )
    return _WITHIN_COLLAR


_NOTIONAL_SHRINKS = _ok("max_order_notional", "reduce-only: shrinks the position")
_WITHIN_ORDER_NOTIONAL = _ok("max_order_notional", "within max order notional")


def check_max_order_notional(intent: OrderIntent, ctx: RiskContext, limits: RiskLimits) -> Verdict:
    """Deny an order whose notional (qty * price) exceeds ``max_order_notional``.

    A reduce-only order that only shrinks the position passes: the limit guards against fat
    fingers and runaway entries, and must never trap a position that grew in value.
    """
    name = "max_order_notional"
    limit_price = intent.limit_price
    notional = intent.qty * (intent.ref_price if limit_price is None else limit_price)
    limit = limits.max_order_notional
    pos = ctx.positions.get(intent.symbol, 0.0)
    if intent.reduce_only and pos * intent.side.sign < 0 and intent.qty <= abs(pos) * (1 + REL_EPS):
        return _NOTIONAL_SHRINKS
    if not notional <= limit + abs(limit) * REL_EPS:  # _over
        return Verdict(
            name,
            False,
            DenialCode.MAX_ORDER_NOTIONAL,
            f"notional {_money(notional)}{_ccy(intent.symbol)} exceeds max order notional "
            f"{_money(limit)}",
        )
    return _WITHIN_ORDER_NOTIONAL


_POSITION_REDUCES = _ok("max_position", "reduces exposure")
_WITHIN_MAX_POSITION = _ok("max_position", "within max position")


def check_max_position(intent: OrderIntent, ctx: RiskContext, limits: RiskLimits) -> Verdict:
    """Deny when |position + open orders + this order| * mark > max_position_fraction * equity.

    Never blocks an order that shrinks exposure in the symbol without flipping it, nor a
    reduce-only order that shrinks the position. A flip is judged as a new position.
    """
    name = "max_position"
    symbol = intent.symbol
    pos = ctx.positions.get(symbol, 0.0)
    before = _toward(ctx, symbol, intent.side)  # an open order the other way may never fill
    delta = intent.qty if intent.side is _BUY else -intent.qty
    after = before + delta
    if (intent.reduce_only and _reduces(pos, delta)) or (
        after * before >= 0.0 and abs(after) <= abs(before)  # _reduces(before, delta)
    ):
        return _POSITION_REDUCES
    limit_price = intent.limit_price
    price = intent.ref_price if limit_price is None else limit_price
    mark = _mark(ctx, symbol, price)
    value = abs(after) * mark
    limit = limits.max_position_fraction * ctx.equity
    if not value <= limit + abs(limit) * REL_EPS:  # _over
        return Verdict(
            name,
            False,
            DenialCode.MAX_POSITION,
            f"position after order {_num(after)} {symbol} = {_money(value)}{_ccy(symbol)} "
            f"exceeds max position {_money(limit)} "
            f"({limits.max_position_fraction:.2%} of equity {_money(ctx.equity)})",
        )
    return _WITHIN_MAX_POSITION


_OPENS_NO_POSITION = _ok("max_open_positions", "reduce-only cannot open a position")
_SYMBOL_HELD = _ok("max_open_positions", "symbol already held")
_WITHIN_OPEN_POSITIONS = _ok("max_open_positions", "within max open positions")


def check_max_open_positions(intent: OrderIntent, ctx: RiskContext, limits: RiskLimits) -> Verdict:
    """Deny opening a new symbol when ``max_open_positions`` symbols are already held.

    A symbol counts as held if it has a position or open orders (a pending entry is about to
    become a position). Orders in a symbol already held, and reduce-only orders, always pass.
    """
    name = "max_open_positions"
    if intent.reduce_only:
        return _OPENS_NO_POSITION
    symbol = intent.symbol
    positions = ctx.positions
    open_qty = ctx.open_order_qty
    if abs(positions.get(symbol, 0.0)) > QTY_EPS or _open_any(ctx, symbol):
        return _SYMBOL_HELD
    # Plain loops: a comprehension is a function call of its own on 3.11.
    held: set[str] = set()
    for s, q in positions.items():
        if abs(q) > QTY_EPS:
            held.add(s)
    for s in open_qty:
        if _open_any(ctx, s):
            held.add(s)
    limit = limits.max_open_positions
    if len(held) >= limit:
        return Verdict(
            name,
            False,
            DenialCode.MAX_OPEN_POSITIONS,
            f"opening {symbol} would make {len(held) + 1} open positions; max is {limit} "
            f"(held: {', '.join(sorted(held))})",
        )
    return _WITHIN_OPEN_POSITIONS


def _open_any(ctx: RiskContext, symbol: str) -> bool:
    """Orders are open on the symbol (a buy and a sell that net to zero are two orders)."""
    if ctx.open_buy_qty is None or ctx.open_sell_qty is None:
        return abs(ctx.open_order_qty.get(symbol, 0.0)) > QTY_EPS
    return (
        ctx.open_buy_qty.get(symbol, 0.0) > QTY_EPS or ctx.open_sell_qty.get(symbol, 0.0) > QTY_EPS
    )


def _no_mark(symbol: str, exposure: float) -> Verdict:
    return Verdict(
        "gross_exposure",
        False,
        DenialCode.NO_MARK,
        f"no mark for {symbol} (exposure {_num(exposure)})",
    )


_GROSS_NOT_UP = _ok("gross_exposure", "does not increase gross exposure")
_WITHIN_GROSS = _ok("gross_exposure", "within max gross exposure")


def check_gross_exposure(intent: OrderIntent, ctx: RiskContext, limits: RiskLimits) -> Verdict:
    """Deny when sum |position + open| * mark over all symbols, after this order, exceeds
    ``max_gross_exposure_fraction`` * equity. An order that does not increase gross passes.

    A held symbol without a usable mark denies (``NO_MARK``): exposure that cannot be valued
    cannot be bounded.
    """
    name = "gross_exposure"
    symbol = intent.symbol
    positions = ctx.positions
    open_qty = ctx.open_order_qty
    before = _toward(ctx, symbol, intent.side)  # an open order the other way may never fill
    after = before + (intent.qty if intent.side is _BUY else -intent.qty)
    if abs(after) <= abs(before):
        return _GROSS_NOT_UP
    marks = ctx.marks
    limit_price = intent.limit_price
    price = intent.ref_price if limit_price is None else limit_price
    gross = abs(after) * _mark(ctx, symbol, price)
    # Every other symbol's position + open orders, then open orders in symbols not held, in
    # that order (it decides which NO_MARK is reported and the order of the float sum).
    others = [s for s in positions if s != symbol]
    others += [s for s in open_qty if s != symbol and s not in positions]
    for s in others:
        exposure = _worst(ctx, s)
        if exposure > QTY_EPS:
            mark = marks.get(s)
            if mark is None or not _good(mark):
                return _no_mark(s, exposure)
            gross += exposure * mark
    limit = limits.max_gross_exposure_fraction * ctx.equity
    if not gross <= limit + abs(limit) * REL_EPS:  # _over
        return Verdict(
            name,
            False,
            DenialCode.MAX_GROSS_EXPOSURE,
            f"gross exposure after order {_money(gross)}{_ccy(symbol)} exceeds "
            f"{_money(limit)} ({limits.max_gross_exposure_fraction:.2%} of equity "
            f"{_money(ctx.equity)})",
        )
    return _WITHIN_GROSS


_SELL_NEEDS_NO_CASH = _ok("cash", "sell needs no cash")
_COVER_NEEDS_NO_CASH = _ok("cash", "reduce-only buy: covers a short")
_ENOUGH_CASH = _ok("cash", "enough cash")


def check_cash(intent: OrderIntent, ctx: RiskContext, limits: RiskLimits) -> Verdict:
    """A buy needs qty * price * (1 + fee_rate) <= cash left after open buy orders (spot).

    Open buy orders are reserved at their mark plus fee, a buy limit at its limit price when
    that is higher (what it costs when the market trades through it), so stacked entries
    cannot spend the same cash twice. Sells pass: shorting is governed elsewhere. So does a
    reduce-only buy while the symbol is short: it covers the short (a stop-loss, a flatten),
    no more than the short (check_reduce_only), and refusing it leaves the loss running.
    """
    name = "cash"
    if intent.side is _SELL:
        return _SELL_NEEDS_NO_CASH
    symbol = intent.symbol
    short = ctx.positions.get(symbol, 0.0)
    if intent.reduce_only and short < -QTY_EPS and intent.qty <= -short * (1 + 1e-9):
        # Buying back (part of) a short, no more than it (check_reduce_only): a protective
        # stop or a flatten refused here left the short's loss running when the cash had gone
        # elsewhere (a leveraged account's longs, open buy limits reserving it).
        return _COVER_NEEDS_NO_CASH
    fee = 1.0 + ctx.fee_rate
    limit_price = intent.limit_price
    price = intent.ref_price if limit_price is None else limit_price
    cost = intent.qty * price * fee
    reserved = 0.0
    marks = ctx.marks
    for s in ctx.open_order_qty:
        q = _open_side(ctx, s, _BUY)  # a sell the other way may never fill: buys are reserved
        if q > QTY_EPS:
            mark = _mark(ctx, s, price) if s == symbol else marks.get(s)
            if mark is None or not _good(mark):
                return Verdict(
                    name, False, DenialCode.NO_MARK, f"no mark for open buy orders in {s}"
                )
            at_limit = ctx.open_buy_limits.get(s) if ctx.open_buy_limits is not None else None
            if at_limit is not None and at_limit[0] * mark < at_limit[1]:
                rest = q - at_limit[0]  # the market orders among them, at the mark
                reserved += ((rest if rest > 0.0 else 0.0) * mark + at_limit[1]) * fee
            else:
                reserved += q * mark * fee
    available = ctx.cash - reserved
    if not cost <= available + abs(available) * REL_EPS:  # _over
        detail = f" ({_money(reserved)} reserved for open buys)" if reserved else ""
        return Verdict(
            name,
            False,
            DenialCode.INSUFFICIENT_CASH,
            f"buy costs {_money(cost)}{_ccy(symbol)} with fees; cash available "
            f"{_money(available)}{detail}",
        )
    return _ENOUGH_CASH


_WITHIN_RATE = _ok("throttle", "within order rate")
_KILL_NOT_THROTTLED = _ok("throttle", "kill-switch flatten: not held back by the order rate")
_EXIT_NOT_THROTTLED = _ok("throttle", "protective exit: not held back by the order rate")
_KILL_FLATTEN = IntentOrigin.FLATTEN
_PROTECTIVE_EXIT = IntentOrigin.EXIT


def check_throttle(intent: OrderIntent, ctx: RiskContext, limits: RiskLimits) -> Verdict:
    """Deny the order that would be the (max_orders + 1)th within the window.

    Reduce-only orders are NOT exempt: a runaway loop can just as well be sending exits. The
    kill switch's flatten is (origin ``flatten``): a runaway that used up its strategy's rate is
    when a person reaches for the switch, and its close must not wait a minute behind it (it is
    at most an order per strategy and symbol, once per kill; it is still counted). So is a
    protective exit (origin ``exit``): the engine's own, at most one in flight per position,
    fired again at most once a second (a venue-held stop moves at most once a bar), it is no
    loop; held back, the stop-loss waited while
    other strategies' (or its own limit moves') orders aged out of the window and the price
    ran through it. It is still counted.
    ``limits`` is the source of truth: if its throttle settings differ from the throttle's,
    the throttle adopts them (the only state this check touches, besides pruning). Passing
    does not record the order; the caller records it on submit.
    """
    name = "throttle"
    if intent.origin == _KILL_FLATTEN:
        return _KILL_NOT_THROTTLED
    if intent.origin == _PROTECTIVE_EXIT:
        return _EXIT_NOT_THROTTLED
    throttle = ctx.throttle
    s_lim = limits.strategy_throttle
    g_lim = limits.global_throttle
    if throttle.strategy_limit is not s_lim or throttle.global_limit is not g_lim:
        throttle.set_limits(s_lim, g_lim)
    s_count = throttle.strategy_count(intent.strategy_id, ctx.now)
    g_count = throttle.global_count(ctx.now)
    s_over = s_count >= s_lim.max_orders
    g_over = g_count >= g_lim.max_orders
    if not (s_over or g_over):
        return _WITHIN_RATE
    s_text = (
        f"strategy {intent.strategy_id} sent {s_count} orders in {s_lim.per_seconds:g}s "
        f"(limit {s_lim.max_orders})"
    )
    g_text = f"all strategies sent {g_count} in {g_lim.per_seconds:g}s (limit {g_lim.max_orders})"
    if s_over:
        # The strategy code wins when both trip: it names the likely culprit.
        return Verdict(name, False, DenialCode.THROTTLE_STRATEGY, f"{s_text}; {g_text}")
    return Verdict(name, False, DenialCode.THROTTLE_GLOBAL, f"{g_text}; {s_text}")


# --------------------------------------------------------------------------------------------
# Runner

Check = Callable[[OrderIntent, RiskContext, RiskLimits], Verdict]

CHECKS: tuple[Check, ...] = (
    check_reduce_only,
    check_stale_quote,
    check_price_collar,
    check_max_order_notional,
    check_max_position,
    check_max_open_positions,
    check_gross_exposure,
    check_cash,
    check_throttle,
)
"""The checks ``run_checks`` runs after rounding, in trace order."""


def run_checks(
    intent: OrderIntent, ctx: RiskContext, limits: RiskLimits
) -> tuple[OrderIntent, list[Verdict]]:
    """Round the intent to the grid, then run every check on the rounded intent.

    No short-circuit: the verdict list always has one entry per check (grid first), so the
    trace answers "why not?" completely. A check that raises becomes a ``CHECK_ERROR`` denial
    instead of taking the engine down.
    """
    adjusted, grid = round_to_grid(intent, ctx.instrument)
    verdicts = [grid]
    for check in CHECKS:
        try:
            verdicts.append(check(adjusted, ctx, limits))
        except Exception as exc:
            name = check.__name__.removeprefix("check_")
            verdicts.append(
                Verdict(name, False, DenialCode.CHECK_ERROR, f"{type(exc).__name__}: {exc}")
            )
    return adjusted, verdicts


def all_passed(verdicts: Sequence[Verdict]) -> bool:
    """True if every verdict passed. An empty list is False: nothing checked means no order."""
    return bool(verdicts) and all(map(_OK_OF, verdicts))
