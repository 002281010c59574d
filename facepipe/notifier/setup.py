"""Set-up of the buckets and of the input bucket's notification (RGW topic + S3 configuration).

`setup_notifications` creates what is missing and can run again; `disable_notifications`
removes the notification (the reconciler alone then finds new objects). Ceph RGW answers an
empty `PutBucketNotificationConfiguration` with MalformedXML and removes notifications with
its own `DELETE /<bucket>?notification`, which boto3 has no call for: `delete_notifications`
sends it through the S3 client itself (its credentials, endpoint, retries and signing).
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from facepipe.clients import is_missing, s3_client, sns_client
from facepipe.settings import Settings, SettingsError

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


def check_buckets(settings: Settings) -> None:
    if settings.input_bucket == settings.output_bucket:
        raise SettingsError("INPUT_BUCKET and OUTPUT_BUCKET must differ: results would be processed as input")


def setup_notifications(settings: Settings, s3=None, sns=None) -> dict:
    """Create the buckets, the topic and the input bucket's notification. Safe to run again."""
    settings.require("notify_token", "notify_url", "input_bucket", "output_bucket", "topic_name")
    check_buckets(settings)
    s3 = s3 if s3 is not None else s3_client(settings)
    sns = sns if sns is not None else sns_client(settings)
    created = [b for b in (settings.input_bucket, settings.output_bucket) if ensure_bucket(s3, b, settings.s3_region)]
    topic_arn = sns.create_topic(
        Name=settings.topic_name,
        Attributes={
            "push-endpoint": settings.notify_url,
            "OpaqueData": settings.notify_token,
            "persistent": "true" if settings.persistent_notifications else "false",
        },
    )["TopicArn"]
    s3.put_bucket_notification_configuration(
        Bucket=settings.input_bucket,
        NotificationConfiguration={
            "TopicConfigurations": [
                {"Id": settings.topic_name, "TopicArn": topic_arn, "Events": ["s3:ObjectCreated:*"]}
            ]
        },
    )
    return {"created_buckets": created, "topic_arn": topic_arn}


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
    """Remove the input bucket's notifications; raise RuntimeError if any remain.

    S3 removes them when an empty configuration is put; RGW (Pacific answers MalformedXML to
    that) gets its `DELETE ?notification` instead.
    """
    s3 = s3 if s3 is not None else s3_client(settings)
    try:
        s3.put_bucket_notification_configuration(Bucket=settings.input_bucket, NotificationConfiguration={})
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "MalformedXML" or not settings.s3_endpoint_url:
            raise
    remaining = s3.get_bucket_notification_configuration(Bucket=settings.input_bucket)
    if remaining.get("TopicConfigurations") and settings.s3_endpoint_url:
        delete_notifications(s3, settings.input_bucket)
        remaining = s3.get_bucket_notification_configuration(Bucket=settings.input_bucket)
    if remaining.get("TopicConfigurations"):
        raise RuntimeError(f"bucket {settings.input_bucket!r} still has notifications after removing them")
