"""review-cmd: the commands, the configuration and the control socket, attacked as a hostile
checker would (README "Commands", "Configuration", "Trading modes and risk profiles",
"Operator commands and the audit log", "Limit orders", docs/operations.md).

Attacks that held (no change needed):
- set-limit at every limit's boundary through the CLI: max 1e15 passes and 1.0000001e15 is
  refused, 0 and -5 refused, max_position_fraction 1 / 1.0000001, price_collar_pct 50 / 50.01,
  stale_quote_s 31536000 / 31536001, max_gross_exposure_fraction 10 / 10.001,
  max_open_positions 1e9 / 1000000001 and 2.5 (refused) / 3.0 (3), daily_loss_limit_pct 100 /
  100.0001 / 0 / -0.0; nan, 1e309 and inf refused by the CLI (exit 2), NaN, Infinity and 1e400
  refused by the socket as not JSON; "5000" and true refused as no number; unknown names listed.
- set_limit's daily_loss_limit_pct engages the kill at the next quote exactly at its boundary
  (a cent above: nothing), and a max_order_notional set at run time sizes entries inside it
  (tests below); a limit looser than the config is dropped at the next start (restore).
- Every one-shot with missing, empty, negative, huge or non-numeric arguments (engine --for,
  --metrics, --profile '' and ../x, trace/journal/audit -n, journal --since nan/1e309m/2024-13-01,
  --kind bogus and ',', --json with --csv, kill --level bogus, flatten SYMBOL with --all):
  one line, exit 2; approve/pause/flatten/rearm/resolve of '' refused in one line, exit 1.
- config check on a directory, a symlink loop, a non-UTF-8 file, a 200 MB file, /dev/stdin,
  an empty --config, CRLF line ends (accepted, as TOML allows), duplicate strategy ids,
  a symbol listed twice, unknown strategy params.
- The control socket: garbage bytes, invalid UTF-8, [] / null / "x" / {}, an id of 10,000
  characters or a list, args that are a list, a name that is a number, an extra field, a second
  hello, a reused idempotency key with other arguments; a viewer's kill and set_limit (refused,
  audited); a surrogate in the message id or hello name (refused by the model); a half line
  closed at EOF (a complete object runs, a cut one is not JSON); numbers past 100 digits.
- Secrets: with a heartbeat url_env and an alert urls_env holding tokens, neither token is in
  the journal, the headless output, `status` (text or --json), `journal --kind all` or the
  data directory.
- Fleet files: empty, no [engines], socket and data_dir both, one socket twice (also as two
  spellings of a data dir), an unknown key or section, an empty or numeric socket, a bad name.
- The engine's --socket at an existing file, folder, the journal or engine.lock (refused);
  --metrics on a port in use, at an unresolvable host or '' (exit 2); --for 1e308.
- live/testnet arming: no --live, a wrong, padded or upper-case confirmation, an empty key
  variable; a testnet config on a paper data dir (refused before any venue is opened).
- Environment: PYTHONWARNINGS=error, PYTHONIOENCODING=ascii, NO_COLOR, TERM=dumb, COLUMNS
  huge, COCKPIT_CACHE_DIR at /dev/null, /proc/self, a relative or non-UTF-8 path,
  XDG_RUNTIME_DIR at a file or a non-UTF-8 path.
- The cockpit's limit dialog: "1,5" refused, "5,000.5" and full-width digits read right.

Holes fixed here, each with its test below:
- A command argument holding a lone surrogate (a byte that was not UTF-8 in a pasted
  `--reason`, a strategy name; a `\\ud800` escape over the socket) failed in the journal with
  "engine error: TypeError": a kill was engaged in memory but never journaled (lost at the next
  start, exit 1), every other command left no audit row.
- A reason made only of marks that draw nothing (the combining grapheme joiner, a variation
  selector, the Khmer inherent vowels) passed as one that "shows something".
- A strategy's `breakers` override of an engine-wide breaker (global_consecutive_losses,
  clock_drift_warn_ms, clock_drift_halt_ms) was accepted by `config check` and ignored.
- A sizing setting the strategy's model does not read (`sizing = { qty = 0.001 }` under the
  default fixed_fraction) was accepted and ignored: the strategy traded 2% of equity.
- `engine.data_dir = "~/cockpit/data"` (and a replay path with ~) was taken literally: a folder
  named "~" under the engine's working directory, where `cockpit kill --config` run from
  elsewhere never looked.
- An API key or secret in the environment with a space, "\\r" (a CRLF EnvironmentFile) or
  another control character armed the engine; the venue then refused it without saying why.
- WATCHDOG_USEC="²" or a 400-digit value stopped the engine's start ("unexpected error").
- A typo in a strategy's `breakers` override read "Extra inputs are not permitted" (pydantic's
  words) where every other unknown key says "unknown key; remove it or check its spelling".
- Under `--profile`, a nested table of the wrong type (`[safety] breakers = 5`, a strategy's
  `sizing = 5`) was replaced by the profile's and `config check` said ok; without it, refused.
- A strategy symbol priced in another currency than the book (ETH/BTC beside BTC/USDT, or
  any symbol under `quote_currency = "EUR"`) was accepted: its prices were taken in the book's
  currency, so a 2% entry on 100,000 USDT bought 40,000 ETH and every limit held in BTC.
- On a venue's market a strategy symbol was not checked: "", "BTC/USDT " or "BTC USDT" passed
  `config check` (the start then failed on it).
- A strategy with id "global" shared its breakers' trip with the engine-wide ones (the engine's
  halt overwrote the strategy's pause; one rearm lifted both); "operator" is the id of what a
  person adopts from a venue.
- A venue named `""`, `"x y"` or `"../../x"` passed `config check`; the name is its recording
  folder, which the recorder could not make, and what `cockpit resolve` types.
- `safety.kill_switch.kill_file = "record"` (or "market") passed: the recordings' folder then
  read as an engaged KILL file that no release could lift without deleting the recordings.
- `kill_file = " KILL"` (a blank at an end, or a control character) passed: the `touch
  DATA/KILL` of an emergency made another file and engaged nothing.
- `cockpit set-limit price_collar_pct 1_5` (and the limit dialog) read 15: Python's digit
  grouping, where "1,5" was refused so it would not become 15.
- `cockpit verify`, `cockpit data verify` and `cockpit config check` cut short by Ctrl-C (or
  `timeout -s INT`) exited 0, the answer of a check that found everything sound.
- A config file saved with a UTF-8 byte-order mark was "not valid TOML (Invalid statement (at
  line 1, column 1))", which names nothing the person can see.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import ConfigError, load_config, parse_config
from engine.heartbeat import watchdog_interval
from engine.journal import verify_journal
from engine.runtime import Engine
from tests.test_safety_engine import Harness, harnesses, start  # noqa: F401

# A byte that is not UTF-8 on the command line reaches Python as a lone surrogate
# (surrogateescape): `cockpit kill --reason $'disk \xff'` sends "disk \udcff".
NOT_UTF8 = "disk \udcff full"


# --------------------------------------------------------------------------- lone surrogates


async def test_a_kill_whose_reason_holds_a_byte_that_is_not_utf8_is_engaged_and_durable(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    h = await start(harnesses, data_dir)
    reply = await h.engine.command("kill", {"level": "halt", "reason": NOT_UTF8})
    assert reply["ok"] is True, reply
    kill = [r.payload for r in h.rows("safety") if r.payload["what"] == "kill_switch"]
    assert kill and kill[-1]["reason"] == "disk \\udcff full"  # the byte as its escape
    assert h.rows("audit")[-1].payload["action"] == "kill"
    cfg = h.engine.cfg
    await h.stop()
    harnesses.clear()
    again = Engine(cfg, data_dir)
    await again.start()
    try:
        assert again.core.safety.snapshot()["kill_switch"]["engaged"] is True
    finally:
        await again.stop()
    assert verify_journal(data_dir / "journal.sqlite").ok


@pytest.mark.parametrize(
    ("name", "args", "field"),
    [
        ("set_limit", {"name": "max_order_notional", "value": 5000, "reason": NOT_UTF8}, "reason"),
        ("pause", {"strategy": "alpha\udcff", "reason": "x"}, "strategy"),
        ("approve", {"id": "ap-\ud800"}, "id"),
        ("flatten", {"symbol": "BTC\udcff", "reason": "x"}, "symbol"),
        ("release", {"reason": "x", "confirm": "RELEASE", "seen": {"by": "\udcff"}}, "by"),
        ("p\udcffause", {"strategy": "\ud800"}, "unknown command"),
    ],
)
async def test_a_command_argument_that_is_no_text_is_refused_in_one_line_and_audited(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    name: str,
    args: dict[str, Any],
    field: str,
) -> None:
    h = await start(harnesses, data_dir)
    before = len(h.rows("audit"))
    reply = await h.engine.command(name, args)
    assert reply["ok"] is False and reply.get("refused") is True, reply
    assert field in reply["message"] and "TypeError" not in reply["message"]
    assert "\n" not in reply["message"]
    rows = h.rows("audit")
    assert len(rows) == before + 1  # the refusal is on the record
    assert rows[-1].payload["accepted"] is False
    assert h.core.limits.max_order_notional == 10_000.0
    assert h.core.safety.snapshot()["kill_switch"]["engaged"] is False


@pytest.mark.parametrize(
    "blank", ["\u034f", "\ufe0f\ufe0f", "\u17b4\u17b5", "\u180b", "\U000e0100", " \ufe0e "]
)
async def test_a_reason_of_marks_that_draw_nothing_is_blank(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    blank: str,
) -> None:
    """A combining grapheme joiner or a variation selector alone (Unicode's default-ignorable
    marks, which Python counts as printable) passed as a reason that shows nothing."""
    h = await start(harnesses, data_dir)
    reply = await h.engine.command(
        "set_limit", {"name": "max_order_notional", "value": 5000, "reason": blank}
    )
    assert reply["ok"] is False
    assert "a reason is required: say why" in reply["message"]
    assert h.core.limits.max_order_notional == 10_000.0
    kill = await h.engine.command("kill", {"level": "entries", "reason": blank})
    assert kill["ok"] is True
    assert h.core.safety.snapshot()["kill_switch"]["reason"] == "no reason given"
    fine = await h.engine.command(
        "set_limit", {"name": "max_order_notional", "value": 5000, "reason": "calm \u2764\ufe0f"}
    )
    assert fine["ok"] is True, fine  # a mark on a character that shows: a reason


# --------------------------------------------------------------------------- limits, set live


async def test_a_daily_loss_limit_set_at_run_time_engages_exactly_at_its_boundary(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
) -> None:
    """Held: set_limit's loss limit is the one the next quote is judged by, to the cent."""
    from tests.test_safety_engine import hold_one_btc, walk_until_kill

    h = await hold_one_btc(harnesses, data_dir, {})
    reply = await h.engine.command(
        "set_limit", {"name": "daily_loss_limit_pct", "value": 2.0, "reason": "tighter"}
    )
    assert reply["ok"], reply
    await walk_until_kill(h, [59_000.5, 58_500.5, 58_000.51, 58_000.5])  # 2% is equity 98000
    assert h.core.safety.kill.source == "daily_loss"


@pytest.mark.parametrize(("cap", "whole"), [(612.25, True), (612.24, False), (600.0, False)])
async def test_max_order_notional_set_at_run_time_holds_at_its_boundary(
    harnesses: list[Harness],  # noqa: F811
    data_dir: Path,
    cap: float,
    whole: bool,
) -> None:
    """Held: 0.01 BTC at the reference 60000 is 600.0, and entries are sized 2% inside the
    cap (SIZING_HEADROOM): a cap set by set_limit at 600 / 0.98 = 612.2449 or more sends the
    whole order; under it the order is sized down to fit, never over the cap."""
    from tests.test_safety_engine import buy

    h = await start(harnesses, data_dir)
    await h.feed("BTC/USDT", 60_000.0)
    reply = await h.engine.command(
        "set_limit", {"name": "max_order_notional", "value": cap, "reason": "boundary"}
    )
    assert reply["ok"], reply
    await h.signal("alpha", "BTC/USDT", buy(), 60_000.0)
    intent = h.intents()[-1]
    assert intent["outcome"] == "submitted", intent
    qty, ref = intent["intent"]["qty"], intent["intent"]["ref_price"]
    assert ref == 60_000.0
    assert (qty == 0.01) is whole
    assert qty * ref <= cap


# --------------------------------------------------------------------------- config: ignored


def _strategy(**extra: Any) -> dict[str, Any]:
    return {"id": "e", "kind": "ema_cross", "symbols": ["BTC/USDT"], **extra}


@pytest.mark.parametrize(
    "key", ["global_consecutive_losses", "clock_drift_warn_ms", "clock_drift_halt_ms"]
)
def test_a_strategy_cannot_override_an_engine_wide_breaker(key: str) -> None:
    value = {"global_consecutive_losses": 2, "clock_drift_warn_ms": 50, "clock_drift_halt_ms": 400}
    with pytest.raises(ConfigError) as err:
        parse_config({"strategies": [_strategy(breakers={key: value[key]})]})
    assert err.value.problems == [
        f"strategies[0].breakers.{key}: this breaker watches the whole engine, not one "
        "strategy, so a strategy cannot set it; set it in [safety.breakers]"
    ]
    # The strategy's own breakers, and the engine-wide one where it belongs, are accepted.
    cfg = parse_config(
        {
            "safety": {"breakers": {key: value[key]}},
            "strategies": [_strategy(breakers={"consecutive_losses": 2})],
        }
    )
    assert getattr(cfg.safety.breakers, key) == value[key]


@pytest.mark.parametrize(
    ("breakers", "line"),
    [
        (
            {"consecutive_lossses": 5},
            "strategies[0].breakers.consecutive_lossses: unknown key; remove it or check its "
            "spelling",
        ),
        (
            {"rolling_loss": {"max_loss": 1}},
            "strategies[0].breakers.rolling_loss.max_loss: unknown key; remove it or check its "
            "spelling",
        ),
        (
            {"consecutive_losses": 0},
            "strategies[0].breakers.consecutive_losses: got 0; input should be greater than or "
            "equal to 1",
        ),
    ],
)
def test_a_strategys_breaker_override_is_worded_as_every_other_field(
    breakers: dict[str, Any], line: str
) -> None:
    """It was pydantic's "Extra inputs are not permitted", without the way to fix it."""
    with pytest.raises(ConfigError) as err:
        parse_config({"strategies": [_strategy(breakers=breakers)]})
    assert err.value.problems == [line]


@pytest.mark.parametrize(
    ("sizing", "unused"),
    [
        ({"qty": 0.001}, "qty is not used by model = 'fixed_fraction'"),
        ({"model": "fixed_qty", "qty": 1, "fraction": 0.5}, "fraction is not used by"),
        ({"model": "volatility", "kelly_fraction": 0.1}, "kelly_fraction is not used by"),
        ({"model": "kelly", "risk_fraction": 0.1}, "risk_fraction is not used by"),
    ],
)
def test_a_sizing_setting_its_model_does_not_read_is_refused(
    sizing: dict[str, Any], unused: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"strategies": [_strategy(sizing=sizing)]})
    (line,) = err.value.problems
    assert line.startswith("strategies[0].sizing: " + unused), line


@pytest.mark.parametrize(
    "sizing",
    [
        {"model": "fixed_qty", "qty": 0.001},
        {"model": "fixed_fraction", "fraction": 0.02},
        {"fraction": 0.02},
        {"model": "volatility", "risk_fraction": 0.01, "atr_multiple": 2.0},
        {"model": "kelly", "win_rate": 0.5, "payoff_ratio": 2, "kelly_fraction": 0.25},
    ],
)
def test_every_sizing_setting_its_model_reads_is_accepted(sizing: dict[str, Any]) -> None:
    cfg = parse_config({"strategies": [_strategy(sizing=sizing)]})
    # A config dumped and read again (as the backtest and the sweep build theirs) holds every
    # sizing field at its default: still accepted.
    assert parse_config(cfg.model_dump()) == cfg


def test_the_shipped_config_and_profiles_pass_the_new_rules() -> None:
    for profile in (None, "conservative", "aggressive"):
        load_config(profile=profile)


@pytest.mark.parametrize("profile", [None, "conservative", "aggressive"])
@pytest.mark.parametrize(
    ("toml", "line"),
    [
        (
            "[safety]\nbreakers = 5\n",
            "safety.breakers: got 5; input should be a valid dictionary or instance of "
            "BreakersConfig",
        ),
        (
            "[safety]\nkill_switch = 'x'\n",
            "safety.kill_switch: got 'x'; input should be a valid dictionary or instance of "
            "KillSwitchConfig",
        ),
        (
            "[[strategies]]\nid = 'e'\nkind = 'ema_cross'\nsymbols = ['BTC/USDT']\nsizing = 5\n",
            "strategies[0].sizing: got 5; input should be a valid dictionary or instance of "
            "SizingConfig",
        ),
    ],
)
def test_a_table_of_the_wrong_type_is_refused_with_a_profile_as_without(
    toml: str, line: str, profile: str | None, tmp_path: Path
) -> None:
    """Under --profile a nested table the config got wrong (`[safety] breakers = 5`, a
    strategy's `sizing = 5`) was replaced by the profile's and the config passed; without the
    profile it was refused."""
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(path, profile)
    assert err.value.problems == [line]


def test_a_symbol_priced_in_another_currency_than_the_book_is_refused() -> None:
    """The portfolio counts in one currency: ETH/BTC beside BTC/USDT was accepted, its prices
    (0.05 BTC) taken as USDT, so a 2% fixed-fraction entry on 100,000 USDT bought 40,000 ETH
    and every notional, position and exposure limit held in BTC."""
    eth_btc = {"initial_price": 0.05, "tick_size": 0.00001, "lot_size": 0.001}
    doc: dict[str, Any] = {
        "market": {"simulated": {"symbols": {"BTC/USDT": {"initial_price": 60_000}}}},
        "strategies": [_strategy(symbols=["BTC/USDT", "ETH/BTC"])],
    }
    doc["market"]["simulated"]["symbols"]["ETH/BTC"] = eth_btc
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert err.value.problems == [
        "strategies[0].symbols: 'ETH/BTC' is priced in BTC, but the portfolio counts in USDT "
        "(portfolio.quote_currency), the unit of every limit, size and PnL; trade symbols "
        "quoted in USDT, or set quote_currency = 'BTC' if they all are"
    ]
    # One currency throughout: accepted (a perpetual's settle part after ':' is not its quote).
    doc["strategies"] = [_strategy(symbols=["ETH/BTC"])]
    doc["portfolio"] = {"quote_currency": "BTC"}
    parse_config(doc)
    parse_config(
        {
            "market": {"source": "venue"},
            "venues": {"binance": {"exchange": "binance"}},
            "strategies": [_strategy(symbols=["BTC/USDT:USDT", "ETH/USDT"])],
        }
    )
    with pytest.raises(ConfigError):  # balances and amounts are named in upper case
        parse_config({"portfolio": {"quote_currency": "usdt"}, "strategies": [_strategy()]})


@pytest.mark.parametrize("symbol", ["", "BTC USDT", "BTC/USDT ", "a\x1b[31m/USDT", "../x/USDT"])
def test_a_strategy_symbol_on_a_venues_market_must_be_a_symbol_name(symbol: str) -> None:
    """On a venue's market the strategies' symbols are the market list and were not checked:
    "", "BTC/USDT " (a trailing space) and "BTC USDT" passed `config check`."""
    doc = {
        "market": {"source": "venue"},
        "venues": {"binance": {"exchange": "binance"}},
        "strategies": [_strategy(symbols=[symbol])],
    }
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    (line,) = err.value.problems
    assert f"{symbol!r} is not a market symbol like BTC/USDT" in line
    doc["strategies"] = [_strategy(symbols=["BTC/USDT:USDT", "1000SHIB/USDT", "ETH/USDT"])]
    parse_config(doc)


@pytest.mark.parametrize(("symbol", "ccy"), [("BTC/USD", "USD"), ("ETH/BTC", "BTC")])
def test_a_backtest_counts_in_the_currency_its_symbol_is_priced_in(
    symbol: str, ccy: str, tmp_path: Path
) -> None:
    """The rule above must not refuse a backtest of a kraken BTC/USD download: a one-symbol
    run counts in its symbol's currency."""
    import json

    from engine.backtest import BacktestOptions, build_backtest_config, load_market_data

    rows = [[1_704_067_200_000 + i * 60_000, 10, 11, 9, 10, 1] for i in range(40)]
    path = tmp_path / "bars.json"
    path.write_text(json.dumps({"symbol": symbol, "ohlcv": rows}))
    cfg = build_backtest_config(
        load_config(None),
        load_market_data(path),
        BacktestOptions(strategy="ema_cross"),
    )
    assert cfg.strategies[0].symbols == [symbol]
    assert cfg.portfolio.quote_currency == ccy


@pytest.mark.parametrize("sid", ["global", "operator"])
def test_a_strategy_cannot_take_a_name_the_engine_gives_to_what_is_no_strategy(sid: str) -> None:
    """A strategy with id "global" passed: its consecutive_losses breaker and the engine-wide
    one were one trip (`("consecutive_losses", "global")`), so the engine's halt overwrote the
    strategy's pause and `cockpit rearm global` lifted both; "operator" is the strategy id of
    the orders and positions adopted from a venue."""
    with pytest.raises(ConfigError) as err:
        parse_config({"strategies": [{**_strategy(), "id": sid}]})
    (line,) = err.value.problems
    assert line.startswith(f"strategies[0].id: {sid!r} is the engine's own name for ")
    assert line.endswith("; give the strategy another id")
    # In any case (review-reviewconfig): "GLOBAL" beside "global" in the breakers list.
    with pytest.raises(ConfigError):
        parse_config({"strategies": [{**_strategy(), "id": sid.upper()}, _strategy()]})


@pytest.mark.parametrize("name", ["", "x y", "../../x", ".hidden", "a\x1b[31mb", "b" * 33])
def test_a_venue_name_that_cannot_be_a_folder_or_typed_is_refused(name: str) -> None:
    """`[venues."x y"]` passed `config check`; the name is the venue's recording folder
    (DATA/record/NAME), which the recorder then could not make, and what `cockpit resolve`
    takes."""
    with pytest.raises(ConfigError) as err:
        parse_config({"venues": {name: {"exchange": "binance"}}})
    (line,) = err.value.problems
    assert line.startswith(f"venues: {name!r} cannot name a venue; use 1-32 letters"), line


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", fullmatch=True))
def test_every_venue_name_the_config_takes_is_its_own_folder_name(name: str) -> None:
    from engine.config import VENUE_NAME
    from engine.marketdata.store import symbol_safe

    assert VENUE_NAME.fullmatch(name)
    assert symbol_safe(name) == name


@pytest.mark.parametrize("name", ["record", "market"])
def test_the_kill_file_cannot_be_one_of_the_data_dirs_folders(name: str) -> None:
    """`kill_file = "record"` passed: with recording on, the folder existed, which reads as a
    KILL file (anything by that name halts), and a release is refused while it exists: the
    engine stayed halted until the person deleted the recordings."""
    from engine.marketdata.recording import RECORD_DIR
    from engine.marketdata.store import MARKET_DIR

    assert {RECORD_DIR, MARKET_DIR} == {"record", "market"}
    with pytest.raises(ConfigError) as err:
        parse_config({"safety": {"kill_switch": {"kill_file": name}}})
    (line,) = err.value.problems
    assert line.startswith(f"safety.kill_switch.kill_file: got {name!r}; names one of the engine's")
    for fine in (f"{name}s", f"{name}.kill", f"KILL-{name}"):
        parse_config({"safety": {"kill_switch": {"kill_file": fine}}})


@pytest.mark.parametrize("name", [" KILL", "KILL ", "KILL\n", "KI\tLL", "KILL\u202e"])
def test_the_kill_file_name_has_no_blank_ends_or_control_characters(name: str) -> None:
    """`kill_file = " KILL"` passed: the `touch DATA/KILL` of an emergency made another file,
    and nothing was engaged."""
    with pytest.raises(ConfigError) as err:
        parse_config({"safety": {"kill_switch": {"kill_file": name}}})
    (line,) = err.value.problems
    assert "without spaces at its ends or control characters" in line
    parse_config({"safety": {"kill_switch": {"kill_file": "KILL NOW"}}})  # a space inside: a name


@pytest.mark.parametrize(
    ("section", "key", "path"),
    [
        ("engine", "data_dir", "~/cockpit/data"),
        ("engine", "data_dir", "~"),
        ("market.replay", "path", "~/bars.csv"),
    ],
)
def test_a_path_starting_with_a_tilde_is_refused_with_the_whole_path(
    section: str, key: str, path: str
) -> None:
    """No shell reads a config file: `data_dir = "~/cockpit/data"` was a folder named "~"
    under wherever the engine started (a systemd unit's WorkingDirectory), and `cockpit kill
    --config` started in another directory looked for the engine somewhere else."""
    import os

    doc: dict[str, Any] = {"engine": {}}
    if section == "market.replay":
        doc["market"] = {"source": "replay", "replay": {"path": path, "kind": "bars"}}
    else:
        doc["engine"][key] = path
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert err.value.problems == [
        f"{section}.{key}: got {path!r}; starts with ~, which a config file does not expand (a "
        f"shell does); write the whole path ({os.path.expanduser(path)})"
    ]
    # A path with a ~ elsewhere in it is a path like any other; the kill file's name too.
    parse_config({"engine": {"data_dir": "data~1/x~"}})
    parse_config({"safety": {"kill_switch": {"kill_file": "~KILL"}}})


# --------------------------------------------------------------------------- environment


@pytest.mark.parametrize(
    "usec",
    ["\u00b2", "\u0663", "9" * 400, "1e6", "-5", " 30000000"],
    ids=["superscript-two", "arabic-three", "400-digits", "1e6", "negative", "space"],
)
def test_a_watchdog_usec_that_is_no_number_is_ignored_with_a_warning(
    usec: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="engine.heartbeat"):
        assert watchdog_interval({"WATCHDOG_USEC": usec}) is None
    assert "WATCHDOG_USEC is not a number of microseconds" in caplog.text


def test_a_watchdog_usec_at_the_uint64_edge_still_beats() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "18446744073709551615"}) == pytest.approx(
        18446744073709551615 / 2_000_000
    )
    assert watchdog_interval({"WATCHDOG_USEC": "2000000"}) == 1.0
    assert watchdog_interval({}) is None


def _live(**venue: Any) -> Any:
    return parse_config(
        {
            "engine": {"mode": "live"},
            "venues": {
                "binance": {
                    "exchange": "binance",
                    "testnet": False,
                    "api_key_env": "RC_KEY",
                    "secret_env": "RC_SECRET",
                    **venue,
                }
            },
            "strategies": [_strategy()],
        }
    )


@pytest.mark.parametrize(
    "key", ["Ab12Cd34\r", " Ab12Cd34", "Ab12 Cd34", "Ab12Cd34\n", "Ab12\x1bCd34", "\u00a0"]
)
def test_a_key_in_the_environment_with_a_space_or_line_end_is_refused_unshown(key: str) -> None:
    """A systemd EnvironmentFile saved with Windows line ends gives every value a "\\r": the
    engine armed and the venue answered "invalid API key" without saying why."""
    from engine.modes import arming_problems

    env = {"RC_KEY": key, "RC_SECRET": "Zz9Yy8Xx7Ww6Vv5"}
    problems = arming_problems(_live(), live_flag=True, confirmation="trade live", env=env)
    assert problems == [
        "venues.binance: environment variable RC_KEY holds a space, line end or control "
        "character (the value is not shown); no API key or secret has one: set it again "
        "without it (a file with Windows line ends leaves a \\r)"
    ]
    assert all(key.strip() not in p for p in problems if key.strip())
    env["RC_KEY"] = "Ab12Cd34"  # the same key, clean: armed
    assert arming_problems(_live(), live_flag=True, confirmation="trade live", env=env) == []


# --------------------------------------------------------------------------- Ctrl-C


def _interrupt(*_: Any, **__: Any) -> Any:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("argv", "target", "name"),
    [
        (["verify", "--data-dir", "{d}"], "engine.journal.verify_journal", "verify"),
        (["data", "verify", "{d}"], "engine.marketdata.recording.verify_path", "data verify"),
        (
            ["config", "check", "--config", "{d}/c.toml"],
            "engine.config.check_runnable",
            "config check",
        ),
    ],
)
def test_a_check_cut_short_by_ctrl_c_never_exits_0(
    argv: list[str],
    target: str,
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`cockpit verify`, `data verify` and `config check` interrupted (Ctrl-C, `timeout -s
    INT`) exited 0 with nothing printed: "checked and sound" to `cockpit verify || alert`."""
    import importlib

    from cockpit.cli import main

    (tmp_path / "journal.sqlite").write_bytes(b"")
    (tmp_path / "c.toml").write_text("")
    module, attr = target.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), attr, _interrupt)
    code = main([a.replace("{d}", str(tmp_path)) for a in argv])
    out, err = capsys.readouterr()
    assert code == 130
    assert err.strip() == f"cockpit {name}: interrupted; nothing was checked"
    assert "ok" not in out


# --------------------------------------------------------------------------- typed numbers


@pytest.mark.parametrize("text", ["1_5", "1_000", "0_5", "5,000_0"])
def test_a_limit_typed_with_an_underscore_is_no_number(text: str) -> None:
    """`cockpit set-limit price_collar_pct 1_5` set 15 (Python reads _ as digit grouping), as
    the limit dialog did; a comma that is no thousands separator was refused already."""
    import argparse

    from cockpit.oneshot import finite_number
    from cockpit.tui.limit_screen import parse_value

    assert parse_value(text) is None
    with pytest.raises(argparse.ArgumentTypeError):
        finite_number(text)
    assert parse_value("1,500") == 1500.0 and finite_number("1500") == 1500.0


# --------------------------------------------------------------------------- the file


def test_a_config_saved_with_a_byte_order_mark_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b'\xef\xbb\xbf[engine]\nmode = "paper"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems == [
        f"{path}: starts with a byte-order mark (BOM), which TOML does not allow; save the file "
        "as UTF-8 without BOM"
    ]
    path.write_bytes(b'[engine]\r\nmode = "paper"\r\n')  # CRLF is TOML, and accepted
    assert load_config(path).engine.mode == "paper"
