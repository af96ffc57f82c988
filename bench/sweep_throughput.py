"""Throughput of a parameter sweep: serial against a 2-worker Dask LocalCluster.

The peer workload of bench/backtest_throughput.py (its synthetic bars and options: EMA
crossover, long-only, 0.1 BTC, 10 bps fee, fill at the signal bar's close, no slippage, 1,000
warm-up bars, one million 1-minute bars by default) swept over 64 combinations: fast 5..12 x
slow 30, 35, ..., 65 (every one valid), through ``engine.research.sweep.run_sweep``, the code
``cockpit sweep`` runs. Printed: combinations per second serial and on the cluster, and the
speed-up, both for the sweep alone (the cluster already up, its workers warm: the data is
shipped inside the timed region) and including the cluster's start. Both runs must produce the
same table (checked). Bar generation is outside the timed region.

Run: .venv/bin/python bench/sweep_throughput.py [--bars N] [--workers 2] [--combos 64]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backtest_throughput import base_config, options, synthetic_bars
from engine.research.cluster import ClusterOptions
from engine.research.sweep import SweepResult, run_sweep

FAST = list(range(5, 13))  # 8 values
SLOW = list(range(30, 70, 5))  # 8 values: 64 combinations, fast < slow in each


def combos(n: int) -> list[dict[str, int]]:
    grid = [{"fast": f, "slow": s} for f in FAST for s in SLOW]
    return grid[:n]


def same(a: SweepResult, b: SweepResult) -> bool:
    return [(r.params, r.metrics) for r in a.rows] == [(r.params, r.metrics) for r in b.rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--combos", type=int, default=64, help="at most 64")
    args = ap.parse_args()
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    data = synthetic_bars(args.bars)
    print(f"bars generated      {len(data):,} in {time.perf_counter() - t0:.2f} s (not timed)")
    base = base_config()
    opts = options(True)
    grid = combos(min(args.combos, 64))
    print(
        f"combinations        {len(grid)} (fast {FAST[0]}..{FAST[-1]} x slow {SLOW[0]}..{SLOW[-1]})"
    )

    serial = run_sweep(base, data, opts, grid, cluster=ClusterOptions(workers=0))
    s_rate = serial.rate
    print(f"serial              {serial.elapsed_s:8.2f} s  {s_rate:6.3f} combinations/s")

    t_start = time.perf_counter()
    cluster = LocalCluster(
        n_workers=args.workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
    )
    try:
        with Client(cluster) as client:
            client.run(lambda: __import__("engine.research.sweep"))  # workers import the core
            startup = time.perf_counter() - t_start
            dist = run_sweep(
                base, data, opts, grid, cluster=ClusterOptions(scheduler=cluster.scheduler_address)
            )
    finally:
        cluster.close()
    d_rate = dist.rate
    whole = len(grid) / (dist.elapsed_s + startup)
    print(
        f"LocalCluster x{args.workers}     {dist.elapsed_s:8.2f} s  {d_rate:6.3f} combinations/s"
        f"  (cluster start {startup:.2f} s not included)"
    )
    print(f"speed-up            {d_rate / s_rate:.2f}x (sweep alone)")
    print(f"speed-up            {whole / s_rate:.2f}x (including the cluster's start)")
    print(f"same results        {same(serial, dist)}")
    best = serial.best
    if best is not None and best.metrics is not None:
        print(f"best by sharpe      {best.params} sharpe {best.metrics.sharpe}")
    return 0 if same(serial, dist) else 1


if __name__ == "__main__":
    sys.exit(main())
