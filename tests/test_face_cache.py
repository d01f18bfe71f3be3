"""Training crops faces through the finder the app serves with, found once per picture and kept in a file."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from conftest import small_manifest
from detector.faces import Face, FaceFinder, crop_box, find_faces
from detector.images import open_file_rgb
from training.data import DataSpec, FaceCache, FaceCropView, load_raw, with_targets

COUNTS = {("ffhq_photos", "real"): 3, ("gan_faces_site", "fake"): 3}


@pytest.fixture()
def pictures(tmp_path):
    spec = DataSpec(str(small_manifest(tmp_path / "manifest.csv", COUNTS)), image_column="file", source_column="source")
    return with_targets(load_raw(spec)["train"], spec)


def test_the_cache_holds_what_the_served_finder_finds_and_is_read_back_without_searching(pictures, tmp_path, monkeypatch):
    path = tmp_path / "faces.json"
    cache = FaceCache(path).fill(pictures)
    items = pictures["image"]
    assert len(cache.faces) == len(items) == 6 and path.is_file()
    for item in items:
        found = find_faces(open_file_rgb(item["path"]))
        assert [face.box for face in cache.get(item)] == [face.box for face in found] != []
        assert np.allclose(cache.get(item)[0].landmarks, found[0].landmarks, atol=0.051)  # to a tenth of a pixel

    def no_search(self, image):
        raise AssertionError("a cached picture was searched again")

    monkeypatch.setattr(FaceFinder, "__call__", no_search)
    again = FaceCache(path).fill(pictures)  # every picture is in the file: nothing is searched
    assert {key: [face.box for face in faces] for key, faces in again.faces.items()} == \
        {key: [face.box for face in faces] for key, faces in cache.faces.items()}


def test_a_cache_filled_by_other_finder_settings_is_filled_again(pictures, tmp_path):
    path = tmp_path / "faces.json"
    FaceCache(path, FaceFinder(min_score=0.99)).fill(pictures)
    assert json.loads(path.read_text())["finder"] == repr(FaceFinder(min_score=0.99))
    cache = FaceCache(path)  # the default finder: the file's faces are not taken
    assert cache.faces == {}
    cache.fill(pictures)
    assert json.loads(path.read_text())["finder"] == repr(FaceFinder())


def test_the_face_crop_view_cuts_the_cached_face_as_the_app_does(pictures, tmp_path):
    cache = FaceCache(tmp_path / "faces.json").fill(pictures)
    item = pictures["image"][0]
    image = open_file_rgb(item["path"])
    (face,) = cache.get(item)[:1]
    random.seed(0)
    view = FaceCropView(p=1.0, margin=(0.3, 0.3))
    assert view(image, cache.get(item)).size == image.crop(crop_box(face, image.size, 0.3)).size
    # A cached face, not a search: a face placed elsewhere is cut where the cache says
    moved = Face(face.box, tuple((x / 2, y / 2) for x, y in face.landmarks), face.score)
    assert view(image, [moved]).tobytes() == image.crop(crop_box(moved, image.size, 0.3)).tobytes()
