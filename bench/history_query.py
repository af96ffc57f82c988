"""Speed and memory of the history readers (`cockpit journal`, `cockpit audit`) on a large journal.

The journal is real: rows the engine wrote trading the simulated market (bench/journal_verify.py's
sample), appended again and again with fresh timestamps until it holds --rows rows, with one
operator action (an audit row) every 50,000 rows. Building it is not timed. Each query runs as
the CLI runs it (engine.history, every row read checked against its hash) and prints its wall
time and the rows it returned; the peak memory of the process is printed at the end: it must
not grow with the journal (the newest N are read newest first and stop at N).

Run: .venv/bin/python bench/history_query.py [--rows N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.journal_verify import sample_rows
from engine.history import (
    DEFAULT_KINDS,
    RowFilter,
    audit_records,
    newest,
    parse_time,
    round_trips,
)
from engine.journal import Journal
from engine.vocabulary import JOURNAL_FILE

T0 = 1_700_000_000_000_000_000
AUDIT_EVERY = 50_000


def audit_payload(i: int) -> dict[str, Any]:
    return {
        "ts_event": T0 + i * 1_000_000,
        "action": "set_limit",
        "user": "alice",
        "client": "socket:cli set-limit",
        "args": {"name": "max_order_notional", "value": 5000.0, "reason": "bench"},
        "before": {"value": 10000.0},
        "after": {"value": 5000.0},
        "reason": "bench",
        "accepted": True,
        "message": "max_order_notional: 10000.0 -> 5000.0",
    }


async def build(path: Path, rows: int, sample: list[tuple[str, dict[str, Any]]]) -> None:
    journal = await Journal.open(path)
    for i in range(rows):
        if i % AUDIT_EVERY == AUDIT_EVERY - 1:
            journal.append("audit", T0 + i * 1_000_000, audit_payload(i))
        else:
            kind, payload = sample[i % len(sample)]
            journal.append(kind, T0 + i * 1_000_000, payload)
        if i % 20_000 == 0:
            await journal.flush()
    await journal.close()


def timed(label: str, fn: Any) -> None:
    start = time.perf_counter()
    n = fn()
    print(f"  {label:<58} {time.perf_counter() - start:7.3f} s  {n:>7} returned")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the journal in this dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.keep or Path(tmp)
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / JOURNAL_FILE
        if not path.exists():
            sample = asyncio.run(sample_rows(Path(tmp) / "sample", quotes=100_000))
            asyncio.run(build(path, args.rows, sample))
        print(f"journal: {args.rows:,} rows, {path.stat().st_size / 1e6:,.0f} MB ({path})")
        end = T0 + args.rows * 1_000_000
        mid = parse_time("1d", end)  # a day before the end: before the first row
        timed("journal -n 50 (default kinds)", lambda: len(newest(path, RowFilter(), 50)))
        timed(
            "journal -n 50 --kind fill",
            lambda: len(newest(path, RowFilter(kinds=("fill",)), 50)),
        )
        timed(
            "journal -n 50 --strategy ema_cross --symbol ETH/USDT",
            lambda: len(
                newest(path, RowFilter(DEFAULT_KINDS, "ema_cross", "ETH/USDT"), 50),
            ),
        )
        timed(
            "journal -n 50 --kind audit,safety (rare kinds)",
            lambda: len(newest(path, RowFilter(kinds=("audit", "safety")), 50)),
        )
        timed(
            "journal -n 50 --since/--until matching no row (ts scanned)",
            lambda: len(newest(path, RowFilter(since_ns=mid - 10**18, until_ns=mid - 1), 50)),
        )
        timed("audit -n 50", lambda: len(list(audit_records(path, RowFilter(), 50))))
        timed(
            "journal --trades -n 50 (pairs every fill)",
            lambda: len(round_trips(path, RowFilter(), 50)[0]),
        )
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak memory of this process (the sample included): {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
