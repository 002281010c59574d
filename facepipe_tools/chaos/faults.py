"""What each fault scenario does to the stack, and the sentence it adds to the report."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from botocore.exceptions import ClientError

from facepipe.clients import sns_client
from facepipe.notifier.setup import disable_notifications, setup_notifications
from facepipe_tools.chaos.clips import Clip
from facepipe_tools.chaos.stack import CHAOS_ENV, ChaosError, StackClient
from facepipe_tools.polling import wait_for

FAST_RECONCILE_S = 5.0
DOWN_S = 5.0


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
        replay_pool.submit(client.replay, clip.key, clip.kind)

    def after_answers(clips: list[Clip]) -> str | None:
        """Once the notifier is done with the clips, replay every clip's event once more and
        wait until it has handled each of them: invoked, and answered as skipped."""
        replay_pool.shutdown(wait=True)
        if not client.wait_idle(120):
            return "the notifier was still busy 120 s after the last answer"
        skipped = client.notifier_metrics().value("facerec_notifier_skipped_total")
        for clip in clips:
            client.replay(clip.key, clip.kind)
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
