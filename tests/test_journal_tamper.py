"""An edited journal is never trusted: every engine start verifies the whole chain first.

Before, only the last row's hash was checked at start: an edited kill-switch row brought the
engine back ACTIVE, an edited fill restored a position ten times too large. Now every start path
(`cockpit engine`, the embedded cockpit, the engine on a venue) restores through ``restore_state``,
which refuses a journal that does not verify with one line naming the first bad row and
``cockpit verify``, before anything is restored or written.

A clean close notes the last row in an anchor file, so rows cut off the end and a chain
re-hashed from an edited row on are found too. What cannot be seen without a secret (a forger
who rewrites the anchor as well; a tail cut after a crash, before any clean close) is pinned
here too, so the documented limits stay true.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cockpit.app import CockpitApp
from cockpit.tui.session import EmbeddedSession
from engine.journal import (
    GENESIS_HASH,
    Journal,
    JournalBroken,
    _check_range,
    _connect_ro,
    _stitch,
    anchor_path,
    canonical_payload,
    read_rows,
    row_hash,
    verify_journal,
    write_anchor,
)
from engine.runtime import JOURNAL_FILE, Engine
from tests.conftest import REPO
from tests.test_cli import run
from tests.test_safety_engine import BTC, Harness, buy, scripted_config
from tests.test_safety_restart import engine_toml
from tests.test_venue_runtime import TradingVenue, make_testnet_config, venue_engine
from tests.test_venues_support import venue_env

WAIT_S = 60.0  # a bound against hanging, never a performance assertion
EXAMPLES = int(os.environ.get("COCKPIT_TAMPER_EXAMPLES", "60"))


# --------------------------------------------------------------------------- a journal to edit


@pytest.fixture
async def killed(data_dir: Path) -> Path:
    """A data directory whose journal has a fill and then a latched halt, cleanly stopped."""
    h = await Harness.start(scripted_config(data_dir), data_dir)
    try:
        await h.feed(BTC, 60_000.0)
        await h.signal("alpha", BTC, buy(), 60_000.0)
        await h.feed(BTC, 60_000.0)
        assert len(h.sent) == 1 and h.rows("fill")
        reply = await h.engine.command("kill", {"level": "halt", "reason": "desk closed"})
        assert reply["ok"], reply
    finally:
        await h.stop()
    assert verify_journal(data_dir / JOURNAL_FILE).ok
    return data_dir


def _rows(journal: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(journal)
    try:
        return conn.execute(
            "SELECT seq, ts, kind, payload, prev_hash, hash FROM journal"
        ).fetchall()
    finally:
        conn.close()


def _sql(journal: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Edit the file behind the engine's back, as anyone with sqlite3 could; recompute nothing."""
    conn = sqlite3.connect(journal)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def unlatch_kill(journal: Path) -> int:
    """The last safety_state row says the switch is released: the edit that came back ACTIVE."""
    row = [r for r in read_rows(journal, {"safety_state"})][-1]
    assert row.payload["state"]["kill"]["level"] == "halt"
    payload = dict(row.payload)
    payload["state"] = dict(payload["state"], kill={"level": None, "by": "", "reason": ""})
    _sql(journal, "UPDATE journal SET payload = ? WHERE seq = ?", (json.dumps(payload), row.seq))
    return row.seq


def inflate_fill(journal: Path) -> int:
    """The fill's quantity times ten, in canonical JSON like the writer's."""
    row = next(read_rows(journal, {"fill"}))
    payload = dict(row.payload)
    payload["fill"] = dict(payload["fill"], qty=payload["fill"]["qty"] * 10)
    _sql(
        journal,
        "UPDATE journal SET payload = ? WHERE seq = ?",
        (canonical_payload(payload), row.seq),
    )
    return row.seq


def delete_middle(journal: Path) -> int:
    """One row out of the middle; the row after it is the first that does not fit."""
    seq = len(_rows(journal)) // 2
    _sql(journal, "DELETE FROM journal WHERE seq = ?", (seq,))
    return seq + 1


def cut_the_kill_off(journal: Path) -> int:
    """Every row from the kill on deleted: what is left is a valid chain, ACTIVE at its end."""
    seq = next(r.seq for r in read_rows(journal, {"safety"}) if r.payload["what"] == "kill_switch")
    _sql(journal, "DELETE FROM journal WHERE seq >= ?", (seq,))
    return seq


TAMPERS: dict[str, Callable[[Path], int]] = {
    "kill-unlatched": unlatch_kill,
    "fill-x10": inflate_fill,
    "middle-row-deleted": delete_middle,
    "kill-cut-off-the-end": cut_the_kill_off,
}


def cockpit(*args: str, timeout: float = WAIT_S) -> subprocess.CompletedProcess[str]:
    return run(*args, timeout=timeout)


def assert_refused(message: str, bad_seq: int) -> None:
    lines = message.strip().splitlines()
    assert len(lines) == 1, message
    assert f"row {bad_seq}:" in lines[0], message
    assert "cockpit verify" in lines[0], message
    assert "Traceback" not in message


# --------------------------------------------------------------------------- every start path


@pytest.mark.parametrize("tamper", list(TAMPERS))
async def test_cli_engine_refuses_an_edited_journal(
    tmp_path: Path, killed: Path, tamper: str
) -> None:
    journal = killed / JOURNAL_FILE
    bad = TAMPERS[tamper](journal)
    before = _rows(journal)

    run = cockpit(
        "engine",
        "--config",
        str(engine_toml(tmp_path)),
        "--data-dir",
        str(killed),
        timeout=30,  # an engine that starts runs until stopped: that is the failure
    )

    assert run.returncode == 1, run.stdout + run.stderr
    assert_refused(run.stderr, bad)
    assert run.stdout == ""  # no session, no summary, no order
    assert _rows(journal) == before  # nothing restored, nothing appended
    check = cockpit("verify", "--data-dir", str(killed))
    assert check.returncode == 1 and f"row {bad}:" in check.stderr


async def test_in_process_engine_refuses_before_restoring_anything(killed: Path) -> None:
    journal = killed / JOURNAL_FILE
    bad = unlatch_kill(journal)
    engine = Engine(scripted_config(killed), killed)
    with pytest.raises(JournalBroken) as err:
        await engine.start()
    assert err.value.report.first_bad_seq == bad
    assert engine.core is None and engine.journal is None  # nothing built, nothing opened


async def test_embedded_cockpit_refuses_an_edited_journal(
    killed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = inflate_fill(killed / JOURNAL_FILE)
    before = _rows(killed / JOURNAL_FILE)
    app = CockpitApp(session=EmbeddedSession(scripted_config(killed), killed))
    async with app.run_test() as pilot:
        for _ in range(200):
            if app._exit:
                break
            await pilot.pause(0.05)
    assert app.return_code == 1
    # Textual prints the exit message through Rich, wrapped at the terminal's width.
    said = "".join(capsys.readouterr().err.split())
    assert f"row{bad}:" in said and "cockpitverify" in said, said
    assert _rows(killed / JOURNAL_FILE) == before


async def test_venue_engine_refuses_before_reaching_a_venue(monkeypatch: Any, killed: Path) -> None:
    venue_env(monkeypatch)
    bad = inflate_fill(killed / JOURNAL_FILE)
    venue = TradingVenue()  # loopback: even an engine that did not refuse stays off the internet
    await venue.start()
    try:
        engine = venue_engine(make_testnet_config(killed), killed, venue)
        with pytest.raises(JournalBroken) as err:
            await engine.start()
    finally:
        await venue.stop()
    assert err.value.report.first_bad_seq == bad
    assert venue.hits == []  # no venue was asked anything


async def test_an_intact_journal_still_starts(killed: Path) -> None:
    engine = Engine(scripted_config(killed), killed)
    await engine.start()
    try:
        assert engine.core is not None and engine.core.safety.kill.level == "halt"
    finally:
        await engine.stop()


# --------------------------------------------------------------------------- what the chain sees


async def _journal(path: Path, n: int, reason: str = "plain") -> None:
    j = await Journal.open(path)
    for i in range(n):
        j.append("fill" if i % 4 == 0 else "tick", 1_000 + i, {"i": i, "reason": reason})
    await j.close()


def _rechain(journal: Path, first: int, last: int) -> None:
    """Re-hash rows first..last so each fits the one before: what a forger without the rest does."""
    rows = {r[0]: r for r in _rows(journal)}
    prev = rows[first - 1][5] if first > 1 else GENESIS_HASH
    conn = sqlite3.connect(journal)
    for seq in range(first, last + 1):
        _, ts, kind, payload, _, _ = rows[seq]
        digest = row_hash(seq, ts, kind, payload, prev)
        conn.execute(
            "UPDATE journal SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq)
        )
        prev = digest
    conn.commit()
    conn.close()


async def test_a_partly_rechained_edit_is_found_where_the_forger_stopped(data_dir: Path) -> None:
    journal = data_dir / JOURNAL_FILE
    await _journal(journal, 100)
    _sql(journal, "UPDATE journal SET payload = ? WHERE seq = 40", ('{"i":39,"reason":"forged"}',))
    _rechain(journal, 40, 70)
    report = verify_journal(journal)
    assert (report.ok, report.first_bad_seq) == (False, 71)
    assert "prev_hash does not match row 70" in report.problem


async def test_a_fully_rechained_edit_is_found_by_the_anchor(data_dir: Path) -> None:
    """Re-hashing every later row makes a valid chain, but its last hash is not the one the
    last clean close noted."""
    journal = data_dir / JOURNAL_FILE
    await _journal(journal, 100)
    _sql(journal, "UPDATE journal SET payload = ? WHERE seq = 40", ('{"i":39,"reason":"forged"}',))
    _rechain(journal, 40, 100)
    report = verify_journal(journal)
    assert (report.ok, report.first_bad_seq) == (False, 100)
    assert "re-hashed" in report.problem and "journal.sqlite.anchor" in report.problem


async def test_a_forger_who_rewrites_the_anchor_too_is_the_documented_limit(
    data_dir: Path,
) -> None:
    """No secret, no detection: whoever can rewrite the journal and its anchor can forge both.
    This pins the limit the README states."""
    journal = data_dir / JOURNAL_FILE
    await _journal(journal, 100)
    _sql(journal, "UPDATE journal SET payload = ? WHERE seq = 40", ('{"i":39,"reason":"forged"}',))
    _rechain(journal, 40, 100)
    write_anchor(journal, 100, _rows(journal)[-1][5])
    assert verify_journal(journal).ok


async def test_rows_cut_off_the_end_are_found_by_the_anchor(data_dir: Path) -> None:
    journal = data_dir / JOURNAL_FILE
    await _journal(journal, 100)
    _sql(journal, "DELETE FROM journal WHERE seq > 90")
    report = verify_journal(journal)
    assert (report.ok, report.first_bad_seq) == (False, 91)
    assert "ends at row 90 but reached row 100" in report.problem


async def test_rows_cut_off_after_a_crash_are_the_documented_limit(data_dir: Path) -> None:
    """Without a clean close nothing noted where the journal ended: a cut tail is a valid chain."""
    journal = data_dir / JOURNAL_FILE
    await _journal(journal, 100)
    anchor_path(journal).unlink()  # as if the engine had died before closing
    _sql(journal, "DELETE FROM journal WHERE seq > 90")
    report = verify_journal(journal)
    assert report.ok and report.rows == 90


async def test_a_journal_gone_behind_its_anchor_is_refused(data_dir: Path) -> None:
    journal = data_dir / JOURNAL_FILE
    await _journal(journal, 10)
    journal.unlink()
    with pytest.raises(JournalBroken, match="row 1: missing; the journal is gone"):
        await Engine(scripted_config(data_dir), data_dir).start()
    anchor_path(journal).unlink()  # moved away on purpose: a fresh start
    engine = Engine(scripted_config(data_dir), data_dir)
    await engine.start()
    await engine.stop()


@pytest.mark.parametrize("text", ["", "{}", '{"seq": 5}', '{"seq": "5", "hash": "x"}', "\xff"])
async def test_an_anchor_that_is_not_one_is_a_problem(data_dir: Path, text: str) -> None:
    journal = data_dir / JOURNAL_FILE
    await _journal(journal, 10)
    anchor_path(journal).write_text(text)
    report = verify_journal(journal)
    assert not report.ok and "journal.sqlite.anchor is not an anchor" in report.problem


@pytest.mark.parametrize("column", ["kind", "ts"])
async def test_content_moved_between_columns_under_the_same_hash(
    data_dir: Path, column: str
) -> None:
    """The hashed text is "seq|ts|kind|payload|prev": moving a "|" from the payload into the kind
    (or the kind into ts) keeps that text, so the old check passed the row; restore then read a
    different kind (a fill that no longer counts). Types and a kind without "|" make it unique."""
    journal = data_dir / JOURNAL_FILE
    await _journal(journal, 10, reason="a|b")
    seq, ts, kind, payload, _, _ = _rows(journal)[4]  # a fill
    assert kind == "fill"
    head, _, tail = payload.partition("|")
    if column == "kind":
        _sql(
            journal,
            "UPDATE journal SET kind = ?, payload = ? WHERE seq = ?",
            (f"{kind}|{head}", tail, seq),
        )
    else:
        _sql(
            journal,
            "UPDATE journal SET ts = ?, kind = ?, payload = ? WHERE seq = ?",
            (f"{ts}|{kind}", head, tail, seq),
        )
    report = verify_journal(journal)
    assert (report.ok, report.first_bad_seq) == (False, seq), report
    assert f"row {seq}:" in report.problem and "edited?" in report.problem


async def test_a_row_inserted_before_the_first_is_found(data_dir: Path) -> None:
    journal = data_dir / JOURNAL_FILE
    await _journal(journal, 10)
    _sql(
        journal,
        "INSERT INTO journal VALUES (0, 1, 'fill', '{}', ?, ?)",
        (GENESIS_HASH, row_hash(0, 1, "fill", "{}", GENESIS_HASH)),
    )
    report = verify_journal(journal)
    assert (report.ok, report.first_bad_seq) == (False, 0)
    assert "row inserted" in report.problem


# --------------------------------------------------------------------------- ranges side by side


def _tamper(journal: Path, how: str, seq: int) -> None:
    if how == "edit":
        _sql(journal, "UPDATE journal SET payload = '{\"x\":1}' WHERE seq = ?", (seq,))
    elif how == "delete":
        _sql(journal, "DELETE FROM journal WHERE seq = ?", (seq,))
    elif how == "prev":
        _sql(journal, "UPDATE journal SET prev_hash = ? WHERE seq = ?", ("e" * 64, seq))
    else:  # the row's own hash forged to fit its edited content: the next row's link breaks
        rows = {r[0]: r for r in _rows(journal)}
        _, ts, kind, _, prev, _ = rows[seq]
        digest = row_hash(seq, ts, kind, '{"x":2}', prev)
        _sql(
            journal,
            "UPDATE journal SET payload = '{\"x\":2}', hash = ? WHERE seq = ?",
            (digest, seq),
        )


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    path = tmp_path_factory.mktemp("pristine") / JOURNAL_FILE
    asyncio.run(_journal(path, 300))
    return path


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    how=st.sampled_from(["edit", "delete", "prev", "rehash", "none"]),
    seq=st.integers(1, 300),
    cuts=st.lists(st.integers(-5, 305), max_size=4).map(sorted),
)
def test_ranges_stitched_give_the_same_answer_as_one_pass(
    tmp_path: Path, pristine: Path, how: str, seq: int, cuts: list[int]
) -> None:
    journal = tmp_path / f"{how}-{seq}-{'-'.join(map(str, cuts))}.sqlite"
    shutil.copy(pristine, journal)
    if how != "none":
        _tamper(journal, how, seq)
    conn = _connect_ro(journal)
    try:
        one = _stitch(iter([_check_range(conn, None, None)]))
        bounds = list(zip([None, *cuts], [*cuts, None], strict=True))
        split = _stitch(iter([_check_range(conn, a, b) for a, b in bounds]))
    finally:
        conn.close()
    assert split == one
    # The last row deleted, or re-hashed to fit its edit, leaves a valid chain: only the anchor
    # (checked by verify_journal after the stitch) sees those.
    assert one.ok == (how == "none" or (seq == 300 and how in ("delete", "rehash")))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    seq=st.integers(1, 300),
    column=st.sampled_from(["ts", "kind", "payload", "prev_hash", "hash"]),
    value=st.one_of(
        st.integers(-(2**63), 2**63 - 1),
        st.text(max_size=80),
        st.binary(max_size=40),
        st.floats(allow_nan=False),
    ),
)
def test_any_edit_of_any_column_is_named_at_its_row(
    tmp_path: Path, pristine: Path, seq: int, column: str, value: Any
) -> None:
    journal = tmp_path / f"edit-{seq}-{column}.sqlite"
    shutil.copy(pristine, journal)
    before = _rows(journal)[seq - 1]
    try:
        _sql(journal, f"UPDATE journal SET {column} = ? WHERE seq = ?", (value, seq))
    except sqlite3.IntegrityError:
        assume(False)
    after = _rows(journal)[seq - 1]
    assume(after != before)
    report = verify_journal(journal)
    assert (report.ok, report.first_bad_seq, report.rows) == (False, seq, seq - 1), report
    assert report.problem.startswith(f"row {seq}: ")


@pytest.mark.parametrize(
    ("how", "seq"), [("edit", 150), ("delete", 151), ("rehash", 100), ("none", 0)]
)
def test_worker_processes_give_the_same_answer(
    tmp_path: Path, pristine: Path, how: str, seq: int
) -> None:
    journal = tmp_path / JOURNAL_FILE
    shutil.copy(pristine, journal)
    if how != "none":
        _tamper(journal, how, seq)
    assert verify_journal(journal, workers=3) == verify_journal(journal, workers=1)


# --------------------------------------------------------------------------- read-only media


def _read_only_run(src: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with ``src`` mounted read-only at the same path (a private mount namespace
    as root; a directory without write permission otherwise), or skip if neither is possible."""
    if os.geteuid() != 0:
        mode = src.stat().st_mode
        src.chmod(0o500)
        try:
            return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=WAIT_S)
        finally:
            src.chmod(mode)
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare to make a read-only mount")
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    run = subprocess.run(
        [unshare, "-m", "sh", "-c", script, "sh", str(src), *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    if "mount:" in run.stderr or "unshare:" in run.stderr:
        pytest.skip(f"cannot make a read-only mount here: {run.stderr.strip()}")
    return run


def _verify_cli(data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "cockpit", "verify", "--data-dir", str(data_dir)]


async def test_verify_reads_an_intact_journal_on_read_only_media(killed: Path) -> None:
    # An engine's journal: verify also reads it through as a start would (its rows' contents).
    data_dir = killed
    rows = len(_rows(data_dir / JOURNAL_FILE))
    files = sorted(p.name for p in data_dir.iterdir())
    run = _read_only_run(data_dir, _verify_cli(data_dir))
    assert sorted(p.name for p in data_dir.iterdir()) == files  # nothing created
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"ok: {rows} rows, hash chain intact")


async def test_verify_on_read_only_media_still_finds_an_edit(data_dir: Path) -> None:
    await _journal(data_dir / JOURNAL_FILE, 100)
    _sql(data_dir / JOURNAL_FILE, "UPDATE journal SET payload = '{}' WHERE seq = 33")
    run = _read_only_run(data_dir, _verify_cli(data_dir))
    assert run.returncode == 1
    assert "row 33: hash does not match its content" in run.stderr


async def _snapshot_with_wal(src: Path, dst: Path, n: int) -> None:
    """Copy a journal while its rows are still in the -wal file (a crash, or a live engine)."""
    j = await Journal.open(src / JOURNAL_FILE)
    await j._conn.execute("PRAGMA wal_autocheckpoint=0")
    for i in range(n):
        j.append("tick", i, {"i": i})
    await j.flush()
    dst.mkdir(mode=0o700)
    for suffix in ("", "-wal", "-shm"):
        shutil.copy(src / (JOURNAL_FILE + suffix), dst / (JOURNAL_FILE + suffix))
    await j.close()


async def test_read_only_media_with_rows_in_the_wal(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the WAL cases need a read-only mount (root)")
    src, dst = tmp_path / "live", tmp_path / "copy"
    await _snapshot_with_wal(src, dst, 50)
    # With its -shm the WAL is readable: every row, none missed.
    run = _read_only_run(dst, _verify_cli(dst))
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("ok: 50 rows")
    # Without it the rows in the WAL cannot be read: say so, never "ok" on part of the journal.
    (dst / (JOURNAL_FILE + "-shm")).unlink()
    run = _read_only_run(dst, _verify_cli(dst))
    assert run.returncode == 1
    assert f"{JOURNAL_FILE}-wal holds rows" in run.stderr and "writable" in run.stderr
