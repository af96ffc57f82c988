"""Where the engine's market data comes from: a simulated market, a replayed file, or venues.

The engine is one :class:`~engine.runtime.Engine` composed of a :class:`MarketSource` and an
:class:`~engine.execution.Execution` (where orders go), both chosen by config. A source gives
the instruments, the start time and warm-up history, then batches of quotes or bars; it also
says what time it is on the market between events (:meth:`MarketSource.event_now`) and whether
a symbol's data can be trusted for an order right now (:meth:`MarketSource.market_gate`).

* ``simulated`` and ``replay`` are :class:`PacedSource`: an iterator of events played at the
  configured speed in the market's own time (the paced feed's clock).
* ``venue`` is :class:`engine.venues.source.VenueSource`: ccxt feeds (websockets, or REST
  polling), stamped in real time, each symbol synced or not.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from engine.marketdata.pacing import EventClock, default_event_time, paced
from engine.marketdata.replay import BarReplay, QuoteReplay
from engine.marketdata.simulated import SimulatedMarket, resolve_start_ns
from engine.types import NS_PER_SECOND, Bar, DepthUpdate, Instrument, Quote

if TYPE_CHECKING:
    from engine.config import Config
    from engine.execution import Execution
    from engine.restore import RestoredState


class MarketSource(Protocol):
    """Market data for the engine; see the module doc."""

    name: str  # "simulated", "replay" or "venue" (shown in the session row and the views)

    async def open(
        self, restored: RestoredState, execution: Execution
    ) -> tuple[dict[str, Instrument], int, list[Bar]]:
        """Instruments, the engine's start time (ns) and warm-up bars. ``execution`` may already
        know the instruments (a venue broker loads its markets first)."""
        ...

    def batches(
        self, max_events: int | None = None
    ) -> AsyncGenerator[Sequence[Quote | Bar | DepthUpdate], None]:
        """Events in batches until the source ends (an empty batch: nothing arrived yet, the
        caller may check its deadline and stop flag); an L2 stream's books come just before
        their quotes."""
        ...

    def event_now(self) -> int | None:
        """The market's time now, between events (None: it moves only with events)."""
        ...

    @property
    def market_gate(self) -> Callable[[str], str | None] | None:
        """Why a symbol's data cannot be trusted for an order now (None: it can), asked for
        every intent; None where the core's own validator judges staleness (a paced feed)."""
        ...

    def status(self) -> dict[str, dict[str, Any]]:
        """Per venue: how its data arrives (the Venues pane's feed column)."""
        ...

    async def close(self) -> None: ...


class PacedSource:
    """A simulated market or a replayed file, played at ``speed`` in the market's own time."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.name: str = cfg.market.source
        self._events: Iterable[Quote | Bar] = ()
        self._speed: Any = "max"
        self._start_ns: int | None = None
        self._clock: EventClock | None = None  # the paced feed's time, while it runs
        self._venues: set[str] = set()

    async def open(
        self, restored: RestoredState, execution: Execution
    ) -> tuple[dict[str, Instrument], int, list[Bar]]:
        market = self.cfg.market
        if (
            market.source == "replay"
            and market.replay is not None
            and (market.replay.kind == "recording")
        ):
            from engine.marketdata.recording import RecordingReplay

            recording = RecordingReplay(market.replay.path, self.cfg.symbols())
            self._speed = market.replay.speed
            self._events = recording.events()
            instruments, start_ns, history = recording.instruments(), 0, recording.history()
        elif market.source == "replay":
            assert market.replay is not None
            rc = market.replay
            kind = BarReplay if rc.kind == "bars" else QuoteReplay
            replay = kind(
                rc.path,
                rc.symbol,
                tick_size=rc.tick_size,
                lot_size=rc.lot_size,
                min_notional=rc.min_notional,
            )
            self._speed = rc.speed
            self._events = replay.events()
            instruments, start_ns, history = replay.instruments(), 0, replay.history()
        else:
            sim_cfg = market.simulated
            start_ns = resolve_start_ns(sim_cfg.start, time.time_ns())
            if restored.last_ts and start_ns <= restored.last_ts:
                # A fixed start would rewind the clock on restart: continue after the last row.
                start_ns = restored.last_ts - restored.last_ts % NS_PER_SECOND + NS_PER_SECOND
            marks = {s: p for s, p in restored.marks.items() if s in sim_cfg.symbols}
            sim = SimulatedMarket(sim_cfg, start_ns, start_prices=marks or None)
            self._speed = sim_cfg.speed
            self._start_ns = start_ns
            self._events = sim.quotes()
            instruments, history = sim.instruments(), sim.history()
        self._venues = {inst.venue for inst in instruments.values()}
        return instruments, start_ns, history

    def events(self) -> Iterator[Quote | Bar]:
        """The unpaced events (tests and benchmarks drive ``Engine.process`` with them)."""
        return iter(self._events)

    async def batches(
        self, max_events: int | None = None
    ) -> AsyncGenerator[Sequence[Quote | Bar | DepthUpdate], None]:
        events: Iterator[Quote | Bar] = iter(self._events)
        if max_events is not None:
            events = _take(events, max_events)
        self._clock = clock = EventClock(self._speed)
        stream = paced(
            events,
            self._speed,
            event_time=_event_time,
            start_event_ns=self._start_ns,
            clock=clock,
        )
        try:
            async for batch in stream:
                yield batch
        finally:
            await stream.aclose()

    def event_now(self) -> int | None:
        """The paced feed's clock (a simulated market with a fixed start, or a replay, runs in
        its own time, not today's); None when unpaced ("max")."""
        clock = self._clock
        return None if clock is None else clock.now()

    market_gate = None  # staleness of a paced feed is the core's validator's to judge

    def status(self) -> dict[str, dict[str, Any]]:
        return {venue: {"source": self.name} for venue in sorted(self._venues)}

    async def close(self) -> None:
        return None


def _event_time(event: Any) -> int:
    """A replayed recording's book is due with the quote it came with."""
    return event.ts_ns if type(event) is DepthUpdate else default_event_time(event)


def _take(it: Iterator[Any], n: int) -> Iterator[Any]:
    """The first ``n`` quotes or bars (a recording's books travel with their quotes)."""
    seen = 0
    for x in it:
        if type(x) is not DepthUpdate:
            if seen >= n:
                return
            seen += 1
        yield x


def build_source(
    cfg: Config,
    *,
    feed_kwargs: dict[str, Any] | None = None,
    prepare_exchange: Callable[[str, Any], None] | None = None,
) -> MarketSource:
    """The source ``[market] source`` names (testnet and live always read the venues); the
    options are the venue source's (see ``VenueSource``)."""
    if cfg.market.source == "venue" or cfg.engine.mode in ("testnet", "live"):
        from engine.venues.source import VenueSource

        return VenueSource(cfg, feed_kwargs=feed_kwargs, prepare_exchange=prepare_exchange)
    return PacedSource(cfg)
