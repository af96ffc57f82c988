"""Market data columns read a range of rows at a time, wherever they are kept.

A backtest walks its data once, front to back, a chunk at a time; holding every row while it
does costs memory in proportion to the file (48 bytes a bar as arrays, ~300 as Python numbers)
for nothing. A ``ColumnSource`` gives rows ``[start, stop)`` as numpy arrays: from arrays in
memory, from a parsed-data cache entry on disk (``MarketDataCache.open_columns``), from several
sources end to end (a folder of monthly files), a window of one (``--start``/``--end``), or with
the volume scaled by the close (base-currency volume). ``ts`` is int64 nanoseconds, the columns
float64; what the columns are (bars or quotes) is the caller's to know.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

Array = np.ndarray[Any, Any]
Rows = tuple[Array, tuple[Array, ...]]


class ColumnSource(Protocol):
    """``rows`` rows of ``ts`` and ``ncols`` columns, readable by range."""

    rows: int
    ncols: int

    def read(self, start: int, stop: int) -> Rows:
        """Rows ``start`` to ``stop - 1`` (clipped to the source): (ts, columns)."""
        ...


class ArrayColumns:
    """Columns held in memory as arrays (a parse's output, or data made in code)."""

    def __init__(self, ts: Array, cols: tuple[Array, ...]) -> None:
        self.ts = np.ascontiguousarray(ts, dtype=np.int64)
        self.cols = tuple(np.ascontiguousarray(c, dtype=np.float64) for c in cols)
        self.rows = len(self.ts)
        self.ncols = len(self.cols)

    def read(self, start: int, stop: int) -> Rows:
        return self.ts[start:stop], tuple(c[start:stop] for c in self.cols)


class ConcatColumns:
    """Sources one after another, as one (the monthly files of a downloaded folder)."""

    def __init__(self, parts: list[ColumnSource]) -> None:
        if not parts:
            raise ValueError("no parts")
        self.parts = parts
        self.ncols = parts[0].ncols
        self.starts = np.cumsum([0] + [p.rows for p in parts]).tolist()
        self.rows = self.starts[-1]

    def read(self, start: int, stop: int) -> Rows:
        start, stop = max(0, start), min(self.rows, stop)
        ts_parts: list[Array] = []
        col_parts: list[list[Array]] = [[] for _ in range(self.ncols)]
        for part, first in zip(self.parts, self.starts, strict=False):
            last = first + part.rows
            if last <= start or first >= stop:
                continue
            ts, cols = part.read(max(start, first) - first, min(stop, last) - first)
            ts_parts.append(ts)
            for i, c in enumerate(cols):
                col_parts[i].append(c)
        if len(ts_parts) == 1:
            return ts_parts[0], tuple(c[0] for c in col_parts)
        if not ts_parts:
            return np.empty(0, dtype=np.int64), tuple(np.empty(0) for _ in range(self.ncols))
        return np.concatenate(ts_parts), tuple(np.concatenate(c) for c in col_parts)


class WindowColumns:
    """Rows ``first`` to ``last - 1`` of a source, as a source of their own."""

    def __init__(self, source: ColumnSource, first: int, last: int) -> None:
        self.source = source
        self.first = max(0, first)
        self.rows = max(0, min(last, source.rows) - self.first)
        self.ncols = source.ncols

    def read(self, start: int, stop: int) -> Rows:
        start, stop = max(0, start), min(self.rows, stop)
        return self.source.read(self.first + start, self.first + max(start, stop))


class VolumeTimesClose:
    """Bars whose volume (column 4) is in the base currency, read as quote volume: volume x
    close, row by row (what the core divides back by the close for the displayed size)."""

    def __init__(self, source: ColumnSource) -> None:
        self.source = source
        self.rows = source.rows
        self.ncols = source.ncols

    def read(self, start: int, stop: int) -> Rows:
        ts, (o, h, lo, c, v) = self.source.read(start, stop)
        return ts, (o, h, lo, c, v * c)


CHUNK_ROWS = 65_536


def chunks(source: ColumnSource, size: int = CHUNK_ROWS) -> Any:
    """(start, ts, columns) for each ``size`` rows of the source, in order."""
    for start in range(0, source.rows, size):
        ts, cols = source.read(start, start + size)
        yield start, ts, cols


def all_rows(source: ColumnSource) -> Rows:
    """Every row at once (for readers that need whole columns; costs the whole size)."""
    if isinstance(source, ArrayColumns):
        return source.ts, source.cols
    return source.read(0, source.rows)
