"""The cockpit: a Textual app over the engine client interface.

The app reaches the engine only through ``EngineClient`` (snapshot, events, command, close),
so the embedded engine and a daemon attached over a socket behave the same. It keeps a local
view (``cockpit.tui.view``) up to date from events, pulls a light snapshot about ten times a
second for the tables and a longer one about once a second for the chart, and never does
anything slow on the engine's loop: a refresh diffs and touches only cells that changed.

Dialogs never hold the app's methods: they post ``Dialog.CommandSubmitted``, the app sends the
command and hands the reply back (``Dialog.answered``).

``run_embedded`` builds the engine inside the app's event loop, runs ``engine.run()`` beside
the app and, on quit, stops it and flushes the journal. The command-line entry is
``cockpit.cli.main``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.notifications import Notification, Notify, SeverityLevel
from textual.screen import ModalScreen, Screen

from cockpit.client import EngineClient
from cockpit.tui.approval_mode_screen import ApprovalModeScreen
from cockpit.tui.arm_screen import ArmLiveScreen
from cockpit.tui.audit_screen import AuditScreen
from cockpit.tui.backtest_screen import BacktestScreen
from cockpit.tui.chain_screen import ChainScreen
from cockpit.tui.confirm_screen import ConfirmScreen
from cockpit.tui.dialog import Dialog, refusal_reason
from cockpit.tui.filter_screen import FilterScreen
from cockpit.tui.flatten_screen import FlattenScreen
from cockpit.tui.help_screen import HelpScreen
from cockpit.tui.kill_screen import KillScreen
from cockpit.tui.limit_screen import LimitScreen
from cockpit.tui.main_screen import MainScreen
from cockpit.tui.orders import open_orders
from cockpit.tui.palette import CockpitCommands
from cockpit.tui.performance_screen import PerformanceScreen
from cockpit.tui.rearm_screen import RearmScreen
from cockpit.tui.release_screen import ReleaseScreen
from cockpit.tui.resolve_screen import ResolveScreen
from cockpit.tui.session import ClientSession, EmbeddedSession, Session
from cockpit.tui.strategy_screen import StrategyScreen
from cockpit.tui.sweep_screen import SweepScreen
from cockpit.tui.toasts import Toast, ToastDesk
from cockpit.tui.trace import TracePane
from cockpit.tui.view import LocalView, Notice, TraceFilter
from cockpit.venue_state import differences
from engine.vocabulary import EventKind, ExitCode

TABLE_INTERVAL_S = 0.1  # tables, header, approvals countdown: about 10 Hz
CHART_INTERVAL_S = 1.0  # equity chart: about 1 Hz
INITIAL_TRACE = 500
CURVE_POINTS = 600
APPROVALS_NAMED = 3  # the approvals toast names this many (newest first), then "…"


def utc_now() -> datetime:
    return datetime.now(UTC)


def _kill_released(ev: dict[str, Any]) -> bool:
    """The event releases the kill switch (its "engaged" toast is then stale)."""
    return (
        ev.get("event") == EventKind.SAFETY
        and ev.get("what") == "kill_switch"
        and not (ev.get("after") or {}).get("kill_level")
    )


class CockpitApp(App[int]):
    """The trading cockpit. Give it a connected ``client`` or a ``session`` that opens one."""

    TITLE = "cockpit"
    main: MainScreen  # pushed on mount
    COMMANDS = App.COMMANDS | {CockpitCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
        # Ctrl-C quits as q does (asking first while orders are open), from a dialog too:
        # Textual's own only toasted "Press q to quit", and over a dialog did nothing at all.
        # Text selected on the screen is still copied (see action_interrupt).
        Binding("ctrl+c", "interrupt", "Quit", show=False, priority=True),
    ]
    CSS = """
    Screen { background: $background; }
    Toast { max-width: 50%; }
    """

    def __init__(
        self,
        client: EngineClient | None = None,
        *,
        session: Session | None = None,
        clock: Callable[[], datetime] = utc_now,
        table_interval: float = TABLE_INTERVAL_S,
        chart_interval: float = CHART_INTERVAL_S,
        initial_trace: int = INITIAL_TRACE,
        curve_points: int = CURVE_POINTS,
        live_phrase: str | None = None,
        notes: Sequence[str] = (),
    ) -> None:
        """``live_phrase``: live mode, armed but for the typed confirmation; the cockpit asks
        for exactly this phrase before it opens the session (nothing starts without it).
        ``notes``: lines said on stderr before the cockpit took the screen, said again."""
        super().__init__()
        if session is None:
            if client is None:
                raise ValueError("CockpitApp needs a client or a session")
            session = ClientSession(client)
        self.session = session
        self.client: EngineClient | None = client
        self.clock = clock
        self.table_interval = table_interval
        self.chart_interval = chart_interval
        self.initial_trace = initial_trace
        self.curve_points = curve_points
        self.live_phrase = live_phrase
        self.start_notes = tuple(notes)
        self.view = LocalView()
        self.loaded = asyncio.Event()
        self.notices: list[Notice] = []
        self.bells = 0
        self.refreshes = 0
        self.last_reply: dict[str, Any] | None = None
        self._session_task: asyncio.Task[None] | None = None
        self._closing = False
        self._refresh_error = ""
        self._kill_screen: KillScreen | None = None
        self._filter_screen: FilterScreen | None = None
        self._deciding: set[str] = set()  # approvals whose answer is on its way to the engine
        self._engine_curve: list[list[float]] = []
        self._stopped = ""  # why the embedded engine's loop ended (it no longer runs)
        self.toasts = ToastDesk(self._show_toast, self._hide_toast, self._ring)

    # ------------------------------------------------------------------ lifecycle

    async def on_mount(self) -> None:
        await self.mount_cockpit()

    async def mount_cockpit(self) -> None:
        """The main screen, then the session opened in a worker (a fleet shows its overview
        instead: Textual calls every class's ``on_mount``, so subclasses override this)."""
        self.main = MainScreen(lambda: self.clock())
        await self.push_screen(self.main)
        self.run_worker(self._start(), group="start")

    async def _start(self) -> None:
        if self.live_phrase is not None and not await self.push_screen_wait(
            ArmLiveScreen(self.live_phrase)
        ):
            self.exit(
                1,
                return_code=ExitCode.USAGE,
                message="cockpit: live trading not armed (the typed confirmation was not "
                "given); nothing was started",
            )
            return
        try:
            self.client = await self.session.open()
            snap = await self.client.snapshot(trace=self.initial_trace, curve=self.curve_points)
        except Exception as exc:
            # An error that carries its own exit code (the data directory in use: 2) is a
            # sentence for the user as it stands; anything else is named by its type.
            code = getattr(exc, "exit_code", None)
            what = str(exc) if isinstance(code, int) else f"{type(exc).__name__}: {exc}"
            self.exit(
                1,
                return_code=code if isinstance(code, int) else ExitCode.FAILURE,
                message=f"cockpit: cannot start the engine: {what}",
            )
            return
        self.view.load(snap)
        self.main.set_read_only(self.read_only)
        self.view.add_log(int(snap.get("now", 0)), "info", "connected: initial snapshot loaded")
        for note in self.start_notes:
            warning = note.startswith("warning:")
            self.view.add_log(int(snap.get("now", 0)), "warn" if warning else "info", note)
            if warning:
                self.toast(Toast("start", note, "Warning", "warning", 30, bell=True))
        self._render()
        self._engine_curve = snap.get("equity_curve", [])
        self._draw_chart()
        self.run_worker(self._consume_events(), group="events", exit_on_error=False)
        self._session_task = asyncio.create_task(self._run_session())
        self.set_interval(self.table_interval, self.refresh_tables)
        self.set_interval(self.chart_interval, self.refresh_chart)
        # Everything built so far (widgets, styles, the initial view) lives as long as the
        # app: keep it out of the cyclic collector's way so a collection does not stall a key.
        gc.freeze()
        self.loaded.set()

    async def _run_session(self) -> None:
        """The engine's loop (embedded) runs beside the app; say so if it ends on its own."""
        try:
            await self.session.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._stopped = f"engine stopped: {type(exc).__name__}: {exc}"
            self._alert(self._stopped)
            self._mark_stopped()
            return
        embedded = isinstance(self.session, EmbeddedSession) and self.session.free_run
        if embedded and not self._closing:
            self._stopped = "engine loop ended (feed finished or stop requested)"
            self._alert(self._stopped)
            self._mark_stopped()

    def _stopped_snapshot(self, snap: dict[str, Any]) -> dict[str, Any]:
        """The embedded engine's loop ended: its clock no longer moves and nothing it shows
        changes, as when an attached cockpit's link is down. The snapshot says so (the header
        reads ENGINE STOPPED, TTLs are unknown) instead of an ACTIVE engine frozen in time."""
        return {
            **snap,
            "connection": {"connected": False, "stopped": True, "message": self._stopped},
        }

    def _mark_stopped(self) -> None:
        if self.view.loaded:
            self.view.snapshot = self._stopped_snapshot(self.view.snapshot)
            self._render()

    async def on_unmount(self) -> None:
        await self.close_cockpit()

    async def close_cockpit(self) -> None:
        """Stop the engine (embedded) or close the connection; the journal is flushed."""
        self._closing = True
        with contextlib.suppress(Exception):
            await self.session.close()
        task = self._session_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    # ------------------------------------------------------------------ data flow

    async def _consume_events(self) -> None:
        """Events are applied as they come (cheap); rendering happens on the timer."""
        assert self.client is not None
        try:
            async for ev in self.client.events():
                if ev.get("event") == EventKind.CONNECTION:
                    await self._connection_changed(ev)
                    continue
                try:
                    notices = self.view.apply_events((ev,))
                except Exception as exc:  # one odd event must not take the cockpit down
                    self._alert(
                        f"could not apply event {ev.get('seq')}: {type(exc).__name__}: {exc}"
                    )
                    continue
                for notice in notices:
                    self._notice(notice)
                if ev.get("event") == EventKind.APPROVAL:
                    self._approvals_changed()
                if _kill_released(ev):
                    self.toasts.withdraw("kill")  # "kill switch engaged" is no longer true
                if ev.get("event") == EventKind.BREAKER and not self.view.tripped:
                    self.toasts.withdraw("breaker")  # every breaker re-armed: "tripped" is not
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._alert(f"event stream failed: {type(exc).__name__}: {exc}")
            return
        if not self._closing:
            self._alert("the engine's event stream ended: approvals and alerts no longer arrive")

    async def _connection_changed(self, ev: dict[str, Any]) -> None:
        """Attached over the socket: the engine went away or came back. When events were
        missed while away, reload the whole view from a full snapshot (nothing is skipped)."""
        if not ev.get("connected"):
            self._alert(f"disconnected from the engine: {ev.get('message') or 'reconnecting'}")
            return
        restarted = bool(ev.get("restarted"))
        if ev.get("resync") and self.client is not None:
            try:
                snap = await self.client.snapshot(trace=self.initial_trace, curve=self.curve_points)
                self.view.reload(snap)
                self._engine_curve = snap.get("equity_curve", [])
            except Exception as exc:
                # The trace and log still hold what came before the link went: say so.
                self._alert(
                    f"reconnected, but the view could not be reloaded ({type(exc).__name__}: "
                    f"{exc}): the decision trace may be out of date"
                )
                self._render()
                return
            # What the toasts said of the view before (approvals waiting, the kill switch
            # engaged) is judged again against the one reloaded.
            self._approvals_changed()
            if not self.view.snapshot.get("kill_switch", {}).get("engaged"):
                self.toasts.withdraw("kill")
            if not self.view.tripped:
                self.toasts.withdraw("breaker")
        now = int(self.view.snapshot.get("now", 0))
        if restarted:
            self.view.add_log(
                now,
                "warn",
                "reconnected to a new engine run (the engine restarted): "
                "everything shown is now the new run's",
            )
        else:
            self.view.add_log(now, "info", "reconnected")
        self._render()
        self._draw_chart()

    async def refresh_tables(self) -> None:
        """Pull the light snapshot and render; never raises (a timer would crash the app)."""
        if self.client is None:
            return
        try:
            snap = await self.client.snapshot(trace=0, curve=0)
        except Exception as exc:
            message = f"snapshot failed: {type(exc).__name__}: {exc}"
            if message != self._refresh_error:
                self._refresh_error = message
                self._alert(message)
            return
        self._refresh_error = ""
        if self._stopped:
            snap = self._stopped_snapshot(snap)
        self.view.apply_snapshot(snap)
        self._render()

    async def refresh_chart(self) -> None:
        if self.client is None:
            return
        try:
            snap = await self.client.snapshot(trace=0, curve=self.curve_points)
        except Exception:
            return
        self._engine_curve = snap.get("equity_curve", [])
        self._draw_chart()

    def on_main_screen_resumed(self, message: MainScreen.Resumed) -> None:
        """A dialog closed: show the toasts it held back, render the tables now; the chart
        catches up on its own 1 Hz tick."""
        self.toasts.uncover()
        if self.is_running:
            self.call_after_refresh(self._render)

    def _draw_chart(self) -> None:
        if not self.main.is_attached or self.screen is not self.main:
            return
        curve = self.view.equity_curve(self._engine_curve)
        try:
            self.main.chart.update_curve(curve, self.view.snapshot.get("portfolio", {}))
        except NoMatches:
            return  # the screen is being torn down (quitting), as in _render

    def _render(self) -> None:
        """Render the view into the panes. Skipped while a dialog covers the main screen:
        the dialog is what the person is looking at, and a repaint under it competes with
        their keys. The main screen renders again the moment it is back."""
        if not self.view.loaded or not self.main.is_attached or self.screen is not self.main:
            return
        self.refreshes += 1
        try:
            with self.batch_update():
                self.main.update_view(self.view)
        except NoMatches:
            return  # the screen is being torn down (quitting)

    # ------------------------------------------------------------------ notices and commands

    def _notice(self, notice: Notice) -> None:
        """Approvals waiting, breakers tripping and the kill switch: a toast and the bell,
        one toast per kind however many come (see ``cockpit.tui.toasts``)."""
        self.notices.append(notice)
        del self.notices[:-100]
        if notice.kind == "approval":
            self.toast(self._approvals_toast(notice.message))
            return
        self.toast(Toast(notice.kind, notice.message, notice.title, notice.severity, 10, bell=True))

    def _approvals_toast(self, newest: str = "") -> Toast:
        """One toast for every approval waiting: how many, and which (newest first)."""
        waiting = list(reversed(self.view.waiting.values()))
        n = len(waiting)
        if n == 1 and newest:
            message = newest
        else:
            names = " · ".join(waiting[:APPROVALS_NAMED]) + (" …" if n > APPROVALS_NAMED else "")
            message = f"{n} approval{'s' if n != 1 else ''} waiting: {names}"
        # A viewer's keys do nothing here: the toast must not offer them.
        title = (
            "Approvals (read-only: an operator answers)"
            if self.read_only
            else "Approvals (a approve · r reject)"
        )
        return Toast("approval", message, title, "warning", 10, bell=True, summary=True)

    def _approvals_changed(self) -> None:
        """One was answered or expired: the toast says how many still wait, or goes."""
        if self.view.waiting:
            self.toasts.revise(self._approvals_toast())
        else:
            self.toasts.withdraw("approval")

    def _alert(self, text: str) -> None:
        self.view.add_log(int(self.view.snapshot.get("now", 0)), "error", text)
        self.toast(Toast("alert", text, "cockpit", "error", timeout=15, bell=True))

    def hint(self, text: str, *, title: str = "", severity: SeverityLevel = "information") -> None:
        """A short answer to a key (nothing to approve, pane shown first): one at a time,
        each shown as it is. Hints are not logged, so they are never counted into a burst
        whose toast would say "the log (6) has them all"."""
        timeout = 4 if not title else 6
        self.toast(Toast("hint", text, title, severity, timeout, summary=True, hold=False))

    def toast(self, toast: Toast) -> None:
        """Every toast goes through the desk: coalesced by kind, held while a dialog is up
        (a full screen such as the backtest's is not a dialog: toasts show over it)."""
        if isinstance(self.screen, ModalScreen):
            self.toasts.cover()
        self.toasts.add(toast)

    def _show_toast(self, notification: Notification) -> None:
        self.post_message(Notify(notification))

    def _hide_toast(self, notification: Notification) -> None:
        # Queued behind the Notify that shows it (a burst may replace a toast at once).
        # Textual has no public call to take one notification down; its own Toast uses this.
        self.call_later(self._unnotify, notification)

    def _ring(self) -> None:
        self.bells += 1
        self.bell()

    def _open(
        self, screen: Screen[Any] | str, callback: Callable[[Any], None] | None = None
    ) -> None:
        """Push a screen; before a dialog, the toasts step aside so none is drawn over it."""
        if isinstance(self.get_screen(screen) if isinstance(screen, str) else screen, ModalScreen):
            self.toasts.cover()
        self.push_screen(screen, callback)

    def on_main_screen_covered(self, message: MainScreen.Covered) -> None:
        """A dialog the app did not open itself (the command palette) covers the main one."""
        if isinstance(self.screen, ModalScreen):
            self.toasts.cover()

    def action_mute(self) -> None:
        """m: the bell for approvals and notices on or off (errors still ring)."""
        muted = self.toasts.muted = not self.toasts.muted
        self.main.set_muted(muted)
        self.hint(
            "Bell muted: approvals and notices no longer ring (errors still do). m unmutes."
            if muted
            else "Bell on: approvals and notices ring again."
        )

    def on_dialog_command_submitted(self, message: Dialog.CommandSubmitted) -> None:
        """A dialog asked for a command: send it beside the app's own loop (keys, ctrl+q and
        the refresh go on while the engine answers), then hand the dialog the reply."""
        self.run_worker(self._answer_dialog(message), group="command", exit_on_error=False)

    async def _answer_dialog(self, message: Dialog.CommandSubmitted) -> None:
        reply = await self.run_command(message.command, message.args)
        message.dialog.answered(message, reply)

    async def run_command(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Every action goes through here: the client's command, and the reply as a toast."""
        return await self.send_command(self.client, name, args)

    async def send_command(
        self, client: EngineClient | None, name: str, args: dict[str, Any], *, label: str = ""
    ) -> dict[str, Any]:
        """``name`` through ``client``, the reply as a toast (its title starts with ``label``,
        the engine's name in a fleet), then the tables refreshed."""
        if client is None:
            reply: dict[str, Any] = {"ok": False, "sent": False, "message": "not connected"}
        else:
            try:
                reply = await client.command(name, args)
            except Exception as exc:
                reply = {"ok": False, "sent": False, "message": f"{type(exc).__name__}: {exc}"}
        ok = bool(reply.get("ok"))
        self.last_reply = reply
        message = str(reply.get("message", ""))
        if not ok and reply.get("sent") is False:
            # The engine never saw it, so no audit event will log it: the cockpit does, or a
            # burst's toast ("the log (6) has them all") would point at nothing.
            now = int(self.view.snapshot.get("now", 0))
            self.view.add_log(now, "error", f"{label}{name}: {message}")
        self.toast(
            Toast(
                f"reply:{label}{name}",
                message if ok else refusal_reason(message),  # the title says "refused"
                f"{label}{name}: {'ok' if ok else 'refused'}",
                "information" if ok else "error",
                timeout=6 if ok else 10,
            )
        )
        await self.refresh_tables()
        return reply

    # ------------------------------------------------------------------ actions (keys)

    def _approval_target(self, verb: str) -> dict[str, Any] | None:
        if self.screen is not self.main:
            # The command palette over a screen that covers the cockpit (performance, audit):
            # the approvals cursor underneath is on a request the person cannot see.
            self.hint(
                f"Approvals are on the main screen: go back (Escape) and press the key there "
                f"to {verb} the one shown",
                title=verb,
                severity="warning",
            )
            return None
        if not self.main.is_visible(2):
            # Never act on something the person cannot see: show it first.
            self.main.show_group(2)
            self.hint(f"Approvals shown: press the key again to {verb}")
            return None
        slid = self.main.approvals.take_slid()
        if slid is not None:
            # Never answer a request the trader has not looked at: the one under the cursor
            # went away (expired, answered elsewhere, superseded) and this one took its row.
            what = f"{slid.get('side', '')} {slid.get('qty', '')} {slid.get('symbol', '')}"
            self.hint(
                f"The approval you had selected is gone (expired, answered or superseded); "
                f"the cursor is now on {slid.get('strategy', '')} {what}: press the key again "
                f"to {verb} it",
                title=verb,
                severity="warning",
            )
            return None
        selected = self.main.approvals.selected
        if selected is None:
            self.hint(f"Nothing to {verb}: no intent is waiting")
        return selected

    def _viewer_refused(self, what: str) -> bool:
        """A read-only cockpit sends nothing: say so instead of opening a dialog whose answer
        the engine would refuse anyway."""
        if not self.read_only:
            return False
        self.hint(
            f"Read-only cockpit (viewer): {what} needs an operator (attach without --read-only)",
            title=what,
            severity="warning",
        )
        return True

    def action_approve(self) -> None:
        if self._viewer_refused("approve"):
            return
        a = self._approval_target("approve")
        if a is not None:
            self._decide(a["id"], "approve", {"id": a["id"], "hash": a.get("hash")})

    def action_reject(self) -> None:
        if self._viewer_refused("reject"):
            return
        a = self._approval_target("reject")
        if a is not None:
            self._decide(a["id"], "reject", {"id": a["id"], "reason": "rejected by operator"})

    def _decide(
        self,
        approval_id: str,
        command: str,
        args: dict[str, Any],
        *,
        client: EngineClient | None = None,
        label: str = "",
    ) -> None:
        """Send an approval's answer in a worker, as the dialogs do: keys and ctrl+q go on
        while the engine answers, and a second key for the same approval meanwhile is not a
        second command. ``client``/``label``: another engine's (a fleet's queue), not the
        one on screen."""
        key = f"{label}{approval_id}"
        if key in self._deciding:
            self.hint(f"{command}: waiting for the engine's answer")
            return
        self._deciding.add(key)

        async def send() -> None:
            try:
                if client is None:
                    await self.run_command(command, args)
                else:
                    await self.send_command(client, command, args, label=label)
            finally:
                self._deciding.discard(key)

        self.run_worker(send(), group="command", exit_on_error=False)

    def action_kill(self) -> None:
        if self._viewer_refused("the kill switch"):
            return
        kill = self.view.snapshot.get("kill_switch", {})
        if self._kill_screen is None:
            # Built once and kept: the kill switch must come up fast every time.
            self._kill_screen = KillScreen(kill)
            self.install_screen(self._kill_screen, "kill")
        else:
            self._kill_screen.prepare(kill)
        self._open("kill")

    def action_release(self) -> None:
        if self._viewer_refused("release"):
            return
        kill = self.view.snapshot.get("kill_switch", {})
        self._open(ReleaseScreen(kill))

    def _strategy_screen(self, command: str) -> None:
        if self._viewer_refused(command):
            return
        strategies = self.view.snapshot.get("strategies", [])
        if not strategies:
            self.hint("No strategies known yet")
            return
        selected = self.main.safety.selected_strategy
        self._open(StrategyScreen(command, strategies, selected))

    def action_pause(self) -> None:
        self._strategy_screen("pause")

    def action_resume(self) -> None:
        self._strategy_screen("resume")

    def action_rearm(self) -> None:
        if self._viewer_refused("re-arm"):
            return
        tripped = [b for b in self.view.snapshot.get("breakers", []) if b.get("tripped")]
        if not tripped:
            self.hint("No breaker is tripped")
            return
        self._open(RearmScreen(tripped))

    def action_flatten(self) -> None:
        if self._viewer_refused("flatten"):
            return
        snap = self.view.snapshot
        symbols = sorted(snap.get("quotes", {}))
        selected = self.main.positions.selected_symbol
        self._open(FlattenScreen(snap.get("positions", []), symbols, selected))

    def action_filter(self) -> None:
        snap = self.view.snapshot
        strategies = sorted(
            {s["id"] for s in snap.get("strategies", [])} | self.view.trace.strategies - {""}
        )
        symbols = sorted(set(snap.get("quotes", {})) | self.view.trace.symbols - {""})
        venues = sorted(set(snap.get("venues") or {}) | self.view.trace.venues - {""})
        current = self.main.trace.filter
        if self._filter_screen is None:
            self._filter_screen = FilterScreen(current, strategies, symbols, venues)
            self.install_screen(self._filter_screen, "filter")
        else:
            self._filter_screen.prepare(current, strategies, symbols, venues)
        self._open("filter")

    def on_filter_screen_changed(self, message: FilterScreen.Changed) -> None:
        self.apply_filter(message.trace_filter)

    def apply_filter(self, flt: TraceFilter) -> None:
        if flt == self.main.trace.filter:
            return
        self.main.set_filter(flt)
        with self.batch_update():
            self.main.trace.update_view(self.view)
            self.main.positions.update_view(self.view)
            self.main.orders.update_view(self.view)

    def action_clear_filter(self) -> None:
        self.apply_filter(TraceFilter(outcome="acting"))

    def action_open_chain(self, decision_id: str | None = None) -> None:
        did = decision_id or self.main.trace.selected_decision
        entry = self.view.trace.get(did) if did else None
        if entry is None:
            self.hint("No decision selected (press 3, pick a row, Enter)")
            return
        self._open(ChainScreen(entry, lambda: self.view.trace.get(entry.decision_id)))

    def on_trace_pane_open_chain(self, message: TracePane.OpenChain) -> None:
        self.action_open_chain(message.decision_id)

    def action_pane(self, group: int) -> None:
        self.main.show_group(group)

    @property
    def read_only(self) -> bool:
        """Attached as a viewer (``cockpit attach --read-only``): the engine refuses every
        command, and the cockpit does not offer the ones that need an answer typed first."""
        return getattr(self.client, "role", "operator") != "operator"

    def action_resolve(self) -> None:
        """Answer a venue's reconciliation difference: the selected one in the Venues pane,
        else the first one that blocks trading."""
        if self._viewer_refused("resolving a difference"):
            return
        diffs = differences(self.view.snapshot.get("venues") or {})
        open_ = [d for d in diffs if d.answerable]
        if not open_:
            self.hint("Nothing to resolve: no venue difference waits for an answer")
            return
        selected = self.main.venues.selected
        if selected is None or not selected.answerable:
            selected = next((d for d in open_ if d.needs_answer), open_[0])
        self.main.venues.select(selected.row_key)
        waiting = sum(1 for d in diffs if d.needs_answer)
        self._open(ResolveScreen(selected, waiting))

    def action_backtest(self) -> None:
        """A local backtest (default config, chosen strategy): works attached or embedded."""
        self._open(BacktestScreen())

    def action_sweep(self) -> None:
        """A local parameter sweep (default config): works attached or embedded."""
        self._open(SweepScreen())

    def action_help(self) -> None:
        self._open(HelpScreen())

    def action_approval_mode(self) -> None:
        """M: switch a strategy's approval mode (the engine enforces graduation)."""
        if self._viewer_refused("set_approval_mode"):
            return
        strategies = self.view.snapshot.get("strategies", [])
        if not strategies:
            self.hint("No strategies known yet")
            return
        self._open(ApprovalModeScreen(strategies, self.main.safety.selected_strategy))

    def action_set_limit(self) -> None:
        """L: change a limit at run time, with a reason."""
        if self._viewer_refused("set_limit"):
            return
        limits = self.view.snapshot.get("settable_limits") or {}
        if not limits:
            self.hint("This engine does not report its limits; use cockpit set-limit")
            return
        self._open(LimitScreen(limits))

    def action_audit(self) -> None:
        """A: the audit trail (read-only: a viewer may look)."""
        view = self.view
        self._open(AuditScreen(lambda: (view.audit_version, list(view.audit.values()))))

    def action_performance(self) -> None:
        """P: per-strategy performance, profit per day, latency (read-only)."""
        self._open(PerformanceScreen(lambda: self.view.snapshot))

    async def action_interrupt(self) -> None:
        """Ctrl-C: copy the text selected on the screen with the mouse, if any; else quit as
        q does (a reflex a trader has in every terminal program). A field's text is not
        copied: a dialog's field selects its default text on focus, so Ctrl-C there would
        copy "kill switch from the cockpit" instead of quitting."""
        selected = self.screen.get_selected_text()
        if selected:
            self.copy_to_clipboard(selected)
            return
        await self.action_quit()

    async def action_quit(self) -> None:
        """Quit; while orders are open in an engine this process runs, ask first (a second
        ctrl+q quits at once). An attached cockpit only lets go of the engine: it quits at once."""
        if isinstance(self.screen, ArmLiveScreen):
            # Live not armed: the same way out as its Escape (exit 2, "nothing was started"),
            # not a 0 a script would read as a good run.
            self.screen.dismiss(False)
            return
        if isinstance(self.screen, ConfirmScreen) and self.screen.quitting:
            self.exit(0)
            return
        attached = getattr(self.client, "attached", False)
        n = 0 if attached else open_orders(self.view.snapshot)
        if not n:
            self.exit(0)
            return
        screen = ConfirmScreen(
            "Quit?",
            f"{n} order(s) are still open. Quitting stops the engine; the orders stay in the "
            "journal and are reconciled on the next start.",
            yes="y/Enter: quit",
            danger=True,
            quitting=True,
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.exit(0)

        self._open(screen, answered)


# ---------------------------------------------------------------------- embedded mode and CLI


async def run_embedded(
    cfg: Any,
    data_dir: str | Path | None = None,
    *,
    clock: Callable[[], datetime] = utc_now,
    live_phrase: str | None = None,
    companions: Sequence[Any] = (),
    notes: Sequence[str] = (),
) -> int:
    """Run the engine in this process with the cockpit on top; returns an exit code.

    The engine is built, started and run inside the app's event loop; quitting requests its
    stop, waits for the loop to finish the current batch and flushes the journal. With
    ``live_phrase`` (live mode, everything else armed) the cockpit first asks for the phrase
    typed, and starts nothing without it. ``companions`` run beside the engine (the metrics
    sampler of ``cockpit --metrics``); ``notes``, what was said on stderr before the screen
    was the cockpit's, are said again in its log ("warning: ..." also as a toast).
    """

    async def add_companions(engine: Any) -> None:
        engine.companions.extend(companions)

    session = EmbeddedSession(cfg, data_dir, prepare=add_companions if companions else None)
    app = CockpitApp(session=session, clock=clock, live_phrase=live_phrase, notes=notes)
    loop = asyncio.get_running_loop()
    # SIGTERM, or SIGHUP when an SSH session drops: leave the way q does (journal flushed).
    handled = []
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, app.exit, 0)
            handled.append(sig)
    try:
        await app.run_async()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await session.close()
    if session.error is not None:
        print(f"cockpit: the engine stopped: {session.error}", file=sys.stderr)
        return ExitCode.FAILURE
    engine = session.engine
    if engine is not None and engine.blocked_reason:
        print(f"engine stopped trading: {engine.blocked_reason}", file=sys.stderr)
        return ExitCode.FAILURE
    return int(app.return_code or 0)
