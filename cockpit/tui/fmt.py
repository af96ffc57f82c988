"""Number, time and bar formatting shared by the panes.

Kept plain (strings and Rich ``Text``) so a pane can compare what it would show with what it
shows and touch a cell only when it changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from rich.text import Text

NS_PER_SECOND = 1_000_000_000
SPARK = "▁▂▃▄▅▆▇█"
UP, DOWN, FLAT = "▲", "▼", "·"


def price_decimals(price: float) -> int:
    """About six significant digits: 60000.00, 3000.00, 150.000, 0.500000."""
    if not price or not math.isfinite(price):
        return 2
    return max(2, min(8, 5 - math.floor(math.log10(abs(price)))))


def fmt_price(price: float | None, decimals: int | None = None) -> str:
    if price is None or not math.isfinite(price):
        return "-"
    d = price_decimals(price) if decimals is None else decimals
    return f"{price:.{d}f}"


def fmt_qty(qty: float | None) -> str:
    """Quantities keep their lot precision without trailing zeros or exponents."""
    if qty is None or not math.isfinite(qty):
        return "-"
    if qty == 0:
        return "0"
    d = max(0, min(8, 5 - math.floor(math.log10(abs(qty)))))
    text = f"{qty:.{d}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("0", "-0"):
        # Below the eighth decimal: still held (and still priced), so never shown as nothing.
        return f"{qty:.2e}"
    return text


def fmt_exact(value: object) -> str:
    """A number exactly as the engine holds it (the shortest spelling that reads back as the
    same float, never an exponent or a rounding): what an approval's hash binds, so a person
    approves the quantity and limit that are sent (0.00001234, 12345.6789), not 0.00 or 12345.7.
    Anything else is shown as "?"."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "?"
    if isinstance(value, float) and not math.isfinite(value):
        return "?"
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_money(value: float | None, *, signed: bool = False, decimals: int = 2) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+,.{decimals}f}" if signed else f"{value:,.{decimals}f}"


def fmt_compact(value: float | None) -> str:
    """Money in at most seven characters: 1,999.44 / 12.3k / 1.25M / 0.004."""
    if value is None or not math.isfinite(value):
        return "-"
    value += 0.0  # -0.0 is "0.00"
    a = abs(value)
    if 0.0 < a < 0.005:
        # Not "0.00": a fee paid or a loss made, however small, is not none (as the backtest
        # report shows it).
        return f"{value:.2g}"
    if a >= 1e6:
        return f"{value / 1e6:.2f}M"
    if a >= 1e5:
        return f"{value / 1e3:.1f}k"
    return f"{value:,.2f}"


def fmt_notional(value: float | None) -> str:
    """Order sizes in whole quote units (1,999) once they reach a thousand."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.2f}"


def fmt_pct(value: float | None, *, signed: bool = False, decimals: int = 2) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.{decimals}f}%" if signed else f"{value:.{decimals}f}%"


def pnl_text(value: float | None, *, compact: bool = False) -> Text:
    """Profit green, loss red, zero plain: readable in 16 and 256 colours."""
    if value is None:
        return Text("-", justify="right")
    value += 0.0  # -0.0 (a short marked at its own price) is no loss: "0.00", not "-0.00"
    text = fmt_compact(value) if compact else fmt_money(value, signed=True)
    if compact and value > 0:
        text = "+" + text
    style = "green" if value > 0 else "red" if value < 0 else ""
    return Text(text, style=style, justify="right")


def ts_time(ns: int | None) -> str:
    """HH:MM:SS in UTC from engine nanoseconds."""
    if not ns:
        return "--:--:--"
    return datetime.fromtimestamp(ns / NS_PER_SECOND, tz=UTC).strftime("%H:%M:%S")


def ts_full(ns: int | None) -> str:
    if not ns:
        return "-"
    dt = datetime.fromtimestamp(ns / NS_PER_SECOND, tz=UTC)
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def fmt_duration(seconds: float) -> str:
    """A countdown: 45s, 2m05s, 0s when due."""
    s = max(0, math.ceil(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def sparkline(values: Sequence[float], width: int) -> str:
    """The last ``width`` values as block characters, scaled to their own range."""
    vals = list(values)[-width:]
    if not vals:
        return " " * width
    lo, hi = min(vals), max(vals)
    span = hi - lo
    if span <= 0:
        line = SPARK[3] * len(vals)
    else:
        top = len(SPARK) - 1
        line = "".join(SPARK[round((v - lo) / span * top)] for v in vals)
    return line.rjust(width)


def gauge(value: float, limit: float, width: int) -> Text:
    """A bar of ``value`` against ``limit``: green below 50%, yellow below 80%, red above."""
    frac = 0.0 if limit <= 0 else max(0.0, value / limit)
    filled = min(width, round(frac * width))
    style = "green" if frac < 0.5 else "yellow" if frac < 0.8 else "bold red"
    bar = Text()
    bar.append("█" * filled, style=style)
    bar.append("░" * (width - filled), style="bright_black")
    return bar


def truncate(text: str, width: int) -> str:
    if width <= 0:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def right(value: str | Text, style: str = "") -> Text:
    """A right-aligned cell with one leading space (tables use no cell padding)."""
    if isinstance(value, Text):
        out = Text(" ", justify="right")
        out.append_text(value)
        return out
    return Text(" " + value, style=style, justify="right")


def left(value: str, style: str = "") -> Text:
    return Text(" " + value, style=style, justify="left")
