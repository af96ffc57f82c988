"""Third adversarial review of market data and paper trading on live prices.

Each test pins a hole this review found (and fixed): the engine must not trade on data it
cannot trust, and bad data on disk or on the wire gets one line, never a traceback.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tests.test_marketdata_download as dl
import tests.test_venues_ws as ws
import tests.test_venues_ws_live as ws_live
from engine.backtest import load_market_data
from engine.marketdata.cache import MarketDataCache
from engine.marketdata.replay import ReplayError
from engine.marketdata.store import format_rows, month_bounds
from engine.types import Quote
from engine.venues.ratelimit import Backoff
from tests.conftest import BARS_CSV
from tests.test_venues_support import SYMBOL, fixture
from tests.test_venues_ws_live import (
    SYNCED_BOOK,
    Step,
    Stream,
    as_tuple,
    live_feed,
    quote_where,
    shutdown,
    until,
)

# ---------------------------------------------------------------------- kucoin level2 gaps


async def no_wait(_seconds: float) -> None:
    """The feed's backoff, without the wait."""
    await asyncio.sleep(0)


async def test_a_gap_in_the_kucoin_level2_sequence_is_never_a_quote_and_the_book_is_rebuilt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """KuCoin drops a level2 message now and then ("if the sequence is discontinuous, get the
    snapshot again", its API docs); ccxt.pro's kucoin applied whatever delta came next, so the
    book after a lost message was wrong and handed out as the venue's (and walked by the paper
    broker). A delta whose ``sequenceStart`` is past the book's sequence + 1 now unsyncs the
    symbol, is never a quote, and the book is rebuilt on the same connection from a new REST
    snapshot and the deltas that follow it."""
    sym = SYMBOL["kucoin"]
    stream = Stream("kucoin", "book")
    synced, release = asyncio.Event(), asyncio.Event()
    opening = stream.connect()
    stream.seq += 5  # five sequence numbers the venue sent and we never got
    gapped = stream.kucoin_delta([], [["61688.95", "7"]])  # a new best ask, after the gap
    # What follows the gap: six deltas (ccxt caches five, then asks for the snapshot), and a
    # snapshot taken in their midst (sequence = the end of the third): ccxt replays the rest.
    resume = stream.seq
    following = [stream.kucoin_delta([["61688.9", f"0.{i + 1}"]], []) for i in range(6)]
    snapshots = 0

    def snapshot_fixture(venue: str, name: str) -> Any:
        nonlocal snapshots
        body = copy.deepcopy(fixture(venue, name))
        if name == "orderbook_level2_20":
            snapshots += 1
            if snapshots > 1:  # taken after the gap
                body["data"]["sequence"] = str(resume + 2)
        return body

    monkeypatch.setattr(ws_live, "fixture", snapshot_fixture)
    script: list[Step] = [*opening, synced, gapped, release, *following]
    feed, server, rest = await live_feed("kucoin", "book", [script], sleep=no_wait)
    try:
        first = await quote_where(feed, lambda q: True)
        assert [as_tuple(q) for q in first] == [SYNCED_BOOK]
        synced.set()
        await until(lambda: feed.state[sym].errors >= 1 or feed.state[sym].quotes >= 2, 2.0)
        assert feed.state[sym].quotes == 1, "the book after the gap was taken as a quote"
        assert not feed.is_synced(sym)
        assert "sequence gap" in feed.state[sym].last_error
        release.set()
        again = await quote_where(feed, lambda q: True, timeout=3.0)
    finally:
        await shutdown(feed, server, rest)
    assert all(q.ask != 61688.95 for q in first + again)
    assert [as_tuple(q) for q in again] == [SYNCED_BOOK] and feed.resyncs == 1
    assert server.connections == 1 and snapshots == 2  # healed in place: no reconnect


async def test_a_gap_in_the_kucoin_deltas_replayed_on_the_snapshot_fails_that_sync() -> None:
    """The deltas ccxt caches while it fetches the REST snapshot are replayed on it without a
    look at their sequence: a message lost among them made the first book wrong. Now that
    sync fails (ccxt drops the connection) and the next connection syncs afresh; no quote is
    ever made from the gapped book."""
    sym = SYMBOL["kucoin"]
    stream = Stream("kucoin", "book")
    stream.connect()
    stream.seq = ws_live.KUCOIN_SEQ - 2
    # The opening deltas (see Stream.connect), with the one after the snapshot's own sequence
    # + 1 lost: ccxt replays from that one on, across the gap.
    gapped: list[Step] = [stream.kucoin_delta([["61688.9", f"0.{i + 1}"]], []) for i in range(4)]
    stream.seq += 1
    gapped += [stream.kucoin_delta([["61688.9", f"0.{i + 5}"]], []) for i in range(2)]
    scripts: list[list[Step]] = [gapped, stream.connect()]
    feed, server, rest = await live_feed("kucoin", "book", scripts, sleep=no_wait)
    try:
        first = await quote_where(feed, lambda q: True, timeout=3.0)
        errors, last_error = feed.state[sym].errors, feed.state[sym].last_error
    finally:
        await shutdown(feed, server, rest)
    assert [as_tuple(q) for q in first] == [SYNCED_BOOK]
    assert server.connections == 2, "the book was synced across the gap"
    assert errors == 1 and "sequence gap" in last_error


# ---------------------------------------------------------------------- download resume


def _flip_middle_byte(path: Path) -> None:
    """Damage a file in place, keeping its size (a bad disk block, a careless edit)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


async def test_a_month_file_damaged_in_place_is_downloaded_again_on_resume(
    tmp_path: Path,
) -> None:
    """A month file with one byte changed keeps its size, so the manifest's size check took it
    as whole; the resume then read it to merge the new bars and died in a traceback (a gzip
    error out of the download's task group). The manifest now keeps each file's SHA-256: a
    resume fetches a month whose bytes changed again, and ends with every bar on disk."""
    server = await dl.started()
    folder = tmp_path / "market" / "binance" / "BTC-USDT" / "1m"
    try:
        await dl.run(dl.downloader(server, tmp_path, until=dl.SINCE + 700 * dl.MIN))
        _flip_middle_byte(folder / "2022-01.csv.gz")
        server.asked.clear()
        (result,) = await dl.run(dl.downloader(server, tmp_path))
    finally:
        await server.stop()
    january = month_bounds("2022-01")[0]
    assert server.asked[0][0] == january  # that month from its start, December left alone
    dl.same_rows(dl.on_disk(tmp_path), dl.expected_rows())
    assert result.gaps == [dl.HOLE]


async def test_an_unreadable_month_file_is_one_line_exit_1_and_the_rest_is_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under a manifest written before the hashes (nothing to compare the bytes with), a month
    file that cannot be read stops the download with one line naming it and the fix, exit 1,
    no traceback; what is on disk stays."""
    from cockpit.cli import build_parser
    from cockpit.data_cli import run_data

    server = await dl.started()
    folder = tmp_path / "market" / "binance" / "BTC-USDT" / "1m"
    try:
        await dl.run(dl.downloader(server, tmp_path, until=dl.SINCE + 700 * dl.MIN))
        manifest = json.loads((folder / "manifest.json").read_text())
        for entry in manifest["files"].values():
            entry.pop("sha256", None)
        (folder / "manifest.json").write_text(json.dumps(manifest))
        _flip_middle_byte(folder / "2022-01.csv.gz")
        args = build_parser().parse_args(
            ["data", "download", "--exchange", "binance", "--symbol", "BTC/USDT", "--since",
             "2021-12-31T23:01", "--until", "2022-01-02", "--data-dir", str(tmp_path)]
        )  # fmt: skip
        ex = dl.pointed_exchange(server)
        code = await asyncio.to_thread(run_data, args, exchange=ex)
    finally:
        await server.stop()
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    first = err.splitlines()[0]
    assert first.startswith("data download: ") and "2022-01.csv.gz: cannot be read" in first
    assert "delete it and run the same command again" in first
    december = dl.read_month(folder / "2021-12.csv.gz")
    dl.same_rows(december, dl.expected_rows(end=month_bounds("2022-01")[0]))


# ---------------------------------------------------------------------- the loading cache


@pytest.mark.parametrize("edit", ["closes", "symbol"])
def test_a_cache_entry_rewritten_whole_is_never_served(tmp_path: Path, edit: str) -> None:
    """An entry rewritten with numpy (other closes, or another symbol in its meta: the zip's
    CRC-32s made anew, the meta's digest and row count kept) passed every check and a backtest
    ran on numbers the source file does not hold. The entry now carries the SHA-256 of its
    values and of what they are: such an entry is deleted and the file parsed again."""
    cache = MarketDataCache(tmp_path / "cache")
    parsed = load_market_data(BARS_CSV)
    load_market_data(BARS_CSV, cache=cache)
    (entry,) = (cache.root / "entries").glob("*.npz")
    with np.load(entry) as z:
        members = {name: z[name] for name in z.files}
    if edit == "closes":
        members["c3"] = members["c3"] * 2
    else:
        meta = json.loads(bytes(members["meta"]).decode())
        meta["symbol"] = "ETH/USDT"
        members["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with entry.open("wb") as fh:
        np.savez(fh, **members)
    again = MarketDataCache(cache.root)
    got = load_market_data(BARS_CSV, cache=again)
    assert again.rebuilt == 1 and again.hits == 0
    assert got.symbol == parsed.symbol and got.ts == parsed.ts and got.cols == parsed.cols
    third = MarketDataCache(cache.root)
    load_market_data(BARS_CSV, cache=third)
    assert third.hits == 1 and third.rebuilt == 0  # the entry written again is whole


# ---------------------------------------------------------------------- timestamp units


def _bars_csv(path: Path, stamps: list[str]) -> Path:
    rows = [f"{t},100,101,99,100.5,10" for t in stamps]
    path.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("timeframe", [None, 60])
def test_epoch_seconds_timestamps_are_named_not_sent_round_to_timeframe(
    tmp_path: Path, timeframe: int | None
) -> None:
    """Bars stamped in epoch seconds read as milliseconds of January 1970, 0.06 s apart; the
    refusal told the user to pass --timeframe, and with --timeframe 60 to leave it out: a
    circle. It now names the likely cause (epoch seconds) and the fix, with or without it."""
    base = 1_704_067_200  # 2024-01-01T00:00Z in epoch seconds
    path = _bars_csv(tmp_path / "seconds.csv", [str(base + 60 * i) for i in range(50)])
    out = _backtest(path, "--timeframe", str(timeframe)) if timeframe else _backtest(path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = out.stderr.splitlines()
    assert "epoch seconds (60 s bars)" in line and "epoch milliseconds" in line
    assert "--timeframe" not in line


def test_a_timestamp_in_nanoseconds_is_named_as_the_wrong_unit(tmp_path: Path) -> None:
    """A 19-digit timestamp was "cannot parse timestamp '1704067200000000000'", no more."""
    base = 1_704_067_200_000
    stamps = [str(base + 60_000 * i) for i in range(5)] + [str((base + 300_000) * 1_000_000)]
    out = _backtest(_bars_csv(tmp_path / "mixed.csv", stamps))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = out.stderr.splitlines()
    assert "row 7: cannot parse timestamp '1704067500000000000'" in line
    assert "past the year 2262: epoch microseconds or nanoseconds?" in line


def _backtest(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cockpit", "backtest", "--data", str(path), "--no-cache",
         "--strategy", "ema_cross", "--no-chart", *extra],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


# ---------------------------------------------------------------------- headers


@pytest.mark.parametrize("column", ["close", "timestamp"])
def test_a_column_named_twice_is_refused_not_picked(tmp_path: Path, column: str) -> None:
    """``timestamp,open,high,low,close,close,volume`` with two different closes was read
    without a word (the first close taken, the second ignored): which one holds the prices is
    not known, so the file is refused in one line naming the column."""
    names = ["timestamp", "open", "high", "low", "close", "volume"]
    at = names.index(column)
    header = [*names[: at + 1], column, *names[at + 1 :]]
    rows = []
    for i in range(50):
        values = [str(1_704_067_200_000 + 60_000 * i), "100", "101", "99", "100.5", "10"]
        doubled = "200.5" if column == "close" else str(1_704_067_200_000 + 120_000 * i)
        rows.append(",".join([*values[: at + 1], doubled, *values[at + 1 :]]))
    path = tmp_path / "doubled.csv"
    path.write_text(",".join(header) + "\n" + "\n".join(rows) + "\n")
    with pytest.raises(ReplayError, match=f"column.s. {column} appear more than once"):
        load_market_data(path)
    cache = MarketDataCache(tmp_path / "cache")
    with pytest.raises(ReplayError, match="appear more than once"):
        load_market_data(path, cache=cache)


@pytest.mark.parametrize("key", ["2022-13", "2022-01/../../elsewhere", "2022-1", "9999-12"])
def test_a_manifest_naming_a_file_the_store_never_writes_is_one_line(
    tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest edited by hand to list a month that is no month (2022-13, 9999-12: past
    what a date holds) crashed `cockpit data list` and `data download` with a ValueError
    traceback, and one naming a path (``2022-01/../..``) was taken as a missing file of this
    folder. Every file key must be one the store writes: else "unreadable manifest", exit 1."""
    folder = tmp_path / "market" / "binance" / "BTC-USDT" / "1m"
    folder.mkdir(parents=True)
    doc = {
        "layout": 1, "exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m",
        "timeframe_ms": 60_000, "kind": "bars", "covered": [[0, 60_000]],
        "files": {key: {"rows": 1, "first": 0, "last": 0, "bytes": 5, "runs": [[0, 60_000]]}},
    }  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(doc))
    from cockpit.cli import build_parser
    from cockpit.data_cli import run_data

    code = run_data(build_parser().parse_args(["data", "list", "--data-dir", str(tmp_path)]))
    err = capsys.readouterr().err
    assert code == 1
    (line,) = err.splitlines()
    assert line.startswith("data list: ") and "unreadable manifest" in line
    assert "move the folder aside" in line


@pytest.mark.parametrize("key", ["ohlcv", "symbol"])
def test_a_ccxt_json_object_with_a_key_twice_is_refused(tmp_path: Path, key: str) -> None:
    """``{"symbol": ..., "ohlcv": [...], "ohlcv": [...]}``: the streaming reader took the first
    array and skipped the second (Python's json keeps the last), and a second "symbol" replaced
    the first. Which one is the data is not known: the file is refused in one line."""
    rows = [[1_704_067_200_000 + 60_000 * i, 100, 101, 99, 100.5, 10] for i in range(20)]
    other = [[r[0], 200, 201, 199, 200.5, 10] for r in rows]
    if key == "ohlcv":
        text = (
            f'{{"symbol": "BTC/USDT", "ohlcv": {json.dumps(rows)}, "ohlcv": {json.dumps(other)}}}'
        )
    else:
        text = f'{{"symbol": "BTC/USDT", "symbol": "ETH/USDT", "ohlcv": {json.dumps(rows)}}}'
    path = tmp_path / "bars.json"
    path.write_text(text)
    with pytest.raises(ReplayError, match=f'"{key}" appears twice in the object'):
        load_market_data(path)


# ---------------------------------------------------------------------- untimed update ids


@pytest.mark.parametrize("update_id", ["²", "9" * 5000], ids=["superscript", "5000-digits"])
async def test_an_update_id_int_cannot_read_is_a_reject_not_the_end_of_the_feed(
    update_id: str,
) -> None:
    """binance's bookTicker carries no time, only its update id ``u``, which the feed reads to
    tell news from a replay. A ``u`` that str.isdigit() takes but int() refuses ("²", 5,000
    digits) raised out of the feed's task: the symbol got no quote again until a restart (and
    stayed "synced" on its last quote until it went stale). Now the id is not one, the quote
    is judged on the rest, and the feed goes on."""
    good = ws.quote_msg("binance", "bidask", "61690.01", "61690.02", "0.75", "1.25", seq=2)
    bad = ws.quote_msg("binance", "bidask", "61680.01", "61680.02", "0.5", "1", seq=1)
    bad["u"] = update_id
    later = ws.quote_msg("binance", "bidask", "61700.01", "61700.02", "0.5", "1", seq=3)
    feed, server, rest, _http = await ws.streaming_feed("binance", "bidask", [[good, bad, later]])
    try:
        got: list[Quote] = []

        async def take() -> None:
            async for q in feed.quotes():
                got.append(q)
                if q.bid == 61700.01:
                    return

        await asyncio.wait_for(take(), 3.0)
    finally:
        await ws.shutdown(feed, server, rest)
    assert got[0].bid == 61690.01 and got[-1].bid == 61700.01


def test_a_payload_stamped_infinity_is_recorded_not_raised_into_the_feed(tmp_path: Path) -> None:
    """The recorder is called on the feed's task with every payload before it is judged; a
    timestamp of inf (a float the venue's JSON can carry) made ``int(inf)`` raise out of
    ``offer`` and end that task. It is recorded with no exchange time, as its NaN would be."""
    from engine.marketdata.recording import MarketRecorder

    recorder = MarketRecorder(tmp_path / "record")
    recorder.start()
    try:
        payload = {"symbol": "BTC/USDT", "bid": 1.0, "ask": 1.1, "timestamp": float("inf")}
        recorder.offer("binance", "BTC/USDT", "ticker", 1_796_600_000_000_000_000, payload)
    finally:
        recorder.stop()
    assert recorder.dropped == 0 and recorder.writer.records >= 1


# ---------------------------------------------------------------------- the live replay source


def _replay_config(tmp_path: Path, path: Path, kind: str) -> Path:
    cfg = tmp_path / "replay.toml"
    cfg.write_text(
        f'[engine]\nmode = "paper"\ndata_dir = "{tmp_path / "data"}"\n\n'
        f'[market]\nsource = "replay"\n\n[market.replay]\nkind = "{kind}"\n'
        f'path = "{path}"\nsymbol = "BTC/USDT"\n\n'
        '[[strategies]]\nid = "ema_cross"\nkind = "ema_cross"\nsymbols = ["BTC/USDT"]\n'
        "timeframe_s = 60\n"
    )
    return cfg


def test_the_live_replay_source_takes_a_downloaded_folder_as_documented(tmp_path: Path) -> None:
    """docs/marketdata.md: the live replay source (kind = "bars") takes a month file or the
    folder of `cockpit data download`. The engine's start-up check said "no such file" of the
    folder, so neither `config check` nor an engine accepted it. Now a folder of bars is
    checked file by file; a folder for kind = "quotes" is named as such."""
    from engine.config import ConfigError, check_runnable, load_config

    folder = tmp_path / "market" / "binance" / "BTC-USDT" / "1m"
    folder.mkdir(parents=True)
    t0 = 1_704_067_200_000
    for month, start in (("2023-12", t0 - 120_000), ("2024-01", t0)):
        rows = [[start + 60_000 * i, 100.0, 101.0, 99.0, 100.5, 2.0] for i in range(2)]
        (folder / f"{month}.csv.gz").write_bytes(format_rows(rows, "BTC/USDT"))
    (folder / "manifest.json").write_text("{}")
    check_runnable(load_config(_replay_config(tmp_path, folder, "bars")))

    with pytest.raises(ConfigError) as err:
        check_runnable(load_config(_replay_config(tmp_path, folder, "quotes")))
    assert err.value.problems == [
        f'market.replay.path: {str(folder)!r} is a folder; kind = "quotes" reads one '
        'bookTicker CSV file (a folder of files is read for kind = "bars")'
    ]
    (folder / "2024-02.csv").write_text("timestamp,open,high\n1,2,3\n")  # a file that is no bars
    with pytest.raises(ConfigError, match=r"2024-02\.csv: row 1: missing column"):
        check_runnable(load_config(_replay_config(tmp_path, folder, "bars")))


# ---------------------------------------------------------------------- reconnect storms


async def test_a_venue_that_drops_every_connection_after_one_quote_is_redialled_ever_slower() -> (
    None
):
    """The backoff was reset by the first good quote after each reconnect, so a venue (or a
    proxy) that drops every connection right after its first message was redialled every
    0.25-0.5 s, for good: over binance's 300 connections per 5 minutes per IP, a ban. Now the
    backoff starts again only once the stream has stayed up a minute; flapping escalates."""
    scripts: list[list[Step]] = [
        [ws.quote_msg("binance", "bidask", "61685.99", "61686.00", "1.5", "2.5", n), "close"]
        for n in range(1, 7)
    ]
    recorder = ws.Recorder()
    feed, server, rest, _ = await ws.streaming_feed(
        "binance",
        "bidask",
        scripts,
        sleep=recorder,
        backoff=lambda: Backoff(0.5, 30.0, rng=random.Random(7)),
    )
    recorder.feed = feed
    try:
        feed.start()
        await until(lambda: len(recorder.calls) >= 5 and feed.state["BTC/USDT"].quotes >= 5, 5.0)
    finally:
        await ws.shutdown(feed, server, rest)
    delays = [c[0] for c in recorder.calls[:5]]
    for delay, ceiling in zip(delays, (0.5, 1.0, 2.0, 4.0, 8.0), strict=True):
        assert ceiling / 2 <= delay <= ceiling, delays


# ---------------------------------------------------------------------- bookTicker rows


@pytest.mark.parametrize("how", ["duplicated", "reordered"])
def test_a_bookticker_row_repeated_or_moved_is_refused_by_its_update_id(
    tmp_path: Path, how: str
) -> None:
    """Each quote is a fresh book to the paper fill model, so a bookTicker row written twice
    (a capture that replayed after a reconnect, two files joined) offered its size twice, and
    the backtest and the live replay source took it (the live feed refuses such a replay).
    The update ids only go up: a row that breaks that is named, for the backtest and the
    replay source alike."""
    from engine.marketdata.replay import QuoteReplay

    base = 1_704_067_200_000_000_000
    rows = [f"{base + 1_000_000 * i},{100 + i},61000.0,0.5,61000.1,0.7" for i in range(20)]
    if how == "duplicated":
        rows.insert(10, rows[9])
    else:
        rows[9], rows[10] = rows[10], rows[9]
    path = tmp_path / "quotes.csv"
    header = "local_ts_ns,update_id,bid_price,bid_qty,ask_price,ask_qty"
    path.write_text("\n".join([header, *rows]) + "\n")
    follows = "109 does not follow 109" if how == "duplicated" else "109 does not follow 110"
    with pytest.raises(ReplayError, match=f"row 12: update_id {follows}"):
        load_market_data(path)
    with pytest.raises(ReplayError, match="bookTicker update ids only go up"):
        QuoteReplay(path, "BTC/USDT")
