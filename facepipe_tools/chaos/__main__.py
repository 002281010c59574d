"""`python -m facepipe_tools.chaos`: the same as `make chaos`."""

import sys

from facepipe_tools.chaos.cli import main

sys.exit(main())
