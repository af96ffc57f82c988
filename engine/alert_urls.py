"""Naming and checking alert destinations, without sending anything.

A URL from an environment variable holds a token: it is never printed, logged, journaled or
put in an error. Wherever a destination is named it is named by :func:`redact` (scheme and host
only; the host too is hidden when it is not a host name, as in ``tgram://BOTTOKEN/...``) and,
for a URL from the environment, by the variable's name. ``engine.config`` checks the file's
URLs here (imported lazily, only for a config with ``[alerts]``); delivery is
:mod:`engine.alert_send`'s.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

if TYPE_CHECKING:
    from engine.config import AlertCommandConfig, AlertsConfig

_SPLIT = re.compile(r"[/:@?&=#;,+ ]+")


def quiet_apprise() -> Any:
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
    apprise = quiet_apprise()
    try:
        return apprise.Apprise.instantiate(url) is not None
    except Exception:
        return False


def holds_secret(url: str) -> bool:
    """Does apprise itself count part of this URL as private (a bot token, a webhook token, a
    password, an access token)? Its privacy rendering masks exactly those parts, so a URL that
    reads differently with privacy on holds one (no network)."""
    apprise = quiet_apprise()
    try:
        plugin = apprise.Apprise.instantiate(url)
        return plugin is not None and plugin.url(privacy=True) != plugin.url()
    except Exception:
        return False


# Words that, in the name of a URL's query argument or custom header, say its value is a
# credential (json's "+Authorization=Bearer ...", form's "-apikey=...", "?token=...").
_CREDENTIAL_WORDS = frozenset(
    {
        "auth", "authorization", "bearer", "cookie", "credential", "credentials", "jwt", "key",
        "apikey", "pass", "passwd", "password", "pwd", "secret", "session", "sig",
        "signature", "token",
    }
)  # fmt: skip
_NAME_WORDS = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


def credential_field(url: str) -> str:
    """The name of a query argument or custom header (``+Header=`` of json://, xml://,
    form://; ``-field=`` of their payload) whose name says it carries a credential, "" when
    none does. apprise passes these on as they are and keeps none of them private, so
    :func:`holds_secret` cannot see them (no network; the value is never returned)."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return ""
    for name, value in parse_qsl(query):
        bare = name.strip().lstrip("+-:")  # parse_qsl reads a header's "+" as a space
        words = (w.lower() for w in _NAME_WORDS.split(bare) if w)
        if value.strip() and any(w in _CREDENTIAL_WORDS for w in words):
            return bare
    return ""


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
    """Every piece of a secret URL long enough to be (part of) a token, as written and as the
    client sends it (percent-decoded; a user and password also as HTTP Basic's base64): what
    a failure's reason must never show, in whatever words a library or a server phrased it."""
    rest = url.partition("://")[2]
    pieces = {url, rest}
    for text in (rest, unquote(rest), unquote_plus(rest)):
        pieces.update(p for p in _SPLIT.split(text) if len(p) >= 4)
    for raw in _SPLIT.split(rest):
        pieces.update((unquote(raw), unquote_plus(raw)))
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        user = password = None
    if password:
        for creds in {f"{unquote(user or '')}:{unquote(password)}", f"{user or ''}:{password}"}:
            pieces.add(base64.b64encode(creds.encode()).decode())
    return sorted((p for p in pieces if len(p) >= 4), key=len, reverse=True)


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
