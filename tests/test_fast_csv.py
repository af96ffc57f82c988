"""The fast CSV reader never disagrees with the row-by-row one.

``engine.marketdata.fast_csv`` reads a well-formed bar file with pandas; anything else goes to
``replay._read_columns``. Whatever a file holds, the backtest must see the same columns (bit for
bit) or the same one-line error as it did before the fast reader existed.
"""

from __future__ import annotations

import gzip
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.backtest import BacktestError, load_market_data
from engine.marketdata.fast_csv import read_bar_columns
from engine.marketdata.replay import BAR_COLUMNS, ReplayError, _read_columns, parse_timestamp_ns

HEADER = ",".join(BAR_COLUMNS)
T0_MS = 1_704_067_200_000
GOOD = [f"{T0_MS + i * 60_000},100.5,101.25,99.75,100.0,12.5" for i in range(5)]


def slow_columns(path: Path, max_rows: int = 5_000_000) -> tuple[list[int], list[list[float]]]:
    parsers = (parse_timestamp_ns, float, float, float, float, float)
    ts, *cols = _read_columns(path, BAR_COLUMNS, parsers, max_rows)
    return ts, cols


def write(path: Path, lines: list[str], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def same_as_slow(path: Path) -> None:
    fast = read_bar_columns(path, BAR_COLUMNS, False, 5_000_000)
    assert fast is not None, "a well-formed file should take the fast path"
    ts, cols, symbol = fast
    want_ts, want_cols = slow_columns(path)
    assert ts.tolist() == want_ts and symbol is None
    for got, want in zip(cols, want_cols, strict=True):
        assert got.tobytes() == np.asarray(want, dtype=np.float64).tobytes()


# Prices as a trader's file spells them: repr of any positive double, fixed decimals, long digit
# strings past double precision, exponents, leading zeros.
price_text = st.one_of(
    st.floats(min_value=1e-12, max_value=1e15, allow_nan=False).map(repr),
    st.decimals(min_value="0.00000001", max_value="1000000", places=8).map(str),
    st.from_regex(r"\A[1-9][0-9]{0,7}\.[0-9]{10,25}\Z"),
    st.from_regex(r"\A[1-9]\.[0-9]{1,17}[eE][+-]?[0-9]{1,2}\Z"),
    st.from_regex(r"\A0{1,3}[1-9][0-9]{0,5}(\.[0-9]{1,6})?\Z"),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.tuples(*[price_text] * 5), min_size=1, max_size=40),
    st.sampled_from(["\n", "\r\n"]),
)
def test_any_well_formed_file_reads_bit_for_bit_as_the_row_reader(
    tmp_path: Path, rows: list[tuple[str, ...]], newline: str
) -> None:
    path = tmp_path / "bars.csv"
    body = [f"{T0_MS + i * 60_000},{','.join(r)}" for i, r in enumerate(rows)]
    path.write_bytes((newline.join([HEADER, *body]) + newline).encode())
    same_as_slow(path)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.datetimes(min_value=datetime(1678, 1, 1), max_value=datetime(2261, 12, 31, 23, 59, 59)),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from(["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"]),
    st.booleans(),
)
def test_iso_timestamps_of_one_fixed_width_read_as_the_row_reader(
    stamps: list[datetime], fmt: str, micro: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "iso.csv"
        spell = fmt + (".%f" if micro else "")
        body = [f"{t.strftime(spell)},1.5,2.5,1.0,2.0,3.0" for t in stamps]
        write(path, body)
        same_as_slow(path)


@pytest.mark.parametrize(
    "first",
    [
        "2024-01-01 00:00:00.123",  # three decimals: another width
        "2024-01-01 00:00:00Z",  # a zone
        "2024-01-01 00:00:00+01:00",
        "2024-02-30 00:00:00",  # no such day: the row reader names it
        "20240101T000000",
    ],
)
def test_other_iso_spellings_go_to_the_row_reader(tmp_path: Path, first: str) -> None:
    path = write(tmp_path / "iso.csv", [f"{first},1.5,2.5,1.0,2.0,3.0"])
    assert read_bar_columns(path, BAR_COLUMNS, False, 5_000_000) is None
    try:
        want = slow_columns(path)
    except ReplayError as exc:
        with pytest.raises(ReplayError) as got:
            load_market_data(path, timeframe_s=60)
        assert str(got.value) == str(exc)
    else:
        assert load_market_data(path, timeframe_s=60).ts == want[0]


@pytest.mark.parametrize(
    ("first", "fast"),
    [
        # int64 nanoseconds end at 2262-04-11 23:47:16.854775807 and start at
        # 1677-09-21 00:12:43.145224192: just inside reads fast, just outside is the row
        # reader's one-line error (pandas 3 parses to microseconds, and a cast of a later year
        # to nanoseconds wrapped around to a time in 1677 without a word).
        ("2262-04-11 23:47:16", True),
        ("2262-04-11 23:47:16.854775", True),
        ("2262-04-11 23:47:16.854776", False),
        ("2262-04-11 23:47:17", False),
        ("9999-12-31 23:59:59", False),
        ("1677-09-21 00:12:44", True),
        ("1677-09-21 00:12:43.145225", True),
        ("1677-09-21 00:12:43.145224", False),
        ("1677-09-21 00:12:43", False),
        ("0000-01-01 00:00:00", False),  # no year 0 in Python; pandas read it
        # A leap second: pandas rolled it into the next minute, fromisoformat refuses it.
        ("2024-12-31 23:59:60", False),
        ("2024-01-01T00:00:61", False),
        ("2024-01-01 00:00:60.500000", False),
        ("2024-01-01 00:60:00", False),
        ("2024-01-01 00:59:59", True),
    ],
)
def test_iso_times_at_the_edges_of_what_both_readers_hold(
    tmp_path: Path, first: str, fast: bool
) -> None:
    path = write(tmp_path / "edge.csv", [f"{first},1.5,2.5,1.0,2.0,3.0"])
    if fast:
        same_as_slow(path)
        return
    assert read_bar_columns(path, BAR_COLUMNS, False, 5_000_000) is None
    with pytest.raises(ReplayError) as want:
        slow_columns(path)
    with pytest.raises(ReplayError) as got:
        load_market_data(path, timeframe_s=60)
    assert str(got.value) == str(want.value) and "row 2: cannot parse timestamp" in str(got.value)


@settings(max_examples=40, deadline=None)
@example([datetime(2000, 1, 1, 0, 0), datetime(2000, 1, 1, 0, 0, 1)], (" ", "seconds"))
@given(
    st.lists(st.datetimes(), min_size=1, max_size=10),
    st.sampled_from([(" ", "seconds"), ("T", "microseconds")]),
)
def test_iso_times_of_any_year_read_as_the_row_reader_or_refused_as_it_does(
    stamps: list[datetime], spelling: tuple[str, str]
) -> None:
    sep, timespec = spelling
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "iso.csv"
        body = [f"{t.isoformat(sep, timespec)},1.5,2.5,1.0,2.0,3.0" for t in stamps]
        write(path, body)
        try:
            want = slow_columns(path)
        except ReplayError as exc:
            assert read_bar_columns(path, BAR_COLUMNS, False, 5_000_000) is None
            with pytest.raises(ReplayError) as got:
                load_market_data(path, timeframe_s=60)
            assert str(got.value) == str(exc)
        else:
            try:
                assert load_market_data(path, timeframe_s=60).ts == want[0]
            except BacktestError as exc:
                # Read alike, then refused as bars of another length than 60 s (stamps drawn
                # 1 s apart, say): that check is the timeframe's, not the readers'.
                assert str(exc).startswith("--timeframe 60: the bars in "), exc
            same_as_slow(path)


def test_a_gzipped_file_and_a_last_line_without_newline(tmp_path: Path) -> None:
    plain = tmp_path / "a.csv"
    plain.write_text("\n".join([HEADER, *GOOD]))  # no newline after the last row
    same_as_slow(plain)
    packed = tmp_path / "a.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    same_as_slow(packed)


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param([*GOOD[:2], "2024-01-01T00:03:00,1,2,0.5,1,3"], id="iso-timestamp"),
        pytest.param([*GOOD[:2], f"+{T0_MS + 180_000},1,2,0.5,1,3"], id="signed-timestamp"),
        pytest.param([*GOOD[:2], f"{T0_MS + 180_000}.0,1,2,0.5,1,3"], id="fractional-timestamp"),
        pytest.param([*GOOD[:2], f" {T0_MS + 180_000},1,2,0.5,1,3"], id="spaced-timestamp"),
        pytest.param([*GOOD[:2], "", *GOOD[2:]], id="blank-line"),
        pytest.param([*GOOD[:2], f"{T0_MS + 180_000},1,2,0.5,1,3,7"], id="extra-field"),
        pytest.param([*GOOD[:2], f"{T0_MS + 180_000},1,2,0.5,1"], id="missing-field"),
        pytest.param([*GOOD[:2], f"{T0_MS + 180_000},1,,0.5,1,3"], id="empty-field"),
        pytest.param([*GOOD[:2], f"{T0_MS + 180_000},nan,2,0.5,1,3"], id="nan"),
        pytest.param([*GOOD[:2], f"{T0_MS + 180_000},NA,2,0.5,1,3"], id="NA"),
        pytest.param([*GOOD[:2], f'{T0_MS + 180_000},"1",2,0.5,1,3'], id="quoted"),
        pytest.param([*GOOD[:2], f"{T0_MS + 180_000},1_0,2,0.5,1,3"], id="underscore"),
        pytest.param([*GOOD[:2], f"{T0_MS + 180_000},abc,2,0.5,1,3"], id="text"),
        pytest.param([*GOOD[:2], "99999999999999999999,1,2,0.5,1,3"], id="ms-overflow"),
        pytest.param([*GOOD[:2], "9223372036854775,1,2,0.5,1,3"], id="ns-overflow"),
    ],
)
def test_an_unusual_file_is_left_to_the_row_reader_with_the_same_outcome(
    tmp_path: Path, lines: list[str]
) -> None:
    path = write(tmp_path / "odd.csv", lines)
    assert read_bar_columns(path, BAR_COLUMNS, False, 5_000_000) is None
    try:
        want = slow_columns(path)
    except ReplayError as exc:
        with pytest.raises(ReplayError) as got:
            load_market_data(path)
        assert str(got.value) == str(exc) and "\n" not in str(got.value)
    else:
        data = load_market_data(path)
        assert data.ts == want[0]
        got = [c.tobytes() for c in data.col_arrays]  # bytes: a NaN equals itself here
        assert got == [np.asarray(c, dtype=np.float64).tobytes() for c in want[1]]


@pytest.mark.parametrize(
    "volumes",
    [["True"], ["True", "False"], ["false", "TRUE"], ["tRuE", "fAlSe", "true"]],
)
def test_a_column_of_true_and_false_is_the_row_readers_to_refuse(
    tmp_path: Path, volumes: list[str]
) -> None:
    """pandas reads a float column made only of the words true and false (any case) as 1.0
    and 0.0; Python's float refuses them, and so must the backtest, naming the row."""
    lines = [f"{T0_MS + i * 60_000},1.5,2.5,1.0,2.0,{v}" for i, v in enumerate(volumes)]
    path = write(tmp_path / "bools.csv", lines)
    assert read_bar_columns(path, BAR_COLUMNS, False, 5_000_000) is None
    with pytest.raises(ReplayError, match=f"row 2: cannot parse volume '{volumes[0]}'"):
        load_market_data(path, timeframe_s=60)


def test_those_letters_in_a_symbol_or_another_text_column_keep_the_fast_path(
    tmp_path: Path,
) -> None:
    header = HEADER + ",symbol,note"
    lines = [f"{row},SOL/USDT,rally or lull" for row in GOOD]
    path = write(tmp_path / "sol.csv", lines, header=header)
    fast = read_bar_columns(path, (*BAR_COLUMNS, "symbol"), True, 5_000_000)
    assert fast is not None and fast[2] == "SOL/USDT"
    assert fast[0].tolist() == slow_columns(path)[0]


def test_not_utf8_a_second_symbol_and_the_row_limit_go_to_the_row_reader(tmp_path: Path) -> None:
    raw = tmp_path / "latin.csv"
    raw.write_bytes((HEADER + "\n" + GOOD[0] + "\n").encode() + b"\xff\xfe,1,2,3,4,5\n")
    assert read_bar_columns(raw, BAR_COLUMNS, False, 5_000_000) is None
    with pytest.raises(ReplayError, match="utf-8"):
        load_market_data(raw)

    two = write(
        tmp_path / "two.csv",
        [f"{r},BTC/USDT" for r in GOOD[:2]] + [f"{GOOD[2]},ETH/USDT"],
        header=HEADER + ",symbol",
    )
    assert read_bar_columns(two, (*BAR_COLUMNS, "symbol"), True, 5_000_000) is None
    with pytest.raises(ReplayError, match="row 4: symbol 'ETH/USDT' differs"):
        load_market_data(two)
    one = write(tmp_path / "one.csv", [f"{r}, BTC/USDT" for r in GOOD], header=HEADER + ",symbol")
    fast = read_bar_columns(one, (*BAR_COLUMNS, "symbol"), True, 5_000_000)
    assert fast is not None and fast[2] == "BTC/USDT" == load_market_data(one).symbol

    at = write(tmp_path / "at.csv", GOOD)
    assert read_bar_columns(at, BAR_COLUMNS, False, 5) is not None  # exactly the limit
    assert read_bar_columns(at, BAR_COLUMNS, False, 4) is None  # one over: refused row by row
    with pytest.raises(ReplayError, match="more than 4 data rows"):
        load_market_data(at, max_rows=4)


def test_the_shipped_minute_bars_take_the_fast_path_and_match_the_row_reader() -> None:
    from tests.conftest import BARS_CSV

    same_as_slow(Path(BARS_CSV))
