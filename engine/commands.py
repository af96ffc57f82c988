"""Operator commands: validated arguments, applied to the core, described by events.

The same models validate commands from the embedded cockpit, the control socket and the CLI, so
a bad argument gets the same one-line answer everywhere. Applying a command is sans-I/O: it
returns the events and effects; the runtime journals them durably before it replies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, cast

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    model_validator,
)

from engine.breakers import GLOBAL_BREAKERS, STALE_FEED, STRATEGY_BREAKERS
from engine.config import KillSwitchConfig, RiskLimits, Strict, describe_error
from engine.core import CancelOrder, EngineCore
from engine.events import ApprovalDecided, IntentChecked, SafetyChanged
from engine.vocabulary import (
    KILL_LEVELS,
    KILL_LIMIT_NAMES,
    LIMIT_NAMES,
    RELEASE_PHRASE,
    RISK_LIMIT_NAMES,
    UNPRINTABLE,
    IntentOrigin,
    IntentOutcome,
    KillLevelName,
    TradingState,
    printable,
)

# Printable characters terminals draw as blank (the braille blank, the Hangul fillers), and the
# marks of Unicode's Default_Ignorable_Code_Point that Python counts as printable (nonspacing
# marks drawn as nothing: the combining grapheme joiner, the Khmer inherent vowels, the
# Mongolian and other variation selectors).
_BLANK_LOOKING = frozenset(
    "\u2800\u115f\u1160\u3164\uffa0\u034f\u17b4\u17b5\u180b\u180c\u180d\u180f"
    + "".join(map(chr, range(0xFE00, 0xFE10)))
    + "".join(map(chr, range(0xE0100, 0xE01F0)))
)


def shows_something(text: str) -> bool:
    """Does the text show anything at all: a reason of zero-width spaces, joiners, a BOM,
    soft hyphens or variation selectors reads as blank in every view of the audit log, as one
    of spaces does."""
    return any(c.isprintable() and not c.isspace() and c not in _BLANK_LOOKING for c in text)


def _one_line(text: str) -> str:
    if not shows_something(text):
        raise ValueError("a reason is required: say why (not only spaces)")
    bad = UNPRINTABLE.search(text)
    if bad:
        shown = bad.group().encode("unicode_escape").decode()
        raise ValueError(f"a reason is one line of text: remove the control character {shown}")
    return text


MAX_REASON = 500
MAX_NAME = 200
Reason = Annotated[str, Field(min_length=1, max_length=MAX_REASON), AfterValidator(_one_line)]
# A strategy, approval id, symbol, limit, breaker or venue a command names: every real one is
# short. An unbounded one (60 KB of junk) was written whole to the audit log and echoed back.
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]


def mended_text(text: str) -> str:
    """``text`` with what is no Unicode character (a lone surrogate: a byte that was not UTF-8
    on the command line, a ``\\ud800`` escape in JSON) written as its escape, so the journal
    can hold it (it holds UTF-8 only, and refused such a row with a TypeError)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


class _Args(Strict):
    """A command's arguments, as strict as a config file's sections (a script's
    {"value": true} was set_limit's 1.0)."""

    # Text fields made valid rather than refused (a kill's reason: never refused for wording).
    _mended: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _text_is_unicode(cls, data: Any) -> Any:
        """A string holding a lone surrogate (a byte that was not UTF-8 in a pasted argument)
        is refused by name: it reached the journal, which cannot store it, and the command
        failed there as "engine error: TypeError" after it had changed the state (a kill
        engaged in memory and lost at the next start)."""
        if isinstance(data, dict):
            for key, value in data.items():
                if (
                    isinstance(value, str)
                    and key not in cls._mended
                    and mended_text(value) != value
                ):
                    shown = mended_text(value if len(value) <= 60 else value[:57] + "...")
                    raise ValueError(
                        f"{mended_text(str(key))}: '{shown}' is not valid text (it holds a byte "
                        "that is not UTF-8, shown escaped); type it again"
                    )
        return data


def _kill_reason(value: object) -> str:
    """A kill is never refused for the way its reason is written (an emergency stop must not
    wait on the paperwork): control characters and line breaks become spaces, a reason past
    the limit is cut, and a blank or missing one reads "no reason given" (the audit log still
    names who engaged it and from where)."""
    text = value if isinstance(value, str) else "" if value is None else str(value)
    text = " ".join(UNPRINTABLE.sub(" ", mended_text(text)).split())
    if len(text) > MAX_REASON:
        text = text[: MAX_REASON - 1] + "\u2026"
    return text if shows_something(text) else "no reason given"


KillReason = Annotated[str, BeforeValidator(_kill_reason)]


class KillArgs(_Args):
    """Never refused for its form (an emergency stop must not wait on the paperwork, as the
    KILL file): a level in any case or with spaces is that level; a missing or null one, or a
    word that is no level, engages ``halt`` and the reply says so; other keys are ignored and
    named in the reply."""

    level: KillLevelName = "halt"
    reason: KillReason = "no reason given"
    note: str = ""  # what was made of the form, for the reply ("" when taken as sent)

    @model_validator(mode="before")
    @classmethod
    def _text_is_unicode(cls, data: Any) -> Any:
        return data  # a kill mends its text instead of refusing it (_as_a_kill, _kill_reason)

    @model_validator(mode="before")
    @classmethod
    def _as_a_kill(cls, data: Any) -> dict[str, Any]:
        data = data if isinstance(data, dict) else {}
        notes: list[str] = []
        level = data.get("level")
        word = level.strip().lower() if isinstance(level, str) else None
        if level is not None and word not in KILL_LEVELS:
            shown = printable(mended_text(str(level)))
            shown = shown if len(shown) <= 40 else shown[:39] + "\u2026"
            notes.append(f"level {shown!r} is not entries, halt or flatten: halt engaged")
        extra = sorted(str(k) for k in data if k not in ("level", "reason"))
        if extra:
            shown_keys = (printable(mended_text(k))[:40] for k in extra[:5])
            notes.append(f"ignored: {', '.join(shown_keys)}")
        out = {"level": word if word in KILL_LEVELS else "halt", "note": "; ".join(notes)}
        if "reason" in data:
            out["reason"] = data["reason"]
        return out


class KillSeen(_Args):
    """The engagement a person read before releasing it (the cockpit's release dialog)."""

    level: str | None = None
    by: str = ""
    reason: str = ""
    ts: int = 0


class ReleaseArgs(_Args):
    reason: Reason
    confirm: str  # must be the phrase RELEASE, typed by a person (or given as a flag by a script)
    override: bool = False  # release although the condition that engaged it still holds
    # What the person saw engaged: refused when the switch changed since (escalated, engaged
    # again by someone else). None (a script, `cockpit release`): whatever is engaged.
    seen: KillSeen | None = None


class PauseArgs(_Args):
    strategy: Name
    reason: Reason = "manual"


class ResumeArgs(_Args):
    strategy: Name
    reason: Reason = "manual"


class ApproveArgs(_Args):
    id: Name
    # The intent hash the person saw; a mismatch refuses the approval.
    hash: Annotated[str, Field(max_length=MAX_NAME)] | None = None


class RejectArgs(_Args):
    id: Name
    reason: Reason = "rejected by operator"


class FlattenArgs(_Args):
    symbol: Name | None = None  # None: every position
    reason: Reason


class SetLimitArgs(_Args):
    name: Name
    value: float
    reason: Reason


class SetApprovalModeArgs(_Args):
    strategy: Name
    mode: Literal["approve", "auto"]
    reason: Reason


class RearmArgs(_Args):
    breaker: Name | None = None  # None: every tripped breaker of the scope
    scope: Name  # a strategy id, "global" or "symbol:<SYMBOL>" (as the breakers list names it)
    reason: Reason


class ResolveArgs(_Args):
    """A person's answer to one reconciliation difference (see engine.venues.reconcile)."""

    venue: Name
    key: Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
    action: Literal["adopt", "cancel", "acknowledge"]
    reason: Reason


COMMANDS: dict[str, type[_Args]] = {
    "kill": KillArgs,
    "release": ReleaseArgs,
    "pause": PauseArgs,
    "resume": ResumeArgs,
    "approve": ApproveArgs,
    "reject": RejectArgs,
    "flatten": FlattenArgs,
    "set_limit": SetLimitArgs,
    "set_approval_mode": SetApprovalModeArgs,
    "rearm": RearmArgs,
    "resolve": ResolveArgs,
}
# Commands that need I/O (the venue), so the runtime applies them rather than ``execute``.
RUNTIME_COMMANDS = frozenset({"resolve"})


class CommandError(ValueError):
    """The command cannot be parsed; the message is one line naming what is wrong."""


def parse_command(name: str, args: dict[str, Any]) -> _Args:
    model = COMMANDS.get(name)
    if model is None:
        raise CommandError(f"unknown command {name!r}; known: {', '.join(sorted(COMMANDS))}")
    if not isinstance(args, dict) and name != "kill":  # (a kill is never refused for it)
        raise CommandError(f"{name}: arguments must be an object")
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        raise CommandError(
            f"{name}: " + "; ".join(describe_error(e) for e in exc.errors())
        ) from None


@dataclass
class CommandResult:
    ok: bool
    message: str
    events: list[Any] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


def execute(
    core: EngineCore, name: str, args: _Args, *, by: str, client: str, condition: str | None = None
) -> CommandResult:
    """Apply one operator command. ``condition`` is why a release must wait (None: clear)."""
    handler = _HANDLERS[name]
    return handler(core, args, by, client, condition)


def _state(core: EngineCore) -> dict[str, Any]:
    return core.safety.snapshot()


def _kill(core: EngineCore, a: KillArgs, by: str, client: str, _c: str | None) -> CommandResult:
    before = _state(core)
    events = core.kill(a.level, by=by, reason=a.reason, source="command", client=client)
    if not events:
        k = core.safety.kill
        return CommandResult(
            True,
            f"kill switch already engaged at {k.level} (by {k.by}: {k.reason})",
            before=before,
            after=before,
        )
    note = f" ({a.note})" if a.note else ""
    return CommandResult(
        True, f"kill switch engaged: {a.level}{note}", events, before, _state(core)
    )


def _release(
    core: EngineCore, a: ReleaseArgs, by: str, client: str, condition: str | None
) -> CommandResult:
    before = _state(core)
    k = core.safety.kill
    if not k.engaged:
        return CommandResult(False, "kill switch is not engaged", before=before, after=before)
    seen = a.seen
    if seen is not None and (seen.level, seen.by, seen.reason, seen.ts) != (
        k.level,
        k.by,
        k.reason,
        k.ts,
    ):
        return CommandResult(
            False,
            f"refused: the kill switch changed since you looked: now {k.level} by {k.by}: "
            f"{k.reason}; read it again before releasing (cockpit: Escape, then R)",
            before=before,
            after=before,
        )
    if a.confirm != RELEASE_PHRASE:
        return CommandResult(
            False,
            f"release needs the typed confirmation {RELEASE_PHRASE!r}",
            before=before,
            after=before,
        )
    if condition and not a.override:
        return CommandResult(
            False,
            f"refused: the condition still holds ({condition}); release with override and a "
            "reason (cockpit: R, tick override; or cockpit release --override)",
            before=before,
            after=before,
        )
    reason = a.reason + (f" (override: {condition})" if condition and a.override else "")
    events = core.safety.release(by=by, reason=reason, ts=core.clock_now, client=client)
    if condition and a.override:
        # Only the limits standing now: one reached later still engages the switch.
        core.loss_override = frozenset(source for source, _ in core.loss_breaches())
    message = "kill switch released"
    safety = core.safety
    if core.blocked_reason:
        # Blocked for the rest of the session (a failed venue poll, a stopped loop, a journal
        # that cannot write): nothing is sent whatever the switch says.
        message += f"; the engine stays BLOCKED: {core.blocked_reason}"
    elif safety.trading_state is not TradingState.ACTIVE:
        # Released, but something else still holds the engine (a breaker's halt): the reply
        # says so, or a person reads "released" as "trading again".
        cause = safety.snapshot()["trading_state"]["reason"]
        message += f"; the engine stays {safety.trading_state}: {cause}"
    return CommandResult(True, message, events, before, _state(core))


def _pause(core: EngineCore, a: PauseArgs, by: str, client: str, _c: str | None) -> CommandResult:
    if a.strategy not in core.safety.state.strategies:
        return _unknown_strategy(core, a.strategy)
    events = core.pause_strategy(
        a.strategy, by=by, reason=a.reason, ts=core.clock_now, client=client
    )
    if not events:
        return CommandResult(True, f"{a.strategy} was already paused")
    changed = cast(SafetyChanged, events[0])  # pause_strategy puts the state change first
    cancels = sum(1 for e in events if isinstance(e, CancelOrder))
    rejected = sum(1 for e in events if isinstance(e, ApprovalDecided))
    message = (
        f"{a.strategy} paused"
        + (f"; {cancels} resting order(s) that could add exposure cancelled" if cancels else "")
        + (
            f"; {rejected} request(s) waiting for approval that could add exposure rejected"
            if rejected
            else ""
        )
    )
    return CommandResult(True, message, events, changed.before, changed.after)


def _resume(core: EngineCore, a: ResumeArgs, by: str, client: str, _c: str | None) -> CommandResult:
    if a.strategy not in core.safety.state.strategies:
        return _unknown_strategy(core, a.strategy)
    tripped = [
        b
        for b in core.breakers.status()
        if b["tripped"] and b["scope"] == a.strategy and b["name"] != "unreviewed_fills"
    ]
    if tripped:
        names = ", ".join(b["name"] for b in tripped)
        return CommandResult(
            False,
            f"{a.strategy} has tripped breakers ({names}); re-arm them first (cockpit: b, or "
            f"cockpit rearm {a.strategy} --reason TEXT)",
        )
    events: list[Any] = list(
        core.apply_breakers(core.breakers.reviewed(a.strategy, by, core.clock_now))
    )
    resumed = core.safety.resume(
        a.strategy, by=by, reason=a.reason, ts=core.clock_now, client=client
    )
    if resumed:
        core.strategy_resumed(a.strategy)  # one paused because it raised is called again
    events += resumed
    if not events:
        return CommandResult(True, f"{a.strategy} was not paused")
    if not resumed:  # only the fills were marked reviewed
        return CommandResult(True, f"{a.strategy} resumed", events)
    return CommandResult(True, f"{a.strategy} resumed", events, resumed[0].before, resumed[0].after)


def _approve(
    core: EngineCore, a: ApproveArgs, by: str, client: str, _c: str | None
) -> CommandResult:
    events = core.approve(a.id, by=by, expected_hash=a.hash)
    outcome = cast(ApprovalDecided, events[0]).outcome  # the core answers this one first
    ok = outcome["status"] == "approved" and not any(
        isinstance(e, ApprovalDecided) and e.outcome.get("status") == "rejected" for e in events[1:]
    )
    final = next((e.outcome for e in reversed(events) if isinstance(e, ApprovalDecided)), outcome)
    msg = f"{a.id}: {final['status']}" + (f" ({final['reason']})" if final.get("reason") else "")
    return CommandResult(ok, msg, events, data={"outcome": final})


def _reject(core: EngineCore, a: RejectArgs, by: str, client: str, _c: str | None) -> CommandResult:
    events = core.reject(a.id, by=by, reason=a.reason)
    outcome = cast(ApprovalDecided, events[0]).outcome  # the core answers this one first
    ok = outcome["status"] == "rejected"
    msg = f"{a.id}: {outcome['status']}" + (
        f" ({outcome['reason']})" if outcome.get("reason") else ""
    )
    return CommandResult(ok, msg, events, data={"outcome": outcome})


def _flatten(
    core: EngineCore, a: FlattenArgs, by: str, client: str, _c: str | None
) -> CommandResult:
    if a.symbol is not None and a.symbol not in core.instruments:
        return CommandResult(
            False, f"unknown symbol {a.symbol!r}; known: {', '.join(core.instruments)}"
        )
    events = core.flatten(a.symbol, by=by, reason=a.reason, origin=IntentOrigin.OPERATOR)
    if not events:
        return CommandResult(True, f"nothing to flatten{' on ' + a.symbol if a.symbol else ''}")
    intents = [e for e in events if isinstance(e, IntentChecked)]
    n = sum(1 for e in intents if e.outcome == IntentOutcome.SUBMITTED)
    denied = [e for e in intents if e.outcome == IntentOutcome.DENIED]
    dust = [e for e in intents if e.outcome == IntentOutcome.DUST]
    msg = f"flatten: {n} order(s) submitted"
    if denied:
        msg += f", {len(denied)} denied ({', '.join(denied[0].denied_codes)})"
    if dust:  # below the venue minimum: kept and marked as dust, not a denial to retry
        msg += "; " + "; ".join(e.detail for e in dust)
    return CommandResult(not denied, msg, events)


# The limits on what the book may hold: lowering one re-judges the resting orders.
EXPOSURE_LIMIT_NAMES = frozenset(
    {
        "max_order_notional",
        "max_position_fraction",
        "max_open_positions",
        "max_gross_exposure_fraction",
    }
)


def _set_limit(
    core: EngineCore, a: SetLimitArgs, by: str, client: str, _c: str | None
) -> CommandResult:
    if a.name in RISK_LIMIT_NAMES:
        old = getattr(core.limits, a.name)
        try:
            new_limits = RiskLimits.model_validate({**core.limits.model_dump(), a.name: a.value})
        except ValidationError as exc:
            return CommandResult(False, describe_error(exc.errors()[0]))
        core.limits = new_limits
        value: float = getattr(new_limits, a.name)  # as validated: a count is an int
    elif a.name in KILL_LIMIT_NAMES:
        kcfg = core.safety.kill_cfg
        old = getattr(kcfg, a.name)
        try:
            new_kill = KillSwitchConfig.model_validate({**kcfg.model_dump(), a.name: a.value})
        except ValidationError as exc:
            return CommandResult(False, describe_error(exc.errors()[0]))
        core.set_kill_limits(new_kill)
        value = a.value
    else:
        known = ", ".join(LIMIT_NAMES)
        return CommandResult(False, f"unknown limit {a.name!r}; known: {known}")
    core.safety.state.limit_overrides[a.name] = value
    base = core.configured_limit(a.name)  # a looser value outlives a restart only beside it
    if base is not None:
        core.safety.state.limit_bases[a.name] = base
    ev = SafetyChanged(
        core.clock_now, "limit", a.name, {"value": old}, {"value": value}, by, a.reason, client
    )
    message = f"{a.name}: {old} -> {value}"
    # A lower limit holds for what already rests too: a resting limit it would deny now is
    # cancelled (it could fill the book beyond the new limit), on the record with the reason.
    cancels = (
        core.cancel_beyond_limits(f"{a.name} lowered to {value:g} by {by}")
        if a.name in EXPOSURE_LIMIT_NAMES and value < old
        else []
    )
    if cancels:
        message += f"; {len(cancels)} resting order(s) beyond it cancelled"
    # A loss limit lowered under the loss already taken engages the automatic kill now, not at
    # the next quote (on a quiet feed the engine stayed ACTIVE beyond its own limit).
    killed = core.check_loss_limits() if a.name in KILL_LIMIT_NAMES else []
    kill = core.safety.kill
    if killed and kill.engaged:
        message += f"; kill switch engaged at {kill.level}: {kill.reason}"
    return CommandResult(
        True,
        message,
        [ev, *killed, *cancels],
        {"value": old},
        {"value": value},
        {"limit": a.name, "before": old, "after": value},
    )


def _set_mode(
    core: EngineCore, a: SetApprovalModeArgs, by: str, client: str, _c: str | None
) -> CommandResult:
    if a.strategy not in core.safety.state.strategies:
        return _unknown_strategy(core, a.strategy)
    old = core.approvals.mode(a.strategy)
    ok, message = core.approvals.set_mode(a.strategy, a.mode, by)
    if not ok:
        return CommandResult(False, message)
    if old == a.mode:
        return CommandResult(True, message)
    core.safety.state.approval_modes[a.strategy] = a.mode
    ev = SafetyChanged(
        core.clock_now,
        "approval_mode",
        a.strategy,
        {"mode": old},
        {"mode": a.mode},
        by,
        a.reason,
        client,
    )
    return CommandResult(
        True,
        f"{a.strategy}: approval {old} -> {a.mode}",
        [ev],
        {"mode": old},
        {"mode": a.mode},
        {"strategy": a.strategy, "before": old, "after": a.mode},
    )


_BREAKER_NAMES = frozenset((*STRATEGY_BREAKERS, *GLOBAL_BREAKERS, STALE_FEED))


def _rearm(core: EngineCore, a: RearmArgs, by: str, client: str, _c: str | None) -> CommandResult:
    tripped = [(b["name"], b["scope"]) for b in core.breakers.status() if b["tripped"]]
    wanted = [(n, s) for n, s in tripped if s == a.scope and a.breaker in (None, n)]
    if not wanted:
        known = ", ".join(f"{n} ({s})" for n, s in tripped)
        if a.breaker and a.breaker not in _BREAKER_NAMES:
            return CommandResult(
                False,
                f"no breaker is named {printable(a.breaker)!r}; the breakers are "
                f"{', '.join(sorted(_BREAKER_NAMES))} (tripped now: {known or 'none'})",
            )
        what = (
            f"breaker {a.breaker} ({a.scope}) is not"
            if a.breaker
            else f"no breaker of {a.scope} is"
        )
        return CommandResult(False, f"{what} tripped; tripped now: {known or 'none'}")
    holding = [(n, s, why) for n, s in wanted if (why := core.breakers.still_holds(n, s))]
    if holding and len(holding) == len(wanted):
        return CommandResult(False, "; ".join(f"{n} ({s}): {why}" for n, s, why in holding))
    changes = [c for n, s in wanted for c in core.breakers.rearm(n, s, by, core.clock_now)]
    if not changes:  # re-armed meanwhile (a cooldown ran out on this tick)
        return CommandResult(False, f"{', '.join(f'{n} ({s})' for n, s in wanted)}: not tripped")
    names = [f"{c.breaker} ({c.scope})" for c in changes]
    before = {name: "tripped" for name in names}
    after = {name: "armed" for name in names}
    events = core.apply_breakers(changes)
    message = f"re-armed: {', '.join(names)}"
    if holding:
        # Every tripped one of the scope was asked for: those that still hold are named, and
        # the answer is not "done" (the engine a clock drift halts stays halted).
        still = "; ".join(f"{n} ({s}): {why}" for n, s, why in holding)
        return CommandResult(False, f"{message}; still tripped: {still}", events, before, after)
    return CommandResult(True, message, events, before, after)


def _unknown_strategy(core: EngineCore, sid: str) -> CommandResult:
    known = ", ".join(sorted(core.safety.state.strategies))
    return CommandResult(False, f"unknown strategy {sid!r}; known: {known}")


# Each handler takes the args model COMMANDS names for the same command (``parse_command``
# built it), so the table can only say "some _Args subclass": Any, checked by that pairing.
_Handler = Callable[[EngineCore, Any, str, str, str | None], CommandResult]
_HANDLERS: dict[str, _Handler] = {
    "kill": _kill,
    "release": _release,
    "pause": _pause,
    "resume": _resume,
    "approve": _approve,
    "reject": _reject,
    "flatten": _flatten,
    "set_limit": _set_limit,
    "set_approval_mode": _set_mode,
    "rearm": _rearm,
}
