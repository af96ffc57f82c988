"""The engine on real venues (testnet, live): ccxt brokers, ccxt quote feeds, reconciliation.

:class:`VenueEngine` is :class:`~engine.runtime.Engine` with its I/O swapped: quotes come from
one :class:`~engine.venues.ccxt_market.CcxtMarketFeed` per venue, orders go to one
:class:`~engine.venues.ccxt_broker.CcxtBroker` per venue, and a poll task brings order updates
and fills back. Everything else (core, journal, safety, approvals, commands, snapshot) is the
paper engine's, unchanged. The ordering rules are the same: an intent is committed to the journal
before its order is sent, and the safety gate is checked again at the moment of sending.

At start, after restoring the journal:

* every broker loads its markets (the instruments come from the venue);
* journaled open orders are tracked again, and orders whose intent was durable but never
  acknowledged (or still PENDING_NEW) are **recovered** by client order id, never resent;
* each venue is **reconciled** against the journal; a venue with unresolved blocking
  differences stays halted (its broker refuses submits) until the operator resolves them.

A kill switch at ``halt`` or ``flatten`` also cancels every open order on every venue and
confirms with the venue that none is left (``cancel_all``); the result is in :attr:`venue_kill`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from engine.approvals import expired_at_restart
from engine.config import Config
from engine.core import CancelOrder, EngineCore, SubmitOrder
from engine.events import EngineEvent, SafetyChanged, SessionChanged
from engine.portfolio import Portfolio
from engine.runtime import Engine, RestoredState, UnsupportedMode, restore_state
from engine.strategies.registry import build_strategies
from engine.types import Bar, Fill, Instrument, Order, OrderStatus, Quote

DEFAULT_POLL_S = 1.0


class VenueStartError(RuntimeError):
    """A venue could not be reached or loaded at start; nothing was sent."""


class VenueEngine(Engine):
    """An engine trading through ccxt brokers (testnet or armed live); see the module doc.

    ``broker_kwargs`` go to every :class:`CcxtBroker`; ``prepare`` is called with each broker
    right after it is built (before any request), e.g. to point it at a test server;
    ``feed_kwargs`` go to every :class:`CcxtMarketFeed`; ``poll_s`` is the broker poll period.
    """

    def __init__(
        self,
        cfg: Config,
        data_dir: str | Path | None = None,
        *,
        emit: Callable[[EngineEvent], None] | None = None,
        broker_kwargs: dict[str, Any] | None = None,
        prepare: Callable[[Any], None] | None = None,
        feed_kwargs: dict[str, Any] | None = None,
        poll_s: float = DEFAULT_POLL_S,
    ) -> None:
        super().__init__(cfg, data_dir, emit=emit)
        self.brokers: dict[str, Any] = {}
        self.feeds: dict[str, Any] = {}
        self.reconciliations: dict[str, Any] = {}
        self.venue_kill: dict[str, bool] = {}  # venue -> cancel_all confirmed at the last kill
        self.poll_errors = 0
        self._broker_kwargs = dict(broker_kwargs or {})
        self._prepare = prepare
        self._feed_kwargs = dict(feed_kwargs or {})
        self.poll_s = poll_s
        self._speed = "realtime"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        cfg = self.cfg
        if cfg.engine.mode not in ("testnet", "live"):
            raise UnsupportedMode(f"VenueEngine runs testnet or live, not {cfg.engine.mode!r}")
        from engine.venues.ccxt_market import CcxtMarketFeed
        from engine.venues.factory import build_brokers

        self.restored = restored = restore_state(self.journal_path)
        session = restored.session + 1
        starting_cash = (
            restored.starting_cash
            if restored.starting_cash is not None
            else cfg.portfolio.starting_cash
        )
        from engine.venues.ccxt_broker import BrokerConfigError
        from engine.venues.exchanges import VenueUnavailable

        try:
            brokers = build_brokers(cfg, **self._broker_kwargs)
        except (BrokerConfigError, VenueUnavailable) as exc:
            raise UnsupportedMode(str(exc)) from None
        self.brokers = brokers
        if self._prepare is not None:
            for broker in brokers.values():
                self._prepare(broker)
        try:
            instruments: dict[str, Instrument] = {}
            fee_rate = 0.0
            for broker in brokers.values():
                for sym, inst in (await broker.start()).items():
                    instruments.setdefault(sym, inst)
                for meta in broker.metas.values():
                    fee_rate = max(fee_rate, float(meta.taker_fee or 0.0))
            if not instruments:
                raise UnsupportedMode("no venue offers any of the strategies' symbols")
            for name, broker in brokers.items():
                syms = [s for s, inst in instruments.items() if inst.venue == name]
                if not syms:
                    continue
                feed = CcxtMarketFeed(
                    name,
                    broker.exchange,
                    syms,
                    stale_after_s=cfg.market.validation.stale_after_s,
                    max_spread_bps=cfg.market.validation.max_spread_bps,
                    **self._feed_kwargs,
                )
                self.feeds[name] = feed
                broker.is_synced = feed.is_synced
        except BaseException as exc:
            await self._close_venues()
            if isinstance(exc, BrokerConfigError | VenueUnavailable):
                raise UnsupportedMode(str(exc)) from None
            if isinstance(exc, Exception) and type(exc).__module__.startswith("ccxt"):
                # The venue did not answer at start: say so, fail closed, never trade blind.
                raise VenueStartError(
                    f"a venue did not answer at start ({type(exc).__name__}: {exc}); "
                    "check it with `cockpit venues check --config PATH`"
                ) from None
            raise
        start_ns = max(time.time_ns(), restored.last_ts + 1)
        portfolio = Portfolio.restore(
            starting_cash,
            restored.fills,
            restored.marks,
            cfg.portfolio.quote_currency,
            peak_equity=restored.peak_equity,
            day_start_equity=restored.day_start_equity,
            day_ts=restored.marks_ts,
        )
        self.core = core = EngineCore(
            cfg,
            build_strategies(cfg.strategies),
            instruments,
            portfolio,
            session=session,
            fee_rate=fee_rate or 0.001,
        )
        core.now = start_ns
        core.live_trades = restored.live_trades
        self.seq = restored.last_seq
        from engine.journal import Journal

        self.journal = await Journal.open(self.journal_path)
        acknowledged = [o for o in restored.open_orders if o.status is not OrderStatus.PENDING_NEW]
        pending = [o for o in restored.open_orders if o.status is OrderStatus.PENDING_NEW]
        # Until resolved, an unacknowledged order counts as live for exposure.
        core.restore(restored.fills, [*restored.open_orders, *restored.unacknowledged])
        for name, broker in brokers.items():
            broker.restore(
                [o for o in acknowledged if o.venue == name],
                [f for f in restored.fills if f.venue == name],
            )
        self._restore_safety(restored, start_ns)
        info = {
            "starting_cash": starting_cash,
            "mode": cfg.engine.mode,
            "source": "venues",
            "venues": sorted(brokers),
            "restored_fills": len(restored.fills),
            "restored_open_orders": len(restored.open_orders),
            "unacknowledged": len(restored.unacknowledged) + len(pending),
        }
        await self._publish([SessionChanged(start_ns, session, "started", info)], durable=True)
        stale = expired_at_restart(restored.approval_requests, restored.approval_outcomes, start_ns)
        if stale:
            from engine.events import ApprovalDecided

            await self._publish([ApprovalDecided(start_ns, o) for o in stale])
        await self._commit_safety_state()
        # Durable intents the venue never acknowledged (to our knowledge): look them up by client
        # order id, never resend.
        for name, broker in brokers.items():
            todo = [o for o in [*restored.unacknowledged, *pending] if o.venue == name]
            if todo:
                await self._handle(core.on_broker(await broker.recover(todo)))
        for name in brokers:
            await self.reconcile(name, restored)
        self._feed = ()

    async def reconcile(self, venue: str, restored: RestoredState | None = None) -> Any:
        """Compare the venue with the journal; halt the venue's broker on blocking differences."""
        from engine.venues.reconcile import JournalSnapshot, build

        broker, core = self.brokers[venue], self.core
        assert core is not None
        restored = restored or self.restored
        open_orders = tuple(o for o in core.open_orders.values() if o.venue == venue)
        fills = tuple(f for f in restored.fills if f.venue == venue)
        known = {
            *(o.client_order_id for o in restored.open_orders),
            *(o.client_order_id for o in restored.unacknowledged),
            *(f.client_order_id for f in fills),
            *core.open_orders,
        }
        journal = JournalSnapshot(
            open_orders,
            fills,
            broker.client_ids(),
            broker.venue_order_ids(),
            frozenset(known),
        )
        try:
            snap = await broker.snapshot()
        except Exception as exc:
            reason = f"{venue}: reconciliation failed ({broker.redactor.error(exc)})"
            broker.set_halted(reason)
            self.reconciliations[venue] = None
            return None
        rec = build(snap, journal)
        self.reconciliations[venue] = rec
        broker.set_halted(rec.halt_reason() or None)
        return rec

    async def _close_venues(self) -> None:
        for feed in self.feeds.values():
            with contextlib.suppress(Exception):
                await feed.close()
        for broker in self.brokers.values():
            with contextlib.suppress(Exception):
                await broker.close()

    async def stop(self) -> None:
        await super().stop()
        await self._close_venues()

    # ------------------------------------------------------------------ running

    async def run(self, duration_s: float | None = None, max_events: int | None = None) -> None:
        """Quotes from every venue feed, batched into :meth:`process`, until stopped, the
        duration passes or ``max_events`` quotes were processed; the broker poll runs alongside."""
        self.started_wall = time.monotonic()
        deadline = None if duration_s is None else self.started_wall + duration_s
        queue: asyncio.Queue[Quote] = asyncio.Queue()

        async def pump(feed: Any) -> None:
            async for q in feed.quotes():
                queue.put_nowait(q)

        tasks = [asyncio.create_task(pump(f)) for f in self.feeds.values()]
        tasks.append(asyncio.create_task(self.watch()))
        tasks.append(asyncio.create_task(self.poll_loop()))
        seen = 0
        try:
            while not self._stop.is_set():
                timeout = 0.25
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    timeout = min(timeout, left)
                try:
                    first = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    continue
                batch: list[Quote] = [first]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                if max_events is not None:
                    batch = batch[: max_events - seen]
                seen += len(batch)
                async with self._command_lock:
                    await self.process(batch)
                if max_events is not None and seen >= max_events:
                    break
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    async def process(self, batch: Iterable[Quote | Bar]) -> None:
        """Market events through the core; fills come from the venues (see :meth:`poll_once`)."""
        assert self.core is not None
        core = self.core
        processed = 0
        for ev in batch:
            out = core.on_quote(ev) if type(ev) is Quote else core.on_bar(ev)  # type: ignore[arg-type]
            if out is None:
                continue
            processed += 1
            if out:
                await self._handle(out)
        self.quotes_processed += processed

    async def poll_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(self.poll_s)
            await self.poll_once()

    async def poll_once(self) -> None:
        """One poll of every broker, its updates and fills applied under the command lock."""
        core = self.core
        if core is None:
            return
        async with self._command_lock:
            for broker in self.brokers.values():
                try:
                    items = await broker.poll()
                except Exception:
                    self.poll_errors += 1
                    continue
                if items:
                    await self._handle(core.on_broker(items))

    # ------------------------------------------------------------------ orders

    async def _handle(self, items: list[Any]) -> None:
        kill_at = next(
            (
                i
                for i, it in enumerate(items)
                if type(it) is SafetyChanged and it.what == "kill_switch"
            ),
            None,
        )
        if kill_at is None:
            await super()._handle(items)
            return
        # Cancels first (and confirmed at the venue), then any flatten orders.
        split = next(
            (i for i in range(kill_at + 1, len(items)) if type(items[i]) is SubmitOrder),
            len(items),
        )
        await super()._handle(items[:split])
        await self._kill_venues()
        if split < len(items):
            await super()._handle(items[split:])

    async def _kill_venues(self) -> None:
        core = self.core
        if core is None or core.safety.kill.level not in ("halt", "flatten"):
            return
        for name, broker in self.brokers.items():
            try:
                self.venue_kill[name] = await broker.cancel_all()
            except Exception:
                self.venue_kill[name] = False
            try:
                items = await broker.poll()
            except Exception:
                continue
            if items:
                await super()._handle(core.on_broker(items))

    async def _send(self, order: Order) -> list[Any]:
        """Route a durable, still-allowed order to its venue's broker (write-ahead and the
        safety re-check are the base class's)."""
        broker = self.brokers.get(order.venue)
        if broker is None:
            return [self._void(order, f"not sent: no broker for venue {order.venue!r}")]
        return await broker.submit(order)

    async def _cancel(self, cancel: CancelOrder) -> None:
        assert self.core is not None
        order = self.core.open_orders.get(cancel.client_order_id)
        broker = self.brokers.get(order.venue) if order is not None else None
        if broker is None:
            return
        updates = await broker.cancel(cancel.client_order_id, cancel.reason)
        for update in updates:
            if isinstance(update, Fill):
                continue
            if not update.order.reason:
                update.order.reason = cancel.reason
        if updates:
            await self._handle(self.core.on_broker(updates))

    # ------------------------------------------------------------------ views

    def snapshot(self, trace: int = 500, curve: int = 600) -> dict[str, Any]:
        snap = super().snapshot(trace, curve)
        venues: dict[str, Any] = {}
        for name, broker in self.brokers.items():
            feed = self.feeds.get(name)
            rec = self.reconciliations.get(name)
            status = feed.status() if feed is not None else {}
            synced = all(s["synced"] for s in status.get("symbols", {}).values())
            venues[name] = {
                "connected": bool(status) and synced,
                "detail": broker.halted_reason or ("synced" if synced else "unsynced"),
                "halted": broker.halted_reason,
                "feed": status,
                "reconciliation": rec.to_dict() if rec is not None else None,
                "problems": list(broker.problems)[-10:],
            }
        snap["venues"] = venues
        return snap
