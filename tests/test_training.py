"""Training on tiny folders of real face photos: checkpoints, resume, and the data errors a user can make."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA, TEST_IMG_SIZE, photos
from detector import Detector
from detector.model import LABEL_NAMES, create_model, load_model, weights_sha256
from training import train
from training.data import DataError, DataSpec, attach_transform, collate, load_splits, parse_label_map, train_transform

REAL = LABEL_NAMES.index("real")
FAKE = LABEL_NAMES.index("fake")
SMOKE = ["--img-size", str(TEST_IMG_SIZE), "--workers", "0", "--batch-size", "4", "--max-steps-per-epoch", "2",
         "--mixed-precision", "no"]

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "manifest.csv").is_file(), reason="needs ../shared/data")


@pytest.fixture(scope="module")
def reals() -> list[Path]:
    return photos("utkface_adults", "real")


@pytest.fixture(scope="module")
def fakes() -> list[Path]:
    return photos("sdfd_diffusion", "fake")


def image_folder(root: Path, classes: dict[str, list[Path]]) -> Path:
    """An `imagefolder` dataset: one sub-folder per class name, holding copies of the given photos."""
    for name, paths in classes.items():
        (root / name).mkdir(parents=True)
        for path in paths:
            shutil.copy(path, root / name / path.name)
    return root


def run(dataset: Path, output: Path, *extra: str) -> dict:
    return train.main(["--dataset", str(dataset), "--output-dir", str(output), *SMOKE, *extra])


def assert_no_model(output: Path) -> None:
    assert not (output / "best").exists()
    assert not (output / "metrics.jsonl").exists()


@pytest.mark.slow
def test_train_resume_and_serve(tmp_path, reals, fakes):
    """2 epochs × 2 steps, resume to epoch 3; best/ loads unchanged in the detector and the app's loader.

    The folder mixes a grayscale JPEG and an RGBA PNG in with the colour photos: both must train.
    """
    data = image_folder(tmp_path / "faces", {"real": reals[:5], "fake": fakes[:5]})
    Image.open(reals[5]).convert("L").save(data / "real" / "gray.jpg")
    rgba = Image.open(fakes[5]).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    rgba.save(data / "fake" / "alpha.png")
    output = tmp_path / "run"

    state = run(data, output, "--epochs", "2")
    assert state["epoch"] == 2
    assert (output / "best" / "model.safetensors").is_file() and (output / "last" / "trainer_state.json").is_file()
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert all(np.isfinite(row["train_loss"]) and 0 <= row["val_accuracy"] <= 1 for row in rows)
    record = json.loads((output / "best" / "training.json").read_text())
    assert record["data"]["train"]["n"] + record["data"]["validation"]["n"] == 12
    assert record["args"]["img_size"] == TEST_IMG_SIZE

    state = run(data, output, "--epochs", "3", "--resume")
    assert state["epoch"] == 3
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]

    loaded = load_model(output / "best")
    assert loaded.label_names == list(LABEL_NAMES)
    run(data, tmp_path / "more", "--epochs", "1", "--init-from", str(output / "best"), "--lr", "0")
    started = load_model(tmp_path / "more" / "best").model.state_dict()  # lr 0: the weights it started from
    fresh = create_model(train.DEFAULT_ARCHITECTURE, img_size=TEST_IMG_SIZE).state_dict()
    for name, weights in loaded.model.state_dict().items():
        if name.endswith("weight"):
            assert torch.equal(started[name], weights) and not torch.equal(fresh[name], weights), name
    # timm's facts about its own ImageNet weights (tag, licence) never enter a continuation's config
    continued = json.loads((tmp_path / "more" / "best" / "config.json").read_text())["pretrained_cfg"]
    assert not {"tag", "license", "origin_url"} & set(continued), continued
    # the record names the weights it started from by their hash: the folder may later hold others
    assert json.loads((tmp_path / "more" / "best" / "training.json").read_text())["init_sha256"] == weights_sha256(output / "best")
    assert record["init_sha256"] is None
    # ...and keeps naming them when the run is resumed (the checkpoint, not --init-from, gives the weights then)
    assert run(data, tmp_path / "more", "--epochs", "2", "--init-from", str(output / "best"), "--lr", "0",
               "--resume")["init_sha256"] == weights_sha256(output / "best")
    detector = Detector.from_pretrained(output / "best")
    assert tuple(detector.preprocess.config["input_size"]) == (3, TEST_IMG_SIZE, TEST_IMG_SIZE)
    analyses = detector.analyze_batch([data / "real" / "gray.jpg", data / "fake" / "alpha.png", reals[0]])
    for analysis in analyses:
        assert set(analysis.probabilities) == set(LABEL_NAMES)
        assert sum(analysis.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_two_runs_in_one_process_may_use_different_precisions(tmp_path, reals, fakes):
    """A notebook or a script may train twice in one process: accelerate keeps its state between Accelerator
    objects and used to refuse the second run's precision ("AcceleratorState has already been initialized")."""
    data = image_folder(tmp_path / "data", {"real": reals, "fake": fakes})
    smoke = [arg for arg in SMOKE if arg not in ("--mixed-precision", "no")]
    for index, precision in enumerate(["bf16", "no"]):
        state = train.main(["--dataset", str(data), "--output-dir", str(tmp_path / f"run{index}"), *smoke,
                            "--epochs", "1", "--mixed-precision", precision])
        assert state["epoch"] == 1


def test_grayscale_and_rgba_become_rgb_tensors(tmp_path, reals, fakes):
    """Mode conversion in the training transform: L, LA, RGBA and P images give 3-channel tensors."""
    data = image_folder(tmp_path / "faces", {"real": reals[:2], "fake": fakes[:5]})
    source = Image.open(reals[0])
    for mode, suffix in (("L", "jpg"), ("LA", "png"), ("RGBA", "png"), ("P", "png")):
        source.convert(mode).save(data / "real" / f"{mode}.{suffix}")
    train_set, val_set = load_splits(DataSpec(str(data)))
    assert len(train_set) + len(val_set) == 11
    model_config = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    for dataset in (train_set, val_set):
        batch = collate(list(attach_transform(dataset, train_transform(model_config))))
        assert batch["pixel_values"].shape[1:] == (3, 32, 32)
        assert batch["pixel_values"].isfinite().all()


@pytest.mark.parametrize("classes, label_map, expected", [
    (("Real", "Fake"), None, {"Real": REAL, "Fake": FAKE}),  # real/fake in any case map themselves
    (("Real", "Fake"), "Real=real,Fake=fake", {"Real": REAL, "Fake": FAKE}),
    (("original", "manipulated"), "original=real,manipulated=fake", {"original": REAL, "manipulated": FAKE}),
])
def test_label_mapping(tmp_path, reals, fakes, classes, label_map, expected):
    """Every image ends up with the target its class name maps to, whatever order the loader gave the classes."""
    data = image_folder(tmp_path / "faces", {classes[0]: reals[:5], classes[1]: fakes[:5]})
    spec = DataSpec(str(data), label_map=parse_label_map(label_map))
    for part in load_splits(spec):
        for row in part:
            assert row["target"] == expected[Path(row["image"]["path"]).parent.name]


@pytest.mark.parametrize("classes, label_map, message", [
    (("original", "manipulated"), None, ["manipulated", "original", "--label-map"]),
    (("original", "manipulated"), "original=real", ["manipulated", "--label-map"]),
    (("real", "fake"), "real=real,fake=real", ["zero examples", "fake"]),
    (("real",), None, ["one sub-folder per class", "real/ and fake/"]),  # imagefolder: no label column at all
])
def test_label_errors_name_the_labels(tmp_path, reals, fakes, classes, label_map, message):
    """Unmapped class names and empty classes stop the run before any model is made, and say how to fix it."""
    data = image_folder(tmp_path / "faces", dict(zip(classes, (reals[:3], fakes[:3]))))
    extra = ["--label-map", label_map] if label_map else []
    with pytest.raises(DataError) as error:
        run(data, tmp_path / "run", *extra)
    for word in message:
        assert word in str(error.value)
    assert_no_model(tmp_path / "run")


def test_too_few_images_to_split(tmp_path, reals, fakes):
    data = image_folder(tmp_path / "faces", {"real": reals[:2], "fake": fakes[:2]})
    with pytest.raises(DataError, match="Too few images .* at least 5"):
        run(data, tmp_path / "run")
    run(data, tmp_path / "run", "--val-fraction", "0.5", "--epochs", "0")  # two folds: enough
    assert_no_model(tmp_path / "run")


def test_unreadable_image_is_named(tmp_path, reals, fakes):
    data = image_folder(tmp_path / "faces", {"real": reals[:3], "fake": fakes[:3]})
    (data / "fake" / "broken.jpg").write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(DataError, match=r"Unreadable image .*broken\.jpg"):
        run(data, tmp_path / "run")
    assert_no_model(tmp_path / "run")


def test_csv_group_split_keeps_groups_apart(tmp_path):
    """A CSV (like the shared manifest): DFDC pairs share a group and must land on one side; ungrouped rows split freely."""
    with (SHARED_DATA / "manifest.csv").open() as f:
        manifest = list(csv.DictReader(f))
    groups = sorted({row["group"] for row in manifest if row["source"] == "dfdc_faces"})[:15]
    rows = [row for row in manifest if row["group"] in groups]
    rows += [row for row in manifest if row["source"] == "lfw_faceswap"][::100]  # no group
    table = tmp_path / "faces.csv"
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "label", "source", "group"])
        writer.writeheader()
        for row in rows:
            writer.writerow({"file": str(SHARED_DATA / row["file"]), "label": row["label"], "source": row["source"],
                             "group": row["group"]})
    spec = DataSpec(str(table), image_column="file", group_column="group", source_column="source")
    train_set, val_set = load_splits(spec)
    assert len(train_set) + len(val_set) == len(rows)
    grouped = lambda dataset: {group for group in dataset["group"] if group}  # noqa: E731
    assert grouped(train_set) and grouped(val_set)
    assert not grouped(train_set) & grouped(val_set)
    for dataset in (train_set, val_set):
        assert set(dataset["target"]) == {REAL, FAKE}


def last_weights(output: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(output / "last" / "model.safetensors"))


def record_training_batches(monkeypatch) -> list[str]:
    """Digests of the pixels of every batch the model trains on, in order (a forward pre-hook in this process: what
    the loader's workers made, after sampling and augmentation)."""
    seen: list[str] = []
    build = train.imagenet_model

    def recording(*args, **kwargs):
        model = build(*args, **kwargs)

        def record(module, inputs):
            if module.training:
                seen.append(hashlib.sha256(inputs[0].detach().contiguous().numpy().tobytes()).hexdigest())
        model.register_forward_pre_hook(record)
        return model

    monkeypatch.setattr(train, "imagenet_model", recording)
    return seen


def logged_rows(output: Path) -> list[dict]:
    """metrics.jsonl without what depends on the clock."""
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in row.items() if key != "train_images_per_s"} for row in rows]


class Stop(Exception):
    """A simulated kill: nothing is cleaned up on the way out (see the staging folder left behind)."""


@pytest.mark.slow
def test_a_run_stopped_anywhere_resumes_exactly_as_the_uninterrupted_run(tmp_path, reals, fakes, monkeypatch):
    """3 epochs straight vs stopped in epoch 2 at each point of its end (before the checkpoint, inside accelerate's
    save, between the checkpoint and the metrics log), then --resume: the same batches (order and augmented pixels,
    with 2 loader workers), the same weights, counters and one metrics row per epoch."""
    import accelerate

    data = image_folder(tmp_path / "faces", {"real": reals[:6], "fake": fakes[:6]})
    common = ["--epochs", "3", "--scheduler", "cosine", "--warmup-epochs", "0.5", "--lr", "1e-3", "--patience", "5",
              "--workers", "2"]
    steps = 2  # SMOKE's --max-steps-per-epoch
    seen = record_training_batches(monkeypatch)
    straight = run(data, tmp_path / "straight", *common)
    batches = list(seen)
    assert len(batches) == 3 * steps and len(set(batches)) == len(batches)  # each epoch draws anew
    save_state = accelerate.Accelerator.save_state

    def stop_in_epoch_two(real):
        def stopping(*args, **kwargs):
            if len(seen) == 2 * steps:  # at the end of epoch 2
                raise Stop
            return real(*args, **kwargs)
        return stopping

    def stop_inside_save(self, folder, *args, **kwargs):
        save_state(self, folder, *args, **kwargs)
        if len(seen) == 2 * steps:
            raise Stop  # accelerate's files written, not yet put in place
        return None

    points = {
        "before the checkpoint": (train, "save_checkpoint", stop_in_epoch_two(train.save_checkpoint), 1),
        "inside accelerate's save": (accelerate.Accelerator, "save_state", stop_inside_save, 1),
        "before the metrics row": (train, "append_log", stop_in_epoch_two(train.append_log), 2),
    }
    for point, (owner, name, stopping, saved_epoch) in points.items():
        output = tmp_path / point.replace(" ", "-").replace("'", "")
        seen.clear()
        with monkeypatch.context() as patch:
            patch.setattr(owner, name, stopping)
            with pytest.raises(Stop):
                run(data, output, *common)
        saved = json.loads((output / "last" / "trainer_state.json").read_text())
        assert saved["epoch"] == saved_epoch and saved["step"] == saved_epoch * steps, point
        seen.clear()
        resumed = run(data, output, *common, "--resume")
        assert seen == batches[saved_epoch * steps:], point
        assert resumed == straight, point
        assert logged_rows(output) == logged_rows(tmp_path / "straight"), point
        assert [row["epoch"] for row in logged_rows(output)] == [1, 2, 3]
        assert not list(output.glob(".last-*")), point  # a staging folder left by the stop is gone
        a, b = last_weights(tmp_path / "straight"), last_weights(output)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (point, key)


def test_resume_mends_a_metrics_log_written_in_the_old_order(tmp_path):
    """Logs of runs stopped before the checkpoint came first: an epoch re-run after a stop holds two rows, an epoch
    the checkpoint never reached one; the resume keeps one row per finished epoch, the latest."""
    rows = [{"epoch": 1, "val_loss": 0.9}, {"epoch": 2, "val_loss": 0.8}, {"epoch": 2, "val_loss": 0.7},
            {"epoch": 3, "val_loss": 0.6}]
    for row in rows:
        train.append_log(tmp_path, row)
    train.reconcile_log(tmp_path, 2, None)
    assert logged_rows(tmp_path) == [{"epoch": 1, "val_loss": 0.9}, {"epoch": 2, "val_loss": 0.7}]
    with (tmp_path / "metrics.csv").open() as f:
        assert [row["val_loss"] for row in csv.DictReader(f)] == ["0.9", "0.7"]
    train.reconcile_log(tmp_path, 3, {"epoch": 3, "val_loss": 0.5})  # the checkpoint's own row, not yet logged
    assert [row["val_loss"] for row in logged_rows(tmp_path)] == [0.9, 0.7, 0.5]


def test_learning_rate_is_a_function_of_the_step():
    args = train.parse_args(["--dataset", "x", "--lr", "0.01", "--epochs", "4", "--warmup-epochs", "1",
                             "--scheduler", "cosine"])
    rates = [train.learning_rate(args, step, 10) for step in range(40)]
    assert rates[0] == pytest.approx(0.001) and rates[9] == pytest.approx(0.01)  # warm-up over the first epoch
    assert rates[10] == pytest.approx(0.01) and rates[25] == pytest.approx(0.005, rel=0.05)
    assert rates[-1] < 1e-4 and all(a >= b for a, b in zip(rates[9:], rates[10:]))


@pytest.mark.slow
def test_two_processes_follow_the_one_process_schedule(tmp_path, reals, fakes):
    """Two CPU processes (gloo; `accelerate launch --multi_gpu` with ACCELERATE_USE_CPU, since `--cpu --num_processes 2`
    alone starts one process): the learning rate at the end of each epoch equals the 1-process run's; a scheduler
    stepped once per process would have run through the schedule twice as fast."""
    import os
    import subprocess
    import sys

    data = image_folder(tmp_path / "faces", {"real": photos("utkface_adults", "real", 12),
                                             "fake": photos("sdfd_diffusion", "fake", 12)})
    args = ["--dataset", str(data), *SMOKE, "--epochs", "3", "--scheduler", "cosine", "--lr", "1e-3", "--skip-image-check"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    for processes, name in ((1, "one"), (2, "two")):
        command = [sys.executable, "-m", "accelerate.commands.launch", *(["--multi_gpu"] if processes > 1 else ["--cpu"]),
                   "--num_processes", str(processes),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "-m", "training.train", *args, "--output-dir", str(tmp_path / name)]
        done = subprocess.run(command, cwd=Path(__file__).resolve().parent.parent, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    logs = {name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("one", "two")}
    assert {row["processes"] for row in logs["one"]} == {1} and {row["processes"] for row in logs["two"]} == {2}
    assert [row["lr"] for row in logs["two"]] == pytest.approx([row["lr"] for row in logs["one"]])
    assert logs["one"][0]["lr"] > logs["one"][1]["lr"] > logs["one"][2]["lr"] >= 0
    assert json.loads((tmp_path / "two" / "last" / "trainer_state.json").read_text())["step"] == 6


def test_the_backbone_rate_is_a_function_of_the_step():
    """--head-only-epochs: 0 for the backbone while the head trains alone, then a linear rise over --warmup-epochs to
    --backbone-lr-scale; without it the backbone keeps its scale from the first step."""
    args = train.parse_args(["--dataset", "x", "--epochs", "4", "--warmup-epochs", "0.5", "--scheduler", "cosine",
                             "--head-only-epochs", "1", "--backbone-lr-scale", "0.2"])
    factors = [train.backbone_factor(args, step, 10) for step in range(40)]
    assert factors[:10] == [0.0] * 10
    assert factors[10:15] == pytest.approx([0.04, 0.08, 0.12, 0.16, 0.2]) and set(factors[15:]) == {0.2}
    plain = train.parse_args(["--dataset", "x", "--warmup-epochs", "0.5", "--scheduler", "cosine",
                              "--backbone-lr-scale", "0.5"])
    assert {train.backbone_factor(plain, step, 10) for step in range(20)} == {0.5}
    with pytest.raises(SystemExit):
        train.parse_args(["--dataset", "x", "--head-only-epochs", "1"])  # the plateau schedule has no step function


@pytest.mark.slow
def test_head_only_epochs_leave_every_other_weight_and_statistic_as_they_started(tmp_path, reals, fakes, monkeypatch):
    """A linear probe, then fine-tuning: after the head-only epoch only the classifier has moved (batch-norm running
    statistics included: the frozen layers run in eval mode); the resumed second epoch moves the rest."""
    start: dict[str, torch.Tensor] = {}
    build = train.imagenet_model

    def remembering(*args, **kwargs):
        model = build(*args, **kwargs)
        start.update({name: tensor.detach().clone() for name, tensor in model.state_dict().items()})
        return model

    monkeypatch.setattr(train, "imagenet_model", remembering)
    data = image_folder(tmp_path / "faces", {"real": reals[:6], "fake": fakes[:6]})
    recipe = ["--scheduler", "cosine", "--lr", "1e-2", "--warmup-epochs", "0.5", "--head-only-epochs", "1",
              "--backbone-lr-scale", "0.5"]
    run(data, tmp_path / "run", "--epochs", "1", *recipe)
    after_probe = last_weights(tmp_path / "run")
    head = {name for name in start if name.startswith("classifier.")}
    assert head and all(not torch.equal(after_probe[name], start[name]) for name in head if name.endswith("weight"))
    moved = [name for name in start if name not in head and not torch.equal(after_probe[name], start[name])]
    assert moved == []
    row = logged_rows(tmp_path / "run")[0]
    assert row["lr_backbone"] == 0.0 and row["lr"] > 0
    run(data, tmp_path / "run", "--epochs", "2", "--resume", *recipe)
    tuned = last_weights(tmp_path / "run")
    assert not torch.equal(tuned["conv_stem.weight"], start["conv_stem.weight"])
    assert not torch.equal(tuned["bn1.running_mean"], start["bn1.running_mean"])
    assert logged_rows(tmp_path / "run")[1]["lr_backbone"] > 0


def test_a_training_seed_retrains_a_recipe_on_the_same_validation_split(tmp_path, reals, fakes):
    """--train-seed changes the start, the sample order and the augmentation, never the split --seed made; left out
    it is --seed, so a run without it is the run with --train-seed equal to --seed."""
    from safetensors.torch import load_file

    from training.data import load_splits, spec_from_args

    data = image_folder(tmp_path / "faces", {"real": reals[:6], "fake": fakes[:6]})
    weights, validation_files = {}, set()
    for name, extra in (("default", []), ("same", ["--train-seed", "42"]), ("other", ["--train-seed", "7"])):
        run(data, tmp_path / name, "--epochs", "1", *extra)
        weights[name] = load_file(str(tmp_path / name / "best" / "model.safetensors"))
        args = train.parse_args(["--dataset", str(data), "--output-dir", str(tmp_path / name), *SMOKE, *extra])
        validation = load_splits(spec_from_args(args), check=False)[1]
        validation_files.add(tuple(sorted(Path(row["image"]["path"]).name for row in validation)))
    assert len(validation_files) == 1
    assert all(torch.equal(weights["default"][k], weights["same"][k]) for k in weights["default"])
    assert not all(torch.equal(weights["default"][k], weights["other"][k]) for k in weights["default"])


def test_a_shared_face_cache_is_filled_once_and_named_in_the_run_record(tmp_path, reals, fakes, monkeypatch):
    """--face-cache FILE (one file for several runs): the first run fills it and records it in args.json (a path that
    stopped the run before its first step when it was not a string); the second run searches no picture."""
    data = image_folder(tmp_path / "data", {"real": reals, "fake": fakes})
    cache = tmp_path / "shared" / "faces.json"
    run(data, tmp_path / "first", "--face-crops", "0.5", "--face-cache", str(cache))
    assert json.loads((tmp_path / "first" / "args.json").read_text())["face_cache"] == str(cache)
    assert len(json.loads(cache.read_text())["faces"]) > 0
    from detector.faces import FaceFinder

    monkeypatch.setattr(FaceFinder, "__call__", lambda self, image: pytest.fail("a cached picture was searched again"))
    run(data, tmp_path / "second", "--face-crops", "0.5", "--face-cache", str(cache))
    assert (tmp_path / "second" / "best").is_dir()
