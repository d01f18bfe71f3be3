"""Every relative link in the README and the docs resolves to a file of the repository."""
from __future__ import annotations

import re

import pytest

from conftest import ROOT

DOCUMENTS = [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").rglob("*.md")),
             ROOT / "models" / "deepfake-detector" / "README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(path):
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if not re.match(r"^(https?:|mailto:|#|data:)", target):
            yield target.split("#")[0]


@pytest.mark.parametrize("path", DOCUMENTS, ids=[str(path.relative_to(ROOT)) for path in DOCUMENTS])
def test_every_relative_link_resolves(path):
    broken = [target for target in relative_links(path) if target and not (path.parent / target).exists()]
    assert not broken, f"{path.relative_to(ROOT)} links to missing files: {broken}"


def test_the_readme_is_read_in_five_minutes():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("name", ["README.md", "docs/imagenet/README.md"])
def test_the_measured_tables_are_rendered_from_the_measured_files(name):
    """Each number of the generated blocks has one home, the file that measured it."""
    from training.summary import write

    text = (ROOT / name).read_text()
    assert write(text) == text, f"run: python -m training.summary --write {name}"


def test_the_readme_tables_say_undefined_for_a_metric_that_does_not_exist():
    from training import summary

    assert summary.num(None) == "undefined" and summary.pct(None) == "undefined"
    before = {"metrics": {"roc_auc": None}, "calibration": {"fpr_all_reals": 0.05, "fakes_caught": None, "ece_after": 0.02,
                                                            "fakes_caught_by_source": {}}}
    after = {"metrics": {"roc_auc": 0.9}, "calibration": {"fpr_all_reals": 0.05, "fakes_caught": 0.6, "ece_after": 0.02,
                                                          "fakes_caught_by_source": {"gan_faces_site": 0.7}}}
    rows = summary.calibration_rows(before, after)
    assert rows[0].startswith("| validation ROC-AUC | undefined | 0.900 |")
    assert "| — GAN faces caught | — | 70.0% | |" in rows  # not measured for the first model: a dash


def test_the_test_block_holds_each_number_with_its_interval_and_judges_it_against_the_issues_target(tmp_path, monkeypatch):
    import json

    from training import summary

    def numbers(**values):
        return {key: {"stored_images": v, "interval_95": [v * 0.8, min(1.0, v * 1.2)]} for key, v in values.items()}

    every = {"images": 1470, "numbers": numbers(**{"roc_auc": 0.91, "fakes_caught": 0.40, "reals_flagged": 0.03,
                                                  "ffhq_photos: reals flagged": 0.05, "utkface_adults: reals flagged": 0.12,
                                                  "gan_faces_site: fakes caught": 0.5, "dfdc_faces: fakes caught": 0.1})}
    unseen = {"images": 353, "numbers": numbers(roc_auc=0.85, fakes_caught=0.5, reals_flagged=0.04)}
    report = {"served": {"ece": 0.04, "verdict_shares": {
        "likely fake": {"reals": 0.03, "fakes": 0.40}, "uncertain": {"reals": 0.5, "fakes": 0.5},
        "likely real": {"reals": 0.47, "fakes": 0.10}}}}
    files = {"test": report, "test_intervals": every, "test_unseen": unseen}
    for key, content in files.items():
        (tmp_path / f"{key}.json").write_text(json.dumps(content))
    monkeypatch.setattr(summary, "ROOT", tmp_path)
    monkeypatch.setattr(summary, "SUMMARY", {**summary.SUMMARY, **{key: f"{key}.json" for key in files}})
    block = summary.test_block()
    assert "| ROC-AUC | 0.910 (0.728–1.000) | 0.850 (0.680–1.000) | ≥ 0.90: met / missed |" in block
    assert "| fakes called *likely fake* | 40.0% (32.0–48.0%) | 50.0% (40.0–60.0%) | ≥ 45%: missed / met |" in block
    assert "| — the real source flagged most (utkface_adults) | 12.0% (9.6–14.4%) | — | ≤ 10%: missed / not measured |" in block
    assert "| — deepfake video frames (DFDC) caught | 10.0% (8.0–12.0%) | — | ≥ 15%: missed / not measured |" in block
    assert ("| — the high-quality real source flagged most (FFHQ photographs; of FFHQ photographs) | 5.0% (4.0–6.0%) | — "
            "| ≤ 3%: missed / not measured |") in block
    assert "| calibration error (ECE) of the probabilities shown | 0.040 | | ≤ 0.05: met |" in block
    assert "of 100 fakes it calls about 40 *likely fake*, 50 *uncertain* and 10 *likely real*" in block
