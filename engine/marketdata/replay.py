"""Replay of recorded market data through the same interface as the simulated market.

A backtest is the live core fed by a replay feed, so these sources offer what the simulated
market offers (``instruments()``, ``history()``, ``events()``). They parse strictly and fail
early on text they cannot read (naming the file and row), but they pass every parsed value
through unchanged and in file order: deciding what is a bad price or a backwards timestamp
is the validator's job at the engine boundary, where it is counted and shown.

Row numbers in errors are 1-based file rows as a spreadsheet shows them: the header is row 1.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from itertools import islice, repeat
from pathlib import Path
from typing import IO, Any, cast

from engine.types import NS_PER_MS, NS_PER_SECOND, Bar, Instrument, Quote

BAR_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
QUOTE_COLUMNS = ("local_ts_ns", "update_id", "bid_price", "bid_qty", "ask_price", "ask_qty")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The most data rows a replay or a backtest reads from one file or folder (the row-by-row
# reader holds about 300 bytes of RSS a row as Python columns, so ~1.5 GB at the limit; the
# fast CSV reader 48): 9.5 years of 1-minute bars. A longer file is refused as soon as
# its row MAX_ROWS + 1 is read, not after the whole file is in memory (and one with more than
# twice as many lines before any row is parsed).
MAX_ROWS = 5_000_000


class ReplayError(ValueError):
    """A replay file that cannot be read; the message is one line naming file and row."""


# Epoch nanoseconds are held as int64 (numpy columns, the journal): years 1677 to 2262.
NS_MIN, NS_MAX = -(2**63), 2**63 - 1


def ns_in_range(ns: int) -> int:
    """``ns`` if it fits int64 epoch nanoseconds, else ValueError (the row is refused)."""
    if not NS_MIN <= ns <= NS_MAX:
        raise ValueError(f"{ns} ns is outside the years 1677-2262")
    return ns


def timestamp_unit_hint(column: str, text: str) -> str:
    """Why a whole-number timestamp was refused, when its unit is the likely cause: as epoch
    milliseconds, 14 digits or more lie past 2262 (microseconds or nanoseconds were written)."""
    digits = text.strip()
    if column != "timestamp" or not digits.isdigit() or len(digits) < 14:
        return ""
    return (
        " (as epoch milliseconds that is past the year 2262: epoch microseconds or "
        "nanoseconds? write epoch milliseconds or ISO-8601 times)"
    )


def parse_timestamp_ns(text: str) -> int:
    """Epoch ns from epoch milliseconds or an ISO-8601 time (naive means UTC); exact integers.
    ValueError for text that is neither, or a time outside int64 nanoseconds."""
    text = text.strip()
    if text.isdigit():
        return ns_in_range(int(text) * NS_PER_MS)
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return ns_in_range(
        (delta.days * 86_400 + delta.seconds) * NS_PER_SECOND + delta.microseconds * 1_000
    )


# Each opens a path for binary reading; all three can peek, which checks the header early.
_Unpacker = lzma.LZMAFile | gzip.GzipFile | bz2.BZ2File
_COMPRESSED: dict[str, Callable[[Path], _Unpacker]] = {
    ".xz": lzma.LZMAFile,
    ".gz": gzip.GzipFile,
    ".bz2": bz2.BZ2File,
}
# What a damaged compressed file raises while it is read (bz2 and gzip raise OSError kinds).
UNPACK_ERRORS = (lzma.LZMAError, zlib.error, EOFError, OSError)


def open_data(path: Path, mode: str = "rb", **kw: Any) -> IO[Any]:
    """Open a data file for reading, unpacking ``.xz``, ``.gz`` and ``.bz2`` on the fly
    (streamed, never whole), so recorded data can stay compressed on disk. ``mode`` is "rb" or
    "r" (text, with ``encoding``/``newline`` in ``kw``). Raises OSError, also for a file whose
    compressed header is damaged."""
    opener = _COMPRESSED.get(path.suffix.lower())
    if opener is None:
        return path.open(mode, **kw)
    raw = opener(path)
    try:
        raw.peek(1)  # a damaged or truncated header fails here, as an OSError
    except UNPACK_ERRORS as exc:
        raw.close()
        raise OSError(f"not a valid {path.suffix} file ({exc})") from None
    # GzipFile is a binary file object like the other two; typeshed does not declare it IO[bytes].
    binary = cast(IO[bytes], raw)
    return binary if "b" in mode else io.TextIOWrapper(binary, **kw)


def _read_columns(
    path: Path,
    wanted: tuple[str, ...],
    parsers: tuple[Callable[[str], Any], ...],
    max_rows: int = MAX_ROWS,
    too_many_hint: str = "split the file by time",
) -> list[list[Any]]:
    """Parse the wanted columns of a CSV into per-column lists, or raise ReplayError.

    Streams the file row by row and stops at data row ``max_rows + 1``: memory stays bounded
    by the limit, whatever the file's size. A file with more than twice as many lines is
    refused before any row is parsed (a byte count: a 1 GB file is refused in a second)."""
    try:
        fh = open_data(path, "r", newline="", encoding="utf-8")
        lines = count_beyond(path, 2 * max_rows + 1)
    except OSError as exc:
        raise ReplayError(f"{path}: cannot open ({exc.strerror or exc})") from None
    if lines is not None:
        fh.close()
        raise ReplayError(
            f"{path}: more than {2 * max_rows + 1:,} lines, far over the {max_rows:,} data "
            f"rows held in memory at once; {too_many_hint}"
        )
    with fh:
        reader = csv.reader(fh)
        header = _checked_header(path, reader, wanted)
        idx = [header.index(c) for c in wanted]
        width = len(header)
        columns: list[list[Any]] = [[] for _ in wanted]
        appenders = [col.append for col in columns]
        plan = list(zip(idx, parsers, appenders, wanted, strict=True))
        row_no = 1
        rows_left = max_rows
        try:
            for row_no, row in enumerate(reader, start=2):
                if len(row) != width:
                    if not row:
                        continue  # a blank line carries no data (often a trailing newline)
                    raise ReplayError(
                        f"{path}: row {row_no}: expected {width} fields, found {len(row)}"
                    )
                if not rows_left:
                    raise ReplayError(too_many_rows(path, max_rows, too_many_hint))
                rows_left -= 1
                for i, parse, append, name in plan:
                    try:
                        append(parse(row[i]))
                    except ValueError:
                        raise ReplayError(
                            f"{path}: row {row_no}: cannot parse {name} {row[i]!r}"
                            + timestamp_unit_hint(name, row[i])
                        ) from None
        except (csv.Error, UnicodeDecodeError, *UNPACK_ERRORS) as exc:
            raise ReplayError(f"{path}: row {row_no + 1}: unreadable ({exc})") from None
    return columns


def count_beyond(path: Path, limit: int, needle: bytes = b"\n") -> int | None:
    """How often ``needle`` occurs in the file once that passes ``limit`` (None if it never
    does): a byte count in chunks that stops early, so it costs a chunk of memory and a
    fraction of a second per GB whatever the file's size. Raises OSError."""
    seen = 0
    with open_data(path) as fh:
        try:
            while chunk := fh.read(1 << 20):
                seen += chunk.count(needle)
                if seen > limit:
                    return seen
        except UNPACK_ERRORS as exc:  # a damaged compressed body
            raise OSError(f"not a valid {path.suffix} file ({exc})") from None
    return None


def check_update_ids(path: Path, update_ids: list[int]) -> None:
    """Refuse a bookTicker file whose ``update_id`` does not go up from row to row: a row
    duplicated or moved (a capture that replayed after a reconnect, files joined twice). Each
    quote is a fresh book to the fill model, so a duplicated row would offer its size twice;
    the live feed refuses such a replay (``replayed_payload``), and so does the file."""
    prev = None
    for i, uid in enumerate(update_ids):
        if prev is not None and uid <= prev:
            raise ReplayError(
                f"{path}: row {i + 2}: update_id {uid} does not follow {prev} (a duplicated or "
                "reordered row); bookTicker update ids only go up: remove the row"
            )
        prev = uid


def too_many_rows(path: Path, max_rows: int, hint: str) -> str:
    """The one-line refusal of a file longer than the row limit."""
    return f"{path}: more than {max_rows:,} data rows, the most held in memory at once; {hint}"


class _ReplaySource:
    """What both replay sources share: the instrument grid and an empty warm-up history."""

    def __init__(
        self,
        path: str | Path,
        symbol: str,
        venue: str,
        tick_size: float,
        lot_size: float,
        min_notional: float,
    ) -> None:
        self.path = Path(path)
        self.symbol = symbol
        self.venue = venue
        self.tick_size = tick_size
        self.lot_size = lot_size
        self.min_notional = min_notional

    def instruments(self) -> dict[str, Instrument]:
        """The one replayed symbol's grid, from the constructor arguments."""
        return {
            self.symbol: Instrument(
                symbol=self.symbol,
                venue=self.venue,
                tick_size=self.tick_size,
                lot_size=self.lot_size,
                min_notional=self.min_notional,
            )
        }

    def history(self) -> list[Bar]:
        """No warm-up: the recording itself is the whole history."""
        return []


# A folder holds data files (downloaded months, or any files of one series), read in name
# order; left out: the download manifest, hidden and temporary files.
_DATA_SUFFIXES = tuple(d + z for d in (".csv", ".json") for z in ("", ".gz", ".xz", ".bz2"))


def folder_files(folder: Path) -> list[Path]:
    """The data files of a folder in name order (``YYYY-MM`` month files sort by time)."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise ReplayError(f"{folder}: cannot list ({exc.strerror or exc})") from None
    files = [
        f
        for f in entries
        if f.is_file()
        and not f.name.startswith(".")
        and f.name != "manifest.json"
        and f.name.lower().endswith(_DATA_SUFFIXES)
    ]
    if not files:
        raise ReplayError(
            f"{folder}: no data files (.csv, .json, optionally .gz/.xz/.bz2) in the folder"
        )
    return files


def _checked_header(path: Path, reader: Any, wanted: tuple[str, ...]) -> list[str]:
    """The header row, or ReplayError naming why it cannot be the ``wanted`` columns'."""
    try:
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError, *UNPACK_ERRORS) as exc:
        raise ReplayError(f"{path}: row 1: unreadable header ({exc})") from None
    if header is None:
        raise ReplayError(f"{path}: empty file; expected a header row {','.join(wanted)}")
    header = [h.strip().lstrip("\ufeff") for h in header]
    missing = [c for c in wanted if c not in header]
    if missing:
        shown = ",".join(header)
        shown = shown if len(shown) <= 120 else shown[:117] + "..."
        raise ReplayError(
            f"{path}: row 1: missing column(s) {', '.join(missing)}; "
            f"expected {','.join(wanted)}, found {shown}"
        )
    doubled = [c for c in wanted if header.count(c) > 1]
    if doubled:  # which of the two holds the prices is anybody's guess: refuse, never pick
        raise ReplayError(
            f"{path}: row 1: column(s) {', '.join(doubled)} appear more than once in the "
            "header; keep one of each"
        )
    return header


def check_replay_header(path: str | Path, kind: str) -> None:
    """What ``config check`` can tell of a replay file without parsing it: it opens, its
    header names the columns ``kind`` needs and a row follows it (a header alone started an
    engine that replayed nothing and exited 0). The rows are parsed when the engine starts."""
    p = Path(path)
    if kind == "quotes":
        wanted = QUOTE_COLUMNS
    else:
        wanted = (*BAR_COLUMNS[:5], BASE_VOLUME) if BASE_VOLUME in csv_header(p) else BAR_COLUMNS
    try:
        with open_data(p, "r", newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            _checked_header(p, reader, wanted)
            try:
                has_row = any(row for row in islice(reader, 1000))
            except (csv.Error, UnicodeDecodeError, *UNPACK_ERRORS):
                has_row = True  # a bad row is the parser's to name, with its row number
            if not has_row:
                raise ReplayError(
                    f"{p}: a header and no rows: nothing to replay; point path at a file "
                    "holding data"
                )
    except OSError as exc:
        raise ReplayError(f"{p}: cannot open ({exc.strerror or exc})") from None


def csv_header(path: Path) -> list[str]:
    """The first line of a (possibly compressed) CSV, split on commas; [] if unreadable."""
    try:
        with open_data(path) as fh:
            first = fh.readline(4096)
    except (OSError, *UNPACK_ERRORS):
        return []
    return [h.strip().lstrip("\ufeff") for h in first.decode("utf-8", "replace").split(",")]


# ``cockpit data download`` writes its volume in the base currency under this name.
BASE_VOLUME = "base_volume"


def read_bar_columns(path: Path, max_rows: int = MAX_ROWS) -> list[list[Any]]:
    """[ts_ns, open, high, low, close, volume in the quote currency] of a bar CSV: ``volume``
    is taken as quote volume, ``base_volume`` (a downloaded file) is multiplied by the close."""
    parsers = (parse_timestamp_ns, float, float, float, float, float)
    header = csv_header(path)
    if BASE_VOLUME in header and "volume" not in header:
        cols = _read_columns(path, (*BAR_COLUMNS[:5], BASE_VOLUME), parsers, max_rows)
        cols[5] = [v * c for v, c in zip(cols[5], cols[4], strict=True)]
        return cols
    return _read_columns(path, BAR_COLUMNS, parsers, max_rows)


class BarReplay(_ReplaySource):
    """OHLCV bars from ``timestamp,open,high,low,close,volume`` (timestamp = open time; volume
    in the quote currency) or ``...,close,base_volume`` (``cockpit data download``'s month files:
    base volume, multiplied by the close), from a file or a folder of them (name order).

    The data is parsed when the object is built, so a bad file fails at start-up. Each bar's
    event time is its ``ts_close``.
    """

    def __init__(
        self,
        path: str | Path,
        symbol: str,
        timeframe_s: int = 60,
        venue: str = "replay",
        tick_size: float = 0.01,
        lot_size: float = 0.00001,
        min_notional: float = 5.0,
    ) -> None:
        super().__init__(path, symbol, venue, tick_size, lot_size, min_notional)
        self.timeframe_s = timeframe_s
        if self.path.is_dir():
            self._cols: list[list[Any]] = [[] for _ in BAR_COLUMNS]
            for f in folder_files(self.path):
                for whole, part in zip(self._cols, read_bar_columns(f), strict=True):
                    whole.extend(part)
                if len(self._cols[0]) > MAX_ROWS:
                    raise ReplayError(too_many_rows(self.path, MAX_ROWS, "use a shorter range"))
        else:
            self._cols = read_bar_columns(self.path)

    def __len__(self) -> int:
        return len(self._cols[0])

    def events(self) -> Iterator[Bar]:
        """The bars in file order (the recording's time order)."""
        ts, o, h, lo, c, v = self._cols
        n = len(ts)
        return map(
            Bar,
            repeat(self.symbol, n),
            ts,
            repeat(self.timeframe_s, n),
            o,
            h,
            lo,
            c,
            v,
            repeat(self.venue, n),
        )


class QuoteReplay(_ReplaySource):
    """L1 quotes from a Binance bookTicker CSV; its receive time is the only time it has.

    ``ts_exchange`` and ``ts_recv`` are both ``local_ts_ns``. ``update_id`` is checked to be an
    integer and kept in ``update_ids`` (it is how a gap would be spotted).
    """

    def __init__(
        self,
        path: str | Path,
        symbol: str,
        venue: str = "replay",
        tick_size: float = 0.01,
        lot_size: float = 0.00001,
        min_notional: float = 5.0,
    ) -> None:
        super().__init__(path, symbol, venue, tick_size, lot_size, min_notional)
        cols = _read_columns(self.path, QUOTE_COLUMNS, (int, int, float, float, float, float))
        self._ts, self.update_ids, *self._px = cols
        check_update_ids(self.path, self.update_ids)

    def __len__(self) -> int:
        return len(self._ts)

    def events(self) -> Iterator[Quote]:
        """The quotes in file order (the recording's time order)."""
        bid, bid_qty, ask, ask_qty = self._px
        n = len(self._ts)
        return map(
            Quote,
            repeat(self.symbol, n),
            bid,
            ask,
            bid_qty,
            ask_qty,
            self._ts,
            self._ts,
            repeat(self.venue, n),
        )
