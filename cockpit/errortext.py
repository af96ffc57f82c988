"""Error messages fit for a terminal, for every CLI command (not the TUI: it renders its own).

The commands echo what the user typed in their errors; the argument could hold an escape
sequence, a right-to-left override or 100 KB.
"""

from __future__ import annotations

from engine.vocabulary import printable

# An error line longer than this names its value by its two ends: a 100 KB argument echoed in
# full would bury the fix the line ends with.
ERROR_LINE_CHARS = 400


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
