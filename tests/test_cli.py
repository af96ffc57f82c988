"""The CLI as a user meets it: exit codes, one-line errors, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def run(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess (``python -m cockpit``), as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "cockpit", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=timeout,
    )


def test_config_check_ok_on_default() -> None:
    result = run("config", "check")
    assert result.returncode == 0
    assert result.stdout.strip() == "ok"


def test_config_check_lists_each_problem_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[risk]\nmax_order_notional = -5\nmax_open_positons = 3\n[engine]\nmode = "yolo"\n'
    )
    result = run("config", "check", "--config", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3
    assert all(line.startswith("config error: ") for line in lines)
    assert any("risk.max_order_notional: got -5" in line for line in lines)
    assert any("risk.max_open_positons: unknown key" in line for line in lines)
    assert any("engine.mode: got 'yolo'" in line for line in lines)
    assert "Traceback" not in result.stderr


def test_bad_strategy_params_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[strategies]]\nid = "e"\nkind = "ema_cross"\nsymbols = ["BTC/USDT"]\n'
        "params = { fast = 30, slow = 10 }\n"
    )
    result = run("config", "check", "--config", str(bad))
    assert result.returncode == 2
    assert "strategies[0].params" in result.stderr
    assert "Traceback" not in result.stderr


def test_engine_with_bad_config_gives_same_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[risk]\nmax_order_notional = -5\n")
    result = run("engine", "--config", str(bad), "--for", "1", "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert result.stderr.startswith("config error: risk.max_order_notional: got -5")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()


def test_missing_config_file(tmp_path: Path) -> None:
    result = run("config", "check", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "no such config file" in result.stderr


def test_bad_argument_is_one_line_and_exit_2() -> None:
    result = run("engine", "--for", "soon")
    assert result.returncode == 2
    assert "'soon' is not a number of seconds" in result.stderr
    assert "Traceback" not in result.stderr


def test_verify_without_journal(tmp_path: Path) -> None:
    result = run("verify", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "no journal at" in result.stderr


def loaded_by(parse: str, *modules: str) -> str:
    """Which of ``modules`` a fresh interpreter has imported once it ran ``parse`` (code using
    ``build_parser``), comma-separated: start-up cost a user pays on every command."""
    code = (
        "import sys\n"
        "from cockpit.cli import build_parser\n"
        f"{parse}\n"
        f"print(','.join(m for m in {modules!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_quick_commands_load_no_exchange_or_ui_library() -> None:
    """`cockpit status` and friends start fast: building the CLI imports no ccxt, pandas,
    numpy or textual."""
    assert (
        loaded_by("build_parser().parse_args(['status'])", "ccxt", "pandas", "numpy", "textual")
        == ""
    )


def test_a_research_command_builds_only_its_own_parser() -> None:
    """`cockpit backtest` starts without the operator commands' modules (socket client, control
    protocol, journal readers), and `cockpit --help` still lists every command."""
    parse = "build_parser('backtest').parse_args(['backtest', '--data', 'x.csv'])"
    assert loaded_by(parse, "cockpit.socket_client", "engine.control", "cockpit.oneshot") == ""
    listed = run("--help").stdout
    for command in ("backtest", "sweep", "data", "status", "kill", "journal", "venues", "alerts"):
        assert command in listed
    bad = run("backtest", "--data", "x.csv", "--no-such-option")
    assert bad.returncode == 2
    assert "unrecognized arguments: --no-such-option" in bad.stderr


def test_venues_check_without_venues_says_how_to_add_one() -> None:
    result = run("venues", "check")
    assert result.returncode == 1
    assert "add a [venues.NAME] section" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_resolve_with_a_bad_action_is_one_line_and_exit_2() -> None:
    result = run("resolve", "binance", "880011", "nuke", "--reason", "x")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "invalid choice: 'nuke'" in result.stderr
    assert "adopt" in result.stderr and "Traceback" not in result.stderr
    result = run("resolve", "binance", "880011", "cancel")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--reason" in result.stderr


def test_engine_refuses_a_socket_directory_others_can_enter_before_writing(tmp_path: Path) -> None:
    """The socket check ran after the engine started: a session was journaled, then refused."""
    data = tmp_path / "open"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    result = run("engine", "--data-dir", str(data), "--socket", str(data / "e.sock"), "--for", "1")
    assert result.returncode == 2 and "chmod 700" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert list(data.iterdir()) == []  # no journal, no lock file: nothing was written


@pytest.mark.parametrize("host", ["", "   ", "127.0.0.1 x", "a\tb"])
def test_a_metrics_host_that_is_no_address_is_refused_before_the_engine_starts(host: str) -> None:
    """`--metrics-host ""` listened on every interface (the empty address means "any" to the
    socket layer): the metrics, readable by whoever reached the port, with a garbled warning."""
    result = run("engine", "--metrics", "0", "--metrics-host", host, "--for", "1")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--metrics-host" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_json_line_of_the_headless_engine_stamps_ts_one_way(tmp_path: Path) -> None:
    """The summary lines said ``2026-12-08T00:56:05Z`` and the event lines
    ``2026-12-08T00:56:05.123+00:00``: a consumer parsing one format failed on the other.
    Every line now stamps as the event lines do (milliseconds, ``+00:00``)."""
    import json
    import re

    data = tmp_path / "d"
    result = run(
        "engine", "--data-dir", str(data), "--socket", str(tmp_path / "e.sock"), "--for", "2"
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    events = {line["event"] for line in lines}
    assert "summary" in events and len(events) > 1, events  # the final summary and others
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")
    assert [line["ts"] for line in lines if not stamp.fullmatch(line["ts"])] == []
    # And the session-stopped line says why it stopped (it gave the counters alone).
    (stopped,) = [x for x in lines if x["event"] == "session" and x["state"] == "stopped"]
    assert stopped["info"]["why"] == "ran for the 2 s asked"


def test_the_session_stopped_row_names_the_signal_that_stopped_the_engine(tmp_path: Path) -> None:
    """An operator reading the journal after the fact saw "stopped" and counters: a SIGTERM
    (systemctl stop), a Ctrl-C and a run out of data looked the same."""
    from engine.journal import read_rows
    from tests.test_review_ops import _engine, _stop, _wait_for

    data, sock = tmp_path / "d", tmp_path / "e.sock"
    proc = _engine(data, sock, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(sock, proc)
    assert _stop(proc) == 0
    rows = list(read_rows(data / "journal.sqlite", kinds=["session"]))
    assert [r.payload["state"] for r in rows] == ["started", "stopped"]
    assert rows[-1].payload["info"]["why"] == "SIGTERM received"
