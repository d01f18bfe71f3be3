"""The single-forward Grad-CAM equals textbook Grad-CAM; the rendering helpers are pure functions."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from timm.data import create_transform, resolve_model_data_config

from conftest import ARCHITECTURES, write_model_folder
from detector import load_image
from detector.explain import activation_map, heatmap, normalise, overlay, predict_with_cam
from detector.model import load_model
from detector.preprocess import Preprocessor, crop_box, data_config

# not the conftest model's: random weights whose CAMs are positive in several cells for both classes
SEEDS = {"resnext50_32x4d": 13, "mobilenetv2_100": 1}
# The blocks textbook Grad-CAM hooks, named here rather than read from feature_info as predict_with_cam does:
# the last feature map (what forward_features returns) and the stage before the last (stride 16).
LAST_BLOCK = {"resnext50_32x4d": "layer4", "mobilenetv2_100": "bn2"}
STAGE_BEFORE = {"resnext50_32x4d": "layer3", "mobilenetv2_100": "blocks.4"}


@pytest.fixture(scope="module", params=ARCHITECTURES)
def model(tmp_path_factory, request):
    folder = write_model_folder(tmp_path_factory.mktemp("explain-model"), seed=SEEDS[request.param],
                                architecture=request.param)
    return load_model(folder).model


@pytest.fixture(scope="module")
def pixels(model, face_paths):
    """Two real face photos (one square, one not), preprocessed for the model."""
    preprocess = Preprocessor(data_config(model))
    return torch.stack([preprocess(load_image(path)) for path in (face_paths[0], face_paths[-1])])


def textbook_gradcam(model: torch.nn.Module, pixels: torch.Tensor, classes: list[int], layer=None) -> torch.Tensor:
    """Grad-CAM as the paper defines it: hooks on a block (default the last), a full backward through the whole model."""
    layer, store = model.get_submodule(LAST_BLOCK[model.pretrained_cfg["architecture"]]) if layer is None else layer, {}

    def keep(module, inputs, output):
        store["activations"] = output
        output.register_hook(lambda grad: store.__setitem__("gradients", grad))

    handle = layer.register_forward_hook(keep)
    try:
        model.zero_grad(set_to_none=True)
        logits = model(pixels)
        logits[torch.arange(len(classes)), torch.tensor(classes)].sum().backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    weights = store["gradients"].mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * store["activations"]).sum(dim=1)).detach()


def assert_close_to_max(actual: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-5) -> None:
    assert actual.shape == expected.shape
    scale = float(expected.abs().max())
    assert scale > 0, "the reference CAM is all zeros: pick another seed"
    assert torch.allclose(actual, expected, rtol=0, atol=tolerance * scale), float((actual - expected).abs().max()) / scale


@pytest.mark.parametrize("target", [None, 0, 1], ids=["predicted class", "class 0", "class 1"])
def test_single_forward_cam_equals_textbook_gradcam(model, pixels, target):
    probabilities, cams, explained = predict_with_cam(model, pixels, target)
    with torch.no_grad():
        predicted = model(pixels).argmax(dim=1)
    expected_classes = predicted.tolist() if target is None else [target] * len(pixels)
    assert explained.tolist() == expected_classes
    assert_close_to_max(cams, textbook_gradcam(model, pixels, expected_classes))


@pytest.mark.parametrize("target", [None, 1], ids=["predicted class", "class 1"])
def test_finer_cam_equals_textbook_gradcam_on_the_stage_before(model, pixels, target):
    """stage=-2: still one forward, an 8×8 grid at 128 px (stride 16), equal to Grad-CAM hooked on the stage before
    the last (ResNeXt's layer3, MobileNetV2's blocks.4)."""
    probabilities, cams, explained = predict_with_cam(model, pixels, target, stage=-2)
    expected_classes = explained.tolist()
    assert cams.shape[-2:] == (pixels.shape[-2] // 16, pixels.shape[-1] // 16)
    stage = model.get_submodule(STAGE_BEFORE[model.pretrained_cfg["architecture"]])
    assert_close_to_max(cams, textbook_gradcam(model, pixels, expected_classes, layer=stage))
    coarse, _, _ = predict_with_cam(model, pixels, target)
    assert torch.allclose(probabilities, coarse, atol=1e-6)  # the same forward, the same probabilities
    with pytest.raises(ValueError, match="stage"):
        predict_with_cam(model, pixels, target, stage=-3)


def test_each_class_gets_its_own_non_trivial_cam(model, pixels):
    """Guards the comparisons above: all-zero maps would make them vacuous."""
    _, real_cams, _ = predict_with_cam(model, pixels, 0)
    _, fake_cams, _ = predict_with_cam(model, pixels, 1)
    for cams in (real_cams, fake_cams):
        assert ((cams.flatten(1) > 0).sum(dim=1) >= 2).all()
    assert not torch.allclose(real_cams, fake_cams)


def test_probabilities_are_the_models_softmax(model, pixels):
    probabilities, _, _ = predict_with_cam(model, pixels)
    with torch.no_grad():
        expected = model(pixels).softmax(dim=1)
    assert torch.allclose(probabilities, expected, atol=1e-6)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(len(pixels)))


@pytest.mark.parametrize("target", [None, 1], ids=["predicted class", "class 1"])
def test_agrees_with_pytorch_grad_cam(model, pixels, target):
    _, cams, explained = predict_with_cam(model, pixels, target)
    height, width = pixels.shape[-2:]
    ours = np.stack([cv2.resize(normalise(cam), (width, height)) for cam in cams.numpy()])
    targets = None if target is None else [ClassifierOutputTarget(target)] * len(pixels)
    with GradCAM(model=model, target_layers=[model.get_submodule(LAST_BLOCK[model.pretrained_cfg["architecture"]])]) as reference:
        theirs = reference(input_tensor=pixels, targets=targets)
    model.zero_grad(set_to_none=True)
    assert theirs.shape == ours.shape == (len(pixels), height, width)
    assert np.allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize("size, crop_pct", [(64, 1.0), (224, 1.0), (224, 0.875)])
def test_preprocessing_matches_timms_eval_transform(model, face_paths, size, crop_pct):
    config = {**resolve_model_data_config(model), "input_size": (3, size, size), "crop_pct": crop_pct}
    preprocess, transform = Preprocessor(config), create_transform(**config)
    for path in face_paths:
        image = load_image(path)
        ours, timms = preprocess(image), transform(image)
        assert ours.shape == timms.shape == (3, size, size)
        # timm rounds the resized size and the crop offset to whole pixels; we crop the exact box (so the CAM maps
        # back exactly). Where timm's crop lands on whole pixels (the square photos here) the two agree closely;
        # elsewhere they differ by a sub-pixel shift.
        tolerance = 0.01 if image.width == image.height else 0.15
        assert (ours - timms).abs().mean() < tolerance, path.name


# Pure rendering helpers: no model needed.

CONFIG = {"input_size": (3, 64, 64), "crop_pct": 1.0}


def test_normalise_is_min_max_and_flat_maps_are_zero():
    cam = np.array([[1.0, 3.0], [2.0, 5.0]], dtype=np.float32)
    assert np.allclose(normalise(cam), [[0, 0.5], [0.25, 1]])
    assert np.array_equal(normalise(np.full((2, 2), 7.0)), np.zeros((2, 2)))
    assert np.array_equal(cam, [[1, 3], [2, 5]])  # input left alone


@pytest.mark.parametrize("size, inside", [((100, 60), np.s_[:, 20:80]), ((60, 100), np.s_[20:80, :]), ((64, 64), np.s_[:, :])])
def test_activation_map_puts_the_cam_in_the_crop_box(size, inside):
    box = crop_box(*size, CONFIG)
    canvas = activation_map(np.ones((2, 2), dtype=np.float32), box, size)
    assert canvas.shape == (size[1], size[0])
    assert np.all(canvas[inside] == 1)
    assert canvas.sum() == canvas[inside].size  # zeros everywhere outside the box


def test_heatmap_is_red_where_hot_and_blue_where_cold():
    cam = np.zeros((10, 20), dtype=np.float32)
    cam[:, 10:] = 1
    pixels = np.asarray(heatmap(cam), dtype=int)
    assert pixels.shape == (10, 20, 3)
    cold, hot = pixels[5, 2], pixels[5, 15]
    assert hot[0] > 100 and hot[0] > hot[1] + 100 and hot[0] > hot[2] + 100
    assert cold[2] > 100 and cold[2] > cold[0] + 100 and cold[2] > cold[1] + 100


def test_overlay_is_at_the_original_size_and_blends():
    image = Image.new("RGB", (90, 50), (0, 255, 0))
    heat = heatmap(activation_map(np.ones((2, 2), dtype=np.float32), crop_box(90, 50, CONFIG), image.size))
    assert heat.size == image.size
    assert overlay(image, heat).size == image.size
    assert overlay(image, heat, alpha=0.0).tobytes() == image.tobytes()
    assert overlay(image, heat, alpha=1.0).tobytes() == heat.tobytes()
    small = heatmap(np.ones((4, 4), dtype=np.float32))  # a heat map of another size is stretched to the image
    assert overlay(image, small).size == image.size
    assert image.getpixel((0, 0)) == (0, 255, 0)  # input left alone
