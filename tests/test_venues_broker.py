"""CcxtBroker logic on recorded bodies and a virtual clock: ambiguity, limits, cancels, polls.

Mostly binance (the richest recorded set); the behaviours are venue-independent. A virtual clock
(``FakeClock``) makes consistency windows and Retry-After waits instant and exact.
"""

from __future__ import annotations

import logging
from typing import Any

import ccxt
import pytest

from engine.types import Fill, OrderStatus, OrderUpdate
from engine.venues.ccxt_broker import (
    AMBIGUOUS,
    NEVER_REACHED,
    NOT_FOUND,
    RATE_LIMITED,
    REJECTED,
    BrokerConfigError,
    CcxtBroker,
    classify,
    retry_after_from_headers,
)
from engine.venues.reconcile import JournalSnapshot, build
from tests.test_venues_support import (
    KEYS,
    SYMBOL,
    VENUES,
    Call,
    FakeClock,
    R,
    error_answer,
    fixture,
    make_broker,
    new_order,
    venue_config,
)


def _creates(http: Any) -> list[Call]:
    return [c for c in http.calls if c.method == "POST" and c.path.endswith("/api/v3/order")]


def _raise(exc: BaseException) -> Any:
    def answer(call: Call) -> Any:
        raise exc

    return answer


async def _started(monkeypatch: Any, venue: str = "binance", **kw: Any) -> tuple[Any, Any, Any]:
    clock = FakeClock()
    broker, http = make_broker(monkeypatch, venue, clock=clock, **kw)
    await broker.start()
    return broker, http, clock


# ---------------------------------------------------------------------- ambiguity


async def test_timeout_resolved_by_lookup_found(monkeypatch: Any) -> None:
    broker, http, _ = await _started(monkeypatch)
    http.add(R("POST", r"/api/v3/order\b", _raise(ccxt.RequestTimeout("binance POST timed out"))))
    out = await broker.submit(new_order("binance"))
    await broker.close()
    assert [u.order.status for u in out] == [OrderStatus.NEW]
    assert len(_creates(http)) == 1  # looked up, never resent
    lookups = [c for c in http.calls if c.method == "GET" and "origClientOrderId=ck-1-1" in c.url]
    assert len(lookups) == 1


async def test_timeout_not_found_stays_live_then_never_reached(monkeypatch: Any) -> None:
    broker, http, clock = await _started(monkeypatch)
    http.add(
        R("POST", r"/api/v3/order\b", _raise(ccxt.RequestTimeout("timed out"))),
        R("GET", r"/api/v3/order\?", error_answer("binance", "error_order_not_found")),
    )
    out = await broker.submit(new_order("binance"))
    assert [u.order.status for u in out] == [OrderStatus.PENDING_NEW]
    assert "resolving by client order id" in out[0].order.reason
    # Until resolved it counts as live: it is an open order of the broker.
    assert [o.status for o in broker.open_orders()] == [OrderStatus.PENDING_NEW]
    clock.advance(5)
    assert await broker.poll() == []  # still inside the consistency window
    clock.advance(11)
    out = await broker.poll()
    await broker.close()
    assert [u.order.status for u in out] == [OrderStatus.CANCELED]
    assert NEVER_REACHED in out[0].order.reason and "RequestTimeout" in out[0].order.reason
    assert broker.open_orders() == []
    assert len(_creates(http)) == 1
    assert len([c for c in http.calls if "origClientOrderId=ck-1-1" in c.url]) == 3


async def test_timeout_order_appears_later_and_is_adopted(monkeypatch: Any) -> None:
    broker, http, clock = await _started(monkeypatch)
    http.add(
        R("POST", r"/api/v3/order\b", _raise(ccxt.NetworkError("connection reset"))),
        R("GET", r"/api/v3/order\?", error_answer("binance", "error_order_not_found"), times=1),
    )
    out = await broker.submit(new_order("binance"))
    assert out[0].order.status is OrderStatus.PENDING_NEW
    clock.advance(3)
    out = await broker.poll()
    await broker.close()
    assert next(u.order.status for u in out if isinstance(u, OrderUpdate)) is OrderStatus.NEW
    assert len(_creates(http)) == 1


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (503, {"code": -1000, "msg": "An unknown error occured while processing the request."}),
        (502, "<html><body>502 Bad Gateway</body></html>"),
        (200, {"code": -1006, "msg": "Unexpected response. Execution status unknown."}),
        (400, {"code": -2010, "msg": "Duplicate order sent."}),
    ],
)
async def test_5xx_unknown_status_and_duplicates_are_ambiguous(
    monkeypatch: Any, status: int, body: Any
) -> None:
    broker, http, _ = await _started(monkeypatch)
    http.add(R("POST", r"/api/v3/order\b", lambda call: (status, body)))
    out = await broker.submit(new_order("binance"))
    await broker.close()
    # Looked up by client id at once, found, adopted: never rejected, never resent.
    assert [u.order.status for u in out] == [OrderStatus.NEW]
    assert len(_creates(http)) == 1


def test_classification_of_ccxt_errors() -> None:
    assert classify(ccxt.InsufficientFunds("x")) == REJECTED
    assert classify(ccxt.InvalidOrder("x")) == REJECTED
    assert classify(ccxt.BadSymbol("x")) == REJECTED
    assert classify(ccxt.AuthenticationError("x")) == REJECTED
    assert classify(ccxt.InvalidNonce("x")) == REJECTED
    assert classify(ccxt.OrderNotFound("x")) == NOT_FOUND
    assert classify(ccxt.RateLimitExceeded("x")) == RATE_LIMITED
    assert classify(ccxt.DDoSProtection("x")) == RATE_LIMITED
    for exc in (
        ccxt.RequestTimeout("x"),
        ccxt.NetworkError("x"),
        ccxt.ExchangeNotAvailable("x"),
        ccxt.OnMaintenance("x"),
        ccxt.ExchangeError("unmapped"),
        ccxt.BadResponse("x"),
        ccxt.InvalidOrder("Duplicate order sent."),
        ccxt.DuplicateOrderId("x"),
        RuntimeError("a bug"),
    ):
        assert classify(exc) == AMBIGUOUS, exc


# ---------------------------------------------------------------------- rate limits


async def test_429_rejects_blocks_the_venue_and_honours_retry_after(monkeypatch: Any) -> None:
    broker, http, clock = await _started(monkeypatch)
    http.add(
        R(
            "POST",
            r"/api/v3/order\b",
            error_answer("binance", "error_rate_limit", 429),
            headers={"Retry-After": "7"},
            times=1,
        )
    )
    out = await broker.submit(new_order("binance", "ck-1-1"))
    assert out[0].order.status is OrderStatus.REJECTED
    assert "rate limited" in out[0].order.reason
    assert broker.gate.blocked_for() == pytest.approx(7.0)
    n = len(http.calls)
    # A new order during the penalty is refused without a request.
    out = await broker.submit(new_order("binance", "ck-1-2"))
    assert out[0].order.status is OrderStatus.REJECTED and "not sent" in out[0].order.reason
    assert len(http.calls) == n
    # A cancel waits the penalty out (virtual time), then goes.
    t0 = clock.ns
    acked = new_order("binance", "ck-1-3")
    acked.status = OrderStatus.NEW
    broker.restore([acked])
    await broker.cancel("ck-1-3")
    await broker.close()
    assert (clock.ns - t0) / 1e9 >= 7.0 - 1e-6
    assert len(http.calls) > n


async def test_cancels_keep_their_reserve(monkeypatch: Any) -> None:
    broker, _, clock = await _started(monkeypatch, rate_per_s=0.1, burst=5, cancel_reserve=3)
    # start() used one token (load_markets); one submit takes the bucket to the reserve.
    await broker.submit(new_order("binance", "ck-1-1"))
    assert broker.gate.available() < 1  # normal requests must wait now...
    slept_before = list(clock.slept)
    await broker.cancel("ck-1-1")
    assert clock.slept == slept_before  # ...but the cancel went at once
    # An ordinary request now waits for the bucket to refill past the reserve.
    await broker.submit(new_order("binance", "ck-1-2"))
    await broker.close()
    assert sum(clock.slept) > 0


def test_retry_after_headers() -> None:
    assert retry_after_from_headers({"Retry-After": "3"}, 0) == 3.0
    assert retry_after_from_headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0) == 0.0
    assert retry_after_from_headers({"gw-ratelimit-reset": "1500"}, 0) == 1.5
    assert retry_after_from_headers({"X-Bapi-Limit-Reset-Timestamp": "10500"}, 10_000) == 0.5
    assert retry_after_from_headers({}, 0) is None


# ---------------------------------------------------------------------- cancels


class _Book:
    """A stateful binance open-orders list for cancel-all tests."""

    def __init__(self, orders: list[dict[str, Any]], stubborn: bool = False) -> None:
        self.orders = orders
        self.stubborn = stubborn

    def open(self, call: Call) -> Any:
        return 200, list(self.orders)

    def cancel_all(self, call: Call) -> Any:
        gone = [] if self.stubborn else list(self.orders)
        if not self.stubborn:
            self.orders = []
        return 200, [{**o, "status": "CANCELED"} for o in gone]

    def cancel_one(self, call: Call) -> Any:
        if self.stubborn:
            return 400, {"code": -2011, "msg": "Unknown order sent."}
        self.orders = [o for o in self.orders if str(o["orderId"]) not in call.url]
        return 200, fixture("binance", "cancel_order")


@pytest.mark.parametrize("stubborn", [False, True])
async def test_cancel_all_confirms_nothing_is_left(monkeypatch: Any, stubborn: bool) -> None:
    broker, http, _ = await _started(monkeypatch)
    book = _Book(
        fixture("binance", "open_orders") + fixture("binance", "open_orders_unknown"), stubborn
    )
    http.add(
        R("GET", r"/api/v3/openOrders", book.open),
        R("DELETE", r"/api/v3/openOrders", book.cancel_all),
        R("DELETE", r"/api/v3/order\?", book.cancel_one),
    )
    confirmed = await broker.cancel_all([SYMBOL["binance"]])
    await broker.close()
    assert confirmed is (not stubborn)
    confirms = [c for c in http.calls if c.method == "GET" and "/openOrders" in c.url]
    assert confirms  # the answer is what fetch_open_orders said afterwards


async def test_cancel_all_one_by_one_where_the_venue_has_no_cancel_all(monkeypatch: Any) -> None:
    broker, http, _ = await _started(monkeypatch, "okx")
    state = {"open": fixture("okx", "orders_pending")}

    def pending(call: Call) -> Any:
        return 200, state["open"]

    def cancel(call: Call) -> Any:
        state["open"] = {**state["open"], "data": []}
        return 200, fixture("okx", "cancel_order")

    http.add(
        R("GET", r"/api/v5/trade/orders-pending", pending),
        R("POST", r"/api/v5/trade/cancel-order", cancel),
    )
    assert broker.exchange.has["cancelAllOrders"] is False
    assert await broker.cancel_all() is True
    await broker.close()
    assert len([c for c in http.calls if "cancel-order" in c.url]) == 1


async def test_cancel_reports_the_venue_state(monkeypatch: Any) -> None:
    broker, _, _ = await _started(monkeypatch)
    await broker.submit(new_order("binance"))
    out = await broker.cancel("ck-1-1", "kill switch")
    await broker.close()
    assert [u.order.status for u in out] == [OrderStatus.CANCELED]
    assert out[0].order.reason == "kill switch"
    assert await broker.cancel("ck-1-1") == []  # finished: nothing to do


async def test_cancel_of_an_unknown_order_looks_it_up(monkeypatch: Any) -> None:
    broker, http, _ = await _started(monkeypatch)
    await broker.submit(new_order("binance"))
    http.add(
        R("DELETE", r"/api/v3/order\?", error_answer("binance", "error_order_not_found")),
        R("GET", r"/api/v3/order\?", "order_query_canceled"),
    )
    out = await broker.cancel("ck-1-1")
    await broker.close()
    assert [u.order.status for u in out] == [OrderStatus.CANCELED]


# ---------------------------------------------------------------------- polling


async def test_fills_then_filled_and_no_duplicates(monkeypatch: Any) -> None:
    broker, http, _ = await _started(monkeypatch)
    http.add(R("POST", r"/api/v3/order\b", "order_new_market_filled"))
    out = await broker.submit(new_order("binance", "ck-1-2", qty=0.003, price=None))
    kinds = [type(x).__name__ for x in out]
    assert kinds == ["OrderUpdate", "Fill", "OrderUpdate", "Fill", "OrderUpdate"]
    statuses = [x.order.status for x in out if isinstance(x, OrderUpdate)]
    assert statuses == [OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED]
    fills = [x for x in out if isinstance(x, Fill)]
    assert [f.fill_id for f in fills] == ["binance-3735693016", "binance-3735693017"]
    assert fills[0].fee == pytest.approx(0.000002 * 61686.0)  # a BTC fee, in USDT
    final = [x for x in out if isinstance(x, OrderUpdate)][-1].order
    assert final.avg_fill_price == pytest.approx((0.002 * 61686.0 + 0.001 * 61686.01) / 0.003)
    # The same trades come back from myTrades: nothing new.
    assert await broker.poll() == []
    await broker.close()


async def test_fills_missing_from_trades_are_booked_after_the_window(monkeypatch: Any) -> None:
    broker, http, clock = await _started(monkeypatch)
    filled = {
        **fixture("binance", "order_query"),
        "status": "FILLED",
        "executedQty": "0.00100000",
        "cummulativeQuoteQty": "61.00000000",
        "isWorking": False,
    }
    await broker.submit(new_order("binance"))
    http.add(
        R("GET", r"/api/v3/openOrders", []),
        R("GET", r"/api/v3/myTrades", []),
        R("GET", r"/api/v3/order\?", filled),
    )
    assert await broker.poll() == []  # the venue says filled, the trades are not there yet
    clock.advance(16)
    out = await broker.poll()
    await broker.close()
    fills = [x for x in out if isinstance(x, Fill)]
    assert len(fills) == 1 and fills[0].qty == pytest.approx(0.001)
    assert fills[0].price == pytest.approx(61000.0)
    assert [x.order.status for x in out if isinstance(x, OrderUpdate)] == [OrderStatus.FILLED]


async def test_restore_knows_journaled_fills(monkeypatch: Any) -> None:
    broker, http, _ = await _started(monkeypatch)
    order = new_order("binance", "ck-1-2", qty=0.004, price=None)
    order.status = OrderStatus.PARTIALLY_FILLED
    journaled = Fill(
        "binance-3735693016",
        "ck-1-2",
        "s1",
        "BTC/USDT",
        "binance",
        order.side,
        0.002,
        61686.0,
        0.12,
        "taker",
        1,
    )  # type: ignore[arg-type]
    order.filled_qty = 0.002
    broker.restore([order], [journaled])
    http.add(
        R("GET", r"/api/v3/openOrders", []),
        R(
            "GET",
            r"/api/v3/order\?",
            {
                **fixture("binance", "order_query"),
                "orderId": 28457119301,
                "clientOrderId": "ck-1-2",
                "origQty": "0.00400000",
            },
        ),
    )
    out = await broker.poll()
    await broker.close()
    fills = [x for x in out if isinstance(x, Fill)]
    assert [f.fill_id for f in fills] == ["binance-3735693017"]  # only the new one


# ---------------------------------------------------------------------- refusals, keys


async def test_halted_unsynced_and_unknown_symbols_are_not_sent(monkeypatch: Any) -> None:
    synced = {"BTC/USDT": False}
    broker, http, _ = await _started(monkeypatch, is_synced=lambda s: synced.get(s, False))
    n = len(http.calls)
    out = await broker.submit(new_order("binance", "ck-1-1"))
    assert "unsynced" in out[0].order.reason
    synced["BTC/USDT"] = True
    broker.set_halted("binance: reconciliation found 1 unresolved difference")
    out = await broker.submit(new_order("binance", "ck-1-2"))
    assert "not sent" in out[0].order.reason and "reconciliation" in out[0].order.reason
    broker.set_halted(None)
    bad = new_order("binance", "ck-1-3")
    bad.symbol = "DOGE/EUR"
    out = await broker.submit(bad)
    assert "not a market" in out[0].order.reason
    await broker.close()
    assert len(http.calls) == n


def test_mode_and_keys_are_checked(monkeypatch: Any) -> None:
    from tests.test_venues_support import venue_env

    venue_env(monkeypatch)
    with pytest.raises(BrokerConfigError, match="does not fit live mode"):
        CcxtBroker("binance", venue_config("binance", True), "live")
    with pytest.raises(BrokerConfigError, match="paper"):
        CcxtBroker("binance", venue_config("binance", True), "paper")
    monkeypatch.delenv("CK_TEST_PASS")
    with pytest.raises(BrokerConfigError, match="password_env"):
        CcxtBroker("okx", venue_config("okx", True), "testnet")


async def test_keys_never_appear_in_any_message(monkeypatch: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    broker, http, clock = await _started(monkeypatch)
    key, secret = KEYS["apiKey"], KEYS["secret"]
    echo = {"code": -2015, "msg": f"Invalid API-key, IP, or permissions for action. key={key}"}
    http.add(
        R("POST", r"/api/v3/order\b", lambda call: (401, echo), times=1),
        R(
            "POST",
            r"/api/v3/order\b",
            _raise(ccxt.RequestTimeout(f"timeout {key} {secret}")),
            times=1,
        ),
        R("GET", r"/api/v3/order\?", _raise(ccxt.NetworkError(f"reset; X-MBX-APIKEY: {key}"))),
    )
    texts: list[str] = []
    for coid in ("ck-1-1", "ck-1-2"):
        for item in await broker.submit(new_order("binance", coid)):
            texts.append(repr(item))
    clock.advance(20)
    for item in await broker.poll():
        texts.append(repr(item))
    texts += [repr(broker), repr(broker.redactor), *broker.problems, str(vars(broker.gate))]
    texts += [r.getMessage() for r in caplog.records]
    texts += [str(r.exc_text or "") for r in caplog.records]
    await broker.close()
    # The key was in the venue's answer, in the request headers and in exception messages.
    assert any("Invalid API-key" in t for t in texts)
    assert any("X-MBX-APIKEY" in t for t in texts)  # the request log line, redacted
    for t in texts:
        assert key not in t and secret not in t and KEYS["password"] not in t, t
        assert "signature=" not in t or "signature=***" in t, t


# ---------------------------------------------------------------------- dead-man switch


@pytest.mark.parametrize("venue", VENUES)
async def test_dead_man_switch_heartbeat(monkeypatch: Any, venue: str) -> None:
    broker, http, _ = await _started(monkeypatch, venue)
    n = len(http.calls)
    armed = await broker.heartbeat(60)
    await broker.close()
    assert armed is (venue in ("kraken", "okx"))  # bybit's DCP is no countdown (review-d)
    if armed:
        assert len(http.calls) == n + 1
        call = http.calls[-1]
        assert call.method == "POST"
        assert any(
            k in call.url
            for k in ("CancelAllOrdersAfter", "disconnected-cancel-all", "cancel-all-after")
        )
    else:
        assert len(http.calls) == n  # nothing sent where the venue has no dead-man switch


# ---------------------------------------------------------------------- recovery


async def test_recover_adopts_found_cancels_old_missing_keeps_young(monkeypatch: Any) -> None:
    broker, http, clock = await _started(monkeypatch)
    now = clock.ns

    def lookup(call: Call) -> Any:
        if "origClientOrderId=ck-1-1" in call.url:
            return 200, fixture("binance", "order_query")
        return 400, fixture("binance", "error_order_not_found")

    http.add(R("GET", r"/api/v3/order\?", lookup))
    found = new_order("binance", "ck-1-1", ts=now - 60_000_000_000)
    old = new_order("binance", "ck-1-2", ts=now - 60_000_000_000)
    young = new_order("binance", "ck-1-3", ts=now - 2_000_000_000)
    out = await broker.recover([found, old, young])
    by_id = {u.order.client_order_id: u.order for u in out if isinstance(u, OrderUpdate)}
    assert by_id["ck-1-1"].status is OrderStatus.NEW
    assert by_id["ck-1-2"].status is OrderStatus.CANCELED
    assert NEVER_REACHED in by_id["ck-1-2"].reason
    assert "ck-1-3" not in by_id  # may still appear: kept pending
    assert {o.client_order_id for o in broker.open_orders()} == {"ck-1-1", "ck-1-3"}
    clock.advance(14)
    out = await broker.poll()
    await broker.close()
    assert [u.order.status for u in out if u.order.client_order_id == "ck-1-3"] == [
        OrderStatus.CANCELED
    ]
    assert _creates(http) == []  # recovery never sends an order


# ---------------------------------------------------------------------- reconciliation


async def test_snapshot_and_reconcile_find_the_unknown_order(monkeypatch: Any) -> None:
    broker, http, _ = await _started(monkeypatch)
    await broker.submit(new_order("binance"))
    http.add(
        R(
            "GET",
            r"/api/v3/openOrders",
            fixture("binance", "open_orders") + fixture("binance", "open_orders_unknown"),
        )
    )
    snap = await broker.snapshot()
    journal = JournalSnapshot(
        open_orders=tuple(broker.open_orders()),
        fills=(),
        client_ids=broker.client_ids(),
        venue_order_ids=broker.venue_order_ids(),
        known_orders=frozenset({"ck-1-1"}),
    )
    rec = build(snap, journal)
    assert rec.halted and rec.trading_state == "HALTED"
    unknown = [d for d in rec.differences if d.kind == "unknown_order"]
    assert [d.key for d in unknown] == ["28457000001"]
    assert "web_6f1c2b0d9e8a4f7b" in unknown[0].line
    # Trades of an order the journal does not know (the market order ck-1-2 is not in it).
    assert any(d.kind == "unjournaled_fill" and d.blocking for d in rec.differences)
    # The operator cancels the unknown order: the broker cancels it at the venue by its id.
    from engine.venues.reconcile import VenueOrder

    vo = VenueOrder(**unknown[0].detail["order"])
    assert await broker.cancel_venue_order(vo) is True
    assert any("orderId=28457000001" in c.url for c in http.calls if c.method == "DELETE")
    adopted = broker.adopt(vo)
    await broker.close()
    assert adopted.order.client_order_id == "adopt-binance-28457000001"
    assert adopted.order.status is OrderStatus.NEW and adopted.order.qty == 0.01


async def test_dead_man_switch_is_kept_armed_then_disarmed(monkeypatch: Any) -> None:
    import asyncio
    from urllib.parse import parse_qs

    broker, http, _ = await _started(monkeypatch, "kraken")
    stop = asyncio.Event()
    task = asyncio.create_task(broker.keep_deadman_armed(stop, interval_s=0.01, timeout_s=60))
    while len([c for c in http.calls if "CancelAllOrdersAfter" in c.url]) < 3:
        await asyncio.sleep(0.005)
    stop.set()
    await task
    await broker.close()
    beats = [parse_qs(c.body)["timeout"][0] for c in http.calls if "CancelAllOrdersAfter" in c.url]
    assert beats[0] == "60" and beats[-1] == "0"  # armed with 60 s, disarmed at the end


# ---------------------------------------------------------------------- untrusted status reports


class _Held:
    """Keeps the first request matching ``method`` and ``pattern`` in flight (a slow venue)
    until ``release`` is set, so a test can run a poll meanwhile: the real interleaving of a
    cancel or a send with the background poll."""

    def __init__(self, broker: Any, method: str, pattern: str) -> None:
        import asyncio
        import re

        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        self.used = False
        inner = broker.exchange.fetch

        async def fetch(url: str, method_: str = "GET", headers: Any = None, body: Any = None):
            if not self.used and method_.upper() == method and re.search(pattern, url):
                self.used = True
                self.reached.set()
                await self.release.wait()
            return await inner(url, method_, headers, body)

        broker.exchange.fetch = fetch


def _trade(order_id: int, trade_id: int, qty: str) -> dict[str, Any]:
    return {
        **fixture("binance", "my_trades")[0],
        "id": trade_id,
        "orderId": order_id,
        "qty": qty,
        "price": "61000.00000000",
    }


async def test_a_filled_order_the_venue_reports_open_stays_filled(monkeypatch: Any) -> None:
    """FILLED, then the venue's (stale) answer says NEW: not believed, shown in problems."""
    import asyncio

    broker, http, _ = await _started(monkeypatch)
    await broker.submit(new_order("binance"))  # NEW, venue order 28457119235
    held = _Held(broker, "DELETE", r"/api/v3/order\?")
    cancel = asyncio.ensure_future(broker.cancel("ck-1-1", "kill switch"))
    await held.reached.wait()
    http.add(  # meanwhile the poll sees it fill completely
        R("GET", r"/api/v3/openOrders", []),
        R("GET", r"/api/v3/myTrades", [_trade(28457119235, 501, "0.00100000")]),
    )
    polled = await broker.poll()
    assert [x.order.status for x in polled if isinstance(x, OrderUpdate)] == [OrderStatus.FILLED]
    http.add(  # the cancel comes too late; the look-up answers from a stale replica: NEW
        R("DELETE", r"/api/v3/order\?", error_answer("binance", "error_order_not_found")),
        R("GET", r"/api/v3/order\?", "order_query"),
    )
    held.release.set()
    out = await cancel
    assert out == []  # nothing moves it back (no NEW, no CANCELED after FILLED)
    assert broker.status_anomalies == 1
    assert "ck-1-1" in broker.problems[-1] and "open" in broker.problems[-1]
    assert "kept it filled" in broker.problems[-1]
    assert broker.open_orders() == []
    assert await broker.poll() == []  # the poll loop goes on
    await broker.close()


async def test_trades_after_the_venue_said_expired_are_booked_the_order_stays_canceled(
    monkeypatch: Any,
) -> None:
    """CANCELED (the look-up said expired), then the send's own answer carries two trades:
    they happened, so both fills are booked, but the order does not come back to life."""
    import asyncio

    broker, http, _ = await _started(monkeypatch)
    http.add(R("POST", r"/api/v3/order\b", "order_new_market_filled"))
    held = _Held(broker, "POST", r"/api/v3/order\b")
    send = asyncio.ensure_future(
        broker.submit(new_order("binance", "ck-1-2", qty=0.003, price=None))
    )
    await held.reached.wait()
    expired = {
        **fixture("binance", "order_query"),
        "orderId": 28457119301,
        "clientOrderId": "ck-1-2",
        "origQty": "0.00300000",
        "type": "MARKET",
        "status": "EXPIRED",
        "isWorking": False,
    }
    http.add(
        R("GET", r"/api/v3/openOrders", []),
        R("GET", r"/api/v3/myTrades", []),
        R("GET", r"/api/v3/order\?", expired),
    )
    polled = await broker.poll()
    statuses = [x.order.status for x in polled if isinstance(x, OrderUpdate)]
    assert statuses == [OrderStatus.NEW, OrderStatus.CANCELED]
    held.release.set()
    out = await send
    fills = [x for x in out if isinstance(x, Fill)]
    assert [f.fill_id for f in fills] == ["binance-3735693016", "binance-3735693017"]
    updates = [x.order for x in out if isinstance(x, OrderUpdate)]
    assert {o.status for o in updates} == {OrderStatus.CANCELED}
    assert updates[-1].filled_qty == pytest.approx(0.003)
    assert broker.status_anomalies == 2
    assert all("kept it canceled" in p for p in list(broker.problems)[-2:])
    assert "trade 3735693016" in broker.problems[-2]
    await broker.close()


async def test_a_send_that_fails_after_the_order_filled_does_not_reject_it(
    monkeypatch: Any,
) -> None:
    """The poll finds the order FILLED while the send is still out; the send then answers 429.
    The order is not turned into REJECTED (which would also count against the reject breaker)."""
    import asyncio

    broker, http, _ = await _started(monkeypatch)
    http.add(R("POST", r"/api/v3/order\b", error_answer("binance", "error_rate_limit", 429)))
    held = _Held(broker, "POST", r"/api/v3/order\b")
    send = asyncio.ensure_future(broker.submit(new_order("binance")))
    await held.reached.wait()
    filled = {**fixture("binance", "order_query"), "status": "FILLED", "executedQty": "0.001"}
    http.add(
        R("GET", r"/api/v3/openOrders", []),
        R("GET", r"/api/v3/myTrades", [_trade(28457119235, 502, "0.00100000")]),
        R("GET", r"/api/v3/order\?", filled),
    )
    polled = await broker.poll()
    statuses = [x.order.status for x in polled if isinstance(x, OrderUpdate)]
    assert statuses[-1] is OrderStatus.FILLED
    held.release.set()
    assert await send == []
    assert broker.status_anomalies == 1
    assert "rejected" in broker.problems[-1] and "kept it filled" in broker.problems[-1]
    await broker.close()


async def test_a_venue_reject_after_part_of_the_order_filled_ends_it_canceled(
    monkeypatch: Any,
) -> None:
    """What filled stands: an order with fills cannot become REJECTED; it ends CANCELED."""
    broker, http, _ = await _started(monkeypatch)
    await broker.submit(new_order("binance", qty=0.002))
    rejected = {
        **fixture("binance", "order_query"),
        "origQty": "0.00200000",
        "executedQty": "0.00100000",
        "status": "REJECTED",
        "isWorking": False,
    }
    http.add(
        R("GET", r"/api/v3/openOrders", []),
        R("GET", r"/api/v3/myTrades", [_trade(28457119235, 503, "0.00100000")]),
        R("GET", r"/api/v3/order\?", rejected),
    )
    out = await broker.poll()
    await broker.close()
    statuses = [x.order.status for x in out if isinstance(x, OrderUpdate)]
    assert statuses == [OrderStatus.PARTIALLY_FILLED, OrderStatus.CANCELED]
    assert len([x for x in out if isinstance(x, Fill)]) == 1
    assert broker.open_orders() == [] and broker.status_anomalies == 0
