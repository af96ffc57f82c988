"""The outbound heartbeat and systemd's notify protocol: proof of life that stops when the engine
cannot vouch for itself, so a monitor outside the machine raises the alarm.

* :class:`Heartbeat` pings a URL (healthchecks.io style) every ``interval_s`` through aiohttp, on
  its own task: a slow or dead monitor never holds the engine up. A beat goes out only when the
  engine is healthy by :func:`engine.health.health_problem` (journal writing, event loop answering
  within ``max_lag_s`` since the last beat, optionally no kill switch). Unhealthy, it stops (and,
  with ``on_unhealthy = "fail"``, sends one ping to ``URL/fail`` first); healthy again for a whole
  interval, it resumes.
* :class:`SystemdNotifier` speaks systemd's notify protocol when ``NOTIFY_SOCKET`` is set:
  ``READY=1`` once the engine runs, ``WATCHDOG=1`` every quarter ``WATCHDOG_USEC`` by the same
  health rule, ``STATUS=`` a short line, ``STOPPING=1`` when the run ends. The protocol is one
  datagram to a Unix socket, so it is written here (a dozen lines) rather than taken from a
  library: the maintained ones (``sdnotify``, ``systemd-python``) add a dependency, the latter
  a C build, for what ``socket.sendto`` does.

The ping URL usually holds a token: it is never logged, shown or put in an error; the trader
sees the host only (:class:`HeartbeatStatus`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from engine.config import Config, HeartbeatConfig
from engine.health import DEFAULT_MAX_LAG_S, health_problem, loop_ticks
from engine.venues.redact import Redactor

if TYPE_CHECKING:
    from engine.runtime import Companion, Engine

log = logging.getLogger(__name__)

STATUS_EVERY_S = 5.0  # how often STATUS= is refreshed (when it changed) without a watchdog
STATUS_MAX = 200  # characters of a STATUS= line
# The shortest time between two WATCHDOG=1 beats: a WATCHDOG_USEC of a few microseconds (a
# typo, a bogus environment) made the notifier spin, sending tens of thousands of datagrams a
# second from the engine's own loop. systemd cannot be served faster than this anyway.
MIN_BEAT_S = 0.05


class HeartbeatStatus:
    """What the trader sees of the heartbeat: the snapshot's ``counters["heartbeat"]`` and the
    headless summary. ``view`` is a plain dict updated in place on the event loop."""

    def __init__(self, target: str) -> None:
        self.view: dict[str, Any] = {
            "target": target,  # host[:port] of the ping URL; "" without an HTTP heartbeat
            "state": "starting" if target else "off",  # starting | ok | failing | paused
            "paused": "",  # why beats are held back, "" while they go out
            "pings": 0,  # answered with 2xx
            "failures": 0,  # errors, timeouts, non-2xx answers
            "last_ok_ts": 0,  # wall-clock ns of the last answered ping
            "last_error": "",  # the last failure, in words without the URL
            "pauses": 0,  # how many times the beats were held back (each healthy -> unhealthy)
            "systemd": "",  # "" | "notify" | "watchdog 15s"
        }

    def pause(self, why: str) -> bool:
        """Hold the beats back; True when this starts a pause (it was healthy before)."""
        view = self.view
        first = not view["paused"]
        if first:
            view["pauses"] += 1
        view["paused"] = why
        if view["target"]:
            view["state"] = "paused"
        return first

    def resume(self) -> None:
        view = self.view
        if view["paused"]:
            view["paused"] = ""
            if view["target"] and view["state"] == "paused":
                view["state"] = "starting"

    def ok(self) -> None:
        view = self.view
        view["pings"] += 1
        view["last_ok_ts"] = time.time_ns()
        if not view["paused"]:
            view["state"] = "ok"

    def failed(self, why: str) -> None:
        view = self.view
        view["failures"] += 1
        view["last_error"] = why
        if not view["paused"]:
            view["state"] = "failing"

    def summary(self) -> str:
        """One short phrase for the headless summary line and systemd's STATUS."""
        view = self.view
        if view["paused"]:
            return f"paused ({view['paused']})"
        if not view["target"]:
            return view["systemd"] or "off"
        if view["state"] == "failing":
            return f"failing ({view['last_error']})"
        return str(view["state"])


def url_target(url: str) -> str:
    """What of a ping URL may be shown: its host and port, never its path or query (the token)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def fail_url(url: str) -> str:
    """healthchecks.io's "fail" signal for a ping URL: ``/fail`` after the path, query kept."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/fail"))


class Heartbeat:
    """Pings the configured URL while the engine is healthy (see the module doc)."""

    def __init__(self, cfg: HeartbeatConfig, status: HeartbeatStatus, url: str) -> None:
        self.cfg = cfg
        self.shown = status
        self._url = url
        self._target = url_target(url)
        self.timeout_s = min(cfg.timeout_s, cfg.interval_s)  # over before the next is due
        parts = urlsplit(url)
        # Defence in depth: whatever an error's text, the URL and its parts never get out.
        self._redact = Redactor([url, parts.path, parts.query, fail_url(url)])

    def __repr__(self) -> str:  # never the URL
        return f"Heartbeat({self._target}, every {self.cfg.interval_s:g} s)"

    async def run(self, engine: Engine) -> None:
        import aiohttp  # ccxt's dependency; imported by the engines that ping only

        cfg, status = self.cfg, self.shown
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        tick = min(0.25, cfg.interval_s / 4)
        clock = time.monotonic
        inflight: asyncio.Task[None] | None = None
        async with aiohttp.ClientSession(timeout=timeout) as http:
            try:
                worst, due = 0.0, 0.0  # the first beat goes out at the first tick
                seen = ""  # a problem seen at a tick since the last beat was due
                async for lag in loop_ticks(tick):
                    worst = max(worst, lag)
                    # Every tick, not only the one a beat is due at: a disk stuck for most of
                    # an interval, free again at its end, must hold the beat back too.
                    seen = seen or health_problem(engine, worst, cfg.max_lag_s, cfg.stop_on_kill)
                    now = clock()
                    if now < due:
                        if seen:
                            # The next beat is withheld already: shown (and the fail signal
                            # sent) now, not a whole interval later, while the state read "ok".
                            inflight = await self._pause(http, seen, inflight)
                        continue
                    due = now + cfg.interval_s
                    problem = health_problem(engine, worst, cfg.max_lag_s, cfg.stop_on_kill) or seen
                    worst, seen = 0.0, ""
                    if problem:
                        inflight = await self._pause(http, problem, inflight)
                        continue
                    status.resume()
                    if inflight is not None and not inflight.done():
                        status.failed(f"the previous ping is still waiting for {self._target}")
                        continue
                    inflight = asyncio.create_task(self._ping(http, self._url))
            finally:
                if inflight is not None:
                    inflight.cancel()
                    with contextlib.suppress(BaseException):
                        await inflight

    async def _pause(
        self, http: Any, why: str, inflight: asyncio.Task[None] | None
    ) -> asyncio.Task[None] | None:
        """Hold the beats back for ``why``; at the start of a pause, with ``on_unhealthy =
        "fail"``, send the fail signal. Returns the request in flight."""
        if self.shown.pause(why) and self.cfg.on_unhealthy == "fail":
            await self._wait(inflight)
            inflight = asyncio.create_task(self._ping(http, fail_url(self._url)))
        return inflight

    @staticmethod
    async def _wait(task: asyncio.Task[None] | None) -> None:
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await task

    async def _ping(self, http: Any, url: str) -> None:
        """One request; its outcome goes to the status, in words that never hold the URL."""
        import aiohttp

        is_fail = url != self._url
        try:
            async with http.request(self.cfg.method, url) as resp:
                await resp.content.read(4096)  # a monitor answers "OK"; more is not read
                code = resp.status
        except TimeoutError:
            why = f"no answer from {self._target} within {self.timeout_s:g} s"
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror if exc.os_error is not None else None
            why = f"cannot connect to {self._target}: {reason or type(exc).__name__}"
        except aiohttp.ClientError as exc:
            why = f"request to {self._target} failed ({type(exc).__name__})"
        except OSError as exc:
            why = f"request to {self._target} failed ({exc.strerror or type(exc).__name__})"
        except Exception as exc:  # whatever else the client raises: a failed ping, counted
            why = f"request to {self._target} failed ({type(exc).__name__})"
        else:
            if 200 <= code < 300:
                if not is_fail:
                    self.shown.ok()
                return
            why = f"{self._target} answered HTTP {code}"
        why = self._redact.text(why)
        self.shown.failed(f"fail signal: {why}" if is_fail else why)


# ------------------------------------------------------------------------------ systemd


def notify_address(value: str) -> str | bytes | None:
    """The socket address in ``NOTIFY_SOCKET``: a path, or an abstract name (``@name``, sent
    with a leading NUL byte). None for what this engine cannot use (``vsock:``, empty)."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    return None


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds, the most sd_watchdog_enabled advises between two
    WATCHDOG=1 beats (the notifier beats twice as often: see SystemdNotifier.run), or None
    when the watchdog is off or meant for another process."""
    usec = environ.get("WATCHDOG_USEC", "")
    if usec and not (usec.isascii() and usec.isdigit() and len(usec) <= 20):
        # systemd writes a uint64 in ASCII digits; "²" passed isdigit() and then failed int(),
        # a 400-digit one overflowed the division: either stopped the engine's start.
        log.warning(
            "WATCHDOG_USEC is not a number of microseconds (systemd writes one, e.g. 30000000); "
            "not sending WATCHDOG=1"
        )
        return None
    if not usec or int(usec) == 0:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000


class SystemdNotifier:
    """systemd's notify protocol (see the module doc): one datagram per message, never blocking
    (a full socket buffer drops the message; the next beat carries on)."""

    def __init__(
        self,
        address: str | bytes,
        status: HeartbeatStatus,
        *,
        watchdog_s: float | None,
        max_lag_s: float = DEFAULT_MAX_LAG_S,
        stop_on_kill: bool = False,
    ) -> None:
        self.address = address
        self.shown = status
        self.watchdog_s = watchdog_s
        self.max_lag_s = max_lag_s
        self.stop_on_kill = stop_on_kill
        self.sent = 0
        self.lost = 0
        self.warned = False  # the first failure to reach systemd was said (once per run)
        self.shown_address = (
            address if isinstance(address, str) else "@" + address[1:].decode(errors="replace")
        )
        status.view["systemd"] = f"watchdog {watchdog_s:g}s" if watchdog_s else "notify"

    def send(self, *fields: str) -> bool:
        """Send ``fields`` (``KEY=value`` lines) as one datagram; False if it was not taken."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.setblocking(False)
            sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            self.lost += 1
            if not self.warned and not isinstance(exc, BlockingIOError):
                # Under Type=notify systemd waits for READY=1 until TimeoutStartSec, then
                # kills the engine: say once why nothing reaches it (a busy socket is not
                # worth a line: the next beat carries on).
                self.warned = True
                log.warning(
                    "systemd: cannot notify NOTIFY_SOCKET %s (%s); READY=1 and WATCHDOG=1 do "
                    "not reach systemd",
                    self.shown_address,
                    exc.strerror or type(exc).__name__,
                )
            return False
        finally:
            sock.close()
        self.sent += 1
        return True

    def status_line(self, engine: Engine, problem: str) -> str:
        """``STATUS=``: the trading state, the kill switch and the heartbeat, on one line."""
        core = engine.core
        if engine.blocked_reason:
            state = "BLOCKED"
        else:
            state = str(core.safety.trading_state) if core is not None else "starting"
        kill = core.safety.kill.level if core is not None else None
        view = self.shown.view
        # Without an HTTP heartbeat, its pause is this notifier's own: the reason follows.
        beat = self.shown.summary() if view["target"] else view["systemd"]
        line = f"STATUS={state}, kill switch {kill or 'off'}, heartbeat {beat}"
        if problem and problem not in line:
            line += f"; not healthy: {problem}"
        return line[: len("STATUS=") + STATUS_MAX].replace("\n", " ")

    async def run(self, engine: Engine) -> None:
        clock = time.monotonic
        # Beats every quarter WatchdogSec (watchdog_s is half of it): a beat withheld for a
        # short stall then leaves half of WatchdogSec without one, not all of it (systemd
        # restarted a running engine for a stall of max_lag_s); trouble that lasts still
        # withholds every beat, and systemd restarts the engine after WatchdogSec.
        every = max(self.watchdog_s / 2, MIN_BEAT_S) if self.watchdog_s else STATUS_EVERY_S
        # Without an HTTP heartbeat the trader's view of the watch is this notifier's: it
        # says "paused (why)" while the watchdog's beats are withheld, as the heartbeat does
        # (without a watchdog nothing is withheld: STATUS= alone says what is wrong).
        own_status = bool(self.watchdog_s) and not self.shown.view["target"]
        tick = min(0.25, every / 4)
        self.send("READY=1", self.status_line(engine, ""))
        last_status = ""
        try:
            worst, due = 0.0, clock() + every
            seen = ""  # a problem seen at a tick since the last beat was due (see Heartbeat)
            async for lag in loop_ticks(tick):
                worst = max(worst, lag)
                seen = seen or health_problem(engine, worst, self.max_lag_s, self.stop_on_kill)
                now = clock()
                if now < due:
                    if seen:
                        # The next beat is withheld already: shown at once (and STATUS= says
                        # why), not at the beat, while the state still read healthy.
                        if own_status:
                            self.shown.pause(seen)
                        line = self.status_line(engine, seen)
                        if line != last_status and self.send(line):
                            last_status = line
                    continue
                due = now + every
                problem = health_problem(engine, worst, self.max_lag_s, self.stop_on_kill) or seen
                worst, seen = 0.0, ""
                if own_status:
                    if problem:
                        self.shown.pause(problem)
                    else:
                        self.shown.resume()
                line = self.status_line(engine, problem)
                fields = [line] if line != last_status else []
                if self.watchdog_s and not problem:
                    fields.insert(0, "WATCHDOG=1")
                if fields and self.send(*fields):
                    last_status = line
        finally:
            self.send("STOPPING=1", "STATUS=stopping")


# ------------------------------------------------------------------------------ wiring


def attach_watch(engine: Engine, environ: Mapping[str, str] | None = None) -> list[Companion]:
    """Add the heartbeat (with a ``[heartbeat]`` section) and systemd's notifications (with
    ``NOTIFY_SOCKET`` set) to ``engine``'s companions, and its status to the snapshot; returns
    what was added. Raises ConfigError when the ping URL's variable is unset (before any start).
    """
    env = os.environ if environ is None else environ
    cfg: Config = engine.cfg
    hb = cfg.heartbeat
    url = hb.ping_url() if hb is not None else ""
    address = notify_address(env.get("NOTIFY_SOCKET", ""))
    if env.get("NOTIFY_SOCKET") and address is None:
        log.warning("NOTIFY_SOCKET is not a path or an @name; not notifying systemd")
    added: list[Companion] = []
    if hb is None and address is None:
        return added
    status = HeartbeatStatus(url_target(url) if url else "")
    if hb is not None:
        added.append(Heartbeat(hb, status, url))
    if address is not None:
        added.append(
            SystemdNotifier(
                address,
                status,
                watchdog_s=watchdog_interval(env),
                max_lag_s=hb.max_lag_s if hb is not None else DEFAULT_MAX_LAG_S,
                # Never the kill switch (stop_on_kill is the ping's, for the monitor to page):
                # systemd answers a missing WATCHDOG=1 with a restart, which cannot release a
                # latched kill, so the engine went down and came back every WatchdogSec.
                stop_on_kill=False,
            )
        )
    engine.heartbeat = status
    engine.companions.extend(added)
    return added
