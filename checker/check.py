"""Compare the output bucket with a mapping file (see facepipe_tools/checker.py)."""

import sys

from facepipe_tools.checker import main

if __name__ == "__main__":
    sys.exit(main())
