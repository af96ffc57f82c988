"""Safety invariants of the core, as properties over arbitrary market data."""

from __future__ import annotations

import math
from typing import ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from engine.config import parse_config
from engine.core import EngineCore
from engine.portfolio import Portfolio
from engine.strategies.base import Strategy
from engine.types import Bar, Instrument, PositionView, Quote, Signal


class _NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpyStrategy(Strategy):
    """Records every market event it is shown."""

    kind: ClassVar[str] = "spy"
    Params: ClassVar[type[BaseModel]] = _NoParams

    def __init__(self, strategy_id: str, symbol: str, params: BaseModel, allow_short: bool = False):
        super().__init__(strategy_id, symbol, params, allow_short)
        self.quotes: list[Quote] = []
        self.bars: list[Bar] = []

    @property
    def warmup_bars(self) -> int:
        return 0

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        self.bars.append(bar)
        return None

    def on_quote(self, quote: Quote, position: PositionView) -> Signal | None:
        self.quotes.append(quote)
        return None


prices = st.one_of(
    st.floats(min_value=90, max_value=110),
    st.sampled_from([0.0, -1.0, math.nan, math.inf, -math.inf]),
)
sizes = st.one_of(st.floats(min_value=0.001, max_value=10), st.sampled_from([0.0, -2.0, math.nan]))


@st.composite
def quote_streams(draw: st.DrawFn) -> list[Quote]:
    n = draw(st.integers(min_value=1, max_value=60))
    ts = 1_700_000_000_000_000_000
    out = []
    for _ in range(n):
        ts += draw(st.integers(min_value=-2_000_000_000, max_value=3_000_000_000))
        out.append(
            Quote("X/USDT", draw(prices), draw(prices), draw(sizes), draw(sizes), ts, ts, "sim")
        )
    return out


def _core(spy: SpyStrategy) -> EngineCore:
    cfg = parse_config(
        {
            "market": {"simulated": {"symbols": {"X/USDT": {"initial_price": 100.0}}}},
            "strategies": [
                {"id": "spy", "kind": "ema_cross", "symbols": ["X/USDT"], "timeframe_s": 1}
            ],
        }
    )
    inst = {"X/USDT": Instrument("X/USDT", "sim", 0.01, 0.001, 0.0, 5.0)}
    return EngineCore(cfg, [spy], inst, Portfolio(100_000.0))


@settings(max_examples=300, deadline=None)
@given(quote_streams())
def test_no_invalid_quote_ever_reaches_a_strategy(stream: list[Quote]) -> None:
    spy = SpyStrategy("spy", "X/USDT", _NoParams())
    core = _core(spy)
    for q in stream:
        core.on_quote(q)
    last = None
    for q in spy.quotes:
        for x in (q.bid, q.ask, q.bid_size, q.ask_size):
            assert math.isfinite(x) and x > 0
        assert q.bid <= q.ask
        assert last is None or q.ts_exchange >= last
        last = q.ts_exchange
    for bar in spy.bars:
        assert all(math.isfinite(x) and x > 0 for x in (bar.open, bar.high, bar.low, bar.close))
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
    accepted = core.validator.accepted
    assert accepted == len(spy.quotes)
    assert accepted + sum(core.validator.rejected.values()) == len(stream)
