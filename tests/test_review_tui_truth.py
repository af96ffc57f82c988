"""Does the cockpit tell the truth? (review-tui)

The cockpit is a projection of the engine's events: a trader decides from what its panes show.
Each test is a pane found showing something untrue, or missing something the trader must see,
by driving the embedded and the attached cockpit (tmux, 120x40 and 80x24) and comparing every
pane with ``cockpit status --json`` and the journal; reproduced here through Textual's pilot
against the fake engine the other cockpit tests use, bounded in time.

Attacks that held (the panes agreed with ``status --json`` and the journal):

- the kill switch at entries, halt and flatten, then released (CLI, attached at 120x40): header,
  Safety line and log showed each level, REDUCING/HALTED/ACTIVE, who and why, as status did;
- the flatten's sell in the trace ("flatten by root: ..." filled) and the Orders pane after it;
- a cancel that lost the race to a fill: the order and the trace say "filled" (the last state);
- an approval answered, expired or superseded: the Approvals pane is the snapshot's list, the
  waiting count and toast follow the APPROVAL events (superseded ones included);
- a lowered limit's cancels: the audit line in the log carries the engine's "N cancelled";
- a strategy that raised or returned a malformed signal: error toast, bell, alert (the hang did
  not: fixed below);
- the engine stopped under an attached cockpit: DISCONNECTED in the header, venues "?",
  approvals' TTL "?", a toast and a log line (the resting limits' TTL did not: fixed below);
- an attached cockpit reconnected to the same run: events resumed, no duplicate or skipped
  seq (the view skips what the snapshot held);
- a fast stream of orders: the Orders pane is synced by key from the snapshot (gone rows
  removed, changed cells updated, order kept), open orders counted in its title;
- the 10 Hz light snapshot replaces positions, orders, approvals, the kill switch and
  breakers wholesale: nothing of them is kept from events that could go stale.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cockpit.app import CockpitApp
from cockpit.socket_client import SocketClient
from cockpit.tui.chain_screen import ChainScreen
from cockpit.tui.fleet import FleetMember
from cockpit.tui.fleet_app import FleetApp
from cockpit.tui.session import ClientSession, EmbeddedSession
from cockpit.tui.table import KeyedTable
from engine.alert_text import AlertText
from engine.control import ControlServer
from engine.runtime import Engine
from engine.vocabulary import EventKind
from tests.test_control import Collector, until
from tests.test_control_support import approve_config, short_dir
from tests.test_review_cockpit import ttl_cells
from tests.test_safety_engine import (
    BTC,
    Harness,
    harnesses,  # noqa: F401  (the fixture the watchdog test takes)
    start,
)
from tests.test_strategy_failure import paused_reason
from tests.test_strategy_watchdog import config as watchdog_config
from tests.test_tui import screen_text
from tests.test_tui_notices import EventClient, applied, toasts_on_screen
from tests.test_tui_venues import NOW, SEC, fixed_clock, order, ready

NARROW = (80, 24)
WIDE = (120, 40)


def make(client: EventClient) -> CockpitApp:
    return CockpitApp(client, table_interval=3600, chart_interval=3600)


def cell(table: KeyedTable, key: str, column: str) -> str:
    return str(table.get_cell(key, column)).strip()


def decision(did: str, symbol: str = "BTC/USDT") -> dict[str, Any]:
    return {
        "decision_id": did,
        "ts": NOW,
        "strategy_id": "ema_cross",
        "symbol": symbol,
        "venue": "binance",
        "action": "buy",
        "reason": "fast above slow",
        "confidence": 0.7,
        "inputs": {},
    }


def a_new_run_answers(client: Any) -> None:
    """The link comes back to another engine run: its events number from 1 again and the
    connection event says it restarted (the snapshot is the test's to set first)."""
    client.snap["seq"] = 1
    client.seq = 1
    client.push(
        {"event": EventKind.CONNECTION, "connected": True, "resync": True, "restarted": True}
    )


def submitted_buy(client: EventClient, did: str, coid: str) -> dict[str, Any]:
    """ema_cross's decision ``did`` and its submitted intent for a 0.01 BTC/USDT buy pushed;
    returns its order (``coid``), new, for the test to push as it goes on."""
    intent = {
        "intent_id": coid,
        "decision_id": did,
        "strategy_id": "ema_cross",
        "symbol": "BTC/USDT",
        "venue": "binance",
        "side": "buy",
        "qty": 0.01,
    }
    client.push({"event": EventKind.DECISION, "decision": decision(did)})
    client.push({"event": EventKind.INTENT, "intent": intent, "outcome": "submitted"})
    return {**order(coid, "BTC/USDT", "binance"), "intent_id": coid}


# -- a partial fill that was then cancelled ---------------------------------------------------


async def test_an_order_cancelled_after_a_partial_fill_does_not_read_as_nothing_traded() -> None:
    """A resting limit bought 40% of its quantity, then its time to live ran out (or the kill
    switch, or a lowered limit, cancelled the rest): the Orders pane said "canceled", dimmed,
    and the decision trace "canceled", as for an order that never traded; the position pane
    held 0.004 BTC the trader could not trace to anything. Both now say a part filled."""
    client = EventClient()
    app = make(client)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        did, coid = "d-pc", "in-pc"
        o = submitted_buy(client, did, coid)
        partial = {**o, "status": "partially_filled", "filled_qty": 0.004, "avg_fill_price": 99.0}
        client.push({"event": EventKind.ORDER, "order": partial})
        canceled = {**partial, "status": "canceled", "reason": "time to live expired"}
        client.push({"event": EventKind.ORDER, "order": canceled})
        client.snap["orders"] = [canceled]
        await applied(pilot, client)
        status = cell(app.main.orders.query_one(KeyedTable), coid, "status")
        assert status == "canceled 40% filled"
        assert app.view.trace.get(did).outcome() == ("partial", "partial, canceled")
        # an order cancelled with nothing filled is still just "canceled"
        client.snap["orders"] = [{**o, "status": "canceled"}]
        await app.refresh_tables()
        await pilot.pause()
        assert cell(app.main.orders.query_one(KeyedTable), coid, "status") == "canceled"


def test_a_fill_share_is_never_rounded_to_none_or_all() -> None:
    """0.2% filled read "partial 0%", 99.7% read "partial 100%" of an order still working."""
    from cockpit.tui.orders import status_label

    def label(status: str, filled: float) -> str:
        return status_label({"status": status, "qty": 1.0, "filled_qty": filled})

    assert label("partially_filled", 0.002) == "partial <1%"
    assert label("partially_filled", 0.997) == "partial >99%"
    assert label("partially_filled", 0.4) == "partial 40%"
    assert label("canceled", 0.002) == "canceled <1% filled"
    assert label("canceled", 0.0) == "canceled"
    assert label("filled", 1.0) == "filled"


# -- the link to the engine down ---------------------------------------------------------------


async def test_while_the_link_is_down_a_resting_limits_age_and_ttl_are_unknown_not_frozen() -> None:
    """The engine stopped under an attached cockpit with a limit resting with a time to live:
    the Orders pane kept "1s/59s left" for as long as the link was down (the engine's clock no
    longer arrives), on an order the engine had long cancelled. The approvals pane already
    said "?" for the same reason; the order's age and TTL now do too."""
    client = EventClient()
    o = {**order("in-ttl", "BTC/USDT", "binance"), "expire_ts": NOW + 59 * SEC}
    client.snap["orders"] = [o]
    app = make(client)
    async with app.run_test(size=WIDE) as pilot:
        await ready(pilot)
        table = app.main.orders.query_one(KeyedTable)
        assert cell(table, "in-ttl", "age") == "1s/59s left"
        client.snap["connection"] = {"connected": False, "message": "engine went away"}
        await app.refresh_tables()
        await pilot.pause()
        assert cell(table, "in-ttl", "age") == "?"
        client.snap["connection"] = {"connected": True}
        await app.refresh_tables()
        await pilot.pause()
        assert cell(table, "in-ttl", "age") == "1s/59s left"


# -- a symbol going stale ----------------------------------------------------------------------


async def test_a_symbol_whose_feed_went_stale_is_marked_in_market_watch() -> None:
    """The feed for BTC/USDT stopped: the engine tripped `stale_feed` on it and refused new
    orders there, but Market watch kept its last bid, ask, a green up-arrow and its trend, as
    live as the others: a trader read an old price as the market. The row now says STALE."""
    client = EventClient()
    app = make(client)
    async with app.run_test(size=WIDE) as pilot:
        await ready(pilot)
        table = app.main.market.query_one(KeyedTable)
        assert cell(table, "BTC/USDT", "spark") != "STALE"
        client.snap["breakers"] = [
            {
                "name": "stale_feed",
                "scope": "symbol:BTC/USDT",
                "tripped": True,
                "reason": "no quote for 6.0 s",
                "value": 6.0,
                "limit": 5.0,
            },
            {"name": "stale_feed", "scope": "symbol:ETH/USDT", "tripped": False},
        ]
        await app.refresh_tables()
        await pilot.pause()
        assert cell(table, "BTC/USDT", "spark") == "STALE"
        assert cell(table, "ETH/USDT", "spark") != "STALE"
        client.snap["breakers"][0]["tripped"] = False  # a fresh quote re-armed it
        await app.refresh_tables()
        await pilot.pause()
        assert cell(table, "BTC/USDT", "spark") != "STALE"


# -- a strategy paused by the system -----------------------------------------------------------


async def test_a_strategy_the_watchdog_interrupted_is_shown_and_alerted_as_failed(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """A trader's strategy hung; the watchdog interrupted it and the engine paused it ("strategy
    buggy did not return within 1 s and was interrupted ..."). The cockpit logged a quiet
    "buggy paused by system" warning, with no toast and no bell, and no `strategy_failed`
    alert went out: the failure test knew only "raised" and "returned". A strategy that raised
    is an error toast, the bell and an alert; one that hung is now the same."""
    h = await start(harnesses, data_dir, watchdog_config(data_dir))
    await h.feed(BTC, 60_000.0)
    h.core.slots[("buggy", BTC)].strategy.hang = "loop"
    await h.feed(BTC, 60_000.0)
    reason = paused_reason(h, "buggy")
    assert "did not return" in reason and "interrupted" in reason
    ev = {
        "event": EventKind.SAFETY,
        "what": "strategy",
        "subject": "buggy",
        "before": {"paused": False},
        "after": {"paused": True},
        "by": "system",
        "reason": reason,
    }
    alert = AlertText("[paper]").describe({"seq": 1, "ts": NOW, **ev})
    assert alert is not None and alert.title == "[paper] Strategy failed: buggy paused"
    client = EventClient()
    app = CockpitApp(client, table_interval=3600, chart_interval=3600)
    async with app.run_test(size=WIDE, notifications=True) as pilot:
        await ready(pilot)
        client.push(ev)
        await applied(pilot, client)
        await pilot.pause()
        assert [n.title for n in app.notices] == ["Strategy failed"]
        assert app.view.log[-1].level == "alert"


# -- an engine restart while attached ----------------------------------------------------------


def kill_event(level: str | None) -> dict[str, Any]:
    return {
        "event": EventKind.SAFETY,
        "what": "kill_switch",
        "subject": "",
        "before": {"kill_level": None},
        "after": {"kill_level": level},
        "by": "alice",
        "reason": "test",
    }


async def test_an_engine_restart_while_attached_is_said_and_the_old_runs_toasts_go() -> None:
    """Attached, with an approval waiting and the kill switch engaged (both toasts up), the
    engine restarted under another data dir: the new run had neither. The panes showed the new
    run, but the log said only "reconnected" (the same words as a blip of the same run) and
    the toasts kept saying "1 approval waiting" and "kill switch engaged" of a run that was
    gone. The log now says the engine restarted, and those toasts go."""
    client = EventClient()
    app = make(client)
    async with app.run_test(size=WIDE, notifications=True) as pilot:
        await ready(pilot)
        client.request(1)
        client.snap["kill_switch"] = {"engaged": True, "level": "halt", "by": "alice"}
        client.push(kill_event("halt"))
        await applied(pilot, client)
        shown = " | ".join(toasts_on_screen(app))
        assert "Approvals" in shown and "Kill switch" in shown, shown
        client.push({"event": EventKind.CONNECTION, "connected": False, "message": "gone"})
        # the new run: nothing waits, the switch is off, its events number from 1 again
        client.snap["approvals"] = []
        client.snap["kill_switch"] = {"engaged": False, "level": None, "by": "", "reason": ""}
        a_new_run_answers(client)
        await applied(pilot, client)
        for _ in range(5):
            await pilot.pause()
        shown = " | ".join(toasts_on_screen(app))
        assert "Approvals" not in shown and "Kill switch" not in shown, shown
        assert "the engine restarted" in app.view.log[-1].text


class SnapshotFails(EventClient):
    fail = False

    async def snapshot(self, trace: int = 500, curve: int = 600) -> dict[str, Any]:
        if self.fail:
            raise ConnectionError("the engine at /tmp/x.sock closed the connection")
        return await super().snapshot(trace, curve)


async def test_a_reconnect_whose_reload_failed_does_not_say_just_reconnected() -> None:
    """Events were missed while the link was down; the full snapshot pulled after the
    reconnect failed (the engine went again): the error was swallowed and the log said
    "reconnected", over a decision trace of before the gap. It now says the view could not be
    reloaded."""
    client = SnapshotFails()
    app = make(client)
    async with app.run_test(size=WIDE, notifications=True) as pilot:
        await ready(pilot)
        client.fail = True
        client.push({"event": EventKind.CONNECTION, "connected": True, "resync": True})
        for _ in range(20):
            await pilot.pause()
        last = app.view.log[-1]
        assert last.level == "error" and "could not be reloaded" in last.text, last


@pytest.fixture
def sock_dir() -> Any:
    with short_dir() as d:
        yield d


async def test_the_socket_client_says_when_another_engine_run_answers(
    data_dir: Path, sock_dir: Path
) -> None:
    """The connection event the cockpit reads after a reconnect names a restart (another run
    answers the socket), so the cockpit can say so; a blip of the same run is not one."""
    engine = Engine(approve_config(data_dir), data_dir)
    await engine.start()
    path = sock_dir / "e.sock"
    srv = ControlServer(engine, path)
    await srv.start()
    client = await SocketClient.open(path, backoff=(0.01, 0.05), command_timeout=0.2)
    got = Collector(client)
    try:
        for restart in (False, True):
            await srv.close()
            await until(lambda: not client.connected, "the disconnect")
            srv = ControlServer(engine, path)
            await srv.start()
            if restart:
                srv.instance = "another-run"  # what a restarted engine's server calls itself
            await until(lambda: client.connected, "the reconnect")
            want = 4 if restart else 2
            await until(lambda want=want: len(got.connection) == want, "the event")
        ups = [e for e in got.connection if e["connected"]]
        assert [e["restarted"] for e in ups] == [False, True]
    finally:
        await got.stop()
        await client.close()
        await srv.close()
        await engine.stop()


async def test_after_a_restart_the_equity_chart_is_the_new_runs_not_the_old_ones() -> None:
    """Attached to an engine at 100,000 equity; it restarted on another account (50,000, its
    own curve from the journal). The chart kept the old run's samples and drew the new run's
    equity after them: a 50% plunge that never happened, with the new run's own history
    hidden behind the old samples. After a reload the chart is the new run's curve."""
    client = EventClient()
    client.snap["portfolio"]["equity"] = 100_000.0
    app = make(client)
    async with app.run_test(size=WIDE) as pilot:
        await ready(pilot)
        for i in range(1, 4):
            client.snap["now"] = NOW + i * SEC
            await app.refresh_tables()
        assert {eq for _, eq in app.view.equity_curve(app._engine_curve)} == {100_000.0}
        client.push({"event": EventKind.CONNECTION, "connected": False, "message": "gone"})
        client.snap["portfolio"]["equity"] = 50_000.0
        client.snap["equity_curve"] = [[NOW - 60 * SEC, 49_000.0], [NOW + 3 * SEC, 50_000.0]]
        client.snap["now"] = NOW + 4 * SEC
        a_new_run_answers(client)
        await applied(pilot, client)
        for _ in range(5):
            await pilot.pause()
        curve = app.view.equity_curve(app._engine_curve)
        assert 100_000.0 not in {eq for _, eq in curve}, curve
        assert curve[0] == (NOW - 60 * SEC, 49_000.0)


async def test_a_fleet_member_that_restarted_is_said_and_its_curve_is_the_new_runs() -> None:
    """`cockpit attach --fleet`: the same restart of one engine read "reconnected" in its log,
    its chart kept the old run's curve, and a reload that failed was swallowed."""
    client = SnapshotFails()
    member = FleetMember("alpha", "/tmp/rt-alpha.sock", ClientSession(client))
    app = FleetApp([member], clock=fixed_clock)
    async with app.run_test(size=WIDE) as pilot:
        for _ in range(200):
            if member.view.loaded:
                break
            await pilot.pause(0.01)
        assert member.view.loaded
        client.push({"event": EventKind.CONNECTION, "connected": False, "message": "gone"})
        client.snap["equity_curve"] = [[NOW, 50_000.0]]
        a_new_run_answers(client)
        for _ in range(200):
            if member.view.log and "restarted" in member.view.log[-1].text:
                break
            await pilot.pause(0.01)
        assert "the engine restarted" in member.view.log[-1].text
        assert member.curve == [[NOW, 50_000.0]]
        client.fail = True
        client.push({"event": EventKind.CONNECTION, "connected": True, "resync": True})
        for _ in range(200):
            if any("could not be reloaded" in line.text for line in member.view.log):
                break
            await pilot.pause(0.01)
        assert any("could not be reloaded" in line.text for line in member.view.log)


# -- a breaker trip and re-arm -------------------------------------------------------------------


def breaker_event(name: str, scope: str, tripped: bool) -> dict[str, Any]:
    change = {"breaker": name, "scope": scope, "tripped": tripped, "reason": "no quote for 6 s"}
    return {"event": EventKind.BREAKER, "change": change}


async def test_a_breaker_toast_goes_once_every_tripped_breaker_is_re_armed() -> None:
    """BTC/USDT's feed went stale for a moment: "Breaker tripped" toasted, and stayed for its
    ten seconds after the fresh quote re-armed it; opened a dialog meanwhile, the trader got it
    back on closing the dialog, for the time it had left: a trip that was over. It goes once
    no breaker is tripped (as "kill switch engaged" goes on release); while another still is,
    it stays."""
    client = EventClient()
    app = make(client)
    async with app.run_test(size=WIDE, notifications=True) as pilot:
        await ready(pilot)
        client.push(breaker_event("stale_feed", "symbol:BTC/USDT", True))
        client.push(breaker_event("stale_feed", "symbol:ETH/USDT", True))
        await applied(pilot, client)
        assert any(t.startswith("Breaker tripped") for t in toasts_on_screen(app))
        client.push(breaker_event("stale_feed", "symbol:BTC/USDT", False))
        await applied(pilot, client)
        assert any(t.startswith("Breaker tripped") for t in toasts_on_screen(app))  # ETH still
        client.push(breaker_event("stale_feed", "symbol:ETH/USDT", False))
        await applied(pilot, client)
        for _ in range(5):
            await pilot.pause()
        assert not any(t.startswith("Breaker tripped") for t in toasts_on_screen(app))


# -- a chain left open -------------------------------------------------------------------------


async def test_an_open_decision_chain_follows_its_order_instead_of_freezing() -> None:
    """Enter on a decision whose limit rests: the chain showed "new, filled 0/0.01". The order
    filled while the trader read it, and the chain kept saying "new" (and "outcome submitted")
    until it was closed and opened again; the panes under it were right, but covered. It now
    follows the chain as the events arrive."""
    client = EventClient()
    app = make(client)
    async with app.run_test(size=WIDE) as pilot:
        await ready(pilot)
        did, coid = "d-open", "in-open"
        o = submitted_buy(client, did, coid)
        client.push({"event": EventKind.ORDER, "order": o})
        await applied(pilot, client)
        app.action_open_chain(did)
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ChainScreen)

        def shown() -> str:
            return str(screen.query_one("#chain").render())

        assert "filled 0/0.01" in shown()
        filled = {**o, "status": "filled", "filled_qty": 0.01, "avg_fill_price": 100.0}
        client.push({"event": EventKind.ORDER, "order": filled})
        for _ in range(100):
            if "filled 0.01/0.01" in shown():
                break
            await pilot.pause(0.05)
        assert "filled 0.01/0.01" in shown()


async def test_a_strategy_paused_by_its_own_failure_reads_failed_not_paused() -> None:
    """Ten seconds after the failure's toast, the Safety pane said "PAUSED" for a strategy
    whose code raised (or hung), the same word as for one a person paused for lunch or a
    breaker paused until it re-arms: the trader could not tell it will not trade again until
    someone fixes and resumes it. It now reads FAILED; the others still read PAUSED."""
    client = EventClient()
    reason = "strategy buggy did not return within 1 s and was interrupted (...) at mine.py:3"
    client.snap["strategies"] = [
        {"id": "alpha", "approval": "auto", "paused": True, "pause_reason": "lunch"},
        {"id": "buggy", "approval": "auto", "paused": True, "pause_reason": reason},
        {"id": "gamma", "approval": "auto", "paused": False, "pause_reason": ""},
    ]
    app = make(client)
    async with app.run_test(size=WIDE) as pilot:
        await ready(pilot)
        table = app.main.safety.query_one("#strategies-table", KeyedTable)
        assert cell(table, "alpha", "state") == "PAUSED"
        assert cell(table, "buggy", "state") == "FAILED"
        assert cell(table, "gamma", "state") == "active"


# -- the embedded engine's loop ended -----------------------------------------------------------


class EndedSession(EmbeddedSession):
    """An embedded engine whose loop ends at once (a replay feed finished), or raises."""

    def __init__(self, client: EventClient, error: Exception | None = None) -> None:
        super().__init__(cfg=None)
        self.client = client
        self.raises = error

    async def open(self) -> Any:
        return self.client

    async def run(self) -> None:
        await asyncio.sleep(0.05)
        if self.raises is not None:
            raise self.raises

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("error", [None, RuntimeError("the feed broke")])
async def test_an_embedded_engine_whose_loop_ended_is_not_shown_running(
    error: Exception | None,
) -> None:
    """The embedded cockpit on a replay that finished (or an engine loop that raised): one
    toast and a log line, then the header said ACTIVE with a green venue, and the approval's
    TTL stood still at "59m59s" (the engine's clock stopped with it) for as long as the
    cockpit stayed open. The header now says ENGINE STOPPED and the TTL is unknown."""
    client = EventClient()
    client.request(1)
    app = CockpitApp(session=EndedSession(client, error), table_interval=3600, chart_interval=3600)
    async with app.run_test(size=WIDE) as pilot:
        await ready(pilot)

        def said() -> bool:
            return any(
                "engine stopped" in line.text or "loop ended" in line.text for line in app.view.log
            )

        for _ in range(100):
            if said():
                break
            await pilot.pause(0.02)
        assert said()
        await app.refresh_tables()
        await pilot.pause()
        header = screen_text(app).splitlines()[0]
        assert "ENGINE STOPPED" in header, header
        assert ttl_cells(app.main.approvals.table) == ["?"]
