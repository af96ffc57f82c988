"""Review reviewpaper2: does paper trading (and the backtest on the same broker) flatter?

The holes, each pinned by a test that failed before its fix (its boundary beside it):

- ``--fill close`` on quote data showed the bar's last quote twice to the orders working then
  (once when it came, once as the bar's execution quote): a buy limit filled 8 from an ask of
  5, the size queued ahead of it traded twice, and the bar's market order took the touch the
  limit had already taken;
- a limit restored after a restart that the market had moved through took as a new order at
  the better touch (a buy limit at 100 bought at 98, a taker) instead of filling at its limit;
- a cancel decided on a quote (a move, a time to live found on it, a kill) took the limit off
  the book before that quote reached the paper venue: a limit the quote traded through never
  filled, though a venue had filled it before the cancel arrived (a strategy moving its limit
  away from a run through its price dodged every adverse fill); a time to live that ran out
  more than a latency before the quote still cancels first.

Attacks that held (hand-computed on scripted quotes):

- a market order larger than the L2 book walks every level, one fill each, then the rest at
  the extrapolated density (7 past 100/100.5/101 of 1 each: 103.0, the mean of 101.5..104.5);
  on L1 each level costs ``impact_bps_per_size`` more; never a remainder at the touch;
- IOC takes what lies within its limit (3 of 5 across three levels) and cancels the rest; FOK
  fills 3.0 exactly and nothing of 3.0000001; post-only at or through the touch is rejected;
- every fill row pays its own fee at its own price (taker 10 bps on each walked level, maker
  2 bps on a resting fill);
- latency, the far side, a touch that does not fill a limit, the queue ahead, a buy and a sell
  on one quote, rejected quotes: as pinned in tests/test_review_paper_fills.py (run again);
- bar data has no spread: every fill model is zero-spread unless ``--spread-bps`` (said in
  ``--help`` and the report header); a bar fill outside the bar's range is only ever worse
  for the trader (an impact walk past the high, a resting limit filled at its price on a gap);
- the portfolio's equity is cash less every fee; the backtest trades CSV carries each fill's
  fee and slippage against the reference price the fill executed on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from engine.backtest import BacktestOptions, load_market_data
from engine.backtest import run_backtest as run_bt
from engine.paper_broker import PaperBroker
from engine.strategies.base import Strategy, StrategyParams
from engine.types import (
    NS_PER_MS,
    Action,
    Bar,
    Fill,
    LimitSpec,
    Liquidity,
    OrderStatus,
    PositionView,
    Quote,
    Side,
    Signal,
)
from tests.test_backtest import base
from tests.test_limit_orders import FIXED, SYM, T0, fills, ms, order, quote
from tests.test_review_paper_fills import Q0, fills_of, paper_on_a_calm_quote


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


# ---------------------------------------------------------- a cancel decided on a trade-through


def test_a_limit_cancelled_on_the_quote_that_trades_through_it_has_filled() -> None:
    """The engine hands a quote to the strategies before the paper venue: a cancel decided on
    it (a move, a time to live, a kill) took the limit off the book before the quote could
    fill it, so a strategy that moves its limit away when the market runs through it never
    got the fill a venue had already given (it executed that quote before a cancel sent after
    it arrived). Now the limit meets the quote first: it fills at its limit, as a maker."""
    b = PaperBroker(FIXED)
    b.submit(order(qty=1.0, limit=100.0), T0)
    assert b.on_quote(quote(ms(40), bid=99.5, ask=100.5)) == []  # rests first in line
    through = quote(ms(100), bid=98.5, ask=99.5)
    got = b.cancel("o1", ms(100), "moved", {SYM: through})
    (f,) = fills(got)
    assert (f.qty, f.price, f.liquidity) == (1.0, 100.0, Liquidity.MAKER)
    assert got[-1].order.status is OrderStatus.FILLED
    assert b.open_orders() == []


def test_a_limit_cancelled_on_a_quote_that_only_reaches_it_is_cancelled() -> None:
    """The boundary: an ask at exactly the limit does not trade through it: cancelled."""
    b = PaperBroker(FIXED)
    b.submit(order(qty=1.0, limit=100.0), T0)
    b.on_quote(quote(ms(40), bid=99.5, ask=100.5))
    got = b.cancel("o1", ms(100), "moved", {SYM: quote(ms(100), bid=99.0, ask=100.0)})
    assert fills(got) == []
    assert got[-1].order.status is OrderStatus.CANCELED and got[-1].order.reason == "moved"


def test_a_cancel_after_a_quote_was_shown_takes_nothing_twice_from_it() -> None:
    """A quote the limit already met (a cancel between quotes: a command, a clock tick) is not
    shown again as a fresh book: the 3 of the ask's 5 that went to the size ahead, then the 2
    the limit took, are gone; the cancel cancels what is left."""
    b = PaperBroker(FIXED)
    b.submit(order(qty=4.0, limit=100.0), T0)
    b.on_quote(quote(ms(40), bid=100.0, ask=100.5, bid_size=3.0))  # joins the bid: 3 ahead
    through = quote(ms(100), bid=99.0, ask=99.5, ask_size=5.0)
    (f,) = fills(b.on_quote(through))
    assert (f.qty, f.price) == (2.0, 100.0)
    got = b.cancel("o1", ms(150), "by hand", {SYM: through})
    assert fills(got) == []
    assert got[-1].order.status is OrderStatus.CANCELED and got[-1].order.filled_qty == 2.0


class MoveParams(StrategyParams):
    first: float = 100.0
    then: float = 99.0


class Move(Strategy):
    """Bar 0: a buy limit at ``first``; bar 1: the same limit moved to ``then``."""

    kind = "move"
    Params = MoveParams
    params: MoveParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.n = -1

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        self.n += 1
        if self.n > 1:
            return None
        price = self.params.first if self.n == 0 else self.params.then
        return Signal(Action.BUY, "t", "limit", 1.0, limit=LimitSpec(price=price))


def moved_run(tmp_path: Path, closing: tuple[float, float, float, float]) -> list[Any]:
    """Quotes 250 ms apart, 1 s bars: bar 0 rests a buy limit 1 at 100 (bid 99.99 / ask
    100.01: first in line); quote 8 (2.0 s) closes bar 1, and bar 1 moves the limit to 99."""
    data = rows_csv(tmp_path / "m.csv", [CALM] * 8 + [closing] + [CALM] * 8)
    opts = BacktestOptions(
        strategy="tests.test_review_reviewpaper2:Move", qty=1.0, fee_bps=0.0, timeframe_s=1
    )
    r = run_bt(base(), load_market_data(data), opts)
    return [(f.qty, f.price, f.liquidity.value, (f.ts - Q0) / 1e9) for f in r.fills]


def test_a_backtest_limit_moved_on_the_quote_that_trades_through_it_fills(tmp_path: Path) -> None:
    """Through the backtest (``live`` fills): the quote that closes bar 1 has the ask at 99.96,
    through the resting 100; bar 1's move cancelled the limit before that quote could fill it
    and the run bought nothing. It buys 1 at 100, a maker, on that quote."""
    assert moved_run(tmp_path, DIP) == [(1.0, 100.0, "maker", 2.0)]


def test_a_backtest_limit_moved_on_a_quote_that_does_not_reach_it_moves(tmp_path: Path) -> None:
    """The boundary: the closing ask at exactly 100 does not trade through: the limit moves to
    99 and nothing fills."""
    assert moved_run(tmp_path, (99.98, 5.0, 100.0, 5.0)) == []


@pytest.mark.parametrize(("late_ms", "filled"), [(40, True), (40.000001, False)])
def test_a_limit_whose_time_to_live_ran_out_before_the_quote_does_not_meet_it(
    late_ms: float, filled: bool
) -> None:
    """A time to live that ran out between quotes is found on the next quote (a backtest, a
    replay at full speed: no clock ticks between them). Its cancel went out at the expiry and
    reached the venue one latency (40 ms) later: a quote up to then still fills the limit, a
    quote after it does not (it would fill a limit after its time to live)."""
    b = PaperBroker(FIXED)
    o = order(qty=1.0, limit=100.0)
    o.expire_ts = ms(500)
    b.submit(o, T0)
    b.on_quote(quote(ms(40), bid=99.5, ask=100.5))
    through = quote(ms(500 + late_ms), bid=98.5, ask=99.5)
    got = b.cancel("o1", through.ts_exchange, "time to live ran out", {SYM: through})
    assert [f.price for f in fills(got)] == ([100.0] if filled else [])
    assert got[-1].order.status is (OrderStatus.FILLED if filled else OrderStatus.CANCELED)


async def _expiring_limit_then(tmp_path: Path, late_ms: int) -> tuple[list[Fill], Any]:
    """The live engine on paper (40 ms latency): a strategy's buy limit 1 under the bid with
    a 1 s time to live rests; the next quote comes ``late_ms`` after the expiry with the ask 2
    under the limit (no clock ticks between quotes: the expiry is found on it)."""
    async with paper_on_a_calm_quote(tmp_path) as (engine, slot, calm):
        core = engine.core
        assert core is not None
        sym, t0, q = calm.symbol, calm.ts_exchange, calm
        limit = round(calm.bid - 1.0, 2)
        buy = Signal(Action.BUY, "t", "t", 0.5, {}, False, LimitSpec(price=limit, ttl_s=1.0))
        await engine.handle(core.decide(slot, buy, calm.mid))
        t1 = t0 + 100 * NS_PER_MS
        await engine.process([Quote(sym, calm.bid, calm.ask, 1.0, 1.0, t1, t1, q.venue)])
        assert len(core.open_orders) == 1  # it rests
        (order,) = core.open_orders.values()
        t2 = order.expire_ts + late_ms * NS_PER_MS
        # 10 offered through it: more than the L1 model's level ahead of it and its own size.
        through = Quote(sym, limit - 3.0, limit - 2.0, 10.0, 10.0, t2, t2, q.venue)
        await engine.process([through])
        still_open = dict(core.open_orders)
    return [f for f in fills_of(tmp_path) if f.symbol == sym], (limit, still_open)


@pytest.mark.parametrize(("late_ms", "filled"), [(30, True), (41, False)])
def test_the_engine_fills_a_limit_the_quote_that_expires_it_trades_through_within_a_latency(
    tmp_path: Path, late_ms: int, filled: bool
) -> None:
    """Through the engine and its paper execution: the quote that finds the time to live run
    out 30 ms after the expiry (the cancel sent at the expiry reaches the venue at 40 ms) and
    trades through the limit fills it at its limit; 41 ms after, the cancel was there first."""
    got, (limit, still_open) = asyncio.run(_expiring_limit_then(tmp_path, late_ms))
    assert not still_open
    assert [(f.price, f.liquidity) for f in got] == ([(limit, Liquidity.MAKER)] if filled else [])
