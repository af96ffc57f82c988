"""What keeping the restart's history costs a start: ``restore_state`` on a big journal, with
the history window collected (as every start does) and without it.

The journal is built as bench/journal_verify.py builds it (real engine rows appended again and
again through the real Journal writer); building it is not timed. ``restore_state`` is timed
whole (the hash-chain check and the one read pass), alternating the two variants so both see
the same machine; the difference is the price of the window. The CPU figure is this process's
and leaves out the chain check (the same code in both variants, whose worker processes make
this process's share of it vary from run to run), so it is the read pass alone. Figures depend
on what else the machine runs: compare the two columns, not runs on different days.

Run: .venv/bin/python bench/restore_history.py [--rows N] [--repeat K] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.journal_verify import bench_journal
from engine import restore
from engine.restore import HISTORY_EVENTS, restore_state


def timed(path: Path, history_events: int) -> tuple[float, float, int]:
    """(wall seconds of the whole restore, CPU seconds of its read pass, events kept)."""
    w0 = time.perf_counter()
    restore_state(path, history_events=history_events)
    wall = time.perf_counter() - w0
    check = restore.require_intact
    restore.require_intact = lambda _path: None  # type: ignore[assignment,return-value]
    try:
        c0 = time.process_time()
        state = restore_state(path, history_events=history_events)
        cpu = time.process_time() - c0
    finally:
        restore.require_intact = check
    return wall, cpu, len(state.history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--keep", metavar="DIR", help="build (or reuse) the journal in DIR")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = bench_journal(Path(args.keep) if args.keep else None, Path(tmp), args.rows)
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        runs: dict[int, list[tuple[float, float, int]]] = {0: [], HISTORY_EVENTS: []}
        for _ in range(args.repeat):
            for n in runs:  # alternated, so both variants see the same machine
                runs[n].append(timed(path, n))
        for n, label in ((0, "no history window"), (HISTORY_EVENTS, "window (default)")):
            wall = min(r[0] for r in runs[n])
            cpu = min(r[1] for r in runs[n])
            print(
                f"restore_state, {label:18} {wall:6.2f} s wall, read pass {cpu:6.2f} s CPU "
                f"(best of {args.repeat}; {runs[n][0][2]:,} history events kept)"
            )
        base = min(r[1] for r in runs[0])
        window = min(r[1] for r in runs[HISTORY_EVENTS])
        print(
            f"the window costs the read pass {window - base:+.2f} s CPU "
            f"({(window / base - 1) * 100:+.1f}%)"
        )


if __name__ == "__main__":
    main()
