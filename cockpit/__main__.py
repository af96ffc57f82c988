"""`python -m cockpit` runs the same CLI as the `cockpit` console script."""

import sys

from cockpit.cli import main

# Guarded: a Dask LocalCluster starts its workers with "spawn", which imports this module again
# in each worker process; unguarded, every worker would run the command line.
if __name__ == "__main__":
    sys.exit(main())
