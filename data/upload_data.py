"""Fill the DynamoDB students table from student_data.json (see facepipe/upload_students.py)."""

import sys

from facepipe.upload_students import main

if __name__ == "__main__":
    sys.exit(main())
