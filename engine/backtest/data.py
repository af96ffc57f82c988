"""Backtest data: recorded bars or quotes read, streamed and bounded, as plain columns.

Data (``load_market_data``; the format is told from the content and the extension):

* OHLCV CSV with the header ``timestamp,open,high,low,close,volume`` (timestamp = the bar's open,
  ISO-8601 (naive = UTC) or epoch milliseconds; an optional ``symbol`` column names the symbol);
* the ccxt ``fetch_ohlcv`` JSON shape ``[[ms, open, high, low, close, volume], ...]`` (or an
  object ``{"symbol": ..., "ohlcv": [...]}``);
* a Binance bookTicker CSV ``local_ts_ns,update_id,bid_price,bid_qty,ask_price,ask_qty``
  (its update ids go up row by row: a duplicated or moved row is refused, naming it).

Unreadable files raise ``ReplayError`` (one line naming the file and row); values that parse but
are bad go to the core's boundary validator, which rejects and counts them, as in the live engine
(bars: not finite, not positive, open/close outside [low, high], above ``MAX_BAR_PRICE``, a
duplicate or backwards timestamp, a ``PRICE_JUMP_FACTOR`` jump; see engine/marketdata/
validate.py). A rejected row changes nothing but the count: the run equals the run without the
row. The result's header says how many rows were read, accepted and rejected by code; a run in
which every row was rejected raises ``NoUsableDataError``. Every format is streamed and a file
longer than ``max_rows`` (default ``MAX_ROWS``, 5,000,000) is refused at that row, so memory is
bounded by the limit. The bar timeframe is inferred from the most common gap between bar
timestamps.

Bar volume is kept in the quote currency (the core's displayed size is volume / close, in the
base currency). ccxt OHLCV volume is in the base currency, so JSON volume is multiplied by the
close on load; a CSV is taken as quote volume unless ``volume_unit="base"`` says otherwise
(``DEFAULT_VOLUME_UNIT``). The header's ``volume`` says which unit was used and how many
fills came from orders larger than the displayed size (what the fill model then does: impact
levels, then "exceeds simulated depth").
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.backtest.errors import BacktestError
from engine.marketdata.cache import CachedColumns, MarketDataCache
from engine.marketdata.columns import (
    ArrayColumns,
    ColumnSource,
    ConcatColumns,
    VolumeTimesClose,
    WindowColumns,
    all_rows,
    chunks,
)
from engine.marketdata.fast_csv import read_bar_columns
from engine.marketdata.recording import RecordingReplay, is_recording
from engine.marketdata.replay import (
    BAR_COLUMNS,
    BASE_VOLUME,
    MAX_ROWS,
    QUOTE_COLUMNS,
    UNPACK_ERRORS,
    ReplayError,
    _read_columns,
    check_update_ids,
    count_beyond,
    folder_files,
    ns_in_range,
    open_data,
    parse_timestamp_ns,
    too_many_rows,
)
from engine.types import NS_PER_MS, NS_PER_SECOND, Quote

BARS = "bars"
QUOTES = "quotes"
DEFAULT_SYMBOL = "BTC/USDT"
# Bar volume: in the base currency (BTC of BTC/USDT) or the quote currency (USDT). ccxt's
# fetch_ohlcv is base by definition; a CSV is taken as quote unless told (the shipped 1-minute
# bars, and what the core has always read: displayed size = volume / close).
VOLUME_UNITS = ("base", "quote")
BASE_VOLUME_CSV = "csv bars (base_volume)"  # the header says the unit: cockpit data download
DEFAULT_VOLUME_UNIT = {
    "csv bars": "quote",
    BASE_VOLUME_CSV: "base",
    "ccxt json": "base",
    "arrays": "quote",
}


# ------------------------------------------------------------------ market data


class MarketData:
    """Recorded bars or quotes as columns: a ``ColumnSource`` (arrays in memory, a cache entry
    on disk read a range at a time), or plain lists for the row-by-row reader's output.

    Bars: ``ts`` is each bar's open time (ns) and ``cols`` is (open, high, low, close, volume),
    the volume in the quote currency whatever the file had (``volume_unit``: the file's unit,
    ``volume_unit_given``: told rather than the format's default).
    Quotes: ``ts`` is the receive time (ns) and ``cols`` is (bid, ask, bid_size, ask_size).

    A backtest reads the data ``chunk`` by ``chunk`` as plain Python lists (the core's loops
    are fastest on those), so a run holds one chunk's worth of Python numbers, and with data
    from the parsed-data cache one chunk of the file: memory does not grow with the data.
    ``ts`` and ``cols`` give the whole columns as lists (built once, then kept) for readers
    that want them; ``ts_array`` and ``col_arrays`` give whole numpy arrays.
    """

    def __init__(
        self,
        kind: str,
        fmt: str,
        path: str,
        ts: list[int] | np.ndarray[Any, Any] | None,
        cols: tuple[list[float], ...] | tuple[np.ndarray[Any, Any], ...] | None,
        symbol: str | None = None,
        timeframe_s: int | None = None,
        volume_unit: str | None = None,
        volume_unit_given: bool = False,
        *,
        source: ColumnSource | None = None,
    ) -> None:
        self.kind = kind
        self.fmt = fmt
        self.path = path
        self.symbol = symbol
        self.timeframe_s = timeframe_s  # bars: inferred from the timestamps
        self.volume_unit = volume_unit  # bars: "base" or "quote", as read from the file
        self.volume_unit_given = volume_unit_given
        self._ts_list: list[int] | None = None
        self._cols_list: tuple[list[float], ...] | None = None
        self.source: ColumnSource | None = source
        self._sorted: bool | None = None  # timestamps in order (``_ordered``)
        if source is None:
            assert ts is not None and cols is not None
            if isinstance(ts, np.ndarray):
                self.source = ArrayColumns(ts, tuple(np.asarray(c) for c in cols))
            else:
                self._ts_list = ts
                self._cols_list = tuple(cols)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ columns

    @property
    def ts(self) -> list[int]:
        """Every timestamp as a list of ints (built on first use, then kept)."""
        if self._ts_list is None:
            self._ts_list = self.ts_array.tolist()
        return self._ts_list

    @property
    def cols(self) -> tuple[list[float], ...]:
        """Every column as a list of floats (built on first use, then kept)."""
        if self._cols_list is None:
            self._cols_list = tuple(c.tolist() for c in self.col_arrays)
        return self._cols_list

    @property
    def ts_array(self) -> np.ndarray[Any, Any]:
        """The timestamps as one int64 array (the whole column: 8 bytes a row), gathered a
        chunk at a time from a source on disk (not every column at once)."""
        if isinstance(self.source, ArrayColumns):
            return self.source.ts
        if self.source is not None:
            parts = [ts for _start, ts, _cols in chunks(self.source)]
            return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        return np.asarray(self._ts_list, dtype=np.int64)

    @property
    def col_arrays(self) -> tuple[np.ndarray[Any, Any], ...]:
        """The columns as float64 arrays (whole)."""
        if self.source is not None:
            return all_rows(self.source)[1]
        assert self._cols_list is not None
        return tuple(np.asarray(c, dtype=np.float64) for c in self._cols_list)

    def chunk_arrays(
        self, start: int, stop: int
    ) -> tuple[np.ndarray[Any, Any], tuple[np.ndarray[Any, Any], ...]]:
        """Rows ``start`` to ``stop - 1`` as arrays: (ts, cols)."""
        if self.source is not None:
            return self.source.read(start, stop)
        assert self._ts_list is not None and self._cols_list is not None
        return np.asarray(self._ts_list[start:stop], dtype=np.int64), tuple(
            np.asarray(c[start:stop], dtype=np.float64) for c in self._cols_list
        )

    def chunk(self, start: int, stop: int) -> tuple[list[int], tuple[list[float], ...]]:
        """Rows ``start`` to ``stop - 1`` as plain lists: (ts, cols)."""
        if self._ts_list is not None and self._cols_list is not None:
            return self._ts_list[start:stop], tuple(c[start:stop] for c in self._cols_list)
        ts, cols = self.chunk_arrays(start, stop)
        return ts.tolist(), tuple(c.tolist() for c in cols)

    def compact(self) -> MarketData:
        """Keep the columns as arrays only (eight bytes a value): drop the lists."""
        if self.source is None:
            self.source = ArrayColumns(self.ts_array, self.col_arrays)
        self._ts_list = None
        self._cols_list = None
        return self

    def scale_volume_by_close(self) -> None:
        """Base volume x close: the quote volume the core divides back (bars only)."""
        if self.source is not None:
            self.source = VolumeTimesClose(self.source)
        if self._cols_list is not None:
            cl = self._cols_list
            cl[4][:] = [v * c for v, c in zip(cl[4], cl[3], strict=True)]

    # ------------------------------------------------------------------ shape

    def __len__(self) -> int:
        if self.source is not None:
            return self.source.rows
        assert self._ts_list is not None
        return len(self._ts_list)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MarketData):
            return NotImplemented
        return (
            self._meta() == other._meta()
            and self.ts_array.tobytes() == other.ts_array.tobytes()
            and [c.tobytes() for c in self.col_arrays] == [c.tobytes() for c in other.col_arrays]
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def _meta(self) -> tuple[Any, ...]:
        return (
            self.kind,
            self.fmt,
            self.path,
            self.symbol,
            self.timeframe_s,
            self.volume_unit,
            self.volume_unit_given,
        )

    def __repr__(self) -> str:
        return (
            f"MarketData({self.kind}, {self.fmt!r}, {self.path!r}, {len(self):,} rows, "
            f"symbol={self.symbol!r}, timeframe_s={self.timeframe_s})"
        )

    @property
    def first_ts(self) -> int | None:
        n = len(self)
        return int(self.chunk_arrays(0, 1)[0][0]) if n else None

    @property
    def last_ts(self) -> int | None:
        n = len(self)
        return int(self.chunk_arrays(n - 1, n)[0][0]) if n else None

    def infer_timeframe(self) -> int:
        """``infer_timeframe_s`` of the timestamps, read a chunk at a time."""
        return _timeframe_of(self.gap_counts())

    def gap_counts(self) -> dict[int, int]:
        """How often each positive gap (ns) between consecutive timestamps occurs, read a chunk
        at a time."""
        if self.source is None:
            return _gap_counts(self.ts_array)
        counts: dict[int, int] = {}
        prev: np.ndarray[Any, Any] | None = None
        for _start, ts, _cols in chunks(self.source):
            joined = ts if prev is None else np.concatenate((prev, ts))
            for v, k in _gap_counts(joined).items():
                counts[v] = counts.get(v, 0) + k
            prev = ts[-1:]
        return counts

    def check_bar_length(self, timeframe_s: int) -> None:
        """Refuse a bar length (``--timeframe``) the bars do not have. The engine does not
        resample: 1-minute bars taken as 5-minute ones would each close (and fill, and stamp
        their equity) four bars after the next one opened, and the Sharpe would be annualised
        per 5 minutes over samples a minute apart; shorter than the bars, every bar would be
        followed by a gap and the ratios annualised too high."""
        counts = self.gap_counts()
        if not counts:
            return  # one timestamp: nothing to infer, the given length is all there is
        try:
            inferred: int | None = _timeframe_of(counts)
        except EpochSecondsError:
            raise  # the bars' times are wrong, not their length: no --timeframe fits them
        except BacktestError:
            inferred = None  # bars a fraction of a second apart: no whole-second length
        if inferred is None:
            if timeframe_s * NS_PER_SECOND <= min(counts):
                return
            apart = f"as little as {min(counts) / NS_PER_SECOND:g} s apart"
        elif inferred == timeframe_s:
            return
        else:
            apart = f"{inferred} s apart"
        hint = f"leave it out or give {inferred}" if inferred is not None else "leave it out"
        raise BacktestError(
            f"--timeframe {timeframe_s}: the bars in {self.path} are {apart}; the engine does "
            f"not resample them, and as {timeframe_s} s bars their closes, fills and figures "
            f"would be stamped at the wrong times ({hint})"
        )

    def _with(self, source: ColumnSource) -> MarketData:
        return MarketData(
            self.kind,
            self.fmt,
            self.path,
            None,
            None,
            self.symbol,
            self.timeframe_s,
            self.volume_unit,
            self.volume_unit_given,
            source=source,
        )

    def _ordered(self, source: ColumnSource) -> bool:
        """Whether every timestamp is at or after the one before it (scanned once, then kept:
        a walk-forward cuts many windows from the same data)."""
        if self._sorted is None:
            prev_last: int | None = None
            self._sorted = True
            for _start, ts, _cols in chunks(source):
                if ts.size == 0:
                    continue
                if (prev_last is not None and int(ts[0]) < prev_last) or not bool(
                    np.all(ts[:-1] <= ts[1:])
                ):
                    self._sorted = False
                    break
                prev_last = int(ts[-1])
        return self._sorted

    def between(self, start_ns: int | None, end_ns: int | None) -> MarketData:
        """The rows with ``start <= ts < end`` (file order kept)."""
        if start_ns is None and end_ns is None:
            return self
        lo = -(1 << 63) if start_ns is None else max(start_ns, -(1 << 63))
        hi = (1 << 63) - 1 if end_ns is None else min(end_ns, (1 << 63) - 1)
        source = self.source if self.source is not None else self.compact().source
        assert source is not None
        # Sorted (the usual case): a window found a chunk at a time; else the rows picked out.
        # Sorted means the whole file: a backwards row after the window may still fall in it.
        ordered = self._ordered(source)
        first = last = None
        if ordered:
            for start, ts, _cols in chunks(source):
                if ts.size == 0:
                    continue
                if first is None and int(ts[-1]) >= lo:
                    first = start + int(np.searchsorted(ts, lo, side="left"))
                if int(ts[-1]) >= hi:
                    last = start + int(np.searchsorted(ts, hi, side="left"))
                    break
            a = source.rows if first is None else first
            b = source.rows if last is None else last
            return self._with(WindowColumns(source, a, max(a, b)))
        ts, cols = all_rows(source)
        keep = (ts >= lo) & (ts < hi)
        return self._with(ArrayColumns(ts[keep], tuple(c[keep] for c in cols)))

    @classmethod
    def from_bars(
        cls,
        ts_open_ns: Any,
        open_: Any,
        high: Any,
        low: Any,
        close: Any,
        volume: Any,
        *,
        symbol: str = DEFAULT_SYMBOL,
        timeframe_s: int | None = None,
        path: str = "<memory>",
    ) -> MarketData:
        """Bars from arrays or lists (e.g. numpy), kept as int64 and float64 arrays."""
        ts = np.array(ts_open_ns, dtype=np.int64)
        cols = tuple(np.array(c, dtype=np.float64) for c in (open_, high, low, close, volume))
        data = cls(BARS, "arrays", path, ts, cols, symbol, timeframe_s, "quote")
        if timeframe_s is None and len(ts) > 1:
            data.timeframe_s = infer_timeframe_s(ts)
        return data


def infer_timeframe_s(ts: Any) -> int:
    """The most common positive gap between timestamps, in whole seconds."""
    return _timeframe_of(_gap_counts(ts))


def _gap_counts(ts: Any) -> dict[int, int]:
    diffs = np.diff(np.asarray(ts, dtype=np.int64))
    values, counts = np.unique(diffs[diffs > 0], return_counts=True)
    return dict(zip(values.tolist(), counts.tolist(), strict=True))


class EpochSecondsError(BacktestError):
    """Bars whole milliseconds apart but not whole seconds: epoch seconds written where the
    format has epoch milliseconds (the one-line message says so and how to fix the file)."""


def _timeframe_of(gap_counts: dict[int, int]) -> int:
    """The most common gap (the smallest of equals), checked to be whole seconds."""
    if not gap_counts:
        raise BacktestError(
            "cannot infer the bar timeframe from fewer than two distinct timestamps; "
            "pass --timeframe SECONDS"
        )
    gap = min(gap_counts, key=lambda g: (-gap_counts[g], g))
    if gap % NS_PER_SECOND:
        if gap % NS_PER_MS == 0:
            # Whole milliseconds apart: epoch seconds read as the milliseconds the file's
            # timestamps are (60 s bars read as 0.06 s apart, in January 1970). No
            # --timeframe can cure that: the bars' times are wrong, not their length.
            raise EpochSecondsError(
                f"bars are {gap / NS_PER_SECOND:g} s apart as the file's epoch milliseconds: "
                f"were the timestamps written in epoch seconds ({gap // NS_PER_MS} s bars)? "
                "Write them as epoch milliseconds (seconds x 1000) or ISO-8601 times"
            )
        raise BacktestError(
            f"bars are {gap / NS_PER_SECOND:g} s apart; the engine needs whole seconds "
            "(pass --timeframe SECONDS)"
        )
    return gap // NS_PER_SECOND


def load_market_data(
    path: str | Path,
    *,
    timeframe_s: int | None = None,
    volume_unit: str | None = None,
    max_rows: int = MAX_ROWS,
    cache: MarketDataCache | None = None,
) -> MarketData:
    """Read bars (OHLCV CSV, ccxt JSON) or quotes (bookTicker CSV); the format from the file.

    Every format is streamed and refused with one line at data row ``max_rows + 1``, so memory
    stays bounded by the limit whatever the file's size: 48 bytes a bar once parsed (a
    well-formed CSV goes straight into arrays; the row-by-row reader for anything else holds
    ~300 bytes a row while it reads), and with ``cache`` the run reads the stored entry a
    chunk at a time, holding none of it. Bar volume is
    read in ``volume_unit`` (None: the format's default, see ``DEFAULT_VOLUME_UNIT``) and kept
    in the quote currency, the unit the core's displayed size (volume / close) expects.

    ``path`` may be a folder: its data files (``cockpit data download``'s monthly files) are
    read in name order as one series. With ``cache`` the parsed columns of each file are kept
    by content hash (``engine.marketdata.cache``) and a second load of the same bytes skips the
    parse; the result is the same either way.
    """
    if volume_unit is not None and volume_unit not in VOLUME_UNITS:
        raise BacktestError(
            f"volume unit must be one of {', '.join(VOLUME_UNITS)}, got {volume_unit!r}"
        )
    if max_rows < 1:
        raise BacktestError(f"--max-rows must be at least 1, got {max_rows}")
    p = Path(path)
    try:
        odd = p.exists() and not (p.is_file() or p.is_dir())
    except OSError as exc:  # a name too long for the file system, a folder it cannot enter
        raise ReplayError(f"{p}: cannot open ({exc.strerror or exc})") from None
    if odd:
        # A device or a pipe never ends, or ends once: the content hash of the parsed-data
        # cache read /dev/zero forever, and a FIFO's bytes would be gone before the parse.
        raise ReplayError(
            f"{p}: not a regular file (a device, pipe or socket); give a data file or a folder "
            "of them (compressed files are read as a stream)"
        )
    if is_recording(p):  # what a [record] engine wrote: its quotes, as the feed judged them
        data = _load_recording(p, max_rows).compact()
    elif p.is_dir():
        data = _load_folder(p, max_rows, cache)
    elif cache is not None:
        data = _load_cached(p, p, max_rows, cache)
    else:
        data = _parse_file(p, max_rows).compact()
    if not len(data):
        raise ReplayError(f"{p}: no data rows")
    if data.kind == BARS:
        native = DEFAULT_VOLUME_UNIT[data.fmt]
        if data.fmt == BASE_VOLUME_CSV and volume_unit == "quote":
            raise BacktestError(
                f"{p}: the file's volume column is base_volume (the base currency); "
                "leave out --volume-unit or pass --volume-unit base"
            )
        data.volume_unit = volume_unit or native
        data.volume_unit_given = volume_unit is not None
        if data.volume_unit == "base":  # base x close: the quote volume the core divides back
            data.scale_volume_by_close()
        if timeframe_s is None:
            timeframe_s = data.infer_timeframe()
        else:
            data.check_bar_length(timeframe_s)
        data.timeframe_s = timeframe_s
    else:
        if volume_unit is not None:
            raise BacktestError(
                "--volume-unit is for bar data; bookTicker quotes carry their sizes in the base "
                "currency"
            )
        data.timeframe_s = timeframe_s
    return data


def _parse_file(p: Path, max_rows: int) -> MarketData:
    """One file parsed by the reader its content calls for."""
    try:
        with open_data(p) as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise ReplayError(f"{p}: cannot open ({exc.strerror or exc})") from None
    body = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not body:
        raise ReplayError(f"{p}: empty file; expected OHLCV bars or bookTicker quotes")
    if p.suffix.lower() == ".json" or p.stem.lower().endswith(".json") or body[:1] in (b"[", b"{"):
        return _load_ccxt_json(p, max_rows)
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace").strip().lstrip("\ufeff")
    header = [h.strip() for h in first.split(",")]
    if "local_ts_ns" in header:
        return _load_quotes_csv(p, max_rows)
    if "timestamp" in header or set(header) & set(BAR_COLUMNS[1:]):
        return _load_bars_csv(p, header, max_rows)
    shown = first if len(first) <= 80 else first[:77] + "..."
    raise ReplayError(
        f"{p}: row 1: cannot tell the format from the header {shown!r}; expected "
        f"{','.join(BAR_COLUMNS)} (OHLCV bars), {','.join(QUOTE_COLUMNS)} "
        "(bookTicker quotes) or a ccxt fetch_ohlcv JSON array"
    )


def _to_arrays(data: MarketData) -> CachedColumns:
    return CachedColumns(data.kind, data.fmt, data.symbol, data.ts_array, data.col_arrays)


def _load_cached(p: Path, shown: Path, max_rows: int, cache: MarketDataCache) -> MarketData:
    """One file through the parsed-data cache: on a hit, the entry read from disk a chunk at
    a time; on a miss, parsed, stored, and then read from the new entry the same way (kept in
    memory only when the cache cannot be written)."""
    try:
        digest = cache.digest(p)
    except OSError as exc:
        raise ReplayError(f"{p}: cannot open ({exc.strerror or exc})") from None
    entry = cache.open_columns(digest)
    if entry is None:
        parsed = _parse_file(p, max_rows).compact()
        cache.put(digest, _to_arrays(parsed))
        entry = cache.open_columns(digest, count=False)
        if entry is None:  # a read-only or full cache: only speed and memory are lost
            return parsed
        del parsed
    if entry.rows > max_rows:
        raise ReplayError(too_many_rows(shown, max_rows, _TOO_MANY_HINT))
    return MarketData(entry.kind, entry.fmt, str(shown), None, None, entry.symbol, source=entry)


def _load_folder(folder: Path, max_rows: int, cache: MarketDataCache | None) -> MarketData:
    files = folder_files(folder)
    parts: list[MarketData] = []
    total = 0
    for f in files:
        if cache is not None:
            part = _load_cached(f, f, max_rows, cache)
        else:
            part = _parse_file(f, max_rows).compact()
        total += len(part)
        if total > max_rows:
            raise ReplayError(too_many_rows(folder, max_rows, _TOO_MANY_HINT))
        if parts:
            first = parts[0]
            if (part.kind, part.fmt) != (first.kind, first.fmt):
                raise ReplayError(
                    f"{f}: {part.fmt} in a folder of {first.fmt} ({files[0].name}); "
                    "a folder holds one series in one format"
                )
            if part.symbol and first.symbol and part.symbol != first.symbol:
                raise ReplayError(
                    f"{f}: symbol {part.symbol!r} differs from {first.symbol!r}; "
                    "a folder holds one symbol"
                )
        parts.append(part)
    head = parts[0]
    symbol = next((x.symbol for x in parts if x.symbol), None)
    sources = [x.source for x in parts if x.source is not None]
    assert len(sources) == len(parts)
    source = sources[0] if len(sources) == 1 else ConcatColumns(sources)
    return MarketData(head.kind, head.fmt, str(folder), None, None, symbol, source=source)


_TOO_MANY_HINT = "split the file by time, or raise the limit with --max-rows N"


def _load_bars_csv(p: Path, header: list[str], max_rows: int = MAX_ROWS) -> MarketData:
    with_symbol = "symbol" in header
    # ``cockpit data download`` names its volume column for its unit: base_volume.
    base_volume = BASE_VOLUME in header and "volume" not in header
    wanted: tuple[str, ...] = (*BAR_COLUMNS[:5], BASE_VOLUME) if base_volume else BAR_COLUMNS
    if with_symbol:
        wanted = (*wanted, "symbol")
    parsers: tuple[Callable[[str], Any], ...] = (
        parse_timestamp_ns,
        float,
        float,
        float,
        float,
        float,
    )
    if with_symbol:  # interned: a million rows of one symbol hold one string
        parsers = (*parsers, lambda text: sys.intern(text.strip()))
    fmt = BASE_VOLUME_CSV if base_volume else "csv bars"
    fast = read_bar_columns(p, wanted, with_symbol, max_rows)
    if fast is not None:  # the common, well-formed file: straight into arrays
        ts_ns, fast_cols, fast_symbol = fast
        return MarketData(BARS, fmt, str(p), ts_ns, fast_cols, fast_symbol)
    cols = _read_columns(p, wanted, parsers, max_rows, _TOO_MANY_HINT)
    symbol = None
    if with_symbol:
        names = cols.pop()
        symbol = names[0] if names else None
        for i, name in enumerate(names):
            if name != symbol:
                raise ReplayError(
                    f"{p}: row {i + 2}: symbol {name!r} differs from {symbol!r}; "
                    "a backtest file holds one symbol"
                )
    ts, *rest = cols
    return MarketData(BARS, fmt, str(p), ts, tuple(rest), symbol)


def _load_recording(p: Path, max_rows: int) -> MarketData:
    """The quotes of one symbol's recording, replayed through the feed's own validation (the
    chain is checked as it is read: a recording that does not verify is refused)."""
    replay = RecordingReplay(p)
    symbols = sorted(replay.instruments())
    if len(symbols) != 1:
        raise ReplayError(
            f"{p}: the recording holds {len(symbols)} symbols ({', '.join(symbols)}); pass one "
            "symbol's folder (DATA/record/VENUE/SYMBOL)"
        )
    ts: list[int] = []
    bid: list[float] = []
    ask: list[float] = []
    bid_qty: list[float] = []
    ask_qty: list[float] = []
    for ev in replay.events():
        if type(ev) is not Quote:
            continue
        if len(ts) >= max_rows:
            raise ReplayError(too_many_rows(p, max_rows, _TOO_MANY_HINT))
        ts.append(ev.ts_exchange)
        bid.append(ev.bid)
        ask.append(ev.ask)
        bid_qty.append(ev.bid_size)
        ask_qty.append(ev.ask_size)
    return MarketData(QUOTES, "recording", str(p), ts, (bid, ask, bid_qty, ask_qty), symbols[0])


def _ns_int(text: str) -> int:
    """A bookTicker receive time: integer epoch ns that fits int64."""
    return ns_in_range(int(text))


def _load_quotes_csv(p: Path, max_rows: int = MAX_ROWS) -> MarketData:
    parsers = (_ns_int, int, float, float, float, float)
    cols = _read_columns(p, QUOTE_COLUMNS, parsers, max_rows, _TOO_MANY_HINT)
    ts, update_ids, bid, bid_qty, ask, ask_qty = cols
    check_update_ids(p, update_ids)
    return MarketData(QUOTES, "bookTicker csv", str(p), ts, (bid, ask, bid_qty, ask_qty))


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(value)
    return float(value)


_JSON_CHUNK = 1 << 20  # characters read at a time
_JSON_MAX_VALUE = 1 << 20  # the longest single value (a row, the symbol) the reader holds
_JSON_SPACE = re.compile(r"[ \t\r\n]*")


class _JsonStream:
    """One JSON document read a value at a time from a text file, holding at most a couple of
    chunks: a ccxt OHLCV file of any size is parsed in bounded memory, row by row."""

    def __init__(self, path: Path, fh: Any) -> None:
        self.path = path
        self.fh = fh
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.lines = 0  # newlines in the text already dropped from the buffer
        self.decoder = json.JSONDecoder()

    def _more(self) -> bool:
        if self.eof:
            return False
        chunk = self.fh.read(_JSON_CHUNK)
        if not chunk:
            self.eof = True
            return False
        if self.pos > _JSON_CHUNK:  # drop what has been parsed
            self.lines += self.buf.count("\n", 0, self.pos)
            self.buf = self.buf[self.pos :]
            self.pos = 0
        self.buf += chunk
        return True

    def peek(self) -> str:
        """The next character that is not white space ('' at the end); not consumed."""
        while True:
            self.pos = _JSON_SPACE.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return ""

    def take(self, expected: str, what: str) -> str:
        """Consume one of the ``expected`` characters, else raise naming ``what`` was due."""
        c = self.peek()
        if not c or c not in expected:
            found = repr(c) if c else "the end of the file"
            raise self.error(self.pos, f"not valid JSON (expected {what}, found {found})")
        self.pos += 1
        return c

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if len(self.buf) - self.pos <= _JSON_MAX_VALUE and self._more():
                    continue
                if len(self.buf) - self.pos > _JSON_MAX_VALUE:
                    raise self.error(self.pos, "a single JSON value over 1 MiB") from None
                raise self.error(exc.pos, f"not valid JSON ({exc.msg})") from None
            except ValueError:  # an integer past Python's 4,300-digit conversion limit
                raise self.error(self.pos, "a number too long to be a price or a volume") from None
            if end == len(self.buf) and self._more():
                continue  # a number at the end of the buffer may go on in the next chunk
            self.pos = end
            return value

    def error(self, pos: int, what: str) -> ReplayError:
        line = self.lines + self.buf.count("\n", 0, pos) + 1
        column = pos - self.buf.rfind("\n", 0, pos)
        return ReplayError(f"{self.path}: line {line} column {column}: {what}")


def _load_ccxt_json(p: Path, max_rows: int = MAX_ROWS) -> MarketData:
    try:
        fh = open_data(p, "r", encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ReplayError(f"{p}: cannot open ({exc.strerror or exc})") from None
    # Each row is one JSON array: far more closing brackets than twice the limit is refused
    # before any row is parsed (the exact limit is kept while streaming).
    try:
        arrays = count_beyond(p, 2 * max_rows + 1, b"]")
    except OSError as exc:
        fh.close()
        raise ReplayError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if arrays is not None:
        fh.close()
        raise ReplayError(
            f"{p}: more than {2 * max_rows + 1:,} JSON arrays, far over the {max_rows:,} "
            f"data rows held in memory at once; {_TOO_MANY_HINT}"
        )
    ts: list[int] = []
    cols: tuple[list[float], ...] = ([], [], [], [], [])
    symbol = None
    with fh:
        js = _JsonStream(p, fh)
        try:
            first = js.peek()
            found = first == "["
            if found:
                _read_ohlcv_rows(js, ts, cols, max_rows)
            elif first == "{":
                js.pos += 1
                if js.peek() == "}":
                    js.pos += 1
                else:
                    keys: set[Any] = set()
                    while True:
                        at = js.pos
                        key = js.value()
                        if key in ("ohlcv", "symbol") and key in keys:
                            # Python's json keeps the last, this reader the first: neither is
                            # known to be the data, so the file is refused.
                            raise js.error(at, f'"{key}" appears twice in the object')
                        if isinstance(key, str):
                            keys.add(key)
                        js.take(":", "':'")
                        if key == "ohlcv" and js.peek() == "[" and not found:
                            _read_ohlcv_rows(js, ts, cols, max_rows)
                            found = True
                        else:
                            value = js.value()
                            if key == "symbol" and isinstance(value, str):
                                symbol = value
                        if js.take(",}", "',' or '}'") == "}":
                            break
            if not found:
                raise ReplayError(
                    f"{p}: expected a JSON array of [timestamp_ms, open, high, low, close, "
                    'volume] rows (ccxt fetch_ohlcv), or an object with an "ohlcv" array'
                )
            if js.peek():
                raise js.error(js.pos, "not valid JSON (extra data after the document)")
        except UnicodeDecodeError:
            raise ReplayError(f"{p}: not UTF-8 text") from None
        except RecursionError:
            raise ReplayError(
                f"{p}: line {js.lines + 1}: JSON nested too deeply; a ccxt OHLCV row is "
                "[timestamp_ms, open, high, low, close, volume]"
            ) from None
        except UNPACK_ERRORS as exc:
            raise ReplayError(f"{p}: cannot read ({exc})") from None
    return MarketData(BARS, "ccxt json", str(p), ts, cols, symbol)


def _read_ohlcv_rows(
    js: _JsonStream, ts: list[int], cols: tuple[list[float], ...], max_rows: int
) -> None:
    """The ``[[ms, open, high, low, close, volume], ...]`` array at the stream's position."""
    p = js.path
    names = ("timestamp", "open", "high", "low", "close", "volume")
    appenders = [c.append for c in cols]
    js.take("[", "'['")
    if js.peek() == "]":
        js.pos += 1
        return
    i = 0
    while True:
        row = js.value()
        i += 1
        if i > max_rows:
            raise ReplayError(too_many_rows(p, max_rows, _TOO_MANY_HINT))
        if not (isinstance(row, list) and len(row) == 6):
            shown = json.dumps(row)[:60]
            raise ReplayError(
                f"{p}: row {i}: expected [timestamp_ms, open, high, low, close, volume], "
                f"found {shown}"
            )
        t = row[0]
        if isinstance(t, bool) or not (
            isinstance(t, int) or (isinstance(t, float) and t.is_integer())
        ):
            raise ReplayError(f"{p}: row {i}: cannot parse timestamp {t!r} (epoch milliseconds)")
        try:
            ts.append(ns_in_range(int(t) * NS_PER_MS))
        except ValueError:
            raise ReplayError(
                f"{p}: row {i}: timestamp {t!r} is outside the years 1677-2262"
            ) from None
        for j in range(1, 6):
            value = row[j]
            if j == 5 and value is None:  # ccxt leaves volume undefined on some venues
                value = 0.0
            try:
                appenders[j - 1](_num(value))
            except ValueError:
                raise ReplayError(f"{p}: row {i}: cannot parse {names[j]} {value!r}") from None
        if js.take(",]", "',' or ']'") == "]":
            return
