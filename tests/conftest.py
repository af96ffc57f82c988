"""Shared fixtures: a repeatable, as-fast-as-possible version of the default config."""

from __future__ import annotations

import atexit
import copy
import hashlib
import lzma
import os
import shutil
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest

from engine.config import DEFAULT_CONFIG_PATH, Config, parse_config

REPO = Path(__file__).resolve().parent.parent
# `cockpit backtest` keeps parsed data in a cache (engine/marketdata/cache.py): the tests' own
# go to a folder of this session (children inherit it), never the user's ~/.cache, and each
# session starts cold so the parse path is what the tests see first. Made once, by the process
# that starts the session (xdist's workers inherit it and make none of their own to leak).
if "COCKPIT_CACHE_DIR" not in os.environ:
    _CACHE_DIR = tempfile.mkdtemp(prefix="cockpit-test-cache-")
    os.environ["COCKPIT_CACHE_DIR"] = _CACHE_DIR
    atexit.register(shutil.rmtree, _CACHE_DIR, True)
# The real market data the tests need ships with the repository, xz-compressed, in tests/data
# (sources and licenses in tests/data/NOTICE.md), so a bare clone passes. It is unpacked once
# into a cache folder keyed by content hash; tests read the plain files.
PACKED = REPO / "tests" / "data"
UNPACKED_SHA256 = {
    "nautilus_trader/btc-perp-20211231-20220201_1m.csv": (
        "65ab55cd5f3531aa64f429772a38331fe82a92973cbb32a79b243073236c8da3"
    ),
    "hftbacktest/binance_spot_btcusdt_20240808_bookticker.csv": (
        "5b83df7599383e07f9ab670a67ab6595316940e412b3d0c8efec98c81e3b31e7"
    ),
    "hftbacktest/binance_spot_btcusdt_20240808_depth_snapshot.json": (
        "5800255260af64623ba108c01b2ee19a7f2fcb03c686a24bdf746a1fc240e289"
    ),
    "hftbacktest/binance_spot_btcusdt_20240808_depth_updates.json": (
        "5a068c46f46b32ff390b5343a4d904a0c34c35d84748195d4f6b23a08a3b9267"
    ),
    "hftbacktest/binance_spot_btcusdt_20240808_trades.csv": (
        "a0bdd5bc6f56c076bf3f8155201bee0154458559f1cb3cae06a4ce27d534e927"
    ),
}


def unpacked(name: str) -> Path:
    """The plain copy of ``tests/data/NAME.xz``, unpacked and checked against its SHA-256."""
    digest = UNPACKED_SHA256[name]
    target = Path(tempfile.gettempdir()) / "cockpit-testdata" / digest[:16] / Path(name).name
    if target.exists():
        return target
    raw = lzma.decompress((PACKED / f"{name}.xz").read_bytes())
    if hashlib.sha256(raw).hexdigest() != digest:
        raise pytest.UsageError(f"tests/data/{name}.xz does not unpack to its recorded SHA-256")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    partial.write_bytes(raw)
    os.replace(partial, target)  # atomic: parallel test processes never see half a file
    return target


BARS_CSV = unpacked("nautilus_trader/btc-perp-20211231-20220201_1m.csv")
BOOKTICKER_CSV = unpacked("hftbacktest/binance_spot_btcusdt_20240808_bookticker.csv")
DEPTH_SNAPSHOT_JSON = unpacked("hftbacktest/binance_spot_btcusdt_20240808_depth_snapshot.json")
DEPTH_UPDATES_JSON = unpacked("hftbacktest/binance_spot_btcusdt_20240808_depth_updates.json")


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


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def interrupt_when(
    proc: Any, ready: Any, what: str, timeout_s: float = 60.0
) -> tuple[bytes, bytes]:
    """Ctrl-C a CLI child once ``ready()`` (polled, at most ``timeout_s``), then (stdout, stderr)
    of its exit; the child is killed if it outlives that. Asserts it was still running."""
    import signal
    import time

    try:
        deadline = time.monotonic() + timeout_s
        while not ready() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, f"the {what} ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out, err
