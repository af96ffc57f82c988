"""Reconciliation (pure): venue vs journal differences, one human line each, and the HALT rule."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.types import Fill, Liquidity, Order, OrderStatus, OrderType, Side
from engine.venues.reconcile import (
    BALANCE_MISMATCH,
    MISSING_ORDER,
    ORDER_STATE,
    UNJOURNALED_FILL,
    UNKNOWN_ORDER,
    JournalSnapshot,
    ResolutionError,
    VenueOrder,
    VenueReconciliation,
    VenueSnapshot,
    VenueTrade,
    build,
    expected_balances,
    reconcile,
    venue_order_from_ccxt,
    venue_trade_from_ccxt,
)

T = 1_723_161_600_000_000_000


def order(coid: str, status: OrderStatus = OrderStatus.NEW, qty: float = 0.01) -> Order:
    return Order(
        coid,
        coid,
        "s1",
        "BTC/USDT",
        "binance",
        Side.BUY,
        OrderType.LIMIT,
        qty,
        60000.0,
        status,
        T,
        T,
    )


def vorder(oid: str, cid: str | None, qty: float = 0.01) -> VenueOrder:
    return VenueOrder(oid, cid, "BTC/USDT", "buy", "limit", qty, 0.0, 60000.0, None, "open", T)


def vtrade(tid: str, oid: str | None, cid: str | None = None, qty: float = 0.01) -> VenueTrade:
    return VenueTrade(tid, oid, cid, "BTC/USDT", "buy", qty, 60000.0, 0.6, "USDT", "taker", T)


def fill(fid: str, coid: str, qty: float = 0.01, side: Side = Side.BUY) -> Fill:
    return Fill(fid, coid, "s1", "BTC/USDT", "binance", side, qty, 60000.0, 0.6, Liquidity.TAKER, T)


def snap(
    opened: list[VenueOrder] = (),
    trades: list[VenueTrade] = (),  # type: ignore[assignment]
    balances: dict[str, float] | None = None,
) -> VenueSnapshot:
    return VenueSnapshot("binance", tuple(opened), tuple(trades), balances or {}, 0, T)


def test_everything_agrees_no_differences() -> None:
    j = JournalSnapshot(
        (order("ck-1-1"),),
        (fill("binance-7", "ck-1-2"),),
        {"ck-1-1": "ck-1-1", "ck-1-2": "ck-1-2"},
        {"99": "ck-1-2"},
        frozenset({"ck-1-1", "ck-1-2"}),
    )
    v = snap([vorder("1", "ck-1-1")], [vtrade("7", "99")])
    rec = build(v, j)
    assert rec.differences == () and not rec.halted and rec.trading_state == "ACTIVE"


def test_each_kind_of_difference_has_a_line() -> None:
    j = JournalSnapshot(
        open_orders=(order("ck-1-1"), order("ck-1-2"), order("ck-1-5", OrderStatus.PENDING_NEW)),
        fills=(),
        client_ids={"ck-1-1": "ck-1-1", "ck-1-2": "ck-1-2", "ck-1-3": "ck-1-3"},
        venue_order_ids={"11": "ck-1-1"},
        known_orders=frozenset({"ck-1-1", "ck-1-2", "ck-1-3"}),
        expected_balances={"USDT": 1000.0, "BTC": 0.5},
    )
    v = snap(
        [vorder("11", "ck-1-1"), vorder("55", "web_abc"), vorder("33", "ck-1-3")],
        [vtrade("t1", "11"), vtrade("t2", "55", "web_abc")],
        {"USDT": 1000.0, "BTC": 0.49},
    )
    diffs = reconcile(v, j)
    kinds = {(d.kind, d.key) for d in diffs}
    assert kinds == {
        (UNKNOWN_ORDER, "55"),
        (ORDER_STATE, "33"),  # finished in the journal, open at the venue
        (MISSING_ORDER, "ck-1-2"),  # pending ck-1-5 is the recovery's, not a difference
        (UNJOURNALED_FILL, "binance-t1"),
        (UNJOURNALED_FILL, "binance-t2"),
        (BALANCE_MISMATCH, "BTC"),
    }
    blocking = {d.key for d in diffs if d.blocking}
    assert blocking == {"55", "33", "binance-t2"}
    assert diffs[0].blocking  # blocking ones first
    for d in diffs:
        assert d.line.startswith("binance: ") and "\n" not in d.line
    by_key = {d.key: d for d in diffs}
    assert "unknown open order" in by_key["55"].line and "adopt or cancel" in by_key["55"].line
    assert "web_abc" in by_key["55"].line
    assert "applying it" in by_key["binance-t1"].line
    assert "0.49" in by_key["BTC"].line and "0.5" in by_key["BTC"].line
    json.dumps([d.to_dict() for d in diffs])  # journal-ready


def test_halted_until_each_unknown_order_is_adopted_or_cancelled() -> None:
    j = JournalSnapshot((), (), {}, {}, frozenset())
    rec = build(snap([vorder("55", "a"), vorder("56", None)]), j)
    assert rec.halted and "2 unresolved" in rec.halt_reason()
    with pytest.raises(ResolutionError, match="adopt or cancel"):
        rec.resolve("55", "ignore", by="ana", ts=T)
    with pytest.raises(ResolutionError, match="no difference"):
        rec.resolve("nope", "cancel", by="ana", ts=T)
    with pytest.raises(ResolutionError, match="person"):
        rec.resolve("55", "cancel", by="", ts=T)
    rec2 = rec.resolve("55", "cancel", by="ana", ts=T)
    assert rec2.halted and not rec.resolutions  # immutable: the old one is unchanged
    rec3 = rec2.resolve("56", "adopt", by="ana", ts=T, note="manual hedge")
    assert not rec3.halted and rec3.trading_state == "ACTIVE" and rec3.halt_reason() == ""
    assert any("[cancel by ana]" in line for line in rec3.lines())
    back = VenueReconciliation.from_dict(json.loads(json.dumps(rec3.to_dict())))
    assert back == rec3 and not back.halted


def test_balance_mismatch_blocks_only_when_asked() -> None:
    j = JournalSnapshot((), (), {}, expected_balances={"USDT": 100.0})
    v = snap(balances={"USDT": 90.0})
    assert not build(v, j).halted
    assert build(v, j, balance_blocking=True).halted
    ok = snap(balances={"USDT": 100.0 + 1e-9})
    assert reconcile(ok, j) == []


def test_expected_balances_follow_fills() -> None:
    fills = [fill("f1", "a", 0.5), fill("f2", "b", 0.2, Side.SELL)]
    got = expected_balances({"USDT": 100_000.0}, fills, lambda s: tuple(s.split("/")))  # type: ignore[arg-type,return-value]
    assert got["BTC"] == pytest.approx(0.3)
    assert got["USDT"] == pytest.approx(100_000 - 0.5 * 60000 + 0.2 * 60000 - 1.2)


def test_ccxt_structures_convert() -> None:
    o = venue_order_from_ccxt(
        {
            "id": 5,
            "clientOrderId": "x",
            "symbol": "BTC/USDT",
            "side": "buy",
            "type": "limit",
            "amount": 1,
            "filled": None,
            "price": 3,
            "status": "open",
            "timestamp": 1000,
        }
    )
    assert (o.venue_order_id, o.filled, o.ts) == ("5", 0.0, 1000 * 1_000_000)
    base_fee = venue_trade_from_ccxt(
        {
            "id": 1,
            "symbol": "BTC/USDT",
            "amount": 2,
            "price": 10,
            "fee": {"cost": 0.001, "currency": "BTC"},
        }
    )
    assert base_fee.fee == pytest.approx(0.01)
    bnb = venue_trade_from_ccxt(
        {
            "id": 1,
            "symbol": "BTC/USDT",
            "amount": 2,
            "price": 10,
            "fee": {"cost": 0.001, "currency": "BNB"},
        }
    )
    assert bnb.fee != bnb.fee and bnb.fee_currency == "BNB"  # NaN: the broker estimates it
    linked = venue_trade_from_ccxt(
        {"id": 1, "symbol": "BTC/USDT", "amount": 1, "price": 1, "info": {"orderLinkId": "ck-1-1"}}
    )
    assert linked.client_id == "ck-1-1"


ids = st.text(alphabet="abc123", min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(
    venue_ids=st.lists(ids, max_size=8, unique=True),
    journal_ids=st.lists(ids, max_size=8, unique=True),
)
def test_no_venue_order_is_ever_silently_dropped(
    venue_ids: list[str], journal_ids: list[str]
) -> None:
    """Every open order at the venue is either the journal's open order or a blocking
    difference; every journal open order is at the venue or reported missing."""
    j = JournalSnapshot(
        tuple(order(c) for c in journal_ids),
        (),
        {c: c for c in journal_ids},
        known_orders=frozenset(journal_ids),
    )
    v = snap([vorder(f"v{c}", c) for c in venue_ids])
    rec = build(v, j)
    reported = {d.key for d in rec.differences}
    for c in venue_ids:
        assert c in journal_ids or f"v{c}" in reported
    for c in journal_ids:
        assert c in venue_ids or c in reported
    assert rec.halted == any(c not in journal_ids for c in venue_ids)


def test_a_missed_fill_of_a_finished_order_blocks_unless_booked_from_its_totals() -> None:
    """Nothing books a trade of an order the journal has finished: it blocks (the position
    differs). When the order's fill was booked from its totals (the trades never showed up),
    the late trade is that fill: nothing to do."""
    finished = {"ck-1-1": "ck-1-1", "ck-1-2": "ck-1-2"}
    j = JournalSnapshot(
        (),
        (fill("binance-ck-1-2-agg1", "ck-1-2"),),
        finished,
        {"11": "ck-1-1", "12": "ck-1-2"},
        frozenset(finished),
    )
    diffs = {d.key: d for d in reconcile(snap([], [vtrade("t1", "11"), vtrade("t2", "12")]), j)}
    assert diffs["binance-t1"].blocking and "finished order ck-1-1" in diffs["binance-t1"].line
    assert not diffs["binance-t2"].blocking and "order's totals" in diffs["binance-t2"].line
