"""Showing engine events: the emit sink, subscribers, the recent buffer and the event ``seq``.

Nothing is shown before the journal rows recording it are committed: an event waits in order
behind every row appended before it (:meth:`EventFanout.hold`) and is shown when the journal's
writer reports the commit (:meth:`EventFanout.release`). So nothing a person or a client sees
can be missing from the journal after a crash.

Before the recent buffer come the events of earlier sessions restored from the journal at start
(``history``): a snapshot shows them, the event stream and ``events_since`` never do, so no
client takes one for news.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from engine.events import EngineEvent
from engine.vocabulary import EventKind

RECENT_EVENTS = 5_000
_MARKS = EventKind.MARKS


@dataclass(frozen=True, slots=True)
class AfterCommit:
    """A delivery waiting in the unshown queue (see ``Engine.when_committed``)."""

    deliver: Callable[[], None]


class EventFanout:
    """Committed events out to every view, in journal order; see the module doc."""

    def __init__(self, emit: Callable[[EngineEvent], None] | None = None) -> None:
        self.emit = emit
        self.seq = 0
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        # Earlier sessions' events, oldest first (see the module doc and restore_history).
        self.history: deque[dict[str, Any]] = deque()
        self.events_dropped = 0  # events never shown because the journal failed before them
        # (row seq that must be committed first, event or a delivery), in append order.
        self.unshown: deque[tuple[int, EngineEvent | AfterCommit]] = deque()
        self._subscribers: list[asyncio.Queue[EngineEvent]] = []
        self._dict_subscribers: list[asyncio.Queue[dict[str, Any]]] = []
        # Called with each shown event's dict (not marks): keepers of a view of their own, such
        # as the audit log. They must not raise.
        self.watchers: list[Callable[[dict[str, Any]], None]] = []

    def hold(self, row: int, item: EngineEvent | AfterCommit) -> None:
        """Show ``item`` once journal row ``row`` (and every row before it) is committed."""
        self.unshown.append((row, item))

    def release(self, committed: int) -> None:
        """The journal committed up to row ``committed``: show what waited for it."""
        unshown = self.unshown
        show = self.show
        while unshown and unshown[0][0] <= committed:
            item = unshown.popleft()[1]
            if isinstance(item, AfterCommit):
                item.deliver()
            else:
                show(item)

    def drop_unshown(self) -> list[AfterCommit]:
        """The journal failed: what waited for it never happened as far as anyone saw. Returns
        the deliveries that waited (the caller delivers them once it has said why)."""
        waiting = [item for _, item in self.unshown if isinstance(item, AfterCommit)]
        self.events_dropped += len(self.unshown) - len(waiting)
        self.unshown.clear()
        return waiting

    def show(self, ev: EngineEvent) -> None:
        """Fan one committed event out: the emit sink, subscribers, the recent buffer."""
        kind = ev.kind
        if self.emit is not None:
            try:
                self.emit(ev)
            except Exception:
                # An output sink (stdout, a pipe) failing must never stop journaling or
                # trading decisions; the journal has every event.
                self.emit = None
        for q in self._subscribers:
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(ev)
        self.seq += 1
        if self._dict_subscribers or kind != _MARKS:
            item = {"seq": self.seq, "event": kind, "ts": ev.ts, **ev.payload()}
            self.recent.append(item)
            for dq in self._dict_subscribers:
                dq.put_nowait(item)
            if kind != _MARKS:  # whether or not a client is attached (see watchers)
                for watch in self.watchers:
                    watch(item)

    def restore_history(self, events: Iterable[dict[str, Any]]) -> None:
        """Earlier sessions' events (``RestoredState.history``), shown before this session's."""
        self.history.extend(events)

    def shown(self, newest_first: bool = False) -> Iterator[dict[str, Any]]:
        """The history, then the recent buffer (oldest first unless ``newest_first``): at most
        ``RECENT_EVENTS`` in all, as if the engine had kept running, so the history gives way
        as this session's events come."""
        history, recent = self.history, self.recent
        over = len(history) + len(recent) - (recent.maxlen or RECENT_EVENTS)
        for _ in range(min(over, len(history))):
            history.popleft()
        if newest_first:
            return itertools.chain(reversed(recent), reversed(history))
        return itertools.chain(history, recent)

    def subscribe(self, maxsize: int = 10_000) -> asyncio.Queue[EngineEvent]:
        q: asyncio.Queue[EngineEvent] = asyncio.Queue(maxsize=maxsize)
        self._subscribers.append(q)
        return q

    def subscribe_dicts(self) -> asyncio.Queue[dict[str, Any]]:
        """Events as JSON-able dicts with sequence numbers (the client interface's stream).

        Unbounded on purpose: approvals, safety events and orders are never dropped; a client
        that cannot keep up is the transport's problem (the socket server bounds its own buffer).
        """
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._dict_subscribers.append(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(q)
        with contextlib.suppress(ValueError):
            self._dict_subscribers.remove(q)

    def events_since(self, seq: int) -> list[dict[str, Any]] | None:
        """Events after ``seq`` from the recent buffer; None if they are no longer all there."""
        if not self.recent:
            return [] if seq >= self.seq else None
        first = self.recent[0]["seq"]
        if seq + 1 < first:
            return None
        return [e for e in self.recent if e["seq"] > seq]
