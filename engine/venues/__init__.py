"""Real venues through ccxt: market data, execution (testnet and live), reconciliation.

Modules:

* :mod:`~engine.venues.exchanges`  — builds ccxt objects; fences testnet ones into the sandbox.
* :mod:`~engine.venues.profiles`   — per-venue differences: client-id rules, windows, options.
* :mod:`~engine.venues.ccxt_market` — instruments from ``load_markets``; the quote feed.
* :mod:`~engine.venues.orderbook`  — L2 book with snapshot + diff sync and gap detection.
* :mod:`~engine.venues.ccxt_broker` — the broker (the only code that reads credentials).
* :mod:`~engine.venues.ratelimit`  — token bucket with a cancel reserve; backoff; Retry-After.
* :mod:`~engine.venues.reconcile`  — venue vs journal differences and the HALT rule (pure).
* :mod:`~engine.venues.redact`     — key redaction for messages and logs.
* :mod:`~engine.venues.venues_check` — ``cockpit venues check``.
* :mod:`~engine.venues.factory`    — which broker a mode gets (paper never touches ccxt keys).

Importing this package does not import ccxt; the modules that need it do.
"""
