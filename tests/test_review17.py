"""Adversarial review of the streamed backtest data (fast CSV, column sources, cache entries
read by range, chunked runs, the progress bar): each test is a hole found by attacking a
promise, failing before its fix. Every wait is bounded."""

from __future__ import annotations

import numpy as np
import pytest

from engine.backtest import MarketData
from engine.marketdata.columns import CHUNK_ROWS
from engine.types import NS_PER_SECOND

T0 = 1_704_067_200 * NS_PER_SECOND
MIN = 60 * NS_PER_SECOND


def minute_bars(n: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    ts = T0 + np.arange(n, dtype=np.int64) * MIN
    close = 100.0 + np.sin(np.arange(n) / 50.0)
    return ts, (close, close + 0.5, close - 0.5, close, np.full(n, 10.0))


# ------------------------------------------------------------------ --start/--end windows


@pytest.mark.parametrize("at", [100, CHUNK_ROWS - 1, CHUNK_ROWS, CHUNK_ROWS + 5_000])
def test_a_window_keeps_a_backwards_row_wherever_it_sits_in_the_file(at: int) -> None:
    """``between`` keeps the rows with start <= ts < end; a file with a backwards row anywhere
    is not sorted, so the row counts (then the validator rejects it as out of order). The
    window used to be cut at the first row past its end when the file was sorted *so far*:
    the same backwards row counted in the first chunk and vanished from a later one."""
    ts, cols = minute_bars(CHUNK_ROWS + 10_000)
    ts[at] = T0 + 10 * MIN  # a late copy of minute 10, inside the window
    data = MarketData.from_bars(ts, *cols, timeframe_s=60)
    window = data.between(T0, T0 + 60 * MIN)
    assert window.ts_array.tolist() == [*range(T0, T0 + 60 * MIN, MIN), T0 + 10 * MIN]
    # Sorted data: the window is the slice, at any offset.
    ts, cols = minute_bars(CHUNK_ROWS + 10)
    clean = MarketData.from_bars(ts, *cols, timeframe_s=60)
    lo = T0 + (CHUNK_ROWS - 3) * MIN
    assert clean.between(lo, lo + 7 * MIN).ts_array.tolist() == list(range(lo, lo + 7 * MIN, MIN))
