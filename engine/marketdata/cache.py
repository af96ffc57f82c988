"""A cache of parsed market data, keyed by the source file's content hash (numpy ``.npz``).

Parsing a million-row CSV costs seconds; loading the same columns from ``.npz`` costs a tenth
of that. The cache holds, per source content, the columns exactly as the parser produced them
(before any option such as the volume unit is applied), so a hit is the same data as a parse.

Where: ``$COCKPIT_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/cockpit/marketdata``, else
``~/.cache/cockpit/marketdata``. Two folders:

* ``entries/SHA256-vN.npz``: one per source content (SHA-256 of the file's bytes as stored,
  compressed or not) and parser version ``N``. Uncompressed ``.npz``: ``ts`` (int64), ``c0``..
  (float64) and ``meta`` (JSON: kind, format, symbol, rows, the source's SHA-256, and the
  SHA-256 of the values with what they are, checked on every open).
* ``index/<hash of the absolute path>.json``: the last digest seen for a path, with the file's
  (device, inode, size, mtime_ns, ctime_ns) at the time.

Correct and fast: the content hash decides, never a time stamp alone. But hashing a 100 MB file
on every run costs time, so the digest is reused when the file's (device, inode, size,
mtime_ns, ctime_ns) are all unchanged since it was hashed. ctime cannot be set from user space
(``touch -r`` and ``os.utime`` set mtime, and move ctime), so an edit that restores the mtime
and the size still changes it. A file whose ctime was within ``RACY_S`` of the hash is "racy":
a write just after the hash could land in the same timestamp tick (coarse clocks, or a file
server's clock a little off ours) and leave every field equal (git's racy-clean problem), so
its digest is never reused on stat alone and the content is hashed again next time.

Safe with two processes: every file is written beside its final name and renamed into place, so
a reader sees a whole file or none. A damaged entry (truncated, a flipped bit: each member's
CRC-32 and the shapes and meta are checked when it is opened, and each block's CRC-32 again as
a run reads it, ``EntryColumns``) is deleted and rebuilt, never trusted. A damaged index only
costs a re-hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import struct
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from engine.marketdata.replay import ReplayError

# Bump when the parser's output for the same bytes changes: old entries are then not used.
# 2: the fast CSV reader no longer reads an ISO time past int64 ns (it wrapped to 1677), a
# leap second (rolled into the next minute) or a column of true/false (as 1.0/0.0); version 1
# may have stored any of them.
PARSER_VERSION = 2
RACY_S = 2.0
# The entries' total size is kept under this (least recently used go first);
# ``$COCKPIT_CACHE_MAX_MB`` overrides it.
DEFAULT_MAX_BYTES = 2 << 30
MAX_CACHE_MB = 1_000_000_000  # a petabyte: beyond it the figure is a typo, not a disk
_HASH_CHUNK = 1 << 20


@dataclass
class CachedColumns:
    """What a parse produced: ``ts`` (ns) and float columns, with what they are."""

    kind: str
    fmt: str
    symbol: str | None
    ts: np.ndarray[Any, Any]
    cols: tuple[np.ndarray[Any, Any], ...]


def default_cache_dir() -> Path:
    """``$COCKPIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/cockpit/marketdata``, else ~/.cache."""
    explicit = os.environ.get("COCKPIT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "cockpit" / "marketdata"


class CacheSettingError(ReplayError):
    """``$COCKPIT_CACHE_MAX_MB`` holds no size: the message is one line naming the fix."""


def default_max_bytes() -> int:
    """``$COCKPIT_CACHE_MAX_MB`` (megabytes, a number >= 0) if set, else ``DEFAULT_MAX_BYTES``.
    Anything else is refused, not ignored: ``inf`` crashed the command that opened the cache,
    and a typo (``2G``) silently left the default size in force."""
    text = os.environ.get("COCKPIT_CACHE_MAX_MB", "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = math.nan
    if not (math.isfinite(megabytes) and 0 <= megabytes <= MAX_CACHE_MB):
        shown = repr(text) if len(text) <= 20 else repr(text[:17] + "...")
        raise CacheSettingError(
            f"COCKPIT_CACHE_MAX_MB={shown} is not a size; set it to megabytes from 0 to "
            f"{MAX_CACHE_MB:,} (e.g. 2000) or unset it for the default "
            f"{DEFAULT_MAX_BYTES // 1_000_000:,} MB"
        )
    return int(megabytes * 1e6)


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class MarketDataCache:
    """See the module docstring. ``hits``, ``misses``, ``hashed`` and ``rebuilt`` count what
    this instance did (for tests and the bench)."""

    def __init__(
        self, root: str | Path, *, racy_s: float = RACY_S, max_bytes: int | None = None
    ) -> None:
        self.root = Path(root)
        self.racy_ns = int(racy_s * 1e9)
        self.max_bytes = default_max_bytes() if max_bytes is None else max_bytes
        self.evicted = 0
        self.hits = 0
        self.misses = 0
        self.hashed = 0  # content hashes computed (0 when the stat check vouched for the file)
        self.rebuilt = 0  # damaged entries found and deleted
        self.write_errors = 0

    @classmethod
    def default(cls) -> MarketDataCache:
        return cls(default_cache_dir())

    @property
    def entries(self) -> Path:
        return self.root / "entries"

    @property
    def index(self) -> Path:
        return self.root / "index"

    # -------------------------------------------------------------- the digest

    def digest(self, path: Path) -> str:
        """The SHA-256 of the file's bytes, reused from the index while its stat vouches."""
        path = Path(path).absolute()
        st = os.stat(path)
        key = _stat_key(st)
        index_file = self.index / (hashlib.sha256(str(path).encode()).hexdigest()[:32] + ".json")
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            doc = json.loads(index_file.read_text(encoding="utf-8"))
            if doc["path"] == str(path) and doc["stat"] == key and not doc["racy"]:
                digest = str(doc["sha256"])
                if len(digest) == 64:
                    return digest
        started_ns = time.time_ns()
        digest = file_sha256(path)
        self.hashed += 1
        after = os.stat(path)
        if _stat_key(after) == key:  # not written to while it was read: worth remembering
            racy = st.st_ctime_ns >= started_ns - self.racy_ns
            doc = {"path": str(path), "stat": key, "sha256": digest, "racy": racy}
            self._write(index_file, json.dumps(doc).encode())
        return digest

    # -------------------------------------------------------------- entries

    def entry_path(self, digest: str) -> Path:
        return self.entries / f"{digest}-v{PARSER_VERSION}.npz"

    def open_columns(self, digest: str, *, count: bool = True) -> EntryColumns | None:
        """The entry for a digest as a ``ColumnSource`` read a range at a time from disk (the
        whole entry is checked first: CRC-32 of every member, the meta, the shapes), so a run
        holds a chunk of it, not all of it. None when absent or damaged (then deleted).
        ``count=False``: reading back the entry just written (neither a hit nor a miss)."""
        path = self.entry_path(digest)
        try:
            fh = open(path, "rb")  # noqa: SIM115  (kept open by the reader: eviction-safe)
        except OSError:
            self.misses += count
            return None
        try:
            entry = EntryColumns(fh, digest)
            if EntryColumns.held > descriptor_budget():
                entry.load()  # keep the descriptors a process may open for what else it opens
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
            fh.close()
            self.rebuilt += 1
            self.misses += count
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        self.hits += count
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: the last to be evicted
        return entry

    def put(self, digest: str, data: CachedColumns) -> None:
        """Store parsed columns (best effort: a full disk or a read-only cache only costs speed)."""
        meta = {
            "version": PARSER_VERSION,
            "source_sha256": digest,
            "kind": data.kind,
            "fmt": data.fmt,
            "symbol": data.symbol,
            "rows": len(data.ts),
            "ncols": len(data.cols),
        }
        arrays: dict[str, Any] = {"ts": np.ascontiguousarray(data.ts, dtype="<i8")}
        for i, c in enumerate(data.cols):
            arrays[f"c{i}"] = np.ascontiguousarray(c, dtype="<f8")
        content = _content_hash(meta)
        for values in arrays.values():
            content.update(memoryview(values).cast("B"))
        meta["content_sha256"] = content.hexdigest()
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        try:
            self.entries.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.entries, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.savez(fh, **arrays)
                os.replace(tmp, self.entry_path(digest))
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError:
            self.write_errors += 1
            return
        self.evict(keep=self.entry_path(digest))

    def evict(self, keep: Path | None = None) -> None:
        """Delete the least recently used entries until the rest fit in ``max_bytes`` (never
        ``keep``, the one just written, even when it alone is larger)."""
        sized = []
        for p in self.entries.glob("*.npz"):
            with contextlib.suppress(OSError):
                st = p.stat()
                sized.append((st.st_mtime_ns, st.st_size, p))
        total = sum(size for _t, size, _p in sized)
        for _t, size, p in sorted(sized):
            if total <= self.max_bytes:
                break
            if p == keep:
                continue
            with contextlib.suppress(OSError):
                p.unlink()
                total -= size
                self.evicted += 1

    def _write(self, path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError:
            self.write_errors += 1

    # -------------------------------------------------------------- housekeeping

    def _files(self) -> list[Path]:
        out: list[Path] = []
        for sub in (self.entries, self.index):
            if sub.is_dir():
                out.extend(p for p in sub.iterdir() if p.is_file())
        return out

    def usage(self) -> tuple[int, int]:
        """(files, bytes) in the cache."""
        files = self._files()
        size = 0
        for p in files:
            with contextlib.suppress(OSError):
                size += p.stat().st_size
        return len(files), size

    def clear(self) -> tuple[int, int]:
        """Delete every cached file; (files removed, bytes freed)."""
        removed = freed = 0
        for p in self._files():
            with contextlib.suppress(OSError):
                size = p.stat().st_size
                p.unlink()
                removed += 1
                freed += size
        return removed, freed


# Rows per block of an entry's column whose CRC-32 is kept on open and checked on every read.
_BLOCK_ROWS = 1 << 16


def descriptor_budget() -> int:
    """How many cache entries a process reads from disk at once, each on a held descriptor:
    a quarter of the open-file limit, at most 1,024 (macOS allows 256 by default, and a
    folder of daily files holds one entry per file). Past it an entry is read into memory."""
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 64
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 1024
    return max(0, min(1024, soft // 4))


class EntryChanged(ReplayError):
    """A cache entry's bytes changed on disk after it was checked (written to in place,
    truncated): what was read cannot be trusted (a one-line error, as for a bad file)."""


class EntryColumns:
    """A cache entry's columns, read by range with ``pread`` on a descriptor held open (an
    eviction or a rewrite of the entry meanwhile does not change what this reads).

    The entry is an uncompressed ``.npz``: each member is a ``.npy`` stored as is, so its
    values sit at a fixed offset in the file. Opening checks every member's CRC-32 (zip's own)
    and the meta against the arrays' headers; a failure raises ValueError. It keeps the CRC-32
    of every ``_BLOCK_ROWS`` rows of each column, and each read checks the blocks it reads: an
    entry written to in place or truncated while a run reads it raises ``EntryChanged``
    rather than handing the run other numbers than those checked.

    ``held`` counts the entries holding a descriptor; ``load`` reads one into memory and
    lets its descriptor go (``MarketDataCache.open_columns`` does past ``descriptor_budget``)."""

    _LOCAL_HEADER = struct.Struct("<4s5H3L2H")
    held = 0

    def __init__(self, fh: BinaryIO, digest: str) -> None:
        self._fh: BinaryIO | None = fh
        self._fd = fh.fileno()
        self._holds = False  # counted in ``held`` (once every check passed)
        self.path = str(getattr(fh, "name", "cache entry"))
        self._memory: tuple[np.ndarray[Any, Any], tuple[np.ndarray[Any, Any], ...]] | None = None
        with zipfile.ZipFile(fh) as z:
            infos = {i.filename: i for i in z.infolist()}
            meta = json.loads(bytes(np.load(z.open("meta.npy"))).decode("utf-8"))
        self.rows = n = int(meta["rows"])
        self.ncols = int(meta["ncols"])
        if (
            meta["source_sha256"] != digest
            or meta["version"] != PARSER_VERSION
            or meta["kind"] not in ("bars", "quotes")
        ):
            raise ValueError("meta does not match the entry")
        self.kind: str = meta["kind"]
        self.fmt: str = meta["fmt"]
        self.symbol: str | None = meta.get("symbol")
        names = ["ts.npy", *(f"c{i}.npy" for i in range(self.ncols))]
        dtypes = [np.dtype("<i8")] + [np.dtype("<f8")] * self.ncols
        # Per member: (offset of its values, the CRC-32 of each block of rows). The values of
        # every member, with what they are, must hash to the digest the writer put in the
        # meta: an entry rewritten whole (other numbers, zip CRCs made anew, the meta copied)
        # is as foreign as a damaged one.
        content = _content_hash(meta)
        self._members = [
            self._values_at(infos[name], dtype, n, content)
            for name, dtype in zip(names, dtypes, strict=True)
        ]
        if content.hexdigest() != meta.get("content_sha256"):
            raise ValueError("the values are not the ones the entry was written with")
        self._dtypes = dtypes
        self._holds = True
        EntryColumns.held += 1

    def _values_at(
        self, info: zipfile.ZipInfo, dtype: np.dtype[Any], n: int, content: Any
    ) -> tuple[int, list[int]]:
        """A stored member's values: (file offset, CRC-32 per block of rows), after checking
        the member's CRC-32 and its .npy header; the values go into ``content`` too."""
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise ValueError(f"{info.filename} is compressed")
        head = os.pread(self._fd, self._LOCAL_HEADER.size, info.header_offset)
        fields = self._LOCAL_HEADER.unpack(head)
        if fields[0] != b"PK\x03\x04":
            raise ValueError("not a zip member")
        start = info.header_offset + self._LOCAL_HEADER.size + fields[9] + fields[10]
        assert self._fh is not None
        self._fh.seek(start)
        version = np.lib.format.read_magic(self._fh)
        if version == (1, 0):
            shape, fortran, got = np.lib.format.read_array_header_1_0(self._fh)
        elif version == (2, 0):
            shape, fortran, got = np.lib.format.read_array_header_2_0(self._fh)
        else:
            raise ValueError(f"{info.filename}: .npy version {version}")
        if got != dtype or shape != (n,) or fortran:
            raise ValueError(f"{info.filename}: {got} {shape}, expected {dtype} ({n},)")
        at = self._fh.tell()
        if at - start + n * dtype.itemsize != info.file_size:
            raise ValueError(f"{info.filename}: size does not match its header")
        crc = zlib.crc32(os.pread(self._fd, at - start, start))
        blocks: list[int] = []
        step = _BLOCK_ROWS * dtype.itemsize
        end = at + n * dtype.itemsize
        for pos in range(at, end, step):
            piece = os.pread(self._fd, min(step, end - pos), pos)
            if len(piece) != min(step, end - pos):
                raise EOFError("entry truncated")
            blocks.append(zlib.crc32(piece))
            crc = zlib.crc32(piece, crc)
            content.update(piece)
        if crc != info.CRC:
            raise ValueError(f"{info.filename}: CRC-32 mismatch")
        return at, blocks

    def _read(self, member: int, start: int, stop: int) -> np.ndarray[Any, Any]:
        """Rows ``start`` to ``stop - 1`` of one member, each block read checked."""
        at, blocks = self._members[member]
        dtype = self._dtypes[member]
        if stop <= start:
            return np.empty(0, dtype=dtype)
        first, last = start // _BLOCK_ROWS, (stop - 1) // _BLOCK_ROWS
        row0 = first * _BLOCK_ROWS
        want = (min((last + 1) * _BLOCK_ROWS, self.rows) - row0) * 8
        raw = os.pread(self._fd, want, at + row0 * 8)
        if len(raw) != want:
            self._changed("truncated")
        step = _BLOCK_ROWS * 8
        view = memoryview(raw)
        for b in range(first, last + 1):
            if zlib.crc32(view[(b - first) * step : (b - first + 1) * step]) != blocks[b]:
                self._changed(f"CRC-32 mismatch at row {b * _BLOCK_ROWS:,}")
        return np.frombuffer(raw, dtype=dtype)[start - row0 : stop - row0]

    def _changed(self, what: str) -> None:
        """Refuse the entry (and delete it: the next run parses the file again)."""
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(self._fd), os.stat(self.path)):
                os.unlink(self.path)
        raise EntryChanged(
            f"the parsed-data cache entry {self.path} changed on disk while it was read "
            f"({what}); it is deleted: run again (or pass --no-cache)"
        )

    def read(
        self, start: int, stop: int
    ) -> tuple[np.ndarray[Any, Any], tuple[np.ndarray[Any, Any], ...]]:
        """Rows ``start`` to ``stop - 1`` (clipped): (ts int64, float64 columns), read-only."""
        start, stop = max(0, start), min(self.rows, stop)
        stop = max(start, stop)
        if self._memory is not None:
            ts, cols = self._memory
            return ts[start:stop], tuple(c[start:stop] for c in cols)
        ts = self._read(0, start, stop)
        return ts, tuple(self._read(m, start, stop) for m in range(1, self.ncols + 1))

    def load(self) -> None:
        """Read every row into memory (checked as any read is) and let the descriptor go."""
        if self._memory is None:
            ts, cols = self.read(0, self.rows)
            self._memory = (ts, cols)
            self.close()

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if self._holds:
            self._holds = False
            EntryColumns.held -= 1
        if fh is not None:
            fh.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _content_hash(meta: dict[str, Any]) -> Any:
    """SHA-256 started on what an entry's values are (so a meta edited to call them something
    else does not match either); the values of ts, c0, c1, ... follow, little-endian."""
    what = [meta["source_sha256"], meta["kind"], meta["fmt"], meta["symbol"], meta["rows"]]
    return hashlib.sha256(json.dumps([*what, meta["ncols"]]).encode("utf-8"))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()
