"""Every operator command the engine has is a one-shot CLI command: rearm, flatten, set-limit and
approval-mode against a real engine over the control socket, with their refusals, usage errors
and exit codes, and the messages name only commands that exist."""

from __future__ import annotations

import json
import shlex
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.test_control_support as support
from cockpit import oneshot
from cockpit.cli import build_parser
from cockpit.history_cli import run_history
from cockpit.oneshot import run_oneshot
from engine.commands import COMMANDS
from engine.vocabulary import LIMIT_NAMES, ExitCode
from tests.test_control_support import ThreadEngine, short_dir

GRADUATION = 2  # safety.approval.auto_after_approved in these engines


def _engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, breakers: dict[str, Any]
) -> Iterator[ThreadEngine]:
    """An idle engine (clock frozen) with approvals waiting; ``breakers`` lays over the
    config's safety.breakers."""
    make = support.approve_config
    safety = {
        "approval": {"ttl_s": 3600.0, "auto_after_approved": GRADUATION},
        "breakers": breakers,
    }
    monkeypatch.setattr(support, "approve_config", lambda d, **kw: make(d, safety=safety, **kw))
    with short_dir() as sd, ThreadEngine(tmp_path / "data", sd / "e.sock") as t:
        t.advance(3000)
        yield t


@pytest.fixture
def te(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ThreadEngine]:
    yield from _engine(monkeypatch, tmp_path, {})


@pytest.fixture
def tripped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ThreadEngine]:
    """Every strategy paused by its signal_rate breaker (a baseline of one signal an hour)."""
    yield from _engine(
        monkeypatch, tmp_path, {"baseline_signals_per_hour": 1.0, "signal_rate_multiple": 2.0}
    )


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run_oneshot(build_parser().parse_args(list(argv)))
    out, err = capsys.readouterr()
    return code, out, err


def usage(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """An argument error: argparse exits 2 with one line on stderr."""
    with pytest.raises(SystemExit) as exc:
        run_oneshot(build_parser().parse_args(list(argv)))
    assert exc.value.code == ExitCode.USAGE
    return capsys.readouterr().err


def sock(te: ThreadEngine) -> list[str]:
    return ["--socket", str(te.socket)]


def position(te: ThreadEngine, symbol: str) -> float:
    snap = te.call(lambda: te.engine.snapshot(trace=0, curve=0))
    return sum(p["qty"] for p in snap["positions"] if p["symbol"] == symbol)


def audit_rows(te: ThreadEngine, action: str) -> list[dict[str, Any]]:
    from engine.journal import read_rows

    te.call(lambda: None)  # let the loop run once: the reply came after the commit
    rows = read_rows(te.data_dir / "journal.sqlite", kinds=["audit"])
    return [r.payload for r in rows if r.payload["action"] == action]


def test_every_engine_command_has_a_cli_command() -> None:
    """The engine's command table and the CLI agree: a new engine command needs a CLI one."""
    cli_for = {
        "kill": "kill",
        "release": "release",
        "pause": "pause",
        "resume": "resume",
        "approve": "approve",
        "reject": "reject",
        "flatten": "flatten",
        "set_limit": "set-limit",
        "set_approval_mode": "approval-mode",
        "rearm": "rearm",
        "resolve": "resolve",
    }
    assert set(cli_for) == set(COMMANDS)
    assert set(cli_for.values()) <= set(oneshot.ONESHOT_COMMANDS)


def test_set_limit_shows_before_and_after_and_refuses_what_it_cannot_set(
    te: ThreadEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "set-limit", "max_order_notional", "5000", "--reason", "smaller", *sock(te)
    )
    assert code == ExitCode.OK, err
    assert out.strip() == "max_order_notional: 10000.0 -> 5000.0"
    assert te.call(lambda: te.engine.core.limits.max_order_notional) == 5000.0
    row = audit_rows(te, "set_limit")[-1]
    assert (row["before"], row["after"], row["reason"]) == (
        {"value": 10000.0},
        {"value": 5000.0},
        "smaller",
    )

    code, out, _ = run(
        capsys, "set-limit", "daily_loss_limit_pct", "4", "--reason", "tight", "--json", *sock(te)
    )
    reply = json.loads(out)
    assert code == ExitCode.OK and reply["ok"]
    assert (reply["limit"], reply["before"], reply["after"]) == ("daily_loss_limit_pct", 5.0, 4.0)

    # The boundary of a limit's range: exactly 1 is a fraction, just above it is not.
    code, out, _ = run(
        capsys, "set-limit", "max_position_fraction", "1", "--reason", "edge", *sock(te)
    )
    assert code == ExitCode.OK and out.strip() == "max_position_fraction: 0.1 -> 1.0"
    code, out, err = run(
        capsys, "set-limit", "max_position_fraction", "1.001", "--reason", "over", *sock(te)
    )
    assert code == ExitCode.FAILURE and out == ""
    assert err.count("\n") == 1 and "max_position_fraction: got 1.001" in err
    assert "max_position_fraction: max_position_fraction" not in err  # said once

    # An unknown name: one line naming every limit there is.
    code, _, err = run(capsys, "set-limit", "max_ordr", "5", "--reason", "typo", *sock(te))
    assert code == ExitCode.FAILURE and err.count("\n") == 1
    assert "unknown limit 'max_ordr'" in err
    assert all(name in err for name in LIMIT_NAMES)
    code, _, err = run(capsys, "set-limit", "max_open_positions", "2.5", "--reason", "x", *sock(te))
    assert code == ExitCode.FAILURE and "fractional" in err

    # Usage errors never reach the engine: a value that is not a finite number, no reason.
    for value in ("abc", "nan", "inf", "1e999"):
        err = usage(capsys, "set-limit", "stale_quote_s", value, "--reason", "x", *sock(te))
        assert "number" in err and err.count("\n") == 1
    assert "--reason" in usage(capsys, "set-limit", "stale_quote_s", "3", *sock(te))
    code, _, err = run(capsys, "set-limit", "stale_quote_s", "3", "--reason", " ", *sock(te))
    assert code == ExitCode.USAGE and "reason is required" in err
    assert len(audit_rows(te, "set_limit")) == 6  # refusals are audited; usage errors never sent


def test_approval_mode_graduates_at_exactly_the_configured_count(
    te: ThreadEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "approvals", "--json", *sock(te))
    pending = json.loads(out)
    sid, n = Counter(a["strategy"] for a in pending).most_common(1)[0]
    assert n >= GRADUATION, pending
    mine = [a for a in pending if a["strategy"] == sid]
    switch = ["approval-mode", sid, "auto", "--reason", "it behaves", *sock(te)]

    for approved in range(GRADUATION):
        left = GRADUATION - approved
        code, out, err = run(capsys, *switch)
        assert code == ExitCode.FAILURE and out == ""
        more = f"{left} more approval{'s' if left != 1 else ''} to go"
        assert f"auto needs {GRADUATION} ({more})" in err, err
        code, _, err = run(capsys, "approve", mine[approved]["id"], *sock(te))
        assert code == ExitCode.OK, err

    code, out, err = run(capsys, *switch, "--json")
    reply = json.loads(out)
    assert code == ExitCode.OK and reply["ok"], err
    assert reply["message"] == f"{sid}: approval approve -> auto"
    assert (reply["before"], reply["after"]) == ("approve", "auto")
    code, out, _ = run(capsys, "status", *sock(te))
    assert f"{sid} [auto]" in out
    code, out, _ = run(capsys, "approval-mode", sid, "approve", "--reason", "back", *sock(te))
    assert code == ExitCode.OK and out.strip() == f"{sid}: approval auto -> approve"
    row = audit_rows(te, "set_approval_mode")[-1]
    assert (row["before"], row["after"], row["reason"]) == (
        {"mode": "auto"},
        {"mode": "approve"},
        "back",
    )

    code, _, err = run(capsys, "approval-mode", "nope", "auto", "--reason", "x", *sock(te))
    assert code == ExitCode.FAILURE and "unknown strategy 'nope'; known:" in err
    assert "'approve', 'auto'" in usage(capsys, "approval-mode", sid, "manual", "--reason", "x")
    assert "--reason" in usage(capsys, "approval-mode", sid, "auto")


def test_resume_names_the_rearm_command_and_rearm_releases_the_breaker(
    tripped: ThreadEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    te = tripped
    code, _, err = run(capsys, "resume", "ema_cross", *sock(te))
    assert code == ExitCode.FAILURE and "signal_rate" in err
    # The command the refusal names exists and parses as written.
    suggested = err.split("cockpit rearm ", 1)[1].split(")")[0].replace("TEXT", "reviewed")
    argv = ["rearm", *shlex.split(suggested), *sock(te)]
    assert build_parser().parse_args(argv).oneshot == "rearm"

    code, out, err = run(capsys, *argv)
    assert code == ExitCode.OK, err
    assert out.strip() == "re-armed: signal_rate (ema_cross)"
    code, out, _ = run(capsys, "status", "--json", *sock(te))
    strategies = {s["id"]: s for s in json.loads(out)["strategies"]}
    assert strategies["ema_cross"]["paused"] is False
    assert strategies["rsi_reversion"]["paused"] is True
    row = audit_rows(te, "rearm")[-1]
    assert row["accepted"] and row["before"] == {"signal_rate (ema_cross)": "tripped"}
    assert row["after"] == {"signal_rate (ema_cross)": "armed"}

    # Nothing left to re-arm there: refused, naming what is still tripped.
    code, _, err = run(capsys, "rearm", "ema_cross", "--reason", "again", *sock(te))
    assert code == ExitCode.FAILURE
    assert "no breaker of ema_cross is tripped; tripped now: signal_rate (rsi_reversion)" in err
    code, _, err = run(capsys, "rearm", "rsi_reversion", "slippage", "--reason", "x", *sock(te))
    assert code == ExitCode.FAILURE and "breaker slippage (rsi_reversion) is not tripped" in err
    # A name that is no breaker is told so (it read "is not tripped", as if it were one).
    code, _, err = run(capsys, "rearm", "rsi_reversion", "slipage", "--reason", "x", *sock(te))
    assert code == ExitCode.FAILURE and "no breaker is named 'slipage'" in err
    assert "consecutive_rejects" in err and "signal_rate (rsi_reversion)" in err
    # One breaker by name.
    code, out, _ = run(
        capsys, "rearm", "rsi_reversion", "signal_rate", "--reason", "ok", "--json", *sock(te)
    )
    assert code == ExitCode.OK and json.loads(out)["message"].startswith("re-armed: signal_rate")
    assert "--reason" in usage(capsys, "rearm", "donchian_breakout", *sock(te))

    # The audit trail: one record per command; a re-arm's resume is its consequence, not an
    # action of its own.
    args = build_parser().parse_args(["audit", "--json", "--data-dir", str(te.data_dir)])
    assert run_history(args) == ExitCode.OK
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["action"], r["accepted"]) for r in records] == [
        ("resume", False),
        ("rearm", True),
        ("rearm", False),
        ("rearm", False),
        ("rearm", False),
        ("rearm", True),
    ]
    assert records[1]["changes"] == [
        {"what": "signal_rate (ema_cross)", "before": "tripped", "after": "armed"}
    ]


def test_flatten_one_symbol_or_all(te: ThreadEngine, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["BTC/USDT", "--all"]):
        code, _, err = run(capsys, "flatten", *argv, "--reason", "x", *sock(te))
        assert code == ExitCode.USAGE and "one SYMBOL, or --all" in err
    assert "--reason" in usage(capsys, "flatten", "--all", *sock(te))
    code, _, err = run(capsys, "flatten", "DOGE/USDT", "--reason", "x", *sock(te))
    assert code == ExitCode.FAILURE and "unknown symbol 'DOGE/USDT'; known: BTC/USDT" in err

    code, out, _ = run(capsys, "approvals", "--json", *sock(te))
    buy = next(a for a in json.loads(out) if a["side"] == "buy")
    symbol = buy["symbol"]
    code, out, _ = run(capsys, "flatten", symbol, "--reason", "flat", *sock(te))
    assert code == ExitCode.OK and out.strip() == f"nothing to flatten on {symbol}"
    code, _, err = run(capsys, "approve", buy["id"], *sock(te))
    assert code == ExitCode.OK, err
    te.advance(50)  # the paper broker fills it
    assert position(te, symbol) > 0

    code, out, err = run(capsys, "flatten", symbol, "--reason", "flat", "--json", *sock(te))
    reply = json.loads(out)
    assert code == ExitCode.OK and reply["ok"], err
    assert reply["message"] == "flatten: 1 order(s) submitted"
    te.advance(50)
    assert position(te, symbol) == 0
    code, out, _ = run(capsys, "flatten", "--all", "--reason", "end of day", *sock(te))
    assert code == ExitCode.OK and out.strip() == "nothing to flatten"
    assert [r["args"]["symbol"] for r in audit_rows(te, "flatten")] == [
        "DOGE/USDT",
        symbol,
        symbol,
        None,
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["rearm", "ema_cross", "--reason", "x"],
        ["flatten", "--all", "--reason", "x"],
        ["set-limit", "stale_quote_s", "3", "--reason", "x"],
        ["approval-mode", "ema_cross", "auto", "--reason", "x"],
    ],
)
def test_new_commands_exit_3_without_an_engine(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with short_dir() as sd:
        code, out, err = run(capsys, *argv, "--socket", str(sd / "none.sock"))
        assert code == ExitCode.UNREACHABLE and out == "" and "engine not reachable" in err
        code, out, _ = run(capsys, *argv, "--json", "--socket", str(sd / "none.sock"))
        assert code == ExitCode.UNREACHABLE and json.loads(out)["ok"] is False
