"""The embedded default keeps running: simulated half hours of the demo through the real engine.

Before: on config/default.toml ema_cross (the one auto strategy) paused itself on its loss
breaker 37-70 s after the start, and donchian_breakout stacked pending buys. Here the shipped
default runs unpaced (bench/demo_soak.py, the same code, prints the figures) for at least 30
simulated minutes on a few market seeds, with a person who never answers approvals (each one
expires) and with one who approves everything.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from bench.demo_soak import AUTO_STRATEGY, MINUTE_NS, SoakResult, soak

MINUTES = float(os.environ.get("COCKPIT_SOAK_MINUTES", "40"))
SEEDS = [int(s) for s in os.environ.get("COCKPIT_SOAK_SEEDS", "42,1,2").split(",")]
MAX_TRIPS = 1  # "breakers may trip, but rarely": at most one per run


def run(seed: int, approver: str, data_dir: Path) -> SoakResult:
    return asyncio.run(soak(seed, MINUTES, approver, data_dir))


def assert_alive(r: SoakResult) -> None:
    """Few trips, the engine active, and the auto strategy still trading in the run's second
    half (not paused, fills there)."""
    assert (r.end_ns - r.start_ns) >= 30 * MINUTE_NS
    assert len(r.trips) <= MAX_TRIPS, r.trips
    assert all(t["action"] != "halt_engine" for t in r.trips), r.trips
    assert r.rows and r.rows[-1]["state"] == "ACTIVE"
    assert r.trading_at_end(AUTO_STRATEGY, (r.end_ns - r.start_ns) // 2), (
        r.paused_at_end,
        r.last_fill_ns,
    )
    assert r.max_pending_per_key <= 1


@pytest.mark.parametrize("seed", SEEDS)
def test_nobody_answers_approvals(seed: int, data_dir: Path) -> None:
    r = run(seed, "none", data_dir)
    assert_alive(r)
    c = r.counts
    assert c["approvals_requested"] > 0 and c["approvals_approved"] == 0
    # Every request ends on its own (expired, or replaced by a newer one) or is still waiting.
    ended = c["approvals_expired"] + c["approvals_superseded"]
    assert c["approvals_requested"] - ended <= 6  # at most one per strategy, symbol and side


@pytest.mark.parametrize("seed", SEEDS)
def test_a_person_approves_everything(seed: int, data_dir: Path) -> None:
    r = run(seed, "all", data_dir)
    assert_alive(r)
    assert r.counts["approvals_approved"] > 0
    assert r.fills_by_strategy["rsi_reversion"] + r.fills_by_strategy["donchian_breakout"] > 0
