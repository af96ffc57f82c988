"""The `cockpit` command line.

Every failure a user can cause (bad config, bad arguments, unreadable data) ends in a one-line
message naming what is wrong and how to fix it, and a non-zero exit code: never a traceback.
Heavy modules are imported inside the commands that need them so quick commands start fast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import importlib
import json
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cockpit import runs_engine
from cockpit.argtypes import (
    add_config_options,
    expanded_path_text,
    listen_host,
    path_text,
    positive_seconds,
    whole_number,
)
from cockpit.errortext import is_output_failure, output_failed, shown, usable_standard_streams
from engine.vocabulary import ExitCode, HeadlessLine, KillLevel


class UserError(Exception):
    """A problem the user can fix; its message is printed as is."""

    def __init__(self, message: str, code: int = ExitCode.FAILURE):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(
            ExitCode.USAGE, shown(f"{self.prog}: error: {message} (see {self.prog} --help)") + "\n"
        )


def _add_common(p: argparse.ArgumentParser, top: bool = False) -> None:
    # Subcommands repeat the options; SUPPRESS keeps `cockpit --config X engine` from being
    # reset to None by the subcommand's own default.
    add_config_options(p, top=top)
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        type=path_text,
        default=None if top else argparse.SUPPRESS,
        help="where the journal lives (default: the config's engine.data_dir)",
    )


def _add_mode(p: argparse.ArgumentParser, top: bool = False) -> None:
    default_flag = False if top else argparse.SUPPRESS
    default = None if top else argparse.SUPPRESS
    p.add_argument(
        "--live",
        action="store_true",
        default=default_flag,
        help="required (with engine.mode = 'live') to trade real money",
    )
    p.add_argument(
        "--confirm-live",
        metavar="PHRASE",
        default=default,
        help="the typed live confirmation, for headless starts",
    )


def _add_metrics(p: argparse.ArgumentParser, top: bool = False) -> None:
    p.add_argument(
        "--metrics",
        dest="metrics_port",
        metavar="PORT",
        type=whole_number(0, 65535, "port"),
        default=None if top else argparse.SUPPRESS,
        help="serve Prometheus metrics on this TCP port (0: any free one; the bound port is "
        "printed on stderr); off by default",
    )
    p.add_argument(
        "--metrics-host",
        metavar="HOST",
        type=listen_host,
        default="127.0.0.1" if top else argparse.SUPPRESS,
        help="address the metrics listen on (default 127.0.0.1; anything else is readable by "
        "whoever reaches the port)",
    )


# The research commands, each self-contained in its module: `cockpit backtest ...` builds only
# its own parser, without importing the socket client, control protocol and journal readers the
# operator commands' parsers bring in (~0.1 s of a backtest's start-up).
_RESEARCH_PARSERS = {
    "backtest": ("cockpit.backtest_cli", "add_backtest_parser"),
    "sweep": ("cockpit.research_cli", "add_sweep_parser"),
    "data": ("cockpit.data_cli", "add_data_parser"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI; with ``command`` one of the research commands, only that command's
    parser under the top level (the same options and errors, fewer imports)."""
    parser = _Parser(
        prog="cockpit",
        description="Terminal trading cockpit. With no command: run on the embedded default.",
    )
    _add_common(parser, top=True)
    _add_mode(parser, top=True)
    _add_metrics(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    eng = sub.add_parser("engine", help="run the engine headless, one JSON line per event")
    _add_common(eng)
    _add_mode(eng)
    eng.add_argument(
        "--socket",
        metavar="PATH",
        type=path_text,
        default=argparse.SUPPRESS,
        help="control socket (default: $XDG_RUNTIME_DIR/cockpit/default.sock, "
        "else DATA_DIR/cockpit.sock)",
    )
    eng.add_argument(
        "--for",
        dest="duration",
        type=positive_seconds,
        metavar="SECONDS",
        help="stop after this many seconds (default: run until SIGINT/SIGTERM)",
    )
    _add_metrics(eng)

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="SUBCOMMAND", parser_class=_Parser)
    check = cfg_sub.add_parser("check", help="validate a config file; prints ok or the problems")
    add_config_options(check, profile_help="check with this risk profile laid over the config")

    ver = sub.add_parser("verify", help="check the journal's hash chain")
    _add_common(ver)

    att = sub.add_parser(
        "attach", help="open the cockpit on a running headless engine (control socket)"
    )
    att.add_argument(
        "--socket",
        metavar="PATH",
        type=expanded_path_text,
        action="append",
        default=argparse.SUPPRESS,
        help="the engine's control socket (repeat it to watch several engines)",
    )
    att.add_argument(
        "--data-dir",
        metavar="DIR",
        type=expanded_path_text,
        action="append",
        default=argparse.SUPPRESS,
        help="find the socket from the data dir (repeat it to watch several engines)",
    )
    att.add_argument(
        "--fleet",
        metavar="FILE",
        type=expanded_path_text,
        help="a TOML file naming the engines to watch: [engines.NAME] socket = PATH "
        "(see docs/operations.md)",
    )
    add_config_options(att, config_help="TOML config naming the data dir", profile_help=None)
    att.add_argument(
        "--read-only", action="store_true", help="connect as a viewer: every command is refused"
    )

    if command in _RESEARCH_PARSERS:
        module, adder = _RESEARCH_PARSERS[command]
        getattr(importlib.import_module(module), adder)(sub)
        return parser

    from cockpit.alerts_cli import add_alerts_parser
    from cockpit.backtest_cli import add_backtest_parser
    from cockpit.data_cli import add_data_parser
    from cockpit.history_cli import add_history_parsers
    from cockpit.oneshot import add_oneshot_parsers
    from cockpit.research_cli import add_sweep_parser
    from cockpit.venues_cli import add_venues_parser

    add_oneshot_parsers(sub)
    add_history_parsers(sub)
    add_backtest_parser(sub)
    add_sweep_parser(sub)
    add_venues_parser(sub)
    add_alerts_parser(sub)
    add_data_parser(sub)
    return parser


def _load(args: argparse.Namespace, *, to_run: bool = False) -> Any:
    """The validated config; ``to_run`` adds what an engine needs to start (check_runnable),
    the same for `config check` and every command that starts one."""
    from engine.config import ConfigError, check_runnable, load_config

    try:
        cfg = load_config(getattr(args, "config", None), getattr(args, "profile", None))
        if to_run:
            check_runnable(cfg)
    except ConfigError as exc:
        raise UserError(
            "\n".join(f"config error: {p}" for p in exc.problems), ExitCode.USAGE
        ) from None
    return cfg


def _data_dir(args: argparse.Namespace, cfg: Any, starting: bool = False) -> Path:
    """--data-dir, else the config's engine.data_dir (relative: see ``config_data_dir``);
    ``starting`` an engine there, one whose data is beside the config is refused."""
    given = getattr(args, "data_dir", None)
    if given:  # the config's engine.data_dir was checked with the config, this one is not yet
        from engine.config import data_dir_problem

        problem = data_dir_problem(given)
        if problem is not None:
            raise UserError(f"--data-dir: {problem}", ExitCode.USAGE)
        return Path(given)
    from engine.datadir import config_data_dir, data_dir_elsewhere

    config_file = getattr(args, "config", None)
    if starting:
        problem = data_dir_elsewhere(cfg.engine.data_dir, config_file)
        if problem is not None:
            raise UserError(problem, ExitCode.USAGE)
    return config_data_dir(cfg.engine.data_dir, config_file)


def cmd_config_check(args: argparse.Namespace) -> int:
    _load(args, to_run=True)
    print("ok")
    return ExitCode.OK


def cmd_verify(args: argparse.Namespace) -> int:
    from engine.journal import missing_journal_problem, verify_journal
    from engine.restore import restore_problem
    from engine.runtime import JOURNAL_FILE

    has_cfg, has_dir = getattr(args, "config", None), getattr(args, "data_dir", None)
    cfg = _load(args) if has_cfg or not has_dir else None
    path = _data_dir(args, cfg) / JOURNAL_FILE
    if not path.exists():
        problem = missing_journal_problem(path)
        if problem:  # gone, though its anchor or a -wal file left behind says it had rows
            raise UserError(f"journal broken: {problem} ({path})")
        raise UserError(f"no journal at {path}; pass --data-dir DIR where the engine ran")
    report = verify_journal(path)
    if report.unreadable:
        raise UserError(f"journal unreadable: {report.problem}")
    if not report.ok:
        raise UserError(f"journal broken: {report.problem} ({path})")
    # A chain that verifies can still hold a row a start refuses (a number no engine writes,
    # put there by someone who re-hashed the chain): the same answer as the start gives.
    problem = restore_problem(path)
    if problem:
        raise UserError(f"journal broken: {problem} ({path})")
    print(shown(f"ok: {report.rows} rows, hash chain intact ({path})"))
    return ExitCode.OK


def _armed(args: argparse.Namespace, *, asks: bool = False) -> Any:
    """Load the config and refuse a trading mode that is not fully armed (one line each).
    ``asks``: the cockpit asks for the typed live confirmation itself when none was given."""
    cfg = _load(args, to_run=True)
    from engine.modes import LIVE_PHRASE, arming_problems

    typed = LIVE_PHRASE if asks and args.confirm_live is None else args.confirm_live
    problems = arming_problems(cfg, live_flag=args.live, confirmation=typed)
    if problems:
        raise UserError("\n".join(f"mode error: {p}" for p in problems), ExitCode.USAGE)
    return cfg


def cmd_cockpit(args: argparse.Namespace) -> int:
    """No command: the cockpit on an embedded engine. Without a terminal (a pipe, a service)
    there is nobody to look at a TUI, so the engine runs headless instead."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        _say("cockpit: no terminal; running the engine headless (cockpit engine)")
        return cmd_engine(args)
    cfg = _armed(args, asks=True)
    from cockpit.app import run_embedded
    from engine.modes import LIVE_PHRASE

    ask = LIVE_PHRASE if cfg.engine.mode == "live" and args.confirm_live is None else None
    port = getattr(args, "metrics_port", None)
    # What stderr says before the cockpit takes the screen (the port --metrics 0 took, the
    # exposure warning) is hidden while it runs: the cockpit says it again.
    notes: list[str] = []

    def say(text: str) -> None:
        _say(text)
        notes.append(text)

    metrics = _start_metrics(port, args.metrics_host, say) if port is not None else None
    companions = [metrics.sampler()] if metrics is not None else []

    async def run() -> int:
        try:
            return await run_embedded(
                cfg, _data_dir(args, cfg, True), live_phrase=ask, companions=companions, notes=notes
            )
        finally:
            if metrics is not None:
                await metrics.close()

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return ExitCode.OK


def _needs_terminal() -> None:
    """The attached cockpit is a screen: without a terminal (`ssh host cockpit attach` without
    -t, the view-only key's forced command asked for `status`) it wrote escape codes into a
    pipe and held its connection open until killed. One line instead."""
    try:
        ok = sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        ok = False
    if not ok:
        raise UserError(
            "cockpit attach: no terminal to show the cockpit on (over SSH: ssh -t); "
            "for a look without one: cockpit status",
            ExitCode.USAGE,
        )


def cmd_attach(args: argparse.Namespace) -> int:
    """The same cockpit, attached to a daemon through its control socket; to several, with
    a fleet overview first (repeated --socket / --data-dir, or --fleet FILE)."""
    from cockpit.app import CockpitApp
    from cockpit.fleet import FleetError, fleet_from_args
    from cockpit.oneshot import OneShotError, _paired_data_dir, resolve_data_dir, resolve_socket
    from cockpit.socket_client import EngineUnreachable, SocketClient, WrongEngine
    from cockpit.tui.session import ClientSession

    try:
        fleet = fleet_from_args(args)
    except FleetError as exc:
        raise UserError(f"cockpit attach: {exc}", ExitCode.USAGE) from None
    if fleet is not None:
        _needs_terminal()
        return _attach_fleet(args, fleet)
    for name in ("socket", "data_dir"):  # one engine: found exactly as before
        value = getattr(args, name, None)
        if isinstance(value, list):
            setattr(args, name, value[0] if value else None)
    try:
        path = resolve_socket(args)
        # A data dir named without --socket: every reconnect finds its socket again and
        # refuses an engine serving another one (the shared default socket changed hands).
        named = getattr(args, "data_dir", None) or getattr(args, "config", None)
        bound = resolve_data_dir(args) if named and not getattr(args, "socket", None) else None
        # Beside --socket: the engine reached must name that data dir in its welcome (a
        # forwarded socket, no info file: the operator attached to another data dir's engine).
        paired = _paired_data_dir(args)[0] if getattr(args, "socket", None) else None
    except OneShotError as exc:
        raise UserError(str(exc), ExitCode.USAGE) from None
    _needs_terminal()
    role = "viewer" if args.read_only else "operator"

    async def run() -> int:
        client = SocketClient(path, role=role, name="attach", data_dir=bound, serves=paired)
        try:
            await client.connect(retry=False)
        except WrongEngine as exc:  # the data dir named is not the engine's: give the one meant
            raise UserError(f"cockpit attach: {exc}", ExitCode.USAGE) from None
        except EngineUnreachable as exc:
            raise UserError(f"no engine answers at {path}: {exc}", ExitCode.UNREACHABLE) from None
        app = CockpitApp(session=ClientSession(client))
        await app.run_async()
        return int(app.return_code or 0)

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return ExitCode.OK


FLEET_PING_S = 2.0  # a fleet's engine silent for three of these is shown DISCONNECTED


def fleet_members(fleet: list[Any], role: str) -> list[Any]:
    """One member per engine of the fleet, nothing dialled yet. An engine named by its data
    dir is bound to it: its socket is found again at every dial, and an engine that serves
    another data dir (the shared $XDG_RUNTIME_DIR socket changed hands) is refused."""
    from cockpit.socket_client import SocketClient
    from cockpit.tui.fleet import FleetMember
    from cockpit.tui.session import DialSession

    return [
        FleetMember(
            e.name,
            str(e.socket),
            DialSession(
                SocketClient(
                    e.socket,
                    role=role,
                    name="attach",
                    ping_interval=FLEET_PING_S,
                    data_dir=e.data_dir,
                )
            ),
        )
        for e in fleet
    ]


def _attach_fleet(args: argparse.Namespace, fleet: list[Any]) -> int:
    """The fleet cockpit: every engine dialled in the background (one not there yet shows
    as connecting and is retried), the overview first."""
    from cockpit.tui.fleet_app import FleetApp

    role = "viewer" if args.read_only else "operator"

    async def run() -> int:
        members = fleet_members(fleet, role)
        app = FleetApp(members, read_only=args.read_only)
        await app.run_async()
        return int(app.return_code or 0)

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return ExitCode.OK


# SIGUSR1s that came before the engine's event loop could take them (see _catch_early_kill).
_early_kills: list[int] = []


# The KILL file of the engine this process ran, once it began to stop: a SIGUSR1 after its
# loop closed is kept there (see _catch_early_kill).
_late_kill_file: list[Path] = []


def _note_kill(signum: int, frame: Any) -> None:
    if _late_kill_file:
        from engine.datadir import raise_kill_file, read_kill_level

        path = _late_kill_file[0]
        with contextlib.suppress(OSError, ValueError):
            _, detail = raise_kill_file(path, read_kill_level(path) or KillLevel.HALT)
            _say(f"SIGUSR1 after the engine stopped: {detail}; it holds at the next start")
        return
    _early_kills.append(signum)


@contextlib.contextmanager
def _catch_early_kill(restore: bool = True) -> Iterator[None]:
    """From the first moment a headless engine's command is known, SIGUSR1 is the kill switch:
    its default action terminates the process, so one sent while the engine still loaded its
    config and modules (seconds on a busy host) killed it without engaging anything, and a
    service restarted it trading. Noted here, engaged once the engine's state is restored;
    after the engine's loop closed (which sets SIGUSR1 back to terminate) one is kept in the
    KILL file, so a late signal neither turns a clean stop into a death by signal nor is lost.
    With ``restore`` (the tests that run the command in their own process) the disposition
    before is restored at the end; the process itself keeps the handler until it exits.

    SIGUSR2 (the strategy watchdog's, engine/watchdog.py) does nothing sent from outside: its
    default action terminated the engine while it loaded, before the watchdog's handler."""
    previous = signal.signal(signal.SIGUSR1, _note_kill)
    previous_usr2 = signal.signal(signal.SIGUSR2, _ignore_signal)
    import cockpit

    if cockpit.early_kills:  # noted by the package's own handler, before this module loaded
        _early_kills.extend(cockpit.early_kills)
        cockpit.early_kills.clear()
    if getattr(previous, "__module__", None) == "cockpit":
        previous = signal.SIG_DFL  # (that handler's work is done: restored as the default)
    if getattr(previous_usr2, "__module__", None) == "cockpit":
        previous_usr2 = signal.SIG_DFL
    try:
        yield
    finally:
        _early_kills.clear()
        if restore:
            _late_kill_file.clear()
            signal.signal(signal.SIGUSR1, previous)
            signal.signal(signal.SIGUSR2, previous_usr2)


def _ignore_signal(signum: int, frame: Any) -> None:
    """A handler that does nothing (not SIG_IGN, which a child process would inherit)."""


def _runs_headless(args: argparse.Namespace) -> bool:
    if args.command == "engine":
        return True
    if args.command is not None or getattr(args, "history", None):
        return False
    if getattr(args, "oneshot", None):
        return False
    try:
        return not (sys.stdin.isatty() and sys.stdout.isatty())
    except (AttributeError, ValueError):
        return True


def _say(text: str) -> None:
    """A line on stderr from the headless engine. A reader that went away (`cockpit engine
    2>&1 | head -1`, a restarted log collector) must not stop the engine: the line is lost,
    the journal has everything."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


def cmd_engine(args: argparse.Namespace) -> int:
    # stdout is the JSON lines: what anything else prints there (a trader's strategy debugging
    # with print(), at import or on each bar) goes to stderr, or a consumer's parser stops.
    # Both are written by a thread of their own (cockpit.linesink): a reader that stops
    # reading fills the pipe, and a plain write then froze the event loop, so no quote, exit,
    # control socket, SIGTERM or SIGUSR1 kill was handled until it read again.
    from cockpit.linesink import LineSink

    lines = LineSink(sys.stdout, _lines_dropped)
    err = LineSink(sys.stderr, lambda n: f"({n} writes to stderr dropped: its reader lagged)\n")
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
            return _engine_command(args, lines)
    finally:
        lines.close()
        err.close()


def _lines_dropped(n: int) -> str:
    line = {"ts": _now_iso(), "event": HeadlessLine.LINES_DROPPED, "lines": n}
    return json.dumps(line, separators=(",", ":")) + "\n"


def _engine_command(args: argparse.Namespace, lines: Any) -> int:
    cfg = _armed(args)
    socket = getattr(args, "socket", None)
    metrics = getattr(args, "metrics_port", None)
    host = getattr(args, "metrics_host", "127.0.0.1")
    try:
        return asyncio.run(
            _run_headless(
                cfg,
                _data_dir(args, cfg, True),
                args.duration,
                socket,
                metrics_port=metrics,
                metrics_host=host,
                lines=lines,
            )
        )
    finally:
        if signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL:  # the loop closed: see above
            signal.signal(signal.SIGUSR1, _note_kill)


def _start_metrics(port: int, host: str, say: Callable[[str], None] | None = None) -> Any:
    """Bind the metrics endpoint before the engine starts (a taken port starts nothing).
    ``say`` (default: stderr) hears where it listens and the exposure warning."""
    say = say or _say
    from engine.telemetry import MetricsServer, is_loopback

    server = MetricsServer(host, port)
    try:
        server.start()
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            advice = "pick a free port (--metrics 0 takes any) or stop what holds it"
        else:  # a name that does not resolve, an address not this machine's
            advice = "give --metrics-host an address of this machine (127.0.0.1: this one only)"
        raise UserError(
            f"--metrics: cannot listen on {host}:{port} ({why}); {advice}", ExitCode.USAGE
        ) from None
    if not is_loopback(host):
        say(
            f"warning: metrics on {host} are readable by anyone who reaches port {server.port} "
            "(equity, positions, PnL; no authentication): keep 127.0.0.1 or firewall it"
        )
    say(f"metrics: {server.url}")
    return server


async def _run_headless(
    cfg: Any,
    data_dir: Path,
    duration: float | None,
    socket: str | None = None,
    *,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    lines: Any = None,
) -> int:
    """The headless engine; its JSON lines go to ``lines`` (default: stdout)."""
    from engine.config import ConfigError
    from engine.control import ControlError, ControlServer, default_socket_path
    from engine.datadir import DataDirRefused, read_kill_level
    from engine.execution import UnsupportedMode
    from engine.headless import describe_event
    from engine.heartbeat import attach_watch
    from engine.journal import JournalError
    from engine.marketdata.replay import ReplayError
    from engine.restore import RestoreError
    from engine.runtime import Engine, StartStopped
    from engine.venues.exchanges import VenueStartError

    out: Any = lines if lines is not None else sys.stdout

    def write(line: dict[str, Any]) -> None:
        nonlocal out
        if out is None:
            return
        try:
            out.write(json.dumps(line, separators=(",", ":"), default=str) + "\n")
            out.flush()
        except (OSError, ValueError):
            # The terminal or pipe went away: keep trading state safe, stop printing (the
            # journal has every event), never spin on a dead descriptor. What is left in the
            # buffer goes to /dev/null: the exit's flush must not turn the exit code into 0.
            gone, out = out, None
            quiet_broken_pipe(gone)  # the lines' stream: sys.stdout is stderr here (cmd_engine)

    def emit(ev: Any) -> None:
        line = describe_event(ev)
        if line is not None:
            write(line)

    engine = Engine(cfg, data_dir, emit=emit)
    loop = asyncio.get_running_loop()
    # SIGHUP: the terminal went away. Stop cleanly (journal flushed, safety state kept); a
    # daemon meant to outlive its terminal runs under systemd (docs/operations.md). A SIGHUP or
    # SIGINT ignored when the engine started stays ignored: `nohup cockpit engine &` asked to
    # outlive the session, and a script's background job to be spared the terminal's Ctrl-C.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if sig != signal.SIGTERM and signal.getsignal(sig) is signal.SIG_IGN:
            continue
        loop.add_signal_handler(sig, engine.request_stop, f"{sig.name} received")

    # SIGUSR1 is the kill switch for when nothing else answers (see `cockpit kill`); the level
    # is read from the KILL file if `cockpit kill` wrote one, else halt.
    kills: set[asyncio.Future[None]] = set()  # held until done (a bare task may be collected)

    def kill_by_signal() -> None:
        if engine.closing:
            # Stopping: the journal may be closed, or the loop end, before a task runs.
            level = read_kill_level(engine.kill_file) or KillLevel.HALT
            _say(f"SIGUSR1 while stopping: {engine.keep_kill_in_file(level)[1]}")
            return
        task = asyncio.ensure_future(
            engine.engage_kill(
                read_kill_level(engine.kill_file) or KillLevel.HALT,
                by="signal",
                reason="SIGUSR1 received",
                source="signal",
            )
        )
        kills.add(task)
        task.add_done_callback(kills.discard)

    loop.add_signal_handler(signal.SIGUSR1, kill_by_signal)
    if _early_kills:  # before the loop could take it: engaged once the state is restored
        _early_kills.clear()
        kill_by_signal()
    server = None
    listener = ControlServer(engine, Path(socket) if socket else default_socket_path(data_dir))
    try:
        listener.check_path(create=False)  # before the engine starts: a refusal writes nothing
    except ControlError as exc:
        raise UserError(str(exc), ExitCode.USAGE) from None
    try:
        # The data directory before anything is made or bound (the socket's directory, the
        # metrics port): a second engine on it writes nothing and is told whose it is.
        engine.data_dir_lock.acquire()
    except DataDirRefused as exc:
        raise UserError(str(exc), ExitCode.USAGE) from None
    except OSError as exc:
        raise UserError(f"cannot open the journal in {data_dir}: {exc}") from None
    try:
        listener.check_path()
        try:
            attach_watch(engine)  # the heartbeat and systemd's notifications, when configured
        except ConfigError as exc:
            raise UserError(
                "\n".join(f"config error: {p}" for p in exc.problems), ExitCode.USAGE
            ) from None
        metrics = _start_metrics(metrics_port, metrics_host) if metrics_port is not None else None
    except ControlError as exc:
        engine.data_dir_lock.release()
        raise UserError(str(exc), ExitCode.USAGE) from None
    except BaseException:
        engine.data_dir_lock.release()
        raise
    if metrics is not None:
        engine.companions.append(metrics.sampler())
    try:
        try:
            # The data directory is held (above), then the socket: one another engine
            # listens on is refused before this one starts.
            listener.check_free()
            await engine.start()
        except ControlError as exc:
            raise UserError(str(exc), ExitCode.USAGE) from None
        except ConfigError as exc:
            raise UserError(
                "\n".join(f"config error: {p}" for p in exc.problems), ExitCode.USAGE
            ) from None
        except ReplayError as exc:
            raise UserError(f"market data error: {exc}") from None
        except UnsupportedMode as exc:
            raise UserError(f"mode error: {exc}", ExitCode.USAGE) from None
        except RestoreError as exc:
            raise UserError(str(exc)) from None
        except VenueStartError as exc:
            raise UserError(f"venue error: {exc}") from None
        except StartStopped as exc:
            _say(str(exc))
            return ExitCode.OK
        except DataDirRefused as exc:
            raise UserError(str(exc), ExitCode.USAGE) from None
        except (JournalError, OSError, sqlite3.Error) as exc:
            raise UserError(f"cannot open the journal in {data_dir}: {exc}") from None

        server = listener
        try:
            await server.start()
        except ControlError as exc:
            server = None
            raise UserError(str(exc), ExitCode.USAGE) from None
        _say(f"control socket: {server.path}")
        # What the start built (modules, config, history, the venue's markets) lives as long
        # as the engine: out of the cyclic collector's way, a full collection no longer walks
        # it (tens of ms on a slow machine, the loop stalled: quotes, a kill, the heartbeat).
        gc.freeze()

        async def summary(**extra: Any) -> None:
            # Taken now, printed once what it counts is committed (Engine.when_committed).
            line = {"ts": _now_iso(), "event": HeadlessLine.SUMMARY, **extra, **engine.summary()}
            await engine.committed()
            if engine.blocked_reason and not line.get("blocked"):
                # Its rows failed instead: taken again, so it says BLOCKED, not ACTIVE.
                line.update(engine.summary())
            line["blocked"] = engine.blocked_reason or None  # a failure meanwhile shows
            write(line)

        async def summaries() -> None:
            while True:
                await asyncio.sleep(cfg.engine.summary_interval_s)
                await summary()

        ticker = asyncio.create_task(summaries())
        try:
            await engine.run(duration_s=duration)
        finally:
            ticker.cancel()
        await summary(final=True)
    finally:
        if server is not None:
            await server.close()
        listener.release()  # the socket path, also when the engine never started
        await engine.stop()
        if engine.core is not None:  # it was the engine of that data dir (not refused it)
            _late_kill_file[:] = [engine.kill_file]  # a SIGUSR1 once the loop closed goes there
        if metrics is not None:
            await metrics.close()
    if engine.blocked_reason:
        _say(f"engine stopped trading: {engine.blocked_reason}")
        return ExitCode.FAILURE
    return ExitCode.OK


def _now_iso() -> str:
    """Now, stamped as the event lines are (engine.headless): one format in one stream (the
    summary said ``...:05Z`` beside events' ``...:05.123+00:00``, and a strict parser of one
    failed on the other)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def main(argv: list[str] | None = None) -> int:
    # The process's own command line (argv None) keeps the SIGUSR1 handler until it exits.
    restore = argv is not None
    if argv is None:
        argv = sys.argv[1:]
    # `cockpit engine`: SIGUSR1 is the kill switch from here on, before the parser's imports.
    catch = _catch_early_kill(restore) if runs_engine(argv) else contextlib.nullcontext()
    with catch:
        return _main_guarded(argv)


def _main_guarded(argv: list[str]) -> int:
    usable_standard_streams()
    _escape_what_the_terminal_cannot_show()
    try:
        code = _main(argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return quiet_broken_pipe()
    except OSError as exc:
        if not is_output_failure(exc):
            raise
        return output_failed(exc)
    except KeyboardInterrupt:  # Ctrl-C outside a command's own handling (start-up, the flush)
        return 130


def _escape_what_the_terminal_cannot_show() -> None:
    """Under an ASCII or Latin-1 locale (``LC_ALL=C`` without UTF-8 coercion, an old
    ``en_US.ISO-8859-1``) a chart's block or a symbol's letter cannot be encoded: written
    as ``\\u2588`` instead of ending the command in an UnicodeEncodeError after the work is done.
    A no-op on a UTF-8 terminal, where everything can be encoded."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(OSError, ValueError):  # closed, or detached
                reconfigure(errors="backslashreplace")


def quiet_broken_pipe(stream: Any = None) -> int:
    """The reader closed the pipe (``cockpit trace | head -1``): it has what it wanted. Stop
    quietly as Unix tools do; stdout (or ``stream``, the one whose reader went) goes to
    /dev/null so the exit flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, (sys.stdout if stream is None else stream).fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
    return ExitCode.OK


def _main(argv: list[str] | None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    with _catch_early_kill() if _runs_headless(args) else contextlib.nullcontext():
        return _dispatch(parser, args)


INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports a command Ctrl-C stopped


def _is_a_check(args: argparse.Namespace) -> bool:
    """The commands whose exit 0 says "checked and found sound"."""
    return args.command in ("config", "verify") or (
        args.command == "data" and getattr(args, "data_command", None) == "verify"
    )


def _check_name(args: argparse.Namespace) -> str:
    return {"config": "config check", "verify": "verify"}.get(args.command, "data verify")


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        if args.command == "backtest":
            from cockpit.backtest_cli import run_backtest

            return run_backtest(args)
        if args.command == "sweep":
            from cockpit.research_cli import run_sweep_command

            return run_sweep_command(args)
        if args.command == "data":
            from cockpit.data_cli import run_data

            return run_data(args)
        if args.command == "venues":
            from cockpit.venues_cli import run_venues

            return run_venues(args)
        if args.command == "alerts":
            from cockpit.alerts_cli import run_alerts

            return run_alerts(args)
        if getattr(args, "history", None):
            from cockpit.history_cli import run_history

            return run_history(args)
        if getattr(args, "oneshot", None):
            from cockpit.oneshot import run_oneshot

            return run_oneshot(args)
        if args.command is None:
            args.duration = None
            return cmd_cockpit(args)
        if args.command == "engine":
            return cmd_engine(args)
        if args.command == "attach":
            return cmd_attach(args)
        if args.command == "config":
            if args.config_command != "check":
                parser.exit(
                    ExitCode.USAGE, "cockpit config: say which tool: cockpit config check\n"
                )
            return cmd_config_check(args)
        if args.command == "verify":
            return cmd_verify(args)
    except UserError as exc:
        print(shown(str(exc)), file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        if _is_a_check(args):
            # A check cut short checked nothing: exit 0 read as "ok" (`cockpit verify ||
            # alert` stayed quiet on a journal half read).
            print(f"cockpit {_check_name(args)}: interrupted; nothing was checked", file=sys.stderr)
            return INTERRUPTED_EXIT
        return ExitCode.OK
    except BrokenPipeError:
        raise
    except Exception as exc:  # the last line of defence: one line, no traceback
        if is_output_failure(exc):
            return output_failed(exc)
        if isinstance(exc, OSError) and exc.filename is not None:
            # A path given on the command line the system refuses: named, with the reason. One
            # that can never work (too long a name, a loop of links) is bad usage.
            bad_name = exc.errno in (errno.ENAMETOOLONG, errno.ELOOP)
            print(shown(f"cockpit: cannot use {exc.filename}: {exc.strerror}"), file=sys.stderr)
            return ExitCode.USAGE if bad_name else ExitCode.FAILURE
        cache = sys.modules.get("engine.marketdata.cache")  # not imported here: numpy
        if cache is not None and isinstance(exc, cache.CacheSettingError):
            print(shown(f"cockpit: {exc}"), file=sys.stderr)
            return ExitCode.USAGE
        print(shown(f"cockpit: unexpected error: {type(exc).__name__}: {exc}"), file=sys.stderr)
        return ExitCode.FAILURE
    parser.print_help()
    return ExitCode.USAGE


if __name__ == "__main__":
    sys.exit(main())
