"""The notifier's command line: `setup`, `disable` and `serve` (waitress, stopped by SIGTERM)."""

from __future__ import annotations

import argparse
import signal
from urllib.parse import urlsplit

import waitress
from botocore.exceptions import BotoCoreError, ClientError

from facepipe import logs
from facepipe.notifier.invoker import Backoff
from facepipe.notifier.listener import MAX_BODY_BYTES, create_app
from facepipe.notifier.service import Notifier
from facepipe.notifier.setup import check_buckets, disable_notifications, setup_notifications
from facepipe.settings import Settings, SettingsError, load_settings

log = logs.get("facepipe.notifier")

DEFAULT_PORT = 8090


def serve(settings: Settings, host: str, port: int, backoff: Backoff, grace_s: float) -> None:
    settings.require("notify_token", "openfaas_gateway")
    check_buckets(settings)
    notifier = Notifier(settings, backoff=backoff)
    server = waitress.create_server(
        create_app(notifier), host=host, port=port, threads=8, max_request_body_size=MAX_BODY_BYTES,
        ident="facepipe-notifier",
    )  # fmt: skip

    def terminate(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    notifier.start()
    log.info(
        "listening", url=f"http://{host}:{port}/", routes=[str(route) for route in notifier.routes],
        gateway=settings.openfaas_gateway, concurrency=settings.notifier_concurrency, attempts=settings.invoke_attempts,
        reconcile_interval_s=settings.reconcile_interval_s,
    )  # fmt: skip
    try:
        server.run()
    finally:
        log.info("shutting down")
        notifier.stop(grace_s)


def _default_port(settings: Settings) -> int:
    try:
        return urlsplit(settings.notify_url).port or DEFAULT_PORT
    except ValueError:
        return DEFAULT_PORT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notification.py", description="Ceph RGW bucket notifications -> each bucket's function (ROUTES)."
    )
    parser.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default: LOG_LEVEL, else INFO"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("setup", help="create every route's buckets, topic and bucket notification (idempotent)")
    commands.add_parser("disable", help="remove the input buckets' notifications (the reconciler still works)")
    serve_parser = commands.add_parser("serve", help="receive notifications, invoke the function, reconcile")
    serve_parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help=f"port (default: the port of NOTIFY_URL, else {DEFAULT_PORT})")
    serve_parser.add_argument("--backoff-base", type=float, default=1.0, help="first retry delay, seconds")
    serve_parser.add_argument("--backoff-max", type=float, default=30.0, help="longest retry delay, seconds")
    serve_parser.add_argument("--grace", type=float, default=20.0, help="seconds to let invocations finish on exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup(level=args.log_level)
    settings = None
    try:
        settings = load_settings()
        if args.command == "setup":
            outcome = setup_notifications(settings)
            log.info(
                "notifications set up", routes=[str(route) for route in settings.routes()],
                created=outcome["created_buckets"], topic_arns=outcome["topic_arns"], endpoint=settings.notify_url,
                persistent=settings.persistent_notifications, events=["s3:ObjectCreated:*"],
            )  # fmt: skip
        elif args.command == "disable":
            disable_notifications(settings)
            log.info("notifications removed", buckets=[route.input_bucket for route in settings.routes()])
        else:
            port = args.port if args.port is not None else _default_port(settings)
            serve(settings, args.host, port, Backoff(args.backoff_base, args.backoff_max), args.grace)
    except SettingsError as exc:
        log.error("bad settings", outcome="failed", detail=str(exc))
        return 2
    except (BotoCoreError, ClientError) as exc:
        endpoint = (settings.s3_endpoint_url if settings else None) or "AWS"
        log.error("S3/SNS request failed", outcome="failed", endpoint=endpoint, error=type(exc).__name__,
                  detail=str(exc))  # fmt: skip
        return 1
    except (OSError, RuntimeError) as exc:
        log.error("command failed", command=args.command, outcome="failed", error=type(exc).__name__, detail=str(exc))
        return 1
    return 0
