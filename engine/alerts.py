"""Alerts: the engine's shown events, sent to a phone, a chat or a program (``[alerts]``).

The dispatcher watches every shown event (``engine.fanout.watchers``: after its journal rows
are committed, so nothing is announced that a crash could take back), turns the few that matter
into alerts (:mod:`engine.alert_text`) and hands each to the routes that asked for its kind.
Delivery (:mod:`engine.alert_send`, through apprise) runs in its own tasks beside the engine (a
``Companion``), never in the engine's path:

* Each destination has three bounded lanes, each delivered on its own: a kill switch engaging
  and a blocked journal; the other safety alerts (breakers, venues, a kill's release); and the
  rest (approvals, fills, summaries). A flood of fills or breaker alerts, or a destination
  that never answers, cannot delay a kill alert elsewhere, nor at the same destination: it
  never waits for a breaker alert's delivery (a command hook's may take its whole timeout),
  nor is it the one a lane full of breaker alerts drops. A full lane drops the alert, counted
  and shown; the watcher never waits.
* A route's rate limit holds approvals and fills beyond ``max_per_window`` in ``window_s``
  and sends them as one message when the window has room ("7 more fills in the last 60 s: …").
  Safety alerts are never held.
* When a run ends, the lanes get a bounded final flush (``FINAL_FLUSH_S``), so a kill engaged
  just before the stop still goes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.alert_send import Delivery, Destination, build_destinations
from engine.alert_text import Alert, AlertText, source_events
from engine.vocabulary import AlertKind, AlertLastView, AlertsView

if TYPE_CHECKING:
    from engine.config import AlertsConfig, Config
    from engine.runtime import Engine

FINAL_FLUSH_S = 2.0  # the most a run's end waits for the alerts still queued
TICK_S = 0.25  # how often held bursts and the daily summary are looked at


class Lane:
    """One destination's queue for one kind of alert: bounded; the alerts that go first (a
    kill, a blocked journal: :attr:`Alert.first`) wait ahead of the others, in their order;
    an alert whose delivery the final flush had to cut off goes back to the front."""

    def __init__(self, maxsize: int) -> None:
        self.items: deque[Alert] = deque()
        self.maxsize = maxsize
        self.leading = 0  # how many of ``items``, from the front, go first
        # The alert being delivered and its delivery (see AlertDispatcher._send).
        self.inflight: tuple[Alert, asyncio.Future[Delivery]] | None = None
        self._ready = asyncio.Event()

    def put(self, alert: Alert) -> bool:
        if len(self.items) >= self.maxsize:
            return False
        if alert.first:
            self.items.insert(self.leading, alert)
            self.leading += 1
        else:
            self.items.append(alert)
        self._ready.set()
        return True

    def pop(self) -> Alert:
        """The next alert to deliver (IndexError when none waits)."""
        alert = self.items.popleft()
        if self.leading:
            self.leading -= 1
        return alert

    async def take(self) -> Alert:
        while not self.items:
            self._ready.clear()
            await self._ready.wait()
        return self.pop()

    def put_back(self, alert: Alert) -> None:
        if alert.first:
            self.items.appendleft(alert)
            self.leading += 1
        else:  # the front of the rest: behind any that go first
            self.items.insert(self.leading, alert)
        self._ready.set()


@dataclass
class Target:
    """A destination with its three lanes and its own counts (``cockpit alerts test`` and the
    final flush use them)."""

    dest: Destination
    first: Lane  # a kill switch engaging, a blocked journal
    urgent: Lane  # the other safety alerts
    normal: Lane
    sent: int = 0
    failed: int = 0
    last_detail: str = ""

    @property
    def lanes(self) -> tuple[Lane, Lane, Lane]:
        """In the order the final flush serves them."""
        return (self.first, self.urgent, self.normal)

    def lane(self, alert: Alert) -> Lane:
        if alert.first:
            return self.first
        return self.urgent if alert.urgent else self.normal


@dataclass
class Held:
    """Alerts of one kind a route's rate limit held back: summed up in one message."""

    first_ns: int
    lines: list[str] = field(default_factory=list)
    count: int = 0


class Window:
    """A route's rate limit for one kind: at most ``limit`` alerts in any ``window_s``."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.times: deque[float] = deque()
        self.held: Held | None = None

    def _room(self, now: float) -> bool:
        times = self.times
        while times and now - times[0] >= self.window_s:
            times.popleft()
        return len(times) < self.limit

    def admit(self, alert: Alert, now: float) -> bool:
        """True: it may go now. False: it is held for the burst's summary."""
        if self.held is None and self._room(now):
            self.times.append(now)
            return True
        if self.held is None:
            self.held = Held(time.monotonic_ns())
        held = self.held
        held.count += 1
        if len(held.lines) < 10:
            held.lines.append(alert.line)
        return False

    def due(self, now: float, force: bool = False) -> Held | None:
        """The held burst, once the window has room for its summary (or at once: ``force``)."""
        if self.held is None or not (force or self._room(now)):
            return None
        held, self.held = self.held, None
        self.times.append(now)
        return held


@dataclass
class Route:
    name: str
    kinds: frozenset[str]
    limit: int
    window_s: float
    targets: list[Target]
    windows: dict[str, Window] = field(default_factory=dict)

    def window(self, kind: str) -> Window:
        w = self.windows.get(kind)
        if w is None:
            w = self.windows[kind] = Window(self.limit, self.window_s)
        return w


class AlertDispatcher:
    """Watches shown events, routes alerts, delivers them beside the engine (see the module
    doc). ``observe`` is the fan-out watcher (cheap, never raises); ``run`` is the Companion;
    ``view`` the snapshot's ``alerts``. ``wall`` (tests) is the clock of the daily summary."""

    def __init__(
        self,
        cfg: AlertsConfig,
        *,
        mode: str = "paper",
        engine_info: dict[str, Any] | None = None,
        wall: Callable[[], float] = time.time,
        hidden_env: frozenset[str] = frozenset(),
    ) -> None:
        self.cfg = cfg
        self.text = AlertText(f"[{mode}]")
        info = {"mode": mode, **(engine_info or {})}
        self.routes: list[Route] = []
        for name, kinds, settings, dests in build_destinations(cfg, info, hidden_env):
            size = cfg.queue_size
            targets = [Target(d, Lane(size), Lane(size), Lane(size)) for d in dests]
            self.routes.append(
                Route(name, kinds, settings.max_per_window, settings.window_s, targets)
            )
        self.targets = [t for r in self.routes for t in r.targets]
        self.wanted = frozenset(k for r in self.routes for k in r.kinds)
        self._read = source_events(self.wanted)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.errors = 0  # events the formatter could not read (never raised into the engine)
        self.last: AlertLastView | None = None
        # Called with (alert, target label, delivery, wall ns when done): the bench's and
        # the tests' window into each delivery.
        self.on_delivery: Callable[[Alert, str, Delivery, int], None] | None = None
        self._wall = wall
        self._daily_at = _minutes(cfg.daily_summary_utc)
        self._last_tick_wall = wall()
        self._engine: Engine | None = None

    # ------------------------------------------------------------------ in: events

    def observe(self, item: dict[str, Any]) -> None:
        """The fan-out watcher: cheap, never raises, never waits."""
        if item.get("event") not in self._read:
            return
        try:
            alert = self.text.describe(item)
            if alert is not None and alert.kind in self.wanted:
                self.submit(alert)
        except Exception:
            self.errors += 1

    def submit(self, alert: Alert, now: float | None = None) -> None:
        """Route one alert: each route that wants its kind, through its rate limit, into each
        destination's lane (or counted as dropped when the lane is full)."""
        now = time.monotonic() if now is None else now
        for route in self.routes:
            if alert.kind not in route.kinds:
                continue
            if alert.urgent or route.window(alert.kind).admit(alert, now):
                self._enqueue(route, alert)

    def _enqueue(self, route: Route, alert: Alert, stands_for: int = 1) -> None:
        """Into each destination's lane; a full lane drops it, counted as the alerts it
        stands for (a burst's summary: every alert it held)."""
        for target in route.targets:
            if not target.lane(alert).put(alert):
                self.dropped += stands_for

    def release_held(self, now: float | None = None, force: bool = False) -> int:
        """Send each held burst whose window has room again (all of them: ``force``) as one
        message. Returns how many summaries went into the lanes."""
        now = time.monotonic() if now is None else now
        released = 0
        for route in self.routes:
            for kind, window in route.windows.items():
                held = window.due(now, force)
                if held is None:
                    continue
                span = (time.monotonic_ns() - held.first_ns) / 1e9
                alert = self.text.burst(AlertKind(kind), held.lines, held.count, span)
                self._enqueue(route, alert, held.count)
                released += 1
        return released

    # ------------------------------------------------------------------ out: delivery

    async def run(self, engine: Engine) -> None:
        """The Companion: deliver until cancelled, then a bounded final flush."""
        self._engine = engine
        tasks = [
            asyncio.create_task(self._deliver(target, lane))
            for target in self.targets
            for lane in target.lanes
        ]
        tasks.append(asyncio.create_task(self._tick()))
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            await self.flush(FINAL_FLUSH_S)
            raise

    async def _deliver(self, target: Target, lane: Lane) -> None:
        while True:
            alert = await lane.take()
            await self._send(target, lane, alert, keep=True)

    async def _send(self, target: Target, lane: Lane, alert: Alert, *, keep: bool) -> None:
        """One delivery, in a task of its own. Cancelled with ``keep`` (the run ended), it goes
        on and the final flush takes its result: cut off, a post the server already had would
        be sent twice. Without ``keep`` (the flush's deadline) it is cut off and put back."""
        task = asyncio.ensure_future(self._attempt(target, alert))
        lane.inflight = (alert, task)
        try:
            delivery = await asyncio.shield(task)
        except asyncio.CancelledError:
            if not keep:
                task.cancel()
                lane.inflight = None
                lane.put_back(alert)
            raise
        lane.inflight = None
        self._record(target, alert, delivery)

    @staticmethod
    async def _attempt(target: Target, alert: Alert) -> Delivery:
        try:
            return await target.dest.send(alert)
        except Exception as exc:  # a destination must never take delivery down
            return Delivery(False, f"error ({type(exc).__name__})")

    def _record(self, target: Target, alert: Alert, delivery: Delivery) -> None:
        done = time.time_ns()
        if delivery.ok:
            self.sent += 1
            target.sent += 1
        else:
            self.failed += 1
            target.failed += 1
        target.last_detail = delivery.detail
        self.last = {"ts": done, "kind": str(alert.kind), "title": alert.title, "ok": delivery.ok}
        if self.on_delivery is not None:
            with contextlib.suppress(Exception):
                self.on_delivery(alert, target.dest.label, delivery, done)

    async def flush(self, within_s: float) -> None:
        """Deliver what is queued (held bursts included), safety lanes first, each destination
        on its own; whatever is not through within ``within_s`` stays queued."""
        self.release_held(force=True)

        async def drain(target: Target) -> None:
            for lane in target.lanes:
                if lane.inflight is not None:  # left going when the run ended
                    alert, task = lane.inflight
                    try:
                        delivery = await asyncio.shield(task)
                    except asyncio.CancelledError:
                        task.cancel()
                        lane.inflight = None
                        lane.put_back(alert)
                        raise
                    lane.inflight = None
                    self._record(target, alert, delivery)
                while lane.items:
                    await self._send(target, lane, lane.pop(), keep=False)

        busy = [t for t in self.targets if any(lane.items or lane.inflight for lane in t.lanes)]
        if not busy:
            return
        tasks = [asyncio.create_task(drain(t)) for t in busy]
        _, pending = await asyncio.wait(tasks, timeout=within_s)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task

    async def _tick(self) -> None:
        """Held bursts whose window opened, and the daily summary when its minute comes."""
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.release_held()
                self.check_daily()
            except Exception:  # counted; delivery goes on
                self.errors += 1

    def check_daily(self) -> bool:
        """Send the daily summary if its UTC minute was passed since the last look."""
        now = self._wall()
        before, self._last_tick_wall = self._last_tick_wall, now
        at = self._daily_at
        if at is None or AlertKind.DAILY_SUMMARY not in self.wanted or now <= before:
            return False
        day = 86_400.0
        due = (now // day) * day + at * 60.0  # today's moment
        if due > now:
            due -= day  # it is yesterday's that could have been passed
        if not before < due <= now:
            return False
        engine = self._engine
        summary: dict[str, Any] = {}
        if engine is not None and engine.core is not None:
            with contextlib.suppress(Exception):
                summary = engine.summary()
        alert = self.text.daily(summary, int(now * 1e9), self.counts_line())
        self.submit(alert)
        return True

    # ------------------------------------------------------------------ views

    @property
    def queued(self) -> int:
        return sum(
            len(lane.items) + (lane.inflight is not None) for t in self.targets for lane in t.lanes
        )

    def counts_line(self) -> str:
        line = f"alerts {self.sent} sent"
        if self.failed:
            line += f" · {self.failed} failed"
        if self.dropped:
            line += f" · {self.dropped} dropped"
        return line

    def view(self) -> AlertsView:
        return {
            "routes": len(self.targets),
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self.dropped,
            "queued": self.queued,
            "last": self.last,  # replaced on each delivery, never changed in place
        }


def _minutes(hhmm: str | None) -> int | None:
    if hhmm is None:
        return None
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def build_dispatcher(cfg: Config, data_dir: str) -> AlertDispatcher | None:
    """The engine's dispatcher for ``cfg`` (None without ``[alerts]``); ConfigError (one line
    per problem, never a secret) when a destination cannot be built."""
    if cfg.alerts is None:
        return None
    info = {"profile": cfg.profile, "data_dir": data_dir}
    return AlertDispatcher(
        cfg.alerts, mode=cfg.engine.mode, engine_info=info, hidden_env=secret_env_names(cfg)
    )


def secret_env_names(cfg: Config) -> frozenset[str]:
    """The environment variables that hold this engine's secrets: each venue's keys, the
    heartbeat's URL and the alerts' URLs (kept from the command hook)."""
    names = {
        env
        for venue in cfg.venues.values()
        for env in (venue.api_key_env, venue.secret_env, venue.password_env)
        if env
    }
    if cfg.heartbeat is not None and cfg.heartbeat.url_env:
        names.add(cfg.heartbeat.url_env)
    if cfg.alerts is not None:
        names.update(cfg.alerts.urls_env)
        for route in cfg.alerts.routes.values():
            names.update(route.urls_env)
    return frozenset(names)


@dataclass(frozen=True)
class RouteCheck:
    route: str
    destination: str  # redacted
    ok: bool
    detail: str


async def send_test(cfg: Config) -> list[RouteCheck]:
    """One test alert to every destination of every route, all at once; each result (for
    ``cockpit alerts test``). ConfigError when the alerts cannot be built."""
    dispatcher = build_dispatcher(cfg, cfg.engine.data_dir)
    if dispatcher is None:
        return []
    now = time.time_ns()

    async def one(route: Route, target: Target) -> RouteCheck:
        alert = dispatcher.text.test(route.name, now)
        try:
            delivery = await target.dest.send(alert)
        except Exception as exc:
            delivery = Delivery(False, f"error ({type(exc).__name__})")
        return RouteCheck(route.name, target.dest.label, delivery.ok, delivery.detail)

    return list(await asyncio.gather(*(one(r, t) for r in dispatcher.routes for t in r.targets)))
