"""Downloaded market data on disk: one folder per exchange, symbol and timeframe, monthly files.

The layout, under the data folder (``DATA``, the engine's ``data_dir`` or ``--data-dir``)::

    DATA/market/EXCHANGE/SYMBOL_SAFE/TIMEFRAME/YYYY-MM.csv.gz   one UTC month of bars each
    DATA/market/EXCHANGE/SYMBOL_SAFE/TIMEFRAME/manifest.json    what was asked and what came

``SYMBOL_SAFE`` is the ccxt symbol with ``/`` as ``-`` and ``:`` as ``_`` (``BTC/USDT`` ->
``BTC-USDT``, ``BTC/USDT:USDT`` -> ``BTC-USDT_USDT``). A month file is a gzip CSV with the header
``timestamp,open,high,low,close,base_volume,symbol``: the bar's open time in epoch milliseconds
(UTC), the prices as the venue gave them, the volume in the base currency (BTC of BTC/USDT, as
ccxt's ``fetch_ohlcv`` defines it; the column name says so, so a copied file keeps its meaning)
and the ccxt symbol. Rows are in time order, one per bar, no duplicates; only closed bars are
written. ``cockpit backtest --data`` reads a month file or the whole folder.

``manifest.json`` records the ranges the venue was asked for and answered (``covered``, epoch
ms, half-open) and, per month file, its rows, first and last bar, size, SHA-256 and the runs of
consecutive bars it holds (a file whose bytes are no longer those is fetched again); the
gaps (``covered`` minus the bars: the venue returned no bars there) follow from those. A
month file is replaced atomically (written beside it, fsynced, renamed) and the
manifest after it, so a crash or kill -9 at any point leaves every file whole and the manifest
never claims a range whose bars are not on disk: a later run asks for it again.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.datadir import write_durably
from engine.marketdata.replay import BASE_VOLUME

MARKET_DIR = "market"
MANIFEST = "manifest.json"
LOCK = ".lock"
MONTH_SUFFIX = ".csv.gz"
HEADER = ("timestamp", "open", "high", "low", "close", BASE_VOLUME, "symbol")
LAYOUT_VERSION = 1

Interval = tuple[int, int]  # [start_ms, end_ms)


class StoreError(Exception):
    """The folder cannot be used as asked (another download holds it, an alien manifest)."""


class SeriesBusy(StoreError):
    """Another process is downloading into the same series folder."""


# ------------------------------------------------------------------ intervals


def merge_intervals(items: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-overlapping, with touching intervals joined; empty ones dropped."""
    out: list[Interval] = []
    for a, b in sorted(i for i in items if i[1] > i[0]):
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def subtract_intervals(base: Iterable[Interval], minus: Iterable[Interval]) -> list[Interval]:
    """``base`` with every part covered by ``minus`` removed (both taken as sets of points)."""
    cut = merge_intervals(minus)
    out: list[Interval] = []
    for a, b in merge_intervals(base):
        cur = a
        for c, d in cut:
            if d <= cur:
                continue
            if c >= b:
                break
            if c > cur:
                out.append((cur, c))
            cur = max(cur, d)
            if cur >= b:
                break
        if cur < b:
            out.append((cur, b))
    return out


def runs_of(ts: list[int], tf_ms: int) -> list[Interval]:
    """The runs of consecutive bars in sorted open times, as [first, last + tf) intervals."""
    out: list[Interval] = []
    for t in ts:
        if out and t <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], t + tf_ms))
        else:
            out.append((t, t + tf_ms))
    return out


# ------------------------------------------------------------------ names and times


def symbol_safe(symbol: str) -> str:
    """The folder name of a ccxt symbol: ``BTC/USDT`` -> ``BTC-USDT``."""
    safe = symbol.replace("/", "-").replace(":", "_")
    if not safe or safe in (".", "..") or not re.fullmatch(r"[A-Za-z0-9._\-]+", safe):
        raise StoreError(f"symbol {symbol!r} cannot be a folder name")
    return safe


def month_of(ts_ms: int) -> str:
    """``YYYY-MM`` of a UTC time in epoch milliseconds."""
    d = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return f"{d.year:04d}-{d.month:02d}"


def month_bounds(month: str) -> Interval:
    """[first ms of the month, first ms of the next) for ``YYYY-MM``."""
    year, mon = int(month[:4]), int(month[5:7])
    start = datetime(year, mon, 1, tzinfo=UTC)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def iso_ms(ts_ms: int) -> str:
    """A UTC time in epoch ms as ``2024-01-01T00:00Z`` (seconds shown only when not zero)."""
    d = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%SZ" if d.second else "%Y-%m-%dT%H:%MZ")


# ------------------------------------------------------------------ month files


def format_rows(rows: Iterable[list[Any]], symbol: str) -> bytes:
    """The gzip CSV bytes of a month file (deterministic: gzip mtime 0)."""
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(HEADER)
    for t, o, h, lo, c, v in rows:
        w.writerow(
            (
                int(t),
                repr(float(o)),
                repr(float(h)),
                repr(float(lo)),
                repr(float(c)),
                repr(float(v)),
                symbol,
            )
        )
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=6) as gz:
        gz.write(text.getvalue().encode("ascii"))
    return buf.getvalue()


def read_month(path: Path) -> list[list[Any]]:
    """The rows ``[ts_ms, open, high, low, close, base_volume]`` of a month file written here."""
    with gzip.open(path, "rt", encoding="ascii", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(header) != HEADER:
            raise StoreError(f"{path}: not a month file of this layout (header {header!r})")
        return [
            [int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5])]
            for r in reader
            if r
        ]


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: written beside it, fsynced, renamed; never half a file
    (the manifest written after the month files syncs their directory)."""
    write_durably(path, data, mode=0o644, sync_dir=False)


# ------------------------------------------------------------------ one series


@dataclass
class MonthInfo:
    rows: int
    first: int
    last: int
    runs: list[Interval]
    bytes: int = 0
    sha256: str = ""  # of the file's bytes as written ("" in a manifest from before it)


@dataclass
class SeriesSummary:
    """One line of ``cockpit data list``."""

    exchange: str
    symbol: str
    timeframe: str
    path: Path
    first: int | None
    last: int | None
    bars: int
    gaps: list[Interval] = field(default_factory=list)
    covered: list[Interval] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)

    @property
    def missing_bars(self) -> int:
        return sum(b - a for a, b in self.gaps) // self.tf_ms if self.tf_ms else 0

    tf_ms: int = 0


class SeriesStore:
    """The folder of one exchange, symbol and timeframe: read, add bars, flush atomically."""

    def __init__(
        self, data_dir: str | Path, exchange: str, symbol: str, timeframe: str, tf_ms: int
    ) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.timeframe = timeframe
        self.tf_ms = tf_ms
        self.dir = Path(data_dir) / MARKET_DIR / exchange / symbol_safe(symbol) / timeframe
        self.covered: list[Interval] = []
        self.months: dict[str, MonthInfo] = {}
        self._pending: list[Interval] = []  # answered ranges whose bars are not on disk yet
        self._rows: dict[str, dict[Any, list[Any]]] = {}  # file -> key -> row, loaded or new
        self._dirty: set[str] = set()
        self._lock_fd: int | None = None
        self.flushes = 0
        self.damaged: list[str] = []  # month files the manifest names, gone or changed
        self._load_manifest()

    # -------------------------------------------------------------- what a file holds

    KIND = "bars"

    def _period(self, ts_ms: int) -> str:
        """The file a row at this time belongs in: its UTC month."""
        return month_of(ts_ms)

    def _bounds(self, period: str) -> Interval:
        return month_bounds(period)

    def _key(self, row: list[Any]) -> Any:
        """What makes a row unique in its file (a bar: its open time)."""
        return row[0]

    def _format(self, rows: list[list[Any]]) -> bytes:
        return format_rows(rows, self.symbol)

    def _read(self, path: Path) -> list[list[Any]]:
        return read_month(path)

    def _info(self, rows: list[list[Any]], nbytes: int) -> MonthInfo:
        ts = [r[0] for r in rows]
        return MonthInfo(len(rows), ts[0], ts[-1], runs_of(ts, self.tf_ms), nbytes)

    # -------------------------------------------------------------- manifest

    @property
    def manifest_path(self) -> Path:
        return self.dir / MANIFEST

    def _load_manifest(self) -> None:
        path = self.manifest_path
        if not path.exists():
            return
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            same = (doc["exchange"], doc["symbol"], doc["timeframe"]) == (
                self.exchange,
                self.symbol,
                self.timeframe,
            )
            covered = [(int(a), int(b)) for a, b in doc["covered"]]
            months = {
                m: MonthInfo(
                    int(v["rows"]),
                    int(v["first"]),
                    int(v["last"]),
                    [(int(a), int(b)) for a, b in v["runs"]],
                    int(v.get("bytes", 0)),
                    str(v.get("sha256", "")),
                )
                for m, v in doc["files"].items()
            }
            for m in months:  # a file name the store would write, nothing else (not ../x)
                if self._period(self._bounds(m)[0]) != m:
                    raise ValueError(f"{m!r} names no {self.KIND} file of this layout")
        except (OSError, ValueError, KeyError, TypeError, OverflowError) as exc:
            raise StoreError(
                f"{path}: unreadable manifest ({exc}); move the folder aside and download again"
            ) from None
        if not same:
            raise StoreError(
                f"{path}: holds {doc['exchange']} {doc['symbol']} {doc['timeframe']}, "
                f"not {self.exchange} {self.symbol} {self.timeframe}"
            )
        self.covered = merge_intervals(covered)
        self.months = months
        self.damaged = []
        for month, info in sorted(months.items()):
            path = self.month_path(month)
            try:
                size = path.stat().st_size
            except OSError:
                size = -1
            if size != info.bytes:
                # Deleted or replaced by hand: its bars are no longer known, so neither is its
                # month's coverage; the next download asks for the month again.
                self._forget(month, f"{path.name} {'missing' if size < 0 else 'changed'}")

    def _forget(self, month: str, why: str) -> None:
        """A month file whose bars are not the ones written: neither they nor its month's
        coverage are known any more, so the next download asks for the month again."""
        self.damaged.append(why)
        del self.months[month]
        self.covered = subtract_intervals(self.covered, [self._bounds(month)])

    def check_contents(self, within: Iterable[Interval]) -> None:
        """Forget every file overlapping ``within`` (the ranges a download is about to ask
        for, whose bars go into those files) whose bytes are not the ones the manifest
        recorded: a bit flipped or an edit that kept the size, which the size check (all that
        ``cockpit data list`` does) cannot see. Such a month is then fetched again, whole,
        rather than merged with bars nobody can read. Files the run does not touch are not
        read (a year of trade files is gigabytes)."""
        ranges = merge_intervals(within)
        for month, info in sorted(self.months.items()):
            lo, hi = self._bounds(month)
            if not info.sha256 or not any(a < hi and lo < b for a, b in ranges):
                continue  # untouched, or a manifest from before the hashes (see _load_month)
            try:
                digest = hashlib.sha256(self.month_path(month).read_bytes()).hexdigest()
            except OSError:
                digest = ""
            if digest != info.sha256:
                self._forget(month, f"{self.month_path(month).name} changed")

    def _manifest_doc(self) -> dict[str, Any]:
        return {
            "layout": LAYOUT_VERSION,
            "exchange": self.exchange,
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "timeframe_ms": self.tf_ms,
            "kind": self.KIND,
            "covered": [list(i) for i in self.covered],
            "files": {
                m: {
                    "file": f"{m}{MONTH_SUFFIX}",
                    "rows": i.rows,
                    "first": i.first,
                    "last": i.last,
                    "bytes": i.bytes,
                    "sha256": i.sha256,
                    "runs": [list(r) for r in i.runs],
                }
                for m, i in sorted(self.months.items())
            },
            "updated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    # -------------------------------------------------------------- locking

    def lock(self) -> None:
        """Hold the folder for this process (non-blocking); SeriesBusy if another holds it.
        Leftover temporary files of a killed run are removed once the lock is held."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SeriesBusy(
                f"{self.dir}: another download is writing this folder; wait for it to finish"
            ) from None
        self._lock_fd = fd
        for stale in self.dir.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -------------------------------------------------------------- what is there

    def missing(self, start: int, end: int) -> list[Interval]:
        """The parts of [start, end) not yet asked of the venue (incl. pending ones)."""
        return subtract_intervals([(start, end)], [*self.covered, *self._pending])

    def gaps(self) -> list[Interval]:
        """Covered ranges in which the venue returned no bars."""
        runs = [r for info in self.months.values() for r in info.runs]
        return subtract_intervals(self.covered, runs)

    @property
    def bars(self) -> int:
        return sum(i.rows for i in self.months.values())

    def month_path(self, month: str) -> Path:
        return self.dir / f"{month}{MONTH_SUFFIX}"

    def files(self) -> list[Path]:
        return [self.month_path(m) for m in sorted(self.months) if self.months[m].rows]

    # -------------------------------------------------------------- adding

    def add(self, rows: list[list[Any]], answered: Interval) -> None:
        """Bars (ccxt rows, all inside ``answered``) and the range the venue answered for."""
        for row in rows:
            month = self._period(row[0])
            bucket = self._rows.get(month)
            if bucket is None:
                bucket = self._load_month(month)
            bucket[self._key(row)] = row
            self._dirty.add(month)
        self._pending.append(answered)
        # A month with no bars but answered (e.g. before the listing) still needs no file.

    def _load_month(self, month: str) -> dict[Any, list[Any]]:
        path = self.month_path(month)
        bucket: dict[Any, list[Any]] = {}
        if month in self.months and path.exists():
            try:
                bucket = {self._key(r): r for r in self._read(path)}
            except StoreError:
                raise
            except (OSError, EOFError, zlib.error, ValueError, IndexError, csv.Error) as exc:
                raise StoreError(
                    f"{path}: cannot be read ({' '.join(str(exc).split())[:120]}); delete it "
                    "and run the same command again to download its bars anew"
                ) from None
        self._rows[month] = bucket
        return bucket

    @property
    def pending_rows(self) -> int:
        return sum(len(self._rows[m]) for m in self._dirty)

    def flush(self, keep_months: Iterable[str] = ()) -> None:
        """Write every changed month file, then the manifest (in that order: see the module).
        Months not in ``keep_months`` are dropped from memory afterwards."""
        if not self._dirty and not self._pending:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        for month in sorted(self._dirty):
            bucket = self._rows[month]
            rows = [bucket[k] for k in sorted(bucket)]
            data = self._format(rows)
            write_atomically(self.month_path(month), data)
            info = self._info(rows, len(data))
            info.sha256 = hashlib.sha256(data).hexdigest()
            self.months[month] = info
        self._dirty.clear()
        self.covered = merge_intervals([*self.covered, *self._pending])
        self._pending.clear()
        write_durably(self.manifest_path, json.dumps(self._manifest_doc(), indent=1) + "\n")
        keep = set(keep_months)
        for month in list(self._rows):
            if month not in keep:
                del self._rows[month]
        self.flushes += 1

    def summary(self) -> SeriesSummary:
        firsts = [i.first for i in self.months.values() if i.rows]
        lasts = [i.last for i in self.months.values() if i.rows]
        return SeriesSummary(
            self.exchange,
            self.symbol,
            self.timeframe,
            self.dir,
            min(firsts) if firsts else None,
            max(lasts) if lasts else None,
            self.bars,
            self.gaps(),
            list(self.covered),
            list(self.damaged),
            self.tf_ms,
        )


def list_series(data_dir: str | Path) -> Iterator[SeriesSummary]:
    """Every downloaded series under ``DATA/market``, sorted by exchange, symbol, timeframe."""
    root = Path(data_dir) / MARKET_DIR
    for manifest in sorted(root.glob(f"*/*/*/{MANIFEST}")):
        try:
            doc = json.loads(manifest.read_text(encoding="utf-8"))
            cls = TradeStore if doc.get("kind") == TradeStore.KIND else SeriesStore
            store = cls(
                data_dir, doc["exchange"], doc["symbol"], doc["timeframe"], int(doc["timeframe_ms"])
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{manifest}: unreadable manifest ({exc})") from None
        if store.manifest_path != manifest:
            raise StoreError(f"{manifest}: names {doc['exchange']} {doc['symbol']}, not its folder")
        yield store.summary()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ------------------------------------------------------------------ trades

TRADES = "trades"
TRADE_HEADER = ("timestamp", "id", "side", "price", "amount", "symbol")


def day_of(ts_ms: int) -> str:
    """``YYYY-MM-DD`` of a UTC time in epoch milliseconds."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d")


def day_bounds(day: str) -> Interval:
    start = int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1000)
    return start, start + 86_400_000


def _trade_order(key: tuple[int, str]) -> tuple[int, int, str]:
    t, tid = key
    return (t, int(tid) if tid.isdigit() else -1, tid)


class TradeStore(SeriesStore):
    """Public trades of one symbol: ``.../SYMBOL_SAFE/trades/YYYY-MM-DD.csv.gz``, one UTC day a
    file, ``timestamp,id,side,price,amount,symbol`` (epoch ms, the venue's trade id, the
    taker's side, price, amount in the base currency), in time and id order, unique by id."""

    KIND = TRADES

    def __init__(
        self,
        data_dir: str | Path,
        exchange: str,
        symbol: str,
        timeframe: str = TRADES,
        tf_ms: int = 1,
    ) -> None:
        super().__init__(data_dir, exchange, symbol, TRADES, 1)

    def _period(self, ts_ms: int) -> str:
        return day_of(ts_ms)

    def _bounds(self, period: str) -> Interval:
        return day_bounds(period)

    def _key(self, row: list[Any]) -> Any:
        return (row[0], row[1])

    def _format(self, rows: list[list[Any]]) -> bytes:
        rows = sorted(rows, key=lambda r: _trade_order((r[0], r[1])))
        text = io.StringIO()
        w = csv.writer(text, lineterminator="\n")
        w.writerow(TRADE_HEADER)
        for t, tid, side, price, amount in rows:
            w.writerow((int(t), tid, side, repr(float(price)), repr(float(amount)), self.symbol))
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=6) as gz:
            gz.write(text.getvalue().encode("utf-8"))
        return buf.getvalue()

    def _read(self, path: Path) -> list[list[Any]]:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or tuple(header) != TRADE_HEADER:
                raise StoreError(f"{path}: not a trades file of this layout (header {header!r})")
            return [[int(r[0]), r[1], r[2], float(r[3]), float(r[4])] for r in reader if r]

    def _info(self, rows: list[list[Any]], nbytes: int) -> MonthInfo:
        ts = [r[0] for r in rows]
        return MonthInfo(len(rows), min(ts), max(ts), [], nbytes)

    def month_path(self, month: str) -> Path:
        return self.dir / f"{month}{MONTH_SUFFIX}"

    def gaps(self) -> list[Interval]:
        """A minute without trades is not a hole in the data: trades report no gaps."""
        return []
