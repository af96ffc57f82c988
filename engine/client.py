"""The one interface through which a cockpit reaches an engine: snapshot, events, commands.

Two implementations share it: `InProcessClient` (the engine embedded in the same process) and the
Unix-socket client (attached to a headless daemon). Everything crossing it is plain JSON-able
data, so both behave the same and every pane works over either.

- ``snapshot(trace, curve)`` is pulled by the UI at a bounded rate (about 10 Hz); it is the
  whole state. Ask for the trace and the equity curve in full once (at connect) and then with
  ``trace=0`` and a short ``curve``: events keep the trace up to date.
- ``events()`` pushes what must never be missed (approvals, safety, orders, fills, decisions),
  each with a sequence number; market ticks are not events (the snapshot carries quotes).
- ``command(name, args)`` always answers ``{"ok": bool, "message": str, ...}``.

Nothing crosses it before it is durable: an event arrives only once the journal row recording it
(and every row before it) is committed, and a snapshot is handed over only once everything it
reflects is, so a fill a person saw survives a kill -9 of the engine.

The typed forms of what crosses it are in ``engine.vocabulary`` (``Snapshot``, ``EventDict`` and
``EVENT_SHAPES`` per event kind, ``EventKind``), pinned against a running engine by
tests/test_vocabulary.py.

Snapshot keys (all present, possibly empty):
    seq            last event sequence number included
    now            engine clock, ns
    mode           "paper" | "testnet" | "live";  profile: risk profile name
    venues         {venue: {"connected": bool, "detail": str}}
    trading_state  {"state": "ACTIVE"|"REDUCING"|"HALTED"|"BLOCKED", "by": str, "reason": str,
                    "ts": int}  (BLOCKED: the journal failed, nothing is sent; see blocked)
    blocked        "" or why the engine sends no orders at all (a journal failure)
    kill_switch    {"engaged": bool, "level": str|None, "by": str, "reason": str, "ts": int}
    strategies     [{"id", "kind", "symbols", "approval": "approve"|"auto", "paused": bool,
                     "paused_by": str, "pause_reason": str, "approved": int, "rejected": int,
                     "expired": int, "position": {symbol: qty}}]
    breakers       [{"name", "scope", "tripped": bool, "reason": str, "value": float,
                     "limit": float, "ts": int}]
    limits         {"daily_loss": {"value": float, "limit": float}, "drawdown": {...},
                    "exposure": {...}, "order_rate": {...}}   (value and limit in the same unit)
    portfolio      Portfolio.snapshot(): cash, equity, realized/unrealized PnL, fees, peak, ...
    positions      [{"symbol", "qty", "avg_price", "mark", "unrealized_pnl", "realized_pnl",
                     "share_of_equity", "dust"}]
    orders         [Order.to_dict() for open orders, then the most recent closed ones]
    quotes         {symbol: {"bid", "ask", "bid_size", "ask_size", "ts", "venue"}}
    approvals      [pending approval dicts: see engine.approvals]
    trace          [the newest trace entries as event dicts, newest last]
    equity_curve   [[ts, equity], ...]
    counters       {"decisions", "intents", "denied", "submitted", "fills", ...}
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol


class EngineClient(Protocol):
    async def snapshot(self, trace: int = 500, curve: int = 600) -> dict[str, Any]: ...

    def events(self) -> AsyncIterator[dict[str, Any]]: ...

    async def command(self, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class InProcessClient:
    """The embedded engine, seen through the client interface."""

    def __init__(self, engine: Any, *, client_name: str = "cockpit", role: str = "operator"):
        self.engine = engine
        self.client_name = client_name
        self.role = role
        self._queue = engine.subscribe_dicts()

    async def snapshot(self, trace: int = 500, curve: int = 600) -> dict[str, Any]:
        return await self.engine.durable_snapshot(trace=trace, curve=curve)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self._queue.get()

    async def command(self, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.engine.command(name, args or {}, client=self.client_name, role=self.role)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.engine.unsubscribe(self._queue)


def drain(queue: asyncio.Queue[dict[str, Any]], limit: int = 10_000) -> list[dict[str, Any]]:
    """Take everything queued right now (the UI applies events in batches)."""
    out: list[dict[str, Any]] = []
    while len(out) < limit:
        try:
            out.append(queue.get_nowait())
        except asyncio.QueueEmpty:
            break
    return out
