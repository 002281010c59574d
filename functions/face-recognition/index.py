"""The OpenFaaS python3-http template contract for this function, served by waitress
(facepipe/serving.py: drain on SIGTERM, the readiness lock file, METRICS_PORT).

of-watchdog starts `python index.py` from WORKDIR; so does the local function runner.
"""

import sys

import handler

from facepipe.serving import FunctionServer

server = FunctionServer(handler, "face-recognition")
app = server.app
drain = server.drain

if __name__ == "__main__":
    sys.exit(server.main())
