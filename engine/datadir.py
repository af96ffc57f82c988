"""Files the engine keeps beside its journal: the data directory's lock and the KILL file.

One data directory is one engine. :class:`DataDirLock` holds an exclusive ``flock`` on
``<data_dir>/engine.lock`` for the engine's whole life, taken before the journal is read or
opened, so a second engine on the same directory stops before it writes a single row (two
writers on one hash-chained journal would fork it). The OS drops the lock when the process dies,
so a kill -9 never leaves a stale lock behind; the file only records the holder's pid for the
message. One-shot readers (``verify``, ``status``, ``trace``) take no lock: the journal is WAL and
they read a consistent snapshot.

:func:`write_durably` writes a small file atomically and fsyncs it and its directory: the KILL
file that keeps a kill switch engaged across a restart when the journal cannot record it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = "engine.lock"


class DataDirInUse(RuntimeError):
    """Another engine holds the data directory; ``exit_code`` is the CLI's usage error (2)."""

    exit_code = 2


def _holder(path: Path) -> str:
    """The pid the lock file names, as text ("unknown" while the holder is still writing it)."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


class DataDirLock:
    """An exclusive, non-blocking OS lock on one data directory, held until :meth:`release`.

    ``flock`` locks belong to an open file description, so a second engine in the same process
    is refused as well as one in another process.
    """

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`DataDirInUse` naming the holder; OSError if the
        directory cannot be made or the file opened. Taking a lock already held is a no-op."""
        if self._fd is not None:
            return
        if not self.data_dir.exists():
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirInUse(
                f"the data directory {self.data_dir} is in use by another engine "
                f"(pid {_holder(self.path)}, lock {self.path}); stop that engine or choose "
                "another --data-dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is only for the message; the lock itself is held
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays: unlinking it would let two engines lock two inodes)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor releases the flock


def write_durably(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (a reader sees the old or the new file, never
    half of one) and fsync the file and its directory, so the content survives a power cut."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            data = text.encode("utf-8")
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
