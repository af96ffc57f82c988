"""A loopback (127.0.0.1) aiohttp server that plays a venue for ccxt's real exchange classes.

One ``FakeVenue`` per test, for one of binance, kraken, kucoin, bybit or okx. It

* **verifies every private request's signature** the way the venue does (binance HMAC-SHA256 of
  the query, kraken HMAC-SHA512 over path + SHA256(nonce + body), kucoin/okx base64
  HMAC-SHA256 of timestamp + method + path + body, bybit HMAC of timestamp + key + recvWindow +
  payload) and counts the bad ones;
* keeps **orders by client id**, so a look-up after a timeout finds what really reached it and a
  duplicate would be visible;
* answers from the recorded bodies in ``tests/fixtures/venues`` (edited for the order at hand),
  including the venues' real error bodies;
* can be **scripted** per create: ``ok``, ``timeout`` (the order is placed, the answer comes too
  late), ``lost`` (the request hangs and never places anything), ``insufficient``; and it can
  answer a **429 storm** (every request during a period gets 429 with Retry-After);
* records the arrival time of every request (to count requests per second).

Nothing here touches the internet: the exchange's API URLs are pointed at the server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.test_venues_support import KEYS, fixture


@dataclass
class VOrder:
    vcid: str
    oid: str
    symbol: str  # the venue's market id
    side: str
    kind: str
    qty: str
    price: str
    status: str = "open"  # open | canceled
    ts: int = field(default_factory=lambda: int(time.time() * 1000))


@dataclass
class Hit:
    t: float  # time.monotonic() at arrival
    method: str
    path: str
    status: int = 0


class FakeVenue:
    def __init__(self, venue: str, *, sandbox: bool = False) -> None:
        self.venue = venue
        self.sandbox = sandbox
        self.orders: dict[str, VOrder] = {}
        self.hits: list[Hit] = []
        self.script: deque[str] = deque()
        self.storm_until = 0.0
        self.retry_after = 1
        self.bad_signatures = 0
        self.signed = 0
        self.hang_s = 3.0
        self.received = asyncio.Event()
        self.clock_offset_ms = 0
        self.withdraw = False
        self._seq = 0
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------------ server

    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.base

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self._closing.set()  # ends every hanging answer at once
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _hang(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closing.wait(), self.hang_s)

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.clock_offset_ms

    def point(self, ex: Any) -> None:
        """Point every REST URL of the exchange (live and sandbox) at this server."""

        def repoint(value: Any) -> Any:
            if isinstance(value, str):
                return re.sub(r"^https?://[^/]+", self.base, value)
            if isinstance(value, dict):
                return {k: repoint(v) for k, v in value.items()}
            return value

        urls = dict(ex.urls)
        for key in ("api", "test", "apiBackup"):
            if key in urls:
                urls[key] = repoint(urls[key])
        ex.urls = urls

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        hit = Hit(time.monotonic(), request.method, request.path)
        self.hits.append(hit)
        if hit.t < self.storm_until:
            hit.status = 429
            return web.json_response(
                self._rate_limit_body(), status=429, headers={"Retry-After": str(self.retry_after)}
            )
        response = await handler(request)
        hit.status = response.status
        return response

    def _next_id(self) -> str:
        self._seq += 1
        return str(self._seq)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.text()
        handler = getattr(self, f"_{self.venue}")
        status, payload = await handler(request, body)
        return web.json_response(payload, status=status)

    def _rate_limit_body(self) -> Any:
        return fixture(self.venue, "error_rate_limit")

    async def _create_outcome(self, order: VOrder) -> str:
        """What the script says for this create: place it (maybe answer late) or not."""
        step = self.script.popleft() if self.script else "ok"
        if step == "insufficient":
            return step
        if step == "lost":
            await self._hang()  # never placed; the client gives up first
            return step
        self.orders[order.vcid] = order
        self.received.set()
        if step == "timeout":
            await self._hang()  # placed, but the answer comes too late
        return "ok"

    def duplicates(self) -> int:
        return len(self.orders) - len({o.vcid for o in self.orders.values()})

    # ------------------------------------------------------------------ signatures

    def _check(self, ok: bool) -> bool:
        self.signed += 1
        if not ok:
            self.bad_signatures += 1
        return ok

    @staticmethod
    def _hmac(secret: bytes, payload: bytes, digest: Any = hashlib.sha256) -> bytes:
        return hmac.new(secret, payload, digest).digest()

    # ------------------------------------------------------------------ binance

    async def _binance(self, request: web.Request, body: str) -> tuple[int, Any]:
        path, method = request.path, request.method
        if path.endswith("/exchangeInfo"):
            return 200, fixture("binance", "exchange_info")
        if path.endswith("/time"):
            return 200, {"serverTime": self.now_ms()}
        raw = body if method == "POST" else request.query_string
        signed, _, sig = raw.rpartition("&signature=")
        good = request.headers.get("X-MBX-APIKEY") == KEYS["apiKey"] and hmac.compare_digest(
            self._hmac(KEYS["secret"].encode(), signed.encode()).hex(), sig
        )
        if not self._check(good):
            return 400, {"code": -1022, "msg": "Signature for this request is not valid."}
        q = dict(parse_qsl(signed))
        if abs(int(q.get("timestamp", 0)) - time.time() * 1000) > int(q.get("recvWindow", 5000)):
            return 400, {
                "code": -1021,
                "msg": "Timestamp for this request is outside of the recvWindow.",
            }
        if path.endswith("/api/v3/order") and method == "POST":
            vcid = q["newClientOrderId"]
            if vcid in self.orders and self.orders[vcid].status == "open":
                return 400, {"code": -2010, "msg": "Duplicate order sent."}
            order = VOrder(
                vcid,
                str(28457119235 + self._seq),
                q["symbol"],
                q["side"],
                q["type"],
                q["quantity"],
                q.get("price", "0"),
            )
            self._seq += 1
            if await self._create_outcome(order) == "insufficient":
                return 400, fixture("binance", "error_insufficient_balance")
            return 200, self._binance_order(order, transact=True)
        if path.endswith("/api/v3/order") and method == "GET":
            o = self.orders.get(q.get("origClientOrderId", ""))
            if o is None:
                return 400, fixture("binance", "error_order_not_found")
            return 200, self._binance_order(o)
        if path.endswith("/api/v3/order") and method == "DELETE":
            o = self.orders.get(q.get("origClientOrderId", "")) or next(
                (x for x in self.orders.values() if x.oid == q.get("orderId")), None
            )
            if o is None or o.status != "open":
                return 400, {"code": -2011, "msg": "Unknown order sent."}
            o.status = "canceled"
            return 200, self._binance_order(o)
        if path.endswith("/openOrders") and method == "GET":
            return 200, [self._binance_order(o) for o in self.orders.values() if o.status == "open"]
        if path.endswith("/openOrders") and method == "DELETE":
            out = []
            for o in self.orders.values():
                if o.status == "open":
                    o.status = "canceled"
                    out.append(self._binance_order(o))
            if not out:
                return 400, {"code": -2011, "msg": "Unknown order sent."}
            return 200, out
        if path.endswith("/myTrades"):
            return 200, []
        if path.endswith("/account"):
            return 200, fixture("binance", "account")
        if path.endswith("/apiRestrictions"):
            name = "api_restrictions_withdraw" if self.withdraw else "api_restrictions"
            return 200, fixture("binance", name)
        return 404, {"code": -1, "msg": f"no route {method} {path}"}

    def _binance_order(self, o: VOrder, transact: bool = False) -> dict[str, Any]:
        base = fixture("binance", "order_query")
        base.update(
            symbol=o.symbol,
            orderId=int(o.oid),
            clientOrderId=o.vcid,
            side=o.side,
            type=o.kind,
            origQty=o.qty,
            price=o.price,
            status="NEW" if o.status == "open" else "CANCELED",
            time=o.ts,
            updateTime=o.ts,
            isWorking=o.status == "open",
        )
        if transact:
            base["transactTime"] = o.ts
            base["fills"] = []
        return base

    # ------------------------------------------------------------------ kraken

    async def _kraken(self, request: web.Request, body: str) -> tuple[int, Any]:
        path = request.path
        if path.endswith("/public/AssetPairs"):
            return 200, fixture("kraken", "asset_pairs")
        if path.endswith("/public/Time"):
            return 200, {
                "error": [],
                "result": {"unixtime": self.now_ms() // 1000, "rfc1123": "now"},
            }
        q = dict(parse_qsl(body))
        digest = hashlib.sha256((q.get("nonce", "") + body).encode()).digest()
        expected = base64.b64encode(
            self._hmac(base64.b64decode(KEYS["secret"]), path.encode() + digest, hashlib.sha512)
        ).decode()
        good = request.headers.get("API-Key") == KEYS["apiKey"] and hmac.compare_digest(
            request.headers.get("API-Sign", ""), expected
        )
        if not self._check(good):
            return 200, {"error": ["EAPI:Invalid signature"]}
        if path.endswith("/AddOrder"):
            order = VOrder(
                q["cl_ord_id"],
                f"O{self._next_id():0>5}-FAKE-KRAKN",
                q["pair"],
                q["type"],
                q["ordertype"],
                q["volume"],
                q.get("price", "0"),
            )
            if await self._create_outcome(order) == "insufficient":
                return 200, fixture("kraken", "error_insufficient_funds")
            return 200, {"error": [], "result": {"descr": {"order": "placed"}, "txid": [order.oid]}}
        if path.endswith("/OpenOrders") or path.endswith("/ClosedOrders"):
            want = "open" if path.endswith("/OpenOrders") else "canceled"
            chosen = [
                o
                for o in self.orders.values()
                if o.status == want and q.get("cl_ord_id") in (None, o.vcid)
            ]
            key = "open" if want == "open" else "closed"
            result: dict[str, Any] = {key: {o.oid: self._kraken_order(o) for o in chosen}}
            if key == "closed":
                result["count"] = len(chosen)
            return 200, {"error": [], "result": result}
        if path.endswith("/CancelOrder"):
            o = self.orders.get(q.get("cl_ord_id", "")) or next(
                (x for x in self.orders.values() if x.oid == q.get("txid")), None
            )
            if o is None or o.status != "open":
                return 200, fixture("kraken", "error_unknown_order")
            o.status = "canceled"
            return 200, fixture("kraken", "cancel_order")
        if path.endswith("/TradesHistory"):
            return 200, {"error": [], "result": {"trades": {}, "count": 0}}
        if path.endswith("/BalanceEx"):
            return 200, fixture("kraken", "balance_ex")
        return 404, {"error": [f"EGeneral:Unknown method {path}"]}

    def _kraken_order(self, o: VOrder) -> dict[str, Any]:
        status = "open" if o.status == "open" else "canceled"
        base = fixture("kraken", "open_orders")["result"]["open"]["OUF4EM-FRGI2-MQMWZD"]
        base.update(cl_ord_id=o.vcid, status=status, vol=o.qty, opentm=o.ts / 1000)
        base["descr"].update(pair="XBTUSD", type=o.side, ordertype=o.kind, price=o.price)
        return base

    # ------------------------------------------------------------------ kucoin

    async def _kucoin(self, request: web.Request, body: str) -> tuple[int, Any]:
        path, method = request.path, request.method
        if path.endswith("/api/v2/symbols"):
            return 200, fixture("kucoin", "symbols")
        if path.endswith("/timestamp"):
            return 200, {**fixture("kucoin", "time"), "data": self.now_ms()}
        endpoint = request.raw_path
        h = request.headers
        secret = KEYS["secret"].encode()
        want_sign = base64.b64encode(
            self._hmac(secret, (h.get("KC-API-TIMESTAMP", "") + method + endpoint + body).encode())
        ).decode()
        want_pass = base64.b64encode(self._hmac(secret, KEYS["password"].encode())).decode()
        good = (
            h.get("KC-API-KEY") == KEYS["apiKey"]
            and h.get("KC-API-PASSPHRASE") == want_pass
            and hmac.compare_digest(h.get("KC-API-SIGN", ""), want_sign)
        )
        if not self._check(good):
            return 401, {"code": "400005", "msg": "Invalid KC-API-SIGN"}
        if path.endswith("/hf/accounts/opened"):
            return 200, fixture("kucoin", "hf_accounts_opened")
        if path.endswith("/user/api-key"):  # the answer echoes the key: it must not be printed
            doc = fixture("kucoin", "api_key")
            doc["data"]["apiKey"] = KEYS["apiKey"]
            return 200, doc
        if path.endswith("/api/v1/hf/orders") and method == "POST":
            q = json.loads(body)
            order = VOrder(
                q["clientOid"],
                f"66b55f81c1d4a5000{self._next_id():0>7}",
                q["symbol"],
                q["side"],
                q["type"],
                q["size"],
                q.get("price", "0"),
            )
            if await self._create_outcome(order) == "insufficient":
                return 200, fixture("kucoin", "error_insufficient_balance")
            return 200, {"code": "200000", "data": {"orderId": order.oid, "clientOid": order.vcid}}
        m = re.search(r"/hf/orders/client-order/([^/?]+)$", path)
        if m and method == "GET":
            o = self.orders.get(m.group(1))
            if o is None:
                return 400, fixture("kucoin", "error_order_not_exist")
            return 200, {"code": "200000", "data": self._kucoin_order(o)}
        if m and method == "DELETE":
            o = self.orders.get(m.group(1))
            if o is None or o.status != "open":
                return 400, fixture("kucoin", "error_order_not_exist")
            o.status = "canceled"
            return 200, {"code": "200000", "data": {"clientOid": o.vcid}}
        m = re.search(r"/hf/orders/([0-9a-f]{24})$", path)
        if m and method == "DELETE":
            o = next((x for x in self.orders.values() if x.oid == m.group(1)), None)
            if o is None or o.status != "open":
                return 400, fixture("kucoin", "error_order_not_exist")
            o.status = "canceled"
            return 200, {"code": "200000", "data": {"orderId": o.oid}}
        if path.endswith("/hf/orders/active"):
            return 200, {
                "code": "200000",
                "data": [self._kucoin_order(o) for o in self.orders.values() if o.status == "open"],
            }
        if path.endswith("/hf/fills"):
            return 200, {"code": "200000", "data": {"items": [], "lastId": 0}}
        return 404, {"code": "404000", "msg": f"Url Not Found {path}"}

    def _kucoin_order(self, o: VOrder) -> dict[str, Any]:
        base = fixture("kucoin", "order_by_client_oid")["data"]
        base.update(
            id=o.oid,
            clientOid=o.vcid,
            symbol=o.symbol,
            side=o.side,
            type=o.kind,
            size=o.qty,
            price=o.price,
            remainSize=o.qty,
            createdAt=o.ts,
            active=o.status == "open",
            inOrderBook=o.status == "open",
            cancelExist=o.status != "open",
        )
        return base

    # ------------------------------------------------------------------ bybit

    async def _bybit(self, request: web.Request, body: str) -> tuple[int, Any]:
        path, method = request.path, request.method
        if path.endswith("/market/instruments-info"):
            return 200, fixture("bybit", "instruments_spot")
        if path.endswith("/market/time"):
            ms = self.now_ms()
            return 200, {
                **fixture("bybit", "time"),
                "time": ms,
                "result": {"timeSecond": str(ms // 1000), "timeNano": str(ms * 10**6)},
            }
        h = request.headers
        payload = (
            h.get("X-BAPI-TIMESTAMP", "")
            + KEYS["apiKey"]
            + h.get("X-BAPI-RECV-WINDOW", "")
            + (body if method == "POST" else request.query_string)
        )
        want = self._hmac(KEYS["secret"].encode(), payload.encode()).hex()
        good = h.get("X-BAPI-API-KEY") == KEYS["apiKey"] and hmac.compare_digest(
            h.get("X-BAPI-SIGN", ""), want
        )
        if not self._check(good):
            return 200, {
                "retCode": 10004,
                "retMsg": "error sign!",
                "result": {},
                "retExtInfo": {},
                "time": int(time.time() * 1000),
            }
        if path.endswith("/user/query-api"):  # echoes the key too
            doc = fixture("bybit", "query_api")
            doc["result"]["apiKey"] = KEYS["apiKey"]
            return 200, doc
        if path.endswith("/account/info"):
            return 200, fixture("bybit", "account_info")
        if path.endswith("/order/create"):
            q = json.loads(body)
            order = VOrder(
                q["orderLinkId"],
                f"17501234567890{self._next_id():0>5}",
                q["symbol"],
                q["side"],
                q["orderType"],
                q["qty"],
                q.get("price", "0"),
            )
            if await self._create_outcome(order) == "insufficient":
                return 200, fixture("bybit", "error_insufficient_balance")
            return 200, {
                **fixture("bybit", "create_order"),
                "result": {"orderId": order.oid, "orderLinkId": order.vcid},
            }
        if path.endswith("/order/realtime") or path.endswith("/order/history"):
            q = dict(parse_qsl(request.query_string))
            want_status = "open" if path.endswith("/realtime") else "canceled"
            chosen = [
                self._bybit_order(o)
                for o in self.orders.values()
                if o.status == want_status and q.get("orderLinkId") in (None, o.vcid)
            ]
            return 200, {
                **fixture("bybit", "order_realtime_empty"),
                "result": {"nextPageCursor": "", "category": "spot", "list": chosen},
            }
        if path.endswith("/order/cancel"):
            q = json.loads(body)
            o = self.orders.get(q.get("orderLinkId", "")) or next(
                (x for x in self.orders.values() if x.oid == q.get("orderId")), None
            )
            if o is None or o.status != "open":
                return 200, fixture("bybit", "error_order_not_found")
            o.status = "canceled"
            return 200, {
                **fixture("bybit", "cancel_order"),
                "result": {"orderId": o.oid, "orderLinkId": o.vcid},
            }
        if path.endswith("/execution/list"):
            return 200, {
                **fixture("bybit", "executions"),
                "result": {"nextPageCursor": "", "category": "spot", "list": []},
            }
        return 404, {
            "retCode": 10001,
            "retMsg": f"no route {path}",
            "result": {},
            "retExtInfo": {},
            "time": 0,
        }

    def _bybit_order(self, o: VOrder) -> dict[str, Any]:
        base = fixture("bybit", "order_realtime")["result"]["list"][0]
        base.update(
            orderId=o.oid,
            orderLinkId=o.vcid,
            symbol=o.symbol,
            side=o.side,
            orderType=o.kind,
            qty=o.qty,
            price=o.price,
            leavesQty=o.qty,
            orderStatus="New" if o.status == "open" else "Cancelled",
            createdTime=str(o.ts),
            updatedTime=str(o.ts),
        )
        return base

    # ------------------------------------------------------------------ okx

    async def _okx(self, request: web.Request, body: str) -> tuple[int, Any]:
        path, method = request.path, request.method
        if path.endswith("/public/instruments"):
            return 200, fixture("okx", "instruments_spot")
        if path.endswith("/public/time"):
            return 200, {"code": "0", "data": [{"ts": str(self.now_ms())}], "msg": ""}
        h = request.headers
        prehash = h.get("OK-ACCESS-TIMESTAMP", "") + method + request.raw_path + body
        want = base64.b64encode(self._hmac(KEYS["secret"].encode(), prehash.encode())).decode()
        good = (
            h.get("OK-ACCESS-KEY") == KEYS["apiKey"]
            and h.get("OK-ACCESS-PASSPHRASE") == KEYS["password"]
            and hmac.compare_digest(h.get("OK-ACCESS-SIGN", ""), want)
            and (not self.sandbox or h.get("x-simulated-trading") == "1")
        )
        if not self._check(good):
            return 401, {"code": "50113", "msg": "Invalid Sign", "data": []}
        if path.endswith("/trade/batch-orders"):
            q = json.loads(body)[0]
            order = VOrder(
                q["clOrdId"],
                f"17523456789012{self._next_id():0>5}",
                q["instId"],
                q["side"],
                q["ordType"],
                q["sz"],
                q.get("px", "0"),
            )
            if await self._create_outcome(order) == "insufficient":
                return 200, fixture("okx", "error_insufficient_balance")
            return 200, {
                **fixture("okx", "create_order"),
                "data": [
                    {
                        "clOrdId": order.vcid,
                        "ordId": order.oid,
                        "tag": "",
                        "ts": str(order.ts),
                        "sCode": "0",
                        "sMsg": "Order placed",
                    }
                ],
            }
        if path.endswith("/trade/order") and method == "GET":
            q = dict(parse_qsl(request.query_string))
            o = self.orders.get(q.get("clOrdId", ""))
            if o is None:
                return 200, fixture("okx", "error_order_not_found")
            return 200, {"code": "0", "msg": "", "data": [self._okx_order(o)]}
        if path.endswith("/trade/orders-pending"):
            return 200, {
                "code": "0",
                "msg": "",
                "data": [self._okx_order(o) for o in self.orders.values() if o.status == "open"],
            }
        if path.endswith("/trade/cancel-order"):
            q = json.loads(body)
            o = self.orders.get(q.get("clOrdId", "")) or next(
                (x for x in self.orders.values() if x.oid == q.get("ordId")), None
            )
            if o is None or o.status != "open":
                return 200, {
                    "code": "1",
                    "msg": "",
                    "data": [
                        {
                            "clOrdId": "",
                            "ordId": "",
                            "sCode": "51400",
                            "sMsg": "Cancellation failed as the order does not exist.",
                        }
                    ],
                }
            o.status = "canceled"
            return 200, {
                **fixture("okx", "cancel_order"),
                "data": [{"clOrdId": o.vcid, "ordId": o.oid, "sCode": "0", "sMsg": ""}],
            }
        if path.endswith("/account/config"):
            return 200, fixture("okx", "account_config")
        if path.endswith("/trade/fills") or path.endswith("/trade/fills-history"):
            return 200, {"code": "0", "msg": "", "data": []}
        return 404, {"code": "50000", "msg": f"no route {path}", "data": []}

    def _okx_order(self, o: VOrder) -> dict[str, Any]:
        base = fixture("okx", "order")["data"][0]
        base.update(
            clOrdId=o.vcid,
            ordId=o.oid,
            instId=o.symbol,
            side=o.side,
            ordType=o.kind,
            sz=o.qty,
            px=o.price,
            state="live" if o.status == "open" else "canceled",
            cTime=str(o.ts),
            uTime=str(o.ts),
        )
        return base


def per_second_peak(times: list[float]) -> int:
    """The most requests that arrived within any one-second window."""
    times = sorted(times)
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best
