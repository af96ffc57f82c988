"""Sweeps, walk-forward and whole-config backtests (in this process: the serial path).

The distributed paths (LocalCluster, a separate scheduler, a worker killed, Ctrl-C) are in
tests/test_research_distributed.py; they must give exactly these results.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cockpit.cli import main as cli_main
from cockpit.client import SWEEP_SORTS
from engine.backtest import BacktestError, BacktestOptions, MarketData, load_market_data
from engine.backtest import run_backtest as run_bt
from engine.config import Config, load_config, parse_config
from engine.research.cluster import ClusterOptions, Progress, run_tasks
from engine.research.params import (
    MAX_COMBINATIONS,
    grid_combinations,
    parse_params,
    random_combinations,
)
from engine.research.portfolio import run_portfolio
from engine.research.sweep import SORT_METRICS, PackedData, run_sweep, sort_rows
from engine.research.walkforward import parse_duration_s, walk_forward, windows
from engine.types import NS_PER_SECOND
from tests.conftest import BARS_CSV, default_dict, merge

SERIAL = ClusterOptions(workers=0)
DAY = 86_400


@pytest.fixture(scope="module")
def btc() -> MarketData:
    """The first 6 days of the shipped BTC 1-minute bars (8,640 bars)."""
    data = load_market_data(BARS_CSV)
    end = data.ts[0] + 6 * DAY * NS_PER_SECOND
    return data.between(None, end)


def opts(**kw: Any) -> BacktestOptions:
    base: dict[str, Any] = dict(
        strategy="ema_cross", qty=0.1, fee_bps=10.0, warmup=100, breakers=False
    )
    base.update(kw)
    return BacktestOptions(**base)


# ------------------------------------------------------------------ the parameter space


def test_lists_and_stepped_ranges_make_the_grid_last_parameter_fastest() -> None:
    specs = parse_params([("fast", "5,10"), ("slow", "30:60:15")])
    assert grid_combinations(specs) == [
        {"fast": 5, "slow": 30},
        {"fast": 5, "slow": 45},
        {"fast": 5, "slow": 60},
        {"fast": 10, "slow": 30},
        {"fast": 10, "slow": 45},
        {"fast": 10, "slow": 60},
    ]
    # Whole numbers stay ints (strict integer parameters accept them); reals stay reals.
    [spec] = parse_params([("k", "0.5:1.5:0.5")])
    assert spec.grid() == [0.5, 1.0, 1.5]
    assert parse_params([("fast", 10)])[0].grid() == [10]  # one value (already JSON)


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([("fast", "5:50")], "a range without a step"),
        ([("fast", "5:x")], "'x' is not a number"),
        ([("fast", "50:5")], "ends below its start"),
        ([("fast", "5:50:0")], "the step must be > 0"),
        ([("fast", "5,,6")], "an empty value"),
        ([("fast", "5"), ("fast", "6")], "given twice"),
        ([("a", f"1:{MAX_COMBINATIONS}:1"), ("b", "1,2")], "combinations, more than"),
    ],
)
def test_a_bad_parameter_is_one_line_naming_it(pairs: list[Any], message: str) -> None:
    with pytest.raises(BacktestError) as exc:
        grid_combinations(parse_params(pairs))
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_random_samples_are_seeded_distinct_and_inside_the_ranges() -> None:
    specs = parse_params([("fast", "5:50"), ("slow", "60,90,120")])
    a = random_combinations(specs, 40, seed=7)
    assert a == random_combinations(specs, 40, seed=7)
    assert a != random_combinations(specs, 40, seed=8)
    assert len({json.dumps(c, sort_keys=True) for c in a}) == 40
    assert all(5 <= c["fast"] <= 50 and isinstance(c["fast"], int) for c in a)
    assert {c["slow"] for c in a} <= {60, 90, 120}
    # A space smaller than asked for: every point once, no more.
    assert len(random_combinations(parse_params([("fast", "1,2,3")]), 10, seed=1)) == 3


# ------------------------------------------------------------------ sweeps


def test_each_row_is_the_backtest_of_its_combination(btc: MarketData) -> None:
    base = load_config()
    combos = grid_combinations(parse_params([("fast", "5,10,40"), ("slow", "30,60")]))
    result = run_sweep(base, btc, opts(), combos, sort="pnl", cluster=SERIAL)
    # fast=40 >= slow=30 is refused by the strategy: skipped and counted with its reason.
    assert result.combinations == 6 and result.ran == 5 and len(result.skipped) == 1
    assert result.skipped[0].params == {"fast": 40, "slow": 30}
    assert "fast must be less than slow (30)" in result.skipped[0].reason
    for row in result.rows:
        single = run_bt(base, btc, replace(opts(), params=row.params))
        assert row.metrics == single.metrics
    pnls = [r.metrics.pnl for r in result.rows if r.metrics is not None]
    assert pnls == sorted(pnls, reverse=True)


def test_sorting_best_first_with_lower_is_better_and_missing_values_last(
    btc: MarketData,
) -> None:
    combos = grid_combinations(parse_params([("fast", "5,10"), ("slow", "30,60")]))
    result = run_sweep(load_config(), btc, opts(), combos, cluster=SERIAL)
    dd = [r.metrics.max_drawdown_pct for r in sort_rows(result.rows, "drawdown")]
    assert dd == sorted(dd)
    sharpe = [r.value("sharpe") for r in result.rows]
    assert sharpe == sorted(sharpe, reverse=True)  # type: ignore[type-var]
    broken = replace(result.rows[0], metrics=None, error="no data")
    assert sort_rows([broken, *result.rows[1:]], "sharpe")[-1] is broken
    assert set(SWEEP_SORTS) == set(SORT_METRICS)  # the CLI's choices, kept without the engine
    with pytest.raises(BacktestError, match="--sort must be one of"):
        sort_rows(result.rows, "profit")


def test_a_winner_that_never_traded_is_pointed_out(btc: MarketData) -> None:
    """By drawdown (lower is better) a combination that never trades ranks first: a trader who
    took the top row went live on a setting that does nothing. The report says so under the
    table; by Sharpe (n/a for it, so last) the same sweep says nothing."""
    from cockpit.research_report import render_sweep

    combos = grid_combinations(parse_params([("fast", "5"), ("slow", "30,100000")]))
    by_drawdown = run_sweep(load_config(), btc, opts(), combos, sort="drawdown", cluster=SERIAL)
    top = by_drawdown.rows[0]
    assert top.params["slow"] == 100_000 and top.metrics is not None and top.metrics.fills == 0
    assert "note: #1 never traded (by drawdown" in render_sweep(by_drawdown)
    by_sharpe = run_sweep(load_config(), btc, opts(), combos, sort="sharpe", cluster=SERIAL)
    assert by_sharpe.rows[0].metrics is not None and by_sharpe.rows[0].metrics.fills > 0
    assert "never traded" not in render_sweep(by_sharpe)


def test_every_combination_invalid_is_refused_with_the_reason(btc: MarketData) -> None:
    with pytest.raises(BacktestError, match="every one of the 2 combinations is invalid"):
        run_sweep(
            load_config(),
            btc,
            opts(),
            [{"fast": 60, "slow": 30}, {"fast": 30, "slow": 30}],
            cluster=SERIAL,
        )


def test_a_serial_run_stops_inside_a_backtest_when_cancelled(btc: MarketData) -> None:
    from engine.research.cluster import Cancelled
    from engine.research.sweep import plan, run_task

    [task], _ = plan(load_config(), btc, opts(), [{"fast": 5, "slow": 30}])
    stop = threading.Event()
    assert run_task(PackedData.pack(btc), task, stop).metrics is not None
    stop.set()  # checked every 65,536 bars inside the run, not only between runs
    with pytest.raises(Cancelled):
        run_task(PackedData.pack(btc), task, stop)


def test_packed_data_unpacks_to_the_same_columns_once_per_process(btc: MarketData) -> None:
    packed = PackedData.pack(btc)
    assert packed.token == PackedData.pack(btc).token
    first = packed.unpack()
    assert first.ts == btc.ts and first.cols == btc.cols and first.timeframe_s == 60
    assert packed.unpack() is first  # converted once, then reused by every task here


def test_serial_tasks_report_progress_and_stop_when_cancelled() -> None:
    seen: list[Progress] = []

    class Stop:
        def is_set(self) -> bool:
            return len(seen) >= 3

    out = run_tasks(
        lambda shared, x: shared + x, 10, [1, 2, 3], cluster=SERIAL, progress=seen.append
    )
    assert out == [11, 12, 13] and [p.done for p in seen] == [0, 1, 2, 3]
    assert seen[-1].total == 3 and seen[-1].eta_s == 0.0
    from engine.research.cluster import Cancelled

    seen.clear()
    with pytest.raises(Cancelled):
        run_tasks(
            lambda s, x: x,
            None,
            list(range(10)),
            cluster=SERIAL,
            progress=seen.append,
            cancel=Stop(),
        )
    assert seen[-1].done == 2


# ------------------------------------------------------------------ walk-forward


def test_windows_roll_by_the_test_length_and_only_whole_ones() -> None:
    ns = NS_PER_SECOND
    got = windows(0, 10 * DAY * ns, 4 * DAY, 2 * DAY)
    assert [
        (w.train_start // (DAY * ns), w.test_start // (DAY * ns), w.test_end // (DAY * ns))
        for w in got
    ] == [(0, 4, 6), (2, 6, 8), (4, 8, 10)]
    assert windows(0, 10 * DAY * ns - 1, 4 * DAY, 2 * DAY)[-1].test_end == 8 * DAY * ns
    assert parse_duration_s("30d") == 30 * DAY and parse_duration_s("12h") == 43_200
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_s("30 days")


def test_a_walk_forward_starts_one_cluster_for_both_rounds(
    btc: MarketData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The training runs and the test runs each started a LocalCluster of their own (its
    start-up paid twice: 10.5 s against 7.1 s for a small walk-forward on two workers). One
    serves both rounds now, with the serial run's results."""
    import engine.research.cluster as cluster_module

    opened: list[ClusterOptions] = []
    real = cluster_module.open_client

    def counted(cluster: ClusterOptions) -> Any:
        opened.append(cluster)
        return real(cluster)

    monkeypatch.setattr(cluster_module, "open_client", counted)
    combos = grid_combinations(parse_params([("fast", "5,20"), ("slow", "30")]))
    args = (load_config(), btc, opts(), combos)
    kw: dict[str, Any] = {"train_s": 2 * DAY, "test_s": DAY, "sort": "pnl"}
    local = walk_forward(*args, cluster=ClusterOptions(workers=1), **kw)
    assert len(opened) == 1
    serial = walk_forward(*args, cluster=SERIAL, **kw)

    def figures(wf: Any) -> list[Any]:
        return [(r.params, r.metrics) for w in wf.windows for r in (w.best, w.oos) if r]

    assert figures(local) == figures(serial) and figures(serial)
    assert len(opened) == 1  # (serial: no cluster)


def test_walk_forward_trades_each_training_winner_on_the_next_window(btc: MarketData) -> None:
    base = load_config()
    combos = grid_combinations(parse_params([("fast", "5,20"), ("slow", "30,60")]))
    o = opts(warmup=60)
    wf = walk_forward(
        base, btc, o, combos, train_s=2 * DAY, test_s=DAY, sort="sharpe", cluster=SERIAL
    )
    assert len(wf.windows) == 4  # 6 days: train 2 + test 1, rolling by 1
    lead = 60 * 60 * NS_PER_SECOND  # the warm-up bars before each window
    for w in wf.windows:
        win = w.window
        train = replace(o, start_ns=max(btc.ts[0], win.train_start - lead), end_ns=win.train_end)
        direct = run_sweep(base, btc, train, combos, sort="sharpe", cluster=SERIAL)
        assert w.best is not None and w.best.params == direct.rows[0].params
        assert w.best.metrics == direct.rows[0].metrics
        test = replace(o, start_ns=win.test_start - lead, end_ns=win.test_end, params=w.best.params)
        assert w.oos is not None and w.oos.metrics == run_bt(base, btc, test).metrics
    overall = wf.overall()
    assert overall["out_of_sample"]["pnl"] == pytest.approx(
        sum(w.oos.metrics.pnl for w in wf.windows if w.oos and w.oos.metrics)
    )
    with pytest.raises(BacktestError, match="less than one --train plus --test"):
        walk_forward(base, btc, o, combos, train_s=5 * DAY, test_s=2 * DAY, cluster=SERIAL)


# ------------------------------------------------------------------ whole config


def _config(strategies: list[dict[str, Any]], **over: Any) -> Config:
    doc = merge(default_dict(), over)
    doc["strategies"] = strategies
    return parse_config(doc)


def _strategy(sid: str, kind: str, symbols: list[str], **kw: Any) -> dict[str, Any]:
    params = {"ema_cross": {"fast": 10, "slow": 30}, "donchian_breakout": {"period": 20}}[kind]
    return {
        "id": sid,
        "kind": kind,
        "symbols": symbols,
        "timeframe_s": 60,
        "params": params,
        "sizing": {"model": "fixed_qty", "qty": 0.01},
        "approval": "auto",
        **kw,
    }


def _scaled(data: MarketData, factor: float, symbol: str) -> MarketData:
    o, h, lo, c, v = (np.asarray(x) for x in data.cols)
    return MarketData.from_bars(
        np.asarray(data.ts),
        o / factor,
        h / factor,
        lo / factor,
        c / factor,
        v,
        symbol=symbol,
        timeframe_s=60,
    )


@pytest.mark.parametrize("fill", ["live", "close", "next-open"])
def test_a_config_of_one_strategy_is_the_single_backtest_bit_for_bit(
    btc: MarketData, fill: str
) -> None:
    cfg = _config([_strategy("trend", "ema_cross", ["BTC/USDT"])])
    o = BacktestOptions(fill=fill, warmup=100, fee_bps=10.0, stop_loss_pct=0.5)
    whole = run_portfolio(cfg, {"BTC/USDT": btc}, o)
    single = run_bt(cfg, btc, o)
    assert np.array_equal(whole.equity, single.equity) and np.array_equal(whole.ts, single.ts)
    assert whole.metrics == single.metrics and whole.metrics.trades > 10
    [line] = whole.lines
    assert (line.trades, line.fills) == (single.metrics.trades, len(single.fills))
    # The one strategy's own curve is the book's: the same drawdown and Sharpe.
    own = whole.by_strategy()["trend"]
    assert own["sharpe"] == pytest.approx(single.metrics.sharpe, rel=1e-9)
    assert own["max_drawdown_pct"] == pytest.approx(single.metrics.max_drawdown_pct, rel=1e-9)


def test_every_strategy_on_every_symbol_with_a_line_each(btc: MarketData) -> None:
    cfg = _config(
        [
            _strategy("trend", "ema_cross", ["BTC/USDT", "ETH/USDT"]),
            _strategy("breakout", "donchian_breakout", ["BTC/USDT"], approval="approve"),
        ],
        safety={"breakers": {"consecutive_losses": 1000, "global_consecutive_losses": 1000}},
    )
    data = {"BTC/USDT": btc, "ETH/USDT": _scaled(btc, 13.0, "ETH/USDT")}
    auto = run_portfolio(cfg, data, BacktestOptions(warmup=100), approvals="auto")
    keys = [(ln.strategy_id, ln.symbol) for ln in auto.lines]
    assert keys == [("breakout", "BTC/USDT"), ("trend", "BTC/USDT"), ("trend", "ETH/USDT")]
    assert all(ln.trades > 0 for ln in auto.lines)
    assert sum(ln.fills for ln in auto.lines) == auto.metrics.fills
    total = sum(ln.total_pnl for ln in auto.lines)
    assert total == pytest.approx(auto.metrics.pnl, abs=1e-6)  # the lines add up to the book
    assert "auto" in auto.header["approvals_text"]
    # reject: the approve-mode strategy asks, is refused every time, never trades; the other
    # strategy trades as before.
    rej = run_portfolio(cfg, data, BacktestOptions(warmup=100), approvals="reject")
    by = {(ln.strategy_id, ln.symbol): ln for ln in rej.lines}
    assert by["breakout", "BTC/USDT"].fills == 0
    assert by["breakout", "BTC/USDT"].rejected_approvals == rej.counters["awaiting_approval"] > 0
    assert (
        by["trend", "ETH/USDT"].trades
        == {(x.strategy_id, x.symbol): x for x in auto.lines}["trend", "ETH/USDT"].trades
    )
    assert "reject" in rej.header["approvals_text"]
    assert rej.header["safety"]["breakout"]["approvals"].endswith("--approvals reject")


def test_limits_act_across_the_whole_book(btc: MarketData) -> None:
    """max_open_positions counts every symbol: at 1 the second symbol's entries are denied,
    at 2 both trade."""
    strategies = [_strategy("trend", "ema_cross", ["BTC/USDT", "ETH/USDT"])]
    data = {"BTC/USDT": btc, "ETH/USDT": _scaled(btc, 13.0, "ETH/USDT")}
    breakers = {"consecutive_losses": 1000, "global_consecutive_losses": 1000}
    one = run_portfolio(
        _config(strategies, risk={"max_open_positions": 1}, safety={"breakers": breakers}),
        data,
        BacktestOptions(warmup=100),
    )
    two = run_portfolio(
        _config(strategies, risk={"max_open_positions": 2}, safety={"breakers": breakers}),
        data,
        BacktestOptions(warmup=100),
    )
    assert one.denied.get("MAX_OPEN_POSITIONS", 0) > 0
    assert two.denied.get("MAX_OPEN_POSITIONS", 0) == 0
    assert one.metrics.trades < two.metrics.trades


def test_a_symbol_without_data_or_a_wrong_timeframe_is_refused(btc: MarketData) -> None:
    cfg = _config([_strategy("trend", "ema_cross", ["BTC/USDT", "ETH/USDT"])])
    with pytest.raises(BacktestError, match=r"no data for ETH/USDT .*--skip-missing"):
        run_portfolio(cfg, {"BTC/USDT": btc}, BacktestOptions())
    skipped = run_portfolio(cfg, {"BTC/USDT": btc}, BacktestOptions(), skip_missing=True)
    assert skipped.header["skipped"] == ["trend on ETH/USDT"]
    assert [(ln.strategy_id, ln.symbol) for ln in skipped.lines] == [("trend", "BTC/USDT")]
    ten = _config([{**_strategy("t", "ema_cross", ["BTC/USDT"]), "timeframe_s": 10}])
    with pytest.raises(BacktestError, match="trades 10 s bars but the BTC/USDT data has 60 s"):
        run_portfolio(ten, {"BTC/USDT": btc}, BacktestOptions())
    ok = run_portfolio(ten, {"BTC/USDT": btc}, BacktestOptions(timeframe_s=60))
    assert ok.header["strategies"][0]["timeframe_s"] == 60
    with pytest.raises(BacktestError, match="--qty is for a backtest of one strategy"):
        run_portfolio(cfg, {"BTC/USDT": btc}, BacktestOptions(qty=1.0))


# ------------------------------------------------------------------ the command line


def test_cli_sweep_json_serial(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli_main(
        [
            "sweep",
            "--strategy",
            "ema_cross",
            "--data",
            str(BARS_CSV),
            "--param",
            "fast=5,40",
            "--param",
            "slow=30,60",
            "--qty",
            "0.1",
            "--warmup",
            "100",
            "--no-breakers",
            "--end",
            "2022-01-03",
            "--serial",
            "--sort",
            "pnl",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert (out["combinations"], out["ran"], out["skipped"]) == (4, 3, 1)
    pnls = [r["metrics"]["pnl"] for r in out["results"]]
    assert pnls == sorted(pnls, reverse=True)
    assert out["cluster"] == "serial (this process)"


def test_cli_sweep_text_has_the_table_and_the_heatmap(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli_main(
        [
            "sweep",
            "--strategy",
            "ema_cross",
            "--data",
            str(BARS_CSV),
            "--param",
            "fast=5,10",
            "--param",
            "slow=30,60",
            "--qty",
            "0.1",
            "--end",
            "2022-01-02",
            "--serial",
            "--no-color",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "Sweep of ema_cross" in out and "combinations 4: ran 4, skipped 0" in out
    assert "sharpe by fast (rows) and slow (columns)" in out and "*" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--param", "fast=5:50"], "a range without a step"),
        (["--param", "fast=5", "--train", "7d"], "needs both --train and --test"),
        ([], "nothing to sweep"),
        (
            ["--param", "fast=5", "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"],
            "leave out --workers",
        ),
        (["--param", "fastt=5"], "ema_cross has no parameter 'fastt'"),
    ],
)
def test_cli_sweep_errors_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    rc = cli_main(
        [
            "sweep",
            "--strategy",
            "ema_cross",
            "--data",
            str(BARS_CSV),
            "--serial" if "--scheduler" not in argv else "--no-color",
            *argv,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_whole_config_backtest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], btc: MarketData
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[[strategies]]\nid = "trend"\nkind = "ema_cross"\nsymbols = ["BTC/USDT", "ETH/USDT"]\n'
        "timeframe_s = 60\nparams = { fast = 10, slow = 30 }\n"
        '[[strategies]]\nid = "breakout"\nkind = "donchian_breakout"\nsymbols = ["BTC/USDT"]\n'
        'timeframe_s = 60\napproval = "approve"\n'
    )
    eth = tmp_path / "eth.csv"
    lines = ["timestamp,open,high,low,close,volume"]
    o, h, lo, c, v = btc.cols
    for i in range(2000):
        lines.append(
            f"{btc.ts[i] // 1_000_000},{o[i] / 13},{h[i] / 13},{lo[i] / 13},{c[i] / 13},{v[i]}"
        )
    eth.write_text("\n".join(lines) + "\n")
    argv = [
        "backtest",
        "--config",
        str(cfg),
        "--data",
        f"BTC/USDT={BARS_CSV}",
        "--data",
        f"ETH/USDT={eth}",
        "--end",
        "2022-01-02",
        "--no-cache",
    ]
    assert cli_main([*argv, "--approvals", "reject", "--no-chart", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "Whole-config backtest" in out and "approvals   reject" in out
    assert "Per strategy and symbol" in out and "ETH/USDT" in out and "Combined" in out
    assert cli_main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["header"]["approvals"] == "auto"
    assert set(doc["strategies"]) == {"trend", "breakout"}
    assert cli_main(["backtest", "--config", str(cfg), "--data", f"BTC/USDT={BARS_CSV}"]) == 2
    assert "no data for ETH/USDT" in capsys.readouterr().err


def test_progress_is_one_line_on_a_terminal_and_silent_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    monkeypatch.setenv("COLUMNS", "120")

    from cockpit.progress import TerminalProgress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    meter = TerminalProgress("sweep combinations", tty)
    meter(Progress(3, 12, 2.0))
    meter(Progress(12, 12, 8.0))
    meter.close()
    text = tty.getvalue()
    assert "sweep combinations [######..................]  25%  3/12  ETA 0:06  1.50/s" in text
    assert "12/12" in text and text.endswith("\r\x1b[K")  # the line is cleared at the end
    pipe = io.StringIO()
    quiet = TerminalProgress("sweep combinations", pipe)
    quiet(Progress(3, 12, 2.0))
    quiet.close()
    assert pipe.getvalue() == ""


def test_cli_walk_forward_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli_main(
        [
            "sweep",
            "--strategy",
            "ema_cross",
            "--data",
            str(BARS_CSV),
            "--param",
            "fast=5,20",
            "--param",
            "slow=30,60",
            "--qty",
            "0.1",
            "--end",
            "2022-01-05",
            "--serial",
            "--train",
            "2d",
            "--test",
            "1d",
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0 and captured.err == ""  # no progress line when stderr is not a terminal
    doc = json.loads(captured.out)
    assert len(doc["windows"]) == 2 and doc["train_s"] == 2 * DAY
    for w in doc["windows"]:
        assert w["params"] is not None and w["combinations_run"] == 4
        assert w["in_sample"]["sharpe"] is not None and "pnl" in w["out_of_sample"]
    assert set(doc["overall"]) == {"in_sample", "out_of_sample", "efficiency"}


def test_an_unreachable_scheduler_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.research.cluster as cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 1.0)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = cli_main(
        [
            "sweep",
            "--strategy",
            "ema_cross",
            "--data",
            str(BARS_CSV),
            "--param",
            "fast=5",
            "--end",
            "2022-01-02",
            "--scheduler",
            f"tcp://127.0.0.1:{port}",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach the Dask scheduler" in err and "dask scheduler" in err
    assert len(err.strip().splitlines()) == 1


@settings(max_examples=int(os.environ.get("RESEARCH_EXAMPLES", "60")), deadline=None)
@given(
    st.lists(
        st.lists(st.integers(-1000, 1000), min_size=1, max_size=5, unique=True),
        min_size=1,
        max_size=3,
    ),
    st.integers(1, 40),
    st.integers(0, 2**32 - 1),
)
def test_grids_and_samples_cover_exactly_the_space(
    lists: list[list[int]], n: int, seed: int
) -> None:
    pairs = [(f"p{i}", ",".join(map(str, values))) for i, values in enumerate(lists)]
    specs = parse_params(pairs)
    grid = grid_combinations(specs)
    size = 1
    for values in lists:
        size *= len(values)
    keys = {json.dumps(c, sort_keys=True) for c in grid}
    assert len(grid) == len(keys) == size  # every point once
    assert all(c[f"p{i}"] in v for c in grid for i, v in enumerate(lists))
    drawn = random_combinations(specs, n, seed)
    assert len(drawn) == min(n, size)  # distinct points, as many as asked or the whole space
    assert {json.dumps(c, sort_keys=True) for c in drawn} <= keys
    assert drawn == random_combinations(specs, n, seed)
