"""Review reviewpaper2 (scratch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.backtest import BacktestOptions, load_market_data
from engine.backtest import run_backtest as run_bt
from engine.paper_broker import PaperBroker
from engine.strategies.base import Strategy, StrategyParams
from engine.types import Action, Bar, LimitSpec, Liquidity, PositionView, Side, Signal
from tests.test_backtest import base
from tests.test_limit_orders import FIXED, T0, fills, ms, order, quote
from tests.test_review_paper_fills import Q0


class LimitThenParams(StrategyParams):
    price: float = 100.0
    market_on: int = 1


class LimitThen(Strategy):
    """Bar 0: a buy limit at ``price``; bar ``market_on``: a market buy (any bar order)."""

    kind = "limit_then"
    Params = LimitThenParams
    params: LimitThenParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.n = -1

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        self.n += 1
        if self.n == 0:
            return Signal(Action.BUY, "t", "limit", 1.0, limit=LimitSpec(price=self.params.price))
        if self.n == self.params.market_on:
            return Signal(Action.BUY, "t", "market", 1.0)
        return None


def rows_csv(path: Path, rows: list[tuple[float, float, float, float]]) -> Path:
    lines = ["local_ts_ns,update_id,bid_price,bid_qty,ask_price,ask_qty"]
    for i, (b, bs, a, az) in enumerate(rows):
        lines.append(f"{Q0 + i * 250_000_000},{i},{b},{bs},{a},{az}")
    path.write_text("\n".join(lines) + "\n")
    return path


CALM = (99.99, 5.0, 100.01, 5.0)
DIP = (99.94, 5.0, 99.96, 5.0)  # quote 7 (1.75 s), the last of bar 1: ask 99.96 for 5


def limit_then_market(tmp_path: Path, price: float) -> list[tuple[str, float, float, str, float]]:
    """``close`` on quotes (1 s bars of four quotes): bar 0's buy limit 8 at ``price`` rests
    (from 1 ns after 1.0 s); quote 7 dips; bar 1 (closed by quote 8 at 2.0 s) buys 8 at
    market, executed against bar 1's close: quote 7."""
    data = rows_csv(tmp_path / "q.csv", [CALM] * 7 + [DIP] + [CALM] * 8)
    opts = BacktestOptions(
        strategy="tests.test_review_reviewpaper2:LimitThen",
        params={"price": price},
        qty=8.0,
        fee_bps=0.0,
        fill="close",
        timeframe_s=1,
        warmup=0,
    )
    r = run_bt(base(), load_market_data(data), opts)
    return [
        (f.client_order_id, f.qty, f.price, f.liquidity.value, (f.ts - Q0) / 1e9) for f in r.fills
    ]


def test_close_never_fills_a_working_limit_twice_from_the_bar_close_quote(tmp_path: Path) -> None:
    """``close`` on quote data showed the bar's last quote (7) to the working orders when it
    came, then again when the next quote closed the bar and the bar's order went out: a buy
    limit at 100 got 5 from quote 7's ask of 5, then 3 more from the same 5, and the market
    buy took 2 more of it at 99.96 (10 from an ask of 5). The working limit takes its 5; the
    bar's market buy meets what is left of quote 7: the touch is gone, it pays level 1."""
    level1 = 99.96 * (1 + base().paper.impact_bps_per_size * 1e-4)
    got = limit_then_market(tmp_path, 100.0)
    assert got[0] == ("ck-1-1", 5.0, 100.0, "maker", 1.75)
    assert [g[0] for g in got[1:]] == ["ck-1-2"]  # the limit got nothing more from quote 7
    (_, qty, price, liq, t) = got[1]
    assert (qty, liq, t) == (8.0, "taker", 2.000000001)
    assert price == pytest.approx(level1, rel=1e-12)


def test_close_fills_the_bar_order_at_the_close_touch_when_nothing_took_it(
    tmp_path: Path,
) -> None:
    """The boundary: a limit at 99.95 is not traded through by quote 7 (ask 99.96): the bar's
    market buy takes quote 7's touch (5 at 99.96), then 3 at level 1; the limit keeps resting."""
    level1 = 99.96 * (1 + base().paper.impact_bps_per_size * 1e-4)
    got = limit_then_market(tmp_path, 99.95)
    assert got[0] == ("ck-1-2", 5.0, 99.96, "taker", 2.000000001)
    assert got[1][:2] == ("ck-1-2", 3.0) and got[1][2] == pytest.approx(level1, rel=1e-12)
    assert len(got) == 2


# ---------------------------------------------------------- a limit restored after a restart


def _restored(limit: float, side: Side = Side.BUY) -> PaperBroker:
    """A GTC limit that came to rest on the paper venue (bid 99.5 / ask 100.5), restored on a
    fresh broker after a restart at 1 s."""
    b = PaperBroker(FIXED)
    b.submit(order(side=side, qty=1.0, limit=limit), T0)
    assert b.on_quote(quote(ms(40), bid=99.5, ask=100.5)) == []
    (working,) = b.open_orders()
    again = PaperBroker(FIXED)
    again.restore([working], ms(1000))
    return again


@pytest.mark.parametrize(
    ("side", "limit", "bid", "ask"),
    [(Side.BUY, 100.0, 97.0, 98.0), (Side.SELL, 100.0, 102.0, 103.0)],
)
def test_a_restored_limit_the_market_moved_through_fills_at_its_limit_not_the_new_touch(
    side: Side, limit: float, bid: float, ask: float
) -> None:
    """A buy limit at 100 resting before a restart, the market at 97/98 after it: the paper
    venue took it as a new order marketable on arrival, a taker at the touch: bought at 98,
    2 better than its own limit. It was on the book while the market went through it; a venue
    fills it there, at its limit, as a maker (a sell mirrors it)."""
    b = _restored(limit, side)
    (f,) = fills(b.on_quote(quote(ms(1100), bid=bid, ask=ask)))
    assert (f.qty, f.price, f.liquidity) == (1.0, 100.0, Liquidity.MAKER)
    assert f.fee == pytest.approx(100.0 * FIXED.maker_fee_bps * 1e-4)


def test_a_restored_limit_the_market_only_reached_waits_and_fills_at_its_limit_on_a_through() -> (
    None
):
    """The boundary: the ask at exactly the limit after the restart is a touch, not a trade
    through: nothing fills; the next ask a cent under the limit fills it at the limit."""
    b = _restored(100.0)
    assert fills(b.on_quote(quote(ms(1100), bid=99.0, ask=100.0))) == []
    (f,) = fills(b.on_quote(quote(ms(1200), bid=99.0, ask=99.99)))
    assert (f.price, f.liquidity) == (100.0, Liquidity.MAKER)


def test_a_restored_limit_still_away_from_the_market_rests_behind_its_queue() -> None:
    """Away from the market after the restart it rests as before, behind what the bid shows."""
    b = _restored(99.5)
    assert fills(b.on_quote(quote(ms(1100), bid=99.5, ask=100.5))) == []
    assert b.queue_ahead("o1") == pytest.approx(quote(0, bid=99.5, ask=100.5).bid_size)
