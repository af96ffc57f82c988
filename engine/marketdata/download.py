"""Download OHLCV history from a venue through ccxt into the data folder (``store`` layout).

One ``Downloader`` per exchange: ccxt's async exchange class with ``enableRateLimit`` (its
throttler spaces requests by the venue's published weights), public endpoints only (no keys are
given to it, so none can be printed), and above it the venues layer's penalty box
(``RequestGate``): a 429/418 makes every symbol wait out the venue's ``Retry-After`` (or an
exponential backoff), timeouts and 5xx back off and retry, and after ``max_attempts`` failures in
a row the run stops with what it saved kept.

Paging: ``fetch_ohlcv(symbol, timeframe, since=cursor, limit=page)`` (binance also gets
``until`` = the end of the range). The venue answers the bars at or after ``cursor``; the range
[cursor, last bar + timeframe) is then answered for (bars it skipped inside are a venue gap) and
the cursor moves past the last bar. An empty answer means the venue has nothing from the cursor
to the end of the range. A short page is therefore just a page: the next request says whether
more follows. Only closed bars are asked for: the range ends at the last bar boundary at least
``CLOSE_MARGIN_MS`` before now, so the bar still forming is never stored.

Resuming: the store's manifest holds every range already answered; a run asks only for the rest
of [since, until) (what an interrupted run never reached, and anything newer), so a second run
continues where the first stopped and fills the holes it left. Bars are flushed to disk when a
month is complete, every ``flush_every_s`` seconds, and on the way out (also on Ctrl-C or a
venue error); a kill -9 loses at most the unflushed pages, never a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ccxt

from engine.marketdata.store import (
    Interval,
    SeriesStore,
    StoreError,
    TradeStore,
    iso_ms,
    now_ms,
)
from engine.venues.ccxt_broker import retry_after_from_headers
from engine.venues.exchanges import VenueUnavailable, make_exchange
from engine.venues.ratelimit import Backoff, RequestGate

MAX_TIMEFRAME_MS = 86_400_000  # longer bars (weeks, months) are not whole multiples of a grid
MIN_TIMEFRAME_MS = 60_000  # shorter: a monthly file of 1s bars is 2.6M rows, rewritten whole
CLOSE_MARGIN_MS = 10_000  # a bar is taken as closed this long after its end (clock skew)
DEFAULT_PAGE = 1000  # bars a page when ccxt does not say the venue's limit
TRADE_WINDOW_MS = 3_600_000  # Binance answers aggTrades for at most an hour at a time
TRADES_VENUES = ("binance",)  # whose fetch_trades paging by time is known (and tested)
FLUSH_EVERY_S = 10.0


class DownloadUsageError(Exception):
    """The request cannot be served as given (exchange, symbol, timeframe, dates): exit 2."""


class DownloadFailed(Exception):
    """The venue failed mid-run (after retries); what was saved is kept: exit 1."""


@dataclass
class SeriesProgress:
    """How far one symbol is: bar slots answered for out of those asked for this run."""

    symbol: str
    expected: int = 0
    done: int = 0
    bars: int = 0  # rows the venue returned this run (trades: overlapping pages count twice)
    before: int = 0  # rows on disk when the run started
    finished: bool = False


@dataclass
class SeriesResult:
    symbol: str
    path: Path
    bars_new: int
    bars_total: int
    first: int | None
    last: int | None
    gaps: list[Interval]
    tf_ms: int
    up_to_date: bool = False


@dataclass
class DownloadStats:
    requests: int = 0
    rate_limited: int = 0
    retries: int = 0
    waits_s: list[float] = field(default_factory=list)


def timeframe_ms(ex: Any, timeframe: str) -> int:
    """The timeframe's length in ms, after checking the venue offers it."""
    offered = getattr(ex, "timeframes", None) or {}
    if timeframe not in offered:
        names = ", ".join(offered) or "none"
        raise DownloadUsageError(f"{ex.id} has no {timeframe!r} bars; it offers: {names}")
    ms = int(ex.parse_timeframe(timeframe) * 1000)
    if ms > MAX_TIMEFRAME_MS or ms < MIN_TIMEFRAME_MS:
        raise DownloadUsageError(
            f"timeframe {timeframe!r}: bars from 1m to 1d can be downloaded (a month file of "
            "shorter bars would hold millions of rows; longer ones do not fall on one grid)"
        )
    return ms


class Downloader:
    """Downloads ``symbols`` x ``timeframe`` of one exchange into ``data_dir``."""

    def __init__(
        self,
        exchange_id: str,
        symbols: list[str],
        timeframe: str,
        since_ms: int,
        until_ms: int | None,
        data_dir: str | Path,
        *,
        exchange: Any = None,
        page_limit: int | None = None,
        max_attempts: int = 6,
        flush_every_s: float = FLUSH_EVERY_S,
        timeout_ms: int = 10_000,
        clock_ms: Callable[[], int] = now_ms,
        on_progress: Callable[[Downloader], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        trades: bool = False,
    ) -> None:
        if not symbols:
            raise DownloadUsageError("no --symbol given; e.g. --symbol BTC/USDT")
        if until_ms is not None and since_ms >= until_ms:
            raise DownloadUsageError(
                f"--since {iso_ms(since_ms)} is not before --until {iso_ms(until_ms)}"
            )
        if exchange is None:
            try:
                exchange = make_exchange(exchange_id, sandbox=False, timeout_ms=timeout_ms)
            except VenueUnavailable:
                raise DownloadUsageError(
                    f"unknown exchange {exchange_id!r}: not a ccxt exchange id "
                    "(e.g. binance, bybit, okx, kraken, kucoin)"
                ) from None
        self.ex = exchange
        self.exchange_id = exchange_id
        self.trades = trades
        if trades and exchange_id not in TRADES_VENUES:
            raise DownloadUsageError(
                f"--trades: downloading trade history is supported for "
                f"{', '.join(TRADES_VENUES)} (how {exchange_id} pages its trades by time is not "
                "known here); bars work for every ccxt venue"
            )
        self.symbols = list(dict.fromkeys(symbols))
        self.timeframe = timeframe
        self.since_ms = since_ms
        self.until_ms = until_ms
        self.data_dir = Path(data_dir)
        self.page_limit = page_limit
        self.max_attempts = max_attempts
        self.flush_every_s = flush_every_s
        self.clock_ms = clock_ms
        self.on_progress = on_progress
        self.sleep = sleep
        self.gate = RequestGate(1000.0, burst=10, cancel_reserve=0, sleep=sleep)
        self.stats = DownloadStats()
        self.progress: dict[str, SeriesProgress] = {s: SeriesProgress(s) for s in self.symbols}
        self.stores: dict[str, SeriesStore] = {}
        self.tf_ms = 0
        self.started = time.monotonic()
        self._retry_after: float | None = None
        self._hook_rate_limit_answers()

    # -------------------------------------------------------------- venue plumbing

    def _hook_rate_limit_answers(self) -> None:
        """Keep Retry-After from a 429/418 (ccxt raises before the caller sees headers)."""
        ex = self.ex
        original = ex.on_rest_response

        def on_rest_response(
            code: Any, reason: Any, url: Any, method: Any, headers: Any, body: Any, *rest: Any
        ) -> Any:
            with contextlib.suppress(TypeError, ValueError):
                if int(code) in (418, 429):
                    self._retry_after = retry_after_from_headers(
                        dict(headers or {}), self.clock_ms()
                    )
            return original(code, reason, url, method, headers, body, *rest)

        ex.on_rest_response = on_rest_response

    async def _call(self, what: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """One idempotent read: rate limits wait (Retry-After), network errors back off; both
        retried up to ``max_attempts`` times in a row, then DownloadFailed."""
        backoff = Backoff(0.5, 30.0)
        failures = 0
        while True:
            await self.gate.acquire()
            self.stats.requests += 1
            try:
                result = await fn()
            except (ccxt.RateLimitExceeded, ccxt.DDoSProtection) as exc:
                failures += 1
                self.stats.rate_limited += 1
                if failures >= self.max_attempts:
                    raise DownloadFailed(
                        f"{what}: rate limited {failures} times ({_why(exc)})"
                    ) from None
                wait = self.gate.penalize(self._retry_after)
                self._retry_after = None
                self.stats.waits_s.append(wait)
                continue
            except (ccxt.NetworkError, ccxt.ExchangeNotAvailable) as exc:
                failures += 1
                self.stats.retries += 1
                if failures >= self.max_attempts:
                    raise DownloadFailed(f"{what}: failed {failures} times ({_why(exc)})") from None
                await self.sleep(backoff.next_delay())
                continue
            except ccxt.BaseError as exc:
                raise DownloadFailed(f"{what}: {_why(exc)}") from None
            self.gate.succeeded()
            return result

    # -------------------------------------------------------------- checks

    async def prepare(self) -> None:
        """Load the venue's markets and check every symbol and the timeframe (usage errors)."""
        if self.trades:
            if not self.ex.has.get("fetchTrades"):
                raise DownloadUsageError(f"{self.exchange_id} has no trade history in ccxt")
            self.tf_ms = 1
        else:
            if not self.ex.has.get("fetchOHLCV"):
                raise DownloadUsageError(f"{self.exchange_id} has no OHLCV history in ccxt")
            self.tf_ms = timeframe_ms(self.ex, self.timeframe)
        try:
            await self._call(f"{self.exchange_id}: loading markets", self.ex.load_markets)
        except DownloadFailed as exc:
            raise DownloadFailed(f"{exc}; nothing was downloaded") from None
        for symbol in self.symbols:
            if symbol not in self.ex.markets:
                close = difflib.get_close_matches(symbol, list(self.ex.symbols or []), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise DownloadUsageError(
                    f"{self.exchange_id} has no market {symbol!r} (spot markets, ccxt "
                    f"symbols like BTC/USDT){hint}"
                )
        limit = self.page_limit
        if limit is None:
            features = (getattr(self.ex, "features", None) or {}).get("spot") or {}
            method = "fetchTrades" if self.trades else "fetchOHLCV"
            limit = int((features.get(method) or {}).get("limit") or DEFAULT_PAGE)
        self.page_limit = max(1, limit)

    @property
    def unit_ms(self) -> int:
        """Progress is counted in bars, or for trades in minutes of history."""
        return 60_000 if self.trades else self.tf_ms

    def end_ms(self) -> int:
        """The end of what can be asked: --until, but never a bar that may still be forming
        (for trades: never the last ``CLOSE_MARGIN_MS``, in which more may still arrive)."""
        closed = (self.clock_ms() - CLOSE_MARGIN_MS) // self.tf_ms * self.tf_ms
        return closed if self.until_ms is None else min(self.until_ms, closed)

    def start_ms(self) -> int:
        return -(-self.since_ms // self.tf_ms) * self.tf_ms  # the first bar boundary at or after

    # -------------------------------------------------------------- the run

    async def run(self) -> list[SeriesResult]:
        """Download every symbol (concurrently; one shared rate limit); flushes on the way out."""
        await self.prepare()
        start, end = self.start_ms(), self.end_ms()
        if start >= end:
            raise DownloadUsageError(
                f"--since {iso_ms(self.since_ms)} leaves nothing closed to download "
                f"(the last closed bar ends {iso_ms(end)})"
            )
        try:
            for symbol in self.symbols:
                if self.trades:
                    store: SeriesStore = TradeStore(self.data_dir, self.exchange_id, symbol)
                else:
                    store = SeriesStore(
                        self.data_dir, self.exchange_id, symbol, self.timeframe, self.tf_ms
                    )
                store.lock()
                self.stores[symbol] = store
                store.check_contents(store.missing(start, end))
            async with asyncio.TaskGroup() as tg:
                for symbol in self.symbols:
                    tg.create_task(self._series(symbol, start, end))
        except* DownloadFailed as group:
            raise group.exceptions[0] from None
        except* StoreError as group:
            raise group.exceptions[0] from None
        finally:
            for store in self.stores.values():
                store.unlock()
        return [self._result(s, start, end) for s in self.symbols]

    def _result(self, symbol: str, start: int, end: int) -> SeriesResult:
        store = self.stores[symbol]
        s = store.summary()
        in_range = [(max(a, start), min(b, end)) for a, b in s.gaps if b > start and a < end]
        return SeriesResult(
            symbol,
            store.dir,
            s.bars - self.progress[symbol].before,
            s.bars,
            s.first,
            s.last,
            in_range,
            self.tf_ms,
            self.progress[symbol].expected == 0,
        )

    async def _series(self, symbol: str, start: int, end: int) -> None:
        store = self.stores[symbol]
        prog = self.progress[symbol]
        todo = store.missing(start, end)
        prog.before = store.bars
        unit = self.unit_ms
        prog.expected = sum(b - a for a, b in todo) // unit
        self._report()
        last_flush = time.monotonic()
        done_ms = 0
        try:
            for a, b in todo:
                cursor = a
                while cursor < b:
                    if self.trades:
                        rows, answered = await self._trades_page(symbol, cursor, b)
                    else:
                        rows = await self._page(symbol, cursor, b)
                        answered = (cursor, rows[-1][0] + self.tf_ms if rows else b)
                    store.add(rows, answered)
                    done_ms += answered[1] - answered[0]
                    prog.done = done_ms // unit
                    prog.bars += len(rows)
                    period = store._period(cursor)
                    cursor = answered[1]
                    self._report()
                    period_done = cursor >= store._bounds(period)[1]
                    if period_done or time.monotonic() - last_flush >= self.flush_every_s:
                        store.flush(keep_months=[store._period(min(cursor, b - 1))])
                        last_flush = time.monotonic()
        finally:
            store.flush()  # on success, Ctrl-C (cancellation) or a venue error alike
            prog.finished = True
            self._report()

    async def _trades_page(
        self, symbol: str, cursor: int, end: int
    ) -> tuple[list[list[Any]], Interval]:
        """One page of public trades from ``cursor``, in a window of at most an hour (Binance's
        aggTrades limit) ending before ``end``, and the range it answers for: the whole window
        when the page is not full; else up to (not including) its last trade's millisecond,
        whose trades may go on in the next page (asked from that millisecond; the store keeps
        one row per trade id)."""
        window_end = min(cursor + TRADE_WINDOW_MS, end)
        what = f"{self.exchange_id} {symbol} trades from {iso_ms(cursor)}"

        async def fetch() -> Any:
            return await self.ex.fetch_trades(
                symbol, since=cursor, limit=self.page_limit, params={"until": window_end - 1}
            )

        page = await self._call(what, fetch) or []
        rows = [r for r in (_checked_trade(t, what) for t in page) if cursor <= r[0] < window_end]
        if len(page) < (self.page_limit or 0):
            return rows, (cursor, window_end)
        last = max((r[0] for r in rows), default=cursor)
        if last > cursor:
            return rows, (cursor, last)
        # A full page within one millisecond (a sweep): time cannot page past it, trade ids can.
        while True:
            from_id = max(int(r[1]) for r in rows) + 1

            async def by_id(from_id: int = from_id) -> Any:
                return await self.ex.fetch_trades(
                    symbol, limit=self.page_limit, params={"fromId": from_id}
                )

            more = [_checked_trade(t, what) for t in (await self._call(what, by_id) or [])]
            rows.extend(r for r in more if r[0] == cursor)
            if not more or any(r[0] > cursor for r in more):
                return rows, (cursor, cursor + 1)
            if any(r[0] < cursor for r in more):
                raise DownloadFailed(f"{what}: trades by id went back in time")

    async def _page(self, symbol: str, cursor: int, end: int) -> list[list[Any]]:
        """The closed bars in [cursor, end) of the venue's answer to one page request."""
        params: dict[str, Any] = {}
        if self.exchange_id == "binance":
            params["until"] = end - 1
        what = f"{self.exchange_id} {symbol} {self.timeframe} from {iso_ms(cursor)}"

        async def fetch() -> Any:
            return await self.ex.fetch_ohlcv(
                symbol, self.timeframe, since=cursor, limit=self.page_limit, params=params
            )

        page = await self._call(what, fetch)
        rows: list[list[Any]] = []
        before = 0
        for raw in page or []:
            row = _checked_row(raw, what)
            if row[0] < cursor:
                before += 1
                continue
            if row[0] >= end:
                break
            if rows and row[0] <= rows[-1][0]:
                raise DownloadFailed(f"{what}: bars out of order at {iso_ms(row[0])}")
            rows.append(row)
        if page and before == len(page):
            raise DownloadFailed(
                f"{what}: the venue answered only bars before the time asked for (it ignores "
                "`since` this far back); nothing older can be downloaded from it"
            )
        return rows

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self)

    # -------------------------------------------------------------- figures

    @property
    def expected(self) -> int:
        return sum(p.expected for p in self.progress.values())

    @property
    def done(self) -> int:
        return sum(p.done for p in self.progress.values())

    def rate(self) -> float:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return self.done / elapsed

    def eta_s(self) -> float | None:
        rate = self.rate()
        if rate <= 0:
            return None
        return (self.expected - self.done) / rate

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ex.close()


def _why(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."


def _checked_trade(raw: Any, what: str) -> list[Any]:
    """A ccxt trade as ``[ms, id, side, price, amount]`` with finite positive numbers."""
    if not isinstance(raw, dict):
        raise DownloadFailed(f"{what}: the venue sent a malformed trade {str(raw)[:60]}")
    t, tid, side = raw.get("timestamp"), raw.get("id"), raw.get("side")
    price, amount = raw.get("price"), raw.get("amount")
    if isinstance(t, bool) or not isinstance(t, int) or tid is None:
        raise DownloadFailed(f"{what}: the venue sent a trade without a time or an id")
    numbers: list[float] = []
    for value in (price, amount):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DownloadFailed(f"{what}: the venue sent a trade value {value!r}")
        if not (math.isfinite(value) and value > 0):
            raise DownloadFailed(f"{what}: the venue sent a trade value {value!r}")
        numbers.append(float(value))
    return [t, str(tid), side if side in ("buy", "sell") else "", *numbers]


def _checked_row(raw: Any, what: str) -> list[Any]:
    """A ccxt OHLCV row ``[ms, o, h, l, c, v]`` with a whole ms time and finite numbers (a
    missing volume, which ccxt leaves undefined on some venues, is 0)."""
    if not isinstance(raw, list | tuple) or len(raw) < 6:
        raise DownloadFailed(f"{what}: the venue sent a malformed bar {str(raw)[:60]}")
    t = raw[0]
    if isinstance(t, bool) or not isinstance(t, int | float) or t != t or int(t) != t:
        raise DownloadFailed(f"{what}: the venue sent a bar time {t!r}")
    out: list[Any] = [int(t)]
    for value in raw[1:6]:
        if value is None and len(out) == 5:
            value = 0.0
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DownloadFailed(f"{what}: the venue sent a bar value {value!r}")
        if not math.isfinite(value):
            raise DownloadFailed(f"{what}: the venue sent a bar value {value!r}")
        out.append(float(value))
    return out
