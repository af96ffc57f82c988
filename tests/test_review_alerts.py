"""Third adversarial review of alerts, the heartbeat, systemd's watchdog, metrics and secrets.

Each test is a hole found by attacking what the README and docs/operations.md promise, fixed at
its root: it failed before the fix. Everything runs on loopback, ports chosen by the OS.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.alert_send import AppriseDestination, CommandDestination
from engine.alert_text import Alert, AlertText
from engine.alerts import Lane
from engine.config import AlertCommandConfig, ConfigError, parse_config
from engine.events import BreakerChanged, SafetyChanged
from engine.fanout import EventFanout
from engine.heartbeat import MIN_BEAT_S, SystemdNotifier, attach_watch
from engine.runtime import Engine
from tests.alert_hook import Hook
from tests.test_alerts import dispatcher, running, show, stop
from tests.test_control_support import short_dir
from tests.test_heartbeat import NotifySocket, paced, until
from tests.test_heartbeat import running as hb_running
from tests.test_heartbeat import view as hb_view
from tests.test_journal_failure import break_journal

WAIT_S = 10.0


def breaker_trip(name: str, scope: str) -> BreakerChanged:
    change: dict[str, Any] = {
        "breaker": name, "scope": scope, "tripped": True, "action": "pause_strategy",
        "reason": "losing streak", "value": 12.0, "limit": 12.0, "ts": 1, "by": "system",
    }  # fmt: skip
    return BreakerChanged(1, change)


def kill_engaged(level: str = "halt", was: str | None = None) -> SafetyChanged:
    before = {"trading_state": "ACTIVE" if was is None else "HALTED", "kill_level": was}
    after = {"trading_state": "HALTED", "kill_level": level}
    return SafetyChanged(1, "kill_switch", "engine", before, after, "ops", "crash")


# ------------------------------------------------------------------------------ alerts


async def test_a_kill_alert_goes_before_the_breaker_alerts_queued_ahead_of_it() -> None:
    """A crash trips a breaker per strategy, then the kill switch engages. The destination
    (an e-mail relay, a busy chat API) takes 3 s per message, within its 4 s timeout. The kill
    alert must leave within 5 s of its event: it waits for the one delivery under way at most
    (which is why timeout_s must stay at 4 or less), not for every breaker alert queued before
    it. Before: the safety lane was first come first served, and the kill left after ~9 s."""
    with Hook(delay_for=lambda title: 3.0 if "Breaker" in title else 0.0) as hook:
        d = dispatcher(urls=[hook.url()], events=["breaker_tripped", "kill_engaged"], timeout_s=4)
        fanout = EventFanout()
        fanout.watchers.append(d.observe)
        task = await running(d)
        try:
            show(fanout, *(breaker_trip("consecutive_losses", s) for s in ("a", "b", "c", "d")))
            assert await hook.wait_for(lambda p: len(p) == 1, WAIT_S)  # the first is under way
            show(fanout, kill_engaged())
            arrived = await hook.wait_for(lambda p: any("KILL" in x.title for x in p), 5.0)
            assert arrived, hook.titles()
            titles = hook.titles()
            view = d.view()
        finally:
            await stop(task)
        assert "Breaker" in titles[0] and "KILL SWITCH ENGAGED" in titles[1], titles
        # The breaker alerts behind it are still to go: none dropped, none lost.
        assert view["dropped"] == 0 and view["sent"] + view["failed"] + view["queued"] == 5, view


@contextmanager
def echoing_server() -> Iterator[int]:
    """A server (or the proxy before it) that refuses every request with an error body quoting
    the request back: its credentials headers and its path, decoded."""

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            creds = {k: v for k, v in self.headers.items() if k.lower() == "authorization"}
            echo = f"{creds} {unquote(self.path)}"
            body = json.dumps({"error": echo, "message": echo}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


TOKEN = "Sup3r+Secret/Tok3n-9f8e"  # written percent-encoded in the URL, sent decoded
USER, PASSWORD = "trader", "Pa55+w0rd/9f8e"


def shapes(secret: str) -> set[str]:
    """How a secret may come back in a server's words."""
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    pieces = {secret, *(p for p in secret.replace("+", "/").split("/") if len(p) >= 4)}
    return pieces | {basic} if secret == PASSWORD else pieces


@pytest.mark.parametrize(
    ("template", "secret"),
    [
        ("ntfy://127.0.0.1:{port}/alerts?token={token}", TOKEN),
        ("ntfy://{user}:{password}@127.0.0.1:{port}/alerts", PASSWORD),
    ],
)
async def test_a_failure_reason_quoting_the_token_back_decoded_never_shows_it(
    template: str, secret: str
) -> None:
    """The token is written percent-encoded in the variable's URL, as a URL must; the client
    sends it decoded (a bearer token, or a password inside Basic auth) and an error answer
    that quotes the request brings it back in that form. The reason `cockpit alerts test`
    prints comes from that answer: before, only the URL's pieces as written were masked, so
    the decoded token was printed whole."""
    enc = {"safe": ""}
    with echoing_server() as port:
        url = template.format(
            port=port,
            token=quote(TOKEN, **enc),
            user=USER,
            password=quote(PASSWORD, **enc),
        )
        dest = AppriseDestination("default", url, 4.0, env="COCKPIT_TEST_ALERT_URL")
        delivery = await dest.send(AlertText("[paper]").test("default", 0))
    assert not delivery.ok
    assert "error=400" in delivery.detail or "400" in delivery.detail, delivery.detail
    for shape in shapes(secret):
        assert shape not in delivery.detail, (shape, delivery.detail)


@settings(max_examples=int(os.environ.get("COCKPIT_REVIEW_EXAMPLES", "200")), deadline=None)
@given(st.lists(st.sampled_from(["kill", "breaker", "pop", "cut"]), max_size=60))
def test_a_lane_loses_nothing_and_serves_kill_alerts_first(ops: list[str]) -> None:
    """Whatever the order of puts, deliveries and final-flush cut-offs (put back): every
    alert comes out once; while a kill alert waits, nothing else comes out; alerts of the
    same class keep their order."""
    text = AlertText("[paper]")
    lane = Lane(maxsize=10_000)
    made: list[Alert] = []
    out: list[Alert] = []
    for op in ops:
        if op in ("kill", "breaker"):
            ev = kill_engaged() if op == "kill" else breaker_trip("b", f"s{len(made)}")
            alert = text.describe({"seq": 1, "ts": 1, **ev.payload(), "event": ev.kind})
            assert alert is not None
            made.append(alert)
            assert lane.put(alert)
        elif lane.items:
            waiting_kill = any(a.first for a in lane.items)
            alert = lane.pop()
            assert alert.first or not waiting_kill
            if op == "cut":  # the final flush's deadline cut its delivery off: back in front
                lane.put_back(alert)
            else:
                out.append(alert)
    out.extend(lane.pop() for _ in range(len(lane.items)))
    assert sorted(map(id, out)) == sorted(map(id, made))
    for first in (True, False):
        assert [a for a in out if a.first == first] == [a for a in made if a.first == first]


CREDENTIAL_URLS = [
    "json://127.0.0.1:8080/hook?+Authorization=Bearer%20abcd1234efgh5678",
    "xml://127.0.0.1:8080/hook?+X-Api-Key=abcd1234efgh5678",
    "form://127.0.0.1:8080/hook?-apiKey=abcd1234efgh5678",
    "jsons://hooks.example.com/in?+X-Auth-Token=abcd1234efgh5678&format=text",
]


@pytest.mark.parametrize(
    "url", CREDENTIAL_URLS, ids=[u.split("?")[1][:14] for u in CREDENTIAL_URLS]
)
def test_a_credential_header_written_in_the_file_is_refused_without_echoing_it(url: str) -> None:
    """apprise sends json://'s "+Header=value" and form://'s "-field=value" as they are and
    keeps none of them private, so a bearer token or an API key in one passed the file's
    check (which asked apprise what it keeps private) and sat in the config file."""
    with pytest.raises(ConfigError) as err:
        parse_config({"alerts": {"urls": [url]}})
    (line,) = err.value.problems
    assert line.startswith("alerts.urls[0]: holds a credential in") and "urls_env" in line
    assert "abcd1234" not in line


def test_harmless_headers_and_arguments_are_still_taken_from_the_file() -> None:
    urls = [
        "json://127.0.0.1:8080/hook?+X-Source=cockpit&-keyword=kill",
        "ntfys://ntfy.sh/mytopic?priority=high&tags=warning",
        "json://127.0.0.1:8080/hook?format=text&method=POST",
    ]
    cfg = parse_config({"alerts": {"urls": urls}})
    assert cfg.alerts is not None and cfg.alerts.urls == urls


async def test_the_command_hook_cannot_speak_to_systemd_for_the_engine(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Under systemd (Type=notify) the engine has NOTIFY_SOCKET; a hook that inherited it and
    speaks the protocol (systemd-notify, a daemon it starts) could send WATCHDOG=1 in the
    engine's name and keep a stuck engine looking alive. The hook now runs without systemd's
    notify variables, as sd_notify(unset_environment) would leave a child."""
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/user/1000/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("REVIEW_HOOK_SETTING", "kept")
    out = tmp_path / "env.json"
    script = tmp_path / "hook.py"
    script.write_text(
        "import json, os, pathlib, sys\n"
        "sys.stdin.read()\n"
        f"pathlib.Path({str(out)!r}).write_text(json.dumps(dict(os.environ)))\n"
    )
    cfg = AlertCommandConfig(argv=[sys.executable, str(script)], events=["kill_engaged"])
    hook = CommandDestination(cfg, {"mode": "paper"})
    delivery = await asyncio.wait_for(hook.send(AlertText("[paper]").test("command", 1)), WAIT_S)
    assert delivery.ok, delivery
    env = json.loads(out.read_text())
    assert env.get("REVIEW_HOOK_SETTING") == "kept"
    assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} & set(env), sorted(env)


# ------------------------------------------------------------------------------ heartbeat


PING_SECRET_URLS = [
    "https://hc-ping.com/0f6b5f2a-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
    "https://hc-ping.com/0F6B5F2A-1C2D-4E5F-8A9B-0C1D2E3F4A5B/start",
    "https://monitor.example.com/ping?token=abcd1234efgh5678",
    "https://monitor.example.com/ping?apiKey=abcd1234efgh5678",
]


@pytest.mark.parametrize("url", PING_SECRET_URLS)
def test_a_ping_url_with_its_token_written_in_the_file_is_refused(url: str) -> None:
    """`url` is for a ping URL with no secret in it. A healthchecks.io URL (the check's UUID
    is its token: whoever has it can ping the check and keep a dead engine looking alive) or
    one with ?token= was taken from the file; only a user:password was refused."""
    with pytest.raises(ConfigError) as err:
        parse_config({"heartbeat": {"url": url}})
    (line,) = err.value.problems
    assert line.startswith("heartbeat: url holds") and "url_env" in line, line
    assert "abcd1234" not in line and "0f6b5f2a" not in line.lower()


def test_a_ping_url_without_a_token_is_still_taken_from_the_file() -> None:
    for url in (
        "http://127.0.0.1:8080/ping/my-engine-01",
        "https://monitor.example.com/api/push/heartbeat?status=up&msg=OK",
    ):
        cfg = parse_config({"heartbeat": {"url": url}})
        assert cfg.heartbeat is not None and cfg.heartbeat.url == url


# ------------------------------------------------------------------------------ systemd


async def test_a_bogus_watchdog_interval_does_not_make_the_engine_spin(data_dir: Path) -> None:
    """WATCHDOG_USEC=2 (two microseconds: a typo in the unit, a bogus environment): the
    notifier beat on every turn of the event loop, tens of thousands of datagrams a second
    from the engine's own loop. It now beats at most every MIN_BEAT_S."""
    with short_dir() as sd:
        systemd = NotifySocket(str(sd / "notify"))
        env = {"NOTIFY_SOCKET": str(sd / "notify"), "WATCHDOG_USEC": "2"}
        engine = Engine(paced(data_dir), data_dir)
        (notifier,) = attach_watch(engine, environ=env)
        assert isinstance(notifier, SystemdNotifier)

        def datagrams() -> int:  # every one the notifier tried (a full socket drops them)
            return notifier.sent + notifier.lost

        async with hb_running(engine):
            await until(lambda: "WATCHDOG=1" in systemd.fields(), "a first beat")
            before, began = datagrams(), time.monotonic()
            await asyncio.sleep(1.0)
            sent, spent = datagrams() - before, time.monotonic() - began
        systemd.sock.close()
    assert 1 <= sent <= spent / MIN_BEAT_S + 5, sent


async def test_with_systemd_alone_a_withheld_watchdog_shows_as_paused(data_dir: Path) -> None:
    """No [heartbeat], systemd's watchdog only: the journal fails and the WATCHDOG=1 beats
    stop, and the trader sees why. Before, `cockpit status`, the summary line and
    cockpit_heartbeat_paused still said "watchdog 0.1s" (healthy) while systemd was about to
    restart the engine."""
    with short_dir() as sd:
        systemd = NotifySocket(str(sd / "notify"))
        env = {"NOTIFY_SOCKET": str(sd / "notify"), "WATCHDOG_USEC": "200000"}
        engine = Engine(paced(data_dir), data_dir)
        attach_watch(engine, environ=env)
        async with hb_running(engine):
            await until(lambda: systemd.fields().count("WATCHDOG=1") >= 2, "watchdog beats")
            assert engine.summary()["heartbeat"] == "watchdog 0.1s"
            break_journal(engine.journal)
            await engine.command("pause", {"strategy": "ema_cross", "reason": "x"})
            await until(lambda: bool(hb_view(engine)["paused"]), "the watch paused")
            summary = engine.summary()["heartbeat"]
            statuses = [f for f in systemd.fields() if f.startswith("STATUS=BLOCKED")]
        systemd.sock.close()
    assert summary.startswith("paused (trading blocked: journal"), summary
    assert hb_view(engine)["pauses"] == 1
    assert statuses and "not healthy: trading blocked" in statuses[-1], statuses


async def test_a_notify_socket_nobody_listens_on_is_said_once(data_dir: Path, caplog: Any) -> None:
    """NOTIFY_SOCKET names a socket nobody listens on (a stale path, a unit started by hand
    with the variable copied): systemd never hears READY=1 and kills the engine after
    TimeoutStartSec. Before, nothing said why; now one line does, however many beats fail."""
    with short_dir() as sd:
        env = {"NOTIFY_SOCKET": str(sd / "nobody"), "WATCHDOG_USEC": "200000"}
        engine = Engine(paced(data_dir), data_dir)
        (notifier,) = attach_watch(engine, environ=env)
        assert isinstance(notifier, SystemdNotifier)
        with caplog.at_level("WARNING", logger="engine.heartbeat"):
            async with hb_running(engine):
                await until(lambda: notifier.lost >= 4, "several beats lost")
    said = [r.getMessage() for r in caplog.records if "NOTIFY_SOCKET" in r.getMessage()]
    assert len(said) == 1, said
    assert str(sd / "nobody") in said[0] and "READY=1" in said[0], said


def test_a_ping_url_with_a_login_in_url_env_gets_advice_it_can_follow(monkeypatch: Any) -> None:
    """A login in the URL is refused in url_env as in url. The error told the trader to "put
    a URL with secrets in url_env", where it already was: advice that cannot be followed."""
    monkeypatch.setenv("REVIEW_PING_URL", "https://me:pw-9f8e7d@hc.example.com/ping")
    cfg = parse_config({"heartbeat": {"url_env": "REVIEW_PING_URL"}})
    assert cfg.heartbeat is not None
    with pytest.raises(ConfigError) as err:
        cfg.heartbeat.ping_url()
    (line,) = err.value.problems
    assert line.startswith("heartbeat.url_env: the URL in REVIEW_PING_URL must not carry a user")
    assert "put a URL with secrets in url_env" not in line and "ping URL" in line, line
    assert "pw-9f8e7d" not in line
