"""The web tier: `python web/app.py [--host HOST] [--port PORT]` (see facepipe/web/core.py)."""

import sys

from facepipe.web.core import main

if __name__ == "__main__":
    sys.exit(main())
