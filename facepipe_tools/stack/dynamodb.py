"""The DynamoDB-compatible server (moto), and the student data loaded into it. It keeps its
tables in memory: every start needs the data loaded again."""

from __future__ import annotations

import sys

from facepipe_tools.paths import REPO_ROOT
from facepipe_tools.stack.component import HttpComponent
from facepipe_tools.stack.config import HOST, StackConfig

UPLOAD_DATA = REPO_ROOT / "data" / "upload_data.py"


class DynamoDB(HttpComponent):
    name = "dynamodb"
    start_timeout_s = 30.0
    health_path = "/moto-api/"

    def command(self, config: StackConfig) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(config.dynamodb_port)]

    def ports(self, config: StackConfig) -> list[int]:
        return [config.dynamodb_port]

    def healthy_status(self, status: int | None) -> bool:
        return status is not None and status < 500


def upload_data_command(config: StackConfig) -> list[str]:
    """Loads the students into the table (idempotent)."""
    return [sys.executable, str(UPLOAD_DATA), "--file", config.student_data]
