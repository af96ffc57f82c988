"""An adversarial review of the approval gate, trading modes and risk profiles, operator commands
and the audit log (review-ap): each test is a hole found by attacking a promise at its boundary
as a hostile checker would, failing before its fix. Driven in process through
tests/test_safety_engine.py's Harness (exact quotes, event time); every wait is bounded.
COCKPIT_REVIEW_AP_EXAMPLES raises the property's examples.

Tried and held (no test added; earlier reviews' tests pin most):
- TTL on the engine's clock with a quiet feed: approve 1 ns before 30 s approved, at 30 s expired.
- Price tolerance at exactly +-0.5% approved, one tick beyond rejected, for buys and for sells.
- Approve after a lowered max_order_notional, while paused, after a breaker: rejected after
  checks (counted as rejected, nothing sent); a kill at entries keeps a reducing exit
  approvable (approved and sent) and rejects the entry.
- auto_after_approved at N-1 / N, across restarts; expired, superseded and rejected-after-checks
  never count; the engine never switches by itself; live starts every strategy in approve,
  also over a journaled operator's auto.
- Wrong, stale or another engine's hash; approve twice, from two clients; after a restart (the
  pending is journaled expired, never sent); a superseding request racing an approve of the
  old id (the core decides synchronously under the command lock).
- Canary: counted from the journal's live submits, so a restart neither resets nor repeats it;
  flattens and exits are orders that count, and a reduce-only one passes the cap; set_limit
  cannot lift the cap (min of the two).
- `profile =` in a config file (also a `[profile]` table) refused; a profile's mistakes named
  in its own file; set_limit looser dropped at a start whose config or profile changed it
  (journaled by system), stricter kept.
- Audit: a viewer's refusals rated and summed, the socket's own refusals summed, an edited
  row refused by the readers; the limit dialog refuses "1,5" and takes "5,000".
- `cockpit --live --confirm-live "trade live"` starts the TUI without the prompt: the flag is
  the typed confirmation, as headless.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cockpit.oneshot import build_parser, run_oneshot
from engine.config import DEFAULT_CONFIG_PATH, Config, load_config, parse_config
from engine.history import ChainBroken, RowFilter, audit_records
from engine.journal import read_rows
from engine.runtime import Engine
from engine.types import NS_PER_SECOND
from engine.vocabulary import printable
from tests.test_control_support import ThreadEngine, short_dir
from tests.test_history_cli import T0, audit_payload, write_journal
from tests.test_safety_engine import (
    BTC,
    Harness,
    buy,
    harnesses,  # noqa: F401 (a fixture)
    sell,
    start,
)

S = NS_PER_SECOND
EXAMPLES = int(os.environ.get("COCKPIT_REVIEW_AP_EXAMPLES", "60"))


async def request(h: Harness, symbol: str = BTC, mid: float = 60_000.0) -> dict[str, Any]:
    """A buy from ``beta`` (approve mode) that waits; its pending dict."""
    before = {p.approval_id for p in h.core.approvals.pending()}
    await h.signal("beta", symbol, buy(), mid)
    (new,) = [p for p in h.core.approvals.pending() if p.approval_id not in before]
    return new.to_dict()


# --------------------------------------------------------------------------- audit: when


async def test_an_operator_action_on_a_quiet_feed_is_recorded_when_it_was_made(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """The feed went quiet (an outage, a weekend); the engine's clock runs on (the source's
    time). A person's approve, reject, pause, resume, set_limit, mode switch, flatten, kill,
    release and a viewer's refused command were each recorded at the last quote's time, up to
    the whole outage before they were made: the audit log said a kill came before the outage
    it answered, and its rows ran backwards against the approval rows beside them."""
    h = await start(harnesses, data_dir)
    await h.feed(BTC, 60_000.0)
    first = await request(h)
    second = await request(h, "ETH/USDT", 3_000.0)
    quiet = h.core.now
    later = quiet + 4 * S  # inside the stale limit: the approval still goes through
    h.engine.source.event_now = lambda: later  # type: ignore[method-assign]
    commands: list[tuple[str, dict[str, Any], str]] = [
        ("approve", {"id": first["id"], "hash": first["hash"]}, "operator"),
        ("reject", {"id": second["id"], "reason": "no"}, "operator"),
        ("pause", {"strategy": "alpha", "reason": "look"}, "operator"),
        ("resume", {"strategy": "alpha", "reason": "looked"}, "operator"),
        ("set_limit", {"name": "max_order_notional", "value": 5_000, "reason": "calm"}, "operator"),
        ("set_approval_mode", {"strategy": "beta", "mode": "approve", "reason": "x"}, "operator"),
        ("pause", {"strategy": "beta", "reason": "a viewer's"}, "viewer"),
        ("kill", {"level": "entries", "reason": "outage"}, "operator"),
        ("release", {"reason": "back", "confirm": "RELEASE"}, "operator"),
    ]
    for name, args, role in commands:
        before = len(h.rows("audit"))
        await h.engine.command(name, args, user="alice", client="pytest", role=role)
        await h.engine.journal.flush()
        (row,) = h.rows("audit")[before:]
        assert row.payload["action"] == name
        assert row.ts == later, (name, (row.ts - quiet) / S)
    for row in h.rows("safety"):
        if row.payload.get("by") == "alice":
            assert row.ts == later, (row.payload["what"], (row.ts - quiet) / S)
    assert h.core.safety.snapshot()["kill_switch"]["ts"] in (0, later)


# --------------------------------------------------------------------------- risk profiles


def _entries(cfg: Config, data_dir: Path, events: int) -> dict[str, float]:
    """The largest entry each strategy sends in the first ``events`` of the simulated market,
    every strategy in auto (as a person approving everything would see them)."""

    async def run() -> dict[str, float]:
        engine = Engine(cfg, data_dir)
        await engine.start()
        try:
            await engine.process(list(itertools.islice(engine.source.events(), events)))
            await engine.committed()
        finally:
            await engine.stop()
        largest: dict[str, float] = {}
        for row in read_rows(engine.journal_path, {"intent"}):
            it = row.payload["intent"]
            if row.payload["outcome"] == "submitted" and not it["reduce_only"]:
                sid = it["strategy_id"]
                notional = it["qty"] * it["ref_price"]
                largest[sid] = max(largest.get(sid, 0.0), notional)
        return largest

    return asyncio.run(run())


def test_the_conservative_profile_is_never_looser_than_the_default_it_is_laid_over(
    tmp_path: Path,
) -> None:
    """Found: ``--profile conservative`` on the default config raised the drawdown kill from
    the default's 15% to 25% and sent entries of about 4,900 where the default sends 2,000
    (its volatility sizing asks for the whole 5% position cap on every entry, the default's
    fixed-fraction strategies put 2% of equity into one): the profile a careful trader picks
    to be careful traded bigger and stopped later. Now no limit, loss limit or breaker of the
    profile is above the default's, and no strategy's entry is larger."""
    default = load_config(None)
    careful = load_config(None, "conservative")
    looser = [
        f"{section}.{name}: {getattr(mine, name)} > {getattr(base, name)}"
        for section, mine, base in (
            ("risk", careful.risk, default.risk),
            ("safety.kill_switch", careful.safety.kill_switch, default.safety.kill_switch),
            ("safety.breakers", careful.safety.breakers, default.safety.breakers),
        )
        for name in type(mine).model_fields
        if isinstance(getattr(mine, name), int | float)
        and not isinstance(getattr(mine, name), bool)
        and getattr(mine, name) > getattr(base, name)
    ]
    assert looser == []
    levels = ("entries", "halt", "flatten")  # what a loss limit does, mildest first
    assert levels.index(careful.safety.kill_switch.auto_level) >= levels.index(
        default.safety.kill_switch.auto_level
    )

    def auto(cfg: Config, where: Path) -> Config:
        data = cfg.model_dump(mode="json")
        data["engine"]["data_dir"] = str(where)
        data["market"]["simulated"].update(speed="max", start="2024-03-01T00:00:00Z")
        data["strategies"] = [dict(s, approval="auto") for s in data["strategies"]]
        return parse_config(data)

    plain = _entries(auto(default, tmp_path / "plain"), tmp_path / "plain", 15_000)
    profiled = _entries(auto(careful, tmp_path / "careful"), tmp_path / "careful", 15_000)
    assert plain, "the default config traded nothing: the comparison says nothing"
    for sid, largest in profiled.items():
        assert largest <= plain.get(sid, min(plain.values())), (sid, largest, plain)


# --------------------------------------------------------------------------- reasons


BIDI_MARKS = ("\u061c", "\u200e", "\u200f")  # ALM, LRM, RLM: Unicode's other Bidi_Control


async def test_a_reason_with_a_bidi_mark_is_refused_and_a_kill_reason_is_cleaned(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """Found: the README refuses a reason with a bidi control, but only the embeddings,
    overrides and isolates were refused: the right-to-left mark (and LRM, ALM) went into the
    journal as typed and reached `cockpit audit` and the A screen unescaped, where it changes
    the order in which the digits and signs around it are shown. Now every Unicode bidi
    control is refused in a reason (a kill's is made plain), and shown escaped when read."""
    h = await start(harnesses, data_dir)
    await h.feed(BTC, 60_000.0)
    for mark in BIDI_MARKS:
        reason = f"calmer {mark}5000 -> 500"
        args = {"name": "max_order_notional", "value": 5_000, "reason": reason}
        reply = await h.engine.command("set_limit", args)
        assert not reply["ok"] and "one line of text" in reply["message"], (mark, reply)
        paused = await h.engine.command("pause", {"strategy": "alpha", "reason": reason})
        assert not paused["ok"], mark
        assert printable(reason) == reason.replace(mark, mark.encode("unicode_escape").decode())
    assert h.core.limits.max_order_notional == 10_000.0
    killed = await h.engine.command("kill", {"reason": f"stop{BIDI_MARKS[2]}now"})
    assert killed["ok"] and h.core.safety.kill.reason == "stop now"


# --------------------------------------------------------------------------- a deleted audit row


def _audit_shown(journal: Path, limit: int) -> list[str]:
    """What `cockpit audit` (limit 0) or `cockpit audit -n N` shows: action and subject."""
    return [f"{r.action} {r.subject}" for r in audit_records(journal, RowFilter(), limit)]


async def test_an_audit_row_deleted_from_the_journal_is_noticed_by_cockpit_audit(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """Found: `cockpit audit` checks each row it reads against its hash and the row after it,
    but a row deleted outright left nothing to check: take the release (or the first or the
    last command, or a row of another kind between two commands) out of the journal and the
    audit trail read clean, one command short, with no word of it (only `cockpit verify` and
    a start saw the gap). Now a gap in the rows a query spans (seq runs on from 1) stops it
    as an edit does, in full and for the newest N (a gap older than those is not theirs)."""
    h = await start(harnesses, data_dir)
    await h.feed(BTC, 60_000.0)
    for name, args in (
        ("pause", {"strategy": "alpha", "reason": "look"}),
        ("kill", {"level": "halt", "reason": "incident"}),
        ("release", {"reason": "all clear", "confirm": "RELEASE"}),
        ("resume", {"strategy": "alpha", "reason": "looked"}),
    ):
        assert (await h.engine.command(name, args, user="alice"))["ok"], name
    await h.feed(BTC, 60_000.0)
    await h.stop()
    harnesses.remove(h)
    whole = _audit_shown(h.journal, 0)
    assert whole == ["pause alpha", "kill halt", "release ", "resume alpha"], whole
    rows = list(read_rows(h.journal))
    audits = [r.seq for r in rows if r.kind == "audit"]
    between = next(r.seq for r in rows if r.kind != "audit" and audits[0] < r.seq < audits[1])
    for what, seq in (
        ("the release", audits[2]),
        ("the first command", audits[0]),
        ("the last command", audits[-1]),
        ("a row of another kind between two commands", between),
    ):
        copy = tmp_path / f"journal-{seq}.sqlite"
        shutil.copy(h.journal, copy)
        conn = sqlite3.connect(copy)
        with conn:
            conn.execute("DELETE FROM journal WHERE seq = ?", (seq,))
        conn.close()
        for limit in (0, 2, 10):
            if limit == 2 and seq < audits[-2]:  # before the newest two: not theirs to show
                assert _audit_shown(copy, limit) == whole[-2:]
                continue
            with pytest.raises(ChainBroken, match="missing"):
                shown = _audit_shown(copy, limit)
                pytest.fail(f"{what} deleted, `cockpit audit -n {limit}` showed {shown}")


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    kinds=st.lists(st.booleans(), min_size=2, max_size=30),  # True: an audit row
    deleted=st.integers(min_value=0, max_value=29),
    limit=st.sampled_from([0, 1, 3]),
)
def test_any_row_deleted_in_what_an_audit_query_spans_stops_it(
    kinds: list[bool], deleted: int, limit: int
) -> None:
    """The invariant behind the test above: one row deleted from the journal stops an audit
    query whose answer it could have changed (the whole trail: anywhere; the newest N: from
    the oldest of them on, or anywhere when fewer than N are left); any other reads as it is.
    The last row alone is beyond a reader (rows cut off the end: the anchor's, `verify`)."""
    with tempfile.TemporaryDirectory(prefix="review-ap-") as tmp:
        path = Path(tmp) / "journal.sqlite"
        rows = [
            ("audit", T0 + i * S, audit_payload(i)) if audit else ("marks", T0 + i * S, {"i": i})
            for i, audit in enumerate(kinds)
        ]
        write_journal(path, rows)
        seq = deleted % len(kinds) + 1
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("DELETE FROM journal WHERE seq = ?", (seq,))
        conn.close()
        left = [i + 1 for i, audit in enumerate(kinds) if audit and i + 1 != seq]
        shown = left if limit == 0 else left[-limit:]
        last = seq == len(kinds)
        if not last and (limit == 0 or len(left) < limit or seq > shown[0]):
            with pytest.raises(ChainBroken, match="missing"):
                list(audit_records(path, RowFilter(), limit))
        else:
            assert [r.seq for r in audit_records(path, RowFilter(), limit)] == shown


# --------------------------------------------------------------------------- rearm


async def test_a_rearm_of_a_scope_that_leaves_a_breaker_tripped_says_so_and_is_not_done(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """Found: `cockpit rearm global` with the global loss streak and a clock drift both
    tripped answered "re-armed: consecutive_losses (global)", exit 0, while the drift (still
    at its limit) kept the engine HALTED: a script's `rearm && echo trading again` was wrong,
    and the README's "refused (exit 1) naming what is still tripped" held only when nothing
    could be re-armed. Now the answer names what still holds, and why, and is not ok."""
    h = await start(harnesses, data_dir, safety={"breakers": {"global_consecutive_losses": 1}})
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, buy(), 60_000.0)
    await h.feed(BTC, 60_000.0)
    await h.signal("alpha", BTC, sell(exit_=True), 60_000.0)  # a loss: spread and fees
    await h.feed(BTC, 60_000.0)
    await h.publish(h.core.on_clock_drift(1e9))

    def tripped() -> set[str]:
        return {b["name"] for b in h.core.breakers.status() if b["tripped"]}

    assert tripped() == {"consecutive_losses", "clock_drift"}
    reply = await h.engine.command("rearm", {"scope": "global", "reason": "checked"})
    assert tripped() == {"clock_drift"} and h.core.safety.trading_state == "HALTED"
    assert not reply["ok"], reply
    assert reply["message"].startswith("re-armed: consecutive_losses (global); still tripped:")
    assert "clock_drift (global): the last measured clock drift" in reply["message"]
    audit = h.rows("audit")[-1].payload
    assert audit["accepted"] is False and audit["message"] == reply["message"]
    await h.publish(h.core.on_clock_drift(0.0))  # back under the warn level: re-arms itself
    assert tripped() == set()


INVISIBLE = ("\u200b", "\u2060\u2060", "\ufeff", "\u00ad", "\u2800", "\u3164", " \u200b ")


async def test_a_reason_that_shows_nothing_is_refused_as_a_blank_one(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """Found: a blank reason is refused (README), but only spaces counted as blank: a reason
    of zero-width spaces, word joiners, a BOM, a soft hyphen, the braille blank or a Hangul
    filler was taken, and the audit log showed a limit loosened for no reason anyone can
    read. Now a reason must show something; a kill's that shows nothing reads "no reason
    given", as a blank one does."""
    h = await start(harnesses, data_dir)
    await h.feed(BTC, 60_000.0)
    for reason in INVISIBLE:
        args = {"name": "max_order_notional", "value": 50_000, "reason": reason}
        reply = await h.engine.command("set_limit", args)
        assert not reply["ok"] and "a reason is required" in reply["message"], (reason, reply)
        paused = await h.engine.command("pause", {"strategy": "alpha", "reason": reason})
        assert not paused["ok"], reason
    assert h.core.limits.max_order_notional == 10_000.0
    assert not h.core.safety.is_paused("alpha")
    seen = await h.engine.command("pause", {"strategy": "alpha", "reason": "look\u200bed"})
    assert seen["ok"]  # something shows: taken as typed
    killed = await h.engine.command("kill", {"reason": "\u200b\u3164"})
    assert killed["ok"] and h.core.safety.kill.reason == "no reason given"


def test_each_session_in_the_journal_names_the_profile_it_ran_under(tmp_path: Path) -> None:
    """Found: the cockpit shows the active profile with the mode, but the journal recorded
    only the mode: a session run with ``--profile aggressive`` (every limit looser) and one
    without read the same after the fact. The session-start row now names the profile."""

    async def session(cfg: Config) -> dict[str, Any]:
        engine = Engine(cfg, tmp_path)
        await engine.start()
        await engine.stop()
        rows = [r.payload for r in read_rows(engine.journal_path, {"session"})]
        return next(p for p in reversed(rows) if p["state"] == "started")["info"]

    def config(profile: str | None) -> Config:
        data = load_config(None, profile).model_dump(mode="json")
        data["engine"]["data_dir"] = str(tmp_path)
        return parse_config(data)

    assert asyncio.run(session(config(None)))["profile"] == "default"
    assert asyncio.run(session(config("aggressive")))["profile"] == "aggressive"


def test_a_profiles_breakers_hold_for_a_strategy_that_overrides_them(tmp_path: Path) -> None:
    """Found: a profile lays its breakers over the config and its sizing over every strategy,
    but a strategy's own breaker override (``breakers = { consecutive_losses = 20 }``) stayed:
    under ``--profile conservative`` (3 losses in a row pause a strategy, shown as running)
    that strategy still ran 20 losses deep. A breaker the profile sets now holds for every
    strategy; the ones it does not set keep the strategy's override."""
    text = DEFAULT_CONFIG_PATH.read_text().replace(
        'id = "ema_cross"',
        'id = "ema_cross"\nbreakers = { consecutive_losses = 20, max_unreviewed_fills = 7 }',
        1,
    )
    path = tmp_path / "config.toml"
    path.write_text(text)
    plain = load_config(path).breakers_for("ema_cross")
    assert (plain.consecutive_losses, plain.max_unreviewed_fills) == (20, 7)
    careful = load_config(path, "conservative").breakers_for("ema_cross")
    assert careful.consecutive_losses == 3  # the profile's
    assert careful.max_unreviewed_fills == 7  # not the profile's to set: the strategy's


# --------------------------------------------------------------------------- cockpit kill


def test_cockpit_kill_without_a_reason_engages_the_switch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found: the README promises that a kill never waits on its wording (a blank reason is
    refused everywhere but in a kill), and the engine takes a missing one as "no reason
    given"; but `cockpit kill` typed in a hurry, without --reason, was a usage error (exit 2)
    and engaged nothing. It now engages, and the audit row names who and from where."""
    with short_dir() as sd, ThreadEngine(tmp_path / "data", sd / "e.sock") as te:
        te.advance(100)
        code = run_oneshot(build_parser().parse_args(["kill", "--socket", str(te.socket)]))
        out, err = capsys.readouterr()
        assert code == 0 and "kill switch engaged: halt" in out, (out, err)
        engine = te.engine
        assert engine is not None and engine.core is not None
        kill = engine.core.safety.kill
        assert kill.level == "halt" and kill.reason == "no reason given"
