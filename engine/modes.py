"""Trading modes and the arming step that stands between a config and real money.

paper (default) needs nothing. testnet needs every configured venue's credentials in the
environment. live needs all of: the config saying live, the `--live` flag, the credentials, and
a typed confirmation phrase (a prompt in the cockpit; `--confirm-live PHRASE` headless). Missing
any one is a refusal naming what is missing — never a quiet fallback to another mode.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from engine.config import Config

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
            elif not env.get(var):
                problems.append(f"venues.{name}: environment variable {var} is not set")
    if mode == "live":
        if not live_flag:
            problems.append("live mode needs the --live flag on the command line")
        if confirmation != LIVE_PHRASE:
            problems.append(f"live mode needs the typed confirmation {LIVE_PHRASE!r}")
    return problems
