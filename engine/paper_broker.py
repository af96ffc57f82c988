"""Paper broker: a sans-I/O simulated venue whose fills do not flatter.

A backtest or paper run that fills at mid makes a strategy that only harvests the spread look
profitable. So here every order pays what a real venue would charge:

* **Latency.** An order arrives ``latency`` after it was submitted, drawn from a log-normal with
  median ``latency_median_ms`` and shape ``latency_sigma``. It executes against the *first* quote
  at or after its arrival, so the market moves while it is in flight.
* **Far side.** A buy takes the ask, a sell the bid, never the mid.
* **The live book, where there is one.** A venue that streams L2 hands its depth to
  :meth:`PaperBroker.on_depth`. While that depth is *fresh* for the quote being filled (its
  timestamp is at most ``depth_max_age_ms`` before the quote's ``ts_exchange``), a taking order
  walks it level by level: level 0 is the quote's touch (price and size: the quote is the newest
  word on the top), then the depth's levels strictly beyond the touch, each at its own price and
  size, each its own Fill row. Past the deepest level the feed gave (ccxt books stop at
  ``book_depth`` levels) the book is **extrapolated at the visible density** (as if further
  levels of the mean visible size followed, one mean visible spacing apart), in one Fill row at
  that segment's VWAP, for at most ``max_levels`` times the visible quantity; what is left after
  that is canceled ("exceeds simulated depth"). Depth that is stale or missing, or that has no
  level beyond the quote's touch, falls back to the L1 model below, never to an older book.
* **Impact beyond displayed size (chunked), with only L1.** The displayed size is one level
  deep. Level ``k`` (0 = the touch) is another chunk, of the displayed size or
  ``impact_level_notional`` worth (whichever is more; level 0 is the displayed size), priced
  ``k * impact_bps_per_size`` bps beyond the touch: a buy pays ``ask * (1 + k * b)``, a sell
  gets ``bid * (1 - k * b)``. The default parameters are calibrated on the shared Binance
  BTCUSDT capture against the real book walk (``bench/fill_model.py``). Each level is its own
  Fill row. A market order walks at most ``max_levels`` levels; what is left after that is
  canceled ("exceeds simulated depth") rather than filled at a made-up price.
* **Shared liquidity.** What one order consumes from a quote is gone for the next order on the
  same quote; the next quote is a fresh book.
* **Limits fill only when traded through, behind their queue.** A resting buy limit fills
  only when the ask is strictly below it, at the limit price (maker). The displayed ask size of
  such a quote is what traded through its price; the size that was displayed at the limit's
  price when it came to rest (its *queue*: the bid size when it joins the bid, the fresh L2
  level at that price, or the L1 model's level size for a price behind the touch with no depth
  or past the deepest level the depth shows; nothing when it improves the book) trades
  first, and only what is left of the traded-through size fills it. The queue only ever
  shrinks by traded-through size (a cancel ahead of it is not seen), so the model never
  flatters. Sells are symmetric. A limit that is marketable on
  arrival (buy limit >= ask) takes as a taker at the ask and walks the levels while their price
  stays within the limit; the remainder rests at the front of its price (it made the level).
* **A cancel comes after the quote it was decided on.** The engine shows a quote to the
  strategies before the broker; a cancel decided on it (a move, a time to live, a kill) first
  lets the order meet that quote (``cancel(..., market)``): a limit it traded through is
  filled, as a venue had filled it before the cancel arrived. A quote already shown is not
  shown again as a fresh book: what its orders took of it stays taken. A limit restored after
  a restart was on the book while the market moved: one the market is through fills at its
  limit as a maker, never at the better touch as a taker.
* **Post-only and time in force, as venues do.** A post-only limit that would take on arrival
  is rejected ("post-only would take liquidity"), never filled as a taker. IOC takes what is
  there within its limit on arrival and cancels the rest; FOK fills all of it on arrival or
  nothing (cancelled, the book untouched). Neither ever rests. Post-only with IOC or FOK is
  refused outright.

* **Never further than ``PRICE_JUMP_FACTOR`` from the touch.** A taking order walks (book,
  extrapolation or L1 model) at most to ten times the ask (a buy) or a tenth of the bid (a
  sell); what is left of a market order there is canceled ("exceeds simulated depth"), as a
  level that far is no market's (a quote that far from the last is refused as a corrupt row).

* **Valid quotes only.** The engine validates every quote before the broker sees it; the
  broker still fills nothing against a book that is not finite, positive and uncrossed, and no
  fill is ever priced at a non-finite or non-positive price, or above ``MAX_PRICE``.

Time is the quote's ``ts_exchange`` (int ns); the broker never reads a clock, and latency comes
from a seeded ``random.Random``, so the same inputs give the same fills.

The broker keeps its own copy of each order; callers learn about changes only from the
OrderUpdates it returns (each carries a fresh copy), so nothing is mutated behind their back.
Prices are not rounded to the tick: impact levels sit between ticks.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right, insort
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from operator import neg
from typing import Any

from engine.config import PaperBrokerConfig
from engine.marketdata.validate import MAX_PRICE, PRICE_JUMP_FACTOR, depth_levels, tradable_book
from engine.types import (
    NS_PER_MS,
    Fill,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Quote,
    Side,
    TimeInForce,
)

_BPS = 1e-4
# A fill that leaves less than this fraction of the order open completes it (float dust).
_DUST = 1e-12

DUPLICATE_ID = "duplicate client order id"
DEPTH_EXHAUSTED = "exceeds simulated depth"
# Enum members read on every order and quote: a module global is ~10x cheaper on 3.11.
_BUY = Side.BUY
_NEW, _PENDING_NEW, _PARTIALLY_FILLED = (
    OrderStatus.NEW,
    OrderStatus.PENDING_NEW,
    OrderStatus.PARTIALLY_FILLED,
)
_FILLED, _CANCELED, _REJECTED = OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED
_LIMIT, _STOP = OrderType.LIMIT, OrderType.STOP_MARKET
_GTC, _IOC, _FOK = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK
POST_ONLY_WOULD_TAKE = "post-only would take liquidity"
_MAKER, _TAKER = Liquidity.MAKER, Liquidity.TAKER


class _Working:
    """An open order plus the broker's private bookkeeping for it."""

    __slots__ = ("arrival", "arrived", "fill_prefix", "fills", "order", "queue", "restored", "seq")

    def __init__(self, order: Order, arrival: int, seq: int, fill_prefix: str) -> None:
        self.order = order
        self.arrival = arrival
        self.seq = seq
        self.arrived = False  # True once it has met its arrival quote
        self.fill_prefix = fill_prefix
        self.fills = 0
        self.queue = 0.0  # a resting limit: the size still ahead of it at its price
        self.restored = False  # re-registered after a restart (it was at the venue before)


def _sort_key(w: _Working) -> tuple[int, int]:
    return (w.arrival, w.seq)


class _Depth:
    """How much of one side of one quote has been consumed: full levels, then into the next."""

    __slots__ = ("level", "used")

    def __init__(self) -> None:
        self.level = 0
        self.used = 0.0


class _Book:
    """The latest validated L2 depth of one symbol: prices and sizes per side, best first."""

    __slots__ = ("ask_px", "ask_sz", "bid_px", "bid_sz", "ts")

    def __init__(
        self, bids: tuple[list[float], list[float]], asks: tuple[list[float], list[float]], ts: int
    ) -> None:
        self.bid_px, self.bid_sz = bids
        self.ask_px, self.ask_sz = asks
        self.ts = ts


class PaperBroker:
    """Simulated venue. Feed it every quote; it returns fills and order updates in order."""

    max_levels: int = 100  # deepest impact level a single order may walk on one quote

    def __init__(self, cfg: PaperBrokerConfig, venue: str = "sim") -> None:
        self.cfg = cfg
        self.venue = venue
        self._rng = random.Random(cfg.seed)
        self._mu = math.log(cfg.latency_median_ms)
        self._sigma = cfg.latency_sigma
        # Shape 0: every draw is exactly exp(mu) (mu + z * 0.0), so the draw changes nothing.
        median = max(1, round(math.exp(self._mu) * NS_PER_MS))
        self._fixed_arrival = median if self._sigma == 0.0 else None
        self._median_latency = median  # a cancel's way to the venue (no draw: fills stay put)
        self._taker = cfg.taker_fee_bps * _BPS
        self._maker = cfg.maker_fee_bps * _BPS
        self._impact = cfg.impact_bps_per_size * _BPS
        self._level_notional = cfg.impact_level_notional
        self._depth_max_age = round(cfg.depth_max_age_ms * NS_PER_MS)
        self._books: dict[str, _Book] = {}  # latest validated depth by symbol (on_depth)
        self.depth_rejects: Counter[str] = Counter()  # depth refused by on_depth, by code
        self._seen: set[str] = set()  # every client order id ever accepted, rejected or restored
        self._working: dict[str, _Working] = {}  # open orders by client order id, in seq order
        self._by_symbol: dict[str, list[_Working]] = {}  # open orders sorted by (arrival, seq)
        self._seq = 0
        # The last quote each symbol's orders took from, and what they took (asks, bids):
        # what ``on_quote_again`` starts from.
        self._taken: dict[str, tuple[Quote, _Depth | None, _Depth | None]] = {}
        self._resume: tuple[_Depth | None, _Depth | None] | None = None

    # ------------------------------------------------------------------ commands

    def submit(self, order: Order, now: int) -> list[OrderUpdate]:
        """Acknowledge an order (NEW) and put it in flight; reject duplicates and nonsense."""
        coid = order.client_order_id
        if coid in self._seen:
            return [self._reject(order, now, DUPLICATE_ID)]
        self._seen.add(coid)
        problem = _invalid(order)
        if problem:
            return [self._reject(order, now, problem)]
        fixed = self._fixed_arrival
        if fixed is not None:
            arrival = now + fixed
        else:
            latency_ms = self._rng.lognormvariate(self._mu, self._sigma)
            arrival = now + max(1, round(latency_ms * NS_PER_MS))
        own = order.copy()
        own.move_to(_NEW, now, "")
        self._register(own, arrival, coid)
        return [OrderUpdate(own.copy(), now)]

    def cancel(
        self,
        client_order_id: str,
        now: int,
        reason: str = "canceled",
        market: Mapping[str, Quote] | None = None,
    ) -> list[OrderUpdate | Fill]:
        """Cancel an open (resting or in-flight) order; unknown or finished ids change nothing.

        ``market``: the engine's latest quote by symbol, the one the cancel was decided on.
        The order meets it first: a venue executed that quote before a cancel sent after it
        arrived (a limit the quote traded through is filled, not cancelled; a quote this
        broker was already shown takes nothing twice), unless the order's time to live ran out
        more than the median latency before that quote (its expiry's cancel was on the venue
        by then). Then the cancel takes effect, with no further latency; ``reason`` is the
        order's.
        """
        w = self._working.get(client_order_id)
        if w is None:
            return []
        out: list[OrderUpdate | Fill] = []
        last = None if market is None else market.get(w.order.symbol)
        due = w.order.expire_ts
        if last is not None and due and last.ts_exchange > due + self._median_latency:
            # Its time to live ran out before this quote by more than a cancel's way to the
            # venue: the engine's clock cancelled it before the quote (it met no quote since).
            last = None
        if last is not None:
            out = self.on_quote(last, (client_order_id,))
            if w.order.status.is_terminal:
                return out
        del self._working[client_order_id]
        self._by_symbol[w.order.symbol].remove(w)
        o = w.order
        o.move_to(_CANCELED, now, reason)
        out.append(OrderUpdate(o.copy(), now))
        return out

    def restore(self, orders: list[Order], now: int) -> None:
        """Re-register open orders after a restart; they (re)arrive at ``now``.

        Terminal orders only reserve their ids. Fill ids of restored orders carry ``-r{now}`` so
        they cannot collide with fills journaled before the restart.
        """
        for order in orders:
            coid = order.client_order_id
            if coid in self._seen:
                continue
            self._seen.add(coid)
            if order.status.is_terminal or _invalid(order):
                continue
            own = order.copy()
            if own.status is _PENDING_NEW:
                own.move_to(_NEW, own.ts_updated)  # it reached the (paper) venue before
            self._register(own, now, f"{coid}-r{now}")
            self._working[coid].restored = True

    # ------------------------------------------------------------------ market data

    def on_quote(
        self, quote: Quote, only: Collection[str] | None = None
    ) -> list[OrderUpdate | Fill]:
        """Execute what the quote allows for its symbol's arrived orders.

        Orders are handled by (arrival time, submission order); each fill is followed by the
        order's update, so the result replays in order. ``only``: the client order ids this
        quote is for, the others do not see it (a bar's protective exit meets a quote at its
        trigger price, a moment inside the bar that is the exit's alone: an order in flight
        beside it bought at a stop's low as if it had known where the bar would turn).
        """
        book = self._by_symbol.get(quote.symbol)
        ts = quote.ts_exchange
        if not book or book[0].arrival > ts:
            return []
        everyone = book
        if only is not None:
            book = [w for w in book if w.order.client_order_id in only]
        if not tradable_book(quote):
            # Only validated quotes should get here; if one that is not does, it fills
            # nothing (orders wait for the next good quote) rather than at a made-up price.
            return []
        out: list[OrderUpdate | Fill] = []
        # What buys / sells have consumed from this quote, made on demand; of a quote shown
        # before, what they consumed then.
        resume = self._resume
        if resume is None:
            held = self._taken.get(quote.symbol)
            if held is not None and held[0] is quote:
                resume = held[1], held[2]
        asks, bids = resume or (None, None)
        finished = False
        bid, ask = quote.bid, quote.ask
        for w in book:
            if w.arrival > ts:
                break
            o = w.order
            buy = o.side is _BUY
            limit = o.limit_price
            if w.arrived and limit is not None:  # resting limit: cheap trade-through test first
                if buy:
                    if not 0 < ask < limit:
                        continue
                elif not bid > limit:
                    continue
            if buy:
                depth = asks = asks or _Depth()
            else:
                depth = bids = bids or _Depth()
            if not w.arrived:
                self._arrive(w, quote, buy, depth, out)
            else:
                self._rest(w, quote, buy, depth, out)
            if o.status.is_terminal:
                finished = True
        if asks is not None or bids is not None:
            self._taken[quote.symbol] = (quote, asks, bids)
        if finished:
            keep = []
            for w in everyone:
                if w.order.status.is_terminal:
                    del self._working[w.order.client_order_id]
                else:
                    keep.append(w)
            self._by_symbol[quote.symbol] = keep
        return out

    def on_quote_again(
        self, quote: Quote, ts: int, only: Collection[str] | None = None
    ) -> list[OrderUpdate | Fill]:
        """Show ``quote`` (the last one shown for its symbol) again at ``ts``: a backtest's
        ``close`` fills a bar's orders on the bar's last quote after it was shown to the orders
        working then. What those took of it is gone: its displayed size is not there twice."""
        q = Quote(
            quote.symbol, quote.bid, quote.ask, quote.bid_size, quote.ask_size, ts, ts, quote.venue
        )
        held = self._taken.get(quote.symbol)
        if held is not None and held[0] is quote:
            self._resume = (held[1], held[2])
        try:
            return self.on_quote(q, only)
        finally:
            self._resume = None

    def on_depth(self, symbol: str, bids: Iterable[Any], asks: Iterable[Any], ts_ns: int) -> bool:
        """Take the venue's L2 depth for ``symbol`` (levels best first, ``(price, size)`` each)
        as of ``ts_ns`` (the time of the quote it came with). Taking orders walk it while it is
        fresh (see the module docstring). A book that is not finite, positive, strictly ordered
        and uncrossed is refused and counted in ``depth_rejects``, and it also drops the
        symbol's previous depth: after a bad book nobody knows the book, so fills fall back to
        the L1 model. Depth older than what the broker holds is refused ("time_backwards").
        Returns True if the depth was taken."""
        held = self._books.get(symbol)
        if held is not None and ts_ns < held.ts:
            self.depth_rejects["time_backwards"] += 1
            return False
        levels = depth_levels(bids, asks)
        if isinstance(levels, str):
            self.depth_rejects[levels] += 1
            self._books.pop(symbol, None)
            return False
        self._books[symbol] = _Book(levels[0], levels[1], ts_ns)
        return True

    def drop_depth(self, symbol: str) -> None:
        """Forget ``symbol``'s depth (its feed lost sync): fills use the L1 model until new
        depth comes."""
        self._books.pop(symbol, None)

    # ------------------------------------------------------------------ queries

    def open_orders(self) -> list[Order]:
        """Copies of the open orders, in submission order."""
        return [w.order.copy() for w in self._working.values()]

    def queue_ahead(self, client_order_id: str) -> float | None:
        """The size still ahead of a resting limit at its price; None if it is not resting."""
        w = self._working.get(client_order_id)
        return None if w is None or not w.arrived else w.queue

    def arrival_time(self, client_order_id: str) -> int | None:
        """When an open order reaches (or reached) the venue; None if it is not open."""
        w = self._working.get(client_order_id)
        return None if w is None else w.arrival

    def fee_rate(self, liquidity: Liquidity) -> float:
        """Fee as a fraction of notional (10 bps -> 0.001)."""
        return self._maker if liquidity is _MAKER else self._taker

    def expected_slippage_bps(self, side: Side, qty: float, quote: Quote) -> float:
        """What a market order of ``qty`` on this quote would pay against mid, in bps (no fees).

        Positive is a cost. It walks exactly what a fill on this quote would walk (the fresh
        L2 depth, else the L1 model), so a pre-trade check and the fill agree. It ignores
        latency (the quote may move). ``inf`` if the order would exceed the simulated depth or
        the quote has no price or size on that side.
        """
        buy = side is _BUY
        touch = quote.ask if buy else quote.bid
        size = quote.ask_size if buy else quote.bid_size
        mid = (quote.bid + quote.ask) * 0.5  # Quote.mid, without the property call
        if mid <= 0 or touch <= 0:
            return math.inf
        if qty <= 0:
            return side.sign * (touch - mid) / mid * 1e4
        if size <= 0:
            return math.inf
        if qty < size and self.max_levels > 0:
            # All of it on the touch (the usual case): _walk's one row, level 0, priced as it
            # prices it (``touch`` unless the impact is not finite), without the walk.
            impact = self._impact
            price = touch * (1 + 0 * impact) if buy else touch * (1 - 0 * impact)
            if not price <= 0:
                return side.sign * (qty * price / qty - mid) / mid * 1e4
        rows, left = self._take(quote, buy, touch, size, qty, _Depth(), None)
        if left > 0:
            return math.inf
        vwap = sum(q * p for q, p in rows) / qty
        return side.sign * (vwap - mid) / mid * 1e4

    # ------------------------------------------------------------------ internals

    def _register(self, order: Order, arrival: int, fill_prefix: str) -> None:
        seq = self._seq = self._seq + 1
        w = _Working(order, arrival, seq, fill_prefix)
        self._working[order.client_order_id] = w
        book = self._by_symbol.get(order.symbol)
        if book is None:
            book = self._by_symbol[order.symbol] = []
        if not book or (book[-1].arrival, book[-1].seq) <= (arrival, seq):
            book.append(w)  # where insort (after equal keys) puts it, without the search
        else:
            insort(book, w, key=_sort_key)

    def _reject(self, order: Order, now: int, reason: str) -> OrderUpdate:
        rejected = order.copy()
        rejected.move_to(_REJECTED, now, reason)
        return OrderUpdate(rejected, now)

    def _arrive(
        self, w: _Working, q: Quote, buy: bool, depth: _Depth, out: list[OrderUpdate | Fill]
    ) -> None:
        """First quote at/after arrival: take liquidity if market or marketable, else rest."""
        o = w.order
        touch = q.ask if buy else q.bid
        size = q.ask_size if buy else q.bid_size
        if touch <= 0 or size <= 0:
            return  # nothing to trade against; still in flight for the next quote
        w.arrived = True
        limit = o.limit_price if o.order_type is _LIMIT else None
        ts = q.ts_exchange
        if limit is not None and w.restored and o.tif == _GTC:
            # A limit that was working before the restart was on the book while the market
            # moved: if it moved through it, it filled there, at its limit, as a maker. Taken
            # at today's touch, a buy limit at 100 bought at 98.
            w.queue = (
                0.0
                if (touch <= limit if buy else touch >= limit)
                else self._queue_at(q, buy, limit)
            )
            self._rest(w, q, buy, depth, out)
            return
        if limit is not None and (touch > limit if buy else touch < limit):
            if o.tif == _GTC:  # not marketable: rests behind what is shown at its price
                w.queue = self._queue_at(q, buy, limit)
            else:
                o.move_to(_CANCELED, ts, f"{o.tif.upper()}: not marketable on arrival")
                out.append(OrderUpdate(o.copy(), ts))
            return
        if limit is not None and o.post_only:
            o.move_to(_REJECTED, ts, POST_ONLY_WOULD_TAKE)
            out.append(OrderUpdate(o.copy(), ts))
            return
        if limit is not None and o.tif == _FOK:
            trial = _Depth()
            trial.level, trial.used = depth.level, depth.used
            _rows, short = self._take(q, buy, touch, size, o.remaining, trial, limit)
            if short > 0:  # not all of it within the limit: nothing fills, nothing is used
                o.move_to(_CANCELED, ts, "FOK: not all of it available within the limit")
                out.append(OrderUpdate(o.copy(), ts))
                return
        rows, _ = self._take(q, buy, touch, size, o.remaining, depth, limit)
        for qty, price in rows:
            self._fill(w, qty, price, _TAKER, ts, out)
        if o.status.is_terminal:
            return
        if limit is None:
            o.move_to(_CANCELED, ts, DEPTH_EXHAUSTED)
            out.append(OrderUpdate(o.copy(), ts))
        elif o.tif != _GTC:
            o.move_to(_CANCELED, ts, "IOC: the rest cancelled")
            out.append(OrderUpdate(o.copy(), ts))
        # else the remainder rests at its limit, first at a price it made (queue 0)

    def _queue_at(self, q: Quote, buy: bool, limit: float) -> float:
        """What was displayed at ``limit`` on its own side when it came to rest: the touch's
        size when it joins the touch, nothing when it improves on it, behind the touch the
        fresh L2 level at that price (nothing between levels), else (no fresh depth, or a
        price past its deepest level) the L1 model's level."""
        touch = q.bid if buy else q.ask
        size = q.bid_size if buy else q.ask_size
        if limit == touch:
            return size
        if (limit > touch) if buy else (limit < touch):
            return 0.0  # a better price than anyone's: first in line
        book = self._books.get(q.symbol)
        if book is not None and book.ts >= q.ts_exchange - self._depth_max_age:
            px, sz = (book.bid_px, book.bid_sz) if buy else (book.ask_px, book.ask_sz)
            # Past the deepest level the feed gave, the book is unknown, not empty: such a
            # limit is behind the L1 model's level below, never first in line.
            if px and ((limit >= px[-1]) if buy else (limit <= px[-1])):
                for p, s in zip(px, sz, strict=True):
                    if p == limit:
                        return s
                return 0.0
        if not 0.0 < touch < math.inf:
            return size
        return max(size, self._level_notional / touch)

    def _rest(
        self, w: _Working, q: Quote, buy: bool, depth: _Depth, out: list[OrderUpdate | Fill]
    ) -> None:
        """A resting limit fills at its price when the market trades strictly through it."""
        o = w.order
        limit = o.limit_price
        if limit is None or depth.level > 0:
            return
        if buy:
            touch, size = q.ask, q.ask_size
            through = 0 < touch < limit
        else:
            touch, size = q.bid, q.bid_size
            through = touch > limit
        if not through:
            return
        avail = size - depth.used
        if avail <= 0:
            return
        ahead = w.queue
        if ahead > 0.0:  # the size ahead at its price trades first
            if ahead >= avail:
                w.queue = ahead - avail
                depth.level, depth.used = 1, 0.0
                return
            w.queue = 0.0
            depth.used += ahead
            avail -= ahead
        remaining = o.remaining
        if remaining < avail:
            take = remaining
            depth.used += remaining
        else:
            take = avail
            depth.level, depth.used = 1, 0.0
        self._fill(w, take, limit, _MAKER, q.ts_exchange, out)

    def _take(
        self,
        q: Quote,
        buy: bool,
        touch: float,
        size: float,
        qty: float,
        depth: _Depth,
        limit: float | None,
    ) -> tuple[list[tuple[float, float]], float]:
        """Walk the symbol's fresh L2 depth if there is some beyond the touch, else the L1 model;
        never further than ``PRICE_JUMP_FACTOR`` from the touch (a level that far is no market's,
        as a quote that far from the last is a corrupt row: a buy at a 0.01 touch walked a level
        at 1e12, and the slippage journaled with its fill was beyond what a start takes)."""
        cap = touch * PRICE_JUMP_FACTOR if buy else touch / PRICE_JUMP_FACTOR
        if limit is None or (limit > cap if buy else limit < cap):
            limit = cap
        book = self._books.get(q.symbol)
        if book is not None and book.ts >= q.ts_exchange - self._depth_max_age:
            if buy:
                px, sz = book.ask_px, book.ask_sz
                start = bisect_right(px, touch)  # first level strictly above the ask
            else:
                px, sz = book.bid_px, book.bid_sz
                start = bisect_right(px, -touch, key=neg)  # first level strictly below the bid
            if start < len(px):
                return self._walk_book(buy, touch, size, px, sz, start, qty, depth, limit)
        return self._walk(buy, touch, size, qty, depth, limit)

    def _walk_book(
        self,
        buy: bool,
        touch: float,
        size: float,
        px: list[float],
        sz: list[float],
        start: int,
        qty: float,
        depth: _Depth,
        limit: float | None,
    ) -> tuple[list[tuple[float, float]], float]:
        """Like :meth:`_walk`, over the book: level 0 is the touch, levels 1..m are
        ``px[start:]`` (one row each), and level m + 1 is the extrapolation past them (one row
        at its VWAP; ``depth.used`` there is how much of it earlier orders took).

        The extrapolation continues the visible book at its density: with n visible levels
        (touch included) holding Q in all and spaced s apart on average, the quantity x past
        the last level L is priced ``L + s/2 + x * n * s / Q`` (a buy; a sell mirrors it), the
        straight line through the midpoints of further levels of the mean size, one mean
        spacing apart. At most ``max_levels * Q`` is extrapolated, never beyond ``limit`` and
        never at a price that is not positive or is above ``MAX_PRICE``.
        """
        rows: list[tuple[float, float]] = []
        remaining = qty
        level, used = depth.level, depth.used
        visible = len(px) - start  # levels beyond the touch
        dust = qty * _DUST
        while remaining > dust and level <= visible:
            if level == 0:
                price, avail = touch, size
            else:
                price, avail = px[start + level - 1], sz[start + level - 1]
            if limit is not None and (price > limit if buy else price < limit):
                return self._walked(rows, remaining, dust, depth, level, used)
            avail -= used
            if remaining < avail:
                take, used = remaining, used + remaining
            else:
                take, level, used = avail, level + 1, 0.0
            remaining -= take
            rows.append((take, price))
        if remaining > dust:
            last = px[-1]
            spacing = abs(last - touch) / visible
            total = size + sum(sz[start:])
            per_price = total / ((visible + 1) * spacing)  # quantity per unit of price
            if buy:
                begin = last + spacing / 2
                room = math.inf if limit is None else (limit - begin) * per_price
            else:
                begin = last - spacing / 2
                room = (begin - (limit or 0.0)) * per_price
            take = min(remaining, room - used, self.max_levels * total - used)
            if take > 0:
                away = (used + take / 2) / per_price
                price = begin + away if buy else begin - away
                if 0.0 < price <= MAX_PRICE:
                    rows.append((take, price))
                    used += take
                    remaining -= take
        return self._walked(rows, remaining, dust, depth, level, used)

    @staticmethod
    def _walked(
        rows: list[tuple[float, float]],
        remaining: float,
        dust: float,
        depth: _Depth,
        level: int,
        used: float,
    ) -> tuple[list[tuple[float, float]], float]:
        depth.level, depth.used = level, used
        return rows, (remaining if remaining > dust else 0.0)

    def _walk(
        self, buy: bool, touch: float, size: float, qty: float, depth: _Depth, limit: float | None
    ) -> tuple[list[tuple[float, float]], float]:
        """Consume ``qty`` level by level from ``depth``; return (qty, price) rows and what is left.

        Level 0 holds the displayed ``size``; every further level holds that or
        ``impact_level_notional`` worth at the touch, whichever is more. Stops at
        ``max_levels``, at a price that is not positive or is above ``MAX_PRICE``, or at a
        level beyond ``limit``. Consecutive levels at one price (zero impact) merge into one row.
        """
        rows: list[tuple[float, float]] = []
        remaining = qty
        level, used = depth.level, depth.used
        impact = self._impact
        deep = max(size, self._level_notional / touch)  # size of every level beyond the touch
        while remaining > qty * _DUST and level < self.max_levels:
            price = touch * (1 + level * impact) if buy else touch * (1 - level * impact)
            if not 0.0 < price <= MAX_PRICE or (
                limit is not None and (price > limit if buy else price < limit)
            ):
                break
            avail = (deep if level else size) - used
            if remaining < avail:
                take, used = remaining, used + remaining
            else:
                take, level, used = avail, level + 1, 0.0
            remaining -= take
            if rows and rows[-1][1] == price:
                rows[-1] = (rows[-1][0] + take, price)
            else:
                rows.append((take, price))
        depth.level, depth.used = level, used
        return rows, (remaining if remaining > qty * _DUST else 0.0)

    def _fill(
        self,
        w: _Working,
        qty: float,
        price: float,
        liquidity: Liquidity,
        ts: int,
        out: list[OrderUpdate | Fill],
    ) -> None:
        o = w.order
        if o.status.is_terminal:
            # A crumb after the order finished: the walk counts its dust against what was
            # left, the order against its whole size (below), so a last row under the order's
            # dust can follow its FILLED. Nothing is left to fill; FILLED -> FILLED is not a
            # status change (ORDER_TRANSITIONS) and raising here would stop the engine.
            return
        prev = o.filled_qty
        filled = prev + qty
        fee = qty * price * (self._maker if liquidity is _MAKER else self._taker)
        o.avg_fill_price = (o.avg_fill_price * prev + price * qty) / filled
        size = o.qty
        if size - filled <= size * _DUST:
            o.filled_qty = size
            o.move_to(_FILLED, ts)
        else:
            o.filled_qty = filled
            o.move_to(_PARTIALLY_FILLED, ts)
        o.fees += fee
        n = w.fills = w.fills + 1
        out.append(
            Fill(
                f"{w.fill_prefix}-{n}",
                o.client_order_id,
                o.strategy_id,
                o.symbol,
                o.venue or self.venue,  # paper on several venues' prices: the order's venue
                o.side,
                qty,
                price,
                fee,
                liquidity,
                ts,
            )
        )
        out.append(OrderUpdate(o.copy(), ts))


def _invalid(order: Order) -> str:
    """Why the venue would refuse this order outright, or '' if it would not."""
    if not (math.isfinite(order.qty) and order.qty > 0):
        return "quantity must be positive"
    if order.remaining <= 0:
        return "nothing left to fill"
    if order.order_type is _STOP:
        return "stop orders work at venues only (native_stops); on paper stops are engine-side"
    if order.order_type is _LIMIT:
        lp = order.limit_price
        if lp is None or not (math.isfinite(lp) and lp > 0):
            return "limit order needs a positive limit price"
        if order.tif not in (_GTC, _IOC, _FOK):
            return f"unknown time in force {order.tif!r} (gtc, ioc or fok)"
        if order.post_only and order.tif != _GTC:
            return f"post-only cannot be {order.tif.upper()}: a post-only order rests or nothing"
    elif order.post_only or order.tif != _GTC:
        return "post-only and time in force are for limit orders"
    return ""
