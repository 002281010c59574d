"""Fill the DynamoDB students table from student_data.json (see facepipe/upload_students.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from facepipe.upload_students import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
