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
from collections.abc import Iterable

MASK = "***"
# Values too short to be a real secret would mask ordinary words; they are refused as secrets.
_MIN_SECRET = 4

_DERIVED = [
    # query-string and JSON signatures, whatever the venue calls them
    re.compile(
        r"(?i)(signature|sign|api[-_]?sign|ok-access-sign|kc-api-sign|x-bapi-sign)"
        r"([\"']?\s*[:=]\s*[\"']?)([A-Za-z0-9+/=_\-]{8,})"
    ),
    # headers and fields that carry a key or passphrase
    re.compile(
        r"(?i)(x-mbx-apikey|api-key|apikey|api_key|ok-access-key|ok-access-passphrase|"
        r"kc-api-key|kc-api-passphrase|x-bapi-api-key|passphrase|password|secret)"
        r"([\"']?\s*[:=]\s*[\"']?)([^\s\"',}&]{4,})"
    ),
]


class Redactor:
    """Masks a fixed set of secret strings (and signature-like fields) in any text."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        found = {s for s in secrets if isinstance(s, str) and len(s) >= _MIN_SECRET}
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = tuple(sorted(found, key=len, reverse=True))

    def add(self, *secrets: str | None) -> None:
        self._secrets = Redactor([*self._secrets, *secrets])._secrets

    def text(self, value: object) -> str:
        """``str(value)`` with every secret and signature masked."""
        out = str(value)
        for secret in self._secrets:
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
