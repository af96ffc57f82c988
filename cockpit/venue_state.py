"""Venues as the snapshot reports them, as plain data: halts, reconciliation differences, the
answers that fit each kind, and one-line summaries.

Shared by the Venues pane, the resolve dialog and ``cockpit status``. Plain Python with no
Textual, Rich or engine import: the one-shot commands must start fast, and the panes reach the
engine only through the client interface (``snap["venues"]``, see ``engine.client``). Every key
of a venue's dict may be missing (paper mode gives only ``connected`` and ``detail``; an older
engine gives less than a newer one), so everything here reads with defaults.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

UNKNOWN_ORDER = "unknown_order"
ORDER_STATE = "order_state"
MISSING_ORDER = "missing_order"
UNJOURNALED_FILL = "unjournaled_fill"
BALANCE_MISMATCH = "balance_mismatch"

# What an operator may answer to each kind: a copy of engine.venues.reconcile.RESOLUTIONS
# (importing it would pull the engine's types into the one-shots and the panes). The engine
# checks the answer again, so a difference here only costs a refusal, never a wrong action.
RESOLUTIONS: dict[str, tuple[str, ...]] = {
    UNKNOWN_ORDER: ("adopt", "cancel"),
    ORDER_STATE: ("adopt", "cancel"),
    UNJOURNALED_FILL: ("adopt", "acknowledge"),
    BALANCE_MISMATCH: ("acknowledge",),
}
ACTIONS = ("adopt", "cancel", "acknowledge")

KIND_LABELS = {
    UNKNOWN_ORDER: "unknown order",
    ORDER_STATE: "order state",
    MISSING_ORDER: "missing order",
    UNJOURNALED_FILL: "unjournaled fill",
    BALANCE_MISMATCH: "balance",
}

# What each answer does, per kind (the dialog shows it beside the choice).
ACTION_HELP: dict[tuple[str, str], str] = {
    (UNKNOWN_ORDER, "adopt"): "the engine tracks this order from now on (its fills count)",
    (UNKNOWN_ORDER, "cancel"): "cancel the order at the venue",
    (ORDER_STATE, "adopt"): "the engine tracks the order as open again",
    (ORDER_STATE, "cancel"): "cancel the order at the venue",
    (UNJOURNALED_FILL, "adopt"): "take the fill into the position and the journal",
    (UNJOURNALED_FILL, "acknowledge"): "noted; the position stays as the journal has it",
    (BALANCE_MISMATCH, "acknowledge"): "noted (deposits, withdrawals, fees in other assets)",
}

TRANSPORTS = {"watch": "ws", "poll": "poll"}


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind.replace("_", " "))


def clock(ns: Any) -> str:
    """HH:MM:SS UTC from engine nanoseconds ("-" when unknown)."""
    if not isinstance(ns, int | float) or isinstance(ns, bool) or not ns > 0:
        return "-"
    try:
        return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%H:%M:%S")
    except (OverflowError, ValueError, OSError):  # from a buggy engine: not a time
        return "-"


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, int | float) and not isinstance(x, bool) else str(x)


@dataclass(frozen=True)
class Difference:
    """One reconciliation difference with the operator's answer to it, if any."""

    venue: str
    key: str
    kind: str
    line: str
    blocking: bool
    detail: dict[str, Any] = field(default_factory=dict)
    resolution: dict[str, Any] | None = None

    @property
    def row_key(self) -> str:
        return f"{self.venue}|{self.key}"

    @property
    def actions(self) -> tuple[str, ...]:
        return RESOLUTIONS.get(self.kind, ())

    @property
    def resolved(self) -> bool:
        return self.resolution is not None

    @property
    def needs_answer(self) -> bool:
        """Blocking and not answered: trading on the venue stays HALTED because of it."""
        return self.blocking and not self.resolved

    @property
    def answerable(self) -> bool:
        """An operator may answer it now: unanswered, with answers that fit, and either
        blocking or a balance mismatch (acknowledged to clear it from the list of worries).
        A fill of our own order or a missing order sorts itself out and needs no answer."""
        if self.resolved or not self.actions:
            return False
        return self.blocking or self.kind == BALANCE_MISMATCH

    def status(self) -> str:
        """BLOCKING, "<action> by <who>", or info."""
        r = self.resolution
        if r is not None:
            return f"{r.get('action', '?')} by {r.get('by') or '?'}"
        return "BLOCKING" if self.blocking else "info"

    def what(self) -> str:
        """The difference in a few words (the full sentence is ``line``)."""
        d = self.detail if isinstance(self.detail, dict) else {}
        thing = d.get("order") if isinstance(d.get("order"), dict) else d.get("trade")
        if isinstance(thing, dict) and thing.get("symbol"):
            price = thing.get("price") or thing.get("average")
            text = f"{thing.get('symbol')} {thing.get('side', '')} {_num(thing.get('qty'))}"
            return text + (f" @ {_num(price)}" if price else "")
        if self.kind == BALANCE_MISMATCH and "venue" in d:
            return f"{self.key} {_num(d.get('venue'))} vs {_num(d.get('expected'))} expected"
        if self.kind in (MISSING_ORDER, ORDER_STATE):
            return f"order {d.get('client_order_id') or self.key}"
        return self.line.removeprefix(f"{self.venue}: ")

    def command(self, locate: str = "") -> str:
        """The one-shot command that answers it (the actions separated by |)."""
        actions = "|".join(self.actions) or "acknowledge"
        return (
            f"cockpit resolve {shlex.quote(self.venue)} {shlex.quote(self.key)} {actions} "
            f"--reason TEXT{locate}"
        )


def _list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def reconciliation(info: dict[str, Any]) -> dict[str, Any] | None:
    rec = info.get("reconciliation")
    return rec if isinstance(rec, dict) else None


def differences(venues: dict[str, Any]) -> list[Difference]:
    """Every venue's differences: by venue, unanswered blocking ones first, then in the
    engine's order."""
    out: list[Difference] = []
    for name in sorted(venues):
        info = venues[name] if isinstance(venues[name], dict) else {}
        rec = reconciliation(info)
        if rec is None:
            continue
        answers = {
            str(r.get("key")): r for r in _list(rec.get("resolutions")) if isinstance(r, dict)
        }
        found = []
        for d in _list(rec.get("differences")):
            if not isinstance(d, dict):
                continue
            key = str(d.get("key", ""))
            detail = d.get("detail")
            found.append(
                Difference(
                    venue=str(d.get("venue") or name),
                    key=key,
                    kind=str(d.get("kind", "")),
                    line=str(d.get("line", "")),
                    blocking=bool(d.get("blocking")),
                    detail=detail if isinstance(detail, dict) else {},
                    resolution=answers.get(key),
                )
            )
        found.sort(key=lambda x: not x.needs_answer)  # stable: the engine's order otherwise
        out.extend(found)
    return out


def halted_reason(info: dict[str, Any]) -> str:
    """Why trading on this venue is HALTED, or "" when it may trade."""
    reason = info.get("halted")
    if isinstance(reason, str) and reason:
        return reason
    rec = reconciliation(info)
    if rec is not None and rec.get("trading_state") == "HALTED":
        left = sum(1 for d in differences({"_": info}) if d.needs_answer)
        return f"reconciliation found {left} unresolved difference(s)"
    return ""


def halted_venues(venues: dict[str, Any]) -> list[str]:
    return [n for n in sorted(venues) if isinstance(venues[n], dict) and halted_reason(venues[n])]


Segment = tuple[str, str]  # (text, Rich style name; "" for plain)


def recording_segment(rec: dict[str, Any]) -> Segment:
    """The market recorder's state for one venue ([record]): what it wrote and what it lost."""
    records, dropped = rec.get("records") or 0, rec.get("dropped") or 0
    if rec.get("error"):
        return (f"recording FAILED ({rec['error']}), {dropped:,} dropped", "bold red")
    if dropped:
        return (f"recording {records:,}, {dropped:,} DROPPED", "yellow")
    return (f"recording {records:,}", "")


def venue_segments(name: str, info: dict[str, Any], mode: str | None) -> list[Segment]:
    """What one venue's summary line says, in pieces a caller may wrap: connection and feed,
    clock offset, dead-man, reconciliation, and the last venue-wide cancel on kill. The HALT
    reason is not here: it gets its own line (see ``halted_reason``)."""
    segs: list[Segment] = []
    connected = bool(info.get("connected"))
    segs.append(("connected", "green") if connected else ("DISCONNECTED", "bold red"))
    detail = str(info.get("detail") or "")
    feed = info.get("feed") if isinstance(info.get("feed"), dict) else None
    if feed:
        symbols = feed.get("symbols") if isinstance(feed.get("symbols"), dict) else {}
        transport = str(feed.get("transport") or "")
        text = TRANSPORTS.get(transport, transport)
        if symbols:
            synced = sum(1 for s in symbols.values() if isinstance(s, dict) and s.get("synced"))
            failed = [k for k, s in symbols.items() if isinstance(s, dict) and s.get("failed")]
            text = f"{text} {synced}/{len(symbols)} synced".strip()
            style = "" if synced == len(symbols) else "yellow"
            if failed:
                text += f", {', '.join(sorted(failed))} failed"
                style = "bold red"
            segs.append((text, style))
        elif text:
            segs.append((text, ""))
        if feed.get("resyncs"):
            segs.append((f"{feed['resyncs']} resyncs", "yellow"))
        refused = feed.get("depth_rejects")
        if isinstance(refused, dict) and refused:
            n = sum(v for v in refused.values() if isinstance(v, int) and not isinstance(v, bool))
            why = ", ".join(sorted(str(k) for k in refused))
            segs.append((f"{n:,} L2 book{'s' if n != 1 else ''} refused ({why})", "yellow"))
        recording = feed.get("recording")
        if isinstance(recording, dict):
            segs.append(recording_segment(recording))
    elif detail and detail != halted_reason(info):
        segs.append((detail, ""))
    offset = info.get("clock_offset_ms")
    if isinstance(offset, int | float) and not isinstance(offset, bool):
        style = "bold red" if abs(offset) >= 500 else "yellow" if abs(offset) >= 100 else ""
        segs.append((f"clock {offset:+.0f} ms", style))
    deadman = info.get("deadman")
    if isinstance(deadman, dict):
        if deadman.get("error"):
            segs.append((f"dead-man ERROR: {deadman['error']}", "bold red"))
        elif deadman.get("armed"):
            segs.append((f"dead-man armed {_num(deadman.get('timeout_s'))} s", "green"))
        else:
            segs.append(("dead-man off", "bright_black"))
    if "reconciliation" not in info:
        if mode == "paper":
            segs.append(("no reconciliation (paper)", "bright_black"))
    else:
        rec = reconciliation(info)
        if rec is None:
            segs.append(("not reconciled yet", "yellow"))
        else:
            diffs = differences({name: info})
            left = sum(1 for d in diffs if d.needs_answer)
            text = f"reconciled {clock(rec.get('ts'))}"
            if not diffs:
                segs.append((text + " ✓", "green"))
            elif left:
                segs.append((f"{text}: {left} to resolve", "bold red"))
            else:
                segs.append((f"{text}: {len(diffs)} noted", ""))
    kill = info.get("kill")
    if isinstance(kill, dict):
        when = clock(kill.get("ts"))
        if kill.get("confirmed"):
            segs.append((f"kill: cancel-all ✓ {when}", "green"))
        else:
            why = f": {kill['detail']}" if kill.get("detail") else ""
            segs.append((f"kill: cancel-all NOT confirmed {when}{why}", "bold red"))
    return segs


def last_problem(info: dict[str, Any]) -> str:
    problems = info.get("problems")
    if isinstance(problems, list) and problems:
        return str(problems[-1])
    return ""
