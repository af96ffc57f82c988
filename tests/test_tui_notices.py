"""Notices that do not wear a trader out: one toast per kind however many come, none over an
open dialog (held and shown after), the bell once per burst and mutable with ``m``, and the
count of approvals waiting in the header.

The default config asked for 154 approvals in about 20 minutes: each was a 10-s toast with a
bell, three to five stacked over half the screen and over open dialogs at 80x24. These tests
push such bursts through a fake engine's event stream and read what is on screen.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets._toast import Toast as ToastWidget

from cockpit.app import CockpitApp
from cockpit.tui.help_screen import HelpScreen
from cockpit.tui.kill_screen import KillScreen
from cockpit.tui.toasts import Toast, ToastDesk
from engine.vocabulary import EventKind
from tests.test_tui import static_text
from tests.test_tui_venues import NOW, SEC, FakeClient, make_app, ready

NARROW = (80, 24)
WIDE = (120, 40)
SIDES = ["buy", "sell"]
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "ADA/USDT", "DOT/USDT"]


def approval(n: int) -> dict[str, Any]:
    return {
        "id": f"ap-{n}",
        "hash": f"h{n}",
        "intent_id": f"in-{n}",
        "decision_id": f"d-{n}",
        "created_ts": NOW + n * SEC,
        "expires_ts": NOW + 3600 * SEC,
        "strategy": "donchian_breakout",
        "symbol": SYMBOLS[n % len(SYMBOLS)],
        "side": SIDES[n % 2],
        "qty": 0.5,
        "notional": 2_000.0,
        "reason": "broke above the 20-bar high",
        "verdicts": [],
    }


class EventClient(FakeClient):
    """A fake engine whose events a test pushes; its snapshot lists what is waiting."""

    def __init__(self) -> None:
        super().__init__(venues={})
        self.snap["orders"] = []
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.seq = 100

    async def snapshot(self, trace: int = 500, curve: int = 600) -> dict[str, Any]:
        snap = copy.deepcopy(self.snap)
        snap["trace"] = []
        return snap

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self.queue.get()

    def push(self, event: dict[str, Any]) -> None:
        self.seq += 1
        self.queue.put_nowait({"seq": self.seq, "ts": NOW, **event})

    def request(self, n: int) -> None:
        a = approval(n)
        self.snap["approvals"].append(a)
        self.push({"event": EventKind.APPROVAL_REQUESTED, "approval": a})

    def answer(self, n: int, status: str = "approved") -> None:
        self.snap["approvals"] = [a for a in self.snap["approvals"] if a["id"] != f"ap-{n}"]
        outcome = {"approval_id": f"ap-{n}", "intent_id": f"in-{n}", "status": status}
        self.push({"event": EventKind.APPROVAL, "outcome": {**outcome, "reason": "test"}})

    def trip(self, name: str) -> None:
        change = {"breaker": name, "scope": "global", "tripped": True, "reason": "too many"}
        self.push({"event": EventKind.BREAKER, "change": change})


async def applied(pilot: Pilot[Any], client: EventClient) -> CockpitApp:
    """Every pushed event applied, the tables refreshed, the toasts drawn."""
    app = pilot.app
    assert isinstance(app, CockpitApp)
    for _ in range(200):
        if app.view.seq >= client.seq:
            break
        await pilot.pause()
    assert app.view.seq >= client.seq
    await app.refresh_tables()
    await pilot.pause()
    await pilot.pause()
    return app


def toasts_on_screen(app: CockpitApp) -> list[str]:
    """The toasts drawn on the screen on top, as 'title: message'."""
    return [
        f"{t._notification.title}: {t._notification.message}" for t in app.screen.query(ToastWidget)
    ]


@pytest.mark.parametrize("size", [NARROW, WIDE])
async def test_a_burst_of_approvals_is_one_toast_with_a_count_and_one_bell(
    size: tuple[int, int],
) -> None:
    client = EventClient()
    app = make_app(client)
    async with app.run_test(size=size, notifications=True) as pilot:
        await ready(pilot)
        for n in range(1, 4):
            client.request(n)
        await applied(pilot, client)
        # three: all named, newest first, no ellipsis
        assert toasts_on_screen(app) == [
            "Approvals (a approve · r reject): "
            "3 approvals waiting: XRP/USDT sell · SOL/USDT buy · ETH/USDT sell"
        ]
        client.request(4)
        await applied(pilot, client)
        # four: the newest three and "…", still one toast, still one bell
        assert toasts_on_screen(app) == [
            "Approvals (a approve · r reject): "
            "4 approvals waiting: ADA/USDT buy · XRP/USDT sell · SOL/USDT buy …"
        ]
        assert app.bells == 1
        assert "4 to approve" in static_text(app, "#status")


async def test_one_approval_shows_what_it_is() -> None:
    client = EventClient()
    app = make_app(client)
    async with app.run_test(size=NARROW, notifications=True) as pilot:
        await ready(pilot)
        client.request(1)
        await applied(pilot, client)
        [toast] = toasts_on_screen(app)
        assert toast.startswith("Approvals (a approve · r reject): approval needed: ")
        assert "donchian_breakout sell 0.5 ETH/USDT" in toast
        assert app.bells == 1


async def test_an_answered_approval_lowers_the_count_and_the_last_takes_the_toast_away() -> None:
    client = EventClient()
    app = make_app(client)
    async with app.run_test(size=NARROW, notifications=True) as pilot:
        await ready(pilot)
        for n in (1, 2):
            client.request(n)
        await applied(pilot, client)
        client.answer(2)
        await applied(pilot, client)
        assert toasts_on_screen(app) == [
            "Approvals (a approve · r reject): 1 approval waiting: ETH/USDT sell"
        ]
        client.answer(1, "expired")
        await applied(pilot, client)
        assert toasts_on_screen(app) == []
        assert "to approve" not in static_text(app, "#status")
        assert app.bells == 1  # answers never ring


@pytest.mark.parametrize("key, dialog", [("k", KillScreen), ("question_mark", HelpScreen)])
async def test_no_toast_covers_an_open_dialog_and_they_show_after(key: str, dialog: type) -> None:
    client = EventClient()
    app = make_app(client)
    async with app.run_test(size=NARROW, notifications=True) as pilot:
        await ready(pilot)
        client.request(1)
        await applied(pilot, client)
        assert len(toasts_on_screen(app)) == 1
        await pilot.press(key)
        await pilot.pause()
        assert isinstance(app.screen, dialog)
        assert toasts_on_screen(app) == []  # the toast already up stepped aside
        client.request(2)
        client.request(3)
        client.trip("rolling_loss")
        await applied(pilot, client)
        assert isinstance(app.screen, dialog)
        assert toasts_on_screen(app) == []
        assert app.bells == 2  # the breaker rang (errors always do); the approvals once
        await pilot.press("escape")
        await pilot.pause()
        await pilot.pause()
        shown = toasts_on_screen(app)
        assert len(shown) == 2
        assert any(
            "3 approvals waiting: XRP/USDT sell · SOL/USDT buy · ETH/USDT sell" in s for s in shown
        )
        assert any(s.startswith("Breaker tripped: breaker rolling_loss") for s in shown)
        assert app.bells == 2  # showing what was held does not ring again


async def test_m_mutes_the_bell_for_approvals_not_for_errors_and_the_header_says_so() -> None:
    client = EventClient()
    app = make_app(client)
    async with app.run_test(size=NARROW, notifications=True) as pilot:
        await ready(pilot)
        assert "muted" not in static_text(app, "#status")
        assert " m mute " in static_text(app, "#keybar")
        await pilot.press("m")
        await pilot.pause()
        assert static_text(app, "#status").rstrip().endswith("│ muted")
        assert " m unmute " in static_text(app, "#keybar")
        client.request(1)
        await applied(pilot, client)
        assert app.bells == 0
        assert len(toasts_on_screen(app)) == 2  # the approval, and the "muted" hint
        client.trip("rolling_loss")
        await applied(pilot, client)
        assert app.bells == 1  # a breaker trip rings through the mute
        await pilot.press("m")
        await pilot.pause()
        assert "muted" not in static_text(app, "#status")
        client.answer(1)
        client.request(2)  # the burst is over: a new one rings
        await applied(pilot, client)
        assert app.bells == 2


async def test_a_burst_of_the_same_alert_counts_instead_of_stacking() -> None:
    client = EventClient()
    app = make_app(client)
    async with app.run_test(size=NARROW, notifications=True) as pilot:
        await ready(pilot)
        for name in ("a", "b", "c"):
            client.trip(name)
        await applied(pilot, client)
        [toast] = toasts_on_screen(app)
        assert toast.startswith("Breaker tripped (×3): breaker c (global) tripped")
        assert "+2 earlier" in toast
        assert app.bells == 1


def test_the_desk_rings_once_per_burst_and_holds_while_covered() -> None:
    """The desk alone: a burst is one toast replaced in place; covered, nothing is shown."""
    shown: list[Any] = []
    rings: list[int] = []
    desk = ToastDesk(shown.append, shown.remove, lambda: rings.append(1))
    desk.add(Toast("x", "one", "X", bell=True))
    desk.add(Toast("x", "two", "X", bell=True))
    assert [n.message for n in shown] == ["two\n(+1 earlier: the log (6) has them all)"]
    assert len(rings) == 1
    desk.cover()
    assert shown == []
    desk.add(Toast("hint", "stale soon", hold=False))
    desk.add(Toast("x", "three", "X", bell=True))
    assert shown == [] and len(rings) == 1
    desk.add(Toast("y", "new kind", "Y", bell=True))
    assert len(rings) == 2
    desk.uncover()
    assert sorted(n.title for n in shown) == ["", "X (×3)", "Y"]
    desk.cover()
    assert desk.held() == ["x", "y"]  # the hint is not held for after a dialog


async def test_the_command_palette_is_a_dialog_too_but_the_backtest_screen_is_not() -> None:
    client = EventClient()
    app = make_app(client)
    async with app.run_test(size=NARROW, notifications=True) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.pause()
        client.request(1)
        await applied(pilot, client)
        assert app.screen is not app.main
        assert toasts_on_screen(app) == []
        await pilot.press("escape")
        await pilot.pause()
        await pilot.pause()
        assert len(toasts_on_screen(app)) == 1
        await pilot.press("B")  # a full screen, not a dialog: approvals still show over it
        await pilot.pause()
        client.request(2)
        await applied(pilot, client)
        assert toasts_on_screen(app) == [
            "Approvals (a approve · r reject): 2 approvals waiting: SOL/USDT buy · ETH/USDT sell"
        ]


def test_a_burst_that_goes_on_rings_again_at_most_once_a_minute() -> None:
    """Approvals every 8 s keep one toast up for 20 minutes: one bell at the start, then one
    a minute (not 150), and never more often than that."""
    now = [0.0]
    rings: list[float] = []
    shown: list[Any] = []
    desk = ToastDesk(shown.append, shown.remove, lambda: rings.append(now[0]), lambda: now[0])
    for n in range(150):
        now[0] = n * 8.0
        desk.add(Toast("approval", f"{n + 1} waiting", bell=True, summary=True))
        for live in shown:
            live.timeout = 1e6  # up for as long as they come (the wall clock does not move here)
    assert len(shown) == 1
    assert rings[0] == 0.0
    gaps = [b - a for a, b in itertools.pairwise(rings)]
    assert all(60.0 <= gap < 68.0 for gap in gaps)  # just over a minute: the next 8-s tick
    assert len(rings) == 1 + int(149 * 8 / 64)


async def test_a_viewers_approval_toast_offers_no_keys_it_cannot_use() -> None:
    """`attach --read-only`: `a` and `r` do nothing there, so its toast must not offer them."""
    client = EventClient()
    client.role = "viewer"
    app = make_app(client)
    async with app.run_test(size=NARROW, notifications=True) as pilot:
        await ready(pilot)
        assert app.read_only
        client.request(1)
        await applied(pilot, client)
        [toast] = toasts_on_screen(app)
        assert toast.startswith("Approvals (read-only: an operator answers): approval needed: ")
