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
