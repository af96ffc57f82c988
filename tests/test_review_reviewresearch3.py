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
  same symbol twice, `=FILE`, `SYMBOL=`) is one line, exit 2;
- the same walk-forward on a separate `dask scheduler` with a worker on loopback gives the
  serial JSON exactly;
- --approvals reject on a config of an auto and an approve-mode strategy on one symbol: the
  approve-mode one has 0 fills and counts its rejected requests, the other trades;
- a sweep on a config strategy (approve mode, config exits and sizing) reproduces with
  `cockpit backtest --config ... --strategy ID` and the same options;
- Ctrl-C (SIGINT) in a whole-config backtest and in a serial walk-forward: exit 130, one line,
  nothing on stdout;
- --top 0/-1, --random 0, --workers -1, a scheduler without port, one nobody listens on,
  --train 0d, 1.5m on minute bars, --sort Sharpe, a typo'd parameter name, an empty or
  doubled --param: one line each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cockpit.cli import main as cli_main
from engine.research.params import parse_params, random_combinations
from engine.research.walkforward import windows
from engine.types import NS_PER_SECOND
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


# ------------------------------------------------------------------ invariants that held


@settings(max_examples=200, deadline=None)
@given(
    first=st.integers(0, 10**6),
    span=st.integers(0, 5_000),
    train=st.integers(1, 400),
    test=st.integers(1, 400),
)
def test_walk_forward_windows_never_let_a_test_window_choose_its_own_parameters(
    first: int, span: int, train: int, test: int
) -> None:
    """Every window trains strictly before it tests (train_end == test_start), the test
    windows tile the span without overlap, in order, inside the data, and no whole window is
    left out at the end."""
    ns = NS_PER_SECOND
    start, end = first * ns, (first + span) * ns
    wins = windows(start, end, train, test)
    for k, w in enumerate(wins):
        assert w.index == k
        assert w.train_start < w.train_end == w.test_start < w.test_end <= end
        assert w.train_start >= start
        assert w.train_end - w.train_start == train * ns
        assert w.test_end - w.test_start == test * ns
        if k:
            assert w.test_start == wins[k - 1].test_end
    last_start = start + len(wins) * test * ns
    assert last_start + (train + test) * ns > end  # one more window would not fit


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    lo=st.integers(1, 30),
    width=st.integers(0, 60),
)
def test_a_seeded_draw_repeats_and_stays_inside_its_ranges(
    seed: int, n: int, lo: int, width: int
) -> None:
    specs = parse_params([("fast", f"{lo}:{lo + width}"), ("slow", f"{lo}.5:{lo + width}.5")])
    a = random_combinations(specs, n, seed)
    assert a == random_combinations(specs, n, seed)
    assert len({json.dumps(c, sort_keys=True) for c in a}) == len(a)
    for c in a:
        assert isinstance(c["fast"], int) and lo <= c["fast"] <= lo + width
        assert isinstance(c["slow"], float) and lo + 0.5 <= c["slow"] <= lo + width + 0.5


def test_a_windows_choice_does_not_see_its_test_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every bar from the first test window on is changed: the first window's choice and its
    in-sample figures stay the same (its training run ends before its test window starts)."""
    data = write_bars(tmp_path / "bars.csv", n=1_440)
    lines = data.read_text().splitlines()
    changed = [lines[0], *lines[1:361]]
    for k, line in enumerate(lines[361:]):
        when, *prices, volume = line.split(",")
        f = 1.0 + (0.03 if k % 3 else -0.04)
        changed.append(",".join([when, *(str(float(p) * f) for p in prices), volume]))
    other = tmp_path / "changed.csv"
    other.write_text("\n".join(changed) + "\n")
    argv = ["sweep", "--strategy", "ema_cross", "--param", "fast=3:9", "--param", "slow=12:30"]
    argv += ["--random", "6", "--seed", "5", "--train", "6h", "--test", "3h", "--warmup", "20"]
    argv += ["--qty", "1", "--json", "--serial"]
    got = []
    for path in (data, other):
        assert cli_main([*argv, "--data", str(path)]) == 0
        got.append(json.loads(capsys.readouterr().out)["windows"][0])
    assert got[0]["params"] == got[1]["params"]
    assert got[0]["in_sample"] == got[1]["in_sample"]
    assert got[0]["out_of_sample"] != got[1]["out_of_sample"]  # the change did reach the test
    assert got[0]["test"][0] == "2024-01-01T06:00:00Z"


# ------------------------------------------------------------------ --skip-missing in a window

TWO_SYMBOLS = """
[portfolio]
starting_cash = 10000.0

[[strategies]]
id = "a"
kind = "ema_cross"
symbols = ["BTC/USDT", "ETH/USDT"]
timeframe_s = 60
params = { fast = 3, slow = 8 }
sizing = { model = "fixed_qty", qty = 1 }
approval = "auto"
"""


def _later(src: Path, dst: Path, days: int) -> Path:
    """``src``'s bars ``days`` later (a symbol listed after the other's data starts)."""
    import datetime as dt

    lines = src.read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        when, rest = line.split(",", 1)
        moved = dt.datetime.fromisoformat(when) + dt.timedelta(days=days)
        out.append(f"{moved.isoformat(sep=' ')},{rest}")
    dst.write_text("\n".join(out) + "\n")
    return dst


def test_skip_missing_skips_a_symbol_without_bars_in_the_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A whole config over a window before one symbol's data starts: with --skip-missing the
    run stopped ('no data for ETH/USDT between the --start and --end given') as it did without,
    though the README says --skip-missing runs the rest and lists what was skipped."""
    btc = write_bars(tmp_path / "btc.csv", n=2_000)
    eth = _later(btc, tmp_path / "eth.csv", 5)
    cfg = tmp_path / "two.toml"
    cfg.write_text(TWO_SYMBOLS)
    argv = ["backtest", "--config", str(cfg), "--data", f"BTC/USDT={btc}"]
    argv += ["--data", f"ETH/USDT={eth}", "--start", "2024-01-01T06:00", "--end", "2024-01-02"]
    # Without --skip-missing: refused in one line that names the way on.
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--skip-missing" in err, err
    assert "ETH/USDT" in err, err
    assert cli_main([*argv, "--skip-missing", "--json"]) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["header"]["skipped"] == ["a on ETH/USDT"]
    assert [ln["symbol"] for ln in report["lines"]] == ["BTC/USDT"]
    assert report["combined"]["bars"] == 18 * 60
    # A window in which no symbol has a bar is still refused, and says why.
    late = [*argv[:-4], "--start", "2024-03-01", "--skip-missing"]
    assert cli_main(late) == 2
    err = capsys.readouterr().err
    assert "between the --start and --end" in err and len(err.strip().splitlines()) == 1, err
