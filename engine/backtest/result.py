"""What one backtest produced (``BacktestResult``): figures, fills, the equity series, and
their JSON and CSV forms.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.events import EngineEvent
from engine.metrics import Metrics, RoundTrip, iso
from engine.types import Fill


@dataclass
class BacktestResult:
    """Everything one run produced; ``to_dict()`` is the JSON form (``--json``)."""

    header: dict[str, Any]
    metrics: Metrics
    trips: list[RoundTrip]
    fills: list[Fill]
    fill_refs: list[float]  # the reference mid / bar price each fill executed against
    fill_realized: list[float]  # realised PnL of each fill (gross of fee), as the portfolio
    fill_positions: list[float]  # the symbol's net position after each fill
    ts: np.ndarray  # int64 ns: equity sample times (the first is the start)
    equity: np.ndarray  # float64
    position: np.ndarray  # float64: open positions (count) at each sample
    counters: dict[str, int]
    denied: dict[str, int]
    rejected: dict[str, int]
    safety_notes: list[str]
    events: list[EngineEvent]  # breaker and safety events, in order
    unfilled: int
    events_processed: int
    elapsed_s: float
    final_portfolio: dict[str, Any]
    # What closed the trades, by kind (protective exits, "signal", "flatten"): count and net PnL.
    exits: dict[str, dict[str, float | int]] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events_processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def fill_rows(self) -> list[dict[str, Any]]:
        """Every fill as a flat row (the ``--trades`` CSV)."""
        rows = []
        for f, ref, realized, pos in zip(
            self.fills, self.fill_refs, self.fill_realized, self.fill_positions, strict=True
        ):
            sign = 1.0 if f.side == "buy" else -1.0
            rows.append(
                {
                    "fill_id": f.fill_id,
                    "order_id": f.client_order_id,
                    "strategy": f.strategy_id,
                    "symbol": f.symbol,
                    "side": str(f.side),
                    "qty": f.qty,
                    "price": f.price,
                    "fee": f.fee,
                    "liquidity": str(f.liquidity),
                    "ts_ns": f.ts,
                    "time": iso(f.ts, "milliseconds"),
                    "ref_price": ref,
                    "slippage": (f.price - ref) * f.qty * sign,
                    "realized_pnl": realized,
                    "position_after": pos,
                }
            )
        return rows

    def curve(self, points: int = 500) -> list[list[float]]:
        """The equity curve downsampled to at most ``points`` [ts_ns, equity] pairs."""
        n = self.equity.size
        if n == 0:
            return []
        idx = np.unique(np.linspace(0, n - 1, min(points, n)).astype(np.int64))
        return [[int(self.ts[i]), float(self.equity[i])] for i in idx]

    def to_dict(self, *, curve_points: int = 500, include_fills: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "header": self.header,
            "metrics": self.metrics.to_dict(),
            "trades": [t.to_dict() for t in self.trips],
            "orders": {
                "submitted": self.counters.get("submitted", 0),
                "denied": self.counters.get("denied", 0),
                "denied_by_code": dict(self.denied),
                "fills": len(self.fills),
                "unfilled_at_end": self.unfilled,
                # Limit orders: cancelled by their time to live, moved or superseded (a
                # cancel, then the new decision), and the fills that made liquidity.
                "expired": self.counters.get("expired", 0),
                "replaced": self.counters.get("replaced", 0),
                "maker_fills": sum(1 for f in self.fills if f.liquidity == "maker"),
            },
            "rejected_at_boundary": dict(self.rejected),
            "exits": {k: dict(v) for k, v in self.exits.items()},
            "safety_events": list(self.safety_notes),
            "counters": dict(self.counters),
            "final_portfolio": self.final_portfolio,
            "equity_curve": self.curve(curve_points),
            "run": {
                "events": self.events_processed,
                "seconds": self.elapsed_s,
                "events_per_s": self.events_per_s,
            },
        }
        if include_fills:
            out["fills"] = self.fill_rows()
        return out


def write_trades_csv(result: BacktestResult, path: str | Path) -> int:
    """Write every fill to a CSV file; returns the number of rows."""
    rows = result.fill_rows()
    columns = [
        "fill_id",
        "order_id",
        "strategy",
        "symbol",
        "side",
        "qty",
        "price",
        "fee",
        "liquidity",
        "ts_ns",
        "time",
        "ref_price",
        "slippage",
        "realized_pnl",
        "position_after",
    ]
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)
