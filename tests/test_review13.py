"""Adversarial review of issue 13's history readers: a row exactly at a --since/--until given
to the microsecond, free text (a reason) that would forge a line or restyle the terminal, and
a row forged with a recomputed hash of its own."""

from __future__ import annotations

import csv
import io
import math
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cockpit.tui.audit_screen import audit_rows
from cockpit.tui.limit_screen import LimitScreen, parse_value
from cockpit.tui.table import KeyedTable
from engine.commands import CommandError, parse_command, shows_something
from engine.history import parse_time
from engine.journal import row_hash
from engine.performance import PerformanceBook
from engine.vocabulary import JOURNAL_FILE, UNPRINTABLE, ExitCode, printable
from tests.test_history_cli import T0, S, audit_payload, cli, lines, write_journal
from tests.test_performance import fill as perf_fill
from tests.test_performance import trade_until_fills
from tests.test_tui import WIDE, make_app, ready, settle, start_engine
from tests.test_tui_operator import open_limit_dialog, text_of, type_in
from tests.test_tui_performance import Host as PerfHost
from tests.test_tui_performance import cells as perf_cells
from tests.test_tui_performance import snapshot as perf_snapshot


def iso(ns: int) -> str:
    """A journal ts (a whole microsecond) as the ISO text a person would type."""
    us = ns // 1000
    dt = datetime.fromtimestamp(us // 1_000_000, tz=UTC).replace(microsecond=us % 1_000_000)
    return dt.isoformat().replace("+00:00", "")


def test_a_time_given_to_the_microsecond_is_exact() -> None:
    for frac_us in (753_719, 1, 999_999, 123_456):
        ns = T0 + 7 * S + frac_us * 1000
        assert parse_time(iso(ns), 0) == ns
        assert parse_time(iso(ns) + "Z", 0) == ns
    assert parse_time("1969-12-31T23:59:59.5", 0) == -S // 2  # before the epoch too


def test_since_and_until_exactly_at_a_rows_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--since is inclusive and --until exclusive, to the nanosecond of the time typed."""
    at = T0 + 6 * S + 753_719_000  # float seconds * 1e9 lands 40 ns after this
    write_journal(tmp_path / JOURNAL_FILE, [("audit", at, audit_payload(6))])
    d = ["--data-dir", str(tmp_path)]
    code, out, _ = cli(capsys, "audit", "--since", iso(at), *d)
    assert code == ExitCode.OK and len(lines(out)) == 1
    code, out, _ = cli(capsys, "audit", "--until", iso(at), *d)
    assert code == ExitCode.OK and lines(out) == []
    code, out, _ = cli(capsys, "journal", "--kind", "audit", "--since", iso(at), *d)
    assert len(lines(out)) == 1


FORGED_LINE = '2024-03-01 00:00:09.000Z  root via cli  kill halt: engaged  reason "x"'
NASTY = f"line one\n{FORGED_LINE}\r\x1b[2J\x1b]0;title\x07\u202eevil"


def test_free_text_never_forges_a_line_or_reaches_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reason holding a newline, terminal escapes or a bidi override prints on its own line,
    escaped (as typed); CSV and JSON keep it exactly."""
    payload = audit_payload(1) | {"reason": NASTY}
    safety = {
        "what": "limit",
        "subject": "max_order_notional",
        "before": {"value": 1.0},
        "after": {"value": 2.0},
        "by": "alice",
        "reason": NASTY,
        "client": "embedded",
    }
    write_journal(
        tmp_path / JOURNAL_FILE, [("audit", T0 + S, payload), ("safety", T0 + 2 * S, safety)]
    )
    d = ["--data-dir", str(tmp_path)]
    for argv in (("audit",), ("journal", "--kind", "audit,safety")):
        code, out, _ = cli(capsys, *argv, *d)
        assert code == ExitCode.OK
        shown = out.splitlines()
        expected = 1 if argv == ("audit",) else 2
        assert len(shown) == expected, out
        assert not any(c in out for c in "\r\x1b\x07\u202e")
        assert "line one\\n2024-03-01" in out
    code, out, _ = cli(capsys, "audit", "--csv", *d)
    assert [r["reason"] for r in csv.DictReader(io.StringIO(out, newline=""))] == [NASTY]


def test_a_row_forged_with_its_own_hash_recomputed_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rewriting an audit row and its hash leaves the next row (a kind the audit filter skips)
    naming the old hash: the reader refuses instead of showing the forgery."""
    rows = [("marks", T0 + i * S, {"equity": 1.0, "marks": {}}) for i in range(6)]
    rows[2] = ("audit", T0 + 2 * S, audit_payload(2))
    path = tmp_path / JOURNAL_FILE
    write_journal(path, rows)
    conn = sqlite3.connect(path)
    seq, ts, kind, payload, prev = conn.execute(
        "SELECT seq, ts, kind, payload, prev_hash FROM journal WHERE kind = 'audit'"
    ).fetchone()
    forged = payload.replace("alice", "bob")
    conn.execute(
        "UPDATE journal SET payload = ?, hash = ? WHERE seq = ?",
        (forged, row_hash(seq, ts, kind, forged, prev), seq),
    )
    conn.commit()
    conn.close()
    d = ["--data-dir", str(tmp_path)]
    for argv in (
        ("audit",),
        ("audit", "-n", "0"),
        ("journal", "--kind", "audit"),
        ("journal", "--kind", "all"),  # neighbours read: the link to the next row
        ("journal", "--kind", "all", "-n", "0"),
    ):
        code, out, err = cli(capsys, *argv, *d)
        assert code == ExitCode.FAILURE and "bob" not in out, argv
        assert f"row {seq + 1} does not follow row {seq}" in err


@pytest.mark.parametrize("value", ["%", "_", "a%", "%_%", "*", "[a]", "'", '"'])
def test_wildcards_in_a_name_match_only_themselves(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_journal(tmp_path / JOURNAL_FILE, [("audit", T0 + S, audit_payload(1))])
    d = ["--data-dir", str(tmp_path)]
    for flag in ("--strategy", "--operator", "--symbol", "--venue"):
        code, out, _ = cli(capsys, "journal", "--kind", "audit", flag, value, *d)
        assert code == ExitCode.OK and out == "", (flag, value)
    code, out, _ = cli(capsys, "audit", "--operator", value, *d)
    assert code == ExitCode.OK and out == ""


@pytest.mark.parametrize(
    ("reason", "problem"),
    [
        ("why\nforged line", r"control character \\n"),
        ("esc\x1b[2J", r"control character \\x1b"),
        ("bell\x07", r"control character \\x07"),
        ("rtl\u202eevil", r"control character \\u202e"),
        ("   ", "not only spaces"),
        ("\t", "not only spaces"),
    ],
)
def test_the_engine_refuses_a_reason_that_is_not_one_line(reason: str, problem: str) -> None:
    """Every command's reason, from the cockpit, the CLI or raw socket JSON: one line of text
    (but the kill switch's, which is made one line rather than refused: see test_review_safety)."""
    args = {
        "set_limit": {"name": "max_order_notional", "value": 5.0},
        "flatten": {},
        "set_approval_mode": {"strategy": "s", "mode": "auto"},
        "rearm": {"scope": "global"},
        "reject": {"id": "a1"},
    }
    for name, rest in args.items():
        with pytest.raises(CommandError, match=problem):
            parse_command(name, {**rest, "reason": reason})
    assert parse_command("kill", {"reason": 'café, "quoted" — ok'}).reason  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("typed", "value"),
    [(" 5 ", 5.0), ("5,000", 5000.0), ("1,000.5", 1000.5), ("2.5", 2.5), ("-1", -1.0)]
    + [(bad, None) for bad in ("1,5", "5,00", ",5", "1,,000", "1e309", "nan", "inf", "", "x")],
)
def test_a_limit_typed_in_the_cockpit_is_read_as_meant(typed: str, value: float | None) -> None:
    assert parse_value(typed) == value


async def test_a_decimal_comma_is_refused_not_read_as_ten_times_the_value(data_dir: Path) -> None:
    """Typing "1,5" (1.5 in much of the world) used to set 15: the commas were dropped."""
    engine = await start_engine(data_dir)
    try:
        app = make_app(engine)
        async with app.run_test(size=WIDE) as pilot:
            await ready(pilot)
            before = await open_limit_dialog(pilot, engine)
            await type_in(pilot, "#value", "1,5")
            await type_in(pilot, "#reason", "a decimal comma")
            await pilot.press("enter")
            await settle(pilot, engine)
            await pilot.pause()
            assert "decimals take a point (1.5)" in text_of(app, "#dialog-message")
            assert isinstance(app.screen, LimitScreen)
            assert engine.core.safety.kill_cfg.daily_loss_limit_pct == before
            await type_in(pilot, "#value", "1.5")
            await pilot.press("enter")
            await settle(pilot, engine)
            assert engine.core.safety.kill_cfg.daily_loss_limit_pct == 1.5
    finally:
        await engine.stop()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 0.0, -5.0])
def test_a_bad_mark_reads_as_no_mark_not_a_nan_row(bad: float) -> None:
    """One non-price mark used to make the strategy's unrealized PnL and exposure NaN/inf."""
    book = PerformanceBook()
    book.on_fill(perf_fill("buy", 2.0, 100.0, 0.5))
    book.on_fill(perf_fill("buy", 1.0, 10.0, symbol="ETH/USDT"))
    good = {"ETH/USDT": 12.0}
    (row,) = book.table({**good, "BTC/USDT": bad})
    assert row == book.table(good)[0]
    assert row["unrealized_pnl"] == 2.0 and row["exposure"] == 2.0 * 100.0 + 12.0
    assert book.table({"BTC/USDT": 101.0, **good})[0]["unrealized_pnl"] == 4.0


def test_times_beyond_what_a_journal_holds_are_its_ends_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A span of 400 digits was a traceback (float infinity); a date after 2262 or a span
    before 1677 was 'unexpected error: OverflowError' (past SQLite's 64-bit integer)."""
    top = 2**63 - 1
    assert parse_time("9" * 400 + "d", T0) == -top - 1
    assert parse_time("99999999999999999999w", T0) == -top - 1
    assert parse_time("9999-12-31T23:59:59.999999-12:00", T0) == top
    assert parse_time("1.5h", T0) == T0 - 5400 * S  # an ordinary span is still exact
    write_journal(tmp_path / JOURNAL_FILE, [("audit", T0 + S, audit_payload(1))])
    d = ["--data-dir", str(tmp_path)]
    for argv in (
        ("journal", "--kind", "audit", "--since", "9" * 400 + "d"),
        ("journal", "--kind", "audit", "--until", "9999-12-31"),
        ("audit", "--since", "99999999999999999999w", "--until", "9999-12-31"),
        ("journal", "--trades", "--until", "9999-12-31"),
    ):
        code, out, err = cli(capsys, *argv, *d)
        assert code == ExitCode.OK and "error" not in err, (argv, err)
        assert len(lines(out)) == (0 if "--trades" in argv else 1)


async def test_a_restart_rebuilds_every_performance_figure(tmp_path: Path) -> None:
    """The performance table and daily profit after a restart equal what was shown before it,
    slippage against the model included (it used to come back empty: the journal's fills did
    not carry the mid and the model's estimate)."""
    from engine.runtime import Engine
    from tests.conftest import fast_config

    marks = {"BTC/USDT": 1.0, "ETH/USDT": 1.0, "SOL/USDT": 1.0}  # unrealized: the same marks
    engine = Engine(fast_config(tmp_path), tmp_path)
    await engine.start()
    try:
        await trade_until_fills(engine, 6)
        before = engine.core.performance.table(marks), engine.core.performance.daily_pnl()
    finally:
        await engine.stop()
    assert engine.core.counters["fills"] >= 6
    assert any(r["slippage_bps"] is not None for r in before[0])
    again = Engine(fast_config(tmp_path), tmp_path)
    await again.start()
    try:
        after = again.core.performance.table(marks), again.core.performance.daily_pnl()
    finally:
        await again.stop()
    assert after == before


async def test_a_strategy_that_filled_but_is_no_longer_configured_keeps_its_row() -> None:
    """Its fills are in the account's PnL and its position may be open: the table used to
    list configured strategies only, so it vanished (and the rows no longer added up)."""
    snap = perf_snapshot()
    old = {**snap["performance"]["strategies"][0], "strategy": "retired", "realized_pnl": -40.0}
    snap["performance"]["strategies"].append(old)
    async with PerfHost(snap).run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        table = pilot.app.screen.query_one("#perf-strategy-table", KeyedTable)
        assert [str(k.value) for k in table.rows] == ["ema_cross", "donchian", "rsi", "retired"]
        row = perf_cells(table, "retired")
        assert row[0] == "retired" and row[1].startswith("gone") and "-40" in row[2]


def test_the_audit_view_shows_an_older_journals_control_characters_escaped() -> None:
    """A reason journaled before the engine refused control characters reaches the Audit view
    as text: no newline in a one-row cell, no escape sequence sent to the terminal."""
    record = {
        "key": "j7",
        "ts": T0,
        "action": "set_limit",
        "subject": "max_order_notional",
        "accepted": True,
        "reason": NASTY,
        "changes": [{"what": "value", "before": 1.0, "after": 2.0}],
        "user": "alice",
        "client": "cockpit",
    }
    ((key, cells),) = audit_rows([record])
    shown = "".join(c.plain for c in cells)
    assert key == "j7" and not any(c in shown for c in "\n\r\x1b\x07\u202e")
    assert "line one\\n2024-03-01" in shown and "\\x1b[2J" in shown


@settings(max_examples=int(os.environ.get("COCKPIT_REVIEW13_EXAMPLES", "300")), deadline=None)
@given(st.text(max_size=40))
@example("\U00012544")  # unassigned in Python 3.11's Unicode: draws nothing (CI found it)
def test_printable_text_is_one_line_and_reason_checks_agree(text: str) -> None:
    shown = printable(text)
    assert len(shown.splitlines()) <= 1 and not UNPRINTABLE.search(shown)
    assert shown == text or UNPRINTABLE.search(text)  # ordinary text is shown as typed
    try:
        parse_command("flatten", {"reason": text})
    except CommandError:  # blank, or nothing a terminal draws (review-ap), a control, too long
        assert not shows_something(text) or UNPRINTABLE.search(text) or len(text) > 500
    else:
        assert shown == text and text.strip() and shows_something(text)
