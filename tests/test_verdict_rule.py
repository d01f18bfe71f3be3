"""The verdict's rule is written in one place: the README, the page and the report print the sentences
`detector.verdicts.threshold_rule` renders from the model's config.json, the rule that set each threshold with what
was measured beside it, and they call validation numbers "validation" (the validation split chose the threshold, the
calibration, the epoch and the model: nothing there was held out)."""
from __future__ import annotations

import html
import json
import re

import pytest

import app
from conftest import ROOT
from detector import Detector
from detector.evidence_report import decimals, examine, report_html
from detector.verdicts import threshold_rule

BUNDLED = ROOT / "models" / "deepfake-detector"
RULE = re.compile(r'It flags an image .*?between the two, "uncertain"\.', re.S)


def bundled_calibration() -> dict:
    return json.loads((BUNDLED / "config.json").read_text())["calibration"]


def test_the_readme_states_the_rule_rendered_from_the_bundled_config():
    """The README said the threshold was "chosen so that about 5 in 100 real photos are flagged" (1.6 in 100 of all
    validation reals were): its rule is now the generated sentence, and the hand-written table quotes no number."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- rule:start[^>]*-->\n(.*?)\n<!-- rule:end -->", text, re.S)
    assert block, "run: python -m training.summary --write README.md"
    assert block.group(1) == threshold_rule(bundled_calibration())
    table = text[text.index("| verdict | when |"):block.start()]
    assert not re.search(r"\d", table)
    rule = block.group(1)
    assert "The rule that set it:" in rule and "on average over the kinds of real photo" in rule
    assert "Measured on that validation split, which also chose the threshold" in rule


@pytest.fixture(scope="module")
def bundled() -> Detector:
    return Detector.from_pretrained(BUNDLED)


def test_the_page_and_the_report_print_the_same_rule_and_call_validation_numbers_validation(bundled, face_paths):
    evidence = examine(bundled, face_paths[0].read_bytes(), "face.jpg")
    page = app.reading(evidence.analysis, bundled, evidence.findings)
    report = html.unescape(report_html(evidence, bundled))
    (page_rule,), (report_rule,) = RULE.findall(page), RULE.findall(report)
    assert page_rule == report_rule == threshold_rule(bundled_calibration(), decimals(evidence.analysis.p_fake, bundled))
    for text in (page, report):
        assert "held-out" not in text.lower() and "held out" not in text.lower()


def test_the_rule_says_only_what_the_config_records():
    assert threshold_rule(None) == "It flags an image when p(fake) is above 50% (this model has no calibrated threshold)."
    plain = threshold_rule({"threshold": 0.7, "target_fpr": 0.05})
    assert plain.startswith('It flags an image ("likely fake") when p(fake) ≥ 70%. The rule that set it: the lowest '
                            "threshold at which at most 5 in 100 of the validation split's real photos are flagged.")
    assert "Measured" not in plain and 'Below 50% it reads "likely real"; between the two' in plain
    measured = threshold_rule({"threshold": 0.9, "target_fpr": 0.05, "target_fpr_per_source": True,
                               "fpr_all_reals": 0.016, "fakes_caught": 0.216, "lower_threshold": 0.2,
                               "target_fake_miss": 0.05}, digits=1)
    assert "≥ 90.0%" in measured and "Below 20.0%" in measured
    assert "1.6 in 100 of all its real photos flagged and 22 in 100 of its fakes caught" in measured
