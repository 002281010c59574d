"""The web tier on the real local stack: POST a file, the answer comes back through RGW's
bucket notification, the notifier and the function; 100 concurrent requests, none lost or
mixed up; the load generator (workload.py --http)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from facepipe.answers import Student
from facepipe.clients import s3_client
from facepipe.settings import Settings
from facepipe_tools.mapping import OK, MappingEntry, compare, load_mapping
from facepipe_tools.paths import REPO_ROOT
from facepipe_tools.stack import LocalStack

pytestmark = pytest.mark.integration

SAMPLE_MAPPING = {entry.video: entry for entry in load_mapping(REPO_ROOT / "data" / "sample_mapping")}


def web_url(stack: LocalStack) -> str:
    return stack.settings_env()["WEB_URL"]


def post(url: str, path: Path, name: str | None = None, accept: str = "application/json",
         session: requests.Session | None = None) -> requests.Response:  # fmt: skip
    with path.open("rb") as handle:
        return (session or requests).post(
            url, files={"inputFile": (name or path.name, handle)}, headers={"Accept": accept}, timeout=300
        )


def answer_of(url: str, response: requests.Response, session: requests.Session, deadline: float) -> dict:
    """The JSON answer, following a 202 (server-side timeout) to GET /result/<key> until it is there."""
    while response.status_code == 202 and time.monotonic() < deadline:
        time.sleep(1)
        location = response.headers["Location"]
        response = session.get(url.rstrip("/") + location, headers={"Accept": "application/json"}, timeout=30)
    assert response.status_code in (200, 422), response.text
    return response.json()


def people(body: dict) -> list[Student]:
    return [Student(p["name"], p["major"], p["year"]) for p in body["people"]]


def test_post_answers_the_person_in_plain_text_and_json(local_stack: LocalStack, sample_dir: Path) -> None:
    url = web_url(local_stack)
    response = post(url, sample_dir / "sample_hopper.mp4", accept="*/*")
    assert response.status_code == 200, response.text
    assert response.text == "sample_hopper:grace_hopper"

    body = post(url, sample_dir / "sample_both.mp4").json()
    assert body["status"] == "done" and body["stem"] == "sample_both"
    assert compare(SAMPLE_MAPPING["sample_both.mp4"], people(body))[0] == OK
    assert body["people"][0] == {"name": "grace_hopper", "major": "computer_science", "year": "senior"}
    if body["picture_url"] is not None:  # the function writes <stem>.jpg beside the result
        picture = requests.get(url.rstrip("/") + body["picture_url"], timeout=30)
        assert picture.status_code == 200 and picture.content[:3] == b"\xff\xd8\xff"

    nobody = post(url, sample_dir / "sample_nobody.mov", accept="text/plain")
    assert (nobody.status_code, nobody.text) == (200, "sample_nobody:")


def test_unusable_media_and_rejections(local_stack: LocalStack, tmp_path: Path) -> None:
    url = web_url(local_stack)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4096))
    response = post(url, garbage)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["error"] == "unreadable"
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    assert post(url, notes).status_code == 415
    assert requests.post(url, timeout=30).status_code == 400


def test_hundred_concurrent_requests_none_lost_or_mixed_up(
    local_stack: LocalStack, stack_settings: Settings, sample_dir: Path, tmp_path: Path
) -> None:
    """100 requests at once, every sample clip under many names: each answer is for its own file
    and names the right people."""
    url = web_url(local_stack)
    clips = sorted(SAMPLE_MAPPING)
    jobs: list[tuple[str, MappingEntry]] = []
    for index in range(100):
        clip = clips[index % len(clips)]
        name = f"user{index:03d} {Path(clip).stem}{Path(clip).suffix}"
        shutil.copyfile(sample_dir / clip, tmp_path / name)
        jobs.append((name, SAMPLE_MAPPING[clip]))
    deadline = time.monotonic() + 600

    def one(job: tuple[str, MappingEntry]) -> tuple[str, dict, float]:
        with requests.Session() as session:
            started = time.monotonic()
            response = post(url, tmp_path / job[0], session=session)
            return job[0], answer_of(url, response, session, deadline), time.monotonic() - started

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(one, jobs))
    took = time.monotonic() - started
    latencies = sorted(seconds for _, _, seconds in results)
    print(f"100 concurrent requests in {took:.1f} s; latency p50 {latencies[49]:.1f} s, max {latencies[-1]:.1f} s")

    assert len(results) == 100
    wrong = []
    for (name, expected), (got_name, body, _) in zip(jobs, results, strict=True):
        assert got_name == name
        status, detail = compare(expected, people(body)) if body["status"] == "done" else ("error", body["error"])
        if body["stem"] != Path(name).stem or body["file"] != name or status != OK:
            wrong.append(f"{name}: {body['stem']} {body['status']} {detail}")
    assert not wrong, wrong
    keys = [body["key"] for _, body, _ in results]
    assert len(set(keys)) == 100  # one object per request, even for the same file name
    s3 = s3_client(stack_settings)
    for key in keys[:5]:
        s3.head_object(Bucket=stack_settings.input_bucket, Key=key)  # stored through the input bucket


def test_load_generator_against_the_web_tier(
    local_stack: LocalStack, stack_env: dict[str, str], sample_dir: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "workload/workload.py", "--http", web_url(local_stack), "--concurrency", "8",
         "--mapping", "data/sample_mapping", str(sample_dir)],
        cwd=REPO_ROOT, env=stack_env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    count = len(SAMPLE_MAPPING)  # one request per sample file
    assert f"{count} ok, 0 failed; {count} checked against the mapping" in done.stdout
    assert "latency: p50" in done.stdout


def test_hostile_uploads_are_refused_early_by_the_running_web_tier(
    local_stack: LocalStack, stack_settings: Settings, tmp_path: Path
) -> None:
    """The web tier as the stack runs it (web/app.py under waitress): a 2 MB text file named
    like a video is refused from its first bytes (counted as refused before its body by the
    server itself), a POST from another site's page is refused, and neither is stored."""
    url = web_url(local_stack)
    s3 = s3_client(stack_settings)

    def web_keys() -> set[str]:
        listing = s3.list_objects_v2(Bucket=stack_settings.input_bucket, Prefix="web/")
        return {obj["Key"] for obj in listing.get("Contents", [])}

    before = web_keys()
    fake = tmp_path / "lecture.mp4"
    fake.write_bytes(b"this is a text file, not a video\n" * 64_000)
    response = post(url, fake)
    assert response.status_code == 415, response.text
    assert response.json()["status"] == "rejected" and "holds text" in response.json()["error"]
    metrics = requests.get(url + "metrics", timeout=30).text
    assert 'facepipe_web_refused_early_total{status="415"}' in metrics
    with (tmp_path / "lecture.mp4").open("rb") as handle:
        foreign = requests.post(url, files={"inputFile": ("clip.mp4", handle)}, timeout=60,
                                headers={"Origin": "http://evil.example", "Accept": "application/json"})  # fmt: skip
    assert foreign.status_code == 403 and "cross-origin" in foreign.json()["error"]
    assert web_keys() == before
