"""Progress on the terminal for long CLI runs (backtests, sweeps): one line of stderr.

A run that ends within ``delay_s`` prints nothing, so a quick backtest's report is all a trader
sees; a longer one shows a bar with done/total, rate and ETA, redrawn at most 10 times a second
and erased when the run ends. Nothing is written when stderr is not a terminal (a pipe, a log, a
test), so ``--json`` output and logs stay clean. ``waiting`` covers a step that reports no
progress (reading a large file) with an elapsed-time line after the same delay.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

BAR_WIDTH = 24
REDRAW_S = 0.1


def clock(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``."""
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """``[#########...........]  42%`` for ``done`` of ``total``."""
    frac = min(1.0, done / total) if total > 0 else 1.0
    full = int(frac * width)
    return f"[{'#' * full}{'.' * (width - full)}] {frac * 100:3.0f}%"


def _is_terminal(stream: TextIO | None) -> bool:
    """Whether ``stream`` is a terminal; False for none at all (a process started with its
    stderr closed has ``sys.stderr`` None) or a closed or odd one."""
    try:
        return stream is not None and bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class TerminalProgress:
    """``what [bar] done/total, rate, ETA`` on one line of ``stream`` (stderr); nothing at all
    when the stream is not a terminal, nor before ``delay_s`` has passed since it was made."""

    def __init__(
        self, what: str, stream: TextIO | None = None, *, delay_s: float = 0.0, unit: str = ""
    ) -> None:
        self.what = what
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _is_terminal(self.stream)
        self.delay_s = delay_s
        self.unit = f" {unit}" if unit else ""
        self.shown = False
        self._started = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        """Erase the line, before any handler of what was raised prints its error."""
        self.close()

    def __call__(self, p: Any) -> None:
        """Show ``p`` (anything with ``done``, ``total`` and ``elapsed_s``)."""
        self.show(p.done, p.total, p.elapsed_s)

    def counted(self) -> Callable[[int, int], None]:
        """A ``progress(done, total)`` callback (the backtest core's), timed from now."""
        t0 = time.perf_counter()

        def report(done: int, total: int) -> None:
            self.show(done, total, time.perf_counter() - t0)

        return report

    def show(self, done: int, total: int, elapsed_s: float) -> None:
        """Draw ``done`` of ``total`` after ``elapsed_s``, with the rate and ETA so far."""
        if not self.tty:
            return
        now = time.monotonic()
        if now - self._started < self.delay_s:
            return
        if done < total and now - self._last < REDRAW_S:
            return
        self._last = now
        rate = done / elapsed_s if elapsed_s > 0 and done else 0.0
        eta_text = clock((total - done) / rate) if rate > 0 else "--:--"
        rate_text = f"{rate:,.0f}" if rate >= 100 else f"{rate:.2f}"
        # Most telling first: on a narrow terminal the tail parts go rather than the line
        # wrapping (a wrapped line cannot be redrawn in place).
        room = self.columns() - 1
        parts = [
            f"{self.what} {bar(done, total, BAR_WIDTH if room >= 100 else BAR_WIDTH // 2)}",
            f"{done:,}/{total:,}{self.unit}",
            f"ETA {eta_text}",
            f"{rate_text}/s",
            f"elapsed {clock(elapsed_s)}",
        ]
        while len(parts) > 1 and len("  ".join(parts)) > room:
            parts.pop()
        self.write("  ".join(parts))

    def columns(self) -> int:
        """The terminal's width (the stream's own, else the usual fallback)."""
        try:
            return max(20, os.get_terminal_size(self.stream.fileno()).columns)
        except (AttributeError, ValueError, OSError):
            return max(20, shutil.get_terminal_size((100, 24)).columns)

    def write(self, line: str) -> None:
        """Replace the progress line with ``line`` (callers check ``tty`` and the delay)."""
        room = self.columns() - 1
        if len(line) > room:  # never wrap: keep the start and the end, elide the middle
            tail = min(20, room // 3)
            line = line[: room - tail - 1] + "…" + line[-tail:]
        with self._lock:
            self.stream.write("\r\x1b[K" + line)
            self.stream.flush()
            self.shown = True

    def close(self) -> None:
        """Erase the line (if one was drawn), so what follows starts on a clean line."""
        with self._lock:
            if self.shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self.shown = False

    @contextmanager
    def waiting(self, label: str) -> Iterator[None]:
        """While the block runs, ``label ... elapsed m:ss`` from ``delay_s`` on (a thread
        redraws it twice a second); erased when the block ends."""
        if not self.tty:
            yield
            return
        done = threading.Event()
        t0 = time.monotonic()

        def tick() -> None:
            if done.wait(max(0.0, self.delay_s - (time.monotonic() - self._started))):
                return
            while not done.is_set():
                self.write(f"{label} ... elapsed {clock(time.monotonic() - t0)}")
                done.wait(0.5)

        ticker = threading.Thread(target=tick, name="progress", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()
            self.close()
