"""What hostile or careless control-socket clients cost a real engine daemon.

Starts the same headless engine + control server the daemon tests run (a subprocess, simulated
market) and prints:

1. RSS before and after 2,000 clients that say hello and disconnect before reading their
   snapshot, plus 3,000 lines each carrying a JSON integer of 5,000 digits (over Python's
   4,300-digit int limit);
2. kill latency while 8 clients flood the socket with full-size snapshot requests and never
   read: from writing the KILL file (first daemon) and from sending SIGUSR1 (a second daemon)
   until the kill switch's safety row is committed in the journal;
3. how many of 500 simultaneous connects get their welcome.

Run: .venv/bin/python bench/control_socket.py [--clients 2000] [--lines 3000] [--connects 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import REPO
from tests.test_control_support import DAEMON

HELLO = {"type": "hello", "version": 1, "role": "viewer", "name": "bench", "resume_from": None}
ONESHOT = dict(HELLO, subscribe=False)
HUGE_INT_LINE = b'{"type":"snapshot","trace":' + b"9" * 5000 + b"}\n"
FLOOD_REQUEST = b'{"type":"snapshot","trace":100000,"curve":1000000}\n'
WAIT = 30.0


def line(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg).encode() + b"\n"


class EngineProcess:
    """The daemon of tests/test_control_support.py, its stderr in a file (a full pipe would
    stall the engine and spoil the figures)."""

    def __init__(self, root: Path, name: str, speed: float) -> None:
        self.data_dir = root / name / "data"
        self.socket = root / name / "run" / "e.sock"
        self.stderr_path = root / f"{name}.stderr"
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DAEMON, str(self.data_dir), str(self.socket), str(speed)],
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        if ready.strip() != "READY":
            self.stop()
            raise SystemExit(f"daemon did not start: {self.stderr_path.read_text()[-2000:]}")

    def rss_mb(self) -> float:
        for row in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if row.startswith("VmRSS:"):
                return int(row.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def kill_rows(self) -> int:
        """Committed kill-switch safety rows (a read-only reader beside the engine's writer)."""
        path = self.data_dir / "journal.sqlite"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            db.execute("PRAGMA busy_timeout = 1000")
            (n,) = db.execute(
                "SELECT COUNT(*) FROM journal WHERE kind = 'safety' "
                "AND json_extract(payload, '$.what') = 'kill_switch'"
            ).fetchone()
        return int(n)

    def tracebacks(self) -> int:
        return self.stderr_path.read_text(errors="replace").count("Traceback")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


async def _gather_bounded(n: int, parallel: int, make: Any) -> list[Any]:
    sem = asyncio.Semaphore(parallel)

    async def one(i: int) -> Any:
        async with sem:
            return await make(i)

    return await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)


async def hello_and_vanish(path: Path) -> None:
    """Ask for the snapshot (hello subscribes) and disconnect without reading a byte."""
    _, writer = await asyncio.open_unix_connection(str(path))
    writer.write(line(HELLO))
    await writer.drain()
    writer.transport.abort()


async def huge_integer(path: Path) -> bool:
    """One 5,000-digit integer; True if the server answered it with an error line."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(line(ONESHOT) + HUGE_INT_LINE)
        await writer.drain()
        for _ in range(2):
            msg = await asyncio.wait_for(reader.readline(), WAIT)
            if not msg:
                return False
            if json.loads(msg).get("type") == "error":
                return True
        return False
    finally:
        writer.transport.abort()


async def resources(args: argparse.Namespace, root: Path) -> None:
    eng = EngineProcess(root, "rss", args.speed)
    try:
        await asyncio.sleep(2.0)  # let the engine build some state (trace, curve, orders)
        before = eng.rss_mb()
        rss = []
        for _ in range(args.rounds):
            t0 = time.monotonic()
            out = await _gather_bounded(args.clients, 50, lambda i: hello_and_vanish(eng.socket))
            failed = sum(isinstance(r, BaseException) for r in out)
            answered = await _gather_bounded(args.lines, 50, lambda i: huge_integer(eng.socket))
            errors = sum(r is True for r in answered)
            took = time.monotonic() - t0
            await asyncio.sleep(2.0)  # let the server finish closing what it was sending
            rss.append(eng.rss_mb())
            print(
                f"round {len(rss)}: {args.clients} clients that disconnect before reading "
                f"({failed} failed to connect) + {args.lines} 5,000-digit-integer lines "
                f"({errors} answered with an error line) in {took:.1f} s"
            )
        rounds = ", ".join(f"{r:.0f} MB after round {i + 1}" for i, r in enumerate(rss))
        print(
            f"RSS: {before:.0f} MB before, {rounds}; growth over round 1 "
            f"{rss[0] - before:+.1f} MB; tracebacks in the engine's log: {eng.tracebacks()}"
        )
    finally:
        eng.stop()


async def flooder(path: Path, stop: asyncio.Event) -> None:
    """Ask for full snapshots as fast as the socket takes them; never read a byte."""
    with contextlib.suppress(OSError, ConnectionError):
        _, writer = await asyncio.open_unix_connection(str(path))
        writer.write(line(HELLO))
        while not stop.is_set():
            writer.write(FLOOD_REQUEST * 16)
            await writer.drain()  # the server reads requests even when the client does not
        writer.transport.abort()


async def kill_latency(args: argparse.Namespace, root: Path, how: str) -> None:
    eng = EngineProcess(root, f"kill-{how}", args.speed)
    stop = asyncio.Event()
    floods = [asyncio.create_task(flooder(eng.socket, stop)) for _ in range(8)]
    try:
        await asyncio.sleep(args.flood_s)
        rss = eng.rss_mb()
        base = await asyncio.to_thread(eng.kill_rows)
        t0 = time.monotonic()
        if how == "KILL file":
            (eng.data_dir / "KILL").write_text("halt\n")
        else:
            os.kill(eng.proc.pid, signal.SIGUSR1)
        latency = None
        while time.monotonic() - t0 < WAIT:
            if await asyncio.to_thread(eng.kill_rows) > base:
                latency = time.monotonic() - t0
                break
            await asyncio.sleep(0.01)
        shown = f"{latency:.3f} s" if latency is not None else f"not within {WAIT:.0f} s"
        print(
            f"kill latency ({how}) under an 8-client non-reading snapshot flood: {shown} "
            f"(engine RSS during the flood {rss:.0f} MB)"
        )
    finally:
        stop.set()
        for t in floods:
            t.cancel()
        await asyncio.gather(*floods, return_exceptions=True)
        eng.stop()


async def simultaneous(args: argparse.Namespace, root: Path) -> None:
    eng = EngineProcess(root, "connects", args.speed)
    try:

        async def connect(i: int) -> bool:
            reader, writer = await asyncio.open_unix_connection(str(eng.socket))
            try:
                writer.write(line(ONESHOT))
                await writer.drain()
                msg = await asyncio.wait_for(reader.readline(), WAIT)
                return json.loads(msg).get("type") == "welcome"
            finally:
                writer.transport.abort()

        out = await asyncio.gather(
            *(connect(i) for i in range(args.connects)), return_exceptions=True
        )
        ok = sum(r is True for r in out)
        print(f"simultaneous connects: {ok} of {args.connects} accepted and welcomed")
    finally:
        eng.stop()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=2000)
    p.add_argument("--lines", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=2, help="rounds of clients + lines")
    p.add_argument("--connects", type=int, default=500)
    p.add_argument("--flood-s", type=float, default=3.0, help="flood this long before the kill")
    p.add_argument("--speed", type=float, default=30.0, help="simulated market speed")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ckb", dir="/tmp") as tmp:
        root = Path(tmp)
        await resources(args, root)
        await kill_latency(args, root, "KILL file")
        await kill_latency(args, root, "SIGUSR1")
        await simultaneous(args, root)


if __name__ == "__main__":
    asyncio.run(main())
