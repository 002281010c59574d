"""Dead letters on the real local stack (issue #12, item 3): an object the function dies on
gets a `failed` error record in real RGW after DEAD_LETTER_ATTEMPTS attempts, stamped with the
object's ETag; neither a replayed event nor the reconciler invokes it again, the web tier's
results page shows it, and a new upload is invoked as usual.

`test_notifier_dead_letters_an_object_whose_worker_dies`: a notifier in this process, on its
own input bucket of the session stack's RGW and the stack's output bucket, in front of a
stand-in gateway that drops the connection for the poison key (a worker that dies before it
answers). `test_poisoned_worker_through_the_whole_stack`: the stack's own notifier and
function runner, the runner started with its poison hook (FACEPIPE_RUNNER_POISON_KEYS)."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
import requests

from facepipe import answers
from facepipe.clients import s3_client
from facepipe.notifier.invoker import Backoff
from facepipe.notifier.jobs import Job
from facepipe.notifier.listener import create_app
from facepipe.notifier.service import Notifier
from facepipe.settings import Settings
from facepipe_tools import function_runner, metrics_client
from facepipe_tools.polling import wait_for
from facepipe_tools.stack import LocalStack

pytestmark = pytest.mark.integration

FAST = Backoff(base_s=0.05, max_s=0.2)
POISON = "poison"


class DroppingGateway:
    """A gateway stand-in over real TCP: a request for a key containing POISON gets its
    connection closed without an answer (its worker died); any other gets 200, after `on_ok`
    ran with its request (the function's answer written, say)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.on_ok: Callable[[dict], None] = lambda request: None
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            with connection:
                body = self._read_request(connection)
                self.requests.append(body)
                if POISON in body.get("key", ""):
                    continue  # closed without an answer
                self.on_ok(body)
                payload = json.dumps({**body, "outcome": "ok"}).encode()
                head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                connection.sendall(head.encode() + b"Connection: close\r\n\r\n" + payload)

    @staticmethod
    def _read_request(connection: socket.socket) -> dict:
        data = b""
        while b"\r\n\r\n" not in data:
            data += connection.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += connection.recv(65536)
        return json.loads(body)

    def keys(self) -> list[str]:
        return [request["key"] for request in self.requests]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()


@pytest.fixture
def gateway() -> Iterator[DroppingGateway]:
    stand_in = DroppingGateway()
    yield stand_in
    stand_in.close()


def delete_all(s3, bucket: str, prefix: str = "") -> None:
    for obj in answers.list_objects(s3, bucket, prefix):
        s3.delete_object(Bucket=bucket, Key=obj["Key"])


def answer(s3, settings: Settings, bucket: str, key: str) -> None:
    """Write the answer the function would (nobody recognised), stamped with the object's ETag."""
    etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    s3.put_object(
        Bucket=settings.output_bucket, Key=answers.result_key(key), Body=answers.render_csv([]).encode(),
        Metadata={answers.SOURCE_ETAG_METADATA: etag},
    )  # fmt: skip


def results_item(web_url: str, stem: str) -> dict | None:
    """The web tier's /results.json row of `stem`, if it is on the first page."""
    data = requests.get(web_url + "results.json", timeout=10).json()
    return next((item for item in data["items"] if item["stem"] == stem), None)


def assert_dead_lettered(s3, settings: Settings, bucket: str, key: str, attempts: int) -> str:
    """The record is a `failed` error record stamped with the object's ETag; returns the ETag."""
    etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    obj = s3.get_object(Bucket=settings.output_bucket, Key=answers.error_key(key))
    record = json.loads(obj["Body"].read())
    assert (record["key"], record["error"], record["attempts"]) == (key, "failed", attempts)
    assert record["detail"].startswith(f"failed after {attempts} attempts; last error: ")
    assert obj["Metadata"] == {answers.SOURCE_ETAG_METADATA: etag}
    assert not any(answer.endswith(".csv") for answer in answers.find(s3, settings.output_bucket, key).names)
    return etag


def test_notifier_dead_letters_an_object_whose_worker_dies(
    local_stack: LocalStack, stack_settings: Settings, gateway: DroppingGateway
) -> None:
    s3 = s3_client(stack_settings)
    bucket = f"dead-letter-{uuid.uuid4().hex[:8]}"
    folder = f"dead-letter-{uuid.uuid4().hex[:8]}"
    key, good = f"{folder}/{POISON}.mp4", f"{folder}/good.mp4"
    s3.create_bucket(Bucket=bucket)
    settings = replace(
        stack_settings, routes_table=f"{bucket}={stack_settings.function_name}>{stack_settings.output_bucket}",
        openfaas_gateway=gateway.url, invoke_attempts=5, invoke_timeout_s=5.0, reconcile_interval_s=0.0,
        notifier_concurrency=2,
    )  # fmt: skip
    notifier = Notifier(settings, backoff=FAST)
    client = create_app(notifier).test_client()
    limit = settings.dead_letter_attempts
    gateway.on_ok = lambda request: answer(s3, settings, request["bucket"], request["key"])
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=b"a video the worker dies on")
        s3.put_object(Bucket=bucket, Key=good, Body=b"a good video")
        notifier.start(reconcile=False)
        # The reconciler finds both (its jobs carry the ETag from the listing).
        assert notifier.reconciler.run_once() == 2
        assert notifier.wait_idle(60)
        assert sorted(gateway.keys()) == sorted([good] + [key] * limit)
        assert answers.find(s3, settings.output_bucket, good).result is not None
        etag = assert_dead_lettered(s3, settings, bucket, key, limit)
        samples = metrics_client.parse(client.get("/metrics").get_data(as_text=True))
        assert samples.value("facerec_notifier_dead_lettered_total", function=settings.function_name) == 1

        # Neither a replayed event (with or without its ETag) nor the reconciler invokes it again.
        for event_etag in (etag, ""):
            record = {
                "eventName": "ObjectCreated:Put", "opaqueData": settings.notify_token,
                "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 26, "eTag": event_etag}},
            }  # fmt: skip
            assert client.post("/", json={"Records": [record]}).status_code == 200
            assert notifier.wait_idle(60)
        notifier.submit(Job(bucket, key, etag, source="reconcile"))
        assert notifier.wait_idle(60)
        assert notifier.reconciler.run_once() == 0
        assert gateway.keys().count(key) == limit

        # The web tier of the stack reads the same output bucket.
        web_url = local_stack.settings_env()["WEB_URL"]
        item = wait_for(lambda: results_item(web_url, answers.stem(key)), 30)
        assert item is not None, "the dead letter is not on the results page"
        assert (item["status"], item["attempts"], item["error"]["error"]) == ("error", limit, "failed")
        page = requests.get(web_url + "results", timeout=10).text
        assert f"failed after {limit} attempts" in page

        # A new upload is a new version: invoked as usual.
        s3.put_object(Bucket=bucket, Key=key, Body=b"the same video, uploaded again")
        notifier.submit(Job(bucket, key, source="event"))
        assert notifier.wait_idle(60)
        assert gateway.keys().count(key) == 2 * limit
    finally:
        notifier.stop(grace_s=5)
        delete_all(s3, bucket)
        s3.delete_bucket(Bucket=bucket)
        delete_all(s3, settings.output_bucket, folder + "/")


def notifier_metrics(settings: Settings) -> metrics_client.Samples:
    return metrics_client.fetch(settings.notify_url.rstrip("/") + "/metrics")


@pytest.fixture
def poisoned_runner(local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The session stack's function runner started again with the poison hook for a marker of
    its own; started again without it afterwards."""
    variable = getattr(function_runner, "POISON_KEYS_ENV", None)
    if variable is None:
        pytest.skip("the function runner has no poison hook (FACEPIPE_RUNNER_POISON_KEYS) yet")
    marker = f"poisoned-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(variable, marker)
    local_stack.restart("function")
    try:
        yield marker
    finally:
        monkeypatch.delenv(variable)
        local_stack.restart("function")


def test_poisoned_worker_through_the_whole_stack(
    local_stack: LocalStack, stack_settings: Settings, poisoned_runner: str
) -> None:
    """The stack's notifier gets the upload's event, the runner's worker dies on it (502) each
    time; after DEAD_LETTER_ATTEMPTS the record is there, and a replayed event invokes nothing."""
    s3 = s3_client(stack_settings)
    key = f"{poisoned_runner}/clip.mp4"
    settings = stack_settings
    function = f"{settings.function_name}.{function_runner.FUNCTION_NAMESPACE}"
    gateway_metrics = settings.openfaas_gateway.rstrip("/") + "/metrics"

    def died() -> float:
        """Requests of the face function that got 502 (their worker died)."""
        samples = metrics_client.fetch(gateway_metrics)
        return samples.value("gateway_function_invocation_total", function_name=function, code="502")

    def idle() -> bool:
        return wait_for(lambda: notifier_metrics(settings).value("facerec_notifier_backlog") == 0, 60)

    before = notifier_metrics(settings).value("facerec_notifier_dead_lettered_total", function=settings.function_name)
    died_before = died()
    try:
        s3.put_object(Bucket=settings.input_bucket, Key=key, Body=b"never decoded: the worker dies first")
        assert wait_for(lambda: answers.find(s3, settings.output_bucket, key).error, 180), "no record within 180 s"
        etag = assert_dead_lettered(s3, settings, settings.input_bucket, key, settings.dead_letter_attempts)
        assert idle()
        samples = notifier_metrics(settings)
        assert samples.value("facerec_notifier_dead_lettered_total", function=settings.function_name) == before + 1
        assert died() - died_before == settings.dead_letter_attempts
        # RGW delivers the event again: not invoked.
        record = {
            "eventName": "ObjectCreated:Put", "opaqueData": settings.notify_token,
            "s3": {"bucket": {"name": settings.input_bucket}, "object": {"key": key, "size": 36, "eTag": etag}},
        }  # fmt: skip
        assert requests.post(settings.notify_url, json={"Records": [record]}, timeout=10).status_code == 200
        assert idle()
        assert died() - died_before == settings.dead_letter_attempts
    finally:
        delete_all(s3, settings.input_bucket, poisoned_runner + "/")
        delete_all(s3, settings.output_bucket, poisoned_runner + "/")
