"""Checker entry point (see facepipe/checker_core.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from facepipe.checker_core import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
