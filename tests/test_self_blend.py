"""The generalisation recipe's parts on real photos: self-blended pseudo-fakes, quality equalising, balanced sampling."""
from __future__ import annotations

import csv
import random

import datasets
import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import EXAMPLES, SHARED_DATA
from detector.images import open_file_rgb
from detector.model import LABEL_NAMES
from detector.faces import Face, find_faces, square_box
from training.data import (ALIGNED_CENTRE_X, ALIGNED_CENTRE_Y, ALIGNED_WIDTH, EqualiseQuality, FaceCropView, PseudoFakes,
                           RandomFraming, aligned_box, attach_transform, balanced_weights, collate, crop_mirrored,
                           train_transform)
from training.self_blend import SelfBlend, example_sheet, face_mask, hull_mask

REAL, FAKE = LABEL_NAMES.index("real"), LABEL_NAMES.index("fake")
PORTRAIT = EXAMPLES / "real_pixabay_1.jpg"


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return open_file_rgb(PORTRAIT)


@pytest.mark.parametrize("seed", range(6))
def test_pseudo_fake_changes_the_face_and_nothing_outside_the_mask(photo, seed):
    """Where the mask is (nearly) 0 the pseudo-fake is the photo (at blending size); inside it differs."""
    canvas = Image.new("RGB", (photo.width * 2, photo.height * 2), (120, 120, 120))  # room around the face
    canvas.paste(photo, (photo.width // 2, photo.height // 2))
    photo = canvas
    blend = SelfBlend()
    fake, mask = blend(photo, np.random.default_rng(seed))
    assert fake.mode == "RGB" and max(fake.size) <= blend.work_side and mask.shape == (fake.height, fake.width)
    assert 0.0 <= mask.min() and mask.max() <= 1.0 and mask.max() >= 0.25
    scale = blend.work_side / max(photo.size)
    small = photo.resize(fake.size, Image.Resampling.BICUBIC, reducing_gap=3.0) if scale < 1 else photo
    before, after = np.asarray(small, np.int16), np.asarray(fake, np.int16)
    outside = mask < 0.002
    assert outside.any(), "the mask must leave the background alone"
    assert np.abs(after - before)[outside].max() <= 1  # rounding only
    inside = mask > 0.5 * mask.max()
    assert np.abs(after - before)[inside].mean() > 1.0, "the face must be altered"
    soft = ((mask > 0.02) & (mask < 0.98)).mean()
    assert soft > 0.005, "the edge must be soft, not a hard cut"


def test_mask_follows_the_face_box():
    """The mask's weight lies in and around the face box (shifted towards the chin), not elsewhere in the frame."""
    box = (120.0, 60.0, 200.0, 140.0)
    for seed in range(10):
        mask = face_mask((300, 320), box, np.random.default_rng(seed))
        ys, xs = np.nonzero(mask > 0.5 * mask.max())
        assert box[0] - 30 <= xs.mean() <= box[2] + 30 and box[1] - 20 <= ys.mean() <= box[3] + 40
        assert mask[:, :60].max() == 0 and mask[250:, :].max() == 0  # far from the face: untouched


def test_no_face_found_falls_back_to_the_centre():
    """A picture without a face (flat noise) still gives a pseudo-fake, blended around the centre."""
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    fake, mask = SelfBlend()(noise, np.random.default_rng(1))
    ys, xs = np.nonzero(mask > 0.5 * mask.max())
    assert abs(xs.mean() - 48) < 20 and abs(ys.mean() - 48) < 25
    assert fake.size == noise.size


def test_same_seed_same_pseudo_fake(photo):
    a, mask_a = SelfBlend()(photo, np.random.default_rng(7))
    b, mask_b = SelfBlend()(photo, np.random.default_rng(7))
    c, _ = SelfBlend()(photo, np.random.default_rng(8))
    assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(mask_a, mask_b)
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_pseudo_fakes_relabel_only_reals(photo):
    """At rate 1 every real becomes a fake (and changes); fakes are never touched; at rate 0 nothing changes."""
    always, never = PseudoFakes(1.0), PseudoFakes(0.0)
    image, target = always(photo, REAL)
    assert target == FAKE
    assert image.size != photo.size or not np.array_equal(np.asarray(image), np.asarray(photo))
    image, target = always(photo, FAKE)
    assert target == FAKE and image is photo
    image, target = never(photo, REAL)
    assert target == REAL and image is photo
    random.seed(0)
    made = sum(PseudoFakes(0.3)(photo, REAL)[1] == FAKE for _ in range(200))
    assert 40 <= made <= 80  # ~60 expected


def test_training_batches_carry_pseudo_fake_targets(photo, tmp_path):
    """Through the dataset transform: real rows come out as fakes at rate 1, tensors of the model's size."""
    photo.save(tmp_path / "a.jpg")
    dataset = datasets.Dataset.from_dict({"image": [str(tmp_path / "a.jpg")] * 4, "target": [REAL, REAL, FAKE, FAKE]})
    dataset = dataset.cast_column("image", datasets.Image(decode=False))
    config = {"input_size": (3, 48, 48), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    batch = collate(list(attach_transform(dataset, train_transform(config, equalise=True), PseudoFakes(1.0))))
    assert batch["target"].tolist() == [FAKE] * 4
    assert batch["pixel_values"].shape == (4, 3, 48, 48) and batch["pixel_values"].isfinite().all()
    batch = collate(list(attach_transform(dataset, train_transform(config, equalise=True))))
    assert batch["target"].tolist() == [REAL, REAL, FAKE, FAKE]


def test_equalising_degradation_gives_one_size_distribution_whatever_the_input(photo):
    """A large and a middling photo come out with the same spread of widths (capped by their own width), as JPEG."""
    random.seed(0)
    degrade = EqualiseQuality(width=(64, 288))
    large = photo.resize((600, 600))
    middling = photo.resize((300, 300))
    widths_large = [degrade(large).width for _ in range(200)]
    widths_middling = [degrade(middling).width for _ in range(200)]
    assert 64 <= min(widths_large) and max(widths_large) <= 289
    assert abs(np.median(widths_large) - np.median(widths_middling)) <= 15
    assert len(set(widths_large)) > 50  # drawn, not fixed
    small = photo.resize((40, 40))
    assert {degrade(small).size for _ in range(20)} == {(40, 40)}  # never up-scaled


def test_random_framing_moves_and_sizes_the_face_anew(photo):
    """Square crops of part of the picture, or the whole picture inside a mirrored border, at random places."""
    random.seed(1)
    picture = photo.resize((200, 160))
    pixels = np.asarray(picture)
    framing = RandomFraming(p=1.0, zoom_in=(0.55, 1.0), zoom_out=(1.0, 1.5))
    framed = [framing(picture) for _ in range(60)]
    assert all(image.width == image.height for image in framed)
    crops = [image for image in framed if image.width <= 160]
    borders = [image for image in framed if image.width >= 200]
    assert len(crops) + len(borders) == 60 and len(crops) > 15 and len(borders) > 15
    assert min(image.width for image in crops) >= 88 and max(image.width for image in borders) <= 300
    assert len({image.width for image in framed}) > 30  # drawn, not fixed
    for image in crops[:5]:  # each crop is a piece of the picture
        crop = np.asarray(image)
        hits = [(y, x) for y in range(161 - image.height) for x in range(201 - image.width)
                if np.array_equal(pixels[y, x], crop[0, 0]) and np.array_equal(pixels[y:y + image.height, x:x + image.width], crop)]
        assert hits
    for image in borders[:5]:  # the picture sits unchanged inside its border
        framed_pixels = np.asarray(image)
        hits = [(y, x) for y in range(image.height - 159) for x in range(image.width - 199)
                if np.array_equal(framed_pixels[y:y + 160, x:x + 200], pixels)]
        assert hits
    assert RandomFraming(p=0.0)(picture) is picture


def test_aligned_box_puts_the_face_where_asked():
    """The face's square (here eyes 40 apart, mouth 40 below: side 1.29 × 80 = 103.2, centre (150, 100)) is `width` of
    the frame, its centre where asked."""
    face = Face((0, 0, 1, 1), ((130, 87.2), (170, 87.2), (150, 107.2), (135, 127.2), (165, 127.2)), 0.9)
    left, top, right, bottom = aligned_box(face, width=103.2 / 200, centre_x=0.5, centre_y=0.6)
    assert (right - left, bottom - top) == (200, 200)
    assert (left + 0.5 * 200, top + 0.6 * 200) == (150, 100)  # the face's centre


def test_crop_mirrored_mirrors_only_beyond_the_picture(photo):
    picture = photo.resize((120, 90))
    pixels = np.asarray(picture)
    inside = crop_mirrored(picture, (10, 5, 70, 65))
    assert np.array_equal(np.asarray(inside), pixels[5:65, 10:70])
    beyond = np.asarray(crop_mirrored(picture, (-20, -10, 140, 150)))
    assert beyond.shape == (160, 160, 3)
    assert np.array_equal(beyond[10:100, 20:140], pixels)  # the picture itself, unchanged
    assert np.array_equal(beyond[10:100, 19], pixels[:, 1]) and np.array_equal(beyond[9, 20:140], pixels[1])  # mirrored
    assert np.array_equal(beyond[10:100, 0], pixels[:, 20])


def test_the_border_perturbation_is_the_mirrored_padding_it_always_was(photo):
    """training.robustness's border_0.2 (measured in every evaluation report) goes through crop_mirrored now."""
    from training.robustness import PERTURBATIONS
    picture = photo.resize((100, 80))
    expected = np.pad(np.asarray(picture), ((16, 16), (20, 20), (0, 0)), mode="reflect")
    assert np.array_equal(np.asarray(PERTURBATIONS["border_0.2"](picture)), expected)


@pytest.mark.parametrize("name", ["real_pixabay_1.jpg", "real_pixabay_2.jpg"])
def test_aligned_view_frames_a_portrait_as_ffhq_frames_its_photographs(name):
    """The face found again in the aligned view sits where the FFHQ photographs' and GAN faces' faces sit."""
    random.seed(3)
    portrait = open_file_rgb(EXAMPLES / name)
    view = FaceCropView(p=0.0, aligned=1.0)
    for _ in range(4):
        framed = view(portrait)
        assert framed.width == framed.height and framed.size != portrait.size
        left, top, right, bottom = square_box(find_faces(framed)[0])
        assert ALIGNED_WIDTH[0] - 0.08 <= (right - left) / framed.width <= ALIGNED_WIDTH[1] + 0.08
        assert ALIGNED_CENTRE_X[0] - 0.04 <= (left + right) / 2 / framed.width <= ALIGNED_CENTRE_X[1] + 0.04
        assert ALIGNED_CENTRE_Y[0] - 0.04 <= (top + bottom) / 2 / framed.height <= ALIGNED_CENTRE_Y[1] + 0.04


def test_face_views_share_one_draw(photo):
    """p of the face crop, `aligned` of the aligned view, the rest as they are; a picture without a face stays."""
    random.seed(4)
    portrait = Image.new("RGB", (photo.width * 2, photo.height * 2), (120, 120, 120))  # room for the face crop's margin
    portrait.paste(photo, (photo.width // 2, photo.height // 2))
    view = FaceCropView(p=0.5, aligned=0.3)
    sizes = [view(portrait).size for _ in range(60)]
    unchanged = sum(size == portrait.size for size in sizes)
    assert 4 <= unchanged <= 22  # about 20% of 60
    assert len(set(sizes)) > 20
    blank = Image.new("RGB", (200, 200), (128, 128, 128))
    assert all(FaceCropView(p=0.0, aligned=1.0)(blank) is blank for _ in range(3))
    assert FaceCropView(p=0.0, aligned=0.0)(portrait) is portrait


def test_framing_comes_first_in_the_training_transform():
    config = {"input_size": (3, 48, 48), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    steps = train_transform(config, equalise=True, framing=0.5).transforms
    assert isinstance(steps[0], RandomFraming) and steps[0].p == 0.5 and isinstance(steps[1], EqualiseQuality)
    assert not any(isinstance(step, RandomFraming) for step in train_transform(config, equalise=True).transforms)


def test_balanced_weights_give_each_class_and_source_its_share():
    """Per class, sources weigh as size ** exponent; reals get 0.5 / (1 - pseudo-fake rate) of all draws."""
    sources = ["big"] * 900 + ["small"] * 100 + ["big"] * 400 + ["gan"] * 100
    targets = [REAL] * 1000 + [FAKE] * 500
    dataset = datasets.Dataset.from_dict({"source": sources, "target": targets})
    weights = balanced_weights(dataset, "source", pseudo_fake_rate=0.25, exponent=0.0)
    assert weights.sum() == pytest.approx(1.0)
    is_real = np.array(targets) == REAL
    assert weights[is_real].sum() == pytest.approx(0.5 / 0.75)
    names = np.array(sources)
    assert weights[is_real & (names == "big")].sum() == pytest.approx(weights[is_real & (names == "small")].sum())
    assert weights[~is_real & (names == "big")].sum() == pytest.approx(weights[~is_real & (names == "gan")].sum())
    sqrt = balanced_weights(dataset, "source", exponent=0.5)
    ratio = sqrt[is_real & (names == "big")].sum() / sqrt[is_real & (names == "small")].sum()
    assert ratio == pytest.approx(3.0)  # sqrt(900 / 100)
    assert sqrt[is_real].sum() == pytest.approx(0.5)


def test_example_sheet_is_drawn(tmp_path):
    out = tmp_path / "sheet.png"
    example_sheet([PORTRAIT, EXAMPLES / "real_pixabay_2.jpg"], out)
    with Image.open(out) as sheet:
        assert sheet.width > 400 and sheet.height > 200


@pytest.mark.skipif(not (SHARED_DATA / "manifest.csv").is_file(), reason="needs ../shared/data")
def test_high_quality_reals_are_in_the_shared_data():
    """The sources the recipe balances on exist with the sizes SOURCES.md states."""
    with (SHARED_DATA / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    counts = {}
    for row in rows:
        counts[(row["source"], row["label"])] = counts.get((row["source"], row["label"]), 0) + 1
    assert counts[("london_studio", "real")] == 244 and counts[("celebrity_photos", "real")] == 640


# The hull mask: the convex hull of Face Mesh landmarks (needs ../shared/pretrained/face_landmark/face_landmark.tflite).

@pytest.fixture(scope="module")
def landmarked(photo):
    """The portrait (at most 320 pixels a side: the blend's own size) and its Face Mesh landmarks (468×2)."""
    from training.face_mesh import DEFAULT_PATH, FaceMesh, face_landmarks

    if not DEFAULT_PATH.is_file():
        pytest.skip(f"no Face Mesh file at {DEFAULT_PATH} (../shared)")
    scale = 320 / max(photo.size)
    small = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.BICUBIC,
                         reducing_gap=3.0)
    found = face_landmarks(FaceMesh.from_tflite(DEFAULT_PATH), small)
    assert found is not None
    return small, found.points[:, :2]


@pytest.mark.parametrize("seed", range(8))
def test_hull_mask_covers_the_landmarks_and_is_soft_at_its_edge(landmarked, seed):
    """Landmarks well inside the face oval (below the brows: the forehead is not always in) are inside the mask; its
    edge is a ramp, not a step; the background is out."""
    import cv2

    from training.face_mesh import BROWS, FACE_OVAL

    small, points = landmarked
    mask = hull_mask((small.height, small.width), points, np.random.default_rng(seed))
    peak = float(mask.max())
    assert 0.25 - 1e-6 <= peak <= 1.0 and mask.min() >= 0.0
    level = mask / peak
    oval = cv2.convexHull(points[list(FACE_OVAL)].astype(np.float32))
    side = max(np.ptp(points[:, 0]), np.ptp(points[:, 1]))
    brow_line = points[list(BROWS), 1].mean()
    inner = [p for p in points if p[1] > brow_line and cv2.pointPolygonTest(oval, (float(p[0]), float(p[1])), True)
             > 0.15 * side]
    assert len(inner) > 150
    for x, y in np.round(inner).astype(int):
        assert level[y, x] > 0.5, "the mask covers the face's landmarks"
    assert ((level > 0.05) & (level < 0.95)).mean() > 0.01, "the edge is blurred, not cut"
    assert max(np.abs(np.diff(level, axis=0)).max(), np.abs(np.diff(level, axis=1)).max()) < 0.35
    assert min(level[0].max(), level[:, 0].max(), level[:, -1].max()) < 0.05, "not the whole frame"


def test_hull_mask_takes_in_the_forehead(landmarked):
    """In most draws the mask reaches above the brows, halfway to the face oval's top (the paper's 81 points), in some
    it stops at the brows (its 68)."""
    from training.face_mesh import BROWS, FACE_OVAL

    small, points = landmarked
    brows, top = points[list(BROWS)].mean(axis=0), points[FACE_OVAL[0]]
    x, y = np.round((brows + top) / 2).astype(int)
    above = [hull_mask((small.height, small.width), points, np.random.default_rng(seed)) for seed in range(16)]
    covered = [m[y, x] / m.max() > 0.5 for m in above]
    assert sum(covered) >= 8 and not all(covered)


@pytest.mark.parametrize("seed", range(6))
def test_hull_pseudo_fake_differs_only_inside_the_dilated_mask(landmarked, seed):
    """With room round the face: pixels change only where the mask is, the mask lies within the landmarks' hull
    (forehead raised) grown by a quarter of the face, and the face itself changes."""
    import cv2

    small, points = landmarked
    canvas = Image.new("RGB", (small.width * 2, small.height * 2), (120, 120, 120))
    offset = np.array([small.width // 2, small.height // 2], np.float32)
    canvas.paste(small, tuple(int(v) for v in offset))
    blend = SelfBlend(landmarks=lambda image: points + offset)
    fake, mask = blend(canvas, np.random.default_rng(seed))
    before = np.asarray(canvas.resize(fake.size, Image.Resampling.BICUBIC, reducing_gap=3.0), np.int16)
    after = np.asarray(fake, np.int16)
    changed = np.abs(after - before).max(axis=2) > 1
    assert not (changed & (mask < 0.002)).any(), "outside the mask the photo is untouched"
    scaled = (points + offset) * (fake.width / canvas.width)
    side = max(np.ptp(scaled[:, 0]), np.ptp(scaled[:, 1]))
    raised = np.concatenate([scaled, scaled - [0, 0.5 * side]])  # room for the forehead
    hull = np.zeros(mask.shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(raised).astype(np.int32)), 1)
    margin = round(0.5 * side) | 1  # a quarter of the face on every side
    dilated = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (margin, margin))).astype(bool)
    assert not ((mask > 0.002) & ~dilated).any(), "the mask stays within the dilated landmark hull"
    assert (~dilated).mean() > 0.3
    assert np.abs(after - before)[mask > 0.5 * mask.max()].mean() > 1.0, "the face is altered"


def test_hull_blend_reads_its_landmarks_from_the_cache(landmarked, tmp_path, monkeypatch):
    """pseudo_fake_blend('hull') computes the real photos' landmarks once into the cache; a second blend over the same
    data runs no Face Mesh, and the blend finds a photo by its pixels."""
    from training import face_mesh
    from training.face_mesh import DEFAULT_PATH
    from training.self_blend import pseudo_fake_blend

    small, _ = landmarked
    small.save(tmp_path / "a.jpg", quality=95)
    ImageOps.mirror(small).save(tmp_path / "b.jpg", quality=95)
    dataset = datasets.Dataset.from_dict({"image": [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")],
                                          "target": [REAL, FAKE]}).cast_column("image", datasets.Image(decode=False))
    runs = []
    real = face_mesh.face_landmarks
    monkeypatch.setattr(face_mesh, "face_landmarks", lambda *a, **k: runs.append(1) or real(*a, **k))
    cache_path = tmp_path / "landmarks.npz"
    blend = pseudo_fake_blend("hull", dataset, cache_path, DEFAULT_PATH)
    assert len(runs) == 1 and len(blend.landmarks.cache) == 1, "the real photo only"
    again = pseudo_fake_blend("hull", dataset, cache_path, DEFAULT_PATH)
    assert len(runs) == 1, "the second call reads the cache"
    again(open_file_rgb(tmp_path / "a.jpg"), np.random.default_rng(0))
    assert again.landmarks.hits == 1 and again.landmarks.misses == 0


def test_pseudo_fake_mask_option(tmp_path):
    from training.face_mesh import FaceMeshError
    from training.self_blend import MASKS, pseudo_fake_blend
    from training.train import parse_args

    assert MASKS == ("ellipse", "hull") and pseudo_fake_blend("ellipse") == SelfBlend()
    args = parse_args(["--dataset", "x", "--pseudo-fakes", "0.5", "--pseudo-fake-mask", "hull"])
    assert args.pseudo_fake_mask == "hull"
    with pytest.raises(FaceMeshError, match="--pseudo-fake-mask ellipse"):
        pseudo_fake_blend("hull", None, None, tmp_path / "missing.tflite")


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "manifest.csv").is_file(), reason="needs ../shared/data")
def test_training_with_hull_masks_computes_the_landmarks_once(tmp_path, monkeypatch):
    """train --pseudo-fake-mask hull: the real training photos' landmarks go into the cache before the first step, every
    pseudo-fake is found in it, and a second run on the same cache runs no Face Mesh."""
    import shutil

    from conftest import TEST_IMG_SIZE, photos
    from training import face_mesh, train
    from training.face_mesh import DEFAULT_PATH, LandmarkCache

    if not DEFAULT_PATH.is_file():
        pytest.skip(f"no Face Mesh file at {DEFAULT_PATH} (../shared)")
    for name, paths in {"real": photos("utkface_adults", "real"), "fake": photos("sdfd_diffusion", "fake")}.items():
        (tmp_path / "data" / name).mkdir(parents=True)
        for path in paths:
            shutil.copy(path, tmp_path / "data" / name / path.name)
    runs, blends = [], []
    real_landmarks, real_blend = face_mesh.face_landmarks, SelfBlend.__call__
    monkeypatch.setattr(face_mesh, "face_landmarks", lambda *a, **k: runs.append(1) or real_landmarks(*a, **k))
    monkeypatch.setattr(SelfBlend, "__call__", lambda self, *a, **k: blends.append(self) or real_blend(self, *a, **k))
    cache = tmp_path / "landmarks.npz"
    common = ["--dataset", str(tmp_path / "data"), "--img-size", str(TEST_IMG_SIZE), "--workers", "0", "--batch-size", "4",
              "--max-steps-per-epoch", "2", "--mixed-precision", "no", "--epochs", "1", "--pseudo-fakes", "1.0",
              "--pseudo-fake-mask", "hull", "--landmark-cache", str(cache)]
    train.main([*common, "--output-dir", str(tmp_path / "first")])
    reals_in_training = len(runs)
    assert 3 <= reals_in_training <= 6 and len(LandmarkCache.load(cache)) == reals_in_training
    assert blends and all(b.landmarks.misses == 0 and b.landmarks.hits > 0 for b in blends)
    train.main([*common, "--output-dir", str(tmp_path / "second")])
    assert len(runs) == reals_in_training, "the second run reads the cache"
