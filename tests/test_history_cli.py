"""History you can query: `cockpit journal` and `cockpit audit` on a running and on a stopped
engine's data dir; their filters, JSON lines and CSV; FIFO round trips; the one-line answers
to a missing journal, a bad filter and an edited journal."""

from __future__ import annotations

import asyncio
import csv
import getpass
import io
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cockpit.cli import build_parser
from cockpit.history_cli import run_history
from cockpit.oneshot import run_oneshot
from engine.history import (
    DEFAULT_KINDS,
    JOURNAL_KINDS,
    HistoryError,
    RoundTrips,
    RowFilter,
    newest,
    parse_kinds,
    parse_time,
    scan,
)
from engine.journal import Journal
from engine.vocabulary import JOURNAL_FILE, EventKind, ExitCode
from tests.test_control_support import WAIT, ThreadEngine, short_dir

S = 1_000_000_000
T0 = 1_709_251_200 * S  # 2024-03-01T00:00:00Z


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The real command line (cockpit.cli's parser) without a subprocess."""
    args = build_parser().parse_args(list(argv))
    code = run_history(args) if getattr(args, "history", None) else run_oneshot(args)
    out, err = capsys.readouterr()
    return code, out, err


def usage(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(list(argv))
    assert exc.value.code == ExitCode.USAGE
    return capsys.readouterr().err


# --------------------------------------------------------------------------- filters


def test_times_iso_utc_or_relative() -> None:
    now = T0 + 3 * 3600 * S
    assert parse_time("2024-03-01", now) == T0
    assert parse_time("2024-03-01T00:00:30Z", now) == T0 + 30 * S
    assert parse_time("2024-03-01 01:00", now) == T0 + 3600 * S  # UTC unless it says so
    assert parse_time("2024-03-01T02:00+02:00", now) == T0
    assert parse_time("2h", now) == T0 + 3600 * S
    assert parse_time("90s", now) == now - 90 * S
    assert parse_time("1d", now) == now - 86_400 * S
    assert parse_time("now", now) == now
    for bad in ("yesterday", "2024-13-01", "2h ago", "-1h", ""):
        with pytest.raises(HistoryError, match=r"ISO date/time in UTC .* span back from now"):
            parse_time(bad, now)


def test_kinds_name_the_valid_ones() -> None:
    assert parse_kinds(["fill", "order,fill"]) == ("fill", "order")
    assert parse_kinds(["all"]) == JOURNAL_KINDS
    assert "marks" not in DEFAULT_KINDS and "fill" in DEFAULT_KINDS
    assert EventKind.QUOTES_REJECTED not in JOURNAL_KINDS  # never journaled
    with pytest.raises(HistoryError) as exc:
        parse_kinds(["fills"])
    assert str(exc.value) == f"unknown kind 'fills'; valid: {', '.join(JOURNAL_KINDS)}, all"


def test_bad_filters_are_one_line_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = ["--data-dir", str(tmp_path)]
    err = usage(capsys, "journal", "--kind", "fills", *d)
    assert err.count("\n") == 1 and "unknown kind 'fills'; valid: decision, intent" in err
    err = usage(capsys, "journal", "--since", "yesterday", *d)
    assert err.count("\n") == 1 and "'yesterday' is not a time" in err
    err = usage(capsys, "audit", "--until", "2024-02-30", *d)
    assert "'2024-02-30' is not a time" in err
    assert "-n" in usage(capsys, "journal", "-n", "-3", *d)
    assert "not allowed with" in usage(capsys, "journal", "--json", "--csv", *d)
    assert "an empty name" in usage(capsys, "journal", "--strategy", " ", *d)


# --------------------------------------------------------------------------- round trips


def fill(side: str, qty: float, price: float, ts: int, fee: float = 0.0, **kw: Any) -> dict:
    return {
        "fill_id": f"f{ts}",
        "strategy_id": kw.get("strategy", "s"),
        "symbol": kw.get("symbol", "BTC/USDT"),
        "venue": "sim",
        "side": side,
        "qty": qty,
        "price": price,
        "fee": fee,
        "ts": ts,
    }


def test_round_trips_pair_fifo_with_fee_shares_and_reversals() -> None:
    rt = RoundTrips()
    assert rt.add(fill("buy", 1.0, 100.0, 1 * S, fee=1.0)) == []
    assert rt.add(fill("buy", 1.0, 110.0, 2 * S, fee=1.0)) == []
    # Sell 1.5: closes the first lot whole, then half the second, oldest first.
    a, b = rt.add(fill("sell", 1.5, 120.0, 5 * S, fee=3.0))
    assert (a.side, a.qty, a.entry_price, a.exit_price, a.entry_fill) == (
        "long",
        1.0,
        100.0,
        120.0,
        f"f{S}",
    )
    assert a.gross_pnl == 20.0 and a.fees == pytest.approx(1.0 + 2.0) and a.holding_s == 4.0
    assert a.pnl == pytest.approx(17.0)
    assert (b.qty, b.entry_price, b.gross_pnl) == (0.5, 110.0, 5.0)
    assert b.fees == pytest.approx(0.5 + 1.0) and b.holding_s == 3.0
    # Sell 1.5 more: closes the last 0.5 long, then opens 1.0 short at 90.
    (c,) = rt.add(fill("sell", 1.5, 90.0, 6 * S))
    assert (c.side, c.qty, c.gross_pnl) == ("long", 0.5, -10.0)
    assert rt.open_lots() == 1
    (d,) = rt.add(fill("buy", 1.0, 80.0, 9 * S))
    assert (d.side, d.qty, d.entry_price, d.exit_price, d.gross_pnl) == (
        "short",
        1.0,
        90.0,
        80.0,
        10.0,
    )
    assert rt.open_lots() == 0
    # Strategies and symbols are paired apart.
    assert rt.add(fill("buy", 1.0, 1.0, 10 * S, strategy="a")) == []
    assert rt.add(fill("sell", 1.0, 2.0, 11 * S, strategy="b")) == []
    assert rt.open_lots() == 2
    # What is not a fill is skipped, never a crash.
    assert rt.add({"side": "buy", "qty": "x"}) == [] and rt.add({}) == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["buy", "sell"]),
            st.integers(1, 50),
            st.integers(50, 150),
            st.integers(0, 3),
        ),
        max_size=30,
    )
)
def test_round_trips_conserve_quantity_money_and_fees(
    fills: list[tuple[str, int, int, int]],
) -> None:
    """Whatever the fills, once the position is closed out: every unit bought is sold in some
    round trip, their gross PnL is the cash the fills moved, and the fees are the fills' fees."""
    rt = RoundTrips()
    trips = []
    position = cash = fees = 0.0
    for i, (side, tenths, price, fee) in enumerate(fills):
        qty = tenths / 10
        trips += rt.add(fill(side, qty, float(price), (i + 1) * S, fee=float(fee)))
        sign = 1 if side == "buy" else -1
        position += sign * qty
        cash -= sign * qty * price
        fees += fee
    if abs(position) > 1e-9:
        side = "sell" if position > 0 else "buy"
        trips += rt.add(fill(side, abs(position), 100.0, (len(fills) + 1) * S))
        cash += position * 100.0
    assert rt.open_lots() == 0
    assert sum(t.gross_pnl for t in trips) == pytest.approx(cash, abs=1e-6)
    assert sum(t.fees for t in trips) == pytest.approx(fees, abs=1e-6)
    assert all(t.qty > 0 and t.exit_ts >= t.entry_ts for t in trips)


# --------------------------------------------------------------------------- a real engine


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadEngine, str]]:
    """An engine that traded a round trip (approved buy, then flatten) and saw operator
    actions of every kind, still running. Yields it and the operator's name."""
    tmp = tmp_path_factory.mktemp("history")
    with short_dir() as sd, ThreadEngine(tmp / "data", sd / "e.sock") as te:
        te.advance(3000)
        s = ["--socket", str(te.socket)]
        capsys_free = _Quiet()
        pending = json.loads(capsys_free.run("approvals", "--json", *s))
        buy = next(a for a in pending if a["side"] == "buy")
        capsys_free.run("approve", buy["id"], *s)
        te.advance(50)
        capsys_free.run("flatten", buy["symbol"], "--reason", "take it off", *s)
        te.advance(50)
        capsys_free.run("set-limit", "max_order_notional", "5000", "--reason", "smaller", *s)
        capsys_free.run("set-limit", "max_ordr", "1", "--reason", "typo", *s)
        capsys_free.run("pause", "rsi_reversion", "--reason", "lunch", *s)
        capsys_free.run("approval-mode", "ema_cross", "auto", "--reason", "early", *s)
        capsys_free.run("kill", "--reason", "drill", *s)
        capsys_free.run("release", "--reason", "drill over", "--confirm", "RELEASE", *s)
        assert te.loop is not None and te.engine is not None
        asyncio.run_coroutine_threadsafe(
            te.engine.engage_kill("entries", by="signal", reason="SIGUSR1", source="signal"),
            te.loop,
        ).result(WAIT)
        te.buy = buy  # type: ignore[attr-defined]
        yield te, getpass.getuser()


class _Quiet:
    """Runs one-shot commands in the module fixture (no capsys there), returning stdout."""

    def run(self, *argv: str) -> str:
        import contextlib

        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = run_oneshot(build_parser().parse_args(list(argv)))
        assert code in (ExitCode.OK, ExitCode.FAILURE), (argv, code)
        return out.getvalue()


def dd(te: ThreadEngine) -> list[str]:
    return ["--data-dir", str(te.data_dir)]


def lines(out: str) -> list[str]:
    return out.strip().splitlines()


def test_journal_on_a_running_engine(
    history: tuple[ThreadEngine, str], capsys: pytest.CaptureFixture[str]
) -> None:
    te, _ = history
    code, out, err = cli(capsys, "journal", "-n", "5", *dd(te))
    assert code == ExitCode.OK, err
    shown = lines(out)
    assert len(shown) == 5
    seqs = [int(line.split()[2]) for line in shown]
    assert seqs == sorted(seqs)  # oldest first, the newest five
    assert "marks" not in out  # periodic noise only when asked for

    code, out, _ = cli(capsys, "journal", "--kind", "marks", "-n", "3", *dd(te))
    assert code == ExitCode.OK and len(lines(out)) == 3
    assert all(line.split()[3] == "marks" for line in lines(out))

    code, out, _ = cli(capsys, "journal", "--kind", "order,fill", "-n", "0", "--json", *dd(te))
    rows = [json.loads(line) for line in lines(out)]
    assert {r["event"] for r in rows} == {"order", "fill"}
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
    assert all(r["time"].endswith("Z") and isinstance(r["ts"], int) for r in rows)
    assert sum(r["event"] == "fill" for r in rows) == 2


def test_journal_filters_by_strategy_symbol_venue_and_operator(
    history: tuple[ThreadEngine, str], capsys: pytest.CaptureFixture[str]
) -> None:
    te, user = history
    sid, symbol = te.buy["strategy"], te.buy["symbol"]  # type: ignore[attr-defined]
    code, out, _ = cli(capsys, "journal", "--strategy", sid, "-n", "0", "--json", *dd(te))
    rows = [json.loads(line) for line in lines(out)]
    assert code == 0 and rows
    for r in rows:
        inner = r.get(r["event"]) or r.get("approval") or r.get("outcome") or r.get("args") or {}
        assert sid in json.dumps(inner) or r.get("subject") == sid or r["event"] == "breaker", r

    code, out, _ = cli(capsys, "journal", "--symbol", symbol, "--kind", "fill", *dd(te))
    assert code == 0 and len(lines(out)) == 2 and all(symbol in line for line in lines(out))
    other = next(s for s in ("BTC/USDT", "ETH/USDT", "SOL/USDT") if s != symbol)
    code, out, err = cli(capsys, "journal", "--symbol", other, "--kind", "fill", *dd(te))
    assert code == 0 and out == "" and "no rows match (the journal holds rows 1.." in err
    code, out, _ = cli(capsys, "journal", "--venue", "sim", "--kind", "fill", *dd(te))
    assert len(lines(out)) == 2
    code, out, _ = cli(capsys, "journal", "--venue", "binance", "--kind", "fill", *dd(te))
    assert out == ""

    code, out, _ = cli(capsys, "journal", "--operator", user, "--kind", "audit", "-n", "0", *dd(te))
    assert len(lines(out)) == 8  # every command in the fixture, refused ones included
    code, out, _ = cli(capsys, "journal", "--operator", "signal", "-n", "0", "--json", *dd(te))
    assert {json.loads(line)["event"] for line in lines(out)} == {"safety"}


def test_journal_time_window(
    history: tuple[ThreadEngine, str], capsys: pytest.CaptureFixture[str]
) -> None:
    te, _ = history
    code, out, _ = cli(capsys, "journal", "-n", "0", "--json", "--kind", "all", *dd(te))
    rows = [json.loads(line) for line in lines(out)]
    mid = rows[len(rows) // 2]["ts"]
    mid_iso = rows[len(rows) // 2]["time"]
    code, out, _ = cli(
        capsys, "journal", "-n", "0", "--json", "--kind", "all", "--since", mid_iso, *dd(te)
    )
    after = [json.loads(line) for line in lines(out)]
    assert after and all(r["ts"] >= mid - 1_000_000 for r in after)  # ms resolution of ISO
    code, out, _ = cli(
        capsys, "journal", "-n", "0", "--json", "--kind", "all", "--until", mid_iso, *dd(te)
    )
    before = [json.loads(line) for line in lines(out)]
    assert all(r["ts"] < mid for r in before)
    assert len(before) + len(after) == len(rows)
    code, out, err = cli(
        capsys, "journal", "--since", "2024-03-02", "--until", "2024-03-01", *dd(te)
    )
    assert code == ExitCode.USAGE and "--since must be before --until" in err


def test_fills_and_round_trips_as_csv(
    history: tuple[ThreadEngine, str], capsys: pytest.CaptureFixture[str]
) -> None:
    te, _ = history
    buy = te.buy  # type: ignore[attr-defined]
    code, out, _ = cli(capsys, "journal", "--csv", *dd(te))
    fills = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [f["side"] for f in fills] == ["buy", "sell"]
    assert fills[0]["qty"] == fills[1]["qty"] and fills[0]["strategy"] == buy["strategy"]
    assert float(fills[1]["position_qty"]) == 0.0

    code, out, _ = cli(capsys, "journal", "--trades", "--csv", *dd(te))
    (trip,) = list(csv.DictReader(io.StringIO(out)))
    assert (trip["strategy"], trip["symbol"], trip["side"]) == (
        buy["strategy"],
        buy["symbol"],
        "long",
    )
    assert trip["qty"] == fills[0]["qty"]
    assert (trip["entry_price"], trip["exit_price"]) == (fills[0]["price"], fills[1]["price"])
    fees = float(fills[0]["fee"]) + float(fills[1]["fee"])
    assert float(trip["fees"]) == pytest.approx(fees)
    gross = (float(fills[1]["price"]) - float(fills[0]["price"])) * float(fills[0]["qty"])
    assert float(trip["pnl"]) == pytest.approx(gross - fees)
    assert float(trip["holding_s"]) > 0

    code, out, _ = cli(capsys, "journal", "--trades", *dd(te))
    assert code == 0 and lines(out)[0].split()[:4] == ["EXIT", "TIME", "STRATEGY", "SYMBOL"]
    assert lines(out)[-1].startswith("1 round trips, ") and "0 entries still open" in out
    code, out, _ = cli(capsys, "journal", "--trades", "--json", *dd(te))
    assert json.loads(out)["pnl"] == pytest.approx(float(trip["pnl"]))
    code, _, err = cli(capsys, "journal", "--trades", "--kind", "fill", *dd(te))
    assert code == ExitCode.USAGE and "--trades pairs fills" in err
    code, _, err = cli(capsys, "journal", "--csv", "--kind", "order", *dd(te))
    assert code == ExitCode.USAGE and "--csv writes fills" in err


def test_audit_shows_who_from_where_before_after_and_why(
    history: tuple[ThreadEngine, str], capsys: pytest.CaptureFixture[str]
) -> None:
    te, user = history
    code, out, err = cli(capsys, "audit", *dd(te))
    assert code == 0, err
    shown = lines(out)
    assert [line.split("  ")[2].split(":")[0] for line in shown] == [
        "approve ap-" + te.buy["id"].removeprefix("ap-"),  # type: ignore[attr-defined]
        "flatten " + te.buy["symbol"],  # type: ignore[attr-defined]
        "set_limit max_order_notional",
        "set_limit max_ordr",
        "pause rsi_reversion",
        "set_approval_mode ema_cross",
        "kill halt",
        "release",
        "kill_switch engine",
    ]
    assert f"{user} via socket:cli set-limit" in shown[2]
    assert 'max_order_notional: value: 10000.0 -> 5000.0  reason "smaller"' in shown[2]
    assert "REFUSED: unknown limit 'max_ordr'" in shown[3]
    assert "REFUSED: ema_cross has " in shown[5] and "more approval" in shown[5]
    assert "kill_switch.engaged: false -> true" in shown[6]
    assert "trading_state.state: ACTIVE -> HALTED" in shown[6]
    assert shown[8].startswith(shown[8][:25]) and "signal via signal  kill_switch" in shown[8]

    code, out, _ = cli(capsys, "audit", "-n", "2", "--json", *dd(te))
    recs = [json.loads(line) for line in lines(out)]
    assert [r["action"] for r in recs] == ["release", "kill_switch"]
    assert recs[0]["reason"] == "drill over" and recs[0]["client"] == "socket:cli release"
    assert {"what": "trading_state.state", "before": "HALTED", "after": "ACTIVE"} in recs[0][
        "changes"
    ]
    code, out, _ = cli(capsys, "audit", "--csv", "--operator", user, *dd(te))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 8 and rows[2]["changes"] == "value: 10000.0 -> 5000.0"
    assert json.loads(rows[2]["before"]) == {"value": 10000.0}
    code, out, err = cli(capsys, "audit", "--operator", "mallory", *dd(te))
    assert code == 0 and out == "" and "no audit records match" in err


def test_readers_work_on_a_stopped_engine(
    history: tuple[ThreadEngine, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    te, _ = history
    code, running, _ = cli(capsys, "audit", *dd(te))
    te.stop()
    code, stopped, err = cli(capsys, "audit", *dd(te))
    assert code == 0 and stopped == running, err
    code, out, _ = cli(capsys, "journal", "--kind", "session", "-n", "0", *dd(te))
    assert code == 0 and "session 1 started (paper, simulated market, paper broker)" in out
    assert "session 1 stopped" in lines(out)[-1]

    # The journal on read-only storage reads too.
    copy = tmp_path / "ro"
    shutil.copytree(te.data_dir, copy)
    for p in [copy, *copy.iterdir()]:
        p.chmod(0o500 if p.is_dir() else 0o400)
    try:
        code, out, err = cli(capsys, "audit", "--data-dir", str(copy))
        assert code == 0 and out == running, err
    finally:
        for p in [copy, *copy.iterdir()]:
            p.chmod(0o700)


# --------------------------------------------------------------------------- what goes wrong


def test_missing_or_empty_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("journal", "audit"):
        code, out, err = cli(capsys, cmd, "--data-dir", str(tmp_path / "nope"))
        assert code == ExitCode.FAILURE and out == "" and err.count("\n") == 1
        assert f"no data directory {tmp_path / 'nope'}; pass --data-dir DIR" in err
        code, out, err = cli(capsys, cmd, "--data-dir", str(tmp_path))
        assert code == ExitCode.FAILURE and err.count("\n") == 1
        assert f"no journal in {tmp_path} (no engine has run with it)" in err
        code, out, _ = cli(capsys, cmd, "--data-dir", str(tmp_path), "--json")
        assert code == ExitCode.FAILURE and json.loads(out)["ok"] is False

    async def empty() -> None:
        await (await Journal.open(tmp_path / JOURNAL_FILE)).close()

    asyncio.run(empty())
    code, out, err = cli(capsys, "journal", "--data-dir", str(tmp_path))
    assert code == ExitCode.OK and out == ""
    assert "no rows match (the journal holds no rows yet" in err
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / JOURNAL_FILE).write_text("not a database")
    code, out, err = cli(capsys, "audit", "--data-dir", str(tmp_path / "x"))
    assert code == ExitCode.FAILURE and "cannot read the journal" in err
    assert err.count("\n") == 1


def write_journal(path: Path, rows: list[tuple[str, int, dict[str, Any]]]) -> None:
    async def go() -> None:
        j = await Journal.open(path)
        for kind, ts, payload in rows:
            j.append(kind, ts, payload)
        await j.close()

    asyncio.run(go())


def audit_payload(i: int, user: str = "alice") -> dict[str, Any]:
    return {
        "ts_event": T0 + i * S,
        "action": "pause",
        "user": user,
        "client": "embedded",
        "args": {"strategy": "s", "reason": f"r{i}"},
        "before": {"paused": False},
        "after": {"paused": True},
        "reason": f"r{i}",
        "accepted": True,
        "message": "s paused",
    }


def test_an_edited_row_is_refused_not_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Decided: a reader never shows a row that does not match its hash. It stops with one
    line naming the row and pointing at `cockpit verify` (exit 1), and prints nothing."""
    n = int(__import__("os").environ.get("COCKPIT_HISTORY_ROWS", "3000"))
    rows = [("marks", T0 + i * S, {"equity": 1.0 * i, "marks": {}}) for i in range(n)]
    rows[10] = ("audit", T0 + 10 * S, audit_payload(10))
    rows[-20] = ("audit", T0 + (n - 20) * S, audit_payload(n - 20))
    path = tmp_path / JOURNAL_FILE
    write_journal(path, rows)
    d = ["--data-dir", str(tmp_path)]
    code, out, _ = cli(capsys, "audit", *d)
    assert code == 0 and len(lines(out)) == 2

    # Forge an old row: the operator changed from alice to bob.
    conn = sqlite3.connect(path)
    conn.execute("UPDATE journal SET payload = replace(payload, 'alice', 'bob') WHERE seq = 11")
    conn.commit()
    conn.close()
    code, out, err = cli(capsys, "audit", *d)
    assert code == ExitCode.FAILURE and out == "" and err.count("\n") == 1
    assert "the journal does not verify: row 11 does not match its hash (edited?)" in err
    assert "cockpit verify --data-dir" in err
    code, out, _ = cli(capsys, "audit", "--json", *d)
    assert json.loads(out)["ok"] is False
    # Streaming everything (-n 0): the rows before the bad one checked out and are printed,
    # then it stops there, saying so.
    code, out, err = cli(capsys, "journal", "--kind", "all", "-n", "0", *d)
    assert code == ExitCode.FAILURE and len(lines(out)) == 10 and "row 11" in err

    # The newest N stop reading once they have N: rows further back are not even read.
    code, out, err = cli(capsys, "journal", "--kind", "marks", "-n", "5", *d)
    assert code == ExitCode.OK and len(lines(out)) == 5, err
    code, out, _ = cli(capsys, "audit", "-n", "1", *d)
    assert code == ExitCode.OK and "alice" in out

    # A row deleted out of the middle breaks the link to the row before it.
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM journal WHERE seq = ?", (n - 5,))
    conn.commit()
    conn.close()
    code, out, err = cli(capsys, "journal", "--kind", "marks", "-n", "3", *d)
    assert code == ExitCode.OK  # the three newest are intact and adjacent
    code, out, err = cli(capsys, "journal", "--kind", "marks", "-n", "10", *d)
    # A gap among the rows read hides what was there (review-ap: an audit row deleted read as
    # a clean trail): it stops the reader as an edit does, naming where.
    assert code == ExitCode.FAILURE and out == "" and f"{n - 6} and {n - 4} are missing" in err


def test_newest_reads_newest_first_and_stops(tmp_path: Path) -> None:
    """The newest N of a kind in a long journal: the same answer as filtering everything."""
    rows: list[tuple[str, int, dict[str, Any]]] = []
    for i in range(2000):
        kind = "audit" if i % 97 == 0 else "marks"
        rows.append((kind, T0 + i * S, audit_payload(i) if kind == "audit" else {"i": i}))
    path = tmp_path / JOURNAL_FILE
    write_journal(path, rows)
    flt = RowFilter(kinds=("audit", "marks"), since_ns=T0 + 500 * S, until_ns=T0 + 1500 * S)
    everything = [r.seq for r in scan(path, flt)]
    assert [r.seq for r in newest(path, flt, 7)] == everything[-7:]
    assert len(everything) == 1000
    only = RowFilter(kinds=("audit",), operator="alice")
    assert [r.seq for r in newest(path, only, 3)] == [1747, 1844, 1941]


_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_FIELDS = [
    "fill",
    "decision",
    "outcome",
    "approval",
    "args",
    "before",
    "after",
    "change",
    "user",
    "by",
    "client",
    "what",
    "subject",
    "strategy_id",
    "symbol",
    "side",
    "qty",
    "price",
    "ts",
    "marks",
    "info",
    "session",
    "state",
    "accepted",
    "action",
]


@settings(
    max_examples=int(__import__("os").environ.get("COCKPIT_HISTORY_FUZZ", "25")), deadline=None
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(JOURNAL_KINDS),
            st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=6),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_readers_never_crash_on_odd_rows(rows: list[tuple[str, dict[str, Any]]]) -> None:
    """A chain re-hashed by a forger passes every row's own check: whatever the rows hold,
    the readers print or refuse in one line, never a traceback."""
    import contextlib
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_journal(Path(tmp) / JOURNAL_FILE, [(k, T0 + i, p) for i, (k, p) in enumerate(rows)])
        for argv in (
            ["journal", "--kind", "all", "-n", "0"],
            ["journal", "--kind", "all", "--json", "--strategy", "s"],
            ["journal", "--csv"],
            ["journal", "--trades"],
            ["journal", "--trades", "--csv", "--symbol", "x"],
            ["audit"],
            ["audit", "--json", "--operator", "x"],
            ["audit", "--csv"],
        ):
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                code = run_history(build_parser().parse_args([*argv, "--data-dir", tmp]))
            assert code == ExitCode.OK, argv
