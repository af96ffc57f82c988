"""``cockpit alerts test``: one test alert to every destination of every route, one line each.

Destinations are named as everywhere else (scheme and host, and the environment variable a URL
came from), never with a token. Exit 0 when every one was delivered, 1 when any failed, 2 for
a bad config (a variable not set included). Wired into the CLI by ``add_alerts_parser`` and
``run_alerts``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from cockpit.argtypes import add_config_options
from cockpit.errortext import shown
from engine.vocabulary import ExitCode


def add_alerts_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``alerts`` (with its ``test`` subcommand) to the CLI's subparsers."""
    alerts = subparsers.add_parser("alerts", help="alert tools ([alerts]: apprise URLs, a hook)")
    alerts.set_defaults(alerts_command=None)
    asub = alerts.add_subparsers(dest="alerts_command", metavar="SUBCOMMAND")
    test = asub.add_parser(
        "test",
        help="send one test alert to every route and print each result",
        description="Send one test alert to every destination of every [alerts] route (and "
        "the command hook) and print one line each. Exit 0 if all were delivered, 1 if any "
        "failed, 2 for a bad config. Tokens are never printed.",
    )
    add_config_options(test, profile_help=None)
    test.add_argument("--json", action="store_true", help="print one JSON document")
    return alerts


def run_alerts(args: argparse.Namespace) -> int:
    """Run ``cockpit alerts <subcommand>``; returns the exit code."""
    if getattr(args, "alerts_command", None) != "test":
        print("cockpit alerts: say which tool: cockpit alerts test", file=sys.stderr)
        return ExitCode.USAGE
    from engine.alerts import send_test
    from engine.config import ConfigError, load_config

    as_json = bool(getattr(args, "json", False))
    try:
        cfg = load_config(getattr(args, "config", None))
        if cfg.alerts is None:
            raise ConfigError(
                ["alerts: the config has no [alerts] section; see config/default.toml's example"]
            )
        results = asyncio.run(send_test(cfg))
    except ConfigError as exc:
        if as_json:
            print(json.dumps({"ok": False, "problems": exc.problems}, indent=2))
        else:
            for problem in exc.problems:
                print(shown(f"config error: {problem}"), file=sys.stderr)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        return ExitCode.FAILURE
    ok = all(r.ok for r in results)
    if as_json:
        doc = {
            "ok": ok,
            "results": [
                {"route": r.route, "destination": r.destination, "ok": r.ok, "detail": r.detail}
                for r in results
            ],
        }
        print(json.dumps(doc, indent=2))
    else:
        width = max(len(r.destination) for r in results)
        for r in results:
            status = "delivered" if r.ok else f"FAILED: {r.detail}"
            print(f"{r.route:<12} {r.destination:<{width}}  {status}")
    return ExitCode.OK if ok else ExitCode.FAILURE
