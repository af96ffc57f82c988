"""Turn ``[[strategies]]`` config entries into strategy instances, or say exactly what is wrong.

A kind is a built-in id or an import path ``module:Class`` for a user strategy. Every problem in
every entry is collected and raised together as one ConfigError, one line per problem, each naming
its field path (``strategies[0].params.fast: ...``), so a bad config fails at start with all its
errors rather than one at a time.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from engine.config import ConfigError, StrategyConfig, describe_error
from engine.strategies.base import Strategy
from engine.strategies.builtin import DonchianBreakout, EMACross, RSIReversion
from engine.vocabulary import printable

BUILTINS: dict[str, type[Strategy]] = {
    cls.kind: cls for cls in (EMACross, RSIReversion, DonchianBreakout)
}

_HINT = f"use a built-in ({', '.join(BUILTINS)}) or module:Class"


class StrategyLoadError(ConfigError):
    """A kind that names no usable strategy class; ``message`` has no field path yet."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__([message])


def _shown(kind: str) -> str:
    """The kind as an error shows it: quoted, and cut short (a 100 KB name is one line, but not
    one anybody reads)."""
    text = repr(kind)
    return text if len(text) <= 80 else text[:77] + "..."


def _why(exc: BaseException, limit: int, constructor: bool = False) -> str:
    """An exception's message on one line, cut to ``limit`` (its ``str`` may raise too)."""
    try:
        text = printable(str(exc))
    except BaseException:
        text = "(its message could not be read)"
    if not isinstance(exc, Exception) or constructor:  # sys.exit(2) said "(2)"
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_strategy_class(kind: str) -> type[Strategy]:
    """Resolve a built-in id or ``module:Class`` (a concrete Strategy subclass) to its class."""
    if kind in BUILTINS:
        return BUILTINS[kind]
    shown = _shown(kind)
    if ":" not in kind:
        close = difflib.get_close_matches(kind, list(BUILTINS), n=1)
        maybe = f"did you mean {close[0]!r}? " if close else ""
        raise StrategyLoadError(f"unknown strategy {shown}; {maybe}{_HINT}")
    module_name, _, attr_path = kind.partition(":")
    if not module_name or not attr_path:
        raise StrategyLoadError(f"{shown} is not an import path; {_HINT}")
    try:
        obj: Any = importlib.import_module(module_name)
    except KeyboardInterrupt:
        raise  # a person's Ctrl-C during a slow import stops the start
    except BaseException as exc:  # any import-time failure of user code is a config problem
        # (sys.exit() or argparse at import time too: it ended the start with no config error)
        raise StrategyLoadError(f"cannot import {shown} ({_why(exc, 160)}); {_HINT}") from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise StrategyLoadError(
                f"cannot import {shown} ({module_name!r} has no attribute {part!r}); {_HINT}"
            ) from None
    if not (inspect.isclass(obj) and issubclass(obj, Strategy)):
        what = f"class {obj.__name__}" if inspect.isclass(obj) else type(obj).__name__
        raise StrategyLoadError(
            f"{shown} is a {what}, not a Strategy subclass; "
            "subclass engine.strategies.base.Strategy"
        )
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(obj.__abstractmethods__))
        raise StrategyLoadError(f"{shown} is abstract; implement {missing}")
    params_cls = getattr(obj, "Params", None)
    if not (inspect.isclass(params_cls) and issubclass(params_cls, BaseModel)):
        raise StrategyLoadError(f"{shown}.Params must be a pydantic model; subclass StrategyParams")
    if params_cls.model_config.get("extra") != "forbid":
        raise StrategyLoadError(
            f"{shown}.Params must reject unknown keys (extra='forbid'); subclass StrategyParams"
        )
    return obj


def _param_problems(index: int, cls: type[Strategy], exc: ValidationError) -> list[str]:
    fields = ", ".join(sorted(cls.Params.model_fields)) or "no parameters"
    out: list[str] = []
    for raw in exc.errors():
        err: ErrorDetails = {**raw, "loc": ("strategies", index, "params", *raw["loc"])}
        line = describe_error(err)
        if err["type"] == "extra_forbidden" and line.endswith("check its spelling"):
            line += f" ({cls.kind or cls.__name__} takes: {fields})"
        if line not in out:
            out.append(line)
    return out


def build_strategies(configs: Sequence[StrategyConfig]) -> list[Strategy]:
    """One instance per (enabled config, symbol), in order; a ConfigError lists every problem."""
    problems: list[str] = []
    built: list[Strategy] = []
    first_index: dict[str, int] = {}
    for i, cfg in enumerate(configs):
        path = f"strategies[{i}]"
        if cfg.id in first_index:
            first = first_index[cfg.id]
            problems.append(f"{path}.id: {cfg.id!r} is already used by strategies[{first}]")
        else:
            first_index[cfg.id] = i
        if not cfg.enabled:
            continue
        try:
            cls = load_strategy_class(cfg.kind)
        except StrategyLoadError as exc:
            problems.append(f"{path}.kind: {exc.message}")
            continue
        try:
            params = cls.Params.model_validate(cfg.params)
        except ValidationError as exc:
            problems.extend(_param_problems(i, cls, exc))
            continue
        seen: set[str] = set()
        for symbol in cfg.symbols:
            if symbol in seen:
                problems.append(f"{path}.symbols: {symbol!r} is listed twice")
                continue
            seen.add(symbol)
            try:
                built.append(cls(cfg.id, symbol, params, allow_short=cfg.allow_short))
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # a trader's constructor failing: a config problem
                why = _why(exc, 200, constructor=True)
                problems.append(f"{path}: {cls.__name__} could not start for {symbol!r} ({why})")
    if problems:
        raise ConfigError(problems)
    return built
