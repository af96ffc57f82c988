"""Sizing models: each formula, the zero cases, and never negative or NaN."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import SizingConfig
from engine.sizing import fixed_fraction, fixed_qty, kelly, size_for, volatility_scaled


def test_fixed_qty() -> None:
    cfg = SizingConfig(model="fixed_qty", qty=0.5)
    assert fixed_qty(cfg) == 0.5
    assert size_for(cfg, 100_000.0, 60_000.0, None) == 0.5
    assert fixed_qty(SizingConfig()) == 0.0  # no qty configured


def test_fixed_fraction() -> None:
    cfg = SizingConfig(model="fixed_fraction", fraction=0.02)
    # 2% of 100k = 2,000 notional at 50,000 -> 0.04
    assert fixed_fraction(cfg, 100_000.0, 50_000.0) == pytest.approx(0.04)
    assert size_for(cfg, 100_000.0, 50_000.0, None) == pytest.approx(0.04)


def test_volatility_scaled() -> None:
    cfg = SizingConfig(model="volatility", risk_fraction=0.01, atr_multiple=2.0)
    # risk 1,000 over 2 * ATR 250 = 500 per unit -> 2 units
    assert volatility_scaled(cfg, 100_000.0, 250.0) == pytest.approx(2.0)
    assert size_for(cfg, 100_000.0, 3_000.0, 250.0) == pytest.approx(2.0)


@pytest.mark.parametrize("atr", [None, 0.0, -1.0, math.nan, math.inf])
def test_volatility_without_usable_atr_is_zero(atr: float | None) -> None:
    cfg = SizingConfig(model="volatility")
    assert volatility_scaled(cfg, 100_000.0, atr) == 0.0
    assert size_for(cfg, 100_000.0, 3_000.0, atr) == 0.0


def test_kelly() -> None:
    cfg = SizingConfig(model="kelly", win_rate=0.55, payoff_ratio=1.2, kelly_fraction=0.25)
    f_star = 0.55 - 0.45 / 1.2  # 0.175
    expected = 0.25 * f_star * 100_000.0 / 50_000.0
    assert kelly(cfg, 100_000.0, 50_000.0) == pytest.approx(expected)
    assert size_for(cfg, 100_000.0, 50_000.0, None) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("win_rate", "payoff"),
    [(0.4, 1.0), (0.5, 1.0), (0.0, 2.0), (0.3, 2.0)],  # f* < 0, = 0, < 0, < 0 (0.3 - 0.35)
)
def test_kelly_without_edge_is_zero(win_rate: float, payoff: float) -> None:
    cfg = SizingConfig(model="kelly", win_rate=win_rate, payoff_ratio=payoff)
    assert kelly(cfg, 100_000.0, 50_000.0) == 0.0


@pytest.mark.parametrize("model", ["fixed_qty", "fixed_fraction", "volatility", "kelly"])
@pytest.mark.parametrize(
    ("equity", "price"),
    [(0.0, 100.0), (-1.0, 100.0), (100.0, 0.0), (100.0, -5.0), (math.nan, 1.0), (1.0, math.nan)],
)
def test_non_positive_equity_or_price_is_zero(model: str, equity: float, price: float) -> None:
    cfg = SizingConfig(model=model, qty=1.0)  # type: ignore[arg-type]
    assert size_for(cfg, equity, price, 10.0) == 0.0


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
maybe_atr = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))


@settings(deadline=None, max_examples=300)
@given(
    model=st.sampled_from(["fixed_qty", "fixed_fraction", "volatility", "kelly"]),
    equity=finite,
    price=finite,
    atr=maybe_atr,
    win_rate=st.floats(0, 1),
    payoff=st.floats(0.01, 100),
)
def test_size_never_negative_or_nan(
    model: str, equity: float, price: float, atr: float | None, win_rate: float, payoff: float
) -> None:
    cfg = SizingConfig(
        model=model,  # type: ignore[arg-type]
        qty=1.0,
        win_rate=win_rate,
        payoff_ratio=payoff,
    )
    qty = size_for(cfg, equity, price, atr)
    assert qty >= 0.0
    assert math.isfinite(qty)
