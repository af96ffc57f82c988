"""The parsed-data cache (engine/marketdata/cache.py) and folder loading of backtest data.

A hit must be the very data a parse gives; a changed file must never be served from the cache
(whatever its stat says); a damaged entry is rebuilt, never trusted; two processes may fill it
at once; it can be cleared and bypassed from the CLI.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.backtest import BacktestError, MarketData, load_market_data
from engine.marketdata.cache import RACY_S, MarketDataCache
from engine.marketdata.replay import ReplayError
from engine.marketdata.store import HEADER
from tests.conftest import BARS_CSV, BOOKTICKER_CSV

REPO = Path(__file__).resolve().parent.parent


def same(a: MarketData, b: MarketData) -> None:
    assert (a.kind, a.fmt, a.symbol, a.timeframe_s, a.volume_unit) == (
        b.kind,
        b.fmt,
        b.symbol,
        b.timeframe_s,
        b.volume_unit,
    )
    assert a.ts == b.ts
    assert a.cols == b.cols  # bit for bit: floats compared exactly
    assert all(type(x) is int for x in a.ts[:3]) and all(type(x) is float for x in a.cols[0][:3])


def aged(path: Path, seconds: float = 3 * RACY_S) -> None:
    """Set the file's mtime into the past, as for a file written a while ago (ctime moves to
    now, so wait out the racy window after this where a test needs the stat trusted)."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def copy_old(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    aged(dst)
    return dst


@pytest.fixture
def cache(tmp_path: Path) -> MarketDataCache:
    return MarketDataCache(tmp_path / "cache")


@pytest.mark.parametrize("which", ["bars", "quotes", "json", "base-volume csv.gz"])
def test_a_hit_is_exactly_the_parse(tmp_path: Path, cache: MarketDataCache, which: str) -> None:
    if which == "bars":
        path = BARS_CSV
        kw: dict[str, str] = {}
    elif which == "quotes":
        path = BOOKTICKER_CSV
        kw = {}
    elif which == "json":
        path = tmp_path / "bars.json"
        path.write_text('{"symbol": "ETH/USDT", "ohlcv": [[1704067200000, 1, 2, 0.5, 1.5, 3], '
                        "[1704067260000, 1.5, 2.5, 1, 2, 4]]}")  # fmt: skip
        kw = {}
    else:
        path = tmp_path / "2024-01.csv.gz"
        with gzip.open(path, "wt") as fh:
            fh.write(",".join(HEADER) + "\n")
            fh.write("1704067200000,42283.58,42298.62,42261.02,42298.61,35.92724,BTC/USDT\n")
            fh.write("1704067260000,42298.62,42320.0,42298.61,42320.0,21.3,BTC/USDT\n")
        kw = {}
    parsed = load_market_data(path, **kw)
    first = load_market_data(path, cache=cache, **kw)  # a miss: parses and stores
    second = load_market_data(path, cache=cache, **kw)  # a hit
    assert (cache.misses, cache.hits) == (1, 1)
    same(first, parsed)
    same(second, parsed)
    assert second.path == str(path)
    if which == "base-volume csv.gz":
        assert second.volume_unit == "base"
        assert second.cols[4][0] == 35.92724 * 42298.61


def test_options_apply_after_the_cache(cache: MarketDataCache) -> None:
    """The cache holds the file's columns as parsed: a different --volume-unit or --timeframe
    on a hit gives what a parse with those options gives."""
    load_market_data(BARS_CSV, cache=cache)
    hit = load_market_data(BARS_CSV, cache=cache, volume_unit="base", timeframe_s=60)
    same(hit, load_market_data(BARS_CSV, volume_unit="base", timeframe_s=60))
    # A bar length the bars do not have is refused on a hit as on a parse.
    with pytest.raises(BacktestError, match="are 60 s apart") as on_hit:
        load_market_data(BARS_CSV, cache=cache, timeframe_s=120)
    with pytest.raises(BacktestError) as on_parse:
        load_market_data(BARS_CSV, timeframe_s=120)
    assert str(on_hit.value) == str(on_parse.value)


def test_the_row_limit_holds_on_a_hit(cache: MarketDataCache) -> None:
    n = len(load_market_data(BARS_CSV, cache=cache))
    assert len(load_market_data(BARS_CSV, cache=cache, max_rows=n)) == n  # just at the limit
    with pytest.raises(ReplayError, match=f"more than {n - 1:,} data rows"):
        load_market_data(BARS_CSV, cache=cache, max_rows=n - 1)  # one over


def test_an_unchanged_settled_file_is_not_hashed_again(tmp_path: Path) -> None:
    cache = MarketDataCache(tmp_path / "cache", racy_s=0.05)
    path = copy_old(BARS_CSV, tmp_path / "bars.csv")
    time.sleep(0.2)  # past the racy window after the copy's ctime
    load_market_data(path, cache=cache)
    assert cache.hashed == 1
    load_market_data(path, cache=cache)
    load_market_data(path, cache=cache)
    assert cache.hashed == 1 and cache.hits == 2  # (dev, inode, size, mtime, ctime) vouched
    os.utime(path)  # touched: ctime and mtime move, the content is hashed again (and hits)
    load_market_data(path, cache=cache)
    assert cache.hashed == 2 and cache.hits == 3


def test_a_file_written_just_now_is_hashed_each_time(tmp_path: Path) -> None:
    cache = MarketDataCache(tmp_path / "cache", racy_s=600)
    path = tmp_path / "bars.csv"
    shutil.copyfile(BARS_CSV, path)
    load_market_data(path, cache=cache)
    load_market_data(path, cache=cache)
    load_market_data(path, cache=cache)
    assert cache.hashed == 3  # racy: its stat is never trusted alone


def test_same_size_edit_with_mtime_put_back_is_detected(tmp_path: Path) -> None:
    """An edit that keeps the size and restores the mtime (touch -r) of a file whose stat the
    cache trusts: ctime still moves, so the content is hashed again and the new one parsed."""
    cache = MarketDataCache(tmp_path / "cache", racy_s=0.05)
    path = copy_old(BARS_CSV, tmp_path / "bars.csv")
    time.sleep(0.2)
    before = load_market_data(path, cache=cache)
    load_market_data(path, cache=cache)
    assert cache.hashed == 1  # trusted on stat
    st = path.stat()
    raw = bytearray(path.read_bytes())
    at = raw.index(b"46377.0", 60)
    raw[at : at + 7] = b"46378.0"  # the first bar's close, same length
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
    after = load_market_data(path, cache=cache)
    assert cache.hashed == 2
    assert after.cols[3][0] == 46378.0 != before.cols[3][0]
    same(after, load_market_data(path))


def test_a_changed_file_is_parsed_again(tmp_path: Path, cache: MarketDataCache) -> None:
    path = copy_old(BARS_CSV, tmp_path / "bars.csv")
    load_market_data(path, cache=cache)
    with path.open("a") as fh:
        fh.write("2022-02-01 12:00:00,1,2,0.5,1.5,10\n")
    got = load_market_data(path, cache=cache)
    assert got.ts[-1] == load_market_data(path).ts[-1] and cache.misses == 2


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_a_damaged_entry_is_rebuilt_never_trusted(
    tmp_path: Path, cache: MarketDataCache, damage: str
) -> None:
    parsed = load_market_data(BARS_CSV)
    load_market_data(BARS_CSV, cache=cache)
    (entry,) = (cache.root / "entries").glob("*.npz")
    raw = bytearray(entry.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        raw[len(raw) * 2 // 3] ^= 0x04  # inside a column's bytes: zip's CRC-32 catches it
    elif damage == "empty":
        raw = bytearray()
    else:
        raw = bytearray(b"not a zip file at all" * 100)
    entry.write_bytes(bytes(raw))
    got = load_market_data(BARS_CSV, cache=cache)
    assert cache.rebuilt == 1
    same(got, parsed)
    again = MarketDataCache(cache.root)
    same(load_market_data(BARS_CSV, cache=again), parsed)
    assert again.hits == 1 and again.rebuilt == 0  # the rebuilt entry is whole


def test_an_entry_for_other_content_is_refused(tmp_path: Path, cache: MarketDataCache) -> None:
    """An entry whose recorded source digest is not its name's (a copied file) is not used."""
    other = tmp_path / "other.csv"
    other.write_text(
        "timestamp,open,high,low,close,volume\n"
        "1704067200000,1,2,0.5,1.5,3\n1704067260000,1,2,0.5,1.5,3\n"
    )
    load_market_data(other, cache=cache)
    load_market_data(BARS_CSV, cache=cache)
    entries = sorted((cache.root / "entries").glob("*.npz"), key=lambda p: p.stat().st_size)
    small, big = entries
    shutil.copyfile(small, big)  # the big file's entry now holds the small file's data
    got = load_market_data(BARS_CSV, cache=cache)
    assert cache.rebuilt == 1 and len(got) == len(load_market_data(BARS_CSV))


def test_two_processes_fill_the_cache_at_once(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from engine.backtest import load_market_data;"
        "from engine.marketdata.cache import MarketDataCache;"
        "d = load_market_data(sys.argv[2], cache=MarketDataCache(sys.argv[3]));"
        "print(len(d), sum(d.cols[3]))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(REPO), str(BARS_CSV), str(root)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    parsed = load_market_data(BARS_CSV)
    assert set(outs) == {f"{len(parsed)} {sum(parsed.cols[3])}\n"}
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]  # no leftovers
    check = MarketDataCache(root)
    same(load_market_data(BARS_CSV, cache=check), parsed)
    assert check.hits == 1


def test_a_read_only_cache_only_costs_speed(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    root.chmod(0o500)
    try:
        cache = MarketDataCache(root)
        same(load_market_data(BARS_CSV, cache=cache), load_market_data(BARS_CSV))
    finally:
        root.chmod(0o700)
    if os.geteuid() != 0:  # root writes through the permission bits
        assert cache.write_errors >= 1


def test_least_recently_used_entries_go_when_over_the_cap(tmp_path: Path) -> None:
    files = []
    for i in range(3):
        f = tmp_path / f"bars{i}.csv"
        f.write_text(
            "timestamp,open,high,low,close,volume\n"
            + "".join(f"{1704067200000 + k * 60000},{i + 1},2,0.5,1.5,3\n" for k in range(500))
        )
        files.append(f)
    probe = MarketDataCache(tmp_path / "probe")
    load_market_data(files[0], cache=probe)
    (one,) = (probe.root / "entries").glob("*.npz")
    size = one.stat().st_size
    cache = MarketDataCache(tmp_path / "cache", max_bytes=2 * size)  # room for two
    load_market_data(files[0], cache=cache)
    load_market_data(files[1], cache=cache)
    time.sleep(0.05)  # past the file system's time stamp tick
    load_market_data(files[0], cache=cache)  # a hit: files[0] is now the most recent
    load_market_data(files[2], cache=cache)  # over the cap: files[1]'s entry goes
    assert cache.evicted == 1
    assert len(list((cache.root / "entries").glob("*.npz"))) == 2
    hits = cache.hits
    load_market_data(files[0], cache=cache)
    load_market_data(files[2], cache=cache)
    assert cache.hits == hits + 2
    load_market_data(files[1], cache=cache)
    assert cache.hits == hits + 2  # it was the one evicted: parsed again


def test_an_entry_larger_than_the_cap_is_still_kept(tmp_path: Path) -> None:
    cache = MarketDataCache(tmp_path / "cache", max_bytes=1)
    load_market_data(BARS_CSV, cache=cache)
    load_market_data(BARS_CSV, cache=cache)
    assert cache.hits == 1 and cache.evicted == 0


# ------------------------------------------------------------------ folders


def write_month(path: Path, rows: list[tuple[int, float]], symbol: str = "BTC/USDT") -> None:
    with gzip.open(path, "wt") as fh:
        fh.write(",".join(HEADER) + "\n")
        for t, px in rows:
            fh.write(f"{t},{px},{px + 1},{px - 1},{px},2.0,{symbol}\n")


def test_a_folder_is_its_files_in_name_order(tmp_path: Path, cache: MarketDataCache) -> None:
    t0 = 1_704_067_200_000 - 120_000  # 2023-12-31T23:58Z
    write_month(tmp_path / "2023-12.csv.gz", [(t0, 100.0), (t0 + 60_000, 101.0)])
    write_month(tmp_path / "2024-01.csv.gz", [(t0 + 120_000, 102.0), (t0 + 180_000, 103.0)])
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / ".2024-02.csv.gz.123.tmp").write_text("half a file")
    for c in (None, cache, cache):
        data = load_market_data(tmp_path, cache=c)
        assert data.ts == [(t0 + i * 60_000) * 1_000_000 for i in range(4)]
        assert data.cols[3] == [100.0, 101.0, 102.0, 103.0]
        assert data.symbol == "BTC/USDT" and data.timeframe_s == 60
        assert data.cols[4] == [2.0 * c_ for c_ in data.cols[3]]  # base volume x close
    assert cache.hits == 2


def test_the_live_replay_source_reads_the_same_folder(tmp_path: Path) -> None:
    from engine.marketdata.replay import BarReplay

    t0 = 1_704_067_200_000 - 120_000
    write_month(tmp_path / "2023-12.csv.gz", [(t0, 100.0), (t0 + 60_000, 101.0)])
    write_month(tmp_path / "2024-01.csv.gz", [(t0 + 120_000, 102.0)])
    (tmp_path / "manifest.json").write_text("{}")
    bars = list(BarReplay(tmp_path, "BTC/USDT").events())
    data = load_market_data(tmp_path)
    assert [b.ts_open for b in bars] == data.ts
    assert [b.close for b in bars] == data.cols[3]
    assert [b.volume for b in bars] == data.cols[4]  # base volume x close, as the backtest
    one = list(BarReplay(tmp_path / "2024-01.csv.gz", "BTC/USDT").events())
    assert one[0].volume == 2.0 * 102.0


def test_a_folder_of_two_symbols_is_refused(tmp_path: Path) -> None:
    write_month(tmp_path / "a.csv.gz", [(1_704_067_200_000, 1.0)])
    write_month(tmp_path / "b.csv.gz", [(1_704_067_260_000, 1.0)], symbol="ETH/USDT")
    with pytest.raises(ReplayError, match="symbol 'ETH/USDT' differs from 'BTC/USDT'"):
        load_market_data(tmp_path)


def test_an_empty_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="no data files"):
        load_market_data(tmp_path)


def test_base_volume_file_refuses_quote_unit(tmp_path: Path) -> None:
    from engine.backtest import BacktestError

    write_month(tmp_path / "m.csv.gz", [(1_704_067_200_000, 1.0), (1_704_067_260_000, 1.0)])
    with pytest.raises(BacktestError, match="base_volume"):
        load_market_data(tmp_path / "m.csv.gz", volume_unit="quote")


# ------------------------------------------------------------------ the CLI


def run_cli(*argv: str, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COCKPIT_CACHE_DIR": str(cache_dir)}
    return subprocess.run(
        [sys.executable, "-m", "cockpit", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_backtest_fills_the_cache_no_cache_does_not_and_clear_empties_it(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    argv = ("backtest", "--data", str(BARS_CSV), "--strategy", "ema_cross", "--qty", "0.1",
            "--warmup", "100", "--no-breakers", "--json", "--end", "2022-01-03")  # fmt: skip
    plain = run_cli(*argv, "--no-cache", cache_dir=cache_dir)
    assert plain.returncode == 0, plain.stderr
    assert not cache_dir.exists()
    cold = run_cli(*argv, cache_dir=cache_dir)
    warm = run_cli(*argv, cache_dir=cache_dir)
    assert cold.returncode == warm.returncode == 0
    assert len(list((cache_dir / "entries").glob("*.npz"))) == 1

    def metrics(out: str) -> str:
        import json

        doc = json.loads(out)
        doc.pop("elapsed_s", None)
        return json.dumps(doc["metrics"], sort_keys=True)

    assert metrics(plain.stdout) == metrics(cold.stdout) == metrics(warm.stdout)
    info = run_cli("data", "cache", "info", cache_dir=cache_dir)
    assert info.returncode == 0 and "2 cached file(s)" in info.stdout
    cleared = run_cli("data", "cache", "clear", cache_dir=cache_dir)
    assert cleared.returncode == 0 and cleared.stdout.startswith("cleared 2 cached file(s)")
    assert not [p for p in cache_dir.rglob("*") if p.is_file()]


def test_the_cache_never_stores_a_python_object(cache: MarketDataCache) -> None:
    load_market_data(BARS_CSV, cache=cache)
    (entry,) = (cache.root / "entries").glob("*.npz")
    with np.load(entry, allow_pickle=False) as z:  # would raise on an object array
        assert {z[k].dtype.kind for k in z.files} <= {"i", "f", "u"}
