"""The web tier: `python web/app.py [--host HOST] [--port PORT]` (see facepipe/web/)."""

import sys

from facepipe.web.cli import main

if __name__ == "__main__":
    sys.exit(main())
