"""Alerts through apprise, delivered to a real HTTP server on loopback (``json://`` posts).

What a trader relies on: each alert kind arrives and says what to do; a burst over a route's
rate limit is summed up, never silently lost; a full queue drops (counted) and never holds the
engine; a kill alert leaves within 5 s however busy the other alerts are; the command hook gets
the alert as JSON and is killed on its timeout; and no token from the environment is ever shown.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.alert_send import CommandDestination
from engine.alert_text import Alert, AlertText
from engine.alert_urls import redact
from engine.alerts import AlertDispatcher, Window
from engine.config import AlertsConfig, ConfigError, check_runnable, parse_config
from engine.events import (
    BreakerChanged,
    EngineBlocked,
    EngineEvent,
    FillReceived,
    SafetyChanged,
    VenueChanged,
)
from engine.fanout import EventFanout
from engine.runtime import Engine
from engine.types import Fill, Liquidity, Side
from engine.vocabulary import ALERT_KINDS, AlertKind, AlertKindName
from tests.alert_hook import Hook
from tests.conftest import REPO, default_dict, fast_config

SECRET = "TOKEN-s3cr3t-9f8e7d6c"
WAIT_S = 10.0  # generous bound for "it arrived"


class _NoEngine:
    core = None


def dispatcher(**alerts: Any) -> AlertDispatcher:
    return AlertDispatcher(AlertsConfig.model_validate(alerts))


def fill_event(i: int = 0, strategy: str = "ema_cross") -> FillReceived:
    fill = Fill(
        f"f{i}", f"ck-1-{i}", strategy, "BTC/USDT", "sim", Side.BUY, 0.01, 60_000.0 + i, 0.6,
        Liquidity.TAKER, 1_700_000_000_000_000_000 + i,
    )  # fmt: skip
    return FillReceived(fill, 1.5, 0.01 * (i + 1), 60_000.0, 2.0)


def show(fanout: EventFanout, *events: EngineEvent) -> None:
    for ev in events:
        fanout.show(ev)


async def running(d: AlertDispatcher) -> asyncio.Task[None]:
    task = asyncio.create_task(d.run(_NoEngine()))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# ------------------------------------------------------------------------------ vocabulary


def test_alert_kind_literal_is_the_vocabulary() -> None:
    assert get_args(AlertKindName) == ALERT_KINDS
    assert AlertKind.TEST not in ALERT_KINDS


# ------------------------------------------------------------------------------ config


def test_default_config_has_no_alerts_and_the_documented_example_parses() -> None:
    assert parse_config(default_dict()).alerts is None
    text = (REPO / "config" / "default.toml").read_text()
    start = text.index("# [alerts]")
    block = "\n".join(
        line.removeprefix("#").removeprefix(" ")
        for line in text[start:].splitlines()
        if line.startswith("#")
    )
    example = tomllib.loads(block)
    cfg = parse_config({"alerts": example["alerts"]})
    assert cfg.alerts is not None and cfg.alerts.routes and cfg.alerts.command is not None


@pytest.mark.parametrize(
    ("alerts", "expected"),
    [
        ({}, "has no destination"),
        ({"urls": ["json://bob:hunter2pass@example.com/x"]}, "holds a password"),
        ({"urls": ["nosuchscheme://example.com/x"]}, "apprise has no service"),
        ({"urls": ["json://127.0.0.1/h"], "daily_summary_utc": "24:00"}, "HH:MM"),
        ({"urls": ["json://127.0.0.1/h"], "events": ["daily_summary"]}, "daily_summary_utc"),
        ({"urls": ["json://127.0.0.1/h"], "events": ["fills"]}, "alerts.events[0]"),
        ({"routes": {"command": {"urls": ["json://127.0.0.1/h"]}}}, "cannot name a route"),
        ({"routes": {"desk": {}}}, "routes.desk has no destination"),
        ({"urls": ["json://127.0.0.1/h"], "max_per_window": 0}, "max_per_window"),
        ({"urls": ["json://127.0.0.1/h"], "url": "json://x"}, "unknown key"),
        ({"command": {"argv": []}}, "command.argv"),
    ],
)
def test_config_rejects_with_one_line_never_echoing_a_url(
    alerts: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"alerts": alerts})
    text = "\n".join(err.value.problems)
    assert expected in text, text
    assert "hunter2pass" not in text and "example.com/x" not in text


def test_a_missing_or_empty_variable_is_a_start_error_naming_it(monkeypatch: Any) -> None:
    cfg = parse_config({"alerts": {"urls_env": ["COCKPIT_TEST_ALERT_URL"]}})
    monkeypatch.delenv("COCKPIT_TEST_ALERT_URL", raising=False)
    with pytest.raises(ConfigError, match=r"COCKPIT_TEST_ALERT_URL .*is not set"):
        check_runnable(cfg)
    monkeypatch.setenv("COCKPIT_TEST_ALERT_URL", "  ")
    with pytest.raises(ConfigError, match=r"COCKPIT_TEST_ALERT_URL .*is empty"):
        check_runnable(cfg)
    monkeypatch.setenv("COCKPIT_TEST_ALERT_URL", f"nosuch://{SECRET}")
    with pytest.raises(ConfigError) as err:
        check_runnable(cfg)
    assert "COCKPIT_TEST_ALERT_URL" in str(err.value) and SECRET not in str(err.value)
    with pytest.raises(ConfigError, match="COCKPIT_TEST_ALERT_URL"):
        Engine(cfg, "/nonexistent-never-used")  # the engine refuses to be built too
    monkeypatch.setenv("COCKPIT_TEST_ALERT_URL", f"json://127.0.0.1:9/{SECRET}")
    check_runnable(cfg)


def test_redacted_names_show_scheme_and_host_only() -> None:
    assert redact(f"json://127.0.0.1:8080/hook/{SECRET}") == "json://127.0.0.1:8080"
    assert redact(f"jsons://user:{SECRET}@hooks.example.com/x?t={SECRET}") == (
        "jsons://hooks.example.com"
    )
    # The "host" of these is the token itself: hidden.
    assert redact(f"tgram://123456:{SECRET}/98765") == "tgram://***"
    assert redact(f"discord://4174216298/{SECRET}") == "discord://***"


# ------------------------------------------------------------------------------ content


async def test_each_routed_kind_arrives_saying_what_to_do() -> None:
    with Hook() as hook:
        d = dispatcher(urls=[hook.url()], events=list(ALERT_KINDS), daily_summary_utc="21:00")
        fanout = EventFanout()
        fanout.watchers.append(d.observe)
        task = await running(d)
        ts = 1_700_000_000_000_000_000
        kill_before = {"trading_state": "ACTIVE", "kill_level": None}
        kill_after = {"trading_state": "HALTED", "kill_level": "flatten"}
        breaker = {
            "breaker": "consecutive_losses", "scope": "ema_cross", "tripped": True,
            "action": "pause_strategy", "reason": "3 losing trades in a row", "value": 3.0,
            "limit": 3.0, "ts": ts, "by": "system",
        }  # fmt: skip
        difference = {
            "kind": "unknown_order", "venue": "binance", "key": "v-77", "blocking": True,
            "line": "binance: open order v-77 the journal does not know", "detail": {},
        }  # fmt: skip
        show(
            fanout,
            fill_event(1),
            SafetyChanged(ts, "kill_switch", "engine", kill_before, kill_after, "alice",
                          "runaway strategy", "attach"),
            SafetyChanged(ts, "kill_switch", "engine", kill_after, kill_before, "bob",
                          "checked the book"),
            BreakerChanged(ts, breaker),
            BreakerChanged(ts, {**breaker, "tripped": False}),  # a re-arm: no alert
            VenueChanged(ts, "binance", "reconciled", "binance: 1 unresolved difference",
                         {"reconciliation": {"differences": [difference]}}),
            VenueChanged(ts, "binance", "reconciled", "binance: 1 unresolved difference",
                         {"reconciliation": {"differences": [difference]}}),  # said once
            EngineBlocked(ts, "journal write failed (disk full); no orders are sent"),
        )  # fmt: skip
        assert await hook.wait_for(lambda p: len(p) >= 6, WAIT_S), hook.titles()
        await asyncio.sleep(0.3)  # nothing more comes (the re-arm and the repeat)
        await stop(task)
        by_title = {p.title: p.message for p in hook.posts}
        assert len(hook.posts) == 6, hook.titles()
        fill = by_title["[paper] Fill: ema_cross bought 0.01 BTC/USDT @ 60,001.00"]
        assert "order ck-1-1" in fill and "realized PnL +1.50" in fill
        kill = by_title["[paper] KILL SWITCH ENGAGED: flatten"]
        assert "by alice (attach): runaway strategy" in kill and "cockpit release" in kill
        assert "every position closed" in kill
        assert "by bob: checked the book" in by_title["[paper] Kill switch released"]
        trip = by_title["[paper] Breaker tripped: consecutive_losses (ema_cross)"]
        assert "3 losing trades in a row" in trip
        assert "cockpit rearm ema_cross consecutive_losses" in trip
        venue = by_title["[paper] Venue binance HALTED"]
        assert "v-77" in venue and "cockpit resolve binance" in venue
        assert "disk full" in by_title["[paper] Trading BLOCKED: the journal cannot write"]
        assert {p.body.get("type") for p in hook.posts} >= {"failure", "success", "info"}
        assert d.view()["sent"] == 6 and d.view()["failed"] == 0


async def test_an_approval_from_a_running_engine_names_its_id_and_how_to_answer(
    data_dir: Path,
) -> None:
    with Hook() as hook:
        cfg = fast_config(
            data_dir, auto=False, alerts={"urls": [hook.url()], "events": ["approval_waiting"]}
        )
        engine = Engine(cfg, data_dir)
        await engine.start()
        try:
            await engine.run(max_events=20_000)
        finally:
            await engine.stop()
        assert await hook.wait_for(lambda p: bool(p), WAIT_S), "the strategies ask for approvals"
        first = hook.posts[0]
        assert first.title.startswith("[paper] Approval waiting: ")
        aid = first.message.split("Approval ", 1)[1].split(" ", 1)[0]
        assert f"cockpit approve {aid} --hash " in first.message
        assert f"cockpit reject {aid}" in first.message
        assert engine.alerts is not None and engine.alerts.view()["sent"] >= 1


# ------------------------------------------------------------------------------ rate limit


def test_rate_limit_window_boundary() -> None:
    """N in a window go; the N+1th is held until the window has room again, then goes as one
    summary (counted as one alert of the window)."""
    w = Window(3, 60.0)
    a = AlertText("[paper]").make(AlertKind.FILL, "f", "", 0)
    assert [w.admit(a, t) for t in (0.0, 1.0, 2.0)] == [True, True, True]
    assert w.admit(a, 3.0) is False and w.admit(a, 4.0) is False
    assert w.due(59.9) is None  # the first is still inside the window
    held = w.due(60.0)
    assert held is not None and held.count == 2
    assert w.due(61.0) is None  # nothing held any more
    assert w.admit(a, 61.0) is True  # 1, 2 and the summary at 60 are in the window: room for 1


EXAMPLES = int(os.environ.get("COCKPIT_ALERT_EXAMPLES", "300"))


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    limit=st.integers(1, 5),
    window=st.sampled_from([1.0, 2.5, 60.0]),
    steps=st.lists(
        st.tuples(st.floats(0, 3, allow_nan=False), st.booleans()), min_size=1, max_size=60
    ),
)
def test_a_rate_limit_never_loses_an_alert_nor_sends_more_than_its_limit(
    limit: int, window: float, steps: list[tuple[float, bool]]
) -> None:
    """Whatever comes when: every alert goes alone or is counted in a summary (none lost),
    no window ever carries more than ``limit`` messages, and a held burst goes out at the
    latest one window after the last message."""
    w = Window(limit, window)
    a = AlertText("[paper]").make(AlertKind.FILL, "f", "", 0)
    now, arrived, accounted = 0.0, 0, 0
    sent: list[float] = []
    for gap, arrives in steps:
        now += gap
        if arrives:
            arrived += 1
            if w.admit(a, now):
                sent.append(now)
                accounted += 1
        held = w.due(now)
        if held is not None:
            sent.append(now)
            accounted += held.count
    then = max(now, max(sent, default=now) + window + 1e-9)  # one window after the last
    held = w.due(then)
    if held is not None:
        sent.append(then)
        accounted += held.count
    assert w.held is None and accounted == arrived
    for i, t in enumerate(sent):
        assert sum(1 for u in sent[i:] if u - t < window) <= limit


@pytest.mark.parametrize("extra", [0, 1, 7])
async def test_a_burst_over_the_limit_is_summarized_not_dropped(extra: int) -> None:
    limit = 3
    with Hook() as hook:
        d = dispatcher(urls=[hook.url()], events=["fill"], max_per_window=limit, window_s=1)
        fanout = EventFanout()
        fanout.watchers.append(d.observe)
        task = await running(d)
        show(fanout, *(fill_event(i) for i in range(limit + extra)))
        expected = limit + (1 if extra else 0)
        assert await hook.wait_for(lambda p: len(p) >= expected, WAIT_S), hook.titles()
        await asyncio.sleep(1.3)  # a second window: nothing else comes
        await stop(task)
        titles = hook.titles()
        assert len(titles) == expected, titles
        assert all(t.startswith("[paper] Fill: ") for t in titles[:limit])
        if extra:
            noun = "fill" if extra == 1 else "fills"
            assert titles[-1].startswith(f"[paper] {extra} more {noun} in the last")
            listed = hook.posts[-1].message
            assert f"@ {60_000 + limit:,.2f}" in listed  # names the held fills
        assert d.dropped == 0


# ------------------------------------------------------------------------------ never blocks


async def test_a_full_queue_drops_counted_and_never_blocks_the_engine(data_dir: Path) -> None:
    """A destination that never answers: its lane fills, the rest is dropped and counted,
    and the engine trades on and answers a kill as if nothing were wrong."""
    with Hook(hang=True) as hook:
        cfg = fast_config(
            data_dir,
            alerts={
                "urls": [hook.url()],
                "events": ["fill", "kill_engaged"],
                "max_per_window": 10_000,
                "queue_size": 3,
                "timeout_s": 1,
            },
        )
        engine = Engine(cfg, data_dir)
        await engine.start()
        try:
            await asyncio.wait_for(engine.run(max_events=20_000), 60)
            fills = engine.core.counters.get("fills", 0) if engine.core else 0
            reply = await asyncio.wait_for(
                engine.command("kill", {"level": "halt", "reason": "test"}), 10
            )
        finally:
            await engine.stop()
        assert reply["ok"]
        assert engine.alerts is not None
        view = engine.alerts.view()
        assert fills > 10
        assert view["dropped"] > 0 and view["sent"] == 0
        assert view["dropped"] + view["failed"] + view["queued"] >= fills - 1


async def test_a_kill_alert_leaves_within_5_s_behind_a_flood_of_slow_fills() -> None:
    """The same destination answers fills slowly (3 s each) and has 200 of them queued: the
    kill alert still arrives within 5 s of its event (a bounded wait, not a timing claim)."""
    with Hook(delay_for=lambda title: 3.0 if "Fill" in title else 0.0) as hook:
        d = dispatcher(urls=[hook.url()], events=["fill", "kill_engaged"], max_per_window=10_000)
        fanout = EventFanout()
        fanout.watchers.append(d.observe)
        task = await running(d)
        show(fanout, *(fill_event(i) for i in range(200)))
        await asyncio.sleep(0.2)
        before = {"trading_state": "ACTIVE", "kill_level": None}
        after = {"trading_state": "HALTED", "kill_level": "halt"}
        show(fanout, SafetyChanged(1, "kill_switch", "engine", before, after, "ops", "test"))
        arrived = await hook.wait_for(lambda p: any("KILL" in x.title for x in p), 5.0)
        await stop(task)
        assert arrived, hook.titles()


async def test_a_kill_engaged_just_before_stop_still_goes_out(data_dir: Path) -> None:
    """The cockpit's embedded engine (the headless one is the same Engine: see the secrets
    test, which runs `cockpit engine`)."""
    from cockpit.client import embedded_engine

    with Hook() as hook:
        cfg = fast_config(data_dir, alerts={"urls": [hook.url()], "events": ["kill_engaged"]})
        engine = embedded_engine(cfg, data_dir)
        await engine.start()
        try:
            run = asyncio.create_task(engine.run())
            await asyncio.sleep(0.2)
            await engine.command("kill", {"level": "halt", "reason": "stop now"})
            engine.request_stop()  # at once: the run ends, the final flush sends it
            await asyncio.wait_for(run, 30)
        finally:
            await engine.stop()
        assert any("KILL SWITCH ENGAGED" in t for t in hook.titles()), hook.titles()


async def test_a_delivery_under_way_when_the_run_ends_is_awaited_not_sent_twice() -> None:
    with Hook(delay_for=lambda title: 0.5) as hook:
        d = dispatcher(urls=[hook.url()], events=["fill"])
        task = await running(d)
        d.observe({"seq": 1, "event": "fill", "ts": 1, **fill_event(1).payload()})
        assert await hook.wait_for(lambda p: bool(p), WAIT_S)
        await stop(task)  # mid-post: the final flush takes its answer
        await asyncio.sleep(0.7)
        assert len(hook.posts) == 1 and d.view()["sent"] == 1 and d.view()["queued"] == 0


# ------------------------------------------------------------------------------ command hook


def _hook_script(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "hook.py"
    script.write_text(body)
    return [sys.executable, str(script)]


async def test_the_command_hook_reads_the_alert_as_json(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    argv = _hook_script(
        tmp_path, f"import sys, pathlib; pathlib.Path({str(out)!r}).write_text(sys.stdin.read())"
    )
    d = dispatcher(command={"argv": argv, "events": ["fill"]})
    fanout = EventFanout()
    fanout.watchers.append(d.observe)
    task = await running(d)
    show(fanout, fill_event(4))
    deadline = time.monotonic() + WAIT_S
    while d.sent < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await stop(task)
    got = json.loads(out.read_text())
    assert got["kind"] == "fill" and got["title"].startswith("[paper] Fill: ema_cross bought")
    assert got["event"]["event"] == "fill" and got["event"]["fill"]["client_order_id"] == "ck-1-4"
    assert got["engine"]["mode"] == "paper"
    assert d.view()["sent"] == 1 and d.view()["routes"] == 1


async def test_a_hook_past_its_timeout_is_killed_with_its_children_and_counted(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    argv = _hook_script(
        tmp_path,
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(60)\n",
    )
    cfg = AlertsConfig.model_validate({"command": {"argv": argv, "timeout_s": 1.0}})
    assert cfg.command is not None
    hook = CommandDestination(cfg.command, {"mode": "paper"})
    alert = AlertText("[paper]").test("command", time.time_ns())
    delivery = await asyncio.wait_for(hook.send(alert), 10)
    assert not delivery.ok and "killed" in delivery.detail
    for pid in map(int, pids.read_text().split()):
        for _ in range(100):
            if not _alive(pid):
                break
            await asyncio.sleep(0.05)
        assert not _alive(pid), f"process {pid} outlived the timeout"
    bad = dispatcher(command={"argv": [*argv[:1], "-c", "import sys; sys.exit(3)"]})
    result = await bad.targets[0].dest.send(alert)
    assert (result.ok, result.detail) == (False, "exit 3")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too
        return f.read().split(") ", 1)[1][0] != "Z"


# ------------------------------------------------------------------------------ daily summary


async def test_the_daily_summary_goes_once_when_its_minute_passes() -> None:
    with Hook() as hook:
        day = 86_400 * 20_000
        clock = [day + 20 * 3600 + 59 * 60 + 30.0]  # 20:59:30 UTC
        d = AlertDispatcher(
            AlertsConfig.model_validate(
                {"urls": [hook.url()], "events": ["daily_summary"], "daily_summary_utc": "21:00"}
            ),
            wall=lambda: clock[0],
        )
        assert d.check_daily() is False
        clock[0] += 20  # 20:59:50
        assert d.check_daily() is False
        clock[0] += 15  # 21:00:05
        assert d.check_daily() is True
        clock[0] += 3600
        assert d.check_daily() is False  # once a day
        task = await running(d)
        assert await hook.wait_for(lambda p: bool(p), WAIT_S)
        await stop(task)
        assert hook.posts[0].title.startswith("[paper] Daily summary ")
        assert "alerts 0 sent" in hook.posts[0].message


# ------------------------------------------------------------------------------ secrets


async def test_no_token_in_the_snapshot_the_journal_or_a_failure(
    data_dir: Path, monkeypatch: Any
) -> None:
    with Hook(status=500) as failing, Hook() as ok:
        monkeypatch.setenv("COCKPIT_TEST_FAIL_URL", failing.url(f"hook/{SECRET}"))
        monkeypatch.setenv("COCKPIT_TEST_OK_URL", ok.url(f"hook/{SECRET}"))
        cfg = fast_config(
            data_dir,
            alerts={
                "urls_env": ["COCKPIT_TEST_OK_URL"],
                "events": ["kill_engaged"],
                "routes": {"broken": {"urls_env": ["COCKPIT_TEST_FAIL_URL"],
                                      "events": ["kill_engaged"]}},
            },
        )  # fmt: skip
        engine = Engine(cfg, data_dir)
        await engine.start()
        try:
            run = asyncio.create_task(engine.run())
            await engine.command("kill", {"level": "halt", "reason": "secret test"})
            assert await ok.wait_for(lambda p: bool(p), WAIT_S)
            deadline = time.monotonic() + WAIT_S
            while engine.alerts and engine.alerts.failed < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            snap = json.dumps(engine.snapshot(), default=str)
            labels = [t.dest.label for t in engine.alerts.targets] if engine.alerts else []
            engine.request_stop()
            await run
        finally:
            await engine.stop()
        assert ok.posts[0].path == f"/hook/{SECRET}"  # the token was used...
        assert failing.posts and engine.alerts is not None and engine.alerts.failed == 1
        view = engine.alerts.view()
        assert view["routes"] == 2 and view["sent"] == 1 and view["last"] is not None
        assert SECRET not in snap and '"alerts"' in snap  # ...and is nowhere else
        assert all(SECRET not in label and "$COCKPIT_TEST" in label for label in labels)
        details = [t.last_detail for t in engine.alerts.targets]
        assert all(SECRET not in d for d in details) and any(d != "delivered" for d in details)
        journal = [f.read_bytes() for f in data_dir.iterdir() if f.is_file()]
        assert journal and not any(SECRET.encode() in raw for raw in journal)


def test_no_token_on_stdout_or_stderr_of_the_engine_and_alerts_test(tmp_path: Path) -> None:
    with Hook(status=500) as failing, Hook() as ok:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "COCKPIT_TEST_OK_URL": ok.url(f"hook/{SECRET}"),
            "COCKPIT_TEST_FAIL_URL": failing.url(f"hook/{SECRET}"),
        }
        config = _config_file(
            tmp_path,
            'urls_env = ["COCKPIT_TEST_OK_URL"]\nevents = ["kill_engaged", "fill"]\n'
            '[alerts.routes.broken]\nurls_env = ["COCKPIT_TEST_FAIL_URL"]\n',
        )
        engine = _cli(env, "engine", "--config", str(config), "--for", "3")
        from_engine = [p.title for p in ok.posts]
        test = _cli(env, "alerts", "test", "--config", str(config))
        test_json = _cli(env, "alerts", "test", "--config", str(config), "--json")
        journal = (tmp_path / "data" / "journal.sqlite").read_bytes()
    assert engine.returncode == 0, engine.stderr
    assert any(t.startswith("[paper] Fill: ") for t in from_engine), from_engine  # headless
    assert test.returncode == 1 and test_json.returncode == 1
    for out in (engine, test, test_json):
        assert SECRET not in out.stdout + out.stderr
        assert "Traceback" not in out.stderr
    assert SECRET.encode() not in journal
    lines = test.stdout.splitlines()
    assert len(lines) == 2, test.stdout
    assert lines[0].startswith("default ") and lines[0].endswith("delivered")
    assert "$COCKPIT_TEST_OK_URL" in lines[0] and f"127.0.0.1:{ok.port}" in lines[0]
    assert lines[1].startswith("broken ") and "FAILED" in lines[1]
    doc = json.loads(test_json.stdout)
    assert doc["ok"] is False and [r["ok"] for r in doc["results"]] == [True, False]


# ------------------------------------------------------------------------------ alerts test


def _config_file(tmp_path: Path, alerts: str) -> Path:
    base = (REPO / "config" / "default.toml").read_text()
    path = tmp_path / "alerts.toml"
    path.write_text(
        base.replace('data_dir = "data"', f'data_dir = "{tmp_path / "data"}"').replace(
            'speed = "realtime"', 'speed = "max"'
        )
        + f"\n[alerts]\n{alerts}"
    )
    return path


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cockpit", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


def test_alerts_test_exit_codes(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("COCKPIT_TEST_MISSING_URL", None)
    script = tmp_path / "ok.sh"
    script.write_text("#!/bin/sh\ncat >/dev/null\n")
    script.chmod(0o755)
    with Hook() as ok:
        good = _config_file(
            tmp_path, f'urls = ["{ok.url()}"]\n[alerts.command]\nargv = ["{script}"]\n'
        )
        result = _cli(env, "alerts", "test", "--config", str(good))
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert [line.split()[0] for line in lines] == ["default", "command"]
        assert all(line.endswith("delivered") for line in lines)
        assert ok.posts and ok.posts[0].title == "[paper] Test alert from the cockpit"
    missing = _config_file(tmp_path, 'urls_env = ["COCKPIT_TEST_MISSING_URL"]\n')
    result = _cli(env, "alerts", "test", "--config", str(missing))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "config error: alerts: environment variable COCKPIT_TEST_MISSING_URL (in urls_env) "
        "is not set; export it with the apprise URL"
    )
    check = _cli(env, "config", "check", "--config", str(missing))
    assert check.returncode == 2 and "COCKPIT_TEST_MISSING_URL" in check.stderr
    nothing = _cli(env, "alerts", "test")
    assert nothing.returncode == 2 and "no [alerts] section" in nothing.stderr


# ------------------------------------------------------------------------------ the view


def test_the_view_counts_what_was_dropped() -> None:
    d = dispatcher(urls=["json://127.0.0.1:9/hook"], events=["fill"], queue_size=2,
                   max_per_window=100)  # fmt: skip
    text = AlertText("[paper]")
    for i in range(5):
        d.submit(text.make(AlertKind.FILL, f"fill {i}", "", i))
    view = d.view()
    assert view == {"routes": 1, "sent": 0, "failed": 0, "dropped": 3, "queued": 2, "last": None}
    assert isinstance(d.targets[0].normal.items[0], Alert)


# ------------------------------------------------------------------------------ the cockpit


async def test_the_cockpit_shows_the_counts_warns_on_loss_and_toasts_a_failure_once() -> None:
    from cockpit.tui.header import header_text
    from tests.test_tui import static_text
    from tests.test_tui_notices import toasts_on_screen
    from tests.test_tui_venues import FakeClient, make_app, ready

    client = FakeClient(venues={})
    client.snap["alerts"] = {
        "routes": 2, "sent": 12, "failed": 0, "dropped": 0, "queued": 0, "last": None,
    }  # fmt: skip
    app = make_app(client)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await ready(pilot)
        assert "alerts 12 sent" in static_text(app, "#safety-state")
        assert "alerts lost" not in header_text(app.view.snapshot).plain
        assert not [t for t in toasts_on_screen(app) if t.startswith("Alerts")]
        last = {"ts": 1, "kind": "kill_engaged", "title": "[live] KILL SWITCH ENGAGED: halt",
                "ok": False}  # fmt: skip
        client.snap["alerts"] = {**client.snap["alerts"], "failed": 1, "dropped": 2, "last": last}
        await app.refresh_tables()
        await pilot.pause()
        await pilot.pause()
        state = static_text(app, "#safety-state")
        assert "alerts 12 sent · 1 failed · 2 dropped" in state
        assert "3 alerts lost" in header_text(app.view.snapshot).plain
        toasts = [t for t in toasts_on_screen(app) if t.startswith("Alerts")]
        assert toasts == ["Alerts: 1 alert delivery failed: [live] KILL SWITCH ENGAGED: halt"]
        await app.refresh_tables()  # the same count again: no second toast
        await pilot.pause()
        assert app.toasts._bursts["alerts"].count == 1
    client.snap["alerts"] = None  # no [alerts]: nothing shown
    assert "alerts" not in header_text(client.snap).plain


def test_cockpit_status_has_an_alerts_line_only_with_alerts() -> None:
    from cockpit.oneshot import format_status

    view = {"routes": 3, "sent": 12, "failed": 1, "dropped": 2, "queued": 0, "last": None}
    assert "alerts      12 sent, 1 failed, 2 dropped, 0 queued (3 destinations)" in (
        format_status({"alerts": view}).splitlines()
    )
    assert "alerts" not in format_status({"alerts": None})


@pytest.mark.parametrize(
    ("section", "hint"),
    [
        ({"alerts": {"urls": ["json://127.0.0.1:9/x"], "token": "s3cret"}}, "urls_env"),
        ({"heartbeat": {"url": "http://127.0.0.1:9/p", "token": "s3cret"}}, "url_env"),
    ],
)
def test_a_token_in_the_file_is_refused_with_the_key_that_takes_it(
    section: dict[str, Any], hint: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(section)
    (line,) = err.value.problems
    assert line.endswith(f"name that variable with {hint}")
    assert "s3cret" not in line
