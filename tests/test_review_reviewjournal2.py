"""The journal as the engine's memory when the machine's clock went back (reviewjournal2).

A restart on a machine whose wall clock was stepped back (an NTP correction, a VM restored from
a snapshot, a container with a wrong clock) runs the engine's event time behind the journal's
last rows wherever quotes are stamped on this machine's clock (a venue's untimed books and
tickers) or start again from a file (a replay begun again on a data directory that ran later).
The breaker board's clock, rebuilt from the journal, stayed in the future.

Found (each test below failed on main):
- a breaker with ``rearm = "auto"`` tripped after such a restart counted the step as cooldown
  served: re-armed at the next tick ("after the 300 s cooldown", 1 s after the trip) and the
  strategy traded on (test_an_auto_cooldown_is_not_served_by_a_clock_that_went_back);
- on one clock (a replay, a simulated market's events) every symbol tripped ``stale_feed`` at
  once ("no quote for BTC/USDT in 3598 s" while a quote arrived every second) and stayed
  blocked until the events caught up with the journal (a replay of an older file: to its end);
  (test_quotes_after_the_clock_went_back_are_not_stale)
- a trip restored from the journal kept its cooldown counting from a time in the future: not
  re-armed for the length of the step on top of its cooldown (a replay's years: never)
  (test_a_restored_trip_re_arms_a_cooldown_after_the_clock_went_back);
- so no order went out for the length of the step; and with the stale trips mended alone the
  orders of the minute before the stop would have counted against ``orders_per_minute`` for
  the length of the step rather than a minute. Held both ways: they count for a whole minute
  from the step, not less (test_a_window_from_before_the_step_lasts_one_window), then leave
  (test_a_window_from_before_the_step_leaves_after_one_window);
- the order throttle likewise denied every order THROTTLE_STRATEGY for the length of the step
  (an hour) where its window held orders from before it
  (test_the_order_throttle_counts_a_whole_window_from_the_step_then_lets_go).
- `cockpit audit` / `cockpit journal` with --since or --until did not look for a row deleted
  just before the first row read or just after the last: the first audit row at --since, or
  (rows stamped an hour back after the step) the last one inside --until, deleted read as a
  clean trail (test_a_row_deleted_inside_a_time_window_stops_the_reader). A row "before" in
  seq is not before in time once the clock went back; any row missing now stops the reader.
- a position's time stop, counted from its entry stamped "in the future", was held back by the
  step (an hour) (test_a_time_stop_is_not_held_back_by_a_clock_gone_back); on bars no exit of
  it was judged at all, its stop-loss included, until the bars passed its entry (a replay of
  an older bar file: never) (test_a_stop_loss_on_bars_is_judged_after_a_clock_gone_back).
- a resting limit's time to live, its expiry stamped on the clock before the step, kept it
  working for the step's length (an hour past its 30 s)
  (test_a_limits_time_to_live_is_not_lengthened_by_a_clock_gone_back).

What the fix does: a tick more than CLOCK_BACK_NS (two minutes) plus ``stale_after`` behind
the breaker board's clock, or a throttle count that far behind the window's newest order, is the
clock gone back (past any two venues' disagreement: a stamp up to a minute ahead of receipt, up
to ``stale_after`` behind it). What was stamped after it is taken to have happened then: each
cooldown runs whole from it, each window keeps those entries a whole window from it (never
less), each symbol's last quote is then. A trip stamped behind the board's clock counts its
cooldown from the board's clock (never less; the property
test_a_cooldown_after_a_step_back_is_never_shorter_and_never_held_past_the_step covers steps
from 0 to 48 h, inside the allowance and beyond it). The history reader checks for a missing
row before the first and after the last row it reads whatever the window. Each position's exits
count the time held on from what it was at the step (ExitState.shift; ``entry_ts`` stays the
journal's, so a later restart still matches its exits rows); each working limit's expiry and
created time move back with the clock (what was left of its time to live runs on).

Tried and found holding:
- the kill switch and a manual breaker's trip stay latched across a restart a month back
  (test_the_kill_switch_and_a_manual_trip_stay_latched_on_a_clock_gone_back);
- the simulated market continues after the journal's last row whatever the wall clock says
  (engine.sources), and a venue engine's start is at or after it;
- the portfolio's day never goes back (tests/test_review_clocks.py): a step back across
  midnight neither resets the daily loss limit's day start nor ends a release override early
  (its day is restored and its roll waits for the next midnight);
- approval requests pending at the stop are expired at the restart whatever the clock;
- losing streaks, rejects in a row, the slippage window, unreviewed fills and the canary's
  count are counts, not windows: a clock step neither resets nor widens them;
- rows stamped behind earlier ones verify, a start takes them, `cockpit journal` reads them in
  seq order (tests/test_review_clocks.py);
- a journal of a newer format is refused by a start and by `cockpit verify`; a start in another
  mode, or with a venue name now naming another exchange, is refused (tests/test_review_live.py);
- the clock forward by a day (a suspend): a paced market runs on the monotonic clock (the
  suspend does not count), a venue's clock on the elapsed one (it does): approvals and limits'
  times to live run out, stale feeds trip, an auto cooldown is served, the day rolls; the only
  orders that follow are a strategy's or a due exit's on the first fresh quote, as documented.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.types import CLOCK_BACK_NS, Action, Bar, LimitSpec, Signal
from engine.vocabulary import JOURNAL_FILE, ExitCode
from tests.test_breakers import board
from tests.test_history_cli import T0, audit_payload, cli, write_journal
from tests.test_safety_engine import BTC, ETH, Harness, S, buy, scripted_config, sell, strategy

HOUR = 3600 * S


def _cfg(data_dir: Path, **breakers: Any) -> Any:
    return scripted_config(data_dir, strategies=[strategy("alpha", "auto", 0.01, **breakers)])


def _tripped(h: Harness, name: str) -> bool:
    return any(c.breaker == name for c in h.core.breakers.tripped())


async def _venue_feed(h: Harness, symbol: str, mid: float, dt: float = 1.0) -> int:
    """A quote as a venue engine takes it: the venue's clock handed to the core first."""
    h.core.set_venue_clocks({"sim": h.t + round(dt * S)}, {BTC: "sim", ETH: "sim"})
    return await h.feed(symbol, mid, dt=dt)


async def _tick(h: Harness, now: int, *, venue: bool = False) -> None:
    if venue:
        h.core.set_venue_clocks({"sim": now}, {BTC: "sim", ETH: "sim"})
    await h.publish(h.core.tick(now))


def _last_intent(h: Harness) -> tuple[str, list[str]]:
    p = h.intents()[-1]
    return p["outcome"], [v["code"] for v in p["verdicts"] if not v["ok"]]


async def test_an_auto_cooldown_is_not_served_by_a_clock_that_went_back(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, breakers={"consecutive_losses": 1, "rearm": "auto", "cooldown_s": 300})
    h = await Harness.start(cfg, tmp_path)
    await _venue_feed(h, BTC, 60_000.0)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    await _venue_feed(h, BTC, 60_000.0)
    stop_t = h.t
    await h.stop()
    h = await Harness.start(cfg, tmp_path)
    try:
        h.t = stop_t - HOUR  # the machine's clock an hour back: untimed quotes stamped on it
        await _venue_feed(h, BTC, 60_000.0)
        await h.signal("alpha", BTC, sell(), 59_000.0)
        trip = await _venue_feed(h, BTC, 59_000.0)  # the losing close fills: trips
        assert _tripped(h, "consecutive_losses")
        await _tick(h, trip + 300 * S - 1, venue=True)
        assert _tripped(h, "consecutive_losses")  # 1 ns short of the cooldown
        h.t = trip + 298 * S  # the next quote (299 s after the trip) brings a buy
        await h.signal("alpha", BTC, buy(), 59_000.0)
        assert _last_intent(h)[0] == "denied"
        await _tick(h, trip + 300 * S, venue=True)
        assert not _tripped(h, "consecutive_losses")  # at it
    finally:
        await h.stop()


async def test_quotes_after_the_clock_went_back_are_not_stale(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    h = await Harness.start(cfg, tmp_path)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    stop_t = h.t
    await h.stop()
    h = await Harness.start(cfg, tmp_path)
    try:
        h.t = stop_t - HOUR  # a replay begun again, a clock stepped back: one clock
        for _ in range(3):
            await h.feed(BTC, 60_000.0)
            last_eth = await h.feed(ETH, 3_000.0, dt=0.5)
        assert not h.breaker_rows("stale_feed"), h.breaker_rows("stale_feed")
        await h.signal("alpha", BTC, buy(), 60_000.0)
        assert _last_intent(h) == ("submitted", [])
        # ETH falls silent: stale once its age passes 5 s on the clock now, not before.
        await _tick(h, last_eth + 5 * S)
        assert not h.breaker_rows("stale_feed")
        await _tick(h, last_eth + 5 * S + 1)
        assert [c["scope"] for c in h.breaker_rows("stale_feed")] == ["symbol:ETH/USDT"]
    finally:
        await h.stop()


async def test_a_restored_trip_re_arms_a_cooldown_after_the_clock_went_back(
    tmp_path: Path,
) -> None:
    cfg = _cfg(tmp_path, breakers={"consecutive_losses": 1, "rearm": "auto", "cooldown_s": 300})
    h = await Harness.start(cfg, tmp_path)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, sell(), 59_000.0)
    await h.feed(BTC, 59_000.0)
    assert _tripped(h, "consecutive_losses")
    stop_t = h.t
    await h.stop()
    h = await Harness.start(cfg, tmp_path)
    try:
        assert _tripped(h, "consecutive_losses")  # latched across the restart
        h.t = stop_t - 400 * 24 * HOUR  # a replay of last year's file on this data directory
        back = await h.feed(BTC, 59_000.0)
        assert _tripped(h, "consecutive_losses")
        await _tick(h, back + 300 * S - 1)
        assert _tripped(h, "consecutive_losses")  # the whole cooldown again, not less
        await _tick(h, back + 300 * S)
        assert not _tripped(h, "consecutive_losses")  # and not forever
    finally:
        await h.stop()


async def _two_orders_then_an_hour_back(tmp_path: Path, cfg: Any = None) -> tuple[Harness, int]:
    """Two orders (by default under orders_per_minute = 3), a stop, and a restart whose clock
    is an hour behind (a venue's untimed quotes on a clock stepped back): the restarted
    harness and the time of its first quote."""
    cfg = cfg or _cfg(tmp_path, breakers={"orders_per_minute": 3})
    h = await Harness.start(cfg, tmp_path)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    await h.signal("alpha", BTC, sell(), 60_000.0)
    stop_t = h.t
    await h.stop()
    h = await Harness.start(cfg, tmp_path)
    try:
        h.t = stop_t - HOUR
        return h, await h.feed(BTC, 60_000.0)
    except BaseException:
        await h.stop()
        raise


async def test_a_window_from_before_the_step_lasts_one_window(tmp_path: Path) -> None:
    h, _ = await _two_orders_then_an_hour_back(tmp_path)
    try:
        # Within a minute of the step the two orders before the stop still count: 3 is the
        # limit, the 2nd one now is the 4th in the window and trips.
        await h.signal("alpha", BTC, buy(), 60_000.0)
        assert not _tripped(h, "orders_per_minute")
        await h.signal("alpha", BTC, sell(), 60_000.0)
        assert _tripped(h, "orders_per_minute")
    finally:
        await h.stop()


async def test_a_window_from_before_the_step_leaves_after_one_window(tmp_path: Path) -> None:
    h, back = await _two_orders_then_an_hour_back(tmp_path)
    try:
        h.t = back + 60 * S - S  # a minute after the step the two before it have left
        for sig in (buy(), sell(), buy()):
            await h.signal("alpha", BTC, sig, 60_000.0)
            assert _last_intent(h)[0] == "submitted"
        assert not _tripped(h, "orders_per_minute")
    finally:
        await h.stop()


async def test_the_order_throttle_counts_a_whole_window_from_the_step_then_lets_go(
    tmp_path: Path,
) -> None:
    cfg = scripted_config(
        tmp_path,
        strategies=[strategy("alpha", "auto", 0.01)],
        risk={"strategy_throttle": {"max_orders": 2, "per_seconds": 60}},
    )
    h, _ = await _two_orders_then_an_hour_back(tmp_path, cfg)
    try:
        first = await h.signal("alpha", BTC, buy(), 60_000.0)
        # The two before the stop still count: from this first order after the step...
        assert _last_intent(h) == ("denied", ["THROTTLE_STRATEGY"])
        h.t = first + 58 * S
        await h.signal("alpha", BTC, buy(), 60_000.0)  # ...59 s on, still
        assert _last_intent(h) == ("denied", ["THROTTLE_STRATEGY"])
        await h.signal("alpha", BTC, buy(), 60_000.0)  # a minute on, not an hour: gone
        assert _last_intent(h) == ("submitted", [])
    finally:
        await h.stop()


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / S, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("deleted", "window"),
    [
        # the first audit row at --since (inclusive): rows 5.. are at T0+4 s on
        (5, ("--since", _iso(T0 + 4 * S))),
        # the last row stamped an hour back, inside --until (rows 11-20 are stamped before T0,
        # rows 6-10 and 21 at or after --until): nothing read follows it
        (20, ("--until", _iso(T0 + 5 * S))),
        # the first row stamped after the step, inside a --since/--until window of its hour
        (11, ("--since", _iso(T0 - HOUR + 10 * S), "--until", _iso(T0 - HOUR + 15 * S))),
    ],
)
def test_a_row_deleted_inside_a_time_window_stops_the_reader(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    deleted: int,
    window: tuple[str, ...],
) -> None:
    # Ten rows, then a restart on a clock an hour back: ten rows stamped before the first ten;
    # then one after the clock caught up (row 21, T0 + 100 s).
    rows = [("audit", (T0 if i < 10 else T0 - HOUR) + i * S, audit_payload(i)) for i in range(20)]
    rows.append(("audit", T0 + 100 * S, audit_payload(20)))
    path = tmp_path / JOURNAL_FILE
    write_journal(path, rows)
    d = ("--data-dir", str(tmp_path))
    code, out, err = cli(capsys, "audit", *window, *d)
    assert code == ExitCode.OK and out, err  # untouched: read
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM journal WHERE seq = ?", (deleted,))
    conn.commit()
    conn.close()
    code, out, err = cli(capsys, "audit", *window, *d)
    assert code == ExitCode.FAILURE and out == "" and err.count("\n") == 1, (out, err)
    assert "missing (deleted?)" in err and "cockpit verify" in err


COOLDOWN = 300 * S


@settings(max_examples=150, deadline=None)
@given(
    back=st.integers(0, 48 * HOUR),
    after=st.integers(0, 10 * S),
    stale_s=st.sampled_from([1.0, 5.0, 600.0]),
)
def test_a_cooldown_after_a_step_back_is_never_shorter_and_never_held_past_the_step(
    back: int, after: int, stale_s: float
) -> None:
    """Wherever the clock steps back to, before or after the board's last observation: an auto
    cooldown tripped after the step runs whole on the clock after it (never re-armed earlier),
    and is re-armed within the step's allowance (CLOCK_BACK_NS + stale_after) past that, not
    held for the length of the step (or forever)."""
    bb = board(
        a={"consecutive_losses": 1, "rearm": "auto", "cooldown_s": 300},
        market={"validation": {"stale_after_s": stale_s}},
    )
    t = T0 + 48 * HOUR
    bb.on_signal("a", t)  # the journal's last observation (a restart replays it)
    trip_ts = t - back + after
    tripped = bb.on_round_trip("a", -1.0, 1000.0, trip_ts)
    assert any(c.tripped and c.breaker == "consecutive_losses" for c in tripped)
    allowance = CLOCK_BACK_NS + round(stale_s * S)
    rearmed = None
    for k in range(1, 300 + allowance // S + 3):
        now = trip_ts + k * S
        if any(not c.tripped for c in bb.on_clock(now)):
            rearmed = now
            break
    assert rearmed is not None, "held past the step's allowance"
    assert rearmed - trip_ts >= COOLDOWN
    assert rearmed - trip_ts <= COOLDOWN + allowance + S


async def test_the_kill_switch_and_a_manual_trip_stay_latched_on_a_clock_gone_back(
    tmp_path: Path,
) -> None:
    """Held (no fix needed): the latched state does not depend on the clock."""
    cfg = _cfg(tmp_path, breakers={"consecutive_losses": 1})  # rearm manual (the default)
    h = await Harness.start(cfg, tmp_path)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, sell(), 59_000.0)
    await h.feed(BTC, 59_000.0)
    assert _tripped(h, "consecutive_losses")
    await h.engine.engage_kill("entries", by="alice", reason="test", source="test")
    stop_t = h.t
    await h.stop()
    h = await Harness.start(cfg, tmp_path)
    try:
        h.t = stop_t - 30 * 24 * HOUR
        for _ in range(3):
            await h.feed(BTC, 59_000.0, dt=400.0)
        await _tick(h, h.t + 3 * HOUR)
        assert _tripped(h, "consecutive_losses")
        assert h.core.safety.kill.level == "entries"
        await h.signal("alpha", BTC, buy(), 59_000.0)
        assert _last_intent(h)[0] == "denied"
    finally:
        await h.stop()


def _time_stops(h: Harness) -> list[int]:
    return [r.ts for r in h.rows("decision") if r.payload["decision"].get("rule") == "time_stop"]


async def test_a_time_stop_is_not_held_back_by_a_clock_gone_back(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, exits={"time_stop_bars": 3})  # timeframe 1 s: due 3 s after entry
    h = await Harness.start(cfg, tmp_path)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    await h.feed(BTC, 60_000.0)  # filled: held from here
    assert h.core.slots[("alpha", BTC)].exits is not None
    stop_t = await h.feed(BTC, 60_000.0)  # 1 s held at the stop
    assert not _time_stops(h)
    await h.stop()
    h = await Harness.start(cfg, tmp_path)
    try:
        h.t = stop_t - HOUR
        step = await h.feed(BTC, 60_000.0)
        assert not _time_stops(h)  # not due at once: held 1 s before the stop
        for _ in range(3):
            await h.feed(BTC, 60_000.0)
        # Due 3 s (held before the stop, then after the step) on: not an hour later.
        assert _time_stops(h) and _time_stops(h)[0] <= step + 3 * S
    finally:
        await h.stop()


async def test_a_stop_loss_on_bars_is_judged_after_a_clock_gone_back(tmp_path: Path) -> None:
    """Bars (a replay of a bar file begun on a data directory that ran later): on main no exit
    of a position entered "after" the bar was judged at all until the bars passed its entry."""
    cfg = _cfg(tmp_path, exits={"stop_loss_pct": 1.0})
    h = await Harness.start(cfg, tmp_path)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    await h.feed(BTC, 60_000.0)
    assert h.core.slots[("alpha", BTC)].exits is not None
    stop_t = h.t
    await h.stop()
    h = await Harness.start(cfg, tmp_path)
    try:
        t = stop_t - HOUR
        for k, low in enumerate((59_900.0, 59_900.0, 58_000.0, 58_500.0)):  # 3rd: through it
            bar = Bar(BTC, t + k * S, 1, 60_000.0, 60_100.0, low, low + 100.0, 10.0)
            await h.engine.process([bar])
            await h.engine.journal.flush()
        stops = [
            r.payload["decision"]["rule"]
            for r in h.rows("decision")
            if r.payload["decision"].get("rule") == "stop_loss"
        ]
        assert stops == ["stop_loss"]
    finally:
        await h.stop()


async def test_a_limits_time_to_live_is_not_lengthened_by_a_clock_gone_back(
    tmp_path: Path,
) -> None:
    """A 30 s limit rests; 5 s later the engine stops and starts on a clock an hour back (a
    venue's untimed quotes stamped on it). On main it kept working for the hour."""
    cfg = _cfg(tmp_path)
    h = await Harness.start(cfg, tmp_path)
    await h.feed(BTC, 60_000.0)
    rest = Signal(
        Action.BUY, "scripted", "rest", 1.0, limit=LimitSpec(offset_ticks=100, ttl_s=30.0)
    )
    await h.signal("alpha", BTC, rest, 60_000.0)
    (coid,) = h.core.open_orders
    for _ in range(5):
        await h.feed(BTC, 60_000.0)
    stop_t = h.t
    await h.stop()
    h = await Harness.start(cfg, tmp_path)
    try:
        assert coid in h.core.open_orders  # restored, resting
        h.t = stop_t - HOUR
        step = await h.feed(BTC, 60_000.0)
        while h.t < step + 24 * S:  # at least what was left of its 30 s at the stop
            await h.feed(BTC, 60_000.0)
            assert coid in h.core.open_orders, (h.t - step) / S
        while h.t < step + 31 * S:
            await h.feed(BTC, 60_000.0)
        assert coid not in h.core.open_orders  # by its 30 s from the step, not an hour
        (cancel,) = [
            r.payload["order"]
            for r in h.rows("order")
            if r.payload["order"]["client_order_id"] == coid
            and r.payload["order"]["status"] == "canceled"
        ]
        assert "time to live 30s ran out" in cancel["reason"]
    finally:
        await h.stop()
