"""An acting decision's L2 book: the top levels at the moment it acted, compressed into its row.

When a decision acts (buy, sell, a protective exit), the runtime puts the symbol's latest L2
book (the venue feed's depth the paper venue walks, or a replayed recording's) into the
decision's journal row as ``book``: ``{"levels", "ts", "age_ms", "enc", "z"}`` where ``z`` is
base64 of zlib-compressed JSON ``{"bids": [[price, size], ...], "asks": [...]}`` (best first,
at most ``levels`` a side). About 20 levels a side cost ~0.5 KB a row, only on acting decisions.
Being in the decision's own row, the book is under the journal's hash chain with it.

Without a book (a feed with no L2 depth, a book refused or unsynced) the row says why:
``{"missing": "..."}``; the runtime counts both (``counters.book_snapshots``).
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Sequence
from typing import Any

from engine.types import NS_PER_MS
from engine.vocabulary import BOOK_ENCODING

DEFAULT_LEVELS = 20


def encode_book(
    bids: Sequence[tuple[float, float]],
    asks: Sequence[tuple[float, float]],
    book_ts_ns: int,
    decision_ts_ns: int,
    levels: int = DEFAULT_LEVELS,
) -> dict[str, Any]:
    """The compressed snapshot of the top ``levels`` of each side."""
    doc = {"bids": [list(x) for x in bids[:levels]], "asks": [list(x) for x in asks[:levels]]}
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return {
        "levels": levels,
        "ts": book_ts_ns,
        "age_ms": round((decision_ts_ns - book_ts_ns) / NS_PER_MS, 3),
        "enc": BOOK_ENCODING,
        "z": base64.b64encode(zlib.compress(raw, 6)).decode("ascii"),
    }


def missing_book(reason: str, feed_has_none: bool = False) -> dict[str, Any]:
    """Why the row has no book; ``feed_has_none``: the feed streams no L2 at all (the simulated
    market, a replayed file of quotes or bars), an expected absence, not a fault to show."""
    return {"missing": reason, "no_l2_feed": True} if feed_has_none else {"missing": reason}
