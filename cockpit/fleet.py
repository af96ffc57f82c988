"""A fleet: several engines watched from one cockpit, and the fleet-wide kill switch.

The engines come from a fleet file (``--fleet FILE``), from repeated ``--socket PATH`` /
``--data-dir DIR`` options, or both. A fleet file names each engine and its control socket::

    [engines.binance-main]
    socket = "/run/user/1000/cockpit/default.sock"

    [engines.vps-2]      # ssh -N -L /tmp/vps2.sock:/run/user/1000/cockpit/default.sock vps-2
    socket = "/tmp/vps2.sock"

    [engines.research]
    data_dir = "~/cockpit/research"  # its socket found as `cockpit attach --data-dir` finds it

Relative paths are taken from the fleet file's directory and ``~`` is expanded. Any socket may
be the local end of an SSH-forwarded Unix socket: to the cockpit it is a socket like any other.

Light on purpose (no engine core, no textual): ``cockpit kill --all --fleet FILE`` must start
fast, and the TUI gets the list as plain names and paths.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.control import socket_for_data_dir
from engine.tomlfile import TomlFileError, read_toml
from engine.vocabulary import UNPRINTABLE, ExitCode, printable

MAX_ENGINES = 64  # a fleet larger than this is a mistake (a glob gone wrong), not a desk
# Matched whole (fullmatch): with ``$`` a name ending in a newline ([engines."ok\n"]) passed,
# and `kill --all` printed its line in two.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:+-]{0,31}")
ENGINE_KEYS = ("socket", "data_dir")


class FleetError(Exception):
    """A fleet that cannot be used; the message is one line naming the problem and the fix."""


@dataclass(frozen=True)
class FleetEngine:
    """One engine of the fleet: its name in the cockpit and the control socket to dial."""

    name: str
    socket: Path
    found_by: str  # where it came from, for messages ("fleet.toml", "--socket", "--data-dir")
    data_dir: Path | None = None  # given as a data dir: its KILL file is known too


def expand_path(text: str | Path, where: str) -> Path:
    """``text`` with a leading ``~`` or ``~user`` expanded, or FleetError: ``~nosuchuser/x``
    raised RuntimeError from pathlib, which ended the command in 'unexpected error'. A path
    with control characters is refused: the overview showed it as it is, and its escapes
    cleared the screen and set the terminal's title (no socket is named so on purpose)."""
    if UNPRINTABLE.search(str(text)):
        raise FleetError(
            f"{where}: the path {printable(str(text))[:120]!r} has control characters; "
            "give the path as plain text"
        )
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise FleetError(
            f"{where}: cannot expand {printable(str(text))[:80]!r} (no such user or no home "
            "directory); give the path in full"
        ) from None


def load_fleet(path: str | Path) -> list[FleetEngine]:
    """The engines a fleet file lists, in its order, or FleetError (one line)."""
    path = expand_path(path, "--fleet")
    where = f"fleet file {path}"
    if not path.exists():
        raise FleetError(f"{where}: no such file; pass --fleet PATH to a TOML file of engines")
    try:
        data = read_toml(path)
    except TomlFileError as exc:
        raise FleetError(f"fleet file {exc}") from None
    extra = sorted(set(data) - {"engines"})
    if extra:
        raise FleetError(
            f"{where}: unknown key {extra[0]!r}; a fleet file has only [engines.NAME] tables"
        )
    engines = data.get("engines")
    if engines is not None and not isinstance(engines, dict):
        raise FleetError(
            f'{where}: engines must be tables, one per engine: [engines.NAME] socket = "PATH" '
            f"(got {type(engines).__name__})"
        )
    if not isinstance(engines, dict) or not engines:
        raise FleetError(
            f'{where}: no engines; add one table per engine: [engines.NAME] socket = "PATH"'
        )
    if len(engines) > MAX_ENGINES:
        raise FleetError(f"{where}: {len(engines)} engines, more than {MAX_ENGINES}")
    base = path.parent
    out: list[FleetEngine] = []
    for name, entry in engines.items():
        here = f"{where}: engines.{name}"
        if not NAME.fullmatch(name):
            raise FleetError(
                f"{where}: engine name {printable(name)!r} must be 1-32 letters, digits or "
                "_.@:+- (starting with a letter or digit)"
            )
        if not isinstance(entry, dict):
            raise FleetError(f'{here} must be a table: [engines.{name}] socket = "PATH"')
        unknown = sorted(set(entry) - set(ENGINE_KEYS))
        if unknown:
            raise FleetError(
                f"{here}: unknown key {printable(unknown[0])!r}; use socket or data_dir"
            )
        given = [k for k in ENGINE_KEYS if k in entry]
        if len(given) != 1:
            raise FleetError(
                f'{here}: give exactly one of socket = "PATH" or data_dir = "DIR"'
                + (" (not both)" if given else "")
            )
        key = given[0]
        value = entry[key]
        if not isinstance(value, str) or not value.strip() or "\x00" in value:
            raise FleetError(f"{here}.{key} must be a non-empty path string, got {value!r}")
        p = expand_path(value, f"{here}.{key}")
        if not p.is_absolute():
            p = base / p
        if key == "socket":
            out.append(FleetEngine(name, p, path.name))
        else:
            out.append(FleetEngine(name, socket_for_data_dir(p), path.name, data_dir=p))
    check_distinct(out, f"{where}: ")
    return out


def _socket_identity(path: Path) -> tuple[object, ...]:
    """What names one socket (or data dir) however it is spelled: the file itself (device and
    inode) when it is there, else its path with every symlink and ``..`` resolved."""
    try:
        st = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return ("file", st.st_dev, st.st_ino)


def check_distinct(engines: list[FleetEngine], where: str = "") -> None:
    """Two names for one socket would show one engine twice (and kill it twice), also when
    one of them reaches it through a symlink. An engine listed by its data dir is that data
    dir, not the socket it maps to now (found again at every dial): with $XDG_RUNTIME_DIR's
    default socket free (the engine that held it stopped, or none started yet) every data dir
    maps to it, and a fleet of data dirs was refused, its `kill --all` killing none."""
    dirs: dict[tuple[object, ...], str] = {}
    sockets: dict[tuple[object, ...], tuple[str, bool]] = {}  # -> (name, listed by data dir)
    for e in engines:
        by_dir = e.data_dir is not None
        clash = ""
        if e.data_dir is not None:
            other = dirs.setdefault(_socket_identity(e.data_dir), e.name)
            if other != e.name:
                clash = f"engines {other!r} and {e.name!r} both use the data dir {e.data_dir}"
        if not clash:
            other, other_by_dir = sockets.setdefault(_socket_identity(e.socket), (e.name, by_dir))
            # (two data dirs mapped to one socket now are two engines: not a clash)
            if other != e.name and not (by_dir and other_by_dir):
                clash = f"engines {other!r} and {e.name!r} both use the socket {e.socket}"
        if clash:
            raise FleetError(f"{where}{clash}; list each engine once")


def name_for(path: Path, taken: set[str]) -> str:
    """A short name for an engine given by path alone: the socket's stem, or its directory's
    name when the stem says nothing or is taken (``data/cockpit.sock`` is "data"); unique."""

    def clean(text: str) -> str:
        text = re.sub(r"[^A-Za-z0-9_.@:+-]", "-", text)[:28] or "engine"
        return text if text[0].isalnum() else "e" + text[:27]

    stem = clean(path.stem if path.suffix == ".sock" else path.name)
    parent = path.parent.name.lstrip(".")
    candidates = [] if stem in ("cockpit", "default", "e", "engine") else [stem]
    candidates += [clean(parent)] if parent else []
    candidates = candidates or [stem]
    for name in candidates:
        if name not in taken:
            return name
    n = 2
    while f"{candidates[0]}#{n}" in taken:
        n += 1
    return f"{candidates[0]}#{n}"


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def fleet_from_args(args: argparse.Namespace) -> list[FleetEngine] | None:
    """The engines ``cockpit attach`` should watch, or None for one engine (found as before:
    ``--socket``, else ``--data-dir``, else the config's data dir)."""
    sockets = _as_list(getattr(args, "socket", None))
    dirs = _as_list(getattr(args, "data_dir", None))
    fleet_file = getattr(args, "fleet", None)
    if fleet_file is None and len(sockets) <= 1 and len(dirs) <= 1:
        return None
    engines = load_fleet(fleet_file) if fleet_file is not None else []
    taken = {e.name for e in engines}
    for text in sockets:
        p = expand_path(text, "--socket")
        engines.append(FleetEngine(name_for(p, taken), p, "--socket"))
        taken.add(engines[-1].name)
    for text in dirs:
        d = expand_path(text, "--data-dir")
        sock = socket_for_data_dir(d)
        name = name_for(d / "cockpit.sock", taken)
        engines.append(FleetEngine(name, sock, "--data-dir", data_dir=d))
        taken.add(engines[-1].name)
    if len(engines) > MAX_ENGINES:
        raise FleetError(f"{len(engines)} engines, more than {MAX_ENGINES}")
    check_distinct(engines)
    return engines


# --------------------------------------------------------------------------- fleet kill (CLI)

ACCEPTED, REFUSED, UNREACHABLE, FELL_BACK = "accepted", "refused", "unreachable", "fell back"


def fleet_exit_code(answers: list[str]) -> int:
    """0 only when every engine accepted (a fleet of none confirmed nothing); 3 when one was
    not reached or only the fallback reached it; else 1 (one refused)."""
    if answers and all(a == ACCEPTED for a in answers):
        return ExitCode.OK
    if not answers or {UNREACHABLE, FELL_BACK} & set(answers):
        return ExitCode.UNREACHABLE
    return ExitCode.FAILURE


def fleet_rows(results: list[tuple[str, int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each engine's line of a fleet kill from ``kill_one``'s answer: accepted only when its
    engine said ``ok: true`` through its socket, and only once per engine run (the
    welcome's ``instance``): a second entry that reached the same engine (two tunnels to one
    host) did not reach the engine it names."""
    rows = []
    runs: dict[str, str] = {}  # engine run -> the entry that reached it first
    for name, code, result in results:
        if result.get("path") == "fallback":
            answer = FELL_BACK if code == ExitCode.OK else UNREACHABLE
        elif result.get("ok"):
            answer = ACCEPTED
        elif code == ExitCode.UNREACHABLE or result.get("sent") is False:
            answer = UNREACHABLE
        else:
            answer = REFUSED
        run = result.get("instance")
        first = runs.setdefault(run, name) if isinstance(run, str) and run else name
        if first != name:
            # "Confirmed by 2 of 2" while the engine this entry should reach was never asked.
            answer = UNREACHABLE
            result = {
                **result,
                "ok": False,
                "message": f"reached the same engine as {first} (run {run}), so the engine "
                "this entry names was not reached: check its socket (an SSH tunnel to the "
                f"wrong host?); {result.get('message', '')}",
            }
        # The answer last: a reply's own keys ("answer", "engine") never stand in for it.
        rows.append({**result, "engine": name, "answer": answer})
    return rows


async def kill_fleet(args: argparse.Namespace) -> int:
    """``cockpit kill --all --fleet FILE``: the kill switch on every engine at once, each by
    the same way as ``cockpit kill --socket`` (socket, else SIGUSR1 and the KILL file), in
    parallel so a stuck engine costs its own timeout only. One line per engine; exit 0 only
    when every engine confirmed (an answer through its socket), 1 when one refused, 3 when
    one could not be reached or only the fallback reached it."""
    from cockpit.oneshot import kill_one

    try:
        engines = load_fleet(args.fleet)
    except FleetError as exc:
        from cockpit.oneshot import OneShotError

        raise OneShotError(str(exc), ExitCode.USAGE) from None

    async def one(e: FleetEngine) -> tuple[FleetEngine, int, dict[str, Any]]:
        sub = argparse.Namespace(**vars(args))
        # As `cockpit kill --data-dir DIR` (its sockets and its KILL file) or `--socket PATH`.
        sub.socket = None if e.data_dir is not None else str(e.socket)
        sub.data_dir = str(e.data_dir) if e.data_dir is not None else None
        sub.config = None
        code, result = await kill_one(sub)
        return e, code, result

    results = await asyncio.gather(*(one(e) for e in engines))
    rows = fleet_rows([(e.name, code, result) for e, code, result in results])
    code = fleet_exit_code([r["answer"] for r in rows])
    if args.json:
        from cockpit.oneshot import kill_json

        answer = kill_json(args, {"ok": code == ExitCode.OK, "engines": rows})
        print(json.dumps(answer, indent=1, default=str))
        return code
    width = max(len(r["engine"]) for r in rows)
    for r in rows:
        message = printable(str(r.get("message", "")))
        print(f"{r['engine']:<{width}}  {r['answer']:<11}  {message}")
    confirmed = sum(r["answer"] == ACCEPTED for r in rows)
    print(
        f"kill switch confirmed by {confirmed} of {len(rows)} engines",
        file=sys.stdout if code == ExitCode.OK else sys.stderr,
    )
    return code
