"""The notifier: `setup`, `disable` or `serve` (see facepipe/notifier/cli.py)."""

import sys

from facepipe.notifier.cli import main

if __name__ == "__main__":
    sys.exit(main())
