"""The control socket: how a cockpit, a script or a person over SSH reaches a headless engine.

A Unix socket rather than TCP so the kernel does the access control: the socket sits in a
directory only its owner can enter (0700, the socket itself 0600), and every peer's uid is
checked with SO_PEERCRED besides. Nothing listens on the network; over SSH you either run the
cockpit on the server or forward the socket (``ssh -L``).

Protocol version 1: newline-delimited JSON, one UTF-8 object per line, at most ``MAX_LINE``
bytes. Every client line is validated by the pydantic models below (unknown fields refused).

client -> server::

    {"type": "hello", "version": 1, "role": "viewer"|"operator", "name": str,
     "resume_from": int|null, "instance": str|null, "subscribe": true}
    {"type": "command", "id": str, "name": str, "args": {...}}   id is the idempotency key
    {"type": "snapshot", "trace": int, "curve": int}              pull the whole state
    {"type": "ping"}

server -> client::

    {"type": "welcome", "version": 1, "server_seq": n, "instance": str, "pid": int,
     "resumed": bool, "message": str, "data_dir": str}
    {"type": "snapshot", "trace": n, "curve": n, "data": {...}}
                                               after hello (unless resumed), and per pull
    {"type": "event", "seq": n, "data": {...}} in seq order, never missing one while connected
    {"type": "reply", "id": str, "ok": bool, "message": str, ...}   one per command
    {"type": "error", "message": str, "fatal": bool}   fatal: the server closes the connection
    {"type": "pong", "server_seq": n}

``instance`` and ``subscribe`` are optional in hello: ``instance`` (from a previous welcome)
lets the server refuse a resume across an engine restart, where seq numbers mean other events;
``subscribe: false`` is for one-shot commands that want neither the snapshot nor the events.

Why each rule:
- An idempotency key seen before gets the stored reply without running again, so a client may
  resend a command after a reconnect without approving or killing twice.
- Malformed input gets an ``error`` line and the connection stays open: a typo in a script
  must never disturb the engine. So does a number longer than ``MAX_NUMBER_CHARS`` (Python
  cannot even read an int past 4,300 digits), a float past its range (``1e999``) and nesting
  deeper than ``MAX_DEPTH``. An over-long line closes the connection (it cannot be framed).
- Each client has a bounded outgoing buffer drained by its own writer task; the engine only
  ever puts into an in-memory queue. A client that reads too slowly is disconnected with a
  reason once its buffer fills, so it can never slow the engine.
- Snapshots are built on one task, paced so that they take at most ``SNAPSHOT_SHARE`` of the
  event loop, once per engine state and size, and the bytes are shared by every client asking.
  A client has at most one snapshot on its way: pulls made before it is built merge into one
  (the larger ``trace`` and ``curve``, which the reply names), pulls made while it is being
  written wait for it. So a client asking for snapshots without reading costs one snapshot,
  and the KILL file and SIGUSR1 never wait behind snapshot building.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import pwd
import resource
import signal
import socket
import stat
import struct
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.datadir import make_private_dirs, read_kill_level, read_pid_file, read_small_file
from engine.vocabulary import JOURNAL_FILE, LOCK_FILE, KillLevel

if TYPE_CHECKING:
    from engine.runtime import Engine

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_LINE = 64 * 1024  # bytes in one client line; longer cannot be framed and closes the link
MAX_QUEUE = 10_000  # messages waiting for one client before it counts as too slow
MAX_QUEUE_BYTES = 16 * 1024 * 1024  # ... or bytes of events and replies (snapshots: see below)
MAX_NUMBER_CHARS = 100  # characters in one JSON number; Python's int() gives up at 4,300 digits
MAX_DEPTH = 32  # nesting of one message: deeper cannot be a command, and json.dumps would fail
WRITE_CHUNK = 256 * 1024  # bytes handed to a client's transport before waiting for it to drain
SNAPSHOT_SHARE = 0.25  # most of the event loop's time snapshot building may take under load
SNAPSHOT_SIZES_KEPT = 4  # (trace, curve) sizes whose line is kept for the current engine state
# A commit waiting this long for the disk is said to clients waiting for a snapshot.
DISK_NOTICE_S = 1.0
DEFAULT_SNAPSHOT = (500, 600)  # (trace, curve) of the snapshot after hello and by default
LISTEN_BACKLOG = 4096  # connections waiting to be accepted (the kernel caps it at somaxconn)
CLOSE_GRACE_S = 10.0  # a dropped client that does not read its last bytes is cut off after this
REPLY_CACHE = 1024  # idempotency keys remembered
CLOSE_COMMANDS_S = 10.0  # the most a close waits for the commands running to finish
MAX_INFLIGHT = 16  # commands one connection may have running at once
# Audit rows the read-only viewers' refused commands may write: a burst, then one per
# VIEWER_AUDIT_EVERY_S. Beyond it a viewer's command is refused without a row of its own and
# counted; the count goes into one summary row when the rate allows (or at close). Without a
# bound a viewer looping on "kill" wrote ~2,000 journal rows a second and could fill the disk,
# which blocks the journal and halts trading: a read-only client must not be able to do that.
VIEWER_AUDIT_BURST = 20
VIEWER_AUDIT_EVERY_S = 10.0
# Connections served at once. Each holds a file descriptor: without a bound, a script opening
# connections in a loop ran the engine out of descriptors, and asyncio then logged a traceback
# per refused accept (hundreds of MB of stderr) while no status or command got through.
MAX_CLIENTS = 1024
ACCEPT_WARNING_EVERY_S = 10.0  # one line per this while accepts fail for want of descriptors
_ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's message for EMFILE
SUN_PATH_MAX = 107  # bytes: sun_path is 108 on Linux, one of which is the terminating NUL
SOCKET_DIR_NAME = "cockpit"
PATH_CHECK_S = 1.0  # how often a running server looks whether its socket file is still there


class ControlError(Exception):
    """The control socket cannot be set up; the message is one line saying what to do."""


# --------------------------------------------------------------------------- protocol models


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Hello(_Msg):
    type: Literal["hello"]
    version: int
    role: Literal["viewer", "operator"]
    name: Annotated[str, Field(min_length=1, max_length=64)]
    resume_from: Annotated[int, Field(ge=0)] | None = None
    instance: Annotated[str, Field(max_length=64)] | None = None
    subscribe: bool = True


class Command(_Msg):
    type: Literal["command"]
    id: Annotated[str, Field(min_length=1, max_length=128)]
    name: Annotated[str, Field(min_length=1, max_length=64)]
    args: dict[str, Any] = Field(default_factory=dict)


class SnapshotRequest(_Msg):
    type: Literal["snapshot"]
    trace: Annotated[int, Field(ge=0, le=100_000)] = DEFAULT_SNAPSHOT[0]
    curve: Annotated[int, Field(ge=0, le=1_000_000)] = DEFAULT_SNAPSHOT[1]


class Ping(_Msg):
    type: Literal["ping"]


CLIENT_MESSAGES: dict[str, type[_Msg]] = {
    "hello": Hello,
    "command": Command,
    "snapshot": SnapshotRequest,
    "ping": Ping,
}


class Welcome(BaseModel):
    """The server's first line; documented as a model so clients and tests share the shape."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["welcome"] = "welcome"
    version: int = PROTOCOL_VERSION
    server_seq: int
    instance: str
    pid: int
    resumed: bool = False
    message: str = ""
    # The data directory this engine serves (absolute): a client that reached it through a
    # forwarded socket (no info file beside it) can still tell it is not the one it named.
    data_dir: str = ""


class ProtocolError(ValueError):
    """A client line that cannot be accepted; the message is the one line sent back."""


def parse_client_line(line: bytes) -> _Msg | None:
    """Decode and validate one client line; None for a blank line (ignored, like a keepalive)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"line is not UTF-8 text (bad byte at {exc.start})") from None
    if not text.strip():
        return None
    try:
        obj = json.loads(
            text, parse_constant=_no_constant, parse_int=_bounded_int, parse_float=_bounded_float
        )
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {exc.msg} at column {exc.colno}") from None
    except _NotJSON as exc:
        raise ProtocolError(str(exc)) from None
    except RecursionError:
        raise ProtocolError("not JSON: nested too deeply") from None
    except ValueError as exc:  # whatever else the decoder refuses: still one line, not a crash
        raise ProtocolError(f"not JSON: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"expected a JSON object with a 'type' field, got {type(obj).__name__}")
    if _deeper_than(obj, MAX_DEPTH):
        raise ProtocolError(f"nested too deeply: more than {MAX_DEPTH} levels of objects and lists")
    kind = obj.get("type")
    model = CLIENT_MESSAGES.get(kind) if isinstance(kind, str) else None
    if model is None:
        known = ", ".join(CLIENT_MESSAGES)
        shown = repr(kind)[:40] if "type" in obj else "nothing"
        raise ProtocolError(f"unknown message type {shown}; expected one of: {known}")
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors()[:5])
        raise ProtocolError(f"{kind}: {problems}") from None


class _NotJSON(ValueError):
    pass


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON; a number that is not a number never reaches a command."""
    raise _NotJSON(f"not JSON: {name} is not allowed")


def _deeper_than(obj: Any, limit: int) -> bool:
    """Whether lists and objects nest more than ``limit`` levels (iterative: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, (dict, list)))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, (dict, list)))
    return False


def _check_number(text: str) -> None:
    """Refuse a number too long to mean anything (and, past 4,300 digits, for int() to read)."""
    if len(text) > MAX_NUMBER_CHARS:
        raise _NotJSON(
            f"number too long: {len(text)} characters, at most {MAX_NUMBER_CHARS}; "
            "send a shorter number"
        )


def _bounded_int(text: str) -> int:
    _check_number(text)
    return int(text)


def _bounded_float(text: str) -> float:
    _check_number(text)
    value = float(text)
    if not math.isfinite(value):  # 1e999 reads as inf: as much not a number as Infinity
        raise _NotJSON(f"number out of range: {text}; send a finite number")
    return value


def _describe(err: Any) -> str:
    where = ".".join(str(p) for p in err["loc"]) or "message"
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown field"
    if err["type"] == "missing":
        return f"{where}: required"
    return f"{where}: {err['msg']}"


def encode(msg: dict[str, Any]) -> bytes:
    """One protocol line. ``default=str`` so an odd value in an event can never kill a client."""
    return json.dumps(msg, separators=(",", ":"), default=str).encode() + b"\n"


# --------------------------------------------------------------------------- paths and checks


def default_socket_path(
    data_dir: str | Path, name: str = "default", env: Mapping[str, str] | None = None
) -> Path:
    """``$XDG_RUNTIME_DIR/cockpit/<name>.sock`` (per-user tmpfs), else ``<data_dir>/cockpit.sock``.

    The data directory is created 0700 by the journal, so it qualifies as the socket's home.
    A relative ``$XDG_RUNTIME_DIR`` is invalid and ignored, as the XDG base directory spec
    says (it put the socket under whatever directory the engine was started in, where no
    ``cockpit status`` run elsewhere finds it), and so is one naming a file (the engine died
    with 'unexpected error: NotADirectoryError'). Engine and clients decide alike.
    """
    runtime = (os.environ if env is None else env).get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and not _exists_not_dir(runtime):
        return Path(runtime) / SOCKET_DIR_NAME / f"{name}.sock"
    return Path(data_dir) / "cockpit.sock"


def _exists_not_dir(path: str) -> bool:
    return os.path.exists(path) and not os.path.isdir(path)


def served_data_dir(sock: Path) -> str | None:
    """The data directory the engine listening on ``sock`` wrote in its info file, if any."""
    try:
        info = json.loads(read_small_file(info_path(sock)) or b"")
    except (OSError, ValueError, RecursionError):
        return None
    where = info.get("data_dir") if isinstance(info, dict) else None
    return where if isinstance(where, str) else None


def socket_for_data_dir(data_dir: str | Path) -> Path:
    """The socket a client reaches the engine of ``data_dir`` by. Under ``$XDG_RUNTIME_DIR``
    every engine's default socket is the same file: the first engine started holds it, so a
    client asking for another data directory would reach (and command, and kill) that one.
    When the engine there names another data directory in its info file, it is not this one:
    ``DATA_DIR/cockpit.sock`` is the place to look instead."""
    path = default_socket_path(data_dir)
    local = Path(data_dir) / "cockpit.sock"
    if path == local:
        # No $XDG_RUNTIME_DIR here (cron, a script, a shell without a login session) while the
        # engine, a systemd user unit, listens in the runtime directory logind made for this
        # user: taken when the engine there names this data directory, else the data dir's
        # (also when a crash left a socket file there that nothing listens on: no engine).
        runtime = Path(LOGIND_RUNTIME_ROOT) / str(os.getuid()) / SOCKET_DIR_NAME / "default.sock"
        with contextlib.suppress(OSError, ValueError):
            if _same_dir(served_data_dir(runtime), data_dir) and (
                not local.exists() or probe(local, timeout=0.5) != "live"
            ):
                return runtime
        return local
    where = served_data_dir(path)
    if where is None:
        return path
    try:
        if Path(where).resolve() == Path(data_dir).resolve():
            return path
    except (OSError, ValueError):
        return path
    return local


# Where logind makes each user's $XDG_RUNTIME_DIR (/run/user/UID).
LOGIND_RUNTIME_ROOT = "/run/user"


def _same_dir(where: str | None, data_dir: str | Path) -> bool:
    if where is None:
        return False
    try:
        return Path(where).resolve() == Path(data_dir).resolve()
    except (OSError, ValueError):
        return False


def pid_path(sock: Path) -> Path:
    """Plain pid of the server, for ``kill -USR1 $(cat ...)`` and the one-shot kill fallback."""
    return sock.with_name(sock.name + ".pid")


def info_path(sock: Path) -> Path:
    """Where the server says how to reach it without the socket (pid, KILL file, SIGUSR1)."""
    return sock.with_name(sock.name + ".json")


def lock_path(sock: Path) -> Path:
    """Locked (``flock``) by the engine that serves ``sock``, from before that engine starts
    until it closes: two engines started at the same instant on one socket path cannot both
    find it free, both start, and then the later one replace (or be refused) the other's
    socket. Its holder removes it as it lets go (see ``ControlServer.release``)."""
    return sock.with_name(sock.name + ".lock")


def check_socket_path(path: Path) -> None:
    """A path longer than sun_path fails deep in bind() with a cryptic error; say it plainly."""
    n = len(os.fsencode(str(path)))
    if n > SUN_PATH_MAX:
        raise ControlError(
            f"socket path is {n} bytes, over the {SUN_PATH_MAX}-byte limit of a Unix socket "
            f"({path}); pass --socket with a shorter path, e.g. /tmp/cockpit-{os.getuid()}/"
            "engine.sock"
        )


def check_peer(peer_uid: int, own_uid: int | None = None) -> str | None:
    """Why a peer is refused (None: allowed). Only the engine's own user may connect."""
    own = os.geteuid() if own_uid is None else own_uid
    if peer_uid != own:
        return f"refused: peer uid {peer_uid} is not the engine's uid {own}"
    return None


def check_private_dir(path: Path, own_uid: int | None = None) -> None:
    """Refuse a socket directory others could enter or that belongs to someone else."""
    own = os.geteuid() if own_uid is None else own_uid
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ControlError(f"socket directory {path} does not exist") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ControlError(f"{path} is not a directory; pass --socket with another path")
    if st.st_uid != own:
        raise ControlError(
            f"socket directory {path} belongs to uid {st.st_uid}, not you (uid {own}); "
            "pass --socket with a path in a directory of your own"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ControlError(
            f"socket directory {path} is mode {mode:04o}; others could reach the socket. "
            f"Run `chmod 700 {path}` or pass --socket with a path in a private directory"
        )


def check_socket_ancestors(directory: Path) -> None:
    """Refuse a socket directory inside one every user may write into and that is not sticky
    (an ``XDG_RUNTIME_DIR`` that is not the user's own 0700 one, a shared folder): any user
    could move the private directory away and put one of their own in its place, and then
    nobody reached the engine (`cockpit status`, `attach`, the socket path of `cockpit kill`)
    while it traded on. The data directory's rule (engine.datadir.check_own_dir)."""
    given = Path(os.path.abspath(directory))
    for parent in dict.fromkeys((*given.parents, *Path(os.path.realpath(directory)).parents)):
        try:
            mode = stat.S_IMODE(os.stat(parent).st_mode)
        except OSError:
            continue  # not there yet: it is made 0700
        if mode & 0o002 and not mode & stat.S_ISVTX:
            raise ControlError(
                f"the socket directory {directory} is inside {parent}, mode {mode:04o}: any "
                "user could move it away and put their own in its place, and nobody could "
                f"reach this engine. Run `chmod o-w {parent}`, or pass --socket with a path "
                "in a private directory"
            )


def ensure_private_dir(path: Path) -> None:
    """Create the socket directory 0700, or check an existing one (never loosen or tighten it)."""
    try:
        make_private_dirs(path.parent)
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    except FileExistsError:
        pass
    except OSError as exc:
        raise ControlError(f"cannot create socket directory {path}: {exc.strerror}") from None
    check_private_dir(path)


def probe(path: Path, timeout: float = 1.0) -> Literal["absent", "stale", "live"]:
    """Tell a live server from a stale socket file left by a crash."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
    except FileNotFoundError:
        return "absent"
    except ConnectionRefusedError:
        return "stale"
    except (TimeoutError, BlockingIOError):
        return "live"  # someone holds it but does not accept: not ours to remove
    except OSError:
        return "stale" if not path.exists() or not _is_socket(path) else "live"
    finally:
        s.close()
    return "live"


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def peer_credentials(sock: Any) -> tuple[int, int, int]:
    """(pid, uid, gid) of the other end of a connected Unix socket (Linux SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- server


class _Conn:
    """One client: its reader loop runs in the server's handler; a writer task drains ``out``.

    What one client can make the engine hold is bounded: events and replies in ``out`` up to
    ``max_queue`` messages or ``max_queue_bytes`` (an event's bytes are encoded once and shared
    by every client), plus at most one snapshot (shared too: built once per engine state) that
    goes to the transport in ``WRITE_CHUNK`` slices, so the transport never copies more.
    """

    def __init__(
        self, server: ControlServer, writer: asyncio.StreamWriter, peer: tuple[int, int, int]
    ) -> None:
        self.server = server
        self.writer = writer
        self.pid, self.uid, _ = peer
        self.user = _user_name(self.uid)
        self.role: str | None = None
        self.name = "?"
        self.subscribed = False
        self.after_seq = 0
        self.closed = False
        self.out: deque[bytes] = deque()
        self.out_bytes = 0  # events and replies only; the snapshot is bounded by being one
        self.sent = 0
        self.snapshot: bytes | None = None  # queued in ``out`` or being written
        self.wanted: tuple[int, int] | None = None  # (trace, curve) asked for, not yet built
        self.initial = False  # the wanted snapshot follows hello: the event stream starts at it
        self._partial = False  # a snapshot is half written (a closing line must start afresh)
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self.inflight: set[asyncio.Task[Any]] = set()
        self.task = asyncio.create_task(self._write_loop())

    def send(self, msg: dict[str, Any]) -> None:
        self.send_bytes(encode(msg))

    def send_bytes(self, data: bytes) -> None:
        """Queue a line; never waits. A full buffer means the client is too slow: drop it."""
        if self.closed:
            return
        srv = self.server
        if len(self.out) >= srv.max_queue or self.out_bytes + len(data) > srv.max_queue_bytes:
            self._too_slow()
            return
        self.out.append(data)
        self.out_bytes += len(data)
        self._drained.clear()
        self._wake.set()

    def want_snapshot(self, trace: int, curve: int) -> None:
        """Ask for a snapshot. Requests made before it is built merge into one (the larger
        trace and curve); while one is still being written, the next waits for it."""
        if self.closed:
            return
        self.server.snapshot_requests += 1
        if self.wanted is None:
            self.wanted = (trace, curve)
        else:
            self.wanted = (max(self.wanted[0], trace), max(self.wanted[1], curve))
        self._drained.clear()
        if self.snapshot is None:
            self.server._want(self)

    def give_snapshot(self, line: bytes, seq: int) -> None:
        """The snapshot task's answer: queue it after every event up to its ``seq``."""
        if self.closed:
            return
        self.snapshot = line
        self.out.append(line)
        if self.initial:
            self.initial = False
            self.after_seq = seq
            self.subscribed = True
        self._wake.set()

    def _too_slow(self) -> None:
        srv = self.server
        n, size = len(self.out), self.out_bytes
        srv.slow_disconnects += 1
        log.warning("control: disconnecting slow client %s (pid %s)", self.name, self.pid)
        reason = (
            f"disconnected: this client read too slowly and its outgoing buffer filled "
            f"({n} messages, {size} bytes; limit {srv.max_queue} messages or "
            f"{srv.max_queue_bytes} bytes); reconnect and resume from your last seq"
        )
        self._hard_close(reason)

    def _hard_close(self, reason: str | None) -> None:
        """Close without waiting for the peer: the error line goes after what is in flight."""
        if self.closed:
            return
        self.closed = True
        self.subscribed = False
        self.wanted = None
        self.task.cancel()
        self.out.clear()
        self.out_bytes = 0
        self.snapshot = None
        transport = self.writer.transport
        with contextlib.suppress(Exception):
            if reason is not None:
                line = encode({"type": "error", "message": reason, "fatal": True})
                transport.write(b"\n" + line if self._partial else line)
            transport.close()  # flushes what is buffered, then closes
            if transport.get_write_buffer_size():
                # A peer that never reads would keep those bytes forever: cut it off later.
                asyncio.get_running_loop().call_later(
                    self.server.close_grace_s, _abort_if_unsent, transport
                )
        self._drained.set()
        self.server._forget(self)

    async def _write_loop(self) -> None:
        w = self.writer
        out = self.out
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while out:
                    if out[0] is self.snapshot:
                        await self._write_snapshot(out.popleft())
                        continue
                    batch: list[bytes] = []
                    size = 0
                    while out and size < WRITE_CHUNK and out[0] is not self.snapshot:
                        b = out.popleft()
                        batch.append(b)
                        size += len(b)
                    self.out_bytes -= size
                    w.write(b"".join(batch))
                    self.sent += len(batch)
                    await w.drain()
                if self.wanted is None and self.snapshot is None:
                    self._drained.set()
        except (ConnectionError, OSError):
            self._hard_close(None)

    async def _write_snapshot(self, line: bytes) -> None:
        """Slices of the shared bytes, each drained before the next: never a private copy."""
        w = self.writer
        view = memoryview(line)
        self._partial = True
        for start in range(0, len(view), WRITE_CHUNK):
            w.write(view[start : start + WRITE_CHUNK])
            await w.drain()
        self._partial = False
        self.sent += 1
        self.snapshot = None
        if self.wanted is not None:
            self.server._want(self)  # asked again while this one was on its way

    async def finish(self, error: str | None = None, timeout: float = 5.0) -> None:
        """Orderly close: let replies (and a snapshot) still owed land, flush, then close."""
        if error is not None:
            self.send({"type": "error", "message": error, "fatal": True})
        self.subscribed = False
        self.initial = False
        if self.inflight:
            await asyncio.wait(list(self.inflight), timeout=timeout)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout)
        self._hard_close(None)


def _abort_if_unsent(transport: asyncio.BaseTransport) -> None:
    """Abort a closing transport whose peer never read its last bytes. One whose buffer is
    empty has closed already, and asyncio's abort() fails on it (its loop is gone)."""
    if isinstance(transport, asyncio.WriteTransport) and transport.get_write_buffer_size():
        transport.abort()


class _Cached:
    """A command's reply (or the future of it, while it runs), keyed by idempotency key."""

    __slots__ = ("fingerprint", "future")

    def __init__(self, fingerprint: bytes, future: asyncio.Future[dict[str, Any]]) -> None:
        self.fingerprint = fingerprint
        self.future = future


class ControlServer:
    """Serves one engine on a Unix socket. Start it after ``engine.start()``; close it before
    ``engine.stop()``. With ``handle_sigusr1`` it also engages the kill switch on SIGUSR1 (the
    fallback of ``cockpit kill`` when this socket does not answer)."""

    def __init__(
        self,
        engine: Engine,
        path: str | Path,
        *,
        handle_sigusr1: bool = False,
        max_queue: int = MAX_QUEUE,
        max_queue_bytes: int = MAX_QUEUE_BYTES,
        max_line: int = MAX_LINE,
        reply_cache: int = REPLY_CACHE,
        close_grace_s: float = CLOSE_GRACE_S,
        uid: int | None = None,
        max_clients: int | None = None,
    ) -> None:
        self.engine = engine
        self.path = Path(path)
        self.handle_sigusr1 = handle_sigusr1
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.max_line = max_line
        self.reply_cache = reply_cache
        self.close_grace_s = close_grace_s
        self.max_clients = default_max_clients() if max_clients is None else max_clients
        self.too_many_clients = 0  # connections refused because max_clients were served
        self.accept_failures = 0  # accepts that failed for want of file descriptors
        self._accept_warned_at: float | None = None
        self._loop_handler: Any = None
        self._handler_installed = False
        self.uid = os.geteuid() if uid is None else uid  # the only uid allowed in
        self.instance = ""  # names the engine run (set at start), so resumes never cross one
        self.slow_disconnects = 0
        self.refused_peers = 0
        self.snapshot_requests = 0  # asked for (hello included) ...
        self.snapshots_built = 0  # ... and built: shared by all who asked at one engine state
        self._server: asyncio.Server | None = None
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._fanout: asyncio.Task[None] | None = None
        self._conns: set[_Conn] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._replies: OrderedDict[str, _Cached] = OrderedDict()
        self._commands: set[asyncio.Task[Any]] = set()
        # Viewers' refused commands: tokens for their audit rows; and the commands refused without
        # a row of their own (viewers' past the rate, the socket's own refusals), to summarise.
        self.viewer_audit_burst = VIEWER_AUDIT_BURST
        self.viewer_audit_every_s = VIEWER_AUDIT_EVERY_S
        self._viewer_tokens = float(VIEWER_AUDIT_BURST)
        self._viewer_tokens_at = time.monotonic()
        self._unrecorded: Counter[str] = Counter()  # command name -> refused without a row
        self._unrecorded_from: Counter[tuple[str, str]] = Counter()  # (user, client) -> count
        self._summary_task: asyncio.Task[None] | None = None
        self._closing = False
        self._inode: tuple[int, int] | None = None
        self._lock_fd: int | None = None  # lock_path(path), held from check_free to close
        self._signal_installed = False
        self._guard: asyncio.Task[None] | None = None  # serves the path again if removed
        # Snapshots: who waits for one (an ordered set), and the lines built for the engine
        # state ``_snap_state`` (a few sizes), so every client asking at that state shares one.
        self._snap_wanted: dict[_Conn, None] = {}
        self._lines: dict[int, bytes] = {}  # seq -> encoded event line (see _event_line)
        self._snap_wake = asyncio.Event()
        self._snap_task: asyncio.Task[None] | None = None
        self._snap_state: tuple[Any, ...] | None = None
        self._snap_lines: OrderedDict[tuple[int, int], tuple[bytes, int]] = OrderedDict()
        self._built_size: tuple[int, int] = DEFAULT_SNAPSHOT  # the size built last

    @property
    def clients(self) -> list[dict[str, Any]]:
        """Who is attached (for status lines and tests)."""
        return [
            {
                "name": c.name,
                "role": c.role,
                "pid": c.pid,
                "user": c.user,
                "queued": len(c.out),
                "sent": c.sent,
            }
            for c in self._conns
        ]

    # ------------------------------------------------------------------ lifecycle

    def check_path(self, create: bool = True) -> None:
        """Refuse a socket path that cannot be served (too long, a directory others can enter)
        with a ControlError: called before the engine starts, so a refusal writes nothing.
        ``create``: make the socket's directory when it is missing (else only check the one
        there: an engine refused its data directory must not have made it)."""
        check_socket_path(self.path)
        check_socket_ancestors(self.path.parent)
        if create:
            ensure_private_dir(self.path.parent)
        elif os.path.lexists(self.path.parent):
            check_private_dir(self.path.parent)

    def check_free(self) -> None:
        """Refuse, with a ControlError, a path another engine serves or is starting to serve
        (or that is not a socket): called before the engine starts, so a refusal opens no
        venue and journals no session. From here on the path is this server's (its lock is
        held until :meth:`close`, or :meth:`release` when the engine never started)."""
        self._take_lock()
        try:
            self._stale_socket()
        except ControlError:
            self.release()
            raise

    def _take_lock(self) -> None:
        """Hold :func:`lock_path` or raise ControlError naming the engine that holds it."""
        if self._lock_fd is not None:
            return
        path = lock_path(self.path)
        while True:
            try:
                # Never through a symlink: a lock taken on whatever a link points at would not
                # be this socket's.
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                what = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
                raise ControlError(
                    f"cannot lock the socket path: {path} ({what}); remove it or pass --socket "
                    "with another path"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                pid = _read_pid(pid_path(self.path))
                who = f" (pid {pid})" if pid else ""
                raise ControlError(
                    f"another engine is already listening on {self.path}{who}, or starting to; "
                    "stop it first or pass --socket with another path"
                ) from None
            # The holder removes the file as it lets go: a lock on a file no longer at the
            # path is no lock on the path (the next engine's is on a new file): again.
            try:
                same = os.path.samestat(os.fstat(fd), os.lstat(path))
            except FileNotFoundError:
                same = False
            if same:
                self._lock_fd = fd
                return
            os.close(fd)

    def release(self) -> None:
        """Let the socket path go (after :meth:`close`, or when the engine never started): the
        lock file is removed while still held, so whoever locks the path next finds it new."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(fd), os.lstat(lock_path(self.path))):
                os.unlink(lock_path(self.path))  # (not a successor's, made after ours went)
        os.close(fd)  # closing the only descriptor drops the flock

    def _stale_socket(self) -> bool:
        """Is a socket file a crash left there (to remove)? ControlError if the path is taken:
        not a socket, or a live engine listens on it."""
        path = self.path
        if not (path.exists() or path.is_symlink()):
            return False
        if not _is_socket(path):
            if self._engine_file(path):  # never advise removing a journal, a lock, a KILL file
                raise ControlError(
                    f"{path} is one of the engine's own files, not a socket; keep it and "
                    "pass --socket with another path"
                )
            raise ControlError(
                f"{path} exists and is not a socket; remove it or pass --socket elsewhere"
            )
        if probe(path) == "live":
            pid = _read_pid(pid_path(path))
            who = f" (pid {pid})" if pid else ""
            raise ControlError(
                f"another engine is already listening on {path}{who}; stop it first or "
                "pass --socket with another path"
            )
        return True

    def _engine_file(self, path: Path) -> bool:
        """Is ``path`` one of the engine's own files (its journal, WAL, anchor, data-dir lock,
        KILL file)? A socket path naming one must not be answered with "remove it"."""
        engine = self.engine
        data_dir = getattr(engine, "data_dir", None)
        if data_dir is None:
            return False
        try:
            if not os.path.samefile(path.parent, data_dir):
                return False
        except OSError:
            return False
        name = path.name
        kill = getattr(engine, "kill_file", None)
        kill_name = kill.name if isinstance(kill, Path) else None
        return name.startswith(JOURNAL_FILE) or name in (LOCK_FILE, kill_name)

    async def start(self) -> None:
        """Check the path, clean a stale socket, bind 0600 in a 0700 directory, and listen."""
        path = self.path
        self.check_path()
        self._take_lock()  # held already when check_free ran before the engine started
        if self._stale_socket():  # looked at again: another engine may have come meanwhile
            log.info("control: removing stale socket %s", path)
            for p in (path, pid_path(path), info_path(path)):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        try:
            sock = self._bind()
        except ControlError:
            self.release()
            raise
        session = getattr(self.engine.core, "session", 0)
        self.instance = f"{os.getpid():x}-{session}-{id(self.engine):x}"
        self._queue = self.engine.subscribe_dicts()
        self._fanout = asyncio.create_task(self._fanout_loop())
        self._snap_task = asyncio.create_task(self._snapshot_loop())
        # asyncio listens again with its own backlog (100 unless told): pass ours.
        self._server = await asyncio.start_unix_server(
            self._on_connect, sock=sock, limit=self.max_line, backlog=LISTEN_BACKLOG
        )
        loop = asyncio.get_running_loop()
        self._loop_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._on_loop_exception)
        self._handler_installed = True
        if self.handle_sigusr1:
            try:
                asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self._on_sigusr1)
                self._signal_installed = True
            except (RuntimeError, ValueError, NotImplementedError) as exc:
                log.warning("control: cannot handle SIGUSR1 here (%s)", exc)
        self._write_files()
        self._guard = asyncio.create_task(self._guard_path())

    def _bind(self) -> socket.socket:
        """A listening socket at the path, 0600 (ControlError when the system refuses)."""
        path = self.path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
            st = os.stat(path)
        except OSError as exc:
            sock.close()
            raise ControlError(f"cannot listen on {path}: {exc.strerror or exc}") from None
        self._inode = (st.st_dev, st.st_ino)
        return sock

    def _write_files(self) -> None:
        path = self.path
        _write_private(pid_path(path), f"{os.getpid()}\n")
        info = {
            "pid": os.getpid(),
            "socket": str(path),
            "data_dir": str(self.engine.data_dir.resolve()),
            "kill_file": str(self.engine.kill_file.resolve()),
            "sigusr1": self._signal_installed or _catches_sigusr1(),
            "instance": self.instance,
            "version": PROTOCOL_VERSION,
        }
        _write_private(info_path(path), json.dumps(info, indent=1) + "\n")

    async def _guard_path(self) -> None:
        """The socket file removed under a running engine (logind removes /run/user/UID when
        its user's last session ends, a tmp cleaner, a person): nobody could attach, approve or
        release again until a restart. Looked at every ``PATH_CHECK_S``: a path that is gone
        is served again (its directory made again 0700 when it can be); a path something else
        took meanwhile (another engine) is left to it."""
        while not self._closing:
            await asyncio.sleep(PATH_CHECK_S)
            try:
                await self._serve_again()
            except Exception as exc:  # never into the engine; tried again at the next look
                log.warning("control: cannot serve %s again (%s)", self.path, exc)

    async def _serve_again(self) -> None:
        if self._closing or self._server is None or os.path.lexists(self.path):
            return
        try:
            ensure_private_dir(self.path.parent)
        except ControlError:
            return  # e.g. /run/user/UID itself is gone until its user logs in again
        if not self._relock():
            return
        try:
            sock = self._bind()
        except ControlError:
            return
        old = self._server
        self._server = await asyncio.start_unix_server(
            self._on_connect, sock=sock, limit=self.max_line, backlog=LISTEN_BACKLOG
        )
        old.close()  # its file is gone: nobody can connect to it; its clients stay connected
        self._write_files()
        log.warning("control: %s had been removed; listening there again", self.path)

    def _relock(self) -> bool:
        """Hold the lock file at the path again (its directory may have been removed with it);
        False when another engine holds it now."""
        fd = self._lock_fd
        if fd is not None:
            try:
                if os.path.samestat(os.fstat(fd), os.lstat(lock_path(self.path))):
                    return True
            except FileNotFoundError:
                pass
        self._lock_fd = None
        try:
            self._take_lock()
        except ControlError:
            self._lock_fd = fd  # let go at close, leaving the new holder's file alone
            return False
        if fd is not None:
            os.close(fd)
        return True

    async def close(self) -> None:
        """Stop listening, let running commands finish, drop every client, remove our files."""
        if self._signal_installed:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
            self._signal_installed = False
        if self._handler_installed:
            asyncio.get_running_loop().set_exception_handler(self._loop_handler)
            self._handler_installed = False
        self._closing = True  # from now on only a kill runs; the rest is refused, not applied
        if self._guard is not None:
            self._guard.cancel()
            with contextlib.suppress(BaseException):
                await self._guard
            self._guard = None
        if self._server is not None:
            self._server.close()
        # Every command started is finished (a kill may arrive meanwhile: it is waited for too),
        # then its reply delivered, before the connections close.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_COMMANDS_S
        while self._commands and (left := deadline - loop.time()) > 0:
            await asyncio.wait(list(self._commands), timeout=left)
        if self._summary_task is not None:
            self._summary_task.cancel()
            with contextlib.suppress(BaseException):
                await self._summary_task
            self._summary_task = None
        await self._record_unrecorded()  # what the rate held back is in the audit log too
        owed = [
            asyncio.create_task(conn.finish("the engine is shutting down", timeout=1.0))
            for conn in list(self._conns)
        ]
        if owed:
            await asyncio.wait(owed, timeout=2.0)
        for conn in list(self._conns):
            conn._hard_close("the engine is shutting down")
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
            self._server = None
        for attr in ("_fanout", "_snap_task"):
            task = getattr(self, attr)
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                setattr(self, attr, None)
        self._snap_wanted.clear()
        self._snap_lines.clear()
        self._lines.clear()
        if self._queue is not None:
            self.engine.unsubscribe(self._queue)
            self._queue = None
        self._remove_files()
        self.release()

    def _remove_files(self) -> None:
        """Remove the socket only if it is still ours (a successor may have replaced it)."""
        if self._inode is None:
            return
        try:
            st = os.stat(self.path)
            ours = (st.st_dev, st.st_ino) == self._inode
        except FileNotFoundError:
            ours = False
        if ours:
            for p in (self.path, pid_path(self.path), info_path(self.path)):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        self._inode = None

    def _on_loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio reports every accept that fails for want of descriptors with a traceback,
        thousands a second under a connection flood: one line every few seconds says it."""
        if context.get("message") != _ACCEPT_FAILED:
            if self._loop_handler is not None:
                self._loop_handler(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.accept_failures += 1
        now = loop.time()
        if self._accept_warned_at is None or now - self._accept_warned_at >= ACCEPT_WARNING_EVERY_S:
            self._accept_warned_at = now
            exc = context.get("exception")
            log.warning(
                "control: cannot accept connections (%s; %d refused so far); close idle "
                "clients or raise the open-file limit (ulimit -n)",
                getattr(exc, "strerror", None) or exc,
                self.accept_failures,
            )

    def _on_sigusr1(self) -> None:
        level = read_kill_level(self.engine.kill_file) or KillLevel.HALT
        task = asyncio.ensure_future(
            self.engine.engage_kill(level, by="signal", reason="SIGUSR1", source="signal")
        )
        self._commands.add(task)
        task.add_done_callback(self._commands.discard)

    # ------------------------------------------------------------------ fan-out

    async def _fanout_loop(self) -> None:
        q = self._queue
        assert q is not None
        while True:
            item = await q.get()
            self._dispatch(item)
            self._pump_now()

    def _pump_now(self) -> None:
        """Hand every event the engine has published so far to the clients (never waits)."""
        q = self._queue
        if q is None:
            return
        while True:
            try:
                item = q.get_nowait()
            except asyncio.QueueEmpty:
                return
            self._dispatch(item)

    def _dispatch(self, item: dict[str, Any]) -> None:
        seq = item["seq"]
        targets = [c for c in self._conns if c.subscribed and seq > c.after_seq]
        if not targets:
            return
        line = self._event_line(item)
        for c in targets:
            c.send_bytes(line)

    def _event_line(self, item: dict[str, Any]) -> bytes:
        """An event's protocol line, encoded once: live and resuming clients share its bytes.
        Kept while the engine still buffers the event (lines for older seqs are pruned)."""
        seq = item["seq"]
        line = self._lines.get(seq)
        if line is None:
            line = self._lines[seq] = encode({"type": "event", "seq": seq, "data": item})
            recent = self.engine.recent
            if len(self._lines) > 2 * (recent.maxlen or len(recent)) and recent:
                first = recent[0]["seq"]
                self._lines = {s: b for s, b in self._lines.items() if s >= first}
        return line

    def _forget(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        self._snap_wanted.pop(conn, None)

    # ------------------------------------------------------------------ snapshots

    def _want(self, conn: _Conn) -> None:
        self._snap_wanted[conn] = None
        self._snap_wake.set()

    async def _snapshot_loop(self) -> None:
        """Build snapshots on one task, one size at a time, and pace them: after a build that
        took t, wait t * (1/SNAPSHOT_SHARE - 1). However many clients ask, building them never
        takes more than that share of the event loop from the engine and its kill paths."""
        loop = asyncio.get_running_loop()
        rest = 1.0 / SNAPSHOT_SHARE - 1.0
        while True:
            await self._snap_wake.wait()
            self._snap_wake.clear()
            while self._snap_wanted:
                # What was done before the request is shown (committed) before it is built.
                await self._committed()
                started = loop.time()
                blocked = self.engine.blocked_reason
                built = self._build_snapshot()
                spent = loop.time() - started
                if built is not None:
                    # Nothing is shown before it is durable: the snapshot goes out once every
                    # row behind what it shows is committed (a group commit, milliseconds).
                    await self._committed(built[0])
                    if self.engine.blocked_reason != blocked:
                        # Those rows failed instead: what it showed never became durable, and
                        # it read ACTIVE while the engine had blocked. Built again, BLOCKED.
                        built = self._rebuild_snapshot(built)
                    if built is not None:
                        self._give_snapshot(*built)
                await asyncio.sleep(spent * rest)

    async def _committed(self, served: Iterable[_Conn] = ()) -> None:
        """``engine.committed()``; while a commit waits for the disk, each client waiting for a
        snapshot hears why, once a second (without it, `cockpit status` said only that no
        snapshot came, as if the engine were gone)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def deliver() -> None:
            if not waiter.done():
                waiter.set_result(None)

        self.engine.when_committed(deliver)
        if waiter.done():
            return  # at once, as engine.committed(): nothing waited for the disk
        try:
            while not (await asyncio.wait({waiter}, timeout=DISK_NOTICE_S))[0]:
                journal = self.engine.journal
                age = journal.commit_age_s() if journal is not None else 0.0
                if age < DISK_NOTICE_S:
                    continue
                notice = {
                    "type": "error",
                    "fatal": False,
                    "message": (
                        f"the journal has waited {age:.0f} s for the disk: a snapshot waits until "
                        "what it shows is recorded (nothing is recorded and no order is sent "
                        "meanwhile)"
                    ),
                }
                for c in {*self._snap_wanted, *served}:
                    if not c.closed:
                        c.send(notice)
        finally:
            waiter.cancel()

    def _build_snapshot(self) -> tuple[list[_Conn], bytes, int] | None:
        """One shared line for every client waiting for the first waiter's size."""
        waiting = [c for c in self._snap_wanted if not c.closed and c.wanted is not None]
        self._snap_wanted.clear()
        if not waiting:
            return None
        size = waiting[0].wanted
        assert size is not None
        served = [c for c in waiting if c.wanted == size]
        for c in waiting:
            if c.wanted != size:
                self._snap_wanted[c] = None
        for c in served:
            c.wanted = None  # asked again while this one waits for the commit: built afresh
        return self._snapshot_for(served, size)

    def _rebuild_snapshot(
        self, built: tuple[list[_Conn], bytes, int]
    ) -> tuple[list[_Conn], bytes, int] | None:
        """``built``'s snapshot again, at the engine's state now, for the same clients."""
        return self._snapshot_for(built[0], self._built_size)

    def _snapshot_for(
        self, served: list[_Conn], size: tuple[int, int]
    ) -> tuple[list[_Conn], bytes, int] | None:
        self._built_size = size
        try:
            line, seq = self._snapshot_line(*size)
        except Exception as exc:  # the engine is never disturbed by what a client asks
            log.exception("control: building a snapshot failed")
            for c in served:
                c.wanted = None
                c.send({"type": "error", "message": f"server error: {exc}", "fatal": False})
            return None
        return served, line, seq

    def _give_snapshot(self, served: list[_Conn], line: bytes, seq: int) -> None:
        """Queue a committed snapshot after every event up to its ``seq``; a client joining
        the stream with it also gets the events shown while it waited for the commit."""
        self._pump_now()
        since: list[dict[str, Any]] | None = None
        for c in served:
            if not c.initial:
                c.give_snapshot(line, seq)
                continue
            if since is None:
                since = self.engine.events_since(seq)
            if since is None:  # aged out of the buffer meanwhile: a fresh snapshot instead
                c.wanted = None
                c.want_snapshot(*DEFAULT_SNAPSHOT)
                continue
            c.give_snapshot(line, seq)
            for item in since:
                c.send_bytes(self._event_line(item))
            if since:
                c.after_seq = since[-1]["seq"]

    def _snapshot_line(self, trace: int, curve: int) -> tuple[bytes, int]:
        """The encoded snapshot of this size at the engine's current state (built once)."""
        engine = self.engine
        state = (
            engine.seq,
            engine.quotes_processed,
            getattr(engine.core, "clock_now", None),
            engine.blocked_reason,
        )
        if state != self._snap_state:
            self._snap_state = state
            self._snap_lines.clear()
        hit = self._snap_lines.get((trace, curve))
        if hit is None:
            snap = engine.snapshot(trace, curve)
            self.snapshots_built += 1
            msg = {"type": "snapshot", "trace": trace, "curve": curve, "data": snap}
            hit = self._snap_lines[(trace, curve)] = (encode(msg), snap["seq"])
            if len(self._snap_lines) > SNAPSHOT_SIZES_KEPT:
                self._snap_lines.popitem(last=False)
        return hit

    # ------------------------------------------------------------------ connections

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("control: connection handler failed")
        finally:
            if task is not None:
                self._handlers.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = peer_credentials(writer.get_extra_info("socket"))
        except OSError:
            peer = (0, -1, -1)
        conn = _Conn(self, writer, peer)
        self._conns.add(conn)
        try:
            await self._read_lines(conn, reader)
        finally:
            conn._hard_close(None)  # whatever ended the handler, nothing of it stays behind

    async def _read_lines(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        refusal = check_peer(conn.uid, self.uid)
        if refusal is not None:
            self.refused_peers += 1
            await conn.finish(refusal, timeout=1.0)
            return
        if len(self._conns) > self.max_clients:
            self.too_many_clients += 1
            await conn.finish(
                f"too many connections ({self.max_clients} served at once); close some "
                "(cockpit attach, scripts) and connect again",
                timeout=1.0,
            )
            return
        while not conn.closed:
            try:
                line = await reader.readline()
            except ValueError:  # the line is longer than the reader's limit
                await conn.finish(f"line longer than {self.max_line} bytes; closing the connection")
                return
            except (ConnectionError, OSError):
                return
            if not line:
                await conn.finish()  # EOF: replies still owed are delivered first
                return
            fatal = self._handle_line(conn, line)
            if fatal is not None:
                await conn.finish(fatal)
                return
            # readline() does not yield while lines are buffered: without this, one client
            # sending lines in bulk would hold the event loop from the engine and its kill paths.
            await asyncio.sleep(0)

    def _handle_line(self, conn: _Conn, line: bytes) -> str | None:
        """Answer one line. Returns a fatal error (close after it) or None. Never raises."""
        try:
            msg = parse_client_line(line)
        except ProtocolError as exc:
            conn.send({"type": "error", "message": str(exc), "fatal": False})
            return None
        if msg is None:
            return None
        try:
            if isinstance(msg, Hello):
                return self._hello(conn, msg)
            if conn.role is None:
                conn.send(
                    {
                        "type": "error",
                        "message": 'say hello first: {"type":"hello","version":1,'
                        '"role":"viewer","name":"me","resume_from":null}',
                        "fatal": False,
                    }
                )
            elif isinstance(msg, Command):
                self._command(conn, msg)
            elif isinstance(msg, SnapshotRequest):
                conn.want_snapshot(msg.trace, msg.curve)
            elif isinstance(msg, Ping):
                conn.send({"type": "pong", "server_seq": self.engine.seq})
        except Exception as exc:  # the engine is never disturbed by what a client sends
            log.exception("control: handling a %s failed", type(msg).__name__)
            conn.send({"type": "error", "message": f"server error: {exc}", "fatal": False})
        return None

    def _hello(self, conn: _Conn, msg: Hello) -> str | None:
        """Role and name, then the welcome; a snapshot or the missed events; then the stream."""
        if conn.role is not None:
            conn.send({"type": "error", "message": "hello was already received", "fatal": False})
            return None
        if msg.version != PROTOCOL_VERSION:
            return (
                f"unsupported protocol version {msg.version}; this server speaks {PROTOCOL_VERSION}"
            )
        engine = self.engine
        if engine.core is None:
            return "the engine is not running yet; try again in a moment"
        conn.role = msg.role
        conn.name = msg.name
        welcome = Welcome(
            server_seq=engine.seq,
            instance=self.instance,
            pid=os.getpid(),
            data_dir=str(engine.data_dir.resolve()),
        )
        self._welcome(conn, msg, welcome.model_dump())
        return None

    def _welcome(self, conn: _Conn, msg: Hello, welcome: dict[str, Any]) -> None:
        engine = self.engine
        if not msg.subscribe:
            conn.send(welcome)
            return
        self._pump_now()
        backlog: list[dict[str, Any]] | None = None
        if msg.resume_from is not None:
            if msg.instance is not None and msg.instance != self.instance:
                welcome["message"] = "the engine restarted since; sending a fresh snapshot"
            elif msg.resume_from > engine.seq:
                welcome["message"] = (
                    f"seq {msg.resume_from} is ahead of this engine ({engine.seq}); "
                    "sending a fresh snapshot"
                )
            else:
                backlog = engine.events_since(msg.resume_from)
                if backlog is None:
                    welcome["message"] = (
                        f"events after seq {msg.resume_from} are no longer buffered; "
                        "sending a fresh snapshot"
                    )
        if backlog is not None:
            welcome["resumed"] = True
            conn.send(welcome)
            for item in backlog:
                conn.send_bytes(self._event_line(item))
            conn.after_seq = engine.seq
            conn.subscribed = True
        else:
            conn.send(welcome)
            conn.initial = True  # subscribed once the snapshot is queued, from its seq on
            conn.want_snapshot(*DEFAULT_SNAPSHOT)

    def _command(self, conn: _Conn, msg: Command) -> None:
        if self._closing and (conn.role != "operator" or msg.name != "kill"):
            # Not run at all, so the answer is sure: a kill still runs (the engine latches and
            # journals it before it stops), anything else would be lost with the reply.
            self._count_unrecorded(conn, msg.name)
            conn.send(
                {
                    "type": "reply",
                    "id": msg.id,
                    "ok": False,
                    "message": f"refused: the engine is shutting down; {msg.name} was not applied",
                    "refused": True,
                }
            )
            return
        if conn.role != "operator":
            # Refused by the engine, which records the attempt in the audit log first; beyond
            # the viewers' rate (or the connection's commands in flight) it is counted instead,
            # and the count is recorded in one row.
            if len(conn.inflight) < MAX_INFLIGHT and self._take_viewer_token():
                self._track(conn, self._refuse_viewer(conn, msg))
                return
            self._count_unrecorded(conn, msg.name)
            conn.send(
                {
                    "type": "reply",
                    "id": msg.id,
                    "ok": False,
                    "message": f"refused: {msg.name} needs an operator; this connection is a "
                    "read-only viewer",
                    "refused": True,
                }
            )
            return
        # A digest, not the text: a thousand remembered keys must not hold a thousand big args.
        fingerprint = hashlib.sha256(
            json.dumps([msg.name, msg.args], sort_keys=True, default=str).encode()
        ).digest()
        cached = self._replies.get(msg.id)
        kill = msg.name == "kill"
        if cached is not None:
            if (
                kill
                and (cached.fingerprint != fingerprint or cached.future.done())
                and len(conn.inflight) <= MAX_INFLIGHT
            ):
                # An emergency stop is never refused for the way it was sent (a script that
                # numbers its commands from 1 on every connection): run, its reply not kept.
                # Nor answered from the cache once done: the same kill sent again after a
                # release got "kill switch engaged" and engaged nothing (a kill runs twice
                # harmlessly; one still running is answered by its own reply).
                self._start_command(conn, msg, remember=False)
                return
            if cached.fingerprint != fingerprint:
                self._count_unrecorded(conn, msg.name)
                conn.send(
                    {
                        "type": "reply",
                        "id": msg.id,
                        "ok": False,
                        "message": f"refused: idempotency key {msg.id!r} was already used for "
                        "a different command",
                        "refused": True,
                    }
                )
                return
            self._replies.move_to_end(msg.id)
            self._track(conn, self._send_reply(conn, msg.id, cached.future, duplicate=True))
            return
        # A kill has one place beyond the limit: the engine latches it at once, even while
        # every other command waits on a venue, so it must not queue behind them.
        if len(conn.inflight) >= MAX_INFLIGHT + (1 if kill else 0):
            self._count_unrecorded(conn, msg.name)
            conn.send(
                {
                    "type": "reply",
                    "id": msg.id,
                    "ok": False,
                    "message": f"refused: {MAX_INFLIGHT} commands already running on this "
                    "connection; wait for their replies",
                    "refused": True,
                }
            )
            return
        self._start_command(conn, msg, fingerprint)

    def _start_command(
        self, conn: _Conn, msg: Command, fingerprint: bytes = b"", *, remember: bool = True
    ) -> None:
        """Run one command and send its reply; ``remember``: keep the reply for its key."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if remember:
            self._replies[msg.id] = _Cached(fingerprint, future)
            self._evict()
        run = asyncio.create_task(self._run_command(conn, msg, future))
        self._commands.add(run)
        run.add_done_callback(self._commands.discard)
        self._track(conn, self._send_reply(conn, msg.id, future, duplicate=False))

    async def _refuse_viewer(self, conn: _Conn, msg: Command) -> None:
        try:
            result = await self.engine.command(
                msg.name, msg.args, client=f"socket:{conn.name}", role="viewer", user=conn.user
            )
        except Exception as exc:
            log.exception("control: refusing a viewer's %s failed", msg.name)
            result = {"ok": False, "message": f"engine error: {type(exc).__name__}: {exc}"}
        conn.send({**result, "ok": False, "refused": True, "type": "reply", "id": msg.id})

    def _take_viewer_token(self) -> bool:
        now = time.monotonic()
        self._viewer_tokens = min(
            float(self.viewer_audit_burst),
            self._viewer_tokens + (now - self._viewer_tokens_at) / self.viewer_audit_every_s,
        )
        self._viewer_tokens_at = now
        if self._viewer_tokens < 1.0:
            return False
        self._viewer_tokens -= 1.0
        return True

    def _count_unrecorded(self, conn: _Conn, name: str) -> None:
        self._unrecorded[str(name)[:64]] += 1
        self._unrecorded_from[(conn.user, f"socket:{conn.name}")] += 1
        if self._summary_task is None or self._summary_task.done():
            self._summary_task = asyncio.create_task(self._summarise_unrecorded())

    async def _summarise_unrecorded(self) -> None:
        """One audit row for the commands refused without one, when a token allows."""
        while self._unrecorded:
            if self._take_viewer_token():
                await self._record_unrecorded()
            else:
                await asyncio.sleep(self.viewer_audit_every_s / 4)

    async def _record_unrecorded(self) -> None:
        if not self._unrecorded:
            return
        names, sources = self._unrecorded, self._unrecorded_from
        self._unrecorded, self._unrecorded_from = Counter(), Counter()
        count = sum(names.values())
        kinds = ", ".join(f"{name} x{n}" for name, n in names.most_common(8))
        if len(names) > 8:
            kinds += f", {len(names) - 8} more kinds"
        shown = [client for (_, client), _ in sources.most_common(4)]
        clients = ", ".join(shown) + (f" and {len(sources) - 4} more" if len(sources) > 4 else "")
        users = sorted({user for user, _ in sources})
        message = (
            f"refused: {count} command{'' if count == 1 else 's'} ({kinds}) recorded in this "
            f"one row: read-only viewers' past the audit rate ({self.viewer_audit_burst} rows, "
            f"then one per {self.viewer_audit_every_s:g} s), or refused by the control socket "
            f"itself ({MAX_INFLIGHT} in flight on one connection, an idempotency key reused, "
            "the engine shutting down)"
        )
        try:
            await self.engine.record_refused(
                names.most_common(1)[0][0],
                {**dict(names.most_common(8)), "(refused in all)": count},
                by=", ".join(users)[:200],
                client=clients[:200],
                message=message,
            )
        except Exception:
            log.exception("control: recording %d refused viewer commands failed", count)

    def _track(self, conn: _Conn, coro: Any) -> None:
        task = asyncio.create_task(coro)
        conn.inflight.add(task)
        task.add_done_callback(conn.inflight.discard)

    def _evict(self) -> None:
        while len(self._replies) > self.reply_cache:
            key, oldest = next(iter(self._replies.items()))
            if not oldest.future.done():
                break  # never forget a command that is still running
            del self._replies[key]

    async def _run_command(
        self, conn: _Conn, msg: Command, future: asyncio.Future[dict[str, Any]]
    ) -> None:
        try:
            result = await self.engine.command(
                msg.name,
                msg.args,
                client=f"socket:{conn.name}",
                role=conn.role or "viewer",
                user=conn.user,
            )
        except Exception as exc:
            log.exception("control: command %s failed", msg.name)
            result = {"ok": False, "message": f"engine error: {type(exc).__name__}: {exc}"}
        if not future.done():
            future.set_result(result)

    async def _send_reply(
        self, conn: _Conn, key: str, future: asyncio.Future[dict[str, Any]], *, duplicate: bool
    ) -> None:
        result = await asyncio.shield(future)
        reply = {**result, "type": "reply", "id": key}
        if duplicate:
            reply["duplicate"] = True
        conn.send(reply)


def default_max_clients() -> int:
    """``MAX_CLIENTS``, or fewer under a low open-file limit: half of the descriptors stay for
    the journal, the venues' connections and the KILL file."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return MAX_CLIENTS
    if soft == resource.RLIM_INFINITY:
        return MAX_CLIENTS
    return max(8, min(MAX_CLIENTS, soft // 2))


def _catches_sigusr1() -> bool:
    """Whether this process handles SIGUSR1 (installed by the host, e.g. the headless CLI)."""
    handler = signal.getsignal(signal.SIGUSR1)
    return handler not in (signal.SIG_DFL, signal.SIG_IGN, None)


def _read_pid(path: Path) -> int | None:
    return read_pid_file(path)
