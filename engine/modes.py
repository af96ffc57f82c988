"""Trading modes and the arming step that stands between a config and real money.

paper (default) needs nothing. testnet needs every configured venue's credentials in the
environment. live needs all of: the config saying live, the `--live` flag, the credentials, and
a typed confirmation phrase (a prompt in the cockpit; `--confirm-live PHRASE` headless). Missing
any one is a refusal naming what is missing — never a quiet fallback to another mode.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from engine.config import Config, may_be_a_key
from engine.datadir import DataDirRefused

if TYPE_CHECKING:
    from engine.restore import RestoredState

# As the portfolio's: a net position this small against the trade that left it is flat.
_DUST = 1e-12

LIVE_PHRASE = "trade live"


def arming_problems(
    cfg: Config,
    *,
    live_flag: bool = False,
    confirmation: str | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Why the configured mode may not start; an empty list means it may."""
    env = os.environ if env is None else env
    mode = cfg.engine.mode
    problems: list[str] = []
    if live_flag and mode != "live":
        problems.append(f"--live given but engine.mode is {mode!r}; set engine.mode = 'live'")
    if mode == "paper":
        return problems
    if not cfg.venues:
        problems.append(f"{mode} mode needs at least one [venues.NAME] section (ccxt exchange id)")
    for name, venue in sorted(cfg.venues.items()):
        if mode == "live" and venue.testnet:
            problems.append(f"venues.{name}.testnet is true; live mode needs testnet = false")
        if mode == "testnet" and not venue.testnet:
            problems.append(f"venues.{name}.testnet is false; testnet mode needs testnet = true")
        for field in ("api_key_env", "secret_env"):
            var = getattr(venue, field)
            if not var:
                problems.append(f"venues.{name}.{field}: name the environment variable")
            elif not env.get(var) and may_be_a_key(var):
                # Perhaps the key itself written where its variable's name goes: not repeated
                # (a service's log keeps every line the engine writes).
                problems.append(
                    f"venues.{name}.{field}: the environment variable it names is not set (the "
                    "name is not shown: 16 letters and digits or more without _ may be the key "
                    "itself); write the variable's name, like BINANCE_API_KEY, and export it"
                )
            elif not env.get(var):
                problems.append(f"venues.{name}: environment variable {var} is not set")
            elif problem := key_value_problem(var, env[var]):
                problems.append(f"venues.{name}: {problem}")
    if mode == "live":
        if not live_flag:
            problems.append("live mode needs the --live flag on the command line")
        if confirmation != LIVE_PHRASE:
            problems.append(f"live mode needs the typed confirmation {LIVE_PHRASE!r}")
    return problems


def key_value_problem(var: str, value: str) -> str:
    """Why the API key or secret in environment variable ``var`` cannot be one ("" when it
    can), in words that never show the value. Arming and `cockpit venues check` ask the same."""
    if any(c.isspace() or not c.isprintable() for c in value):
        # No venue's key or secret holds one; a CRLF EnvironmentFile leaves a "\r" on each
        # value, a pasted key a space or line end: the venue then answers with an
        # authentication error that never says why (venues check said "the venue refused the
        # keys" for what its HTTP client refused to send).
        return (
            f"environment variable {var} holds a space, line end or control character (the "
            "value is not shown); no API key or secret has one: set it again without it (a "
            "file with Windows line ends leaves a \\r)"
        )
    if not value.isascii():
        # A typographic quote or dash pasted from a document, a letter the keyboard changed:
        # the venue answered "signature not valid" and never said why.
        return (
            f"environment variable {var} holds a character that is not ASCII (the value is "
            "not shown); no API key or secret has one: copy it again from the venue's page"
        )
    return ""


class JournalOfAnotherSetup(DataDirRefused):
    """The data directory's journal belongs to another mode, exchange or routing (exit 2)."""


def journal_binding_problem(cfg: Config, restored: RestoredState) -> str:
    """Why this data directory's journal may not be restored under ``cfg`` ("" if it may).

    A journal's positions and open orders are those of the mode and the venues it ran with.
    Restored into another mode (paper's into testnet, testnet's into live) or onto another
    exchange, the engine would hold them as its own there: an exit or the kill switch's flatten
    would sell what the engine never bought on that account (the trader's own coins). So a
    start in another mode, with a venue name now naming another exchange, or with a position
    or an open order on one venue for a symbol the config now trades on another, is refused
    before any venue is opened."""
    mode = cfg.engine.mode
    if restored.mode is not None and restored.mode != mode:
        return (
            f"this data directory holds a {restored.mode} journal (its positions and orders "
            f"are {restored.mode}'s); a {mode} engine would take them as its own: give {mode} "
            "its own data directory (engine.data_dir or --data-dir)"
        )
    if mode == "paper":
        return ""
    for name, was in sorted(restored.exchanges.items()):
        now = cfg.venues[name].exchange if name in cfg.venues else None
        if now is not None and now != was:
            return (
                f"venues.{name} was exchange {was!r} in this data directory's journal and is "
                f"{now!r} now: its positions and orders are {was}'s; give it its own data "
                "directory (engine.data_dir or --data-dir) or another venue name"
            )
    working = [*restored.open_orders, *restored.unacknowledged]
    for name, was in sorted(restored.client_id_prefixes.items()):
        now = cfg.venues[name].client_id_prefix if name in cfg.venues else None
        open_ids = sorted(o.client_order_id for o in working if o.venue == name)
        if now is not None and now != was and open_ids:
            # The open orders are found at the venue by client ids made with the old prefix:
            # with the new one a working order would look gone and be recorded cancelled.
            return (
                f"venues.{name}.client_id_prefix was {was!r} when this journal's open order "
                f"{open_ids[0]} was sent and is {now!r} now: its id at the venue is made with the "
                f"old prefix; set client_id_prefix = {was!r} again until no order of that run "
                "is open, or give this config its own data directory"
            )
    # Where each strategy symbol trades now (config check: on exactly one venue).
    routed = {
        s: name
        for name, vcfg in sorted(cfg.venues.items())
        for strat in cfg.strategies
        for s in strat.symbols
        if vcfg.symbols is None or s in vcfg.symbols
    }
    held: dict[tuple[str, str], float] = {}
    for f in restored.fills:
        key = (f.venue, f.symbol)
        old = held.get(key, 0.0)
        new = old + f.side.sign * f.qty
        held[key] = 0.0 if abs(new) <= _DUST * max(abs(old), f.qty) else new
    holdings = [
        (f"a position of {q:g} {s} on {v}", v, s) for (v, s), q in sorted(held.items()) if q
    ]
    holdings += [
        (f"open order {o.client_order_id} ({o.symbol}) on {o.venue}", o.venue, o.symbol)
        for o in [*restored.open_orders, *restored.unacknowledged]
    ]
    for what, venue, symbol in holdings:
        now = routed.get(symbol)
        if now is not None and now != venue:
            return (
                f"the journal holds {what}; this config trades {symbol} on {now}, where the "
                f"engine would take it as {now}'s (an exit or the kill's flatten would sell "
                f"it there): trade {symbol} on {venue} until it is closed, or give this config "
                "its own data directory"
            )
    return ""
