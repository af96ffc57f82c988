"""Helpers the distributed research tests ship to Dask workers (importable there: the workers
run with this repository on PYTHONPATH)."""

from __future__ import annotations

import time
from typing import Any

_LOADS = 0


class CountedShared:
    """A payload that counts how often this process unpickled it (a copy of the data)."""

    def __init__(self, payload: Any) -> None:
        self.payload = payload

    def __setstate__(self, state: dict[str, Any]) -> None:
        global _LOADS
        _LOADS += 1
        self.__dict__.update(state)


def loads() -> int:
    """How many copies of a ``CountedShared`` this process has unpickled."""
    return _LOADS


def add_slowly(shared: CountedShared, x: int) -> int:
    time.sleep(0.05)
    return int(shared.payload[0]) + x
