"""Keep API keys out of every message, log line and repr that leaves a venue adapter.

ccxt puts request URLs, headers and bodies into its exception messages and debug logs, and some
venues echo the key back (KuCoin's api-key endpoint, error bodies that quote the request). So the
broker redacts at its boundary: every exception message it turns into an order reason or a check
line goes through :meth:`Redactor.text`, and ccxt's logger gets a :class:`RedactingFilter`.

Besides the literal secrets, a few shapes are always masked because they are derived from them:
signatures in query strings and headers, and the usual key headers.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol
from urllib.parse import quote, quote_plus, unquote_plus

MASK = "***"
# Values too short to be a real secret would mask ordinary words; they are refused as secrets.
_MIN_SECRET = 4
# Signatures and nonces of the most recent signed requests, masked wherever they come back.
RECENT_SIGNED = 256

# Between a field's name and its value: quotes (JSON inside JSON escapes them), a colon or an
# equals sign (URL-encoded too), spaces.
_SEP = r"""((?:\\*["'])?\s*(?:[:=]|%3[AaDd])\s*(?:\\*["'])?)"""
# Any field or header whose name says it carries a signature (OK-ACCESS-SIGN, X-BAPI-SIGN,
# KC-API-SIGN, signature=, sign=), or a key or passphrase (X-MBX-APIKEY, OK-ACCESS-KEY,
# OK-ACCESS-PASSPHRASE, X-BAPI-API-KEY, KC-API-KEY, api_key, secret, password).
_SIGN_NAME = r"[A-Za-z0-9_-]*sign(?:ature)?"
_KEY_NAME = (
    r"[A-Za-z0-9_-]*(?:api[-_]?key|access[-_]key|passphrase|password|secret|"
    r"x-mbx-apikey|x-bapi-api-key|kc-api-key)"
)
_DERIVED = [
    re.compile(rf"(?i)\b({_SIGN_NAME}){_SEP}((?:[A-Za-z0-9+/=_\-%]|\\/){{8,}})"),
    re.compile(rf"(?i)\b({_KEY_NAME}){_SEP}([^\s\"',}}&\\]{{4,}})"),
]


def _variants(value: str) -> set[str]:
    """How a value may come back: as sent, URL-encoded, or with JSON-escaped slashes."""
    return {value, quote(value, safe=""), quote_plus(value), value.replace("/", "\\/")}


class Redactor:
    """Masks a fixed set of secret strings, the signatures and key fields of the requests it
    has seen signed (:meth:`remember_request`), and any field named like one, in any text."""

    __slots__ = ("_derived", "_secrets")

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        found = {
            v for s in secrets if isinstance(s, str) and len(s) >= _MIN_SECRET for v in _variants(s)
        }
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = tuple(sorted(found, key=len, reverse=True))
        self._derived: deque[str] = deque(maxlen=RECENT_SIGNED)

    def add(self, *secrets: str | None) -> None:
        self._secrets = Redactor([*self._secrets, *secrets])._secrets

    def remember_request(self, request: object) -> None:
        """Note the values a signed request carries in fields named like signatures or keys
        (headers, query string, body), so an error that echoes the request in any shape is
        masked by the values themselves, not only where a pattern recognises the field."""
        if not isinstance(request, dict):
            return
        parts = [str(request.get("url") or ""), str(request.get("body") or "")]
        headers = request.get("headers")
        if isinstance(headers, dict):
            parts += [f"{k}: {v}" for k, v in headers.items()]
        for part in parts:
            for text in (part, unquote_plus(part)):
                for pattern in _DERIVED:
                    for m in pattern.finditer(text):
                        value = m.group(3)
                        if len(value) >= _MIN_SECRET:
                            for v in _variants(value):
                                if v not in self._derived:
                                    self._derived.append(v)

    def text(self, value: object) -> str:
        """``str(value)`` with every secret and signature masked."""
        out = str(value)
        for secret in (*self._secrets, *sorted(self._derived, key=len, reverse=True)):
            if secret in out:
                out = out.replace(secret, MASK)
        for pattern in _DERIVED:
            out = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", out)
        return out

    def error(self, exc: BaseException) -> str:
        """``ExceptionClass: message``, redacted, on one line and at most 300 characters."""
        msg = " ".join(self.text(exc).split())
        if len(msg) > 300:
            msg = msg[:297] + "..."
        name = type(exc).__name__
        return f"{name}: {msg}" if msg else name

    def __repr__(self) -> str:  # never show what is being masked
        return f"Redactor({len(self._secrets)} secrets)"


class SignsRequests(Protocol):
    """What of a ccxt exchange the redactor wraps: the method that signs each request."""

    sign: Callable[..., object]


def redact_signed_requests(exchange: SignsRequests, redactor: Redactor) -> None:
    """Wrap a ccxt exchange's ``sign`` so every request it signs is remembered by the
    redactor (see :meth:`Redactor.remember_request`)."""
    original = exchange.sign

    def sign(*args: object, **kwargs: object) -> object:
        request = original(*args, **kwargs)
        redactor.remember_request(request)
        return request

    exchange.sign = sign


class RedactingFilter(logging.Filter):
    """A logging filter that formats the record and masks secrets in the result."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not take the secret with it
            message = str(record.msg)
        record.msg = self.redactor.text(message)
        record.args = ()
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redactor.text(
                logging.Formatter().formatException(record.exc_info)
            )
            record.exc_info = None
        return True


def redacting_logger(name: str, redactor: Redactor) -> logging.Logger:
    """A logger whose records are redacted before any handler sees them."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactingFilter) and f.redactor is redactor for f in logger.filters):
        logger.addFilter(RedactingFilter(redactor))
    return logger
