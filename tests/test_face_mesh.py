"""The PyTorch port of MediaPipe's Face Mesh (training/face_mesh.py) and its landmark cache.

Needs ../shared/pretrained/face_landmark/face_landmark.tflite and shared face photos: skipped without them."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from conftest import photos
from detector.images import open_file_rgb
from training import face_mesh
from training.face_mesh import (DEFAULT_PATH, FACE_OVAL, LEFT_EYE, MOUTH, NOSE_TIP, RIGHT_EYE, FaceMesh, FaceMeshError,
                                LandmarkCache, face_landmarks, fingerprint)

needs_file = pytest.mark.skipif(not DEFAULT_PATH.is_file(), reason=f"no Face Mesh file at {DEFAULT_PATH} (../shared)")
PHOTOS = [*photos("ffhq_photos", "real", 2), *photos("london_studio", "real", 1), *photos("celebrity_photos", "real", 1)]
needs_photos = pytest.mark.skipif(not PHOTOS, reason="no shared face photos (../shared/data)")


@pytest.fixture(scope="module")
def mesh() -> FaceMesh:
    if not DEFAULT_PATH.is_file():
        pytest.skip(f"no Face Mesh file at {DEFAULT_PATH} (../shared)")
    return FaceMesh.from_tflite(DEFAULT_PATH)


def centre(points: np.ndarray, indices) -> np.ndarray:
    return points[list(indices), :2].mean(axis=0)


def inside_hull(points: np.ndarray, query: np.ndarray) -> bool:
    import cv2

    hull = cv2.convexHull(points.astype(np.float32))
    return cv2.pointPolygonTest(hull, (float(query[0]), float(query[1])), False) > 0


@needs_file
def test_port_matches_the_tflite_interpreter(mesh):
    """Where a TFLite interpreter is installed (a check only, not a dependency), the port gives its numbers."""
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="no TFLite interpreter installed (ai-edge-litert)")
    interpreter = litert.Interpreter(model_path=str(DEFAULT_PATH))
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]["index"]
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(0, 1, (192, 192, 3)).astype(np.float32)]
    inputs += [np.asarray(open_file_rgb(p).resize((192, 192)), np.float32) / 255 for p in PHOTOS[:2]]
    for x in inputs:
        interpreter.set_tensor(source, x[None])
        interpreter.invoke()
        outputs = {o["name"]: interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()}
        expected_points = next(v for v in outputs.values() if v.size == 1404).reshape(468, 3)
        expected_flag = next(v for v in outputs.values() if v.size == 1).item()
        with torch.no_grad():
            points, flag = mesh(torch.from_numpy(x).permute(2, 0, 1)[None])
        assert np.abs(points[0].numpy() - expected_points).max() < 1e-3  # pixels of the 192-pixel crop
        assert abs(flag.item() - expected_flag) < 1e-3


@needs_file
@needs_photos
@pytest.mark.parametrize("index", range(len(PHOTOS)))
def test_landmarks_sit_on_the_face(mesh, index):
    """468 points inside the picture, the subject's right eye left of the nose and the left eye right of it, the
    eyes above the nose, the nose above the mouth, and the face oval's hull round eyes, nose and mouth."""
    photo = open_file_rgb(PHOTOS[index])
    found = face_landmarks(mesh, photo)
    assert found is not None and found.score > 0.9
    points = found.points
    assert points.shape == (468, 3)
    assert (points[:, 0] > -1).all() and (points[:, 0] < photo.width + 1).all()
    assert (points[:, 1] > -1).all() and (points[:, 1] < photo.height + 1).all()
    right_eye, left_eye = centre(points, RIGHT_EYE), centre(points, LEFT_EYE)
    nose, mouth = points[NOSE_TIP, :2], centre(points, MOUTH)
    assert right_eye[0] < nose[0] < left_eye[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]
    eye_distance = np.linalg.norm(left_eye - right_eye)
    assert 0.1 * min(photo.size) < eye_distance < 0.6 * min(photo.size)
    oval = points[list(FACE_OVAL), :2]
    for inner in (right_eye, left_eye, nose, mouth):
        assert inside_hull(oval, inner)


@needs_file
@needs_photos
@pytest.mark.parametrize("index", range(len(PHOTOS)))
def test_mirrored_photo_gives_mirrored_landmarks(mesh, index):
    """In the mirrored photo the subject's left eye lands where the right eye was (mirrored), and the nose where the
    nose was, within 10% of the eye distance."""
    photo = open_file_rgb(PHOTOS[index])
    found, mirrored = face_landmarks(mesh, photo), face_landmarks(mesh, ImageOps.mirror(photo))
    assert found is not None and mirrored is not None

    def flip(point):
        return np.array([photo.width - point[0], point[1]])

    eye_distance = np.linalg.norm(centre(found.points, LEFT_EYE) - centre(found.points, RIGHT_EYE))
    assert np.linalg.norm(flip(centre(mirrored.points, LEFT_EYE)) - centre(found.points, RIGHT_EYE)) < 0.1 * eye_distance
    assert np.linalg.norm(flip(centre(mirrored.points, RIGHT_EYE)) - centre(found.points, LEFT_EYE)) < 0.1 * eye_distance
    assert np.linalg.norm(flip(mirrored.points[NOSE_TIP]) - found.points[NOSE_TIP, :2]) < 0.1 * eye_distance


@needs_file
def test_no_face_no_landmarks(mesh):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (192, 192, 3), dtype=np.uint8))
    assert face_landmarks(mesh, noise, box=(0, 0, 192, 192)) is None


@needs_file
@needs_photos
def test_tilted_face_is_levelled(mesh):
    """The second pass crops along the eye line: a photo turned by 25° gives the eye line turned by 25° (±5°)."""
    photo = open_file_rgb(PHOTOS[0])
    found = face_landmarks(mesh, photo)
    turned = face_landmarks(mesh, photo.rotate(25, resample=Image.Resampling.BICUBIC, expand=True))
    assert found is not None and turned is not None

    def roll(points):
        (rx, ry), (lx, ly) = centre(points, RIGHT_EYE), centre(points, LEFT_EYE)
        return math.degrees(math.atan2(ly - ry, lx - rx))

    assert abs(roll(found.points) - roll(turned.points) - 25) < 5  # PIL turns anticlockwise: y down, angle falls


def test_missing_or_foreign_file_names_the_remedy(tmp_path):
    with pytest.raises(FaceMeshError, match="--pseudo-fake-mask ellipse"):
        FaceMesh.from_tflite(tmp_path / "face_landmark.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(FaceMeshError, match="could not be read|not MediaPipe"):
        FaceMesh.from_tflite(junk)


@needs_file
@needs_photos
def test_cache_is_used_on_the_second_call(tmp_path, monkeypatch):
    """The first call runs Face Mesh once per photo and writes the file; the second, from the file, runs it on none
    and reads no network; pictures are found by their pixels."""
    runs = []
    real = face_mesh.face_landmarks

    def counting(mesh, image, *args, **kwargs):
        runs.append(image.size)
        return real(mesh, image, *args, **kwargs)

    monkeypatch.setattr(face_mesh, "face_landmarks", counting)
    items = [(str(p), lambda p=p: open_file_rgb(p)) for p in PHOTOS[:2]]
    path = tmp_path / "landmarks.npz"
    first = LandmarkCache.build(path, items, DEFAULT_PATH)
    assert len(runs) == 2 and path.is_file() and len(first) == 2

    def no_network(*args, **kwargs):
        raise AssertionError("Face Mesh read again")

    monkeypatch.setattr(FaceMesh, "from_tflite", no_network)
    second = LandmarkCache.build(path, items, DEFAULT_PATH)
    assert len(runs) == 2 and len(second) == 2
    photo = open_file_rgb(PHOTOS[1])
    np.testing.assert_array_equal(second.get(photo), first.get_key(str(PHOTOS[1])))
    assert second.get(ImageOps.mirror(photo)) is False  # another picture: not in the cache
    assert fingerprint(photo) != fingerprint(ImageOps.mirror(photo))


@needs_file
@needs_photos
def test_the_port_check_reports_what_the_docs_cite():
    """training.face_mesh --check (docs/pseudo-fakes/face_mesh_check.json): every photo's face found and in order,
    mirror errors small, and the interpreter's numbers where one is installed."""
    report = face_mesh.check(PHOTOS[:2])
    assert report["photos"] == 2 and report["geometry"]["face_found"] == 2
    assert report["geometry"]["eyes_nose_mouth_in_order"] == 2 and report["geometry"]["eyes_nose_mouth_inside_oval_hull"] == 2
    assert report["geometry"]["mirror_error_over_eye_distance"]["max"] < 0.1
    assert 0 < report["ms_network_per_crop"] < 1000 and report["ms_cache_per_photo"] > report["ms_fingerprint_per_photo"]
    if "interpreter" in report:
        assert report["interpreter"]["landmarks_max_abs_diff_px"] < 1e-3
