"""training.average: weight-space averaging of real timm detector folders."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import ROOT, SHARED_DATA, small_manifest, write_model_folder
from detector import Detector, DetectorError
from detector.model import load_model, weights_sha256
from training import average, evaluate, publish
from training.data import DataSpec, load_splits
from training.train import parse_args as train_args

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "manifest.csv").is_file(), reason="needs ../shared/data")
BN = ["--bn-batches", "2", "--bn-batch-size", "3"]  # 6 of the 8 training photos


def with_statistics(folder: Path, seed: int) -> Path:
    """Batch-norm running statistics unlike any photo's (a trained model's are its own data's): random."""
    state = load_file(str(folder / "model.safetensors"))
    generator = torch.Generator().manual_seed(seed)
    for key in [key for key in state if key.endswith(("running_mean", "running_var"))]:
        state[key] = torch.rand(state[key].shape, generator=generator) * (3 if key.endswith("var") else 1)
    save_file(state, str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def faces_csv(tmp_path_factory) -> Path:
    return small_manifest(tmp_path_factory.mktemp("data") / "faces.csv",
                          {("lfw_faceswap", "real"): 4, ("lfw_faceswap", "fake"): 4, ("utkface_adults", "real"): 4,
                           ("sdfd_diffusion", "fake"): 4})


@pytest.fixture(scope="module")
def parents(tmp_path_factory, faces_csv) -> tuple[Path, Path]:
    first = with_statistics(write_model_folder(tmp_path_factory.mktemp("first"), seed=1), seed=1)
    config = json.loads((first / "config.json").read_text())
    config["calibration"] = {"temperature": 2.0, "bias": 0.0, "threshold": 0.9, "target_fpr": 0.05}
    (first / "config.json").write_text(json.dumps(config))  # a published model: calibrated for its own weights
    second = with_statistics(write_model_folder(tmp_path_factory.mktemp("second"), seed=2), seed=2)
    args = vars(train_args(["--dataset", str(faces_csv), "--image-column", "file", "--source-column", "source",
                            "--img-size", "64", "--val-fraction", "0.5", "--framing", "1.0"]))
    (second / "training.json").write_text(json.dumps({"epoch": 7, "args": args}))
    return first, second


def statistics(model: torch.nn.Module, batches) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each batch-norm layer's input, per channel: the mean over `batches` of each batch's mean and unbiased variance
    (the network in training mode, so every layer normalises with its batch's own statistics)."""
    seen: dict[str, list] = {}

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0].transpose(0, 1).flatten(1).double()
            seen.setdefault(name, []).append((x.mean(1), x.var(1, unbiased=True)))
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules()
               if isinstance(module, torch.nn.BatchNorm2d)]
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    for handle in handles:
        handle.remove()
    return {name: tuple(torch.stack(part).mean(0) for part in zip(*values)) for name, values in seen.items()}


def test_weighted_mean_of_every_weight(tmp_path, parents, face_paths):
    first, second = parents
    out = average.main(["--model", str(first), "--model", str(second), "--weight", "1", "--weight", "3",
                        "--output-dir", str(tmp_path / "averaged"), *BN])
    a, b, mean = (load_file(str(folder / "model.safetensors")) for folder in (first, second, out))
    assert mean.keys() == a.keys()
    checked = 0
    for key, value in mean.items():
        if key.endswith(("running_mean", "running_var")):
            continue  # measured again on photos (the next test)
        if value.is_floating_point():
            np.testing.assert_allclose(value.numpy(), 0.25 * a[key].numpy() + 0.75 * b[key].numpy(), rtol=1e-6, atol=1e-7)
            checked += 1
        else:  # BatchNorm's num_batches_tracked: the batches its statistics were measured on
            assert value.item() == 2
    assert checked > 100
    assert not any((mean[k] == b[k]).all() for k in ("conv1.weight", "fc.weight"))

    config = json.loads((out / "config.json").read_text())
    assert "calibration" not in config  # the parents' calibration does not fit the average
    training = json.loads((out / "training.json").read_text())
    assert training["epoch"] == 7 and training["args"]["framing"] == 1.0
    assert training["averaged"] == {"models": [str(first), str(second)], "weights": [0.25, 0.75],
                                    "sha256": [weights_sha256(first), weights_sha256(second)],
                                    "batch_norm": {"recomputed": True, "photos": 6, "batches": 2, "batch_size": 3,
                                                   "seed": 0, "dataset": training["args"]["dataset"], "split": "train"}}
    assert training["averaged"]["sha256"][0] != training["averaged"]["sha256"][1]

    assert load_model(out).config["architecture"] == config["architecture"]
    analysis = Detector.from_pretrained(out, device="cpu").analyze(face_paths[0])
    assert 0.0 <= analysis.p_fake <= 1.0


def test_refuses_what_cannot_be_averaged(tmp_path, parents):
    first, second = parents
    with pytest.raises(DetectorError, match="two models or more"):
        average.average([str(first)], tmp_path / "one")
    with pytest.raises(DetectorError, match="one weight per model"):
        average.average([str(first), str(second)], tmp_path / "w", [0.5])
    with pytest.raises(DetectorError, match="not all zero"):
        average.average([str(first), str(second)], tmp_path / "z", [0.0, 0.0])

    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_text((second / "config.json").read_text())
    state = load_file(str(second / "model.safetensors"))
    state.pop("fc.bias")
    save_file(state, str(cut / "model.safetensors"))
    with pytest.raises(DetectorError, match="same layers"):
        average.average([str(first), str(cut)], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # nothing half-written left behind
    assert not list(tmp_path.glob(".bad-staging-*"))


def test_the_card_text_of_an_average_names_its_models_and_how_its_statistics_were_made():
    args = vars(train_args(["--dataset", "faces.csv", "--init-from", "models/x", "--framing", "1.0"]))
    assert publish.averaged_text({"epoch": 7, "args": args}) is None
    rows = dict(publish.recipe_rows({"epoch": 7, "args": args}))
    assert rows["epochs"].endswith("these weights are from epoch 7 (best validation ROC-AUC)")
    averaged = {"models": ["models/x", "runs/y/best"], "weights": [0.5, 0.5], "sha256": ["f344db63" + "0" * 56, "ab" * 32]}
    text = publish.averaged_text({"epoch": 7, "args": args, "averaged": averaged})  # averaged before 2026-12-07
    assert ("0.5 × `models/x` (weights sha256 f344db630000…) + 0.5 × `runs/y/best` (weights sha256 abababababab…)"
            in text)
    assert "statistics averaged like the weights (not measured again on photos)" in text and "calibrated again" in text
    rows = dict(publish.recipe_rows({"epoch": 7, "args": args, "averaged": averaged}))
    assert rows["epochs"].endswith("that run's weights are from epoch 7 (best validation ROC-AUC)")


def test_batch_norm_statistics_are_measured_on_training_photos_not_averaged(tmp_path, parents, faces_csv):
    """After averaging, every batch-norm layer's running mean and variance are those of the averaged network's own
    activations on the training photos drawn (update_bn: the mean over the batches), not the mean of the two models'
    statistics, which belong to neither network."""
    from training.train import photo_batches

    first, second = parents
    out = average.average([str(first), str(second)], tmp_path / "averaged", bn_batches=2, bn_batch_size=3, bn_seed=4)
    stored = load_file(str(out / "model.safetensors"))
    a, b = (load_file(str(folder / "model.safetensors")) for folder in parents)
    model = load_model(out).model.float()
    train_set = load_splits(DataSpec(str(faces_csv), image_column="file", source_column="source", val_fraction=0.5),
                            check=False)[0]
    measured = statistics(model, photo_batches(train_set, model, 6, 4, 3))
    assert len(measured) > 50  # every layer of the ResNeXt
    for name, (mean, variance) in measured.items():
        np.testing.assert_allclose(stored[f"{name}.running_mean"].numpy(), mean.numpy(), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(stored[f"{name}.running_var"].numpy(), variance.numpy(), rtol=1e-3, atol=1e-4)
    name = next(iter(measured))
    averaged = 0.5 * a[f"{name}.running_mean"] + 0.5 * b[f"{name}.running_mean"]
    assert (stored[f"{name}.running_mean"] - averaged).abs().max() > 0.1  # not the models' statistics averaged


def test_without_a_record_of_its_training_data_averaging_names_the_remedy(tmp_path, parents):
    first, second = parents
    with pytest.raises(DetectorError, match="pass --dataset"):
        average.average([str(second), str(first)], tmp_path / "x")  # the last one (first) has no training.json
    assert not (tmp_path / "x").exists()


def test_the_card_of_an_averaged_folder_describes_the_average(tmp_path, parents, faces_csv):
    """Published, an averaged folder's card says its weights are the average of the named models, with batch-norm
    statistics measured again, and that the recipe table is the last model's."""
    first, second = parents
    out = average.main(["--model", str(first), "--model", str(second), "--output-dir", str(tmp_path / "averaged"), *BN])
    evaluate.main(["--model", str(out), "--dataset", str(faces_csv), "--image-column", "file", "--source-column",
                   "source", "--split", "all", "--output-dir", str(tmp_path / "eval"), "--precision", "fp32"])
    folder = publish.main(["--license-file", str(ROOT / "LICENSE.md"), "--model", str(out), "--metrics",
                           str(tmp_path / "eval" / "metrics.json"), "--output-dir", str(tmp_path / "published")])
    text = " ".join((folder / "README.md").read_text().split())
    assert (f"they are the average of 2 models, tensor by tensor (`training.average`): 0.5 × `{first}` (weights sha256 "
            f"{weights_sha256(first)[:12]}…) + 0.5 × `{second}`") in text
    assert "batch-norm statistics were then measured again on 6 training photos (2 batches of 3, seed 0" in text
    assert f"The recipe below is that of the last of them, `{second}`." in text
    assert "that run's weights are from epoch 7" in text
