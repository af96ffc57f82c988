"""`cockpit data download --trades` against a loopback Binance ``GET /api/v3/aggTrades``.

The server answers as Binance does (``startTime``/``endTime`` inclusive and at most an hour
apart, ``limit`` at most 1000, oldest first) from the real Binance BTCUSDT trades shipped in
tests/data (2024-08-08 23:54-24:00 UTC, 9,757 trades, many sharing a millisecond), so pages
end in the middle of a millisecond's trades: each trade must still be stored exactly once.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import itertools
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from engine.marketdata.download import Downloader, DownloadUsageError
from engine.marketdata.store import TRADE_HEADER, TradeStore
from tests.conftest import unpacked
from tests.test_marketdata_download import KlinesVenue, pointed_exchange

TRADES_CSV = unpacked("hftbacktest/binance_spot_btcusdt_20240808_trades.csv")


def real_trades() -> list[dict[str, Any]]:
    """The capture as Binance aggTrades rows (one trade per aggregate, as captured)."""
    out = []
    with TRADES_CSV.open() as fh:
        for r in csv.DictReader(fh):
            tid = int(r["trade_id"])
            out.append(
                {
                    "a": tid,
                    "p": r["price"],
                    "q": r["qty"],
                    "f": tid,
                    "l": tid,
                    "T": int(r["trade_time_ms"]),
                    "m": r["is_buyer_maker"] == "true",
                    "M": True,
                }
            )
    out.sort(key=lambda x: (x["T"], x["a"]))
    return out


TRADES = real_trades()
SINCE = TRADES[0]["T"]
UNTIL = TRADES[-1]["T"] + 1


class TradesVenue(KlinesVenue):
    def __init__(self) -> None:
        super().__init__()
        self.trades = TRADES
        self.times = [t["T"] for t in TRADES]
        self.agg_asked: list[tuple[int, int, int]] = []
        self.by_id: list[int] = []

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if not request.path.endswith("/api/v3/aggTrades"):
            return await super()._dispatch(request)
        q = request.query
        limit = min(int(q.get("limit", 500)), 1000)
        if "fromId" in q:  # by id: no time window
            self.by_id.append(int(q["fromId"]))
            ids = [t["a"] for t in self.trades]
            lo = bisect.bisect_left(ids, int(q["fromId"]))
            return web.json_response(self.trades[lo : lo + limit])
        start, end = int(q["startTime"]), int(q["endTime"])
        self.agg_asked.append((start, end, limit))
        if end - start > 3_600_000:
            return web.json_response(
                {"code": -1127, "msg": "More than 1 hours between startTime and endTime."},
                status=400,
            )
        step = self.klines.popleft() if self.klines else "ok"
        if step == "429":
            return web.json_response({"code": -1003, "msg": "Too many requests"}, status=429,
                                     headers={"Retry-After": "1"})  # fmt: skip
        lo = bisect.bisect_left(self.times, start)
        hi = bisect.bisect_right(self.times, end)
        return web.json_response(self.trades[lo:hi][:limit])


def on_disk(data_dir: Path) -> list[list[str]]:
    rows: list[list[str]] = []
    for f in sorted((data_dir / "market" / "binance" / "BTC-USDT" / "trades").glob("*.csv.gz")):
        with gzip.open(f, "rt") as fh:
            reader = csv.reader(fh)
            assert tuple(next(reader)) == TRADE_HEADER
            rows.extend(reader)
    return rows


def dl(server: KlinesVenue, data_dir: Path, **kw: Any) -> Downloader:
    return Downloader(
        "binance",
        ["BTC/USDT"],
        "trades",
        kw.pop("since", SINCE),
        kw.pop("until", UNTIL),
        data_dir,
        exchange=pointed_exchange(server),
        trades=True,
        page_limit=kw.pop("page_limit", 250),
        clock_ms=lambda: UNTIL + 3_600_000,
        **kw,
    )


async def run(d: Downloader) -> Any:
    try:
        return await d.run()
    finally:
        await d.close()


def check_all_once(data_dir: Path, upto: int = UNTIL) -> None:
    got = on_disk(data_dir)
    want = [t for t in TRADES if t["T"] < upto]
    assert [r[1] for r in got] == [str(t["a"]) for t in want]  # each trade once, in order
    for r, t in zip(got, want, strict=True):
        assert int(r[0]) == t["T"]
        assert float(r[3]) == float(t["p"]) and float(r[4]) == float(t["q"])
        assert r[2] == ("sell" if t["m"] else "buy")  # buyer is maker: the taker sold
        assert r[5] == "BTC/USDT"


async def test_trades_page_through_shared_milliseconds_once_each(tmp_path: Path) -> None:
    server = TradesVenue()
    await server.start()
    try:
        (r,) = await run(dl(server, tmp_path))
    finally:
        await server.stop()
    check_all_once(tmp_path)
    assert r.bars_new == r.bars_total == len(TRADES)
    assert r.gaps == []
    # Full pages are followed from their last millisecond (so pages overlap there).
    starts = [a for a, _e, _l in server.agg_asked]
    assert len(starts) >= len(TRADES) // 250
    assert all(b >= a for a, b in itertools.pairwise(starts))
    assert all(e - a < 3_600_000 for a, e, _l in server.agg_asked)
    store = TradeStore(tmp_path, "binance", "BTC/USDT")
    assert store.covered == [(SINCE, UNTIL)]
    # The capture has a millisecond with more than 250 trades: paged past by trade id.
    assert server.by_id


async def test_trades_resume_after_an_interruption_with_no_loss(tmp_path: Path) -> None:
    server = TradesVenue()
    await server.start()
    try:
        middle = TRADES[len(TRADES) // 2]["T"]
        await run(dl(server, tmp_path, until=middle))
        check_all_once(tmp_path, upto=middle)
        server.agg_asked.clear()
        await run(dl(server, tmp_path))
    finally:
        await server.stop()
    assert server.agg_asked[0][0] == middle
    check_all_once(tmp_path)


async def test_trades_wait_out_a_429(tmp_path: Path) -> None:
    server = TradesVenue()
    server.klines.extend(["ok", "429"])
    await server.start()
    try:
        d = dl(server, tmp_path)
        await run(d)
    finally:
        await server.stop()
    assert d.stats.rate_limited == 1 and d.stats.waits_s == [1.0]
    check_all_once(tmp_path)


def test_trades_only_where_their_paging_is_known(tmp_path: Path) -> None:
    with pytest.raises(DownloadUsageError, match=r"--trades.*binance"):
        Downloader("kraken", ["BTC/USD"], "trades", 0, 1, tmp_path, trades=True)


def test_cli_trades_with_a_timeframe_is_a_usage_error(tmp_path: Path) -> None:
    from cockpit.cli import main

    code = main(
        ["data", "download", "--exchange", "binance", "--symbol", "BTC/USDT", "--since",
         "2024-01-01", "--trades", "--timeframe", "1m", "--data-dir", str(tmp_path)]
    )  # fmt: skip
    assert code == 2
