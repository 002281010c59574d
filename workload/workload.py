"""Upload test videos to the input bucket, or post them to the web tier (see facepipe_tools/workload.py)."""

import sys

from facepipe_tools.workload import main

if __name__ == "__main__":
    sys.exit(main())
