"""A model folder's config.json is validated before anything is built from it: each mistake gets a
DetectorError that names it, never a traceback from timm or torch. (Weights are read from safetensors
only; a folder holding only a pickle file is refused: tests/test_publish.py::test_pickle_only_folder_is_refused.)"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from detector import Detector, DetectorError


def model_copy(model_dir: Path, folder: Path, config_text: str | None) -> Path:
    """The test model with another config.json (the weights are linked, not copied)."""
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(model_dir / "model.safetensors")
    if config_text is not None:
        (folder / "config.json").write_text(config_text)
    return folder


def with_preprocessing(**values):
    return lambda config: {**config, "pretrained_cfg": {**config["pretrained_cfg"], **values}}


CASES = [
    ("a transformer", lambda c: {**c, "architecture": "vit_base_patch16_224", "model_args": {}},
     "unsupported architecture 'vit_base_patch16_224'; this detector serves timm CNNs"),
    ("unknown architecture", lambda c: {**c, "architecture": "resnext51_frobnicated"},
     "unknown architecture 'resnext51_frobnicated'; name a timm CNN such as mobilenetv2_100"),
    ("no architecture", lambda c: {k: v for k, v in c.items() if k != "architecture"}, "unknown architecture None"),
    ("weights of another architecture", lambda c: {**c, "architecture": "mobilenetv2_100"},
     "could not be loaded as mobilenetv2_100 weights"),
    ("three classes", lambda c: {**c, "num_classes": 3, "label_names": ["real", "fake", "unsure"]},
     "expected 2 classes named ['real', 'fake'], found num_classes=3"),
    ("wrong label names", lambda c: {**c, "label_names": ["cat", "dog"]}, "label_names=['cat', 'dog']"),
    ("one label twice", lambda c: {**c, "label_names": ["real", "real"]}, "label_names=['real', 'real']"),
    ("deprecated 'labels' only", lambda c: {**{k: v for k, v in c.items() if k != "label_names"}, "labels": ["real", "fake"]},
     "label_names=None"),
    ("num_classes as text", lambda c: {**c, "num_classes": "2"}, "num_classes='2'"),
    ("model_args not an object", lambda c: {**c, "model_args": [2]}, "model_args must be a JSON object"),
    ("model_args timm does not take", lambda c: {**c, "model_args": {**c["model_args"], "frobnicate": 1}},
     "model_args cannot build resnext50_32x4d"),
    ("pretrained_cfg not an object", lambda c: {**c, "pretrained_cfg": "imagenet"}, "pretrained_cfg must be a JSON object"),
    ("input size of zero", with_preprocessing(input_size=[3, 0, 0]), "input_size must be [3, height, width]"),
    ("input size of a huge image", with_preprocessing(input_size=[3, 100000, 100000]), "input_size must be"),
    ("two mean values", with_preprocessing(mean=[0.5, 0.5]), "pretrained_cfg.mean must be 3 numbers"),
    ("a zero std", with_preprocessing(std=[0.0, 0.2, 0.2]), "pretrained_cfg.std must be 3 numbers"),
    ("a negative crop_pct", with_preprocessing(crop_pct=-1), "crop_pct must be a number in (0, 2]"),
    ("calibration not an object", lambda c: {**c, "calibration": [0.5]}, "calibration must be a JSON object"),
    ("temperature as text", lambda c: {**c, "calibration": {"temperature": "1.2"}}, "calibration.temperature must be"),
    ("temperature of zero", lambda c: {**c, "calibration": {"temperature": 0}}, "calibration.temperature must be"),
    ("a negative weight", lambda c: {**c, "calibration": {"log_prob_weights": {"fake": -1, "real": 1}}},
     "calibration.log_prob_weights must be"),
    ("weights beside a temperature", lambda c: {**c, "calibration": {"temperature": 2, "log_prob_weights": {
        "fake": 1, "real": 1}}}, "calibration.log_prob_weights must be"),
    ("one weight", lambda c: {**c, "calibration": {"log_prob_weights": {"fake": 1}}}, "calibration.log_prob_weights must be"),
    ("threshold above 1", lambda c: {**c, "calibration": {"threshold": 7}}, "calibration.threshold must be"),
    ("threshold as a list", lambda c: {**c, "calibration": {"threshold": [0.5]}}, "calibration.threshold must be"),
    ("target_fpr of NaN", lambda c: {**c, "calibration": {"threshold": 0.6, "target_fpr": float("nan")}},
     "calibration.target_fpr must be"),
    ("bias as text", lambda c: {**c, "calibration": {"bias": "0.3"}}, "calibration.bias must be a number"),
    ("an infinite bias", lambda c: {**c, "calibration": {"bias": float("inf")}}, "calibration.bias must be a number"),
    ("a negative face margin", lambda c: {**c, "calibration": {"face_margin": -0.1}}, "calibration.face_margin must be"),
    ("a face margin as text", lambda c: {**c, "calibration": {"face_margin": "0.6"}}, "calibration.face_margin must be"),
    ("a per-source flag as text", lambda c: {**c, "calibration": {"target_fpr_per_source": "yes"}},
     "calibration.target_fpr_per_source must be true or false"),
    ("a share of all reals above 1", lambda c: {**c, "calibration": {"fpr_all_reals": 3}}, "calibration.fpr_all_reals must be"),
    ("fakes caught as text", lambda c: {**c, "calibration": {"fakes_caught": "most"}}, "calibration.fakes_caught must be"),
    ("training images as text", lambda c: {**c, "training_images": "many"}, "training_images must be a whole number"),
    ("a heat-map stage the detector has not", lambda c: {**c, "cam_stage": -3}, "cam_stage must be one of [-1, -2]"),
    ("unseen reals as a list", lambda c: {**c, "unseen_reals_called_fake": [0.1]}, "unseen_reals_called_fake must map"),
    ("unseen reals above 1", lambda c: {**c, "unseen_reals_called_fake": {"studio portraits": 4}},
     "unseen_reals_called_fake must map"),
]


@pytest.mark.parametrize("name, change, message", CASES, ids=[case[0] for case in CASES])
def test_bad_config_is_refused_with_a_clear_message(model_dir, tmp_path, name, change, message):
    config = json.loads((model_dir / "config.json").read_text())
    folder = model_copy(model_dir, tmp_path / "model", json.dumps(change(config)))
    with pytest.raises(DetectorError) as raised:
        Detector.from_pretrained(folder)
    assert message in str(raised.value)
    assert "config.json" in str(raised.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "is not valid JSON"),
        ("[2, 3]", "must hold a JSON object"),
        (b"\xff\xfe\x00garbage".decode("latin-1"), "is not valid JSON"),
        (None, "has no config.json: not a model folder in the Hub layout"),
    ],
    ids=["invalid JSON", "a JSON array", "binary garbage", "missing"],
)
def test_unreadable_config_is_refused(model_dir, tmp_path, text, message):
    folder = model_copy(model_dir, tmp_path / "model", text)
    with pytest.raises(DetectorError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Detector.from_pretrained(folder)


def test_the_untouched_config_loads(model_dir, tmp_path):
    folder = model_copy(model_dir, tmp_path / "model", (model_dir / "config.json").read_text())
    assert Detector.from_pretrained(folder).labels == ["real", "fake"]


def test_calibration_without_target_fpr_serves_and_the_app_states_the_rule(model_dir, tmp_path):
    """A threshold alone (no target_fpr) is valid: the detector applies it and the app's reading says so."""
    import app

    config = json.loads((model_dir / "config.json").read_text())
    config["calibration"] = {"temperature": 1.5, "threshold": 0.6}
    detector = Detector.from_pretrained(model_copy(model_dir, tmp_path / "model", json.dumps(config)))
    assert (detector.calibration.fake_weight, detector.threshold, detector.target_fpr) == (1 / 1.5, 0.6, None)
    rule = app.decision_rule(detector)
    assert "60%" in rule and "of 100" not in rule


def test_pool_size_matches_the_input_size(model_dir):
    """config.json's pool_size is the CAM grid the model really has at its input size (64 px → 2×2), not timm's 7×7."""
    import torch

    config = json.loads((model_dir / "config.json").read_text())
    size = config["pretrained_cfg"]["input_size"]
    detector = Detector.from_pretrained(model_dir, precision="fp32")
    features = detector.model.forward_features(torch.zeros(1, *size))
    assert list(features.shape[-2:]) == config["pretrained_cfg"]["pool_size"] == [2, 2]


def test_the_app_says_what_the_model_does_on_unseen_good_photos(model_dir, tmp_path):
    """The measured shares travel in config.json; the reading quotes them, and says nothing when none were measured."""
    import app

    config = json.loads((model_dir / "config.json").read_text())
    config["calibration"] = {"temperature": 1.0, "threshold": 0.6, "target_fpr": 0.05}
    config["unseen_reals_called_fake"] = {"studio portraits": 0.041, "press photos": 0.12}
    detector = Detector.from_pretrained(model_copy(model_dir, tmp_path / "model", json.dumps(config)))
    rule = app.decision_rule(detector)
    assert "at most 5 in 100 of the validation split's real photos are flagged" in rule
    assert ("models trained with the same recipe, each without one of these kinds, flagged 4 of 100 studio portraits "
            "and 12 of 100 press photos") in rule
    assert "each without" not in app.decision_rule(Detector.from_pretrained(model_dir))


def test_calibration_bias_shifts_the_fake_logit(model_dir, tmp_path):
    """p_fake with {temperature T, bias b} = sigmoid((fake logit - real logit) / T + b), computed from the raw logits."""
    import torch

    from detector.model import load_model

    config = json.loads((model_dir / "config.json").read_text())
    config["calibration"] = {"temperature": 0.7, "bias": -0.8}
    detector = Detector.from_pretrained(model_copy(model_dir, tmp_path / "model", json.dumps(config)), precision="fp32")
    photo = Path(__file__).resolve().parent.parent / "examples" / "real_pixabay_1.jpg"
    raw = load_model(model_dir).model.eval()
    with torch.no_grad():
        logits = raw(detector.preprocess(detector.analyze(photo).image)[None])[0]
    expected = torch.sigmoid((logits[1] - logits[0]) / 0.7 - 0.8).item()
    assert detector.analyze(photo).p_fake == pytest.approx(expected, abs=1e-4)


def test_beta_calibration_weights_the_two_log_probabilities(model_dir, tmp_path):
    """p_fake with {log_prob_weights {fake a, real b}, bias c} = sigmoid(a · log P(fake) − b · log P(real) + c) of the
    raw logits' softmax (detector/calibration.py), on the served path."""
    import torch

    from detector.model import load_model

    config = json.loads((model_dir / "config.json").read_text())
    config["calibration"] = {"log_prob_weights": {"fake": 1.7, "real": 0.4}, "bias": 0.3}
    detector = Detector.from_pretrained(model_copy(model_dir, tmp_path / "model", json.dumps(config)), precision="fp32")
    photo = Path(__file__).resolve().parent.parent / "examples" / "real_pixabay_1.jpg"
    raw = load_model(model_dir).model.eval()
    with torch.no_grad():
        log_p = raw(detector.preprocess(detector.analyze(photo).image)[None])[0].log_softmax(0)
    expected = torch.sigmoid(1.7 * log_p[1] - 0.4 * log_p[0] + 0.3).item()
    analysis = detector.analyze(photo)
    assert analysis.p_fake == pytest.approx(expected, abs=1e-4)
    assert sum(analysis.probabilities.values()) == pytest.approx(1.0)


def test_the_face_margin_the_threshold_was_fitted_with_is_the_one_served(model_dir, tmp_path, face_paths):
    """calibration.face_margin (written by evaluate --faces --calibrate) sets the crop round each face; an explicit
    face_margin wins; a model without it keeps the margin models were calibrated with before (0.3)."""
    from detector.faces import DEFAULT_MARGIN, crop_box
    from detector.images import load_image

    config = json.loads((model_dir / "config.json").read_text())
    config["calibration"] = {"temperature": 1.0, "threshold": 0.6, "face_margin": 0.6}
    folder = model_copy(model_dir, tmp_path / "model", json.dumps(config))
    image = load_image(face_paths[0])
    for detector, margin in ((Detector.from_pretrained(folder), 0.6), (Detector.from_pretrained(folder, face_margin=0.1), 0.1),
                             (Detector.from_pretrained(model_dir), DEFAULT_MARGIN)):
        assert detector.face_margin == margin
        face = detector.analyze(image, faces=True).faces[0]
        assert face.crop == crop_box(face.face, image.size, margin)
    assert DEFAULT_MARGIN == 0.3
    with pytest.raises(DetectorError, match="face_margin must be from 0"):
        Detector.from_pretrained(folder, face_margin=-1)


def test_the_page_states_how_many_photos_the_model_was_trained_on(model_dir, tmp_path):
    """The page said "a few thousand face photos" whatever the model; the number now comes from config.json."""
    import app

    config = json.loads((model_dir / "config.json").read_text())
    counted = Detector.from_pretrained(model_copy(model_dir, tmp_path / "counted", json.dumps({**config, "training_images": 11149})))
    assert "trained on 11,149 face photos" in app.limits(counted) and "few thousand" not in app.limits(counted)
    unknown = Detector.from_pretrained(model_copy(model_dir, tmp_path / "unknown", json.dumps(config)))
    assert app.limits(unknown).startswith("The model was trained on face photos from public datasets.")
