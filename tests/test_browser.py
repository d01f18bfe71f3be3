"""A person's view: headless Chromium (Debian's package) opens the running app and uploads a face."""
from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import pytest

from gradio.utils import get_upload_folder
from PIL import Image

from conftest import serve
from detector.verdicts import VERDICT_COLOURS

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run",
                 # Chromium's built-in test camera (a moving colour pattern), allowed without a prompt
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
READING = "probability that this face is fake"


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
    # one headline, the verdict's: the Label's own heading names the more probable class, "fake" for a score the
    # verdict does not flag (between 50% and the threshold)
    assert page.locator("[data-testid='label-output-value']").count() == 0
    assert page.locator("h3").filter(has_text="p(fake)").count() == 1  # "Likely fake … (p(fake) 84%)" or the others
    # the bars take the verdict's colour: red likely fake, amber uncertain, green likely real
    headline = page.locator("h3").filter(has_text="p(fake)").inner_text()
    verdict = next(v for prefix, v in (("Likely fake", "likely fake"), ("Uncertain", "uncertain"),
                                        ("Likely a real", "likely real")) if headline.startswith(prefix))
    fill = page.locator(".probabilities").first.evaluate(
        "e => getComputedStyle(e.querySelector('.bar') || e).getPropertyValue('--stat-background-fill').trim()")
    assert fill.replace(" ", "") == "rgb{}".format(VERDICT_COLOURS[verdict]).replace(" ", "")
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


def cache_files() -> set[Path]:
    return {path for path in Path(get_upload_folder()).rglob("*") if path.is_file()}


def test_a_pasted_picture_is_analysed_and_not_kept(browser, page_url, face_paths):
    """Ctrl+C on a picture elsewhere, then the page's paste button: analysed like an upload, deleted like one."""
    buffer = io.BytesIO()
    Image.open(face_paths[0]).convert("RGB").save(buffer, "PNG")
    before = cache_files()
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(page_url)
    page.evaluate("""async (data) => {
        const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
        await navigator.clipboard.write([new ClipboardItem({"image/png": new Blob([bytes], {type: "image/png"})})]);
    }""", base64.b64encode(buffer.getvalue()).decode())
    page.locator("#camera button[aria-label='Paste from clipboard']").click()
    page.get_by_text(READING).wait_for(timeout=60_000)
    assert page.locator("img#overlay").evaluate("img => img.complete && img.naturalWidth > 0")
    assert "One face was found" in page.inner_text("body")
    assert cache_files() - before == set()  # the pasted picture was uploaded, read, and deleted
    context.close()


def test_a_webcam_snapshot_is_analysed(browser, page_url):
    """The camera source: Chromium's test camera shows a colour pattern, so no face is found and the page says so."""
    context = browser.new_context(permissions=["camera"])
    page = context.new_page()
    page.goto(page_url)
    page.locator("#camera button", has_text="Click to Access Webcam").click()
    page.wait_for_function("() => { const v = document.querySelector('#camera video');"
                           " return v && v.readyState >= 2 && v.videoWidth > 0; }", timeout=30_000)  # frames arrive
    page.locator("#camera button[aria-label='capture photo']").click()
    page.get_by_text("probability that this image is fake").wait_for(timeout=60_000)  # no face: the whole image's
    assert "No face found: whole image analysed" in page.inner_text("body")
    context.close()


def test_the_report_downloads_and_opens_in_the_browser(browser, page_url, face_paths, tmp_path):
    """A signed, AI-declared photo: the page shows the provenance, offers the report; the report opens on its own."""
    from test_provenance import jpeg, make_signer, sign

    signed = tmp_path / "signed-face.jpg"
    signed.write_bytes(sign(make_signer(), jpeg(Image.open(face_paths[0]).convert("RGB"))))
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(page_url)
    page.locator("input[type=file]").first.set_input_files(str(signed))
    page.get_by_text("AI origin declared, not verified").wait_for(timeout=60_000)  # a test CA is on no trust list
    assert "declares an AI origin" in page.inner_text("body")
    assert page.locator("img#spectrum").evaluate("img => img.complete && img.naturalWidth > 0")
    with page.expect_download(timeout=30_000) as download:
        page.locator("#report").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == "signed-face.jpg.report.html"
    page.close()

    report = browser.new_page(viewport={"width": 1000, "height": 1400})
    report.goto(saved.as_uri())
    for key in ("original", "activation-map", "overlay", "spectrum"):
        assert report.locator(f"#{key} img").evaluate("img => img.complete && img.naturalWidth > 0"), key
    text = report.inner_text("body")
    assert "probability that this face is fake" in text and "trainedAlgorithmicMedia" in text
    assert "weights sha256" in text and "Known limits" in text
    assert len(report.pdf()) > 10_000 if hasattr(report, "pdf") else True  # prints to PDF (headless Chromium)
    report.close()
