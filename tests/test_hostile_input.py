"""Hostile input, many users at once, nothing kept.

Every corpus entry (tests/corpus.py) goes through the three doors: the Python API, the CLI (one
subprocess over a folder of all of them) and the app's /analyze endpoint on localhost through
gradio_client, and must get its specific error message or a correct result, never a traceback, with
the app still serving right after. Then 8 clients at once (the load test), a queue too small for the
load (a quick "busy" answer), and finally a search of the app's whole temporary directory for any
64-byte run of anything uploaded, and of the logs for image data.

The app gets a temporary directory of its own (tempfile.gettempdir() and Gradio's cache inside it)
for this module, so the search covers everything the process wrote there and nothing another
process (or a concurrent test run) put in /tmp.
"""
from __future__ import annotations

import collections
import gc
import hashlib
import json
import logging
import math
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import psutil
import pytest
from gradio.utils import get_upload_folder, is_in_or_equal
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError

import app as app_module
from conftest import serve, ROOT
from corpus import ENTRIES, Entry, noise, encode
from detector import DetectorError
from detector.cli import EXTENSIONS

CLIENTS, REQUESTS_PER_CLIENT = 8, 25
RSS_GROWTH_LIMIT = 300 * 1024 * 1024  # bytes the test process (which runs the app) may grow by under load
UPLOADED: list[bytes] = []  # everything sent to the app in this module, for the privacy search
STATS: collections.Counter = collections.Counter()


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    """Every corpus entry as a file under its own (sometimes hostile) name."""
    folder = tmp_path_factory.mktemp("inputs") / "corpus"
    folder.mkdir()
    for entry in ENTRIES:
        (folder / entry.file_name).write_bytes(entry.data)
    return folder


@pytest.fixture(scope="module")
def app_temp(tmp_path_factory):
    """The app's whole temporary world for this module: tempfile.gettempdir() with Gradio's cache inside."""
    root = tmp_path_factory.mktemp("app-temp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(root))
        patch.setenv("GRADIO_TEMP_DIR", str(root / "gradio"))
        assert Path(get_upload_folder()) == root / "gradio"
        yield root


@pytest.fixture(scope="module")
def served(app_temp, detector):
    with serve(detector) as url:
        yield url


@pytest.fixture(scope="module")
def client(served):
    return Client(served, verbose=False)


def analyze(client: Client, path: Path, data: bytes | None = None) -> dict:
    UPLOADED.append(path.read_bytes() if data is None else data)
    result = client.predict(handle_file(str(path)), api_name="/analyze")
    STATS["requests served"] += 1
    return result


def call_api(url: str, endpoint: str, data: list) -> tuple[str, object]:
    """The documented plain-HTTP API (as curl uses it): returns ('complete', output) or ('error', message)."""
    event_id = httpx.post(f"{url}gradio_api/call/{endpoint}", json={"data": data}, timeout=30).json()["event_id"]
    stream = httpx.get(f"{url}gradio_api/call/{endpoint}/{event_id}", timeout=60).text
    events = re.findall(r"^event: (\w+)\ndata: (.*)$", stream, flags=re.MULTILINE)
    kind, payload = events[-1]
    return kind, json.loads(payload)


def server_file(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


WHOLE_IMAGE = False  # the endpoints' second input (analyse the whole image, no face search): the default


REFERENCES: dict[str, object] = {}


def reference(detector, entry: Entry):
    """The Python API's analysis of a valid entry's bytes, computed once."""
    if entry.name not in REFERENCES:
        REFERENCES[entry.name] = detector.analyze(entry.data)
    return REFERENCES[entry.name]


def check_result(entry: Entry, probabilities: dict, label: str, reference) -> None:
    """A valid input's result: two probabilities summing to one, equal to the Python API's."""
    assert label == reference.label
    assert set(probabilities) == {"real", "fake"}
    assert probabilities["fake"] == pytest.approx(reference.probabilities["fake"], abs=1e-5), entry.name


# --- door 1: the Python API ---------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRIES, ids=[entry.name for entry in ENTRIES])
def test_python_api(entry: Entry, corpus_dir, detector):
    STATS["inputs tried"] += 1
    path = corpus_dir / entry.file_name
    if entry.error:
        for source in (path, entry.data):
            with pytest.raises(DetectorError) as raised:
                detector.analyze(source)
            assert all(word in str(raised.value) for word in entry.error), str(raised.value)
            if entry.too_big:  # the real size, rounded up: never "10.0 MB; the limit is 10 MB"
                assert f"The file is {math.ceil(len(entry.data) * 10 / 2**20) / 10:.1f} MB" in str(raised.value)
    else:
        from_path, from_bytes = detector.analyze(path), reference(detector, entry)
        entry.check(from_path.image)
        assert from_path.label in ("real", "fake")
        assert sum(from_path.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert from_path.probabilities == pytest.approx(from_bytes.probabilities, abs=1e-6)


# --- door 2: the CLI ----------------------------------------------------------------------------


def test_cli_over_the_whole_corpus(corpus_dir, model_dir, detector):
    """One run over the folder (plus the files a folder scan skips: .pdf, .svg, .tif): every file gets a row."""
    not_scanned = [f"corpus/{e.file_name}" for e in ENTRIES if Path(e.file_name).suffix.lower() not in EXTENSIONS]
    environment = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "detector", "corpus", *not_scanned, "--model", str(model_dir), "--json",
                             "--precision", "fp32"], cwd=corpus_dir.parent, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    rows = {Path(row["file"]).name: row for row in json.loads(result.stdout)}
    assert sorted(rows) == sorted(entry.file_name for entry in ENTRIES)
    for entry in ENTRIES:
        row = rows[entry.file_name]
        if entry.error:
            assert row["label"] is None and row["probabilities"] is None
            assert all(word in row["error"] for word in entry.error), (entry.name, row["error"])
        else:
            assert row["error"] is None, (entry.name, row["error"])
            check_result(entry, row["probabilities"], row["label"], reference(detector, entry))
    STATS["inputs tried"] += len(ENTRIES)


# --- door 3: the app's API ----------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRIES, ids=[entry.name for entry in ENTRIES])
def test_app_api(entry: Entry, client, corpus_dir, detector, face_paths):
    STATS["inputs tried"] += 1
    path = corpus_dir / entry.file_name
    if entry.too_big:  # gradio_client checks the server's max_file_size before sending (the server does too: test_app)
        with pytest.raises(ValueError, match=f"exceeds the maximum file size of {10 * 1024 * 1024} bytes"):
            client.predict(handle_file(str(path)), api_name="/analyze")
    elif entry.error:
        with pytest.raises(AppError) as raised:
            analyze(client, path)
        message = str(raised.value)
        assert all(word in message for word in entry.error), message
        assert "Traceback" not in message and "File \"" not in message
    else:
        result = analyze(client, path)
        assert result["error"] is None
        check_result(entry, result["probabilities"], result["label"], reference(detector, entry))
        assert result["file"] and "/" not in result["file"] and "\\" not in result["file"]
    # and the app serves a normal photo right after
    assert analyze(client, face_paths[0])["label"] in ("real", "fake")


def test_a_batch_over_the_limit_is_refused(detector):
    with pytest.raises(gr.Error, match=f"{app_module.MAX_BATCH + 1} files: at most {app_module.MAX_BATCH} at once"):
        app_module.analyze_many(detector, ["never-read.png"] * (app_module.MAX_BATCH + 1))


@pytest.mark.parametrize(
    "path, name",
    [
        ("/tmp/gradio/0a1b/face.png", "face.png"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\Windows\\evil.png", "evil.png"),
        ("C:\\Users\\ünï\\çödé ✓.jpg", "çödé ✓.jpg"),
        ("uploads/..%2F..%2Fevil.png", "..%2F..%2Fevil.png"),
    ],
)
def test_display_name_is_a_bare_name(path, name):
    assert app_module.display_name(path) == name


def test_hostile_upload_names_stay_inside_the_cache(served, app_temp, face_paths):
    """Names sent over HTTP with real path separators: stored inside Gradio's cache, reported as bare names."""
    token = secrets.token_hex(4)
    names = [f"../../evil-{token}-1.png", f"/etc/evil-{token}-2.png", f"..\\..\\evil-{token}-3.png",
             f"ünïcødé/../../../evil-{token}-4.png", f"%2e%2e%2fevil-{token}-5.png", f"<img src=x onerror=alert(1)>{token}-6.png"]
    data = face_paths[1].read_bytes()
    response = httpx.post(f"{served}gradio_api/upload", files=[("files", (name, data)) for name in names], timeout=30)
    assert response.status_code == 200, response.text
    stored = response.json()
    UPLOADED.append(data)
    cache = get_upload_folder()
    assert all(is_in_or_equal(path, cache) for path in stored), stored

    kind, output = call_api(served, "analyze_batch", [[server_file(path) for path in stored], WHOLE_IMAGE])
    assert kind == "complete", output
    rows = output[0]
    STATS["requests served"] += 1
    assert len(rows) == len(names)
    for row in rows:
        assert row["error"] is None and row["label"] in ("real", "fake")
        assert "/" not in row["file"] and "\\" not in row["file"] and "<" not in row["file"]
        assert token in row["file"]
    assert not [path for path in stored if Path(path).exists()]  # consumed
    for folder in {app_temp, app_temp.parent, Path(cache).parent, Path.cwd(), ROOT, Path("/"), Path("/etc"), Path("/tmp")}:
        assert not list(folder.glob(f"*{token}*")), folder


def test_api_reads_and_deletes_nothing_outside_the_cache(served, app_temp, face_paths, tmp_path):
    """A caller naming a server path: files outside Gradio's cache are refused; the static examples are read, not deleted."""
    secret = tmp_path / "secret.png"
    secret.write_bytes(encode(noise(seed=99), "PNG"))
    for path in (str(secret), f"{get_upload_folder()}/../../{secret.relative_to(app_temp.parent)}", "/etc/hostname"):
        kind, output = call_api(served, "analyze", [server_file(path), WHOLE_IMAGE, False])
        assert kind == "error"
    assert secret.exists()
    kind, output = call_api(served, "analyze", [server_file(str(app_module.EXAMPLES[0])), WHOLE_IMAGE, False])
    assert kind == "complete" and output[0]["label"] in ("real", "fake")
    assert app_module.EXAMPLES[0].exists()


# --- many users at once -------------------------------------------------------------------------


@pytest.mark.slow
def test_eight_clients_at_once_get_the_sequential_results(served, face_paths):
    """8 clients × 25 requests on the example photos: no failure, each result equal to the sequential one."""
    sequential = {path.name: analyze(Client(served, verbose=False), path) for path in face_paths}
    gc.collect()
    process = psutil.Process()
    rss_before = process.memory_info().rss

    def user(index: int) -> tuple[list, list]:
        own_client, results, failures = Client(served, verbose=False), [], []
        for request in range(REQUESTS_PER_CLIENT):
            path = face_paths[(index + request) % len(face_paths)]
            try:
                results.append((path.name, own_client.predict(handle_file(str(path)), api_name="/analyze")))
            except Exception as err:  # counted, and the test fails on any
                failures.append(f"client {index} request {request}: {type(err).__name__}: {err}")
        return results, failures

    start = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        outcomes = list(pool.map(user, range(CLIENTS)))
    elapsed = time.monotonic() - start
    gc.collect()
    growth = process.memory_info().rss - rss_before

    results = [result for ok, _ in outcomes for result in ok]
    failures = [failure for _, bad in outcomes for failure in bad]
    UPLOADED.extend(path.read_bytes() for path in face_paths)
    STATS["requests served"] += len(results)
    STATS["load failures"] += len(failures)
    STATS["load seconds"] = round(elapsed, 1)
    STATS["load RSS growth MB"] = round(growth / 2**20, 1)
    assert failures == []
    assert len(results) == CLIENTS * REQUESTS_PER_CLIENT
    for name, result in results:
        expected = sequential[name]
        assert result["file"] == name and result["error"] is None and result["label"] == expected["label"]
        assert result["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
        np.testing.assert_allclose(result["cam"], expected["cam"], atol=1e-6)
        assert result["cam_box"] == pytest.approx(expected["cam_box"], abs=1e-6)
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.0f} MB"


class SlowDetector:
    """The real detector, one second slower per image: keeps the queue full long enough to overflow it."""

    def __init__(self, detector, delay: float):
        self._detector, self._delay = detector, delay

    def __getattr__(self, name):
        return getattr(self._detector, name)

    def analyze(self, image, *args, **kwargs):
        time.sleep(self._delay)
        return self._detector.analyze(image, *args, **kwargs)


def test_beyond_the_queue_a_quick_busy_answer(app_temp, detector, face_paths, monkeypatch):
    """With room for 2 waiting requests, 8 at once: the extra ones hear "Queue is full" at once, the rest are served."""
    monkeypatch.setattr(app_module, "QUEUE_SIZE", 2)
    demo = app_module.build_demo(SlowDetector(detector, delay=1.0))
    _, url, _ = app_module.launch(demo, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        start = time.monotonic()
        finished: dict[int, float] = {}
        jobs = []
        for index in range(8):
            job = client.submit(handle_file(str(face_paths[0])), api_name="/analyze")
            job.future.add_done_callback(lambda _, index=index: finished.setdefault(index, time.monotonic() - start))
            jobs.append(job)
        UPLOADED.append(face_paths[0].read_bytes())
        outcomes = []
        for job in jobs:
            try:
                outcomes.append(job.result(timeout=60))
            except QueueError as err:
                outcomes.append(err)
        busy = [index for index, outcome in enumerate(outcomes) if isinstance(outcome, QueueError)]
        served = [index for index, outcome in enumerate(outcomes) if isinstance(outcome, dict)]
        assert busy and served and len(busy) + len(served) == len(jobs), outcomes
        assert all("Queue is full" in str(outcomes[index]) for index in busy)
        assert all(outcomes[index]["label"] in ("real", "fake") for index in served)
        assert max(finished[index] for index in busy) < 10  # a quick answer, not a hang
        assert max(finished[index] for index in busy) < max(finished[index] for index in served)
        # the server's own answer, for plain-HTTP callers: 503 and Gradio's message, while the queue is full
        blocked = [client.submit(handle_file(str(face_paths[1])), api_name="/analyze") for _ in range(3)]
        join = {"data": [None], "fn_index": 0, "session_hash": "overload", "event_data": None, "trigger_id": None}
        for _ in range(30):
            response = httpx.post(f"{url}gradio_api/queue/join", json=join, timeout=10)
            if response.status_code == 503:
                break
            time.sleep(0.1)
        assert response.status_code == 503 and "Queue is full" in response.text, response.text
        for job in blocked:
            try:
                job.result(timeout=60)
            except QueueError:
                pass
        UPLOADED.append(face_paths[1].read_bytes())
        STATS["busy answers"] += len(busy)
        STATS["requests served"] += len(served)
    finally:
        demo.close()


# --- nothing kept -------------------------------------------------------------------------------


def unique_png(seed: int) -> bytes:
    return encode(noise((80, 72), seed=1000 + seed), "PNG")


def test_logs_hold_no_image_data(client, tmp_path, caplog, capfd):
    """DEBUG logs of every library and the process's stdout/stderr during good, bad and batch requests."""
    caplog.set_level(logging.DEBUG)
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(unique_png(1))
    bad.write_bytes(b"<html><body>" + unique_png(2)[:300] + b"</body></html>")
    analyze(client, good)
    with pytest.raises(AppError, match="HTML"):
        analyze(client, bad)
    UPLOADED.extend([good.read_bytes(), bad.read_bytes()])
    client.predict([handle_file(str(good)), handle_file(str(bad))], api_name="/analyze_batch")
    STATS["requests served"] += 1
    out, err = capfd.readouterr()
    text = caplog.text + out + err
    assert "data:image" not in text
    assert not re.search(r"[A-Za-z0-9+/=]{100,}", text), "a long base64-like run in the logs"
    for data in (good.read_bytes(), bad.read_bytes()):
        for start in range(0, len(data) - 32, 32):
            chunk = data[start : start + 32]
            assert chunk.decode("latin-1") not in text and chunk.hex() not in text and repr(chunk)[2:-1] not in text


def needles(uploads: list[bytes]) -> tuple[set[bytes], set[bytes]]:
    """Every aligned 64-byte block of each upload that is not plain padding (so any copied run of 127 bytes or
    more contains one), and short uploads whole. The first kilobyte of larger files is left out: JPEG headers
    and tables are the same in every file from one encoder, and are not the picture."""
    blocks, short = set(), set()
    for data in uploads:
        if 24 <= len(data) < 64:
            short.add(data)
        for start in range(1024 if len(data) > 8192 else 0, len(data) - 63, 64):
            block = data[start : start + 64]
            if len(set(block)) >= 8:
                blocks.add(block)
    return blocks, short


def files_holding(files: list[Path], uploads: list[bytes]) -> list[Path]:
    blocks, short = needles(uploads)
    holding = []
    for path in files:
        content = path.read_bytes()
        if any(content[i : i + 64] in blocks for i in range(len(content) - 63)) or any(s in content for s in short):
            holding.append(path)
    return holding


def test_the_search_finds_a_leak(tmp_path, face_paths):
    """The search itself: a copy of part of an upload, at any offset, inside another file is found."""
    upload = face_paths[2].read_bytes()
    (tmp_path / "leak.bin").write_bytes(b"x" * 7 + upload[1001:1200] + b"y" * 5)
    (tmp_path / "clean.bin").write_bytes(face_paths[3].read_bytes() + bytes(4096))
    assert files_holding(sorted(tmp_path.iterdir()), [upload]) == [tmp_path / "leak.bin"]


def test_identical_uploads_pending_together_are_each_served(app_temp):
    """Gradio stores equal bytes under an equal name at one path: the file lasts until the last request reads it."""
    path = Path(get_upload_folder()) / ("0" * 64) / "same.png"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"picture")
    uploads = app_module.UploadCounts()
    uploads.update([str(path)])
    uploads.update([str(path)])
    assert app_module.consume_upload(str(path)) == b"picture" and path.exists()
    assert app_module.consume_upload(str(path)) == b"picture"
    assert not path.parent.exists()


def test_the_page_counts_every_upload_gradio_records(detector):
    """The counting rests on two Gradio attributes (Blocks.upload_file_set, which the /upload route updates, and
    temp_file_sets, which delete_cache purges): Gradio 6.31 has no public API that says how many pending requests
    share an upload (delete_cache deletes by age; an event sees only its own path). If a release renames them,
    this fails here, rather than the count silently stopping."""
    demo = app_module.build_demo(detector)
    assert isinstance(demo.upload_file_set, app_module.UploadCounts)
    assert any(files is demo.upload_file_set for files in demo.temp_file_sets)
    demo.close()


def test_no_byte_of_any_upload_is_left_on_disk(served, app_temp, client, corpus_dir, capsys):
    """After the corpus, the load test, the busy answers and an upload the server cut off for its size."""
    big = next(entry for entry in ENTRIES if entry.name == "12 MB PNG").data
    response = httpx.post(f"{served}gradio_api/upload", files={"files": ("big.png", big)}, timeout=60)
    assert response.status_code == 413
    UPLOADED.append(big)
    analyze(client, corpus_dir / ENTRIES[-3].file_name)  # at least one upload even when run alone
    time.sleep(1)  # Gradio moves uploads into place in background tasks

    files = [path for path in app_temp.rglob("*") if path.is_file() and not path.is_symlink()]
    holding = files_holding(files, UPLOADED)
    hashes = {hashlib.sha256(data).hexdigest() for data in UPLOADED}  # Gradio names an upload's folder so
    named = [path for path in app_temp.rglob("*") if path.name in hashes]
    STATS["bytes left on disk"] = sum(path.stat().st_size for path in holding)
    STATS["files left in the temp dir"] = len(files)
    STATS["their total size"] = sum(path.stat().st_size for path in files)
    STATS["distinct uploads searched for"] = len(set(UPLOADED))
    with capsys.disabled():
        print("\nhostile input, load and privacy counts:", dict(STATS))
    assert holding == []
    assert named == []
