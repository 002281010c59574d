"""Where the tools find the checkout and the CSE546 reference set."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"


def cse546_dir() -> Path:
    """The CSE546 reference set: `$CSE546_DIR`, else `../shared/cse546` beside the checkout."""
    return Path(os.environ.get("CSE546_DIR") or REPO_ROOT.parent / "shared" / "cse546").resolve()
