"""The ccxt broker: real orders on a testnet (sandbox) or live venue, never sent twice.

This is the only code that reads API credentials (``VenueConfig.credentials()``, at
construction). They go to the ccxt object and nowhere else: every message that leaves this module
(order reasons, exceptions, log lines, ``repr``) passes through a :class:`Redactor` holding them.

The broker speaks the engine's language — :class:`~engine.types.Order` in,
:class:`~engine.types.OrderUpdate` and :class:`~engine.types.Fill` out — like the paper broker,
but asynchronously:

``submit(order)``
    Sends the order once, under a client order id derived deterministically from the engine's
    (:func:`~engine.venues.profiles.venue_client_id`). The outcome is one of:

    * acknowledged -> ``NEW`` (plus fills, if the venue reported executions in the answer);
    * refused by the venue (insufficient funds, invalid order, minimum notional, bad symbol,
      authentication...) -> ``REJECTED`` with the venue's reason: journaled, never retried, and
      counted by the core's reject breaker;
    * rate-limited (429/418, ``RateLimitExceeded``, ``DDoSProtection``) -> ``REJECTED`` and the
      whole venue waits out ``Retry-After`` (see :mod:`~engine.venues.ratelimit`);
    * **ambiguous** (timeout, network error, 5xx, ``ExchangeNotAvailable``, an unmapped exchange
      error) -> the order stays ``PENDING_NEW`` and counts as live. It is resolved only by looking
      it up by client order id — on the spot, and then on every :meth:`poll` — never by sending
      it again. Found: its state is adopted. Not found once the venue's consistency window has
      passed since the send: ``CANCELED`` "never reached the venue".

``cancel(client_order_id)`` / ``cancel_all(symbols)``
    Cancels use a token reserve the other requests cannot touch, and are retried through rate
    limits and network errors. ``cancel_all`` confirms with ``fetch_open_orders`` that nothing is
    left and says whether it could.

``poll()``
    Order states and trades from the venue, as OrderUpdates and Fills (each Fill followed by the
    order's update, as the paper broker does), plus the resolution of ambiguous sends.

``recover(orders)``
    After a crash between "intent durable" and "order acknowledged": each order is looked up by
    client order id; found -> adopted, not found after the consistency window -> ``CANCELED``.

``heartbeat()``
    Re-arms the venue's dead-man switch (``cancelAllOrdersAfter``) where ccxt has one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import ccxt

from engine.config import MAX_AMOUNT, VenueConfig
from engine.types import (
    NS_PER_MS,
    NS_PER_SECOND,
    Fill,
    IllegalTransition,
    Instrument,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Side,
)
from engine.venues.ccxt_market import MarketMeta, instruments_from_exchange
from engine.venues.exchanges import ProductionEndpointRefused, make_exchange
from engine.venues.profiles import VenueProfile, profile_for, venue_client_id
from engine.venues.ratelimit import Backoff, RequestGate, retry_after_from_headers
from engine.venues.reconcile import (
    SYNTHETIC_FILL,
    VenueOrder,
    VenueSnapshot,
    VenueTrade,
    adopted_order_id,
    fill_id_for,
    venue_order_from_ccxt,
    venue_trade_from_ccxt,
)
from engine.venues.redact import Redactor, redact_signed_requests, redacting_logger

_DUST = 1e-9  # relative: a fill leaving less than this of the order open completes it
NEVER_REACHED = "never reached the venue"
# A clock sample whose round trip took longer than this is thrown away (its error is up to half).
MAX_CLOCK_RTT_NS = 1_000 * NS_PER_MS
# The session an engine client order id was made in (``ck-<session>-<n>``).
_SESSION_OF_ID = re.compile(r"ck-(\d+)-")
# Markets are loaded again (after an order refused as invalid) at most this often.
MARKETS_RELOAD_GAP_NS = 60 * NS_PER_SECOND

# Outcome classes of a failed request.
RATE_LIMITED = "rate_limited"
REJECTED = "rejected"
AMBIGUOUS = "ambiguous"
NOT_FOUND = "not_found"
REFUSED = "refused"  # our own sandbox guard: nothing was sent

# Venue refusals: the request was processed and answered "no". Everything else that is not a
# rate limit or "not found" is ambiguous: it may or may not have been executed.
_DEFINITE_REJECTIONS: tuple[type[BaseException], ...] = (
    ccxt.InsufficientFunds,
    ccxt.InvalidOrder,
    ccxt.BadRequest,
    ccxt.OperationRejected,
    ccxt.AuthenticationError,
    ccxt.ArgumentsRequired,
    ccxt.NotSupported,
    ccxt.InvalidAddress,
    ccxt.InvalidNonce,  # the venue refused the request's timestamp: it was not executed
)


def classify(exc: BaseException) -> str:
    """What a ccxt exception means for an order: see the constants above."""
    if isinstance(exc, ProductionEndpointRefused):
        return REFUSED
    if isinstance(exc, ccxt.DuplicateOrderId) or "duplicate" in str(exc).lower():
        return AMBIGUOUS  # an order with this client id exists: look it up
    if isinstance(exc, ccxt.OrderNotFound):
        return NOT_FOUND
    if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
        return RATE_LIMITED
    if isinstance(exc, _DEFINITE_REJECTIONS):
        return REJECTED
    return AMBIGUOUS


def _require_pending(order: Order, what: str) -> None:
    """Only a durable, unacknowledged order may be sent or recovered: anything else would move
    a status backwards (an engine bug, refused loudly rather than sent)."""
    if order.status is not OrderStatus.PENDING_NEW:
        raise IllegalTransition(
            f"{what} order {order.client_order_id}: it is {order.status}, not pending_new"
        )


class BrokerConfigError(ValueError):
    """The venue config cannot back this broker (mode mismatch, missing keys)."""


@dataclass
class _Tracked:
    """One engine order the broker is responsible for, and what the venue said about it."""

    order: Order  # the engine's view, as last reported (a private copy)
    vcid: str  # the client order id the venue sees
    deadline_ns: int  # until when "not found" may still mean "not visible yet"
    venue_id: str | None = None
    unresolved: str = ""  # non-empty while the send's outcome is unknown (why)
    fill_ids: set[str] = field(default_factory=set)
    venue_filled: float = 0.0
    venue_status: str = ""
    venue_average: float | None = None
    gap_since_ns: int = 0  # when the venue first showed more filled than our fills
    cancel_requested: str = ""  # the reason, once a cancel was asked for
    # A cancel the venue did not answer (timed out, rate limited past the retries, refused
    # with a network error): asked again at each poll that still finds the order open.
    cancel_unanswered: bool = False
    synthetic: int = 0  # fills made from the order's totals (trades never showed up)
    # Quantity booked from the order's totals that no venue trade has been matched to yet: a
    # trade that shows up late is already in the position up to this much.
    from_totals: float = 0.0
    untrusted_totals: bool = False  # its totals were not believable (reported once)
    missing_since_ns: int = 0  # when the venue first did not know this acknowledged order
    adopted: bool = False  # placed outside the engine; looked up by venue id, not client id


def _field(answer: Any, name: str) -> Any:
    """``answer[name]`` when the answer is an object, else None (a venue's answer is data)."""
    return answer.get(name) if isinstance(answer, dict) else None


def _flag(value: Any) -> bool | None:
    """A permission the venue states as true or false; anything else (missing, null, the
    string "false") is not a statement: None, shown as unknown rather than as "cannot"."""
    return value if isinstance(value, bool) else None


def _unsaid(source: str) -> dict[str, Any]:
    """What a permissions answer that does not hold the permissions means: nobody knows."""
    return {"trade": None, "withdraw": None, "source": f"{source}: no permissions in the answer"}


def native_stops_supported(exchange: Any) -> bool:
    """Can ccxt place a stop-loss (stop-market) order on this exchange (its ``has`` flags)."""
    has = getattr(exchange, "has", {}) or {}
    return any(
        has.get(flag)
        for flag in ("createStopLossOrder", "createStopMarketOrder", "createStopOrder")
    )


# Exchanges whose resting stop orders the engine sees like any other order (open orders, order
# lookups by client id, trades), verified end to end against the loopback venue. Elsewhere a
# stop may live apart (okx algo orders, bybit conditional orders, kucoin's stop-order
# endpoint): reconciliation would not account for it, so native stops are refused there.
NATIVE_STOPS_VERIFIED = frozenset({"binance"})


def native_stops_problem(exchange: Any) -> str:
    """Why ``native_stops = true`` cannot work on this exchange ("" when it can)."""
    name = getattr(exchange, "id", "?")
    if not native_stops_supported(exchange):
        return (
            f"ccxt's {name} cannot place stop-loss orders (has createStopLossOrder/"
            "createStopMarketOrder/createStopOrder: no)"
        )
    if name not in NATIVE_STOPS_VERIFIED:
        return (
            f"the engine does not reconcile {name}'s stop orders yet (native stops: "
            f"{', '.join(sorted(NATIVE_STOPS_VERIFIED))} only)"
        )
    return ""


class CcxtBroker:
    """Execution on one ccxt venue; see the module docstring."""

    def __init__(
        self,
        venue: str,
        cfg: VenueConfig,
        mode: str,
        *,
        symbols: Iterable[str] = (),
        options: dict[str, Any] | None = None,
        timeout_ms: int = 10_000,
        consistency_window_s: float | None = None,
        rate_per_s: float | None = None,
        burst: int = 8,
        cancel_reserve: int = 3,
        namespace: str = "",
        is_synced: Callable[[str], bool] | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_retries: int = 4,
    ) -> None:
        if mode not in ("testnet", "live"):
            raise BrokerConfigError(f"mode must be 'testnet' or 'live', not {mode!r}")
        if (mode == "testnet") != cfg.testnet:
            raise BrokerConfigError(
                f"venues.{venue}: testnet = {str(cfg.testnet).lower()} does not fit {mode} mode"
            )
        self.venue = venue
        self.mode = mode
        self.exchange_id = cfg.exchange
        self.stop_limit_bps = cfg.native_stop_limit_bps
        self.profile: VenueProfile = profile_for(cfg.exchange)
        creds = cfg.credentials()  # the one place credentials are read
        missing = [k for k in ("apiKey", "secret") if k not in creds]
        if self.profile.needs_password and "password" not in creds:
            missing.append("password")
        if missing:
            names = {"apiKey": "api_key_env", "secret": "secret_env", "password": "password_env"}
            raise BrokerConfigError(
                f"venues.{venue}: no {', '.join(missing)} in the environment "
                f"(set the variables named by {', '.join(names[m] for m in missing)})"
            )
        self.redactor = Redactor(creds.values())
        self.logger = redacting_logger(f"engine.venues.{venue}", self.redactor)
        self.exchange = make_exchange(
            cfg.exchange,
            sandbox=mode == "testnet",
            credentials=creds,
            timeout_ms=timeout_ms,
            options=options,
            logger=self.logger,
        )
        del creds
        redact_signed_requests(self.exchange, self.redactor)
        self._hook_rest_responses()
        rate = rate_per_s
        if rate is None:
            rate_limit_ms = max(float(self.exchange.rateLimit or 1000), 1.0)
            rate = max(0.5, min(10.0, 0.5 * 1000.0 / rate_limit_ms))
        self._clock = clock_ns
        self._sleep = sleep
        self.gate = RequestGate(
            rate, burst, cancel_reserve, clock=monotonic, sleep=sleep, backoff=Backoff(1.0, 120.0)
        )
        self.window_ns = int(
            (consistency_window_s or self.profile.consistency_window_s) * NS_PER_SECOND
        )
        self.namespace = namespace
        # Each session's random part of its client ids (VenueExecution draws and journals it).
        self.session_tokens: dict[int, str] = {}
        self.symbols = list(dict.fromkeys(symbols))
        self.is_synced = is_synced
        self.max_retries = max_retries
        self.metas: dict[str, MarketMeta] = {}
        self.halted_reason = ""
        # The venue's dead-man switch as last heard (the snapshot shows it).
        self.deadman: dict[str, Any] = {
            "armed": False,
            "timeout_s": 0.0,
            "last_ok_ns": None,
            "error": "",
        }
        # Venue-level troubles worth showing (redacted), the latest 100.
        self.problems: deque[str] = deque(maxlen=100)
        # Venue reports the order status table forbids (not believed; each is in ``problems``).
        self.status_anomalies = 0
        self._tracked: dict[str, _Tracked] = {}
        self._by_vcid: dict[str, str] = {}
        self._by_venue_id: dict[str, str] = {}
        self._seen: set[str] = set()  # every engine id ever handed to this broker
        self._trades_since_ms: dict[str, int] = {}
        self._unmatched: dict[str, dict[str, Any]] = {}  # trades not (yet) tied to an order
        self._idless_seen: set[str] = set()  # trades without an id, already reported
        self._retry_after: float | None = None
        self.requests = 0  # requests attempted through the gate (a bench/test figure)
        self.markets_stale = False  # the venue refused an order as invalid: reload its markets
        self._markets_reloaded_ns = 0

    def __repr__(self) -> str:
        return (
            f"CcxtBroker(venue={self.venue!r}, exchange={self.exchange_id!r}, mode={self.mode!r}, "
            f"open={len(self._tracked)})"
        )

    # ------------------------------------------------------------------ plumbing

    def _hook_rest_responses(self) -> None:
        """Catch Retry-After (and venue reset headers) from rate-limit answers."""
        ex = self.exchange
        original = ex.on_rest_response

        def on_rest_response(
            code: Any, reason: Any, url: Any, method: Any, headers: Any, body: Any, *rest: Any
        ) -> Any:
            try:
                status = int(code)
            except (TypeError, ValueError):
                status = 0
            if status in (418, 429) or (status == 403 and "too frequent" in str(body).lower()):
                self._retry_after = retry_after_from_headers(
                    dict(headers or {}), self._clock() // NS_PER_MS
                )
            return original(code, reason, url, method, headers, body, *rest)

        ex.on_rest_response = on_rest_response

    def _penalize(self) -> float:
        wait = self.gate.penalize(self._retry_after)
        self._retry_after = None
        return wait

    def _why(self, exc: BaseException) -> str:
        return self.redactor.error(exc)

    async def _request(
        self, fn: Callable[[], Awaitable[Any]], *, cancel: bool = False, retries: int | None = None
    ) -> Any:
        """An idempotent request (read or cancel): rate limits wait and retry, network errors
        back off and retry; anything else is raised for the caller to classify."""
        attempts = self.max_retries if retries is None else retries
        backoff = Backoff(0.25, 8.0)
        for attempt in range(attempts + 1):
            await self.gate.acquire(cancel=cancel)
            self.requests += 1
            self._retry_after = None  # only this request's answer may set the wait
            try:
                result = await fn()
            except Exception as exc:
                kind = classify(exc)
                if attempt < attempts and kind == RATE_LIMITED:
                    self._penalize()
                    continue
                if attempt < attempts and kind == AMBIGUOUS and isinstance(exc, ccxt.NetworkError):
                    await self._sleep(backoff.next_delay())
                    continue
                if kind == RATE_LIMITED:
                    self._penalize()
                raise
            self.gate.succeeded()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _now(self) -> int:
        return self._clock()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> dict[str, Instrument]:
        """Load markets; returns the instruments of the broker's symbols (problems raise)."""
        await self._request(
            lambda: self.exchange.load_markets(False, dict(self.profile.load_params))
        )
        if not self.symbols:
            return {}
        metas, problems = instruments_from_exchange(self.exchange, self.symbols, self.venue)
        if problems:
            raise BrokerConfigError("; ".join(problems.values()))
        self.metas = metas
        return {s: m.instrument for s, m in metas.items()}

    async def refresh_markets(self) -> dict[str, Instrument]:
        """Load the venue's markets again after it refused an order as invalid: a venue
        changes a market's precision and limits at runtime (binance announces new lot and tick
        sizes), and orders on the grid loaded at start would be refused for good. At most
        once a minute; returns the instruments that changed (each said in ``problems``)."""
        self.markets_stale = False
        now = self._now()
        if self._markets_reloaded_ns and now - self._markets_reloaded_ns < MARKETS_RELOAD_GAP_NS:
            return {}
        if not self.symbols:
            return {}
        self._markets_reloaded_ns = now
        await self._request(
            lambda: self.exchange.load_markets(True, dict(self.profile.load_params)), retries=0
        )
        metas, _problems = instruments_from_exchange(self.exchange, self.symbols, self.venue)
        changed: dict[str, Instrument] = {}
        for sym, meta in metas.items():
            old = self.metas.get(sym)
            self.metas[sym] = meta
            if old is not None and old.instrument != meta.instrument:
                changed[sym] = meta.instrument
                was, now_is = old.instrument, meta.instrument
                self.problems.append(
                    f"{self.venue} changed {sym}: tick {was.tick_size:g} -> {now_is.tick_size:g}, "
                    f"lot {was.lot_size:g} -> {now_is.lot_size:g}, min qty {was.min_qty:g} -> "
                    f"{now_is.min_qty:g}, min notional {was.min_notional:g} -> "
                    f"{now_is.min_notional:g}; orders follow the new ones"
                )
        return changed

    @property
    def instruments(self) -> dict[str, Instrument]:
        return {s: m.instrument for s, m in self.metas.items()}

    async def close(self) -> None:
        await self.exchange.close()

    def set_halted(self, reason: str | None) -> None:
        """While halted, submits are refused without being sent (cancels still go out)."""
        self.halted_reason = reason or ""

    def open_orders(self) -> list[Order]:
        return [replace(t.order) for t in self._tracked.values()]

    def client_ids(self) -> dict[str, str]:
        """Venue client id -> engine client order id, for every order this broker knows."""
        return {t.vcid: coid for coid, t in self._tracked.items()} | dict(self._by_vcid)

    def venue_order_ids(self) -> dict[str, str]:
        return dict(self._by_venue_id)

    def assets_of(self, symbol: str) -> tuple[str, str]:
        """(base, quote) currency of a market, as the venue names them."""
        market = (self.exchange.markets or {}).get(symbol) or {}
        base, _, rest = symbol.partition("/")
        return str(market.get("base") or base), str(market.get("quote") or rest.split(":")[0])

    def venue_client_id(self, client_order_id: str) -> str:
        """The id the venue sees: the config's prefix, the token of the session that made the
        order (``session_tokens``, from the journal) and the engine's id."""
        made_in = _SESSION_OF_ID.match(client_order_id)
        token = self.session_tokens.get(int(made_in.group(1)), "") if made_in else ""
        return venue_client_id(client_order_id, self.exchange_id, self.namespace + token)

    def restore(
        self,
        open_orders: Iterable[Order],
        fills: Iterable[Fill] = (),
        adopted: dict[str, tuple[str, str | None, list[str]]] | None = None,
        journaled: Iterable[Order] = (),
    ) -> None:
        """Track journaled open (acknowledged) orders after a restart; their fills are known.

        PENDING_NEW orders belong to :meth:`recover`, which looks them up first. ``adopted``
        maps the engine id of an order a person adopted to (venue order id, venue client id,
        the fill ids it had when adopted). ``journaled`` is every order the journal has ever
        had on this venue, finished ones too: their ids tie the venue's trades to them.
        """
        fills = list(fills)
        adopted = adopted or {}
        for order in journaled:
            coid = order.client_order_id
            if order.venue != self.venue:
                continue
            self._seen.add(coid)
            if coid in adopted:
                venue_id, client_id, _known = adopted[coid]
                self._remember(coid, venue_id, client_id)
            else:
                self._remember(coid, order.venue_order_id, self.venue_client_id(coid))
        now = self._now()
        for order in open_orders:
            coid = order.client_order_id
            self._seen.add(coid)
            if order.status.is_terminal or coid in self._tracked:
                continue
            if coid in adopted:
                venue_id, client_id, known = adopted[coid]
                t = self._track_adopted(replace(order), venue_id, client_id)
                t.fill_ids.update(known)
                t.venue_filled = order.filled_qty
                self._note_since(order.symbol, order.ts_updated)
            else:
                t = self._track(replace(order), now)
                if order.venue_order_id:
                    t.venue_id = order.venue_order_id
                    self._remember(coid, t.venue_id, None)
                self._note_since(order.symbol, order.ts_created)
            mine = [f for f in fills if f.client_order_id == coid]
            t.fill_ids.update(f.fill_id for f in mine)
            from_totals = [f for f in mine if SYNTHETIC_FILL.search(f.fill_id)]
            t.synthetic = len(from_totals)
            # Trades absorbed by these before the restart were never journaled: they come
            # again with the next poll and are absorbed again, the same way.
            t.from_totals = sum(f.qty for f in from_totals)

    def _track_adopted(self, order: Order, venue_id: str, client_id: str | None) -> _Tracked:
        coid = order.client_order_id
        t = _Tracked(
            order=order,
            vcid=client_id or coid,
            deadline_ns=self._now(),
            venue_id=venue_id,
            adopted=True,
        )
        self._tracked[coid] = t
        self._seen.add(coid)
        self._remember(coid, venue_id, client_id)
        return t

    def _remember(self, coid: str, venue_id: str | None, client_id: str | None) -> None:
        """Tie the ids the venue shows (its order id, its client id) to an engine order."""
        if venue_id:
            self._by_venue_id[venue_id] = coid
        if client_id:
            self._by_vcid[client_id] = coid

    def _track(self, order: Order, now: int) -> _Tracked:
        vcid = self.venue_client_id(order.client_order_id)
        t = _Tracked(order=order, vcid=vcid, deadline_ns=now + self.window_ns)
        self._tracked[order.client_order_id] = t
        self._by_vcid[vcid] = order.client_order_id
        self._seen.add(order.client_order_id)
        return t

    def _note_since(self, symbol: str, ts_ns: int) -> None:
        ms = max(ts_ns // NS_PER_MS - 60_000, 0)
        cur = self._trades_since_ms.get(symbol)
        if cur is None or ms < cur:
            self._trades_since_ms[symbol] = ms

    # ------------------------------------------------------------------ submit

    def _refuse(self, order: Order, reason: str, now: int) -> list[OrderUpdate | Fill]:
        out = replace(order)
        out.move_to(OrderStatus.REJECTED, now, reason)
        return [OrderUpdate(out, now)]

    def _stop_limit_only(self, symbol: str) -> bool:
        """Does the market list its order types without a stop-market but with a stop-limit
        (binance spot: STOP_LOSS_LIMIT only)?"""
        market = (self.exchange.markets or {}).get(symbol) or {}
        types = (market.get("info") or {}).get("orderTypes")
        return isinstance(types, list) and "STOP_LOSS" not in types and "STOP_LOSS_LIMIT" in types

    def _create_params(self, vcid: str, order: Order | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"clientOrderId": vcid}
        if order is not None and order.order_type is OrderType.STOP_MARKET:
            # ccxt's unified stop-loss: a market order the venue sends at the trigger (binance
            # spot STOP_LOSS, its futures STOP_MARKET, okx/bybit conditional orders...).
            params["stopLossPrice"] = order.stop_price
        if order is not None and order.order_type is OrderType.LIMIT:
            # ccxt's unified order params: each exchange class maps them to its own API
            # (e.g. binance's LIMIT_MAKER for post-only); GTC is every venue's default.
            if order.post_only:
                params["postOnly"] = True
            if order.tif and order.tif != "gtc":
                params["timeInForce"] = order.tif.upper()
        if self.exchange_id == "kraken":
            deadline = datetime.fromtimestamp(self._now() / NS_PER_SECOND, UTC) + timedelta(
                seconds=10
            )
            params["deadline"] = deadline.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return params

    def _unknown_on(self, symbol: str) -> _Tracked | None:
        """An order on ``symbol`` whose send outcome is still unknown, if there is one."""
        for t in self._tracked.values():
            if t.unresolved and t.order.symbol == symbol:
                return t
        return None

    async def submit(
        self, order: Order, send_gate: Callable[[Order], str | None] | None = None
    ) -> list[OrderUpdate | Fill]:
        """Send a new order once; see the module docstring for the outcomes.

        ``send_gate`` is asked again once the order has its request token, the last moment
        before it goes out: the wait may be long (the venue's budget, a rate-limit penalty) and
        a kill switch latches without waiting for anyone. A reason refuses it unsent."""
        now = self._now()
        coid = order.client_order_id
        if coid in self._seen:
            return []  # never twice: the first submission's outcome stands
        _require_pending(order, "submit")
        if self.halted_reason:
            self._seen.add(coid)
            return self._refuse(order, f"not sent: {self.halted_reason}", now)
        if order.symbol not in (self.exchange.markets or {}):
            self._seen.add(coid)
            return self._refuse(
                order,
                f"not sent: {order.symbol} is not a market on "
                f"{self.exchange_id} (markets not loaded?)",
                now,
            )
        if (
            self.is_synced is not None
            and not order.reduce_only  # the kill switch's flatten (the core let it through)
            and not self.is_synced(order.symbol)
        ):
            self._seen.add(coid)
            return self._refuse(order, f"not sent: market data for {order.symbol} is unsynced", now)
        unknown = self._unknown_on(order.symbol)
        if unknown is not None and not order.reduce_only:
            # Fail closed: while an earlier order's send outcome is unknown, nobody knows what
            # this symbol's position will be. Only the look-up by client id (poll, recover,
            # reconciliation) settles it; the kill switch's reduce-only flatten still goes.
            self._seen.add(coid)
            return self._refuse(
                order,
                f"not sent: order {unknown.order.client_order_id} on {order.symbol} is in an "
                f"unknown state ({unknown.unresolved}); waiting for the venue's answer",
                now,
            )
        wait = self.gate.blocked_for()
        if wait > 0:
            self._seen.add(coid)
            return self._refuse(
                order, f"not sent: {self.venue} rate limit, retry after {wait:.1f}s", now
            )
        if not (math.isfinite(order.qty) and order.qty > 0):
            self._seen.add(coid)
            return self._refuse(order, "quantity must be positive", now)
        await self.gate.acquire()
        why_not = send_gate(order) if send_gate is not None else None
        if why_not:
            self._seen.add(coid)
            return self._refuse(order, f"not sent: {why_not}", now)
        pending = replace(order, reason="", ts_updated=now)
        t = self._track(pending, now)
        self._note_since(order.symbol, now)
        kind = "limit" if order.order_type is OrderType.LIMIT else "market"
        price = order.limit_price if order.order_type is OrderType.LIMIT else None
        if order.order_type is OrderType.STOP_MARKET and self._stop_limit_only(order.symbol):
            # The market takes no stop-market order: a stop-limit whose limit sits
            # native_stop_limit_bps beyond the trigger (on the tick grid, never inside it).
            trigger = order.stop_price or 0.0
            far = trigger * self.stop_limit_bps * 1e-4
            raw = trigger - far if order.side is Side.SELL else trigger + far
            kind, price = "limit", float(self.exchange.price_to_precision(order.symbol, raw))
        self.requests += 1
        self._retry_after = None
        try:
            resp = await self.exchange.create_order(
                order.symbol,
                kind,
                str(order.side),
                order.qty,
                price,
                self._create_params(t.vcid, order),
            )
        except Exception as exc:
            return await self._send_failed(t, exc)
        self.gate.succeeded()
        ack = resp if isinstance(resp, dict) else {}
        stranger = self._not_ours(t, ack)
        if stranger:
            # An answer about some other order says nothing about ours: its fate is unknown
            # until the look-up by our client id finds it (or the window ends).
            self.problems.append(stranger)
            return await self._outcome_unknown(t, stranger)
        return self._acknowledged(t, ack)

    def _not_ours(self, t: _Tracked, ack: dict[str, Any]) -> str:
        """Why a send's answer is about another order than the one sent ("" when it is ours):
        a client id that is not the one we sent, or an order id the engine already holds for
        another order."""
        cid, vid = ack.get("clientOrderId"), ack.get("id")
        coid = t.order.client_order_id
        if isinstance(cid, str) and cid and cid != t.vcid:
            return self.redactor.text(
                f"{self.venue} answered the send of {t.vcid} with order {vid} of client id "
                f"{cid}, not ours: not believed"
            )
        owner = self._by_venue_id.get(str(vid)) if vid not in (None, "") else None
        if owner is not None and owner != coid:
            return self.redactor.text(
                f"{self.venue} answered the send of {t.vcid} with order {vid}, which is "
                f"{owner}'s: not believed"
            )
        return ""

    async def _send_failed(self, t: _Tracked, exc: BaseException) -> list[OrderUpdate | Fill]:
        now = self._now()
        kind = classify(exc)
        why = self._why(exc)
        if kind == RATE_LIMITED:
            wait = self._penalize()
            return self._finish(
                t,
                OrderStatus.REJECTED,
                f"rate limited by {self.venue} (waiting {wait:.1f}s): {why}",
                now,
            )
        if kind == REFUSED:
            self.set_halted(f"{self.venue}: production endpoint refused in testnet mode")
            self.problems.append(why)
            return self._finish(t, OrderStatus.REJECTED, f"not sent: {why}", now)
        if kind in (REJECTED, NOT_FOUND):
            if isinstance(exc, ccxt.AuthenticationError):
                self.problems.append(why)
            if isinstance(exc, ccxt.InvalidOrder) and not isinstance(exc, ccxt.OrderNotFound):
                self.markets_stale = True  # its precision or limits may have changed
            return self._finish(t, OrderStatus.REJECTED, f"rejected by {self.venue}: {why}", now)
        return await self._outcome_unknown(t, why)

    async def _outcome_unknown(self, t: _Tracked, why: str) -> list[OrderUpdate | Fill]:
        """Ambiguous: it may be at the venue. Look it up now; otherwise keep it pending."""
        now = self._now()
        t.unresolved = why
        t.deadline_ns = now + self.window_ns
        out = await self._resolve(t, immediate=True)
        if out:
            return out
        t.order.reason = f"send outcome unknown ({why}); resolving by client order id"
        t.order.ts_updated = now
        return [OrderUpdate(replace(t.order), now)]

    def _finish(
        self, t: _Tracked, status: OrderStatus, reason: str, now: int
    ) -> list[OrderUpdate | Fill]:
        o = t.order
        self._untrack(t)
        if status not in o.status.successors:
            # A report that came back after the order finished (a send that failed, a look-up
            # that missed, while a poll had already seen it finish): the first end stands.
            self._anomaly(t, f"the venue's word would make it {status} ({reason})")
            return []
        o.move_to(status, now, reason)
        return [OrderUpdate(replace(o), now)]

    def _untrack(self, t: _Tracked) -> None:
        self._tracked.pop(t.order.client_order_id, None)

    def _anomaly(self, t: _Tracked, what: str, kept: str = "") -> None:
        """A venue report the transition table forbids for this order (a finished order
        reported live, or finishing a second way), or numbers no order can have: not
        believed, counted, and shown in ``problems`` (the Venues pane) so a person can look."""
        o = t.order
        self.status_anomalies += 1
        kept = kept or f"kept it {o.status} (a finished order never becomes live again)"
        self.problems.append(self.redactor.text(f"order {o.client_order_id}: {what}; {kept}"))

    def _acknowledged(self, t: _Tracked, resp: dict[str, Any]) -> list[OrderUpdate | Fill]:
        now = self._now()
        t.unresolved = ""
        vid = resp.get("id")
        if vid not in (None, ""):
            t.venue_id = str(vid)
            t.order.venue_order_id = t.venue_id
            self._by_venue_id[t.venue_id] = t.order.client_order_id
        out: list[OrderUpdate | Fill] = []
        if t.order.status is OrderStatus.PENDING_NEW:
            t.order.move_to(OrderStatus.NEW, now, "")
            out.append(OrderUpdate(replace(t.order), now))
        for trade in resp.get("trades") or []:
            if isinstance(trade, dict) and trade.get("id") not in (None, ""):
                trade = {**trade, "symbol": trade.get("symbol") or t.order.symbol}
                out.extend(self._apply_trade(t, venue_trade_from_ccxt(trade)))
        status = resp.get("status")
        if status:
            out.extend(
                self._apply_venue_order(
                    t,
                    venue_order_from_ccxt({**resp, "symbol": resp.get("symbol") or t.order.symbol}),
                )
            )
        return out

    # ------------------------------------------------------------------ look-ups

    async def find(
        self, symbol: str, vcid: str, *, cancel: bool = False, retries: int | None = None
    ) -> dict[str, Any] | None:
        """The venue's order with this client id, or None if the venue says there is none.

        Raises on ambiguous errors (the caller keeps the order unresolved). ``cancel`` lets the
        look-up use the cancel reserve (a look-up that finishes a cancel).
        """
        ex = self.exchange
        key = self.profile.client_id_param

        async def req(fn: Callable[[], Awaitable[Any]]) -> Any:
            return await self._request(fn, cancel=cancel, retries=retries)

        if self.profile.lookup == "fetch_order":
            try:
                found = await req(lambda: ex.fetch_order(None, symbol, {key: vcid}))
            except ccxt.OrderNotFound:
                return None
            if not isinstance(found, dict) or not (found.get("id") or found.get("clientOrderId")):
                return None  # some venues answer "not found" with an empty payload
            if found.get("clientOrderId") not in (None, vcid):
                return None
            return found
        opened = await req(lambda: ex.fetch_open_orders(symbol, None, None, {key: vcid}))
        for o in opened or []:
            if o.get("clientOrderId") == vcid:
                return o
        closed_fn = getattr(ex, self.profile.closed_method)
        closed = await req(lambda: closed_fn(symbol, None, None, {key: vcid}))
        for o in closed or []:
            if o.get("clientOrderId") == vcid:
                return o
        return None

    async def _find_by_venue_id(
        self, t: _Tracked, retries: int | None = None
    ) -> dict[str, Any] | None:
        """An adopted order carries no client id of ours: ask for it by the venue's id (where
        the venue has no look-up by id, in its open, then its closed orders)."""
        if self.profile.lookup == "open_closed":
            ex, sym = self.exchange, t.order.symbol
            for name in ("fetch_open_orders", self.profile.closed_method):
                listed = await self._request(
                    functools.partial(getattr(ex, name), sym), retries=retries
                )
                for o in listed or []:
                    if isinstance(o, dict) and str(o.get("id")) == t.venue_id:
                        return o
            return None
        try:
            found = await self._request(
                lambda: self.exchange.fetch_order(t.venue_id, t.order.symbol), retries=retries
            )
        except ccxt.OrderNotFound:
            return None
        return found if isinstance(found, dict) and found.get("id") else None

    async def _resolve(
        self, t: _Tracked, immediate: bool = False, retries: int | None = None
    ) -> list[OrderUpdate | Fill]:
        """Try once to learn an ambiguous order's fate by its client id."""
        now = self._now()
        if immediate and (self.gate.blocked_for() > 0 or self.gate.available() < 1):
            return []  # no token to spare now: the next poll will look
        try:
            found = await self.find(t.order.symbol, t.vcid, retries=0 if immediate else retries)
        except Exception as exc:
            t.order.reason = f"send outcome unknown; look-up failed ({self._why(exc)})"
            return []
        if found is not None:
            out = self._acknowledged(t, found)
            if t.cancel_requested and not t.order.status.is_terminal:
                out.extend(await self.cancel(t.order.client_order_id, t.cancel_requested))
            return out
        if now >= t.deadline_ns:
            secs = self.window_ns / NS_PER_SECOND
            why = f" (send failed: {t.unresolved})" if t.unresolved else ""
            return self._finish(
                t,
                OrderStatus.CANCELED,
                f"{NEVER_REACHED}: client order id {t.vcid} not found after {secs:g}s{why}",
                now,
            )
        return []

    # ------------------------------------------------------------------ recovery

    async def recover(self, orders: Iterable[Order]) -> list[OrderUpdate | Fill]:
        """Resolve orders whose intent was durable but whose acknowledgement never arrived.

        Each is looked up by client order id at the venue, never resent. Found: adopted (NEW, or
        whatever the venue says, with its fills). Not found and the consistency window since
        the intent has passed: CANCELED "never reached the venue". Not found within the window:
        kept pending; :meth:`poll` keeps looking until the window ends.
        """
        out: list[OrderUpdate | Fill] = []
        now = self._now()
        for order in orders:
            coid = order.client_order_id
            if coid in self._tracked:
                continue
            _require_pending(order, "recover")
            t = self._track(replace(order), now)
            t.unresolved = "engine restarted before the venue acknowledged"
            t.deadline_ns = order.ts_created + self.window_ns
            self._note_since(order.symbol, order.ts_created)
            out.extend(await self._resolve(t))
        return out

    # ------------------------------------------------------------------ cancels

    def _cancel_params(self, t: _Tracked) -> tuple[str | None, dict[str, Any]]:
        if t.venue_id:
            return t.venue_id, {}
        return None, {self.profile.client_id_param: t.vcid}

    async def cancel(
        self, client_order_id: str, reason: str = "canceled", retries: int | None = None
    ) -> list[OrderUpdate | Fill]:
        """Cancel an open order; unknown or finished ids change nothing.

        The final state comes from the venue: the cancel's answer when it is explicit, else a
        look-up by client id (the order may have filled meanwhile).
        """
        t = self._tracked.get(client_order_id)
        if t is None:
            return []
        t.cancel_requested = reason
        t.cancel_unanswered = False
        oid, params = self._cancel_params(t)
        ex = self.exchange
        try:
            resp = await self._request(
                lambda: ex.cancel_order(oid, t.order.symbol, params), cancel=True, retries=retries
            )
        except Exception as exc:
            kind = classify(exc)
            if kind not in (NOT_FOUND, REJECTED, AMBIGUOUS):
                self.problems.append(
                    f"cancel {client_order_id}: {self._why(exc)}; asked again at the next poll"
                )
                t.cancel_unanswered = True
                return []
            if t.unresolved and kind == NOT_FOUND:
                return []  # not there (yet): resolution will cancel it if it shows up
            if kind == AMBIGUOUS:
                # The venue may never have seen it: unless the look-up below finds the order
                # finished, the next poll that finds it open asks again (nothing else would:
                # an entry the kill switch cancelled stayed resting under it for good).
                t.cancel_unanswered = True
                self.problems.append(
                    f"cancel {client_order_id}: {self._why(exc)}; asked again at the next poll"
                )
            resp = None
        if (
            isinstance(resp, dict)
            and resp.get("status") == "canceled"
            and resp.get("filled") is not None
            and float(resp["filled"]) <= t.venue_filled + _DUST * t.order.qty
        ):
            return self._apply_venue_order(
                t,
                venue_order_from_ccxt({**resp, "symbol": t.order.symbol, "clientOrderId": t.vcid}),
            )
        try:
            found = await self.find(t.order.symbol, t.vcid, cancel=True, retries=retries)
        except Exception:
            return []  # the next poll will find out
        if found is None:
            return []
        out = self._acknowledged(t, found)
        if t.venue_status == "open" and not t.order.status.is_terminal:
            # Still working after the cancel (answered "unknown order" by a venue whose
            # order book lags its answers, or taken but not done yet): asked again at the
            # next poll that still finds it open.
            t.cancel_unanswered = True
        return out

    async def cancel_all(
        self, symbols: Iterable[str] | None = None, retries: int | None = None
    ) -> bool:
        """Cancel every open order on ``symbols`` (default: all known), then confirm none is
        left with ``fetch_open_orders``. True only when confirmed. ``retries`` per request
        (None: the broker's)."""
        syms = list(
            dict.fromkeys(
                list(symbols)
                if symbols is not None
                else [*self.symbols, *(t.order.symbol for t in self._tracked.values())]
            )
        )
        for t in self._tracked.values():
            if t.order.symbol in syms:
                t.cancel_requested = t.cancel_requested or "cancel all"
        ex = self.exchange
        for _round in range(2):
            for sym in syms:
                try:
                    if ex.has.get("cancelAllOrders") is True and _round == 0:
                        await self._request(
                            functools.partial(ex.cancel_all_orders, sym),
                            cancel=True,
                            retries=retries,
                        )
                    else:
                        opened = await self._request(
                            functools.partial(ex.fetch_open_orders, sym),
                            cancel=True,
                            retries=retries,
                        )
                        for o in opened or []:
                            with contextlib.suppress(ccxt.OrderNotFound):
                                await self._request(
                                    functools.partial(ex.cancel_order, o["id"], sym),
                                    cancel=True,
                                    retries=retries,
                                )
                except Exception as exc:
                    self.problems.append(f"cancel all on {sym}: {self._why(exc)}")
            left = 0
            confirmed = True
            for sym in syms:
                try:
                    opened = await self._request(
                        functools.partial(ex.fetch_open_orders, sym), cancel=True, retries=retries
                    )
                    left += len(opened or [])
                except Exception as exc:
                    confirmed = False
                    self.problems.append(f"confirm cancel all on {sym}: {self._why(exc)}")
            if confirmed and left == 0:
                return True
        return False

    async def answers(self) -> bool:
        """Whether the venue answers a private request now (one look at the open orders of
        one symbol, from the cancel reserve, not retried); a failure is in ``problems``."""
        symbol = next(iter(self.symbols), None)
        if symbol is None:
            return True
        wait = self.gate.blocked_for()
        if wait > 0:  # not waited out under the command lock (see poll)
            self.problems.append(f"{self.venue} rate limit: retry after {wait:.1f}s")
            return False
        try:
            await self._request(
                functools.partial(self.exchange.fetch_open_orders, symbol), cancel=True, retries=0
            )
        except Exception as exc:
            self.problems.append(f"{self.venue} does not answer: {self._why(exc)}")
            return False
        return True

    # ------------------------------------------------------------------ clock

    async def clock_offset_ms(self) -> float | None:
        """Our clock minus the venue's, in ms, from one ``fetch_time`` (taken at the middle of
        the round trip, so the error is at most half of it). None where the venue has none."""
        if not self.exchange.has.get("fetchTime"):
            return None
        await self.gate.acquire()  # wait for a token first: the wait is not round trip
        before = self._now()
        self.requests += 1
        self._retry_after = None
        try:
            server_ms = await self.exchange.fetch_time()  # one attempt: a retry is not a sample
        except Exception as exc:
            if classify(exc) == RATE_LIMITED:
                self._penalize()  # a 418 (IP ban) or 429 here holds every request, orders too
            raise
        after = self._now()
        self.gate.succeeded()
        if not isinstance(server_ms, int | float) or not math.isfinite(server_ms) or server_ms <= 0:
            return None
        if after - before > MAX_CLOCK_RTT_NS:
            return None  # too slow a round trip to say anything to the millisecond
        return (before + after) / 2 / NS_PER_MS - float(server_ms)

    # ------------------------------------------------------------------ dead-man switch

    @property
    def has_deadman(self) -> bool:
        """A countdown dead-man switch the heartbeats keep armed (see the venue profile)."""
        return (
            self.profile.deadman_countdown and self.exchange.has.get("cancelAllOrdersAfter") is True
        )

    async def heartbeat(self, timeout_s: float = 60.0) -> bool:
        """(Re-)arm the venue's dead-man switch: all orders are canceled if no heartbeat comes
        within ``timeout_s``. False where the venue has none (nothing is sent)."""
        if not self.has_deadman:
            return False
        ms = int(timeout_s * 1000)
        await self._request(lambda: self.exchange.cancel_all_orders_after(ms), cancel=True)
        self.deadman.update(armed=True, timeout_s=timeout_s, last_ok_ns=self._now(), error="")
        return True

    async def keep_deadman_armed(
        self, stop: asyncio.Event, interval_s: float = 20.0, timeout_s: float = 60.0
    ) -> None:
        """Heartbeat every ``interval_s`` until ``stop`` is set, then disarm. A heartbeat that
        fails is reported in ``problems`` and retried at the next interval; the venue cancels
        everything by itself if heartbeats stop for ``timeout_s``."""
        if not self.has_deadman:
            return
        while not stop.is_set():
            try:
                await self.heartbeat(timeout_s)
            except Exception as exc:
                why = self._why(exc)
                self.deadman["error"] = why
                self.problems.append(f"dead-man heartbeat: {why}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
        with contextlib.suppress(Exception):
            await self.disarm_deadman()

    async def disarm_deadman(self) -> bool:
        if not self.has_deadman:
            return False
        await self._request(lambda: self.exchange.cancel_all_orders_after(0), cancel=True)
        self.deadman["armed"] = False
        return True

    # ------------------------------------------------------------------ polling

    async def poll(self, retries: int | None = None) -> list[OrderUpdate | Fill]:
        """Order updates and fills since the last poll, for every order the broker tracks.

        ``retries=0`` for a background poll: a failed request waits for the next poll instead
        of holding the engine (and a kill switch) through a venue's slow retries. Nor through a
        rate limit's wait: while the venue's Retry-After runs such a poll asks nothing (it held
        the command lock, so the kill switch's cancels and its reply, for the whole wait: up to
        an hour for a 418 ban)."""
        if retries == 0 and self.gate.blocked_for() > 0:
            return []
        out: list[OrderUpdate | Fill] = []
        for t in [t for t in self._tracked.values() if t.unresolved]:
            out.extend(await self._resolve(t, retries=retries))
        symbols = sorted({t.order.symbol for t in self._tracked.values() if not t.unresolved})
        ex = self.exchange
        for sym in symbols:
            try:
                opened = await self._request(
                    functools.partial(ex.fetch_open_orders, sym), retries=retries
                )
                since = self._trades_since_ms.get(sym)
                trades = await self._request(
                    functools.partial(ex.fetch_my_trades, sym, since), retries=retries
                )
            except Exception as exc:
                self.problems.append(f"poll {sym}: {self._why(exc)}")
                continue
            for raw in trades or []:
                ts = raw.get("timestamp")
                if raw.get("id") in (None, ""):
                    self._idless_trade(raw)
                    continue
                self._unmatched[str(raw.get("id"))] = raw
                if isinstance(ts, int | float) and ts > 0:
                    cur = self._trades_since_ms.get(sym, 0)
                    self._trades_since_ms[sym] = max(cur, int(ts) - 60_000)
            out.extend(self._match_trades())
            by_vcid = {o.get("clientOrderId"): o for o in opened or [] if isinstance(o, dict)}
            by_id = {str(o.get("id")): o for o in opened or [] if isinstance(o, dict)}
            for t in [t for t in self._tracked.values() if t.order.symbol == sym]:
                if t.unresolved:
                    continue
                vo = by_vcid.get(t.vcid) or (by_id.get(t.venue_id) if t.venue_id else None)
                if vo is None:
                    try:
                        vo = (
                            await self._find_by_venue_id(t, retries)
                            if t.adopted
                            else await self.find(sym, t.vcid, retries=retries)
                        )
                        if (
                            vo is None
                            and t.venue_id
                            and not t.adopted
                            and self.profile.lookup == "fetch_order"
                        ):  # (elsewhere the look-up by client id spans open and closed orders)
                            vo = await self._find_by_venue_id(t, retries)
                    except Exception as exc:
                        self.problems.append(f"look up {t.order.client_order_id}: {self._why(exc)}")
                        continue
                    if vo is None:
                        out.extend(self._not_at_venue(t))
                        continue
                t.missing_since_ns = 0
                out.extend(self._acknowledged(t, vo))
                if (
                    t.cancel_unanswered
                    and t.venue_status == "open"
                    and not t.order.status.is_terminal
                ):
                    reason = t.cancel_requested
                    out.extend(await self.cancel(t.order.client_order_id, reason, retries))
            out.extend(self._match_trades())  # trades of orders whose venue id we just learned
        return out

    def _idless_trade(self, raw: dict[str, Any]) -> None:
        """A trade the venue gave no id: it cannot be told from another (the id is the fill's
        identity, its only defence against being booked twice or dropped as a duplicate of
        another), so it is not booked as a trade. Its order's own totals book it once the
        consistency window has passed; shown once in ``problems``."""
        key = repr(sorted((k, str(v)) for k, v in raw.items() if k != "info"))
        if key in self._idless_seen:
            return
        if len(self._idless_seen) > 5_000:
            self._idless_seen.clear()
        self._idless_seen.add(key)
        self.problems.append(
            self.redactor.text(
                f"{self.venue} listed a trade without an id (order {raw.get('order')}, "
                f"{raw.get('amount')} @ {raw.get('price')}): booked from the order's totals"
            )
        )

    def _not_at_venue(self, t: _Tracked) -> list[OrderUpdate | Fill]:
        """An order the venue does not know (not open, not found by client id nor by its order
        id): a send still under way, a look-up that lags, or an order the venue forgot (a
        testnet wiped, an old order purged). Once it has not been found for a whole
        consistency window it ends CANCELED, said in ``problems``; a trade of it that turns up
        later is a reconciliation difference a person answers. Kept open, it counted as
        exposure and was looked up at every poll, forever."""
        o = t.order
        if o.status is OrderStatus.PENDING_NEW:
            return []  # its send is under way: the answer (or the look-up by id) settles it
        now = self._now()
        if not t.missing_since_ns:
            t.missing_since_ns = now
        if now - t.missing_since_ns < self.window_ns:
            return []
        secs = (now - t.missing_since_ns) / NS_PER_SECOND
        ids = f"client id {t.vcid}" + (f" or order id {t.venue_id}" if t.venue_id else "")
        reason = f"{self.venue} no longer knows it (not open, not found by {ids} for {secs:g}s)"
        self.problems.append(self.redactor.text(f"order {o.client_order_id}: {reason}"))
        return self._finish(t, OrderStatus.CANCELED, reason, now)

    def _match_trades(self) -> list[OrderUpdate | Fill]:
        out: list[OrderUpdate | Fill] = []
        for tid, raw in list(self._unmatched.items()):
            vt = venue_trade_from_ccxt(raw)
            coid = (self._by_vcid.get(vt.client_id) if vt.client_id else None) or (
                self._by_venue_id.get(vt.venue_order_id) if vt.venue_order_id else None
            )
            t = self._tracked.get(coid) if coid else None
            if t is None:
                if len(self._unmatched) > 5_000:
                    del self._unmatched[tid]
                continue
            del self._unmatched[tid]
            out.extend(self._apply_trade(t, vt))
        return out

    def _fee(self, vt: VenueTrade) -> float:
        if math.isfinite(vt.fee):
            return vt.fee
        meta = self.metas.get(vt.symbol)
        rate = (meta.maker_fee if vt.liquidity == "maker" else meta.taker_fee) if meta else 0.0
        return vt.qty * vt.price * rate  # charged in a third currency: estimate at the rate

    @staticmethod
    def _position_qty(vt: VenueTrade, side: Side) -> float:
        """How far the trade moved the account's base balance: its quantity, less a fee the
        venue took in the base asset (a buy receives ``qty - fee``, a sell gives ``qty +
        fee``). Booked as the fill's quantity at the trade's price, with the fee's quote value
        as the fee, the position is the account's and cash moves by the trade's notional; an
        exit then sells what the account holds, not a commission more."""
        fee = vt.fee_base
        if not (math.isfinite(fee) and 0.0 < fee < vt.qty):
            return vt.qty  # none, or not believable: the fee stays in the quote figure alone
        return vt.qty - side.sign * fee

    @staticmethod
    def _unbookable(vt: VenueTrade, fee: float) -> str:
        """Why the journal could not keep this trade as a fill ("" when it can): the numbers a
        restart's restore refuses (engine/restore.py), so the engine could not start again."""
        for name, value in (("quantity", vt.qty), ("price", vt.price), ("fee", fee)):
            if not (math.isfinite(value) and abs(value) <= MAX_AMOUNT):
                return f"its {name} {value!r} is not a believable number"
        if abs(fee) > vt.qty * vt.price:
            return f"its fee {fee:g} is more than its value {vt.qty * vt.price:g}"
        return ""

    def _apply_trade(self, t: _Tracked, vt: VenueTrade) -> list[OrderUpdate | Fill]:
        fid = fill_id_for(self.venue, vt.trade_id)
        if not vt.trade_id or fid in t.fill_ids or not (vt.qty > 0 and vt.price > 0):
            return []  # (no id: see _idless_trade)
        t.fill_ids.add(fid)
        if t.from_totals > 0 and not SYNTHETIC_FILL.search(vt.trade_id):
            # A trade that lagged past the consistency window: the part of it the order's
            # totals already booked is in the position; only the rest is new.
            absorbed = min(vt.qty, t.from_totals)
            t.from_totals -= absorbed
            left = vt.qty - absorbed
            if left <= t.order.qty * _DUST:
                return []
            share = left / vt.qty
            vt = replace(vt, qty=left, fee=vt.fee * share, fee_base=vt.fee_base * share)
        fee = self._fee(vt)
        why_not = self._unbookable(vt, fee)
        if why_not:
            # Journaled, it would stop the next start (restore refuses the row): not booked.
            # Its order's own totals book the quantity after the consistency window.
            self._anomaly(
                t, f"trade {vt.trade_id} not booked: {why_not}", "its order's totals book it"
            )
            return []
        o = t.order
        prev = o.filled_qty
        qty = vt.qty
        filled = prev + qty
        ts = vt.ts or self._now()
        if filled - o.qty > o.qty * _DUST and not o.status.is_terminal:
            # More than the order had left: the venue traded it, so it is booked (the account
            # holds it), but no order does that: a person should look.
            self._anomaly(
                t,
                f"trade {vt.trade_id} ({qty:g}) is more than the {o.qty - prev:g} it had left",
                "booked as the venue traded it",
            )
        o.avg_fill_price = (o.avg_fill_price * prev + vt.price * qty) / filled
        o.fees += fee
        if o.qty - filled <= o.qty * _DUST:
            o.filled_qty = o.qty
            status = OrderStatus.FILLED
        else:
            o.filled_qty = filled
            status = OrderStatus.PARTIALLY_FILLED
        if status in o.status.successors:
            o.move_to(status, ts)
        else:
            # A trade after the order finished (canceled, rejected, or already filled): the
            # trade happened, so its fill is booked, but the order is not brought back to life.
            o.ts_updated = ts
            self._anomaly(
                t, f"trade {vt.trade_id} ({qty:g} @ {vt.price:g}) came after it was {o.status}"
            )
        fill = Fill(
            fid,
            o.client_order_id,
            o.strategy_id,
            o.symbol,
            self.venue,
            o.side,
            self._position_qty(vt, o.side),
            vt.price,
            fee,
            Liquidity.MAKER if vt.liquidity == "maker" else Liquidity.TAKER,
            ts,
        )
        if o.status.is_terminal:
            self._untrack(t)
        return [fill, OrderUpdate(replace(o), ts)]

    def _apply_venue_order(self, t: _Tracked, vo: VenueOrder) -> list[OrderUpdate | Fill]:
        """Fold the venue's view of an order into ours; terminal states wait for the fills."""
        now = self._now()
        o = t.order
        out: list[OrderUpdate | Fill] = []
        if vo.venue_order_id and not t.venue_id:
            t.venue_id = vo.venue_order_id
            o.venue_order_id = t.venue_id
            self._by_venue_id[t.venue_id] = o.client_order_id
        t.venue_status = vo.status
        filled = vo.filled
        if filled > o.qty * (1 + _DUST):
            # More filled than ordered is no order's total (a unit mix-up, a venue bug): only
            # real trades may take it past its quantity, never a fill made from these totals.
            if t.venue_filled < o.qty:
                self._anomaly(
                    t,
                    f"the venue reports {filled:g} filled of {o.qty:g}",
                    "counted as filled up to its quantity",
                )
            filled = o.qty
        t.venue_filled = max(t.venue_filled, filled)
        if vo.average:
            t.venue_average = vo.average
        if o.status.is_terminal:
            if vo.status == "open":
                self._anomaly(t, f"the venue reports it open with {vo.filled:g} filled")
            return out
        gap = t.venue_filled - o.filled_qty
        if gap > o.qty * _DUST:
            # The venue counts fills we have not seen as trades yet. Wait for them for one
            # consistency window, then book the difference from the order's own totals.
            if not t.gap_since_ns:
                t.gap_since_ns = now
            if now - t.gap_since_ns < self.window_ns:
                return out
            price = t.venue_average or vo.price or o.limit_price or 0.0
            if price <= 0:
                return out
            meta = self.metas.get(o.symbol)
            rate = meta.taker_fee if meta else 0.0
            synthetic = VenueTrade(
                trade_id=f"{t.vcid}-agg{t.synthetic + 1}",
                venue_order_id=t.venue_id,
                client_id=t.vcid,
                symbol=o.symbol,
                side=str(o.side),
                qty=gap,
                price=price,
                fee=gap * price * rate,
                fee_currency=None,
                liquidity="taker",
                ts=now,
            )
            why_not = self._unbookable(synthetic, synthetic.fee)
            if why_not:  # the totals' price is not believable either: the order stays open
                if not t.untrusted_totals:
                    self._anomaly(
                        t, f"its totals cannot be booked: {why_not}", "left open, not booked"
                    )
                t.untrusted_totals = True
                return out
            t.synthetic += 1
            t.from_totals += gap
            out.extend(self._apply_trade(t, synthetic))
            if o.status.is_terminal:
                return out
        t.gap_since_ns = 0
        if vo.status in ("canceled", "expired", "rejected", "closed"):
            if vo.status == "closed" and o.remaining <= o.qty * _DUST:
                return out
            # Rejected after part of it filled: what filled stands, so it ends canceled.
            rejected = vo.status == "rejected" and o.filled_qty <= 0
            status = OrderStatus.REJECTED if rejected else OrderStatus.CANCELED
            reason = t.cancel_requested or (
                "rejected by the venue" if vo.status == "rejected" else f"{vo.status} at the venue"
            )
            if vo.status == "closed":
                reason = f"closed at the venue with {o.remaining:g} unfilled"
            out.extend(self._finish(t, status, reason, now))
        return out

    # ------------------------------------------------------------------ key permissions

    async def key_permissions(self) -> dict[str, Any]:
        """What this key may do: ``{"trade": bool|None, "withdraw": bool|None, "source": str}``.

        None means the venue does not say (kraken has no such endpoint; binance's testnet has
        no key-restrictions endpoint, and withdrawals do not exist there), or its answer does
        not hold the permission as a true/false: a missing field is never "cannot". The bodies
        may contain the key itself; only the booleans leave this method.
        """
        ex = self.exchange
        kind = self.profile.permissions
        if kind == "binance" and self.mode == "testnet":
            acct = await self._request(lambda: ex.privateGetAccount())
            return {
                "trade": _flag(_field(acct, "canTrade")),
                "withdraw": None,
                "source": "account (testnet: no withdrawals, no key restrictions endpoint)",
            }
        if kind == "binance":
            r = await self._request(lambda: ex.sapiGetAccountApiRestrictions())
            return {
                "trade": _flag(_field(r, "enableSpotAndMarginTrading")),
                "withdraw": _flag(_field(r, "enableWithdrawals")),
                "source": "sapi/v1/account/apiRestrictions",
            }
        if kind == "kucoin":
            r = await self._request(lambda: ex.privateGetUserApiKey())
            text = _field(_field(r, "data"), "permission")
            if not isinstance(text, str) or not text.strip():
                return _unsaid("api/v1/user/api-key")
            perms = {p.strip().lower() for p in text.split(",") if p.strip()}
            return {
                "trade": "spot" in perms,
                "withdraw": any("withdraw" in p for p in perms),
                "source": "api/v1/user/api-key",
            }
        if kind == "bybit":
            r = _field(await self._request(lambda: ex.privateGetV5UserQueryApi()), "result")
            by_kind, read_only = _field(r, "permissions"), str(_field(r, "readOnly"))
            spot, wallet = _field(by_kind, "Spot"), _field(by_kind, "Wallet")
            if read_only not in ("0", "1") or not (
                isinstance(spot, list) and isinstance(wallet, list)
            ):
                return _unsaid("v5/user/query-api")
            return {
                "trade": read_only == "0" and "spottrade" in [str(p).lower() for p in spot],
                "withdraw": read_only == "0" and "withdraw" in [str(p).lower() for p in wallet],
                "source": "v5/user/query-api",
            }
        if kind == "okx":
            data = _field(await self._request(lambda: ex.privateGetAccountConfig()), "data")
            text = _field(data[0] if isinstance(data, list) and data else None, "perm")
            if not isinstance(text, str) or not text.strip():
                return _unsaid("api/v5/account/config")
            perms = {p.strip() for p in text.split(",")}
            return {
                "trade": "trade" in perms,
                "withdraw": "withdraw" in perms,
                "source": "api/v5/account/config",
            }
        await self._request(lambda: ex.fetch_balance())  # at least: the key authenticates
        return {
            "trade": None,
            "withdraw": None,
            "source": f"{self.exchange_id} does not report key permissions",
        }

    # ------------------------------------------------------------------ reconciliation

    async def snapshot(
        self,
        symbols: Iterable[str] | None = None,
        since_ns: int | None = None,
        retries: int | None = None,
    ) -> VenueSnapshot:
        """Open orders, trades since ``since_ns`` and balances, for :func:`reconcile`."""
        ex = self.exchange
        syms = list(symbols) if symbols is not None else list(self.symbols)
        now = self._now()
        since = since_ns if since_ns is not None else now - 24 * 3600 * NS_PER_SECOND
        opened: list[VenueOrder] = []
        trades: list[VenueTrade] = []
        for sym in syms:
            for o in (
                await self._request(functools.partial(ex.fetch_open_orders, sym), retries=retries)
                or []
            ):
                opened.append(venue_order_from_ccxt(o))
            raw = await self._request(
                functools.partial(ex.fetch_my_trades, sym, since // NS_PER_MS), retries=retries
            )
            for tr in raw or []:
                vt = venue_trade_from_ccxt(tr)
                trades.append(replace(vt, fee=self._fee(vt)))
        bal = await self._request(lambda: ex.fetch_balance(), retries=retries)
        totals = {
            str(k): float(v)
            for k, v in (bal.get("total") or {}).items()
            if isinstance(v, int | float) and math.isfinite(v)
        }
        return VenueSnapshot(self.venue, tuple(opened), tuple(trades), totals, since, now)

    async def balance_total(self, currency: str) -> float:
        """The account's total (free and in orders) of ``currency`` at the venue."""
        ex = self.exchange
        bal = await self._request(lambda: ex.fetch_balance())
        value = (bal.get("total") or {}).get(currency)
        return float(value) if isinstance(value, int | float) and math.isfinite(value) else 0.0

    def adopt(
        self, vo: VenueOrder, strategy_id: str = "operator", known_fill_ids: Iterable[str] = ()
    ) -> OrderUpdate:
        """Take an unknown venue order under the engine's management (an operator's "adopt").

        The engine id is ``adopt-<venue>-<venue order id>``; the caller journals the update.
        What the order had filled before is not taken into the position here: those trades
        are reconciliation differences of their own (``known_fill_ids`` are never applied
        again); from now on its fills are the engine's.
        """
        now = self._now()
        coid = adopted_order_id(self.venue, vo.venue_order_id)
        filled = min(max(vo.filled, 0.0), vo.qty)
        order = Order(
            client_order_id=coid,
            intent_id=coid,
            strategy_id=strategy_id,
            symbol=vo.symbol,
            venue=self.venue,
            side=Side(vo.side),
            order_type=OrderType.LIMIT if vo.order_type == "limit" else OrderType.MARKET,
            qty=vo.qty,
            limit_price=vo.price,
            status=OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.NEW,
            ts_created=vo.ts or now,
            ts_updated=now,
            filled_qty=filled,
            avg_fill_price=(vo.average or vo.price or 0.0) if filled > 0 else 0.0,
            reason="adopted from the venue",
        )
        t = self._track_adopted(order, vo.venue_order_id, vo.client_id)
        t.venue_filled = filled
        t.fill_ids.update(known_fill_ids)
        self._note_since(vo.symbol, now)
        return OrderUpdate(replace(order), now)

    def take_fill(self, vt: VenueTrade, strategy_id: str = "operator") -> Fill:
        """A venue trade a person adopted into the position (an unknown order's fill).

        Tied to the adopted order when there is one, so a later poll never applies it twice.
        """
        coid = (
            (self._by_vcid.get(vt.client_id) if vt.client_id else None)
            or (self._by_venue_id.get(vt.venue_order_id) if vt.venue_order_id else None)
            or adopted_order_id(self.venue, vt.venue_order_id or vt.trade_id)
        )
        fid = fill_id_for(self.venue, vt.trade_id)
        t = self._tracked.get(coid)
        if t is not None:
            t.fill_ids.add(fid)
        self._unmatched.pop(vt.trade_id, None)
        side = Side(vt.side)
        return Fill(
            fid,
            coid,
            t.order.strategy_id if t is not None else strategy_id,
            vt.symbol,
            self.venue,
            side,
            self._position_qty(vt, side),
            vt.price,
            self._fee(vt),
            Liquidity.MAKER if vt.liquidity == "maker" else Liquidity.TAKER,
            vt.ts or self._now(),
        )

    async def cancel_venue_order(self, vo: VenueOrder) -> bool:
        """Cancel an unknown venue order by its venue id (an operator's "cancel").

        True only when the venue says it is canceled. "Not found" is not taken as done: the
        order may have filled meanwhile, so its final state is looked up (a fill is then a
        difference of its own, found by the next reconciliation)."""
        ex = self.exchange
        try:
            await self._request(lambda: ex.cancel_order(vo.venue_order_id, vo.symbol), cancel=True)
        except ccxt.OrderNotFound:
            pass
        except Exception as exc:
            self.problems.append(f"cancel {vo.venue_order_id}: {self._why(exc)}")
            return False
        else:
            return True
        try:
            final = await self._request(
                lambda: ex.fetch_order(vo.venue_order_id, vo.symbol), cancel=True
            )
        except Exception as exc:
            self.problems.append(
                f"cancel {vo.venue_order_id}: not found, and its final state is unknown "
                f"({self._why(exc)})"
            )
            return False
        status = str((final or {}).get("status") or "")
        filled = float((final or {}).get("filled") or 0.0)
        if status in ("canceled", "expired", "rejected") and filled <= 0:
            return True
        self.problems.append(
            f"cancel {vo.venue_order_id}: the venue has it {status or 'in an unknown state'} "
            f"with {filled:g} filled, not canceled"
        )
        return False
