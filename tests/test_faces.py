"""Face finding (YuNet with five landmarks) and face-aware analysis on real photos and a composed 4-face picture."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA
from detector import NO_FACE, WHOLE_IMAGE, Detector, load_image
from detector.verdicts import VERDICT_COLOURS
from detector.faces import Face, FaceFinder, crop_box, face_square, find_faces
from scenes import TILTED_OR_COVERED, background, centre_inside, four_faces, lower_covered, tilted

needs_shared = pytest.mark.skipif(not (SHARED_DATA / "manifest.csv").is_file(), reason="needs ../shared/data")


@pytest.fixture(scope="module")
def four(face_paths):
    return four_faces(face_paths)


def test_one_face_is_found_in_each_example_photo_with_its_landmarks_in_place(face_paths):
    for path in face_paths:
        image = load_image(path)
        faces = find_faces(image)
        assert len(faces) == 1, path.name
        face = faces[0]
        left, top, right, bottom = face.box
        assert 0 <= left < right <= image.width and 0 <= top < bottom <= image.height
        assert (right - left) * (bottom - top) > 0.2 * image.width * image.height  # tight crops: a big face
        (eye_l, eye_r, nose, mouth_l, mouth_r) = face.landmarks
        assert eye_l[0] < nose[0] < eye_r[0] and mouth_l[0] < mouth_r[0]  # left to right as the picture shows
        assert max(eye_l[1], eye_r[1]) < nose[1] < min(mouth_l[1], mouth_r[1])  # eyes, then nose, then mouth
        assert 0.5 < face.score <= 1 and abs(face.roll) < 20


def test_every_face_of_a_composed_picture_is_found_in_its_place(four):
    picture, placed = four
    faces = find_faces(picture)
    assert len(faces) == 4
    assert all(sum(centre_inside(face.box, region) for face in faces) == 1 for region in placed)


@pytest.mark.parametrize("image", [
    background(),
    Image.new("RGB", (320, 240), (128, 128, 128)),
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)),
], ids=["gradient", "grey", "noise"])
def test_no_face_in_pictures_without_one(image):
    assert find_faces(image) == []


def test_faces_are_found_in_a_large_photo_and_mapped_back_to_its_pixels(four):
    """A 4000-px picture is searched at 320 px; the boxes and landmarks still land on the full-size faces."""
    picture, placed = four
    large = picture.resize((picture.width * 4, picture.height * 4), Image.Resampling.BICUBIC)
    faces = find_faces(large)
    assert len(faces) == 4
    for region in placed:
        big = tuple(4 * v for v in region)
        (face,) = [face for face in faces if centre_inside(face.box, big)]
        assert all(big[0] <= x < big[2] and big[1] <= y < big[3] for x, y in face.landmarks)


@needs_shared
def test_recall_on_the_shared_face_photos():
    """The first 5 photos of every source (60 face photos): benchmarks/face_recall.py measures all 14k."""
    by_source: dict[str, list[str]] = {}
    with (SHARED_DATA / "manifest.csv").open() as f:
        for row in csv.DictReader(f):
            by_source.setdefault(row["source"], []).append(row["file"])
    files = [file for source in sorted(by_source) for file in sorted(by_source[source])[:5]]
    found = sum(bool(find_faces(load_image(SHARED_DATA / file))) for file in files)
    assert found / len(files) >= 0.95, f"{found}/{len(files)}"


@needs_shared
@pytest.mark.parametrize("angle", [60, 90, -90])
def test_a_turned_face_is_found_and_its_landmarks_turn_with_it(angle):
    """Turned by 90° an upright search finds nothing or forces upright landmarks on the face; the quarter-turn
    search finds it lying down and turns its landmarks back: the eye-to-mouth line turns with the photo."""
    upright = load_image(TILTED_OR_COVERED)
    (face,) = find_faces(upright)
    turned = tilted(upright, angle)
    (found,) = find_faces(turned)
    points = np.asarray(found.landmarks)
    eyes, mouth = points[:2].mean(axis=0), points[3:].mean(axis=0)
    down = np.degrees(np.arctan2(mouth[1] - eyes[1], mouth[0] - eyes[0]))  # 90: the mouth straight below the eyes
    assert abs((down - (90 - angle) + 180) % 360 - 180) < 30, down
    assert centre_inside(found.box, (0, 0, turned.width, turned.height))
    assert face_square(found)[2] == pytest.approx(face_square(face)[2], rel=0.3)  # the same face, the same size


@needs_shared
def test_a_face_whose_lower_part_is_covered_is_found():
    faces = find_faces(lower_covered(load_image(TILTED_OR_COVERED)))
    assert len(faces) == 1 and faces[0].box[1] < 0.55 * load_image(TILTED_OR_COVERED).height


def face_at(eye_l, eye_r, mouth_l, mouth_r) -> Face:
    nose = ((eye_l[0] + eye_r[0]) / 2, (eye_l[1] + mouth_l[1]) / 2)
    return Face((0, 0, 1, 1), (eye_l, eye_r, nose, mouth_l, mouth_r), 0.9)


@pytest.mark.parametrize(
    "face, size, expected",
    [
        # eyes 40 apart, mouth 40 below them: side 1.29 × max(80, 72) = 103.2 (124 with the margin), centre 0.32 of
        # the way from the eyes to the mouth (100, 112.8)
        (face_at((80, 100), (120, 100), (85, 140), (115, 140)), (1000, 1000), (38, 51, 162, 175)),
        # the same face lying on its side: the same square, turned about its centre
        (face_at((100, 120), (100, 80), (140, 115), (140, 85)), (1000, 1000), (51, 38, 175, 162)),
        # turned away: the eyes close together, the mouth's distance gives the size (1.29 × 1.8 × 50 = 116.1)
        (face_at((95, 100), (115, 100), (98, 150), (112, 150)), (1000, 1000), (36, 46, 175, 185)),
        (face_at((10, 10), (50, 10), (15, 50), (45, 50)), (1000, 1000), (0, 0, 124, 124)),  # moved inside, still square
        (face_at((60, 60), (100, 60), (65, 100), (95, 100)), (150, 120), (18, 0, 142, 120)),  # clipped to the image
    ],
)
def test_crop_box_is_the_landmark_square_with_margin_moved_inside_and_clipped(face, size, expected):
    assert crop_box(face, size, margin=0.1) == expected


def test_a_face_round_trips_through_its_dict():
    """The face cache of training keeps faces as these dicts: landmarks to a tenth of a pixel."""
    face = face_at((80.5, 100), (120.1, 100.3), (85, 140), (115, 140.9))  # the nose at (100.3, 120)
    assert Face.from_dict(json.loads(json.dumps(face.to_dict()))) == face


@needs_shared
def test_the_face_of_a_close_portrait_is_judged_not_the_small_face_behind_it():
    """FFHQ photo 04142: a man's face fills the frame, a small face in the crowd behind him: the large face comes
    first."""
    image = load_image(SHARED_DATA / "ffhq_sample" / "real" / "04142.jpg")
    left, top, right, bottom = find_faces(image)[0].box
    assert left <= image.width / 2 <= right and top <= image.height / 2 <= bottom
    assert right - left > 0.4 * image.width


# --- face-aware analysis ----------------------------------------------------------------------------


def test_face_analysis_equals_analysing_the_crop(detector, face_paths):
    for path in face_paths:
        image = load_image(path)
        analysis = detector.analyze(image, faces=True)
        assert analysis.note is None and len(analysis.faces) == 1
        face = analysis.faces[0]
        assert face.crop == crop_box(face.face, image.size, detector.face_margin)
        direct = detector.analyze(image.crop(face.crop), faces=False)
        assert face.probabilities == pytest.approx(direct.probabilities, abs=1e-5)
        assert np.allclose(face.analysis.cam, direct.cam, atol=1e-4)
        assert analysis.probabilities == face.probabilities and analysis.label == face.label


def test_the_verdict_is_the_most_suspicious_face_and_every_cam_lands_on_its_face(detector, four):
    picture, placed = four
    analysis = detector.analyze(picture, faces=True)
    assert len(analysis.faces) == 4
    top = max(analysis.faces, key=lambda face: face.p_fake)
    assert analysis.p_fake == top.p_fake and analysis.label == top.label and analysis.box == top.cam_box
    heat = analysis.activation_map()
    assert heat.shape == (picture.height, picture.width)
    inside = np.zeros(heat.shape, dtype=bool)
    for face in analysis.faces:
        left, top_, right, bottom = face.crop
        inside[top_:bottom, left:right] = True
        assert heat[top_:bottom, left:right].max() > 0  # each face's own CAM is drawn over it
    assert heat[~inside].max() == 0  # and nothing outside the crops


def test_no_face_means_the_whole_image_and_a_plain_note(detector):
    wall = background((400, 300))
    analysis = detector.analyze(wall, faces=True)
    assert analysis.faces == [] and analysis.note == NO_FACE
    assert analysis.probabilities == pytest.approx(detector.analyze(wall, faces=False).probabilities, abs=1e-6)
    assert detector.analyze(wall).note == NO_FACE  # face search is the default


def test_the_whole_image_asked_for_says_its_thresholds_were_fitted_on_face_crops(detector, face_paths):
    """The thresholds are fitted through face search; a whole-image analysis must say it was judged another way."""
    assert detector.analyze(face_paths[0]).faces  # the default searches faces: the fitted path
    whole = detector.analyze(face_paths[0], faces=False)
    assert whole.faces == [] and whole.note == WHOLE_IMAGE and "fitted on face crops" in WHOLE_IMAGE
    assert json.loads(json.dumps(whole.to_dict()))["note"] == WHOLE_IMAGE


def test_face_batches_equal_one_by_one(detector, face_paths, four):
    images = [four[0], face_paths[0], background((300, 300)), face_paths[3]]
    small_batches = Detector(detector.loaded, device="cpu", batch_size=3, precision="fp32")
    for batched, image in zip(small_batches.analyze_batch(images, faces=True), images):
        single = detector.analyze(image, faces=True)
        assert [f.box for f in batched.faces] == [f.box for f in single.faces]
        assert batched.probabilities == pytest.approx(single.probabilities, abs=1e-5)
        assert batched.note == single.note


def test_target_is_explained_in_every_face(detector, four):
    analysis = detector.analyze(four[0], target="real", faces=True)
    assert {face.analysis.explained for face in analysis.faces} == {"real"} and analysis.explained == "real"


def test_render_frames_each_face_in_its_verdict_colour(detector, four):
    picture, _ = four
    analysis = detector.analyze(picture, faces=True)
    original, heat, overlay = analysis.render()
    assert original.size == heat.size == overlay.size == picture.size
    for view in (original, overlay):
        for face in analysis.faces:
            left, top, right, bottom = face.box
            assert view.getpixel(((left + right) // 2, bottom - 1)) == VERDICT_COLOURS[face.verdict]
    plain = analysis.render(boxes=False)[0]
    assert plain.tobytes() == picture.tobytes()
    small = analysis.render(max_side=500)
    assert small[0].size == (500, 400)


def test_to_dict_lists_the_faces(detector, four):
    record = json.loads(json.dumps(detector.analyze(four[0], faces=True).to_dict()))
    assert len(record["faces"]) == 4 and record["note"] is None
    for face in record["faces"]:
        assert set(face) == {"box", "landmarks", "crop", "label", "verdict", "probabilities"} and len(face["box"]) == 4
        assert set(face["landmarks"]) == {"eye_left", "eye_right", "nose", "mouth_left", "mouth_right"}


def test_a_face_box_never_reads_certain(monkeypatch):
    """A box read "likely fake, p(fake) 1.00" beside a reading that never says 100%."""
    from PIL import ImageDraw

    from detector.explain import draw_faces

    written = []
    original = ImageDraw.ImageDraw.text
    monkeypatch.setattr(ImageDraw.ImageDraw, "text", lambda self, xy, text, *a, **k: (written.append(text),
                                                                                       original(self, xy, text, *a, **k)))
    draw_faces(Image.new("RGB", (200, 100)), [((10, 30, 60, 90), "likely fake", 0.9996), ((110, 30, 160, 90), "likely real", 0.001)])
    assert written == ["likely fake, p(fake) 0.99", "likely real, p(fake) 0.01"]
