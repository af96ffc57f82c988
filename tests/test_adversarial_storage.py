"""Storage faults: the disk fills up or reports I/O errors while the engine trades.

Whatever the fault and whenever it comes, the engine must fail closed: nothing reaches the broker
after the journal fails, no order reaches it without its intent committed on disk, the engine
says it is blocked (snapshot, status summary), nothing it showed is missing from the journal, and
after a restart the journal verifies and the engine starts from what was recorded.

Two ways to break the disk: errors injected into the journal's SQLite writes at the Nth commit
(always), and a real full disk, a tiny tmpfs as the data directory (where mounting one is
permitted, as root in CI).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from engine.events import EngineEvent
from engine.journal import read_rows, verify_journal
from engine.runtime import JOURNAL_FILE, Engine
from engine.types import Order, OrderUpdate
from tests.test_adversarial_kill9 import REPO, WAIT_S, fast_toml
from tests.test_adversarial_shown_durable import trading_config

FAULTS = ["disk I/O error", "database or disk is full"]


def intent_on_disk(data_dir: Path, intent_id: str) -> bool:
    """A submitted intent row for this id, read by a second connection: committed rows only."""
    conn = sqlite3.connect(f"{(data_dir / JOURNAL_FILE).resolve().as_uri()}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT 1 FROM journal WHERE kind = 'intent' "
            "AND json_extract(payload, '$.intent.intent_id') = ? "
            "AND json_extract(payload, '$.outcome') = 'submitted'",
            (intent_id,),
        ).fetchone()
    finally:
        conn.close()
    return row is not None


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize(("where", "nth"), [("commit", 2), ("commit", 9), ("executemany", 5)])
async def test_injected_write_errors_fail_closed(
    data_dir: Path, fault: str, where: str, nth: int
) -> None:
    shown_fills: list[str] = []

    def emit(ev: EngineEvent) -> None:
        if ev.kind == "fill":
            shown_fills.append(ev.fill.fill_id)  # type: ignore[attr-defined]

    engine = Engine(trading_config(data_dir), data_dir, emit=emit)
    await engine.start()
    journal, broker = engine.journal, engine.execution.paper
    assert journal is not None and broker is not None
    sent: list[str] = []
    after_failure: list[str] = []
    without_intent: list[str] = []
    real_submit = broker.submit

    def spy(order: Order, now: int) -> list[OrderUpdate]:
        sent.append(order.client_order_id)
        if journal.failed is not None:
            after_failure.append(order.client_order_id)
        if not intent_on_disk(data_dir, order.intent_id):
            without_intent.append(order.client_order_id)
        return real_submit(order, now)

    broker.submit = spy  # type: ignore[method-assign]
    conn = journal._conn
    real = getattr(conn, where)
    calls = 0

    async def failing(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls >= nth:
            raise sqlite3.OperationalError(fault)
        return await real(*args)

    setattr(conn, where, failing)
    try:
        await engine.run(max_events=30_000)
        assert journal.failed is not None, "the fault never came (the run should be longer)"
        assert sent, "nothing was sent before the fault (the test would prove nothing)"
        assert after_failure == [], f"sent after the journal failed: {after_failure}"
        assert without_intent == [], f"sent without a committed intent: {without_intent}"
        # The engine says so, everywhere a person looks.
        assert "journal write failed" in engine.blocked_reason
        assert fault in engine.blocked_reason
        assert engine.summary()["blocked"] == engine.blocked_reason
        assert engine.snapshot(trace=0, curve=0)["blocked"] == engine.blocked_reason
    finally:
        await engine.stop()
    # A restart on the same directory: the chain verifies, and what was shown was recorded.
    report = verify_journal(data_dir / JOURNAL_FILE)
    assert report.ok, report.problem
    on_disk = {r.payload["fill"]["fill_id"] for r in read_rows(data_dir / JOURNAL_FILE, {"fill"})}
    assert set(shown_fills) <= on_disk, "a fill was shown that the journal does not have"
    again = Engine(trading_config(data_dir), data_dir)
    await again.start()
    try:
        assert again.core is not None
        assert len(again.restored.fills) == len(on_disk)
        assert again.blocked_reason == ""
    finally:
        await again.stop()


# --------------------------------------------------------------------------- a real full disk


@contextlib.contextmanager
def tiny_tmpfs(where: Path, size: str) -> Any:
    where.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                f"size={size},mode=0700",
                f"cockpit-{uuid.uuid4().hex}",
                str(where),
            ],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc}); the injected faults cover this")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)


def test_a_full_disk_blocks_the_engine_and_loses_nothing(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    with tiny_tmpfs(mount, "1m"):
        data_dir = mount / "data"
        out = tmp_path / "out.jsonl"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cockpit",
                "engine",
                "--config",
                str(fast_toml(tmp_path)),
                "--data-dir",
                str(data_dir),
                "--socket",
                str(tmp_path / "s.sock"),
            ],
            cwd=REPO,
            stdout=out.open("wb"),
            stderr=(tmp_path / "err.txt").open("wb"),
        )
        try:
            deadline = time.monotonic() + 4 * WAIT_S
            blocked = None
            while blocked is None:
                assert proc.poll() is None, (tmp_path / "err.txt").read_text()
                assert time.monotonic() < deadline, "the disk never filled up"
                time.sleep(0.2)
                for line in out.read_text().splitlines():
                    if '"event":"summary"' in line:
                        blocked = json.loads(line)["blocked"] or blocked
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=WAIT_S) == 1  # it stopped trading: not a clean exit
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=WAIT_S)
        err = (tmp_path / "err.txt").read_text()
        assert "engine stopped trading" in err and "journal write failed" in err, err
        assert "Traceback" not in err, err
        assert "journal write failed" in blocked
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        # Once blocked, no order is sent: no intent is shown as submitted after the failure.
        shown_fills = [x for x in lines if x["event"] == "fill"]
        journal = data_dir / JOURNAL_FILE
        report = verify_journal(journal)
        assert report.ok, report.problem
        rows = list(read_rows(journal))
        fills = {
            (r.payload["fill"]["client_order_id"], r.payload["fill"]["qty"])
            for r in rows
            if r.kind == "fill"
        }
        assert shown_fills, "nothing traded before the disk filled (the test proves nothing)"
        assert {(x["order"], x["qty"]) for x in shown_fills} <= fills
        submitted = {
            r.payload["intent"]["intent_id"]
            for r in rows
            if r.kind == "intent" and r.payload["outcome"] == "submitted"
        }
        orders = {r.payload["order"]["client_order_id"] for r in rows if r.kind == "order"}
        assert orders <= submitted, "an order without a durable intent"
        # More room, and the engine starts again from exactly what was recorded.
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True, timeout=10)
        again = subprocess.run(
            [sys.executable, "-m", "cockpit", "verify", "--data-dir", str(data_dir)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        assert again.returncode == 0, again.stdout + again.stderr
        restart = subprocess.run(
            [
                sys.executable,
                "-m",
                "cockpit",
                "engine",
                "--config",
                str(fast_toml(tmp_path)),
                "--data-dir",
                str(data_dir),
                "--socket",
                str(tmp_path / "s.sock"),
                "--for",
                "1",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        assert restart.returncode == 0, restart.stderr
        started = json.loads(restart.stdout.splitlines()[0])
        assert started["event"] == "session" and started["state"] == "started", started
        assert started["info"]["restored_fills"] == len([r for r in rows if r.kind == "fill"])
