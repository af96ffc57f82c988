"""The async shell around the core: feed, journal, broker, restore, and event fan-out.

The core decides; this module does the I/O in the order the design requires: an order intent is
committed to the journal before the broker sees it, and when the journal cannot write, no order
is sent at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.config import Config
from engine.core import EngineCore, SubmitOrder
from engine.events import (
    DecisionMade,
    EngineEvent,
    IntentChecked,
    OrderUpdated,
    SessionChanged,
)
from engine.journal import Journal, JournalError, read_rows
from engine.marketdata.pacing import paced
from engine.marketdata.replay import BarReplay, QuoteReplay
from engine.marketdata.simulated import SimulatedMarket, resolve_start_ns
from engine.paper_broker import PaperBroker
from engine.portfolio import Portfolio
from engine.strategies.registry import build_strategies
from engine.types import (
    NS_PER_SECOND,
    Bar,
    Fill,
    Instrument,
    Liquidity,
    Order,
    OrderStatus,
    OrderUpdate,
    Quote,
)

JOURNAL_FILE = "journal.sqlite"


@dataclass
class RestoredState:
    """What the journal says the engine had when it last stopped."""

    session: int = 0
    starting_cash: float | None = None
    fills: list[Fill] = field(default_factory=list)
    open_orders: list[Order] = field(default_factory=list)
    unacknowledged: list[Order] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    peak_equity: float | None = None
    day_start_equity: float | None = None
    marks_ts: int | None = None
    last_ts: int = 0


def restore_state(journal_path: Path) -> RestoredState:
    """Read the journal once and rebuild cash, positions, open orders and last marks."""
    state = RestoredState()
    if not journal_path.exists():
        return state
    orders: dict[str, Order] = {}
    submitted: dict[str, dict[str, Any]] = {}
    for row in read_rows(journal_path):
        state.last_ts = max(state.last_ts, row.ts)
        p = row.payload
        if row.kind == "session":
            state.session = max(state.session, int(p["session"]))
            if state.starting_cash is None and "starting_cash" in p.get("info", {}):
                state.starting_cash = float(p["info"]["starting_cash"])
        elif row.kind == "fill":
            state.fills.append(Fill.from_dict(p["fill"]))
        elif row.kind == "order":
            order = Order.from_dict(p["order"])
            orders[order.client_order_id] = order
        elif row.kind == "intent" and p.get("outcome") == "submitted":
            submitted[p["intent"]["intent_id"]] = p["intent"]
        elif row.kind == "marks":
            state.marks = {k: float(v) for k, v in p["marks"].items()}
            state.peak_equity = p.get("peak_equity")
            state.day_start_equity = p.get("day_start_equity")
            state.marks_ts = row.ts
    state.open_orders = [o for o in orders.values() if not o.status.is_terminal]
    for intent_id, intent in submitted.items():
        if intent_id not in orders:
            # Durable intent, never acknowledged: the crash came between journal and broker.
            state.unacknowledged.append(_order_from_intent(intent))
    return state


def _order_from_intent(intent: dict[str, Any]) -> Order:
    return Order.from_dict(
        {
            "client_order_id": intent["intent_id"],
            "intent_id": intent["intent_id"],
            "strategy_id": intent["strategy_id"],
            "symbol": intent["symbol"],
            "venue": intent["venue"],
            "side": intent["side"],
            "order_type": intent["order_type"],
            "qty": intent["qty"],
            "limit_price": intent.get("limit_price"),
            "status": OrderStatus.PENDING_NEW,
            "ts_created": intent["ts"],
            "ts_updated": intent["ts"],
            "reduce_only": intent.get("reduce_only", False),
        }
    )


class Engine:
    """One engine: a feed, the core, a paper broker and the journal, run as asyncio tasks."""

    def __init__(
        self,
        cfg: Config,
        data_dir: str | Path | None = None,
        *,
        emit: Callable[[EngineEvent], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.data_dir = Path(data_dir if data_dir is not None else cfg.engine.data_dir)
        self.emit = emit
        self.journal: Journal | None = None
        self.core: EngineCore | None = None
        self.broker: PaperBroker | None = None
        self.restored = RestoredState()
        self._stop = asyncio.Event()
        self._subscribers: list[asyncio.Queue[EngineEvent]] = []
        self.blocked_reason = ""
        self.quotes_processed = 0
        self.started_wall = 0.0
        self._feed: Iterable[Quote | Bar] = ()
        self._history: list[Bar] = []
        self._speed: Any = "max"
        self._start_ns: int | None = None

    @property
    def journal_path(self) -> Path:
        return self.data_dir / JOURNAL_FILE

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Restore from the journal, build the pipeline, and record the session start."""
        cfg = self.cfg
        self.restored = restored = restore_state(self.journal_path)
        session = restored.session + 1
        starting_cash = (
            restored.starting_cash
            if restored.starting_cash is not None
            else cfg.portfolio.starting_cash
        )
        feed, instruments, start_ns = self._build_feed(restored)
        portfolio = Portfolio.restore(
            starting_cash,
            restored.fills,
            restored.marks,
            cfg.portfolio.quote_currency,
            peak_equity=restored.peak_equity,
            day_start_equity=restored.day_start_equity,
            day_ts=restored.marks_ts,
        )
        strategies = build_strategies(cfg.strategies)
        self.broker = PaperBroker(cfg.paper, venue=next(iter(instruments.values())).venue)
        fee_rate = self.broker.fee_rate(Liquidity.TAKER)
        self.core = core = EngineCore(
            cfg, strategies, instruments, portfolio, session=session, fee_rate=fee_rate
        )
        core.now = start_ns
        self.journal = await Journal.open(self.journal_path)
        core.restore(restored.fills, restored.open_orders)
        self.broker.restore(restored.open_orders, start_ns)
        info = {
            "starting_cash": starting_cash,
            "mode": cfg.engine.mode,
            "source": cfg.market.source,
            "restored_fills": len(restored.fills),
            "restored_open_orders": len(restored.open_orders),
        }
        await self._publish([SessionChanged(start_ns, session, "started", info)], durable=True)
        for order in restored.unacknowledged:
            # Never resend: the paper venue did not survive the restart, so the order is void.
            order.status = OrderStatus.CANCELED
            order.reason = (
                "intent was durable but never acknowledged before the restart; not resent"
            )
            order.ts_updated = start_ns
            await self._publish([OrderUpdated(order, start_ns)])
        core.warm_up(self._history)
        self._feed = feed

    def _build_feed(self, restored: RestoredState) -> tuple[Any, dict[str, Instrument], int]:
        market = self.cfg.market
        if market.source == "replay":
            assert market.replay is not None
            rc = market.replay
            replay: BarReplay | QuoteReplay
            if rc.kind == "bars":
                replay = BarReplay(
                    rc.path,
                    rc.symbol,
                    tick_size=rc.tick_size,
                    lot_size=rc.lot_size,
                    min_notional=rc.min_notional,
                )
            else:
                replay = QuoteReplay(
                    rc.path,
                    rc.symbol,
                    tick_size=rc.tick_size,
                    lot_size=rc.lot_size,
                    min_notional=rc.min_notional,
                )
            self._history = replay.history()
            self._speed = rc.speed
            first = replay.events()
            return first, replay.instruments(), 0
        sim_cfg = market.simulated
        start_ns = resolve_start_ns(sim_cfg.start, time.time_ns())
        if restored.last_ts and start_ns <= restored.last_ts:
            # A fixed start would rewind the clock on restart; continue after the last row instead.
            start_ns = restored.last_ts - restored.last_ts % NS_PER_SECOND + NS_PER_SECOND
        marks = {s: p for s, p in restored.marks.items() if s in sim_cfg.symbols}
        sim = SimulatedMarket(sim_cfg, start_ns, start_prices=marks or None)
        self._history = sim.history()
        self._speed = sim_cfg.speed
        self._start_ns = start_ns
        return sim.quotes(), sim.instruments(), start_ns

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self, duration_s: float | None = None, max_events: int | None = None) -> None:
        """Drive the feed until stopped, the duration passes, the events run out or the cap."""
        self.started_wall = time.monotonic()
        deadline = None if duration_s is None else self.started_wall + duration_s
        feed: Iterator[Quote | Bar] = iter(self._feed)
        if max_events is not None:
            feed = _take(feed, max_events)
        stop = self._stop
        stream = paced(feed, self._speed, start_event_ns=self._start_ns)
        try:
            async for batch in stream:
                await self.process(batch)
                if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                    break
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()

    async def process(self, batch: Iterable[Quote | Bar]) -> None:
        """Run a batch of market events through core and broker: the engine's hot path."""
        assert self.core is not None and self.broker is not None
        core, broker = self.core, self.broker
        on_quote, on_bar, broker_quote = core.on_quote, core.on_bar, broker.on_quote
        processed = 0
        for ev in batch:
            if type(ev) is Quote:
                out = on_quote(ev)
                if out is None:
                    continue
                q = ev
            else:
                out = on_bar(ev)
                if out is None:
                    continue
                q = core.quotes[ev.symbol]
            processed += 1
            if out:
                await self._handle(out)
            items = broker_quote(q)
            if items:
                await self._handle(core.on_broker(items))
        self.quotes_processed += processed

    async def stop(self) -> None:
        """Record the session end and flush the journal; safe to call more than once."""
        if self.journal is None:
            return
        core = self.core
        if core is not None and not self.journal.failed:
            with contextlib.suppress(JournalError):
                marks = core._marks_event(core.now)
                await self._publish([marks])
                await self._publish(
                    [SessionChanged(core.now, core.session, "stopped", dict(core.counters))],
                    durable=True,
                )
        with contextlib.suppress(Exception):
            await self.journal.close()
        self.journal = None

    # ------------------------------------------------------------------ event handling

    async def _handle(self, items: list[Any]) -> None:
        events: list[EngineEvent] = []
        for item in items:
            if type(item) is SubmitOrder:
                if events:
                    await self._publish(events)
                    events = []
                await self._submit(item)
            else:
                events.append(item)
        if events:
            await self._publish(events)

    async def _submit(self, sub: SubmitOrder) -> None:
        """Write ahead: the intent row is committed before the broker sees the order."""
        assert self.journal is not None and self.core is not None and self.broker is not None
        try:
            await self.journal.flush()
        except JournalError as exc:
            self._block(f"journal write failed ({exc}); no orders are sent")
            update = self._void(sub.order, "journal write failed; order not sent")
            self.core.on_broker([update])
            return
        updates = self.broker.submit(sub.order, self.core.now)
        await self._handle(self.core.on_broker(updates))

    def _void(self, order: Order, reason: str) -> OrderUpdate:
        order.status = OrderStatus.REJECTED
        order.reason = reason
        return OrderUpdate(order, order.ts_updated)

    def _block(self, reason: str) -> None:
        self.blocked_reason = reason
        if self.core is not None:
            self.core.blocked_reason = reason

    async def _publish(self, events: list[EngineEvent], durable: bool = False) -> None:
        journal = self.journal
        for ev in events:
            if journal is not None and ev.journaled and not journal.failed:
                if type(ev) is DecisionMade and not ev.acts:
                    pass
                else:
                    try:
                        journal.append(ev.kind, ev.ts, ev.payload())
                    except JournalError as exc:
                        self._block(f"journal write failed ({exc}); no orders are sent")
            if self.emit is not None:
                self.emit(ev)
            for q in self._subscribers:
                if q.full():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        q.get_nowait()
                q.put_nowait(ev)
        if durable and journal is not None:
            await journal.flush()

    def subscribe(self, maxsize: int = 10_000) -> asyncio.Queue[EngineEvent]:
        q: asyncio.Queue[EngineEvent] = asyncio.Queue(maxsize=maxsize)
        self._subscribers.append(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[EngineEvent]) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(q)

    # ------------------------------------------------------------------ views

    def summary(self) -> dict[str, Any]:
        """The periodic headless summary: equity, positions, counts and rates."""
        assert self.core is not None
        core = self.core
        p = core.portfolio
        elapsed = max(time.monotonic() - self.started_wall, 1e-9) if self.started_wall else 0.0
        return {
            "session": core.session,
            "equity": round(p.equity, 2),
            "cash": round(p.cash, 2),
            "realized_pnl": round(p.realized_pnl, 2),
            "unrealized_pnl": round(p.unrealized_pnl, 2),
            "fees": round(p.fees_paid, 2),
            "drawdown_pct": round(p.drawdown * 100, 3),
            "positions": {
                s: round(pos.qty, 8) for s, pos in sorted(p.positions.items()) if pos.qty
            },
            "open_orders": len(core.open_orders),
            "quotes": self.quotes_processed,
            "quotes_per_s": round(self.quotes_processed / elapsed, 1) if elapsed else 0.0,
            "quotes_rejected": dict(core.validator.rejected),
            **core.counters,
            "blocked": self.blocked_reason or None,
        }


def _take(it: Iterator[Any], n: int) -> Iterator[Any]:
    for i, item in enumerate(it):
        if i >= n:
            return
        yield item


def describe_event(ev: EngineEvent) -> dict[str, Any] | None:
    """The headless one-line JSON form of a notable event; None for events not worth a line."""
    ts = datetime.fromtimestamp(ev.ts / NS_PER_SECOND, tz=UTC).isoformat(timespec="milliseconds")
    if isinstance(ev, DecisionMade):
        d = ev.decision
        if not ev.acts:
            return None
        return {
            "ts": ts,
            "event": "decision",
            "id": d.decision_id,
            "strategy": d.strategy_id,
            "symbol": d.symbol,
            "action": str(d.action),
            "reason": d.reason,
            "confidence": round(d.confidence, 3),
        }
    if isinstance(ev, IntentChecked):
        i = ev.intent
        line = {
            "ts": ts,
            "event": "order_intent" if ev.outcome == "submitted" else "rejection",
            "id": i.intent_id,
            "decision": i.decision_id,
            "strategy": i.strategy_id,
            "symbol": i.symbol,
            "side": str(i.side),
            "qty": i.qty,
            "ref_price": round(i.ref_price, 8),
            "outcome": ev.outcome,
        }
        if ev.outcome != "submitted":
            line["denied"] = [
                {"check": v.check, "code": v.code, "message": v.message}
                for v in ev.verdicts
                if not v.ok
            ]
        return line
    if isinstance(ev, OrderUpdated):
        o = ev.order
        line = {
            "ts": ts,
            "event": "order",
            "id": o.client_order_id,
            "symbol": o.symbol,
            "side": str(o.side),
            "status": str(o.status),
            "qty": o.qty,
            "filled": o.filled_qty,
            "avg_price": round(o.avg_fill_price, 8),
        }
        if o.reason:
            line["reason"] = o.reason
        return line
    if ev.kind == "fill":
        f = ev.fill  # type: ignore[attr-defined]
        return {
            "ts": ts,
            "event": "fill",
            "order": f.client_order_id,
            "strategy": f.strategy_id,
            "symbol": f.symbol,
            "side": str(f.side),
            "qty": f.qty,
            "price": f.price,
            "fee": round(f.fee, 8),
            "liquidity": str(f.liquidity),
            "realized_pnl": round(ev.realized_pnl, 8),  # type: ignore[attr-defined]
        }
    if ev.kind in ("session", "quotes_rejected", "safety"):
        return {"ts": ts, "event": ev.kind, **ev.payload()}
    return None
