"""The KILL file is a state, not an edge: while it exists the kill switch is engaged at least at
its level, however and whenever it appeared; a release is refused while it is there (no
override), rewriting it higher escalates, and deleting it is how a person lifts it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.runtime import Engine
from tests.conftest import fast_config

WAIT = 30.0  # a bound against hanging, never a speed assertion
POLL_S = 0.05
RELEASE = {"reason": "checked", "confirm": "RELEASE"}


def config(data_dir: Path) -> Any:
    return fast_config(data_dir, safety={"kill_switch": {"poll_s": POLL_S}})


@pytest.fixture
async def engine(data_dir: Path) -> AsyncIterator[Engine]:
    """A started engine with its KILL-file watcher running (as ``run()`` runs it)."""
    eng = Engine(config(data_dir), data_dir)
    await eng.start()
    await eng.process(list(itertools.islice(eng.source.events(), 200)))
    watcher = asyncio.create_task(eng.watch())
    try:
        yield eng
    finally:
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await watcher
        await eng.stop()


async def until(check: Callable[[], Any], what: str) -> None:
    for _ in range(int(WAIT / POLL_S)):
        if check():
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"timed out waiting for {what}")


async def polls(n: int = 4) -> None:
    """Let the watcher look at the file a few times."""
    await asyncio.sleep(POLL_S * n)


def kill(engine: Engine) -> Any:
    assert engine.core is not None
    return engine.core.safety.kill


async def test_a_kill_file_that_appears_while_engaged_blocks_the_release(engine: Engine) -> None:
    reply = await engine.command("kill", {"level": "halt", "reason": "by hand"})
    assert reply["ok"]
    engine.kill_file.write_text("halt\n")
    await polls()
    refused = await engine.command("release", RELEASE)
    assert not refused["ok"] and str(engine.kill_file) in refused["message"]
    overridden = await engine.command("release", {**RELEASE, "override": True})
    assert not overridden["ok"] and str(engine.kill_file) in overridden["message"]
    assert kill(engine).level == "halt"
    assert engine.snapshot(trace=0)["trading_state"]["state"] == "HALTED"
    # Deleting the file is how it is lifted; the switch stays latched until a person releases.
    engine.kill_file.unlink()
    await polls()
    assert kill(engine).level == "halt"
    released = await engine.command("release", RELEASE)
    assert released["ok"], released
    await polls()
    assert not kill(engine).engaged
    assert engine.snapshot(trace=0)["trading_state"]["state"] == "ACTIVE"


async def test_rewriting_the_file_with_a_higher_level_escalates(engine: Engine) -> None:
    engine.kill_file.write_text("entries\n")
    await until(lambda: kill(engine).level == "entries", "the entries kill")
    assert engine.snapshot(trace=0)["trading_state"]["state"] == "REDUCING"
    engine.kill_file.write_text("halt\n")
    await until(lambda: kill(engine).level == "halt", "the escalation to halt")
    engine.kill_file.write_text("flatten\n")
    await until(lambda: kill(engine).level == "flatten", "the escalation to flatten")
    assert kill(engine).source == "file"
    # A lower level never lowers an engaged switch.
    engine.kill_file.write_text("entries\n")
    await polls()
    assert kill(engine).level == "flatten"
    engine.kill_file.unlink()
    await polls()
    assert kill(engine).level == "flatten"  # latched after the file is gone
    assert (await engine.command("release", RELEASE))["ok"]


async def test_a_file_below_the_engaged_level_still_blocks_the_release(engine: Engine) -> None:
    assert (await engine.command("kill", {"level": "flatten", "reason": "by hand"}))["ok"]
    engine.kill_file.write_text("entries\n")
    await polls()
    assert kill(engine).level == "flatten" and kill(engine).source == "command"
    refused = await engine.command("release", RELEASE)
    assert not refused["ok"] and str(engine.kill_file) in refused["message"]
    engine.kill_file.unlink()
    assert (await engine.command("release", RELEASE))["ok"]


async def test_after_a_release_refused_by_the_file_a_rewrite_still_counts(engine: Engine) -> None:
    """Release, file present, then a rewrite: nothing is ever 'already seen'."""
    engine.kill_file.write_text("halt\n")
    await until(lambda: kill(engine).level == "halt", "the file's kill")
    engine.kill_file.unlink()
    assert (await engine.command("release", RELEASE))["ok"]
    engine.kill_file.write_text("entries\n")
    await until(lambda: kill(engine).level == "entries", "the file again")
    engine.kill_file.write_text("halt\n")
    await until(lambda: kill(engine).level == "halt", "the rewrite")


async def test_a_kill_file_present_at_start_holds_before_the_first_quote(data_dir: Path) -> None:
    """Halted from start() on; the flatten it asks for goes out once there are quotes to price
    it against (at start there are none, and a denied flatten is not retried)."""
    first = Engine(config(data_dir), data_dir)
    await first.start()
    quotes = first.source.events()
    while not any(p.qty for p in first.core.portfolio.positions.values()):  # type: ignore[union-attr]
        await first.process(list(itertools.islice(quotes, 200)))
    await first.stop()
    (data_dir / "KILL").write_text("flatten\n")
    engine = Engine(config(data_dir), data_dir)
    await engine.start()
    try:
        assert kill(engine).level == "halt" and kill(engine).source == "file"
        assert engine.snapshot(trace=0)["trading_state"]["state"] == "HALTED"
        refused = await engine.command("release", {**RELEASE, "override": True})
        assert not refused["ok"] and "KILL" in refused["message"]
        quotes = engine.source.events()
        await engine.process(list(itertools.islice(quotes, 50)))
        await engine.enforce_kill_file()  # the watcher's first look
        assert kill(engine).level == "flatten"
        await engine.process(list(itertools.islice(quotes, 500)))
        assert engine.core is not None
        assert not any(p.qty for p in engine.core.portfolio.positions.values())
        assert engine.core.counters["submitted"] >= 1
    finally:
        await engine.stop()


# --------------------------------------------------------------------------- property

LEVELS = ("entries", "halt", "flatten")
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.sampled_from((*LEVELS, "garbage", ""))),
        st.tuples(st.just("delete"), st.none()),
        st.tuples(st.just("kill"), st.sampled_from(LEVELS)),
        st.tuples(st.just("release"), st.booleans()),
    ),
    min_size=1,
    max_size=25,
)


def _rank(level: str | None) -> int:
    return -1 if level is None else LEVELS.index(level)


@settings(
    max_examples=int(os.environ.get("COCKPIT_KILL_FILE_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=OPS)
def test_while_the_file_exists_the_switch_is_at_least_at_its_level(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, Any]]
) -> None:
    """Any mix of file writes, deletions, kills and releases: after each look at the file the
    switch is engaged at least at the file's level, and no release succeeds while it exists."""
    data_dir = tmp_path_factory.mktemp("kf") / "data"

    async def scenario() -> None:
        engine = Engine(config(data_dir), data_dir)
        await engine.start()
        try:
            for op, arg in ops:
                before = kill(engine).level
                if op == "write":
                    engine.kill_file.write_text(arg + "\n")
                elif op == "delete":
                    engine.kill_file.unlink(missing_ok=True)
                elif op == "kill":
                    assert (await engine.command("kill", {"level": arg, "reason": "p"}))["ok"]
                else:
                    args = {**RELEASE, "override": True} if arg else RELEASE
                    reply = await engine.command("release", args)
                    if engine.kill_file.exists():
                        assert not reply["ok"] and str(engine.kill_file) in reply["message"]
                await engine.enforce_kill_file()  # what the watcher does at each look
                level = kill(engine).level
                if engine.kill_file.exists():
                    text = engine.kill_file.read_text().strip()
                    wanted = text if text in LEVELS else "halt"  # anything else means halt
                    assert _rank(level) >= _rank(wanted), (op, arg, level, wanted)
                if op != "release":
                    assert _rank(level) >= _rank(before)  # only a release lowers it
        finally:
            await engine.stop()

    asyncio.run(scenario())


# ------------------------------------------------------------------ whatever is named KILL


@pytest.mark.parametrize(
    ("make", "level"),
    [
        (lambda p: p.write_bytes(b"\xef\xbb\xbfflatten\r\n"), "flatten"),  # Notepad: BOM, CRLF
        (lambda p: p.write_text("flatten # closing all\n"), "flatten"),
        (lambda p: p.write_text("Entries"), "entries"),
        (lambda p: p.write_bytes(b"\x00\xff garbage"), "halt"),
        (lambda p: p.write_text(""), "halt"),
        (lambda p: p.symlink_to(p.parent / "nowhere"), "halt"),  # dangling: still something
        (lambda p: p.mkdir(), "halt"),
        (lambda p: os.mkfifo(p), "halt"),  # opening a FIFO would block the engine for good
    ],
    ids=["bom-crlf", "comment", "case", "binary", "empty", "dangling-link", "directory", "fifo"],
)
async def test_anything_named_kill_holds_at_its_level(
    engine: Engine, make: Callable[[Path], Any], level: str
) -> None:
    make(engine.kill_file)
    await until(lambda: kill(engine).level == level, f"the {level} kill")
    refused = await engine.command("release", RELEASE)
    assert not refused["ok"] and str(engine.kill_file) in refused["message"]
    status = await engine.command("pause", {"strategy": "ema_cross"})  # the loop still answers
    assert status["ok"], status


def test_a_huge_kill_file_is_read_by_its_first_bytes(tmp_path: Path) -> None:
    from engine.datadir import KILL_READ_BYTES, read_kill_level

    path = tmp_path / "KILL"
    with path.open("wb") as fh:
        fh.write(b"flatten\n")
        fh.truncate(400 * 1024 * 1024)  # sparse: 400 MB that is never read
    reads: list[int] = []
    real_read = os.read
    try:
        os.read = lambda fd, n: reads.append(n) or real_read(fd, n)  # type: ignore[assignment]
        assert read_kill_level(path) == "flatten"
    finally:
        os.read = real_read  # type: ignore[assignment]
    assert reads == [KILL_READ_BYTES]


def test_a_kill_file_is_never_lowered_nor_written_through_something_else(tmp_path: Path) -> None:
    from engine.datadir import raise_kill_file, read_kill_level

    path = tmp_path / "KILL"
    assert raise_kill_file(path, "halt")[0] and read_kill_level(path) == "halt"
    held, said = raise_kill_file(path, "entries")
    assert held and "already demands halt" in said and read_kill_level(path) == "halt"
    assert raise_kill_file(path, "flatten")[0] and read_kill_level(path) == "flatten"
    path.unlink()
    os.mkfifo(path)
    held, said = raise_kill_file(path, "flatten")
    assert not held and "not a regular file" in said and path.is_fifo()
