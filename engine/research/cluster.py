"""Where research tasks run: in this process, on a Dask ``LocalCluster`` or on a cluster.

``run_tasks(func, shared, items, ...)`` calls ``func(shared, item)`` for every item and returns
the results in the items' order, whatever order they finished in, so a sweep's table is the same
serial (``workers=0``), on a ``LocalCluster`` (the default: one single-threaded worker process
per core) and on an existing scheduler (``scheduler="tcp://host:8786"``).

Data goes to each worker once: ``shared`` (the packed market data and the base config) is
scattered with ``broadcast=True`` and every task refers to it by its future, so the scheduler
hands a worker its copy once, not once per task (a worker that joins later fetches it once from a
peer). A worker that dies mid-sweep takes its running task with it; the scheduler runs that task
again on another worker (Dask's ``allowed-failures``, 3 by default, guards against a task that
kills every worker it touches). Progress goes to ``progress(done, total)``; ``cancel`` (anything
with ``is_set()``) or a KeyboardInterrupt cancels the tasks not yet finished, then the client
and any ``LocalCluster`` this call started are closed (its worker processes end with it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from engine.backtest.errors import BacktestError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# How often the driver wakes to check ``cancel`` while it waits for results.
POLL_S = 0.1
CONNECT_TIMEOUT_S = 10.0


class Cancelled(Exception):
    """The run was cancelled (``cancel`` set or Ctrl-C) before every task finished."""


def check_scheduler_address(address: str) -> str:
    """The address of a Dask scheduler as ``Client`` takes it, or ValueError with one line saying
    what is wrong: distributed's own parser fails on a typo with a bare ValueError
    ("missing port number", "not enough values to unpack") that names neither option nor fix."""
    from distributed.comm.addressing import get_address_host_port

    example = "give the scheduler's tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786"
    if not address.strip():
        raise ValueError(f"an empty scheduler address; {example}")
    try:
        _, port = get_address_host_port(address.strip())
    except ValueError as exc:
        raise ValueError(f"{address!r} is not a scheduler address ({exc}); {example}") from None
    if not 0 < port < 65536:
        raise ValueError(f"{address!r}: port {port} is not 1..65535; {example}")
    return address.strip()


def usable_cpus() -> int:
    """The cores this process may run on: a LocalCluster's default, one worker per core.
    ``os.cpu_count()`` counts the machine's, so under ``taskset`` or a container's cpuset (2 of
    a host's 64) the default started a worker per host core, each with its copy of the data,
    all on the few cores allowed."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity on this system (macOS)
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ClusterOptions:
    """``scheduler``: an existing scheduler's address (``tcp://host:8786``); else a
    ``LocalCluster`` of ``workers`` processes (None: one per core), or this process alone
    (``workers=0``)."""

    scheduler: str | None = None
    workers: int | None = None

    @property
    def serial(self) -> bool:
        return self.scheduler is None and self.workers == 0

    def describe(self) -> str:
        if self.scheduler:
            return f"Dask scheduler {self.scheduler}"
        if self.workers == 0:
            return "serial (this process)"
        n = self.workers or usable_cpus()
        return f"Dask LocalCluster, {n} worker process{'es' if n != 1 else ''}"


@dataclass(frozen=True)
class Progress:
    """Where a run is: ``done`` of ``total`` tasks after ``elapsed_s``; rate and ETA."""

    done: int
    total: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        """Tasks finished per second so far (0 before the first)."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 and self.done else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (None before the first task finished)."""
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 else None


ProgressFn = Callable[[Progress], None]


def run_tasks(
    func: Callable[[Any, T], R],
    shared: Any,
    items: Sequence[T],
    *,
    cluster: ClusterOptions,
    progress: ProgressFn | None = None,
    cancel: Any = None,
) -> list[R]:
    """``[func(shared, item) for item in items]``, on the cluster ``cluster`` names."""
    with task_runner(cluster) as run:
        return run(func, shared, items, progress=progress, cancel=cancel)


@contextlib.contextmanager
def task_runner(cluster: ClusterOptions) -> Iterator[Callable[..., list[Any]]]:
    """A :func:`run_tasks` that keeps one client (one LocalCluster) for several rounds of
    tasks: a walk-forward's training runs, then its test runs (a LocalCluster each cost its
    start-up twice). The client opens at the first round that has tasks."""
    if cluster.serial:
        yield lambda func, shared, items, **kw: _round(None, func, shared, items, **kw)
        return
    with contextlib.ExitStack() as stack:
        opened: list[Any] = []

        def run(func: Any, shared: Any, items: Sequence[Any], **kw: Any) -> list[Any]:
            if items and not opened:
                opened.append(stack.enter_context(open_client(cluster)))
            return _round(opened[0] if opened else None, func, shared, items, **kw)

        yield run


def _round(
    client: Any,
    func: Callable[[Any, T], R],
    shared: Any,
    items: Sequence[T],
    *,
    progress: ProgressFn | None = None,
    cancel: Any = None,
) -> list[R]:
    """One round of tasks: in this process (``client`` None), or on ``client``."""
    t0 = time.perf_counter()
    total = len(items)

    def report(done: int) -> None:
        if progress is not None:
            progress(Progress(done, total, time.perf_counter() - t0))

    report(0)
    if client is None:
        out: list[R] = []
        for item in items:
            if cancel is not None and cancel.is_set():
                raise Cancelled
            out.append(func(shared, item))
            report(len(out))
        return out
    return _distributed(client, func, shared, items, report, cancel)


def dask_setup(worker: Any) -> None:
    """Run by Dask in each LocalCluster worker process as it starts (the ``preload`` hook).

    Ctrl-C at a terminal reaches the whole process group, the workers too: each printed a
    KeyboardInterrupt traceback under "sweep cancelled". The sweep's own process cancels the
    tasks and closes the workers, so a worker ignores the interrupt."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def open_client(cluster: ClusterOptions) -> Any:
    """A ``distributed.Client`` for ``cluster`` (starting a ``LocalCluster`` when no scheduler
    is named), closed with everything it started on the way out, however it is left."""
    from distributed import Client, LocalCluster
    from distributed.deploy.spec import SpecCluster

    _quiet_distributed_leftovers()
    local = None
    before = set(SpecCluster._instances)
    try:
        if cluster.scheduler:
            try:
                check_scheduler_address(cluster.scheduler)
            except ValueError as exc:
                raise BacktestError(str(exc)) from None
            try:
                client = Client(cluster.scheduler, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                raise BacktestError(
                    f"cannot reach the Dask scheduler at {cluster.scheduler} ({exc}); start one "
                    "with `dask scheduler` and its workers with `dask worker ADDRESS` "
                    "(docs/research.md)"
                ) from None
        else:
            n = cluster.workers or usable_cpus()
            _resource_tracker_ready()
            local = LocalCluster(
                n_workers=n,
                threads_per_worker=1,  # the core is pure Python: one task per process
                processes=True,
                dashboard_address="127.0.0.1:0",  # a free loopback port: never a clash on 8787
                # Workers share our stderr: after Ctrl-C their heartbeats to the closing
                # scheduler fail with an ERROR and a traceback. A task's own failure comes back
                # through its future, not the log.
                silence_logs=logging.CRITICAL,
                # Each worker runs this module's dask_setup as it starts: Ctrl-C is ours alone.
                preload=[__name__],
            )
            client = Client(local)
    except BaseException:
        # Ctrl-C while the LocalCluster starts leaves it half made (a nanny "failed to start"),
        # never returned to us but on distributed's exit hook, which then printed "Exception
        # ignored in atexit callback" and a traceback after "sweep cancelled".
        for made in {local} | (set(SpecCluster._instances) - before):
            if made is not None:
                close_local_cluster(made)
        raise
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()
        if local is not None:
            close_local_cluster(local)


def _resource_tracker_ready() -> None:
    """Start multiprocessing's resource tracker (the first LocalCluster's nanny needs it) with a
    stderr it can hand on.

    The tracker passes its child this process's ``sys.stderr.fileno()``. In the cockpit's sweep
    screen (key ``S``) ``sys.stderr`` is Textual's print capture, whose ``fileno()`` is -1: the
    spawn failed with "bad value(s) in fds_to_keep" and every sweep ended "Nanny failed to
    start". With such a stream the tracker starts writing to /dev/null instead (its only output
    is a warning about leaked semaphores, which must not land on the cockpit's screen)."""
    try:
        usable = sys.stderr is None or sys.stderr.fileno() >= 0
    except Exception:  # no descriptor at all: the tracker leaves it out by itself
        usable = True
    if usable:
        return
    from multiprocessing import resource_tracker

    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
        resource_tracker.ensure_running()


class _DistributedLeftovers(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" for distributed's own tasks: a
    worker's connection handler still running while a cancelled LocalCluster closes fails
    (KeyError on the closed worker's address), and the task, collected later, reached the
    terminal as a traceback after "sweep cancelled". Anything else asyncio logs passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not (text.startswith("Task exception was never retrieved") and _ours(record))


def _ours(record: logging.LogRecord) -> bool:
    """Whether the task or its exception's traceback is distributed's (a task may wrap
    distributed's coroutine in asyncio's wait_for, so the traceback is read too)."""
    where = f"{os.sep}distributed{os.sep}"
    try:
        if where in record.getMessage():
            return True
    except Exception:
        return False
    tb = record.exc_info[2] if record.exc_info else None
    while tb is not None:
        if where in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


_LEFTOVERS = _DistributedLeftovers()


def _quiet_distributed_leftovers() -> None:
    asyncio_log = logging.getLogger("asyncio")
    if _LEFTOVERS not in asyncio_log.filters:
        asyncio_log.addFilter(_LEFTOVERS)


def close_local_cluster(local: Any) -> None:
    """Close a ``LocalCluster`` this run started, quietly, whatever its workers are doing.

    distributed's own close can trip over a worker still closing gracefully (an assertion in
    ``SpecCluster._close``, seen after Ctrl-C on a loaded machine): the worker processes end
    anyway, but the cluster stays "closing", so at exit distributed's hook waited 10 s on it,
    and the failure reached the terminal as a traceback after "sweep cancelled". The close runs
    with distributed's loggers quiet, and a cluster that did not close is taken off that hook
    (its worker processes are daemonic: they end with this process)."""
    from distributed.deploy.spec import SpecCluster

    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL + 1)
    try:
        local.close()
    except Exception as exc:
        log.debug("the LocalCluster did not close cleanly: %r", exc)
    finally:
        quiet.setLevel(level)
        SpecCluster._instances.discard(local)


def _distributed(
    client: Any,
    func: Callable[[Any, T], R],
    shared: Any,
    items: Sequence[T],
    report: Callable[[int], None],
    cancel: Any,
) -> list[R]:
    from distributed import as_completed

    run_id = uuid.uuid4().hex[:12]
    futures: list[Any] = []
    try:
        [shared_f] = client.scatter([shared], broadcast=True, hash=False)
        futures = [
            client.submit(func, shared_f, item, key=f"research-{run_id}-{i}", pure=False)
            for i, item in enumerate(items)
        ]
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(items)
        # as_completed hands finished futures to this thread through a lock; polled so that a
        # cancel is seen within POLL_S. (distributed.wait with a timeout, called again and
        # again, raced its own event loop: "deque mutated during iteration" on a long sweep.)
        finished_in = as_completed(futures)
        done = 0
        while done < len(futures):
            if cancel is not None and cancel.is_set():
                raise Cancelled
            finished = finished_in.next_batch(block=False)
            if not finished:
                time.sleep(POLL_S)
                continue
            for f in finished:
                results[index[f.key]] = f.result()  # raises the task's own exception
                done += 1
            report(done)
        return results
    except BaseException:
        if futures:
            with contextlib.suppress(Exception):
                client.cancel(futures)
        raise
