"""Which broker each mode gets. Paper never builds a ccxt object with credentials.

``paper``   -> :class:`~engine.paper_broker.PaperBroker`; no credentials are read, no exchange
               object is made.
``testnet`` -> one :class:`~engine.venues.ccxt_broker.CcxtBroker` per venue, in sandbox mode
               (refused for venues without a sandbox; every request fenced to the sandbox).
``live``    -> the same against production; only after arming (``engine.modes``).
"""

from __future__ import annotations

import functools
from typing import Any

from engine.config import Config


def build_brokers(cfg: Config, **broker_kwargs: Any) -> dict[str, Any]:
    """Brokers by venue name for the configured mode.

    Paper mode returns ``{"paper": PaperBroker}`` without touching ``cfg.venues``. The caller
    must have checked ``engine.modes.arming_problems`` for testnet and live.
    """
    mode = cfg.engine.mode
    if mode == "paper":
        from engine.paper_broker import PaperBroker

        return {"paper": PaperBroker(cfg.paper)}
    from engine.venues.ccxt_broker import CcxtBroker

    symbols = sorted({s for strat in cfg.strategies for s in strat.symbols})
    out = {}
    for name, vcfg in sorted(cfg.venues.items()):
        kwargs = {"namespace": vcfg.client_id_prefix, **broker_kwargs}
        mine = [s for s in symbols if vcfg.symbols is None or s in vcfg.symbols]
        out[name] = CcxtBroker(name, vcfg, mode, symbols=mine, **kwargs)
    return out


@functools.lru_cache(maxsize=64)
def _exchange_problem(exchange_id: str, testnet: bool) -> str:
    from engine.venues.exchanges import VenueUnavailable, exchange_class, has_sandbox

    try:
        exchange_class(exchange_id)
    except VenueUnavailable as exc:
        return f"{exc} (the ids are listed in ccxt.exchanges, e.g. binance, bybit, okx)"
    if testnet and not has_sandbox(exchange_id):
        return (
            f"{exchange_id} has no testnet (sandbox) in ccxt; testnet mode cannot use it. "
            "Use paper mode, or a venue with a testnet (binance, bybit, okx)"
        )
    return ""


def venue_config_problems(cfg: Config) -> list[str]:
    """What the engine would refuse at start in the venue settings, found without a network
    request or a credential: config validation runs it, so `cockpit config check` refuses what
    the engine would. (Whether the named environment variables are set is checked when the
    engine is armed: it is not in the file.)"""
    from engine.venues.ccxt_market import feed_config_problem
    from engine.venues.profiles import profile_for

    mode = cfg.engine.mode
    problems = []
    if mode != "paper" and not cfg.venues:
        problems.append(f"{mode} mode needs at least one [venues.NAME] section (ccxt exchange id)")
    elif cfg.market.source == "venue" and not cfg.venues:
        problems.append(
            'market.source = "venue" needs at least one [venues.NAME] section naming the ccxt '
            'exchange whose prices to paper-trade on (e.g. exchange = "binance")'
        )
    for name, vcfg in sorted(cfg.venues.items()):
        trading = mode != "paper"
        # Paper on live prices reads production data unless the section asks for the sandbox.
        sandbox = vcfg.testnet and (trading or "testnet" in vcfg.model_fields_set)
        why = _exchange_problem(vcfg.exchange, sandbox)
        if why and not trading and sandbox and not _exchange_problem(vcfg.exchange, False):
            # Paper mode asked for the sandbox's prices: the fix is the testnet line, not the mode.
            why = (
                f"venues.{name}.testnet: {vcfg.exchange} has no testnet (sandbox) in ccxt to "
                "read prices from; remove testnet = true (paper mode then reads its production "
                "prices, without keys)"
            )
            problems.append(why)
            continue
        if why:
            problems.append(f"venues.{name}.exchange: {why}")
            continue
        if not trading:
            if cfg.market.source == "venue":
                feed = feed_config_problem(name, vcfg)
                if feed:
                    problems.append(feed)
            continue
        if vcfg.testnet != (mode == "testnet"):
            want = str(mode == "testnet").lower()
            problems.append(f"venues.{name}.testnet: {mode} mode needs testnet = {want}")
        fields = ["api_key_env", "secret_env"]
        if profile_for(vcfg.exchange).needs_password:
            fields.append("password_env")
        for field in fields:
            if not getattr(vcfg, field):
                problems.append(
                    f"venues.{name}.{field}: name the environment variable that holds it"
                )
        feed = feed_config_problem(name, vcfg)
        if feed:
            problems.append(feed)
        if vcfg.native_stops:
            # The start refused it after loading the venue's markets; config check said ok.
            from engine.venues.ccxt_broker import native_stops_problem
            from engine.venues.exchanges import exchange_class

            stops = native_stops_problem(exchange_class(vcfg.exchange)())
            if stops:
                problems.append(
                    f"venues.{name}.native_stops = true, but {stops}; set native_stops = false "
                    "(its stops stay engine-side)"
                )
    return problems
