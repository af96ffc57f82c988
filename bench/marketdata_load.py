"""How long loading a 1M-bar CSV takes: parsed, and from the content-hash cache.

The CSV is the one ``bench/backtest_throughput.py`` runs on (its seeded synthetic 1-minute bars),
written once as ``timestamp,open,high,low,close,volume`` with epoch-ms timestamps. Timed, each
through ``load_market_data`` as ``cockpit backtest --data`` calls it:

* no cache (``--no-cache``): the CSV parse;
* cold cache: hash + parse + write the ``.npz`` entry;
* warm cache: the stat precheck vouches for the file (no hash), ``.npz`` read, lists built;
* warm cache after ``touch``: mtime and ctime moved, so the content is hashed again (same
  digest: the entry is used);
* changed content (one price edited): a new digest, a parse, a new entry.

Run: .venv/bin/python bench/marketdata_load.py [--bars N] [--csv PATH] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backtest_throughput import synthetic_bars
from engine.backtest import load_market_data
from engine.marketdata.cache import MarketDataCache


def write_csv(path: Path, n: int) -> None:
    data = synthetic_bars(n)
    with path.open("w") as fh:
        fh.write("timestamp,open,high,low,close,volume\n")
        o, h, lo, c, v = data.cols
        fh.writelines(
            f"{t // 1_000_000},{o[i]!r},{h[i]!r},{lo[i]!r},{c[i]!r},{v[i]!r}\n"
            for i, t in enumerate(data.ts)
        )


def timed(label: str, fn, repeat: int = 1) -> float:
    """Best of ``repeat`` calls. The result is kept until the clock has stopped: freeing six
    million Python numbers takes ~60 ms that a backtest, which keeps its data, never spends."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        kept = fn()
        best = min(best, time.perf_counter() - t0)
        del kept
    print(f"{label:44} {best:7.3f} s")
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--csv", type=Path, help="use (or write) this CSV instead of a temp file")
    ap.add_argument("--repeat", type=int, default=3, help="warm loads: best of N")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cockpit-bench-") as tmp:
        csv = args.csv or Path(tmp) / "bars_1m.csv"
        if not csv.exists():
            t0 = time.perf_counter()
            write_csv(csv, args.bars)
            print(f"wrote {csv} in {time.perf_counter() - t0:.1f} s (not timed)")
        size = csv.stat().st_size
        cache = MarketDataCache(Path(tmp) / "cache")
        first = load_market_data(csv)
        print(f"{len(first):,} bars, {size / 1e6:,.1f} MB CSV")
        timed("no cache (parse)", lambda: load_market_data(csv))
        timed("cold cache (hash + parse + write .npz)", lambda: load_market_data(csv, cache=cache))
        warm = timed(
            "warm cache (stat precheck, .npz read)",
            lambda: load_market_data(csv, cache=cache),
            args.repeat,
        )
        hashed_before = cache.hashed
        os.utime(csv)
        timed("warm cache after touch (re-hash, hit)", lambda: load_market_data(csv, cache=cache))
        print(f"  content hashes computed for the touch: {cache.hashed - hashed_before}")
        again = load_market_data(csv, cache=cache)
        assert again.ts == first.ts and again.cols == first.cols, "cache hit differs from parse"
        with csv.open("r+b") as fh:  # change one price digit in the last row
            fh.seek(-40, os.SEEK_END)
            byte = fh.read(1)
            fh.seek(-40, os.SEEK_END)
            fh.write(b"7" if byte != b"7" else b"3")
        timed("changed content (new digest, parse)", lambda: load_market_data(csv, cache=cache))
        files, bytes_ = cache.usage()
        print(
            f"cache: {files} files, {bytes_ / 1e6:,.1f} MB; hits {cache.hits}, "
            f"misses {cache.misses}, hashes {cache.hashed}"
        )
        print(f"warm load under 0.3 s: {'yes' if warm < 0.3 else 'NO'} ({warm:.3f} s)")
        print(f"load average (1 min) {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
