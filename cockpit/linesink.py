"""The headless engine's stdout and stderr, written by a thread of their own.

A reader that stops reading (`cockpit engine | slow-consumer` paused, a stalled log collector,
a terminal held with Ctrl-S) fills the pipe, and a plain ``write`` then blocks the event loop:
no quote, no exit, no control socket, no SIGTERM and no SIGUSR1 kill until it reads again. Here
the engine only queues the text; a daemon thread writes it to a duplicate of the descriptor. A
queue that is full drops what comes (counted, and said once the writer catches up): the journal
has every event, and the engine never waits for a reader (DESIGN: a slow subscriber drops,
never the engine). A reader that went away (EPIPE) ends the writing quietly.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

QUEUED_WRITES = 10_000
_END = object()


class LineSink:
    """A text stream (``write``/``flush``) that never blocks its caller; see the module doc.

    ``dropped_text(n)`` is what is written once ``n`` writes were dropped. A stream without a
    descriptor (a test's StringIO) is written to directly."""

    def __init__(
        self,
        stream: Any,
        dropped_text: Callable[[int], str],
        maxsize: int = QUEUED_WRITES,
    ) -> None:
        self.stream = stream
        self.dropped = 0  # writes dropped and not yet said (the caller's thread only)
        self._dropped_text = dropped_text
        self._fd: int | None = None
        self._orig_fd: int | None = None
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
            self._orig_fd = stream.fileno()
            self._fd = os.dup(self._orig_fd)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=maxsize)
        self._thread: threading.Thread | None = None
        if self._fd is not None:
            self._thread = threading.Thread(target=self._run, name="cockpit-output", daemon=True)
            self._thread.start()

    # -- the caller's side (the event loop)

    def write(self, text: str) -> int:
        if self._fd is None:
            self.stream.write(text)
            return len(text)
        # What was dropped is said just before the first write the queue takes again, so the
        # notice stands where the gap is.
        item = self._dropped_text(self.dropped) + text if self.dropped else text
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
        else:
            self.dropped = 0
        return len(text)

    def flush(self) -> None:
        if self._fd is None:
            self.stream.flush()

    def isatty(self) -> bool:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            return bool(self.stream.isatty())
        return False

    def fileno(self) -> int:
        return int(self.stream.fileno())

    @property
    def encoding(self) -> str:
        return str(getattr(self.stream, "encoding", None) or "utf-8")

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued, waiting at most ``timeout`` s for a reader that does not read."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):
            if self.dropped:
                self._queue.put(self._dropped_text(self.dropped), timeout=timeout)
            self._queue.put(_END, timeout=timeout)
        self._thread.join(timeout)

    # -- the writer thread

    def _run(self) -> None:
        fd = self._fd
        assert fd is not None
        gone = False
        while True:
            item = self._queue.get()
            if item is _END:
                break
            if gone:
                continue
            data = str(item).encode(self.encoding, "backslashreplace")
            try:
                while data:
                    data = data[os.write(fd, data) :]
            except OSError:
                gone = True  # the reader went away: stop writing, keep draining the queue
                self._to_devnull()
        with contextlib.suppress(OSError):
            os.close(fd)

    def _to_devnull(self) -> None:
        """The stream's own descriptor goes to /dev/null too (only it: the lines' pipe, never
        stderr), so a write to it at the exit cannot fail again."""
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                if self._orig_fd is not None:
                    os.dup2(devnull, self._orig_fd)
            finally:
                os.close(devnull)
