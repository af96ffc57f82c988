"""Strategies: they see market events and a read-only position view, never a broker."""

from engine.strategies.base import Strategy, StrategyParams
from engine.strategies.builtin import DonchianBreakout, EMACross, RSIReversion
from engine.strategies.registry import BUILTINS, build_strategies, load_strategy_class

__all__ = [
    "BUILTINS",
    "DonchianBreakout",
    "EMACross",
    "RSIReversion",
    "Strategy",
    "StrategyParams",
    "build_strategies",
    "load_strategy_class",
]
