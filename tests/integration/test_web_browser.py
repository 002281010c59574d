"""The upload form in a real headless Chromium (Debian's package, driven by Playwright), against
the web tier under waitress on loopback (moto S3, the fake pipeline of tests/unit/webfake.py):
the form's POST carries the page's own origin and passes the origin check; with WEB_TOKEN set
the browser is asked for it (HTTP Basic, the token as password) and then uploads with it.
No stack needed, only the browser."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from facepipe.settings import Settings
from tests.integration.chromium import CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.unit.webfake import FakePipeline, media
from tests.unit.webserver import serving

pytestmark = pytest.mark.integration

SETTINGS = Settings(input_bucket="input", output_bucket="output", max_object_bytes=10_000_000)
TOKEN = "br0wser-t0ken"


@pytest.fixture
def browser() -> Iterator[Callable[..., object]]:
    """`open(**context_options)`: a new Chromium context (e.g. with http_credentials)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="chromium-web-")
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            contexts = []

            def open_context(**options):
                context = chromium.new_context(**options)
                contexts.append(context)
                return context

            try:
                yield open_context
            finally:
                for context in contexts:
                    context.close()
                chromium.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def pipeline(s3) -> Iterator[FakePipeline]:
    with FakePipeline(s3) as fake:
        yield fake


def upload_with_the_form(page, url: str) -> tuple[int, str]:
    """Open the upload form, choose a file, submit: the answer's status and text."""
    page.goto(url)
    page.set_input_files(
        "#inputFile", files=[{"name": "clip.mp4", "mimeType": "video/mp4", "buffer": media("people=grace_hopper")}]
    )
    with page.expect_navigation() as navigation:
        page.click("form[action='/'] button[type=submit]")
    response = navigation.value
    return response.status, page.inner_text("body")


def test_the_upload_form_passes_the_origin_check(browser, pipeline, s3, tmp_path: Path) -> None:
    with serving(s3, SETTINGS, tmp_path) as web:
        page = browser().new_page()
        status, text = upload_with_the_form(page, web.url)
    assert (status, text.strip()) == (200, "clip:grace_hopper")
    assert len(pipeline.processed) == 1


def test_with_a_token_the_browser_asks_for_it_and_uploads(browser, pipeline, s3, tmp_path: Path) -> None:
    with serving(s3, SETTINGS, tmp_path, token=TOKEN) as web:
        anonymous = browser()
        assert anonymous.request.get(web.url).status == 401
        with pytest.raises(Exception, match="ERR_INVALID_AUTH_CREDENTIALS"):
            anonymous.new_page().goto(web.url)  # a login prompt, which headless Chromium cancels
        page = browser(http_credentials={"username": "me", "password": TOKEN}).new_page()
        status, text = upload_with_the_form(page, web.url)
        results = page.goto(web.url + "results")
        assert results.status == 200 and "grace_hopper" in page.inner_text("body")
    assert (status, text.strip()) == (200, "clip:grace_hopper")
