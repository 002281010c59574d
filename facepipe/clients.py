"""boto3 clients: S3 and SNS on Ceph RGW (private side), DynamoDB on AWS or a local server."""

from __future__ import annotations

import boto3
from botocore.config import Config
from prometheus_client import Counter

from facepipe.settings import Settings

#: Every request of every S3 client made by `s3_client`, by operation: what a component
#: really asks of the object store (a retry counts again).
S3_REQUESTS = Counter("facepipe_s3_requests", "S3 requests sent, by operation", ["operation"])

_RGW_CONFIG = Config(
    s3={"addressing_style": "path"},
    signature_version="s3v4",
    retries={"max_attempts": 5, "mode": "standard"},
    connect_timeout=5,
    read_timeout=60,
)


def _rgw_client(service: str, settings: Settings, config: Config):
    """A client of the Ceph RGW endpoint, which serves both the S3 and the SNS (topic) APIs."""
    return boto3.client(
        service,
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
        region_name=settings.s3_region,
        config=config,
    )


def s3_client(settings: Settings, max_pool_connections: int | None = None):
    """S3 client for the Ceph RGW endpoint; `max_pool_connections` for callers with many
    threads sharing the client (botocore keeps 10 connections by default)."""
    config = _RGW_CONFIG
    if max_pool_connections:
        config = config.merge(Config(max_pool_connections=max_pool_connections))
    client = _rgw_client("s3", settings, config)
    client.meta.events.register("before-send.s3", _count_request)
    return client


def _count_request(request, **kwargs) -> None:
    S3_REQUESTS.labels(kwargs["event_name"].rpartition(".")[2]).inc()


def sns_client(settings: Settings):
    """SNS client for RGW's topic API (bucket notifications)."""
    return _rgw_client("sns", settings, Config(retries={"max_attempts": 5, "mode": "standard"}))


def dynamodb_client(settings: Settings):
    """DynamoDB client: AWS when DYNAMODB_ENDPOINT_URL is unset, else that server."""
    return boto3.client(
        "dynamodb",
        endpoint_url=settings.dynamodb_endpoint_url,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
        region_name=settings.aws_region,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=10),
    )
