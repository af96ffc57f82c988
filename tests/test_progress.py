"""A long backtest shows a progress bar on the terminal; a short one, a pipe or --json do not."""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import pytest

import cockpit.backtest_cli as backtest_cli
from cockpit.progress import TerminalProgress, bar
from tests.conftest import BARS_CSV, interrupt_when
from tests.test_backtest import cli


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_shows_done_total_rate_and_eta_and_is_erased_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    tty = Tty()
    meter = TerminalProgress("backtest", tty, unit="bars")
    meter.show(250_000, 1_000_000, 1.0)
    meter.show(1_000_000, 1_000_000, 4.0)  # the last one is always drawn
    meter.close()
    text = tty.getvalue()
    assert "backtest [######..................]  25%  250,000/1,000,000 bars  ETA 0:03" in text
    assert "250,000/s" in text and "100%" in text
    assert text.endswith("\r\x1b[K")
    assert bar(0, 0) == bar(1, 1) == "[########################] 100%"
    assert "elapsed 0:01" in text


def test_a_narrow_terminal_gets_a_line_that_never_wraps(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrapped line cannot be redrawn in place (the terminal fills with copies): the bar
    drops its tail parts, and a long label is elided in the middle, to fit the width."""
    monkeypatch.setenv("COLUMNS", "60")
    tty = Tty()
    meter = TerminalProgress("backtest", tty, unit="bars")
    meter.show(1_048_576, 2_999_000, 4.0)
    meter.write(
        "reading /a/very/long/path/to/some/folder/of/data/peer-3000000.csv ... elapsed 1:02"
    )
    lines = [x for x in tty.getvalue().split("\r\x1b[K") if x]
    assert lines and all(len(x) <= 59 for x in lines)
    assert lines[0].startswith("backtest [####........]  35%")
    assert "1,048,576/2,999,000 bars" in lines[0]
    assert lines[1].startswith("reading /a/very") and lines[1].endswith("... elapsed 1:02")


def test_nothing_before_the_delay_nor_on_a_pipe() -> None:
    tty = Tty()
    patient = TerminalProgress("backtest", tty, delay_s=60.0)
    patient.show(10, 100, 0.5)
    with patient.waiting("reading bars.csv"):
        time.sleep(0.05)
    patient.close()
    assert tty.getvalue() == ""
    pipe = io.StringIO()
    quiet = TerminalProgress("backtest", pipe)
    quiet.show(10, 100, 0.5)
    with quiet.waiting("reading bars.csv"):
        pass
    quiet.close()
    assert pipe.getvalue() == ""


def test_a_long_read_says_what_it_is_reading() -> None:
    tty = Tty()
    meter = TerminalProgress("backtest", tty)
    with meter.waiting("reading bars.csv"):
        time.sleep(0.3)
    text = tty.getvalue()
    assert "reading bars.csv ... elapsed 0:00" in text
    assert text.endswith("\r\x1b[K")  # the line is gone when the read is done


@pytest.mark.parametrize("json_out", [False, True])
def test_cli_backtest_draws_the_bar_on_a_terminal_past_the_delay(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], json_out: bool
) -> None:
    """The delay is what keeps a quick run clean; set to 0 here, the shipped data's run draws
    the bar on stderr and the report (or the JSON) on stdout is untouched by it."""
    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    monkeypatch.setattr(backtest_cli, "PROGRESS_AFTER_S", 0.0)
    extra = ["--json"] if json_out else ["--no-chart"]
    assert cli("--data", str(BARS_CSV), "--strategy", "ema_cross", "--no-cache", *extra) == 0
    out = capsys.readouterr().out
    err = tty.getvalue()
    assert "backtest [" in err and "bars" in err and "100%" in err
    assert err.endswith("\r\x1b[K")
    assert "\x1b" not in out and "[#" not in out
    if json_out:
        import json

        assert json.loads(out)["run"]["events"] > 0


def test_cli_backtest_on_a_pipe_writes_nothing_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli("--data", str(BARS_CSV), "--strategy", "ema_cross", "--no-chart") == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "Result" in captured.out


def test_ctrl_c_mid_backtest_says_cancelled_exits_130_and_prints_no_report(
    tmp_path: Path,
) -> None:
    """As a sweep does: one line, the shell's code for an interrupted run, no partial report
    and no traceback (it exited 1 without a word)."""
    import subprocess

    import numpy as np

    n = 400_000
    rng = np.random.default_rng(7)
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.001, n)))
    ms = 1_704_067_200_000 + np.arange(n, dtype=np.int64) * 60_000
    body = np.column_stack([ms, close, close * 1.001, close * 0.999, close, np.full(n, 5e6)])
    csv = tmp_path / "bars.csv"
    np.savetxt(csv, body, fmt=["%d", "%.2f", "%.2f", "%.2f", "%.2f", "%.1f"], delimiter=",",
               header="timestamp,open,high,low,close,volume", comments="")  # fmt: skip
    env = dict(os.environ, COCKPIT_CACHE_DIR=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "cockpit", "backtest", "--data", str(csv)]
    cmd += ["--strategy", "ema_cross", "--fill", "live", "--no-breakers", "--no-chart"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    entries = tmp_path / "cache" / "entries"
    started: list[float] = []

    def in_the_run() -> bool:  # the file read and cached, then 0.3 s into the run (>= 1 s long)
        if not started and list(entries.glob("*.npz")):
            started.append(time.monotonic())
        return bool(started) and time.monotonic() - started[0] > 0.3

    out, err = interrupt_when(proc, in_the_run, "backtest")
    assert proc.returncode == 130, err.decode()[-2000:]
    assert err.decode().strip().endswith("backtest cancelled") and b"Traceback" not in err
    assert b"Result" not in out
