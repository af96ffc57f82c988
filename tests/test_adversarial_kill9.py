"""kill -9 of a fast-trading engine at random moments, then restart; repeated.

A real `cockpit engine` process (every strategy in auto, the simulated market as fast as it
goes, throttles and breakers out of the way) is killed with SIGKILL after a random delay and
started again on the same data directory. After every kill and every restart:

- the journal's hash chain verifies (`cockpit verify` at the end);
- every fill and order update the engine printed before it died is in the journal, exactly;
- no client order id was submitted twice, and every order has a durable intent before it;
- no order is filled beyond its quantity;
- in some rounds a kill switch (entries, halt or flatten) is engaged first: after the restart
  it is still engaged, and the engine's cash and positions (its final summary after a clean
  stop) equal a replay of the journal's fills, then a person releases it.

COCKPIT_KILL9_ROUNDS=N runs more rounds (20 by default), COCKPIT_KILL9_SEED picks the delays.
The rounds are split into PARTS parts, each on a data directory of its own, so that the two
CI workers share them; the delays are drawn once for all rounds, in order, from the one seed,
so each round gets the delays it would get in one long run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cockpit.socket_client import SocketClient
from engine.control import pid_path
from engine.journal import JournalRow, read_rows, verify_journal
from engine.runtime import JOURNAL_FILE
from tests.test_cli import run

REPO = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("COCKPIT_KILL9_ROUNDS", "20"))
SEED = int(os.environ.get("COCKPIT_KILL9_SEED", "11"))
WAIT_S = 30.0
KILL_EVERY = 4  # every 4th round engages a kill switch before the kill -9
PARTS = 2  # the rounds are run as this many tests (xdist spreads them over its workers)
STARTING_CASH = 100_000.0


def fast_toml(tmp_path: Path) -> Path:
    """The shipped default, but every strategy in auto, as fast as possible, with the throttles,
    breakers and loss limits out of the way: about a hundred fills a second."""
    text = (REPO / "config" / "default.toml").read_text()
    for old, new in (
        ('speed = "realtime"', 'speed = "max"'),
        ('start = "now"', 'start = "2024-03-01T00:00:00Z"'),
        ('approval = "approve"', 'approval = "auto"'),
        (
            "strategy_throttle = { max_orders = 10, per_seconds = 60 }",
            "strategy_throttle = { max_orders = 1000, per_seconds = 1 }",
        ),
        (
            "global_throttle = { max_orders = 30, per_seconds = 60 }",
            "global_throttle = { max_orders = 1000, per_seconds = 1 }",
        ),
        ("consecutive_losses = 12 ", "consecutive_losses = 100000 "),
        ("global_consecutive_losses = 20 ", "global_consecutive_losses = 100000 "),
        ("baseline_signals_per_hour = 600", "baseline_signals_per_hour = 1000000"),
        ("max_unreviewed_fills = 50", "max_unreviewed_fills = 100000000"),
        ("summary_interval_s = 5", "summary_interval_s = 1"),
        ("daily_loss_limit_pct = 5.0", "daily_loss_limit_pct = 90.0"),
        ("drawdown_limit_pct = 15.0", "drawdown_limit_pct = 95.0"),
        ("starting_cash = 100000.0", f"starting_cash = {STARTING_CASH}"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "fast.toml"
    path.write_text(text)
    return path


class Runner:
    """Starts, kills and talks to engines on one data directory; remembers what they printed."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.config = fast_toml(tmp_path)
        self.data_dir = tmp_path / "data"
        self.socket = tmp_path / "s.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.out: Path | None = None
        self.starts = 0

    @property
    def journal(self) -> Path:
        return self.data_dir / JOURNAL_FILE

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(*args, timeout=WAIT_S)

    def start(self) -> int:
        """Start an engine; return once its session is durable (the session number)."""
        assert self.proc is None
        self.starts += 1
        self.out = self.tmp / f"run{self.starts}.jsonl"
        err = (self.tmp / f"run{self.starts}.err").open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cockpit",
                "engine",
                "--config",
                str(self.config),
                "--data-dir",
                str(self.data_dir),
                "--socket",
                str(self.socket),
            ],
            cwd=REPO,
            stdout=self.out.open("wb"),
            stderr=err,
        )
        session = self.starts
        self.wait(f"session {session} to start", lambda: self.session_started(session))
        self.wait("the control socket", self.listening)
        return session

    def listening(self) -> bool:
        assert self.proc is not None
        try:
            return pid_path(self.socket).read_text().strip() == str(self.proc.pid)
        except OSError:
            return False

    def wait(self, what: str, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT_S
        while not done():
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the engine exited ({self.proc.returncode}) before {what}")
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    def rows(self, kinds: set[str] | None = None) -> list[JournalRow]:
        try:
            return list(read_rows(self.journal, kinds))
        except FileNotFoundError:
            return []
        except Exception:  # the schema may not exist for a moment while the engine creates it
            return []

    def session_started(self, session: int) -> bool:
        return any(
            r.payload.get("state") == "started" and r.payload.get("session") == session
            for r in self.rows({"session"})
        )

    def printed(self) -> list[dict[str, Any]]:
        """The JSON lines the current run printed; a line the kill cut short is ignored."""
        assert self.out is not None
        raw = self.out.read_text()
        lines = raw.split("\n")
        assert lines[-1] == "" or not raw.endswith("\n")
        return [json.loads(line) for line in lines[:-1]]  # the last is "" or cut short

    def command(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """An operator command through the control socket (what `cockpit kill` etc. send)."""

        async def go() -> dict[str, Any]:
            client = SocketClient(
                self.socket,
                role="operator",
                name="kill9 test",
                reconnect=False,
                subscribe=False,
                connect_timeout=10.0,
                command_timeout=WAIT_S,
                ping_interval=3600.0,
            )
            await client.connect()
            try:
                return await client.command(name, args)
            finally:
                await client.close()

        return asyncio.run(go())

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=WAIT_S)
        self.proc = None

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=WAIT_S)
        self.proc = None
        return code

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT_S)


@pytest.fixture
def runner(tmp_path: Path) -> Any:
    r = Runner(tmp_path)
    yield r
    r.close()


# --------------------------------------------------------------------------- checks


def check_journal(runner: Runner, printed: list[dict[str, Any]], label: str) -> dict[str, int]:
    """What must hold of the journal after any crash; returns a few counts."""
    report = verify_journal(runner.journal)
    assert report.ok, f"{label}: the journal does not verify: {report.problem}"
    rows = runner.rows()
    intent_seq: dict[str, int] = {}
    intent_qty: dict[str, float] = {}
    submitted: Counter[str] = Counter()
    first_order_seq: dict[str, int] = {}
    fills: Counter[tuple[str, float, float, float]] = Counter()
    filled: defaultdict[str, float] = defaultdict(float)
    fill_ids: Counter[str] = Counter()
    acknowledged: Counter[str] = Counter()
    orders_seen: set[tuple[str, str, float]] = set()
    for r in rows:
        p = r.payload
        if r.kind == "intent" and p.get("outcome") == "submitted":
            i = p["intent"]
            submitted[i["intent_id"]] += 1
            intent_seq.setdefault(i["intent_id"], r.seq)
            intent_qty[i["intent_id"]] = float(i["qty"])
        elif r.kind == "order":
            o = p["order"]
            first_order_seq.setdefault(o["client_order_id"], r.seq)
            orders_seen.add((o["client_order_id"], o["status"], float(o["filled_qty"])))
            if o["status"] == "new":  # the venue's acknowledgement: one per send
                acknowledged[o["client_order_id"]] += 1
            assert o["filled_qty"] <= o["qty"] * (1 + 1e-9), f"{label}: overfilled order {o}"
        elif r.kind == "fill":
            f = p["fill"]
            fill_ids[f["fill_id"]] += 1
            fills[(f["client_order_id"], f["qty"], f["price"], round(f["fee"], 8))] += 1
            filled[f["client_order_id"]] += float(f["qty"])
    twice = [cid for cid, n in submitted.items() if n > 1]
    assert not twice, f"{label}: client order ids submitted twice: {twice[:5]}"
    resent = [cid for cid, n in acknowledged.items() if n > 1]
    assert not resent, f"{label}: orders sent to the venue twice: {resent[:5]}"
    assert not [f for f, n in fill_ids.items() if n > 1], f"{label}: a fill journaled twice"
    for cid, seq in first_order_seq.items():
        assert cid in intent_seq, f"{label}: order {cid} has no durable intent"
        assert intent_seq[cid] < seq, f"{label}: order {cid} journaled before its intent"
    for cid, qty in filled.items():
        assert cid in intent_qty, f"{label}: fill for {cid}, which has no durable intent"
        assert qty <= intent_qty[cid] * (1 + 1e-9), f"{label}: {cid} filled {qty} > ordered"
    # Everything printed before the kill was committed: fills exactly, order updates too.
    lost = []
    shown_fills = 0
    for line in printed:
        if line.get("event") == "fill":
            shown_fills += 1
            if (line["order"], line["qty"], line["price"], line["fee"]) not in fills:
                lost.append(line)
        elif (
            line.get("event") == "order"
            and (line["id"], line["status"], line["filled"]) not in orders_seen
        ):
            lost.append(line)
    assert not lost, f"{label}: {len(lost)} printed events are not in the journal: {lost[:3]}"
    # A summary line counts this session's fills: each of them was journaled before it printed.
    started = max(
        (r.seq for r in rows if r.kind == "session" and r.payload.get("state") == "started"),
        default=0,
    )
    session_fills = sum(1 for r in rows if r.kind == "fill" and r.seq > started)
    for line in printed:
        if line.get("event") == "summary":
            assert line["fills"] <= session_fills, f"{label}: summary ahead of the journal"
    return {"fills": sum(fills.values()), "shown_fills": shown_fills, "rows": len(rows)}


def replay_fills(runner: Runner) -> tuple[float, dict[str, float]]:
    """Cash and positions from the journal's fills alone, the simplest way."""
    cash = STARTING_CASH
    positions: dict[str, float] = defaultdict(float)
    for r in runner.rows({"fill"}):
        f = r.payload["fill"]
        sign = 1.0 if f["side"] == "buy" else -1.0
        cash -= sign * f["qty"] * f["price"] + f["fee"]
        positions[f["symbol"]] += sign * f["qty"]
    return cash, positions


def last_summary(printed: list[dict[str, Any]]) -> dict[str, Any]:
    summaries = [line for line in printed if line.get("event") == "summary"]
    assert summaries and summaries[-1].get("final"), "no final summary after a clean stop"
    return summaries[-1]


def kill_level(runner: Runner, session: int) -> str | None:
    """The kill level of the newest safety_state row journaled by ``session``."""
    started = [
        r.seq
        for r in runner.rows({"session"})
        if r.payload.get("state") == "started" and r.payload.get("session") == session
    ]
    states = [r for r in runner.rows({"safety_state"}) if r.seq > started[0]]
    assert states, f"session {session} journaled no safety state"
    return states[-1].payload["state"]["kill"]["level"]


# --------------------------------------------------------------------------- the rounds


def is_kill_round(rnd: int) -> bool:
    return rnd % KILL_EVERY == KILL_EVERY - 1


def delays(seed: int, rounds: int) -> list[tuple[float, ...]]:
    """Each round's random delays, drawn from one generator in round order: a kill round's
    (before the kill command, before the kill -9, before the clean stop), another round's
    (before the kill -9)."""
    rng = random.Random(seed)
    return [
        (rng.uniform(0.05, 0.6), rng.uniform(0.0, 0.3), rng.uniform(0.0, 0.3))
        if is_kill_round(rnd)
        else (rng.uniform(0.05, 1.0),)
        for rnd in range(rounds)
    ]


def test_the_parts_run_every_round_once() -> None:
    parts = [part_rounds(p) for p in range(PARTS)]
    assert [rnd for part in parts for rnd in part] == list(range(ROUNDS))
    assert len(delays(SEED, ROUNDS)) == ROUNDS


def part_rounds(part: int) -> range:
    return range(part * ROUNDS // PARTS, (part + 1) * ROUNDS // PARTS)


@pytest.mark.parametrize("part", range(PARTS))
def test_kill9_at_random_moments_loses_nothing_shown(runner: Runner, part: int) -> None:
    schedule = delays(SEED, ROUNDS)
    rounds = part_rounds(part)
    levels = ["halt", "entries", "flatten"]
    totals: Counter[str] = Counter()
    release_due = False  # each part starts on a fresh data directory: nothing latched
    for rnd in rounds:
        label = f"round {rnd + 1} (seed {SEED})"
        runner.start()
        if release_due:  # a person releases the switch the last round latched
            reply = runner.command(
                "release",
                {"reason": "kill9 test", "confirm": "RELEASE", "override": True},
            )
            assert reply["ok"], f"{label}: {reply}"
            release_due = False
        if is_kill_round(rnd):
            level = levels[(rnd // KILL_EVERY) % len(levels)]
            before_kill, before_kill9, before_stop = schedule[rnd]
            time.sleep(before_kill)
            reply = runner.command("kill", {"level": level, "reason": "kill9 test"})
            assert reply["ok"], f"{label}: {reply}"
            # The reply came once the state was durable: the kill -9 may come at once.
            time.sleep(before_kill9)
            runner.kill9()
            check_journal(runner, runner.printed(), label)
            # After the restart the switch is still engaged, at the same level ...
            session = runner.start()
            assert kill_level(runner, session) == level, f"{label}: kill {level} not latched"
            time.sleep(before_stop)
            assert runner.stop() == 0
            printed = runner.printed()
            check_journal(runner, printed, label)
            summary = last_summary(printed)
            assert summary["kill_switch"] == level, f"{label}: {summary}"
            # ... and cash and positions are what the journal's fills add up to.
            cash, positions = replay_fills(runner)
            assert summary["cash"] == pytest.approx(cash, abs=0.011), f"{label}: cash"
            held = {s: q for s, q in positions.items() if round(q, 8)}
            assert summary["positions"] == pytest.approx(held, abs=1e-8), f"{label}: positions"
            totals["kills latched"] += 1
            release_due = True
        else:
            time.sleep(schedule[rnd][0])
            runner.kill9()
        counts = check_journal(runner, runner.printed(), label)
        totals["rounds"] += 1
        totals["shown fills"] += counts["shown_fills"]
        totals["journal fills"] = counts["fills"]
    # The last restart, a clean stop, and the CLI's own verdict on the chain.
    runner.start()
    assert runner.stop() == 0
    check_journal(runner, runner.printed(), "final")
    verify = runner.cli("verify", "--data-dir", str(runner.data_dir))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert totals["shown fills"] >= len(rounds), f"too little trading to test anything: {totals}"
    print(f"kill -9 rounds {rounds.start + 1}-{rounds.stop}: {dict(totals)}")
