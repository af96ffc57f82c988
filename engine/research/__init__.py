"""Research at scale: parameter sweeps, walk-forward optimisation and whole-config (portfolio)
backtests, run serially or on Dask (``dask.distributed``).

* ``params``: the parameter space (grids of comma lists and stepped ranges, seeded samples);
* ``cluster``: where tasks run (this process, a ``LocalCluster``, or a scheduler by address),
  with progress and cancellation (``run_tasks``);
* ``sweep``: one backtest per combination (``run_sweep``), the data shipped once per worker;
* ``walkforward``: optimise on each training window, trade the next (``walk_forward``);
* ``portfolio``: every strategy x symbol of a config over recorded data (``run_portfolio``).

Every task is a ``run_backtest_core`` call, the engine core of a live run; results do not
depend on where they ran.
"""
