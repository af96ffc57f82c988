"""The cockpit's backtest screen (B): a strategy over a recorded file, the report in the screen.

The run happens in a worker thread; the report must be the one ``run_backtest_core`` gives for
the same inputs (the same PnL), a bad parameter is one line naming it, Escape closes.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from cockpit.backtest_report import _money
from cockpit.tui.backtest_screen import (
    BacktestForm,
    BacktestScreen,
    FormError,
    build_options,
    default_data_file,
    run_backtest_report,
)
from engine.backtest import (
    BacktestOptions,
    build_backtest_config,
    load_market_data,
    run_backtest_core,
)
from engine.config import load_config
from tests.conftest import BARS_CSV
from tests.test_tui import NARROW, WIDE, make_app, ready, screen_text, start_engine


@pytest.fixture
def small_bars(tmp_path: Path) -> Path:
    """The first 3,000 one-minute bars of the shared BTC file."""
    path = tmp_path / "bars3k.csv"
    with BARS_CSV.open() as src:
        path.write_text("".join(itertools.islice(src, 3001)))
    return path


async def open_backtest(pilot: Pilot[Any]) -> BacktestScreen:
    await ready(pilot)
    await pilot.press("B")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, BacktestScreen)
    return screen


async def fill(pilot: Pilot[Any], screen: BacktestScreen, **fields: str) -> None:
    """Type into the fields by keyboard: focus each, clear it, type the value (a file path
    is set directly: typing it a key at a time only makes the test slow)."""
    for wid, value in fields.items():
        field = screen.query_one(f"#{wid}", Input)
        field.focus()
        await pilot.pause()
        field.value = value if wid == "data" else ""
        if value and wid != "data":
            await pilot.press(*value)
        await pilot.pause()
        assert field.value == value


async def run_and_wait(pilot: Pilot[Any], screen: BacktestScreen) -> None:
    await pilot.press("enter")
    await pilot.pause()
    for _ in range(600):
        if not screen.running:
            break
        await pilot.pause(0.05)
    assert not screen.running
    await pilot.pause()


def expected_pnl(path: Path) -> str:
    opts = BacktestOptions(strategy="ema_cross", params={"fast": 10, "slow": 30})
    data = load_market_data(path)
    result = run_backtest_core(build_backtest_config(load_config(None), data, opts), data, opts)
    return _money(result.metrics.pnl, True)


@pytest.mark.parametrize("size", [WIDE, NARROW])
async def test_backtest_screen_runs_and_shows_the_report(
    data_dir: Path, small_bars: Path, size: tuple[int, int]
) -> None:
    engine = await start_engine(data_dir)
    try:
        app = make_app(engine)
        async with app.run_test(size=size) as pilot:
            screen = await open_backtest(pilot)
            assert screen.query_one("#data", Input).value == default_data_file()
            assert default_data_file().endswith("btc-perp-20211231-20220201_1m.csv.xz")
            await fill(
                pilot,
                screen,
                data=str(small_bars),
                strategy="ema_cross",
                params="fast=10 slow=30",
            )
            await run_and_wait(pilot, screen)
            assert screen.error == ""
            report = screen.report
            assert "round trips" in report and "win rate" in report
            pnl = expected_pnl(small_bars)
            assert f"PnL            {pnl} USDT" in report
            assert "Equity (USDT)" in report  # the chart, drawn as text
            assert "\x1b[" not in report  # no ANSI codes
            text = screen_text(app)
            assert "done in" in text
            # The report is on the screen (scroll to the result lines on a small terminal).
            for _ in range(10):
                if "round trips" in screen_text(app):
                    break
                await pilot.press("pagedown")
                await pilot.pause()
            text = screen_text(app)
            assert "round trips" in text and "win rate" in text
            assert pnl in text
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is app.main
    finally:
        await engine.stop()


@pytest.mark.parametrize("size", [WIDE, NARROW])
async def test_backtest_screen_bad_params_are_one_line(
    data_dir: Path, small_bars: Path, size: tuple[int, int]
) -> None:
    engine = await start_engine(data_dir)
    try:
        app = make_app(engine)
        async with app.run_test(size=size) as pilot:
            screen = await open_backtest(pilot)
            await fill(pilot, screen, data=str(small_bars), params="fast=50 slow=20")
            await run_and_wait(pilot, screen)
            assert screen.report == ""
            assert "\n" not in screen.error
            assert "fast" in screen.error and "less than slow" in screen.error
            assert "Traceback" not in screen_text(app)
            assert "fast=50: fast must be less than slow" in screen_text(app)
            # A file that is not there: one line too.
            await fill(pilot, screen, data=str(small_bars) + ".missing", params="")
            await run_and_wait(pilot, screen)
            assert "\n" not in screen.error and ".missing" in screen.error
            # Escape closes (nothing running).
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is app.main
    finally:
        await engine.stop()


async def test_backtest_escape_cancels_a_run(
    data_dir: Path, small_bars: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Escape during a run sets the cancel hook: the run stops, says so, the screen stays."""
    import engine.backtest as bt

    gate = threading.Event()
    real_load = bt.load_market_data

    def slow_load(*args: Any, **kwargs: Any) -> Any:
        gate.wait(10)  # hold the run until the test has pressed Escape
        return real_load(*args, **kwargs)

    monkeypatch.setattr(bt, "load_market_data", slow_load)
    engine = await start_engine(data_dir)
    try:
        app = make_app(engine)
        async with app.run_test(size=WIDE) as pilot:
            screen = await open_backtest(pilot)
            await fill(pilot, screen, data=str(small_bars))
            await pilot.press("enter")
            await pilot.pause()
            assert screen.running
            assert "running" in screen_text(app)
            await pilot.press("escape")
            await pilot.pause()
            gate.set()
            for _ in range(200):
                if not screen.running:
                    break
                await pilot.pause(0.05)
            assert screen.error == "cancelled" and screen.report == ""
            assert isinstance(app.screen, BacktestScreen)  # the first Escape only cancels
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is app.main
    finally:
        gate.set()
        await engine.stop()


def test_progress_and_cancel_hooks_reach_the_core(
    small_bars: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The screen's run passes its progress callback and cancel event to run_backtest_core."""
    import engine.backtest.simulation as sim

    monkeypatch.setattr(sim, "CHUNK", 500)
    cancel = threading.Event()
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        cancel.set()

    form = BacktestForm(data=str(small_bars), strategy="ema_cross", params="fast=10 slow=30")
    with pytest.raises(FormError, match=r"^cancelled$"):
        run_backtest_report(form, progress=progress, cancel=cancel)
    assert seen == [(500, 3000)]


def test_form_errors_name_the_field() -> None:
    with pytest.raises(FormError, match=r"^qty: "):
        build_options(BacktestForm(data="x.csv", qty="-1"))
    with pytest.raises(FormError, match=r"^fill: "):
        build_options(BacktestForm(data="x.csv", fill="mid"))
    with pytest.raises(FormError, match=r"^params: "):
        build_options(BacktestForm(data="x.csv", params="fast"))
    opts = build_options(BacktestForm(data="x.csv", params="fast=10, slow=30", no_breakers=True))
    assert opts.params == {"fast": 10, "slow": 30} and opts.breakers is False


def test_backtest_key_is_in_help_and_palette() -> None:
    from cockpit.tui.help_screen import help_table
    from cockpit.tui.keys import ACTIONS
    from cockpit.tui.palette import CockpitCommands

    assert [a for a in ACTIONS if a.key == "B" and a.action == "backtest"]
    assert "backtest" in [c[2] for c in CockpitCommands._commands(None)]  # type: ignore[arg-type]
    assert any("Backtest" in str(cell) for cell in help_table().columns[1]._cells)


def test_the_client_offers_the_engines_fill_and_slippage_modes() -> None:
    """cockpit.client keeps its own copy (the form must not load the engine): pinned here."""
    import engine.backtest as bt
    from cockpit.client import FILL_MODES, SLIPPAGE_MODES

    assert FILL_MODES == bt.FILL_MODES and SLIPPAGE_MODES == bt.SLIPPAGE_MODES
