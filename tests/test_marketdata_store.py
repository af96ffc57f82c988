"""The interval algebra that decides what a resumed download asks for, and the month files.

Resuming is only as good as ``merge_intervals``/``subtract_intervals``/``runs_of``: a point
counted as covered that is not would be a silent hole; one counted missing, a refetch. They are
checked as sets of integer points against a brute-force model (hypothesis; more examples with
``MDATA_EXAMPLES``).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.marketdata.store import (
    HEADER,
    SeriesStore,
    format_rows,
    merge_intervals,
    month_bounds,
    month_of,
    read_month,
    runs_of,
    subtract_intervals,
)

EXAMPLES = int(os.environ.get("MDATA_EXAMPLES", "300"))
interval = st.tuples(st.integers(0, 60), st.integers(0, 60))
intervals = st.lists(interval, max_size=8)


def points(items: list[tuple[int, int]]) -> set[int]:
    return {p for a, b in items for p in range(a, b)}


def canonical(items: list[tuple[int, int]]) -> bool:
    """Sorted, non-empty, neither overlapping nor touching."""
    return all(a < b for a, b in items) and all(
        items[i][1] < items[i + 1][0] for i in range(len(items) - 1)
    )


@settings(max_examples=EXAMPLES, deadline=None)
@given(intervals)
def test_merge_keeps_the_points_in_canonical_form(items: list[tuple[int, int]]) -> None:
    merged = merge_intervals(items)
    assert points(merged) == points(items)
    assert canonical(merged)


@settings(max_examples=EXAMPLES, deadline=None)
@given(intervals, intervals)
def test_subtract_is_set_difference(
    base: list[tuple[int, int]], minus: list[tuple[int, int]]
) -> None:
    out = subtract_intervals(base, minus)
    assert points(out) == points(base) - points(minus)
    assert canonical(out)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.sets(st.integers(0, 200), max_size=40), st.sampled_from([1, 3, 60]))
def test_runs_cover_exactly_the_bars(starts: set[int], tf: int) -> None:
    ts = sorted(t * tf for t in starts)
    runs = runs_of(ts, tf)
    assert canonical(runs)
    assert points(runs) == {p for t in ts for p in range(t, t + tf)}


def test_month_of_and_its_bounds_agree_at_the_edges() -> None:
    start, end = month_bounds("2024-02")
    assert (start, end) == (1_706_745_600_000, 1_709_251_200_000)  # leap February
    assert month_of(start) == month_of(end - 1) == "2024-02"
    assert month_of(start - 1) == "2024-01" and month_of(end) == "2024-03"
    assert month_bounds("2023-12")[1] == month_bounds("2024-01")[0]


def test_a_month_file_round_trips_exactly(tmp_path: Path) -> None:
    rows = [[1_704_067_200_000, 42283.58, 42298.62, 42261.02, 42298.61, 35.92724],
            [1_704_067_260_000, 0.1 + 0.2, 1e-8, 5e-324, 1.7976931348623157e308, 0.0]]  # fmt: skip
    path = tmp_path / "2024-01.csv.gz"
    path.write_bytes(format_rows(rows, "BTC/USDT"))
    assert read_month(path) == rows
    with gzip.open(path, "rt") as fh:
        assert fh.readline().strip() == ",".join(HEADER)
    assert format_rows(rows, "BTC/USDT") == path.read_bytes()  # deterministic bytes


def test_covered_is_only_what_was_flushed(tmp_path: Path) -> None:
    store = SeriesStore(tmp_path, "binance", "BTC/USDT", "1m", 60_000)
    t0 = month_bounds("2024-01")[0]
    store.add([[t0, 1.0, 1.0, 1.0, 1.0, 1.0]], (t0, t0 + 60_000))
    assert SeriesStore(tmp_path, "binance", "BTC/USDT", "1m", 60_000).covered == []
    assert store.missing(t0, t0 + 120_000) == [(t0 + 60_000, t0 + 120_000)]  # pending counts
    store.flush()
    again = SeriesStore(tmp_path, "binance", "BTC/USDT", "1m", 60_000)
    assert again.covered == [(t0, t0 + 60_000)] and again.bars == 1
