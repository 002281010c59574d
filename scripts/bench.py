"""`make bench` entry point (see facepipe/bench.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from facepipe.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
