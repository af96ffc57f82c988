"""The cockpit shows protective exits: stop, target and trail with their distance in the
Positions pane, and the decision chain links an exit to the entry it closes."""

from __future__ import annotations

from typing import Any

import pytest

from cockpit.tui.chain_screen import chain_text
from cockpit.tui.positions import exit_cell
from cockpit.tui.view import TraceStore
from tests.test_tui_venues import (
    NARROW,
    WIDE,
    FakeClient,
    make_app,
    plain,
    position,
    ready,
    venues_scenario,
)


def _exits(**kw: Any) -> dict[str, Any]:
    out = {
        "strategy": "ema",
        "side": 1,
        "entry": 100.0,
        "stop": 98.0,
        "target": 104.0,
        "trail": None,
        "time_stop_ts": None,
        "bars_held": 3,
        "entry_decision_id": "d1-7",
        "exit_in_flight": False,
    }
    out.update(kw)
    return out


def test_a_cell_shows_the_level_nearest_the_mark_and_its_distance() -> None:
    assert plain(exit_cell([_exits()], "stop", 100.0)) == "98.0000 -2.0%"
    assert plain(exit_cell([_exits()], "target", 100.0)) == "104.000 +4.0%"
    assert plain(exit_cell([_exits()], "trail", 100.0)) == "-"
    two = [_exits(), _exits(strategy="rsi", stop=99.0)]
    assert plain(exit_cell(two, "stop", 100.0)) == "99.0000 -1.0%"  # fires first


@pytest.mark.parametrize("size", [WIDE, NARROW])
async def test_the_positions_pane_shows_stop_target_and_trail_only_when_set(
    size: tuple[int, int],
) -> None:
    venues = {"kraken": venues_scenario()["kraken"]}
    client = FakeClient(venues)
    held = position("SOL/USDT", "kraken", 10.0, 150.0)
    client.snap["positions"] = [
        dict(held, exits=[_exits(entry=150.0, stop=147.0, trail=148.5, target=None)])
    ]
    app = make_app(client)
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        table = app.main.positions.query_one("#positions-table")
        assert {"stop", "target", "trail"} <= set(table.column_keys)  # type: ignore[attr-defined]
        assert plain(table.get_cell("SOL/USDT", "stop")) == "147.000 -2.0%"  # type: ignore[attr-defined]
        assert plain(table.get_cell("SOL/USDT", "trail")) == "148.500 -1.0%"  # type: ignore[attr-defined]
        assert plain(table.get_cell("SOL/USDT", "target")) == "-"  # type: ignore[attr-defined]
    plain_client = FakeClient(venues)
    plain_client.snap["positions"] = [held]
    app = make_app(plain_client)
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        table = app.main.positions.query_one("#positions-table")
        assert "stop" not in table.column_keys  # type: ignore[attr-defined]


def _decision(did: str, rule: str, entry: str = "") -> dict[str, Any]:
    return {
        "event": "decision",
        "seq": 1,
        "ts": 1,
        "decision": {
            "decision_id": did,
            "ts": 1,
            "strategy_id": "ema",
            "symbol": "BTC/USDT",
            "venue": "sim",
            "action": "sell" if entry else "buy",
            "rule": rule,
            "reason": "stop-loss at 98.00: entry 100.00, \u22122.0%" if entry else "cross",
            "confidence": 1.0,
            "inputs": {},
            "reduce_only": bool(entry),
            "entry_decision_id": entry,
        },
    }


def test_the_chain_links_an_exit_and_its_entry_both_ways() -> None:
    store = TraceStore()
    store.apply(_decision("d1-7", "ema_cross_up"))
    store.apply(_decision("d1-9", "stop_loss", entry="d1-7"))
    exit_entry, entry = store.get("d1-9"), store.get("d1-7")
    assert exit_entry is not None and entry is not None
    assert "exits the position opened by decision d1-7" in chain_text(exit_entry).plain
    assert "closed by protective exit d1-9 (stop loss)" in chain_text(entry).plain
