"""Notifier set-up: every route's buckets, topic and bucket notification on moto, and RGW's `DELETE ?notification`
sent through the S3 client (checked on the request the client sends: moto would take a
DELETE on a bucket for DeleteBucket)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from facepipe.clients import s3_client
from facepipe.notifier.setup import delete_notifications, disable_notifications, setup_notifications
from facepipe.settings import Settings, SettingsError
from tests.unit.notifierfake import TOKEN

SETTINGS = Settings(
    input_bucket="in-setup", output_bucket="out-setup", image_input_bucket="img-in-setup",
    image_output_bucket="img-out-setup", notify_token=TOKEN, notify_url="http://127.0.0.1:8090/",
)  # fmt: skip
RGW_SETTINGS = replace(
    SETTINGS, s3_endpoint_url="http://rgw.test:7480", s3_access_key_id="rgw-access", s3_secret_access_key="rgw-secret"
)


class RecordingSNS:
    def __init__(self):
        self.calls = []

    def create_topic(self, **kwargs):
        self.calls.append(kwargs)
        return {"TopicArn": f"arn:aws:sns:us-east-1:123456789012:{kwargs['Name']}"}


def test_setup_is_idempotent_and_disable_removes_the_notification(s3):
    """Both routes (derived from the settings): four buckets, a topic each, a notification on
    each input bucket to its own topic."""
    sns = RecordingSNS()
    persistent = replace(SETTINGS, persistent_notifications=True)
    first = setup_notifications(persistent, s3=s3, sns=sns)
    second = setup_notifications(persistent, s3=s3, sns=sns)
    assert sorted(first["created_buckets"]) == ["img-in-setup", "img-out-setup", "in-setup", "out-setup"]
    assert second["created_buckets"] == []
    attributes = {"push-endpoint": SETTINGS.notify_url, "OpaqueData": TOKEN, "persistent": "true"}
    topics = {"in-setup": SETTINGS.topic_name, "img-in-setup": "image-classification-input"}
    assert sns.calls[:2] == [{"Name": name, "Attributes": attributes} for name in topics.values()]
    assert first["topic_arns"] == second["topic_arns"] and set(first["topic_arns"]) == set(topics)
    for bucket, topic in topics.items():
        config = s3.get_bucket_notification_configuration(Bucket=bucket)
        assert config["TopicConfigurations"] == [
            {"Id": topic, "TopicArn": first["topic_arns"][bucket], "Events": ["s3:ObjectCreated:*"]}
        ]
    for bucket in ("out-setup", "img-out-setup"):
        assert "TopicConfigurations" not in s3.get_bucket_notification_configuration(Bucket=bucket)
    disable_notifications(SETTINGS, s3=s3)
    for bucket in topics:
        assert "TopicConfigurations" not in s3.get_bucket_notification_configuration(Bucket=bucket)


def test_setup_follows_the_routing_table(s3):
    """ROUTES names the routes: only those buckets get a notification."""
    sns = RecordingSNS()
    face_only = replace(SETTINGS, routes_table="in-setup=face-recognition>out-setup")
    outcome = setup_notifications(face_only, s3=s3, sns=sns)
    assert sorted(outcome["created_buckets"]) == ["in-setup", "out-setup"]
    assert [call["Name"] for call in sns.calls] == [SETTINGS.topic_name]
    buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert "img-in-setup" not in buckets


def test_setup_refuses_missing_token_and_same_buckets():
    with pytest.raises(SettingsError, match="NOTIFY_TOKEN"):
        setup_notifications(replace(SETTINGS, notify_token=None), s3=object(), sns=object())
    with pytest.raises(SettingsError, match="an input bucket too"):
        setup_notifications(replace(SETTINGS, output_bucket=SETTINGS.input_bucket), s3=object(), sns=object())
    with pytest.raises(SettingsError, match="routed twice"):
        setup_notifications(replace(SETTINGS, image_input_bucket=SETTINGS.input_bucket), s3=object(), sns=object())


class _Body:
    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **kwargs):
        yield self.data


NOTIFICATION_XML = (
    '<NotificationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{}</NotificationConfiguration>'
)
TOPIC_XML = (
    "<TopicConfiguration><Id>t</Id><Topic>arn:aws:sns:default::t</Topic><Event>s3:ObjectCreated:*</Event>"
    "</TopicConfiguration>"
)
MALFORMED_XML = b"<Error><Code>MalformedXML</Code><Message></Message></Error>"


class FakeRGW:
    """Pacific's answers to the notification requests, given to the client's `before-send` hook
    (nothing goes on the wire): an empty PUT is MalformedXML, `DELETE ?notification` removes."""

    def __init__(self, s3, delete_works: bool = True):
        self.sent: list = []
        self.configured = True
        self.delete_works = delete_works
        s3.meta.events.register_first("before-send.s3", self)

    def __call__(self, request, **kwargs) -> AWSResponse:
        self.sent.append(request)
        status, body = 404, b"<Error><Code>NoSuchBucket</Code></Error>"
        if urlsplit(request.url).query == "notification":
            if request.method == "PUT":
                status, body = 400, MALFORMED_XML
            elif request.method == "GET":
                status, body = 200, NOTIFICATION_XML.format(TOPIC_XML if self.configured else "").encode()
            elif request.method == "DELETE":
                self.configured = not self.delete_works
                status, body = 204, b""
        return AWSResponse(request.url, status, {}, _Body(body))


def _header(request, name: str) -> str:
    value = request.headers[name]
    return value.decode() if isinstance(value, bytes) else value


def _signature_matches(request, secret: str) -> bool:
    """Recompute the SigV4 signature of the request as sent (its method, URL, signed headers)."""
    authorization = _header(request, "Authorization")
    credential, signed, signature = re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=([^,]+), SignedHeaders=([^,]+), Signature=(\w+)", authorization
    ).groups()
    access_key, _date, region, service, _ = credential.split("/")
    names = signed.split(";")
    headers = {name: _header(request, name) for name in names if name != "host"}
    rebuilt = AWSRequest(method=request.method, url=request.url, headers=headers, data=request.body)
    rebuilt.context["timestamp"] = _header(request, "X-Amz-Date")
    auth = S3SigV4Auth(Credentials(access_key, secret), service, region)
    canonical = auth.canonical_request(rebuilt)
    return auth.signature(auth.string_to_sign(rebuilt, canonical), rebuilt) == signature


def test_delete_notification_is_sent_by_the_s3_client_and_signed():
    s3 = s3_client(RGW_SETTINGS)
    rgw = FakeRGW(s3)
    delete_notifications(s3, "in-setup")
    [sent] = rgw.sent
    assert sent.method == "DELETE"
    assert sent.url == "http://rgw.test:7480/in-setup?notification"
    assert not sent.body
    assert _header(sent, "X-Amz-Content-SHA256") == hashlib.sha256(b"").hexdigest()
    assert not [name for name in sent.headers if name.lower().startswith(("x-amz-checksum", "content-md5"))]
    assert _header(sent, "Authorization").startswith("AWS4-HMAC-SHA256 Credential=rgw-access/")
    assert _signature_matches(sent, "rgw-secret")
    assert not _signature_matches(sent, "another-secret")
    # The hook was for that one call: the client's next PUT ?notification is a PUT again.
    with pytest.raises(ClientError, match="MalformedXML"):
        s3.put_bucket_notification_configuration(Bucket="in-setup", NotificationConfiguration={})
    assert rgw.sent[-1].method == "PUT"


def test_disable_on_rgw_falls_back_to_delete_and_checks_what_remains():
    s3 = s3_client(RGW_SETTINGS)
    rgw = FakeRGW(s3)
    disable_notifications(RGW_SETTINGS, s3=s3)
    # The first input bucket needs the DELETE; the fake then has no notification left for the second.
    assert [request.method for request in rgw.sent] == ["PUT", "GET", "DELETE", "GET", "PUT", "GET"]
    assert [urlsplit(request.url).path for request in rgw.sent[::4]] == ["/in-setup", "/img-in-setup"]
    assert not rgw.configured


def test_disable_fails_when_notifications_remain():
    s3 = s3_client(RGW_SETTINGS)
    FakeRGW(s3, delete_works=False)
    with pytest.raises(RuntimeError, match="still has notifications"):
        disable_notifications(RGW_SETTINGS, s3=s3)
