"""Delivering one alert to one destination: an apprise URL, or a program's stdin.

apprise (one well-kept library for Telegram, Slack, Discord, email, ntfy, webhooks and ~100
more) does the sending; this module only builds its objects, bounds each delivery in time, and
keeps secrets out of sight: a destination is named by :func:`engine.alert_urls.redact`, and
a failure's reason from a URL with a token is scrubbed of that URL's pieces, in every form
they may come back in (:func:`engine.alert_urls.secret_fragments`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from engine.alert_text import Alert
from engine.alert_urls import (
    destination_problems,
    env_url,
    quiet_apprise,
    redact,
    route_specs,
    secret_fragments,
)
from engine.venues.redact import Redactor

if TYPE_CHECKING:
    from engine.config import AlertCommandConfig, AlertsConfig

KILL_GRACE_S = 1.0  # after a hook is killed on timeout, how long to wait for it to be reaped
# systemd's notify variables: kept from the hook as sd_notify(unset_environment) keeps them from
# a service's children. A hook that speaks the protocol (systemd-notify, a daemon it starts)
# would otherwise send WATCHDOG=1 or READY=1 in the engine's name (NotifyAccess=all) and keep
# a stuck engine looking alive to the watchdog.
SYSTEMD_NOTIFY_ENV = frozenset({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"})
# Per apprise destination and lane (kill alerts, other safety alerts, the rest), the most
# delivery threads alive at once. A delivery that outlives its timeout keeps its thread (a
# server that dribbles bytes defeats the socket timeouts); past this many, the lane fails fast
# instead of taking another.
MAX_DELIVERY_THREADS = 2


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery's outcome; ``detail`` is safe to show (no secret in it)."""

    ok: bool
    detail: str


class Destination(Protocol):
    """Where alerts of a route go: one apprise URL or the command hook."""

    route: str
    label: str  # safe to show

    async def send(self, alert: Alert) -> Delivery: ...


class AppriseDestination:
    """One apprise URL (one ``Apprise`` object, so each URL's result is its own), each delivery
    bounded by ``timeout_s`` (the socket timeouts too, so no worker thread outlives it long).

    apprise's own async path runs a plugin in one process-wide pool of a few threads: a
    destination whose server never finishes its answer would take a thread per alert until that
    pool is full, and then a kill alert to every other destination waits behind it. So each
    destination runs its deliveries in threads of its own (daemon: a hung one never holds the
    process at exit), at most :data:`MAX_DELIVERY_THREADS` alive at once per lane, so fills
    hung on a slow server never take the threads a kill alert needs."""

    def __init__(self, route: str, url: str, timeout_s: float, env: str | None = None) -> None:
        apprise = quiet_apprise()
        self.route = route
        self.timeout_s = timeout_s
        self.label = redact(url) + (f" (${env})" if env else "")
        # The venues' redactor over the URL's pieces: their URL- and JSON-escaped forms too.
        self._redact = Redactor(secret_fragments(url)) if env else None
        # No apprise deadline: with none, its notify() runs the plugin in the calling thread
        # (ours) instead of handing it to the shared pool; the time bound is ours (send).
        asset = apprise.AppriseAsset(service_timeout=0)
        plugin = apprise.Apprise.instantiate(url, asset=asset)
        if plugin is None:
            raise ValueError(f"apprise has no service for {self.label}")
        for name in ("socket_connect_timeout", "socket_read_timeout"):
            if hasattr(plugin, name):
                setattr(plugin, name, timeout_s)
        self._apprise = apprise.Apprise(asset=asset)
        self._apprise.add(plugin)
        # Delivery threads alive by lane (urgent or not); a hung one counts until it returns.
        self._threads = {(f, u): 0 for f in (True, False) for u in (True, False)}
        self._threads_lock = threading.Lock()

    @property
    def threads(self) -> int:
        """Delivery threads of this destination still alive (tests, the bench)."""
        return sum(self._threads.values())

    async def send(self, alert: Alert) -> Delivery:
        lane = (alert.first, alert.urgent)
        with self._threads_lock:
            alive = self._threads[lane]
            if alive >= MAX_DELIVERY_THREADS:
                return Delivery(False, f"{alive} earlier deliveries still hanging; not tried")
            self._threads[lane] = alive + 1
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)

        def deliver() -> None:
            result: Any = None
            error: BaseException | None = None
            try:
                result = self._apprise.notify(
                    body=alert.body or alert.title,
                    title=alert.title,
                    notify_type=alert.notify_type,
                    # Plain text, said so: apprise then escapes it for each service (a reason
                    # with "<" or "&" broke Telegram's HTML, so the alert was refused; "<!here>"
                    # would have pinged a whole Slack channel).
                    body_format="text",
                )
            except BaseException as exc:  # reported to the loop, never raised in the thread
                error = exc
            finally:
                with self._threads_lock:
                    self._threads[lane] -= 1
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
                loop.call_soon_threadsafe(settle, result, error)

        try:
            threading.Thread(target=deliver, name="alert-delivery", daemon=True).start()
        except RuntimeError as exc:  # no thread could be started
            with self._threads_lock:
                self._threads[lane] -= 1
            return Delivery(False, f"error ({type(exc).__name__})")
        try:
            result = await asyncio.wait_for(asyncio.shield(done), self.timeout_s)
        except TimeoutError:
            return Delivery(False, f"no answer within {self.timeout_s:g} s")
        except Exception as exc:  # never str(exc): a library's message may carry the URL
            return Delivery(False, f"error ({type(exc).__name__})")
        if result:
            return Delivery(True, "delivered")
        return Delivery(False, self._why(result))

    def _why(self, result: Any) -> str:
        """apprise's own words for a failure (its 2.x result carries them), scrubbed."""
        why = "not delivered"
        with contextlib.suppress(Exception):
            for entry in result.logs():
                if getattr(entry, "level", "") in ("WARNING", "ERROR"):
                    why = str(entry.message)
        if self._redact is not None:
            why = self._redact.text(why)
        why = why.replace("\n", " ")
        return why[:200]


class CommandDestination:
    """A program run for each alert, the alert as JSON on stdin. Its stdout and stderr go
    nowhere (they would garble the JSON lines and the cockpit's screen); past ``timeout_s``
    its whole process group is killed. A failure is counted, never raised into the engine.

    It gets the engine's environment less ``hidden_env``: the variables that hold the engine's
    own secrets (venue keys, alert and heartbeat URLs). A notification script needs none of
    them, and only the engine's execution code may hold a credential. Nor does it get
    systemd's notify socket (:data:`SYSTEMD_NOTIFY_ENV`): only the engine vouches for itself."""

    def __init__(
        self,
        cfg: AlertCommandConfig,
        engine: dict[str, Any],
        hidden_env: frozenset[str] = frozenset(),
    ) -> None:
        self.route = "command"
        self.argv = list(cfg.argv)
        self.timeout_s = cfg.timeout_s
        self.label = Path(cfg.argv[0]).name
        self.engine = engine
        self.hidden_env = hidden_env | SYSTEMD_NOTIFY_ENV

    async def send(self, alert: Alert) -> Delivery:
        data = json.dumps(alert.to_json(self.engine), default=str).encode() + b"\n"
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                env={k: v for k, v in os.environ.items() if k not in self.hidden_env},
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,  # its own process group: a timeout kills its children
            )
        except OSError as exc:
            return Delivery(False, f"cannot run {self.label}: {exc.strerror or exc}")
        try:
            await asyncio.wait_for(proc.communicate(data), self.timeout_s)
        except TimeoutError:
            await self._kill(proc)
            return Delivery(False, f"still running after {self.timeout_s:g} s; killed")
        except BaseException:
            await self._kill(proc)
            raise
        if proc.returncode == 0:
            return Delivery(True, "exit 0")
        code = proc.returncode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return Delivery(False, f"killed by {signal.Signals(-code).name}")
        return Delivery(False, f"exit {code}")

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(proc.wait(), KILL_GRACE_S)


# ---------------------------------------------------------------------- building destinations


def build_destinations(
    cfg: AlertsConfig, engine: dict[str, Any], hidden_env: frozenset[str] = frozenset()
) -> list[tuple[str, frozenset[str], Any, list[Destination]]]:
    """Every route as (name, its event kinds, its settings, its destinations); raises
    ConfigError (one line per problem, no secret) when one cannot be built. ``hidden_env``:
    variables the command hook must not inherit (the alerts' own URL variables always)."""
    from engine.config import ConfigError

    problems = destination_problems(cfg)
    if problems:
        raise ConfigError(problems)
    out: list[tuple[str, frozenset[str], Any, list[Destination]]] = []
    for name, route in route_specs(cfg):
        dests: list[Destination] = []
        for url in route.urls:
            dests.append(AppriseDestination(name, url, cfg.timeout_s))
        for env in route.urls_env:
            url = env_url(env)[0]
            assert url is not None
            dests.append(AppriseDestination(name, url, cfg.timeout_s, env=env))
        out.append((name, frozenset(route.events), route, dests))
    if cfg.command is not None:
        command = cfg.command
        own = frozenset(env for _, route in route_specs(cfg) for env in route.urls_env)
        hook = CommandDestination(command, engine, hidden_env | own)
        out.append(("command", frozenset(command.events), command, [hook]))
    return out
