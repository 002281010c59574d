"""`facepipe-web` / `python web/app.py [--host HOST] [--port PORT]`: the web tier under waitress."""

from __future__ import annotations

import argparse
import os
import sys

from facepipe import logs
from facepipe.clients import s3_client
from facepipe.settings import SettingsError, load_settings
from facepipe.web.access import is_loopback
from facepipe.web.app import create_app
from facepipe.web.server import make_server
from facepipe.web.settings import load_web_settings

log = logs.get("facepipe.web")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="web/app.py", description="The facepipe web tier (Flask under waitress).")
    parser.add_argument("--host", default=os.environ.get("WEB_HOST", "127.0.0.1"), help="default 127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("WEB_PORT") or 8000), help="default 8000")
    args = parser.parse_args(argv)
    logs.setup()
    try:
        settings = load_settings()
        settings.require("s3_endpoint_url", "input_bucket", "output_bucket")
        web = load_web_settings()
    except (SettingsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not is_loopback(args.host) and not web.token:
        print(
            f"error: the web tier would listen on {args.host}, which other machines reach, without a token: "
            "set WEB_TOKEN (or the secret file web-token in SECRETS_DIR), or listen on 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    app = create_app(settings, web, s3=s3_client(settings, max_pool_connections=web.threads + 4, caller="web"))
    log.info(
        "serving", url=f"http://{args.host}:{args.port}/", input_bucket=settings.input_bucket,
        output_bucket=settings.output_bucket, image_input_bucket=settings.image_input_bucket,
        image_output_bucket=settings.image_output_bucket, threads=web.threads, result_timeout_s=web.result_timeout_s,
        token=bool(web.token), allowed_origins=",".join(web.allowed_origins),
    )  # fmt: skip
    make_server(app, args.host, args.port, web).run()
    return 0
