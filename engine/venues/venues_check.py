"""``cockpit venues check``: can each configured venue be traded, and is it safe to?

For every ``[venues.NAME]`` section, one line per check:

* ``config``       the venue exists in ccxt, and has a sandbox if ``testnet = true``;
* ``connectivity`` ``fetch_time`` answers (round trip in ms);
* ``clock``        the venue's clock against ours (midpoint of the round trip); over the
                   breakers' ``clock_drift_warn_ms`` warns, over ``clock_drift_halt_ms`` fails;
* ``markets``      ``load_markets`` works and lists the strategies' symbols;
* ``trade``        the keys can trade (read from the venue's key-permission endpoint);
* ``withdraw``     the keys can withdraw: a **warning** (a trading key should not be able to);
                   "unknown" where the venue does not say.

Keys are read only by :class:`~engine.venues.ccxt_broker.CcxtBroker`, and every line of a venue
passes through that broker's redactor: no line can carry a key. The result fails (exit 1) when
any line is FAIL; WARN and UNKNOWN do not fail.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.config import Config, VenueConfig
from engine.venues.exchanges import VenueUnavailable, exchange_class, make_exchange
from engine.venues.profiles import profile_for
from engine.venues.redact import Redactor

OK = "ok"
WARN = "warn"
FAIL = "fail"
UNKNOWN = "unknown"

Prepare = Callable[[Any], None]


@dataclass(frozen=True, slots=True)
class CheckLine:
    venue: str
    check: str
    status: str
    message: str

    def render(self) -> str:
        return f"{self.status.upper():<7} {self.venue} {self.check}: {self.message}"


def _host(ex: Any) -> str:
    """The host spot requests go to (binance lists its futures testnet first in ``urls``)."""
    api = ex.urls.get("api")
    if isinstance(api, dict):
        preferred = [api[k] for k in ("public", "spot", "rest") if k in api]
        values = [*preferred, *api.values()]
    else:
        values = [api]
    for value in values:
        if isinstance(value, str):
            url = ex.implode_hostname(value) if "{hostname}" in value else value
            return url.split("/")[2] if "//" in url else url
    return ex.id


async def check_venue(
    name: str,
    vcfg: VenueConfig,
    *,
    mode: str,
    symbols: list[str],
    drift_warn_ms: float = 100.0,
    drift_fail_ms: float = 500.0,
    prepare: Prepare | None = None,
    clock_ms: Callable[[], float] = lambda: time.time() * 1000.0,
    timeout_ms: int = 10_000,
) -> list[CheckLine]:
    """The check lines of one venue (never raises for a venue problem)."""
    from engine.venues.ccxt_broker import BrokerConfigError, CcxtBroker

    lines: list[CheckLine] = []
    redactor = Redactor()

    def add(check: str, status: str, message: str) -> None:
        lines.append(CheckLine(name, check, status, redactor.text(message)))

    try:
        exchange_class(vcfg.exchange)
    except VenueUnavailable as exc:
        add("config", FAIL, str(exc))
        return lines
    # Paper on live prices reads production data unless the section asks for the sandbox.
    sandbox = vcfg.testnet and (mode != "paper" or "testnet" in vcfg.model_fields_set)
    net = "testnet" if sandbox else "live"
    if mode == "testnet" and not vcfg.testnet:
        add("config", FAIL, "testnet mode but testnet = false for this venue")
        return lines
    if mode == "live" and vcfg.testnet:
        add("config", FAIL, "live mode but testnet = true for this venue")
        return lines
    try:
        public = make_exchange(vcfg.exchange, sandbox=sandbox, timeout_ms=timeout_ms)
    except VenueUnavailable as exc:
        add("config", FAIL, str(exc))
        return lines
    where = f"{net}, public market data only: paper mode" if mode == "paper" else net
    add("config", OK, f"ccxt {vcfg.exchange} ({where})")
    if prepare is not None:
        prepare(public)
    try:
        reachable = await _connectivity(public, add, clock_ms, drift_warn_ms, drift_fail_ms)
        if reachable:
            await _markets(public, symbols, add)
    finally:
        await public.close()
    if not reachable:
        return lines
    if mode == "paper":
        # Paper on this venue's prices: its orders never leave the engine, and keys named in
        # the section are never read (the engine does not read them either; a key check would
        # sign a request to whichever network the prices come from).
        named = " (the keys named here are not read)" if vcfg.api_key_env else ""
        add("trade", OK, f"paper mode: no keys needed, orders are filled on paper{named}")
        return lines
    if not (vcfg.api_key_env and vcfg.secret_env):
        add("trade", FAIL, "no keys configured (name them with api_key_env and secret_env)")
        add("withdraw", UNKNOWN, "no keys configured")
        return lines
    from engine.modes import key_value_problem

    for var in (vcfg.api_key_env, vcfg.secret_env):
        problem = key_value_problem(var, os.environ.get(var, "")) if var else ""
        if problem:  # as the engine's arming says it: never sent, so never "refused"
            add("trade", FAIL, problem)
            add("withdraw", UNKNOWN, "keys not usable")
            return lines
    try:
        broker = CcxtBroker(name, vcfg, net, timeout_ms=timeout_ms)
    except BrokerConfigError as exc:
        add("trade", FAIL, str(exc))
        add("withdraw", UNKNOWN, "keys not available")
        return lines
    redactor = broker.redactor
    if prepare is not None:
        prepare(broker.exchange)
    try:
        perms = await broker.key_permissions()
    except Exception as exc:
        add("trade", FAIL, f"the venue refused the keys: {broker.redactor.error(exc)}")
        add("withdraw", UNKNOWN, "keys not usable")
        return lines
    finally:
        await broker.close()
    source = perms.get("source", "")
    if perms["trade"] is True:
        add("trade", OK, f"keys can trade ({source})")
    elif perms["trade"] is False:
        add("trade", FAIL, f"keys cannot trade: enable spot trading for this key ({source})")
    else:
        add("trade", UNKNOWN, f"keys authenticate; trade permission unknown ({source})")
    if perms["withdraw"] is True:
        add("withdraw", WARN, f"keys CAN WITHDRAW: use a key without withdrawal rights ({source})")
    elif perms["withdraw"] is False:
        add("withdraw", OK, f"keys cannot withdraw ({source})")
    else:
        add("withdraw", UNKNOWN, f"withdraw permission unknown ({source})")
    return lines


async def _connectivity(
    ex: Any,
    add: Callable[[str, str, str], None],
    clock_ms: Callable[[], float],
    warn_ms: float,
    fail_ms: float,
) -> bool:
    if not ex.has.get("fetchTime"):
        try:
            await ex.load_markets()
        except Exception as exc:
            add("connectivity", FAIL, f"{_host(ex)} unreachable: {type(exc).__name__}")
            return False
        add("connectivity", OK, f"{_host(ex)} answered")
        add("clock", UNKNOWN, f"{ex.id} has no server-time endpoint in ccxt")
        return True
    t0 = clock_ms()
    try:
        server = await ex.fetch_time()
    except Exception as exc:
        add(
            "connectivity",
            FAIL,
            f"{_host(ex)} unreachable: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else ''}",
        )
        return False
    t1 = clock_ms()
    add("connectivity", OK, f"{_host(ex)} answered in {t1 - t0:.0f} ms")
    if not isinstance(server, int | float):
        add("clock", UNKNOWN, "the venue's time answer has no timestamp")
        return True
    mid = (t0 + t1) / 2.0
    offset = float(server) - mid
    note = ""
    if float(server) % 1000 == 0:
        # Whole seconds (kraken's Time has 1 s resolution): the venue's clock is somewhere in
        # [server, server + 1 s); only a distance outside that interval is an offset.
        note = "; the venue's time has 1 s resolution"
        offset = (
            0.0
            if server <= mid < server + 1000
            else (float(server) - mid if mid < server else float(server) + 1000 - mid)
        )
    text = f"venue clock {offset:+.0f} ms from ours (round trip {t1 - t0:.0f} ms{note})"
    if abs(offset) > fail_ms:
        add("clock", FAIL, f"{text}; over {fail_ms:g} ms: fix the system clock (NTP)")
    elif abs(offset) > warn_ms:
        add("clock", WARN, f"{text}; over {warn_ms:g} ms")
    else:
        add("clock", OK, text)
    return True


async def _markets(ex: Any, symbols: list[str], add: Callable[[str, str, str], None]) -> None:
    try:
        await ex.load_markets(False, dict(profile_for(ex.id).load_params))
    except Exception as exc:
        add("markets", FAIL, f"load_markets failed: {type(exc).__name__}")
        return
    markets = ex.markets or {}
    missing = [s for s in symbols if s not in markets]
    listed = [s for s in symbols if s in markets]
    if missing:
        add("markets", WARN, f"{len(markets)} markets; not listed here: {', '.join(missing)}")
    else:
        which = f"; {', '.join(listed)} listed" if listed else ""
        add("markets", OK, f"{len(markets)} markets loaded{which}")


async def check_venues(
    cfg: Config,
    *,
    prepare: Prepare | None = None,
    clock_ms: Callable[[], float] = lambda: time.time() * 1000.0,
    timeout_ms: int = 10_000,
) -> list[CheckLine]:
    """Check every configured venue, in name order."""
    symbols = sorted({s for strat in cfg.strategies for s in strat.symbols})
    breakers = cfg.safety.breakers
    out: list[CheckLine] = []
    for name, vcfg in sorted(cfg.venues.items()):
        out.extend(
            await check_venue(
                name,
                vcfg,
                mode=cfg.engine.mode,
                symbols=[s for s in symbols if vcfg.symbols is None or s in vcfg.symbols],
                drift_warn_ms=breakers.clock_drift_warn_ms,
                drift_fail_ms=breakers.clock_drift_halt_ms,
                prepare=prepare,
                clock_ms=clock_ms,
                timeout_ms=timeout_ms,
            )
        )
    return out


def failed(lines: list[CheckLine]) -> bool:
    return any(line.status == FAIL for line in lines)
