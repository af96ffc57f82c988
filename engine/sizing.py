"""Position sizing: how much to trade once a strategy has decided to trade.

Every function is pure and returns a raw quantity in base units (float, >= 0, never NaN). It is
not rounded to the lot grid and not capped: rounding and limits belong to the pre-trade checks,
so a sizing model can never be the only thing standing between a signal and an oversized order.
Bad inputs (non-positive or non-finite equity, price or ATR) size to 0 rather than raise, because
"don't trade" is the safe answer when the inputs are unknown.
"""

from __future__ import annotations

import math

from engine.config import SizingConfig

_INF = math.inf


def _clean(qty: float) -> float:
    """Clamp a computed size to a finite, non-negative float."""
    if not 0.0 < qty < _INF:  # NaN fails too
        return 0.0
    return qty


def _positive(x: float | None) -> bool:
    return x is not None and 0.0 < x < _INF  # positive and finite (NaN fails)


def fixed_qty(cfg: SizingConfig) -> float:
    """The configured quantity, whatever the price: simplest to reason about, ignores risk."""
    return _clean(cfg.qty) if cfg.qty is not None else 0.0


def fixed_fraction(cfg: SizingConfig, equity: float, price: float) -> float:
    """Quantity whose notional is ``cfg.fraction`` of equity, so size scales with the account."""
    if not (_positive(equity) and _positive(price)):
        return 0.0
    return _clean(cfg.fraction * equity / price)


def volatility_scaled(cfg: SizingConfig, equity: float, atr: float | None) -> float:
    """Quantity that risks ``risk_fraction`` of equity on an ``atr_multiple`` * ATR adverse move.

    Volatile markets get smaller positions, quiet ones larger; the notional cap in the checks
    stops a near-zero ATR from producing an absurd order. No ATR (warm-up) means no trade.
    """
    if atr is None or not (_positive(equity) and _positive(atr)):
        return 0.0
    return _clean(cfg.risk_fraction * equity / (cfg.atr_multiple * atr))


def kelly(cfg: SizingConfig, equity: float, price: float) -> float:
    """Fractional Kelly: ``f* = W - (1 - W) / R``, trade ``kelly_fraction * f*`` of equity.

    A negative or zero edge (``f* <= 0``) sizes to 0: Kelly never says "bet the other way" here,
    the strategy decides direction. The fraction (a quarter by default) tames estimation error.
    """
    if not (_positive(equity) and _positive(price)):
        return 0.0
    edge = cfg.win_rate - (1.0 - cfg.win_rate) / cfg.payoff_ratio
    if not edge > 0.0:
        return 0.0
    return _clean(cfg.kelly_fraction * edge * equity / price)


def size_for(cfg: SizingConfig, equity: float, price: float, atr: float | None) -> float:
    """Dispatch on ``cfg.model``; 0 whenever equity or price is non-positive or not finite."""
    if not (_positive(equity) and _positive(price)):
        return 0.0
    model = cfg.model
    if model == "fixed_fraction":
        return fixed_fraction(cfg, equity, price)
    if model == "fixed_qty":
        return fixed_qty(cfg)
    if model == "volatility":
        return volatility_scaled(cfg, equity, atr)
    if model == "kelly":
        return kelly(cfg, equity, price)
    raise ValueError(f"unknown sizing model {model!r}")
