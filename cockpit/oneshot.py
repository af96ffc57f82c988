"""One-shot commands against a running engine, for scripts and quick checks.

    cockpit status | approvals | approve ID | reject ID | kill | release | pause S | resume S
    cockpit trace [-n N] | resolve VENUE KEY {adopt,cancel,acknowledge} --reason TEXT
    cockpit rearm SCOPE [BREAKER] | flatten SYMBOL|--all | set-limit NAME VALUE
    cockpit approval-mode STRATEGY {approve,auto}       (each of these four needs --reason)
    cockpit journal | audit       (history from the data dir's journal: see cockpit.history_cli)

Each finds the engine by ``--socket PATH``, else by ``--data-dir DIR`` (or the config's data
directory) through ``engine.control.socket_for_data_dir`` (never another data dir's engine on
the shared default socket), exactly as ``cockpit attach`` does.
``--json`` prints one JSON document on stdout whatever the outcome (errors included, as
``{"ok": false, "message": ...}``); without it, results go to stdout and problems to stderr.

Exit codes:
    0  done: the engine accepted the command, or the information was printed (``status``
       exits 0 also while a venue is HALTED: it reports state, it did not fail)
    1  the engine refused the command or it failed (the reason is printed)
    2  usage: bad arguments, or a confirmation that cannot be asked (stdin is not a terminal)
    3  the engine is not reachable: no socket, nothing listening, or no answer in time

``cockpit kill`` is the exception that must work when the engine is stuck: if the socket does
not answer within a second it sends SIGUSR1 to the engine (when the engine catches it) and
writes the KILL file, and says which of these it did; it exits 0 when either reached a
running engine. A broken ``--config`` never stops it: the problem is a warning line, the data
directory is taken from what can still be read of the file, then the default socket and
``./data`` are tried (see :func:`kill_plan`).

Reads, not writes, use the viewer role. Imports stay light (no engine core, no exchange
library, no pandas, no textual) so a status check starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

from cockpit.argtypes import (
    add_config_options,
    expanded_path_text,
    path_text,
    positive_seconds,
    whole_number,
)
from cockpit.errortext import shown
from cockpit.socket_client import EngineUnreachable, SocketClient, same_dir
from cockpit.tui.fmt import fmt_exact, fmt_price, fmt_qty
from cockpit.venue_state import ACTIONS as RESOLVE_ACTIONS
from cockpit.venue_state import (
    differences,
    halted_reason,
    kind_label,
    last_problem,
    venue_segments,
)
from engine.control import (
    default_socket_path,
    info_path,
    lock_path,
    pid_path,
    served_data_dir,
    socket_for_data_dir,
)
from engine.datadir import (
    LOCK_FILE,
    config_data_dir,
    config_data_dirs_running,
    lock_holders,
    raise_kill_file,
    read_kill_level,
    read_pid_file,
    read_small_file,
)
from engine.tomlfile import TomlFileError, read_toml, salvage_strings
from engine.vocabulary import (
    KILL_LEVELS,
    LIMIT_NAMES,
    RELEASE_PHRASE,
    RESTORED_FROM,
    TRADING_BLOCKED,
    EventKind,
    ExitCode,
    KillLevel,
    book_summary,
    kill_at_least,
    kill_file_problem,
    limit_terms,
    printable,
)

CONNECT_TIMEOUT = 1.0  # the kill fallback's deadline; also how long a check waits for hello
COMMAND_TIMEOUT = 5.0
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "default.toml"


class OneShotError(Exception):
    """Ends a one-shot command with a message and an exit code."""

    def __init__(self, message: str, code: int, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data or {}


# --------------------------------------------------------------------------- parsers


def add_oneshot_parsers(subparsers: Any) -> None:
    """Add the one-shot subcommands to the CLI's subparsers (``dest="command"``)."""

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(oneshot=name)
        p.add_argument(
            "--socket", metavar="PATH", type=path_text, help="the engine's control socket"
        )
        # SUPPRESS: a value given before the subcommand (cockpit --data-dir X status) stays.
        p.add_argument(
            "--data-dir",
            metavar="DIR",
            type=path_text,
            default=argparse.SUPPRESS,
            help="find the socket from the data dir",
        )
        add_config_options(p, config_help="TOML config naming the data dir", profile_help=None)
        p.add_argument("--json", action="store_true", help="print one JSON document")
        p.add_argument(
            "--timeout",
            type=positive_seconds,
            default=COMMAND_TIMEOUT,
            metavar="SECONDS",
            help=f"how long to wait for a reply (default {COMMAND_TIMEOUT:g})",
        )
        return p

    add("status", "show the running engine's state in a few lines")
    add("approvals", "list the orders waiting for approval")
    p = add("approve", "approve a pending order")
    p.add_argument("id", help="approval id, as listed by `cockpit approvals`")
    p.add_argument("--hash", help="the intent hash you reviewed; refused if it differs")
    p = add("reject", "reject a pending order")
    p.add_argument("id", help="approval id, as listed by `cockpit approvals`")
    p.add_argument("--reason", default="rejected by operator")
    p = add("kill", "engage the kill switch (falls back to SIGUSR1 and the KILL file)")
    # A level in any case, with the spaces or line end a script's variable carries, is that
    # level (as the engine and the KILL file read it); a word that is no level engages halt, as
    # over the socket and in the KILL file (cmd_kill says so and exits 1): never refused.
    p.add_argument(
        "--level",
        type=level_text,
        default=KillLevel.HALT.value,
        metavar="{" + ",".join(KILL_LEVELS) + "}",
        help="entries, halt (default) or flatten; a word that is none of them engages halt",
    )
    # Not required: an emergency stop never waits on its wording, a missing reason included
    # (the engine records "no reason given", with who engaged it and from where).
    p.add_argument("--reason", default="", help="why, for the audit log")
    p.add_argument(
        "--all",
        action="store_true",
        help="every engine of the --fleet FILE, in parallel; one line per engine, exit 0 "
        "only when every one confirmed",
    )
    p.add_argument(
        "--fleet",
        metavar="FILE",
        type=expanded_path_text,
        help="the fleet file listing the engines",
    )
    p = add("release", "release the kill switch")
    p.add_argument("--reason", required=True, help="why, for the audit log")
    p.add_argument("--confirm", metavar="PHRASE", help=f"the phrase {RELEASE_PHRASE}, for scripts")
    p.add_argument(
        "--override",
        action="store_true",
        help="release although the condition that engaged it still holds",
    )
    p = add("pause", "pause a strategy (it opens nothing new)")
    p.add_argument("strategy")
    p.add_argument("--reason", default="manual")
    p = add("resume", "resume a paused strategy")
    p.add_argument("strategy")
    p.add_argument("--reason", default="manual")
    p = add("trace", "print the newest decisions, orders, fills and safety events")
    p.add_argument(
        "-n",
        type=whole_number(0, 100_000),
        default=20,
        metavar="N",
        help="how many (default 20; 0: all the engine keeps, as `cockpit journal -n 0`)",
    )
    p = add(
        "resolve",
        "answer a venue reconciliation difference (trading on the venue stays HALTED until "
        "every blocking one is answered)",
    )
    p.add_argument("venue", help="the venue, as `cockpit status` names it")
    p.add_argument("key", help="the difference's key, as `cockpit status` lists it")
    p.add_argument(
        "action",
        choices=RESOLVE_ACTIONS,
        help="unknown order or order state: adopt|cancel; fill: adopt|acknowledge; "
        "balance: acknowledge",
    )
    p.add_argument("--reason", required=True, help="why, for the journal and the audit log")
    p = add("rearm", "re-arm tripped circuit breakers (a strategy one paused resumes with it)")
    p.add_argument(
        "scope",
        help="whose breakers: a strategy id, global, or symbol:SYMBOL (as `cockpit status` "
        "lists them after each breaker's name)",
    )
    p.add_argument(
        "breaker", nargs="?", help="one breaker by name (default: every tripped one of the scope)"
    )
    p.add_argument("--reason", required=True, help="why, for the audit log")
    p = add("flatten", "close a position (or all) with market orders, through the same checks")
    p.add_argument("symbol", nargs="?", help="the symbol to close, e.g. BTC/USDT")
    p.add_argument("--all", action="store_true", help="close every position")
    p.add_argument("--reason", required=True, help="why, for the audit log")
    p = add("set-limit", "change a risk limit at run time (before -> after lands in the audit log)")
    p.add_argument("name", help="the limit: " + ", ".join(LIMIT_NAMES))
    p.add_argument("value", type=finite_number, help="the new value, in the limit's own unit")
    p.add_argument("--reason", required=True, help="why, for the audit log")
    p = add(
        "approval-mode",
        "switch a strategy between approve (each order waits for a person) and auto; auto "
        "needs enough approved trades first (safety.approval.auto_after_approved)",
    )
    p.add_argument("strategy")
    p.add_argument("mode", choices=APPROVAL_MODES)
    p.add_argument("--reason", required=True, help="why, for the audit log")


APPROVAL_MODES = ("approve", "auto")


def level_text(text: str) -> str:
    """A kill level as typed: ``" Flatten\\n"`` is flatten (argparse then checks the word)."""
    return text.strip().lower()


def finite_number(text: str) -> float:
    """A limit's new value: any finite number (the engine checks its range). Not Python's
    digit grouping: ``1_5`` was read as 15."""
    try:
        if "_" in text:
            raise ValueError(text)
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


# --------------------------------------------------------------------------- running


def run_oneshot(args: argparse.Namespace) -> int:
    """Run the one-shot command named by ``args.oneshot``; returns the exit code."""
    try:
        return asyncio.run(run_oneshot_async(args))
    except KeyboardInterrupt:
        return ExitCode.FAILURE


async def run_oneshot_async(args: argparse.Namespace) -> int:
    """The same, inside a running event loop."""
    handler = _COMMANDS[args.oneshot]
    try:
        return await handler(args)
    except OneShotError as exc:
        if getattr(args, "json", False):
            _print_json({"ok": False, "message": str(exc), **exc.data})
        else:
            print(shown(f"cockpit {args.oneshot}: {exc}"), file=sys.stderr)
        return exc.code


def resolve_socket(args: argparse.Namespace) -> Path:
    """--socket, else the default socket for --data-dir (or the config's data dir)."""
    if getattr(args, "socket", None):
        sock = Path(args.socket)
        given, where = _paired_data_dir(args)
        other = _serves_another(sock, given)
        if other is not None:
            # Two engines named at once: a release, an approve or a flatten sent to the one
            # the person did not mean is refused, not guessed.
            raise OneShotError(
                f"--socket {sock} serves the data dir {other}, not {where}: give the one you mean",
                ExitCode.USAGE,
            )
        return sock
    data_dir = resolve_data_dir(args)
    if getattr(args, "data_dir", None) or getattr(args, "config", None):
        # A data dir the person named: never another engine's through the shared default.
        return socket_for_data_dir(data_dir)
    return default_socket_path(data_dir)  # no hint given: the engine on the default socket


def _paired_data_dir(args: argparse.Namespace) -> tuple[Path | None, str]:
    """The data dir named beside --socket (--data-dir, or --config's) and how it was named."""
    given = getattr(args, "data_dir", None)
    if given:
        return Path(given), f"--data-dir {given}"
    if getattr(args, "config", None):
        # --config names the data dir as --data-dir does ("TOML config naming the data
        # dir"): a release sent to the socket's other engine was as wrong.
        # (A config it cannot read names nothing: the socket alone, as before.)
        with contextlib.suppress(OneShotError):
            found = resolve_data_dir(args)
            return found, f"the data dir of --config {args.config} ({found})"
    return None, ""


def resolve_data_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "data_dir", None):
        return Path(args.data_dir)
    value = _config_value(args, ("engine", "data_dir"), "data")
    if not isinstance(value, str) or not value:
        raise OneShotError(
            f"config {args.config}: engine.data_dir must be a directory name, got {value!r}",
            ExitCode.USAGE,
        )
    return config_data_dir(value, getattr(args, "config", None))


def _config_value(args: argparse.Namespace, keys: tuple[str, ...], default: Any) -> Any:
    """One value from the TOML config, read without validating it (that needs the core)."""
    given = getattr(args, "config", None)
    try:
        data: Any = read_toml(Path(given) if given else DEFAULT_CONFIG)
    except TomlFileError as exc:
        if given:
            raise OneShotError(f"cannot read config {exc}", ExitCode.USAGE) from None
        return default
    return _lookup(data, keys, default)


def _lookup(data: Any, keys: tuple[str, ...], default: Any) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


async def _connect(args: argparse.Namespace, role: str) -> SocketClient:
    path = resolve_socket(args)
    client = SocketClient(
        path,
        role=role,
        name=f"cli {args.oneshot}",
        reconnect=False,
        subscribe=False,
        connect_timeout=CONNECT_TIMEOUT if args.oneshot == "kill" else 2 * CONNECT_TIMEOUT,
        command_timeout=args.timeout,
        ping_interval=3600.0,
    )
    try:
        await client.connect()
    except EngineUnreachable as exc:
        raise OneShotError(
            f"engine not reachable: {exc}; is `cockpit engine` running? "
            "(find it with --socket PATH or --data-dir DIR)",
            ExitCode.UNREACHABLE,
            {"socket": str(path)},
        ) from None
    welcome = getattr(client, "welcome", None)  # (a stand-in client may have none)
    if getattr(args, "socket", None) and isinstance(welcome, dict):
        # A forwarded socket has no info file to tell by: the engine's welcome names its data
        # dir (a release through `ssh -L` reached another engine than --data-dir's).
        given, where = _paired_data_dir(args)
        served = welcome.get("data_dir")
        other = _names_another(served, given) if isinstance(served, str) and served else None
        if other is not None:
            await client.close()
            raise OneShotError(
                f"--socket {path} serves the data dir {other}, not {where}: give the one you mean",
                ExitCode.USAGE,
            )
    return client


async def _snapshot(args: argparse.Namespace, trace: int = 0) -> dict[str, Any]:
    client = await _connect(args, "viewer")
    try:
        snap = await client.snapshot(trace=trace, curve=0)
    except EngineUnreachable as exc:
        raise OneShotError(f"engine not reachable: {exc}", ExitCode.UNREACHABLE) from None
    finally:
        await client.close()
    if not isinstance(snap, dict):
        raise OneShotError(
            f"the engine sent a {type(snap).__name__} instead of a snapshot", ExitCode.FAILURE
        )
    if "connection" in snap:
        why = _dict(snap["connection"]).get("message", "connection lost")
        raise OneShotError(f"engine not reachable: {why}", ExitCode.UNREACHABLE)
    return snap


async def _command(args: argparse.Namespace, name: str, cargs: dict[str, Any]) -> int:
    client = await _connect(args, "operator")
    try:
        reply = await client.command(name, cargs)
    finally:
        await client.close()
    return _report(args, reply)


def _report(args: argparse.Namespace, reply: dict[str, Any]) -> int:
    code = ExitCode.OK if reply.get("ok") else ExitCode.FAILURE
    if reply.get("timeout"):
        code = ExitCode.UNREACHABLE
    if args.json:
        _print_json(reply)
    elif code == ExitCode.OK:
        print(reply.get("message", "ok"))
    else:
        print(shown(f"cockpit {args.oneshot}: {reply.get('message', 'failed')}"), file=sys.stderr)
    return code


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=1, default=str))


# --------------------------------------------------------------------------- commands


async def cmd_status(args: argparse.Namespace) -> int:
    """Printed means done (exit 0), a HALTED venue included: the lines say what waits."""
    snap = await _snapshot(args)
    if args.json:
        _print_json(snap)
    else:
        print(format_status(snap, locate=_locate(args)))
    return ExitCode.OK


def _locate(args: argparse.Namespace) -> str:
    """The options that found this engine, repeated in the commands status suggests."""
    if getattr(args, "socket", None):
        return f" --socket {shlex.quote(str(args.socket))}"
    if getattr(args, "data_dir", None):
        return f" --data-dir {shlex.quote(str(args.data_dir))}"
    if getattr(args, "config", None):
        return f" --config {shlex.quote(str(args.config))}"
    return ""


async def cmd_resolve(args: argparse.Namespace) -> int:
    reason = args.reason.strip()
    if not reason:
        raise OneShotError("a reason is required (--reason TEXT)", ExitCode.USAGE)
    return await _command(
        args,
        "resolve",
        {"venue": args.venue, "key": args.key, "action": args.action, "reason": reason},
    )


async def cmd_approvals(args: argparse.Namespace) -> int:
    snap = await _snapshot(args)
    pending = snap.get("approvals", [])
    if args.json:
        _print_json(pending)
    else:
        print(format_approvals(pending, snap.get("now", 0)))
    return ExitCode.OK


TRACE_ALL = 100_000  # the most a snapshot carries (engine.control.SnapshotRequest)


async def cmd_trace(args: argparse.Namespace) -> int:
    # -n 0 is "all", as it is for `cockpit journal`: it printed nothing and exited 0.
    n = args.n or TRACE_ALL
    snap = await _snapshot(args, trace=n)
    trace = snap.get("trace")
    items = trace[-n:] if isinstance(trace, list) else []
    if args.json:
        _print_json(items)
    else:
        for item in items:
            print(format_trace_line(item))
    return ExitCode.OK


async def cmd_approve(args: argparse.Namespace) -> int:
    cargs: dict[str, Any] = {"id": args.id}
    if args.hash is not None:
        # `--hash "$HASH"` with $HASH empty asked for a bound approval: never send it unbound.
        if not args.hash.strip():
            raise OneShotError(
                "--hash is empty: give the hash you reviewed (`cockpit approvals --json`), "
                "or leave --hash out",
                ExitCode.USAGE,
            )
        cargs["hash"] = args.hash
    return await _command(args, "approve", cargs)


async def cmd_reject(args: argparse.Namespace) -> int:
    return await _command(args, "reject", {"id": args.id, "reason": args.reason})


async def cmd_pause(args: argparse.Namespace) -> int:
    return await _command(args, "pause", {"strategy": args.strategy, "reason": args.reason})


async def cmd_resume(args: argparse.Namespace) -> int:
    return await _command(args, "resume", {"strategy": args.strategy, "reason": args.reason})


def _reason(args: argparse.Namespace) -> str:
    reason = str(args.reason).strip()
    if not reason:
        raise OneShotError("a reason is required (--reason TEXT)", ExitCode.USAGE)
    return reason


async def cmd_rearm(args: argparse.Namespace) -> int:
    cargs: dict[str, Any] = {"scope": args.scope, "reason": _reason(args)}
    if args.breaker:
        cargs["breaker"] = args.breaker
    return await _command(args, "rearm", cargs)


async def cmd_flatten(args: argparse.Namespace) -> int:
    if (args.symbol is None) == (not args.all):
        raise OneShotError(
            "say what to flatten: one SYMBOL, or --all for every position (not both)",
            ExitCode.USAGE,
        )
    return await _command(args, "flatten", {"symbol": args.symbol, "reason": _reason(args)})


async def cmd_set_limit(args: argparse.Namespace) -> int:
    cargs = {"name": args.name, "value": args.value, "reason": _reason(args)}
    return await _command(args, "set_limit", cargs)


async def cmd_approval_mode(args: argparse.Namespace) -> int:
    cargs = {"strategy": args.strategy, "mode": args.mode, "reason": _reason(args)}
    return await _command(args, "set_approval_mode", cargs)


async def cmd_release(args: argparse.Namespace) -> int:
    confirm = args.confirm
    if confirm is None and not _stdin_is_tty():
        raise OneShotError(
            f"release needs a typed confirmation; in a script pass --confirm {RELEASE_PHRASE}",
            ExitCode.USAGE,
        )
    client = await _connect(args, "operator")
    seen: dict[str, Any] = {}
    try:
        if confirm is None:
            snap = await client.snapshot(trace=0, curve=0)
            kill = _dict(snap.get("kill_switch"))
            if not kill.get("engaged"):
                raise OneShotError(
                    "the kill switch is not engaged; nothing to release", ExitCode.FAILURE
                )
            print(
                f"kill switch engaged at {kill.get('level')} by {kill.get('by')}: "
                f"{kill.get('reason')}\nReleasing lets strategies trade again.",
                file=sys.stderr,
            )
            try:
                confirm = await asyncio.to_thread(input, f"Type {RELEASE_PHRASE} to release it: ")
            except EOFError:
                raise OneShotError(
                    "no confirmation typed; nothing changed", ExitCode.USAGE
                ) from None
            if confirm.strip() != RELEASE_PHRASE:
                raise OneShotError(
                    "the confirmation did not match; nothing changed", ExitCode.FAILURE
                )
            confirm = RELEASE_PHRASE
            # The engagement the person read: if the switch changes while they type (escalated,
            # engaged again by someone or by a limit), the engine refuses rather than lift a
            # kill they never saw, as the cockpit's release dialog does.
            seen = {"seen": {key: kill.get(key) for key in ("level", "by", "reason", "ts")}}
        reply = await client.command(
            "release",
            {"reason": args.reason, "confirm": confirm, "override": args.override, **seen},
        )
    finally:
        await client.close()
    return _report(args, reply)


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


@dataclass
class KillPlan:
    """Where `cockpit kill` looks for the engine, in order, and what it learnt on the way."""

    sockets: list[tuple[Path, str]]  # (socket, how it was found)
    data_dir: Path | None  # for the KILL file when the engine's info file does not name it
    kill_name: str
    warnings: list[str] = field(default_factory=list)
    # A data dir the person named (--data-dir, or a readable --config's engine.data_dir): a
    # socket that serves another one is not sent the kill.
    paired: bool = False


def kill_plan(args: argparse.Namespace) -> KillPlan:
    """Every way to find the engine that the arguments allow; a broken config only adds a
    warning: what can still be read from it is used, then the defaults."""
    warnings: list[str] = []
    given = getattr(args, "config", None)
    config_dir: Any = None
    kill_name: Any = None
    broken = False
    if given:
        try:
            data = read_toml(Path(given))
        except TomlFileError as exc:
            broken = True
            warnings.append(f"config problem: {exc}")
            found = salvage_strings(given)
            config_dir = found.get(("engine", "data_dir"))
            kill_name = found.get(("safety", "kill_switch", "kill_file"))
            how_config = f"engine.data_dir read from the broken config {given}"
        else:
            config_dir = _lookup(data, ("engine", "data_dir"), None)
            kill_name = _lookup(data, ("safety", "kill_switch", "kill_file"), None)
            how_config = f"the config's engine.data_dir ({given})"
            usable = isinstance(config_dir, str) and config_dir and "\x00" not in config_dir
            if config_dir is not None and not usable:
                broken = True
                warnings.append(f"config problem: engine.data_dir is {config_dir!r}, not a path")
                config_dir = None
    else:
        config_dir, how_config = "data", "the default data dir"
    why = kill_file_problem(kill_name) if isinstance(kill_name, str) else "is not a file name"
    if why:
        # No engine ran with such a name (the config is refused): the level goes to KILL, never
        # over the journal a `kill_file = "journal.sqlite"` named.
        if kill_name is not None:
            warnings.append(
                f"config problem: kill_file {kill_name!r}: {why.split(';')[0]}; using KILL"
            )
        kill_name = "KILL"
    dirs: list[tuple[Path, str]] = []
    if getattr(args, "data_dir", None):
        dirs.append((Path(args.data_dir), "--data-dir"))
    else:
        if config_dir:
            dirs.append((config_data_dir(config_dir, given), how_config))
            chosen = dirs[-1][0]
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                others = [
                    d
                    for d in config_data_dirs_running(config_dir, given)
                    if d.resolve() != chosen.resolve()
                ]
                if others:  # the person may have meant another: never silently
                    warnings.append(
                        f"engines run on {chosen.absolute()} and on "
                        f"{', '.join(str(d.absolute()) for d in others)}, each the config's "
                        f"engine.data_dir {config_dir!r} from some folder; this kill goes to "
                        f"{chosen.absolute()}; to stop the other too: cockpit kill --data-dir "
                        f"{others[0].absolute()}"
                    )
        if broken or (given and not config_dir):
            dirs.append((Path("data"), "the default data dir ./data"))
    sockets: list[tuple[Path, str]] = []
    # --config beside --socket names a data dir as --data-dir does: the kill went to the
    # engine the socket served for another one, said done, and the config's traded on.
    paired = bool(getattr(args, "data_dir", None)) or bool(given and not broken and config_dir)
    if getattr(args, "socket", None):
        sockets.append((Path(args.socket), "--socket"))
    if not getattr(args, "socket", None) or paired:
        # With both: the data dir's own ways too, for a --socket that serves another one.
        for ddir, how in dirs:
            xdg = default_socket_path(ddir)
            named = how == "--data-dir" or (given and not broken)
            if xdg != ddir / "cockpit.sock":
                # A data dir known for sure is never reached through another engine's socket;
                # a guess (no config, a broken one) still tries the default socket.
                if not named or socket_for_data_dir(ddir) == xdg:
                    sockets.append((xdg, f"the default socket ($XDG_RUNTIME_DIR), {how}"))
                else:  # another engine's: killing it would stop the wrong one
                    warnings.append(f"skipped {xdg}: it serves another data dir, not {ddir}")
            elif (runtime := socket_for_data_dir(ddir)) != xdg:
                # No $XDG_RUNTIME_DIR here (cron): the engine's socket in /run/user/UID.
                sockets.append(
                    (runtime, f"the runtime dir logind made (no $XDG_RUNTIME_DIR here), {how}")
                )
            sockets.append((ddir / "cockpit.sock", how))
    unique: dict[Path, str] = {}
    for path, how in sockets:
        unique.setdefault(path, how)
    data_dir = dirs[0][0] if dirs and (paired or not args.socket) else None
    return KillPlan(list(unique.items()), data_dir, kill_name, warnings, paired)


async def cmd_kill(args: argparse.Namespace) -> int:
    """Through the first socket that answers within a second; otherwise SIGUSR1 and the KILL
    file. A broken config never stops a kill: it is a warning, and every other way is tried.
    With ``--all --fleet FILE``: every engine of the fleet (see ``cockpit.fleet``).

    A level that is no level (``--level flaten`` typed in a hurry) is never a refusal: halt is
    engaged, and the command says so and exits 1 (not the level asked: positions stay open)."""
    asked = args.level
    if asked in KILL_LEVELS:
        return await _kill(args)
    args.level = KillLevel.HALT.value
    args.level_asked = asked  # --json says it too: "ok" false, with the word asked
    code = await _kill(args)
    print(
        shown(
            f"cockpit kill: {asked!r} is no kill level ({', '.join(KILL_LEVELS)}): halt was "
            "asked instead; run it again with the level you meant"
        ),
        file=sys.stderr,
    )
    return ExitCode.FAILURE if code == ExitCode.OK else code


async def _kill(args: argparse.Namespace) -> int:
    if args.all or args.fleet is not None:
        if not (args.all and args.fleet is not None):
            raise OneShotError(
                "a fleet-wide kill needs both --all and --fleet FILE (the engines to kill)",
                ExitCode.USAGE,
            )
        if args.socket or getattr(args, "data_dir", None) or getattr(args, "config", None):
            raise OneShotError(
                "--all --fleet FILE kills the engines the file lists; leave out "
                "--socket, --data-dir and --config",
                ExitCode.USAGE,
            )
        from cockpit.fleet import kill_fleet

        return await kill_fleet(args)
    plan = kill_plan(args)
    if not args.json:
        for warning in plan.warnings:
            print(shown(f"cockpit kill: warning: {warning}"), file=sys.stderr)
    code, result = await kill_one(args, plan)
    if result.get("path") == "fallback":
        if args.json:
            _print_json(kill_json(args, result))
        else:
            print(shown(result["message"]), file=sys.stdout if result["ok"] else sys.stderr)
        return code
    if result.get("ok") and not args.json:
        result["message"] = (
            f"{result.get('message')} (through the control socket {result['socket']}, found by "
            f"{result['found_by']})"
        )
    return _report(args, kill_json(args, result) if args.json else result)


def kill_json(args: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any]:
    """A kill's --json answer; for a --level that is no level, ``ok`` false and the word asked
    (halt was engaged instead): a script reading ``ok`` took the level it asked as done."""
    asked = getattr(args, "level_asked", None)
    if asked is None:
        return data
    return {**data, "ok": False, "level": KillLevel.HALT.value, "level_asked": asked}


async def kill_one(
    args: argparse.Namespace, plan: KillPlan | None = None
) -> tuple[int, dict[str, Any]]:
    """The kill switch on one engine, printing nothing: the exit code and what happened
    (``path`` "socket": the engine's reply; "fallback": SIGUSR1 and the KILL file)."""
    if plan is None:
        plan = kill_plan(args)
    problems: list[str] = []
    stuck: tuple[Path, str, int | None] | None = None  # a socket that exists but did not answer
    usable: list[Path] = []
    for path, how in plan.sockets:
        other = _serves_another(path, plan.data_dir) if plan.paired else None
        if other is not None:
            # Not the engine asked for: killing it would leave that one trading, said done.
            problems.append(f"{path} serves {other}, not {plan.data_dir}: not sent there")
            continue
        usable.append(path)
        client = SocketClient(
            path,
            role="operator",
            name="cli kill",
            reconnect=False,
            subscribe=False,
            connect_timeout=CONNECT_TIMEOUT,
            command_timeout=args.timeout,
            ping_interval=3600.0,
        )
        try:
            await client.connect()
        except EngineUnreachable as exc:
            problems.append(str(exc))
            if stuck is None and (client.server_pid is not None or _exists(path)):
                stuck = (path, str(exc), client.server_pid)
            continue
        welcome = getattr(client, "welcome", None)
        served = welcome.get("data_dir") if isinstance(welcome, dict) else None
        if plan.paired and isinstance(served, str) and served:
            other = _names_another(served, plan.data_dir)
            if other is not None:
                # No info file here (a forwarded socket): the engine says which data dir it
                # serves. Not the one asked for: the kill would stop it and leave that trading.
                await client.close()
                problems.append(f"{path} serves {other}, not {plan.data_dir}: not sent there")
                continue
        try:
            reply = await client.command("kill", {"level": args.level, "reason": args.reason})
        finally:
            await client.close()
        if reply.get("ok") or not reply.get("timeout"):
            reply.update(
                path="socket",
                socket=str(path),
                found_by=how,
                warnings=plan.warnings,
                instance=client.instance,  # which engine run answered (a fleet's twins)
            )
            return (ExitCode.OK if reply.get("ok") else ExitCode.FAILURE), reply
        problem = reply.get("message", "no reply")
        problems.append(problem)
        if stuck is None:
            stuck = (path, problem, client.server_pid)
    if stuck is None:
        sock = usable[0] if usable else Path("cockpit.sock")
        if not usable and plan.data_dir is not None:
            sock = plan.data_dir / "cockpit.sock"  # (its info file, if any, is the data dir's)
        return _kill_fallback(args, sock, "; ".join(problems) or "no socket", None, plan)
    sock, problem, pid = stuck
    return _kill_fallback(args, sock, problem, pid, plan)


def _kill_fallback(
    args: argparse.Namespace, sock: Path, problem: str, peer_pid: int | None, plan: KillPlan
) -> tuple[int, dict[str, Any]]:
    info = _read_info(sock)
    not_engine = ""
    if peer_pid is not None and not _is_the_engine(peer_pid, sock, info, plan):
        # SO_PEERCRED names whatever listens at the path: the local end of `ssh -L` (or another
        # forwarder) is the ssh process, not the engine, and a kill must never read as
        # delivered because that process caught SIGUSR1.
        not_engine = (
            f"pid {peer_pid} listens at {sock} but is not the engine that wrote "
            f"{pid_path(sock).name} there (a forwarded socket?): not signalled"
        )
        peer_pid = None
    pid = peer_pid  # SO_PEERCRED: the listener itself, even when its loop is stuck
    if pid is None and _exists(sock):  # the files are removed on a clean stop
        pid = _read_pid(pid_path(sock))
        if pid is None and isinstance(info.get("pid"), int):
            pid = info["pid"]
    kill_file = Path(info["kill_file"]) if isinstance(info.get("kill_file"), str) else None
    if kill_file is None and plan.data_dir is not None:
        kill_file = plan.data_dir / plan.kill_name
    if pid is None and plan.data_dir is not None:
        # The engine holding the data directory names itself in its lock file, wherever its
        # socket is.
        pid = _read_pid(plan.data_dir / LOCK_FILE)
    stale, switched = "", False
    if pid is not None and pid != peer_pid:
        # A pid from a file: a crashed engine left it there, and the OS may have given it to
        # another process since (one that catches SIGUSR1 would read as the kill delivered).
        # Signal it only while it holds the engine's lock on the data directory (or, with no
        # data dir known, the socket's: a crash leaves that file unheld).
        where = info.get("data_dir") if isinstance(info.get("data_dir"), str) else None
        data_dir = Path(where) if where else plan.data_dir
        if _holds_locks(pid, sock, data_dir) is False:
            lock = data_dir if data_dir is not None else lock_path(sock)
            stale = f"pid {pid} does not hold {lock}: the engine that wrote it is gone"
            pid = None
            # A crashed engine's pid beside its old socket must not hide the engine holding
            # the data directory now (listening elsewhere): its lock names it.
            ddir = plan.data_dir
            owner = _read_pid(ddir / LOCK_FILE) if ddir is not None else None
            if ddir is not None and owner is not None and owner in (lock_holders(ddir) or ()):
                pid, stale = owner, ""
                switched = True  # the info file is the crashed run's: its KILL file may differ
    if (switched or not isinstance(info.get("kill_file"), str)) and pid is not None:
        # The engine found by its data dir's lock listens elsewhere (its own --socket): the
        # KILL file it reads is the one its info file names (a config's kill_file = "STOP":
        # writing d/KILL carried no level, and nothing an engine started later reads).
        theirs = _engine_info(pid, plan.data_dir)
        if isinstance(theirs.get("kill_file"), str):
            kill_file = Path(theirs["kill_file"])
    result: dict[str, Any] = {
        "path": "fallback",
        "socket": str(sock),
        "socket_problem": problem,
        "warnings": plan.warnings,
    }
    done: list[str] = []
    # The file first: the SIGUSR1 handler reads the level from it.
    if kill_file is None:
        result["kill_file"] = {"written": False, "detail": "unknown data dir (pass --data-dir)"}
    else:
        try:
            # Never lower what the file already demands, never replace what is not a file.
            held, detail = raise_kill_file(kill_file, args.level)
        except (OSError, ValueError) as exc:  # ValueError: a NUL in a path from a bad config
            held, detail = False, str(exc)
        result["kill_file"] = {"path": str(kill_file), "written": held, "detail": detail}
        if held:
            done.append(detail)
    result["signal"] = _send_sigusr1(pid, info)
    if stale:
        result["signal"]["detail"] = stale
    elif not_engine and pid is None:
        result["signal"]["detail"] = not_engine
    if result["signal"]["sent"]:
        done.insert(0, f"sent SIGUSR1 to pid {pid}")
    engine_seen = pid is not None and result["signal"].get("alive", False)
    ok = bool(result["signal"]["sent"]) or (engine_seen and result["kill_file"]["written"])
    # SIGUSR1 carries no level: the engine reads it from the KILL file, else engages halt. A
    # flatten whose file could not be written is a halt (reading it as done left every
    # position open), and a halt is an entries where a link by that name says entries.
    delivered = KillLevel.HALT
    if kill_file is not None and not result["kill_file"]["written"]:
        with contextlib.suppress(OSError, ValueError):
            delivered = KillLevel(read_kill_level(kill_file) or KillLevel.HALT)
    short = ok and not result["kill_file"]["written"] and not kill_at_least(delivered, args.level)
    result["ok"] = ok and not short
    if short:
        why = result["kill_file"].get("detail", "")
        result["message"] = (
            f"the control socket did not answer ({problem}); fell back: sent SIGUSR1 to pid "
            f"{pid}, so the engine engages {delivered}, not {args.level}: the KILL file that "
            f"carries the level was not written ({why}). Raise it once the engine answers"
        )
        code = ExitCode.FAILURE
    elif ok:
        how = " and ".join(done)
        note = f"; remove {kill_file} before releasing" if result["kill_file"]["written"] else ""
        result["message"] = (
            f"the control socket did not answer ({problem}); fell back: {how}. The engine "
            f"engages the kill switch when its event loop runs{note}"
        )
        code = ExitCode.OK
    elif result["kill_file"].get("written"):
        result["message"] = (
            f"no running engine found ({problem}); wrote {kill_file} (level {args.level}): "
            "an engine using that data dir engages the kill switch when it starts or polls"
        )
        code = ExitCode.UNREACHABLE
    else:
        why = result["kill_file"].get("detail", "")
        result["message"] = (
            f"engine not reachable ({problem}) and no fallback worked: "
            f"{result['signal']['detail']}; KILL file not written ({why})"
        )
        code = ExitCode.UNREACHABLE
    return code, result


def _is_the_engine(pid: int, sock: Path, info: dict[str, Any], plan: KillPlan) -> bool:
    """Whether ``pid``, the process listening at ``sock``, is the engine: the one that wrote its
    pid beside the socket, one holding the socket's lock file (in another pid namespace its
    files name the pid it has there; the kernel's /proc/locks names ours), one holding that
    file open once a tmp cleaner removed it with the pid files, or one holding the data
    directory's lock. A forwarder (the local end of `ssh -L`) is none of these."""
    where = info.get("data_dir") if isinstance(info.get("data_dir"), str) else None
    holds = _holds_locks(pid, sock, Path(where) if where else plan.data_dir)
    if holds is not None:
        return holds
    # The locks cannot tell (no /proc/locks): the pid the engine wrote beside its socket. (A
    # pid file alone is no proof where they can: a crashed engine's outlives it, and the
    # process now listening there, a forwarder, may have been given that pid.)
    return pid in (_read_pid(pid_path(sock)), info.get("pid"))


def _holds_locks(pid: int, sock: Path, data_dir: Path | None) -> bool | None:
    """Whether ``pid`` holds what the engine holds for as long as it runs: the flock on the
    socket's lock file (or that file open, once a tmp cleaner removed it) or the data
    directory's lock. None: /proc/locks cannot tell."""
    sock_holders = lock_holders(lock_path(sock))
    if sock_holders is not None and pid in sock_holders:
        return True
    if _holds_open(pid, lock_path(sock)):
        return True
    dir_holders = lock_holders(data_dir) if data_dir is not None else None
    if dir_holders is not None and pid in dir_holders:
        return True
    return None if sock_holders is None and dir_holders is None else False


def _engine_info(pid: int, data_dir: Path | None) -> dict[str, Any]:
    """The info file of the socket engine ``pid`` serves, found by the socket's lock file it
    holds open (``<socket>.lock``), when that file names ``data_dir`` ({}: none found)."""
    if data_dir is None:
        return {}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return {}
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}").removesuffix(" (deleted)")
        except OSError:
            continue
        if not target.endswith(".lock") or Path(target).name == LOCK_FILE:
            continue
        info = _read_info(Path(target.removesuffix(".lock")))
        where = info.get("data_dir")
        with contextlib.suppress(OSError, ValueError):
            if isinstance(where, str) and os.path.samefile(where, data_dir):
                return info
    return {}


def _holds_open(pid: int, path: Path) -> bool:
    """Whether ``pid`` (ours) has ``path`` open, also after it was removed ("(deleted)").
    The kernel names the file by its real path: a socket given through a symlinked directory
    (/var/run, a link to the runtime dir) is compared by its real path too."""
    wants = {str(path.absolute()), os.path.realpath(path)}
    wants |= {f"{w} (deleted)" for w in wants}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in wants:
                return True
    return False


def _serves_another(sock: Path, data_dir: Path | None) -> str | None:
    """The data directory the engine at ``sock`` names in its info file when it is not
    ``data_dir`` (None: the same one, or it cannot tell)."""
    where = served_data_dir(sock) if data_dir is not None else None
    return _names_another(where, data_dir)


def _names_another(where: str | None, data_dir: Path | None) -> str | None:
    """``where`` (a data dir an engine serves) when it is not ``data_dir``, else None."""
    if where is None or data_dir is None or same_dir(where, data_dir):
        return None
    return where


def _exists(path: Path) -> bool:
    """Path.exists() for paths from a config that may be nonsense (NUL, too long)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _read_info(sock: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_small_file(info_path(sock)) or b"")
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_pid(path: Path) -> int | None:
    return read_pid_file(path)


def _send_sigusr1(pid: int | None, info: dict[str, Any]) -> dict[str, Any]:
    """Signal only a process of ours that catches SIGUSR1: its default action is to terminate."""
    if pid is None:
        return {"sent": False, "detail": "no engine pid known"}
    status = _proc_status(pid)
    # /proc is there and this pid is not, or is a zombie: the engine is gone (kill -9).
    if status == {} or (status is not None and status.get("State", "").startswith(("Z", "X"))):
        return {"sent": False, "pid": pid, "detail": f"pid {pid} is not running"}
    if status is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return {"sent": False, "pid": pid, "detail": f"pid {pid} is not running"}
        except PermissionError:
            return {"sent": False, "pid": pid, "detail": f"pid {pid} is not yours"}
        catches = bool(info.get("sigusr1"))
    else:
        uid = int(status.get("Uid", "-1").split()[1]) if "Uid" in status else -1
        if os.geteuid() != 0 and uid != os.geteuid():
            return {"sent": False, "pid": pid, "alive": True, "detail": f"pid {pid} is not yours"}
        mask = int(status.get("SigCgt", "0").strip() or "0", 16)
        catches = bool(mask >> (signal.SIGUSR1 - 1) & 1)
    if not catches:
        return {
            "sent": False,
            "pid": pid,
            "alive": True,
            "detail": f"pid {pid} does not handle SIGUSR1 (it would terminate); not sent",
        }
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        return {"sent": False, "pid": pid, "detail": f"pid {pid} is not running"}
    except PermissionError:
        return {
            "sent": False,
            "pid": pid,
            "alive": True,
            "detail": f"no permission to signal {pid}",
        }
    return {"sent": True, "pid": pid, "alive": True, "detail": "sent"}


def _proc_status(pid: int) -> dict[str, str] | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return {} if Path("/proc/self/status").exists() else None
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


# --------------------------------------------------------------------------- formatting


# Everything below reads a snapshot from another process (a buggy or hostile engine, another
# version): any field may be missing or of any type, and printing it must still work.


def _dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _dicts(x: Any) -> list[dict[str, Any]]:
    return [i for i in x if isinstance(i, dict)] if isinstance(x, list) else []


def _is_num(x: object) -> TypeGuard[int | float]:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _clock(ns: Any) -> str:
    if not _is_num(ns) or ns <= 0:
        return "-"
    try:
        return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
    except (OverflowError, ValueError, OSError):
        return "-"


def _num(x: Any, digits: int = 2) -> str:
    return f"{x:,.{digits}f}" if _is_num(x) else str(x)


def _figure(x: Any) -> str:
    """A computed amount (a fee, a PnL) to 10 significant digits: 1.9999839698, not the
    float noise 1.9999839698000001."""
    return f"{x:.10g}" if _is_num(x) else str(x)


def format_heartbeat(hb: dict[str, Any], now_ns: int | None = None) -> str:
    """The outbound heartbeat and systemd's watchdog in a few words ("" when neither runs)."""
    if not hb:
        return ""
    systemd = f", systemd {hb['systemd']}" if hb.get("systemd") else ""
    if hb.get("paused"):
        return f"PAUSED: {hb['paused']} (the monitor will raise the alarm){systemd}"
    if not hb.get("target"):
        return f"systemd {hb.get('systemd')}"
    pings, failures = hb.get("pings", 0), hb.get("failures", 0)
    last = hb.get("last_ok_ts") or 0
    now = time.time_ns() if now_ns is None else now_ns
    ago = f", last answered {max(0, now - last) / 1e9:.0f}s ago" if last else ""
    if hb.get("state") == "failing":
        return (
            f"FAILING to {hb['target']}: {hb.get('last_error')} ({failures} failed{ago}){systemd}"
        )
    return f"{hb.get('state')} to {hb['target']} ({pings} pings{ago}){systemd}"


def format_recording(rec: dict[str, Any]) -> str:
    """The market recorder in a few words: what it wrote, where, and what it lost."""
    size = (rec.get("bytes") or 0) / 1e6
    text = f"{rec.get('records', 0):,} records ({size:.1f} MB) under {rec.get('path', '?')}"
    if rec.get("error"):
        text += f"; FAILED: {rec['error']}"
    if rec.get("dropped"):
        text += f"; {rec['dropped']:,} DROPPED"
    return text


def format_books(books: dict[str, Any]) -> str:
    """Acting decisions stored with their L2 book, and without one."""
    taken, missing = books.get("taken") or 0, books.get("missing") or 0
    share = 100.0 * missing / (taken + missing) if taken + missing else 0.0
    return f"{taken:,} acting decisions with their L2 book, {missing:,} without ({share:.1f}%)"


def format_status(snap: Any, locate: str = "") -> str:
    """A few lines a person reads at a glance: state, kill switch, venues, money, what waits.

    ``locate`` (for example `` --socket PATH``) is added to the commands it suggests."""
    snap = _dict(snap)
    lines = []
    ts = _dict(snap.get("trading_state"))
    ks = _dict(snap.get("kill_switch"))
    p = _dict(snap.get("portfolio"))
    ccy = p.get("quote_currency", "")
    lines.append(
        f"engine      {snap.get('mode')} (profile {snap.get('profile')}), seq {snap.get('seq')}, "
        f"clock {_clock(snap.get('now'))} UTC"
    )
    state = str(ts.get("state"))
    if ts.get("reason"):
        state += f" ({ts.get('by')}: {ts['reason']})"
    lines.append(f"trading     {state}")
    if ks.get("engaged"):
        lines.append(
            f"kill        ENGAGED at {ks.get('level')} by {ks.get('by')}: {ks.get('reason')}"
        )
    else:
        lines.append("kill        off")
    if snap.get("blocked") and ts.get("state") != TRADING_BLOCKED:
        lines.append(f"blocked     {snap['blocked']}")
    heartbeat = format_heartbeat(_dict(_dict(snap.get("counters")).get("heartbeat")))
    if heartbeat:
        lines.append(f"heartbeat   {heartbeat}")
    counters = _dict(snap.get("counters"))
    recording = _dict(counters.get("recording"))
    if recording:
        lines.append(f"recording   {format_recording(recording)}")
    books = _dict(counters.get("book_snapshots"))
    if books.get("taken") or books.get("missing"):
        lines.append(f"books       {format_books(books)}")
    lines.extend(format_venues(snap, locate))
    drawdown = p.get("drawdown")
    lines.append(
        f"equity      {_num(p.get('equity'))} {ccy} (cash {_num(p.get('cash'))}, realized "
        f"{_num(p.get('realized_pnl'))}, unrealized {_num(p.get('unrealized_pnl'))}, "
        f"drawdown {_num(drawdown * 100 if _is_num(drawdown) else drawdown or 0)}%)"
    )
    lines.append(f"pnl         {format_pnl(p)}")
    positions = [x for x in _dicts(snap.get("positions")) if x.get("qty")]
    if positions:
        shown = ", ".join(
            f"{x.get('symbol')} {fmt_qty(x['qty']) if _is_num(x['qty']) else '?'} @ "
            f"{fmt_price(x['avg_price']) if _is_num(x.get('avg_price')) else '?'}"
            + (" (dust: below the venue minimum)" if x.get("dust") is True else "")
            for x in positions
        )
        lines.append(f"positions   {shown}")
    else:
        lines.append("positions   none")
    strategies = []
    for s in _dicts(snap.get("strategies")):
        flag = f"PAUSED ({s.get('paused_by')}: {s.get('pause_reason')})" if s.get("paused") else ""
        strategies.append(f"{s.get('id')} [{s.get('approval')}]{' ' + flag if flag else ''}")
    lines.append(f"strategies  {', '.join(strategies) or 'none'}")
    tripped = [b for b in _dicts(snap.get("breakers")) if b.get("tripped")]
    if tripped:
        lines.append(
            "breakers    "
            + "; ".join(f"{b.get('name')} ({b.get('scope')}): {b.get('reason')}" for b in tripped)
        )
    n = len(_dicts(snap.get("approvals")))
    lines.append(f"approvals   {n} pending" + (" (cockpit approvals)" if n else ""))
    open_orders = [o for o in _dicts(snap.get("orders")) if o.get("status") in _OPEN]
    lines.append(f"orders      {len(open_orders)} open")
    alerts = snap.get("alerts")
    if isinstance(alerts, dict):  # [alerts] (engine.alerts); None without
        lines.append(
            f"alerts      {alerts.get('sent')} sent, {alerts.get('failed')} failed, "
            f"{alerts.get('dropped')} dropped, {alerts.get('queued')} queued "
            f"({alerts.get('routes')} destinations)"
        )
    return "\n".join(lines)


_OPEN = ("pending_new", "new", "partially_filled")


def format_pnl(p: dict[str, Any]) -> str:
    """The account's PnL as the Positions pane's footer and the fleet's day PnL have it: net of
    fees (realized and unrealized are gross: the portfolio books fees apart), so the parts add
    up to the net and the net is equity less the starting cash."""
    realized, unrealized, fees = (p.get(k) for k in ("realized_pnl", "unrealized_pnl", "fees_paid"))
    if not (_is_num(realized) and _is_num(unrealized) and _is_num(fees)):
        return "-"
    net = realized + unrealized - fees + 0.0
    day = p.get("daily_pnl")
    today = f", today {day + 0.0:+,.2f}" if _is_num(day) else ""
    return f"net {net:+,.2f} (realized {realized:,.2f} + unrealized {unrealized:,.2f} - fees " + (
        f"{fees:,.2f}){today}"
    )


def format_venues(snap: dict[str, Any], locate: str = "") -> list[str]:
    """Per venue: connection, feed, clock offset, reconciliation and its HALT; then each
    difference that waits for an answer, with its key and the command that answers it."""
    venues = snap.get("venues")
    if not isinstance(venues, dict) or not venues:
        return []
    venues = {str(k): _dict(v) for k, v in venues.items()}
    lines = []
    width = max(len(n) for n in venues)
    pad = " " * 12
    for name in sorted(venues):
        info = venues[name]
        summary = ", ".join(text for text, _ in venue_segments(name, info, snap.get("mode")))
        summary = summary.replace(" ✓", " ok")  # plain text for any terminal or log
        lines.append(f"venue       {name:<{width}}  {summary}")
        halted = halted_reason(info)
        if halted:
            lines.append(f"{pad}HALTED: {halted.removeprefix(f'{name}: ')}")
        problem = last_problem(info)
        if problem and not info.get("connected"):
            lines.append(f"{pad}last problem: {problem}")
    waiting = [d for d in differences(venues) if d.answerable]
    for d in waiting:
        state = "BLOCKING" if d.blocking else "to acknowledge"
        lines.append(f"difference  {d.venue} {d.key} ({kind_label(d.kind)}, {state}): {d.line}")
        lines.append(f"{pad}answer: {d.command(locate)}")
    return lines


def format_approvals(pending: Any, now: Any) -> str:
    pending = _dicts(pending)
    if not pending:
        return "no orders waiting for approval"
    rows = [
        (
            "ID",
            "STRATEGY",
            "SIDE",
            "QTY",
            "SYMBOL",
            "ORDER",
            "PRICE",
            "NOTIONAL",
            "EXPIRES",
            "HASH",
            "WHY",
        )
    ]
    for a in pending:
        expires = a.get("expires_ts", 0)
        left = (expires - now) / 1e9 if _is_num(now) and now and _is_num(expires) else 0.0
        rows.append(
            (
                str(a.get("id")),
                str(a.get("strategy")),
                str(a.get("side")),
                # exactly what is sent (the hash binds it), never rounded for the table
                fmt_exact(a.get("qty")),
                str(a.get("symbol")),
                # what the approve sends: market, or a limit and how it works (post-only,
                # IOC/FOK, its time to live, reduce-only), all of which the hash covers
                printable(str(a.get("order_type") or "?"))
                + limit_terms(a)
                + (" reduce-only" if a.get("reduce_only") is True else ""),
                fmt_exact(a.get("limit_price") or a.get("ref_price")),
                _num(a.get("notional")),
                f"{max(left, 0):.0f}s" if left == left else "?",
                # what `cockpit approve ID --hash HASH` binds the approve to
                printable(str(a.get("hash") or "-")),
                str(a.get("reason", ""))[:60],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    )


def format_trace_line(e: Any) -> str:
    """One line per trace entry; unknown kinds fall back to compact JSON."""
    if not isinstance(e, dict):
        return f"{'-':>12} {'':>7} {'?':<18} {json.dumps(e, default=str)[:160]}"
    kind = str(e.get("event", "?"))
    line = f"{_clock(e.get('ts'))} {e.get('seq', '')!s:>7} {kind:<18} {format_event_body(e)}"
    restored = e.get(RESTORED_FROM)
    # Loaded from the journal at start: say so, or it reads as if it had just happened.
    return f"{line}  [session {restored}, before the restart]" if restored else line


def format_event_body(e: dict[str, Any]) -> str:
    """What one event says, in a line (the trace and ``cockpit journal`` print it after the
    time, seq and kind); kinds without a form of their own fall back to compact JSON."""
    kind = str(e.get("event", "?"))
    if kind == EventKind.DECISION:
        d = _dict(e.get("decision"))
        body = (
            f"{d.get('strategy_id')} {d.get('symbol')} {d.get('action')} "
            f"[{d.get('rule')}] {d.get('reason')}"
        )
        book = book_summary(e.get("book"))
        if book:
            body += f" | {book}"
    elif kind == EventKind.INTENT:
        i = _dict(e.get("intent"))
        denied = [v.get("code") for v in _dicts(e.get("verdicts")) if not v.get("ok")]
        body = (
            f"{i.get('strategy_id')} {i.get('side')} {i.get('qty')} {i.get('symbol')} -> "
            f"{e.get('outcome')}" + (f" ({', '.join(map(str, denied))})" if denied else "")
        )
    elif kind == EventKind.ORDER:
        o = _dict(e.get("order"))
        body = (
            f"{o.get('client_order_id')} {o.get('side')} {o.get('qty')} {o.get('symbol')} "
            f"{o.get('status')} filled {o.get('filled_qty')}"
            + (f" ({o['reason']})" if o.get("reason") else "")
        )
    elif kind == EventKind.FILL:
        f = _dict(e.get("fill"))
        body = (
            f"{f.get('strategy_id')} {f.get('symbol')} {f.get('side')} {f.get('qty')} @ "
            f"{f.get('price')} fee {_figure(f.get('fee'))} pnl {_figure(e.get('realized_pnl'))}"
        )
    elif kind == EventKind.APPROVAL_REQUESTED:
        a = _dict(e.get("approval"))
        limit = a.get("limit_price")
        body = (
            f"{a.get('id')} {a.get('strategy')} {a.get('side')} {fmt_exact(a.get('qty'))} "
            f"{a.get('symbol')} {printable(str(a.get('order_type') or '?'))}"
            + (f" {fmt_exact(limit)}" if limit is not None else "")
            + limit_terms(a)
            + (" reduce-only" if a.get("reduce_only") is True else "")
            + f" ~{_num(a.get('notional'))}"
        )
    elif kind == EventKind.APPROVAL:
        o = _dict(e.get("outcome"))
        body = f"{o.get('approval_id')} {o.get('status')} by {o.get('by')}" + (
            f": {o['reason']}" if o.get("reason") else ""
        )
    elif kind == EventKind.SAFETY:
        body = (
            f"{e.get('what')} {e.get('subject')} by {e.get('by')}: {e.get('reason')} "
            f"{json.dumps(e.get('after'), default=str)}"
        )
    elif kind == EventKind.RECORDING:
        body = (
            f"market recording dropped {e.get('dropped')} payloads ({e.get('total')} this run): "
            f"{e.get('detail')}"
        )
    elif kind == EventKind.BREAKER:
        c = _dict(e.get("change"))
        body = (
            f"{c.get('breaker')} ({c.get('scope')}) "
            f"{'tripped' if c.get('tripped') else 're-armed'}: {c.get('reason')}"
        )
    elif kind == EventKind.AUDIT:
        body = (
            f"{e.get('user')} {e.get('action')} via {e.get('client')}: "
            f"{'ok' if e.get('accepted') else 'refused'} - {e.get('message')}"
        )
    elif kind == EventKind.SESSION:
        info = _dict(e.get("info"))
        body = f"session {e.get('session')} {e.get('state')}"
        if "mode" in info:
            body += f" ({info['mode']}, {info.get('source')} market, {info.get('broker')} broker)"
        elif info:
            body += " (" + ", ".join(f"{k} {v}" for k, v in info.items()) + ")"
    elif kind == EventKind.VENUE:
        body = f"{e.get('venue')} {e.get('what')}" + (
            f" HALTED: {e['halted']}" if e.get("halted") else ""
        )
    elif kind == EventKind.MARKS:
        marks = _dict(e.get("marks"))
        body = f"equity {_num(e.get('equity'))} cash {_num(e.get('cash'))}; " + ", ".join(
            f"{k} {_num(v)}" for k, v in marks.items()
        )
    else:
        rest = {k: v for k, v in e.items() if k not in ("event", "ts", "seq")}
        body = json.dumps(rest, default=str)[:160]
    return printable(body)


_COMMANDS = {
    "status": cmd_status,
    "approvals": cmd_approvals,
    "approve": cmd_approve,
    "reject": cmd_reject,
    "kill": cmd_kill,
    "release": cmd_release,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "trace": cmd_trace,
    "resolve": cmd_resolve,
    "rearm": cmd_rearm,
    "flatten": cmd_flatten,
    "set-limit": cmd_set_limit,
    "approval-mode": cmd_approval_mode,
}
ONESHOT_COMMANDS = tuple(_COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    """A parser with only the one-shot commands (``python -m cockpit.oneshot``, tests)."""
    parser = argparse.ArgumentParser(prog="cockpit", description="one-shot engine commands")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_oneshot_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        code = run_oneshot(build_parser().parse_args(argv))
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        from cockpit.cli import quiet_broken_pipe

        return quiet_broken_pipe()


if __name__ == "__main__":
    sys.exit(main())
