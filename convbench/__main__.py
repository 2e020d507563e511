"""``python -m convbench``: the command line, for environments without the script."""

import sys

from convbench.cli import main

sys.exit(main())
