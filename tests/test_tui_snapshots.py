"""Snapshot tests of the main screen at 120x40 and 80x24 on a seeded engine.

The engine is fed a fixed stream (fixed seed, fixed start time) up to the first pending
approval and then not run, and the header clock is a fixed time, so every run draws the same
screen. Update the baselines with ``pytest --snapshot-update`` after a deliberate change and
read the SVGs' text before committing them.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from cockpit.app import CockpitApp
from cockpit.tui.session import EmbeddedSession
from tests.conftest import fast_config
from tests.test_tui import CALM, DEMO_BARS, fixed_clock, small_orders


async def _prepare(engine: Any) -> None:
    """A few minutes of market, then up to the first intent waiting for approval."""
    feed = engine.source.events()
    await engine.process(list(itertools.islice(feed, 2_000)))
    while not engine.snapshot(trace=0, curve=0)["approvals"]:
        await engine.process(list(itertools.islice(feed, 5)))


def seeded_app(tmp_path: Path) -> CockpitApp:
    data_dir = tmp_path / "data"
    cfg = fast_config(
        data_dir, auto=False, safety=CALM, strategies=small_orders(), market=DEMO_BARS
    )
    session = EmbeddedSession(cfg, data_dir, free_run=False, prepare=_prepare)
    return CockpitApp(session=session, clock=fixed_clock)


async def _loaded(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, CockpitApp)
    await app.loaded.wait()
    await app.refresh_tables()
    await pilot.pause()


def test_main_screen_wide(snap_compare: Any, tmp_path: Path) -> None:
    assert snap_compare(seeded_app(tmp_path), terminal_size=(120, 40), run_before=_loaded)


def test_main_screen_narrow(snap_compare: Any, tmp_path: Path) -> None:
    assert snap_compare(seeded_app(tmp_path), terminal_size=(80, 24), run_before=_loaded)


def test_trace_tab_narrow(snap_compare: Any, tmp_path: Path) -> None:
    assert snap_compare(
        seeded_app(tmp_path), terminal_size=(80, 24), press=["3"], run_before=_loaded
    )


def test_venues_halted_wide(snap_compare: Any) -> None:
    """Two venues, one HALTED by reconciliation: the Venues pane takes the block beside
    safety with its differences, and the header shows the halt in red."""
    from tests.test_tui_venues import FakeClient
    from tests.test_tui_venues import fixed_clock as venue_clock

    app = CockpitApp(FakeClient(), clock=venue_clock)
    assert snap_compare(app, terminal_size=(120, 40), run_before=_loaded)


def test_header_pending_and_muted_wide(snap_compare: Any, tmp_path: Path) -> None:
    """m mutes the bell: the header says "bell muted" beside the approvals waiting, and the
    key bar offers "unmute"."""
    assert snap_compare(
        seeded_app(tmp_path), terminal_size=(120, 40), press=["m"], run_before=_loaded
    )


def test_header_pending_and_muted_narrow(snap_compare: Any, tmp_path: Path) -> None:
    """At 80x24 the header still shows the count and "muted"; the key bar keeps q, / and ^p."""
    assert snap_compare(
        seeded_app(tmp_path), terminal_size=(80, 24), press=["m"], run_before=_loaded
    )


def test_approvals_burst_is_one_toast_narrow(snap_compare: Any) -> None:
    """Four approvals in a burst at 80x24: one toast with the count and the newest three, the
    header's count, nothing stacked over the screen."""
    from tests.test_tui_notices import EventClient, applied
    from tests.test_tui_venues import fixed_clock as venue_clock

    client = EventClient()
    app = CockpitApp(client, clock=venue_clock, table_interval=3600, chart_interval=3600)

    async def burst(pilot: Pilot[Any]) -> None:
        await _loaded(pilot)
        for n in range(1, 5):
            client.request(n)
        await applied(pilot, client)

    assert snap_compare(app, terminal_size=(80, 24), run_before=burst)


def _performance_app() -> Any:
    from tests.test_tui_performance import Host, snapshot

    snap = snapshot(
        daily=[
            {"day": "2026-12-04", "pnl": 42.0},
            {"day": "2026-12-05", "pnl": -17.5},
            {"day": "2026-12-06", "pnl": 8.25},
        ]
    )
    return Host(snap)


async def _drawn(pilot: Pilot[Any]) -> None:
    """The screen is pushed on mount and draws its plot once laid out: let both happen."""
    await pilot.pause()
    for _ in range(3):
        await pilot.pause()


def test_performance_screen_wide(snap_compare: Any) -> None:
    assert snap_compare(_performance_app(), terminal_size=(120, 40), run_before=_drawn)


def test_performance_screen_narrow(snap_compare: Any) -> None:
    assert snap_compare(_performance_app(), terminal_size=(80, 24), run_before=_drawn)


def _audit_app() -> Any:
    from textual.app import App

    from cockpit.tui.audit_screen import AuditScreen

    day = 1_764_979_200_000_000_000  # 2025-12-06 00:00 UTC
    records = [
        {
            "key": "j10", "ts": day + 9 * 3_600_000_000_000, "user": "ana", "client": "cli",
            "action": "set_limit", "subject": "max_order_notional", "accepted": True,
            "reason": "thin book", "message": "",
            "changes": [{"what": "value", "before": 25000.0, "after": 10000.0}],
        },
        {
            "key": "j11", "ts": day + 10 * 3_600_000_000_000, "user": "ana", "client": "tui",
            "action": "set_approval_mode", "subject": "donchian_breakout", "accepted": False,
            "reason": "looks good", "changes": [],
            "message": "donchian_breakout has 3 approved trades; auto needs 10 (7 more to go)",
        },
        {
            "key": "j12", "ts": day + 11 * 3_600_000_000_000, "user": "file", "client": "file",
            "action": "kill_switch", "subject": "engine", "accepted": True,
            "reason": "KILL file", "message": "",
            "changes": [{"what": "kill_level", "before": None, "after": "halt"}],
        },
    ]  # fmt: skip

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(AuditScreen(lambda: (1, records)))

    return Host()


def test_audit_screen_wide(snap_compare: Any) -> None:
    assert snap_compare(_audit_app(), terminal_size=(120, 40), run_before=_drawn)


def test_audit_screen_narrow(snap_compare: Any) -> None:
    assert snap_compare(_audit_app(), terminal_size=(80, 24), run_before=_drawn)


def test_approval_mode_dialog_narrow(snap_compare: Any, tmp_path: Path) -> None:
    """M at 80x24: each strategy with its mode and how far it is from auto; no toast over it."""
    assert snap_compare(
        seeded_app(tmp_path), terminal_size=(80, 24), press=["M"], run_before=_loaded
    )


def test_limit_dialog_wide(snap_compare: Any, tmp_path: Path) -> None:
    """L at 120x40: every settable limit with the value in force, value and reason fields."""
    assert snap_compare(
        seeded_app(tmp_path), terminal_size=(120, 40), press=["L"], run_before=_loaded
    )
