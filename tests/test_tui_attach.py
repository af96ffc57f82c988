"""The cockpit attached through the control socket behaves like the embedded one.

An engine and its control server run in this process; the cockpit connects through the real
Unix socket (SocketClient), and a one-shot CLI process approves an intent: the attached
cockpit's approvals pane must change, as a person watching it would see.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from cockpit.app import CockpitApp
from cockpit.socket_client import SocketClient
from cockpit.tui.session import ClientSession
from engine.control import ControlServer
from tests.conftest import REPO
from tests.test_tui import WIDE, feed_until, fixed_clock, pending, ready, start_engine


async def wait_for(pilot, check, tries: int = 300) -> None:
    for _ in range(tries):
        if check():
            return
        await asyncio.sleep(0.02)
        await pilot.pause()
    raise AssertionError("the attached cockpit never showed the change")


async def test_cli_approval_changes_the_attached_cockpits_pane(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    engine = await start_engine(data_dir)
    sock = tmp_path / "ck.sock"
    server = ControlServer(engine, sock)
    await server.start()
    try:
        client = SocketClient(sock, role="operator", name="test-attach")
        await client.connect(retry=False)
        app = CockpitApp(session=ClientSession(client), clock=fixed_clock)
        async with app.run_test(size=WIDE) as pilot:
            await ready(pilot)
            await feed_until(engine, lambda s: s["approvals"])
            ap = pending(engine)[0]
            table = app.main.approvals.table
            await wait_for(pilot, lambda: ap["id"] in [str(k.value) for k in table.rows])

            # Another terminal: `cockpit approve ID` through the same socket.
            result = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "cockpit", "approve", ap["id"], "--socket", str(sock)],
                capture_output=True,
                text=True,
                cwd=REPO,
                timeout=60,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            assert not pending(engine)
            await wait_for(pilot, lambda: table.row_count == 0)
            # And the attached view's trace shows the decision went out.
            await wait_for(
                pilot,
                lambda: any(
                    e.get("event") == "approval"
                    and e.get("outcome", {}).get("status") == "approved"
                    for e in engine.recent
                ),
            )
    finally:
        await server.close()
        await engine.stop()
