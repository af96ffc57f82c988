"""Recording a paper-on-live engine, offline: bybit's orderbook.50 websocket on 127.0.0.1
(ccxt.pro's real bybit class), ``[record] enabled``. The recording verifies, replays (as the
engine's market source, and as a backtest's data) to the live run's decisions, and every
acting decision's journal row carries the L2 book it was made on."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.backtest import build_backtest_config
from engine.backtest.data import load_market_data
from engine.backtest.options import BacktestOptions
from engine.backtest.runner import run_backtest_core
from engine.config import Config, parse_config
from engine.datadir import JOURNAL_FILE
from engine.journal import read_rows
from engine.marketdata.recording import read_recording, record_root, verify_path
from engine.runtime import Engine
from engine.strategies.base import Strategy, StrategyParams
from engine.types import Action, Bar, PositionView, Signal
from engine.vocabulary import decode_book
from tests.conftest import default_dict, merge
from tests.test_paper_live import Loopback, StreamingVenue, run_until

BTC = "BTC/USDT"


class Flipper(Strategy):
    """Buys when flat and sells when long, every bar: an acting decision each second."""

    kind = "flipper"
    Params = StrategyParams

    @property
    def warmup_bars(self) -> int:
        return 0

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        action = Action.SELL if position.qty > 0 else Action.BUY
        return Signal(
            action=action,
            rule="flip",
            reason=f"close {bar.close:.2f}",
            confidence=1.0,
            inputs={"close": bar.close},
        )


def moving_book(seq: int) -> dict[str, Any]:
    """A bybit orderbook.50 snapshot whose prices walk with ``seq`` (so decisions differ)."""
    ts = time.time_ns() // 1_000_000
    mid = 61000.0 + (seq * 7) % 40 - 20
    bids = [[f"{mid - 0.5 - i:.2f}", f"{0.5 + i * 0.25:.4f}"] for i in range(25)]
    asks = [[f"{mid + 0.5 + i:.2f}", f"{0.4 + i * 0.3:.4f}"] for i in range(25)]
    return {
        "topic": "orderbook.50.BTCUSDT",
        "type": "snapshot",
        "ts": ts,
        "data": {"s": "BTCUSDT", "b": bids, "a": asks, "u": seq + 1, "seq": 7961638724 + seq},
        "cts": ts - 1,
    }


def trade(seq: int) -> dict[str, Any]:
    """A bybit publicTrade message: one trade at the book's mid."""
    ts = time.time_ns() // 1_000_000
    price = 61000.0 + (seq * 7) % 40 - 20
    return {
        "topic": "publicTrade.BTCUSDT",
        "type": "snapshot",
        "ts": ts,
        "data": [
            {
                "T": ts,
                "s": "BTCUSDT",
                "S": "Buy" if seq % 2 else "Sell",
                "v": "0.001",
                "p": f"{price:.2f}",
                "L": "PlusTick",
                "i": f"trade-{seq}",
                "BT": False,
            }
        ],
    }


class MovingBybit(StreamingVenue):
    """bybit's public websocket streaming a walking orderbook.50 and, every fifth update, a
    public trade."""

    async def subscribed(self, ws: web.WebSocketResponse, n: int) -> bool:
        async def stream() -> None:
            while not ws.closed:
                await ws.send_str(json.dumps(moving_book(self.sent)))
                if self.sent % 5 == 0:
                    await ws.send_str(json.dumps(trade(self.sent)))
                self.sent += 1
                await asyncio.sleep(self.every_s)

        self._streams[n] = asyncio.create_task(stream())
        return False


def config(data_dir: Path, market: dict[str, Any]) -> Config:
    data = merge(
        default_dict(),
        {
            "engine": {"data_dir": str(data_dir)},
            "market": market,
            "portfolio": {"starting_cash": 1_000_000.0},
            "venues": {
                "bybit": {"exchange": "bybit", "market_data": "websocket", "quote_source": "book"}
            },
            "safety": {"breakers": {"max_unreviewed_fills": 100_000}},
            "record": {"enabled": True},
        },
    )
    data["strategies"] = [
        {
            "id": "flipper",
            "kind": "tests.test_recording_live:Flipper",
            "symbols": [BTC],
            "timeframe_s": 1,
            "sizing": {"model": "fixed_qty", "qty": 0.01},
            "approval": "auto",
        }
    ]
    return parse_config(data)


def acting_decisions(data_dir: Path) -> list[dict[str, Any]]:
    return [r.payload for r in read_rows(data_dir / JOURNAL_FILE) if r.kind == "decision"]


async def test_a_paper_on_live_recording_verifies_and_replays_to_the_same_decisions(
    tmp_path: Path,
) -> None:
    live_dir = tmp_path / "live"
    loop = Loopback()
    loop.servers["bybit"] = MovingBybit("bybit", every_s=0.01)
    async with loop:
        engine = Engine(
            config(live_dir, {"source": "venue"}), live_dir, prepare_exchange=loop.prepare_exchange
        )
        await engine.start()
        try:
            await run_until(engine, lambda: len(acting_decisions_seen(engine)) >= 4, 30.0)
        finally:
            await engine.stop()
        assert engine.recorder is not None
        status = engine.recorder.status()
    assert status["records"] > 50 and status["dropped"] == 0
    reports = verify_path(record_root(live_dir))
    assert len(reports) == 1 and reports[0].problems == []
    recorded = list(read_recording(record_root(live_dir)))
    # Public trades are recorded beside the books (as ccxt parsed them, bybit's own message in
    # each trade's info), and replay leaves them out.
    trades = [r for r in recorded if r.kind == "trade"]
    assert trades and trades[0].payload[0]["info"]["i"].startswith("trade-")
    assert trades[0].exch_ns == trades[0].payload[-1]["timestamp"] * 10**6
    recorded = [r for r in recorded if r.kind == "book"]
    # The payloads as the stream delivered them: ccxt's book of bybit's snapshot, 25 levels.
    first = recorded[0]
    assert first.kind == "book" and first.venue == "bybit" and first.symbol == BTC
    assert len(first.payload["bids"]) == 25 and first.exch_ns == first.payload["timestamp"] * 10**6
    live = acting_decisions(live_dir)
    assert len(live) >= 4

    # Every acting decision carries its book: none missing where the feed has L2.
    snaps = engine.book_snapshots
    assert snaps["taken"] == len(live) and snaps["missing"] == 0
    for row in live:
        book = decode_book(row["book"])
        assert book is not None and len(book["bids"]) == 20 and len(book["asks"]) == 20
        assert book["bids"][0][0] < book["asks"][0][0]

    # Replayed as the engine's market (paper): the same decisions, books included.
    replay_dir = tmp_path / "replay"
    market = {
        "source": "replay",
        "replay": {"path": str(record_root(live_dir)), "kind": "recording"},
    }
    replayer = Engine(config(replay_dir, market), replay_dir)
    await replayer.start()
    try:
        await replayer.run()
    finally:
        await replayer.stop()
    assert replayer.recorder is None  # a replay is not recorded again
    again = acting_decisions(replay_dir)
    # The recording holds what arrived after the live run's last processed quote too: the
    # replay may see at most one more bar close.
    assert again[: len(live)] == live
    assert len(again) - len(live) <= 1

    # And as a backtest's data: the same quotes, as the feed judged them, and the same
    # decisions (each one's order filled after it, before the next).
    data = load_market_data(record_root(live_dir) / "bybit" / "BTC-USDT")
    assert data.fmt == "recording" and data.symbol == BTC and len(data) == len(recorded)
    opts = BacktestOptions(strategy="flipper", qty=0.01)
    cfg = config(tmp_path / "bt", {"source": "venue"})
    result = run_backtest_core(build_backtest_config(cfg, data, opts), data, opts)
    fills = result.fills[: len(live)]
    actions = [r["decision"]["action"] for r in live]
    if len(fills) < len(live):
        # The live run may stop right after its last decision: the recording then ends before
        # that order's fill (the paper broker's latency), so only the last may go unfilled.
        assert len(fills) == len(live) - 1
        assert data.ts[-1] - live[-1]["decision"]["ts"] < 2 * 10**9
    assert [str(f.side) for f in fills] == actions[: len(fills)]
    times = [r["decision"]["ts"] for r in live] + [2**63]
    assert all(times[i] <= f.ts < times[i + 1] for i, f in enumerate(fills))
    assert len(result.fills) - len(live) <= 1


def acting_decisions_seen(engine: Engine) -> list[Any]:
    return [e for e in engine.recent if e.get("event") == "decision"]


def test_the_trace_the_journal_and_the_chain_show_the_book(tmp_path: Path) -> None:
    """An acting decision's row as the live run journaled it (see the test above): the
    journal/trace line names the touch, the chain screen lists every stored level."""
    from cockpit.oneshot import format_event_body
    from cockpit.tui.chain_screen import chain_text
    from cockpit.tui.view import ChainEntry
    from engine.bookshot import encode_book

    bids = [(61000.0 - i, 0.5 + i) for i in range(25)]
    asks = [(61001.0 + i, 0.25 + i) for i in range(25)]
    book = encode_book(bids, asks, 1_000_000_000, 1_002_000_000, levels=20)
    decision = {"decision_id": "d1-1", "strategy_id": "flipper", "symbol": BTC, "action": "buy"}
    line = format_event_body({"event": "decision", "decision": decision, "book": book})
    assert "| book 0.5 @ 61000 / 0.25 @ 61001, 20x20 levels, 2 ms old" in line
    text = chain_text(ChainEntry("d1-1", 1, decision, book=book)).plain
    assert "book: 0.5 @ 61000 / 0.25 @ 61001, 20x20 levels, 2 ms old" in text
    rows = [r for r in text.splitlines() if " | " in r and "bid size" not in r]
    assert len(rows) == 20
    assert rows[0].split() == ["0.5", "61000.00", "|", "61001.00", "0.25"]
    assert rows[19].split() == ["19.5", "60981.00", "|", "61020.00", "19.25"]
    missing = {"missing": "no L2 book for this symbol"}
    line = format_event_body({"event": "decision", "decision": decision, "book": missing})
    assert line.endswith("| book MISSING: no L2 book for this symbol")


async def test_acting_decisions_without_a_book_are_counted_and_say_why(tmp_path: Path) -> None:
    """The simulated market has no L2 depth: each acting decision's row says so, counted."""
    data = merge(default_dict(), {"engine": {"data_dir": str(tmp_path)}})
    data["strategies"] = [
        {
            "id": "flipper",
            "kind": "tests.test_recording_live:Flipper",
            "symbols": [BTC],
            "timeframe_s": 1,
            "sizing": {"model": "fixed_qty", "qty": 0.001},
            "approval": "auto",
        }
    ]
    data["market"]["simulated"]["speed"] = "max"
    engine = Engine(parse_config(data), tmp_path)
    await engine.start()
    try:
        await engine.run(max_events=400)
    finally:
        await engine.stop()
    rows = acting_decisions(tmp_path)
    assert rows and engine.book_snapshots == {"taken": 0, "missing": len(rows)}
    assert all("no L2 book" in r["book"]["missing"] for r in rows)
    # The simulated market streams no L2 at all: an expected absence, not a fault.
    assert all(r["book"].get("no_l2_feed") is True for r in rows)
    snap_counters = engine.book_snapshots
    assert snap_counters["missing"] == len(rows)


async def test_a_quote_goes_to_the_engine_with_the_book_it_came_with(tmp_path: Path) -> None:
    """Two books arrive before the engine takes the first quote: that quote still goes with
    the first book (the one a replay of the recording pairs with it), not the newer one."""
    from engine.marketdata.recording import _Offline
    from engine.venues.ccxt_market import CcxtMarketFeed

    feed = CcxtMarketFeed("bybit", _Offline("bybit"), [BTC], source="book", transport="poll")
    now = time.time_ns()
    books = []
    for i, mid in enumerate((61000.0, 61010.0)):
        payload = {
            "symbol": BTC,
            "timestamp": now // 1_000_000 + i,
            "bids": [[mid - 0.5, 1.0], [mid - 1.5, 2.0]],
            "asks": [[mid + 0.5, 1.0], [mid + 1.5, 2.0]],
        }
        quote = feed.accept(BTC, payload, now + i)
        assert quote is not None
        feed._publish(quote)
        books.append(quote)
    feed._tasks.append(asyncio.create_task(asyncio.sleep(0)))  # nothing to start: offline
    it = feed.quotes()
    first = await it.__anext__()
    assert first is books[0]
    assert feed.book_for(first) is not None and feed.book_for(first).bids[0] == (60999.5, 1.0)
    assert feed.depth(BTC) is not None and feed.depth(BTC).bids[0] == (61009.5, 1.0)
    second = await it.__anext__()
    assert feed.book_for(second).bids[0] == (61009.5, 1.0)  # type: ignore[union-attr]
    await feed.close()


def test_recording_on_the_simulated_market_is_refused_where_a_venue_feed_passes(
    tmp_path: Path,
) -> None:
    """`[record] enabled = true` on the simulated market passed `config check` and the engine
    recorded nothing (only venue feeds are recorded): refused, saying what to change. The same
    section passes where there is a venue feed to record, and a backtest of the whole config
    (which runs on the simulated market's clock) switches recording off instead of failing."""
    from engine.config import ConfigError
    from engine.research.portfolio import build_portfolio_config

    simulated = merge(default_dict(), {"record": {"enabled": True}})
    try:
        parse_config(simulated)
    except ConfigError as exc:
        assert exc.problems == [
            "record.enabled: only the venues' feeds are recorded, and this engine reads the "
            'simulated market; set [market] source = "venue" to record a venue\'s, or '
            "record.enabled = false"
        ]
    else:
        raise AssertionError("recording on the simulated market passed the config check")
    simulated["record"]["enabled"] = False  # just off: passes
    assert parse_config(simulated).record.enabled is False
    venue = config(tmp_path / "live", {"source": "venue"})  # a venue feed to record: passes
    assert venue.record.enabled is True and venue.market.source == "venue"
    from tests.test_review_research import write_bars

    data = load_market_data(write_bars(tmp_path / "bars.csv"))
    whole = build_portfolio_config(venue, {BTC: data}, BacktestOptions(), "auto")
    assert whole.market.source == "simulated" and whole.record.enabled is False
