"""`cockpit config check` and the engine run one validation: what the check accepts, the engine
builds and runs (up to, not including, network access); what it refuses is refused with one line
per problem. Hostile configs come from hypothesis over the config's own fields (inf, nan,
negative, huge, empty and path-traversal strings, wrong types, unknown exchanges and modes), plus
the twelve that used to pass the check and then broke the engine."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import os
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import Config, ConfigError, check_runnable, parse_config
from engine.runtime import Engine
from tests.conftest import default_dict, merge

EXAMPLES = int(os.environ.get("COCKPIT_CONFIG_EXAMPLES", "120"))
QUOTES = 300  # how far each accepted paper config runs through the core

REPLAY_CSV = Path(tempfile.gettempdir()) / f"cockpit-agreement-{os.getuid()}-bars.csv"


def _replay_csv() -> Path:
    rows = ["timestamp,open,high,low,close,volume"]
    for i in range(120):
        price = 40_000.0 + 10 * (i % 7)
        rows.append(
            f"2022-01-01 00:{i // 60:02d}:{i % 60:02d}.000000,{price},{price + 5},"
            f"{price - 5},{price + 1},1000.0"
        )
    REPLAY_CSV.write_text("\n".join(rows) + "\n")
    return REPLAY_CSV


def _header_only_csv() -> Path:
    path = REPLAY_CSV.with_name(REPLAY_CSV.name.replace("-bars", "-header-only"))
    path.write_text("timestamp,open,high,low,close,volume\n\n")
    return path


def bases() -> dict[str, dict[str, Any]]:
    paper = merge(default_dict(), {"market": {"simulated": {"speed": "max"}}})
    testnet = merge(
        default_dict(),
        {
            "engine": {"mode": "testnet"},
            "venues": {
                "b": {
                    "exchange": "binance",
                    "api_key_env": "CK_AGREE_KEY",
                    "secret_env": "CK_AGREE_SECRET",
                    "market_data": "auto",
                }
            },
        },
    )
    replay = merge(
        default_dict(),
        {"market": {"source": "replay", "replay": {"path": str(_replay_csv()), "kind": "bars"}}},
    )
    replay["strategies"] = [dict(s, symbols=["BTC/USDT"]) for s in replay["strategies"]]
    return {"paper": paper, "testnet": testnet, "replay": replay}


def config_check(data: dict[str, Any]) -> Config:
    """What `cockpit config check` runs (cockpit.cli.cmd_config_check)."""
    cfg = parse_config(data)
    check_runnable(cfg)
    return cfg


async def _run_paper(cfg: Config, data_dir: Path) -> None:
    engine = Engine(cfg, data_dir)
    try:
        await engine.start()
        await engine.process(list(itertools.islice(engine.source.events(), QUOTES)))
    finally:
        await engine.stop()


async def _build_venues(cfg: Config) -> None:
    """The venue engine's start up to its first request: brokers and feeds, then closed."""
    from engine.venues.ccxt_market import build_feed
    from engine.venues.factory import build_brokers

    brokers = build_brokers(cfg)
    try:
        for name, broker in brokers.items():
            symbols = [s for s in cfg.symbols() if name in cfg.venues_for(s)]
            feed = build_feed(
                name,
                cfg.venues[name],
                cfg.engine.mode,
                broker.exchange,
                symbols or ["BTC/USDT"],
                stale_after_s=cfg.market.validation.stale_after_s,
                max_spread_bps=cfg.market.validation.max_spread_bps,
            )
            if getattr(feed, "owns_exchange", False):
                await feed.exchange.close()
    finally:
        for broker in brokers.values():
            await broker.exchange.close()


def engine_builds(cfg: Config) -> None:
    """Build (and for paper, run a little of) the engine; raises what the engine raises."""
    env = {
        var: "agreement-test-secret"
        for v in cfg.venues.values()
        for var in (v.api_key_env, v.secret_env, v.password_env)
        if var
    }
    with mock.patch.dict(os.environ, env), tempfile.TemporaryDirectory() as tmp:
        if cfg.engine.mode == "paper":
            asyncio.run(_run_paper(cfg, Path(tmp)))
        else:
            asyncio.run(_build_venues(cfg))


def assert_agree(data: dict[str, Any]) -> None:
    try:
        cfg = config_check(data)
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem and "\n" not in problem, problem
        return
    engine_builds(cfg)  # accepted by the check: the engine must not refuse or crash


# --------------------------------------------------------------------------- the twelve

TWELVE: dict[str, tuple[str, dict[str, Any], str]] = {
    "quote interval inf": (
        "paper",
        {"market": {"simulated": {"quote_interval_ms": float("inf")}}},
        "market.simulated.quote_interval_ms",
    ),
    "quote interval tiny": (
        "paper",
        {"market": {"simulated": {"quote_interval_ms": 1e-300}}},
        "market.simulated.quote_interval_ms",
    ),
    "seed -1": ("paper", {"market": {"simulated": {"seed": -1}}}, "market.simulated.seed"),
    "start 9999": (
        "paper",
        {"market": {"simulated": {"start": "9999-12-31T23:59:59Z"}}},
        "market.simulated.start",
    ),
    "start year 1": (
        "paper",
        {"market": {"simulated": {"start": "0001-01-01T00:00:00"}}},
        "market.simulated.start",
    ),
    "huge history_timeframe_s": (
        "paper",
        {"market": {"simulated": {"history_timeframe_s": 10**12}}},
        "market.simulated.history_timeframe_s",
    ),
    "approval ttl 1e308": (
        "paper",
        {"safety": {"approval": {"ttl_s": 1e308}}},
        "safety.approval.ttl_s",
    ),
    "rolling window 1e308": (
        "paper",
        {"safety": {"breakers": {"rolling_loss": {"window_s": 1e308}}}},
        "safety.breakers.rolling_loss.window_s",
    ),
    "kraken testnet": ("testnet", {"venues": {"b": {"exchange": "kraken"}}}, "no testnet"),
    "exchange valr": ("testnet", {"venues": {"b": {"exchange": "valr"}}}, "'valr' is not"),
    "testnet with no venue": ("testnet", {"venues": None}, "needs at least one [venues"),
    "kill_file empty": ("paper", {"safety": {"kill_switch": {"kill_file": ""}}}, "kill_file"),
    "kill_file ..": ("paper", {"safety": {"kill_switch": {"kill_file": ".."}}}, "kill_file"),
    # A kill would replace the journal with the level (found by review after the fix above).
    "kill_file journal": (
        "paper",
        {"safety": {"kill_switch": {"kill_file": "journal.sqlite"}}},
        "engine's own files",
    ),
    "kill_file wal": (
        "paper",
        {"safety": {"kill_switch": {"kill_file": "journal.sqlite-wal"}}},
        "engine's own files",
    ),
    "kill_file lock": (
        "paper",
        {"safety": {"kill_switch": {"kill_file": "engine.lock"}}},
        "engine's own files",
    ),
    "summary every nanosecond": (
        "paper",
        {"engine": {"summary_interval_s": 1e-9}},
        "engine.summary_interval_s",
    ),
    "data_dir a file": ("paper", {"engine": {"data_dir": "/dev/null"}}, "not a directory"),
    "replay file missing": (
        "replay",
        {"market": {"replay": {"path": "/nonexistent/bars.csv"}}},
        "market.replay.path",
    ),
    "replay file with a header and no rows": (
        "replay",
        {"market": {"replay": {"path": str(_header_only_csv())}}},
        "a header and no rows",
    ),
    "replay path too long for the file system": (
        "replay",
        {"market": {"replay": {"path": "x" * 300}}},
        "File name too long",
    ),
    "websocket impossible": (
        "testnet",
        {"venues": {"b": {"market_data": "websocket", "quote_source": "bidask"}}},
        "",
    ),
}


def _apply(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    data = merge(base, over)
    if over.get("venues", 0) is None:
        del data["venues"]
    return data


@pytest.mark.parametrize("name", sorted(TWELVE))
def test_config_check_refuses_what_the_engine_cannot_run(name: str) -> None:
    base, over, needle = TWELVE[name]
    data = _apply(bases()[base], over)
    if name == "websocket impossible":
        # ccxt.pro binance streams bid/ask: accepted, and the engine builds it.
        assert_agree(data)
        return
    with pytest.raises(ConfigError) as err:
        config_check(data)
    (line,) = err.value.problems
    assert needle in line
    assert_agree(data)


def test_the_shipped_bases_are_accepted_and_build() -> None:
    for data in bases().values():
        engine_builds(config_check(data))


# --------------------------------------------------------------------------- hypothesis


def leaf_paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += leaf_paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += leaf_paths(v, (*prefix, i))
    return out


BASES = bases()
EXTRA_PATHS = [
    ("market", "simulated", key)
    for key in ("seed", "quote_interval_ms", "start", "history_bars", "history_timeframe_s")
] + [
    ("safety", "kill_switch", "kill_file"),
    ("safety", "kill_switch", "poll_s"),
    ("engine", "mode"),
    ("engine", "data_dir"),
    ("engine", "trace_size"),
    ("venues", "b", "exchange"),
    ("venues", "b", "testnet"),
    ("venues", "b", "market_data"),
    ("venues", "b", "quote_source"),
    ("venues", "b", "deadman_s"),
    ("venues", "b", "api_key_env"),
    ("broker", "paper", "seed"),
]
HOSTILE = st.one_of(
    st.sampled_from(
        [
            float("inf"),
            float("-inf"),
            float("nan"),
            -1,
            0,
            1,
            -1.0,
            1e-300,
            1e308,
            10**30,
            2**63,
            "",
            ".",
            "..",
            "../x",
            "/",
            "a\x00b",
            "x" * 300,
            True,
            [],
            {},
            "now",
            "9999-12-31T23:59:59Z",
            "1969-12-31T23:59:59Z",
            "2024-01-01T00:00:00+14:00",
            "paper",
            "testnet",
            "live",
            "binance",
            "okx",
            "bybit",
            "kraken",
            "kucoin",
            "valr",
            "websocket",
            "rest",
            "book",
            "ticker",
            "bidask",
        ]
    ),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)


# Values of the leaf's own type at its edges: they pass the type check, so they reach the
# range checks and, when those miss one, the engine.
SAME_TYPE = {
    float: st.one_of(
        st.floats(min_value=1e-12, max_value=1e12),
        st.sampled_from([1e-9, 1e-6, 0.001, 0.5, 1.0, 1e6, 1e9, 3.1e7, 31_536_000.0]),
    ),
    int: st.one_of(
        st.integers(min_value=0, max_value=10**12),
        st.sampled_from([1, 2, 100, 100_000, 86_400, 2**31, 2**63 - 1]),
    ),
    bool: st.booleans(),
}


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        try:
            doc = doc[part]
        except (KeyError, IndexError, TypeError):
            return None
    return doc


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = doc
    for part in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(part, {})
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return
    if isinstance(node, dict) or (isinstance(node, list) and path[-1] < len(node)):
        node[path[-1]] = value


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_config_check_and_the_engine_agree_on_hostile_configs(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(BASES)), label="base")
    doc = copy.deepcopy(BASES[name])
    paths = leaf_paths(doc) + EXTRA_PATHS
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        path = data.draw(st.sampled_from(paths), label="path")
        same = SAME_TYPE.get(type(_get(doc, path)))
        values = st.one_of(same, same, HOSTILE) if same is not None else HOSTILE
        _set(doc, path, data.draw(values, label="value"))
    assert_agree(doc)


# --------------------------------------------------------------------------- the CLI


def to_toml(doc: dict[str, Any], prefix: str = "") -> str:
    """Just enough TOML for these documents (tables, arrays of tables, scalars, lists)."""

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, float) and v != v:
            return "nan"
        if isinstance(v, float) and v in (float("inf"), float("-inf")):
            return "inf" if v > 0 else "-inf"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {scalar(x)}" for k, x in v.items()) + "}"
        raise TypeError(v)

    lines, tables = [], []
    for key, value in doc.items():
        name = f"{prefix}.{json.dumps(key)}" if prefix else json.dumps(key)
        if isinstance(value, dict) and value:
            tables.append(f"\n[{name}]\n" + to_toml(value, name))
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            tables += [f"\n[[{name}]]\n" + to_toml(x, name) for x in value]
        else:
            lines.append(f"{json.dumps(key)} = {scalar(value)}")
    return "\n".join(lines) + "".join(tables)


@pytest.mark.parametrize("name", sorted(n for n in TWELVE if n != "websocket impossible"))
def test_the_engine_command_refuses_them_with_one_config_line(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cockpit engine` used to end these in "unexpected error" (or a crash); now each is the
    same one-line config error as `cockpit config check`, exit 2."""
    from cockpit.cli import main

    base, over, needle = TWELVE[name]
    config = tmp_path / "c.toml"
    config.write_text(to_toml(_apply(bases()[base], over)))
    outputs = []
    for argv in (["config", "check"], ["engine", "--for", "1", "--data-dir", str(tmp_path)]):
        code = main([*argv, "--config", str(config)])
        out, err = capsys.readouterr()
        assert code == 2 and out == "", (argv, out, err)
        (line,) = err.splitlines()
        assert line.startswith("config error: ") and needle in line, line
        outputs.append(line)
    assert outputs[0] == outputs[1]
