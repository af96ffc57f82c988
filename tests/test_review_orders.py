"""An adversarial review of the order promises (protective exits, limit orders, the approval
gate, trading modes and risk profiles, paper on live prices): each test is a hole found by
attacking the promise as a hostile tester would, failing before its fix. Every wait is bounded.

Tried and found holding (no test added here; the existing tests pin them): approving twice, a
replayed hash, an expired or superseded id, from a viewer, while the journal is down, after a
kill, a pause or a move beyond the tolerance; ``auto`` at N-1 and N approvals; pending
approvals expired (and counted) at restart; a gap through a stop on quotes and bars; a stop
under a kill at halt and at flatten; a trailing stop on a short; exits after an operator's
flatten; post-only crossing, IOC/FOK, NaN/inf/negative limit prices and times to live; a halt
cancelling resting limits; live reached only by config + --live + keys + the typed phrase; keys
in a paper config never read.
"""

from __future__ import annotations

from pathlib import Path

from engine.types import Action, LimitSpec
from tests.test_cli import run
from tests.test_limit_orders import Harness as LimitHarness

# --------------------------------------------------------------------------- risk profiles


def test_a_config_file_cannot_claim_a_profile_whose_limits_it_does_not_run(
    tmp_path: Path,
) -> None:
    """Found: ``profile = "conservative"`` written in a config file was accepted and shown
    with the mode (header, status, metrics, alerts) while the file's own, default limits ran
    (max order notional 10,000, not the profile's 5,000). Only ``--profile`` lays a profile
    over the file; the file's claim is refused in one line, exit 2, by the check and the
    engine alike."""
    cfg = tmp_path / "claims.toml"
    cfg.write_text('profile = "conservative"\n')
    for argv in (["config", "check", "--config", str(cfg)], ["engine", "--config", str(cfg)]):
        r = run(*argv, "--data-dir", str(tmp_path / "data")) if argv[0] == "engine" else run(*argv)
        assert r.returncode == 2, (argv, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "--profile NAME" in lines[0] and "Traceback" not in r.stderr
    ok = tmp_path / "plain.toml"
    ok.write_text("")
    r = run("config", "check", "--config", str(ok), "--profile", "conservative")
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- limit orders


def test_a_time_to_live_under_half_a_nanosecond_expires_at_once_not_never() -> None:
    """Found: a positive time to live that rounded to 0 ns (1e-10 s; ema_cross's
    ``limit_ttl_s`` accepts any number above 0) read as "no time to live": the limit worked
    until filled, the opposite of what was asked. It now expires on the next event."""
    h = LimitHarness()
    h.quote()
    h.strat.say(Action.BUY, LimitSpec(99.0, ttl_s=1e-10))
    h.quote()
    (order,) = h.core.open_orders.values()
    assert order.expire_ts > 0
    h.quote()
    assert not h.core.open_orders
    assert any("time to live" in c.reason for c in h.cancels)
