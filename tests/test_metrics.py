"""The Prometheus endpoint, scraped with a real HTTP client: from an engine in this process and
from `cockpit engine --metrics 0` in its own; the values agree with the snapshot (fills, quotes,
intents, denials by code, equity, the kill switch after a kill); a scrape is answered while the
event loop is stuck and says so; a taken port stops the engine before it starts; every metric
the Grafana dashboard charts is in a scrape."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from cockpit.cli import build_parser
from engine.runtime import Engine
from engine.telemetry import EventCounts, MetricsServer, is_loopback
from tests.conftest import REPO, fast_config
from tests.test_control_support import WAIT, short_dir

DASHBOARD = REPO / "docs" / "grafana-dashboard.json"
Scrape = dict[str, list[tuple[dict[str, str], float]]]


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=WAIT) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return str(resp.read().decode())


def parse(text: str) -> tuple[Scrape, set[str]]:
    """Samples by name, and every family name the scrape declares (with its sample names)."""
    samples: Scrape = {}
    declared: set[str] = set()
    for family in text_string_to_metric_families(text):
        declared.add(family.name)
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
        }.get(family.type, ("",))
        declared.update(family.name + s for s in suffixes)
        for s in family.samples:
            samples.setdefault(s.name, []).append((dict(s.labels), s.value))
    return samples, declared


async def scrape(url: str) -> Scrape:
    return parse(await asyncio.to_thread(fetch, url))[0]


def value(samples: Scrape, name: str, **labels: str) -> float:
    rows = [
        v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    ]
    assert len(rows) == 1, (name, labels, samples.get(name))
    return rows[0]


async def until_scraped(url: str, check: Callable[[Scrape], bool], what: str) -> Scrape:
    deadline = time.monotonic() + WAIT
    while True:
        samples = await scrape(url)
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
def metrics() -> Iterator[MetricsServer]:
    server = MetricsServer("127.0.0.1", 0)
    server.start()
    try:
        yield server
    finally:
        asyncio.run(server.close())


def denials_in(engine: Engine) -> Counter[str]:
    codes: Counter[str] = Counter()
    for e in engine.recent:
        if e["event"] == "intent" and e["outcome"] == "denied":
            codes.update(str(v["code"]) for v in e["verdicts"] if not v["ok"])
    return codes


# ------------------------------------------------------------------------------ in process


async def test_a_scrape_agrees_with_the_snapshot(data_dir: Path, metrics: MetricsServer) -> None:
    # One open position at most: some intents are denied, so the denial codes have rows.
    cfg = fast_config(data_dir, risk={"max_open_positions": 1, "max_position_fraction": 0.001})
    engine = Engine(cfg, data_dir)
    sampler = metrics.sampler()
    engine.companions.append(sampler)
    await engine.start()
    try:
        await engine.run(max_events=6_000)
        # The sampler's last sample is the run's end; the journal's writer may still commit
        # (and show) its last rows: wait for that, then sample the settled engine.
        await engine.committed()
        sampler.take(engine, running=False)
        text = await asyncio.to_thread(fetch, metrics.url)
        snap = engine.snapshot(trace=0)
        journal = engine.journal
        assert journal is not None
        commits = journal.commit_seconds.count
        denials = denials_in(engine)
    finally:
        await engine.stop()
    samples, declared = parse(text)
    counters, portfolio = snap["counters"], snap["portfolio"]
    assert counters["fills"] > 0 and counters["denied"] > 0  # the run traded and was denied
    assert value(samples, "cockpit_fills_total") == counters["fills"]
    assert value(samples, "cockpit_quotes_total") == counters["quotes"] == 6_000
    assert value(samples, "cockpit_decisions_total") == counters["decisions"]
    for outcome in ("submitted", "denied", "awaiting_approval"):
        assert value(samples, "cockpit_intents_total", outcome=outcome) == counters[outcome]
    assert {lab["code"]: v for lab, v in samples["cockpit_intent_denials_total"]} == denials
    assert value(samples, "cockpit_equity") == portfolio["equity"]
    assert value(samples, "cockpit_drawdown_ratio") == portfolio["drawdown"]
    assert value(samples, "cockpit_open_positions") == portfolio["open_position_count"]
    for pos in snap["positions"]:
        assert value(samples, "cockpit_position_qty", symbol=pos["symbol"]) == pos["qty"]
    assert value(samples, "cockpit_kill_switch_level") == 0
    assert value(samples, "cockpit_trading_state", state="ACTIVE") == 1
    assert value(samples, "cockpit_trading_state", state="HALTED") == 0
    assert value(samples, "cockpit_journal_ok") == 1
    assert value(samples, "cockpit_journal_commit_seconds_count") == commits > 0
    assert value(samples, "cockpit_journal_commit_seconds_bucket", le="+Inf") == commits
    assert value(samples, "cockpit_venue_connected", venue="sim") == 1
    assert value(samples, "cockpit_engine_running") == 0  # the run is over
    assert value(samples, "cockpit_alerts_dropped_total") == 0
    breakers = {(b["name"], b["scope"]): b["tripped"] for b in snap["breakers"]}
    scraped = {(lab["breaker"], lab["scope"]): v for lab, v in samples["cockpit_breaker_tripped"]}
    assert scraped == {k: float(v) for k, v in breakers.items()}
    assert all(name.startswith(("cockpit_", "process_", "python_")) for name in samples)

    # Every metric the Grafana dashboard charts is in the scrape.
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", []) if "expr" in t]
    assert len(exprs) > 20
    names = {n for e in exprs for n in re.findall(r"\bcockpit_[a-z0-9_]+", e)}
    assert names - declared == set(), "dashboard metrics the engine does not serve"
    served = {n for n in samples if n.startswith("cockpit_")}
    unused = {n for n in served if not n.endswith(("_bucket", "_sum", "_count"))} - names
    # The dashboard leaves out only what needs no chart of its own.
    assert unused <= {
        "cockpit_engine_info",
        "cockpit_session",
        "cockpit_cash",
        "cockpit_events_total",
        "cockpit_events_dropped_total",
        "cockpit_sampler_errors_total",
        "cockpit_sampler_seconds",
        "cockpit_journal_rows_total",
        "cockpit_position_qty",
        "cockpit_slippage_cost",
        "cockpit_breaker_value",
        "cockpit_breaker_limit",
    }, unused


async def test_the_kill_switch_shows_in_the_metrics(data_dir: Path, metrics: MetricsServer) -> None:
    engine = Engine(fast_config(data_dir, market={"simulated": {"speed": 1.0}}), data_dir)
    engine.companions.append(metrics.sampler(every_s=0.2))
    await engine.start()
    run = asyncio.create_task(engine.run(duration_s=WAIT * 4))
    try:
        url = metrics.url
        samples = await until_scraped(
            url,
            lambda s: "cockpit_engine_running" in s and s["cockpit_engine_running"][0][1] == 1,
            "the first sample",
        )
        assert value(samples, "cockpit_kill_switch_level") == 0
        reply = await engine.command("kill", {"level": "halt", "reason": "metrics test"})
        assert reply["ok"], reply
        samples = await until_scraped(
            url, lambda s: value(s, "cockpit_kill_switch_level") == 2, "the kill in the metrics"
        )
        snap = engine.snapshot(trace=0)
        assert snap["kill_switch"]["level"] == "halt"
        assert value(samples, "cockpit_trading_state", state="HALTED") == 1
        assert value(samples, "cockpit_trading_state", state="ACTIVE") == 0
    finally:
        engine.request_stop()
        await asyncio.wait_for(run, WAIT)
        await engine.stop()


async def test_a_stuck_loop_still_answers_and_says_so(
    data_dir: Path, metrics: MetricsServer
) -> None:
    """The server's thread answers while the loop is stuck, from the last sample (it never
    reads the engine itself); the sample's age and the loop lag tell the story."""
    engine = Engine(fast_config(data_dir, market={"simulated": {"speed": 1.0}}), data_dir)
    engine.companions.append(metrics.sampler(every_s=0.2))
    await engine.start()
    run = asyncio.create_task(engine.run(duration_s=WAIT * 4))
    try:
        await until_scraped(
            metrics.url, lambda s: "cockpit_sample_age_seconds" in s, "the first sample"
        )
        during: list[Scrape] = []

        def scrape_while_stuck() -> None:
            time.sleep(1.2)
            during.append(parse(fetch(metrics.url))[0])

        scraper = threading.Thread(target=scrape_while_stuck)
        scraper.start()
        time.sleep(2.5)  # the event loop is stuck here
        scraper.join(WAIT)
        assert during, "the scrape was not answered while the loop was stuck"
        assert value(during[0], "cockpit_sample_age_seconds") >= 1.2
        after = await until_scraped(
            metrics.url,
            lambda s: (
                value(s, "cockpit_event_loop_lag_max_seconds") > 0
                and value(s, "cockpit_sample_age_seconds") < 1.0
            ),
            "a sample after the stall",
        )
        lag_over_1s = value(after, "cockpit_event_loop_lag_seconds_count") - value(
            after, "cockpit_event_loop_lag_seconds_bucket", le="1.0"
        )
        assert lag_over_1s >= 1  # the stall, in the histogram's tail
    finally:
        engine.request_stop()
        await asyncio.wait_for(run, WAIT)
        await engine.stop()


async def test_scrapes_while_trading_are_whole_and_never_go_back(
    data_dir: Path, metrics: MetricsServer
) -> None:
    """The exposition thread reads only frozen samples: scraping hard while the engine trades
    as fast as it can gives whole documents whose counters never decrease."""
    engine = Engine(fast_config(data_dir), data_dir)
    engine.companions.append(metrics.sampler(every_s=0.05))
    stop = threading.Event()
    seen: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def hammer() -> None:
        while not stop.is_set():
            try:
                s = parse(fetch(metrics.url))[0]
            except BaseException as exc:  # reported below
                errors.append(exc)
                return
            if "cockpit_quotes_total" in s:
                seen.append((value(s, "cockpit_quotes_total"), value(s, "cockpit_fills_total")))

    await engine.start()
    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        await engine.run(max_events=int(os.environ.get("COCKPIT_METRICS_EVENTS", "20000")))
    finally:
        stop.set()
        thread.join(WAIT)
        await engine.stop()
    assert errors == []
    assert len(seen) >= 2
    assert seen == sorted(seen)


# ------------------------------------------------------------------------------ the command


def _read_stderr_until(proc: subprocess.Popen[str], prefix: str) -> list[str]:
    lines: list[str] = []
    done = threading.Event()

    def reader() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if line.startswith(prefix):
                done.set()
                return
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    done.wait(WAIT)
    return lines


def test_cockpit_engine_serves_metrics_on_the_port_it_prints(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with short_dir() as sd:
        sock = sd / "e.sock"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cockpit",
                "engine",
                "--data-dir",
                str(data),
                "--socket",
                str(sock),
                "--metrics",
                "0",
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            lines = _read_stderr_until(proc, "control socket:")
            urls = [ln.split(" ", 1)[1].strip() for ln in lines if ln.startswith("metrics: ")]
            assert len(urls) == 1, lines
            url = urls[0]
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url), url

            async def check() -> None:
                await until_scraped(
                    url,
                    lambda s: s.get("cockpit_engine_running", [({}, 0)])[0][1] == 1,
                    "the engine's first sample",
                )
                killed = await asyncio.to_thread(
                    subprocess.run,
                    [
                        sys.executable,
                        "-m",
                        "cockpit",
                        "kill",
                        "--level",
                        "flatten",
                        "--reason",
                        "metrics",
                        "--socket",
                        str(sock),
                    ],
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    timeout=WAIT,
                )
                assert killed.returncode == 0, killed.stderr
                samples = await until_scraped(
                    url, lambda s: value(s, "cockpit_kill_switch_level") == 3, "the kill"
                )
                assert value(samples, "cockpit_engine_info", mode="paper", source="simulated") == 1

            asyncio.run(check())
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                _, err = proc.communicate(timeout=WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        assert proc.returncode == 0, err


def test_a_taken_port_stops_the_engine_before_it_starts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with socket.socket() as taken, short_dir() as sd:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "cockpit",
                "engine",
                "--data-dir",
                str(data),
                "--socket",
                str(sd / "e.sock"),
                "--metrics",
                str(port),
                "--for",
                "5",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=WAIT * 2,
        )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"--metrics: cannot listen on 127.0.0.1:{port} (Address already in use); pick a free "
        "port (--metrics 0 takes any) or stop what holds it"
    ]
    assert proc.stdout == ""
    assert not (data / "journal.sqlite").exists()  # nothing started, nothing written


@pytest.mark.parametrize(
    ("port", "ok"), [("0", True), ("65535", True), ("65536", False), ("-1", False), ("x", False)]
)
def test_the_metrics_port_is_checked_at_its_bounds(
    port: str, ok: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    if ok:
        assert parser.parse_args(["engine", "--metrics", port]).metrics_port == int(port)
        return
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["engine", "--metrics", port])
    assert exc.value.code == 2
    assert "--metrics" in capsys.readouterr().err


def test_loopback_hosts() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("127.1.2.3")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")
    assert not is_loopback("metrics.example")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@settings(
    max_examples=int(os.environ.get("COCKPIT_METRICS_WATCHER_EXAMPLES", "200")), deadline=None
)
@given(
    st.dictionaries(
        st.sampled_from(["event", "order", "outcome", "verdicts", "x"]), _json, max_size=5
    )
    | st.fixed_dictionaries(
        {"event": st.just("intent"), "outcome": st.just("denied"), "verdicts": _json}
    )
)
def test_the_event_watcher_never_raises(item: dict[str, Any]) -> None:
    """A fan-out watcher that raised would break showing events: whatever it is handed, it
    counts what it understands and nothing else."""
    counts = EventCounts()
    counts(item)
    assert sum(counts.kinds.values()) <= 1


class _Alerts:
    """The alert dispatcher's contract (``engine.alerts.view()``), as the alerts work defines
    it: the metrics read it whether or not the snapshot carries it yet."""

    def view(self) -> dict[str, Any]:
        return {"routes": 2, "sent": 7, "failed": 1, "dropped": 3, "queued": 4, "last": None}


async def test_alert_deliveries_and_drops_are_served(
    data_dir: Path, metrics: MetricsServer
) -> None:
    engine = Engine(fast_config(data_dir), data_dir)
    sampler = metrics.sampler()
    engine.companions.append(sampler)
    await engine.start()
    try:
        sampler.take(engine)
        without = await scrape(metrics.url)
        engine.alerts = _Alerts()  # type: ignore[attr-defined]
        sampler.take(engine)
        with_alerts = await scrape(metrics.url)
    finally:
        await engine.stop()
    for name in ("cockpit_alerts_sent_total", "cockpit_alerts_dropped_total"):
        assert value(without, name) == 0
    assert value(with_alerts, "cockpit_alert_routes") == 2
    assert value(with_alerts, "cockpit_alerts_sent_total") == 7
    assert value(with_alerts, "cockpit_alerts_failed_total") == 1
    assert value(with_alerts, "cockpit_alerts_dropped_total") == 3
    assert value(with_alerts, "cockpit_alerts_queued") == 4


async def test_the_heartbeat_is_served(data_dir: Path, metrics: MetricsServer) -> None:
    from engine.heartbeat import attach_watch
    from tests.test_heartbeat import PingServer, paced, until

    with PingServer() as monitor:
        engine = Engine(paced(data_dir, url=monitor.url, interval_s=0.2), data_dir)
        attach_watch(engine, environ={})
        sampler = metrics.sampler()
        engine.companions.append(sampler)
        await engine.start()
        run = asyncio.create_task(engine.run(duration_s=WAIT * 4))
        try:
            hb = engine.heartbeat
            assert hb is not None
            await until(lambda: hb.view["pings"] >= 2, "two pings")
            sampler.take(engine)
            pings = hb.view["pings"]
            samples = await scrape(metrics.url)
        finally:
            engine.request_stop()
            await asyncio.wait_for(run, WAIT)
            await engine.stop()
    assert value(samples, "cockpit_heartbeat_pings_total", result="ok") == pings
    assert value(samples, "cockpit_heartbeat_pings_total", result="failed") == 0
    assert value(samples, "cockpit_heartbeat_paused") == 0
    assert value(samples, "cockpit_heartbeat_last_ok_timestamp_seconds") > 0


async def test_a_failing_sample_is_counted_and_the_engine_goes_on(
    data_dir: Path, metrics: MetricsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(fast_config(data_dir), data_dir)
    sampler = metrics.sampler()
    engine.companions.append(sampler)
    await engine.start()
    try:
        sampler.take(engine)
        good = await scrape(metrics.url)

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug in a view")

        monkeypatch.setattr(engine, "snapshot", broken)
        await engine.run(max_events=500)  # samples at its start and end, both failing
        monkeypatch.undo()
        bad = await scrape(metrics.url)
        quotes = engine.quotes_processed
    finally:
        await engine.stop()
    assert quotes == 500
    assert value(good, "cockpit_sampler_errors_total") == 0
    assert value(bad, "cockpit_sampler_errors_total") == sampler.errors >= 2
    assert value(bad, "cockpit_quotes_total") == value(good, "cockpit_quotes_total")  # kept
    assert value(bad, "cockpit_engine_running") == 0


async def test_the_embedded_cockpit_serves_metrics_too(
    data_dir: Path, metrics: MetricsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cockpit --metrics PORT`: the engine under the TUI is sampled the same way."""
    from cockpit import app as app_module

    real_run = app_module.CockpitApp.run_async
    seen: list[Scrape] = []

    async def run_headless(self: Any, **kwargs: Any) -> Any:
        async def look_then_quit() -> None:
            try:
                seen.append(
                    await until_scraped(
                        metrics.url,
                        lambda s: s.get("cockpit_engine_running", [({}, 0)])[0][1] == 1,
                        "the embedded engine's sample",
                    )
                )
            finally:
                self.exit(0)

        task = asyncio.create_task(look_then_quit())
        try:
            return await real_run(self, headless=True, size=(120, 40))
        finally:
            await task

    monkeypatch.setattr(app_module.CockpitApp, "run_async", run_headless)
    cfg = fast_config(data_dir, market={"simulated": {"speed": 1.0}})
    code = await app_module.run_embedded(cfg, data_dir, companions=[metrics.sampler()])
    assert code == 0
    assert value(seen[0], "cockpit_engine_info", mode="paper") == 1
    args = build_parser().parse_args(["--metrics", "9464"])
    assert (args.command, args.metrics_port, args.metrics_host) == (None, 9464, "127.0.0.1")
    assert value(seen[0], "cockpit_kill_switch_level") == 0
