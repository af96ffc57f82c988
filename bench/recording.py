"""Speed and size of raw market data recording (engine.marketdata.recording).

The payloads are what a "book" feed hands the recorder: a ccxt order book of 20 levels a side
(bybit's orderbook.50 as ccxt.pro delivers it, truncated to the feed's depth), prices walking.
Printed:

* ``offer``: the cost on the feed's task per payload (JSON once, then a bounded queue put),
  the only part of recording the engine's event loop pays for;
* ``writer``: hashing and appending by the writer alone (records/s, bytes per record);
* ``end to end``: offer -> queue -> writer thread -> disk, as the engine runs it, until every
  record is flushed (records/s) and how many a queue of the default size dropped;
* ``verify``: `cockpit data verify` over the files written (records/s).

Run: .venv/bin/python bench/recording.py [--records N] [--levels L]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.marketdata.recording import (
    Item,
    MarketRecorder,
    RecordWriter,
    encode_payload,
    exchange_ns,
    verify_path,
)

DAY_NS = 1_735_689_600 * 1_000_000_000 + 3_600 * 1_000_000_000  # 2025-01-01 01:00Z


def book(i: int, levels: int) -> dict:
    mid = 61000.0 + (i * 7) % 40 - 20
    return {
        "symbol": "BTC/USDT",
        "bids": [[mid - 0.5 - k * 0.1, 0.5 + k * 0.25] for k in range(levels)],
        "asks": [[mid + 0.5 + k * 0.1, 0.4 + k * 0.3] for k in range(levels)],
        "timestamp": DAY_NS // 1_000_000 + i,
        "datetime": "2025-01-01T01:00:00.000Z",
        "nonce": 7961638724 + i,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--levels", type=int, default=20)
    args = ap.parse_args()
    n, levels = args.records, args.levels
    payloads = [book(i, levels) for i in range(min(n, 1000))]
    print(f"{n:,} payloads, ccxt order books of {levels} levels a side; load {os.getloadavg()}")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # offer(): the engine side, queue never drained (big enough to hold all).
        rec = MarketRecorder(root / "a", queue_size=n + 10)
        rec.accepting = True
        t0 = time.perf_counter()
        for i in range(n):
            rec.offer("bybit", "BTC/USDT", "book", DAY_NS + i, payloads[i % len(payloads)])
        dt = time.perf_counter() - t0
        print(f"offer       {dt / n * 1e6:7.2f} us a payload on the feed's task ({n / dt:,.0f}/s)")

        # The writer alone.
        items = [
            Item("bybit", "BTC/USDT", "book", DAY_NS + i, exchange_ns(p), encode_payload(p))
            for i, p in ((i, payloads[i % len(payloads)]) for i in range(n))
        ]
        writer = RecordWriter(root / "b", clock_ns=lambda: DAY_NS)
        t0 = time.perf_counter()
        for item in items:
            writer.write(item)
        writer.flush()
        dt = time.perf_counter() - t0
        writer.stop()
        print(
            f"writer      {n / dt:,.0f} records/s, {writer.bytes / writer.records:,.0f} bytes a "
            f"record ({writer.bytes / 1e6:.1f} MB)"
        )

        # End to end, with the default queue: the feed offers as fast as it can.
        live = MarketRecorder(root / "c")
        live.start()
        t0 = time.perf_counter()
        for i in range(n):
            live.offer("bybit", "BTC/USDT", "book", DAY_NS + i, payloads[i % len(payloads)])
        live.stop(timeout_s=120)
        dt = time.perf_counter() - t0
        print(
            f"end to end  {live.writer.records / dt:,.0f} records/s written, {live.dropped:,} "
            f"dropped by a {100_000:,}-payload queue when offered flat out"
        )

        t0 = time.perf_counter()
        reports = verify_path(root / "b")
        dt = time.perf_counter() - t0
        lines = sum(r.records for r in reports)
        assert all(not r.problems for r in reports)
        print(f"verify      {lines / dt:,.0f} records/s")


if __name__ == "__main__":
    main()
