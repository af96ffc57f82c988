"""Build ccxt exchange objects the one safe way, and fence testnet ones into the sandbox.

Every venue object the engine uses comes from :func:`make_exchange`:

* spot-only options, ccxt's own retries off, its rate limiter on, a timeout;
* credentials only when the caller passes them (only :mod:`engine.venues.ccxt_broker` does);
* in sandbox mode, ``set_sandbox_mode(True)`` and then a **guard** around ``sign`` (REST) and
  ``client`` (websockets): a request whose URL is not one of the exchange's ``urls['test']``
  endpoints, or that lacks the venue's sandbox header (okx: ``x-simulated-trading: 1``), raises
  :class:`ProductionEndpointRefused` before anything is sent. So even a later
  ``set_sandbox_mode(False)`` or an edited ``urls['api']`` cannot reach production.
* a venue with no sandbox in ccxt (kraken and kucoin spot today) is refused for testnet with
  :class:`VenueUnavailable`, never silently run against production.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async

from engine.venues.profiles import BASE_OPTIONS, profile_for
from engine.vocabulary import ExitCode

# Headers without which a sandbox request would hit the live venue (same host, other book).
SANDBOX_HEADERS: dict[str, dict[str, str]] = {"okx": {"x-simulated-trading": "1"}}


class VenueUnavailable(Exception):
    """The configuration cannot be served: unknown exchange id, or no sandbox for testnet."""


class VenueStartError(RuntimeError):
    """A venue could not be reached or loaded at start; nothing was sent."""

    exit_code = ExitCode.FAILURE


def describe_start_failure(exc: BaseException, venue: str, redact: Any = None) -> str:
    """One line for a venue that failed at start (``redact``: a function taking secrets out)."""
    why = f"{type(exc).__name__}: {exc}"
    if redact is not None:
        why = redact(why)
    refused = isinstance(exc, ccxt.AuthenticationError | ccxt.PermissionDenied)
    verb = "refused the keys" if refused else "did not answer"
    return f"{venue} {verb} at start ({why}); check it with `cockpit venues check --config PATH`"


class ProductionEndpointRefused(ccxt.ExchangeError):
    """A sandbox-mode exchange was about to call a non-sandbox endpoint; nothing was sent."""


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def exchange_class(exchange_id: str, pro: bool = False) -> type:
    """The ccxt async (or ccxt.pro) class for an id; VenueUnavailable if ccxt has none."""
    if pro:
        import ccxt.pro as ccxt_pro

        module: Any = ccxt_pro
        names = ccxt_pro.exchanges
    else:
        module = ccxt_async
        names = ccxt_async.exchanges
    if exchange_id not in names:
        kind = "ccxt.pro" if pro else "ccxt"
        raise VenueUnavailable(f"{exchange_id!r} is not a {kind} exchange id")
    return getattr(module, exchange_id)


def has_sandbox(exchange_id: str) -> bool:
    cls = exchange_class(exchange_id)
    urls = cls().describe().get("urls", {})
    return bool(urls.get("test"))


def make_exchange(
    exchange_id: str,
    *,
    sandbox: bool,
    credentials: dict[str, str] | None = None,
    pro: bool = False,
    timeout_ms: int = 10_000,
    options: dict[str, Any] | None = None,
    logger: logging.Logger | None = None,
) -> Any:
    """A configured ccxt async exchange (ccxt.pro with ``pro``); see the module docstring."""
    cls = exchange_class(exchange_id, pro)
    profile = profile_for(exchange_id)
    opts = _deep_merge(_deep_merge(BASE_OPTIONS, profile.options), options or {})
    config: dict[str, Any] = {
        "enableRateLimit": True,
        "timeout": int(timeout_ms),
        "options": opts,
    }
    if credentials:
        config.update(credentials)
    ex = cls(config)
    # Instance copies, so nothing below leaks into other instances of the class.
    ex.has = dict(ex.has)
    ex.headers = dict(ex.headers or {})
    # Currencies are for deposits and withdrawals; loading them costs private calls on some venues.
    ex.has["fetchCurrencies"] = False
    if logger is not None:
        ex.logger = logger
    if exchange_id == "okx":
        add_request_expiry(ex, OKX_ORDER_EXPIRY_S)
    if sandbox:
        if not ex.urls.get("test"):
            raise VenueUnavailable(
                f"{exchange_id} has no testnet (sandbox) in ccxt; testnet mode cannot use it. "
                "Use paper mode, or a venue with a testnet (binance, bybit, okx)"
            )
        ex.set_sandbox_mode(True)
        # ccxt copies urls['test'] into urls['api'] shallowly: nested tables (websocket URLs)
        # would be the same objects, so editing an api URL would edit the guard's allow-list.
        ex.urls = {**ex.urls, "api": copy.deepcopy(ex.urls["api"])}
        guard_sandbox(ex)
    return ex


# okx: an order request carries expTime (a header, not signed); the venue refuses it after that,
# so "not found" after expTime plus a margin really means "never placed".
OKX_ORDER_EXPIRY_S = 10.0
_OKX_EXPIRING = ("trade/order", "trade/batch-orders", "trade/amend-order")


def add_request_expiry(ex: Any, seconds: float) -> None:
    """Give okx order requests an ``expTime`` header ``seconds`` from now."""
    sign = ex.sign

    def sign_with_expiry(path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        request = sign(path, *args, **kwargs)
        method = args[1] if len(args) > 1 else kwargs.get("method", "GET")
        if path in _OKX_EXPIRING and str(method).upper() == "POST":
            headers = dict(request.get("headers") or {})
            headers["expTime"] = str(ex.milliseconds() + int(seconds * 1000))
            request["headers"] = headers
        return request

    ex.sign = sign_with_expiry


def _flatten(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _flatten(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _flatten(v)


def sandbox_prefixes(ex: Any) -> list[str]:
    """Every sandbox endpoint prefix of the exchange (hostname placeholders filled in)."""
    out = []
    for url in _flatten(ex.urls.get("test") or {}):
        url = ex.implode_hostname(url) if "{hostname}" in url else url
        out.append(url.rstrip("/"))
    return out


def check_sandbox_request(ex: Any, url: str, headers: dict[str, Any] | None) -> None:
    """Raise ProductionEndpointRefused unless ``url`` (and headers) are the sandbox's."""
    prefixes = sandbox_prefixes(ex)
    if not any(url == p or url.startswith(p + "/") or url.startswith(p + "?") for p in prefixes):
        raise ProductionEndpointRefused(
            f"{ex.id}: refused to call {url.split('?')[0]}: not a sandbox endpoint"
        )
    need = SANDBOX_HEADERS.get(ex.id, {})
    merged = {**(ex.headers or {}), **(headers or {})}
    for key, value in need.items():
        if merged.get(key) != value:
            raise ProductionEndpointRefused(
                f"{ex.id}: refused to call {url.split('?')[0]}: sandbox header {key} missing"
            )


def guard_sandbox(ex: Any) -> None:
    """Wrap ``sign`` (and ``client`` for websockets) so only sandbox endpoints can be used."""
    if getattr(ex, "_engine_sandbox_guard", False):
        return
    sign = ex.sign

    def guarded_sign(*args: Any, **kwargs: Any) -> dict[str, Any]:
        request = sign(*args, **kwargs)
        check_sandbox_request(ex, request["url"], request.get("headers"))
        return request

    ex.sign = guarded_sign
    client = getattr(ex, "client", None)
    if client is not None:

        def guarded_client(url: str) -> Any:
            check_sandbox_request(ex, url, None)
            return client(url)

        ex.client = guarded_client
    ex._engine_sandbox_guard = True
