"""The cockpit driven by key against a real embedded engine.

The engine runs on the fast deterministic config and is not left to run freely: each test
feeds it an exact number of quotes (``engine.process``) so what the person sees is the same
on every run. Assertions read what is on screen (table cells, dialog text) and the engine's
own state.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Checkbox, Static

from cockpit.app import CockpitApp
from cockpit.tui.chain_screen import ChainScreen
from cockpit.tui.confirm_screen import ConfirmScreen
from cockpit.tui.filter_screen import FilterScreen
from cockpit.tui.flatten_screen import FlattenScreen
from cockpit.tui.help_screen import HelpScreen
from cockpit.tui.kill_screen import KillScreen
from cockpit.tui.rearm_screen import RearmScreen
from cockpit.tui.release_screen import ReleaseScreen
from cockpit.tui.strategy_screen import StrategyScreen
from cockpit.tui.view import LocalView
from engine.client import InProcessClient
from engine.runtime import Engine
from tests.conftest import default_dict, fast_config

FIXED_NOW = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
WIDE = (120, 40)
NARROW = (80, 24)
# Global loss breakers off by default so a test decides when the engine halts.
CALM = {"breakers": {"consecutive_losses": 1000}}


def fixed_clock() -> datetime:
    return FIXED_NOW


# The cockpit tests were written against the demo's 20-second bars and EMA(10/40): one approval
# at a time, each a few bars apart. They keep that market whatever the demo default becomes.
DEMO_BARS = {"simulated": {"history_timeframe_s": 20}}


def small_orders() -> list[dict[str, Any]]:
    """The default strategies on 20-second bars (EMA 10/40), each sized at 2% of equity: far
    from the position cap, so an approval's re-check does not turn on a tick of price movement."""
    sizing = {"model": "fixed_fraction", "fraction": 0.02}
    out = []
    for s in default_dict()["strategies"]:
        s = dict(s, sizing=sizing, timeframe_s=20)
        if s["kind"] == "ema_cross":
            s["params"] = {"fast": 10, "slow": 40}
        out.append(s)
    return out


async def start_engine(data_dir: Path, **sections: Any) -> Engine:
    sections.setdefault("safety", CALM)
    sections.setdefault("strategies", small_orders())
    sections.setdefault("market", DEMO_BARS)
    engine = Engine(fast_config(data_dir, auto=False, **sections), data_dir)
    await engine.start()
    engine._test_feed = engine.source.events()  # type: ignore[attr-defined]
    return engine


async def feed(engine: Engine, n: int) -> None:
    await engine.process(list(itertools.islice(engine._test_feed, n)))  # type: ignore[attr-defined]


async def feed_until(
    engine: Engine, done: Callable[[dict[str, Any]], Any], step: int = 50, limit: int = 40_000
) -> dict[str, Any]:
    """Feed quotes in small batches until ``done(snapshot)``; fails if it never happens."""
    for _ in range(limit // step):
        snap = engine.snapshot(trace=0, curve=0)
        if done(snap):
            return snap
        await feed(engine, step)
    raise AssertionError("the engine never reached the expected state")


def make_app(engine: Engine) -> CockpitApp:
    return CockpitApp(InProcessClient(engine), clock=fixed_clock)


async def ready(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, CockpitApp)
    for _ in range(200):
        if app.loaded.is_set():
            break
        await pilot.pause()
    assert app.loaded.is_set()
    await pilot.pause()


async def settle(pilot: Pilot[Any], engine: Engine) -> None:
    """Let the app apply every event the engine has published, then render. Events are shown
    once their journal rows are committed: wait for the commit first (a running engine's loop
    gets there by itself within milliseconds)."""
    app = pilot.app
    assert isinstance(app, CockpitApp)
    if engine.journal is not None:
        await engine.journal.flush()
    for _ in range(200):
        if app.view.seq >= engine.seq:
            break
        await pilot.pause()
    assert app.view.seq >= engine.seq
    await app.refresh_tables()
    await pilot.pause()


def plain(cell: Any) -> str:
    return cell.plain.strip() if isinstance(cell, Text) else str(cell).strip()


def static_text(app: CockpitApp, selector: str) -> str:
    content = app.screen.query_one(selector, Static).content
    return content.plain if isinstance(content, Text) else str(content)


def screen_text(app: CockpitApp) -> str:
    """The characters on the terminal for the active screen, line by line."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def outcome_of(app: CockpitApp, decision_id: str) -> str:
    return plain(app.main.trace.table.get_cell(decision_id, "outcome"))


def pending(engine: Engine) -> list[dict[str, Any]]:
    return engine.snapshot(trace=0, curve=0)["approvals"]


# ---------------------------------------------------------------------- approvals


@pytest.mark.parametrize("size", [WIDE, NARROW])
async def test_approve_selected_intent_by_key(data_dir: Path, size: tuple[int, int]) -> None:
    engine = await start_engine(data_dir)
    try:
        app = make_app(engine)
        async with app.run_test(size=size) as pilot:
            await ready(pilot)
            # The approval arrives while the cockpit is open: toast, bell, row, countdown.
            await feed_until(engine, lambda s: s["approvals"])
            await settle(pilot, engine)
            ap = pending(engine)[0]
            assert any(n.kind == "approval" for n in app.notices)
            assert app.bells >= 1
            table = app.main.approvals.table
            assert table.selected_key == ap["id"]
            assert ap["strategy"].startswith(
                plain(table.get_cell(ap["id"], "strategy")).rstrip("…")
            )
            assert plain(table.get_cell(ap["id"], "ttl")).endswith("s")
            detail = static_text(app, "#approvals-detail")
            assert ap["reason"][:20] in detail and "est fee" in detail
            assert outcome_of(app, ap["decision_id"]) == "awaiting approval"

            await pilot.press("a")
            await settle(pilot, engine)
            assert app.last_reply is not None and app.last_reply["ok"], app.last_reply
            assert not pending(engine)
            assert table.row_count == 0
            assert outcome_of(app, ap["decision_id"]) == "submitted"
            await feed(engine, 60)  # the paper broker fills on the next quotes
            await settle(pilot, engine)
            assert outcome_of(app, ap["decision_id"]) in ("filled", "partial fill")
    finally:
        await engine.stop()


async def test_reject_selected_intent_by_key(data_dir: Path) -> None:
    engine = await start_engine(data_dir)
    try:
        await feed_until(engine, lambda s: s["approvals"])
        ap = pending(engine)[0]
        app = make_app(engine)
        async with app.run_test(size=WIDE) as pilot:
            await ready(pilot)
            assert app.main.approvals.table.selected_key == ap["id"]
            await pilot.press("r")
            await settle(pilot, engine)
            assert app.last_reply is not None and app.last_reply["ok"]
            assert not pending(engine)
            assert outcome_of(app, ap["decision_id"]) == "rejected"
            strategy = next(
                s for s in engine.snapshot(trace=0)["strategies"] if s["id"] == ap["strategy"]
            )
            assert strategy["rejected"] == 1
            # Nothing left to act on: the key says so instead of sending anything.
            reply = app.last_reply
            await pilot.press("a")
            await pilot.pause()
            assert app.last_reply is reply
    finally:
        await engine.stop()


async def test_approval_expires_on_engine_time(data_dir: Path) -> None:
    engine = await start_engine(data_dir, safety={**CALM, "approval": {"ttl_s": 1}})
    try:
        app = make_app(engine)
        async with app.run_test(size=WIDE) as pilot:
            await ready(pilot)
            await feed_until(engine, lambda s: s["approvals"], step=5)
            await settle(pilot, engine)
            ap = pending(engine)[0]
            assert app.main.approvals.table.row_count == 1
            ttl = plain(app.main.approvals.table.get_cell(ap["id"], "ttl"))
            assert ttl in ("0s", "1s")
            # Feeding quotes advances the engine clock past the TTL.
            await feed_until(engine, lambda s: all(a["id"] != ap["id"] for a in s["approvals"]))
            await settle(pilot, engine)
            assert ap["id"] not in app.main.approvals.table._cells
            assert outcome_of(app, ap["decision_id"]) == "expired"
    finally:
        await engine.stop()


# ---------------------------------------------------------------------- kill switch


async def test_kill_and_release_by_key(data_dir: Path) -> None:
    engine = await start_engine(data_dir)
    try:
        await feed(engine, 200)
        app = make_app(engine)
        async with app.run_test(size=WIDE) as pilot:
            await ready(pilot)
            await pilot.press("k")
            await pilot.pause()
            assert isinstance(app.screen, KillScreen)
            assert app.screen.level == "halt"
            await pilot.press("up")  # halt -> entries
            assert app.screen.level == "entries"
            await pilot.press("down", "down")  # -> flatten
            assert app.screen.level == "flatten"
            await pilot.press("up")  # back to halt
            await pilot.press("enter")
            await settle(pilot, engine)
            assert not isinstance(app.screen, KillScreen)
            kill = engine.snapshot(trace=0)["kill_switch"]
            assert kill["engaged"] and kill["level"] == "halt"
            assert any(n.kind == "kill" for n in app.notices)
            assert "KILL HALT" in static_text(app, "#status")
            assert "HALTED" in static_text(app, "#safety-state")

            await pilot.press("R")
            await pilot.pause()
            assert isinstance(app.screen, ReleaseScreen)
            await pilot.press(*"release", "enter")  # wrong case: refused here, nothing sent
            await pilot.pause()
            assert "type RELEASE" in static_text(app, "#dialog-message")
            assert engine.snapshot(trace=0)["kill_switch"]["engaged"]
            confirm = app.screen.query_one("#confirm")
            confirm.value = ""  # type: ignore[attr-defined]
            await pilot.press(*"RELEASE", "tab", *"test done", "enter")
            await settle(pilot, engine)
            assert not isinstance(app.screen, ReleaseScreen)
            assert not engine.snapshot(trace=0)["kill_switch"]["engaged"]
            assert "kill switch off" in static_text(app, "#safety-state")
    finally:
        await engine.stop()


async def test_release_refused_while_condition_holds_then_override(data_dir: Path) -> None:
    engine = await start_engine(data_dir)
    try:
        await feed(engine, 100)
        await engine.engage_kill("halt", by="system", reason="daily loss", source="daily_loss")
        # The loss that engaged it still holds (a real one is walked in test_safety_engine).
        engine._release_condition = lambda: "daily loss 5.00% reached the limit 5.00% (KILL)"  # type: ignore[method-assign]
        app = make_app(engine)
        async with app.run_test(size=NARROW) as pilot:
            await ready(pilot)
            await pilot.press("R")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, ReleaseScreen)
            override = screen.query_one("#override", Checkbox)
            assert not override.has_class("-offered")
            await pilot.press(*"RELEASE", "tab", *"checked", "enter")
            await settle(pilot, engine)
            assert app.screen is screen  # refused: the dialog stays with the reason
            message = static_text(app, "#dialog-message")
            assert "condition still holds" in message and "KILL" in message
            assert override.has_class("-offered")
            assert engine.snapshot(trace=0)["kill_switch"]["engaged"]
            await pilot.press("tab", "space", "shift+tab", "enter")
            await settle(pilot, engine)
            assert override.value
            assert not engine.snapshot(trace=0)["kill_switch"]["engaged"]
            assert app.last_reply is not None and app.last_reply["ok"]
    finally:
        await engine.stop()


async def test_release_refused_while_the_kill_file_exists_and_no_override_offered(
    data_dir: Path,
) -> None:
    """A KILL file is lifted by deleting it, never by an override: the dialog names the file."""
    engine = await start_engine(data_dir)
    try:
        await feed(engine, 100)
        engine.kill_file.write_text("halt\n")
        await engine.enforce_kill_file()
        app = make_app(engine)
        async with app.run_test(size=NARROW) as pilot:
            await ready(pilot)
            await pilot.press("R")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, ReleaseScreen)
            override = screen.query_one("#override", Checkbox)
            await pilot.press(*"RELEASE", "tab", *"checked", "enter")
            await settle(pilot, engine)
            assert app.screen is screen
            message = static_text(app, "#dialog-message")
            assert str(engine.kill_file) in message and "delete it" in message
            assert not override.has_class("-offered")
            assert engine.snapshot(trace=0)["kill_switch"]["engaged"]
            engine.kill_file.unlink()
            await pilot.press("enter")
            await settle(pilot, engine)
            assert not engine.snapshot(trace=0)["kill_switch"]["engaged"]
    finally:
        await engine.stop()


# ---------------------------------------------------------------------- strategies


async def test_pause_and_resume_selected_strategy(data_dir: Path) -> None:
    engine = await start_engine(data_dir)
    try:
        await feed(engine, 100)
        app = make_app(engine)
        async with app.run_test(size=NARROW) as pilot:
            await ready(pilot)
            await pilot.press("4", "down")  # the safety pane; second strategy
            table = app.screen.query_one("#strategies-table")
            assert table.selected_key == "rsi_reversion"  # type: ignore[attr-defined]
            await pilot.press("p")
            await pilot.pause()
            assert isinstance(app.screen, StrategyScreen)
            await pilot.press("enter")
            await settle(pilot, engine)
            strategies = {s["id"]: s for s in engine.snapshot(trace=0)["strategies"]}
            assert strategies["rsi_reversion"]["paused"]
            assert not strategies["ema_cross"]["paused"]
            cell = table.get_cell("rsi_reversion", "state")  # type: ignore[attr-defined]
            assert plain(cell) == "PAUSED"

            await pilot.press("u", "enter")
            await settle(pilot, engine)
            strategies = {s["id"]: s for s in engine.snapshot(trace=0)["strategies"]}
            assert not strategies["rsi_reversion"]["paused"]
            cell = table.get_cell("rsi_reversion", "state")  # type: ignore[attr-defined]
            assert plain(cell) == "active"
    finally:
        await engine.stop()


# ---------------------------------------------------------------------- trace


async def test_filter_the_trace_by_key(data_dir: Path) -> None:
    engine = await start_engine(data_dir)
    try:
        await feed(engine, 12_000)  # the demo strategies trade 20 s bars
        app = make_app(engine)
        async with app.run_test(size=WIDE) as pilot:
            await ready(pilot)
            trace = app.main.trace
            before = trace.row_count
            strategies_seen = {e.strategy for e in app.view.trace.entries.values()}
            assert len(strategies_seen) >= 2 and before > 0
            await pilot.press("slash")
            await pilot.pause()
            assert isinstance(app.screen, FilterScreen)
            await pilot.press("down")  # strategy: the first one (alphabetical)
            await pilot.pause()
            first = app.screen.current().strategy
            assert first is not None
            shown = trace.table._order
            assert shown and trace.row_count < before
            assert {app.view.trace.get(k).strategy for k in shown} == {first}  # type: ignore[union-attr]
            # Outcome: pick "denied" from the third list.
            await pilot.press("tab", "tab")
            index = app.screen._outcomes.index("denied")
            await pilot.press(*["down"] * index)
            await pilot.press("enter")
            await pilot.pause()
            assert not isinstance(app.screen, FilterScreen)
            assert trace.filter.outcome == "denied" and trace.filter.strategy == first
            for key in trace.table._order:
                assert plain(trace.table.get_cell(key, "outcome")).startswith("denied")
            assert "outcome=denied" in str(trace.border_title)
            await pilot.press("x")
            await pilot.pause()
            assert trace.row_count == before
    finally:
        await engine.stop()


async def test_open_a_decisions_chain_by_key(data_dir: Path) -> None:
    engine = await start_engine(data_dir)
    try:
        await feed_until(engine, lambda s: s["counters"].get("fills", 0) >= 1)
        await feed(engine, 50)
        app = make_app(engine)
        async with app.run_test(size=NARROW) as pilot:
            await ready(pilot)
            await settle(pilot, engine)  # every event applied: no row arrives while we count
            filled = [e for e in app.view.trace.entries.values() if e.fills]
            assert filled
            target = filled[-1]
            await pilot.press("3")
            # The trace table is drawn at its refresh rate: count the rows once it has them all
            # (counting earlier, on a busy machine, moved the selection one row short).
            await app.refresh_tables()
            await pilot.pause()
            order = app.main.trace.table._order
            assert target.decision_id in order
            await pilot.press(*["down"] * order.index(target.decision_id))
            assert app.main.trace.selected_decision == target.decision_id
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, ChainScreen)
            text = static_text(app, "#chain")
            assert f"Decision {target.decision_id}" in text
            assert "inputs:" in text
            assert "✓ round_to_grid" in text  # every check's verdict
            intent_id = target.intents[-1]["intent"]["intent_id"]
            assert f"Intent {intent_id}" in text and f"Order {intent_id}" in text
            assert "fill " in text and "filled" in text
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, ChainScreen)
    finally:
        await engine.stop()


# ---------------------------------------------------------------------- flatten, quit, help


async def test_flatten_selected_symbol_with_confirm(data_dir: Path) -> None:
    engine = await start_engine(data_dir)
    try:
        snap = await feed_until(engine, lambda s: any(p["qty"] for p in s["positions"]))
        symbol = next(p["symbol"] for p in snap["positions"] if p["qty"])
        app = make_app(engine)
        async with app.run_test(size=WIDE) as pilot:
            await ready(pilot)
            await pilot.press("1")
            app.main.positions.query_one("#positions-table").select_key(symbol)  # type: ignore[attr-defined]
            await pilot.press("f")
            await pilot.pause()
            assert isinstance(app.screen, FlattenScreen)
            assert app.screen.symbol == symbol
            await pilot.press("enter")
            await settle(pilot, engine)
            assert app.last_reply is not None and app.last_reply["ok"], app.last_reply
            assert "flatten: 1 order(s) submitted" in app.last_reply["message"]
            await feed(engine, 60)
            await settle(pilot, engine)
            qty = {p["symbol"]: p["qty"] for p in engine.snapshot(trace=0)["positions"]}
            assert qty.get(symbol, 0.0) == 0.0
    finally:
        await engine.stop()


class _AttachedClient(InProcessClient):
    """The engine as an attached cockpit sees it: running in another process."""

    attached = True


async def test_an_attached_cockpit_quits_at_once_with_orders_open(data_dir: Path) -> None:
    """Quitting an attached cockpit lets go of the engine (its orders keep working there), so
    it does not ask, nor claim that quitting stops the engine."""
    engine = await start_engine(data_dir)
    try:
        await feed_until(engine, lambda s: s["approvals"])
        app = CockpitApp(_AttachedClient(engine), clock=fixed_clock)
        async with app.run_test(size=WIDE) as pilot:
            await ready(pilot)
            await pilot.press("a")
            await settle(pilot, engine)
            assert any(o["status"] in ("new", "pending_new") for o in engine.snapshot()["orders"])
            await pilot.press("q")
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmScreen)
        assert app.return_code == 0
    finally:
        await engine.stop()


@pytest.mark.parametrize("answer", ["y", "ctrl+q"])  # a second quit while asked quits at once
async def test_quit_asks_while_orders_are_open(data_dir: Path, answer: str) -> None:
    engine = await start_engine(data_dir)
    try:
        await feed_until(engine, lambda s: s["approvals"])
        app = make_app(engine)
        async with app.run_test(size=WIDE) as pilot:
            await ready(pilot)
            await pilot.press("a")  # approved and sent: open until the next quotes fill it
            await settle(pilot, engine)
            assert any(o["status"] in ("new", "pending_new") for o in engine.snapshot()["orders"])
            await pilot.press("q")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            assert "order(s) are still open" in static_text(app, "#confirm-body")
            await pilot.press("n")
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmScreen) and app.is_running
            await pilot.press("q")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press(answer)
            await pilot.pause()
        assert app.return_code == 0
    finally:
        await engine.stop()


async def test_quit_without_open_orders_is_immediate(data_dir: Path) -> None:
    engine = await start_engine(data_dir)
    try:
        app = make_app(engine)
        async with app.run_test(size=NARROW) as pilot:
            await ready(pilot)
            await pilot.press("q")
            await pilot.pause()
        assert not app.is_running
    finally:
        await engine.stop()


async def test_help_and_command_palette_list_the_actions(data_dir: Path) -> None:
    engine = await start_engine(data_dir)
    try:
        app = make_app(engine)
        async with app.run_test(size=NARROW) as pilot:
            await ready(pilot)
            await pilot.press("question_mark")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            help_text = screen_text(app)
            for words in ("Approve", "Kill switch", "RELEASE", "Pause", "Flatten", "Filter"):
                assert words in help_text
            await pilot.press("escape")
            await pilot.press("ctrl+p")
            await pilot.pause()
            await pilot.press(*"kill")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, KillScreen)
    finally:
        await engine.stop()


# ---------------------------------------------------------------------- layout and notices


async def test_layout_follows_the_terminal_size(data_dir: Path) -> None:
    engine = await start_engine(data_dir)
    try:
        await feed(engine, 300)
        app = make_app(engine)
        panes = ("market", "positions", "approvals", "orders", "trace", "safety", "chart")
        async with app.run_test(size=WIDE) as pilot:
            await ready(pilot)
            assert app.main.wide
            for pane in (*panes, "log-pane"):
                region = app.main.query_one(f"#{pane}").region
                assert region.width > 0 and region.height > 0, pane
            await pilot.resize_terminal(*NARROW)
            await pilot.pause()
            assert not app.main.wide
            strip = static_text(app, "#strip")
            for n, name in enumerate(("Market", "Approvals", "Trace", "Safety", "Chart", "Log"), 1):
                assert f"{n} {name}" in strip
                await pilot.press(str(n))
                await pilot.pause()
                shown = {
                    p for p in (*panes, "log-pane") if app.main.query_one(f"#{p}").region.height
                }
                expected = {
                    1: {"market", "positions", "orders"},
                    2: {"approvals"},
                    3: {"trace"},
                    4: {"safety"},
                    5: {"chart"},
                    6: {"log-pane"},
                }[n]
                assert shown == expected, (n, shown)
            await pilot.resize_terminal(*WIDE)
            await pilot.pause()
            assert app.main.wide
    finally:
        await engine.stop()


async def test_approval_key_shows_the_pane_first_when_hidden(data_dir: Path) -> None:
    engine = await start_engine(data_dir)
    try:
        await feed_until(engine, lambda s: s["approvals"])
        app = make_app(engine)
        async with app.run_test(size=NARROW) as pilot:
            await ready(pilot)
            await pilot.press("3")
            await pilot.press("a")  # approvals hidden: show them, do not act yet
            await pilot.pause()
            assert app.main.group == 2 and pending(engine)
            assert app.last_reply is None
            await pilot.press("a")
            await settle(pilot, engine)
            assert not pending(engine)
    finally:
        await engine.stop()


async def test_breaker_trip_is_noticed(data_dir: Path) -> None:
    engine = await start_engine(
        data_dir, safety={"breakers": {"consecutive_losses": 1000, "max_unreviewed_fills": 1}}
    )
    try:
        app = make_app(engine)
        async with app.run_test(size=WIDE) as pilot:
            await ready(pilot)
            await feed_until(engine, lambda s: any(b["tripped"] for b in s["breakers"]))
            await settle(pilot, engine)
            assert any(n.kind == "breaker" for n in app.notices)
            assert "tripped" in str(app.main.safety.border_title)
            rows = app.screen.query_one("#breakers-table")._order  # type: ignore[attr-defined]
            first = app.screen.query_one("#breakers-table").get_cell(rows[0], "status")  # type: ignore[attr-defined]
            assert plain(first) == "●"  # tripped breakers sort first
            # Re-arm it by key.
            tripped = [b for b in engine.snapshot(trace=0)["breakers"] if b["tripped"]]
            await pilot.press("b")
            await pilot.pause()
            assert isinstance(app.screen, RearmScreen)
            await pilot.press("enter")
            await settle(pilot, engine)
            assert app.last_reply is not None and app.last_reply["ok"], app.last_reply
            still = [b for b in engine.snapshot(trace=0)["breakers"] if b["tripped"]]
            assert len(still) == len(tripped) - 1
    finally:
        await engine.stop()


def test_panes_reach_the_engine_only_through_the_client_interface() -> None:
    """The app and every pane import nothing of the engine but ``engine.client`` and the
    words it speaks, ``engine.vocabulary`` (which imports nothing): the socket client must be
    able to stand in for the embedded engine."""
    code = (
        "import sys, pkgutil, importlib, cockpit.tui, cockpit.app\n"
        "for m in pkgutil.walk_packages(cockpit.tui.__path__, 'cockpit.tui.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(','.join(sorted(n for n in sys.modules if n.split('.')[0] == 'engine')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "engine,engine.client,engine.vocabulary"


# ---------------------------------------------------------------------- the local view


def test_view_skips_events_the_snapshot_already_had() -> None:
    view = LocalView()
    view.load({"seq": 10, "trace": [], "now": 0})
    notices = view.apply_events(
        [
            {"seq": 9, "event": "approval_requested", "ts": 1, "approval": {}},
            {"seq": 11, "event": "breaker", "ts": 2, "change": {"tripped": True, "breaker": "x"}},
            {"seq": 12, "event": "safety", "ts": 3, "what": "kill_switch", "after": {}},
            {
                "seq": 13,
                "event": "safety",
                "ts": 4,
                "what": "kill_switch",
                "after": {"kill_level": "halt"},
            },
        ]
    )
    assert [n.kind for n in notices] == ["breaker", "kill"]
    assert view.seq == 13


def test_trace_keeps_at_least_500_acting_decisions() -> None:
    view = LocalView()
    events = [
        {
            "seq": i,
            "event": "decision",
            "ts": i,
            "decision": {
                "decision_id": f"d{i}",
                "strategy_id": "s",
                "symbol": "X",
                "action": "buy" if i % 2 else "hold",
                "ts": i,
            },
        }
        for i in range(1, 3001)
    ]
    view.apply_events(events)
    rows = view.trace.rows(view_filter(), limit=10_000)
    assert len(rows) >= 500
    assert rows[0][0].decision_id == "d2999"  # newest first


def view_filter() -> Any:
    from cockpit.tui.view import TraceFilter

    return TraceFilter(outcome="acting")
