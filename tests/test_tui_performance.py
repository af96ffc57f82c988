"""The performance screen shows each strategy's figures and state, profit per day (or says there
is none yet) and the order path's latency, and keeps them current."""

from __future__ import annotations

from typing import Any

from textual.app import App

from cockpit.tui.performance_screen import NO_FILLS, PerformanceScreen
from cockpit.tui.table import KeyedTable


def snapshot(**perf: Any) -> dict[str, Any]:
    return {
        "strategies": [
            {"id": "ema_cross", "approval": "auto", "paused": False},
            {
                "id": "donchian",
                "approval": "approve",
                "paused": True,
                "paused_by": "ops",
                "pause_reason": "lunch",
            },
            {"id": "rsi", "approval": "auto", "paused": False},
        ],
        "breakers": [
            {
                "name": "consecutive_losses",
                "scope": "rsi",
                "tripped": True,
                "reason": "3 losses in a row",
            },
        ],
        "performance": {
            "strategies": [
                {
                    "strategy": "ema_cross",
                    "realized_pnl": 12.5,
                    "unrealized_pnl": -1.0,
                    "fees": 0.8,
                    "round_trips": 4,
                    "wins": 3,
                    "win_rate": 0.75,
                    "fills": 8,
                    "slippage_cost": 0.1,
                    "slippage_bps": 1.25,
                    "model_bps": 2.0,
                    "exposure": 1500.0,
                    "positions": {},
                },
            ],
            "daily": [],
            "latency": {
                "quote>decision": {"n": 3, "p50_ms": 0.05, "p99_ms": 0.2},
                "decision>durable": {"n": 3, "p50_ms": 2.5, "p99_ms": 14.0},
            },
            **perf,
        },
    }


class Host(App[None]):
    def __init__(self, snap: dict[str, Any]) -> None:
        super().__init__()
        self.snap = snap

    def on_mount(self) -> None:
        self.push_screen(PerformanceScreen(lambda: self.snap))


def cells(table: KeyedTable, key: str) -> list[str]:
    return [str(c).strip() for c in table.get_row(key)]


async def test_each_strategy_shows_its_figures_and_why_it_is_in_its_state() -> None:
    app = Host(snapshot())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        table = app.screen.query_one("#perf-strategy-table", KeyedTable)
        ema = cells(table, "ema_cross")
        assert ema[1].startswith("active") and ema[4] == "4" and ema[5] == "75%"
        assert ema[7] == "1.2/2.0"
        assert "+12.50" in ema[2]
        assert cells(table, "donchian")[1] == "paused by ops: lunch"
        assert cells(table, "rsi")[1].startswith("tripped consecutive_losses: 3 l")
        assert cells(table, "rsi")[4] == "0" and cells(table, "rsi")[5] == "-"
        latency = app.screen.query_one("#perf-latency-table", KeyedTable)
        assert cells(latency, "decision>durable")[1:] == ["3", "2.500", "14.0"]
        assert cells(latency, "acknowledged>fill")[1:] == ["0", "-", "-"]
        empty = app.screen.query_one("#perf-daily-empty")
        assert empty.display and NO_FILLS in str(empty.render())
        assert not app.screen.query_one("#perf-daily-plot").display


async def test_profit_per_day_is_drawn_once_there_are_fills_and_escape_goes_back() -> None:
    snap = snapshot()
    app = Host(snap)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        snap["performance"]["daily"] = [
            {"day": "2026-12-05", "pnl": -3.0},
            {"day": "2026-12-06", "pnl": 10.5},
        ]
        snap["performance"]["strategies"][0]["round_trips"] = 5
        screen = app.screen
        screen.refresh_figures()
        await pilot.pause()
        assert not screen.query_one("#perf-daily-empty").display
        assert screen.query_one("#perf-daily-plot").display
        assert cells(screen.query_one("#perf-strategy-table", KeyedTable), "ema_cross")[4] == "5"
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, PerformanceScreen)
