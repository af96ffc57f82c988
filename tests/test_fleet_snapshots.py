"""Snapshot tests of the fleet overview at 120x40 and 80x24.

Three engines: two seeded in-process engines fed a fixed stream up to their first approval and
then not run (one of them with its kill switch engaged), and one that cannot be reached; the
clock is fixed. Update the baselines with ``pytest --snapshot-update`` after a deliberate
change and read the SVGs' text before committing them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from cockpit.client import EngineClient
from cockpit.tui.fleet import FleetMember
from cockpit.tui.fleet_app import FleetApp
from cockpit.tui.session import EmbeddedSession
from engine.vocabulary import KillLevel
from tests.conftest import fast_config
from tests.test_tui import CALM, DEMO_BARS, fixed_clock, small_orders
from tests.test_tui_snapshots import _prepare


class Unreachable:
    """An engine that is not there: the session cannot open."""

    async def open(self) -> EngineClient:
        raise ConnectionError("no engine socket at /run/cockpit/gamma.sock")

    async def run(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def _killed(engine: Any) -> None:
    await _prepare(engine)
    await engine.engage_kill(KillLevel.HALT, by="ops", reason="snapshot", source="test")


def fleet_app(tmp_path: Path) -> FleetApp:
    members = []
    for name, seed, prepare in (("alpha", 42, _prepare), ("beta", 7, _killed)):
        data_dir = tmp_path / name
        market = {**DEMO_BARS, "simulated": {**DEMO_BARS["simulated"], "seed": seed}}
        cfg = fast_config(
            data_dir, auto=False, safety=CALM, strategies=small_orders(), market=market
        )
        session = EmbeddedSession(cfg, data_dir, free_run=False, prepare=prepare)
        members.append(FleetMember(name, f"/run/cockpit/{name}.sock", session))
    members.append(FleetMember("gamma", "/run/cockpit/gamma.sock", Unreachable()))
    return FleetApp(members, clock=fixed_clock)


async def _loaded(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, FleetApp)
    for _ in range(600):
        if all(m.view.loaded for m in app.members[:2]) and app.members[2].reason:
            break
        await asyncio.sleep(0.02)
    app.refresh_overview()
    await asyncio.gather(*list(app._pulls))
    app.refresh_overview()
    # A DataTable measures a new row's cells when it is next idle, but a row drawn before
    # that stays cached at the labels' widths until the table changes again (a running
    # engine's countdown changes it every second; these engines are frozen). A resize
    # redraws every table, measured.
    await pilot.pause(0.2)
    width, height = app.size
    await pilot.resize_terminal(width - 1, height)
    await pilot.resize_terminal(width, height)
    await pilot.pause()


def test_fleet_overview_wide(snap_compare: Any, tmp_path: Path) -> None:
    assert snap_compare(fleet_app(tmp_path), terminal_size=(120, 40), run_before=_loaded)


def test_fleet_overview_narrow(snap_compare: Any, tmp_path: Path) -> None:
    assert snap_compare(fleet_app(tmp_path), terminal_size=(80, 24), run_before=_loaded)
