"""Delivering one alert to one destination: an apprise URL, or a program's stdin.

apprise (one well-kept library for Telegram, Slack, Discord, email, ntfy, webhooks and ~100
more) does the sending; this module only builds its objects, bounds each delivery in time, and
keeps secrets out of sight. A URL from an environment variable holds a token: it is never
printed, logged, journaled or put in an error. Wherever a destination is named it is named by
:func:`redact` (scheme and host only; the host too is hidden when it is not a host name, as in
``tgram://BOTTOKEN/...``) and, for a URL from the environment, by the variable's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from engine.alert_text import Alert

if TYPE_CHECKING:
    from engine.config import AlertCommandConfig, AlertsConfig

KILL_GRACE_S = 1.0  # after a hook is killed on timeout, how long to wait for it to be reaped
_SPLIT = re.compile(r"[/:@?&=#;,+ ]+")


def _quiet_apprise() -> Any:
    """Import apprise with its log kept to itself: its messages can carry a URL's token, and
    Python's last-resort handler would print them on stderr (over the cockpit's screen too).
    Its per-call capture (a delivery's result) still sees them; only the reason we phrase is
    shown anywhere."""
    import apprise

    log = logging.getLogger("apprise")
    if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
        log.addHandler(logging.NullHandler())
    log.propagate = False
    return apprise


def apprise_understands(url: str) -> bool:
    """Does apprise have a service for this URL (no network)?"""
    apprise = _quiet_apprise()
    try:
        return apprise.Apprise.instantiate(url) is not None
    except Exception:
        return False


def _hostlike(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return "." in host and all(part.isalnum() or "-" in part for part in host.split("."))


def redact(url: str) -> str:
    """``scheme://host[:port]``: what names a destination without its secrets. A "host" that is
    not a host name (a bot token, a webhook id) is shown as ``***``."""
    scheme = url.partition("://")[0].lower() or "?"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        host, port = "", None
    if not host or not _hostlike(host):
        return f"{scheme}://***"
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def secret_fragments(url: str) -> list[str]:
    """Every piece of a secret URL long enough to be (part of) a token: scrubbed from any text
    we show that a library phrased (an error, a log line)."""
    pieces = {url, *(p for p in _SPLIT.split(url.partition("://")[2]) if len(p) >= 4)}
    return sorted(pieces, key=len, reverse=True)


def scrub(text: str, fragments: list[str]) -> str:
    for piece in fragments:
        text = text.replace(piece, "***")
    return text


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
    bounded by ``timeout_s`` (the socket timeouts too, so no worker thread outlives it long)."""

    def __init__(self, route: str, url: str, timeout_s: float, env: str | None = None) -> None:
        apprise = _quiet_apprise()
        self.route = route
        self.timeout_s = timeout_s
        self.label = redact(url) + (f" (${env})" if env else "")
        self._secret = secret_fragments(url) if env else []
        plugin = apprise.Apprise.instantiate(url)
        if plugin is None:
            raise ValueError(f"apprise has no service for {self.label}")
        for name in ("socket_connect_timeout", "socket_read_timeout"):
            if hasattr(plugin, name):
                setattr(plugin, name, timeout_s)
        self._apprise = apprise.Apprise()
        self._apprise.add(plugin)

    async def send(self, alert: Alert) -> Delivery:
        try:
            result = await asyncio.wait_for(
                self._apprise.async_notify(
                    body=alert.body or alert.title,
                    title=alert.title,
                    notify_type=alert.notify_type,
                ),
                self.timeout_s,
            )
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
        why = scrub(why, self._secret).replace("\n", " ")
        return why[:200]


class CommandDestination:
    """A program run for each alert, the alert as JSON on stdin. Its stdout and stderr go
    nowhere (they would garble the JSON lines and the cockpit's screen); past ``timeout_s``
    its whole process group is killed. A failure is counted, never raised into the engine."""

    def __init__(self, cfg: AlertCommandConfig, engine: dict[str, Any]) -> None:
        self.route = "command"
        self.argv = list(cfg.argv)
        self.timeout_s = cfg.timeout_s
        self.label = Path(cfg.argv[0]).name
        self.engine = engine

    async def send(self, alert: Alert) -> Delivery:
        data = json.dumps(alert.to_json(self.engine), default=str).encode() + b"\n"
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
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


def env_url(name: str) -> tuple[str | None, str]:
    """The URL in environment variable ``name``, or None and the one line that says what is
    wrong (naming the variable, never its value)."""
    value = os.environ.get(name)
    if value is None:
        return None, (
            f"alerts: environment variable {name} (in urls_env) is not set; export it with "
            "the apprise URL"
        )
    if not value.strip():
        return None, f"alerts: environment variable {name} (in urls_env) is empty"
    if not apprise_understands(value.strip()):
        return None, (
            f"alerts: environment variable {name} does not hold a URL apprise can use (its "
            "value is not shown)"
        )
    return value.strip(), ""


def _command_problem(cfg: AlertCommandConfig) -> str:
    program = cfg.argv[0]
    if "/" in program:
        path = Path(program)
        if not path.is_file() or not os.access(path, os.X_OK):
            return f"alerts.command.argv[0]: {program!r} is not an executable file"
    elif shutil.which(program) is None:
        return f"alerts.command.argv[0]: no program {program!r} on the PATH"
    return ""


def route_specs(cfg: AlertsConfig) -> list[tuple[str, Any]]:
    """Each route's name and its settings, [alerts] itself first (named default)."""
    routes: list[tuple[str, Any]] = []
    if cfg.has_destination:
        routes.append(("default", cfg))
    routes.extend(sorted(cfg.routes.items()))
    return routes


def destination_problems(cfg: AlertsConfig) -> list[str]:
    """What stops the alerts from starting (a variable not set, a hook that is not there):
    one line each, never a secret. Checked by `config check` and every start."""
    problems = []
    for _, route in route_specs(cfg):
        for name in route.urls_env:
            if env_url(name)[0] is None:
                problems.append(env_url(name)[1])
    if cfg.command is not None:
        problem = _command_problem(cfg.command)
        if problem:
            problems.append(problem)
    return list(dict.fromkeys(problems))


def build_destinations(
    cfg: AlertsConfig, engine: dict[str, Any]
) -> list[tuple[str, frozenset[str], Any, list[Destination]]]:
    """Every route as (name, its event kinds, its settings, its destinations); raises
    ConfigError (one line per problem, no secret) when one cannot be built."""
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
        out.append(
            ("command", frozenset(command.events), command, [CommandDestination(command, engine)])
        )
    return out
