"""Interrupt a trader's strategy that holds the engine.

A strategy runs on the engine's own thread: while one call runs (an endless loop, a sleep, a
blocking request), the engine does nothing else, and the kill switch, the KILL file, SIGUSR1
and the protective exits all wait for it. The core pauses a strategy whose call took longer
than ``STRATEGY_CALL_MAX_S`` once it returns; this makes it return. A thread watches which
call is in progress (``EngineCore.calling``, a number per call) and, when the same one is still
running after the limit, sends SIGUSR2 to the main thread, whose handler raises
``StrategyOverran`` inside the strategy's code if that call is still the one running (it may
have returned in the meantime: then nothing happens). The core catches it as any exception a
strategy raises: the strategy is paused, saying it was interrupted and where.

A signal handler runs only in the main thread, so an engine running elsewhere is not watched
(``watch`` says so). Code that never gives the interpreter a turn (a long C call) is
interrupted when it does; a strategy that catches ``BaseException`` and carries on is asked
again every ``STRATEGY_CALL_MAX_S``. SIGUSR2 from outside does nothing.
"""

from __future__ import annotations

import signal
import threading
import time
import weakref
from types import FrameType

from engine.core import STRATEGY_CALL_MAX_S, EngineCore, StrategyOverran

SIGNAL = signal.SIGUSR2
POLL_S = 0.1  # how often the thread looks: a call is interrupted 1.0-1.2 s after it began


class StrategyWatchdog:
    """One engine's watch: which call it saw in progress, since when, and the one it flagged."""

    def __init__(self, core: EngineCore, limit_s: float = STRATEGY_CALL_MAX_S) -> None:
        self.core = core
        self.limit_s = limit_s
        self.flagged = 0  # the call the main thread is asked to interrupt
        self._seen = 0
        self._since = 0.0
        self._asked = 0.0

    def due(self, now: float) -> bool:
        """Called by the watching thread: True when the call in progress has run past the
        limit (and was not asked within the limit already)."""
        call = self.core.calling
        if not call:
            self._seen = 0
            return False
        if call != self._seen:
            self._seen, self._since, self._asked = call, now, 0.0
            return False
        if now - self._since > self.limit_s and now - self._asked > self.limit_s:
            self._asked = now
            self.flagged = call
            return True
        return False


_watched: weakref.WeakSet[StrategyWatchdog] = weakref.WeakSet()
_lock = threading.Lock()
_thread: threading.Thread | None = None


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """In the main thread, between two bytecodes of whatever runs: raise in the strategy's
    call only if it is still the call the watching thread flagged."""
    for dog in list(_watched):
        call = dog.flagged
        if call and dog.core.calling == call:
            dog.flagged = 0
            raise StrategyOverran(dog.limit_s)


def _watch_loop() -> None:
    global _thread
    main = threading.main_thread().ident
    while True:
        time.sleep(POLL_S)
        with _lock:
            dogs = list(_watched)
            if not dogs:
                _thread = None
                return
        now = time.monotonic()
        if any([dog.due(now) for dog in dogs]) and main is not None:
            try:
                signal.pthread_kill(main, SIGNAL)
            except OSError:  # (the process is exiting) a later watch() starts a new thread
                with _lock:
                    _thread = None
                return


def watch(core: EngineCore) -> StrategyWatchdog | None:
    """Watch ``core``'s strategy calls; None when this is not the main thread (no handler can
    be installed there) or the core runs no trader's own strategy."""
    global _thread
    if threading.current_thread() is not threading.main_thread():
        return None
    with _lock:
        # Installed whatever the strategies: SIGUSR2 is documented as doing nothing sent from
        # outside, and its default action terminated an engine of built-in strategies only
        # (no clean stop, the session not recorded).
        if signal.getsignal(SIGNAL) is not _on_signal:
            signal.signal(SIGNAL, _on_signal)
    if not any(slot.checked for slot in core.slots.values()):
        return None
    dog = StrategyWatchdog(core)
    with _lock:
        _watched.add(dog)
        if _thread is None:
            _thread = threading.Thread(target=_watch_loop, name="strategy-watchdog", daemon=True)
            _thread.start()
    return dog


def unwatch(dog: StrategyWatchdog | None) -> None:
    """Stop watching (the engine stopped); the thread ends once nothing is watched."""
    if dog is None:
        return
    with _lock:
        _watched.discard(dog)
        dog.flagged = 0
