"""The cockpit used as a trader would, then as an attacker would (review-l).

Each test is a hole found by driving the cockpit in tmux (attached, read-only, at 80x24 and
120x40), reproduced here through Textual's pilot against a fake engine, bounded in time.
"""

from __future__ import annotations

from typing import Any

from textual import events
from textual.widgets import Input

from cockpit.app import CockpitApp
from cockpit.tui.limit_screen import LimitScreen
from cockpit.tui.release_screen import ReleaseScreen
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
            "message": f"not sent: disconnected from the engine ({name}); nothing was applied",
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
