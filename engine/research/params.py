"""Parameter spaces for sweeps: grids from comma lists, ranges sampled at random.

``fast=5,10,20`` is a list (every value in the grid), ``fast=5:50:5`` a range with a step (5,
10, ..., 50: both ends included), ``fast=5:50`` a range without a step, which only ``--random N``
can use (it draws uniformly: whole numbers when both ends are whole, else real numbers). A
single value (``fast=10``) is a list of one. Values are read as JSON when they are JSON (``10`` is
an int, ``0.5`` a float, ``true`` a bool), so a strategy's strict integer parameters accept them.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from engine.backtest.errors import BacktestError

# A sweep of more runs than this is refused before anything runs (a typo such as 1:100000:1):
# 10,000 backtests of a month of minute bars are hours on a few cores; a grid of 100,000 spent
# a silent minute building configs, then ran for the rest of the day. Sample with --random N.
MAX_COMBINATIONS = 10_000
# The ends of a range (no strategy parameter comes near it; numpy draws within it exactly).
MAX_RANGE_END = 1e15


@dataclass(frozen=True)
class ParamSpec:
    """One swept parameter: a list of values, or a range (``lo``..``hi``, optional ``step``)."""

    name: str
    values: tuple[Any, ...] = ()
    lo: float | None = None
    hi: float | None = None
    step: float | None = None
    whole: bool = False  # a range of whole numbers

    @property
    def is_range(self) -> bool:
        return self.lo is not None

    def grid(self) -> list[Any]:
        """Every value of a list, or of a range with a step (both ends included)."""
        if not self.is_range:
            return list(self.values)
        assert self.lo is not None and self.hi is not None
        if self.step is None:
            raise BacktestError(
                f"--param {self.name}={_num(self.lo)}:{_num(self.hi)} is a range without a "
                f"step: give one ({self.name}={_num(self.lo)}:{_num(self.hi)}:STEP) or sample "
                "it with --random N"
            )
        count = math.floor((self.hi - self.lo) / self.step + 1e-9) + 1
        if count > MAX_COMBINATIONS:
            raise BacktestError(
                f"--param {self.name}: {count:,} values; at most {MAX_COMBINATIONS:,}"
            )
        out = [self.lo + i * self.step for i in range(count)]
        return [round(v) for v in out] if self.whole else [round(v, 12) for v in out]

    @cached_property
    def _steps(self) -> list[Any]:
        """The stepped range's values, built once: a draw rebuilt all of them, so drawing a
        9,999-value range to exhaustion took minutes."""
        return self.grid()

    def size(self) -> float:
        """How many distinct values a draw can give (a range of reals: infinitely many)."""
        if not self.is_range:
            return len({json.dumps(v, sort_keys=True) for v in self.values})
        assert self.lo is not None and self.hi is not None
        if self.step is not None:
            return len(self._steps)
        if self.whole:
            return int(self.hi) - int(self.lo) + 1
        return math.inf

    def sample(self, rng: np.random.Generator) -> Any:
        """One value drawn uniformly (a list: one of its values; a range: within it)."""
        if not self.is_range:
            return self.values[int(rng.integers(len(self.values)))]
        assert self.lo is not None and self.hi is not None
        if self.step is not None:
            choices = self._steps
            return choices[int(rng.integers(len(choices)))]
        if self.whole:
            return int(rng.integers(int(self.lo), int(self.hi) + 1))
        return float(rng.uniform(self.lo, self.hi))


def _num(x: float) -> str:
    return f"{x:g}"


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _number(name: str, text: str) -> float:
    value = _value(text.strip())
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BacktestError(f"--param {name}: {text.strip()!r} is not a number")
    return float(value)


def _non_finite(value: Any) -> bool:
    """Whether a value is, or holds, NaN or an infinity (JSON reads NaN and Infinity)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list | tuple):
        return any(_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    return False


def _checked(name: str, spec: ParamSpec) -> ParamSpec:
    """A list with NaN or an infinity in it is refused: the combinations around it ran, then
    the sweep's JSON (which never holds NaN) failed on the skipped one: exit 1, no output."""
    for v in spec.values:
        if _non_finite(v):
            raise BacktestError(
                f"--param {name}: {v!r} is not a finite number; give numbers, words or JSON"
            )
    return spec


def parse_param(name: str, raw: Any) -> ParamSpec:
    """A ``--param KEY=VALUES`` as given (the value already read as JSON when it was JSON)."""
    if not isinstance(raw, str):
        if isinstance(raw, list):
            if not raw:
                raise BacktestError(f"--param {name}: an empty list")
            return _checked(name, ParamSpec(name, tuple(raw)))
        return _checked(name, ParamSpec(name, (raw,)))
    text = raw.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise BacktestError(
                f"--param {name}={text}: a range is LO:HI or LO:HI:STEP (e.g. {name}=5:50:5)"
            )
        lo, hi = _number(name, parts[0]), _number(name, parts[1])
        step = _number(name, parts[2]) if len(parts) == 3 else None
        if hi < lo:
            raise BacktestError(f"--param {name}={text}: the range ends below its start")
        if max(abs(lo), abs(hi)) > MAX_RANGE_END:
            # numpy draws 64-bit integers and finite spans: 1:1e20 or -1e308:1e308 ended in
            # 'unexpected error: OverflowError' (exit 1) rather than saying what was wrong.
            raise BacktestError(f"--param {name}={text}: a range's ends must lie within ±1e15")
        if step is not None and step <= 0:
            raise BacktestError(f"--param {name}={text}: the step must be > 0")
        if step is not None and not (hi - lo) / step + 1e-9 < MAX_COMBINATIONS:  # inf too
            raise BacktestError(
                f"--param {name}={text}: more than {MAX_COMBINATIONS:,} values; "
                "a larger step, or sample the range with --random N"
            )
        whole = all(
            isinstance(_value(p.strip()), int) and not isinstance(_value(p.strip()), bool)
            for p in parts
        )
        return ParamSpec(name, lo=lo, hi=hi, step=step, whole=whole)
    values = tuple(_value(v.strip()) for v in text.split(","))
    if any(v == "" for v in values):
        raise BacktestError(f"--param {name}={text}: an empty value in the list")
    return _checked(name, ParamSpec(name, values))


def parse_params(pairs: list[tuple[str, Any]]) -> list[ParamSpec]:
    """Every ``--param``, in the order given; a name twice is refused."""
    specs: dict[str, ParamSpec] = {}
    for name, raw in pairs:
        if name in specs:
            raise BacktestError(f"--param {name} given twice; put every value in one list")
        specs[name] = parse_param(name, raw)
    return list(specs.values())


def grid_combinations(specs: list[ParamSpec]) -> list[dict[str, Any]]:
    """The full grid, the last parameter varying fastest."""
    grids = [s.grid() for s in specs]
    total = math.prod(len(g) for g in grids)
    if total > MAX_COMBINATIONS:
        raise BacktestError(
            f"the grid has {total:,} combinations, more than {MAX_COMBINATIONS:,}; "
            "narrow it or sample it with --random N"
        )
    names = [s.name for s in specs]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grids)]


def random_combinations(specs: list[ParamSpec], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` distinct combinations drawn with a seeded generator (fewer when the space holds
    fewer): the same seed gives the same combinations in the same order."""
    if n < 1:
        raise BacktestError(f"--random must be at least 1, got {n}")
    if n > MAX_COMBINATIONS:
        raise BacktestError(f"--random {n:,}: at most {MAX_COMBINATIONS:,}")
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    # A space smaller than n is drawn until every point is out, not for 50 x n draws more.
    wanted = min(n, math.prod(s.size() for s in specs))
    if wanted < 1:
        return out
    for _ in range(n * 50):
        combo = {s.name: s.sample(rng) for s in specs}
        key = json.dumps(combo, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        out.append(combo)
        if len(out) == wanted:
            break
    return out
