"""What an alert says: shown engine events turned into a title and a body a person can act on.

A phone's lock screen shows the title, so it names the thing (which strategy, symbol, side and
quantity; which breaker; which kill level); the body says why, by whom, and the command or key
that answers it. Pure functions and one small class with memory (a venue's standing, so a venue
that stays HALTED is announced once); no I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine.vocabulary import AlertKind, EventKind, KillLevel, paused_by_failure

NS = 1_000_000_000
SUMMARY_LINES = 10  # a burst's summary names this many alerts, then says how many more

# Safety alerts: their own lane at every destination (a flood of fills never delays them) and
# never held by a rate limit (they must leave within 5 s; each is rare by nature: a breaker
# trips once until re-armed, the journal fails once, a venue halts once until answered).
URGENT = frozenset(
    {
        AlertKind.KILL_ENGAGED,
        AlertKind.KILL_RELEASED,
        AlertKind.BREAKER_TRIPPED,
        AlertKind.JOURNAL_BLOCKED,
        AlertKind.VENUE_PROBLEM,
        AlertKind.RECORDING_DROPPED,
        AlertKind.STRATEGY_FAILED,
    }
)
# These have a lane of their own at every destination (engine.alerts): a kill alert never
# waits for the breaker alerts a crash tripped just before it, nor for the one being delivered
# (a command hook's may take its whole timeout), nor is it dropped by a lane full of them.
FIRST = frozenset({AlertKind.KILL_ENGAGED, AlertKind.JOURNAL_BLOCKED})
# apprise's notify types (apprise.NotifyType values): how a chat colours or icons it.
NOTIFY_TYPE = {
    AlertKind.APPROVAL_WAITING: "warning",
    AlertKind.BREAKER_TRIPPED: "failure",
    AlertKind.KILL_ENGAGED: "failure",
    AlertKind.KILL_RELEASED: "success",
    AlertKind.VENUE_PROBLEM: "failure",
    AlertKind.JOURNAL_BLOCKED: "failure",
    AlertKind.RECORDING_DROPPED: "warning",
    AlertKind.STRATEGY_FAILED: "failure",
    AlertKind.FILL: "info",
    AlertKind.DAILY_SUMMARY: "info",
    AlertKind.TEST: "info",
}
# "7 more fills in the last 60 s": the plural each kind is counted in.
PLURAL = {
    AlertKind.APPROVAL_WAITING: "approvals waiting",
    AlertKind.FILL: "fills",
    AlertKind.DAILY_SUMMARY: "daily summaries",
    AlertKind.TEST: "test alerts",
}
SINGULAR = {
    AlertKind.APPROVAL_WAITING: "approval waiting",
    AlertKind.FILL: "fill",
    AlertKind.DAILY_SUMMARY: "daily summary",
    AlertKind.TEST: "test alert",
}
# The alerts each event kind can make: the watcher looks only at the events whose alerts some
# route wants (a fill costs nothing to an engine whose routes want no fills).
ALERTS_FROM: dict[str, frozenset[AlertKind]] = {
    EventKind.APPROVAL_REQUESTED: frozenset({AlertKind.APPROVAL_WAITING}),
    EventKind.BREAKER: frozenset({AlertKind.BREAKER_TRIPPED}),
    EventKind.SAFETY: frozenset(
        {AlertKind.KILL_ENGAGED, AlertKind.KILL_RELEASED, AlertKind.STRATEGY_FAILED}
    ),
    EventKind.VENUE: frozenset({AlertKind.VENUE_PROBLEM}),
    EventKind.BLOCKED: frozenset({AlertKind.JOURNAL_BLOCKED}),
    EventKind.RECORDING: frozenset({AlertKind.RECORDING_DROPPED}),
    EventKind.FILL: frozenset({AlertKind.FILL}),
}


def source_events(wanted: frozenset[str]) -> frozenset[str]:
    """The event kinds worth reading for alerts of the ``wanted`` kinds."""
    return frozenset(ev for ev, kinds in ALERTS_FROM.items() if kinds & wanted)


KILL_MEANS = {
    KillLevel.ENTRIES: "no new exposure: only orders that reduce a position go out",
    KillLevel.HALT: "no new orders go out (protective exits still may; cancels do)",
    KillLevel.FLATTEN: "no orders go out; open orders are cancelled and every position closed",
}


@dataclass(frozen=True, slots=True)
class Alert:
    """One message for a person (or a program): ``line`` is its one-line form, which a
    burst's summary lists; ``event`` the shown event it came from (the command hook's JSON)."""

    kind: AlertKind
    title: str
    body: str
    line: str
    ts: int  # the event's time (the engine's clock), ns
    event: dict[str, Any] | None = None
    made_ns: int = field(default_factory=time.time_ns)  # wall clock, when the alert was made

    @property
    def urgent(self) -> bool:
        return self.kind in URGENT

    @property
    def first(self) -> bool:
        return self.kind in FIRST

    @property
    def notify_type(self) -> str:
        return NOTIFY_TYPE.get(self.kind, "info")

    def to_json(self, engine: dict[str, Any]) -> dict[str, Any]:
        """What the command hook reads on stdin."""
        return {
            "kind": str(self.kind),
            "title": self.title,
            "body": self.body,
            "ts": self.ts,
            "time": utc(self.ts),
            "engine": engine,
            "event": self.event,
        }


def utc(ts: int, fmt: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    try:
        return datetime.fromtimestamp(ts / NS, tz=UTC).strftime(fmt)
    except (OverflowError, OSError, ValueError):
        return str(ts)


def num(value: Any) -> str:
    """A quantity or price as a person reads it: no float noise, no exponent for money."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if x != x:
        return "?"
    if abs(x) >= 1000:
        return f"{x:,.2f}"
    return f"{x:.8g}"


def money(value: Any) -> str:
    try:
        return f"{float(value):,.2f}"
    except (TypeError, ValueError):
        return str(value)


class AlertText:
    """Turns shown events into alerts. ``tag`` starts every title (``[live]``, ``[paper]``):
    the first thing a phone shows is which engine speaks."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self._venue_halted: dict[str, str] = {}
        self._venue_keys: dict[str, set[str]] = {}

    def make(
        self,
        kind: AlertKind,
        title: str,
        body: str,
        ts: int,
        event: dict[str, Any] | None = None,
        line: str = "",
    ) -> Alert:
        return Alert(kind, f"{self.tag} {title}", body, line or title, ts, event)

    def describe(self, ev: dict[str, Any]) -> Alert | None:
        """The alert a shown event makes, or None (most events make none)."""
        kind = ev.get("event")
        ts = int(ev.get("ts") or 0)
        if kind == EventKind.FILL:
            return self._fill(ev, ts)
        if kind == EventKind.APPROVAL_REQUESTED:
            return self._approval(ev, ts)
        if kind == EventKind.SAFETY and ev.get("what") == "kill_switch":
            return self._kill(ev, ts)
        if kind == EventKind.SAFETY and ev.get("what") == "strategy":
            return self._strategy_failed(ev, ts)
        if kind == EventKind.BREAKER:
            return self._breaker(ev, ts)
        if kind == EventKind.VENUE:
            return self._venue(ev, ts)
        if kind == EventKind.RECORDING:
            dropped, total = int(ev.get("dropped") or 0), int(ev.get("total") or 0)
            return self.make(
                AlertKind.RECORDING_DROPPED,
                f"Market recording dropped {dropped:,} payloads",
                f"{ev.get('detail', '')}\n{total:,} dropped this run: the recording has holes "
                "there (trading goes on). Check the disk under DATA/record and `cockpit status`.",
                ts,
                ev,
            )
        if kind == EventKind.BLOCKED:
            reason = str(ev.get("reason", ""))
            return self.make(
                AlertKind.JOURNAL_BLOCKED,
                "Trading BLOCKED: the journal cannot write",
                f"{reason}\nNothing is sent from now on. Free the disk or fix the data "
                "directory, then restart the engine: what was recorded is kept.",
                ts,
                ev,
            )
        return None

    def _fill(self, ev: dict[str, Any], ts: int) -> Alert:
        f = ev.get("fill") or {}
        side = str(f.get("side", ""))
        did = {"buy": "bought", "sell": "sold"}.get(side, side)
        what = f"{f.get('strategy_id')} {did} {num(f.get('qty'))} {f.get('symbol')}"
        at = f"@ {num(f.get('price'))}"
        body = (
            f"{what} {at} on {f.get('venue')} ({f.get('liquidity')}), fee {num(f.get('fee'))}\n"
            f"realized PnL {float(ev.get('realized_pnl') or 0.0):+,.2f} · position now "
            f"{num(ev.get('position_qty'))} {f.get('symbol')}\n"
            f"order {f.get('client_order_id')} · fill {f.get('fill_id')}"
        )
        return self.make(AlertKind.FILL, f"Fill: {what} {at}", body, ts, ev, f"{what} {at}")

    def _approval(self, ev: dict[str, Any], ts: int) -> Alert:
        a = ev.get("approval") or {}
        aid, side, symbol = a.get("id"), a.get("side"), a.get("symbol")
        what = f"{a.get('strategy')} {side} {num(a.get('qty'))} {symbol}"
        price = a.get("limit_price") if a.get("limit_price") is not None else a.get("ref_price")
        ttl = (int(a.get("expires_ts") or 0) - int(a.get("created_ts") or 0)) / NS
        hash_arg = f" --hash {a['hash']}" if a.get("hash") else ""
        body = (
            f"{a.get('strategy')} wants to {side} {num(a.get('qty'))} {symbol} at ~{num(price)} "
            f"(~{money(a.get('notional'))}) on {a.get('venue')}: {a.get('reason')}\n"
            f"Approval {aid} expires in {ttl:.0f} s.\n"
            f"Approve: cockpit approve {aid}{hash_arg}  (key a in the cockpit)\n"
            f"Reject:  cockpit reject {aid}  (key r)"
        )
        # The line a burst's summary lists: with its answer, as the alert itself has it.
        line = f"{aid} {what} · cockpit approve {aid}{hash_arg} / cockpit reject {aid}"
        return self.make(
            AlertKind.APPROVAL_WAITING, f"Approval waiting: {what}", body, ts, ev, line
        )

    def _kill(self, ev: dict[str, Any], ts: int) -> Alert | None:
        before, after = ev.get("before") or {}, ev.get("after") or {}
        level, was = after.get("kill_level"), before.get("kill_level")
        who = f"by {ev.get('by')}" + (f" ({ev.get('client')})" if ev.get("client") else "")
        state = after.get("trading_state", "")
        if level and level != was:
            raised = f" (raised from {was})" if was else ""
            body = (
                f"{who}: {ev.get('reason')}{raised}\n"
                f"Trading {state}: {KILL_MEANS.get(level, level)}.\n"
                "It stays engaged, across restarts, until a person releases it: "
                "cockpit release --reason TEXT (key R in the cockpit)."
            )
            return self.make(AlertKind.KILL_ENGAGED, f"KILL SWITCH ENGAGED: {level}", body, ts, ev)
        if was and not level:
            body = f"{who}: {ev.get('reason')}\nIt was at {was}; trading is {state} now."
            return self.make(AlertKind.KILL_RELEASED, "Kill switch released", body, ts, ev)
        return None

    def _strategy_failed(self, ev: dict[str, Any], ts: int) -> Alert | None:
        """A strategy the engine paused because it raised or returned a malformed signal (the
        pauses of breakers have their own alert; an operator's pause has none)."""
        sid, reason = ev.get("subject"), str(ev.get("reason", ""))
        after = ev.get("after") or {}
        failed = paused_by_failure(str(sid), reason)
        if not after.get("paused") or ev.get("by") != "system" or not failed:
            return None
        body = (
            f"{reason}.\nIts resting entries were cancelled; the other strategies, the "
            f"protective exits and the kill switch carry on.\nOnce fixed: cockpit resume {sid} "
            "--reason TEXT (key u in the cockpit)."
        )
        return self.make(AlertKind.STRATEGY_FAILED, f"Strategy failed: {sid} paused", body, ts, ev)

    def _breaker(self, ev: dict[str, Any], ts: int) -> Alert | None:
        ch = ev.get("change") or {}
        if not ch.get("tripped"):
            return None
        name, scope = ch.get("breaker"), ch.get("scope")
        body = (
            f"{ch.get('reason')}\n"
            f"{num(ch.get('value'))} against a limit of {num(ch.get('limit'))}; "
            f"action: {ch.get('action')}.\n"
            f"Re-arm once understood: cockpit rearm {scope} {name} --reason TEXT "
            "(key b in the cockpit)."
        )
        return self.make(
            AlertKind.BREAKER_TRIPPED, f"Breaker tripped: {name} ({scope})", body, ts, ev
        )

    def _venue(self, ev: dict[str, Any], ts: int) -> Alert | None:
        """A venue newly HALTED, a reconciliation difference not seen before, or a kill's
        cancel-all the venue did not confirm (a venue that stays HALTED is said once)."""
        venue, what = str(ev.get("venue", "")), ev.get("what")
        halted = str(ev.get("halted") or "")
        detail = ev.get("detail") or {}
        was = self._venue_halted.get(venue, "")
        self._venue_halted[venue] = halted
        if what == "kill" and not detail.get("confirmed"):
            return self.make(
                AlertKind.VENUE_PROBLEM,
                f"{venue}: kill switch cancel-all NOT confirmed",
                f"{detail.get('detail', 'the venue did not confirm the cancel-all')}\n"
                "Check the venue's open orders by hand.",
                ts,
                ev,
            )
        diffs = (detail.get("reconciliation") or {}).get("differences") or []
        seen = self._venue_keys.setdefault(venue, set())
        new = [d for d in diffs if isinstance(d, dict) and d.get("key") not in seen]
        seen.update(str(d.get("key")) for d in diffs if isinstance(d, dict))
        lines = [str(d.get("line", d.get("key"))) for d in new[:SUMMARY_LINES]]
        more = f"\n…and {len(new) - SUMMARY_LINES} more" if len(new) > SUMMARY_LINES else ""
        answer = (
            f"\nAnswer each: cockpit resolve {venue} KEY ACTION --reason TEXT "
            "(key v in the cockpit)."
        )
        if halted and not was:
            body = halted + ("\n" + "\n".join(lines) if lines else "") + more + answer
            return self.make(AlertKind.VENUE_PROBLEM, f"Venue {venue} HALTED", body, ts, ev)
        if new:
            return self.make(
                AlertKind.VENUE_PROBLEM,
                f"{venue}: {len(new)} reconciliation difference(s)",
                "\n".join(lines) + more + (answer if halted else ""),
                ts,
                ev,
            )
        return None

    def burst(self, kind: AlertKind, lines: list[str], count: int, span_s: float) -> Alert:
        """One message for ``count`` alerts of a kind a route's rate limit held back."""
        noun = PLURAL.get(kind, str(kind)) if count != 1 else SINGULAR.get(kind, str(kind))
        title = f"{count} more {noun} in the last {max(1, round(span_s))} s"
        shown = "\n".join(lines[:SUMMARY_LINES])
        more = f"\n…and {count - SUMMARY_LINES} more" if count > SUMMARY_LINES else ""
        if kind == AlertKind.APPROVAL_WAITING:
            more += "\nAll of them: cockpit approvals (keys a / r in the cockpit)."
        body = f"{shown}{more}\n(held back by this route's rate limit; the journal has them all)"
        return self.make(kind, title, body, time.time_ns(), None, title)

    def daily(self, summary: dict[str, Any], now_ns: int, alerts_line: str) -> Alert:
        """The day in a few lines (``Engine.summary()``)."""
        s = summary
        positions = s.get("positions") or {}
        held = ", ".join(f"{num(q)} {sym}" for sym, q in positions.items()) or "none"
        kill = s.get("kill_switch")
        body = (
            f"equity {money(s.get('equity'))} · PnL since 00:00 UTC {money(s.get('daily_pnl'))} · "
            f"realized {money(s.get('realized_pnl'))} · "
            f"unrealized {money(s.get('unrealized_pnl'))} · fees {money(s.get('fees'))}\n"
            f"drawdown {s.get('drawdown_pct')} % · open orders {s.get('open_orders')} · "
            f"approvals waiting {s.get('pending_approvals')}\n"
            f"positions: {held}\n"
            f"trading {s.get('trading_state')} · kill switch {kill or 'off'}"
            + (f" · BLOCKED: {s['blocked']}" if s.get("blocked") else "")
            + f"\n{alerts_line}"
        )
        title = f"Daily summary {utc(now_ns, '%Y-%m-%d')}: equity {money(s.get('equity'))}"
        return self.make(AlertKind.DAILY_SUMMARY, title, body, now_ns)

    def test(self, route: str, now_ns: int) -> Alert:
        return self.make(
            AlertKind.TEST,
            "Test alert from the cockpit",
            f"Alerts of route {route} reach you. Sent by `cockpit alerts test` at {utc(now_ns)}.",
            now_ns,
        )
