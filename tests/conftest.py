"""Shared fixtures: a repeatable, as-fast-as-possible version of the default config."""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from engine.config import DEFAULT_CONFIG_PATH, Config, parse_config

REPO = Path(__file__).resolve().parent.parent
# The shared real market data sits beside the repository (../shared/data); COCKPIT_SHARED_DATA
# points elsewhere. Tests that need it fail, never skip, when it is missing: a skip would hide it.
DATA = Path(os.environ.get("COCKPIT_SHARED_DATA", REPO.parent / "shared" / "data"))
BARS_CSV = DATA / "nautilus_trader" / "btc-perp-20211231-20220201_1m.csv"
BOOKTICKER_CSV = DATA / "hftbacktest" / "binance_spot_btcusdt_20240808_bookticker.csv"


def default_dict() -> dict[str, Any]:
    return tomllib.loads(DEFAULT_CONFIG_PATH.read_text())


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def fast_config(
    data_dir: Path, *, auto: bool = True, relaxed: bool = True, **sections: Any
) -> Config:
    """The default config, seeded, at a fixed start time, as fast as possible.

    ``auto`` puts every strategy in auto mode (pipeline tests want orders without a person);
    ``relaxed`` lifts the loss-streak breakers so an hour of random-walk trading keeps trading
    (the breakers have their own tests).
    """
    base = default_dict()
    if auto:
        base["strategies"] = [dict(s, approval="auto") for s in base["strategies"]]
    if relaxed:
        base = merge(
            base,
            {
                "safety": {
                    "breakers": {
                        "consecutive_losses": 1000,
                        "global_consecutive_losses": 1000,
                        "max_unreviewed_fills": 100_000,
                    }
                }
            },
        )
    data = merge(
        base,
        {
            "engine": {"data_dir": str(data_dir)},
            "market": {"simulated": {"speed": "max", "start": "2024-03-01T00:00:00Z"}},
        },
    )
    return parse_config(merge(data, sections))


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def pytest_sessionstart(session: pytest.Session) -> None:
    if not (BARS_CSV.exists() and BOOKTICKER_CSV.exists()):
        raise pytest.UsageError(
            f"real market data not found under {DATA}; clone next to shared/ "
            "or set COCKPIT_SHARED_DATA to the shared/data folder"
        )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
