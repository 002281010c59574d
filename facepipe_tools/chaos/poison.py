"""The `poison` scenario: one object whose every invocation kills its worker (the runner's
chaos hook, FACEPIPE_RUNNER_POISON_KEYS, as a segfault in a decoder would), uploaded among
normal videos. It must end dead-lettered - a `failed` error record, stamped with the object's
ETag, after DEAD_LETTER_ATTEMPTS attempts - and stay so when its event is replayed and when
the notifier's reconciler starts again; every other video must get its right answer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

from facepipe.answers import SOURCE_ETAG_METADATA, error_key, parse_error, result_key
from facepipe_tools.chaos.clips import Clip
from facepipe_tools.chaos.scenarios import client_text, judge_answer
from facepipe_tools.chaos.stack import POISON_MARK, POLL_S, ChaosStack, StackClient
from facepipe_tools.function_runner import POISON_KEYS_ENV
from facepipe_tools.polling import wait_for

POISON = "poison"
POISON_KEY = f"{POISON_MARK}.mp4"
#: What the runner logs each time the hook kills a worker (function_runner.kill_poisoned), and
#: each time it starts a worker again after one exited (Function.supervise).
KILL_EVENT = "poison key: killing the worker"
RESTART_EVENT = "worker exited; starting it again"


@dataclass
class PoisonResult:
    videos: int = 0
    answered: int = 0
    #: the poison object's answer: the error kind of its record (`failed` when dead-lettered)
    poison_answer: str = ""
    poison_detail: str = ""
    #: the record carries the object's ETag (source-etag), so it counts as the current answer
    stamped: bool = False
    dead_letter_attempts: int = 0
    #: the failed attempts its record counts (the notifier's count: crashes, timeouts, 5xx)
    attempts: int | None = None
    #: workers the hook killed for it (at most the attempts: an attempt may also end as a timeout)
    kills: int = 0
    #: workers the runner started again after one exited, for whatever reason
    worker_restarts: int = 0
    #: kills after the dead letter (its event replayed, the notifier restarted): must stay 0
    attempts_after: int | None = None
    seconds: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            not self.problems
            and self.answered == self.videos
            and self.poison_answer == "failed"
            and self.stamped
            and self.attempts == self.dead_letter_attempts
            and 1 <= self.kills <= self.dead_letter_attempts
            and self.attempts_after == 0
        )

    def to_json(self) -> dict:
        return {
            "videos": self.videos,
            "answered": self.answered,
            "dead_lettered": self.poison_answer == "failed" and self.stamped,
            "attempts": self.attempts,
            "kills": self.kills,
            "dead_letter_attempts": self.dead_letter_attempts,
            "attempts_after": self.attempts_after,
            "worker_restarts": self.worker_restarts,
            "seconds": self.seconds,
        }


def runner_events(stack: ChaosStack, event: str) -> int:
    """How many times the function runner has logged `event` (its log file holds every start)."""
    try:
        return stack.log_path("function").read_text(errors="replace").count(event)
    except OSError:
        return 0


def run_poison(client: StackClient, clips: list[Clip], poison: Clip, timeout_s: float = 300.0) -> PoisonResult:
    """Upload `clips` and, a third of the way in, `poison` (its key must contain POISON_MARK,
    which the stack's runner has in FACEPIPE_RUNNER_POISON_KEYS); wait for every answer and
    judge as the module says."""
    stack, settings = client.stack, client.settings
    if POISON_MARK not in poison.key or stack.extra_env.get(POISON_KEYS_ENV) != POISON_MARK:
        raise ValueError(f"the poison key must contain {POISON_MARK!r}, the stack's {POISON_KEYS_ENV}")
    result = PoisonResult(videos=len(clips), dead_letter_attempts=int(stack.settings().dead_letter_attempts))
    client.wait_idle(120)
    client.clear()
    client.wait_gateway_ready()
    killed_before = runner_events(stack, KILL_EVENT)
    restarts_before = runner_events(stack, RESTART_EVENT)
    uploads = list(clips)
    uploads.insert(len(clips) // 3, poison)
    started = time.monotonic()
    for clip in uploads:
        client.put(clip.key, clip.path.read_bytes())
    keys = {clip.key for clip in uploads}

    def answered() -> bool:
        try:
            outputs = client.list(settings.output_bucket)
        except (BotoCoreError, ClientError):
            return False
        return all(result_key(key) in outputs or error_key(key) in outputs for key in keys)

    if not wait_for(answered, timeout_s, POLL_S):
        result.problems.append(f"not every upload had an answer within {timeout_s:g} s")
    client.wait_idle(120)
    result.seconds = round(time.monotonic() - started, 1)
    result.kills = runner_events(stack, KILL_EVENT) - killed_before
    # Neither a replayed event (same ETag) nor the reconciler of a restarted notifier may
    # invoke the dead-lettered object again.
    client.wait_gateway_ready()
    if client.replay(poison.key) != 200:
        result.problems.append("the notifier refused the replayed event")
    client.wait_idle(120)
    stack.restart("notifier")
    client.wait_idle(120)
    result.attempts_after = runner_events(stack, KILL_EVENT) - killed_before - result.kills
    client.wait_gateway_ready()
    result.worker_restarts = runner_events(stack, RESTART_EVENT) - restarts_before
    _judge_answers(client, clips, poison, result)
    return result


def _judge_answers(client: StackClient, clips: list[Clip], poison: Clip, result: PoisonResult) -> None:
    settings = client.settings
    outputs = client.list(settings.output_bucket)
    for clip in clips:
        has_csv, has_error = result_key(clip.key) in outputs, error_key(clip.key) in outputs
        if has_csv and not has_error:
            problem = judge_answer(clip.expected, client.read_output(result_key(clip.key)))
            if problem is None:
                result.answered += 1
                continue
        elif has_error:
            problem = "error record " + client_text(client, error_key(clip.key))[:200]
        else:
            problem = "no answer"
        result.problems.append(f"{clip.key}: {problem}")
    if result_key(poison.key) in outputs:
        result.problems.append(f"{poison.key}: a CSV, although every attempt killed its worker")
    if error_key(poison.key) not in outputs:
        result.problems.append(f"{poison.key}: no error record (not dead-lettered)")
        return
    record = parse_error(client.read_output(error_key(poison.key)))
    result.poison_answer = str(record.get("error", ""))
    result.poison_detail = str(record.get("detail", ""))
    attempts = record.get("attempts")
    result.attempts = attempts if isinstance(attempts, int) else None
    head = client.s3.head_object(Bucket=settings.output_bucket, Key=error_key(poison.key))
    source = client.s3.head_object(Bucket=settings.input_bucket, Key=poison.key)
    result.stamped = head.get("Metadata", {}).get(SOURCE_ETAG_METADATA) == source["ETag"].strip('"')
    if result.poison_answer != "failed":
        result.problems.append(f"{poison.key}: error {result.poison_answer!r}, expected 'failed'")
    if not result.stamped:
        result.problems.append(f"{poison.key}: the error record does not carry the object's ETag (source-etag)")
    if result.attempts != result.dead_letter_attempts:
        result.problems.append(
            f"its record counts {result.attempts} attempts, DEAD_LETTER_ATTEMPTS is {result.dead_letter_attempts}"
        )
    if not 1 <= result.kills <= result.dead_letter_attempts:
        result.problems.append(f"{result.kills} workers killed for it, expected 1 to {result.dead_letter_attempts}")
    if result.attempts_after:
        result.problems.append(f"invoked {result.attempts_after} more times after it was dead-lettered")
