"""Review: does paper trading flatter? Paper fills against hand-computed venue fills.

The holes found by attacking the paper broker and the backtest's fill models on tiny scripted
quote sequences, each pinned by a test that failed before its fix (with its boundary beside it):

- a limit below the deepest bid the L2 depth shows had no queue ahead (first in line);
- ``close`` on quote data filled a protective exit at the quote before the one that triggered
  it: a stop through a gap sold above its own stop;
- a bar's exit quote (at the stop's price) also filled an order in flight beside the exit;
- a paper order's latency started at the stamp of the quote it was decided on, so it filled on
  quotes already in when it was sent (a batch queued behind, a late approval).

Attacks that held (the paper fill was no kinder than a venue's):

- a market order meets the first quote at or after its arrival (submit + latency), never the
  quote it was decided on, and the market moves while it is in flight;
- a market buy takes the ask and a sell the bid, never the mid; beyond the displayed size each
  further level costs more (L1 impact, or the fresh L2 book), and past the simulated depth the
  rest is cancelled, never filled at the old price on a later quote;
- a resting limit does not fill when the market only touches its price (ask == buy limit), fills
  at its limit and never better, as maker, and only after the size displayed at its price when
  it came to rest has traded;
- a post-only limit that would take is rejected (also exactly at the touch), never a maker fill;
  a limit marketable on arrival pays the taker fee, walks only within its limit;
- a stop on quotes (engine-side) is a market order after the trigger: a gap fills at the gap's
  far side; on bars a gap fills at the open, not the stop;
- a rejected quote (and the book that came with it) reaches no fill model; a crossed or
  non-finite book fills nothing;
- two orders on one quote share its displayed size and its L2 levels (a second walk starts
  where the first stopped); a buy and a sell on one quote each pay the spread;
- L2 depth older than ``depth_max_age_ms`` falls back to the L1 model, and older depth than
  the held one is refused;
- fees are a float fraction of notional, never rounded (a 1e-8 BTC fill pays its fee), maker
  only on a maker fill;
- many orders, both sides, market and limit, with and without L2 (the property below).
- the bar fill models: ``live`` fills on the next bar's close, ``next-open`` at the next bar's
  open with the last bar's size (not the crash bar's volume), never before the signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.backtest import BacktestOptions, load_market_data
from engine.backtest import run_backtest as run_bt
from engine.datadir import JOURNAL_FILE
from engine.journal import read_rows
from engine.paper_broker import PaperBroker
from engine.runtime import Engine
from engine.types import NS_PER_MS, Action, Fill, Liquidity, Quote, Side, Signal
from tests.conftest import fast_config
from tests.test_backtest import bars_csv, base
from tests.test_limit_orders import FIXED, SYM, T0, fills, ms, order, quote

SCRIPTED = "tests.test_backtest:Scripted"
Q0 = 1_723_161_254 * 1_000_000_000  # bookTicker-style quote rows from here, 250 ms apart


# ------------------------------------------------------------------ queue past the visible book


def test_a_limit_past_the_deepest_visible_level_is_not_first_in_line() -> None:
    """A buy limit below the deepest bid the feed shows had queue 0 (as if nobody were
    there), so it filled ahead of the size that is surely at that price; with no depth at
    all the same limit waited behind the L1 model's level. Past the book: the L1 level."""
    bids = [(99.0, 1.0), (98.5, 2.0), (98.0, 7.0)]
    asks = [(100.0, 1.0), (101.0, 1.0)]
    b = PaperBroker(FIXED)
    b.submit(order(qty=1.0, limit=97.0), T0)
    b.on_depth(SYM, bids, asks, ms(40))
    b.on_quote(quote(ms(40), bid=99.0, ask=100.0))
    blind = PaperBroker(FIXED)
    blind.submit(order(qty=1.0, limit=97.0), T0)
    blind.on_quote(quote(ms(40), bid=99.0, ask=100.0))
    assert b.queue_ahead("o1") == blind.queue_ahead("o1") == 1.0
    # The market trades through 97 by 1.0: that is the queue ahead, nothing is left for it.
    b.on_depth(SYM, [(96.0, 1.0)], [(96.5, 1.0), (97.5, 1.0)], ms(50))
    assert fills(b.on_quote(quote(ms(50), bid=96.0, ask=96.5, ask_size=1.0))) == []
    # A sell limit above the deepest visible ask: the same.
    s = PaperBroker(FIXED)
    s.submit(order(side=Side.SELL, qty=1.0, limit=102.0), T0)
    s.on_depth(SYM, bids, asks, ms(40))
    s.on_quote(quote(ms(40), bid=99.0, ask=100.0))
    assert s.queue_ahead("o1") == 1.0


def test_a_limit_at_or_between_visible_levels_keeps_what_the_book_shows() -> None:
    """The boundary: at the deepest visible level the queue is that level's size; between
    levels (inside the book) nothing is shown there."""
    bids = [(99.0, 1.0), (98.5, 2.0), (98.0, 7.0)]
    for limit, ahead in ((98.0, 7.0), (98.2, 0.0), (97.99, 1.0)):
        b = PaperBroker(FIXED)
        b.submit(order(qty=1.0, limit=limit), T0)
        b.on_depth(SYM, bids, [(100.0, 1.0)], ms(40))
        b.on_quote(quote(ms(40), bid=99.0, ask=100.0))
        assert b.queue_ahead("o1") == ahead, limit


# ------------------------------------------------------------------ close fills on quote data


def quotes_csv(path: Path, mids: list[float], spread: float = 0.02, size: float = 5.0) -> Path:
    rows = ["local_ts_ns,update_id,bid_price,bid_qty,ask_price,ask_qty"]
    for i, m in enumerate(mids):
        t = Q0 + i * 250_000_000
        rows.append(f"{t},{i},{m - spread / 2},{size},{m + spread / 2},{size}")
    path.write_text("\n".join(rows) + "\n")
    return path


def gap_run(tmp_path: Path, fill: str) -> list[tuple[str, float, float]]:
    """Long 1 at 100.01 (bought on the first 1 s bar), stop-loss 1% (99.01); at 3.25 s the
    market gaps to 90 inside a bar."""
    data = quotes_csv(tmp_path / f"gap-{fill}.csv", [100.0] * 13 + [90.0] * 27)
    opts = BacktestOptions(
        strategy=SCRIPTED,
        params={"buy": [0], "sell": []},
        qty=1.0,
        fee_bps=0.0,
        fill=fill,
        timeframe_s=1,
        warmup=0,
        stop_loss_pct=1.0,
    )
    r = run_bt(base(), load_market_data(data), opts)
    return [(f.side.value, f.price, (f.ts - Q0) / 1e9) for f in r.fills]


@pytest.mark.parametrize("fill", ["close", "next-open", "live"])
def test_a_stop_through_a_gap_on_quotes_fills_at_the_gap_in_every_fill_model(
    tmp_path: Path, fill: str
) -> None:
    """``close`` on quote data executed every order against the quote *before* the one it was
    decided on: the stop that the gap to 90 triggered sold at 99.99, above its own stop
    (99.01), at a price from before the gap. An exit is decided on its quote: it sells there."""
    got = gap_run(tmp_path, fill)
    assert got[0][:2] == ("buy", 100.01)
    side, price, t = got[1]
    assert side == "sell" and price == pytest.approx(89.99)
    assert t > 3.25  # not before the gap quote (3.25 s) existed


def test_close_still_fills_a_bar_signal_at_the_bar_close_quote(tmp_path: Path) -> None:
    """The other side of the boundary: a strategy's bar order in ``close`` still executes at
    the closed bar's last quote (the documented model), stamped 1 ns after its decision."""
    data = quotes_csv(tmp_path / "rise.csv", [100.0 + 0.1 * i for i in range(12)])
    opts = BacktestOptions(
        strategy=SCRIPTED,
        params={"buy": [0], "sell": []},
        qty=1.0,
        fee_bps=0.0,
        fill="close",
        timeframe_s=1,
        warmup=0,
    )
    (f,) = run_bt(base(), load_market_data(data), opts).fills
    # Bar 0 holds the quotes at 0, .25, .5, .75 s (mids 100.0 .. 100.3); it closes on the 1 s
    # quote (100.4); the close is the quote before: ask 100.3 + 0.01.
    assert f.price == pytest.approx(100.31)


# ------------------------------------------------------------------ a bar exit's own quote


def test_a_bar_stop_quote_fills_the_exit_alone_not_an_order_in_flight_beside_it(
    tmp_path: Path,
) -> None:
    """``live`` on bars fills an order on the next bar's close. A protective stop inside that
    bar meets a quote at its trigger price, and that quote also filled the order in flight:
    a buy decided at bar 2's close (100) bought at the stop's 98, near bar 3's low, though bar
    3 closed at 101. The stop's quote is the stop's; the buy waits for the close."""
    rows = [(100.0, 100.5, 99.5, 100.0)] * 3 + [(100.0, 101.5, 97.0, 101.0)]
    rows += [(101.0, 101.5, 100.5, 101.0)] * 3
    data = bars_csv(tmp_path / "bars.csv", rows)
    opts = BacktestOptions(
        strategy=SCRIPTED,
        params={"buy": [0, 2], "sell": []},
        qty=1.0,
        fee_bps=0.0,
        fill="live",
        warmup=0,
        stop_loss_pct=2.0,
    )
    fs = run_bt(base(), data, opts).fills
    assert [(f.side.value, f.price) for f in fs] == [
        ("buy", 100.0),  # bar 0's signal at bar 1's close
        ("sell", 98.0),  # the stop inside bar 3
        ("buy", 101.0),  # bar 2's signal at bar 3's close, not at the stop's price
    ]


def test_a_quote_for_some_orders_leaves_the_others_untouched() -> None:
    """``PaperBroker.on_quote(q, only)``: the orders outside ``only`` neither fill nor lose
    their place; on the next quote for everyone they fill as before."""
    b = PaperBroker(FIXED)
    b.submit(order("a", limit=None), T0)
    b.submit(order("b", side=Side.SELL, limit=None), T0)
    got = fills(b.on_quote(quote(ms(40), bid=99.0, ask=100.0), {"b"}))
    assert [(f.client_order_id, f.price) for f in got] == [("b", 99.0)]
    assert [o.client_order_id for o in b.open_orders()] == ["a"]
    (f,) = fills(b.on_quote(quote(ms(50), bid=100.0, ask=101.0)))
    assert (f.client_order_id, f.price) == ("a", 101.0)
    assert b.open_orders() == []


# ------------------------------------------------------------------ latency from the send


@contextlib.asynccontextmanager
async def paper_on_a_calm_quote(tmp_path: Path) -> AsyncIterator[tuple[Engine, Any, Quote]]:
    """The live engine on paper (a fixed 40 ms latency), 60 simulated events in, then one
    fresh BTC/USDT quote 1 ms later of size 1 a side: (engine, donchian_breakout's BTC slot,
    that quote). Stopped on the way out."""
    fixed = {"latency_median_ms": 40.0, "latency_sigma": 0.0}
    engine = Engine(fast_config(tmp_path, broker={"paper": fixed}), tmp_path)
    await engine.start()
    try:
        await engine.process(list(itertools.islice(engine.source.events(), 60)))
        core = engine.core
        assert core is not None
        sym = "BTC/USDT"
        q = core.quotes[sym]
        t0 = core.now + NS_PER_MS
        calm = Quote(sym, q.bid, q.ask, 1.0, 1.0, t0, t0, q.venue)
        await engine.process([calm])
        yield engine, core.slots[("donchian_breakout", sym)], calm
    finally:
        await engine.stop()


async def _send_then_quotes(tmp_path: Path, behind_ms: float | None) -> tuple[float, Any]:
    """A strategy's buy decided on a fresh quote and sent while the market's clock
    (``event_now``) is ``behind_ms`` past it; then two quotes: one 50 ms after the decision
    quote (already in when the order was sent) and one 600 ms after."""
    async with paper_on_a_calm_quote(tmp_path) as (engine, slot, q):
        core = engine.core
        assert core is not None
        sym, t0 = q.symbol, q.ts_exchange
        if behind_ms is not None:
            engine.source.event_now = lambda: t0 + round(behind_ms * NS_PER_MS)  # type: ignore[method-assign]
        mid = (q.bid + q.ask) / 2
        await engine.handle(core.decide(slot, Signal(Action.BUY, "t", "t", 0.5, {}, False), mid))
        early = Quote(sym, mid + 1, mid + 2, 5.0, 5.0, t0 + 50 * NS_PER_MS, t0, q.venue)
        late = Quote(sym, mid + 10, mid + 11, 5.0, 5.0, t0 + 600 * NS_PER_MS, t0, q.venue)
        await engine.process([early, late])
        assert not core.open_orders
        return core.portfolio.positions[sym].avg_price, (early.ask, late.ask)


def test_a_paper_order_meets_the_market_after_it_is_sent_not_after_the_quote_it_saw(
    tmp_path: Path,
) -> None:
    """The paper venue started an order's latency at the stamp of the quote it was decided
    on. Quotes that were already in when it was sent (a batch queued behind that quote, a
    person approving it later) then filled it: here a quote 50 ms after the decision quote,
    though the market's clock stood 500 ms past it when the order left. It now leaves on the
    market's clock; with no clock (an unpaced feed) the quote's stamp, as before."""
    price, (early, late) = asyncio.run(_send_then_quotes(tmp_path / "a", 500.0))
    assert price == pytest.approx(late)
    # The boundary (40 ms latency): sent 10 ms past, it arrives with the 50 ms quote and
    # meets it; sent 11 ms past, it arrives after it.
    price, (early, late) = asyncio.run(_send_then_quotes(tmp_path / "b", 10.0))
    assert price == pytest.approx(early)
    price, (early, late) = asyncio.run(_send_then_quotes(tmp_path / "d", 11.0))
    assert price == pytest.approx(late)
    price, (early, late) = asyncio.run(_send_then_quotes(tmp_path / "c", None))
    assert price == pytest.approx(early)


async def _bar_stop_on_a_paced_clock(tmp_path: Path) -> list[tuple[str, float]]:
    """The live engine replaying bars with a paced clock (``event_now``: a bar arrives at its
    close): long 1 at 100, a 2% stop, a bar through it."""
    rows = [(100.0, 100.5, 99.5, 100.0)] * 3 + [(100.0, 101.5, 97.0, 101.0)]
    rows += [(101.0, 101.5, 100.5, 101.0)] * 3
    data = bars_csv(tmp_path / "bars.csv", rows)
    strat = {
        "id": "s",
        "kind": SCRIPTED,
        "symbols": ["BTC/USDT"],
        "timeframe_s": 60,
        "params": {"buy": [0], "sell": []},
        "sizing": {"model": "fixed_qty", "qty": 1.0},
        "approval": "auto",
        "exits": {"stop_loss_pct": 2.0},
    }
    market = {"source": "replay", "replay": {"path": str(data), "kind": "bars", "speed": "max"}}
    cfg = fast_config(tmp_path, market=market, strategies=[strat])
    engine = Engine(cfg, tmp_path)
    await engine.start()
    try:
        core = engine.core
        assert core is not None

        def paced() -> int:  # just past the latest bar's close, as a paced replay's clock
            q = core.quotes.get("BTC/USDT")
            return core.now if q is None else max(core.now, q.ts_exchange + 1)

        engine.source.event_now = paced  # type: ignore[method-assign]
        await engine.run()
    finally:
        await engine.stop()
    return [(f.side.value, f.price) for f in fills_of(tmp_path)]


def fills_of(data_dir: Path) -> list[Fill]:
    return [Fill.from_dict(r.payload["fill"]) for r in read_rows(data_dir / JOURNAL_FILE, {"fill"})]


def test_a_bar_stop_still_fills_at_its_level_when_the_market_clock_is_at_the_bar_close(
    tmp_path: Path,
) -> None:
    """The boundary of the fix above: a bar's exit is decided at the bar's open and meets its
    execution quote inside the bar; the market's clock, at the bar's close when the bar comes
    in, must not send it after that quote (it would fill a bar late, at another price)."""
    got = asyncio.run(_bar_stop_on_a_paced_clock(tmp_path))
    assert got[:2] == [("buy", 100.0), ("sell", 98.0)]


# ------------------------------------------------------------------ shared liquidity, as a property

_LEVELS = st.lists(st.floats(0.1, 3.0), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    orders=st.lists(
        st.tuples(
            st.sampled_from([Side.BUY, Side.SELL]),
            st.floats(0.1, 6.0),  # quantity
            st.one_of(st.none(), st.integers(-6, 6)),  # market, or a limit in ticks from 100
            st.integers(0, 3),  # submitted before quote k
        ),
        min_size=1,
        max_size=6,
    ),
    quotes=st.lists(
        st.tuples(st.integers(-4, 4), _LEVELS, _LEVELS, st.booleans()), min_size=1, max_size=6
    ),
)
def test_orders_on_one_quote_never_take_more_than_each_level_shows(
    orders: list[tuple[Side, float, int | None, int]],
    quotes: list[tuple[int, list[float], list[float], bool]],
) -> None:
    """Several orders, both sides, market and limit, on quotes with (or without) a fresh L2
    book: on each quote, the taker fills at each visible price never add up to more than the
    size shown there (two orders never walk the same liquidity), a buy never takes below the
    ask nor a sell above the bid, a maker fill is at its limit and never better, and nothing
    fills before its order arrives."""
    b = PaperBroker(FIXED)
    arrival: dict[str, int] = {}
    limits: dict[str, float | None] = {}
    for k, (bid_t, bid_sz, ask_sz, with_book) in enumerate(quotes):
        for i, (side, qty, lim, before) in enumerate(orders):
            if before == k:
                coid = f"o{i}"
                price = None if lim is None else round(100.0 + lim * 0.1, 10)
                b.submit(order(coid, side, qty, price), ms(100 * k))
                arrival[coid] = b.arrival_time(coid) or 0
                limits[coid] = price
        t = ms(100 * k + 50)
        bid = round(100.0 + bid_t * 0.1, 10)
        ask = round(bid + 0.1, 10)
        bids = [(round(bid - j * 0.1, 10), s) for j, s in enumerate(bid_sz)]
        asks = [(round(ask + j * 0.1, 10), s) for j, s in enumerate(ask_sz)]
        shown = {("buy", p): s for p, s in asks} | {("sell", p): s for p, s in bids}
        if with_book:
            b.on_depth(SYM, bids, asks, t)
        else:
            b.drop_depth(SYM)
        q = quote(t, bid, ask, bid_sz[0], ask_sz[0])
        taken: dict[tuple[str, float], float] = {}
        for f in fills(b.on_quote(q)):
            assert f.ts >= arrival[f.client_order_id]
            lim_px = limits[f.client_order_id]
            if f.liquidity is Liquidity.MAKER:
                assert f.price == lim_px
                continue
            assert f.price >= ask if f.side is Side.BUY else f.price <= bid
            if lim_px is not None:
                assert f.price <= lim_px if f.side is Side.BUY else f.price >= lim_px
            key = (f.side.value, round(f.price, 10))
            taken[key] = taken.get(key, 0.0) + f.qty
        for key, qty in taken.items():
            if key in shown and (with_book or key[1] in (bid, ask)):
                assert qty <= shown[key] * (1 + 1e-9), (key, qty, shown[key])


def test_a_tiny_fill_pays_its_fee_and_a_taker_never_pays_the_maker_rate() -> None:
    """The fee is qty x price x rate, never rounded to zero on a small order; a limit that
    takes on arrival pays the taker rate, the same limit resting and traded through the
    maker rate."""
    b = PaperBroker(FIXED)
    b.submit(order("t", qty=1e-8, limit=100.0), T0)  # marketable: ask 100
    (f,) = fills(b.on_quote(quote(ms(40))))
    assert f.liquidity is Liquidity.TAKER and f.fee == pytest.approx(1e-8 * 100.0 * 10e-4)
    assert f.fee > 0
    b.submit(order("m", qty=1e-8, limit=99.5), T0 + 100 * NS_PER_MS)  # rests, improves the bid
    fills(b.on_quote(quote(ms(150))))
    (f,) = fills(b.on_quote(quote(ms(160), bid=99.0, ask=99.4)))
    assert f.liquidity is Liquidity.MAKER and f.price == 99.5
    assert f.fee == pytest.approx(1e-8 * 99.5 * 2e-4) and f.fee > 0
