"""What the Prometheus endpoint costs: the scrape's time, and the event loop time the sampler
takes from the engine.

Runs the simulated market as fast as it goes (an in-process engine, like the tests), bare and
with the metrics sampler at 1 Hz and a scraper thread pulling /metrics every 0.2 s (a scrape
every 5-15 s is usual; this is a hard case), alternately, ``--rounds`` times each.
Prints the scrape latency (p50/p99/max) and document size, the sampler's cost per sample and
per second of running (the share of the event loop it takes), and both runs' throughput.

Run: .venv/bin/python bench/metrics_scrape.py [--events 150000] [--scrape-every 0.2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.runtime import Engine
from engine.telemetry import MetricsServer
from tests.conftest import fast_config


async def run(events: int, root: Path, *, metrics: bool, scrape_every: float) -> dict[str, float]:
    data = root / ("metrics" if metrics else "bare")
    engine = Engine(fast_config(data), data)
    server = MetricsServer("127.0.0.1", 0) if metrics else None
    sampler = None
    scrapes: list[float] = []
    sizes: list[int] = []
    stop = threading.Event()

    def scraper() -> None:
        assert server is not None
        while not stop.wait(scrape_every):
            began = time.perf_counter()
            with urllib.request.urlopen(server.url, timeout=30) as resp:
                body = resp.read()
            scrapes.append(time.perf_counter() - began)
            sizes.append(len(body))

    thread = None
    if server is not None:
        server.start()
        sampler = server.sampler()
        engine.companions.append(sampler)
        thread = threading.Thread(target=scraper, daemon=True)
    await engine.start()
    if thread is not None:
        thread.start()
    began = time.perf_counter()
    try:
        await engine.run(max_events=events)
    finally:
        elapsed = time.perf_counter() - began
        stop.set()
        if thread is not None:
            thread.join(30)
        await engine.stop()
        if server is not None:
            await server.close()
    out = {"elapsed_s": elapsed, "quotes_per_s": events / elapsed}
    if sampler is not None and scrapes:
        scrapes.sort()
        out |= {
            "scrapes": len(scrapes),
            "scrape_p50_ms": statistics.median(scrapes) * 1e3,
            "scrape_p99_ms": scrapes[min(len(scrapes) - 1, int(len(scrapes) * 0.99))] * 1e3,
            "scrape_max_ms": scrapes[-1] * 1e3,
            "scrape_kb": statistics.mean(sizes) / 1024,
            "samples": sampler.samples,
            "sample_ms": sampler.cost_total_s / max(sampler.samples, 1) * 1e3,
            "sampler_ms_per_s": sampler.cost_total_s / elapsed * 1e3,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=150_000)
    ap.add_argument("--scrape-every", type=float, default=0.2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    bares, withs = [], []
    # Alternated, best of each: on a shared machine one run's neighbours are not the next's.
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            bares.append(
                asyncio.run(run(args.events, root, metrics=False, scrape_every=args.scrape_every))
            )
            withs.append(
                asyncio.run(run(args.events, root, metrics=True, scrape_every=args.scrape_every))
            )
    bare = max(bares, key=lambda r: r["quotes_per_s"])
    with_m = max(withs, key=lambda r: r["quotes_per_s"])
    print(f"events: {args.events:,} simulated quotes, as fast as they go, best of {args.rounds}")
    print(f"bare engine:          {bare['quotes_per_s']:10,.0f} quotes/s")
    print(
        f"with metrics:         {with_m['quotes_per_s']:10,.0f} quotes/s "
        f"(sampler 1 Hz, a scrape every {args.scrape_every:g} s)"
    )
    if "scrapes" not in with_m:
        print("no scrape finished during the run; give more --events")
        return
    print(
        f"scrape:               p50 {with_m['scrape_p50_ms']:.2f} ms, p99 "
        f"{with_m['scrape_p99_ms']:.2f} ms, max {with_m['scrape_max_ms']:.2f} ms "
        f"over {with_m['scrapes']:.0f} scrapes, {with_m['scrape_kb']:.1f} KiB each"
    )
    print(
        f"sampler:              {with_m['sample_ms']:.2f} ms of event loop per sample "
        f"({with_m['samples']:.0f} samples), {with_m['sampler_ms_per_s']:.2f} ms per second "
        f"of running ({with_m['sampler_ms_per_s'] / 10:.3f} % of the loop)"
    )


if __name__ == "__main__":
    main()
