"""The local stack: single-node Ceph (mon, osd, RGW), a DynamoDB-compatible server, the
function runner (face-recognition and image-classification), the notifier, the web tier and
(optional) Prometheus, all on 127.0.0.1, all state in one folder.

    python -m facepipe_tools.stack up [--known-faces FILE] [--student-data JSON] [--image-workers N] [...]
    python -m facepipe_tools.stack status
    python -m facepipe_tools.stack down

Each part is a `Component` (component.py: its command, ports and health check) in a
module of its own: ceph.py (mon, osd, rgw, the cluster's bootstrap and RGW user),
dynamodb.py, function.py, notifier.py, web.py, prometheus.py. `LocalStack` (local.py)
starts them in order, keeps the config in `<state>/stack.json` and writes the settings to
an env file (default `<repo>/.env`) that every entry point reads; processes.py spawns the
daemons, records their pids and stops them by process group. `down` stops what the stack
started and removes the state.
"""

from facepipe_tools.stack.ceph import missing_ceph_binaries
from facepipe_tools.stack.cli import main
from facepipe_tools.stack.component import Component, ComponentStatus, StackError
from facepipe_tools.stack.config import StackConfig, free_port, free_port_range
from facepipe_tools.stack.local import CEPH_COMPONENTS, COMPONENTS, ENV_MARKER, OPTIONAL_COMPONENTS, LocalStack
from facepipe_tools.stack.prometheus import prometheus_binary

__all__ = [
    "CEPH_COMPONENTS",
    "COMPONENTS",
    "ENV_MARKER",
    "Component",
    "ComponentStatus",
    "LocalStack",
    "OPTIONAL_COMPONENTS",
    "StackConfig",
    "StackError",
    "free_port",
    "free_port_range",
    "main",
    "missing_ceph_binaries",
    "prometheus_binary",
]
