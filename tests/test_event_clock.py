"""Between events the engine asks the market's clock, not the wall clock, how old a feed is.

A simulated market with a fixed ``start`` (2024) or a replay paced in real time runs in its own
time while the wall clock says today: judged by the wall clock every symbol looked years stale.
"""

from __future__ import annotations

import csv
from pathlib import Path

from engine.marketdata.pacing import EventClock, paced
from engine.runtime import Engine
from engine.types import NS_PER_MS, NS_PER_SECOND, Quote
from tests.conftest import fast_config

START = "2024-03-01T00:00:00Z"
START_NS = 1_709_251_200 * NS_PER_SECOND


class FakeWall:
    def __init__(self) -> None:
        self.t = 5_000 * NS_PER_SECOND

    def now_ns(self) -> int:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += round(seconds * 1e9)


def test_event_clock_reads_the_streams_time() -> None:
    wall = FakeWall()
    clock = EventClock("realtime", wall.now_ns)
    assert clock.now() is None  # not started: no time to judge staleness by
    clock.start(START_NS)
    wall.t += 7 * NS_PER_SECOND
    assert clock.now() == START_NS + 7 * NS_PER_SECOND
    fast = EventClock(10.0, wall.now_ns)
    fast.start(START_NS)
    wall.t += NS_PER_SECOND
    assert fast.now() == START_NS + 10 * NS_PER_SECOND
    unpaced = EventClock("max", wall.now_ns)
    unpaced.start(START_NS)
    assert unpaced.now() is None  # "max" has no time between events


async def test_paced_stream_drives_the_clock_it_is_given() -> None:
    wall = FakeWall()
    clock = EventClock("realtime", wall.now_ns)
    quotes = [
        Quote("X", 99.0, 100.0, 1.0, 1.0, START_NS + k * NS_PER_SECOND, 0, "sim")
        for k in range(1, 4)
    ]
    seen = []
    gen = paced(
        quotes,
        "realtime",
        start_event_ns=START_NS,
        now_ns=wall.now_ns,
        sleep=wall.sleep,
        clock=clock,
    )
    async for batch in gen:
        seen.append((batch[0].ts_exchange, clock.now()))
    assert seen == [(q.ts_exchange, q.ts_exchange) for q in quotes]


def _stale_trips(engine: Engine) -> list[str]:
    assert engine.core is not None
    return [
        b["scope"]
        for b in engine.core.breakers.status()
        if b["name"] == "stale_feed" and b["tripped"]
    ]


async def test_fixed_start_realtime_market_is_not_stale(tmp_path: Path) -> None:
    """The reported case: `start = "2024-03-01T00:00:00Z"`, speed realtime. Over several
    watcher ticks no symbol trips stale_feed and nothing blocks a strategy."""
    cfg = fast_config(
        tmp_path,
        market={"simulated": {"speed": "realtime", "start": START}},
        safety={"kill_switch": {"poll_s": 0.1}},
    )
    engine = Engine(cfg, tmp_path)
    await engine.start()
    try:
        await engine.run(duration_s=2.0)
        core = engine.core
        assert core is not None
        assert engine.quotes_processed > 10
        assert _stale_trips(engine) == []
        for scfg in cfg.strategies:
            for symbol in scfg.symbols:
                assert core.breakers.blocked(scfg.id, symbol) is None
        # The engine's time is the market's (2024), not today's.
        assert START_NS <= core.now < START_NS + 60 * NS_PER_SECOND
        assert str(core.safety.trading_state) == "ACTIVE"
    finally:
        await engine.stop()


async def test_a_silent_paced_replay_still_trips_stale_feed(tmp_path: Path) -> None:
    """The other side of the boundary: the market's clock keeps running through a gap in a
    replay paced at recorded speed, so the watcher trips stale_feed during the silence and a
    fresh quote re-arms it."""
    path = tmp_path / "quotes.csv"
    t0 = START_NS
    times = [t0 + k * 100 * NS_PER_MS for k in range(5)]
    times += [times[-1] + 1_500 * NS_PER_MS + k * 100 * NS_PER_MS for k in range(3)]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["local_ts_ns", "update_id", "bid_price", "bid_qty", "ask_price", "ask_qty"])
        for i, t in enumerate(times):
            w.writerow([t, i + 1, "100.0", "1.0", "100.1", "1.0"])
    cfg = fast_config(
        tmp_path / "data",
        market={
            "source": "replay",
            "validation": {"stale_after_s": 0.5},
            "replay": {"path": str(path), "kind": "quotes", "speed": "recorded"},
        },
        safety={"kill_switch": {"poll_s": 0.1}},
        strategies=[],
    )
    engine = Engine(cfg, tmp_path / "data")
    seen = engine.subscribe()
    await engine.start()
    try:
        await engine.run()
    finally:
        await engine.stop()
    changes = []
    while not seen.empty():
        ev = seen.get_nowait()
        if ev.kind == "breaker":
            change = ev.change  # type: ignore[attr-defined]
            changes.append((change["breaker"], change["tripped"]))
    assert ("stale_feed", True) in changes
    assert changes[-1] == ("stale_feed", False)  # the next quote re-armed it
