"""The bad-input suite's machinery: what a case is, the context the cases work with, running
them against the stack and judging the answers; the cases themselves are in `cases`."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from facepipe.answers import error_key, parse_csv, parse_error, parse_labels_csv, result_key
from facepipe.settings import Settings
from facepipe_tools.chaos.scenarios import client_text
from facepipe_tools.chaos.stack import FACES, IMAGES, POLL_S, ChaosError, ChaosStack, StackClient
from facepipe_tools.hostile_media import ffmpeg
from facepipe_tools.polling import wait_for


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
    ("csv", people) with people None = the first reference's people (for an IMAGES case: a
    labels CSV, people unused), ("error", kind) (kind
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
    #: whose bucket an object case goes to: FACES (the face function) or IMAGES (the classifier)
    kind: str = FACES


@dataclass
class CaseResult:
    name: str
    what: str
    passed: bool
    detail: str = ""
    #: a check of the service after the bad input (still serving, no leftovers), not a kind of bad input
    check: bool = False


def put_file(ctx: BadInputContext, key: str, path: Path, kind: str = FACES) -> None:
    ctx.client.put(key, path.read_bytes(), kind=kind)


def media_file(ctx: BadInputContext, name: str, *ffmpeg_args: str) -> Path:
    path = ctx.media_dir / name
    if not path.exists():
        partial = path.with_name(".partial-" + name)
        ffmpeg(*ffmpeg_args, str(partial))
        partial.rename(path)
    return path


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
        ctx.stills.append(media_file(ctx, f"still-{index}.png", "-i", str(clip), "-frames:v", "1"))


def many_faces_people(ctx: BadInputContext) -> list[str]:
    """The known people in the many-faces grid (at most 6 references)."""
    return sorted({name for key in list(ctx.refs)[:6] for name in ctx.refs[key]})


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
            record = parse_error(ctx.client.read_output(error_key(case.key), case.kind))
            right_kind = expected is None or record.get("error") == expected
            problem = None if right_kind else f"error {record.get('error')!r}: {record}"
            if problem is None and not record.get("detail"):
                problem = "the error record has no detail"
    elif not has_csv:
        problem = "no CSV" + (f" (error record: {client_text(ctx.client, error_key(case.key), case.kind)[:150]})"
                              if has_error else "")  # fmt: skip
    elif case.kind == IMAGES:
        labels = parse_labels_csv(ctx.client.read_output(result_key(case.key), IMAGES))
        problem = None if labels else "a labels CSV without a label"
    else:
        people = [s.name for s in parse_csv(ctx.client.read_output(result_key(case.key)))]
        want = _expected_people(ctx, expected)
        ok = sorted(people) == sorted(want) if expected == "many" else people == want
        problem = None if ok else f"found {people}, expected {want}"
    if problem is None and case.extra is not None:
        problem = case.extra(ctx, case.key)
    return problem


def _outputs(ctx: BadInputContext, kinds: set[str]) -> dict[str, dict[str, dict]]:
    return {kind: ctx.client.list(ctx.client.buckets(kind)[1]) for kind in kinds}


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

    kinds = {case.kind for case in object_cases}

    def all_settled() -> bool:
        listings = _outputs(ctx, kinds)
        for case in list(pending):
            outputs = listings[case.kind]
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
    listings = _outputs(ctx, kinds)
    for case in object_cases:
        if case.name in results:
            continue
        try:
            problem = _judge_object_case(ctx, case, listings[case.kind])
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
    results["still-serving"] = replace(check_still_serving(ctx), check=True)
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
    expected = 1 + (stack.config.workers + (stack.config.image_workers or 0) if group else 0)
    problems = []
    if leftovers:
        problems.append(f"temp files: {leftovers[:5]}")
    if len(group) > expected:
        problems.append(f"{len(group) - expected} extra process(es) in the function's group")
    return CaseResult("no-leftovers", what, not problems, "; ".join(problems), check=True)
