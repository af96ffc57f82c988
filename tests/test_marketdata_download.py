"""`cockpit data download` against a loopback Binance: ccxt's real binance class, real HTTP.

The server (``KlinesVenue``, on ``tests/test_venues_fakevenue.FakeVenue``) answers the recorded
``exchangeInfo`` body for markets and ``GET /api/v3/klines`` as Binance does (``startTime``,
``endTime`` inclusive, ``limit`` at most 1000, rows in the shape of the recorded
``fixtures/venues/binance/klines.json``), filled with the real BTC 1-minute bars shipped in
tests/data. It can be scripted per klines request: a 429 with Retry-After, a short page, a hang
(to interrupt a run mid-request), a 503; and it can leave a hole in the venue's history.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from engine.backtest import load_market_data
from engine.marketdata.download import Downloader, DownloadFailed, DownloadUsageError
from engine.marketdata.store import HEADER, SeriesStore, read_month
from engine.venues.exchanges import make_exchange
from tests.conftest import BARS_CSV
from tests.test_venues_fakevenue import FakeVenue
from tests.test_venues_support import fixture

REPO = Path(__file__).resolve().parent.parent
MIN = 60_000
SINCE = 1_640_991_660_000  # 2021-12-31T23:01Z: the first bar of the shipped file
UNTIL = SINCE + 1499 * MIN  # 2022-01-02T00:00Z: 1,499 bars over two UTC months
HOLE = (SINCE + 600 * MIN, SINCE + 630 * MIN)  # 30 minutes the venue has no bars for


def real_bars() -> dict[int, list[Any]]:
    """The shipped 1-minute bars as ccxt rows [ms, o, h, l, c, base volume]."""
    data = load_market_data(BARS_CSV)
    o, h, lo, c, v = data.cols
    return {
        t // 1_000_000: [t // 1_000_000, o[i], h[i], lo[i], c[i], round(v[i] / c[i], 8)]
        for i, t in enumerate(data.ts)
    }


BARS = real_bars()


KLINE = fixture("binance", "klines")[0]  # the recorded row: Binance's shape and types


def kline(row: list[Any]) -> list[Any]:
    """One row in Binance's klines shape (the recorded fixture's), from a ccxt row."""
    shape = KLINE
    t, o, h, lo, c, v = row
    return [
        t,
        f"{o:.8f}",
        f"{h:.8f}",
        f"{lo:.8f}",
        f"{c:.8f}",
        f"{v:.8f}",
        t + MIN - 1,
        f"{v * c:.8f}",
        shape[8],
        f"{v / 2:.8f}",
        f"{v * c / 2:.8f}",
        "0",
    ]


class KlinesVenue(FakeVenue):
    def __init__(self, hole: tuple[int, int] | None = HOLE) -> None:
        super().__init__("binance")
        self.bars = {t: r for t, r in BARS.items() if not (hole and hole[0] <= t < hole[1])}
        self.times = sorted(self.bars)
        self.klines: deque[str] = deque()  # scripted answers: 429, short, hang, 503
        self.asked: list[tuple[int, int | None, int]] = []  # (startTime, endTime, limit)
        self.asked_at: list[float] = []
        self.retry_after = 1
        self.delay_s = 0.0  # before each klines answer

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if not request.path.endswith("/api/v3/klines"):
            return await super()._dispatch(request)
        q = request.query
        start = int(q["startTime"])
        end = int(q["endTime"]) if "endTime" in q else None
        limit = min(int(q.get("limit", 500)), 1000)
        self.asked.append((start, end, limit))
        self.asked_at.append(time.monotonic())
        step = self.klines.popleft() if self.klines else "ok"
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if step == "429":
            return web.json_response(
                fixture("binance", "error_rate_limit"),
                status=429,
                headers={"Retry-After": str(self.retry_after)},
            )
        if step == "503":
            return web.Response(status=503, text="Service Unavailable")
        if step == "hang":
            self.received.set()
            await self._hang()
        first = bisect.bisect_left(self.times, start)
        rows = [
            kline(self.bars[t])
            for t in self.times[first : first + limit]
            if end is None or t <= end
        ]
        if step == "short":
            rows = rows[:7]
        return web.json_response(rows)


async def started(hole: tuple[int, int] | None = HOLE) -> KlinesVenue:
    server = KlinesVenue(hole)
    await server.start()
    return server


def pointed_exchange(server: FakeVenue) -> Any:
    ex = make_exchange("binance", sandbox=False, timeout_ms=2_000)
    server.point(ex)
    return ex


def downloader(server: FakeVenue, data_dir: Path, **kw: Any) -> Downloader:
    kw.setdefault("page_limit", 500)
    kw.setdefault("clock_ms", lambda: UNTIL + 3_600_000)
    return Downloader(
        "binance",
        kw.pop("symbols", ["BTC/USDT"]),
        "1m",
        kw.pop("since", SINCE),
        kw.pop("until", UNTIL),
        data_dir,
        exchange=pointed_exchange(server),
        **kw,
    )


async def run(dl: Downloader) -> list[Any]:
    try:
        return await dl.run()
    finally:
        await dl.close()


def on_disk(data_dir: Path) -> list[list[Any]]:
    folder = data_dir / "market" / "binance" / "BTC-USDT" / "1m"
    rows: list[list[Any]] = []
    for f in sorted(folder.glob("*.csv.gz")):
        rows.extend(read_month(f))
    return rows


def expected_rows(start: int = SINCE, end: int = UNTIL, hole: Any = HOLE) -> list[list[Any]]:
    return [
        BARS[t] for t in sorted(BARS) if start <= t < end and not (hole and hole[0] <= t < hole[1])
    ]


def same_rows(got: list[list[Any]], want: list[list[Any]]) -> None:
    """The bars on disk are exactly what the venue sent: same times (no gap, no duplicate, in
    order) and the very numbers of its 8-decimal strings."""
    assert [r[0] for r in got] == [r[0] for r in want]
    sent = [[w[0], *(float(f"{x:.8f}") for x in w[1:])] for w in want]
    assert got == sent


# ------------------------------------------------------------------ the happy path


async def test_pages_months_gap_report_list_and_backtest_folder(tmp_path: Path) -> None:
    server = await started()
    try:
        results = await run(downloader(server, tmp_path))
    finally:
        await server.stop()
    (r,) = results
    same_rows(on_disk(tmp_path), expected_rows())
    assert r.bars_new == r.bars_total == 1499 - 30
    assert r.gaps == [HOLE]  # the venue's hole, reported; nothing else
    folder = tmp_path / "market" / "binance" / "BTC-USDT" / "1m"
    assert sorted(p.name for p in folder.glob("*.csv.gz")) == ["2021-12.csv.gz", "2022-01.csv.gz"]
    with gzip.open(folder / "2021-12.csv.gz", "rt") as fh:
        assert fh.readline().strip() == ",".join(HEADER)
    # Pages of 500 from the cursor; Binance got `endTime` = the range's last ms every time.
    starts = [a for a, _e, _l in server.asked]
    assert starts[0] == SINCE and all(e == UNTIL - 1 for _a, e, _l in server.asked)
    assert len(server.asked) == 3  # 1,469 bars: 500 + 500 + 469 (the last reaches the end)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["covered"] == [[SINCE, UNTIL]]

    # The folder is a backtest input as it stands: base volume becomes quote volume.
    data = load_market_data(folder)
    assert len(data) == 1469 and data.symbol == "BTC/USDT" and data.timeframe_s == 60
    assert data.volume_unit == "base"
    first = BARS[SINCE]
    assert data.cols[4][0] == pytest.approx(first[5] * first[4])

    # `cockpit data list` shows it, gaps included.
    out = subprocess.run(
        [sys.executable, "-m", "cockpit", "data", "list", "--data-dir", str(tmp_path), "--gaps"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:7] == ["exchange", "symbol", "timeframe", "first", "last", "bars",
                                    "gaps"]  # fmt: skip
    row = lines[1].split()
    assert row[:6] == ["binance", "BTC/USDT", "1m", "2021-12-31T23:01Z", "2022-01-01T23:59Z",
                       "1,469"]  # fmt: skip
    assert "1 (30 bars)" in lines[1]
    assert lines[2] == "gap binance BTC/USDT 1m: 2022-01-01T09:01Z .. 2022-01-01T09:31Z"


async def test_second_run_is_up_to_date_and_asks_nothing(tmp_path: Path) -> None:
    server = await started()
    try:
        await run(downloader(server, tmp_path))
        asked = len(server.asked)
        (r,) = await run(downloader(server, tmp_path))
    finally:
        await server.stop()
    assert len(server.asked) == asked  # nothing re-requested, the venue's hole included
    assert r.up_to_date and r.bars_new == 0 and r.gaps == [HOLE]


async def test_a_later_until_fetches_only_the_new_tail(tmp_path: Path) -> None:
    server = await started()
    try:
        await run(downloader(server, tmp_path, until=SINCE + 700 * MIN))
        server.asked.clear()
        await run(downloader(server, tmp_path))
    finally:
        await server.stop()
    assert server.asked[0][0] == SINCE + 700 * MIN
    same_rows(on_disk(tmp_path), expected_rows())


async def test_several_symbols_at_once_share_the_rate_limit(tmp_path: Path) -> None:
    server = await started(hole=None)
    try:
        results = await run(downloader(server, tmp_path, symbols=["BTC/USDT", "ETH/USDT"]))
    finally:
        await server.stop()
    assert [r.symbol for r in results] == ["BTC/USDT", "ETH/USDT"]
    assert (tmp_path / "market" / "binance" / "ETH-USDT" / "1m" / "2022-01.csv.gz").exists()
    assert all(r.bars_total == 1499 and not r.gaps for r in results)


# ------------------------------------------------------------------ the venue pushing back


async def test_429_retry_after_is_waited_out(tmp_path: Path) -> None:
    server = await started()
    server.klines.extend(["ok", "429"])
    server.retry_after = 1
    try:
        dl = downloader(server, tmp_path)
        await run(dl)
    finally:
        await server.stop()
    assert dl.stats.rate_limited == 1
    assert dl.stats.waits_s == [1.0]  # the venue's Retry-After, not a guess
    # The refused request was asked again, no sooner than the venue said.
    assert server.asked[1][0] == server.asked[2][0]
    assert server.asked_at[2] - server.asked_at[1] >= 0.95
    same_rows(on_disk(tmp_path), expected_rows())


async def test_a_short_page_is_followed_not_taken_as_the_end(tmp_path: Path) -> None:
    server = await started()
    server.klines.extend(["short"])  # the first page has 7 bars, not 500
    try:
        (r,) = await run(downloader(server, tmp_path))
    finally:
        await server.stop()
    assert server.asked[1][0] == SINCE + 7 * MIN  # right after the short page's last bar
    assert r.gaps == [HOLE]
    same_rows(on_disk(tmp_path), expected_rows())


async def test_venue_failing_mid_run_keeps_what_was_saved(tmp_path: Path) -> None:
    server = await started()
    server.klines.extend(["ok", "503", "503", "503"])
    try:
        dl = downloader(server, tmp_path, max_attempts=3)
        dl.sleep = _no_sleep
        with pytest.raises(DownloadFailed, match="failed 3 times"):
            await run(dl)
    finally:
        await server.stop()
    kept = on_disk(tmp_path)
    same_rows(kept, expected_rows()[:500])  # the first page, whole and on disk
    store = SeriesStore(tmp_path, "binance", "BTC/USDT", "1m", MIN)
    assert store.covered == [(SINCE, SINCE + 500 * MIN)]  # no claim beyond what is saved


async def _no_sleep(_s: float) -> None:
    await asyncio.sleep(0)


# ------------------------------------------------------------------ interrupted, resumed


async def test_interrupted_mid_request_then_resumed_no_gap_no_duplicate(tmp_path: Path) -> None:
    server = await started()
    server.klines.extend(["ok", "ok", "hang"])  # the third request never answers
    server.hang_s = 30
    try:
        dl = downloader(server, tmp_path)
        task = asyncio.create_task(run(dl))
        await asyncio.wait_for(server.received.wait(), 20)
        task.cancel()  # what Ctrl-C does to asyncio.run's main task
        with pytest.raises(asyncio.CancelledError):
            await task
        first_run = on_disk(tmp_path)
        same_rows(first_run, expected_rows()[:1000])  # two whole pages flushed on the way out
        server.asked.clear()
        (r,) = await run(downloader(server, tmp_path))
    finally:
        await server.stop()
    # Resumed right after the last bar the first run saved (its pages held the hole).
    assert server.asked[0][0] == expected_rows()[999][0] + MIN
    same_rows(on_disk(tmp_path), expected_rows())
    assert r.gaps == [HOLE]


CHILD = """
import asyncio, sys
sys.path.insert(0, {repo!r})
from tests.test_marketdata_download import started, downloader, run
async def main():
    server = await started()
    server.delay_s = 0.15
    await run(downloader(server, __import__("pathlib").Path({data!r}), page_limit=60,
                         flush_every_s=0.0))
asyncio.run(main())
"""


@pytest.mark.parametrize("after_pages", [2, 5])
async def test_kill_9_mid_run_leaves_whole_files_and_resumes(
    tmp_path: Path, after_pages: int
) -> None:
    """A real kill -9 of a downloading process (flushing after every page, so it is writing
    files most of the time): every file left is whole, and a second run completes the range
    with no gap and no duplicate."""
    code = CHILD.format(repo=str(REPO), data=str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    folder = tmp_path / "market" / "binance" / "BTC-USDT" / "1m"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                covered = json.loads((folder / "manifest.json").read_text())["covered"]
                if covered and covered[0][1] >= SINCE + after_pages * 60 * MIN:
                    break
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the child never got that far")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    for f in folder.glob("*.csv.gz"):
        read_month(f)  # whole gzip, whole rows: raises otherwise
    partial = on_disk(tmp_path)
    assert [r[0] for r in partial] == [r[0] for r in expected_rows()[: len(partial)]]
    server = await started()
    try:
        (r,) = await run(downloader(server, tmp_path))
    finally:
        await server.stop()
    same_rows(on_disk(tmp_path), expected_rows())
    assert r.gaps == [HOLE]


# ------------------------------------------------------------------ bad requests


async def test_a_symbol_the_venue_lacks_is_a_usage_error_nothing_written(tmp_path: Path) -> None:
    server = await started()
    try:
        dl = downloader(server, tmp_path, symbols=["BTC/USDT", "BTC/USDX"])
        with pytest.raises(DownloadUsageError, match=r"no market 'BTC/USDX'.*BTC/USDT"):
            await run(dl)
    finally:
        await server.stop()
    assert not (tmp_path / "market").exists()
    assert not server.asked


def test_cli_usage_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "cockpit", "data", "download", "--data-dir", str(tmp_path)]
    cases = {
        "unknown exchange": ["--exchange", "nosuchvenue", "--symbol", "BTC/USDT", "--since",
                             "2024-01-01"],
        "bad date": ["--exchange", "binance", "--symbol", "BTC/USDT", "--since", "2024-02-30"],
        "since after until": ["--exchange", "binance", "--symbol", "BTC/USDT", "--since",
                              "2024-02-01", "--until", "2024-01-01"],
        "since equals until": ["--exchange", "binance", "--symbol", "BTC/USDT", "--since",
                               "2024-01-01", "--until", "2024-01-01"],
    }  # fmt: skip
    for what, argv in cases.items():
        out = subprocess.run(base + argv, capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 2, what
        assert len(out.stderr.strip().splitlines()) == 1, (what, out.stderr)
        assert "Traceback" not in out.stderr and not out.stdout
    assert not (tmp_path / "market").exists()


async def test_cli_venue_error_exit_1_one_line_saved_kept(tmp_path: Path, capsys: Any) -> None:
    from cockpit.cli import build_parser
    from cockpit.data_cli import run_data

    server = await started()
    server.klines.extend(["ok", *["503"] * 10])
    args = build_parser().parse_args(
        ["data", "download", "--exchange", "binance", "--symbol", "BTC/USDT", "--since",
         "2021-12-31T23:01", "--until", "2022-01-02", "--data-dir", str(tmp_path),
         "--retries", "1"]
    )  # fmt: skip
    ex = pointed_exchange(server)
    ex.features = {"spot": {"fetchOHLCV": {"limit": 500}}}
    try:
        code = await asyncio.to_thread(run_data, args, exchange=ex)
    finally:
        await server.stop()
    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines()[0].startswith("data download: binance BTC/USDT 1m from ")
    assert "Traceback" not in err and "kept BTC/USDT: 500 bars" in err
    assert len(on_disk(tmp_path)) == 500


async def test_a_data_dir_that_is_a_file_is_refused_before_the_venue_is_asked(
    tmp_path: Path, capsys: Any
) -> None:
    """`--data-dir FILE` failed only once the bars had been fetched (and then kept nothing):
    now one usage line, exit 2, and not one request to the venue."""
    from cockpit.cli import build_parser
    from cockpit.data_cli import run_data

    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("x")
    server = await started()
    args = build_parser().parse_args(
        ["data", "download", "--exchange", "binance", "--symbol", "BTC/USDT", "--since",
         "2021-12-31T23:01", "--until", "2022-01-02", "--data-dir", str(not_a_dir)]
    )  # fmt: skip
    ex = pointed_exchange(server)
    try:
        code = await asyncio.to_thread(run_data, args, exchange=ex)
    finally:
        await server.stop()
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not a directory" in err
    assert server.asked == []


# ------------------------------------------------------------------ progress


def test_progress_line_only_on_a_terminal() -> None:
    from cockpit.data_cli import _ProgressLine

    class Stream(io.StringIO):
        def __init__(self, tty: bool) -> None:
            super().__init__()
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    class Dl:
        exchange_id, timeframe, symbols = "binance", "1m", ["BTC/USDT"]
        expected, done = 525_600, 131_400

        class stats:
            rate_limited = 2

        def rate(self) -> float:
            return 1000.0

        def eta_s(self) -> float:
            return 394.2

    quiet, tty = Stream(False), Stream(True)
    _ProgressLine(quiet)(Dl(), force=True)
    _ProgressLine(tty)(Dl(), force=True)
    assert quiet.getvalue() == ""
    line = tty.getvalue()
    assert line.startswith("\rbinance 1m x1: 131,400/525,600 bars (25.0%)")
    assert "1,000 bars/s" in line and "ETA 6m34s" in line and "rate-limited 2x" in line


async def test_a_second_download_of_the_same_series_is_refused(tmp_path: Path) -> None:
    from engine.marketdata.store import SeriesBusy

    server = await started()
    server.klines.extend(["hang"])
    server.hang_s = 30
    try:
        first = asyncio.create_task(run(downloader(server, tmp_path)))
        await asyncio.wait_for(server.received.wait(), 20)
        with pytest.raises(SeriesBusy, match="another download is writing"):
            await run(downloader(server, tmp_path))
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        (r,) = await run(downloader(server, tmp_path))  # the lock went with the first run
    finally:
        await server.stop()
    assert r.bars_total == 1469


async def test_nothing_closed_to_download_is_a_usage_error(tmp_path: Path) -> None:
    server = await started()
    try:
        dl = downloader(server, tmp_path, since=UNTIL + 3_600_000 - 5_000, until=None)
        with pytest.raises(DownloadUsageError, match="leaves nothing closed to download"):
            await run(dl)
    finally:
        await server.stop()
    assert not (tmp_path / "market").exists()


SIGINT_CHILD = """
import asyncio, sys, threading
sys.path.insert(0, {repo!r})
import engine.marketdata.download as download
from tests.test_marketdata_download import started, pointed_exchange

ready = threading.Event()
box = {{}}

def serve():
    loop = asyncio.new_event_loop()
    async def up():
        box["server"] = server = await started()
        server.delay_s = 0.2
        ready.set()
    loop.run_until_complete(up())
    loop.run_forever()

threading.Thread(target=serve, daemon=True).start()
ready.wait(30)
download.make_exchange = lambda *a, **k: pointed_exchange(box["server"])
from cockpit.cli import main
sys.exit(main(["data", "download", "--exchange", "binance", "--symbol", "BTC/USDT",
               "--since", "2021-12-31T23:01", "--until", "2022-01-20",
               "--data-dir", {data!r}]))
"""


def test_ctrl_c_through_the_cli_saves_what_it_has_and_resumes(tmp_path: Path) -> None:
    """A real SIGINT to `cockpit data download`: exit 1, one line, the pages fetched so far
    on disk and whole; the same command again completes with no gap and no duplicate."""
    code = SIGINT_CHILD.format(repo=str(REPO), data=str(tmp_path))
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    folder = tmp_path / "market" / "binance" / "BTC-USDT" / "1m"
    try:
        deadline = time.monotonic() + 60
        while not (folder / ".lock").exists():  # the run holds its folder: pages are coming
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()
            time.sleep(0.02)
        time.sleep(0.5)  # a page or two at the venue's 0.2 s a page
        child.send_signal(signal.SIGINT)
        _out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 1, err
    assert "Traceback" not in err
    assert err.splitlines()[0] == "data download: interrupted"
    assert "run the same command again to continue" in err
    kept = on_disk(tmp_path)
    assert [r[0] for r in kept] == [r[0] for r in expected_rows()[: len(kept)]]

    async def resume() -> Any:
        server = await started()
        try:
            dl = downloader(
                server, tmp_path, page_limit=1000, until=until, clock_ms=lambda: until + MIN * 60
            )
            return await run(dl)
        finally:
            await server.stop()

    until = 1_642_636_800_000  # 2022-01-20T00:00Z: 26 pages of 1,000 at 0.2 s, never done first
    assert len(kept) < len(expected_rows(end=until))
    (r,) = asyncio.run(resume())
    same_rows(on_disk(tmp_path), expected_rows(end=until))
    assert r.gaps == [HOLE]


async def test_a_month_file_deleted_by_hand_is_fetched_again(tmp_path: Path) -> None:
    server = await started()
    folder = tmp_path / "market" / "binance" / "BTC-USDT" / "1m"
    try:
        await run(downloader(server, tmp_path))
        (folder / "2021-12.csv.gz").unlink()
        listed = subprocess.run(
            [sys.executable, "-m", "cockpit", "data", "list", "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert listed.returncode == 0
        assert "2021-12.csv.gz missing" in listed.stderr
        assert "2022-01-01T00:00Z" in listed.stdout  # the first bar left on disk
        server.asked.clear()
        (r,) = await run(downloader(server, tmp_path))
    finally:
        await server.stop()
    assert [a for a, _e, _l in server.asked] == [SINCE]  # that month only: 59 bars, one page
    same_rows(on_disk(tmp_path), expected_rows())
    assert r.gaps == [HOLE]


@pytest.mark.parametrize(
    ("timeframe", "ok"), [("1s", False), ("1m", True), ("1d", True), ("3d", False), ("7m", False)]
)
def test_timeframes_from_a_minute_to_a_day(timeframe: str, ok: bool) -> None:
    from engine.marketdata.download import timeframe_ms

    ex = make_exchange("binance", sandbox=False)
    try:
        if ok:
            assert timeframe_ms(ex, timeframe) == ex.parse_timeframe(timeframe) * 1000
        else:
            with pytest.raises(DownloadUsageError, match=timeframe):
                timeframe_ms(ex, timeframe)
    finally:
        asyncio.run(ex.close())
