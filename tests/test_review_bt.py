"""Adversarial review of research at scale (`cockpit backtest --config`, `cockpit sweep`,
walk-forward, Dask): each test pins a hole found by attacking the numbers a trader would trust,
failing before its fix. Data is a few hundred synthetic bars; every run is bounded.

Attacks that held (tried, no hole):
- per-strategy net/open PnL and fees of a whole-config report sum to the combined PnL and fees;
- `--approvals reject`: the approve-mode strategy has 0 fills and every request counted rejected;
- a strategy's line is the same alone and beside a strategy on a second symbol whose data starts
  1,500 bars later and runs on after the first one ends (its later warm-up bars change nothing);
- rows with a duplicate timestamp or NaN close are rejected and counted in a whole-config report;
- a `+02:00` offset, and rows mixing offset and naive stamps, give the same instants as UTC;
- `--random 4 --seed 7` twice draws the same combinations, in the same order, with the same Sharpe;
- a swept value the strategy does not accept (2.5, 0, -3, 1e3, true for an int) is skipped with
  its reason, never clamped or rounded into a run;
- walk-forward windows: training ends where the test begins (``between`` is half-open and bar
  windows are whole bars), the winner is chosen on the training rows only, a test run's warm-up
  rows precede the test window and never trade;
- `--sort`: n/a and failed rows go last; drawdown and fees rank lowest first on positive figures;
- under `--approvals reject` the auto strategy's line is the one it has with the approve-mode
  strategy taken out of the config (rejected requests move no limit, throttle or breaker);
- the kill switch's daily-loss limit trips on the combined equity of two symbols and every order
  after it is denied ENGINE_HALTED;
- protective exits are checked from the bar after the entry's fill (never on the entry bar's
  range), in every fill model;
- `--workers -1`, `100000` and `abc` are one usage line each.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cockpit.cli import main as cli_main
from engine.backtest import BacktestError, BacktestOptions, MarketData
from engine.backtest import run_backtest as run_bt
from engine.config import parse_config
from engine.research.portfolio import run_portfolio
from tests.conftest import default_dict

T0 = 1_704_067_200 * 1_000_000_000  # 2024-01-01T00:00:00Z


def _bars(n: int = 600, symbol: str = "XBT/USD") -> MarketData:
    """``n`` 1-minute bars: a slow wave around 40,000, every bar well formed."""
    t = np.arange(n)
    close = 40_000.0 + 400.0 * np.sin(t / 25.0) + t * 0.5
    open_ = np.concatenate([[close[0]], close[:-1]])
    high, low = np.maximum(open_, close) + 5.0, np.minimum(open_, close) - 5.0
    ts = T0 + t * 60 * 1_000_000_000
    return MarketData.from_bars(
        ts, open_, high, low, close, np.full(n, 1e9), symbol=symbol, timeframe_s=60
    )


# ------------------------------------------------------------------ the config's instrument grid


@pytest.mark.parametrize("symbol", ["XBT/USD", "BTC/USDT"])
def test_a_whole_config_backtest_trades_on_the_configs_replay_grid(symbol: str) -> None:
    """A config whose ``[market.replay]`` names the symbol with its venue's grid (lot 0.01,
    tick 0.5) is what paper trading and the single backtest size on: a fixed 0.015 is 0.01.
    The whole-config backtest put the replay defaults (lot 0.00001), or the simulated market's
    spec for a symbol it has, in its place: 0.015 a trade, 50% more exposure, fees and PnL
    than the same config would trade, and "a config of one strategy on one symbol is the
    single backtest bit for bit" broke. Both now take the symbol's grid from the same place."""
    doc = default_dict()
    doc["portfolio"]["quote_currency"] = symbol.split("/")[1]
    doc["market"]["source"] = "replay"
    doc["market"]["replay"] = {
        "path": "bars.csv",
        "kind": "bars",
        "symbol": symbol,
        "tick_size": 0.5,
        "lot_size": 0.01,
        "min_notional": 5.0,
    }
    strategy: dict[str, Any] = {
        "id": "trend",
        "kind": "ema_cross",
        "symbols": [symbol],
        "timeframe_s": 60,
        "params": {"fast": 5, "slow": 20},
        "sizing": {"model": "fixed_qty", "qty": 0.015},
        "approval": "auto",
    }
    doc["strategies"] = [strategy]
    cfg = parse_config(doc)
    data = _bars(symbol=symbol)
    o = BacktestOptions(warmup=50, fee_bps=10.0, fill="close", breakers=False)
    single = run_bt(cfg, data, replace(o, strategy="trend"))
    whole = run_portfolio(cfg, {symbol: data}, o)
    assert single.metrics.trades >= 3
    assert {f.qty for f in single.fills} == {0.01}
    assert whole.metrics == single.metrics
    assert np.array_equal(whole.equity, single.equity)
    assert whole.final_portfolio["positions"] == single.final_portfolio["positions"]


# ------------------------------------------------------------------ a file naming another symbol


def _csv(path: Path, data: MarketData, symbol: str | None) -> Path:
    o, h, lo, c, v = data.col_arrays
    rows = ["timestamp,open,high,low,close,volume" + (",symbol" if symbol else "")]
    for i, ts in enumerate(data.ts_array.tolist()):
        row = f"{ts // 1_000_000},{o[i]},{h[i]},{lo[i]},{c[i]},{v[i]}"
        rows.append(row + (f",{symbol}" if symbol else ""))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_whole_config_refuses_a_file_whose_rows_name_another_symbol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--data ETH/USDT=btc.csv`` where every row of btc.csv says BTC/USDT traded the config's
    ETH strategy (its limits, its instrument) on BTC's prices and reported it as ETH, exit 0.
    The prefix names a file that does not name its symbol; a file naming another one is
    refused in one line (exit 2); the same prefix as the file's, or none, still runs."""
    cfg = tmp_path / "eth.toml"
    cfg.write_text(
        '[[strategies]]\nid = "e"\nkind = "ema_cross"\nsymbols = ["ETH/USDT"]\n'
        'timeframe_s = 60\nparams = { fast = 5, slow = 20 }\napproval = "auto"\n'
        'sizing = { model = "fixed_qty", qty = 0.01 }\n'
    )
    bars = _bars(300, "BTC/USDT")
    named = _csv(tmp_path / "btc.csv", bars, "BTC/USDT")
    argv = ["backtest", "--config", str(cfg), "--no-cache", "--json"]
    rc = cli_main([*argv, "--data", f"ETH/USDT={named}"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "BTC/USDT" in err and "ETH/USDT" in err
    unnamed = _csv(tmp_path / "bars.csv", bars, None)
    assert cli_main([*argv, "--data", f"ETH/USDT={unnamed}"]) == 0
    assert json.loads(capsys.readouterr().out)["lines"][0]["symbol"] == "ETH/USDT"
    eth = _csv(tmp_path / "eth.csv", bars, "ETH/USDT")
    assert cli_main([*argv, "--data", f"ETH/USDT={eth}"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("command", ["backtest", "sweep"])
def test_symbol_naming_another_symbol_than_the_files_rows_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """``--symbol ETH/USDT`` ("the data's symbol") on a file whose rows say BTC/USDT ran
    ETH/USDT's instrument on BTC's prices and headed the report ETH/USDT, exit 0. One line,
    exit 2; the file's own symbol, or a file naming none, still runs."""
    bars = _bars(300, "BTC/USDT")
    named = _csv(tmp_path / "btc.csv", bars, "BTC/USDT")
    unnamed = _csv(tmp_path / "bars.csv", bars, None)
    argv = [command, "--strategy", "ema_cross", "--no-cache", "--json"]
    if command == "sweep":
        argv += ["--param", "fast=5,8", "--param", "slow=20", "--serial"]
    rc = cli_main([*argv, "--data", str(named), "--symbol", "ETH/USDT"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "--symbol ETH/USDT" in err and "BTC/USDT" in err
    for path, symbol in ((named, "BTC/USDT"), (unnamed, "ETH/USDT")):
        assert cli_main([*argv, "--data", str(path), "--symbol", symbol]) == 0
        capsys.readouterr()


# ------------------------------------------------------------------ a symbol all warm-up


def test_a_symbol_whose_every_bar_is_warm_up_is_refused_not_reported_as_idle() -> None:
    """With ``--warmup`` at or over a symbol's bars, its strategies warmed up on every bar
    and traded none: the report gave them a line of 0 trades ("n/a" win rate) beside the
    symbols that traded, as if they had never signalled, exit 0. Refused naming the symbol
    (as a symbol without data is); one bar left to trade still runs."""
    doc = default_dict()
    doc["strategies"] = [
        {
            "id": sid,
            "kind": "ema_cross",
            "symbols": [sym],
            "timeframe_s": 60,
            "params": {"fast": 5, "slow": 20},
            "sizing": {"model": "fixed_qty", "qty": 0.001},
            "approval": "auto",
        }
        for sid, sym in (("a", "BTC/USDT"), ("b", "ETH/USDT"))
    ]
    cfg = parse_config(doc)
    data = {"BTC/USDT": _bars(400, "BTC/USDT"), "ETH/USDT": _bars(250, "ETH/USDT")}
    with pytest.raises(BacktestError, match=r"--warmup 250 takes all 250 bars of ETH/USDT"):
        run_portfolio(cfg, data, BacktestOptions(warmup=250))
    ok = run_portfolio(cfg, data, BacktestOptions(warmup=249))
    assert {ln.symbol for ln in ok.lines} == {"BTC/USDT", "ETH/USDT"}


@pytest.mark.parametrize("command", ["backtest", "sweep"])
def test_a_run_whose_warm_up_takes_every_bar_is_not_a_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """``--warmup 5000`` on 300 bars warmed up on all of them and traded none: the backtest
    printed a report of 0 trades, the sweep a table of 0-trade rows with figures (exit 0), as
    if no combination ever signalled. A run that cannot trade is an error: the backtest one
    line (exit 2), the sweep a row with its error (every row failed: exit 1); one bar left
    to trade still runs."""
    data = _csv(tmp_path / "bars.csv", _bars(300, "BTC/USDT"), None)
    argv = [command, "--strategy", "ema_cross", "--data", str(data), "--no-cache", "--json"]
    if command == "sweep":
        argv += ["--param", "fast=5,8", "--param", "slow=20", "--serial"]
    rc = cli_main([*argv, "--warmup", "300"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if command == "backtest":
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert "--warmup 300 takes all 300 bars" in err
    else:
        assert rc == 1, err
        rows = json.loads(out)["results"]
        assert rows and all(r["metrics"] is None and "--warmup 300" in r["error"] for r in rows)
    assert cli_main([*argv, "--warmup", "299"]) == 0
    capsys.readouterr()
