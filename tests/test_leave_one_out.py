"""Leave-one-source-out on a small CSV of shared photos: what each row trains on, what it tests on, rerunning."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SHARED_DATA, small_manifest
from test_training import REAL, SMOKE
from training import leave_one_out
from training.data import DataError, DataSpec, held_out_set, load_splits

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "manifest.csv").is_file(), reason="needs ../shared/data")

SOURCES = {("utkface_adults", "real"): 6, ("sdfd_diffusion", "fake"): 6, ("lfw_faceswap", "real"): 6,
           ("lfw_faceswap", "fake"): 6}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """A CSV with a real-only source, a fake-only source and a source with both classes."""
    return small_manifest(tmp_path_factory.mktemp("loso") / "faces.csv", SOURCES)


def spec(manifest: Path, source: str | None) -> DataSpec:
    return DataSpec(str(manifest), image_column="file", source_column="source", hold_out_source=source)


def test_held_out_source_is_out_of_both_splits_and_alone_in_the_test_set(manifest):
    for part in load_splits(spec(manifest, "lfw_faceswap"), check=False):
        assert "lfw_faceswap" not in set(part["source"])
    test = held_out_set(spec(manifest, "lfw_faceswap"))
    assert set(test["source"]) == {"lfw_faceswap"} and len(test) == 12


def test_one_class_source_is_tested_against_unseen_images_of_the_other_class(manifest):
    test = held_out_set(spec(manifest, "sdfd_diffusion"))
    _, validation = load_splits(spec(manifest, None), check=False)
    unseen_reals = sorted(row["image"]["path"] for row in validation
                          if row["source"] != "sdfd_diffusion" and row["target"] == REAL)
    assert sorted(row["image"]["path"] for row in test if row["source"] != "sdfd_diffusion") == unseen_reals
    assert unseen_reals and sum(source == "sdfd_diffusion" for source in test["source"]) == 6


def test_unknown_source_and_missing_source_column_are_explained(manifest):
    with pytest.raises(DataError, match="'midjourney' is not a source of this dataset"):
        load_splits(spec(manifest, "midjourney"), check=False)
    with pytest.raises(DataError, match="needs --source-column"):
        load_splits(DataSpec(str(manifest), image_column="file", hold_out_source="lfw_faceswap"), check=False)


@pytest.mark.slow
def test_every_fake_source_gets_a_row_and_a_rerun_keeps_finished_rows(manifest, tmp_path):
    argv = ["--output-dir", str(tmp_path), "--dataset", str(manifest), "--image-column", "file",
            "--source-column", "source", *SMOKE, "--epochs", "1"]
    reports = leave_one_out.main(argv)
    assert list(reports) == ["lfw_faceswap", "sdfd_diffusion"]
    for source, report in reports.items():
        trained = json.loads((tmp_path / source / "best" / "training.json").read_text())
        for part in ("train", "validation"):
            assert source not in trained["data"][part]["by_source"]
        assert report["hold_out_source"] == source and 0 <= report["metrics"]["roc_auc"] <= 1
        fitted = report["threshold"]  # fitted on the row's own in-domain validation split, at 5% FPR
        assert fitted["target_fpr"] == 0.05 and report["at_threshold"]["threshold"] == fitted["threshold"]
        # all of what the threshold was fitted on: the calibration map (temperature, or beta calibration's two
        # weights) and its bias
        assert set(fitted) - {"temperature", "log_prob_weights"} == {"bias", "threshold", "target_fpr"}
        assert len(set(fitted) & {"temperature", "log_prob_weights"}) == 1
    lfw = reports["lfw_faceswap"]["metrics"]["confusion_matrix"]
    assert sum(lfw[0]) == 6 and sum(lfw[1]) == 6
    table = (tmp_path / "leave_one_out.md").read_text()
    assert "`sdfd_diffusion`" in table and "--epochs 1" in table and "reals called fake" in table

    weights = tmp_path / "sdfd_diffusion" / "best" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert leave_one_out.main(argv) == reports
    assert weights.stat().st_mtime_ns == before
    assert "a margin of 0.3 of its side" in table

    # --rescore: the trained rows scored again, here with a wider face margin, without training again
    wider = leave_one_out.main([*argv, "--sources", "sdfd_diffusion", "--face-margin", "0.6", "--rescore"])
    assert weights.stat().st_mtime_ns == before
    assert wider["sdfd_diffusion"]["face_margin"] == 0.6 and reports["sdfd_diffusion"]["face_margin"] == 0.3
    assert "a margin of 0.6 of its side" in (tmp_path / "leave_one_out.md").read_text()

    # --fpr-per-source: the row's threshold flags 5% of reals on average over its validation sources of reals
    balanced = leave_one_out.main([*argv, "--sources", "sdfd_diffusion", "--rescore", "--fpr-per-source"])
    assert balanced["sdfd_diffusion"]["threshold"]["target_fpr_per_source"] is True
    assert "target_fpr_per_source" not in reports["sdfd_diffusion"]["threshold"]
    assert "mean over the sources of real images" in (tmp_path / "leave_one_out.md").read_text()


def test_the_table_says_undefined_for_a_metric_one_class_cannot_give_and_dash_for_what_was_not_measured():
    """A held-out source of real photos scored alone: no AUC (null in the JSON) → "undefined"; a row measured
    before face search was added → "—"."""
    row = {"in_domain_validation": {"roc_auc": 0.9},
           "metrics": {"confusion_matrix": [[40, 10], [0, 0]], "roc_auc": None, "average_precision": None,
                       "recall": None, "fpr": 0.2, "threshold": 0.6}}
    searched = {"at_threshold": {"confusion_matrix": [[45, 5], [0, 0]], "roc_auc": None, "recall": None, "fpr": 0.1}}
    lines = leave_one_out.table({"studio": row, "press": {**row, "face_search": searched}}, ["--epochs", "1"]).splitlines()
    assert "| `studio` | 50 | 0 | 0.900 | undefined | undefined | 0.600 | undefined | 0.200 | — | — | — |" in lines
    assert ("| `press` | 50 | 0 | 0.900 | undefined | undefined | 0.600 | undefined | 0.200 | undefined | undefined "
            "| 0.100 |") in lines
