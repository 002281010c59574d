"""The one contract every part of the local stack follows.

A `Component` is one daemon: the command that starts it, the loopback ports it holds, and
a health check asked of its own interface (an HTTP endpoint, a Ceph admin socket), not
just of its pid. `LocalStack` starts, stops and reports every component the same way
through these few methods.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import requests

from facepipe_tools.stack.config import HOST, StackConfig


class StackError(RuntimeError):
    """A step of the stack failed; `log` names the file whose tail explains why."""

    def __init__(self, message: str, log: Path | None = None, output: str = "") -> None:
        super().__init__(message)
        self.log = log
        self.output = output


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pids: list[int]
    healthy: bool
    detail: str


@dataclass(frozen=True)
class StackPaths:
    """Where a stack keeps its state: everything under one folder."""

    state_dir: Path

    @property
    def config_path(self) -> Path:
        return self.state_dir / "stack.json"

    @property
    def run_dir(self) -> Path:
        """Pid files and the Ceph admin sockets."""
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    @property
    def crash_dir(self) -> Path:
        return self.state_dir / "crash"

    @property
    def ceph_dir(self) -> Path:
        return self.state_dir / "ceph"

    @property
    def conf_path(self) -> Path:
        return self.state_dir / "ceph.conf"

    @property
    def prometheus_dir(self) -> Path:
        """Prometheus's scrape configuration and its time series."""
        return self.state_dir / "prometheus"

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"


class Component(ABC):
    """One daemon of the stack. Subclasses set `name` and the timeouts and say how to start
    it (`command`), which ports it holds (`ports`) and how to tell that it works (`health`)."""

    name: ClassVar[str]
    #: How long to wait for `health` after a start (seconds).
    start_timeout_s: ClassVar[float] = 60.0
    #: How long a stop waits between TERM and KILL (seconds).
    stop_grace_s: ClassVar[float] = 15.0

    def __init__(self, paths: StackPaths) -> None:
        self.paths = paths

    @abstractmethod
    def command(self, config: StackConfig) -> list[str]:
        """The argument list that runs the daemon in the foreground."""

    def ports(self, config: StackConfig) -> list[int]:
        """Loopback ports the daemon listens on; the stack checks that they are free first."""
        return []

    @abstractmethod
    def health(self, config: StackConfig) -> tuple[bool, str]:
        """(healthy, short detail) from the daemon's own interface."""

    def before_start(self, config: StackConfig) -> None:  # noqa: B027 - an optional hook
        """Check and prepare what the daemon needs (raise StackError when it cannot start)."""

    def after_stop(self, clean: bool) -> None:  # noqa: B027 - an optional hook
        """Called after the daemon was stopped; `clean` is False when it had to be killed."""


class HttpComponent(Component):
    """A component whose health is the status of one HTTP GET on its first port."""

    health_path: ClassVar[str] = "/healthz"

    def health_url(self, config: StackConfig) -> str:
        return f"http://{HOST}:{self.ports(config)[0]}{self.health_path}"

    def healthy_status(self, status: int | None) -> bool:
        return status == 200

    def health(self, config: StackConfig) -> tuple[bool, str]:
        url = self.health_url(config)
        status = http_status(url)
        return self.healthy_status(status), f"{url} -> {status or 'no answer'}"


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of a GET, None when nothing answers."""
    try:
        return requests.get(url, timeout=timeout).status_code
    except requests.RequestException:
        return None


def port_in_use(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((HOST, port)) == 0
