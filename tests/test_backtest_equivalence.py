"""A backtest gives the trades paper trading gives: the same fills, to the nanosecond.

The live engine (``engine.runtime.Engine``: feed, core, paper broker, SQLite journal) replays a
file at maximum speed with its strategies in auto mode; its fills are read back from the journal.
The backtest runs the same file with ``--fill live`` semantics. Fill ids, order ids, sides,
quantities, prices, fees and timestamps must all be identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.backtest import (
    BacktestOptions,
    build_backtest_config,
    load_market_data,
    run_backtest_core,
)
from engine.config import Config
from engine.journal import read_rows
from engine.runtime import Engine
from engine.types import Fill
from tests.conftest import BARS_CSV, BOOKTICKER_CSV, fast_config

EMA = {
    "id": "ema",
    "kind": "ema_cross",
    "symbols": ["BTC/USDT"],
    "timeframe_s": 1,
    "params": {"fast": 3, "slow": 8},
    "sizing": {"model": "fixed_qty", "qty": 0.05},
    "approval": "auto",
    "allow_short": True,
}
RSI = {
    "id": "rsi",
    "kind": "rsi_reversion",
    "symbols": ["BTC/USDT"],
    "timeframe_s": 2,
    "params": {"period": 6},
    "sizing": {"model": "fixed_fraction", "fraction": 0.05},
    "approval": "auto",
    "allow_short": True,
}


def replay_config(
    data_dir: Path, kind: str, path: Path, strategies: list[dict[str, Any]]
) -> Config:
    """The tests' fast config (relaxed loss-streak breakers) replaying ``path``."""
    return fast_config(
        data_dir,
        market={"source": "replay", "replay": {"path": str(path), "kind": kind, "speed": "max"}},
        strategies=strategies,
    )


async def paper_trade(cfg: Config, data_dir: Path, max_events: int | None = None) -> list[Fill]:
    engine = Engine(cfg, data_dir)
    await engine.start()
    try:
        await engine.run(max_events=max_events)
    finally:
        await engine.stop()
    return [
        Fill.from_dict(r.payload["fill"]) for r in read_rows(data_dir / "journal.sqlite", {"fill"})
    ]


def assert_same_fills(live: list[Fill], backtest: list[Fill]) -> None:
    assert len(live) == len(backtest)
    for a, b in zip(live, backtest, strict=True):
        assert (a.fill_id, a.client_order_id, a.strategy_id) == (
            b.fill_id,
            b.client_order_id,
            b.strategy_id,
        )
        assert (a.side, a.qty, a.price, a.fee, a.liquidity, a.ts) == (
            b.side,
            b.qty,
            b.price,
            b.fee,
            b.liquidity,
            b.ts,
        )
    assert live == backtest


async def test_real_quotes_backtest_equals_paper_trading(data_dir: Path) -> None:
    """Two strategies on the real Binance L1 quotes: every fill identical."""
    cfg = replay_config(data_dir, "quotes", BOOKTICKER_CSV, [EMA, RSI])
    live = await paper_trade(cfg, data_dir)
    result = run_backtest_core(cfg, load_market_data(BOOKTICKER_CSV), BacktestOptions(fill="live"))
    assert len(live) >= 15  # enough trading to mean something
    assert any(f.fill_id.endswith("-2") for f in live)  # including a partial (two-level) fill
    assert_same_fills(live, result.fills)
    assert result.final_portfolio["fees_paid"] == pytest.approx(sum(f.fee for f in live))


async def test_cli_path_backtest_equals_paper_trading(tmp_path: Path) -> None:
    """The `cockpit backtest --strategy ema --fill live` path: config built from options."""
    live_dir = tmp_path / "live"
    cfg = replay_config(live_dir, "quotes", BOOKTICKER_CSV, [EMA])
    live = await paper_trade(cfg, live_dir)
    data = load_market_data(BOOKTICKER_CSV)
    opts = BacktestOptions(strategy="ema", fill="live", slippage="model")
    built = build_backtest_config(cfg, data, opts)
    assert built.strategies == cfg.strategies
    result = run_backtest_core(built, data, opts)
    assert len(live) >= 10
    assert_same_fills(live, result.fills)


async def test_real_bars_backtest_equals_paper_trading(data_dir: Path) -> None:
    """The first 4,000 real 1-minute bars: the live engine fills on the next bar's quote."""
    strat = dict(EMA, timeframe_s=60, params={"fast": 5, "slow": 20})
    cfg = replay_config(data_dir, "bars", BARS_CSV, [strat])
    n = 4000
    live = await paper_trade(cfg, data_dir, max_events=n)
    data = load_market_data(BARS_CSV)
    result = run_backtest_core(cfg, data, BacktestOptions(fill="live", end_ns=data.ts[n]))
    assert result.events_processed == n
    assert len(live) >= 40
    assert_same_fills(live, result.fills)


# ------------------------------------------------------------------ with protective exits

EXITS = {"stop_loss_pct": 0.05, "take_profit_pct": 0.08, "trailing_atr": 2.0, "atr_period": 5}


async def test_real_quotes_with_exits_backtest_equals_paper_trading(data_dir: Path) -> None:
    """Stops, targets and trails fired on quotes: the same exits, the same fills."""
    strat = dict(EMA, exits=EXITS)
    cfg = replay_config(data_dir, "quotes", BOOKTICKER_CSV, [strat])
    live = await paper_trade(cfg, data_dir)
    result = run_backtest_core(cfg, load_market_data(BOOKTICKER_CSV), BacktestOptions(fill="live"))
    assert_same_fills(live, result.fills)
    fired = {k for k in result.exits if k != "signal"}
    assert {"stop_loss", "take_profit", "trailing_stop"} & fired, result.exits
    assert sum(v["count"] for k, v in result.exits.items() if k != "signal") >= 3
    decisions = [
        r.payload["decision"]
        for r in read_rows(data_dir / "journal.sqlite", {"decision"})
        if r.payload["decision"]["rule"] in fired
    ]
    assert decisions and all(d["reduce_only"] and d["entry_decision_id"] for d in decisions)


async def test_real_bars_with_exits_backtest_equals_paper_trading(data_dir: Path) -> None:
    """On 1-minute bars the exits fire inside the bar at the level (or the open of a gap):
    the paper engine replaying the bars and the backtest give the same fills."""
    strat = dict(
        EMA,
        timeframe_s=60,
        params={"fast": 5, "slow": 20},
        exits={**EXITS, "stop_loss_pct": 0.3, "take_profit_pct": 0.6, "time_stop_bars": 30},
    )
    cfg = replay_config(data_dir, "bars", BARS_CSV, [strat])
    n = 4000
    live = await paper_trade(cfg, data_dir, max_events=n)
    data = load_market_data(BARS_CSV)
    result = run_backtest_core(cfg, data, BacktestOptions(fill="live", end_ns=data.ts[n]))
    assert result.events_processed == n
    assert_same_fills(live, result.fills)
    assert len({k for k in result.exits if k != "signal"}) >= 3, result.exits


# ------------------------------------------------------------------ with limit orders

LIMIT = {"order_type": "limit", "limit_offset_ticks": 1, "limit_ttl_s": 3}


def _limit_outcomes(data_dir: Path) -> dict[str, list[str]]:
    """The journaled fate of each limit order: its last status and reason."""
    last: dict[str, dict[str, Any]] = {}
    for r in read_rows(data_dir / "journal.sqlite", {"order"}):
        o = r.payload["order"]
        if o["order_type"] == "limit":
            last[o["client_order_id"]] = o
    out: dict[str, list[str]] = {}
    for o in last.values():
        out.setdefault(o["status"], []).append(o["reason"])
    return out


async def test_real_quotes_with_limit_entries_backtest_equals_paper_trading(
    data_dir: Path,
) -> None:
    """EMA entries as limits one tick behind the touch with a 3 s time to live, on the real
    quotes: the limits that fill are makers at their price behind their queue, the rest are
    cancelled by the engine when their time runs out, and the backtest gives the same fills."""
    strat = dict(EMA, params={**EMA["params"], **LIMIT})
    cfg = replay_config(data_dir, "quotes", BOOKTICKER_CSV, [strat])
    live = await paper_trade(cfg, data_dir)
    result = run_backtest_core(cfg, load_market_data(BOOKTICKER_CSV), BacktestOptions(fill="live"))
    assert_same_fills(live, result.fills)
    outcomes = _limit_outcomes(data_dir)
    assert outcomes.get("filled"), outcomes
    assert any("time to live 3s ran out" in r for r in outcomes.get("canceled", [])), outcomes
    assert any(f.liquidity == "maker" for f in live)


async def test_real_bars_with_limit_entries_backtest_equals_paper_trading(
    data_dir: Path,
) -> None:
    """The same on 1-minute bars (a limit meets each later bar's close quote)."""
    strat = dict(
        EMA,
        timeframe_s=60,
        params={"fast": 5, "slow": 20, **LIMIT, "limit_offset_ticks": 0, "limit_ttl_s": 300},
    )
    cfg = replay_config(data_dir, "bars", BARS_CSV, [strat])
    n = 4000
    live = await paper_trade(cfg, data_dir, max_events=n)
    data = load_market_data(BARS_CSV)
    result = run_backtest_core(cfg, data, BacktestOptions(fill="live", end_ns=data.ts[n]))
    assert result.events_processed == n
    assert_same_fills(live, result.fills)
    outcomes = _limit_outcomes(data_dir)
    assert outcomes.get("filled") and outcomes.get("canceled"), outcomes
