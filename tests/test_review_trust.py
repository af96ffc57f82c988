"""A third adversarial review of what the engine promises a trader (review-p)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path
from typing import Any, cast

from engine.control import ControlServer
from engine.datadir import JOURNAL_FILE
from engine.events import ApprovalRequested
from engine.runtime import Engine
from engine.types import NS_PER_SECOND, Action, Signal
from tests.conftest import fast_config
from tests.test_cli import run
from tests.test_control_support import short_dir


def buy(reason: str = "test entry") -> Signal:
    return Signal(Action.BUY, "test", reason, 0.5, {}, False)


async def started(data_dir: Path) -> Engine:
    """The default config with rsi_reversion and donchian_breakout in approve, with quotes."""
    engine = Engine(fast_config(data_dir, auto=False), data_dir)
    await engine.start()
    await engine.process(list(itertools.islice(engine.source.events(), 60)))
    return engine


async def request(engine: Engine, strategy: str = "donchian_breakout") -> str:
    """A strategy's entry through the real decision path; the pending approval's id."""
    core = engine.core
    assert core is not None
    symbol = "BTC/USDT"
    q = core.quotes[symbol]
    out = core.decide(core.slots[(strategy, symbol)], buy(), (q.bid + q.ask) / 2)
    await engine.handle(out)
    await engine.committed()
    [req] = [e for e in out if isinstance(e, ApprovalRequested)]
    return str(req.approval["id"])


async def test_an_approval_past_its_time_to_live_expires_though_no_quote_came(
    data_dir: Path,
) -> None:
    """The feed went quiet after the request: the engine's clock still runs (the source's
    time), and an approve that comes after the time to live is an expiry, not a trade."""
    engine = await started(data_dir)
    try:
        core = engine.core
        assert core is not None
        aid = await request(engine)
        pend = core.approvals.get(aid)
        assert pend is not None
        later: Any = pend.expires_ts + NS_PER_SECOND // 10
        engine.source.event_now = lambda: later  # type: ignore[method-assign]
        reply = await engine.command("approve", {"id": aid})
        assert not reply["ok"] or "expired" in reply["message"], reply
        assert not core.open_orders
        assert core.approvals.counters()["donchian_breakout"]["approved"] == 0
    finally:
        await engine.stop()


# --------------------------------------------------------------------------- a second engine


def test_a_second_engine_on_the_socket_of_one_still_starting_journals_nothing(
    tmp_path: Path,
) -> None:
    """Two engines on other data directories given one --socket at the same instant.

    Found: the socket was checked before each engine started (nothing listened yet: the other
    was still restoring its journal), so both started, journaled a session (and, on a venue,
    would have reconciled it), and the later one was refused only at its bind, or, finding the
    other's socket not yet listening, replaced it: that engine ran on with no socket a kill
    could reach. Now the socket path is locked (`<socket>.lock`) from the check to the close.
    """
    data_dir = tmp_path / "second"
    with short_dir() as private:
        path = private / "engine.sock"
        starting = ControlServer(cast(Any, None), path)  # the first engine, still starting
        starting.check_path()
        starting.check_free()
        try:
            done = run("engine", "--data-dir", str(data_dir), "--socket", str(path), "--for", "1")
            assert done.returncode == 2, done.stderr
            assert f"another engine is already listening on {path}" in done.stderr
            assert "Traceback" not in done.stderr
            assert done.stdout == ""  # no "session started" for an engine that never ran
            assert not (data_dir / JOURNAL_FILE).exists()
        finally:
            getattr(starting, "release", lambda: None)()  # main has no lock to release


# --------------------------------------------------------------------------- the KILL file


async def test_a_kill_file_linked_to_one_that_says_flatten_flattens(data_dir: Path) -> None:
    """`ln -s ~/kill-levels/flatten DATA_DIR/KILL`: the level is what the link's target says.

    Found: a symlink was never read, only taken as "something by that name" (halt), so a
    person's flatten by link left every position open."""
    from tests.test_kill_file import config, kill, until

    engine = Engine(config(data_dir), data_dir)
    await engine.start()
    await engine.process(list(itertools.islice(engine.source.events(), 200)))
    watcher = asyncio.create_task(engine.watch())
    try:
        target = data_dir.parent / "flatten-now"
        target.write_text("flatten\n")
        engine.kill_file.symlink_to(target)
        await until(lambda: kill(engine).level == "flatten", "the flatten kill")
        refused = await engine.command("release", {"reason": "checked", "confirm": "RELEASE"})
        assert not refused["ok"] and str(engine.kill_file) in refused["message"]
    finally:
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await watcher
        await engine.stop()
