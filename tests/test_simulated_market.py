"""The simulated market: determinism, validity, warm history, and the shape of its randomness."""

from __future__ import annotations

import dataclasses
import math
from itertools import islice, pairwise

import numpy as np
import pytest

from engine.config import SimulatedMarketConfig, SymbolSpec
from engine.marketdata.simulated import SimulatedMarket, _make_quote, resolve_start_ns
from engine.marketdata.validate import QuoteValidator
from engine.types import NS_PER_SECOND, Instrument, Quote

START = 1_700_000_000 * NS_PER_SECOND


def take(market: SimulatedMarket, n: int) -> list[Quote]:
    return list(islice(market.quotes(), n))


def mids_on_grid(qs: list[Quote], symbol: str, step_s: float) -> np.ndarray:
    """The last mid at or before each grid time: evenly spaced samples of one symbol."""
    ts = np.array([x.ts_exchange for x in qs if x.symbol == symbol])
    mid = np.array([x.mid for x in qs if x.symbol == symbol])
    grid = np.arange(ts[0], ts[-1], int(step_s * NS_PER_SECOND))
    return mid[np.searchsorted(ts, grid, side="right") - 1]


def abs_return_acf(mid: np.ndarray, lags: range) -> float:
    a = np.abs(np.diff(np.log(mid)))
    a = a - a.mean()
    return float(np.mean([np.dot(a[:-k], a[k:]) / np.dot(a, a) for k in lags]))


def test_same_seed_same_stream_different_seed_different() -> None:
    cfg = SimulatedMarketConfig(seed=7)
    a = take(SimulatedMarket(cfg, START), 20_000)
    b = take(SimulatedMarket(cfg, START), 20_000)
    assert a == b
    assert SimulatedMarket(cfg, START).history() == SimulatedMarket(cfg, START).history()
    c = take(SimulatedMarket(cfg.model_copy(update={"seed": 8}), START), 20_000)
    assert a != c
    assert a[0].ts_exchange != c[0].ts_exchange or a[0].bid != c[0].bid


def test_quotes_restart_from_the_beginning_on_each_call() -> None:
    m = SimulatedMarket(SimulatedMarketConfig(), START)
    assert take(m, 1_000) == take(m, 1_000)


def test_fast_quote_constructor_makes_real_quotes() -> None:
    made = _make_quote("X", 1.0, 2.0, 3.0, 4.0, 5, 6, "v")
    assert type(made) is Quote
    assert made == Quote("X", 1.0, 2.0, 3.0, 4.0, 5, 6, "v")
    assert hash(made) == hash(Quote("X", 1.0, 2.0, 3.0, 4.0, 5, 6, "v"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.bid = 9.0  # type: ignore[misc]


def test_200k_quotes_all_valid_ordered_and_on_the_grid() -> None:
    cfg = SimulatedMarketConfig(seed=3)
    m = SimulatedMarket(cfg, START)
    v = QuoteValidator()
    prev_ts = START
    seen = set()
    for quote in islice(m.quotes(), 200_000):
        assert v.check(quote) is None, (quote, v.last_reject)
        assert quote.ts_exchange >= prev_ts
        assert quote.ts_recv == quote.ts_exchange
        assert quote.venue == "sim"
        assert quote.ask > quote.bid
        prev_ts = quote.ts_exchange
        seen.add(quote.symbol)
    assert v.accepted == 200_000
    assert seen == set(cfg.symbols)
    # Prices on the tick grid, sizes whole lots of at least one lot (checked on a sample).
    for quote in take(m, 3_000):
        spec = cfg.symbols[quote.symbol]
        for px in (quote.bid, quote.ask):
            assert abs(px / spec.tick_size - round(px / spec.tick_size)) < 1e-6
        assert quote.ask - quote.bid >= spec.tick_size * (1 - 1e-9)
        for size in (quote.bid_size, quote.ask_size):
            lots = size / spec.lot_size
            assert lots >= 1 - 1e-9
            assert abs(lots - round(lots)) < 1e-6


def test_coarse_tick_and_tiny_spread_still_never_locked() -> None:
    cfg = SimulatedMarketConfig(
        symbols={"X": SymbolSpec(initial_price=1_000.0, tick_size=0.5, spread_bps=0.01)}
    )
    v = QuoteValidator()
    for quote in take(SimulatedMarket(cfg, START), 20_000):
        assert quote.ask - quote.bid >= 0.5
        assert v.check(quote) is None


def test_inter_arrival_mean_matches_config() -> None:
    cfg = SimulatedMarketConfig(
        quote_interval_ms=100.0, symbols={"X": SymbolSpec(initial_price=100.0)}
    )
    qs = take(SimulatedMarket(cfg, START), 50_000)
    gaps = np.diff([x.ts_exchange for x in qs]) / 1e6
    assert gaps.mean() == pytest.approx(100.0, rel=0.03)
    # exponential: the standard deviation is about the mean
    assert gaps.std() == pytest.approx(100.0, rel=0.05)


def test_instruments_come_from_the_symbol_specs() -> None:
    cfg = SimulatedMarketConfig()
    inst = SimulatedMarket(cfg, START, venue="paper-sim").instruments()
    assert set(inst) == set(cfg.symbols)
    btc = cfg.symbols["BTC/USDT"]
    assert inst["BTC/USDT"] == Instrument(
        "BTC/USDT", "paper-sim", btc.tick_size, btc.lot_size, btc.min_qty, btc.min_notional
    )


def test_history_is_warm_ordered_valid_and_ends_at_start() -> None:
    cfg = SimulatedMarketConfig(history_bars=300, history_timeframe_s=5)
    m = SimulatedMarket(cfg, START)
    bars = m.history()
    assert len(bars) == 300 * len(cfg.symbols)
    assert [b.ts_open for b in bars] == sorted(b.ts_open for b in bars)
    v = QuoteValidator()
    for sym, spec in cfg.symbols.items():
        own = [b for b in bars if b.symbol == sym]
        assert len(own) == 300
        assert own[-1].ts_close == START
        assert own[0].ts_open == START - 300 * 5 * NS_PER_SECOND
        for prev, cur in pairwise(own):
            assert cur.ts_open == prev.ts_close
            assert cur.open == prev.close  # one continuous path
        for b in own:
            assert v.check_bar(b) is None
            assert b.timeframe_s == 5 and b.volume > 0
        # the path ends exactly at the start price, on the tick grid
        assert own[-1].close == pytest.approx(spec.initial_price)
        assert len({b.close for b in own}) > 10  # it actually moves


def test_live_stream_continues_from_last_history_close() -> None:
    cfg = SimulatedMarketConfig(history_bars=100)
    m = SimulatedMarket(cfg, START)
    last_close = {b.symbol: b.close for b in m.history()}
    first_mid: dict[str, float] = {}
    for quote in m.quotes():
        first_mid.setdefault(quote.symbol, quote.mid)
        if len(first_mid) == len(cfg.symbols):
            break
    for sym, mid in first_mid.items():
        assert abs(mid / last_close[sym] - 1) < 5e-4  # within 5 bps: no jump at the seam


def test_start_prices_resume_where_a_previous_run_stopped() -> None:
    cfg = SimulatedMarketConfig()
    m = SimulatedMarket(cfg, START, start_prices={"ETH/USDT": 2_345.67, "DOGE/USDT": 1.0})
    closes = {b.symbol: b.close for b in m.history()}
    assert closes["ETH/USDT"] == pytest.approx(2_345.67)
    assert closes["BTC/USDT"] == pytest.approx(60_000.0)
    eth = next(x for x in m.quotes() if x.symbol == "ETH/USDT")
    assert abs(eth.mid / 2_345.67 - 1) < 5e-4
    with pytest.raises(ValueError, match="ETH/USDT"):
        SimulatedMarket(cfg, START, start_prices={"ETH/USDT": -1.0})


def test_no_history_still_streams() -> None:
    m = SimulatedMarket(SimulatedMarketConfig(history_bars=0), START)
    assert m.history() == []
    assert len(take(m, 100)) == 100


def test_long_history_timeframe_is_bounded_work() -> None:
    cfg = SimulatedMarketConfig(history_bars=2_000, history_timeframe_s=3_600)
    bars = SimulatedMarket(cfg, START).history()
    assert len(bars) == 2_000 * len(cfg.symbols)
    assert bars[-1].ts_close == START


def test_realised_volatility_matches_config_without_jumps() -> None:
    spec = SymbolSpec(initial_price=100.0, annual_volatility=0.6, jump_probability=0.0)
    cfg = SimulatedMarketConfig(seed=11, symbols={"A": spec, "B": spec})
    qs = take(SimulatedMarket(cfg, START), 300_000)
    for sym in ("A", "B"):
        r = np.diff(np.log(mids_on_grid(qs, sym, 10.0)))
        annual = r.std() * math.sqrt(365 * 86_400 / 10.0)
        assert 0.45 < annual < 0.75


def test_volatility_clusters() -> None:
    # Jumps are left out here: their heavy tail would drown the autocorrelation estimate.
    spec = SymbolSpec(initial_price=100.0, jump_probability=0.0)
    cfg = SimulatedMarketConfig(seed=5, symbols={"A": spec, "B": spec})
    qs = take(SimulatedMarket(cfg, START), 300_000)
    for sym in ("A", "B"):
        mid = mids_on_grid(qs, sym, 10.0)
        clustered = abs_return_acf(mid, range(1, 11))
        shuffled = np.exp(np.cumsum(np.random.default_rng(0).permutation(np.diff(np.log(mid)))))
        assert clustered > 0.05
        assert abs_return_acf(shuffled, range(1, 11)) < clustered / 2


def test_spread_widens_with_volatility() -> None:
    spec = SymbolSpec(initial_price=100.0, spread_bps=5.0, tick_size=0.0001, jump_probability=0.0)
    cfg = SimulatedMarketConfig(seed=2, symbols={"A": spec})
    qs = take(SimulatedMarket(cfg, START), 200_000)
    mid = mids_on_grid(qs, "A", 10.0)
    ts = np.array([x.ts_exchange for x in qs])
    grid = np.arange(ts[0], ts[-1], 10 * NS_PER_SECOND)
    spread_bps = np.array([x.spread / x.mid * 1e4 for x in qs])
    slot = np.searchsorted(grid, ts, side="right") - 1
    mean_spread = np.bincount(slot, spread_bps, grid.size) / np.maximum(
        np.bincount(slot, None, grid.size), 1
    )
    abs_ret = np.abs(np.diff(np.log(mid)))
    corr = np.corrcoef(abs_ret, mean_spread[1:])[0, 1]
    assert corr > 0.1


def test_jumps_occur_at_the_configured_rate() -> None:
    p = 0.01
    spec = SymbolSpec(
        initial_price=100.0,
        annual_volatility=0.1,
        tick_size=0.0001,
        jump_probability=p,
        jump_size_bps=100.0,
    )
    # One quote a second for ~55 hours: many volatility regimes, so the regime-dependent
    # jump rate averages out to the configured one.
    cfg = SimulatedMarketConfig(seed=9, quote_interval_ms=1_000.0, symbols={"A": spec})
    qs = take(SimulatedMarket(cfg, START), 200_000)
    mid = np.array([x.mid for x in qs])
    moves = np.abs(np.diff(np.log(mid))) * 1e4
    jumps = int((moves > 25.0).sum())  # diffusion alone moves < 1 bps per quote here
    assert 0.8 * p * len(moves) < jumps < 1.2 * p * len(moves)
    big = moves[moves > 25.0]
    assert 70.0 < float(np.median(big)) < 140.0  # typical size is about jump_size_bps


def test_resolve_start() -> None:
    assert resolve_start_ns("now", 123) == 123
    assert resolve_start_ns("2024-01-01T00:00:00Z", 0) == 1_704_067_200 * NS_PER_SECOND
    assert resolve_start_ns("2024-01-01T00:00:00.000001", 0) == 1_704_067_200 * NS_PER_SECOND + 1000
    assert resolve_start_ns("2024-01-01T01:00:00+01:00", 0) == 1_704_067_200 * NS_PER_SECOND
