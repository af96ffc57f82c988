"""Speed of the hash-chain check every engine start runs on the whole journal (rows per second).

The journal is real: the engine trades the simulated market for a while (3 symbols x 3
strategies, auto mode), and its rows (marks, decisions, intents, orders, fills, safety states)
are appended again and again through the real Journal writer, with fresh timestamps, until the
journal holds --rows rows. Building it is not timed; `verify_journal` is, as a start runs it
(one worker process per CPU beside this one) and in one process alone. The wall-clock figure
depends on what else the machine runs; the CPU-time figure (rows over the busiest process's
CPU seconds) is what an otherwise idle machine with as many CPUs would reach.

Run: .venv/bin/python bench/journal_verify.py [--rows N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.journal import PARALLEL_MIN_ROWS, Journal, read_rows, verify_journal
from engine.runtime import JOURNAL_FILE, Engine
from tests.conftest import default_dict, fast_config

TARGET_ROWS_PER_S = 500_000


async def sample_rows(data_dir: Path, quotes: int = 200_000) -> list[tuple[str, dict]]:
    """What the engine itself journals: a few minutes of simulated trading."""
    strategies = [dict(s, timeframe_s=60, approval="auto") for s in default_dict()["strategies"]]
    engine = Engine(fast_config(data_dir, relaxed=False, strategies=strategies), data_dir)
    await engine.start()
    feed = engine.source.events()
    for _ in range(quotes // 50_000):
        await engine.process(list(itertools.islice(feed, 50_000)))
    await engine.stop()
    return [(r.kind, r.payload) for r in read_rows(data_dir / JOURNAL_FILE)]


async def build(path: Path, rows: int, sample: list[tuple[str, dict]]) -> None:
    journal = await Journal.open(path)
    ts = 1_700_000_000_000_000_000
    for i in range(rows):
        kind, payload = sample[i % len(sample)]
        journal.append(kind, ts + i * 1_000_000, payload)
        if i % 20_000 == 0:
            await journal.flush()
    await journal.close()


def timed(path: Path, workers: int | None) -> tuple[float, float]:
    """(rows/s on the wall clock, rows/s if every process had a CPU to itself).

    The second figure divides by the busiest process's CPU time (this one's or a worker's), so
    it does not depend on what else the machine is running; the first one does.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    k0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = verify_journal(path, workers=workers)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    k1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert report.ok, report.problem
    n_workers = (workers or _cpus()) - 1 if report.rows >= PARALLEL_MIN_ROWS or workers else 0
    child = (k1.ru_utime + k1.ru_stime - k0.ru_utime - k0.ru_stime) / max(n_workers, 1)
    return report.rows / wall, report.rows / max(cpu, child)


def _cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def bench_journal(keep: Path | None, tmp: Path, rows: int) -> Path:
    """The benchmark journal: ``rows`` rows like the engine's, built in ``keep`` (reused when
    already there) or in ``tmp``."""
    path = (keep or tmp) / "bench-journal.sqlite"
    if not path.exists():
        t0 = time.perf_counter()
        sample = asyncio.run(sample_rows(tmp / "sample"))
        kinds = sorted({k for k, _ in sample})
        asyncio.run(build(path, rows, sample))
        print(
            f"built {rows:,} rows from {len(sample)} engine rows ({', '.join(kinds)}) "
            f"in {time.perf_counter() - t0:.1f} s"
        )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", metavar="DIR", help="build (or reuse) the journal in DIR")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = bench_journal(Path(args.keep) if args.keep else None, Path(tmp), args.rows)
        rows = verify_journal(path, workers=1).rows  # also warms the page cache
        size = path.stat().st_size
        print(f"journal: {rows:,} rows, {size / 1e6:.0f} MB ({size / rows:.0f} bytes/row on disk)")
        print(f"machine: {_cpus()} CPUs, load average {os.getloadavg()[0]:.1f}")
        start = [timed(path, None) for _ in range(3)]
        serial = [timed(path, 1) for _ in range(3)]
        for label, runs in (("as a start runs it", start), ("in one process", serial)):
            print(
                f"verify_journal {label + ':':20} {max(w for w, _ in runs):>9,.0f} rows/s "
                f"(best of 3; {max(c for _, c in runs):,.0f} rows/s of CPU time)"
            )
        best = max(w for w, _ in start)
        verdict = "meets" if best >= TARGET_ROWS_PER_S else "is BELOW"
        print(
            f"at start: {rows / best:.2f} s for this journal; "
            f"{verdict} the {TARGET_ROWS_PER_S:,} rows/s target"
        )


if __name__ == "__main__":
    main()
