"""Paper and testnet modes can never reach a production trading endpoint.

* testnet: for each of the five venues, the broker either refuses to exist (kraken and kucoin
  have no sandbox in ccxt) or every request it makes — markets, orders, look-ups, cancels,
  polls, dead-man switch, balances, key permissions, recovery — goes to the exchange's own
  ``urls['test']`` (read from a fresh ccxt class, not the instance), with okx's sandbox header
  on every request (okx's sandbox shares the production host). And if the sandbox is switched
  off afterwards, the guard refuses before anything is sent.
* paper: the engine runs with venues configured and keys in the environment, and yet no ccxt
  exchange object is ever constructed and no credential is ever read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pytest

from engine.config import VenueConfig
from engine.types import OrderStatus
from engine.venues.ccxt_broker import CcxtBroker
from engine.venues.exchanges import (
    ProductionEndpointRefused,
    VenueUnavailable,
    make_exchange,
    sandbox_prefixes,
)
from engine.venues.factory import build_brokers
from tests.conftest import fast_config
from tests.test_venues_support import (
    HAS_SANDBOX,
    SYMBOL,
    VENUES,
    FakeClock,
    R,
    error_answer,
    make_broker,
    new_order,
    venue_config,
    venue_env,
)


def _expected_sandbox(venue: str) -> list[str]:
    """Sandbox URL prefixes straight from ccxt's class description (not the instance)."""
    fresh = getattr(ccxt_async, venue)()
    out = []

    def walk(v: Any) -> None:
        if isinstance(v, str):
            out.append(fresh.implode_hostname(v).rstrip("/"))
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)

    walk(fresh.describe()["urls"]["test"])
    return out


def _production(venue: str) -> list[str]:
    fresh = getattr(ccxt_async, venue)()
    out = []

    def walk(v: Any) -> None:
        if isinstance(v, str) and v.startswith("http"):
            out.append(fresh.implode_hostname(v).rstrip("/"))
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)

    walk(fresh.describe()["urls"]["api"])
    return out


@pytest.mark.parametrize("venue", VENUES)
async def test_testnet_broker_only_calls_sandbox_urls(monkeypatch: Any, venue: str) -> None:
    if not HAS_SANDBOX[venue]:
        venue_env(monkeypatch)
        with pytest.raises(VenueUnavailable, match="no testnet"):
            CcxtBroker(venue, venue_config(venue, True), "testnet", symbols=[SYMBOL[venue]])
        return
    clock = FakeClock()
    broker, http = make_broker(monkeypatch, venue, testnet=True, clock=clock)
    sym = SYMBOL[venue]
    try:
        await broker.start()
        await broker.submit(new_order(venue, "ck-1-1"))
        await broker.find(sym, broker.venue_client_id("ck-1-1"))
        await broker.poll()
        await broker.cancel("ck-1-1")
        await broker.cancel_all([sym])
        await broker.heartbeat(30)
        await broker.snapshot([sym])
        await broker.recover([new_order(venue, "ck-1-9", ts=clock.ns - 10**12)])
        if venue != "bybit":  # bybit's key info endpoint is the same one is_unified uses
            await broker.key_permissions()
    finally:
        await broker.close()
    allowed = _expected_sandbox(venue)
    production = set(_production(venue)) - set(allowed)
    assert len(http.calls) >= 10
    for call in http.calls:
        assert any(
            call.url.startswith(p + "/") or call.url.startswith(p + "?") or call.url == p
            for p in allowed
        ), call.url
        assert not any(call.url.startswith(p + "/") for p in production), call.url
        if venue == "okx":
            assert call.headers.get("x-simulated-trading") == "1", call.url
    hosts = {c.url.split("/")[2] for c in http.calls}
    expect = {
        "binance": {"testnet.binance.vision"},
        "bybit": {"api-testnet.bybit.com"},
        "okx": {"www.okx.com"},
    }[venue]
    assert hosts == expect


@pytest.mark.parametrize("venue", ["binance", "bybit", "okx"])
async def test_the_guard_refuses_production_even_if_sandbox_is_switched_off(
    monkeypatch: Any, venue: str
) -> None:
    broker, http = make_broker(monkeypatch, venue, testnet=True)
    await broker.start()
    n = len(http.calls)
    broker.exchange.set_sandbox_mode(False)  # someone flips it back to production
    with pytest.raises(ProductionEndpointRefused):
        await broker.exchange.fetch_open_orders(SYMBOL[venue])
    out = await broker.submit(new_order(venue, "ck-1-1"))
    await broker.close()
    assert len(http.calls) == n  # nothing was sent anywhere
    assert out[0].order.status is OrderStatus.REJECTED and "not sent" in out[0].order.reason
    assert broker.halted_reason  # the venue stops trading


def test_okx_sandbox_without_its_header_is_refused() -> None:
    ex = make_exchange(
        "okx", sandbox=True, credentials={"apiKey": "k" * 8, "secret": "s" * 8, "password": "p" * 8}
    )
    del ex.headers["x-simulated-trading"]
    with pytest.raises(ProductionEndpointRefused, match="x-simulated-trading"):
        ex.sign("trade/orders-pending", "private", "GET", {"instId": "BTC-USDT"})


async def test_websocket_urls_are_fenced_too() -> None:
    import ccxt.pro  # noqa: F401

    ex = make_exchange("binance", sandbox=True, pro=True)
    ok = ex.urls["api"]["ws"]["spot"]
    assert ok.startswith("wss://stream.testnet.binance.vision")
    assert sandbox_prefixes(ex)
    with pytest.raises(ProductionEndpointRefused):
        ex.client("wss://stream.binance.com:9443/ws")
    try:
        ex.client(ok + "/btcusdt@ticker")  # the sandbox stream is allowed (not connected here)
    finally:
        await ex.close()


async def test_testnet_config_never_builds_a_live_broker(monkeypatch: Any) -> None:
    venue_env(monkeypatch)
    with pytest.raises(ValueError, match="does not fit"):
        CcxtBroker("binance", venue_config("binance", False), "testnet")


async def test_paper_mode_never_builds_an_exchange_nor_reads_keys(
    monkeypatch: Any, tmp_path: Path
) -> None:
    from engine.runtime import Engine

    venue_env(monkeypatch)
    built: list[str] = []
    original_init = ccxt_async.Exchange.__init__

    def spy_init(self: Any, config: Any = None) -> None:
        built.append(type(self).__name__)
        original_init(self, config or {})

    def no_keys(self: VenueConfig) -> dict[str, str]:
        raise AssertionError("paper mode read credentials")

    async def no_network(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("paper mode reached the network")

    # The config is checked before anything is watched: validation looks up, once per process,
    # whether each exchange class has a sandbox (a bare class instance, no keys, no network),
    # so in a test run alone that instance would count as "built".
    venues = {
        v: {
            "exchange": v,
            "testnet": HAS_SANDBOX[v],
            "api_key_env": "CK_TEST_KEY",
            "secret_env": "CK_TEST_SECRET",
            "password_env": "CK_TEST_PASS",
        }
        for v in VENUES
    }
    cfg = fast_config(tmp_path / "data", venues=venues)
    assert cfg.engine.mode == "paper" and set(cfg.venues) == set(VENUES)
    monkeypatch.setattr(ccxt_async.Exchange, "__init__", spy_init)
    monkeypatch.setattr(ccxt_async.Exchange, "fetch", no_network)
    monkeypatch.setattr(ccxt.Exchange, "fetch", no_network)
    monkeypatch.setattr(VenueConfig, "credentials", no_keys)
    brokers = build_brokers(cfg)
    assert list(brokers) == ["paper"] and type(brokers["paper"]).__name__ == "PaperBroker"
    engine = Engine(cfg, tmp_path / "data")
    await engine.start()
    try:
        await engine.run(max_events=3_000)
    finally:
        await engine.stop()
    assert engine.core is not None and engine.core.counters["submitted"] > 0
    assert built == []


async def test_live_and_testnet_factories_build_ccxt_brokers(
    monkeypatch: Any, tmp_path: Path
) -> None:
    venue_env(monkeypatch)
    venues = {
        "binance": {
            "exchange": "binance",
            "testnet": True,
            "api_key_env": "CK_TEST_KEY",
            "secret_env": "CK_TEST_SECRET",
        }
    }
    cfg = fast_config(tmp_path / "data", engine={"mode": "testnet"}, venues=venues)
    brokers = build_brokers(cfg)
    try:
        assert type(brokers["binance"]).__name__ == "CcxtBroker"
        assert brokers["binance"].mode == "testnet"
        assert brokers["binance"].exchange.isSandboxModeEnabled
    finally:
        for b in brokers.values():
            await b.close()


async def test_rejection_from_sandbox_is_still_a_rejection(monkeypatch: Any) -> None:
    broker, http = make_broker(monkeypatch, "binance", testnet=True)
    http.add(R("POST", r"/api/v3/order\b", error_answer("binance", "error_insufficient_balance")))
    await broker.start()
    out = await broker.submit(new_order("binance"))
    await broker.close()
    assert out[0].order.status is OrderStatus.REJECTED
    assert http.calls[-1].url.startswith("https://testnet.binance.vision/")


@pytest.mark.parametrize(
    ("venue", "host"),
    [("binance", "testnet.binance.vision"), ("bybit", "api-testnet.bybit.com")],
)
def test_venues_check_names_the_spot_sandbox_host(venue: str, host: str) -> None:
    """`cockpit venues check` says which host it tried: the spot sandbox, not the first URL in
    ccxt's table (binance lists its futures testnet first)."""
    from engine.venues.exchanges import make_exchange
    from engine.venues.venues_check import _host

    assert _host(make_exchange(venue, sandbox=True)) == host


@pytest.mark.parametrize("venue", ["binance", "bybit", "okx"])
def test_editing_an_api_url_does_not_widen_the_sandbox_allow_list(venue: str) -> None:
    """ccxt shares nested URL tables between urls['api'] and urls['test'] in sandbox mode; an
    edit of a (websocket) api URL must not become an allowed sandbox prefix."""
    import ccxt.pro as ccxt_pro

    from engine.venues.exchanges import ProductionEndpointRefused, make_exchange

    ex = make_exchange(venue, sandbox=True, pro=True)
    before = sorted(sandbox_prefixes(ex))

    def poison(value: Any) -> Any:
        if isinstance(value, dict):
            for key in value:
                value[key] = poison(value[key])
            return value
        return "wss://evil.example.com/ws" if isinstance(value, str) else value

    poison(ex.urls["api"])
    assert sorted(sandbox_prefixes(ex)) == before
    with pytest.raises(ProductionEndpointRefused):
        ex.client("wss://evil.example.com/ws")
    assert isinstance(ex, ccxt_pro.Exchange)
