"""Evaluate → publish → load back: the card quotes the measured numbers, fp16 and the Hub cache serve the same model."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file

from conftest import ROOT, SHARED_DATA, write_model_folder
from detector import Detector, DetectorError
from detector.model import load_model
from training import evaluate, publish
from training.robustness import PERTURBATIONS
from training.data import DataSpec, describe, load_splits
from training.train import parse_args as train_args

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "manifest.csv").is_file(), reason="needs ../shared/data")

# source → how many of its (real, fake) images go into the test CSV: one mixed source, two one-class ones
PICK = {"lfw_faceswap": (3, 3), "utkface_adults": (3, 0), "sdfd_diffusion": (0, 3)}
OWNER_NAME = "someone/deepfake-detector-test"
LICENSE = ["--license-file", str(ROOT / "LICENSE.md")]  # the default licence is "other": its text goes along


@pytest.fixture(scope="module")
def faces_csv(tmp_path_factory) -> Path:
    """A small CSV in the shared manifest's shape (file, label, source, group), pointing at real shared photos."""
    with (SHARED_DATA / "manifest.csv").open() as f:
        manifest = list(csv.DictReader(f))
    rows = []
    for source, (n_real, n_fake) in PICK.items():
        for label, count in (("real", n_real), ("fake", n_fake)):
            rows += [row for row in manifest if row["source"] == source and row["label"] == label][:count]
    path = tmp_path_factory.mktemp("data") / "faces.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "label", "source", "group"])
        writer.writeheader()
        writer.writerows({**{k: row[k] for k in ("label", "source", "group")}, "file": str(SHARED_DATA / row["file"])}
                         for row in rows)
    return path


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, faces_csv) -> Path:
    """A model folder as training.train leaves it: weights, config and a training.json with args and counts."""
    folder = write_model_folder(tmp_path_factory.mktemp("best"), seed=5)
    (folder / "README.md").unlink()
    args = train_args(["--dataset", str(faces_csv), "--image-column", "file", "--source-column", "source",
                       "--img-size", "64", "--optimizer", "adamw", "--lr", "0.0015", "--scheduler", "cosine",
                       "--warmup-epochs", "1", "--aug-strength", "0.7", "--val-fraction", "0.5"])
    spec = DataSpec(str(faces_csv), image_column="file", source_column="source", val_fraction=0.5)
    train_set, val_set = load_splits(spec)
    record = {"epoch": 3, "validation": {"roc_auc": 0.5},
              "data": {"train": describe(train_set, "source"), "validation": describe(val_set, "source")},
              "args": vars(args)}
    (folder / "training.json").write_text(json.dumps(record))
    return folder


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, run_folder, faces_csv) -> Path:
    out = tmp_path_factory.mktemp("eval")
    evaluate.main(["--model", str(run_folder), "--dataset", str(faces_csv), "--image-column", "file",
                   "--source-column", "source", "--split", "all", "--output-dir", str(out), "--batch-size", "8",
                   "--calibrate", "--robustness"])
    return out


LEAVE_ONE_OUT = {  # the shape training.leave_one_out writes (its own test runs it for real)
    "train_arguments": ["--img-size", "96", "--epochs", "4"],
    "rows": {"lfw_faceswap": {"in_domain_validation": {"roc_auc": 0.81},
                              "metrics": {"confusion_matrix": [[5, 1], [4, 2]], "roc_auc": 0.55, "average_precision": 0.6,
                                          "accuracy": 0.5833, "recall": 0.3333, "fpr": 0.1667}},
             "london_studio": {"in_domain_validation": {"roc_auc": 0.9},
                               "metrics": {"confusion_matrix": [[90, 10], [30, 70]], "roc_auc": 0.8, "average_precision": 0.8,
                                           "accuracy": 0.8, "recall": 0.7, "fpr": 0.1},
                               "at_threshold": {"confusion_matrix": [[95, 5], [40, 60]], "roc_auc": 0.8,
                                                "average_precision": 0.8, "threshold": 0.7, "recall": 0.6, "fpr": 0.05},
                               "face_search": {"at_threshold": {"roc_auc": 0.78, "recall": 0.55, "fpr": 0.07},
                                               "per_source": {"london_studio": {"n": 80, "n_real": 80, "n_fake": 0,
                                                                                "fpr": 0.0375, "recall": None}}}}},
}


@pytest.fixture(scope="module")
def published(tmp_path_factory, run_folder, report_dir) -> Path:
    description = tmp_path_factory.mktemp("desc") / "data.md"
    description.write_text("Faces from three public sources (see SOURCES.md); research use only.\n")
    notes = description.with_name("notes.md")
    notes.write_text("The schedule was shortened from 20 to 12 epochs at epoch 6.\n")
    cross_source = description.with_name("leave_one_out.json")
    cross_source.write_text(json.dumps(LEAVE_ONE_OUT))
    compared = description.with_name("compare.md")
    compared.write_text("| | before | after |\n| --- | ---: | ---: |\n| `london_studio`: reals called fake | 93.4% | 4.1% |\n")
    return publish.main([*LICENSE, "--model", str(run_folder), "--metrics", str(report_dir / "metrics.json"), "--notes", str(notes),
                         "--leave-one-out", str(cross_source), "--generalisation", str(compared),
                         "--output-dir", str(tmp_path_factory.mktemp("models") / "detector"),
                         "--data-description", str(description), "--model-name", "deepfake-detector-test",
                         "--repo-id", OWNER_NAME])


def probabilities(source, images) -> np.ndarray:
    return np.array([a.p_fake for a in Detector.from_pretrained(source, device="cpu").analyze_batch(images)])


def test_evaluate_report(report_dir, faces_csv):
    report = json.loads((report_dir / "metrics.json").read_text())
    metrics = report["metrics"]
    assert metrics["n"] == sum(map(sum, PICK.values()))
    for key in ("accuracy", "recall", "f1", "roc_auc", "fpr"):
        assert 0.0 <= metrics[key] <= 1.0
    assert np.array(metrics["confusion_matrix"]).sum() == metrics["n"]
    called_fake = np.array(metrics["confusion_matrix"])[:, 1].sum()  # precision is undefined when none is called fake
    assert (metrics["precision"] is None) == (called_fake == 0) and (metrics["precision"] is None or 0 <= metrics["precision"] <= 1)
    per_source = report["per_source"]
    assert {name: (m["n_real"], m["n_fake"]) for name, m in per_source.items()} == PICK
    assert per_source["lfw_faceswap"]["roc_auc"] is not None
    assert per_source["utkface_adults"]["roc_auc"] is None and per_source["utkface_adults"]["recall"] is None
    assert per_source["sdfd_diffusion"]["fpr"] is None
    for name in ("roc.png", "confusion_matrix.png", "predictions.csv"):
        assert (report_dir / name).stat().st_size > 0
    assert report["split"] == "all" and report["data"]["source_column"] == "source"


def test_evaluate_scores_what_the_detector_serves(run_folder, faces_csv):
    """evaluate() goes through Detector.analyze_batch: its p(fake) is what users get for the same files."""
    spec = DataSpec(str(faces_csv), image_column="file", source_column="source", val_fraction=0.5)
    dataset = evaluate.load_eval_set(spec, "validation")
    assert len(dataset) == len(load_splits(spec)[1])  # the training run's hold-out split, rebuilt
    detector = Detector.from_pretrained(run_folder, device="cpu", batch_size=3)
    result = evaluate.evaluate(detector, dataset, "source", progress=False)
    served = [a.p_fake for a in detector.analyze_batch(result["files"], faces=False)]  # evaluate's path without --faces
    np.testing.assert_allclose(result["p_fake"], served, atol=1e-5)
    assert result["metrics"]["n"] == len(dataset) == sum(m["n"] for m in result["per_source"].values())


def test_published_folder_and_card(published, report_dir, run_folder):
    assert sorted(path.name for path in published.iterdir()) == ["LICENSE.md", "README.md", "config.json",
                                                                  "model.safetensors"]
    assert (published / "LICENSE.md").read_text() == (ROOT / "LICENSE.md").read_text()
    assert not [path for path in published.parent.iterdir() if path.name.startswith(".")]  # no staging left
    config = json.loads((published / "config.json").read_text())
    assert config["unseen_reals_called_fake"] == {"studio portraits": 0.0375}  # from the table's face-search column
    assert {k: v for k, v in config.items() if k not in ("calibration", "unseen_reals_called_fake", "training_images")} == \
        json.loads((run_folder / "config.json").read_text())
    training = json.loads((run_folder / "training.json").read_text())
    assert config["training_images"] == training["data"]["train"]["n"] > 0  # the page states it

    card = ModelCard.load(published / "README.md")
    metrics = json.loads((report_dir / "metrics.json").read_text())["metrics"]
    assert card.data.library_name == "timm" and card.data.pipeline_tag == "image-classification"
    assert card.data.license == "other" and "non-commercial" in card.data.license_name
    assert card.data.license_link == "LICENSE.md" and "[LICENSE.md](LICENSE.md)" in card.text  # the Hub links it
    measured = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert measured == {key: metrics[key] for key in publish.CARD_METRICS if metrics[key] is not None}  # exact
    text = card.text
    args = json.loads((run_folder / "training.json").read_text())["args"]
    for expected in ("Faces from three public sources", f'from_pretrained("hf-hub:{OWNER_NAME}")',
                     "adamw, learning rate 0.0015", "from scratch",
                     "strength 0.7", "`lfw_faceswap`", "training images included", "non-commercial research only",
                     "Same training for every row: `--img-size 96 --epochs 4`",
                     "| `lfw_faceswap` | 6 | 6 | 0.810 | 0.550 | 0.600 | 0.500 | 0.333 | 0.167 | — | — | — |",
                     "| `london_studio` | 100 | 100 | 0.900 | 0.800 | 0.800 | 0.700 | 0.600 | 0.050 | 0.780 | 0.550 | 0.070 |",
                     "### Good real photos and unseen sources, before and after",
                     "| `london_studio`: reals called fake | 93.4% | 4.1% |"):
        assert expected in text
    assert args["dataset"] in text
    assert "{{" not in text and "{%" not in text


def test_rows_of_several_leave_one_out_reports_go_into_one_table(tmp_path, run_folder, report_dir):
    """Each held-out source may come from its own run: --leave-one-out once per report puts every row in the card
    and every held-out real source in config.json, with the training arguments grouped by what they were, whatever
    their order."""
    studio = json.loads(json.dumps(LEAVE_ONE_OUT))
    del studio["rows"]["lfw_faceswap"]
    studio["rows"]["london_studio"]["train_arguments"] = ["--epochs", "4", "--img-size", "96"]  # same, reordered
    press = {"train_arguments": ["--img-size", "96", "--epochs", "2"],
             "rows": {"celebrity_photos": {**LEAVE_ONE_OUT["rows"]["london_studio"], "face_search": {
                 "at_threshold": {"roc_auc": 0.7, "recall": 0.5, "fpr": 0.02},
                 "per_source": {"celebrity_photos": {"n": 50, "n_real": 50, "n_fake": 0, "fpr": 0.02, "recall": None}}}}}}
    files = []
    for name, report in (("swaps", {**LEAVE_ONE_OUT, "rows": {"lfw_faceswap": LEAVE_ONE_OUT["rows"]["lfw_faceswap"]}}),
                         ("studio", studio), ("press", press)):
        files += ["--leave-one-out", str(tmp_path / f"{name}.json")]
        (tmp_path / f"{name}.json").write_text(json.dumps(report))
    folder = publish.main([*LICENSE, "--model", str(run_folder), "--metrics", str(report_dir / "metrics.json"), *files,
                           "--output-dir", str(tmp_path / "detector")])
    config = json.loads((folder / "config.json").read_text())
    assert config["unseen_reals_called_fake"] == {"studio portraits": 0.0375, "press photos": 0.02}
    text = (folder / "README.md").read_text()
    assert "Training, by row:\n- `lfw_faceswap`, `london_studio`: `--img-size 96 --epochs 4`\n" \
           "- `celebrity_photos`: `--img-size 96 --epochs 2`" in text
    assert "Same training for every row" not in text
    for source in ("lfw_faceswap", "london_studio", "celebrity_photos"):
        assert f"| `{source}` |" in text
    (tmp_path / "missing.json").unlink(missing_ok=True)
    with pytest.raises(DetectorError, match="missing.json not found"):
        publish.main([*LICENSE, "--model", str(run_folder), "--metrics", str(report_dir / "metrics.json"), *files,
                      "--leave-one-out", str(tmp_path / "missing.json"), "--output-dir", str(tmp_path / "other")])


@pytest.mark.parametrize("change, same", [({}, True), ({"seed": 7}, False), ({"split": "all"}, False),
                                           ({"source": "other.csv"}, False)])
def test_card_claims_the_training_split_only_when_rebuilt(change, same):
    """The card calls the evaluation 'the hold-out split of the training run' only when its data arguments match."""
    args = vars(train_args(["--dataset", "faces.csv", "--group-column", "group"]))
    data = {"source": "faces.csv", "image_column": "image", "label_column": "label", "group_column": "group",
            "source_column": None, "val_fraction": 0.2, "seed": 42}
    evaluation = {"split": change.pop("split", "validation"), "data": {**data, **change}}
    assert publish.same_split(evaluation, {"args": args}) is same


def evaluate_into(folder: Path, faces_csv: Path, out: Path, *extra: str) -> dict:
    """training.evaluate on every row of the test photos, whole images; its metrics.json."""
    evaluate.main(["--model", str(folder), "--dataset", str(faces_csv), "--image-column", "file", "--source-column",
                   "source", "--split", "all", "--output-dir", str(out), "--batch-size", "8", *extra])
    return json.loads((out / "metrics.json").read_text())


def test_fp16_folder_serves_the_same_model(tmp_path, run_folder, faces_csv, published, face_paths):
    evaluate_into(run_folder, faces_csv, tmp_path / "eval16", "--calibrate", "--as-published", "float16")
    half = publish.main([*LICENSE, "--model", str(run_folder), "--metrics", str(tmp_path / "eval16" / "metrics.json"),
                         "--output-dir", str(tmp_path / "half"), "--fp16"])
    tensors = load_file(str(half / "model.safetensors"))
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    assert (half / "model.safetensors").stat().st_size < 0.6 * (published / "model.safetensors").stat().st_size
    assert "float16" in (half / "README.md").read_text()
    assert all(p.dtype == torch.float32 for p in load_model(half).model.parameters())
    np.testing.assert_allclose(probabilities(half, face_paths), probabilities(published, face_paths), atol=1e-2)


def test_a_licence_of_other_needs_its_text(tmp_path, run_folder, report_dir):
    """The Hub shows a licence of "other" by its name and a link to its text: publishing without the text is refused
    with the remedy, and a Hub licence id needs none."""
    argv = ["--model", str(run_folder), "--metrics", str(report_dir / "metrics.json")]
    with pytest.raises(DetectorError, match="--license-file"):
        publish.main([*argv, "--output-dir", str(tmp_path / "other")])
    assert not (tmp_path / "other").exists()
    folder = publish.main([*argv, "--output-dir", str(tmp_path / "mit"), "--license", "mit"])
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "mit" and card.data.license_link is None and not (folder / "LICENSE.md").exists()


def test_failed_publish_keeps_the_previous_folder(tmp_path, run_folder, report_dir, published):
    target = tmp_path / "models" / "detector"
    shutil.copytree(published, target)
    before = {path.name: path.read_bytes() for path in target.iterdir()}
    broken = tmp_path / "broken.md"
    broken.write_text("---\n{{ card_data }}\n---\n{% for x in %}")
    with pytest.raises(Exception):
        publish.main([*LICENSE, "--model", str(run_folder), "--metrics", str(report_dir / "metrics.json"),
                      "--output-dir", str(target), "--template", str(broken)])
    assert {path.name: path.read_bytes() for path in target.iterdir()} == before
    assert [path.name for path in target.parent.iterdir()] == ["detector"]
    with pytest.raises(DetectorError, match="training.evaluate"):
        publish.main([*LICENSE, "--model", str(run_folder), "--metrics", str(tmp_path / "missing.json"),
                      "--output-dir", str(tmp_path / "other")])
    assert not (tmp_path / "other").exists()


class FakeHfApi:
    """Records what `push` asks of the Hub."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        return f"https://huggingface.co/{kwargs['repo_id']}/commit/0"


def test_push_uploads_only_safe_files(published, tmp_path):
    api = FakeHfApi()
    assert publish.push(published, OWNER_NAME, api=api).endswith("/commit/0")
    (create, repo, create_kwargs), (upload, repo2, upload_kwargs) = api.calls
    assert (create, repo, create_kwargs["exist_ok"]) == ("create_repo", OWNER_NAME, True)
    assert (upload, repo2, Path(upload_kwargs["folder_path"])) == ("upload_folder", OWNER_NAME, published)
    assert set(upload_kwargs["allow_patterns"]) == {"config.json", "model.safetensors", "README.md", "LICENSE.md"}
    assert not [p for p in published.iterdir() if p.suffix in (".bin", ".pth", ".pkl", ".pt")]

    unsafe = tmp_path / "unsafe"
    shutil.copytree(published, unsafe)
    torch.save({"w": torch.zeros(1)}, unsafe / "pytorch_model.bin")
    with pytest.raises(DetectorError, match="pickle"):
        publish.push(unsafe, OWNER_NAME, api=FakeHfApi())


def hub_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """Lay `folder` out as huggingface_hub's cache does: blobs by hash, a snapshot of symlinks, refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for path in folder.iterdir():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copyfile(path, repo / "blobs" / digest)
        (snapshot / path.name).symlink_to(Path("..", "..", "blobs", digest))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_hub_cache_round_trip_offline(tmp_path, monkeypatch, published, face_paths):
    """A published folder in a pre-filled Hub cache loads by id with no network, and predicts the same."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    snapshot = hub_cache(cache, OWNER_NAME, published)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these when imported: set the module values too
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    for source in (f"hf-hub:{OWNER_NAME}", OWNER_NAME):
        loaded = load_model(source)
        assert loaded.folder.resolve() == snapshot.resolve()
    np.testing.assert_allclose(probabilities(f"hf-hub:{OWNER_NAME}", face_paths), probabilities(published, face_paths),
                               atol=1e-6)
    with pytest.raises(DetectorError, match="someone/not-cached"):
        load_model("hf-hub:someone/not-cached")


def test_pickle_only_folder_is_refused(tmp_path, published):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(published / "config.json", folder)
    torch.save(load_file(str(published / "model.safetensors")), folder / "pytorch_model.bin")
    with pytest.raises(DetectorError, match="pytorch_model.bin, a pickle file"):
        Detector.from_pretrained(folder)
    with pytest.raises(DetectorError, match="no model.safetensors"):
        publish.main([*LICENSE, "--model", str(folder), "--metrics", str(tmp_path / "m.json"), "--output-dir", str(tmp_path / "x")])


def test_calibration_and_robustness_are_measured_and_published(report_dir, published):
    report = json.loads((report_dir / "metrics.json").read_text())
    fitted = report["calibration"]
    assert fitted["temperature"] > 0 and 0 <= fitted["threshold"] <= 1 and fitted["target_fpr"] == 0.05
    assert fitted["metrics_at_threshold"]["fpr"] <= 0.05
    assert set(report["robustness"]) == {"clean", *PERTURBATIONS}
    assert report["robustness"]["clean"] == report["metrics"]["roc_auc"]
    flagged = report["robustness_at_threshold"]  # at the threshold fitted in the same run
    assert set(flagged) == set(report["robustness"])
    assert flagged["clean"]["reals_flagged"] == pytest.approx(fitted["metrics_at_threshold"]["fpr"])
    assert flagged["clean"]["fakes_caught"] == pytest.approx(fitted["metrics_at_threshold"]["recall"])
    assert (report_dir / "reliability.png").stat().st_size > 0 and (report_dir / "robustness.png").stat().st_size > 0
    config = json.loads((published / "config.json").read_text())
    assert config["calibration"] == {**{key: fitted[key] for key in ("temperature", "bias", "threshold", "target_fpr", "fakes_caught",
                                                                     "lower_threshold", "target_fake_miss", "precision", "scores")},
                                     "storage_dtype": "float32"}
    assert config["calibration"]["lower_threshold"] <= config["calibration"]["threshold"]
    card = (published / "README.md").read_text()
    assert f"*likely real* below\n{fitted['lower_threshold']:.4f}" in card and "of the fakes" in card
    assert "Calibration and decision threshold" in card and "jpeg_q75" in card
    assert "| perturbation | ROC-AUC | reals called fake | fakes caught |" in card and "| border_0.2 |" in card
    assert "Notes from the training run" in card and "shortened from 20 to 12 epochs" in card


def test_robustness_scores_the_path_asked_for_and_counts_what_the_threshold_flags(faces_csv, monkeypatch):
    """With face search, every perturbation is scored through face search too (the clean row was, and an unchanged
    image must score the same), and a model with a stored threshold reports what it flags under each."""
    chosen = ["--model", "m", "--dataset", "d", "--output-dir", "o", "--robustness", "crop_0.7", "border_0.2", "--faces"]
    assert evaluate.parse_args(chosen).robustness == ["crop_0.7", "border_0.2"]
    assert evaluate.parse_args(chosen[:-3]).robustness == []  # alone: all of them
    detector = Detector.from_pretrained(None, batch_size=8)  # the bundled model: it has a stored threshold
    dataset = evaluate.load_eval_set(DataSpec(str(faces_csv), image_column="file", source_column="source"), "all")
    result = evaluate.evaluate(detector, dataset, "source", progress=False, faces=True)
    monkeypatch.setattr(evaluate, "PERTURBATIONS", {"unchanged": lambda image: image, "border_0.2": PERTURBATIONS["border_0.2"]})
    rows, flagged = evaluate.robustness(detector, dataset, result, progress=False, faces=True)
    assert rows["unchanged"] == rows["clean"] == result["metrics"]["roc_auc"]
    is_fake = np.array(result["is_fake"])
    p_fake = np.array(result["p_fake"])
    sources = np.array(result["sources"])
    assert flagged["clean"] == flagged["unchanged"] == {
        "reals_flagged": float(np.mean(p_fake[~is_fake] >= detector.threshold)),
        "fakes_caught": float(np.mean(p_fake[is_fake] >= detector.threshold)),
        "per_source": {name: {"reals_flagged": float(np.mean(p_fake[(sources == name) & ~is_fake] >= detector.threshold))
                              if n_real else None,
                              "fakes_caught": float(np.mean(p_fake[(sources == name) & is_fake] >= detector.threshold))
                              if n_fake else None} for name, (n_real, n_fake) in PICK.items()}}
    assert flagged["clean"]["fakes_caught"] == result["at_threshold"]["recall"]
    assert set(flagged) == {"clean", "unchanged", "border_0.2"}
    rows, _ = evaluate.robustness(detector, dataset, result, progress=False, faces=True, names=["unchanged"])
    assert set(rows) == {"clean", "unchanged"}  # `--robustness NAME ...` measures only those


def test_reframing_perturbations_change_the_framing_only(face_paths):
    from PIL import Image
    image = Image.open(face_paths[0]).convert("RGB").resize((120, 90))
    cropped = PERTURBATIONS["crop_0.7"](image)
    assert cropped.size == (63, 63)  # 70% of the shorter side, square, centred
    assert np.array_equal(np.asarray(cropped), np.asarray(image)[13:76, 28:91])
    bordered = PERTURBATIONS["border_0.2"](image)
    assert bordered.size == (168, 126)
    assert np.array_equal(np.asarray(bordered)[18:108, 24:144], np.asarray(image))  # the picture, unchanged, inside
    assert np.array_equal(np.asarray(bordered)[18:108, 23], np.asarray(image)[:, 1])  # a mirrored border round it


def test_the_aligned_perturbation_frames_a_real_photo_as_ffhq_and_celeba_hq_do(face_paths):
    """`--robustness aligned`: the face found becomes 0.69 of the frame's width, centred across, its centre at
    0.545 of the height; the picture itself is not resampled, and beyond it the frame is mirrored."""
    from PIL import Image
    from detector.faces import find_faces, square_box
    (path,) = [p for p in face_paths if p.name == "real_pixabay_1.jpg"]
    image = Image.open(path).convert("RGB")
    left, top, right, bottom = square_box(find_faces(image)[0])
    framed = PERTURBATIONS["aligned"](image)
    side = round((right - left) / 0.69)
    assert framed.size == (side, side) and side > image.width  # wider than the picture: mirrored at the sides
    x0, y0 = round((left + right) / 2 - 0.5 * side), round((top + bottom) / 2 - 0.545 * side)
    inside = np.asarray(framed)[max(0, -y0):image.height - y0, -x0:image.width - x0]
    assert np.array_equal(inside, np.asarray(image)[max(0, y0):, :])  # the picture, pixel for pixel
    found = square_box(find_faces(framed)[0])
    assert abs((found[2] - found[0]) / side - 0.69) < 0.05 and abs((found[0] + found[2]) / 2 / side - 0.5) < 0.03
    blank = Image.new("RGB", (64, 48), (200, 180, 160))
    assert PERTURBATIONS["aligned"](blank) is blank  # no face found: as it is


def test_recipe_names_the_weights_a_run_started_from(run_folder):
    training = json.loads((run_folder / "training.json").read_text())
    rows = dict(publish.recipe_rows(training))
    assert rows["initialisation"].startswith("from scratch")
    training["args"]["init_from"] = "runs/first/best"
    assert dict(publish.recipe_rows(training))["initialisation"] == "the weights of `runs/first/best`, trained further"
    training["init_sha256"] = "f344db63e002" + "0" * 52
    assert dict(publish.recipe_rows(training))["initialisation"] == (
        "the weights of `runs/first/best` (weights sha256 f344db63e002…), trained further")
    assert "framing" not in rows  # the card names only the parts of the recipe a run used
    training["args"]["framing"] = 0.5
    assert dict(publish.recipe_rows(training))["framing"].startswith("with probability 0.5, every image, real or fake, framed anew")
    assert "aligned view" not in rows
    training["args"]["aligned_framing"] = 0.5
    aligned = dict(publish.recipe_rows(training))["aligned view"]
    assert aligned.startswith("with probability 0.5, every image, real or fake, framed around the face found as FFHQ")
    assert "62%-76% of the frame's width, its centre at 52%-57% of the height" in aligned


@pytest.mark.parametrize("form", ["temperature", "beta"])
def test_card_code_runs_and_agrees_with_the_detector(tmp_path, run_folder, report_dir, face_paths, monkeypatch, form):
    """The card's Python blocks, run as a reader would (the model named as the card names it): the timm snippet
    loads the published weights (not a random network), applies the stored calibration (temperature and bias, or
    beta calibration's two weights) and agrees with Detector."""
    import re

    metrics = report_dir / "metrics.json"
    if form == "beta":
        report = json.loads(metrics.read_text())
        report["calibration"].pop("temperature")
        report["calibration"]["log_prob_weights"] = {"fake": 1.6, "real": 0.5}
        metrics = tmp_path / "metrics.json"
        metrics.write_text(json.dumps(report))
    folder = publish.main([*LICENSE, "--model", str(run_folder), "--metrics", str(metrics),
                           "--output-dir", str(tmp_path / "card-model")])
    text = (folder / "README.md").read_text()
    assert "OWNER" not in text and f'"local-dir:{folder}"' in text
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    shutil.copy(face_paths[0], tmp_path / "face.jpg")
    monkeypatch.chdir(tmp_path)
    library, plain = {}, {}
    exec(blocks[0], library)
    exec(blocks[1], plain)
    weights = load_file(str(folder / "model.safetensors"))
    state = plain["model"].state_dict()
    assert all(torch.equal(state[name].float(), tensor.float()) for name, tensor in weights.items())
    calibration = json.loads((folder / "config.json").read_text())["calibration"]
    if form == "beta":
        assert (plain["a"], plain["b"]) == (1.6, 0.5) and "beta calibration" in text
    else:
        assert plain["temperature"] == pytest.approx(calibration["temperature"])
    reference = Detector.from_pretrained(folder, precision="fp32").analyze(tmp_path / "face.jpg")
    assert plain["p_fake"] == pytest.approx(reference.p_fake, abs=0.02)
    assert library["analysis"].p_fake == pytest.approx(reference.p_fake, abs=0.02)


def test_card_metadata_names_what_the_hub_can_link(run_folder, report_dir):
    """base_model and datasets appear when they are Hub repos (never a local path); AP is in model-index."""
    config = json.loads((run_folder / "config.json").read_text())
    evaluation = json.loads((report_dir / "metrics.json").read_text())
    training = json.loads((run_folder / "training.json").read_text())
    hub_training = {**training, "args": {**training["args"], "dataset": "someone/faces", "init_from": "hf-hub:someone/detector"}}
    common = dict(model_name="m", repo_id="someone/m", dtype="float16", data_description=None, license="other",
                  license_name="research-only-non-commercial")
    card = publish.render_card(config, evaluation, hub_training, **common)
    assert card.data.base_model == "someone/detector" and card.data.datasets == ["someone/faces"]
    assert "average_precision" in {result.metric_type for result in card.data.eval_results}
    local = publish.render_card(config, evaluation, training, **common)
    assert local.data.base_model is None and local.data.datasets is None
    assert 'timm.create_model("hf-hub:someone/m", pretrained=True)' in local.text


def test_the_face_margin_travels_from_evaluate_to_the_served_detector(tmp_path, run_folder, faces_csv):
    """evaluate --faces --face-margin M --calibrate stores M with the threshold; publish puts it in config.json; the
    detector crops faces with it, so the threshold meets the crops it was fitted on; the card says which. The same
    for the precision the scores were computed in."""
    out = tmp_path / "eval"
    report = evaluate.main(["--model", str(run_folder), "--dataset", str(faces_csv), "--image-column", "file",
                            "--split", "all", "--output-dir", str(out), "--batch-size", "8", "--faces",
                            "--face-margin", "0.6", "--calibrate", "--precision", "fp32"])
    assert report["face_margin"] == 0.6 and report["calibration"]["face_margin"] == 0.6
    assert report["precision"] == report["calibration"]["precision"] == "fp32"
    folder = publish.main([*LICENSE, "--model", str(run_folder), "--metrics", str(out / "metrics.json"),
                           "--output-dir", str(tmp_path / "model")])
    stored = json.loads((folder / "config.json").read_text())["calibration"]
    assert stored["face_margin"] == 0.6 and stored["precision"] == "fp32"
    served = Detector.from_pretrained(folder)
    assert served.face_margin == 0.6 and served.precision == "fp32"  # as fitted, even where bf16 is native
    card = " ".join((folder / "README.md").read_text().split())
    assert "cropped with a margin of 0.6 of its side" in card and "The scores were computed in fp32" in card


def test_a_threshold_fitted_per_source_travels_to_the_card_and_the_reading(tmp_path, run_folder, faces_csv):
    """evaluate --calibrate --fpr-per-source holds the mean over the sources of reals to the target; publish stores the
    rule and the share of all reals flagged; the card lists each source's share and the app's reading says the rule."""
    import app

    out = tmp_path / "eval"
    report = evaluate.main(["--model", str(run_folder), "--dataset", str(faces_csv), "--image-column", "file",
                            "--source-column", "source", "--split", "all", "--output-dir", str(out), "--batch-size", "8",
                            "--calibrate", "--target-fpr", "0.25", "--fpr-per-source", "--min-source-reals", "1"])
    fitted = report["calibration"]
    assert fitted["target_fpr_per_source"] is True and sum(fitted["fpr_by_source"].values()) / len(fitted["fpr_by_source"]) <= 0.25
    assert fitted["fpr_all_reals"] == fitted["metrics_at_threshold"]["fpr"]
    with (out / "predictions.csv").open() as f:
        assert next(csv.reader(f)) == ["file", "is_fake", "p_fake", "source", "p_fake_calibrated"]
    folder = publish.main([*LICENSE, "--model", str(run_folder), "--metrics", str(out / "metrics.json"),
                           "--output-dir", str(tmp_path / "model")])
    stored = json.loads((folder / "config.json").read_text())["calibration"]
    assert stored["target_fpr_per_source"] is True and stored["fpr_all_reals"] == fitted["fpr_all_reals"]
    assert stored["fakes_caught"] == fitted["metrics_at_threshold"]["recall"]
    card = " ".join((folder / "README.md").read_text().split())
    assert "on average over the sources of real photos, each source counting equally" in card
    detector = Detector.from_pretrained(folder)
    rule = app.decision_rule(detector)
    assert detector.target_fpr_per_source and "on average over the kinds of real photo" in rule
    assert "Measured on that validation split" in rule and "held-out" not in rule
    assert "of its fakes caught (a picture that is not flagged can still be fake)" in rule
    with pytest.raises(SystemExit, match="needs the images' sources"):
        evaluate.main(["--model", str(run_folder), "--dataset", str(faces_csv), "--image-column", "file", "--split", "all",
                       "--output-dir", str(tmp_path / "e2"), "--calibrate", "--fpr-per-source", "--min-source-reals", "1"])


def test_the_heat_map_stage_measured_for_the_weights_travels_to_the_detector_the_app_and_the_card(tmp_path, run_folder,
                                                                                                   report_dir, faces_csv):
    """The page drew the finer map for every model (a constant measured on one ResNeXt-50) while the CLI drew the
    last stage's; now the stage is the model's own, chosen by benchmarks.cam_faithfulness on its weights."""
    import app as app_module
    from benchmarks import cam_faithfulness

    assert Detector.from_pretrained(run_folder).cam_stage == -1  # no measurement: the last stage
    report = cam_faithfulness.main(["--model", str(run_folder), "--data", str(faces_csv), "--images", "3",
                                    "--repeats", "1", "--output", str(tmp_path / "cam.json")])
    finer = report["stage-2_top10pct_drop_over_random"] >= report["stage-1_top10pct_drop_over_random"]
    for name, measured, stage in (("as measured", report, -2 if finer else -1),
                                  ("finer wins", {**report, "stage-2_top10pct_drop_over_random": 0.09,
                                                  "stage-1_top10pct_drop_over_random": 0.05}, -2),
                                  ("coarser wins", {**report, "stage-2_top10pct_drop_over_random": 0.03,
                                                    "stage-1_top10pct_drop_over_random": 0.04}, -1)):
        (tmp_path / f"{name}.json").write_text(json.dumps(measured))
        folder = publish.main([*LICENSE, "--model", str(run_folder), "--metrics", str(report_dir / "metrics.json"),
                               "--cam-faithfulness", str(tmp_path / f"{name}.json"), "--output-dir", str(tmp_path / name)])
        assert json.loads((folder / "config.json").read_text())["cam_stage"] == stage, name
        assert Detector.from_pretrained(folder).cam_stage == stage
        assert app_module.load_detector(str(folder)).cam_stage == stage
        assert Detector.from_pretrained(folder, cam_stage=-1 if stage == -2 else -2).cam_stage != stage  # asked for
        card = " ".join((folder / "README.md").read_text().split())
        assert ("stage before the last (stride 16, a finer grid) for these weights" if stage == -2
                else "last feature map (stride 32) for these weights") in card
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(DetectorError, match="benchmarks.cam_faithfulness"):
        publish.main([*LICENSE, "--model", str(run_folder), "--metrics", str(report_dir / "metrics.json"),
                      "--cam-faithfulness", str(tmp_path / "empty.json"), "--output-dir", str(tmp_path / "refused")])


def test_timms_facts_about_its_own_weights_are_not_published_as_ours(tmp_path, run_folder, report_dir):
    """Runs continued with --init-from before 2026-12-07 wrote timm's tag and licence of its ImageNet weights
    ("ra_in1k", "apache-2.0") into config.json; the published config must not repeat them as the detector's."""
    folder = tmp_path / "continued"
    shutil.copytree(run_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"] = {**config["pretrained_cfg"], "tag": "ra_in1k", "license": "apache-2.0",
                                "origin_url": "https://example.org/weights"}
    (folder / "config.json").write_text(json.dumps(config))
    loaded = load_model(folder).model.pretrained_cfg  # what a run continued from this folder would save
    assert loaded.get("tag") is None and loaded.get("license") is None
    out = publish.main([*LICENSE, "--model", str(folder), "--metrics", str(report_dir / "metrics.json"),
                        "--output-dir", str(tmp_path / "published")])
    served = json.loads((out / "config.json").read_text())["pretrained_cfg"]
    assert not {"tag", "license", "origin_url"} & set(served)
    assert served["input_size"] == config["pretrained_cfg"]["input_size"]


def test_publish_refuses_numbers_measured_on_other_weights_or_fitted_on_calibrated_scores(tmp_path, run_folder, report_dir):
    """A threshold fitted on float32 weights must not ship with float16 ones; a calibration fitted on scores that
    already went through a calibration map must not be applied to raw logits."""
    with pytest.raises(DetectorError, match="--as-published float16"):
        publish.main([*LICENSE, "--model", str(run_folder), "--metrics", str(report_dir / "metrics.json"),
                      "--output-dir", str(tmp_path / "half"), "--fp16"])
    report = json.loads((report_dir / "metrics.json").read_text())
    assert report["storage_dtype"] == "float32" and report["calibration"]["scores"] == "raw"
    del report["calibration"]["scores"]  # as evaluations before 2026-12-07 wrote it
    old = tmp_path / "old.json"
    old.write_text(json.dumps(report))
    with pytest.raises(DetectorError, match="run training.evaluate --calibrate again"):
        publish.main([*LICENSE, "--model", str(run_folder), "--metrics", str(old), "--output-dir", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists() and not (tmp_path / "half").exists()


@pytest.fixture(scope="module")
def calibrated_folder(tmp_path_factory) -> Path:
    """A model whose scores spread over (0, 1) (its head scaled up) and which already carries a calibration map."""
    folder = write_model_folder(tmp_path_factory.mktemp("calibrated") / "model", seed=3)
    weights = load_file(str(folder / "model.safetensors"))
    head = [name for name in weights if name.startswith("fc.")]
    save_file({name: (t * 80 if name in head else t).contiguous() for name, t in weights.items()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config["calibration"] = {"temperature": 0.25, "bias": 1.5, "threshold": 0.5}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("storage", ["float32", "float16"])
def test_a_calibrated_model_recalibrated_and_published_reproduces_its_measured_numbers(tmp_path, calibrated_folder,
                                                                                       faces_csv, storage):
    """The model already carries a calibration. Evaluating it with --calibrate fits a new map on its raw scores;
    published (in float16: scored as published), the folder re-evaluated gives back, image for image, the calibrated
    scores and the confusion matrix the evaluation stored. (Fitted on scores through the old map, the new map applied
    to raw logits moved p(fake) by up to 0.5 here and changed verdicts.)"""
    fp32 = ["--precision", "fp32"]
    fitted = evaluate_into(calibrated_folder, faces_csv, tmp_path / "fit", "--calibrate", "--target-fpr", "0.34",
                           "--as-published", storage, *fp32)
    again = publish.main([*LICENSE, "--model", str(calibrated_folder), "--metrics", str(tmp_path / "fit" / "metrics.json"),
                          "--output-dir", str(tmp_path / "again"), *(["--fp16"] if storage == "float16" else [])])
    assert json.loads((again / "config.json").read_text())["calibration"]["storage_dtype"] == storage
    measured = evaluate_into(again, faces_csv, tmp_path / "measured", *fp32)
    with (tmp_path / "fit" / "predictions.csv").open() as f:
        expected = [float(row["p_fake_calibrated"]) for row in csv.DictReader(f)]
    with (tmp_path / "measured" / "predictions.csv").open() as f:
        served = [float(row["p_fake"]) for row in csv.DictReader(f)]
    assert max(expected) - min(expected) > 0.5  # scores that spread: a wrong map shows
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert measured["at_threshold"]["confusion_matrix"] == fitted["calibration"]["metrics_at_threshold"]["confusion_matrix"]
    assert measured["at_threshold"]["confusion_matrix"] == fitted["at_threshold"]["confusion_matrix"]


def test_the_test_split_of_the_folder_as_published_goes_into_the_card_and_no_other_report_does(tmp_path, run_folder,
                                                                                              report_dir, published):
    """The card's test section quotes `evaluate --split test` on the published folder; a report of another split, or
    one scored at thresholds the folder does not store, is refused by name."""
    with (SHARED_DATA / "manifest.csv").open() as f:
        manifest = [row for row in csv.DictReader(f) if row["source"] == "lfw_faceswap"]
    rows = [row for row in manifest if row["label"] == "real"][:8] + [row for row in manifest if row["label"] == "fake"][:8]
    data = tmp_path / "split.csv"
    with data.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "label", "source"])
        writer.writeheader()
        writer.writerows({"file": str(SHARED_DATA / row["file"]), "label": row["label"], "source": row["source"]}
                         for row in rows)
    split = ["--dataset", str(data), "--image-column", "file", "--source-column", "source", "--val-fraction", "0.25",
             "--test-fraction", "0.25", "--batch-size", "8"]
    evaluate.main(["--model", str(published), *split, "--split", "test", "--output-dir", str(tmp_path / "test")])
    test = json.loads((tmp_path / "test" / "metrics.json").read_text())
    stored = json.loads((published / "config.json").read_text())["calibration"]
    assert test["served"]["threshold"] == stored["threshold"] and test["served"]["lower_threshold"] == stored["lower_threshold"]
    assert test["at_threshold"]["n"] == 4 and set(test["served"]["verdict_shares"]) == {"likely real", "uncertain", "likely fake"}
    folder = publish.main([*LICENSE, "--model", str(run_folder), "--metrics", str(report_dir / "metrics.json"),
                           "--test-metrics", str(tmp_path / "test" / "metrics.json"), "--output-dir", str(tmp_path / "out")])
    card = (folder / "README.md").read_text()
    section = card[card.index("### Test split"):card.index("### Calibration")]
    assert f"({test['at_threshold']['n']} images)" in section and f"{stored['threshold']:.4f}" in section
    assert "| `lfw_faceswap` | 4 | 2 | 2 |" in section and "--test-fraction 0.25" in section
    assert "### Test split" not in (published / "README.md").read_text()  # only where a report was given
    evaluate.main(["--model", str(published), *split, "--split", "validation", "--output-dir", str(tmp_path / "val")])
    with pytest.raises(DetectorError, match="scored the 'validation' split"):
        publish.main([*LICENSE, "--model", str(run_folder), "--metrics", str(report_dir / "metrics.json"),
                      "--test-metrics", str(tmp_path / "val" / "metrics.json"), "--output-dir", str(tmp_path / "x")])
    evaluate.main(["--model", str(run_folder), *split, "--split", "test", "--output-dir", str(tmp_path / "raw")])
    with pytest.raises(DetectorError, match="publish without --test-metrics, evaluate that folder"):
        publish.main([*LICENSE, "--model", str(run_folder), "--metrics", str(report_dir / "metrics.json"),
                      "--test-metrics", str(tmp_path / "raw" / "metrics.json"), "--output-dir", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
