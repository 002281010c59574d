"""`make chaos` entry point (see facepipe/chaos.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from facepipe.chaos import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
