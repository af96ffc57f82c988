"""The cockpit's view of a headless engine through its control socket (engine.control).

Implements the same ``EngineClient`` interface as the embedded engine, so every pane works
unchanged when attached. What differs is that the engine can go away: this client then
reconnects by itself with backoff, resumes the event stream from the last sequence number it
saw (or takes a fresh snapshot when the engine no longer has those events), and tells the UI
through synthetic events in ``events()``::

    {"event": "connection", "connected": False, "message": "...", "path": "..."}
    {"event": "connection", "connected": True, "resumed": bool, "resync": bool,
     "restarted": bool, ...}

``resync`` means events were missed: pull a full ``snapshot(trace, curve)`` again;
``restarted`` that another engine run answers (the engine restarted while away). While
disconnected, ``snapshot()`` returns the last one it had with a ``"connection"`` key
``{"connected": False, "message": ...}`` added, and ``command()`` answers at once
``ok: False, sent: False`` ("not sent: disconnected ..."): a command is only ever sent over a
live link, never queued for whenever the engine comes back.

Commands carry a fresh idempotency key; one already sent and still unanswered when the link
drops is sent again, with the same key, after the reconnect to the same engine run, so it runs
at most once. Reconnected to another run (the engine restarted), it is not sent again (the new
run does not know the key): it is answered "may or may not have been applied", as one whose
link dropped without a reconnect is. Nothing here imports the engine core or an exchange
library: the one-shot CLI uses this client and must start fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import uuid
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from engine.control import (
    MAX_LINE,
    PROTOCOL_VERSION,
    encode,
    info_path,
    peer_credentials,
    socket_for_data_dir,
)
from engine.datadir import read_small_file
from engine.vocabulary import EventKind

# Characters of a kill's reason sent at most: far above the engine's own limit (it cuts the rest),
# and at 12 bytes a character (JSON's escapes of a surrogate pair) well inside one line.
KILL_REASON_SENT = 4_000
READ_LIMIT = 256 * 1024 * 1024  # a full snapshot is one line; allow a big one
# A snapshot pull waiting for its answer: the trace and curve lengths it asked for, its future.
_SnapshotPull = tuple[int, int, "asyncio.Future[dict[str, Any]]"]


class EngineUnreachable(ConnectionError):
    """No engine answers at the socket; the message is one line naming the path and why."""


class WrongEngine(EngineUnreachable):
    """The engine that answered names another data dir than the one named beside its socket."""


class SocketClient:
    """A connection to one engine, kept alive until ``close()``."""

    # The engine runs in another process: a cockpit quitting lets go of it, never stops it.
    attached = True

    def __init__(
        self,
        path: str | Path,
        *,
        role: str = "operator",
        name: str = "cockpit",
        reconnect: bool = True,
        subscribe: bool = True,
        connect_timeout: float = 1.0,
        command_timeout: float = 5.0,
        ping_interval: float = 5.0,
        backoff: tuple[float, float] = (0.1, 2.0),
        data_dir: str | Path | None = None,
        serves: str | Path | None = None,
    ) -> None:
        self.path = Path(path)
        # The data dir the person named (a fleet file's data_dir, attach --data-dir): its
        # socket is found again at every dial, and an engine serving another one is refused.
        self.data_dir = Path(data_dir) if data_dir is not None else None
        # The data dir named beside an explicit socket (attach --socket S --data-dir D): the
        # socket stays S, and an engine whose welcome names another data dir is refused at
        # every dial (through a forwarded socket there is no info file to tell by).
        self.serves = Path(serves) if serves is not None else None
        self.role = role
        self.name = name
        self.reconnect = reconnect
        self.subscribe = subscribe
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.ping_interval = ping_interval
        self.backoff = backoff
        self.connected = False
        self.last_seq: int | None = None  # the last event seq handed to events()
        self.instance: str | None = None
        self.server_pid: int | None = None  # from SO_PEERCRED, even when the engine is stuck
        self.welcome: dict[str, Any] | None = None
        self.initial_snapshot: dict[str, Any] | None = None
        self.last_error = ""
        self.errors_said = 0  # error messages the engine sent (last_error: the newest)
        self.disconnect_reason = ""
        self.reconnects = 0
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        # Snapshot pulls waiting, with the (trace, curve) each asked for: the server merges
        # pulls it has not built yet, so one snapshot may answer several.
        self._snapshots: deque[_SnapshotPull] = deque()
        self._pending: dict[str, tuple[bytes, asyncio.Future[dict[str, Any]]]] = {}
        self._last_snapshot: dict[str, Any] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._resync = False
        self._received = 0.0

    @classmethod
    async def open(cls, path: str | Path, **kwargs: Any) -> SocketClient:
        """Connect (raising EngineUnreachable if nothing answers) and return the client."""
        client = cls(path, **kwargs)
        await client.connect()
        return client

    async def __aenter__(self) -> SocketClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ connection

    async def connect(self, *, retry: bool = False) -> None:
        """First connection; afterwards the supervisor keeps it (and reconnects) until close.

        ``retry``: wait with backoff until an engine answers (``cockpit attach`` started
        before the engine); ``disconnect_reason`` says why it is still waiting.
        """
        delay = self.backoff[0]
        while True:
            try:
                await self._handshake()
                break
            except EngineUnreachable as exc:
                if not retry or self._closing:
                    raise
                self.disconnect_reason = str(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
        self._set_connected(first=True)
        self._supervisor = asyncio.create_task(self._supervise())

    async def _handshake(self) -> None:
        if self.data_dir is not None:
            # Under $XDG_RUNTIME_DIR the default socket is every engine's: whoever holds it
            # now, not whoever held it when the cockpit started.
            self.path = socket_for_data_dir(self.data_dir)
        path = self.path
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(path), limit=READ_LIMIT), self.connect_timeout
            )
        except FileNotFoundError:
            raise EngineUnreachable(f"no engine socket at {path}") from None
        except ConnectionRefusedError:
            raise EngineUnreachable(
                f"nothing listens on {path} (a stale socket: the engine is not running)"
            ) from None
        except PermissionError:
            raise EngineUnreachable(f"permission denied on {path}") from None
        except TimeoutError:
            raise EngineUnreachable(
                f"the engine at {path} did not accept within {self.connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise EngineUnreachable(f"cannot connect to {path}: {exc.strerror or exc}") from None
        try:
            try:
                pid, uid, _ = peer_credentials(writer.get_extra_info("socket"))
            except OSError:
                pid, uid = None, os.geteuid()
            if uid not in (os.geteuid(), 0):
                raise EngineUnreachable(
                    f"refusing {path}: it is served by uid {uid}, not by you or root"
                )
            self.server_pid = pid
            hello = {
                "type": "hello",
                "version": PROTOCOL_VERSION,
                "role": self.role,
                "name": self.name,
                "resume_from": self.last_seq if self.subscribe else None,
                "instance": self.instance,
                "subscribe": self.subscribe,
            }
            writer.write(encode(hello))
            welcome = await self._read_message(reader, self.connect_timeout, "a welcome")
            if welcome.get("type") == "error":
                raise EngineUnreachable(f"the engine at {path} refused: {welcome.get('message')}")
            if welcome.get("type") != "welcome" or welcome.get("version") != PROTOCOL_VERSION:
                raise EngineUnreachable(
                    f"the server at {path} does not speak protocol version {PROTOCOL_VERSION}"
                )
            if self.data_dir is not None:
                self._check_data_dir(path, welcome)
            served = welcome.get("data_dir")
            wrong = isinstance(served, str) and served and not same_dir(served, self.serves)
            if self.serves is not None and wrong:
                raise WrongEngine(
                    f"--socket {path} serves the data dir {served}, not {self.serves}: "
                    "give the one you mean"
                )
            resumed = bool(welcome.get("resumed"))
            snapshot = None
            if self.subscribe and not resumed:
                snapshot = await self._read_message(
                    reader, max(self.command_timeout, self.connect_timeout), "the snapshot"
                )
                if snapshot.get("type") != "snapshot":
                    raise EngineUnreachable(f"the server at {path} sent no snapshot after hello")
        except BaseException:
            writer.close()
            raise
        self._reader, self._writer = reader, writer
        self.welcome = welcome
        self._resync = self.last_seq is not None and not resumed
        self.instance = welcome.get("instance")
        if snapshot is not None:
            data = snapshot["data"]
            self.initial_snapshot = self._last_snapshot = data
            self.last_seq = data.get("seq", 0)
        self._received = asyncio.get_running_loop().time()

    def _check_data_dir(self, path: Path, welcome: dict[str, Any]) -> None:
        """EngineUnreachable unless the engine that welcomed us may serve ``data_dir``: its
        info file (written before it welcomes anyone) names that run and that data dir. No
        info file: the welcome's data dir tells (a forwarder at the socket path has none)."""
        served = welcome.get("data_dir")
        if isinstance(served, str) and served and not same_dir(served, self.data_dir):
            raise EngineUnreachable(
                f"{path} serves the data dir {served}, not {self.data_dir}: not that engine"
            )
        try:
            info = json.loads(read_small_file(info_path(path)) or b"")
        except (OSError, ValueError, RecursionError):
            return
        if not isinstance(info, dict):
            return
        run, where = info.get("instance"), info.get("data_dir")
        if isinstance(run, str) and run != welcome.get("instance"):
            raise EngineUnreachable(
                f"cannot tell which data dir the engine at {path} serves (its info file names "
                f"another run); not taken for the engine of {self.data_dir}"
            )
        if isinstance(where, str) and not same_dir(where, self.data_dir):
            raise EngineUnreachable(
                f"{path} serves the data dir {where}, not {self.data_dir}: not that engine"
            )

    async def _read_message(
        self, reader: asyncio.StreamReader, timeout: float, what: str
    ) -> dict[str, Any]:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout)
        except TimeoutError:
            raise EngineUnreachable(
                f"the engine at {self.path} did not answer within {timeout:g} s "
                f"(waiting for {what}); its event loop may be stuck"
            ) from None
        except (ValueError, OSError) as exc:
            raise EngineUnreachable(f"lost {self.path} while waiting for {what}: {exc}") from None
        if not line:
            raise EngineUnreachable(f"the engine at {self.path} closed the connection")
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested past the parser's limit
            raise EngineUnreachable(f"the server at {self.path} sent something not JSON") from None
        if not isinstance(msg, dict):
            raise EngineUnreachable(f"the server at {self.path} sent something unexpected")
        return msg

    def _set_connected(self, *, first: bool = False, restarted: bool = False) -> None:
        self.connected = True
        self.disconnect_reason = ""
        if restarted:
            # Another engine run: it does not know the keys the one before answered (which may
            # have run a command and journaled it before it stopped), so sending again could
            # run it twice. What was unanswered stays unknown, said plainly.
            self._fail_pending("the engine restarted before answering")
        # Anything unanswered when the link dropped goes again, same key: the same engine run
        # remembers the key, so it runs at most once.
        for line, _fut in self._pending.values():
            self._write(line)
        if not first:
            self.reconnects += 1
            assert self.welcome is not None
            self._events.put_nowait(
                {
                    "event": EventKind.CONNECTION,
                    "connected": True,
                    "resumed": bool(self.welcome.get("resumed")),
                    "resync": self._resync,
                    # Another engine run answers (a restart): nothing shown before is its.
                    "restarted": restarted,
                    "message": self.welcome.get("message") or "reconnected",
                    "path": str(self.path),
                    "seq": self.last_seq,
                }
            )

    def _set_disconnected(self, reason: str) -> None:
        was = self.connected
        self.connected = False
        self.disconnect_reason = reason
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        while self._snapshots:
            *_, fut = self._snapshots.popleft()
            if not fut.done():
                fut.set_exception(EngineUnreachable(reason))
        if was:
            self._events.put_nowait(
                {
                    "event": EventKind.CONNECTION,
                    "connected": False,
                    "message": reason,
                    "path": str(self.path),
                    "seq": self.last_seq,
                }
            )

    async def _supervise(self) -> None:
        """Read until the link drops, then reconnect with backoff (if allowed) until closed."""
        while not self._closing:
            reason = await self._read_loop()
            if self._closing:
                return
            self._set_disconnected(reason)
            if not self.reconnect:
                self._fail_pending(reason)
                return
            delay = self.backoff[0]
            while not self._closing:
                await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
                before = self.instance
                try:
                    await self._handshake()
                except EngineUnreachable as exc:
                    self.disconnect_reason = str(exc)
                    delay = min(delay * 2, self.backoff[1])
                    continue
                self._set_connected(restarted=self.instance != before)
                break

    async def _read_loop(self) -> str:
        """Dispatch server lines; returns why the connection ended."""
        reader = self._reader
        assert reader is not None
        pinger = asyncio.create_task(self._keepalive())
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, OSError) as exc:
                    return f"connection to {self.path} lost: {exc}"
                if not line:
                    why = self.last_error or "the engine closed the connection"
                    self.last_error = ""
                    return f"engine went away ({why})"
                self._received = asyncio.get_running_loop().time()
                try:
                    msg = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(msg, dict):
                    self._dispatch(msg)
        except asyncio.CancelledError:
            return "closed"
        finally:
            pinger.cancel()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "event":
            seq = msg.get("seq")
            if not isinstance(seq, int) or (self.last_seq is not None and seq <= self.last_seq):
                return  # already seen (a resume overlaps what arrived before the drop)
            self.last_seq = seq
            data = msg.get("data")
            if isinstance(data, dict):
                self._events.put_nowait(data)
        elif kind == "reply":
            entry = self._pending.pop(str(msg.get("id")), None)
            if entry is not None and not entry[1].done():
                entry[1].set_result(_reply(msg))
        elif kind == "snapshot":
            data = msg.get("data")
            self._answer_snapshots(
                data if isinstance(data, dict) else {}, msg.get("trace"), msg.get("curve")
            )
        elif kind == "error":
            self.last_error = str(msg.get("message", ""))
            self.errors_said += 1

    def _answer_snapshots(self, data: dict[str, Any], trace: Any, curve: Any) -> None:
        """Every pull this snapshot covers (it is at least as long as each asked) is answered;
        a longer pull keeps waiting for its own. A server that does not say answers one."""
        if not isinstance(trace, int) or not isinstance(curve, int):
            while self._snapshots:
                *_, fut = self._snapshots.popleft()
                if not fut.done():
                    fut.set_result(data)
                    return
            return
        waiting: deque[_SnapshotPull] = deque()
        for want_trace, want_curve, fut in self._snapshots:
            if fut.done():
                continue
            if want_trace <= trace and want_curve <= curve:
                fut.set_result(data)
            else:
                waiting.append((want_trace, want_curve, fut))
        self._snapshots = waiting

    async def _keepalive(self) -> None:
        """Ping when idle; a server silent for three intervals is treated as gone."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.ping_interval)
            if loop.time() - self._received > 3 * self.ping_interval:
                self.last_error = f"no answer for {3 * self.ping_interval:g} s"
                if self._writer is not None:
                    self._writer.transport.abort()
                return
            self._write(b'{"type":"ping"}\n')

    def _write(self, line: bytes) -> None:
        w = self._writer
        if w is None or w.is_closing():
            return
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            w.write(line)

    def _fail_pending(self, reason: str) -> None:
        """Answer every command still waiting: each was written to the engine, which may have
        run it (and journaled it) before the link dropped, so "not applied" would be a guess.
        Like a reply that never came in time (``timeout``): a kill then falls back to SIGUSR1
        and the KILL file, a one-shot command exits 3."""
        for line, fut in self._pending.values():
            if not fut.done():
                name = _command_name(line)
                fut.set_result(
                    {
                        "ok": False,
                        "message": f"{name}: no reply ({reason}); it may or may not have been "
                        "applied, check the audit trail (cockpit audit)",
                        "timeout": True,
                    }
                )
        self._pending.clear()

    # ------------------------------------------------------------------ EngineClient

    async def snapshot(self, trace: int = 500, curve: int = 600) -> dict[str, Any]:
        """The engine's whole state; the last known one, marked, while disconnected."""
        if self.connected and not self._closing:
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._snapshots.append((trace, curve, fut))
            errors = self.errors_said
            self._write(encode({"type": "snapshot", "trace": trace, "curve": curve}))
            try:
                data = await asyncio.wait_for(fut, self.command_timeout)
            except (TimeoutError, EngineUnreachable) as exc:
                reason = str(exc) or f"no snapshot within {self.command_timeout:g} s"
                if self.errors_said != errors and isinstance(exc, TimeoutError):
                    reason += f" ({self.last_error})"  # what the engine said meanwhile
            else:
                self._last_snapshot = data
                return data
        else:
            reason = self.disconnect_reason or "not connected"
        if self._last_snapshot is None:
            raise EngineUnreachable(reason)
        return {**self._last_snapshot, "connection": {"connected": False, "message": reason}}

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Engine events in seq order, plus ``{"event": "connection", ...}`` markers."""
        while True:
            item = await self._events.get()
            if item is None:
                self._events.put_nowait(None)  # let every other reader end too
                return
            yield item

    async def command(self, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run a command; always answers ``{"ok", "message", ...}`` within the timeout, and at
        once (``sent: False``) while disconnected."""
        if self._closing:
            return {"ok": False, "message": "the client is closed", "sent": False}
        if not self.connected:
            # At once, not after the reply timeout: the person learns now that nothing was
            # applied, and a kill or an approval is never sent minutes later on a reconnect.
            return {
                "ok": False,
                "message": f"not sent: disconnected from the engine at {self.path} "
                f"({self.disconnect_reason or 'connection lost'}); nothing was applied",
                "sent": False,
            }
        key = uuid.uuid4().hex
        args = args or {}
        line = encode({"type": "command", "id": key, "name": name, "args": args})
        if len(line) - 1 > MAX_LINE and name == "kill" and isinstance(args.get("reason"), str):
            # A kill is never refused for its wording: the engine cuts a long reason to its
            # limit, so cutting it here (far above that limit) changes nothing it records.
            args = {**args, "reason": args["reason"][:KILL_REASON_SENT]}
            line = encode({"type": "command", "id": key, "name": name, "args": args})
        if len(line) - 1 > MAX_LINE:
            # The engine cannot frame a longer line: it would close the connection, failing
            # every command in flight on it, and record nothing.
            return {
                "ok": False,
                "message": f"not sent: the {name} command is {len(line) - 1:,} bytes, over the "
                f"control socket's limit of {MAX_LINE:,}; shorten its text. Nothing was applied",
                "sent": False,
            }
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[key] = (line, fut)
        if self.connected:
            self._write(line)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.command_timeout)
        except TimeoutError:
            self._pending.pop(key, None)
            where = "" if self.connected else f" (disconnected: {self.disconnect_reason})"
            return {
                "ok": False,
                "message": f"{name}: no reply from the engine within {self.command_timeout:g} s"
                f"{where}; it may or may not have been applied, check the audit trail",
                "timeout": True,
            }

    async def close(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(BaseException):
                await self._supervisor
        self.connected = False
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._reader = self._writer = None
        self._fail_pending("the client was closed")
        while self._snapshots:
            *_, fut = self._snapshots.popleft()
            if not fut.done():
                fut.set_exception(EngineUnreachable("the client was closed"))
        self._events.put_nowait(None)


def _reply(msg: dict[str, Any]) -> dict[str, Any]:
    """A reply as the callers read it: ``ok`` is True only when the server said ``true`` (a
    server with a bug, or posing as an engine, that answers ``"false"``, 1 or a list confirms
    nothing), and ``message`` is text."""
    reply = {k: v for k, v in msg.items() if k not in ("type", "id")}
    reply["ok"] = msg.get("ok") is True
    message = msg.get("message", "")
    reply["message"] = message if isinstance(message, str) else json.dumps(message, default=str)
    return reply


def same_dir(a: str | Path, b: str | Path | None) -> bool:
    """``a`` and ``b`` are one directory (also through links; None: nothing to compare).
    What cannot be looked at (a symlink loop, a NUL) is not the same: fail closed."""
    if b is None:
        return True
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        try:
            return Path(a).resolve() == Path(b).resolve()
        except (OSError, ValueError, RuntimeError):
            return False


def _command_name(line: bytes) -> str:
    """The command a line we wrote carries (for a message about it)."""
    try:
        return str(json.loads(line).get("name", "command"))
    except (ValueError, AttributeError):
        return "command"
