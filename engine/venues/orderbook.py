"""An L2 order book kept in sync from a snapshot plus sequenced diffs (Binance's procedure).

Binance's documented way to keep a local book (spot ``<symbol>@depth``):

1. Open the diff stream and buffer its events.
2. Get a REST snapshot (``GET /api/v3/depth?limit=1000``) with ``lastUpdateId`` L.
3. Drop buffered events with ``u <= L``.
4. The first event to apply must have ``U <= L + 1 <= u``.
5. Every later event must start where the previous one ended: ``U == previous u + 1``.
   Anything else is a **gap**: the book can no longer be trusted and must be rebuilt from a new
   snapshot (resync).
6. A quantity of 0 removes the level; removing a level the book does not have is normal.

:class:`BookSync` implements exactly that as a sans-I/O state machine (the caller does the
fetching), with boundary validation: a malformed message is counted and ignored, never applied
and never raised. :class:`L2Book` is the book itself, with sorted price levels.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any

from engine.types import Quote

Level = tuple[float, float]
Event = tuple[int, int, list[Level], list[Level], int]  # U, u, bids, asks, event time (ms)


def _level(row: Any) -> tuple[float, float]:
    price, qty = float(row[0]), float(row[1])
    if not (math.isfinite(price) and math.isfinite(qty)) or price <= 0 or qty < 0:
        raise ValueError(f"bad level {row!r}")
    return price, qty


class _Side:
    """One side of the book: price -> quantity, with the prices kept sorted ascending."""

    __slots__ = ("levels", "prices")

    def __init__(self) -> None:
        self.levels: dict[float, float] = {}
        self.prices: list[float] = []

    def set(self, price: float, qty: float) -> None:
        if qty == 0.0:
            if self.levels.pop(price, None) is not None:
                i = bisect_left(self.prices, price)
                del self.prices[i]
            return
        if price not in self.levels:
            insort(self.prices, price)
        self.levels[price] = qty

    def clear(self) -> None:
        self.levels.clear()
        self.prices.clear()

    def __len__(self) -> int:
        return len(self.prices)


class L2Book:
    """Price levels for one symbol. Prices are floats parsed from the venue's decimal strings."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self._bids = _Side()
        self._asks = _Side()
        self.last_update_id = 0

    def load(self, bids: Iterable[Any], asks: Iterable[Any], last_update_id: int) -> None:
        """Replace the whole book (a snapshot). Raises ValueError on a malformed level."""
        new_bids = [_level(r) for r in bids]
        new_asks = [_level(r) for r in asks]
        self._bids.clear()
        self._asks.clear()
        for p, q in new_bids:
            self._bids.set(p, q)
        for p, q in new_asks:
            self._asks.set(p, q)
        self.last_update_id = int(last_update_id)

    def apply(
        self,
        bids: Sequence[tuple[float, float]],
        asks: Sequence[tuple[float, float]],
        update_id: int,
    ) -> None:
        """Apply already-validated level changes."""
        for p, q in bids:
            self._bids.set(p, q)
        for p, q in asks:
            self._asks.set(p, q)
        self.last_update_id = update_id

    def best_bid(self) -> tuple[float, float] | None:
        if not self._bids.prices:
            return None
        p = self._bids.prices[-1]
        return p, self._bids.levels[p]

    def best_ask(self) -> tuple[float, float] | None:
        if not self._asks.prices:
            return None
        p = self._asks.prices[0]
        return p, self._asks.levels[p]

    def bids(self, depth: int | None = None) -> list[tuple[float, float]]:
        prices = self._bids.prices
        chosen = prices[::-1] if depth is None else prices[: -depth - 1 : -1]
        return [(p, self._bids.levels[p]) for p in chosen]

    def asks(self, depth: int | None = None) -> list[tuple[float, float]]:
        prices = self._asks.prices if depth is None else self._asks.prices[:depth]
        return [(p, self._asks.levels[p]) for p in prices]

    @property
    def depth(self) -> tuple[int, int]:
        return len(self._bids), len(self._asks)

    def crossed(self) -> bool:
        b, a = self.best_bid(), self.best_ask()
        return b is not None and a is not None and b[0] >= a[0]

    def quote(self, venue: str, ts_exchange: int, ts_recv: int) -> Quote | None:
        b, a = self.best_bid(), self.best_ask()
        if b is None or a is None:
            return None
        return Quote(self.symbol, b[0], a[0], b[1], a[1], ts_exchange, ts_recv, venue)


class SyncState(StrEnum):
    AWAITING_SNAPSHOT = "awaiting_snapshot"  # buffering diffs; a snapshot is needed
    SYNCED = "synced"  # the book is the venue's


# What on_diff / on_snapshot report.
BUFFERED = "buffered"
APPLIED = "applied"
STALE = "stale"  # an event the snapshot already contains (u <= lastUpdateId): dropped
GAP = "gap"  # sequence broken: resync required (a new snapshot)
REJECTED = "rejected"  # malformed message: counted and ignored


class BookSync:
    """Snapshot + diff synchronisation for one symbol; see the module docstring.

    ``needs_snapshot`` is True whenever the caller must fetch a (new) snapshot and pass it to
    :meth:`on_snapshot`. While it is True the book must not be used (``book_ready`` is False).
    """

    def __init__(self, symbol: str, max_buffer: int = 100_000) -> None:
        self.symbol = symbol
        self.book = L2Book(symbol)
        self.state = SyncState.AWAITING_SNAPSHOT
        self.max_buffer = max_buffer
        self._buffer: list[Event] = []
        self._prev_u: int | None = None
        self.counts: Counter[str] = Counter()
        self.gaps = 0
        self.last_event_ms = 0

    @property
    def needs_snapshot(self) -> bool:
        return self.state is SyncState.AWAITING_SNAPSHOT

    @property
    def book_ready(self) -> bool:
        return self.state is SyncState.SYNCED

    @staticmethod
    def _parse(msg: Any) -> Event:
        data = msg.get("data", msg) if isinstance(msg, dict) else None
        if not isinstance(data, dict):
            raise ValueError("not an object")
        first, last = data["U"], data["u"]
        if not (isinstance(first, int) and isinstance(last, int)) or isinstance(first, bool):
            raise ValueError("update ids must be integers")
        if first > last:
            raise ValueError("U > u")
        bids = [_level(r) for r in data.get("b", [])]
        asks = [_level(r) for r in data.get("a", [])]
        event_ms = data.get("E", 0)
        return first, last, bids, asks, event_ms if isinstance(event_ms, int) else 0

    def on_diff(self, msg: Any) -> str:
        """Feed one depth-diff message (raw ``depthUpdate`` or ``{"stream", "data"}``)."""
        try:
            ev = self._parse(msg)
        except (KeyError, TypeError, ValueError, IndexError):
            self.counts[REJECTED] += 1
            return REJECTED
        if self.state is SyncState.AWAITING_SNAPSHOT:
            if len(self._buffer) >= self.max_buffer:
                self._buffer.pop(0)
            self._buffer.append(ev)
            self.counts[BUFFERED] += 1
            return BUFFERED
        result = self._step(ev)
        self.counts[result] += 1
        return result

    def _step(self, ev: Event) -> str:
        first, last, bids, asks, event_ms = ev
        book = self.book
        if last <= book.last_update_id and self._prev_u is None:
            return STALE
        if self._prev_u is None:
            # The first event after the snapshot must bridge it: U <= L + 1 <= u.
            if not first <= book.last_update_id + 1 <= last:
                return self._gap(ev)
        elif first != self._prev_u + 1:
            if last <= self._prev_u:
                return STALE  # a duplicate of what was applied already
            return self._gap(ev)
        book.apply(bids, asks, last)
        self._prev_u = last
        self.last_event_ms = event_ms
        return APPLIED

    def _gap(self, ev: Any) -> str:
        self.gaps += 1
        self.state = SyncState.AWAITING_SNAPSHOT
        self._prev_u = None
        self._buffer = [ev]  # the event that showed the gap starts the next buffer
        return GAP

    def on_snapshot(self, snapshot: Any) -> str:
        """Load a REST snapshot (``{"lastUpdateId", "bids", "asks"}``, or ccxt's order book
        structure with ``nonce``) and replay the buffered diffs. Returns SYNCED's value, or GAP
        if the buffer does not bridge the snapshot (then fetch a newer snapshot)."""
        try:
            key = "lastUpdateId" if "lastUpdateId" in snapshot else "nonce"
            last_id = snapshot[key]
            if not isinstance(last_id, int) or isinstance(last_id, bool):
                raise ValueError("lastUpdateId must be an integer")
            self.book.load(snapshot["bids"], snapshot["asks"], last_id)
        except (KeyError, TypeError, ValueError, IndexError):
            self.counts["snapshot_rejected"] += 1
            return REJECTED
        self.state = SyncState.SYNCED
        self._prev_u = None
        buffered, self._buffer = self._buffer, []
        for i, ev in enumerate(buffered):
            result = self._step(ev)
            self.counts[result] += 1
            if result == GAP:
                self._buffer.extend(buffered[i + 1 :])
                return GAP
        return self.state.value
