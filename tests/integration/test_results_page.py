"""The results page in a real headless Chromium (Debian's package, driven by Playwright) on
the real local stack: opened on an empty bucket, it fills in by itself while a workload
runs, shows every result with its people (and its picture once the function writes one),
an error row for a bad file, and shows a hostile key as text. The screenshot is kept in
`artifacts/results-page.png` (git-ignored)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from facepipe.clients import s3_client
from facepipe.settings import Settings
from facepipe_tools.mapping import load_mapping
from facepipe_tools.paths import REPO_ROOT
from facepipe_tools.polling import wait_for
from facepipe_tools.stack import LocalStack
from tests.integration.chromium import CHROMIUM, CHROMIUM_ARGS, require_browser

pytestmark = pytest.mark.integration

ARTIFACTS = REPO_ROOT / "artifacts"
HOSTILE_NAME = '<img src=x onerror="window.__xss=1">.mp4'


def wait_until(page, expression: str, timeout_s: float) -> None:
    """Poll a JavaScript expression until it is true. (Playwright's wait_for_function evaluates
    strings with eval, which the page's Content-Security-Policy forbids, as it should.)"""
    if not wait_for(lambda: page.evaluate(expression), timeout_s=timeout_s, interval_s=0.5):
        raise AssertionError(f"not true after {timeout_s} s: {expression}")


@pytest.fixture
def page() -> Iterator:
    require_browser()
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 900},
            )
            try:
                yield context.new_page()
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_results_page_fills_in_while_a_workload_runs(
    local_stack: LocalStack,
    stack_settings: Settings,
    stack_env: dict[str, str],
    sample_dir: Path,
    tmp_path: Path,
    page,
) -> None:
    url = stack_env["WEB_URL"] + "results"
    s3 = s3_client(stack_settings)
    for bucket in (stack_settings.input_bucket, stack_settings.output_bucket):
        for listing in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in listing.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}") or dialog.dismiss())

    # 1. The page on an empty bucket.
    page.goto(url)
    assert "No results yet" in page.inner_text("#results")

    # 2. A workload: the built-in sample, a bad file and a hostile file name, uploaded the usual
    # way (workload.py --keep: S3 PUTs; RGW notifies the notifier, which invokes the function).
    uploads = tmp_path / "uploads"
    shutil.copytree(sample_dir, uploads)
    (uploads / "broken.mp4").write_bytes(os.urandom(8192))
    shutil.copyfile(sample_dir / "sample_hopper.mp4", uploads / HOSTILE_NAME)
    workload = subprocess.run(
        [sys.executable, "workload/workload.py", "--keep", str(uploads)],
        cwd=REPO_ROOT, env=stack_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert workload.returncode == 0, workload.stdout + workload.stderr

    # 3. Without reloading, the page shows every result (it refreshes itself every 2 s).
    mapping = load_mapping(REPO_ROOT / "data" / "sample_mapping")
    expected_rows = len(mapping) + 2
    wait_until(page, f"document.querySelectorAll('tr.result').length >= {expected_rows}", timeout_s=240)
    rows = {
        row.get_attribute("data-stem"): row
        for row in page.query_selector_all("tr.result")  # data-stem: the output key's stem
    }
    assert len(rows) == expected_rows, sorted(rows)
    output = {obj["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=stack_settings.output_bucket)
              for obj in p.get("Contents", [])}  # fmt: skip
    writes_pictures = any(key.endswith(".jpg") for key in output)
    for entry in mapping:
        stem = Path(entry.video).stem
        row = rows[stem]
        assert "done" in row.get_attribute("class"), stem
        text = row.inner_text()
        for person in entry.people:
            assert person.name in text and person.major in text and person.year in text, (stem, text)
        if not entry.people:
            assert "nobody recognised" in text
        has_picture = f"{stem}.jpg" in output
        assert bool(row.query_selector("img")) == has_picture, stem
        if writes_pictures:  # the function writes a picture for every result: none may be missing
            assert has_picture, f"no picture for {stem}"
    broken = rows["broken"]
    assert "error" in broken.get_attribute("class")
    assert broken.query_selector(".error-code").inner_text() == "unreadable"
    assert not broken.query_selector("img")

    # 4. The hostile name is shown as text, never run (and CSP would block it anyway).
    hostile = rows[Path(HOSTILE_NAME).stem]
    assert hostile.query_selector(".name").inner_text() == Path(HOSTILE_NAME).stem
    assert page.evaluate("window.__xss") is None
    assert page.query_selector("#results-table img[src='x']") is None

    # 5. Every picture shown has loaded (naturalWidth > 0).
    wait_until(page, "[...document.querySelectorAll('#results-table img')].every(img => img.complete)", 30)
    widths = page.eval_on_selector_all("#results-table img", "imgs => imgs.map(img => img.naturalWidth)")
    assert all(width > 0 for width in widths), widths
    assert len(widths) == sum(f"{stem}.jpg" in output for stem in rows)

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "results-page.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot} ({len(widths)} pictures, {len(rows)} rows)")
    assert not errors, errors
