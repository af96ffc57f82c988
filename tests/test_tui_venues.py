"""The cockpit over real venues: the Venues pane, the resolve dialog, the venue filter, the
header alert and the 80x24 tab, driven by key over a fake engine client.

The fake serves what a venue engine's snapshot carries (two venues, one HALTED by reconciliation
with an unknown open order and a fill for an order the engine does not know) and records every
command; a ``resolve`` it accepts lands in the next snapshot, as the engine's would.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, OptionList

from cockpit.app import CockpitApp
from cockpit.tui.filter_screen import FilterScreen
from cockpit.tui.header import header_text
from cockpit.tui.resolve_screen import ResolveScreen
from cockpit.venue_state import RESOLUTIONS
from tests.test_tui import plain, screen_text, static_text
from tests.test_tui import ready as loaded

WIDE = (120, 40)
NARROW = (80, 24)
NOW = 1_709_294_400_000_000_000  # 2024-03-01 12:00:00 UTC
SEC = 1_000_000_000

UNKNOWN_KEY = "880011"
FILL_KEY = "binance-t-77"

UNKNOWN_LINE = (
    "binance: unknown open order at the venue: BTC/USDT buy 0.01 @ 50000 (filled 0; "
    "venue id 880011, client id 'manual-1'); adopt or cancel it"
)
FILL_LINE = (
    "binance: fill for an order the engine does not know: ETH/USDT sell 0.5 @ 3010 "
    "(trade t-77); the position differs from the journal's; adopt or acknowledge it"
)


def fixed_clock() -> datetime:
    return datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


def feed(transport: str, symbols: list[str]) -> dict[str, Any]:
    return {
        "venue": "",
        "transport": transport,
        "source": "ticker",
        "resyncs": 0,
        "symbols": {
            s: {
                "synced": True,
                "reason": "",
                "quotes": 120,
                "errors": 0,
                "reconnects": 0,
                "failed": False,
                "last_error": "",
            }
            for s in symbols
        },
        "rejects": {},
        "dropped": 0,
    }


def venues_scenario() -> dict[str, Any]:
    """binance HALTED by reconciliation (two blocking differences and a missing order that
    needs no answer); kraken reconciled and trading."""
    return {
        "binance": {
            "connected": True,
            "detail": "binance: reconciliation found 2 unresolved difference(s)",
            "halted": "binance: reconciliation found 2 unresolved difference(s) "
            "(unjournaled fill, unknown order); adopt or cancel each",
            "feed": feed("watch", ["BTC/USDT", "ETH/USDT"]),
            "reconciliation": {
                "venue": "binance",
                "ts": NOW - 5 * SEC,
                "trading_state": "HALTED",
                "differences": [
                    {
                        "kind": "unknown_order",
                        "venue": "binance",
                        "key": UNKNOWN_KEY,
                        "line": UNKNOWN_LINE,
                        "blocking": True,
                        "detail": {
                            "order": {
                                "venue_order_id": UNKNOWN_KEY,
                                "client_id": "manual-1",
                                "symbol": "BTC/USDT",
                                "side": "buy",
                                "order_type": "limit",
                                "qty": 0.01,
                                "filled": 0.0,
                                "price": 50000.0,
                                "average": None,
                                "status": "open",
                                "ts": NOW - 60 * SEC,
                            }
                        },
                    },
                    {
                        "kind": "unjournaled_fill",
                        "venue": "binance",
                        "key": FILL_KEY,
                        "line": FILL_LINE,
                        "blocking": True,
                        "detail": {
                            "trade": {
                                "trade_id": "t-77",
                                "symbol": "ETH/USDT",
                                "side": "sell",
                                "qty": 0.5,
                                "price": 3010.0,
                            },
                            "client_order_id": None,
                        },
                    },
                    {
                        "kind": "missing_order",
                        "venue": "binance",
                        "key": "ck-1-9",
                        "line": "binance: order ck-1-9 (BTC/USDT buy 0.01) is open in the journal "
                        "but not at the venue; looking it up by client order id",
                        "blocking": False,
                        "detail": {"client_order_id": "ck-1-9"},
                    },
                ],
                "resolutions": [],
            },
            "problems": ["binance: watch_ticker reconnected after 1.2 s"],
            "clock_offset_ms": 12.4,
            "deadman": {"armed": True, "timeout_s": 60.0, "last_ok_ns": NOW, "error": ""},
            "kill": None,
        },
        "kraken": {
            "connected": True,
            "detail": "synced",
            "halted": "",
            "feed": feed("poll", ["SOL/USDT"]),
            "reconciliation": {
                "venue": "kraken",
                "ts": NOW - 4 * SEC,
                "trading_state": "ACTIVE",
                "differences": [],
                "resolutions": [],
            },
            "problems": [],
            "clock_offset_ms": -3.0,
            "deadman": None,
            "kill": {"confirmed": True, "ts": NOW - 3600 * SEC, "detail": "0 orders canceled"},
        },
    }


def position(symbol: str, venue: str, qty: float, price: float) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "venue": venue,
        "qty": qty,
        "avg_price": price,
        "mark": price,
        "unrealized_pnl": 0.0,
        "realized_pnl": 0.0,
        "share_of_equity": qty * price / 100_000,
    }


def order(coid: str, symbol: str, venue: str, status: str = "new") -> dict[str, Any]:
    return {
        "client_order_id": coid,
        "intent_id": coid,
        "strategy_id": "ema_cross",
        "symbol": symbol,
        "venue": venue,
        "side": "buy",
        "order_type": "limit",
        "qty": 0.01,
        "limit_price": 100.0,
        "status": status,
        "ts_created": NOW - SEC,
        "ts_updated": NOW - SEC,
        "filled_qty": 0.0,
        "avg_fill_price": None,
        "fees": 0.0,
        "reduce_only": False,
        "reason": "",
    }


def trace_events(seq0: int = 1) -> list[dict[str, Any]]:
    out = []
    for i, (sym, venue) in enumerate(
        [("BTC/USDT", "binance"), ("SOL/USDT", "kraken"), ("ETH/USDT", "binance")]
    ):
        out.append(
            {
                "seq": seq0 + i,
                "event": "decision",
                "ts": NOW - (10 - i) * SEC,
                "decision": {
                    "decision_id": f"d-{venue}-{i}",
                    "ts": NOW - (10 - i) * SEC,
                    "strategy_id": "ema_cross",
                    "symbol": sym,
                    "venue": venue,
                    "action": "buy",
                    "rule": "cross",
                    "reason": f"EMA crossed on {sym}",
                    "confidence": 0.6,
                    "inputs": {},
                },
            }
        )
    return out


def base_snapshot(venues: dict[str, Any]) -> dict[str, Any]:
    return {
        "seq": 3,
        "now": NOW,
        "mode": "testnet",
        "profile": "default",
        "venues": venues,
        "trading_state": {"state": "ACTIVE", "by": "system", "reason": "", "ts": NOW},
        "kill_switch": {"engaged": False, "level": None, "by": "", "reason": "", "ts": 0},
        "strategies": [
            {"id": "ema_cross", "kind": "ema_cross", "symbols": [], "approval": "auto"},
        ],
        "breakers": [],
        "limits": {},
        "portfolio": {
            "cash": 90_000.0,
            "equity": 100_000.0,
            "realized_pnl": 0.0,
            "unrealized_pnl": 0.0,
        },
        "positions": [
            position("BTC/USDT", "binance", 0.02, 60_000.0),
            position("SOL/USDT", "kraken", 10.0, 150.0),
        ],
        "orders": [
            order("ck-1-1", "BTC/USDT", "binance"),
            order("ck-1-2", "SOL/USDT", "kraken"),
        ],
        "quotes": {
            "BTC/USDT": {"bid": 59_999.0, "ask": 60_001.0, "ts": NOW, "venue": "binance"},
            "ETH/USDT": {"bid": 2_999.0, "ask": 3_001.0, "ts": NOW, "venue": "binance"},
            "SOL/USDT": {"bid": 149.9, "ask": 150.1, "ts": NOW, "venue": "kraken"},
        },
        "approvals": [],
        "trace": trace_events(),
        "equity_curve": [],
        "counters": {},
    }


class FakeClient:
    """The EngineClient protocol over a snapshot held in memory; records commands.

    ``resolve`` is answered like the engine: refused when the answer does not fit the kind,
    else recorded as a resolution (by ``alice``) in the next snapshot, and the venue's HALT
    lifted once no blocking difference is left unanswered."""

    def __init__(self, venues: dict[str, Any] | None = None, *, role: str = "operator") -> None:
        self.role = role
        self.snap = base_snapshot(venues if venues is not None else venues_scenario())
        self.commands: list[tuple[str, dict[str, Any]]] = []
        self.refuse: str | None = None  # when set, every command is refused with this message
        self._closed = asyncio.Event()

    async def snapshot(self, trace: int = 500, curve: int = 600) -> dict[str, Any]:
        snap = copy.deepcopy(self.snap)
        snap["trace"] = snap["trace"][-trace:] if trace else []
        return snap

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        await self._closed.wait()
        return
        yield {}  # an async generator that yields nothing until closed

    async def command(self, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        args = dict(args or {})
        self.commands.append((name, args))
        if self.role != "operator":
            return {"ok": False, "message": f"{self.role} clients cannot run commands"}
        if self.refuse is not None:
            return {"ok": False, "message": self.refuse}
        if name != "resolve":
            return {"ok": False, "message": f"unknown command {name!r}"}
        info = self.snap["venues"].get(args.get("venue"))
        rec = (info or {}).get("reconciliation")
        diff = next(
            (d for d in (rec or {}).get("differences", []) if d["key"] == args["key"]), None
        )
        if diff is None:
            return {"ok": False, "message": f"no difference {args.get('key')!r}"}
        if args.get("action") not in RESOLUTIONS.get(diff["kind"], ()):
            return {"ok": False, "message": f"{args.get('action')!r} does not fit {diff['kind']}"}
        rec["resolutions"].append(
            {
                "key": args["key"],
                "action": args["action"],
                "by": "alice",
                "ts": NOW + SEC,
                "note": args.get("reason", ""),
            }
        )
        done = {r["key"] for r in rec["resolutions"]}
        left = [d for d in rec["differences"] if d["blocking"] and d["key"] not in done]
        if not left:
            rec["trading_state"] = "ACTIVE"
            info["halted"] = ""
            info["detail"] = "synced"
        return {"ok": True, "message": f"{args['venue']}: {args['key']} {args['action']}"}

    async def close(self) -> None:
        self._closed.set()


# ---------------------------------------------------------------------- helpers


async def ready(pilot: Pilot[Any]) -> CockpitApp:
    """Loaded (test_tui's wait), then one table refresh: the timers here are an hour apart."""
    await loaded(pilot)
    app = pilot.app
    assert isinstance(app, CockpitApp)
    await app.refresh_tables()
    await pilot.pause()
    return app


async def refresh(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, CockpitApp)
    await app.refresh_tables()
    await pilot.pause()


def make_app(client: FakeClient) -> CockpitApp:
    # Timers far apart: each test refreshes when it wants to (what it sees is deterministic).
    return CockpitApp(client, clock=fixed_clock, table_interval=3600, chart_interval=3600)


def header_is_red(app: CockpitApp) -> bool:
    text = header_text(app.view.snapshot)
    return any("on red" in str(span.style) for span in text.spans)


# ---------------------------------------------------------------------- the pane


async def test_pane_shows_both_differences_and_the_halt() -> None:
    client = FakeClient()
    app = make_app(client)
    async with app.run_test(size=WIDE) as pilot:
        await ready(pilot)
        venues = app.main.venues
        region = venues.region
        assert region.width > 0 and region.height > 0
        text = screen_text(app)
        assert "HALTED" in text
        lines = static_text(app, "#venues-lines")
        assert "binance" in lines and "kraken" in lines
        assert "HALTED: reconciliation found 2 unresolved" in lines
        assert "ws 2/2 synced" in lines and "poll 1/1 synced" in lines
        assert "clock +12 ms" in lines and "dead-man armed 60 s" in lines
        assert "kill: cancel-all ✓ 11:00:00" in lines
        table = venues.table
        assert venues.shows_table
        rows = table._order
        assert rows[:2] == [f"binance|{UNKNOWN_KEY}", f"binance|{FILL_KEY}"]
        assert plain(table.get_cell(rows[0], "kind")) == "unknown order"
        assert plain(table.get_cell(rows[0], "status")) == "BLOCKING"
        assert plain(table.get_cell(rows[0], "what")).startswith("BTC/USDT buy 0.01 @")
        assert plain(table.get_cell(rows[1], "kind")) == "unjournaled fill"
        assert plain(table.get_cell(rows[1], "status")) == "BLOCKING"
        assert plain(table.get_cell(rows[2], "status")) == "info"  # missing order: no answer
        assert "binance HALTED" in str(venues.border_title)
        assert "2 to resolve" in str(venues.border_title)
        # The selected difference's whole sentence is under the table.
        assert "unknown open order at the venue" in static_text(app, "#venues-detail")
        # The header says it in red; the chart and log stepped aside for the differences.
        assert header_is_red(app)
        assert "binance HALTED" in static_text(app, "#status")
        assert app.main.query_one("#chart").region.height == 0


async def test_resolve_both_differences_lifts_the_halt() -> None:
    client = FakeClient()
    app = make_app(client)
    async with app.run_test(size=WIDE) as pilot:
        await ready(pilot)
        await pilot.press("v")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ResolveScreen)
        # On the first blocking difference, the unknown order; only the answers that fit.
        assert screen.diff.key == UNKNOWN_KEY
        assert UNKNOWN_LINE in static_text(app, "#resolve-line")
        options = screen.query_one("#actions", OptionList)
        offered = [options.get_option_at_index(i).id for i in range(options.option_count)]
        assert offered == ["adopt", "cancel"]
        # An empty reason is refused in the dialog; nothing is sent.
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is screen
        assert "reason is required" in static_text(app, "#dialog-message")
        assert client.commands == []
        # Cancel, with a reason.
        await pilot.press("down")
        assert screen.action == "cancel"
        await pilot.press(*"placed by hand", "enter")
        await pilot.pause()
        assert client.commands == [
            (
                "resolve",
                {
                    "venue": "binance",
                    "key": UNKNOWN_KEY,
                    "action": "cancel",
                    "reason": "placed by hand",
                },
            )
        ]
        assert not isinstance(app.screen, ResolveScreen)  # accepted: closed (and toasted)
        await refresh(pilot)
        table = app.main.venues.table
        assert plain(table.get_cell(f"binance|{UNKNOWN_KEY}", "status")) == "cancel by alice"
        assert header_is_red(app)  # the fill still blocks

        # The next one: the fill for an order nobody knows; adopt or acknowledge only.
        await pilot.press("v")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ResolveScreen) and screen.diff.key == FILL_KEY
        assert screen.actions == ("adopt", "acknowledge")
        await pilot.press("down", *"checked with the desk", "enter")
        await pilot.pause()
        assert client.commands[-1] == (
            "resolve",
            {
                "venue": "binance",
                "key": FILL_KEY,
                "action": "acknowledge",
                "reason": "checked with the desk",
            },
        )
        await refresh(pilot)
        assert plain(table.get_cell(f"binance|{FILL_KEY}", "status")) == "acknowledge by alice"
        # A longer status narrows "what": the whole status is on screen, not clipped.
        assert "acknowledge by alice" in screen_text(app)
        assert "cancel by alice" in screen_text(app)
        assert not header_is_red(app)
        assert "HALTED" not in static_text(app, "#status")
        assert "HALTED" not in str(app.main.venues.border_title)
        # Nothing left to answer: the key says so and opens nothing.
        await pilot.press("v")
        await pilot.pause()
        assert not isinstance(app.screen, ResolveScreen)
        assert len(client.commands) == 2


async def test_a_refusal_stays_in_the_dialog() -> None:
    client = FakeClient()
    client.refuse = "binance: the venue did not confirm the cancel; try again"
    app = make_app(client)
    async with app.run_test(size=WIDE) as pilot:
        await ready(pilot)
        await pilot.press("v")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ResolveScreen)
        await pilot.press("down", *"by hand", "enter")
        await pilot.pause()
        assert app.screen is screen
        assert "did not confirm the cancel" in static_text(app, "#dialog-message")
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ResolveScreen)


async def test_the_dialog_opens_on_the_selected_difference() -> None:
    client = FakeClient()
    app = make_app(client)
    async with app.run_test(size=WIDE) as pilot:
        await ready(pilot)
        await pilot.press("7", "down")  # the Venues table; second row: the fill
        assert app.main.venues.selected is not None
        assert app.main.venues.selected.key == FILL_KEY
        await pilot.press("v")
        await pilot.pause()
        assert isinstance(app.screen, ResolveScreen)
        assert app.screen.diff.key == FILL_KEY
        await pilot.press("escape")
        # On the missing order (needs no answer) v falls back to the first blocking one.
        await pilot.press("down")
        assert app.main.venues.selected.kind == "missing_order"  # type: ignore[union-attr]
        await pilot.press("v")
        await pilot.pause()
        assert isinstance(app.screen, ResolveScreen)
        assert app.screen.diff.key == UNKNOWN_KEY


async def test_a_viewer_cannot_resolve() -> None:
    client = FakeClient(role="viewer")
    app = make_app(client)
    async with app.run_test(size=WIDE) as pilot:
        await ready(pilot)
        await pilot.press("v")
        await pilot.pause()
        assert not isinstance(app.screen, ResolveScreen)
        assert client.commands == []
        assert app.main.venues.shows_table  # a viewer still sees every difference


async def test_nothing_to_resolve_on_paper() -> None:
    client = FakeClient({"sim": {"connected": True, "detail": "simulated"}})
    client.snap["mode"] = "paper"
    app = make_app(client)
    async with app.run_test(size=WIDE) as pilot:
        await ready(pilot)
        lines = static_text(app, "#venues-lines")
        assert "sim" in lines and "connected" in lines and "no reconciliation (paper)" in lines
        assert not app.main.venues.shows_table
        assert app.main.query_one("#chart").region.height > 0  # quiet: the chart stays
        await pilot.press("v")
        await pilot.pause()
        assert not isinstance(app.screen, ResolveScreen)
        assert client.commands == []
        assert not header_is_red(app)


@pytest.mark.parametrize(
    "info",
    [
        {},
        {"connected": False},
        {"connected": True, "detail": "x", "reconciliation": None, "feed": {}},
        {"connected": True, "halted": "by hand", "reconciliation": {"differences": [{}]}},
        {"connected": True, "deadman": {"error": "timeout"}, "kill": {"confirmed": False}},
    ],
)
async def test_partial_venue_dicts_do_not_break_the_pane(info: dict[str, Any]) -> None:
    client = FakeClient({"okx": info})
    app = make_app(client)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.press("7")
        await pilot.pause()
        assert "okx" in static_text(app, "#venues-lines")


# ---------------------------------------------------------------------- the venue filter


async def test_the_venue_filter_hides_the_other_venues_rows() -> None:
    client = FakeClient()
    app = make_app(client)
    async with app.run_test(size=WIDE) as pilot:
        await ready(pilot)
        positions = app.main.positions.query_one("#positions-table")
        orders = app.main.orders.query_one("#orders-table")
        trace = app.main.trace
        assert set(positions._order) == {"BTC/USDT", "SOL/USDT"}  # type: ignore[attr-defined]
        assert set(orders._order) == {"ck-1-1", "ck-1-2"}  # type: ignore[attr-defined]
        assert trace.row_count == 3
        # Two venues: positions and orders name them.
        assert plain(positions.get_cell("SOL/USDT", "venue")) == "kraken"  # type: ignore[attr-defined]
        assert plain(orders.get_cell("ck-1-1", "venue")) == "binance"  # type: ignore[attr-defined]

        await pilot.press("slash")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, FilterScreen)
        venue_list = screen.query_one("#f-venue", OptionList)
        names = [str(venue_list.get_option_at_index(i).prompt) for i in range(3)]
        assert names == ["any", "binance", "kraken"]
        await pilot.press("tab", "tab", "tab", "down")  # venue list: binance
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert trace.filter.venue == "binance"
        assert positions._order == ["BTC/USDT"]  # type: ignore[attr-defined]
        assert orders._order == ["ck-1-1"]  # type: ignore[attr-defined]
        assert {app.view.trace.get(k).venue for k in trace.table._order} == {"binance"}  # type: ignore[union-attr]
        assert trace.row_count == 2
        for pane in (app.main.positions, app.main.orders, trace):
            assert "venue=binance" in str(pane.border_title)
        # The Venues pane is never filtered: kraken's line stays.
        assert "kraken" in static_text(app, "#venues-lines")
        await refresh(pilot)  # and the next refresh keeps the filter
        assert orders._order == ["ck-1-1"]  # type: ignore[attr-defined]
        await pilot.press("x")
        await pilot.pause()
        assert set(positions._order) == {"BTC/USDT", "SOL/USDT"}  # type: ignore[attr-defined]
        assert set(orders._order) == {"ck-1-1", "ck-1-2"}  # type: ignore[attr-defined]
        assert "venue=" not in str(app.main.orders.border_title)


async def test_one_venue_needs_no_venue_column() -> None:
    venues = {"kraken": venues_scenario()["kraken"]}
    client = FakeClient(venues)
    client.snap["positions"] = [position("SOL/USDT", "kraken", 10.0, 150.0)]
    client.snap["orders"] = [order("ck-1-2", "SOL/USDT", "kraken")]
    app = make_app(client)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        positions = app.main.positions.query_one("#positions-table")
        assert "venue" not in positions.column_keys  # type: ignore[attr-defined]
        assert "venue" not in app.main.orders.query_one("#orders-table").column_keys  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- 80x24


async def test_narrow_tab_7_shows_the_venues_pane() -> None:
    client = FakeClient()
    app = make_app(client)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        assert app.main.query_one("#venues").region.height == 0
        strip = static_text(app, "#strip")
        assert "7 Venues HALTED" in strip
        await pilot.press("7")
        await pilot.pause()
        assert app.main.group == 7
        assert app.main.query_one("#venues").region.height > 0
        for pane in ("market", "approvals", "trace", "safety", "chart", "log-pane"):
            assert app.main.query_one(f"#{pane}").region.height == 0, pane
        text = screen_text(app)
        assert "HALTED" in text and "unknown order" in text and "unjournaled fill" in text
        assert app.focused is app.main.venues.table
        await pilot.press("v")
        await pilot.pause()
        assert isinstance(app.screen, ResolveScreen)
        assert app.screen.query_one("#reason", Input).has_focus


def test_the_cockpit_offers_exactly_the_answers_the_engine_accepts() -> None:
    """The cockpit keeps its own copy of the answer table (panes import nothing from the
    engine but the client interface): it must say what the engine's says."""
    from engine.venues.reconcile import RESOLUTIONS as ENGINE_RESOLUTIONS

    assert RESOLUTIONS == ENGINE_RESOLUTIONS


def test_venue_events_are_logged_and_a_new_halt_is_noticed() -> None:
    """The log keeps a venue's story (reconciled, answered, trading again); a venue newly
    HALTED and a kill the venue did not confirm get a toast and the bell, once each."""
    from cockpit.tui.view import LocalView

    view = LocalView()
    halted = "binance: reconciliation found 1 unresolved difference(s)"

    def ev(seq: int, what: str, halted: str, **detail: Any) -> dict[str, Any]:
        return {
            "seq": seq,
            "event": "venue",
            "ts": NOW + seq * SEC,
            "venue": "binance",
            "what": what,
            "halted": halted,
            "detail": detail,
        }

    notices = view.apply_events(
        [
            ev(1, "reconciled", halted, trigger="start", reconciliation={"differences": [{}]}),
            ev(2, "reconciled", halted, trigger="reconnect", reconciliation={"differences": [{}]}),
            ev(
                3,
                "resolved",
                "binance: every difference answered; looking again",
                resolution={"key": "99001", "action": "cancel", "by": "alice", "note": "by hand"},
            ),
            ev(4, "reconciled", "", trigger="answered", reconciliation={"differences": []}),
            ev(5, "kill", "", confirmed=False, detail="NOT confirmed: orders may still be open"),
        ]
    )
    assert [(n.kind, n.title) for n in notices] == [
        ("venue", "Venue HALTED"),
        ("venue", "Venue"),
    ]
    log = [line.text for line in view.log]
    assert "binance: cancel 99001 by alice: by hand" in log
    assert "binance: trading allowed again" in log
    assert any("NOT confirmed" in line for line in log)


@pytest.mark.parametrize("key", ["a", "r", "k", "R", "p", "u", "b", "f"])
async def test_a_viewer_cockpit_opens_no_command_dialog_and_sends_nothing(key: str) -> None:
    """`attach --read-only` shows everything and sends nothing: `k` used to open the kill
    dialog and send a kill the engine then refused."""
    client = FakeClient(role="viewer")
    app = make_app(client)
    async with app.run_test(size=WIDE) as pilot:
        await ready(pilot)
        main = app.screen
        await pilot.press(key)
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is main
        assert client.commands == []
