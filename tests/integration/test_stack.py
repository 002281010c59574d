"""The local stack itself, against real Ceph RGW: credentials, bucket notifications, `up`
twice, `down`, status and the stop/start API the fault tests use."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
from botocore.exceptions import ClientError

from facepipe import answers
from facepipe.clients import s3_client, sns_client
from facepipe.events import parse_records
from facepipe.settings import Settings, load_settings
from facepipe_tools import metrics_client
from facepipe_tools.paths import REPO_ROOT
from facepipe_tools.polling import wait_for
from facepipe_tools.stack import COMPONENTS, ENV_MARKER, LocalStack, StackError

pytestmark = pytest.mark.integration


def notifier_events(stack: LocalStack) -> dict[str, float]:
    """facerec_notifier_events_total by outcome, from the notifier's /metrics."""
    samples = metrics_client.fetch(stack.settings_env()["NOTIFY_URL"] + "metrics")
    return samples.by_label("facerec_notifier_events_total", "outcome")


def processes_of(stack: LocalStack, components: tuple[str, ...] = COMPONENTS) -> list[psutil.Process]:
    """The running processes of `components` (psutil tells a later process with a recycled pid apart)."""
    return [psutil.Process(pid) for component in components for pid in stack.pids(component)]


def still_running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of `processes` that still run (a zombie has ended)."""
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            pass
    return running


# ------------------------------------------------------------------------- basics


def test_status_reports_every_component_healthy(local_stack: LocalStack) -> None:
    rows = local_stack.status()
    assert [row.name for row in rows] == list(COMPONENTS)
    unhealthy = [row for row in rows if not row.healthy or not row.pids]
    assert not unhealthy
    # The function runner's process group holds the gateway and the workers of both functions.
    assert len(local_stack.pids("function")) == 1 + local_stack.config.workers + local_stack.config.image_workers
    function = next(row for row in rows if row.name == "function")
    assert "face-recognition: " in function.detail and "image-classification: 1/1 workers ready" in function.detail

    done = subprocess.run(
        [sys.executable, "-m", "facepipe_tools.stack", "status", "--state-dir", str(local_stack.state_dir)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for component in COMPONENTS:
        assert re.search(rf"^{component}\s+ok\s+pid \d+", done.stdout, re.M), done.stdout


def test_env_file_has_every_setting_private_and_loadable(local_stack: LocalStack) -> None:
    path = local_stack.env_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().splitlines()[0] == ENV_MARKER
    loaded = load_settings(path)  # the autouse fixture also set the same values in the environment
    assert loaded == local_stack.settings()
    settings = local_stack.settings()
    for name in (
        "s3_endpoint_url", "s3_access_key_id", "s3_secret_access_key", "dynamodb_endpoint_url",
        "aws_access_key_id", "aws_secret_access_key", "openfaas_gateway", "notify_token", "known_faces",
        "classifier_model", "routes_table",
    ):  # fmt: skip
        assert getattr(settings, name), name
    assert Path(settings.known_faces).is_file()
    assert Path(settings.classifier_model).is_file()
    assert [str(route) for route in loaded.routes()] == [
        "input=face-recognition>output",
        "images-input=image-classification>images-output",
    ]


def test_s3_put_get_with_generated_credentials(stack_settings: Settings) -> None:
    s3 = s3_client(stack_settings)
    key = f"stack-test/{uuid.uuid4().hex}.txt"
    s3.put_object(Bucket=stack_settings.output_bucket, Key=key, Body=b"hello ceph")
    try:
        assert s3.get_object(Bucket=stack_settings.output_bucket, Key=key)["Body"].read() == b"hello ceph"
        buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
        assert {stack_settings.input_bucket, stack_settings.output_bucket} <= buckets
    finally:
        s3.delete_object(Bucket=stack_settings.output_bucket, Key=key)

    wrong = s3_client(Settings(**{**stack_settings.__dict__, "s3_secret_access_key": "not-the-secret"}))
    with pytest.raises(ClientError) as info:
        wrong.list_buckets()
    assert info.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied")


def test_dynamodb_server_answers(stack_settings: Settings) -> None:
    from facepipe.clients import dynamodb_client

    tables = dynamodb_client(stack_settings).list_tables()["TableNames"]
    if (REPO_ROOT / "data" / "upload_data.py").is_file():
        assert stack_settings.students_table in tables


# ------------------------------------------------------------------------- notifications


def test_bucket_notification_reaches_the_function(local_stack: LocalStack, stack_settings: Settings) -> None:
    """Upload to the input bucket: RGW pushes the event to the notifier, which accepts it (the
    token matched) and queues it, and the function answers. The upload is not a video, so the
    answer is an error record."""
    s3 = s3_client(stack_settings)
    before = notifier_events(local_stack)
    key = f"stack-probe-{uuid.uuid4().hex}.mp4"
    s3.put_object(Bucket=stack_settings.input_bucket, Key=key, Body=b"not a video")
    try:
        answer = wait_for(lambda: answers.find(s3, stack_settings.output_bucket, key).error, timeout_s=60)
        assert answer, f"no answer for {key}; notifier events {notifier_events(local_stack)}"
        after = notifier_events(local_stack)
        arrived = sum(after.get(outcome, 0) - before.get(outcome, 0) for outcome in ("accepted", "duplicate"))
        assert arrived >= 1, f"the event was not queued: before {before}, after {after}"
        assert after.get("rejected", 0) == before.get("rejected", 0), "RGW's opaqueData did not match NOTIFY_TOKEN"
    finally:
        s3.delete_object(Bucket=stack_settings.input_bucket, Key=key)
        for name in answers.find(s3, stack_settings.output_bucket, key).names:
            s3.delete_object(Bucket=stack_settings.output_bucket, Key=name)
    log = local_stack.log_path("notifier").read_text(errors="replace")
    assert key in log


class _Recorder(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


# Keys RGW has to carry through a notification unchanged.
ODD_KEYS = [
    "a b.mp4", "a+b.mp4", "a%2Bb.mp4", "pct%20.mp4", "café ñ.mp4", "日本/動画.mp4", 'quo"te.mp4', "q?x&y=z#h.mp4",
]  # fmt: skip


@pytest.fixture
def recorded_notifications(stack_settings: Settings):
    """A bucket of its own whose notifications go to a listener in this test process."""
    _Recorder.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    s3, sns = s3_client(stack_settings), sns_client(stack_settings)
    bucket, topic = f"stack-enc-{uuid.uuid4().hex[:8]}", f"stack-enc-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    arn = sns.create_topic(
        Name=topic,
        Attributes={
            "push-endpoint": f"http://127.0.0.1:{server.server_address[1]}/",
            "OpaqueData": "probe-token",
            "persistent": "false",
        },
    )["TopicArn"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "TopicConfigurations": [{"Id": "probe", "TopicArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    try:
        yield s3, bucket, _Recorder.bodies
    finally:
        server.shutdown()
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=bucket)
        sns.delete_topic(TopicArn=arn)


def test_rgw_notification_carries_keys_verbatim(recorded_notifications) -> None:
    """Ceph Pacific puts the object key into the event as it is (JSON-escaped UTF-8), NOT
    URL-encoded the way AWS S3 does: 'a b' stays 'a b', 'a+b' stays 'a+b', 'pct%20' stays
    'pct%20'. Decoding a Ceph key with unquote_plus would change keys with '+' or '%'."""
    s3, bucket, bodies = recorded_notifications
    for key in ODD_KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert wait_for(lambda: len(bodies) >= len(ODD_KEYS), timeout_s=10), f"{len(bodies)} notifications"
    records = [json.loads(body)["Records"][0] for body in bodies]
    assert sorted(r["s3"]["object"]["key"] for r in records) == sorted(ODD_KEYS)
    for record in records:
        assert record["eventSource"] == "ceph:s3"
        assert record["eventName"] == "ObjectCreated:Put"
        assert record["opaqueData"] == "probe-token"
        assert record["s3"]["bucket"]["name"] == bucket


def test_parse_records_keeps_ceph_keys(recorded_notifications) -> None:
    """What the notifier and the function make of those events: the original keys."""
    s3, bucket, bodies = recorded_notifications
    for key in ODD_KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert wait_for(lambda: len(bodies) >= len(ODD_KEYS), timeout_s=10)
    parsed = [event.key for body in bodies for event in parse_records(json.loads(body))]
    assert sorted(parsed) == sorted(ODD_KEYS)


# ------------------------------------------------------------------------- up again, faults


def test_up_twice_keeps_ceph_and_data_restarts_function_and_notifier(
    local_stack: LocalStack, stack_settings: Settings
) -> None:
    s3 = s3_client(stack_settings)
    key = f"stack-test/{uuid.uuid4().hex}.txt"
    s3.put_object(Bucket=stack_settings.output_bucket, Key=key, Body=b"kept")
    before = {component: local_stack.pids(component)[0] for component in COMPONENTS}
    env_before = local_stack.env_file.read_text()
    try:
        local_stack.up()
        after = {component: local_stack.pids(component)[0] for component in COMPONENTS}
        for component in ("mon", "osd", "rgw", "dynamodb"):
            assert after[component] == before[component], component
        for component in ("function", "notifier"):
            assert after[component] != before[component], component
        assert all(row.healthy for row in local_stack.status())
        assert local_stack.env_file.read_text() == env_before
        assert s3.get_object(Bucket=stack_settings.output_bucket, Key=key)["Body"].read() == b"kept"
    finally:
        s3.delete_object(Bucket=stack_settings.output_bucket, Key=key)


@pytest.mark.parametrize("component", ["rgw", "osd"])
def test_stop_start_keeps_objects(local_stack: LocalStack, stack_settings: Settings, component: str) -> None:
    """The fault-test API: a stopped component is reported down, starts again, and the data
    survives (memstore writes its objects out on a clean OSD stop)."""
    s3 = s3_client(stack_settings)
    key = f"stack-test/{uuid.uuid4().hex}.txt"
    s3.put_object(Bucket=stack_settings.output_bucket, Key=key, Body=b"durable")
    old = processes_of(local_stack, (component,))
    local_stack.stop(component)
    assert local_stack.pids(component) == []
    assert not still_running(old)
    row = next(r for r in local_stack.status() if r.name == component)
    assert not row.healthy and row.detail == "not running"
    local_stack.start(component)
    assert local_stack.pids(component) and local_stack.pids(component) != [process.pid for process in old]
    assert wait_for(lambda: all(r.healthy for r in local_stack.status()), timeout_s=30)
    try:
        body = s3.get_object(Bucket=stack_settings.output_bucket, Key=key)["Body"].read()
        assert body == b"durable"
    finally:
        s3.delete_object(Bucket=stack_settings.output_bucket, Key=key)


def test_restart_dynamodb_reloads_students(local_stack: LocalStack, stack_settings: Settings) -> None:
    from facepipe.clients import dynamodb_client

    local_stack.restart("dynamodb")
    tables = dynamodb_client(stack_settings).list_tables()["TableNames"]
    if (REPO_ROOT / "data" / "upload_data.py").is_file():
        assert stack_settings.students_table in tables


# ------------------------------------------------------------------------- down


def test_down_leaves_no_process_and_no_state(make_stack) -> None:
    stack = make_stack(workers=1)
    stack.up()
    assert all(stack.pids(component) for component in COMPONENTS)
    started = processes_of(stack)
    env_file, state_dir = stack.env_file, stack.state_dir
    stack.down()
    assert not state_dir.exists()
    assert not env_file.exists()
    leftover = still_running(started)
    assert not leftover, leftover
    stack.down()  # a second down is harmless


def test_secrets_are_generated_per_stack(local_stack: LocalStack) -> None:
    fresh = LocalStack(local_stack.state_dir.parent / "never-booted", log=None)._resolve_config()
    mine = local_stack.config
    for name in ("s3_access_key_id", "s3_secret_access_key", "aws_secret_access_key", "notify_token", "fsid"):
        assert getattr(mine, name) != getattr(fresh, name), name
        assert len(getattr(fresh, name)) >= 16, name


def test_the_classification_function_comes_with_the_whole_stack(tmp_path: Path) -> None:
    """A new stack of every component serves both functions; one of a few components (bench,
    chaos) the face function alone, with one route, unless it asks for classification workers."""
    few = ("mon", "osd", "rgw", "dynamodb", "function", "notifier")
    whole = LocalStack(tmp_path / "whole", log=None)
    assert whole._resolve_config().image_workers == 1
    partial = LocalStack(tmp_path / "partial", components=few, log=None)
    partial._config = partial._resolve_config()
    assert partial._config.image_workers == 0
    assert partial.settings().routes_table == "input=face-recognition>output"
    assert "CLASSIFIER_MODEL" not in partial.settings_env()
    asked = LocalStack(tmp_path / "asked", components=few, image_workers=2, log=None)
    assert asked._resolve_config().image_workers == 2
    with pytest.raises(StackError, match="image workers"):
        LocalStack(tmp_path / "bad", image_workers=-1, log=None)._resolve_config()


def test_up_refuses_to_overwrite_a_foreign_env_file(tmp_path: Path) -> None:
    foreign = tmp_path / ".env"
    foreign.write_text("S3_ENDPOINT_URL=https://example.invalid\n")
    stack = LocalStack(tmp_path / "state", env_file=foreign, components=("dynamodb",), log=None)
    with pytest.raises(StackError, match="not written by this stack"):
        stack.up()
    assert foreign.read_text() == "S3_ENDPOINT_URL=https://example.invalid\n"
    stack.down()


def test_up_recreates_ceph_after_an_osd_crash(make_stack) -> None:
    """memstore loses every object when the OSD is killed; `start` says so, `up` rebuilds."""
    stack = make_stack(components=("mon", "osd", "rgw"))
    stack.up()
    stack.stop("osd", grace=0)
    assert stack.osd_data_lost()
    with pytest.raises(StackError, match="memstore lost"):
        stack.start("osd")
    stack.up()
    assert not stack.osd_data_lost()
    s3 = s3_client(stack.settings())
    s3.put_object(Bucket=stack.settings().output_bucket, Key="after-rebuild", Body=b"ok")
    assert s3.get_object(Bucket=stack.settings().output_bucket, Key="after-rebuild")["Body"].read() == b"ok"
