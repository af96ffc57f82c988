"""The smaller holes a new user fell into, each driven by key the way they met it: a viewer
not told it is one, the 80-column key bar, help that did not say it scrolls, the kill dialog's
stale first frame, "refused: refused:", the Log tab wrapped at 20 columns after a resize, a
flat equity drawn over 66,666-150,000, and the backtest form's placeholders read as values."""

from __future__ import annotations

import re
from typing import Any

import pytest
from textual.widgets import Checkbox, Input, Static

from cockpit.app import CockpitApp
from cockpit.tui.arm_screen import ArmLiveScreen
from cockpit.tui.backtest_screen import BacktestScreen
from cockpit.tui.chart import CachedPlot, y_range
from cockpit.tui.dialog import refusal
from cockpit.tui.help_screen import HelpScreen
from cockpit.tui.kill_screen import KillScreen
from cockpit.tui.log import ReflowLog
from cockpit.tui.main_screen import key_bar
from cockpit.tui.release_screen import ReleaseScreen
from tests.test_tui import static_text
from tests.test_tui_venues import NOW, FakeClient, fixed_clock, make_app, ready

NARROW = (80, 24)
WIDE = (120, 40)
MINUTE = 60 * 1_000_000_000


def content(screen: Any, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


# ---------------------------------------------------------------------- header and key bar


@pytest.mark.parametrize("size, badge", [(NARROW, " READ-ONLY "), (WIDE, " READ-ONLY viewer ")])
async def test_a_read_only_attach_says_so_in_the_header(size: tuple[int, int], badge: str) -> None:
    app = make_app(FakeClient(venues={}, role="viewer"))
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        assert badge in static_text(app, "#status")
    operator = make_app(FakeClient(venues={}))
    async with operator.run_test(size=size) as pilot:
        await ready(pilot)
        assert "READ-ONLY" not in static_text(operator, "#status")


async def test_at_80_columns_the_key_bar_shows_quit_filter_and_the_palette() -> None:
    app = make_app(FakeClient(venues={}))
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        bar = static_text(app, "#keybar")
        assert len(bar) <= 80
        for key in (" ? help ", " / filter ", " q quit ", " ^p palette", " m mute ", " k kill "):
            assert key in bar
        await pilot.resize_terminal(*WIDE)
        await pilot.pause()
        assert " R release " in static_text(app, "#keybar")  # more room, more keys


@pytest.mark.parametrize("width", [50, 74, 79, 80, 81, 100, 119, 120, 121, 160])
@pytest.mark.parametrize("muted", [False, True])
def test_the_key_bar_fits_every_width_and_keeps_the_keys_that_matter(
    width: int, muted: bool
) -> None:
    bar = key_bar(width, muted=muted).plain
    assert len(bar) <= width
    mute = " m unmute " if muted else " m mute "
    for key in (" ? help ", " / filter ", " q quit ", " ^p palette", mute):
        assert key in bar


# ---------------------------------------------------------------------- help


async def test_help_scrolls_and_says_how_much_more_there_is() -> None:
    app = make_app(FakeClient(venues={}))
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, HelpScreen)
        assert re.search(r"▼ \d+ more lines below: ↓ or PgDn to scroll", content(screen, "#more"))
        # the whole dialog is on screen: its last line (the hint) is not cut off
        assert screen.query_one("#dialog").region.bottom <= NARROW[1]
        await pilot.press("end")
        await pilot.pause()
        await pilot.pause()
        assert content(screen, "#more").startswith("▲ end of the list")
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.main


async def test_help_that_fits_says_nothing_about_more() -> None:
    app = make_app(FakeClient(venues={}))
    async with app.run_test(size=(120, 60)) as pilot:
        await ready(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        await pilot.pause()
        assert not app.screen.query_one("#more", Static).display


# ---------------------------------------------------------------------- the kill dialog


async def test_the_kill_dialog_never_opens_on_the_last_openings_level() -> None:
    """Opened, moved to "entries", closed; opened again: the level is "halt" before the first
    frame is drawn, so Down from what the person sees goes to "flatten" knowingly. Before, the
    reset waited for the screen's resume: the first frame showed "entries", and Down pressed
    to reach "halt" engaged flatten."""
    client = FakeClient(venues={})
    app = make_app(client)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.press("k", "up")
        screen = app.screen
        assert isinstance(screen, KillScreen)
        assert screen.level == "entries"
        await pilot.press("escape")
        await pilot.pause()
        app.action_kill()  # no await: nothing has been drawn or handled yet
        assert app.screen is screen
        assert screen.level == "halt"
        assert "Engage: halt" in content(screen, "#choice")
        assert screen.query_one("#reason", Input).value == "kill switch from the cockpit"
        await pilot.pause()
        await pilot.press("down")
        assert screen.level == "flatten"
        await pilot.press("escape")
        await pilot.pause()
        assert client.commands == []


# ---------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "message, shown",
    [
        ("journal is down", "refused: journal is down"),
        ("refused: peer uid 7 is not the engine's uid 8", "refused: peer uid 7 is not the"),
        ("Refused: x", "refused: x"),
        ("not sent: disconnected from the engine", "not sent: disconnected"),
    ],
)
def test_a_refusal_says_refused_once(message: str, shown: str) -> None:
    text = refusal({"ok": False, "message": message})
    assert text.startswith(shown)
    assert "refused: refused" not in text.lower()


async def test_the_release_dialog_says_refused_once() -> None:
    client = FakeClient(venues={})
    client.snap["kill_switch"] = {
        "engaged": True,
        "level": "halt",
        "by": "system",
        "reason": "daily loss",
        "ts": NOW,
    }
    client.refuse = (
        "refused: the condition still holds (daily loss 5%); release with override and a reason"
    )
    app = make_app(client)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.press("R")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ReleaseScreen)
        await pilot.press(*"RELEASE", "tab", *"checked", "enter")
        for _ in range(20):
            await pilot.pause()
            if app.last_reply is not None:
                break
        await pilot.pause()
        message = content(screen, "#dialog-message")
        assert message.startswith("refused: the condition still holds")
        assert "refused: refused" not in message
        assert screen.query_one("#override", Checkbox).has_class("-offered")


# ---------------------------------------------------------------------- the log tab


async def test_the_log_tab_wraps_at_its_width_after_80_120_80() -> None:
    app = make_app(FakeClient(venues={}))
    long = "approval needed: donchian_breakout buy 0.6663 ETH/USDT ~1,999.65 (close 3001.35 broke)"
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.resize_terminal(*WIDE)
        await pilot.pause()
        await pilot.resize_terminal(*NARROW)
        await pilot.pause()
        for _ in range(3):  # written while the Log tab is hidden (tab 2 is shown)
            app.view.add_log(NOW, "alert", long)
        app._render()
        await pilot.pause()
        await pilot.press("6")
        await pilot.pause()
        await pilot.pause()
        log = app.main.query_one(ReflowLog)
        lines = ["".join(seg.text for seg in strip).rstrip() for strip in log.lines]
        # 78 columns inside the border: each entry is two lines, the first one full
        assert max(len(line) for line in lines) > 70
        assert sum(1 for line in lines if "approval needed" in line) == 3
        assert len(lines) <= 2 * 3 + 2  # the three, and the "connected" line


# ---------------------------------------------------------------------- the chart


@pytest.mark.parametrize(
    "ys, narrowed",
    [
        ([100_000.0] * 5, True),
        ([100_000.0, 100_000.09], True),  # under a millionth of the level: flat
        ([100_000.0, 100_000.11], False),  # over: it moves, plotext's own range
        ([99_956.4, 100_000.0], False),
        ([0.0, 0.0], True),
        ([], False),
    ],
)
def test_a_flat_series_gets_a_narrow_range_around_its_level(
    ys: list[float], narrowed: bool
) -> None:
    got = y_range(ys)
    if not narrowed:
        assert got is None
        return
    assert got is not None
    lo, hi = got
    assert lo < min(ys) and hi > max(ys)
    assert (lo + hi) / 2 == pytest.approx((min(ys) + max(ys)) / 2)
    assert hi - lo == pytest.approx(max(abs(ys[0]) * 0.001, 1.0), rel=0.01)


async def test_a_flat_equity_is_drawn_around_100000_not_66666_to_150000() -> None:
    client = FakeClient(venues={})
    client.snap["equity_curve"] = [[NOW - (30 - i) * MINUTE, 100_000.0] for i in range(30)]
    app = make_app(client)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.press("5")
        await pilot.pause()
        await app.refresh_chart()
        await pilot.pause()
        plot = app.main.query_one(CachedPlot)
        text = re.sub(r"\x1b\[[0-9;]*m", "", plot.plt.build())
        labels = re.findall(r"^\s*([\d.]+)┤", text, flags=re.MULTILINE)
        assert labels, text
        assert all(99_900 < float(label) < 100_100 for label in labels), labels


# ---------------------------------------------------------------------- the backtest form


async def test_the_backtest_form_says_what_enter_runs_and_its_hints_look_like_hints() -> None:
    app = make_app(FakeClient(venues={}))
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.press("B")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, BacktestScreen)
        for wid in ("params", "qty", "fraction", "fee_bps"):
            field = screen.query_one(f"#{wid}", Input)
            assert field.value == ""
            assert field.placeholder.startswith("(") and field.placeholder.endswith(")")
        plan = content(screen, "#bt-plan")
        assert plan.startswith("Enter runs: ema_cross on btc-perp-20211231-20220201_1m.csv.xz")
        assert "size from the config" in plan and "fee from the config" in plan
        assert plan.endswith("breakers ON")
        screen.query_one("#no_breakers", Checkbox).value = True
        screen.query_one("#qty", Input).value = "0.5"
        await pilot.pause()
        plan = content(screen, "#bt-plan")
        assert "qty 0.5" in plan and plan.endswith("breakers OFF")
        await pilot.press("escape")


# ---------------------------------------------------------------------- arming live


class CountingSession:
    """A session that records whether the cockpit opened it (started the engine)."""

    def __init__(self) -> None:
        self.opened = 0
        self.client = FakeClient(venues={})

    async def open(self) -> FakeClient:
        self.opened += 1
        return self.client

    async def run(self) -> None:
        return None

    async def close(self) -> None:
        await self.client.close()


async def test_live_is_armed_by_the_phrase_typed_in_the_cockpit() -> None:
    session = CountingSession()
    app = CockpitApp(session=session, clock=fixed_clock, live_phrase="trade live")
    async with app.run_test(size=NARROW) as pilot:
        for _ in range(20):
            await pilot.pause()
            if isinstance(app.screen, ArmLiveScreen):
                break
        screen = app.screen
        assert isinstance(screen, ArmLiveScreen)
        await pilot.press(*"trade liv", "enter")  # one letter short: not armed
        await pilot.pause()
        assert app.screen is screen and session.opened == 0
        assert content(screen, "#dialog-message").startswith("not armed: type exactly")
        await pilot.press(*"trade live", "enter")
        await ready(pilot)
        assert session.opened == 1 and app.screen is app.main


async def test_escape_at_the_live_phrase_starts_nothing_and_exits_2() -> None:
    session = CountingSession()
    app = CockpitApp(session=session, clock=fixed_clock, live_phrase="trade live")
    async with app.run_test(size=NARROW) as pilot:
        for _ in range(20):
            await pilot.pause()
            if isinstance(app.screen, ArmLiveScreen):
                break
        await pilot.press("escape")
        await pilot.pause()
    assert session.opened == 0
    assert app.return_code == 2
