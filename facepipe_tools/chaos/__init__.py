"""`make chaos`: faults, bad input, memory, a poison object and the clean-up checks, on a real local stack.

The run starts its own stack (a temporary state folder, free loopback ports, the CSE546
known faces and students from ../shared/cse546 or $CSE546_DIR, both functions, the web
tier), then:

1. **baseline**: the 100 clips of CSE546 test_case_2 and, spread among them, 14 built-in
   photos for the image bucket (`--photos`), uploaded at a steady pace (`--rate`, 8 per
   second: faster than two workers recognise them, so a backlog builds and any time a
   fault costs shows at the end), with no fault: the reference time.
2. **faults**, each on the same paced workload, injected once a third of it is uploaded
   (`faults`): ``notifier-kill``, ``function-kill``, ``rgw-restart``,
   ``notifications-off``, ``duplicate-events``. A run ends when every upload has an answer
   in its function's output bucket, the fault's late events are handled and the notifier is
   idle, then counts, over both buckets: ``results``, ``lost`` (none), ``duplicated`` (both a
   CSV and an error record), ``wrong`` (not the mapping's answer), ``reprocessed``, ``max
   wait`` and ``recover_s`` (`scenarios`).
3. **persistent notifications** (exploration, not in the JSON): notifier-kill with the
   topic switched to persistent delivery.
4. **memory**: the hostile files of facepipe_tools/hostile_media.py through the running
   stack, every worker's peak resident memory followed (`memory`).
5. **poison**: one object whose every invocation kills its worker (the runner's chaos hook)
   among 12 normal videos: it must end dead-lettered after DEAD_LETTER_ATTEMPTS attempts,
   stay so, and every other video must be answered (`poison`).
6. **bad input**: every case of `bad_input_cases()` (`cases`: media, containers and keys
   for both buckets, notifications, the function's own requests, web uploads, hostile
   known-faces files for the convert CLI, a slow decode, a hung worker); then the service
   must still answer a normal clip, and no temporary file or stray process of the function
   may be left (`bad_input`).

It prints a table per part and, as its last line, one JSON object (`report`)::

    {"scenarios": [{"name", "videos", "images", "results", "lost", "duplicated", "recover_s"}, ...],
     "bad_inputs_tried": N, "bad_inputs_failed": N, "checks_failed": N,
     "memory": {"files", "answered", "failed", "worker_restarts", "max_worker_rss_mb", "limit_mb"},
     "poison": {"videos", "answered", "dead_lettered", "attempts", "dead_letter_attempts",
                "attempts_after", "worker_restarts", "seconds"}}

`bad_inputs_tried` counts the kinds of bad input: the bad-input cases and the memory
scenario's hostile files. Exit status 0 when nothing was lost, duplicated or wrong, every bad
input was handled, the memory scenario kept its bound and the poison object was
dead-lettered; 1 otherwise; 2 when the run itself could not be done.
"""

from facepipe_tools.chaos.bad_input import (
    BadInput,
    BadInputContext,
    CaseResult,
    check_no_leftovers,
    prepare_bad_inputs,
    run_bad_inputs,
)
from facepipe_tools.chaos.cases import bad_input_cases
from facepipe_tools.chaos.cli import ALL_SCENARIOS, ChaosOptions, main, run_chaos
from facepipe_tools.chaos.clips import Clip, cse546_clips, sample_clips, sample_photos
from facepipe_tools.chaos.faults import Fault, make_fault
from facepipe_tools.chaos.memory import (
    MEMORY,
    WORKER_RSS_LIMIT_MB,
    MemoryResult,
    RssSampler,
    memory_table,
    run_memory,
    vmhwm_mb,
)
from facepipe_tools.chaos.poison import POISON, POISON_KEY, PoisonResult, run_poison
from facepipe_tools.chaos.report import bad_input_table, poison_line, scenario_table, summary_json
from facepipe_tools.chaos.scenarios import SCENARIOS, ScenarioResult, ScenarioRunner, interleave
from facepipe_tools.chaos.stack import (
    CHAOS_ENV,
    ChaosError,
    ChaosStack,
    StackClient,
    new_chaos_stack,
    recognitions_between,
)

__all__ = [
    "ALL_SCENARIOS", "CHAOS_ENV", "MEMORY", "POISON", "POISON_KEY", "SCENARIOS", "WORKER_RSS_LIMIT_MB",
    "BadInput", "BadInputContext", "CaseResult", "ChaosError", "ChaosOptions", "ChaosStack", "Clip", "Fault",
    "MemoryResult", "PoisonResult", "RssSampler", "ScenarioResult", "ScenarioRunner", "StackClient",
    "bad_input_cases", "bad_input_table", "check_no_leftovers", "cse546_clips", "interleave", "main", "make_fault",
    "memory_table", "new_chaos_stack", "poison_line", "prepare_bad_inputs", "recognitions_between", "run_bad_inputs",
    "run_chaos", "run_memory", "run_poison", "sample_clips", "sample_photos", "scenario_table", "summary_json",
    "vmhwm_mb",
]  # fmt: skip
