"""The cockpit over a fleet of engines: an overview first, each engine's full cockpit on Enter.

Every engine has its own session, client, local view and tasks: its events are applied as they
come by a task of its own, and the overview pulls each engine's light snapshot on a bounded
timer, one pull in flight per engine. An engine that goes away (or stops answering) marks its
own row DISCONNECTED; the others' tasks never wait for it. Its socket client reconnects by
itself and the row comes back.

Enter shows that engine's cockpit: the app's ``client``, ``view`` and ``main`` become that
engine's, so every pane, key and dialog of the single-engine cockpit works unchanged; Escape
returns to the overview. Approvals of every engine wait in one queue and are answered on the
engine they came from; ``K`` engages the kill switch on every engine at once and shows each
engine's answer. Screens post messages; the app acts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any, ClassVar

from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import ModalScreen

from cockpit.app import CHART_INTERVAL_S, TABLE_INTERVAL_S, CockpitApp, utc_now
from cockpit.tui.dialog import Dialog
from cockpit.tui.fleet import (
    ACCEPTED,
    CONNECTED,
    DISCONNECTED,
    REFUSED,
    UNREACHABLE,
    FleetKillScreen,
    FleetMember,
    OverviewScreen,
)
from cockpit.tui.keys import ACTIONS
from cockpit.tui.main_screen import MainScreen
from cockpit.tui.palette import PaletteCommand
from cockpit.tui.toasts import Toast
from cockpit.tui.view import LocalView, Notice
from engine.vocabulary import EventKind

OVERVIEW_INTERVAL_S = 0.25  # each engine's light snapshot, while the overview is shown
KILL_TIMEOUT_S = 10.0  # a bound on one engine's kill answer (the client has its own, shorter)
APPROVALS_NAMED = 3
# The single-engine cockpit's actions that act on, or show, the engine on screen.
ENGINE_ACTIONS = {a.action.split("(")[0] for a in ACTIONS} - {"help", "quit", "mute", "backtest"}


def kill_answer(reply: dict[str, Any]) -> str:
    """accepted, refused, or unreachable (not sent: no link; or no reply in time, which may or
    may not have been applied: the detail says so)."""
    if reply.get("ok"):
        return ACCEPTED
    if reply.get("sent") is False or reply.get("timeout"):
        return UNREACHABLE
    return REFUSED


class FleetApp(CockpitApp):
    """Several engines in one cockpit. ``members`` are built by ``cockpit attach`` (or a
    test) with a session each; nothing is connected yet."""

    BINDINGS: ClassVar[list[BindingType]] = [
        *CockpitApp.BINDINGS,
        Binding("escape", "overview", "Fleet overview", show=False),
    ]

    def __init__(
        self,
        members: Sequence[FleetMember],
        *,
        read_only: bool = False,
        clock: Callable[[], datetime] = utc_now,
        table_interval: float = TABLE_INTERVAL_S,
        chart_interval: float = CHART_INTERVAL_S,
        overview_interval: float = OVERVIEW_INTERVAL_S,
    ) -> None:
        if not members:
            raise ValueError("a fleet needs at least one engine")
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ValueError("engine names in a fleet must be unique")
        super().__init__(
            session=members[0].session,
            clock=clock,
            table_interval=table_interval,
            chart_interval=chart_interval,
        )
        self.members = list(members)
        self.by_name = {m.name: m for m in self.members}
        self.fleet_read_only = read_only
        self.overview_interval = overview_interval
        self.shown: FleetMember | None = None
        self.overview = OverviewScreen(lambda: self.clock())
        self.overview_renders = 0
        self._pulls: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def mount_cockpit(self) -> None:
        await self.push_screen(self.overview)
        self.overview.read_only = self.read_only
        for m in self.members:
            self.run_worker(self._run_member(m), group="members", exit_on_error=False)
        self.set_interval(self.overview_interval, self.refresh_overview)
        self.set_interval(self.table_interval, self.refresh_tables)
        self.set_interval(self.chart_interval, self.refresh_chart)
        self._render_overview()
        self.loaded.set()

    async def close_cockpit(self) -> None:
        self._closing = True
        for task in list(self._pulls):
            task.cancel()
        await asyncio.gather(*(self._close_member(m) for m in self.members), return_exceptions=True)

    async def _close_member(self, m: FleetMember) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(m.session.close(), 5)

    @property
    def read_only(self) -> bool:
        """Attached as a viewer (``--read-only``): the engines refuse every command, and the
        cockpit does not offer the ones that need an answer typed first."""
        return self.fleet_read_only

    # ------------------------------------------------------------------ one engine's tasks

    async def _run_member(self, m: FleetMember) -> None:
        """Connect (waiting while the engine is not there), load, then apply its events."""
        try:
            client = await m.session.open()
            snap = await client.snapshot(trace=self.initial_trace, curve=self.curve_points)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._member_down(m, f"cannot attach: {type(exc).__name__}: {exc}")
            return
        m.client = client
        m.view.load(snap)
        m.curve = snap.get("equity_curve", [])
        m.view.add_log(int(snap.get("now", 0)), "info", "connected: initial snapshot loaded")
        self._member_up(m)
        if m.view.waiting:
            self._approvals_changed()
        await self._consume_member(m)

    async def _consume_member(self, m: FleetMember) -> None:
        client = m.client
        assert client is not None
        try:
            async for ev in client.events():
                if ev.get("event") == EventKind.CONNECTION:
                    await self._member_connection(m, ev)
                    continue
                try:
                    notices = m.view.apply_events((ev,))
                except Exception as exc:  # one odd event must not take the cockpit down
                    self._member_alert(
                        m, f"could not apply event {ev.get('seq')}: {type(exc).__name__}: {exc}"
                    )
                    continue
                for notice in notices:
                    self._member_notice(m, notice)
                if ev.get("event") == EventKind.APPROVAL:
                    self._approvals_changed()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._member_alert(m, f"event stream failed: {type(exc).__name__}: {exc}")
            self._member_down(m, "event stream failed")
            return
        if not self._closing:
            self._member_down(m, "the event stream ended")
            self._member_alert(m, "the engine's event stream ended: its approvals no longer arrive")

    async def _member_connection(self, m: FleetMember, ev: dict[str, Any]) -> None:
        """The engine went away or came back; events missed while away: reload its view."""
        if not ev.get("connected"):
            reason = str(ev.get("message") or "connection lost")
            self._member_down(m, reason)
            self._member_alert(m, f"disconnected: {reason}")
            return
        if ev.get("resync") and m.client is not None:
            try:
                snap = await m.client.snapshot(trace=self.initial_trace, curve=self.curve_points)
                m.view.reload(snap)
                m.curve = snap.get("equity_curve", [])
                if m is self.shown:
                    self._engine_curve = m.curve
            except Exception as exc:
                self._member_alert(
                    m,
                    f"reconnected, but the view could not be reloaded ({type(exc).__name__}: "
                    f"{exc}): the decision trace may be out of date",
                )
        if ev.get("restarted"):
            m.view.add_log(
                int(m.snapshot.get("now", 0)),
                "warn",
                "reconnected to a new engine run (the engine restarted): "
                "everything shown is now the new run's",
            )
        else:
            m.view.add_log(int(m.snapshot.get("now", 0)), "info", "reconnected")
        self._member_up(m)
        if m is self.shown:
            self._render()

    def _member_up(self, m: FleetMember) -> None:
        m.link, m.reason = CONNECTED, ""

    def _member_down(self, m: FleetMember, reason: str) -> None:
        m.link, m.reason = DISCONNECTED, reason

    def _member_notice(self, m: FleetMember, notice: Notice) -> None:
        """Toast and bell as for one engine, named; one toast per kind and engine (all the
        fleet's approvals share one)."""
        if notice.kind == "approval":
            self._notice(Notice("approval", notice.title, f"{m.name}: {notice.message}"))
            return
        kind = f"{notice.kind}:{m.name}"
        self._notice(Notice(kind, f"{m.name}: {notice.title}", notice.message, notice.severity))

    def _member_alert(self, m: FleetMember, text: str) -> None:
        m.view.add_log(int(m.snapshot.get("now", 0)), "error", text)
        self.toast(Toast(f"alert:{m.name}", text, m.name, "error", timeout=15, bell=True))

    def _alert(self, text: str) -> None:
        if self.shown is not None:
            self._member_alert(self.shown, text)
        else:
            self.toast(Toast("alert", text, "cockpit", "error", timeout=15, bell=True))

    # ------------------------------------------------------------------ the overview

    def find_twins(self) -> None:
        """Mark each entry that reaches the same engine run as an entry before it (the
        welcome's ``instance``): two tunnels to one host looked like two engines, each
        connected, and a fleet kill was 'accepted by 2 of 2' while the other host traded on."""
        runs: dict[str, str] = {}
        for m in self.members:
            dialled = getattr(getattr(m.session, "client", None), "path", None)
            if dialled is not None:  # a data dir's socket is found again at every dial
                m.where = str(dialled)
            client = m.client
            run = getattr(client, "instance", None) if getattr(client, "connected", False) else None
            first = runs.setdefault(run, m.name) if isinstance(run, str) and run else m.name
            m.twin = (
                ""
                if first == m.name
                else f"reaches the same engine as {first} (run {run}): the engine this entry "
                "names is not watched; check its socket (an SSH tunnel to the wrong host?)"
            )

    def refresh_overview(self) -> None:
        """Start a light snapshot pull for each engine with none in flight (a slow engine
        delays only its own row), then render what the earlier pulls brought."""
        self.find_twins()
        if self.shown is None:
            for m in self.members:
                if m.client is not None and not m.pulling:
                    m.pulling = True
                    task = asyncio.create_task(self._pull(m))
                    self._pulls.add(task)
                    task.add_done_callback(self._pulls.discard)
        self._render_overview()

    async def _pull(self, m: FleetMember) -> None:
        client = m.client
        try:
            if client is None:
                return
            snap = await client.snapshot(trace=0, curve=0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._member_down(m, f"snapshot failed: {type(exc).__name__}: {exc}")
            return
        finally:
            m.pulling = False
        m.view.apply_snapshot(snap)
        conn = snap.get("connection")
        if isinstance(conn, dict) and not conn.get("connected", True):
            self._member_down(m, str(conn.get("message") or "connection lost"))
        elif m.link != CONNECTED and getattr(client, "connected", True):
            self._member_up(m)

    def _render_overview(self) -> None:
        stack = self.screen_stack  # empty while the app starts or ends
        if not stack or (stack[-1] is not self.overview and not self._overview_under_dialog()):
            return
        self.overview_renders += 1
        try:
            with self.batch_update():
                self.overview.update_fleet(self.members)
        except NoMatches:
            return  # being torn down

    def _overview_under_dialog(self) -> bool:
        stack = self.screen_stack
        return len(stack) >= 2 and isinstance(stack[-1], ModalScreen) and stack[-2] is self.overview

    # ------------------------------------------------------------------ one engine's cockpit

    async def on_overview_screen_open_engine(self, message: OverviewScreen.OpenEngine) -> None:
        m = self.by_name.get(message.name)
        if m is None:
            return
        if m.client is None or not m.view.loaded:
            self.hint(f"{m.name} is not connected yet: {m.waiting_reason()}", title=m.name)
            return
        await self.open_engine(m)

    async def open_engine(self, m: FleetMember) -> None:
        """Show ``m``'s full cockpit: its client, view and main screen become the app's, once
        the screen is mounted (a render before that would fill tables without columns)."""
        if self.shown is not None or self.screen is not self.overview:
            return  # a second Enter while the first one opens
        if m.main is None:
            m.main = MainScreen(lambda: self.clock(), label=m.name)
            self.install_screen(m.main, f"engine:{self.members.index(m)}")
        await self.push_screen(m.main)
        self.shown = m
        self.session, self.client, self.view, self.main = m.session, m.client, m.view, m.main
        self._engine_curve = m.curve
        self._refresh_error = ""
        self.call_after_refresh(self._entered, m)

    def _entered(self, m: FleetMember) -> None:
        if self.shown is not m or m.main is None:
            return
        m.main.set_read_only(self.read_only)
        m.main.set_muted(self.toasts.muted)
        self._render()
        self._draw_chart()
        self.hint(f"{m.name}: its full cockpit. Escape: back to the fleet", title=m.name)

    def action_overview(self) -> None:
        """Escape on an engine's cockpit: back to the fleet overview."""
        m = self.shown
        if m is None or m.main is None or self.screen is not m.main:
            return
        m.curve = self._engine_curve
        self.shown = None
        self.client = None
        self.view = LocalView()  # nothing renders into the engine's screen meanwhile
        self.pop_screen()
        self.call_after_refresh(self.refresh_overview)

    async def refresh_chart(self) -> None:
        await super().refresh_chart()
        if self.shown is not None:
            self.shown.curve = self._engine_curve

    async def run_command(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        label = f"{self.shown.name}: " if self.shown is not None else ""
        return await self.send_command(self.client, name, args, label=label)

    # ------------------------------------------------------------------ the fleet's approvals

    def on_overview_screen_decide(self, message: OverviewScreen.Decide) -> None:
        """a / r in the overview's queue: answered on the engine the approval came from."""
        if self._viewer_refused(message.verb):
            return
        m = self.by_name.get(message.name)
        if m is None:
            return
        a = message.approval
        if message.verb == "approve":
            args: dict[str, Any] = {"id": a["id"], "hash": a.get("hash")}
        else:
            args = {"id": a["id"], "reason": "rejected by operator"}
        self._decide(a["id"], message.verb, args, client=m.client, label=f"{m.name}: ")

    def _approvals_toast(self, newest: str = "") -> Toast:
        """One toast for the fleet's approvals: how many, and which (newest first)."""
        waiting = [  # (a twin's are its first entry's: not counted twice)
            f"{m.name} {subject}"
            for m in self.members
            if not m.twin
            for subject in m.view.waiting.values()
        ]
        waiting.reverse()
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
        if any(m.view.waiting for m in self.members):
            self.toasts.revise(self._approvals_toast())
        else:
            self.toasts.withdraw("approval")

    # ------------------------------------------------------------------ the fleet-wide kill

    def on_overview_screen_kill_all(self, message: OverviewScreen.KillAll) -> None:
        if self._viewer_refused("the fleet-wide kill switch"):
            return
        engaged = sum(
            bool((m.snapshot.get("kill_switch") or {}).get("engaged"))
            for m in self.members
            if not m.twin
        )
        self._open(FleetKillScreen([m.name for m in self.members], engaged))

    def on_dialog_command_submitted(self, message: Dialog.CommandSubmitted) -> None:
        # Textual calls every class's handler along the MRO: CockpitApp's is called here,
        # once, for a dialog of the engine on screen, and never for the fleet's kill.
        message.prevent_default()
        if isinstance(message.dialog, FleetKillScreen):
            self.run_worker(self._kill_fleet(message), group="command", exit_on_error=False)
            return
        super().on_dialog_command_submitted(message)

    async def _kill_fleet(self, message: Dialog.CommandSubmitted) -> None:
        """The kill on every engine at once, each bounded; every answer kept for its row."""
        args = dict(message.args)

        async def one(m: FleetMember) -> dict[str, Any]:
            client = m.client
            if client is None:
                why = m.waiting_reason()
                return {"ok": False, "sent": False, "message": f"not sent: not connected ({why})"}
            try:
                return await asyncio.wait_for(client.command("kill", args), KILL_TIMEOUT_S)
            except TimeoutError:
                return {
                    "ok": False,
                    "timeout": True,
                    "message": f"no reply within {KILL_TIMEOUT_S:g} s; it may or may not have "
                    "been applied, check that engine's audit trail",
                }
            except Exception as exc:
                return {"ok": False, "sent": False, "message": f"{type(exc).__name__}: {exc}"}

        replies = await asyncio.gather(*(one(m) for m in self.members))
        self.find_twins()
        answers = []
        for m, reply in zip(self.members, replies, strict=True):
            m.kill_answer = kill_answer(reply)
            m.kill_detail = str(reply.get("message", ""))
            if m.twin:  # sent all the same (it may be wrong), never counted as confirmed
                m.kill_answer = UNREACHABLE
                m.kill_detail = f"{m.twin}; {m.kill_detail}"
            answers.append((m.name, m.kill_answer, m.kill_detail))
            m.view.add_log(
                int(m.snapshot.get("now", 0)),
                "ok" if m.kill_answer == ACCEPTED else "error",
                f"fleet kill {m.kill_answer}: {m.kill_detail}",
            )
        accepted = sum(a == ACCEPTED for _, a, _ in answers)
        ok = accepted == len(answers)
        not_ok = ", ".join(f"{n} {a}" for n, a, _ in answers if a != ACCEPTED)
        summary = f"kill switch accepted by {accepted} of {len(answers)} engines" + (
            f"; {not_ok}" if not_ok else ""
        )
        self.toast(
            Toast(
                "reply:fleet-kill",
                summary,
                f"fleet kill: {'ok' if ok else 'NOT confirmed by every engine'}",
                "information" if ok else "error",
                timeout=8 if ok else 20,
                bell=not ok,
            )
        )
        self.last_reply = {"ok": ok, "message": summary, "answers": answers}
        message.dialog.answered(message, self.last_reply)
        self.refresh_overview()

    # ------------------------------------------------------------------ keys

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """One engine's actions (from the command palette: their keys live on its screen)
        need that engine on screen: in the overview they do nothing."""
        if action in ENGINE_ACTIONS and self.shown is None:
            return False
        return super().check_action(action, parameters)

    def palette_commands(self) -> list[PaletteCommand]:
        """In the overview, the palette offers the overview's keys (one engine's actions are
        not run there: see ``check_action``)."""
        if self.shown is not None:
            return []
        run = self.overview.run_action
        return [
            (
                "Kill all (K)",
                "Kill switch on every engine: a level and a reason, then each engine's answer",
                partial(run, "kill_all"),
            ),
            (
                "Approve (a)",
                "Approve the selected approval, on its engine",
                partial(run, "decide('approve')"),
            ),
            (
                "Reject (r)",
                "Reject the selected approval, on its engine",
                partial(run, "decide('reject')"),
            ),
        ]

    def action_mute(self) -> None:
        muted = self.toasts.muted = not self.toasts.muted
        self.overview.muted = muted
        for m in self.members:
            if m.main is not None and m.main.is_mounted:
                m.main.set_muted(muted)
        self._render_overview()
        self.hint(
            "Bell muted: approvals and notices no longer ring (errors still do). m unmutes."
            if muted
            else "Bell on: approvals and notices ring again."
        )
