"""Does the embedded default demo keep running? Simulated market time through the real engine.

The default config (config/default.toml: paper, the simulated market, its breakers, limits and
approval modes) runs as fast as possible for ``--minutes`` of simulated time, through the same
``Engine.process`` the live engine runs, the journal included. Approvals are answered the way a
person at the cockpit would: ``none`` never answers (every request expires), ``all`` approves
each one a few seconds after it is asked (through ``Engine.command``, as the cockpit does).

Every ``--every`` simulated minutes a row shows what a person watching the demo would see:
decisions that act, orders, fills, breaker trips so far, approvals pending now (and the most
per strategy+symbol+side), paused strategies and equity. At the end: each breaker trip, with when
and why, and whether the auto strategy (ema_cross) is still trading.

Run: .venv/bin/python bench/demo_soak.py [--minutes 120] [--seeds 42,1,2] [--approver none|all]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.events import (
    ApprovalDecided,
    ApprovalRequested,
    BreakerChanged,
    DecisionMade,
    EngineEvent,
    FillReceived,
    IntentChecked,
)
from engine.runtime import Engine
from engine.types import NS_PER_SECOND
from tests.conftest import fast_config, merge

MINUTE_NS = 60 * NS_PER_SECOND
# Quotes per step: about 8 s of simulated time on the default's 3 symbols at 4 quotes/s each,
# so an approving person answers within a step of the request.
STEP_QUOTES = 100
APPROVE_AFTER_NS = 3 * NS_PER_SECOND
AUTO_STRATEGY = "ema_cross"
APPROVERS = ("none", "all")


@dataclass
class SoakResult:
    """What a soak saw: counts, every breaker trip, and the pending-approval high marks."""

    seed: int
    approver: str
    minutes: float
    counts: Counter[str] = field(default_factory=Counter)
    trips: list[dict[str, Any]] = field(default_factory=list)
    fills_by_strategy: Counter[str] = field(default_factory=Counter)
    first_fill_ns: dict[str, int] = field(default_factory=dict)
    last_fill_ns: dict[str, int] = field(default_factory=dict)
    last_decision_ns: dict[str, int] = field(default_factory=dict)  # holds included
    max_pending: int = 0
    max_pending_per_key: int = 0
    paused_at_end: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    start_ns: int = 0
    end_ns: int = 0
    wall_s: float = 0.0

    def trading_at_end(self, strategy: str, within_ns: int) -> bool:
        """Is ``strategy`` still trading: not paused, it has filled, and it still decided
        something within the last ``within_ns`` (a trend follower may rightly sit in a
        position, or flat on a falling market, for half an hour between two crosses)."""
        last = self.last_decision_ns.get(strategy)
        return (
            strategy not in self.paused_at_end
            and strategy in self.last_fill_ns
            and last is not None
            and last >= self.end_ns - within_ns
        )


def soak_config(data_dir: Path, seed: int, **sections: Any) -> Any:
    """The shipped default, seeded and unpaced: its breakers, limits and approval modes as is
    (``sections`` override parts of it, for trying other settings)."""
    over = merge({"market": {"simulated": {"seed": seed}}}, sections)
    return fast_config(data_dir, auto=False, relaxed=False, **over)


async def soak(
    seed: int,
    minutes: float,
    approver: str,
    data_dir: Path,
    every_min: float = 5.0,
    on_row: Any = None,
    **sections: Any,
) -> SoakResult:
    """Run the default config for ``minutes`` of simulated time; see the module docstring."""
    if approver not in APPROVERS:
        raise ValueError(f"approver must be one of {APPROVERS}, not {approver!r}")
    result = SoakResult(seed, approver, minutes)

    def seen(ev: EngineEvent) -> None:
        kind = type(ev)
        counts = result.counts
        if kind is DecisionMade:
            result.last_decision_ns[ev.decision.strategy_id] = ev.ts
            if ev.acts:
                counts["decisions"] += 1
        elif kind is IntentChecked:
            counts[f"intent_{ev.outcome}"] += 1
        elif kind is FillReceived:
            counts["fills"] += 1
            sid = ev.fill.strategy_id
            result.fills_by_strategy[sid] += 1
            result.first_fill_ns.setdefault(sid, ev.ts)
            result.last_fill_ns[sid] = ev.ts
        elif kind is BreakerChanged:
            if ev.change.get("tripped"):
                counts["trips"] += 1
                result.trips.append(dict(ev.change))
            else:
                counts["rearms"] += 1
        elif kind is ApprovalRequested:
            counts["approvals_requested"] += 1
        elif kind is ApprovalDecided:
            counts[f"approvals_{ev.outcome.get('status')}"] += 1

    engine = Engine(soak_config(data_dir, seed, **sections), data_dir, emit=seen)
    wall = time.perf_counter()
    await engine.start()
    core = engine.core
    assert core is not None
    result.start_ns = start = core.now
    end = start + round(minutes * MINUTE_NS)
    next_row = start + round(every_min * MINUTE_NS)
    feed = engine.source.events()
    try:
        while core.now < end:
            chunk = list(itertools.islice(feed, STEP_QUOTES))
            if not chunk:
                break
            await engine.process(chunk)
            pending = core.approvals.pending()
            result.max_pending = max(result.max_pending, len(pending))
            per_key = Counter(
                (p.intent.strategy_id, p.intent.symbol, str(p.intent.side)) for p in pending
            )
            result.max_pending_per_key = max(
                result.max_pending_per_key, max(per_key.values(), default=0)
            )
            if approver == "all":
                for p in pending:
                    if core.now - p.created_ts >= APPROVE_AFTER_NS:
                        await engine.command(
                            "approve", {"id": p.approval_id, "hash": p.intent_hash}, user="soak"
                        )
            if core.now >= next_row:
                await engine.committed()
                row = _row(result, core, start)
                result.rows.append(row)
                if on_row is not None:
                    on_row(row)
                next_row += round(every_min * MINUTE_NS)
        await engine.committed()
        result.end_ns = core.now
        result.paused_at_end = sorted(
            sid for sid, st in core.safety.state.strategies.items() if st.paused
        )
    finally:
        await engine.stop()
    result.wall_s = time.perf_counter() - wall
    return result


def _row(result: SoakResult, core: Any, start: int) -> dict[str, Any]:
    c = result.counts
    paused = sorted(sid for sid, st in core.safety.state.strategies.items() if st.paused)
    return {
        "minute": (core.now - start) / MINUTE_NS,
        "decisions": c["decisions"],
        "orders": c["intent_submitted"],
        "fills": c["fills"],
        "trips": c["trips"],
        "requested": c["approvals_requested"],
        "pending": len(core.approvals.pending()),
        "max_pending_key": result.max_pending_per_key,
        "paused": ",".join(paused) or "-",
        "state": str(core.safety.trading_state),
        "equity": core.portfolio.equity,
    }


HEADER = (
    f"{'min':>6} {'decisions':>9} {'orders':>6} {'fills':>6} {'trips':>5} {'asked':>6} "
    f"{'pending':>7} {'max/key':>7} {'equity':>11}  state / paused"
)


def _print_row(row: dict[str, Any]) -> None:
    print(
        f"{row['minute']:6.1f} {row['decisions']:9d} {row['orders']:6d} {row['fills']:6d} "
        f"{row['trips']:5d} {row['requested']:6d} {row['pending']:7d} "
        f"{row['max_pending_key']:7d} {row['equity']:11,.2f}  {row['state']} / {row['paused']}",
        flush=True,
    )


def _print_summary(r: SoakResult) -> None:
    sim_min = (r.end_ns - r.start_ns) / MINUTE_NS
    print(
        f"seed {r.seed}, approver {r.approver}: {sim_min:.1f} simulated minutes in "
        f"{r.wall_s:.1f} s wall"
    )
    c = r.counts
    print(
        f"  decisions {c['decisions']}, orders {c['intent_submitted']}, denied "
        f"{c['intent_denied']}, fills {c['fills']} ({dict(r.fills_by_strategy)})"
    )
    print(
        f"  approvals: requested {c['approvals_requested']}, approved {c['approvals_approved']}, "
        f"rejected {c['approvals_rejected']}, expired {c['approvals_expired']}, superseded "
        f"{c['approvals_superseded']}; most pending at once {r.max_pending}, most per "
        f"strategy+symbol+side {r.max_pending_per_key}"
    )
    print(f"  breaker trips: {len(r.trips)}, re-arms {c['rearms']}")
    for t in r.trips:
        at = (t["ts"] - r.start_ns) / NS_PER_SECOND
        print(f"    {at:8.1f} s  {t['breaker']} [{t['scope']}] {t['action']}: {t['reason']}")
    half = (r.end_ns - r.start_ns) // 2
    alive = r.trading_at_end(AUTO_STRATEGY, half)

    def minute(ts: int | None) -> str:
        return f"{(ts - r.start_ns) / MINUTE_NS:.1f}" if ts is not None else "-"

    first, last = r.first_fill_ns.get(AUTO_STRATEGY), r.last_fill_ns.get(AUTO_STRATEGY)
    print(
        f"  {AUTO_STRATEGY} still trading at the end (not paused, deciding in the second "
        f"half): {'yes' if alive else 'NO'} (fills from minute {minute(first)} to "
        f"{minute(last)}); paused at the end: {', '.join(r.paused_at_end) or 'none'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=120.0, help="simulated minutes")
    parser.add_argument("--seeds", default="42", help="comma-separated market seeds")
    parser.add_argument("--approver", choices=(*APPROVERS, "both"), default="both")
    parser.add_argument("--every", type=float, default=10.0, help="minutes between rows")
    args = parser.parse_args()
    approvers = APPROVERS if args.approver == "both" else (args.approver,)
    for seed in (int(s) for s in args.seeds.split(",")):
        for approver in approvers:
            print(f"\n== seed {seed}, approver {approver} ==")
            print(HEADER)
            with tempfile.TemporaryDirectory() as tmp:
                r = asyncio.run(
                    soak(seed, args.minutes, approver, Path(tmp) / "data", args.every, _print_row)
                )
            _print_summary(r)


if __name__ == "__main__":
    main()
