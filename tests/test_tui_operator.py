"""What a trader can do from the CLI they can do from the cockpit: switch a strategy's approval
mode (graduation shown, enforced by the engine), change a limit with a reason, read the audit
trail (the same records as `cockpit audit`, across a restart) and the performance views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.widgets import Input, Static

from cockpit.app import CockpitApp
from cockpit.tui.approval_mode_screen import ApprovalModeScreen
from cockpit.tui.audit_screen import AuditScreen
from cockpit.tui.limit_screen import LimitScreen
from cockpit.tui.performance_screen import PerformanceScreen
from cockpit.tui.table import KeyedTable
from engine.client import InProcessClient
from tests.test_tui import (
    NARROW,
    WIDE,
    feed_until,
    fixed_clock,
    make_app,
    plain,
    ready,
    settle,
    start_engine,
)


def text_of(app: CockpitApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def row(table: KeyedTable, key: str) -> list[str]:
    return [plain(c) for c in table.get_row(key)]


async def type_in(pilot: Any, selector: str, text: str) -> None:
    box = pilot.app.screen.query_one(selector, Input)
    box.value = text
    box.focus()
    await pilot.pause()


async def open_limit_dialog(pilot: Any, engine: Any) -> float:
    """L: the limit dialog, on its first limit by name; returns that limit's value in force."""
    await pilot.press("L")
    await pilot.pause()
    assert isinstance(pilot.app.screen, LimitScreen)
    return float(engine.core.safety.kill_cfg.daily_loss_limit_pct)


async def test_approval_mode_shows_graduation_refuses_early_and_switches_when_earned(
    data_dir: Path,
) -> None:
    engine = await start_engine(data_dir)
    try:
        app = make_app(engine)
        async with app.run_test(size=NARROW) as pilot:
            await ready(pilot)
            ids = [s["id"] for s in engine.snapshot(trace=0)["strategies"]]
            sid = next(i for i in ids if engine.core.approvals.mode(i) == "approve")
            await pilot.press("M")
            await pilot.pause()
            assert isinstance(app.screen, ApprovalModeScreen)
            await pilot.press(*["down"] * ids.index(sid))
            await pilot.pause()
            options = app.screen.query_one("#strategies")
            assert "0/10 approved, 10 to go" in str(
                options.get_option_at_index(ids.index(sid)).prompt
            )
            assert str(options.get_option_at_index(0).prompt).endswith(" auto")  # ema_cross
            assert f"{sid}: approve -> auto" in text_of(app, "#choice")
            assert "not graduated yet" in text_of(app, "#choice")
            await pilot.press("enter")  # no reason: nothing is sent
            await pilot.pause()
            assert "a reason is required" in text_of(app, "#dialog-message")
            await type_in(pilot, "#reason", "trying early")
            await pilot.press("enter")
            await settle(pilot, engine)
            await pilot.pause()
            # Refused by the engine, said once, the dialog still open to correct.
            message = text_of(app, "#dialog-message")
            assert message.startswith("refused: ") and "refused: refused" not in message
            assert "10 more" in message
            assert isinstance(app.screen, ApprovalModeScreen)
            assert engine.core.approvals.mode(sid) == "approve"
            await pilot.press("escape")

            # Graduated (the threshold lowered to what it has): the switch goes through.
            engine.core.approvals.cfg = engine.core.approvals.cfg.model_copy(
                update={"auto_after_approved": 0}
            )
            await feed_until(engine, lambda s: s["strategies"][0]["auto_after"] == 0, step=1)
            await settle(pilot, engine)
            await pilot.pause(0.2)
            await pilot.press("M", *["down"] * ids.index(sid))
            await pilot.pause()
            await type_in(pilot, "#reason", "graduated")
            await pilot.press("enter")
            await settle(pilot, engine)
            assert engine.core.approvals.mode(sid) == "auto"
            assert not isinstance(app.screen, ApprovalModeScreen)
    finally:
        await engine.stop()


async def test_a_limit_changes_with_a_reason_and_the_audit_shows_before_and_after(
    data_dir: Path,
) -> None:
    engine = await start_engine(data_dir)
    try:
        app = make_app(engine)
        async with app.run_test(size=WIDE) as pilot:
            await ready(pilot)
            before = await open_limit_dialog(pilot, engine)
            await type_in(pilot, "#value", "lots")
            await pilot.press("enter")
            await pilot.pause()
            assert "type a number" in text_of(app, "#dialog-message")
            await type_in(pilot, "#value", "-1")
            await type_in(pilot, "#reason", "testing the bound")
            await pilot.press("enter")
            await settle(pilot, engine)
            await pilot.pause()
            assert text_of(app, "#dialog-message").startswith("refused: ")
            assert engine.core.safety.kill_cfg.daily_loss_limit_pct == before
            await type_in(pilot, "#value", "2.5")
            await type_in(pilot, "#reason", "quiet market today")
            await pilot.press("enter")
            await settle(pilot, engine)
            assert engine.core.safety.kill_cfg.daily_loss_limit_pct == 2.5
            assert not isinstance(app.screen, LimitScreen)

            await pilot.press("A")
            await pilot.pause(0.7)  # the light pull brings the newest records
            assert isinstance(app.screen, AuditScreen)
            table = app.screen.query_one("#audit-table", KeyedTable)
            rows = [row(table, str(k.value)) for k in table.rows]
            accepted = [r for r in rows if r[1] == "set_limit" and r[3] == "ok"]
            refused = [r for r in rows if r[1] == "set_limit" and r[3] == "refused"]
            assert len(accepted) == 1 and len(refused) == 1
            assert accepted[0][2] == "daily_loss_limit_pct"
            assert accepted[0][4] == f"value: {before:g} -> 2.5"
            assert accepted[0][5] == "quiet market today"
            assert accepted[0][6].endswith("@cockpit")
            assert rows.index(accepted[0]) < rows.index(refused[0])  # newest first
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, AuditScreen)
    finally:
        await engine.stop()


async def test_the_audit_view_keeps_what_was_done_before_a_restart(data_dir: Path) -> None:
    engine = await start_engine(data_dir)
    try:
        reply = await InProcessClient(engine).command(
            "pause", {"strategy": "rsi_reversion", "reason": "before the restart"}
        )
        assert reply["ok"], reply
    finally:
        await engine.stop()
    engine = await start_engine(data_dir)
    try:
        app = make_app(engine)
        async with app.run_test(size=WIDE) as pilot:
            await ready(pilot)
            await pilot.press("A")
            await pilot.pause()
            table = app.screen.query_one("#audit-table", KeyedTable)
            rows = [row(table, str(k.value)) for k in table.rows]
            assert any(
                r[1] == "pause" and r[2] == "rsi_reversion" and r[5] == "before the restart"
                for r in rows
            ), rows
    finally:
        await engine.stop()


async def test_performance_screen_shows_what_each_strategy_did(data_dir: Path) -> None:
    strategies = [
        {"id": "ema_cross", "kind": "ema_cross", "symbols": ["BTC/USDT"], "approval": "auto"},
    ]
    engine = await start_engine(data_dir, strategies=strategies)
    try:
        await feed_until(engine, lambda s: s["counters"]["fills"] >= 2, step=500)
        app = make_app(engine)
        async with app.run_test(size=NARROW) as pilot:
            await ready(pilot)
            await pilot.press("P")
            await pilot.pause(0.3)
            assert isinstance(app.screen, PerformanceScreen)
            table = app.screen.query_one("#perf-strategy-table", KeyedTable)
            cells = row(table, "ema_cross")
            perf = engine.snapshot(trace=0)["performance"]["strategies"][0]
            assert cells[1].startswith("active")
            assert cells[4] == str(perf["round_trips"])
            latency = app.screen.query_one("#perf-latency-table", KeyedTable)
            assert int(row(latency, "decision>durable")[1]) >= 1
    finally:
        await engine.stop()


async def test_a_viewer_may_read_the_audit_and_performance_but_not_change_modes_or_limits(
    data_dir: Path,
) -> None:
    engine = await start_engine(data_dir)
    try:
        app = CockpitApp(InProcessClient(engine, role="viewer"), clock=fixed_clock)
        async with app.run_test(size=NARROW) as pilot:
            await ready(pilot)
            for key in ("M", "L"):
                await pilot.press(key)
                await pilot.pause()
                assert app.screen is app.main, key
            await pilot.press("A")
            await pilot.pause()
            assert isinstance(app.screen, AuditScreen)
            await pilot.press("escape", "P")
            await pilot.pause()
            assert isinstance(app.screen, PerformanceScreen)
    finally:
        await engine.stop()


def test_a_superseded_approval_reads_superseded_in_the_trace_and_its_filter() -> None:
    from cockpit.tui.view import OUTCOME_LABELS, OUTCOMES, ChainEntry

    entry = ChainEntry(
        "d1-1",
        1,
        {"decision_id": "d1-1", "action": "buy"},
        intents=[{"outcome": "awaiting_approval", "intent": {"intent_id": "ck-1-1"}}],
        approvals=[{"intent_id": "ck-1-1", "status": "superseded"}],
    )
    assert entry.outcome() == ("superseded", "superseded")
    assert "superseded" in OUTCOMES and OUTCOME_LABELS["superseded"] == "superseded"


async def test_an_expired_approval_lets_go_of_its_decision(data_dir: Path) -> None:
    """Nobody answers for hours: the decisions kept for approvals that expired do not pile up."""
    engine = await start_engine(data_dir)
    try:
        await feed_until(engine, lambda s: s["approvals"], step=20)
        ids = {a["id"].removeprefix("ap-") for a in engine.snapshot(trace=0)["approvals"]}
        assert ids & set(engine.core._decisions)
        await feed_until(
            engine,
            lambda s: not ids & {a["id"].removeprefix("ap-") for a in s["approvals"]},
            step=200,
        )
        assert not ids & set(engine.core._decisions)
    finally:
        await engine.stop()


def test_the_log_shows_an_old_reason_with_a_newline_or_escape_on_one_line() -> None:
    """Reasons in journals written before the engine refused them may hold control characters:
    the log pane must not print a forged second line or send an escape to the terminal."""
    from cockpit.tui.view import LocalView

    view = LocalView()
    view.apply_events(
        [
            {
                "seq": 1, "event": "safety", "ts": 1, "what": "strategy", "subject": "ema_cross",
                "before": {"paused": False}, "after": {"paused": True}, "by": "ana",
                "reason": "lunch\n12:00:00 kill switch released\x1b[2J",
            }
        ]
    )  # fmt: skip
    [line] = list(view.log)
    assert "\n" not in line.text and "\x1b" not in line.text
    assert "lunch\\n12:00:00" in line.text and "\\x1b[2J" in line.text
