"""The chaos run's own stack (a LocalStack with chaos settings and a private TMPDIR) and
what the run does with it: S3 calls on both functions' buckets, notifier, gateway and web
HTTP, direct function calls, and the metrics of the notifier, the gateway and the workers."""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psutil
import requests
from botocore.exceptions import BotoCoreError, ClientError

from facepipe import answers
from facepipe.answers import error_key, picture_key, result_key
from facepipe.clients import s3_client
from facepipe.settings import Settings
from facepipe_tools import metrics_client, notifier_probe
from facepipe_tools.function_runner import POISON_KEYS_ENV
from facepipe_tools.metrics_client import Samples
from facepipe_tools.polling import wait_for
from facepipe_tools.stack import LocalStack, free_port, free_port_range

#: Object keys containing this kill the worker that gets them (the runner's chaos hook, set
#: by CHAOS_ENV): the `poison` scenario's object. No other key of a chaos run contains it.
POISON_MARK = "chaos-poison"
#: What the chaos run starts of the local stack: all but Prometheus (the web tier for its
#: upload cases).
CHAOS_COMPONENTS = ("mon", "osd", "rgw", "dynamodb", "function", "notifier", "web")

#: Settings of the chaos stacks, on top of the stack's own. INVOKE_TIMEOUT_S bounds a hung
#: worker (the runner kills it); the size limit sits above every legitimate test file;
#: DEAD_LETTER_ATTEMPTS is the default, stated because the poison scenario counts on it.
CHAOS_ENV = {
    "RECONCILE_INTERVAL_S": "60",
    "INVOKE_TIMEOUT_S": "15",
    "FFMPEG_TIMEOUT_S": "20",
    "MAX_OBJECT_BYTES": str(20 * 1024 * 1024),
    "MAX_FRAMES": "30",
    "DEAD_LETTER_ATTEMPTS": "3",
    POISON_KEYS_ENV: POISON_MARK,
}
POLL_S = 0.5
UPLOAD_RETRY_S = 120.0
UPLOAD_THREADS = 4
#: The two functions' buckets, as `Clip.kind` and `BadInput.kind` name them.
FACES = "faces"
IMAGES = "images"


class ChaosError(RuntimeError):
    """The chaos run itself failed (stack, data, timeout of a step)."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the stack


class ChaosStack(LocalStack):
    """A LocalStack whose processes get extra environment variables (the chaos settings and
    a private TMPDIR), changeable between restarts of a component."""

    def __init__(self, state_dir: Path, extra_env: dict[str, str], **kwargs: object) -> None:
        super().__init__(state_dir, **kwargs)
        self.extra_env = dict(extra_env)

    @property
    def tmp_dir(self) -> Path:
        return self.state_dir / "tmp"

    def child_env(self) -> dict[str, str]:
        env = super().child_env()
        env.update(self.extra_env)
        env["TMPDIR"] = str(self.tmp_dir)
        return env

    def up(self) -> None:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        super().up()

    def worker_pids(self, function: str | None = None) -> list[int]:
        """The function workers: the runner's process group without the runner; only those of
        `function` (its folder under functions/, where its workers run) when given."""
        pids = self.pids("function")[1:]
        if function is None:
            return pids
        return [pid for pid in pids if _cwd_name(pid) == function]


def _cwd_name(pid: int) -> str | None:
    try:
        return Path(psutil.Process(pid).cwd()).name
    except psutil.Error:
        return None


def new_chaos_stack(
    state_dir: Path,
    known_faces: Path,
    student_data: Path,
    workers: int = 2,
    extra_env: dict[str, str] | None = None,
    log: Callable[[str], None] | None = None,
    image_workers: int = 1,
) -> ChaosStack:
    """A ChaosStack in `state_dir` on free loopback ports, its env file inside `state_dir`;
    `image_workers` classification workers beside the `workers` face workers."""
    return ChaosStack(
        state_dir,
        {**CHAOS_ENV, **(extra_env or {})},
        env_file=state_dir / "env",
        mon_port=free_port(),
        rgw_port=free_port(),
        dynamodb_port=free_port(),
        gateway_port=free_port(),
        notifier_port=free_port(),
        web_port=free_port(),
        # the face workers' ports, their metrics ports, then the same for the classification workers
        worker_base_port=free_port_range(2 * (workers + image_workers)),
        workers=workers,
        image_workers=image_workers,
        known_faces=known_faces,
        student_data=student_data,
        components=CHAOS_COMPONENTS,
        log=log,
    )


# ----------------------------------------------------------------------------- helpers


def http_json(method: str, url: str, **kwargs: object) -> tuple[int, dict]:
    response = requests.request(method, url, timeout=60, **kwargs)
    try:
        body = response.json()
    except ValueError:
        body = {"text": response.text[:200]}
    return response.status_code, body if isinstance(body, dict) else {"body": body}


def rgw_record(
    bucket: str, key: str, etag: str, size: int, token: str | None, event: str = "ObjectCreated:Put"
) -> dict:
    """One notification record shaped like Ceph RGW (Pacific) sends it."""
    now = datetime.now(UTC)
    record = {
        "eventVersion": "2.2",
        "eventSource": "ceph:s3",
        "awsRegion": "",
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "eventName": event,
        "userIdentity": {"principalId": "facepipe"},
        "requestParameters": {"sourceIPAddress": ""},
        "responseElements": {"x-amz-request-id": secrets.token_hex(8), "x-amz-id-2": "chaos"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "chaos-replay",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "facepipe"}, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": key, "size": size, "eTag": etag, "versionId": "", "sequencer": secrets.token_hex(8),
                       "metadata": [], "tags": []},
        },
        "eventId": f"{now.timestamp():.6f}.{etag}",
    }  # fmt: skip
    if token is not None:
        record["opaqueData"] = token
    return record


#: Outcomes of the function's facerec_videos_total that mean it recognised (or tried to
#: recognise) the object; `skipped` returned a stored answer, `not_found` found no object.
RECOGNISED = ("ok", "error")


class StackClient:
    """What the chaos run does with a running stack: S3 calls, notifier, gateway and web HTTP,
    direct function calls, and the notifier's, the gateway's and the face workers' metrics."""

    def __init__(self, stack: ChaosStack) -> None:
        self.stack = stack
        self.settings: Settings = stack.settings()
        self.s3 = s3_client(self.settings, max_pool_connections=16)
        self.notify_url = self.settings.notify_url
        self.put_retries = 0
        gateway = self.settings.openfaas_gateway.rstrip("/")
        self.gateway_url = gateway
        self.function_url = f"{gateway}/function/{self.settings.function_name}"
        self.image_function_url = f"{gateway}/function/{self.settings.image_function_name}"
        self.web_url = f"http://127.0.0.1:{stack.config.web_port}"

    # -- buckets

    def buckets(self, kind: str = FACES) -> tuple[str, str]:
        """(input bucket, output bucket) of the face function or, for IMAGES, the classifier."""
        if kind == IMAGES:
            return self.settings.image_input_bucket, self.settings.image_output_bucket
        return self.settings.input_bucket, self.settings.output_bucket

    def list(self, bucket: str) -> dict[str, dict]:
        return {obj["Key"]: obj for obj in answers.list_objects(self.s3, bucket)}

    def clear(self) -> None:
        """Empty every bucket of both functions."""
        for bucket in (*self.buckets(FACES), *self.buckets(IMAGES)):
            keys = list(self.list(bucket))
            for start in range(0, len(keys), 1000):
                batch = [{"Key": key} for key in keys[start : start + 1000]]
                self.s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})

    def put(self, key: str, body: bytes, deadline_s: float = UPLOAD_RETRY_S, kind: str = FACES) -> None:
        """PUT an object into the input bucket of `kind`, retrying (as a real client would)
        while RGW is unreachable."""
        bucket = self.buckets(kind)[0]
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                self.s3.put_object(Bucket=bucket, Key=key, Body=body)
                return
            except (BotoCoreError, ClientError):
                if time.monotonic() > deadline:
                    raise
                self.put_retries += 1
                time.sleep(0.5)

    def read_output(self, key: str, kind: str = FACES) -> str:
        return self.s3.get_object(Bucket=self.buckets(kind)[1], Key=key)["Body"].read().decode()

    def delete_answers(self, key: str) -> None:
        for name in (result_key(key), error_key(key), picture_key(key)):
            self.s3.delete_object(Bucket=self.settings.output_bucket, Key=name)

    # -- metrics

    def notifier_metrics(self) -> Samples:
        """The notifier's /metrics (no samples when it does not answer)."""
        try:
            return metrics_client.fetch(self.notify_url.rstrip("/") + "/metrics")
        except (requests.RequestException, ValueError):
            return Samples()

    def gateway_metrics(self) -> Samples:
        """The function runner's gateway /metrics (no samples when it does not answer)."""
        try:
            return metrics_client.fetch(self.gateway_url + "/metrics")
        except (requests.RequestException, ValueError):
            return Samples()

    def function_metrics(self) -> list[Samples]:
        """Each face worker's /metrics, in port order (no samples for one that does not answer)."""
        config = self.stack.config
        scrapes = []
        for port in range(config.worker_base_port, config.worker_base_port + config.workers):
            try:
                scrapes.append(metrics_client.fetch(f"http://127.0.0.1:{port}/metrics"))
            except (requests.RequestException, ValueError):
                scrapes.append(Samples())
        return scrapes

    def function_outcomes(self) -> dict[str, float]:
        """facerec_videos_total by outcome, summed over the face workers."""
        found: dict[str, float] = {}
        for samples in self.function_metrics():
            for outcome, count in samples.by_label("facerec_videos_total", "outcome").items():
                found[outcome] = found.get(outcome, 0.0) + count
        return found

    # -- notifier and gateway

    def wait_idle(self, timeout_s: float = 120.0) -> bool:
        """Until the notifier reports an empty backlog twice in a row."""
        return notifier_probe.wait_idle(self.notify_url, timeout_s)

    def wait_gateway_ready(self, timeout_s: float = 180.0) -> bool:
        """Until the gateway reports every function worker ready."""

        def ready() -> bool:
            try:
                return requests.get(self.gateway_url + "/healthz", timeout=2).ok
            except requests.RequestException:
                return False

        return wait_for(ready, timeout_s, interval_s=0.2)

    def notify(self, records: list[dict] | bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        if isinstance(records, bytes):
            return http_json("POST", self.notify_url, data=records, headers=headers or {})
        return http_json("POST", self.notify_url, json={"Records": records})

    def replay(self, key: str, kind: str = FACES) -> int:
        """POST an RGW-shaped ObjectCreated:Put record for `key` (with the right token)."""
        bucket = self.buckets(kind)[0]
        head = self.s3.head_object(Bucket=bucket, Key=key)
        record = rgw_record(bucket, key, head["ETag"].strip('"'), head["ContentLength"], self.settings.notify_token)
        status, _ = self.notify([record])
        return status

    def call_function(self, key: str) -> tuple[int, dict]:
        """Invoke the function directly (through the gateway) for an input key: its JSON answer."""
        return http_json("POST", self.function_url, json={"bucket": self.settings.input_bucket, "key": key})


def recognitions_between(before: list[Samples], after: list[Samples]) -> int | None:
    """How many objects the function's workers recognised between two scrapes; None when a
    worker did not answer or restarted in between (its counts started again from zero)."""
    total = 0.0
    for old, new in zip(before, after, strict=True):
        if not old or not new or old.started_at != new.started_at:
            return None
        total += sum(new.value("facerec_videos_total", outcome=o) - old.value("facerec_videos_total", outcome=o)
                     for o in RECOGNISED)  # fmt: skip
    return round(total)
