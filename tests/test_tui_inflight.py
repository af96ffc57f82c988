"""Commands on their way to the engine: the cockpit stays usable and sends each answer once.

An engine that is slow to answer (a journal under load, a remote engine across a poor link)
must not freeze the keys, and a second key press meanwhile must not be a second command."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.test_tui_venues import NOW, FakeClient, make_app, ready


class SlowClient(FakeClient):
    """Records each command and answers only when ``answer`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()

    async def command(self, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        self.commands.append((name, dict(args or {})))
        await self.answer.wait()
        return {"ok": True, "message": f"{name}: done"}


def waiting_approval() -> dict[str, Any]:
    return {
        "id": "ap-1",
        "hash": "h1",
        "ts": NOW,
        "strategy": "trend",
        "symbol": "BTC/USDT",
        "side": "buy",
        "qty": 1.0,
        "price": 60_000.0,
        "reason": "needs approval",
        "expires_ts": NOW + 10**12,
    }


async def test_keys_and_quit_go_on_while_an_approval_waits_for_the_engine() -> None:
    client = SlowClient()
    client.snap["approvals"] = [waiting_approval()]
    client.snap["orders"] = []  # nothing open: ctrl+q quits without asking
    app = make_app(client)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        try:
            # a second approve and a reject of the same approval while the first is on its way
            await asyncio.wait_for(pilot.press("2", "a", "a", "r"), timeout=10)
            await pilot.pause()
            assert [name for name, _ in client.commands] == ["approve"]
            await asyncio.wait_for(pilot.press("ctrl+q"), timeout=10)
            await pilot.pause()
            assert app.return_code == 0
        finally:
            client.answer.set()  # a frozen app can unwind and the test end


async def test_the_same_approval_can_be_answered_again_once_the_engine_replied() -> None:
    client = SlowClient()
    client.snap["approvals"] = [waiting_approval()]
    app = make_app(client)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("2", "r")
        client.answer.set()
        for _ in range(50):
            await pilot.pause()
            if app.last_reply is not None:
                break
        assert app.last_reply == {"ok": True, "message": "reject: done"}
        await pilot.press("r")
        await pilot.pause()
        assert [name for name, _ in client.commands] == ["reject", "reject"]
