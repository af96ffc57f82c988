"""The backtest's errors: one line per problem, phrased for the user."""

from __future__ import annotations


class BacktestError(ValueError):
    """A backtest that cannot run as asked; one line per problem, phrased for the user."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class StrategyRaised(BacktestError):
    """The strategy raised during the run (a bug in it, not in the command): which strategy,
    what it raised, where, and on which bar. Exit 1, as a failure, not a usage error."""


class NoUsableDataError(BacktestError):
    """Every row of the data was rejected at the boundary: there was nothing to trade on."""
