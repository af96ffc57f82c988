"""A second adversarial review of the approval gate as a trader uses it (reviewapprove2): the
`a`/`r` keys, `cockpit approvals`, `cockpit approve ID [--hash HASH]`, `cockpit reject`, over
the control socket with a real engine. Each test is a hole found by attacking the promise
"what is sent is what the person approved, and nothing they did not approve goes out",
failing before its fix. (Earlier reviews: test_review_ap, test_review_lim, test_review_orders,
test_approval_replace; their attacks are not repeated here.)

Tried and held (no test added):
- `cockpit approve` against a real engine: `--hash` with a trailing newline, an uppercase
  copy of the hash, another request's hash: refused (a mismatch), nothing decided. Ids: a
  prefix of a pending id, the id with a trailing space, in capitals, with unicode and a
  right-to-left mark, 60 KB of it: refused as unknown (exit 1), the request still waiting.
- The hash covers every field the person sees of the order (side, quantity, symbol, venue,
  type, limit, reduce-only, post-only, tif, ttl, stop); ref price and notional are context,
  re-checked by the price tolerance and the collar.
- A reduce-only close approved after its position shrank: denied by check_reduce_only,
  rejected after checks (never resized to fit).
- Read in the code, not driven: the TUI's a/r are main-screen bindings (the palette was the
  way around, fixed here); a row inserted above the cursor or a reorder keeps the cursor on its
  key; more than 32 rows gone at once re-selects it; the fleet's queue sends its row's own
  engine, id and hash, and lists a twin entry once.
- The send-time gate (refused_at_send) with a kill, a pause or a breaker's halt engaged
  before the send: stopped, journaled as "not sent", the reply says so.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cockpit.oneshot import format_approvals
from cockpit.tui.approvals import approval_detail
from engine.strategies.base import Strategy, StrategyParams
from engine.types import Action, Bar, OrderType, PositionView, Side, Signal
from tests.test_approvals import T0, VERDICTS, make_decision, make_gate, make_intent
from tests.test_control_support import ThreadEngine, short_dir
from tests.test_oneshot import run, sock
from tests.test_safety_engine import harnesses  # noqa: F401 (a fixture)


@pytest.fixture
def te(tmp_path: Path) -> Iterator[ThreadEngine]:
    """tests/test_oneshot.py's idle engine with approvals waiting, on a short socket path."""
    with short_dir() as sd, ThreadEngine(tmp_path / "data", sd / "e.sock") as t:
        t.advance(3000)
        yield t


def pending(te: ThreadEngine, capsys: pytest.CaptureFixture[str]) -> list[dict]:
    code, out, _ = run(capsys, "approvals", "--json", *sock(te))
    assert code == 0
    return json.loads(out)


@pytest.mark.parametrize("given", ["", " ", "\n"])
def test_an_empty_hash_never_approves_unbound(
    te: ThreadEngine, capsys: pytest.CaptureFixture[str], given: str
) -> None:
    """`cockpit approve ID --hash "$HASH"` with $HASH empty (a failed jq, an unset variable)
    asked for an approval bound to a hash: it went out as `approve ID` alone, bound to
    nothing, and approved whatever waited under the id. Refused now, nothing decided. (A blank
    or a newline was sent and refused by the engine as a mismatch; now said before sending.)"""
    first = pending(te, capsys)[-1]
    code, out, err = run(capsys, "approve", first["id"], "--hash", given, *sock(te))
    assert code == 2 and "approved" not in out and "--hash is empty" in err
    assert first["id"] in {a["id"] for a in pending(te, capsys)}  # still waiting, undecided


def _waiting(qty: float, limit: float | None, *, reduce_only: bool = False) -> dict:
    """A request as the engine lists it (PendingApproval.to_dict), for a limit on a cheap coin."""
    intent = make_intent(7, qty=qty, ref=0.1234, side=Side.SELL)
    intent = replace(
        intent,
        symbol="DOGE/USDT",
        order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET,
        limit_price=limit,
        reduce_only=reduce_only,
    )
    gate = make_gate()
    return gate.submit(intent, make_decision(intent), VERDICTS, T0, 0.05, 1.5).to_dict()


@pytest.mark.parametrize(
    ("qty", "limit", "shown_qty", "shown_price"),
    [
        (12345.6789, 0.123456, "12345.6789", "0.123456"),
        (1234567.0, 0.00001234, "1234567", "0.00001234"),
        (0.12345678, 123456.78, "0.12345678", "123456.78"),
    ],
)
def test_cockpit_approvals_shows_the_exact_quantity_and_limit_it_approves(
    qty: float, limit: float, shown_qty: str, shown_price: str
) -> None:
    """`cockpit approvals` printed a limit sell of DOGE at 0.123456 as PRICE 0.12 (a limit of
    0.00001234 as 0.00) and a quantity of 12345.6789 as 12345.7 (1234567 as 1.23457e+06): a
    person approving from the listing approved numbers that were not the ones sent (the hash
    binds the exact ones). The listing prints them exactly, as the hash covers them."""
    a = _waiting(qty, limit)
    text = format_approvals([a], T0)
    row = text.splitlines()[1].split()
    assert shown_qty in row and shown_price in row, text


def test_the_cockpits_detail_line_shows_the_exact_quantity_and_limit() -> None:
    """The detail line a person reads before `a` (and the fleet's queue, which shows the same)
    rounded to six digits: a limit sell of 12345.6789 at 0.1234567 read "12345.7 ... limit
    0.123457". The table may round; the detail says exactly what goes out."""
    a = _waiting(12345.6789, 0.1234567)
    text = approval_detail(a, T0).plain
    assert "sell 12345.6789 DOGE/USDT limit limit 0.1234567 " in text, text


def test_cockpit_approvals_says_reduce_only_and_prints_the_hash() -> None:
    """The listing did not say reduce-only (part of the order, covered by the hash; the
    cockpit's detail line says it), and the hash `cockpit approve ID --hash HASH` binds to was
    only in `--json`: a person reading the listing could not bind their approve to it."""
    a = _waiting(100.0, 0.2, reduce_only=True)
    text = format_approvals([a], T0)
    assert "reduce-only" in text and a["hash"] in text, text


class BuyThenClose(Strategy):
    """Buys once while flat, then asks to close (a reduce-only sell) while it holds."""

    kind = "buy_then_close"
    Params = StrategyParams

    @property
    def warmup_bars(self) -> int:
        return 0

    def on_bar(self, bar: Bar, position: PositionView) -> Signal | None:
        if position.qty:
            return Signal(
                action=Action.SELL, rule="close", reason="close", confidence=1.0, reduce_only=True
            )
        return Signal(action=Action.BUY, rule="enter", reason="flat", confidence=1.0)


@pytest.mark.parametrize("overtaken", ["buy", "sell"])
async def test_an_approved_order_waiting_for_its_token_is_not_sent_past_a_kill_at_halt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overtaken: str
) -> None:
    """A person approved a strategy's close (reduce-only); while it waited for the venue's
    request token, another person engaged the kill switch at halt. The last check before the
    send let every reduce-only order through once the state had changed ("the kill's own
    orders"), so the approved close went out after the halt, which lets only the kill's
    flatten and protective exits through. Stopped at the send now, as any other order is.
    And an approve a kill overtook there (the entry, held back before too) answered
    "approved", exit 0: the broker refuses with a copy of the order, which the reply never
    looked at. It answers that its order was rejected and why, as README promises."""
    from engine.types import OrderStatus as Status
    from tests.test_venue_operations import config
    from tests.test_venue_runtime import TradingVenue, rows, run_until, venue_engine
    from tests.test_venues_support import venue_env

    venue_env(monkeypatch)
    server = TradingVenue()
    await server.start()
    data_dir = tmp_path / "data"
    engine: Any = None
    kills: list[Any] = []
    closing: list[bool] = []

    def slow_budget(broker: Any) -> None:
        acquire = broker.gate.acquire

        async def waiting_acquire(cancel: bool = False) -> None:
            core = engine.core
            sending = core is not None and any(
                o.status is Status.PENDING_NEW
                and o.client_order_id not in broker._tracked
                and o.side.value == overtaken
                for o in core.open_orders.values()
            )
            if sending and not cancel and closing and not kills:
                # The kill arrives while the approved close waits for its token.
                kills.append(
                    asyncio.create_task(engine.command("kill", {"level": "halt", "reason": "x"}))
                )
                await asyncio.sleep(0.05)
            await acquire(cancel)

        broker.gate.acquire = waiting_acquire

    cfg = config(data_dir, "tests.test_review_reviewapprove2:BuyThenClose")
    strat = cfg.strategies[0].model_copy(update={"approval": "approve"})
    cfg = cfg.model_copy(update={"strategies": [strat]})
    engine = venue_engine(cfg, data_dir, server, also=slow_budget)
    await engine.start()
    try:

        def waiting(side: str) -> dict | None:
            snap = engine.snapshot(trace=0, curve=0)
            return next((a for a in snap["approvals"] if a["side"] == side), None)

        async def approve(side: str) -> dict:
            await run_until(engine, lambda: waiting(side) is not None)
            a = waiting(side)
            assert a is not None and a["reduce_only"] is (side == "sell")
            if side == overtaken:
                closing.append(True)
            return await engine.command("approve", {"id": a["id"], "hash": a["hash"]})

        if overtaken == "sell":
            entered = await approve("buy")
            assert entered["ok"], entered
        reply = await approve(overtaken)
        await run_until(engine, lambda: bool(kills) and kills[0].done())
    finally:
        await engine.stop()
        await server.stop()
    assert engine.core.safety.trading_state.name == "HALTED"
    sent = 1 if overtaken == "sell" else 0
    assert server.creates() == sent, "the approved order went out after the kill switch at halt"
    assert not reply["ok"] and "engine HALTED" in reply["message"], reply
    last = [r.payload["order"] for r in rows(data_dir) if r.kind == "order"][-1]
    assert last["status"] == "rejected" and "not sent: engine HALTED" in last["reason"]


@pytest.mark.parametrize("screen", ["performance", "audit"])
async def test_the_palettes_approve_never_answers_a_request_the_trader_cannot_see(
    data_dir: Path, screen: str
) -> None:
    """Over the performance or audit screen (which cover the cockpit whole), the command
    palette offered "Approve (a)" and, picked, approved the request under the approvals
    cursor of the screen underneath: an order the person had not looked at went out. The
    cockpit says where the approvals are and sends nothing; back on the main screen the same
    command approves the one shown."""
    from cockpit.tui.audit_screen import AuditScreen
    from cockpit.tui.performance_screen import PerformanceScreen
    from tests.test_tui import feed_until, make_app, ready, settle, start_engine

    engine = await start_engine(data_dir)
    try:
        await feed_until(engine, lambda s: s["approvals"])
        (ap,) = engine.snapshot(trace=0, curve=0)["approvals"]
        app = make_app(engine)
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            await app.run_action(screen)
            await pilot.pause()
            kind = PerformanceScreen if screen == "performance" else AuditScreen
            assert isinstance(app.screen, kind)
            await pilot.press("ctrl+p")
            await pilot.pause()
            await pilot.press(*"approve")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await pilot.pause()
            await settle(pilot, engine)
            assert [a["id"] for a in engine.snapshot(trace=0, curve=0)["approvals"]] == [ap["id"]]
            assert app.last_reply is None
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is app.main
            await pilot.press("a")
            await settle(pilot, engine)
            assert app.last_reply is not None and app.last_reply["ok"], app.last_reply
    finally:
        await engine.stop()


async def test_an_approve_never_sends_a_quantity_the_venues_new_grid_changed(
    harnesses: list[Any],  # noqa: F811
    data_dir: Path,
) -> None:
    """The venue's grid changed while a request waited (a venue refused an order as invalid
    and the engine reloaded its markets: a coarser lot). The approve re-ran the checks, which
    round to the grid, and sent 0.01 BTC where the person had approved 0.015 (the hash binds
    0.015). Now it is rejected after checks, saying why; nothing is sent. A grid that leaves
    the order as it was does not stand in the way."""
    from tests.test_safety_engine import BTC, buy, start

    h = await start(harnesses, data_dir, qty=0.015)
    await h.feed(BTC, 60_000.0)
    await h.signal("beta", BTC, buy(), 60_000.0)
    (pend,) = h.core.approvals.pending()
    assert pend.intent.qty == 0.015
    inst = h.core.instruments[BTC]
    h.core.instruments[BTC] = replace(inst, lot_size=0.01)
    reply = await h.engine.command("approve", {"id": pend.approval_id, "hash": pend.intent_hash})
    assert not reply["ok"], reply
    assert "0.015" in reply["message"] and "grid" in reply["message"], reply
    assert h.sent == []
    # The same grid as before, or one the order already sits on: approved and sent as shown.
    h.core.instruments[BTC] = replace(inst, lot_size=0.005)
    await h.signal("beta", BTC, buy(), 60_000.0)
    (pend,) = h.core.approvals.pending()
    reply = await h.engine.command("approve", {"id": pend.approval_id, "hash": pend.intent_hash})
    assert reply["ok"], reply
    assert [o.qty for o in h.sent] == [0.015]


def test_the_headless_request_line_says_the_whole_order_and_its_hash() -> None:
    """`cockpit engine` printed a request as "buy 100 DOGE/USDT" and its notional: no order
    type, no limit price, no reduce-only, not how the limit works, no hash. A person (or a
    script) approving from that line with `cockpit approve ID` approved a post-only limit at
    a price never shown. The line carries what the approval covers, and the hash to bind to;
    `cockpit trace` and `cockpit journal` say the order type and limit too."""
    from cockpit.oneshot import format_trace_line
    from engine.events import ApprovalRequested
    from engine.headless import describe_event
    from engine.types import TimeInForce

    a = _waiting(100.0, 0.2, reduce_only=True)
    a.update(post_only=True, tif=str(TimeInForce.GTC), ttl_s=60.0)
    line = describe_event(ApprovalRequested(T0, a))
    assert line is not None
    assert line["order_type"] == "limit" and line["limit_price"] == 0.2
    assert line["reduce_only"] is True and line["post_only"] is True and line["ttl_s"] == 60.0
    assert line["hash"] == a["hash"] and line["venue"] == "sim"
    text = format_trace_line({"event": "approval_requested", "ts": T0, "seq": 1, "approval": a})
    assert "limit 0.2 post-only ttl 60s reduce-only" in text, text


@pytest.mark.parametrize("key", ["a", "r"])
async def test_a_key_never_answers_a_request_that_arrived_in_the_row_that_just_emptied(
    key: str,
) -> None:
    """The trader reads the only request; it expires (the table is empty for a refresh) and a
    new one arrives in its row at the next. The slid-row guard only saw a row replaced within
    one refresh, so `a` pressed as the first expired approved the new one, never looked at.
    The first key after a request took the row of one that went away says so and sends
    nothing, whether it came in the same refresh or a later one; the next key answers it."""
    from tests.test_tui_inflight import waiting_approval
    from tests.test_tui_venues import NOW, FakeClient, ready, refresh
    from tests.test_tui_venues import make_app as make_fake_app

    def request(approval_id: str, symbol: str, created: int) -> dict:
        a = waiting_approval()
        return {**a, "id": approval_id, "hash": f"h-{approval_id}", "symbol": symbol,
                "created_ts": created}  # fmt: skip

    client = FakeClient()
    client.snap["approvals"] = [request("ap-read", "BTC/USDT", NOW - 2)]
    app = make_fake_app(client)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("2")
        await pilot.pause()
        assert app.main.approvals.selected["id"] == "ap-read"
        client.snap["approvals"] = []  # ap-read expired
        await refresh(pilot)
        client.snap["approvals"] = [request("ap-new", "ETH/USDT", NOW)]  # a new one arrives
        await refresh(pilot)
        assert app.main.approvals.selected["id"] == "ap-new"
        await pilot.press(key)
        await pilot.pause()
        assert client.commands == []
        await pilot.press(key)  # now on purpose, with ETH/USDT on screen
        await pilot.pause()
        assert [(name, args["id"]) for name, args in client.commands] == [
            ("approve" if key == "a" else "reject", "ap-new")
        ]
