"""Trading states, the latched kill switch, strategy pauses and the loss limits.

Sans-I/O like the core: methods change state and return the events that describe the change.
The runtime journals those events durably before it acknowledges anything, so a kill switch
that was acknowledged is a kill switch that survives kill -9.

The engine's trading state is derived, never set directly, so it cannot disagree with its causes:
HALTED if the kill switch is at `halt`/`flatten` or a breaker halted the engine; REDUCING if the
kill switch is at `entries`; ACTIVE otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from engine.config import KillSwitchConfig
from engine.events import SafetyChanged
from engine.vocabulary import KILL_LEVELS as KILL_LEVELS  # re-exported for the runtime
from engine.vocabulary import KillLevel, TradingState, kill_rank

# Module globals: ~10x cheaper than ``TradingState.ACTIVE`` on 3.11, and read on every order.
_ACTIVE, _REDUCING, _HALTED = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED
_ENTRIES, _FLATTEN = KillLevel.ENTRIES, KillLevel.FLATTEN
_HALTING_LEVELS = frozenset({KillLevel.HALT, KillLevel.FLATTEN})
_NO_LOSS: frozenset[str] = frozenset()
_DAILY_LOSS, _DRAWDOWN = frozenset({"daily_loss"}), frozenset({"drawdown"})
_BOTH_LOSSES = _DAILY_LOSS | _DRAWDOWN


@dataclass(slots=True)
class KillSwitch:
    level: str | None = None
    by: str = ""
    reason: str = ""
    source: str = ""  # command | cli | signal | file | daily_loss | drawdown
    ts: int = 0

    @property
    def engaged(self) -> bool:
        return self.level is not None


@dataclass(slots=True)
class StrategyState:
    paused: bool = False
    by: str = ""
    reason: str = ""
    ts: int = 0


@dataclass
class SafetyState:
    """Everything that must survive a restart; journaled whole with every change."""

    kill: KillSwitch = field(default_factory=KillSwitch)
    strategies: dict[str, StrategyState] = field(default_factory=dict)
    approval_modes: dict[str, str] = field(default_factory=dict)
    # Halts from breakers: scope -> reason. Derived into the trading state.
    breaker_halts: dict[str, str] = field(default_factory=dict)
    # Limits changed at run time (with a reason, in the audit log); re-applied on restart.
    limit_overrides: dict[str, float] = field(default_factory=dict)
    # What the configuration set for each overridden limit when it was changed: a looser
    # override outlives a restart only while the configuration still sets that.
    limit_bases: dict[str, float] = field(default_factory=dict)
    # The loss limits (sources) an operator's release with override accepted while they stood
    # (EngineCore.loss_override, copied here at each commit): a restart on the same UTC day
    # keeps the person's decision instead of engaging the switch again on the first quote.
    loss_override: list[str] = field(default_factory=list)
    loss_override_day: int | None = None  # the UTC day number (ts // 1 day) it was given on
    state_by: str = "system"
    state_reason: str = "start"
    state_ts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> SafetyState:
        return SafetyState(
            kill=KillSwitch(**data.get("kill", {})),
            strategies={k: StrategyState(**v) for k, v in data.get("strategies", {}).items()},
            approval_modes=dict(data.get("approval_modes", {})),
            breaker_halts=dict(data.get("breaker_halts", {})),
            limit_overrides=dict(data.get("limit_overrides", {})),
            limit_bases=dict(data.get("limit_bases", {})),
            loss_override=[str(x) for x in data.get("loss_override", [])],
            loss_override_day=(
                day if isinstance(day := data.get("loss_override_day"), int) else None
            ),
            state_by=data.get("state_by", "system"),
            state_reason=data.get("state_reason", "restored"),
            state_ts=data.get("state_ts", 0),
        )


class SafetyController:
    """Owns the safety state; answers whether an order may go out; describes every change."""

    def __init__(self, kill_cfg: KillSwitchConfig, strategy_ids: list[str]) -> None:
        self.state = SafetyState()
        for sid in strategy_ids:
            self.state.strategies[sid] = StrategyState()
        self.set_kill_cfg(kill_cfg)
        # How many times the engine was stopped (a kill engaged or raised, a breaker's halt)
        # and each strategy paused, in this session: a decision that waited across one (a
        # limit's move waiting for its cancel) is judged again by what it was decided before.
        self.stops = 0
        self.pauses: dict[str, int] = {}

    def stop_mark(self, strategy_id: str) -> tuple[int, int]:
        """Changes whenever the engine is stopped or ``strategy_id`` paused, never back."""
        return self.stops, self.pauses.get(strategy_id, 0)

    def set_kill_cfg(self, kill_cfg: KillSwitchConfig) -> None:
        self.kill_cfg = kill_cfg
        # Equity at or below start-of-day x daily_keep (or peak x dd_keep) has reached a limit.
        # One expression, used by the per-quote check and by the breach report alike, so the
        # two can never disagree by a rounding error; the 1e-12 slack makes "exactly at the
        # limit" engage whatever the float representation of the percentage.
        self.daily_keep = (1.0 - kill_cfg.daily_loss_limit_pct / 100.0) * (1.0 + 1e-12)
        self.dd_keep = (1.0 - kill_cfg.drawdown_limit_pct / 100.0) * (1.0 + 1e-12)

    # ------------------------------------------------------------------ questions

    @property
    def trading_state(self) -> TradingState:
        s = self.state
        level = s.kill.level
        if level is None:  # the usual case first; read several times per order
            return _HALTED if s.breaker_halts else _ACTIVE
        if level in _HALTING_LEVELS or s.breaker_halts:
            return _HALTED
        if level == _ENTRIES:
            return _REDUCING
        return _ACTIVE

    @property
    def kill(self) -> KillSwitch:
        return self.state.kill

    def is_paused(self, strategy_id: str) -> bool:
        st = self.state.strategies.get(strategy_id)
        return st is not None and st.paused

    def gate(
        self,
        strategy_id: str,
        reducing: bool,
        flatten: bool,
        operator: bool = False,
        protective: bool = False,
        closes_own: bool = False,
    ) -> str | None:
        """Why this order must not go out (None: the safety state allows it).

        Flatten orders from the kill switch are an exception to HALTED: they only reduce. So
        are a position's protective exits (``protective``: stop-loss, take-profit, trailing and
        time stops), when they only reduce: a halt must not leave a position unprotected.
        Neither a person's own order (operator flatten), a protective exit nor the strategy's
        own exit (``closes_own``: it only closes the strategy's own position) is stopped by a
        strategy's pause: a pause stops its new entries, its exits keep working.
        """
        state = self.trading_state
        if state is _HALTED:
            if reducing and (protective or (flatten and self.state.kill.level == _FLATTEN)):
                return None
            return f"engine HALTED: {self._state_cause()}"
        if state is _REDUCING and not reducing:
            return f"engine REDUCING (only exposure-reducing orders): {self._state_cause()}"
        st = self.state.strategies.get(strategy_id)
        if st is not None and st.paused and not (flatten or operator or protective or closes_own):
            return f"strategy {strategy_id} paused by {st.by}: {st.reason}"
        return None

    def _state_cause(self) -> str:
        k = self.state.kill
        if k.engaged:
            return f"kill switch ({k.level}) by {k.by}: {k.reason}"
        if self.state.breaker_halts:
            scope, reason = next(iter(self.state.breaker_halts.items()))
            return f"breaker ({scope}): {reason}"
        return self.state.state_reason

    def loss_breach(self, equity: float, day_start: float, peak: float) -> tuple[str, str] | None:
        """The loss limit reached at this equity, if any: (source, human reason)."""
        breaches = self.loss_breaches(equity, day_start, peak)
        return breaches[0] if breaches else None

    def loss_sources(self, equity: float, day_start: float, peak: float) -> frozenset[str]:
        """The sources of :meth:`loss_breaches` alone (no text: asked on every quote while an
        override stands)."""
        daily = day_start > 0 and equity <= day_start * self.daily_keep
        drawdown = peak > 0 and equity <= peak * self.dd_keep
        if daily:
            return _BOTH_LOSSES if drawdown else _DAILY_LOSS
        return _DRAWDOWN if drawdown else _NO_LOSS

    def loss_breaches(self, equity: float, day_start: float, peak: float) -> list[tuple[str, str]]:
        """Every loss limit reached at this equity, daily loss first: (source, human reason)."""
        out: list[tuple[str, str]] = []
        if day_start > 0 and equity <= day_start * self.daily_keep:
            loss = (day_start - equity) / day_start
            out.append(
                (
                    "daily_loss",
                    f"daily loss {loss * 100:.2f}% reached the limit "
                    f"{self.kill_cfg.daily_loss_limit_pct:.2f}% (equity {equity:,.2f} vs "
                    f"start of day {day_start:,.2f})",
                )
            )
        if peak > 0 and equity <= peak * self.dd_keep:
            dd = (peak - equity) / peak
            out.append(
                (
                    "drawdown",
                    f"drawdown {dd * 100:.2f}% from peak {peak:,.2f} reached the limit "
                    f"{self.kill_cfg.drawdown_limit_pct:.2f}%",
                )
            )
        return out

    def auto_kill_due(self) -> bool:
        """A loss limit may engage (or raise) the kill switch: off, or below the auto level."""
        level = self.state.kill.level
        if level is None:
            return True
        return kill_rank(level) < kill_rank(self.kill_cfg.auto_level)

    # ------------------------------------------------------------------ changes

    def _engine_view(self) -> dict[str, Any]:
        k = self.state.kill
        return {
            "trading_state": str(self.trading_state),
            "kill_level": k.level,
            "kill_by": k.by,
            "kill_reason": k.reason,
        }

    def engage(
        self, level: str, *, by: str, reason: str, source: str, ts: int, client: str = ""
    ) -> list[SafetyChanged]:
        """Engage (or raise the level of) the kill switch. Never lowers an engaged level."""
        kill_rank(level)  # raises ValueError naming the levels for anything else
        k = self.state.kill
        if k.engaged and kill_rank(k.level or _ENTRIES) >= kill_rank(level):
            return []
        before = self._engine_view()
        self.state.kill = KillSwitch(level, by, reason, source, ts)
        self.stops += 1
        return self._changed("kill_switch", "engine", before, by, reason, ts, client)

    def release(self, *, by: str, reason: str, ts: int, client: str = "") -> list[SafetyChanged]:
        before = self._engine_view()
        self.state.kill = KillSwitch()
        return self._changed("kill_switch", "engine", before, by, reason, ts, client)

    def set_breaker_halt(self, scope: str, reason: str | None, ts: int) -> list[SafetyChanged]:
        """A breaker halted the engine (reason) or re-armed (None)."""
        before = self._engine_view()
        if reason is None:
            if self.state.breaker_halts.pop(scope, None) is None:
                return []
            why = f"breaker {scope} re-armed"
        else:
            if self.state.breaker_halts.get(scope) == reason:
                return []
            self.state.breaker_halts[scope] = reason
            self.stops += 1
            why = reason
        return self._changed("trading_state", "engine", before, "system", why, ts, "")

    def pause(
        self,
        strategy_id: str,
        *,
        by: str,
        reason: str,
        ts: int,
        client: str = "",
        restate: bool = False,
    ) -> list[SafetyChanged]:
        """``restate``: an already paused strategy is paused again for this reason (recorded:
        the reason is what decides who may resume it)."""
        return self._set_paused(strategy_id, True, by, reason, ts, client, restate)

    def resume(
        self, strategy_id: str, *, by: str, reason: str, ts: int, client: str = ""
    ) -> list[SafetyChanged]:
        return self._set_paused(strategy_id, False, by, reason, ts, client)

    def _set_paused(
        self,
        strategy_id: str,
        paused: bool,
        by: str,
        reason: str,
        ts: int,
        client: str,
        restate: bool = False,
    ) -> list[SafetyChanged]:
        """Pause or resume; no event (and no journal row) when nothing changes."""
        st = self.state.strategies.setdefault(strategy_id, StrategyState())
        if st.paused == paused and not (restate and (st.by, st.reason) != (by, reason)):
            return []
        after = StrategyState(paused, by, reason, ts)
        self.state.strategies[strategy_id] = after
        if paused:
            self.pauses[strategy_id] = self.pauses.get(strategy_id, 0) + 1
        return [
            SafetyChanged(
                ts, "strategy", strategy_id, asdict(st), asdict(after), by, reason, client
            )
        ]

    def _changed(
        self,
        what: str,
        subject: str,
        before: dict[str, Any],
        by: str,
        reason: str,
        ts: int,
        client: str,
    ) -> list[SafetyChanged]:
        after = self._engine_view()
        events = [SafetyChanged(ts, what, subject, before, after, by, reason, client)]
        if before["trading_state"] != after["trading_state"]:
            self.state.state_by, self.state.state_reason, self.state.state_ts = by, reason, ts
            events.append(
                SafetyChanged(
                    ts,
                    "trading_state",
                    "engine",
                    {"state": before["trading_state"]},
                    {"state": after["trading_state"]},
                    by,
                    reason,
                    client,
                )
            )
        return events

    # ------------------------------------------------------------------ views

    def snapshot(self) -> dict[str, Any]:
        s = self.state
        k = s.kill
        return {
            "trading_state": {
                "state": str(self.trading_state),
                "by": s.state_by,
                "reason": self._state_cause() if self.trading_state != "ACTIVE" else "",
                "ts": s.state_ts,
            },
            "kill_switch": {
                "engaged": k.engaged,
                "level": k.level,
                "by": k.by,
                "reason": k.reason,
                "source": k.source,
                "ts": k.ts,
            },
        }
