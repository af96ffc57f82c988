"""Market data: the simulated market, replay of recorded data, pacing, and the feed validator.

Every source has the same shape (``MarketSource``): instruments, warm-up history, and a plain
synchronous iterator of events. ``paced`` turns that iterator into timed async batches, and
the engine runs every event through ``QuoteValidator`` at the boundary.

History kept on disk: ``download`` fetches bars (and binance trades) through ccxt into the
``store`` layout (DATA/market/EXCHANGE/SYMBOL/TIMEFRAME/YYYY-MM.csv.gz, resumable), and
``cache`` keeps parsed files as numpy arrays keyed by content hash (docs/marketdata.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from engine.config import MarketConfig
from engine.marketdata.pacing import Speed, default_event_time, paced, speed_factor
from engine.marketdata.replay import BarReplay, QuoteReplay, ReplayError, parse_timestamp_ns
from engine.marketdata.simulated import SimulatedMarket, resolve_start_ns
from engine.marketdata.validate import BAR_REJECT_CODES, QUOTE_REJECT_CODES, QuoteValidator
from engine.types import Bar, Instrument, Quote

__all__ = [
    "BAR_REJECT_CODES",
    "QUOTE_REJECT_CODES",
    "BarReplay",
    "MarketSource",
    "QuoteReplay",
    "QuoteValidator",
    "ReplayError",
    "SimulatedMarket",
    "Speed",
    "default_event_time",
    "open_source",
    "paced",
    "parse_timestamp_ns",
    "resolve_start_ns",
    "source_speed",
    "speed_factor",
]


class MarketSource(Protocol):
    """What the engine needs from any market: the grid, a warm start, and the events."""

    def instruments(self) -> dict[str, Instrument]: ...

    def history(self) -> list[Bar]: ...

    def events(self) -> Iterator[Quote] | Iterator[Bar]: ...


def open_source(
    market: MarketConfig,
    now_ns: int,
    start_prices: dict[str, float] | None = None,
) -> SimulatedMarket | BarReplay | QuoteReplay:
    """Build the configured source. ``now_ns`` is the wall clock (epoch ns) for start = "now"."""
    if market.source == "replay":
        rc = market.replay
        if rc is None:  # the config model already rejects this; keep the type checker honest
            raise ValueError("market.source = 'replay' needs a [market.replay] section")
        if rc.kind == "recording":
            raise ValueError("a recording replays through the engine's source (engine.sources)")
        if rc.kind == "bars":
            return BarReplay(
                rc.path,
                rc.symbol,
                tick_size=rc.tick_size,
                lot_size=rc.lot_size,
                min_notional=rc.min_notional,
            )
        return QuoteReplay(
            rc.path,
            rc.symbol,
            tick_size=rc.tick_size,
            lot_size=rc.lot_size,
            min_notional=rc.min_notional,
        )
    sim = market.simulated
    return SimulatedMarket(sim, resolve_start_ns(sim.start, now_ns), start_prices=start_prices)


def source_speed(market: MarketConfig) -> Speed:
    """The configured pacing speed of the active source, for ``paced``."""
    if market.source == "replay" and market.replay is not None:
        return market.replay.speed
    return market.simulated.speed
