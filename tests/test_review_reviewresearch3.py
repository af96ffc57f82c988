"""Adversarial review of research at scale, third pass (whole-config backtests, sweeps, random
draws, walk-forward, Dask), attacked as a trader who goes live on the sweep's winner. Each test
pins a hole that failed before its fix. Data is a few thousand synthetic bars, runs are serial.

Attacks that held (tried by hand or below, no fix needed):
- a walk-forward on a 2-worker LocalCluster gives the serial JSON exactly (--random, --warmup);
- the winner's row of a sweep reproduces bit for bit with `cockpit backtest` and the same
  options (--fill next-open with --warmup, --start inside a bar with --end and --stop-loss,
  --trailing-atr/--time-stop/--spread-bps, --allow-short --fraction --cash, --no-breakers
  --no-limits --take-profit), the winner drawn by --random with a seed;
- changing every bar from a test window on leaves that window's choice and in-sample figures
  unchanged (no look-ahead); the training run's end is exclusive (a bar at the test window's
  first instant is not in sample);
- the warm-up bars go to the strategies only (core.warm_up), never to the order path;
- --random with the same seed draws the same combinations; --seed -1 is one usage line;
- fast=0, fast=-3, fast=7.5 and fast >= slow are skipped per combination with the reason; a
  real range (3.0:9) for an integer parameter is refused in one line naming the values;
- a whole config whose kill switch's daily loss limit trips denies every later entry
  (ENGINE_HALTED) as the engine does; --approvals reject with --strategy is refused;
- bad data (empty, header only, binary, missing, NaN close, a file for an untraded symbol, the
  same symbol twice, `=FILE`, `SYMBOL=`) is one line, exit 2.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cockpit.cli import main as cli_main
from tests.test_review_research import write_bars

TWO_STRATEGIES = """
[[strategies]]
id = "trend"
kind = "ema_cross"
symbols = ["BTC/USDT"]
timeframe_s = 60
params = { fast = 10, slow = 30 }
sizing = { model = "fixed_qty", qty = 0.1 }
approval = "auto"

[[strategies]]
id = "breakout"
kind = "donchian_breakout"
symbols = ["BTC/USDT"]
timeframe_s = 60
params = { period = 60 }
sizing = { model = "fixed_qty", qty = 0.1 }
approval = "approve"
"""


@pytest.mark.parametrize("walk", [[], ["--train", "4h", "--test", "2h"]])
def test_a_sweep_without_strategy_on_a_config_of_two_blames_the_config_not_the_grid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], walk: list[str]
) -> None:
    """A config of two strategies and no --strategy: every combination failed alike and the
    sweep said 'every one of the 2 combinations is invalid: the config has 2 strategies...',
    sending the trader to a grid that was fine. The run's own error is the answer."""
    data = write_bars(tmp_path / "bars.csv", n=900)
    cfg = tmp_path / "two.toml"
    cfg.write_text(TWO_STRATEGIES)
    argv = ["sweep", "--config", str(cfg), "--data", str(data), "--param", "period=20,40"]
    rc = cli_main([*argv, *walk, "--serial"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "combinations is invalid" not in err, err
    assert "the config has 2 strategies (trend, breakout)" in err, err
    assert "--strategy" in err, err


@pytest.mark.parametrize("walk", [[], ["--train", "4h", "--test", "2h"]])
def test_a_grid_the_strategy_refuses_still_names_the_combinations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], walk: list[str]
) -> None:
    """The other side of the fix: when the run itself is fine and only the swept values are
    refused, the sweep still says every combination is invalid and why."""
    data = write_bars(tmp_path / "bars.csv", n=900)
    argv = ["sweep", "--strategy", "ema_cross", "--data", str(data)]
    rc = cli_main([*argv, "--param", "fast=40,50", "--param", "slow=20", *walk, "--serial"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "every one of the 2 combinations is invalid" in err, err
    assert "fast must be less than slow" in err, err


@pytest.mark.parametrize("walk", [[], ["--train", "4h", "--test", "2h"]])
def test_serial_and_workers_together_are_refused_not_run_serial_in_silence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], walk: list[str]
) -> None:
    """`--serial --workers 2` ran in this process without a word: the trader who asked for two
    workers waited on one core (whichever they meant, one of the two was ignored)."""
    data = write_bars(tmp_path / "bars.csv", n=900)
    argv = ["sweep", "--strategy", "ema_cross", "--data", str(data), "--param", "fast=3,5"]
    rc = cli_main([*argv, *walk, "--serial", "--workers", "2"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "--serial" in err and "--workers 2" in err, err
    # --serial with --workers 0 says the same thing twice: it runs.
    assert cli_main([*argv, *walk, "--serial", "--workers", "0", "--json"]) == 0
    capsys.readouterr()
