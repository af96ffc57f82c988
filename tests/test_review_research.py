"""Adversarial review of the research promises (`cockpit backtest` of one strategy or a whole
config, `cockpit sweep`, walk-forward): each test pins a hole found by attacking what the README
and docs/research.md promise, failing before its fix. Data is a few thousand synthetic bars;
every run is bounded."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from cockpit.cli import main as cli_main

T0 = dt.datetime(2024, 1, 1)


def write_bars(path: Path, n: int = 600, minutes: int = 1) -> Path:
    """``n`` bars ``minutes`` apart: a slow wave with a drift, every bar well formed."""
    t = np.arange(n)
    close = 100.0 + 10.0 * np.sin(t / 30.0) + t * 0.001
    open_ = np.concatenate([[100.0], close[:-1]])
    high, low = np.maximum(open_, close) + 0.5, np.minimum(open_, close) - 0.5
    rows = ["timestamp,open,high,low,close,volume"]
    for i in range(n):
        when = (T0 + dt.timedelta(minutes=i * minutes)).isoformat(sep=" ")
        rows.append(f"{when},{open_[i]},{high[i]},{low[i]},{close[i]},1000")
    path.write_text("\n".join(rows) + "\n")
    return path


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 2) -> str:
    rc = cli_main(argv)
    err = capsys.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


# ------------------------------------------------------------------ a bar length the data lacks


@pytest.mark.parametrize("command", ["backtest", "sweep"])
@pytest.mark.parametrize("timeframe", ["300", "30"])
def test_a_timeframe_the_bars_do_not_have_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, timeframe: str
) -> None:
    """``--timeframe 300`` on 1-minute bars took each as a 5-minute bar: its close (the fill of
    ``--fill close``, the equity sample) stamped four bars after the next bar opened, and the
    Sharpe annualised per 5 minutes (26.5 instead of 205 for --timeframe 3600); ``30`` gave
    every bar a gap after it and a Sharpe sqrt(2) too high. The engine does not resample: a
    bar length the bars do not have is one line, exit 2; their own length still runs."""
    data = write_bars(tmp_path / "bars.csv")
    argv = [command, "--strategy", "ema_cross", "--data", str(data), "--no-cache", "--json"]
    if command == "sweep":
        argv += ["--param", "fast=5,10", "--param", "slow=30", "--serial"]
    err = one_line_error(capsys, [*argv, "--timeframe", timeframe])
    assert f"--timeframe {timeframe}: the bars in" in err and "60 s apart" in err
    assert cli_main([*argv, "--timeframe", "60"]) == 0
    json.loads(capsys.readouterr().out)
