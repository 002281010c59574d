"""`python -m facepipe_tools.stack up|down|status` (options: `--help`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from facepipe_tools.stack.component import StackError
from facepipe_tools.stack.config import DEFAULT_PORTS
from facepipe_tools.stack.local import LocalStack


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def _tail(path: Path | None, lines: int = 25) -> str:
    """The last lines of a log (read from its last 64 KiB)."""
    if path is None or not path.is_file():
        return ""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 64 * 1024))
        text = handle.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m facepipe_tools.stack",
        description="Local stack: single-node Ceph RGW, DynamoDB-compatible server, function runner, notifier, "
        "web tier, Prometheus.",
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", default=os.environ.get("FACEPIPE_STACK_DIR"), help="default: <repo>/.stack")
    parser.add_argument(
        "--env-file",
        default=os.environ.get("FACEPIPE_ENV_FILE"),
        help="where `up` writes the settings (default: <repo>/.env)",
    )
    parser.add_argument("--known-faces", default=os.environ.get("KNOWN_FACES") or None)
    parser.add_argument("--student-data", default=os.environ.get("STUDENT_DATA") or None)
    parser.add_argument(
        "--workers", type=int, default=_env_int("FACEPIPE_WORKERS"), help="face-recognition workers (default: cores)"
    )
    parser.add_argument(
        "--image-workers",
        type=int,
        default=_env_int("FACEPIPE_IMAGE_WORKERS"),
        help="image-classification workers (default 1; 0: faces only; an existing stack keeps its count)",
    )
    parser.add_argument(
        "--prometheus",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run Prometheus, scraping the stack (default for a new stack: on when `prometheus` is installed; "
        "an existing stack keeps its choice)",
    )
    for name in DEFAULT_PORTS:
        var = f"FACEPIPE_{name.upper()}_PORT"
        parser.add_argument(
            f"--{name.replace('_', '-')}-port",
            type=int,
            default=_env_int(var),
            help=f"default {DEFAULT_PORTS[name]} (${var})",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stack = LocalStack(
        args.state_dir,
        env_file=args.env_file,
        mon_port=args.mon_port,
        rgw_port=args.rgw_port,
        dynamodb_port=args.dynamodb_port,
        gateway_port=args.gateway_port,
        notifier_port=args.notifier_port,
        worker_base_port=args.worker_base_port,
        web_port=args.web_port,
        prometheus_port=args.prometheus_port,
        prometheus=args.prometheus,
        workers=args.workers,
        image_workers=args.image_workers,
        known_faces=args.known_faces,
        student_data=args.student_data,
    )
    try:
        if args.command == "up":
            stack.up()
        elif args.command == "down":
            stack.down()
        else:
            if not stack.config_path.is_file():
                print(f"no stack in {stack.state_dir}")
                return 1
            rows = stack.status()
            for row in rows:
                pids = ",".join(map(str, row.pids)) or "-"
                print(f"{row.name:<10} {'ok' if row.healthy else 'DOWN':<5} pid {pids:<16} {row.detail}")
            return 0 if all(row.healthy for row in rows) else 1
    except StackError as err:
        print(f"error: {err}", file=sys.stderr)
        if err.output:
            print(err.output[-3000:], file=sys.stderr)
        tail = _tail(err.log)
        if tail:
            print(f"--- last lines of {err.log}:\n{tail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; `python -m facepipe_tools.stack down` stops what was started", file=sys.stderr)
        return 130
    return 0
