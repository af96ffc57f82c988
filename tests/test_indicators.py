"""Indicators against an independent pandas computation on the real 45k-bar BTC 1-minute file."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.indicators import ATR, EMA, RSI, SMA, Donchian
from tests.conftest import BARS_CSV

DATA = BARS_CSV
RTOL = 1e-9


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    df = pd.read_csv(DATA)
    assert len(df) == 45_031
    return df


def _collect(values: list[float | None], first: int) -> np.ndarray:
    """The outputs from index ``first`` on; everything before it must be None."""
    assert all(v is None for v in values[:first])
    assert all(v is not None for v in values[first:])
    return np.array(values[first:], dtype=float)


def _close(got: np.ndarray, want: pd.Series) -> None:
    want_arr = want.to_numpy(dtype=float)
    assert got.shape == want_arr.shape
    assert np.isfinite(want_arr).all()
    assert np.allclose(got, want_arr, rtol=RTOL, atol=0.0)


def _wilder_reference(x: pd.Series, n: int, first: int) -> pd.Series:
    """Wilder smoothing: the mean of x[first-n+1 .. first] as the seed, then alpha = 1/n."""
    seed = x.iloc[first - n + 1 : first + 1].mean()
    seq = pd.concat([pd.Series([seed]), x.iloc[first + 1 :]], ignore_index=True)
    return seq.ewm(alpha=1.0 / n, adjust=False).mean()


@pytest.mark.parametrize("n", [10, 30])
def test_ema_matches_pandas(bars: pd.DataFrame, n: int) -> None:
    close = bars["close"]
    ema = EMA(n)
    got = _collect([ema.update(c) for c in close.tolist()], n - 1)
    seq = pd.concat([pd.Series([close.iloc[:n].mean()]), close.iloc[n:]], ignore_index=True)
    _close(got, seq.ewm(span=n, adjust=False).mean())
    assert ema.value == got[-1]


def test_sma_matches_pandas(bars: pd.DataFrame) -> None:
    n = 20
    close = bars["close"]
    sma = SMA(n)
    got = _collect([sma.update(c) for c in close.tolist()], n - 1)
    _close(got, close.rolling(n).mean().iloc[n - 1 :])


def test_rsi_matches_pandas(bars: pd.DataFrame) -> None:
    n = 14
    close = bars["close"]
    rsi = RSI(n)
    got = _collect([rsi.update(c) for c in close.tolist()], n)  # n changes need n+1 closes
    delta = close.diff()
    gain = _wilder_reference(delta.clip(lower=0.0), n, n)
    loss = _wilder_reference((-delta).clip(lower=0.0), n, n)
    total = gain + loss
    want = pd.Series(np.where(total > 0, 100.0 * gain / total.where(total > 0, 1.0), 50.0))
    _close(got, want)
    # The textbook form 100 - 100/(1+RS) agrees (the data always has some losses in a window).
    assert (loss > 0).all()
    _close(got, 100.0 - 100.0 / (1.0 + gain / loss))


def test_atr_matches_pandas(bars: pd.DataFrame) -> None:
    n = 14
    high, low, close = bars["high"], bars["low"], bars["close"]
    atr = ATR(n)
    rows = zip(high.tolist(), low.tolist(), close.tolist(), strict=True)
    got = _collect([atr.update(h, lo, c) for h, lo, c in rows], n - 1)
    prev = close.shift(1)
    tr = pd.concat([high - low, (high - prev).abs(), (low - prev).abs()], axis=1).max(axis=1)
    tr.iloc[0] = high.iloc[0] - low.iloc[0]
    _close(got, _wilder_reference(tr, n, n - 1))


def test_donchian_matches_pandas(bars: pd.DataFrame) -> None:
    n = 20
    high, low = bars["high"], bars["low"]
    dc = Donchian(n)
    uppers: list[float | None] = []
    lowers: list[float | None] = []
    mids: list[float | None] = []
    for h, lo in zip(high.tolist(), low.tolist(), strict=True):
        mids.append(dc.update(h, lo))
        uppers.append(dc.upper)
        lowers.append(dc.lower)
    want_upper = high.rolling(n).max().iloc[n - 1 :].to_numpy()
    want_lower = low.rolling(n).min().iloc[n - 1 :].to_numpy()
    assert np.array_equal(_collect(uppers, n - 1), want_upper)
    assert np.array_equal(_collect(lowers, n - 1), want_lower)
    assert np.array_equal(_collect(mids, n - 1), (want_upper + want_lower) / 2)


def _feed(ind: object, i: int) -> float | None:
    price = 100.0 + math.sin(i) * 5.0
    if isinstance(ind, ATR):
        return ind.update(price + 1.0, price - 1.0, price)
    if isinstance(ind, Donchian):
        return ind.update(price + 1.0, price - 1.0)
    return ind.update(price)  # type: ignore[attr-defined]


@pytest.mark.parametrize("cls", [EMA, SMA, RSI, ATR, Donchian])
@pytest.mark.parametrize("n", [1, 2, 5, 14])
def test_warmup_boundary(cls: type, n: int) -> None:
    ind = cls(n)
    # RSI needs n changes, i.e. n+1 closes; the others are warm after exactly n updates.
    need = n + 1 if cls is RSI else n
    assert ind.period == n
    assert ind.warmup == need
    for i in range(need - 1):
        assert _feed(ind, i) is None
        assert not ind.ready
        assert ind.value is None
    out = _feed(ind, need - 1)
    assert out is not None
    assert ind.ready
    assert ind.value == out


def test_small_hand_computed_values() -> None:
    ema = EMA(3)
    assert [ema.update(x) for x in (1.0, 2.0, 3.0, 7.0)] == [None, None, 2.0, 4.5]
    sma = SMA(2)
    assert [sma.update(x) for x in (1.0, 3.0, 5.0)] == [None, 2.0, 4.0]
    rsi = RSI(2)
    # changes +12, 0 -> G=6, L=0 -> 100; then -14 -> G=3, L=7 -> 30 exactly.
    assert [rsi.update(x) for x in (100.0, 112.0, 112.0, 98.0)] == [None, None, 100.0, 30.0]
    assert (rsi.avg_gain, rsi.avg_loss) == (3.0, 7.0)
    flat = RSI(3)
    assert [flat.update(5.0) for _ in range(4)][-1] == 50.0
    atr = ATR(2)
    # TRs: 2 (high-low), then max(13, 10) - min(11, 10) = 3 -> 2.5; then gap down: 10 - 6 = 4.
    assert atr.update(12.0, 10.0, 10.0) is None
    assert atr.update(13.0, 11.0, 12.0) == 2.5
    assert atr.update(8.0, 6.0, 7.0) == (2.5 + 6.0) / 2
    dc = Donchian(2)
    assert dc.update(10.0, 5.0) is None
    assert dc.update(12.0, 7.0) == 8.5 and (dc.upper, dc.lower) == (12.0, 5.0)
    assert dc.update(11.0, 8.0) == 9.5 and (dc.upper, dc.lower) == (12.0, 7.0)


@pytest.mark.parametrize("cls", [EMA, SMA, RSI, ATR, Donchian])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "14"])
def test_bad_period_rejected(cls: type, bad: object) -> None:
    with pytest.raises(ValueError, match="period"):
        cls(bad)


@pytest.mark.parametrize("cls", [EMA, SMA, RSI, ATR, Donchian])
def test_memory_is_bounded(cls: type) -> None:
    n = 7
    ind = cls(n)
    assert not hasattr(ind, "__dict__")  # __slots__: no per-instance dict on the hot path
    for i in range(5_000):
        _feed(ind, i)
    for name in ("_window", "_maxq", "_minq"):
        window = getattr(ind, name, None)
        if window is not None:
            assert len(window) <= n


prices = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(
    data=st.lists(st.tuples(prices, prices), min_size=1, max_size=200),
    n=st.integers(min_value=1, max_value=30),
)
def test_donchian_equals_brute_force(data: list[tuple[float, float]], n: int) -> None:
    dc = Donchian(n)
    for t, (a, b) in enumerate(data):
        high, low = max(a, b), min(a, b)
        dc.update(high, low)
        if t + 1 < n:
            assert dc.upper is None
            continue
        window = data[t + 1 - n : t + 1]
        assert dc.upper == max(max(x) for x in window)
        assert dc.lower == min(min(x) for x in window)


@given(
    data=st.lists(prices, min_size=1, max_size=300),
    n=st.integers(min_value=1, max_value=40),
)
def test_sma_equals_window_mean(data: list[float], n: int) -> None:
    sma = SMA(n)
    for t, x in enumerate(data):
        out = sma.update(x)
        if t + 1 < n:
            assert out is None
        else:
            assert out == pytest.approx(math.fsum(data[t + 1 - n : t + 1]) / n, rel=1e-12)
