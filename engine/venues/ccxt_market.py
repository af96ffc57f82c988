"""Market data from ccxt: instruments from ``load_markets`` and a quote feed per venue.

**Instruments.** ccxt describes a market's grid in one of three precision modes
(``exchange.precisionMode``): ``TICK_SIZE`` (the precision *is* the step, e.g. 0.01),
``DECIMAL_PLACES`` (a number of decimals, 2 -> 0.01) or ``SIGNIFICANT_DIGITS`` (digits, so the
step depends on the price). :func:`instrument_from_market` turns each into the engine's
:class:`~engine.types.Instrument` (tick, lot, minimum quantity and notional) plus the fees.

**Quotes.** :class:`CcxtMarketFeed` produces engine :class:`~engine.types.Quote` objects for a set
of symbols: from ccxt.pro websockets (``watch_bids_asks``, ``watch_ticker`` or
``watch_order_book``) where the exchange object supports them, else by polling ``fetch_ticker``
/ ``fetch_order_book`` no faster than the exchange's ``rateLimit`` allows. Each symbol has its
own task, so one bad symbol does not stall the others. Errors reconnect with exponential
backoff and jitter; a websocket's backoff starts again from its base only after the stream has
stayed up for a minute (``STABLE_AFTER_NS``), so a venue that drops each connection after its
first message is not redialled twice a second.

**Synced.** A symbol starts *unsynced* and becomes synced only when a fresh, valid quote arrives;
an error or reconnect makes it unsynced again, and so does silence longer than
``stale_after_s``. The broker refuses orders on an unsynced symbol (see ``is_synced``). Every
time a symbol that had been synced becomes synced again (after an error, a reconnect or
staleness) ``resyncs`` goes up: the engine reconciles the venue again when it does.

**Websockets (ccxt.pro).** :func:`build_feed` picks the transport from a venue's config: its own
*public* ccxt.pro instance (no keys; markets shared from the broker's REST instance; in testnet
mode fenced to the sandbox's websocket URLs like every sandbox object), or REST polling on the
broker's instance. When the server closes a socket, ccxt.pro rejects every pending ``watch_*``
with a ``NetworkError`` and forgets the connection; the next ``watch_*`` call dials again and
re-subscribes. The feed turns that into: unsynced at once, a backoff delay with jitter, a new
``watch_*`` call, synced again on the first fresh valid quote.

**Depth.** In "book" mode the feed also keeps, per symbol, the latest validated L2 depth it
received (the top ``book_depth`` levels a side: levels past the subscribed depth are not kept
up to date by every venue's stream), stamped with its quote's ``ts_exchange``. :meth:`depth`
hands it out for the paper broker's book walk (``PaperBroker.on_depth``) while the symbol is
synced. A book whose levels are not finite, positive, strictly ordered and uncrossed is counted
in ``depth_rejects`` and forgets the symbol's depth (its quote, validated on its own, still
counts): the broker then fills from the L1 model rather than from an old book. ccxt.pro keeps
each book from the venue's snapshot and diffs; where it does not check the diffs' sequence
(kucoin), :func:`check_kucoin_book_sequence` does: a lost message unsyncs the symbol and the
book is rebuilt from a new snapshot, never handed out wrong.

**Boundary validation.** An exchange payload is untrusted: a wrong type, a missing or non-finite
field, a crossed or absurdly wide book, time running backwards. Each is counted in ``rejects``
under a stable code and dropped; it never raises out of the feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ccxt

from engine.marketdata.validate import CROSSED_BOOK, QuoteValidator, depth_levels
from engine.types import NS_PER_MS, NS_PER_SECOND, Instrument, Quote
from engine.venues.exchanges import ProductionEndpointRefused, make_exchange
from engine.venues.ratelimit import Backoff, retry_after_from_headers

if TYPE_CHECKING:
    from engine.config import VenueConfig

# Reject codes of the payload boundary (the QuoteValidator's codes are used as they are).
BAD_PAYLOAD = "bad_payload"
WRONG_SYMBOL = "wrong_symbol"
MISSING_FIELD = "missing_field"
STALE_PAYLOAD = "stale_payload"
FUTURE_PAYLOAD = "future_payload"  # stamped more than FUTURE_ALLOWANCE_NS after its receipt
# A payload whose venue sequence number (binance's bookTicker update id, an order book's nonce)
# is older than the last one taken: a stream replaying what it already sent.
REPLAYED_PAYLOAD = "replayed_payload"
# How far ahead of its receipt a payload's stamp may be. A venue clock a little ahead is the
# clock_drift breaker's business; a stamp beyond this is no clock at all, and taking it would
# make every true quote of the symbol "time_backwards" until then: at most this long unsynced.
FUTURE_ALLOWANCE_NS = 60 * 1_000_000_000

# A symbol's websocket backoff starts again from its base only once its stream has stayed up
# this long since its last error. Reset on the first quote after a reconnect, a venue (or a
# proxy) that drops every connection right after its first message was redialled every
# 0.25-0.5 s for good: binance allows 300 connections per 5 minutes per IP, and bans past it.
STABLE_AFTER_NS = 60 * 1_000_000_000

_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def elapsed_ns() -> int:
    """A clock for how long ago something was received: never stepped (NTP, a person setting
    the date), and counting a suspend where the system can (Linux's CLOCK_BOOTTIME). The wall
    clock cannot say it: stepped back an hour, every quote received before the step looked
    fresh for that hour, while the venue's true stamps were refused as from the future."""
    if _BOOTTIME is not None:
        return time.clock_gettime_ns(_BOOTTIME)
    return time.monotonic_ns()


# The ccxt.pro method behind each quote source.
WATCH_METHODS = {"bidask": "watchBidsAsks", "ticker": "watchTicker", "book": "watchOrderBook"}

TICK_SIZE = ccxt.TICK_SIZE
DECIMAL_PLACES = ccxt.DECIMAL_PLACES
SIGNIFICANT_DIGITS = ccxt.SIGNIFICANT_DIGITS


class MarketMetaError(ValueError):
    """A market whose precision or limits cannot be turned into an instrument."""


@dataclass(frozen=True, slots=True)
class MarketMeta:
    """An instrument and what else the venue says about it (fees as fractions: 0.001 = 10 bps)."""

    instrument: Instrument
    maker_fee: float
    taker_fee: float
    venue_symbol: str
    active: bool


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _price(value: Any) -> float | None:
    """A payload number as a float (NaN and inf kept: the validator names them); None if the
    field is missing or not a number at all."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def step_from_precision(value: Any, mode: int, ref_price: float | None = None) -> float:
    """The grid step for one precision value in ccxt's precision mode."""
    p = _num(value)
    if p is None:
        raise MarketMetaError(f"precision {value!r} is not a number")
    if mode == TICK_SIZE:
        if p <= 0:
            raise MarketMetaError(f"tick size {value!r} must be positive")
        return p
    if mode == DECIMAL_PLACES:
        if p != int(p):
            raise MarketMetaError(f"decimal places {value!r} must be a whole number")
        return 10.0 ** (-int(p))
    if mode == SIGNIFICANT_DIGITS:
        if p < 1 or p != int(p):
            raise MarketMetaError(f"significant digits {value!r} must be a whole number >= 1")
        if ref_price is None or not ref_price > 0:
            raise MarketMetaError("significant-digits precision needs a reference price")
        return 10.0 ** (math.floor(math.log10(ref_price)) - int(p) + 1)
    raise MarketMetaError(f"unknown precisionMode {mode!r}")


def instrument_from_market(
    market: dict[str, Any],
    precision_mode: int,
    venue: str,
    ref_price: float | None = None,
) -> MarketMeta:
    """An engine instrument from a ccxt market structure (as in ``exchange.markets[symbol]``).

    ``ref_price`` is needed only for SIGNIFICANT_DIGITS venues, whose step depends on the price.
    Missing minimums mean "no minimum" (0). A missing precision is an error: guessing a grid
    would make the pre-trade rounding send orders the venue refuses.
    """
    symbol = market.get("symbol")
    if not isinstance(symbol, str):
        raise MarketMetaError("market has no symbol")
    precision = market.get("precision") or {}
    limits = market.get("limits") or {}
    tick = step_from_precision(precision.get("price"), precision_mode, ref_price)
    # Under SIGNIFICANT_DIGITS a quantity's step depends on the quantity; take it at 1 unit.
    lot = step_from_precision(
        precision.get("amount"), precision_mode, 1.0 if ref_price is not None else None
    )
    amount = limits.get("amount") or {}
    cost = limits.get("cost") or {}
    min_qty = _num(amount.get("min")) or 0.0
    min_notional = _num(cost.get("min")) or 0.0
    if min_qty < 0 or min_notional < 0:
        raise MarketMetaError(f"{symbol}: negative minimum")
    inst = Instrument(
        symbol=symbol,
        venue=venue,
        tick_size=tick,
        lot_size=lot,
        min_qty=max(min_qty, 0.0),
        min_notional=max(min_notional, 0.0),
    )
    return MarketMeta(
        instrument=inst,
        maker_fee=_num(market.get("maker")) or 0.0,
        taker_fee=_num(market.get("taker")) or 0.0,
        venue_symbol=str(market.get("id", symbol)),
        active=market.get("active") is not False,
    )


def instruments_from_exchange(
    exchange: Any, symbols: list[str], venue: str
) -> tuple[dict[str, MarketMeta], dict[str, str]]:
    """Metadata for ``symbols`` from a loaded exchange, and a problem line for each it lacks."""
    metas: dict[str, MarketMeta] = {}
    problems: dict[str, str] = {}
    markets = exchange.markets or {}
    for sym in symbols:
        market = markets.get(sym)
        if market is None:
            problems[sym] = f"{venue}: {sym} is not a market on {exchange.id}"
            continue
        try:
            metas[sym] = instrument_from_market(market, exchange.precisionMode, venue)
        except MarketMetaError as exc:
            problems[sym] = f"{venue}: {sym}: {exc}"
    return metas, problems


def quote_from_ticker(
    payload: Any, symbol: str, venue: str, recv_ns: int, stale_after_ns: int, floor_ns: int = 0
) -> Quote | str:
    """A Quote from a ccxt ticker, or the reject code for why the payload is unusable."""
    if not isinstance(payload, dict):
        return BAD_PAYLOAD
    if payload.get("symbol") not in (None, symbol):
        return WRONG_SYMBOL
    bid, ask = _price(payload.get("bid")), _price(payload.get("ask"))
    bid_size, ask_size = _price(payload.get("bidVolume")), _price(payload.get("askVolume"))
    if bid is None or ask is None or bid_size is None or ask_size is None:
        return MISSING_FIELD
    return _stamp(
        payload.get("timestamp"),
        symbol,
        venue,
        bid,
        ask,
        bid_size,
        ask_size,
        recv_ns,
        stale_after_ns,
        floor_ns,
    )


def quote_from_book(
    payload: Any, symbol: str, venue: str, recv_ns: int, stale_after_ns: int, floor_ns: int = 0
) -> Quote | str:
    """A Quote from the top of a ccxt order book structure, or a reject code."""
    if not isinstance(payload, dict):
        return BAD_PAYLOAD
    if payload.get("symbol") not in (None, symbol):
        return WRONG_SYMBOL
    bids, asks = payload.get("bids"), payload.get("asks")
    try:
        bid, bid_size = _price(bids[0][0]), _price(bids[0][1])  # type: ignore[index]
        ask, ask_size = _price(asks[0][0]), _price(asks[0][1])  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        return MISSING_FIELD
    if bid is None or ask is None or bid_size is None or ask_size is None:
        return MISSING_FIELD
    return _stamp(
        payload.get("timestamp"),
        symbol,
        venue,
        bid,
        ask,
        bid_size,
        ask_size,
        recv_ns,
        stale_after_ns,
        floor_ns,
    )


def _stamp(
    ts_ms: Any,
    symbol: str,
    venue: str,
    bid: float,
    ask: float,
    bid_size: float,
    ask_size: float,
    recv_ns: int,
    stale_after_ns: int,
    floor_ns: int = 0,
) -> Quote | str:
    ts = _num(ts_ms)
    if ts is None:
        ts_exchange = recv_ns  # the venue gave no time: the receive time is the only time
    else:
        ts_exchange = int(ts) * NS_PER_MS
        if ts_exchange < recv_ns - stale_after_ns:
            return STALE_PAYLOAD
        if ts_exchange > recv_ns + FUTURE_ALLOWANCE_NS:
            return FUTURE_PAYLOAD
        # Never before a receive time that stood in for an untimed payload of the same stream
        # (kraken's book snapshot): the venue's update came after it, though stamped earlier.
        ts_exchange = max(ts_exchange, floor_ns)
    return Quote(symbol, bid, ask, bid_size, ask_size, ts_exchange, recv_ns, venue)


@dataclass(frozen=True, slots=True)
class BookDepth:
    """One symbol's validated L2 depth: ``(price, size)`` levels, best first, as of ``ts_ns``
    (the ``ts_exchange`` of the quote that came with it)."""

    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    ts_ns: int


@dataclass
class SymbolState:
    """What the feed knows about one symbol's stream."""

    symbol: str
    synced: bool = False
    reason: str = "waiting for first data"
    last_recv_ns: int = 0
    quotes: int = 0
    errors: int = 0
    reconnects: int = 0
    failed: bool = False
    last_error: str = ""
    delays: list[float] = field(default_factory=list)  # backoff delays taken (last 20)
    resyncs: int = 0  # synced again after losing sync (error, reconnect or staleness)
    time_floor: int = 0  # the last receive time stamped on an untimed payload (ns)
    # When the last accepted quote was received, on the elapsed clock (never stepped): how old
    # it is, whatever the wall clock says.
    seen_elapsed_ns: int | None = None
    # Seconds between the stamp of the last payload refused for its time (stale or from the
    # future) and its receipt by our clock; None once a quote is accepted.
    clock_off_s: float | None = None
    last_seq: int | None = None  # the venue's sequence number of the last payload taken

    @property
    def last_delay(self) -> float:
        return self.delays[-1] if self.delays else 0.0


class CcxtMarketFeed:
    """Quotes for ``symbols`` on one venue; see the module docstring.

    ``source``: "bidask" (the best-bid/offer stream, e.g. binance bookTicker), "ticker" (best
    bid/ask from tickers) or "book" (top of the L2 book). Polling uses tickers for "bidask".
    ``transport``: "auto" (websockets if the exchange object has them, else REST), "watch", or
    "poll". ``poll_interval_s`` defaults to what keeps all the feed's symbols together at half the
    exchange's ``rateLimit`` budget, and never below one second. ``owns_exchange``: the feed
    built the exchange object for itself (see :func:`build_feed`) and closes it in :meth:`close`.
    """

    def __init__(
        self,
        venue: str,
        exchange: Any,
        symbols: list[str],
        *,
        source: str = "ticker",
        transport: str = "auto",
        poll_interval_s: float | None = None,
        stale_after_s: float = 5.0,
        max_spread_bps: float = 500.0,
        book_depth: int = 20,
        clock_ns: Callable[[], int] = time.time_ns,
        elapsed: Callable[[], int] = elapsed_ns,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backoff: Callable[[], Backoff] = lambda: Backoff(0.5, 30.0),
        queue_size: int = 10_000,
        owns_exchange: bool = False,
    ) -> None:
        if source not in ("bidask", "ticker", "book"):
            raise ValueError("source must be 'bidask', 'ticker' or 'book'")
        if transport not in ("auto", "watch", "poll"):
            raise ValueError("transport must be 'auto', 'watch' or 'poll'")
        self.venue = venue
        self.exchange = exchange
        self.symbols = list(dict.fromkeys(symbols))
        self.source = source
        has = getattr(exchange, "has", {}) or {}
        watch_name = WATCH_METHODS[source]
        can_watch = bool(has.get(watch_name)) and hasattr(exchange, watch_name_snake(watch_name))
        if transport == "watch" and not can_watch:
            raise ValueError(f"{exchange.id} has no {watch_name} on this object (ccxt.pro?)")
        self.use_watch = can_watch if transport == "auto" else transport == "watch"
        rate_s = max(float(getattr(exchange, "rateLimit", 1000) or 1000), 1.0) / 1000.0
        self.poll_interval_s = (
            poll_interval_s
            if poll_interval_s is not None
            else max(1.0, 2.0 * rate_s * max(len(self.symbols), 1))
        )
        # A polled symbol must not go stale between two polls (each recovery would count as a
        # resync and trigger a reconciliation): at least three poll periods.
        if not self.use_watch:
            stale_after_s = max(stale_after_s, 3.0 * self.poll_interval_s)
        self.stale_after_ns = int(stale_after_s * NS_PER_SECOND)
        self.book_depth = book_depth
        self.validator = QuoteValidator(max_spread_bps)
        self.rejects: Counter[str] = Counter()
        self.depth_rejects: Counter[str] = Counter()  # "book" mode: depth refused, by code
        self._depth: dict[str, BookDepth] = {}  # "book" mode: latest validated depth by symbol
        self.state = {s: SymbolState(s) for s in self.symbols}
        self.metas: dict[str, MarketMeta] = {}
        self._clock = clock_ns
        self._elapsed = elapsed
        # The last accepted quote's ts_exchange and its receipt on the elapsed clock.
        self.last_accepted: tuple[int, int] | None = None
        self._sleep = sleep
        self._backoff = backoff
        # Each quote waits with the depth it came with ("book" mode; None otherwise).
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=queue_size)
        self._handed: tuple[Quote | None, BookDepth | None] = (None, None)
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._owns_exchange = owns_exchange
        self.dropped = 0  # quotes dropped because the consumer fell behind (oldest first)
        self.resyncs = 0  # all symbols: synced again after an error, reconnect or staleness
        self.note = ""  # why build_feed chose this transport/source, if not as configured
        # Raw recording ([record]): called with (venue, symbol, source, recv_ns, payload) for
        # every payload received, before it is judged (engine.marketdata.recording).
        self.recorder: Callable[[str, str, str, int, Any], None] | None = None
        # Also watch each symbol's public trades, for the recorder only (websockets only: a
        # REST poll would spend the venue's rate limit on data the engine does not use).
        self.record_trades = False

    # ------------------------------------------------------------------ metadata

    async def load_instruments(self, reload: bool = False) -> dict[str, Instrument]:
        """Load markets and return the feed's instruments; unknown symbols raise ValueError."""
        from engine.venues.profiles import profile_for

        await self.exchange.load_markets(reload, profile_for(self.exchange.id).load_params)
        metas, problems = instruments_from_exchange(self.exchange, self.symbols, self.venue)
        if problems:
            raise ValueError("; ".join(problems.values()))
        self.metas = metas
        return {s: m.instrument for s, m in metas.items()}

    # ------------------------------------------------------------------ status

    def is_synced(self, symbol: str, now_ns: int | None = None) -> bool:
        """True while the symbol has had a valid quote within ``stale_after_s``."""
        st = self.state.get(symbol)
        if st is None or not st.synced:
            return False
        now = self._clock() if now_ns is None else now_ns
        seen = st.seen_elapsed_ns
        if now - st.last_recv_ns > self.stale_after_ns or (
            seen is not None and self._elapsed() - seen > self.stale_after_ns
        ):
            # The elapsed clock too: a wall clock stepped back kept the last quote fresh.
            st.synced = False
            st.reason = "stale: no fresh data"
            if st.clock_off_s is not None:
                off = st.clock_off_s
                st.reason += (
                    f"; its quotes are refused, stamped {abs(off):,.0f} s "
                    f"{'after' if off > 0 else 'before'} their receipt by this machine's clock: "
                    "is the system clock right?"
                )
            return False
        return True

    def market_now(self) -> int | None:
        """The venue's time now: the stamp of the quote it accepted last plus the time elapsed
        since it was received (never the wall clock, which NTP or a person may step); None
        before the first quote. The last received, not the latest stamped: one stamped a
        minute ahead must not hold the engine's clock ahead once true stamps follow it."""
        latest = self.last_accepted
        if latest is None:
            return None
        return latest[0] + max(0, self._elapsed() - latest[1])

    def status(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "venue": self.venue,
            "transport": "watch" if self.use_watch else "poll",
            "source": self.source,
            "symbols": {
                s: {
                    "synced": self.is_synced(s, now),
                    "reason": "" if self.is_synced(s, now) else st.reason,
                    "quotes": st.quotes,
                    "errors": st.errors,
                    "reconnects": st.reconnects,
                    "resyncs": st.resyncs,
                    "failed": st.failed,
                    "last_error": st.last_error,
                    "backoff_s": st.last_delay,
                }
                for s, st in self.state.items()
            },
            "rejects": dict(self.rejects),
            # L2 books refused ("book" mode): a paper order then fills on the L1 model.
            "depth_rejects": dict(self.depth_rejects),
            "dropped": self.dropped,
            "resyncs": self.resyncs,
            "note": self.note,
        }

    # ------------------------------------------------------------------ streaming

    def start(self) -> None:
        if self._tasks or self._closed:
            return
        if self.use_watch and getattr(self.exchange, "asyncio_loop", False) is None:
            # ccxt.pro takes its event loop in open(), which a watch_* call reaches through
            # load_markets() or client(). With the markets shared from the REST object, kucoin's
            # watch_* first spawns its token request (negotiate) on a loop it does not have yet.
            self.exchange.open()
        for sym in self.symbols:
            self._tasks.append(asyncio.create_task(self._run_symbol(sym), name=f"feed-{sym}"))
        if self.trades_recorded:
            for sym in self.symbols:
                self._tasks.append(
                    asyncio.create_task(self._record_trades(sym), name=f"trades-{sym}")
                )

    @property
    def trades_recorded(self) -> bool:
        """Public trades are watched for the recorder: asked for, websockets, and ccxt.pro has
        ``watchTrades`` for this venue."""
        has = getattr(self.exchange, "has", {}) or {}
        return (
            self.record_trades
            and self.recorder is not None
            and self.use_watch
            and bool(has.get("watchTrades"))
            and hasattr(self.exchange, "watch_trades")
        )

    async def _record_trades(self, symbol: str) -> None:
        """Each batch of new public trades, as received, to the recorder (never to the engine:
        a trade stream's trouble never touches the symbol's sync)."""
        backoff = self._backoff()
        while not self._closed:
            try:
                trades = await self.exchange.watch_trades(symbol)
            except asyncio.CancelledError:
                raise
            except _FATAL:
                return
            except Exception:
                await self._sleep(backoff.next_delay())
                continue
            backoff.reset()
            recorder = self.recorder
            if recorder is not None and trades:
                recorder(self.venue, symbol, "trade", self._clock(), trades)

    async def quotes(self) -> AsyncIterator[Quote]:
        """Valid quotes as they arrive, from every symbol; runs until :meth:`close`."""
        self.start()
        while not self._closed:
            item = await self._queue.get()
            if item is _CLOSED:
                self._queue.put_nowait(item)  # wake the next consumer too
                return
            self._handed = item
            yield item[0]

    def book_for(self, quote: Quote) -> BookDepth | None:
        """The depth that came with ``quote`` (the one :meth:`quotes` just handed out): the
        book as it was when the quote was accepted, not a newer one received while the quote
        waited, so the paper venue walks, and an acting decision stores, the book of the quote
        the engine is processing (and a replay of the recording sees the same)."""
        handed, book = self._handed
        return book if handed is quote else self.depth(quote.symbol)

    async def close(self) -> None:
        """Stop every symbol's task, wake consumers of :meth:`quotes`, and close the exchange
        (its websocket connections and HTTP session) if the feed owns it. Idempotent."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        for st in self.state.values():
            st.synced = False
            st.reason = "feed closed"
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
        self._queue.put_nowait(_CLOSED)
        if self._owns_exchange:
            self._owns_exchange = False
            with contextlib.suppress(Exception):
                await self.exchange.close()

    def accept(self, symbol: str, payload: Any, recv_ns: int | None = None) -> Quote | None:
        """Validate one payload for ``symbol`` received at ``recv_ns`` (default: now); on
        success mark it synced and return the quote."""
        st = self.state[symbol]
        recv = self._clock() if recv_ns is None else recv_ns
        stamp = (self.venue, recv, self.stale_after_ns, st.time_floor)
        try:
            if self.source == "book":
                result = quote_from_book(payload, symbol, *stamp)
            else:
                result = quote_from_ticker(payload, symbol, *stamp)
        except Exception:  # a payload shape nobody foresaw: count it, never crash the feed
            result = BAD_PAYLOAD
        if isinstance(result, str):
            self.rejects[result] += 1
            if result in (STALE_PAYLOAD, FUTURE_PAYLOAD):
                # Said when the symbol goes stale: a stamp that far from its receipt is this
                # machine's clock off (stepped by NTP, set by hand) as often as the venue's.
                ts = _num(payload.get("timestamp"))
                st.clock_off_s = None if ts is None else ts / 1e3 - recv / 1e9
            return None
        # Only an untimed payload is stamped with its receive time, which cannot tell a replay
        # from news: its sequence number must. (A timed one that goes back is "time_backwards";
        # and some venues restart their sequence, e.g. bybit's book at u=1.)
        seq = _sequence(payload, self.source) if _num(payload.get("timestamp")) is None else None
        # A book's nonce may repeat (the same book handed out again); an update id never.
        if (
            seq is not None
            and st.last_seq is not None
            and (seq < st.last_seq or (seq == st.last_seq and self.source != "book"))
        ):
            self.rejects[REPLAYED_PAYLOAD] += 1
            return None
        # Locked (bid == ask): no venue's own book can be (the two would have traded), so it
        # is a bad payload or a book in an auction, as the depth check says of the same book
        # ("crossed_book"); taken, a paper buy paid no spread at all.
        code = CROSSED_BOOK if result.bid == result.ask else self.validator.check(result)
        if code is not None:
            self.rejects[code] += 1
            return None
        if seq is not None:
            st.last_seq = seq
        seen = st.seen_elapsed_ns
        elapsed = self._elapsed()  # (read once a quote: the receipt below is this moment)
        live = (
            st.synced
            and recv - st.last_recv_ns <= self.stale_after_ns
            and (seen is None or elapsed - seen <= self.stale_after_ns)
        )
        if not live and st.quotes > 0:  # had sync, lost it (error, reconnect or silence)
            st.resyncs += 1
            self.resyncs += 1
        if _num(payload.get("timestamp")) is None:
            st.time_floor = result.ts_exchange
        st.synced = True
        st.reason = ""
        st.clock_off_s = None
        st.last_recv_ns = recv
        st.seen_elapsed_ns = elapsed
        self.last_accepted = (result.ts_exchange, elapsed)
        st.quotes += 1
        if self.source == "book":
            self._keep_depth(symbol, payload, result.ts_exchange)
        return result

    def depth(self, symbol: str) -> BookDepth | None:
        """The latest validated depth of ``symbol`` ("book" mode), or None: another source, no
        depth yet, the last book was refused, or the symbol is not synced."""
        if not self.is_synced(symbol):
            return None
        return self._depth.get(symbol)

    def _keep_depth(self, symbol: str, payload: Any, ts_ns: int) -> None:
        n = self.book_depth
        try:
            levels = depth_levels(payload["bids"][:n], payload["asks"][:n])
        except Exception:  # a payload shape nobody foresaw: count it, never crash the feed
            levels = BAD_PAYLOAD
        if isinstance(levels, str):
            self.depth_rejects[levels] += 1
            self._depth.pop(symbol, None)
            return
        (bid_px, bid_sz), (ask_px, ask_sz) = levels
        self._depth[symbol] = BookDepth(
            list(zip(bid_px, bid_sz, strict=True)), list(zip(ask_px, ask_sz, strict=True)), ts_ns
        )

    def _publish(self, quote: Quote) -> None:
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self.dropped += 1
        depth = self._depth.get(quote.symbol) if self.source == "book" else None
        self._queue.put_nowait((quote, depth))

    async def _fetch_once(self, symbol: str) -> Any:
        ex = self.exchange
        if self.use_watch:
            if self.source == "bidask":
                tickers = await ex.watch_bids_asks([symbol])
                return tickers.get(symbol) if isinstance(tickers, dict) else tickers
            if self.source == "ticker":
                return await ex.watch_ticker(symbol)
            return await ex.watch_order_book(symbol, self.book_depth)
        if self.source == "book":
            return await ex.fetch_order_book(symbol, self.book_depth)
        return await ex.fetch_ticker(symbol)

    async def _run_symbol(self, symbol: str) -> None:
        st = self.state[symbol]
        backoff = self._backoff()
        last_error_ns: int | None = None  # when this symbol's stream last failed
        while not self._closed:
            try:
                payload = await self._fetch_once(symbol)
            except asyncio.CancelledError:
                raise
            except _FATAL as exc:  # retrying cannot help: fail the symbol, loudly
                st.synced, st.failed = False, True
                st.errors += 1
                st.last_error = _describe(exc)
                if isinstance(exc, ccxt.BadSymbol):
                    st.reason = f"symbol refused by venue: {type(exc).__name__}"
                else:
                    st.reason = f"feed failed: {st.last_error}"
                return
            except Exception as exc:  # network, exchange, or a bug in a payload parser
                # Unsynced at once, before the wait: no order may use the old quote meanwhile.
                st.synced = False
                st.errors += 1
                st.reconnects += 1
                st.last_error = _describe(exc)
                last_error_ns = self._clock()
                delay = backoff.next_delay()
                if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
                    # The venue said how long to stay away: asking sooner is what turns a 429
                    # into an IP ban (binance's 418). Without a word, the backoff stands.
                    headers = getattr(self.exchange, "last_response_headers", None)
                    told = retry_after_from_headers(
                        dict(headers) if isinstance(headers, dict) else {},
                        self._clock() // NS_PER_MS,
                    )
                    delay = max(delay, told or 0.0)
                st.delays = [*st.delays[-19:], delay]
                st.reason = f"reconnecting after {type(exc).__name__} (retry in {delay:.2f} s)"
                await self._sleep(delay)
                continue
            recv = self._clock()
            if self.recorder is not None:
                self.recorder(self.venue, symbol, self.source, recv, payload)
            try:
                quote = self.accept(symbol, payload, recv)
            except Exception:  # accept() refuses what it cannot read; whatever else a payload
                self.rejects[BAD_PAYLOAD] += 1  # trips, the symbol's task must go on
                quote = None
            if quote is not None:
                # A poll is one request (the rate limiter spaces them): fine, the next error
                # starts afresh. A socket must have stayed up a while first (see the constant).
                if (
                    not self.use_watch
                    or last_error_ns is None
                    or recv - last_error_ns >= STABLE_AFTER_NS
                ):
                    backoff.reset()
                self._publish(quote)
            if not self.use_watch:
                await self._sleep(self.poll_interval_s)


_CLOSED: Any = object()  # put in the queue by close(): wakes a consumer waiting in quotes()


# Errors that retrying cannot cure. BadSymbol: the venue does not list the symbol.
# NotSupported / ArgumentsRequired: ccxt cannot build that request at all.
# ProductionEndpointRefused: the sandbox guard refused a URL (a testnet object pointed at
# production); retrying would only repeat the refusal.
_FATAL: tuple[type[BaseException], ...] = (
    ccxt.BadSymbol,
    ccxt.NotSupported,
    ccxt.ArgumentsRequired,
    ProductionEndpointRefused,
)


def _sequence(payload: Any, source: str) -> int | None:
    """The venue's sequence number of a payload, where it gives one: an order book's ``nonce``
    (binance's lastUpdateId), a ticker's update id ``u`` (binance's bookTicker, which carries no
    time). Stamped by the receive time alone, such a payload is told from a replay only by it."""
    if source == "book":
        raw = payload.get("nonce")
    else:
        info = payload.get("info")
        raw = info.get("u") if isinstance(info, dict) else None
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    # ASCII digits only, and no more than a 64-bit id holds: str.isdigit() also says yes to
    # "²" (which int() refuses) and int() refuses 4,300 digits, and a raise here ended the
    # symbol's feed task for good (the raw message is the venue's, untrusted).
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 20:
        return int(raw)
    return None


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


def watch_name_snake(name: str) -> str:
    """watchTicker -> watch_ticker (ccxt's Python method names)."""
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


# ---------------------------------------------------------------------- transport selection

# Sources ccxt.pro has a method for, on a venue whose stream still cannot make a quote (bid, ask
# and both sizes), so the symbol would never sync. Keyed by ccxt exchange id.
WS_NO_QUOTE: dict[tuple[str, str], str] = {
    ("bybit", "ticker"): "bybit's spot `tickers` topic carries no bid/ask",
    ("kucoin", "ticker"): "kucoin's spot `/market/snapshot` topic carries no bid/ask sizes",
}
# The same for REST polling ("bidask" and "ticker" both poll fetch_ticker).
REST_NO_QUOTE: dict[tuple[str, str], str] = {
    ("kucoin", "ticker"): "kucoin's REST ticker (market stats) carries no bid/ask sizes",
    ("kucoin", "bidask"): "kucoin's REST ticker (market stats) carries no bid/ask sizes",
}
# In auto mode, when the configured source cannot stream, the others are tried in this order.
AUTO_SOURCE_ORDER = ("bidask", "ticker", "book")
# ccxt.pro options for the public market-data object. binance: watch_ticker subscribes to the
# `miniTicker` stream by default (no bid/ask at all); `ticker` is the full 24hrTicker stream.
WS_OPTIONS: dict[str, dict[str, Any]] = {"binance": {"watchTickers": {"name": "ticker"}}}
# Order-book depths a venue's websocket accepts (bybit spot: 1, 50, 200 or 1000 levels; kraken:
# 10, 25, 100, 500 or 1000).
WS_BOOK_DEPTH: dict[str, int] = {"bybit": 50, "kraken": 10}


def can_watch(exchange: Any, source: str) -> bool:
    """True if the ccxt.pro object has the ``watch_*`` method for ``source``."""
    name = WATCH_METHODS[source]
    has = getattr(exchange, "has", {}) or {}
    return bool(has.get(name)) and hasattr(exchange, watch_name_snake(name))


def build_feed(
    venue: str,
    vcfg: VenueConfig,
    mode: str,
    rest_exchange: Any,
    symbols: list[str],
    *,
    stale_after_s: float,
    max_spread_bps: float,
    **feed_kwargs: Any,
) -> CcxtMarketFeed:
    """The quote feed for one venue, as its config asks (``market_data``, ``quote_source``).

    ``"rest"``: poll on ``rest_exchange`` (the broker's object). ``"websocket"``/``"auto"``: a
    separate public ccxt.pro object (never any credentials), sandboxed and guarded in testnet
    mode, with the markets already loaded on ``rest_exchange``; the feed owns and closes it.
    When ccxt.pro cannot stream the configured source on this venue, ``"auto"`` first tries the
    venue's other streaming sources, then falls back to REST polling; ``"websocket"`` raises a
    one-line ``ValueError``. The choice, when it differs from the config, is in ``feed.note``.

    ``feed_kwargs`` go to :class:`CcxtMarketFeed`; a ``transport`` there ("poll", "watch")
    overrides ``market_data`` and a ``source`` overrides ``quote_source`` (tests, tools).
    """
    if mode not in ("testnet", "live"):
        raise ValueError(f"venues.{venue}: a ccxt feed runs in testnet or live mode, not {mode!r}")
    if vcfg.testnet != (mode == "testnet"):
        raise ValueError(
            f"venues.{venue}: testnet = {str(vcfg.testnet).lower()} does not fit {mode} mode"
        )
    sandbox = mode == "testnet"
    if sandbox and not getattr(rest_exchange, "_engine_sandbox_guard", False):
        raise ValueError(f"venues.{venue}: testnet mode needs a sandbox-guarded exchange object")
    market_data = vcfg.market_data
    transport = feed_kwargs.pop("transport", None)
    if transport is not None:
        overrides = {"auto": market_data, "watch": "websocket", "poll": "rest"}
        if transport not in overrides:
            raise ValueError("transport must be 'auto', 'watch' or 'poll'")
        market_data = overrides[transport]
    source = feed_kwargs.pop("source", None) or vcfg.quote_source
    exchange_id = vcfg.exchange
    common = {"stale_after_s": stale_after_s, "max_spread_bps": max_spread_bps, **feed_kwargs}

    def rest_feed(note: str = "") -> CcxtMarketFeed:
        use = source
        if (exchange_id, use) in REST_NO_QUOTE:
            why = REST_NO_QUOTE[(exchange_id, use)]
            if market_data != "auto":
                raise ValueError(_rest_refusal(venue, use, why))
            use = "book"
            note = f"{note}; " if note else ""
            note += f'REST source "book" instead of "{source}": {why}'
        feed = CcxtMarketFeed(venue, rest_exchange, symbols, source=use, transport="poll", **common)
        feed.note = note
        return feed

    if market_data == "rest":
        return rest_feed()

    import ccxt.pro as ccxt_pro

    if exchange_id not in ccxt_pro.exchanges:
        if market_data == "websocket":
            raise ValueError(_no_pro_refusal(venue, exchange_id))
        return rest_feed(f"ccxt.pro has no {exchange_id!r}: polling REST")
    # Public market data: no credentials, ever. make_exchange fences a sandbox object to the
    # sandbox's own URLs, websockets included (guard_sandbox wraps client(url)).
    pro = make_exchange(exchange_id, sandbox=sandbox, pro=True, options=WS_OPTIONS.get(exchange_id))
    # ccxt's set_sandbox_mode copies urls['test'] into urls['api'] shallowly: nested websocket
    # URL dicts (binance, bybit) stay shared, so an edit under urls['api'] would also edit the
    # sandbox allow-list the guard reads. Decouple them.
    pro.urls["api"] = copy.deepcopy(pro.urls["api"])
    if exchange_id == "kucoin":
        check_kucoin_book_sequence(pro)
    if isinstance(pro, ccxt_pro.binance):  # binance and its relatives (binanceus, ...)
        check_binance_snapshot_bridge(pro)
    if exchange_id == "bybit":
        check_bybit_book_sequence(pro)
    chosen, note = _pick_ws_source(venue, exchange_id, pro, source, market_data)
    if chosen is None:
        return rest_feed(note)  # nothing was opened on `pro`: nothing to close
    if getattr(rest_exchange, "markets", None):
        if hasattr(pro, "set_markets_from_exchange") and rest_exchange.id == pro.id:
            pro.set_markets_from_exchange(rest_exchange)
        else:
            pro.set_markets(rest_exchange.markets, getattr(rest_exchange, "currencies", None))
    if chosen == "book" and "book_depth" not in common and exchange_id in WS_BOOK_DEPTH:
        common["book_depth"] = WS_BOOK_DEPTH[exchange_id]
    feed = CcxtMarketFeed(
        venue, pro, symbols, source=chosen, transport="watch", owns_exchange=True, **common
    )
    feed.note = note
    return feed


def check_kucoin_book_sequence(pro: Any) -> None:
    """Refuse a kucoin level2 delta that does not follow on from the book (a lost message).

    KuCoin drops a ``/market/level2`` message now and then (a slow reader's socket buffer is
    full) and says what to do: a delta whose ``sequenceStart`` is past the book's sequence + 1
    means the book missed changes; fetch the snapshot again. ccxt.pro's kucoin applies the next
    delta whatever its sequence, so the book would be wrong from then on, silently. Here such a
    delta rejects the symbol's ``watch_order_book`` with ``InvalidNonce`` (the feed unsyncs and
    backs off) and the book is dropped: the next watch caches deltas and syncs them on a new
    REST snapshot, as at the start (ccxt's own way after a failed sync). The deltas cached
    while the snapshot was fetched are checked the same way when ccxt replays them on it: a
    gap there fails that sync (ccxt drops the connection and the next watch starts again).
    Binance and okx check their sequences in ccxt itself."""
    original = pro.handle_order_book
    replay = pro.handle_book_deltas

    def handle_book_deltas(orderbook: Any, deltas: Any) -> Any:
        nonce = pro.safe_integer(orderbook, "nonce")
        for delta in deltas:
            start = pro.safe_integer(delta, "sequenceStart")
            if nonce is not None and start is not None and start > nonce + 1:
                raise ccxt.InvalidNonce(
                    f"kucoin level2 sequence gap in the deltas replayed on the snapshot: the "
                    f"book was at {nonce}, the next delta starts at {start}"
                )
            end = pro.safe_integer(delta, "sequenceEnd")
            if end is not None and (nonce is None or end > nonce):
                nonce = end
        return replay(orderbook, deltas)

    def handle_order_book(client: Any, message: Any) -> Any:
        data = message.get("data") if isinstance(message, dict) else None
        topic = str(message.get("topic", "")) if isinstance(message, dict) else ""
        if isinstance(data, dict) and "Depth" not in topic and ":" in topic:
            symbol = pro.safe_symbol(
                pro.safe_string(data, "symbol", topic.split(":", 1)[1]), None, "-"
            )
            book = pro.orderbooks.get(symbol)
            nonce = pro.safe_integer(book, "nonce") if book is not None else None
            start = pro.safe_integer(data, "sequenceStart")
            if nonce is not None and start is not None and start > nonce + 1:
                pro.orderbooks[symbol] = pro.order_book()
                client.reject(
                    ccxt.InvalidNonce(
                        f"kucoin {symbol} level2 sequence gap: the book was at {nonce}, the "
                        f"next message starts at {start}; rebuilding it from a new snapshot"
                    ),
                    "orderbook:" + symbol,
                )
                return None
        return original(client, message)

    pro.handle_order_book = handle_order_book
    pro.handle_book_deltas = handle_book_deltas


def binance_bridge_problem(nonce: int, cache: Any) -> str:
    """Why the diffs buffered while binance's snapshot was fetched do not carry it on without a
    gap ("" when they do, or when there are none past it). Spot: the first diff past the
    snapshot's ``lastUpdateId`` L must have ``U <= L + 1 <= u`` and each next one
    ``U == previous u + 1``; futures: ``U <= L <= u`` (or ``pu == L``) first, then ``pu ==
    previous u``."""
    prev: int | None = None
    for msg in cache or []:
        if not isinstance(msg, dict):
            continue
        first, last, pu = msg.get("U"), msg.get("u"), msg.get("pu")
        if not (isinstance(first, int) and isinstance(last, int)):
            continue
        futures = isinstance(pu, int)
        if prev is None:
            if last < nonce or (last == nonce and not futures):
                continue  # already in the snapshot
            bridges = (
                (first <= nonce <= last or pu == nonce) if futures else first <= nonce + 1 <= last
            )
            if not bridges:
                return (
                    f"the snapshot is at update {nonce} and the first diff after it covers "
                    f"{first}..{last}"
                )
        elif (pu != prev) if futures else (first != prev + 1):
            return f"a diff covers {first}..{last} after {prev}"
        prev = last
    return ""


def check_binance_snapshot_bridge(pro: Any) -> None:
    """Refuse a binance book whose snapshot the buffered diffs do not carry on (a gap).

    Binance's procedure: buffer the diff stream, fetch a REST snapshot (``lastUpdateId`` L),
    drop the diffs it already contains, and the first one left must bridge it (``U <= L + 1 <=
    u``), each later one following on (``U == previous u + 1``); if the snapshot is older than
    the buffered diffs, fetch it again. ccxt.pro's binance instead skips every buffered diff that
    does not fit and hands out the snapshot's book as if nothing were missing (only the next live
    diff then fails its check): a book missing updates, quoted and walked by paper orders for as
    long as that diff takes. Here such a snapshot fails the watch with ``InvalidNonce``, before
    the book is touched: the feed unsyncs and backs off, and the next watch subscribes again and
    fetches a new snapshot."""
    fetch = pro.fetch_rest_order_book_safe

    async def fetch_rest_order_book_safe(symbol: Any, limit: Any = None, params: Any = None) -> Any:
        snapshot = await fetch(symbol, limit, {} if params is None else params)
        book = pro.orderbooks.get(symbol) if isinstance(symbol, str) else None
        nonce = pro.safe_integer(snapshot, "nonce") if isinstance(snapshot, dict) else None
        if book is not None and nonce is not None:
            why = binance_bridge_problem(nonce, getattr(book, "cache", None))
            if why:
                raise ccxt.InvalidNonce(
                    f"binance {symbol} book sequence gap between the snapshot and the buffered "
                    f"diffs ({why}); fetching a new snapshot"
                )
        return snapshot

    pro.fetch_rest_order_book_safe = fetch_rest_order_book_safe


def check_bybit_book_sequence(pro: Any) -> None:
    """Refuse a bybit orderbook delta that does not follow on from the book (a lost message).

    Bybit's ``orderbook.N`` topic sends one snapshot on subscription, then deltas whose update
    id ``u`` goes up by one a message (a service restart sends a new snapshot with ``u`` = 1).
    ccxt.pro's bybit applies every delta whatever its ``u``, even on an empty book, and bybit
    sends no new snapshot by itself: after one lost message the book stayed wrong, silently,
    for as long as the connection lived. Here a delta that is not the next update fails the
    symbol's watch with ``InvalidNonce``, drops the book and closes the connection (a snapshot
    comes only with a new subscription); deltas before a snapshot are never applied."""
    original = pro.handle_order_book
    last_u: dict[str, int] = {}  # symbol -> the update id the book is at (after a snapshot)

    def handle_order_book(client: Any, message: Any) -> Any:
        data = message.get("data") if isinstance(message, dict) else None
        if not isinstance(data, dict):
            return original(client, message)
        market_type = "spot" if "spot" in str(getattr(client, "url", "")) else "contract"
        market = pro.safe_market(pro.safe_string(data, "s"), None, None, market_type)
        symbol = market["symbol"]
        u = pro.safe_integer(data, "u")
        if message.get("type") == "snapshot":
            if u is None:
                last_u.pop(symbol, None)
            else:
                last_u[symbol] = u
            return original(client, message)
        prev = last_u.get(symbol)
        if prev is None:
            return None  # no snapshot under it (or dropped after a gap): never applied
        if u is None or u != prev + 1:
            del last_u[symbol]
            pro.orderbooks.pop(symbol, None)
            client.on_error(
                ccxt.InvalidNonce(
                    f"bybit {symbol} orderbook sequence gap: the book was at update {prev}, "
                    f"the next message is {u}; subscribing again for a new snapshot"
                )
            )
            return None
        last_u[symbol] = u
        return original(client, message)

    pro.handle_order_book = handle_order_book


def _rest_refusal(venue: str, source: str, why: str) -> str:
    return (
        f'venues.{venue}: quote_source = "{source}" cannot give quotes over REST ({why}); '
        'set quote_source = "book"'
    )


def _no_pro_refusal(venue: str, exchange_id: str) -> str:
    return (
        f'venues.{venue}: market_data = "websocket" but ccxt.pro has no {exchange_id!r} '
        'exchange; set market_data = "rest" (or "auto")'
    )


@functools.lru_cache(maxsize=64)
def _public_pro(exchange_id: str) -> Any:
    """A bare ccxt.pro object, only to read what it can stream (no request, no credentials)."""
    from engine.venues.exchanges import exchange_class

    return exchange_class(exchange_id, pro=True)()


def feed_config_problem(venue: str, vcfg: VenueConfig) -> str:
    """What :func:`build_feed` would refuse in this venue's market-data settings (the same
    messages), found without a network request: config validation runs it, so `config check`
    refuses what the engine would. "" when the settings can be served; ``auto`` always can."""
    exchange_id, source, market_data = vcfg.exchange, vcfg.quote_source, vcfg.market_data
    if market_data == "rest":
        why = REST_NO_QUOTE.get((exchange_id, source))
        return _rest_refusal(venue, source, why) if why else ""
    if market_data != "websocket":
        return ""
    import ccxt.pro as ccxt_pro

    if exchange_id not in ccxt_pro.exchanges:
        return _no_pro_refusal(venue, exchange_id)
    try:
        _pick_ws_source(venue, exchange_id, _public_pro(exchange_id), source, market_data)
    except ValueError as exc:
        return str(exc)
    return ""


def _pick_ws_source(
    venue: str, exchange_id: str, pro: Any, source: str, market_data: str
) -> tuple[str | None, str]:
    """The streaming source to use and a note when it is not the configured one; (None, why)
    when auto mode must poll instead. Raises ValueError for an impossible "websocket" config."""

    def problem(src: str) -> str:
        if not can_watch(pro, src):
            return f"ccxt.pro {exchange_id} has no {WATCH_METHODS[src]}"
        why = WS_NO_QUOTE.get((exchange_id, src))
        return f"{WATCH_METHODS[src]}: {why}" if why else ""

    why = problem(source)
    if not why:
        return source, ""
    if market_data == "websocket":
        others = [s for s in AUTO_SOURCE_ORDER if s != source and not problem(s)]
        fix = 'set market_data = "rest"'
        if others:
            fix += " or quote_source = " + " / ".join(f'"{s}"' for s in others)
        raise ValueError(
            f'venues.{venue}: market_data = "websocket" with quote_source = "{source}" is '
            f"impossible ({why}); {fix}"
        )
    for alt in AUTO_SOURCE_ORDER:
        if alt != source and not problem(alt):
            return alt, f'streaming "{alt}" instead of "{source}" ({why})'
    return None, f"no usable websocket stream ({why}): polling REST"
