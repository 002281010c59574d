"""Notifier entry point: `setup`, `disable` or `serve` (see facepipe/notifier_core.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from facepipe.notifier_core import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
