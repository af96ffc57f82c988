"""Alert latency on loopback: from the moment an engine event is shown (its journal rows
committed) to the moment apprise's ``json://`` post to a local HTTP server has its answer.

Two figures:

* fills: the engine trades the simulated market as fast as it can (3 symbols x 3 strategies,
  auto mode) with every fill routed to the server; the normal lane's queue waits behind the
  deliveries, so this is the latency of a busy route (and how many a full lane dropped).
* kill under load: while that lane is busy, kill-switch alerts are shown now and then; they take
  the safety lane, and must leave within 5 s (MiFID II RTS 6), whatever the fills do.

Run: .venv/bin/python bench/alert_latency.py [--seconds S] [--kills N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.alert_send import Delivery
from engine.alert_text import Alert
from engine.events import SafetyChanged
from engine.runtime import Engine
from engine.vocabulary import AlertKind
from tests.alert_hook import Hook
from tests.conftest import fast_config


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(name: str, ms: list[float]) -> str:
    if not ms:
        return f"{name:<16} none delivered"
    return (
        f"{name:<16} n={len(ms):<5} p50 {statistics.median(ms):7.1f} ms   "
        f"p99 {pct(ms, 0.99):7.1f} ms   max {max(ms):7.1f} ms"
    )


async def main(seconds: float, kills: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, Hook() as hook:
        data_dir = Path(tmp) / "data"
        cfg = fast_config(
            data_dir,
            alerts={
                "urls": [hook.url()],
                "events": ["fill", "kill_engaged"],
                "max_per_window": 10_000,
                "queue_size": 1000,
            },
        )
        engine = Engine(cfg, data_dir)
        assert engine.alerts is not None
        latency: dict[AlertKind, list[float]] = {AlertKind.FILL: [], AlertKind.KILL_ENGAGED: []}
        failed = 0

        def delivered(alert: Alert, label: str, result: Delivery, done_ns: int) -> None:
            nonlocal failed
            if not result.ok:
                failed += 1
            elif alert.kind in latency:
                latency[alert.kind].append((done_ns - alert.made_ns) / 1e6)

        engine.alerts.on_delivery = delivered
        await engine.start()
        run = asyncio.create_task(engine.run(duration_s=seconds))
        before = {"trading_state": "ACTIVE", "kill_level": None}
        after = {"trading_state": "HALTED", "kill_level": "halt"}
        for i in range(kills):
            await asyncio.sleep(seconds / (kills + 1))
            # Shown as the engine shows it (the watcher), without halting the engine's trading.
            engine.fanout.show(
                SafetyChanged(i, "kill_switch", "engine", before, after, "bench", "latency")
            )
        await run  # the run's end gives what is still queued its final flush (2 s at most)
        await engine.stop()
        view = engine.alerts.view()
        quotes = engine.quotes_processed
        print(f"alert latency, event shown -> json:// post answered on 127.0.0.1 ({quotes} quotes)")
        print(line("fills", latency[AlertKind.FILL]))
        print(line("kill under load", latency[AlertKind.KILL_ENGAGED]))
        print(
            f"sent {view['sent']}  failed {view['failed']}  dropped {view['dropped']}  "
            f"server received {len(hook.posts)}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="how long the engine trades")
    parser.add_argument("--kills", type=int, default=20, help="kill alerts shown meanwhile")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.kills))
