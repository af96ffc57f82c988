"""Which broker each mode gets. Paper never builds a ccxt object with credentials.

``paper``   -> :class:`~engine.paper_broker.PaperBroker`; no credentials are read, no exchange
               object is made.
``testnet`` -> one :class:`~engine.venues.ccxt_broker.CcxtBroker` per venue, in sandbox mode
               (refused for venues without a sandbox; every request fenced to the sandbox).
``live``    -> the same against production; only after arming (``engine.modes``).
"""

from __future__ import annotations

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
