"""Market data from ccxt venues for the engine: one :class:`CcxtMarketFeed` per venue.

The same source serves every mode that reads a venue's market: testnet and live (the feeds
share the markets the venue brokers loaded) and paper on live prices (``engine.mode = "paper"``
with ``[market] source = "venue"``), where no broker exists: the source loads each venue's
public markets itself on an exchange object that holds no credential, and orders go to the paper
broker. In paper mode the prices are the venue's production public streams, unless the venue
section says ``testnet = true`` explicitly (then its sandbox's).

Quotes are stamped in real time, so the market's time is the wall clock. A symbol whose feed is
not synced (no fresh valid quote yet, an error, a reconnect, silence beyond ``stale_after_s``)
refuses orders through :meth:`VenueSource.market_gate`: the engine never trades on data it
cannot trust.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from engine.execution import UnsupportedMode
from engine.types import Bar, DepthUpdate, Instrument, Quote
from engine.venues.exchanges import VenueStartError, describe_start_failure

if TYPE_CHECKING:
    from engine.config import Config
    from engine.execution import Execution
    from engine.restore import RestoredState

# How long a batch waits for a first quote before handing the caller an empty one (so it can
# look at its stop flag and deadline).
IDLE_BATCH_S = 0.25
# Quotes (and books) waiting for the engine, from every feed. When the engine falls behind the
# feeds wait too, and each feed's own bounded queue drops its oldest quote (counted in its
# status as "dropped"): memory stays bounded and the engine always works on recent prices.
PENDING_MAX = 10_000


def paper_data_sandbox(cfg: Config, venue: str) -> bool:
    """Paper mode reads production prices unless the venue section asks for its sandbox."""
    vcfg = cfg.venues[venue]
    return bool(vcfg.testnet) and "testnet" in vcfg.model_fields_set


class VenueSource:
    """Quotes from every configured venue's feed; see the module doc.

    ``feed_kwargs`` go to every :class:`CcxtMarketFeed` (tests: a transport, a poll period);
    ``prepare_exchange(venue, exchange)`` is called with each exchange object the source builds
    itself (paper mode), before any request, e.g. to point it at a test server.
    """

    name = "venue"

    def __init__(
        self,
        cfg: Config,
        *,
        feed_kwargs: dict[str, Any] | None = None,
        prepare_exchange: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.feeds: dict[str, Any] = {}
        self._feed_kwargs = dict(feed_kwargs or {})
        self._prepare_exchange = prepare_exchange
        self._own_exchanges: list[Any] = []  # REST objects this source built (paper mode)
        self._venue_of: dict[str, str] = {}  # symbol -> the venue whose feed quotes it
        # A book stream's depth goes with its quotes only where orders fill on it: the paper
        # execution (paper mode, see build_execution); a venue fills our orders from its own.
        self._books = cfg.engine.mode == "paper"
        # The raw recorder ([record] enabled; engine.marketdata.recording), set before open().
        self.recorder: Any = None

    # ------------------------------------------------------------------ start

    async def open(
        self, restored: RestoredState, execution: Execution
    ) -> tuple[dict[str, Instrument], int, list[Bar]]:
        """One feed per venue that serves a strategy symbol; the instruments come from the
        venue brokers (testnet, live) or from the venues' public markets (paper)."""
        from engine.venues.ccxt_market import build_feed

        cfg = self.cfg
        exchanges: dict[str, Any] = execution.venue_exchanges()
        instruments: dict[str, Instrument] = dict(execution.instruments())
        if self.recorder is not None:
            self.recorder.start()  # before the first payload; stopped by close()
        try:
            if not exchanges:
                exchanges, instruments = await self._load_public_markets()
            if not instruments:
                raise UnsupportedMode("no venue offers any of the strategies' symbols")
            for name, exchange in exchanges.items():
                syms = [s for s, inst in instruments.items() if inst.venue == name]
                if not syms:
                    continue
                vcfg = cfg.venues[name]
                if cfg.engine.mode == "paper":
                    feed_mode = "testnet" if paper_data_sandbox(cfg, name) else "live"
                    vcfg = vcfg.model_copy(update={"testnet": feed_mode == "testnet"})
                else:
                    feed_mode = cfg.engine.mode
                try:
                    feed = build_feed(
                        name,
                        vcfg,
                        feed_mode,
                        exchange,
                        syms,
                        stale_after_s=cfg.market.validation.stale_after_s,
                        max_spread_bps=cfg.market.validation.max_spread_bps,
                        **self._feed_kwargs,
                    )
                except ValueError as exc:  # a market-data setting this venue cannot serve
                    raise UnsupportedMode(str(exc)) from None
                if feed.exchange is not exchange and self._prepare_exchange is not None:
                    self._prepare_exchange(name, feed.exchange)
                self.feeds[name] = feed
                self._venue_of.update(dict.fromkeys(syms, name))
                if self.recorder is not None:
                    feed.recorder = self.recorder.offer
                    for sym in syms:
                        self.recorder.describe(name, sym, feed, instruments[sym])
        except BaseException:
            await self.close()
            raise
        start_ns = max(time.time_ns(), restored.last_ts + 1)
        return instruments, start_ns, []

    async def _load_public_markets(self) -> tuple[dict[str, Any], dict[str, Instrument]]:
        """Paper mode: each venue's markets from its public REST API, on an object with no
        credentials (keys named in the config are never read in paper mode)."""
        from engine.venues.ccxt_market import instruments_from_exchange
        from engine.venues.exchanges import make_exchange
        from engine.venues.profiles import profile_for

        cfg = self.cfg
        symbols = sorted({s for strat in cfg.strategies for s in strat.symbols})
        exchanges: dict[str, Any] = {}
        instruments: dict[str, Instrument] = {}
        for name, vcfg in sorted(cfg.venues.items()):
            mine = [s for s in symbols if vcfg.symbols is None or s in vcfg.symbols]
            if not mine:
                continue
            ex = make_exchange(vcfg.exchange, sandbox=paper_data_sandbox(cfg, name))
            self._own_exchanges.append(ex)
            if self._prepare_exchange is not None:
                self._prepare_exchange(name, ex)
            try:
                await ex.load_markets(False, dict(profile_for(vcfg.exchange).load_params))
            except Exception as exc:
                raise VenueStartError(describe_start_failure(exc, name)) from None
            metas, problems = instruments_from_exchange(ex, mine, name)
            if problems:
                raise UnsupportedMode("; ".join(problems.values()))
            exchanges[name] = ex
            instruments.update({s: m.instrument for s, m in metas.items()})
        return exchanges, instruments

    # ------------------------------------------------------------------ running

    async def batches(
        self, max_events: int | None = None
    ) -> AsyncGenerator[Sequence[Quote | Bar | DepthUpdate], None]:
        """Quotes from every feed as they arrive, in batches (an L2 stream's books just before
        their quotes); an empty batch after :data:`IDLE_BATCH_S` of silence."""
        queue: asyncio.Queue[Quote | DepthUpdate] = asyncio.Queue(maxsize=PENDING_MAX)

        async def pump(feed: Any) -> None:
            if feed.source != "book" or not self._books:
                async for q in feed.quotes():
                    await queue.put(q)
                return
            # An L2 stream: each quote goes with the book it came from (for the paper venue's
            # book walk), put in just before it whenever the book changed.
            last: dict[str, Any] = {}
            book_for = getattr(feed, "book_for", None)
            async for q in feed.quotes():
                book = book_for(q) if book_for is not None else feed.depth(q.symbol)
                if book is not last.get(q.symbol):
                    last[q.symbol] = book
                    await queue.put(
                        DepthUpdate(q.symbol, (), (), 0)
                        if book is None
                        else DepthUpdate(q.symbol, book.bids, book.asks, book.ts_ns)
                    )
                await queue.put(q)

        pumps = [asyncio.create_task(pump(f)) for f in self.feeds.values()]
        seen = 0  # quotes handed out (books travel with them and are not counted)
        try:
            while max_events is None or seen < max_events:
                try:
                    first = await asyncio.wait_for(queue.get(), IDLE_BATCH_S)
                except TimeoutError:
                    yield []
                    continue
                batch: list[Quote | Bar | DepthUpdate] = [first]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                if max_events is not None:
                    kept: list[Quote | Bar | DepthUpdate] = []
                    for item in batch:
                        if type(item) is not DepthUpdate:
                            if seen >= max_events:
                                break
                            seen += 1
                        kept.append(item)
                    while kept and type(kept[-1]) is DepthUpdate and seen >= max_events:
                        kept.pop()  # a book whose quote is not handed out stays with it
                    batch = kept
                yield batch
        finally:
            for task in pumps:
                task.cancel()
            for task in pumps:
                with contextlib.suppress(BaseException):
                    await task

    def streams_l2(self, symbol: str) -> bool | None:
        """Whether the symbol's feed streams an L2 book at all (market_data source "book");
        None: no feed known for it."""
        feed = self.feeds.get(self._venue_of.get(symbol, ""))
        return None if feed is None else getattr(feed, "source", None) == "book"

    def depth_of(self, symbol: str) -> Any:
        """The symbol's latest validated L2 depth (a "book" feed, synced), else None."""
        feed = self.feeds.get(self._venue_of.get(symbol, ""))
        return None if feed is None else feed.depth(symbol)

    def event_now(self) -> int | None:
        """The market's time now: the stamp of the quote accepted last, on any venue, plus
        the time elapsed since it was received, on a clock no one steps (the wall clock
        before any quote). Stepped back by NTP, the wall clock held the engine's clock still
        for as long as the step (a pending approval outlived its time to live, a silent feed
        never went stale); stepped forward, it expired approvals, re-armed breakers and began
        the next UTC day early. The last received, not the latest stamped: a venue that
        stamped one quote a minute ahead and then fell silent must not hold the clock ahead."""
        latest, now = None, None
        for feed in self.feeds.values():
            seen = getattr(feed, "last_accepted", None)
            if seen is not None and (latest is None or seen[1] > latest):
                latest, now = seen[1], feed.market_now()
        return time.time_ns() if now is None else now

    def venue_now(self, venue: str) -> int | None:
        """``venue``'s own clock now (its feed's ``market_now``), None before its first quote."""
        for name, feed in self.feeds.items():
            if getattr(feed, "venue", name) == venue:
                market_now = getattr(feed, "market_now", None)
                return market_now() if market_now is not None else None
        return None

    def venue_clocks(self) -> tuple[dict[str, int], dict[str, str]]:
        """Each venue's clock now (its feed's ``market_now``: the stamp of the quote it
        accepted last plus the time since its receipt, on a clock no one steps; a venue with no
        quote yet is left out) and the venue of each symbol, for the core, which ages each
        quote on its own venue's clock (EngineCore.set_venue_clocks): the engine's one clock
        runs with whichever venue's is ahead (event_now), and a venue stamping seconds ahead
        of this machine made every other venue's fresh quotes look that much older."""
        clocks: dict[str, int] = {}
        names: dict[str, str] = {}  # the feed's key -> the venue its quotes name
        for name, feed in self.feeds.items():
            names[name] = venue = getattr(feed, "venue", name)
            market_now = getattr(feed, "market_now", None)
            now = market_now() if market_now is not None else None
            if now is not None:
                clocks[venue] = now
        venue_of = {s: names[v] for s, v in self._venue_of.items() if v in names}
        return clocks, venue_of

    def market_gate(self, symbol: str) -> str | None:
        """Why ``symbol``'s market data cannot be trusted for an order now (None: it can)."""
        venue = self._venue_of.get(symbol, "")
        feed = self.feeds.get(venue)
        if feed is None:
            return f"no market data feed for {symbol}"
        if feed.is_synced(symbol):
            return None
        st = feed.state.get(symbol)
        why = (st.reason if st is not None else "") or "no fresh data yet"
        return f"market data for {symbol} on {venue} is unsynced ({why})"

    def is_synced(self, venue: str) -> Callable[[str], bool] | None:
        feed = self.feeds.get(venue)
        return None if feed is None else feed.is_synced

    def resyncs(self, venue: str) -> int:
        """How often ``venue``'s feed became synced again (the venue broker reconciles then)."""
        feed = self.feeds.get(venue)
        return int(getattr(feed, "resyncs", 0)) if feed is not None else 0

    def status(self) -> dict[str, dict[str, Any]]:
        out = {name: feed.status() for name, feed in self.feeds.items()}
        if self.recorder is not None:
            for name, st in out.items():
                st["recording"] = self.recorder.venue_status(name)
        return out

    async def close(self) -> None:
        for feed in self.feeds.values():
            with contextlib.suppress(Exception):
                await feed.close()
        for ex in self._own_exchanges:
            with contextlib.suppress(Exception):
                await ex.close()
        self._own_exchanges = []
        if self.recorder is not None:  # the feeds are closed: write what they received
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.recorder.stop)
