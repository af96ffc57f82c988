"""Review of today's merges (venue clocks, exit sends, data dir beside the config, audit CSV,
gc.freeze) by a hostile checker (reviewnow).

Tried and found holding (no test here, or covered by the tests named):
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from engine.control import default_socket_path
from engine.datadir import (
    JOURNAL_FILE,
    DataDirLock,
    config_data_dir,
    data_dir_elsewhere,
)
from engine.types import Action, LimitSpec, Signal
from tests.test_review_venueclock import two_venues
from tests.test_safety_engine import (
    BTC,
    ETH,
    Harness,
    buy,
    harnesses,  # noqa: F401  (the fixture the tests below take)
)


def limit_buy(price: float, ttl_s: float) -> Signal:
    return Signal(
        Action.BUY, "scripted", "test limit", 1.0, limit=LimitSpec(price=price, ttl_s=ttl_s)
    )


# --------------------------------------------------------------------------- venue clocks


@pytest.mark.parametrize("late_ns", [-1, 0], ids=["just-under", "at-ttl"])
async def test_a_limit_on_the_venue_behind_lives_its_whole_time_to_live(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    late_ns: int,
) -> None:
    """a runs 20 s ahead; alpha rests a limit buy of ETH on b with a 10 s time to live, far
    from the market; both venues quote every second. Found: the limit, stamped at b's time,
    expired on the engine's clock the moment a's next quote came in (20 s ahead): cancelled
    "time to live 10s ran out" at once. Now it works 10 s on b's clock: still working 1 ns
    before them, cancelled at them."""
    v = await two_venues(harnesses, data_dir, monkeypatch, 20.0)
    h = v.h
    await v.both()
    h.core.slots[("alpha", ETH)].strategy.script.append(limit_buy(2_985.0, 10.0))
    v.run(1)
    await v.quote(ETH, 3_000.0)  # alpha rests its limit on b's quote
    (order,) = [o for o in h.core.open_orders.values() if o.symbol == ETH]
    await v.quote(BTC, 60_000.0)
    await v.tick()
    for _ in range(9):
        v.run(1)
        await v.both()
        await v.tick()
    assert order.client_order_id in h.core.open_orders, "cancelled before its time to live"
    v.run(1, late_ns)
    await v.both()
    await v.tick()
    expired = h.core.counters.get("expired", 0)
    assert expired == (0 if late_ns < 0 else 1), expired


async def test_the_countdown_shown_is_the_time_left_on_the_requests_own_venue(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """a runs 20 s ahead and quoted once; b quotes every half second. beta asks to buy BTC on
    a (TTL 30 s). Found: the engine's clock, which the cockpit, `attach` and `cockpit
    approvals` count down with, stood still at a's last stamp while b's behind caught up, so
    the request showed "30s" left for 20 s while its time ran out on a's clock (the README:
    "never more"). Now the countdown is what is left on a's clock, to the ns, and so is a
    resting limit's time to live on either venue."""
    v = await two_venues(harnesses, data_dir, monkeypatch, 20.0)
    h = v.h
    await v.both()
    h.core.slots[("beta", BTC)].strategy.script.append(buy())
    h.core.slots[("alpha", ETH)].strategy.script.append(limit_buy(2_985.0, 60.0))
    v.run(0.5)
    await v.quote(ETH, 3_000.0)  # alpha rests its limit on b
    await v.quote(BTC, 60_000.0)  # beta asks on a, whose last quote this is
    (pending,) = h.core.approvals.pending()
    (order,) = [o for o in h.core.open_orders.values() if o.symbol == ETH]
    for _ in range(40):
        v.run(0.5)
        await v.quote(ETH, 3_000.0)
        await v.tick()
        snap = h.engine.snapshot(trace=0, curve=0)
        (shown,) = snap["approvals"]
        left = pending.expires_ts - h.core._symbol_clock(BTC)
        assert shown["expires_ts"] - snap["now"] == left, (shown["expires_ts"] - snap["now"], left)
        (resting,) = [o for o in snap["orders"] if o["client_order_id"] == order.client_order_id]
        left = order.expire_ts - h.core._symbol_clock(ETH)
        assert resting["expire_ts"] - snap["now"] == left
        assert snap["now"] - resting["ts_created"] == h.core._symbol_clock(ETH) - order.ts_created


# --------------------------------------------------------------------------- data dir beside


def _two_data_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """home/data holds an old engine's journal (a paper run from home once); bot/data beside
    bot/prod.toml (data_dir = "data") is the one an engine runs on now. The working folder
    is home."""
    bot, home = tmp_path / "bot", tmp_path / "home"
    for d in (bot / "data", home / "data"):
        d.mkdir(parents=True, mode=0o700)
        (d / JOURNAL_FILE).write_bytes(b"")
    config = bot / "prod.toml"
    config.write_text('[engine]\ndata_dir = "data"\n')
    monkeypatch.chdir(home)
    return bot / "data", config


def test_kill_from_home_reaches_the_engine_running_beside_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cockpit kill --config /srv/bot/prod.toml` typed from home, where an old ./data holds a
    journal too. Found: the kill went to ./data (its socket, its lock holders: none), the
    KILL file landed there, exit 3, and the engine trading on bot/data traded on. Now the
    data dir an engine runs on wins; with none running the working folder's still does."""
    from cockpit.oneshot import kill_plan, resolve_data_dir

    beside, config = _two_data_dirs(tmp_path, monkeypatch)
    args = argparse.Namespace(config=str(config), data_dir=None, socket=None)
    assert resolve_data_dir(args) == Path("data")  # no engine runs: as before
    assert kill_plan(args).data_dir == Path("data")
    lock = DataDirLock(beside)
    lock.acquire()  # the engine on bot/data
    try:
        plan = kill_plan(args)
        assert plan.data_dir == beside, plan
        assert plan.sockets[0][0].parent in (beside, default_socket_path(beside).parent)
        assert resolve_data_dir(args) == beside  # status, attach, journal ...
        assert config_data_dir("data", config) == beside
        # An engine started from home on ./data starts on its own data as before.
        assert data_dir_elsewhere("data", config) is None
    finally:
        lock.release()


def test_a_config_reached_through_a_symlink_finds_the_data_beside_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """~/prod.toml is a symlink to /srv/bot/prod.toml, where the engine runs (bot/data).
    Found: `cockpit kill --config prod.toml` from home looked beside the link (home/data,
    nothing there): the kill was not delivered, the engine traded on; an engine started
    from home with it began a new, empty data dir. Now beside the file the link names."""
    from cockpit.oneshot import kill_plan

    bot, home = tmp_path / "bot", tmp_path / "home"
    (bot / "data").mkdir(parents=True, mode=0o700)
    (bot / "data" / JOURNAL_FILE).write_bytes(b"")
    home.mkdir()
    (bot / "prod.toml").write_text('[engine]\ndata_dir = "data"\n')
    (home / "prod.toml").symlink_to(bot / "prod.toml")
    monkeypatch.chdir(home)
    assert config_data_dir("data", "prod.toml") == bot.resolve() / "data"
    args = argparse.Namespace(config="prod.toml", data_dir=None, socket=None)
    assert kill_plan(args).data_dir == bot.resolve() / "data"
    problem = data_dir_elsewhere("data", "prod.toml")
    assert problem is not None and f"start the engine from {bot.resolve()}," in problem
