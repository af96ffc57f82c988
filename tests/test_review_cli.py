"""Every command against hostile arguments: the error is one short line, escaped for a terminal.

An argument is echoed back in the error that names it; an escape sequence in it (``ESC [2J``
clears the screen), a carriage return or a right-to-left override would then rewrite or reverse
what the user reads, and a 100 KB value would bury the fix at the line's end. A config path
that is a pipe nobody writes to must not hang the command, and a data directory that is a loop
of links is named as such (bad usage), not "File exists".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cockpit.cli import main
from cockpit.errortext import ERROR_LINE_CHARS, shown

# The raw characters that must never reach the terminal from an echoed argument.
ESC = "\x1b[2J\x1b[31m"
RTL = "\u202e"
HOSTILE = f"{ESC}x{RTL}y\r\x07"
RAW = ("\x1b", "\u202e", "\r", "\x07")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["config", "check", "--config", HOSTILE], 2),
        (["verify", "--data-dir", HOSTILE], 1),
        (["status", "--socket", HOSTILE], 3),
        (["approve", "1", "--socket", HOSTILE], 3),
        (["journal", "--data-dir", HOSTILE], 1),
        (["audit", "--data-dir", HOSTILE], 1),
        (["data", "verify", HOSTILE], 2),
        (["data", "list", "--data-dir", HOSTILE], 0),  # nothing downloaded: a note
        (["backtest", "--data", HOSTILE], 2),
        (["venues", "check", "--config", HOSTILE], 2),
        (["alerts", "test", "--config", HOSTILE], 2),
        (["attach", "--fleet", HOSTILE], 2),
        (["status", f"--bogus{HOSTILE}"], 2),  # argparse echoes unknown arguments as typed
        ([f"bogus{HOSTILE}"], 2),
    ],
)
def test_an_argument_echoed_in_an_error_is_escaped(
    argv: list[str],
    code: int,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths land here, never in the repository
    got, out, err = _run(argv, capsys)
    assert got == code, err
    for raw in RAW:
        assert raw not in err and raw not in out, (argv, err)
    assert "\\x1b[2J" in err  # named, escaped: the user still sees what was typed
    assert "Traceback" not in err


def test_the_kill_fallback_line_escapes_the_data_dir(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(["kill", "--reason", "test", "--data-dir", HOSTILE], capsys)
    assert code == 3
    for raw in RAW:
        assert raw not in err + out
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "fix"),
    [
        (["config", "check", "--config", "A" * 100_000], "File name too long"),
        (["config", "check", "--profile", "A" * 100_000], "is not a profile name"),
        (["status", "--socket", "A" * 100_000], "--socket PATH"),
        (["status", "--timeout", "A" * 100_000], "see cockpit status --help"),
        (["backtest", "--data", "A" * 100_000], "cannot open"),
    ],
)
def test_a_100_kb_argument_is_named_by_its_ends_keeping_the_fix(
    argv: list[str], fix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(argv, capsys)
    assert code in (1, 2, 3)
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert len(lines[0]) < ERROR_LINE_CHARS + 100
    assert fix in lines[0]


def test_the_engines_own_long_error_lines_reach_the_user_whole() -> None:
    """The cut first came at 400 characters and took the middle out of a journal refusal under
    a deep data dir ("the journal does not...restored or sent"): the part saying what is wrong.
    The engine's own lines stay whole; only an echoed argument of kilobytes is cut."""
    data = "/tmp/pytest-of-someone/pytest-2025/popen-gw1/test_a_wal_left_without_its_jo0/data"
    line = (
        f"cannot open the journal in {data}: the journal does not verify (row 1: missing; "
        f"{data}/journal.sqlite-wal is there without journal.sqlite (98480 bytes): rows of a "
        "journal whose file is gone; put journal.sqlite back, or move journal.sqlite-wal away "
        "too to start afresh); nothing was restored or sent: see `cockpit verify --data-dir "
        f"{data}`"
    )
    assert len(line) > 400 and shown(line) == line


@pytest.mark.parametrize("over", [0, 1])
def test_an_error_line_is_cut_only_past_its_limit(over: int) -> None:
    length = ERROR_LINE_CHARS + over
    line = "x" * length
    assert (shown(line) == line) is (length == ERROR_LINE_CHARS)
    assert shown(f"a\n{line}").startswith("a\n")  # a list of problems keeps its lines


def _cockpit(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run(
        [sys.executable, "-m", "cockpit", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("command", [["config", "check"], ["verify"]])
def test_a_config_that_is_a_pipe_nobody_writes_is_refused_not_waited_on(
    command: list[str], tmp_path: Path
) -> None:
    fifo = tmp_path / "cfg.toml"
    os.mkfifo(fifo)
    try:
        done = _cockpit([*command, "--config", str(fifo)], tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail("the command waited on a pipe nobody writes to")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"config error: {fifo}: not a regular file (a pipe, device or socket); pass --config "
        "PATH to a TOML file"
    ]


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_config_that_is_a_device_is_refused_by_what_it_is(
    device: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(["config", "check", "--config", device], capsys)
    assert code == 2
    assert "not a regular file" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["loop", "dangling"])
def test_a_data_dir_that_is_a_link_to_nothing_is_bad_usage_by_name(
    kind: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    link = tmp_path / "dd"
    link.symlink_to(link if kind == "loop" else tmp_path / "gone")
    code, _, err = _run(["engine", "--for", "1", "--data-dir", str(link)], capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        f"--data-dir: {str(link)!r} is a link to nothing (a dangling link or a loop of links); "
        "name a directory"
    ]


NOT_UTF8 = os.fsdecode(b"desk\xff")  # what a Latin-1 terminal hands over for a typed byte


@pytest.mark.parametrize(
    "argv",
    [
        ["journal", "--operator", NOT_UTF8],
        ["journal", "--strategy", NOT_UTF8],
        ["journal", "--symbol", NOT_UTF8],
        ["journal", "--venue", NOT_UTF8],
        ["audit", "--operator", NOT_UTF8],
    ],
)
def test_a_journal_filter_that_is_not_utf8_is_bad_usage_not_an_unexpected_error(
    argv: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "journal.sqlite").write_bytes(b"")
    code, _, err = _run([*argv, "--data-dir", str(tmp_path)], capsys)
    assert code == 2
    assert "is not UTF-8 text" in err and "unexpected" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["journal", "audit"])
def test_a_data_dir_named_past_the_file_system_limit_is_one_line(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run([command, "--data-dir", "A" * 5000], capsys)
    assert code == 1
    assert err.strip().endswith("File name too long")
    assert "unexpected" not in err and len(err.strip().splitlines()) == 1


def _bars(tmp_path: Path) -> Path:
    bars = tmp_path / "bars.csv"
    rows = [
        f"2024-01-01T00:{i:02d}:00Z,{100 + i},{101 + i},{99 + i},{100 + i},9" for i in range(40)
    ]
    bars.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    return bars


BACKTEST = ["--strategy", "ema_cross", "--param", "fast=3", "--param", "slow=8", "--warmup", "0"]


def test_a_backtest_under_an_ascii_locale_prints_its_report_escaped_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LC_ALL=C`` without UTF-8 coercion: the chart's box characters cannot be encoded."""
    import io

    out, err = io.BytesIO(), io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out, encoding="ascii"))
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(err, encoding="ascii"))
    code = main(["backtest", "--data", str(_bars(tmp_path)), *BACKTEST, "--no-cache"])
    sys.stdout.flush()
    sys.stderr.flush()
    assert code == 0, err.getvalue()
    assert b"max drawdown" in out.getvalue() and b"\\u25" in out.getvalue()  # the chart, escaped
    assert b"unexpected" not in err.getvalue()


def test_a_trades_file_that_is_a_pipe_nothing_reads_is_refused_before_the_run(
    tmp_path: Path,
) -> None:
    """It was accepted, and the finished run then waited for ever to write its fills."""
    fifo = tmp_path / "fills"
    os.mkfifo(fifo)
    argv = ["backtest", "--data", str(_bars(tmp_path)), *BACKTEST, "--trades", str(fifo)]
    try:
        done = _cockpit(argv, tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail("the backtest waited on a pipe nothing reads")
    assert done.returncode == 2
    assert "is a pipe nothing reads; start its reader first or name a file" in done.stderr


def test_a_trades_file_behind_a_loop_of_links_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = tmp_path / "fills.csv"
    loop.symlink_to(loop)
    argv = ["backtest", "--data", str(_bars(tmp_path)), *BACKTEST, "--trades", str(loop)]
    code, out, err = _run([*argv, "--no-cache", "--no-chart"], capsys)
    assert code == 2 and out == ""  # refused before the run, not after its report
    assert "Too many levels of symbolic links" in err


def _shell(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), PY=sys.executable)
    return subprocess.run(
        ["sh", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(("argv", "code"), [("config check", 0), ("verify --data-dir .", 1)])
def test_a_command_with_stdout_closed_keeps_its_exit_code_without_a_traceback(
    argv: str, code: int, tmp_path: Path
) -> None:
    done = _shell(f'"$PY" -m cockpit {argv} >&- <&-', tmp_path)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 1


def test_output_to_a_full_disk_is_one_line_not_an_unexpected_error(tmp_path: Path) -> None:
    done = _shell('"$PY" -m cockpit config check > /dev/full', tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "cockpit: cannot write the output (No space left on device); it is incomplete"
    ]


@pytest.mark.parametrize(
    "argv",
    [["data", "list", "--data-dir"], ["data", "verify"], ["attach", "--fleet"]],
)
def test_a_path_named_past_the_file_system_limit_is_bad_usage_in_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run([*argv, "A" * 5000], capsys)
    assert code == 2
    assert "unexpected" not in err and err.strip().endswith(": File name too long")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("symbol", ["", "   ", f"BTC{ESC}", f"BTC{RTL}USDT", "BTC USDT"])
def test_a_backtest_symbol_that_would_print_blank_or_restyle_the_report_is_refused(
    symbol: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was printed as given in every line of the report, escape sequences and all."""
    argv = ["backtest", "--data", str(_bars(tmp_path)), *BACKTEST, "--symbol", symbol]
    code, out, err = _run([*argv, "--no-cache", "--no-chart"], capsys)
    assert code == 2 and out == ""
    assert "argument --symbol:" in err and "\x1b" not in err and RTL not in err


def test_a_backtest_symbol_that_is_a_symbol_is_taken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["backtest", "--data", str(_bars(tmp_path)), *BACKTEST, "--symbol", " ETH/USDT "]
    code, out, _ = _run([*argv, "--no-cache", "--no-chart"], capsys)
    assert code == 0 and "ETH/USDT" in out


def test_verify_names_a_data_dir_with_a_control_character_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from engine.journal import Journal

    async def a_journal(path: Path) -> None:
        await (await Journal.open(path)).close()

    data = tmp_path / "desk\rX"
    data.mkdir()
    asyncio.run(a_journal(data / "journal.sqlite"))
    code, out, _ = _run(["verify", "--data-dir", str(data)], capsys)
    assert code == 0 and "\r" not in out and "desk\\rX" in out
