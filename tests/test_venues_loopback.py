"""The broker against a loopback venue server (127.0.0.1): signing, errors, retries, timeouts.

ccxt's real exchange classes make real HTTP requests here, to an aiohttp server that verifies
their signatures and keeps the orders (``tests/test_venues_fakevenue.py``). Covered for each of
the five venues: valid signatures, an insufficient-funds body handled as a rejection, and a
create that times out after the order was placed, resolved by client order id with no duplicate.
For binance also: an order lost in transit (never reached), a 429 storm (request rate counted at
the server), and a real kill -9 between "intent durable" and "order acknowledged".
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.config import VenueConfig
from engine.types import OrderStatus, OrderUpdate
from engine.venues.ccxt_broker import NEVER_REACHED, CcxtBroker
from engine.venues.profiles import venue_client_id
from tests.test_venues_fakevenue import FakeVenue, per_second_peak
from tests.test_venues_support import (
    ENV,
    HAS_SANDBOX,
    KEYS,
    SYMBOL,
    VENUES,
    FakeClock,
    new_order,
    venue_config,
    venue_env,
)

REPO = Path(__file__).resolve().parent.parent


def loop_broker(
    monkeypatch: Any,
    venue: str,
    server: FakeVenue,
    *,
    clock: FakeClock | None = None,
    throttle: bool = False,
    **kw: Any,
) -> CcxtBroker:
    venue_env(monkeypatch)
    testnet = HAS_SANDBOX[venue]
    kw.setdefault("timeout_ms", 500)
    kw.setdefault("rate_per_s", 200.0)
    if clock is not None:
        kw.update(clock_ns=clock.time_ns, monotonic=clock.monotonic, sleep=clock.sleep)
    broker = CcxtBroker(
        venue,
        venue_config(venue, testnet),
        "testnet" if testnet else "live",
        symbols=[SYMBOL[venue]],
        **kw,
    )
    broker.exchange.enableRateLimit = throttle
    server.point(broker.exchange)
    return broker


def statuses(out: list[Any]) -> list[OrderStatus]:
    return [u.order.status for u in out if isinstance(u, OrderUpdate)]


@pytest.mark.parametrize("venue", VENUES)
async def test_signed_orders_rejections_and_timeouts(monkeypatch: Any, venue: str) -> None:
    server = FakeVenue(venue, sandbox=HAS_SANDBOX[venue])
    await server.start()
    broker = loop_broker(monkeypatch, venue, server)
    try:
        await broker.start()
        assert statuses(await broker.submit(new_order(venue, "ck-1-1"))) == [OrderStatus.NEW]

        server.script.append("insufficient")
        out = await broker.submit(new_order(venue, "ck-1-2"))
        assert statuses(out) == [OrderStatus.REJECTED]
        assert "InsufficientFunds" in out[0].order.reason

        server.script.append("timeout")  # placed at the venue; the answer comes too late
        out = await broker.submit(new_order(venue, "ck-1-3"))
        assert statuses(out) == [OrderStatus.NEW]  # found by client id at once

        out = await broker.cancel("ck-1-1")
        assert statuses(out) == [OrderStatus.CANCELED]
    finally:
        await broker.close()
        await server.stop()
    creates = [
        h
        for h in server.hits
        if h.method == "POST"
        and h.path.endswith(("/order", "/AddOrder", "/hf/orders", "/order/create", "/batch-orders"))
    ]
    assert len(creates) == 3  # one each: nothing was resent
    placed = sorted(server.orders)
    assert placed == sorted(venue_client_id(c, venue) for c in ("ck-1-1", "ck-1-3"))
    assert server.orders[venue_client_id("ck-1-1", venue)].status == "canceled"
    assert server.signed > 0 and server.bad_signatures == 0


@pytest.mark.parametrize("venue", VENUES)
async def test_a_wrong_secret_fails_the_server_signature_check(
    monkeypatch: Any, venue: str
) -> None:
    server = FakeVenue(venue, sandbox=HAS_SANDBOX[venue])
    await server.start()
    broker = loop_broker(monkeypatch, venue, server)
    try:
        await broker.start()
        broker.exchange.secret = "V1JPTkdTRUNSRVRXUk9OR1NFQ1JFVFdST05HU0VDUkVU"
        out = await broker.submit(new_order(venue, "ck-9-1"))
    finally:
        await broker.close()
        await server.stop()
    assert server.bad_signatures >= 1
    assert not server.orders
    # Refused (authentication) or, where the venue's error is unmapped, unresolved-then-looked-up:
    # never placed either way.
    assert statuses(out)[0] in (OrderStatus.REJECTED, OrderStatus.PENDING_NEW)


async def test_lost_order_is_declared_never_reached_not_resent(monkeypatch: Any) -> None:
    server = FakeVenue("binance", sandbox=True)
    await server.start()
    clock = FakeClock()
    broker = loop_broker(monkeypatch, "binance", server, clock=clock)
    try:
        await broker.start()
        server.script.append("lost")
        out = await broker.submit(new_order("binance", "ck-2-1"))
        assert statuses(out) == [OrderStatus.PENDING_NEW]
        assert await broker.poll() == []  # not there, window still open: keep looking
        clock.advance(30)
        out = await broker.poll()
    finally:
        await broker.close()
        await server.stop()
    assert statuses(out) == [OrderStatus.CANCELED]
    assert NEVER_REACHED in out[0].order.reason
    creates = [h for h in server.hits if h.method == "POST"]
    assert len(creates) == 1 and not server.orders


async def test_a_429_storm_never_reaches_a_ban_worthy_rate(monkeypatch: Any) -> None:
    """Every request gets 429 + Retry-After: 1 for 2.5 s while the engine keeps trying."""
    server = FakeVenue("binance", sandbox=True)
    await server.start()
    broker = loop_broker(monkeypatch, "binance", server, throttle=True, rate_per_s=None)
    await broker.start()
    first = len(server.hits)
    server.retry_after = 1
    server.storm_until = time.monotonic() + 2.5
    stop = time.monotonic() + 4.0
    results: list[Any] = []

    async def orders() -> None:
        n = 0
        while time.monotonic() < stop:
            n += 1
            results.extend(await broker.submit(new_order("binance", f"ck-3-{n}")))
            await asyncio.sleep(0.01)

    async def polls() -> None:
        while time.monotonic() < stop:
            try:
                results.extend(await broker.poll())
            except Exception as exc:  # a poll may give up on a long penalty; the loop goes on
                results.append(exc)
            await asyncio.sleep(0.05)

    try:
        await asyncio.gather(orders(), polls())
    finally:
        await broker.close()
        await server.stop()
    hits = server.hits[first:]
    storm = [h for h in hits if h.status == 429]
    assert storm, "the storm must have been seen"
    # Binance's ccxt rateLimit is 50 ms: 20 requests/s is the most ccxt itself would send, and
    # the venue bans well above that. Under the storm the broker sends a trickle (Retry-After is
    # honoured by every request), and afterwards it trades at its own gate's pace, under 20/s.
    limit = 1000 / 50
    during = [h.t for h in hits if h.t <= storm[-1].t]
    assert per_second_peak(during) <= 3
    assert per_second_peak([h.t for h in hits]) <= limit
    # After a 429 the next request waits out Retry-After (1 s). Only a request already in flight
    # when the 429 went out (sent concurrently, arriving within a few ms) may come sooner.
    for h in storm:
        early = [x for x in hits if h.t + 0.05 < x.t < h.t + 1.0 - 0.02]
        assert not early, f"a request came before Retry-After passed: {early[0]}"
    # Hundreds of attempted orders, a handful of requests: refused locally, not sent.
    refused = [r for r in results if isinstance(r, OrderUpdate) and "not sent" in r.order.reason]
    assert len(refused) > 50
    # And trading resumes once the storm is over.
    assert any(isinstance(r, OrderUpdate) and r.order.status is OrderStatus.NEW for r in results)


# ---------------------------------------------------------------------- kill -9

CHILD = r"""
import asyncio, os, signal, sys
sys.path.insert(0, {repo!r})
from engine.events import IntentChecked, SessionChanged
from engine.journal import Journal
from engine.types import OrderIntent, OrderType, Side
from tests.test_venues_support import venue_config, SYMBOL

async def main():
    journal = await Journal.open({journal!r})
    ts = 1723161600000000000
    journal.append("session", ts, SessionChanged(ts, 1, "started", {{"mode": "testnet"}}).payload())
    intent = OrderIntent("ck-1-1", "d1-1", "s1", SYMBOL["binance"], "binance", Side.BUY, 0.001,
                         OrderType.LIMIT, 61000.0, ts, limit_price=61000.0)
    journal.append("intent", ts, IntentChecked(intent, (), "submitted").payload())
    await journal.flush()  # the intent is durable
    if {die_before_send!r}:
        os.kill(os.getpid(), signal.SIGKILL)
    from engine.venues.ccxt_broker import CcxtBroker
    broker = CcxtBroker("binance", venue_config("binance", True), "testnet",
                        symbols=[SYMBOL["binance"]], timeout_ms=30000)
    broker.exchange.enableRateLimit = False
    base = {base!r}
    import re
    def repoint(v):
        if isinstance(v, str):
            return re.sub(r"^https?://[^/]+", base, v)
        return {{k: repoint(x) for k, x in v.items()}} if isinstance(v, dict) else v
    broker.exchange.urls = {{k: (repoint(v) if k in ("api", "test") else v)
                             for k, v in broker.exchange.urls.items()}}
    await broker.start()
    print("SENDING", flush=True)
    await broker.submit(broker_order())  # the server holds the answer; we are killed first

def broker_order():
    from tests.test_venues_support import new_order
    return new_order("binance", "ck-1-1")

asyncio.run(main())
"""


@pytest.mark.parametrize("reached", [True, False])
async def test_kill_9_between_intent_and_ack_recovers_without_duplicate(
    monkeypatch: Any, tmp_path: Path, reached: bool
) -> None:
    from engine.datadir import JOURNAL_FILE
    from engine.restore import restore_state

    server = FakeVenue("binance", sandbox=True)
    await server.start()
    server.hang_s = 30.0
    server.script.append("timeout")  # place it, but never answer before the kill
    journal = tmp_path / JOURNAL_FILE
    venue_env(monkeypatch)
    code = CHILD.format(
        repo=str(REPO), journal=str(journal), die_before_send=not reached, base=server.base
    )
    env = {**os.environ, **{ENV[k]: KEYS[k] for k in ENV}}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        if reached:
            await asyncio.wait_for(server.received.wait(), 30)
            proc.send_signal(signal.SIGKILL)  # kill -9 with the order at the venue, unacked
        rc = await asyncio.wait_for(proc.wait(), 30)
        assert rc == -signal.SIGKILL, (await proc.stderr.read()).decode()  # type: ignore[union-attr]

        # Restart: the journal has the durable intent and no acknowledgement.
        restored = restore_state(journal)
        assert [o.client_order_id for o in restored.unacknowledged] == ["ck-1-1"]
        assert restored.open_orders == []
        clock = FakeClock(start_ns=restored.unacknowledged[0].ts_created + 60_000_000_000)
        broker = loop_broker(monkeypatch, "binance", server, clock=clock)
        try:
            await broker.start()
            out = await broker.recover(restored.unacknowledged)
        finally:
            await broker.close()
    finally:
        if proc.returncode is None:
            proc.kill()
        await server.stop()
    creates = [h for h in server.hits if h.method == "POST"]
    if reached:
        assert statuses(out) == [OrderStatus.NEW]  # adopted as the venue has it
        assert len(server.orders) == 1 and len(creates) == 1  # no duplicate
    else:
        assert statuses(out) == [OrderStatus.CANCELED]
        assert NEVER_REACHED in out[0].order.reason
        assert not server.orders and not creates  # never resent


# ---------------------------------------------------------------------- venues check


def _config(tmp_path: Path, venues: str, mode: str = "paper") -> Path:
    text = (REPO / "config" / "default.toml").read_text()
    text = text.replace('mode = "paper"', f'mode = "{mode}"', 1)
    path = tmp_path / "cockpit.toml"
    path.write_text(text + "\n" + venues)
    return path


def _venue_toml(
    name: str, exchange: str, testnet: bool, keys: bool = True, symbols: list[str] | None = None
) -> str:
    lines = [f"[venues.{name}]", f'exchange = "{exchange}"', f"testnet = {str(testnet).lower()}"]
    if symbols is not None:
        lines.append("symbols = [" + ", ".join(f'"{s}"' for s in symbols) + "]")
    if keys:
        lines += [
            f'api_key_env = "{ENV["apiKey"]}"',
            f'secret_env = "{ENV["secret"]}"',
            f'password_env = "{ENV["password"]}"',
        ]
    return "\n".join(lines) + "\n"


async def _check(
    tmp_path: Path, config: Path, server: FakeVenue | None, capsys: Any
) -> tuple[int, str]:
    import argparse

    from cockpit.venues_cli import run_venues

    args = argparse.Namespace(venues_command="check", config=str(config), json=False, timeout=2.0)

    def prepare(ex: Any) -> None:
        if server is not None:
            server.point(ex)
        ex.enableRateLimit = False  # kraken's 1 s public rate limit only slows the test down

    code = await asyncio.to_thread(run_venues, args, prepare=prepare)
    out = capsys.readouterr()
    return code, out.out + out.err


async def test_venues_check_live_binance(monkeypatch: Any, tmp_path: Path, capsys: Any) -> None:
    venue_env(monkeypatch)
    server = FakeVenue("binance")
    await server.start()
    try:
        config = _config(tmp_path, _venue_toml("binance", "binance", False), mode="live")
        code, text = await _check(tmp_path, config, server, capsys)
        server.withdraw = True
        code_w, text_w = await _check(tmp_path, config, server, capsys)
        server.withdraw = False
        server.clock_offset_ms = 2500
        code_c, text_c = await _check(tmp_path, config, server, capsys)
    finally:
        await server.stop()
    lines = text.strip().splitlines()
    assert code == 0, text
    checks = [line.split()[2].rstrip(":") for line in lines]
    assert checks == ["config", "connectivity", "clock", "markets", "trade", "withdraw"]
    # The default strategies also trade SOL/USDT, which the recorded market subset lacks.
    assert [line.split()[0] for line in lines] == ["OK", "OK", "OK", "WARN", "OK", "OK"], text
    assert "not listed here: SOL/USDT" in text and "keys can trade" in text
    assert code_w == 0 and "WARN    binance withdraw: keys CAN WITHDRAW" in text_w
    assert code_c == 1 and "FAIL    binance clock:" in text_c and "+2" in text_c
    for t in (text, text_w, text_c):
        for secret in KEYS.values():
            assert secret not in t


@pytest.mark.parametrize("testnet", ["", "testnet = false\n"])
async def test_venues_check_of_a_paper_config_never_reads_its_keys(
    monkeypatch: Any, tmp_path: Path, capsys: Any, testnet: str
) -> None:
    """Paper on live prices never reads the keys a venue section names, and neither does its
    check: no signed request goes to the venue (whose production prices paper reads), only the
    public ones; without a testnet line the check does not trip over the default either."""
    venue_env(monkeypatch)
    server = FakeVenue("binance")
    await server.start()
    try:
        venue = _venue_toml("binance", "binance", True).replace("testnet = true\n", testnet)
        code, text = await _check(tmp_path, _config(tmp_path, venue), server, capsys)
    finally:
        await server.stop()
    assert code == 0, text
    assert "OK      binance trade: paper mode: no keys needed" in text, text
    assert "the keys named here are not read" in text and "withdraw" not in text
    private = [h.path for h in server.hits if "account" in h.path or "apiRestrictions" in h.path]
    assert private == [], private
    for secret in KEYS.values():
        assert secret not in text


async def test_venues_check_other_venues(monkeypatch: Any, tmp_path: Path, capsys: Any) -> None:
    venue_env(monkeypatch)
    texts = {}
    for venue in ("kraken", "kucoin", "bybit", "okx"):
        server = FakeVenue(venue, sandbox=HAS_SANDBOX[venue])
        await server.start()
        try:
            mode = "testnet" if HAS_SANDBOX[venue] else "live"  # paper never reads keys
            config = _config(tmp_path, _venue_toml(venue, venue, HAS_SANDBOX[venue]), mode=mode)
            _, texts[venue] = await _check(tmp_path, config, server, capsys)
        finally:
            await server.stop()
        assert "connectivity: " in texts[venue] and "FAIL" not in texts[venue], texts[venue]
        for secret in KEYS.values():
            assert secret not in texts[venue]
    assert "UNKNOWN kraken trade: keys authenticate; trade permission unknown" in texts["kraken"]
    assert "UNKNOWN kraken withdraw" in texts["kraken"]
    assert "WARN    kraken markets:" in texts["kraken"]  # kraken lists BTC/USD, not BTC/USDT
    assert "OK      bybit trade: keys can trade" in texts["bybit"]
    assert "OK      bybit withdraw: keys cannot withdraw" in texts["bybit"]
    assert "OK      okx trade: keys can trade" in texts["okx"]


async def test_venues_check_failures(monkeypatch: Any, tmp_path: Path, capsys: Any) -> None:
    venue_env(monkeypatch)
    server = FakeVenue("binance", sandbox=True)
    await server.start()
    await server.stop()  # nothing listens on that port any more
    toml = (  # several venues: each symbol on one of them
        _venue_toml("main", "binance", True, symbols=["BTC/USDT"])
        + _venue_toml("second", "binance", True, symbols=["ETH/USDT", "SOL/USDT"])
    )
    code, text = await _check(tmp_path, _config(tmp_path, toml, mode="testnet"), server, capsys)
    assert code == 1
    assert "FAIL    main connectivity:" in text
    assert "FAIL    second connectivity:" in text
    for secret in KEYS.values():
        assert secret not in text
    # What the engine would refuse at start is a config error, as `config check` says it.
    for venue, why in (
        (_venue_toml("kr", "kraken", True), "venues.kr.exchange: kraken has no testnet"),
        (_venue_toml("nokeys", "binance", True, keys=False), "venues.nokeys.api_key_env"),
    ):
        code, text = await _check(tmp_path, _config(tmp_path, venue, mode="testnet"), None, capsys)
        assert code == 2 and why in text, text


def test_venues_check_without_venues(tmp_path: Path, capsys: Any) -> None:
    import argparse

    from cockpit.venues_cli import add_venues_parser, run_venues

    parser = argparse.ArgumentParser()
    add_venues_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["venues", "check", "--config", str(_config(tmp_path, ""))])
    assert run_venues(args) == 1
    assert "no venues configured" in capsys.readouterr().err
    assert run_venues(parser.parse_args(["venues"])) == 2


def test_venue_config_keys_come_from_env_only() -> None:
    cfg = VenueConfig(exchange="binance", api_key_env="CK_NOT_SET_ANYWHERE")
    assert cfg.credentials() == {}


async def test_venues_check_for_paper_on_live_prices_needs_no_keys(
    tmp_path: Path, capsys: Any
) -> None:
    """Paper on a venue's prices: the check reaches the production public API (not the
    sandbox, the section does not ask for it), finds the markets, and says no key is needed."""
    server = FakeVenue("binance")
    await server.start()
    try:
        toml = '[venues.binance]\nexchange = "binance"\n'
        config = _config(tmp_path, toml)
        text_cfg = config.read_text().replace('# source = "simulated"', 'source = "venue"', 1)
        config.write_text(text_cfg)
        code, text = await _check(tmp_path, config, server, capsys)
    finally:
        await server.stop()
    assert code == 0, text
    assert (
        "OK      binance config: ccxt binance (live, public market data only: paper mode)" in text
    )
    assert "OK      binance trade: paper mode: no keys needed, orders are filled on paper" in text
    assert "withdraw" not in text
