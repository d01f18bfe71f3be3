"""The HTML report: self-contained, complete, escaped, and the same from the library, the CLI and the app."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import re

import pytest
from PIL import Image

from detector.evidence_report import (decimals, decision_rule, examine, model_identity, percent, report_filename, report_html,
                                      verdict_headline)
from test_provenance import jpeg, make_signer, picture, sign


@pytest.fixture(scope="module")
def signed_face(face_paths) -> bytes:
    """A real face photo, re-saved and signed with Content Credentials that declare it AI-generated."""
    return sign(make_signer(), jpeg(Image.open(face_paths[0]).convert("RGB")))


def images_in(document: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(payload)))
            for payload in re.findall(r'src="data:image/(?:png|jpeg);base64,([^"]+)"', document)]


def test_report_holds_everything_inline(detector, signed_face):
    evidence = examine(detector, signed_face, "face <signed>.jpg")
    document = report_html(evidence, detector)
    assert document.startswith("<!DOCTYPE html>") and "</html>" in document
    assert not re.search(r'(src|href)="(?!data:)', document)  # nothing outside the file
    assert "face &lt;signed&gt;.jpg" in document and "<signed>" not in document  # the name is escaped
    assert hashlib.sha256(signed_face).hexdigest() == evidence.sha256 and evidence.sha256 in document
    assert f"{len(signed_face):,} bytes" in document
    identity = model_identity(detector)
    assert identity["weights_sha256"] in document and len(identity["weights_sha256"]) == 64
    assert str(identity["model"]) in document and "local folder" in identity["revision"]
    assert decision_rule(detector, evidence.analysis.p_fake).split(" (")[0] in document.replace("&gt;", ">").replace("&lt;", "<")
    p_fake = evidence.analysis.p_fake
    assert f"probability that this face is fake: {percent(p_fake, decimals(p_fake, detector))}" in document
    for key in ('id="original"', 'id="activation-map"', 'id="overlay"', 'id="spectrum"', 'id="provenance"'):
        assert key in document
    assert "trainedAlgorithmicMedia" in document and "AI origin declared, not verified" in document  # a test CA
    assert "Known limits" in document and "@media print" in document
    pictures = images_in(document)
    assert len(pictures) >= 4 + len(evidence.analysis.faces) and all(p.size[0] > 0 for p in pictures)


@pytest.mark.parametrize("case, level", [("manifest copied onto a real photo", "weak"),
                                         ("signed by a signer on no trust list", "declared"),
                                         ("signed by a signer on the trust list", "strong")])
def test_the_page_the_json_and_the_report_weigh_credentials_alike(detector, face_paths, tmp_path, monkeypatch, case,
                                                                   level):
    """Strength follows validity, and has one home (detector.provenance): the page's reading and panel, the JSON
    row and the report say the same level, and "strong evidence" only for valid credentials from a trusted signer.
    A real photo carrying the manifest of a generated picture was reported as strong evidence that it is generated."""
    import html

    import app
    from detector import provenance
    from test_provenance import make_credentials, transplant

    signer, ca = make_credentials()
    photo = jpeg(Image.open(face_paths[0]).convert("RGB"))
    data = transplant(sign(signer, jpeg(picture(4, (128, 96)))), photo) if level == "weak" else sign(signer, photo)
    if level == "strong":
        (tmp_path / "anchors.pem").write_text(ca)
        monkeypatch.setenv(provenance.TRUST_ANCHORS_ENV, str(tmp_path / "anchors.pem"))
    evidence = examine(detector, data, "face.jpg")
    said = provenance.summary(evidence.findings)
    strong = level == "strong"
    assert ("strong evidence" in said) == strong and ("weak evidence at most" in said.lower()) == (level == "weak")
    document = report_html(evidence, detector)
    (shown_class, shown) = re.search(r'<p class="(\w+)" id="declared">(.*?)</p>', document, re.S).groups()
    assert shown_class == level and html.escape(said) in shown
    assert ("strong evidence" in shown) == strong
    assert (f'<td class="strong">{provenance.STRENGTH_WORDS["strong"]}' in document) == strong
    text = app.reading(evidence.analysis, detector, evidence.findings)
    assert said in text and app.STRENGTH_ICONS[level] + " **What the file declares" in text
    assert ("strong evidence" in text.lower()) == strong
    panel = app.provenance_markdown(evidence.findings)
    assert app.STRENGTH_MARKS[level] in panel and (app.STRENGTH_MARKS["strong"] in panel) == strong
    row = provenance.fields(evidence.findings)  # what the command line's and the API's JSON rows hold
    assert row["provenance_level"] == level and row["provenance_summary"] == said
    assert {f["strength"] for f in row["provenance"]} >= {level}


def test_report_lists_every_face_with_its_box(detector, face_paths):
    from scenes import four_faces

    data = io.BytesIO()
    four_faces(face_paths)[0].save(data, "JPEG")
    evidence = examine(detector, data.getvalue(), "group.jpg")
    document = report_html(evidence, detector)
    assert len(evidence.analysis.faces) >= 2
    for face in evidence.analysis.faces:
        assert "[" + ", ".join(f"{v:.0f}" for v in face.box) + "]" in document
        assert f"<td>{percent(face.probabilities['fake'], 1)}</td>" in document  # never 1.0000 or 100%


def test_report_without_face_or_metadata_says_so(detector):
    evidence = examine(detector, jpeg(picture(5, (160, 120))), "noise.jpg", faces=True)
    document = report_html(evidence, detector)
    assert "No provenance metadata found" in document and "not evidence that the picture is real" in document
    assert "no face found" in document


@pytest.mark.parametrize("name, expected", [("photo.jpg", "photo.jpg.report.html"),
                                            ("../../etc/passwd", "passwd.report.html"),
                                            ("a b<c>.png", "a_b_c_.png.report.html"), ("", "image.report.html"),
                                            ("C:\\Users\\x\\shot 1.jpeg", "shot_1.jpeg.report.html")])
def test_report_file_names_are_safe(name, expected):
    assert report_filename(name) == expected


@pytest.mark.parametrize("p, words", [(0.9976, "more than 99%"), (0.995, "more than 99%"), (0.994, "99%"), (0.5, "50%"),
                                      (0.006, "1%"), (0.0024, "less than 1%"), (0.0, "less than 1%")])
def test_a_probability_is_never_shown_as_certain(p, words):
    assert percent(p) == words


@pytest.mark.parametrize("verdict, p, words", [
    ("uncertain", 0.8, "Uncertain: the model cannot tell whether this is a real photo or a fake (p(fake) 80%)"),
    ("likely real", 0.05, "Likely a real photo (p(fake) 5%)"),
    ("likely fake", 0.97, "Likely fake: generated or manipulated (p(fake) 97%)"),
])
def test_the_headline_is_the_verdict_in_plain_words_with_its_probability(verdict, p, words):
    assert verdict_headline(verdict, p) == words


def test_a_confident_verdict_reads_more_than_99_not_100(tmp_path):
    """The bundled weights with their calibration sharpened three-fold (its log-odds × 3) give
    examples/fake_sdfd_1.jpg a p(fake) above 0.995: the page and the report say "more than 99%", never 100%."""
    import shutil

    import app
    from conftest import EXAMPLES
    from detector import Detector
    from detector.calibration import WEIGHTS_KEY
    from detector.model import BUNDLED_MODEL

    folder = tmp_path / "sharp"
    shutil.copytree(BUNDLED_MODEL, folder)
    config = json.loads((folder / "config.json").read_text())
    block = config["calibration"]
    block[WEIGHTS_KEY] = {name: weight * 3 for name, weight in block[WEIGHTS_KEY].items()}
    block["bias"] *= 3
    (folder / "config.json").write_text(json.dumps(config))
    detector = Detector.from_pretrained(folder)
    evidence = examine(detector, (EXAMPLES / "fake_sdfd_1.jpg").read_bytes(), "fake_sdfd_1.jpg")
    assert evidence.analysis.p_fake > 0.995 and evidence.analysis.label == "fake"
    text = app.reading(evidence.analysis, detector)
    assert "probability that this face is fake: more than 99% (that it is real: less than 1%)" in text
    assert "100%" not in text and " 0% " not in text
    assert "probability that this face is fake: more than 99%" in report_html(evidence, detector)


def test_a_score_just_under_the_threshold_never_reads_as_reaching_it(model_dir, tmp_path, face_paths):
    """Threshold 0.8184, p(fake) 0.8176: the report said "probability 82% … flags an image when p(fake) ≥ 82%".
    The score and the thresholds are now rounded alike, with the decimals that keep their order."""
    import dataclasses
    import json

    import app
    from detector import Detector

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(model_dir / "model.safetensors")
    config = json.loads((model_dir / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "calibration": {"threshold": 0.8184, "lower_threshold": 0.3}}))
    detector = Detector.from_pretrained(folder)
    evidence = examine(detector, face_paths[0].read_bytes(), "face.jpg")
    near = dataclasses.replace(evidence.analysis, verdict="uncertain", probabilities={"real": 0.1824, "fake": 0.8176})
    document = report_html(dataclasses.replace(evidence, analysis=near), detector).replace("&quot;", '"')
    assert "p(fake) 81.76%" in document and "p(fake) ≥ 81.84%" in document and "≥ 82%" not in document
    reading = app.page_result(near, detector)[2]
    assert "(p(fake) 81.76%)" in reading and "p(fake) ≥ 81.84%" in reading
    whole = dataclasses.replace(near, faces=[])
    assert "probability that this image is fake" in app.page_result(whole, detector)[2]
    far = dataclasses.replace(near, verdict="likely fake", probabilities={"real": 0.05, "fake": 0.95})
    assert "(p(fake) 95%)" in app.page_result(far, detector)[2]  # whole percents where they suffice


def test_the_faces_table_never_shows_certainty():
    assert percent(0.99996, 1) == "more than 99%" and percent(0.00004, 1) == "less than 1%"
    assert percent(0.8176, 2) == "81.76%" and percent(0.5) == "50%"
