"""Adversarial review of issue 14-16's promises (alerts, heartbeat, metrics, fleet, exits, data):
each test is a hole found by attacking the promise, failing before its fix. Every wait is
bounded."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from engine.alert_send import MAX_DELIVERY_THREADS, AppriseDestination
from engine.events import SafetyChanged
from engine.fanout import EventFanout
from tests.alert_hook import Hook
from tests.test_alerts import dispatcher, fill_event, running, show, stop

WAIT_S = 15.0  # generous bound for "it happened"


@contextmanager
def dribbling_server() -> Iterator[str]:
    """An HTTP server that starts its answer and never finishes it: a header line every 0.2 s,
    so no socket read ever times out. Yields its json:// URL."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    done = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while not done.wait(0.2):
                    conn.sendall(b"X-Slow: 1\r\n")
            except OSError:
                pass

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"json://127.0.0.1:{srv.getsockname()[1]}/slow"
    finally:
        done.set()
        srv.close()


def kill_event() -> SafetyChanged:
    before = {"trading_state": "ACTIVE", "kill_level": None}
    after = {"trading_state": "HALTED", "kill_level": "halt"}
    return SafetyChanged(1, "kill_switch", "engine", before, after, "ops", "test")


async def test_a_destination_that_never_finishes_answering_cannot_starve_a_kill_alert() -> None:
    """Fills to a webhook whose server dribbles its answer forever (each delivery's thread
    stays stuck past its timeout): a kill alert to the trader's phone (another route) still
    arrives within 5 s, and the stuck destination holds a bounded number of threads. Before:
    the stuck deliveries filled apprise's shared pool and the kill alert never left."""
    with dribbling_server() as slow_url, Hook() as phone:
        d = dispatcher(
            urls=[slow_url],
            events=["fill"],
            timeout_s=0.5,
            max_per_window=10_000,
            routes={"phone": {"urls": [phone.url()], "events": ["kill_engaged"]}},
        )
        fanout = EventFanout()
        fanout.watchers.append(d.observe)
        task = await running(d)
        try:
            show(fanout, *(fill_event(i) for i in range(20)))
            deadline = time.monotonic() + WAIT_S
            while d.view()["failed"] < 12 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert d.view()["failed"] >= 12, d.view()
            show(fanout, kill_event())
            arrived = await phone.wait_for(lambda p: any("KILL" in x.title for x in p), 5.0)
            assert arrived, (phone.titles(), d.view())
            slow = d.routes[0].targets[0].dest
            assert isinstance(slow, AppriseDestination)
            assert slow.threads <= 2 * MAX_DELIVERY_THREADS
        finally:
            await stop(task)
