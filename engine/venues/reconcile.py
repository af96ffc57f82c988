"""Reconciliation: what the venue says against what the journal says, as a list of differences.

Pure functions over plain data: the broker fetches a :class:`VenueSnapshot` (open orders, recent
trades, balances), the runtime builds a :class:`JournalSnapshot` from the journal, and
:func:`reconcile` returns one :class:`Difference` per disagreement, each with a human line.

Kinds of difference:

* ``unknown_order`` — an open order at the venue that no journal order accounts for (placed by
  hand, by another program, or by a lost session). **Blocking.**
* ``order_state`` — the journal has the order finished, the venue still has it open. **Blocking.**
* ``missing_order`` — the journal has an open order the venue does not list as open. It has
  probably filled or been canceled meanwhile; the broker looks it up by client order id and
  reports the outcome. Not blocking.
* ``unjournaled_fill`` — a trade at the venue that the journal has no fill for. For one of our
  orders the broker applies it on its next poll (not blocking); for an order we do not know it
  means the position differs from the journal's (**blocking**).
* ``balance_mismatch`` — an asset's venue balance differs from the journal's expectation by more
  than the tolerance. Shown; blocking only when asked (deposits and fees in other currencies make
  balances drift for harmless reasons).

**The HALT rule.** :class:`VenueReconciliation` holds one venue's differences and the operator's
resolutions. While any blocking difference is unresolved, ``halted`` is True and the venue's
trading state must stay HALTED (no submits; cancels allowed). An unknown order is resolved only
by a person choosing ``adopt`` (the engine tracks it from now on) or ``cancel`` (the broker
cancels it at the venue); a fill on an unknown order by ``adopt`` (take it into the position) or
``acknowledge``. Resolutions are data, so they can be journaled and survive a restart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from engine.types import NS_PER_MS, Fill, Order, OrderStatus

UNKNOWN_ORDER = "unknown_order"
ORDER_STATE = "order_state"
MISSING_ORDER = "missing_order"
UNJOURNALED_FILL = "unjournaled_fill"
BALANCE_MISMATCH = "balance_mismatch"

# What an operator may answer to each blocking kind.
RESOLUTIONS: dict[str, tuple[str, ...]] = {
    UNKNOWN_ORDER: ("adopt", "cancel"),
    ORDER_STATE: ("adopt", "cancel"),
    UNJOURNALED_FILL: ("adopt", "acknowledge"),
    BALANCE_MISMATCH: ("acknowledge",),
}


@dataclass(frozen=True, slots=True)
class VenueOrder:
    """An order as the venue reports it (from a ccxt order structure)."""

    venue_order_id: str
    client_id: str | None
    symbol: str
    side: str
    order_type: str
    qty: float
    filled: float
    price: float | None
    average: float | None
    status: str  # ccxt's: open, closed, canceled, expired, rejected (or "" if unknown)
    ts: int  # ns

    @property
    def remaining(self) -> float:
        return max(self.qty - self.filled, 0.0)

    def describe(self) -> str:
        px = f" @ {self.price:g}" if self.price else ""
        cid = f", client id {self.client_id!r}" if self.client_id else ""
        return (
            f"{self.symbol} {self.side} {self.qty:g}{px} (filled {self.filled:g}; "
            f"venue id {self.venue_order_id}{cid})"
        )


@dataclass(frozen=True, slots=True)
class VenueTrade:
    """One execution as the venue reports it (from a ccxt trade structure)."""

    trade_id: str
    venue_order_id: str | None
    client_id: str | None
    symbol: str
    side: str
    qty: float
    price: float
    fee: float  # in the quote currency; NaN when it was charged in a third currency
    fee_currency: str | None
    liquidity: str  # "maker" / "taker"
    ts: int  # ns
    # The fee when the venue took it in the base asset (binance's commission on a buy): the
    # account's base balance moved by ``qty`` less this (``fee`` holds its quote value).
    fee_base: float = 0.0


@dataclass(frozen=True, slots=True)
class VenueSnapshot:
    venue: str
    open_orders: tuple[VenueOrder, ...]
    trades: tuple[VenueTrade, ...]
    balances: dict[str, float]  # total per asset
    since_ns: int  # the trades cover [since_ns, taken_ns]
    taken_ns: int


@dataclass(frozen=True, slots=True)
class JournalSnapshot:
    """The journal's view of one venue.

    ``client_ids`` maps the id the venue shows to the engine's client order id (the broker knows
    the folding rule; reconcile does not). ``venue_order_ids`` maps known venue ids likewise.
    """

    open_orders: tuple[Order, ...]
    fills: tuple[Fill, ...]
    client_ids: dict[str, str]
    venue_order_ids: dict[str, str] = field(default_factory=dict)
    known_orders: frozenset[str] = frozenset()  # every engine client order id ever journaled
    expected_balances: dict[str, float] | None = None


@dataclass(frozen=True, slots=True)
class Difference:
    kind: str
    venue: str
    key: str  # stable per difference: venue order id, client order id, fill id or asset
    line: str
    blocking: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Fill ids the broker makes from an order's totals when its trades never show up
# (``<venue>-<venue client id>-agg<n>``).
SYNTHETIC_FILL = re.compile(r"-agg\d+$")


def adopted_order_id(venue: str, venue_order_id: str) -> str:
    """The engine's id for a venue order a person adopted: stable across restarts."""
    return f"adopt-{venue}-{venue_order_id}"


def fill_id_for(venue: str, trade_id: str) -> str:
    """The engine's fill id for a venue trade: stable across restarts."""
    return f"{venue}-{trade_id}"


def reconcile(
    venue: VenueSnapshot,
    journal: JournalSnapshot,
    *,
    balance_abs_tol: float = 1e-8,
    balance_rel_tol: float = 1e-6,
    balance_blocking: bool = False,
) -> list[Difference]:
    """Every disagreement between the venue and the journal, blocking ones first."""
    name = venue.venue
    out: list[Difference] = []
    journal_open = {o.client_order_id: o for o in journal.open_orders}
    venue_open_coids: set[str] = set()

    for vo in venue.open_orders:
        coid = (journal.client_ids.get(vo.client_id) if vo.client_id else None) or (
            journal.venue_order_ids.get(vo.venue_order_id)
        )
        if coid is not None:
            venue_open_coids.add(coid)
        if coid is not None and coid in journal_open:
            continue
        if coid is not None and coid in journal.known_orders:
            out.append(
                Difference(
                    ORDER_STATE,
                    name,
                    vo.venue_order_id,
                    f"{name}: order {coid} is finished in the journal but open at the venue: "
                    f"{vo.describe()}; adopt or cancel it",
                    True,
                    {"client_order_id": coid, "order": asdict(vo)},
                )
            )
            continue
        out.append(
            Difference(
                UNKNOWN_ORDER,
                name,
                vo.venue_order_id,
                f"{name}: unknown open order at the venue: {vo.describe()}; adopt or cancel it",
                True,
                {"order": asdict(vo)},
            )
        )

    for coid, order in journal_open.items():
        if coid in venue_open_coids or order.status is OrderStatus.PENDING_NEW:
            continue  # pending ones are the recovery's business (look-up by client id)
        out.append(
            Difference(
                MISSING_ORDER,
                name,
                coid,
                f"{name}: order {coid} ({order.symbol} {order.side} {order.qty:g}) is open in "
                "the journal but not at the venue; looking it up by client order id",
                False,
                {"client_order_id": coid},
            )
        )

    journaled = {(f.fill_id, f.symbol) for f in journal.fills}  # binance numbers trades per symbol
    known_coids = journal.known_orders | set(journal_open)
    booked_from_totals = {
        f.client_order_id for f in journal.fills if SYNTHETIC_FILL.search(f.fill_id)
    }
    for tr in venue.trades:
        fid = fill_id_for(name, tr.trade_id)
        if (fid, tr.symbol) in journaled:
            continue
        coid = (journal.client_ids.get(tr.client_id) if tr.client_id else None) or (
            journal.venue_order_ids.get(tr.venue_order_id or "")
        )
        ours = coid is not None and coid in known_coids
        what = f"{tr.symbol} {tr.side} {tr.qty:g} @ {tr.price:g} (trade {tr.trade_id})"
        blocking = not ours
        if ours and coid in journal_open:  # the broker tracks it: its next poll books the trade
            line = f"{name}: fill not in the journal for order {coid}: {what}; applying it"
        elif ours and coid in booked_from_totals:
            line = (
                f"{name}: trade for order {coid}, whose fill was booked from the order's totals "
                f"when its trades did not show: {what}; nothing to do"
            )
        elif ours:
            # The journal has the order finished without this trade: nothing will book it.
            blocking = True
            line = (
                f"{name}: fill missing from the journal for finished order {coid}: {what}; the "
                "position differs from the journal's; adopt (book it) or acknowledge it"
            )
        else:
            line = (
                f"{name}: fill for an order the engine does not know: {what}; the position "
                "differs from the journal's; adopt or acknowledge it"
            )
        out.append(
            Difference(
                UNJOURNALED_FILL,
                name,
                fid,
                line,
                blocking,
                {"trade": asdict(tr), "client_order_id": coid},
            )
        )

    if journal.expected_balances is not None:
        expected = journal.expected_balances
        for asset in sorted(set(expected) | set(venue.balances)):
            have = venue.balances.get(asset, 0.0)
            want = expected.get(asset, 0.0)
            if not (math.isfinite(have) and math.isfinite(want)):
                continue
            tol = balance_abs_tol + balance_rel_tol * max(abs(have), abs(want))
            if abs(have - want) > tol:
                out.append(
                    Difference(
                        BALANCE_MISMATCH,
                        name,
                        asset,
                        f"{name}: {asset} balance is {have:g} at the venue, the journal expects "
                        f"{want:g} (difference {have - want:+g})",
                        balance_blocking,
                        {"venue": have, "expected": want},
                    )
                )
    out.sort(key=lambda d: (not d.blocking, d.kind, d.key))
    return out


@dataclass(frozen=True, slots=True)
class Resolution:
    key: str
    action: str
    by: str
    ts: int
    note: str = ""


class ResolutionError(ValueError):
    """An operator answer that does not fit the difference."""


@dataclass(frozen=True)
class VenueReconciliation:
    """One venue's reconciliation and the operator's answers: the data behind the HALT rule."""

    venue: str
    ts: int
    differences: tuple[Difference, ...]
    resolutions: tuple[Resolution, ...] = ()

    @property
    def resolved_keys(self) -> set[str]:
        return {r.key for r in self.resolutions}

    def unresolved(self) -> list[Difference]:
        done = self.resolved_keys
        return [d for d in self.differences if d.blocking and d.key not in done]

    @property
    def halted(self) -> bool:
        """True while trading on this venue must stay HALTED."""
        return bool(self.unresolved())

    @property
    def trading_state(self) -> str:
        return "HALTED" if self.halted else "ACTIVE"

    def halt_reason(self) -> str:
        left = self.unresolved()
        if not left:
            return ""
        kinds = sorted({d.kind.replace("_", " ") for d in left})
        return (
            f"{self.venue}: reconciliation found {len(left)} unresolved difference(s) "
            f"({', '.join(kinds)}); answer each (cockpit: v, or cockpit resolve)"
        )

    def resolve(
        self, key: str, action: str, *, by: str, ts: int, note: str = ""
    ) -> VenueReconciliation:
        """Record an operator's answer; ResolutionError if it does not fit."""
        diff = next((d for d in self.differences if d.key == key), None)
        if diff is None:
            raise ResolutionError(f"{self.venue}: no difference with key {key!r}")
        allowed = RESOLUTIONS.get(diff.kind, ())
        if action not in allowed:
            raise ResolutionError(
                f"{self.venue}: {diff.kind.replace('_', ' ')} {key!r} can be resolved by "
                f"{' or '.join(allowed) or 'nothing (it resolves itself)'}, not {action!r}"
            )
        if not by:
            raise ResolutionError("a resolution needs the name of the person making it")
        kept = tuple(r for r in self.resolutions if r.key != key)
        return replace(self, resolutions=(*kept, Resolution(key, action, by, ts, note)))

    def lines(self) -> list[str]:
        done = {r.key: r for r in self.resolutions}
        out = []
        for d in self.differences:
            r = done.get(d.key)
            mark = f" [{r.action} by {r.by}]" if r else (" [BLOCKING]" if d.blocking else "")
            out.append(d.line + mark)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "venue": self.venue,
            "ts": self.ts,
            "trading_state": self.trading_state,
            "differences": [d.to_dict() for d in self.differences],
            "resolutions": [asdict(r) for r in self.resolutions],
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> VenueReconciliation:
        return VenueReconciliation(
            venue=data["venue"],
            ts=int(data["ts"]),
            differences=tuple(Difference(**d) for d in data["differences"]),
            resolutions=tuple(Resolution(**r) for r in data.get("resolutions", [])),
        )


def build(venue: VenueSnapshot, journal: JournalSnapshot, **kwargs: Any) -> VenueReconciliation:
    """Reconcile and wrap the result with no resolutions yet."""
    return VenueReconciliation(
        venue.venue, venue.taken_ns, tuple(reconcile(venue, journal, **kwargs))
    )


def expected_balances(
    baseline: dict[str, float],
    fills: Iterable[Fill],
    assets_of: Callable[[str], tuple[str, str]],
) -> dict[str, float]:
    """Balances the journal expects: a baseline moved by each fill (base +/- qty, quote -/+
    notional, quote - fee). ``assets_of(symbol)`` gives (base, quote)."""
    out = dict(baseline)
    for f in fills:
        base, quote = assets_of(f.symbol)
        sign = f.side.sign
        out[base] = out.get(base, 0.0) + sign * f.qty
        out[quote] = out.get(quote, 0.0) - sign * f.qty * f.price - f.fee
    return out


# ---------------------------------------------------------------------- ccxt structures


def _f(value: Any, default: float = 0.0) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


# The latest venue time in ms that is still an int64 of ns (year 2262): a stamp beyond it (a
# venue bug, a unit mix-up) is treated as missing, since no journal row can carry it.
_MAX_TS_MS = (2**63 - 1) // NS_PER_MS


def _ts(ms: Any) -> int:
    v = _f(ms, 0.0)
    return int(v) * NS_PER_MS if 0 < v <= _MAX_TS_MS else 0


def venue_order_from_ccxt(o: dict[str, Any]) -> VenueOrder:
    qty = _f(o.get("amount"))
    filled = _f(o.get("filled"))
    price = o.get("price")
    avg = o.get("average")
    return VenueOrder(
        venue_order_id=str(o.get("id") or ""),
        client_id=(str(o["clientOrderId"]) if o.get("clientOrderId") not in (None, "") else None),
        symbol=str(o.get("symbol") or ""),
        side=str(o.get("side") or ""),
        order_type=str(o.get("type") or ""),
        qty=qty,
        filled=filled,
        price=_f(price) if price is not None else None,
        average=_f(avg) if avg is not None else None,
        status=str(o.get("status") or ""),
        ts=_ts(o.get("timestamp") or o.get("lastUpdateTimestamp")),
    )


def venue_trade_from_ccxt(t: dict[str, Any]) -> VenueTrade:
    """A trade, with its fee in the quote currency: as given, or base * price (then also in
    ``fee_base``: it came off the base balance). A fee in a third currency (e.g. BNB) cannot be
    converted here: ``fee`` is then NaN and ``fee_currency`` says which; the broker estimates it
    from the market's fee rate."""
    qty = _f(t.get("amount"))
    price = _f(t.get("price"))
    fee = t.get("fee") if isinstance(t.get("fee"), dict) else {}
    cost = _f(fee.get("cost")) if fee else 0.0
    ccy = fee.get("currency") if fee else None
    symbol = str(t.get("symbol") or "")
    base, _, rest = symbol.partition("/")
    quote = rest.split(":")[0]
    fee_base = 0.0
    if not fee or fee.get("cost") is None or ccy in (None, quote):
        fee_quote = cost
    elif ccy == base:
        fee_quote = cost * price
        fee_base = cost
    else:
        fee_quote = math.nan
    raw_info = t.get("info")
    info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
    cid = t.get("clientOrderId") or info.get("orderLinkId") or info.get("clOrdId")
    return VenueTrade(
        trade_id=str(t.get("id") or ""),
        venue_order_id=str(t["order"]) if t.get("order") not in (None, "") else None,
        client_id=str(cid) if cid not in (None, "") else None,
        symbol=symbol,
        side=str(t.get("side") or ""),
        qty=qty,
        price=price,
        fee=fee_quote,
        fee_currency=str(ccy) if ccy else None,
        liquidity="maker" if t.get("takerOrMaker") == "maker" else "taker",
        ts=_ts(t.get("timestamp")),
        fee_base=fee_base,
    )
