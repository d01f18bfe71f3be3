"""training.average: weight-space averaging of real timm detector folders."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from conftest import write_model_folder
from detector import Detector, DetectorError
from detector.model import load_model, weights_sha256
from training import average, publish
from training.train import parse_args as train_args


@pytest.fixture(scope="module")
def parents(tmp_path_factory) -> tuple[Path, Path]:
    first = write_model_folder(tmp_path_factory.mktemp("first"), seed=1)
    config = json.loads((first / "config.json").read_text())
    config["calibration"] = {"temperature": 2.0, "bias": 0.0, "threshold": 0.9, "target_fpr": 0.05}
    (first / "config.json").write_text(json.dumps(config))  # a published model: calibrated for its own weights
    second = write_model_folder(tmp_path_factory.mktemp("second"), seed=2)
    (second / "training.json").write_text(json.dumps({"epoch": 7, "args": {"framing": 1.0}}))
    return first, second


def test_weighted_mean_of_every_float_tensor(tmp_path, parents, face_paths):
    first, second = parents
    out = average.main(["--model", str(first), "--model", str(second), "--weight", "1", "--weight", "3",
                        "--output-dir", str(tmp_path / "averaged")])
    a, b, mean = (load_file(str(folder / "model.safetensors")) for folder in (first, second, out))
    assert mean.keys() == a.keys()
    checked = 0
    for key, value in mean.items():
        if value.is_floating_point():
            np.testing.assert_allclose(value.numpy(), 0.25 * a[key].numpy() + 0.75 * b[key].numpy(), rtol=1e-6, atol=1e-7)
            checked += 1
        else:  # BatchNorm's num_batches_tracked: the last model's
            assert (value == b[key]).all()
    assert checked > 100
    assert not any((mean[k] == b[k]).all() for k in ("conv1.weight", "fc.weight"))

    config = json.loads((out / "config.json").read_text())
    assert "calibration" not in config  # the parents' calibration does not fit the average
    training = json.loads((out / "training.json").read_text())
    assert training["epoch"] == 7 and training["args"] == {"framing": 1.0}
    assert training["averaged"] == {"models": [str(first), str(second)], "weights": [0.25, 0.75],
                                    "sha256": [weights_sha256(first), weights_sha256(second)]}
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


def test_the_card_recipe_says_the_weights_are_an_average(parents):
    args = vars(train_args(["--dataset", "faces.csv", "--init-from", "models/x", "--framing", "1.0"]))
    rows = dict(publish.recipe_rows({"epoch": 7, "args": args}))
    assert "weight averaging" not in rows
    rows = dict(publish.recipe_rows({"epoch": 7, "args": args,
                                     "averaged": {"models": ["models/x", "runs/y/best"], "weights": [0.5, 0.5]}}))
    assert rows["weight averaging"].startswith("the published weights are 0.5 × `models/x` + 0.5 × `runs/y/best`")
    rows = dict(publish.recipe_rows({"epoch": 7, "args": args, "averaged": {
        "models": ["models/x", "runs/y/best"], "weights": [0.5, 0.5], "sha256": ["f344db63" + "0" * 56, "ab" * 32]}}))
    assert rows["weight averaging"].startswith("the published weights are 0.5 × `models/x` (weights sha256 f344db630000…)"
                                               " + 0.5 × `runs/y/best` (weights sha256 abababababab…)")
    assert "calibrated again" in rows["weight averaging"]
