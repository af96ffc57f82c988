"""review-reviewlast: the changes merged last (the welcome's data dir, the kill fallback's
/proc proofs, `kill --level WORD`, the newuser fixes, "book: none", exits on the venue clock),
attacked as a hostile checker would. Each test pins a hole found there, failing before its fix.

Attacks that held (no test added):
- an older client against a newer engine (the welcome's data_dir is one more key, ignored) and
  a newer client against an older engine (no data_dir: nothing compared, sent as before);
- `release`/`kill` with `--socket` and `--data-dir` given as a local symlink to the engine's
  data dir, or with a trailing slash: the same dir (os.path.samefile), sent;
- `kill --all --fleet F --level nuke`: halt on each engine, exit 1 with the line saying so;
- the fallback with `--level nuke`: the KILL file carries halt;
- /proc/locks unreadable: the pid files decide, as before; a pid that exits between reads:
  the signal's ProcessLookupError is a failed delivery, no traceback;
- the fallback with `--level nuke --json` (no engine): KILL written with halt, JSON names both;
- `cockpit trace -n 0`: all the engine keeps (the snapshot's maximum, 100000);
- a viewer's approval toast (cockpit and fleet): no a/r offered; the Log pane's `{}` and
  `None` before/after read "-";
- exits' waits (`_exit_cancels`, `_overrun_asked`, `retry_ts`, `native_retry`, a refused
  exit's backoff): set and judged on the symbol's venue clock throughout (read, not run);
- the S sweep's resource tracker started with /dev/null when stderr has no descriptor.
"""

from __future__ import annotations

import json
from typing import Any

import pytest


def test_kill_json_with_a_level_that_is_no_level_says_ok_false(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cockpit kill --level nuke --json` engaged halt and exited 1, but the JSON a script
    reads said {"ok": true, ...}: the level asked read as done. The JSON says ok false now,
    with the level engaged (halt) and the word asked."""
    from cockpit import oneshot
    from tests.test_oneshot import FakeSocketClient, run

    FakeSocketClient.reply = {"ok": True, "message": "kill switch engaged: halt"}
    FakeSocketClient.made = []
    monkeypatch.setattr(FakeSocketClient, "instance", "run-1", raising=False)
    monkeypatch.setattr(oneshot, "SocketClient", FakeSocketClient)
    code, out, _ = run(capsys, "kill", "--level", "nuke", "--json", "--socket", "/run/e.sock")
    answer: dict[str, Any] = json.loads(out)
    assert code == 1
    assert answer["ok"] is False
    assert answer["level"] == "halt" and answer["level_asked"] == "nuke"
    # A level that is a level: as before.
    FakeSocketClient.made = []
    code, out, _ = run(capsys, "kill", "--level", "halt", "--json", "--socket", "/run/e.sock")
    assert code == 0 and json.loads(out)["ok"] is True and "level_asked" not in json.loads(out)


def test_fleet_kill_json_with_a_level_that_is_no_level_says_ok_false(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cockpit kill --all --fleet F --level nuke --json`, every engine confirming halt:
    exit 1, but the fleet's JSON said "ok": true. Now ok false, with the word asked."""
    from cockpit import oneshot
    from tests.test_oneshot import FakeSocketClient, run

    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[engines.a]\nsocket = "/run/a.sock"\n[engines.b]\nsocket = "/run/b.sock"\n')
    FakeSocketClient.reply = {"ok": True, "message": "kill switch engaged: halt"}
    FakeSocketClient.made = []
    runs = iter(["run-1", "run-2", "run-3", "run-4"])
    monkeypatch.setattr(
        FakeSocketClient,
        "instance",
        property(lambda self: self.__dict__.setdefault("_run", next(runs))),
        raising=False,
    )
    monkeypatch.setattr(oneshot, "SocketClient", FakeSocketClient)
    argv = ["kill", "--all", "--fleet", str(fleet), "--json"]
    code, out, _ = run(capsys, *argv, "--level", "nuke")
    answer = json.loads(out)
    assert code == 1
    assert answer["ok"] is False and answer["level_asked"] == "nuke"
    assert all(r["answer"] == "accepted" for r in answer["engines"]), answer
    code, out, _ = run(capsys, *argv, "--level", "halt")
    assert code == 0 and json.loads(out)["ok"] is True


def test_a_removed_socket_lock_held_open_proves_the_engine_through_a_symlinked_dir(
    tmp_path: Any,
) -> None:
    """The kill fallback proves a stuck engine whose pid files a tmp cleaner removed by the
    socket's lock file it still holds open (/proc/PID/fd). The kernel names that file by its
    real path: with the socket given through a symlinked directory (/var/run -> /run, a link
    to the runtime dir) the engine was not proved, and not signalled (exit 3, the engine
    traded on). Compared by the real path too now; another file is still no proof."""
    import os
    from pathlib import Path

    from cockpit.oneshot import _holds_open

    real = Path(tmp_path) / "real"
    real.mkdir()
    link = Path(tmp_path) / "link"
    link.symlink_to(real)
    lock = real / "e.sock.lock"
    with open(lock, "w") as held:
        assert _holds_open(os.getpid(), link / "e.sock.lock")
        lock.unlink()  # the tmp cleaner
        assert _holds_open(os.getpid(), link / "e.sock.lock")
        assert _holds_open(os.getpid(), real / "e.sock.lock")
        assert not _holds_open(os.getpid(), link / "other.sock.lock")
        held.write("")


async def test_attach_through_a_forwarder_to_another_data_dirs_engine_is_refused(
    data_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cockpit attach --socket tunnel.sock --data-dir A`, the tunnel (`ssh -L`, no info file)
    reaching engine B: the one-shot commands refuse that pair by the welcome's data dir, but
    attach opened B's cockpit as operator: the approvals, the release, the flatten the person
    meant for A went to B. The client now checks the welcome's data dir at every dial; the
    matching pair (by a symlink, with a trailing slash) still connects."""
    from cockpit.socket_client import SocketClient, WrongEngine
    from engine.control import ControlServer
    from engine.runtime import Engine
    from tests.test_control_support import approve_config
    from tests.test_review_reviewkill import relay, scratch

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    engine = Engine(approve_config(data_dir), data_dir)
    await engine.start()
    try:
        with scratch() as d:
            (d / "run").mkdir(mode=0o700)
            other = d / "other"
            other.mkdir(mode=0o700)
            link = d / "link"
            link.symlink_to(data_dir)
            server = ControlServer(engine, d / "run" / "b.sock")
            await server.start()
            try:
                async with relay(d / "tunnel.sock", server.path):
                    client = SocketClient(d / "tunnel.sock", reconnect=False, serves=other)
                    with pytest.raises(WrongEngine, match="serves the data dir"):
                        await client.connect(retry=False)
                    await client.close()
                    for named in (data_dir, link, f"{data_dir}/"):
                        client = SocketClient(d / "tunnel.sock", reconnect=False, serves=named)
                        await client.connect(retry=False)
                        assert client.connected
                        await client.close()
            finally:
                await server.close()
    finally:
        await engine.stop()


def test_attach_with_socket_and_data_dir_names_the_data_dir_to_the_client(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The wiring: attach --socket S --data-dir D passes D for the welcome check (the socket
    stays S), and a wrong engine is a usage error (exit 2), as for the one-shot commands."""
    from cockpit import cli, socket_client

    seen: dict[str, Any] = {}

    class Refusing:
        def __init__(self, path: Any, **kwargs: Any) -> None:
            seen.update(kwargs, path=path)

        async def connect(self, retry: bool = True) -> None:
            raise socket_client.WrongEngine("--socket S serves the data dir B, not A: give ...")

    monkeypatch.setattr(socket_client, "SocketClient", Refusing)
    monkeypatch.setattr(cli, "_needs_terminal", lambda: None)
    rc = cli.main(["attach", "--socket", "/tmp/reviewlast-x.sock", "--data-dir", "/tmp/A"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert str(seen["serves"]) == "/tmp/A" and seen["data_dir"] is None
    assert str(seen["path"]) == "/tmp/reviewlast-x.sock"
    assert "serves the data dir B" in err


async def test_a_data_dir_bound_client_refuses_a_forwarder_to_another_engine(
    data_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cockpit attach --data-dir A` (or a fleet file's `data_dir = "A"`) finds A's socket at
    every dial and refuses an engine serving another data dir by the info file beside it. A
    forwarder at that path (no info file) "could not tell": B's engine was taken for A's. The
    welcome's data dir tells now; A's own engine is still taken."""
    from cockpit.socket_client import EngineUnreachable, SocketClient
    from engine.control import ControlServer, socket_for_data_dir
    from engine.runtime import Engine
    from tests.test_control_support import approve_config
    from tests.test_review_reviewkill import relay, scratch

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    engine = Engine(approve_config(data_dir), data_dir)
    await engine.start()
    try:
        with scratch() as d:
            (d / "run").mkdir(mode=0o700)
            other = d / "other"
            other.mkdir(mode=0o700)
            server = ControlServer(engine, d / "run" / "b.sock")
            await server.start()
            try:
                async with relay(socket_for_data_dir(other), server.path):
                    client = SocketClient(other, reconnect=False, data_dir=other)
                    with pytest.raises(EngineUnreachable, match="serves the data dir"):
                        await client.connect(retry=False)
                    await client.close()
                async with relay(socket_for_data_dir(data_dir), server.path):
                    client = SocketClient(data_dir, reconnect=False, data_dir=data_dir)
                    await client.connect(retry=False)
                    assert client.connected
                    await client.close()
            finally:
                await server.close()
    finally:
        await engine.stop()


def test_a_venue_ticker_feed_reads_book_none_not_missing() -> None:
    """A live or paper venue on a ticker (or bidask) feed streams no L2 by its config, yet
    every acting decision's chain read "book: MISSING: no L2 book for this symbol now" in bold
    red (only the paced sources were told apart). Now "none", dimmed, as for the simulated
    market; a book feed that has no book now (unsynced) still reads MISSING."""
    from types import SimpleNamespace

    from engine.events import DecisionMade
    from engine.runtime import Engine
    from engine.types import Action, Decision
    from engine.venues.source import VenueSource

    d = Decision("d1", 1, "s", "BTC/USDT", "binance", Action.BUY, "r", "why", 1.0, {})

    def book_of(feed_source: str) -> dict[str, Any]:
        src = VenueSource.__new__(VenueSource)
        src.feeds = {"binance": SimpleNamespace(source=feed_source, depth=lambda s: None)}
        src._venue_of = {"BTC/USDT": "binance"}
        engine = SimpleNamespace(books={}, source=src, book_snapshots={"missing": 0})
        made = Engine._with_book(engine, DecisionMade(d))  # type: ignore[arg-type]
        assert made.book is not None and engine.book_snapshots["missing"] == 1
        return made.book

    assert book_of("ticker").get("no_l2_feed") is True
    assert book_of("bidask").get("no_l2_feed") is True
    assert "no_l2_feed" not in book_of("book")
