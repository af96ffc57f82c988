"""Throughput of the whole engine core on the simulated market: issue 12's live-core figures.

3 symbols x 3 strategies, pre-trade checks, paper broker, portfolio and the SQLite journal, over
one million simulated quotes as fast as possible. Quotes are generated in chunks outside the timed
region (the feed is not the engine), then pushed through `Engine.process`, the same code the live
engine runs. Three figures, each against its target:

- quotes/s through `Engine.process` (core, broker, journal appends and the commits orders wait for);
- p99 quote-to-verdict: a second, instrumented pass times `EngineCore.on_quote` for every quote,
  and the percentile is over the quotes whose output carries a pre-trade verdict (an intent);
- journal rows/s, group-committed: the rows that run wrote (decisions, intents with all their
  verdicts, orders, fills, marks, as the engine journals them) appended again, 100,000 of them,
  to a fresh journal while its writer commits in the background, then one flush. A second line
  gives the same with small synthetic rows, the figure the issue's "78k today" was measured on.

Timing on a shared machine varies with its load, and machines differ: the load average and a
speed probe (``python -m timeit "sum(range(1000))"``) are printed with the figures.

Run: .venv/bin/python bench/engine_throughput.py [--quotes N] [--timeframe SECONDS]
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
from collections import deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import describe
from engine.datadir import JOURNAL_FILE
from engine.events import IntentChecked
from engine.journal import Journal, canonical_payload, read_rows
from engine.runtime import Engine
from tests.conftest import default_dict, fast_config

CHUNK = 50_000
LATENCY_CHUNK = int(os.environ.get("LATENCY_CHUNK", "50000"))
JOURNAL_ROWS = 100_000
# Issue 12's targets.
TARGET_QUOTES_S = 250_000
TARGET_VERDICT_P99_US = 150.0
TARGET_JOURNAL_ROWS_S = 150_000


TIMEFRAME_S = 60


def _config(data_dir: Path):
    """The default config (3 symbols x 3 strategies, default limits and breakers), seeded, as
    fast as possible, with the strategies on TIMEFRAME_S bars and in auto mode (no person)."""
    strategies = [
        dict(s, timeframe_s=TIMEFRAME_S, approval="auto") for s in default_dict()["strategies"]
    ]
    return fast_config(data_dir, relaxed=False, strategies=strategies)


Row = tuple[str, int, dict[str, Any]]


async def throughput(n: int) -> tuple[dict[str, float], list[Row]]:
    """The timed run, and the rows it journaled (the journal figure's workload)."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(_config(Path(tmp)), Path(tmp))
        await engine.start()
        feed = engine.source.events()
        busy = gen = 0.0
        done = 0
        while done < n:
            t0 = time.perf_counter()
            chunk = list(itertools.islice(feed, min(CHUNK, n - done)))
            t1 = time.perf_counter()
            await engine.process(chunk)
            t2 = time.perf_counter()
            gen += t1 - t0
            busy += t2 - t1
            done += len(chunk)
        t0 = time.perf_counter()
        await engine.journal.flush()
        busy += time.perf_counter() - t0
        rows, commits = engine.journal.rows_written, engine.journal.commits
        counters = dict(engine.core.counters)
        await engine.stop()
        journaled = [(r.kind, r.ts, r.payload) for r in read_rows(Path(tmp) / JOURNAL_FILE)]
    return {
        "quotes": done,
        "seconds": busy,
        "gen_seconds": gen,
        "rows": rows,
        "commits": commits,
        **counters,
    }, journaled


class _StampedTrace(deque):
    """The core's trace, noting the moment each pre-trade verdict is recorded (the core appends
    an intent's IntentChecked to its trace the moment the checks, safety and approval gates
    have ruled)."""

    def __init__(self, trace: deque, stamps: list[int]) -> None:
        super().__init__(trace, maxlen=trace.maxlen)
        self.stamps = stamps

    def append(self, ev: Any) -> None:
        if type(ev) is IntentChecked:
            self.stamps.append(time.perf_counter_ns())
        super().append(ev)


async def latency(n: int) -> tuple[list[int], list[int], list[int]]:
    """Per-quote time through core.on_quote; for each pre-trade verdict, the time from its
    quote's arrival to the verdict; and, for the quotes that produced one, the whole
    on_quote (an upper bound: it includes the strategies and orders after the verdict)."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(_config(Path(tmp)), Path(tmp))
        await engine.start()
        core = engine.core
        real = core.on_quote
        per_quote: list[int] = []
        to_verdict: list[int] = []
        verdict_quotes: list[int] = []
        stamps: list[int] = []
        core.trace = _StampedTrace(core.trace, stamps)
        clock = time.perf_counter_ns

        def timed(q):
            t0 = clock()
            out = real(q)
            dt = clock() - t0
            per_quote.append(dt)
            if stamps:
                to_verdict.extend(s - t0 for s in stamps)
                stamps.clear()
                verdict_quotes.append(dt)
            return out

        core.on_quote = timed
        feed = engine.source.events()
        done = 0
        while done < n:
            chunk = list(itertools.islice(feed, min(LATENCY_CHUNK, n - done)))
            await engine.process(chunk)
            done += len(chunk)
        await engine.stop()
    return per_quote, to_verdict, verdict_quotes


def journal_rate(workload: list[Row], rows: int = JOURNAL_ROWS) -> tuple[float, int]:
    """Group-commit capacity: ``rows`` rows taken in turn from ``workload`` appended to a fresh
    journal, the event loop given a turn every 1,000 (as the feed's batches give it), then one
    flush. Returns (rows/s, commits)."""

    async def go() -> tuple[float, int]:
        with tempfile.TemporaryDirectory() as tmp:
            journal = await Journal.open(Path(tmp) / JOURNAL_FILE)
            append = journal.append
            t0 = time.perf_counter()
            for i, (kind, ts, payload) in enumerate(
                itertools.islice(itertools.cycle(workload), rows)
            ):
                append(kind, ts, payload)
                if i % 1000 == 0:
                    await asyncio.sleep(0)
            await journal.flush()
            dt = time.perf_counter() - t0
            commits = journal.commits
            await journal.close()
        return rows / dt, commits

    return asyncio.run(go())


# The synthetic row the first journal figure used: a ~70-byte intent stub.
SMALL_ROW: Row = (
    "intent",
    0,
    {"intent": {"intent_id": "ck-1-1", "symbol": "BTC/USDT", "qty": 0.01}},
)


def pct(values: list[int], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] / 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quotes", type=int, default=1_000_000)
    parser.add_argument(
        "--timeframe",
        type=int,
        default=60,
        help="strategy bar size in seconds (default 60; the shipped demo config uses 20)",
    )
    args = parser.parse_args()
    global TIMEFRAME_S
    TIMEFRAME_S = args.timeframe
    load = os.getloadavg()[0]
    r, journaled = asyncio.run(throughput(args.quotes))
    per_quote, to_verdict, verdict_quotes = asyncio.run(latency(args.quotes))
    journal_s, journal_commits = journal_rate(journaled)
    small_s, small_commits = journal_rate([SMALL_ROW])
    row_bytes = sum(len(canonical_payload(p)) for _, _, p in journaled) / max(1, len(journaled))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    q50, q99, qmax = pct(per_quote, 50), pct(per_quote, 99), pct(per_quote, 100)
    v50, v99 = pct(to_verdict, 50), pct(to_verdict, 99)
    w50, w99 = pct(verdict_quotes, 50), pct(verdict_quotes, 99)
    print(f"quotes:            {r['quotes']:,} (3 symbols x 3 strategies on {TIMEFRAME_S}s bars)")
    print(
        f"engine time:       {r['seconds']:.2f} s "
        f"(feed generation untimed: {r['gen_seconds']:.2f} s)"
    )
    print(f"throughput:        {r['quotes'] / r['seconds']:,.0f} quotes/s")
    print(
        f"decisions:         {r['decisions']:,}, intents {r['intents']:,} (submitted "
        f"{r['submitted']:,}, denied {r['denied']:,}), fills {r['fills']:,}"
    )
    print(
        f"journal:           {r['rows']:,} rows in {r['commits']:,} commits "
        "(each submitted order waits for its intent's fsync)"
    )
    print(
        f"journal capacity:  {journal_s:,.0f} rows/s group-committed ({JOURNAL_ROWS:,} of the "
        f"rows above, {row_bytes:,.0f} bytes of JSON on average, in {journal_commits:,} commits)"
    )
    print(
        f"  small rows:      {small_s:,.0f} rows/s ({JOURNAL_ROWS:,} ~70-byte intent stubs, in "
        f"{small_commits:,} commits)"
    )
    print(f"per-quote latency: p50 {q50:.2f} us, p99 {q99:.2f} us, max {qmax:.1f} us")
    print(
        f"quote-to-verdict:  p50 {v50:.2f} us, p99 {v99:.2f} us "
        f"(over {len(to_verdict):,} verdicts, each from its quote's arrival)"
    )
    print(
        f"  whole quote:     p50 {w50:.2f} us, p99 {w99:.2f} us (on_quote of the "
        f"{len(verdict_quotes):,} quotes with a verdict, to the end of all they did)"
    )
    print(f"peak RSS:          {rss_mb:,.0f} MB")
    print(f"machine:           {describe(load)}")
    quotes_s = r["quotes"] / r["seconds"]
    print("issue 12 targets:")
    for name, ok, figure in (
        (f">= {TARGET_QUOTES_S:,} quotes/s", quotes_s >= TARGET_QUOTES_S, f"{quotes_s:,.0f}"),
        (
            f"p99 quote-to-verdict < {TARGET_VERDICT_P99_US:.0f} us",
            v99 < TARGET_VERDICT_P99_US,
            f"{v99:.0f} us",
        ),
        (
            f"journal >= {TARGET_JOURNAL_ROWS_S:,} rows/s",
            journal_s >= TARGET_JOURNAL_ROWS_S,
            f"{journal_s:,.0f}",
        ),
    ):
        print(f"  {'met    ' if ok else 'not met'}  {name} ({figure})")


if __name__ == "__main__":
    main()
