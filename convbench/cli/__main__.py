"""``python -m convbench.cli``: the command line."""

import sys

from convbench.cli import main

sys.exit(main())
