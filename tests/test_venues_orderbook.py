"""L2 book sync on real Binance data: the REST snapshot plus the depth-diff stream.

The capture (tests/data/hftbacktest, see its NOTICE.md) has one ``GET /api/v3/depth?limit=1000``
snapshot and 3,451 ``btcusdt@depth@100ms`` diffs; message 2 is the first to bridge the snapshot.
The same capture's bookTicker stream carries the *same* update-id sequence, so wherever a
bookTicker row has the id a diff ended on, our book's top must equal that row exactly.
"""

from __future__ import annotations

import csv
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from engine.venues.orderbook import (
    APPLIED,
    BUFFERED,
    GAP,
    REJECTED,
    STALE,
    BookSync,
    L2Book,
    SyncState,
)
from tests.conftest import BOOKTICKER_CSV, DEPTH_SNAPSHOT_JSON, DEPTH_UPDATES_JSON
from tests.test_venues_support import RecordedHttp, Route

SNAPSHOT = DEPTH_SNAPSHOT_JSON
UPDATES = DEPTH_UPDATES_JSON
SNAPSHOT_RECV_NS = 1723161254206652067  # from NOTICE.md


@cache
def _snapshot() -> dict[str, Any]:
    return json.loads(Path(SNAPSHOT).read_text())


@cache
def _updates() -> list[dict[str, Any]]:
    return json.loads(Path(UPDATES).read_text())


@cache
def _book_ticker() -> dict[int, tuple[float, float, float, float]]:
    out = {}
    with open(BOOKTICKER_CSV, newline="") as fh:
        for row in csv.DictReader(fh):
            out[int(row["update_id"])] = (
                float(row["bid_price"]),
                float(row["bid_qty"]),
                float(row["ask_price"]),
                float(row["ask_qty"]),
            )
    return out


def _split() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Diffs received before the snapshot (buffered) and after it (applied live)."""
    ups = _updates()
    before = [m for m in ups if m["local_ts_ns"] <= SNAPSHOT_RECV_NS]
    after = [m for m in ups if m["local_ts_ns"] > SNAPSHOT_RECV_NS]
    return before, after


def test_snapshot_plus_diffs_sync_and_match_the_book_ticker() -> None:
    before, after = _split()
    sync = BookSync("BTC/USDT")
    assert sync.needs_snapshot and not sync.book_ready
    assert all(sync.on_diff(m) == BUFFERED for m in before)
    assert sync.on_snapshot(_snapshot()) == SyncState.SYNCED.value
    # The two diffs the snapshot already contains are dropped; message 2 bridges it.
    assert sync.counts[STALE] == 2 and sync.counts[APPLIED] == 1
    first = _updates()[2]["data"]
    last_id = _snapshot()["lastUpdateId"]
    assert first["U"] <= last_id + 1 <= first["u"]

    ticker = _book_ticker()
    compared = 0
    for msg in after:
        assert sync.on_diff(msg) == APPLIED
        u = msg["data"]["u"]
        assert sync.book.last_update_id == u
        row = ticker.get(u)
        if row is not None:
            bid, ask = sync.book.best_bid(), sync.book.best_ask()
            assert bid is not None and ask is not None
            assert (bid[0], bid[1], ask[0], ask[1]) == row, f"top differs at update id {u}"
            compared += 1
        assert not sync.book.crossed()
    assert sync.gaps == 0 and sync.book_ready
    assert sync.counts[APPLIED] == len(_updates()) - 2
    # Hundreds of exact agreements with an independent stream of the same book.
    assert compared > 500


def test_a_missing_diff_is_a_gap_and_the_book_must_be_resynced() -> None:
    before, after = _split()
    sync = BookSync("BTC/USDT")
    for m in before:
        sync.on_diff(m)
    sync.on_snapshot(_snapshot())
    for m in after[:100]:
        assert sync.on_diff(m) == APPLIED
    # Lose one message: the next one does not start where the book ended.
    assert sync.on_diff(after[101]) == GAP
    assert sync.gaps == 1
    assert sync.needs_snapshot and not sync.book_ready
    # Meanwhile diffs are buffered, not applied, until a new snapshot arrives.
    assert sync.on_diff(after[102]) == BUFFERED
    # The old snapshot cannot bridge the buffered diffs: still a gap, still unsynced.
    assert sync.on_snapshot(_snapshot()) == GAP
    assert not sync.book_ready


def test_resync_from_a_fresh_snapshot_after_a_gap() -> None:
    """A 'new snapshot' built from a reference book at the gap restores sync."""
    before, after = _split()
    ref = BookSync("BTC/USDT")  # a reference that saw every message
    for m in before:
        ref.on_diff(m)
    ref.on_snapshot(_snapshot())
    sync = BookSync("BTC/USDT")
    for m in before:
        sync.on_diff(m)
    sync.on_snapshot(_snapshot())
    for m in after[:200]:
        ref.on_diff(m)
        sync.on_diff(m)
    ref.on_diff(after[200])  # the message the second book loses
    for m in after[201:210]:
        ref.on_diff(m)
        sync.on_diff(m)  # the first is the gap, the rest are buffered
    assert sync.gaps == 1 and sync.needs_snapshot
    # A snapshot taken after message 203 (as the venue would serve it).
    snap_ref = BookSync("BTC/USDT")
    for m in before:
        snap_ref.on_diff(m)
    snap_ref.on_snapshot(_snapshot())
    for m in after[:204]:
        snap_ref.on_diff(m)
    fresh = {
        "lastUpdateId": snap_ref.book.last_update_id,
        "bids": [[str(p), str(q)] for p, q in snap_ref.book.bids()],
        "asks": [[str(p), str(q)] for p, q in snap_ref.book.asks()],
    }
    assert sync.on_snapshot(fresh) == SyncState.SYNCED.value
    for m in after[210:]:
        ref.on_diff(m)
        assert sync.on_diff(m) == APPLIED
    assert sync.book.bids() == ref.book.bids() and sync.book.asks() == ref.book.asks()


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "text",
        {"data": {"U": 1}},
        {"data": {"U": "1", "u": "2", "b": [], "a": []}},
        {"data": {"U": 5, "u": 4, "b": [], "a": []}},
        {"data": {"U": 1, "u": 2, "b": [["nan", "1"]], "a": []}},
        {"data": {"U": 1, "u": 2, "b": [["100", "-1"]], "a": []}},
        {"data": {"U": 1, "u": 2, "b": [["abc", "1"]], "a": []}},
        {"data": {"U": 1, "u": 2, "b": [["100"]], "a": []}},
    ],
)
def test_malformed_diffs_are_counted_never_applied(bad: Any) -> None:
    before, after = _split()
    sync = BookSync("BTC/USDT")
    for m in before:
        sync.on_diff(m)
    sync.on_snapshot(_snapshot())
    top = (sync.book.best_bid(), sync.book.best_ask())
    assert sync.on_diff(bad) == REJECTED
    assert sync.counts[REJECTED] == 1
    assert (sync.book.best_bid(), sync.book.best_ask()) == top
    assert sync.on_diff(after[0]) == APPLIED  # the stream goes on


def test_bad_snapshot_is_refused() -> None:
    sync = BookSync("BTC/USDT")
    assert sync.on_snapshot({"lastUpdateId": "x", "bids": [], "asks": []}) == REJECTED
    assert sync.on_snapshot({"bids": [], "asks": []}) == REJECTED
    assert sync.on_snapshot({"lastUpdateId": 1, "bids": [["1", "nan"]], "asks": []}) == REJECTED
    assert sync.needs_snapshot


def test_l2_book_levels_and_quote() -> None:
    book = L2Book("BTC/USDT")
    book.load([["100", "1"], ["99", "2"]], [["101", "3"], ["102", "4"]], 7)
    book.apply([(100.5, 1.5), (99.0, 0.0), (98.0, 0.0)], [(101.0, 0.0)], 8)
    assert book.bids() == [(100.5, 1.5), (100.0, 1.0)]
    assert book.asks() == [(102.0, 4.0)]
    assert book.bids(1) == [(100.5, 1.5)]
    q = book.quote("binance", 5, 6)
    assert q is not None and (q.bid, q.ask, q.bid_size, q.ask_size) == (100.5, 102.0, 1.5, 4.0)
    assert not book.crossed()


async def test_the_snapshot_file_is_ccxt_fetch_order_book_answer() -> None:
    """The raw REST body, served by a patched fetch to ccxt's real binance class."""
    import ccxt.async_support as ccxt_async

    from tests.test_venues_support import fixture

    ex = ccxt_async.binance({"options": {"fetchMarkets": {"types": ["spot"]}}})
    ex.has = dict(ex.has)
    ex.has["fetchCurrencies"] = False
    http = RecordedHttp(
        ex,
        "binance",
        [
            Route("GET", r"/api/v3/exchangeInfo", fixture("binance", "exchange_info")),
            Route("GET", r"/api/v3/depth\?", _snapshot()),
        ],
    )
    try:
        ob = await ex.fetch_order_book("BTC/USDT", 1000)
    finally:
        await ex.close()
    depth_calls = [c for c in http.calls if "/depth" in c.url]
    assert len(depth_calls) == 1 and "symbol=BTCUSDT" in depth_calls[0].url
    assert "limit=1000" in depth_calls[0].url
    assert ob["nonce"] == _snapshot()["lastUpdateId"]
    assert len(ob["bids"]) == 1000 and len(ob["asks"]) == 1000
    assert ob["bids"][0] == [61837.63, 3.78826] and ob["asks"][0] == [61837.64, 1.54698]
    # ccxt's structure (nonce, float levels) syncs exactly like the raw body.
    before, after = _split()
    a, b = BookSync("BTC/USDT"), BookSync("BTC/USDT")
    for m in before:
        a.on_diff(m)
        b.on_diff(m)
    assert a.on_snapshot(ob) == b.on_snapshot(_snapshot()) == SyncState.SYNCED.value
    for m in after[:500]:
        assert a.on_diff(m) == b.on_diff(m) == APPLIED
    assert a.book.bids(20) == b.book.bids(20) and a.book.asks(20) == b.book.asks(20)
