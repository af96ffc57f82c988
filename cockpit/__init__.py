"""The Textual cockpit and the command-line interface."""

import contextlib as _contextlib
import signal as _signal
import sys as _sys

# `cockpit engine`: SIGUSR1 is the kill switch from the first line of this package the command
# runs, before cockpit.cli and what it imports load (a tenth of a second): until then its
# default action terminated the engine, and a service restarted it trading. Noted here, taken
# over by cockpit.cli (_catch_early_kill) and engaged once the engine's state is restored.
early_kills: list[int] = []
if _sys.argv[1:2] == ["engine"] and _signal.getsignal(_signal.SIGUSR1) is _signal.SIG_DFL:
    with _contextlib.suppress(ValueError):  # not the main thread: not a command line
        _signal.signal(_signal.SIGUSR1, lambda signum, frame: early_kills.append(signum))
