"""An adversarial review of the operator surface's promises (alerts, heartbeat, metrics, the
attached cockpit, viewers, the audit log): each test is a hole found by attacking the real
engine, pinned so it stays closed."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from cockpit.socket_client import SocketClient
from engine import telemetry
from engine.control import ControlServer
from engine.datadir import JOURNAL_FILE
from engine.fanout import EventFanout
from engine.history import RowFilter, audit_records
from engine.runtime import Engine
from tests.test_control_support import (
    served,  # noqa: F401  (an engine and its socket)
)
from tests.test_review14 import _scrape
from tests.test_tui_inflight import waiting_approval
from tests.test_tui_venues import NOW, FakeClient, make_app, ready, refresh

# --------------------------------------------------------------------------- the audit log


async def test_every_refused_command_is_in_the_audit_log_a_viewers_too(
    served: tuple[Engine, ControlServer],  # noqa: F811
    data_dir: Path,
) -> None:
    """`cockpit audit` lists every operator command, accepted or refused: a viewer's try at the
    kill switch and an operator's command that did not validate were answered but left no
    record, so the audit could not show who tried what."""
    engine, server = served
    viewer = await SocketClient.open(server.path, role="viewer", name="laptop")
    operator = await SocketClient.open(server.path, role="operator", name="desk")
    try:
        tried = await viewer.command("kill", {"level": "flatten", "reason": "viewer try"})
        blank = await operator.command("pause", {"strategy": "ema_cross", "reason": " "})
        unknown = await operator.command(
            "frobnicate", {"reason": "x" * 2000, "n": [1, 2], "big": 10**30}
        )
    finally:
        await viewer.close()
        await operator.close()
    assert not tried["ok"] and "viewer" in tried["message"]
    assert not blank["ok"] and not unknown["ok"]
    assert engine.core.safety.kill.level is None
    records = [r.to_dict() for r in audit_records(data_dir / JOURNAL_FILE, RowFilter(None), 0)]
    assert [(r["action"], r["client"], r["accepted"]) for r in records] == [
        ("kill", "socket:laptop", False),
        ("pause", "socket:desk", False),
        ("frobnicate", "socket:desk", False),
    ]
    by_viewer, by_blank, by_unknown = records
    assert by_viewer["reason"] == "viewer try" and "viewer" in by_viewer["message"]
    assert "reason" in by_blank["message"]
    assert by_unknown["message"].startswith("unknown command")
    assert len(by_unknown["reason"]) <= 500  # what a client sent is kept bounded
    assert by_viewer["user"] and not by_viewer["changes"]


# --------------------------------------------------------------------------- metrics


def test_a_metrics_scraper_that_dribbles_its_request_is_cut_off_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each connection is served for at most SCRAPE_TIMEOUT_S. The bound was the socket's
    timeout, which each byte renews: a client sending its request a byte at a time (faster
    than the timeout) kept its slot for as long as it liked, and MAX_SCRAPERS of them kept
    Prometheus out for good. Here one dribbles a byte every 0.05 s against a 0.3 s bound."""
    monkeypatch.setattr(telemetry, "SCRAPE_TIMEOUT_S", 0.3)
    server = telemetry.MetricsServer("127.0.0.1", 0)
    server.start()
    try:
        request = b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 200
        conn = socket.create_connection(("127.0.0.1", server.port))
        conn.settimeout(0.05)
        cut = False
        try:
            for byte in request:  # 10 s at most; the bound is 0.3 s
                try:
                    conn.sendall(bytes([byte]))
                    cut = conn.recv(1) == b""  # the server closed its end
                except TimeoutError:
                    continue
                except OSError:
                    cut = True
                if cut:
                    break
        finally:
            conn.close()
        assert cut, "the server kept serving a dribbling request past its deadline"
        assert server._httpd.cut == 1
        assert _scrape(server.url) == 200
    finally:
        asyncio.run(server.close())


# --------------------------------------------------------------------------- the cockpit


def _waiting(approval_id: str, symbol: str, created: int) -> dict[str, Any]:
    return {
        **waiting_approval(),
        "id": approval_id,
        "hash": f"h-{approval_id}",
        "symbol": symbol,
        "created_ts": created,
    }


@pytest.mark.parametrize("key", ["a", "r"])
async def test_a_key_never_answers_an_approval_that_slid_under_the_cursor(key: str) -> None:
    """The trader reads the selected approval; it expires (or is superseded, or another
    operator answers it) and the next one slides into its row. Before: `a` then approved that
    next one, which the trader had never looked at. Now the first key after the row changed
    under the cursor says so and sends nothing; the next one answers the row now shown."""
    client = FakeClient()
    client.snap["approvals"] = [
        _waiting("ap-read", "BTC/USDT", NOW - 2),
        _waiting("ap-other", "ETH/USDT", NOW - 1),
    ]
    app = make_app(client)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("2")
        await pilot.pause()
        assert app.main.approvals.selected["id"] == "ap-read"
        client.snap["approvals"] = client.snap["approvals"][1:]  # ap-read expired
        await refresh(pilot)
        await pilot.press(key)
        await pilot.pause()
        assert client.commands == []
        await pilot.press(key)  # now on purpose, with ETH/USDT on screen
        await pilot.pause()
        assert [(name, args["id"]) for name, args in client.commands] == [
            ("approve" if key == "a" else "reject", "ap-other")
        ]


async def test_the_fleet_queue_notes_an_approval_that_slid_under_the_cursor() -> None:
    """The same in the fleet's queue, where the row that slides up may be another engine's:
    the overview's a and r act on it only once it was chosen (take_slid, as action_decide
    asks it first)."""
    from types import SimpleNamespace

    from textual.app import App, ComposeResult

    from cockpit.tui.fleet import CONNECTED, QueuePane

    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield QueuePane(id="queue")

    def member(name: str, *approvals: dict[str, Any]) -> Any:
        return SimpleNamespace(
            name=name, state=CONNECTED, snapshot={"now": NOW}, approvals=list(approvals)
        )

    read, other = _waiting("ap-read", "BTC/USDT", NOW - 2), _waiting("ap-2", "ETH/USDT", NOW)
    app = One()
    async with app.run_test(size=(80, 24)) as pilot:
        queue = app.query_one(QueuePane)
        queue.update_fleet([member("vps1", read), member("vps2", other)])
        queue.table.focus()
        await pilot.pause()
        assert queue.selected[1]["id"] == "ap-read" and queue.take_slid() is None
        queue.update_fleet([member("vps1"), member("vps2", other)])  # ap-read expired
        await pilot.pause()
        slid = queue.take_slid()
        assert slid is not None and (slid[0].name, slid[1]["id"]) == ("vps2", "ap-2")
        assert queue.take_slid() is None  # once: the next key acts on what is shown


async def test_a_kill_signal_that_finds_the_switch_engaged_is_in_the_audit_log(
    served: tuple[Engine, ControlServer],  # noqa: F811
    data_dir: Path,
) -> None:
    """`cockpit audit` lists every kill by SIGUSR1. One that found the switch already engaged
    (at its level or higher) changed nothing and left no record, so the audit could not show
    that someone signalled the engine; `cockpit kill` in the same case is recorded."""
    engine, _ = served
    await engine.engage_kill("flatten", by="signal", reason="SIGUSR1", source="signal")
    await engine.engage_kill("halt", by="signal", reason="SIGUSR1", source="signal")
    await engine.committed()
    records = [r.to_dict() for r in audit_records(data_dir / JOURNAL_FILE, RowFilter(None), 0)]
    assert [(r["user"], r["action"]) for r in records] == [("signal", "kill_switch")] * 2
    again = records[1]
    assert again["accepted"] and "already engaged at flatten" in again["message"]
    assert again["reason"] == "SIGUSR1" and not again["changes"]
    assert engine.core.safety.kill.level == "flatten"


async def test_the_release_dialog_never_lifts_a_kill_it_did_not_show(data_dir: Path) -> None:
    """The trader opens R on a halt, reads it, types RELEASE and a reason; meanwhile a
    colleague escalates to flatten for another reason. Before: Enter released the flatten
    the dialog had never shown. Now the release names the engagement the dialog showed, and
    the engine refuses it when the switch changed since; the switch stays engaged."""
    from textual.widgets import Input

    from cockpit.tui.release_screen import ReleaseScreen
    from tests.test_tui import NARROW, settle, start_engine
    from tests.test_tui import make_app as app_on
    from tests.test_tui import ready as app_ready

    engine = await start_engine(data_dir)
    try:
        await engine.command("kill", {"level": "halt", "reason": "looking at a feed"})
        app = app_on(engine)
        async with app.run_test(size=NARROW) as pilot:
            await app_ready(pilot)
            await pilot.press("R")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, ReleaseScreen)
            escalated = await engine.command(
                "kill", {"level": "flatten", "reason": "venue incident"}, user="alice"
            )
            assert escalated["ok"]
            screen.query_one("#confirm", Input).value = "RELEASE"  # typed, as a person would
            reason = screen.query_one("#reason", Input)
            reason.value = "feed is fine"
            reason.focus()
            await pilot.press("enter")
            await settle(pilot, engine)
            kill = engine.snapshot(trace=0)["kill_switch"]
            assert kill["engaged"] and kill["level"] == "flatten"
            assert app.last_reply is not None and not app.last_reply["ok"]
            assert "changed" in app.last_reply["message"]
    finally:
        await engine.stop()


async def test_a_release_naming_what_it_saw_is_refused_once_the_switch_changed(
    served: tuple[Engine, ControlServer],  # noqa: F811
) -> None:
    engine, _ = served
    await engine.command("kill", {"level": "halt", "reason": "first"})
    seen = {k: engine.core.safety.snapshot()["kill_switch"][k] for k in SEEN_KEYS}
    await engine.command("kill", {"level": "flatten", "reason": "second"}, user="alice")
    stale = await engine.command("release", {**RELEASE_ARGS, "seen": seen})
    assert not stale["ok"] and "flatten by alice: second" in stale["message"]
    assert engine.core.safety.kill.level == "flatten"
    seen = {k: engine.core.safety.snapshot()["kill_switch"][k] for k in SEEN_KEYS}
    fresh = await engine.command("release", {**RELEASE_ARGS, "seen": seen})
    assert fresh["ok"], fresh
    assert (await engine.command("kill", {"reason": "third"}))["ok"]
    assert (await engine.command("release", RELEASE_ARGS))["ok"]  # a script names nothing


SEEN_KEYS = ("level", "by", "reason", "ts")
RELEASE_ARGS = {"confirm": "RELEASE", "reason": "checked"}


async def test_the_audit_screen_at_80x24_shows_who_and_why_of_the_selected_action() -> None:
    """At 80 columns the audit table's why and who@from columns are off screen (and the row
    cursor does not scroll to them), so the trail did not say who did it. The selected record
    is now shown in full under the table: who, from where, why, and what it changed."""
    from textual.app import App

    from cockpit.tui.audit_screen import AuditScreen
    from tests.test_tui import static_text as shown

    records = [
        {
            "key": "e1", "ts": NOW, "user": "mallory", "client": "socket:laptop",
            "action": "kill", "subject": "halt", "accepted": False, "reason": "just testing",
            "message": "refused: kill needs an operator; this connection is a read-only viewer",
            "changes": [],
        },
    ]  # fmt: skip

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(AuditScreen(lambda: (1, records)))

    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        detail = shown(app, "#audit-detail")
        assert "mallory@socket:laptop" in detail and "just testing" in detail
        assert "refused" in detail and "read-only viewer" in detail


# --------------------------------------------------------------------------- alerts


async def test_a_kill_while_the_journal_is_down_is_announced_once_the_kill_file_holds_it(
    data_dir: Path,
) -> None:
    """A kill engaged while the journal cannot write is kept in the KILL file (durable: it
    holds after a restart). Its event was dropped with everything the journal could not
    record, so no kill_engaged alert went out (nor a headless line, nor a client event):
    the one alert that must leave within 5 s never left. It is shown once the file holds it."""
    from engine.alert_text import AlertText
    from engine.vocabulary import AlertKind
    from tests.test_journal_failure import break_journal, feed, started, until_blocked

    engine = await started(data_dir)
    shown: list[dict[str, Any]] = []
    engine.fanout.watchers.append(shown.append)  # where the alert dispatcher listens
    try:
        await feed(engine, 200)
        break_journal(engine.journal)
        await until_blocked(engine)
        reply = await engine.command("kill", {"level": "flatten", "reason": "disk trouble"})
        assert reply["ok"] and engine.kill_file.read_text().strip() == "flatten"
        kills = [i for i in shown if i["event"] == "safety" and i["what"] == "kill_switch"]
        assert len(kills) == 1 and kills[0]["after"]["kill_level"] == "flatten"
        alert = AlertText("[paper]").describe(kills[0])
        assert alert is not None and alert.kind == AlertKind.KILL_ENGAGED
        await engine.engage_kill("flatten", by="system", reason="again", source="drawdown")
        assert len([i for i in shown if i["event"] == "safety"]) == 1  # nothing new to say
    finally:
        await engine.stop()


def test_a_burst_summary_dropped_by_a_full_lane_counts_every_alert_it_held() -> None:
    """A burst over the rate limit is held and goes out as one summary; when that summary
    meets a full lane it is dropped. It was counted as one alert dropped, so `alerts 1
    dropped` (the Safety pane, status, cockpit_alerts_dropped_total) hid that the trader never
    heard of the five fills it stood for."""
    from tests.test_alerts import dispatcher, fill_event

    d = dispatcher(
        urls=["json://127.0.0.1:9/hook"], events=["fill"], max_per_window=1, queue_size=1
    )
    fanout = EventFanout()
    fanout.watchers.append(d.observe)
    fanout.show(fill_event(0))  # admitted: the lane (one place) is full from here on
    for i in range(1, 6):
        fanout.show(fill_event(i))  # held by the rate limit
    assert d.dropped == 0 and d.queued == 1
    assert d.release_held(force=True) == 1  # the summary of five meets the full lane
    assert d.dropped == 5
