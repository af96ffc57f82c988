"""The fast read of a well-formed OHLCV CSV: pandas' C parser straight into numpy columns.

A million-row bar file takes ~3 s through the row-by-row reader (``replay._read_columns``),
which names the row and field of anything it cannot read; this reads the common case (epoch
milliseconds or ISO-8601 of one fixed width, see ``_ISO_PATTERNS``, in the first column, one
plain number in every other field, the header's width on every line) in a fraction of that.
It gives up, returning None, on anything else: other ISO-8601 spellings, a time int64
nanoseconds cannot hold, signed or fractional timestamps, quotes, blank lines, a row of
another width, an empty or unparsable field, a NaN, a second symbol, too many rows, bytes that
are not UTF-8. The caller then reads the file row by row, which yields the same columns or the
exact one-line error, so the two readers never disagree on a file: pandas parses every float
it accepts to the nearest double, as Python's ``float`` does (tests/test_fast_csv.py holds
them to it).
"""

from __future__ import annotations

import csv
import io
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from engine.marketdata.replay import UNPACK_ERRORS, open_data
from engine.types import NS_PER_MS

# Bytes scanned at a time: about 128 per row of the limit, between 64 KiB and 1 MiB, so the
# scan of a file over a small limit holds memory for the limit, not for the file.
_BLOCK_MIN, _BLOCK_MAX, _BLOCK_PER_ROW = 1 << 16, 1 << 20, 128
_MAX_TS_DIGITS = 19
_MAX_MS = (2**63 - 1) // NS_PER_MS  # a larger ms count overflows int64 ns
PARSE_CHUNK_ROWS = 1 << 18  # rows pandas parses at a time (the scan's verdict is asked between)
_COMPRESSION = {".gz": "gzip", ".xz": "xz", ".bz2": "bz2"}

Columns = tuple[np.ndarray[Any, Any], tuple[np.ndarray[Any, Any], ...], str | None]


def read_bar_columns(
    path: Path, wanted: tuple[str, ...], with_symbol: bool, max_rows: int
) -> Columns | None:
    """(ts ns int64, float64 columns in ``wanted`` order after the timestamp, the symbol if
    ``with_symbol`` (then ``wanted`` ends with "symbol", the reader's column order)) of a
    well-formed file whose ``wanted[0]`` (the timestamp) is its first column; None when the
    file is anything but that, for the row-by-row reader to read or to refuse."""
    try:
        header = _header(path)
        if header is None or not header or header[0] != wanted[0]:
            return None
        if any(header.count(name) != 1 for name in wanted):
            return None  # missing or doubled: the row reader refuses it in one line
        numbers = frozenset(header.index(name) for name in wanted[1:] if name != "symbol")
        shape = _first_shape(path)
        if shape is None:  # empty, or a first timestamp of no shape read here: the reader says
            return None
        # The scan and the parse read the file side by side (numpy and pandas' tokenizer let go
        # of the GIL for most of their work: a million rows in the time of the longer one, not
        # the two added up); the parse counts only once the scan has vouched for every line.
        stop = threading.Event()
        with ThreadPoolExecutor(1, thread_name_prefix="csv-scan") as pool:
            scan = pool.submit(_plain_rows, path, len(header), max_rows, numbers, stop)
            parsed = None
            try:
                parsed = _parse(
                    path, header, wanted, with_symbol, shape[0], max_rows, lambda: _said_no(scan)
                )
            except Exception:
                pass  # pandas met what the scan would refuse (a 20-digit stamp, a ragged row)
            finally:
                if parsed is None:  # the row reader decides: the scan's answer no longer
                    stop.set()  # matters, it ends at its next block (the pool waits for it)
            plain = scan.result()
        if plain is None or not plain[0] or plain[1] != shape[0]:  # odd, over the limit, empty
            return None
        if parsed is None or len(parsed[0]) != plain[0]:
            return None
        return parsed
    except (OSError, ValueError, UnicodeDecodeError, *UNPACK_ERRORS):
        return None


def _header(path: Path) -> list[str] | None:
    """The header's names as the row-by-row reader strips them; None if the line is quoted."""
    with open_data(path, "r", newline="", encoding="utf-8") as fh:
        line = fh.readline()
    if '"' in line or not line.endswith("\n"):
        return None
    row = next(csv.reader(io.StringIO(line)), None)
    return None if row is None else [h.strip().lstrip("\ufeff") for h in row]


# The timestamp spellings read here: epoch milliseconds (1 to 19 digits), or ISO-8601 of one
# fixed width (a space or a T between date and time, whole seconds or six decimals, no zone:
# UTC), which ``datetime.fromisoformat`` and pandas read to the same nanosecond. A pattern's
# "9" is any digit, its "5" a digit 0 to 5 (pandas' ``%S`` takes a leap second 60 or 61 and
# rolls it into the next minute, where ``fromisoformat`` refuses it); another character must
# be itself.
_ISO_PATTERNS = {
    b"9999-99-99 99:59:59": "%Y-%m-%d %H:%M:%S",
    b"9999-99-99T99:59:59": "%Y-%m-%dT%H:%M:%S",
    b"9999-99-99 99:59:59.999999": "%Y-%m-%d %H:%M:%S.%f",
    b"9999-99-99T99:59:59.999999": "%Y-%m-%dT%H:%M:%S.%f",
}
_DIGIT_MAX = {ord("9"): ord("9"), ord("5"): ord("5")}  # pattern character: the highest digit
EPOCH_MS = "ms"
# ISO times are parsed to whole microseconds; these fit int64 nanoseconds (years 1677-2262).
_MIN_US, _MAX_US = -((2**63) // 1000), (2**63 - 1) // 1000


def _shape(field: bytes) -> tuple[str, bytes] | None:
    """(pandas format or EPOCH_MS, pattern) of one first field; None if neither."""
    if 1 <= len(field) <= _MAX_TS_DIGITS and field.isdigit():
        return EPOCH_MS, b""
    for pattern, fmt in _ISO_PATTERNS.items():
        if len(field) == len(pattern) and all(
            (48 <= c <= _DIGIT_MAX[p]) if p in _DIGIT_MAX else c == p
            for c, p in zip(field, pattern, strict=True)
        ):
            return fmt, pattern
    return None


def _said_no(scan: Future[tuple[int, str] | None]) -> bool:
    """The scan has finished and refused the file (or failed reading it)."""
    return scan.done() and (scan.exception() is not None or scan.result() is None)


def _first_shape(path: Path) -> tuple[str, bytes] | None:
    """The shape (see ``_shape``) of the first data row's timestamp; None if there is none."""
    with open_data(path) as fh:
        fh.readline()
        line = fh.readline(_BLOCK_MIN)
    return _shape(line.split(b",", 1)[0]) if line else None


def _plain_rows(
    path: Path,
    width: int,
    max_rows: int,
    numbers: frozenset[int],
    stop: threading.Event | None = None,
) -> tuple[int, str] | None:
    """(data rows, timestamp format) when every line after the header has ``width`` fields,
    no quote and a first field of the first row's shape (see ``_shape``); None otherwise, or
    as soon as there are more than ``max_rows`` (a huge file is not read to its end), or once
    ``stop`` is set (the parse beside it failed: the answer no longer matters)."""
    rows = 0
    size = min(_BLOCK_MAX, max(_BLOCK_MIN, max_rows * _BLOCK_PER_ROW))
    shape: tuple[str, bytes] | None = None
    with open_data(path) as fh:
        fh.readline()
        rest = b""
        while True:
            block = fh.read(size)
            if not block:
                break
            if stop is not None and stop.is_set():
                return None
            data = rest + block
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            if shape is None:
                shape = _shape(data.split(b",", 1)[0])
                if shape is None:
                    return None
            lines = _plain_lines(data[: cut + 1], width, shape[1], numbers)
            if lines is None:
                return None
            rows += lines
            if rows > max_rows:
                return None
            rest = data[cut + 1 :]
    if rest:  # a last line without a newline
        if shape is None:
            shape = _shape(rest.split(b",", 1)[0])
            if shape is None:
                return None
        lines = _plain_lines(rest + b"\n", width, shape[1], numbers)
        if lines is None:
            return None
        rows += lines
    return (rows, shape[0]) if shape is not None else None


# Bytes of "true"/"false" in any case that no number Python's ``float`` reads has: pandas reads
# a column made only of those words as 1.0 and 0.0, where the row reader refuses them.
_BOOLEAN_LETTERS = (b"r", b"R", b"l", b"L")
_BOOLEAN_BYTES = np.frombuffer(b"".join(_BOOLEAN_LETTERS), dtype=np.uint8)


def _plain_lines(body: bytes, width: int, pattern: bytes, numbers: frozenset[int]) -> int | None:
    """Lines in ``body`` (it ends with a newline) if each is plain (see ``_plain_rows``):
    the first field all digits (``pattern`` empty) or matching ``pattern``, and no byte of
    ``_BOOLEAN_BYTES`` in a field of the ``numbers`` columns (0-based)."""
    if b'"' in body:
        return None
    buf = np.frombuffer(body, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    commas = np.flatnonzero(buf == 44)
    first = np.searchsorted(commas, starts)
    per_line = np.searchsorted(commas, ends) - first
    if not bool(np.all(per_line == width - 1)):  # also catches a blank line (no comma)
        return None
    length = commas[first] - starts
    last = len(buf) - 1
    if any(letter in body for letter in _BOOLEAN_LETTERS):  # (memchr: a numeric file is quick)
        # A symbol or another text column may have them: whose field is it?
        letters = np.flatnonzero(np.isin(buf, _BOOLEAN_BYTES))
        line = np.searchsorted(ends, letters)
        field = np.searchsorted(commas, letters) - first[line]
        if any(int(f) in numbers for f in np.unique(field).tolist()):
            return None
    if pattern:
        if not bool(np.all(length == len(pattern))):
            return None
        for d, want in enumerate(pattern):
            chars = buf[np.minimum(starts + d, last)]
            top = _DIGIT_MAX.get(want)
            ok = (chars >= 48) & (chars <= top) if top is not None else chars == want
            if not bool(np.all(ok)):
                return None
        return len(ends)
    if int(length.min()) < 1 or int(length.max()) > _MAX_TS_DIGITS:
        return None
    for d in range(_MAX_TS_DIGITS):  # the d-th character of each first field is a digit
        chars = buf[np.minimum(starts + d, last)]
        if not bool(np.all(((chars >= 48) & (chars <= 57)) | (length <= d))):
            return None
    return len(ends)


def _parse(
    path: Path,
    header: list[str],
    wanted: tuple[str, ...],
    with_symbol: bool,
    ts_fmt: str,
    max_rows: int,
    refused: Callable[[], bool] = lambda: False,
) -> Columns | None:
    """The columns as pandas reads them, at most ``max_rows`` + 1 rows (the caller compares
    the count with the scan's), a chunk at a time: None as soon as ``refused()`` says the scan
    beside it refused the file (a huge file the scan turns down at its first block is not
    parsed to its end)."""
    import pandas as pd

    idx = [header.index(name) for name in wanted if name != "symbol"]
    dtypes: dict[int, Any] = {idx[0]: "int64" if ts_fmt == EPOCH_MS else object}
    dtypes.update({i: "float64" for i in idx[1:]})
    use = list(idx)
    sym_at = header.index("symbol") if with_symbol else -1
    if with_symbol:
        dtypes[sym_at] = object
        use.append(sym_at)
    stamps: list[np.ndarray[Any, Any]] = []
    columns: list[list[np.ndarray[Any, Any]]] = [[] for _ in idx[1:]]
    symbols: set[str] = set()
    with pd.read_csv(
        path,
        header=None,
        skiprows=1,
        names=list(range(len(header))),
        usecols=use,
        index_col=False,
        dtype=dtypes,
        engine="c",
        encoding="utf-8",
        compression=_COMPRESSION.get(path.suffix.lower()),
        skip_blank_lines=False,
        nrows=max_rows + 1,
        chunksize=PARSE_CHUNK_ROWS,
    ) as reader:
        for frame in reader:
            if refused():
                return None
            ts = _stamps_ns(frame[idx[0]], ts_fmt)
            if ts is None:
                return None
            stamps.append(ts)
            for i, out in zip(idx[1:], columns, strict=True):
                col = frame[i].to_numpy(dtype=np.float64)
                if bool(np.isnan(col).any()):  # an empty field, "NA" or "nan"
                    return None
                out.append(col)
            if with_symbol:
                names = frame[sym_at]
                if bool(names.isna().any()):
                    return None
                symbols.update(str(n).strip() for n in names.unique())
                if len(symbols) > 1:
                    return None
    if not stamps:
        return None
    cols = tuple(np.concatenate(parts) for parts in columns)
    symbol = sys.intern(symbols.pop()) if with_symbol else None
    return np.concatenate(stamps), cols, symbol


def _stamps_ns(values: Any, ts_fmt: str) -> np.ndarray[Any, Any] | None:
    """One chunk's timestamps in int64 ns; None for one int64 ns cannot hold."""
    if ts_fmt == EPOCH_MS:
        ms = values.to_numpy(dtype=np.int64)
        if int(ms.max()) > _MAX_MS:
            return None
        return ms * NS_PER_MS
    import pandas as pd

    # Exact format, naive: UTC; an impossible date raises. In microseconds, which hold every
    # year pandas reads (pandas 3 parses to "us", and a cast of a later year to "ns" wraps
    # around silently): what int64 ns cannot hold is the row reader's to refuse, naming the row.
    stamps = pd.to_datetime(values, format=ts_fmt, exact=True)
    us = stamps.to_numpy(dtype="datetime64[us]").view(np.int64)
    if int(us.min()) < _MIN_US or int(us.max()) > _MAX_US:
        return None
    return us * 1000
