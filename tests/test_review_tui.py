"""A third review of the cockpit, driven as a trader would (tmux, 120x40 and 80x24) and then
as an attacker would. Each test pins a hole found that way; all are bounded (a fake engine's
event stream, a few key presses)."""

from __future__ import annotations

from typing import Any

import pytest
from rich.text import Text
from textual.widgets import Input, Static

from cockpit.app import CockpitApp
from cockpit.tui.arm_screen import ArmLiveScreen
from cockpit.tui.confirm_screen import ConfirmScreen
from cockpit.tui.fleet import DISCONNECTED, EnginesPane, FleetKillScreen, FleetMember
from cockpit.tui.fleet_app import FleetApp
from cockpit.tui.help_screen import HelpScreen
from cockpit.tui.kill_screen import KillScreen
from cockpit.tui.palette import CockpitCommands
from engine.vocabulary import EventKind
from tests.test_fleet_snapshots import Unreachable
from tests.test_review_cockpit import burst, disconnected_with
from tests.test_tui import fixed_clock, static_text
from tests.test_tui_notices import NARROW, WIDE, EventClient, applied, toasts_on_screen
from tests.test_tui_small import CountingSession
from tests.test_tui_venues import make_app, ready


def kill_switch(level: str | None, by: str = "alice") -> dict[str, Any]:
    """The SAFETY event the engine emits when the kill switch is engaged (a level) or released."""
    before = {"kill_level": None if level else "halt"}
    return {
        "event": EventKind.SAFETY,
        "what": "kill_switch",
        "before": before,
        "after": {"kill_level": level},
        "by": by,
        "reason": "review",
    }


@pytest.mark.parametrize("size", [NARROW, WIDE])
async def test_the_kill_switch_toast_goes_when_the_switch_is_released(
    size: tuple[int, int],
) -> None:
    """Kill, then release within the toast's 10 s: "kill switch engaged" stayed on screen
    beside a header that said "kill switch off" (and came back after every dialog)."""
    client = EventClient()
    app = make_app(client)
    async with app.run_test(size=size, notifications=True) as pilot:
        await ready(pilot)
        client.push(kill_switch("halt"))
        await applied(pilot, client)
        assert any(t.startswith("Kill switch:") for t in toasts_on_screen(app))
        client.push(kill_switch(None))
        await applied(pilot, client)
        assert not any(t.startswith("Kill switch:") for t in toasts_on_screen(app))
        await pilot.press("question_mark")  # a dialog opens and closes: it does not come back
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.pause()
        assert not any(t.startswith("Kill switch:") for t in toasts_on_screen(app))


async def test_a_toast_a_dialog_took_down_comes_back_for_the_time_it_had_left() -> None:
    """A toast up for 9 of its 10 s, covered by a dialog, came back for 10 s more: opening
    a dialog every few seconds kept a notice up for ever, long after what it said was over."""
    client = EventClient()
    app = make_app(client)
    async with app.run_test(size=WIDE, notifications=True) as pilot:
        await ready(pilot)
        client.trip("rolling_loss")
        await applied(pilot, client)
        burst = app.toasts._bursts["breaker"]
        assert burst.shown is not None and burst.shown.timeout == 10
        burst.shown.raised_at -= 9  # on screen for 9 s already: 1 s left
        await pilot.press("question_mark")
        await pilot.pause()
        assert toasts_on_screen(app) == []  # no toast over a dialog
        await pilot.press("escape")
        await pilot.pause()
        await pilot.pause()
        assert any(t.startswith("Breaker tripped:") for t in toasts_on_screen(app))
        shown = app.toasts._bursts["breaker"].shown
        assert shown is not None and shown.time_left <= 3.0  # what it had left, at least 2 s
        client.trip("rolling_loss")  # news: shown for its whole time again
        await applied(pilot, client)
        shown = app.toasts._bursts["breaker"].shown
        assert shown is not None and shown.time_left > 9.0


def visible_header(app: Any) -> str:
    """What of the header's status line fits on screen (the rest is cut off with …)."""
    status = app.screen.query_one("#status", Static)
    content = status.content
    plain = content.plain if isinstance(content, Text) else str(content)
    width = status.size.width
    return plain if len(plain) <= width else plain[: width - 1]


@pytest.mark.parametrize("viewer", [False, True])
async def test_a_disconnected_header_at_80_columns_still_shows_the_kill_switch(
    viewer: bool,
) -> None:
    """Attached at 80x24 (a viewer too), the engine gone: "DISCONNECTED · reconnecting",
    READ-ONLY and the profile pushed the kill switch and the approvals count off the end of
    the header ("… default │ ACTIVE  08:36:21 UTC"): a halted engine looked merely idle.
    (The tab "2 Approvals (1)" still counts the approvals a viewer's header may cut.)"""
    client = EventClient()
    if viewer:
        client.role = "viewer"
    client.request(1)
    client.snap["kill_switch"] = {"engaged": True, "level": "flatten", "by": "alice"}
    client.snap["trading_state"] = {"state": "HALTED"}
    client.snap["profile"] = "conservative"
    app = make_app(client)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        client.snap["connection"] = {"connected": False, "message": "engine went away"}
        await app.refresh_tables()
        await pilot.pause()
        seen = visible_header(app)
        assert "DISCONNECTED" in seen
        assert "KILL FLATTEN" in seen and "HALTED" in seen
        if viewer:
            assert "READ-ONLY" in seen  # a viewer answers no approval: its count may be cut
        else:
            assert "1 to approve" in seen
        await pilot.resize_terminal(*WIDE)  # at 120 too, the line is cut from the least urgent
        await pilot.pause()
        await app.refresh_tables()
        await pilot.pause()
        seen = visible_header(app)
        assert "KILL FLATTEN" in seen and "1 to approve" in seen and "DISCONNECTED" in seen
        client.snap["connection"] = {"connected": True}  # back: room for all of it again
        await app.refresh_tables()
        await pilot.pause()
        seen = visible_header(app)
        assert "DISCONNECTED" not in seen
        assert "conservative" in seen and "KILL FLATTEN" in seen and "1 to approve" in seen


@pytest.mark.parametrize("size", [NARROW, WIDE])
async def test_while_the_link_is_down_no_venue_reads_connected(size: tuple[int, int]) -> None:
    """The headless engine stopped under `cockpit attach`: the header said DISCONNECTED and
    the approvals' TTLs "?", but the Venues pane kept a green "● sim connected" (and the
    header "sim ●"), a link the cockpit could no longer see."""
    client = EventClient()
    client.snap["venues"] = {"sim": {"connected": True, "detail": "simulated"}}
    app = make_app(client)
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        if size == NARROW:
            await pilot.press("7")
            await pilot.pause()
        assert "● sim connected" in static_text(app, "#venues-lines")
        client.snap["connection"] = {"connected": False, "message": "engine went away"}
        await app.refresh_tables()
        await pilot.pause()
        lines = static_text(app, "#venues-lines")
        assert "connected ·" not in lines and "●" not in lines
        assert "? sim unknown, engine link down (last seen connected)" in lines
        assert "sim ●" not in static_text(app, "#status")
        client.snap["connection"] = {"connected": True}
        await app.refresh_tables()
        await pilot.pause()
        assert "● sim connected" in static_text(app, "#venues-lines")


async def test_a_disconnected_engines_venues_in_the_fleet_overview_are_not_green() -> None:
    """`cockpit attach` on two data dirs, one engine stopped: its row said DISCONNECTED, its
    values dimmed, but its venues cell kept a green "sim●", as if that link were seen."""
    member = FleetMember("beta", "/tmp/rs-nowhere.sock", Unreachable())
    app = FleetApp([member], clock=fixed_clock)
    async with app.run_test(size=NARROW) as pilot:
        client = EventClient()
        client.snap["venues"] = {"sim": {"connected": True, "detail": "simulated"}}
        await disconnected_with(pilot, member, client)
        table = app.overview.query_one(EnginesPane).table
        row = [str(cell).strip() for cell in table.get_row_at(0)]
        assert row[1] == DISCONNECTED
        assert row[8] == "sim?"


async def test_the_fleet_overviews_palette_offers_kill_all_not_a_kill_that_does_nothing() -> None:
    """In the fleet overview, ctrl+p "kill" offered "Kill (k)", one engine's kill switch,
    which does nothing there (no engine on screen): picked in a hurry, nothing happened and
    nothing said so. The overview's palette offers its own kill, every engine's."""
    member = FleetMember("beta", "/tmp/rs-nowhere.sock", Unreachable())
    app = FleetApp([member], clock=fixed_clock)
    async with app.run_test(size=NARROW) as pilot:
        await pilot.pause()
        names = [name for name, _, _ in CockpitCommands(app.screen).available()]
        assert "Kill all (K)" in names
        assert "Kill (k)" not in names and "Flatten (f)" not in names
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"kill")
        await pilot.pause(0.3)
        await pilot.press("enter")
        for _ in range(50):
            if isinstance(app.screen, FleetKillScreen):
                break
            await pilot.pause(0.02)
        assert isinstance(app.screen, FleetKillScreen)


@pytest.mark.parametrize(
    ("key", "nxt", "text"), [("B", "params", "period=10"), ("S", "sort", "pnl")]
)
async def test_the_backtest_and_sweep_forms_take_fields_typed_fast_after_tab(
    key: str, nxt: str, text: str
) -> None:
    """B, then in the strategy field "donchian_breakout", Tab, "period=10" typed fast (or
    pasted, or batched by SSH): the keys behind the Tab landed in the field it left, and the
    run was "unknown strategy 'donchian_breakoutperiod=10'" (over tmux, Shift+Tab then a
    path put the path into the strategy). The dialogs had this fixed; the two full-screen
    forms had not."""
    client = EventClient()
    app = make_app(client)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.press(key)
        await pilot.pause()
        screen = app.screen
        strategy = screen.query_one("#strategy", Input)
        strategy.value = ""
        strategy.focus()
        await pilot.pause()
        screen.query_one(f"#{nxt}", Input).value = ""
        burst(app, f"donchian_breakout\t{text}")
        for _ in range(50):
            await pilot.pause()
        assert strategy.value == "donchian_breakout"
        assert screen.query_one(f"#{nxt}", Input).value == text
        await pilot.press("escape")


@pytest.mark.parametrize("in_dialog", [False, True])
async def test_ctrl_c_quits_as_q_does(in_dialog: bool) -> None:
    """Ctrl-C on the cockpit only toasted "Press q to quit the app" (Textual's default), and
    over a dialog (the kill switch's) did nothing at all. It quits as q does, exit 0."""
    client = EventClient()
    app = make_app(client)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        if in_dialog:
            await pilot.press("k")
            await pilot.pause()
            assert isinstance(app.screen, KillScreen)
        await pilot.press("ctrl+c")
        for _ in range(50):
            if not app.is_running:
                break
            await pilot.pause(0.02)
    assert app.return_code == 0
    assert client.commands == []  # nothing was sent on the way out


async def test_ctrl_c_with_orders_open_in_this_process_asks_first() -> None:
    client = EventClient()
    client.snap["orders"] = [{"client_order_id": "o-1", "status": "new", "symbol": "BTC/USDT"}]
    app = make_app(client)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and app.is_running
        await pilot.press("n")
        await pilot.pause()
        assert app.is_running
        await pilot.press("ctrl+c")
        await pilot.pause()
        await pilot.press("ctrl+c")  # a second one at the question quits, as ctrl+q does
        for _ in range(50):
            if not app.is_running:
                break
            await pilot.pause(0.02)
    assert app.return_code == 0


@pytest.mark.parametrize("key", ["ctrl+c", "ctrl+q"])
async def test_quitting_at_the_live_phrase_starts_nothing_and_exits_2(key: str) -> None:
    """`cockpit --live`, asked for the phrase: Escape exits 2 ("live trading not armed ...
    nothing was started"), but Ctrl-Q (and now Ctrl-C) exited 0 with no word, which a
    wrapper script reads as a good run."""
    session = CountingSession()
    app = CockpitApp(session=session, clock=fixed_clock, live_phrase="trade live")
    async with app.run_test(size=NARROW) as pilot:
        for _ in range(20):
            await pilot.pause()
            if isinstance(app.screen, ArmLiveScreen):
                break
        assert isinstance(app.screen, ArmLiveScreen)
        await pilot.press(key)
        for _ in range(50):
            if not app.is_running:
                break
            await pilot.pause(0.02)
    assert session.opened == 0
    assert app.return_code == 2
