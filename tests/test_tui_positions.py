"""The Positions pane's footer: the account's PnL as equity moves, net of the fees paid."""

from __future__ import annotations

from tests.test_tui_venues import WIDE, FakeClient, make_app, ready, venues_scenario


async def test_the_footer_pnl_is_net_of_fees_as_equity_moves() -> None:
    """A fresh long up 0.56 after a 2.00 entry fee: equity is 1.44 below the start, and the
    footer says so (it said +0.56: the gross columns summed, the fee left out)."""
    client = FakeClient({"kraken": venues_scenario()["kraken"]})
    client.snap["portfolio"] = {
        "cash": 97_998.48,
        "equity": 99_998.56,
        "realized_pnl": 0.0,
        "unrealized_pnl": 0.56,
        "fees_paid": 2.0,
    }
    app = make_app(client)
    async with app.run_test(size=WIDE) as pilot:
        await ready(pilot)
        footer = str(app.main.positions.border_subtitle)
        assert "net PnL -1.44" in footer, footer
        assert "+0.56" not in footer
