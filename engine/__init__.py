"""The trading engine: market data, strategies, checks, execution, journal. No UI imports."""
