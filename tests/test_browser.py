"""A person's view: headless Chromium (Debian's package) opens the running app and uploads a face."""
from __future__ import annotations

import os
import shutil

import pytest

from conftest import serve

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def page_url(detector):
    with serve(detector) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:  # CI must run it (.ci/run installs Debian's chromium); elsewhere say what is missing
        (pytest.fail if os.environ.get("CI") else pytest.skip)("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_upload_shows_label_probabilities_and_overlay(browser, page_url, face_paths):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(page_url)
    page.locator("input[type=file]").first.set_input_files(str(face_paths[0]))
    overlay = page.locator("img#overlay")
    overlay.wait_for(timeout=60_000)
    assert overlay.evaluate("img => img.complete && img.naturalWidth > 0")
    assert overlay.get_attribute("src").startswith("data:image/")
    body = page.inner_text("body")
    assert "real" in body and "fake" in body
    assert body.count("%") >= 2  # both probabilities
    assert "probability that this face is fake" in body
    page.close()


def test_bad_file_shows_a_message_not_a_traceback(browser, page_url, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("hello")
    page = browser.new_page()
    page.goto(page_url)
    page.locator("input[type=file]").first.set_input_files(str(bad))
    page.get_by_text("could not be analysed").wait_for(timeout=60_000)
    assert "Traceback" not in page.inner_text("body")
    page.close()
