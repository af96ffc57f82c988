"""The whole `cockpit backtest` process on the peer workload's CSV: wall time and peak RSS.

Issue 17's end-to-end figures: the process a trader starts, from the interpreter's start to the
report printed, on a CSV of the peer workload (bench/backtest_throughput.py's seeded synthetic
1-minute bars, written once as ``timestamp,open,high,low,close,volume`` with epoch-ms stamps):
EMA(10)/EMA(30) long-only, 1 unit, 10 bps fee, fill at the close, no slippage, 1,000 warm-up
bars, the limits and breakers lifted (--no-limits --no-breakers: 1 unit of a 30,000 USDT coin on
1,000,000 USDT of cash would otherwise trip them within days). Each run is a child process timed
with its own rusage (``os.wait4``), three ways:

* cold: an empty parsed-data cache (read the CSV, fill the cache, run);
* no cache: ``--no-cache`` (read the CSV, run);
* cached: the second run on the same file (the entry read from disk a chunk at a time).

``--bars`` more than once prints a line per size, to see peak RSS against the data's length.

Run: .venv/bin/python bench/backtest_process.py [--bars 1000000 [--bars 3000000]] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.marketdata_load import write_csv

TARGET_COLD_S = 4.0
TARGET_CACHED_S = 2.0
TARGET_RSS_MB = 300.0

PEER = [
    "--strategy", "ema_cross", "--param", "fast=10", "--param", "slow=30", "--qty", "1",
    "--fee-bps", "10", "--fill", "close", "--slippage", "none", "--warmup", "1000",
    "--long-only", "--no-limits", "--no-breakers", "--cash", "1000000", "--no-chart",
]  # fmt: skip


def run(csv: Path, cache_dir: Path, *extra: str) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, the report's run line) of one `cockpit backtest`."""
    env = dict(os.environ, COCKPIT_CACHE_DIR=str(cache_dir))
    cmd = [sys.executable, "-m", "cockpit", "backtest", "--data", str(csv), *PEER, *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"cockpit backtest exited {proc.returncode}")
    line = next((x.strip() for x in out.splitlines() if x.strip().startswith("run ")), "")
    return wall, usage.ru_maxrss / 1024, line


def main() -> int:
    if sys.argv[1:2] == ["--write-csv"]:
        write_csv(Path(sys.argv[2]), int(sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, action="append", help="bars in the CSV (repeatable)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each kind: best wall time")
    ap.add_argument("--keep", type=Path, help="write (or reuse) the CSVs in this folder")
    args = ap.parse_args()
    sizes = args.bars or [1_000_000]
    with tempfile.TemporaryDirectory() as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        print(f"{'bars':>10} {'run':9} {'wall s':>7} {'peak RSS MB':>12}  report")
        for n in sizes:
            csv = where / f"peer-{n}.csv"
            if not csv.exists():
                # In a child of its own: a child's peak RSS (wait4) counts the memory of the
                # process it was forked from, so this one must stay small (it was 354 MB after
                # generating 1M bars, and every backtest read as at least that).
                subprocess.run(
                    [sys.executable, __file__, "--write-csv", str(csv), str(n)], check=True
                )
            kinds = {"cold": [], "no cache": [], "cached": []}
            for _ in range(args.repeat):
                cache = Path(tempfile.mkdtemp(dir=tmp))
                kinds["cold"].append(run(csv, cache))
                kinds["cached"].append(run(csv, cache))
                kinds["no cache"].append(run(csv, cache, "--no-cache"))
            for kind, runs in kinds.items():
                wall = min(r[0] for r in runs)
                rss = max(r[1] for r in runs)
                print(f"{n:>10,} {kind:9} {wall:7.2f} {rss:12.0f}  {runs[0][2]}")
    print(
        f"targets: cold <= {TARGET_COLD_S:g} s, cached <= {TARGET_CACHED_S:g} s, "
        f"peak RSS <= {TARGET_RSS_MB:g} MB at 1M bars and flat in the number of bars"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
