"""`python -m detector` as a real subprocess over real photos, a bad file, a missing path and a glob."""
from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from conftest import ROOT
from detector import NO_FACE, WHOLE_IMAGE
from scenes import TILTED_OR_COVERED, lower_covered, tilted
from detector.cli import expand


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, face_paths):
    """photos/ (4 real photos, a corrupt .jpg, a text file, a subfolder with an upper-case extension), more/ for a glob."""
    root = tmp_path_factory.mktemp("cli")
    photos, more = root / "photos", root / "more"
    (photos / "sub").mkdir(parents=True)
    (more / "deeper").mkdir(parents=True)
    for path in face_paths:
        shutil.copy(path, photos / path.name)
    shutil.copy(face_paths[0], photos / "sub" / "copy.JPEG")
    (photos / "broken.jpg").write_bytes(b"this is not a photo")
    (photos / "notes.txt").write_text("not an image, not picked up from a folder")
    Image.open(face_paths[1]).save(more / "a.png")
    Image.open(face_paths[2]).save(more / "deeper" / "b.webp", lossless=True)
    (more / "README.md").write_text("not picked up by the glob either")
    return root


def run(args: list[str], cwd, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
    environment.pop("DETECTOR_MODEL", None)
    environment.update(env)
    # fp32: results are compared with the library's to 1e-5 (bf16 is checked against fp32 in test_detector.py)
    return subprocess.run([sys.executable, "-m", "detector", *args, "--precision", "fp32"], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=300)


GOOD_PHOTOS = ["photos/fake_sdfd_1.jpg", "photos/fake_sdfd_2.jpg", "photos/real_pixabay_1.jpg",
               "photos/real_pixabay_2.jpg", "photos/sub/copy.JPEG"]


def test_json_has_one_object_per_input_in_order_and_exit_1_for_failures(inputs, model_dir):
    result = run(["photos", "missing.jpg", "more/**/*", "--model", str(model_dir), "--json", "--batch-size", "2",
                  "--target", "fake"], inputs)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    records = json.loads(result.stdout)
    assert [r["file"] for r in records] == [
        "photos/broken.jpg", *GOOD_PHOTOS, "missing.jpg", "more/a.png", "more/deeper/b.webp"]
    failed = {r["file"]: r for r in records if r["error"]}
    assert set(failed) == {"photos/broken.jpg", "missing.jpg"}
    assert "not a readable image" in failed["photos/broken.jpg"]["error"]
    assert "No such file" in failed["missing.jpg"]["error"]
    for record in records:
        assert set(record) >= {"file", "label", "probabilities", "error", "faces", "note"}
        if record["error"]:
            assert record["label"] is None and record["probabilities"] is None and record["faces"] is None
        else:
            assert record["label"] in ("real", "fake") and record["explained_class"] == "fake"
            assert set(record["probabilities"]) == {"real", "fake"}
            assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    copies = [r["probabilities"] for r in records if r["file"] in ("photos/fake_sdfd_1.jpg", "photos/sub/copy.JPEG")]
    assert copies[0] == pytest.approx(copies[1])  # same photo, same answer, whatever batch it landed in


def test_csv_and_exit_0_when_every_input_succeeds(inputs, model_dir):
    result = run(["photos/fake_sdfd_1.jpg", "photos/real_pixabay_2.jpg", "--model", str(model_dir), "--csv"], inputs)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["file"] for row in rows] == ["photos/fake_sdfd_1.jpg", "photos/real_pixabay_2.jpg"]
    for row in rows:
        assert list(row) == ["file", "label", "p_real", "p_fake", "error", "faces", "verdict", "frames_flagged", "frames_read"]
        assert row["frames_flagged"] == row["frames_read"] == ""
        assert row["error"] == "" and row["label"] in ("real", "fake") and row["faces"] == "1"
        assert float(row["p_real"]) + float(row["p_fake"]) == pytest.approx(1.0, abs=1e-5)


def test_table_names_every_file_and_uses_the_model_from_the_environment(inputs, model_dir):
    result = run(["photos", "missing.jpg"], inputs, DETECTOR_MODEL=str(model_dir))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["file", "verdict", "p_fake", "faces", "error"]
    for name in ["photos/broken.jpg", *GOOD_PHOTOS, "missing.jpg"]:
        assert any(line.startswith(name + " ") for line in lines), name
    assert "No such file" in next(line for line in lines if line.startswith("missing.jpg"))


def test_a_model_that_cannot_be_loaded_exits_2_with_one_line(inputs, tmp_path):
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text("{not json")
    for model in (tmp_path / "no-such-model", no_weights):
        result = run(["photos", "--model", str(model)], inputs)
        assert result.returncode == 2
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert str(model) in result.stderr


def test_expand_folders_globs_and_missing_paths(inputs, monkeypatch):
    monkeypatch.chdir(inputs)
    (inputs / "empty").mkdir(exist_ok=True)
    assert list(expand(["photos/sub", "photos/sub/copy.JPEG", "more/*.PNG", "nothing*", "empty", "photos/notes.txt"])) == [
        ("photos/sub/copy.JPEG", None),  # given twice: listed once
        ("more/*.PNG", "No such file, and no images match it as a pattern."),  # glob matches are case-sensitive
        ("nothing*", "No such file, and no images match it as a pattern."),
        ("empty", "No images (.jpg, .jpeg, .png, .webp, .gif, .heic, .heif) in this folder."),
        ("photos/notes.txt", None),  # a file named explicitly is tried (and load_image says what is wrong)
    ]


def test_faces_are_listed_and_whole_image_mode_skips_the_search(inputs, model_dir, face_paths, detector):
    """A composed 4-face picture, a wall with no face, one tight face crop: JSON with and without --whole-image."""
    from scenes import background, four_faces

    four_faces(face_paths)[0].save(inputs / "group.png")
    background((400, 300)).save(inputs / "wall.png")
    files = ["group.png", "wall.png", "photos/fake_sdfd_1.jpg"]
    searched = run([*files, "--model", str(model_dir), "--json"], inputs)
    whole = run([*files, "--model", str(model_dir), "--json", "--whole-image"], inputs)
    assert searched.returncode == whole.returncode == 0, searched.stderr + whole.stderr
    group, wall, single = json.loads(searched.stdout)
    assert len(group["faces"]) == 4 and group["note"] is None
    for face in group["faces"]:
        assert set(face) == {"box", "landmarks", "crop", "label", "verdict", "probabilities"} and len(face["box"]) == 4
        assert face["label"] == max(face["probabilities"], key=face["probabilities"].get)
    assert group["probabilities"] == max((f["probabilities"] for f in group["faces"]), key=lambda p: p["fake"])
    assert wall["faces"] == [] and wall["note"] == NO_FACE
    assert len(single["faces"]) == 1
    expected = detector.analyze(inputs / "group.png", faces=True)
    assert [f["box"] for f in group["faces"]] == [list(f.box) for f in expected.faces]
    assert group["probabilities"]["fake"] == pytest.approx(expected.p_fake, abs=1e-5)
    for record, path in zip(json.loads(whole.stdout), files):
        assert record["faces"] == [] and record["note"] == WHOLE_IMAGE
        assert record["probabilities"]["fake"] == pytest.approx(detector.analyze(inputs / path, faces=False).p_fake, abs=1e-5)


def test_videos_named_on_the_command_line_get_frames_flagged_and_no_verdict(inputs, model_dir, face_paths, detector):
    """A video's row says how many of its frames read were flagged at the image threshold; it has no label, verdict or
    probability of its own (no video-level threshold was fitted), in JSON, the table and the CSV alike."""
    from scenes import write_video

    from detector.video import analyze_video

    write_video(inputs / "clip.mp4", face_paths, seconds=4, fps=8)
    (inputs / "broken.mov").write_bytes(b"\x00\x00\x00\x14ftypqt  " + b"\x00" * 200)
    result = run(["clip.mp4", "photos/fake_sdfd_1.jpg", "broken.mov", "--model", str(model_dir), "--json", "--frames", "8"],
                 inputs)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    clip, photo, broken = json.loads(result.stdout)
    expected = analyze_video(detector, inputs / "clip.mp4", frames=8)
    assert clip["file"] == "clip.mp4" and clip["error"] is None and clip["rule"] == expected.rule
    assert [frame["index"] for frame in clip["frames"]] == [frame.index for frame in expected.frames]
    assert (clip["frames_flagged"], clip["frames_read"]) == (expected.frames_flagged, 8)
    assert clip["summary"] == expected.summary and not {"label", "verdict", "probabilities"} & set(clip)
    assert photo["error"] is None and len(photo["faces"]) == 1
    assert broken["frames_read"] is None and broken["frames_flagged"] is None and "corrupt" in broken["error"]
    table = run(["clip.mp4", "--model", str(model_dir), "--per-second"], inputs)
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith("clip.mp4"))
    per_second = analyze_video(detector, inputs / "clip.mp4", every_seconds=1.0)
    assert f"{per_second.frames_flagged} of 4 frames flagged" in row and "video: 4 frames" in row
    assert "likely" not in row and "uncertain" not in row
    assert "videos: a frame is flagged when its p_fake reaches the image threshold" in table.stderr
    lines = list(csv.DictReader(io.StringIO(run(["clip.mp4", "--model", str(model_dir), "--csv", "--frames", "8"],
                                                inputs).stdout)))
    assert [(r["frames_flagged"], r["frames_read"], r["label"], r["p_fake"], r["verdict"]) for r in lines] == [
        (str(expected.frames_flagged), "8", "", "", "")]


def test_report_writes_one_html_file_per_image_with_its_provenance(inputs, model_dir, tmp_path):
    """--report DIR: one self-contained report per analysed image, named after it; the JSON row says where."""
    from pathlib import Path

    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a face\nSteps: 20, Sampler: Euler a, Seed: 3")
    generated = tmp_path / "my photo <1>.png"
    Image.open(inputs / "photos" / "real_pixabay_1.jpg").save(generated, pnginfo=info)
    reports = tmp_path / "reports" / "new"
    result = run([str(generated), "photos/real_pixabay_1.jpg", "photos/sub/copy.JPEG", "photos/broken.jpg",
                  "--model", str(model_dir), "--json", "--report", str(reports)], inputs)
    assert result.returncode == 1 and "Traceback" not in result.stderr  # broken.jpg fails, the others are reported
    records = {Path(r["file"]).name: r for r in json.loads(result.stdout)}
    assert sorted(p.name for p in reports.iterdir()) == [
        "copy.JPEG.report.html", "my_photo_1_.png.report.html", "real_pixabay_1.jpg.report.html"]
    mine = records["my photo <1>.png"]
    assert mine["report"] == str(reports / "my_photo_1_.png.report.html")
    assert [f["strength"] for f in mine["provenance"]] == ["declared"] and mine["provenance"][0]["source"] == "png-text"
    assert mine["provenance_level"] == "declared" and "not verified" in mine["provenance_summary"]  # unsigned text
    document = Path(mine["report"]).read_text(encoding="utf-8")
    assert html.escape(mine["provenance_summary"]) in document  # the report says what the JSON says
    assert "my photo &lt;1&gt;.png" in document and "Stable Diffusion web UI" in document
    shown = re.search(r"probability that this face is fake: ([\d.]+)%", document)
    assert shown and abs(float(shown.group(1)) - mine["probabilities"]["fake"] * 100) < 0.5
    assert records["broken.jpg"]["report"] is None and records["broken.jpg"]["error"]
    assert records["real_pixabay_1.jpg"]["provenance"][0]["kind"] == "none"
    assert records["real_pixabay_1.jpg"]["provenance_level"] is None
    assert records["broken.jpg"]["provenance_level"] is None and records["broken.jpg"]["provenance_summary"] is None


def test_report_folder_that_cannot_be_made_is_a_usage_error(inputs, model_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run(["photos/real_pixabay_1.jpg", "--model", str(model_dir), "--report", str(blocker / "reports")], inputs)
    assert result.returncode == 2 and "--report: cannot create the folder" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not TILTED_OR_COVERED.is_file(), reason="needs ../shared/data")
def test_a_tilted_and_a_half_covered_face_are_found_from_the_command_line(inputs, model_dir):
    """An FFHQ photograph turned by 60° and one with its lower part covered (both missed by the Haar cascades the
    finder replaced): each is judged on its face, with the face's five landmarks."""
    photo = Image.open(TILTED_OR_COVERED).convert("RGB")
    tilted(photo).save(inputs / "tilted.png")
    lower_covered(photo).save(inputs / "covered.png")
    result = run(["tilted.png", "covered.png", "--model", str(model_dir), "--json"], inputs)
    assert result.returncode == 0, result.stderr
    for record in json.loads(result.stdout):
        assert len(record["faces"]) == 1 and record["note"] is None, record["file"]
        assert len(record["faces"][0]["landmarks"]) == 5
