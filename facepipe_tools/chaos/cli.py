"""`make chaos` (`python -m facepipe_tools.chaos`): options, the run in order, the exit status."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from facepipe_tools.chaos.bad_input import (
    BadInputContext,
    CaseResult,
    check_no_leftovers,
    prepare_bad_inputs,
    run_bad_inputs,
)
from facepipe_tools.chaos.cases import bad_input_cases
from facepipe_tools.chaos.clips import Clip, cse546_clips, sample_photos
from facepipe_tools.chaos.faults import make_fault
from facepipe_tools.chaos.memory import MEMORY, MemoryResult, run_memory
from facepipe_tools.chaos.poison import POISON, POISON_KEY, PoisonResult, run_poison
from facepipe_tools.chaos.report import print_report, secs
from facepipe_tools.chaos.scenarios import SCENARIOS, ScenarioResult, ScenarioRunner, interleave
from facepipe_tools.chaos.stack import ChaosError, StackClient, new_chaos_stack, say
from facepipe_tools.paths import cse546_dir

ALL_SCENARIOS = (*SCENARIOS, MEMORY, POISON)
#: Videos uploaded beside the poison object.
POISON_VIDEOS = 12


@dataclass
class ChaosOptions:
    cse546: Path
    workers: int = 2
    rate: float = 8.0
    videos: int | None = None
    #: photos to the image bucket in each fault scenario's workload (the built-in photos, repeated)
    photos: int = 14
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
        log=lambda line: say(f"stack: {line}"),
    )  # fmt: skip
    scenarios: list[ScenarioResult] = []
    bad: list[CaseResult] = []
    memory: MemoryResult | None = None
    poison: PoisonResult | None = None
    started = time.monotonic()
    faults = [name for name in options.scenarios if name in SCENARIOS]
    reference = cse546 / "test_cases" / "test_case_1" / "test_0.mp4"
    try:
        say(f"chaos: starting the stack in {state_dir}")
        stack.up()
        client = StackClient(stack)
        videos = 0
        if faults:
            clips = cse546_clips(cse546, options.videos)
            photos = sample_photos(state_dir / "photos", options.photos) if options.photos else []
            runner = ScenarioRunner(client, interleave(clips, photos), options.rate)
            say(f"chaos: baseline, {len(clips)} clips and {len(photos)} photos at {options.rate:g}/s")
            baseline = runner.run(None)
            scenarios.append(baseline)
            for name in [*faults, *(["persistent"] if options.persistent else [])]:
                fault = make_fault(name, client)
                say(f"chaos: {fault.name}: {fault.description}")
                row = runner.run(fault, baseline)
                scenarios.append(row)
                say(f"chaos: {row.name}: {row.results}/{row.uploads} answered, {row.lost} lost, "
                    f"{row.duplicated} duplicated, {row.wrong} wrong, recover {secs(row.recover_s)} s")  # fmt: skip
                for problem in row.problems[:10]:
                    say(f"  {problem}")
            videos += sum(row.videos for row in scenarios)
        if MEMORY in options.scenarios:
            say("chaos: memory: hostile media, the function workers' peak memory")
            memory = run_memory(client, state_dir / "media", reference)
            say(f"chaos: memory: {memory.answered}/{memory.files} answered, {len(memory.failed)} failed, "
                f"peak worker RSS {memory.max_worker_rss_mb} MiB")  # fmt: skip
            videos += memory.files + 1
        if POISON in options.scenarios:
            say("chaos: poison: an object that kills its worker, among normal videos")
            poison = run_poison(client, cse546_clips(cse546, POISON_VIDEOS), Clip(POISON_KEY, reference))
            say(f"chaos: poison: {poison.attempts} attempts, answer {poison.poison_answer or 'none'}, "
                f"{poison.answered}/{poison.videos} videos answered right")  # fmt: skip
            videos += poison.videos + 1
        if options.bad_inputs:
            say("chaos: bad input")
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
            say(f"chaos: the stack stays up (state {state_dir}); stop it with "
                f"`python -m facepipe_tools.stack down --state-dir {state_dir}`")  # fmt: skip
        else:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the stack stop completely
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            with contextlib.suppress(Exception):
                stack.down()
            if options.state_dir is None:
                shutil.rmtree(state_dir, ignore_errors=True)
        print_report(scenarios, bad, time.monotonic() - started, memory, poison)
    ok = (
        all(row.passed for row in scenarios)
        and all(row.passed for row in bad)
        and (memory is None or memory.passed)
        and (poison is None or poison.passed)
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    from facepipe_tools import chaos

    parser = argparse.ArgumentParser(prog="chaos.py", description=(chaos.__doc__ or "").splitlines()[0])
    parser.add_argument("--cse546", type=Path, default=cse546_dir(), help="CSE546 data folder")
    parser.add_argument("--workers", type=int, default=2, help="face-recognition workers (default 2)")
    parser.add_argument(
        "--rate",
        type=float,
        default=8.0,
        help="uploads per second (default 8: faster than 2 workers recognise, so a backlog builds)",
    )
    parser.add_argument("--videos", type=int, help="use only the first N clips of test_case_2")
    parser.add_argument(
        "--photos", type=int, default=14, help="photos to the image bucket per fault scenario (default 14; 0: none)"
    )
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
        photos=max(0, args.photos),
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
