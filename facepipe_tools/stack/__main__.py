import sys

from facepipe_tools.stack.cli import main

sys.exit(main())
