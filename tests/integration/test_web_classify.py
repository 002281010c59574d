"""Image classification through the web tier on the real local stack: POST /classify stores the
photo in the image input bucket, RGW notifies the notifier, which invokes the classification
function, and the answer comes back from the image output bucket; the photo sample through
the workload generator and the checker; the results page lists the classified photos."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from facepipe.answers import Label
from facepipe_tools.mapping import OK, compare_labels, load_image_mapping
from facepipe_tools.paths import REPO_ROOT
from facepipe_tools.sample import build_image_sample
from facepipe_tools.stack import LocalStack

pytestmark = pytest.mark.integration

MAPPING_FILE = REPO_ROOT / "data" / "sample_image_mapping"
MAPPING = {entry.image: entry for entry in load_image_mapping(MAPPING_FILE)}
CAT_LABELS = set(MAPPING["chelsea.png"].labels)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    build_image_sample(folder)
    return folder


@pytest.fixture
def classify_url(local_stack: LocalStack) -> str:
    settings = local_stack.settings()
    if not any(route.function == settings.image_function_name for route in local_stack.routes()):
        pytest.skip("the session stack serves no image classification function (image_workers = 0)")
    return local_stack.settings_env()["WEB_URL"] + "classify"


def _label(item: dict) -> Label:
    return Label(item["rank"], item["label"], item["score"])


def post(url: str, path: Path, accept: str = "*/*", field: str = "inputFile") -> requests.Response:
    with path.open("rb") as handle:
        return requests.post(url, files={field: (path.name, handle)}, headers={"Accept": accept}, timeout=300)


def test_post_chelsea_answers_a_cat_as_text_and_the_top_five_as_json(classify_url: str, photos: Path) -> None:
    response = post(classify_url, photos / "chelsea.png")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    stem, _, label = response.text.partition(":")
    assert stem == "chelsea" and label in CAT_LABELS, response.text

    body = post(classify_url, photos / "chelsea.png", accept="application/json").json()
    assert (body["status"], body["stem"], body["error"]) == ("done", "chelsea", None)
    assert body["key"].startswith("web/") and body["key"].endswith("/chelsea.png")
    labels = body["labels"]
    assert [label["rank"] for label in labels] == [1, 2, 3, 4, 5]
    scores = [label["score"] for label in labels]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001, scores
    assert labels[0]["label"] in CAT_LABELS
    assert CAT_LABELS <= {label["label"] for label in labels}  # the three cats are the top three
    if body["picture_url"] is not None:  # the function writes <stem>.jpg with the top label on it
        root = classify_url.removesuffix("classify")
        picture = requests.get(root.rstrip("/") + body["picture_url"], timeout=30)
        assert picture.status_code == 200 and picture.content[:3] == b"\xff\xd8\xff"


def test_the_older_field_name_and_every_sample_format(classify_url: str, photos: Path) -> None:
    for name, entry in sorted(MAPPING.items()):
        body = post(classify_url, photos / name, accept="application/json", field="myfile").json()
        assert body["status"] == "done", body
        found = [_label(item) for item in body["labels"]]
        assert compare_labels(entry, found) == (OK, ""), (name, body["labels"])


def test_videos_and_broken_photos_are_refused(classify_url: str, sample_dir: Path, tmp_path: Path) -> None:
    video = post(classify_url, sample_dir / "sample_hopper.mp4", accept="application/json")
    assert video.status_code == 415 and "is a video" in video.json()["error"]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + bytes(2000))
    response = post(classify_url, broken, accept="application/json")
    assert response.status_code == 422, response.text
    assert response.json()["error"]["error"] == "unreadable"


def test_workload_checker_and_results_page_on_the_photo_sample(
    classify_url: str, stack_env: dict[str, str], photos: Path
) -> None:
    upload = subprocess.run(
        [sys.executable, "workload/workload.py", "--images", str(photos)],
        cwd=REPO_ROOT, env=stack_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert upload.returncode == 0, upload.stdout + upload.stderr
    assert f"uploaded {len(MAPPING)} file(s)" in upload.stdout
    check = subprocess.run(
        [sys.executable, "checker/check.py", "--mapping", str(MAPPING_FILE), "--wait", "180"],
        cwd=REPO_ROOT, env=stack_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{len(MAPPING)}/{len(MAPPING)} correct" in check.stdout

    posted = subprocess.run(
        [sys.executable, "workload/workload.py", "--http", classify_url, "--mapping", str(MAPPING_FILE), str(photos)],
        cwd=REPO_ROOT, env=stack_env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert posted.returncode == 0, posted.stdout + posted.stderr
    assert f"{len(MAPPING)} ok, 0 failed; {len(MAPPING)} checked against the mapping" in posted.stdout

    results = requests.get(stack_env["WEB_URL"] + "results.json", timeout=30).json()["images"]
    shown = {item["stem"]: item for item in results["items"]}
    for name, entry in MAPPING.items():
        item = shown[Path(name).stem]  # the workload's uploads, keyed by their file name
        assert item["status"] == "done" and compare_labels(entry, [_label(i) for i in item["labels"]])[0] == OK
