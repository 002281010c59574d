"""The notifier: `setup`, `disable` or `serve` (see facepipe/notifier/core.py)."""

import sys

from facepipe.notifier.core import main

if __name__ == "__main__":
    sys.exit(main())
