"""Adversarial review of issue 14-16's promises (alerts, heartbeat, metrics, fleet, exits, data):
each test is a hole found by attacking the promise, failing before its fix. Every wait is
bounded."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cockpit.fleet import FleetError, load_fleet
from engine import telemetry
from engine.alert_send import MAX_DELIVERY_THREADS, AppriseDestination, CommandDestination
from engine.alert_text import AlertText
from engine.alerts import build_dispatcher
from engine.config import ConfigError, parse_config
from engine.events import ApprovalDecided, OrderUpdated, SafetyChanged
from engine.fanout import EventFanout
from engine.heartbeat import Heartbeat, HeartbeatStatus, attach_watch, url_target
from engine.runtime import Engine
from engine.types import Action, Bar, LimitSpec, PositionView, Side, Signal
from engine.venues.ccxt_broker import retry_after_from_headers
from engine.vocabulary import IntentOrigin, IntentOutcome
from tests.alert_hook import Hook
from tests.conftest import REPO, fast_config
from tests.test_alerts import _config_file, dispatcher, fill_event, running, show, stop
from tests.test_exits import SYM, EnterOnce, Harness, make_core
from tests.test_heartbeat import TOKEN, PingServer, paced, until
from tests.test_heartbeat import running as hb_running
from tests.test_heartbeat import view as hb_view

WAIT_S = 15.0  # generous bound for "it happened"


@contextmanager
def dribbling_server(body: bool = False) -> Iterator[str]:
    """An HTTP server that starts its answer and never finishes it: a header line (``body``:
    a byte of a long body) every 0.2 s, so no socket read ever times out. Yields its json://
    URL."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    done = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                if body:
                    conn.sendall(b"Content-Length: 1000000\r\n\r\n")
                while not done.wait(0.2):
                    conn.sendall(b"x" if body else b"X-Slow: 1\r\n")
            except OSError:
                pass

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"json://127.0.0.1:{srv.getsockname()[1]}/slow"
    finally:
        done.set()
        srv.close()


def kill_event() -> SafetyChanged:
    before = {"trading_state": "ACTIVE", "kill_level": None}
    after = {"trading_state": "HALTED", "kill_level": "halt"}
    return SafetyChanged(1, "kill_switch", "engine", before, after, "ops", "test")


async def test_a_destination_that_never_finishes_answering_cannot_starve_a_kill_alert() -> None:
    """Fills to a webhook whose server dribbles its answer forever (each delivery's thread
    stays stuck past its timeout): a kill alert to the trader's phone (another route) still
    arrives within 5 s, and the stuck destination holds a bounded number of threads. Before:
    the stuck deliveries filled apprise's shared pool and the kill alert never left."""
    with dribbling_server() as slow_url, Hook() as phone:
        d = dispatcher(
            urls=[slow_url],
            events=["fill"],
            timeout_s=0.5,
            max_per_window=10_000,
            routes={"phone": {"urls": [phone.url()], "events": ["kill_engaged"]}},
        )
        fanout = EventFanout()
        fanout.watchers.append(d.observe)
        task = await running(d)
        try:
            show(fanout, *(fill_event(i) for i in range(20)))
            deadline = time.monotonic() + WAIT_S
            while d.view()["failed"] < 12 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert d.view()["failed"] >= 12, d.view()
            show(fanout, kill_event())
            arrived = await phone.wait_for(lambda p: any("KILL" in x.title for x in p), 5.0)
            assert arrived, (phone.titles(), d.view())
            slow = d.routes[0].targets[0].dest
            assert isinstance(slow, AppriseDestination)
            assert slow.threads <= 2 * MAX_DELIVERY_THREADS
        finally:
            await stop(task)


# ------------------------------------------------------------------------------ heartbeat


async def test_a_journal_commit_the_disk_never_answers_stops_the_heartbeat(
    data_dir: Path,
) -> None:
    """A disk that stops answering (a dead network volume) raises no error, so the engine is
    not BLOCKED; yet nothing is recorded and no order or command goes out, each waiting for its
    row. Before: the heartbeat went on saying "ok" all along. Now it pauses, naming the journal,
    and resumes once the disk answers."""
    with PingServer() as monitor:
        engine = Engine(paced(data_dir, url=monitor.url, interval_s=0.2, max_lag_s=0.5), data_dir)
        attach_watch(engine, environ={})
        async with hb_running(engine):
            await until(lambda: hb_view(engine)["pings"] >= 2, "the first pings")
            assert engine.journal is not None
            disk = asyncio.Event()
            insert = engine.journal._insert

            async def hung(batch: Any) -> None:
                await disk.wait()
                await insert(batch)

            engine.journal._insert = hung  # type: ignore[method-assign]
            command = asyncio.create_task(
                engine.command("pause", {"strategy": "ema_cross", "reason": "x"})
            )
            try:
                await until(lambda: hb_view(engine)["paused"] != "", "the heartbeat paused")
                pings = monitor.count(f"/ping/{TOKEN}")
                await asyncio.sleep(1.0)  # five intervals: a healthy engine would have pinged
                assert monitor.count(f"/ping/{TOKEN}") == pings
                assert hb_view(engine)["paused"].startswith("journal commit waiting")
            finally:
                disk.set()
                await asyncio.wait_for(command, WAIT_S)
            await until(lambda: monitor.count(f"/ping/{TOKEN}") > pings, "pings resumed")


# ------------------------------------------------------------------------------ the command hook


async def test_the_command_hook_does_not_inherit_the_engines_secrets(
    tmp_path: Path, data_dir: Path, monkeypatch: Any
) -> None:
    """The hook is a notification script: before, it ran with the engine's whole environment,
    venue API keys and the alert and heartbeat token URLs included. Now those variables are
    kept from it; the rest of the environment (PATH, its own settings) still reaches it."""
    secrets = {
        "REVIEW_VENUE_KEY": "key-s3cr3t-1",
        "REVIEW_VENUE_SECRET": "secret-s3cr3t-2",
        "REVIEW_ALERT_URL": "json://127.0.0.1:9/hook/TOKEN-s3cr3t-3",
        "REVIEW_PING_URL": "http://127.0.0.1:9/ping/TOKEN-s3cr3t-4",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REVIEW_HOOK_SETTING", "kept")
    out = tmp_path / "env.json"
    script = tmp_path / "hook.py"
    script.write_text(
        "import json, os, pathlib, sys\n"
        "sys.stdin.read()\n"
        f"pathlib.Path({str(out)!r}).write_text(json.dumps(dict(os.environ)))\n"
    )
    venue = {
        "exchange": "binance",
        "api_key_env": "REVIEW_VENUE_KEY",
        "secret_env": "REVIEW_VENUE_SECRET",
    }
    cfg = fast_config(
        data_dir,
        venues={"binance": venue},
        heartbeat={"url_env": "REVIEW_PING_URL"},
        alerts={
            "urls_env": ["REVIEW_ALERT_URL"],
            "command": {"argv": [sys.executable, str(script)], "events": ["fill"]},
        },
    )
    d = build_dispatcher(cfg, str(data_dir))
    assert d is not None
    hook = next(t.dest for t in d.targets if isinstance(t.dest, CommandDestination))
    delivery = await asyncio.wait_for(hook.send(d.text.test("command", 1)), WAIT_S)
    assert delivery.ok, delivery
    env = json.loads(out.read_text())
    assert env.get("REVIEW_HOOK_SETTING") == "kept" and "PATH" in env
    leaked = sorted(n for n in secrets if n in env)
    assert not leaked, f"the hook saw {leaked}"
    assert not any(v in json.dumps(env) for v in secrets.values())


# ------------------------------------------------------------------------------ fleet


def test_a_fleet_file_naming_one_socket_twice_through_a_symlink_is_refused(
    tmp_path: Path,
) -> None:
    """Before: only the spelling of the path was compared, so a symlinked directory (or a
    symlink to the socket) listed one engine as two rows and sent it the fleet kill twice."""
    run = tmp_path / "run"
    run.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(run / "e.sock"))
    try:
        (tmp_path / "alias").symlink_to(run)
        (tmp_path / "e-link.sock").symlink_to(run / "e.sock")
        for other in ("alias/e.sock", "e-link.sock", "alias/../run/e.sock"):
            path = tmp_path / "fleet.toml"
            path.write_text(
                f'[engines.a]\nsocket = "run/e.sock"\n[engines.b]\nsocket = "{other}"\n'
            )
            with pytest.raises(FleetError, match="both use the socket"):
                load_fleet(path)
        # Not there yet (an SSH tunnel not up): the resolved path still tells them apart.
        path.write_text('[engines.a]\nsocket = "gone/x.sock"\n[engines.b]\nsocket = "y.sock"\n')
        assert [e.name for e in load_fleet(path)] == ["a", "b"]
    finally:
        sock.close()


# ------------------------------------------------------------------------------ alert URLs

TOKEN_URLS = [
    "tgram://123456789:AAHdefGHIjklmnopqrstuvwxyz0123456789/12345",
    "discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js",
    "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general",
    "pover://uQiRzpo4DXghDmr9QzzfQu27cmVRsG@avMgzEmHVW3kctWmBvjvmU8ffVZtqh",
    "ntfys://tk_abcdefghij@ntfy.sh/topic",
]


@pytest.mark.parametrize("url", TOKEN_URLS, ids=[u.split(":", 1)[0] for u in TOKEN_URLS])
def test_a_token_url_written_in_the_file_is_refused_without_echoing_it(url: str) -> None:
    """`urls` is for URLs that hold no secret; before, only a user:password was refused, so
    a Telegram bot token (the most common alert URL) sat in the file and was accepted."""
    with pytest.raises(ConfigError) as err:
        parse_config({"alerts": {"urls": [url]}})
    (line,) = err.value.problems
    assert "urls_env" in line and "holds a token" in line
    secret = url.split("://", 1)[1]
    assert not any(piece in line for piece in re.split(r"[/:@#]", secret) if len(piece) >= 4)


def test_urls_without_a_secret_are_still_taken_from_the_file() -> None:
    urls = ["json://127.0.0.1:8080/hook", "ntfy://ntfy.sh/mytopic", "jsons://example.com/a/b"]
    cfg = parse_config({"alerts": {"urls": urls}})
    assert cfg.alerts is not None and cfg.alerts.urls == urls


# ------------------------------------------------------------------------------ metrics


def _scrape(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as resp:
        resp.read()
        return int(resp.status)


def _scrape_soon(url: str, within_s: float = WAIT_S) -> int:
    deadline = time.monotonic() + within_s
    while True:
        try:
            return _scrape(url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_flood_of_idle_metrics_connections_takes_a_bounded_share_of_the_engine(
    monkeypatch: Any,
) -> None:
    """The metrics server lives in the engine's process, and any local user can reach
    127.0.0.1. Before: each idle connection held a thread and a file descriptor forever (300
    connections, 300 threads), so a flood could take the descriptors the journal, the control
    socket and the venues need. Now at most MAX_SCRAPERS are served, each for at most
    SCRAPE_TIMEOUT_S, and scrapes work again once the flood is over (or has timed out)."""
    monkeypatch.setattr(telemetry, "SCRAPE_TIMEOUT_S", 0.5, raising=False)
    bound = getattr(telemetry, "MAX_SCRAPERS", 8)
    server = telemetry.MetricsServer("127.0.0.1", 0)
    server.start()
    try:
        threads = threading.active_count()
        fds = len(os.listdir("/proc/self/fd"))
        flood = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(40)]
        try:
            time.sleep(0.3)
            assert threading.active_count() - threads <= bound
            # Our own 40 client ends, plus what the server holds for them.
            held = len(os.listdir("/proc/self/fd")) - fds - len(flood)
            assert held <= bound + 2
            assert _scrape_soon(server.url) == 200  # the idle ones were let go
        finally:
            for conn in flood:
                conn.close()
        assert _scrape_soon(server.url) == 200
    finally:
        asyncio.run(server.close())


# ------------------------------------------------------------------------------ exits


class EnterThenAskToSell(EnterOnce):
    """Enters long at once; once ``want_out``, asks to sell on every bar (as a strategy whose
    signal says "out" does while that signal holds)."""

    want_out = False

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        if not self.entered and not position.qty:
            self.entered = True
            return Signal(Action.BUY, "enter", "test entry", 1.0)
        if position.qty > 0 and self.want_out:
            return Signal(Action.SELL, "exit", "the signal says out", 1.0)
        return None


def test_a_sell_waiting_for_a_person_does_not_hold_back_the_stop_loss() -> None:
    """The strategy asks to sell and the request waits for a person (approval "approve", the
    default); the price falls through the stop-loss. Before: the exit was sized as if the
    waiting request would go, so it sent nothing (qty 0, every second) and the position rode
    the fall for as long as nobody answered (forever, while the strategy re-asked each bar).
    Now the waiting request is rejected as superseded and the stop goes out at once."""
    core = make_core({"stop_loss_pct": 2.0})
    strategy = EnterThenAskToSell("s1", SYM)
    core.slots[("s1", SYM)].strategy = strategy
    h = Harness(core)
    for _ in range(3):
        h.quote(100.0)
    assert h.position == 1.0
    core.approvals._modes["s1"] = "approve"  # the operator's mode (the default for a strategy)
    strategy.want_out = True
    h.quote(100.0)
    h.quote(100.0)
    (waiting,) = core.approvals.pending()
    assert waiting.intent.side == Side.SELL
    h.quote(97.5)  # through the stop (98)
    (exit_,) = h.intents(IntentOrigin.EXIT)
    assert exit_.outcome == IntentOutcome.SUBMITTED and exit_.intent.qty == 1.0, exit_.verdicts
    decided = [e.outcome for e in h.events if type(e) is ApprovalDecided]
    assert [d["status"] for d in decided] == ["rejected"]
    assert decided[0]["approval_id"] == waiting.approval_id
    assert "superseded by the protective exit (stop-loss at" in decided[0]["reason"]
    for _ in range(10):
        h.quote(97.0)
    assert h.position == 0.0
    assert len(h.intents(IntentOrigin.EXIT)) == 1  # once, never doubled up
    assert core.approvals.pending() == []


class EnterThenRestTakeProfit(EnterOnce):
    """Enters long at once, then rests a reduce-only take-profit limit above (as a
    strategy that exits with limits does) and leaves it there."""

    want_take_profit = True

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        if not self.entered and not position.qty:
            self.entered = True
            return Signal(Action.BUY, "enter", "test entry", 1.0)
        if position.qty > 0 and self.want_take_profit:
            return Signal(
                Action.SELL, "take_profit", "rest a take-profit", 1.0, {}, True, LimitSpec(100.8)
            )
        return None


def test_a_resting_take_profit_limit_does_not_hold_back_the_stop_loss() -> None:
    """A long position with the strategy's own take-profit limit resting at 100.8; the price
    falls through the stop-loss at 98. Before: the stop counted the resting sell as the exit
    already on its way (and the reduce-only check counted it against the position), so it sent
    nothing while the market fell away from the limit. Now the exit cancels the limit, with
    the reason, and goes out for the whole position."""
    core = make_core({"stop_loss_pct": 2.0})
    strategy = EnterThenRestTakeProfit("s1", SYM)
    core.slots[("s1", SYM)].strategy = strategy
    h = Harness(core)
    for _ in range(4):
        h.quote(100.0)
    assert h.position == 1.0
    strategy.want_take_profit = False
    (limit,) = core.open_orders.values()
    assert limit.side == Side.SELL and limit.limit_price == 100.8
    h.quote(97.5)  # through the stop (98)
    h.quote(97.4)
    cancelled = [
        e.order
        for e in h.events
        if type(e) is OrderUpdated and e.order.client_order_id == limit.client_order_id
    ]
    assert cancelled[-1].status.value == "canceled"
    assert "cancelled for the protective exit: stop-loss at" in cancelled[-1].reason
    (exit_,) = h.intents(IntentOrigin.EXIT)
    assert exit_.outcome == IntentOutcome.SUBMITTED and exit_.intent.qty == 1.0, exit_.verdicts
    for _ in range(5):
        h.quote(97.0)
    assert h.position == 0.0
    assert len(h.intents(IntentOrigin.EXIT)) == 1
    assert core.open_orders == {}


# ------------------------------------------------------------------------------ heartbeat URLs


def test_a_ping_url_whose_host_the_http_client_cannot_encode_is_refused_at_config(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """``http://a..b/TOKEN`` passed the check, then every ping raised UnicodeError out of its
    task: nothing counted, "Task exception was never retrieved" on stderr every interval."""
    monkeypatch.setenv("REVIEW_HC_URL", f"http://hc..example/{TOKEN}")
    cfg = parse_config({"heartbeat": {"url_env": "REVIEW_HC_URL"}})
    assert cfg.heartbeat is not None
    with pytest.raises(ConfigError) as err:
        cfg.heartbeat.ping_url()
    (line,) = err.value.problems
    assert "host name that is not valid" in line and TOKEN not in line
    with pytest.raises(ConfigError):
        parse_config({"heartbeat": {"url": "http://hc..example/x"}})


async def test_any_error_of_a_ping_is_a_counted_failure_without_the_url() -> None:
    class Raising:
        def request(self, method: str, url: str) -> Any:
            raise UnicodeError(f"cannot encode {url}")

    cfg = parse_config({"heartbeat": {"url": "http://127.0.0.1:9/ping"}}).heartbeat
    assert cfg is not None
    url = f"http://127.0.0.1:9/ping/{TOKEN}"
    status = HeartbeatStatus(url_target(url))
    await Heartbeat(cfg, status, url)._ping(Raising(), url)
    assert status.view["failures"] == 1 and status.view["state"] == "failing"
    assert status.view["last_error"] == "request to 127.0.0.1:9 failed (UnicodeError)"


def test_alerts_test_returns_when_a_destination_never_finishes_its_answer(tmp_path: Path) -> None:
    """`cockpit alerts test` against a server that sends a body byte by byte forever: it
    reports the destination as failed and exits 1. Before: the delivery's thread (in apprise's
    pool, which the interpreter joins at exit) kept the command from ever returning."""
    with dribbling_server(body=True) as url:
        config = _config_file(tmp_path, f'urls = ["{url}"]\ntimeout_s = 1\n')
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        try:
            result = subprocess.run(
                [sys.executable, "-m", "cockpit", "alerts", "test", "--config", str(config)],
                capture_output=True,
                text=True,
                cwd=REPO,
                env=env,
                timeout=30,
            )
        except subprocess.TimeoutExpired:
            pytest.fail("cockpit alerts test did not return within 30 s")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED: no answer within 1 s" in result.stdout


# ------------------------------------------------------------------------------ venue rate limits


@pytest.mark.parametrize(
    "headers",
    [
        {"gw-ratelimit-reset": "inf"},
        {"gw-ratelimit-reset": "1e15"},
        {"gw-ratelimit-reset": "nan"},
        {"x-bapi-limit-reset-timestamp": "1e20"},
        {"x-bapi-limit-reset-timestamp": "inf"},
        {"retry-after": "1e20"},
    ],
)
def test_a_venues_absurd_wait_header_is_capped_like_retry_after(headers: dict[str, str]) -> None:
    """KuCoin's and Bybit's reset headers were taken as they came: "inf" or 1e15 ms blocked
    the request gate for good (cancels included, so a kill switch's cancel-all on that venue
    never went; `cockpit data download` slept for ever). Now every header is capped as
    Retry-After was: finite, at most an hour."""
    wait = retry_after_from_headers(headers, 1_000)
    assert wait is not None and 0.0 <= wait <= 3600.0


def test_sane_reset_headers_are_kept_exactly() -> None:
    assert retry_after_from_headers({"gw-ratelimit-reset": "1500"}, 0) == 1.5
    assert retry_after_from_headers({"x-bapi-limit-reset-timestamp": "4000"}, 1_000) == 3.0
    assert retry_after_from_headers({"x-bapi-limit-reset-timestamp": "500"}, 1_000) == 0.0
    assert retry_after_from_headers({"retry-after": "3600"}, 0) == 3600.0
    assert retry_after_from_headers({"retry-after": "3600.5"}, 0) == 3600.0


# ------------------------------------------------------------------------------ alert text


async def test_alert_text_is_sent_as_plain_text_so_telegram_gets_it_escaped(
    monkeypatch: Any,
) -> None:
    """A kill reason typed by the operator ("spread < 5 bps & widening") went to Telegram raw
    with parse_mode HTML: Telegram refuses such a message ("can't parse entities"), so the kill
    alert was never delivered. Now the text is declared plain and apprise escapes it. (The
    Telegram API is not reached: its HTTP call is replaced and the request it would send read.)"""
    import requests

    sent: list[dict[str, Any]] = []

    class Answer:
        status_code = 200
        content = b'{"ok": true}'
        text = '{"ok": true}'
        headers: ClassVar[dict[str, str]] = {}

        def json(self) -> dict[str, Any]:
            return {"ok": True}

    def post(url: str, *args: Any, **kwargs: Any) -> Answer:
        data = kwargs.get("data")
        sent.append(json.loads(data) if isinstance(data, str | bytes) else dict(data or {}))
        return Answer()

    monkeypatch.setattr(requests, "post", post)
    url = "tgram://123456789:AAHdefGHIjklmnopqrstuvwxyz0123456789/12345"
    dest = AppriseDestination("phone", url, 5.0, env="REVIEW_TG")
    text = AlertText("[live]")
    alert = text.describe(
        {"seq": 1, "event": "safety", "ts": 1, **kill_event().payload()}
        | {"reason": "spread < 5 bps & widening"}
    )
    assert alert is not None
    delivery = await asyncio.wait_for(dest.send(alert), WAIT_S)
    assert delivery.ok, delivery
    (payload,) = sent
    assert payload["parse_mode"] == "HTML"
    assert "spread &lt; 5 bps &amp; widening" in payload["text"]
    assert "< 5" not in payload["text"]
