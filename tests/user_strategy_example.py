"""A user strategy outside the engine package, loaded by import path in the registry tests.

Config: ``kind = "user_strategy_example:CloseAbove"`` with ``params = { level = 100.0 }``. The other
classes here are deliberately broken so the registry's error messages can be tested.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from engine.strategies.base import Strategy, StrategyParams
from engine.types import Action, Bar, PositionView, Signal


class CloseAboveParams(StrategyParams):
    level: Annotated[float, Field(gt=0)] = 100.0


class CloseAbove(Strategy):
    """Buys when flat and the close is above a fixed level (a toy, for loading by import path)."""

    kind = "close_above"
    Params = CloseAboveParams
    params: CloseAboveParams

    @property
    def warmup_bars(self) -> int:
        return 0

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        level = self.params.level
        if bar.close > level and position.qty == 0:
            return Signal(
                action=Action.BUY,
                rule="close_above",
                reason=f"close {bar.close:.2f} above {level:.2f}",
                confidence=1.0,
                inputs={"close": bar.close, "level": level},
            )
        return None


class NotAStrategy:
    """A class that is not a Strategy subclass."""


NOT_A_CLASS = 42


class Unfinished(Strategy):
    """Forgot on_bar: abstract, cannot be instantiated."""


class LooseParams(BaseModel):
    level: float = 1.0  # extra keys silently ignored: the registry refuses this


class LooseStrategy(Strategy):
    Params = LooseParams

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        return None


class Exploding(Strategy):
    """Its constructor fails, as user code sometimes does."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        return None
