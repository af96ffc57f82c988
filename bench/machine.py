"""The machine a figure was measured on, printed beside it: figures from different machines
compare only through a common probe (this one is ``python -m timeit "sum(range(1000))"``)."""

from __future__ import annotations

import os
import timeit


def probe_us() -> float:
    """Best of five timings of ``sum(range(1000))``, in microseconds, as ``timeit`` prints it."""
    timer = timeit.Timer("sum(range(1000))")
    loops, _ = timer.autorange()
    return min(timer.repeat(5, loops)) / loops * 1e6


def describe(load: float | None = None) -> str:
    """One line: CPUs, load average (``load`` if given: the one at the start) and the probe."""
    load = os.getloadavg()[0] if load is None else load
    return (
        f"{os.cpu_count()} CPUs, load average {load:.2f} at the start, "
        f'python -m timeit "sum(range(1000))" {probe_us():.1f} us'
    )
