"""The feed-boundary validator: each reject code beside a just-valid neighbour, plus properties."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.marketdata.validate import BAR_REJECT_CODES, QUOTE_REJECT_CODES, QuoteValidator
from engine.types import NS_PER_SECOND, Bar, Quote

NAN = float("nan")
INF = float("inf")

MIN = 60 * NS_PER_SECOND  # one bar of the helper's default 60 s timeframe, in ns


def q(
    bid: float = 100.0,
    ask: float = 100.1,
    bid_size: float = 1.0,
    ask_size: float = 2.0,
    ts: int = 1_000,
    symbol: str = "BTC/USDT",
    venue: str = "sim",
) -> Quote:
    return Quote(symbol, bid, ask, bid_size, ask_size, ts, ts, venue)


def bar(
    o: float = 100.0,
    h: float = 101.0,
    lo: float = 99.0,
    c: float = 100.5,
    v: float = 10.0,
    ts: int = 0,
    symbol: str = "BTC/USDT",
    tf: int = 60,
) -> Bar:
    return Bar(symbol, ts, tf, o, h, lo, c, v, "sim")


def test_valid_quote_is_accepted_and_counted() -> None:
    v = QuoteValidator()
    assert v.check(q()) is None
    assert v.accepted == 1
    assert v.rejected == Counter()
    assert v.last_reject is None
    assert v.last_ts("BTC/USDT", "sim") == 1_000


@pytest.mark.parametrize("field", ["bid", "ask", "bid_size", "ask_size"])
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_not_finite_in_any_field(field: str, bad: float) -> None:
    v = QuoteValidator()
    assert v.check(q(**{field: bad})) == "not_finite"
    assert v.rejected["not_finite"] == 1
    assert v.last_reject == ("BTC/USDT", "not_finite")
    assert v.accepted == 0


def test_large_finite_values_are_not_mistaken_for_inf() -> None:
    v = QuoteValidator()
    assert v.check(q(bid=1e14, ask=1e14, bid_size=1e300, ask_size=1e300)) is None
    # Finite, yet no market price: above 1e15 (a restart would refuse it as a mark).
    assert v.check(q(bid=1e300, ask=1e300, bid_size=1e300, ask_size=1e300)) == "absurd_price"


@pytest.mark.parametrize("field", ["bid", "ask"])
@pytest.mark.parametrize("bad", [0.0, -0.0, -1.0])
def test_non_positive_price(field: str, bad: float) -> None:
    v = QuoteValidator()
    quote = q(bid=bad) if field == "bid" else q(bid=bad, ask=bad)
    assert v.check(quote) == "non_positive_price"


def test_tiny_positive_price_passes() -> None:
    assert QuoteValidator().check(q(bid=1e-9, ask=1e-9)) is None


@pytest.mark.parametrize("field", ["bid_size", "ask_size"])
@pytest.mark.parametrize("bad", [0.0, -0.0, -5.0])
def test_non_positive_size(field: str, bad: float) -> None:
    v = QuoteValidator()
    assert v.check(q(**{field: bad})) == "non_positive_size"
    assert v.check(q(**{field: 1e-12})) is None


def test_locked_book_passes_crossed_book_fails() -> None:
    v = QuoteValidator()
    assert v.check(q(bid=100.0, ask=100.0)) is None
    assert v.check(q(bid=math.nextafter(100.0, INF), ask=100.0)) == "crossed_book"
    assert v.rejected == Counter({"crossed_book": 1})


def test_equal_timestamp_passes_one_ns_earlier_fails() -> None:
    v = QuoteValidator()
    assert v.check(q(ts=5_000)) is None
    assert v.check(q(ts=5_000)) is None
    assert v.check(q(ts=4_999)) == "time_backwards"
    assert v.last_ts("BTC/USDT", "sim") == 5_000


def test_time_state_is_per_symbol_and_venue() -> None:
    v = QuoteValidator()
    assert v.check(q(ts=5_000)) is None
    assert v.check(q(ts=1, symbol="ETH/USDT")) is None
    assert v.check(q(ts=1, venue="binance")) is None
    assert v.check(q(ts=4_999)) == "time_backwards"


def test_rejected_quote_does_not_move_time_state() -> None:
    v = QuoteValidator()
    assert v.check(q(ts=1_000)) is None
    # A far-future quote that is bad for another reason must not poison the clock...
    assert v.check(q(bid=101.0, ask=100.0, ts=9_000_000)) == "crossed_book"
    assert v.check(q(bid=NAN, ts=9_000_000)) == "not_finite"
    assert v.check(q(bid=1.0, ask=100.0, ts=9_000_000)) == "spread_too_wide"
    assert v.last_ts("BTC/USDT", "sim") == 1_000
    # ...so the next good quote is still accepted.
    assert v.check(q(ts=1_001)) is None
    # A time_backwards reject does not rewind it either.
    assert v.check(q(ts=500)) == "time_backwards"
    assert v.check(q(ts=1_001)) is None


def test_spread_limit_edges() -> None:
    v = QuoteValidator(max_spread_bps=500.0)

    def around(bps: float) -> Quote:
        half = bps / 2e4 * 100.0
        return q(bid=100.0 - half, ask=100.0 + half)

    assert v.check(around(499.9)) is None
    assert v.check(around(500.1)) == "spread_too_wide"
    tight = QuoteValidator(max_spread_bps=1.0)
    assert tight.check(around(0.99)) is None
    assert tight.check(around(1.01)) == "spread_too_wide"


def test_codes_are_reported_in_documented_order() -> None:
    v = QuoteValidator()
    assert v.check(q(ts=10)) is None
    # nan price and zero size: not_finite wins
    assert v.check(q(bid=NAN, bid_size=0.0, ts=1)) == "not_finite"
    # negative price and zero size: price first
    assert v.check(q(bid=-1.0, bid_size=0.0, ts=1)) == "non_positive_price"
    # zero size and crossed: size first
    assert v.check(q(bid=2.0, ask=1.0, bid_size=0.0, ts=1)) == "non_positive_size"
    # crossed and late: crossed first
    assert v.check(q(bid=2.0, ask=1.0, ts=1)) == "crossed_book"
    # late and wide: time first
    assert v.check(q(bid=1.0, ask=100.0, ts=1)) == "time_backwards"
    assert v.rejected == Counter(
        {
            "not_finite": 1,
            "non_positive_price": 1,
            "non_positive_size": 1,
            "crossed_book": 1,
            "time_backwards": 1,
        }
    )
    assert v.last_reject == ("BTC/USDT", "time_backwards")


def test_constructor_rejects_non_positive_limit() -> None:
    with pytest.raises(ValueError, match="max_spread_bps"):
        QuoteValidator(max_spread_bps=0.0)


# ---------------------------------------------------------------------------------------- bars


def test_valid_bar_and_degenerate_flat_bar_pass() -> None:
    v = QuoteValidator()
    assert v.check_bar(bar()) is None
    assert v.check_bar(bar(o=100.0, h=100.0, lo=100.0, c=100.0, v=0.0, ts=MIN)) is None
    assert v.accepted == 2


@pytest.mark.parametrize("field", ["o", "h", "lo", "c", "v"])
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_bar_not_finite(field: str, bad: float) -> None:
    assert QuoteValidator().check_bar(bar(**{field: bad})) == "not_finite"


@pytest.mark.parametrize("field", ["o", "h", "lo", "c"])
def test_bar_non_positive_price(field: str) -> None:
    assert QuoteValidator().check_bar(bar(**{field: 0.0})) == "non_positive_price"


def test_bar_volume_zero_passes_negative_fails() -> None:
    v = QuoteValidator()
    assert v.check_bar(bar(v=0.0)) is None
    assert v.check_bar(bar(v=-1e-9, ts=60)) == "negative_volume"


def test_bar_ohlc_consistency_edges() -> None:
    def check(b: Bar) -> str | None:  # a fresh validator per bar: only the row checks count
        return QuoteValidator().check_bar(b)

    below = math.nextafter(101.0, 0.0)
    above = math.nextafter(99.0, INF)
    # high exactly at max(open, close) and low exactly at min(open, close) are fine
    assert check(bar(o=100.0, c=101.0, h=101.0, lo=99.0)) is None
    assert check(bar(o=100.0, c=101.0, h=below, lo=99.0)) == "bad_ohlc"
    assert check(bar(o=101.0, c=100.0, h=below, lo=99.0)) == "bad_ohlc"
    assert check(bar(o=99.0, c=100.0, h=101.0, lo=99.0)) is None
    assert check(bar(o=99.0, c=100.0, h=101.0, lo=above)) == "bad_ohlc"
    assert check(bar(o=100.0, c=99.0, h=101.0, lo=above)) == "bad_ohlc"
    assert check(bar(o=100.0, c=100.0, h=99.0, lo=101.0)) == "bad_ohlc"


def test_bar_time_backwards_and_rejects_do_not_move_state() -> None:
    v = QuoteValidator()
    assert v.check_bar(bar(ts=10 * MIN)) is None
    assert v.check_bar(bar(ts=10 * MIN)) == "duplicate_timestamp"
    assert v.check_bar(bar(ts=10 * MIN - 1)) == "time_backwards"
    assert v.check_bar(bar(ts=20 * MIN, v=-1.0)) == "negative_volume"
    # A bar opening before the last one closed (off the grid, or a shorter bar) overlaps it.
    assert v.check_bar(bar(ts=11 * MIN - 1)) == "overlapping_bar"
    assert v.check_bar(bar(ts=11 * MIN)) is None
    # other symbol and other timeframe keep their own clocks
    assert v.check_bar(bar(ts=0, symbol="ETH/USDT")) is None
    assert v.check_bar(bar(ts=0, tf=1)) is None


def test_quote_and_bar_time_states_are_independent() -> None:
    v = QuoteValidator()
    assert v.check(q(ts=10**18)) is None
    assert v.check_bar(bar(ts=0)) is None


# ----------------------------------------------------------------------------------- property

SPECIAL = [NAN, INF, -INF, 0.0, -0.0, -1.0, 1e-300, 1e300, 1.7e308]
prices = st.one_of(
    st.sampled_from(SPECIAL),
    st.floats(min_value=95.0, max_value=105.0),
    st.floats(allow_nan=True, allow_infinity=True),
)
sizes = st.one_of(st.sampled_from(SPECIAL), st.floats(min_value=0.0, max_value=10.0))
quotes = st.builds(
    lambda s, ven, b, a, bs, az, ts: Quote(s, b, a, bs, az, ts, ts, ven),
    st.sampled_from(["A", "B"]),
    st.sampled_from(["x", "y"]),
    prices,
    prices,
    sizes,
    sizes,
    st.integers(min_value=0, max_value=40),
)


def reference_code(
    quote: Quote, last: dict[tuple[str, str], tuple[int, float]], max_bps: float
) -> str | None:
    """A slow, obviously-correct model of the rules, to compare the fast one against.
    ``last``: (ts_exchange, bid + ask) of the last accepted quote per (symbol, venue)."""
    values = (quote.bid, quote.ask, quote.bid_size, quote.ask_size)
    if not all(math.isfinite(x) for x in values):
        return "not_finite"
    if quote.bid <= 0 or quote.ask <= 0:
        return "non_positive_price"
    if quote.bid_size <= 0 or quote.ask_size <= 0:
        return "non_positive_size"
    if quote.bid > quote.ask:
        return "crossed_book"
    if quote.ask > 1e15:
        return "absurd_price"
    prev = last.get((quote.symbol, quote.venue))
    if prev is not None and quote.ts_exchange < prev[0]:
        return "time_backwards"
    mid = quote.bid / 2 + quote.ask / 2
    # A zero spread is never too wide (and two subnormal prices can halve to a zero mid).
    if quote.ask > quote.bid and (quote.ask - quote.bid) / mid * 1e4 > max_bps:
        return "spread_too_wide"
    # 10x off the last accepted mid (its bid + ask times 0.05 and 5, as the validator has it)
    if (
        prev is not None
        and quote.ts_exchange - prev[0] <= 60 * 10**9
        and (quote.bid < prev[1] * 0.05 or quote.ask > prev[1] * 5.0)
    ):
        return "price_jump"
    return None


@settings(max_examples=300, deadline=None)
@given(st.lists(quotes, max_size=60), st.sampled_from([1.0, 500.0, 5_000.0]))
def test_accepted_quotes_satisfy_invariants(seq: list[Quote], max_bps: float) -> None:
    v = QuoteValidator(max_spread_bps=max_bps)
    last: dict[tuple[str, str], int] = {}
    model_last: dict[tuple[str, str], tuple[int, float]] = {}
    for quote in seq:
        expected = reference_code(quote, model_last, max_bps)
        code = v.check(quote)
        assert code == expected
        if code is None:
            model_last[(quote.symbol, quote.venue)] = (quote.ts_exchange, quote.bid + quote.ask)
            values = (quote.bid, quote.ask, quote.bid_size, quote.ask_size)
            assert all(math.isfinite(x) and x > 0 for x in values)
            assert quote.bid <= quote.ask
            key = (quote.symbol, quote.venue)
            assert quote.ts_exchange >= last.get(key, quote.ts_exchange)
            last[key] = quote.ts_exchange
        else:
            assert code in QUOTE_REJECT_CODES
            assert v.last_reject == (quote.symbol, code)
    assert v.accepted == sum(1 for _ in model_last_hits(seq, max_bps))
    assert v.accepted + sum(v.rejected.values()) == len(seq)


def model_last_hits(seq: list[Quote], max_bps: float) -> list[Quote]:
    """The quotes the reference model accepts, replayed from scratch."""
    last: dict[tuple[str, str], tuple[int, float]] = {}
    hits = []
    for quote in seq:
        if reference_code(quote, last, max_bps) is None:
            last[(quote.symbol, quote.venue)] = (quote.ts_exchange, quote.bid + quote.ask)
            hits.append(quote)
    return hits


bar_values = st.one_of(st.sampled_from(SPECIAL), st.floats(min_value=95.0, max_value=105.0))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(bar_values, bar_values, bar_values, bar_values, bar_values, st.integers(0, 9)),
        max_size=40,
    )
)
def test_accepted_bars_satisfy_invariants(rows: list[tuple]) -> None:
    from engine.marketdata.validate import MAX_BAR_PRICE, PRICE_JUMP_FACTOR

    v = QuoteValidator()
    last_ts = None
    last_close = None
    for o, h, lo, c, vol, ts in rows:
        code = v.check_bar(bar(o=o, h=h, lo=lo, c=c, v=vol, ts=ts))
        if code is None:
            assert all(math.isfinite(x) for x in (o, h, lo, c, vol))
            assert min(o, h, lo, c) > 0 and vol >= 0
            assert lo <= min(o, c) <= max(o, c) <= h <= MAX_BAR_PRICE
            assert last_ts is None or ts > last_ts
            # ts within 0..9 ns: always inside the jump window of a 60 s bar
            assert last_close is None or (
                h <= last_close * PRICE_JUMP_FACTOR and lo * PRICE_JUMP_FACTOR >= last_close
            )
            last_ts, last_close = ts, c
        else:
            assert code in BAR_REJECT_CODES
    assert v.accepted + sum(v.rejected.values()) == len(rows)


# ------------------------------------------------------------------ absurd prices and duplicates


def test_bar_duplicate_timestamp_is_rejected_and_counted() -> None:
    """A file with every row twice must not run each minute twice (issue 11, item 9)."""
    v = QuoteValidator()
    assert v.check_bar(bar(ts=0)) is None
    assert v.check_bar(bar(ts=0, c=100.7, h=101.0)) == "duplicate_timestamp"
    assert v.check_bar(bar(ts=MIN)) is None
    assert v.rejected == {"duplicate_timestamp": 1} and v.accepted == 2


def test_bar_absurd_price_boundary() -> None:
    from engine.marketdata.validate import MAX_BAR_PRICE

    at = MAX_BAR_PRICE
    above = math.nextafter(MAX_BAR_PRICE, INF)
    assert QuoteValidator().check_bar(bar(o=at, h=at, lo=at, c=at)) is None
    assert QuoteValidator().check_bar(bar(o=at, h=above, lo=at, c=at)) == "absurd_price"
    assert QuoteValidator().check_bar(bar(o=1e308, h=1e308, lo=1e308, c=1e308)) == "absurd_price"


def test_bar_price_jump_boundary_and_reference() -> None:
    from engine.marketdata.validate import PRICE_JUMP_FACTOR as F

    v = QuoteValidator()
    assert v.check_bar(bar(o=100.0, h=100.0, lo=100.0, c=100.0, ts=0)) is None
    # exactly the factor away passes, just beyond it is a jump; a reject does not move the
    # reference (the next bar is judged against the last accepted close, 100)
    assert v.check_bar(bar(o=100.0, h=100.0 * F, lo=100.0, c=100.0, ts=MIN)) is None
    up = math.nextafter(100.0 * F, INF)
    assert v.check_bar(bar(o=100.0, h=up, lo=100.0, c=100.0, ts=2 * MIN)) == "price_jump"
    assert v.check_bar(bar(o=100.0, h=100.0, lo=100.0 / F, c=100.0, ts=3 * MIN)) is None
    down = math.nextafter(100.0 / F, 0.0)
    assert v.check_bar(bar(o=100.0, h=100.0, lo=down, c=100.0, ts=4 * MIN)) == "price_jump"
    assert v.check_bar(bar(o=1e6, h=1e6, lo=1e6, c=1e6, ts=5 * MIN)) == "price_jump"
    assert v.rejected == {"price_jump": 3}


def test_bar_price_jump_window_lets_a_real_level_change_through() -> None:
    from engine.marketdata.validate import PRICE_JUMP_WINDOW_BARS as W

    v = QuoteValidator()
    tf_ns = 60 * 10**9
    assert v.check_bar(bar(o=100.0, h=100.0, lo=100.0, c=100.0, ts=0)) is None
    new_level = {"o": 5000.0, "h": 5000.0, "lo": 5000.0, "c": 5000.0}
    assert v.check_bar(bar(**new_level, ts=W * tf_ns)) == "price_jump"
    assert v.check_bar(bar(**new_level, ts=W * tf_ns + 1)) is None
    assert v.check_bar(bar(**new_level, ts=(W + 1) * tf_ns + 1)) is None
