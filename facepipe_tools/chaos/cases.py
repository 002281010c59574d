"""Every case of the bad-input suite, in the order they run (`bad_input_cases`): media,
containers and keys for both functions' buckets, notifications, function requests (the
`Records` form among them), web uploads, hostile known-faces files for the convert CLI, a
slow decode and a hung worker. Together with the memory scenario's hostile files
(facepipe_tools.hostile_media) they are the kinds of bad input `make chaos` tries."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pickle
import secrets
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import requests
from botocore.exceptions import ClientError

from facepipe import answers
from facepipe.answers import error_key, parse_csv, parse_error, result_key
from facepipe.notifier.setup import ensure_bucket
from facepipe_tools import hostile_media, metrics_client
from facepipe_tools.chaos.bad_input import (
    NO_ANSWER,
    BadInput,
    BadInputContext,
    media_file,
    put_file,
)
from facepipe_tools.chaos.stack import FACES, IMAGES, POLL_S, ChaosError, StackClient, http_json, rgw_record
from facepipe_tools.function_runner import FUNCTION_DIR
from facepipe_tools.paths import DATA_DIR
from facepipe_tools.polling import wait_for

#: FFMPEG_TIMEOUT_S of the function while the slow-decode case runs: a tenth or less of
#: the time the slow clip needs (30 sampled frames without a face, each detected twice).
SLOW_DECODE_TIMEOUT_S = 0.5


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
    path = media_file(
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
    path = media_file(ctx, "audio-only.m4a", "-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-c:a", "aac")
    put_file(ctx, key, path)


def make_too_large(ctx: BadInputContext, key: str) -> None:
    ctx.client.put(key, b"\0" * (ctx.max_object_bytes + 1))


def make_long(ctx: BadInputContext, key: str) -> None:
    """20 minutes: the reference face as a still, one frame per second."""
    still = ctx.stills[0]
    path = media_file(ctx, "long.mp4", "-loop", "1", "-framerate", "1", "-t", "1200", "-i", str(still),
                  "-vf", f"scale=640:-2,{_EVEN}", *_H264)  # fmt: skip
    put_file(ctx, key, path)


def make_high_resolution(ctx: BadInputContext, key: str) -> None:
    """8K (7680x4320): the reference face scaled up."""
    still = ctx.stills[0]
    path = media_file(
        ctx, "8k.mp4", "-loop", "1", "-framerate", "1", "-t", "2", "-i", str(still),
        "-vf", "scale=7680:4320:force_original_aspect_ratio=decrease,pad=7680:4320:(ow-iw)/2:(oh-ih)/2,setsar=1",
        *_H264,
    )  # fmt: skip
    put_file(ctx, key, path)


def make_no_face(ctx: BadInputContext, key: str) -> None:
    path = media_file(ctx, "no-face.mp4", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=10", "-t", "2", *_H264)
    put_file(ctx, key, path)


def make_unknown_face(ctx: BadInputContext, key: str) -> None:
    path = media_file(ctx, "unknown-face.mp4", "-loop", "1", "-framerate", "5", "-t", "2", "-i", str(ctx.unknown_photo),
                  "-vf", f"scale=640:-2,{_EVEN}", *_H264)  # fmt: skip
    put_file(ctx, key, path)


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
    path = media_file(ctx, "many-faces.mp4", *inputs, "-filter_complex", graph, "-map", "[v]", *_H264)
    put_file(ctx, key, path)


def make_photo_named_mp4(ctx: BadInputContext, key: str) -> None:
    put_file(ctx, key, ctx.stills[0])


def make_reference_copy(ctx: BadInputContext, key: str) -> None:
    put_file(ctx, key, ctx.ref_clips[0])


def request_slow_decode(ctx: BadInputContext) -> str | None:
    """The function restarted with FFMPEG_TIMEOUT_S = SLOW_DECODE_TIMEOUT_S; a clip whose
    recognition takes far longer (40 s of 640x360, every frame a keyframe, no face: 30
    sampled frames, each detected twice) must end with a `timeout` error record, and the
    function must go on serving. The normal setting is restored afterwards."""
    stack, client = ctx.client.stack, ctx.client
    path = media_file(
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
    stopped = stack.worker_pids(FUNCTION_DIR.name)
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
    if any(pid in stack.worker_pids(FUNCTION_DIR.name) for pid in stopped):
        return "a hung worker is still running"
    return None


# -- containers the function does not read


def _reference_as(ctx: BadInputContext, key: str, name: str, *encode: str) -> None:
    """The first reference clip re-encoded into another container."""
    path = media_file(ctx, name, "-i", str(ctx.ref_clips[0]), "-t", "2", "-an", *encode)
    put_file(ctx, key, path)


def make_mpegts(ctx: BadInputContext, key: str) -> None:
    _reference_as(ctx, key, "clip.ts", *_H264, "-f", "mpegts")


def make_flv(ctx: BadInputContext, key: str) -> None:
    _reference_as(ctx, key, "clip.flv", "-c:v", "flv", "-f", "flv")


def make_mpeg_ps(ctx: BadInputContext, key: str) -> None:
    _reference_as(ctx, key, "clip.mpg", "-c:v", "mpeg2video", "-f", "mpeg")


# -- the image bucket (the classification function)


def _image_put(ctx: BadInputContext, key: str, body: bytes) -> None:
    ctx.client.put(key, body, kind=IMAGES)


def make_image_empty(ctx: BadInputContext, key: str) -> None:
    _image_put(ctx, key, b"")


def make_image_text(ctx: BadInputContext, key: str) -> None:
    _image_put(ctx, key, b"Holiday photos are in the other folder.\n" * 40)


def make_image_svg(ctx: BadInputContext, key: str) -> None:
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="64000" height="64000"><rect width="100%" height="100%"/></svg>'
    )
    _image_put(ctx, key, svg.encode())


def make_image_random(ctx: BadInputContext, key: str) -> None:
    _image_put(ctx, key, b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(64 * 1024))


def make_image_truncated(ctx: BadInputContext, key: str) -> None:
    """The first 40 % of a JPEG of the reference still."""
    path = ctx.media_dir / "still.jpg"
    if not path.exists():
        hostile_media.face_still(path, ctx.stills[0], "JPEG")
    data = path.read_bytes()
    _image_put(ctx, key, data[: len(data) * 2 // 5])


def make_image_video(ctx: BadInputContext, key: str) -> None:
    _image_put(ctx, key, ctx.ref_clips[0].read_bytes())


def _hostile_image(make: Callable[[Path, Path], None], name: str) -> Callable[[BadInputContext, str], None]:
    """A hostile file of facepipe_tools.hostile_media, uploaded to the image bucket."""

    def upload(ctx: BadInputContext, key: str) -> None:
        path = ctx.media_dir / name
        if not path.exists():
            make(path, ctx.stills[0])
        _image_put(ctx, key, path.read_bytes())

    return upload


def make_image_photo(ctx: BadInputContext, key: str) -> None:
    """A real photo under a key with spaces, several scripts and %-escapes."""
    _image_put(ctx, key, ctx.stills[0].read_bytes())


# -- the function's own bad requests: raw `Records`


def _function_refuses(ctx: BadInputContext, payload: dict, statuses: tuple[int, ...]) -> str | None:
    """The function answers one of `statuses` and processes nothing: its workers' counts of
    objects by outcome (ok, error, skipped, not_found) do not move."""
    before = ctx.client.function_outcomes()
    status, body = http_json("POST", ctx.client.function_url, json=payload)
    after = ctx.client.function_outcomes()
    problems = []
    if after != before:
        moved = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after if after.get(k) != before.get(k)}
        problems.append(f"the function processed objects: {moved}")
    if status not in statuses:
        problems.append(f"HTTP {status}, expected {'/'.join(map(str, statuses))}: {str(body)[:150]}")
    return "; ".join(problems) or None


def _records(ctx: BadInputContext, count: int, token: str | None) -> dict:
    """`count` records for keys that exist (the first reference clip), with `token`."""
    bucket, key = ctx.settings.input_bucket, ctx.ref_key(0)
    return {"Records": [rgw_record(bucket, key, "0" * 32, 10, token) for _ in range(count)]}


def request_function_records_no_token(ctx: BadInputContext) -> str | None:
    # 401 when the function has a token, 403 when it takes no raw records at all
    return _function_refuses(ctx, _records(ctx, 1, None), (401, 403))


def request_function_records_wrong_token(ctx: BadInputContext) -> str | None:
    return _function_refuses(ctx, _records(ctx, 1, "not-the-token"), (403,))


def request_function_records_over_cap(ctx: BadInputContext) -> str | None:
    over = ctx.settings.max_records_per_request + 1
    return _function_refuses(ctx, _records(ctx, over, ctx.settings.notify_token), (413, 403))


def request_function_records_flood(ctx: BadInputContext) -> str | None:
    return _function_refuses(ctx, _records(ctx, 9000, None), (401, 403, 413))


# -- the web tier


def _web_uploads(ctx: BadInputContext) -> int:
    """Objects the web tier stored, in both functions' input buckets."""
    client = ctx.client
    return sum(len(list(answers.list_objects(client.s3, client.buckets(kind)[0], "web/"))) for kind in (FACES, IMAGES))


def _web_refuses(
    ctx: BadInputContext, path: str, statuses: tuple[int, ...], headers: dict[str, str] | None = None,
    **kwargs: object,
) -> str | None:  # fmt: skip
    """The web tier answers one of `statuses` and stores nothing."""
    before = _web_uploads(ctx)
    try:
        token = os.environ.get("WEB_TOKEN")
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        response = requests.post(ctx.client.web_url + path, headers={**auth, **(headers or {})}, timeout=180, **kwargs)
        status, text = response.status_code, response.text[:150]
    except requests.ConnectionError as exc:  # a server may close the connection on a refused body
        status, text = 0, f"connection closed: {type(exc).__name__}"
    problems = []
    if _web_uploads(ctx) != before:
        problems.append("the upload was stored")
    if status not in statuses:
        problems.append(f"HTTP {status}, expected {'/'.join(map(str, statuses))}: {text!r}")
    return "; ".join(problems) or None


def request_web_wrong_type(ctx: BadInputContext) -> str | None:
    body = b"These are my lecture notes, not a video.\n" * (128 * 1024)  # 5 MiB of text
    return _web_refuses(ctx, "/", (415,), files={"inputFile": ("lecture.mp4", body, "video/mp4")})


def request_web_classify_video(ctx: BadInputContext) -> str | None:
    body = ctx.ref_clips[0].read_bytes()
    return _web_refuses(ctx, "/classify", (415,), files={"inputFile": ("holiday.jpg", body, "image/jpeg")})


def request_web_too_large(ctx: BadInputContext) -> str | None:
    """An MP4 header and then zeros, one byte over the limit: 413 (or the connection closed
    while the body is still being sent), nothing stored."""
    head = bytes.fromhex("0000001c667479706d703432000000006d70343269736f6d61766331")
    body = head + b"\0" * (ctx.max_object_bytes + 1 - len(head))
    return _web_refuses(ctx, "/", (413, 0), files={"inputFile": ("big.mp4", body, "video/mp4")})


def request_web_no_file(ctx: BadInputContext) -> str | None:
    return _web_refuses(ctx, "/", (400,), files={"otherField": ("clip.mp4", b"x", "video/mp4")})


def request_web_cross_origin(ctx: BadInputContext) -> str | None:
    """A POST from another site's page (its Origin): refused, even with a good file."""
    body = ctx.ref_clips[0].read_bytes()
    headers = {"Origin": "https://attacker.example"}
    return _web_refuses(ctx, "/", (403,), headers, files={"inputFile": ("clip.mp4", body, "video/mp4")})


# -- hostile known-faces files for the convert CLI

#: How much more than converting the sample's JSON a hostile file may make the CLI allocate.
CONVERT_EXTRA_MIB = 64
CONVERT_TIMEOUT_S = 60.0


#: Runs argv[1:] in a child forked from this small process, its stdout on /dev/null, and
#: prints "<exit status> <peak RSS in KiB>". Started straight from a large process (pytest,
#: `make chaos`), the CLI's ru_maxrss would be that process's: Linux keeps the high-water mark
#: of the memory a process had before exec.
_PEAK_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def run_convert_cli(source: Path, output: Path) -> tuple[int, str, int]:
    """Run `python -m facepipe.faces.known_faces convert`: exit status (negative: a signal),
    stderr and peak resident memory in KiB."""
    command = [sys.executable, "-m", "facepipe.faces.known_faces", "convert", str(source), "-o", str(output)]
    process = subprocess.Popen(
        [sys.executable, "-c", _PEAK_LAUNCHER, *command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, cwd=source.parent, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=CONVERT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher and the CLI: a session of their own
        process.communicate()
        return -signal.SIGKILL, f"no answer in {CONVERT_TIMEOUT_S:g} s", 0
    code, peak = (int(word) for word in stdout.split())
    return code, stderr.decode(errors="replace"), peak


@functools.cache
def _convert_baseline_kib() -> int:
    """The CLI's peak memory converting the committed sample known faces (JSON)."""
    with tempfile.TemporaryDirectory() as folder:
        code, stderr, peak = run_convert_cli(DATA_DIR / "known_faces.json", Path(folder) / "out.json")
    if code != 0:
        raise ChaosError(f"the convert CLI fails on the sample's known faces: {stderr.strip()[-200:]}")
    return peak


def _sample_pickle() -> bytes:
    import numpy as np

    return pickle.dumps({"name": ["a"], "encoding": [np.zeros(128)]}, protocol=3)


def _numpy_shape_pickle() -> bytes:
    """The CSE546 layout, its array's shape (128,) now 2**31 long: numpy would allocate 16 GiB."""
    data = _sample_pickle()
    at = data.index(b"K\x80\x85")  # BININT1 128, TUPLE1: the shape
    return data[:at] + b"J" + struct.pack("<i", 2**31 - 1) + b"\x85" + data[at + 3 :]


KNOWN_FACES_FILES: dict[str, Callable[[Path], bytes]] = {
    "code-exec": lambda marker: b"\x80\x03" + f"cos\nsystem\n(S'touch {marker}'\ntR.".encode(),
    "numpy-shape": lambda marker: _numpy_shape_pickle(),
    "huge-bytes": lambda marker: b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"\0" * 16 + b".",
    "truncated": lambda marker: _sample_pickle()[:300],
    "names-not-strings": lambda marker: pickle.dumps({"name": [1], "encoding": [[0.0] * 128]}, protocol=3),
    "json-short-encoding": lambda marker: json.dumps(
        {"format": "facepipe-known-faces/1", "faces": [{"name": "a", "encoding": [0.0] * 3}]}
    ).encode(),
}


def known_faces_case(name: str) -> Callable[[BadInputContext], str | None]:
    def run(ctx: BadInputContext) -> str | None:
        """The CLI refuses the file: exit status 1 with `error: ...`, no output, no code run,
        no signal, memory near what a good file takes."""
        folder = ctx.media_dir / "known-faces"
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / f"{name}.ran"
        source, output = folder / f"{name}.pkl", folder / f"{name}.json"
        source.write_bytes(KNOWN_FACES_FILES[name](marker))
        baseline = _convert_baseline_kib()
        code, stderr, peak = run_convert_cli(source, output)
        problems = []
        if code != 1:
            problems.append(f"exit status {code}" + (" (killed by a signal)" if code < 0 else ""))
        if "error:" not in stderr:
            problems.append(f"no clear error: {stderr.strip()[-200:]!r}")
        if output.exists():
            problems.append("an output file was written")
        if marker.exists():
            problems.append("the pickle ran code")
        if peak > baseline + CONVERT_EXTRA_MIB * 1024:
            problems.append(f"peak memory {peak >> 10} MiB, {baseline >> 10} MiB for a good file")
        return "; ".join(problems) or None

    return run


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
        BadInput("truncated-faststart-mp4",
                 "the first half of a real clip (index at the start): answered from its frames, damage named",
                 "chaos-truncated-faststart.mp4", make_truncated_faststart, ("csv", up)),
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
        BadInput("mpeg-ts", "the reference in MPEG-TS (not a container read here)", "chaos-clip.ts.mp4", make_mpegts,
                 ("error", "unreadable")),
        BadInput("flv", "the reference in FLV", "chaos-clip.flv", make_flv, ("error", "unreadable")),
        BadInput("mpeg-ps", "the reference in MPEG-PS", "chaos-clip.mpg", make_mpeg_ps, ("error", "unreadable")),
        BadInput("key-no-extension", "a key without an extension", "chaos-no-extension", make_reference_copy,
                 ("csv", up), extra=check_answer_key_verbatim),
        BadInput("key-upper-case-extension", "a key ending .MP4", "CHAOS-SHOUT.MP4", make_reference_copy,
                 ("csv", up), extra=check_answer_key_verbatim),
        BadInput("key-very-long", "a key of 904 bytes", "chaos-" + "l" * 894 + ".mp4", make_reference_copy,
                 ("csv", up), extra=check_answer_key_verbatim),
        BadInput("image-empty", "image bucket: 0 bytes", "chaos-img-empty.jpg", make_image_empty, ("error", "empty"),
                 kind=IMAGES),
        BadInput("image-text", "image bucket: text named .jpg", "chaos-img-notes.jpg", make_image_text,
                 ("error", "unreadable"), kind=IMAGES),
        BadInput("image-svg", "image bucket: an SVG of 64000x64000 named .png", "chaos-img-vector.png",
                 make_image_svg, ("error", "unreadable"), kind=IMAGES),
        BadInput("image-random", "image bucket: a PNG signature, then random bytes", "chaos-img-random.png",
                 make_image_random, ("error", "unreadable"), kind=IMAGES),
        BadInput("image-truncated-jpeg", "image bucket: the first 40 % of a JPEG", "chaos-img-truncated.jpg",
                 make_image_truncated, ("error", "unreadable"), kind=IMAGES),
        BadInput("image-video", "image bucket: an MP4 named .jpg", "chaos-img-video.jpg", make_image_video,
                 ("error", "unreadable"), kind=IMAGES),
        BadInput("image-png-900mpx", "image bucket: PNG 30000x30000, 1 bit a pixel (a few hundred KB)",
                 "chaos-img-bomb.png", _hostile_image(lambda out, face: hostile_media.png_bomb(out, 30000, 30000, 0, 1),
                                                      "png-1bit-900mpx.png"),
                 ("error", "too_large"), kind=IMAGES),
        BadInput("image-gif-huge-screen", "image bucket: GIF with a 65535x65535 screen", "chaos-img-screen.gif",
                 _hostile_image(hostile_media.gif_huge_screen, "gif-huge-screen.gif"), ("error", "too_large"),
                 kind=IMAGES),
        BadInput("image-jpeg-huge-header", "image bucket: JPEG whose header claims 65000x65000",
                 "chaos-img-header.jpg", _hostile_image(hostile_media.jpeg_huge_header, "jpeg-huge-header.jpg"),
                 ("error", "too_large"), kind=IMAGES),
        BadInput("image-key-odd", "image bucket: a real photo under a key with spaces, scripts and %-escapes",
                 "chaos img/ünïcode ✓ 100%25.png", make_image_photo, ("csv", None), kind=IMAGES),
        BadInput("function-records-without-token", "a raw Records event without a token: 401, nothing processed",
                 request=request_function_records_no_token),
        BadInput("function-records-wrong-token", "a raw Records event with a wrong token: 403, nothing processed",
                 request=request_function_records_wrong_token),
        BadInput("function-records-over-cap", "MAX_RECORDS_PER_REQUEST + 1 records, with the token: 413, nothing done",
                 request=request_function_records_over_cap),
        BadInput("function-records-flood", "9000 records without a token: refused, nothing processed",
                 request=request_function_records_flood),
        BadInput("web-wrong-type", "POST / with 5 MiB of text named .mp4: 415, nothing stored",
                 request=request_web_wrong_type),
        BadInput("web-classify-video", "POST /classify with a video named .jpg: 415, nothing stored",
                 request=request_web_classify_video),
        BadInput("web-too-large", "POST / with one byte over the limit: 413, nothing stored",
                 request=request_web_too_large),
        BadInput("web-no-file", "POST / without the file field: 400, nothing stored", request=request_web_no_file),
        BadInput("web-cross-origin", "POST / from another site (Origin): 403, nothing stored",
                 request=request_web_cross_origin),
        *(BadInput(f"known-faces-{name}", f"known-faces convert CLI, hostile file: {name}: refused clearly",
                   request=known_faces_case(name)) for name in KNOWN_FACES_FILES),
        BadInput("slow-decode", "recognition longer than FFMPEG_TIMEOUT_S: a timeout error record",
                 request=request_slow_decode, last=True),
        BadInput("hung-worker", "every worker stuck (SIGSTOP): killed at the timeout, restarted, answered",
                 request=request_hung_worker, last=True),
    ]  # fmt: skip
