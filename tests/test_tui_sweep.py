"""The sweep screen (S): a grid typed in the cockpit, run in a worker thread, the ranked table
and the heatmap shown; progress (done/total, rate, ETA) while it runs; Escape cancels."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from cockpit.client import SweepProgress
from cockpit.tui.backtest_screen import FormError
from cockpit.tui.sweep_screen import (
    SweepForm,
    SweepScreen,
    build_request,
    parse_grid,
    progress_text,
)
from engine.backtest import BacktestOptions, load_market_data
from engine.config import load_config
from engine.research.cluster import ClusterOptions
from engine.research.params import grid_combinations
from engine.research.params import parse_params as engine_params
from engine.research.sweep import run_sweep
from tests.conftest import BARS_CSV
from tests.test_tui import WIDE, make_app, ready, screen_text, start_engine


@pytest.fixture
def small_bars(tmp_path: Path) -> Path:
    """The first 3,000 one-minute bars of the shared BTC file."""
    path = tmp_path / "bars3k.csv"
    with BARS_CSV.open() as src:
        path.write_text("".join(itertools.islice(src, 3001)))
    return path


async def open_sweep(pilot: Pilot[Any]) -> SweepScreen:
    await ready(pilot)
    await pilot.press("S")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, SweepScreen)
    return screen


async def fill(pilot: Pilot[Any], screen: SweepScreen, **fields: str) -> None:
    for wid, value in fields.items():
        field = screen.query_one(f"#{wid}", Input)
        field.focus()
        await pilot.pause()
        field.value = value if wid in ("data", "grid") else ""
        if value and wid not in ("data", "grid"):
            await pilot.press(*value)
        await pilot.pause()
        assert field.value == value


async def wait_done(pilot: Pilot[Any], screen: SweepScreen) -> None:
    for _ in range(1200):
        if not screen.running:
            break
        await pilot.pause(0.05)
    assert not screen.running
    await pilot.pause()


async def test_sweep_screen_runs_and_shows_the_ranked_table(
    data_dir: Path, small_bars: Path
) -> None:
    engine = await start_engine(data_dir)
    try:
        app = make_app(engine)
        async with app.run_test(size=WIDE) as pilot:
            screen = await open_sweep(pilot)
            await fill(
                pilot,
                screen,
                data=str(small_bars),
                grid="fast=5,10,40 slow=30,60",
                qty="0.1",
                workers="0",
                sort="pnl",
            )
            await pilot.press("enter")
            await pilot.pause()
            await wait_done(pilot, screen)
            assert screen.error == ""
            report = screen.report
            assert "Sweep of ema_cross" in report and "ran 5, skipped 1" in report
            assert "pnl by fast (rows) and slow (columns)" in report  # the heatmap grid
            expected = run_sweep(
                load_config(None),
                load_market_data(small_bars),
                BacktestOptions(strategy="ema_cross", qty=0.1),
                grid_combinations(engine_params([("fast", "5,10,40"), ("slow", "30,60")])),
                sort="pnl",
                cluster=ClusterOptions(workers=0),
            )
            best = expected.rows[0]
            assert best.metrics is not None
            first_row = next(ln for ln in report.splitlines() if ln.startswith("1 "))
            assert first_row.split()[1:3] == [str(best.params["fast"]), str(best.params["slow"])]
            assert "done in" in screen_text(app)
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is app.main
    finally:
        await engine.stop()


async def test_sweep_screen_progress_and_cancel(
    data_dir: Path, small_bars: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While it runs the status line shows done/total, rate and ETA; Escape cancels."""
    import engine.research.sweep as sweep_mod

    gate = threading.Event()
    real = sweep_mod.run_task

    def held(packed: Any, task: Any, cancel: Any = None) -> Any:
        if task.index >= 1:
            gate.wait(10)  # the first combination finishes; the rest wait for the test
        return real(packed, task, cancel)

    monkeypatch.setattr(sweep_mod, "run_task", held)
    engine = await start_engine(data_dir)
    try:
        app = make_app(engine)
        async with app.run_test(size=WIDE) as pilot:
            screen = await open_sweep(pilot)
            await fill(pilot, screen, data=str(small_bars), workers="0")
            await pilot.press("enter")
            for _ in range(200):
                await pilot.pause(0.05)
                if "1 / 6 combinations" in screen_text(app):
                    break
            text = screen_text(app)
            assert "1 / 6 combinations (17%)" in text and "/s · ETA" in text
            await pilot.press("escape")
            await pilot.pause()
            gate.set()
            await wait_done(pilot, screen)
            assert screen.error == "cancelled" and screen.report == ""
            assert isinstance(app.screen, SweepScreen)  # the first Escape only cancels
    finally:
        gate.set()
        await engine.stop()


def test_form_errors_name_the_field() -> None:
    with pytest.raises(FormError, match="grid: expected NAME=VALUES"):
        build_request(SweepForm(data="x.csv", grid="fast"))
    with pytest.raises(FormError, match="sort: must be one of"):
        build_request(SweepForm(data="x.csv", grid="fast=5", sort="profit"))
    with pytest.raises(FormError, match="workers"):
        build_request(SweepForm(data="x.csv", grid="fast=5", workers="-1"))
    req = build_request(SweepForm(data="x.csv", grid="fast=5,10 slow=30:90:30", workers="0"))
    assert req.grid == {"fast": "5,10", "slow": "30:90:30"} and req.workers == 0
    assert parse_grid("a=1  b=2") == {"a": "1", "b": "2"}
    assert progress_text(SweepProgress(3, 12, 1.5, 6.0), 2.0) == (
        "running: 3 / 12 combinations (25%) · 1.50/s · ETA 0:06"
    )


def test_sweep_key_is_in_help_and_palette() -> None:
    from cockpit.tui.help_screen import help_table
    from cockpit.tui.keys import ACTIONS

    assert [a for a in ACTIONS if a.key == "S" and a.action == "sweep"]
    assert any("Sweep" in str(cell) for cell in help_table().columns[1]._cells)
