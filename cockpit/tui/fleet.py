"""The fleet overview: one row per engine, every engine's approvals in one queue.

The screen only shows what the app hands it (``update_fleet``) and posts what the person asks
for (open an engine, approve or reject an approval, the fleet-wide kill): the app acts, on the
right engine. Rows are keyed by engine name and approvals by engine and id, so a refresh
touches only the cells that changed (``KeyedTable``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Static

from cockpit.client import EngineClient
from cockpit.tui.approvals import approval_cells, approval_detail, engine_clock
from cockpit.tui.fmt import fmt_money, left, right, truncate
from cockpit.tui.header import MODE_STYLES, STATE_STYLES
from cockpit.tui.kill_screen import KillScreen
from cockpit.tui.main_screen import MainScreen
from cockpit.tui.pane import Pane
from cockpit.tui.session import Session
from cockpit.tui.table import KeyedTable, Row
from cockpit.tui.view import LocalView
from cockpit.venue_state import halted_reason
from engine.vocabulary import printable

CONNECTING, CONNECTED, DISCONNECTED = "connecting", "connected", "DISCONNECTED"
ACCEPTED, REFUSED, UNREACHABLE = "accepted", "refused", "unreachable"
SEP = "\x1f"  # between engine name and approval id in a queue row's key

ENGINE_COLUMNS: list[tuple[str | Text, str]] = [
    (" engine", "engine"),
    (" link", "link"),
    (" mode", "mode"),
    (" trading", "trading"),
    (" kill", "kill"),
    (Text(" equity", justify="right"), "equity"),
    (Text(" day PnL", justify="right"), "day"),
    (Text(" appr", justify="right"), "appr"),
    (" venues", "venues"),
    (" last alert", "alert"),
]
ANSWER_COLUMN: tuple[str | Text, str] = (" fleet kill", "answer")
QUEUE_COLUMNS: list[tuple[str | Text, str]] = [
    (" engine", "engine"),
    (Text(" ttl", justify="right"), "ttl"),
    (" strategy", "strategy"),
    (" symbol", "symbol"),
    (" side", "side"),
    (Text(" qty", justify="right"), "qty"),
    (Text(" ref", justify="right"), "ref"),
    (Text(" value", justify="right"), "notional"),
    (Text(" conf", justify="right"), "conf"),
]


@dataclass(eq=False)
class FleetMember:
    """One engine of the fleet as the cockpit keeps it: its session and client, a local view
    fed by its own events and snapshots, its full cockpit screen (built on first Enter), the
    link's state, and its answer to the last fleet-wide kill."""

    name: str
    where: str  # the socket path, as the detail line shows it
    session: Session
    client: EngineClient | None = None
    view: LocalView = field(default_factory=LocalView)
    main: MainScreen | None = None
    link: str = CONNECTING
    reason: str = ""  # why DISCONNECTED (or what it waits for while connecting)
    curve: list[list[float]] = field(default_factory=list)
    pulling: bool = False
    kill_answer: str = ""
    kill_detail: str = ""
    # Set when an entry before it reaches the same engine run (two tunnels to one host): the
    # engine this entry names is not watched, so the row is not shown as connected.
    twin: str = ""

    @property
    def snapshot(self) -> dict[str, Any]:
        return self.view.snapshot

    @property
    def approvals(self) -> list[dict[str, Any]]:
        pending = self.view.snapshot.get("approvals") or []
        return sorted(
            (a for a in pending if isinstance(a, dict) and "id" in a),
            key=lambda a: a.get("created_ts", 0),
        )

    @property
    def state(self) -> str:
        """connected, DISCONNECTED, or connecting (only until the first attempt failed: an
        engine that is not there is shown as such, while it is dialled again)."""
        waiting: Any = getattr(self.session, "waiting", "")
        if self.link == CONNECTING and waiting:
            return DISCONNECTED
        if self.twin and self.link == CONNECTED:
            return DISCONNECTED
        return self.link

    def waiting_reason(self) -> str:
        waiting = getattr(self.session, "waiting", "")
        return str(waiting or self.reason or "waiting for the engine")

    def down_reason(self) -> str:
        """Why the row is not connected: the twin it duplicates, else the client's latest
        reason while it dials again (an engine that now refuses, say, as serving another
        data dir), else why the link dropped."""
        if self.twin and self.link == CONNECTED:
            return self.twin
        return self.waiting_reason()


def _styled(text: str, style: str = "") -> Text:
    return Text(f" {text}", style=style, no_wrap=True, overflow="ellipsis")


def _clock(ns: Any) -> str:
    if not isinstance(ns, int | float) or ns <= 0:
        return ""
    try:
        return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%H:%M:%S")
    except (OverflowError, ValueError, OSError):
        return ""


def last_alert(snap: dict[str, Any]) -> Text:
    """The engine's last alert (``snapshot["alerts"]["last"]``): time, title, and whether it
    was delivered; "-" when it has none (or alerts are not set up)."""
    alerts = snap.get("alerts")
    last = alerts.get("last") if isinstance(alerts, dict) else None
    if not isinstance(last, dict):
        return _styled("-", "bright_black")
    title = printable(str(last.get("title") or last.get("kind") or "?"))
    when = _clock(last.get("ts"))
    ok = last.get("ok", True)
    return _styled(
        f"{when} {title}{'' if ok else ' (not delivered)'}".strip(),
        "" if ok else "bold red",
    )


def venues_cell(snap: dict[str, Any], *, link_down: bool = False) -> Text:
    """Each venue's connection; ``?`` while the engine's own link is down (its venues' state
    is not seen: a green dot there was the last known one, shown as current)."""
    venues = snap.get("venues") or {}
    if not isinstance(venues, dict) or not venues:
        return _styled("simulated" if snap.get("mode") == "paper" else "-", "bright_black")
    t = Text(" ", no_wrap=True, overflow="ellipsis")
    for i, (name, info) in enumerate(sorted(venues.items())):
        info = info if isinstance(info, dict) else {}
        if i:
            t.append(" ")
        if halted_reason(info):
            t.append(f"{name} HALTED", style="bold white on red")
        else:
            t.append(f"{name}", style="bold")
            ok = info.get("connected")
            if link_down:
                t.append("?", style="bold yellow")
            else:
                t.append("●" if ok else "✖", style="green" if ok else "bold red")
    return t


def engine_cells(m: FleetMember, answer_column: bool) -> list[Text]:
    """One engine's row. Values stay the last known ones while the link is down (dimmed),
    with DISCONNECTED in the link column."""
    snap = m.snapshot
    loaded = m.view.loaded
    state_now = m.state
    dim = "bright_black" if state_now != CONNECTED else ""
    if state_now == CONNECTED:
        link = _styled(CONNECTED, "green")
    elif state_now == DISCONNECTED:
        link = _styled(DISCONNECTED, "bold white on red")
    else:
        link = _styled("connecting…", "bold yellow")
    mode = str(snap.get("mode", "")) if loaded else ""
    state = str((snap.get("trading_state") or {}).get("state", "")) if loaded else ""
    kill = snap.get("kill_switch") or {}
    portfolio = snap.get("portfolio") or {}
    pending = len(m.approvals)
    if not loaded:
        kill_cell = _styled("")
    elif kill.get("engaged"):
        kill_cell = _styled(str(kill.get("level", "")).upper(), "bold white on red")
    else:
        kill_cell = _styled("off", dim or "green")
    day = portfolio.get("daily_pnl")
    day_style = dim or ("green" if (day or 0) > 0 else "red" if (day or 0) < 0 else "")
    cells = [
        _styled(truncate(m.name, 16), "bold"),
        link,
        _styled(mode.upper(), dim or MODE_STYLES.get(mode, "")) if mode else _styled(""),
        _styled(state, dim or STATE_STYLES.get(state, "bold")) if state else _styled(""),
        kill_cell,
        right(fmt_money(portfolio.get("equity")) if loaded else "", dim),
        right(fmt_money(day, signed=True) if loaded else "", day_style),
        right(str(pending) if loaded else "", ("bold black on yellow" if pending else dim)),
        venues_cell(snap, link_down=state_now != CONNECTED) if loaded else _styled(""),
        last_alert(snap) if loaded else _styled(""),
    ]
    if answer_column:
        style = {ACCEPTED: "bold green", REFUSED: "bold red", UNREACHABLE: "bold white on red"}
        cells.append(_styled(m.kill_answer or "-", style.get(m.kill_answer, "bright_black")))
    return cells


def fleet_header(
    members: Sequence[FleetMember], *, read_only: bool, muted: bool, clock: datetime
) -> Text:
    """The overview's top line: how many engines, how many answer, what waits, what is
    killed; the clock at the right."""
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(" FLEET ", style="bold reverse")
    n = len(members)
    up = sum(m.state == CONNECTED for m in members)
    down = sum(m.state == DISCONNECTED for m in members)
    t.append(f" {n} engine{'s' if n != 1 else ''} ", style="bold")
    t.append("│ ", style="bright_black")
    t.append(f"{up} connected", style="green" if up == n else "")
    if down:
        t.append(" ")
        t.append(f" {down} DISCONNECTED ", style="bold white on red")
    # An entry that reaches another's engine (a twin) is not counted twice.
    killed = sum(
        bool((m.snapshot.get("kill_switch") or {}).get("engaged")) for m in members if not m.twin
    )
    if killed:
        t.append(" │ ", style="bright_black")
        t.append(f" KILL on {killed} ", style="bold white on red")
    pending = sum(len(m.approvals) for m in members if not m.twin)
    if pending:
        t.append(" │ ", style="bright_black")
        t.append(f" {pending} to approve ", style="bold black on yellow")
    if read_only:
        t.append(" │ ", style="bright_black")
        t.append(" READ-ONLY viewer ", style="bold black on white")
    if muted:
        t.append(" │ ", style="bright_black")
        t.append(" bell muted ", style="bold reverse")
    t.append(" │ ", style="bright_black")
    t.append(clock.strftime("%H:%M:%S UTC"))
    return t


KEYS = (
    ("enter", "open"),
    ("esc", "back"),
    ("a", "approve"),
    ("r", "reject"),
    ("K", "kill all"),
    ("tab", "tables"),
    ("m", "mute"),
    ("q", "quit"),
)


def keys_line(width: int) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    for key, label in KEYS:
        if t.cell_len + len(key) + len(label) + 3 > width:
            break
        t.append(f" {key} ", style="bold reverse")
        t.append(f"{label} ")
    return t


class EnginesPane(Pane):
    TITLE = "Engines"
    DEFAULT_CSS = """
    EnginesPane { height: auto; max-height: 50%; }
    EnginesPane KeyedTable { height: auto; max-height: 20; }
    EnginesPane #engine-detail { height: 2; padding: 0 1; color: $text; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.answer_column = False
        self._detail_key: tuple[Any, ...] = ()
        self._members: dict[str, FleetMember] = {}

    def compose(self) -> ComposeResult:
        yield KeyedTable(ENGINE_COLUMNS, id="fleet-table")
        yield Static("", id="engine-detail")

    @property
    def table(self) -> KeyedTable:
        return self.query_one(KeyedTable)

    @property
    def selected(self) -> str | None:
        return self.table.selected_key

    def update_fleet(self, members: Sequence[FleetMember]) -> None:
        self._members = {m.name: m for m in members}
        answers = any(m.kill_answer for m in members)
        if answers != self.answer_column:
            self.answer_column = answers
            self.table.set_columns(ENGINE_COLUMNS + ([ANSWER_COLUMN] if answers else []))
        rows: list[Row] = [(m.name, engine_cells(m, answers)) for m in members]
        self.table.sync(rows)
        self._show_detail()

    def _show_detail(self) -> None:
        m = self._members.get(self.selected or "")
        if m is None:
            text = Text("No engine.", style="bright_black")
            key: tuple[Any, ...] = ("none",)
        else:
            text = Text(no_wrap=False)
            text.append(m.name, style="bold")
            text.append(printable(f" · {m.where}"))
            if m.state != CONNECTED:
                text.append(printable(f" · {m.state}: {m.down_reason()}"), style="bold red")
            if m.kill_answer:
                text.append(printable(f" · fleet kill {m.kill_answer}: {m.kill_detail}"))
            alert = last_alert(m.snapshot) if m.view.loaded else Text("")
            if alert.plain.strip() not in ("", "-"):
                text.append(" · last alert:")
                text.append(alert)
            key = (text.plain, tuple(text.spans))
        if key != self._detail_key:
            self._detail_key = key
            self.query_one("#engine-detail", Static).update(text, layout=False)

    @on(DataTable.RowHighlighted, "#fleet-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()


class QueuePane(Pane):
    """Every engine's pending approvals, oldest first within each engine, the engine named."""

    TITLE = "Approvals · every engine"
    DEFAULT_CSS = """
    QueuePane #queue-detail { height: 2; padding: 0 1; color: $text; }
    QueuePane.-urgent { border: round $warning; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._pending: dict[str, tuple[FleetMember, dict[str, Any]]] = {}
        self._detail_key: tuple[Any, ...] = ()

    def compose(self) -> ComposeResult:
        yield KeyedTable(QUEUE_COLUMNS, id="queue-table")
        yield Static("", id="queue-detail")

    @property
    def table(self) -> KeyedTable:
        return self.query_one(KeyedTable)

    @property
    def selected(self) -> tuple[FleetMember, dict[str, Any]] | None:
        key = self.table.selected_key
        return self._pending.get(key) if key else None

    def take_slid(self) -> tuple[FleetMember, dict[str, Any]] | None:
        """The approval under the cursor if it slid there (perhaps from another engine) when
        the one being read went away; once: the next key acts on it."""
        key = self.table.take_slid()
        return self._pending.get(key) if key else None

    def update_fleet(self, members: Sequence[FleetMember]) -> None:
        pending: dict[str, tuple[FleetMember, dict[str, Any]]] = {}
        rows: list[Row] = []
        for m in members:
            if getattr(m, "twin", ""):  # listed once, under the entry it duplicates
                continue
            now = engine_clock(m.snapshot, connected=m.state == CONNECTED)
            for a in m.approvals:
                key = f"{m.name}{SEP}{a['id']}"
                pending[key] = (m, a)
                rows.append((key, (left(truncate(m.name, 14), "bold"), *approval_cells(a, now))))
        self._pending = pending
        self.table.sync(rows)
        self.set_class(bool(rows), "-urgent")
        title = f"Approvals · every engine · {len(rows)} pending" if rows else self.TITLE
        if title != self.border_title:
            self.border_title = title
        subtitle = "a approve · r reject · enter open its engine" if rows else ""
        if subtitle != self.border_subtitle:
            self.border_subtitle = subtitle
        self._show_detail()

    def _show_detail(self) -> None:
        chosen = self.selected
        if chosen is None:
            key: tuple[Any, ...] = ("none",)
            text = Text("No intent is waiting for approval on any engine.", style="bright_black")
        else:
            m, a = chosen
            now = engine_clock(m.snapshot, connected=m.state == CONNECTED)
            ttl = None if now is None else (int(a.get("expires_ts", 0)) - now) // 1_000_000_000
            key = (m.name, a["id"], ttl)
            text = Text(f"{m.name}: ", style="bold")
            text.append(approval_detail(a, now))
        if key != self._detail_key:
            self._detail_key = key
            self.query_one("#queue-detail", Static).update(text, layout=False)

    @on(DataTable.RowHighlighted, "#queue-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()


class OverviewScreen(Screen[None]):
    """The fleet at a glance. Keys post messages; the app acts on the engine they name."""

    DEFAULT_CSS = """
    OverviewScreen { layout: vertical; }
    OverviewScreen #fleet-header { height: 1; background: $panel; }
    OverviewScreen #fleet-body { height: 1fr; layout: vertical; }
    OverviewScreen #fleet-keys { height: 1; background: $panel; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "decide('approve')", "Approve"),
        Binding("r", "decide('reject')", "Reject"),
        Binding("K", "kill_all", "Kill all"),
        Binding("m", "app.mute", "Mute"),
        Binding("q", "app.quit", "Quit"),
    ]

    class OpenEngine(Message):
        """Enter on an engine (or on one of its approvals): show its full cockpit."""

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    class Decide(Message):
        """Approve or reject one approval of one engine."""

        def __init__(self, name: str, approval: dict[str, Any], verb: str) -> None:
            super().__init__()
            self.name = name
            self.approval = approval
            self.verb = verb

    class KillAll(Message):
        """K: the fleet-wide kill switch (the app asks for the level and a reason)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        super().__init__()
        self._clock = clock
        self.read_only = False
        self.muted = False
        self._header_key: tuple[Any, ...] = ()
        self._keys_width = -1

    def compose(self) -> ComposeResult:
        yield Static(" connecting…", id="fleet-header")
        with Container(id="fleet-body"):
            yield EnginesPane(id="engines")
            yield QueuePane(id="queue")
        yield Static("", id="fleet-keys")

    @property
    def engines(self) -> EnginesPane:
        return self.query_one(EnginesPane)

    @property
    def queue(self) -> QueuePane:
        return self.query_one(QueuePane)

    def on_mount(self) -> None:
        self._fit_keys(self.app.size.width)
        self.query_one("#fleet-table").focus()

    def on_resize(self, event: events.Resize) -> None:
        self._fit_keys(event.size.width)

    def _fit_keys(self, width: int) -> None:
        if width != self._keys_width:
            self._keys_width = width
            self.query_one("#fleet-keys", Static).update(keys_line(width), layout=False)

    def update_fleet(self, members: Sequence[FleetMember]) -> None:
        """Render the fleet (the app wraps this in batch_update)."""
        header = fleet_header(
            members, read_only=self.read_only, muted=self.muted, clock=self._clock()
        )
        key = (header.plain, tuple(header.spans))
        if key != self._header_key:
            self._header_key = key
            self.query_one("#fleet-header", Static).update(header, layout=False)
        self.engines.update_fleet(members)
        self.queue.update_fleet(members)

    @on(DataTable.RowSelected, "#fleet-table")
    def _open_engine(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.post_message(self.OpenEngine(str(event.row_key.value)))

    @on(DataTable.RowSelected, "#queue-table")
    def _open_approvals_engine(self, event: DataTable.RowSelected) -> None:
        chosen = self.queue.selected
        if chosen is not None:
            self.post_message(self.OpenEngine(chosen[0].name))

    def action_decide(self, verb: str) -> None:
        slid = self.queue.take_slid()
        if slid is not None:
            m, a = slid
            self.app.notify(
                f"The approval you had selected is gone (expired, answered or superseded); the "
                f"cursor is now on {m.name}: {a.get('strategy', '')} {a.get('side', '')} "
                f"{a.get('qty', '')} {a.get('symbol', '')}: press the key again to {verb} it",
                severity="warning",
                timeout=6,
            )
            return
        chosen = self.queue.selected
        if chosen is None:
            self.app.notify(f"Nothing to {verb}: no intent is waiting on any engine", timeout=4)
            return
        m, a = chosen
        self.post_message(self.Decide(m.name, a, verb))

    def action_kill_all(self) -> None:
        self.post_message(self.KillAll())


class FleetKillScreen(KillScreen):
    """The kill switch on every engine of the fleet: the same level, the same reason.

    Closes when every engine accepted; otherwise stays open with each engine's answer, so
    the person sees which did not (and may press Enter to try those again)."""

    DEFAULT_CSS = """
    FleetKillScreen #fleet-answers { height: auto; margin-top: 1; }
    """

    def __init__(self, names: Sequence[str], engaged: int) -> None:
        super().__init__({}, title=f"KILL SWITCH · EVERY ENGINE ({len(names)})")
        self.names = list(names)
        self.engaged = engaged
        self.default_reason = "fleet-wide kill switch from the cockpit"

    def scope_note(self) -> str:
        shown = ", ".join(self.names[:8]) + (" …" if len(self.names) > 8 else "")
        note = f"Sent to each engine at once: {shown}."
        if self.engaged:
            note += f" Already engaged on {self.engaged}; a higher level can still be chosen."
        return note

    def refused(self, reply: dict[str, Any]) -> None:
        answers = reply.get("answers") or []
        lines = [str(reply.get("message", ""))]
        lines += [f"{name}: {answer} — {detail}" for name, answer, detail in answers]
        self.show_message("\n".join(lines), error=True)
