"""``cockpit venues check``: one line per venue check, never a key; exit 1 on any failure.

Wired into the CLI by ``add_venues_parser(subparsers)`` and ``run_venues(args)``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from cockpit.argtypes import add_config_options, positive_seconds
from cockpit.errortext import shown
from engine.vocabulary import ExitCode


def add_venues_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``venues`` (with its ``check`` subcommand) to the CLI's subparsers."""
    venues = subparsers.add_parser("venues", help="venue tools (ccxt exchanges)")
    venues.set_defaults(venues_command=None)
    vsub = venues.add_subparsers(dest="venues_command", metavar="SUBCOMMAND")
    check = vsub.add_parser(
        "check",
        help="connectivity, clock offset, markets and key permissions of each configured venue",
        description="For each [venues.NAME]: connectivity, clock offset, markets loaded, and "
        "whether the keys can trade and can withdraw (a warning). Keys are never printed.",
    )
    add_config_options(check, profile_help="risk profile laid over the config")
    check.add_argument("--json", action="store_true", help="print one JSON document")
    check.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="per-request timeout (default 10)",
    )
    return venues


def run_venues(args: argparse.Namespace, *, prepare: Any = None) -> int:
    """Run ``cockpit venues <subcommand>``; returns the exit code.

    ``prepare`` (tests) is applied to every exchange object before it is used.
    """
    if getattr(args, "venues_command", None) != "check":
        print("cockpit venues: say which tool: cockpit venues check", file=sys.stderr)
        return ExitCode.USAGE
    from engine.config import ConfigError, load_config

    as_json = bool(getattr(args, "json", False))
    try:
        cfg = load_config(getattr(args, "config", None), getattr(args, "profile", None))
    except ConfigError as exc:
        _problems(exc.problems, as_json, prefix="config error: ")
        return ExitCode.USAGE
    if not cfg.venues:
        _problems(
            [
                "no venues configured: add a [venues.NAME] section with exchange = '<ccxt id>' "
                "(see the README's testnet section)"
            ],
            as_json,
        )
        return ExitCode.FAILURE
    from engine.venues.venues_check import check_venues, failed

    timeout_ms = int(max(float(getattr(args, "timeout", 10.0)), 0.1) * 1000)
    try:
        lines = asyncio.run(check_venues(cfg, prepare=prepare, timeout_ms=timeout_ms))
    except KeyboardInterrupt:
        return ExitCode.FAILURE
    if as_json:
        doc = {
            "ok": not failed(lines),
            "checks": [
                {"venue": x.venue, "check": x.check, "status": x.status, "message": x.message}
                for x in lines
            ],
        }
        print(json.dumps(doc, indent=2))
    else:
        for line in lines:
            print(line.render())
    return ExitCode.FAILURE if failed(lines) else ExitCode.OK


def _problems(problems: list[str], as_json: bool, prefix: str = "") -> None:
    """Why no check ran: with ``--json`` still one JSON document on stdout (a script parses
    the output whatever happened), else one line each on stderr."""
    if as_json:
        print(json.dumps({"ok": False, "problems": problems, "checks": []}, indent=2))
    else:
        for problem in problems:
            print(shown(f"{prefix}{problem}"), file=sys.stderr)
