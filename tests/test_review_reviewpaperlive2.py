"""Adversarial review of paper trading on live prices, second pass (reviewpaperlive2): the
README's "Paper trading on live prices", docs/marketdata.md, the paper broker's book walk.

The first pass is tests/test_review_pl.py (its docstring lists what held there). Each test here
pins a hole found by attacking a promise literally, and failed before its fix. End to end, the
venues are ccxt.pro's real exchange classes speaking their real protocol to a loopback
websocket (tests/test_paper_live.py's servers); nothing touches the network.

Holes fixed here: an L2 level above MAX_PRICE filled a paper order and bricked the journal; a
level far (1e12) off a cheap touch (0.01) did the same through the slippage journaled with the
fill; a price near zero sized an intent beyond the journal's bound on amounts; a recording of
one symbol on two venues replayed as one market; a later run recorded with other feed settings
replayed with the first run's.

Attacks that held (no test here, or covered by earlier tests):

- one symbol on two venues: both listing it, neither listing symbols, two sections of one
  exchange: `config check` refuses each, naming the symbol and both venues (exit 2);
- a strategy symbol spelled as the venue's id (BTCUSDT) or BTC-USDT: not a market (the
  venue's markets are looked up by unified symbol only), start fails in one line;
- one venue's clock a minute ahead of another's: a paper order leaves at its own venue's
  clock (venue_now), not at the engine's, so its latency is not stretched by the gap;
- a paper market order beyond the simulated depth (1,000 BTC on a 5.2 BTC book): the
  extrapolation fills 520, the rest is cancelled, the expected slippage (inf) is journaled
  as unknown, and the journal restarts;
- a book refused by the feed after a good one: an empty DepthUpdate drops the broker's book
  at once, the quote fills on the L1 model, never on the older book;
- a book older than the one held: the broker refuses it ("time_backwards") and its quote is
  refused by the validator too, so nothing fills against the pair.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tests.test_paper_live as tpl
from engine.config import PaperBrokerConfig
from engine.datadir import JOURNAL_FILE
from engine.journal import read_rows
from engine.marketdata.validate import ABSURD_PRICE, MAX_PRICE, depth_levels
from engine.paper_broker import DEPTH_EXHAUSTED, PaperBroker
from engine.runtime import Engine
from engine.types import NS_PER_MS, Fill, OrderStatus, OrderUpdate, Quote, Side
from tests.test_paper_broker import SYM, fills, ms, order

CFG = PaperBrokerConfig(latency_sigma=0.0)

# ---------------------------------------------------------------------- absurd deep levels


async def starts_again(cfg: Any, data_dir: Path, loop: Any) -> None:
    """A restart on what the run journaled starts (and stops) without an error."""
    again = Engine(cfg, data_dir, prepare_exchange=loop.prepare_exchange)
    try:
        await again.start()
    finally:
        await again.stop()


async def test_a_deep_book_level_beyond_any_market_price_never_fills_a_paper_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bybit's orderbook.50 stream through ccxt.pro with a third ask level at 1e300 (finite,
    positive, in order: every check the depth had passed). A 2 BTC paper buy walked into it:
    0.8 BTC filled at 1e300, and the journal of that fill was one no start would take
    ("fill model_bps must be a number within ±1e+15"): the paper account was bricked. Now the
    book is refused (absurd_price, counted), the buy fills on the L1 model, and a restart
    takes the journal."""
    monkeypatch.setattr(
        tpl, "BYBIT_ASKS", [(61000.0, 0.5), (61001.0, 0.7), (1e300, 1.0), (2e300, 3.0)]
    )
    qty = 2.0
    data_dir = tmp_path / "data"
    cfg = tpl.big_buyer_config(
        data_dir,
        {"bybit": {"exchange": "bybit", "market_data": "websocket", "quote_source": "book"}},
        qty,
    )
    async with tpl.Loopback() as loop:
        engine = Engine(cfg, data_dir, prepare_exchange=loop.prepare_exchange)
        await engine.start()
        try:
            await tpl.run_until(engine, lambda: tpl.position(engine, tpl.BTC) >= qty - 1e-9)
            feed = engine.source.feeds["bybit"]  # type: ignore[attr-defined]
            assert feed.depth_rejects.get(ABSURD_PRICE, 0) > 0
        finally:
            await engine.stop()
        fills_ = [r.payload["fill"] for r in read_rows(data_dir / JOURNAL_FILE) if r.kind == "fill"]
        assert sum(f["qty"] for f in fills_) == pytest.approx(qty)
        assert all(0 < f["price"] < 62_000 for f in fills_), fills_
        await starts_again(cfg, data_dir, loop)  # raised RestoreError on main


def test_a_depth_level_at_max_price_is_taken_and_one_above_is_refused() -> None:
    bids = [(99.0, 1.0), (98.0, 1.0)]
    assert not isinstance(depth_levels(bids, [(100.0, 1.0), (MAX_PRICE, 1.0)]), str)
    above = MAX_PRICE * (1 + 1e-15)
    assert above > MAX_PRICE
    assert depth_levels(bids, [(100.0, 1.0), (above, 1.0)]) == ABSURD_PRICE
    b = PaperBroker(CFG)
    assert not b.on_depth(SYM, bids, [(100.0, 1.0), (above, 1.0)], ms(40))
    assert b.depth_rejects == {ABSURD_PRICE: 1}


def _take(broker: PaperBroker, side: Side, qty: float, q: Quote) -> list[OrderUpdate | Fill]:
    broker.submit(order(f"o{qty}", side, qty), q.ts_exchange - 40 * NS_PER_MS)
    return broker.on_quote(q)


def test_the_l1_model_never_prices_an_impact_level_above_max_price() -> None:
    """A valid quote at MAX_PRICE (the validator's bound, taken): a buy past its displayed size
    walked impact levels priced ask * (1 + k * 0.8 bps), above any price a journal takes. The
    touch fills; what is left is cancelled ("exceeds simulated depth")."""
    q = Quote(SYM, MAX_PRICE * 0.999, MAX_PRICE, 1.0, 1.0, ms(40), ms(40))
    out = _take(PaperBroker(CFG), Side.BUY, 3.0, q)
    assert [(f.qty, f.price) for f in fills(out)] == [(1.0, MAX_PRICE)]
    last = [u for u in out if isinstance(u, OrderUpdate)][-1].order
    assert last.status is OrderStatus.CANCELED and last.reason == DEPTH_EXHAUSTED


def test_the_book_extrapolation_never_prices_above_max_price() -> None:
    """Levels up to MAX_PRICE / 2 (taken), a buy far past them: the extrapolation at the
    book's density would price the rest beyond MAX_PRICE; it is cancelled instead."""
    b = PaperBroker(CFG)
    asks = [(100.0, 1.0), (MAX_PRICE / 2, 1.0)]
    assert b.on_depth(SYM, [(99.0, 1.0)], asks, ms(40))
    q = Quote(SYM, 99.0, 100.0, 1.0, 1.0, ms(40), ms(40))
    out = _take(b, Side.BUY, 150.0, q)
    assert all(0 < f.price <= MAX_PRICE for f in fills(out))
    last = [u for u in out if isinstance(u, OrderUpdate)][-1].order
    assert last.status is OrderStatus.CANCELED


_price = st.floats(min_value=1e-8, max_value=MAX_PRICE, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(
    touch=_price,
    gaps=st.lists(st.floats(min_value=1e-6, max_value=1e14), min_size=0, max_size=5),
    sizes=st.lists(st.floats(min_value=1e-6, max_value=1e6), min_size=6, max_size=6),
    qty=st.floats(min_value=1e-6, max_value=1e9),
    side=st.sampled_from([Side.BUY, Side.SELL]),
)
def test_no_paper_fill_is_ever_priced_above_max_price_or_at_zero(
    touch: float, gaps: list[float], sizes: list[float], qty: float, side: Side
) -> None:
    """Whatever a book the validator takes (every level within (0, MAX_PRICE]), a paper market
    order's every fill is priced within (0, MAX_PRICE]."""
    b = PaperBroker(CFG)
    if side is Side.BUY:
        asks = [touch]
        for g in gaps:
            asks.append(asks[-1] + g)
        book: Any = [(p, s) for p, s in zip(asks, sizes, strict=False)]
        if isinstance(depth_levels([(touch / 2, 1.0)], book), str):
            return
        b.on_depth(SYM, [(touch / 2, 1.0)], book, ms(40))
        q = Quote(SYM, touch / 2, touch, 1.0, sizes[0], ms(40), ms(40))
    else:
        bids = [touch]
        for g in gaps:
            bids.append(bids[-1] - g)
        book = [(p, s) for p, s in zip(bids, sizes, strict=False) if p > 0]
        b.on_depth(SYM, book, [(touch * 1.001, 1.0)], ms(40))
        q = Quote(SYM, touch, touch * 1.001, sizes[0], 1.0, ms(40), ms(40))
    for f in fills(_take(b, side, qty, q)):
        assert 0.0 < f.price <= MAX_PRICE


# ---------------------------------------------------------------------- a replay of two markets


def _two_venue_recording(root: Path, venues: dict[str, tuple[str, float]]) -> None:
    """Six books on 2025-01-01 for each venue: ``venue -> (symbol, bid)``, the day closed."""
    from engine.marketdata.recording import Item, RecordWriter
    from tests.test_recording import DAY1, DAY2

    w = RecordWriter(root, clock_ns=lambda: DAY2)
    inst = {"tick_size": 0.01, "lot_size": 0.000001, "min_qty": 0.000048, "min_notional": 1.0}
    for venue, (sym, _) in venues.items():
        w.describe(venue, sym, source="book", stale_after_ns=5 * 10**9, instrument=inst)
    for i in range(6):
        for k, (venue, (sym, px)) in enumerate(venues.items()):
            book = (
                f'{{"symbol":"{sym}","timestamp":{DAY1 // 1_000_000 + i},'
                f'"bids":[[{px},1.5]],"asks":[[{px + 1},1.0]]}}'
            ).encode()
            w.write(Item(venue, sym, "book", DAY1 + i * 1000 + k, DAY1 + i, book))
    w.close_past_days("2025-01-02")
    w.stop()


def test_a_recording_of_one_symbol_on_two_venues_is_never_replayed_as_one_market(
    tmp_path: Path,
) -> None:
    """DATA/record holding bybit's BTC/USDT (61,000) and kraken's (60,000), say from a run
    before the config moved the symbol: `[market.replay] path = "DATA/record"` (the README's
    example) merged both by receive time into the one BTC/USDT the strategy trades, quotes
    alternating 61,000 / 60,000, the instrument (and every fill) kraken's. `config check`
    and `cockpit backtest --data` took it. Now refused, naming the venues; one venue's folder
    replays."""
    from engine.config import ConfigError, check_runnable, parse_config
    from engine.marketdata.recording import RecordingReplay
    from engine.marketdata.replay import ReplayError
    from tests.conftest import default_dict, merge

    root = tmp_path / "record"
    _two_venue_recording(root, {"bybit": ("BTC/USDT", 61000.0), "kraken": ("BTC/USDT", 60000.0)})
    with pytest.raises(ReplayError, match=r"BTC/USDT is recorded on 2 venues \(bybit, kraken\)"):
        RecordingReplay(root, ["BTC/USDT"])
    with pytest.raises(ReplayError, match="recorded on 2 venues"):
        RecordingReplay(root)  # cockpit backtest --data DATA/record
    data = merge(
        default_dict(),
        {
            "engine": {"data_dir": str(tmp_path / "data")},
            "market": {"source": "replay", "replay": {"path": str(root), "kind": "recording"}},
        },
    )
    for strat in data["strategies"]:
        strat["symbols"] = ["BTC/USDT"]
    with pytest.raises(ConfigError, match="recorded on 2 venues"):
        check_runnable(parse_config(data))
    # One venue's folder: one market.
    bybit = RecordingReplay(root / "bybit", ["BTC/USDT"])
    assert {(q.venue, q.bid) for q in bybit.events() if type(q) is Quote} == {("bybit", 61000.0)}


def test_two_venues_recording_two_symbols_replay_together(tmp_path: Path) -> None:
    """The boundary: binance's BTC/USDT and okx's ETH/USDT (the README's two-venue setup)
    replay together from DATA/record, each quote its own venue's."""
    from engine.marketdata.recording import RecordingReplay

    root = tmp_path / "record"
    _two_venue_recording(root, {"binance": ("BTC/USDT", 61000.0), "okx": ("ETH/USDT", 3000.0)})
    replay = RecordingReplay(root, ["BTC/USDT", "ETH/USDT"])
    assert {s: i.venue for s, i in replay.instruments().items()} == {
        "BTC/USDT": "binance",
        "ETH/USDT": "okx",
    }
    seen = {(q.symbol, q.venue, q.bid) for q in replay.events() if type(q) is Quote}
    assert seen == {("BTC/USDT", "binance", 61000.0), ("ETH/USDT", "okx", 3000.0)}


def _two_runs(root: Path, second: dict[str, Any]) -> None:
    """Two engine runs recorded into one day file of bybit's BTC/USDT, three books each
    (61,000 / 61,010: 1.6 bps wide, three ask levels); the second run's session has the
    feed settings ``second`` (the first: 500 bps, 20 levels, 5 s)."""
    from engine.marketdata.recording import Item, RecordWriter
    from engine.types import NS_PER_SECOND
    from tests.test_recording import DAY1

    inst = {"tick_size": 0.01, "lot_size": 0.000001, "min_qty": 0.000048, "min_notional": 1.0}
    first = {"stale_after_ns": 5 * 10**9, "book_depth": 20, "max_spread_bps": 500.0}
    hour = 3600 * NS_PER_SECOND
    for run, feed_settings in enumerate((first, {**first, **second})):
        w = RecordWriter(root, clock_ns=lambda: DAY1 + 5 * hour)  # the day stays open
        w.describe("bybit", "BTC/USDT", source="book", instrument=inst, **feed_settings)
        for i in range(3):
            t = DAY1 + run * hour + i * NS_PER_SECOND
            book = (
                f'{{"symbol":"BTC/USDT","timestamp":{t // 1_000_000},"bids":[[61000,1.5]],'
                f'"asks":[[61010,1.0],[61011,1.0],[61012,1.0]]}}'
            ).encode()
            w.write(Item("bybit", "BTC/USDT", "book", t, t, book))
        w.stop()


def test_a_later_run_recorded_with_other_feed_settings_replays_with_its_own(
    tmp_path: Path,
) -> None:
    """Run 1 recorded with max_spread_bps 500, run 2 (the config changed) with 1 bps and the
    book cut at 1 level: live, run 2 refused its 1.6 bps books (spread_too_wide) and its paper
    orders walked one level. The replay judged the whole recording with run 1's feed: it took
    run 2's three quotes (decisions the live run never made) with 3-level books. Now each run's
    payloads are judged with the settings its session record names."""
    from engine.marketdata.recording import RecordingReplay
    from engine.types import DepthUpdate

    root = tmp_path / "record"
    _two_runs(root, {"max_spread_bps": 1.0})
    quotes = [e for e in RecordingReplay(root, ["BTC/USDT"]).events() if type(e) is Quote]
    assert len(quotes) == 3  # run 2's refused as live
    root2 = tmp_path / "record2"
    _two_runs(root2, {"book_depth": 1})
    replay = RecordingReplay(root2, ["BTC/USDT"])
    books = [len(e.asks) for e in replay.events() if type(e) is DepthUpdate]
    assert books == [3, 3, 3, 1, 1, 1]  # run 1 walked three levels, run 2 one


def test_runs_recorded_with_the_same_settings_replay_on_one_feed(tmp_path: Path) -> None:
    """The boundary: the same settings in both sessions: every quote is taken."""
    from engine.marketdata.recording import RecordingReplay

    _two_runs(tmp_path / "record", {})
    events = list(RecordingReplay(tmp_path / "record", ["BTC/USDT"]).events())
    assert sum(1 for e in events if type(e) is Quote) == 6


# ---------------------------------------------------------------------- prices near zero


def test_an_order_quantity_beyond_max_amount_is_denied_and_the_boundary_passes() -> None:
    from engine.checks import round_to_grid
    from engine.config import MAX_AMOUNT
    from engine.types import Instrument, OrderIntent, OrderType
    from engine.vocabulary import DenialCode

    inst = Instrument("PEPE/USDT", "bybit", tick_size=1e-14, lot_size=1.0)

    def intent(qty: float) -> OrderIntent:
        return OrderIntent(
            "i1", "d1", "s", "PEPE/USDT", "bybit", Side.BUY, qty, OrderType.MARKET, 1e-12, 0
        )

    _, ok = round_to_grid(intent(MAX_AMOUNT), inst)
    assert ok.ok, ok
    _, denied = round_to_grid(intent(MAX_AMOUNT + 1.0), inst)
    assert not denied.ok and denied.code == DenialCode.INVALID_QTY
    assert "beyond what the engine handles" in denied.message


def _exact_bybit_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loopback's bybit book with its levels as given (its own prints them to 2 decimals:
    a sub-cent book would read 0.00)."""
    made = tpl.quote

    def quote(venue: str, seq: int) -> dict[str, Any]:
        out = made(venue, seq)
        out["data"]["b"] = [[repr(p), repr(q)] for p, q in tpl.BYBIT_BIDS]
        out["data"]["a"] = [[repr(p), repr(q)] for p, q in tpl.BYBIT_ASKS]
        return out

    monkeypatch.setattr(tpl, "quote", quote)


async def test_a_price_near_zero_never_sizes_an_order_no_restart_would_take(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bybit's book at 1e-12 (a price the validator takes: nothing bounds prices from below),
    the default sizing (2% of 1,000,000 equity): 2e16 units. The paper order went out and
    filled, and its journaled intent was beyond the journal's bound on amounts: the next start
    refused the journal ("intent qty must be a number within ±1e+15"). Now the intent is
    denied (invalid_qty, one line) and the journal restarts."""
    from engine.config import SizingConfig

    px = 1e-12
    monkeypatch.setattr(tpl, "BYBIT_ASKS", [(px * 1.0001, 1e18), (px * 1.0002, 1e18)])
    monkeypatch.setattr(tpl, "BYBIT_BIDS", [(px, 1e18), (px * 0.9999, 1e18)])
    _exact_bybit_levels(monkeypatch)
    data_dir = tmp_path / "data"
    cfg = tpl.big_buyer_config(
        data_dir,
        {"bybit": {"exchange": "bybit", "market_data": "websocket", "quote_source": "book"}},
        1.0,
    )
    object.__setattr__(cfg.strategies[0], "sizing", SizingConfig(model="fixed_fraction"))
    async with tpl.Loopback() as loop:
        engine = Engine(cfg, data_dir, prepare_exchange=loop.prepare_exchange)
        await engine.start()
        try:
            assert engine.core is not None
            core = engine.core
            await tpl.run_until(engine, lambda: core.counters.get("intents", 0) > 0)
            assert core.counters["submitted"] == 0 and core.counters["denied"] > 0
        finally:
            await engine.stop()
        await starts_again(cfg, data_dir, loop)  # raised RestoreError on main


# ---------------------------------------------------------------------- a level far off the touch


def test_a_walk_stops_at_ten_times_the_touch_and_the_boundary_fills() -> None:
    """A book at a 0.01 touch whose second ask is at 1e12 (under MAX_PRICE: taken): a buy
    walked it, the fill's slippage (5e17 bps) journaled beyond what a start takes. Now a walk
    goes no further than PRICE_JUMP_FACTOR (10x) from the touch: a level at exactly 0.1 fills,
    one above it does not (the rest is cancelled, "exceeds simulated depth"); a sell mirrors
    it at a tenth of the bid."""
    for far, fills_far in ((0.1, True), (0.1 * (1 + 1e-12), False), (1e12, False)):
        b = PaperBroker(CFG)
        assert b.on_depth(SYM, [(0.009, 1.0), (0.0089, 1.0)], [(0.01, 1.0), (far, 1.0)], ms(40))
        q = Quote(SYM, 0.009, 0.01, 1.0, 1.0, ms(40), ms(40))
        slip = b.expected_slippage_bps(Side.BUY, 1.5, q)
        out = _take(b, Side.BUY, 1.5, q)
        prices = [f.price for f in fills(out)]
        assert all(p <= 0.1 for p in prices)
        assert (far in prices) is fills_far, prices
        assert slip < 1e6 or slip == float("inf")
    for far, fills_far in ((0.01, True), (0.01 * (1 - 1e-12), False)):
        b = PaperBroker(CFG)
        assert b.on_depth(SYM, [(0.1, 1.0), (far, 1.0)], [(0.11, 1.0)], ms(40))
        q = Quote(SYM, 0.1, 0.11, 1.0, 1.0, ms(40), ms(40))
        prices = [f.price for f in fills(_take(b, Side.SELL, 1.5, q))]
        assert all(p >= 0.01 for p in prices)
        assert (far in prices) is fills_far, prices


async def test_a_deep_level_far_off_a_cheap_touch_never_bricks_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bybit's stream end to end: asks 0.01 x 500, then 1e12 x 10,000. A 1,000-unit paper buy
    filled 500 at 1e12 and journaled its expected slippage (~5e17 bps); the next start refused
    the journal. Now the touch fills, the rest is cancelled, and the journal restarts."""
    monkeypatch.setattr(tpl, "BYBIT_ASKS", [(0.01, 500.0), (1e12, 10_000.0)])
    monkeypatch.setattr(tpl, "BYBIT_BIDS", [(0.00999, 500.0), (0.00998, 10_000.0)])
    _exact_bybit_levels(monkeypatch)
    data_dir = tmp_path / "data"
    cfg = tpl.big_buyer_config(
        data_dir,
        {"bybit": {"exchange": "bybit", "market_data": "websocket", "quote_source": "book"}},
        1000.0,
    )
    async with tpl.Loopback() as loop:
        engine = Engine(cfg, data_dir, prepare_exchange=loop.prepare_exchange)
        await engine.start()
        try:
            await tpl.run_until(engine, lambda: tpl.position(engine, tpl.BTC) > 0, 20.0)
            await engine.run(duration_s=0.3)
        finally:
            await engine.stop()
        fills_ = [r.payload["fill"] for r in read_rows(data_dir / JOURNAL_FILE) if r.kind == "fill"]
        assert [(f["qty"], f["price"]) for f in fills_] == [(500.0, 0.01)]
        await starts_again(cfg, data_dir, loop)  # raised RestoreError on main
