"""Adversarial review (review-wa) of "Watching from anywhere": alerts, the heartbeat, metrics.

Each test is a hole found by taking the README's and docs/operations.md's promises literally; it
failed before its fix. Everything runs on loopback servers started here, ports chosen by the OS.

Attacks that held (tried by hand or by the suites named; no test added here):
- 10,000 fills at a route limited to 10 a second: 10 posts, then one "9990 more fills" post;
  nothing dropped, the count exact.
- a command hook writing 50 MB to stdout and stderr: discarded, delivered (exit 0) at once.
- a hook that closes its stdin at once and exits 0: delivered, no BrokenPipe reaches the engine.
- a hook past its timeout with children, a hook that exits 3: killed as a group / counted failed
  (tests/test_alerts.py).
- an alert server answering with unparseable headers (urllib3 then logs the URL, token and
  all): nothing reaches stderr (urllib3's NullHandler, no root handler); `alerts test` names
  the destination as scheme://host ($VAR).
- a failing server echoing the token back, decoded or Basic-encoded: scrubbed
  (tests/test_review_alerts.py).
- label values with quotes, backslashes, newlines and unicode, values NaN and +Inf: escaped by
  prometheus-client in both formats; an OpenMetrics scrape of a running engine parses whole.
- counters going back within a run: no counter the metrics read is ever decreased or replaced.
- --metrics-host "" (every interface): refused; 0.0.0.0: the warning; a name that does not
  resolve, an address not this machine's: one line, exit 2 (its advice fixed below).
- duplicate strategy ids: refused; a strategy id cannot be a symbol scope (no ':').
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.alert_text import AlertText
from engine.breakers import GLOBAL
from engine.config import ConfigError, parse_config
from engine.fanout import EventFanout
from tests.alert_hook import Hook
from tests.conftest import default_dict
from tests.test_alerts import dispatcher, fill_event, running, show, stop
from tests.test_review_alerts import breaker_trip, kill_engaged

WAIT_S = 10.0


# ------------------------------------------------------------------------------ alerts


async def test_a_kill_alert_is_not_dropped_by_a_safety_lane_full_of_breaker_alerts() -> None:
    """A crash trips a breaker per strategy and symbol, more than the safety lane holds, at a
    destination that takes 3 s a message; then the kill switch engages. Before: the full lane
    dropped the kill alert (counted, never sent) while breaker alerts kept going out. Now the
    newest breaker alert waiting makes room for it (counted as dropped) and the kill goes
    first."""
    with Hook(delay_for=lambda title: 3.0 if "Breaker" in title else 0.0) as hook:
        d = dispatcher(
            urls=[hook.url()], events=["breaker_tripped", "kill_engaged"], queue_size=5, timeout_s=4
        )
        fanout = EventFanout()
        fanout.watchers.append(d.observe)
        task = await running(d)
        try:
            show(fanout, *(breaker_trip("consecutive_losses", f"s{i}") for i in range(20)))
            assert await hook.wait_for(lambda p: len(p) == 1, WAIT_S)  # the first is under way
            show(fanout, breaker_trip("consecutive_losses", "late"))  # the lane is full again
            show(fanout, kill_engaged())
            arrived = await hook.wait_for(lambda p: any("KILL" in x.title for x in p), WAIT_S)
            view = d.view()
        finally:
            await stop(task)
        assert arrived, hook.titles()
        assert "KILL SWITCH ENGAGED" in hook.titles()[1], hook.titles()
        # 22 alerts: every one delivered, waiting or counted as dropped; none silently lost.
        assert view["sent"] + view["failed"] + view["queued"] + view["dropped"] == 22, view


async def test_a_kill_alert_to_the_command_hook_never_waits_for_a_breaker_alert(
    tmp_path: Path,
) -> None:
    """The command hook with its documented timeout_s (5 s): a breaker trips and its hook run
    hangs; the kill switch engages at once. Before: the kill's hook run waited for the breaker's
    to be killed at its timeout, so it started 5 s and more after its event (a hook's timeout may
    be up to 300 s). Now kill alerts have their own lane: the kill's run starts at once, while
    the breaker's still hangs. (No clock is asserted: the breaker's run is still hanging when
    the kill's has happened.)"""
    kill_seen, breaker_began = tmp_path / "kill", tmp_path / "breaker"
    script = tmp_path / "hook.py"
    script.write_text(
        "import json, sys, time\n"
        "alert = json.load(sys.stdin)\n"
        "if alert['kind'] == 'kill_engaged':\n"
        f"    open({str(kill_seen)!r}, 'w').write('seen')\n"
        "else:\n"
        f"    open({str(breaker_began)!r}, 'w').write('began')\n"
        "    time.sleep(60)\n"
    )
    d = dispatcher(
        command={
            "argv": [sys.executable, str(script)],
            "events": ["breaker_tripped", "kill_engaged"],
            "timeout_s": 5,
        }
    )
    fanout = EventFanout()
    fanout.watchers.append(d.observe)
    task = await running(d)
    try:
        show(fanout, breaker_trip("consecutive_losses", "a"))
        assert await until(breaker_began.exists, WAIT_S)
        show(fanout, kill_engaged())
        assert await until(lambda: kill_seen.exists() or d.failed > 0, WAIT_S)
        # The breaker's run had not been given up when the kill's ran.
        assert kill_seen.exists() and d.failed == 0, d.view()
    finally:
        await stop(task)


async def until(ready: Callable[[], bool], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while not ready():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


# ------------------------------------------------------------------------------ metrics


@pytest.mark.parametrize(("sid", "ok"), [("global", False), ("global2", True), ("Global", False)])
def test_a_strategy_cannot_take_the_breakers_global_scope_as_its_id(sid: str, ok: bool) -> None:
    """A strategy named "global" shared the breakers' keys with the engine-wide scope: the
    scrape served two ``cockpit_breaker_tripped{breaker="consecutive_losses",scope="global"}``
    series (an exposition Prometheus refuses as duplicates), the Safety pane two rows of one
    name, and the strategy's losing streak and the engine's were one latch (its pause
    overwritten by the halt, one re-arm for both). Refused now, naming the field."""
    doc = default_dict()
    doc["strategies"][0]["id"] = sid
    if ok:
        parse_config(doc)
        return
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert "strategies[0].id" in str(err.value) and "global" in str(err.value).lower()
    assert sid.lower() == GLOBAL  # the scope the breakers use (in any case: reviewconfig)


async def test_the_embedded_cockpit_says_where_metrics_listen_and_warns_of_exposure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`cockpit --metrics 0 --metrics-host 0.0.0.0`: the port taken and the warning that
    anyone who reaches it reads equity, positions and PnL went to stderr, and the cockpit's
    screen covered them at once: the trader never saw either ("--metrics 0: stderr says which";
    "--metrics-host ...: warns"). The cockpit now says both in its log, the warning as a
    toast too."""
    import engine.telemetry
    from cockpit.app import CockpitApp
    from cockpit.cli import _start_metrics
    from tests.test_tui_notices import toasts_on_screen
    from tests.test_tui_venues import FakeClient, fixed_clock, ready

    # Listening on loopback, taken for an exposed address: the same warning, no exposure.
    monkeypatch.setattr(engine.telemetry, "is_loopback", lambda host: False)
    notes: list[str] = []
    server = _start_metrics(0, "127.0.0.1", notes.append)
    try:
        assert notes[0].startswith("warning: metrics on 127.0.0.1 are readable by anyone")
        assert notes[1] == server.url.join(("metrics: ", "")), notes
        app = CockpitApp(
            FakeClient(venues={}),
            clock=fixed_clock,
            table_interval=3600,
            chart_interval=3600,
            notes=notes,
        )
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await ready(pilot)
            logged = [line.text for line in app.view.log]
            assert all(note in logged for note in notes), logged
            shown = toasts_on_screen(app)
            assert any("readable by anyone" in t for t in shown), shown
    finally:
        await server.close()


def test_a_metrics_address_not_of_this_machine_is_not_advised_as_a_taken_port() -> None:
    """`--metrics 9464 --metrics-host 192.0.2.1` (an address this machine does not have, or a
    name that does not resolve) said "pick a free port (--metrics 0 takes any) or stop what
    holds it": advice that cannot help. The port's advice is for a port in use only."""
    import socket

    from cockpit.cli import UserError, _start_metrics

    with pytest.raises(UserError) as bad_host:
        _start_metrics(0, "192.0.2.1", lambda _: None)  # TEST-NET-1: never a local address
    assert "--metrics-host" in str(bad_host.value) and "free port" not in str(bad_host.value)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(UserError) as in_use:
            _start_metrics(taken.getsockname()[1], "127.0.0.1", lambda _: None)
        assert "pick a free port" in str(in_use.value)
    finally:
        taken.close()


# ------------------------------------------------------------------------------ heartbeat

PING_KEY = "fT7bU3e9qA1xYzKj0LmN2p"  # 22 URL-safe characters, as healthchecks.io's ping keys


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        (f"https://hc-ping.com/{PING_KEY}/paper-engine", False),  # healthchecks.io's slug form
        (f"https://hc-ping.com/{PING_KEY.replace('U', '-')}/paper-engine/fail", False),
        ("https://hc-ping.com/all-lower-case-ping-key1/engine", False),  # every hc-ping URL
        (f"https://HC-PING.COM./{PING_KEY}/paper-engine", False),
        ("http://127.0.0.1:8080/ping/my-engine-heartbeat-01", True),
        ("http://127.0.0.1:8080/api/v1/heartbeat/PaperEngineBTCUSDT", True),
    ],
)
def test_a_ping_url_with_a_ping_key_in_its_path_is_refused_in_the_file(url: str, ok: bool) -> None:
    """The README refuses in `url` "a URL with a check's UUID in its path, as healthchecks.io's
    ... whoever has it can keep a dead engine looking alive". healthchecks.io's other URL,
    /<ping key>/<slug>, carries no UUID and was taken from the file (config check: ok). Now
    every hc-ping.com URL is refused, naming url_env, never echoing the key; a loopback URL
    with a readable path is still taken."""
    if ok:
        assert parse_config({"heartbeat": {"url": url}}).heartbeat is not None
        return
    with pytest.raises(ConfigError) as err:
        parse_config({"heartbeat": {"url": url}})
    (line,) = err.value.problems
    assert line.startswith("heartbeat: url holds") and "url_env" in line, line
    assert PING_KEY not in line and "paper-engine" not in line


# ------------------------------------------------------------------------------ secrets


@pytest.mark.parametrize(
    "url",
    [
        "json://s3cr3tT0kenAbc123@127.0.0.1:9/in",
        "jsons://apikey-9f8e7d6c@hooks.example.com/in",
        "form://t0k3n%40x@127.0.0.1:9/in",
    ],
)
def test_a_login_in_a_file_url_is_refused_without_echoing_it(url: str) -> None:
    """`urls` holds "URLs that hold no secret"; a password was refused, but a token written as
    the login (json://TOKEN@host: apprise sends it as HTTP Basic auth, the way many webhooks
    take their key) was accepted from the file. Refused now, the value never echoed."""
    with pytest.raises(ConfigError) as err:
        parse_config({"alerts": {"urls": [url]}})
    (line,) = err.value.problems
    assert line.startswith("alerts.urls[0]: holds a login") and "urls_env" in line, line
    login = url.partition("://")[2].partition("@")[0]
    assert login not in line and "t0k3n" not in line and "apikey-9f8e" not in line


def test_a_file_url_without_a_login_is_still_taken() -> None:
    url = "json://127.0.0.1:8080/hook?format=text"
    cfg = parse_config({"alerts": {"urls": [url]}})
    assert cfg.alerts is not None and cfg.alerts.urls == [url]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(["kill", "blocked", "breaker", "fill"]), max_size=60),
    st.integers(1, 5),
)
def test_kill_alerts_are_never_crowded_out_and_every_alert_is_counted(
    kinds: list[str], size: int
) -> None:
    """Whatever mix arrives at a destination that is not answering yet: a kill alert is
    queued unless ``size`` kill and journal alerts already wait; every alert is queued or
    counted as dropped, none silently lost."""
    from engine.events import EngineBlocked

    text = AlertText("[paper]")
    d = dispatcher(
        urls=["json://127.0.0.1:9/hook"],
        events=["kill_engaged", "journal_blocked", "breaker_tripped", "fill"],
        queue_size=size,
        max_per_window=10_000,
    )
    (target,) = d.targets
    events = {
        "kill": kill_engaged(),
        "blocked": EngineBlocked(1, "disk full"),
        "breaker": breaker_trip("consecutive_losses", "s"),
        "fill": fill_event(1),
    }
    for kind in kinds:
        ev = events[kind]
        alert = text.describe({"seq": 1, "ts": 1, **ev.payload(), "event": ev.kind})
        assert alert is not None
        firsts_waiting = len(target.first.items)
        dropped = d.dropped
        d.submit(alert)
        if kind == "kill":
            assert (d.dropped == dropped) == (firsts_waiting < size)
    assert d.queued + d.dropped == len(kinds)


async def test_one_short_stall_does_not_make_systemd_restart_the_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """WatchdogSec=2 (the engine's max_lag_s 0.3): the loop stalls once for 0.5 s, then runs
    well. docs/operations.md: "a loop stuck past WatchdogSec stops the WATCHDOG=1 beats, and
    systemd restarts the engine". Before: beats went every half WatchdogSec, so the one beat
    the stall withheld left two intervals, a whole WatchdogSec, without one, and systemd
    restarted a running engine for a stall a quarter as long. Now beats go every quarter
    WatchdogSec: one withheld beat leaves half of it. Driven by a made-up clock and loop."""
    import types

    import engine.heartbeat as hb
    from engine.heartbeat import HeartbeatStatus, SystemdNotifier

    now = [0.0]
    tick = 0.25
    lags = [0.0] * 12 + [0.5] + [0.0] * 40  # one stall, early on

    async def fake_ticks(_tick_s: float) -> Any:
        for lag in lags:
            await asyncio.sleep(0)
            now[0] += tick + lag
            yield lag

    monkeypatch.setattr(hb, "loop_ticks", fake_ticks)
    monkeypatch.setattr(hb, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    safety = types.SimpleNamespace(trading_state="ACTIVE", kill=types.SimpleNamespace(level=None))
    engine_stub: Any = types.SimpleNamespace(
        blocked_reason="", journal=None, core=types.SimpleNamespace(safety=safety)
    )
    watchdog_sec = 2.0
    notifier = SystemdNotifier(
        "/nonexistent", HeartbeatStatus(""), watchdog_s=watchdog_sec / 2, max_lag_s=0.3
    )
    beats: list[float] = []

    def send(*fields: str) -> bool:
        if "WATCHDOG=1" in fields:
            beats.append(now[0])
        return True

    notifier.send = send  # type: ignore[method-assign]
    await notifier.run(engine_stub)
    assert len(beats) >= 4, beats
    gaps = [b - a for a, b in zip([0.0, *beats], beats, strict=False)]
    assert max(gaps) < watchdog_sec, (gaps, beats)


async def test_a_disk_stuck_most_of_an_interval_holds_the_next_ping_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """interval_s 2, max_lag_s 0.5: a journal commit waits for the disk through nearly the
    whole interval and returns just before the next ping is due. docs/operations.md: the pings
    stop while "a journal commit has waited for the disk longer than max_lag_s", and start
    again "once a whole interval passes healthy". Before: health was looked at only at the
    moment a ping was due, so the ping went out (a disk stuck 9 s in every 10 kept the monitor
    content). Now every tick counts: the next ping waits for a whole healthy interval. Driven
    by a made-up clock and loop."""
    import types

    import engine.heartbeat as hb
    from engine.config import HeartbeatConfig
    from engine.heartbeat import Heartbeat, HeartbeatStatus

    now = [0.0]
    tick = 0.25
    stuck_until = [0.0]

    async def fake_ticks(_tick_s: float) -> Any:
        for _ in range(40):
            await asyncio.sleep(0)
            now[0] += tick
            yield 0.0

    class Journal:
        @staticmethod
        def commit_age_s() -> float:  # the disk stops answering from 0.5 s to 2.0 s
            return 5.0 if 0.5 <= now[0] < stuck_until[0] else 0.0

    monkeypatch.setattr(hb, "loop_ticks", fake_ticks)
    monkeypatch.setattr(hb, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    safety = types.SimpleNamespace(trading_state="ACTIVE", kill=types.SimpleNamespace(level=None))
    engine_stub: Any = types.SimpleNamespace(
        blocked_reason="", journal=Journal(), core=types.SimpleNamespace(safety=safety)
    )
    cfg = HeartbeatConfig(url="http://127.0.0.1:9/ping", interval_s=2, max_lag_s=0.5)
    beat = Heartbeat(cfg, HeartbeatStatus("127.0.0.1:9"), cfg.url or "")
    pings: list[float] = []

    async def ping(_http: Any, url: str) -> None:
        pings.append(now[0])

    monkeypatch.setattr(beat, "_ping", ping)
    stuck_until[0] = 2.0  # healthy again at 2.0; the next ping is due at 2.25
    await beat.run(engine_stub)
    assert pings[0] == tick  # the first, at the first tick
    later = [t for t in pings if t > tick]
    assert later and later[0] >= stuck_until[0] + cfg.interval_s, pings
    assert beat.shown.view["pauses"] == 1


def test_approvals_held_by_a_rate_limit_still_say_how_to_answer_them() -> None:
    """The README: approvals waiting go out "with the command and key that answer them". Past
    a route's max_per_window they go as one summary, which listed "ID strategy side qty
    symbol" only: no approve command, no hash, no key, so the trader's phone could not answer
    the orders waiting. Each line now carries its answer, and the summary says where the rest
    are."""
    from engine.vocabulary import EventKind

    d = dispatcher(urls=["json://127.0.0.1:9/hook"], events=["approval_waiting"], max_per_window=1)
    for i in range(13):
        approval = {
            "id": f"ap{i}", "strategy": "ema_cross", "side": "buy", "qty": 0.01,
            "symbol": "BTC/USDT", "ref_price": 60_000.0, "notional": 600.0, "venue": "sim",
            "reason": "cross", "hash": f"h{i}abc", "created_ts": 0, "expires_ts": 60 * 10**9,
        }  # fmt: skip
        d.observe({"event": EventKind.APPROVAL_REQUESTED, "seq": i, "ts": 1, "approval": approval})
    assert d.release_held(force=True) == 1
    (target,) = d.targets
    first, summary = target.normal.items
    assert "cockpit approve ap0 --hash h0abc" in first.body
    assert "12 more approvals waiting in the last" in summary.title
    for i in range(1, 11):  # the ten it names
        assert f"cockpit approve ap{i} --hash h{i}abc" in summary.body, summary.body
        assert f"cockpit reject ap{i}" in summary.body
    assert "cockpit approvals" in summary.body and "keys a / r" in summary.body
