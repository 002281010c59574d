"""What a stack is configured with: ports, workers, dataset, generated secrets; and how to
find free loopback ports for a stack of one's own."""

from __future__ import annotations

import json
import secrets
import socket
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from facepipe_tools.paths import REPO_ROOT

HOST = "127.0.0.1"
DEFAULT_STATE_DIR = REPO_ROOT / ".stack"
DEFAULT_ENV_FILE = REPO_ROOT / ".env"
DEFAULT_KNOWN_FACES = REPO_ROOT / "data" / "known_faces.json"
DEFAULT_STUDENT_DATA = REPO_ROOT / "data" / "student_data.json"
DEFAULT_PORTS = {
    "mon": 6789, "rgw": 7480, "dynamodb": 8001, "gateway": 8080, "notifier": 8090, "worker_base": 8100, "web": 8000,
    "prometheus": 9190,
}  # fmt: skip


@dataclass
class StackConfig:
    """Everything chosen at the first `up` and kept in `<state>/stack.json`."""

    mon_port: int
    rgw_port: int
    dynamodb_port: int
    gateway_port: int
    notifier_port: int
    workers: int
    known_faces: str
    student_data: str
    env_file: str
    fsid: str = field(default_factory=lambda: str(uuid.uuid4()))
    s3_access_key_id: str = field(default_factory=lambda: "FP" + secrets.token_hex(9).upper())
    s3_secret_access_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    aws_access_key_id: str = field(default_factory=lambda: "LOCAL" + secrets.token_hex(8).upper())
    aws_secret_access_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    notify_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    #: The function runner's face workers listen on worker_base_port .. worker_base_port + workers - 1,
    #: and serve their metrics on the next `workers` ports; the classification workers and their
    #: metrics ports follow (function_runner.worker_ports).
    worker_base_port: int = DEFAULT_PORTS["worker_base"]
    #: The web tier (POST a file, results page); a default so that older stack.json files load.
    web_port: int = DEFAULT_PORTS["web"]
    #: Whether the stack runs Prometheus (optional: off in a stack.json from before it existed).
    prometheus: bool = False
    #: Not 9090: on a host with systemd, Debian's package starts its own Prometheus there.
    prometheus_port: int = DEFAULT_PORTS["prometheus"]
    #: Workers of the image-classification function (0: the stack serves faces only); None in a
    #: stack.json from before it existed, until the next `up` chooses (LocalStack).
    image_workers: int | None = None


def load_config(path: Path) -> StackConfig | None:
    """The config stored at `path`, None when there is none (unknown keys are ignored)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    names = {f.name for f in fields(StackConfig)}
    return StackConfig(**{k: v for k, v in data.items() if k in names})


def save_config(config: StackConfig, path: Path) -> None:
    """Write the config atomically, readable by its owner only (it holds the secrets)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(config), indent=2) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (from the kernel's ephemeral range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def free_port_range(count: int, low: int = 20000, high: int = 32000) -> int:
    """First port of `count` consecutive free ports in [low, high) (below the ephemeral range,
    so the kernel does not hand them out to outgoing connections meanwhile)."""
    rng = secrets.SystemRandom()
    for _ in range(200):
        base = rng.randrange(low, high - count)
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind((HOST, port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports in [{low}, {high})")
