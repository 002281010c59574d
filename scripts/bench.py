"""The benchmark (`make bench`) (see facepipe_tools/bench.py)."""

import sys

from facepipe_tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
