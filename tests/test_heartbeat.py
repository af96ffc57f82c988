"""The outbound heartbeat and systemd's notify protocol, against a loopback HTTP server and a
Unix datagram socket the test binds: pings go out while the engine is healthy and stop when its
event loop stalls or its journal fails (so the outside monitor raises the alarm); the URL's
token never shows; READY, WATCHDOG and STOPPING reach systemd's socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cockpit.cli import main
from engine.config import ConfigError, check_runnable, parse_config
from engine.health import health_problem
from engine.heartbeat import attach_watch, fail_url, notify_address, watchdog_interval
from engine.runtime import Engine
from tests.conftest import REPO, default_dict, fast_config, merge
from tests.test_control_support import WAIT, short_dir
from tests.test_journal_failure import break_journal

TOKEN = "c0ffee-5ecret-t0ken"


class PingServer:
    """A loopback monitor in its own thread (it must count while the engine's loop is stuck):
    records (monotonic time, method, path) of every request and answers ``code``."""

    def __init__(self, code: int = 200, delay_s: float = 0.0) -> None:
        self.code = code
        self.delay_s = delay_s
        self.hits: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                with outer.lock:
                    outer.hits.append((time.monotonic(), self.command, self.path))
                time.sleep(outer.delay_s)
                try:
                    self.send_response(outer.code)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(b"OK")
                except OSError:  # the engine gave up waiting (a timeout test)
                    pass

            do_GET = do_POST = do_HEAD = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}"

    @property
    def url(self) -> str:
        return f"{self.base}/ping/{TOKEN}"

    def paths(self) -> list[str]:
        with self.lock:
            return [p for _, _, p in self.hits]

    def count(self, path: str | None = None) -> int:
        return sum(1 for p in self.paths() if path is None or p == path)

    def __enter__(self) -> PingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def monitor() -> Iterator[PingServer]:
    with PingServer() as server:
        yield server


def paced(data_dir: Path, **heartbeat: Any) -> Any:
    """The test config at the market's own pace (an idle engine), with a heartbeat section."""
    sections: dict[str, Any] = {"market": {"simulated": {"speed": 1.0}}}
    if heartbeat:
        sections["heartbeat"] = heartbeat
    return fast_config(data_dir, **sections)


async def until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(engine: Engine) -> Any:
    await engine.start()
    task = asyncio.create_task(engine.run(duration_s=WAIT * 4))
    try:
        yield engine
    finally:
        engine.request_stop()
        await asyncio.wait_for(task, WAIT)
        await engine.stop()


def view(engine: Engine) -> dict[str, Any]:
    return engine.snapshot(trace=0)["counters"]["heartbeat"]


# ------------------------------------------------------------------------------ pings


async def test_pings_arrive_while_the_engine_is_healthy_and_the_trader_sees_them(
    data_dir: Path, monitor: PingServer
) -> None:
    engine = Engine(paced(data_dir, url=monitor.url, interval_s=0.2), data_dir)
    attach_watch(engine, environ={})
    async with running(engine):
        await until(lambda: monitor.count() >= 4, "four pings")
        await until(lambda: view(engine)["pings"] >= 4, "the pings counted")
        hb = view(engine)
        summary = engine.summary()
    assert set(monitor.paths()) == {f"/ping/{TOKEN}"}
    assert hb["state"] == "ok" and hb["paused"] == "" and hb["failures"] == 0
    assert hb["target"] == f"127.0.0.1:{monitor.httpd.server_port}"
    assert hb["last_ok_ts"] > 0
    assert summary["heartbeat"] == "ok"


async def test_a_monitor_that_fails_shows_as_failing_without_the_token(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with PingServer(code=500) as monitor:
        monkeypatch.setenv("HC_PING_URL", monitor.url)
        engine = Engine(paced(data_dir, url_env="HC_PING_URL", interval_s=0.2), data_dir)
        attach_watch(engine, environ={})
        async with running(engine):
            await until(lambda: view(engine)["failures"] >= 2, "two failed pings")
            snap = engine.snapshot(trace=0)
            summary = engine.summary()
    hb = snap["counters"]["heartbeat"]
    assert hb["state"] == "failing" and hb["pings"] == 0
    assert "HTTP 500" in hb["last_error"]
    assert "HTTP 500" in summary["heartbeat"]
    for text in (json.dumps(snap, default=str), json.dumps(summary), repr(engine.companions)):
        assert TOKEN not in text and "/ping/" not in text


async def test_a_monitor_that_does_not_answer_in_time_is_a_failure(data_dir: Path) -> None:
    with PingServer(delay_s=1.0) as slow:
        engine = Engine(
            paced(data_dir, url=slow.url, interval_s=0.3, timeout_s=0.2, method="POST"), data_dir
        )
        attach_watch(engine, environ={})
        async with running(engine):
            await until(lambda: view(engine)["failures"] >= 1, "a ping that timed out")
            hb = view(engine)
        methods = {m for _, m, _ in slow.hits}
    assert hb["last_error"] == f"no answer from 127.0.0.1:{slow.httpd.server_port} within 0.2 s"
    assert hb["state"] == "failing" and hb["pings"] == 0
    assert methods == {"POST"}


async def test_an_unreachable_monitor_is_an_error_without_the_token(data_dir: Path) -> None:
    with socket.socket() as probe:  # a port with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = Engine(
        paced(data_dir, url=f"http://127.0.0.1:{port}/ping/{TOKEN}", interval_s=0.2), data_dir
    )
    attach_watch(engine, environ={})
    async with running(engine):
        await until(lambda: view(engine)["failures"] >= 1, "a failed ping")
        hb = view(engine)
    assert hb["last_error"].startswith(f"cannot connect to 127.0.0.1:{port}")
    assert TOKEN not in json.dumps(hb)


async def test_a_stalled_event_loop_stops_the_pings(data_dir: Path, monitor: PingServer) -> None:
    """A heartbeat from a thread would go on while the loop is stuck; this one cannot, and the
    first beat after the stall is held back too (the loop did not answer within the bound)."""
    engine = Engine(paced(data_dir, url=monitor.url, interval_s=0.2, max_lag_s=0.5), data_dir)
    attach_watch(engine, environ={})
    during: list[int] = []
    async with running(engine):
        await until(lambda: view(engine)["pings"] >= 2, "the first pings")
        seen = monitor.count()
        await until(lambda: monitor.count() > seen, "a fresh ping")

        async def stall() -> None:
            # Blocks the event loop, as a runaway computation would. A ping written just
            # before arrives in the first moments; none may arrive after.
            time.sleep(0.3)
            before = monitor.count()
            time.sleep(2.0)
            during.append(monitor.count() - before)

        await asyncio.create_task(stall())
        await until(lambda: view(engine)["pauses"] >= 1, "the stall noticed")
        assert "event loop stalled" in view(engine)["paused"]
        after = monitor.count()
        await until(lambda: monitor.count() > after, "pings resumed once the loop answers")
        assert view(engine)["paused"] == ""
    assert during == [0], "a ping went out while the event loop was stuck"


async def test_a_failed_journal_stops_the_pings_and_sends_one_fail(
    data_dir: Path, monitor: PingServer
) -> None:
    engine = Engine(paced(data_dir, url=monitor.url, interval_s=0.2, on_unhealthy="fail"), data_dir)
    attach_watch(engine, environ={})
    async with running(engine):
        await until(lambda: view(engine)["pings"] >= 2, "the first pings")
        break_journal(engine.journal)
        await engine.command("pause", {"strategy": "ema_cross", "reason": "x"})  # a write
        await until(lambda: bool(engine.blocked_reason), "the engine blocked")
        await until(lambda: monitor.count(f"/ping/{TOKEN}/fail") == 1, "the fail signal")
        pings = monitor.count(f"/ping/{TOKEN}")
        await asyncio.sleep(1.0)  # five intervals: a healthy engine would have pinged
        hb = view(engine)
        summary = engine.summary()
    assert monitor.count(f"/ping/{TOKEN}") == pings
    assert monitor.count(f"/ping/{TOKEN}/fail") == 1  # once per outage, not every beat
    assert hb["state"] == "paused" and hb["paused"].startswith("trading blocked: journal")
    assert summary["heartbeat"].startswith("paused (trading blocked")


async def test_a_kill_switch_stops_the_pings_only_when_asked(
    data_dir: Path, monitor: PingServer
) -> None:
    for stop_on_kill in (False, True):
        path = data_dir / str(stop_on_kill)
        engine = Engine(
            paced(path, url=monitor.url, interval_s=0.2, stop_on_kill=stop_on_kill), path
        )
        attach_watch(engine, environ={})
        async with running(engine):
            await until(lambda e=engine: view(e)["pings"] >= 1, "a ping")  # type: ignore[misc]
            reply = await engine.command("kill", {"level": "halt", "reason": "test"})
            assert reply["ok"], reply
            if stop_on_kill:
                await until(lambda e=engine: bool(view(e)["paused"]), "paused")  # type: ignore[misc]
                assert view(engine)["paused"] == "kill switch engaged (halt)"
            else:
                n = view(engine)["pings"]
                await until(lambda e=engine, n=n: view(e)["pings"] > n + 2, "pings go on")  # type: ignore[misc]
                assert view(engine)["paused"] == ""


# ------------------------------------------------------------------------------ systemd


class NotifySocket:
    """systemd's side of NOTIFY_SOCKET: a datagram socket the test binds."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.messages: list[list[str]] = []

    def drain(self) -> list[list[str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            self.messages.append(data.decode().split("\n"))

    def fields(self) -> list[str]:
        return [f for m in self.drain() for f in m]


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
async def test_systemd_hears_ready_watchdog_and_stopping(data_dir: Path, abstract: bool) -> None:
    with short_dir() as sd:
        name = f"@cockpit-test-{id(sd)}" if abstract else str(sd / "notify")
        address = notify_address(name)
        assert address is not None
        systemd = NotifySocket(address)
        env = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "200000"}  # a beat every 0.1 s
        engine = Engine(paced(data_dir), data_dir)
        added = attach_watch(engine, environ=env)
        assert len(added) == 1  # no [heartbeat]: systemd only
        async with running(engine):
            await until(lambda: systemd.fields().count("WATCHDOG=1") >= 3, "watchdog beats")
            assert view(engine)["systemd"] == "watchdog 0.1s"
        fields = systemd.fields()
        systemd.sock.close()
    first, last = systemd.messages[0], systemd.messages[-1]
    assert first[0] == "READY=1" and first[1].startswith("STATUS=ACTIVE, kill switch off")
    assert last == ["STOPPING=1", "STATUS=stopping"]
    assert fields.index("READY=1") < fields.index("WATCHDOG=1")


async def test_the_watchdog_stops_when_the_journal_fails(data_dir: Path) -> None:
    with short_dir() as sd:
        systemd = NotifySocket(str(sd / "notify"))
        env = {"NOTIFY_SOCKET": str(sd / "notify"), "WATCHDOG_USEC": "200000"}
        engine = Engine(paced(data_dir), data_dir)
        attach_watch(engine, environ=env)
        async with running(engine):
            await until(lambda: systemd.fields().count("WATCHDOG=1") >= 2, "watchdog beats")
            break_journal(engine.journal)
            await engine.command("pause", {"strategy": "ema_cross", "reason": "x"})
            await until(lambda: bool(engine.blocked_reason), "the engine blocked")
            await asyncio.sleep(0.2)  # a beat that was due as it blocked
            beats = systemd.fields().count("WATCHDOG=1")
            await asyncio.sleep(0.6)  # six beats' worth
            assert systemd.fields().count("WATCHDOG=1") == beats
            statuses = [f for f in systemd.fields() if f.startswith("STATUS=BLOCKED")]
        systemd.sock.close()
    assert statuses and "not healthy: trading blocked" in statuses[-1]


def test_the_watchdog_belongs_to_the_process_systemd_names() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "2", "WATCHDOG_PID": str(os.getpid())}) == 1e-6
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert notify_address("@name") == b"\0name"
    assert notify_address("/run/x") == "/run/x"
    assert notify_address("vsock:2:1") is None and notify_address("@") is None


def test_the_fail_signal_keeps_the_query() -> None:
    assert fail_url("https://hc-ping.com/abc") == "https://hc-ping.com/abc/fail"
    assert fail_url("https://hc-ping.com/abc/?rid=1") == "https://hc-ping.com/abc/fail?rid=1"


# ------------------------------------------------------------------------------ config


def hb_config(tmp_path: Path, **heartbeat: Any) -> Any:
    data = merge(default_dict(), {"engine": {"data_dir": str(tmp_path / "d")}})
    return parse_config({**data, "heartbeat": heartbeat})


@pytest.mark.parametrize(
    ("heartbeat", "problem"),
    [
        ({}, "heartbeat: give exactly one of url"),
        ({"url": "http://a/x", "url_env": "X"}, "heartbeat: give exactly one of url"),
        ({"url": "ftp://host/x"}, "heartbeat: url must be an http:// or https:// URL"),
        ({"url": f"https://me:{TOKEN}@host/x"}, "heartbeat: url must not carry a user"),
        ({"url": "http://h/x", "interval_s": 0.19}, "heartbeat.interval_s: got 0.19"),
        ({"url": "http://h/x", "timeout_s": 120.01}, "heartbeat.timeout_s: got 120.01"),
        ({"url": "http://h/x", "on_unhealthy": "page"}, "heartbeat.on_unhealthy: got 'page'"),
        ({"url": "http://h/x", "pings": 3}, "heartbeat.pings: unknown key"),
        ({"url_env": "1BAD"}, "heartbeat.url_env: got '1BAD'"),
    ],
)
def test_bad_heartbeat_sections_get_one_line_without_the_url(
    tmp_path: Path, heartbeat: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as err:
        hb_config(tmp_path, **heartbeat)
    assert len(err.value.problems) == 1 and problem in err.value.problems[0], err.value.problems
    assert TOKEN not in str(err.value)


def test_heartbeat_limits_at_their_boundaries(tmp_path: Path) -> None:
    ok = hb_config(tmp_path, url="http://h/x", interval_s=0.2, timeout_s=120, max_lag_s=0.05)
    assert ok.heartbeat.interval_s == 0.2
    with pytest.raises(ConfigError):
        hb_config(tmp_path, url="http://h/x", max_lag_s=0.049)


def test_config_check_wants_the_url_variable_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_file = tmp_path / "hb.toml"
    cfg_file.write_text(
        f'[engine]\ndata_dir = "{tmp_path / "d"}"\n[heartbeat]\nurl_env = "HC_URL"\n'
    )
    monkeypatch.delenv("HC_URL", raising=False)
    assert main(["config", "check", "--config", str(cfg_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "config error: heartbeat.url_env: the environment variable HC_URL is not set; export it "
        "with the ping URL, or remove the [heartbeat] section"
    )
    monkeypatch.setenv("HC_URL", f"hc-ping.com/{TOKEN}")  # no scheme
    assert main(["config", "check", "--config", str(cfg_file)]) == 2
    err = capsys.readouterr().err
    assert "the URL in HC_URL must be an http://" in err and TOKEN not in err
    monkeypatch.setenv("HC_URL", f"https://hc-ping.com/{TOKEN}")
    assert main(["config", "check", "--config", str(cfg_file)]) == 0
    assert capsys.readouterr().out.strip() == "ok"
    cfg = hb_config(tmp_path, url_env="HC_URL")
    check_runnable(cfg)  # set: no error


# ------------------------------------------------------------------------------ the command


def engine_argv(cfg_file: Path, sock: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cockpit",
        "engine",
        "--config",
        str(cfg_file),
        "--socket",
        str(sock),
    ]


def test_cockpit_engine_pings_notifies_and_shows_the_heartbeat(
    tmp_path: Path, monitor: PingServer
) -> None:
    """The daemon as systemd runs it: `cockpit engine` with a [heartbeat] section and
    NOTIFY_SOCKET set. The monitor gets pings, systemd READY=1 then STOPPING=1, and the trader
    sees the heartbeat in the summary lines and in `cockpit status`, never the token."""
    cfg_file = tmp_path / "hb.toml"
    cfg_file.write_text(
        f'[engine]\ndata_dir = "{tmp_path / "data"}"\nsummary_interval_s = 0.3\n'
        f'[heartbeat]\nurl = "{monitor.url}"\ninterval_s = 0.2\n'
    )
    with short_dir() as sd:
        systemd = NotifySocket(str(sd / "notify"))
        sock = sd / "e.sock"
        env = dict(os.environ, NOTIFY_SOCKET=str(sd / "notify"), PYTHONPATH=str(REPO))
        env.pop("WATCHDOG_USEC", None)
        proc = subprocess.Popen(
            engine_argv(cfg_file, sock),
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + WAIT
            while monitor.count() < 3 or "READY=1" not in systemd.fields():
                assert time.monotonic() < deadline, "no pings or no READY=1"
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.05)
            status = subprocess.run(
                [sys.executable, "-m", "cockpit", "status", "--socket", str(sock)],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=WAIT,
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                out, err = proc.communicate(timeout=WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        fields = systemd.fields()
        systemd.sock.close()
    assert proc.returncode == 0, err
    assert status.returncode == 0, status.stderr
    port = monitor.httpd.server_port
    assert f"heartbeat   ok to 127.0.0.1:{port} (" in status.stdout, status.stdout
    assert "systemd notify" in status.stdout
    summaries = [json.loads(x) for x in out.splitlines() if '"summary"' in x]
    assert summaries and summaries[-1]["heartbeat"] == "ok"
    assert fields[0] == "READY=1" and fields[-2:] == ["STOPPING=1", "STATUS=stopping"]
    for text in (out, err, status.stdout):
        assert TOKEN not in text


# ------------------------------------------------------------------------------ the rule


def _engine_like(blocked: str, kill: str | None) -> Any:
    from types import SimpleNamespace

    safety = SimpleNamespace(kill=SimpleNamespace(level=kill))
    return SimpleNamespace(blocked_reason=blocked, core=SimpleNamespace(safety=safety))


@settings(max_examples=int(os.environ.get("COCKPIT_HEALTH_RULE_EXAMPLES", "300")), deadline=None)
@given(
    blocked=st.sampled_from(["", "journal write failed (disk I/O error)"]),
    lag=st.floats(0, 1e5, allow_nan=False),
    bound=st.floats(0.05, 3600, allow_nan=False),
    kill=st.sampled_from([None, "entries", "halt", "flatten"]),
    stop_on_kill=st.booleans(),
)
def test_a_beat_is_vouched_only_for_a_healthy_engine(
    blocked: str, lag: float, bound: float, kill: str | None, stop_on_kill: bool
) -> None:
    """The one rule the HTTP heartbeat and systemd's watchdog share: healthy exactly when the
    journal writes, the loop answered within the bound, and (if asked) no kill switch."""
    problem = health_problem(_engine_like(blocked, kill), lag, bound, stop_on_kill)
    healthy = not blocked and lag <= bound and not (stop_on_kill and kill is not None)
    assert (problem == "") == healthy, problem
    if blocked:
        assert problem.startswith("trading blocked: journal")


def test_the_lag_bound_at_its_edge() -> None:
    engine = _engine_like("", None)
    assert health_problem(engine, 0.5, 0.5, False) == ""  # at the bound: answered in time
    over = math.nextafter(0.5, 1.0)
    assert health_problem(engine, over, 0.5, False) == "event loop stalled 0.5 s (bound 0.5 s)"
    assert health_problem(_engine_like("", "halt"), 0.0, 0.5, False) == ""
    assert health_problem(_engine_like("", "halt"), 0.0, 0.5, True) == "kill switch engaged (halt)"
