"""The TUI's boundaries (issue 12): it reaches the engine only through ``cockpit.client``, and its
dialogs talk to the app in messages (up) and get the engine's reply as data (down).

The import rules are also import-linter contracts in pyproject.toml (``lint-imports``); the
first tests here hold the direct part of them without needing the tool.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult
from textual.widgets import Input, OptionList, Static

from cockpit.tui.dialog import Dialog
from cockpit.tui.filter_screen import FilterScreen
from cockpit.tui.kill_screen import KillScreen
from cockpit.tui.release_screen import ReleaseScreen
from cockpit.tui.view import TraceFilter

REPO = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth of the file (function bodies included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def tops(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_the_tui_imports_no_engine_module_but_through_cockpit_client() -> None:
    """The shared vocabulary (engine.vocabulary: kill levels, exit codes, event kinds; it imports
    nothing) is the one engine module both sides speak; anything else goes through the client."""
    files = [*sorted((REPO / "cockpit" / "tui").glob("*.py")), REPO / "cockpit" / "app.py"]
    offenders = {
        str(f.relative_to(REPO)): sorted(
            m for m in imported_modules(f) if tops({m}) == {"engine"} and m != "engine.vocabulary"
        )
        for f in files
    }
    assert {f: m for f, m in offenders.items() if m} == {}
    # The backtest screen's argument types are the CLI's public ones, not backtest_cli's.
    screen = imported_modules(REPO / "cockpit" / "tui" / "backtest_screen.py")
    assert "cockpit.backtest_cli" not in screen
    assert {"cockpit.client", "cockpit.argtypes"} <= screen


def test_loading_the_cockpit_does_not_load_the_backtest_or_the_runtime() -> None:
    """Attached over the socket, the cockpit loads no trading core: cockpit.client imports the
    engine's modules inside the functions that use them."""
    code = (
        "import sys, cockpit.app; "
        "print(sorted(m for m in sys.modules if m.startswith(('engine.backtest', "
        "'engine.runtime', 'engine.core', 'cockpit.backtest_report'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------- messages up, data down


class Host(App[None]):
    """An app that only records what its dialogs ask for (no engine, no run_command)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[Dialog.CommandSubmitted] = []
        self.filters: list[TraceFilter] = []

    def compose(self) -> ComposeResult:
        yield Static("main")

    def on_dialog_command_submitted(self, message: Dialog.CommandSubmitted) -> None:
        self.asked.append(message)

    def on_filter_screen_changed(self, message: FilterScreen.Changed) -> None:
        self.filters.append(message.trace_filter)


async def test_a_dialog_posts_its_command_and_closes_on_the_reply_handed_down() -> None:
    app = Host()
    async with app.run_test() as pilot:
        screen = KillScreen({"engaged": False})
        await app.push_screen(screen)
        await pilot.pause()
        await pilot.press("enter")
        await pilot.press("enter")  # a second Enter before the answer sends nothing more
        await pilot.pause()
        assert [(m.command, m.args) for m in app.asked] == [
            ("kill", {"level": "halt", "reason": "kill switch from the cockpit"})
        ]
        assert app.asked[0].dialog is screen
        # A refusal keeps the dialog open with the reason; the next Enter asks again.
        screen.answered(app.asked[0], {"ok": False, "message": "journal is down"})
        await pilot.pause()
        assert app.screen is screen
        assert "refused: journal is down" in str(screen.query_one("#dialog-message").render())
        await pilot.press("enter")
        await pilot.pause()
        assert len(app.asked) == 2
        # An answer to the earlier request changes nothing; the answer to this one closes.
        screen.answered(app.asked[0], {"ok": True, "message": "stale"})
        await pilot.pause()
        assert app.screen is screen
        screen.answered(app.asked[1], {"ok": True, "message": "engaged"})
        await pilot.pause()
        assert app.screen is not screen


async def test_a_reply_after_the_dialog_closed_leaves_the_screen_below_alone() -> None:
    app = Host()
    async with app.run_test() as pilot:
        below = app.screen
        screen = KillScreen({"engaged": False})
        await app.push_screen(screen)
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is below
        screen.answered(app.asked[0], {"ok": True, "message": "engaged"})
        await pilot.pause()
        assert app.screen is below  # not popped by a late reply


async def test_release_offers_the_override_from_the_reply_handed_down() -> None:
    app = Host()
    async with app.run_test() as pilot:
        screen = ReleaseScreen({"engaged": True, "level": "halt", "by": "test", "reason": "x"})
        await app.push_screen(screen)
        await pilot.pause()
        screen.query_one("#confirm", Input).value = "RELEASE"
        screen.query_one("#reason", Input).value = "checked"
        screen.query_one("#reason", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        seen = {"level": "halt", "by": "test", "reason": "x", "ts": None}  # what it showed
        assert [(m.command, m.args) for m in app.asked] == [
            ("release", {"reason": "checked", "confirm": "RELEASE", "seen": seen})
        ]
        screen.answered(app.asked[0], {"ok": False, "message": "the condition still holds"})
        await pilot.pause()
        assert screen.query_one("#override").has_class("-offered")


async def test_the_filter_dialog_posts_each_change() -> None:
    app = Host()
    async with app.run_test() as pilot:
        screen = FilterScreen(TraceFilter(outcome="acting"), ["s1"], ["BTC/USDT"], ["binance"])
        await app.push_screen(screen)
        for _ in range(3):
            await pilot.pause()
        screen.query_one("#f-symbol", OptionList).highlighted = 1
        await pilot.pause()
        assert app.filters[-1] == TraceFilter(symbol="BTC/USDT", outcome="acting")
        await pilot.press("x")
        await pilot.pause()
        assert app.filters[-1] == TraceFilter(outcome="acting")


def test_dialogs_take_no_callbacks() -> None:
    """What used to be the app's own methods handed to each dialog is gone from the signatures."""
    import inspect

    from cockpit.tui import (
        flatten_screen,
        kill_screen,
        rearm_screen,
        release_screen,
        resolve_screen,
        strategy_screen,
    )

    dialogs: list[Any] = [
        kill_screen.KillScreen,
        release_screen.ReleaseScreen,
        strategy_screen.StrategyScreen,
        rearm_screen.RearmScreen,
        flatten_screen.FlattenScreen,
        resolve_screen.ResolveScreen,
        FilterScreen,
    ]
    for cls in dialogs:
        params = inspect.signature(cls.__init__).parameters
        assert not {"submit", "apply"} & set(params), cls.__name__
