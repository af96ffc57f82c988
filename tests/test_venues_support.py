"""Helpers for the venue tests: recorded HTTP bodies behind ccxt's real classes, offline.

``RecordedHttp`` replaces an exchange instance's ``fetch`` with one that answers from the JSON
bodies in ``tests/fixtures/venues/<venue>/`` and then does exactly what ccxt's own ``fetch`` does
with an answer: ``on_rest_response``, JSON parsing, the exchange's ``handle_errors`` and
``handle_http_status_code``. So error bodies raise the same ccxt exceptions a real venue's would,
and every request ccxt built (URL, signed headers, body) is recorded for the tests to inspect.

``FakeVenueServer`` (with ``test_venues_loopback``) is the loopback aiohttp counterpart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "venues"
VENUES = ("binance", "kraken", "kucoin", "bybit", "okx")
SYMBOL = {
    "binance": "BTC/USDT",
    "kraken": "BTC/USD",
    "kucoin": "BTC/USDT",
    "bybit": "BTC/USDT",
    "okx": "BTC/USDT",
}
HAS_SANDBOX = {"binance": True, "kraken": False, "kucoin": False, "bybit": True, "okx": True}

# Test credentials: long and distinctive, so a leak anywhere is easy to find. The kraken secret
# must be base64 (kraken signs with the decoded secret).
KEYS = {
    "apiKey": "TESTKEYa8f3c91e5d7b4c2a9e0f1d3b5c7a9e1f",
    "secret": "U0VDUkVUZGQ5YjJmNGE3YzFlOGQ2YjNmNWEyYzRlNmQ4YjBmMmE0YzZlOGQ=",
    "password": "PASSPHRASE7c1d9e3f5a",
}
ENV = {"apiKey": "CK_TEST_KEY", "secret": "CK_TEST_SECRET", "password": "CK_TEST_PASS"}


def fixture(venue: str, name: str) -> Any:
    return json.loads((FIXTURES / venue / f"{name}.json").read_text())


@dataclass
class Route:
    method: str
    pattern: str  # a regex searched in the full URL
    body: Any  # a fixture name (str), a JSON-able object, or fn(Call) -> (status, body[, headers])
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = None  # answer this many times, then let later routes answer

    def matches(self, method: str, url: str) -> bool:
        return method.upper() == self.method and re.search(self.pattern, url) is not None


@dataclass
class Call:
    method: str
    url: str
    headers: dict[str, Any]
    body: Any

    @property
    def path(self) -> str:
        return self.url.split("?")[0]


class RecordedHttp:
    """A patched ``fetch`` answering from recorded bodies; see the module docstring."""

    def __init__(self, ex: Any, venue: str, routes: list[Route]) -> None:
        self.ex = ex
        self.venue = venue
        self.routes = list(routes)
        self.calls: list[Call] = []
        self.unmatched: list[str] = []
        ex.fetch = self.fetch

    def add(self, *routes: Route) -> None:
        """Routes added later take precedence (for one test's special answers)."""
        self.routes[:0] = list(routes)

    async def fetch(
        self, url: str, method: str = "GET", headers: Any = None, body: Any = None
    ) -> Any:
        ex = self.ex
        request_headers = ex.prepare_request_headers(headers)
        # What ccxt's own fetch logs (keys and all): the broker's logger must redact it.
        ex.logger.debug("%s %s, Request: %s %s", method, url, request_headers, body)
        call = Call(method, url, dict(request_headers), body)
        self.calls.append(call)
        for route in self.routes:
            if route.matches(method, url):
                if route.times is not None:
                    if route.times <= 0:
                        continue
                    route.times -= 1
                break
        else:
            self.unmatched.append(f"{method} {url}")
            raise AssertionError(f"no recorded answer for {method} {url}")
        status, payload, resp_headers = route.status, route.body, dict(route.headers)
        if callable(payload):
            answer = payload(call)
            status, payload = answer[0], answer[1]
            if len(answer) > 2:
                resp_headers.update(answer[2])
        if isinstance(payload, str) and not payload.lstrip().startswith(("{", "[")):
            payload = fixture(self.venue, payload)
        text = payload if isinstance(payload, str) else json.dumps(payload)
        reason = {
            200: "OK",
            400: "Bad Request",
            401: "Unauthorized",
            403: "Forbidden",
            404: "Not Found",
            418: "I'm a teapot",
            429: "Too Many Requests",
            500: "Internal Server Error",
            503: "Service Unavailable",
        }.get(status, "")
        text = ex.on_rest_response(
            status, reason, url, method, resp_headers, text, request_headers, body
        )
        parsed = ex.parse_json(text)
        ex.last_http_response = text
        ex.last_response_headers = resp_headers
        ex.handle_errors(
            status, reason, url, method, resp_headers, text, parsed, request_headers, body
        )
        ex.handle_http_status_code(status, reason, url, method, text)
        return parsed


def R(method: str, pattern: str, body: Any, status: int = 200, **kw: Any) -> Route:
    return Route(method, pattern, body, status, **kw)


def default_routes(venue: str) -> list[Route]:
    """The recorded happy-path answers of each venue (markets, time, ticker, orders...)."""
    if venue == "binance":
        return [
            R("GET", r"/api/v3/exchangeInfo", "exchange_info"),
            R("GET", r"/api/v3/time", "time"),
            R("GET", r"/api/v3/ticker/24hr", "ticker_24hr"),
            R("POST", r"/api/v3/order\b", "order_new_limit"),
            R("GET", r"/api/v3/order\?", "order_query"),
            R("DELETE", r"/api/v3/order\?", "cancel_order"),
            R("GET", r"/api/v3/openOrders", "open_orders"),
            R("DELETE", r"/api/v3/openOrders", "cancel_all"),
            R("GET", r"/api/v3/myTrades", "my_trades"),
            R("GET", r"/api/v3/account", "account"),
            R("GET", r"/sapi/v1/account/apiRestrictions", "api_restrictions"),
        ]
    if venue == "kraken":
        return [
            R("GET", r"/0/public/AssetPairs", "asset_pairs"),
            R("GET", r"/0/public/Time", "time"),
            R("GET", r"/0/public/Ticker", "ticker"),
            R("POST", r"/0/private/AddOrder", "add_order"),
            R("POST", r"/0/private/OpenOrders", "open_orders"),
            R("POST", r"/0/private/ClosedOrders", "closed_orders_empty"),
            R("POST", r"/0/private/CancelOrder", "cancel_order"),
            R("POST", r"/0/private/CancelAllOrdersAfter", "cancel_all_after"),
            R("POST", r"/0/private/CancelAll\b", "cancel_all"),
            R("POST", r"/0/private/TradesHistory", "trades_history"),
            R("POST", r"/0/private/BalanceEx", "balance_ex"),
        ]
    if venue == "kucoin":
        return [
            R("GET", r"/api/v2/symbols", "symbols"),
            R("GET", r"/api/v1/hf/accounts/opened", "hf_accounts_opened"),
            R("GET", r"/api/v1/timestamp", "time"),
            R("GET", r"/api/v1/market/stats", "ticker_stats"),
            R("GET", r"/api/v1/market/orderbook/level2_20", "orderbook_level2_20"),
            R("POST", r"/api/v1/hf/orders$", "create_order"),
            R("GET", r"/api/v1/hf/orders/client-order/", "order_by_client_oid"),
            R("DELETE", r"/api/v1/hf/orders/client-order/", "cancel_by_client_oid"),
            R("DELETE", r"/api/v1/hf/orders/[0-9a-f]{24}\?", "cancel_by_order_id"),
            R("GET", r"/api/v1/hf/orders/active", "open_orders"),
            R("DELETE", r"/api/v1/hf/orders\?", "cancel_all"),
            R("GET", r"/api/v1/hf/fills", "fills"),
            R("GET", r"/api/v1/accounts", "accounts"),
            R("GET", r"/api/v1/user/api-key", "api_key"),
        ]
    if venue == "bybit":
        return [
            R("GET", r"/v5/market/instruments-info", "instruments_spot"),
            R("GET", r"/v5/market/time", "time"),
            R("GET", r"/v5/market/tickers", "ticker"),
            R("GET", r"/v5/user/query-api", "query_api"),
            R("GET", r"/v5/account/info", "account_info"),
            R("POST", r"/v5/order/create", "create_order"),
            R("GET", r"/v5/order/realtime", "order_realtime"),
            R("GET", r"/v5/order/history", "order_history_empty"),
            R("POST", r"/v5/order/cancel-all", "cancel_all"),
            R("POST", r"/v5/order/cancel\b", "cancel_order"),
            R("GET", r"/v5/execution/list", "executions"),
            R("GET", r"/v5/account/wallet-balance", "wallet_balance"),
            R(
                "POST",
                r"/v5/order/disconnected-cancel-all",
                {
                    "retCode": 0,
                    "retMsg": "success",
                    "result": {},
                    "retExtInfo": {},
                    "time": 1723161600250,
                },
            ),
        ]
    if venue == "okx":
        return [
            R("GET", r"/api/v5/public/instruments", "instruments_spot"),
            R("GET", r"/api/v5/public/time", "time"),
            R("GET", r"/api/v5/market/ticker\b", "ticker"),
            R("POST", r"/api/v5/trade/batch-orders", "create_order"),
            R("GET", r"/api/v5/trade/order\?", "order"),
            R("GET", r"/api/v5/trade/orders-pending", "orders_pending"),
            R("POST", r"/api/v5/trade/cancel-order", "cancel_order"),
            R("POST", r"/api/v5/trade/cancel-all-after", "cancel_all_after"),
            R("GET", r"/api/v5/trade/fills", "fills_history"),
            R("GET", r"/api/v5/account/balance", "balance"),
            R("GET", r"/api/v5/account/config", "account_config"),
        ]
    raise KeyError(venue)


def venue_env(monkeypatch: Any) -> None:
    for name, var in ENV.items():
        monkeypatch.setenv(var, KEYS[name])


def venue_config(venue: str, testnet: bool) -> Any:
    from engine.config import VenueConfig

    return VenueConfig(
        exchange=venue,
        testnet=testnet,
        api_key_env=ENV["apiKey"],
        secret_env=ENV["secret"],
        password_env=ENV["password"],
    )


class FakeClock:
    """A virtual clock: ``sleep`` advances it instantly (and yields to the loop)."""

    def __init__(self, start_ns: int = 1_723_161_600_000_000_000) -> None:
        self.ns = start_ns
        self.slept: list[float] = []

    def time_ns(self) -> int:
        return self.ns

    def monotonic(self) -> float:
        return self.ns / 1e9

    async def sleep(self, seconds: float) -> None:
        import asyncio

        self.slept.append(seconds)
        if seconds > 0:
            self.ns += max(int(seconds * 1e9), 1)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * 1e9)


def make_broker(
    monkeypatch: Any,
    venue: str,
    *,
    testnet: bool | None = None,
    routes: list[Route] | None = None,
    clock: FakeClock | None = None,
    **kwargs: Any,
) -> tuple[Any, RecordedHttp]:
    """A CcxtBroker on recorded bodies (never the network) and its recorder."""
    from engine.venues.ccxt_broker import CcxtBroker

    venue_env(monkeypatch)
    if testnet is None:
        testnet = HAS_SANDBOX[venue]
    clock = clock or FakeClock()
    broker = CcxtBroker(
        venue,
        venue_config(venue, testnet),
        "testnet" if testnet else "live",
        symbols=[SYMBOL[venue]],
        clock_ns=clock.time_ns,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        **kwargs,
    )
    broker.exchange.enableRateLimit = False  # the gate is what these tests look at
    http = RecordedHttp(
        broker.exchange, venue, routes if routes is not None else default_routes(venue)
    )
    return broker, http


def new_order(
    venue: str,
    coid: str = "ck-1-1",
    *,
    qty: float = 0.001,
    price: float | None = 61000.0,
    side: str = "buy",
    ts: int | None = None,
) -> Any:
    from engine.types import Order, OrderStatus, OrderType, Side

    t = ts if ts is not None else 1_723_161_600_000_000_000
    return Order(
        client_order_id=coid,
        intent_id=coid,
        strategy_id="s1",
        symbol=SYMBOL[venue],
        venue=venue,
        side=Side(side),
        order_type=OrderType.LIMIT if price is not None else OrderType.MARKET,
        qty=qty,
        limit_price=price,
        status=OrderStatus.PENDING_NEW,
        ts_created=t,
        ts_updated=t,
    )


def error_answer(venue: str, name: str, status: int = 400) -> Callable[[Call], tuple[int, Any]]:
    body = fixture(venue, name)
    return lambda call: (status, body)
