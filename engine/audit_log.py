"""The newest operator actions, for the cockpit's Audit view: the same records as `cockpit audit`.

Seeded at start from the journal (the newest :data:`AUDIT_SHOWN` records, however old: an audit
trail is not a 24-hour window) and kept current from the events the engine shows, so the Audit
view and the CLI read one definition of a record (:func:`engine.history.audit_record`).
"""

from __future__ import annotations

import itertools
from collections import deque
from pathlib import Path
from typing import Any

from engine.history import AUDIT_KINDS, RowFilter, audit_record, audit_records
from engine.journal import JournalRow

AUDIT_SHOWN = 500
"""Records a full snapshot carries (the cockpit asks for it once, on connect)."""
AUDIT_RECENT = 20
"""Records every light snapshot carries: the cockpit merges them by key, so a burst of more
than this between two pulls (ten a second) is the only way to miss one until reconnect."""


class AuditLog:
    def __init__(self, size: int = AUDIT_SHOWN) -> None:
        self.records: deque[dict[str, Any]] = deque(maxlen=size)

    def seed(self, journal: Path) -> None:
        """The journal's newest records, oldest first (an engine's first start has none)."""
        if not journal.exists():
            return
        assert self.records.maxlen is not None
        for rec in audit_records(journal, RowFilter(kinds=None), self.records.maxlen):
            self.records.append({**rec.to_dict(), "key": f"j{rec.seq}"})

    def observe(self, item: dict[str, Any]) -> None:
        """An event the engine showed (the dict clients get): keep it if it is an audit record."""
        kind = item.get("event")
        if kind not in AUDIT_KINDS:
            return
        row = JournalRow(item["seq"], item["ts"], str(kind), item, "", "")
        rec = audit_record(row)
        if rec is not None:
            # Keyed by the event's number this session (journal seq for the seeded ones).
            self.records.append({**rec.to_dict(), "key": f"e{item['seq']}"})

    def newest(self, n: int) -> list[dict[str, Any]]:
        """The newest ``n`` records, oldest first."""
        if n <= 0:
            return []
        # From the end: a light snapshot (ten a second) asks for 20 of up to 500.
        newest = list(itertools.islice(reversed(self.records), n))
        newest.reverse()
        return newest
