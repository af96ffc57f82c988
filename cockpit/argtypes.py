"""Argument types and option sets shared by every CLI command and the cockpit's forms.

One place, so a bad number gets the same one-line answer from ``engine --for``, ``status
--timeout``, ``backtest --warmup``, ``venues check --timeout`` and the backtest screen's
fields, and every command spells ``--config``/``--profile`` the same way. Imports nothing but
argparse, json and the dependency-free vocabulary: the one-shot commands must start fast. A
type raises ``argparse.ArgumentTypeError`` with the one line to show.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from typing import Any

from engine.vocabulary import printable


def positive_seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def path_text(text: str) -> str:
    """A path given on the command line: an empty one would silently mean the default, and one
    starting with ~ that no shell expanded would be a folder named ~."""
    text = expanded_path_text(text)
    if text.startswith("~"):
        # Only a shell expands ~, and not after "=" (--data-dir=~/x) nor in a service file's
        # ExecStart: the engine ran on a new, empty data dir in a folder named ~ (no journal,
        # no kill switch, no positions), and `cockpit kill` looked there too.
        home = os.path.expanduser(text)
        instead = f" ({printable(home)})" if home != text else ""
        raise argparse.ArgumentTypeError(
            f"{printable(text)!r} starts with ~, which nothing expanded here (a shell does "
            f"only at the start of a word); write the whole path{instead}"
        )
    return text


def expanded_path_text(text: str) -> str:
    """A path the command expands ~ in itself (cockpit/fleet.py's: attach, --fleet)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give a file or directory, or leave it out")
    if "\x00" in text:
        raise argparse.ArgumentTypeError("a path cannot contain a NUL character")
    return text


def listen_host(text: str) -> str:
    """An address to listen on: an empty one meant every interface (the asyncio and socket
    spelling of "any"), the opposite of a typo's likely intent."""
    host = text.strip()
    if not host:
        raise argparse.ArgumentTypeError(
            "an empty address would listen on every interface; give 127.0.0.1 (this machine "
            "only) or the address to listen on (0.0.0.0: every interface)"
        )
    if any(c.isspace() or not c.isprintable() for c in host) or len(host) > 255:
        raise argparse.ArgumentTypeError(f"{host[:60]!r} is not a host name or address")
    return host


_HELD_PIPES: list[int] = []  # see output_file


def symbol_text(text: str) -> str:
    """A market symbol (``BTC/USDT``): printed in the report's every line, so no blank, no
    space and no control or format character (an escape sequence would restyle the terminal)."""
    symbol = text.strip()
    if not symbol:
        raise argparse.ArgumentTypeError("an empty symbol; give one like BTC/USDT, or leave it out")
    if len(symbol) > 64 or any(c.isspace() or not c.isprintable() for c in symbol):
        raise argparse.ArgumentTypeError(
            f"{symbol[:64]!r} is not a market symbol; give one like BTC/USDT"
        )
    return symbol


def output_file(text: str) -> str:
    """A file to be written once a long run ends: its folder must exist now, or the run's
    result is lost at the very end."""
    import errno
    import os
    import stat

    text = path_text(text)
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a directory; name a file in it")
    try:
        mode = os.stat(text).st_mode
    except FileNotFoundError:
        mode = 0
    except OSError as exc:  # a loop of links, a name too long: the write at the end would fail
        raise argparse.ArgumentTypeError(
            f"cannot write {text} ({exc.strerror or exc}); name another file"
        ) from None
    if stat.S_ISFIFO(mode):  # a named pipe nobody reads would hold the finished run for ever
        try:
            # Held open until the process ends: closing it, the only writer so far, would end
            # the reader's input (EOF) before the run writes its rows.
            _HELD_PIPES.append(os.open(text, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise argparse.ArgumentTypeError(
                    f"cannot write {text} ({exc.strerror or exc}); name another file"
                ) from None
            raise argparse.ArgumentTypeError(
                f"{text} is a pipe nothing reads; start its reader first or name a file"
            ) from None
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"no folder {folder} to write {text} in; create it first")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write in {folder}; pick a folder you can write")
    return text


def whole_number(low: int, high: int, unit: str = "") -> Callable[[str], int]:
    """A type for a whole number in ``[low, high]`` (``unit`` names it in the error)."""
    what = f"whole number of {unit}" if unit else "whole number"
    span = f"{low}..{high}" + (f" {unit}" if unit else "")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {what}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {span}, got {text!r}")
        return value

    parse.__name__ = what.replace(" ", "_")  # argparse names the type in some messages
    return parse


def positive_number(what: str) -> Callable[[str], float]:
    """A type for a positive, finite number (``what`` names it in the error)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{what} must be a positive number, got {text!r}")
        return value

    return parse


def non_negative_number(what: str) -> Callable[[str], float]:
    """A type for a finite number >= 0 (``what`` names it in the error)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (value >= 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{what} must be >= 0, got {text!r}")
        return value

    return parse


def fraction(text: str) -> float:
    """A fraction in (0, 1] (of equity, for order sizing)."""
    value = positive_number("the fraction")(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"the fraction must be at most 1, got {text!r}")
    return value


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with the value read as JSON when it is JSON (``10`` is a number, ``[1,2]``
    a list), else kept as text: a strategy parameter."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def add_config_options(
    parser: argparse.ArgumentParser,
    *,
    config_help: str = "TOML config (default: config/default.toml)",
    profile_help: str | None = "risk profile from config/profiles (conservative, aggressive)",
    top: bool = False,
) -> None:
    """``--config`` and (unless ``profile_help`` is None) ``--profile``.

    On subcommands the default is SUPPRESS, so ``cockpit --config X engine`` is not reset to
    None by the subcommand's own default; ``top`` is the main parser, where it is None.
    """
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--config", metavar="PATH", type=path_text, default=default, help=config_help
    )
    if profile_help is not None:
        parser.add_argument("--profile", metavar="NAME", default=default, help=profile_help)
