"""Detector end to end on real timm CNNs (ResNeXt-50 and MobileNetV2, random weights, 64 px) and real face photos."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from detector import Detector, DetectorError, load_image
from detector.explain import normalise, predict_with_cam
from detector.model import load_model
from conftest import ARCHITECTURES, SHARED_DATA, write_model_folder


def test_analyze_gives_probabilities_and_a_label(detector, face_paths):
    for path in face_paths:
        analysis = detector.analyze(path)
        assert set(analysis.probabilities) == {"real", "fake"}
        assert sum(analysis.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert analysis.label == max(analysis.probabilities, key=analysis.probabilities.get)
        assert analysis.explained == analysis.label
        assert analysis.p_fake == analysis.probabilities["fake"]
        assert analysis.cam.min() >= 0 and analysis.cam.max() <= 1


def test_render_gives_three_images_at_the_original_size(detector, face_paths):
    for path in face_paths:
        analysis = detector.analyze(path)
        size = Image.open(path).size
        images = analysis.render()
        assert len(images) == 3
        assert all(isinstance(image, Image.Image) and image.size == size and image.mode == "RGB" for image in images)
        assert analysis.activation_map().shape == (size[1], size[0])


def test_render_scales_once_to_fit_max_side_and_keeps_the_cam_in_place(detector, face_paths):
    large = Image.open(face_paths[0]).convert("RGB").resize((1200, 900))
    analysis = detector.analyze(large)
    small_views = analysis.render(max_side=300)
    assert [view.size for view in small_views] == [(300, 225)] * 3
    full_heat = np.asarray(analysis.render()[1].resize((300, 225), Image.BILINEAR), dtype=float)
    assert np.abs(np.asarray(small_views[1], dtype=float) - full_heat).mean() < 12  # same map, another scale


def test_every_kind_of_input_gives_the_same_answer(detector, face_paths):
    path = face_paths[-1]
    data = path.read_bytes()
    expected = detector.analyze(path)
    for source in (str(path), data, io.BytesIO(data), Image.open(path), np.asarray(Image.open(path).convert("RGB"))):
        analysis = detector.analyze(source)
        assert analysis.probabilities == pytest.approx(expected.probabilities, abs=1e-6)
        assert np.allclose(analysis.cam, expected.cam, atol=1e-6)


@pytest.mark.parametrize("batch_size", [16, 3])
def test_analyze_batch_equals_analyze_one_by_one(detector, face_paths, batch_size):
    batched = Detector(detector.loaded, device="cpu", batch_size=batch_size, precision="fp32").analyze_batch(face_paths)
    assert len(batched) == len(face_paths)
    for path, analysis in zip(face_paths, batched):
        single = detector.analyze(path)
        assert analysis.label == single.label and analysis.box == single.box
        assert analysis.probabilities == pytest.approx(single.probabilities, abs=1e-5)
        assert np.allclose(analysis.cam, single.cam, atol=1e-4)


@pytest.mark.parametrize("target", ["real", "fake"])
def test_target_chooses_the_class_the_cam_explains(detector, face_paths, target):
    image = load_image(face_paths[0])
    analysis = detector.analyze(image, target=target)
    assert analysis.explained == target
    untargeted = detector.analyze(image)
    assert analysis.probabilities == pytest.approx(untargeted.probabilities)  # the prediction does not change
    _, cams, _ = predict_with_cam(detector.model, detector.preprocess(image)[None], detector.labels.index(target))
    assert np.allclose(analysis.cam, normalise(cams[0].numpy()), atol=1e-5)
    if target == untargeted.label:
        assert np.allclose(analysis.cam, untargeted.cam)


def test_unknown_target_is_a_detector_error(detector, face_paths):
    with pytest.raises(DetectorError, match="Unknown class 'deepfake'"):
        detector.analyze(face_paths[0], target="deepfake")


def test_a_bad_input_in_a_batch_is_a_detector_error(detector, face_paths):
    with pytest.raises(DetectorError, match="empty"):
        detector.analyze_batch([face_paths[0], b""])


def test_to_dict_is_json(detector, face_paths):
    analysis = detector.analyze(face_paths[0])
    record = json.loads(json.dumps(analysis.to_dict()))
    assert record["label"] == analysis.label
    assert record["probabilities"] == pytest.approx(analysis.probabilities)
    assert record["explained_class"] == analysis.explained


def test_exif_rotated_input_is_analysed_upright(detector, face_paths):
    """A photo stored sideways with EXIF orientation 6 is analysed and rendered as the upright photo."""
    upright = load_image(face_paths[-1])
    assert upright.width != upright.height
    exif = Image.Exif()
    exif[274] = 6  # the viewer rotates the stored pixels 90° clockwise
    stored = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(stored, "PNG", exif=exif)
    rotated, expected = detector.analyze(stored.getvalue()), detector.analyze(upright)
    assert rotated.image.size == upright.size
    assert all(image.size == upright.size for image in rotated.render())
    assert rotated.box == expected.box
    assert rotated.probabilities == pytest.approx(expected.probabilities, abs=1e-6)
    assert np.allclose(rotated.cam, expected.cam, atol=1e-5)


def test_calibration_in_config_sets_probabilities_and_verdict(tmp_path, detector, face_paths):
    """config.json's calibration (from training.evaluate --calibrate): softmax(logits / T), fake when p_fake ≥ threshold."""
    from conftest import write_model_folder

    folder = write_model_folder(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    plain = Detector.from_pretrained(folder, precision="fp32")
    raw = [plain.analyze(path).p_fake for path in face_paths]
    threshold = float(np.median(raw))  # splits the examples, so both verdicts occur
    config["calibration"] = {"temperature": 2.0, "threshold": threshold, "target_fpr": 0.05}
    (folder / "config.json").write_text(json.dumps(config))
    calibrated = Detector.from_pretrained(folder, precision="fp32")
    for path, p in zip(face_paths, raw):
        analysis = calibrated.analyze(path)
        logit = np.log(p / (1 - p))
        assert analysis.p_fake == pytest.approx(1 / (1 + np.exp(-logit / 2.0)), abs=1e-5)
        assert analysis.label == ("fake" if analysis.p_fake >= threshold else "real")
        assert analysis.explained == analysis.label


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_scores_as_the_threshold_was_fitted(tmp_path, monkeypatch, caplog, native):
    """A threshold sits where a few hundredths of p(fake) move verdicts (a MobileNetV2's bf16 scores differ from its
    fp32 ones by up to 0.16): "auto" computes in the precision the config says the threshold was fitted in, bf16 only
    where it is native (else fp32, said in a warning); an explicit precision still wins; no record: bf16 where native."""
    import logging

    import detector.detector as module
    from conftest import write_model_folder

    monkeypatch.setattr(module, "native_bf16", lambda device: native)
    folder = write_model_folder(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())

    def served(fitted_in, precision="auto"):
        (folder / "config.json").write_text(json.dumps({**config, "calibration": {
            "temperature": 1.0, "threshold": 0.5, **({"precision": fitted_in} if fitted_in else {})}}))
        detector = Detector.from_pretrained(folder, precision=precision)
        assert next(detector.model.parameters()).dtype == (torch.bfloat16 if detector.precision == "bf16" else torch.float32)
        return detector.precision

    assert served("fp32") == "fp32"
    with caplog.at_level(logging.WARNING, logger="detector.detector"):
        assert served("bf16") == ("bf16" if native else "fp32")
    assert ("fitted on bf16 scores" in caplog.text) is not native
    assert served(None) == ("bf16" if native else "fp32")
    assert served("fp32", precision="bf16") == "bf16" and served("bf16", precision="fp32") == "fp32"


def test_the_bundled_model_is_served_in_the_precision_its_threshold_was_fitted_in():
    """What users are told must come from the scores its threshold was fitted on. The bundled MobileNetV2's bf16
    scores differ from fp32 by up to 0.1 on the validation split, so its threshold was fitted in fp32, its config
    says so, and "auto" serves fp32 on every machine, bf16-capable or not."""
    from detector.model import BUNDLED_MODEL, load_model

    assert load_model(BUNDLED_MODEL).config["calibration"]["precision"] == "fp32"
    served = Detector.from_pretrained(BUNDLED_MODEL)
    assert served.precision == "fp32" and next(served.model.parameters()).dtype == torch.float32


def test_folding_batch_norms_keeps_the_bundled_models_outputs():
    """The detector serves the model with each BatchNorm folded into its convolution: same logits, no BatchNorm left."""
    from detector.detector import fold_batch_norms
    from detector.model import BUNDLED_MODEL, load_model

    plain = load_model(BUNDLED_MODEL).model.float()
    folded = fold_batch_norms(load_model(BUNDLED_MODEL).model.float())
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in folded.modules())
    assert any(isinstance(module, torch.nn.BatchNorm2d) for module in plain.modules())
    size = load_model(BUNDLED_MODEL).config["pretrained_cfg"]["input_size"]  # whatever the bundled model is
    pixels = torch.randn(2, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(folded(pixels), plain(pixels), atol=1e-4)


@pytest.mark.skipif(not (SHARED_DATA / "manifest.csv").is_file(), reason="needs ../shared/data")
def test_the_bundled_model_tells_held_out_gan_faces_from_real_photos():
    """A floor under the shipped weights (a broken or swapped file fails it): on images of the training run's
    validation split, never trained on, GAN faces score above UTKFace photos (ROC-AUC over all of them: 0.999)."""
    from sklearn.metrics import roc_auc_score

    from training.data import DataSpec, load_splits

    spec = DataSpec(str(SHARED_DATA / "manifest.csv"), image_column="file", group_column="group", source_column="source")
    _, validation = load_splits(spec, check=False)
    picks = {source: [row["image"]["path"] for row in validation if row["source"] == source][:24]
             for source in ("gan_faces_site", "utkface_adults")}
    detector = Detector.from_pretrained()
    scores = [a.p_fake for source in picks for a in detector.analyze_batch(picks[source])]
    assert roc_auc_score([1] * 24 + [0] * 24, scores) >= 0.9


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_folding_keeps_the_outputs_of_each_architecture(architecture, tmp_path):
    """Batch norms with statistics of their own (not the identity of a fresh model) fold away, activations kept:
    MobileNetV2's BatchNormAct2d carries its ReLU6, and its projection conv is registered apart from its BN."""
    from detector.detector import fold_batch_norms

    model = load_model(write_model_folder(tmp_path / "model", architecture=architecture)).model.float()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    norms = sum(isinstance(module, torch.nn.BatchNorm2d) for module in model.modules())
    pixels = torch.randn(2, 3, 96, 96, generator=generator)
    with torch.no_grad():
        expected = model(pixels)
        folded = fold_batch_norms(model)
        assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in folded.modules()) and norms > 10
        assert torch.allclose(folded(pixels), expected, atol=1e-4 * float(expected.abs().max()))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_each_architecture_is_served_from_its_config(architecture, tmp_path, face_paths):
    """The architecture comes from config.json: both CNNs load, analyse and explain at both CAM stages."""
    folder = write_model_folder(tmp_path / "model", architecture=architecture)
    assert json.loads((folder / "config.json").read_text())["architecture"] == architecture
    for stage, grid in ((-1, (2, 2)), (-2, (4, 4))):
        detector = Detector.from_pretrained(folder, precision="fp32", cam_stage=stage)
        analysis = detector.analyze(face_paths[0], faces=True)
        assert analysis.cam.shape == grid and sum(analysis.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert not any(parameter.requires_grad for parameter in detector.model.parameters())


def test_a_model_handed_in_is_not_changed(model_dir):
    """Detector folds BatchNorms and casts weights in its own copy: the caller's model keeps its layers and values."""
    loaded = load_model(model_dir)
    before = {name: value.clone() for name, value in loaded.model.state_dict().items()}
    Detector(loaded, device="cpu", precision="bf16")
    assert any(isinstance(module, torch.nn.BatchNorm2d) for module in loaded.model.modules())
    after = loaded.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
