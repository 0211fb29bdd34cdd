"""`python -m versatune_mlops.cli ...` runs the same command line as `versatune ...`."""

import sys

from .main import main

sys.exit(main())
