"""The cockpit used as a trader would, then as an attacker would (review-l).

Each test is a hole found by driving the cockpit in tmux (attached, read-only, at 80x24 and
120x40), reproduced here through Textual's pilot against a fake engine, bounded in time.
"""

from __future__ import annotations

from typing import Any

from textual import events
from textual.widgets import Input

from cockpit.app import CockpitApp
from cockpit.tui.fleet import DISCONNECTED, FleetMember, QueuePane
from cockpit.tui.fleet_app import FleetApp
from cockpit.tui.kill_screen import KillScreen
from cockpit.tui.limit_screen import LimitScreen
from cockpit.tui.release_screen import ReleaseScreen
from tests.test_fleet_snapshots import Unreachable
from tests.test_tui import fixed_clock, screen_text
from tests.test_tui_notices import EventClient, toasts_on_screen
from tests.test_tui_venues import ready

NARROW = (80, 24)
LOG_CLAIM = "the log (6) has them all"


class DisconnectedClient(EventClient):
    """An engine that went away: the socket client answers every command at once with
    ``sent: False`` and never sends it later."""

    async def command(self, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        self.commands.append((name, dict(args or {})))
        return {
            "ok": False,
            "sent": False,
            "message": (
                f"not sent: disconnected from the engine ({name}) at /tmp/rl-eng/e.sock (no "
                "engine socket at /tmp/rl-eng/e.sock); nothing was applied"
            ),
        }


def make(client: EventClient) -> CockpitApp:
    return CockpitApp(client, table_interval=3600, chart_interval=3600)


async def test_a_viewers_refused_keys_are_answered_one_at_a_time_not_counted() -> None:
    """Read-only at 80x24, a viewer pressed a r k R p u b M L f v m: the toast said
    " (×12)" with an empty title, the mute message, and "(+11 earlier: the log (6) has them
    all)", but the log has none of the refusals (they are hints, never logged). Each key's
    answer is shown as it is and replaces the one before."""
    client = EventClient()
    client.role = "viewer"
    app = make(client)
    async with app.run_test(size=NARROW, notifications=True) as pilot:
        await ready(pilot)
        for key in ("a", "k", "R", "p", "m"):
            await pilot.press(key)
        await pilot.pause()
        shown = toasts_on_screen(app)
        assert len(shown) == 1, shown
        assert shown[0].startswith(": Bell muted"), shown  # the last key's answer, as it is
        assert "×" not in shown[0] and LOG_CLAIM not in shown[0]
        await pilot.press("k")
        await pilot.pause()
        shown = toasts_on_screen(app)
        assert shown == [
            "the kill switch: Read-only cockpit (viewer): the kill switch needs an operator "
            "(attach without --read-only)"
        ], shown


async def test_commands_not_sent_while_disconnected_are_in_the_log_the_toast_points_to() -> None:
    """Disconnected, a trader pressed k Enter then a: the toast said "approve: refused (×2)
    ... (+1 earlier: the log (6) has them all)", but neither "not sent" answer was in the
    log (only the engine's audit events are, and these never reached the engine)."""
    client = DisconnectedClient()
    client.request(1)
    app = make(client)
    async with app.run_test(size=NARROW, notifications=True) as pilot:
        await ready(pilot)
        await app.refresh_tables()
        for _ in range(3):
            await app.run_command("approve", {"id": "ap-1"})
        await pilot.pause()
        shown = [t for t in toasts_on_screen(app) if t.startswith("approve: refused")]
        assert len(shown) == 1 and "(×3)" in shown[0] and LOG_CLAIM in shown[0], shown
        logged = [line.text for line in app.view.log if "not sent" in line.text]
        assert len(logged) == 3, [line.text for line in app.view.log]
        assert all(line.startswith("approve: not sent: disconnected") for line in logged), logged


def burst(app: CockpitApp, keys: str) -> None:
    """Keys as one read from the terminal delivers them (fast typing, a paste of keystrokes,
    an SSH link that batches): every event queued before the first is handled."""
    driver = app._driver
    assert driver is not None
    for key in keys:
        name = {"\t": "tab", " ": "space"}.get(key, key)
        event = events.Key(name, key)
        event.set_sender(app)
        driver.send_message(event)


async def test_keys_typed_after_tab_go_to_the_next_field_however_fast_they_come() -> None:
    """At 80x24 over tmux, L then "abc", Tab, "why not" typed fast: one time in three the
    value field read "abcwhy not" and the reason stayed empty (Tab bubbled up from the field
    through the message queues while the keys behind it were already handed to the field).
    Tab in a dialog moves the focus before the next key is handed out."""
    client = EventClient()
    client.snap["settable_limits"] = {"daily_loss_limit_pct": 5.0, "drawdown_limit_pct": 15.0}
    app = make(client)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.press("L")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, LimitScreen)
        burst(app, "4\tlosing streak\tRELEASE")
        for _ in range(50):
            await pilot.pause()
        assert screen.query_one("#value", Input).value == "4"
        assert screen.query_one("#reason", Input).value == "losing streak"
        # the third field is the limits list (focus wraps): the text went nowhere else
        await pilot.press("escape")


async def test_the_release_dialog_takes_a_fast_confirmation_and_reason_field_by_field() -> None:
    client = EventClient()
    client.snap["kill_switch"] = {"engaged": True, "level": "halt", "by": "alice", "reason": "x"}
    app = make(client)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.press("R")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ReleaseScreen)
        burst(app, "RELEASE\tall clear")
        for _ in range(50):
            await pilot.pause()
        assert screen.query_one("#confirm", Input).value == "RELEASE"
        assert screen.query_one("#reason", Input).value == "all clear"


def ttl_cells(table: Any) -> list[str]:
    return [str(table.get_row_at(i)[0]).strip() for i in range(table.row_count)]


async def test_while_the_link_is_down_an_approvals_ttl_is_unknown_not_frozen() -> None:
    """The engine stopped under an attached cockpit: the approvals pane kept "27s" for as
    long as the link was down (the engine's clock no longer arrives), on an approval the
    engine had expired at shutdown. Its TTL now reads "?", and the detail says why."""
    client = EventClient()
    client.request(1)
    app = make(client)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        pane = app.main.approvals
        connected_ttl = ttl_cells(pane.table)
        assert len(connected_ttl) == 1 and connected_ttl[0] not in ("", "?")
        client.snap["connection"] = {"connected": False, "message": "engine went away"}
        await app.refresh_tables()
        await pilot.pause()
        assert ttl_cells(pane.table) == ["?"]
        detail = str(pane.query_one("#approvals-detail").render())
        assert "expiry unknown while the link is down" in detail
        assert "expires in" not in detail
        client.snap["connection"] = {"connected": True}
        await app.refresh_tables()
        await pilot.pause()
        assert ttl_cells(pane.table) == connected_ttl  # the countdown is back


async def disconnected_with(pilot: Any, member: FleetMember, client: EventClient) -> None:
    """Wait until the fleet sees ``member`` (unreachable) DISCONNECTED, then give its view
    ``client``'s snapshot, as the last one it had before the link went down."""
    for _ in range(200):
        if member.state == DISCONNECTED:
            break
        await pilot.pause(0.01)
    assert member.state == DISCONNECTED
    member.view.reload(await client.snapshot())
    pilot.app.refresh_overview()
    await pilot.pause()


async def test_a_disconnected_engines_approvals_in_the_fleet_queue_have_no_frozen_ttl() -> None:
    """`cockpit attach --fleet` with two engines, one stopped: its three approvals stayed in
    the queue at "19s" and "29s" for minutes. Listed still (the trader should know they were
    waiting), but with the TTL unknown."""
    member = FleetMember("beta", "/tmp/rl-nowhere.sock", Unreachable())
    app = FleetApp([member], clock=fixed_clock)
    async with app.run_test(size=NARROW) as pilot:
        client = EventClient()
        client.request(1)
        await disconnected_with(pilot, member, client)
        queue = app.overview.query_one(QueuePane)
        assert queue.table.row_count == 1, "the queue still lists the approval"
        assert str(queue.table.get_row_at(0)[0]).strip() == "beta"
        assert str(queue.table.get_row_at(0)[1]).strip() == "?"
        detail = str(queue.query_one("#queue-detail").render())
        assert "expiry unknown while the link is down" in detail


async def test_the_kill_dialogs_refusal_is_readable_at_80x24_when_the_switch_is_engaged() -> None:
    """At 80x24 with the kill switch already engaged (the dialog says so, two lines more),
    the engine gone: Enter showed "not sent: disconnected from the engine at
    /tmp/rl-eng/e.sock (no" and the dialog's border: the rest, "nothing was applied", was
    cut off. The answer of the most urgent dialog is read whole, whatever its height."""
    client = DisconnectedClient()
    client.snap["kill_switch"] = {
        "engaged": True,
        "level": "entries",
        "by": "root",
        "reason": "kill switch from the cockpit",
    }
    app = make(client)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.press("k")
        await pilot.pause()
        assert isinstance(app.screen, KillScreen)
        await pilot.press("enter")
        for _ in range(20):
            await pilot.pause()
        assert client.commands and client.commands[-1][0] == "kill"
        text = " ".join(" ".join(screen_text(app).split("│")).split())
        assert "nothing was applied" in text, screen_text(app)
        assert "not sent: disconnected from the engine (kill)" in text
        # the field the person types in is still on screen, focused
        reason = app.screen.query_one("#reason", Input)
        assert reason.has_focus and reason in app.screen._compositor.visible_widgets


class ReleasingClient(EventClient):
    """Refuses ``release`` while ``kill_file`` is set (as the engine does), then accepts."""

    kill_file = True

    async def command(self, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        self.commands.append((name, dict(args or {})))
        if self.kill_file:
            return {"ok": False, "message": "refused: the KILL file /data/KILL still exists"}
        return {"ok": True, "message": "kill switch released"}


async def test_an_accepted_command_is_not_counted_into_the_refusals_before_it() -> None:
    """Three releases refused while the KILL file existed, then one accepted: the toast read
    "release: ok (×4)" (the count of one kind of reply, the title of the last), as if four
    releases had gone through. Each verdict is its own burst: "release: ok", not counted."""
    client = ReleasingClient()
    app = make(client)
    async with app.run_test(size=NARROW, notifications=True) as pilot:
        await ready(pilot)
        for _ in range(3):
            await app.run_command("release", {"reason": "r", "confirm": "RELEASE"})
        await pilot.pause()
        assert toasts_on_screen(app) == [
            "release: refused (×3): the KILL file /data/KILL still exists\n"
            "(+2 earlier: the log (6) has them all)"
        ]
        client.kill_file = False
        await app.run_command("release", {"reason": "r", "confirm": "RELEASE"})
        await pilot.pause()
        await pilot.pause()
        assert toasts_on_screen(app) == ["release: ok: kill switch released"]


async def test_a_chart_tick_while_the_screen_is_torn_down_does_not_crash_the_app() -> None:
    """CI caught it: the chart's 1 Hz timer awaited a snapshot while the app was quitting;
    by the time the answer came the panes were gone and the timer raised NoMatches, which
    Textual re-raises as the app's exception (a quit ending in a traceback). The chart tick
    ends quietly, as the tables' tick already did."""
    client = EventClient()
    app = make(client)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await app.main.chart.remove()
        await app.refresh_chart()
        await app.refresh_tables()
        await pilot.pause()
    assert app.return_code in (None, 0)


async def test_a_viewers_key_bar_offers_only_the_keys_that_do_something() -> None:
    """Left alone twice: attached read-only, the key bar still offered `a approve`, `r
    reject`, `k kill` (each only answers that it needs an operator). A viewer's bar lists what
    a viewer can do; an operator's is unchanged; help and the palette still list every key."""
    for size in (NARROW, (120, 40)):
        for role, acting in (("viewer", False), ("operator", True)):
            client = EventClient()
            client.role = role
            app = make(client)
            async with app.run_test(size=size) as pilot:
                await ready(pilot)
                bar = screen_text(app).splitlines()[-1]
                assert ("k kill" in bar) is acting, (size, role, bar)
                assert ("a approve" in bar) is acting, (size, role, bar)
                assert "q quit" in bar and "? help" in bar, bar
