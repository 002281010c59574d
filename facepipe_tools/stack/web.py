"""The web tier (web/app.py): uploads and the results page."""

from __future__ import annotations

import sys

from facepipe_tools.paths import REPO_ROOT
from facepipe_tools.stack.component import HttpComponent, StackError
from facepipe_tools.stack.config import HOST, StackConfig

WEB_APP = REPO_ROOT / "web" / "app.py"


class Web(HttpComponent):
    name = "web"

    def command(self, config: StackConfig) -> list[str]:
        return [sys.executable, str(WEB_APP), "--host", HOST, "--port", str(config.web_port)]

    def ports(self, config: StackConfig) -> list[int]:
        return [config.web_port]

    def before_start(self, config: StackConfig) -> None:
        if not WEB_APP.is_file():
            raise StackError(f"{WEB_APP.relative_to(REPO_ROOT)} is missing")
