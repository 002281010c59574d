"""Faults, bad input and security against a local stack (`make chaos`) (see facepipe_tools/chaos/)."""

import sys

from facepipe_tools.chaos import main

if __name__ == "__main__":
    sys.exit(main())
