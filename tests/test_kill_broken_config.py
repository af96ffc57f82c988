"""`cockpit kill --config X` reaches a real engine subprocess although X is broken.

A broken config (UTF-16, nested too deeply to parse, a TOML syntax error, binary garbage) is a
warning, never a reason not to kill: the command uses what can still be read from the file, then
the default socket, the pid file with SIGUSR1 and the KILL file, says which way it took, and exits
0 only when the kill was delivered.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cockpit.oneshot import main as oneshot_main
from tests.conftest import REPO
from tests.test_cli import run
from tests.test_control_support import WAIT, short_dir


def cockpit(*argv: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run(*argv, cwd=cwd, env=env, timeout=WAIT)


def oneshot(*argv: str) -> str | None:
    """A one-shot command (status, release) in this process, with --json: its output, or
    None when it failed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = oneshot_main([*argv, "--json"])
    return out.getvalue() if code == 0 else None


class EngineProcess:
    """`cockpit engine --config good.toml` as an operator starts it."""

    def __init__(self, home: Path, xdg: Path | None) -> None:
        self.home = home
        self.data_dir = home / "d"
        self.good = home / "good.toml"
        self.good.write_text(
            f'[engine]\ndata_dir = "{self.data_dir}"\n\n[market.simulated]\nspeed = 20\n'
        )
        self.env = dict(os.environ, PYTHONPATH=str(REPO))
        self.env.pop("XDG_RUNTIME_DIR", None)
        if xdg is not None:
            xdg.mkdir(mode=0o700)
            self.env["XDG_RUNTIME_DIR"] = str(xdg)
        self.socket = (xdg / "cockpit" / "default.sock") if xdg else self.data_dir / "cockpit.sock"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cockpit", "engine", "--config", str(self.good)],
            cwd=home,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + WAIT
        while self.status() is None:
            assert self.proc.poll() is None, self.proc.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the engine did not start"
            time.sleep(0.1)

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return cockpit(*argv, env=self.env, cwd=self.home)

    def status(self) -> dict[str, Any] | None:
        """`cockpit status --json` run in this process: polled while the engine starts and
        until a kill lands, where a CLI process a poll cost the engine the CPU it needed (the
        `kill` under test still runs as a process of its own)."""
        return json.loads(out) if (out := oneshot("status", "--socket", str(self.socket))) else None

    def kill_engaged(self) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while not ((snap := self.status()) and snap["kill_switch"]["engaged"]):
            assert time.monotonic() < deadline, "the kill switch did not engage"
            time.sleep(0.1)
        return snap["kill_switch"]

    def release(self) -> None:
        released = oneshot(
            "release", "--reason", "t", "--confirm", "RELEASE", "--socket", str(self.socket)
        )
        assert released is not None and json.loads(released)["ok"], released
        assert self.status()["kill_switch"]["engaged"] is False  # type: ignore[index]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def engine() -> Iterator[EngineProcess]:
    with short_dir() as home:
        e = EngineProcess(home, xdg=None)
        try:
            yield e
        finally:
            e.close()


def broken_configs(good: Path) -> dict[str, bytes]:
    text = good.read_text()
    return {
        "utf16": text.encode("utf-16"),
        "deep": (text + "x = " + "[" * 50_000 + "]" * 50_000 + "\n").encode(),
        "syntax": (text + "[[[oops\n").encode(),
    }


def test_kill_with_a_broken_config_reaches_the_engine_through_its_socket(
    engine: EngineProcess,
) -> None:
    for name, content in broken_configs(engine.good).items():
        config = engine.home / f"{name}.toml"
        config.write_bytes(content)
        result = engine.cli("kill", "--config", str(config), "--reason", name)
        assert result.returncode == 0, (name, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        # The config problem is one warning line; the result says which way it went.
        (warning,) = result.stderr.splitlines()
        assert "warning: config problem" in warning and str(config) in warning
        assert f"through the control socket {engine.socket}" in result.stdout
        assert "read from the broken config" in result.stdout
        state = engine.kill_engaged()
        assert state["reason"] == name
        engine.release()


def test_kill_with_a_broken_config_falls_back_to_sigusr1_and_the_kill_file(
    engine: EngineProcess,
) -> None:
    config = engine.home / "syntax.toml"
    config.write_bytes(broken_configs(engine.good)["syntax"])
    os.kill(engine.proc.pid, signal.SIGSTOP)  # a stuck engine: the socket does not answer
    try:
        result = engine.cli("kill", "--config", str(config), "--reason", "stuck", "--json")
    finally:
        os.kill(engine.proc.pid, signal.SIGCONT)
    assert result.returncode == 0, (result.stdout, result.stderr)
    report = json.loads(result.stdout)
    assert report["ok"] and report["path"] == "fallback"
    assert report["signal"]["sent"] and report["signal"]["pid"] == engine.proc.pid
    kill_file = engine.data_dir / "KILL"
    assert report["kill_file"]["written"] and Path(report["kill_file"]["path"]) == kill_file
    assert any("not valid TOML" in w for w in report["warnings"])
    assert engine.kill_engaged()["level"] == "halt"
    assert kill_file.read_text().strip() == "halt"


def test_kill_with_an_unreadable_config_finds_the_default_socket() -> None:
    """Nothing can be read from the file: the default socket ($XDG_RUNTIME_DIR) still works."""
    with short_dir() as home:
        e = EngineProcess(home, xdg=home / "run")
        try:
            garbage = home / "garbage.toml"
            garbage.write_bytes(bytes(range(256)) * 4)
            result = e.cli("kill", "--config", str(garbage), "--reason", "garbage")
            assert result.returncode == 0, (result.stdout, result.stderr)
            assert "warning: config problem" in result.stderr and "not UTF-8" in result.stderr
            assert f"through the control socket {e.socket}" in result.stdout
            assert "$XDG_RUNTIME_DIR" in result.stdout
            assert e.kill_engaged()["reason"] == "garbage"
        finally:
            e.close()


def test_kill_that_finds_no_engine_is_not_a_success(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("XDG_RUNTIME_DIR", None)
    config = tmp_path / "c.toml"
    config.write_bytes("[engine]\ndata_dir = 'nowhere'\n".encode("utf-16"))
    result = cockpit("kill", "--config", str(config), "--reason", "x", env=env, cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert "warning: config problem" in result.stderr
    assert "nowhere" in result.stderr  # it looked where the broken config pointed
