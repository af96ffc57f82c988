"""Throughput of the whole engine core on the simulated market.

3 symbols x 3 strategies, pre-trade checks, paper broker, portfolio and the SQLite journal, over
one million simulated quotes as fast as possible. Quotes are generated in chunks outside the timed
region (the feed is not the engine), then pushed through `Engine.process`, the same code the live
engine runs. A second, instrumented pass times each quote for the latency percentiles.

Run: .venv/bin/python bench/engine_throughput.py [--quotes N] [--timeframe SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.journal import Journal
from engine.runtime import Engine
from tests.conftest import default_dict, fast_config

CHUNK = 50_000


TIMEFRAME_S = 60


def _config(data_dir: Path):
    """The default config (3 symbols x 3 strategies, default limits and breakers), seeded, as
    fast as possible, with the strategies on TIMEFRAME_S bars and in auto mode (no person)."""
    strategies = [
        dict(s, timeframe_s=TIMEFRAME_S, approval="auto") for s in default_dict()["strategies"]
    ]
    return fast_config(data_dir, relaxed=False, strategies=strategies)


async def throughput(n: int) -> dict[str, float]:
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
    return {
        "quotes": done,
        "seconds": busy,
        "gen_seconds": gen,
        "rows": rows,
        "commits": commits,
        **counters,
    }


async def latency(n: int) -> tuple[list[int], list[int]]:
    """Per-quote time through core.on_quote (+ its order handling), and the quote-to-verdict
    time for the quotes that produced a pre-trade verdict."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(_config(Path(tmp)), Path(tmp))
        await engine.start()
        core = engine.core
        real = core.on_quote
        per_quote: list[int] = []
        to_verdict: list[int] = []
        clock = time.perf_counter_ns

        def timed(q):
            t0 = clock()
            out = real(q)
            dt = clock() - t0
            per_quote.append(dt)
            if out and any(getattr(e, "kind", "") == "intent" for e in out):
                to_verdict.append(dt)
            return out

        core.on_quote = timed
        feed = engine.source.events()
        done = 0
        while done < n:
            chunk = list(itertools.islice(feed, min(CHUNK, n - done)))
            await engine.process(chunk)
            done += len(chunk)
        await engine.stop()
    return per_quote, to_verdict


def journal_rate(rows: int = 100_000) -> float:
    """Raw journal capacity: typical intent-sized rows appended, then one flush."""

    async def go() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            journal = await Journal.open(Path(tmp) / "j.sqlite")
            payload = {"intent": {"intent_id": "ck-1-1", "symbol": "BTC/USDT", "qty": 0.01}}
            t0 = time.perf_counter()
            for i in range(rows):
                journal.append("intent", i, payload)
                if i % 1000 == 0:
                    await asyncio.sleep(0)
            await journal.flush()
            dt = time.perf_counter() - t0
            await journal.close()
        return rows / dt

    return asyncio.run(go())


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
        help="strategy bar size in seconds (default 60; the shipped demo config uses 1-2)",
    )
    args = parser.parse_args()
    global TIMEFRAME_S
    TIMEFRAME_S = args.timeframe
    r = asyncio.run(throughput(args.quotes))
    per_quote, to_verdict = asyncio.run(latency(args.quotes))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    q50, q99, qmax = pct(per_quote, 50), pct(per_quote, 99), pct(per_quote, 100)
    v50, v99 = pct(to_verdict, 50), pct(to_verdict, 99)
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
    print(f"journal capacity:  {journal_rate():,.0f} rows/s (100,000 appends + flush)")
    print(f"per-quote latency: p50 {q50:.2f} us, p99 {q99:.2f} us, max {qmax:.1f} us")
    print(
        f"quote-to-verdict:  p50 {v50:.2f} us, p99 {v99:.2f} us "
        f"(over the {len(to_verdict):,} quotes that produced a verdict)"
    )
    print(f"peak RSS:          {rss_mb:,.0f} MB")


if __name__ == "__main__":
    main()
