"""`python -m cockpit` runs the same CLI as the `cockpit` console script."""

import sys

from cockpit.cli import main

sys.exit(main())
