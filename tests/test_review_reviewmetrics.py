"""Adversarial review (review-metrics) of what the operator watches from outside the cockpit:
the metrics endpoint, the heartbeat's state in the snapshot, `cockpit status` and the metric
names docs/operations.md and docs/grafana-dashboard.json use. Each test is a hole found by
attacking the real engine; it failed before its fix. Loopback only, ports chosen by the OS.

Attacks that held (tried by hand or by the suites named; no test added here):
- A real `cockpit engine --metrics 0` scraped: every cockpit_* name served is in
  docs/operations.md's table (counters with _total) and every name docs/grafana-dashboard.json
  queries is served (also pinned by tests/test_review_readme.py and tests/test_metrics.py).
- `--metrics` 65536, -1, a word, `127.0.0.1:9464`: one argparse line, exit 2; a port in use:
  one line, exit 2, nothing started (`cockpit engine` and the bare `cockpit` without a
  terminal alike); `--metrics-host ::1` serves on the IPv6 loopback; the default binds
  127.0.0.1 only (getaddrinfo of the literal).
- A scrape flood (8 threads scraping without pause, ~230 scrapes/s) and a flood of connections
  that never send or read (8 threads, thousands of sockets): the engine's own lag histogram
  and cockpit_event_loop_lag_max_seconds stayed under 4 ms during both (measured from the
  sampler, not the wall clock); the server refused the excess.
- A restart with a flatten kill latched: the first sample served reads
  cockpit_kill_switch_level 3 and HALTED; cockpit_engine_running is 0 until it is taken.
- A kill, a release, a breaker trip and a pause reach the next sample (about a second) from
  the engine's own state; a journal failure shows as journal_ok 0 and BLOCKED in the same
  sample (tests/test_metrics.py, tests/test_journal_failure.py).
- Secrets: the heartbeat's url_env value and the alert URLs appear in no scrape, status or
  STATUS= line (host only; tests/test_review_cmd.py, tests/test_review_reviewdocs.py).
- Label values from config and venues (quotes, backslashes, newlines) are escaped by
  prometheus-client (tests/test_review_wa.py); no family has two rows with one label set.
- `stop_on_kill = true` with `on_unhealthy = "fail"`: a kill stops the pings and sends one
  /fail; a release brings the pings back after a whole healthy interval, state "ok".
- A kill reason with an escape sequence, a newline and an OSC title: `cockpit status` prints
  it flattened (a pause reason with them is refused), no line can be forged.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
import time
import types
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cockpit.cli import main as cli_main
from cockpit.oneshot import format_status
from cockpit.socket_client import SocketClient
from engine.control import ControlServer
from engine.heartbeat import attach_watch
from engine.runtime import Engine
from engine.telemetry import STALE_AFTER_S, MetricsServer
from tests.conftest import fast_config
from tests.test_control_support import short_dir
from tests.test_heartbeat import NotifySocket, PingServer, paced, running, until, view
from tests.test_journal_failure import break_journal
from tests.test_metrics import fetch, parse, scrape, value

# A heartbeat interval far beyond every wait here: what is shown must not wait for the next
# beat to be due (a healthchecks.io check is often pinged once a minute).
LONG_INTERVAL_S = 600.0


async def _shown_paused(engine: Engine, metrics: MetricsServer, why: str) -> None:
    """The heartbeat reads paused (why) in the snapshot, `cockpit status` and the metrics."""
    await until(lambda: bool(view(engine)["paused"]), "the heartbeat shown paused")
    assert view(engine)["paused"].startswith(why), view(engine)
    assert view(engine)["state"] == "paused"
    snap = await engine.durable_snapshot(trace=0, curve=0)
    status = format_status(snap)
    assert f"heartbeat   PAUSED: {why}" in status, status
    await until(
        lambda: (
            metrics.collector.sample is not None
            and any(
                f.name == "cockpit_heartbeat_paused" and f.rows and f.rows[0][1] == 1
                for f in metrics.collector.sample.families
            )
        ),
        "the next sample",
    )
    assert value(await scrape(metrics.url), "cockpit_heartbeat_paused") == 1


async def test_a_blocked_journal_shows_the_heartbeat_paused_before_the_next_beat_is_due(
    data_dir: Path,
) -> None:
    """The pings stop when the journal cannot write; the heartbeat's state said "ok" (and
    cockpit_heartbeat_paused 0, `cockpit status` "ok to HOST") until the next beat was due, a
    whole interval later, while trading was BLOCKED and no ping would go out."""
    metrics = MetricsServer("127.0.0.1", 0)
    metrics.start()
    try:
        with PingServer() as monitor:
            cfg = paced(data_dir, url=monitor.url, interval_s=LONG_INTERVAL_S, timeout_s=5)
            engine = Engine(cfg, data_dir)
            attach_watch(engine, environ={})
            engine.companions.append(metrics.sampler(every_s=0.2))
            async with running(engine):
                await until(lambda: view(engine)["pings"] >= 1, "the first ping")
                assert view(engine)["state"] == "ok"
                break_journal(engine.journal)
                await engine.command("pause", {"strategy": "ema_cross", "reason": "x"})
                await until(lambda: bool(engine.blocked_reason), "the engine blocked")
                await _shown_paused(engine, metrics, "trading blocked: journal")
                assert monitor.count() == 1
    finally:
        await metrics.close()


async def test_a_kill_with_stop_on_kill_shows_the_heartbeat_paused_at_once(data_dir: Path) -> None:
    """`stop_on_kill = true`: the kill switch stops the pings; the state must say so as soon as
    the engine knows the next beat is withheld, not a whole interval later."""
    metrics = MetricsServer("127.0.0.1", 0)
    metrics.start()
    try:
        with PingServer() as monitor:
            cfg = paced(
                data_dir,
                url=monitor.url,
                interval_s=LONG_INTERVAL_S,
                timeout_s=5,
                stop_on_kill=True,
            )
            engine = Engine(cfg, data_dir)
            attach_watch(engine, environ={})
            engine.companions.append(metrics.sampler(every_s=0.2))
            async with running(engine):
                await until(lambda: view(engine)["pings"] >= 1, "the first ping")
                reply = await engine.command("kill", {"level": "halt", "reason": "review"})
                assert reply["ok"], reply
                await _shown_paused(engine, metrics, "kill switch engaged (halt)")
                assert monitor.count() == 1
    finally:
        await metrics.close()


async def test_events_by_kind_leave_marks_out_whether_or_not_a_client_is_attached(
    data_dir: Path,
) -> None:
    """docs/operations.md: cockpit_events_total counts events shown, "marks excluded". With a
    client attached (the control socket's stream subscribes to every event) the periodic marks
    were counted too, so the series came and went with `cockpit attach` and `cockpit status`,
    and every fan-out watcher (the audit log, the alert dispatcher) was handed marks it was
    promised never to see."""
    metrics = MetricsServer("127.0.0.1", 0)
    metrics.start()
    try:
        engine = Engine(fast_config(data_dir), data_dir)
        sampler = metrics.sampler()
        engine.companions.append(sampler)
        watched: list[str] = []
        engine.fanout.watchers.append(lambda item: watched.append(item["event"]))
        await engine.start()
        stream = engine.subscribe_dicts()  # a client attached, as the control socket does
        try:
            await engine.run(max_events=3_000)
            await engine.committed()
            sampler.take(engine, running=False)
            samples = await scrape(metrics.url)
            streamed = [stream.get_nowait()["event"] for _ in range(stream.qsize())]
        finally:
            engine.unsubscribe(stream)
            await engine.stop()
    finally:
        await metrics.close()
    assert "marks" in streamed  # the attached client still gets them
    assert "marks" not in watched
    kinds = {labels["kind"] for labels, _ in samples["cockpit_events_total"]}
    assert kinds and "marks" not in kinds, kinds


async def test_a_status_taken_as_the_journal_fails_says_blocked(data_dir: Path) -> None:
    """`cockpit status` (and `--json`) is handed once what it shows is committed. A snapshot
    built while rows were still on their way to the disk, whose commit then failed, went out
    as it was built: "trading ACTIVE", `blocked` null, although the engine had just blocked
    and would send nothing (a cron `cockpit status --json | jq .trading_state.state` read
    ACTIVE). The in-process client's durable snapshot said blocked, yet ACTIVE as its state."""
    engine = Engine(fast_config(data_dir), data_dir)
    await engine.start()
    try:
        with short_dir() as sd:
            server = ControlServer(engine, sd / "e.sock")
            built = server._build_snapshot

            def build_then_the_disk_fails() -> Any:
                out = built()
                journal = engine.journal
                if out is not None and journal is not None and journal.failed is None:
                    # A row of the running engine on its way to the disk, whose commit fails.
                    journal.append("note", 1, {"between": "build and commit"})
                    break_journal(journal)
                return out

            server._build_snapshot = build_then_the_disk_fails  # type: ignore[method-assign]
            await server.start()
            try:
                client = await SocketClient.open(server.path, role="viewer", subscribe=False)
                try:
                    snap = await client.snapshot(trace=0, curve=0)
                finally:
                    await client.close()
            finally:
                await server.close()
        assert engine.blocked_reason
        assert snap["blocked"] == engine.blocked_reason, snap["blocked"]
        assert snap["trading_state"]["state"] == "BLOCKED", snap["trading_state"]
        trading = format_status(snap).splitlines()[1]
        assert trading.startswith("trading     BLOCKED (system: journal write failed"), trading
        # The in-process client (the embedded cockpit) the same way.
        durable = await engine.durable_snapshot(trace=0, curve=0)
        assert durable["trading_state"]["state"] == "BLOCKED"
    finally:
        await engine.stop()


async def test_a_durable_snapshot_whose_rows_fail_says_blocked_as_its_state(data_dir: Path) -> None:
    engine = Engine(fast_config(data_dir), data_dir)
    await engine.start()
    try:
        journal = engine.journal
        assert journal is not None
        journal.append("note", 1, {"on its way": "to the disk"})
        break_journal(journal)
        snap = await engine.durable_snapshot(trace=0, curve=0)
    finally:
        await engine.stop()
    assert snap["blocked"] and snap["trading_state"]["state"] == "BLOCKED", snap["trading_state"]
    assert snap["trading_state"]["reason"] == snap["blocked"]


async def test_systemd_notify_without_a_watchdog_is_never_served_as_a_beating_heartbeat(
    data_dir: Path,
) -> None:
    """`Type=notify` without `WatchdogSec=`, no [heartbeat]: nothing beats at all, yet
    cockpit_heartbeat_paused read 0 ("beating" on the dashboard's Heartbeat panel), also
    while the journal had failed and trading was BLOCKED. Served only where something beats."""
    metrics = MetricsServer("127.0.0.1", 0)
    metrics.start()
    try:
        with short_dir() as sd:
            systemd = NotifySocket(str(sd / "notify"))
            engine = Engine(paced(data_dir), data_dir)
            attach_watch(engine, environ={"NOTIFY_SOCKET": str(sd / "notify")})
            sampler = metrics.sampler(every_s=0.2)
            engine.companions.append(sampler)
            async with running(engine):
                await until(lambda: "READY=1" in systemd.fields(), "READY=1")
                assert view(engine)["systemd"] == "notify"
                break_journal(engine.journal)
                await engine.command("pause", {"strategy": "ema_cross", "reason": "x"})
                await until(lambda: bool(engine.blocked_reason), "the engine blocked")
                sampler.take(engine)
                samples = await scrape(metrics.url)
            systemd.sock.close()
    finally:
        await metrics.close()
    assert value(samples, "cockpit_journal_ok") == 0
    assert "cockpit_heartbeat_paused" not in samples, samples.get("cockpit_heartbeat_paused")


async def test_a_disk_that_stops_answering_is_not_served_as_a_journal_that_writes(
    data_dir: Path,
) -> None:
    """A commit waiting for the disk beyond max_lag_s: nothing is recorded, no order goes out
    and the heartbeat stops vouching ("journal commit waiting ..."), yet cockpit_journal_ok
    (the dashboard's Journal panel: "writing", the docs' `cockpit_journal_ok == 0` alert) said
    1 for as long as the disk stayed silent. It reads 0 then, and 1 again once it answers."""
    metrics = MetricsServer("127.0.0.1", 0)
    metrics.start()
    disk = asyncio.Event()
    try:
        with PingServer() as monitor:
            cfg = paced(data_dir, url=monitor.url, interval_s=0.2, timeout_s=0.2, max_lag_s=0.2)
            engine = Engine(cfg, data_dir)
            attach_watch(engine, environ={})
            engine.companions.append(metrics.sampler(every_s=0.1))
            async with running(engine):
                journal = engine.journal
                assert journal is not None
                await until(lambda: _served(metrics, "cockpit_journal_ok") == 1, "a sample")
                real_commit = journal._conn.commit

                async def silent_disk() -> None:
                    await asyncio.wait_for(disk.wait(), 120)  # beyond every wait here
                    await real_commit()

                journal._conn.commit = silent_disk  # type: ignore[method-assign]
                # A write; its reply waits for the disk.
                write = asyncio.create_task(
                    engine.command("pause", {"strategy": "ema_cross", "reason": "a write"})
                )
                await until(lambda: bool(view(engine)["paused"]), "the heartbeat paused")
                assert view(engine)["paused"].startswith("journal commit waiting")
                try:
                    await until(lambda: _served(metrics, "cockpit_journal_ok") == 0, "journal_ok 0")
                finally:
                    disk.set()
                journal._conn.commit = real_commit  # type: ignore[method-assign]
                await until(lambda: _served(metrics, "cockpit_journal_ok") == 1, "journal_ok 1")
                assert (await write)["ok"]
                assert not engine.blocked_reason
    finally:
        disk.set()
        await metrics.close()


def _served(metrics: MetricsServer, name: str) -> float | None:
    """The value of an unlabelled family in the newest published sample."""
    sample = metrics.collector.sample
    if sample is None:
        return None
    for fam in sample.families:
        if fam.name == name and fam.rows:
            return float(fam.rows[0][1])
    return None


async def test_a_stall_stays_in_the_worst_lag_for_a_whole_minute_of_samples(
    data_dir: Path,
) -> None:
    """cockpit_event_loop_lag_max_seconds was the worst lag since the previous sample, which
    the next sample (a second later) replaced: Prometheus scraping every 5 s (the docs'
    scrape_interval) missed four stalls in five, and the dashboard's "worst per second" line
    read flat through them. It holds the worst of the last 60 s of samples now."""
    metrics = MetricsServer("127.0.0.1", 0)
    metrics.start()
    try:
        engine = Engine(paced(data_dir), data_dir)
        sampler = metrics.sampler(every_s=0.05)
        engine.companions.append(sampler)
        async with running(engine):
            await until(lambda: sampler.samples >= 2, "the first samples")
            time.sleep(0.6)  # the event loop is stuck here
            after = sampler.samples
            await until(lambda: sampler.samples >= after + 10, "ten samples after the stall")
            worst = _served(metrics, "cockpit_event_loop_lag_max_seconds")
    finally:
        await metrics.close()
    assert worst is not None and worst >= 0.5, worst


async def test_status_while_the_disk_is_silent_says_so_rather_than_engine_gone(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A commit waiting for the disk: `cockpit status` waits for what it shows to be recorded,
    and said only "engine not reachable: no snapshot within 5 s", as if the engine were gone
    (an operator then looks for a dead process, not a dead disk). The engine answers and says
    why it cannot show a state yet; the exit stays 3 (no answer in time)."""
    engine = Engine(fast_config(data_dir), data_dir)
    await engine.start()
    disk = asyncio.Event()
    try:
        with short_dir() as sd:
            server = ControlServer(engine, sd / "e.sock")
            await server.start()
            try:
                journal = engine.journal
                assert journal is not None
                real_commit = journal._conn.commit

                async def silent_disk() -> None:
                    await asyncio.wait_for(disk.wait(), 120)  # beyond every wait here
                    await real_commit()

                journal._conn.commit = silent_disk  # type: ignore[method-assign]
                write = asyncio.create_task(
                    engine.command("pause", {"strategy": "ema_cross", "reason": "a write"})
                )
                await until(lambda: journal.commit_age_s() > 0, "a commit waiting")
                argv = ["status", "--socket", str(server.path), "--timeout", "3"]
                code = await asyncio.to_thread(cli_main, argv)
                disk.set()
                journal._conn.commit = real_commit  # type: ignore[method-assign]
                assert (await write)["ok"]
            finally:
                disk.set()
                await server.close()
    finally:
        await engine.stop()
    err = capsys.readouterr().err.strip()
    assert code == 3, err
    assert err.startswith("cockpit status: engine not reachable: no snapshot within 3 s"), err
    assert "the journal has waited" in err and "for the disk" in err, err
    assert len(err.splitlines()) == 1, err


async def test_a_summary_line_taken_as_the_journal_fails_says_blocked(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The headless summary line is taken, then printed once what it counts is committed. When
    that commit failed, the line printed `"trading_state":"ACTIVE"` beside `"blocked":"journal
    write failed ..."` (a log alert on trading_state never fired)."""
    from cockpit.cli import _run_headless

    real_summary = Engine.summary
    engines: list[Engine] = []

    def summary_then_the_disk_fails(self: Engine) -> dict[str, Any]:
        out = real_summary(self)
        journal = self.journal
        if not engines and journal is not None and journal.failed is None:
            engines.append(self)
            journal.append("note", 1, {"between": "summary and commit"})
            break_journal(journal)
        return out

    monkeypatch.setattr(Engine, "summary", summary_then_the_disk_fails)
    cfg = fast_config(data_dir, engine={"summary_interval_s": 0.1})
    lines = io.StringIO()
    with short_dir() as sd:
        run = asyncio.create_task(
            _run_headless(cfg, data_dir, 60.0, str(sd / "e.sock"), lines=lines)
        )
        try:
            await until(lambda: '"event":"summary"' in lines.getvalue() or run.done(), "a summary")
        finally:
            for e in engines:
                e.request_stop()
            code = await asyncio.wait_for(run, 30)
    assert code == 1
    out = [json.loads(x) for x in lines.getvalue().splitlines()]
    summaries = [x for x in out if x["event"] == "summary"]
    assert summaries and all(x["blocked"] for x in summaries), summaries
    assert [x["trading_state"] for x in summaries] == ["BLOCKED"] * len(summaries), summaries


async def test_a_stuck_loop_is_not_served_as_a_running_engine_or_a_beating_heartbeat(
    data_dir: Path,
) -> None:
    """While the event loop is stuck the endpoint answers from the last sample, whose age grows
    (docs/operations.md). It also kept saying cockpit_engine_running 1 and
    cockpit_heartbeat_paused 0 ("running" and "beating", green, on the dashboard) for as long
    as the loop stayed stuck: nothing traded, no kill through the socket was heard, and no ping
    could leave (they go from the loop). A sample older than 5 s is served as an engine not
    running and a heartbeat held back; the other values stay, their age tells how old."""
    metrics = MetricsServer("127.0.0.1", 0)
    metrics.start()
    try:
        with PingServer() as monitor:
            engine = Engine(paced(data_dir, url=monitor.url, interval_s=0.2), data_dir)
            attach_watch(engine, environ={})
            sampler = metrics.sampler(every_s=0.1)
            engine.companions.append(sampler)
            async with running(engine):
                await until(lambda: view(engine)["pings"] >= 1, "a ping")
                taken = sampler.samples
                await until(lambda: sampler.samples > taken + 1, "samples after the ping")
                seen: list[tuple[float, float, float]] = []
                stop = threading.Event()

                def scrape_while_stuck() -> None:
                    while not stop.is_set():
                        s = parse(fetch(metrics.url))[0]
                        age = value(s, "cockpit_sample_age_seconds")
                        running_now = value(s, "cockpit_engine_running")
                        seen.append((age, running_now, value(s, "cockpit_heartbeat_paused")))
                        if age > STALE_AFTER_S + 0.5:
                            return
                        stop.wait(0.2)

                scraper = threading.Thread(target=scrape_while_stuck)
                scraper.start()
                try:
                    time.sleep(STALE_AFTER_S + 1.5)  # the event loop is stuck here
                finally:
                    stop.set()
                    scraper.join(30)
                taken = sampler.samples
                await until(lambda: sampler.samples > taken + 1, "samples after the stall")
                after = parse(await asyncio.to_thread(fetch, metrics.url))[0]
    finally:
        await metrics.close()
    assert any(age > STALE_AFTER_S for age, _, _ in seen), seen
    for age, running_value, paused in seen:
        stale = age > STALE_AFTER_S
        assert (running_value, paused) == ((0, 1) if stale else (1, 0)), seen
    assert value(after, "cockpit_engine_running") == 1  # the loop answers again


@settings(max_examples=int(os.environ.get("COCKPIT_REVIEW_HB_EXAMPLES", "150")), deadline=None)
@given(
    unhealthy=st.lists(st.booleans(), min_size=1, max_size=80),
    interval_s=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_the_heartbeat_reads_paused_when_unhealthy_and_pings_after_a_healthy_interval(
    unhealthy: list[bool], interval_s: float
) -> None:
    """On a made-up clock and loop, the kill switch (stop_on_kill) on and off at random ticks:
    after every tick the engine was unhealthy at, the heartbeat reads paused; a ping leaves only
    a whole interval after the last unhealthy tick; and once healthy for two intervals, it
    pings again."""
    import engine.heartbeat as hb
    from engine.config import HeartbeatConfig
    from engine.heartbeat import Heartbeat, HeartbeatStatus

    now = [0.0]
    safety = types.SimpleNamespace(trading_state="ACTIVE", kill=types.SimpleNamespace(level=None))
    journal = types.SimpleNamespace(commit_age_s=lambda: 0.0)
    engine_stub: Any = types.SimpleNamespace(
        blocked_reason="", journal=journal, core=types.SimpleNamespace(safety=safety)
    )
    cfg = HeartbeatConfig(url="http://127.0.0.1:9/ping", interval_s=interval_s, stop_on_kill=True)
    beat = Heartbeat(cfg, HeartbeatStatus("127.0.0.1:9"), cfg.url or "")
    shown: list[tuple[bool, str]] = []  # (unhealthy at the tick, paused once it was handled)
    ticks: list[tuple[float, bool]] = []
    pings: list[float] = []

    async def fake_ticks(tick_s: float) -> Any:
        for bad in unhealthy:
            await asyncio.sleep(0)
            if ticks:
                shown.append((ticks[-1][1], beat.shown.view["paused"]))
            now[0] += tick_s
            safety.kill.level = "halt" if bad else None
            ticks.append((now[0], bad))
            yield 0.0
        shown.append((ticks[-1][1], beat.shown.view["paused"]))

    async def ping(_http: Any, url: str) -> None:
        pings.append(now[0])
        beat.shown.ok()

    with (
        mock.patch.object(hb, "loop_ticks", fake_ticks),
        mock.patch.object(hb, "time", types.SimpleNamespace(monotonic=lambda: now[0])),
        mock.patch.object(beat, "_ping", ping),
    ):
        asyncio.run(beat.run(engine_stub))
    for bad, paused in shown:
        assert paused if bad else True, shown
    bad_times = [t for t, bad in ticks if bad]
    for t in pings:
        assert all(t - u >= interval_s - 1e-9 for u in bad_times if u <= t), (pings, ticks)
    tick = min(0.25, interval_s / 4)
    last_bad = bad_times[-1] if bad_times else 0.0
    if ticks[-1][0] - last_bad >= 2 * interval_s + 2 * tick:
        assert any(t > last_bad for t in pings), (pings, ticks)
