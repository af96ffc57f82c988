"""The feed boundary: one validator every quote and bar passes before the engine trusts it.

A bad price that gets past here becomes a mark, a fill reference and a risk number, so the
checks are strict and cheap. Rejects are counted by a stable code (shown in the cockpit and
journal) instead of raising: a noisy feed must not stop the engine, only be visible.
"""

from __future__ import annotations

from collections import Counter

from engine.types import Bar, Quote

NOT_FINITE = "not_finite"
NON_POSITIVE_PRICE = "non_positive_price"
NON_POSITIVE_SIZE = "non_positive_size"
NEGATIVE_VOLUME = "negative_volume"
CROSSED_BOOK = "crossed_book"
TIME_BACKWARDS = "time_backwards"
SPREAD_TOO_WIDE = "spread_too_wide"
BAD_OHLC = "bad_ohlc"

QUOTE_REJECT_CODES = (
    NOT_FINITE,
    NON_POSITIVE_PRICE,
    NON_POSITIVE_SIZE,
    CROSSED_BOOK,
    TIME_BACKWARDS,
    SPREAD_TOO_WIDE,
)
BAR_REJECT_CODES = (NOT_FINITE, NON_POSITIVE_PRICE, NEGATIVE_VOLUME, BAD_OHLC, TIME_BACKWARDS)
_NO_TS = -(1 << 63)  # before any timestamp: "no accepted quote yet"


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


class QuoteValidator:
    """Checks quotes and bars at the feed boundary and counts what it rejects.

    Checks run in the order of the code list, so a quote that is both crossed and late
    reports ``crossed_book``. Only accepted items advance the per-(symbol, venue) time
    state, so one bad timestamp cannot make every later good quote look "backwards".
    Bars keep their own time state per (symbol, venue, timeframe) on ``ts_open``.
    ``accepted``/``rejected`` count quotes and bars together.
    """

    __slots__ = (
        "_bar_ts",
        "_half_bps",
        "_last_ts",
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
        self._last_ts: dict[tuple[str, str], int] = {}
        self._bar_ts: dict[tuple[str, str, int], int] = {}

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
            and 0.0 < bid <= ask
            and bid_size > 0.0
            and ask_size > 0.0
            and ask - bid <= self._half_bps * ask + self._half_bps * bid
        ):
            key = (q.symbol, q.venue)
            ts = q.ts_exchange
            if ts >= self._last_ts.get(key, _NO_TS):
                self._last_ts[key] = ts
                self.accepted += 1
                return None
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
        if q.ts_exchange < self._last_ts.get((q.symbol, q.venue), _NO_TS):
            return TIME_BACKWARDS
        return SPREAD_TOO_WIDE

    def check_bar(self, b: Bar) -> str | None:
        """Return None if bar ``b`` may be used, else its reject code (and count it)."""
        o, h, lo, c, v = b.open, b.high, b.low, b.close, b.volume
        if o - o + h - h + lo - lo + c - c + v - v != 0.0:
            return self._reject(b.symbol, NOT_FINITE)
        if o <= 0.0 or h <= 0.0 or lo <= 0.0 or c <= 0.0:
            return self._reject(b.symbol, NON_POSITIVE_PRICE)
        if v < 0.0:
            return self._reject(b.symbol, NEGATIVE_VOLUME)
        if h < o or h < c or lo > o or lo > c or lo > h:
            return self._reject(b.symbol, BAD_OHLC)
        key = (b.symbol, b.venue, b.timeframe_s)
        last = self._bar_ts.get(key)
        if last is not None and b.ts_open < last:
            return self._reject(b.symbol, TIME_BACKWARDS)
        self._bar_ts[key] = b.ts_open
        self.accepted += 1
        return None

    def last_ts(self, symbol: str, venue: str) -> int | None:
        """The ts_exchange of the last accepted quote for (symbol, venue), if any."""
        return self._last_ts.get((symbol, venue))
