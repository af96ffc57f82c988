"""The feed boundary: one validator every quote and bar passes before the engine trusts it.

A bad price that gets past here becomes a mark, a fill reference and a risk number, so the
checks are strict and cheap. Rejects are counted by a stable code (shown in the cockpit and
journal) instead of raising: a noisy feed must not stop the engine, only be visible.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

from engine.types import NS_PER_SECOND, Bar, Quote

NOT_FINITE = "not_finite"
NON_POSITIVE_PRICE = "non_positive_price"
NON_POSITIVE_SIZE = "non_positive_size"
NEGATIVE_VOLUME = "negative_volume"
CROSSED_BOOK = "crossed_book"
TIME_BACKWARDS = "time_backwards"
SPREAD_TOO_WIDE = "spread_too_wide"
BAD_OHLC = "bad_ohlc"
DUPLICATE_TIMESTAMP = "duplicate_timestamp"
OVERLAPPING_BAR = "overlapping_bar"  # opens before the bar before it closed
ABSURD_PRICE = "absurd_price"
PRICE_JUMP = "price_jump"
BAD_LEVEL = "bad_level"
EMPTY_SIDE = "empty_side"
UNSORTED_LEVELS = "unsorted_levels"

# Quotes and bars: a price above this is not a market price but a corrupt row (1e308, an
# overflowed unit). It leaves room for a BTC price in the weakest quote currencies (~1e11),
# keeps every notional (price x quantity) far from float overflow, and is the bound a restart
# holds a journaled mark or fill to (engine.config.MAX_AMOUNT): a quote beyond it, once
# marked, left a journal no start would take.
MAX_BAR_PRICE = 1e15
MAX_PRICE = MAX_BAR_PRICE
# Bars: a bar whose high or low is more than this factor away from the close of the previous
# accepted bar (within PRICE_JUMP_WINDOW_BARS of it) is a bad row, not a move: no liquid market
# moves 10x between two bars of a continuous series. After a longer gap, or once the series has
# really moved (a redenomination), the check starts again from the next bar it accepts, so a
# genuine level change costs at most PRICE_JUMP_WINDOW_BARS bars.
PRICE_JUMP_FACTOR = 10.0
PRICE_JUMP_WINDOW_BARS = 60
# Quotes: the same factor against the mid of the last accepted quote of the symbol, within this
# long of it (a quote 10x off the book a moment ago is a corrupt row or print, and once marked it
# multiplies equity past anything a restart would restore); after a quiet minute the next quote
# is taken as it comes, so a genuine level change costs at most this long of quotes.
QUOTE_JUMP_WINDOW_NS = 60 * NS_PER_SECOND
_JUMP_LOW = 0.5 / PRICE_JUMP_FACTOR  # times bid + ask: a tenth of the mid
_JUMP_HIGH = 0.5 * PRICE_JUMP_FACTOR  # times bid + ask: ten times the mid

QUOTE_REJECT_CODES = (
    NOT_FINITE,
    NON_POSITIVE_PRICE,
    NON_POSITIVE_SIZE,
    CROSSED_BOOK,
    ABSURD_PRICE,
    TIME_BACKWARDS,
    SPREAD_TOO_WIDE,
    PRICE_JUMP,
)
BAR_REJECT_CODES = (
    NOT_FINITE,
    NON_POSITIVE_PRICE,
    NEGATIVE_VOLUME,
    BAD_OHLC,
    ABSURD_PRICE,
    TIME_BACKWARDS,
    DUPLICATE_TIMESTAMP,
    OVERLAPPING_BAR,
    PRICE_JUMP,
)
DEPTH_REJECT_CODES = (
    BAD_LEVEL,
    NOT_FINITE,
    NON_POSITIVE_PRICE,
    NON_POSITIVE_SIZE,
    ABSURD_PRICE,
    EMPTY_SIDE,
    UNSORTED_LEVELS,
    CROSSED_BOOK,
)


def tradable_book(q: Quote) -> bool:
    """True if a fill model may trade against ``q`` at all: finite, positive prices and sizes,
    not crossed. The stateless core of :meth:`QuoteValidator.check` (which also bounds the
    spread and time), for the paper broker's own last line of defence."""
    bid, ask, bid_size, ask_size = q.bid, q.ask, q.bid_size, q.ask_size
    return (
        bid - bid + ask - ask + bid_size - bid_size + ask_size - ask_size == 0.0
        and 0.0 < bid <= ask
        and bid_size > 0.0
        and ask_size > 0.0
    )


Levels = tuple[list[float], list[float]]  # (prices, sizes) of one book side, best first


def _side(rows: Iterable[Any], ascending: bool) -> Levels | str:
    prices: list[float] = []
    sizes: list[float] = []
    prev = 0.0 if ascending else math.inf
    try:
        for row in rows:
            price, size = float(row[0]), float(row[1])
            if not (math.isfinite(price) and math.isfinite(size)):
                return NOT_FINITE
            if price <= 0.0:
                return NON_POSITIVE_PRICE
            if size <= 0.0:
                return NON_POSITIVE_SIZE
            if price > MAX_PRICE:
                # A deep level is a fill price for the paper venue's book walk, as the touch
                # is: one beyond any market price (1e300) filled a paper buy there, and the
                # journal of that fill was one no start would take.
                return ABSURD_PRICE
            if not (price > prev if ascending else price < prev):
                return UNSORTED_LEVELS
            prices.append(price)
            sizes.append(size)
            prev = price
    except (TypeError, ValueError, IndexError, KeyError):
        return BAD_LEVEL
    return (prices, sizes) if prices else EMPTY_SIDE


def depth_levels(bids: Iterable[Any], asks: Iterable[Any]) -> tuple[Levels, Levels] | str:
    """An L2 book's sides as float lists, best level first, or the reject code for why the
    book cannot be trusted: a level that is not a (price, size) pair of finite positive
    numbers, a price above ``MAX_PRICE``, an empty side, prices not strictly ordered away
    from the touch (bids falling, asks rising), or a crossed or locked book. The whole book is
    refused, never a part of it: a book with one bad level is a book nobody knows."""
    bid_side = _side(bids, ascending=False)
    if isinstance(bid_side, str):
        return bid_side
    ask_side = _side(asks, ascending=True)
    if isinstance(ask_side, str):
        return ask_side
    if bid_side[0][0] >= ask_side[0][0]:
        return CROSSED_BOOK
    return bid_side, ask_side


class QuoteValidator:
    """Checks quotes and bars at the feed boundary and counts what it rejects.

    Checks run in the order of the code list, so a quote that is both crossed and late
    reports ``crossed_book``. Only accepted items advance the per-(symbol, venue) time
    state, so one bad timestamp cannot make every later good quote look "backwards".
    Bars keep their own state per (symbol, venue, timeframe): the last accepted ``ts_open``
    (a bar must open after it: an equal one is a duplicate row, which would run the same minute
    twice) and close (the reference for ``price_jump``).
    ``accepted``/``rejected`` count quotes and bars together.
    """

    __slots__ = (
        "_bar_close",
        "_bar_ts",
        "_half_bps",
        "_last",
        "accepted",
        "last_reject",
        "max_spread_bps",
        "rejected",
    )

    def __init__(self, max_spread_bps: float = 500.0) -> None:
        if not max_spread_bps > 0:
            raise ValueError(f"max_spread_bps must be > 0, got {max_spread_bps!r}")
        self.max_spread_bps = float(max_spread_bps)
        # spread/mid*1e4 > max  <=>  ask-bid > max/2e4*ask + max/2e4*bid: no division on the
        # hot path, and no overflow of ask+bid for absurdly large prices.
        self._half_bps = self.max_spread_bps / 20_000.0
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.last_reject: tuple[str, str] | None = None
        # Per (symbol, venue), of the last accepted quote: [its ts_exchange, the lowest bid and
        # the highest ask the next one may have (a tenth of its mid, ten times it)]; a list,
        # changed in place: the hot path builds nothing per quote.
        self._last: dict[tuple[str, str], list[Any]] = {}
        self._bar_ts: dict[tuple[str, str, int], int] = {}
        self._bar_close: dict[tuple[str, str, int], float] = {}

    def _reject(self, symbol: str, code: str) -> str:
        self.rejected[code] += 1
        self.last_reject = (symbol, code)
        return code

    def check(self, q: Quote) -> str | None:
        """Return None if ``q`` may be used, else its reject code (and count it)."""
        bid = q.bid
        ask = q.ask
        bid_size = q.bid_size
        ask_size = q.ask_size
        # Fast path for the common valid quote, in one expression. x - x is 0.0 for every
        # finite float and nan for nan/inf, so one sum covers all four fields; nan fails
        # every comparison, so a nan can never slip through to the accept branch.
        if (
            bid - bid + ask - ask + bid_size - bid_size + ask_size - ask_size == 0.0
            and 0.0 < bid <= ask <= MAX_PRICE
            and bid_size > 0.0
            and ask_size > 0.0
            and ask - bid <= self._half_bps * ask + self._half_bps * bid
        ):
            key = (q.symbol, q.venue)
            ts = q.ts_exchange
            last = self._last.get(key)
            if last is None:
                self._last[key] = [ts, (bid + ask) * _JUMP_LOW, (bid + ask) * _JUMP_HIGH]
                self.accepted += 1
                return None
            if ts >= last[0]:
                if (last[1] <= bid and ask <= last[2]) or ts - last[0] > QUOTE_JUMP_WINDOW_NS:
                    last[0] = ts
                    last[1] = (bid + ask) * _JUMP_LOW
                    last[2] = (bid + ask) * _JUMP_HIGH
                    self.accepted += 1
                    return None
                return self._reject(q.symbol, PRICE_JUMP)
        return self._reject(q.symbol, self._diagnose(q))

    def _diagnose(self, q: Quote) -> str:
        """The reject code of a quote the fast path refused, in the documented order."""
        bid, ask, bid_size, ask_size = q.bid, q.ask, q.bid_size, q.ask_size
        if bid - bid + ask - ask + bid_size - bid_size + ask_size - ask_size != 0.0:
            return NOT_FINITE
        if bid <= 0.0 or ask <= 0.0:
            return NON_POSITIVE_PRICE
        if bid_size <= 0.0 or ask_size <= 0.0:
            return NON_POSITIVE_SIZE
        if bid > ask:
            return CROSSED_BOOK
        if ask > MAX_PRICE:
            return ABSURD_PRICE
        last = self._last.get((q.symbol, q.venue))
        if last is not None and q.ts_exchange < last[0]:
            return TIME_BACKWARDS
        return SPREAD_TOO_WIDE

    def check_bar(self, b: Bar) -> str | None:
        """Return None if bar ``b`` may be used, else its reject code (and count it)."""
        code = self.bar_reject_code(b)
        if code is not None:
            return self._reject(b.symbol, code)
        self._bar_ts[(b.symbol, b.venue, b.timeframe_s)] = b.ts_open
        self._bar_close[(b.symbol, b.venue, b.timeframe_s)] = b.close
        self.accepted += 1
        return None

    def bar_reject_code(self, b: Bar) -> str | None:
        """What ``check_bar`` would answer for ``b`` now, without counting or accepting it
        (a backtest asks before it executes at a bar's open: a bar that will be rejected must
        not be a fill price either)."""
        o, h, lo, c, v = b.open, b.high, b.low, b.close, b.volume
        if o - o + h - h + lo - lo + c - c + v - v != 0.0:
            return NOT_FINITE
        if o <= 0.0 or h <= 0.0 or lo <= 0.0 or c <= 0.0:
            return NON_POSITIVE_PRICE
        if v < 0.0:
            return NEGATIVE_VOLUME
        if h < o or h < c or lo > o or lo > c or lo > h:
            return BAD_OHLC
        if h > MAX_BAR_PRICE:
            return ABSURD_PRICE
        return self.bar_order_code((b.symbol, b.venue, b.timeframe_s), b.ts_open, h, lo)

    def bar_order_code(
        self, key: tuple[str, str, int], ts_open: int, high: float, low: float
    ) -> str | None:
        """The reject code a bar (already past the row checks) gets from what came before it:
        ``time_backwards``, ``duplicate_timestamp`` or ``price_jump``; None if it follows on.
        Counts nothing (``EngineCore.on_bars`` asks it before a run of bars)."""
        last = self._bar_ts.get(key)
        if last is None:
            return None
        if ts_open <= last:
            return TIME_BACKWARDS if ts_open < last else DUPLICATE_TIMESTAMP
        if ts_open < last + key[2] * NS_PER_SECOND:
            # A row off the bar grid (00:00:30 among minute bars), or minute bars in a file of
            # 5-minute ones: its bar would close after the next one opened, and a fill or an
            # equity sample stamped at that close would come from after the bar that follows.
            return OVERLAPPING_BAR
        ref = self._bar_close[key]
        if (high > ref * PRICE_JUMP_FACTOR or low * PRICE_JUMP_FACTOR < ref) and (
            ts_open - last <= key[2] * PRICE_JUMP_WINDOW_BARS * NS_PER_SECOND
        ):
            return PRICE_JUMP
        return None

    def accept_bar_run(
        self, key: tuple[str, str, int], last_ts_open: int, last_close: float, count: int
    ) -> None:
        """Record ``count`` bars accepted in one go (``EngineCore.on_bars``), the last one given:
        the state ``check_bar`` would leave after accepting them one by one."""
        self._bar_ts[key] = last_ts_open
        self._bar_close[key] = last_close
        self.accepted += count

    def last_ts(self, symbol: str, venue: str) -> int | None:
        """The ts_exchange of the last accepted quote for (symbol, venue), if any."""
        last = self._last.get((symbol, venue))
        return None if last is None else int(last[0])
