"""Rebuild what the engine had from its journal: cash, fills, orders, marks, safety state.

Every number is checked on the way in (a journal is data from disk, not a promise), and the whole
hash chain is verified before any row is trusted.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.config import MAX_AMOUNT, KillSwitchConfig, RiskLimits
from engine.exits import EXIT_KINDS
from engine.journal import JournalRow, read_rows, require_intact
from engine.portfolio import EQUITY_CURVE_LEN
from engine.safety import SafetyState
from engine.types import Fill, Order, OrderStatus
from engine.vocabulary import (
    KILL_LEVELS,
    KILL_LIMIT_NAMES,
    RESTORED_FROM,
    RISK_LIMIT_NAMES,
    TRACE_KINDS,
    EventKind,
    ExitCode,
    IntentOrigin,
)

# The history a restart brings back (orders, fills, decisions, approvals, safety and audit rows,
# session starts and stops): the last HISTORY_EVENTS such rows, and of those only the ones at
# most HISTORY_NS older than the journal's last row. N is the live buffer's size (RECENT_EVENTS
# in engine.fanout, 5,000), so a restart shows what the engine itself would still have shown
# had it kept running; a display bound, not a trading parameter, so a module constant rather
# than a config value. The 24 h are measured in the journal's own time (the market's: a replay
# runs in its file's years), back from its last row, so a cockpit started after a week away
# still shows the day before the stop.
HISTORY_EVENTS = 5_000
HISTORY_NS = 24 * 3600 * 1_000_000_000
HISTORY_KINDS = frozenset(TRACE_KINDS | {EventKind.SESSION})
_HISTORY_KIND_NAMES = frozenset(kind.value for kind in HISTORY_KINDS)  # plain str: a row's kind


@dataclass
class RestoredState:
    """What the journal says the engine had when it last stopped."""

    session: int = 0
    starting_cash: float | None = None
    fills: list[Fill] = field(default_factory=list)
    # (mid, model bps) a fill was booked against, by (fill id, symbol): its slippage figures.
    fill_slippage: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    open_orders: list[Order] = field(default_factory=list)
    unacknowledged: list[Order] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)  # every order's last state, finished too
    marks: dict[str, float] = field(default_factory=dict)
    peak_equity: float | None = None
    day_start_equity: float | None = None
    marks_ts: int | None = None
    last_ts: int = 0
    # The last moment a session saw the market through: the journal's last row, but not the
    # rows a start stamps at its own clock before any market event (its session row, its
    # safety state, its restart cancels, its stop): a start that failed or was killed there
    # saw nothing, and the history bars since the moment before it are still the downtime.
    seen_ts: int = 0
    _started_ts: int = -1
    safety_state: dict[str, Any] | None = None
    breaker_changes: list[dict[str, Any]] = field(default_factory=list)
    # What the breakers observed, in journal order, so a restart rebuilds their counters (a
    # losing streak, the rolling loss, orders in the last minute, rejects in a row, slippage,
    # unreviewed fills)
    # instead of starting them afresh: ("fill", index into ``fills``, equity after it or None),
    # ("submitted", strategy id, ts), ("rejected", strategy id, reason, ts), ("accepted",
    # strategy id, ts), ("reviewed", strategy id, ts) (an approval, or a person's resume),
    # ("signal", strategy id, ts) (an acting signal), ("paused", strategy id, paused) and
    # ("halted", "", halted) (when signals count), and
    # ("breaker", change dict), a re-arm resetting what it resets live. A fill's entry also
    # says whether it counted as unreviewed.
    breaker_timeline: list[tuple[Any, ...]] = field(default_factory=list)
    approval_outcomes: list[dict[str, Any]] = field(default_factory=list)
    approval_requests: list[dict[str, Any]] = field(default_factory=list)
    last_seq: int = 0
    live_trades: int = 0
    # The orders of live sessions with a fill (what the canary counts: a trade made).
    live_traded: set[str] = field(default_factory=set)
    venue_events: list[dict[str, Any]] = field(default_factory=list)  # "venue" rows, in order
    # The last journaled protective exits of each (strategy, symbol) (None: removed).
    exits: dict[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)
    # The time of each one's row: its watermark and trail took the market up to then (a row
    # trailed at a restart is stamped at the close of the history bar it trailed on).
    exits_ts: dict[tuple[str, str], int] = field(default_factory=dict)
    # The mode of the last session started on this journal (None: no session yet) and its
    # venues' exchange ids by venue name: what the journal's positions and orders belong to.
    mode: str | None = None
    exchanges: dict[str, str] = field(default_factory=dict)
    # Each venue's client_id_prefix in that session (a journal from before it was recorded:
    # none known).
    client_id_prefixes: dict[str, str] = field(default_factory=dict)
    # Order rows that would have moved a finished order (ORDER_TRANSITIONS): not obeyed.
    order_anomalies: list[str] = field(default_factory=list)
    # Submitted intents' (strategy id, ts), all origins, as OrderThrottle.record counted them
    # live: a restart inside a throttle window must not hand a strategy a fresh allowance. Only
    # those within ``submits_ns`` of each newer row are kept (restore_state's throttle_ns).
    submits: deque[tuple[str, int]] = field(default_factory=deque)
    submits_ns: int | None = None
    # The equity curve's samples (ts, equity): one per marks row, as marks_event sampled it
    # live, the newest EQUITY_CURVE_LEN (what the running engine would still hold).
    equity_curve: deque[tuple[int, float]] = field(
        default_factory=lambda: deque(maxlen=EQUITY_CURVE_LEN)
    )
    # The window of rows a cockpit shows after a restart (see HISTORY_EVENTS), oldest first, as
    # the event dicts a client gets, each marked with the session it came from (RESTORED_FROM):
    # shown as history, never applied again (positions and cash come from the fills above).
    history: list[dict[str, Any]] = field(default_factory=list)


class RestoreError(ValueError):
    """A journal row holds what no engine writes (NaN, a negative price, a missing field): the
    engine refuses to start rather than trade on a made-up position. One line naming the row."""

    exit_code = ExitCode.FAILURE


_PROBLEM_MAX = 300  # characters of what a row holds, quoted in the one line that names it


def _one_line(text: str) -> str:
    """What a forged row holds, shown as one bounded line: control characters escaped."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= _PROBLEM_MAX else text[: _PROBLEM_MAX - 3] + "..."


# The trading modes a session row may name (engine.config's engine.mode).
_MODES = ("paper", "testnet", "live")


def _bad_row(row: JournalRow, problem: str) -> RestoreError:
    problem = _one_line(problem)
    return RestoreError(
        f"cannot restore: journal row {row.seq} ({row.kind}): {problem}; the engine will not "
        "start on a journal it cannot trust (`cockpit verify` names it too; a new "
        "--data-dir starts afresh)"
    )


def _number(
    row: JournalRow,
    name: str,
    value: Any,
    *,
    above: float | None = None,
    at_least: float | None = None,
    optional: bool = False,
) -> None:
    """Refuse a journaled number that is not finite, is below what is possible, or is beyond
    any price, quantity or amount an engine handles (MAX_AMOUNT, as the config caps amounts)."""
    if value is None and optional:
        return
    if (
        type(value) in (int, float)
        and math.isfinite(value)
        and -MAX_AMOUNT <= value <= MAX_AMOUNT
        and (above is None or value > above)
        and (at_least is None or value >= at_least)
    ):
        return
    need = f"a number within ±{MAX_AMOUNT:g}"
    if above is not None:
        need += f" > {above:g}"
    if at_least is not None:
        need += f" >= {at_least:g}"
    raise _bad_row(row, f"{name} must be {need}, found {value!r}")


def _typed(row: JournalRow, what: str, value: Any, kind: type) -> None:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _bad_row(row, f"{what} must be a {kind.__name__}, found {value!r:.80}")


def _table(row: JournalRow, what: str, value: Any) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise _bad_row(row, f"{what} must be a table, found {value!r:.80}")
    return value


def _fields(row: JournalRow, what: str, record: Any, kind: type, names: tuple[str, ...]) -> None:
    """Each of ``names`` in ``record`` is of ``kind`` (ids and symbols are text, times int)."""
    for name in names:
        _typed(row, f"{what} {name}", getattr(record, name), kind)


def _check_fill(row: JournalRow, fill: Fill) -> None:
    _fields(
        row, "fill", fill, str, ("fill_id", "client_order_id", "strategy_id", "symbol", "venue")
    )
    _fields(row, "fill", fill, int, ("ts",))
    _number(row, "fill qty", fill.qty, above=0)
    _number(row, "fill price", fill.price, above=0)
    _number(row, "fill fee", fill.fee)
    if abs(fill.fee) > fill.qty * fill.price:
        raise _bad_row(
            row,
            f"fill fee {fill.fee!r} is more than the fill's value ({fill.qty * fill.price:g})",
        )


_APPROVAL_MODES = ("approve", "auto")


def _check_safety_state(row: JournalRow, state: Any) -> None:
    """The latched state as only an engine writes it: a kill level the engine knows (an
    unknown one would read as no kill switch: ACTIVE), pauses, approval modes, breaker halts
    and run-time limits it could have set, every field of its type. Checked here, in the pass
    `cockpit verify` makes too, so the two refuse the same journals, one line naming the row."""
    state = _table(row, "the safety state", state)
    kill = _table(row, "the kill switch", state.get("kill", {}))
    if kill.get("level") not in (None, *KILL_LEVELS):
        level = kill.get("level")
        raise _bad_row(row, f"kill switch level {level!r:.80} is none the engine writes")
    for name in ("by", "reason", "source"):
        _typed(row, f"kill switch {name}", kill.get(name, ""), str)
    _typed(row, "kill switch ts", kill.get("ts", 0), int)
    for sid, st in _table(row, "strategies", state.get("strategies", {})).items():
        st = _table(row, f"strategy {sid}", st)
        _typed(row, f"strategy {sid} paused", st.get("paused", False), bool)
        _typed(row, f"strategy {sid} by", st.get("by", ""), str)
        _typed(row, f"strategy {sid} reason", st.get("reason", ""), str)
        _typed(row, f"strategy {sid} ts", st.get("ts", 0), int)
    for sid, mode in _table(row, "approval modes", state.get("approval_modes", {})).items():
        if mode not in _APPROVAL_MODES:
            raise _bad_row(row, f"strategy {sid!r:.80}: approval mode {mode!r:.40} is unknown")
    for scope, why in _table(row, "breaker halts", state.get("breaker_halts", {})).items():
        _typed(row, f"breaker halt {scope}", why, str)
    for name, value in _table(row, "limit bases", state.get("limit_bases", {})).items():
        _number(row, f"limit base {name}", value, above=0)
    for name, value in _table(row, "limit overrides", state.get("limit_overrides", {})).items():
        model = (
            RiskLimits
            if name in RISK_LIMIT_NAMES
            else KillSwitchConfig
            if name in KILL_LIMIT_NAMES
            else None
        )
        if model is None:
            continue  # a limit this engine does not set (an older one's): a start ignores it
        _number(row, f"limit {name}", value, above=0)
        try:
            model.model_validate({**model().model_dump(), name: value})
        except ValidationError as exc:
            raise _bad_row(row, f"limit {name} = {value!r}: {exc.errors()[0]['msg']}") from None
    _typed(row, "state_by", state.get("state_by", "system"), str)
    _typed(row, "state_reason", state.get("state_reason", ""), str)
    _typed(row, "state_ts", state.get("state_ts", 0), int)
    try:
        SafetyState.from_dict(state)
    except (TypeError, ValueError, AttributeError) as exc:
        raise _bad_row(row, f"the safety state cannot be read ({exc})") from None


def _check_approval(row: JournalRow, what: str, record: Any, texts: tuple[str, ...]) -> None:
    """An approval request or outcome as the gate writes it: a table whose ids are text (the
    gate matches them, and a restart expires or counts them)."""
    record = _table(row, what, record)
    for name in texts:
        if name in record or name in ("id", "approval_id"):
            _typed(row, f"{what} {name}", record.get(name), str)
    if "ts" in record:
        _typed(row, f"{what} ts", record["ts"], int)
    if record.get("pending") is not None:
        _table(row, f"{what} pending", record["pending"])


def _check_order(row: JournalRow, order: Order) -> None:
    _fields(
        row,
        "order",
        order,
        str,
        ("client_order_id", "intent_id", "strategy_id", "symbol", "venue", "reason"),
    )
    _fields(row, "order", order, str, ("venue_order_id", "tif"))
    _fields(row, "order", order, int, ("ts_created", "ts_updated", "expire_ts"))
    _fields(row, "order", order, bool, ("reduce_only", "post_only"))
    _number(row, "order limit_price", order.limit_price, above=0, optional=True)
    _number(row, "order stop_price", order.stop_price, above=0, optional=True)
    _number(row, "order qty", order.qty, at_least=0)
    _number(row, "order filled_qty", order.filled_qty, at_least=0)
    _number(row, "order avg_fill_price", order.avg_fill_price, at_least=0)
    _number(row, "order fees", order.fees)
    _number(row, "order limit_price", order.limit_price, above=0, optional=True)


def _check_intent(row: JournalRow, intent: Any) -> None:
    intent = _table(row, "intent", intent)
    _number(row, "intent qty", intent["qty"], above=0)
    _number(row, "intent limit_price", intent.get("limit_price"), above=0, optional=True)
    _typed(row, "intent origin", intent.get("origin", IntentOrigin.STRATEGY), str)
    _number(row, "intent ttl_ns", intent.get("ttl_ns"), at_least=0, optional=True)
    # What a restart makes of it when no order row followed (a crash in between): an order.
    _check_order(row, _order_from_intent(intent))


def restore_state(
    journal_path: Path,
    history_events: int | None = None,
    history_ns: int | None = None,
    throttle_ns: int | None = None,
) -> RestoredState:
    """Read the journal once and rebuild cash, positions, open orders and last marks, and
    keep the window of history a cockpit shows (``history_events`` rows within ``history_ns``
    of the last row; HISTORY_EVENTS and HISTORY_NS unless given), and the submits within
    ``throttle_ns`` of the last row (the order throttle's longest window; all unless given).

    Every number restore uses is checked on the way in: a row holding NaN, infinity or an
    impossible value (a price <= 0, a negative quantity) raises :class:`RestoreError` naming
    the row, before anything is restored or written.
    """
    require_intact(journal_path)  # the whole chain, before anything is trusted: JournalBroken
    return _replay(journal_path, history_events, history_ns, throttle_ns)


def restore_problem(journal_path: Path) -> str:
    """Why a start would refuse a journal whose chain verifies ("" if it would not): the rows
    :func:`restore_state` reads through, with its checks and no history, so that `cockpit
    verify` and every start give the same answer on a row holding what no engine writes."""
    try:
        _replay(journal_path, 0, None)
    except RestoreError as exc:
        return str(exc)
    return ""


def _replay(
    journal_path: Path,
    history_events: int | None,
    history_ns: int | None,
    throttle_ns: int | None = None,
) -> RestoredState:
    """:func:`restore_state`'s pass over a journal whose chain was verified."""
    state = RestoredState(submits_ns=throttle_ns)
    if not journal_path.exists():
        return state
    orders: dict[str, Order] = {}
    submitted: dict[str, dict[str, Any]] = {}
    session_mode = "paper"
    # The window is found in the same pass: a bounded deque of seq numbers, not of rows.
    # Holding the last N parsed rows until they fell out made the pass some 15-25% slower in
    # bench runs (their memory no longer came back hot from the allocator); the N rows found
    # are read again at the end by one indexed query (bench/restore_history.py: the window
    # costs the pass a few percent at most).
    keep = HISTORY_EVENTS if history_events is None else history_events
    window: deque[int] = deque(maxlen=max(keep, 0))
    remember = window.append
    history_kinds = _HISTORY_KIND_NAMES if keep > 0 else frozenset()
    sessions: list[tuple[int, int]] = []  # (first seq, session) each time the session moves
    for row in read_rows(journal_path):
        try:
            session_mode = _restore_row(state, row, orders, submitted, session_mode)
        except RestoreError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _bad_row(row, f"unreadable ({type(exc).__name__}: {exc})") from None
        if row.kind in history_kinds:
            remember(row.seq)
            if row.kind == "session" and (not sessions or sessions[-1][1] != state.session):
                sessions.append((row.seq, state.session))
    if window:
        since = state.last_ts - (HISTORY_NS if history_ns is None else history_ns)
        state.history = _history(journal_path, window, since, sessions)
    state.orders = list(orders.values())
    state.open_orders = [o for o in orders.values() if not o.status.is_terminal]
    for intent_id, intent in submitted.items():
        if intent_id not in orders:
            # Durable intent, never acknowledged: the crash came between journal and broker.
            state.unacknowledged.append(_order_from_intent(intent))
    return state


def _history(
    journal_path: Path, window: deque[int], since: int, sessions: list[tuple[int, int]]
) -> list[dict[str, Any]]:
    """The window's rows (seq numbers) no older than ``since``, read again by an indexed
    query, as the event dicts a client gets, each marked with the session it came from."""
    starts = [seq for seq, _ in sessions]
    history = []
    for row in read_rows(journal_path, _HISTORY_KIND_NAMES, after_seq=window[0] - 1):
        if row.ts >= since:
            at = bisect.bisect_right(starts, row.seq) - 1
            session = sessions[at][1] if at >= 0 else 0
            history.append(
                {
                    "seq": row.seq,
                    "event": row.kind,
                    "ts": row.ts,
                    **row.payload,
                    RESTORED_FROM: session,
                }
            )
    return history


def _restore_row(
    state: RestoredState,
    row: JournalRow,
    orders: dict[str, Order],
    submitted: dict[str, dict[str, Any]],
    session_mode: str,
) -> str:
    """Apply one journal row to ``state``; returns the session mode in force after it."""
    state.last_ts = max(state.last_ts, row.ts)
    state.last_seq = row.seq
    p = row.payload
    if row.kind == "session" and p.get("state") == "started":
        state._started_ts = row.ts
    elif row.ts > state._started_ts and row.ts > state.seen_ts:
        state.seen_ts = row.ts
    if row.kind == "safety_state":
        _check_safety_state(row, p["state"])
        state.safety_state = p["state"]
    elif row.kind == "breaker":
        state.breaker_changes.append(p["change"])
        state.breaker_timeline.append(("breaker", p["change"]))
    elif row.kind == "approval":
        _check_approval(
            row,
            "approval outcome",
            p["outcome"],
            ("approval_id", "status", "by", "strategy_id", "intent_id", "superseded_by"),
        )
        state.approval_outcomes.append(p["outcome"])
        if p["outcome"].get("status") == "approved":  # a person looked: the count restarts
            state.breaker_timeline.append(("reviewed", str(p["outcome"]["strategy_id"]), row.ts))
    elif row.kind == "decision":
        # An acting signal of a strategy's own (not a protective exit, not a flatten): what
        # the signal_rate breaker counts, while the strategy may act (see "paused", "halted").
        d = p["decision"]
        rule = str(d.get("rule", ""))
        if d.get("action") != "hold" and not (
            rule.endswith("_flatten") or (d.get("reduce_only") and rule in EXIT_KINDS)
        ):
            state.breaker_timeline.append(("signal", str(d["strategy_id"]), row.ts))
    elif row.kind == "safety":
        after = p.get("after") or {}
        if p.get("what") == "strategy":
            state.breaker_timeline.append(("paused", str(p["subject"]), bool(after.get("paused"))))
        elif p.get("what") == "trading_state":
            state.breaker_timeline.append(("halted", "", after.get("state") == "HALTED"))
    elif row.kind == "audit" and p.get("action") == "resume" and p.get("accepted") is True:
        strategy = (p.get("args") or {}).get("strategy")
        if isinstance(strategy, str):
            state.breaker_timeline.append(("reviewed", strategy, row.ts))
    elif row.kind == "approval_requested":
        _check_approval(
            row, "approval request", p["approval"], ("id", "strategy", "intent_id", "hash")
        )
        state.approval_requests.append(p["approval"])
    elif row.kind == "session":
        state.session = max(state.session, int(p["session"]))
        if p.get("state") == "started":
            info = p.get("info", {})
            session_mode = info.get("mode", "paper")
            if session_mode not in _MODES:  # what the journal's positions belong to
                raise _bad_row(row, f"session mode {session_mode!r:.40} is unknown")
            state.mode = session_mode
            exchanges = info.get("exchanges", {})
            if not isinstance(exchanges, dict) or not all(
                isinstance(v, str) for v in exchanges.values()
            ):
                raise _bad_row(row, f"session exchanges {exchanges!r:.80} are not names")
            state.exchanges = dict(exchanges)
            prefixes = info.get("client_id_prefixes", {})
            if not isinstance(prefixes, dict) or not all(
                isinstance(v, str) for v in prefixes.values()
            ):
                raise _bad_row(row, f"session client id prefixes {prefixes!r:.80} are not names")
            state.client_id_prefixes = dict(prefixes)
        if state.starting_cash is None and "starting_cash" in p.get("info", {}):
            cash = p["info"]["starting_cash"]
            _number(row, "starting_cash", cash, above=0)
            state.starting_cash = float(cash)
    elif row.kind == "fill":
        fill = Fill.from_dict(p["fill"])
        _check_fill(row, fill)
        state.fills.append(fill)
        if (
            session_mode == "live"
            and fill.client_order_id not in state.live_traded
            and fill.strategy_id != "operator"  # adopted from the venue: not the engine's
        ):
            state.live_traded.add(fill.client_order_id)
            state.live_trades += 1
        mid, model = p.get("mid"), p.get("model_bps")
        _number(row, "fill mid", mid, above=0, optional=True)
        _number(row, "fill model_bps", model, optional=True)
        if mid is not None and model is not None:
            state.fill_slippage[(fill.fill_id, fill.symbol)] = (float(mid), float(model))
        equity = p.get("equity")
        _number(row, "fill equity", equity, optional=True)
        unreviewed = p.get("unreviewed") is True
        state.breaker_timeline.append(("fill", len(state.fills) - 1, equity, unreviewed))
    elif row.kind == "order":
        order = Order.from_dict(p["order"])
        _check_order(row, order)
        before = orders.get(order.client_order_id)
        if before is not None and before.status.is_terminal and order.status is not before.status:
            # A finished order never becomes live again (ORDER_TRANSITIONS): a later row that
            # says otherwise (written before the table existed) is kept as a note, not obeyed.
            # Its fills are rows of their own, so the position is unaffected.
            state.order_anomalies.append(
                f"journal row {row.seq}: order {order.client_order_id} was {before.status}, "
                f"a later row says {order.status}; kept {before.status}"
            )
            return session_mode
        orders[order.client_order_id] = order
        # As the core tells its breakers (EngineCore.on_broker): a reject, or a first accept.
        if order.status is OrderStatus.REJECTED:
            state.breaker_timeline.append(("rejected", order.strategy_id, order.reason, row.ts))
        elif order.status is OrderStatus.NEW and (
            before is None or before.status is OrderStatus.PENDING_NEW
        ):
            state.breaker_timeline.append(("accepted", order.strategy_id, row.ts))
    elif row.kind == "intent" and p.get("outcome") == "submitted":
        _check_intent(row, p["intent"])
        submitted[p["intent"]["intent_id"]] = p["intent"]
        submits = state.submits
        submits.append((str(p["intent"]["strategy_id"]), row.ts))
        if state.submits_ns is not None:
            while submits[0][1] <= row.ts - state.submits_ns:
                submits.popleft()
        # Counted as on_order_submitted counts live: a strategy's own orders only.
        if p["intent"].get("origin", IntentOrigin.STRATEGY) == IntentOrigin.STRATEGY:
            state.breaker_timeline.append(("submitted", p["intent"]["strategy_id"], row.ts))
    elif row.kind == "venue":
        state.venue_events.append(p)
    elif row.kind == "exits":
        exits = p.get("exits")
        if exits is not None:
            _number(row, "exits best", exits.get("best"), above=0)
            _number(row, "exits trail", exits.get("trail"), above=0, optional=True)
        key = (str(p["strategy_id"]), str(p["symbol"]))
        state.exits[key] = exits
        state.exits_ts[key] = row.ts
    elif row.kind == "marks":
        for symbol, mark in p["marks"].items():
            _number(row, f"mark of {symbol}", mark, above=0)
        _number(row, "peak_equity", p.get("peak_equity"), optional=True)
        _number(row, "day_start_equity", p.get("day_start_equity"), optional=True)
        state.marks = {k: float(v) for k, v in p["marks"].items()}
        state.peak_equity = p.get("peak_equity")
        state.day_start_equity = p.get("day_start_equity")
        state.marks_ts = row.ts
        equity = p.get("equity")
        if equity is not None:
            _number(row, "equity", equity)
            state.equity_curve.append((row.ts, float(equity)))
    return session_mode


def _order_from_intent(intent: dict[str, Any]) -> Order:
    return Order.from_dict(
        {
            "client_order_id": intent["intent_id"],
            "intent_id": intent["intent_id"],
            "strategy_id": intent["strategy_id"],
            "symbol": intent["symbol"],
            "venue": intent["venue"],
            "side": intent["side"],
            "order_type": intent["order_type"],
            "qty": intent["qty"],
            "limit_price": intent.get("limit_price"),
            "status": OrderStatus.PENDING_NEW,
            "ts_created": intent["ts"],
            "ts_updated": intent["ts"],
            "reduce_only": intent.get("reduce_only", False),
            "post_only": bool(intent.get("post_only", False)),
            "tif": str(intent.get("tif") or "gtc"),
            "expire_ts": (intent["ts"] + int(intent["ttl_ns"])) if intent.get("ttl_ns") else 0,
            "stop_price": intent.get("stop_price"),
        }
    )
