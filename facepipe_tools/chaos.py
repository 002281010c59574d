"""`make chaos`: faults, bad input and the clean-up checks, on a real local stack.

The run starts its own stack (a temporary state folder, free loopback ports, the CSE546
known faces and students from ../shared/cse546 or $CSE546_DIR), then:

1. **baseline**: the 100 clips of CSE546 test_case_2, uploaded at a steady pace
   (`--rate`, 8 per second: faster than two workers recognise them, so a backlog builds
   and any time a fault costs shows at the end), with no fault: the reference time.
2. **faults**, each on the same paced workload, injected once a third of the clips is
   uploaded (so uploads, notifications and recognition are all under way):

   - ``notifier-kill``: the notifier is killed (SIGKILL) and started again 5 s later;
   - ``function-kill``: every function worker is killed (SIGKILL) while invocations are in
     flight; the runner starts them again;
   - ``rgw-restart``: RGW is killed (SIGKILL) and started again 5 s later;
   - ``notifications-off``: the bucket notification is removed before the upload; the
     notifier's reconciler (every 5 s for this run) must find every object on its own;
   - ``duplicate-events``: two more topics and notifications on the input bucket make RGW
     deliver every event three times, and each event is replayed to the notifier twice
     more (once at upload, once after all answers are in).

   A run ends when every clip has an answer (`<stem>.csv` or `<stem>.error.json`), the
   fault's late events are handled (for duplicate-events: the notifier counted the late
   replays as skipped) and the notifier is idle, then counts:
   ``results`` (clips with an answer), ``lost`` (none), ``duplicated`` (both a CSV and an
   error record), ``wrong`` (an answer that is not the mapping's), ``reprocessed``
   (recognitions beyond one per clip: the growth of the function workers'
   ``facerec_videos_total`` with outcome ok or error; unknown, ``-``, when a worker
   restarted during the run and its counts were lost), ``max wait`` (the longest
   upload-to-answer time of a clip) and the time to recover,
   ``recover_s = max(0, last answer - the baseline's last answer)``, both measured from
   the first upload: with the same workload and the fault at the same point, how much
   later than without the fault the last clip got its answer.
3. **persistent notifications** (exploration, not in the JSON): the notifier-kill fault
   with the topic switched to persistent delivery.
4. **memory**: the function restarted (fresh workers), the hostile files of
   facepipe_tools/hostile_media.py (decompression bombs, huge or odd video frames, absurd
   container indexes, playlists...) uploaded at once; each must get an acceptable answer,
   no worker may die, and the workers' peak resident memory (VmHWM, followed throughout)
   must stay within WORKER_RSS_LIMIT_MB. Alone with `--scenario memory`.
5. **bad input**: every case of `bad_input_cases()` (media, keys, notifications, function
   requests, a hung worker), then the service must still answer a normal clip, and no
   temporary file or stray process of the function may be left.

It prints a table per part and, as its last line, one JSON object::

    {"scenarios": [{"name", "videos", "results", "lost", "duplicated", "recover_s"}, ...],
     "bad_inputs_tried": N, "bad_inputs_failed": N,
     "memory": {"files", "answered", "failed", "worker_restarts", "max_worker_rss_mb", "limit_mb"}}

Exit status 0 when nothing was lost, duplicated or wrong, every bad input was handled and
the memory scenario kept its bound; 1 otherwise; 2 when the run itself could not be done.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import requests
from botocore.exceptions import BotoCoreError, ClientError

from facepipe import answers
from facepipe.answers import error_key, parse_csv, parse_error, picture_key, result_key
from facepipe.clients import s3_client, sns_client
from facepipe.notifier.setup import disable_notifications, ensure_bucket, setup_notifications
from facepipe.settings import Settings
from facepipe_tools import hostile_media, metrics_client, notifier_probe
from facepipe_tools.hostile_media import ffmpeg
from facepipe_tools.mapping import OK, MappingEntry, compare, load_mapping
from facepipe_tools.metrics_client import Samples
from facepipe_tools.paths import cse546_dir
from facepipe_tools.polling import wait_for
from facepipe_tools.stack import LocalStack, free_port, free_port_range

#: What the chaos run starts of the local stack (not the web tier).
CHAOS_COMPONENTS = ("mon", "osd", "rgw", "dynamodb", "function", "notifier")

#: Settings of the chaos stacks, on top of the stack's own. INVOKE_TIMEOUT_S bounds a hung
#: worker (the runner kills it); the size limit sits above every legitimate test file.
CHAOS_ENV = {
    "RECONCILE_INTERVAL_S": "60",
    "INVOKE_TIMEOUT_S": "15",
    "FFMPEG_TIMEOUT_S": "20",
    "MAX_OBJECT_BYTES": str(20 * 1024 * 1024),
    "MAX_FRAMES": "30",
}
#: FFMPEG_TIMEOUT_S of the function while the slow-decode case runs: a tenth or less of
#: the time the slow clip needs (30 sampled frames without a face, each detected twice).
SLOW_DECODE_TIMEOUT_S = 0.5
SCENARIOS = ("notifier-kill", "function-kill", "rgw-restart", "notifications-off", "duplicate-events")
#: Hostile media through the running stack, the workers' peak memory measured (run_memory).
MEMORY = "memory"
ALL_SCENARIOS = (*SCENARIOS, MEMORY)
FAST_RECONCILE_S = 5.0
DOWN_S = 5.0
POLL_S = 0.5
UPLOAD_RETRY_S = 120.0
UPLOAD_THREADS = 4


class ChaosError(RuntimeError):
    """The chaos run itself failed (stack, data, timeout of a step)."""


def _say(message: str) -> None:
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

    def worker_pids(self) -> list[int]:
        """The function workers: the runner's process group without the runner itself."""
        return self.pids("function")[1:]


def new_chaos_stack(
    state_dir: Path,
    known_faces: Path,
    student_data: Path,
    workers: int = 2,
    extra_env: dict[str, str] | None = None,
    log: Callable[[str], None] | None = None,
) -> ChaosStack:
    """A ChaosStack in `state_dir` on free loopback ports, its env file inside `state_dir`."""
    return ChaosStack(
        state_dir,
        {**CHAOS_ENV, **(extra_env or {})},
        env_file=state_dir / "env",
        mon_port=free_port(),
        rgw_port=free_port(),
        dynamodb_port=free_port(),
        gateway_port=free_port(),
        notifier_port=free_port(),
        worker_base_port=free_port_range(2 * workers),  # the workers' ports, then their metrics ports
        workers=workers,
        known_faces=known_faces,
        student_data=student_data,
        components=CHAOS_COMPONENTS,
        log=log,
    )


# ----------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Clip:
    """One upload of a workload: its object key, the file and the expected people."""

    key: str
    path: Path
    expected: MappingEntry | None = None


def cse546_clips(cse546: Path, limit: int | None = None) -> list[Clip]:
    """The clips of CSE546 test_case_2 with their mapping entries (in numeric order)."""
    mapping = {entry.video: entry for entry in load_mapping(cse546 / "mapping")}
    folder = cse546 / "test_cases" / "test_case_2"
    paths = sorted(folder.glob("*.mp4"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if not paths:
        raise ChaosError(f"no clips in {folder}")
    clips = [Clip(p.name, p, mapping.get(p.name)) for p in paths]
    return clips[:limit] if limit else clips


def sample_clips(sample_dir: Path, mapping_file: Path, count: int) -> list[Clip]:
    """`count` uploads of the built-in sample clips, each under its own key (`NN-<name>`)."""
    entries = load_mapping(mapping_file)
    clips = []
    for index in range(count):
        entry = entries[index % len(entries)]
        key = f"{index:02d}-{entry.video}"
        clips.append(Clip(key, sample_dir / entry.video, MappingEntry(key, entry.people)))
    return clips


def http_json(method: str, url: str, **kwargs: object) -> tuple[int, dict]:
    response = requests.request(method, url, timeout=30, **kwargs)
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
    """What the chaos run does with a running stack: S3 calls, notifier and gateway HTTP,
    direct function calls, and the notifier's and the function workers' metrics."""

    def __init__(self, stack: ChaosStack) -> None:
        self.stack = stack
        self.settings: Settings = stack.settings()
        self.s3 = s3_client(self.settings, max_pool_connections=16)
        self.notify_url = self.settings.notify_url
        self.put_retries = 0
        self.function_url = f"{self.settings.openfaas_gateway.rstrip('/')}/function/{self.settings.function_name}"

    # -- buckets

    def list(self, bucket: str) -> dict[str, dict]:
        return {obj["Key"]: obj for obj in answers.list_objects(self.s3, bucket)}

    def clear(self) -> None:
        for bucket in (self.settings.input_bucket, self.settings.output_bucket):
            keys = list(self.list(bucket))
            for start in range(0, len(keys), 1000):
                batch = [{"Key": key} for key in keys[start : start + 1000]]
                self.s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})

    def put(self, key: str, body: bytes, deadline_s: float = UPLOAD_RETRY_S) -> None:
        """PUT an object, retrying (as a real client would) while RGW is unreachable."""
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                self.s3.put_object(Bucket=self.settings.input_bucket, Key=key, Body=body)
                return
            except (BotoCoreError, ClientError):
                if time.monotonic() > deadline:
                    raise
                self.put_retries += 1
                time.sleep(0.5)

    def read_output(self, key: str) -> str:
        return self.s3.get_object(Bucket=self.settings.output_bucket, Key=key)["Body"].read().decode()

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

    def function_metrics(self) -> list[Samples]:
        """Each function worker's /metrics, in port order (no samples for one that does not answer)."""
        config = self.stack.config
        scrapes = []
        for port in range(config.worker_base_port, config.worker_base_port + config.workers):
            try:
                scrapes.append(metrics_client.fetch(f"http://127.0.0.1:{port}/metrics"))
            except (requests.RequestException, ValueError):
                scrapes.append(Samples())
        return scrapes

    def function_outcomes(self) -> dict[str, float]:
        """facerec_videos_total by outcome, summed over the function's workers."""
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
                return requests.get(self.settings.openfaas_gateway.rstrip("/") + "/healthz", timeout=2).ok
            except requests.RequestException:
                return False

        return wait_for(ready, timeout_s, interval_s=0.2)

    def notify(self, records: list[dict] | bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        if isinstance(records, bytes):
            return http_json("POST", self.notify_url, data=records, headers=headers or {})
        return http_json("POST", self.notify_url, json={"Records": records})

    def replay(self, key: str) -> int:
        """POST an RGW-shaped ObjectCreated:Put record for `key` (with the right token)."""
        head = self.s3.head_object(Bucket=self.settings.input_bucket, Key=key)
        record = rgw_record(
            self.settings.input_bucket, key, head["ETag"].strip('"'), head["ContentLength"], self.settings.notify_token
        )
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


# ----------------------------------------------------------------------------- faults


@dataclass
class RunInfo:
    """What a run recorded, for a fault's summary: wall-clock marks (`fault`, `repaired`)
    and when each key's upload completed."""

    marks: dict[str, float]
    uploaded_at: dict[str, float]


@dataclass
class Fault:
    """What a scenario does to the stack. `inject` runs once a third of the workload is
    uploaded (after an invocation is in flight when `wait_busy`), `repair` `down_s` later;
    `before`/`after` wrap the whole run; `on_upload` runs after each upload and
    `after_answers` once every clip has an answer (before the final count): it returns
    a problem, if any."""

    name: str
    description: str
    inject: Callable[[], None] | None = None
    repair: Callable[[], None] = lambda: None
    down_s: float = 0.0
    wait_busy: bool = False
    before: Callable[[], None] = lambda: None
    after: Callable[[], None] = lambda: None
    on_upload: Callable[[Clip], None] | None = None
    after_answers: Callable[[list[Clip]], str | None] | None = None
    #: a sentence about what happened (events redelivered, ...), for the report
    summary: Callable[[RunInfo], str] | None = None


def kill_notifier(client: StackClient, down_s: float = DOWN_S, name: str = "notifier-kill") -> Fault:
    stack = client.stack

    def summary(info: RunInfo) -> str:
        """From the metrics of the restarted notifier, which count from its start."""
        start, end = info.marks.get("fault"), info.marks.get("repaired")
        if start is None or end is None:
            return ""
        down = sum(start <= at <= end for at in info.uploaded_at.values())
        later = sum(at > end for at in info.uploaded_at.values())
        samples = client.notifier_metrics()
        events = sum(samples.value("facerec_notifier_events_total", outcome=o) for o in ("accepted", "duplicate"))
        reconciled = samples.value("facerec_notifier_reconciled_total")
        return (
            f"{down} uploads while the notifier was down; since it came back it got {events:.0f} object-created"
            f" records ({later} uploads came later) and its reconciler queued {reconciled:.0f} objects"
        )

    return Fault(
        name,
        f"notifier SIGKILLed, started again {down_s:g} s later",
        inject=lambda: stack.stop("notifier", grace=0),
        repair=lambda: stack.start("notifier"),
        down_s=down_s,
        summary=summary,
    )


def kill_function_workers(client: StackClient) -> Fault:
    stack = client.stack

    killed: list[int] = []

    def inject() -> None:
        killed.extend(stack.worker_pids())
        for pid in killed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def repair() -> None:
        """The runner restarts them: wait until every worker is a new process, then ready
        (a new worker starts not ready, so the gateway's health waits for all of them)."""

        def replaced() -> bool:
            current = stack.worker_pids()
            return len(current) >= stack.config.workers and not set(current) & set(killed)

        wait_for(replaced, 180)
        client.wait_gateway_ready()

    return Fault(
        "function-kill",
        "every function worker SIGKILLed with invocations in flight; the runner restarts them"
        " (down = until all are ready again)",
        inject=inject,
        repair=repair,
        wait_busy=True,
    )


def restart_rgw(client: StackClient, down_s: float = DOWN_S) -> Fault:
    stack = client.stack
    return Fault(
        "rgw-restart",
        f"RGW SIGKILLed, started again {down_s:g} s later",
        inject=lambda: stack.stop("rgw", grace=0),
        repair=lambda: stack.start("rgw"),
        down_s=down_s,
    )


def notifications_off(client: StackClient, reconcile_s: float = FAST_RECONCILE_S) -> Fault:
    stack = client.stack
    normal = stack.extra_env.get("RECONCILE_INTERVAL_S", CHAOS_ENV["RECONCILE_INTERVAL_S"])

    def before() -> None:
        disable_notifications(client.settings, s3=client.s3)
        stack.extra_env["RECONCILE_INTERVAL_S"] = f"{reconcile_s:g}"
        stack.restart("notifier")

    def after() -> None:
        setup_notifications(client.settings, s3=client.s3, sns=sns_client(client.settings))
        stack.extra_env["RECONCILE_INTERVAL_S"] = normal
        stack.restart("notifier")

    return Fault(
        "notifications-off",
        f"bucket notification removed; only the reconciler (every {reconcile_s:g} s) finds the uploads",
        before=before,
        after=after,
    )


DUPLICATE_TOPICS = ("chaos-duplicate-1", "chaos-duplicate-2")


def duplicate_events(client: StackClient) -> Fault:
    settings = client.settings
    sns = sns_client(settings)
    replay_pool = ThreadPoolExecutor(max_workers=2)

    def before() -> None:
        # RGW adds notifications to the bucket's configuration (it does not replace it): with
        # three topics on the same endpoint, RGW sends every event three times.
        configurations = []
        for topic in DUPLICATE_TOPICS:
            arn = sns.create_topic(
                Name=topic,
                Attributes={"push-endpoint": settings.notify_url, "OpaqueData": settings.notify_token or "",
                            "persistent": "false"},
            )["TopicArn"]  # fmt: skip
            configurations.append({"Id": topic, "TopicArn": arn, "Events": ["s3:ObjectCreated:*"]})
        client.s3.put_bucket_notification_configuration(
            Bucket=settings.input_bucket, NotificationConfiguration={"TopicConfigurations": configurations}
        )
        found = client.s3.get_bucket_notification_configuration(Bucket=settings.input_bucket)
        if len(found.get("TopicConfigurations", [])) < 3:
            raise ChaosError(f"expected 3 notifications on the input bucket, found {found}")
        counters.update(counts())

    counters: dict[str, float] = {}

    def counts() -> dict[str, float]:
        """The notifier's records by outcome and its skipped invocations, the function's skips."""
        samples = client.notifier_metrics()
        found = samples.by_label("facerec_notifier_events_total", "outcome")
        found["skipped"] = samples.value("facerec_notifier_skipped_total")
        found["function skipped"] = client.function_outcomes().get("skipped", 0.0)
        return found

    def summary(info: RunInfo) -> str:
        now = counts()
        delta = {name: int(now[name] - counters.get(name, 0.0)) for name in now}
        return (
            f"the notifier got {delta.get('accepted', 0) + delta.get('duplicate', 0)} object-created records:"
            f" {delta.get('accepted', 0)} queued, {delta.get('duplicate', 0)} duplicates of a queued one;"
            f" {delta['skipped']} invocations answered with the answer already there"
            f" (the function counted {delta['function skipped']} skips)"
        )

    def on_upload(clip: Clip) -> None:
        replay_pool.submit(client.replay, clip.key)

    def after_answers(clips: list[Clip]) -> str | None:
        """Once the notifier is done with the clips, replay every clip's event once more and
        wait until it has handled each of them: invoked, and answered as skipped."""
        replay_pool.shutdown(wait=True)
        if not client.wait_idle(120):
            return "the notifier was still busy 120 s after the last answer"
        skipped = client.notifier_metrics().value("facerec_notifier_skipped_total")
        for clip in clips:
            client.replay(clip.key)
        wanted = skipped + len(clips)
        if not wait_for(lambda: client.notifier_metrics().value("facerec_notifier_skipped_total") >= wanted, 120):
            return f"the {len(clips)} late replays were not all answered as skipped within 120 s"
        return None

    def after() -> None:
        disable_notifications(settings, s3=client.s3)
        for topic in DUPLICATE_TOPICS:
            with contextlib.suppress(ClientError):
                sns.delete_topic(TopicArn=f"arn:aws:sns:default::{topic}")
        setup_notifications(settings, s3=client.s3, sns=sns)

    return Fault(
        "duplicate-events",
        "every event sent 3 times by RGW (3 notifications) and replayed twice more (at upload, after the answer)",
        before=before,
        after=after,
        on_upload=on_upload,
        after_answers=after_answers,
        summary=summary,
    )


def persistent_notifier_kill(client: StackClient) -> Fault:
    """notifier-kill with the topic in persistent mode (RGW queues events and retries)."""
    fault = kill_notifier(client, name="notifier-kill (persistent)")
    persistent = replace(client.settings, persistent_notifications=True)

    def before() -> None:
        setup_notifications(persistent, s3=client.s3, sns=sns_client(client.settings))

    def after() -> None:
        setup_notifications(client.settings, s3=client.s3, sns=sns_client(client.settings))

    fault.description = "persistent topic; " + fault.description
    fault.before, fault.after = before, after
    return fault


def make_fault(name: str, client: StackClient) -> Fault:
    factories: dict[str, Callable[[StackClient], Fault]] = {
        "notifier-kill": kill_notifier,
        "function-kill": kill_function_workers,
        "rgw-restart": restart_rgw,
        "notifications-off": notifications_off,
        "duplicate-events": duplicate_events,
        "persistent": persistent_notifier_kill,
    }
    return factories[name](client)


# ----------------------------------------------------------------------------- scenarios


@dataclass
class ScenarioResult:
    name: str
    videos: int
    results: int = 0
    lost: int = 0
    duplicated: int = 0
    wrong: int = 0
    #: recognitions beyond one per clip; None when unknown (a function worker restarted)
    reprocessed: int | None = None
    fault_at_s: float | None = None
    down_s: float | None = None
    last_answer_s: float | None = None
    max_wait_s: float | None = None
    recover_s: float | None = None
    note: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.wrong == 0 and self.results == self.videos

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "videos": self.videos,
            "results": self.results,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "recover_s": self.recover_s,
        }


def _judge(entry: MappingEntry | None, text: str) -> str | None:
    """None when a CSV answer is what the mapping expects, else why not."""
    try:
        students = parse_csv(text)
    except ValueError as exc:
        return f"unreadable result: {exc}"
    if entry is None:
        return None
    status, detail = compare(entry, students)
    return None if status == OK else detail


class ScenarioRunner:
    """Runs paced workloads with a fault and counts the answers."""

    def __init__(self, client: StackClient, clips: list[Clip], rate: float, timeout_s: float = 600.0) -> None:
        if len({result_key(c.key) for c in clips}) != len(clips):
            raise ChaosError("two clips of the workload share an answer key")
        self.client = client
        self.clips = clips
        self.rate = rate
        self.timeout_s = timeout_s
        self.bodies = {clip.key: clip.path.read_bytes() for clip in clips}

    def _upload_paced(
        self, t0: float, fault: Fault | None, fault_thread: threading.Thread | None, uploaded_at: dict[str, float]
    ) -> None:
        trigger = max(1, len(self.clips) // 3)
        with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
            futures = []
            for index, clip in enumerate(self.clips):
                delay = t0 + index / self.rate - time.time()
                if delay > 0:
                    time.sleep(delay)
                if fault_thread is not None and index == trigger:
                    fault_thread.start()

                def upload(clip: Clip = clip) -> None:
                    self.client.put(clip.key, self.bodies[clip.key])
                    uploaded_at[clip.key] = time.time()
                    if fault is not None and fault.on_upload is not None:
                        fault.on_upload(clip)

                futures.append(pool.submit(upload))
            for future in futures:
                future.result()

    def _answers(self) -> dict[str, dict]:
        return self.client.list(self.client.settings.output_bucket)

    def run(self, fault: Fault | None, baseline: ScenarioResult | None = None) -> ScenarioResult:
        name = fault.name if fault else "baseline"
        client = self.client
        result = ScenarioResult(name, len(self.clips))
        client.wait_idle(60)
        client.clear()
        client.wait_idle(60)
        function_before = client.function_metrics()
        info = RunInfo({}, {})
        marks = info.marks
        retries = client.put_retries

        def fault_body() -> None:
            assert fault is not None
            if fault.wait_busy:
                wait_for(lambda: client.notifier_metrics().value("facerec_notifier_inflight") >= 1, 15, 0.05)
            marks["fault"] = time.time()
            assert fault.inject is not None
            fault.inject()
            if fault.down_s:
                time.sleep(fault.down_s)
            fault.repair()
            marks["repaired"] = time.time()

        t0 = time.time()
        has_injection = fault is not None and fault.inject is not None
        fault_thread = threading.Thread(target=fault_body, name="fault") if has_injection else None
        try:
            if fault is not None:
                fault.before()
            t0 = time.time()
            self._upload_paced(t0, fault, fault_thread, info.uploaded_at)
            first_answer = self._wait_answers(t0)
            if fault_thread is not None:
                fault_thread.join(timeout=300)
            if fault is not None and fault.after_answers is not None:
                problem = fault.after_answers(self.clips)
                if problem:
                    result.problems.append(problem)
            if not client.wait_idle(120):
                result.problems.append("the notifier was still busy 120 s after the last answer")
            self._count(result, first_answer, t0)
            waits = [first_answer[k].timestamp() - at for k, at in info.uploaded_at.items() if k in first_answer]
            result.max_wait_s = round(max(waits), 1) if waits else None
        finally:
            if fault_thread is not None and fault_thread.is_alive():
                fault_thread.join(timeout=300)
            if fault is not None:
                fault.after()
        recognitions = recognitions_between(function_before, client.function_metrics())
        if recognitions is not None:
            result.reprocessed = max(0, recognitions - len(self.clips))
        if "fault" in marks:
            result.fault_at_s = round(marks["fault"] - t0, 1)
            if "repaired" in marks:
                result.down_s = round(marks["repaired"] - marks["fault"], 1)
        if baseline is not None and result.last_answer_s is not None and baseline.last_answer_s is not None:
            result.recover_s = round(max(0.0, result.last_answer_s - baseline.last_answer_s), 1)
        elif baseline is None and result.last_answer_s is not None:
            result.recover_s = 0.0
        notes = [fault.description] if fault is not None else []
        if fault is not None and fault.summary is not None:
            notes.append(fault.summary(info))
        if client.put_retries > retries:
            notes.append(f"{client.put_retries - retries} upload attempts failed and were retried")
        result.note = "; ".join(note for note in notes if note)
        return result

    def _wait_answers(self, t0: float) -> dict[str, datetime]:
        """Poll the output until every clip has an answer (or the timeout): the LastModified
        of the first answer seen per clip."""
        first: dict[str, datetime] = {}
        wanted = {clip.key: (result_key(clip.key), error_key(clip.key)) for clip in self.clips}

        def all_answered() -> bool:
            try:
                outputs = self._answers()
            except (BotoCoreError, ClientError):
                outputs = {}
            for key, names in wanted.items():
                if key not in first:
                    found = [outputs[n]["LastModified"] for n in names if n in outputs]
                    if found:
                        first[key] = min(found)
            return len(first) == len(wanted)

        wait_for(all_answered, self.timeout_s, POLL_S)
        return first

    def _count(self, result: ScenarioResult, first_answer: dict[str, datetime], t0: float) -> None:
        outputs = self._answers()
        for clip in self.clips:
            has_csv = result_key(clip.key) in outputs
            has_error = error_key(clip.key) in outputs
            if not has_csv and not has_error:
                result.lost += 1
                result.problems.append(f"{clip.key}: no answer")
                continue
            result.results += 1
            if has_csv and has_error:
                result.duplicated += 1
                result.problems.append(f"{clip.key}: both a CSV and an error record")
            if has_error and not has_csv:
                result.wrong += 1
                record = client_text(self.client, error_key(clip.key))
                result.problems.append(f"{clip.key}: error record {record[:120]}")
            elif has_csv:
                problem = _judge(clip.expected, self.client.read_output(result_key(clip.key)))
                if problem:
                    result.wrong += 1
                    result.problems.append(f"{clip.key}: {problem}")
        if first_answer:
            result.last_answer_s = round(max(first_answer.values()).timestamp() - t0, 1)


def client_text(client: StackClient, key: str) -> str:
    try:
        return client.read_output(key)
    except ClientError as exc:
        return f"(unreadable: {exc})"


# ----------------------------------------------------------------------------- bad input


@dataclass
class BadInputContext:
    """What the bad-input cases work with; `refs` maps each reference clip's key to the
    people the service found in it (learned by uploading it first)."""

    client: StackClient
    media_dir: Path
    ref_clips: list[Path]
    unknown_photo: Path
    max_object_bytes: int
    max_frames: int
    refs: dict[str, list[str]] = field(default_factory=dict)
    stills: list[Path] = field(default_factory=list)
    #: the function's facerec_videos_total by outcome before the object cases were uploaded
    outcomes_before: dict[str, float] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.client.settings

    @property
    def ref_people(self) -> list[str]:
        """The people of the first reference clip."""
        return self.refs[self.ref_key(0)]

    @staticmethod
    def ref_key(index: int) -> str:
        return f"chaos-ref-{index}.mp4"


#: Expected answers of object cases.
NO_ANSWER = "no answer"


@dataclass
class BadInput:
    """One bad-input case. Object cases upload `key` (made by `make`) and expect `expect`:
    ("csv", people) with people None = the first reference's people, ("error", kind) (kind
    None: any error record with a detail) or (NO_ANSWER, None); a NO_ANSWER case has
    `handled`, the positive sign that the service has dealt with the input (after which no
    answer means none will come); `extra` checks more (the function's JSON answer and
    metrics, HTTP answers). Request cases run `request` and return None when handled, else
    the reason."""

    name: str
    what: str
    key: str | None = None
    make: Callable[[BadInputContext, str], None] | None = None
    expect: tuple[str, object] | None = None
    handled: Callable[[BadInputContext, str], bool] | None = None
    extra: Callable[[BadInputContext, str], str | None] | None = None
    request: Callable[[BadInputContext], str | None] | None = None
    #: runs after every other case (it stops the function for a while)
    last: bool = False


@dataclass
class CaseResult:
    name: str
    what: str
    passed: bool
    detail: str = ""


def _put_file(ctx: BadInputContext, key: str, path: Path) -> None:
    ctx.client.put(key, path.read_bytes())


def _media(ctx: BadInputContext, name: str, *ffmpeg_args: str) -> Path:
    path = ctx.media_dir / name
    if not path.exists():
        partial = path.with_name(".partial-" + name)
        ffmpeg(*ffmpeg_args, str(partial))
        partial.rename(path)
    return path


_H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")
_EVEN = "scale=trunc(iw/2)*2:trunc(ih/2)*2,setsar=1"


def make_empty(ctx: BadInputContext, key: str) -> None:
    ctx.client.put(key, b"")


def make_text(ctx: BadInputContext, key: str) -> None:
    ctx.client.put(key, b"These are my lecture notes, not a video.\n" * 40)


def make_random(ctx: BadInputContext, key: str) -> None:
    ctx.client.put(key, secrets.token_bytes(256 * 1024))


def _truncated(ctx: BadInputContext, key: str, movflags: str) -> None:
    """The first half of a 4 s clip of the reference face with a keyframe every second, its
    index (moov) at the end (`-faststart`, as cameras write it) or at the start
    (`+faststart`, as made for the web): the half holds whole frames with the face."""
    path = _media(
        ctx, f"whole{movflags}.mp4", "-loop", "1", "-framerate", "10", "-t", "4", "-i", str(ctx.stills[0]),
        "-vf", f"scale=640:-2,{_EVEN}", *_H264, "-x264-params", "keyint=10", "-movflags", movflags,
    )  # fmt: skip
    data = path.read_bytes()
    ctx.client.put(key, data[: len(data) // 2])


def make_truncated(ctx: BadInputContext, key: str) -> None:
    _truncated(ctx, key, "-faststart")


def make_truncated_faststart(ctx: BadInputContext, key: str) -> None:
    _truncated(ctx, key, "+faststart")


def make_audio_only(ctx: BadInputContext, key: str) -> None:
    path = _media(ctx, "audio-only.m4a", "-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-c:a", "aac")
    _put_file(ctx, key, path)


def make_too_large(ctx: BadInputContext, key: str) -> None:
    ctx.client.put(key, b"\0" * (ctx.max_object_bytes + 1))


def make_long(ctx: BadInputContext, key: str) -> None:
    """20 minutes: the reference face as a still, one frame per second."""
    still = ctx.stills[0]
    path = _media(ctx, "long.mp4", "-loop", "1", "-framerate", "1", "-t", "1200", "-i", str(still),
                  "-vf", f"scale=640:-2,{_EVEN}", *_H264)  # fmt: skip
    _put_file(ctx, key, path)


def make_high_resolution(ctx: BadInputContext, key: str) -> None:
    """8K (7680x4320): the reference face scaled up."""
    still = ctx.stills[0]
    path = _media(
        ctx, "8k.mp4", "-loop", "1", "-framerate", "1", "-t", "2", "-i", str(still),
        "-vf", "scale=7680:4320:force_original_aspect_ratio=decrease,pad=7680:4320:(ow-iw)/2:(oh-ih)/2,setsar=1",
        *_H264,
    )  # fmt: skip
    _put_file(ctx, key, path)


def make_no_face(ctx: BadInputContext, key: str) -> None:
    path = _media(ctx, "no-face.mp4", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=10", "-t", "2", *_H264)
    _put_file(ctx, key, path)


def make_unknown_face(ctx: BadInputContext, key: str) -> None:
    path = _media(ctx, "unknown-face.mp4", "-loop", "1", "-framerate", "5", "-t", "2", "-i", str(ctx.unknown_photo),
                  "-vf", f"scale=640:-2,{_EVEN}", *_H264)  # fmt: skip
    _put_file(ctx, key, path)


def many_faces_people(ctx: BadInputContext) -> list[str]:
    """The known people in the many-faces grid (at most 6 references)."""
    return sorted({name for key in list(ctx.refs)[:6] for name in ctx.refs[key]})


def face_crop(image_path: Path, out: Path, side: int = 320) -> Path:
    """A square crop around the (largest) face of a photo, `side` pixels wide."""
    import face_recognition
    from PIL import Image

    image = face_recognition.load_image_file(str(image_path))
    faces = face_recognition.face_locations(image, number_of_times_to_upsample=1)
    if not faces:
        raise ChaosError(f"no face found in {image_path}")
    top, right, bottom, left = max(faces, key=lambda f: (f[2] - f[0]) * (f[1] - f[3]))
    size = int(max(bottom - top, right - left) * 1.8)
    cx, cy = (left + right) // 2, (top + bottom) // 2
    height, width = image.shape[:2]
    box = (max(0, cx - size // 2), max(0, cy - size // 2), min(width, cx + size // 2), min(height, cy + size // 2))
    Image.fromarray(image).crop(box).resize((side, side)).save(out)
    return out


def make_many_faces(ctx: BadInputContext, key: str) -> None:
    """A 3x2 grid of 320x320 face crops: every reference person, the rest unknown faces."""
    known = [face_crop(still, ctx.media_dir / f"face-{i}.png") for i, still in enumerate(ctx.stills)]
    unknown = face_crop(ctx.unknown_photo, ctx.media_dir / "face-unknown.png")
    tiles = (known + [unknown] * 6)[:6]
    inputs: list[str] = []
    for tile in tiles:
        inputs += ["-loop", "1", "-framerate", "5", "-t", "2", "-i", str(tile)]
    scaled = ";".join(f"[{i}]setsar=1[t{i}]" for i in range(6))
    layout = "0_0|320_0|640_0|0_320|320_320|640_320"
    graph = f"{scaled};{''.join(f'[t{i}]' for i in range(6))}xstack=inputs=6:layout={layout}[v]"
    path = _media(ctx, "many-faces.mp4", *inputs, "-filter_complex", graph, "-map", "[v]", *_H264)
    _put_file(ctx, key, path)


def make_photo_named_mp4(ctx: BadInputContext, key: str) -> None:
    _put_file(ctx, key, ctx.stills[0])


def make_reference_copy(ctx: BadInputContext, key: str) -> None:
    _put_file(ctx, key, ctx.ref_clips[0])


def request_slow_decode(ctx: BadInputContext) -> str | None:
    """The function restarted with FFMPEG_TIMEOUT_S = SLOW_DECODE_TIMEOUT_S; a clip whose
    recognition takes far longer (40 s of 640x360, every frame a keyframe, no face: 30
    sampled frames, each detected twice) must end with a `timeout` error record, and the
    function must go on serving. The normal setting is restored afterwards."""
    stack, client = ctx.client.stack, ctx.client
    path = _media(
        ctx, "slow.mp4", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=1", "-t", "40",
        "-c:v", "libx264", "-preset", "ultrafast", "-x264-params", "keyint=1", "-pix_fmt", "yuv420p",
    )  # fmt: skip
    key = "chaos-slow.mp4"
    normal = stack.extra_env["FFMPEG_TIMEOUT_S"]
    stack.extra_env["FFMPEG_TIMEOUT_S"] = f"{SLOW_DECODE_TIMEOUT_S:g}"
    try:
        stack.restart("function")
        client.put(key, path.read_bytes())
        wait_for(lambda: answers.find(client.s3, ctx.settings.output_bucket, key).newest(), 120, POLL_S)
    finally:
        stack.extra_env["FFMPEG_TIMEOUT_S"] = normal
        stack.restart("function")
    outputs = client.list(ctx.settings.output_bucket)
    if error_key(key) not in outputs:
        return "no error record" + (" (a CSV instead)" if result_key(key) in outputs else " within 120 s")
    record = parse_error(client.read_output(error_key(key)))
    if record.get("error") != "timeout":
        return f"error {record.get('error')!r}, expected 'timeout': {record}"
    return None


def make_deleted(ctx: BadInputContext, key: str) -> None:
    ctx.client.put(key, ctx.ref_clips[0].read_bytes())
    ctx.client.s3.delete_object(Bucket=ctx.settings.input_bucket, Key=key)


def deleted_handled(ctx: BadInputContext, key: str) -> bool:
    """The notifier passed the event on and the function found no object (its not_found count
    grew; no other case deletes an object before it is processed)."""
    return ctx.client.function_outcomes().get("not_found", 0.0) > ctx.outcomes_before.get("not_found", 0.0)


def make_multipart(ctx: BadInputContext, key: str) -> None:
    """A real multipart upload; while it is open, the notifier gets the RGW-shaped
    `ObjectCreated:Post` record of its start (the object does not exist yet)."""
    s3, bucket = ctx.client.s3, ctx.settings.input_bucket
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    record = rgw_record(bucket, key, "", 0, ctx.settings.notify_token, event="ObjectCreated:Post")
    status, body = ctx.client.notify([record])
    if status != 200 or body.get("ignored") != 1:
        raise ChaosError(f"multipart start record: HTTP {status} {body}")
    part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=ctx.ref_clips[0].read_bytes())
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id,
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )  # fmt: skip


def make_multipart_aborted(ctx: BadInputContext, key: str) -> None:
    s3, bucket = ctx.client.s3, ctx.settings.input_bucket
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"partial")
    record = rgw_record(bucket, key, "", 0, ctx.settings.notify_token, event="ObjectCreated:Post")
    status, body = ctx.client.notify([record])
    if status != 200 or body.get("ignored") != 1:
        raise ChaosError(f"multipart start record: HTTP {status} {body}")
    s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)


def no_object(ctx: BadInputContext, key: str) -> bool:
    """The input bucket answers 404 for the key: the only record about it was ignored (checked
    when it was sent) and there is no object for the reconciler to find."""
    try:
        ctx.client.s3.head_object(Bucket=ctx.settings.input_bucket, Key=key)
    except ClientError as exc:
        return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404
    return False


# -- extra checks of object cases


def answer_again(ctx: BadInputContext, key: str, attempts: int = 3) -> tuple[int, dict]:
    """Delete the key's answers and call the function directly, so that it works on the object
    again and says in its JSON answer what it did (`frames`, `timings`, `outcome`). Should the
    reconciler answer the key first (the function then says `skipped`), try again."""
    for _ in range(attempts):
        ctx.client.delete_answers(key)
        status, body = ctx.client.call_function(key)
        if body.get("outcome") != "skipped":
            break
    return status, body


def _download_count(client: StackClient) -> float:
    return metrics_client.total(client.function_metrics(), "facerec_stage_seconds_count", stage="download")


def check_not_downloaded(ctx: BadInputContext, key: str) -> str | None:
    """Called again, the function refuses the object without downloading it: no download
    in its timings nor in its workers' download stage count, which grows for other objects."""
    downloads = _download_count(ctx.client)
    status, body = answer_again(ctx, key)
    if status != 422 or (body.get("error") or {}).get("error") != "too_large":
        return f"called again: HTTP {status} {body}, expected 422 with the error too_large"
    if "download" in body.get("timings", {}) or _download_count(ctx.client) != downloads:
        return f"the function downloaded the object: {body.get('timings')}"
    return None


def check_frames_bounded(ctx: BadInputContext, key: str) -> str | None:
    """Called again, the function looked at no more than MAX_FRAMES frames (its JSON answer)."""
    status, body = answer_again(ctx, key)
    if status != 200 or body.get("outcome") != "ok" or "frames" not in body:
        return f"called again: HTTP {status} {body}, expected 200 with the frames looked at"
    if body["frames"] > ctx.max_frames:
        return f"{body['frames']} frames sampled, the limit is {ctx.max_frames}"
    return None


def check_answer_key_verbatim(ctx: BadInputContext, key: str) -> str | None:
    """The answer sits at the key with only its extension replaced, byte for byte."""
    literal = key.rsplit(".", 1)[0] + ".csv"
    try:
        ctx.client.s3.head_object(Bucket=ctx.settings.output_bucket, Key=literal)
    except ClientError:
        return f"no answer at {literal!r}"
    return None


def check_deleted(ctx: BadInputContext, key: str) -> str | None:
    status, body = ctx.client.call_function(key)
    if status != 404:
        return f"function answered {status} for the deleted object, expected 404: {body}"
    return None


# -- request cases


def _events(ctx: BadInputContext) -> dict[str, float]:
    """The notifier's records by outcome (accepted, rejected, ignored, duplicate)."""
    return ctx.client.notifier_metrics().by_label("facerec_notifier_events_total", "outcome")


def _notifier_refuses(ctx: BadInputContext, body: bytes, status: int) -> str | None:
    """The notifier answers `status`, counts the record as rejected and queues nothing: all
    decided before it answers, so its counters tell at once."""
    before = _events(ctx)
    got, answer = ctx.client.notify(body, headers={"Content-Type": "application/json"})
    after = _events(ctx)
    problems = []
    if got != status:
        problems.append(f"HTTP {got}, expected {status}: {answer}")
    if after.get("accepted") != before.get("accepted"):
        problems.append("the notifier queued something")
    if after.get("rejected", 0.0) != before.get("rejected", 0.0) + 1:
        problems.append("not counted as rejected")
    return "; ".join(problems) or None


def _work_counts(ctx: BadInputContext) -> dict[str, float]:
    """What grows when a record reaches the function: the notifier's invocations and the
    function's objects by outcome."""
    counts = {f"function {o}": n for o, n in ctx.client.function_outcomes().items()}
    counts["notifier invocations"] = ctx.client.notifier_metrics().value("facerec_notifier_invocations_total")
    return counts


def _only_a_later_record_invoked(ctx: BadInputContext, before: dict[str, float]) -> str | None:
    """After records that must not reach the function: a later record (the first reference
    clip, already answered) goes through, the notifier counts it answered as skipped and is
    idle; then the only work since `before` must be that one skipped invocation."""
    skipped = ctx.client.notifier_metrics().value("facerec_notifier_skipped_total")
    if ctx.client.replay(ctx.ref_key(0)) != 200:
        return "the notifier refused the later record"
    if not wait_for(lambda: ctx.client.notifier_metrics().value("facerec_notifier_skipped_total") > skipped, 60):
        return "the later record was not answered as skipped within 60 s"
    if not ctx.client.wait_idle(60):
        return "the notifier was still busy 60 s after the later record"
    after = _work_counts(ctx)
    moved = {name: after[name] - before.get(name, 0.0) for name in after if after[name] != before.get(name, 0.0)}
    if moved != {"notifier invocations": 1, "function skipped": 1}:
        return f"more work than the later record's: {moved}"
    return None


def request_malformed_json(ctx: BadInputContext) -> str | None:
    for body in (b"{not json", b'{"Records": "nope"}', b'{"Records": [{"s3": {}}]}', b"[" * 50_000):
        problem = _notifier_refuses(ctx, body, 400)
        if problem:
            return f"{body[:20]!r}: {problem}"
    return None


def _probe_record(ctx: BadInputContext, token: str | None) -> bytes:
    """A record with this token for a fresh key: were it let through, the notifier would
    invoke the function for it."""
    record = rgw_record(ctx.settings.input_bucket, f"chaos-probe-{secrets.token_hex(4)}.mp4", "0" * 32, 10, token)
    return json.dumps({"Records": [record]}).encode()


def request_no_token(ctx: BadInputContext) -> str | None:
    before = _work_counts(ctx)
    problem = _notifier_refuses(ctx, _probe_record(ctx, None), 401)
    return problem or _only_a_later_record_invoked(ctx, before)


def request_wrong_token(ctx: BadInputContext) -> str | None:
    before = _work_counts(ctx)
    for token in ("wrong", (ctx.settings.notify_token or "") + "x", ""):
        expected = 401 if token == "" else 403
        problem = _notifier_refuses(ctx, _probe_record(ctx, token), expected)
        if problem:
            return f"token {token[:8]!r}: {problem}"
    return _only_a_later_record_invoked(ctx, before)


def request_oversized(ctx: BadInputContext) -> str | None:
    record = rgw_record(ctx.settings.input_bucket, "big-body.mp4", "0" * 32, 10, ctx.settings.notify_token)
    body = json.dumps({"Records": [record], "padding": "x" * (2 * 1024 * 1024)}).encode()
    status, answer = ctx.client.notify(body, headers={"Content-Type": "application/json"})
    if status != 413:
        return f"HTTP {status}, expected 413: {answer}"
    return None


def request_other_bucket(ctx: BadInputContext) -> str | None:
    other = "chaos-other-bucket"
    ensure_bucket(ctx.client.s3, other)
    key = "other-bucket.mp4"
    ctx.client.s3.put_object(Bucket=other, Key=key, Body=ctx.ref_clips[0].read_bytes())
    before = _work_counts(ctx)
    record = rgw_record(other, key, "0" * 32, 10, ctx.settings.notify_token)
    status, body = ctx.client.notify([record])
    if status != 200 or body.get("ignored") != 1 or body.get("accepted"):
        return f"HTTP {status} {body}, expected 200 with ignored=1"
    return _only_a_later_record_invoked(ctx, before)


def request_removed_event(ctx: BadInputContext) -> str | None:
    key = BadInputContext.ref_key(0)  # exists and is answered
    record = rgw_record(ctx.settings.input_bucket, key, "0" * 32, 10, ctx.settings.notify_token,
                        event="ObjectRemoved:Delete")  # fmt: skip
    status, body = ctx.client.notify([record])
    if status != 200 or body.get("ignored") != 1:
        return f"HTTP {status} {body}, expected 200 with ignored=1"
    return None


def request_function_bad_requests(ctx: BadInputContext) -> str | None:
    url = ctx.client.function_url
    bucket = ctx.settings.input_bucket
    cases: list[tuple[str, dict, int]] = [
        ("empty object", {"json": {}}, 400),
        ("no key", {"json": {"bucket": bucket}}, 400),
        ("no bucket", {"json": {"key": "x.mp4"}}, 400),
        ("key not a string", {"json": {"bucket": bucket, "key": 5}}, 400),
        ("not JSON", {"data": b"bucket=input&key=x", "headers": {"Content-Type": "text/plain"}}, 400),
        ("another bucket", {"json": {"bucket": "someone-elses", "key": "x.mp4"}}, 400),
        ("key with a control character", {"json": {"bucket": bucket, "key": "a\nb.mp4"}}, 400),
    ]
    for label, kwargs, expected in cases:
        status, body = http_json("POST", url, **kwargs)
        if status != expected or not body.get("error"):
            return f"{label}: HTTP {status} {body}, expected {expected} with an error message"
    status, body = http_json("GET", url)
    if status != 405:
        return f"GET: HTTP {status}, expected 405"
    return None


def request_hung_worker(ctx: BadInputContext) -> str | None:
    """Every worker stops (SIGSTOP) as if stuck in a decoder, then a clip is uploaded: the
    gateway's timeout must end each hung request, the runner kill and restart the worker,
    and the notifier retry until the clip has its answer."""
    stack = ctx.client.stack
    stopped = stack.worker_pids()
    retries = ctx.client.notifier_metrics().value("facerec_notifier_retries_total")
    key = "chaos-hung-worker.mp4"
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        ctx.client.put(key, ctx.ref_clips[0].read_bytes())
        answered = wait_for(lambda: result_key(key) in ctx.client.list(ctx.settings.output_bucket), 180, POLL_S)
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    if not answered:
        return "no answer within 180 s"
    people = [s.name for s in parse_csv(ctx.client.read_output(result_key(key)))]
    if people != ctx.ref_people:
        return f"found {people}, expected {ctx.ref_people}"
    if ctx.client.notifier_metrics().value("facerec_notifier_retries_total") <= retries:
        return "the notifier did not retry: no invocation ended at the gateway's timeout"
    if any(pid in stack.worker_pids() for pid in stopped):
        return "a hung worker is still running"
    return None


def bad_input_cases() -> list[BadInput]:
    """Every bad-input case, in the order they run."""
    up = None  # people of the first reference clip
    return [
        BadInput("empty-object", "0-byte object", "chaos-empty.mp4", make_empty, ("error", "empty")),
        BadInput("text-named-mp4", "a text file named .mp4", "chaos-notes.mp4", make_text, ("error", "unreadable")),
        BadInput("random-bytes", "256 KiB of random bytes named .mp4", "chaos-random.mp4", make_random,
                 ("error", "unreadable")),
        BadInput("truncated-mp4", "the first half of a real clip (index at the end)", "chaos-truncated.mp4",
                 make_truncated, ("error", "unreadable")),
        BadInput("truncated-faststart-mp4", "the first half of a real clip (index at the start)",
                 "chaos-truncated-faststart.mp4", make_truncated_faststart, ("error", None)),
        BadInput("audio-only", "an AAC file named .mp4", "chaos-song.mp4", make_audio_only,
                 ("error", "no_video_stream")),
        BadInput("over-size-limit", "MAX_OBJECT_BYTES + 1 bytes: refused without downloading", "chaos-huge.mp4",
                 make_too_large, ("error", "too_large"), extra=check_not_downloaded),
        BadInput("very-long-video", "20 minutes: at most MAX_FRAMES frames looked at", "chaos-long.mp4", make_long,
                 ("csv", up), extra=check_frames_bounded),
        BadInput("very-high-resolution", "7680x4320", "chaos-8k.mp4", make_high_resolution, ("csv", up)),
        BadInput("no-face", "a test pattern", "chaos-no-face.mp4", make_no_face, ("csv", [])),
        BadInput("unknown-face-only", "one face that is not a known person", "chaos-unknown.mp4", make_unknown_face,
                 ("csv", [])),
        BadInput("many-faces", "a 3x2 grid of faces: every reference person, the rest unknown", "chaos-many.mp4",
                 make_many_faces, ("csv", "many")),
        BadInput("photo-named-mp4", "a PNG still named .mp4", "chaos-photo.mp4", make_photo_named_mp4, ("csv", up)),
        BadInput("key-with-spaces", "key with spaces and a folder", "lecture 1/clip with spaces.mp4",
                 make_reference_copy, ("csv", up), extra=check_answer_key_verbatim),
        BadInput("key-unicode", "key in several scripts", "ünïcode ✓ 日本語 clip.mp4", make_reference_copy,
                 ("csv", up), extra=check_answer_key_verbatim),
        BadInput("key-url-encoding", "key with %-escapes and +", "100%25 real+plus%2Fslash.mp4", make_reference_copy,
                 ("csv", up), extra=check_answer_key_verbatim),
        BadInput("key-dot-dot", "key with ../ parts", "../escape/../../chaos-dotdot.mp4", make_reference_copy,
                 ("csv", up), extra=check_answer_key_verbatim),
        BadInput("key-double-slash", "key with an empty folder name (a//b)", "chaos//double slash.mp4",
                 make_reference_copy, ("csv", up), extra=check_answer_key_verbatim),
        BadInput("deleted-before-processing", "uploaded and deleted at once: no answer, the function says 404",
                 "chaos-deleted.mp4", make_deleted, (NO_ANSWER, None), handled=deleted_handled, extra=check_deleted),
        BadInput("multipart-upload", "multipart start record ignored, the completed upload answered once",
                 "chaos-multipart.mp4", make_multipart, ("csv", up)),
        BadInput("multipart-aborted", "a multipart upload started and aborted: no answer", "chaos-aborted.mp4",
                 make_multipart_aborted, (NO_ANSWER, None), handled=no_object),
        BadInput("malformed-notification", "bodies that are not RGW notifications: 400, nothing queued",
                 request=request_malformed_json),
        BadInput("notification-without-token", "record without opaqueData: 401, nothing processed",
                 request=request_no_token),
        BadInput("notification-wrong-token", "wrong or empty opaqueData: 403/401, nothing processed",
                 request=request_wrong_token),
        BadInput("oversized-notification", "2 MiB notification body: 413", request=request_oversized),
        BadInput("other-bucket-notification", "record for another bucket: ignored, nothing processed",
                 request=request_other_bucket),
        BadInput("non-create-event", "ObjectRemoved record: ignored", request=request_removed_event),
        BadInput("function-bad-requests", "missing fields, not JSON, another bucket, control characters: 400",
                 request=request_function_bad_requests),
        BadInput("slow-decode", "recognition longer than FFMPEG_TIMEOUT_S: a timeout error record",
                 request=request_slow_decode, last=True),
        BadInput("hung-worker", "every worker stuck (SIGSTOP): killed at the timeout, restarted, answered",
                 request=request_hung_worker, last=True),
    ]  # fmt: skip


def prepare_bad_inputs(ctx: BadInputContext) -> None:
    """Upload the reference clips, learn their people, extract their first frames."""
    client = ctx.client
    for index, clip in enumerate(ctx.ref_clips):
        client.put(ctx.ref_key(index), clip.read_bytes())

    def all_learned() -> bool:
        outputs = client.list(ctx.settings.output_bucket)
        for index in range(len(ctx.ref_clips)):
            name = result_key(ctx.ref_key(index))
            if name in outputs and ctx.ref_key(index) not in ctx.refs:
                ctx.refs[ctx.ref_key(index)] = [s.name for s in parse_csv(client.read_output(name))]
        return len(ctx.refs) == len(ctx.ref_clips)

    wait_for(all_learned, 180, POLL_S)
    missing = [ctx.ref_key(i) for i in range(len(ctx.ref_clips)) if ctx.ref_key(i) not in ctx.refs]
    if missing or not all(ctx.refs.values()):
        raise ChaosError(f"reference clips without a known person: {missing or ctx.refs}")
    ctx.media_dir.mkdir(parents=True, exist_ok=True)
    for index, clip in enumerate(ctx.ref_clips):
        ctx.stills.append(_media(ctx, f"still-{index}.png", "-i", str(clip), "-frames:v", "1"))


def _expected_people(ctx: BadInputContext, expected: object) -> list[str]:
    if expected is None:
        return ctx.ref_people
    if expected == "many":
        return many_faces_people(ctx)
    return list(expected)  # type: ignore[arg-type]


def _judge_object_case(ctx: BadInputContext, case: BadInput, outputs: dict[str, dict]) -> str | None:
    assert case.key is not None and case.expect is not None
    kind, expected = case.expect
    has_csv = result_key(case.key) in outputs
    has_error = error_key(case.key) in outputs
    if has_csv and has_error:
        return "both a CSV and an error record"
    if kind == NO_ANSWER:
        assert case.handled is not None
        if not case.handled(ctx, case.key):
            problem = "no sign that the service dealt with it"
        else:
            problem = "an answer was written" if has_csv or has_error else None
    elif kind == "error":
        if not has_error:
            problem = "no error record" + (" (a CSV instead)" if has_csv else "")
        else:
            record = parse_error(ctx.client.read_output(error_key(case.key)))
            right_kind = expected is None or record.get("error") == expected
            problem = None if right_kind else f"error {record.get('error')!r}: {record}"
            if problem is None and not record.get("detail"):
                problem = "the error record has no detail"
    else:
        if not has_csv:
            problem = "no CSV" + (f" (error record: {client_text(ctx.client, error_key(case.key))[:150]})"
                                  if has_error else "")  # fmt: skip
        else:
            people = [s.name for s in parse_csv(ctx.client.read_output(result_key(case.key)))]
            want = _expected_people(ctx, expected)
            ok = sorted(people) == sorted(want) if expected == "many" else people == want
            problem = None if ok else f"found {people}, expected {want}"
    if problem is None and case.extra is not None:
        problem = case.extra(ctx, case.key)
    return problem


def run_bad_inputs(ctx: BadInputContext, cases: list[BadInput], timeout_s: float = 300.0) -> list[CaseResult]:
    """Run every case against the stack; a case that raises counts as failed.

    The object cases are uploaded together; they are judged once each has an answer or, for
    a NO_ANSWER case, its `handled` sign, and the notifier is idle."""
    client = ctx.client
    results: dict[str, CaseResult] = {}
    ctx.outcomes_before = client.function_outcomes()
    object_cases = [case for case in cases if case.key is not None]
    for case in object_cases:
        try:
            assert case.make is not None
            case.make(ctx, case.key)
        except Exception as exc:  # noqa: BLE001 - a case that cannot even be set up is a failed case
            results[case.name] = CaseResult(case.name, case.what, False, f"setup failed: {type(exc).__name__}: {exc}")
    pending = [c for c in object_cases if c.name not in results]

    def all_settled() -> bool:
        outputs = client.list(ctx.settings.output_bucket)
        for case in list(pending):
            assert case.key is not None and case.expect is not None and (case.handled or case.expect[0] != NO_ANSWER)
            if case.handled is not None:
                settled = case.handled(ctx, case.key)
            else:
                settled = result_key(case.key) in outputs or error_key(case.key) in outputs
            if settled:
                pending.remove(case)
        return not pending

    wait_for(all_settled, timeout_s, POLL_S)
    client.wait_idle(120)
    outputs = client.list(ctx.settings.output_bucket)
    for case in object_cases:
        if case.name in results:
            continue
        try:
            problem = _judge_object_case(ctx, case, outputs)
        except Exception as exc:  # noqa: BLE001
            problem = f"{type(exc).__name__}: {exc}"
        results[case.name] = CaseResult(case.name, case.what, problem is None, problem or "")
    for case in sorted((c for c in cases if c.request is not None), key=lambda c: c.last):
        try:
            assert case.request is not None
            problem = case.request(ctx)
        except Exception as exc:  # noqa: BLE001
            problem = f"{type(exc).__name__}: {exc}"
        results[case.name] = CaseResult(case.name, case.what, problem is None, problem or "")
    results["still-serving"] = check_still_serving(ctx)
    return [results[c.name] for c in cases] + [results["still-serving"]]


def check_still_serving(ctx: BadInputContext) -> CaseResult:
    """After the bad input, a normal upload still gets the right answer."""
    what = "after all of it, a normal clip is answered correctly"
    key = f"chaos-after-{secrets.token_hex(3)}.mp4"
    try:
        if not ctx.client.wait_gateway_ready(180):
            return CaseResult("still-serving", what, False, "the function's gateway is not ready")
        ctx.client.put(key, ctx.ref_clips[0].read_bytes())
        if not wait_for(lambda: result_key(key) in ctx.client.list(ctx.settings.output_bucket), 120, POLL_S):
            return CaseResult("still-serving", what, False, "no answer within 120 s")
        people = [s.name for s in parse_csv(ctx.client.read_output(result_key(key)))]
        ok = people == ctx.ref_people
        return CaseResult("still-serving", what, ok, "" if ok else f"found {people}")
    except Exception as exc:  # noqa: BLE001
        return CaseResult("still-serving", what, False, f"{type(exc).__name__}: {exc}")


def check_no_leftovers(stack: ChaosStack, videos: int) -> CaseResult:
    """No temporary file of the function in the stack's TMPDIR, and no process in the
    function's process group other than the runner and its workers."""
    what = f"after {videos} videos: no temp file and no stray process left"
    # .lock: a ready worker's readiness file (index.py), there while the worker runs.
    leftovers = sorted(
        str(p.relative_to(stack.tmp_dir)) for p in stack.tmp_dir.rglob("*") if not p.is_dir() and p.name != ".lock"
    )
    group = stack.pids("function")
    expected = 1 + (stack.config.workers if group else 0)
    problems = []
    if leftovers:
        problems.append(f"temp files: {leftovers[:5]}")
    if len(group) > expected:
        problems.append(f"{len(group) - expected} extra process(es) in the function's group")
    return CaseResult("no-leftovers", what, not problems, "; ".join(problems))


# ----------------------------------------------------------------------------- memory

#: The bound every function worker must keep, whatever it is sent (the container limit in
#: stack.yml is 1 GiB).
WORKER_RSS_LIMIT_MB = 700
MEMORY_PREFIX = "memory/"


def vmhwm_mb(status: str) -> float | None:
    """The peak resident memory (VmHWM) in MiB from the text of /proc/<pid>/status."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def read_status(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None


class RssSampler:
    """Follows the function workers' peak resident memory (VmHWM, which the kernel keeps for
    the life of a process) while a run goes on: `pids` lists the workers now, `status` reads
    a process's /proc status. The peak of a worker that dies is its last sample."""

    def __init__(self, pids: Callable[[], list[int]], status: Callable[[int], str | None] = read_status,
                 interval_s: float = 0.2) -> None:  # fmt: skip
        self.pids = pids
        self.status = status
        self.interval_s = interval_s
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        for pid in self.pids():
            text = self.status(pid)
            peak = vmhwm_mb(text) if text else None
            if peak is not None:
                self.peaks[pid] = max(peak, self.peaks.get(pid, 0.0))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample()

    @property
    def max_mb(self) -> float | None:
        return round(max(self.peaks.values()), 1) if self.peaks else None


@dataclass
class MemoryResult:
    """The memory scenario: hostile files uploaded, how each was answered, the workers' peaks."""

    files: int = 0
    answered: int = 0
    failed: list[str] = field(default_factory=list)
    worker_restarts: int = 0
    max_worker_rss_mb: float | None = None
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # name, answer, problem

    @property
    def passed(self) -> bool:
        return (
            not self.failed
            and self.answered == self.files
            and self.worker_restarts == 0
            and self.max_worker_rss_mb is not None
            and self.max_worker_rss_mb <= WORKER_RSS_LIMIT_MB
        )

    def to_json(self) -> dict:
        return {
            "files": self.files,
            "answered": self.answered,
            "failed": len(self.failed),
            "worker_restarts": self.worker_restarts,
            "max_worker_rss_mb": self.max_worker_rss_mb,
            "limit_mb": WORKER_RSS_LIMIT_MB,
        }


def read_answer(client: StackClient, key: str, outputs: dict[str, dict]) -> tuple[str, str | list[str]] | None:
    """("csv", people) or (error kind, detail) for an input key; None without an answer."""
    if result_key(key) in outputs:
        return "csv", [student.name for student in parse_csv(client.read_output(result_key(key)))]
    if error_key(key) in outputs:
        record = parse_error(client.read_output(error_key(key)))
        return str(record.get("error")), str(record.get("detail", ""))
    return None


def run_memory(client: StackClient, media_dir: Path, reference: Path, timeout_s: float = 600.0) -> MemoryResult:
    """The `memory` scenario: restart the function (fresh workers: their peak is this run's),
    upload the reference clip to learn who is in it, make the hostile files from its first
    frame (facepipe_tools.hostile_media), upload them all at once, wait for every answer and
    judge it; the workers' peak resident memory is followed throughout, and none may die."""
    stack, settings = client.stack, client.settings
    result = MemoryResult()
    client.wait_idle(120)
    client.clear()
    stack.restart("function")
    if not client.wait_gateway_ready(180):
        raise ChaosError("the function's workers did not get ready")
    ref_key = MEMORY_PREFIX + "reference.mp4"
    client.put(ref_key, reference.read_bytes())
    if not wait_for(lambda: result_key(ref_key) in client.list(settings.output_bucket), 180, POLL_S):
        raise ChaosError("the reference clip got no result")
    people = [student.name for student in parse_csv(client.read_output(result_key(ref_key)))]
    if not people:
        raise ChaosError("nobody known in the reference clip")
    media_dir.mkdir(parents=True, exist_ok=True)
    still = media_dir / "reference.png"
    if not still.exists():
        ffmpeg("-i", str(reference), "-frames:v", "1", str(still))
    made = hostile_media.build(media_dir / "hostile", still)
    keys = {MEMORY_PREFIX + case.name: (case, path) for case, path in made}
    result.files = len(keys)
    workers_before = set(stack.worker_pids())
    with RssSampler(stack.worker_pids) as sampler:
        with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
            list(pool.map(lambda item: client.put(item[0], item[1][1].read_bytes()), keys.items()))

        def all_answered() -> bool:
            outputs = client.list(settings.output_bucket)
            return all(result_key(key) in outputs or error_key(key) in outputs for key in keys)

        wait_for(all_answered, timeout_s, POLL_S)
        client.wait_idle(120)
    result.max_worker_rss_mb = sampler.max_mb
    now = set(stack.worker_pids())
    result.worker_restarts = max(len((set(sampler.peaks) | now) - workers_before), len(workers_before - now))
    outputs = client.list(settings.output_bucket)
    for key, (case, _) in keys.items():
        answer = read_answer(client, key, outputs)
        if answer is None:
            result.failed.append(f"{case.name}: no answer")
            result.rows.append((case.name, "-", "no answer"))
            continue
        result.answered += 1
        kind, found = answer
        problem = hostile_media.judge(case, kind, found, people)
        shown = f"csv {found}" if kind == "csv" else f"{kind}: {found}"
        result.rows.append((case.name, shown[:90], problem or ""))
        if problem:
            result.failed.append(f"{case.name}: {problem}")
    return result


def memory_table(result: MemoryResult) -> str:
    """One line per hostile file, left-aligned (the cells are sentences, not numbers)."""
    lines = [("file", "result", "answer")]
    lines += [(name, "FAILED: " + problem if problem else "ok", answer) for name, answer, problem in result.rows]
    widths = [max(len(line[i]) for line in lines) for i in range(2)]
    out = [f"{a.ljust(widths[0])}  {b.ljust(widths[1])}  {c}".rstrip() for a, b, c in lines]
    out.insert(1, f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * 6}")
    return "\n".join(out)


# ----------------------------------------------------------------------------- report


def scenario_table(rows: list[ScenarioResult]) -> str:
    header = ("scenario", "videos", "results", "lost", "dup", "wrong", "reproc", "fault at", "down", "last",
              "max wait", "recover_s")  # fmt: skip
    lines = [header]
    for row in rows:
        reprocessed = "-" if row.reprocessed is None else str(row.reprocessed)
        lines.append((
            row.name, str(row.videos), str(row.results), str(row.lost), str(row.duplicated), str(row.wrong),
            reprocessed, _secs(row.fault_at_s), _secs(row.down_s), _secs(row.last_answer_s),
            _secs(row.max_wait_s), _secs(row.recover_s),
        ))  # fmt: skip
    return _columns(lines)


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _columns(lines: list[tuple[str, ...]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for number, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(line)))
        if number == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def bad_input_table(rows: list[CaseResult]) -> str:
    lines = [("case", "result", "what / why it failed")]
    for row in rows:
        lines.append((row.name, "ok" if row.passed else "FAILED", row.detail or row.what))
    return _columns(lines)


def summary_json(scenarios: list[ScenarioResult], bad: list[CaseResult], memory: MemoryResult | None = None) -> str:
    summary: dict[str, object] = {
        "scenarios": [row.to_json() for row in scenarios if row.name in SCENARIOS],
        "bad_inputs_tried": len(bad),
        "bad_inputs_failed": sum(not row.passed for row in bad),
    }
    if memory is not None:
        summary["memory"] = memory.to_json()
    return json.dumps(summary)


# ----------------------------------------------------------------------------- main


@dataclass
class ChaosOptions:
    cse546: Path
    workers: int = 2
    rate: float = 8.0
    videos: int | None = None
    scenarios: tuple[str, ...] = ALL_SCENARIOS
    persistent: bool = True
    bad_inputs: bool = True
    state_dir: Path | None = None
    keep: bool = False


def _unknown_photo() -> Path:
    from facepipe_tools.sample import photo

    return photo("grace_hopper")


def run_chaos(options: ChaosOptions) -> int:
    cse546 = options.cse546
    for needed in ("encoding", "student_data.json", "mapping", "test_cases/test_case_1", "test_cases/test_case_2"):
        if not (cse546 / needed).exists():
            raise ChaosError(f"CSE546 data not found: {cse546 / needed} (set CSE546_DIR)")
    if shutil.which("ffmpeg") is None:
        raise ChaosError("ffmpeg is not installed (make install)")
    state_dir = options.state_dir or Path(tempfile.mkdtemp(prefix="facepipe-chaos-"))
    stack = new_chaos_stack(
        state_dir, cse546 / "encoding", cse546 / "student_data.json", workers=options.workers,
        log=lambda line: _say(f"stack: {line}"),
    )  # fmt: skip
    scenarios: list[ScenarioResult] = []
    bad: list[CaseResult] = []
    memory: MemoryResult | None = None
    started = time.monotonic()
    faults = [name for name in options.scenarios if name in SCENARIOS]
    try:
        _say(f"chaos: starting the stack in {state_dir}")
        stack.up()
        client = StackClient(stack)
        videos = 0
        if faults:
            clips = cse546_clips(cse546, options.videos)
            runner = ScenarioRunner(client, clips, options.rate)
            _say(f"chaos: baseline, {len(clips)} clips at {options.rate:g}/s")
            baseline = runner.run(None)
            scenarios.append(baseline)
            for name in [*faults, *(["persistent"] if options.persistent else [])]:
                fault = make_fault(name, client)
                _say(f"chaos: {fault.name}: {fault.description}")
                row = runner.run(fault, baseline)
                scenarios.append(row)
                _say(f"chaos: {row.name}: {row.results}/{row.videos} answered, {row.lost} lost, "
                     f"{row.duplicated} duplicated, {row.wrong} wrong, recover {_secs(row.recover_s)} s")  # fmt: skip
                for problem in row.problems[:10]:
                    _say(f"  {problem}")
            videos += sum(row.videos for row in scenarios)
        if MEMORY in options.scenarios:
            _say("chaos: memory: hostile media, the function workers' peak memory")
            reference = cse546 / "test_cases" / "test_case_1" / "test_0.mp4"
            memory = run_memory(client, state_dir / "media", reference)
            _say(f"chaos: memory: {memory.answered}/{memory.files} answered, {len(memory.failed)} failed, "
                 f"peak worker RSS {memory.max_worker_rss_mb} MiB")  # fmt: skip
            videos += memory.files + 1
        if options.bad_inputs:
            _say("chaos: bad input")
            client.wait_idle(120)
            client.clear()
            ref_clips = [cse546 / "test_cases" / "test_case_1" / f"test_{n}.mp4" for n in (0, 1, 2, 4)]
            ctx = BadInputContext(
                client, state_dir / "media", ref_clips, _unknown_photo(),
                max_object_bytes=int(stack.extra_env["MAX_OBJECT_BYTES"]),
                max_frames=int(stack.extra_env["MAX_FRAMES"]),
            )  # fmt: skip
            prepare_bad_inputs(ctx)
            cases = bad_input_cases()
            bad = run_bad_inputs(ctx, cases)
            videos += len(ctx.ref_clips) + sum(1 for c in cases if c.key)
        client.wait_idle(120)
        bad.append(check_no_leftovers(stack, videos))
    finally:
        if options.keep:
            _say(f"chaos: the stack stays up (state {state_dir}); stop it with "
                 f"`python -m facepipe_tools.stack down --state-dir {state_dir}`")  # fmt: skip
        else:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the stack stop completely
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            with contextlib.suppress(Exception):
                stack.down()
            if options.state_dir is None:
                shutil.rmtree(state_dir, ignore_errors=True)
        print_report(scenarios, bad, time.monotonic() - started, memory)
    ok = all(row.passed for row in scenarios) and all(row.passed for row in bad) and (memory is None or memory.passed)
    return 0 if ok else 1


def print_report(
    scenarios: list[ScenarioResult], bad: list[CaseResult], elapsed_s: float, memory: MemoryResult | None = None
) -> None:
    print()
    if scenarios:
        print("Faults: times in seconds from the first upload; last = when the last clip got its answer;")
        print("max wait = longest upload-to-answer time of a clip; recover_s = last - the baseline's last")
        print(scenario_table(scenarios))
    for row in scenarios:
        if row.note:
            print(f"  {row.name}: {row.note}")
        for problem in row.problems[:20]:
            print(f"  {row.name}: {problem}")
    if memory is not None:
        print()
        print(f"Memory ({memory.answered}/{memory.files} answered, {len(memory.failed)} not as expected, "
              f"{memory.worker_restarts} worker restarts; peak worker RSS {memory.max_worker_rss_mb} MiB, "
              f"limit {WORKER_RSS_LIMIT_MB} MiB)")  # fmt: skip
        print(memory_table(memory))
    if bad:
        print()
        print(f"Bad input ({sum(r.passed for r in bad)}/{len(bad)} handled)")
        print(bad_input_table(bad))
    print()
    print(f"chaos: {elapsed_s:.0f} s in all")
    print(summary_json(scenarios, bad, memory), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaos.py", description=__doc__.splitlines()[0])
    parser.add_argument("--cse546", type=Path, default=cse546_dir(), help="CSE546 data folder")
    parser.add_argument("--workers", type=int, default=2, help="function workers (default 2)")
    parser.add_argument(
        "--rate",
        type=float,
        default=8.0,
        help="uploads per second (default 8: faster than 2 workers recognise, so a backlog builds)",
    )
    parser.add_argument("--videos", type=int, help="use only the first N clips of test_case_2")
    parser.add_argument("--scenario", action="append", choices=ALL_SCENARIOS, help="run only these (repeatable)")
    parser.add_argument("--no-persistent", action="store_true", help="skip the persistent-notification run")
    parser.add_argument("--no-bad-inputs", action="store_true", help="skip the bad-input suite")
    parser.add_argument("--state-dir", type=Path, help="stack state folder (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="leave the stack running at the end")
    args = parser.parse_args(argv)
    options = ChaosOptions(
        cse546=args.cse546.resolve(),
        workers=args.workers,
        rate=args.rate,
        videos=args.videos,
        scenarios=tuple(args.scenario or ALL_SCENARIOS),
        persistent=not args.no_persistent,
        bad_inputs=not args.no_bad_inputs,
        state_dir=args.state_dir.resolve() if args.state_dir else None,
        keep=args.keep,
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops the run as Ctrl-C does
    try:
        return run_chaos(options)
    except ChaosError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the stack or a step failed: say so, the JSON line was printed
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
