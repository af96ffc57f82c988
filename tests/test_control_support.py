"""Helpers for the control-socket tests (no tests here): engines on short socket paths, in a
background thread or a real daemon subprocess, and a raw protocol connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.config import Config
from engine.control import ControlServer
from engine.runtime import Engine
from tests.conftest import REPO, default_dict, fast_config, merge

WAIT = 30.0  # a bound against hanging, never a performance assertion


def approve_config(data_dir: Path, **sections: Any) -> Config:
    """Every strategy waits for a person: approvals appear at once and nothing trips a breaker.
    They wait an hour of engine time, so a fast daemon does not expire them under a test."""
    strategies = [dict(s, approval="approve") for s in default_dict()["strategies"]]
    # On 1 s bars, as the demo once traded: events come every few quotes.
    strategies = [dict(s, timeframe_s=1) for s in strategies]
    market = merge({"simulated": {"history_timeframe_s": 1}}, sections.pop("market", {}))
    sections.setdefault("safety", {"approval": {"ttl_s": 3600.0}})
    return fast_config(data_dir, auto=False, strategies=strategies, market=market, **sections)


@contextlib.contextmanager
def short_dir() -> Iterator[Path]:
    """A private directory with a short path: pytest's tmp paths can exceed sun_path."""
    d = Path(tempfile.mkdtemp(prefix="ck", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


class Raw:
    """The protocol by hand, to send what no well-behaved client would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, path: Path) -> Raw:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=64 * 1024 * 1024)
        return cls(reader, writer)

    async def send(self, msg: dict[str, Any] | bytes) -> None:
        data = msg if isinstance(msg, bytes) else json.dumps(msg).encode() + b"\n"
        self.writer.write(data)
        await self.writer.drain()

    async def hello(self, role: str = "operator", **extra: Any) -> dict[str, Any]:
        await self.send(
            {"type": "hello", "version": 1, "role": role, "name": "raw", "resume_from": None}
            | extra
        )
        return await self.recv()

    async def recv(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), WAIT)
        assert line, "connection closed"
        return json.loads(line)

    async def recv_type(self, kind: str) -> dict[str, Any]:
        while True:
            msg = await self.recv()
            if msg["type"] == kind:
                return msg

    async def at_eof(self) -> bool:
        line = await asyncio.wait_for(self.reader.readline(), WAIT)
        return line == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


@dataclass
class ThreadEngine:
    """An engine and its control server in a thread of their own (own event loop), so that
    synchronous code (hypothesis, the one-shot CLI's asyncio.run) can talk to it.

    ``speed`` None: the engine stays idle (its clock frozen) until ``advance(n)`` feeds it n
    quotes, so approvals never expire under a test's feet.
    """

    data_dir: Path
    socket: Path
    speed: float | None = None
    engine: Engine | None = None
    server: ControlServer | None = None
    loop: asyncio.AbstractEventLoop | None = None
    error: BaseException | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _stop: asyncio.Event | None = None

    def __enter__(self) -> ThreadEngine:
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        assert self._ready.wait(WAIT), "engine thread did not start"
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.loop is not None and self._thread is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._request_stop)
            self._thread.join(WAIT)
            assert not self._thread.is_alive(), "engine thread did not stop"
        if self.error is not None:
            raise self.error

    def _request_stop(self) -> None:
        assert self.engine is not None and self._stop is not None
        self.engine.request_stop()
        self._stop.set()

    def advance(self, quotes: int) -> None:
        """Feed the idle engine ``quotes`` more market events (waits until done)."""
        assert self.loop is not None and self.engine is not None
        asyncio.run_coroutine_threadsafe(self.engine.run(max_events=quotes), self.loop).result(WAIT)

    def call(self, fn: Any) -> Any:
        """Run ``fn()`` (sync) on the engine's loop and return its result."""
        assert self.loop is not None

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(WAIT)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    async def _run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        speed = self.speed if self.speed is not None else "max"
        cfg = approve_config(self.data_dir, market={"simulated": {"speed": speed}})
        self.engine = engine = Engine(cfg, self.data_dir)
        await engine.start()
        self.server = server = ControlServer(engine, self.socket)
        try:
            await server.start()
            self._ready.set()
            if self.speed is not None:
                await engine.run()
            else:
                await self._stop.wait()
        finally:
            await server.close()
            await engine.stop()


DAEMON = r"""
import asyncio, signal, sys, time
from pathlib import Path
from engine.control import ControlServer
from engine.runtime import Engine
from tests.test_control_support import approve_config

async def main(data_dir, sock, speed):
    cfg = approve_config(Path(data_dir), market={"simulated": {"speed": float(speed)}})
    engine = Engine(cfg, Path(data_dir))
    await engine.start()
    server = ControlServer(engine, Path(sock), handle_sigusr1=True)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, engine.request_stop)
    # SIGUSR2 blocks the event loop for a while: a stuck engine, for the kill fallback.
    loop.add_signal_handler(signal.SIGUSR2, lambda: time.sleep(4.0))
    print("READY", flush=True)
    try:
        await engine.run()
    finally:
        await server.close()
        await engine.stop()
    print("STOPPED", flush=True)

asyncio.run(main(*sys.argv[1:4]))
"""


class Daemon:
    """A real engine process with a control server, as `cockpit engine --socket` will run it."""

    def __init__(self, data_dir: Path, socket: Path, speed: float = 5.0) -> None:
        self.data_dir = data_dir
        self.socket = socket
        self.stderr = ""
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DAEMON, str(data_dir), str(socket), str(speed)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = _readline_within(self.proc, WAIT)
        if line.strip() != "READY":
            self.proc.kill()
            raise AssertionError(f"daemon did not start: {line!r} {self.proc.stderr.read()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        self.stderr = err
        assert self.proc.returncode == 0, err
        return out

    def rss_mb(self) -> float:
        """The engine process's resident memory, from /proc."""
        for row in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if row.startswith("VmRSS:"):
                return int(row.split()[1]) / 1024
        raise AssertionError("no VmRSS in /proc")

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _readline_within(proc: subprocess.Popen[str], timeout: float) -> str:
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    t.start()
    t.join(timeout)
    return out[0] if out else ""


@pytest.fixture
async def served(data_dir: Path) -> AsyncIterator[tuple[Engine, ControlServer]]:
    engine = Engine(approve_config(data_dir), data_dir)
    await engine.start()
    with short_dir() as d:
        server = ControlServer(engine, d / "run" / "engine.sock")
        await server.start()
        try:
            yield engine, server
        finally:
            await server.close()
            await engine.stop()
