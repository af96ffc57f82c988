"""How the app gets its client, and what runs beside it.

The app only knows the ``Session`` protocol: ``open`` returns an ``EngineClient``, ``run`` is
awaited as a background task for as long as the app lives (the embedded engine's loop, or
nothing for an attached client), and ``close`` stops it all. The embedded session builds the
engine inside the app's own event loop, which is also what lets snapshot tests (which run the
app with ``App.run``) use a real engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from cockpit.client import EngineClient, embedded_engine, in_process_client


class Session(Protocol):
    async def open(self) -> EngineClient: ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...


class ClientSession:
    """An already-connected client (tests, or the attach command's socket client)."""

    def __init__(self, client: EngineClient) -> None:
        self.client = client
        self._closed = False

    async def open(self) -> EngineClient:
        return self.client

    async def run(self) -> None:
        return None

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self.client.close()


class DialSession(ClientSession):
    """A socket client not connected yet (one engine of a fleet): ``open`` waits, with the
    client's own backoff, until the engine answers; ``waiting`` says why it still waits."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.dialler: Any = client  # a SocketClient: connect(retry=True) is not in the protocol

    async def open(self) -> EngineClient:
        await self.dialler.connect(retry=True)
        return self.client

    @property
    def waiting(self) -> str:
        return str(getattr(self.client, "disconnect_reason", "") or "")


class EmbeddedSession:
    """The engine in this process: ``engine.start()`` on open, ``engine.run()`` beside the
    app, and on close ``request_stop()`` then ``engine.stop()`` so the journal is flushed."""

    def __init__(
        self,
        cfg: Any,
        data_dir: str | Path | None = None,
        *,
        free_run: bool = True,
        prepare: Callable[[Any], Awaitable[None]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.data_dir = data_dir
        self.free_run = free_run
        self.prepare = prepare
        self.engine: Any = None
        self.client: Any = None
        self._running: asyncio.Task[None] | None = None
        self._closed = False
        self.error: BaseException | None = None

    async def open(self) -> EngineClient:
        self.engine = embedded_engine(self.cfg, self.data_dir)
        await self.engine.start()
        if self.prepare is not None:
            await self.prepare(self.engine)
        self.client = in_process_client(self.engine)
        return self.client

    async def run(self) -> None:
        if not self.free_run or self.engine is None:
            return
        self._running = asyncio.current_task()
        try:
            await self.engine.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # shown by the app; the journal is still closed on exit
            self.error = exc
            raise

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        engine = self.engine
        if engine is None:
            return
        engine.request_stop("the cockpit was closed")
        task = self._running
        if task is not None and not task.done() and task is not asyncio.current_task():
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), timeout=5)
        if self.client is not None:
            await self.client.close()
        await engine.stop()
