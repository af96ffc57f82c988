"""review-docs: the promises of docs/operations.md, docs/research.md and docs/marketdata.md,
read as a trader or an operator would and run as written (offline; engines, forwarded sockets
and Dask clusters on this machine only). Each test pins a hole found there, failing before its
fix.

Attacks that held (no test added):
- research.md's commands verbatim on the shipped BTC bars: the whole-config backtest of
  config/portfolio-btc.toml (text and `--approvals reject --json`), both sweeps (a grid on the
  default LocalCluster; `--random 16 --seed 7 --sort pnl --json`: 16 drawn, fast >= slow skipped
  with its reason), a walk-forward of 10d/5d windows, and 30d/7d on 31 days refused in one line.
- A sweep on an existing cluster as the doc starts one (`dask scheduler --host 127.0.0.1
  --no-dashboard`, `dask worker ... --nworkers 1 --nthreads 1`): same rows as the LocalCluster;
  a worker process killed -9 mid-sweep: its task ran again, every row equal, exit 0.
- Ctrl-C (SIGINT) of a sweep on a LocalCluster: "sweep cancelled", exit 130, no worker left.
- `cockpit data download` offline: one line naming what failed after the retries, exit 1,
  nothing written.
- A forwarded socket (a relay standing in for `ssh -N -L`): `cockpit status --socket` through
  it, also at /tmp/ck.sock; the tunnel down (a stale socket file) or up with nothing behind it:
  exit 3, one line; `cockpit attach` through it shows DISCONNECTED when the tunnel drops and
  reconnects by itself when it is back; `attach --read-only` without a terminal: exit 2.
- A sweep on a cluster reached only through a forwarded scheduler port (the client in its own
  network namespace, a bridge as the tunnel): the data is scattered through the scheduler,
  every row as on the LocalCluster.
- A sweep of one combination against `cockpit backtest` of it with a dozen options (cash, fee,
  fill, slippage, spread, fraction, warm-up, shorts, no limits, start/end, exits): equal.
- Whole-config backtests: --qty/--fraction/--symbol/--param refused in one line, a strategy
  timeframe or --timeframe the bars lack refused, --approvals reject with --strategy refused,
  a config of one approve-mode strategy run whole; a walk-forward of more than 10,000 runs and
  --random 10001 refused before anything runs; a --train that is not whole bars refused.
- systemd (a datagram socket as NOTIFY_SOCKET): READY=1 after start, WATCHDOG=1 every quarter
  WatchdogSec, STATUS= follows a kill, STOPPING=1 at SIGTERM; the heartbeat's URL token never
  in STATUS=, stderr or the data dir.
- Backups: `cp -a` of a running engine's data dir (its socket files in it too) verifies and
  starts; an edited row stops the start naming row 6; a -wal without its journal is named;
  `cockpit verify` on a read-only bind mount reads it, and says so when the -shm is missing.
- The KILL file: `FLATTEN # comment` flattens, a release is refused while it exists (override
  too), a rewrite to a higher level escalates and to a lower one does not.
- `--metrics-host` at 10.0.0.5, an unresolvable name or `[::1]`: exit 2 in one line; a port in
  use: exit 2; `cockpit alerts test` on the doc's example: one line per destination, exit 1.
- A command hook for kill_engaged hears a kill engaged just before SIGTERM.
- `cockpit data list --gaps` on a store with a gap and a month file changed or deleted by hand
  (warned); a backtest of its folder with a hidden and a temporary file beside the months.
- Replay of a recording through `[market.replay] kind = "recording"` as the doc shows it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cockpit.cli import main as cli_main
from engine.heartbeat import attach_watch
from engine.runtime import Engine
from tests.conftest import REPO
from tests.test_control_support import WAIT, short_dir
from tests.test_heartbeat import NotifySocket, PingServer, paced, running, until


class Forwarder:
    """The local end of `ssh -N -L local.sock:remote.sock`: it listens at ``path`` and, the
    engine behind it being down (or the tunnel's far end unreachable), accepts each connection
    and closes it, as sshd's refused channel does. It is this process, so SO_PEERCRED names this
    pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture
def forwarded() -> Iterator[Path]:
    with short_dir() as d:
        os.chmod(d, 0o700)
        fwd = Forwarder(d / "ck.sock")
        try:
            yield fwd.path
        finally:
            fwd.close()


def test_a_kill_through_a_dead_tunnel_never_signals_the_forwarder(
    forwarded: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """operations.md: the kill falls back to SIGUSR1 "only to a pid that holds the data
    directory's lock", and "an engine behind a forwarded socket has no fallback from here". The
    fallback trusted the pid SO_PEERCRED gave for the socket: through `ssh -L` that is the local
    ssh process (or socat, a relay), not the engine. One that catches SIGUSR1 was signalled and
    the kill said "fell back: sent SIGUSR1 to pid N. The engine engages the kill switch", exit
    0, while the engine on the server never heard of it. Now the listener is signalled only when
    it is the engine that wrote ``<socket>.pid`` (or holds the data directory's lock): exit 3."""
    caught: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda signum, _frame: caught.append(signum))
    monkeypatch.chdir(tmp_path)  # no ./data here: nothing to fall back on
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    try:
        rc = cli_main(["kill", "--socket", str(forwarded), "--reason", "tunnel down"])
    finally:
        signal.signal(signal.SIGUSR1, old)
    out = capsys.readouterr()
    assert caught == [], out
    assert rc == 3, out
    assert "Traceback" not in out.err and len(out.err.strip().splitlines()) == 1, out
    assert f"pid {os.getpid()} listens at {forwarded}" in out.err
    assert "not signalled" in out.err
    assert not (tmp_path / "data").exists()


def test_the_default_local_cluster_has_a_worker_per_core_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """research.md: "default: a LocalCluster with one single-threaded worker process per core".
    The default counted the machine's cores (os.cpu_count()), not the ones the sweep may run on:
    under `taskset -c 0`, or in a container given 2 of a host's 64 cores, it started a worker
    process per host core, each holding its copy of the data, all on the cores allowed. Now it
    is the process's CPU affinity; --workers N still wins."""
    import distributed

    from engine.research import cluster

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    assert cluster.ClusterOptions().describe() == "Dask LocalCluster, 2 worker processes"
    assert cluster.ClusterOptions(workers=3).describe() == "Dask LocalCluster, 3 worker processes"

    asked: list[int] = []

    class Stop(Exception):
        pass

    def local_cluster(*, n_workers: int, **_kw: object) -> None:
        asked.append(n_workers)
        raise Stop

    monkeypatch.setattr(distributed, "LocalCluster", local_cluster)
    with pytest.raises(Stop), cluster.open_client(cluster.ClusterOptions()):
        pass
    assert asked == [2]


async def test_a_kill_switch_with_stop_on_kill_never_makes_systemd_restart_the_engine(
    data_dir: Path,
) -> None:
    """operations.md: `stop_on_kill = true` "also stop[s]" the pings while the kill switch is
    engaged, so the monitor pages; the kill switch is latched and "survives restart". The
    systemd notifier took the same rule: a kill switch withheld WATCHDOG=1, systemd
    (WatchdogSec, Restart=on-failure) stopped and restarted the engine, which came back with the
    kill still engaged and was restarted again, every WatchdogSec, for as long as the kill held:
    nothing watching the market, and no engine-side protective exit, during each restart. Now
    the pings stop and the watchdog beats on."""
    with short_dir() as sd, PingServer() as monitor:
        systemd = NotifySocket(str(sd / "notify"))
        env = {"NOTIFY_SOCKET": str(sd / "notify"), "WATCHDOG_USEC": "200000"}
        cfg = paced(data_dir, url=monitor.url, interval_s=0.2, timeout_s=0.2, stop_on_kill=True)
        engine = Engine(cfg, data_dir)
        attach_watch(engine, environ=env)
        async with running(engine):
            await until(lambda: systemd.fields().count("WATCHDOG=1") >= 2, "watchdog beats")
            reply = await engine.command("kill", {"level": "halt", "reason": "test"})
            assert reply["ok"], reply
            # The pings stop (test_heartbeat pins that no more go out): the monitor pages.
            await until(lambda: view_state(engine) == "paused", "the pings paused")
            beats = systemd.fields().count("WATCHDOG=1")
            await until(
                lambda: systemd.fields().count("WATCHDOG=1") >= beats + 4, "beats while killed"
            )
            assert view_state(engine) == "paused"
            statuses = [f for f in systemd.fields() if f.startswith("STATUS=HALTED")]
        systemd.sock.close()
    assert statuses and "not healthy" not in statuses[-1]


def view_state(engine: Engine) -> str:
    return str(engine.snapshot(trace=0)["counters"]["heartbeat"]["state"])


def test_sigusr2_does_nothing_from_the_moment_sigusr1_is_the_kill_switch() -> None:
    """operations.md: SIGUSR2 "sent from outside ... does nothing, from the moment `cockpit
    engine` starts". The package's first line made SIGUSR1 the kill switch, but SIGUSR2 was
    taken over only once cockpit.cli had loaded, a tenth of a second later: a SIGUSR2 then
    terminated the engine (a service restarted it). Now both are taken on the same line."""
    probe = (
        "import signal, sys\n"
        "sys.argv = ['cockpit', '--config', 'x.toml', 'engine']\n"
        "import cockpit\n"
        "print(signal.getsignal(signal.SIGUSR1) is not signal.SIG_DFL,"
        " signal.getsignal(signal.SIGUSR2) is not signal.SIG_DFL)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]


def test_a_script_without_xdg_runtime_dir_finds_the_user_units_engine_by_its_data_dir(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """operations.md: one-shot commands are "for scripts, cron and quick checks", and every
    client "finds the engine the same way: give it ... the same --data-dir". The engine of the
    systemd user unit listens at /run/user/UID/cockpit/default.sock ($XDG_RUNTIME_DIR), which
    cron does not set: `cockpit status --data-dir DIR` looked only at DIR/cockpit.sock and said
    "engine not reachable" (exit 3) about a running engine, and `cockpit kill --data-dir DIR`
    could only fall back to SIGUSR1. Now a client without the variable also looks in the
    runtime directory logind makes for its user, and takes the socket there when the engine
    names that data directory (another data dir's engine is never reached)."""
    from engine import control

    with short_dir() as d:
        data, other = d / "data", d / "other"
        runtime = d / "run" / str(os.getuid())
        for path in (data, other, runtime):
            path.mkdir(parents=True, mode=0o700)
        env = dict(os.environ, PYTHONPATH=str(REPO), XDG_RUNTIME_DIR=str(runtime))
        engine = subprocess.Popen(
            [sys.executable, "-m", "cockpit", "engine", "--data-dir", str(data), "--for", "120"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            sock = runtime / "cockpit" / "default.sock"
            deadline = time.monotonic() + WAIT
            while not (sock.exists() and (runtime / "cockpit" / "default.sock.json").exists()):
                assert engine.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)  # cron
            monkeypatch.setattr(control, "LOGIND_RUNTIME_ROOT", str(d / "run"), raising=False)
            capsys.readouterr()
            assert cli_main(["status", "--data-dir", str(other)]) == 3  # not this one's
            assert cli_main(["status", "--data-dir", str(data), "--json"]) == 0
            assert '"kill_switch"' in capsys.readouterr().out
            assert cli_main(["kill", "--data-dir", str(data), "--reason", "from cron"]) == 0
            assert f"through the control socket {sock}" in capsys.readouterr().out
        finally:
            engine.terminate()
            engine.wait(timeout=WAIT)
