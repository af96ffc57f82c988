"""The Textual cockpit and the command-line interface."""

import contextlib as _contextlib
import signal as _signal
import sys as _sys

# `cockpit engine`: SIGUSR1 is the kill switch from the first line of this package the command
# runs, before cockpit.cli and what it imports load (a tenth of a second): until then its
# default action terminated the engine, and a service restarted it trading. Noted here, taken
# over by cockpit.cli (_catch_early_kill) and engaged once the engine's state is restored.
early_kills: list[int] = []

# The top-level options that take a value (``cockpit --config X engine``: the parser takes them
# before the command too); --live and --help take none.
_VALUED = ("--config", "--profile", "--data-dir", "--confirm-live", "--metrics", "--metrics-host")


def runs_engine(argv: list[str]) -> bool:
    """Is ``argv`` (without the program) the headless engine's command line: its first word
    that is no option nor an option's value is ``engine``. Options before it were missed
    (``cockpit --config prod.toml engine``: a SIGUSR1 at its start terminated it)."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--" or not word.startswith("-"):
            return (argv[i + 1 : i + 2] if word == "--" else [word]) == ["engine"]
        if "=" not in word and len(word) > 2 and any(v.startswith(word) for v in _VALUED):
            i += 1  # its value follows (argparse takes a unique prefix too: --conf X)
        i += 1
    return False


def _nothing(signum: int, frame: object) -> None:
    """SIGUSR2 is the strategy watchdog's: sent from outside it does nothing (a handler, not
    SIG_IGN, which a child process would inherit)."""


if runs_engine(_sys.argv[1:]) and _signal.getsignal(_signal.SIGUSR1) is _signal.SIG_DFL:
    with _contextlib.suppress(ValueError):  # not the main thread: not a command line
        _signal.signal(_signal.SIGUSR1, lambda signum, frame: early_kills.append(signum))
        # From the same moment: until cockpit.cli took it over (a tenth of a second later) a
        # SIGUSR2 terminated the engine that SIGUSR1 could no longer.
        if _signal.getsignal(_signal.SIGUSR2) is _signal.SIG_DFL:
            _signal.signal(_signal.SIGUSR2, _nothing)
