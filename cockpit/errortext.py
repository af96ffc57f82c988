"""Error messages fit for a terminal, for every CLI command (not the TUI: it renders its own).

The commands echo what the user typed in their errors; the argument could hold an escape
sequence, a right-to-left override or 100 KB.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import TypeGuard

from engine.vocabulary import printable

# Writing the command's own output failed: stdout on a full disk (``> /dev/full``), a dead
# device. Not the work failing, and nothing a traceback would explain.
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG})

# An error line longer than this names its value by its two ends: a 100 KB argument echoed in
# full would bury the fix the line ends with. Well above the engine's own longest lines (a
# journal refusal names the data dir twice and the file it found: 600 characters under a deep
# temporary path), which must reach the user whole: their middle says what is wrong.
ERROR_LINE_CHARS = 2_000


def shown(message: str) -> str:
    """An error message fit for a terminal: in each line, control characters and bidi overrides
    escaped (an escape sequence echoed from an argument could clear or rewrite the screen, a
    right-to-left override reverse what the line says) and an over-long line cut in its middle,
    keeping the fix at its end."""
    lines = []
    for line in message.split("\n"):
        line = printable(line)
        if len(line) > ERROR_LINE_CHARS:
            half = ERROR_LINE_CHARS // 2
            line = f"{line[:half]} ...({len(line) - 2 * half} characters)... {line[-half:]}"
        lines.append(line)
    return "\n".join(lines)


def is_output_failure(exc: BaseException) -> TypeGuard[OSError]:
    """``exc`` is stdout refusing the command's output (no file named: not a file it opened)."""
    return isinstance(exc, OSError) and exc.errno in OUTPUT_ERRNOS and exc.filename is None


def output_failed(exc: OSError) -> int:
    """Say in one line that the output was not written, and send the rest to /dev/null so the
    flush at exit cannot fail again (and print a traceback)."""
    print(
        f"cockpit: cannot write the output ({exc.strerror or exc}); it is incomplete",
        file=sys.stderr,
    )
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return 1


def usable_standard_streams() -> None:
    """A command started with stdin, stdout or stderr closed (``cockpit verify >&-``) has that
    stream None: read as empty and written to /dev/null, as a reader gone away is treated,
    instead of an AttributeError at the first print. The exit code still says what happened."""
    for name, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, mode))  # noqa: SIM115 (lives as long as the process)
