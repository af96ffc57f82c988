"""Second-round adversarial checks of the venue execution path (review-h).

Each test is a hole found by attacking the order and fill path where a mistake costs real money:
ccxt's real exchange classes answered from recorded bodies (``tests.test_venues_support``), a
virtual clock, no network. Each fails on the code before its fix.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from engine.runtime import Engine
from engine.types import Fill, OrderStatus, OrderUpdate, Side
from engine.venues.reconcile import expected_balances
from tests.test_venue_operations import foreign_trade
from tests.test_venue_runtime import (
    TradingVenue,
    make_testnet_config,
    rows,
    run_until,
    venue_engine,
)
from tests.test_venues_support import (
    FakeClock,
    R,
    fixture,
    make_broker,
    new_order,
    venue_env,
)


def position(engine: Engine) -> float:
    """The engine's net BTC/USDT position (0 when it holds none)."""
    assert engine.core is not None
    pos = engine.core.portfolio.positions.get("BTC/USDT")
    return pos.qty if pos is not None else 0.0


def _fills(out: list[Any]) -> list[Fill]:
    return [x for x in out if isinstance(x, Fill)]


def _assets(symbol: str) -> tuple[str, str]:
    base, _, quote = symbol.partition("/")
    return base, quote


@pytest.mark.parametrize("side", ["buy", "sell"])
async def test_a_fee_taken_in_the_base_asset_comes_off_the_position(
    monkeypatch: Any, side: str
) -> None:
    """Binance takes a buy's commission in the asset bought (the recorded answer: 0.000003 BTC
    on 0.003 BTC): the account holds 0.002997 BTC. Booking 0.003 made the engine's position
    larger than the account's, so the exit and the kill's flatten sold 0.003 and were refused
    ("insufficient balance"), leaving the position open. The booked position must move by what
    the account's base balance moved, and cash by exactly the trade's notional."""
    clock = FakeClock()
    broker, http = make_broker(monkeypatch, "binance", clock=clock)
    await broker.start()
    answer = fixture("binance", "order_new_market_filled")  # client id ck-1-2, BTC commission
    http.add(R("POST", r"/api/v3/order\b", {**answer, "side": side.upper()}))
    out = await broker.submit(new_order("binance", "ck-1-2", qty=0.003, price=None, side=side))
    await broker.close()
    fills = _fills(out)
    assert len(fills) == 2
    sign = Side(side).sign
    commission = 0.000002 + 0.000001
    moved = sum(f.qty for f in fills) * sign
    assert moved == pytest.approx(sign * 0.003 - commission, abs=1e-12)
    notional = 0.002 * 61686.0 + 0.001 * 61686.01
    cash = sum(-sign * f.qty * f.price - f.fee for f in fills)
    assert cash == pytest.approx(-sign * notional, abs=1e-9)  # the fee was paid in BTC
    final = [x for x in out if isinstance(x, OrderUpdate)][-1].order
    assert final.status is OrderStatus.FILLED and final.filled_qty == pytest.approx(0.003)
    # The balances the journal expects are the account's: no false balance difference.
    baseline = {"BTC": 1.0, "USDT": 10_000.0}
    expected = expected_balances(baseline, fills, _assets)
    assert expected["BTC"] == pytest.approx(1.0 + sign * 0.003 - commission, abs=1e-12)
    assert expected["USDT"] == pytest.approx(10_000.0 - sign * notional, abs=1e-9)


class _Binance:
    """A tiny stateful binance spot account behind the recorded bodies: orders by client id,
    the trades ``myTrades`` lists, each order's own totals (``executedQty``)."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.trades: list[dict[str, Any]] = []
        self.next_id = 700_001

    def routes(self) -> list[Any]:
        return [
            R("POST", r"/api/v3/order\b", self.create),
            R("GET", r"/api/v3/order\?", self.query),
            R("GET", r"/api/v3/openOrders", self.open),
            R("GET", r"/api/v3/myTrades", lambda call: (200, list(self.trades))),
        ]

    def create(self, call: Any) -> tuple[int, Any]:
        import re

        fields = dict(re.findall(r"(\w+)=([^&]+)", f"{call.url}&{call.body}"))
        cid = fields["newClientOrderId"]
        self.next_id += 1
        order = {
            **fixture("binance", "order_query"),
            "orderId": self.next_id,
            "clientOrderId": cid,
            "origQty": fields["quantity"],
            "side": fields["side"],
        }
        self.orders[cid] = order
        return 200, {**fixture("binance", "order_new_limit"), **order, "fills": []}

    def query(self, call: Any) -> tuple[int, Any]:
        import re

        cid = re.search(r"origClientOrderId=([^&]+)", call.url)
        if cid is None or cid.group(1) not in self.orders:
            return 400, fixture("binance", "error_order_not_found")
        return 200, self.orders[cid.group(1)]

    def open(self, call: Any) -> tuple[int, Any]:
        return 200, [o for o in self.orders.values() if o["status"] in ("NEW", "PARTIALLY_FILLED")]

    def fill(
        self, cid: str, trade_id: Any, qty: float, price: float = 61000.0, commission: float = 0.0
    ) -> None:
        """The whole order fills in one trade (``trade_id`` None: the venue gave no id)."""
        order = self.orders[cid]
        order.update(status="FILLED", executedQty=f"{qty:.8f}", isWorking=False)
        order["cummulativeQuoteQty"] = f"{qty * price:.8f}"
        self.trades.append(
            {
                **fixture("binance", "my_trades")[0],
                "id": trade_id,
                "orderId": order["orderId"],
                "qty": f"{qty:.8f}",
                "price": f"{price:.8f}",
                "quoteQty": f"{qty * price:.8f}",
                "commission": f"{commission:.8f}",
                "commissionAsset": "USDT",
            }
        )


async def _poll_until_done(broker: Any, clock: FakeClock, rounds: int = 6) -> list[Any]:
    """Poll (the clock moving past the venue's consistency window) until nothing is open."""
    out: list[Any] = []
    for _ in range(rounds):
        out.extend(await broker.poll())
        if not broker.open_orders():
            break
        clock.advance(16)
    return out


async def test_trades_without_an_id_are_never_booked_under_one_shared_fill_id(
    monkeypatch: Any,
) -> None:
    """A venue trade with no id became fill ``binance-`` (the id is the fill's identity): the
    first such trade was booked, and the next one, for another order, carried the same fill id,
    so the engine dropped it as a duplicate while the broker called that order FILLED. The
    position silently missed a whole order, and reconciliation saw nothing (the fill id was
    "journaled"). Every order's execution must reach the position exactly once."""
    clock = FakeClock()
    venue = _Binance()
    broker, http = make_broker(monkeypatch, "binance", clock=clock)
    await broker.start()
    http.add(*venue.routes())
    await broker.submit(new_order("binance", "ck-1-1", qty=0.001))
    await broker.submit(new_order("binance", "ck-1-2", qty=0.002))
    venue.fill("ck-1-1", None, 0.001)
    first = await _poll_until_done(broker, clock)
    assert [o.client_order_id for o in broker.open_orders()] == ["ck-1-2"]
    venue.fill("ck-1-2", None, 0.002)
    second = await _poll_until_done(broker, clock)
    await broker.close()
    fills = _fills(first + second)
    ids = [f.fill_id for f in fills]
    assert len(ids) == len(set(ids)), f"two executions under one fill id: {ids}"
    by_order = {cid: sum(f.qty for f in fills if f.client_order_id == cid) for cid in venue.orders}
    assert by_order == {"ck-1-1": pytest.approx(0.001), "ck-1-2": pytest.approx(0.002)}
    assert broker.open_orders() == []


async def test_a_fresh_data_dir_never_reuses_a_client_id_the_account_has_seen(
    monkeypatch: Any, tmp_path: Path
) -> None:
    """Client ids were ``ck-<session>-<n>`` and sessions count per journal: a second data
    directory on the same account (a fresh start, a lost disk) sent ``ck-1-1`` again. Its send
    timed out, the look-up by client id found the first directory's filled ``ck-1-1``, and the
    engine booked a buy it never made (the trade a person had just acknowledged as not its
    own). A journal's ids must be its own."""
    venue_env(monkeypatch)
    server = TradingVenue()
    await server.start()

    def short_window(broker: Any) -> None:
        broker.window_ns = 10**9  # "never reached the venue" after 1 s, not 15
        broker.exchange.timeout = 500  # the lost send gives up sooner

    try:
        first = venue_engine(make_testnet_config(tmp_path / "a"), tmp_path / "a", server)
        await first.start()
        try:
            await run_until(first, lambda: position(first) > 0)
        finally:
            await first.stop()
        server.script.append("lost")  # the second directory's first order never arrives
        second = venue_engine(
            make_testnet_config(tmp_path / "b"), tmp_path / "b", server, also=short_window
        )
        await second.start()
        try:
            [diff] = second.execution.reconciliations["binance"].unresolved()
            assert diff.kind == "unjournaled_fill"  # the first directory's trade
            reply = await second.command(
                "resolve",
                {"venue": "binance", "key": diff.key, "action": "acknowledge", "reason": "old"},
            )
            assert reply["ok"], reply
            core = second.core
            assert core is not None
            await run_until(
                second, lambda: server.creates() == 2 and not core.open_orders, timeout_s=20
            )
            assert position(second) == 0.0, "booked a fill of another journal's order"
        finally:
            await second.stop()
    finally:
        await server.stop()
    journal = rows(tmp_path / "b")
    assert not [r for r in journal if r.kind == "fill"]
    last = [r.payload["order"]["status"] for r in journal if r.kind == "order"][-1]
    assert last == "canceled"  # "never reached the venue"
    sent = [o.vcid for o in server.orders.values()]
    assert len(sent) == len(set(sent))


def _journal_accepts(fill: Fill) -> bool:
    """What a restart's restore requires of a fill row (engine/restore.py): otherwise the
    engine refuses to start on its own journal."""
    from engine.config import MAX_AMOUNT

    def fine(v: float) -> bool:
        return math.isfinite(v) and abs(v) <= MAX_AMOUNT

    return (
        fine(fill.qty)
        and fill.qty > 0
        and fine(fill.price)
        and fill.price > 0
        and fine(fill.fee)
        and abs(fill.fee) <= fill.qty * fill.price
    )


@pytest.mark.parametrize(
    "what",
    ["fee above the trade's value", "order totals far above the order"],
)
async def test_a_venue_number_the_journal_would_refuse_is_never_booked(
    monkeypatch: Any, what: str
) -> None:
    """A trade whose fee is more than its value, or order totals claiming far more filled than
    was ordered (a unit mix-up, a venue bug): booked as given, the fill went into the position
    (999.999 BTC from a 0.001 order) and into the journal, whose restore then refused the row:
    the engine could not start again on its own journal. The order's real quantity is booked
    once, with a believable fee, and the anomaly is shown."""
    clock = FakeClock()
    venue = _Binance()
    broker, http = make_broker(monkeypatch, "binance", clock=clock)
    await broker.start()
    http.add(*venue.routes())
    await broker.submit(new_order("binance", "ck-1-1", qty=0.001))
    if what == "fee above the trade's value":
        venue.fill("ck-1-1", 901, 0.001, commission=100.0)
    else:
        venue.fill("ck-1-1", None, 0.001)
        venue.orders["ck-1-1"]["executedQty"] = "1000.00000000"
    out = await _poll_until_done(broker, clock)
    await broker.close()
    fills = _fills(out)
    assert all(_journal_accepts(f) for f in fills), fills
    assert sum(f.qty for f in fills) == pytest.approx(0.001)
    assert broker.open_orders() == []
    assert broker.status_anomalies >= 1


async def test_a_kill_flatten_held_by_a_venue_halt_goes_out_once_the_venue_is_reconciled(
    monkeypatch: Any, tmp_path: Path
) -> None:
    """The engine holds a position; reconciliation finds a fill it does not know and halts the
    venue. A kill at flatten then cancels at the venue but sends no flatten there (right: the
    engine does not know that venue's position, and a spot venue has no reduce-only guard).
    Once a person answers the difference the venue trades again and the kill is still latched
    at flatten: the flatten must go out then. It never did (only a missing quote made a
    flatten due again), and the position stayed open under a kill that read "flatten"."""
    venue_env(monkeypatch)
    server = TradingVenue()
    await server.start()
    data_dir = tmp_path / "data"
    cfg = make_testnet_config(data_dir)

    def sells() -> int:
        return sum(1 for o in server.orders.values() if o.side.upper() == "SELL")

    try:
        first = venue_engine(cfg, data_dir, server)
        await first.start()
        try:
            await run_until(first, lambda: position(first) > 0)
        finally:
            await first.stop()
        foreign_trade(server, "88001", tid=4242)  # a trade of an order the engine never had
        engine = venue_engine(cfg, data_dir, server)
        await engine.start()
        try:
            core = engine.core
            assert core is not None and "binance" in core.venue_halts
            reply = await engine.command("kill", {"level": "flatten", "reason": "get out"})
            assert reply["ok"], reply
            await engine.run(duration_s=1.0)
            assert sells() == 0  # held while the venue's position is unknown
            held = [
                e
                for e in core.trace
                if getattr(e, "outcome", "") == "denied" and e.intent.origin == "flatten"
            ]
            assert len(held) <= 2, "a held flatten is not asked again on every quote"
            reply = await engine.command(
                "resolve",
                {"venue": "binance", "key": "binance-4242", "action": "acknowledge", "reason": "x"},
            )
            assert reply["ok"], reply
            assert not core.venue_halts
            await run_until(engine, lambda: sells() == 1, timeout_s=5)
            await run_until(engine, lambda: position(engine) == 0, timeout_s=5)
        finally:
            await engine.stop()
    finally:
        await server.stop()


async def test_a_part_booked_from_the_order_totals_is_not_booked_again_when_its_trade_shows(
    monkeypatch: Any,
) -> None:
    """The venue's order says 0.001 of 0.002 filled, its trade list lags past the consistency
    window: the engine books 0.001 from the order's totals (right). Then the trade shows up.
    It was booked a second time: the position doubled, the order read FILLED while half of it
    still rested at the venue, and the rest filling later was booked on top. The same
    execution reaches the position once, whichever way it arrives, across a restart too."""
    clock = FakeClock()
    venue = _Binance()
    broker, http = make_broker(monkeypatch, "binance", clock=clock)
    await broker.start()
    http.add(*venue.routes())
    await broker.submit(new_order("binance", "ck-1-1", qty=0.002))
    order = venue.orders["ck-1-1"]
    order.update(status="PARTIALLY_FILLED", executedQty="0.00100000")
    order["cummulativeQuoteQty"] = "61.00000000"
    out = await broker.poll()
    clock.advance(16)
    out += await broker.poll()  # the trade has not shown: booked from the totals
    assert sum(f.qty for f in _fills(out)) == pytest.approx(0.001)
    venue.trades.append(
        {
            **fixture("binance", "my_trades")[0],
            "id": 801,
            "orderId": order["orderId"],
            "qty": "0.00100000",
            "price": "61000.00000000",
            "commission": "0.00000000",
            "commissionAsset": "USDT",
        }
    )
    out += await broker.poll()  # the lagging trade: already in the position
    assert sum(f.qty for f in _fills(out)) == pytest.approx(0.001), "booked twice"
    [live] = broker.open_orders()
    assert live.status is OrderStatus.PARTIALLY_FILLED and live.filled_qty == pytest.approx(0.001)

    # A restart (the journal's fills and open order) keeps it that way.
    fresh, http2 = make_broker(monkeypatch, "binance", clock=clock)
    await fresh.start()
    http2.add(*venue.routes())
    fresh.restore([live], _fills(out))
    again = await fresh.poll()
    assert _fills(again) == []
    venue.fill("ck-1-1", 802, 0.001)  # the rest fills: the order is FILLED at the venue
    venue.orders["ck-1-1"]["executedQty"] = "0.00200000"
    again += await _poll_until_done(fresh, clock)
    await broker.close()
    await fresh.close()
    total = sum(f.qty for f in _fills(out) + _fills(again))
    assert total == pytest.approx(0.002)
    assert fresh.open_orders() == []


async def test_an_ip_ban_answered_to_the_clock_check_stops_the_broker_for_its_retry_after(
    monkeypatch: Any,
) -> None:
    """Binance answers 418 with Retry-After once it bans the IP; every request during the ban
    lengthens it (2 minutes up to 3 days for repeat offenders). The clock check's request was
    the one path outside the broker's gate: its 418 was noted and forgotten, so the next order
    went straight into the ban. Any answer that says "stay away" holds every request."""
    clock = FakeClock()
    broker, http = make_broker(monkeypatch, "binance", clock=clock)
    await broker.start()
    http.add(*_Binance().routes())
    banned = {"code": -1003, "msg": "Way too many requests; IP(127.0.0.1) banned until later."}
    http.add(R("GET", r"/api/v3/time", lambda call: (418, banned, {"Retry-After": "120"})))
    with pytest.raises(Exception):  # noqa: B017 (whichever ccxt error: the ban is the point)
        await broker.clock_offset_ms()
    creates = len([c for c in http.calls if c.method == "POST"])
    out = await broker.submit(new_order("binance", "ck-1-1"))
    assert len([c for c in http.calls if c.method == "POST"]) == creates, "sent into an IP ban"
    assert out[0].order.status is OrderStatus.REJECTED and "rate limit" in out[0].order.reason
    assert broker.gate.blocked_for() > 100
    clock.advance(121)
    later = await broker.submit(new_order("binance", "ck-1-2"))
    await broker.close()
    assert later[0].order.status is OrderStatus.NEW


async def test_an_acknowledged_order_the_venue_no_longer_knows_is_settled_not_kept_forever(
    monkeypatch: Any,
) -> None:
    """An open order the venue forgot (binance's spot testnet is wiped now and then; old
    canceled orders are purged): not in its open orders, "does not exist" by client id and by
    order id, no trade. The README says such a missing order is "settled by the next poll"; it
    stayed open in the engine forever, counted as exposure, held a kill's due flatten back and
    cost two look-ups every poll. After one consistency window of not being found it ends
    CANCELED, said in the Venues pane, and is looked up no more."""
    clock = FakeClock()
    venue = _Binance()
    broker, http = make_broker(monkeypatch, "binance", clock=clock)
    await broker.start()
    http.add(*venue.routes())
    http.add(
        R(
            "GET",
            r"/api/v3/order\?.*orderId=",
            lambda call: (400, fixture("binance", "error_order_not_found")),
        )
    )
    [ack] = await broker.submit(new_order("binance", "ck-1-1"))
    assert ack.order.status is OrderStatus.NEW
    venue.orders.clear()  # the venue forgets it
    out = await broker.poll()
    assert out == [] and broker.open_orders()  # not found once: not yet a verdict
    clock.advance(16)
    out = await broker.poll()
    [update] = [x for x in out if isinstance(x, OrderUpdate)]
    assert update.order.status is OrderStatus.CANCELED
    assert "no longer knows" in update.order.reason
    assert broker.open_orders() == []
    assert any("ck-1-1" in p and "no longer knows" in p for p in broker.problems)
    asked = len(http.calls)
    assert await broker.poll() == [] and len(http.calls) == asked
    await broker.close()


async def test_a_venue_that_changes_its_lot_size_at_runtime_is_followed_not_hammered(
    monkeypatch: Any, tmp_path: Path
) -> None:
    """The venue raises BTCUSDT's lot size while the engine runs (binance announces such
    changes; they apply at once). The engine kept the markets it loaded at start: every order,
    protective exits included, went out on the old grid and came back "Filter failure:
    LOT_SIZE", one rejection per bar, for good. A venue refusing an order as invalid has its
    markets loaded again: the new step and minimum are the engine's from the next order on."""
    from tests.test_venue_operations import config

    class ChangingVenue(TradingVenue):
        step = "0.00001000"

        async def _binance(self, request: Any, body: str) -> tuple[int, Any]:
            if request.path.endswith("/exchangeInfo"):
                info = fixture("binance", "exchange_info")
                for sym in info["symbols"]:
                    for f in sym["filters"]:
                        if f["filterType"] == "LOT_SIZE":
                            f.update(minQty=self.step, stepSize=self.step)
                return 200, info
            if request.path.endswith("/api/v3/order") and request.method == "POST":
                qty = float(dict(p.split("=", 1) for p in body.split("&"))["quantity"])
                step = float(self.step)
                if qty < step or abs(qty / step - round(qty / step)) > 1e-9:
                    return 400, {"code": -1013, "msg": "Filter failure: LOT_SIZE"}
            return await super()._binance(request, body)

    venue_env(monkeypatch)
    server = ChangingVenue(auto_fill=False)
    await server.start()
    data_dir = tmp_path / "data"
    engine = venue_engine(config(data_dir), data_dir, server)
    try:
        await engine.start()
        try:
            server.step = "0.01000000"  # 0.001 is no longer a valid quantity
            await run_until(engine, lambda: server.creates() >= 1)
            await engine.run(duration_s=2.0)  # two more bars, each wanting to buy 0.001
            core = engine.core
            assert core is not None
            assert server.creates() == 1, "sent again on the grid the venue had left"
            assert core.instruments["BTC/USDT"].lot_size == pytest.approx(0.01)
            problems = engine.execution.brokers["binance"].problems
            assert any("BTC/USDT" in p and "0.01" in p for p in problems), list(problems)
        finally:
            await engine.stop()
    finally:
        await server.stop()


async def test_a_trade_placed_by_hand_while_the_engine_runs_halts_the_venue_in_bounded_time(
    monkeypatch: Any, tmp_path: Path
) -> None:
    """Someone trades the engine's symbol by hand (the web UI, another bot) while the engine
    runs: the account's position is no longer the journal's, and the next exit or flatten is
    sized wrong. Reconciliation ran only at start, after a feed reconnect and after a failed
    attempt, so with a healthy websocket (binance reconnects once a day) the engine did not
    notice for hours. It now also reconciles every RECONCILE_EVERY_S (5 minutes)."""
    import engine.venues.execution as venue_execution
    from tests.test_venue_operations import config

    venue_env(monkeypatch)
    monkeypatch.setattr(venue_execution, "VENUE_WATCH_S", 0.05)
    monkeypatch.setattr(venue_execution, "RECONCILE_EVERY_S", 0.5, raising=False)
    server = TradingVenue(auto_fill=False)
    await server.start()
    data_dir = tmp_path / "data"
    engine = venue_engine(config(data_dir, "tests.test_venue_runtime:BuyOnce"), data_dir, server)
    try:
        await engine.start()
        try:
            core = engine.core
            assert core is not None and not core.venue_halts
            await engine.run(duration_s=0.3)
            foreign_trade(server, "88002", tid=5151)  # by hand, while the engine runs
            await engine.run(duration_s=1.5)
            assert "binance" in core.venue_halts
            rec = engine.execution.reconciliations["binance"]
            assert [d.key for d in rec.unresolved()] == ["binance-5151"]
        finally:
            await engine.stop()
    finally:
        await server.stop()


async def test_fills_seen_before_the_send_is_answered_are_booked_once(monkeypatch: Any) -> None:
    """(Survives.) A market order fills at the venue while its send is still waiting for the
    answer: the poll finds it by client id, learns its order id and books its two trades; the
    answer then arrives carrying the same two trades. Each trade is booked once."""
    import asyncio

    from tests.test_venues_broker import _Held

    clock = FakeClock()
    broker, http = make_broker(monkeypatch, "binance", clock=clock)
    await broker.start()
    filled = fixture("binance", "order_new_market_filled")  # ck-1-2, two trades, FILLED
    query = {**fixture("binance", "order_query"), **{k: filled[k] for k in filled if k != "fills"}}
    http.add(
        R("POST", r"/api/v3/order\b", filled),
        R("GET", r"/api/v3/order\?", query),
        R("GET", r"/api/v3/openOrders", []),
        R("GET", r"/api/v3/myTrades", "my_trades"),
    )
    held = _Held(broker, "POST", r"/api/v3/order\b")
    send = asyncio.ensure_future(
        broker.submit(new_order("binance", "ck-1-2", qty=0.003, price=None))
    )
    await held.reached.wait()
    polled = await broker.poll()
    assert len(_fills(polled)) == 2  # booked by the poll, before the send's answer
    held.release.set()
    answered = await send
    await broker.close()
    fills = _fills(polled + answered)
    assert sorted(f.fill_id for f in fills) == ["binance-3735693016", "binance-3735693017"]
    assert sum(f.qty for f in fills) == pytest.approx(0.003 - 0.000003)


async def test_an_older_copy_of_the_data_dir_started_again_never_reuses_a_client_id(
    monkeypatch: Any, tmp_path: Path
) -> None:
    """docs/operations.md says how to start on an older copy of a data directory. Its sessions
    count again from the copy's: the next session is ``ck-2-...`` once more, though the lost
    later journal already sent ``ck-2-1`` to the venue. The send times out, the look-up by
    client id finds the lost session's filled order, and the engine books a buy it never made.
    Each session's ids carry a token of their own."""
    import shutil

    venue_env(monkeypatch)
    server = TradingVenue()
    await server.start()
    data_dir, copy = tmp_path / "data", tmp_path / "copy"
    cfg = make_testnet_config(data_dir)

    def short_window(broker: Any) -> None:
        broker.window_ns = 10**9
        broker.exchange.timeout = 500

    try:
        quiet = venue_engine(cfg, data_dir, server)
        await quiet.start()  # session 1 trades nothing
        await quiet.stop()
        shutil.copytree(data_dir, copy)  # the backup
        later = venue_engine(cfg, data_dir, server)
        await later.start()  # session 2 buys: ck-2-1
        try:
            await run_until(later, lambda: position(later) > 0)
        finally:
            await later.stop()
        shutil.rmtree(data_dir)  # the disk is lost; the backup comes back
        shutil.copytree(copy, data_dir)
        server.script.append("lost")  # the restored session's first order never arrives
        again = venue_engine(cfg, data_dir, server, also=short_window)
        await again.start()  # session 2 once more
        try:
            [diff] = again.execution.reconciliations["binance"].unresolved()
            reply = await again.command(
                "resolve",
                {"venue": "binance", "key": diff.key, "action": "acknowledge", "reason": "lost"},
            )
            assert reply["ok"], reply
            core = again.core
            assert core is not None and core.session == 2
            await run_until(
                again, lambda: server.creates() == 2 and not core.open_orders, timeout_s=20
            )
            assert position(again) == 0.0, "booked the lost session's fill"
        finally:
            await again.stop()
    finally:
        await server.stop()
    assert not [r for r in rows(data_dir) if r.kind == "fill"]


async def test_an_adopted_order_on_bybit_is_followed_to_its_end(monkeypatch: Any) -> None:
    """A person adopts an order placed by hand on bybit (``cockpit resolve bybit ID adopt``).
    Once it left the open orders the broker asked for it with ccxt's fetchOrder by id, which
    bybit's class refuses (ArgumentsRequired: only the last 500 orders, "acknowledged"): the
    adopted order never ended, a problem line every poll, counted as exposure for good. It is
    looked for where bybit keeps it: the open, then the closed and canceled orders."""
    from engine.venues.reconcile import VenueOrder

    clock = FakeClock()
    broker, http = make_broker(monkeypatch, "bybit", clock=clock)
    await broker.start()
    vo = VenueOrder(
        "1750123456789012345",
        None,
        "BTC/USDT",
        "buy",
        "limit",
        0.001,
        0.0,
        61000.0,
        None,
        "open",
        0,
    )
    adopted = broker.adopt(vo)
    assert adopted.order.status is OrderStatus.NEW
    empty = {"retCode": 0, "retMsg": "OK", "result": {"category": "spot", "list": []}, "time": 1}
    http.add(
        R("GET", r"/v5/order/realtime", "order_realtime_empty"),
        R("GET", r"/v5/order/history", "order_history"),  # Cancelled, nothing filled
        R("GET", r"/v5/execution/list", empty),
    )
    before = len(broker.problems)
    out = await broker.poll()
    await broker.close()
    assert list(broker.problems)[before:] == []
    [update] = [x for x in out if isinstance(x, OrderUpdate)]
    assert update.order.status is OrderStatus.CANCELED
    assert broker.open_orders() == []


async def test_a_trade_above_what_the_order_had_left_is_booked_and_shown(
    monkeypatch: Any,
) -> None:
    """The venue reports a 0.002 trade for a 0.001 order (an overfill no spot order makes; a
    trade tied to the wrong order). The account holds what was traded, so it is booked (the
    position is the account's), and the order ends FILLED; but nobody was told. It is now in
    the Venues pane's problems."""
    clock = FakeClock()
    venue = _Binance()
    broker, http = make_broker(monkeypatch, "binance", clock=clock)
    await broker.start()
    http.add(*venue.routes())
    await broker.submit(new_order("binance", "ck-1-1", qty=0.001))
    venue.fill("ck-1-1", 991, 0.002)
    out = await broker.poll()
    await broker.close()
    assert sum(f.qty for f in _fills(out)) == pytest.approx(0.002)
    assert [x.order.status for x in out if isinstance(x, OrderUpdate)] == [OrderStatus.FILLED]
    assert broker.status_anomalies == 1
    assert "more than the 0.001 it had left" in broker.problems[-1]
