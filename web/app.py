"""Web tier entry point: `python web/app.py [--host HOST] [--port PORT]` (see facepipe/web_core.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from facepipe.web_core import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
