"""An acting decision without an L2 book: a feed that streams none (the simulated market, a
replayed file) is told apart from a feed with L2 that had none (unsynced, refused): the chain
screen read "book: book MISSING" in bold red on every decision of the default paper cockpit."""

from __future__ import annotations

from rich.text import Text

from cockpit.tui.chain_screen import _book
from engine.bookshot import missing_book
from engine.vocabulary import book_summary


def _shown(book: dict) -> tuple[str, str]:
    t = Text()
    _book(t, book)
    line = t.plain.splitlines()[0]
    styles = {str(span.style) for span in t.spans if span.start >= len("  book: ")}
    return line, ",".join(sorted(styles))


def test_a_feed_without_l2_is_no_alarm() -> None:
    book = missing_book("the simulated feed streams no L2 book (top of book only)", True)
    assert (
        book_summary(book) == "book none: the simulated feed streams no L2 book (top of book only)"
    )
    line, style = _shown(book)
    assert line == "  book: none: the simulated feed streams no L2 book (top of book only)"
    assert "red" not in style


def test_a_feed_with_l2_that_had_none_is_shown_in_red() -> None:
    book = missing_book("no L2 book for this symbol now (its feed has none, or it is not synced)")
    assert book_summary(book).startswith("book MISSING: ")
    line, style = _shown(book)
    assert line.startswith("  book: MISSING: no L2 book") and "book: book" not in line
    assert "bold red" in style
