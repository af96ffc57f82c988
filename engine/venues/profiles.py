"""What differs between venues, in one table: client-id rules, consistency windows, options.

ccxt unifies most of an exchange's API, but not these:

* **Client order ids.** ccxt maps the unified ``clientOrderId`` param to each venue's own field
  (binance ``newClientOrderId``/``origClientOrderId``, kraken ``cl_ord_id``, kucoin ``clientOid``,
  bybit ``orderLinkId``, okx ``clOrdId``), but each venue allows different characters and lengths.
  :func:`venue_client_id` turns the engine's id into one the venue accepts, deterministically, so
  the same order is always looked up under the same id after a crash.
* **Consistency window.** How long after a send an order that is not (yet) visible at the venue
  may still appear. After it, "not found" means "never reached the venue". Where the venue lets a
  request carry its own expiry (binance/bybit ``recvWindow``, kraken ``deadline``, okx
  ``expTime``) the window is that expiry plus a margin; elsewhere it is generous.
* **Options** that keep ccxt to spot markets and away from endpoints the broker does not need.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

# ccxt options every venue gets: spot only, and never let ccxt retry a request by itself (a
# retried create_order is exactly the duplicate the broker exists to prevent).
BASE_OPTIONS: dict[str, Any] = {
    "defaultType": "spot",
    "fetchMarkets": {"types": ["spot"]},
    "maxRetriesOnFailure": 0,
    "warnOnFetchOpenOrdersWithoutSymbol": True,
}

_UUID_NS = uuid.UUID("9b2f5b7e-35a4-4b2e-9d52-6c0f1a7c3e11")


@dataclass(frozen=True, slots=True)
class ClientIdRule:
    """What a venue accepts as a client order id, and how to fold one that does not fit."""

    max_len: int
    pattern: str  # the whole id must match
    fallback: str = "hex"  # "hex": prefix + sha256 hex; "uuid": a name-based UUID

    def fits(self, cid: str) -> bool:
        return len(cid) <= self.max_len and re.fullmatch(self.pattern, cid) is not None


@dataclass(frozen=True, slots=True)
class VenueProfile:
    exchange_id: str
    client_id: ClientIdRule
    consistency_window_s: float
    needs_password: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    # Params for load_markets(params=...): keep a venue to the endpoints a spot broker needs.
    load_params: dict[str, Any] = field(default_factory=dict)
    # Where the key's own withdraw/trade permissions can be read (see venues_check).
    permissions: str = "unknown"
    # How to find an order by client id: "fetch_order" (the venue has a by-client-id query) or
    # "open_closed" (filter the open, then the closed orders by the client id).
    lookup: str = "fetch_order"
    # The params key ccxt reads the client id from for look-ups and cancels on this venue.
    client_id_param: str = "clientOrderId"
    closed_method: str = "fetch_closed_orders"
    # Is ccxt's cancelAllOrdersAfter here a countdown that REST heartbeats keep re-arming (the
    # dead-man switch the engine promises)? Not on bybit: its "disconnected cancel all" (DCP)
    # fires only when a private websocket subscribed to "dcp" drops, which the engine does not
    # hold; ccxt sets it for DERIVATIVES, not SPOT; 0 (disarm) is outside its 3-300 s window.
    deadman_countdown: bool = True


PROFILES: dict[str, VenueProfile] = {
    "binance": VenueProfile(
        "binance",
        ClientIdRule(36, r"[.A-Z:/a-z0-9_-]{1,36}"),
        consistency_window_s=15.0,  # recvWindow 10 s (ccxt default) + margin
        options={"fetchMargins": False, "recvWindow": 10_000},
        permissions="binance",
    ),
    "kraken": VenueProfile(
        "kraken",
        # cl_ord_id: a UUID, or free ASCII text of up to 18 characters
        ClientIdRule(18, r"[A-Za-z0-9_-]{1,18}", fallback="uuid"),
        consistency_window_s=20.0,  # AddOrder carries deadline = now + 10 s
        # QueryOrders takes txid/userref only; OpenOrders and ClosedOrders filter by cl_ord_id.
        lookup="open_closed",
    ),
    "kucoin": VenueProfile(
        "kucoin",
        ClientIdRule(40, r"[A-Za-z0-9_-]{1,40}"),
        consistency_window_s=30.0,  # no request expiry: be generous
        needs_password=True,
        options={"fetchMarkets": {"types": ["spot"], "fetchTickersFees": False}, "uta": False},
        load_params={"marginables": False},
        permissions="kucoin",
    ),
    "bybit": VenueProfile(
        "bybit",
        ClientIdRule(36, r"[A-Za-z0-9_-]{1,36}"),
        consistency_window_s=15.0,  # recv_window 5 s + margin
        options={"recvWindow": 5_000},
        permissions="bybit",
        # ccxt's bybit fetchOrder needs an order id; realtime/history filter by orderLinkId.
        lookup="open_closed",
        client_id_param="orderLinkId",
        closed_method="fetch_canceled_and_closed_orders",
        deadman_countdown=False,
    ),
    "okx": VenueProfile(
        "okx",
        ClientIdRule(32, r"[A-Za-z0-9]{1,32}"),
        consistency_window_s=15.0,  # expTime header: now + 10 s
        needs_password=True,
        permissions="okx",
    ),
}


def profile_for(exchange_id: str) -> VenueProfile:
    """The venue's profile; an unknown ccxt id gets a conservative generic one."""
    known = PROFILES.get(exchange_id)
    if known is not None:
        return known
    return VenueProfile(exchange_id, ClientIdRule(32, r"[A-Za-z0-9]{1,32}"), 30.0)


def venue_client_id(client_order_id: str, exchange_id: str, namespace: str = "") -> str:
    """The id the venue sees for an engine order: the same input always gives the same output.

    An id the venue accepts as is stays readable; one it would refuse is folded into a hash
    (``ck`` + hex) or a name-based UUID, which a lookup recomputes the same way.
    """
    rule = profile_for(exchange_id).client_id
    cid = f"{namespace}{client_order_id}"
    if rule.fits(cid):
        return cid
    if rule.fallback == "uuid":
        return str(uuid.uuid5(_UUID_NS, cid))
    digest = hashlib.sha256(cid.encode()).hexdigest()
    return ("ck" + digest)[: rule.max_len]
