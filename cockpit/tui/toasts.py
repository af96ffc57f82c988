"""Toasts that do not wear a person out.

The default config asks for an approval every few seconds; one toast and one bell each
stacked three to five toasts over half the screen, over open dialogs, with no way to quiet
them. The desk keeps at most one toast per kind of notice (approvals, breakers, command
replies, ...): a burst of the same kind updates that toast instead of stacking another
(approvals say how many wait: "3 approvals waiting: BTC/USDT buy · ETH/USDT buy · SOL/USDT
sell"; other kinds count: "Breaker tripped (×2)", only notices of the same title: a reply
"ok" after "refused" starts its own count), and the bell rings once per burst, not
once per notice (and again at most once a minute while a burst goes on: approvals every few
seconds keep one toast up for as long as they come).

While a dialog is up (``covered``) no toast is shown: the ones on screen are taken down and
everything that arrives meanwhile is folded into its kind's burst, shown when the dialog
closes. A dialog is what the person is reading and answering; a toast over it hides the
very fields they type into.

Muting silences the bell for everything but errors (a breaker, the kill switch, a blocked
engine, a lost connection still ring): those are the notices that must not be missed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from textual.notifications import Notification, SeverityLevel

RING_AGAIN_S = 60.0  # a burst that goes on rings again after this long
BACK_AT_LEAST_S = 2.0  # a toast a dialog took down comes back for what it had left, this at least


@dataclass(frozen=True)
class Toast:
    """One notice for the desk. ``key`` is its kind: notices of one key share a toast."""

    key: str
    message: str
    title: str = ""
    severity: SeverityLevel = "information"
    timeout: float = 6.0
    bell: bool = False
    summary: bool = False  # the message sums up the whole burst: shown as it is, not counted
    hold: bool = True  # kept for after a dialog (False: a hint that is stale by then)


@dataclass
class Burst:
    """Notices of one key folded together while their toast is up (or held)."""

    last: Toast
    count: int = 0
    shown: Notification | None = None  # None: held while a dialog is up
    rang: float | None = None  # when its bell last rang (the desk's clock)
    left: float | None = None  # taken down by a dialog: the time it still had on screen

    def title(self) -> str:
        t = self.last
        if self.count == 1 or t.summary:
            return t.title
        return f"{t.title} (×{self.count})"

    def message(self) -> str:
        t = self.last
        if self.count == 1 or t.summary:
            return t.message
        return f"{t.message}\n(+{self.count - 1} earlier: the log (6) has them all)"


class ToastDesk:
    """Decides what is shown and when the bell rings; the app gives it three hands:
    ``show`` and ``hide`` a Textual notification, and ``ring`` the terminal bell."""

    def __init__(
        self,
        show: Callable[[Notification], None],
        hide: Callable[[Notification], None],
        ring: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._show = show
        self._hide = hide
        self._ring = ring
        self._clock = clock
        self.muted = False
        self.covered = False
        self.rings = 0
        self._bursts: dict[str, Burst] = {}

    def add(self, toast: Toast) -> None:
        """Show ``toast``, or fold it into the burst of its kind still on screen (or held)."""
        burst = self._bursts.get(toast.key)
        if burst is None or not self._alive(burst):
            burst = self._bursts[toast.key] = Burst(toast)
        elif burst.last.title != toast.title:
            # Another verdict of the same kind ("release: ok" after "release: refused"): it
            # takes the toast's place, counted on its own; three refusals and an acceptance
            # read "release: ok (×4)". Its bell is the burst's: once, as before.
            if burst.shown is not None:
                self._hide(burst.shown)
            burst = self._bursts[toast.key] = Burst(toast, rang=burst.rang)
        burst.last = toast
        burst.count += 1
        burst.left = None  # news: shown for its whole time
        now = self._clock()
        due = burst.rang is None or now - burst.rang >= RING_AGAIN_S
        if due and toast.bell and (not self.muted or toast.severity == "error"):
            burst.rang = now
            self.rings += 1
            self._ring()
        if not self.covered:
            self._raise(burst)

    def revise(self, toast: Toast) -> None:
        """Correct the toast of ``toast.key`` if one is up or held (the count of approvals
        waiting went down): no bell, no new burst, and it goes when it would have gone."""
        burst = self._bursts.get(toast.key)
        if burst is None or not self._alive(burst):
            return
        burst.last = toast
        if burst.shown is not None:
            self._raise(burst, max(burst.shown.time_left, 0.5))

    def withdraw(self, key: str) -> None:
        """Nothing of that kind is current any more (the last approval was answered)."""
        burst = self._bursts.pop(key, None)
        if burst is not None and burst.shown is not None:
            self._hide(burst.shown)

    def cover(self) -> None:
        """A dialog opened: take every toast down and hold what is still current."""
        if self.covered:
            return
        self.covered = True
        for key, burst in list(self._bursts.items()):
            if not self._alive(burst) or not burst.last.hold:
                self.withdraw(key)
                continue
            if burst.shown is not None:
                # It comes back for the time it had left, not a fresh one: a notice taken
                # down by each dialog in turn would otherwise outlive what it announced
                # ("kill switch engaged" back after the release dialog, for ever).
                burst.left = max(burst.shown.time_left, BACK_AT_LEAST_S)
                self._hide(burst.shown)
                burst.shown = None

    def uncover(self) -> None:
        """The dialog closed: show what was held, one toast per kind, without a bell."""
        if not self.covered:
            return
        self.covered = False
        for burst in self._bursts.values():
            if burst.shown is None:
                self._raise(burst, burst.left)
                burst.left = None

    def held(self) -> list[str]:
        """The kinds waiting for the dialog to close (for tests and the curious)."""
        return [k for k, b in self._bursts.items() if b.shown is None]

    def _alive(self, burst: Burst) -> bool:
        if burst.shown is None:
            return self.covered  # held: lives until the dialog closes
        return not burst.shown.has_expired

    def _raise(self, burst: Burst, timeout: float | None = None) -> None:
        if burst.shown is not None:
            self._hide(burst.shown)
        t = burst.last
        burst.shown = Notification(
            burst.message(), burst.title(), t.severity, timeout or t.timeout, markup=False
        )
        self._show(burst.shown)
