"""Config validation: every problem is one line naming the field, the value and what is allowed."""

from pathlib import Path
from typing import Any

import pytest

from engine.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config, parse_config


def test_default_config_is_paper_on_the_simulated_market() -> None:
    cfg = load_config()
    assert cfg.engine.mode == "paper"
    assert cfg.market.source == "simulated"
    assert len(cfg.symbols()) >= 3
    assert {s.kind for s in cfg.strategies} == {"ema_cross", "rsi_reversion", "donchian_breakout"}


def _problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_unknown_key_names_the_path() -> None:
    assert _problems({"risk": {"max_order_notionl": 5}}) == [
        "risk.max_order_notionl: unknown key; remove it or check its spelling"
    ]


def test_impossible_value_names_value_and_rule() -> None:
    (line,) = _problems({"risk": {"max_position_fraction": 1.5}})
    assert line.startswith("risk.max_position_fraction: got 1.5;")
    assert "less than or equal to 1" in line


def test_limit_boundary_just_inside_and_just_outside() -> None:
    assert parse_config({"risk": {"max_position_fraction": 1.0}}).risk.max_position_fraction == 1.0
    assert _problems({"risk": {"max_position_fraction": 1.0000001}})


def test_nan_is_rejected() -> None:
    (line,) = _problems({"risk": {"max_order_notional": float("nan")}})
    assert line.startswith("risk.max_order_notional: got nan;")


def test_secret_in_file_is_refused_with_the_fix() -> None:
    (line,) = _problems({"venues": {"b": {"exchange": "binance", "secret": "abc123"}}})
    assert "secret_env" in line and "abc123" not in line


def test_strategy_symbol_must_exist() -> None:
    data = {"strategies": [{"id": "x", "kind": "ema_cross", "symbols": ["DOGE/USDT"]}]}
    (line,) = _problems(data)
    assert "strategies[0].symbols" in line and "DOGE/USDT" in line


def test_list_index_in_path() -> None:
    data = {
        "strategies": [{"id": "x", "kind": "ema_cross", "symbols": ["BTC/USDT"], "timeframe_s": 0}]
    }
    (line,) = _problems(data)
    assert line.startswith("strategies[0].timeframe_s: got 0;")


def test_several_problems_one_line_each() -> None:
    lines = _problems({"risk": {"max_open_positions": 0, "bogus": 1}, "engine": {"mode": "yolo"}})
    assert len(lines) == 3


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[risk\nx=1")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert "not valid TOML" in info.value.problems[0]
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert "no such config file" in info.value.problems[0]


def test_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = parse_config({"venues": {"b": {"exchange": "binance", "api_key_env": "TEST_KEY_VAR"}}})
    assert cfg.venues["b"].credentials() == {}
    monkeypatch.setenv("TEST_KEY_VAR", "k")
    assert cfg.venues["b"].credentials() == {"apiKey": "k"}


def test_default_path_points_at_shipped_file() -> None:
    assert DEFAULT_CONFIG_PATH.exists()
    assert isinstance(Config(), Config)


def test_with_several_venues_every_symbol_belongs_to_exactly_one() -> None:
    """A strategy's orders go to the venue of its symbol: two venues that both take a symbol,
    or none that takes it, is a one-line config error naming the fix (paper ignores venues)."""

    def cfg(mode: str, binance: list[str] | None, okx: list[str] | None) -> Any:
        keys = {"api_key_env": "K", "secret_env": "S", "password_env": "P"}
        venues = {
            "binance": {"exchange": "binance", "symbols": binance, **keys},
            "okx": {"exchange": "okx", "symbols": okx, **keys},
        }
        venues = {k: {kk: vv for kk, vv in v.items() if vv is not None} for k, v in venues.items()}
        return parse_config(
            {
                "engine": {"mode": mode},
                "venues": venues,
                "strategies": [
                    {"id": "a", "kind": "ema_cross", "symbols": ["BTC/USDT", "ETH/USDT"]}
                ],
            }
        )

    with pytest.raises(ConfigError, match="BTC/USDT would trade on venues binance and okx"):
        cfg("testnet", None, None)
    with pytest.raises(ConfigError, match="ETH/USDT is on no venue"):
        cfg("testnet", ["BTC/USDT"], ["SOL/USDT"])
    ok = cfg("testnet", ["BTC/USDT"], ["ETH/USDT"])
    assert ok.venues_for("ETH/USDT") == ["okx"]
    assert cfg("paper", None, None).engine.mode == "paper"
