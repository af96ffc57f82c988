"""An adversarial review of time and clocks (review-u): the system clock stepped by NTP or by
hand, a venue's clock off from ours, a machine suspended, the UTC day.

Each test drives the real engine; a venue's market data goes through the real
``CcxtMarketFeed`` and ``VenueSource`` with a fake wall clock (time.time_ns, which may be
stepped) and a fake elapsed-time clock (never stepped, counting a suspend).

Found (each test below failed on main): on a venue's data the engine's clock between quotes
was the wall clock, so a step back held it still (an approve after the TTL traded, the last
price stayed fresh and in sync for the length of the step, no stale_feed trip) and a step
forward, even for one tick, kept it ahead (every order denied STALE_QUOTE for the hour, the
next UTC day begun early with its start equity, an auto breaker re-armed before its cooldown);
the snapshot's clock froze the TTL shown while a feed was quiet; a silence measured on the
wall clock after a step back was no resync.

Tried and found holding:
- paced feeds (a simulated market at a set speed, replays) keep their clock on the monotonic
  clock: a wall step moves neither their market time nor staleness (test_event_clock.py);
- the KILL file watch, SIGUSR1, the heartbeat and systemd's watchdog, the journal's anchor
  timer, the control socket's rate limits and held alert bursts run on the monotonic clock
  (asyncio.sleep, time.monotonic): a wall step neither delays nor skips them;
- the order throttle and the orders_per_minute breaker count on event time (quote stamps);
- the portfolio's UTC day never goes back: a ticker stamped 23:59:59 after the day rolled
  neither reopens yesterday nor resets today's start equity;
- the release override's day is the portfolio's trading day (event time); the roll ends it;
- an approve ticks the clock to now before it is judged: 1 ns under the TTL is approved, at
  the TTL it expires, steady or stepped (to the ms: a venue stamps in ms);
- a venue stamp up to a minute ahead: the engine's clock follows the next quote received on
  any venue, not the highest stamp;
- the journal keeps no ts order: rows stamped out of order by venues' clocks verify and a
  start takes them (a planted row re-hashed is the documented limit of a chain with no secret);
- the cockpit never counts a TTL below 0 s (fmt_duration, `cockpit approvals`);
- quotes stamped more than a minute ahead or ``stale_after_s`` behind their receipt are refused
  at the feed (future_payload, stale_payload), now with the reason on the stale symbol.
"""

from __future__ import annotations

import asyncio
import os
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine.journal import read_rows, verify_journal
from engine.types import NS_PER_SECOND, Quote
from engine.venues.ccxt_market import CcxtMarketFeed
from engine.venues.source import VenueSource
from tests.test_safety_engine import (
    BTC,
    CASH_AFTER_BUY,
    ETH,
    WHOLE_BTC,
    Harness,
    buy,
    harnesses,  # noqa: F401  (the fixture the tests below take)
    sell,
    start,
)

S = NS_PER_SECOND
HOUR = 3600 * S
RISK_1S = {**WHOLE_BTC["risk"], "stale_quote_s": 1.0}


class Clocks:
    """The machine's clocks: ``wall`` (time.time_ns, which NTP or a person may step) and
    ``elapsed`` (a clock nobody steps, counting a suspend too)."""

    def __init__(self, wall: int) -> None:
        self.wall = wall
        self.elapsed = 10 * S

    def wall_ns(self) -> int:
        return self.wall

    def elapsed_ns(self) -> int:
        return self.elapsed

    def run(self, seconds: float, ns: int = 0) -> None:
        """Time passes: both clocks move on."""
        self.wall += round(seconds * S) + ns
        self.elapsed += round(seconds * S) + ns

    def step(self, seconds: float) -> None:
        """The system clock is stepped (NTP, a person): only the wall clock moves."""
        self.wall += round(seconds * S)


class Venue:
    """The engine of a Harness fed by one venue's real feed and source (paper on live prices):
    the venue stamps each ticker with the true time; the machine's wall clock may be off."""

    def __init__(self, h: Harness, clocks: Clocks, monkeypatch: pytest.MonkeyPatch) -> None:
        self.h = h
        self.clocks = clocks
        self.true = clocks.wall  # the venue's (true) time
        ex = type("Ex", (), {"id": "fake", "has": {}, "rateLimit": 50})()
        feed = CcxtMarketFeed("sim", ex, [BTC, ETH], transport="poll", clock_ns=clocks.wall_ns)
        feed._elapsed = clocks.elapsed_ns  # type: ignore[attr-defined]
        self.feed = feed
        source = VenueSource(h.engine.cfg)
        source.feeds = {"sim": feed}
        source._venue_of = {BTC: "sim", ETH: "sim"}
        fake_time = types.SimpleNamespace(time_ns=clocks.wall_ns)
        monkeypatch.setattr("engine.venues.source.time", fake_time, raising=False)
        h.engine.source = source
        core = h.engine.core
        core.market_gate = source.market_gate

    def run(self, seconds: float, ns: int = 0) -> None:
        self.clocks.run(seconds, ns)
        self.true += round(seconds * S) + ns

    async def quote(self, symbol: str, mid: float) -> Quote | None:
        """The venue's ticker now, through the feed and the engine; None if the feed refused it."""
        tick = {
            "symbol": symbol,
            "bid": mid - 0.5,
            "ask": mid + 0.5,
            "bidVolume": 5.0,
            "askVolume": 5.0,
            "timestamp": self.true // 1_000_000,
        }
        q = self.feed.accept(symbol, tick)
        if q is not None:
            await self.h.engine.process([q])
            await self.h.engine.journal.flush()
        return q

    async def tick(self) -> None:
        """What the engine's watch does twice a second between quotes."""
        engine = self.h.engine
        async with engine.command_lock:
            await engine._tick_to_now()
        await engine.journal.flush()


async def venue_engine(
    started: list[Harness], data_dir: Path, monkeypatch: pytest.MonkeyPatch, **kw: Any
) -> Venue:
    h = await start(started, data_dir, **kw)
    clocks = Clocks(h.core.now + 60 * S)
    return Venue(h, clocks, monkeypatch)


# --------------------------------------------------------------------------- the wall steps back


async def test_a_clock_stepped_back_does_not_stretch_an_approvals_time_to_live(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v = await venue_engine(harnesses, data_dir, monkeypatch)
    h = v.h
    await v.quote(BTC, 60_000.0)
    h.core.slots[("beta", BTC)].strategy.script.append(buy())
    v.run(1)
    await v.quote(BTC, 60_000.0)
    (pending,) = h.core.approvals.pending()
    aid = pending.approval_id
    v.run(5)
    await v.tick()
    v.clocks.step(-3600)  # NTP steps the clock back an hour
    for _ in range(40):  # 40 s pass (TTL 30 s); the venue's tickers are refused (future_payload)
        v.run(1)
        assert await v.quote(BTC, 60_000.0) is None
        await v.tick()
    reply = await h.engine.command("approve", {"id": aid})
    assert not h.sent, "an approve 40 s after the request (TTL 30 s) sent an order"
    assert not reply["ok"] and "expired" in reply["message"], reply


@pytest.mark.parametrize("step_s", [0, -3600], ids=["steady", "stepped-back"])
@pytest.mark.parametrize("late_ns", [-1, 0], ids=["just-under", "at-ttl"])
async def test_an_approve_at_the_ttl_on_a_venues_clock(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    step_s: int,
    late_ns: int,
) -> None:
    """Quotes every second; the approve comes 30 s after the request, less 1 ns or not (the
    system clock stepped back an hour half a second before it, or not)."""
    v = await venue_engine(harnesses, data_dir, monkeypatch)
    h = v.h
    await v.quote(BTC, 60_000.0)
    h.core.slots[("beta", BTC)].strategy.script.append(buy())
    v.run(1)
    await v.quote(BTC, 60_000.0)
    (pending,) = h.core.approvals.pending()
    for _ in range(29):
        v.run(1)
        await v.quote(BTC, 60_000.0)
    v.run(0.5)
    v.clocks.step(step_s)
    v.run(0.5, late_ns)
    reply = await h.engine.command("approve", {"id": pending.approval_id})
    if late_ns < 0:
        assert reply["ok"] and len(h.sent) == 1, reply
    else:
        assert not reply["ok"] and "expired" in reply["message"], reply
        assert not h.sent


async def hold_one_btc(v: Venue) -> None:
    """alpha buys one BTC at the ask of 60000.5, no fee: equity is 39999.5 + the mid."""
    h = v.h
    await v.quote(BTC, 60_000.0)
    h.core.slots[("alpha", BTC)].strategy.script.append(buy())
    v.run(1)
    await v.quote(BTC, 60_000.0)
    v.run(1)
    await v.quote(BTC, 60_000.0)  # fills at the ask
    assert h.core.portfolio.positions[BTC].qty == 1.0
    assert h.core.portfolio.cash == CASH_AFTER_BUY


async def test_a_clock_stepped_back_does_not_keep_the_last_price_fresh(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After the step every true ticker is refused (stamped an hour after its receipt): the
    price before the step must age as time passes, not for an hour by the wall clock."""
    v = await venue_engine(harnesses, data_dir, monkeypatch, qty=1.0, **WHOLE_BTC)
    h = v.h
    await hold_one_btc(v)
    sent = len(h.sent)
    v.clocks.step(-3600)
    for _ in range(4):  # under stale_after_s (5 s): the last price is still good
        v.run(1)
        assert await v.quote(BTC, 60_000.0) is None
        await v.tick()
    assert h.engine.source.market_gate(BTC) is None
    for _ in range(36):
        v.run(1)
        assert await v.quote(BTC, 60_000.0) is None
        await v.tick()
    why = h.engine.source.market_gate(BTC) or ""
    assert "unsynced" in why, "40 s old, shown in sync"
    assert "stamped 3,600 s after their receipt by this machine's clock" in why, why
    reply = await h.engine.command("flatten", {"symbol": BTC, "reason": "going home"})
    assert len(h.sent) == sent, "an order priced on a quote 40 s old went out"
    assert not reply["ok"], reply
    stale = [b for b in h.breaker_rows("stale_feed") if b["tripped"]]
    assert stale, "the feed silent for 40 s never tripped stale_feed"


@pytest.mark.parametrize("late_ms", [0, 1], ids=["at-the-limit", "1-ms-over"])
async def test_a_quotes_age_is_measured_on_the_engines_clock(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    late_ms: int,
) -> None:
    """This machine's clock is 4 s ahead of the venue's (within what the feed takes), and
    `stale_quote_s` is 1: a flatten 1 s after the last quote goes out, 1 ms later it is
    denied STALE_QUOTE. The engine's clock is the venue's stamps plus the time elapsed;
    the age of a quote must be measured in it, not against its receipt by our wall clock
    (4 s ahead: a quote stayed fresh for 5 s)."""
    v = await venue_engine(
        harnesses, data_dir, monkeypatch, qty=1.0, **{**WHOLE_BTC, "risk": RISK_1S}
    )
    h = v.h
    v.true -= 4 * S
    await hold_one_btc(v)
    sent = len(h.sent)
    v.run(1, late_ms * 1_000_000)
    reply = await h.engine.command("flatten", {"symbol": BTC, "reason": "going home"})
    if late_ms:
        assert not reply["ok"] and "STALE_QUOTE" in reply["message"], reply
        assert len(h.sent) == sent
    else:
        assert reply["ok"], reply
        assert len(h.sent) == sent + 1


# --------------------------------------------------------------------------- the wall steps forward

DAY = 86_400 * S


def before_midnight(h: Harness, seconds: float) -> int:
    """The UTC midnight after the engine's start, less ``seconds``."""
    now = h.core.now
    return now - now % DAY + DAY - round(seconds * S)


async def test_a_clock_stepped_forward_over_midnight_does_not_start_a_new_day(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wrong NTP answer puts the clock an hour ahead at 23:58 for a second; the day's loss
    must still be measured from the day's start (5% is the limit, 6% is lost by 23:58:10)."""
    h = await start(harnesses, data_dir, qty=1.0, **WHOLE_BTC)
    v = Venue(h, Clocks(before_midnight(h, 120)), monkeypatch)
    await hold_one_btc(v)
    day = h.core.portfolio.trading_day
    v.run(1)
    await v.quote(BTC, 56_000.5)  # equity 96000: 4% down on the day
    assert not h.core.safety.kill.engaged
    v.clocks.step(3600)
    v.run(1)
    await v.tick()
    assert await v.quote(BTC, 56_000.5) is None  # stamped an hour before its receipt: refused
    why = h.engine.source.market_gate(BTC) or ""
    assert "stamped 3,600 s before their receipt by this machine's clock" in why, why
    v.clocks.step(-3600)  # put right
    v.run(1)
    await v.tick()
    assert h.core.portfolio.trading_day == day, "a new UTC day began at 23:58 by the wall clock"
    assert h.core.portfolio.day_start_equity == 100_000.0
    v.run(1)
    await v.quote(BTC, 55_000.51)  # 4.99999% down
    assert not h.core.safety.kill.engaged
    v.run(1)
    await v.quote(BTC, 55_000.5)  # 5%: the limit
    kill = h.core.safety.kill
    assert kill.engaged and kill.source == "daily_loss", kill


@pytest.mark.parametrize(
    ("command", "args"),
    [("flatten", {"symbol": BTC}), ("kill", {"level": "flatten"})],
    ids=["flatten", "kill-flatten"],
)
async def test_a_second_of_a_clock_an_hour_ahead_does_not_stop_every_order_for_an_hour(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    args: dict[str, Any],
) -> None:
    """The clock is an hour ahead for one tick of the watch, then put right, and fresh quotes
    come again. Found: the engine's clock had taken the wall's hour and kept it, so every
    quote was an hour old to the checks: every order, a person's flatten and the kill
    switch's flatten too, was denied STALE_QUOTE for the hour."""
    v = await venue_engine(harnesses, data_dir, monkeypatch, qty=1.0, **WHOLE_BTC)
    h = v.h
    await hold_one_btc(v)
    v.clocks.step(3600)
    v.run(0.5)
    await v.tick()
    v.clocks.step(-3600)
    for _ in range(3):
        v.run(1)
        assert await v.quote(BTC, 60_000.0) is not None
    sent = len(h.sent)
    reply = await h.engine.command(command, {**args, "reason": "going home"})
    assert reply["ok"], reply
    assert len(h.sent) == sent + 1, h.intents()[-1]


async def test_a_clock_stepped_forward_does_not_rearm_a_breaker_before_its_cooldown(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    breakers = {"consecutive_losses": 1, "rearm": "auto", "cooldown_s": 300.0}
    v = await venue_engine(harnesses, data_dir, monkeypatch, safety={"breakers": breakers})
    h = v.h
    await v.quote(BTC, 60_000.0)
    script = h.core.slots[("alpha", BTC)].strategy.script
    script.append(buy())
    v.run(1)
    await v.quote(BTC, 60_000.0)
    v.run(1)
    await v.quote(BTC, 60_000.0)  # filled
    script.append(sell(exit_=True))
    v.run(1)
    await v.quote(BTC, 60_000.0)
    v.run(1)
    await v.quote(BTC, 60_000.0)  # closed at a loss (the spread): tripped
    (trip,) = h.breaker_rows("consecutive_losses", "alpha")
    assert trip["tripped"]
    v.clocks.step(3600)
    v.run(1)
    await v.tick()
    v.clocks.step(-3600)
    for _ in range(298):  # 299 s after the trip, on a quiet feed
        v.run(1)
        await v.tick()
    assert len(h.breaker_rows("consecutive_losses", "alpha")) == 1, "re-armed before 300 s"
    assert h.strategy_view("alpha")["paused"]
    v.run(1)
    await v.tick()
    rows = h.breaker_rows("consecutive_losses", "alpha")
    assert len(rows) == 2 and not rows[-1]["tripped"], rows


# --------------------------------------------------------------------------- what the cockpit shows


async def test_the_time_to_live_shown_counts_down_while_the_feed_is_quiet(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The approval expires on the engine's clock, which runs on between quotes; the
    snapshot's clock (what the cockpit, `cockpit approvals` and attach count the TTL down
    with) stood at the last quote: "expires in 29 s" for 30 s, then the approval was gone."""
    from cockpit.oneshot import format_approvals
    from cockpit.tui.approvals import engine_clock, ttl_seconds

    v = await venue_engine(harnesses, data_dir, monkeypatch)
    h = v.h
    await v.quote(BTC, 60_000.0)
    h.core.slots[("beta", BTC)].strategy.script.append(buy())
    v.run(1)
    await v.quote(BTC, 60_000.0)
    v.run(20)  # no quote since the request
    await v.tick()
    snap = h.engine.snapshot(trace=0, curve=0)
    (shown,) = snap["approvals"]
    assert ttl_seconds(shown, engine_clock(snap) or 0) == 10.0
    assert " 10s " in format_approvals(snap["approvals"], snap["now"])


def ticker(symbol: str, mid: float, ts: int) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "bid": mid - 0.5,
        "ask": mid + 0.5,
        "bidVolume": 5.0,
        "askVolume": 5.0,
        "timestamp": ts // 1_000_000,
    }


async def test_a_venue_that_stamped_ahead_and_fell_silent_does_not_hold_the_clock_ahead(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two venues (BTC on one, ETH on the other); BTC's sends one ticker stamped 50 s ahead
    (within the minute a stamp may lead its receipt) and then nothing. The engine's clock
    must follow the quotes still coming, or every ETH order is refused as stale for good."""
    v = await venue_engine(harnesses, data_dir, monkeypatch)
    h = v.h
    ex = type("Ex", (), {"id": "fake", "has": {}, "rateLimit": 50})()
    eth = CcxtMarketFeed("sim", ex, [ETH], transport="poll", clock_ns=v.clocks.wall_ns)
    eth._elapsed = v.clocks.elapsed_ns  # type: ignore[attr-defined]
    source = h.engine.source
    source.feeds = {"a": v.feed, "b": eth}
    source._venue_of = {BTC: "a", ETH: "b"}

    async def eth_quote() -> None:
        q = eth.accept(ETH, ticker(ETH, 3_000.0, v.true))
        assert q is not None
        await h.engine.process([q])

    await v.quote(BTC, 60_000.0)
    await eth_quote()
    v.run(1)
    q = v.feed.accept(BTC, ticker(BTC, 60_000.0, v.true + 50 * S))
    assert q is not None
    await h.engine.process([q])
    for _ in range(70):
        v.run(1)
        await eth_quote()
        await v.tick()
    h.core.slots[("alpha", ETH)].strategy.script.append(buy())
    v.run(1)
    await eth_quote()
    await h.engine.journal.flush()
    last = h.intents()[-1]
    assert last["outcome"] != "denied", [x for x in last["verdicts"] if not x["ok"]]
    assert h.sent and h.sent[-1].symbol == ETH
    # Rows stamped a venue's minute ahead, then earlier ones: the journal is still whole.
    stamps = [r.ts for r in read_rows(h.journal)]
    assert stamps != sorted(stamps)
    await h.stop()
    harnesses.remove(h)
    assert verify_journal(h.journal).ok
    again = await start(harnesses, data_dir)
    assert again.core.session == h.core.session + 1
    assert h.sent[-1].client_order_id in again.core.open_orders


# --------------------------------------------------------------------------- any steps at all

CLOCK_EXAMPLES = int(os.environ.get("COCKPIT_CLOCK_EXAMPLES", "20"))
STEPS = st.lists(
    st.tuples(
        st.floats(0.25, 4.0),  # seconds that pass
        st.one_of(st.just(0), st.integers(-7200, 7200)),  # then a step of the wall clock
    ),
    min_size=1,
    max_size=30,
)


async def _approve_after(data_dir: Path, steps: list[tuple[float, int]], at_s: float) -> Any:
    """A request, the wall clock stepped as ``steps`` say while time passes and the venue
    sends a ticker each second, then an approve ``at_s`` after the request: (reply, sent)."""
    started: list[Harness] = []
    with pytest.MonkeyPatch.context() as mp:
        try:
            v = await venue_engine(started, data_dir, mp)
            h = v.h
            await v.quote(BTC, 60_000.0)
            h.core.slots[("beta", BTC)].strategy.script.append(buy())
            v.run(1)
            await v.quote(BTC, 60_000.0)
            (pending,) = h.core.approvals.pending()
            left = round(at_s * S)
            for run_s, step_s in steps:
                dt = min(round(run_s * 1000) * 1_000_000, left)  # venues stamp in ms
                v.run(0, dt)
                left -= dt
                v.clocks.step(step_s)
                await v.quote(BTC, 60_000.0)
                await v.tick()
                if not left:
                    break
            v.run(0, left)
            reply = await h.engine.command("approve", {"id": pending.approval_id})
            return reply, list(h.sent)
        finally:
            for one in started:
                await one.stop()


@settings(
    max_examples=CLOCK_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=STEPS, at_s=st.floats(1.0, 60.0), late=st.booleans())
def test_no_step_of_the_wall_clock_moves_an_approvals_expiry(
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[tuple[float, int]],
    at_s: float,
    late: bool,
) -> None:
    """Whatever the wall clock does (stepped back or forward by up to two hours, any number of
    times), an approve 30 s or more after the request is an expiry and sends nothing, and
    one before is never called expired (to the millisecond: a venue's stamps are in ms)."""
    at_s = max(round(at_s, 3), 30.0) if late else min(round(at_s, 3), 29.999)
    data_dir = tmp_path_factory.mktemp("steps") / "data"
    reply, sent = asyncio.run(_approve_after(data_dir, steps, at_s))
    event("late" if late else "in time")
    if late:
        assert not sent and not reply["ok"] and "expired" in reply["message"], reply
    else:
        assert "expired" not in reply["message"], reply


def test_the_elapsed_clock_counts_a_suspend(monkeypatch: pytest.MonkeyPatch) -> None:
    """A laptop or VM suspended for an hour: on resume the last quote is an hour old. Linux's
    CLOCK_MONOTONIC stops while suspended (the last price would have looked a few seconds
    old); CLOCK_BOOTTIME counts it, and no one steps either."""
    import time

    from engine.venues import ccxt_market

    if not hasattr(time, "CLOCK_BOOTTIME"):
        pytest.skip("no CLOCK_BOOTTIME on this platform")
    asked: list[int] = []
    monkeypatch.setattr(ccxt_market.time, "clock_gettime_ns", lambda c: asked.append(c) or 7)
    assert ccxt_market.elapsed_ns() == 7
    assert asked == [time.CLOCK_BOOTTIME]


def test_an_hour_of_silence_behind_a_clock_stepped_back_counts_as_a_resync() -> None:
    """A venue without stamps (its quotes take their receipt time): after the clock is stepped
    back an hour every quote is `time_backwards` until the wall clock is past the last one
    taken. Found: the first one taken then looked like the stream going on (a second after
    the last by the wall clock), so no resync was counted and the venue broker did not
    reconcile after an hour without data."""
    clocks = Clocks(1_709_251_200 * S)
    ex = type("Ex", (), {"id": "fake", "has": {}, "rateLimit": 50})()
    feed = CcxtMarketFeed("sim", ex, [BTC], transport="poll", clock_ns=clocks.wall_ns)
    feed._elapsed = clocks.elapsed_ns  # type: ignore[attr-defined]
    tick = {"symbol": BTC, "bid": 99.0, "ask": 100.0, "bidVolume": 1.0, "askVolume": 1.0}
    assert feed.accept(BTC, tick) is not None
    clocks.step(-3600)
    for _ in range(3600):
        clocks.run(1)
        if feed.accept(BTC, tick) is not None:
            break
    assert feed.resyncs == 1


async def test_a_quote_stamped_yesterday_after_midnight_does_not_reopen_the_day(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BTC's venue crosses midnight first; ETH's, 2 s behind, sends tickers stamped 23:59:59
    after that, then its own midnight: one new day, its start equity taken once."""
    h = await start(harnesses, data_dir, qty=1.0, **WHOLE_BTC)
    v = Venue(h, Clocks(before_midnight(h, 60)), monkeypatch)
    ex = type("Ex", (), {"id": "fake", "has": {}, "rateLimit": 50})()
    eth = CcxtMarketFeed("sim", ex, [ETH], transport="poll", clock_ns=v.clocks.wall_ns)
    eth._elapsed = v.clocks.elapsed_ns  # type: ignore[attr-defined]
    source = h.engine.source
    source.feeds = {"a": v.feed, "b": eth}
    source._venue_of = {BTC: "a", ETH: "b"}
    await hold_one_btc(v)
    pf = h.core.portfolio
    day = pf.trading_day
    v.run(57.5)
    await v.quote(BTC, 61_000.0)  # 23:59:59.5
    v.run(1)
    await v.quote(BTC, 62_000.0)  # 00:00:00.5: the new day, started at the 61000 mark
    assert pf.trading_day == day + 1
    start_equity = pf.day_start_equity
    assert start_equity == CASH_AFTER_BUY + 61_000.0
    for _ in range(3):
        q = eth.accept(ETH, ticker(ETH, 3_000.0, v.true - 2 * S))  # yesterday, by its stamp
        assert q is not None
        await h.engine.process([q])
        assert pf.trading_day == day + 1
        assert pf.day_start_equity == start_equity
        v.run(1)
    await v.tick()
    assert (pf.trading_day, pf.day_start_equity) == (day + 1, start_equity)
