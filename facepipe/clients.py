"""boto3 clients: S3 and SNS on Ceph RGW (private side), DynamoDB on AWS or a local server."""

from __future__ import annotations

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from prometheus_client import Counter

from facepipe.settings import Settings

#: Every request of every S3 client made by `s3_client`, by the part of the component that
#: made it and the operation: what a component really asks of the object store (a retry
#: counts again).
S3_REQUESTS = Counter("facepipe_s3_requests", "S3 requests sent, by caller and operation", ["caller", "operation"])

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


def s3_client(settings: Settings, max_pool_connections: int | None = None, caller: str = "other"):
    """S3 client for the Ceph RGW endpoint; `max_pool_connections` for callers with many
    threads sharing the client (botocore keeps 10 connections by default); `caller` labels
    its requests in `facepipe_s3_requests_total`."""
    config = _RGW_CONFIG
    if max_pool_connections:
        config = config.merge(Config(max_pool_connections=max_pool_connections))
    client = _rgw_client("s3", settings, config)

    def count(event_name: str, **kwargs) -> None:
        S3_REQUESTS.labels(caller, event_name.rpartition(".")[2]).inc()

    client.meta.events.register("before-send.s3", count)
    return client


def is_missing(exc: ClientError) -> bool:
    """True when S3 answered that the object (or bucket) does not exist."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 404 or exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


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
