"""Set-up of the buckets and of the input buckets' notifications (RGW topic + S3 configuration),
for every route of the routing table.

`setup_notifications` creates what is missing and can run again; `disable_notifications`
removes the notifications (the reconciler alone then finds new objects). Ceph RGW answers an
empty `PutBucketNotificationConfiguration` with MalformedXML and removes notifications with
its own `DELETE /<bucket>?notification`, which boto3 has no call for: `delete_notifications`
sends it through the S3 client itself (its credentials, endpoint, retries and signing).
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from facepipe.clients import is_missing, s3_client, sns_client
from facepipe.settings import Route, Settings

_PUT_NOTIFICATION = "PutBucketNotificationConfiguration"
#: Headers describing the PUT's XML body, wrong for a request without one.
_BODY_HEADERS = frozenset({"content-md5", "content-type", "content-length", "x-amz-sdk-checksum-algorithm"})


def ensure_bucket(s3, bucket: str, region: str | None = None) -> bool:
    """Create `bucket` if it does not exist; True when it was created."""
    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if not is_missing(exc):
            raise
    kwargs: dict = {"Bucket": bucket}
    if region and region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise
        return False
    return True


def check_buckets(settings: Settings) -> list[Route]:
    """The routing table, checked (SettingsError: an output bucket that is also an input bucket
    would have its answers processed again)."""
    return settings.routes()


def topic_name(settings: Settings, route: Route) -> str:
    """One topic per route, so that a persistent topic's queue holds one function's events:
    TOPIC_NAME for the FUNCTION_NAME route (the face function), `<function>-input` for another."""
    return settings.topic_name if route.function == settings.function_name else f"{route.function}-input"


def setup_notifications(settings: Settings, s3=None, sns=None) -> dict:
    """For every route: its buckets, its topic and its input bucket's notification. Safe to run
    again. Returns the buckets created and the topic ARN of each input bucket."""
    settings.require("notify_token", "notify_url", "topic_name")
    routes = check_buckets(settings)
    s3 = s3 if s3 is not None else s3_client(settings)
    sns = sns if sns is not None else sns_client(settings)
    buckets = dict.fromkeys(bucket for route in routes for bucket in (route.input_bucket, route.output_bucket))
    created = [bucket for bucket in buckets if ensure_bucket(s3, bucket, settings.s3_region)]
    topics = {}
    for route in routes:
        name = topic_name(settings, route)
        topics[route.input_bucket] = arn = sns.create_topic(
            Name=name,
            Attributes={
                "push-endpoint": settings.notify_url,
                "OpaqueData": settings.notify_token,
                "persistent": "true" if settings.persistent_notifications else "false",
            },
        )["TopicArn"]
        s3.put_bucket_notification_configuration(
            Bucket=route.input_bucket,
            NotificationConfiguration={
                "TopicConfigurations": [{"Id": name, "TopicArn": arn, "Events": ["s3:ObjectCreated:*"]}]
            },
        )
    return {"created_buckets": created, "topic_arns": topics}


def _as_delete(request, **kwargs) -> None:
    """before-sign hook: the PUT ?notification becomes `DELETE ?notification` without a body."""
    request.method = "DELETE"
    request.data = b""
    for name in list(request.headers.keys()):
        if name.lower() in _BODY_HEADERS or name.lower().startswith("x-amz-checksum-"):
            del request.headers[name]


def delete_notifications(s3, bucket: str) -> None:
    """RGW's `DELETE /<bucket>?notification`: a PutBucketNotificationConfiguration call of `s3`
    turned into a DELETE before it is signed (the URL is the same). While it runs, other
    PutBucketNotificationConfiguration calls of the same client would be turned too."""
    event = f"before-sign.s3.{_PUT_NOTIFICATION}"
    unique_id = f"facepipe-delete-notification-{id(s3)}"
    s3.meta.events.register(event, _as_delete, unique_id=unique_id)
    try:
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={})
    finally:
        s3.meta.events.unregister(event, unique_id=unique_id)


def disable_notifications(settings: Settings, s3=None) -> None:
    """Remove the notifications of every route's input bucket; raise RuntimeError if any remain.

    S3 removes them when an empty configuration is put; RGW (Pacific answers MalformedXML to
    that) gets its `DELETE ?notification` instead.
    """
    s3 = s3 if s3 is not None else s3_client(settings)
    for route in check_buckets(settings):
        _disable(settings, s3, route.input_bucket)


def _disable(settings: Settings, s3, bucket: str) -> None:
    try:
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={})
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "MalformedXML" or not settings.s3_endpoint_url:
            raise
    remaining = s3.get_bucket_notification_configuration(Bucket=bucket)
    if remaining.get("TopicConfigurations") and settings.s3_endpoint_url:
        delete_notifications(s3, bucket)
        remaining = s3.get_bucket_notification_configuration(Bucket=bucket)
    if remaining.get("TopicConfigurations"):
        raise RuntimeError(f"bucket {bucket!r} still has notifications after removing them")
