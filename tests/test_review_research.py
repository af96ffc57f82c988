"""Adversarial review of the research promises (`cockpit backtest` of one strategy or a whole
config, `cockpit sweep`, walk-forward): each test pins a hole found by attacking what the README
and docs/research.md promise, failing before its fix. Data is a few thousand synthetic bars;
every run is bounded."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cockpit.cli import main as cli_main

T0 = dt.datetime(2024, 1, 1)
REPO = Path(__file__).resolve().parents[1]


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


# ------------------------------------------------------------------ walk-forward's size


def test_a_walk_forward_of_more_runs_than_the_limit_is_refused_before_it_plans(
    tmp_path: Path,
) -> None:
    """The grid was bounded but a walk-forward runs every combination in
    every window: 400 combinations over 299 ten-minute windows of 3,000 bars were 119,600
    configs built one by one (a silent minute) and then 119,600 backtests. The product is
    bounded like a grid (10,000 runs): one line naming windows x combinations, exit 2."""
    data = write_bars(tmp_path / "bars.csv", n=3_000)
    argv = [
        sys.executable, "-m", "cockpit", "sweep", "--strategy", "ema_cross", "--data", str(data),
        "--no-cache", "--param", "fast=1:400:1", "--param", "slow=500", "--train", "10m",
        "--test", "10m", "--serial", "--json",
    ]  # fmt: skip
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "299 windows x 400 combinations = 119,600 runs, more than 10,000" in line
    # Just under the bound plans and runs (a few combinations over every window).
    argv[argv.index("fast=1:400:1")] = "fast=5,10"
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["windows"]) == 299


# ------------------------------------------------------------------ --random over a small space


def test_random_stops_drawing_once_a_small_space_is_exhausted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--random 100000 --param fast=5,6`` drew 5,000,000 times (50 x N) before it gave up on
    the third point of a two-point space: 20 s of nothing before the first run. A space smaller
    than N is drawn until every point is out; the draws a seed makes are unchanged."""
    from engine.research import params

    draws = 0
    real = params.ParamSpec.sample

    def counted(self: params.ParamSpec, rng: np.random.Generator) -> object:
        nonlocal draws
        draws += 1
        return real(self, rng)

    monkeypatch.setattr(params.ParamSpec, "sample", counted)
    specs = params.parse_params([("fast", "5,6,6"), ("slow", "30:32")])  # 2 x 3 points
    got = params.random_combinations(specs, 1_000, seed=3)
    assert sorted((c["fast"], c["slow"]) for c in got) == [
        (f, s) for f in (5, 6) for s in (30, 31, 32)
    ]
    assert draws < 200  # each draw samples both parameters; 100,000 before
    # A real range is never exhausted: N points, the same ones for the same seed.
    wide = params.parse_params([("k", "0.5:1.5")])
    assert params.random_combinations(wide, 50, 9) == params.random_combinations(wide, 50, 9)
    assert len(params.random_combinations(wide, 50, 9)) == 50


# ------------------------------------------------------------------ equity below zero


def test_a_ruined_account_has_no_sharpe_rather_than_a_good_one() -> None:
    """Returns are ``e[t] / e[t-1] - 1``: once equity is below zero, losing more reads as a
    gain (-100 to -200 is "+100%"). A short squeezed through zero that kept losing scored a
    positive Sharpe and Sortino, and a sweep ranked it first. A curve that reaches zero or
    below has no ratios (n/a: ranked last); the drawdown and PnL still say what happened."""
    from engine.metrics import compute_metrics

    equity = np.array([100_000.0, 99_000.0, -1_000.0, *(-1_000.0 * 2.0 ** np.arange(1, 30))])
    ts = np.arange(equity.size, dtype=np.int64) * 60 * 1_000_000_000
    metrics, _ = compute_metrics(ts, equity, np.ones(equity.size), [], [], 60)
    assert metrics.sharpe is None and metrics.sortino is None
    assert metrics.pnl == equity[-1] - 100_000.0 and metrics.max_drawdown_pct > 100.0
    # Just above zero the ratios are figures (and negative for this fall).
    alive = np.array([100_000.0, 99_000.0, 1.0, 0.5, 0.25])
    metrics, _ = compute_metrics(ts[:5], alive, np.ones(5), [], [], 60)
    assert metrics.sharpe is not None and metrics.sharpe < 0 and metrics.sortino is not None


# ------------------------------------------------------------------ cockpit data verify


def test_data_verify_names_a_file_that_is_no_recording_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``cockpit data verify bars.csv`` (a download, not a recording) printed one FAIL per line
    of the file: 3,002 lines for 3,000 bars, a million for a big one. A file none of whose lines
    is a record is one line saying what it is; a recording damaged from top to bottom shows
    its first 20 problems and the count of the rest."""
    from tests.test_recording import write_day

    csv = write_bars(tmp_path / "bars.csv", n=3_000)
    assert cli_main(["data", "verify", str(csv)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"FAIL {csv}: record 0 (line 1): not a market recording: none of its 3,001 lines is a "
        "record (cockpit data verify checks the *.rec.jsonl files a [record] engine writes)"
    ]
    day = write_day(tmp_path / "record", 40)
    lines = day.read_bytes().split(b"\n")
    for i in range(2, 32):  # 30 records edited, the session header and the rest intact
        lines[i] = lines[i].replace(b'"bids"', b'"bidz"')
    day.chmod(0o644)
    day.write_bytes(b"\n".join(lines))
    assert cli_main(["data", "verify", str(day)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 21 and all(line.startswith(f"FAIL {day}: ") for line in out)
    assert out[-1].endswith("more problems after these") and "record 2 " in out[0]


# ------------------------------------------------------------------ missing bars


def test_a_backtest_says_how_many_bars_are_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bars 100-199 of 300 removed: the report was the same as for whole data (200 bars, no
    word of the 100-minute hole), while the Sharpe and exposure count only the bars present
    and a crossover straddled the hole as if it were one minute. The header counts the gaps,
    the bars missing and the longest gap (JSON ``header.gaps``), and the report shows it; whole
    data says nothing."""
    whole = write_bars(tmp_path / "whole.csv", n=300)
    holed = tmp_path / "holed.csv"
    lines = whole.read_text().splitlines()
    holed.write_text("\n".join(lines[:101] + lines[201:]) + "\n")
    argv = ["backtest", "--strategy", "ema_cross", "--no-cache", "--param", "fast=3"]
    argv += ["--param", "slow=8", "--data"]
    assert cli_main([*argv, str(holed), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["header"]["gaps"] == {"count": 1, "missing_bars": 100, "longest_s": 101 * 60}
    assert cli_main([*argv, str(holed), "--no-chart"]) == 0
    out = capsys.readouterr().out
    assert "1 gap in the bars, 100 bars missing (the longest 101m)" in out
    assert cli_main([*argv, str(whole), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["header"]["gaps"] == {"count": 0, "missing_bars": 0, "longest_s": 0}
    # A whole config says it per symbol.
    config = ["backtest", "--config", str(REPO / "config" / "portfolio-btc.toml"), "--no-cache"]
    assert cli_main([*config, "--data", str(holed), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["header"]["data"]["BTC/USDT"]["gaps"]["missing_bars"] == 100
    assert cli_main([*config, "--data", str(holed), "--no-chart"]) == 0
    assert "1 gap, 100 bars missing" in capsys.readouterr().out


# ------------------------------------------------------------------ the heatmap's axes


def test_a_grid_mixing_numbers_and_words_still_prints_its_table_and_heatmap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--param fast=5,10,abc --param slow=30,60``: the strategy refuses ``abc`` (skipped and
    counted), the four others ran, then the heatmap sorted {5, 10, "abc"} and the command died
    with 'unexpected error: TypeError', exit 1, the results never shown. Numbers keep their
    order, the rest follow in the grid's; the skipped row reads "-"."""
    data = write_bars(tmp_path / "bars.csv")
    argv = ["sweep", "--strategy", "ema_cross", "--data", str(data), "--no-cache", "--serial"]
    argv += ["--param", "fast=10,5,abc", "--param", "slow=30,60", "--sort", "pnl"]
    assert cli_main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    grid = out[out.index("pnl by fast (rows) and slow (columns)") :].splitlines()
    assert [line.split()[0] for line in grid[3:6]] == ["5", "10", "abc"]
    assert grid[5].split()[1:] == ["-", "-"]


# ------------------------------------------------------------------ --approvals reject


ONE_APPROVE_MODE_STRATEGY = """\
[[strategies]]
id = "trend"
kind = "ema_cross"
symbols = ["BTC/USDT"]
timeframe_s = 60
approval = "approve"
params = { fast = 5, slow = 20 }
"""


def test_approvals_reject_never_trades_a_config_of_one_approve_mode_strategy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config of one approve-mode strategy on one symbol took the one-strategy path, which
    runs every order approved: ``--approvals reject`` was ignored, 62 fills and 15 trades,
    the header saying "auto for every order". It now runs as a whole config (the same figures
    as the one-strategy path when approved): nothing trades, each request is counted rejected;
    with ``--strategy`` (one strategy, always approved) the policy is refused in one line."""
    data = write_bars(tmp_path / "bars.csv", n=1_000)
    config = tmp_path / "one.toml"
    config.write_text(ONE_APPROVE_MODE_STRATEGY)
    argv = ["backtest", "--config", str(config), "--data", str(data), "--no-cache", "--json"]
    assert cli_main([*argv, "--approvals", "reject"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["header"]["approvals"] == "reject"
    [line] = doc["lines"]
    assert (line["strategy"], line["fills"], line["trades"]) == ("trend", 0, 0)
    assert line["rejected_approvals"] > 0 and doc["combined"]["fills"] == 0
    # auto (the default): the same strategy trades.
    assert cli_main(argv) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["fills"] > 0
    err = one_line_error(capsys, [*argv, "--strategy", "trend", "--approvals", "reject"])
    assert "--approvals reject is for a backtest of the whole config" in err


# ------------------------------------------------------------------ walk-forward's report


def test_a_window_without_a_winner_says_why_not_that_nothing_ran(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ten-minute windows with 100 warm-up bars: the first windows have too few bars before
    them to trade, every combination ran and none had a Sharpe. The report said "(none ran)"
    (as if the runs had failed) and the windows "0.166667h"; it says the figure was n/a and
    the windows 10m."""
    data = write_bars(tmp_path / "bars.csv", n=300)
    argv = ["sweep", "--strategy", "ema_cross", "--data", str(data), "--no-cache", "--serial"]
    argv += ["--param", "fast=5", "--param", "slow=30", "--train", "10m", "--test", "10m"]
    assert cli_main([*argv, "--warmup", "100", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "train 10m, test 10m, 29 windows" in out and "(none ran)" not in out
    first = next(line for line in out.splitlines() if line.startswith("1 "))
    assert "(none: sharpe n/a)" in first
    assert cli_main([*argv, "--warmup", "100", "--json"]) == 0
    window = json.loads(capsys.readouterr().out)["windows"][0]
    assert window["combinations_run"] == 1 and window["in_sample"] is None


# ------------------------------------------------------------------ absurd ranges


@pytest.mark.parametrize(
    ("param", "random", "message"),
    [
        ("fast=0:1e300:1e-300", None, "a range's ends must lie within ±1e15"),
        ("fast=1:2:1e-320", None, "more than 10,000 values"),
        ("fast=-1e308:1e308", "3", "a range's ends must lie within ±1e15"),
        ("fast=1:100000000000000000000", "3", "a range's ends must lie within ±1e15"),
        ("fast=-1e20:1e20", "3", "a range's ends must lie within ±1e15"),
    ],
)
def test_an_absurd_range_is_one_usage_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    param: str,
    random: str | None,
    message: str,
) -> None:
    """Ranges numpy cannot draw from or count were 'unexpected error: OverflowError: cannot
    convert float infinity to integer' or 'ValueError: high is out of bounds for int64', exit
    1: a crash, not a message. Each is one line naming the parameter and the limit, exit 2;
    the widest range allowed still runs."""
    data = write_bars(tmp_path / "bars.csv")
    argv = ["sweep", "--strategy", "ema_cross", "--data", str(data), "--no-cache", "--serial"]
    argv += ["--param", param] + (["--random", random] if random else [])
    err = one_line_error(capsys, argv)
    assert f"--param {param}: {message}" in err and "unexpected" not in err
    from engine.research.params import parse_params, random_combinations

    widest = parse_params([("fast", "-1000000000000000:1000000000000000")])
    assert all(abs(c["fast"]) <= 10**15 for c in random_combinations(widest, 5, 1))


def test_a_walk_forward_outside_the_data_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--start`` after the data's end: "the data spans -363.9 days, less than one --train
    plus --test". It says the window selects none of the data and where the data is."""
    data = write_bars(tmp_path / "bars.csv")
    argv = ["sweep", "--strategy", "ema_cross", "--data", str(data), "--no-cache", "--serial"]
    argv += ["--param", "fast=5,10", "--train", "1h", "--test", "1h"]
    for window in (["--start", "2025-01-01"], ["--end", "2023-01-01"]):
        err = one_line_error(capsys, [*argv, *window])
        assert "--start/--end select none of the data (it runs from 2024-01-01T00:00:00Z" in err
        assert "-3" not in err


def test_a_sweep_in_which_every_run_failed_does_not_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--start`` after the data: every combination is a row "no data between ..." and the
    sweep exited 0, so a script took a sweep that measured nothing for a result. The rows are
    still shown (JSON too); the exit is 1 with one line saying why."""
    data = write_bars(tmp_path / "bars.csv")
    argv = ["sweep", "--strategy", "ema_cross", "--data", str(data), "--no-cache", "--serial"]
    argv += ["--param", "fast=5,10", "--start", "2025-01-01", "--json"]
    err = one_line_error(capsys, argv, code=1)
    assert "none of the 2 runs produced figures: no data between 2025-01-01" in err
    rc = cli_main(argv)
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1 and doc["errors"] == 2 and len(doc["results"]) == 2
    # One run with figures is a result: exit 0.
    assert cli_main([*argv[:-3], "--json"]) == 0


@pytest.mark.parametrize(("train", "test", "flag"), [("1m", "0.5m", "--test"), ("61m", "1h", "")])
def test_walk_forward_windows_are_whole_bars(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], train: str, test: str, flag: str
) -> None:
    """``--train 1m --test 0.5m`` over 1-minute bars ran 118 windows whose test windows held no
    bar (or cut one in two, its close past the window's end), reporting n/a everywhere. A
    window length that is not a whole number of bars is one line; whole bars run."""
    data = write_bars(tmp_path / "bars.csv", n=300)
    argv = ["sweep", "--strategy", "ema_cross", "--data", str(data), "--no-cache", "--serial"]
    argv += ["--param", "fast=5", "--train", train, "--test", test, "--json"]
    if flag:
        err = one_line_error(capsys, argv)
        assert "--test: 30 s is not a whole number of the data's 60 s bars" in err
    else:
        assert cli_main(argv) == 0
        assert len(json.loads(capsys.readouterr().out)["windows"]) == 3


# ------------------------------------------------------------------ the size of a sweep


def test_a_grid_of_100000_combinations_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    """``--param fast=1:1000:1 --param slow=1001:1100:1`` (100,000 combinations) was accepted:
    a silent minute building 100,000 configs, then 100,000 backtests (hours even on 3,000
    bars). A sweep is bounded at 10,000 runs: one line naming the grid and the way out, exit
    2, at once; --random 10000 (just under) is allowed, 10001 is not."""
    data = write_bars(tmp_path / "bars.csv", n=300)
    argv = [
        sys.executable, "-m", "cockpit", "sweep", "--strategy", "ema_cross", "--data", str(data),
        "--no-cache", "--serial", "--json", "--param", "fast=1:1000:1", "--param",
        "slow=1001:1100:1",
    ]  # fmt: skip
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "the grid has 100,000 combinations, more than 10,000" in line and "--random" in line
    from engine.research.params import parse_params, random_combinations

    specs = parse_params([("fast", "1:1000"), ("slow", "1001:1100")])
    assert len(random_combinations(specs, 10_000, 1)) == 10_000
    with pytest.raises(Exception, match="--random 10,001: at most 10,000"):
        random_combinations(specs, 10_001, 1)


# ------------------------------------------------------------------ Ctrl-C on a LocalCluster


def test_ctrl_c_while_the_local_cluster_starts_leaves_nothing_on_the_exit_hook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C while the LocalCluster was starting left it half made (never returned to us) on
    distributed's exit hook: "Exception ignored in atexit callback ... Nanny failed to start"
    and a traceback after "sweep cancelled" (tests/test_research_distributed.py's Ctrl-C test
    failed so about one run in three). Whatever cluster the interrupted start registered is
    closed and taken off the hook."""
    import distributed
    from distributed.deploy.spec import SpecCluster

    from engine.research import cluster

    closed: list[object] = []

    class HalfMade:
        def __init__(self, **_kw: object) -> None:
            SpecCluster._instances.add(self)  # as SpecCluster.__init__ does first
            raise KeyboardInterrupt

        def close(self) -> None:
            closed.append(self)

    monkeypatch.setattr(distributed, "LocalCluster", HalfMade)
    with pytest.raises(KeyboardInterrupt), cluster.open_client(cluster.ClusterOptions(workers=1)):
        pass
    assert len(closed) == 1 and closed[0] not in SpecCluster._instances


def test_distributed_tasks_failing_after_a_cancel_are_not_printed() -> None:
    """After a cancelled sweep, distributed's connection handlers still running failed (a
    KeyError on a closed worker, a nanny that failed to start) and asyncio printed "Task
    exception was never retrieved" with a traceback after "sweep cancelled". Those records of
    distributed's own tasks are dropped; any other task's still reaches the log."""
    import logging

    from engine.research import cluster

    cluster._quiet_distributed_leftovers()
    log = logging.getLogger("asyncio")

    def record(path: str, message: str) -> logging.LogRecord:
        code = compile("raise KeyError('tcp://127.0.0.1:1')", path, "exec")
        try:
            exec(code)
        except KeyError:
            info = sys.exc_info()
        return log.makeRecord("asyncio", logging.ERROR, path, 1, message, (), info)

    ours = f"{os.sep}site-packages{os.sep}distributed{os.sep}core.py"
    never = "Task exception was never retrieved\nfuture: <Task finished coro=<wait_for()>>"
    assert not log.filter(record(ours, never))
    assert log.filter(record(f"{os.sep}app{os.sep}mine.py", never))
    assert log.filter(record(ours, "Unclosed connection"))


def test_a_sampled_walk_forward_says_how_it_was_drawn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A walk-forward over ``--random 4 --seed 9`` neither printed nor put in its JSON that its
    combinations were drawn, nor the seed: its result could not be reproduced from itself (the
    plain sweep's JSON has ``random``). Both do now, and the same seed draws the same."""
    data = write_bars(tmp_path / "bars.csv", n=1_500)
    argv = ["sweep", "--strategy", "ema_cross", "--data", str(data), "--no-cache", "--serial"]
    argv += ["--param", "fast=2:20", "--param", "slow=30:60", "--random", "4", "--seed", "9"]
    argv += ["--train", "6h", "--test", "6h"]
    assert cli_main([*argv, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["random"] == {"n": 4, "seed": 9} and first["combinations"] == 4
    assert cli_main([*argv, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert [w["params"] for w in again["windows"]] == [w["params"] for w in first["windows"]]
    assert cli_main(argv) == 0
    assert "sampled at random (--random 4 --seed 9)" in capsys.readouterr().out


@pytest.mark.parametrize("values", ["fast=5,NaN", "fast=[5, Infinity]", "fast=5,-Infinity"])
def test_a_non_finite_value_in_a_list_is_refused_before_the_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], values: str
) -> None:
    """JSON reads NaN and Infinity, so ``--param fast=5,NaN`` held a NaN: fast=5 ran, the NaN
    was skipped, then ``--json`` (which never writes NaN) failed with 'unexpected error:
    ValueError: Out of range float values are not JSON compliant', exit 1, nothing printed.
    A non-finite value is one usage line before anything runs."""
    data = write_bars(tmp_path / "bars.csv")
    argv = ["sweep", "--strategy", "ema_cross", "--data", str(data), "--no-cache", "--serial"]
    err = one_line_error(capsys, [*argv, "--param", values, "--param", "slow=30", "--json"])
    assert "--param fast:" in err and "is not a finite number" in err


def test_drawing_from_a_stepped_range_builds_its_values_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each draw from ``fast=1:2000:1`` rebuilt the range's 2,000 values: ``--random 2000``
    took 4.5 s, and a 9,999-value range drawn to exhaustion minutes, before any run. The
    values are built once per parameter; the draws are the same."""
    from engine.research import params

    calls = 0
    real = params.ParamSpec.grid

    def counted(self: params.ParamSpec) -> list[object]:
        nonlocal calls
        calls += 1
        return real(self)

    monkeypatch.setattr(params.ParamSpec, "grid", counted)
    [spec] = params.parse_params([("fast", "1:2000:1")])
    drawn = params.random_combinations([spec], 2_000, 1)
    assert sorted(c["fast"] for c in drawn) == list(range(1, 2001))
    assert calls <= 2


# ------------------------------------------------------------------ bars off the grid


def test_a_bar_opening_before_the_last_one_closed_is_rejected_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row at 00:50:30 among minute bars was taken as a bar (the validator only refused a
    time at or before the last): it closed at 00:51:30, after the 00:51 bar opened, so a
    `close` fill or an equity sample was stamped from after the next bar; a 5-minute file
    with a stretch of 1-minute rows ran each of those as a 5-minute bar. Such a row is
    rejected at the boundary as ``overlapping_bar`` and counted in the report, whichever path
    (the fast run of quiet bars or bar by bar) meets it."""
    rows = write_bars(tmp_path / "whole.csv", n=300).read_text().splitlines()
    stray = rows[51].replace("00:50:00", "00:50:30")
    assert stray != rows[51]
    rows.insert(52, stray)
    odd = tmp_path / "odd.csv"
    odd.write_text("\n".join(rows) + "\n")
    argv = ["backtest", "--strategy", "ema_cross", "--no-cache", "--data", str(odd)]
    for fill in ("close", "next-open", "live"):
        assert cli_main([*argv, "--json", "--fill", fill]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["rejected_at_boundary"] == {"overlapping_bar": 1}, fill
        assert doc["header"]["rows"]["accepted"] == 300
    assert cli_main([*argv, "--no-chart"]) == 0
    assert "1 of 301 rows rejected at the boundary, not traded" in capsys.readouterr().out


# ------------------------------------------------------------------ next-open's liquidity


def test_a_next_open_fill_does_not_see_its_bars_volume() -> None:
    """``--fill next-open`` executed at a bar's open against a displayed size of that whole
    bar's volume, known only at its close: the same order filled at the touch when the bar
    later traded a hundredfold volume (a crash bar), and walked the impact levels when it did
    not. The size shown at the open is the last bar's, so a fill bar's own volume changes
    nothing about the fill."""
    from engine.backtest import BacktestOptions, MarketData, run_backtest
    from engine.config import load_config
    from engine.types import NS_PER_SECOND

    n = 600
    t = np.arange(n)
    close = 100.0 + 10.0 * np.sin(t / 30.0)
    open_ = np.concatenate([[100.0], close[:-1]])
    high, low = np.maximum(open_, close) + 0.5, np.minimum(open_, close) - 0.5
    ts = 1_704_067_200 * NS_PER_SECOND + t.astype(np.int64) * 60 * NS_PER_SECOND
    volume = np.full(n, 1_000.0)  # 10 units shown at 100: an order of 50 walks past them
    opts = BacktestOptions(
        strategy="ema_cross",
        params={"fast": 5, "slow": 20},
        qty=50.0,
        fill="next-open",
        breakers=False,
    )

    def fills(vol: np.ndarray) -> list[tuple[int, float]]:
        data = MarketData.from_bars(ts, open_, high, low, close, vol, timeframe_s=60)
        return [(f.ts, f.price) for f in run_backtest(load_config(), data, opts).fills]

    quiet = fills(volume)
    assert len(quiet) >= 4
    loud = volume.copy()
    for fill_ts, _price in quiet:  # the bars whose open filled: a hundredfold volume after it
        loud[int((fill_ts - ts[0]) // (60 * NS_PER_SECOND))] *= 100.0
    assert fills(loud) == quiet


def test_data_named_in_the_wrong_case_says_symbols_are_case_sensitive(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`--data btc/usdt=FILE` for a config trading BTC/USDT said only that no strategy trades
    btc/usdt: the trader looked for a missing strategy, not at the case."""
    bars = write_bars(tmp_path / "bars.csv")
    argv = ["backtest", "--config", str(REPO / "config" / "portfolio-btc.toml")]
    line = one_line_error(capsys, [*argv, "--data", f"btc/usdt={bars}"])
    assert line.rstrip().endswith("(symbols are case-sensitive: BTC/USDT, not btc/usdt)"), line
    line = one_line_error(capsys, [*argv, "--data", f"ETH/USDT={bars}"])
    assert "case-sensitive" not in line  # another symbol altogether: no such hint
