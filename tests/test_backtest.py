"""`cockpit backtest`: data formats, fill models, options, errors and the CLI surface.

The fill-model tests use a scripted strategy (below) that buys and sells on given bar numbers, so
each expected price can be read straight off the hand-made bars.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cockpit.backtest_cli import add_backtest_parser, run_backtest
from cockpit.backtest_report import render_chart
from cockpit.cli import _Parser
from engine.backtest import (
    BacktestError,
    BacktestOptions,
    MarketData,
    build_backtest_config,
    load_market_data,
    run_backtest_core,
)
from engine.backtest import run_backtest as run_bt
from engine.config import Config, load_config, parse_config
from engine.marketdata.replay import ReplayError
from engine.strategies.base import Strategy, StrategyParams, position_sign
from engine.types import NS_PER_SECOND, Action, Bar, PositionView, Signal
from tests.conftest import BARS_CSV, BOOKTICKER_CSV, PACKED, default_dict, merge

T0 = 1_704_067_200 * NS_PER_SECOND  # 2024-01-01T00:00:00Z
MIN = 60 * NS_PER_SECOND
SCRIPTED = "tests.test_backtest:Scripted"


class ScriptedParams(StrategyParams):
    buy: tuple[int, ...] = ()
    sell: tuple[int, ...] = ()


class Scripted(Strategy):
    """Buys on the bars numbered in ``buy`` and sells on those in ``sell`` (0 = first bar seen).

    A sell while long is an exit (reduce-only); a sell while flat is a short entry if allowed.
    """

    kind = "scripted"
    Params = ScriptedParams
    params: ScriptedParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.n = -1

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        self.n += 1
        pos = position_sign(position)
        if self.n in self.params.buy:
            return Signal(Action.BUY, "scripted", "buy", 1.0, reduce_only=pos < 0)
        if self.n in self.params.sell:
            if pos > 0:
                return Signal(Action.SELL, "scripted", "sell", 1.0, reduce_only=True)
            if self.allow_short:
                return Signal(Action.SELL, "scripted", "short", 1.0)
        return None


def bars_csv(path: Path, rows: list[tuple[float, float, float, float]], vol: float = 1e9) -> Path:
    """1-minute bars from (open, high, low, close) rows, ISO timestamps from 2024-01-01."""
    lines = ["timestamp,open,high,low,close,volume"]
    for i, (o, h, lo, c) in enumerate(rows):
        minute = i
        lines.append(f"2024-01-01T{minute // 60:02d}:{minute % 60:02d}:00Z,{o},{h},{lo},{c},{vol}")
    path.write_text("\n".join(lines) + "\n")
    return path


# A gently rising market: each bar opens 1 above the last close and closes 2 above its open.
RISING = [(100.0 + 3 * i, 102.0 + 3 * i, 100.0 + 3 * i, 102.0 + 3 * i) for i in range(12)]


def base() -> Config:
    return load_config()


def base_streak3() -> Config:
    """The default with the loss-streak breaker of 3 it had when these tests were written (the
    shipped demo now allows 12): the strategy stops where the tests expect it to."""
    return parse_config(merge(default_dict(), {"safety": {"breakers": {"consecutive_losses": 3}}}))


def scripted(
    tmp_path: Path,
    *,
    buy: list[int],
    sell: list[int],
    rows: Any = None,
    cfg: Config | None = None,
    **opts: Any,
) -> Any:
    data = bars_csv(tmp_path / "bars.csv", rows or RISING)
    options = BacktestOptions(
        strategy=SCRIPTED,
        params={"buy": buy, "sell": sell},
        qty=1.0,
        fee_bps=0.0,
        **opts,
    )
    return run_bt(cfg or base(), data, options)


# ------------------------------------------------------------------ data formats


def test_loads_the_real_one_minute_bars_and_infers_60_s() -> None:
    data = load_market_data(BARS_CSV)
    assert data.kind == "bars"
    assert len(data) == 45_031
    assert data.timeframe_s == 60
    assert data.cols[3][0] == 46377.0  # first close


def test_loads_the_real_bookticker_quotes() -> None:
    data = load_market_data(BOOKTICKER_CSV)
    assert data.kind == "quotes"
    assert len(data) == 28_040
    bid, ask, _bq, _aq = data.cols
    assert bid[0] == 61837.63 and ask[0] == 61837.64


def test_ccxt_json_and_epoch_ms_csv_give_the_same_bars(tmp_path: Path) -> None:
    rows = [
        [1_704_067_200_000 + i * 300_000, 10.0 + i, 11.0 + i, 9.0 + i, 10.5 + i, 7]
        for i in range(5)
    ]
    (tmp_path / "o.json").write_text(json.dumps(rows))
    lines = ["timestamp,open,high,low,close,volume"] + [",".join(map(str, r)) for r in rows]
    (tmp_path / "o.csv").write_text("\n".join(lines))
    a = load_market_data(tmp_path / "o.json")
    b = load_market_data(tmp_path / "o.csv")
    assert a.fmt == "ccxt json" and b.fmt == "csv bars"
    assert a.timeframe_s == b.timeframe_s == 300
    assert a.ts == b.ts and a.cols[:4] == b.cols[:4]
    # ccxt volume is in the base currency, the CSV's in the quote currency (the defaults); both
    # are kept in the quote currency, so the same numbers mean 7 BTC here and 7 USDT there.
    assert (a.volume_unit, b.volume_unit) == ("base", "quote")
    assert a.cols[4] == [7 * c for c in b.cols[3]] and b.cols[4] == [7.0] * 5
    told = load_market_data(tmp_path / "o.json", volume_unit="quote")
    assert told.cols == b.cols and told.volume_unit_given


def test_symbol_comes_from_the_data(tmp_path: Path) -> None:
    rows = [[1_704_067_200_000 + i * 60_000, 10, 11, 9, 10, 1] for i in range(40)]
    path = tmp_path / "eth.json"
    path.write_text(json.dumps({"symbol": "ETH/USDT", "ohlcv": rows}))
    data = load_market_data(path)
    assert data.symbol == "ETH/USDT"
    cfg = build_backtest_config(base(), data, BacktestOptions(strategy="ema_cross"))
    assert cfg.strategies[0].symbols == ["ETH/USDT"]
    assert cfg.market.replay is not None and cfg.market.replay.symbol == "ETH/USDT"
    assert cfg.market.replay.lot_size == 0.0001  # the config's ETH grid
    csv_path = tmp_path / "sol.csv"
    csv_path.write_text(
        "timestamp,open,high,low,close,volume,symbol\n"
        "1704067200000,1,1,1,1,1,SOL/USDT\n1704067260000,1,1,1,1,1,SOL/USDT\n"
    )
    assert load_market_data(csv_path).symbol == "SOL/USDT"


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("bad.csv", "timestamp,open,high,low,close,volume\n1,2,3,4,5,6\n1,2,x,4,5,6\n", "row 3"),
        ("short.csv", "timestamp,open,high,low,close,volume\n1,2,3,4,5\n", "row 2"),
        ("ts.csv", "timestamp,open,high,low,close,volume\nyesterday,1,1,1,1,1\n", "row 2"),
        ("what.csv", "time,price\n1,2\n", "row 1"),
        (
            "q.csv",
            "local_ts_ns,update_id,bid_price,bid_qty,ask_price,ask_qty\n1,2,3,4,5\n",
            "row 2",
        ),
        ("e.csv", "", "empty file"),
        ("j.json", "[[1704067200000, 1, 2, 1, 2, 3], [1704067260000, 1, 2]]", "row 2"),
        ("k.json", "[[1704067200000, 1, 2, 1, 2, 3], [1704067260000, 1, 2, null, 2, 3]]", "row 2"),
        ("m.json", "[[1704067200000, 1, 2", "line 1"),
        ("n.json", '{"candles": []}', "ohlcv"),
    ],
)
def test_bad_files_name_the_row(tmp_path: Path, name: str, text: str, needle: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ReplayError) as exc:
        load_market_data(path)
    message = str(exc.value)
    assert needle in message and str(path) in message
    assert "\n" not in message


def test_bad_values_are_counted_at_the_boundary_not_fatal(tmp_path: Path) -> None:
    rows = list(RISING)
    rows[5] = (100.0, 90.0, 110.0, 100.0)  # high below low: the validator's bad_ohlc
    res = scripted(tmp_path, buy=[], sell=[], rows=rows)
    assert res.rejected == {"bad_ohlc": 1}


# ------------------------------------------------------------------ fill models


def test_fill_close_fills_at_the_signal_bars_close(tmp_path: Path) -> None:
    res = scripted(tmp_path, buy=[2], sell=[6], fill="close", slippage="none")
    buy, sell = res.fills
    assert (buy.price, buy.ts) == (RISING[2][3], T0 + 3 * MIN + 1)  # close of bar 2, +1 ns
    assert (sell.price, sell.ts) == (RISING[6][3], T0 + 7 * MIN + 1)
    assert res.metrics.trades == 1
    assert res.metrics.pnl == pytest.approx(RISING[6][3] - RISING[2][3])


def test_fill_next_open_fills_at_the_next_bars_open(tmp_path: Path) -> None:
    res = scripted(tmp_path, buy=[2], sell=[6], fill="next-open", slippage="none")
    buy, sell = res.fills
    assert (buy.price, buy.ts) == (RISING[3][0], T0 + 3 * MIN + 1)
    assert (sell.price, sell.ts) == (RISING[7][0], T0 + 7 * MIN + 1)


def test_fill_live_fills_on_the_next_bar_after_the_latency(tmp_path: Path) -> None:
    res = scripted(tmp_path, buy=[2], sell=[6], fill="live", slippage="none")
    buy, sell = res.fills
    # The live engine on bar data: the order arrives after its latency and meets the next
    # bar's (close) quote.
    assert (buy.price, buy.ts) == (RISING[3][3], T0 + 4 * MIN)
    assert (sell.price, sell.ts) == (RISING[7][3], T0 + 8 * MIN)


def test_slippage_model_pays_the_spread_and_none_does_not(tmp_path: Path) -> None:
    kw = {"buy": [2], "sell": [6], "fill": "close", "spread_bps": 10.0}
    model = scripted(tmp_path, slippage="model", **kw)
    ideal = scripted(tmp_path, slippage="none", **kw)
    b, s = model.fills
    assert b.price == pytest.approx(RISING[2][3] * (1 + 5e-4))
    assert s.price == pytest.approx(RISING[6][3] * (1 - 5e-4))
    expected = (RISING[2][3] + RISING[6][3]) * 5e-4
    assert model.metrics.slippage_paid == pytest.approx(expected)
    assert ideal.metrics.slippage_paid == 0.0
    assert ideal.metrics.pnl - model.metrics.pnl == pytest.approx(expected)


def test_impact_beyond_the_bars_volume_is_the_brokers_model(tmp_path: Path) -> None:
    data = bars_csv(tmp_path / "thin.csv", RISING, vol=51.0)  # displayed size 0.5 at close 102
    opts = BacktestOptions(
        strategy=SCRIPTED, params={"buy": [0], "sell": []}, qty=1.0, fill="close"
    )
    res = run_bt(base(), data, opts)
    # 1.0 walks the touch (0.5) and one impact level, 0.8 bps further (the calibrated default).
    assert [(f.qty, f.price) for f in res.fills] == [
        (0.5, 102.0),
        (pytest.approx(0.5), pytest.approx(102.0 * 1.00008)),
    ]


def test_warmup_bars_produce_no_orders(tmp_path: Path) -> None:
    res = scripted(tmp_path, buy=[1, 4], sell=[2, 6], fill="close", warmup=3)
    assert res.header["warmup_bars"] == 3
    # Bar 1's buy and bar 2's sell fell in the warm-up; bar 4 buys, bar 6 sells.
    assert [f.price for f in res.fills] == [RISING[4][3], RISING[6][3]]
    assert res.counters["decisions"] == 2
    assert res.ts[0] == T0 + 3 * MIN  # the equity series starts at the first traded bar


def test_start_and_end_cut_the_data(tmp_path: Path) -> None:
    res = scripted(
        tmp_path,
        buy=[0],
        sell=[3],
        fill="close",
        start_ns=T0 + 2 * MIN,
        end_ns=T0 + 8 * MIN,
    )
    assert res.header["events"] == 6
    assert [f.price for f in res.fills] == [RISING[2][3], RISING[5][3]]
    with pytest.raises(BacktestError, match="no data between"):
        scripted(tmp_path, buy=[], sell=[], start_ns=T0 + 100 * MIN)


def test_long_only_by_default_and_shorts_when_allowed(tmp_path: Path) -> None:
    flat = scripted(tmp_path, buy=[5], sell=[2], fill="close")
    assert [f.side for f in flat.fills] == ["buy"]
    short = scripted(tmp_path, buy=[5], sell=[2], fill="close", allow_short=True)
    assert [f.side for f in short.fills] == ["sell", "buy"]
    assert short.trips[0].direction == -1


def test_qty_and_fraction_size_the_orders(tmp_path: Path) -> None:
    data = bars_csv(tmp_path / "b.csv", RISING)
    fixed = BacktestOptions(strategy=SCRIPTED, params={"buy": [2]}, qty=3.0, fill="close")
    assert run_bt(base(), data, fixed).fills[0].qty == 3.0
    frac = BacktestOptions(
        strategy=SCRIPTED, params={"buy": [2]}, fraction=0.05, fill="close", cash=10_000.0
    )
    fill = run_bt(base(), data, frac).fills[0]
    assert fill.qty == pytest.approx(0.05 * 10_000.0 / RISING[2][3], rel=1e-3)
    with pytest.raises(BacktestError, match="mutually exclusive"):
        BacktestOptions(qty=1.0, fraction=0.1)


def test_limits_act_unless_lifted(tmp_path: Path) -> None:
    # 200 units at ~106 = 21,200 > the default max order notional of 10,000: the core sizes it
    # down to fit the limits; --no-limits lets it through whole.
    data = bars_csv(tmp_path / "b.csv", RISING)
    opts = BacktestOptions(strategy=SCRIPTED, params={"buy": [2]}, qty=200.0, fill="close")
    capped = run_bt(base(), data, opts)
    assert sum(f.qty for f in capped.fills) * RISING[2][3] <= 10_000.0 + 1e-6
    free = run_bt(base(), data, replace(opts, limits=False))
    assert sum(f.qty for f in free.fills) == 200.0
    assert free.header["limits"] is False


def test_breakers_act_unless_switched_off(tmp_path: Path) -> None:
    # A falling market and a strategy that buys high and sells low, four times: a
    # consecutive_losses breaker of 3 pauses it; --no-breakers lets all four trades happen.
    falling = [(200.0 - 3 * i, 200.0 - 3 * i, 198.0 - 3 * i, 198.0 - 3 * i) for i in range(12)]
    kw = {"buy": [0, 2, 4, 6], "sell": [1, 3, 5, 7], "rows": falling, "fill": "close"}
    on = scripted(tmp_path, cfg=base_streak3(), **kw)
    off = scripted(tmp_path, breakers=False, **kw)
    assert on.metrics.trades == 3
    assert any("consecutive_losses" in note for note in on.safety_notes)
    assert on.denied.get("STRATEGY_PAUSED") == 1
    assert off.metrics.trades == 4 and off.safety_notes == []
    assert off.header["breakers"] is False


def test_param_errors_name_the_param(tmp_path: Path) -> None:
    data = load_market_data(bars_csv(tmp_path / "b.csv", RISING))

    def problems(**kw: Any) -> list[str]:
        with pytest.raises(BacktestError) as exc:
            build_backtest_config(base(), data, BacktestOptions(**kw))
        return exc.value.problems

    assert problems(strategy="ema_cross", params={"fast": 70}) == [
        "--param fast=70: fast must be less than slow (60)"  # the configured ema_cross has 60
    ]
    [line] = problems(strategy="rsi_reversion", params={"perod": 5})
    assert line.startswith("--param perod: rsi_reversion has no parameter 'perod'")
    assert "period" in line
    [line] = problems(strategy="donchian_breakout", params={"period": "x"})
    assert line.startswith("--param period='x': ")
    [line] = problems(strategy="ema_crossover")
    assert "did you mean 'ema_cross'" in line
    [line] = problems(strategy=None)
    assert "pick one with --strategy" in line


def test_a_builtin_kind_not_in_the_config(tmp_path: Path) -> None:
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(
        '[[strategies]]\nid = "mine"\nkind = "donchian_breakout"\nsymbols = ["BTC/USDT"]\n'
    )
    cfg = load_config(cfg_path)
    data = load_market_data(bars_csv(tmp_path / "b.csv", RISING))
    built = build_backtest_config(cfg, data, BacktestOptions())  # the only strategy: "mine"
    assert built.strategies[0].id == "mine" and built.strategies[0].timeframe_s == 60
    other = build_backtest_config(
        cfg, data, BacktestOptions(strategy="ema_cross", params={"fast": 3, "slow": 5})
    )
    s = other.strategies[0]
    assert (s.id, s.kind, s.params, s.approval) == (
        "ema_cross",
        "ema_cross",
        {"fast": 3, "slow": 5},
        "auto",
    )


def test_a_quote_backtest_close_and_next_open(tmp_path: Path) -> None:
    opts = {"strategy": "ema_cross", "params": {"fast": 3, "slow": 8}, "qty": 0.05}
    opts["timeframe_s"] = 1  # the configured ema_cross trades 20 s bars
    data = load_market_data(BOOKTICKER_CSV)
    res = {
        m: run_bt(base_streak3(), data, BacktestOptions(fill=m, **opts))
        for m in ("close", "next-open")
    }
    for mode, r in res.items():
        assert r.fills, mode
        assert r.header["data_kind"] == "quotes" and r.header["timeframe_s"] == 1
        for f, ref in zip(r.fills, r.fill_refs, strict=True):
            # Immediate fills at the far side of a real quote: within the spread of the mid.
            assert abs(f.price - ref) < 0.05
    # next-open executes on the very quote that closed the bar, close on the one before it.
    assert res["close"].fills[0].ts == res["next-open"].fills[0].ts


def test_quote_warmup_builds_bars_as_the_core_does() -> None:
    data = load_market_data(BOOKTICKER_CSV)
    opts = BacktestOptions(
        strategy="ema_cross", params={"fast": 3, "slow": 8}, qty=0.05, timeframe_s=1
    )
    full = run_bt(base(), data, opts)
    warm = run_bt(base(), data, replace(opts, warmup=30))
    assert warm.header["warmup_bars"] == 30
    assert warm.fills and warm.fills[0].ts >= full.ts[0] + 30 * NS_PER_SECOND
    assert warm.events_processed < full.events_processed


def test_progress_and_cancel() -> None:
    import threading

    data = load_market_data(BARS_CSV)
    opts = BacktestOptions(strategy="ema_cross", params={"fast": 10, "slow": 30}, fill="close")
    cfg = build_backtest_config(base(), data, opts)
    seen: list[tuple[int, int]] = []
    run_backtest_core(cfg, data, opts, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (45_031, 45_031) and len(seen) == 1
    stop = threading.Event()
    stop.set()
    with pytest.raises(BacktestError, match="cancelled"):
        run_backtest_core(cfg, data, opts, cancel=stop)


def test_from_bars_arrays_and_to_dict_is_json() -> None:
    import numpy as np

    n = 300
    close = 100 + np.sin(np.arange(n) / 5) * 5
    data = MarketData.from_bars(
        T0 + np.arange(n) * MIN, close, close + 1, close - 1, close, np.full(n, 1e6)
    )
    assert data.timeframe_s == 60
    opts = BacktestOptions(strategy="ema_cross", params={"fast": 3, "slow": 8}, fill="close")
    res = run_bt(base(), data, opts)
    doc = json.loads(json.dumps(res.to_dict(include_fills=True), allow_nan=False))
    assert doc["metrics"]["fills"] == len(res.fills) > 0
    assert len(doc["fills"]) == len(res.fills)
    assert doc["header"]["fill"] == "close"
    assert len(doc["equity_curve"]) <= 500


def test_chart_respects_the_width() -> None:
    import numpy as np

    eq = 100_000 + np.cumsum(np.sin(np.arange(5000) / 50))
    ts = T0 + np.arange(5000) * MIN
    for width in (60, 100, 140):
        text = render_chart(ts, eq, width=width, height=20)
        lines = text.splitlines()
        assert max(len(line) for line in lines) <= width
        assert "Equity" in text and "Drawdown" in text and "\x1b" not in text


# ------------------------------------------------------------------ the command line


def cli(*argv: str) -> int:
    parser = _Parser(prog="cockpit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    add_backtest_parser(sub)
    args = parser.parse_args(["backtest", *argv])
    assert isinstance(args, argparse.Namespace) and args.command == "backtest"
    return run_backtest(args)


def test_cli_report_json_and_trades_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bars_csv(tmp_path / "b.csv", RISING)
    trades = tmp_path / "fills.csv"
    args = ["--data", str(data), "--strategy", SCRIPTED, "--param", "buy=[2]"]
    args += ["--param", "sell=[6]", "--qty", "1", "--fill", "close", "--no-breakers"]
    assert cli(*args, "--trades", str(trades)) == 0
    out = capsys.readouterr().out
    assert "Backtest scripted" in out and "off (--no-breakers)" in out
    assert "Sharpe" in out and "Equity" in out and "wrote 2 fills" in out
    with trades.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["side"] for r in rows] == ["buy", "sell"]
    assert float(rows[0]["price"]) == RISING[2][3]
    assert cli(*args, "--json", "--no-chart") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["metrics"]["trades"] == 1 and doc["header"]["breakers"] is False


def test_cli_compare_slippage_flags_a_strategy_that_only_wins_without(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bars_csv(tmp_path / "b.csv", RISING)
    args = ["--data", str(data), "--strategy", SCRIPTED, "--param", "buy=[2]"]
    args += ["--param", "sell=[3]", "--qty", "1", "--fill", "close", "--fee-bps", "0"]
    # +3 per unit between the two closes; a 600 bps spread costs ~6.2 per unit round trip.
    args += ["--spread-bps", "600", "--compare-slippage", "--no-chart", "--no-color"]
    assert cli(*args) == 0
    out = capsys.readouterr().out
    assert "Slippage comparison" in out
    assert "!! wins only without slippage" in out
    assert cli(*args, "--json") == 0
    doc = json.loads(capsys.readouterr().out)["compare_slippage"]
    assert doc["wins_only_without_slippage"] is True
    assert doc["slippage_cost"] == pytest.approx((RISING[2][3] + RISING[3][3]) * 0.03)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--strategy", "ema_cross", "--param", "fast=99"], "--param fast=99: fast must be less"),
        (["--strategy", "nope"], "unknown strategy 'nope'"),
        (["--strategy", "ema_cross", "--start", "2030-01-01"], "no data between"),
    ],
)
def test_cli_errors_are_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    data = bars_csv(tmp_path / "b.csv", RISING)
    assert cli("--data", str(data), *argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_bad_file_is_one_line_naming_the_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "timestamp,open,high,low,close,volume\n1704067200000,1,1,1,1,1\n17,1,1,oops,1,1\n"
    )
    assert cli("--data", str(bad), "--strategy", "ema_cross") == 2
    err = capsys.readouterr().err.strip()
    assert err == f"backtest error: market data: {bad}: row 3: cannot parse low 'oops'"


def test_cli_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--qty", "1", "--fraction", "0.1"],
        ["--param", "fast"],
        ["--fill", "tomorrow"],
        ["--fraction", "2"],
        ["--start", "not-a-date"],
    ):
        with pytest.raises(SystemExit) as exc:
            cli("--data", "x.csv", *argv)
        assert exc.value.code == 2
    capsys.readouterr()


def test_config_and_profile_are_honoured(tmp_path: Path) -> None:
    doc = default_dict()
    doc["broker"]["paper"]["taker_fee_bps"] = 25
    cfg = parse_config(doc)
    data = load_market_data(bars_csv(tmp_path / "b.csv", RISING))
    built = build_backtest_config(cfg, data, BacktestOptions(strategy="ema_cross"))
    assert built.paper.taker_fee_bps == 25
    over = build_backtest_config(cfg, data, BacktestOptions(strategy="ema_cross", fee_bps=3))
    assert (over.paper.taker_fee_bps, over.paper.maker_fee_bps) == (3, 3)
    assert built.engine.mode == "paper" and built.market.source == "replay"


def test_cli_stop_loss_on_the_shipped_minute_bars_shows_stop_exits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The README's example with ``--stop-loss 0.5``: stop exits in the report and the JSON."""
    shipped = PACKED / "nautilus_trader/btc-perp-20211231-20220201_1m.csv.xz"
    args = ["--data", str(shipped), "--strategy", "ema_cross", "--param", "fast=10"]
    args += ["--param", "slow=30", "--qty", "0.1", "--fee-bps", "10", "--warmup", "1000"]
    args += ["--no-breakers", "--stop-loss", "0.5", "--no-chart", "--no-color"]
    assert cli(*args) == 0
    out = capsys.readouterr().out
    assert "exits      stop-loss 0.5%" in out
    closed = next(line for line in out.splitlines() if line.startswith("  closed by"))
    count = int(closed.split("stop-loss ")[1].split(" ")[0])
    assert count > 0 and "strategy signal" in closed
    assert cli(*args, "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["header"]["exits"] == {"stop_loss_pct": 0.5}
    stops = doc["exits"]["stop_loss"]
    assert stops["count"] == count and stops["pnl"] < 0  # a stop-loss closes losers
    assert sum(v["count"] for v in doc["exits"].values()) == doc["metrics"]["trades"]


def test_cli_exit_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--stop-loss", "0"],
        ["--stop-loss", "100"],
        ["--take-profit", "-1"],
        ["--trailing-atr", "nan"],
        ["--atr-period", "0"],
        ["--time-stop", "1.5"],
    ):
        with pytest.raises(SystemExit) as exc:
            cli("--data", "x.csv", *argv)
        assert exc.value.code == 2, argv
    err = capsys.readouterr().err
    assert "--stop-loss must be below 100 %" in err


def test_cli_atr_period_without_a_trail_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bars_csv(tmp_path / "b.csv", RISING)
    assert cli("--data", str(data), "--strategy", "ema_cross", "--atr-period", "7") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "atr_period is set but trailing_atr is not" in err


FLAT = (100.0, 100.0, 100.0, 100.0)


@pytest.mark.parametrize("fill", ["live", "close", "next-open"])
@pytest.mark.parametrize(
    ("drop", "expected"),
    [
        ((100.0, 100.5, 97.0, 99.0), 98.0),  # through the stop inside the bar: at the stop
        ((96.0, 99.0, 95.0, 98.0), 96.0),  # opened beyond it: at the open, never the stop
        ((100.0, 103.0, 97.0, 101.0), 98.0),  # stop and target in one bar: the stop first
    ],
)
def test_a_bar_stop_fills_at_its_level_or_a_gaps_open_in_every_fill_mode(
    tmp_path: Path, fill: str, drop: tuple[float, ...], expected: float
) -> None:
    rows = [FLAT] * 5 + [drop] + [(99.0, 99.0, 99.0, 99.0)] * 3
    result = scripted(
        tmp_path,
        buy=[2],
        sell=[],
        rows=rows,
        fill=fill,
        slippage="none",
        breakers=False,
        stop_loss_pct=2.0,
        take_profit_pct=2.5,
    )
    buy, sell = result.fills
    assert buy.price == 100.0 and sell.side == "sell"
    assert sell.price == pytest.approx(expected)
    assert result.exits["stop_loss"]["count"] == 1
    assert result.exits["stop_loss"]["pnl"] == pytest.approx(expected - 100.0)
    assert result.header["exits"] == {"stop_loss_pct": 2.0, "take_profit_pct": 2.5}
