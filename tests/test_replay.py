"""Replay of the recorded data, and pacing of any event stream on a fake clock."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from itertools import islice, pairwise
from pathlib import Path

import pytest

from engine.config import MarketConfig, ReplayConfig, SimulatedMarketConfig
from engine.marketdata import open_source, source_speed
from engine.marketdata.pacing import paced, speed_factor
from engine.marketdata.replay import BarReplay, QuoteReplay, ReplayError, parse_timestamp_ns
from engine.marketdata.simulated import SimulatedMarket
from engine.marketdata.validate import QuoteValidator
from engine.types import NS_PER_SECOND, Bar, Instrument, Quote
from tests.conftest import BARS_CSV
from tests.conftest import BOOKTICKER_CSV as QUOTES_CSV


def utc_ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * NS_PER_SECOND


def data_lines(path: Path) -> tuple[list[str], list[str]]:
    lines = path.read_text().splitlines()
    return lines[1].split(","), lines[-1].split(",")


# ------------------------------------------------------------------------------- real data


def test_bar_replay_matches_the_file() -> None:
    src = BarReplay(BARS_CSV, "BTC/USDT")
    bars = list(src.events())
    assert len(bars) == len(src) == 45_031
    first, last = data_lines(BARS_CSV)
    for b, row in ((bars[0], first), (bars[-1], last)):
        assert b.ts_open == parse_timestamp_ns(row[0])
        assert (b.open, b.high, b.low, b.close, b.volume) == tuple(float(x) for x in row[1:])
        assert b.symbol == "BTC/USDT" and b.venue == "replay" and b.timeframe_s == 60
    assert bars[0].ts_open == utc_ns("2021-12-31T23:01:00")
    assert bars[0].ts_close == utc_ns("2021-12-31T23:02:00")
    assert bars[-1].ts_open == utc_ns("2022-02-01T05:31:00")
    assert bars[0].close == 46377.0 and bars[-1].close == 38544.0
    # continuous one-minute bars, and all of them pass the boundary checks
    assert all(b.ts_open - a.ts_open == 60 * NS_PER_SECOND for a, b in pairwise(bars))
    v = QuoteValidator()
    assert all(v.check_bar(b) is None for b in bars)
    assert src.history() == []


def test_quote_replay_matches_the_file() -> None:
    src = QuoteReplay(QUOTES_CSV, "BTC/USDT", venue="binance")
    qs = list(src.events())
    assert len(qs) == len(src) == 28_040
    first, last = data_lines(QUOTES_CSV)
    for quote, row in ((qs[0], first), (qs[-1], last)):
        assert quote.ts_exchange == quote.ts_recv == int(row[0])
        assert (quote.bid, quote.bid_size, quote.ask, quote.ask_size) == tuple(
            float(x) for x in row[2:]
        )
        assert quote.venue == "binance"
    assert qs[0].bid == 61837.63 and qs[0].ask == 61837.64
    assert qs[-1].ts_exchange == 1723161599999231384
    assert src.update_ids[0] == 50093239212
    assert all(b > a for a, b in zip(src.update_ids, src.update_ids[1:], strict=False))
    v = QuoteValidator()
    assert all(v.check(x) is None for x in qs)
    assert src.history() == []


def test_events_can_be_iterated_again() -> None:
    src = QuoteReplay(QUOTES_CSV, "BTC/USDT")
    assert list(islice(src.events(), 5)) == list(islice(src.events(), 5))


def test_instruments_default_and_custom(tmp_path: Path) -> None:
    p = tmp_path / "q.csv"
    p.write_text("local_ts_ns,update_id,bid_price,bid_qty,ask_price,ask_qty\n1,1,1,1,2,1\n")
    assert QuoteReplay(p, "BTC/USDT").instruments() == {
        "BTC/USDT": Instrument("BTC/USDT", "replay", 0.01, 0.00001, 0.0, 5.0)
    }
    inst = QuoteReplay(p, "X", "v", tick_size=0.5, lot_size=0.1, min_notional=1.0).instruments()
    assert inst == {"X": Instrument("X", "v", 0.5, 0.1, 0.0, 1.0)}


# ----------------------------------------------------------------------------- file formats


def write(tmp_path: Path, text: str, name: str = "bars.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_epoch_millisecond_timestamps(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "timestamp,open,high,low,close,volume\n"
        "1640995260000,1,2,0.5,1.5,10\n"
        "1640995320000,1.5,2,1,1,0\n",
    )
    bars = list(BarReplay(p, "X", venue="v").events())
    assert [b.ts_open for b in bars] == [1640995260000 * 10**6, 1640995320000 * 10**6]
    assert bars[0] == Bar("X", 1640995260000 * 10**6, 60, 1.0, 2.0, 0.5, 1.5, 10.0, "v")
    assert parse_timestamp_ns("2021-12-31 23:01:00.000000") == 1640991660 * NS_PER_SECOND
    assert parse_timestamp_ns("2021-12-31 23:01:00.000001") == 1640991660 * NS_PER_SECOND + 1000


def test_column_order_and_extra_columns_do_not_matter(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "volume,close,extra,low,high,open,timestamp\n5,1.5,zzz,0.5,2,1,2022-01-01 00:00:00\n\n",
    )
    (b,) = BarReplay(p, "X").events()
    assert (b.open, b.high, b.low, b.close, b.volume) == (1.0, 2.0, 0.5, 1.5, 5.0)


def test_values_are_not_filtered_here(tmp_path: Path) -> None:
    # nan and a crossed book are parsable: they reach the validator, which rejects them.
    p = write(
        tmp_path,
        "local_ts_ns,update_id,bid_price,bid_qty,ask_price,ask_qty\n2,1,nan,1,2,1\n1,2,3,1,2,1\n",
        "q.csv",
    )
    qs = list(QuoteReplay(p, "X").events())
    assert len(qs) == 2 and math.isnan(qs[0].bid)
    v = QuoteValidator()
    assert [v.check(x) for x in qs] == ["not_finite", "crossed_book"]


@pytest.mark.parametrize(
    ("body", "row", "what"),
    [
        ("2022-01-01 00:00:00,1,2,0.5,1.5,10\n2022-01-01 00:01:00,1,abc,0.5,1.5,10\n", 3, "high"),
        ("2022-01-01 00:00:00,1,2,0.5,1.5,\n", 2, "volume"),
        ("not a time,1,2,0.5,1.5,10\n", 2, "timestamp"),
        ("2022-01-01 00:00:00,1,2,0.5,1.5,10\n2022-01-01 00:01:00,1,2,0.5\n", 3, "fields"),
    ],
)
def test_bad_bar_row_names_file_and_row(tmp_path: Path, body: str, row: int, what: str) -> None:
    p = write(tmp_path, "timestamp,open,high,low,close,volume\n" + body)
    with pytest.raises(ReplayError) as err:
        BarReplay(p, "X")
    msg = str(err.value)
    assert "\n" not in msg
    assert str(p) in msg and f"row {row}:" in msg and what in msg


def test_bad_quote_row_names_file_and_row(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "local_ts_ns,update_id,bid_price,bid_qty,ask_price,ask_qty\n"
        "1,1,1,1,2,1\n2,2,1,1,2,1\n3,3.5,1,1,2,1\n",
        "q.csv",
    )
    with pytest.raises(ReplayError, match=r"q\.csv: row 4: cannot parse update_id '3\.5'"):
        QuoteReplay(p, "X")


def test_missing_column_empty_and_missing_file(tmp_path: Path) -> None:
    p = write(tmp_path, "timestamp,open,high,low,close\n2022-01-01 00:00:00,1,2,0.5,1.5\n")
    with pytest.raises(ReplayError, match=r"row 1: missing column.*volume"):
        BarReplay(p, "X")
    with pytest.raises(ReplayError, match="empty file"):
        BarReplay(write(tmp_path, "", "empty.csv"), "X")
    with pytest.raises(ReplayError, match=r"nope\.csv: cannot open"):
        QuoteReplay(tmp_path / "nope.csv", "X")
    assert issubclass(ReplayError, ValueError)


def test_open_source_builds_the_configured_source(tmp_path: Path) -> None:
    p = write(tmp_path, "timestamp,open,high,low,close,volume\n1000,1,2,0.5,1.5,10\n")
    market = MarketConfig(
        source="replay", replay=ReplayConfig(path=str(p), kind="bars", tick_size=0.5)
    )
    src = open_source(market, now_ns=0)
    assert isinstance(src, BarReplay)
    assert src.instruments()["BTC/USDT"].tick_size == 0.5
    assert source_speed(market) == "max"
    sim = open_source(MarketConfig(simulated=SimulatedMarketConfig(start="now")), now_ns=42)
    assert isinstance(sim, SimulatedMarket) and sim.start_ns == 42
    assert source_speed(MarketConfig()) == "realtime"


# ---------------------------------------------------------------------------------- pacing


class FakeClock:
    """A monotonic clock that only moves when someone sleeps (or a test says so)."""

    def __init__(self, t: int = 5_000) -> None:
        self.t = t
        self.sleeps: list[float] = []

    def now_ns(self) -> int:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += round(seconds * 1e9)


def quote_at(ts: int, bid: float = 1.0) -> Quote:
    return Quote("X", bid, bid + 1, 1.0, 1.0, ts, ts, "v")


async def collect(gen, clock: FakeClock, work_ns: int = 0) -> list[tuple[int, list]]:
    out = []
    async for items in gen:
        out.append((clock.t, items))
        clock.t += work_ns  # the consumer's own processing time
    return out


@pytest.mark.parametrize("speed", ["realtime", "recorded", 1.0])
async def test_realtime_maps_event_time_to_wall_time(speed) -> None:
    clock = FakeClock()
    t0 = 10**18
    evs = [quote_at(t0), quote_at(t0 + NS_PER_SECOND), quote_at(t0 + NS_PER_SECOND, 2.0)]
    evs.append(quote_at(t0 + 3 * NS_PER_SECOND))
    got = await collect(paced(evs, speed, now_ns=clock.now_ns, sleep=clock.sleep), clock)
    assert got == [
        (5_000, [evs[0]]),
        (5_000 + NS_PER_SECOND, [evs[1], evs[2]]),
        (5_000 + 3 * NS_PER_SECOND, [evs[3]]),
    ]


async def test_speed_up_divides_the_gaps() -> None:
    clock = FakeClock()
    evs = [quote_at(k * NS_PER_SECOND) for k in (0, 1, 3)]
    got = await collect(paced(evs, 10.0, now_ns=clock.now_ns, sleep=clock.sleep), clock)
    assert [t for t, _ in got] == [
        5_000,
        5_000 + NS_PER_SECOND // 10,
        5_000 + 3 * NS_PER_SECOND // 10,
    ]
    assert clock.sleeps == pytest.approx([0.1, 0.2])


async def test_bars_are_paced_on_their_close_time() -> None:
    clock = FakeClock()
    bars = [Bar("X", k * 60 * NS_PER_SECOND, 60, 1, 1, 1, 1, 1) for k in range(3)]
    got = await collect(paced(bars, 60.0, now_ns=clock.now_ns, sleep=clock.sleep), clock)
    assert [t for t, _ in got] == [5_000, 5_000 + NS_PER_SECOND, 5_000 + 2 * NS_PER_SECOND]


async def test_start_event_ns_holds_back_the_first_event() -> None:
    clock = FakeClock()
    start = 10**18
    evs = [quote_at(start + 250_000_000)]
    gen = paced(evs, "realtime", start_event_ns=start, now_ns=clock.now_ns, sleep=clock.sleep)
    got = await collect(gen, clock)
    assert got == [(5_000 + 250_000_000, evs)]


async def test_a_slow_consumer_gets_the_backlog_in_one_batch_and_keeps_the_schedule() -> None:
    clock = FakeClock()
    evs = [quote_at(k * NS_PER_SECOND) for k in range(6)]
    gen = paced(evs, "realtime", now_ns=clock.now_ns, sleep=clock.sleep)
    got = await collect(gen, clock, work_ns=int(3.5 * NS_PER_SECOND))
    # consumer busy 3.5 s after each batch: events 1-3 are due at once, then 4-5 at 7 s
    assert [[x.ts_exchange // NS_PER_SECOND for x in items] for _, items in got] == [
        [0],
        [1, 2, 3],
        [4, 5],
    ]
    assert got[2][0] == 5_000 + 7 * NS_PER_SECOND


async def test_realtime_batches_are_capped() -> None:
    clock = FakeClock()
    evs = [quote_at(0) for _ in range(10)]
    gen = paced(evs, "realtime", batch=4, now_ns=clock.now_ns, sleep=clock.sleep)
    got = await collect(gen, clock)
    assert [len(items) for _, items in got] == [4, 4, 2]


async def test_max_yields_everything_in_batches_and_lets_others_run() -> None:
    clock = FakeClock()
    evs = [quote_at(k) for k in range(1_000)]
    gen = paced(iter(evs), "max", batch=256, now_ns=clock.now_ns, sleep=clock.sleep)
    got = await collect(gen, clock)
    assert [len(items) for _, items in got] == [256, 256, 256, 232]
    assert [x for _, items in got for x in items] == evs
    assert clock.sleeps == [0, 0, 0]
    assert clock.t == 5_000  # never waited


async def test_max_with_real_asyncio_sleep_on_an_infinite_stream() -> None:
    sim = SimulatedMarket(SimulatedMarketConfig(), 10**18)
    n = 0
    async for items in paced(sim.quotes(), "max", batch=100):
        n += len(items)
        if n >= 1_000:
            break
    assert n == 1_000


async def test_custom_event_time() -> None:
    clock = FakeClock()
    evs = [quote_at(0), quote_at(1)]
    gen = paced(
        evs,
        "realtime",
        event_time=lambda e: int(e.bid) * NS_PER_SECOND,  # bid 1.0 and 1.0: same instant
        now_ns=clock.now_ns,
        sleep=clock.sleep,
    )
    assert await collect(gen, clock) == [(5_000, evs)]


def test_speed_parsing() -> None:
    assert speed_factor("max") is None
    assert speed_factor("realtime") == speed_factor("recorded") == 1.0
    assert speed_factor(25) == 25.0
    for bad in (0, -1.0, "fast", float("nan"), True):
        with pytest.raises(ValueError, match="speed"):
            speed_factor(bad)  # type: ignore[arg-type]


async def test_bad_batch_size() -> None:
    with pytest.raises(ValueError, match="batch"):
        async for _ in paced([], "max", batch=0):
            pass
