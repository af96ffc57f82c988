"""Where the engine's orders go: the paper broker, or the ccxt venue brokers.

The engine is one :class:`~engine.runtime.Engine` composed of a
:class:`~engine.sources.MarketSource` and an :class:`Execution`, both chosen by config. The
order path is the engine's and nothing overrides it: an intent is committed to the journal,
the safety gate is checked again at the moment of sending, then :meth:`Execution.submit` hands
the order over. An execution only says how an order reaches a venue and how the venue's answers
come back:

* :class:`PaperExecution` fills orders on the engine's own quotes with the paper broker's fill
  model (paper mode, whatever the source: simulated, replay or a venue's live prices);
* :class:`engine.venues.execution.VenueExecution` sends them through ccxt (testnet, armed live),
  polls the venues for updates and fills, reconciles each venue with the journal, cancels at
  the venues on a kill and takes a person's answers to reconciliation differences.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from engine.commands import CommandResult
from engine.core import CancelOrder
from engine.events import OrderUpdated
from engine.paper_broker import PaperBroker
from engine.types import (
    DepthUpdate,
    Instrument,
    Liquidity,
    Order,
    OrderIntent,
    OrderStatus,
    Quote,
)
from engine.vocabulary import ExitCode

if TYPE_CHECKING:
    from engine.config import Config
    from engine.core import EngineCore
    from engine.events import EngineEvent
    from engine.restore import RestoredState
    from engine.sources import MarketSource


class UnsupportedMode(RuntimeError):
    """The configured mode or venue settings cannot run (one line saying why)."""

    exit_code = ExitCode.USAGE


class EngineHost(Protocol):
    """What an execution may use of the engine it is part of."""

    cfg: Config
    core: EngineCore | None
    restored: RestoredState
    command_lock: asyncio.Lock
    # The intents of the orders on their way to a venue now, by client order id: what the
    # last safety check before the send (once an order has its request token) asks about.
    sending: dict[str, OrderIntent]

    @property
    def stopping(self) -> bool: ...

    async def handle(self, items: list[Any]) -> None: ...

    def block(self, reason: str) -> None:
        """Stop sending orders for good (this session), said with ``reason``."""
        ...

    async def publish(self, events: list[EngineEvent], durable: bool = False) -> None: ...

    def event_now(self) -> int | None:
        """The market's time now, between events (None: it moves only with events)."""
        ...

    def venue_now(self, venue: str) -> int | None:
        """``venue``'s own clock now where venues keep their own (venue feeds), else None."""
        ...


class QuoteFills(Protocol):
    """The paper venue's fills on a quote (``PaperBroker.on_quote``); ``only``: the orders the
    quote is for (a bar's exit quote), None for all."""

    def __call__(self, quote: Quote, only: Collection[str] | None = None) -> Sequence[Any]: ...


class Execution(Protocol):
    """Where orders go; see the module doc."""

    @property
    def name(self) -> str:
        """ "paper" or "venues" (the session row's broker)."""
        ...

    @property
    def serialized(self) -> bool:
        """Market batches run under the command lock: an order in flight waits on the network,
        and a reconciliation must never see a venue and a journal that disagree about it."""
        ...

    @property
    def observe(self) -> Callable[[list[Any]], None] | None:
        """Called with the engine's items before they are handled (None: not needed)."""
        ...

    @property
    def after_kill(self) -> Callable[[], Awaitable[None]] | None:
        """Called after a kill switch's events are handled, before any flatten order goes out."""
        ...

    def kill_shortfall(self) -> str:
        """What the kill switch's cancels at the venues left unconfirmed ("" when nothing)."""
        ...

    @property
    def on_quote(self) -> QuoteFills | None:
        """Fills from the engine's own quotes (the paper venue); None where venues fill."""
        ...

    def attach(self, host: EngineHost) -> None: ...

    def on_depth(self, depth: DepthUpdate) -> None:
        """A venue's L2 book for the symbol of the next quote (the paper venue walks it)."""
        ...

    async def open(self) -> None:
        """Build the brokers and load what they need before the source opens."""
        ...

    def venue_exchanges(self) -> dict[str, Any]:
        """Venue name -> a REST exchange object with markets loaded ({} when none)."""
        ...

    def instruments(self) -> dict[str, Instrument]: ...

    def bind(self, source: MarketSource, instruments: dict[str, Instrument]) -> None:
        """Join the source: the paper venue learns its instruments, a venue broker refuses
        orders while its feed is unsynced."""
        ...

    def fee_rate(self) -> float: ...

    def slippage_model(self) -> Callable[..., float] | None: ...

    def live_at_restore(self, restored: RestoredState) -> list[Order]:
        """The journal's orders that count as live for exposure at restart."""
        ...

    def restore(self, restored: RestoredState, now: int) -> None: ...

    async def resume(self, restored: RestoredState, now: int) -> None:
        """After the safety state is restored and the KILL file enforced: settle what the
        journal left open (void, recover, reconcile)."""
        ...

    async def submit(self, order: Order, now: int) -> list[Any]:
        """Send a durable, still-allowed order; its updates and fills."""
        ...

    async def cancel(self, cancel: CancelOrder, now: int) -> list[Any]: ...

    def start_tasks(self) -> None:
        """Start the background duties of a run (polls, venue watch, heartbeats)."""
        ...

    async def stop_tasks(self, clean: bool) -> None:
        """End them (``clean``: the run ended normally, not of an error)."""
        ...

    async def command(self, name: str, args: Any, *, by: str) -> CommandResult: ...

    def venues_view(self, source: MarketSource) -> dict[str, Any]:
        """The snapshot's ``venues`` section."""
        ...

    def session_info(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class PaperExecution:
    """Orders filled by :class:`~engine.paper_broker.PaperBroker` on the engine's quotes.

    One paper venue serves every symbol; each fill carries its order's venue, so paper trading
    on several venues' live prices books each fill where its symbol trades."""

    name = "paper"
    serialized = False
    observe = None
    after_kill = None

    def kill_shortfall(self) -> str:
        return ""  # the paper venue's cancels are the engine's own

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.paper = PaperBroker(cfg.paper)
        self.on_quote: QuoteFills | None = self.paper.on_quote
        self._host: EngineHost | None = None

    def attach(self, host: EngineHost) -> None:
        self._host = host

    def on_depth(self, depth: DepthUpdate) -> None:
        if depth.bids:
            self.paper.on_depth(depth.symbol, depth.bids, depth.asks, depth.ts_ns)
        else:
            self.paper.drop_depth(depth.symbol)

    async def open(self) -> None:
        return None

    def venue_exchanges(self) -> dict[str, Any]:
        return {}

    def instruments(self) -> dict[str, Instrument]:
        return {}

    def bind(self, source: MarketSource, instruments: dict[str, Instrument]) -> None:
        self.paper.venue = next(iter(instruments.values())).venue

    def fee_rate(self) -> float:
        return self.paper.fee_rate(Liquidity.TAKER)

    def slippage_model(self) -> Callable[..., float] | None:
        return self.paper.expected_slippage_bps

    def live_at_restore(self, restored: RestoredState) -> list[Order]:
        return list(restored.open_orders)

    def restore(self, restored: RestoredState, now: int) -> None:
        self.paper.restore(restored.open_orders, now)

    async def resume(self, restored: RestoredState, now: int) -> None:
        """Never resend: the paper venue did not survive the restart, so an intent that was
        durable but never acknowledged is void."""
        host = self._host
        assert host is not None
        for order in restored.unacknowledged:
            order.move_to(
                OrderStatus.CANCELED,
                now,
                "intent was durable but never acknowledged before the restart; not resent",
            )
            await host.publish([OrderUpdated(order, now)])

    async def submit(self, order: Order, now: int) -> list[Any]:
        """The order leaves now on the market's clock (a venue's: the last stamp plus the time
        since it was received; a paced feed's own), not at the stamp of the quote it was decided
        on: quotes already in (a batch behind it, the minutes a person took to approve) came
        before it was sent, and its latency starts when it is sent. (How late the venue's
        quotes arrive is not added: it is measured only against this machine's wall clock,
        which the engine's clock never trusts.)"""
        host = self._host
        core = host.core if host is not None else None
        if host is None or core is None:
            return list(self.paper.submit(order, now))
        venue_now = host.venue_now(order.venue)
        if venue_now is not None:
            # On live venues' data: the order's own venue's clock. The engine's runs with
            # whichever venue's is ahead, and an order sent at another venue's time ahead
            # waited that long for a quote stamped after it (a fill seconds late, at the
            # price then).
            return list(self.paper.submit(order, venue_now))
        quote = core.quotes.get(order.symbol)
        if quote is not None and quote.ts_exchange > now:
            # A bar's protective exit: decided at the bar's open, it meets the execution quote
            # the core made for it inside the bar (engine.exits); the bar arrived at its close.
            return list(self.paper.submit(order, now))
        market = host.event_now()
        if market is not None and market > now:
            now = market
        return list(self.paper.submit(order, now))

    async def cancel(self, cancel: CancelOrder, now: int) -> list[Any]:
        core = self._host.core if self._host is not None else None
        market = core.quotes if core is not None else None
        return list(self.paper.cancel(cancel.client_order_id, now, cancel.reason, market))

    def start_tasks(self) -> None:
        return None

    async def stop_tasks(self, clean: bool) -> None:
        return None

    async def command(self, name: str, args: Any, *, by: str) -> CommandResult:
        return CommandResult(
            False,
            f"{name}: this engine trades on paper; there is no venue reconciliation to resolve",
        )

    def venues_view(self, source: MarketSource) -> dict[str, Any]:
        feeds = source.status()
        if source.name != "venue":
            return {venue: {"connected": True, "detail": source.name} for venue in sorted(feeds)}
        view: dict[str, Any] = {}
        for venue, status in feeds.items():
            synced = all(s["synced"] for s in status.get("symbols", {}).values())
            # No reconciliation, dead-man or venue kill: orders never leave the engine.
            view[venue] = {
                "connected": bool(status) and synced,
                "detail": ("synced" if synced else "unsynced") + " · paper fills",
                "feed": status,
                "paper": True,
            }
        return view

    def session_info(self) -> dict[str, Any]:
        return {"broker": "paper"}

    async def close(self) -> None:
        return None


def build_execution(
    cfg: Config,
    *,
    broker_kwargs: dict[str, Any] | None = None,
    prepare: Callable[[Any], None] | None = None,
    poll_s: float | None = None,
) -> Execution:
    """Paper mode fills on paper whatever the source; testnet and live go to the venues (the
    options are the venue execution's, see ``VenueExecution``)."""
    if cfg.engine.mode in ("testnet", "live"):
        from engine.venues.execution import VenueExecution

        if poll_s is None:
            return VenueExecution(cfg, broker_kwargs=broker_kwargs, prepare=prepare)
        return VenueExecution(cfg, broker_kwargs=broker_kwargs, prepare=prepare, poll_s=poll_s)
    return PaperExecution(cfg)
